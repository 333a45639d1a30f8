"""Per-subject state: idle or busy, the running task and its latest progress, the last
task's outcome, the last seq, and a bounded history for resuming a stream.

State changes only by :meth:`StateStore.apply`-ing events; the :class:`~taskevents.Emitter`
does that under the subject's lock *before* it sends the signal, so every receiver that
reads the state sees it consistent with the event it is handling.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from time import monotonic as _monotonic
from typing import Any, Literal, Protocol, runtime_checkable

from ._checks import positive_int
from ._checks import subject as check_subject
from .events import OUTCOME_TYPES, TASK_PROGRESS, TASK_STARTED, TaskEvent
from .exceptions import NoRunningTask, SubjectBusy, ValidationError

__all__ = ["MemoryStateStore", "StateStore", "SubjectState", "TaskInfo"]

Status = Literal["idle", "busy"]
Outcome = Literal["completed", "failed", "cancelled"]


@dataclass(frozen=True)
class TaskInfo:
    """What is known about one task, running or ended."""

    task_id: str
    task_type: str
    started_at: datetime
    #: The latest progress data (``percent``, ``stage``, ``message``, ...), if any.
    progress: Mapping[str, Any] | None = None
    ended_at: datetime | None = None
    #: ``"completed"``, ``"failed"`` or ``"cancelled"``; None while running.
    outcome: Outcome | None = None
    result: Any = None
    error: Mapping[str, Any] | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (times as ISO 8601 strings)."""
        return {
            "task_id": self.task_id,
            "task_type": self.task_type,
            "started_at": self.started_at.isoformat(),
            "progress": dict(self.progress) if self.progress is not None else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "outcome": self.outcome,
            "result": self.result,
            "error": dict(self.error) if self.error is not None else None,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class SubjectState:
    """A consistent snapshot of one subject, as of event number :attr:`seq`."""

    subject: str
    status: Status
    #: The seq of the last event applied; a live stream continues with ``seq + 1``.
    seq: int
    #: The running task (the most recently started one, if several run).
    current: TaskInfo | None
    #: The last task that ended.
    last: TaskInfo | None
    #: Every running task, oldest first (more than one only with ``exclusive=False``).
    running: tuple[TaskInfo, ...] = ()
    #: What the host app registered for the subject (e.g. its AWS region).
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "subject": self.subject,
            "status": self.status,
            "seq": self.seq,
            "current_task": self.current.to_dict() if self.current else None,
            "last_task": self.last.to_dict() if self.last else None,
            "running_tasks": [task.to_dict() for task in self.running],
            "metadata": dict(self.metadata),
        }


