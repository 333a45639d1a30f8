"""Paths, names, defaults, targets and time limits shared by the harness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: ``benchmarks/``, where the scenario scripts and ``loadgen.mjs`` live.
HERE = Path(__file__).resolve().parent.parent
ROOT = HERE.parent
LOADGEN = HERE / "loadgen.mjs"

MODES = ("threading", "gevent")
TE_SUBJECT = "bench_te"
RAW_SUBJECT = "bench_rw"
FLOOD_SUBJECT = "bench_fl"
SUBJECTS = (TE_SUBJECT, RAW_SUBJECT, FLOOD_SUBJECT)
TASKEVENTS = "taskevents"
RAW = "raw"

DEFAULT_CLIENTS = (1, 10, 50)
#: 100 events/s to 50 clients is 5,000 deliveries/s: about half of what the threading
#: server manages when events are paced (its CPU cost per paced delivery is 70-100 µs on
#: a 2-core VM); at 200 events/s it is near saturation (p99 in the hundreds of ms).
DEFAULT_RATE = 100.0
DEFAULT_SECONDS = 2.5
DEFAULT_ROUNDS = 4
DEFAULT_BURST_DELIVERIES = 60_000
MAX_BURST_EVENTS = 10_000
DEFAULT_FLOOD_EVENTS = 100_000
DEFAULT_FLOOD_CLIENTS = 10
DEFAULT_FLOOD_YIELD_EVERY = 1_000
#: The gevent flood's second loop sleeps this long every --flood-yield-every calls: what a
#: task doing some I/O between progress reports does. (sleep(0) is not enough: gevent then
#: runs ready greenlets but hardly ever its timers, and the adapter's worker waits on one.)
YIELD_SLEEP = 0.001
#: Packets that may wait for one client before the adapter's backlog guard drops it: the
#: benchmark server raises the guard's limit (1,000 by default) to this, since a burst
#: queues up to MAX_BURST_EVENTS messages per client by design (it measures capacity,
#: not backpressure).
BENCH_MAX_BACKLOG = 1_000_000
QUICK: dict[str, Any] = {
    "clients": (1, 3),
    "rate": 100.0,
    "seconds": 0.4,
    "rounds": 1,
    "burst_deliveries": 600,
    "flood_events": 3_000,
    "flood_clients": 3,
    "flood_yield_every": 300,
}

#: The project's targets.
TARGET_RATIO = 0.9
TARGET_PROGRESS_PER_S = 10.0
TARGET_LIFECYCLE_MS = 50.0

TIMES = "\N{MULTIPLICATION SIGN}"
MICRO = "\N{MICRO SIGN}"

#: Upper bounds of every wait (seconds).
SERVER_START_TIMEOUT = 60.0
LOADGEN_CONNECT_TIMEOUT = 60.0
PHASE_SLACK = 60.0
SERVER_MAX_SECONDS = 1_800.0


class BenchError(Exception):
    """Something in the harness went wrong (not a slow result)."""
