"""The Socket.IO adapter against real servers and real python-socketio clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import flask
import pytest
import socketio
from flask_socketio import SocketIO

from taskevents import CallableAdapter, Emitter, TaskEvent, ValidationError
from taskevents.adapters.socketio import SocketIOAdapter, merge_progress
from taskevents.signals import REMOTE, SIGNALS
from taskevents.testing import capture_events
from tests.support.socketio import (
    SUBJECTS,
    Client,
    LiveServer,
    Served,
    by_token,
    only_own,
    run_task,
    subscribe,
)

# -- the protocol, event by event ---------------------------------------------------------

pytestmark = pytest.mark.both_servers


def test_connect_answers_connection_status(serve: Callable[..., Served]) -> None:
    served = serve()
    client = served.client()
    name, payload = client.next()
    assert name == "connection_status"
    assert payload == {
        "status": "connected",
        "client_id": client.sio.get_sid("/"),
        "protocol": 2,
        "stream": served.adapter.stream_id,
    }
    assert client.confirmed_before_greeting is True


def test_connection_status_comes_first_even_for_an_eager_client(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    for _ in range(5):
        client = served.client()
        client.emit("get_all_tasks")
        assert [client.next()[0], client.next()[0]] == ["connection_status", "all_tasks"]


def test_subscribe_answers_task_status_with_the_snapshot(serve: Callable[..., Served]) -> None:
    served = serve()
    served.emitter.started("aws01", "change_ip")
    served.emitter.progress("aws01", 40, stage="execution", message="Changing IP address...")
    client = served.client()
    status = subscribe(client)
    assert status["config_name"] == "aws01"
    assert status["seq"] == 2
    snapshot = status["status"]
    assert snapshot["status"] == "busy"
    assert snapshot["seq"] == 2
    assert snapshot["current_task"] == "change_ip"  # the original's: the task's type
    assert snapshot["current"]["task_type"] == "change_ip"
    assert snapshot["current"]["progress"] == {
        "percent": 40,
        "stage": "execution",
        "message": "Changing IP address...",
    }
    assert snapshot["metadata"] == {"region": "eu-west-1"}
    assert isinstance(status["timestamp"], str)


def test_updates_have_the_seed_shapes_field_by_field(serve: Callable[..., Served]) -> None:
    served = serve()
    client = served.client()
    subscribe(client)
    events = run_task(served.emitter)
    client.wait_for("task_status_update", lambda p: p["update"]["event"] == "task_completed")
    by_seq = {e.seq: e for e in events}
    updates = client.updates()

    def common(payload: dict[str, Any]) -> TaskEvent:
        event = by_seq[payload["seq"]]
        assert payload["config_name"] == "aws01"
        assert payload["timestamp"] == event.time.isoformat()
        assert payload["event_id"] == event.id
        assert payload["update"]["task_id"] == event.task_id
        assert payload["update"]["event"] == event.type
        return event

    for payload in updates:
        event = common(payload)
        update = payload["update"]
        if event.type == "task_started":
            assert update == {
                "event": "task_started",
                "task_type": "change_ip",
                "status": "busy",
                "task_id": event.task_id,
            }
        elif event.type == "task_progress":
            assert update["progress"] == {
                "percent": event.data["percent"],
                "stage": "execution",
                "message": "Changing IP...",
            }
            assert update["percent"] == event.data["percent"]
            assert update["task_type"] == "change_ip"
        else:
            assert update["result"] == {"status": "success", "data": {"ip": "203.0.113.7"}}
            assert update["status"] == "idle"
    # lifecycle always, progress possibly coalesced, the latest progress always
    assert updates[0]["update"]["event"] == "task_started"
    assert updates[-2]["seq"] == events[-2].seq
    assert updates[-1]["seq"] == events[-1].seq
    assert [u["seq"] for u in updates] == sorted({u["seq"] for u in updates})


def test_failed_and_cancelled_updates(serve: Callable[..., Served]) -> None:
    served = serve()
    client = served.client()
    subscribe(client)
    served.emitter.started("aws01", "change_ip")
    served.emitter.failed("aws01", RuntimeError("refused"))
    served.emitter.started("aws01", "reboot")
    served.emitter.cancelled("aws01", "operator asked")
    cancelled = client.wait_for(
        "task_status_update", lambda p: p["update"]["event"] == "task_cancelled"
    )
    failed = client.updates()[1]
    assert failed["update"]["event"] == "task_failed"
    assert failed["update"]["error"] == {"type": "RuntimeError", "message": "refused"}
    assert failed["update"]["status"] == "idle"
    assert cancelled["update"]["reason"] == "operator asked"
    assert cancelled["update"]["status"] == "idle"
    assert cancelled["update"]["task_type"] == "reboot"


def test_get_all_tasks_and_unsubscribe(serve: Callable[..., Served]) -> None:
    served = serve()
    client = served.client()
    client.emit("get_all_tasks")
    all_tasks = client.wait_for("all_tasks")
    assert sorted(all_tasks) == ["aws01", "aws02", "aws03"]
    assert all_tasks["aws01"]["status"] == "idle"
    subscribe(client)
    client.emit("unsubscribe_task", {"config_name": "aws01"})
    assert client.wait_for("unsubscribed") == {"config_name": "aws01"}
    run_task(served.emitter)
    assert [name for name, _ in client.drain()] == []  # no updates after unsubscribing


def test_only_subscribers_of_a_subject_get_its_updates(serve: Callable[..., Served]) -> None:
    served = serve()
    one, two = served.client(), served.client()
    subscribe(one, "aws01")
    subscribe(two, "aws02")
    run_task(served.emitter, "aws01")
    run_task(served.emitter, "aws02")
    one.wait_for("task_status_update", lambda p: p["update"]["event"] == "task_completed")
    two.wait_for("task_status_update", lambda p: p["update"]["event"] == "task_completed")
    assert {u["config_name"] for u in one.updates()} == {"aws01"}
    assert {u["config_name"] for u in two.updates()} == {"aws02"}


def test_subscribers_get_the_events_of_other_processes(serve: Callable[..., Served]) -> None:
    served = serve()
    client = served.client()
    subscribe(client)
    # Another process on a shared store, its events relayed as a bridge does.
    other = Emitter(source="other", state=served.emitter.state)
    relay = CallableAdapter(lambda event: SIGNALS[event.type].send(REMOTE, event=event))
    with relay.connect(other):
        sent = run_task(other)
    done = client.wait_for("task_status_update", lambda p: p["update"]["event"] == "task_completed")
    assert done["seq"] == sent[-1].seq
    assert SocketIOAdapter.remote is True


def relay(event: TaskEvent) -> None:
    """Bring ``event`` in as a RedisBridge does: on its signal, sent by REMOTE."""
    SIGNALS[event.type].send(REMOTE, event=event)


def test_another_process_events_in_the_snapshot_are_not_sent_again(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    early, late = served.client(), served.client()
    subscribe(early)
    other = Emitter(source="other", state=served.emitter.state)
    # Recorded, but (as a bridge may) brought in only after the late client's snapshot.
    held = [other.started("aws01", "change_ip"), other.progress("aws01", 40)]
    assert subscribe(late)["seq"] == 2
    for event in held:
        relay(event)
    done = other.completed("aws01", {"ip": "203.0.113.7"})
    relay(done)
    for client in (early, late):
        client.wait_for("task_status_update", lambda p: p["update"]["event"] == "task_completed")
        client.drain(0.2)
    assert [u["seq"] for u in early.updates()] == [1, 2, 3]
    assert [u["seq"] for u in late.updates()] == [3]  # nothing at or below its snapshot
    assert served.adapter._floors == {}  # passed: nothing kept


def test_a_remote_event_during_a_subscribe_is_not_missed(
    serve: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    served = serve()
    client = served.client()
    store = served.emitter.state
    other = Emitter(source="other", state=store)
    read = store.snapshot
    calls: list[threading.Thread | None] = []

    def snapshot(subject: str) -> Any:
        taken = read(subject)
        calls.append(None)
        if len(calls) == 2:  # the one the client is sent (the first checks the subject)
            # Another process emits just after it, and its event arrives at once.
            thread = threading.Thread(target=relay, args=(other.started(subject, "change_ip"),))
            calls[-1] = thread
            thread.start()
            thread.join(0.3)  # held until the join is queued, so not delivered before it
        return taken

    monkeypatch.setattr(store, "snapshot", snapshot)
    status = subscribe(client)
    assert status["seq"] == 0
    update = client.wait_for("task_status_update")
    assert update["seq"] == 1
    assert update["update"]["event"] == "task_started"
    thread = calls[1]
    assert thread is not None
    thread.join(5)


def test_works_on_a_bare_python_socketio_server() -> None:
    emitter = Emitter()
    emitter.register("aws01")
    sio = socketio.Server(async_mode="threading")
    adapter = SocketIOAdapter(sio, emitter, namespace="/tasks", progress_interval=0).connect()
    server = LiveServer(socketio.WSGIApp(sio))
    client = Client().connect(server.url, namespace="/tasks")
    try:
        assert client.next()[0] == "connection_status"
        client.emit("subscribe_task", {"config_name": "aws01"}, namespace="/tasks")
        assert client.wait_for("task_status")["seq"] == 0
        run_task(emitter)
        done = client.wait_for(
            "task_status_update", lambda p: p["update"]["event"] == "task_completed"
        )
        assert done["seq"] == 5
    finally:
        client.close()
        adapter.close()
        server.stop()


def test_adapter_refuses_what_is_not_a_server() -> None:
    with pytest.raises(ValidationError, match="server: expected a python-socketio Server"):
        SocketIOAdapter(object(), Emitter())
    with pytest.raises(ValidationError, match="initialised with an app"):
        SocketIOAdapter(SocketIO(), Emitter())


def test_progress_is_coalesced_to_the_interval_and_lifecycle_kept(
    serve: Callable[..., Served],
) -> None:
    served = serve(progress_interval=0.1)
    client = served.client()
    subscribe(client)
    emitter = served.emitter
    started = emitter.started("aws01", "flood")
    begin = time.monotonic()
    n = 0
    while time.monotonic() - begin < 1.0:
        emitter.progress("aws01", n % 101, step=n)
        n += 1
    completed = emitter.completed("aws01")
    elapsed = time.monotonic() - begin
    client.wait_for("task_status_update", lambda p: p["update"]["event"] == "task_completed")
    updates = client.updates()
    progress = [u for u in updates if u["update"]["event"] == "task_progress"]
    assert n > 1000  # a real flood
    assert len(progress) <= elapsed / 0.1 + 2
    assert [u["seq"] for u in updates if u["update"]["event"] != "task_progress"] == [
        started.seq,
        completed.seq,
    ]
    assert updates[-2]["update"]["progress"]["step"] == n - 1  # the latest, before completion


# -- snapshot consistency and resume ------------------------------------------------------


def test_snapshot_then_stream_has_no_gap_and_no_duplicate_while_emitting(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    emitter = served.emitter
    stop = threading.Event()

    def busy_subject() -> None:
        # About 100 tasks a second, each with a burst of 50 progress events: continuous,
        # yet within what 8 clients of a threading-mode server take in.
        while not stop.is_set():
            emitter.started("aws01", "flood")
            for n in range(50):
                emitter.progress("aws01", n)
            emitter.completed("aws01")
            time.sleep(0.01)

    with capture_events(subjects=["aws01"]) as sent:
        worker = threading.Thread(target=busy_subject)
        worker.start()
        clients = []
        try:
            for _ in range(8):
                client = served.client()
                client.emit("subscribe_task", {"config_name": "aws01"})
                clients.append(client)
                time.sleep(0.05)  # subscriptions spread over the flood
            for client in clients:  # every snapshot taken while the subject streams
                client.wait_for("task_status", timeout=15)
        finally:
            stop.set()
            worker.join()
        last = sent[-1].seq
        for client in clients:
            client.wait_for("task_status_update", lambda p: p["seq"] == last, timeout=15)
    lifecycle = {e.seq for e in sent if e.type != "task_progress"}
    for client in clients:
        names = [name for name, _ in client.seen if name != "connection_status"]
        assert names[0] == "task_status"
        snapshot_seq = client.seen[1][1]["seq"]
        seqs = [u["seq"] for u in client.updates()]
        assert seqs, "the client received nothing after its snapshot"
        assert seqs == sorted(set(seqs))  # increasing, no duplicate
        assert seqs[0] > snapshot_seq  # nothing the snapshot already covers
        expected = {seq for seq in lifecycle if snapshot_seq < seq <= last}
        assert expected <= set(seqs)  # no lifecycle event lost
        # and before each completion, the task's latest progress
        for index, update in enumerate(client.updates()):
            if update["update"]["event"] == "task_completed" and index > 0:
                assert client.updates()[index - 1]["seq"] == update["seq"] - 1


def test_resume_replays_exactly_the_missed_transitions(serve: Callable[..., Served]) -> None:
    served = serve()
    client = served.client()
    subscribe(client)
    first = run_task(served.emitter)
    client.wait_for("task_status_update", lambda p: p["seq"] == first[-1].seq)
    seen_up_to = client.updates()[-1]["seq"]
    client.close()

    missed = [served.emitter.started("aws01", "change_ip")]
    missed += [served.emitter.progress("aws01", n * 2, step=n) for n in range(48)]
    missed.append(served.emitter.completed("aws01", {"status": "success"}))
    assert len(missed) == 50

    again = served.client()
    status = subscribe(again, since=seen_up_to)
    replayed = again.updates()
    expected = merge_progress(missed)
    assert [(u["seq"], u["update"]["event"]) for u in replayed] == [
        (e.seq, e.type) for e in expected
    ]
    assert [e.type for e in expected] == ["task_started", "task_progress", "task_completed"]
    assert replayed[1]["update"]["progress"]["step"] == 47  # progress merged to the latest
    assert all(u["replayed"] for u in replayed)
    assert status["resumed"] is True
    assert status["seq"] == missed[-1].seq
    # and the live stream continues after the replay
    live = served.emitter.started("aws01", "change_ip")
    assert again.wait_for("task_status_update")["seq"] == live.seq


def test_resume_with_another_streams_seq_asks_for_a_resync(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    run_task(served.emitter)
    client = served.client()
    stream = client.next()[1]["stream"]
    ok = subscribe(client, since=2, stream=stream)
    assert ok["resumed"] is True
    assert ok["stream"] == stream
    other = subscribe(client, since=2, stream="a-restarted-server")
    assert other["resync"] is True
    assert other["seq"] == 5


def test_resume_from_beyond_the_history_asks_for_a_resync(serve: Callable[..., Served]) -> None:
    served = serve(history_size=10)
    for _ in range(5):
        run_task(served.emitter)
    client = served.client()
    status = subscribe(client, since=3)
    assert status["resync"] is True
    assert status["seq"] == 25
    assert status["status"]["last"]["outcome"] == "completed"
    assert client.updates() == []
    # a seq from a server that has since restarted asks for a resync too
    assert subscribe(client, since=999)["resync"] is True


# -- bad input ----------------------------------------------------------------------------

MALFORMED: list[tuple[str, tuple[Any, ...], str | None]] = [
    ("subscribe_task", (), "config_name"),
    ("subscribe_task", ("aws01",), None),
    ("subscribe_task", (42,), None),
    ("subscribe_task", (3.5,), None),
    ("subscribe_task", (True,), None),
    ("subscribe_task", ([],), None),
    ("subscribe_task", (["aws01"],), None),
    ("subscribe_task", (b"\x00\x01",), None),
    ("subscribe_task", ({},), "config_name"),
    ("subscribe_task", ({"config_name": None},), "config_name"),
    ("subscribe_task", ({"config_name": 1},), "config_name"),
    ("subscribe_task", ({"config_name": ""},), "config_name"),
    ("subscribe_task", ({"config_name": "a" * 129},), "config_name"),
    ("subscribe_task", ({"config_name": "../etc/passwd"},), "config_name"),
    ("subscribe_task", ({"config_name": "aws 01"},), "config_name"),
    ("subscribe_task", ({"config_name": "<script>"},), "config_name"),
    ("subscribe_task", ({"config_name": "aws\n01"},), "config_name"),
    ("subscribe_task", ({"config_name": "\x00"},), "config_name"),
    ("subscribe_task", ({"config_name": "aws01", "stream": 7},), "stream"),
    ("subscribe_task", ({"config_name": ["aws01"]},), "config_name"),
    ("subscribe_task", ({"config_name": {"name": "aws01"}},), "config_name"),
    ("subscribe_task", ({"config_name": "aws01", "colour": "red"},), "colour"),
    ("subscribe_task", ({"config_name": "aws01", "since": -1},), "since"),
    ("subscribe_task", ({"config_name": "aws01", "since": "5"},), "since"),
    ("subscribe_task", ({"config_name": "aws01", "since": 1.5},), "since"),
    ("subscribe_task", ({"config_name": "aws01", "since": True},), "since"),
    ("subscribe_task", ({"config_name": "nope"},), "config_name"),
    ("subscribe_task", ({"config_name": "aws01"}, 2), None),
    ("unsubscribe_task", (), "config_name"),
    ("unsubscribe_task", ("aws01",), None),
    ("unsubscribe_task", ({"config_name": 5},), "config_name"),
    ("unsubscribe_task", ({"config_name": "aws01", "now": True},), "now"),
    ("get_all_tasks", ({"filter": "aws"},), "filter"),
    ("get_all_tasks", ("all",), None),
    ("subscribe", ({"config_name": "aws01"},), None),
    ("task_status_update", ({"config_name": "aws01"},), None),
]


def test_malformed_payloads_get_clear_errors_and_disturb_no_one(
    serve: Callable[..., Served],
) -> None:
    assert len(MALFORMED) >= 25
    served = serve()
    bystander = served.client()
    subscribe(bystander)
    served.emitter.started("aws01", "change_ip")
    sender = served.client()
    for index, (event, args, field) in enumerate(MALFORMED):
        sender.emit(event, *args)
        error = sender.wait_for("error")
        assert error["event"] == event, (event, args, error)
        assert event in error["message"] or "unknown event" in error["message"]
        if field is not None:
            assert error["field"] == field, (event, args, error)
        served.emitter.progress("aws01", index)
    served.emitter.completed("aws01")
    # the bystander saw the task's updates in order: its start, its progress (a progress
    # may be merged into the next while the adapter's worker is busy), the latest
    # progress, and its completion
    bystander.wait_for("task_status_update", lambda p: p["update"]["event"] == "task_completed")
    seqs = [u["seq"] for u in bystander.updates()]
    last = len(MALFORMED) + 2
    assert seqs == sorted(set(seqs))
    assert seqs[0] == 1
    assert seqs[-2:] == [last - 1, last]
    assert len(seqs) > len(MALFORMED) // 2
    # and the sender's connection still works
    assert subscribe(sender)["seq"] == len(MALFORMED) + 2
    # nothing was created by subscribing to unknown subjects
    assert served.emitter.state.subjects() == ["aws01", "aws02", "aws03"]


def test_a_subscribe_flood_is_rate_limited_and_joins_are_not_repeated(
    serve: Callable[..., Served],
) -> None:
    served = serve(subjects={name: {} for name in SUBJECTS}, max_subscriptions=20)
    run_task(served.emitter, steps=30)
    flooder = served.client()
    bystander = served.client()
    subscribe(bystander)
    for _ in range(60):
        flooder.emit("subscribe_task", {"config_name": "aws01", "since": 0})
    got = flooder.drain(0.5)
    errors = [p for name, p in got if name == "error"]
    statuses = [p for name, p in got if name == "task_status"]
    assert len(errors) >= 60 - 20 - 5  # 20 at once, then 5 a second refill
    assert all("too many requests" in e["message"] for e in errors)
    assert all(e["retry_after"] == 0.2 for e in errors)
    assert 1 <= len(statuses) <= 25
    # the bystander's updates are not held up behind the replays
    started = served.emitter.started("aws01", "change_ip")
    assert bystander.wait_for("task_status_update", timeout=2)["seq"] == started.seq
    # and the flooder, for all its joins, is in the room once: one copy of a live update
    flooder.wait_for("task_status_update", lambda p: p["seq"] == started.seq, timeout=5)
    later = [
        p
        for name, p in flooder.drain(0.5)
        if name == "task_status_update" and p["seq"] == started.seq
    ]
    assert later == []


def test_too_many_subscriptions_are_refused(serve: Callable[..., Served]) -> None:
    served = serve(max_subscriptions=2)
    client = served.client()
    subscribe(client, "aws01")
    subscribe(client, "aws02")
    subscribe(client, "aws01")  # again: not a new one
    client.emit("subscribe_task", {"config_name": "aws03"})
    error = client.wait_for("error")
    assert "at most 2 subscriptions" in error["message"]
    client.emit("unsubscribe_task", {"config_name": "aws02"})
    client.wait_for("unsubscribed")
    assert subscribe(client, "aws03")["config_name"] == "aws03"


# -- authentication and authorisation -----------------------------------------------------


def test_unauthenticated_connect_is_refused(serve: Callable[..., Served]) -> None:
    served = serve(authenticate=by_token, authorize=only_own)
    for auth in (None, {"token": "wrong"}, "alice-token"):
        refused = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            refused.connect(served.url, auth=auth)
        assert refused.connect_errors == [{"message": "authentication failed"}]
    assert served.adapter.client_count == 0
    alice = served.client(auth={"token": "alice-token"})
    assert alice.next()[0] == "connection_status"


def test_unauthorised_subscribe_is_refused_and_all_tasks_filtered(
    serve: Callable[..., Served],
) -> None:
    served = serve(authenticate=by_token, authorize=only_own)
    alice = served.client(auth={"token": "alice-token"})
    bob = served.client(auth={"token": "bob-token"})
    alice.emit("subscribe_task", {"config_name": "aws03"})
    error = alice.wait_for("error")
    assert error["field"] == "config_name"
    assert "not authorised" in error["message"]
    alice.emit("get_all_tasks")
    assert sorted(alice.wait_for("all_tasks")) == ["aws01", "aws02"]
    bob.emit("get_all_tasks")
    assert sorted(bob.wait_for("all_tasks")) == ["aws03"]
    assert subscribe(bob, "aws03")["config_name"] == "aws03"
    run_task(served.emitter, "aws03")
    bob.wait_for("task_status_update", lambda p: p["update"]["event"] == "task_completed")
    assert [u for u in alice.drain(0.2) if u[0] == "task_status_update"] == []


@pytest.mark.flask_only
def test_authenticate_runs_in_the_flask_request_context(serve: Callable[..., Served]) -> None:
    seen: list[str] = []

    def from_header(environ: Any, auth: Any) -> str | None:
        seen.append(flask.request.headers.get("X-User", ""))
        return flask.request.headers.get("X-User") or None

    served = serve(authenticate=from_header)
    client = served.client(headers={"X-User": "carol"})
    assert client.next()[0] == "connection_status"
    assert "carol" in seen


def test_a_raising_authorize_hook_denies_and_is_counted(serve: Callable[..., Served]) -> None:
    def broken(identity: Any, subject: str) -> bool:
        raise RuntimeError("policy store down")

    served = serve(authorize=broken)
    client = served.client()
    client.emit("subscribe_task", {"config_name": "aws01"})
    assert "not authorised" in client.wait_for("error")["message"]
    assert served.adapter.hook_errors.count >= 1
    assert served.adapter.error_count == 0  # delivery errors are counted apart


def test_an_outcome_while_another_task_runs_says_busy(serve: Callable[..., Served]) -> None:
    served = serve()
    client = served.client()
    subscribe(client)
    first = served.emitter.started("aws01", "change_ip")
    second = served.emitter.started("aws01", "reboot", exclusive=False)
    served.emitter.completed("aws01", task_id=second.task_id)
    served.emitter.completed("aws01", task_id=first.task_id)
    client.wait_for("task_status_update", lambda p: p["seq"] == 4)
    ends = [u["update"] for u in client.updates() if u["update"]["event"] == "task_completed"]
    assert [(u["task_id"], u["status"]) for u in ends] == [
        (second.task_id, "busy"),
        (first.task_id, "idle"),
    ]


def test_merge_progress_merges_only_one_tasks_runs() -> None:
    emitter = Emitter(exclusive=False)
    with capture_events() as events:
        a = emitter.started("aws01", "change_ip")
        emitter.progress("aws01", 10, task_id=a.task_id)
        emitter.progress("aws01", 20, task_id=a.task_id)
        b = emitter.started("aws01", "reboot")
        emitter.progress("aws01", 30, task_id=a.task_id)
        emitter.progress("aws01", 5, task_id=b.task_id)
        emitter.completed("aws01", task_id=a.task_id)
    merged = [(e.type, e.data.get("percent")) for e in merge_progress(events)]
    assert merged == [
        ("task_started", None),
        ("task_progress", 20),
        ("task_started", None),
        ("task_progress", 30),
        ("task_progress", 5),
        ("task_completed", None),
    ]


def test_concurrent_all_tasks_requests_share_one_read_of_the_store() -> None:
    """A crowd of get_all_tasks costs one snapshot_all (on Redis, with thousands of
    subjects, most of a second each), and each still gets what was there when it came."""
    from taskevents import MemoryStateStore, SubjectState

    class SlowStore(MemoryStateStore):
        reads = 0

        def snapshot_all(self) -> dict[str, SubjectState]:
            SlowStore.reads += 1
            time.sleep(0.3)
            return super().snapshot_all()

    emitter = Emitter(state=SlowStore())
    emitter.register("aws01")
    adapter = SocketIOAdapter(socketio.Server(async_mode="threading"), emitter)
    try:
        answers: list[dict[str, Any]] = []
        threads = [
            threading.Thread(target=lambda: answers.append(adapter.all_tasks())) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(answers) == 8
        assert all(set(answer) == {"aws01"} for answer in answers)
        assert SlowStore.reads <= 2  # one under way when the first came, one after
        # A request after the reads ended reads again: it sees what changed.
        emitter.register("aws02")
        assert set(adapter.all_tasks()) == {"aws01", "aws02"}
    finally:
        adapter.close()
