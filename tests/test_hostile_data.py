"""Bad data from the application: what the emitter accepts, every sink can encode; a
failure always ends its task; sizes and subject counts are bounded."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from taskevents import (
    BackgroundAdapter,
    Emitter,
    MemoryStateStore,
    SubjectBusy,
    TaskEvent,
    ValidationError,
)
from taskevents.adapters.logging import JSONLinesFormatter, LoggingAdapter
from taskevents.signals import subject_forgotten
from taskevents.testing import capture_events


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


# -- what the emitter accepts, every encoder can encode ----------------------------------


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (10**5000, "result"),
        ({"ok": [1, 2, -(10**5000)]}, "result.ok[2]"),
        ("\ud800", "result"),
        ({"\udfff": 1}, "result"),
        (float("nan"), "result"),
        (float("inf"), "result"),
    ],
    ids=["huge-int", "nested-huge-int", "lone-surrogate", "surrogate-key", "nan", "inf"],
)
def test_values_no_encoder_takes_are_refused_at_emit_time(
    emitter: Emitter, value: object, field: str
) -> None:
    emitter.started("aws01", "change_ip")
    with pytest.raises(ValidationError) as caught:
        emitter.completed("aws01", value)
    assert caught.value.field == field
    # nothing was emitted: the task still runs and can end normally
    assert emitter.state.snapshot("aws01").status == "busy"  # type: ignore[union-attr]
    emitter.completed("aws01", {"ok": True})


def test_what_the_emitter_accepts_every_json_encoder_encodes(emitter: Emitter) -> None:
    # the largest integer json.dumps can write, unicode text, deep nesting within limit
    digits = getattr(sys, "get_int_max_str_digits", lambda: 4300)() or 4300
    value = {"big": 10 ** (digits - 1), "text": "ünïcødé ✓ 🚀", "nested": [[[[1.5]]]]}
    with capture_events() as events:
        emitter.started("aws01", "change_ip", note="x" * 100)
        emitter.progress("aws01", 50, message="half way ✓", extra=value)
        emitter.completed("aws01", value)
    for event in events:
        json.dumps(event.to_dict())
        json.dumps(event.to_cloudevent())
        json.loads(JSONLinesFormatter().format(_record_for(event)))
    json.dumps(emitter.state.snapshot("aws01").to_dict())  # type: ignore[union-attr]


def _record_for(event: TaskEvent) -> logging.LogRecord:
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    logger = logging.getLogger("taskevents.test-encode")
    handler = Keep()
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        LoggingAdapter(logger=logger).handle(event)
    finally:
        logger.removeHandler(handler)
    return captured[0]


# -- failed() always ends the task -------------------------------------------------------


def test_an_exception_whose_str_raises_still_fails_the_task(emitter: Emitter) -> None:
    emitter.started("aws01", "change_ip")
    failed = emitter.failed("aws01", Unprintable())
    assert failed.data["error"] == {"type": "Unprintable", "message": "Unprintable"}
    assert emitter.state.snapshot("aws01").status == "idle"  # type: ignore[union-attr]


def test_track_ends_the_task_when_the_exception_cannot_be_printed(emitter: Emitter) -> None:
    with pytest.raises(Unprintable), emitter.track("aws01", "change_ip"):
        raise Unprintable
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.status == "idle"
    assert snapshot.last is not None
    assert snapshot.last.outcome == "failed"


def test_a_huge_or_unencodable_exception_message_is_shortened_not_refused(
    emitter: Emitter,
) -> None:
    emitter.started("aws01", "change_ip")
    failed = emitter.failed("aws01", RuntimeError("x" * 10_000_000 + "\ud800"))
    message = failed.data["error"]["message"]
    assert len(message) <= 4000
    assert message.endswith("...")
    emitter.started("aws01", "change_ip")
    failed = emitter.failed("aws01", RuntimeError("bad \ud800 text"))
    json.dumps(failed.data, ensure_ascii=False).encode("utf-8")
    assert emitter.state.snapshot("aws01").status == "idle"  # type: ignore[union-attr]


def test_track_fails_the_task_when_its_result_is_too_large(emitter: Emitter) -> None:
    with pytest.raises(ValidationError) as caught, emitter.track("aws01", "change_ip") as task:
        task.result = "x" * 100_000
    assert caught.value.field == "result"
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.status == "idle"
    assert snapshot.last is not None
    assert snapshot.last.outcome == "failed"


# -- subject names: the protocol's rule ----------------------------------------------------


@pytest.mark.parametrize(
    "subject", ["", "x" * 129, "line\nbreak", "nul\x00", "del\x7f", "surrogate\ud800", 42]
)
def test_subjects_clients_could_never_subscribe_to_are_refused(
    emitter: Emitter, subject: object
) -> None:
    with pytest.raises(ValidationError) as caught:
        emitter.started(subject, "change_ip")  # type: ignore[arg-type]
    assert caught.value.field == "subject"
    assert "128 characters, no control characters" in str(caught.value)
    with pytest.raises(ValidationError):
        emitter.register(subject)  # type: ignore[arg-type]
    assert emitter.state.subjects() == []


def test_the_longest_allowed_subject_and_unicode_names_work(emitter: Emitter) -> None:
    for subject in ("x" * 128, "büro-01", "job:42/step 3"):
        emitter.started(subject, "change_ip")
        emitter.completed(subject)


@pytest.mark.parametrize(("field", "value"), [("task_type", "x" * 257), ("task_id", "a\nb")])
def test_task_ids_and_types_are_bounded_too(emitter: Emitter, field: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        emitter.started("aws01", **{"task_type": "change_ip", field: value})  # type: ignore[arg-type]
    assert caught.value.field == field


# -- event size ------------------------------------------------------------------------------


def test_events_over_the_maximum_size_are_refused_naming_the_field() -> None:
    emitter = Emitter(source="tests", max_event_size=2000)
    with pytest.raises(ValidationError) as caught:
        emitter.started("aws01", "change_ip", note="x" * 2000)
    assert caught.value.field == "details"
    assert "max_event_size" in str(caught.value)
    emitter.started("aws01", "change_ip")
    calls: tuple[tuple[Callable[[], object], str], ...] = (
        (lambda: emitter.progress("aws01", 5, message="x" * 2000), "progress"),
        (lambda: emitter.progress("aws01", 5, blob=["x"] * 1000), "progress"),
        (lambda: emitter.completed("aws01", "x" * 2000), "result"),
        (lambda: emitter.failed("aws01", {"message": "x" * 2000}), "error"),
        (lambda: emitter.cancelled("aws01", "x" * 2000), "reason"),
    )
    for call, field in calls:
        with pytest.raises(ValidationError) as caught:
            call()
        assert caught.value.field == field
    # a 10 MB progress message: refused quickly, and nothing is kept
    with pytest.raises(ValidationError):
        emitter.progress("aws01", 5, message="x" * 10_000_000)
    assert emitter.state.snapshot("aws01").seq == 1  # type: ignore[union-attr]
    event = emitter.progress("aws01", 5, message="fits")
    assert 0 < event.size <= 2000
    assert event.size >= len(json.dumps(event.to_dict())) * 0.8


def test_default_maximum_is_64_kib(emitter: Emitter) -> None:
    emitter.started("aws01", "change_ip")
    emitter.progress("aws01", 5, message="x" * 60_000)
    with pytest.raises(ValidationError):
        emitter.progress("aws01", 5, message="x" * 66_000)


def test_history_is_bounded_in_bytes_as_well_as_in_count() -> None:
    store = MemoryStateStore(history_size=1000, history_bytes=200_000)
    emitter = Emitter(source="tests", state=store)
    emitter.started("aws01", "change_ip")
    for _ in range(31):
        emitter.progress("aws01", 5, message="x" * 60_000)
    kept = store.history("aws01", 0)
    assert kept is None  # the oldest are gone: a resume from 0 must resync
    tail = store.history("aws01", 29)
    assert tail is not None
    assert len(tail) == 3
    assert sum(event.size for event in tail) <= 200_000
    # the default is 1 MiB per subject
    default = MemoryStateStore()
    emitter = Emitter(source="tests", state=default)
    emitter.started("aws01", "change_ip")
    for _ in range(40):
        emitter.progress("aws01", 5, message="x" * 60_000)
    recent = default.history("aws01", 41 - 16)
    assert recent is not None
    assert sum(event.size for event in recent) <= 1 << 20


# -- forgetting subjects -----------------------------------------------------------------------


def test_forget_drops_an_idle_subject_and_its_listeners_hear_of_it(emitter: Emitter) -> None:
    heard: list[tuple[str, str]] = []

    def listener(sender: Emitter, *, subject: str, reason: str) -> None:
        heard.append((subject, reason))

    subject_forgotten.connect(listener)
    try:
        emitter.register("aws01", region="eu-west-1")
        emitter.started("aws01", "change_ip")
        with pytest.raises(SubjectBusy):
            emitter.forget("aws01")
        assert emitter.state.snapshot("aws01") is not None
        emitter.completed("aws01")
        assert emitter.forget("aws01") is True
        assert emitter.forget("aws01") is False
        assert emitter.state.snapshot("aws01") is None
        assert heard == [("aws01", "forgotten")]
        # a new stream starts at seq 1
        assert emitter.started("aws01", "change_ip").seq == 1
    finally:
        subject_forgotten.disconnect(listener)


def test_idle_unregistered_subjects_are_forgotten_beyond_the_limit() -> None:
    emitter = Emitter(source="tests", keep_idle_subjects=100, idle_subject_seconds=None)
    emitter.register("registered")
    emitter.started("running", "job")
    for number in range(1000):
        emitter.started(f"job-{number}", "job")
        emitter.completed(f"job-{number}")
    emitter.forget_idle()
    subjects = set(emitter.state.subjects())
    assert {"registered", "running"} <= subjects
    assert len(subjects) == 102
    assert {f"job-{n}" for n in range(900, 1000)} <= subjects  # the most recent kept
    # the limit holds while subjects are being created, not only after a sweep
    for number in range(1000, 3000):
        emitter.started(f"job-{number}", "job")
        emitter.completed(f"job-{number}")
        assert emitter.state.subject_count() <= 102 + 100 // 10 + 2


def test_idle_time_forgets_unregistered_subjects() -> None:
    emitter = Emitter(source="tests", keep_idle_subjects=None, idle_subject_seconds=0.2)
    emitter.register("kept")
    emitter.started("old", "job")
    emitter.completed("old")
    emitter.started("busy", "job")
    time.sleep(0.3)
    emitter.started("new", "job")
    assert emitter.forget_idle() == ["old"]
    assert sorted(emitter.state.subjects()) == ["busy", "kept", "new"]


def test_forget_racing_with_emitters_keeps_every_stream_gap_free() -> None:
    emitter = Emitter(source="tests", exclusive=False)
    errors: list[BaseException] = []
    stop = threading.Event()

    def work() -> None:
        try:
            while not stop.is_set():
                with emitter.track("hot", "job") as task:
                    task.progress(10)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with capture_events() as events:
        threads = [threading.Thread(target=work) for _ in range(3)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with contextlib.suppress(SubjectBusy):
                emitter.forget("hot")
        stop.set()
        for thread in threads:
            thread.join(5)
    assert not errors
    # each stream (between forgets) numbers its events 1, 2, 3, ... with no repeats
    streams: list[list[int]] = [[]]
    for event in events:
        if event.seq == 1:
            streams.append([])
        streams[-1].append(event.seq)
    for stream in streams:
        assert stream == list(range(1, len(stream) + 1))


# -- permanent delivery errors ------------------------------------------------------------------


class Encoding(BackgroundAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.delivered: list[TaskEvent] = []
        self.attempts = 0

    def deliver(self, event: TaskEvent) -> None:
        self.attempts += 1
        json.dumps(event.to_dict())  # TypeError for a set
        self.delivered.append(event)


def test_an_event_the_sink_cannot_encode_is_dropped_not_retried_for_ever(
    emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    # Such an event cannot come from the emitter any more; another process may send one.
    bad = TaskEvent(
        "x-1", "task_started", "aws01", "t1", "change_ip", 1, _now(), "other", {"n": {1, 2}}
    )
    with Encoding().connect(emitter) as adapter:
        adapter.handle(bad)
        emitter.started("aws02", "change_ip")
        emitter.completed("aws02")
        assert adapter.flush(5)
        assert [e.subject for e in adapter.delivered] == ["aws02", "aws02"]
        assert adapter.attempts == 3
        assert adapter.stats["rejected"] == 1
        assert adapter.stats["dropped"] == 1
    assert any("permanent" in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records if "permanent" in r.getMessage())


def test_transient_errors_are_still_retried(emitter: Emitter) -> None:
    class Flaky(BackgroundAdapter):
        def __init__(self) -> None:
            super().__init__(retry_initial=0.01)
            self.calls = 0

        def deliver(self, event: TaskEvent) -> None:
            self.calls += 1
            if self.calls < 3:
                raise ConnectionError("down")

    with Flaky().connect(emitter) as adapter:
        emitter.started("aws01", "change_ip")
        assert adapter.flush(5)
        assert adapter.calls == 3
        assert adapter.stats["rejected"] == 0


def _now() -> datetime:
    return datetime.now(timezone.utc)


def test_failed_always_ends_the_task_even_with_a_small_maximum_size() -> None:
    emitter = Emitter(source="tests", max_event_size=1000)
    for error in (RuntimeError("x" * 4000), "y" * 4000, RuntimeError("\ud800" * 3000)):
        emitter.started("aws01", "change_ip")
        failed = emitter.failed("aws01", error)
        assert failed.size <= 1000
        assert failed.data["error"]["message"].endswith("...")
        assert emitter.state.snapshot("aws01").status == "idle"  # type: ignore[union-attr]


def test_subjects_that_cannot_be_forgotten_do_not_make_every_start_sweep() -> None:
    emitter = Emitter(source="tests", keep_idle_subjects=100, idle_subject_seconds=None)
    for number in range(300):
        emitter.register(f"registered-{number}")
    sweeps = 0
    original = emitter.forget_idle

    def counting() -> list[str]:
        nonlocal sweeps
        sweeps += 1
        return original()

    emitter.forget_idle = counting  # type: ignore[method-assign]
    for _ in range(200):
        with emitter.track("job", "export"):
            pass
    assert sweeps <= 2  # once to learn that 300 must stay, not once per task


def test_an_exception_type_with_an_absurd_name_still_fails_the_task(emitter: Emitter) -> None:
    absurd = type("E" * 100_000, (Exception,), {})
    with pytest.raises(absurd), emitter.track("aws01", "change_ip"):
        raise absurd("boom")
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.status == "idle"
    assert snapshot.last is not None
    assert snapshot.last.error is not None
    assert len(snapshot.last.error["type"]) <= 200


def test_log_lines_escape_c1_controls_and_line_separators(emitter: Emitter) -> None:
    from taskevents.adapters.logging import describe

    emitter.started("aws01", "change_ip")
    event = emitter.progress("aws01", 5, message="one\x85two\u2028three\x9bfour")
    line = describe(event)
    assert len(line.splitlines()) == 1
    assert "\\x85" in line
    assert "\\x9b" in line