@runtime_checkable
class StateStore(Protocol):
    """Where an emitter keeps subject state. :class:`MemoryStateStore` is the default."""

    def record(
        self,
        type: str,
        subject: str,
        task_id: str | None,
        task_type: str | None,
        data: Mapping[str, Any],
        event_id: str,
        time: datetime | float,
        source: str,
        size: int = -1,
        exclusive: bool = False,
    ) -> TaskEvent:
        """The one operation of an emit, done atomically: check the task, assign the
        next seq, build the event, apply it and add it to the history.

        For ``task_started``, ``task_id`` and ``task_type`` are the new task's, and the
        subject is created if unknown. For every other type, the event belongs to the
        running task ``task_id`` (None: the newest), whose type is used.

        :param time: when, as an aware datetime or a Unix timestamp.
        :param size: the event's :attr:`~taskevents.TaskEvent.size` less the length of
            its task id and task type, if known.
        :param exclusive: for ``task_started``: refuse if a task runs.
        :raises SubjectBusy: ``exclusive`` and a task runs; nothing is recorded.
        :raises NoRunningTask: no such running task; nothing is recorded.
        :raises ValidationError: a ``task_started`` with the id of a running task.
        """
        ...

    def running_task(self, subject: str, task_id: str | None = None) -> tuple[str, str] | None:
        """``(task_id, task_type)`` of the running task (the newest one when ``task_id``
        is None), or None."""
        ...

    def last_seq(self, subject: str) -> int:
        """The seq of the subject's last event; 0 for a subject with none."""
        ...

    def apply(self, event: TaskEvent) -> bool:
        """Fold ``event`` into the state. An event whose seq is not newer than the
        subject's is ignored (False): replays and duplicates are harmless."""
        ...

    def register(self, subject: str, metadata: Mapping[str, Any] | None = None) -> None:
        """Make ``subject`` known (idle), or update its metadata."""
        ...

    def subjects(self) -> list[str]:
        """Every known subject, sorted."""
        ...

    def snapshot(self, subject: str) -> SubjectState | None:
        """A consistent snapshot of ``subject``, or None if it is unknown."""
        ...

    def snapshot_all(self) -> dict[str, SubjectState]:
        """A snapshot of every known subject, by name."""
        ...

    def history(self, subject: str, since_seq: int) -> list[TaskEvent] | None:
        """The subject's events with seq > ``since_seq``, oldest first; None when some
        of them are no longer kept, when ``since_seq`` is ahead of the subject (the
        store was restarted) or the subject is unknown: take a snapshot instead."""
        ...

    def forget(self, subject: str) -> bool:
        """Drop everything known about ``subject`` (state, metadata, history). False if
        it was unknown.

        :raises SubjectBusy: a task runs on it; nothing is dropped.
        """
        ...

    def expired(self, *, keep: int | None, idle_seconds: float | None) -> list[str]:
        """Subjects that were never :meth:`register`\\ ed and run no task, which a
        retention policy would forget: those idle for over ``idle_seconds``, and the
        longest idle beyond the ``keep`` most recently active ones. None: no limit."""
        ...

    def subject_count(self) -> int:
        """How many subjects are known."""
        ...


class _Task:
    __slots__ = ("progress", "started_at", "task_id", "task_type")

    def __init__(self, task_id: str, task_type: str, started_at: datetime) -> None:
        self.task_id = task_id
        self.task_type = task_type
        self.started_at = started_at
        self.progress: Mapping[str, Any] | None = None

    def info(self) -> TaskInfo:
        return TaskInfo(self.task_id, self.task_type, self.started_at, self.progress)


class _Subject:
    __slots__ = (
        "active_at",
        "forgotten",
        "history",
        "history_bytes",
        "last",
        "lock",
        "metadata",
        "newest",
        "registered",
        "running",
        "seq",
    )

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.seq = 0
        self.running: dict[str, _Task] = {}
        self.newest: _Task | None = None  # the most recently started running task
        self.last: TaskInfo | None = None
        self.metadata: dict[str, Any] = {}
        self.history: deque[TaskEvent] = deque()
        self.history_bytes = 0
        self.registered = False
        self.forgotten = False
        self.active_at = _monotonic()


