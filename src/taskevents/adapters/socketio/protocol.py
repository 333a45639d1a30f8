"""The taskevents Socket.IO protocol, without any I/O.

Everything the server decides lives here, where it can be tested without a server:
the messages it sends (``update_payload``, ``snapshot_payload``, ``join_messages``),
how it reads what clients send (``parse_subscribe`` and friends, which raise
``BadRequest``), the per-client rate limit (``TokenBucket``), the auth policy
(``AccessPolicy``, ``Expiring``, ``resolve_identity``) and what a resume answers
(``effective_since``, ``join_messages``). ``taskevents.adapters.socketio.server``
binds it to python-socketio; an asyncio server can bind the same module.
"""

from __future__ import annotations

import inspect
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from taskevents._checks import MAX_SUBJECT_LENGTH, SUBJECT_RULE, is_valid_name
from taskevents.events import (
    TASK_CANCELLED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_PROGRESS,
    TASK_STARTED,
    TaskEvent,
)
from taskevents.exceptions import ValidationError
from taskevents.state import SubjectState, TaskInfo

__all__ = [
    "CLIENT_EVENTS",
    "MAX_SUBJECT_LENGTH",
    "PROTOCOL_VERSION",
    "RESERVED_EVENTS",
    "AccessPolicy",
    "Authenticate",
    "Authorize",
    "BadRequest",
    "Expiring",
    "SubjectBudget",
    "Subscribe",
    "TokenBucket",
    "all_tasks_payload",
    "budget_key",
    "effective_since",
    "join_messages",
    "merge_progress",
    "parse_get_all",
    "parse_subscribe",
    "parse_unsubscribe",
    "resolve_identity",
    "room_for",
    "snapshot_payload",
    "status_object",
    "too_many_requests",
    "unknown_event",
    "update_payload",
]

#: Version of the protocol superset; sent in ``connection_status``.
PROTOCOL_VERSION = 2
#: The events a client may send.
CLIENT_EVENTS = ("subscribe_task", "unsubscribe_task", "get_all_tasks")
#: Client event names that python-socketio would route to its connection handlers;
#: the server answers them as unknown events.
RESERVED_EVENTS = frozenset(("connect", "disconnect", "connect_error", "*"))

#: ``authenticate(environ, auth) -> identity``: environ is the WSGI environ of the
#: connection, auth what the client sent as ``auth``. Return None or False to refuse,
#: or an :class:`~taskevents.adapters.socketio.Expiring` identity to have the
#: connection closed when it expires.
Authenticate = Callable[[Mapping[str, Any], Any], Any]
#: ``authorize(identity, subject) -> bool``: may this client watch this subject?
Authorize = Callable[[Any, str], bool]

_MISSING: Any = object()


# -- messages to clients ------------------------------------------------------------------


def room_for(subject: str) -> str:
    """The Socket.IO room of a subject, named as the original system named it."""
    return "task_" + subject


def timestamp(value: datetime | None = None) -> str:
    """ISO 8601 with the UTC offset: now, or ``value``."""
    return (value or datetime.now(timezone.utc)).isoformat()


def update_payload(event: TaskEvent, *, still_busy: bool = False) -> dict[str, Any]:
    """The ``task_status_update`` message for ``event``.

    ``update`` holds exactly what the original system sent (``event``, then
    ``task_type`` and ``status`` for a start, ``progress`` for progress, ``result`` and
    ``status`` for a completion), plus new keys only. An event of a declared type
    (:func:`~taskevents.define_event_type`) has its data under ``data``.

    :param still_busy: for an outcome, whether other tasks still run on the subject
        (possible with ``exclusive=False``); ``status`` is then ``"busy"``.
    """
    end_status = "busy" if still_busy else "idle"
    data = event.data
    type_ = event.type
    update: dict[str, Any] = {"event": type_}
    if type_ == TASK_STARTED:
        update["task_type"] = event.task_type
        update["status"] = "busy"
        if data:
            update["details"] = dict(data)
    elif type_ == TASK_PROGRESS:
        update["progress"] = dict(data)
        if "percent" in data:
            update["percent"] = data["percent"]
    elif type_ == TASK_COMPLETED:
        update["result"] = data.get("result")
        update["status"] = end_status
    elif type_ == TASK_FAILED:
        update["error"] = data.get("error")
        update["status"] = end_status
    elif type_ == TASK_CANCELLED:
        update["reason"] = data.get("reason")
        update["status"] = end_status
    else:  # a type the application declared
        update["data"] = dict(data)
    update["task_id"] = event.task_id
    if type_ != TASK_STARTED:
        update["task_type"] = event.task_type
    return {
        "config_name": event.subject,
        "update": update,
        "timestamp": timestamp(event.time),
        "seq": event.seq,
        "event_id": event.id,
    }


