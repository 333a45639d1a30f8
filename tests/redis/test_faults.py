"""Faults: Redis restarted (with and without its data), paused, or a connection killed
with CLIENT KILL, while this process and another one emit. Nothing crashes, an emit
while Redis is away fails in bounded time with StoreUnavailable, the bridge logs one
warning per outage and one line when back, and catches up with what is still in the
stream: every event once, per subject in seq order.

The restart tests run a redis-server of their own on a free port (never the shared one);
the CLIENT KILL tests use the shared server with a key prefix of their own."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flask
import pytest
from flask_socketio import SocketIO

from taskevents import CallableAdapter, Emitter, TaskEvent, TaskEventsError, ValidationError
from taskevents.flask import TaskEvents
from taskevents.redis import RedisBridge, RedisStateStore, StoreUnavailable
from tests.conftest import IN_CI
from tests.support.socketio import Client, LiveServer, subscribe

if TYPE_CHECKING:
    import redis

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = os.environ.get("TASKEVENTS_TEST_REDIS_SERVER", "/usr/bin/redis-server")

#: The stores' socket timeouts here: short, so that the outages are short too.
TIMEOUT = 0.5
#: How much longer than its timeout a failing emit may take (generous: a shared machine).
SLACK = 2.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(condition: Callable[[], object], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or condition}")
        time.sleep(0.02)


# -- a redis-server of the test's own ---------------------------------------------------


class PrivateRedis:
    """A redis-server on a free 127.0.0.1 port with its files in ``folder``; stop() it
    with a signal and start() it again on the same port."""

    def __init__(self, folder: Path, *, persistent: bool) -> None:
        self.folder = folder
        self.port = free_port()
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        if not self.persistent:
            persistence = ["--appendonly", "no"]
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", *persistence, "--dir", str(self.folder),
             "--logfile", str(self.folder / "redis.log"), "--daemonize", "no"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            deadline = time.monotonic() + 15
            while True:
                assert self.process.poll() is None, self.log()
                try:
                    if client.ping():
                        return
                except redis.BusyLoadingError:
                    pass  # reading its append-only file
                except redis.ConnectionError:
                    pass
                assert time.monotonic() < deadline, self.log()
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., PrivateRedis]]:
    """``private_redis(persistent=...)``: a started redis-server of this test's own,
    stopped (and its files removed with tmp_path) afterwards."""
    pytest.importorskip("redis", reason="pip install 'taskevents[redis]'")
    if not (os.path.isfile(REDIS_SERVER) or shutil.which(REDIS_SERVER)):
        message = (
            f"no {REDIS_SERVER} to start a Redis server of the test's own "
            "(apt-get install redis-server, or set TASKEVENTS_TEST_REDIS_SERVER)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    made: list[PrivateRedis] = []

    def make(*, persistent: bool) -> PrivateRedis:
        folder = tmp_path / f"redis-{len(made)}"
        folder.mkdir()
        server = PrivateRedis(folder, persistent=persistent)
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        with contextlib.suppress(Exception):
            server.resume()  # a paused server would not hear SIGTERM
        server.stop(signal.SIGKILL)


# -- what this process receives ---------------------------------------------------------


class Recorder:
    """A remote adapter's function: records the events, and can hold the bridge (its
    thread) on the next one until released."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self.holding = threading.Event()  # set while the bridge is held in here

    def __call__(self, event: TaskEvent) -> None:
        if not self._open.is_set():
            self.holding.set()
            self._open.wait(30)
            self.holding.clear()
        with self._lock:
            self.events.append(event)

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def received(self) -> list[TaskEvent]:
        with self._lock:
            return list(self.events)


