"""The asyncio Socket.IO adapter on a Redis-backed store: subscribe and get_all_tasks
work, and read the store in a worker thread, never on the server's event loop.

Needs a Redis server (``TASKEVENTS_TEST_REDIS_URL``, by default
``redis://127.0.0.1:6379/0``); without one the tests are skipped, and fail under
``CI=true`` (see tests/conftest.py)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from taskevents import Emitter, SubjectState, TaskEvent
from taskevents.adapters.socketio import merge_progress
from taskevents.redis import RedisStateStore
from tests.asgi.support import CLIENT_KINDS, SUBJECTS, AsgiServed, run_task, serving, subscribe
from tests.conftest import IN_CI

Serve = Callable[..., AsgiServed]

REDIS_URL = os.environ.get("TASKEVENTS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def asgi() -> Iterator[Serve]:
    yield from serving()


@pytest.fixture(params=CLIENT_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


class SpiedStore(RedisStateStore):
    """A RedisStateStore that notes which thread each read runs in, and can hold a read
    of :meth:`snapshot_all` (or of one subject's :meth:`snapshot`) until released."""

    def __init__(self, url: str, *, prefix: str) -> None:
        super().__init__(url, prefix=prefix)
        self.reads: list[tuple[str, int]] = []
        self.hold: str | None = None  # "snapshot_all", or a subject
        self.held = threading.Event()  # a read is being held
        self.release = threading.Event()

    def _note(self, name: str) -> None:
        self.reads.append((name, threading.get_ident()))
        if name == self.hold:
            self.held.set()
            self.release.wait(30)

    @property
    def stream_id(self) -> str:
        self._note("stream_id")
        return super().stream_id

    def snapshot(self, subject: str) -> SubjectState | None:
        self._note(subject)
        return super().snapshot(subject)

    def snapshot_all(self) -> dict[str, SubjectState]:
        self._note("snapshot_all")
        return super().snapshot_all()

    def history(self, subject: str, since_seq: int) -> list[TaskEvent] | None:
        self._note("history")
        return super().history(subject, since_seq)

    def subject_count(self) -> int:
        self._note("subject_count")
        return super().subject_count()

    def threads_of(self, *names: str) -> set[int]:
        return {ident for name, ident in self.reads if name in names}


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own on a live Redis server; its keys are deleted
    afterwards."""
    redis = pytest.importorskip("redis", reason="pip install 'taskevents[redis]'")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        try:
            client.ping()
        except redis.RedisError as exc:
            message = f"no Redis server answers at {REDIS_URL} ({exc})"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        prefix = f"taskevents-test-asgi-{uuid.uuid4().hex}"
        yield prefix
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def store(prefix: str) -> Iterator[SpiedStore]:
    store = SpiedStore(REDIS_URL, prefix=prefix)
    try:
        yield store
    finally:
        store.close()


def test_subscribe_get_all_tasks_and_resume_work_on_a_redis_store(
    asgi: Serve, store: SpiedStore, kind: str
) -> None:
    emitter = Emitter(source="tests", state=store)
    served = asgi(emitter=emitter)
    started = emitter.started("aws01", "change_ip")
    emitter.progress("aws01", 30, stage="execution")
    client = served.client(kind)
    greeting = client.next()[1]
    assert greeting["stream"] == store.stream_id  # the store's: shared by processes
    status = subscribe(client)
    assert status["seq"] == 2
    assert status["stream"] == store.stream_id
    assert status["status"]["status"] == "busy"
    assert status["status"]["current"]["task_id"] == started.task_id
    assert status["status"]["metadata"] == {"region": "eu-west-1"}
    done = emitter.completed("aws01", {"ip": "203.0.113.7"})
    update = client.wait_for("task_status_update")
    assert (update["seq"], update["update"]["event"]) == (done.seq, "task_completed")
    assert update["update"]["result"] == {"ip": "203.0.113.7"}

    client.emit("get_all_tasks")
    all_tasks = client.wait_for("all_tasks")
    assert sorted(all_tasks) == sorted(SUBJECTS)
    assert all_tasks["aws01"]["status"] == "idle"
    assert all_tasks["aws01"]["last"]["outcome"] == "completed"

    # resume, from the store's history
    client.close()
    missed = run_task(emitter, steps=2)
    again = served.client(kind)
    resumed = subscribe(again, since=done.seq, stream=greeting["stream"])
    assert resumed["resumed"] is True
    assert [(u["seq"], u["replayed"]) for u in again.updates()] == [
        (e.seq, True) for e in merge_progress(missed)
    ]

    # every read for these requests ran off the server's loop
    loop_thread = served.live.thread_id
    assert store.threads_of("aws01", "snapshot_all", "history")
    assert loop_thread not in store.threads_of("aws01", "snapshot_all", "history", "subject_count")


def test_a_slow_redis_read_holds_up_neither_the_loop_nor_other_clients(
    asgi: Serve, store: SpiedStore
) -> None:
    emitter = Emitter(source="tests", state=store)
    served = asgi(emitter=emitter)
    asking = served.client("AsyncClient")
    watching = served.client("Client")
    subscribe(watching, "aws02")
    for hold, request in (
        ("snapshot_all", ("get_all_tasks",)),
        ("aws03", ("subscribe_task", {"config_name": "aws03"})),
    ):
        store.hold, store.held, store.release = hold, threading.Event(), threading.Event()
        asking.emit(*request)
        try:
            assert store.held.wait(10), f"no read of {hold} came"
            # While that read waits in a worker thread, the loop serves everyone else:
            event = emitter.started("aws02", "change_ip")
            update = watching.wait_for("task_status_update")
            assert update["seq"] == event.seq
            assert served.live.call(lambda: served.adapter.client_count) == 2
            emitter.completed("aws02")
            watching.wait_for("task_status_update")
        finally:
            store.release.set()
        answer = "all_tasks" if hold == "snapshot_all" else "task_status"
        assert asking.wait_for(answer)
    assert served.live.thread_id not in store.threads_of("snapshot_all", "aws03")


def test_all_tasks_async_reads_a_redis_store_in_a_worker_thread(
    asgi: Serve, store: SpiedStore
) -> None:
    emitter = Emitter(source="tests", state=store)
    served = asgi(emitter=emitter)
    emitter.started("aws03", "reboot")
    answer: dict[str, Any] = served.live.run(served.adapter.all_tasks_async())
    assert sorted(answer) == sorted(SUBJECTS)
    assert answer["aws03"]["status"] == "busy"
    threads = store.threads_of("snapshot_all")
    assert threads
    assert served.live.thread_id not in threads


def test_a_connect_does_not_read_a_redis_store_on_the_loop(
    asgi: Serve, store: SpiedStore, kind: str
) -> None:
    emitter = Emitter(source="tests", state=store)
    served = asgi(emitter=emitter)
    store.reads.clear()
    client = served.client(kind)
    assert client.next()[0] == "connection_status"
    on_the_loop = [name for name, ident in store.reads if ident == served.live.thread_id]
    assert on_the_loop == []