def _original_last_task(task: TaskInfo | None) -> dict[str, Any]:
    """``last_task`` as the original system kept it: ``{}`` before any task has ended,
    then its type, times, ``"success"`` or ``"failed"``, and what it returned."""
    if task is None:
        return {}
    if task.outcome == "completed":
        status, data = "success", task.result
    elif task.outcome == "failed":
        status, data = "failed", dict(task.error) if task.error is not None else None
    else:  # cancelled: the original had no such outcome; it did not succeed
        status, data = "failed", {"reason": task.reason}
    return {
        "task_type": task.task_type,
        "start_time": task.started_at.isoformat(),
        "end_time": task.ended_at.isoformat() if task.ended_at else None,
        "status": status,
        "data": data,
    }


def status_object(snapshot: SubjectState) -> dict[str, Any]:
    """A subject's status object, as ``task_status``, ``all_tasks`` and the REST
    endpoints send it: the original system's keys with their original meanings and
    types (``current_task`` is the running task's type, ``last_task`` the original's
    summary), then taskevents' own (``seq``, ``current``, ``last``, ``running_tasks``,
    ``metadata``). ``aws_current_region`` is the subject's metadata of that name."""
    current = snapshot.current
    last = snapshot.last
    metadata = dict(snapshot.metadata)
    return {
        "config_name": snapshot.subject,
        "status": snapshot.status,
        "current_task": current.task_type if current else None,
        "task_start_time": current.started_at.isoformat() if current else None,
        "aws_current_region": metadata.get("aws_current_region"),
        "last_task": _original_last_task(last),
        "seq": snapshot.seq,
        "current": current.to_dict() if current else None,
        "last": last.to_dict() if last else None,
        "running_tasks": [task.to_dict() for task in snapshot.running],
        "metadata": metadata,
    }


def snapshot_payload(
    snapshot: SubjectState, *, stream: str | None = None, **flags: bool
) -> dict[str, Any]:
    """The ``task_status`` message for a subject's snapshot."""
    payload: dict[str, Any] = {
        "config_name": snapshot.subject,
        "status": status_object(snapshot),
        "seq": snapshot.seq,
        "timestamp": timestamp(),
    }
    if stream is not None:
        payload["stream"] = stream
    payload.update(flags)
    return payload


def all_tasks_payload(
    snapshots: Mapping[str, SubjectState], allowed: Callable[[str], bool]
) -> dict[str, Any]:
    """The ``all_tasks`` message, as the original sent it: ``{config_name: status
    object}`` for every subject ``allowed`` admits, and nothing else (a subject may
    have any name, so no other key could be told from one)."""
    return {
        subject: status_object(snapshot)
        for subject, snapshot in snapshots.items()
        if allowed(subject)
    }


def merge_progress(events: Iterable[TaskEvent]) -> list[TaskEvent]:
    """Keep every lifecycle event, and of each run of one task's progress only the
    latest."""
    merged: list[TaskEvent] = []
    for event in events:
        if (
            event.type == TASK_PROGRESS
            and merged
            and merged[-1].type == TASK_PROGRESS
            and merged[-1].task_id == event.task_id
        ):
            merged[-1] = event
        else:
            merged.append(event)
    return merged


def effective_since(since: int | None, stream: str | None, stream_id: str) -> int | None:
    """The ``since`` a subscribe asks for, as this server's stream reads it: -1 for a
    seq from another stream (a restart), which can only be answered with a resync."""
    if since is not None and stream is not None and stream != stream_id:
        return -1
    return since


def join_messages(
    snapshot: SubjectState,
    since: int | None,
    replay: Sequence[TaskEvent] | None,
    stream_id: str,
) -> list[tuple[str, dict[str, Any]]]:
    """What a new subscriber is sent, in order, before the live updates.

    Without ``since``: the snapshot. With it: the missed events (each task's progress
    merged to its latest), marked ``replayed``, then the snapshot marked ``resumed``;
    or, when ``replay`` is None (the history no longer reaches back, or the seq is from
    another stream), the snapshot marked ``resync``.
    """
    if since is None:
        return [("task_status", snapshot_payload(snapshot, stream=stream_id))]
    if replay is None:
        return [("task_status", snapshot_payload(snapshot, stream=stream_id, resync=True))]
    messages: list[tuple[str, dict[str, Any]]] = [
        ("task_status_update", {**update_payload(event), "replayed": True})
        for event in merge_progress(replay)
    ]
    messages.append(("task_status", snapshot_payload(snapshot, stream=stream_id, resumed=True)))
    return messages


# -- what clients send ----------------------------------------------------------------------


