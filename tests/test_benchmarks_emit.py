"""The Socket.IO adapter's direct emit (the burst-throughput path of
``SocketIOAdapter.deliver``) sends exactly what ``sio.emit`` sends, or steps aside.

``benchmarks/burst.py`` measures it against raw emits; these tests pin down that it is the
same traffic: the same Engine.IO packets, character for character, to the same
participants, and that it hands over to ``sio.emit`` whenever it could differ.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
import socketio

from taskevents import Emitter
from taskevents.adapters.socketio import room_for, update_payload
from taskevents.adapters.socketio import server as server_module
from taskevents.adapters.socketio.server import _emit_direct

NAME = "task_status_update"


class Recorder:
    """A python-socketio Server whose Engine.IO sends are recorded, not sent."""

    def __init__(self, namespace: str = "/", members: int = 3, **options: Any) -> None:
        self.sio = socketio.Server(async_mode="threading", **options)
        self.namespace = namespace
        self.sent: list[tuple[str, Any]] = []

        def record(eio_sid: str, packet: Any) -> None:
            self.sent.append((eio_sid, packet.encode()))

        self.sio.eio.send_packet = record  # what Server._send_eio_packet calls
        for index in range(members):
            sid = self.sio.manager.connect(f"eio{index}", namespace)
            self.sio.manager.enter_room(sid, namespace, room_for("aws01"))
        # one client in another room, which must get nothing
        other = self.sio.manager.connect("eio-other", namespace)
        self.sio.manager.enter_room(other, namespace, room_for("aws02"))

    def via_emit(self, payload: Any, room: str) -> list[tuple[str, Any]]:
        self.sent.clear()
        self.sio.emit(NAME, payload, room=room, namespace=self.namespace)
        return sorted(self.sent, key=repr)

    def via_direct(self, payload: Any, room: str) -> tuple[bool, list[tuple[str, Any]]]:
        self.sent.clear()
        went = _emit_direct(self.sio, NAME, payload, room, self.namespace)
        return went, sorted(self.sent, key=repr)


def _events() -> list[Any]:
    """Events of every kind, with data that tests the encoder."""
    emitter = Emitter(source="tests")
    return [
        emitter.started(
            "aws01",
            "change_ip",
            text='é ü 中文 \U0001f600 "quoted" \\ back\nslash\t</script>',
            floats=[0.1, 1e300, -2.5e-300, 123456789.123456789],
            nested={"a": [1, {"b": None, "c": True}], "empty": {}, "list": []},
            big=2**70,
        ),
        emitter.progress("aws01", 33.3, stage="x" * 500, message="half way"),
        emitter.progress("aws01", 100),
        emitter.completed("aws01", {"ip": "203.0.113.7", "ok": [True, False, None]}),
        emitter.started("aws01", "second"),
        emitter.failed("aws01", "boom \u2028 \x00 \x1f"),
        emitter.started("aws01", "third"),
        emitter.cancelled("aws01", "stopped"),
    ]


@pytest.mark.parametrize("namespace", ["/", "/tasks"])
@pytest.mark.parametrize("still_busy", [False, True])
def test_direct_emit_sends_what_sio_emit_sends(namespace: str, still_busy: bool) -> None:
    recorder = Recorder(namespace)
    for event in _events():
        payload = update_payload(event, still_busy=still_busy)
        expected = recorder.via_emit(payload, room_for("aws01"))
        went, sent = recorder.via_direct(payload, room_for("aws01"))
        assert went
        assert sent == expected
        assert len(sent) == 3
        assert all(text.startswith("42") for _, text in sent)


def test_any_json_payload_is_encoded_as_sio_emit_encodes_it() -> None:
    recorder = Recorder()
    for payload in (
        {"nan": math.nan, "inf": -math.inf, "int": True, "tuple": (1, 2)},
        ["a", 1, None],
        "text",
        {"\ud800": "lone surrogate"},
    ):
        expected = recorder.via_emit(payload, room_for("aws01"))
        assert recorder.via_direct(payload, room_for("aws01")) == (True, expected)


def test_direct_emit_to_an_empty_or_unknown_room_sends_nothing() -> None:
    recorder = Recorder(members=0)
    payload = update_payload(_events()[0])
    assert recorder.via_emit(payload, room_for("aws01")) == []
    assert recorder.via_direct(payload, room_for("aws01")) == (True, [])
    assert recorder.via_direct(payload, room_for("nobody")) == (True, [])
    unknown = Recorder(namespace="/elsewhere", members=0)
    unknown.namespace = "/never-connected"
    assert unknown.via_direct(payload, room_for("aws01")) == (True, [])


def test_binary_data_is_left_to_sio_emit() -> None:
    recorder = Recorder()
    went, sent = recorder.via_direct({"blob": b"\x00\x01"}, room_for("aws01"))
    assert (went, sent) == (False, [])
    # and sio.emit sends it as a binary event
    assert recorder.via_emit({"blob": b"\x00\x01"}, room_for("aws01"))


def test_unencodable_and_circular_payloads_are_left_to_sio_emit() -> None:
    recorder = Recorder()
    assert recorder.via_direct({"x": object()}, room_for("aws01")) == (False, [])
    circular: dict[str, Any] = {}
    circular["self"] = circular
    assert recorder.via_direct(circular, room_for("aws01")) == (False, [])


def test_an_info_logging_server_keeps_its_emit_log_lines() -> None:
    log = logging.getLogger("tests.socketio.info")
    log.setLevel(logging.INFO)  # python-socketio logs every emit at INFO
    recorder = Recorder(logger=log)
    went, _ = recorder.via_direct(update_payload(_events()[0]), room_for("aws01"))
    assert not went


def test_a_message_queue_manager_publishes_through_sio_emit() -> None:
    class Publishing(socketio.Manager):  # type: ignore[misc]
        def emit(self, *args: Any, **kwargs: Any) -> Any:
            return super().emit(*args, **kwargs)

    recorder = Recorder(client_manager=Publishing())
    assert recorder.via_direct(update_payload(_events()[0]), room_for("aws01")) == (False, [])


def test_a_patched_or_overridden_packet_send_is_respected() -> None:
    recorder = Recorder()
    calls: list[Any] = []
    recorder.sio._send_eio_packet = lambda *args: calls.append(args)
    assert recorder.via_direct(update_payload(_events()[0]), room_for("aws01")) == (False, [])

    class Server(socketio.Server):  # type: ignore[misc]
        def _send_eio_packet(self, *args: Any) -> Any:
            return super()._send_eio_packet(*args)

    sio = Server(async_mode="threading")
    assert not _emit_direct(sio, NAME, {"a": 1}, room_for("aws01"), "/")


def test_a_patched_or_overridden_emit_is_respected() -> None:
    recorder = Recorder()
    calls: list[Any] = []
    recorder.sio.emit = lambda *args, **kwargs: calls.append(args)
    assert recorder.via_direct(update_payload(_events()[0]), room_for("aws01")) == (False, [])

    class Server(socketio.Server):  # type: ignore[misc]
        def emit(self, *args: Any, **kwargs: Any) -> Any:
            return super().emit(*args, **kwargs)

    sio = Server(async_mode="threading")
    assert not _emit_direct(sio, NAME, {"a": 1}, room_for("aws01"), "/")


def test_a_custom_json_module_is_left_to_sio_emit() -> None:
    import json as stdlib_json

    class Sorted:
        @staticmethod
        def dumps(*args: Any, **kwargs: Any) -> str:
            return stdlib_json.dumps(*args, **{**kwargs, "sort_keys": True})

        loads = staticmethod(stdlib_json.loads)

    import engineio.packet
    import socketio.packet

    # python-socketio and python-engineio set the module on their packet classes
    originals = socketio.packet.Packet.json, engineio.packet.Packet.json
    try:
        recorder = Recorder(json=Sorted)
        went, _ = recorder.via_direct(update_payload(_events()[0]), room_for("aws01"))
        assert not went
    finally:
        socketio.packet.Packet.json, engineio.packet.Packet.json = originals


def test_the_json_encoder_is_the_packet_encoders(caplog: pytest.LogCaptureFixture) -> None:
    import json

    plain = server_module._Plain()
    for event in _events():
        data = [NAME, update_payload(event)]
        assert plain.encode(data) == json.dumps(data, separators=(",", ":"))
    with caplog.at_level(logging.WARNING):
        assert not caplog.records


def test_a_waiting_worker_is_notified_once_however_many_events_arrive() -> None:
    # Under gevent the worker does not run until the emitting greenlet yields: a burst of
    # events then arrives while it still counts as waiting, and each used to notify it.
    from taskevents.adapters.base import BackgroundAdapter

    class Sink(BackgroundAdapter):
        def deliver(self, event: Any) -> None:
            pass

    emitter = Emitter(source="tests")
    events = [emitter.started("aws01", "a"), emitter.completed("aws01")] * 50
    adapter = Sink()
    adapter._started = True  # no worker thread: one that has not run since its wait
    adapter._waiting = True
    notified: list[int] = []
    adapter._cond.notify = lambda n=1: notified.append(n)  # type: ignore[method-assign]
    try:
        for event in events:
            adapter.handle(event)
        adapter.call_soon("aws01", lambda: None)
        assert notified == [1]
        assert adapter.stats["queued"] == len(events) + 1
        adapter._waiting = True  # waiting again: the next one notifies again
        adapter.call_soon("aws01", lambda: None)
        assert notified == [1, 1]
    finally:
        adapter._queue.clear()
        adapter._started = False
        adapter.close()


def test_a_recipient_that_closed_meanwhile_does_not_stop_the_rest_of_the_room() -> None:
    import engineio.exceptions
    import socketio

    from taskevents.adapters.socketio.server import _emit_direct

    sio = socketio.Server(async_mode="threading")
    sent: list[str] = []

    def send_packet(eio_sid: str, packet: object) -> None:
        if eio_sid == "gone":
            raise engineio.exceptions.SocketIsClosedError()
        sent.append(eio_sid)

    sio.eio.send_packet = send_packet
    sio.manager.get_participants = lambda namespace, room: iter(
        [("a", "first"), ("b", "gone"), ("c", "last")]
    )
    assert _emit_direct(sio, "task_status_update", {"x": 1}, "task_aws01", "/")
    assert sent == ["first", "last"]
