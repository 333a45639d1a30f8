"""Socket.IO clients across web processes on one Redis prefix: a shared stream id (so a
client resumes on whichever process it reconnects to), updates in seq order when this
process's own events and the bridged ones interleave, and ``forget`` heard everywhere.

Each Flask app here has its own store, bridge and origin on the test's prefix, as a web
process would; ``other`` is a worker's emitter. (Real processes: see
``tests/test_multiprocess_example.py`` and ``tests/redis/test_demo_redis.py``.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flask
import pytest
from flask_socketio import SocketIO

from taskevents import Emitter
from taskevents.flask import TaskEvents
from taskevents.redis import RedisStateStore
from taskevents.signals import REMOTE, SIGNALS
from tests.sockets.test_js_client import NODE_MODULES, ROOT, node  # noqa: F401  (fixture)
from tests.support.socketio import Client, LiveServer, subscribe

if TYPE_CHECKING:
    import redis

RESUME_SCRIPT = ROOT / "tests" / "js" / "resume_client.mjs"


@pytest.fixture
def other(redis_url: str, prefix: str) -> Iterator[Emitter]:
    """A worker's emitter on the same prefix."""
    with RedisStateStore(redis_url, prefix=prefix) as store:
        yield Emitter(source="worker", state=store, exclusive=False)


@pytest.fixture
def web(redis_url: str, prefix: str) -> Iterator[Callable[[], tuple[LiveServer, flask.Flask]]]:
    """``web()``: one more web process (a Flask app with the extension on the prefix)."""
    made: list[tuple[LiveServer, flask.Flask]] = []

    def start() -> tuple[LiveServer, flask.Flask]:
        app = flask.Flask("taskevents-cross-process")
        app.config.update(
            TASKEVENTS_SUBJECTS=["aws01", "aws02"],
            TASKEVENTS_PROGRESS_INTERVAL=0,
            TASKEVENTS_REDIS_URL=redis_url,
            TASKEVENTS_REDIS_PREFIX=prefix,
        )
        TaskEvents(app, SocketIO(app, async_mode="threading"))
        server = LiveServer(app)
        made.append((server, app))
        return server, app

    yield start
    for server, app in made:
        TaskEvents.state(app).close()
        server.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def connect(clients: list[Client], server: LiveServer) -> tuple[Client, dict[str, Any]]:
    client = Client().connect(server.url)
    clients.append(client)
    return client, client.wait_for("connection_status")


def seqs_until(client: Client, last: int, subject: str = "aws01") -> list[int]:
    """The seqs of ``subject``'s updates up to ``last``, in the order they came."""
    got: list[int] = []
    while not got or got[-1] < last:
        update = client.wait_for("task_status_update", lambda p: p["config_name"] == subject)
        got.append(update["seq"])
    return got


# -- the stream id --------------------------------------------------------------------


def test_stores_on_one_prefix_share_a_stream_id_and_a_lost_prefix_gets_a_new_one(
    redis_url: str, prefix: str, redis_client: redis.Redis
) -> None:
    with (
        RedisStateStore(redis_url, prefix=prefix) as one,
        RedisStateStore(redis_url, prefix=prefix) as two,
        RedisStateStore(redis_url, prefix=f"{prefix}-elsewhere") as elsewhere,
    ):
        stream = one.stream_id
        assert stream == two.stream_id == one.stream_id
        assert elsewhere.stream_id != stream
        redis_client.delete(f"{prefix}-elsewhere:stream")
        # The server lost the keys (a flush, a restart without persistence): seqs start
        # again, so the id changes and old seqs no longer resume.
        redis_client.delete(f"{prefix}:stream")
        renewed = two.stream_id
        assert renewed != stream
        assert one.stream_id == renewed


def test_the_stream_id_never_raises_when_the_server_is_unreachable() -> None:
    with RedisStateStore(
        "redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2
    ) as store:
        first = store.stream_id
        assert isinstance(first, str)
        assert first
        assert store.stream_id == first


