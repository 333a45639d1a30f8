"""Hostile input on the ASGI server (AsyncServer, AsyncSocketIOAdapter, uvicorn): a
malformed or oversized frame closes the connection that sent it, with one log line and
never a traceback; a client that stops reading is dropped; everyone else is served."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import simple_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from taskevents import Emitter
from tests.asgi.support import AsgiServed, Recorder, serving, subscribe, wait_until
from tests.support.websocket import WebSocketClient

Serve = Callable[..., AsgiServed]

MAX_BUFFER = 1_000_000  # Engine.IO's default max_http_buffer_size


@pytest.fixture
def asgi() -> Iterator[Serve]:
    yield from serving()


@dataclass
class Target:
    """A served AsyncServer, and a well-behaved client subscribed to aws01 on it."""

    served: AsgiServed
    bystander: Recorder

    @property
    def port(self) -> int:
        return self.served.port

    @property
    def emitter(self) -> Emitter:
        return self.served.emitter

    def still_serves_the_bystander(self) -> None:
        """A live update reaches the well-behaved client."""
        event = self.emitter.progress("aws01", 50, message="still here")
        self.bystander.wait_for("task_status_update", lambda p: p["seq"] == event.seq)

    def forgot(self, eio_sid: str, timeout: float = 10.0) -> bool:
        """Whether the server let go of the Engine.IO session ``eio_sid``."""
        return wait_until(lambda: eio_sid not in self.served.sio.eio.sockets, timeout)


@pytest.fixture
def target(asgi: Serve) -> Target:
    served = asgi()
    bystander = served.client("AsyncClient")
    subscribe(bystander)
    served.emitter.started("aws01", "change_ip")
    return Target(served, bystander)


@pytest.fixture
def quiet(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> Iterator[Callable[[], list[logging.LogRecord]]]:
    """After the test: no log record (of any logger: taskevents, engineio, socketio,
    uvicorn, asyncio) with a traceback or on more than one line, at most one taskevents
    record per cause and client, and no traceback on stderr. Called: the taskevents
    records so far."""
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
    assert "Traceback" not in capfd.readouterr().err


# -- raw clients ---------------------------------------------------------------------------------


class RawWebSocket:
    """Engine.IO and Socket.IO spoken by hand over a websocket."""

    def __init__(self, port: int) -> None:
        self.ws = WebSocketClient.connect(
            f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        )
        opening = self.receive()
        assert isinstance(opening, str)
        assert opening.startswith("0{")
        self.sid: str = json.loads(opening[1:])["sid"]
        self.ws.send("40")
        connected = self.receive()
        assert isinstance(connected, str)
        assert connected.startswith("40{")

    def send(self, frame: str | bytes) -> None:
        self.ws.send(frame)

    def send_if_open(self, frame: str | bytes) -> None:
        """Send, unless the server has closed the connection already."""
        with contextlib.suppress(simple_websocket.ConnectionClosed, OSError):
            self.ws.send(frame)

    def receive(self, timeout: float = 10.0) -> str | bytes | None:
        message: str | bytes | None = self.ws.receive(timeout=timeout)
        return message

    def answered(self, prefix: str, timeout: float = 10.0) -> bool:
        """Whether a message starting with ``prefix`` comes within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = self.receive(remaining)
            if isinstance(message, str) and message.startswith(prefix):
                return True
        return False

    def closed(self, timeout: float = 10.0) -> bool:
        """Whether the server closes the websocket within ``timeout`` seconds (what it
        sends until then is read and let go of)."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(simple_websocket.ConnectionClosed):
            while self.ws.connected and (remaining := deadline - time.monotonic()) > 0:
                self.ws.receive(timeout=min(remaining, 0.5))
        return not self.ws.connected

    @property
    def close_code(self) -> Any:
        return self.ws.close_reason

    def close(self) -> None:
        if self.ws.connected:
            with contextlib.suppress(simple_websocket.ConnectionClosed, OSError):
                self.ws.close()


class RawPolling:
    """Engine.IO and Socket.IO spoken by hand over long-polling."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sid = ""
        status, opening = self.request("GET")
        assert status == 200, opening
        self.sid = json.loads(opening[1:])["sid"]
        assert self.request("POST", b"40") == (200, "OK")
        status, connected = self.request("GET")
        assert status == 200, connected
        assert connected.startswith("40{")

    def request(self, method: str, body: bytes | None = None, timeout: float = 10.0) -> Any:
        """``(status, body)``, or the exception the request raised."""
        path = "/socket.io/?EIO=4&transport=polling" + (f"&sid={self.sid}" if self.sid else "")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers={"Content-Type": "text/plain"})
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        except OSError as exc:  # a timeout among them
            return exc
        finally:
            connection.close()

    def closed(self) -> bool:
        """Whether the session is gone: a poll is refused (or gets a CLOSE packet)
        instead of waiting for news."""
        answer = self.request("GET", timeout=5)
        if isinstance(answer, tuple):
            status, body = answer
            return status != 200 or "1" in body.split("\x1e")
        return False


