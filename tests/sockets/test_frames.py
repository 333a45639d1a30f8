"""Malformed and oversized frames from a connected client, over a websocket and over
long-polling: the connection that sent it is closed (or answered), at most one log line
per cause and client, never a traceback, and every other client is still served."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import simple_websocket
import socketio

from taskevents import Emitter
from taskevents.adapters.socketio import SocketIOAdapter, _frames
from taskevents.adapters.socketio._frames import RateLimitedLog, guard_frames
from tests.support import socketio as support
from tests.support.socketio import Client, wait_until
from tests.support.websocket import WebSocketClient

MAX_BUFFER = 1_000_000  # Engine.IO's default max_http_buffer_size

#: Frames an attacker sent, each of which made the stack log a traceback (or, the last
#: one, swallow every later frame of its connection).
MALFORMED = {
    "empty-event": "42[]",
    "object-event": "42{}",
    "invalid-json": '42["a",',
    "deep-nesting": "42" + "[" * 50_000 + "]" * 50_000,
    "long-ack-id": "42" + "7" * 5_000 + '["x"]',
    "connect-error": '44{"message":"x"}',
    "unknown-socketio-type": "49",
    "unknown-engineio-type": "9hello",
    "undecodable-engineio": "x",
    "unhashable-event-name": "42[{}]",
    "binary-without-attachments": "45",
    "attachments-99999": '4599999-["x",{"_placeholder":true,"num":0}]',
}


# -- a server, a bystander, and what got logged --------------------------------------------


@dataclass
class Served:
    url: str
    port: int
    emitter: Emitter
    sio: Any
    bystander: Client
    seen: list[int] = field(default_factory=list)

    def still_serves_bystander(self) -> None:
        """A live update reaches the well-behaved client."""
        event = self.emitter.progress("aws01", len(self.seen) % 100, message="still here")
        self.bystander.wait_for("task_status_update", lambda p: p["seq"] == event.seq, timeout=10)
        self.seen.append(event.seq)

    def forgot(self, eio_sid: str, timeout: float = 10.0) -> bool:
        """Whether the server let go of the Engine.IO session ``eio_sid``."""
        return wait_until(lambda: eio_sid not in self.sio.eio.sockets, timeout)


@pytest.fixture
def served(serve: Callable[..., support.Served]) -> Iterator[Served]:
    shared = serve(progress_interval=0)
    bystander = Client().connect(shared.url)
    try:
        bystander.emit("subscribe_task", {"config_name": "aws01"})
        bystander.wait_for("task_status", timeout=10)
        shared.emitter.started("aws01", "change_ip")
        port = int(shared.url.rsplit(":", 1)[1])
        yield Served(shared.url, port, shared.emitter, shared.adapter.sio, bystander)
    finally:
        bystander.close()


@pytest.fixture
def server_stream() -> Iterator[io.StringIO]:
    """What python-socketio's and python-engineio's own stderr handlers write."""
    socketio.Server(async_mode="threading")  # the first Server adds those handlers
    buffer = io.StringIO()
    swapped = []
    for name in _frames.SERVER_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:
                swapped.append((handler, handler.setStream(buffer)))
    yield buffer
    for handler, stream in swapped:
        handler.setStream(stream)


@pytest.fixture
def quiet(
    caplog: pytest.LogCaptureFixture, server_stream: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> Iterator[Callable[[], list[logging.LogRecord]]]:
    """Checks, after the test, that nothing logged a traceback or more than one record
    per cause and client; returns the taskevents records so far when called."""
    caplog.set_level(logging.INFO, logger="taskevents")

    def records() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "taskevents"]

    yield records
    for record in caplog.records:
        message = record.getMessage()
        assert record.exc_info is None, (record.name, message)
        assert "Traceback" not in message, (record.name, message)
        assert "\n" not in message, (record.name, message)
    per_cause = Counter((getattr(r, "cause", None), getattr(r, "client", None)) for r in records())
    assert all(count == 1 for count in per_cause.values()), per_cause
    assert "Traceback" not in server_stream.getvalue()
    assert "Traceback" not in capfd.readouterr().err


# -- raw clients -------------------------------------------------------------------------


class RawWebSocket:
    """Engine.IO and Socket.IO over a websocket, by hand."""

    def __init__(self, port: int) -> None:
        self.ws = WebSocketClient.connect(
            f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        )
        opening = self.ws.receive(timeout=10)
        assert isinstance(opening, str)
        assert opening.startswith("0")
        self.sid: str = json.loads(opening[1:])["sid"]
        self.ws.send("40")
        connected = self.ws.receive(timeout=10)
        assert isinstance(connected, str)
        assert connected.startswith("40{")

    def send(self, frame: str | bytes) -> None:
        self.ws.send(frame)

    def send_after_refusal(self, frame: str) -> None:
        """Send, unless the server closed the connection already."""
        with contextlib.suppress(simple_websocket.ConnectionClosed, OSError):
            self.ws.send(frame)

    def receive(self, timeout: float = 10.0) -> str | bytes | None:
        result: str | bytes | None = self.ws.receive(timeout=timeout)
        return result

    def closed(self, timeout: float = 10.0) -> bool:
        """Whether the server closes the websocket within ``timeout`` seconds (reading
        and discarding what it sends until then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            except simple_websocket.ConnectionClosed:
                return True
        return not self.ws.connected

    @property
    def close_code(self) -> Any:
        return self.ws.close_reason

    def close(self) -> None:
        if self.ws.connected:
            with contextlib.suppress(simple_websocket.ConnectionClosed, OSError):
                self.ws.close()


class RawPolling:
    """Engine.IO and Socket.IO over long-polling, by hand."""

    def __init__(self, port: int) -> None:
        self.port = port
        status, opening = self.request("GET")
        assert status == 200, opening
        assert opening.startswith("0")
        self.sid: str = json.loads(opening[1:])["sid"]
        assert self.request("POST", b"40") == (200, "OK")
        status, connected = self.request("GET")
        assert status == 200, connected
        assert connected.startswith("40{")

    def request(
        self, method: str, body: bytes | None = None, timeout: float = 30
    ) -> tuple[int, str]:
        path = "/socket.io/?EIO=4&transport=polling"
        if hasattr(self, "sid"):
            path += "&sid=" + self.sid
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers={"Content-Type": "text/plain"})
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        finally:
            connection.close()

    def send(self, frame: str | bytes) -> tuple[int, str]:
        return self.request("POST", frame.encode() if isinstance(frame, str) else frame)

    def closed(self) -> bool:
        """Whether the session is gone (a poll is refused, or gets a CLOSE packet)."""
        for _ in range(3):
            try:
                status, body = self.request("GET", timeout=5)
            except TimeoutError:
                return False  # a poll waiting for news: the session is open
            if status != 200 or "1" in body.split("\x1e"):
                return True
        return False