class Worker:
    """tests/redis/fault_process.py in a process of its own: another process emitting."""

    def __init__(self, folder: Path, url: str, prefix: str, *subjects: str, steps: int = 0) -> None:
        self.stop_file = folder / f"stop-{uuid.uuid4().hex}"
        self.log_path = folder / f"worker-{uuid.uuid4().hex}.log"
        self.err_path = self.log_path.with_suffix(".err")
        self._pauses = 0
        with self.log_path.open("wb") as out, self.err_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.redis.fault_process", url, prefix,
                 str(self.stop_file), "0.01", str(steps), *subjects],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, "PYTHONWARNINGS": "error", "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def lines(self) -> list[dict[str, Any]]:
        text = self.log_path.read_text()
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def recorded(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["ok"]]

    def failed(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if not line["ok"] and "paused" not in line]

    def pause(self) -> None:
        """Stop emitting (until resume()), once the emit under way is done."""
        Path(f"{self.stop_file}.pause").touch()
        wait_until(
            lambda: sum("paused" in line for line in self.lines()) > self._pauses,
            what="the worker pausing",
        )
        self._pauses += 1

    def resume(self) -> None:
        Path(f"{self.stop_file}.pause").unlink()

    def wait_recorded(self, count: int, timeout: float = 15.0) -> None:
        def enough() -> bool:
            assert self.process.poll() is None, self.err_path.read_text()
            return len(self.recorded()) >= count

        wait_until(enough, timeout, f"the worker recording {count} events")

    def finish(self, timeout: float = 40.0) -> int:
        self.stop_file.touch()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for worker in made:
        worker.kill()


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Stores, bridges and adapters to close after the test, last made first."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        with contextlib.suppress(Exception):
            if isinstance(thing, CallableAdapter):
                thing.disconnect()
            else:
                thing.close()


def history(client: redis.Redis, prefix: str, subject: str) -> list[tuple[int, str]]:
    """(seq, event id) of what the server keeps of ``subject``, oldest first."""
    entries: Any = client.xrange(f"{prefix}:history:{subject}")
    return [(int(entry_id.partition("-")[0]), fields["i"]) for entry_id, fields in entries]


def bridge_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "taskevents" and "RedisBridge" in r.getMessage()
    ]


def wait_for_outage(worker: Worker, caplog: pytest.LogCaptureFixture) -> None:
    """Until the worker has failed to emit and this process's bridge has warned."""
    wait_until(lambda: worker.failed(), what="the worker failing to emit")
    wait_until(
        lambda: any(level == logging.WARNING for level, _ in bridge_lines(caplog)),
        what="the bridge's warning",
    )


def setup_here(
    url: str, prefix: str, closing: list[Any], **options: Any
) -> tuple[RedisStateStore, Emitter, Recorder, RedisBridge]:
    """This process: a store, an emitter, a remote adapter recording, a bridge."""
    store = RedisStateStore(
        url,
        prefix=prefix,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        **options,
    )
    closing.append(store)
    emitter = Emitter(source="here", state=store)
    got = Recorder()
    closing.append(CallableAdapter(got, remote=True).connect(emitter))
    bridge = RedisBridge(store, block_ms=200)
    bridge.retry_max = 0.5  # back soon after the server is
    closing.append(bridge.start())
    return store, emitter, got, bridge


def assert_once_in_seq_order(
    received: list[TaskEvent], kept: dict[str, list[tuple[int, str]]]
) -> None:
    """Every event ``kept`` (per subject: (seq, id)) was received once, in seq order, and
    nothing else."""
    by_subject: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for event in received:
        by_subject[event.subject].append((event.seq, event.id))
    duplicates = [i for i, n in Counter(e.id for e in received).items() if n > 1]
    assert duplicates == []
    assert dict(by_subject) == kept


