"""AWS benchmark: ``SQSAdapter`` and ``EventBridgeAdapter`` against a serial boto3 loop, and
what an emit costs with the SQS adapter attached to AWS unreachable or live.

AWS itself is out of reach: everything runs against moto's server
(``harness/aws_server.py``, a subprocess, so that its CPU does not share the GIL with the
process measured), with made-up credentials and ``endpoint_url``. Two measurements, one
run:

1. **Messages per second into SQS** (and **into EventBridge**, ``PutEvents`` to a bus
   with no rules): one boto3 client calling ``send_message_batch`` (``put_events``) with
   10 entries at a time, one call after the other (the raw stack), against the adapter,
   rounds interleaved, same server. The adapter is measured twice: *delivery only* (its
   outbox pre-filled with the rows it makes for real events, timed from ``flush()`` to
   its return) and *end to end* (connected to an ``Emitter``, lifecycle events emitted,
   timed from the first emit until ``flush()`` returns).
2. **``Emitter.completed()`` per call** (p50/p99, ``perf_counter_ns`` around each call,
   the garbage collector off) with no adapter, with an ``SQSAdapter`` whose AWS cannot be
   reached (``endpoint_url`` a closed port), and with one delivering to the live moto
   server, interleaved round by round.

Run: ``.venv/bin/python benchmarks/aws_bench.py [--quick] [--json PATH]``. Speed is
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
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import IO, Any, TypeVar

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness.machine import load_average, package_version, write_json
from webhook_bench import (
    EmitCost,
    closed_port,
    emit_table,
    lifecycle_events,
    percentile,
    process_cpu,
    subject_names,
    table,
    time_completed,
)

from taskevents import Emitter, TaskEvent
from taskevents.adapters.aws import MAX_BATCH, EventBridgeAdapter, SQSAdapter
from taskevents.adapters.outbox import DurableAdapter, NewDelivery
from taskevents.signals import SIGNALS

A = TypeVar("A", bound=DurableAdapter)

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
SERVER = HERE / "harness" / "aws_server.py"

REGION = "eu-west-1"
#: moto's account.
ACCOUNT = "123456789012"
#: Standard queues named so count what they are sent and keep nothing (aws_server.py).
SINK = "sink-"
SOURCE = "benchmarks/aws_bench"

#: The services measured, and what each is called in the output.
SERVICES = {
    "sqs": "SQS: SendMessageBatch to a standard queue",
    "eventbridge": "EventBridge: PutEvents to a bus with no rules",
}

DEFAULT_SUBJECTS = 20
#: The AWS adapters' default.
DEFAULT_WORKERS = 2
DEFAULT_MESSAGES = 4_000
DEFAULT_ROUNDS = 6
DEFAULT_EMIT_CALLS = 2_000
DEFAULT_EMIT_ROUNDS = 5
QUICK_MESSAGES = 300
QUICK_ROUNDS = 1
QUICK_EMIT_CALLS = 200
QUICK_EMIT_ROUNDS = 1
#: Messages before each timed phase (raw: calls of 10).
WARM_UP = 50
#: Idle workers of the delivery-only adapter look for rows written behind their back
#: this seldom, so that none starts on the pre-filled rows before the timed flush().
IDLE_POLL = 600.0
FLUSH_TIMEOUT = 120.0
SERVER_START_TIMEOUT = 60.0
#: Longest wait for an adapter to close and its worker threads to end.
THREADS_TIMEOUT = 15.0

#: main()'s exit status when interrupted (Ctrl+C, SIGTERM), as a shell reports SIGINT.
INTERRUPTED = 130

TARGET_DELIVERY_RATIO = 1.0
TARGET_EMIT_P99_US = 200.0

RAW, DELIVERY, END_TO_END = "raw", "delivery", "end-to-end"
NO_ADAPTER = "no adapter"
UNREACHABLE = "SQSAdapter, AWS unreachable"
LIVE = "SQSAdapter, moto live"

#: The multiplication sign, spelled out (ruff flags it as ambiguous in string literals).
TIMES = "\N{MULTIPLICATION SIGN}"


class BenchError(RuntimeError):
    """The benchmark cannot go on (the server did not start, a signal kept receivers)."""


# -- moto's server -----------------------------------------------------------------------------


class MotoServer:
    """``harness/aws_server.py`` in a subprocess: its own interpreter, so it does not share
    the GIL with the process measured. Ends when its stdin closes, when this process is
    gone, or on SIGTERM/SIGINT (Ctrl+C reaches it too: same process group)."""

    def __init__(self, workdir: Path) -> None:
        self.stderr_path = workdir / "moto-server.stderr"
        command = [sys.executable, str(SERVER), "--parent", str(os.getpid()), "--sink-prefix"]
        command.append(SINK)
        with open(self.stderr_path, "w", encoding="utf-8") as stderr:
            self.process: subprocess.Popen[str] = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                bufsize=1,
            )
        self.returncode: int | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.process.stdout,), daemon=True, name="read-moto"
        )
        self._reader.start()
        ready = self._next_message(SERVER_START_TIMEOUT)
        if not ready.get("ready"):
            self.stop()
            raise BenchError(
                f"moto's server did not start: {ready or 'no answer'}; stderr: {self.stderr_tail()}"
            )
        self.url = str(ready["url"])
        self.pid = int(ready["pid"])

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

    def cpu(self) -> float | None:
        return process_cpu(self.pid) if hasattr(self, "pid") else None

    def check(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"moto's server ended; stderr: {self.stderr_tail()}")

    def stop(self) -> int | None:
        """End the subprocess (stdin closed; then SIGTERM; then SIGKILL) and return its exit
        status. Idempotent."""
        process = self.process
        if process.poll() is None:
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()
            try:
                process.wait(10)
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
        self.returncode = process.returncode
        return self.returncode


#: Every adapter the run made, to check at the end that none of their threads is left.
_MADE: list[DurableAdapter] = []


def made(adapter: A) -> A:
    """``adapter``, noted in ``_MADE``."""
    _MADE.append(adapter)
    return adapter


def session() -> Any:
    """A boto3 session with made-up credentials (moto takes any): one per client, as the
    adapters make one each (sessions are not thread-safe)."""
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


class CallCounter:
    """The calls of one operation a client makes (counted by botocore's event hooks, in
    whichever thread calls): calls, HTTP requests (more than calls when botocore tried a
    call again), entries sent, and entries AWS accepted."""

    def __init__(self, client: Any, operation: str) -> None:
        self.calls = 0
        self.attempts = 0
        self.entries = 0
        self.accepted = 0
        self._lock = threading.Lock()
        service = client.meta.service_model.service_name
        events = client.meta.events
        events.register(f"before-parameter-build.{service}.{operation}", self._before)
        events.register(f"before-send.{service}.{operation}", self._send)
        events.register(f"after-call.{service}.{operation}", self._after)

    def _send(self, **_: Any) -> None:
        with self._lock:
            self.attempts += 1

    def _before(self, params: dict[str, Any], **_: Any) -> None:
        with self._lock:
            self.calls += 1
            self.entries += len(params.get("Entries") or ())

    def _after(self, parsed: dict[str, Any], **_: Any) -> None:
        if "Successful" in parsed or "Failed" in parsed:  # SendMessageBatch
            accepted = len(parsed.get("Successful") or ())
        else:  # PutEvents
            accepted = sum(1 for e in parsed.get("Entries") or () if not e.get("ErrorCode"))
        with self._lock:
            self.accepted += accepted

    def snapshot(self) -> tuple[int, int, int, int]:
        with self._lock:
            return self.calls, self.attempts, self.entries, self.accepted


# -- the services --------------------------------------------------------------------------------


def _json(document: object) -> str:
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))


class Sink:
    """What the phases need of one service: targets made and dropped on the server, the
    raw calls, and the adapter."""

    key: str
    #: boto3's name of the service.
    client_name: str
    operation: str
    adapter_name: str

    def __init__(self, server: MotoServer) -> None:
        self.server = server
        self.control = session().client(self.client_name, endpoint_url=server.url)

    def close(self) -> None:
        self.control.close()

    def client(self) -> Any:
        return session().client(self.client_name, endpoint_url=self.server.url)

    def new(self, name: str) -> str:
        raise NotImplementedError

    def drop(self, target: str) -> None:
        raise NotImplementedError

    def arrived(self, target: str) -> int | None:
        """Messages the target holds, as the server counts them (None: not countable)."""
        return None

    def raw_calls(self, target: str, events: Sequence[TaskEvent]) -> list[dict[str, Any]]:
        """The keyword arguments of each raw call: 10 events per call."""
        raise NotImplementedError

    def call(self, client: Any, arguments: dict[str, Any]) -> int:
        """One raw call; returns the entries that failed."""
        raise NotImplementedError

    def adapter(
        self, target: str, outbox: Path, workers: int, **options: Any
    ) -> SQSAdapter | EventBridgeAdapter:
        raise NotImplementedError

    def payload(self, row: bytes) -> int:
        """Bytes of the message body (the CloudEvents JSON) in an outbox row."""
        raise NotImplementedError

    def raw_payload(self, arguments: dict[str, Any]) -> list[int]:
        raise NotImplementedError


def _attributes(event: TaskEvent) -> dict[str, Any]:
    return {
        name: {"DataType": "String", "StringValue": value}
        for name, value in (
            ("event_type", event.type),
            ("subject", event.subject),
            ("task_type", event.task_type),
        )
        if value
    }


class SQSSink(Sink):
    key = "sqs"
    client_name = "sqs"
    operation = "SendMessageBatch"
    adapter_name = "SQSAdapter"

    def new(self, name: str) -> str:
        url = self.control.create_queue(QueueName=SINK + name)["QueueUrl"]
        return str(url)

    def drop(self, target: str) -> None:
        with contextlib.suppress(Exception):
            self.control.delete_queue(QueueUrl=target)

    def arrived(self, target: str) -> int | None:
        answer = self.control.get_queue_attributes(
            QueueUrl=target, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(answer["Attributes"]["ApproximateNumberOfMessages"])

    def raw_calls(self, target: str, events: Sequence[TaskEvent]) -> list[dict[str, Any]]:
        # The same request as the adapter's: the CloudEvents body and the three message
        # attributes it sets for filters.
        return [
            {
                "QueueUrl": target,
                "Entries": [
                    {
                        "Id": str(i),
                        "MessageBody": _json(event.to_cloudevent()),
                        "MessageAttributes": _attributes(event),
                    }
                    for i, event in enumerate(events[start : start + MAX_BATCH])
                ],
            }
            for start in range(0, len(events), MAX_BATCH)
        ]

    def call(self, client: Any, arguments: dict[str, Any]) -> int:
        return len(client.send_message_batch(**arguments).get("Failed") or ())

    def adapter(
        self, target: str, outbox: Path, workers: int, **options: Any
    ) -> SQSAdapter | EventBridgeAdapter:
        return made(
            SQSAdapter(
                target,
                session=session(),
                endpoint_url=self.server.url,
                outbox=str(outbox),
                workers=workers,
                **options,
            )
        )

    def payload(self, row: bytes) -> int:
        return len(json.loads(row)["body"])

    def raw_payload(self, arguments: dict[str, Any]) -> list[int]:
        return [len(e["MessageBody"]) for e in arguments["Entries"]]


class EventBridgeSink(Sink):
    key = "eventbridge"
    client_name = "events"
    operation = "PutEvents"
    adapter_name = "EventBridgeAdapter"

    def new(self, name: str) -> str:
        self.control.create_event_bus(Name=name)
        return name

    def drop(self, target: str) -> None:
        with contextlib.suppress(Exception):
            self.control.delete_event_bus(Name=target)

    def raw_calls(self, target: str, events: Sequence[TaskEvent]) -> list[dict[str, Any]]:
        calls = []
        for start in range(0, len(events), MAX_BATCH):
            entries = []
            for event in events[start : start + MAX_BATCH]:
                document = event.to_cloudevent()
                entries.append(
                    {
                        "Time": event.time.astimezone(timezone.utc),
                        "Source": event.source,
                        "DetailType": document["type"],
                        "Detail": _json(document),
                        "EventBusName": target,
                    }
                )
            calls.append({"Entries": entries})
        return calls

    def call(self, client: Any, arguments: dict[str, Any]) -> int:
        return int(client.put_events(**arguments).get("FailedEntryCount") or 0)

    def adapter(
        self, target: str, outbox: Path, workers: int, **options: Any
    ) -> SQSAdapter | EventBridgeAdapter:
        return made(
            EventBridgeAdapter(
                target,
                session=session(),
                endpoint_url=self.server.url,
                outbox=str(outbox),
                workers=workers,
                **options,
            )
        )

    def payload(self, row: bytes) -> int:
        return len(json.loads(row)["Detail"])

    def raw_payload(self, arguments: dict[str, Any]) -> list[int]:
        return [len(e["Detail"]) for e in arguments["Entries"]]


SINKS: dict[str, type[Sink]] = {"sqs": SQSSink, "eventbridge": EventBridgeSink}


# -- the delivery phases -------------------------------------------------------------------------


@dataclass
class Phase:
    """One timed phase of one path."""

    service: str
    path: str
    round: int
    messages: int
    seconds: float
    arrived: int
    calls: int
    entries: int
    #: HTTP requests: more than calls when botocore tried a call again.
    attempts: int
    sender_cpu_s: float
    server_cpu_s: float | None
    finished: bool = True
    body_bytes: float = 0.0
    call_ns: list[int] = field(default_factory=list, repr=False)
    emit_seconds: float | None = None
    row_bytes: float | None = None
    #: Emitted events whose rows the emitting thread wrote to the outbox at once.
    direct_writes: int | None = None
    #: Writes the outbox refused (OutboxBusy: rows then wait in memory).
    refused_writes: int | None = None

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "service": self.service,
            "path": self.path,
            "round": self.round,
            "messages": self.messages,
            "seconds": self.seconds,
            "per_second": self.per_second,
            "arrived": self.arrived,
            "calls": self.calls,
            "entries_sent": self.entries,
            "http_requests": self.attempts,
            "finished": self.finished,
            "sender_cpu_s": self.sender_cpu_s,
            "server_cpu_s": self.server_cpu_s,
            "body_bytes": self.body_bytes,
        }
        if self.call_ns:
            ordered = sorted(self.call_ns)
            document["call_ms"] = {
                "p50": percentile(ordered, 0.50) / 1e6,
                "p99": percentile(ordered, 0.99) / 1e6,
                "max": ordered[-1] / 1e6,
            }
        if self.emit_seconds is not None:
            document["emit_loop_s"] = self.emit_seconds
        if self.row_bytes is not None:
            document["outbox_row_bytes"] = self.row_bytes
        if self.direct_writes is not None:
            document["events_written_at_once"] = self.direct_writes
            document["refused_outbox_writes"] = self.refused_writes
        return document


class _Meter:
    """Wall time, this process's CPU time, the server's CPU time and the calls counted
    over a phase."""

    def __init__(self, server: MotoServer, counter: CallCounter) -> None:
        self.server = server
        self.counter = counter

    def __enter__(self) -> _Meter:
        self.calls0, self.attempts0, self.entries0, self.accepted0 = self.counter.snapshot()
        self.scpu0 = self.server.cpu()
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            return
        self.seconds = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.cpu0
        scpu = self.server.cpu()
        self.scpu = None if scpu is None or self.scpu0 is None else scpu - self.scpu0
        calls, attempts, entries, accepted = self.counter.snapshot()
        self.calls = calls - self.calls0
        self.attempts = attempts - self.attempts0
        self.entries = entries - self.entries0
        self.accepted = accepted - self.accepted0


def _arrived(sink: Sink, target: str, meter: _Meter, before: int | None) -> int:
    """What reached the target in the phase: the queue's own count where the server
    keeps one, else the entries the service accepted."""
    now = sink.arrived(target)
    if now is None or before is None:
        return meter.accepted
    return now - before


def raw_loop(sink: Sink, server: MotoServer, count: int, subjects: int, round_: int) -> Phase:
    """``count`` messages in calls of 10, one call at a time, on one client."""
    client = sink.client()
    counter = CallCounter(client, sink.operation)
    target = sink.new(f"raw-{round_}")
    try:
        emitter = Emitter(source=SOURCE)
        names = subject_names(subjects, f"r{round_}")
        for arguments in sink.raw_calls(target, list(lifecycle_events(emitter, names, WARM_UP))):
            sink.call(client, arguments)
        calls = sink.raw_calls(target, list(lifecycle_events(emitter, names, count)))
        sizes = [n for arguments in calls for n in sink.raw_payload(arguments)]
        before = sink.arrived(target)
        latencies = [0] * len(calls)
        clock = time.perf_counter_ns
        call = sink.call
        failed = 0
        with _Meter(server, counter) as meter:
            for index, arguments in enumerate(calls):
                t0 = clock()
                failed += call(client, arguments)
                latencies[index] = clock() - t0
        arrived = _arrived(sink, target, meter, before)
    finally:
        sink.drop(target)
        client.close()
    return Phase(
        sink.key,
        RAW,
        round_,
        count,
        meter.seconds,
        arrived,
        meter.calls,
        meter.entries,
        meter.attempts,
        meter.cpu,
        meter.scpu,
        finished=failed == 0,
        body_bytes=sum(sizes) / max(len(sizes), 1),
        call_ns=latencies,
    )


def _prefill(adapter: DurableAdapter, events: Sequence[TaskEvent]) -> list[NewDelivery]:
    """Write the rows ``adapter`` makes for ``events`` straight into its outbox (one
    transaction), as ``handle()`` would have, without waking its workers."""
    now = time.time()
    rows = [
        NewDelivery(target, e.subject, e.task_id, e.id, e.type, body, now)
        for e in events
        for target, body in adapter.rows(e)
    ]
    adapter.outbox.add(rows, now)
    return rows


def _flush(adapter: DurableAdapter, server: MotoServer) -> bool:
    """``adapter.flush()``, giving up when the server is gone or after FLUSH_TIMEOUT."""
    deadline = time.monotonic() + FLUSH_TIMEOUT
    while time.monotonic() < deadline:
        if adapter.flush(1.0):
            return True
        server.check()
    return False


def close_quietly(
    adapter: DurableAdapter, timeout: float = 0.0, seconds: float = THREADS_TIMEOUT
) -> bool:
    """``adapter.close(timeout)`` given at most ``seconds`` (an interrupt that lands inside
    one of the outbox's transactions can leave its lock held, and close() would then wait
    forever), then its worker threads given what is left of ``seconds`` to end (one may
    be in botocore's back-off between two tries of a call), then its outbox closed (which
    close() leaves open while a worker still runs). True if all of it ended in time."""
    deadline = time.monotonic() + seconds
    closing = threading.Thread(target=adapter.close, args=(timeout,), daemon=True, name="close")
    closing.start()
    closing.join(seconds)
    if closing.is_alive():
        print(
            f"aws bench: an adapter ({type(adapter).__name__}) did not close within "
            f"{seconds:g} s; left behind",
            file=sys.stderr,
            flush=True,
        )
        return False
    for thread in adapter_threads(adapter):
        thread.join(max(deadline - time.monotonic(), 0.0))
    if adapter_threads(adapter):
        return False
    adapter.outbox.close()  # idempotent; close() skipped it if a worker was still busy
    return True


def adapter_threads(adapter: DurableAdapter | None = None) -> list[threading.Thread]:
    """The live worker threads of ``adapter``, or every live thread of taskevents (by the
    names it gives them)."""
    if adapter is None:
        threads = [t for t in threading.enumerate() if t.name.startswith("taskevents-")]
    else:
        # Every adapter of a class names its threads alike: ask this one for its own.
        threads = list(getattr(adapter, "_threads", ()))
    return [t for t in threads if t.is_alive()]


class OutboxWrites:
    """How the emitting thread's events reached ``adapter``'s outbox. An event's rows are
    written at once, by ``handle()`` in the emitting thread (one ``outbox.add()`` call),
    unless a write was refused (``OutboxBusy``, counted by ``write_errors``): then the
    adapter holds them in memory, and the rows of every emit after them, until a worker
    writes them; those events cost the emitter less and are not on disk meanwhile.
    Counted by wrapping the outbox's ``add`` (about 0.3 µs a call)."""

    def __init__(self, adapter: DurableAdapter) -> None:
        self.adapter = adapter
        self.direct = 0
        self._emitter = threading.get_ident()  # the benchmark emits from this thread
        add = adapter.outbox.add

        def counted(rows: Sequence[NewDelivery], now: float) -> list[int]:
            if threading.get_ident() == self._emitter:
                self.direct += 1
            return add(rows, now)

        adapter.outbox.add = counted  # type: ignore[method-assign]

    def snapshot(self) -> tuple[int, int]:
        """(events written at once, writes refused) so far."""
        return self.direct, self.adapter.write_errors.count


