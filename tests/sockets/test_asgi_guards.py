"""Hostile Engine.IO traffic against taskevents.asgi on uvicorn: what an attacker
review found (each a test here), and what the ASGI guards do about it.

- a long-polling POST that Engine.IO refuses was never answered (and its memory never
  freed): it gets 413 or 400 at once, and the session is closed;
- a POST to a session the client closed gave a 500 and a traceback: 400;
- malformed Engine.IO frames on a websocket each wrote a traceback: one line, and the
  session is closed;
- a slow, plain ``authenticate`` hook held up the event loop: it runs in a thread, and
  a hook that never answers is given up after ``authenticate_timeout``.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sockets.test_frames import RawPolling, RawWebSocket
from tests.support.socketio import Client, LiveASGIServer


@pytest.fixture
def served() -> Iterator[tuple[Any, LiveASGIServer]]:
    from taskevents.asgi import TaskEvents

    tasks = TaskEvents(subjects=["aws01"], progress_interval=0)
    server = LiveASGIServer(tasks.app)
    yield tasks, server
    server.stop()
    tasks.close()


def port_of(server: LiveASGIServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        message = record.getMessage()
        assert record.exc_info is None, (record.name, message)
        assert "Traceback" not in message, (record.name, message)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"4" + b"a" * 1_200_000, 413),  # over max_http_buffer_size
        (b"2", 400),  # a PING from the client
        (b"0", 400),  # an OPEN from the client
        (b"x", 400),  # no such Engine.IO packet type
        (b"\xff\xfe", 400),  # not UTF-8
        (b"\x1e".join([b"6"] * 17), 400),  # more packets than a payload may hold
    ],
)
def test_a_refused_long_polling_post_is_answered_at_once_and_its_session_closed(
    served: tuple[Any, LiveASGIServer],
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    status: int,
) -> None:
    caplog.set_level(logging.INFO)
    _, server = served
    client = RawPolling(port_of(server))
    started = time.monotonic()
    answer = client.request("POST", body, timeout=10)
    assert answer[0] == status
    assert time.monotonic() - started < 5  # before: never answered at all
    assert client.request("GET", timeout=10)[0] == 400  # the session is gone
    refusals = [r for r in caplog.records if "refused a long-polling request" in r.getMessage()]
    assert len(refusals) == 1
    no_tracebacks(caplog)


def test_a_post_to_a_session_the_client_closed_is_a_400(
    served: tuple[Any, LiveASGIServer], caplog: pytest.LogCaptureFixture
) -> None:
    _, server = served
    client = RawPolling(port_of(server))
    assert client.request("POST", b"1")[0] == 200  # the client closes its session
    assert client.request("POST", b'42["get_all_tasks"]')[0] == 400  # before: a 500
    no_tracebacks(caplog)


@pytest.mark.parametrize("frame", ["", "x", "9", "b!!!"])
def test_a_malformed_engineio_frame_on_a_websocket_is_one_line_and_a_closed_session(
    served: tuple[Any, LiveASGIServer],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    frame: str,
) -> None:
    caplog.set_level(logging.INFO)
    _, server = served
    other = Client().connect(server.url)
    raw = RawWebSocket(port_of(server))
    try:
        raw.send(frame)
        assert raw.closed()
    finally:
        raw.close()
    refusals = [r for r in caplog.records if "refused a frame" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in caplog.records]
    no_tracebacks(caplog)
    assert "Traceback" not in capfd.readouterr().err
    # everyone else is still served
    other.emit("get_all_tasks")
    assert "aws01" in other.wait_for("all_tasks")
    other.close()


def test_a_slow_plain_authenticate_hook_does_not_hold_up_the_loop() -> None:
    from taskevents.asgi import TaskEvents

    entered = threading.Event()

    def slow(environ: Any, auth: Any) -> str:
        entered.set()
        time.sleep(3)  # a slow database, say
        return "someone"

    tasks = TaskEvents(subjects=["aws01"], authenticate=slow)
    server = LiveASGIServer(tasks.app)
    waiting = threading.Thread(target=lambda: Client().connect(server.url).close(), daemon=True)
    try:
        waiting.start()
        assert entered.wait(10)
        connection = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=10)
        started = time.monotonic()
        connection.request("GET", "/websocket")  # not authenticated: the dashboard page
        assert connection.getresponse().status == 200
        assert time.monotonic() - started < 2  # not after the hook's 3 s
        connection.close()
    finally:
        waiting.join(15)
        server.stop()
        tasks.close()


def test_an_authenticate_hook_that_never_answers_is_given_up() -> None:
    import asyncio

    from taskevents.asgi import TaskEvents

    async def never(environ: Any, auth: Any) -> str:
        await asyncio.Event().wait()
        return "unreachable"

    tasks = TaskEvents(subjects=["aws01"], authenticate=never)
    tasks.adapter.authenticate_timeout = 0.5
    server = LiveASGIServer(tasks.app)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=10)
        connection.request("GET", "/api/tasks", headers={"Authorization": "Bearer x"})
        assert connection.getresponse().status == 401
        connection.close()
        assert tasks.adapter.hook_errors.count == 1
    finally:
        server.stop()
        tasks.close()