# -- malformed frames ------------------------------------------------------------------------


@pytest.mark.parametrize("frame", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_frame_on_a_websocket_closes_only_that_connection(
    served: Served, quiet: Callable[[], list[logging.LogRecord]], frame: str
) -> None:
    attacker = RawWebSocket(served.port)
    try:
        attacker.send(frame)
        attacker.send_after_refusal('42["get_all_tasks"]')  # not handled: closed before
        assert attacker.closed(), f"{frame[:40]!r} left the connection open"
        assert attacker.close_code == _frames.POLICY_VIOLATION
    finally:
        attacker.close()
    assert served.forgot(attacker.sid)
    served.still_serves_bystander()
    logged = quiet()
    assert len(logged) == 1
    assert logged[0].levelno == logging.WARNING
    assert attacker.sid in logged[0].getMessage()
    assert logged[0].client == "127.0.0.1"  # type: ignore[attr-defined]


@pytest.mark.parametrize("frame", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_frame_over_long_polling_is_answered_and_closes_the_session(
    served: Served, quiet: Callable[[], list[logging.LogRecord]], frame: str
) -> None:
    attacker = RawPolling(served.port)
    status, body = attacker.send(frame)
    if frame[0] == "4":  # an Engine.IO message: Engine.IO takes it, Socket.IO refuses it
        assert (status, body) == (200, "OK")
    else:  # not even Engine.IO
        assert (status, body) == (400, '"Bad Request"')
    assert attacker.closed()
    assert served.forgot(attacker.sid)
    served.still_serves_bystander()
    logged = quiet()
    assert len(logged) == 1
    assert attacker.sid in logged[0].getMessage()


def test_frames_after_a_huge_attachment_count_are_not_swallowed(
    served: Served, quiet: Callable[[], list[logging.LogRecord]]
) -> None:
    attacker = RawWebSocket(served.port)
    try:
        # Binary events stay legal up to the limit: the adapter answers this one (with
        # an error: binary is no part of its protocol) and keeps the connection.
        attacker.send('451-["subscribe_task",{"_placeholder":true,"num":0}]')
        attacker.send(b"\x00\x01")
        assert wait_until(lambda: str(attacker.receive()).startswith('42["error"'))
        # Unguarded, every frame after this one is taken for one of its 99,999
        # attachments: the connection stays open and get_all_tasks is never answered.
        attacker.send(MALFORMED["attachments-99999"])
        for _ in range(3):
            attacker.send_after_refusal('42["get_all_tasks"]')
        assert attacker.closed()
    finally:
        attacker.close()
    assert [r.cause for r in quiet()] == ["too many binary attachments"]  # type: ignore[attr-defined]
    served.still_serves_bystander()


def test_one_log_line_per_cause_and_client(
    served: Served, quiet: Callable[[], list[logging.LogRecord]]
) -> None:
    # a raw client that sends only what clients may send is served as before
    good = RawWebSocket(served.port)
    for frame in ("2", "3", "6", '42["get_all_tasks"]'):
        good.send(frame)
    assert wait_until(lambda: str(good.receive()).startswith('42["all_tasks"'))
    attackers = [RawWebSocket(served.port) for _ in range(5)]
    try:
        for attacker in attackers:
            attacker.send("42[]")
            assert attacker.closed()
        attackers.append(RawWebSocket(served.port))
        attackers[-1].send('42["a",')  # another cause: logged too
        assert attackers[-1].closed()
        good.send('42["get_all_tasks"]')
        assert wait_until(lambda: str(good.receive()).startswith('42["all_tasks"'))
    finally:
        for attacker in [*attackers, good]:
            attacker.close()
    causes = [r.cause for r in quiet()]  # type: ignore[attr-defined]
    assert causes == ["event without a name", "invalid JSON"]
    served.still_serves_bystander()


# -- oversized payloads ----------------------------------------------------------------------


def test_an_oversized_websocket_message_is_refused_with_1009(
    served: Served, quiet: Callable[[], list[logging.LogRecord]]
) -> None:
    attacker = RawWebSocket(served.port)
    try:
        # just under the limit: served (answered with an error: unknown field)
        attacker.send("42" + json.dumps(["get_all_tasks", {"padding": "x" * (MAX_BUFFER - 100)}]))
        assert wait_until(lambda: "unknown field 'padding'" in str(attacker.receive()))
        attacker.send_after_refusal("42" + json.dumps(["get_all_tasks", "x" * MAX_BUFFER]))
        assert attacker.closed()
        assert attacker.close_code == 1009  # "Message is too big"
    finally:
        attacker.close()
    assert served.forgot(attacker.sid)
    (record,) = quiet()
    assert record.cause == "message over max_http_buffer_size"  # type: ignore[attr-defined]
    served.still_serves_bystander()


def test_an_oversized_long_polling_post_gets_413(
    served: Served, quiet: Callable[[], list[logging.LogRecord]]
) -> None:
    attacker = RawPolling(served.port)
    status, body = attacker.send("4" + "x" * MAX_BUFFER)
    assert status == 413
    assert json.loads(body) == f"Payload too large: at most {MAX_BUFFER} bytes"
    assert attacker.closed()
    assert served.forgot(attacker.sid)
    (record,) = quiet()
    assert record.cause == "payload over max_http_buffer_size"  # type: ignore[attr-defined]
    served.still_serves_bystander()


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        (b"4\xff\xfe", "payload not UTF-8"),
        ("\x1e".join(["3"] * 17).encode(), "too many packets in one payload"),
        (b"2", "Engine.IO packet type a client may not send"),
        (b"bx", "invalid base64 in a binary Engine.IO packet"),
    ],
)
def test_a_malformed_long_polling_payload_gets_400(
    served: Served, quiet: Callable[[], list[logging.LogRecord]], body: bytes, cause: str
) -> None:
    attacker = RawPolling(served.port)
    assert attacker.send(body) == (400, '"Bad Request"')
    assert attacker.closed()
    assert [r.cause for r in quiet()] == [cause]  # type: ignore[attr-defined]
    served.still_serves_bystander()


