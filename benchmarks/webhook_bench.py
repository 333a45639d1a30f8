"""Webhook benchmark: durable delivery against a plain urllib3 loop, and what an emit costs
with the webhook adapter attached to an endpoint that is down or slow.

Two measurements, one run:

1. **Deliveries per second** to a local receiver (``harness/receiver.py``, a subprocess
   answering 204): a serial ``urllib3.PoolManager`` keep-alive POST loop (the raw stack)
   against ``WebhookAdapter`` delivering from its SQLite outbox, rounds interleaved, same
   receiver. The durable path is measured twice: *delivery only* (the outbox pre-filled
   with the rows the adapter makes for real events, timed from ``flush()`` to its return)
   and *end to end* (the adapter connected, events emitted, timed from the first emit
   until ``flush()`` returns). All three run against two receivers, each in its own
   subprocess: ``minimal`` (the status line written by hand: the fastest a Python
   receiver gets, so the raw loop is bound by the sender's CPU) and ``stdlib`` (a
   ``ThreadingHTTPServer`` handler answering with ``send_response(204)`` and
   ``end_headers()``, as a typical receiver does).
2. **``Emitter.completed()`` per call** (p50/p99, ``perf_counter_ns`` around each call,
   the garbage collector off) with no adapter, with the adapter attached to an endpoint
   that is down (a closed port), and with the adapter attached to an endpoint that takes
   5 s to answer (a second receiver, ``--delay 5``), interleaved round by round.

Run: ``.venv/bin/python benchmarks/webhook_bench.py [--quick] [--json PATH]``. Speed is
reported, never asserted: the exit code is 0 whatever the numbers are (PASS/FAIL lines
print the targets). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness.machine import load_average, package_version, write_json

from taskevents import Emitter, TaskEvent
from taskevents.adapters.outbox import NewDelivery
from taskevents.adapters.webhooks import Endpoint, WebhookAdapter
from taskevents.signals import SIGNALS
from taskevents.webhooks import generate_secret

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
RECEIVER = HERE / "harness" / "receiver.py"

#: The receivers the deliveries are measured against (``harness/receiver.py --server``).
RECEIVERS = {
    "minimal": "the status line written by hand",
    "stdlib": "http.server handler: send_response(204) + end_headers()",
}

#: Lanes: one per subject (and endpoint); a lane is delivered in order, by one worker at
#: a time, so the subjects bound the adapter's parallelism.
DEFAULT_SUBJECTS = 20
#: The adapter's default.
WORKERS = 4
DEFAULT_DELIVERIES = 2_000
DEFAULT_ROUNDS = 3
DEFAULT_EMIT_CALLS = 2_000
DEFAULT_EMIT_ROUNDS = 5
QUICK_DELIVERIES = 200
QUICK_ROUNDS = 1
QUICK_EMIT_CALLS = 200
QUICK_EMIT_ROUNDS = 1
#: Requests before the raw loop's timed part, and rows before the durable path's.
WARM_UP = 50
#: How long the slow endpoint takes to answer.
SLOW_DELAY = 5.0
#: Longest wait for a flush() before the phase is reported as unfinished.
FLUSH_TIMEOUT = 120.0
RECEIVER_START_TIMEOUT = 20.0

#: main()'s exit status when interrupted (Ctrl+C, SIGTERM), as a shell reports SIGINT.
INTERRUPTED = 130

TARGET_DELIVERY_RATIO = 1.0
TARGET_EMIT_P99_US = 200.0

RAW = "raw urllib3 keep-alive loop (serial)"
DURABLE = "durable outbox, delivery only"
END_TO_END = "durable outbox, emit + deliver"
NO_ADAPTER = "no adapter"
DOWN = "adapter, endpoint down"
SLOW = f"adapter, endpoint answers in {SLOW_DELAY:g} s"

#: The multiplication sign, spelled out (ruff flags it as ambiguous in string literals).
TIMES = "\N{MULTIPLICATION SIGN}"


class BenchError(RuntimeError):
    """The benchmark cannot go on (a receiver did not start, a signal kept receivers)."""


# -- the receiver subprocess ---------------------------------------------------------------


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100


_TICKS = _clock_ticks()


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of process ``pid``; None off Linux."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state is field 3; utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS


class Receiver:
    """``harness/receiver.py`` in a subprocess: its own interpreter, so it does not share
    the GIL with the sender. Ends when its stdin closes, when this process is gone, or
    on SIGTERM/SIGINT (Ctrl+C reaches it too: same process group)."""

    def __init__(
        self, workdir: Path, name: str, delay: float = 0.0, server: str = "minimal"
    ) -> None:
        self.name = name
        self.server = server
        self.stderr_path = workdir / f"receiver-{name}.stderr"
        command = [sys.executable, str(RECEIVER), "--port", "0", "--parent", str(os.getpid())]
        command += ["--server", server]
        if delay:
            command += ["--delay", f"{delay:g}"]
        # The child keeps its own copy of the descriptor.
        with open(self.stderr_path, "w", encoding="utf-8") as stderr:
            self.process: subprocess.Popen[str] = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                bufsize=1,
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.process.stdout,), daemon=True, name=f"read-{name}"
        )
        self._reader.start()
        ready = self._next_message(RECEIVER_START_TIMEOUT)
        if not ready.get("ready"):
            self.stop()
            raise BenchError(
                f"the {name} receiver did not start: {ready or 'no answer'}; "
                f"stderr: {self.stderr_tail()}"
            )
        self.port = int(ready["port"])
        self.pid = int(ready["pid"])
        self._control = urllib3.PoolManager(maxsize=1, retries=False)
        self.final: dict[str, Any] = {}

    def _read(self, stream: IO[str]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                self._lines.put(line)
        self._lines.put(None)

    def _next_message(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict):
                    return message
        return {}

    def stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        return ""

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self) -> int:
        """POSTs received so far (the receiver's own count, asked over HTTP)."""
        response = self._control.request("GET", self.url("/counts"), timeout=10.0)
        return int(json.loads(response.data)["count"])

    def cpu(self) -> float | None:
        return process_cpu(self.pid)

    def stop(self) -> None:
        """End the subprocess (stdin closed; then SIGTERM; then SIGKILL). Idempotent."""
        process = self.process
        if process.poll() is None:
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()
            self.final = self._next_message(5.0) if hasattr(self, "port") else {}
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        self._reader.join(2.0)  # it reads until the pipe's end
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        if hasattr(self, "_control"):
            self._control.clear()


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- events and bodies -----------------------------------------------------------------------


def subject_names(count: int, prefix: str) -> list[str]:
    return [f"{prefix}-{index:03d}" for index in range(count)]


def lifecycle_events(emitter: Emitter, subjects: Sequence[str], count: int) -> Iterator[TaskEvent]:
    """``count`` events: started, completed, started, ... on the subjects in turn."""
    for index in range(count):
        subject = subjects[(index // 2) % len(subjects)]
        if index % 2 == 0:
            yield emitter.started(subject, "bench")
        else:
            yield emitter.completed(subject, {"index": index})


def sample_body() -> bytes:
    """What the adapter POSTs for a real ``task_completed`` event."""
    emitter = Emitter(source="benchmarks/webhook_bench")
    emitter.started("bench-000", "bench")
    return WebhookAdapter.body(emitter.completed("bench-000", {"index": 1}))


# -- the delivery phases ---------------------------------------------------------------------


@dataclass
class Phase:
    """One timed delivery phase."""

    path: str
    receiver: str
    round: int
    deliveries: int
    seconds: float
    received: int
    sender_cpu_s: float
    receiver_cpu_s: float | None
    finished: bool = True
    latencies_ns: list[int] = field(default_factory=list, repr=False)
    emit_seconds: float | None = None
    body_bytes: float = 0.0

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "path": self.path,
            "receiver": self.receiver,
            "round": self.round,
            "deliveries": self.deliveries,
            "seconds": self.seconds,
            "per_second": self.per_second,
            "received_by_receiver": self.received,
            "finished": self.finished,
            "sender_cpu_s": self.sender_cpu_s,
            "receiver_cpu_s": self.receiver_cpu_s,
            "body_bytes": self.body_bytes,
        }
        if self.latencies_ns:
            ordered = sorted(self.latencies_ns)
            document["request_ms"] = {
                "p50": percentile(ordered, 0.50) / 1e6,
                "p99": percentile(ordered, 0.99) / 1e6,
                "max": ordered[-1] / 1e6,
            }
        if self.emit_seconds is not None:
            document["emit_loop_s"] = self.emit_seconds
        return document


class _Meter:
    """Wall time, this process's CPU time and the receiver's CPU time over a phase."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def __enter__(self) -> _Meter:
        self.count0 = self.receiver.count()
        self.rcpu0 = self.receiver.cpu()
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.cpu0
        rcpu = self.receiver.cpu()
        self.rcpu = None if rcpu is None or self.rcpu0 is None else rcpu - self.rcpu0

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:  # (interrupted: the receiver may be gone already)
            self.received = self.receiver.count() - self.count0


def raw_loop(receiver: Receiver, body: bytes, count: int, round_: int) -> Phase:
    """``count`` POSTs, one at a time, on one keep-alive connection: the raw stack."""
    pool = urllib3.PoolManager(maxsize=1, retries=False)
    url = receiver.url()
    headers = {"content-type": "application/json"}
    request = pool.request
    try:
        for _ in range(WARM_UP):
            request("POST", url, body=body, headers=headers, redirect=False)
        latencies = [0] * count
        clock = time.perf_counter_ns
        failed = 0
        with _Meter(receiver) as meter:
            for index in range(count):
                t0 = clock()
                response = request("POST", url, body=body, headers=headers, redirect=False)
                latencies[index] = clock() - t0
                if response.status != 204:
                    failed += 1
            meter.stop()
    finally:
        pool.clear()
    return Phase(
        RAW,
        receiver.name,
        round_,
        count,
        meter.seconds,
        meter.received,
        meter.cpu,
        meter.rcpu,
        finished=failed == 0,
        latencies_ns=latencies,
        body_bytes=len(body),
    )


def _adapter(url: str, outbox: Path) -> WebhookAdapter:
    return WebhookAdapter(
        Endpoint(url, generate_secret()),
        outbox=str(outbox),
        allow_hosts=["127.0.0.1"],
        workers=WORKERS,
    )


def _prefill(adapter: WebhookAdapter, events: Sequence[TaskEvent]) -> float:
    """Write the rows ``adapter`` makes for ``events`` straight into its outbox (one
    transaction), as ``handle()`` would have, without starting its workers. Returns the
    mean body size."""
    now = time.time()
    rows = [
        NewDelivery(target, e.subject, e.task_id, e.id, e.type, body, now)
        for e in events
        for target, body in adapter.rows(e)
    ]
    adapter.outbox.add(rows, now)
    return sum(len(r.body) for r in rows) / max(len(rows), 1)


def close_quietly(adapter: WebhookAdapter, seconds: float = 5.0) -> bool:
    """``adapter.close(timeout=0)`` (the rows left are in a temporary file), given at most
    ``seconds``: an interrupt that lands inside one of the outbox's transactions can leave
    its lock held, and close() would then wait forever. True if it closed."""
    closing = threading.Thread(target=adapter.close, args=(0,), daemon=True, name="close")
    closing.start()
    closing.join(seconds)
    if closing.is_alive():
        print(
            f"webhook bench: an adapter ({adapter.outbox!r}) did not close within "
            f"{seconds:g} s; left behind",
            file=sys.stderr,
            flush=True,
        )
    return not closing.is_alive()


def _flush(adapter: WebhookAdapter, receiver: Receiver) -> bool:
    """``adapter.flush()``, giving up when the receiver is gone or after FLUSH_TIMEOUT."""
    deadline = time.monotonic() + FLUSH_TIMEOUT
    while time.monotonic() < deadline:
        if adapter.flush(1.0):
            return True
        if receiver.process.poll() is not None:
            raise BenchError(
                f"the {receiver.name} receiver ended; stderr: {receiver.stderr_tail()}"
            )
    return False


def durable_delivery(
    receiver: Receiver, workdir: Path, count: int, subjects: int, round_: int
) -> Phase:
    """Delivery only: ``count`` rows already in the outbox; from ``flush()`` (which starts
    the workers) to its return. A warm-up batch goes first, so that the workers run and
    their connections are open, as in the raw loop."""
    adapter = _adapter(receiver.url(), workdir / f"delivery-{receiver.name}-{round_}.sqlite3")
    try:
        emitter = Emitter(source="benchmarks/webhook_bench")
        names = subject_names(subjects, f"d{round_}")
        _prefill(adapter, list(lifecycle_events(emitter, names, WARM_UP)))
        if not _flush(adapter, receiver):
            raise BenchError("the durable warm-up did not finish")
        body_bytes = _prefill(adapter, list(lifecycle_events(emitter, names, count)))
        with _Meter(receiver) as meter:
            finished = _flush(adapter, receiver)
            meter.stop()
    except BaseException:
        close_quietly(adapter)  # interrupted: leave the rest in the (temporary) outbox
        raise
    adapter.close(timeout=5.0)
    return Phase(
        DURABLE,
        receiver.name,
        round_,
        count,
        meter.seconds,
        meter.received,
        meter.cpu,
        meter.rcpu,
        finished=finished,
        body_bytes=body_bytes,
    )


def end_to_end(receiver: Receiver, workdir: Path, count: int, subjects: int, round_: int) -> Phase:
    """Emit + deliver: the adapter connected, ``count`` lifecycle events emitted back to
    back; from the first emit until ``flush()`` returns."""
    adapter = _adapter(receiver.url(), workdir / f"end-to-end-{receiver.name}-{round_}.sqlite3")
    emitter = Emitter(source="benchmarks/webhook_bench")
    names = subject_names(subjects, f"e{round_}")
    try:
        adapter.connect(emitter)
        for _ in lifecycle_events(emitter, names, WARM_UP):
            pass
        if not _flush(adapter, receiver):
            raise BenchError("the end-to-end warm-up did not finish")
        with _Meter(receiver) as meter:
            for _ in lifecycle_events(emitter, names, count):
                pass
            emitted = time.perf_counter() - meter.t0
            finished = _flush(adapter, receiver)
            meter.stop()
    except BaseException:
        close_quietly(adapter)  # interrupted: leave the rest in the (temporary) outbox
        raise
    adapter.close(timeout=5.0)
    return Phase(
        END_TO_END,
        receiver.name,
        round_,
        count,
        meter.seconds,
        meter.received,
        meter.cpu,
        meter.rcpu,
        finished=finished,
        emit_seconds=emitted,
        body_bytes=len(sample_body()),
    )


# -- emit cost --------------------------------------------------------------------------------


def percentile(ordered: Sequence[int] | Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def time_completed(emitter: Emitter, subjects: Sequence[str], calls: int) -> list[int]:
    """Nanoseconds of each of ``calls`` ``completed()`` calls; each subject's task is
    started (not timed) right before. The garbage collector is off meanwhile."""
    samples = [0] * calls
    clock = time.perf_counter_ns
    started = emitter.started
    completed = emitter.completed
    width = len(subjects)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for index in range(calls):
            subject = subjects[index % width]
            started(subject, "bench")
            t0 = clock()
            completed(subject)
            samples[index] = clock() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


@dataclass
class EmitCost:
    """Per-call samples of one configuration, over every round."""

    name: str
    samples_ns: list[int] = field(default_factory=list, repr=False)
    round_p99_us: list[float] = field(default_factory=list)
    ratio_p99: float | None = None
    ratio_p50: float | None = None

    def at(self, fraction: float) -> float:
        return percentile(self._ordered(), fraction) / 1000.0

    def _ordered(self) -> list[int]:
        return sorted(self.samples_ns)  # 10,000 numbers: cheap enough to sort each time

    def to_dict(self) -> dict[str, Any]:
        ordered = self._ordered()
        return {
            "configuration": self.name,
            "calls": len(ordered),
            "p50_us": self.at(0.50),
            "p90_us": self.at(0.90),
            "p99_us": self.at(0.99),
            "p999_us": self.at(0.999),
            "max_us": ordered[-1] / 1000.0 if ordered else None,
            "mean_us": sum(ordered) / len(ordered) / 1000.0 if ordered else None,
            "p99_us_by_round": self.round_p99_us,
            "p50_vs_no_adapter": self.ratio_p50,
            "p99_vs_no_adapter": self.ratio_p99,
        }


def _check_no_receivers(where: str) -> None:
    leftovers = {name: len(sig.receivers) for name, sig in SIGNALS.items() if sig.receivers}
    if leftovers:
        raise BenchError(f"{where}: taskevents signals have receivers connected: {leftovers}")


def emit_rounds(
    adapters: dict[str, WebhookAdapter | None],
    *,
    rounds: int,
    calls: int,
    subjects: int,
    progress: Callable[[str], None],
) -> list[EmitCost]:
    """Each round times every configuration once (a new ``Emitter``, the configuration's
    adapter connected to it for its turn, new subjects), starting with a different one
    each round."""
    names = list(adapters)
    costs = {name: EmitCost(name) for name in names}
    warm_up = max(50, calls // 10)
    for round_ in range(rounds):
        progress(f"emit cost, round {round_ + 1}/{rounds}")
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            adapter = adapters[name]
            _check_no_receivers(f"before '{name}'")
            gc.collect()
            emitter = Emitter(source="benchmarks/webhook_bench")
            chosen = subject_names(subjects, f"c{round_}-{names.index(name)}")
            if adapter is not None:
                adapter.connect(emitter)
            try:
                time_completed(emitter, chosen, warm_up)
                samples = time_completed(emitter, chosen, calls)
            finally:
                if adapter is not None:
                    adapter.disconnect()
            costs[name].samples_ns.extend(samples)
            costs[name].round_p99_us.append(percentile(sorted(samples), 0.99) / 1000.0)
    _check_no_receivers("after the emit cost")
    base = costs[names[0]]
    for cost in costs.values():
        cost.ratio_p50 = cost.at(0.50) / base.at(0.50)
        cost.ratio_p99 = cost.at(0.99) / base.at(0.99)
    return [costs[name] for name in names]


# -- reporting ---------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """A plain-text table, aligned, that is also valid Markdown."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(w) if r else cell.ljust(w)
            for cell, w, r in zip(cells, widths, right, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, right, strict=True)
    )
    return "\n".join([line(header), rule + "|", *(line(row) for row in rows)])


@dataclass
class PathSummary:
    """The phases of one delivery path, pooled over the rounds."""

    path: str
    phases: list[Phase]

    @property
    def deliveries(self) -> int:
        return sum(p.deliveries for p in self.phases)

    @property
    def per_second(self) -> float:
        seconds = sum(p.seconds for p in self.phases)
        return self.deliveries / seconds if seconds > 0 else 0.0

    @property
    def received(self) -> int:
        return sum(p.received for p in self.phases)

    @property
    def complete(self) -> bool:
        return all(p.finished for p in self.phases) and self.received == self.deliveries

    def cpu_us(self) -> float:
        return sum(p.sender_cpu_s for p in self.phases) / max(self.deliveries, 1) * 1e6

    def receiver_cpu_us(self) -> float | None:
        values = [p.receiver_cpu_s for p in self.phases]
        if any(v is None for v in values):
            return None
        return sum(v for v in values if v is not None) / max(self.deliveries, 1) * 1e6


def _ratios(ours: PathSummary, raw: PathSummary) -> list[float]:
    return [
        mine.per_second / theirs.per_second
        for mine, theirs in zip(ours.phases, raw.phases, strict=True)
        if theirs.per_second > 0
    ]


def delivery_table(summaries: Sequence[PathSummary]) -> str:
    raw = summaries[0]
    rows = []
    for summary in summaries:
        ratios = _ratios(summary, raw)
        ratio = summary.per_second / raw.per_second if raw.per_second else math.nan
        rcpu = summary.receiver_cpu_us()
        rows.append(
            (
                summary.path,
                f"{summary.deliveries:,}",
                f"{summary.received:,}" + ("" if summary.complete else " !"),
                f"{summary.per_second:,.0f}",
                f"{ratio:.2f}{TIMES}",
                "-" if summary is raw else "-".join(f"{r:.2f}" for r in (min(ratios), max(ratios))),
                f"{summary.cpu_us():.0f}",
                "-" if rcpu is None else f"{rcpu:.0f}",
            )
        )
    header = (
        "path",
        "deliveries",
        "received",
        "per second",
        "vs raw",
        "by round",
        "sender CPU µs/delivery",
        "receiver CPU µs/delivery",
    )
    return table(header, rows, (False, True, True, True, True, True, True, True))


def emit_table(costs: Sequence[EmitCost]) -> str:
    rows = []
    for cost in costs:
        rounds = cost.round_p99_us
        rows.append(
            (
                cost.name,
                f"{len(cost.samples_ns):,}",
                f"{cost.at(0.50):.1f}",
                f"{cost.at(0.99):.1f}",
                f"{cost.at(0.999):.0f}",
                f"{max(cost.samples_ns) / 1000.0:,.0f}",
                f"{cost.ratio_p99:.2f}{TIMES}" if cost.ratio_p99 is not None else "-",
                f"{min(rounds):.0f}-{max(rounds):.0f}",
            )
        )
    header = (
        "Emitter.completed()",
        "calls",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "p99 vs no adapter",
        "p99 µs by round",
    )
    return table(header, rows, (False, True, True, True, True, True, True, True))


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "versions": {name: package_version(name) for name in ("taskevents", "urllib3", "blinker")},
    }