# -- malformed frames on a websocket ---------------------------------------------------------------

#: Frames an attacker may send; each must close its connection, quietly.
MALFORMED_FRAMES: list[Any] = [
    pytest.param("42[]", id="event-without-a-name"),
    pytest.param("42{}", id="event-not-a-list"),
    pytest.param("42[{}]", id="unhashable-event-name"),
    pytest.param('42["get_all_tasks",', id="invalid-json"),
    pytest.param("42" + "[" * 50_000 + "]" * 50_000, id="deep-nesting"),
    pytest.param("42" + "9" * 5_000 + '["get_all_tasks"]', id="huge-ack-id"),
    pytest.param('44{"message":"x"}', id="connect-error-from-a-client"),
    pytest.param("49", id="unknown-socketio-type"),
    pytest.param("45", id="binary-without-attachments"),
    pytest.param('4599999-["x",{"_placeholder":true,"num":0}]', id="attachments-99999"),
    pytest.param(b"\x00\x01", id="unannounced-binary-frame"),
    pytest.param("9hello", id="unknown-engineio-type"),
    pytest.param("x", id="undecodable-engineio-packet"),
    pytest.param("", id="empty-frame"),
]


@pytest.mark.parametrize("frame", MALFORMED_FRAMES)
def test_a_malformed_frame_closes_only_that_websocket_with_one_log_line(
    target: Target, quiet: Callable[[], list[logging.LogRecord]], frame: str | bytes
) -> None:
    attacker = RawWebSocket(target.port)
    try:
        assert attacker.answered('42["connection_status"')
        attacker.send(frame)
        attacker.send_if_open('42["get_all_tasks"]')  # not handled: the bad frame ended it
        assert attacker.closed(), f"{frame[:40]!r} left the connection open"
    finally:
        attacker.close()
    assert target.forgot(attacker.sid)
    target.still_serves_the_bystander()
    logged = quiet()
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert logged[0].levelno == logging.WARNING
    assert attacker.sid in logged[0].getMessage()
    assert logged[0].client == "127.0.0.1"  # type: ignore[attr-defined]
    assert target.bystander.errors() == []


def test_a_malformed_frame_ends_the_websocket_with_close_code_1008(
    target: Target, quiet: Callable[[], list[logging.LogRecord]]
) -> None:
    attacker = RawWebSocket(target.port)
    try:
        attacker.send("42[]")
        assert attacker.closed()
        assert attacker.close_code == 1008
    finally:
        attacker.close()


def test_a_raw_client_that_sends_what_clients_may_is_served_and_logs_count_once_per_cause(
    target: Target, quiet: Callable[[], list[logging.LogRecord]]
) -> None:
    good = RawWebSocket(target.port)
    attackers: list[RawWebSocket] = []
    try:
        for frame in ("3", "6", '42["get_all_tasks"]'):  # pong, noop, a request
            good.send(frame)
        assert good.answered('42["all_tasks"')
        for _ in range(5):
            attacker = RawWebSocket(target.port)
            attackers.append(attacker)
            attacker.send("42[]")
            assert attacker.closed()
        attacker = RawWebSocket(target.port)
        attackers.append(attacker)
        attacker.send('42["a",')  # another cause: logged too
        assert attacker.closed()
        good.send('42["get_all_tasks"]')
        assert good.answered('42["all_tasks"')
    finally:
        for one in [*attackers, good]:
            one.close()
    assert [r.cause for r in quiet()] == ["event without a name", "invalid JSON"]  # type: ignore[attr-defined]
    for attacker in attackers:
        assert target.forgot(attacker.sid)
    target.still_serves_the_bystander()