def test_a_post_to_a_session_engineio_closed_gets_400_not_a_traceback(
    served: Served, quiet: Callable[[], list[logging.LogRecord]]
) -> None:
    client = RawPolling(served.port)
    # as Engine.IO's ping timeout closes it: without waiting, and still in its table
    served.sio.eio.sockets[client.sid].close(wait=False, abort=True)
    assert client.send('42["get_all_tasks"]') == (400, f'"Invalid session {client.sid}"')
    assert served.forgot(client.sid)
    assert quiet() == []
    served.still_serves_bystander()


# -- the guard itself --------------------------------------------------------------------


def _installed_parts(sio: Any) -> tuple[Any, ...]:
    return (
        sio.eio.handlers["message"],
        sio.packet_class,
        sio.eio._async,
        vars(sio.eio).get("handle_request"),
        tuple(tuple(logging.getLogger(n).filters) for n in _frames.SERVER_LOGGERS),
    )


def test_guarding_twice_installs_once_and_the_last_release_restores_everything() -> None:
    sio = socketio.Server(async_mode="threading")
    original = _installed_parts(sio)
    release_one = guard_frames(sio)
    guarded = _installed_parts(sio)
    release_two = guard_frames(sio)
    assert _installed_parts(sio) == guarded  # not wrapped twice
    assert sio.packet_class.__bases__ == (original[1],)
    assert guarded[0] != original[0]
    assert guarded[3] is not None
    release_one()
    release_one()  # a second call of the same release does nothing
    assert _installed_parts(sio) == guarded
    release_two()
    assert _installed_parts(sio) == original
    assert sio.eio._async is original[2]
    assert "handle_request" not in vars(sio.eio)


