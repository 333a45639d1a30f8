"""The adapter contract.

An adapter delivers events somewhere. It has one required method, :meth:`Adapter.handle`,
plus :meth:`~Adapter.close` and context-manager support. :meth:`~Adapter.connect` hooks it
to the :mod:`~taskevents.signals` (of every emitter, or of one), filtered by event type and
subject. Whatever ``handle`` raises is counted and logged (rate-limited) and goes no
further: not to the emitting task, not to the other adapters.

``handle`` runs in the emitting thread, so it must be quick. A sink that can be slow or
fail (HTTP, a cloud API) subclasses :class:`BackgroundAdapter` and implements
:meth:`~BackgroundAdapter.deliver` instead: events are queued and delivered by a worker
thread, with retries.

Local or every process: with a :class:`taskevents.redis.RedisBridge` running, the
signals also carry the events of other processes, sent by :data:`~taskevents.signals.REMOTE`.
An adapter takes them only if its :attr:`~Adapter.remote` is true. Adapters that push
to the outside world (logging, webhooks, AWS) leave it false, so each event leaves
through the process that emitted it, once; the Socket.IO adapter sets it, so every web
process serves its own clients every process's events.
"""

from __future__ import annotations

import abc
import asyncio
import atexit
import concurrent.futures
import contextlib
import inspect
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import blinker

from taskevents import signals as _signals
from taskevents._checks import number, positive_int
from taskevents._reporting import ErrorReporter
from taskevents.events import TASK_PROGRESS, TaskEvent, event_types
from taskevents.exceptions import UsageError, ValidationError
from taskevents.signals import REMOTE, SIGNALS, bridged_by

__all__ = ["Adapter", "AsyncAdapter", "BackgroundAdapter", "CallableAdapter"]

logger = logging.getLogger("taskevents")

A = TypeVar("A", bound="Adapter")
B = TypeVar("B", bound="BackgroundAdapter")
C = TypeVar("C", bound="AsyncAdapter")


def _check_types(types: Iterable[str] | None) -> tuple[str, ...]:
    known = event_types()
    if types is None:
        return known
    if isinstance(types, str):
        raise ValidationError("types", "a collection of event types, not a single string", types)
    chosen = set(types)
    unknown = chosen.difference(known)
    if unknown:
        raise ValidationError(
            "types",
            f"event types among {', '.join(known)} (declare others first)",
            sorted(unknown)[0],
        )
    return tuple(t for t in known if t in chosen)


#: Connected adapters that take every type, also those declared later.
_every_type: weakref.WeakSet[Adapter] = weakref.WeakSet()


def _connect_new_type(name: str) -> None:
    for adapter in list(_every_type):
        adapter.types = (*adapter.types, name)
        for sender in adapter._connected_to:
            SIGNALS[name].connect(adapter._receive, sender=sender, weak=False)


_signals._type_listeners.append(_connect_new_type)


def _check_subjects(subjects: Iterable[str] | None) -> frozenset[str] | None:
    if subjects is None:
        return None
    if isinstance(subjects, str):
        raise ValidationError(
            "subjects", "a collection of subject names, not a single string", subjects
        )
    chosen = frozenset(subjects)
    for subject in chosen:
        if not isinstance(subject, str) or not subject:
            raise ValidationError("subjects", "non-empty strings", subject)
    return chosen