def durable_delivery(
    sink: Sink, server: MotoServer, workdir: Path, args: argparse.Namespace, round_: int
) -> Phase:
    """Delivery only: ``args.messages`` rows already in the outbox; from ``flush()`` to
    its return. A warm-up goes first, so that the workers run and their client has
    connected, as in the raw loop."""
    target = sink.new(f"delivery-{round_}")
    adapter = sink.adapter(
        target,
        workdir / f"{sink.key}-delivery-{round_}.sqlite3",
        args.workers,
        poll_interval=IDLE_POLL,
    )
    counter = CallCounter(adapter.client, sink.operation)
    try:
        emitter = Emitter(source=SOURCE)
        names = subject_names(args.subjects, f"d{round_}")
        _prefill(adapter, list(lifecycle_events(emitter, names, WARM_UP)))
        if not _flush(adapter, server):
            raise BenchError(f"the {sink.adapter_name} warm-up did not finish")
        rows = _prefill(adapter, list(lifecycle_events(emitter, names, args.messages)))
        before = sink.arrived(target)
        with _Meter(server, counter) as meter:
            finished = _flush(adapter, server)
        arrived = _arrived(sink, target, meter, before)
    finally:
        close_quietly(adapter, timeout=5.0)
        sink.drop(target)
    return Phase(
        sink.key,
        DELIVERY,
        round_,
        args.messages,
        meter.seconds,
        arrived,
        meter.calls,
        meter.entries,
        meter.attempts,
        meter.cpu,
        meter.scpu,
        finished=finished,
        body_bytes=sum(sink.payload(r.body) for r in rows) / max(len(rows), 1),
        row_bytes=sum(len(r.body) for r in rows) / max(len(rows), 1),
    )