class MemoryStateStore:
    """Thread-safe, in-process state for every subject.

    :param history_size: how many events per subject are kept for :meth:`history`
        (resume after a reconnect)...
    :param history_bytes: ...and how many characters of JSON they may add up to per
        subject (see :attr:`TaskEvent.size`); the oldest go first.
    """

    def __init__(self, *, history_size: int = 1000, history_bytes: int = 1 << 20) -> None:
        self.history_size = positive_int(history_size, "history_size")
        self.history_bytes = positive_int(history_bytes, "history_bytes")
        self._subjects: dict[str, _Subject] = {}
        self._create_lock = threading.Lock()

    def _get(self, subject: str, create: bool) -> _Subject:
        rec = self._subjects.get(subject)
        if rec is None:
            if not create:
                raise KeyError(subject)
            with self._create_lock:
                rec = self._subjects.get(subject)
                if rec is None:
                    rec = self._subjects[subject] = _Subject()
        return rec

    def _locked(self, subject: str, create: bool) -> _Subject | None:
        """The subject's record with its lock held (the caller releases it), or None
        for an unknown subject unless ``create``."""
        while True:
            rec = self._subjects.get(subject)
            if rec is None:
                if not create:
                    return None
                rec = self._get(subject, True)
            rec.lock.acquire()
            if not rec.forgotten:
                return rec
            rec.lock.release()  # forgotten meanwhile: take the new record

    def record(
        self,
        type: str,
        subject: str,
        task_id: str | None,
        task_type: str | None,
        data: Mapping[str, Any],
        event_id: str,
        time: datetime | float,
        source: str,
        size: int = -1,
        exclusive: bool = False,
    ) -> TaskEvent:
        # The hot path of every emit: written out in one piece on purpose.
        starting = type == TASK_STARTED
        rec = self._subjects.get(subject)
        if rec is None:
            if not starting:
                raise NoRunningTask(subject, task_id)
            rec = self._get(subject, True)
        with rec.lock:
            if rec.forgotten:  # forgotten meanwhile: the subject has a new record
                return self.record(
                    type, subject, task_id, task_type, data, event_id, time, source, size, exclusive
                )
            if starting:
                running = rec.running
                if running:
                    if exclusive:
                        task = next(reversed(running.values()))
                        raise SubjectBusy(subject, task.task_id, task.task_type)
                    if task_id in running:
                        raise ValidationError("task_id", "an id not already running", task_id)
            elif task_id is None:
                task = rec.newest  # type: ignore[assignment]
                if task is None:
                    raise NoRunningTask(subject, None)
                task_id = task.task_id
                task_type = task.task_type
            else:
                found = rec.running.get(task_id)
                if found is None:
                    raise NoRunningTask(subject, task_id)
                task = found
                task_type = task.task_type
            seq = rec.seq + 1
            event = TaskEvent(
                event_id,
                type,
                subject,
                task_id,  # type: ignore[arg-type]
                task_type,  # type: ignore[arg-type]
                seq,
                time,  # type: ignore[arg-type]
                source,
                data,
            )
            if size >= 0:
                size += len(task_id) + len(task_type)  # type: ignore[arg-type]
                event._size = size
            if type == TASK_PROGRESS:
                # (a busy subject is never idle: active_at waits for the outcome)
                task.progress = data
                rec.seq = seq
                history = rec.history
                history.append(event)
                total = rec.history_bytes + (size if size >= 0 else event.size)
                if len(history) > self.history_size or total > self.history_bytes:
                    total = self._trim(history, total)
                rec.history_bytes = total
            else:
                self._fold(rec, event)
            return event

    def running_task(self, subject: str, task_id: str | None = None) -> tuple[str, str] | None:
        rec = self._subjects.get(subject)
        if rec is None or not rec.running:
            return None
        if task_id is None:
            task = next(reversed(rec.running.values()))
        else:
            found = rec.running.get(task_id)
            if found is None:
                return None
            task = found
        return task.task_id, task.task_type

    def last_seq(self, subject: str) -> int:
        rec = self._subjects.get(subject)
        return rec.seq if rec is not None else 0

    def apply(self, event: TaskEvent) -> bool:
        rec = self._locked(event._subject, True)
        assert rec is not None
        try:
            if event._seq <= rec.seq:
                return False
            self._fold(rec, event)
            return True
        finally:
            rec.lock.release()

    def _fold(self, rec: _Subject, event: TaskEvent) -> None:
        # On every emit, with the record's lock held: slots are read directly.
        type_ = event._type
        if type_ == TASK_PROGRESS:
            task = rec.running.get(event._task_id)
            if task is not None:
                task.progress = event._data
        elif type_ == TASK_STARTED:
            rec.running[event._task_id] = rec.newest = _Task(
                event._task_id, event._task_type, event.time
            )
        elif type_ in OUTCOME_TYPES:
            ended = rec.running.pop(event._task_id, None)
            rec.newest = next(reversed(rec.running.values())) if rec.running else None
            data = event._data
            error = data.get("error")
            rec.last = TaskInfo(
                task_id=event._task_id,
                task_type=event._task_type,
                started_at=ended.started_at if ended else event.time,
                progress=ended.progress if ended else None,
                ended_at=event.time,
                outcome=type_[len("task_") :],  # type: ignore[arg-type]
                result=data.get("result"),
                error=error if isinstance(error, Mapping) else None,
                reason=data.get("reason"),
            )
        rec.seq = event._seq
        rec.active_at = _monotonic()
        history = rec.history
        history.append(event)
        size = event._size
        total = rec.history_bytes + (size if size >= 0 else event.size)
        if len(history) > self.history_size or total > self.history_bytes:
            total = self._trim(history, total)
        rec.history_bytes = total

    def _trim(self, history: deque[TaskEvent], total: int) -> int:
        """Drop the oldest events until the history is within both bounds."""
        while history and (len(history) > self.history_size or total > self.history_bytes):
            oldest = history.popleft()
            total -= oldest._size if oldest._size >= 0 else oldest.size
        return total

    def register(self, subject: str, metadata: Mapping[str, Any] | None = None) -> None:
        check_subject(subject)
        rec = self._locked(subject, True)
        assert rec is not None
        try:
            rec.registered = True
            if metadata:
                rec.metadata.update(metadata)
        finally:
            rec.lock.release()

    def subjects(self) -> list[str]:
        return sorted(self._subjects)

    def __contains__(self, subject: object) -> bool:
        return subject in self._subjects

    def snapshot(self, subject: str) -> SubjectState | None:
        rec = self._subjects.get(subject)
        if rec is None:
            return None
        with rec.lock:
            running = tuple(task.info() for task in rec.running.values())
            return SubjectState(
                subject=subject,
                status="busy" if running else "idle",
                seq=rec.seq,
                current=running[-1] if running else None,
                last=rec.last,
                running=running,
                metadata=dict(rec.metadata),
            )

    def snapshot_all(self) -> dict[str, SubjectState]:
        result = {}
        for subject in self.subjects():
            snap = self.snapshot(subject)
            if snap is not None:
                result[subject] = snap
        return result

    def history(self, subject: str, since_seq: int) -> list[TaskEvent] | None:
        rec = self._subjects.get(subject)
        if rec is None:
            return None
        with rec.lock:
            if since_seq == rec.seq:
                return []
            if since_seq > rec.seq:
                return None  # the client saw a stream this store never had (a restart)
            oldest = rec.history[0].seq if rec.history else rec.seq + 1
            if since_seq < oldest - 1:
                return None
            return [event for event in rec.history if event.seq > since_seq]

    def forget(self, subject: str) -> bool:
        rec = self._subjects.get(subject)
        if rec is None:
            return False
        with rec.lock:
            if rec.forgotten:
                return False
            if rec.running:
                task = next(reversed(rec.running.values()))
                raise SubjectBusy(subject, task.task_id, task.task_type)
            rec.forgotten = True
            with self._create_lock:
                if self._subjects.get(subject) is rec:
                    del self._subjects[subject]
            return True

    def expired(self, *, keep: int | None, idle_seconds: float | None) -> list[str]:
        cutoff = _monotonic() - idle_seconds if idle_seconds is not None else None
        idle = [
            (rec.active_at, subject)
            for subject, rec in list(self._subjects.items())
            if not rec.registered and not rec.running
        ]
        chosen = {
            subject for active_at, subject in idle if cutoff is not None and active_at < cutoff
        }
        if keep is not None and len(idle) > keep:
            idle.sort()
            chosen.update(subject for _, subject in idle[: len(idle) - keep])
        return sorted(chosen)

    def subject_count(self) -> int:
        return len(self._subjects)