class Adapter(abc.ABC):
    """Base class of every adapter.

    :param types: the event types to receive (default: all of them, including types
        declared later with :func:`~taskevents.define_event_type`).
    :param subjects: the subjects to receive (default: all of them).
    :param remote: whether to receive the events of other processes too (default: the
        class's :attr:`remote`).
    """

    #: Whether this adapter receives the events of other processes, which a bridge
    #: sends with :data:`~taskevents.signals.REMOTE` as the sender. False: only the
    #: events of this process, so that what the adapter sends out leaves once, from
    #: the process that emitted it. An adapter with ``remote`` true that is connected
    #: to one emitter receives the other processes' events as well.
    remote: bool = False

    def __init__(
        self,
        *,
        types: Iterable[str] | None = None,
        subjects: Iterable[str] | None = None,
        remote: bool | None = None,
    ) -> None:
        if remote is not None:
            if not isinstance(remote, bool):
                raise ValidationError("remote", "True or False", remote)
            self.remote = remote
        self.types: tuple[str, ...] = _check_types(types)
        self._every_type = types is None
        self.subjects: frozenset[str] | None = _check_subjects(subjects)
        self.errors = ErrorReporter(f"adapter {type(self).__name__}")
        self._connected_to: list[Any] = []
        self._store_origin: str | None = None

    @abc.abstractmethod
    def handle(self, event: TaskEvent) -> None:
        """Deliver one event. Called in the emitting thread, for the types and subjects
        this adapter accepts. What it raises is counted and logged, then dropped."""

    def accepts(self, event: TaskEvent) -> bool:
        """Whether ``event`` passes this adapter's type and subject filters."""
        return event.type in self.types and (
            self.subjects is None or event.subject in self.subjects
        )

    @property
    def error_count(self) -> int:
        """How many times :meth:`handle` (or delivery) has raised."""
        return self.errors.count

    def connect(self: A, emitter: object | None = None) -> A:
        """Start receiving events: those of ``emitter`` only, or of every emitter.
        Returns the adapter, so ``adapter = LoggingAdapter().connect()`` reads well.

        With :attr:`remote` true, an adapter connected to one emitter also receives the
        events of other processes (sent by :data:`~taskevents.signals.REMOTE`).

        The signals hold the adapter strongly until :meth:`disconnect` or :meth:`close`.
        """
        sender = blinker.ANY if emitter is None else emitter
        if self._every_type:
            self.types = event_types()
            _every_type.add(self)
        senders = [sender]
        if self.remote and sender is not blinker.ANY and REMOTE not in self._connected_to:
            senders.append(REMOTE)
            origin = getattr(getattr(sender, "state", None), "origin", None)
            self._store_origin = origin if isinstance(origin, str) else None
        for one in senders:
            for type_ in self.types:
                SIGNALS[type_].connect(self._receive, sender=one, weak=False)
            self._connected_to.append(one)
        return self

    def disconnect(self) -> None:
        """Stop receiving events."""
        if self._connected_to:
            _every_type.discard(self)
            for type_ in self.types:
                # From every sender at once: blinker keeps a receiver disconnected from
                # one sender only in its table.
                SIGNALS[type_].disconnect(self._receive)
            self._connected_to.clear()

    def close(self) -> None:
        """Disconnect and release resources; subclasses flush here. Idempotent."""
        self.disconnect()

    def __enter__(self: A) -> A:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _takes(self, sender: object) -> bool:
        """Whether to take an event from ``sender``: another process's (from REMOTE) only
        with :attr:`remote`, and then only from the bridge of the connected emitter's
        store, if it has an ``origin`` (two apps in one process, each with a bridge)."""
        if sender is not REMOTE:
            return True
        if not self.remote:
            return False  # another process's event, for that process's own adapters
        origin = self._store_origin
        return origin is None or bridged_by() in (None, origin)

    def _receive(self, sender: object, *, event: TaskEvent) -> None:
        if sender is REMOTE and not self._takes(sender):
            return
        subjects = self.subjects
        if subjects is not None and event._subject not in subjects:
            return
        try:
            self.handle(event)
        except Exception as exc:  # contained: never reaches the task or other adapters
            self.errors.report(exc, f"to handle {event.type} for {event.subject!r}")


class CallableAdapter(Adapter):
    """Wraps a plain function ``func(event)`` as an adapter.

    For example, to print every failure::

        CallableAdapter(print, types=["task_failed"]).connect()
    """

    def __init__(
        self,
        func: Callable[[TaskEvent], object],
        *,
        types: Iterable[str] | None = None,
        subjects: Iterable[str] | None = None,
        remote: bool | None = None,
    ) -> None:
        if not callable(func):
            raise ValidationError("func", "a callable taking one TaskEvent", func)
        super().__init__(types=types, subjects=subjects, remote=remote)
        self.func = func
        self.errors.where = f"adapter {getattr(func, '__qualname__', repr(func))}"

    def handle(self, event: TaskEvent) -> None:
        self.func(event)


class _ProgressSlot:
    """A place in the queue for a subject's progress. Until the worker takes it, a newer
    progress replaces the one it holds (latest wins)."""

    __slots__ = ("event",)

    def __init__(self, event: TaskEvent) -> None:
        self.event = event


