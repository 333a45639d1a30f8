"""The worker process of the Redis benchmark (``benchmarks/redis_bench.py``): it only
publishes, as a task worker does (``Emitter(state=RedisStateStore(url, prefix=...))``,
no adapter, no bridge, no web server, no gevent), and it times the store's ``record``.

Driven by JSON lines on stdin, answering with JSON lines on stdout (see
:class:`harness.redis_control.Worker`):

``{"cmd": "lifecycle", "id": ID, "subject": S, "events": N, "rate": R}``
    paced lifecycle events on S (:func:`harness.redis_common.paced_lifecycle`).
``{"cmd": "fanout", "id": ID, "subjects": [...], "tasks": K, "progress": P, "rate": R}``
    K tasks on every subject: for each task, ``started`` on every subject in turn, then
    P rounds of ``progress`` on every subject, then ``completed`` on every subject (the
    last task's with ``last: true``); R events/s for all subjects together, 0: back to
    back.
``{"cmd": "store_rate", "id": ID, "store": "memory"|"redis", "threads": T, "calls": N}``
    T threads, each with a task running on a subject of its own, make N
    ``emitter.progress()`` calls each (after ``N / 10`` untimed ones), all at once:
    events/s, and the calls' p50/p99 with one thread. The Redis store has the prefix
    ``{prefix}-store``, which no web process's bridge reads.
``{"cmd": "quit"}``
    exit (so does the end of stdin, or the orchestrator's death).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from .redis_common import call_stats, paced_lifecycle

__all__ = ["LAUNCHER", "main"]

#: What the worker subprocess runs (``python -c LAUNCHER BENCHMARKS_DIR ARGS...``).
LAUNCHER = """\
import sys
sys.path.insert(0, sys.argv[1])
from harness.redis_worker import main
raise SystemExit(main(sys.argv[2:]))
"""

SOURCE = "benchmarks/redis_bench worker"


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def fanout(
    emitter: Any, subjects: Sequence[str], tasks: int, progress: int, rate: float
) -> dict[str, Any]:
    clock = time.perf_counter
    wall = time.time
    steps = [("started", 0)] + [("progress", n) for n in range(1, progress + 1)]
    steps.append(("completed", 0))
    total = tasks * len(steps) * len(subjects)
    calls: list[float] = []
    index = 0
    cpu = time.process_time()
    start = clock()
    for task in range(tasks):
        last = task == tasks - 1
        for kind, step in steps:
            for subject in subjects:
                if rate > 0:
                    delay = start + index / rate - clock()
                    if delay > 0:
                        time.sleep(delay)
                index += 1
                before = clock()
                sent_ms = wall() * 1000.0
                if kind == "started":
                    emitter.started(subject, "bench", sent_ms=sent_ms)
                elif kind == "progress":
                    emitter.progress(subject, step * 100.0 / (progress + 1), sent_ms=sent_ms)
                else:
                    emitter.completed(subject, {"sent_ms": sent_ms, "last": last})
                calls.append(clock() - before)
    return {
        "emitted": total,
        "lifecycle_per_subject": 2 * tasks,
        "progress_per_subject": progress * tasks,
        "loop_s": clock() - start,
        "cpu_s": time.process_time() - cpu,
        **call_stats(calls),
    }


def store_rate(url: str, prefix: str, store: str, threads: int, calls: int) -> dict[str, Any]:
    from taskevents import Emitter
    from taskevents.redis import RedisStateStore

    redis_store = RedisStateStore(url, prefix=f"{prefix}-store") if store == "redis" else None
    emitter = Emitter(source=SOURCE, state=redis_store) if redis_store else Emitter(source=SOURCE)
    run = os.urandom(4).hex()
    barrier = threading.Barrier(threads + 1)
    spans: list[tuple[float, float]] = []
    samples: list[float] = []
    errors: list[str] = []
    clock = time.perf_counter

    def work(number: int) -> None:
        subject = f"rate-{run}-{number}"
        try:
            emitter.started(subject, "bench")
            progress = emitter.progress
            for index in range(max(10, calls // 10)):
                progress(subject, index % 101)
            percents = [index % 101 for index in range(calls)]
            barrier.wait(60)
            if threads == 1:
                own: list[float] = []
                t0 = clock()
                for percent in percents:
                    before = clock()
                    progress(subject, percent)
                    own.append(clock() - before)
                t1 = clock()
                samples.extend(own)
            else:
                t0 = clock()
                for percent in percents:
                    progress(subject, percent)
                t1 = clock()
            spans.append((t0, t1))
            emitter.completed(subject)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            barrier.abort()

    workers = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(threads)]
    for thread in workers:
        thread.start()
    cpu = time.process_time()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(120)
    for thread in workers:
        thread.join(600)
    cpu = time.process_time() - cpu
    for subject_number in range(threads):
        if redis_store is not None:
            redis_store.forget(f"rate-{run}-{subject_number}")
    if redis_store is not None:
        redis_store.close()
    if errors or len(spans) != threads:
        return {"error": "; ".join(errors) or "a thread did not finish"}
    wall = max(t1 for _, t1 in spans) - min(t0 for t0, _ in spans)
    return {
        "events": threads * calls,
        "wall_s": wall,
        "events_per_s": threads * calls / wall if wall > 0 else None,
        "cpu_s": cpu,
        **call_stats(samples),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness.redis_worker")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--redis-prefix", required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)

    from taskevents import Emitter
    from taskevents.redis import RedisStateStore

    def watchdog() -> None:
        while os.getppid() == args.parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()
    store = RedisStateStore(args.redis_url, prefix=args.redis_prefix)
    emitter = Emitter(source=SOURCE, state=store)
    store.last_seq("rb-ping")  # connect now, fail now
    _send({"ready": True, "pid": os.getpid()})
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            name = command.get("cmd")
            if name == "quit":
                break
            try:
                if name == "lifecycle":
                    result = paced_lifecycle(
                        emitter,
                        str(command["subject"]),
                        int(command["events"]),
                        float(command["rate"]),
                        time.sleep,
                    )
                elif name == "fanout":
                    result = fanout(
                        emitter,
                        [str(s) for s in command["subjects"]],
                        int(command["tasks"]),
                        int(command["progress"]),
                        float(command["rate"]),
                    )
                elif name == "store_rate":
                    result = store_rate(
                        args.redis_url,
                        args.redis_prefix,
                        str(command["store"]),
                        int(command["threads"]),
                        int(command["calls"]),
                    )
                else:
                    result = {"error": f"unknown command {name!r}"}
            except Exception as exc:
                result = {"error": f"{type(exc).__name__}: {exc}"}
            _send({"done": command.get("id"), **result})
    finally:
        store.close()
    return 0
