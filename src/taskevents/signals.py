"""One blinker signal per lifecycle event type.

Every event signal is sent by an :class:`~taskevents.Emitter` (the sender) with one
keyword argument, ``event`` (:data:`subject_forgotten` gets ``subject`` and ``reason``
instead). A receiver looks like this::

    from taskevents import signals

    @signals.task_completed.connect
    def on_completed(sender: Emitter, *, event: TaskEvent) -> None:
        ...

Connect to one emitter only with ``signal.connect(receiver, sender=emitter)``.

Events emitted in other processes arrive, when a :class:`taskevents.redis.RedisBridge`
runs, on the same signals with :data:`REMOTE` as the sender: a receiver connected to
every sender gets them too (adapters sort them out: see
:attr:`Adapter.remote <taskevents.Adapter.remote>`), one connected to an
emitter does not.

These signals differ from plain blinker signals in one way: a receiver that raises does
not stop the others, nor reach the emitting task. Its error is logged (at most once per
receiver every :data:`ERROR_LOG_INTERVAL` seconds) and counted (:func:`receiver_errors`).
Receivers run in the emitting thread, in no promised order; one that is slow slows the
task, so slow work belongs in a :class:`~taskevents.BackgroundAdapter`.

Coroutine receivers: the emitter sends synchronously, so it cannot await a coroutine
function, and :meth:`~TaskSignal.connect` refuses one with a :exc:`TypeError`. Connected
with ``async_only=True`` it is accepted, and awaited by :meth:`~TaskSignal.send_async`
(with the same isolation as :meth:`~TaskSignal.send`), which is the only way it is
called. To have an emitter's events delivered to coroutines, use a
:class:`~taskevents.AsyncAdapter`.
"""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

import blinker

from . import _reporting
from . import events as _events
from ._reporting import ErrorReporter
from .exceptions import ValidationError

__all__ = [
    "ERROR_LOG_INTERVAL",
    "REMOTE",
    "SIGNALS",
    "RemoteSender",
    "define_event_type",
    "receiver_errors",
    "subject_forgotten",
    "task_cancelled",
    "task_completed",
    "task_failed",
    "task_progress",
    "task_started",
]

#: Seconds between two log records for errors of the same receiver.
ERROR_LOG_INTERVAL: Final = _reporting.ERROR_LOG_INTERVAL


