"""DurableAdapter's batch path and its rows held in memory, with a sink of our own (no
network): what a subclass that sends several rows a call can count on."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskevents import Emitter, TaskEvent
from taskevents.adapters.outbox import (
    Delivery,
    DurableAdapter,
    MemoryOutbox,
    NewDelivery,
    Outbox,
    OutboxBusy,
    Outcome,
    SQLiteOutbox,
)
from tests.support.socketio import wait_until


class Sink(DurableAdapter):
    """Takes up to 5 rows a call; fails the rows whose subject is in ``fail`` once."""

    batch_size = 5

    def __init__(self, *, strict: bool = False, **options: Any) -> None:
        super().__init__(targets=["sink"], **options)
        self.strict = strict
        self.calls: list[list[str]] = []
        self.fail: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()

    def rows(self, event: TaskEvent) -> list[tuple[str, bytes]]:
        return [("sink", f"{event.subject}:{event.seq}".encode())]

    def strict_order(self, target: str) -> bool:
        return self.strict

    def send(self, delivery: Delivery) -> Outcome:
        raise AssertionError("a batching adapter is sent batches")

    def send_batch(self, deliveries: Sequence[Delivery]) -> Sequence[Outcome]:
        self.gate.wait(30)
        self.calls.append([d.body.decode() for d in deliveries])
        outcomes = []
        for delivery in deliveries:
            if delivery.subject in self.fail:
                self.fail.discard(delivery.subject)
                outcomes.append(Outcome("retry", error="once"))
            else:
                outcomes.append(Outcome.delivered())
        return outcomes


FAST = (0.0, 0.05, 0.05, 0.05)


def test_rows_of_several_subjects_share_a_call_and_a_failed_one_is_retried_alone() -> None:
    emitter = Emitter()
    sink = Sink(outbox=MemoryOutbox(), retry_schedule=FAST, jitter=0, workers=1)
    sink.gate.clear()  # the first call waits: what follows piles up
    with sink.connect(emitter):
        emitter.started("a", "t")
        assert wait_until(lambda: sink.stats["in_flight"] == 1, timeout=5)
        for subject in "bcdefg":
            emitter.started(subject, "t")
        sink.fail.add("d")
        sink.gate.set()
        assert sink.flush(10)
    assert sink.calls[0] == ["a:1"]
    assert sorted(sink.calls[1]) == ["b:1", "c:1", "d:1", "e:1", "f:1"]
    rest = [row for call in sink.calls[2:] for row in call]
    assert sorted(rest) == ["d:1", "g:1"]  # the failed one again, and the sixth


def test_a_strict_target_gets_one_row_of_a_subject_per_call_in_order() -> None:
    emitter = Emitter(exclusive=False)  # several tasks at once on a subject
    sink = Sink(strict=True, outbox=MemoryOutbox(), workers=1)
    sink.gate.clear()
    with sink.connect(emitter):
        emitter.started("a", "t")
        assert wait_until(lambda: sink.stats["in_flight"] == 1, timeout=5)
        for n in range(3):
            for subject in "ab":
                emitter.started(subject, "t", task_id=f"{subject}{n}")
        sink.gate.set()
        assert sink.flush(10)
    assert len(sink.calls) >= 4  # a: 4 rows, one a call
    for call in sink.calls:
        subjects = [row.split(":")[0] for row in call]
        assert len(subjects) == len(set(subjects)), call
    for subject in "ab":
        seqs = [int(r.split(":")[1]) for c in sink.calls for r in c if r.startswith(subject)]
        assert seqs == sorted(seqs)
        assert len(seqs) == (4 if subject == "a" else 3)


class BusyOnce(SQLiteOutbox):
    """Refuses the first write, as when another connection holds the write lock."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.refused = False

    def add(self, rows: Sequence[NewDelivery], now: float) -> list[int]:
        if not self.refused:
            self.refused = True
            raise OutboxBusy("busy (the test)")
        return super().add(rows, now)


def test_after_a_refused_write_the_emitters_write_the_held_rows(tmp_path: Path) -> None:
    """The workers are all busy (the sink does not answer): the emitting threads write
    what waits in memory themselves, so a fast emitter does not keep rows off the disk."""
    emitter = Emitter()
    outbox: Outbox = BusyOnce(tmp_path / "outbox.sqlite3")
    sink = Sink(outbox=outbox, workers=1)
    sink.gate.clear()
    try:
        sink.connect(emitter)
        emitter.started("a", "t")  # refused: held in memory
        assert sink.stats["unwritten"] == 1
        for n in range(300):
            emitter.started(f"s{n}", "t")
        assert sink.stats["unwritten"] == 0
    finally:
        sink.gate.set()
        sink.close()
