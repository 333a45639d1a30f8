"""``taskevents tail`` against a hostile (malicious or compromised) Socket.IO server: a
real python-socketio server on a live port that sends what it likes, and the real
command in a subprocess."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import socketio

from tests.support.socketio import LiveServer, wait_until
from tests.tail.test_tail import Tail

Script = Callable[[socketio.Server, str, dict[str, Any]], None]


@pytest.fixture
def hostile() -> Iterator[Callable[[Script], str]]:
    """``hostile(on_subscribe)``: a Socket.IO server that greets like taskevents and, on
    each ``subscribe_task``, calls ``on_subscribe(sio, sid, payload)``; its URL."""
    servers: list[LiveServer] = []

    def start(on_subscribe: Script) -> str:
        sio = socketio.Server(async_mode="threading", logger=False, engineio_logger=False)

        @sio.event  # type: ignore[untyped-decorator]
        def connect(sid: str, environ: Any, auth: Any = None) -> None:
            sio.emit("connection_status", {"status": "connected", "stream": "s1"}, to=sid)

        @sio.on("subscribe_task")  # type: ignore[untyped-decorator]
        def subscribe(sid: str, payload: Any) -> None:
            on_subscribe(sio, sid, payload if isinstance(payload, dict) else {})

        server = LiveServer(socketio.WSGIApp(sio))
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


def _status(name: Any, status: dict[str, Any], seq: int = 1) -> dict[str, Any]:
    return {"config_name": name, "seq": seq, "stream": "s1", "status": status}


def test_a_status_word_from_the_server_cannot_drive_the_terminal(
    hostile: Callable[[Script], str],
) -> None:
    """Defect: the subject's ``status`` (from ``task_status`` and ``task_status_update``)
    and the last task's ``outcome`` are shown raw (describe_view, LiveView.card, the
    final --wait line): a server can write ANSI/OSC escape sequences to the terminal."""

    def on_subscribe(sio: socketio.Server, sid: str, payload: dict[str, Any]) -> None:
        name = payload.get("config_name")
        last = {"task_id": "t1", "task_type": "x", "outcome": "\x1b]0;pwned\x07\x1b[2J"}
        sio.emit(
            "task_status", _status(name, {"status": "\x1b[31mevil\x1b[0m", "last": last}), to=sid
        )

    url = hostile(on_subscribe)
    tail = Tail(url, "--subject", "aws01")
    tail.wait_for(tail.out, lambda line: "aws01" in line)
    tail.process.kill()
    tail.finish()
    text = "\n".join(tail.out + tail.err)
    assert "\x1b" not in text, text
    assert "\x07" not in text, text


def test_json_lines_stay_valid_json_when_the_server_sends_nan(
    hostile: Callable[[Script], str],
) -> None:
    """Defect: ``--json`` writes what the server sent with ``json.dumps`` (allow_nan on):
    a ``NaN`` or ``Infinity`` from the server becomes a bare ``NaN`` token, which is not
    JSON, and breaks ``jq`` and every strict reader downstream."""

    def on_subscribe(sio: socketio.Server, sid: str, payload: dict[str, Any]) -> None:
        name = payload.get("config_name")
        current = {"task_id": "t1", "task_type": "x", "progress": {"percent": math.nan}}
        sio.emit("task_status", _status(name, {"status": "busy", "current": current}), to=sid)

    url = hostile(on_subscribe)
    tail = Tail(url, "--subject", "aws01", "--json")
    tail.wait_for(tail.out, lambda line: "aws01" in line)
    tail.process.kill()
    tail.finish()

    def refuse(token: str) -> None:
        pytest.fail(f"not JSON: {token} in {tail.out}")

    for line in tail.out:
        json.loads(line, parse_constant=refuse)


def test_statuses_for_subjects_never_asked_for_are_ignored(
    hostile: Callable[[Script], str],
) -> None:
    """Defect: ``Watcher._status`` adds a view for any ``config_name`` the server sends
    (``self.views.setdefault``), so a server can make the client show, keep in memory
    without bound (past MAX_SUBJECTS) and subscribe again on reconnect subjects it never
    asked for."""

    def on_subscribe(sio: socketio.Server, sid: str, payload: dict[str, Any]) -> None:
        sio.emit("task_status", _status(payload.get("config_name"), {"status": "idle"}), to=sid)
        for number in range(50):
            sio.emit("task_status", _status(f"intruder{number}", {"status": "idle"}), to=sid)
        sio.emit("task_status", _status("aws01", {"status": "busy"}, seq=2), to=sid)

    url = hostile(on_subscribe)
    tail = Tail(url, "--subject", "aws01")
    tail.wait_for(tail.out, lambda line: line.startswith("aws01: busy"))
    tail.process.kill()
    tail.finish()
    assert not [line for line in tail.out if "intruder" in line]


def test_a_server_that_disconnects_the_client_is_reconnected_to(
    hostile: Callable[[Script], str],
) -> None:
    """Defect: when the server ends the Socket.IO session itself (``disconnect(sid)``:
    a kicked client, an expired session), the in-order engine.io client handles the
    disconnect packet in its read-loop thread, and ``eio.disconnect()`` joins that very
    thread: ``RuntimeError: cannot join current thread`` is printed on stderr, the
    engine.io client stays "connected", and every reconnection fails with "Client is not
    in a disconnected state": tail exits 2 instead of resuming."""
    import threading

    connects: list[str] = []

    def on_subscribe(sio: socketio.Server, sid: str, payload: dict[str, Any]) -> None:
        name = payload.get("config_name")
        sio.emit("task_status", _status(name, {"status": "idle"}), to=sid)
        if sid not in connects:
            connects.append(sid)
            if len(connects) == 1:
                threading.Timer(0.5, lambda: sio.disconnect(sid)).start()

    url = hostile(on_subscribe)
    tail = Tail(url, "--subject", "aws01")
    tail.wait_for(tail.err, lambda line: "connection lost" in line)
    tail.wait_for(tail.err, lambda line: "connected again" in line or "cannot" in line)
    assert tail.process.poll() is None, tail.err
    tail.process.kill()
    tail.finish()
    assert len(connects) == 2, tail.err
    assert not [line for line in tail.err if "Traceback" in line], tail.err


def test_a_retry_after_that_is_not_a_number_does_not_stall_the_subject(
    hostile: Callable[[Script], str],
) -> None:
    """Defect: ``Watcher._error`` clamps ``retry_after`` with ``min(max(float(retry),
    0.1), 60)``, which lets NaN through (every comparison with NaN is false): the
    subscription is due at ``now + nan``, never reached, so tail shows nothing for the
    subject and never says why, for ever. A value that is not finite should be treated
    as absent (or clamped)."""
    subscribes: list[dict[str, Any]] = []

    def on_subscribe(sio: socketio.Server, sid: str, payload: dict[str, Any]) -> None:
        subscribes.append(payload)
        name = payload.get("config_name")
        if len(subscribes) == 1:
            error = {
                "event": "subscribe_task",
                "config_name": name,
                "message": "too many subscriptions; try again later",
                "retry_after": math.nan,
            }
            sio.emit("error", error, to=sid)
        else:
            sio.emit("task_status", _status(name, {"status": "idle"}), to=sid)

    url = hostile(on_subscribe)
    tail = Tail(url, "--subject", "aws01")
    seen = wait_until(
        lambda: len(subscribes) >= 2 or tail.process.poll() is not None or bool(tail.err), 8
    )
    tail.process.kill()
    tail.finish()
    assert seen, "tail neither subscribed again nor said anything in 8 s"