def end_to_end(
    sink: Sink, server: MotoServer, workdir: Path, args: argparse.Namespace, round_: int
) -> Phase:
    """Emit + deliver: the adapter connected, ``args.messages`` lifecycle events emitted
    back to back; from the first emit until ``flush()`` returns."""
    target = sink.new(f"end-to-end-{round_}")
    adapter = sink.adapter(
        target, workdir / f"{sink.key}-end-to-end-{round_}.sqlite3", args.workers
    )
    counter = CallCounter(adapter.client, sink.operation)
    writes = OutboxWrites(adapter)
    emitter = Emitter(source=SOURCE)
    names = subject_names(args.subjects, f"e{round_}")
    try:
        adapter.connect(emitter)
        warm_up = list(lifecycle_events(emitter, names, WARM_UP))
        if not _flush(adapter, server):
            raise BenchError(f"the {sink.adapter_name} end-to-end warm-up did not finish")
        before = sink.arrived(target)
        direct0, refused0 = writes.snapshot()
        with _Meter(server, counter) as meter:
            for _ in lifecycle_events(emitter, names, args.messages):
                pass
            emitted = time.perf_counter() - meter.t0
            direct, refused = writes.snapshot()
            finished = _flush(adapter, server)
        arrived = _arrived(sink, target, meter, before)
        body = sum(len(_json(e.to_cloudevent())) for e in warm_up) / len(warm_up)
    finally:
        close_quietly(adapter, timeout=5.0)
        sink.drop(target)
    return Phase(
        sink.key,
        END_TO_END,
        round_,
        args.messages,
        meter.seconds,
        arrived,
        meter.calls,
        meter.entries,
        meter.attempts,
        meter.cpu,
        meter.scpu,
        finished=finished,
        body_bytes=body,
        emit_seconds=emitted,
        direct_writes=direct - direct0,
        refused_writes=refused - refused0,
    )


