"""The :class:`Emitter`: the one object an existing TaskManager touches."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from . import _checks
from .events import (
    LIFECYCLE_TYPES,
    TASK_CANCELLED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_PROGRESS,
    TASK_STARTED,
    TaskEvent,
    _check_text_encodable,
    _next_event_number,
    is_event_type,
    json_copy,
    json_copy_sized,
)
from .exceptions import NoRunningTask, SubjectBusy, UsageError, ValidationError
from .signals import SIGNALS, subject_forgotten
from .signals import _report as _report_receiver_error
from .state import MemoryStateStore, StateStore

__all__ = ["Emitter", "TaskTracker"]

logger = logging.getLogger("taskevents")

P = ParamSpec("P")
R = TypeVar("R")

_time = time.time


#: Longest error message kept from an exception or a message string; longer ones are
#: cut (with "...") so that reporting a failure never fails.
MAX_ERROR_MESSAGE = 4000


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text_size(value: object, field: str) -> int:
    """The JSON length of a text argument; ValidationError unless it is encodable text."""
    if not isinstance(value, str):
        raise ValidationError(field, "a string", value)
    if not value.isascii():
        _check_text_encodable(value, field)
    return len(value) + 2


def _message_of(error: BaseException) -> str:
    """An exception's message; its type name when ``str()`` fails or returns junk."""
    try:
        message = str(error)
    except Exception:
        return type(error).__name__
    if not isinstance(message, str):
        return type(error).__name__
    return _shorten_message(message)


def _shorten_message(message: str, limit: int = MAX_ERROR_MESSAGE) -> str:
    message = message[: limit + 1]
    if not message.isascii():
        # lone surrogates become escapes: every sink can encode the result
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(message) > limit:
        message = message[: max(limit - 3, 0)] + "..."
    return message


