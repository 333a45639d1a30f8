"""What the Redis benchmark's processes share (``benchmarks/redis_bench.py``): subject
names, defaults, the quick sizes, the target, and the paced lifecycle loop that both the
web process (its own emitter) and the worker process run.

Imports nothing from the rest of the harness but :mod:`harness.config`: the web process
imports it after gevent's ``monkey.patch_all()``, the worker without gevent.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

#: The subject the latency phases emit on, and the fan-out's subjects.
LATENCY_SUBJECT = "rb_lat"
FANOUT_PREFIX = "rb_fan_"

#: The Redis server: ``--redis-url``, else this variable (the tests' own), else local.
REDIS_URL_ENV = "TASKEVENTS_TEST_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: Latency: clients, events per phase, events/s, rounds (each round: one phase per path).
DEFAULT_LATENCY_CLIENTS = 10
DEFAULT_LATENCY_EVENTS = 100
DEFAULT_LATENCY_RATE = 50.0
DEFAULT_ROUNDS = 6
WARMUP_EVENTS = 20
#: Store throughput: progress calls per thread per round, thread counts, rounds.
DEFAULT_STORE_CALLS = 5_000
DEFAULT_STORE_THREADS = (1, 4)
DEFAULT_STORE_ROUNDS = 3
#: Fan-out: clients, subjects (each client subscribes to one), tasks per subject,
#: progress events per task, the worker's event rates (events/s for all subjects
#: together; 0: back to back).
DEFAULT_FANOUT_CLIENTS = 1_000
DEFAULT_FANOUT_SUBJECTS = 100
DEFAULT_FANOUT_TASKS = 10
DEFAULT_FANOUT_PROGRESS = 3
DEFAULT_FANOUT_RATES = (1_000.0, 0.0)
#: The fan-out's sockets connect (and subscribe) at most this many at a time. All 1,000 at
#: once make the web process read up to 1,000 snapshots from Redis at the same moment,
#: and the store's connection pool (redis-py's default: 100 connections, not blocking)
#: then refuses some of them (see benchmarks/README.md); 0 connects them all at once.
DEFAULT_CONNECT_CONCURRENCY = 50

QUICK: dict[str, Any] = {
    "rounds": 2,
    "latency_events": 20,
    "store_calls": 300,
    "store_rounds": 1,
    "fanout_tasks": 2,
    "fanout_progress": 1,
}

#: The issue's targets: what Redis may add at p50 (ms); the fan-out loses nothing.
TARGET_ADDED_P50_MS = 2.0

#: Sockets the web process and the load generator must be able to open: the fan-out's
#: clients, with room for everything else.
NOFILE_WANTED = 8_192


def fanout_subjects(count: int) -> list[str]:
    return [f"{FANOUT_PREFIX}{index:03d}" for index in range(count)]


def raise_nofile(wanted: int = NOFILE_WANTED) -> int:
    """Raise this process's soft limit of open files towards ``wanted`` (within the hard
    limit; children inherit it). Returns the soft limit in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return int(soft)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values (as loadgen.mjs computes it)."""
    if not sorted_values:
        return None
    rank = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


def call_stats(calls: list[float]) -> dict[str, Any]:
    """p50 and p99 of emit-call durations (seconds in), in µs."""
    ordered = sorted(calls)
    p50, p99 = percentile(ordered, 0.5), percentile(ordered, 0.99)
    return {
        "call_us_p50": None if p50 is None else p50 * 1e6,
        "call_us_p99": None if p99 is None else p99 * 1e6,
        "call_us_mean": statistics.fmean(ordered) * 1e6 if ordered else None,
    }


def paced_lifecycle(
    emitter: Any, subject: str, events: int, rate: float, sleep: Callable[[float], None]
) -> dict[str, Any]:
    """``events`` lifecycle events on ``subject`` (started, completed, started, ...) at
    ``rate`` per second, each stamped with ``sent_ms`` (wall-clock milliseconds) just
    before the emit call; the last completion carries ``last: true``. ``sleep`` is the
    process's own (gevent's in the web process): it is called before every event, so
    the loop always yields."""
    clock = time.perf_counter
    wall = time.time
    calls: list[float] = []
    cpu = time.process_time()
    start = clock()
    for index in range(events):
        delay = start + index / rate - clock() if rate > 0 else 0.0
        sleep(delay if delay > 0 else 0)
        before = clock()
        sent_ms = wall() * 1000.0
        if index % 2 == 0:
            emitter.started(subject, "bench", sent_ms=sent_ms)
        else:
            emitter.completed(subject, {"sent_ms": sent_ms, "last": index == events - 1})
        calls.append(clock() - before)
    return {
        "emitted": events,
        "loop_s": clock() - start,
        "cpu_s": time.process_time() - cpu,
        "pid": os.getpid(),
        **call_stats(calls),
    }