# -- a restart ----------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_redis_restart_mid_stream_loses_nothing_it_kept(
    private_redis: Callable[..., PrivateRedis],
    workers: list[Worker],
    closing: list[Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    signum: int,
) -> None:
    import redis

    server = private_redis(persistent=True)
    prefix = "faults"
    caplog.set_level(logging.INFO, logger="taskevents")
    _, emitter, got, bridge = setup_here(server.url, prefix, closing)
    query = f"?socket_timeout={TIMEOUT}&socket_connect_timeout={TIMEOUT}"
    worker = Worker(tmp_path, server.url + query, prefix, "w1", "w2")
    workers.append(worker)
    mine = [emitter.started("here", "change_ip")]

    wait_until(lambda: len(got.received()) >= 20, what="20 of the worker's events here")
    # Hold the bridge on an event, so that the worker's next ones are in the stream but
    # not read when the server goes: they must be caught up after the restart.
    got.hold()
    wait_until(got.holding.is_set, what="the bridge held")
    held_at = len(worker.recorded())
    worker.wait_recorded(held_at + 10)
    server.stop(signum)
    stopped_at = len(worker.recorded())

    began = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        emitter.progress("here", 50)
    assert time.monotonic() - began < TIMEOUT + SLACK
    assert isinstance(caught.value, TaskEventsError)
    assert "unavailable" in str(caught.value)
    got.release()
    wait_for_outage(worker, caplog)

    server.start()
    mine.append(emitter.progress("here", 60))  # this process emits again at once
    worker.wait_recorded(stopped_at + 20, timeout=20)
    assert worker.finish() == 0, worker.err_path.read_text()
    mine.append(emitter.completed("here"))

    client = redis.Redis(port=server.port, decode_responses=True)
    closing.append(client)
    kept = {subject: history(client, prefix, subject) for subject in ("w1", "w2")}
    # Seqs go on from before the restart, gap-free, and nothing acknowledged was lost.
    for subject, entries in kept.items():
        assert [seq for seq, _ in entries] == list(range(1, len(entries) + 1)), subject
    kept_ids = {event_id for entries in kept.values() for _, event_id in entries}
    assert {line["id"] for line in worker.recorded()} <= kept_ids
    assert [seq for seq, _ in history(client, prefix, "here")] == [1, 2, 3]
    assert [e.seq for e in mine] == [1, 2, 3]

    # The bridge brought every one of the worker's events here once, in seq order: those
    # it had not read when the server went, and those recorded after the restart.
    total = sum(len(entries) for entries in kept.values())
    wait_until(lambda: len(got.received()) >= total + len(mine), what=f"{total} events here")
    received = got.received()
    assert_once_in_seq_order(
        [e for e in received if e.source != "here"], kept
    )  # the worker's, through the bridge
    assert [e.id for e in received if e.source == "here"] == [e.id for e in mine]

    # Every failed emit of the worker failed in bounded time, with the setting's timeout.
    failures = worker.failed()
    assert failures
    assert all(line["elapsed"] < TIMEOUT + SLACK for line in failures), failures
    assert not any(line.get("lost") for line in failures)  # the server kept its data

    lines = bridge_lines(caplog)
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO], lines
    assert "reconnecting" in lines[0][1]
    assert "reconnected" in lines[1][1]
    assert bridge.running


