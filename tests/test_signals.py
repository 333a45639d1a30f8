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
