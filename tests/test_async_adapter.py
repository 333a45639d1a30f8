import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

import pytest

from taskevents import AsyncAdapter, Emitter, TaskEvent, UsageError


class Recording(AsyncAdapter):
    """Records deliveries, with the thread and loop each ran on; waits for ``gate``."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.gate: asyncio.Event | None = None
        self.delivered: list[TaskEvent] = []
        self.where: set[tuple[int, asyncio.AbstractEventLoop]] = set()

    async def deliver(self, event: TaskEvent) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.where.add((threading.get_ident(), asyncio.get_running_loop()))
        self.delivered.append(event)


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), 60)

    asyncio.run(bounded())


def lifecycle(events: list[TaskEvent]) -> list[tuple[str, int]]:
    return [(e.type, e.seq) for e in events if e.type != "task_progress"]


def test_events_are_delivered_in_order_on_the_loop_it_was_connected_in(
    emitter: Emitter,
) -> None:
    async def main() -> None:
        async with Recording().connect(emitter) as adapter:
            assert adapter.loop is asyncio.get_running_loop()
            with emitter.track("aws01", "change_ip") as task:
                task.progress(50)
            assert await adapter.flush(timeout=10)
            assert [(e.type, e.seq) for e in adapter.delivered] == [
                ("task_started", 1),
                ("task_progress", 2),
                ("task_completed", 3),
            ]
            assert adapter.where == {(threading.get_ident(), asyncio.get_running_loop())}
            stats = adapter.stats
        assert stats["received"] == stats["delivered"] == 3
        assert stats["queued"] == stats["dropped"] == stats["errors"] == 0

    run(main)


def test_connect_outside_an_event_loop_is_a_usage_error(emitter: Emitter) -> None:
    adapter = Recording()
    with pytest.raises(UsageError, match="needs an event loop"):
        adapter.connect(emitter)
    with pytest.raises(UsageError, match="not bound to an event loop"):
        adapter.handle(emitter.started("aws01", "change_ip"))
    adapter.close()  # never bound: nothing to wait for
    assert adapter.stats["dropped"] == 0


def test_a_bound_adapter_connects_from_any_thread_and_runs_when_the_loop_does(
    emitter: Emitter,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        adapter = Recording().bind(loop).connect(emitter)
        with emitter.track("aws01", "change_ip"):
            pass
        assert adapter.delivered == []  # the loop has not run yet

        async def main() -> None:
            assert await adapter.flush(timeout=10)
            await adapter.aclose()

        loop.run_until_complete(main())
    finally:
        loop.close()
    assert lifecycle(adapter.delivered) == [("task_started", 1), ("task_completed", 2)]
    other = asyncio.new_event_loop()
    try:
        with pytest.raises(UsageError, match="another event loop"):
            adapter.bind(other)
    finally:
        other.close()


def test_a_slow_adapter_delays_neither_the_emitting_coroutine_nor_the_loop(
    emitter: Emitter,
) -> None:
    class Slow(AsyncAdapter):
        def __init__(self) -> None:
            super().__init__()
            self.delivered: list[int] = []

        async def deliver(self, event: TaskEvent) -> None:
            await asyncio.sleep(1.0)
            self.delivered.append(event.seq)

    lags: list[float] = []
    emits: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    async def main() -> None:
        adapter = Slow().connect(emitter)
        stop = asyncio.Event()
        ticking = asyncio.create_task(ticker(stop))
        began = time.monotonic()
        while time.monotonic() - began < 1.2:  # emit while deliveries sleep
            start = time.monotonic()
            emitter.started("aws01", "change_ip")
            for percent in range(20):
                emitter.progress("aws01", percent)
            emitter.completed("aws01")
            emits.append(time.monotonic() - start)
            await asyncio.sleep(0.05)
        stop.set()
        await ticking
        await adapter.aclose(timeout=0.1)
        stats = adapter.stats
        assert adapter.delivered == [1]  # one delivery in 1.2 s: the sink is slow
        assert stats["delivered"] + stats["dropped"] + stats["coalesced"] == stats["received"]

    run(main)
    assert len(lags) > 50
    # Blocked by a delivery, the loop would stall for its whole second; bounds well
    # under that, and over a busy machine's stray pauses.
    assert max(lags) < 0.5, max(lags)
    assert max(emits) < 0.5, max(emits)


def test_events_from_8_threads_and_8_coroutines_arrive_gap_free_per_subject() -> None:
    emitter = Emitter(exclusive=False)
    tasks_each = 20

    def produce(subject: str) -> None:
        for _ in range(tasks_each):
            with emitter.track(subject, "work") as task:
                task.progress(50)
                emitter.progress("shared", 1, by=subject)  # a subject they all share

    async def main() -> None:
        adapter = Recording(coalesce_progress=False).connect(emitter)

        async def coroutine(subject: str) -> None:
            for _ in range(tasks_each):
                async with emitter.track(subject, "work") as task:
                    task.progress(50)
                    emitter.progress("shared", 1, by=subject)
                    await asyncio.sleep(0)

        emitter.started("shared", "background")
        threads = [threading.Thread(target=produce, args=(f"thread{n}",)) for n in range(8)]
        for thread in threads:
            thread.start()
        await asyncio.gather(*(coroutine(f"coroutine{n}") for n in range(8)))
        for thread in threads:
            await asyncio.to_thread(thread.join)
        emitter.completed("shared")
        assert await adapter.flush(timeout=30)
        await adapter.aclose()
        by_subject: dict[str, list[int]] = {}
        for event in adapter.delivered:
            by_subject.setdefault(event.subject, []).append(event.seq)
        assert len(by_subject) == 17
        for subject, seqs in by_subject.items():
            assert seqs == list(range(1, len(seqs) + 1)), subject
        assert len(by_subject["shared"]) == 16 * tasks_each + 2
        assert len(by_subject["thread3"]) == len(by_subject["coroutine5"]) == 3 * tasks_each
        assert adapter.stats["dropped"] == 0

    run(main)


def test_a_flood_of_progress_is_coalesced_and_lifecycle_is_kept(emitter: Emitter) -> None:
    async def main() -> None:
        adapter = Recording().connect(emitter)
        adapter.gate = asyncio.Event()
        sent: list[TaskEvent] = []
        for task in range(10):
            sent.append(emitter.started("aws01", "flood"))
            sent.extend(emitter.progress("aws01", n % 101, step=n) for n in range(300))
            sent.append(emitter.completed("aws01", task))
        adapter.gate.set()
        assert await adapter.flush(timeout=30)
        stats = adapter.stats
        await adapter.aclose()
        delivered = adapter.delivered
        assert lifecycle(delivered) == lifecycle(sent)
        assert [e.seq for e in delivered] == sorted(e.seq for e in delivered)
        progress = [e for e in delivered if e.type == "task_progress"]
        assert len(progress) <= 10
        assert stats["coalesced"] == 10 * 300 - len(progress)
        for index, event in enumerate(delivered):
            if event.type == "task_completed":  # the latest progress went first
                assert delivered[index - 1].data["step"] == 299

    run(main)


def test_progress_interval_holds_progress_back_until_due(emitter: Emitter) -> None:
    async def main() -> None:
        async with Recording(progress_interval=0.2).connect(emitter) as adapter:
            emitter.started("aws01", "paced")
            emitter.progress("aws01", 1)
            await asyncio.sleep(0.05)
            emitter.progress("aws01", 2)  # held back: the interval is not over
            await asyncio.sleep(0.05)
            assert [e.data.get("percent") for e in adapter.delivered] == [None, 1]
            await asyncio.sleep(0.3)  # due now: delivered without another event
            assert [e.data.get("percent") for e in adapter.delivered] == [None, 1, 2]

    run(main)


class Flaky(AsyncAdapter):
    def __init__(self, failures: dict[int, list[Exception]], **options: object) -> None:
        super().__init__(retry_initial=0.01, retry_max=0.02, **options)  # type: ignore[arg-type]
        self.failures = failures
        self.attempts = 0
        self.delivered: list[int] = []

    async def deliver(self, event: TaskEvent) -> None:
        self.attempts += 1
        errors = self.failures.get(event.seq)
        if errors:
            raise errors.pop(0)
        self.delivered.append(event.seq)


def test_transient_errors_are_retried_and_permanent_ones_give_the_event_up(
    emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    failures: dict[int, list[Exception]] = {
        1: [ConnectionError("down"), ConnectionError("still down")],
        2: [ValueError("cannot encode")],
    }

    async def main() -> None:
        adapter = Flaky(failures).connect(emitter)
        with emitter.track("aws01", "change_ip") as task:
            task.progress(50)
        assert await adapter.flush(timeout=10)
        await adapter.aclose()
        assert adapter.delivered == [1, 3]
        stats = adapter.stats
        assert (stats["delivered"], stats["retries"], stats["dropped"], stats["rejected"]) == (
            2,
            2,
            1,
            1,
        )
        assert stats["errors"] == 3

    with caplog.at_level(logging.ERROR, logger="taskevents"):
        run(main)


def test_max_attempts_gives_an_event_up(emitter: Emitter, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        failures: dict[int, list[Exception]] = {1: [ConnectionError("down")] * 5}
        async with Flaky(failures, max_attempts=3).connect(emitter) as adapter:
            emitter.started("aws01", "change_ip")
            emitter.completed("aws01")
            assert await adapter.flush(timeout=10)
        assert adapter.delivered == [2]
        assert adapter.attempts == 4
        assert adapter.stats["dropped"] == 1

    with caplog.at_level(logging.ERROR, logger="taskevents"):
        run(main)
    assert any("gave up on event" in r.getMessage() for r in caplog.records)


def test_aclose_delivers_what_is_queued_and_cuts_a_hung_sink_short(
    emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        adapter = Recording().connect(emitter)
        adapter.gate = asyncio.Event()
        with emitter.track("aws01", "change_ip"):
            pass
        asyncio.get_running_loop().call_later(0.05, adapter.gate.set)
        await adapter.aclose()  # waits for the gate, then delivers both
        assert len(adapter.delivered) == 2

        hung = Recording().connect(emitter)
        hung.gate = asyncio.Event()  # never set
        with emitter.track("aws02", "change_ip"):
            pass
        await hung.aclose(timeout=0.1)
        assert hung.delivered == []
        assert hung.stats["dropped"] == 2
        assert hung.stats["queued"] == 0
        await hung.aclose()  # idempotent

    with caplog.at_level(logging.WARNING, logger="taskevents"):
        run(main)
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "closed with 2 undelivered events after 0.1s (one of them stuck in deliver())" in m
        for m in messages
    )


def test_close_works_from_another_thread_and_refuses_the_loops_own(emitter: Emitter) -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    try:
        adapter = Recording().bind(loop).connect(emitter)
        for _ in range(5):
            with emitter.track("aws01", "change_ip"):
                pass

        async def close_on_the_loop() -> None:
            with pytest.raises(UsageError, match="await aclose"):
                adapter.close()
            with pytest.raises(UsageError, match="await aclose"), adapter:
                pass

        asyncio.run_coroutine_threadsafe(close_on_the_loop(), loop).result(10)
        adapter.close()
        assert len(adapter.delivered) == 10
        assert adapter.stats["dropped"] == 0
        emitter.started("aws01", "after")  # disconnected: not received
        assert adapter.stats["received"] == 10
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()


def test_flush_and_aclose_must_be_awaited_on_the_adapters_loop(emitter: Emitter) -> None:
    loop = asyncio.new_event_loop()
    try:
        adapter = Recording().bind(loop).connect(emitter)

        async def elsewhere() -> None:
            with pytest.raises(UsageError, match="must be awaited on the event loop"):
                await adapter.flush()

        asyncio.run(elsewhere())
        loop.run_until_complete(adapter.aclose())
    finally:
        loop.close()


def test_an_unclosed_adapter_stops_with_its_loop(
    emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = Recording()

    async def main() -> None:
        adapter.connect(emitter)
        adapter.gate = asyncio.Event()  # never set
        emitter.started("aws01", "change_ip")
        await asyncio.sleep(0.01)

    with caplog.at_level(logging.WARNING, logger="taskevents"):
        asyncio.run(main())  # cancels the worker: it disconnects and counts the loss
    assert adapter.stats["dropped"] == 1
    emitter.completed("aws01")  # no longer connected (the fixture checks it too)
    assert adapter.stats["received"] == 1
    assert any("when its worker was cancelled" in r.getMessage() for r in caplog.records)
    adapter.close()  # the loop is closed: nothing to wait for


def test_filters_and_a_raising_deliver_stay_inside_the_adapter(
    emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        failing = Flaky({2: [RuntimeError("bug")]}, max_attempts=1).connect(emitter)
        only = Recording(types=["task_completed"], subjects=["aws02"]).connect(emitter)
        for subject in ("aws01", "aws02"):
            with emitter.track(subject, "change_ip"):
                pass
        assert await failing.flush(timeout=10)
        assert await only.flush(timeout=10)
        await failing.aclose()
        await only.aclose()
        assert failing.delivered == [1, 1, 2]  # aws01's completion (seq 2) failed
        assert failing.error_count == 1
        assert [(e.subject, e.type) for e in only.delivered] == [("aws02", "task_completed")]

    with caplog.at_level(logging.ERROR, logger="taskevents"):
        run(main)


def test_call_soon_runs_in_stream_order_and_awaits_coroutines(emitter: Emitter) -> None:
    async def main() -> None:
        order: list[str] = []

        class Ordered(AsyncAdapter):
            async def deliver(self, event: TaskEvent) -> None:
                order.append(event.type)

        async def snapshot() -> None:
            await asyncio.sleep(0)
            order.append("snapshot")

        async with Ordered().connect(emitter) as adapter:
            emitter.started("aws01", "change_ip")
            adapter.call_soon("aws01", snapshot)
            adapter.call_soon("aws01", lambda: order.append("sync"))
            emitter.completed("aws01")
        assert order == ["task_started", "snapshot", "sync", "task_completed"]

    run(main)
