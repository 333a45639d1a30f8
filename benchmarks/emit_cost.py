"""Emit cost: what one ``Emitter.progress()`` call costs, next to the raw dispatchers.

Measures, in one run, the median time per call (µs) of:

1. taskevents ``Emitter().progress(subject, percent)`` with 0, 1 and 10 trivial adapters
   connected (``Adapter`` subclasses whose ``handle`` does nothing; they connect to every
   signal with ``blinker.ANY``, as adapters do by default), and the same with 0 and 1
   adapters and :mod:`taskevents.metrics` enabled on the emitter (metrics on / off, in
   the same rounds: the target is at most 10 % more per call);
2. bare blinker ``Signal().send(sender, event=obj)`` with 0, 1 and 10 plain function
   receivers connected with ``blinker.ANY`` (blinker's default: weakly referenced);
3. pyee ``EventEmitter.emit("progress", obj)``, pypubsub
   ``pub.sendMessage("progress", event=obj)`` and ``django.dispatch.Signal().send(sender,
   event=obj)``, each with 1 receiver.

Rounds are interleaved: each of ``--repeat`` rounds runs every configuration once (with a
fresh emitter / signal, a warm-up, then ``--number`` timed calls with the garbage
collector off), so that a burst of load on the machine hits every row alike. Each
configuration disconnects its receivers afterwards: signals are global, and a leftover
receiver would slow the rows after it.

Run: ``.venv/bin/python benchmarks/emit_cost.py [--repeat N] [--number N] [--quick]
[--json PATH]``. Speed is reported, never asserted: the exit code is 0 whatever the
numbers are.
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blinker

from taskevents import Adapter, Emitter, TaskEvent
from taskevents import metrics as taskevents_metrics
from taskevents.signals import SIGNALS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness.machine import package_version, write_json

__all__ = ["Case", "Result", "format_table", "main", "make_cases", "run"]

SUBJECT = "bench"
#: The slowest receiver budget the project aims for: taskevents with one adapter costs at
#: most this many times a bare blinker send with one receiver.
TARGET_RATIO = 2.0
#: What enabling :mod:`taskevents.metrics` may add to ``Emitter.progress()``: at most this
#: fraction of its cost with metrics off (with 1 adapter).
METRICS_TARGET = 0.10

DEFAULT_REPEAT = 7
#: About 20 s for the whole run on a 2-core cloud VM (Python 3.11); well under 60 s on a
#: slower or busier one.
DEFAULT_NUMBER = 50_000
QUICK_REPEAT = 3
QUICK_NUMBER = 1_000

TASKEVENTS = "taskevents Emitter.progress"
TASKEVENTS_METRICS = "taskevents Emitter.progress, metrics on"
BLINKER = "bare blinker Signal.send (ANY, weak)"
PYEE = "pyee EventEmitter.emit"
PYPUBSUB = "pypubsub pub.sendMessage"
DJANGO = "django.dispatch Signal.send"

#: The multiplication sign, spelled out (ruff flags it as ambiguous in string literals).
TIMES = "\N{MULTIPLICATION SIGN}"

Call = Callable[[], object]
Setup = Callable[[], AbstractContextManager[Call]]


# -- the configurations ------------------------------------------------------------------


class NullAdapter(Adapter):
    """A trivial adapter: receives every event type, does nothing with it."""

    def handle(self, event: TaskEvent) -> None:
        """Do nothing."""


class _Payload:
    """The object the raw dispatchers send (taskevents builds its own TaskEvent)."""

    __slots__ = ()


def _blinker_receiver() -> Callable[..., None]:
    # A new function object each time: blinker keys receivers by identity.
    def receiver(sender: object, *, event: object) -> None:
        return None

    return receiver


def _check_no_receivers(where: str) -> None:
    leftovers = {name: len(sig.receivers) for name, sig in SIGNALS.items() if sig.receivers}
    if leftovers:
        raise RuntimeError(f"{where}: taskevents signals have receivers connected: {leftovers}")


@contextmanager
def taskevents_progress(adapters: int, metrics: bool = False) -> Iterator[Call]:
    """``Emitter().progress(SUBJECT, 50.0)`` on a running task, ``adapters`` connected,
    with :func:`taskevents.metrics.enable` on the emitter when ``metrics``."""
    _check_no_receivers("before the taskevents benchmark")
    emitter = Emitter(source="benchmarks/emit_cost")
    emitter.started(SUBJECT, "bench")
    connected: list[NullAdapter] = []
    counted = taskevents_metrics.enable(emitter) if metrics else None
    try:
        for _ in range(adapters):
            connected.append(NullAdapter().connect())
        got = len(SIGNALS["task_progress"].receivers)
        if got != adapters:
            raise RuntimeError(f"expected {adapters} progress receivers, found {got}")
        yield functools.partial(emitter.progress, SUBJECT, 50.0)
    finally:
        for adapter in connected:
            adapter.close()
        if counted is not None:
            counted.close()
    _check_no_receivers("after the taskevents benchmark")


@contextmanager
def blinker_send(receivers: int) -> Iterator[Call]:
    """``blinker.Signal().send(sender, event=obj)``; receivers connected with ANY, weak."""
    signal = blinker.Signal()
    sender = object()
    funcs = [_blinker_receiver() for _ in range(receivers)]  # strong refs: kept alive here
    for func in funcs:
        signal.connect(func)
    try:
        if len(list(signal.receivers_for(sender))) != receivers:
            raise RuntimeError(f"expected {receivers} blinker receivers")
        yield functools.partial(signal.send, sender, event=_Payload())
    finally:
        for func in funcs:
            signal.disconnect(func)


@contextmanager
def pyee_emit() -> Iterator[Call]:
    """``pyee.EventEmitter().emit("progress", obj)`` with one listener."""
    from pyee import EventEmitter

    emitter = EventEmitter()

    def listener(event: object) -> None:
        return None

    emitter.on("progress", listener)
    try:
        if len(emitter.listeners("progress")) != 1:
            raise RuntimeError("expected 1 pyee listener")
        yield functools.partial(emitter.emit, "progress", _Payload())
    finally:
        emitter.remove_all_listeners()


@contextmanager
def pypubsub_send() -> Iterator[Call]:
    """``pubsub.pub.sendMessage("progress", event=obj)`` with one listener."""
    from pubsub import pub

    def listener(event: object) -> None:
        return None

    pub.subscribe(listener, "progress")  # pypubsub holds it weakly; `listener` keeps it
    try:
        # Any: pypubsub's type information declares an empty placeholder Topic class.
        topic: Any = pub.getDefaultTopicMgr().getTopic("progress")
        count = topic.getNumListeners()
        if count != 1:
            raise RuntimeError(f"expected 1 pypubsub listener on 'progress', found {count}")
        yield functools.partial(pub.sendMessage, "progress", event=_Payload())
    finally:
        pub.unsubscribe(listener, "progress")


@contextmanager
def django_send() -> Iterator[Call]:
    """``django.dispatch.Signal().send(sender, event=obj)`` with one receiver (any
    sender). Works without configuring Django settings."""
    from django.dispatch import Signal

    signal = Signal()
    sender = object()

    def receiver(sender: object, **kwargs: object) -> None:
        return None

    signal.connect(receiver)
    try:
        if not signal.has_listeners(sender):
            raise RuntimeError("expected 1 django receiver")
        yield functools.partial(signal.send, sender, event=_Payload())
    finally:
        signal.disconnect(receiver)


@contextmanager
def harness_noop() -> Iterator[Call]:
    """The timing loop calling a no-op Python function the same way (reference only)."""

    def noop() -> None:
        return None

    yield functools.partial(noop)


@dataclass(frozen=True)
class Case:
    """One row of the table."""

    dispatcher: str
    receivers: int
    setup: Setup
    #: Receiver count of the bare blinker row this one is compared with (None: itself
    #: or nothing).
    baseline: int | None


def make_cases() -> list[Case]:
    """Every configuration, in table order."""
    cases = [Case(TASKEVENTS, n, functools.partial(taskevents_progress, n), n) for n in (0, 1, 10)]
    cases += [
        Case(TASKEVENTS_METRICS, n, functools.partial(taskevents_progress, n, True), n)
        for n in (0, 1)
    ]
    cases += [Case(BLINKER, n, functools.partial(blinker_send, n), n) for n in (0, 1, 10)]
    cases += [
        Case(PYEE, 1, pyee_emit, 1),
        Case(PYPUBSUB, 1, pypubsub_send, 1),
        Case(DJANGO, 1, django_send, 1),
    ]
    return cases


# -- timing ------------------------------------------------------------------------------


def time_calls(call: Call, number: int) -> int:
    """Nanoseconds for ``number`` calls of ``call``, with the garbage collector off."""
    loop = itertools.repeat(None, number)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in loop:
            call()
        return time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def _warm_up(call: Call, number: int) -> None:
    for _ in range(max(100, number // 10)):
        call()


def _measure_once(setup: Setup, number: int) -> float:
    """µs per call for one fresh set-up of a configuration."""
    with setup() as call:
        _warm_up(call, number)
        elapsed = time_calls(call, number)
    return elapsed / number / 1000.0


@dataclass
class Result:
    """Measurements of one case."""

    dispatcher: str
    receivers: int
    baseline: int | None
    samples_us: list[float] = field(default_factory=list)
    ratio: float | None = None

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples_us)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dispatcher": self.dispatcher,
            "receivers": self.receivers,
            "median_us": self.median_us,
            "min_us": min(self.samples_us),
            "max_us": max(self.samples_us),
            "samples_us": self.samples_us,
            "baseline": None if self.baseline is None else f"{BLINKER} x{self.baseline}",
            "ratio_vs_bare_blinker": self.ratio,
        }


def run(
    cases: Sequence[Case],
    *,
    repeat: int,
    number: int,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Result], float]:
    """Time every case ``repeat`` times, interleaved, and fill in the ratios.

    Returns the results in ``cases`` order, and the median harness overhead (µs/call).
    """
    results = [Result(c.dispatcher, c.receivers, c.baseline) for c in cases]
    harness: list[float] = []
    # The harness reference runs first in each round; the cases rotate, so that no case
    # always comes right after the same one.
    for round_ in range(repeat):
        if progress is not None:
            progress(f"round {round_ + 1}/{repeat}")
        harness.append(_measure_once(harness_noop, number))
        shift = round_ % len(cases)
        for index in list(range(shift, len(cases))) + list(range(shift)):
            results[index].samples_us.append(_measure_once(cases[index].setup, number))
    blinker_medians = {r.receivers: r.median_us for r in results if r.dispatcher == BLINKER}
    for result in results:
        if result.baseline is not None and result.baseline in blinker_medians:
            result.ratio = result.median_us / blinker_medians[result.baseline]
    return results, statistics.median(harness)


# -- reporting ---------------------------------------------------------------------------


def format_table(results: Sequence[Result]) -> str:
    """A plain-text table, aligned, that is also valid Markdown."""
    header = ("dispatcher", "receivers", "median µs/call", "ratio vs bare blinker")
    rows = [
        (
            r.dispatcher,
            str(r.receivers),
            f"{r.median_us:.2f}",
            "-" if r.ratio is None else f"{r.ratio:.2f}{TIMES}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    right = (False, True, True, True)

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(w) if r else cell.ljust(w)
            for cell, w, r in zip(cells, widths, right, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, right, strict=True)
        )
        + "|"
    )
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def target_check(results: Sequence[Result]) -> tuple[float, bool]:
    """(ratio, passed) of taskevents with 1 adapter against bare blinker with 1."""
    ratio = next(r.ratio for r in results if r.dispatcher == TASKEVENTS and r.receivers == 1)
    if ratio is None:  # pragma: no cover - always set by run()
        raise RuntimeError("no ratio for taskevents with 1 adapter")
    return ratio, ratio <= TARGET_RATIO


def metrics_check(results: Sequence[Result]) -> tuple[float, bool]:
    """(added fraction, passed): what metrics on adds to taskevents with 1 adapter."""
    on = next(r for r in results if r.dispatcher == TASKEVENTS_METRICS and r.receivers == 1)
    off = next(r for r in results if r.dispatcher == TASKEVENTS and r.receivers == 1)
    added = on.median_us / off.median_us - 1.0
    return added, added <= METRICS_TARGET


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": {
            name: package_version(name)
            for name in ("taskevents", "blinker", "pyee", "pypubsub", "django")
        },
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Emit cost of taskevents against bare blinker, pyee, pypubsub and "
        "django.dispatch (median µs per call)."
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"rounds; each configuration is timed once per round (default {DEFAULT_REPEAT})",
    )
    parser.add_argument(
        "--number",
        type=int,
        default=None,
        help=f"timed calls per configuration per round (default {DEFAULT_NUMBER:,})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny sizes for a smoke test (repeat {QUICK_REPEAT}, number {QUICK_NUMBER}); "
        "--repeat/--number still win",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = QUICK_REPEAT if args.quick else DEFAULT_REPEAT
    if args.number is None:
        args.number = QUICK_NUMBER if args.quick else DEFAULT_NUMBER
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.number < 1:
        parser.error("--number must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    env = environment()
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    print(
        f"emit cost: Python {env['python']} on {env['platform']} ({env['cpu_count']} CPUs); "
        f"{versions}",
        flush=True,
    )
    print(
        f"repeat={args.repeat} rounds {TIMES} number={args.number:,} calls per configuration"
        + (" (quick: numbers are not meaningful)" if args.quick else ""),
        flush=True,
    )

    def show(message: str) -> None:
        print(f"  ... {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    results, harness_us = run(make_cases(), repeat=args.repeat, number=args.number, progress=show)
    wall = time.perf_counter() - started
    ratio, passed = target_check(results)
    metrics_added, metrics_passed = metrics_check(results)

    print()
    print(format_table(results))
    print()
    print(
        f"harness overhead (loop + call of a no-op Python function): {harness_us:.2f} µs/call, "
        "included in every row"
    )
    print(
        f"taskevents with 1 adapter: {ratio:.2f} {TIMES} bare blinker with 1 receiver "
        f"(target ≤ {TARGET_RATIO:g}{TIMES}): {'PASS' if passed else 'FAIL'}"
    )
    print(
        f"taskevents with 1 adapter, metrics on / off: {metrics_added:+.1%} per call "
        f"(target ≤ +{METRICS_TARGET:.0%}): {'PASS' if metrics_passed else 'FAIL'}"
    )
    pubsub = next((r.median_us for r in results if r.dispatcher.startswith("pypubsub")), None)
    ours = next(r.median_us for r in results if r.dispatcher == TASKEVENTS and r.receivers == 1)
    if pubsub is not None:
        print(
            f"taskevents with 1 adapter: {ours:.2f} µs, pypubsub with 1 listener: {pubsub:.2f} "
            f"µs (target: faster): {'PASS' if ours < pubsub else 'FAIL'}"
        )
    print(f"wall time: {wall:.1f} s")

    if args.json:
        document = {
            "benchmark": "emit_cost",
            "unit": "µs per call (median over rounds)",
            "repeat": args.repeat,
            "number": args.number,
            "quick": args.quick,
            "environment": env,
            "harness_overhead_us": harness_us,
            "results": [r.to_dict() for r in results],
            "target": {
                "check": "taskevents with 1 adapter / bare blinker with 1 receiver",
                "ratio": ratio,
                "limit": TARGET_RATIO,
                "passed": passed,
            },
            "metrics_target": {
                "check": "taskevents with 1 adapter, metrics on / metrics off, less 1",
                "added": metrics_added,
                "limit": METRICS_TARGET,
                "passed": metrics_passed,
            },
            "wall_time_s": wall,
        }
        write_json(args.json, document)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
