import threading
from collections import defaultdict
from collections.abc import Callable

import pytest

from taskevents import (
    Emitter,
    NoRunningTask,
    SubjectBusy,
    TaskEvent,
    TaskEventsError,
    ValidationError,
)
from taskevents.exceptions import UsageError
from taskevents.testing import capture_events


def test_each_call_returns_the_event_it_sent(emitter: Emitter) -> None:
    with capture_events() as events:
        started = emitter.started("aws01", "change_ip")
        progress = emitter.progress("aws01", 40, stage="execution", message="Changing IP...")
        completed = emitter.completed("aws01", {"ip": "203.0.113.7"})
    assert events == [started, progress, completed]
    assert [e.seq for e in events] == [1, 2, 3]
    assert {e.task_id for e in events} == {started.task_id}
    assert {e.task_type for e in events} == {"change_ip"}
    assert progress.data == {"percent": 40, "stage": "execution", "message": "Changing IP..."}
    assert completed.data == {"result": {"ip": "203.0.113.7"}}
    assert all(e.source == "tests" for e in events)


def test_failed_and_cancelled_carry_their_details(emitter: Emitter) -> None:
    emitter.started("aws01", "change_ip")
    failed = emitter.failed("aws01", ValueError("no such instance"))
    assert failed.data == {"error": {"type": "ValueError", "message": "no such instance"}}
    emitter.started("aws01", "change_ip")
    cancelled = emitter.cancelled("aws01", "operator asked")
    assert cancelled.data == {"reason": "operator asked"}
    emitter.started("aws01", "change_ip")
    assert emitter.failed("aws01", "timeout").data["error"] == {
        "type": "Error",
        "message": "timeout",
    }


def test_track_success_emits_started_then_completed(emitter: Emitter) -> None:
    with capture_events() as events, emitter.track("aws01", "change_ip") as task:
        task.progress(50, stage="execution")
        task.result = {"status": "success"}
    assert [e.type for e in events] == ["task_started", "task_progress", "task_completed"]
    assert events[-1].data == {"result": {"status": "success"}}
    assert task.task_id == events[0].task_id


def test_track_exception_emits_failed_and_reraises(emitter: Emitter) -> None:
    with (
        capture_events() as events,
        pytest.raises(RuntimeError, match="refused"),
        emitter.track("aws01", "change_ip"),
    ):
        raise RuntimeError("refused")
    assert [e.type for e in events] == ["task_started", "task_failed"]
    assert events[-1].data == {"error": {"type": "RuntimeError", "message": "refused"}}
    assert emitter.state.snapshot("aws01").status == "idle"  # type: ignore[union-attr]


def test_track_keyboard_interrupt_emits_cancelled(emitter: Emitter) -> None:
    with (
        capture_events() as events,
        pytest.raises(KeyboardInterrupt),
        emitter.track("aws01", "change_ip"),
    ):
        raise KeyboardInterrupt
    assert [e.type for e in events] == ["task_started", "task_cancelled"]
    assert events[-1].data == {"reason": "KeyboardInterrupt"}


def test_track_cancel_inside_the_block_ends_the_task_once(emitter: Emitter) -> None:
    with capture_events() as events, emitter.track("aws01", "change_ip") as task:
        task.cancel("superseded")
    assert [e.type for e in events] == ["task_started", "task_cancelled"]


def test_track_as_decorator_runs_one_task_per_call(emitter: Emitter) -> None:
    @emitter.track("aws01", "change_ip")
    def change_ip(address: str) -> dict[str, str]:
        emitter.progress("aws01", 50)
        return {"ip": address}

    with capture_events() as events:
        assert change_ip("203.0.113.7") == {"ip": "203.0.113.7"}
        assert change_ip("203.0.113.8") == {"ip": "203.0.113.8"}
    assert [e.type for e in events] == ["task_started", "task_progress", "task_completed"] * 2
    assert events[2].data == {"result": {"ip": "203.0.113.7"}}
    assert events[0].task_id != events[3].task_id
    assert change_ip.__name__ == "change_ip"


