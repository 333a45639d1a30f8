"""Emitting from threads and from coroutines on the server's loop at once: every event
reaches an AsyncAdapter, and every Socket.IO client (AsyncClient and Client), in seq
order per subject, no lifecycle event lost."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from taskevents import AsyncAdapter, Emitter, TaskEvent
from taskevents.testing import capture_events
from tests.asgi.support import AsgiServed, Recorder, serving, subscribe

Serve = Callable[..., AsgiServed]

THREADS = 8
COROUTINES = 8
TASKS_EACH = 15


@pytest.fixture
def asgi() -> Iterator[Serve]:
    yield from serving()


class Recording(AsyncAdapter):
    """Every event it is given, as delivered, and the loops it was delivered on."""

    def __init__(self) -> None:
        super().__init__(coalesce_progress=False)  # every progress event too
        self.delivered: list[TaskEvent] = []
        self.loops: set[asyncio.AbstractEventLoop] = set()

    async def deliver(self, event: TaskEvent) -> None:
        self.loops.add(asyncio.get_running_loop())
        self.delivered.append(event)


def by_subject(events: list[TaskEvent]) -> dict[str, list[TaskEvent]]:
    grouped: dict[str, list[TaskEvent]] = defaultdict(list)
    for event in events:
        grouped[event.subject].append(event)
    return grouped


def read_until_last(client: Recorder, last: dict[str, int], timeout: float = 60.0) -> None:
    """Read ``client``'s events until it has seen the update of seq ``last[subject]`` of
    every subject."""
    reached: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while any(reached.get(subject, 0) < seq for subject, seq in last.items()):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            behind = {s: (reached.get(s), seq) for s, seq in last.items() if reached.get(s) != seq}
            raise AssertionError(f"{client.kind}: behind after {timeout}s: {behind}")
        name, payload = client.next(remaining)
        if name == "task_status_update":
            subject = payload["config_name"]
            reached[subject] = max(reached.get(subject, 0), payload["seq"])


def check_stream(
    kind: str, subject: str, sent: list[TaskEvent], updates: list[dict[str, Any]]
) -> None:
    """What a Socket.IO client got of ``subject``: in seq order, nothing twice, nothing
    that was not sent, every lifecycle event, and a progress event left out only for a
    newer one of the same task that came right after it (latest wins)."""
    where = f"{kind}, {subject}"
    by_seq = {event.seq: event for event in sent}
    seqs = [update["seq"] for update in updates]
    assert seqs == sorted(set(seqs)), where
    assert set(seqs) <= set(by_seq), where
    lifecycle = {event.seq for event in sent if event.type != "task_progress"}
    assert lifecycle <= set(seqs), (where, sorted(lifecycle - set(seqs)))
    for seq in sorted(set(by_seq) - set(seqs)):
        skipped, after = by_seq[seq], by_seq.get(seq + 1)
        assert after is not None, (where, seq)
        assert skipped.type == after.type == "task_progress", (where, seq)
        assert skipped.task_id == after.task_id, (where, seq)
    for update in updates:
        event = by_seq[update["seq"]]
        assert update["event_id"] == event.id, where
        assert update["update"]["event"] == event.type, where
        assert update["update"]["task_id"] == event.task_id, where


def test_events_emitted_from_8_threads_and_8_coroutines_at_once_arrive_gap_free_per_subject(
    asgi: Serve,
) -> None:
    # Several tasks at once on the subject they all share: not exclusive.
    emitter = Emitter(source="tests", exclusive=False)
    own = [f"thread{n}" for n in range(THREADS)] + [f"coroutine{n}" for n in range(COROUTINES)]
    subjects = [*own, "shared"]
    served = asgi(emitter=emitter, subjects={subject: {} for subject in subjects})
    clients = [served.client("AsyncClient"), served.client("Client")]
    for client in clients:
        for subject in subjects:
            assert subscribe(client, subject)["seq"] == 0
    # connect() on the server's loop binds the adapter to it
    recording = served.live.call(lambda: Recording().connect(emitter))
    go = threading.Event()
    failures: list[BaseException] = []

    def in_thread(subject: str) -> None:
        go.wait(10)
        try:
            for _ in range(TASKS_EACH):
                with emitter.track(subject, "work") as task:
                    task.progress(25)
                    with emitter.track("shared", "part") as part:
                        part.progress(50, by=subject)
                    task.progress(75)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    async def in_coroutine(subject: str) -> None:
        for _ in range(TASKS_EACH):
            async with emitter.track(subject, "work") as task:
                task.progress(25)
                await asyncio.sleep(0)
                with emitter.track("shared", "part") as part:
                    part.progress(50, by=subject)
                await asyncio.sleep(0)
                task.progress(75)
            await asyncio.sleep(0)

    async def coroutines() -> None:
        go.set()  # the threads start as the coroutines do
        await asyncio.gather(*(in_coroutine(f"coroutine{n}") for n in range(COROUTINES)))

    with capture_events(emitter) as sent:
        threads = [
            threading.Thread(target=in_thread, args=(f"thread{n}",), name=f"emitter-{n}")
            for n in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        served.live.run(coroutines())
        for thread in threads:
            thread.join(60)
    assert failures == []
    assert not any(thread.is_alive() for thread in threads)
    sent_by_subject = by_subject(list(sent))
    assert sorted(sent_by_subject) == sorted(subjects)
    for subject in own:
        assert len(sent_by_subject[subject]) == 4 * TASKS_EACH
    assert len(sent_by_subject["shared"]) == 3 * TASKS_EACH * len(own)
    for subject, events in sent_by_subject.items():  # the emitter's own promise
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), subject

    # The AsyncAdapter got every event of every subject, in seq order, on the loop.
    assert served.live.run(recording.flush(timeout=30))
    delivered = by_subject(recording.delivered)
    for subject, events in sent_by_subject.items():
        assert [e.id for e in delivered[subject]] == [e.id for e in events], subject
    assert recording.loops == {served.live.loop}
    served.live.run(recording.aclose())
    assert recording.stats["dropped"] == 0

    # Every client got every subject's lifecycle events, in order, without a gap.
    last = {subject: events[-1].seq for subject, events in sent_by_subject.items()}
    for client in clients:
        read_until_last(client, last)
        assert client.drain(0.2) == []
        assert client.errors() == []
        for subject, events in sent_by_subject.items():
            check_stream(client.kind, subject, events, client.updates(subject))
    assert served.adapter.stats["dropped"] == 0