def test_connection_status_carries_the_shared_stream_id(
    web: Callable[[], tuple[LiveServer, flask.Flask]], clients: list[Client]
) -> None:
    (a, app_a), (b, _) = web(), web()
    _, greeting_a = connect(clients, a)
    _, greeting_b = connect(clients, b)
    store = TaskEvents.state(app_a).emitter.state
    assert isinstance(store, RedisStateStore)
    assert greeting_a["stream"] == greeting_b["stream"] == store.stream_id


# -- resume on the other process ------------------------------------------------------


def test_a_python_client_resumes_on_the_other_process_without_a_gap(
    web: Callable[[], tuple[LiveServer, flask.Flask]], other: Emitter, clients: list[Client]
) -> None:
    (a, _), (b, _) = web(), web()
    client, greeting = connect(clients, a)
    assert subscribe(client)["seq"] == 0
    started = other.started("aws01", "change_ip", task_id="t1")
    other.progress("aws01", 10, task_id="t1")
    assert seqs_until(client, 2) == [1, 2]
    client.close()

    # Missed while the client was away, and some after it resumed elsewhere.
    missed = [other.progress("aws01", n, task_id="t1").seq for n in (20, 30, 40)]
    client, _ = connect(clients, b)
    client.emit(
        "subscribe_task", {"config_name": "aws01", "since": 2, "stream": greeting["stream"]}
    )
    replayed = client.wait_for("task_status_update")
    snapshot = client.wait_for("task_status")
    assert snapshot.get("resumed") is True
    assert "resync" not in snapshot
    assert snapshot["seq"] == missed[-1]
    # Progress replayed is merged to its latest (the protocol's rule).
    assert replayed["replayed"] is True
    assert replayed["seq"] == missed[-1]
    completed = other.completed("aws01", {"ip": "203.0.113.9"}, task_id=started.task_id)
    live = client.wait_for("task_status_update")
    assert live["seq"] == completed.seq == missed[-1] + 1
    assert "replayed" not in live


def test_a_seq_of_another_stream_is_answered_with_a_fresh_snapshot(
    web: Callable[[], tuple[LiveServer, flask.Flask]], other: Emitter, clients: list[Client]
) -> None:
    (a, _) = web()
    other.started("aws01", "change_ip", task_id="t1")
    client, _ = connect(clients, a)
    client.emit("subscribe_task", {"config_name": "aws01", "since": 0, "stream": "0123abcd"})
    snapshot = client.wait_for("task_status")
    assert snapshot["resync"] is True
    assert snapshot["seq"] == 1


