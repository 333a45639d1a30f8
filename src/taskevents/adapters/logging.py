"""Task events as log records, on the ``taskevents`` logger by default.

Levels: ``task_failed`` at ERROR, ``task_started``/``task_completed``/``task_cancelled``
at INFO, ``task_progress`` at DEBUG; change any with ``levels``. Each record carries the
event's fields in ``extra`` for structured handlers: ``taskevent`` (the
:class:`~taskevents.TaskEvent` itself), ``event_id``, ``event_type``, ``subject``,
``task_id``, ``task_type``, ``seq`` and ``event_data``.

Delivery is synchronous, as logging is: a record is handled before the emitter returns.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import IO, Any

from taskevents._optional import require
from taskevents.events import (
    TASK_CANCELLED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_PROGRESS,
    TASK_STARTED,
    TaskEvent,
    event_types,
    is_event_type,
)
from taskevents.exceptions import ValidationError

from .base import Adapter

__all__ = ["DEFAULT_LEVELS", "JSONLinesFormatter", "LoggingAdapter", "console_handler"]

#: The level each event type is logged at unless told otherwise.
DEFAULT_LEVELS: Mapping[str, int] = {
    TASK_STARTED: logging.INFO,
    TASK_PROGRESS: logging.DEBUG,
    TASK_COMPLETED: logging.INFO,
    TASK_FAILED: logging.ERROR,
    TASK_CANCELLED: logging.INFO,
}


def _level(value: object, field: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        number = logging.getLevelName(value.upper())
        if isinstance(number, int):
            return number
    raise ValidationError(field, "a logging level (e.g. 20 or 'INFO')", value)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(text: str) -> str:
    """``text`` with control characters escaped: an event cannot forge log lines."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode(), text)


def describe(event: TaskEvent) -> str:
    """A one-line, human-readable account of ``event`` (control characters in its
    text are escaped)."""
    return _one_line(_describe(event))


def _describe(event: TaskEvent) -> str:
    data = event.data
    head = f"{event.subject}: {event.task_type}"
    type_ = event.type
    if type_ == TASK_PROGRESS:
        parts = [head]
        if "percent" in data:
            parts.append(f"{data['percent']:g}%")
        if data.get("stage"):
            parts.append(f"[{data['stage']}]")
        if data.get("message"):
            parts.append(str(data["message"]))
        return " ".join(parts)
    if type_ == TASK_STARTED:
        return f"{head} started (task {event.task_id})"
    if type_ == TASK_FAILED:
        error = data.get("error") or {}
        return f"{head} failed: {error.get('type', 'Error')}: {error.get('message', '')}"
    if type_ == TASK_CANCELLED:
        reason = data.get("reason")
        return f"{head} cancelled" + (f": {reason}" if reason else "")
    if type_ == TASK_COMPLETED:
        return f"{head} completed"
    return f"{head} {type_}: {json.dumps(dict(data), ensure_ascii=False)[:500]}"


class LoggingAdapter(Adapter):
    """Logs every event it accepts.

    :param logger: a logger or a logger name.
    :param levels: level per event type, overriding :data:`DEFAULT_LEVELS`; levels are
        numbers or names (``"WARNING"``).
    :param types: event types to log (default: all).
    :param subjects: subjects to log (default: all).
    """

    def __init__(
        self,
        logger: str | logging.Logger = "taskevents",
        *,
        levels: Mapping[str, int | str] | None = None,
        types: Iterable[str] | None = None,
        subjects: Iterable[str] | None = None,
    ) -> None:
        super().__init__(types=types, subjects=subjects)
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        elif not isinstance(logger, logging.Logger):
            raise ValidationError("logger", "a logging.Logger or a logger name", logger)
        self.logger = logger
        chosen = dict(DEFAULT_LEVELS)
        for type_, level in (levels or {}).items():
            if not is_event_type(type_):
                raise ValidationError("levels", f"keys among {', '.join(event_types())}", type_)
            chosen[type_] = _level(level, f"levels[{type_!r}]")
        self.levels: Mapping[str, int] = chosen

    def handle(self, event: TaskEvent) -> None:
        level = self.levels.get(event.type, logging.INFO)
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(
            level,
            "%s",
            describe(event),
            extra={
                "taskevent": event,
                "event_id": event.id,
                "event_type": event.type,
                "subject": event.subject,
                "task_id": event.task_id,
                "task_type": event.task_type,
                "seq": event.seq,
                "event_data": event.data,
            },
        )


class JSONLinesFormatter(logging.Formatter):
    """Formats each record as one JSON object per line: ``time``, ``level``, ``logger``,
    ``message``, and for task events ``event`` (the event as
    :meth:`~taskevents.TaskEvent.to_dict` gives it)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "taskevent", None)
        if isinstance(event, TaskEvent):
            document["event"] = event.to_dict()
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def console_handler(stream: IO[str] | None = None, *, color: bool | None = None) -> logging.Handler:
    """A handler for people watching a terminal: ``time level message``, coloured by
    level through colorlog (``pip install 'taskevents[color]'``).

    :param color: True to insist on colour, False for none, None (default) for colour
        when colorlog is installed and ``stream`` is a terminal.
    """
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    plain = "%(asctime)s %(levelname)-8s %(message)s"
    if color is None:
        try:
            require("colorlog", extra="color", needed_by="colour output")
        except ImportError:
            color = False
        else:
            color = bool(getattr(stream, "isatty", lambda: False)())
    if color:
        colorlog = require("colorlog", extra="color", needed_by="colour output")
        handler.setFormatter(colorlog.ColoredFormatter("%(log_color)s" + plain + "%(reset)s"))
    else:
        handler.setFormatter(logging.Formatter(plain))
    return handler