# -- the run -------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="webhook_bench.py",
        description="Webhook delivery (durable outbox vs a serial urllib3 loop) and "
        "Emitter.completed() cost with the webhook adapter and a bad endpoint.",
    )
    parser.add_argument(
        "--deliveries",
        type=int,
        help=f"deliveries per path and round (default {DEFAULT_DELIVERIES:,})",
    )
    parser.add_argument(
        "--rounds", type=int, help=f"delivery rounds, paths interleaved (default {DEFAULT_ROUNDS})"
    )
    parser.add_argument(
        "--emit-calls",
        type=int,
        help=f"timed completed() calls per configuration and round (default "
        f"{DEFAULT_EMIT_CALLS:,})",
    )
    parser.add_argument(
        "--emit-rounds", type=int, help=f"emit cost rounds (default {DEFAULT_EMIT_ROUNDS})"
    )
    parser.add_argument(
        "--receivers",
        default=",".join(RECEIVERS),
        help="the receivers the deliveries go to, comma-separated (default "
        + ",".join(RECEIVERS)
        + "): "
        + "; ".join(f"{name}: {text}" for name, text in RECEIVERS.items()),
    )
    parser.add_argument(
        "--subjects",
        type=int,
        default=DEFAULT_SUBJECTS,
        help=f"subjects the events are spread over (default {DEFAULT_SUBJECTS})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny sizes for a smoke test ({QUICK_DELIVERIES} deliveries {TIMES} "
        f"{QUICK_ROUNDS} round, {QUICK_EMIT_CALLS} calls {TIMES} {QUICK_EMIT_ROUNDS} round); "
        "explicit options still win",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    defaults = {
        "deliveries": (DEFAULT_DELIVERIES, QUICK_DELIVERIES),
        "rounds": (DEFAULT_ROUNDS, QUICK_ROUNDS),
        "emit_calls": (DEFAULT_EMIT_CALLS, QUICK_EMIT_CALLS),
        "emit_rounds": (DEFAULT_EMIT_ROUNDS, QUICK_EMIT_ROUNDS),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.subjects < 1:
        parser.error("--subjects must be at least 1")
    chosen = [name.strip() for name in args.receivers.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in RECEIVERS]
    if unknown or not chosen:
        parser.error(
            f"--receivers: {', '.join(unknown) or 'none given'}; choose from "
            + ", ".join(RECEIVERS)
        )
    args.receivers = list(dict.fromkeys(chosen))
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _show(message: str) -> None:
    print(f"  ... {message}", file=sys.stderr, flush=True)


def run_deliveries(
    receivers: Sequence[Receiver], workdir: Path, args: argparse.Namespace, body: bytes
) -> dict[str, list[PathSummary]]:
    """Raw, delivery only and end to end against each receiver, ``args.rounds`` times;
    each round takes the receivers one after the other, and the order of the receivers
    and of the paths rotates from round to round."""
    kinds: list[tuple[str, Callable[[Receiver, int], Phase]]] = [
        (RAW, lambda rc, r: raw_loop(rc, body, args.deliveries, r)),
        (
            DURABLE,
            lambda rc, r: durable_delivery(rc, workdir, args.deliveries, args.subjects, r),
        ),
        (END_TO_END, lambda rc, r: end_to_end(rc, workdir, args.deliveries, args.subjects, r)),
    ]
    phases: dict[str, dict[str, list[Phase]]] = {
        receiver.name: {name: [] for name, _ in kinds} for receiver in receivers
    }
    for round_ in range(args.rounds):
        _show(f"deliveries, round {round_ + 1}/{args.rounds}")
        first = round_ % len(receivers)
        shift = round_ % len(kinds)
        for receiver in [*receivers[first:], *receivers[:first]]:
            for name, measure in kinds[shift:] + kinds[:shift]:
                gc.collect()
                phases[receiver.name][name].append(measure(receiver, round_))
    return {
        receiver.name: [PathSummary(name, phases[receiver.name][name]) for name, _ in kinds]
        for receiver in receivers
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    env = environment()
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    print(
        f"webhook bench: Python {env['python']} on {env['platform']} ({env['cpu_count']} CPUs); "
        f"{versions}; SQLite {env['sqlite']}; load average {load_average()}",
        flush=True,
    )
    print(
        f"deliveries: {args.deliveries:,} per path {TIMES} {args.rounds} round(s) to each "
        f"receiver ({', '.join(args.receivers)}), {args.subjects} subjects, {WORKERS} workers; "
        f"emit cost: {args.emit_calls:,} calls "
        f"{TIMES} {args.emit_rounds} round(s) per configuration"
        + (" (quick: numbers are not meaningful)" if args.quick else ""),
        flush=True,
    )
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if threading.current_thread() is threading.main_thread():
            # SIGTERM cleans up as Ctrl+C does (receivers stopped, temporary files removed).
            previous = signal.signal(signal.SIGTERM, _interrupt)
            stack.callback(signal.signal, signal.SIGTERM, previous)
        workdir = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="taskevents-webhook-bench-"))
        )
        try:
            summaries, costs, body = _measure(stack, workdir, args)
        except KeyboardInterrupt:
            print("interrupted; cleaning up", file=sys.stderr, flush=True)
            return INTERRUPTED
        except BenchError as exc:
            print(f"webhook bench: {exc}", file=sys.stderr, flush=True)
            return 1
    wall = time.perf_counter() - started
    _report(args, env, summaries, costs, body, wall)
    return 0