def error_details(error: BaseException | str | Mapping[str, Any]) -> dict[str, Any]:
    """``{"type": ..., "message": ...}`` for an exception or a message. A message is
    shortened to :data:`~taskevents.emitter.MAX_ERROR_MESSAGE` characters; an
    exception's is its type name when ``str()`` fails."""
    if isinstance(error, BaseException):
        kind = _shorten_message(type(error).__name__, 200)
        return {"type": kind, "message": _message_of(error)}
    if isinstance(error, str):
        return {"type": "Error", "message": _shorten_message(error)}
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
    :param max_event_size: the longest event, as JSON text in characters (see
        :attr:`TaskEvent.size`); a longer one is refused with :class:`ValidationError`
        naming the field (``details``, ``progress``, ``result``, ``error``, ``reason``).
    :param keep_idle_subjects: the retention policy for subjects that were never
        :meth:`register`\\ ed (e.g. one per job id): at most this many idle ones are
        kept, the longest idle forgotten first (None: no limit)...
    :param idle_subject_seconds: ...and one idle for longer than this is forgotten
        (None: no limit). Registered subjects and busy ones are always kept. The policy
        is applied when tasks start (at most once a second, or at once when the limit is
        passed by a tenth) and by :meth:`forget_idle`.
    """

    def __init__(
        self,
        *,
        source: str = "taskevents",
        state: StateStore | None = None,
        exclusive: bool = True,
        max_event_size: int = 65_536,
        keep_idle_subjects: int | None = 10_000,
        idle_subject_seconds: float | None = 3600.0,
    ) -> None:
        _checks.name(source, "source")
        self.source = source
        if not isinstance(exclusive, bool):
            raise ValidationError("exclusive", "True or False", exclusive)
        self._state: StateStore = state if state is not None else MemoryStateStore()
        self._store_record = self._state.record
        self.exclusive = exclusive
        self.max_event_size = _checks.positive_int(max_event_size, "max_event_size")
        self._envelope = len(source) + 160  # an event's JSON less its data, subject, ids
        if keep_idle_subjects is not None:
            _checks.positive_int(keep_idle_subjects, "keep_idle_subjects")
        self.keep_idle_subjects = keep_idle_subjects
        if idle_subject_seconds is not None:
            idle_subject_seconds = _checks.number(
                idle_subject_seconds, "idle_subject_seconds", above=0
            )
        self.idle_subject_seconds = idle_subject_seconds
        self._next_sweep = time.monotonic() + 1.0
        self._kept_after_sweep = 0
        # Per subject, held from the store operation until the signal is sent.
        self._order: dict[str, threading.RLock] = {}
        self._order_mutex = threading.Lock()
        # Set by taskevents.metrics.enable(): per event type, a counter's step (one C
        # call, so concurrent emits lose none). None: metrics off, nothing counted.
        self._event_counters: Mapping[str, Callable[[], object]] | None = None

    def __repr__(self) -> str:
        return f"<Emitter source={self.source!r}>"

    @property
    def state(self) -> StateStore:
        """Where the emitter keeps subject state (read-only)."""
        return self._state

    def register(self, subject: str, **metadata: Any) -> None:
        """Make ``subject`` known (idle) before any task runs, with optional metadata
        that snapshots carry (e.g. ``region="eu-west-1"``)."""
        _checks.subject(subject)
        self._state.register(subject, json_copy(metadata, "metadata"))

    def forget(self, subject: str) -> bool:
        """Forget everything about an idle ``subject``: its state, metadata and history.
        Receivers of :data:`~taskevents.signals.subject_forgotten` hear of it (Socket.IO
        clients watching it get ``unsubscribed`` with reason ``"forgotten"``). A later
        event for it starts a new stream at seq 1. Returns False if it was unknown.

        :raises SubjectBusy: a task runs on ``subject``; nothing is forgotten.
        """
        return self._forget(subject, "forgotten")

    def forget_idle(self) -> list[str]:
        """Apply the retention policy now (``keep_idle_subjects``,
        ``idle_subject_seconds``); returns the subjects forgotten."""
        self._next_sweep = time.monotonic() + 1.0
        forgotten: list[str] = []
        for subject in self._state.expired(
            keep=self.keep_idle_subjects, idle_seconds=self.idle_subject_seconds
        ):
            try:
                if self._forget(subject, "expired"):
                    forgotten.append(subject)
            except SubjectBusy:
                continue  # a task started meanwhile
        # What cannot be forgotten (registered, busy) must not trigger a sweep per task.
        self._kept_after_sweep = self._state.subject_count()
        return forgotten

    def _forget(self, subject: str, reason: str) -> bool:
        with self.ordered(subject):
            # Under the subject's ordering lock: receivers hear of it in stream order.
            forgotten = self._state.forget(subject)  # SubjectBusy while a task runs
            self._order.pop(subject, None)
            if forgotten:
                subject_forgotten.send(self, subject=subject, reason=reason)
            return forgotten

    @contextlib.contextmanager
    def ordered(self, subject: str) -> Iterator[None]:
        """Hold back ``subject``'s events while the block runs: none is recorded or
        reaches a receiver meanwhile, so what the block reads of the state is exactly
        what receivers have been given. (The Socket.IO adapter takes a new
        subscriber's snapshot this way.) Keep the block short."""
        locks = self._order
        while True:
            lock = locks.get(subject) or self._new_lock(subject)
            with lock:
                if locks.get(subject) is not lock:
                    continue  # forgotten while this waited: take the new lock
                yield
                return

    def _maybe_sweep(self) -> None:
        keep = self.keep_idle_subjects
        if time.monotonic() >= self._next_sweep or (
            keep is not None
            and self._state.subject_count() > max(keep, self._kept_after_sweep) + keep // 10 + 1
        ):
            self.forget_idle()

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
        _checks.subject(subject)
        _checks.name(task_type, "task_type")
        if task_id is None:
            task_id = uuid.uuid4().hex
        else:
            _checks.name(task_id, "task_id")
        size = 2
        if details:
            details, size = json_copy_sized(details, "details")
        event_size = self._check_size(size, "details", subject, task_id + task_type)
        if exclusive is None:
            exclusive = self.exclusive
        self._maybe_sweep()
        return self._record(
            TASK_STARTED, subject, task_id, task_type, details, event_size, exclusive
        )

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
        size = 2
        if percent is not None:
            kind = percent.__class__
            if not ((kind is int or kind is float or _is_number(percent)) and 0 <= percent <= 100):
                raise ValidationError("percent", "a number from 0 to 100", percent)
            data["percent"] = percent
            size += 34
        if stage is not None:
            size += _text_size(stage, "stage") + 10
            data["stage"] = stage
        if message is not None:
            size += _text_size(message, "message") + 12
            data["message"] = message
        if details:
            copied, details_size = json_copy_sized(details, "details")
            data.update(copied)
            size += details_size
        size += len(subject) + self._envelope
        if size > self.max_event_size:
            self._check_size(size - len(subject) - self._envelope, "progress", subject)
        return self._record(TASK_PROGRESS, subject, task_id, None, data, size)

    def completed(
        self, subject: str, result: Any = None, *, task_id: str | None = None
    ) -> TaskEvent:
        """The running task on ``subject`` finished successfully with ``result``
        (JSON-compatible)."""
        result, size = json_copy_sized(result, "result")
        return self._emit_for_running(
            TASK_COMPLETED, subject, task_id, {"result": result}, size + 12, "result"
        )

    def failed(
        self,
        subject: str,
        error: BaseException | str | Mapping[str, Any],
        *,
        task_id: str | None = None,
    ) -> TaskEvent:
        """The running task on ``subject`` failed. ``error`` is an exception (its type
        name and message are sent, never its traceback), a message, or a JSON object.

        An exception or a message always ends the task: a message longer than
        :data:`~taskevents.emitter.MAX_ERROR_MESSAGE` is shortened, and an exception
        whose ``str()`` fails is reported by its type name. A JSON object is checked like any data
        (:class:`ValidationError` when it is not JSON or too large)."""
        details, size = json_copy_sized(error_details(error), "error")
        room = self.max_event_size - (size + 12 + len(subject) + self._envelope)
        if room < 0 and not isinstance(error, Mapping):
            # Shorten the message so the failure is reported whatever max_event_size is.
            message = details["message"]
            details["message"] = _shorten_message(message, max(len(message) + room - 520, 0))
            size = json_copy_sized(details, "error")[1]
        return self._emit_for_running(
            TASK_FAILED, subject, task_id, {"error": details}, size + 12, "error"
        )

    def cancelled(
        self, subject: str, reason: str | None = None, *, task_id: str | None = None
    ) -> TaskEvent:
        """The running task on ``subject`` was cancelled."""
        size = 16 if reason is None else _text_size(reason, "reason") + 12
        return self._emit_for_running(
            TASK_CANCELLED, subject, task_id, {"reason": reason}, size, "reason"
        )

    def emit(
        self, subject: str, type: str, *, task_id: str | None = None, **data: Any
    ) -> TaskEvent:
        """Emit an event of a type declared with :func:`~taskevents.define_event_type`
        (e.g. ``"task_log"``) for the running task on ``subject``; ``data`` (JSON) is
        the event's data. It gets a seq and is kept in the history like any event, but
        changes no state.

        :param task_id: which task, when several run; the newest by default.
        :raises ValidationError: ``type`` is not a declared type (the lifecycle types
            have their own methods), or ``data`` is not JSON or too large.
        :raises NoRunningTask: no task runs on ``subject``.
        """
        if type in LIFECYCLE_TYPES or type == TASK_PROGRESS or not is_event_type(type):
            raise ValidationError(
                "type",
                "an event type declared with taskevents.define_event_type() "
                "(lifecycle events have their own methods)",
                type,
            )
        copied, size = json_copy_sized(data, "data")
        return self._emit_for_running(type, subject, task_id, copied, size, "data")

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

        As a decorator (each call is one task; the return value becomes the result, so
        it must be JSON-compatible, as ``task.result`` must in a ``with`` block: if it
        is not, the task fails and :class:`ValidationError` is raised)::

            @emitter.track("aws01", "change_ip")
            def change_ip() -> dict[str, str]: ...

        An exception in the body emits ``task_failed`` and is re-raised; a
        :class:`BaseException` that is not an :class:`Exception` (e.g.
        :class:`KeyboardInterrupt`) emits ``task_cancelled``.

        In coroutines, ``async with emitter.track(...) as task:`` does the same, and on
        an ``async def`` the decorator awaits the body before it reports the outcome;
        ``asyncio.CancelledError`` (the task was cancelled) emits
        ``task_cancelled``::

            @emitter.track("aws01", "change_ip")
            async def change_ip() -> dict[str, str]: ...
        """
        return TaskTracker(self, subject, task_type, task_id, exclusive)

    # -- internals ------------------------------------------------------------------

    def _check_size(self, data_size: int, field: str, subject: str, names: str = "") -> int:
        """The event's size less its running task's id and type (``names`` when they
        are known already); ValidationError above ``max_event_size``."""
        size = data_size + len(subject) + self._envelope
        if size + len(names) > self.max_event_size:
            raise ValidationError(
                field,
                f"an event of at most {self.max_event_size} characters of JSON "
                "(the emitter's max_event_size)",
                f"about {size + len(names)} characters",
            )
        return size

    def _emit_for_running(
        self,
        type_: str,
        subject: str,
        task_id: str | None,
        data: dict[str, Any],
        data_size: int,
        field: str,
    ) -> TaskEvent:
        size = self._check_size(data_size, field, subject, task_id or "")
        return self._record(type_, subject, task_id, None, data, size)

    def _record(
        self,
        type_: str,
        subject: str,
        task_id: str | None,
        task_type: str | None,
        data: dict[str, Any],
        size: int,
        exclusive: bool = False,
    ) -> TaskEvent:
        """One store operation, then the signal, both under the subject's ordering lock:
        local receivers get each subject's events in seq order. (The hot path of every
        emit: kept short on purpose.)"""
        event_id = _next_event_number()
        locks = self._order
        lock = locks.get(subject) or self._new_lock(subject)
        with lock:
            if locks.get(subject) is not lock:  # forgotten while this waited
                return self._record(type_, subject, task_id, task_type, data, size, exclusive)
            try:
                event = self._store_record(
                    type_,
                    subject,
                    task_id,
                    task_type,
                    data,
                    event_id,  # type: ignore[arg-type]  # made text on first use
                    _time(),
                    self.source,
                    size,
                    exclusive,
                )
            except NoRunningTask:
                if self._state.last_seq(subject) == 0:
                    del locks[subject]  # no stream: keep no lock for it
                raise
            if self._event_counters is not None:
                self._event_counters[type_]()
            signal = SIGNALS[type_]
            if signal.receivers and not signal.is_muted:
                for receiver in signal.receivers_for(self):
                    try:
                        receiver(self, event=event)
                    except Exception as exc:  # isolation, as TaskSignal.send gives it
                        _report_receiver_error(signal.name, receiver, exc)
            return event

    def _new_lock(self, subject: str) -> threading.RLock:
        with self._order_mutex:
            return self._order.setdefault(subject, threading.RLock())


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
            raise UsageError("the task has not started; use the tracker in a with block")
        return self.started_event.task_id

    def __enter__(self) -> TaskTracker:
        if self.started_event is not None:
            raise UsageError("a TaskTracker runs one task; call emitter.track() again")
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
                self.emitter.completed(self.subject, self.result, task_id=task_id)
            except ValidationError as invalid:
                # Leave the subject consistent (not busy for ever), then say what was wrong.
                self.emitter.failed(self.subject, invalid, task_id=task_id)
                raise
            return
        try:
            if isinstance(exc, Exception):
                self.emitter.failed(self.subject, exc, task_id=task_id)
            else:
                self.emitter.cancelled(
                    self.subject, exc_type.__name__ if exc_type else None, task_id=task_id
                )
        except Exception:
            # Never hide the body's own exception behind ours.
            logger.exception("could not report the end of task %s on %r", task_id, self.subject)

    async def __aenter__(self) -> TaskTracker:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(func):
            return self._wrap_coroutine_function(func)  # type: ignore[return-value]

        @functools.wraps(func)
        def tracked(*args: P.args, **kwargs: P.kwargs) -> R:
            with TaskTracker(
                self.emitter, self.subject, self.task_type, self._requested_id, self.exclusive
            ) as tracker:
                value = func(*args, **kwargs)
                tracker.result = value  # not JSON: the task fails, as in a with block
                return value

        return tracked

    def _wrap_coroutine_function(
        self, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(func)
        async def tracked(*args: P.args, **kwargs: P.kwargs) -> R:
            async with TaskTracker(
                self.emitter, self.subject, self.task_type, self._requested_id, self.exclusive
            ) as tracker:
                value = await func(*args, **kwargs)
                tracker.result = value
                return value

        return tracked
