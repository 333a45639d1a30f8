"""Clients that stop reading: their backlog is bounded, they are disconnected, everyone
else is still served, and the server's memory stays flat under a long flood (measured in
a server subprocess, in threading and in gevent mode)."""

from __future__ import annotations

import http.client
import json
import logging
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import socketio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from taskevents import Emitter
from taskevents.adapters.socketio._backlog import BacklogGuard
from tests.support import socketio as support
from tests.support.socketio import Client, wait_until
from tests.support.websocket import WebSocketClient

SUBSCRIBE = '42["subscribe_task",{"config_name":"aws01"}]'


class StalledClient:
    """A websocket client over a raw TCP socket with a tiny receive buffer: it does the
    Engine.IO and Socket.IO handshakes by hand, subscribes to aws01, and from then on
    never reads (so the server's sends to it block at the TCP level)."""

    def __init__(self, port: int, *, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(("127.0.0.1", port))
            self.ws = WSConnection(ConnectionType.CLIENT)
            target = "/socket.io/?EIO=4&transport=websocket"
            self.sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target=target)))
            opening = self._read_until(lambda message: message.startswith("0"))
            self.sid: str = json.loads(opening[1:])["sid"]
            self.send("40")
            self._read_until(lambda message: message.startswith("40{"))
            self.send(SUBSCRIBE)
            self._read_until(lambda message: message.startswith('42["task_status"'))
        except BaseException:
            self.sock.close()
            raise

    def _read_until(self, wanted: Callable[[str], bool]) -> str:
        deadline = time.monotonic() + self.timeout
        parts: list[str] = []
        while time.monotonic() < deadline:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    continue
                if isinstance(event, TextMessage):
                    parts.append(event.data)
                    if event.message_finished:
                        message, parts = "".join(parts), []
                        if wanted(message):
                            return message
        raise TimeoutError("no such message")

    def send(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def cut_off(self, timeout: float = 10.0) -> bool:
        """Whether the server has closed the TCP connection (reading, at last, and
        discarding what it had sent until then)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(1 << 20):
                    return True
        except (ConnectionError, OSError):
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@dataclass
class Served:
    port: int
    url: str
    emitter: Emitter
    sio: Any


@pytest.fixture
def served(serve: Callable[..., support.Served]) -> Served:
    shared = serve(progress_interval=0)
    port = int(shared.url.rsplit(":", 1)[1])
    return Served(port, shared.url, shared.emitter, shared.adapter.sio)


def backlog_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "cause", None) == "backlog"]


# -- functional: the stalled client is dropped, the bystander gets everything ---------------


def test_a_websocket_client_that_stops_reading_is_disconnected(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskevents")
    bystander = Client().connect(served.url)
    stalled = StalledClient(served.port)
    try:
        bystander.emit("subscribe_task", {"config_name": "aws01"})
        bystander.wait_for("task_status", timeout=10)
        bystander.seen.clear()
        received = bystander.inbox.qsize
        blob = "x" * 5_000
        emitted: list[int] = []
        # Lifecycle events are never coalesced: each is one packet for each client.
        for _ in range(3_000):
            emitted.append(served.emitter.started("aws01", "flood").seq)
            emitted.append(served.emitter.completed("aws01", {"blob": blob}).seq)
            # keep the bystander (which does read) from falling far behind
            wait_until(lambda: len(emitted) - received() < 300, timeout=10)
            if stalled.sid not in served.sio.eio.sockets:
                break
        assert wait_until(lambda: stalled.sid not in served.sio.eio.sockets, timeout=10), (
            f"still connected after {len(emitted)} events"
        )
        assert stalled.cut_off()
        # and everyone else is still served, every event in order
        last = served.emitter.started("aws01", "after").seq
        emitted.append(last)
        bystander.wait_for("task_status_update", lambda p: p["seq"] == last, timeout=20)
        assert [u["seq"] for u in bystander.updates()] == emitted
    finally:
        stalled.close()
        bystander.close()
    (record,) = backlog_records(caplog)
    assert record.levelno == logging.WARNING
    assert stalled.sid in record.getMessage()
    assert "max_backlog=1000" in record.getMessage()


def test_a_long_polling_client_that_stops_polling_is_disconnected(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskevents")

    def request(method: str, sid: str | None = None, body: bytes | None = None) -> str:
        path = "/socket.io/?EIO=4&transport=polling" + (f"&sid={sid}" if sid else "")
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return f"{response.status} {response.read().decode()}"
        finally:
            connection.close()

    sid = json.loads(request("GET").split(" ", 1)[1][1:])["sid"]
    assert request("POST", sid, b"40") == "200 OK"
    assert request("GET", sid).startswith("200 40{")
    assert request("POST", sid, SUBSCRIBE.encode()) == "200 OK"
    assert wait_until(lambda: served.sio.eio.sockets[sid].queue.qsize() >= 1)
    for _ in range(550):  # 1,100 packets for a client that never polls again
        served.emitter.started("aws01", "flood")
        served.emitter.completed("aws01", {"blob": "x" * 100})
    assert wait_until(lambda: sid not in served.sio.eio.sockets, timeout=10)
    assert request("GET", sid).startswith("400 ")
    assert len(backlog_records(caplog)) == 1


class _FakeEngineIOSocket:
    def __init__(self, server: Any, sid: str, packets: int) -> None:
        self.server = server
        self.sid = sid
        self.closed = self.closing = False
        self.queue: queue.Queue[Any] = queue.Queue()
        for _ in range(packets):
            self.queue.put("packet")
        self.close_calls: list[dict[str, Any]] = []
        server.sockets[sid] = self

    def close(self, **options: Any) -> None:
        self.close_calls.append(options)
        self.closed = True
        self.queue.put(None)


def test_the_guard_drops_a_growing_or_huge_backlog_without_waiting_and_lets_go_of_it() -> None:
    sio = socketio.Server(async_mode="threading")
    stuck = _FakeEngineIOSocket(sio.eio, "stuck", packets=11)
    draining = _FakeEngineIOSocket(sio.eio, "draining", packets=15)
    huge = _FakeEngineIOSocket(sio.eio, "huge", packets=41)
    under = _FakeEngineIOSocket(sio.eio, "under", packets=10)
    guard = BacklogGuard(sio, max_packets=10)
    assert guard.check() == 1  # over four times the limit: at once
    assert [s.sid for s in (stuck, draining, huge, under) if s.close_calls] == ["huge"]
    for _ in range(3):
        draining.queue.get()
    assert guard.check() == 1  # still over, not going down: it stopped reading
    assert [s.sid for s in (stuck, draining, huge, under) if s.close_calls] == ["stuck", "huge"]
    # Engine.IO's disconnect() would wait for the queue to drain: for ever, here.
    assert stuck.close_calls == [{"wait": False, "abort": True, "reason": "server disconnect"}]
    assert list(stuck.queue.queue) == [None]  # the backlog is let go of
    assert sorted(sio.eio.sockets) == ["draining", "under"]
    assert guard.dropped == 2


def test_the_guard_runs_in_the_background_and_stops_promptly() -> None:
    sio = socketio.Server(async_mode="threading")
    stuck = _FakeEngineIOSocket(sio.eio, "stuck", packets=41)
    # checks at once, then every 5 s: stop() must not wait for the next one
    guard = BacklogGuard(sio, max_packets=10, interval=5.0)
    guard.start()
    guard.start()  # once
    try:
        assert wait_until(lambda: bool(stuck.close_calls))
    finally:
        started = time.monotonic()
        guard.stop()
        stopped_in = time.monotonic() - started
    assert stopped_in < 1.0
    assert guard.dropped == 1
    guard.stop()  # idempotent


# -- memory: a server subprocess under a one-minute flood, threading and gevent ---------------

#: The server of the memory test: Flask-SocketIO in the given async mode, and a task
#: that emits ~10 KB progress (and lifecycle) events without pause.
SERVER = """
import sys

MODE = sys.argv[1]
if MODE == "gevent":
    from gevent import monkey

    monkey.patch_all()

import flask
from flask_socketio import SocketIO

from taskevents import Emitter
from taskevents.flask import TaskEvents

app = flask.Flask("taskevents-flood")
app.config.update(
    TASKEVENTS_SUBJECTS={"aws01": {}},
    TASKEVENTS_PROGRESS_INTERVAL=0,
    TASKEVENTS_DASHBOARD=False,
)
socketio = SocketIO(app, async_mode=MODE)
emitter = Emitter(source="flood")
TaskEvents(app, socketio, emitter=emitter)


def flood():
    blob = "x" * 10_000
    while True:
        emitter.started("aws01", "flood")
        for percent in range(0, 100, 10):
            emitter.progress("aws01", percent, message=blob)
            socketio.sleep(0.003)
        emitter.completed("aws01", {"blob": blob})


if MODE == "gevent":
    from gevent.pywsgi import WSGIServer

    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    port = server.server_port
else:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    server.daemon_threads = True
    port = server.server_port
print(port, flush=True)
socketio.start_background_task(flood)
server.serve_forever()
"""

WARM_UP = 8  # seconds before the flood is measured
FLOOD = 60  # seconds of flood measured
#: How far RSS may rise above the level after warm-up. Before it is dropped, a stalled
#: client may hold up to twice max_backlog (1000) packets of ~10 KB, 10-20 MB, plus its
#: writer's batch; measured: 15-25 MiB of saw-tooth in both modes. Unguarded, RSS grows
#: ~4 MiB/s for as long as the flood lasts (+230 MiB in this minute, both modes): the
#: ping timeout closes the session at 45 s but its writer, blocked in a send, keeps it.
RSS_BOUND_MIB = 60


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Flood:
    """A reading bystander and a stalled client that reconnects each time it is cut off
    and floods get_all_tasks without reading the answers."""

    def __init__(self, port: int, until: float) -> None:
        self.port = port
        self.until = until
        self.updates = 0
        self.bystander_error: str | None = None
        self.connected = 0  # stalled connections that got as far as subscribing
        self.cut_off = 0  # ...and were then cut off by the server
        self.requests = 0
        self.threads = [
            threading.Thread(target=self._bystander, daemon=True),
            threading.Thread(target=self._stalled, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _bystander(self) -> None:
        try:
            ws = WebSocketClient.connect(
                f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket"
            )
            ws.receive(timeout=10)
            ws.send("40")
            ws.receive(timeout=10)
            ws.send(SUBSCRIBE)
            while time.monotonic() < self.until:
                message = ws.receive(timeout=1)
                if message == "2":
                    ws.send("3")  # Engine.IO ping
                elif isinstance(message, str) and message.startswith('42["task_status_update"'):
                    self.updates += 1
            ws.close()
        except Exception as exc:
            self.bystander_error = repr(exc)

    def _stalled(self) -> None:
        while time.monotonic() < self.until:
            try:
                client = StalledClient(self.port, timeout=5)
            except (OSError, ValueError):
                time.sleep(0.1)
                continue
            self.connected += 1
            try:
                while time.monotonic() < self.until:
                    client.send('42["get_all_tasks"]')
                    self.requests += 1
                    time.sleep(0.02)
            except OSError:
                self.cut_off += 1
            finally:
                client.close()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=15)


@pytest.mark.parametrize("mode", ["threading", "gevent"])
def test_memory_stays_bounded_under_a_flood_with_a_stalled_client(
    mode: str, tmp_path: Path
) -> None:
    stderr_path = tmp_path / "server.err"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER, mode],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        started = time.monotonic()
        flood = Flood(port, until=started + WARM_UP + FLOOD)
        # the level after warm-up: the lowest of the last few seconds (RSS saw-tooths as
        # the stalled client's backlog builds up and is let go of)
        warm_up = []
        for second in range(1, WARM_UP + 1):
            time.sleep(max(0.0, started + second - time.monotonic()))
            warm_up.append(rss_mib(process.pid))
        baseline = min(warm_up[-4:])
        updates_at_baseline = flood.updates
        samples = []
        for second in range(1, FLOOD + 1):
            time.sleep(max(0.0, started + WARM_UP + second - time.monotonic()))
            assert process.poll() is None, "the server died"
            samples.append(rss_mib(process.pid))
        flood.join()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
    errors = stderr_path.read_text()
    print(
        f"\n[{mode}] RSS after {WARM_UP} s warm-up: {baseline:.1f} MiB; over the {FLOOD} s "
        f"flood: min {min(samples):.1f}, max {max(samples):.1f}, final {samples[-1]:.1f} MiB "
        f"(max growth {max(samples) - baseline:+.1f} MiB, bound {RSS_BOUND_MIB} MiB); "
        f"stalled client subscribed {flood.connected} times, cut off {flood.cut_off} times, "
        f"sent {flood.requests} get_all_tasks; bystander got {flood.updates} updates"
    )
    assert max(samples) - baseline < RSS_BOUND_MIB, samples
    assert flood.bystander_error is None, flood.bystander_error
    assert flood.updates - updates_at_baseline > 10 * FLOOD  # it kept receiving
    assert flood.cut_off >= 3  # the stalled client was dropped again and again
    assert "Traceback" not in errors, errors[-3000:]


def test_the_guard_also_bounds_the_bytes_waiting_for_a_client() -> None:
    class Packet:
        def __init__(self, data: str) -> None:
            self.data = data

    sio = socketio.Server(async_mode="threading")
    few_but_big = _FakeEngineIOSocket(sio.eio, "big", packets=0)
    for _ in range(5):
        few_but_big.queue.put(Packet("x" * 1_000_000))
    small = _FakeEngineIOSocket(sio.eio, "small", packets=5)
    guard = BacklogGuard(sio, max_packets=1000, max_bytes=1_000_000)
    assert guard.check() == 1  # 5 MB waiting: five times the byte limit, at once
    assert few_but_big.close_calls
    assert not small.close_calls