class BadRequest(Exception):
    """A client event the server refuses; its ``payload`` is the ``error`` message."""

    def __init__(self, event: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.payload: dict[str, Any] = {"message": message, "event": event, **details}


def describe(value: object) -> str:
    """A value's JSON kind, for error messages that never echo the value back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def unknown_event(name: object) -> BadRequest:
    """The answer to an event the protocol does not have."""
    text = str(name)[:64]  # never echo a huge name back to a client that may not read
    return BadRequest(
        text,
        f"unknown event {text!r}; expected one of {', '.join(CLIENT_EVENTS)}",
    )


class SubjectBudget:
    """How many subjects ``GET <prefix>`` may list for one client: ``burst`` at once,
    then ``rate`` a second. With a few dozen subjects nobody notices; with 10,000 (a
    list of several MB, most of a second to build) a client gets five lists at once,
    then one a second, and a client that loops cannot take the process's CPU from
    everyone else. A client is its identity (from the ``authenticate`` hook) or, if it
    has none, its address (``budget_key``). The Flask extension's REST endpoint and
    the Socket.IO adapter's ``get_all_tasks`` spend from one budget."""

    #: The clock it reads (seconds).
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, burst: float = 50_000, rate: float = 10_000) -> None:
        self.burst = burst
        self.rate = rate
        self._clients: dict[Any, tuple[float, float]] = {}  # key -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, client: Any, cost: int) -> float:
        """Spend ``cost`` (capped at ``burst``) for ``client``; 0.0 if it could, else the
        seconds until it can."""
        cost = min(max(cost, 1), int(self.burst))
        now = self.clock()
        with self._lock:
            if len(self._clients) >= 10_000:
                self._clients.clear()  # bounded; a reset is generous, not wrong
            tokens, when = self._clients.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - when) * self.rate)
            if tokens < cost:
                self._clients[client] = (tokens, now)
                return (cost - tokens) / self.rate
            self._clients[client] = (tokens - cost, now)
            return 0.0


def client_address(environ: Any) -> str | None:
    """The client's address in a (WSGI-like) ``environ``: the ASGI scope's ``client``
    when there is one (python-engineio's ASGI driver writes ``127.0.0.1`` into
    ``REMOTE_ADDR`` for every client), else ``REMOTE_ADDR``."""
    if not isinstance(environ, Mapping):
        return None
    scope = environ.get("asgi.scope")
    if isinstance(scope, Mapping):
        client = scope.get("client")
        if isinstance(client, (list, tuple)) and client and isinstance(client[0], str):
            return client[0]
        return None
    address = environ.get("REMOTE_ADDR")
    return address if isinstance(address, str) else None


def budget_key(identity: Any, address: str | None) -> Any:
    """Whose :class:`SubjectBudget` a request spends: its identity, or, without one, its
    address."""
    if identity is not None:
        try:
            hash(identity)
        except TypeError:
            return ("identity", repr(identity)[:200])
        return ("identity", identity)
    return ("address", address)


def too_many_requests(event: str, burst: int, rate: float, **details: Any) -> BadRequest:
    """The answer to a request beyond the client's rate limit."""
    return BadRequest(
        event,
        f"{event}: too many requests; at most {burst} at once, then {rate:g} per second",
        retry_after=round(1 / rate, 3),
        **details,
    )


def _fields(
    event: str, args: tuple[Any, ...], allowed: tuple[str, ...], required: tuple[str, ...]
) -> dict[str, Any]:
    """A client payload: one JSON object with only ``allowed`` fields."""
    if len(args) > 1:
        raise BadRequest(event, f"{event} takes one argument, an object; got {len(args)}")
    payload = args[0] if args else _MISSING
    if payload is _MISSING or payload is None:
        if required:
            raise BadRequest(
                event, f"{event} needs an object with {required[0]!r}", field=required[0]
            )
        return {}
    if not isinstance(payload, dict):
        raise BadRequest(
            event, f"{event} expects an object, got {describe(payload)}", expected="an object"
        )
    unknown = sorted(str(key) for key in payload if key not in allowed)
    if unknown:
        expected = ", ".join(allowed) if allowed else "no fields"
        raise BadRequest(
            event,
            f"{event}: unknown field {unknown[0][:64]!r}; expected {expected}",
            field=unknown[0][:64],
            expected=expected,
        )
    for name in required:
        if name not in payload:
            raise BadRequest(event, f"{event}: missing field {name!r}", field=name)
    return payload


