"""The Socket.IO protocol on python-socketio's AsyncServer, served by uvicorn, with both
python-socketio clients (``AsyncClient`` and ``Client``): every test runs with each."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import socketio

from taskevents import TaskEvent
from taskevents.adapters.socketio import merge_progress
from tests.asgi.support import (
    CLIENT_KINDS,
    SUBJECTS,
    AsgiServed,
    Recorder,
    run_task,
    serving,
    subscribe,
)

Serve = Callable[..., AsgiServed]


@pytest.fixture
def asgi() -> Iterator[Serve]:
    yield from serving()


@pytest.fixture(params=CLIENT_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The python-socketio client class the test runs with."""
    value: str = request.param
    return value


TOKENS = {"alice-token": "alice", "bob-token": "bob"}
GRANTS = {("alice", "aws01"), ("alice", "aws02"), ("bob", "aws03")}


def identity_of(environ: Any, auth: Any) -> str | None:
    token = auth.get("token") if isinstance(auth, dict) else None
    return TOKENS.get(token) if isinstance(token, str) else None


def granted(identity: Any, subject: str) -> bool:
    return (identity, subject) in GRANTS


def with_seq(seq: int) -> Callable[[Any], bool]:
    return lambda payload: payload["seq"] == seq


# -- connecting ------------------------------------------------------------------------------


def test_connection_status_is_the_first_event(asgi: Serve, kind: str) -> None:
    served = asgi()
    client = served.client(kind)
    name, payload = client.next()
    assert name == "connection_status"
    assert payload == {
        "status": "connected",
        "client_id": client.sid,
        "protocol": 2,
        "stream": served.adapter.stream_id,
    }
    assert served.adapter.loop is served.live.loop  # bound on the first connect
    assert served.adapter.client_count == 1


def test_a_client_that_asks_at_once_still_gets_connection_status_first(
    asgi: Serve, kind: str
) -> None:
    served = asgi()
    for _ in range(4):
        client = served.client(kind)
        client.emit("get_all_tasks")
        assert [client.next()[0], client.next()[0]] == ["connection_status", "all_tasks"]


# -- subscribing and the stream ----------------------------------------------------------------


def test_subscribe_answers_task_status_with_the_snapshot(asgi: Serve, kind: str) -> None:
    served = asgi()
    started = served.emitter.started("aws01", "change_ip", task_id="job-1")
    served.emitter.progress("aws01", 40, stage="execution", message="Changing IP address...")
    client = served.client(kind)
    status = subscribe(client)
    assert [name for name, _ in client.seen] == ["connection_status", "task_status"]
    assert status["config_name"] == "aws01"
    assert status["seq"] == 2
    assert status["stream"] == served.adapter.stream_id
    snapshot = status["status"]
    assert snapshot["status"] == "busy"
    assert snapshot["seq"] == 2
    assert snapshot["current_task"] == "change_ip"
    assert snapshot["current"]["task_id"] == started.task_id == "job-1"
    assert snapshot["current"]["progress"] == {
        "percent": 40,
        "stage": "execution",
        "message": "Changing IP address...",
    }
    assert snapshot["metadata"] == {"region": "eu-west-1"}
    assert snapshot["aws_current_region"] is None  # registered under another name