@dataclass
class PathSummary:
    """The phases of one path of one service, pooled over the rounds."""

    service: str
    path: str
    label: str
    phases: list[Phase]

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.phases)

    @property
    def per_second(self) -> float:
        seconds = sum(p.seconds for p in self.phases)
        return self.messages / seconds if seconds > 0 else 0.0

    @property
    def arrived(self) -> int:
        return sum(p.arrived for p in self.phases)

    @property
    def calls(self) -> int:
        return sum(p.calls for p in self.phases)

    @property
    def entries(self) -> int:
        return sum(p.entries for p in self.phases)

    @property
    def attempts(self) -> int:
        return sum(p.attempts for p in self.phases)

    @property
    def complete(self) -> bool:
        """Every message arrived (some twice, maybe: at least once allows it)."""
        return all(p.finished for p in self.phases) and self.arrived >= self.messages

    def cpu_us(self) -> float:
        return sum(p.sender_cpu_s for p in self.phases) / max(self.messages, 1) * 1e6

    def server_cpu_us(self) -> float | None:
        values = [p.server_cpu_s for p in self.phases]
        if any(v is None for v in values):
            return None
        return sum(v for v in values if v is not None) / max(self.messages, 1) * 1e6

    def body_bytes(self) -> float:
        return sum(p.body_bytes for p in self.phases) / max(len(self.phases), 1)

    @property
    def direct_writes(self) -> int:
        return sum(p.direct_writes or 0 for p in self.phases)

    @property
    def refused_writes(self) -> int:
        return sum(p.refused_writes or 0 for p in self.phases)