def _subject(event: str, value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(
            event,
            f"{event}: config_name must be a string, got {describe(value)}",
            field="config_name",
            expected=SUBJECT_RULE,
        )
    if not is_valid_name(value, MAX_SUBJECT_LENGTH):
        raise BadRequest(
            event,
            f"{event}: config_name must be {SUBJECT_RULE}",
            field="config_name",
            expected=SUBJECT_RULE,
        )
    return value


@dataclass(frozen=True)
class Subscribe:
    """A valid ``subscribe_task``."""

    subject: str
    since: int | None = None
    stream: str | None = None


def parse_subscribe(args: tuple[Any, ...]) -> Subscribe:
    """Read a ``subscribe_task``'s arguments; :class:`BadRequest` names what is wrong."""
    event = "subscribe_task"
    fields = _fields(event, args, ("config_name", "since", "stream"), ("config_name",))
    subject = _subject(event, fields["config_name"])
    since = fields.get("since")
    stream = fields.get("stream")
    if stream is not None and not isinstance(stream, str):
        raise BadRequest(
            event,
            f"{event}: stream must be a string, got {describe(stream)}",
            field="stream",
            expected="the stream id from connection_status",
        )
    if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
        raise BadRequest(
            event,
            f"{event}: since must be a whole number >= 0, got {describe(since)}",
            field="since",
            expected="a whole number >= 0",
        )
    return Subscribe(subject, since, stream)


def parse_unsubscribe(args: tuple[Any, ...]) -> str:
    """Read an ``unsubscribe_task``'s arguments: the subject."""
    event = "unsubscribe_task"
    fields = _fields(event, args, ("config_name",), ("config_name",))
    return _subject(event, fields["config_name"])


def parse_get_all(args: tuple[Any, ...]) -> None:
    """Check a ``get_all_tasks``'s arguments: none, or an empty object."""
    _fields("get_all_tasks", args, (), ())


# -- limits and access ----------------------------------------------------------------------


class TokenBucket:
    """A per-client rate limit: ``burst`` requests at once, then ``rate`` per second."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, burst: int, rate: float, *, now: float | None = None) -> None:
        self.burst = float(burst)
        self.rate = rate
        self.tokens = float(burst)
        self.updated = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> bool:
        """Take a token if there is one."""
        if now is None:
            now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(frozen=True)
class Expiring:
    """What ``authenticate`` returns for an identity that is good until a given time
    (e.g. a token's expiry): the connection is closed then, after an ``error`` with
    ``reason: "expired"``; the client must connect again with fresh credentials.

    :param identity: the identity, as ``authenticate`` would return it otherwise.
    :param expires_at: an aware :class:`~datetime.datetime`, or a Unix timestamp.
    """

    identity: Any
    expires_at: datetime | float

    def seconds_left(self) -> float:
        """Seconds until expiry (negative once expired)."""
        expires = self.expires_at
        if isinstance(expires, datetime):
            if expires.tzinfo is None:
                raise ValidationError("expires_at", "an aware datetime", expires)
            return (expires - datetime.now(timezone.utc)).total_seconds()
        if (
            isinstance(expires, (int, float))
            and not isinstance(expires, bool)
            and not math.isnan(expires)
        ):
            return float(expires) - time.time()
        raise ValidationError("expires_at", "an aware datetime or a Unix timestamp", expires)


def resolve_identity(result: Any) -> tuple[bool, Any, float | None]:
    """What an ``authenticate`` hook's ``result`` means: ``(accepted, identity,
    seconds_left)``; an :class:`Expiring` that has expired is refused."""
    if result is None or result is False:
        return False, None, None
    if isinstance(result, Expiring):
        left = result.seconds_left()
        if left <= 0:
            return False, None, None
        return True, result.identity, left
    return True, result, None


def same_identity(identity: Any, other: Any) -> bool:
    """``identity == other``, False when comparing raises."""
    try:
        return identity is other or bool(identity == other)
    except Exception:
        return False


class AccessPolicy:
    """Who may watch what: the adapter's ``subjects`` (None: all) and the ``authorize``
    hook (None: everyone). A raising hook refuses, and is reported to ``report``."""

    def __init__(
        self,
        authorize: Authorize | None,
        subjects: frozenset[str] | None,
        report: Callable[[Exception, str], None],
    ) -> None:
        self.authorize = authorize
        self.subjects = subjects
        self.report = report

    def allowed(self, identity: Any, subject: str) -> bool:
        """Whether ``identity`` may watch ``subject``."""
        if self.subjects is not None and subject not in self.subjects:
            return False
        if self.authorize is None:
            return True
        try:
            answer = self.authorize(identity, subject)
        except Exception as exc:
            self.report(exc, "in the authorize hook")
            return False
        if inspect.isawaitable(answer):
            # an async def hook: its coroutine is not an answer (and would let everyone
            # through as a true value)
            close = getattr(answer, "close", None)
            if close is not None:
                close()
            self.report(
                TypeError("authorize returned an awaitable; it must be a plain function"),
                "in the authorize hook",
            )
            return False
        return bool(answer)