def test_a_redis_restart_without_its_data(
    private_redis: Callable[..., PrivateRedis],
    workers: list[Worker],
    closing: list[Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What happens when the server comes back empty (no persistence): the subjects and
    their seqs are gone; emitters start again at seq 1 (a task that was running is not
    known any more: NoRunningTask), and the bridge goes on reading the new stream (entry
    ids are times, later than its position), so the events recorded from then on still
    reach this process, once each."""
    import redis

    server = private_redis(persistent=False)
    prefix = "faults"
    caplog.set_level(logging.INFO, logger="taskevents")
    store, emitter, got, _ = setup_here(server.url, prefix, closing)
    query = f"?socket_timeout={TIMEOUT}&socket_connect_timeout={TIMEOUT}"
    worker = Worker(tmp_path, server.url + query, prefix, "w1")
    workers.append(worker)
    emitter.started("here", "change_ip")
    wait_until(lambda: len(got.received()) >= 10, what="10 of the worker's events here")
    got.hold()
    wait_until(got.holding.is_set, what="the bridge held")
    worker.wait_recorded(len(worker.recorded()) + 10)
    server.stop(signal.SIGKILL)
    before = worker.recorded()
    got.release()
    wait_for_outage(worker, caplog)

    server.start()
    # The worker's task is gone with the data: it finds none running, and starts again
    # at seq 1 (fault_process.py asks running_task after a failed emit)...
    wait_until(
        lambda: (
            [line["seq"] for line in worker.recorded() if line["type"] == "task_started"] == [1, 1]
        ),
        what="the worker's task started again",
    )
    from taskevents import NoRunningTask

    with pytest.raises(NoRunningTask):
        emitter.progress("here", 10)
    # ...and so does this process's: its progress is refused (NoRunningTask), and a new
    # task starts the subject's seqs again.
    again = emitter.started("here", "change_ip")
    assert again.seq == 1
    assert store.last_seq("here") == 1
    count_after = len(worker.recorded())
    worker.wait_recorded(count_after + 20, timeout=20)
    assert worker.finish() == 0, worker.err_path.read_text()

    client = redis.Redis(port=server.port, decode_responses=True)
    closing.append(client)
    kept = history(client, prefix, "w1")
    assert [seq for seq, _ in kept] == list(range(1, len(kept) + 1))
    # What was recorded after the restart is all there is, and it reached this process.
    after_ids = [event_id for _, event_id in kept]
    wait_until(
        lambda: {e.id for e in got.received()} >= set(after_ids),
        what="the events recorded after the restart, here",
    )
    received = [e for e in got.received() if e.source != "here"]
    assert [i for i, n in Counter(e.id for e in received).items() if n > 1] == []
    new = [e for e in received if e.id in set(after_ids)]
    assert [(e.seq, e.id) for e in new] == kept
    # Before the restart: the events recorded and acknowledged, up to where the bridge
    # had read; those it had not read were lost with the server's memory.
    old = [e for e in received if e.id not in set(after_ids)]
    assert [e.seq for e in old] == list(range(1, len(old) + 1))
    assert {line["id"] for line in before} >= {e.id for e in old}

    lines = bridge_lines(caplog)
    assert sum("lost the Redis server" in text for _, text in lines) == 1, lines
    assert sum("reconnected" in text for _, text in lines) == 1, lines
    # The events that no bridge had read were lost with the server, and it says so.
    assert sum("missed events" in text for _, text in lines) == 1, lines
    assert len(lines) == 3, lines


def test_a_restart_without_data_is_reported(
    private_redis: Callable[..., PrivateRedis],
    closing: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = private_redis(persistent=False)
    prefix = "faults"
    caplog.set_level(logging.INFO, logger="taskevents")
    _, _, got, _ = setup_here(server.url, prefix, closing)
    other = RedisStateStore(server.url, prefix=prefix)
    closing.append(other)
    emitter = Emitter(source="other", state=other)
    emitter.started("s", "change_ip")
    wait_until(lambda: len(got.received()) == 1, what="the first event here")
    got.hold()
    emitter.progress("s", 10)
    wait_until(got.holding.is_set, what="the bridge held")
    emitter.progress("s", 20)  # in the stream, not read
    server.stop(signal.SIGKILL)
    got.release()
    wait_until(lambda: bridge_lines(caplog), what="the bridge's warning")
    server.start()
    wait_until(
        lambda: any("reconnected" in text for _, text in bridge_lines(caplog)),
        what="the bridge back",
    )
    assert any("missed events" in text for _, text in bridge_lines(caplog)), bridge_lines(caplog)


# -- a server that does not answer ------------------------------------------------------


def test_an_emit_to_a_server_that_does_not_answer_fails_within_the_timeout(
    private_redis: Callable[..., PrivateRedis],
    closing: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGSTOP: connections stay open, nothing answers. An emit raises StoreUnavailable
    once socket_timeout has passed (it does not hang); the bridge notices, logs once, and
    is back when the server is."""
    import redis

    server = private_redis(persistent=True)
    prefix = "faults"
    caplog.set_level(logging.INFO, logger="taskevents")
    _, emitter, got, _ = setup_here(server.url, prefix, closing)
    other = RedisStateStore(server.url, prefix=prefix)
    closing.append(other)
    there = Emitter(source="other", state=other)
    there.started("s", "change_ip")
    emitter.started("here", "change_ip")
    wait_until(lambda: len(got.received()) == 2, what="two events here")

    server.pause()
    try:
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            emitter.progress("here", 50)
        elapsed = time.monotonic() - began
        assert TIMEOUT * 0.8 <= elapsed < TIMEOUT + SLACK, elapsed  # waited, then gave up
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            emitter.progress("here", 51)  # a new connection: the connect timeout, then
        assert time.monotonic() - began < 2 * TIMEOUT + SLACK
        wait_until(
            lambda: any(level == logging.WARNING for level, _ in bridge_lines(caplog)),
            what="the bridge's warning",
        )
    finally:
        server.resume()
    done = [there.progress("s", 70), there.completed("s")]
    mine = emitter.completed("here")
    wait_until(lambda: {e.id for e in done} <= {e.id for e in got.received()}, what="resumed")

    # "May or may not have been recorded": the emits that timed out were sent, and the
    # server, once resumed, ran them. Their seqs are taken: the history has no gap.
    client = redis.Redis(port=server.port, decode_responses=True)
    closing.append(client)
    kept = history(client, prefix, "here")
    assert [seq for seq, _ in kept] == list(range(1, len(kept) + 1))
    assert kept[-1][1] == mine.id
    assert len(kept) in (2, 3, 4), kept  # started, 0 to 2 of the timed-out, completed

    lines = bridge_lines(caplog)
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO], lines
    received = [e for e in got.received() if e.source == "other"]
    assert [e.seq for e in received] == [1, 2, 3]


# -- CLIENT KILL on the shared server -----------------------------------------------------


def connection_ids(client: redis.Redis, store: RedisStateStore) -> list[str]:
    """The server's ids of ``store``'s open connections, found by their name."""
    return ids_named(client, store.client_name)


def ids_named(client: redis.Redis, name: str) -> list[str]:
    return [str(c["id"]) for c in client.client_list() if c["name"] == name]


def wait_blocked(client: redis.Redis, bridge: RedisBridge) -> str:
    """The id of the bridge's connection, once it waits in XREAD on the server."""
    found: list[str] = []

    def blocked() -> bool:
        found[:] = [
            str(c["id"])
            for c in client.client_list()
            if c["name"] == bridge.client_name and "b" in c["flags"] and c["cmd"] == "xread"
        ]
        return bool(found)

    wait_until(blocked, what="the bridge waiting in XREAD")
    return found[0]


def test_client_kill_of_every_connection_mid_stream(
    redis_url: str,
    prefix: str,
    redis_client: redis.Redis,
    workers: list[Worker],
    closing: list[Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="taskevents")
    store, emitter, got, bridge = setup_here(redis_url, prefix, closing)
    worker_name = f"taskevents-test-worker-{uuid.uuid4().hex}"
    worker = Worker(tmp_path, f"{redis_url}?client_name={worker_name}", prefix, "w1", "w2")
    workers.append(worker)
    mine = [emitter.started("here", "change_ip")]
    wait_until(lambda: len(got.received()) >= 20, what="20 of the worker's events here")

    # The worker paused and every event of it here, the bridge waits in XREAD: each of
    # the three connections is killed where it is most likely to be.
    worker.pause()
    wait_until(
        lambda: len(got.received()) == len(worker.recorded()) + len(mine),
        what="the bridge caught up",
    )
    victims = {
        "bridge": [wait_blocked(redis_client, bridge)],
        "store": connection_ids(redis_client, store),
        "worker": ids_named(redis_client, worker_name),
    }
    assert all(len(ids) == 1 for ids in victims.values()), victims
    recorded_before = len(worker.recorded())
    for ids in victims.values():
        assert redis_client.client_kill_filter(_id=ids[0], _type="normal") == 1
    worker.resume()

    # redis-py finds the idle connection closed and opens another: the next emit works.
    mine.append(emitter.progress("here", 50))
    worker.wait_recorded(recorded_before + 20)
    assert worker.finish() == 0, worker.err_path.read_text()
    mine.append(emitter.completed("here"))
    # The worker's connection was idle between two emits: none failed (if one had been
    # in flight, it alone would have raised StoreUnavailable, and been tried again).
    assert len(worker.failed()) <= 1, worker.failed()
    assert ids_named(redis_client, worker_name) == []  # it closed its connection

    kept = {subject: history(redis_client, prefix, subject) for subject in ("w1", "w2")}
    for subject, entries in kept.items():
        assert [seq for seq, _ in entries] == list(range(1, len(entries) + 1)), subject
    total = sum(len(entries) for entries in kept.values())
    wait_until(lambda: len(got.received()) >= total + len(mine), what=f"{total} events here")
    received = got.received()
    assert_once_in_seq_order([e for e in received if e.source != "here"], kept)
    assert [e.id for e in received if e.source == "here"] == [e.id for e in mine]

    lines = bridge_lines(caplog)
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO], lines
    assert len(ids_named(redis_client, bridge.client_name)) == 1  # back, on one connection


# -- a web process cut off ---------------------------------------------------------------


@pytest.fixture
def apps() -> Iterator[list[flask.Flask]]:
    made: list[flask.Flask] = []
    yield made
    for app in made:
        if "taskevents" in app.extensions:
            TaskEvents.state(app).close()


def redis_app(apps: list[flask.Flask], url: str, prefix: str, **config: Any) -> flask.Flask:
    app = flask.Flask("taskevents-faults-test")
    settings = {
        "subjects": ["aws01"],
        "progress_interval": 0,
        "redis_url": url,
        "redis_prefix": prefix,
        **config,
    }
    app.config.update({f"TASKEVENTS_{key.upper()}": value for key, value in settings.items()})
    apps.append(app)
    return app


def test_a_web_process_cut_off_catches_up_for_its_clients(
    redis_url: str,
    prefix: str,
    redis_client: redis.Redis,
    apps: list[flask.Flask],
    workers: list[Worker],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="taskevents")
    app = redis_app(apps, redis_url, prefix)
    TaskEvents(app, SocketIO(app, async_mode="threading"))
    bridge = TaskEvents.state(app).bridge
    assert bridge is not None
    server = LiveServer(app)
    client = Client()
    try:
        client.connect(server.url)
        snapshot = subscribe(client)
        assert snapshot["seq"] == 0
        worker = Worker(tmp_path, redis_url, prefix, "aws01", steps=2)
        workers.append(worker)
        worker.wait_recorded(10)
        # Cut the web process's bridge off three times, while the worker goes on.
        for _ in range(3):
            recorded = len(worker.recorded())
            redis_client.client_kill_filter(_id=wait_blocked(redis_client, bridge))
            worker.wait_recorded(recorded + 15)
        assert worker.finish() == 0, worker.err_path.read_text()
        last = max(line["seq"] for line in worker.recorded())
        client.wait_for(
            "task_status_update",
            lambda p: p["update"]["event"] == "task_completed",
            timeout=15,
        )
        client.drain(0.2)
    finally:
        client.close()
        server.stop()
    updates = client.updates()
    seqs = [update["seq"] for update in updates]
    assert seqs == sorted(set(seqs)), seqs  # in order, none twice
    assert seqs[-1] == last
    # Every task's start and end reached the client; of the progress in between, the
    # Socket.IO adapter sends the latest it has (it coalesces progress, by design).
    entries: Any = redis_client.xrange(f"{prefix}:history:aws01")
    kept = {
        fields["i"]: (int(entry_id.partition("-")[0]), fields["y"]) for entry_id, fields in entries
    }
    assert [seq for seq, _ in kept.values()] == list(range(1, last + 1))
    lifecycle = [seq for seq, type_ in kept.values() if type_ != "task_progress"]
    assert [seq for seq in seqs if seq in set(lifecycle)] == lifecycle
    assert len(lifecycle) >= 2 * 10
    for update in updates:
        assert kept[update["event_id"]][0] == update["seq"]
    # One warning and one line back per outage. (A connection killed just as the bridge
    # was between two reads is found closed by redis-py, which opens another: no outage.)
    lines = bridge_lines(caplog)
    assert 1 <= len(lines) // 2 <= 3, lines
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO] * (len(lines) // 2)


# -- start-up with a bad URL ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1:6379/0?socket_timeout=soon",
        "localhost:6379",
    ],
)
def test_a_malformed_redis_url_is_named_at_init(
    apps: list[flask.Flask], url: str, prefix: str
) -> None:
    app = redis_app(apps, url, prefix)
    with pytest.raises(ValidationError) as caught:
        TaskEvents(app, SocketIO(app, async_mode="threading"))
    assert caught.value.field == "TASKEVENTS_REDIS_URL"
    assert "taskevents" not in app.extensions


