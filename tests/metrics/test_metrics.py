"""taskevents.metrics from Python: counting events, reading adapters and subjects, the
Prometheus text, and what it costs when it is off."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from taskevents import (
    EVENT_TYPES,
    CallableAdapter,
    Emitter,
    NoRunningTask,
    SubjectBusy,
    TaskEvent,
    ValidationError,
    define_event_type,
)
from taskevents import metrics as taskevents_metrics
from taskevents.adapters.outbox import DurableAdapter, MemoryOutbox, Outcome
from taskevents.metrics import Metrics, enable, metrics_for, snapshot
from tests.metrics.support import PROMISED, CountingAdapter, FailingAdapter, parse


@pytest.fixture
def emitter() -> Iterator[Emitter]:
    made = Emitter(source="tests")
    yield made
    metrics = metrics_for(made)
    if metrics is not None:
        metrics.close()


def test_nothing_is_counted_until_metrics_are_enabled(emitter: Emitter) -> None:
    emitter.started("aws01", "change_ip")
    assert emitter._event_counters is None
    assert metrics_for(emitter) is None
    metrics = enable(emitter)
    assert enable(emitter) is metrics  # one per emitter
    assert metrics.events()["task_started"] == 0  # before enable(): not counted
    emitter.progress("aws01", 10)
    assert metrics.events()["task_progress"] == 1


def test_events_are_counted_exactly_by_type(emitter: Emitter) -> None:
    metrics = enable(emitter)
    for n in range(3):
        with emitter.track(f"s{n}", "job") as task:
            task.progress(50)
            task.progress(90)
    emitter.started("x", "job")
    emitter.failed("x", RuntimeError("no"))
    emitter.started("x", "job")
    emitter.cancelled("x")
    counts = metrics.events()
    assert {type_: counts[type_] for type_ in EVENT_TYPES} == {
        "task_started": 5,
        "task_progress": 6,
        "task_completed": 3,
        "task_failed": 1,
        "task_cancelled": 1,
    }


def test_refused_events_are_not_counted(emitter: Emitter) -> None:
    metrics = enable(emitter)
    emitter.started("aws01", "a")
    with pytest.raises(SubjectBusy):
        emitter.started("aws01", "b")
    with pytest.raises(NoRunningTask):
        emitter.progress("aws02", 1)
    with pytest.raises(ValidationError):
        emitter.progress("aws01", 101)
    assert metrics.events()["task_started"] == 1
    assert metrics.events()["task_progress"] == 0


def test_concurrent_emits_lose_no_count(emitter: Emitter) -> None:
    metrics = enable(emitter)
    threads, per_thread = 8, 5_000

    def work(index: int) -> None:
        subject = f"subject-{index}"
        emitter.started(subject, "job")
        for _ in range(per_thread):
            emitter.progress(subject, 1)
        emitter.completed(subject)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    counts = metrics.events()
    assert counts["task_progress"] == threads * per_thread
    assert counts["task_started"] == counts["task_completed"] == threads


def test_declared_types_are_counted_too(emitter: Emitter) -> None:
    metrics = enable(emitter)
    define_event_type("task_metricslog")
    emitter.started("aws01", "job")
    emitter.emit("aws01", "task_metricslog", line="one")
    emitter.emit("aws01", "task_metricslog", line="two")
    assert metrics.events()["task_metricslog"] == 2
    assert snapshot(emitter)["events"]["task_metricslog"] == 2


def test_other_emitters_are_not_counted(emitter: Emitter) -> None:
    metrics = enable(emitter)
    other = Emitter(source="other")
    other.started("aws01", "job")
    assert metrics.events()["task_started"] == 0


def test_close_stops_counting_and_a_new_enable_starts_at_zero(emitter: Emitter) -> None:
    metrics = enable(emitter)
    emitter.started("aws01", "job")
    metrics.close()
    metrics.close()  # idempotent
    assert emitter._event_counters is None
    assert metrics_for(emitter) is None
    emitter.progress("aws01", 5)
    assert metrics.events()["task_progress"] == 0
    again = enable(emitter)
    assert again is not metrics
    emitter.progress("aws01", 6)
    assert again.events()["task_progress"] == 1


def test_an_emitter_that_is_gone_leaves_nothing_behind() -> None:
    emitter = Emitter(source="tests")
    metrics = enable(emitter)
    emitter.started("aws01", "job")
    before = len(taskevents_metrics._enabled)
    del emitter
    gc.collect()
    assert len(taskevents_metrics._enabled) == before - 1
    assert metrics.emitter is None
    assert metrics.events()["task_started"] == 1  # what was counted can still be read
    metrics.close()


def test_subjects_are_counted_by_status(emitter: Emitter) -> None:
    enable(emitter)
    emitter.register("aws01")
    emitter.register("aws02")
    emitter.started("aws01", "job")
    assert snapshot(emitter)["subjects"] == {"idle": 1, "busy": 1}
    emitter.completed("aws01")
    emitter.started("aws03", "job")  # a new subject
    assert snapshot(emitter)["subjects"] == {"idle": 2, "busy": 1}


def test_adapter_numbers_come_from_their_stats(emitter: Emitter) -> None:
    metrics = enable(emitter)
    failing = FailingAdapter().connect(emitter)
    counting = CountingAdapter().connect(emitter)
    calls: list[TaskEvent] = []
    plain = CallableAdapter(calls.append).connect(emitter)
    try:
        assert metrics.watch(failing, "failing") == "failing"
        assert metrics.watch(counting) == "CountingAdapter"
        assert metrics.watch(plain) == "CallableAdapter"
        with emitter.track("aws01", "job") as task:
            for percent in range(10):
                task.progress(percent)
        assert failing.flush(10)
        assert counting.flush(10)
        numbers = snapshot(emitter)["adapters"]
        assert numbers["failing"] == {"deliveries": 0, "errors": 12, "queue_depth": 0}
        assert failing.tried == 12
        assert numbers["CountingAdapter"] == {"deliveries": 12, "errors": 0, "queue_depth": 0}
        # a synchronous adapter keeps no deliveries nor queue: errors only
        assert numbers["CallableAdapter"] == {"deliveries": None, "errors": 0, "queue_depth": None}
    finally:
        failing.close()
        counting.close()
        plain.close()


def test_labels_are_made_unique_and_watching_twice_keeps_one(emitter: Emitter) -> None:
    metrics = enable(emitter)
    first, second, third = CountingAdapter(), CountingAdapter(), CountingAdapter()
    try:
        assert metrics.watch(first, "sink") == "sink"
        assert metrics.watch(second, "sink") == "sink_2"
        assert metrics.watch(third, "sink") == "sink_3"
        assert metrics.watch(first, "other") == "sink"
        assert set(snapshot(emitter)["adapters"]) == {"sink", "sink_2", "sink_3"}
    finally:
        for adapter in (first, second, third):
            adapter.close()


def test_an_adapter_that_is_gone_is_no_longer_reported(emitter: Emitter) -> None:
    metrics = enable(emitter)
    adapter = CountingAdapter()
    metrics.watch(adapter, "sink")
    adapter.close()
    del adapter
    gc.collect()
    assert snapshot(emitter)["adapters"] == {}


@pytest.mark.parametrize("name", ["", "x" * 300, "a\nb", 7])
def test_a_bad_label_is_refused(emitter: Emitter, name: object) -> None:
    metrics = enable(emitter)
    with pytest.raises(ValidationError, match="name"):
        metrics.watch(CountingAdapter(), name)  # type: ignore[arg-type]


def test_an_adapter_whose_stats_fail_is_left_out_not_the_scrape(
    emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(CountingAdapter):
        @property
        def stats(self) -> dict[str, int]:
            raise RuntimeError("stats unavailable")

    metrics = enable(emitter)
    broken, fine = Broken(), CountingAdapter()
    try:
        metrics.watch(broken, "broken")
        metrics.watch(fine, "fine")
        numbers = snapshot(emitter)
        assert set(numbers["adapters"]) == {"fine"}
        assert "stats unavailable" in caplog.text
        assert "taskevents_adapter_errors_total" in metrics.render().decode()
    finally:
        broken.close()
        fine.close()


def test_durable_adapters_report_their_outbox(emitter: Emitter) -> None:
    class Audit(DurableAdapter):
        def __init__(self) -> None:
            super().__init__(
                targets=["audit"], outbox=MemoryOutbox(), retry_schedule=(0, 0.02), jitter=0
            )
            self.up = threading.Event()

        def rows(self, event: TaskEvent) -> list[tuple[str, bytes]]:
            return [("audit", event.id.encode())]

        def send(self, delivery: object) -> Outcome:
            if not self.up.is_set():
                return Outcome("retry", error="audit service down")
            return Outcome.delivered()

    metrics = enable(emitter)
    audit = Audit().connect(emitter)
    try:
        metrics.watch(audit, "audit")
        with emitter.track("aws01", "job"):
            pass
        waiting = snapshot(emitter)["adapters"]["audit"]
        assert waiting["queue_depth"] == 2
        assert waiting["deliveries"] == 0
        audit.up.set()
        assert audit.flush(10)
        done = snapshot(emitter)["adapters"]["audit"]
        assert done["queue_depth"] == 0
        assert done["deliveries"] == 2
    finally:
        audit.close()


def test_snapshot_without_an_emitter_adds_up_every_enabled_one(emitter: Emitter) -> None:
    before = snapshot()
    other = Emitter(source="other")
    enable(emitter)
    enable(other)
    try:
        emitter.started("aws01", "job")
        other.started("aws01", "job")
        other.completed("aws01")
        total = snapshot()
        assert total["events"]["task_started"] - before["events"]["task_started"] == 2
        assert total["events"]["task_completed"] - before["events"]["task_completed"] == 1
    finally:
        metrics = metrics_for(other)
        assert metrics is not None
        metrics.close()


def test_snapshot_of_an_emitter_without_metrics_is_refused() -> None:
    with pytest.raises(ValidationError, match="emitter"):
        snapshot(Emitter())
    with pytest.raises(ValidationError, match="emitter"):
        enable("not an emitter")  # type: ignore[arg-type]


def test_render_is_the_prometheus_text_of_the_snapshot(emitter: Emitter) -> None:
    metrics = enable(emitter)
    failing = FailingAdapter().connect(emitter)
    try:
        metrics.watch(failing, "failing")
        emitter.register("aws02")
        emitter.started("aws01", "job")
        emitter.progress("aws01", 50)
        assert failing.flush(10)
        scraped = parse(metrics.render().decode("utf-8"))
        numbers = snapshot(emitter)
    finally:
        failing.close()
    for name in PROMISED:
        assert name in scraped.types
    assert scraped.types["taskevents_events"] == "counter"
    assert scraped.types["taskevents_adapter_queue_depth"] == "gauge"
    for type_, count in numbers["events"].items():
        assert scraped.value("taskevents_events_total", type=type_) == count
    assert scraped.value("taskevents_adapter_errors_total", adapter="failing") == 2
    assert scraped.value("taskevents_adapter_deliveries_total", adapter="failing") == 0
    assert scraped.value("taskevents_adapter_queue_depth", adapter="failing") == 0
    assert scraped.value("taskevents_subjects", status="busy") == 1
    assert scraped.value("taskevents_subjects", status="idle") == 1
    assert scraped.value("taskevents_socketio_clients") == 0
    # no label carries a subject
    assert all("aws0" not in str(key) for key in scraped.samples)


def test_it_is_a_prometheus_client_collector(emitter: Emitter) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    metrics = enable(emitter)
    registry.register(metrics)
    emitter.started("aws01", "job")
    text = generate_latest(registry).decode()
    assert parse(text).value("taskevents_events_total", type="task_started") == 1
    assert isinstance(metrics, Metrics)


def test_a_store_that_does_not_answer_leaves_subjects_out(
    emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    from taskevents import StoreUnavailable, SubjectState

    metrics = enable(emitter)
    original = emitter.state.snapshot_all

    def down() -> dict[str, SubjectState]:
        raise StoreUnavailable("redis down")

    emitter.state.snapshot_all = down  # type: ignore[method-assign]
    try:
        assert snapshot(emitter)["subjects"] is None
        scraped = parse(metrics.render().decode())
        assert scraped.get("taskevents_subjects", status="idle") is None
        assert scraped.value("taskevents_events_total", type="task_started") == 0
    finally:
        emitter.state.snapshot_all = original  # type: ignore[method-assign]


def test_import_taskevents_stays_light_and_snapshot_needs_no_prometheus_client() -> None:
    code = """
import sys
sys.modules["prometheus_client"] = None  # as if it were not installed
import taskevents
assert "taskevents.metrics" not in sys.modules
from taskevents import Emitter, MissingDependency, metrics
emitter = Emitter()
metrics.enable(emitter)
emitter.started("aws01", "job")
assert metrics.snapshot(emitter)["events"]["task_started"] == 1
try:
    metrics.enable(emitter).render()
except MissingDependency as exc:
    print(exc)
else:
    raise SystemExit("render() worked without prometheus_client")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "taskevents[metrics]" in result.stdout