def _measure(
    stack: contextlib.ExitStack, workdir: Path, args: argparse.Namespace
) -> tuple[dict[str, list[PathSummary]], list[EmitCost], bytes]:
    body = sample_body()
    _show("starting the receivers")
    targets = []
    for name in args.receivers:
        receiver = Receiver(workdir, name, server=name)
        stack.callback(receiver.stop)
        targets.append(receiver)
    slow = Receiver(workdir, "slow", delay=SLOW_DELAY)
    stack.callback(slow.stop)

    summaries = run_deliveries(targets, workdir, args, body)
    for receiver in targets:  # idle from here on: out of the emit cost's way
        receiver.stop()

    down = _adapter(f"http://127.0.0.1:{closed_port()}/hook", workdir / "down.sqlite3")
    stack.callback(close_quietly, down)
    delayed = _adapter(slow.url(), workdir / "slow.sqlite3")
    stack.callback(close_quietly, delayed)
    # Runs first on the way out (last in): stop the slow receiver before closing its
    # adapter, so that its workers' 5 s requests fail at once instead of being waited for.
    stack.callback(slow.stop)
    configurations: dict[str, WebhookAdapter | None] = {
        NO_ADAPTER: None,
        DOWN: down,
        SLOW: delayed,
    }
    costs = emit_rounds(
        configurations,
        rounds=args.emit_rounds,
        calls=args.emit_calls,
        subjects=args.subjects,
        progress=_show,
    )
    return summaries, costs, body