def test_a_redis_url_whose_path_is_no_database_number_is_named_at_init(
    apps: list[flask.Flask], prefix: str
) -> None:
    app = redis_app(apps, "redis://127.0.0.1:6379/notadb", prefix)
    with pytest.raises(ValidationError) as caught:
        TaskEvents(app, SocketIO(app, async_mode="threading"))
    assert caught.value.field == "TASKEVENTS_REDIS_URL"


def test_a_redis_url_where_no_server_answers_stops_start_up_with_subjects(
    apps: list[flask.Flask], prefix: str
) -> None:
    """The app does not start: the error is StoreUnavailable, which names the setting
    and the server, and nothing is left running (no bridge)."""
    url = f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=0.5"
    app = redis_app(apps, url, prefix)
    before = {t for t in threading.enumerate() if t.name == "taskevents-redis-bridge"}
    began = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        TaskEvents(app, SocketIO(app, async_mode="threading"))
    assert time.monotonic() - began < 0.5 + SLACK
    assert str(caught.value).startswith("TASKEVENTS_REDIS_URL: ")
    assert "127.0.0.1" in str(caught.value)
    assert "taskevents" not in app.extensions
    after = {t for t in threading.enumerate() if t.name == "taskevents-redis-bridge"}
    assert after == before


def test_a_redis_url_where_no_server_answers_stops_start_up_without_subjects(
    apps: list[flask.Flask], prefix: str
) -> None:
    """Nothing to register: the extension still checks the server at start-up."""
    url = f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=0.5"
    app = redis_app(apps, url, prefix, subjects=[])
    with pytest.raises(StoreUnavailable) as caught:
        TaskEvents(app, SocketIO(app, async_mode="threading"))
    assert str(caught.value).startswith("TASKEVENTS_REDIS_URL: ")
    assert "taskevents" not in app.extensions


