"""Hostile Socket.IO clients and what the server owes everyone else: no identity swap
through reserved event names, no stalled stream behind one bad event, rate-limited
expensive requests, and access that can be withdrawn."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
import requests
import socketio

from taskevents import TaskEvent, ValidationError
from taskevents.adapters.socketio import Expiring
from taskevents.signals import SIGNALS
from tests.support.socketio import Client, Served, by_token, only_own, run_task, subscribe

pytestmark = pytest.mark.both_servers


def errors_of(client: Client, quiet: float = 0.3) -> list[dict[str, Any]]:
    return [payload for name, payload in client.drain(quiet) if name == "error"]


# -- 1. reserved event names never reach the connection handlers ---------------------------


def test_a_client_event_named_connect_cannot_swap_the_identity(
    serve: Callable[..., Served],
) -> None:
    calls: list[Any] = []

    def counting(environ: Any, auth: Any) -> str | None:
        calls.append(auth)
        return by_token(environ, auth)

    served = serve(authenticate=counting, authorize=only_own, max_subscriptions=1)
    alice = served.client(auth={"token": "alice-token"})
    subscribe(alice, "aws01")
    # as python-socketio would call the connect handler: (environ, auth)
    alice.emit("connect", {"HTTP_X_USER": "bob"}, {"token": "bob-token"})
    error = alice.wait_for("error")
    assert error["event"] == "connect"
    assert "unknown event" in error["message"]
    assert calls == [{"token": "alice-token"}]  # authenticate ran once, for the real connect
    # still alice: bob's subject is refused, and the subscription cap was not reset
    alice.emit("subscribe_task", {"config_name": "aws03"})
    assert "not authorised" in alice.wait_for("error")["message"]
    alice.emit("subscribe_task", {"config_name": "aws02"})
    assert "at most 1 subscriptions" in alice.wait_for("error")["message"]


def test_a_client_event_named_disconnect_does_not_make_the_server_forget_it(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    client = served.client()
    subscribe(client, "aws01")
    client.emit("disconnect", "client namespace disconnect")
    assert client.wait_for("error")["event"] == "disconnect"
    assert served.adapter.client_count == 1
    # the client is still served: its subscription streams, and new requests are answered
    started = served.emitter.started("aws01", "change_ip")
    assert client.wait_for("task_status_update")["seq"] == started.seq
    assert subscribe(client, "aws02")["config_name"] == "aws02"


def test_a_client_event_named_star_is_answered_like_any_unknown_event(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    bystander = served.client()
    bystander_sid = bystander.wait_for("connection_status")["client_id"]
    sender = served.client()
    sender.wait_for("connection_status")
    for name, args in (("*", (bystander_sid,)), ("*", ()), ("connect_error", ({"x": 1},))):
        sender.emit(name, *args)
        assert sender.wait_for("error")["event"] == name
    assert errors_of(bystander) == []
    assert served.adapter.error_count == 0


def test_the_connect_handler_called_without_its_arguments_does_not_raise(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    assert served.adapter._on_connect("no-such-sid") is None
    served.adapter._on_disconnect("no-such-sid")
    assert served.adapter.client_count == 0


# -- 2. one event no sink can encode stalls nothing -----------------------------------------


def test_an_unencodable_event_is_dropped_and_every_other_subject_keeps_streaming(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    watcher = served.client()
    subscribe(watcher, "aws01")
    subscribe(watcher, "aws02")
    # The emitter refuses it now...
    served.emitter.started("aws01", "change_ip")
    with pytest.raises(ValidationError):
        served.emitter.completed("aws01", 10**5000)
    assert requests.get(served.url + "/api/tasks", timeout=5).status_code == 200
    # ...but another process (or a custom emitter) could still send one.
    bad = TaskEvent(
        "bad-1",
        "task_progress",
        "aws01",
        "t",
        "change_ip",
        99,
        datetime.now(timezone.utc),
        "elsewhere",
        {"n": 10**5000},
    )
    SIGNALS["task_progress"].send(served.emitter, event=bad)
    events = run_task(served.emitter, "aws02")
    done = watcher.wait_for(
        "task_status_update", lambda p: p["seq"] == events[-1].seq and p["config_name"] == "aws02"
    )
    assert done["update"]["event"] == "task_completed"
    assert served.flush(5)
    assert served.adapter.stats["rejected"] == 1


# -- 3 (part). get_all_tasks is rate-limited ---------------------------------------------------


def test_a_get_all_tasks_flood_is_rate_limited(serve: Callable[..., Served]) -> None:
    served = serve()
    flooder = served.client()
    bystander = served.client()
    subscribe(bystander, "aws01")
    for _ in range(40):
        flooder.emit("get_all_tasks")
    answers: list[tuple[str, Any]] = []
    deadline = time.monotonic() + 5
    while len(answers) < 40 and time.monotonic() < deadline:
        name, payload = flooder.next()
        if name in ("all_tasks", "error"):
            answers.append((name, payload))
    lists = [p for n, p in answers if n == "all_tasks"]
    errors = [p for n, p in answers if n == "error"]
    assert len(answers) == 40
    assert 5 <= len(lists) <= 5 + 5  # 5 at once, then 1 a second
    assert all("too many requests" in e["message"] for e in errors)
    assert all(e["retry_after"] == 1.0 for e in errors)
    started = served.emitter.started("aws01", "change_ip")
    assert bystander.wait_for("task_status_update", timeout=2)["seq"] == started.seq


# -- 7. forgotten subjects ---------------------------------------------------------------------


def test_clients_of_a_forgotten_subject_are_told_and_stop_receiving_it(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    client = served.client()
    subscribe(client, "aws01")
    subscribe(client, "aws02")
    run_task(served.emitter, "aws01")
    assert served.emitter.forget("aws01")
    gone = client.wait_for("unsubscribed")
    assert gone == {"config_name": "aws01", "reason": "forgotten"}
    served.emitter.started("aws01", "change_ip")  # a new stream, not watched
    started = served.emitter.started("aws02", "change_ip")
    update = client.wait_for("task_status_update", lambda p: p["config_name"] == "aws02")
    assert update["seq"] == started.seq
    after = client.seen[client.seen.index(("unsubscribed", gone)) :]
    assert [p for n, p in after if n == "task_status_update" and p["config_name"] == "aws01"] == []


def test_retention_tells_clients_why_a_job_subject_went_away(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    emitter = served.emitter
    emitter.started("job-42", "export")
    client = served.client()
    subscribe(client, "job-42")
    emitter.completed("job-42", {"rows": 10})
    client.wait_for("task_status_update", lambda p: p["update"]["event"] == "task_completed")
    emitter.idle_subject_seconds = 0.01
    time.sleep(0.05)
    assert emitter.forget_idle() == ["job-42"]
    assert client.wait_for("unsubscribed") == {"config_name": "job-42", "reason": "expired"}
    assert sorted(emitter.state.subjects()) == ["aws01", "aws02", "aws03"]  # registered kept


# -- 8. access can be withdrawn ------------------------------------------------------------------


def test_revoke_withdraws_an_identitys_subscriptions_at_once(
    serve: Callable[..., Served],
) -> None:
    served = serve(authenticate=by_token)
    alice = served.client(auth={"token": "alice-token"})
    bob = served.client(auth={"token": "bob-token"})
    for client in (alice, bob):
        subscribe(client, "aws01")
        subscribe(client, "aws02")
    assert served.adapter.revoke("alice", "aws01") == 1
    assert alice.wait_for("unsubscribed") == {"config_name": "aws01", "reason": "revoked"}
    started = served.emitter.started("aws01", "change_ip")
    assert bob.wait_for("task_status_update")["seq"] == started.seq
    other = served.emitter.started("aws02", "change_ip")
    assert alice.wait_for("task_status_update")["seq"] == other.seq  # aws02 still watched
    assert not [
        p for n, p in alice.seen if n == "task_status_update" and p["config_name"] == "aws01"
    ]
    assert served.adapter.revoke("alice") == 1  # everything else
    assert alice.wait_for("unsubscribed") == {"config_name": "aws02", "reason": "revoked"}


def test_recheck_access_withdraws_what_authorize_now_refuses(
    serve: Callable[..., Served],
) -> None:
    allowed = {("alice", "aws01"), ("alice", "aws02")}
    served = serve(authenticate=by_token, authorize=lambda who, what: (who, what) in allowed)
    alice = served.client(auth={"token": "alice-token"})
    subscribe(alice, "aws01")
    subscribe(alice, "aws02")
    allowed.discard(("alice", "aws02"))
    assert served.adapter.recheck_access() == 1
    assert alice.wait_for("unsubscribed") == {"config_name": "aws02", "reason": "revoked"}
    alice.emit("subscribe_task", {"config_name": "aws02"})
    assert "not authorised" in alice.wait_for("error")["message"]


def test_an_expiring_identity_is_disconnected_when_it_expires(
    serve: Callable[..., Served],
) -> None:
    def expiring(environ: Any, auth: Any) -> Any:
        seconds = auth.get("seconds") if isinstance(auth, dict) else None
        return Expiring("alice", time.time() + seconds) if seconds is not None else None

    served = serve(authenticate=expiring)
    refused = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(served.url, auth={"seconds": -1})
    client = served.client(auth={"seconds": 0.6})
    subscribe(client, "aws01")
    error = client.wait_for("error", timeout=5)
    assert error["reason"] == "expired"
    deadline = time.monotonic() + 5
    while client.sio.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.sio.connected
    assert served.adapter.client_count == 0
    # one that has not expired is still served
    fresh = served.client(auth={"seconds": 60})
    assert subscribe(fresh, "aws01")["config_name"] == "aws01"


def test_rest_calls_honour_an_expiring_identity(serve: Callable[..., Served]) -> None:
    def expiring(environ: Any, auth: Any) -> Any:
        token = auth.get("token") if isinstance(auth, dict) else None
        if token == "old":
            return Expiring("alice", datetime(2000, 1, 1, tzinfo=timezone.utc))
        if token == "new":
            return Expiring("alice", time.time() + 60)
        return None

    served = serve(authenticate=expiring)
    old = requests.get(
        served.url + "/api/tasks", headers={"Authorization": "Bearer old"}, timeout=5
    )
    assert old.status_code == 401
    new = requests.get(
        served.url + "/api/tasks", headers={"Authorization": "Bearer new"}, timeout=5
    )
    assert new.status_code == 200


def test_what_a_client_sends_never_reaches_the_log_through_a_failing_hook(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    users = {"alice-token": "alice"}

    def careless(environ: Any, auth: Any) -> str:
        return users[auth["token"]]  # KeyError('<the token>') for a wrong one

    served = serve(authenticate=careless)
    with caplog.at_level(logging.DEBUG, logger="taskevents"):
        refused = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            refused.connect(served.url, auth={"token": "bob-SECRET-token"})
        response = requests.get(
            served.url + "/api/tasks",
            headers={"Authorization": "Bearer carol-SECRET-token"},
            timeout=5,
        )
    assert response.status_code == 401
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "SECRET" not in text
    assert not [r for r in caplog.records if r.exc_info and "SECRET" in str(r.exc_info[1])]
    assert served.adapter.hook_errors.count == 2
    assert "KeyError" in text


def test_client_events_named_connect_never_reach_an_apps_own_namespace_either(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    connects: list[str] = []
    sio = served.adapter.sio
    sio.on("connect", lambda sid, environ, auth=None: connects.append(sid), namespace="/app")
    client = Client().connect(served.url, namespace="/app")
    try:
        client.emit("connect", {"HTTP_X_USER": "bob"}, None, namespace="/app")
        client.emit("connect", namespace="/app")
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(connects) == 1  # the real connect only
    finally:
        client.close()


def test_a_huge_unknown_event_name_is_not_echoed_back(serve: Callable[..., Served]) -> None:
    served = serve()
    client = served.client()
    client.emit("x" * 100_000)
    error = client.wait_for("error")
    assert error["event"] == "x" * 64
    assert len(str(error)) < 400


def test_an_expiring_identity_with_nan_is_refused() -> None:
    from taskevents.adapters.socketio import Expiring, resolve_identity

    with pytest.raises(ValidationError):
        resolve_identity(Expiring("alice", float("nan")))