def labels(sink: Sink) -> dict[str, str]:
    call = "send_message_batch" if sink.key == "sqs" else "put_events"
    return {
        RAW: f"raw boto3 {call}, 10 a call (serial)",
        DELIVERY: f"{sink.adapter_name}, delivery only",
        END_TO_END: f"{sink.adapter_name}, emit + deliver",
    }


def run_deliveries(
    sinks: Sequence[Sink], server: MotoServer, workdir: Path, args: argparse.Namespace
) -> dict[str, list[PathSummary]]:
    """Raw, delivery only and end to end for each service, ``args.rounds`` times; each
    round takes the services one after the other, and the order of the services and of
    the paths rotates from round to round."""
    kinds: list[tuple[str, Callable[[Sink, int], Phase]]] = [
        (RAW, lambda s, r: raw_loop(s, server, args.messages, args.subjects, r)),
        (DELIVERY, lambda s, r: durable_delivery(s, server, workdir, args, r)),
        (END_TO_END, lambda s, r: end_to_end(s, server, workdir, args, r)),
    ]
    phases: dict[str, dict[str, list[Phase]]] = {
        sink.key: {name: [] for name, _ in kinds} for sink in sinks
    }
    for round_ in range(args.rounds):
        _show(f"deliveries, round {round_ + 1}/{args.rounds}")
        first = round_ % len(sinks)
        shift = round_ % len(kinds)
        for sink in [*sinks[first:], *sinks[:first]]:
            for name, measure in kinds[shift:] + kinds[:shift]:
                gc.collect()
                phases[sink.key][name].append(measure(sink, round_))
    return {
        sink.key: [
            PathSummary(sink.key, name, labels(sink)[name], phases[sink.key][name])
            for name, _ in kinds
        ]
        for sink in sinks
    }


# -- emit cost -------------------------------------------------------------------------------------


def _check_no_receivers(where: str) -> None:
    leftovers = {name: len(sig.receivers) for name, sig in SIGNALS.items() if sig.receivers}
    if leftovers:
        raise BenchError(f"{where}: taskevents signals have receivers connected: {leftovers}")


