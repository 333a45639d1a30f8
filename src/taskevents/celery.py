"""Celery tasks as task events: :func:`instrument` and :func:`progress`.

::

    from celery import Celery

    import taskevents.celery

    app = Celery("jobs", broker="redis://127.0.0.1:6379/0")
    taskevents.celery.instrument(app, subject="config_name")  # TASKEVENTS_REDIS_URL


    @app.task
    def change_ip(config_name: str) -> dict[str, str]:
        taskevents.celery.progress(50, stage="execution", message="Changing IP...")
        return {"ip": "203.0.113.7"}

:func:`instrument` connects Celery's task signals, so that every matching task emits
``task_started`` (``task_prerun``), ``task_completed`` with its return value
(``task_success``), ``task_failed`` (``task_failure``) and ``task_cancelled``
(``task_revoked``), with Celery's task id as ``task_id`` and the task's name as
``task_type``. Inside a task, :func:`progress` reports progress. A task that calls
nothing still reports its start and its outcome. Needs ``pip install
'taskevents[celery]'``; see :doc:`/celery`.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from taskevents._optional import require
from taskevents._reporting import ErrorReporter, safe_message
from taskevents._urls import printable
from taskevents.emitter import Emitter
from taskevents.events import TaskEvent
from taskevents.exceptions import NoRunningTask, TaskEventsError, UsageError, ValidationError

_signals = require("celery.signals", extra="celery", needed_by="taskevents.celery")
_celery = require("celery", extra="celery", needed_by="taskevents.celery")

__all__ = ["Instrumentation", "SubjectOf", "instrument", "progress"]

logger = logging.getLogger("taskevents")

#: A callable that names the subject a task reports on: called with the Celery task
#: object, the call's positional arguments (a tuple) and its keyword arguments (a
#: dict); None skips the call (it emits nothing).
SubjectOf = Callable[[Any, tuple[Any, ...], dict[str, Any]], "str | None"]

#: How many distinct "could not report" warnings are remembered (each is logged once).
_MAX_WARNINGS = 1000

#: Nesting deeper than this is left as it is when tuples are turned into lists.
_MAX_DEPTH = 64


@dataclass
class _Run:
    """An instrumented task being run in this process."""

    instrumentation: Instrumentation
    #: None: the task reports nothing (no subject, or its start could not be reported).
    subject: str | None
    #: Whether its outcome (or a retry) was reported.
    ended: bool = False


# Task id -> the instrumented task that this process runs under that id. Celery runs a
# task in one thread (or greenlet) of one process, from task_prerun to task_postrun.
_runs: dict[str, _Run] = {}
_instrumented: dict[int, Instrumentation] = {}
_instrumented_lock = threading.Lock()


def _lists(value: Any, depth: int = 0) -> Any:
    """``value`` with its tuples as lists (as Celery's JSON serializer sends them)."""
    if depth > _MAX_DEPTH:
        return value
    if isinstance(value, (list, tuple)):
        return [_lists(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {key: _lists(item, depth + 1) for key, item in value.items()}
    return value


class Instrumentation:
    """What :func:`instrument` connected for one Celery app; :meth:`close` disconnects
    it. Its handlers run in every process that imported the module that called
    :func:`instrument`: a worker's pool processes (start, progress, outcome) and its main
    process (revoked tasks; failures the pool could not report, such as a lost pool
    process or a hard time limit)."""

    def __init__(
        self,
        celery_app: Any,
        emitter: Emitter | None,
        subject: str | SubjectOf,
        task_names: Iterable[str] | None,
    ) -> None:
        self.app = celery_app
        self.subject = subject
        self.task_names: frozenset[str] | None = (
            None if task_names is None else frozenset(task_names)
        )
        self._given = emitter
        self._made: tuple[int, Emitter] | None = None
        self._made_lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()
        self.errors = ErrorReporter("taskevents.celery")
        if emitter is None:
            self._url = os.environ.get("TASKEVENTS_REDIS_URL") or ""
            self._prefix = os.environ.get("TASKEVENTS_REDIS_PREFIX") or "taskevents"
            if not self._url:
                raise UsageError(
                    "taskevents.celery.instrument() without an emitter needs "
                    "TASKEVENTS_REDIS_URL in the environment (and TASKEVENTS_REDIS_PREFIX, "
                    "if not 'taskevents'): the state store that the worker's processes "
                    "and the web processes share; or pass an emitter"
                )
            self._make_emitter()  # a bad URL or prefix fails here, not in a task
        self._handlers: list[tuple[Any, Callable[..., None]]] = [
            (_signals.task_prerun, self._on_prerun),
            (_signals.task_success, self._on_success),
            (_signals.task_failure, self._on_failure),
            (_signals.task_retry, self._on_retry),
            (_signals.task_revoked, self._on_revoked),
            (_signals.task_postrun, self._on_postrun),
        ]
        for signal, handler in self._handlers:
            signal.connect(handler, weak=False, dispatch_uid=self._uid(handler))

    def __repr__(self) -> str:
        return f"<Instrumentation of {self.app!r} subject={self.subject!r}>"

    def _uid(self, handler: Callable[..., None]) -> str:
        return f"taskevents.celery-{id(self)}-{handler.__name__}"

    @property
    def emitter(self) -> Emitter:
        """The emitter this process reports to: the one given to :func:`instrument`, or
        one made in this process on ``TASKEVENTS_REDIS_URL`` (a new one after a fork)."""
        if self._given is not None:
            return self._given
        made = self._made
        if made is None or made[0] != os.getpid():
            return self._make_emitter()
        return made[1]

    def _make_emitter(self) -> Emitter:
        from taskevents.redis import RedisStateStore

        with self._made_lock:
            made = self._made
            if made is not None and made[0] == os.getpid():
                return made[1]
            store = RedisStateStore(self._url, prefix=self._prefix)
            emitter = Emitter(source="celery", state=store)
            self._made = (os.getpid(), emitter)
            return emitter

    def close(self) -> None:
        """Disconnect the signals; tasks then emit nothing. Idempotent."""
        for signal, handler in self._handlers:
            signal.disconnect(handler, dispatch_uid=self._uid(handler))
        with _instrumented_lock:
            if _instrumented.get(id(self.app)) is self:
                del _instrumented[id(self.app)]
        made, self._made = self._made, None
        if made is not None and made[0] == os.getpid():
            from taskevents.redis import RedisStateStore

            store = made[1].state
            if isinstance(store, RedisStateStore):
                store.close()

    # -- which tasks, which subject -----------------------------------------------------

    def _matches(self, task: Any) -> bool:
        if getattr(task, "app", None) is not self.app:
            return False
        return self.task_names is None or getattr(task, "name", None) in self.task_names

    def _warn_once(self, task_name: str, what: str, message: str) -> None:
        key = (task_name, what)
        if key in self._warned or len(self._warned) > _MAX_WARNINGS:
            return
        self._warned.add(key)
        logger.warning("taskevents.celery: %s (said once per task name)", printable(message))
        if len(self._warned) > _MAX_WARNINGS:
            logger.warning("taskevents.celery: too many warnings; no more are logged")

    def _subject_for(self, task: Any, args: Any, kwargs: Any) -> str | None:
        """The subject of one call, or None (skipped, with a warning once per task)."""
        name = str(getattr(task, "name", "?"))
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        choose = self.subject
        try:
            if callable(choose):
                value = choose(task, args, kwargs)
            elif choose in kwargs:
                value = kwargs[choose]
            else:
                bound = inspect.signature(task.run).bind_partial(*args, **kwargs)
                bound.apply_defaults()
                if choose not in bound.arguments:
                    raise LookupError(f"the task has no argument {choose!r}")
                value = bound.arguments[choose]
        except Exception as exc:
            self._warn_once(
                name,
                "subject",
                f"task {name} reports nothing: its subject could not be found "
                f"({type(exc).__name__}: {safe_message(exc, 200)})",
            )
            return None
        if value is None:
            return None
        if not isinstance(value, str):
            self._warn_once(
                name,
                "subject",
                f"task {name} reports nothing: its subject must be a string, got "
                f"{type(value).__name__}",
            )
            return None
        return value

    def _subject_of(self, task_id: str, task: Any, args: Any, kwargs: Any) -> str | None:
        """The subject of a task that ends: known if this process runs it, else (another
        process ran it) found again from its arguments."""
        run = _runs.get(task_id)
        if run is not None:
            if run.instrumentation is not self:
                return None
            run.ended = True
            return run.subject
        if not self._matches(task):
            return None
        return self._subject_for(task, args, kwargs)

    # -- the handlers ---------------------------------------------------------------------

    def _report(self, doing: str, emit: Callable[[], Any]) -> None:
        """Run ``emit``; what it raises is logged (rate-limited), never the task's end."""
        try:
            emit()
        except NoRunningTask:
            pass  # ended (or never started) as far as the store knows: nothing to end
        except Exception as exc:
            self.errors.report(exc, doing, traceback=not isinstance(exc, TaskEventsError))

    def _on_prerun(
        self, sender: Any = None, task_id: Any = None, task: Any = None, **info: Any
    ) -> None:
        task = task if task is not None else sender
        if not isinstance(task_id, str) or not self._matches(task):
            return
        subject = self._subject_for(task, info.get("args"), info.get("kwargs"))
        run = _runs[task_id] = _Run(self, subject)
        if subject is None:
            return
        emitter = self.emitter
        try:
            if emitter.state.running_task(subject, task_id) is None:
                emitter.started(subject, task.name, task_id=task_id, exclusive=False)
            # else another attempt of a task that is still running (a retry): it goes on
        except ValidationError as exc:
            run.subject = None
            self._warn_once(
                task.name, "started", f"task {task.name} reports nothing: {safe_message(exc)}"
            )
        except Exception as exc:
            run.subject = None
            self.errors.report(
                exc, f"to report the start of {task.name}[{task_id}]", traceback=False
            )

    def _on_success(self, sender: Any = None, result: Any = None, **info: Any) -> None:
        task_id = getattr(getattr(sender, "request", None), "id", None)
        if not isinstance(task_id, str):
            return
        run = _runs.get(task_id)
        if run is None or run.instrumentation is not self:
            return
        run.ended = True
        subject = run.subject
        if subject is None:
            return
        emitter = self.emitter

        def completed() -> None:
            try:
                emitter.completed(subject, result, task_id=task_id)
                return
            except ValidationError:
                pass
            try:
                emitter.completed(subject, _lists(result), task_id=task_id)
            except ValidationError as exc:
                self._warn_once(
                    sender.name,
                    "result",
                    f"task {sender.name} completed with a result that is not reported "
                    f"(it is sent as null): {safe_message(exc, 300)}",
                )
                emitter.completed(subject, None, task_id=task_id)

        self._report(f"to report the completion of {sender.name}[{task_id}]", completed)

    def _on_failure(
        self,
        sender: Any = None,
        task_id: Any = None,
        exception: BaseException | None = None,
        args: Any = None,
        kwargs: Any = None,
        **info: Any,
    ) -> None:
        if not isinstance(task_id, str):
            return
        subject = self._subject_of(task_id, sender, args, kwargs)
        if subject is None:
            return
        error: BaseException | str = exception if exception is not None else "failed"
        self._report(
            f"to report the failure of {getattr(sender, 'name', '?')}[{task_id}]",
            lambda: self.emitter.failed(subject, error, task_id=task_id),
        )

    def _on_retry(
        self, sender: Any = None, request: Any = None, reason: Any = None, **info: Any
    ) -> None:
        task_id = getattr(request, "id", None)
        if not isinstance(task_id, str):
            return
        subject = self._subject_of(
            task_id, sender, getattr(request, "args", None), getattr(request, "kwargs", None)
        )
        if subject is None:
            return
        retries = getattr(request, "retries", 0)
        message = safe_message(reason, 500) if isinstance(reason, BaseException) else None
        details = {"retries": retries + 1} if isinstance(retries, int) else {}
        # Not an outcome: the task stays running until an attempt ends it.
        self._report(
            f"to report the retry of {getattr(sender, 'name', '?')}[{task_id}]",
            lambda: self.emitter.progress(
                subject, stage="retry", message=message, task_id=task_id, **details
            ),
        )

    def _on_revoked(
        self,
        sender: Any = None,
        request: Any = None,
        terminated: Any = False,
        expired: Any = False,
        **info: Any,
    ) -> None:
        task_id = getattr(request, "id", None)
        if not isinstance(task_id, str):
            return
        # In a worker, this runs in its main process, not where the task ran: the
        # subject is found again from the request's arguments.
        subject = self._subject_of(
            task_id, sender, getattr(request, "args", None), getattr(request, "kwargs", None)
        )
        if subject is None:
            return
        reason = "expired" if expired else "terminated" if terminated else "revoked"
        # A task revoked before it started has no running task: nothing is emitted.
        self._report(
            f"to report the revocation of {getattr(sender, 'name', '?')}[{task_id}]",
            lambda: self.emitter.cancelled(subject, reason, task_id=task_id),
        )

    def _on_postrun(
        self, sender: Any = None, task_id: Any = None, state: Any = None, **info: Any
    ) -> None:
        if not isinstance(task_id, str):
            return
        run = _runs.get(task_id)
        if run is None or run.instrumentation is not self:
            return
        del _runs[task_id]
        subject = run.subject
        if run.ended or subject is None:
            return
        doing = f"to report the end of {getattr(sender, 'name', '?')}[{task_id}]"
        if state:
            # Ended without success, failure or retry (Ignore, Reject): the reason is
            # Celery's state; never left running for ever.
            reason = str(state).lower()
            self._report(doing, lambda: self.emitter.cancelled(subject, reason, task_id=task_id))
            return
        # No state: an exception goes through Celery's tracer. In a worker, that is a
        # pool process told to stop (SystemExit in the task): its main process reports
        # the outcome, as revoked (task_revoked) or as a lost process (task_failure).
        # Called eagerly with task_eager_propagates, it is the task's own exception.
        if not getattr(getattr(sender, "request", None), "is_eager", False):
            return
        error = sys.exc_info()[1]
        if isinstance(error, Exception):
            failure: BaseException = error
            self._report(doing, lambda: self.emitter.failed(subject, failure, task_id=task_id))
        else:
            name = type(error).__name__ if error is not None else "interrupted"
            self._report(doing, lambda: self.emitter.cancelled(subject, name, task_id=task_id))


def instrument(
    celery_app: Any,
    emitter: Emitter | None = None,
    *,
    subject: str | SubjectOf,
    task_names: Iterable[str] | None = None,
) -> Instrumentation:
    """Report the tasks of ``celery_app`` as task events, through Celery's signals.

    Call it where the app's tasks are defined (the module a worker imports), so that
    every process of the worker runs it. Each task that matches emits:

    - ``task_started`` when it starts (``task_prerun``), with Celery's task id as
      ``task_id`` and the task's name as ``task_type``;
    - ``task_completed`` with its return value as the result (``task_success``); a value
      that is not JSON (after tuples are made lists) or is too large is sent as ``None``,
      with a warning in the log: the task does not fail for it;
    - ``task_failed`` with the exception's type and message, never its traceback
      (``task_failure``, also for a lost pool process or a hard time limit);
    - ``task_cancelled`` when it is revoked while it runs or waits for a retry, with the
      reason ``"terminated"``, ``"revoked"`` or ``"expired"`` (``task_revoked``), or when
      it ends by ``celery.exceptions.Ignore`` or ``Reject`` (the reason is Celery's
      state, ``"ignored"``, ``"rejected"``).

    A retry (``task_retry``) is not an end: it emits ``task_progress`` with
    ``stage="retry"``, the reason as ``message`` and ``retries``, and the task goes on
    running until an attempt ends it. Tasks start with ``exclusive=False``: Celery may
    run two tasks for one subject at once, and each is reported.

    :param celery_app: the ``celery.Celery`` app; only its tasks are reported.
    :param emitter: where to emit. None: in each process, an :class:`~taskevents.Emitter`
        (``source="celery"``) on a :class:`~taskevents.redis.RedisStateStore` at
        ``TASKEVENTS_REDIS_URL``, with the key prefix ``TASKEVENTS_REDIS_PREFIX``
        (default ``"taskevents"``), from the environment: the settings the Flask
        extension reads from its config. An emitter given must keep its state where the
        worker's processes all see it (a ``RedisStateStore``) unless the worker runs one
        process (``--pool=solo``): a revoked task is reported by the worker's main
        process, and a task by a pool process.
    :param subject: which subject a task reports on: the name of one of its arguments
        (given by keyword or by position, or its default), or a :data:`SubjectOf`
        callable ``(task, args, kwargs) -> str | None``. It is asked again in the
        worker's main process for a revoked task, so it must depend only on what it is
        given. When it fails, or gives something that is not a valid subject, the task
        runs all the same and reports nothing (a warning is logged, once per task name).
    :param task_names: report only the tasks of these names; None: every task of the app.
    :returns: the :class:`Instrumentation`, whose ``close()`` disconnects it.
    :raises UsageError: ``celery_app`` is instrumented already, or ``emitter`` is None and
        ``TASKEVENTS_REDIS_URL`` is not set.
    :raises ValidationError: a bad ``TASKEVENTS_REDIS_URL`` or prefix, or argument.
    """
    if emitter is not None and not isinstance(emitter, Emitter):
        raise ValidationError("emitter", "a taskevents.Emitter or None", emitter)
    if not (callable(subject) or (isinstance(subject, str) and subject.isidentifier())):
        raise ValidationError(
            "subject", "the name of a task argument, or a callable (task, args, kwargs)", subject
        )
    if isinstance(task_names, str):
        raise ValidationError("task_names", "a collection of task names (not a string)", task_names)
    with _instrumented_lock:
        if id(celery_app) in _instrumented:
            raise UsageError(
                f"{celery_app!r} is instrumented already; close() the Instrumentation "
                "first (use a callable subject to vary the subject per task)"
            )
        instrumentation = Instrumentation(celery_app, emitter, subject, task_names)
        _instrumented[id(celery_app)] = instrumentation
    return instrumentation


def progress(
    percent: float | None = None,
    stage: str | None = None,
    message: str | None = None,
    **details: Any,
) -> TaskEvent | None:
    """Report progress of the Celery task that calls it; see
    :meth:`Emitter.progress() <taskevents.Emitter.progress>` for the arguments.

    :returns: the event; None when the task reports nothing (its subject could not be
        found, see :func:`instrument`) or the progress could not be recorded (the store
        was unavailable, or the task was cancelled meanwhile; logged).
    :raises UsageError: called outside a task, or in a task that :func:`instrument` does
        not report (another app's, or a name not in ``task_names``).
    :raises ValidationError: a bad argument, as :meth:`Emitter.progress()
        <taskevents.Emitter.progress>` raises it.
    """
    task = _celery.current_task
    request = getattr(task, "request", None) if task else None
    task_id = getattr(request, "id", None)
    run = _runs.get(task_id) if isinstance(task_id, str) else None
    if run is None:
        if not task:
            raise UsageError(
                "taskevents.celery.progress() reports for the Celery task that calls it, "
                "from the task's own thread; no task runs here"
            )
        raise UsageError(
            f"taskevents.celery.progress(): task {task.name} is not reported by "
            "taskevents.celery.instrument() (another app's task, or not in task_names)"
        )
    if run.subject is None:
        return None
    instrumentation = run.instrumentation
    try:
        return instrumentation.emitter.progress(
            run.subject, percent, stage, message, task_id=task_id, **details
        )
    except ValidationError:
        raise
    except NoRunningTask:
        return None
    except Exception as exc:
        instrumentation.errors.report(exc, f"to report progress of task {task_id}", traceback=False)
        return None