def _delivery_section(name: str, summaries: Sequence[PathSummary], body: bytes) -> None:
    raw, _durable, e2e = summaries
    print()
    print(
        f"## Deliveries to the {name} receiver ({RECEIVERS[name]}; a subprocess answering "
        f"204), {len(body)}-byte webhook bodies"
    )
    print()
    print(delivery_table(summaries))
    print()
    ordered = sorted(n for p in raw.phases for n in p.latencies_ns)
    print(
        f"raw loop: one request p50 {percentile(ordered, 0.5) / 1e6:.3f} ms, "
        f"p99 {percentile(ordered, 0.99) / 1e6:.3f} ms; end to end: the emit loop took "
        f"{sum(p.emit_seconds or 0 for p in e2e.phases) / e2e.deliveries * 1e6:.0f} µs "
        "per event while the workers delivered"
    )
    for summary in summaries:
        if not summary.complete:
            print(
                f"WARNING {summary.path}: {summary.received:,} of {summary.deliveries:,} "
                "reached the receiver"
                + ("" if all(p.finished for p in summary.phases) else " (flush timed out)")
            )


def _report(
    args: argparse.Namespace,
    env: dict[str, Any],
    by_receiver: dict[str, list[PathSummary]],
    costs: Sequence[EmitCost],
    body: bytes,
    wall: float,
) -> None:
    for name, summaries in by_receiver.items():
        _delivery_section(name, summaries, body)
    print()
    print(
        f"## Emitter.completed() per call, {args.subjects} subjects, each task started "
        "(not timed) just before; garbage collector off while timed"
    )
    print()
    print(emit_table(costs))
    print()
    checks = []
    for name, (raw, durable, _e2e) in by_receiver.items():
        ratio = durable.per_second / raw.per_second if raw.per_second else 0.0
        checks.append(
            (
                f"durable delivery {ratio:.2f}{TIMES} the serial urllib3 loop, {name} receiver "
                f"(target ≥ {TARGET_DELIVERY_RATIO:.1f}{TIMES})",
                ratio >= TARGET_DELIVERY_RATIO and durable.complete and raw.complete,
            )
        )
    for cost in costs[1:]:
        p99 = cost.at(0.99)
        checks.append(
            (
                f"emit p99, {cost.name}: {p99:.1f} µs (target ≤ {TARGET_EMIT_P99_US:g} µs)",
                p99 <= TARGET_EMIT_P99_US,
            )
        )
    for text, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'} {text}")
    print(f"wall time: {wall:.1f} s; load average {load_average()}")

    if args.json:
        document = {
            "benchmark": "webhook_bench",
            "quick": args.quick,
            "settings": {
                "deliveries": args.deliveries,
                "rounds": args.rounds,
                "emit_calls": args.emit_calls,
                "emit_rounds": args.emit_rounds,
                "subjects": args.subjects,
                "receivers": {name: RECEIVERS[name] for name in args.receivers},
                "workers": WORKERS,
                "slow_delay_s": SLOW_DELAY,
                "body_bytes": len(body),
            },
            "environment": env,
            "deliveries": [
                {
                    "receiver": name,
                    "path": s.path,
                    "deliveries": s.deliveries,
                    "received": s.received,
                    "per_second": s.per_second,
                    "vs_raw": s.per_second / summaries[0].per_second
                    if summaries[0].per_second
                    else None,
                    "sender_cpu_us_per_delivery": s.cpu_us(),
                    "receiver_cpu_us_per_delivery": s.receiver_cpu_us(),
                    "phases": [p.to_dict() for p in s.phases],
                }
                for name, summaries in by_receiver.items()
                for s in summaries
            ],
            "emit_cost": [c.to_dict() for c in costs],
            "targets": [{"check": text, "passed": passed} for text, passed in checks],
            "wall_time_s": wall,
        }
        write_json(args.json, document)


if __name__ == "__main__":
    status = main()
    if status == INTERRUPTED:
        # Everything of ours is cleaned up already. Skip the interpreter's exit hooks: the
        # outbox module's would close the adapters again, and hang on a lock an interrupt
        # may have left held.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    raise SystemExit(status)