def test_a_non_json_result_fails_the_task_as_decorator_and_as_with_block(
    emitter: Emitter,
) -> None:
    @emitter.track("aws01", "change_ip")
    def returns_object() -> object:
        return object()

    with capture_events() as events:
        with pytest.raises(ValidationError) as as_decorator:
            returns_object()
        with pytest.raises(ValidationError) as as_block, emitter.track("aws01", "change_ip") as t:
            t.result = object()
    assert as_decorator.value.field == as_block.value.field == "result"
    assert [e.type for e in events] == ["task_started", "task_failed"] * 2
    assert events[1].data["error"]["type"] == events[3].data["error"]["type"] == "ValidationError"
    assert emitter.state.snapshot("aws01").status == "idle"  # type: ignore[union-attr]


def test_misuse_of_a_tracker_is_a_usage_error(emitter: Emitter) -> None:
    tracker = emitter.track("aws01", "change_ip")
    with pytest.raises(UsageError):
        _ = tracker.task_id
    with tracker, pytest.raises(UsageError):
        tracker.__enter__()


def test_second_task_on_busy_subject_raises_and_emits_nothing(emitter: Emitter) -> None:
    first = emitter.started("aws01", "change_ip")
    with capture_events() as events:
        with pytest.raises(SubjectBusy) as caught:
            emitter.started("aws01", "reboot")
        with pytest.raises(SubjectBusy), emitter.track("aws01", "reboot"):
            pytest.fail("the body must not run")
    assert events == []
    assert isinstance(caught.value, TaskEventsError)
    assert caught.value.running_task_id == first.task_id
    assert "aws01" in str(caught.value)
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.current is not None
    assert snapshot.current.task_id == first.task_id
    assert snapshot.seq == 1


def test_non_exclusive_emitter_runs_tasks_side_by_side(emitter: Emitter) -> None:
    first = emitter.started("aws01", "change_ip")
    second = emitter.started("aws01", "reboot", exclusive=False)
    emitter.progress("aws01", 10, task_id=first.task_id)
    emitter.completed("aws01", task_id=second.task_id)
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.status == "busy"
    assert [t.task_id for t in snapshot.running] == [first.task_id]
    assert snapshot.running[0].progress == {"percent": 10}
    assert snapshot.last is not None
    assert snapshot.last.task_id == second.task_id


def test_progress_or_outcome_without_a_running_task_raises(emitter: Emitter) -> None:
    with capture_events() as events:
        calls: list[Callable[[], object]] = [
            lambda: emitter.progress("aws01", 10),
            lambda: emitter.completed("aws01"),
            lambda: emitter.failed("aws01", "x"),
            lambda: emitter.cancelled("aws01"),
        ]
        for call in calls:
            with pytest.raises(NoRunningTask, match="'aws01' has no running task"):
                call()
        emitter.started("aws01", "change_ip")
        with pytest.raises(NoRunningTask, match="no running task with id 'nope'"):
            emitter.progress("aws01", 10, task_id="nope")
    assert [e.type for e in events] == ["task_started"]
    assert "aws02" not in emitter.state.subjects()


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda e: e.started("", "change_ip"), "subject"),
        (lambda e: e.started(7, "change_ip"), "subject"),
        (lambda e: e.started("aws01", ""), "task_type"),
        (lambda e: e.started("aws01", "x", task_id=""), "task_id"),
        (lambda e: e.started("aws01", "x", when=object()), "details.when"),
        (lambda e: e.progress("busy", 101), "percent"),
        (lambda e: e.progress("busy", -1), "percent"),
        (lambda e: e.progress("busy", True), "percent"),
        (lambda e: e.progress("busy", "50"), "percent"),
        (lambda e: e.progress("busy", stage=3), "stage"),
        (lambda e: e.progress("busy", message=b"x"), "message"),
        (lambda e: e.completed("busy", {1: "x"}), "result"),
        (lambda e: e.completed("busy", {"ip": {1, 2}}), "result.ip"),
        (lambda e: e.failed("busy", 42), "error"),
        (lambda e: e.cancelled("busy", 42), "reason"),
        (lambda e: e.register("aws09", region=object()), "metadata.region"),
    ],
)
def test_bad_arguments_name_the_field(emitter: Emitter, call: object, field: str) -> None:
    emitter.started("busy", "change_ip")
    with capture_events() as events, pytest.raises(ValidationError) as caught:
        call(emitter)  # type: ignore[operator]
    assert caught.value.field == field
    assert events == []