def emit_rounds(
    adapters: dict[str, DurableAdapter | None],
    *,
    rounds: int,
    calls: int,
    subjects: int,
    drain: Sequence[str] = (),
    writes: dict[str, OutboxWrites] | None = None,
) -> tuple[list[EmitCost], dict[str, tuple[int, int, int]]]:
    """Each round times every configuration once (a new ``Emitter``, the configuration's
    adapter connected to it for its turn, new subjects), starting with a different one
    each round. The adapters named in ``drain`` are flushed after their turn (not timed),
    so that their workers do not deliver their backlog during the next configuration's.
    Also returns, per configuration in ``writes``: (events of the timed calls, of them
    written to the outbox at once, writes refused in its turns, warm-up included)."""
    names = list(adapters)
    costs = {name: EmitCost(name) for name in names}
    writes = writes or {}
    ways = dict.fromkeys(writes, (0, 0, 0))
    warm_up = max(50, calls // 10)
    for round_ in range(rounds):
        _show(f"emit cost, round {round_ + 1}/{rounds}")
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            adapter = adapters[name]
            _check_no_receivers(f"before '{name}'")
            gc.collect()
            emitter = Emitter(source=SOURCE)
            chosen = subject_names(subjects, f"c{round_}-{names.index(name)}")
            if adapter is not None:
                adapter.connect(emitter)
            try:
                if name in writes:
                    # Refused writes are counted from the turn's start: one refused during
                    # the warm-up can keep the timed events in memory.
                    refused0 = writes[name].snapshot()[1]
                time_completed(emitter, chosen, warm_up)
                if name in writes:
                    direct0 = writes[name].snapshot()[0]
                samples = time_completed(emitter, chosen, calls)
                if name in writes:
                    direct, refused = writes[name].snapshot()
                    events, direct_sum, refused_sum = ways[name]
                    # Each call emits two events: the start (not timed) and the completion.
                    ways[name] = (
                        events + 2 * calls,
                        direct_sum + direct - direct0,
                        refused_sum + refused - refused0,
                    )
            finally:
                if adapter is not None:
                    adapter.disconnect()
            if adapter is not None and name in drain and not adapter.flush(FLUSH_TIMEOUT):
                raise BenchError(f"'{name}' did not deliver its events within {FLUSH_TIMEOUT:g} s")
            costs[name].samples_ns.extend(samples)
            costs[name].round_p99_us.append(percentile(sorted(samples), 0.99) / 1000.0)
    _check_no_receivers("after the emit cost")
    base = costs[names[0]]
    for cost in costs.values():
        cost.ratio_p50 = cost.at(0.50) / base.at(0.50)
        cost.ratio_p99 = cost.at(0.99) / base.at(0.99)
    return [costs[name] for name in names], ways


# -- reporting ---------------------------------------------------------------------------------


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
        server_cpu = summary.server_cpu_us()
        rows.append(
            (
                summary.label,
                f"{summary.messages:,}",
                f"{summary.arrived:,}"
                + ("" if summary.complete else " !")
                + (" +" if summary.arrived > summary.messages else ""),
                f"{summary.calls:,}",
                f"{summary.entries / summary.calls:.1f}" if summary.calls else "-",
                f"{summary.per_second:,.0f}",
                f"{ratio:.2f}{TIMES}",
                "-" if summary is raw else "-".join(f"{r:.2f}" for r in (min(ratios), max(ratios))),
                f"{summary.cpu_us():.0f}",
                "-" if server_cpu is None else f"{server_cpu:.0f}",
            )
        )
    header = (
        "path",
        "messages",
        "arrived",
        "calls",
        "per call",
        "per second",
        "vs raw",
        "by round",
        "sender CPU µs/msg",
        "moto CPU µs/msg",
    )
    return table(header, rows, (False, *([True] * 9)))


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    names = ("taskevents", "boto3", "botocore", "moto", "werkzeug")
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "versions": {name: package_version(name) for name in names},
    }


