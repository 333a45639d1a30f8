import threading
import time

import pytest

from taskevents import BackgroundAdapter, Emitter, TaskEvent, ValidationError


class Gated(BackgroundAdapter):
    """Records deliveries; holds the first delivery until the gate opens."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.delivered: list[TaskEvent] = []

    def deliver(self, event: TaskEvent) -> None:
        self.gate.wait()
        self.delivered.append(event)


def lifecycle(events: list[TaskEvent]) -> list[tuple[str, int]]:
    return [(e.type, e.seq) for e in events if e.type != "task_progress"]


def test_a_flood_of_progress_is_coalesced_and_lifecycle_is_kept(emitter: Emitter) -> None:
    sent: list[TaskEvent] = []
    with Gated().connect() as adapter:
        for task in range(20):
            sent.append(emitter.started("aws01", "flood"))
            sent.extend(emitter.progress("aws01", n % 101, step=n) for n in range(500))
            sent.append(emitter.completed("aws01", task))
        adapter.gate.set()
        assert adapter.flush(timeout=30)
        stats = adapter.stats
    delivered = adapter.delivered
    assert lifecycle(delivered) == lifecycle(sent)
    assert [e.seq for e in delivered] == sorted(e.seq for e in delivered)
    progress = [e for e in delivered if e.type == "task_progress"]
    assert len(progress) < 20 * 500 / 10
    assert stats["coalesced"] == 20 * 500 - len(progress)
    assert stats["delivered"] == len(delivered)
    # before each completion, the task's latest progress (step 499) arrived
    for index, event in enumerate(delivered):
        if event.type == "task_completed":
            assert delivered[index - 1].type == "task_progress"
            assert delivered[index - 1].data["step"] == 499


def test_progress_interval_limits_the_rate_and_completion_flushes_it(emitter: Emitter) -> None:
    interval = 0.1
    with Gated(progress_interval=interval).connect() as adapter:
        adapter.gate.set()
        emitter.started("aws01", "paced")
        begin = time.monotonic()
        n = 0
        while time.monotonic() - begin < 0.5:
            emitter.progress("aws01", n % 101, step=n)
            n += 1
            time.sleep(0.001)
        last_step = n - 1
        emitter.completed("aws01")
        assert adapter.flush(timeout=10)
        elapsed = time.monotonic() - begin
    progress = [e for e in adapter.delivered if e.type == "task_progress"]
    assert 2 <= len(progress) <= elapsed / interval + 2
    assert adapter.delivered[-2].data["step"] == last_step
    assert adapter.delivered[-1].type == "task_completed"
    times = [e.time for e in progress]
    assert times == sorted(times)


class Flaky(BackgroundAdapter):
    def __init__(self, failures: int, **options: object) -> None:
        super().__init__(retry_initial=0.01, retry_max=0.04, **options)  # type: ignore[arg-type]
        self.failures = failures
        self.attempts = 0
        self.delivered: list[TaskEvent] = []

    def deliver(self, event: TaskEvent) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError(f"attempt {self.attempts} failed")
        self.delivered.append(event)


def test_failed_deliveries_are_retried_until_they_succeed(emitter: Emitter) -> None:
    with Flaky(failures=5).connect() as adapter:
        emitter.started("aws01", "change_ip")
        assert adapter.flush(timeout=10)
    assert [e.type for e in adapter.delivered] == ["task_started"]
    assert adapter.attempts == 6
    assert adapter.stats["retries"] == 5
    assert adapter.error_count == 5


def test_max_attempts_gives_an_event_up(emitter: Emitter) -> None:
    with Flaky(failures=3, max_attempts=2).connect() as adapter:
        emitter.started("aws01", "change_ip")
        emitter.completed("aws01")
        assert adapter.flush(timeout=10)
    assert [e.type for e in adapter.delivered] == ["task_completed"]
    assert adapter.stats["dropped"] == 1


def test_close_delivers_what_is_queued(emitter: Emitter) -> None:
    adapter = Gated(progress_interval=60).connect()
    adapter.gate.set()
    emitter.started("aws01", "change_ip")
    emitter.progress("aws01", 10)
    emitter.progress("aws01", 20)  # held back by the interval...
    adapter.close(timeout=10)  # ...and delivered by close all the same
    assert [e.type for e in adapter.delivered][-1] == "task_progress"
    assert adapter.delivered[-1].data == {"percent": 20}
    assert adapter.stats["delivered"] == len(adapter.delivered)


def test_close_gives_up_on_a_hung_sink_and_counts_what_was_lost(emitter: Emitter) -> None:
    adapter = Gated().connect()
    emitter.started("aws01", "change_ip")
    emitter.completed("aws01")
    adapter.close(timeout=0.2)  # the worker is stuck delivering task_started
    # task_completed, still queued, and task_started, stuck in deliver() at close
    assert adapter.stats["dropped"] == 2
    adapter.gate.set()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_queue": 0}, "max_queue"),
        ({"progress_interval": -1}, "progress_interval"),
        ({"retry_initial": "1"}, "retry_initial"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_bad_options_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Gated(**kwargs)
    assert caught.value.field == field


def test_progress_of_two_tasks_on_one_subject_keeps_each_tasks_latest() -> None:
    emitter = Emitter(exclusive=False)
    with Gated().connect() as adapter:
        a = emitter.started("aws01", "change_ip")
        b = emitter.started("aws01", "reboot")
        for n in range(100):
            emitter.progress("aws01", n, task_id=a.task_id)
        emitter.progress("aws01", 50, task_id=b.task_id)
        emitter.completed("aws01", task_id=a.task_id)
        adapter.gate.set()
        assert adapter.flush(timeout=10)
    delivered = [(e.type, e.task_id, e.data.get("percent")) for e in adapter.delivered]
    last_of_a = next(d for d in delivered if d[1] == a.task_id and d[0] == "task_progress")
    assert last_of_a == ("task_progress", a.task_id, 99)
    assert delivered.index(last_of_a) < delivered.index(("task_completed", a.task_id, None))


def test_progress_waiting_behind_a_slow_delivery_is_still_coalesced(emitter: Emitter) -> None:
    with Gated().connect() as adapter:
        emitter.started("aws01", "change_ip")  # the worker blocks delivering this one
        for percent in range(1, 101):
            emitter.progress("aws01", percent)
        emitter.completed("aws01")
        adapter.gate.set()
        assert adapter.flush(timeout=10)
    progress = [e.data["percent"] for e in adapter.delivered if e.type == "task_progress"]
    assert progress[-1] == 100
    assert len(progress) <= 2  # at most one taken with the first batch, then the latest


def test_the_worker_starts_on_connect_not_on_construction(emitter: Emitter) -> None:
    before = threading.active_count()
    adapter = Gated()
    assert threading.active_count() == before
    adapter.gate.set()
    with adapter.connect(emitter):
        assert threading.active_count() == before + 1
        emitter.started("aws01", "change_ip")
        assert adapter.flush(5)
    assert [e.type for e in adapter.delivered] == ["task_started"]
    Gated().close()  # closing one that never started is fine


def test_progress_coalescing_can_be_switched_off(emitter: Emitter) -> None:
    adapter = Gated(coalesce_progress=False)
    with adapter.connect(emitter):
        emitter.started("aws01", "flood")
        for percent in range(100):
            emitter.progress("aws01", percent)
        emitter.completed("aws01")
        adapter.gate.set()
        assert adapter.flush(5)
    percents = [e.data["percent"] for e in adapter.delivered if e.type == "task_progress"]
    assert percents == list(range(100))
    assert adapter.stats["coalesced"] == 0
    with pytest.raises(ValidationError) as caught:
        Gated(coalesce_progress=False, progress_interval=0.1)
    assert caught.value.field == "progress_interval"
