"""A slow AsyncAdapter on the server's loop (a second per event) holds up neither the
coroutine that emits, nor the loop's other coroutines, nor the Socket.IO clients."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from taskevents import AsyncAdapter, TaskEvent
from tests.asgi.support import AsgiServed, serving, subscribe

Serve = Callable[..., AsgiServed]


@pytest.fixture
def asgi() -> Iterator[Serve]:
    yield from serving()


class Slow(AsyncAdapter):
    """Takes a second to deliver each event."""

    def __init__(self) -> None:
        super().__init__()
        self.delivered: list[int] = []

    async def deliver(self, event: TaskEvent) -> None:
        await asyncio.sleep(1.0)
        self.delivered.append(event.seq)


@dataclass
class Measured:
    #: How late each 10 ms sleep of a ticker coroutine woke up, in seconds.
    lags: list[float] = field(default_factory=list)
    #: How long each round of emits (22 events) took the emitting coroutine.
    emits: list[float] = field(default_factory=list)
    sent: list[TaskEvent] = field(default_factory=list)
    finished_at: float = 0.0


def test_a_slow_async_adapter_never_delays_the_emitting_coroutine_or_the_loop(
    asgi: Serve,
) -> None:
    served = asgi()
    emitter = served.emitter
    clients = [served.client("AsyncClient"), served.client("Client")]
    for client in clients:
        subscribe(client)
    slow = served.live.call(lambda: Slow().connect(emitter))
    measured = Measured()

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.01)
            measured.lags.append(time.monotonic() - before - 0.01)

    async def emitting() -> None:
        stop = asyncio.Event()
        ticking = asyncio.create_task(ticker(stop))
        began = time.monotonic()
        round_ = 0
        while time.monotonic() - began < 1.5:  # while the slow adapter sleeps
            start = time.monotonic()
            measured.sent.append(emitter.started("aws01", "change_ip"))
            for percent in range(0, 100, 5):
                measured.sent.append(emitter.progress("aws01", percent))
            measured.sent.append(emitter.completed("aws01", {"round": round_}))
            measured.emits.append(time.monotonic() - start)
            round_ += 1
            await asyncio.sleep(0.05)
        measured.finished_at = time.monotonic()
        stop.set()
        await ticking

    served.live.run(emitting())
    last = measured.sent[-1]
    lifecycle = [e.seq for e in measured.sent if e.type != "task_progress"]
    # The clients have every lifecycle event (and the last one) while the slow adapter,
    # which takes a second per event, has delivered only a few.
    for client in clients:
        client.wait_for("task_status_update", lambda p: p["seq"] == last.seq, timeout=30)
    clients_done = time.monotonic() - measured.finished_at
    slow_done = len(slow.delivered)
    for client in clients:
        seqs = [u["seq"] for u in client.updates()]
        assert seqs == sorted(set(seqs))
        assert set(lifecycle) <= set(seqs)
    served.live.run(slow.aclose(timeout=0.1))
    stats = slow.stats

    rounds = len(measured.emits)
    assert rounds >= 10  # the emitting coroutine was not held up
    assert len(lifecycle) == 2 * rounds
    # Paced by the slow adapter, the clients would have needed a second per event.
    assert slow_done < len(lifecycle) // 4, (slow_done, len(lifecycle))
    assert clients_done < len(lifecycle) / 4, clients_done
    assert slow.delivered == sorted(slow.delivered)
    assert stats["delivered"] + stats["dropped"] + stats["coalesced"] == stats["received"]
    # The loop went on: the ticker woke up on time (a blocked loop would have stalled for
    # a whole second at every delivery), and no round of emits waited for a delivery.
    assert len(measured.lags) > 50
    assert statistics.median(measured.lags) < 0.05, statistics.median(measured.lags)
    assert max(measured.lags) < 0.5, max(measured.lags)
    assert max(measured.emits) < 0.5, max(measured.emits)