class RemoteSender:
    """The type of :data:`REMOTE`, the sender of events from other processes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<taskevents.signals.REMOTE>"


#: The sender of every event that another process emitted and a bridge (such as
#: :class:`taskevents.redis.RedisBridge`) brought into this one. Connect with
#: ``sender=REMOTE`` for those events only; tell them apart with ``sender is REMOTE``.
REMOTE: Final = RemoteSender()

# Set in a bridge's thread: the ``origin`` of the store whose bridge is sending. With two
# bridges in one process (two apps, each on its own store), an adapter takes the remote
# events of its own emitter's store's bridge only (see Adapter._takes).
_bridging = threading.local()


def bridging_for(origin: str | None) -> None:
    """Mark the calling thread as a bridge of the store with ``origin`` (None: not a
    bridge). For bridge implementations."""
    _bridging.origin = origin


def bridged_by() -> str | None:
    """The ``origin`` of the store whose bridge runs the calling thread, if any."""
    origin: str | None = getattr(_bridging, "origin", None)
    return origin


_reporters: dict[str, ErrorReporter] = {}
_reporters_lock = threading.Lock()


def receiver_errors() -> dict[str, int]:
    """How many errors each receiver (by ``module.qualname``) has raised so far."""
    with _reporters_lock:
        return {name: reporter.count for name, reporter in _reporters.items()}


def _receiver_name(receiver: Callable[..., Any]) -> str:
    func = getattr(receiver, "__func__", receiver)
    module = getattr(func, "__module__", "?")
    name = getattr(func, "__qualname__", None) or type(receiver).__qualname__
    return f"{module}.{name}"


def _report(signal_name: str, receiver: Callable[..., Any], exc: Exception) -> None:
    name = _receiver_name(receiver)
    reporter = _reporters.get(name)
    if reporter is None:
        with _reporters_lock:
            reporter = _reporters.setdefault(name, ErrorReporter(f"receiver {name}"))
    reporter.report(exc, f"on {signal_name}")


def _is_coroutine_receiver(receiver: object) -> bool:
    """Whether calling ``receiver`` makes a coroutine (an ``async def`` function or
    method, or an object whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(receiver) or (
        callable(receiver) and inspect.iscoroutinefunction(type(receiver).__call__)
    )


class TaskSignal(blinker.NamedSignal):
    """A named blinker signal whose receivers are isolated from each other."""

    def __init__(self, name: str, doc: str | None = None) -> None:
        super().__init__(name, doc)
        # Receivers connected with async_only=True live on a signal of their own, so that
        # send() and the emitter (which reads self.receivers) never meet them.
        self._async_only = blinker.Signal()

    def connect(
        self,
        receiver: Any,
        sender: Any = blinker.ANY,
        weak: bool = True,
        *,
        async_only: bool = False,
    ) -> Any:
        """Connect ``receiver``; see :meth:`blinker.Signal.connect`.

        :param async_only: call the receiver only from :meth:`send_async`, never from
            :meth:`send` (nor from an emitter, which sends synchronously). Required for a
            coroutine function, which only :meth:`send_async` can await.
        :raises TypeError: for a coroutine function without ``async_only=True``.
        """
        if async_only:
            return self._async_only.connect(receiver, sender, weak)
        if _is_coroutine_receiver(receiver):
            raise TypeError(
                f"{_receiver_name(receiver)} is a coroutine function; taskevents signals "
                "call receivers synchronously in the emitting thread, where it cannot be "
                "awaited. Connect it with async_only=True to have send_async() await it, "
                "or use a taskevents.AsyncAdapter to receive an emitter's events on an "
                "event loop"
            )
        return super().connect(receiver, sender, weak)

    def disconnect(self, receiver: Callable[..., Any], sender: Any = blinker.ANY) -> None:
        """Disconnect ``receiver`` (connected with ``async_only`` or not); see
        :meth:`blinker.Signal.disconnect`."""
        super().disconnect(receiver, sender)
        self._async_only.disconnect(receiver, sender)

    def send(self, sender: Any = None, /, **kwargs: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call every receiver for ``sender``, except those connected with
        ``async_only``; one that raises is logged and skipped."""
        if self.is_muted:
            return []
        results = []
        for receiver in self.receivers_for(sender):
            try:
                results.append((receiver, receiver(sender, **kwargs)))
            except Exception as exc:  # isolation is the point
                _report(self.name, receiver, exc)
        return results

    async def send_async(
        self, sender: Any = None, /, **kwargs: Any
    ) -> list[tuple[Callable[..., Any], Any]]:
        """Call every receiver for ``sender``, those connected with ``async_only``
        included, one after another, awaiting what they return when it is awaitable
        (coroutine receivers). One that raises is logged and counted like in
        :meth:`send`, and skipped; cancellation of the caller still propagates.

        Plain receivers run synchronously on the event loop, so they must be quick."""
        if self.is_muted:
            return []
        results = []
        receivers = [*self.receivers_for(sender), *self._async_only.receivers_for(sender)]
        for receiver in receivers:
            try:
                result = receiver(sender, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:  # the same isolation as send()
                _report(self.name, receiver, exc)
            else:
                results.append((receiver, result))
        return results


class _Namespace(blinker.Namespace):
    def signal(self, name: str, doc: str | None = None) -> TaskSignal:
        if name not in self:
            self[name] = TaskSignal(name, doc)
        signal = self[name]
        assert isinstance(signal, TaskSignal)
        return signal


_signals = _Namespace()

task_started = _signals.signal(
    "task-started", "A task started on a subject. Receivers get ``event: TaskEvent``."
)
task_progress = _signals.signal(
    "task-progress", "A running task reported progress. Receivers get ``event: TaskEvent``."
)
task_completed = _signals.signal(
    "task-completed", "A task finished successfully. Receivers get ``event: TaskEvent``."
)
task_failed = _signals.signal(
    "task-failed", "A task ended with an error. Receivers get ``event: TaskEvent``."
)
task_cancelled = _signals.signal(
    "task-cancelled", "A task was cancelled. Receivers get ``event: TaskEvent``."
)

subject_forgotten = _signals.signal(
    "subject-forgotten",
    "A subject was forgotten (:meth:`Emitter.forget` or the retention policy). Receivers "
    'get ``subject: str`` and ``reason: str`` (``"forgotten"`` or ``"expired"``).',
)

_SIGNALS: dict[str, TaskSignal] = {
    "task_started": task_started,
    "task_progress": task_progress,
    "task_completed": task_completed,
    "task_failed": task_failed,
    "task_cancelled": task_cancelled,
}
#: The signal for each event type (declared types included, once declared).
SIGNALS: Final[Mapping[str, TaskSignal]] = _SIGNALS


_TYPE_NAME = re.compile(r"task_[a-z][a-z0-9_]{0,58}\Z")
#: Called with each newly declared type (adapters that take every type connect to it).
_type_listeners: list[Callable[[str], None]] = []


def define_event_type(name: str) -> TaskSignal:
    """Declare an event type of your own, e.g. ``"task_log"`` or ``"task_artifact"``,
    and return its signal (named like the others: ``task-log``). Declaring a type again
    returns the same signal.

    Events of the type are emitted with :meth:`Emitter.emit <taskevents.Emitter.emit>`
    for a running task. They get a seq, are kept in the history and replayed on resume
    like any event, but leave the task's state alone. Adapters that take every type
    receive them; Socket.IO clients get them as ``task_status_update`` with
    ``update.event`` set to the type.

    :param name: ``task_`` then lowercase letters, digits and ``_`` (at most 64
        characters in all); not a lifecycle type.
    :raises ValidationError: for any other name.
    """
    if name in _events.EVENT_TYPES or not isinstance(name, str) or not _TYPE_NAME.match(name):
        raise ValidationError(
            "name",
            "'task_' then lowercase letters, digits and _ (at most 64 characters), "
            "not a lifecycle type",
            name,
        )
    with _define_lock:
        signal = _SIGNALS.get(name)
        if signal is None:
            signal = _signals.signal(name.replace("_", "-"), f"Events of the declared type {name}.")
            _SIGNALS[name] = signal
            _events._custom_types.add(name)
            listeners = list(_type_listeners)
        else:
            return signal
    for listener in listeners:
        listener(name)
    return signal


_define_lock = threading.Lock()