class _Action:
    """Work queued with :meth:`BackgroundAdapter.call_soon`."""

    __slots__ = ("func", "subject")

    def __init__(self, subject: str, func: Callable[[], object]) -> None:
        self.subject = subject
        self.func = func


#: How many queued items the worker takes per turn of its lock.
_BATCH = 256

_live_background: weakref.WeakSet[BackgroundAdapter] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    for adapter in list(_live_background):
        adapter.close(timeout=2.0)


class _QueuedAdapter(Adapter):
    """The queue that :class:`BackgroundAdapter` and :class:`AsyncAdapter` share: its
    options, :meth:`handle` and :meth:`call_soon` (ordering, coalescing), the batches
    the worker takes, the retry decision and the counters. Each subclass brings its
    worker (a thread, a task on an event loop) through ``_init_worker``, ``_start`` and
    ``_wake``."""

    #: The errors :meth:`is_permanent` calls permanent by default.
    permanent_errors: tuple[type[BaseException], ...] = (
        TypeError,
        ValueError,
        ArithmeticError,
        RecursionError,
    )

    def __init__(
        self,
        *,
        types: Iterable[str] | None = None,
        subjects: Iterable[str] | None = None,
        max_queue: int = 10_000,
        progress_interval: float = 0.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        max_attempts: int | None = None,
        coalesce_progress: bool = True,
    ) -> None:
        super().__init__(types=types, subjects=subjects)
        if not isinstance(coalesce_progress, bool):
            raise ValidationError("coalesce_progress", "True or False", coalesce_progress)
        if not coalesce_progress and progress_interval:
            raise ValidationError(
                "progress_interval", "0 when coalesce_progress is False", progress_interval
            )
        self.coalesce_progress = coalesce_progress
        self.max_queue = positive_int(max_queue, "max_queue")
        self.progress_interval = number(progress_interval, "progress_interval")
        self.retry_initial = number(retry_initial, "retry_initial")
        self.retry_max = number(retry_max, "retry_max")
        if max_attempts is not None:
            positive_int(max_attempts, "max_attempts")
        self.max_attempts = max_attempts

        # The queue's rules, in one place:
        # - one FIFO queue of events, progress slots and call_soon actions, taken by one
        #   worker in batches; items of one subject keep their order;
        # - a progress event takes the subject's open slot if it holds the same task's
        #   progress (latest wins), else opens a new slot at the end of the queue;
        #   anything else for the subject (lifecycle event, action, another task's
        #   progress) closes the slot first, so progress never overtakes what followed it;
        # - a slot due later than now (progress_interval) waits in _deferred and joins
        #   the queue when due, or at once when its subject's slot is closed, or on
        #   flush/close;
        # - lifecycle events and actions are never dropped while open; the queue has no
        #   bound but the coalescing (see max_queue).
        # A plain lock, never taken twice by one thread: cheaper than the default RLock,
        # most of all under gevent, where RLock is pure Python.
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[TaskEvent | _ProgressSlot | _Action] = deque()
        # The slot of each subject whose progress can still be replaced; a lifecycle event
        # closes it, so progress never jumps ahead of the lifecycle event that followed.
        self._open: dict[str, _ProgressSlot] = {}
        self._deferred: dict[str, float] = {}  # subject -> when its open slot is due
        self._progress_due: dict[str, float] = {}
        self._busy = False
        self._waiting = False  # the worker waits for work
        self._batch: deque[TaskEvent | _Action | _ProgressSlot] = (
            deque()
        )  # taken by the worker, not done
        self._flushing = 0
        self._closing = False
        self._abort = threading.Event()
        self._counts = dict.fromkeys(
            ("received", "delivered", "coalesced", "retries", "dropped", "rejected", "overflowed"),
            0,
        )
        self._overflow_warned = 0.0
        self._started = False
        self._init_worker()

    def _init_worker(self) -> None:
        """Set up the worker (not started yet); the end of ``__init__``."""

    @abc.abstractmethod
    def _start(self) -> None:
        """Start the worker unless it runs (or the adapter is closed)."""

    @abc.abstractmethod
    def _wake(self) -> None:
        """With the lock held: wake the worker, which waits for work."""

    def is_permanent(self, exc: Exception) -> bool:
        """Whether ``exc``, raised by :meth:`deliver`, says the event itself can never
        be delivered (so it is given up at once) rather than that the sink failed for
        now (so it is retried). Override to say which of your sink's errors are which;
        by default, instances of :attr:`permanent_errors`."""
        return isinstance(exc, self.permanent_errors)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: received, delivered, coalesced, retries, dropped (of which
        rejected: given up on a permanent error), overflowed, queued, errors."""
        with self._cond:
            counts = dict(self._counts)
            counts["queued"] = len(self._queue) + len(self._deferred) + len(self._batch)
        counts["errors"] = self.errors.count
        return counts

    def handle(self, event: TaskEvent) -> None:
        """Queue ``event`` for the worker; never blocks on the sink."""
        if not self._started:
            self._start()
        with self._cond:
            if self._closing:
                self._counts["dropped"] += 1
                return
            self._counts["received"] += 1
            subject = event.subject
            if event.type == TASK_PROGRESS and self.coalesce_progress:
                slot = self._open.get(subject)
                if slot is not None:
                    if slot.event.task_id == event.task_id:
                        slot.event = event
                        self._counts["coalesced"] += 1
                        return
                    # Another task's progress (exclusive=False): keep that task's latest.
                    self._close_slot(subject)
                slot = self._open[subject] = _ProgressSlot(event)
                now = time.monotonic()
                due = self._progress_due.get(subject, 0.0)
                if due > now:
                    self._deferred[subject] = due
                else:
                    if due:
                        del self._progress_due[subject]  # past: keep the table small
                    self._queue.append(slot)
            else:
                self._close_slot(subject)
                self._queue.append(event)
                if len(self._queue) > self.max_queue:
                    self._counts["overflowed"] += 1
                    now = time.monotonic()
                    if now - self._overflow_warned > 10.0:
                        self._overflow_warned = now
                        logger.warning(
                            "%s: %d events queued (max_queue=%d); the sink is not keeping up",
                            type(self).__name__,
                            len(self._queue),
                            self.max_queue,
                        )
            if self._waiting:
                self._waiting = False  # woken once is enough (see _next)
                self._wake()

    def call_soon(self, subject: str, func: Callable[[], object]) -> None:
        """Run ``func()`` in the worker after every event of ``subject`` queued so far
        (progress included) and before any later one. What it raises is counted and
        logged. Adapters use it to do per-subject work in stream order, e.g. to send a
        new subscriber a snapshot at exactly the right point of the stream."""
        if not self._started:
            self._start()
        with self._cond:
            if self._closing:
                return
            self._close_slot(subject)
            self._queue.append(_Action(subject, func))
            if self._waiting:
                self._waiting = False  # woken once is enough (see _next)
                self._wake()

    def _close_slot(self, subject: str) -> None:
        # Called with the lock held: what comes next for ``subject`` goes behind the
        # progress waiting now, which may still be replaced but not moved.
        slot = self._open.pop(subject, None)
        if slot is not None and self._deferred.pop(subject, None) is not None:
            self._queue.append(slot)  # the waiting progress goes first, interval or not

    def _take(self, slot: _ProgressSlot) -> TaskEvent:
        """The progress a slot holds now; from here on, newer progress takes a new slot."""
        with self._cond:
            event = slot.event
            if self._open.get(event.subject) is slot:
                del self._open[event.subject]
            if self.progress_interval:
                due = self._progress_due
                now = time.monotonic()
                if len(due) > 1024:  # forget the subjects whose interval is over
                    for subject, when in list(due.items()):
                        if when <= now:
                            del due[subject]
                due[event.subject] = now + self.progress_interval
            return event

    def _take_batch(self) -> bool:
        """With the lock held: move the progress slots that are due (all of them when
        flushing or closing) into the queue, then up to ``_BATCH`` queued items into
        ``self._batch`` for the worker. False when there was nothing to take."""
        now = time.monotonic()
        if self._deferred:
            hurry = self._closing or self._flushing
            for subject, due in list(self._deferred.items()):
                if hurry or due <= now:
                    del self._deferred[subject]
                    self._queue.append(self._open[subject])
        if self._queue:
            queue, batch = self._queue, self._batch
            # A progress slot stays open (replaceable) until its turn comes.
            batch.extend(queue.popleft() for _ in range(min(len(queue), _BATCH)))
            self._busy = True
            return True
        return False

    def _until_due(self) -> float | None:
        """With the lock held: seconds until the next held-back progress is due (None:
        none is held back), for the worker's wait."""
        if not self._deferred:
            return None
        return min(self._deferred.values()) - time.monotonic()

    def _retrying(self, event: TaskEvent, error: Exception, attempt: int) -> bool:
        """After ``attempt`` failed with ``error``: report it, count, and say whether to
        try ``event`` again (False: given up, as permanent, superseded by a newer
        progress of its task, or out of attempts)."""
        try:
            permanent = self.is_permanent(error)
        except Exception:
            permanent = False
        if permanent:
            self.errors.report(
                error,
                f"to deliver {event.type} for {event.subject!r} (event {event.id}); "
                "a permanent error: the event is dropped",
                traceback=False,
            )
            with self._cond:
                self._counts["dropped"] += 1
                self._counts["rejected"] += 1
            return False
        self.errors.report(
            error, f"to deliver {event.type} for {event.subject!r} (attempt {attempt})"
        )
        with self._cond:
            newer = self._open.get(event.subject)
            superseded = (
                event.type == TASK_PROGRESS
                and newer is not None
                and newer.event.task_id == event.task_id
            )
            gave_up = self.max_attempts is not None and attempt >= self.max_attempts
            if superseded:
                self._counts["coalesced"] += 1
                return False
            if gave_up:
                self._counts["dropped"] += 1
                logger.error(
                    "%s gave up on event %s after %d attempts",
                    type(self).__name__,
                    event.id,
                    attempt,
                )
                return False
            self._counts["retries"] += 1
        return True

    def _drop_left(self, when: str, hung: bool) -> None:
        """Count what is still queued (and the event stuck in delivery, if ``hung``) as
        dropped, forget it, and log how many were lost ``when``."""
        with self._cond:
            left = len(self._queue) + len(self._deferred) + len(self._batch) + int(hung)
            if left:
                self._counts["dropped"] += left
                self._batch.clear()
                self._queue.clear()
                self._deferred.clear()
                self._open.clear()
        if left:
            logger.warning(
                "%s closed with %d undelivered event%s %s%s",
                type(self).__name__,
                left,
                "" if left == 1 else "s",
                when,
                " (one of them stuck in deliver())" if hung else "",
            )


