import asyncio
import logging
from collections.abc import Callable

import pytest

from taskevents import Emitter, TaskEvent, signals


def test_each_type_is_sent_on_its_own_signal_with_the_emitter_as_sender(
    emitter: Emitter,
) -> None:
    seen: list[tuple[str, object, str]] = []

    def recorder(name: str) -> Callable[..., None]:
        def receiver(sender: object, *, event: TaskEvent) -> None:
            seen.append((name, sender, event.type))

        return receiver

    receivers = {name: recorder(name) for name in signals.SIGNALS}
    for name, signal in signals.SIGNALS.items():
        signal.connect(receivers[name], sender=emitter)
    try:
        emitter.started("aws01", "change_ip")
        emitter.progress("aws01", 1)
        emitter.completed("aws01")
        emitter.started("aws01", "change_ip")
        emitter.failed("aws01", "x")
        emitter.started("aws01", "change_ip")
        emitter.cancelled("aws01")
    finally:
        for name, signal in signals.SIGNALS.items():
            signal.disconnect(receivers[name])
    assert seen == [
        (t, emitter, t)
        for t in (
            "task_started",
            "task_progress",
            "task_completed",
            "task_started",
            "task_failed",
            "task_started",
            "task_cancelled",
        )
    ]
    assert signals.task_started.name == "task-started"


def test_a_raising_receiver_does_not_stop_the_others_nor_the_task(
    emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[int] = []

    def broken(sender: object, *, event: TaskEvent) -> None:
        raise RuntimeError("receiver bug")

    def healthy(sender: object, *, event: TaskEvent) -> None:
        got.append(event.seq)

    name = f"{__name__}.{broken.__qualname__}"
    before = signals.receiver_errors().get(name, 0)
    with (
        caplog.at_level(logging.ERROR, logger="taskevents"),
        signals.task_progress.connected_to(broken),
        signals.task_progress.connected_to(healthy),
    ):
        emitter.started("aws01", "change_ip")
        for n in range(50):
            emitter.progress("aws01", n)
    assert got == list(range(2, 52))
    assert signals.receiver_errors()[name] - before == 50
    logged = [r for r in caplog.records if "receiver bug" in r.getMessage()]
    # rate-limited: the first error is logged, the other 49 within the interval are not
    assert len(logged) == 1
    assert "(1 errors in all)" in logged[0].getMessage()


def test_coroutine_receivers_are_refused() -> None:
    async def receiver(sender: object, *, event: TaskEvent) -> None:
        pass

    with pytest.raises(TypeError, match="coroutine function"):
        signals.task_started.connect(receiver)


def test_a_coroutine_receiver_is_refused_with_advice_unless_connected_async_only() -> None:
    class Callback:
        async def __call__(self, sender: object, *, event: TaskEvent) -> None:
            pass

    with pytest.raises(TypeError, match="async_only=True") as refused:
        signals.task_started.connect(Callback())
    assert "AsyncAdapter" in str(refused.value)


def test_send_async_awaits_coroutine_receivers_that_send_and_the_emitter_never_call(
    emitter: Emitter,
) -> None:
    got: list[tuple[str, int]] = []

    async def awaited(sender: object, *, event: TaskEvent) -> str:
        await asyncio.sleep(0)
        got.append(("awaited", event.seq))
        return "awaited"

    def plain(sender: object, *, event: TaskEvent) -> str:
        got.append(("plain", event.seq))
        return "plain"

    def async_only_plain(sender: object, *, event: TaskEvent) -> str:
        got.append(("async-only plain", event.seq))
        return "async-only plain"

    signals.task_started.connect(awaited, async_only=True)
    signals.task_started.connect(async_only_plain, async_only=True)
    signals.task_started.connect(plain)
    try:
        event = emitter.started("aws01", "change_ip")  # the emitter sends synchronously
        assert got == [("plain", 1)]
        assert [result for _, result in signals.task_started.send(emitter, event=event)] == [
            "plain"
        ]
        got.clear()
        results = asyncio.run(signals.task_started.send_async(emitter, event=event))
        assert sorted(result for _, result in results) == [
            "async-only plain",
            "awaited",
            "plain",
        ]
        assert sorted(got) == [("async-only plain", 1), ("awaited", 1), ("plain", 1)]
    finally:
        signals.task_started.disconnect(awaited)
        signals.task_started.disconnect(async_only_plain)
        signals.task_started.disconnect(plain)
    got.clear()
    assert asyncio.run(signals.task_started.send_async(emitter, event=event)) == []
    assert got == []


def test_send_async_isolates_raising_receivers_like_send(
    emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[int] = []

    async def broken_coroutine(sender: object, *, event: TaskEvent) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("coroutine receiver bug")

    def broken_plain(sender: object, *, event: TaskEvent) -> None:
        raise RuntimeError("plain receiver bug")

    async def healthy(sender: object, *, event: TaskEvent) -> None:
        got.append(event.seq)

    names = [f"{__name__}.{r.__qualname__}" for r in (broken_coroutine, broken_plain)]
    before = [signals.receiver_errors().get(name, 0) for name in names]
    event = emitter.started("aws01", "change_ip")
    signals.task_started.connect(broken_coroutine, async_only=True)
    signals.task_started.connect(healthy, async_only=True)
    try:
        with (
            caplog.at_level(logging.ERROR, logger="taskevents"),
            signals.task_started.connected_to(broken_plain),
        ):
            for _ in range(3):
                results = asyncio.run(signals.task_started.send_async(emitter, event=event))
                assert [receiver for receiver, _ in results] == [healthy]
    finally:
        signals.task_started.disconnect(broken_coroutine)
        signals.task_started.disconnect(healthy)
    assert got == [1, 1, 1]
    after = [signals.receiver_errors()[name] for name in names]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3]
    messages = [r.getMessage() for r in caplog.records]
    assert any("coroutine receiver bug" in m for m in messages)
    assert any("plain receiver bug" in m for m in messages)


def test_send_async_on_a_muted_signal_calls_nobody(emitter: Emitter) -> None:
    got: list[int] = []

    async def receiver(sender: object, *, event: TaskEvent) -> None:
        got.append(event.seq)

    event = emitter.started("aws01", "change_ip")
    signals.task_started.connect(receiver, async_only=True)
    try:
        with signals.task_started.muted():
            assert asyncio.run(signals.task_started.send_async(emitter, event=event)) == []
    finally:
        signals.task_started.disconnect(receiver)
    assert got == []