def test_a_message_over_max_http_buffer_size_closes_the_websocket(
    target: Target, quiet: Callable[[], list[logging.LogRecord]]
) -> None:
    attacker = RawWebSocket(target.port)
    try:
        # just under the limit: handled (an error: the field is unknown)
        attacker.send("42" + json.dumps(["get_all_tasks", {"pad": "x" * (MAX_BUFFER - 100)}]))
        assert attacker.answered('42["error"')
        attacker.send_if_open("42" + json.dumps(["get_all_tasks", "x" * (MAX_BUFFER + 500_000)]))
        assert attacker.closed()
    finally:
        attacker.close()
    assert target.forgot(attacker.sid)
    (record,) = quiet()
    assert record.cause == "message over max_http_buffer_size"  # type: ignore[attr-defined]
    target.still_serves_the_bystander()


def test_a_message_over_max_http_buffer_size_ends_the_websocket_with_close_code_1009(
    target: Target, quiet: Callable[[], list[logging.LogRecord]]
) -> None:
    attacker = RawWebSocket(target.port)
    try:
        attacker.send_if_open("42" + json.dumps(["get_all_tasks", "x" * (MAX_BUFFER + 500_000)]))
        assert attacker.closed()
        assert attacker.close_code == 1009
    finally:
        attacker.close()
    (record,) = quiet()
    assert record.cause == "message over max_http_buffer_size"  # type: ignore[attr-defined]


# -- malformed payloads over long-polling ----------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [b"42[]", b'42["a",', b'44{"message":"x"}', b"49", b"42" + b"7" * 5_000 + b'["x"]'],
    ids=["event-without-a-name", "invalid-json", "connect-error", "unknown-type", "huge-ack-id"],
)
def test_a_malformed_socketio_packet_over_long_polling_closes_the_session(
    target: Target, quiet: Callable[[], list[logging.LogRecord]], frame: bytes
) -> None:
    attacker = RawPolling(target.port)
    assert attacker.request("POST", frame) == (200, "OK")  # Engine.IO took it
    assert attacker.closed()
    assert target.forgot(attacker.sid)
    target.still_serves_the_bystander()
    logged = quiet()
    assert len(logged) == 1
    assert attacker.sid in logged[0].getMessage()


@pytest.mark.parametrize(
    "body",
    [b"9hello", b"x", b"4\xff\xfe", "\x1e".join(["3"] * 17).encode(), b"2", b"bx"],
    ids=[
        "unknown-engineio-type",
        "undecodable",
        "not-utf8",
        "17-packets",
        "ping-from-a-client",
        "bad-base64",
    ],
)
def test_a_malformed_engineio_payload_over_long_polling_gets_400_and_closes_the_session(
    target: Target, quiet: Callable[[], list[logging.LogRecord]], body: bytes
) -> None:
    attacker = RawPolling(target.port)
    answer = attacker.request("POST", body, timeout=5)
    assert isinstance(answer, tuple), answer  # answered, not left hanging
    assert answer[0] == 400, answer
    assert attacker.closed()
    assert target.forgot(attacker.sid)
    (record,) = quiet()
    assert attacker.sid in record.getMessage()
    target.still_serves_the_bystander()


def test_an_oversized_long_polling_post_gets_413(
    target: Target, quiet: Callable[[], list[logging.LogRecord]]
) -> None:
    attacker = RawPolling(target.port)
    answer = attacker.request("POST", b"4" + b"x" * MAX_BUFFER, timeout=5)
    assert isinstance(answer, tuple), answer  # answered, not left hanging
    assert answer[0] == 413, answer
    assert attacker.closed()
    assert target.forgot(attacker.sid)
    (record,) = quiet()
    assert record.cause == "payload over max_http_buffer_size"  # type: ignore[attr-defined]
    target.still_serves_the_bystander()


# -- a client that stops reading -------------------------------------------------------------------


