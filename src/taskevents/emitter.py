"""The :class:`Emitter`: the one object an existing TaskManager touches."""

from __future__ import annotations

import functools
import itertools
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from .events import (
    TASK_CANCELLED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_PROGRESS,
    TASK_STARTED,
    EventType,
    TaskEvent,
    check_json,
    json_copy,
)
from .exceptions import NoRunningTask, SubjectBusy, TaskEventsError, ValidationError
from .signals import SIGNALS
from .state import MemoryStateStore, StateStore

__all__ = ["Emitter", "TaskTracker"]

logger = logging.getLogger("taskevents")

P = ParamSpec("P")
R = TypeVar("R")

_utc = timezone.utc
_now = datetime.now


def _check_text(value: object, field: str) -> None:
    if not isinstance(value, str):
        raise ValidationError(field, "a string", value)


def _check_subject(subject: object) -> None:
    if not isinstance(subject, str) or not subject:
        raise ValidationError("subject", "a non-empty string", subject)


def error_details(error: BaseException | str | Mapping[str, Any]) -> dict[str, Any]:
    """``{"type": ..., "message": ...}`` for an exception or a message."""
    if isinstance(error, BaseException):
        return {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, str):
        return {"type": "Error", "message": error}
    if isinstance(error, Mapping):
        copied: dict[str, Any] = json_copy(error, "error")
        return copied
    raise ValidationError("error", "an exception, a message string or a JSON object", error)


class Emitter:
    """Turns "task started / progressed / ended" calls into :class:`TaskEvent`\\ s: it
    applies each to the :class:`~taskevents.state.StateStore`, then sends it on the
    matching :mod:`~taskevents.signals` signal, with itself as the sender.

    Thread-safe. Events of one subject get seq 1, 2, 3, ... with no gap, are applied
    and sent in that order, and are never handled concurrently.

    :param source: who emits (a URI reference, as in CloudEvents); copied to every event.
    :param state: where subject state is kept; a new :class:`MemoryStateStore` by default.
    :param exclusive: refuse a second task on a busy subject (:class:`SubjectBusy`);
        :meth:`started` and :meth:`track` can override it per call.
    """

    def __init__(
        self,
        *,
        source: str = "taskevents",
        state: StateStore | None = None,
        exclusive: bool = True,
    ) -> None:
        _check_text(source, "source")
        if not source:
            raise ValidationError("source", "a non-empty string", source)
        self.source = source
        self.state: StateStore = state if state is not None else MemoryStateStore()
        self.exclusive = exclusive
        # Unique across processes, cheap per event: a random prefix and a counter.
        self._id_prefix = uuid.uuid4().hex[:16] + "-"
        self._counter = itertools.count(1)

    def __repr__(self) -> str:
        return f"<Emitter source={self.source!r}>"

    def register(self, subject: str, **metadata: Any) -> None:
        """Make ``subject`` known (idle) before any task runs, with optional metadata
        that snapshots carry (e.g. ``region="eu-west-1"``)."""
        _check_subject(subject)
        self.state.register(subject, json_copy(metadata, "metadata"))

    # -- the lifecycle --------------------------------------------------------------

    def started(
        self,
        subject: str,
        task_type: str,
        *,
        task_id: str | None = None,
        exclusive: bool | None = None,
        **details: Any,
    ) -> TaskEvent:
        """A task of ``task_type`` started on ``subject``.

        :param task_id: the task's id; a new UUID by default.
        :param exclusive: refuse when the subject is busy (default: the emitter's).
        :param details: extra JSON-compatible details, sent as the event's data.
        :raises SubjectBusy: the subject runs a task and ``exclusive`` is true; nothing
            is emitted.
        """
        _check_subject(subject)
        _check_text(task_type, "task_type")
        if not task_type:
            raise ValidationError("task_type", "a non-empty string", task_type)
        if task_id is None:
            task_id = uuid.uuid4().hex
        elif not isinstance(task_id, str) or not task_id:
            raise ValidationError("task_id", "a non-empty string", task_id)
        details = json_copy(details, "details") if details else {}
        if exclusive is None:
            exclusive = self.exclusive
        state = self.state
        with state.lock(subject, create=True):
            running = state.running_task(subject)
            if running is not None:
                if exclusive:
                    raise SubjectBusy(subject, running[0], running[1])
                if state.running_task(subject, task_id) is not None:
                    raise ValidationError("task_id", "an id not already running", task_id)
            return self._send(TASK_STARTED, subject, task_id, task_type, details)

    def progress(
        self,
        subject: str,
        percent: float | None = None,
        stage: str | None = None,
        message: str | None = None,
        *,
        task_id: str | None = None,
        **details: Any,
    ) -> TaskEvent:
        """The running task on ``subject`` made progress.

        :param percent: 0 to 100.
        :param stage: a short machine-friendly name, e.g. ``"execution"``.
        :param message: for people, e.g. ``"Changing IP address..."``.
        :param task_id: which task, when several run; the newest by default.
        :param details: more JSON-compatible details.
        :raises NoRunningTask: no task runs on ``subject``.
        """
        data: dict[str, Any] = {}
        if percent is not None:
            if (
                not isinstance(percent, (int, float))
                or isinstance(percent, bool)
                or not 0 <= percent <= 100
            ):
                raise ValidationError("percent", "a number from 0 to 100", percent)
            data["percent"] = percent
        if stage is not None:
            _check_text(stage, "stage")
            data["stage"] = stage
        if message is not None:
            _check_text(message, "message")
            data["message"] = message
        if details:
            data.update(json_copy(details, "details"))
        return self._emit_for_running(TASK_PROGRESS, subject, task_id, data)

    def completed(
        self, subject: str, result: Any = None, *, task_id: str | None = None
    ) -> TaskEvent:
        """The running task on ``subject`` finished successfully with ``result``
        (JSON-compatible)."""
        result = json_copy(result, "result")
        return self._emit_for_running(TASK_COMPLETED, subject, task_id, {"result": result})

    def failed(
        self,
        subject: str,
        error: BaseException | str | Mapping[str, Any],
        *,
        task_id: str | None = None,
    ) -> TaskEvent:
        """The running task on ``subject`` failed. ``error`` is an exception (its type
        name and message are sent, never its traceback), a message, or a JSON object."""
        details = error_details(error)
        return self._emit_for_running(TASK_FAILED, subject, task_id, {"error": details})

    def cancelled(
        self, subject: str, reason: str | None = None, *, task_id: str | None = None
    ) -> TaskEvent:
        """The running task on ``subject`` was cancelled."""
        if reason is not None:
            _check_text(reason, "reason")
        return self._emit_for_running(TASK_CANCELLED, subject, task_id, {"reason": reason})

    def track(
        self,
        subject: str,
        task_type: str,
        *,
        task_id: str | None = None,
        exclusive: bool | None = None,
    ) -> TaskTracker:
        """Emit started, then completed, failed or cancelled, by themselves.

        As a context manager::

            with emitter.track("aws01", "change_ip") as task:
                task.progress(50, stage="execution")
                task.result = {"ip": "203.0.113.7"}

        As a decorator (each call is one task; a JSON-compatible return value becomes
        the result)::

            @emitter.track("aws01", "change_ip")
            def change_ip() -> dict[str, str]: ...

        An exception in the body emits ``task_failed`` and is re-raised; a
        :class:`BaseException` that is not an :class:`Exception` (e.g.
        :class:`KeyboardInterrupt`) emits ``task_cancelled``.
        """
        return TaskTracker(self, subject, task_type, task_id, exclusive)

    # -- internals ------------------------------------------------------------------

    def _emit_for_running(
        self, type_: EventType, subject: str, task_id: str | None, data: dict[str, Any]
    ) -> TaskEvent:
        state = self.state
        try:
            lock = state.lock(subject)
        except KeyError:
            raise NoRunningTask(subject, task_id) from None
        with lock:
            running = state.running_task(subject, task_id)
            if running is None:
                raise NoRunningTask(subject, task_id)
            return self._send(type_, subject, running[0], running[1], data)

    def _send(
        self, type_: EventType, subject: str, task_id: str, task_type: str, data: dict[str, Any]
    ) -> TaskEvent:
        # Called with the subject's lock held: seq, apply and send happen as one step.
        event = TaskEvent(
            self._id_prefix + str(next(self._counter)),
            type_,
            subject,
            task_id,
            task_type,
            self.state.last_seq(subject) + 1,
            _now(_utc),
            self.source,
            data,
        )
        self.state.apply(event)
        SIGNALS[type_].send(self, event=event)
        return event