def test_each_update_arrives_once_in_seq_order_without_a_gap(asgi: Serve, kind: str) -> None:
    served = asgi()
    client = served.client(kind)
    assert subscribe(client)["seq"] == 0
    emitter = served.emitter
    steps: list[Callable[[], TaskEvent]] = [
        lambda: emitter.started("aws01", "change_ip", region="eu-west-1"),
        lambda: emitter.progress("aws01", 10, stage="preparation"),
        lambda: emitter.progress("aws01", 60, stage="execution", message="Changing IP..."),
        lambda: emitter.completed("aws01", {"ip": "203.0.113.7"}),
        lambda: emitter.started("aws01", "reboot"),
        lambda: emitter.failed("aws01", RuntimeError("host unreachable")),
        lambda: emitter.started("aws01", "reboot"),
        lambda: emitter.cancelled("aws01", "operator asked"),
    ]
    sent: list[TaskEvent] = []
    for step in steps:
        # one at a time: each reaches the client before the next is emitted, so none
        # can be coalesced and the client must see every one
        event = step()
        sent.append(event)
        client.wait_for("task_status_update", with_seq(event.seq))
    updates = client.updates()
    assert [u["seq"] for u in updates] == [e.seq for e in sent] == list(range(1, len(steps) + 1))
    assert [u["update"]["event"] for u in updates] == [e.type for e in sent]
    assert [u["event_id"] for u in updates] == [e.id for e in sent]
    assert {u["config_name"] for u in updates} == {"aws01"}
    started, low, high, completed, _, failed, _, cancelled = (u["update"] for u in updates)
    assert started["status"] == "busy"
    assert started["task_type"] == "change_ip"
    assert low["percent"] == 10
    assert high["progress"] == {"percent": 60, "stage": "execution", "message": "Changing IP..."}
    assert completed["result"] == {"ip": "203.0.113.7"}
    assert completed["status"] == "idle"
    assert failed["error"] == {"type": "RuntimeError", "message": "host unreachable"}
    assert cancelled["reason"] == "operator asked"
    assert client.drain(0.2) == []  # nothing twice


def test_a_burst_keeps_every_lifecycle_event_in_order_and_the_latest_progress(
    asgi: Serve, kind: str
) -> None:
    served = asgi()
    client = served.client(kind)
    subscribe(client)
    sent: list[TaskEvent] = []
    for _ in range(10):
        sent += run_task(served.emitter, steps=30)
    client.wait_for("task_status_update", with_seq(sent[-1].seq))
    assert client.drain(0.2) == []
    seqs = [u["seq"] for u in client.updates()]
    by_seq = {e.seq: e for e in sent}
    assert seqs == sorted(set(seqs))  # strictly increasing: in order, nothing twice
    assert set(seqs) <= set(by_seq)
    assert {e.seq for e in sent if e.type != "task_progress"} <= set(seqs)
    # Only progress may be left out, and only for a newer progress of the same task
    # that came right after it (latest wins): the last before each completion arrives.
    for seq in set(by_seq) - set(seqs):
        skipped, after = by_seq[seq], by_seq[seq + 1]
        assert skipped.type == after.type == "task_progress", seq
        assert skipped.task_id == after.task_id
    for update in client.updates():
        assert update["update"]["event"] == by_seq[update["seq"]].type


def test_only_the_subscribers_of_a_subject_get_its_updates(asgi: Serve, kind: str) -> None:
    served = asgi()
    one, two = served.client(kind), served.client(kind)
    subscribe(one, "aws01")
    subscribe(two, "aws02")
    first = run_task(served.emitter, "aws01")
    second = run_task(served.emitter, "aws02")
    one.wait_for("task_status_update", with_seq(first[-1].seq))
    two.wait_for("task_status_update", with_seq(second[-1].seq))
    assert one.drain(0.2) == two.drain(0.2) == []
    assert {u["config_name"] for u in one.updates()} == {"aws01"}
    assert {u["config_name"] for u in two.updates()} == {"aws02"}


def test_unsubscribe_ends_the_stream(asgi: Serve, kind: str) -> None:
    served = asgi()
    client = served.client(kind)
    subscribe(client, "aws01")
    subscribe(client, "aws02")
    client.emit("unsubscribe_task", {"config_name": "aws01"})
    assert client.wait_for("unsubscribed") == {"config_name": "aws01"}
    run_task(served.emitter, "aws01")
    last = run_task(served.emitter, "aws02")[-1]
    client.wait_for("task_status_update", lambda p: p["event_id"] == last.id)
    assert client.updates("aws01") == []
    assert client.drain(0.3) == []


