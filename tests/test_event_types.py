"""Event types an application declares: emitted for a running task, received by
adapters and Socket.IO clients, kept in the history, leaving the task's state alone."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from taskevents import (
    CallableAdapter,
    Emitter,
    NoRunningTask,
    TaskEvent,
    ValidationError,
    define_event_type,
)
from taskevents.events import event_types
from taskevents.signals import SIGNALS
from taskevents.testing import capture_events
from tests.support.socketio import Served, subscribe

task_log = define_event_type("task_log")


def test_a_declared_type_has_a_signal_like_the_lifecycle_ones() -> None:
    assert task_log is SIGNALS["task_log"]
    assert task_log.name == "task-log"
    assert define_event_type("task_log") is task_log  # declaring again: the same
    assert "task_log" in event_types()


@pytest.mark.parametrize(
    "name", ["task_started", "task_progress", "log", "task_", "Task_Log", "task-log", 42]
)
def test_bad_type_names_are_refused(name: object) -> None:
    with pytest.raises(ValidationError) as caught:
        define_event_type(name)  # type: ignore[arg-type]
    assert caught.value.field == "name"


def test_emit_sends_a_declared_event_for_the_running_task(emitter: Emitter) -> None:
    with capture_events() as events:
        started = emitter.started("aws01", "change_ip")
        logged = emitter.emit("aws01", "task_log", line="allocating", level="info")
        emitter.completed("aws01")
    assert [e.type for e in events] == ["task_started", "task_log", "task_completed"]
    assert logged.data == {"line": "allocating", "level": "info"}
    assert logged.task_id == started.task_id
    assert logged.task_type == "change_ip"
    assert logged.seq == 2
    assert not logged.is_lifecycle
    # the state machine is untouched: busy until completed, no progress recorded
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.status == "idle"
    assert snapshot.last is not None
    assert snapshot.last.progress is None
    assert [e.type for e in emitter.state.history("aws01", 0) or []] == [
        "task_started",
        "task_log",
        "task_completed",
    ]
    assert TaskEvent.from_dict(logged.to_dict()) == logged
    assert logged.to_cloudevent()["type"] == "io.taskevents.task_log"


def test_emit_is_refused_without_a_task_or_for_undeclared_types(emitter: Emitter) -> None:
    with pytest.raises(NoRunningTask):
        emitter.emit("aws01", "task_log", line="x")
    emitter.started("aws01", "change_ip")
    for bad in ("task_progress", "task_completed", "task_undeclared"):
        with pytest.raises(ValidationError) as caught:
            emitter.emit("aws01", bad, line="x")
        assert caught.value.field == "type"
    with pytest.raises(ValidationError) as caught:
        emitter.emit("aws01", "task_log", line=float("nan"))
    assert caught.value.field == "data.line"


def test_adapters_filter_declared_types_and_take_them_by_default(emitter: Emitter) -> None:
    only_logs: list[TaskEvent] = []
    everything: list[TaskEvent] = []
    with (
        CallableAdapter(only_logs.append, types=["task_log"]).connect(emitter),
        CallableAdapter(everything.append).connect(emitter),
    ):
        emitter.started("aws01", "change_ip")
        emitter.emit("aws01", "task_log", line="one")
        # a type declared after the adapters connected reaches the one taking everything
        define_event_type("task_artifact")
        emitter.emit("aws01", "task_artifact", url="https://example.com/report.pdf")
        emitter.completed("aws01")
    assert [e.data["line"] for e in only_logs] == ["one"]
    assert [e.type for e in everything] == [
        "task_started",
        "task_log",
        "task_artifact",
        "task_completed",
    ]
    with pytest.raises(ValidationError):
        CallableAdapter(print, types=["task_undeclared"])


def test_socketio_clients_get_declared_events_live_and_on_resume(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    client = served.client()
    subscribe(client, "aws01")
    served.emitter.started("aws01", "change_ip")
    logged = served.emitter.emit("aws01", "task_log", line="allocating")
    update = client.wait_for("task_status_update", lambda p: p["seq"] == logged.seq)
    assert update["update"] == {
        "event": "task_log",
        "data": {"line": "allocating"},
        "task_id": logged.task_id,
        "task_type": "change_ip",
    }
    served.emitter.completed("aws01")
    late = served.client()
    late.emit(
        "subscribe_task", {"config_name": "aws01", "since": 1, "stream": served.adapter.stream_id}
    )
    replayed = late.wait_for("task_status_update", lambda p: p["update"]["event"] == "task_log")
    assert replayed["replayed"] is True
    assert replayed["update"]["data"] == {"line": "allocating"}
