"""The event model: :class:`TaskEvent`, an immutable value, lossless through JSON."""

from __future__ import annotations

import itertools
import math
import sys
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Final, Literal, cast

from .exceptions import ValidationError

__all__ = [
    "EVENT_TYPES",
    "LIFECYCLE_TYPES",
    "TASK_CANCELLED",
    "TASK_COMPLETED",
    "TASK_FAILED",
    "TASK_PROGRESS",
    "TASK_STARTED",
    "EventType",
    "TaskEvent",
    "event_types",
    "is_event_type",
]

EventType = Literal[
    "task_started", "task_progress", "task_completed", "task_failed", "task_cancelled"
]

TASK_STARTED: Final = "task_started"
TASK_PROGRESS: Final = "task_progress"
TASK_COMPLETED: Final = "task_completed"
TASK_FAILED: Final = "task_failed"
TASK_CANCELLED: Final = "task_cancelled"

#: Every event type, in lifecycle order.
EVENT_TYPES: Final[tuple[EventType, ...]] = (
    TASK_STARTED,
    TASK_PROGRESS,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_CANCELLED,
)
#: The event types that change a task's status; never dropped or coalesced.
LIFECYCLE_TYPES: Final[frozenset[str]] = frozenset(
    (TASK_STARTED, TASK_COMPLETED, TASK_FAILED, TASK_CANCELLED)
)
#: Event types that end a task.
OUTCOME_TYPES: Final[frozenset[str]] = frozenset((TASK_COMPLETED, TASK_FAILED, TASK_CANCELLED))

CLOUDEVENTS_TYPE_PREFIX: Final = "io.taskevents."

_from_timestamp = datetime.fromtimestamp

#: Event ids made in this process: a random prefix and a number, unique across
#: processes and cheap per event (the text is made only when asked for).
_ID_PREFIX: Final = uuid.uuid4().hex[:16] + "-"
_next_event_number = itertools.count(1).__next__

#: Event types the application declared (``taskevents.define_event_type``).
_custom_types: set[str] = set()


def event_types() -> tuple[str, ...]:
    """Every event type: the lifecycle ones (:data:`EVENT_TYPES`), then those declared
    with :func:`~taskevents.define_event_type`, sorted."""
    return EVENT_TYPES + tuple(sorted(_custom_types))


def is_event_type(name: object) -> bool:
    """Whether ``name`` is a lifecycle type or a declared one."""
    return name in EVENT_TYPES or name in _custom_types


_FIELDS: Final = ("id", "type", "subject", "task_id", "task_type", "seq", "time", "source", "data")