class BackgroundAdapter(_QueuedAdapter):
    """Base for adapters whose sink may be slow or fail: :meth:`handle` only queues, and
    a worker thread calls :meth:`deliver`, retrying with capped exponential backoff.

    - Lifecycle events (started, completed, failed, cancelled) keep their order and are
      never dropped while the adapter is open, unless their delivery is given up
      (``max_attempts``, or a permanent error: see below).
    - Progress is coalesced per subject and task: while one waits in the queue, a
      newer one of the same task replaces it (latest wins), and at most one per
      subject is delivered every ``progress_interval`` seconds. The latest progress is
      always delivered before the lifecycle event that follows it.
    - :meth:`close` (or leaving a ``with`` block) flushes, waiting up to ``timeout``.

    The worker thread starts when the adapter is connected (or first given work).

    :param max_queue: only a warning threshold: when more lifecycle events than this
        wait, a warning is logged (at most every 10 s) and ``overflowed`` counted. Nothing
        is dropped for it and memory is not bounded by it: progress is bounded by
        coalescing (one waiting per subject and task), lifecycle events are all kept.
    :param progress_interval: minimum seconds between two progress deliveries for one
        subject (0: deliver as fast as the sink takes them).
    :param coalesce_progress: False delivers every progress event, in order, like the
        lifecycle ones (``progress_interval`` must then be 0).
    :param retry_initial: first wait after a failed delivery, in seconds; doubled each
        time up to ``retry_max``.
    :param max_attempts: give an event up after this many failed attempts (logged and
        counted as dropped); None retries until delivered or closed.

    An error that retrying cannot fix (:meth:`~BackgroundAdapter.is_permanent`: by default a
    ``TypeError``, ``ValueError``, ``ArithmeticError`` or ``RecursionError``, such as an
    event the sink cannot encode) gives the event up at once, logged and counted as ``dropped`` and
    ``rejected``: no single event can hold the queue for ever.
    """

    def _init_worker(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"taskevents-{type(self).__name__}", daemon=True
        )

    def _start(self) -> None:
        """Start the worker unless it runs (or the adapter is closed)."""
        if self._started:
            return
        with self._cond:
            if self._started or self._closing:
                return
            self._started = True
        self._thread.start()
        _live_background.add(self)

    def connect(self: B, emitter: object | None = None) -> B:
        """Connect (see :meth:`Adapter.connect`) and start the worker."""
        self._start()
        return super().connect(emitter)

    @abc.abstractmethod
    def deliver(self, event: TaskEvent) -> None:
        """Deliver one event; runs in the worker thread. Raise to have it retried."""

    def _wake(self) -> None:
        self._cond.notify()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is delivered (progress held back by
        ``progress_interval`` goes at once). Returns False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._queue or self._deferred or self._batch or self._busy:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout: float = 10.0) -> None:
        """Disconnect, deliver what is queued (waiting up to ``timeout`` seconds), and
        stop the worker. What could not be delivered in time is logged and counted as
        dropped, including an event stuck in :meth:`deliver` at that point (a sink that
        never returns). Idempotent."""
        self.disconnect()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            started = self._started
        if started:
            self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            with self._cond:
                self._cond.notify_all()
            self._thread.join(0.5)  # a sink hung in deliver() may never return
        hung = started and self._thread.is_alive()  # one event stuck in deliver()
        self._drop_left(f"after {timeout:.1f}s", hung)
        _live_background.discard(self)

    # -- worker ---------------------------------------------------------------------

    def _next(self, delivered: int) -> bool:
        """Move the next items into ``self._batch``; False when closing with nothing
        left. Taking many at once keeps the worker's lock and wake-ups off the per-event
        cost."""
        with self._cond:
            self._counts["delivered"] += delivered
            self._busy = False
            if self._flushing or self._closing:
                self._cond.notify_all()
            while True:
                if self._abort.is_set():
                    return False
                if self._take_batch():
                    return True
                if self._closing:
                    return False
                wait = self._until_due()
                # handle() and call_soon() notify while this is set, and clear it when they
                # do: the worker may not run for a while after the first notify (under
                # gevent, not until the emitting greenlet yields), and a notify per event
                # meanwhile cost more than the rest of the hand-off.
                self._waiting = True
                self._cond.wait(wait)
                self._waiting = False

    def _run(self) -> None:
        batch = self._batch
        abort = self._abort
        delivered = 0
        while self._next(delivered):
            delivered = 0
            while batch:
                try:
                    item = batch.popleft()
                except IndexError:  # close() took what was left
                    break
                if abort.is_set():
                    with self._cond:
                        self._counts["dropped"] += 1
                    continue
                if isinstance(item, _Action):
                    try:
                        item.func()
                    except Exception as exc:
                        self.errors.report(exc, f"in work queued for {item.subject!r}")
                    continue
                event = self._take(item) if isinstance(item, _ProgressSlot) else item
                # The first attempt here, the rest (rarely needed) in _deliver_with_retry:
                # this loop runs once per event, and a call less per event shows in bursts.
                try:
                    self.deliver(event)
                except Exception as exc:
                    if self._deliver_with_retry(event, exc):
                        delivered += 1
                else:
                    delivered += 1
        with self._cond:  # _next() has counted the last deliveries
            self._busy = False
            self._cond.notify_all()

    def _deliver_with_retry(self, event: TaskEvent, failed: Exception | None = None) -> bool:
        """Deliver ``event``, retrying; True once delivered. ``failed``: what the first
        attempt, already made by the caller, raised."""
        delay = self.retry_initial
        attempt = 0
        while True:
            attempt += 1
            if failed is None:
                try:
                    self.deliver(event)
                except Exception as exc:
                    failed = exc
                else:
                    return True
            error, failed = failed, None
            if not self._retrying(event, error, attempt):
                return False
            if self._abort.wait(delay):
                with self._cond:
                    self._counts["dropped"] += 1
                return False
            delay = min(delay * 2, self.retry_max)