def test_sixteen_threads_keep_every_subject_seq_gap_free() -> None:
    emitter = Emitter(exclusive=False)
    subjects = ["aws01", "aws02", "aws03", "aws04"]
    per_thread = 5_000
    received: dict[str, list[TaskEvent]] = defaultdict(list)

    def record(event: TaskEvent) -> None:
        received[event.subject].append(event)

    barrier = threading.Barrier(16)

    def work(index: int) -> None:
        subject = subjects[index % 4]
        barrier.wait()
        started = emitter.started(subject, "flood")
        for n in range(per_thread - 2):
            emitter.progress(subject, n % 101, task_id=started.task_id)
        emitter.completed(subject, index, task_id=started.task_id)

    from taskevents import CallableAdapter

    with CallableAdapter(record).connect(emitter):
        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    for subject in subjects:
        events = received[subject]
        # every subject got 4 threads x 5,000 events, received in seq order
        assert [e.seq for e in events] == list(range(1, 4 * per_thread + 1))
        assert len({e.id for e in events}) == len(events)
        snapshot = emitter.state.snapshot(subject)
        assert snapshot is not None
        assert snapshot.seq == events[-1].seq
        assert snapshot.status == "idle"
        assert snapshot.last is not None
        last_completed = [e for e in events if e.type == "task_completed"][-1]
        assert snapshot.last.task_id == last_completed.task_id
        assert snapshot.last.result == last_completed.data["result"]


def test_track_with_a_non_json_result_fails_the_task_and_says_why(emitter: Emitter) -> None:
    with (
        capture_events() as events,
        pytest.raises(ValidationError, match="result"),
        emitter.track("aws01", "change_ip") as task,
    ):
        task.result = object()
    assert [e.type for e in events] == ["task_started", "task_failed"]
    assert events[-1].data["error"]["type"] == "ValidationError"
    assert emitter.state.snapshot("aws01").status == "idle"  # type: ignore[union-attr]


# -- track() in coroutines ------------------------------------------------------------


def test_track_on_an_async_def_reports_after_the_body_has_run() -> None:
    import asyncio

    emitter = Emitter()
    ran: list[str] = []

    @emitter.track("aws01", "change_ip")
    async def change_ip(address: str) -> dict[str, str]:
        ran.append("body")
        await asyncio.sleep(0.01)
        assert emitter.state.snapshot("aws01").status == "busy"  # type: ignore[union-attr]
        return {"ip": address}

    with capture_events(emitter) as events:
        pending = change_ip("203.0.113.7")
        assert events == []  # nothing before it is awaited
        assert asyncio.run(pending) == {"ip": "203.0.113.7"}
    assert ran == ["body"]
    assert [e.type for e in events] == ["task_started", "task_completed"]
    assert events[1].data["result"] == {"ip": "203.0.113.7"}
    assert change_ip.__name__ == "change_ip"


def test_track_on_an_async_def_reports_failure_and_cancellation() -> None:
    import asyncio

    emitter = Emitter()

    @emitter.track("aws01", "change_ip")
    async def broken() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("the instance refused the new address")

    @emitter.track("aws02", "change_ip")
    async def endless() -> None:
        await asyncio.sleep(3600)

    async def cancel_it() -> None:
        task = asyncio.create_task(endless())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture_events(emitter) as events:
        with pytest.raises(RuntimeError, match="refused"):
            asyncio.run(broken())
        asyncio.run(cancel_it())
    assert [(e.subject, e.type) for e in events] == [
        ("aws01", "task_started"),
        ("aws01", "task_failed"),
        ("aws02", "task_started"),
        ("aws02", "task_cancelled"),
    ]
    assert events[3].data["reason"] == "CancelledError"
    assert emitter.state.snapshot("aws02").status == "idle"  # type: ignore[union-attr]


def test_async_with_track_reports_like_with() -> None:
    import asyncio

    emitter = Emitter()

    async def run() -> None:
        async with emitter.track("aws01", "change_ip") as task:
            task.progress(50, stage="execution")
            await asyncio.sleep(0)
            task.result = {"ip": "203.0.113.7"}

    with capture_events(emitter) as events:
        asyncio.run(run())
    assert [e.type for e in events] == ["task_started", "task_progress", "task_completed"]
    assert events[2].data["result"] == {"ip": "203.0.113.7"}