class TaskEvent:
    """One thing that happened to a task: it started, progressed, completed, failed or
    was cancelled.

    Events are built by :class:`~taskevents.Emitter`; build one yourself only to re-emit
    what another process sent (see :meth:`from_dict`). Attributes are read-only. Treat
    :attr:`data` as read-only too: every receiver gets the same mapping.

    :param id: unique id; reused as the webhook id and the CloudEvents id.
    :param type: one of :data:`EVENT_TYPES`, or a type declared with
        :func:`~taskevents.define_event_type`.
    :param subject: what the task runs for and what clients subscribe to (the seed's
        ``config_name``, e.g. ``"aws01"``).
    :param task_id: the id of the task this event belongs to.
    :param task_type: what kind of task it is, e.g. ``"change_ip"``.
    :param seq: position in the subject's stream; strictly increasing, gap-free per
        subject.
    :param time: when it happened; timezone-aware, in UTC.
    :param source: who emitted it (a URI reference, as in CloudEvents).
    :param data: details: progress (``percent``, ``stage``, ``message``), ``result``,
        ``error`` or ``reason``. JSON-compatible.
    """

    __slots__ = (
        "_data",
        "_id",
        "_seq",
        "_size",
        "_source",
        "_subject",
        "_task_id",
        "_task_type",
        "_time",
        "_type",
    )

    def __init__(
        self,
        id: str,
        type: str,
        subject: str,
        task_id: str,
        task_type: str,
        seq: int,
        time: datetime,
        source: str,
        data: Mapping[str, Any],
    ) -> None:
        # Plain slot stores: this runs on every emit, so no validation here (the emitter
        # builds valid events; from_dict() validates outside input).
        self._id: str | int = id
        self._type = type
        self._subject = subject
        self._task_id = task_id
        self._task_type = task_type
        self._seq = seq
        self._time: datetime | float = time
        self._source = source
        self._data = data
        self._size = -1  # the JSON text's length; set by the emitter, else computed

    @property
    def id(self) -> str:
        """Unique id of this event."""
        value: str | int = self._id
        if isinstance(value, int):
            value = self._id = _ID_PREFIX + str(value)
        return value

    @property
    def type(self) -> str:
        """One of :data:`EVENT_TYPES`, or a type declared with
        :func:`~taskevents.define_event_type`."""
        return self._type

    @property
    def subject(self) -> str:
        """What the task runs for (the seed's ``config_name``)."""
        return self._subject

    @property
    def task_id(self) -> str:
        """Id of the task this event belongs to."""
        return self._task_id

    @property
    def task_type(self) -> str:
        """Kind of task, e.g. ``"change_ip"``."""
        return self._task_type

    @property
    def seq(self) -> int:
        """Position in the subject's stream (1, 2, 3, ... with no gaps)."""
        return self._seq

    @property
    def time(self) -> datetime:
        """When it happened (aware, UTC)."""
        value: datetime | float = self._time
        if isinstance(value, float):  # the emitter's time.time(), made a datetime once
            value = self._time = _from_timestamp(value, timezone.utc)
        return value

    @property
    def source(self) -> str:
        """Who emitted it."""
        return self._source

    @property
    def data(self) -> Mapping[str, Any]:
        """Details: progress, result, error or reason."""
        return self._data

    @property
    def size(self) -> int:
        """The length of this event's JSON text, in characters (numbers estimated);
        what :class:`~taskevents.Emitter` holds to ``max_event_size`` and stores bound
        their history by."""
        size = self._size
        if size < 0:
            data_size = json_copy_sized(self._data, "data")[1]
            size = self._size = data_size + _envelope_size(
                self._subject, self._task_id, self._task_type, self._source
            )
        return size

    @property
    def is_lifecycle(self) -> bool:
        """True for every type but ``task_progress``."""
        return self._type in LIFECYCLE_TYPES

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskEvent):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _FIELDS)

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return (
            f"TaskEvent(type={self._type!r}, subject={self._subject!r}, seq={self._seq}, "
            f"task_id={self._task_id!r}, task_type={self._task_type!r}, data={self._data!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskEvent, tuple(getattr(self, f) for f in _FIELDS))

    # -- JSON -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict; :meth:`from_dict` turns it back into an equal event.

        ``time`` becomes an ISO 8601 string with microseconds and ``+00:00``.
        """
        return {
            "id": self.id,
            "type": self._type,
            "subject": self._subject,
            "task_id": self._task_id,
            "task_type": self._task_type,
            "seq": self._seq,
            "time": self.time.isoformat(timespec="microseconds"),
            "source": self._source,
            "data": dict(self._data),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TaskEvent:
        """Build an event from :meth:`to_dict` output (e.g. received from another process).

        :raises ValidationError: naming the first field that is missing or malformed.
        """
        if not isinstance(raw, Mapping):
            raise ValidationError("event", "a JSON object", raw)
        unknown = set(raw) - set(_FIELDS)
        if unknown:
            raise ValidationError(
                sorted(unknown)[0], f"only the fields {', '.join(_FIELDS)}", raw[sorted(unknown)[0]]
            )
        for name in ("id", "subject", "task_id", "task_type", "source"):
            value = raw.get(name)
            if not isinstance(value, str) or not value:
                raise ValidationError(name, "a non-empty string", value)
        type_ = raw.get("type")
        if not is_event_type(type_):
            raise ValidationError(
                "type", f"one of {', '.join(event_types())} (declare others first)", type_
            )
        seq = raw.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValidationError("seq", "a positive integer", seq)
        data = raw.get("data")
        if not isinstance(data, Mapping):
            raise ValidationError("data", "a JSON object", data)
        data = json_copy(data, "data")
        return cls(
            id=raw["id"],
            type=cast(str, type_),
            subject=raw["subject"],
            task_id=raw["task_id"],
            task_type=raw["task_type"],
            seq=seq,
            time=parse_time(raw.get("time"), "time"),
            source=raw["source"],
            data=dict(data),
        )

    # -- CloudEvents ------------------------------------------------------------------

    def to_cloudevent(self) -> dict[str, Any]:
        """This event as a CloudEvents 1.0 structured-mode JSON document (a dict).

        ``type`` is ``io.taskevents.<type>`` (e.g. ``io.taskevents.task_started``); the
        task id, task type and seq travel as the extension attributes ``taskid``,
        ``tasktype`` and ``sequence`` (a string, as the CloudEvents *sequence* extension
        defines it).
        """
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": self._source,
            "type": CLOUDEVENTS_TYPE_PREFIX + self._type,
            "subject": self._subject,
            "time": format_time(self.time),
            "datacontenttype": "application/json",
            "taskid": self._task_id,
            "tasktype": self._task_type,
            "sequence": str(self._seq),
            "data": dict(self._data),
        }


def _envelope_size(subject: str, task_id: str, task_type: str, source: str) -> int:
    """The JSON text of an event less its data: names, quotes, id, seq and time."""
    return len(subject) + len(task_id) + len(task_type) + len(source) + 160


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, e.g. ``2025-01-01T12:00:00.000000Z``."""
    text = value.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return text[: -len("+00:00")] + "Z"


def parse_time(value: object, field: str) -> datetime:
    """Parse an ISO 8601 timestamp with an offset into an aware UTC datetime."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(field, "an ISO 8601 timestamp", value) from None
    else:
        raise ValidationError(field, "an ISO 8601 timestamp", value)
    offset = parsed.utcoffset()
    if offset is None:
        raise ValidationError(field, "a timestamp with a UTC offset", value)
    if offset == timedelta(0) and parsed.tzinfo is timezone.utc:
        return parsed
    return parsed.astimezone(timezone.utc)


#: Integers with more bits than this are checked against the interpreter's limit on
#: integer-to-text conversion (4,300 digits by default since Python 3.11).
_BIG_INT_BITS: Final = 14_000


def _max_int_digits() -> int:
    limit: int = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    return limit


def _check_text_encodable(value: str, field: str) -> None:
    # JSON encoders and UTF-8 sinks refuse lone surrogates (e.g. "\ud800").
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(
                field, "text that can be encoded as UTF-8 (no lone surrogates)", value
            ) from None


def json_copy(value: Any, field: str) -> Any:
    """A copy of ``value`` that no later change to the caller's objects can alter, or
    :class:`ValidationError` (naming the nested field) unless every JSON encoder
    taskevents uses can encode it and it survives a JSON round trip as is.

    Allowed: ``None``, ``bool``, ``int`` (within the interpreter's limit on digits),
    finite ``float``, ``str`` (encodable as UTF-8), lists, and dicts with string keys,
    nested at most 64 deep.
    """
    return json_copy_sized(value, field)[0]


def json_copy_sized(value: Any, field: str) -> tuple[Any, int]:
    """:func:`json_copy`, and the length of the copy's JSON text (counted in
    characters, a close estimate for numbers)."""
    return _copy(value, field, 0)


def _copy(value: Any, field: str, depth: int) -> tuple[Any, int]:
    if value is None:
        return None, 4
    if isinstance(value, str):
        if not value.isascii():
            _check_text_encodable(value, field)
        return value, len(value) + 2
    if isinstance(value, bool):
        return value, 5
    if isinstance(value, int):
        bits = value.bit_length()
        if bits > _BIG_INT_BITS:
            try:
                return value, len(int.__repr__(value))
            except ValueError:
                raise ValidationError(
                    field, f"an integer of at most {_max_int_digits()} digits", value
                ) from None
        return value, bits // 3 + 2
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(field, "a finite number", value)
        return value, 24
    if depth >= 64:
        raise ValidationError(field, "JSON nested at most 64 levels deep", "...")
    if isinstance(value, Mapping):
        copied = {}
        size = 2
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(field, "an object with string keys", key)
            if not key.isascii():
                _check_text_encodable(key, field)
            copied[key], item_size = _copy(item, f"{field}.{key}", depth + 1)
            size += len(key) + 4 + item_size
        return copied, size
    if isinstance(value, list):
        items = []
        size = 2
        for index, item in enumerate(value):
            item_copy, item_size = _copy(item, f"{field}[{index}]", depth + 1)
            items.append(item_copy)
            size += item_size + 1
        return items, size
    raise ValidationError(field, "a JSON value (null, bool, number, string, list, object)", value)


def check_json(value: object, field: str) -> None:
    """Raise :class:`ValidationError` unless ``value`` survives a JSON round trip as is."""
    json_copy(value, field)
