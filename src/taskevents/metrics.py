"""Operational metrics: events emitted, adapter deliveries, errors and queues, Socket.IO
clients and subjects, for Prometheus (``/metrics``) and from Python (:func:`snapshot`).

.. code-block:: python

    from taskevents import Emitter, metrics

    emitter = Emitter()
    watched = metrics.enable(emitter)       # counts this emitter's events from now on
    watched.watch(my_adapter)               # its delivered / errors / queue depth
    metrics.snapshot(emitter)["events"]     # {"task_started": 0, ...}

The Flask extension (``TASKEVENTS_METRICS = True``) and :class:`taskevents.asgi.TaskEvents`
(``metrics=True``) do this for their emitter and adapters and serve ``/metrics``.

What it costs: the emitter steps a counter for each event it emits (one C call, a few
per cent of an ``Emitter.progress()`` call; none without metrics); nothing else happens
per event. Everything else (adapter counters, clients, subjects) is read when the
metrics are asked for, from what the adapters and the state store keep anyway.

The metrics (no label names a subject, so their number stays bounded):
``taskevents_events_total{type}``, ``taskevents_adapter_deliveries_total{adapter}``,
``taskevents_adapter_errors_total{adapter}``, ``taskevents_adapter_queue_depth{adapter}``,
``taskevents_socketio_clients`` and ``taskevents_subjects{status}``; :doc:`/metrics`
says what each one counts.

:func:`snapshot` needs only the standard library; serving the Prometheus text format
(:meth:`Metrics.render`, :meth:`Metrics.collect`) needs ``pip install
'taskevents[metrics]'`` (prometheus_client).
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypedDict

from taskevents._checks import name as _check_name
from taskevents._optional import require
from taskevents._reporting import ErrorReporter
from taskevents.emitter import Emitter
from taskevents.events import event_types
from taskevents.exceptions import TaskEventsError, ValidationError

__all__ = [
    "CONTENT_TYPE",
    "AdapterNumbers",
    "Metrics",
    "MetricsSnapshot",
    "enable",
    "metrics_for",
    "snapshot",
]

#: The Content-Type of :meth:`Metrics.render`'s text: the Prometheus text format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: At most this share of the time is spent counting subjects: when counting them took
#: ``t`` seconds (above a millisecond: a large or remote store), the count is reused for
#: ``t / SUBJECTS_BUDGET`` seconds, so that frequent scrapes cannot keep a store busy.
SUBJECTS_BUDGET = 0.01

_SUBJECTS_REUSE_CAP = 60.0


class AdapterNumbers(TypedDict):
    """One adapter's numbers in a :class:`MetricsSnapshot`. None: the adapter does not
    keep that number (a synchronous adapter has no queue and counts no deliveries)."""

    deliveries: int | None
    errors: int
    queue_depth: int | None


class MetricsSnapshot(TypedDict):
    """What :func:`snapshot` returns: the numbers ``/metrics`` serves."""

    #: Events emitted, per type (every known type, zeros included).
    events: dict[str, int]
    #: Per adapter label.
    adapters: dict[str, AdapterNumbers]
    #: Clients connected to the watched Socket.IO adapters.
    socketio_clients: int
    #: Subjects per status (``idle``, ``busy``); None when the store did not answer.
    subjects: dict[str, int] | None


class _Steps(dict[str, Callable[[], int]]):
    """Per event type, the step of its counter; a type declared later gets one on its
    first event."""

    def __init__(self, counters: dict[str, itertools.count[int]], lock: threading.Lock) -> None:
        super().__init__()
        self._counters = counters
        self._lock = lock

    def add(self, name: str) -> Callable[[], int]:
        with self._lock:
            step = self.get(name)
            if step is None:
                counter = self._counters[name] = itertools.count()
                step = self[name] = counter.__next__
            return step

    def __missing__(self, name: str) -> Callable[[], int]:
        return self.add(name)


class Metrics:
    """The metrics of one emitter and the adapters it serves; made by :func:`enable`.

    Counts the events the emitter emits (in this process: events that a
    :class:`~taskevents.redis.RedisBridge` brings from other processes are counted in
    those), and reads the watched adapters' counters and the state store when asked.
    A prometheus_client collector: ``REGISTRY.register(metrics.enable(emitter))`` adds
    its metrics to an app's own registry.
    """

    def __init__(self, emitter: Emitter) -> None:
        self._emitter = weakref.ref(emitter)
        self._lock = threading.Lock()
        # One itertools.count per type: next() on it is one C call, so concurrent emits
        # (of different subjects, in different threads) never lose a step, with no lock
        # on the emitting path. The emitter steps it (Emitter._record).
        self._counters: dict[str, itertools.count[int]] = {}
        self._steps = _Steps(self._counters, self._lock)
        for type_ in event_types():
            self._steps.add(type_)
        self._adapters: list[tuple[str, weakref.ref[Any]]] = []
        self._labels: set[str] = set()
        self._subjects: dict[str, int] | None = None
        self._subjects_until = 0.0
        self._errors = ErrorReporter("taskevents.metrics")
        self._registry: Any = None
        # One render at a time; a caller that waited for one takes its text if that one
        # began after the caller asked (so a burst of scrapes reads the adapters once).
        self._render_lock = threading.Lock()
        self._rendered: tuple[float, bytes] | None = None
        emitter._event_counters = self._steps

    def __repr__(self) -> str:
        return f"<Metrics of {self._emitter()!r}>"

    @property
    def emitter(self) -> Emitter | None:
        """The emitter counted (None once it is gone)."""
        return self._emitter()

    def close(self) -> None:
        """Stop counting events (the counts read so far stay). Idempotent."""
        with _live_lock:
            emitter = self._emitter()
            if emitter is None:
                return
            if emitter._event_counters is self._steps:
                emitter._event_counters = None
            if _enabled.get(emitter) is self:
                del _enabled[emitter]

    # -- adapters --------------------------------------------------------------------

    def watch(self, adapter: object, name: str | None = None) -> str:
        """Report ``adapter``'s numbers under the label ``name`` (default: its class's
        name), made unique with ``_2``, ``_3``... when taken. Returns the label. The
        adapter is held weakly; watching it again returns its label.

        Its numbers come from its ``stats``: ``delivered``, ``errors`` and ``queued``
        (:class:`~taskevents.BackgroundAdapter`, :class:`~taskevents.AsyncAdapter`), or
        ``pending`` plus ``unwritten`` (the durable adapters, whose ``delivered`` is
        the outbox's total, across the processes that share it); for an adapter without
        ``stats``, its ``error_count`` only. An adapter with a ``client_count`` adds to
        ``taskevents_socketio_clients``.
        """
        if name is None:
            name = type(adapter).__name__
        _check_name(name, "name")
        with self._lock:
            for label, ref in self._adapters:
                if ref() is adapter:
                    return label
            # Adapters that are gone leave, with their labels: the list stays bounded.
            gone = {label for label, ref in self._adapters if ref() is None}
            self._adapters = [entry for entry in self._adapters if entry[0] not in gone]
            self._labels -= gone
            try:
                ref = weakref.ref(adapter)
            except TypeError:
                raise ValidationError(
                    "adapter",
                    "an object that can be referred to weakly (no __slots__ without __weakref__)",
                    type(adapter).__name__,
                ) from None
            label, number = name, 1
            while label in self._labels:
                number += 1
                label = f"{name}_{number}"
            self._labels.add(label)
            self._adapters.append((label, ref))
            return label

    def _adapter_numbers(self) -> tuple[dict[str, AdapterNumbers], int]:
        with self._lock:
            watched = [(label, ref()) for label, ref in self._adapters]
        numbers: dict[str, AdapterNumbers] = {}
        clients = 0
        for label, adapter in watched:
            if adapter is None:
                continue
            try:
                numbers[label] = _numbers_of(adapter)
                count = getattr(adapter, "client_count", None)
                if isinstance(count, int) and not isinstance(count, bool):
                    clients += count
            except Exception as exc:  # one adapter's trouble never breaks the scrape
                self._errors.report(exc, f"to read the numbers of adapter {label!r}")
        return numbers, clients

    # -- subjects --------------------------------------------------------------------

    def _subject_numbers(self) -> dict[str, int] | None:
        now = time.monotonic()
        if self._subjects is not None and now < self._subjects_until:
            return dict(self._subjects)
        emitter = self._emitter()
        if emitter is None:
            return None
        counts = {"idle": 0, "busy": 0}
        try:
            for state in emitter.state.snapshot_all().values():
                counts[state.status] = counts.get(state.status, 0) + 1
        except Exception as exc:  # a store that does not answer: left out, said once
            self._errors.report(exc, "to count subjects", traceback=False)
            return None
        took = time.monotonic() - now
        reuse = min(took / SUBJECTS_BUDGET, _SUBJECTS_REUSE_CAP) if took > 0.001 else 0.0
        self._subjects, self._subjects_until = counts, now + took + reuse
        return dict(counts)

    # -- reading ---------------------------------------------------------------------

    def events(self) -> dict[str, int]:
        """Events emitted so far, per type."""
        with self._lock:
            counters = list(self._counters.items())
        # A count's repr is its next value: "count(42)" (reading it does not step it).
        return {type_: int(repr(counter)[6:-1]) for type_, counter in counters}

    def snapshot(self) -> MetricsSnapshot:
        """Every number, as ``/metrics`` serves it; see :func:`snapshot`."""
        adapters, clients = self._adapter_numbers()
        return {
            "events": self.events(),
            "adapters": adapters,
            "socketio_clients": clients,
            "subjects": self._subject_numbers(),
        }

    def collect(self) -> Iterator[Any]:
        """The metric families, for prometheus_client (a custom collector's
        ``collect()``). Needs ``taskevents[metrics]``."""
        return _families(self.snapshot())

    def render(self) -> bytes:
        """The metrics in the Prometheus text format (served as :data:`CONTENT_TYPE`).
        Needs ``taskevents[metrics]``."""
        client = _prometheus("taskevents.metrics.Metrics.render")
        asked = time.monotonic()
        with self._render_lock:
            if self._rendered is not None and self._rendered[0] >= asked:
                return self._rendered[1]
            began = time.monotonic()
            with self._lock:
                if self._registry is None:
                    self._registry = client.CollectorRegistry(auto_describe=False)
                    self._registry.register(self)
            text: bytes = client.generate_latest(self._registry)
            self._rendered = (began, text)
            return text


def _count_of(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise TaskEventsError(f"{what} is not a count: {value!r}")


def _numbers_of(adapter: object) -> AdapterNumbers:
    """An adapter's numbers, from its ``stats`` (or its ``error_count``)."""
    stats = getattr(adapter, "stats", None)
    errors = getattr(adapter, "error_count", 0)
    if not isinstance(stats, Mapping):
        return {"deliveries": None, "errors": _count_of(errors, "error_count"), "queue_depth": None}
    if "queued" in stats:
        depth: int | None = _count_of(stats["queued"], "stats['queued']")
    elif "pending" in stats:  # a durable adapter: rows in the outbox, and not yet written
        depth = _count_of(stats["pending"], "stats['pending']") + _count_of(
            stats.get("unwritten", 0), "stats['unwritten']"
        )
    else:
        depth = None
    delivered = stats.get("delivered")
    return {
        "deliveries": None if delivered is None else _count_of(delivered, "stats['delivered']"),
        "errors": _count_of(stats.get("errors", errors), "stats['errors']"),
        "queue_depth": depth,
    }


def _prometheus(needed_by: str) -> Any:
    return require("prometheus_client", extra="metrics", needed_by=needed_by)


def _families(numbers: MetricsSnapshot) -> Iterator[Any]:
    core = require("prometheus_client.core", extra="metrics", needed_by="taskevents.metrics")
    events = core.CounterMetricFamily(
        "taskevents_events", "Task events emitted in this process, by type.", labels=["type"]
    )
    for type_, count in sorted(numbers["events"].items()):
        events.add_metric([type_], count)
    yield events
    deliveries = core.CounterMetricFamily(
        "taskevents_adapter_deliveries", "Events an adapter delivered.", labels=["adapter"]
    )
    errors = core.CounterMetricFamily(
        "taskevents_adapter_errors",
        "Errors an adapter raised while handling or delivering events.",
        labels=["adapter"],
    )
    depth = core.GaugeMetricFamily(
        "taskevents_adapter_queue_depth",
        "Events waiting in an adapter's queue or outbox.",
        labels=["adapter"],
    )
    for label, one in sorted(numbers["adapters"].items()):
        if one["deliveries"] is not None:
            deliveries.add_metric([label], one["deliveries"])
        errors.add_metric([label], one["errors"])
        if one["queue_depth"] is not None:
            depth.add_metric([label], one["queue_depth"])
    yield deliveries
    yield errors
    yield depth
    yield core.GaugeMetricFamily(
        "taskevents_socketio_clients",
        "Socket.IO clients connected.",
        value=numbers["socketio_clients"],
    )
    subjects = core.GaugeMetricFamily(
        "taskevents_subjects", "Subjects known to the state store, by status.", labels=["status"]
    )
    for status, count in sorted((numbers["subjects"] or {}).items()):
        subjects.add_metric([status], count)
    yield subjects


# -- the process's registry of enabled emitters -----------------------------------------

_live_lock = threading.Lock()
_enabled: weakref.WeakKeyDictionary[Emitter, Metrics] = weakref.WeakKeyDictionary()


def enable(emitter: Emitter) -> Metrics:
    """Start counting ``emitter``'s events, and return its :class:`Metrics` (the same
    one when called again)."""
    if not isinstance(emitter, Emitter):
        raise ValidationError("emitter", "a taskevents.Emitter", emitter)
    with _live_lock:
        metrics = _enabled.get(emitter)
        if metrics is None:
            metrics = _enabled[emitter] = Metrics(emitter)
        return metrics


def metrics_for(emitter: Emitter) -> Metrics | None:
    """The :class:`Metrics` of ``emitter``, if :func:`enable` was called for it."""
    with _live_lock:
        return _enabled.get(emitter)


def snapshot(emitter: Emitter | None = None) -> MetricsSnapshot:
    """The numbers ``/metrics`` serves, as a dict: of ``emitter`` (which must be
    enabled), or, by default, of every enabled emitter of this process together (events
    and subjects added up; adapters of the same label added up).

    .. doctest::

        >>> from taskevents import Emitter, metrics
        >>> emitter = Emitter()
        >>> watched = metrics.enable(emitter)
        >>> _ = emitter.started("aws01", "change_ip")
        >>> _ = emitter.progress("aws01", 50)
        >>> numbers = metrics.snapshot(emitter)
        >>> numbers["events"]["task_started"], numbers["events"]["task_progress"]
        (1, 1)
        >>> numbers["subjects"]
        {'idle': 0, 'busy': 1}

    :raises ValidationError: ``emitter`` has no metrics enabled.
    """
    if emitter is not None:
        metrics = metrics_for(emitter)
        if metrics is None:
            raise ValidationError(
                "emitter", "an emitter with metrics enabled (taskevents.metrics.enable)", emitter
            )
        return metrics.snapshot()
    with _live_lock:
        every = list(_enabled.values())
    total: MetricsSnapshot = {
        "events": dict.fromkeys(event_types(), 0),
        "adapters": {},
        "socketio_clients": 0,
        "subjects": {"idle": 0, "busy": 0},
    }
    for metrics in every:
        one = metrics.snapshot()
        for type_, count in one["events"].items():
            total["events"][type_] = total["events"].get(type_, 0) + count
        for label, numbers in one["adapters"].items():
            seen = total["adapters"].get(label)
            total["adapters"][label] = numbers if seen is None else _added(seen, numbers)
        total["socketio_clients"] += one["socketio_clients"]
        if one["subjects"] is None or total["subjects"] is None:
            total["subjects"] = None
        else:
            for status, count in one["subjects"].items():
                total["subjects"][status] = total["subjects"].get(status, 0) + count
    return total


def _added(a: AdapterNumbers, b: AdapterNumbers) -> AdapterNumbers:
    def add(x: int | None, y: int | None) -> int | None:
        return None if x is None and y is None else (x or 0) + (y or 0)

    return {
        "deliveries": add(a["deliveries"], b["deliveries"]),
        "errors": a["errors"] + b["errors"],
        "queue_depth": add(a["queue_depth"], b["queue_depth"]),
    }
