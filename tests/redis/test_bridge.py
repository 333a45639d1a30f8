"""RedisBridge: every process's events reach the adapters of every process that asks
for them, once, in seq order per subject; adapters that push outward keep to their own
process's events. Two stores on one prefix stand for two processes (each store has an
origin of its own); one test runs the other process for real."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from taskevents import CallableAdapter, Emitter, TaskEvent, ValidationError
from taskevents.exceptions import UsageError
from taskevents.redis import RedisBridge, RedisStateStore
from taskevents.signals import REMOTE, SIGNALS

if TYPE_CHECKING:
    import redis

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_store(redis_url: str, prefix: str) -> Iterator[Callable[..., RedisStateStore]]:
    """``make_store(**options)``: a store on this test's prefix, as one process has it."""
    stores: list[RedisStateStore] = []

    def make(**options: Any) -> RedisStateStore:
        stores.append(RedisStateStore(redis_url, **{"prefix": prefix, **options}))
        return stores[-1]

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def bridges() -> Iterator[list[RedisBridge]]:
    """Bridges to close after the test, whatever happened."""
    made: list[RedisBridge] = []
    yield made
    for bridge in made:
        bridge.close()


class Recorder:
    """What an adapter received, with a way to wait for it."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: TaskEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[TaskEvent]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.events) >= count, timeout)
            assert len(self.events) >= count, f"got {len(self.events)} of {count} events"
            return list(self.events)


def emit_tasks(emitter: Emitter, subjects: list[str], progress: int = 3) -> list[TaskEvent]:
    """One task per subject, their events interleaved."""
    events = [emitter.started(subject, "change_ip") for subject in subjects]
    for n in range(progress):
        events += [emitter.progress(subject, 10 * (n + 1)) for subject in subjects]
    events += [emitter.completed(subject, {"ok": True}) for subject in subjects]
    return events


def by_subject(events: list[TaskEvent]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = defaultdict(list)
    for event in events:
        seqs[event.subject].append(event.seq)
    return dict(seqs)


def test_remote_is_a_sender_of_its_own() -> None:
    assert repr(REMOTE) == "<taskevents.signals.REMOTE>"


def test_remote_adapter_gets_every_event_of_another_process_once_in_order(
    make_store: Callable[..., RedisStateStore], bridges: list[RedisBridge]
) -> None:
    store_a, store_b = make_store(), make_store()
    emitter_a = Emitter(source="a", state=store_a)
    emitter_b = Emitter(source="b", state=store_b)
    got = Recorder()
    with CallableAdapter(got, remote=True).connect(emitter_b):
        bridges.append(RedisBridge(store_b, block_ms=200).start())
        sent: list[TaskEvent] = []
        workers = [
            threading.Thread(
                target=lambda n=n: sent.extend(emit_tasks(emitter_a, [f"s{n}-a", f"s{n}-b"]))
            )
            for n in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        received = got.wait_for(len(sent))
        time.sleep(0.5)  # no more comes
        assert len(got.events) == len(sent) == 4 * 2 * 5
    assert sorted(e.id for e in received) == sorted(e.id for e in sent)
    seqs = by_subject(received)
    assert all(order == [1, 2, 3, 4, 5] for order in seqs.values()), seqs
    expected = {e.id: e for e in sent}
    for event in received:
        assert event == expected[event.id]
        assert event.to_dict() == expected[event.id].to_dict()


def test_local_adapter_gets_only_its_own_process_events(
    make_store: Callable[..., RedisStateStore], bridges: list[RedisBridge]
) -> None:
    store_a, store_b = make_store(), make_store()
    emitter_a = Emitter(source="a", state=store_a)
    emitter_b = Emitter(source="b", state=store_b)
    local, remote = Recorder(), Recorder()
    with (
        CallableAdapter(local).connect(),  # every sender: REMOTE too, and left out
        CallableAdapter(remote, remote=True).connect(emitter_b),
    ):
        bridges.append(RedisBridge(store_b, block_ms=200).start())
        own = emit_tasks(emitter_b, ["b1"])
        others = emit_tasks(emitter_a, ["a1"])
        remote.wait_for(len(own) + len(others))
        time.sleep(0.5)
    # The local adapter hears emitter A directly (same test process), never via the bridge.
    assert [e.id for e in local.events] == [e.id for e in own + others]
    assert sorted(e.id for e in remote.events) == sorted(e.id for e in own + others)


def test_own_events_are_not_received_again_through_the_bridge(
    make_store: Callable[..., RedisStateStore], bridges: list[RedisBridge]
) -> None:
    store_a, store_b = make_store(), make_store()
    emitter_a = Emitter(source="a", state=store_a)
    emitter_b = Emitter(source="b", state=store_b)
    got = Recorder()
    heard_remote: list[TaskEvent] = []

    def on_remote(sender: object, *, event: TaskEvent) -> None:
        heard_remote.append(event)

    with CallableAdapter(got, remote=True).connect(emitter_b):
        bridges.append(RedisBridge(store_b, block_ms=200).start())
        own = emit_tasks(emitter_b, ["b1", "b2"])
        marker = emitter_a.started("a1", "change_ip")  # read after B's own
        with SIGNALS["task_started"].connected_to(on_remote, sender=REMOTE):
            got.wait_for(len(own) + 1)
            time.sleep(0.3)
    assert [e.id for e in got.events] == [e.id for e in own] + [marker.id]


def test_an_adapter_of_one_emitter_with_remote_false_gets_no_remote_event(
    make_store: Callable[..., RedisStateStore], bridges: list[RedisBridge]
) -> None:
    store_a, store_b = make_store(), make_store()
    emitter_a = Emitter(source="a", state=store_a)
    emitter_b = Emitter(source="b", state=store_b)
    local, remote = Recorder(), Recorder()
    with (
        CallableAdapter(local).connect(emitter_b),
        CallableAdapter(remote, remote=True).connect(emitter_b),
    ):
        bridges.append(RedisBridge(store_b, block_ms=200).start())
        emit_tasks(emitter_a, ["a1"])
        remote.wait_for(5)
    assert local.events == []


def test_remote_must_be_a_bool() -> None:
    with pytest.raises(ValidationError, match="remote"):
        CallableAdapter(print, remote="yes")  # type: ignore[arg-type]


def test_custom_types_need_declaring_in_the_receiving_process(
    make_store: Callable[..., RedisStateStore],
    bridges: list[RedisBridge],
    redis_client: redis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store_a, store_b = make_store(), make_store()
    emitter_a = Emitter(source="a", state=store_a)
    got = Recorder()
    undeclared = "task_declared_elsewhere_only"
    with (
        caplog.at_level(logging.WARNING, logger="taskevents"),
        CallableAdapter(got, remote=True).connect(Emitter(source="b", state=store_b)),
    ):
        bridges.append(RedisBridge(store_b, block_ms=200).start())
        started = emitter_a.started("a1", "change_ip")
        # As another process that declared the type would record it:
        for seq in (2, 3):
            redis_client.xadd(
                f"{prefix}:events",
                {"o": "elsewhere", "j": "a1", "q": seq, "i": f"x{seq}", "y": undeclared,
                 "k": started.task_id, "n": "change_ip", "t": "1.5", "s": "a", "d": "{}",
                 "z": 200},
            )  # fmt: skip
        completed = emitter_a.completed("a1")
        got.wait_for(2)
        time.sleep(0.3)
    assert [e.id for e in got.events] == [started.id, completed.id]
    assert sum(undeclared in r.getMessage() for r in caplog.records) == 1


def test_the_bridge_reconnects_and_delivers_what_was_emitted_meanwhile(
    make_store: Callable[..., RedisStateStore],
    bridges: list[RedisBridge],
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store_a, store_b = make_store(), make_store()
    emitter_a = Emitter(source="a", state=store_a)
    emitter_b = Emitter(source="b", state=store_b)
    got = Recorder()
    with (
        caplog.at_level(logging.INFO, logger="taskevents"),
        CallableAdapter(got, remote=True).connect(emitter_b),
    ):
        bridge = RedisBridge(store_b, block_ms=200)
        bridge.retry_initial = 0.5  # a longer outage, to emit in
        bridges.append(bridge.start())
        before = emit_tasks(emitter_a, ["a1"])
        got.wait_for(len(before))
        ids = [c["id"] for c in redis_client.client_list() if c["name"] == bridge.client_name]
        assert len(ids) == 1
        redis_client.client_kill_filter(_id=ids[0])
        during = emit_tasks(emitter_a, ["a1", "a2"])
        received = got.wait_for(len(before) + len(during))
        time.sleep(0.3)
    assert [e.id for e in got.events] == [e.id for e in before + during] == [e.id for e in received]
    records = [r for r in caplog.records if "RedisBridge" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]
    assert "reconnecting" in records[0].getMessage()


def test_the_bridge_says_when_the_stream_was_trimmed_past_it(
    make_store: Callable[..., RedisStateStore],
    bridges: list[RedisBridge],
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store_a, store_b = make_store(events_size=10), make_store()
    emitter_a = Emitter(source="a", state=store_a)
    got = Recorder()
    with (
        caplog.at_level(logging.WARNING, logger="taskevents"),
        CallableAdapter(got, remote=True).connect(Emitter(source="b", state=store_b)),
    ):
        bridge = RedisBridge(store_b, block_ms=200)
        bridge.retry_initial = 1.0
        bridges.append(bridge.start())
        emitter_a.started("a1", "change_ip")
        got.wait_for(1)
        ids = [c["id"] for c in redis_client.client_list() if c["name"] == bridge.client_name]
        redis_client.client_kill_filter(_id=ids[0])
        for n in range(500):
            emitter_a.progress("a1", n % 100)
        last = emitter_a.completed("a1")
        received = got.wait_for(2)
        deadline = time.monotonic() + 10
        while got.events[-1].id != last.id and time.monotonic() < deadline:
            time.sleep(0.05)
    assert got.events[-1].id == last.id
    assert len(received) < 500  # the stream kept about events_size of them
    seqs = [e.seq for e in got.events[1:]]
    assert seqs == list(range(seqs[0], 503))
    assert sum("missed events" in r.getMessage() for r in caplog.records) == 1


def test_close_stops_the_thread_promptly(
    make_store: Callable[..., RedisStateStore],
) -> None:
    bridge = RedisBridge(make_store(), block_ms=1000).start()
    assert bridge.running
    assert "running" in repr(bridge)
    time.sleep(0.2)  # blocked in a read by now
    began = time.monotonic()
    bridge.close()
    assert time.monotonic() - began < 2
    assert not bridge.running
    bridge.close()  # idempotent
    with pytest.raises(UsageError):
        bridge.start()


def test_the_bridge_is_a_context_manager(make_store: Callable[..., RedisStateStore]) -> None:
    with RedisBridge(make_store(), block_ms=100) as bridge:
        assert bridge.running
    assert not bridge.running


def test_bad_arguments_are_named(make_store: Callable[..., RedisStateStore]) -> None:
    with pytest.raises(ValidationError, match="store"):
        RedisBridge("redis://127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="block_ms"):
        RedisBridge(make_store(), block_ms=0)
    with pytest.raises(ValidationError, match="events_size"):
        make_store(events_size=0)


def test_events_of_another_real_process_reach_this_one(
    redis_url: str, prefix: str, make_store: Callable[..., RedisStateStore]
) -> None:
    got = Recorder()
    with (
        CallableAdapter(got, remote=True).connect(),  # no emitter here: all come remote
        RedisBridge(make_store(), block_ms=200),
    ):
        process = subprocess.run(
            [sys.executable, "-m", "tests.redis.emit_process", "tasks", redis_url, prefix,
             "1", "5", "one", "two"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONWARNINGS": "error"},
        )  # fmt: skip
        assert process.returncode == 0, process.stderr
        sent = [json.loads(line) for line in process.stdout.splitlines()]
        got.wait_for(len(sent))
        time.sleep(0.3)
    assert len(sent) == 2 * 7
    assert [e.to_dict() for e in got.events] == sent


def test_foreign_and_undecodable_entries_are_skipped_and_the_bridge_goes_on(
    make_store: Callable[..., RedisStateStore],
    bridges: list[RedisBridge],
    redis_url: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whoever may write to the server may write to the stream: entries a store would
    not have recorded (bytes that are not UTF-8, a bad subject or seq, data that is
    not an object, numbers that are not finite) are reported and skipped."""
    import redis

    store_a, store_b = make_store(), make_store()
    emitter_a = Emitter(source="a", state=store_a)
    got = Recorder()
    forgotten: list[str] = []

    def heard(sender: object, *, subject: str, reason: str) -> None:
        forgotten.append(subject)

    from taskevents.signals import subject_forgotten

    subject_forgotten.connect(heard, sender=REMOTE)
    raw = redis.Redis.from_url(redis_url)
    try:
        with CallableAdapter(got, remote=True).connect(Emitter(state=store_b)):
            bridges.append(RedisBridge(store_b, block_ms=200).start())
            good = {b"o": b"x", b"y": b"task_started", b"k": b"t", b"n": b"n", b"i": b"e1"}
            good |= {b"t": b"1700000000.0", b"s": b"forged", b"z": b"10"}
            entries: list[dict[Any, Any]] = [
                {b"o": b"x", b"j": b"\xff\xfe", b"f": b"1"},  # not UTF-8: read, replaced
                {b"o": b"x", b"j": b"", b"f": b"1"},  # no subject
                {**good, b"j": b"aws01", b"q": b"0", b"d": b"{}"},  # seq 0
                {**good, b"j": b"aws01", b"q": b"1", b"d": b"[1, 2]"},  # data not an object
                {**good, b"j": b"aws01", b"q": b"1", b"d": b'{"p": 1e999}'},  # infinite
                {**good, b"j": b"a" * 200, b"q": b"1", b"d": b"{}"},  # name too long
                {b"o": b"x", b"j": b"aws01"},  # fields missing
            ]
            for entry in entries:
                raw.xadd(f"{prefix}:events", entry)
            real = emitter_a.started("aws01", "change_ip")
            assert got.wait_for(1) == [real]
            assert bridges[-1].running
            # Undecodable bytes are read as U+FFFD: a name, of no subject here.
            assert forgotten == ["\ufffd\ufffd"]
            assert bridges[-1].errors.count == 6
    finally:
        subject_forgotten.disconnect(heard)
        raw.close()
    assert "Traceback" not in caplog.text


def test_a_prefix_is_letters_digits_dots_dashes_and_underscores(redis_url: str) -> None:
    for bad in ("app:taskevents", "a{b}", "", "x" * 65, "space d"):
        with pytest.raises(ValidationError, match="prefix"):
            RedisStateStore(redis_url, prefix=bad)
    RedisStateStore(redis_url, prefix="app.task-events_2").close()