def test_get_all_tasks_answers_every_subject(asgi: Serve, kind: str) -> None:
    served = asgi()
    served.emitter.started("aws02", "change_ip")
    client = served.client(kind)
    client.emit("get_all_tasks")
    all_tasks = client.wait_for("all_tasks")
    assert sorted(all_tasks) == sorted(SUBJECTS)
    assert all_tasks["aws01"]["status"] == "idle"
    assert all_tasks["aws01"]["metadata"] == {"region": "eu-west-1"}
    assert all_tasks["aws02"]["status"] == "busy"
    assert all_tasks["aws02"]["current_task"] == "change_ip"


# -- resuming ----------------------------------------------------------------------------------


def test_resume_with_since_and_stream_replays_what_was_missed(asgi: Serve, kind: str) -> None:
    served = asgi()
    client = served.client(kind)
    stream = client.next()[1]["stream"]
    subscribe(client)
    first = run_task(served.emitter)
    client.wait_for("task_status_update", with_seq(first[-1].seq))
    client.close()

    missed = [served.emitter.started("aws01", "change_ip")]
    missed += [served.emitter.progress("aws01", 5 * n, step=n) for n in range(12)]
    missed.append(served.emitter.failed("aws01", "timed out"))

    again = served.client(kind)
    status = subscribe(again, since=first[-1].seq, stream=stream)
    replayed = again.updates()
    expected = merge_progress(missed)
    assert [(u["seq"], u["update"]["event"]) for u in replayed] == [
        (e.seq, e.type) for e in expected
    ]
    assert replayed[1]["update"]["progress"]["step"] == 11  # merged into the latest
    assert all(u["replayed"] is True for u in replayed)
    assert status["resumed"] is True
    assert status["seq"] == missed[-1].seq
    assert status["stream"] == stream
    # then the live stream goes on from there
    live = served.emitter.started("aws01", "change_ip")
    assert again.wait_for("task_status_update")["seq"] == live.seq == missed[-1].seq + 1

    # a seq of another stream (a server that has restarted since) is not replayed
    other = served.client(kind)
    resync = subscribe(other, since=3, stream="0123456789abcdef")
    assert resync["resync"] is True
    assert resync["seq"] == live.seq
    assert other.updates() == []


def test_resume_from_beyond_the_history_asks_for_a_resync(asgi: Serve, kind: str) -> None:
    served = asgi(history_size=8)
    for _ in range(4):
        run_task(served.emitter)
    client = served.client(kind)
    stream = client.next()[1]["stream"]
    status = subscribe(client, since=2, stream=stream)
    assert status["resync"] is True
    assert status["seq"] == 20
    assert client.updates() == []


# -- bad requests --------------------------------------------------------------------------------

#: (event, its arguments, the field the error names or None)
BAD_REQUESTS: list[tuple[str, tuple[Any, ...], str | None]] = [
    ("subscribe_task", (), "config_name"),
    ("subscribe_task", ("aws01",), None),
    ("subscribe_task", (17,), None),
    ("subscribe_task", (["aws01", "aws02"],), None),
    ("subscribe_task", (None,), "config_name"),
    ("subscribe_task", (b"\x00\xff",), None),
    ("subscribe_task", ({},), "config_name"),
    ("subscribe_task", ({"config_name": 7},), "config_name"),
    ("subscribe_task", ({"config_name": ""},), "config_name"),
    ("subscribe_task", ({"config_name": "z" * 300},), "config_name"),
    ("subscribe_task", ({"config_name": "aws01\r\n"},), "config_name"),
    ("subscribe_task", ({"config_name": "../../aws01"},), "config_name"),
    ("subscribe_task", ({"config_name": "no-such-subject"},), "config_name"),
    ("subscribe_task", ({"config_name": {"$ne": ""}},), "config_name"),
    ("subscribe_task", ({"config_name": "aws01", "since": -3},), "since"),
    ("subscribe_task", ({"config_name": "aws01", "since": "3"},), "since"),
    ("subscribe_task", ({"config_name": "aws01", "since": 2.5},), "since"),
    ("subscribe_task", ({"config_name": "aws01", "since": False},), "since"),
    ("subscribe_task", ({"config_name": "aws01", "stream": ["x"]},), "stream"),
    ("subscribe_task", ({"config_name": "aws01", "priority": 1},), "priority"),
    ("subscribe_task", ({"config_name": "aws01"}, "and more"), None),
    ("unsubscribe_task", (), "config_name"),
    ("unsubscribe_task", ({"config_name": None},), "config_name"),
    ("unsubscribe_task", ({"config_name": "aws01", "force": True},), "force"),
    ("get_all_tasks", ({"page": 2},), "page"),
    ("get_all_tasks", (5,), None),
    ("watch_task", ({"config_name": "aws01"},), None),
    ("all_tasks", ({},), None),
]