# -- the run -------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="aws_bench.py",
        description="SQS and EventBridge adapters against a serial boto3 loop (moto's "
        "server), and Emitter.completed() cost with the SQS adapter attached.",
    )
    parser.add_argument(
        "--messages",
        type=int,
        help=f"messages per path, service and round (default {DEFAULT_MESSAGES:,})",
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
        "--services",
        default=",".join(SERVICES),
        help="the services the deliveries go to, comma-separated (default "
        + ",".join(SERVICES)
        + "): "
        + "; ".join(f"{name}: {text}" for name, text in SERVICES.items()),
    )
    parser.add_argument(
        "--subjects",
        type=int,
        default=DEFAULT_SUBJECTS,
        help=f"subjects the events are spread over (default {DEFAULT_SUBJECTS})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"the adapters' worker threads (default {DEFAULT_WORKERS}, the adapters' own)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny sizes for a smoke test ({QUICK_MESSAGES} messages {TIMES} "
        f"{QUICK_ROUNDS} round, {QUICK_EMIT_CALLS} calls {TIMES} {QUICK_EMIT_ROUNDS} round); "
        "explicit options still win",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    defaults = {
        "messages": (DEFAULT_MESSAGES, QUICK_MESSAGES),
        "rounds": (DEFAULT_ROUNDS, QUICK_ROUNDS),
        "emit_calls": (DEFAULT_EMIT_CALLS, QUICK_EMIT_CALLS),
        "emit_rounds": (DEFAULT_EMIT_ROUNDS, QUICK_EMIT_ROUNDS),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("subjects", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    chosen = [name.strip() for name in args.services.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SERVICES]
    if unknown or not chosen:
        parser.error(
            f"--services: {', '.join(unknown) or 'none given'}; choose from " + ", ".join(SERVICES)
        )
    args.services = list(dict.fromkeys(chosen))
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _show(message: str) -> None:
    print(f"  ... {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _no_local_aws(workdir: Path) -> Iterator[None]:
    """No AWS setting of this machine counts while the benchmark runs: no shared config
    or credentials file, no instance metadata, no profile or region from the
    environment (the clients get made-up credentials and a region of their own)."""
    values = {
        "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    removed = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")
    saved = {name: os.environ.get(name) for name in (*values, *removed)}
    os.environ.update(values)
    for name in removed:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class Cleanup:
    """What was left when the run ended: it must be nothing."""

    threads: list[str] = field(default_factory=list)
    #: taskevents threads of the process, not of an adapter (started once, shared).
    shared_threads: list[str] = field(default_factory=list)
    server_status: int | None = None
    server_alive: bool = False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    _MADE.clear()
    env = environment()
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    print(
        f"aws bench: Python {env['python']} on {env['platform']} ({env['cpu_count']} CPUs); "
        f"{versions}; SQLite {env['sqlite']}; load average {load_average()}",
        flush=True,
    )
    print(
        f"deliveries: {args.messages:,} messages per path {TIMES} {args.rounds} round(s) to "
        f"each service ({', '.join(args.services)}), {args.subjects} subjects, "
        f"{args.workers} workers; emit cost: {args.emit_calls:,} calls "
        f"{TIMES} {args.emit_rounds} round(s) per configuration"
        + (" (quick: numbers are not meaningful)" if args.quick else ""),
        flush=True,
    )
    started = time.perf_counter()
    cleanup = Cleanup()
    with contextlib.ExitStack() as stack:
        if threading.current_thread() is threading.main_thread():
            # SIGTERM cleans up as Ctrl+C does (server stopped, temporary files removed).
            previous = signal.signal(signal.SIGTERM, _interrupt)
            stack.callback(signal.signal, signal.SIGTERM, previous)
        workdir = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="taskevents-aws-bench-"))
        )
        stack.enter_context(_no_local_aws(workdir))
        try:
            summaries, costs, ways = _measure(stack, workdir, args, cleanup)
        except KeyboardInterrupt:
            print("interrupted; cleaning up", file=sys.stderr, flush=True)
            return INTERRUPTED
        except BenchError as exc:
            print(f"aws bench: {exc}", file=sys.stderr, flush=True)
            return 1
    workers = [t for adapter in _MADE for t in adapter_threads(adapter)]
    cleanup.threads = [t.name for t in workers]
    cleanup.shared_threads = [t.name for t in adapter_threads() if t not in workers]
    wall = time.perf_counter() - started
    _report(args, env, summaries, costs, ways, cleanup, wall)
    return 0


def _measure(
    stack: contextlib.ExitStack, workdir: Path, args: argparse.Namespace, cleanup: Cleanup
) -> tuple[dict[str, list[PathSummary]], list[EmitCost], dict[str, tuple[int, int, int]]]:
    _show("starting moto's server")
    server = MotoServer(workdir)

    def stop_server() -> None:
        cleanup.server_status = server.stop()
        cleanup.server_alive = server.process.poll() is None

    stack.callback(stop_server)
    sinks = [SINKS[name](server) for name in args.services]
    for sink in sinks:
        stack.callback(sink.close)
    summaries = run_deliveries(sinks, server, workdir, args)

    port = closed_port()
    unreachable = made(
        SQSAdapter(
            f"http://127.0.0.1:{port}/{ACCOUNT}/{SINK}unreachable",
            session=session(),
            endpoint_url=f"http://127.0.0.1:{port}",
            outbox=str(workdir / "unreachable.sqlite3"),
            workers=args.workers,
        )
    )
    stack.callback(close_quietly, unreachable)
    live_sink = SQSSink(server)
    stack.callback(live_sink.close)
    live = live_sink.adapter(live_sink.new("emit-live"), workdir / "live.sqlite3", args.workers)
    # Closed first (last in, first out), while the server still runs: what it has not
    # delivered yet goes before it closes.
    stack.callback(close_quietly, live, 5.0)
    configurations: dict[str, DurableAdapter | None] = {
        NO_ADAPTER: None,
        UNREACHABLE: unreachable,
        LIVE: live,
    }
    writes = {UNREACHABLE: OutboxWrites(unreachable), LIVE: OutboxWrites(live)}
    _show("warming the emit cost's adapters up")
    warm_up(live, lambda: live.flush(FLUSH_TIMEOUT))
    warm_up(unreachable, lambda: _tried(unreachable, 10.0))
    return summaries, *emit_rounds(
        configurations,
        rounds=args.emit_rounds,
        calls=args.emit_calls,
        subjects=args.subjects,
        drain=[LIVE],
        writes=writes,
    )


def _share(part: int, whole: int) -> str:
    return f"{part / whole * 100:.1f} %" if whole else "-"


def _writes(count: int) -> str:
    return f"{count:,} write" + ("" if count == 1 else "s")


def _ways_dict(way: tuple[int, int, int] | None) -> dict[str, int | None]:
    events, direct, refused = way if way is not None else (None, None, None)
    return {
        "timed_events": events,
        "events_written_at_once": direct,
        "refused_outbox_writes": refused,
    }


def warm_up(adapter: DurableAdapter, settle: Callable[[], object]) -> None:
    """A few events through ``adapter`` before anything is timed: its client's first
    call loads what botocore loads lazily (tens of ms of CPU in a worker thread, which
    would land in the timed emits of the first round)."""
    emitter = Emitter(source=SOURCE)
    adapter.connect(emitter)
    try:
        for _ in lifecycle_events(emitter, subject_names(2, "warm-up"), WARM_UP):
            pass
    finally:
        adapter.disconnect()
    settle()


def _tried(adapter: DurableAdapter, seconds: float) -> bool:
    """Wait until ``adapter`` has failed an attempt (its target is unreachable)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if adapter.stats["retries"]:
            return True
        time.sleep(0.05)
    return False


def _delivery_section(service: str, summaries: Sequence[PathSummary]) -> None:
    raw, durable, e2e = summaries
    print()
    print(f"## {SERVICES[service]} (moto's server in a subprocess)")
    print()
    print(delivery_table(summaries))
    print()
    ordered = sorted(n for p in raw.phases for n in p.call_ns)
    emit_us = sum(p.emit_seconds or 0 for p in e2e.phases) / max(e2e.messages, 1) * 1e6
    rows = [p.row_bytes for p in durable.phases if p.row_bytes is not None]
    print(
        f"raw loop: one call of 10 p50 {percentile(ordered, 0.5) / 1e6:.2f} ms, "
        f"p99 {percentile(ordered, 0.99) / 1e6:.2f} ms; end to end: the emit loop took "
        f"{emit_us:.0f} µs per event while the workers delivered"
    )
    print(
        f"message bodies (CloudEvents JSON): raw {raw.body_bytes():.0f} bytes, adapter "
        f"{durable.body_bytes():.0f} bytes on average; an outbox row holds "
        f"{sum(rows) / max(len(rows), 1):.0f} bytes"
    )
    print(
        f"emit + deliver: {_share(e2e.direct_writes, e2e.messages)} of the events written "
        f"to the outbox at once; {_writes(e2e.refused_writes)} refused (OutboxBusy), after "
        "which the rows waited in memory until a worker wrote them"
    )
    for summary in summaries:
        if summary.complete and summary.arrived == summary.messages:
            continue
        print(
            f"{'NOTE' if summary.complete else 'WARNING'} {summary.label}: "
            f"{summary.arrived:,} of {summary.messages:,} arrived"
            + ("" if all(p.finished for p in summary.phases) else " (flush timed out)")
            + f"; {summary.entries:,} entries sent in {summary.calls:,} calls, "
            f"{summary.attempts:,} HTTP requests"
        )


def _report(
    args: argparse.Namespace,
    env: dict[str, Any],
    by_service: dict[str, list[PathSummary]],
    costs: Sequence[EmitCost],
    ways: dict[str, tuple[int, int, int]],
    cleanup: Cleanup,
    wall: float,
) -> None:
    for service, summaries in by_service.items():
        _delivery_section(service, summaries)
    print()
    print(
        f"## Emitter.completed() per call, {args.subjects} subjects, each task started "
        "(not timed) just before; garbage collector off while timed"
    )
    print()
    print(emit_table(costs))
    print()
    print(
        "events of the timed calls written to the outbox at once (the rest waited in "
        "memory after a write the outbox refused, in the turn's warm-up or timed calls): "
        + "; ".join(
            f"{name} {_share(direct, events)} ({_writes(refused)} refused)"
            for name, (events, direct, refused) in ways.items()
        )
    )
    print()
    checks = []
    for raw, durable, _e2e in by_service.values():
        ratio = durable.per_second / raw.per_second if raw.per_second else 0.0
        checks.append(
            (
                f"{durable.label} {ratio:.2f}{TIMES} the serial boto3 loop "
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
    server = (
        "still running"
        if cleanup.server_alive
        else f"stopped (exit status {cleanup.server_status})"
    )
    print(
        f"clean-up: {len(cleanup.threads)} adapter worker threads left"
        + (f" ({', '.join(cleanup.threads)})" if cleanup.threads else "")
        + f"; moto's server {server}"
        + (
            "; taskevents threads of the process still running (started once, shared by "
            f"every adapter): {', '.join(cleanup.shared_threads)}"
            if cleanup.shared_threads
            else ""
        )
    )
    print(f"wall time: {wall:.1f} s; load average {load_average()}")

    if args.json:
        document = {
            "benchmark": "aws_bench",
            "quick": args.quick,
            "settings": {
                "messages": args.messages,
                "rounds": args.rounds,
                "emit_calls": args.emit_calls,
                "emit_rounds": args.emit_rounds,
                "subjects": args.subjects,
                "workers": args.workers,
                "services": {name: SERVICES[name] for name in args.services},
                "batch": MAX_BATCH,
            },
            "environment": env,
            "deliveries": [
                {
                    "service": service,
                    "path": s.path,
                    "label": s.label,
                    "messages": s.messages,
                    "arrived": s.arrived,
                    "calls": s.calls,
                    "http_requests": s.attempts,
                    "entries_per_call": s.entries / s.calls if s.calls else None,
                    "per_second": s.per_second,
                    "vs_raw": s.per_second / summaries[0].per_second
                    if summaries[0].per_second
                    else None,
                    "sender_cpu_us_per_message": s.cpu_us(),
                    "server_cpu_us_per_message": s.server_cpu_us(),
                    "events_written_at_once": s.direct_writes if s.path == END_TO_END else None,
                    "refused_outbox_writes": s.refused_writes if s.path == END_TO_END else None,
                    "phases": [p.to_dict() for p in s.phases],
                }
                for service, summaries in by_service.items()
                for s in summaries
            ],
            "emit_cost": [{**c.to_dict(), **_ways_dict(ways.get(c.name))} for c in costs],
            "targets": [{"check": text, "passed": passed} for text, passed in checks],
            "cleanup": {
                "adapter_threads_left": cleanup.threads,
                "shared_threads_running": cleanup.shared_threads,
                "server_exit_status": cleanup.server_status,
                "server_still_running": cleanup.server_alive,
            },
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
