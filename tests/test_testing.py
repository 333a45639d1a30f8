from taskevents import Emitter
from taskevents.testing import capture_events


def test_capture_events_records_in_order_and_only_while_active(emitter: Emitter) -> None:
    emitter.started("aws01", "change_ip")
    with capture_events() as events:
        emitter.progress("aws01", 50)
        emitter.completed("aws01")
    emitter.started("aws01", "change_ip")
    assert [(e.type, e.seq) for e in events] == [("task_progress", 2), ("task_completed", 3)]


def test_capture_events_filters(emitter: Emitter) -> None:
    other = Emitter()
    with capture_events(emitter, types=["task_started"], subjects=["aws02"]) as events:
        for source in (emitter, other):
            for subject in ("aws01", "aws02"):
                source.started(subject, "change_ip")
                source.completed(subject)
    assert [(e.subject, e.type, e.source) for e in events] == [("aws02", "task_started", "tests")]