def test_malformed_payloads_get_an_error_naming_the_field_and_disturb_no_one(
    asgi: Serve, kind: str
) -> None:
    served = asgi()
    bystander = served.client(kind)
    subscribe(bystander)
    served.emitter.started("aws01", "change_ip")
    sender = served.client(kind)
    for index, (event, args, field) in enumerate(BAD_REQUESTS):
        sender.emit(event, *args)
        error = sender.wait_for("error")
        assert error["event"] == event, (event, args, error)
        assert event in error["message"], (event, args, error)
        if field is not None:
            assert error.get("field") == field, (event, args, error)
        served.emitter.progress("aws01", index)
    done = served.emitter.completed("aws01")
    # the sender got one error per request, and nothing else
    assert [name for name, _ in sender.drain(0.2)] == []
    assert len(sender.errors()) == len(BAD_REQUESTS)
    # the bystander was served throughout: every lifecycle event, in order
    bystander.wait_for("task_status_update", with_seq(done.seq))
    seqs = [u["seq"] for u in bystander.updates()]
    assert seqs == sorted(set(seqs))
    assert seqs[0] == 1
    assert seqs[-2:] == [done.seq - 1, done.seq]
    # and the sender's connection works as before
    assert subscribe(sender)["seq"] == done.seq
    assert sorted(served.emitter.state.subjects()) == sorted(SUBJECTS)  # nothing created


def test_client_events_named_connect_or_disconnect_get_an_error_and_change_nothing(
    asgi: Serve, kind: str
) -> None:
    calls: list[Any] = []

    def counting(environ: Any, auth: Any) -> str | None:
        calls.append(auth)
        return identity_of(environ, auth)

    served = asgi(authenticate=counting, authorize=granted, max_subscriptions=1)
    alice = served.client(kind, auth={"token": "alice-token"})
    bystander = served.client(kind, auth={"token": "bob-token"})
    subscribe(alice, "aws01")
    subscribe(bystander, "aws03")
    # as python-socketio calls the connect handler: (environ, auth)
    alice.emit("connect", {"HTTP_X_USER": "bob"}, {"token": "bob-token"})
    error = alice.wait_for("error")
    assert error["event"] == "connect"
    assert "unknown event" in error["message"]
    assert calls == [{"token": "alice-token"}, {"token": "bob-token"}]  # the real connects
    # still alice, with her limits: bob's subject is refused, the cap was not reset
    alice.emit("subscribe_task", {"config_name": "aws03"})
    assert "not authorised" in alice.wait_for("error")["message"]
    alice.emit("subscribe_task", {"config_name": "aws02"})
    assert "at most 1 subscriptions" in alice.wait_for("error")["message"]
    # "disconnect" does not make the server forget her
    alice.emit("disconnect", "client namespace disconnect")
    assert alice.wait_for("error")["event"] == "disconnect"
    assert served.adapter.client_count == 2
    started = served.emitter.started("aws01", "change_ip")
    assert alice.wait_for("task_status_update")["seq"] == started.seq
    alice.emit("get_all_tasks")
    assert sorted(alice.wait_for("all_tasks")) == ["aws01", "aws02"]
    # and the other client saw none of it
    other = served.emitter.started("aws03", "reboot")
    assert bystander.wait_for("task_status_update")["seq"] == other.seq
    assert bystander.errors() == []
    assert served.adapter.error_count == 0