class StalledClient:
    """A websocket client on a raw TCP socket with a small receive buffer: it connects,
    subscribes to aws01, and from then on reads nothing, so what the server sends it
    piles up."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[str] = []
        try:
            self.sock.connect(("127.0.0.1", port))
            target = "/socket.io/?EIO=4&transport=websocket"
            self.sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target=target)))
            self.sid: str = json.loads(self.read_until("0{")[1:])["sid"]
            self.send("40")
            self.read_until("40{")
            self.send('42["subscribe_task",{"config_name":"aws01"}]')
            self.read_until('42["task_status"')
        except BaseException:
            self.sock.close()
            raise

    def read_until(self, prefix: str) -> str:
        """Read until a message that starts with ``prefix`` has come; return it."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            while self.pending:
                message = self.pending.pop(0)
                if message.startswith(prefix):
                    return message
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.ws.receive_data(data)
            parts: list[str] = []
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    parts.append(event.data)
                    if event.message_finished:
                        self.pending.append("".join(parts))
                        parts = []
                elif not isinstance(event, AcceptConnection):
                    raise ConnectionError(f"unexpected {event!r}")
        raise TimeoutError(f"no message starting with {prefix!r}")

    def send(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def cut_off(self, timeout: float = 10.0) -> bool:
        """Whether the server ends the connection within ``timeout`` seconds: it closes
        the TCP connection, or its websocket (reading, at last, what it had sent)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                data = self.sock.recv(1 << 20)
                if not data:
                    return True
                self.ws.receive_data(data)
                if any(isinstance(event, CloseConnection) for event in self.ws.events()):
                    return True
        except TimeoutError:
            return False
        except OSError:  # reset
            return True
        return False

    def close(self) -> None:
        self.sock.close()


def caught_up(reader: Recorder, count: int) -> bool:
    """Whether ``reader`` has received ``count`` updates (after its greeting and the
    snapshot it was sent on subscribing)."""
    return len(reader.seen) + reader.inbox.qsize() - 2 >= count


def flood_until_dropped(
    served: AsgiServed, stalled: StalledClient, readers: list[Recorder]
) -> None:
    """Emit lifecycle events (never coalesced: one packet each) until the guard drops
    ``stalled``, keeping the ``readers`` from falling far behind; then check that they
    got every event, in order, and one more after the drop."""
    blob = "x" * 4_000
    emitted: list[int] = []
    for _ in range(2_000):
        emitted.append(served.emitter.started("aws01", "flood").seq)
        emitted.append(served.emitter.completed("aws01", {"blob": blob}).seq)
        for reader in readers:
            assert wait_until(partial(caught_up, reader, len(emitted) - 40))
        if stalled.sid not in served.sio.eio.sockets:
            break
    assert wait_until(lambda: stalled.sid not in served.sio.eio.sockets), (
        f"the stalled client is still connected after {len(emitted)} events"
    )
    last = served.emitter.started("aws01", "after").seq
    emitted.append(last)
    for reader in readers:
        reader.wait_for("task_status_update", lambda p: p["seq"] == last, timeout=30)
        assert [u["seq"] for u in reader.updates()] == emitted


def test_a_client_that_stops_reading_is_dropped_and_the_others_keep_getting_events(
    asgi: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskevents")
    # uvicorn's websocket pings, sooner than its default 20 s: what ends the TCP
    # connection of a dropped client that reads nothing (see the test below)
    served = asgi(max_backlog=50, uvicorn_options={"ws_ping_interval": 1, "ws_ping_timeout": 5})
    readers = [served.client("AsyncClient"), served.client("Client")]
    for reader in readers:
        subscribe(reader)
    stalled = StalledClient(served.port)
    try:
        flood_until_dropped(served, stalled, readers)
        assert stalled.cut_off(30), "the stalled client's connection never ended"
    finally:
        stalled.close()
    dropped = [r for r in caplog.records if getattr(r, "cause", None) == "backlog"]
    assert len(dropped) == 1
    assert dropped[0].levelno == logging.WARNING
    assert stalled.sid in dropped[0].getMessage()
    assert "max_backlog=50" in dropped[0].getMessage()
    assert served.adapter.client_count == 2
    for reader in readers:
        assert reader.connected
        assert reader.errors() == []


def test_a_dropped_client_that_stops_reading_has_its_connection_ended_promptly(
    asgi: Serve,
) -> None:
    served = asgi(max_backlog=50)
    reader = served.client("AsyncClient")
    subscribe(reader)
    stalled = StalledClient(served.port)
    try:
        flood_until_dropped(served, stalled, [reader])
        assert stalled.cut_off(10), "the stalled client's connection was not ended"
    finally:
        stalled.close()