class TaskTracker:
    """One tracked task; returned by :meth:`Emitter.track`."""

    def __init__(
        self,
        emitter: Emitter,
        subject: str,
        task_type: str,
        task_id: str | None,
        exclusive: bool | None,
    ) -> None:
        self.emitter = emitter
        self.subject = subject
        self.task_type = task_type
        self.exclusive = exclusive
        self._requested_id = task_id
        #: Set by the body; sent with ``task_completed``.
        self.result: Any = None
        #: The ``task_started`` event, once entered.
        self.started_event: TaskEvent | None = None
        self._ended = False

    @property
    def task_id(self) -> str:
        """The task's id (available once entered)."""
        if self.started_event is None:
            raise RuntimeError("the task has not started; use the tracker in a with block")
        return self.started_event.task_id

    def __enter__(self) -> TaskTracker:
        if self.started_event is not None:
            raise RuntimeError("a TaskTracker runs one task; call emitter.track() again")
        self.started_event = self.emitter.started(
            self.subject, self.task_type, task_id=self._requested_id, exclusive=self.exclusive
        )
        return self

    def progress(
        self,
        percent: float | None = None,
        stage: str | None = None,
        message: str | None = None,
        **details: Any,
    ) -> TaskEvent:
        """Report progress of this task; see :meth:`Emitter.progress`."""
        return self.emitter.progress(
            self.subject, percent, stage, message, task_id=self.task_id, **details
        )

    def cancel(self, reason: str | None = None) -> TaskEvent:
        """Emit ``task_cancelled`` now; leaving the block then emits nothing more."""
        event = self.emitter.cancelled(self.subject, reason, task_id=self.task_id)
        self._ended = True
        return event

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ended or self.started_event is None:
            return
        self._ended = True
        task_id = self.started_event.task_id
        if exc is None:
            try:
                check_json(self.result, "result")
            except ValidationError as invalid:
                # Leave the subject consistent (not busy for ever), then say what was wrong.
                self.emitter.failed(self.subject, invalid, task_id=task_id)
                raise
            self.emitter.completed(self.subject, self.result, task_id=task_id)
            return
        try:
            if isinstance(exc, Exception):
                self.emitter.failed(self.subject, exc, task_id=task_id)
            else:
                self.emitter.cancelled(
                    self.subject, exc_type.__name__ if exc_type else None, task_id=task_id
                )
        except TaskEventsError:
            # Never hide the body's own exception behind ours.
            logger.exception("could not report the end of task %s on %r", task_id, self.subject)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def tracked(*args: P.args, **kwargs: P.kwargs) -> R:
            with TaskTracker(
                self.emitter, self.subject, self.task_type, self._requested_id, self.exclusive
            ) as tracker:
                value = func(*args, **kwargs)
                try:
                    check_json(value, "result")
                except ValidationError:
                    pass
                else:
                    tracker.result = value
                return value

        return tracked
