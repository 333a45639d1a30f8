"""RedisStateStore: the StateStore contract on a live Redis server, the same answers as
MemoryStateStore, and seqs and exclusivity that hold across processes."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from taskevents import (
    CallableAdapter,
    Emitter,
    MemoryStateStore,
    NoRunningTask,
    StateStore,
    SubjectBusy,
    TaskEvent,
    TaskEventsError,
    ValidationError,
    define_event_type,
)
from taskevents.exceptions import MissingDependency
from taskevents.redis import RedisStateStore, StoreUnavailable
from taskevents.signals import subject_forgotten
from taskevents.testing import capture_events

if TYPE_CHECKING:
    import redis

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_store(redis_url: str, prefix: str) -> Iterator[Callable[..., RedisStateStore]]:
    """``make_store(**options)``: more stores on this test's prefix (as other processes
    would have), closed afterwards."""
    stores: list[RedisStateStore] = []

    def make(**options: Any) -> RedisStateStore:
        stores.append(RedisStateStore(redis_url, **{"prefix": prefix, **options}))
        return stores[-1]

    yield make
    for store in stores:
        store.close()


# -- the contract, as tests/test_state.py and tests/test_emitter.py hold MemoryStateStore to it


def test_redis_store_satisfies_the_protocol(store: RedisStateStore) -> None:
    assert isinstance(store, StateStore)


def test_snapshot_follows_the_lifecycle(emitter: Emitter) -> None:
    emitter.register("aws01", region="eu-west-1")
    idle = emitter.state.snapshot("aws01")
    assert idle is not None
    assert (idle.status, idle.seq, idle.current, idle.last) == ("idle", 0, None, None)
    assert idle.metadata == {"region": "eu-west-1"}

    started = emitter.started("aws01", "change_ip")
    emitter.progress("aws01", 40, stage="execution")
    busy = emitter.state.snapshot("aws01")
    assert busy is not None
    assert busy.status == "busy"
    assert busy.seq == 2
    assert busy.current is not None
    assert busy.current.task_id == started.task_id
    assert busy.current.started_at == started.time
    assert busy.current.progress == {"percent": 40, "stage": "execution"}

    done = emitter.failed("aws01", RuntimeError("refused"))
    idle_again = emitter.state.snapshot("aws01")
    assert idle_again is not None
    assert idle_again.status == "idle"
    assert idle_again.current is None
    last = idle_again.last
    assert last is not None
    assert (last.outcome, last.ended_at, last.started_at) == ("failed", done.time, started.time)
    assert last.error == {"type": "RuntimeError", "message": "refused"}
    assert last.progress == {"percent": 40, "stage": "execution"}
    assert idle_again.to_dict()["last_task"]["outcome"] == "failed"
    assert idle_again.to_dict()["metadata"] == {"region": "eu-west-1"}


def test_each_call_returns_the_event_it_sent_and_the_history_keeps_it(emitter: Emitter) -> None:
    with capture_events() as events:
        started = emitter.started("aws01", "change_ip", origin={"user": "alice"})
        progress = emitter.progress("aws01", 40, stage="execution", message="Changing IP...")
        completed = emitter.completed("aws01", {"ip": "203.0.113.7"})
    assert events == [started, progress, completed]
    assert [e.seq for e in events] == [1, 2, 3]
    assert {e.task_id for e in events} == {started.task_id}
    assert progress.data == {"percent": 40, "stage": "execution", "message": "Changing IP..."}
    history = emitter.state.history("aws01", 0)
    assert history == events
    assert [e.size for e in history or []] == [e.size for e in events]
    assert [e.time for e in history or []] == [e.time for e in events]


def test_unknown_subject_has_no_snapshot(emitter: Emitter) -> None:
    assert emitter.state.snapshot("nope") is None
    assert emitter.state.history("nope", 0) is None
    assert emitter.state.last_seq("nope") == 0
    assert emitter.state.running_task("nope") is None


def test_snapshot_all_lists_every_subject(emitter: Emitter) -> None:
    emitter.register("aws02")
    emitter.started("aws01", "change_ip")
    snapshots = emitter.state.snapshot_all()
    assert sorted(snapshots) == ["aws01", "aws02"]
    assert snapshots["aws01"].status == "busy"
    assert snapshots["aws02"].status == "idle"
    assert emitter.state.subjects() == ["aws01", "aws02"]
    assert emitter.state.subject_count() == 2


def test_history_replays_after_a_seq_and_says_when_it_cannot(
    make_store: Callable[..., RedisStateStore],
) -> None:
    emitter = Emitter(state=make_store(history_size=10))
    emitter.started("aws01", "change_ip")
    for n in range(19):
        emitter.progress("aws01", n)
    state = emitter.state
    assert state.last_seq("aws01") == 20
    assert [e.seq for e in state.history("aws01", 15) or []] == [16, 17, 18, 19, 20]
    assert [e.seq for e in state.history("aws01", 10) or []] == list(range(11, 21))
    assert state.history("aws01", 20) == []
    assert state.history("aws01", 9) is None  # seq 10 is no longer kept
    assert state.history("aws01", 25) is None  # ahead of the store: it restarted
    assert state.history("aws01", -1) is None


def test_history_is_bounded_in_characters_too(
    make_store: Callable[..., RedisStateStore], redis_client: redis.Redis, prefix: str
) -> None:
    stores: list[StateStore] = [
        make_store(history_bytes=2000),
        MemoryStateStore(history_bytes=2000),
    ]
    for store in stores:
        emitter = Emitter(state=store)
        emitter.started("aws01", "upload")
        for n in range(20):
            emitter.progress("aws01", message="x" * 300, step=n)
    kept = [e.seq for e in stores[1].history("aws01", 18) or []]
    assert kept == [19, 20, 21]  # 542 characters each
    for since in range(22):
        got, expected = (store.history("aws01", since) for store in stores)
        assert (got is None) == (expected is None), since
        assert [(e.seq, e.size) for e in got or []] == [(e.seq, e.size) for e in expected or []]
    assert redis_client.xlen(f"{prefix}:history:aws01") == len(kept)
    total = int(redis_client.hget(f"{prefix}:subject:aws01", "hbytes") or 0)
    assert total == sum(e.size for e in stores[1].history("aws01", 18) or [])
    assert total <= 2000


def test_an_event_larger_than_the_bound_empties_the_history_as_in_memory(
    make_store: Callable[..., RedisStateStore],
) -> None:
    stores: list[StateStore] = [make_store(history_bytes=500), MemoryStateStore(history_bytes=500)]
    for store in stores:
        emitter = Emitter(state=store)
        emitter.started("aws01", "upload")
        emitter.progress("aws01", message="x" * 1000)
    assert [store.history("aws01", 1) for store in stores] == [None, None]
    assert [store.history("aws01", 2) for store in stores] == [[], []]


def test_apply_ignores_replayed_events(emitter: Emitter) -> None:
    first = emitter.started("aws01", "change_ip")
    emitter.completed("aws01")
    assert emitter.state.apply(first) is False
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.status == "idle"


def test_apply_folds_newer_events_from_elsewhere(emitter: Emitter) -> None:
    elsewhere = Emitter(source="elsewhere")
    started = elsewhere.started("aws07", "reboot")
    progress = elsewhere.progress("aws07", 70)
    state = emitter.state
    assert state.apply(started) is True
    assert state.apply(progress) is True
    assert state.apply(progress) is False
    snapshot = state.snapshot("aws07")
    assert snapshot is not None
    assert snapshot.seq == 2
    assert snapshot.current is not None
    assert snapshot.current.progress == {"percent": 70}
    assert state.history("aws07", 0) == [started, progress]
    assert state.running_task("aws07") == (started.task_id, "reboot")
    # and the local emitter carries on the stream
    assert emitter.completed("aws07").seq == 3


def test_a_second_emitter_can_share_the_store(store: RedisStateStore) -> None:
    one, two = Emitter(state=store), Emitter(state=store)
    one.started("aws01", "change_ip")
    event = two.progress("aws01", 50)
    assert event.seq == 2
    with pytest.raises(SubjectBusy, match="busy"):
        two.started("aws01", "reboot")


def test_two_stores_on_one_prefix_are_one_state(
    make_store: Callable[..., RedisStateStore],
) -> None:
    here, there = Emitter(state=make_store()), Emitter(state=make_store())
    started = here.started("aws01", "change_ip")
    assert there.progress("aws01", 10).task_id == started.task_id
    with pytest.raises(SubjectBusy) as caught:
        there.started("aws01", "reboot")
    assert caught.value.running_task_id == started.task_id
    assert here.completed("aws01").seq == 3
    assert there.state.snapshot("aws01") == here.state.snapshot("aws01")


def test_stores_with_other_prefixes_share_nothing(
    make_store: Callable[..., RedisStateStore], redis_client: redis.Redis, prefix: str
) -> None:
    other_prefix = prefix + "-other"
    other = make_store(prefix=other_prefix)
    try:
        Emitter(state=make_store()).started("aws01", "change_ip")
        assert other.subjects() == []
        assert Emitter(state=other).started("aws01", "change_ip").seq == 1
        assert redis_client.exists(f"{other_prefix}:subject:aws01")
    finally:
        keys = list(redis_client.scan_iter(match=f"{other_prefix}:*"))
        if keys:
            redis_client.delete(*keys)


def test_history_size_and_the_other_options_are_validated(redis_url: str) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"history_size": 0}, "history_size"),
        ({"history_bytes": -1}, "history_bytes"),
        ({"prefix": ""}, "prefix"),
        ({"prefix": "a\nb"}, "prefix"),
        ({"socket_timeout": 0}, "socket_timeout"),
        ({"socket_connect_timeout": "2"}, "socket_connect_timeout"),
    ]
    for options, field in bad:
        with pytest.raises(ValidationError) as caught:
            RedisStateStore(redis_url, **options)
        assert caught.value.field == field


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/0",
        "127.0.0.1:6379",
        "redis://127.0.0.1:99999/0",
        "redis://[::1/0",
        "redis://127.0.0.1:6379/0?socket_timeout=soon",
        "redis://127.0.0.1:6379/0?no_such_option=1",
        "redis://:s3cret@127.0.0.1:notaport/0",
    ],
)
def test_a_bad_url_fails_at_construction_naming_the_url(url: str) -> None:
    pytest.importorskip("redis")
    with pytest.raises(ValidationError) as caught:
        RedisStateStore(url)
    assert caught.value.field == "url"
    assert "redis://" in caught.value.expected
    assert "s3cret" not in str(caught.value)


def test_a_url_must_be_text() -> None:
    with pytest.raises(ValidationError) as caught:
        RedisStateStore(b"redis://127.0.0.1:6379/0")  # type: ignore[arg-type]
    assert caught.value.field == "url"


def test_the_password_is_never_shown() -> None:
    pytest.importorskip("redis")
    with RedisStateStore("redis://user:s3cret@127.0.0.1:1/0") as store:
        assert "s3cret" not in repr(store)
        with pytest.raises(StoreUnavailable) as caught:
            store.snapshot("aws01")
        assert "s3cret" not in str(caught.value)


def test_state_keeps_copies_of_what_the_caller_passed(emitter: Emitter) -> None:
    result = {"ip": "203.0.113.7", "tags": ["a"]}
    origin = {"user": "alice"}
    emitter.started("aws01", "change_ip", origin=origin)
    emitter.completed("aws01", result)
    result["ip"] = "changed"
    result["tags"].append("b")  # type: ignore[attr-defined]
    origin["user"] = "mallory"
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.last is not None
    assert snapshot.last.result == {"ip": "203.0.113.7", "tags": ["a"]}
    history = emitter.state.history("aws01", 0) or []
    assert history[0].data == {"origin": {"user": "alice"}}


def test_second_task_on_busy_subject_raises_and_emits_nothing(emitter: Emitter) -> None:
    first = emitter.started("aws01", "change_ip")
    with capture_events() as events:
        with pytest.raises(SubjectBusy) as caught:
            emitter.started("aws01", "reboot")
        with pytest.raises(SubjectBusy), emitter.track("aws01", "reboot"):
            pytest.fail("the body must not run")
    assert events == []
    assert isinstance(caught.value, TaskEventsError)
    assert caught.value.running_task_id == first.task_id
    assert caught.value.running_task_type == "change_ip"
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.current is not None
    assert snapshot.current.task_id == first.task_id
    assert snapshot.seq == 1
    assert emitter.state.history("aws01", 0) == [first]


def test_non_exclusive_emitter_runs_tasks_side_by_side(emitter: Emitter) -> None:
    first = emitter.started("aws01", "change_ip")
    second = emitter.started("aws01", "reboot", exclusive=False)
    assert emitter.state.running_task("aws01") == (second.task_id, "reboot")
    assert emitter.state.running_task("aws01", first.task_id) == (first.task_id, "change_ip")
    assert emitter.progress("aws01", 5).task_id == second.task_id  # the newest by default
    emitter.progress("aws01", 10, task_id=first.task_id)
    emitter.completed("aws01", task_id=second.task_id)
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.status == "busy"
    assert [t.task_id for t in snapshot.running] == [first.task_id]
    assert snapshot.running[0].progress == {"percent": 10}
    assert snapshot.last is not None
    assert snapshot.last.task_id == second.task_id
    assert snapshot.last.progress == {"percent": 5}
    with pytest.raises(ValidationError) as caught:
        emitter.started("aws01", "again", task_id=first.task_id, exclusive=False)
    assert caught.value.field == "task_id"
    assert emitter.state.last_seq("aws01") == 5  # the refused start took no seq


def test_progress_or_outcome_without_a_running_task_raises(emitter: Emitter) -> None:
    with capture_events() as events:
        calls: list[Callable[[], object]] = [
            lambda: emitter.progress("aws01", 10),
            lambda: emitter.completed("aws01"),
            lambda: emitter.failed("aws01", "x"),
            lambda: emitter.cancelled("aws01"),
        ]
        for call in calls:
            with pytest.raises(NoRunningTask, match="'aws01' has no running task"):
                call()
        emitter.started("aws01", "change_ip")
        with pytest.raises(NoRunningTask, match="no running task with id 'nope'"):
            emitter.progress("aws01", 10, task_id="nope")
        emitter.completed("aws01")
        with pytest.raises(NoRunningTask):
            emitter.progress("aws01", 10)
    assert [e.type for e in events] == ["task_started", "task_completed"]
    assert emitter.state.subjects() == ["aws01"]


def test_track_reports_through_the_store(emitter: Emitter) -> None:
    @emitter.track("aws01", "change_ip")
    def change_ip() -> None:
        emitter.progress("aws01", 50, stage="execution")
        raise RuntimeError("refused")

    with capture_events() as events, pytest.raises(RuntimeError, match="refused"):
        change_ip()
    assert [e.type for e in events] == ["task_started", "task_progress", "task_failed"]
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.status == "idle"
    assert snapshot.last is not None
    assert snapshot.last.error == {"type": "RuntimeError", "message": "refused"}


def test_custom_event_types_take_a_seq_and_change_no_state(emitter: Emitter) -> None:
    define_event_type("task_log")  # as tests/test_event_types.py declares it
    emitter.started("aws01", "change_ip")
    emitter.progress("aws01", 10)
    log = emitter.emit("aws01", "task_log", line="hello")
    assert log.seq == 3
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.current is not None
    assert snapshot.current.progress == {"percent": 10}
    assert emitter.state.history("aws01", 2) == [log]


def test_forget_drops_everything_and_a_new_stream_starts_at_one(
    emitter: Emitter, store: RedisStateStore, redis_client: redis.Redis, prefix: str
) -> None:
    assert emitter.forget("nope") is False
    emitter.register("aws01", region="eu-west-1")
    emitter.started("aws01", "change_ip")
    with pytest.raises(SubjectBusy):
        emitter.forget("aws01")
    assert emitter.state.last_seq("aws01") == 1
    emitter.completed("aws01")
    heard: list[tuple[str, str]] = []

    def on_forgotten(sender: object, subject: str, reason: str) -> None:
        heard.append((subject, reason))

    with subject_forgotten.connected_to(on_forgotten):
        assert emitter.forget("aws01") is True
    assert heard == [("aws01", "forgotten")]
    # Only the stream of every subject's events (bounded, read by bridges) is left.
    assert redis_client.keys(f"{prefix}:*") == [f"{prefix}:events"]
    assert "aws01" not in store
    assert emitter.state.snapshot("aws01") is None
    assert emitter.started("aws01", "change_ip").seq == 1
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.metadata == {}
    assert [e.seq for e in emitter.state.history("aws01", 0) or []] == [1]


def test_expired_picks_unregistered_idle_subjects_by_last_activity(
    store: RedisStateStore,
) -> None:
    emitter = Emitter(state=store, keep_idle_subjects=None, idle_subject_seconds=None)
    emitter.register("registered")
    for subject in ("old", "middle", "new"):
        emitter.started(subject, "change_ip")
        emitter.completed(subject)
        time.sleep(0.01)
    emitter.started("busy", "change_ip")
    assert store.expired(keep=None, idle_seconds=None) == []
    assert store.expired(keep=1, idle_seconds=None) == ["middle", "old"]
    assert store.expired(keep=3, idle_seconds=None) == []
    time.sleep(0.3)
    emitter.started("old", "change_ip")
    emitter.cancelled("old")  # active again
    assert store.expired(keep=None, idle_seconds=0.2) == ["middle", "new"]
    assert store.expired(keep=2, idle_seconds=0.2) == ["middle", "new"]
    assert store.expired(keep=0, idle_seconds=0.2) == ["middle", "new", "old"]
    emitter.register("new")  # registered: kept for ever
    assert store.expired(keep=0, idle_seconds=0.2) == ["middle", "old"]


def test_the_emitter_retention_policy_forgets_through_the_store(store: RedisStateStore) -> None:
    emitter = Emitter(state=store, keep_idle_subjects=2, idle_subject_seconds=None)
    heard: list[tuple[str, str]] = []

    def on_forgotten(sender: object, subject: str, reason: str) -> None:
        heard.append((subject, reason))

    with subject_forgotten.connected_to(on_forgotten):
        for n in range(5):
            emitter.started(f"job-{n}", "export")  # sweeps when over the limit
            emitter.completed(f"job-{n}")
            time.sleep(0.005)
        emitter.started("busy", "export")
        emitter.forget_idle()
    assert sorted(heard) == [(f"job-{n}", "expired") for n in range(3)]
    assert store.subjects() == ["busy", "job-3", "job-4"]
    assert store.subject_count() == 3


@pytest.mark.parametrize(
    "names",
    [
        ("a:b", "a"),
        ("x:history:y", "x"),
        ("subjects", "idle"),
        ("*", "?"),
        ("{tag}", "[set]"),
        ("データ", "données"),
        ("s" * 128, "s" * 127),
    ],
)
def test_any_subject_name_gets_keys_of_its_own(
    emitter: Emitter, redis_client: redis.Redis, prefix: str, names: tuple[str, str]
) -> None:
    one, two = names
    first = emitter.started(one, "change_ip", task_id="tâche/1")
    emitter.register(two, note="two")
    assert emitter.progress(one, 50).task_id == "tâche/1"
    assert emitter.state.subjects() == sorted(names)
    snapshot = emitter.state.snapshot(two)
    assert snapshot is not None
    assert (snapshot.seq, snapshot.metadata) == (0, {"note": "two"})
    assert [e.seq for e in emitter.state.history(one, 0) or []] == [1, 2]
    assert emitter.state.history(two, 0) == []
    assert emitter.state.running_task(one) == (first.task_id, "change_ip")
    emitter.completed(one)
    assert emitter.forget(one) is True
    assert emitter.state.subjects() == [two]
    assert emitter.forget(two) is True
    assert redis_client.keys(f"{prefix}:*") == [f"{prefix}:events"]


def test_sixteen_threads_keep_every_subject_seq_gap_free(store: RedisStateStore) -> None:
    emitter = Emitter(state=store, exclusive=False)
    subjects = ["aws01", "aws02", "aws03", "aws04"]
    per_thread = 100
    received: dict[str, list[TaskEvent]] = defaultdict(list)
    barrier = threading.Barrier(16)

    def work(index: int) -> None:
        subject = subjects[index % 4]
        barrier.wait()
        started = emitter.started(subject, "flood")
        for n in range(per_thread - 2):
            emitter.progress(subject, n % 101, task_id=started.task_id)
        emitter.completed(subject, index, task_id=started.task_id)

    def record(event: TaskEvent) -> None:
        received[event.subject].append(event)

    with CallableAdapter(record).connect(emitter):
        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    for subject in subjects:
        events = received[subject]
        assert [e.seq for e in events] == list(range(1, 4 * per_thread + 1))
        assert store.history(subject, 0) == events
        snapshot = store.snapshot(subject)
        assert snapshot is not None
        assert (snapshot.seq, snapshot.status) == (events[-1].seq, "idle")


# -- the same answers as MemoryStateStore ------------------------------------------------


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("returned", call())
    except TaskEventsError as exc:
        return ("raised", type(exc), str(exc))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_random_workload_gets_the_memory_store_s_answers(
    make_store: Callable[..., RedisStateStore], seed: int
) -> None:
    rng = random.Random(seed)
    memory = MemoryStateStore(history_size=12, history_bytes=3000)
    redis_store = make_store(history_size=12, history_bytes=3000)
    stores: list[StateStore] = [memory, redis_store]
    subjects = ["aws01", "aws:02", "データ"]
    task_ids: list[str] = []
    numbers = iter(range(1, 1_000_000))
    types = ["task_started"] * 3 + ["task_progress"] * 4
    types += ["task_completed"] * 2 + ["task_failed", "task_cancelled", "task_note"]

    def data_for(type_: str) -> dict[str, Any]:
        if type_ == "task_progress":
            return {"percent": rng.randint(0, 100), "message": "é" * rng.choice([0, 10, 400])}
        if type_ == "task_completed":
            return {"result": rng.choice([None, 1.5, 10**30, {"ip": "203.0.113.7"}, [1, "x"]])}
        if type_ == "task_failed":
            return {"error": {"type": "RuntimeError", "message": "refused"}}
        if type_ == "task_cancelled":
            return {"reason": rng.choice([None, "operator"])}
        return {"n": rng.random()}

    for _ in range(300):
        subject = rng.choice(subjects)
        action = rng.random()
        if action < 0.8:
            type_ = rng.choice(types)
            if type_ == "task_started":
                task_id = rng.choice(task_ids) if task_ids and rng.random() < 0.2 else None
                if task_id is None:
                    task_id = f"t{len(task_ids)}"
                    task_ids.append(task_id)
                task_type: str | None = rng.choice(["change_ip", "réboot"])
            else:
                task_id = rng.choice([None, None, None, *task_ids[-3:], "nope"])
                task_type = None
            args: tuple[Any, ...] = (
                type_,
                subject,
                task_id,
                task_type,
                data_for(type_),
                next(numbers),
                time.time(),
                "tests",
                rng.choice([-1, -1, 300]),
                rng.random() < 0.5,
            )
            results = [_outcome(partial(store.record, *args)) for store in stores]
            assert results[1] == results[0], args
            if results[0][0] == "returned":
                assert results[1][1].size == results[0][1].size
        elif action < 0.87:
            results = [_outcome(partial(store.forget, subject)) for store in stores]
            assert results[1] == results[0]
        elif action < 0.92:
            metadata = {rng.choice(["region", "owner"]): rng.choice(["eu", 7, [1]])}
            for store in stores:
                store.register(subject, metadata)
        else:
            # an event from elsewhere: a replay, or newer than anything here
            last = memory.last_seq(subject)
            seq = rng.choice([max(last, 1), last + 1, last + 3])
            type_ = rng.choice(["task_started", "task_progress", "task_completed"])
            task_id = (
                f"t{len(task_ids)}" if type_ == "task_started" else rng.choice(task_ids or ["x"])
            )
            task_ids.append(task_id)
            now = datetime.now(timezone.utc)
            data = data_for(type_)
            event = TaskEvent(
                f"e{seq}", type_, subject, task_id, "remote", seq, now, "elsewhere", data
            )
            assert redis_store.apply(event) == memory.apply(event)

        for name in subjects:
            assert redis_store.snapshot(name) == memory.snapshot(name)
        assert redis_store.subjects() == memory.subjects()
        assert redis_store.subject_count() == memory.subject_count()

    for name in subjects:
        last = memory.last_seq(name)
        assert redis_store.last_seq(name) == last
        for since in range(-1, last + 2):
            assert redis_store.history(name, since) == memory.history(name, since), since
        for task_id in [None, *task_ids]:
            assert redis_store.running_task(name, task_id) == memory.running_task(name, task_id)
    assert redis_store.snapshot_all() == memory.snapshot_all()


# -- failures -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_refused_connection_fails_at_once_with_store_unavailable() -> None:
    pytest.importorskip("redis")
    began = time.monotonic()
    with RedisStateStore(f"redis://127.0.0.1:{_free_port()}/0") as store:
        emitter = Emitter(state=store)
        calls: list[Callable[[], object]] = [
            lambda: emitter.started("aws01", "change_ip"),
            lambda: store.snapshot("aws01"),
            lambda: store.snapshot_all(),
            lambda: store.history("aws01", 0),
            lambda: store.subject_count(),
            lambda: store.expired(keep=1, idle_seconds=None),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable, match="unavailable") as caught:
                call()
            assert isinstance(caught.value, TaskEventsError)
    assert time.monotonic() - began < 2


def test_a_server_that_never_answers_fails_within_the_socket_timeout() -> None:
    pytest.importorskip("redis")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the backlog; nothing ever answers
        port = silent.getsockname()[1]
        url = f"redis://127.0.0.1:{port}/0"
        with RedisStateStore(url, socket_timeout=0.3, socket_connect_timeout=0.3) as store:
            began = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"(?i)timeout"):
                Emitter(state=store).started("aws01", "change_ip")
            assert time.monotonic() - began < 2


def test_importing_the_module_does_not_import_redis_and_a_missing_redis_says_what_to_install() -> (
    None
):
    code = (
        "import sys\n"
        "import taskevents.redis\n"
        "assert 'redis' not in sys.modules, 'imported at import time'\n"
        "sys.modules['redis'] = None\n"
        "from taskevents.exceptions import MissingDependency\n"
        "try:\n"
        "    taskevents.redis.RedisStateStore('redis://127.0.0.1:6379/0')\n"
        "except MissingDependency as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'taskevents[redis]'" in out.stdout
    assert issubclass(MissingDependency, TaskEventsError)


# -- across processes ---------------------------------------------------------------------


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.redis.emit_process", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )


def _open_barrier(client: redis.Redis, prefix: str, name: str, parties: int) -> None:
    deadline = time.monotonic() + 60
    while client.llen(f"{prefix}:ready{name}") < parties:
        assert time.monotonic() < deadline, f"the processes never reached barrier {name!r}"
        time.sleep(0.01)
    client.rpush(f"{prefix}:go{name}", *range(parties))


def _finish(processes: list[subprocess.Popen[str]]) -> list[list[dict[str, Any]]]:
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            outputs.append([json.loads(line) for line in out.splitlines()])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return outputs


def test_four_processes_keep_every_subject_seq_gap_free(
    redis_url: str, redis_client: redis.Redis, prefix: str, store: RedisStateStore
) -> None:
    processes_count, per_process = 4, 2_000
    subjects = ["aws01", "aws02", "aws03"]
    processes = [
        _start("flood", redis_url, prefix, str(n), str(per_process), *subjects)
        for n in range(processes_count)
    ]
    try:
        _open_barrier(redis_client, prefix, "", processes_count)
    finally:
        outputs = _finish(processes)

    assert [len(lines) for lines in outputs] == [per_process] * processes_count
    for subject in subjects:
        history = store.history(subject, 0)
        assert history is not None
        # every event of every process, numbered 1, 2, 3... with no gap and no repeat
        emitted = [line for lines in outputs for line in lines if line["subject"] == subject]
        assert [e.seq for e in history] == list(range(1, len(emitted) + 1))
        by_seq = {e.seq: e for e in history}
        for lines in outputs:
            mine = [line for line in lines if line["subject"] == subject]
            # what each process was told is what the history holds, in its order
            assert [by_seq[line["seq"]].id for line in mine] == [line["id"] for line in mine]
            assert [line["seq"] for line in mine] == sorted(line["seq"] for line in mine)
        assert {e.source for e in history} == {f"process-{n}" for n in range(processes_count)}
        # the final snapshot is what the last events made it
        snapshot = store.snapshot(subject)
        assert snapshot is not None
        assert (snapshot.seq, snapshot.status, snapshot.running) == (history[-1].seq, "idle", ())
        last_completed = [e for e in history if e.type == "task_completed"][-1]
        assert snapshot.last is not None
        assert snapshot.last.task_id == last_completed.task_id
        assert snapshot.last.ended_at == last_completed.time
        assert snapshot.last.result == last_completed.data["result"]
        last_started = next(e for e in history if e.task_id == last_completed.task_id)
        assert snapshot.last.started_at == last_started.time


def test_exactly_one_of_two_racing_processes_starts_the_task(
    redis_url: str, redis_client: redis.Redis, prefix: str, store: RedisStateStore
) -> None:
    rounds = 20
    processes = [_start("race", redis_url, prefix, str(n), str(rounds)) for n in range(2)]
    try:
        for round_ in range(rounds):
            _open_barrier(redis_client, prefix, f":{round_}", 2)
    finally:
        outputs = _finish(processes)

    for round_ in range(rounds):
        one, two = (lines[round_] for lines in outputs)
        assert [one["won"], two["won"]].count(True) == 1, (one, two)
        winner, loser = (one, two) if one["won"] else (two, one)
        assert loser["running"] == winner["task_id"]
        snapshot = store.snapshot(f"race-{round_}")
        assert snapshot is not None
        assert snapshot.seq == 1
        assert [task.task_id for task in snapshot.running] == [winner["task_id"]]


def test_more_threads_than_connections_wait_for_one_instead_of_failing(
    redis_url: str, prefix: str
) -> None:
    with RedisStateStore(redis_url, prefix=prefix, max_connections=2) as store:
        emitter = Emitter(source="tests", state=store)
        emitter.register("aws01")
        failures: list[BaseException] = []

        def read() -> None:
            try:
                for _ in range(20):
                    assert store.snapshot("aws01") is not None
            except BaseException as exc:  # collected, asserted below
                failures.append(exc)

        threads = [threading.Thread(target=read) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert failures == []


def test_max_connections_is_validated(redis_url: str) -> None:
    with pytest.raises(ValidationError, match="max_connections"):
        RedisStateStore(redis_url, max_connections=0)


def test_a_subject_written_by_something_else_is_left_out_not_fatal(
    emitter: Emitter, store: RedisStateStore, redis_client: redis.Redis, prefix: str
) -> None:
    emitter.register("good")
    emitter.register("bad")
    redis_client.hset(f"{prefix}:subject:bad", "running", "not json")
    redis_client.sadd(f"{prefix}:subjects", b"\xff\xfe")  # not UTF-8
    assert set(store.snapshot_all()) == {"good"}
    assert store.snapshot("bad") is None
    assert store.snapshot("good") is not None


def test_a_subject_key_of_another_type_is_left_out_not_an_outage(
    emitter: Emitter, store: RedisStateStore, redis_client: redis.Redis, prefix: str
) -> None:
    emitter.register("good")
    redis_client.sadd(f"{prefix}:subjects", "evil")
    redis_client.set(f"{prefix}:subject:evil", "not a hash")
    assert set(store.snapshot_all()) == {"good"}
    assert store.snapshot("evil") is None