# -- who may connect and watch ------------------------------------------------------------------


def sync_hook(seen: list[tuple[Any, ...]]) -> Callable[[Any, Any], Any]:
    def authenticate(environ: Any, auth: Any) -> str | None:
        seen.append((threading.get_ident(), auth))
        return identity_of(environ, auth)

    return authenticate


def async_hook(seen: list[tuple[Any, ...]]) -> Callable[[Any, Any], Any]:
    async def authenticate(environ: Any, auth: Any) -> str | None:
        await asyncio.sleep(0.01)  # as a hook that asks a service would
        seen.append((threading.get_ident(), auth))
        return identity_of(environ, auth)

    return authenticate


@pytest.mark.parametrize(
    ("make_hook", "on_the_loop"),
    [(sync_hook, False), (async_hook, True)],
    ids=["def", "async-def"],
)
def test_the_authenticate_hook_refuses_and_accepts(
    asgi: Serve,
    kind: str,
    make_hook: Callable[[list[tuple[Any, ...]]], Any],
    on_the_loop: bool,
) -> None:
    seen: list[tuple[Any, ...]] = []
    served = asgi(authenticate=make_hook(seen), authorize=granted)
    for auth in (None, {"token": "wrong"}, "alice-token", {"token": ["alice-token"]}):
        refused = served.unconnected(kind)
        with pytest.raises(socketio.exceptions.ConnectionError):
            refused.connect(served.url, auth=auth)
        assert refused.connect_errors == [{"message": "authentication failed"}]
        assert not refused.connected
    assert served.adapter.client_count == 0
    alice = served.client(kind, auth={"token": "alice-token"})
    assert alice.next()[0] == "connection_status"
    assert served.adapter.client_count == 1
    assert len(seen) == 5
    assert seen[-1][1] == {"token": "alice-token"}
    # an async def hook is awaited on the server's loop; a plain one (which may do I/O)
    # runs in a worker thread
    threads = {ident for ident, _ in seen}
    if on_the_loop:
        assert threads == {served.live.thread_id}
    else:
        assert served.live.thread_id not in threads
    assert subscribe(alice, "aws01")["config_name"] == "aws01"
    assert served.adapter.hook_errors.count == 0


def connect_in_a_thread(client: Recorder, url: str, **options: Any) -> Callable[[], Any]:
    """Start ``client.connect(url, **options)`` in a thread; returns a function that
    waits for it and returns what it raised (or None)."""
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            client.connect(url, **options)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=connect, name="connecting")
    thread.start()

    def result() -> Any:
        thread.join(30)
        assert outcome, "connect() did not return"
        return outcome[0]

    return result


def test_a_slow_plain_authenticate_hook_holds_up_neither_the_loop_nor_other_clients(
    asgi: Serve, kind: str
) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(environ: Any, auth: Any) -> str:
        if auth == {"token": "slow"}:  # as a hook that asks a database would
            entered.set()
            release.wait(30)
        return "carol"

    served = asgi(authenticate=slow)
    watcher = served.client(kind, auth={"token": "quick"})
    subscribe(watcher)
    joining = served.unconnected(kind)
    try:
        connected = connect_in_a_thread(joining, served.url, auth={"token": "slow"})
        assert entered.wait(10), "the hook was not called"
        # while the hook waits, the loop serves everyone else
        event = served.emitter.started("aws01", "change_ip")
        assert watcher.wait_for("task_status_update")["seq"] == event.seq
        other = served.client(kind, auth={"token": "quick"})
        assert other.next()[0] == "connection_status"
    finally:
        release.set()
    assert connected() is None
    assert joining.next()[0] == "connection_status"
    assert served.adapter.client_count == 3