class AsyncAdapter(_QueuedAdapter):
    """Base for adapters that deliver on an asyncio event loop: :meth:`handle` only
    queues, and a worker task on the loop the adapter is bound to awaits
    :meth:`deliver`, retrying with capped exponential backoff.

    The queue is :class:`BackgroundAdapter`'s, with the same options and rules: each
    subject's events are delivered one at a time and in order, lifecycle events are
    never dropped while the adapter is open (unless given up: ``max_attempts``, or a
    permanent error, see :meth:`is_permanent`), progress is coalesced (latest wins, at
    most one per subject every ``progress_interval`` seconds), and :attr:`stats` counts
    the same things.

    Emitting stays synchronous and cheap, from any thread and from coroutines on the
    loop itself: :meth:`handle` takes a lock for a few lines and wakes the worker, with
    ``loop.call_soon_threadsafe`` from another thread. A slow :meth:`deliver` holds up
    neither the emitter nor the loop's other coroutines.

    The adapter is bound to a loop by :meth:`bind`, or by :meth:`connect` called in a
    coroutine (the running loop). Close it with ``await`` :meth:`aclose` on that loop
    (or ``async with``), or with :meth:`close` from another thread.

    Work queued with :meth:`call_soon` runs on the loop too; a function that returns an
    awaitable (an ``async def`` function) is awaited there.
    """

    def _init_worker(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()  # set: the worker has work
        self._progressed = asyncio.Event()  # set: the worker finished a batch
        self._current: TaskEvent | None = None  # in deliver(), retries included
        self._close_timeout: float | None = None  # set when aclose() cancels the worker

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop this adapter is bound to (None until bound)."""
        return self._loop

    def bind(self: C, loop: asyncio.AbstractEventLoop | None = None) -> C:
        """Bind the adapter to ``loop`` (default: the running loop), where its worker
        will run. Returns the adapter. Raises :exc:`~taskevents.UsageError` without
        ``loop`` outside a running loop, or when the adapter is bound to another loop
        already."""
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise UsageError(
                    f"{type(self).__name__} needs an event loop: call bind(loop) or "
                    "connect() in a coroutine, or pass the loop to bind()"
                ) from None
        if self._loop is not None and self._loop is not loop:
            raise UsageError(f"{type(self).__name__} is bound to another event loop already")
        self._loop = loop
        return self

    def connect(self: C, emitter: object | None = None) -> C:
        """Connect (see :meth:`Adapter.connect`) and start the worker task, on the loop
        the adapter is bound to, or else on the running loop.

        :raises UsageError: when not bound and called outside a running event loop.
        """
        if self._loop is None:
            self.bind()
        self._start()
        return super().connect(emitter)

    @abc.abstractmethod
    async def deliver(self, event: TaskEvent) -> None:
        """Deliver one event; awaited by the worker task on the adapter's loop, never two
        at a time. Raise to have it retried."""

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _start(self) -> None:
        if self._started:
            return
        loop = self._loop
        if loop is None:
            raise UsageError(
                f"{type(self).__name__} is not bound to an event loop: connect() it in a "
                "coroutine, or bind(loop) first"
            )
        with self._cond:
            if self._started or self._closing:
                return
            self._started = True
        if self._on_loop():
            self._spawn()
        else:
            loop.call_soon_threadsafe(self._spawn)

    def _spawn(self) -> None:
        assert self._loop is not None
        self._worker = self._loop.create_task(self._run(), name=f"taskevents-{type(self).__name__}")

    def _wake(self) -> None:
        if self._on_loop():
            self._wakeup.set()
            return
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: its worker is gone
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def _check_on_loop(self, what: str) -> None:
        if not self._on_loop():
            raise UsageError(
                f"{type(self).__name__}.{what}() must be awaited on the event loop the "
                "adapter is bound to"
            )

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is delivered (progress held back by
        ``progress_interval`` goes at once). Returns False on timeout. Await it on the
        adapter's loop; it does not block the loop."""
        if self._loop is None:
            return True  # never bound: nothing was queued
        self._check_on_loop("flush")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._wakeup.set()
        try:
            while True:
                with self._cond:
                    if not (self._queue or self._deferred or self._batch or self._busy):
                        return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._progressed.clear()
                try:
                    await asyncio.wait_for(self._progressed.wait(), remaining)
                except asyncio.TimeoutError:
                    return False
        finally:
            with self._cond:
                self._flushing -= 1

    async def aclose(self, timeout: float = 10.0) -> None:
        """Disconnect, deliver what is queued (waiting up to ``timeout`` seconds), and
        stop the worker task. What could not be delivered in time is logged and counted
        as dropped, including an event whose :meth:`deliver` was still running (it is
        cancelled). Await it on the adapter's loop. Idempotent."""
        self.disconnect()
        with self._cond:
            self._closing = True
        worker = self._worker
        if worker is None or worker.done():
            self._drop_left("before its worker ran", hung=False)
            return
        self._check_on_loop("aclose")
        self._wakeup.set()
        done, _ = await asyncio.wait({worker}, timeout=timeout)
        if not done:
            self._close_timeout = timeout
            worker.cancel()  # its handler counts and logs what is lost
            done, _ = await asyncio.wait({worker}, timeout=1.0)
            if not done:  # a deliver() that swallows cancellation: stop waiting for it
                self._drop_left(f"after {timeout:.1f}s", hung=True)

    def close(self, timeout: float = 10.0) -> None:
        """:meth:`aclose` from another thread than the loop's: blocks until done, up to
        ``timeout`` seconds (and a second more). If the loop does not run, what is queued
        is dropped (logged and counted).

        :raises UsageError: on the loop's own thread, which it would block: ``await``
            :meth:`aclose` there.
        """
        loop = self._loop
        if loop is not None and self._on_loop():
            raise UsageError(
                f"{type(self).__name__}.close() would block its own event loop: "
                "await aclose() instead"
            )
        if loop is None or loop.is_closed() or not self._started:
            self.disconnect()
            with self._cond:
                self._closing = True
            self._drop_left("before its worker ran", hung=False)
            return
        done = asyncio.run_coroutine_threadsafe(self.aclose(timeout), loop)
        try:
            done.result(timeout + 1.0)
        except concurrent.futures.TimeoutError:  # the loop does not run
            done.cancel()
            self.disconnect()
            with self._cond:
                self._closing = True
            self._drop_left("while its event loop did not run", hung=self._current is not None)

    async def __aenter__(self: C) -> C:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- worker ---------------------------------------------------------------------

    async def _run(self) -> None:
        batch = self._batch
        delivered = 0
        try:
            while True:
                with self._cond:
                    self._counts["delivered"] += delivered
                    delivered = 0
                    self._busy = False
                    took = self._take_batch()
                    if not took:
                        if self._closing:
                            break
                        self._waiting = True
                        wait = self._until_due()
                if not took:
                    self._progressed.set()
                    await self._idle(wait)
                    continue
                while batch:
                    item = batch.popleft()
                    if isinstance(item, _Action):
                        try:
                            result = item.func()
                            if inspect.isawaitable(result):
                                await result
                        except Exception as exc:
                            self.errors.report(exc, f"in work queued for {item.subject!r}")
                        continue
                    event = self._take(item) if isinstance(item, _ProgressSlot) else item
                    self._current = event
                    if await self._deliver_with_retry(event):
                        delivered += 1
                    self._current = None
                self._progressed.set()
                # A deliver() that never suspends (a send into a queue) would otherwise
                # hold the loop for batch after batch while a thread keeps emitting.
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            # aclose() ran out of time, or the loop is shutting down (asyncio.run ends)
            self.disconnect()
            with self._cond:
                self._counts["delivered"] += delivered
                self._closing = True
                self._busy = False
            timeout = self._close_timeout
            when = "when its worker was cancelled" if timeout is None else f"after {timeout:.1f}s"
            self._drop_left(when, hung=self._current is not None)
            self._current = None
            raise
        finally:
            self._progressed.set()

    async def _idle(self, wait: float | None) -> None:
        """Wait for work (or ``wait`` seconds, until held-back progress is due)."""
        try:
            if wait is None:
                await self._wakeup.wait()
            elif wait > 0:
                await asyncio.wait_for(self._wakeup.wait(), wait)
        except asyncio.TimeoutError:
            pass
        self._wakeup.clear()
        with self._cond:
            self._waiting = False

    async def _deliver_with_retry(self, event: TaskEvent) -> bool:
        """Deliver ``event``, retrying; True once delivered."""
        delay = self.retry_initial
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.deliver(event)
            except Exception as exc:
                if not self._retrying(event, exc, attempt):
                    return False
            else:
                return True
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)