def test_the_js_client_resumes_on_the_other_process_without_a_gap(
    web: Callable[[], tuple[LiveServer, flask.Flask]],
    other: Emitter,
    node: str,  # noqa: F811
) -> None:
    (a, _), (b, _) = web(), web()
    script = subprocess.Popen(
        [node, str(RESUME_SCRIPT), a.url, b.url, "aws01"],
        cwd=ROOT,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert script.stdin is not None
    assert script.stdout is not None

    def step(command: dict[str, Any]) -> dict[str, Any]:
        assert script.stdin is not None
        assert script.stdout is not None
        script.stdin.write(json.dumps(command) + "\n")
        script.stdin.flush()
        line = script.stdout.readline()
        assert line, f"the client quit: {script.stderr.read() if script.stderr else ''}"
        answer: dict[str, Any] = json.loads(line)
        assert answer.get("ok") is not False, answer
        return answer

    try:
        subscribed = step({"cmd": "subscribe"})
        assert subscribed["seq"] == 0
        started = other.started("aws01", "change_ip", task_id="t1")
        other.progress("aws01", 10, task_id="t1")
        assert step({"cmd": "until", "seq": 2})["seqs"] == [1, 2]
        step({"cmd": "leave"})
        for n in (20, 30, 40):
            other.progress("aws01", n, task_id="t1")
        resumed = step({"cmd": "resume", "since": 2})
        assert resumed["snapshot"]["resumed"] is True
        assert "resync" not in resumed["snapshot"]
        assert resumed["snapshot"]["seq"] == 5
        assert [u["seq"] for u in resumed["replayed"]] == [5]
        other.completed("aws01", {"ip": "203.0.113.9"}, task_id=started.task_id)
        live = step({"cmd": "until", "seq": 6})
        assert live["seqs"] == [6]
        assert live["stream"] == subscribed["stream"]
    finally:
        if script.stdin is not None:
            script.stdin.close()
        try:
            script.wait(10)
        except subprocess.TimeoutExpired:
            script.kill()
            script.wait()
        for pipe in (script.stdout, script.stderr):
            if pipe is not None:
                pipe.close()


# -- order ----------------------------------------------------------------------------


def test_own_events_never_overtake_an_earlier_one_of_another_process(
    web: Callable[[], tuple[LiveServer, flask.Flask]], other: Emitter, clients: list[Client]
) -> None:
    # The bridge is stopped so that the other process's events arrive only when the test
    # hands them over, after this process's own later ones: the worst case of the race
    # between an own emit and the bridge.
    (a, app) = web()
    state = TaskEvents.state(app)
    assert state.bridge is not None
    state.bridge.close()
    mine = state.emitter
    client, _ = connect(clients, a)
    subscribe(client)

    def bridged(event: Any) -> None:
        SIGNALS[event.type].send(REMOTE, event=event)

    first = other.started("aws01", "change_ip", task_id="w1")
    bridged(first)
    late = [other.started("aws01", "change_ip", task_id=f"w{n}") for n in (2, 3)]
    own = mine.started("aws01", "change_ip", task_id="m1", exclusive=False)
    for event in late:  # arriving after the own event that followed them
        bridged(event)
    last = other.completed("aws01", {}, task_id="w1")
    bridged(last)
    seqs = seqs_until(client, last.seq)
    assert seqs == [first.seq, *(e.seq for e in late), own.seq, last.seq] == [1, 2, 3, 4, 5]
    assert client.drain(0.3) == []


def test_interleaved_emits_of_two_processes_reach_a_client_in_seq_order(
    web: Callable[[], tuple[LiveServer, flask.Flask]],
    clients: list[Client],
    redis_url: str,
    prefix: str,
) -> None:
    (a, app) = web()
    mine = TaskEvents.state(app).emitter
    client, _ = connect(clients, a)
    subscribe(client, "aws02")
    count = 150  # tasks of each process: started and completed, never coalesced
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.redis.emit_process",
            "lifecycle",
            redis_url,
            prefix,
            "1",
            str(count),
            "aws02",
        ],
        cwd=Path(__file__).resolve().parent.parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    own: list[int] = []

    def emit_own() -> None:
        for n in range(count):
            event = mine.started("aws02", "own", task_id=f"own{n}", exclusive=False)
            own.append(event.seq)
            own.append(mine.completed("aws02", {}, task_id=event.task_id).seq)

    thread = threading.Thread(target=emit_own)
    thread.start()
    out, _ = worker.communicate(timeout=120)
    thread.join(120)
    assert worker.returncode == 0
    theirs = [json.loads(line)["seq"] for line in out.splitlines()]
    total = len(theirs) + len(own)
    assert sorted(theirs + own) == list(range(1, total + 1))
    got = seqs_until(client, total, "aws02")
    assert got == list(range(1, total + 1))
    assert client.drain(0.3) == []


# -- forget ---------------------------------------------------------------------------


def test_a_subject_forgotten_by_another_process_unsubscribes_clients_here(
    web: Callable[[], tuple[LiveServer, flask.Flask]], other: Emitter, clients: list[Client]
) -> None:
    (a, _) = web()
    other.started("worker-only", "scan", task_id="s1")
    other.completed("worker-only", {}, task_id="s1")
    client, _ = connect(clients, a)
    assert subscribe(client, "worker-only")["seq"] == 2
    assert other.forget("worker-only")
    gone = client.wait_for("unsubscribed")
    assert gone == {"config_name": "worker-only", "reason": "forgotten"}
    # A new stream for it starts at 1 and reaches a new subscriber in full.
    other.started("worker-only", "scan", task_id="s2")
    assert subscribe(client, "worker-only")["seq"] == 1
    other.completed("worker-only", {}, task_id="s2")
    assert client.wait_for("task_status_update")["seq"] == 2


