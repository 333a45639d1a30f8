import logging
import threading

import pytest

from taskevents import (
    Adapter,
    BackgroundAdapter,
    CallableAdapter,
    Emitter,
    TaskEvent,
    ValidationError,
)
from taskevents.signals import REMOTE, SIGNALS


class Recorder(Adapter):
    def __init__(self, **filters: object) -> None:
        super().__init__(**filters)  # type: ignore[arg-type]
        self.events: list[TaskEvent] = []

    def handle(self, event: TaskEvent) -> None:
        self.events.append(event)


class Broken(Adapter):
    def handle(self, event: TaskEvent) -> None:
        raise ConnectionError("sink is down")


class Stuck(BackgroundAdapter):
    """Delivers only when the gate opens: a sink that hangs."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.delivered: list[TaskEvent] = []

    def deliver(self, event: TaskEvent) -> None:
        self.gate.wait()
        self.delivered.append(event)


def test_raising_and_hanging_adapters_affect_neither_the_task_nor_the_others(
    emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="taskevents"),
        Broken().connect() as broken,
        Stuck().connect() as stuck,
        Recorder().connect() as recorder,
    ):
        emitter.started("aws01", "change_ip")
        for n in range(200):
            emitter.progress("aws01", n % 100)
        emitter.completed("aws01")
        # Every emit returned although the stuck sink has delivered nothing yet.
        assert stuck.delivered == []
        assert [e.seq for e in recorder.events] == list(range(1, 203))
        assert broken.error_count == 202
        stuck.gate.set()
    assert [r.getMessage().count("sink is down") for r in caplog.records] == [1]
    assert stuck.delivered[0].type == "task_started"
    assert stuck.delivered[-1].type == "task_completed"


def test_filters_by_type_and_subject(emitter: Emitter) -> None:
    with Recorder(types=["task_completed", "task_failed"], subjects=["aws02"]).connect() as rec:
        for subject in ("aws01", "aws02"):
            emitter.started(subject, "change_ip")
            emitter.progress(subject, 10)
            emitter.completed(subject)
    assert [(e.subject, e.type) for e in rec.events] == [("aws02", "task_completed")]


def test_connect_to_one_emitter_only(emitter: Emitter) -> None:
    other = Emitter()
    with Recorder().connect(emitter) as rec:
        other.started("aws01", "change_ip")
        emitter.started("aws01", "change_ip")
    assert [e.source for e in rec.events] == ["tests"]


def test_disconnect_stops_delivery(emitter: Emitter) -> None:
    rec = Recorder().connect()
    emitter.started("aws01", "change_ip")
    rec.disconnect()
    emitter.completed("aws01")
    assert [e.type for e in rec.events] == ["task_started"]
    rec.close()


def test_a_plain_callable_can_be_an_adapter(emitter: Emitter) -> None:
    seen: list[str] = []
    with CallableAdapter(lambda event: seen.append(event.type), types=["task_started"]).connect():
        emitter.started("aws01", "change_ip")
        emitter.completed("aws01")
    assert seen == ["task_started"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"types": ["task_exploded"]}, "types"),
        ({"types": "task_started"}, "types"),
        ({"subjects": "aws01"}, "subjects"),
        ({"subjects": [""]}, "subjects"),
    ],
)
def test_bad_filters_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Recorder(**kwargs)
    assert caught.value.field == field


def test_callable_adapter_needs_a_callable() -> None:
    with pytest.raises(ValidationError, match="func: expected a callable"):
        CallableAdapter("print")  # type: ignore[arg-type]


def test_adapter_must_implement_handle() -> None:
    with pytest.raises(TypeError, match="handle"):
        Adapter()  # type: ignore[abstract]


def test_events_of_other_processes_reach_only_remote_adapters(emitter: Emitter) -> None:
    event = TaskEvent("e1", "task_started", "aws01", "t1", "change_ip", 1, 0.0, "b", {})  # type: ignore[arg-type]
    with (
        Recorder().connect() as local,
        Recorder().connect(emitter) as local_of_one,
        Recorder(remote=True).connect() as remote,
        Recorder(remote=True).connect(emitter) as remote_of_one,
    ):
        SIGNALS["task_started"].send(REMOTE, event=event)
        own = emitter.started("aws02", "change_ip")
    assert local.events == local_of_one.events == [own]
    assert remote.events == remote_of_one.events == [event, own]
