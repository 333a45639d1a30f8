"""The Socket.IO protocol without a server: what clients are sent, how their requests
are read, rate limits, access and resume decisions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from taskevents import Emitter, MemoryStateStore, ValidationError
from taskevents.adapters.socketio.protocol import (
    RESERVED_EVENTS,
    AccessPolicy,
    BadRequest,
    Expiring,
    Subscribe,
    TokenBucket,
    all_tasks_payload,
    effective_since,
    join_messages,
    merge_progress,
    parse_get_all,
    parse_subscribe,
    parse_unsubscribe,
    resolve_identity,
    room_for,
    snapshot_payload,
    too_many_requests,
    unknown_event,
    update_payload,
)


def payload_of(call: Any, *args: Any) -> dict[str, Any]:
    with pytest.raises(BadRequest) as caught:
        call(*args)
    payload: dict[str, Any] = caught.value.payload
    return payload


# -- requests ------------------------------------------------------------------------------


def test_a_valid_subscribe_is_read_with_its_options() -> None:
    assert parse_subscribe(({"config_name": "aws01"},)) == Subscribe("aws01")
    assert parse_subscribe(({"config_name": "aws01", "since": 4, "stream": "s"},)) == Subscribe(
        "aws01", 4, "s"
    )
    assert parse_unsubscribe(({"config_name": "aws01"},)) == "aws01"
    parse_get_all(())
    parse_get_all(({},))
    parse_get_all((None,))


@pytest.mark.parametrize(
    ("args", "field", "words"),
    [
        ((), "config_name", "needs an object with 'config_name'"),
        ((None,), "config_name", "needs an object"),
        (("aws01",), None, "expects an object, got a string"),
        (([1],), None, "expects an object, got an array"),
        (({"config_name": "a"}, {}), None, "takes one argument"),
        (({"config_name": 1},), "config_name", "must be a string, got a number"),
        (({"config_name": ""},), "config_name", "1 to 128 characters"),
        (({"config_name": "x" * 129},), "config_name", "1 to 128 characters"),
        (({"config_name": "a\nb"},), "config_name", "no control characters"),
        (({"config_name": "a", "since": -1},), "since", "whole number >= 0"),
        (({"config_name": "a", "since": True},), "since", "got a boolean"),
        (({"config_name": "a", "since": 1.5},), "since", "got a number"),
        (({"config_name": "a", "stream": 5},), "stream", "stream must be a string"),
        (({"config_name": "a", "extra": 1},), "extra", "unknown field 'extra'"),
    ],
)
def test_bad_subscribes_name_the_field_and_never_echo_the_value(
    args: tuple[Any, ...], field: str | None, words: str
) -> None:
    payload = payload_of(parse_subscribe, args)
    assert payload["event"] == "subscribe_task"
    assert words in payload["message"]
    assert payload.get("field") == field
    assert "\n" not in payload["message"]


def test_get_all_tasks_takes_no_fields_and_unknown_events_are_named() -> None:
    payload = payload_of(parse_get_all, ({"x": 1},))
    assert payload["field"] == "x"
    assert payload["expected"] == "no fields"
    unknown = unknown_event("x" * 100).payload
    assert unknown["event"] == "x" * 64  # cut: never echo a huge name back
    assert "unknown event" in unknown["message"]
    assert len(unknown["message"]) < 160
    assert {"connect", "disconnect", "*"} <= RESERVED_EVENTS


def test_rate_limit_answers_carry_retry_after() -> None:
    payload = too_many_requests("subscribe_task", 20, 5.0, config_name="aws01").payload
    assert payload["retry_after"] == 0.2
    assert payload["config_name"] == "aws01"
    assert "at most 20 at once, then 5 per second" in payload["message"]


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(3, 2.0, now=0.0)
    assert [bucket.take(now=0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(now=0.4) is False  # 0.8 of a token
    assert bucket.take(now=0.5) is True
    assert bucket.take(now=100.0) is True
    assert bucket.tokens == 2.0  # refilled to the burst, not beyond


# -- access ------------------------------------------------------------------------------------


def test_access_policy_combines_subjects_and_the_hook_and_contains_its_errors() -> None:
    reported: list[str] = []

    def authorize(identity: Any, subject: str) -> bool:
        if identity == "broken":
            raise RuntimeError("directory down")
        return bool(identity == "alice" or subject == "public")

    policy = AccessPolicy(
        authorize, frozenset({"aws01", "public"}), lambda exc, doing: reported.append(doing)
    )
    assert policy.allowed("alice", "aws01")
    assert not policy.allowed("alice", "aws02")  # not served at all
    assert policy.allowed("bob", "public")
    assert not policy.allowed("bob", "aws01")
    assert not policy.allowed("broken", "public")
    assert reported == ["in the authorize hook"]
    assert AccessPolicy(None, None, lambda exc, doing: None).allowed(None, "anything")


def test_resolve_identity_understands_expiring_identities() -> None:
    assert resolve_identity(None) == (False, None, None)
    assert resolve_identity(False) == (False, None, None)
    assert resolve_identity("alice") == (True, "alice", None)
    accepted, identity, left = resolve_identity(
        Expiring("alice", datetime.now(timezone.utc) + timedelta(seconds=60))
    )
    assert (accepted, identity) == (True, "alice")
    assert left is not None
    assert 55 < left <= 60
    assert resolve_identity(Expiring("alice", 0.0))[0] is False
    with pytest.raises(ValidationError):
        resolve_identity(Expiring("alice", datetime(2099, 1, 1)))  # naive
    with pytest.raises(ValidationError):
        resolve_identity(Expiring("alice", "tomorrow"))  # type: ignore[arg-type]


# -- messages --------------------------------------------------------------------------------


def test_payloads_keep_the_original_shapes() -> None:
    emitter = Emitter(source="tests")
    emitter.register("aws01", aws_current_region="eu-west-1")
    started = emitter.started("aws01", "change_ip")
    progress = emitter.progress("aws01", 40, stage="execution", message="Changing IP...")
    completed = emitter.completed("aws01", {"ip": "203.0.113.7"})
    assert room_for("aws01") == "task_aws01"
    assert update_payload(started)["update"] == {
        "event": "task_started",
        "task_type": "change_ip",
        "status": "busy",
        "task_id": started.task_id,
    }
    assert update_payload(progress)["update"]["progress"]["percent"] == 40
    done = update_payload(completed)
    assert done["update"]["result"] == {"ip": "203.0.113.7"}
    assert done["update"]["status"] == "idle"
    assert update_payload(completed, still_busy=True)["update"]["status"] == "busy"
    assert done["seq"] == 3
    assert done["event_id"] == completed.id
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    status = snapshot_payload(snapshot, stream="s")
    assert status["config_name"] == "aws01"
    assert status["stream"] == "s"
    assert status["status"]["status"] == "idle"
    listing = all_tasks_payload(emitter.state.snapshot_all(), lambda subject: False)
    assert listing == {}


def test_join_messages_snapshot_resume_and_resync() -> None:
    store = MemoryStateStore(history_size=4)
    emitter = Emitter(source="tests", state=store)
    emitter.started("aws01", "change_ip")
    for percent in range(1, 4):
        emitter.progress("aws01", percent * 10)
    emitter.completed("aws01")
    snapshot = store.snapshot("aws01")
    assert snapshot is not None
    plain = join_messages(snapshot, None, None, "s")
    assert [name for name, _ in plain] == ["task_status"]
    assert "resumed" not in plain[0][1]
    replay = store.history("aws01", 1)
    resumed = join_messages(snapshot, 1, replay, "s")
    assert [name for name, _ in resumed] == [
        "task_status_update",
        "task_status_update",
        "task_status",
    ]
    assert [p["seq"] for _, p in resumed[:2]] == [4, 5]  # progress merged to its latest
    assert all(p["replayed"] for _, p in resumed[:2])
    assert resumed[-1][1]["resumed"] is True
    resync = join_messages(snapshot, 0, store.history("aws01", 0), "s")
    assert resync[0][1]["resync"] is True  # the history no longer reaches seq 1
    assert effective_since(3, "other-stream", "s") == -1
    assert effective_since(3, "s", "s") == 3
    assert effective_since(3, None, "s") == 3
    assert effective_since(None, "other", "s") is None
    assert len(merge_progress(store.history("aws01", 1) or [])) == 2