def test_an_outcome_says_busy_while_another_task_runs_whoever_emitted_it(
    web: Callable[[], tuple[LiveServer, flask.Flask]], other: Emitter, clients: list[Client]
) -> None:
    # The store notes how many tasks run after each event it records or its bridge
    # brings in, so the adapter knows without asking Redis; the answer must be the same.
    (a, app) = web()
    mine = TaskEvents.state(app).emitter
    client, _ = connect(clients, a)
    subscribe(client)
    first = other.started("aws01", "change_ip", task_id="w1")
    second = mine.started("aws01", "reboot", task_id="m1", exclusive=False)
    third = other.started("aws01", "scan", task_id="w2")
    other.completed("aws01", task_id=first.task_id)  # bridged: two still run
    mine.completed("aws01", task_id=second.task_id)  # own: one still runs
    last = other.completed("aws01", task_id=third.task_id)  # bridged: none
    assert seqs_until(client, last.seq) == [1, 2, 3, 4, 5, 6]
    ends = [u["update"] for u in client.updates() if u["update"]["event"] == "task_completed"]
    assert [(u["task_id"], u["status"]) for u in ends] == [
        ("w1", "busy"),
        ("m1", "busy"),
        ("w2", "idle"),
    ]
    store = mine.state
    assert isinstance(store, RedisStateStore)
    assert store.running_after("aws01", last.seq) is False
    assert store.running_after("aws01", 1) is None  # not the last it knows of


def test_a_sequence_that_started_again_unseen_is_followed_not_dropped(
    web: Callable[[], tuple[LiveServer, flask.Flask]],
    other: Emitter,
    clients: list[Client],
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    # The subject's keys vanish (a flush, a restart without persistence) and this
    # process misses the new sequence's first events: the next one still reaches the
    # clients, as the store's own seq shows that it started again.
    (a, app) = web()
    state = TaskEvents.state(app)
    assert state.bridge is not None
    state.bridge.close()
    client, _ = connect(clients, a)
    subscribe(client)

    def bridged(event: Any) -> None:
        SIGNALS[event.type].send(REMOTE, event=event)

    for event in (
        other.started("aws01", "change_ip", task_id="w1"),
        other.progress("aws01", 50, task_id="w1"),
        other.completed("aws01", {}, task_id="w1"),
    ):
        bridged(event)
    assert seqs_until(client, 3) == [1, 2, 3]
    redis_client.delete(f"{prefix}:subject:aws01", f"{prefix}:history:aws01")
    other.started("aws01", "change_ip", task_id="w2")  # seq 1, missed here
    again = other.completed("aws01", {}, task_id="w2")
    assert again.seq == 2
    bridged(again)
    assert client.wait_for("task_status_update")["seq"] == 2


def test_forged_entries_neither_wedge_the_adapter_nor_replay_the_history(
    web: Callable[[], tuple[LiveServer, flask.Flask]],
    other: Emitter,
    clients: list[Client],
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    """Entries added to the stream by hand: a time no datetime can hold is refused by
    the bridge; a seq 1 for a live subject is not taken for a new sequence (that would
    make the next event fill the gap with the whole history again)."""
    (a, _) = web()
    client, _ = connect(clients, a)
    subscribe(client)
    first = other.started("aws01", "change_ip", task_id="w1")
    assert seqs_until(client, first.seq) == [1]
    forged: dict[Any, Any] = {"o": "x", "y": "task_progress", "k": "w1", "n": "change_ip"}
    forged["i"] = "ev_forged"
    forged |= {"s": "forged", "z": "10", "d": "{}"}
    redis_client.xadd(f"{prefix}:events", {**forged, "j": "aws02", "q": "1", "t": "inf"})
    redis_client.xadd(f"{prefix}:events", {**forged, "j": "aws02", "q": "1", "t": "1e300"})
    redis_client.xadd(f"{prefix}:events", {**forged, "j": "aws01", "q": "1", "t": "1.0"})
    # lifecycle events only: progress may be coalesced
    then = [other.started("aws01", "scan", task_id=f"w{n}").seq for n in (2, 3)]
    done = other.completed("aws01", {}, task_id="w1")
    assert seqs_until(client, done.seq) == [*then, done.seq]
    assert client.drain(0.3) == []
    # ...and the adapter still serves another subject
    assert subscribe(client, "aws02")["seq"] == 0