def test_reads_while_redis_is_away_are_answered_as_unavailable(
    private_redis: Callable[..., PrivateRedis],
    apps: list[flask.Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The REST endpoints answer 503 with Retry-After, a Socket.IO request gets an
    ``error`` saying to try again; neither shows the server's address; the server goes
    on serving, and once Redis is back, so do they."""
    server = private_redis(persistent=True)
    url = f"{server.url}?socket_timeout=0.5&socket_connect_timeout=0.5"
    app = redis_app(apps, url, "faults")
    TaskEvents(app, SocketIO(app, async_mode="threading"))
    live = LiveServer(app)
    client = Client().connect(live.url)
    try:
        assert subscribe(client)["seq"] == 0
        server.stop(signal.SIGKILL)
        response = app.test_client().get("/api/tasks/aws01")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        body = response.get_data(as_text=True)
        assert "unavailable" in body
        assert "127.0.0.1" not in body
        client.emit("subscribe_task", {"config_name": "aws01"})
        error = client.wait_for("error", timeout=10)
        assert error["event"] == "subscribe_task"
        assert error["retry_after"] == 1.0
        assert "127.0.0.1" not in error["message"]
        server.start()
        wait_until(
            lambda: app.test_client().get("/api/tasks/aws01").status_code == 200,
            what="the REST endpoint back",
        )
        client.emit("subscribe_task", {"config_name": "aws01"})
        assert client.wait_for("task_status", timeout=10)["config_name"] == "aws01"
    finally:
        client.close()
        live.stop()


def test_a_crowd_of_reads_while_redis_does_not_answer_fails_within_one_timeout(
    private_redis: Callable[..., PrivateRedis], apps: list[flask.Flask]
) -> None:
    """get_all_tasks requests that wait for one read of the store share its failure:
    none waits for a timeout per request before it."""
    server = private_redis(persistent=False)
    url = f"{server.url}?socket_timeout=0.5&socket_connect_timeout=0.5"
    app = redis_app(apps, url, "faults")
    TaskEvents(app, SocketIO(app, async_mode="threading"))
    adapter = TaskEvents.state(app).socketio_adapter
    assert adapter is not None
    assert set(adapter.all_tasks()) == {"aws01"}
    server.pause()  # accepts, never answers
    try:
        took: list[float] = []
        failed: list[bool] = []

        def ask() -> None:
            began = time.monotonic()
            try:
                adapter.all_tasks()
            except StoreUnavailable:
                failed.append(True)
            took.append(time.monotonic() - began)

        threads = [threading.Thread(target=ask) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(failed) == 12
        # Twelve reads one after another would take 6 s; shared, about one timeout
        # (two at most: one under way when the first came, one after).
        assert max(took) < 2 * 0.5 + SLACK, took
    finally:
        server.resume()