@pytest.mark.parametrize("asynchronous", [False, True], ids=["def", "async-def"])
def test_an_authenticate_hook_that_does_not_answer_in_time_refuses_the_client(
    asgi: Serve, kind: str, asynchronous: bool
) -> None:
    release = threading.Event()

    def stuck(environ: Any, auth: Any) -> str:
        release.wait(30)
        return "late"

    async def stuck_async(environ: Any, auth: Any) -> str:
        await asyncio.sleep(30)
        return "late"

    served = asgi(authenticate=stuck_async if asynchronous else stuck)
    served.adapter.authenticate_timeout = 0.5
    try:
        refused = served.unconnected(kind)
        with pytest.raises(socketio.exceptions.ConnectionError):
            refused.connect(served.url, auth={"token": "alice-token"})
        assert refused.connect_errors == [{"message": "authentication failed"}]
        assert served.adapter.hook_errors.count == 1
        assert served.adapter.client_count == 0
    finally:
        release.set()


def test_a_raising_authenticate_hook_refuses_and_is_counted(asgi: Serve, kind: str) -> None:
    async def broken(environ: Any, auth: Any) -> str:
        raise RuntimeError("identity provider down")

    served = asgi(authenticate=broken)
    refused = served.unconnected(kind)
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(served.url, auth={"token": "alice-token"})
    assert refused.connect_errors == [{"message": "authentication failed"}]
    assert served.adapter.hook_errors.count == 1
    assert served.adapter.client_count == 0


def test_authorize_refuses_subscriptions_and_filters_all_tasks(asgi: Serve, kind: str) -> None:
    served = asgi(authenticate=identity_of, authorize=granted)
    alice = served.client(kind, auth={"token": "alice-token"})
    bob = served.client(kind, auth={"token": "bob-token"})
    alice.emit("subscribe_task", {"config_name": "aws03"})
    error = alice.wait_for("error")
    assert error["event"] == "subscribe_task"
    assert error["field"] == "config_name"
    assert "not authorised" in error["message"]
    alice.emit("get_all_tasks")
    assert sorted(alice.wait_for("all_tasks")) == ["aws01", "aws02"]
    bob.emit("get_all_tasks")
    assert sorted(bob.wait_for("all_tasks")) == ["aws03"]
    subscribe(bob, "aws03")
    subscribe(alice, "aws01")
    done = run_task(served.emitter, "aws03")[-1]
    bob.wait_for("task_status_update", with_seq(done.seq))
    mine = run_task(served.emitter, "aws01")[-1]
    alice.wait_for("task_status_update", with_seq(mine.seq))
    assert {u["config_name"] for u in alice.updates()} == {"aws01"}
    assert {u["config_name"] for u in bob.updates()} == {"aws03"}


def polling_handshake(url: str, origin: str | None) -> tuple[int, str]:
    """The status and body of an Engine.IO long-polling handshake sent with ``origin``."""
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    try:
        headers = {} if origin is None else {"Origin": origin}
        connection.request("GET", "/socket.io/?EIO=4&transport=polling", headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_the_default_cors_refuses_a_foreign_origin(
    asgi: Serve, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    served = asgi()
    foreign = served.unconnected(kind)
    with pytest.raises(socketio.exceptions.ConnectionError):
        foreign.connect(served.url, headers={"Origin": "http://evil.example"})
    assert not foreign.connected
    assert served.adapter.client_count == 0
    assert served.sio.eio.sockets == {}  # no session was opened for it
    refusals = [r for r in caplog.records if "not an accepted origin" in r.getMessage()]
    assert [r.getMessage().split()[0] for r in refusals] == ["http://evil.example"]
    # the same over long-polling
    status, body = polling_handshake(served.url, "http://evil.example")
    assert (status, body) == (400, '"http://evil.example is not an accepted origin."')
    assert served.sio.eio.sockets == {}
    # the server's own origin, and a client that sends none, are served
    own = served.client(kind, headers={"Origin": served.url})
    assert own.next()[0] == "connection_status"
    plain = served.client(kind)
    assert plain.next()[0] == "connection_status"
    assert served.adapter.client_count == 2
    status, body = polling_handshake(served.url, served.url)
    assert status == 200
    assert body.startswith("0{")