def test_adapters_coming_and_going_on_one_server_leave_it_as_it_was() -> None:
    sio = socketio.Server(async_mode="threading")
    original = _installed_parts(sio)
    emitter = Emitter(source="tests")
    first = SocketIOAdapter(sio, emitter, namespace="/one")
    second = SocketIOAdapter(sio, emitter, namespace="/two")
    guarded = _installed_parts(sio)
    assert all(part != before for part, before in zip(guarded, original, strict=True))
    first.close()
    assert _installed_parts(sio) == guarded
    third = SocketIOAdapter(sio, emitter, namespace="/three")
    second.close()
    third.close()
    assert _installed_parts(sio) == original


def test_a_traceback_logged_by_engineio_becomes_one_line(
    caplog: pytest.LogCaptureFixture, server_stream: io.StringIO
) -> None:
    sio = socketio.Server(async_mode="threading")
    release = guard_frames(sio)
    log = logging.getLogger("engineio.server")
    try:
        for _ in range(3):
            try:
                raise ValueError("bad\npacket")
            except ValueError:
                log.exception("post request handler error")
    finally:
        release()
    records = [r for r in caplog.records if r.name == "engineio.server"]
    assert len(records) == 1  # rate-limited
    assert records[0].exc_info is None
    assert (
        records[0]
        .getMessage()
        .startswith("post request handler error: ValueError: bad\\x0apacket (traceback suppressed")
    )
    assert "Traceback" not in server_stream.getvalue()
    assert server_stream.getvalue().count("\n") == 1
    assert not any(isinstance(f, _frames._OneLineFilter) for f in log.filters)


def test_the_rate_limited_log_counts_what_it_suppresses_and_stays_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = RateLimitedLog(
        logging.getLogger("taskevents.test"),
        period=10,
        max_keys=3,
        max_records=4,
        clock=lambda: now[0],
    )
    with caplog.at_level(logging.INFO, logger="taskevents.test"):
        assert log.log(logging.WARNING, "a", "first\nline")
        assert not log.log(logging.WARNING, "a", "again")
        assert not log.log(logging.WARNING, "a", "again")
        now[0] = 10.0
        assert log.log(logging.WARNING, "a", "later")
        for key in "bcdefgh":  # more keys than remembered, more records than allowed
            log.log(logging.WARNING, key, key)
        assert len(log) <= 3
        now[0] = 20.0
        assert log.log(logging.WARNING, "z", "next period")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "first\\x0aline"
    assert messages[1] == "later (2 more like it suppressed)"
    assert len(messages) == 1 + 1 + 3 + 1  # a; a again; b, c, d; z
    assert messages[-1] == "next period (4 other records suppressed)"


def test_a_client_gone_during_a_send_ends_the_websocket_quietly() -> None:
    from simple_websocket import ConnectionClosed

    from taskevents.adapters.socketio._frames import _WebSocket

    class Gone:
        def send(self, message: object) -> None:
            raise ConnectionClosed(1005)

        def wait(self) -> object:  # pragma: no cover - not reached once gone
            raise AssertionError("read after the client went away")

    class Upgrading:
        upgraded = False

    ws = _WebSocket(Gone(), Upgrading(), None)  # type: ignore[arg-type]
    assert ws.send("3probe") is None
    assert ws.gone
    assert ws.wait() == "6"  # a NOOP ends Engine.IO's upgrade quietly
    broken = _WebSocket(Gone(), None, None)  # type: ignore[arg-type]
    assert broken.send("x") is None
    assert broken.wait() is None
