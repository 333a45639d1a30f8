"""taskevents.celery in one process: Celery's eager mode (``task_always_eager``) runs a
task where it is called, with the same signals as a worker, so each behaviour can be
checked against an emitter on a MemoryStateStore. ``test_worker.py`` does it with a real
worker."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Ignore

import taskevents.celery
from taskevents import Emitter, UsageError, ValidationError
from taskevents.celery import Instrumentation, instrument
from taskevents.testing import capture_events


@pytest.fixture
def app() -> Iterator[Celery]:
    celery_app = Celery("eager", broker="memory://", set_as_current=False)
    celery_app.conf.update(task_always_eager=True, task_store_eager_result=False)
    yield celery_app
    celery_app.close()


@pytest.fixture
def emitter() -> Emitter:
    return Emitter(source="tests")


@pytest.fixture
def instrumented(app: Celery, emitter: Emitter) -> Iterator[Instrumentation]:
    instrumentation = instrument(app, emitter, subject="config_name")
    yield instrumentation
    instrumentation.close()


def kinds(events: list[Any]) -> list[tuple[str, str]]:
    return [(event.type, event.subject) for event in events]


def test_a_task_emits_started_progress_and_completed(
    app: Celery, instrumented: Instrumentation
) -> None:
    @app.task(name="change_ip")  # type: ignore[untyped-decorator]
    def change_ip(config_name: str) -> tuple[str, int]:
        event = taskevents.celery.progress(50, stage="execution", message="Changing IP...")
        assert event is not None
        assert event.data == {"percent": 50, "stage": "execution", "message": "Changing IP..."}
        return ("203.0.113.7", 1)

    with capture_events() as events:
        result = change_ip.delay("aws01")

    assert kinds(events) == [
        ("task_started", "aws01"),
        ("task_progress", "aws01"),
        ("task_completed", "aws01"),
    ]
    assert {event.task_id for event in events} == {result.id}
    assert {event.task_type for event in events} == {"change_ip"}
    assert events[-1].data == {"result": ["203.0.113.7", 1]}  # tuples as lists


def test_a_failure_sends_the_exception_type_and_message_only(
    app: Celery, instrumented: Instrumentation, emitter: Emitter
) -> None:
    @app.task(name="boom")  # type: ignore[untyped-decorator]
    def boom(config_name: str) -> None:
        raise KeyError("no such instance")

    with capture_events() as events:
        boom.delay(config_name="aws01")

    assert kinds(events) == [("task_started", "aws01"), ("task_failed", "aws01")]
    assert events[-1].data == {"error": {"type": "KeyError", "message": "'no such instance'"}}
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.status == "idle"


def test_the_subject_comes_from_a_keyword_a_position_or_a_default(
    app: Celery, instrumented: Instrumentation
) -> None:
    @app.task(name="both")  # type: ignore[untyped-decorator]
    def both(region: str, config_name: str = "aws09") -> None:
        pass

    with capture_events() as events:
        both.delay("eu-west-1", config_name="aws01")
        both.delay("eu-west-1", "aws02")
        both.delay("eu-west-1")

    assert [event.subject for event in events] == ["aws01"] * 2 + ["aws02"] * 2 + ["aws09"] * 2


def test_a_callable_names_the_subject_or_skips_the_call(app: Celery, emitter: Emitter) -> None:
    def subject_of(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        assert task.name == "job"
        return None if args[0] == "skip" else f"job-{args[0]}"

    @app.task(name="job")  # type: ignore[untyped-decorator]
    def job(number: str) -> None:
        taskevents.celery.progress(10)

    instrumentation = instrument(app, emitter, subject=subject_of)
    try:
        with capture_events() as events:
            job.delay("7")
            job.delay("skip")
    finally:
        instrumentation.close()
    assert kinds(events) == [
        ("task_started", "job-7"),
        ("task_progress", "job-7"),
        ("task_completed", "job-7"),
    ]


def test_a_missing_subject_never_breaks_the_task_and_is_logged_once(
    app: Celery, instrumented: Instrumentation, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(name="anonymous")  # type: ignore[untyped-decorator]
    def anonymous(x: int) -> int:
        assert taskevents.celery.progress(50) is None  # reports nothing, raises nothing
        return x * 2

    with capture_events() as events, caplog.at_level(logging.WARNING, "taskevents"):
        assert anonymous.delay(21).get() == 42
        assert anonymous.delay(1).get() == 2

    assert events == []
    warnings = [r.getMessage() for r in caplog.records if "anonymous" in r.getMessage()]
    assert len(warnings) == 1
    assert "its subject could not be found" in warnings[0]


def test_a_subject_that_is_not_a_valid_name_is_skipped(
    app: Celery, instrumented: Instrumentation, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(name="weird")  # type: ignore[untyped-decorator]
    def weird(config_name: Any) -> str:
        return "ran"

    with capture_events() as events, caplog.at_level(logging.WARNING, "taskevents"):
        assert weird.delay(config_name=42).get() == "ran"
        assert weird.delay(config_name="x" * 1000).get() == "ran"
        assert weird.delay(config_name="bad\x00name").get() == "ran"

    assert events == []
    assert any("must be a string" in r.getMessage() for r in caplog.records)


def test_a_result_that_is_not_json_completes_with_none_and_a_warning(
    app: Celery, instrumented: Instrumentation, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(name="odd")  # type: ignore[untyped-decorator]
    def odd(config_name: str, big: bool) -> Any:
        return "x" * 100_000 if big else {"when": object()}

    with capture_events() as events, caplog.at_level(logging.WARNING, "taskevents"):
        odd.delay("aws01", big=False)
        odd.delay("aws02", big=True)

    assert [event.type for event in events] == ["task_started", "task_completed"] * 2
    assert events[1].data == events[3].data == {"result": None}
    assert any(
        "odd completed with a result that is not reported" in r.getMessage() for r in caplog.records
    )


def test_a_retry_reports_progress_and_the_task_goes_on(
    app: Celery, instrumented: Instrumentation
) -> None:
    @app.task(name="flaky", bind=True, max_retries=3)  # type: ignore[untyped-decorator]
    def flaky(self: Any, config_name: str) -> int:
        if self.request.retries < 2:
            raise self.retry(countdown=0, exc=TimeoutError("slow API"))
        return int(self.request.retries)

    with capture_events() as events:
        flaky.delay("aws01")

    assert [event.type for event in events] == [
        "task_started",
        "task_progress",
        "task_progress",
        "task_completed",
    ]
    assert [event.data.get("retries") for event in events[1:3]] == [1, 2]
    assert events[1].data["stage"] == "retry"
    assert "slow API" in events[1].data["message"]
    assert events[-1].data == {"result": 2}


def test_a_task_that_ignores_itself_is_cancelled_not_left_running(
    app: Celery, instrumented: Instrumentation, emitter: Emitter
) -> None:
    @app.task(name="ignored")  # type: ignore[untyped-decorator]
    def ignored(config_name: str) -> None:
        raise Ignore()

    with capture_events() as events:
        ignored.delay("aws01")

    assert [event.type for event in events] == ["task_started", "task_cancelled"]
    assert events[-1].data == {"reason": "ignored"}


def test_two_tasks_on_one_subject_run_side_by_side(
    app: Celery, instrumented: Instrumentation, emitter: Emitter
) -> None:
    @app.task(name="inner")  # type: ignore[untyped-decorator]
    def inner(config_name: str) -> str:
        return "inner"

    @app.task(name="outer")  # type: ignore[untyped-decorator]
    def outer(config_name: str) -> str:
        inner.delay(config_name)  # while outer runs on the same subject: not exclusive
        return "outer"

    with capture_events() as events:
        outer.delay("aws01")

    assert [(e.type, e.task_type) for e in events] == [
        ("task_started", "outer"),
        ("task_started", "inner"),
        ("task_completed", "inner"),
        ("task_completed", "outer"),
    ]


def test_only_the_named_tasks_of_the_app_are_reported(app: Celery, emitter: Emitter) -> None:
    other = Celery("other", broker="memory://", set_as_current=False)
    other.conf.task_always_eager = True

    @app.task(name="reported")  # type: ignore[untyped-decorator]
    def reported(config_name: str) -> None:
        pass

    @app.task(name="unreported")  # type: ignore[untyped-decorator]
    def unreported(config_name: str) -> None:
        with pytest.raises(UsageError, match=r"not reported by taskevents\.celery\.instrument"):
            taskevents.celery.progress(1)

    @other.task(name="reported")  # type: ignore[untyped-decorator]
    def reported_elsewhere(config_name: str) -> None:
        pass

    instrumentation = instrument(app, emitter, subject="config_name", task_names=["reported"])
    try:
        with capture_events() as events:
            reported.delay("aws01")
            unreported.delay("aws01")
            reported_elsewhere.delay("aws01")
    finally:
        instrumentation.close()
        other.close()
    assert [(e.type, e.task_type) for e in events] == [
        ("task_started", "reported"),
        ("task_completed", "reported"),
    ]


def test_progress_outside_a_task_raises_a_clear_error(instrumented: Instrumentation) -> None:
    with pytest.raises(UsageError, match="no task runs here"):
        taskevents.celery.progress(50)


def test_bad_progress_raises_in_the_task(app: Celery, instrumented: Instrumentation) -> None:
    @app.task(name="bad_progress")  # type: ignore[untyped-decorator]
    def bad_progress(config_name: str) -> None:
        taskevents.celery.progress(150)

    app.conf.task_eager_propagates = True  # as a test suite would set it
    with capture_events() as events, pytest.raises(ValidationError, match="percent"):
        bad_progress.delay("aws01")
    assert [event.type for event in events] == ["task_started", "task_failed"]
    assert events[-1].data["error"]["type"] == "ValidationError"


def test_after_close_tasks_emit_nothing(app: Celery, emitter: Emitter) -> None:
    @app.task(name="quiet")  # type: ignore[untyped-decorator]
    def quiet(config_name: str) -> None:
        pass

    instrument(app, emitter, subject="config_name").close()
    with capture_events() as events:
        quiet.delay("aws01")
    assert events == []


def test_one_instrumentation_per_app(app: Celery, instrumented: Instrumentation) -> None:
    with pytest.raises(UsageError, match="instrumented already"):
        instrument(app, Emitter(), subject="config_name")


def test_without_an_emitter_the_redis_url_is_required(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKEVENTS_REDIS_URL", raising=False)
    with pytest.raises(UsageError, match="TASKEVENTS_REDIS_URL"):
        instrument(app, subject="config_name")
    monkeypatch.setenv("TASKEVENTS_REDIS_URL", "http://example.com/")
    with pytest.raises(ValidationError, match="url"):
        instrument(app, subject="config_name")


def test_bad_arguments_are_refused(app: Celery) -> None:
    with pytest.raises(ValidationError, match="subject"):
        instrument(app, Emitter(), subject="not a name")
    with pytest.raises(ValidationError, match="task_names"):
        instrument(app, Emitter(), subject="config_name", task_names="change_ip")
    with pytest.raises(ValidationError, match="emitter"):
        instrument(app, object(), subject="config_name")  # type: ignore[arg-type]
