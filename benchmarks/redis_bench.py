"""Scale-out on Redis: end-to-end latency from a worker process's emit, through Redis, to
Socket.IO clients of a gevent web process, against the same path in one process without
Redis (same run, interleaved rounds); events/s through ``RedisStateStore``; and 1,000
clients on one gevent web process, each subscribed to one of 100 subjects, while a
worker runs tasks on them (delivered/s, latency, server CPU per delivery, lost).

    .venv/bin/python benchmarks/redis_bench.py            # full run, about 2 minutes
    .venv/bin/python benchmarks/redis_bench.py --quick    # smoke test, about 30 s
    .venv/bin/python benchmarks/redis_bench.py --json redis.json

Needs a Redis server (``--redis-url``, else ``$TASKEVENTS_TEST_REDIS_URL``, else
redis://127.0.0.1:6379/0), Node and ``node_modules/socket.io-client``, and the
``bench`` and ``redis`` extras. Every run uses its own key prefix and deletes its keys at
the end. Speed is reported, never asserted: the exit code is 0 whatever the numbers are
(see ``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.cli import number_list, quick_picker
from harness.config import MICRO, TIMES, BenchError
from harness.control import NODE_NEEDED, have_node
from harness.machine import write_json
from harness.redis_common import (
    DEFAULT_CONNECT_CONCURRENCY,
    DEFAULT_FANOUT_CLIENTS,
    DEFAULT_FANOUT_PROGRESS,
    DEFAULT_FANOUT_RATES,
    DEFAULT_FANOUT_SUBJECTS,
    DEFAULT_FANOUT_TASKS,
    DEFAULT_LATENCY_CLIENTS,
    DEFAULT_LATENCY_EVENTS,
    DEFAULT_LATENCY_RATE,
    DEFAULT_REDIS_URL,
    DEFAULT_ROUNDS,
    DEFAULT_STORE_CALLS,
    DEFAULT_STORE_ROUNDS,
    DEFAULT_STORE_THREADS,
    LATENCY_SUBJECT,
    QUICK,
    REDIS_URL_ENV,
    TARGET_ADDED_P50_MS,
    fanout_subjects,
    raise_nofile,
)
from harness.redis_control import RedisInfo, SpreadLoadGen, WebServer, Worker, delete_keys
from harness.redis_measure import (
    LATENCY_PATHS,
    MEMORY,
    REDIS_LOCAL,
    REDIS_WORKER,
    FanoutRow,
    LatencyRow,
    Settings,
    StoreRow,
    median_or_none,
    run_fanout,
    run_latency,
    run_store_rates,
)
from harness.report import (
    begin,
    environment,
    finish,
    format_ms,
    format_number,
    format_table,
    show_progress,
    verdict,
)

__all__ = ["main"]


# -- options --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="redis_bench.py",
        description="Scale-out on Redis: a worker's emit through Redis to Socket.IO "
        "clients against the same path in one process, events/s through RedisStateStore, "
        "and 1,000 clients on one gevent web process.",
    )
    add = parser.add_argument
    add("--redis-url", default=None, help=f"default ${REDIS_URL_ENV}, else {DEFAULT_REDIS_URL}")
    # The sizes: (option, type, help), in the order --help lists them.
    sizes: tuple[tuple[str, Any, str], ...] = (
        ("--rounds", int, f"latency rounds, one phase per path (default {DEFAULT_ROUNDS})"),
        ("--latency-clients", int, f"default {DEFAULT_LATENCY_CLIENTS}"),
        ("--latency-events", int, f"per phase (default {DEFAULT_LATENCY_EVENTS})"),
        ("--rate", float, f"latency events/s (default {DEFAULT_LATENCY_RATE:g})"),
        ("--store-calls", int, f"per thread and round (default {DEFAULT_STORE_CALLS:,})"),
        (
            "--store-threads",
            number_list(int, 0),
            f"thread counts (default {','.join(map(str, DEFAULT_STORE_THREADS))})",
        ),
        ("--store-rounds", int, f"default {DEFAULT_STORE_ROUNDS}"),
        ("--fanout-clients", int, f"default {DEFAULT_FANOUT_CLIENTS:,}"),
        ("--fanout-subjects", int, f"default {DEFAULT_FANOUT_SUBJECTS}"),
        ("--fanout-tasks", int, f"tasks per subject (default {DEFAULT_FANOUT_TASKS})"),
        ("--fanout-progress", int, f"progress events per task (default {DEFAULT_FANOUT_PROGRESS})"),
        (
            "--fanout-rates",
            number_list(float, 0),
            "the worker's events/s, one fan-out run each; 0: back to back (default "
            f"{','.join(f'{r:g}' for r in DEFAULT_FANOUT_RATES)})",
        ),
        (
            "--connect-concurrency",
            int,
            "fan-out sockets connecting at a time; 0: all at once (default "
            f"{DEFAULT_CONNECT_CONCURRENCY})",
        ),
    )
    for option, kind, text in sizes:
        add(option, type=kind, help=text)
    add("--tcp-nodelay", action="store_true", help="TCP_NODELAY on the web processes' sockets")
    add(
        "--quick",
        action="store_true",
        help="small sizes for a smoke test (the fan-out keeps its 1,000 clients); "
        "explicit options win",
    )
    add("--logs", metavar="DIR", help="keep the web processes' logs in DIR (default: dropped)")
    add("--node", default=None, help="the node executable (default: on PATH)")
    add("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    pick = quick_picker(args, QUICK)
    settings = Settings(
        rounds=int(pick("rounds", DEFAULT_ROUNDS)),
        latency_clients=int(pick("latency_clients", DEFAULT_LATENCY_CLIENTS)),
        latency_events=int(pick("latency_events", DEFAULT_LATENCY_EVENTS)),
        rate=float(pick("rate", DEFAULT_LATENCY_RATE)),
        store_calls=int(pick("store_calls", DEFAULT_STORE_CALLS)),
        store_threads=list(pick("store_threads", DEFAULT_STORE_THREADS)),
        store_rounds=int(pick("store_rounds", DEFAULT_STORE_ROUNDS)),
        fanout_clients=int(pick("fanout_clients", DEFAULT_FANOUT_CLIENTS)),
        fanout_subjects=int(pick("fanout_subjects", DEFAULT_FANOUT_SUBJECTS)),
        fanout_tasks=int(pick("fanout_tasks", DEFAULT_FANOUT_TASKS)),
        fanout_progress=int(pick("fanout_progress", DEFAULT_FANOUT_PROGRESS)),
        fanout_rates=list(pick("fanout_rates", DEFAULT_FANOUT_RATES)),
        connect_concurrency=int(pick("connect_concurrency", DEFAULT_CONNECT_CONCURRENCY)),
        tcp_nodelay=bool(args.tcp_nodelay),
        quick=bool(args.quick),
    )
    if settings.latency_events % 2:
        settings.latency_events += 1  # started/completed pairs
    if min(settings.rounds, settings.latency_clients, settings.latency_events) < 1:
        parser.error("--rounds, --latency-clients and --latency-events must be >= 1")
    if settings.rate <= 0:
        parser.error("--rate must be > 0")
    if min(settings.store_calls, settings.store_rounds, *settings.store_threads) < 1:
        parser.error("--store-calls, --store-rounds and --store-threads must be >= 1")
    if min(settings.fanout_clients, settings.fanout_subjects, settings.fanout_tasks) < 1:
        parser.error("--fanout-clients, --fanout-subjects and --fanout-tasks must be >= 1")
    if settings.fanout_progress < 0 or settings.connect_concurrency < 0:
        parser.error("--fanout-progress and --connect-concurrency must be >= 0")
    if settings.fanout_subjects > 1000 or settings.fanout_subjects > settings.fanout_clients:
        parser.error("--fanout-subjects must be at most 1,000 and at most --fanout-clients")
    return settings, args


# -- formatting -----------------------------------------------------------------------


def _span(values: Sequence[float], fmt: Any = format_ms) -> str:
    return f"{fmt(min(values))}-{fmt(max(values))}" if values else "-"


def latency_table(rows: Sequence[LatencyRow]) -> str:
    header = (
        "path",
        "emitting process",
        "store",
        "clients",
        "events",
        "deliveries",
        "lost",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "p50 by round",
        f"emit call {MICRO}s",
        f"web CPU {MICRO}s/delivery",
        f"worker CPU {MICRO}s/event",
        f"Redis CPU {MICRO}s/event",
    )
    cells = []
    for row in rows:
        lat = row.latency
        cells.append(
            (
                row.path,
                row.emitter,
                row.store,
                str(row.clients),
                f"{row.emitted:,}",
                f"{row.received:,}",
                str(row.lost),
                format_ms(lat.get("p50_ms")),
                format_ms(lat.get("p90_ms")),
                format_ms(lat.get("p99_ms")),
                format_ms(lat.get("max_ms")),
                _span(row.round_p50),
                format_number(median_or_none(row.call_us_p50), 1),
                format_number(row.per_delivery_us(row.web_cpu_s), 1),
                format_number(row.per_event_us(row.worker_cpu_s), 1)
                if row.path == REDIS_WORKER
                else "-",
                format_number(row.per_event_us(row.redis_cpu_s), 1)
                if row.store == "Redis"
                else "-",
            )
        )
    right = (False, False, False, *([True] * 13))
    return format_table(header, cells, right)


def _compare(rows: dict[str, LatencyRow], ours: str, base: str) -> dict[str, Any]:
    a, b = rows[ours].latency, rows[base].latency
    result: dict[str, Any] = {"path": ours, "against": base}
    for q in ("p50", "p99"):
        x, y = a.get(f"{q}_ms"), b.get(f"{q}_ms")
        result[f"{q}_added_ms"] = None if x is None or y is None else x - y
        result[f"{q}_ratio"] = None if x is None or not y else x / y
    pairs = zip(rows[ours].round_p50, rows[base].round_p50, strict=False)
    result["p50_added_by_round_ms"] = [x - y for x, y in pairs]
    return result


def _comparison_line(comparison: dict[str, Any]) -> str:
    def part(q: str) -> str:
        added, ratio = comparison[f"{q}_added_ms"], comparison[f"{q}_ratio"]
        if added is None:
            return f"{q} -"
        return f"{q} {added:+.2f} ms ({ratio:.2f}{TIMES})"

    by_round = comparison["p50_added_by_round_ms"]
    rounds = ", ".join(f"{v:+.2f}" for v in by_round) or "-"
    return (
        f"- {comparison['path']} against {comparison['against']}: {part('p50')}, "
        f"{part('p99')}; p50 added, round by round: {rounds} ms"
    )


def store_table(rows: Sequence[StoreRow]) -> str:
    header = (
        "store",
        "threads",
        "events/s",
        "by round",
        "vs memory",
        f"call p50 {MICRO}s",
        f"call p99 {MICRO}s",
        f"worker CPU {MICRO}s/event",
        f"Redis CPU {MICRO}s/event",
    )
    memory = {row.threads: row.median_per_s for row in rows if row.store == "memory"}
    cells = []
    for row in rows:
        data = row.to_dict()
        base = memory.get(row.threads)
        ratio = row.median_per_s / base if row.median_per_s and base else None
        cells.append(
            (
                "MemoryStateStore" if row.store == "memory" else "RedisStateStore",
                str(row.threads),
                format_number(row.median_per_s),
                _span(row.events_per_s, format_number),
                "-" if ratio is None else f"{ratio:.3f}{TIMES}",
                format_number(median_or_none(row.call_us_p50), 1) if row.threads == 1 else "-",
                format_number(median_or_none(row.call_us_p99), 1) if row.threads == 1 else "-",
                format_number(data["worker_cpu_us_per_event"], 1),
                format_number(data["redis_cpu_us_per_event"], 1) if row.store == "redis" else "-",
            )
        )
    right = (False, *([True] * 8))
    return format_table(header, cells, right)


def fanout_table(rows: Sequence[FanoutRow]) -> str:
    header = (
        "clients",
        "subjects",
        "worker rate",
        "events",
        "deliveries",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        f"web CPU {MICRO}s/delivery",
        f"worker CPU {MICRO}s/event",
        f"Redis CPU {MICRO}s/event",
        "lifecycle expected",
        "LOST",
        "extra",
    )
    cells = []
    for row in rows:
        lat = row.latency
        cells.append(
            (
                f"{row.clients:,}",
                str(row.subjects),
                f"{row.rate:,.0f} ev/s" if row.rate > 0 else "back to back",
                f"{row.emitted:,}",
                f"{row.received:,}",
                format_number(row.delivered_per_s),
                format_ms(lat.get("p50_ms")),
                format_ms(lat.get("p99_ms")),
                format_ms(lat.get("max_ms")),
                format_number(row.web_cpu_us_per_delivery, 1),
                format_number(row.worker_cpu_s / row.emitted * 1e6 if row.emitted else None, 1),
                format_number(
                    row.redis_cpu_s / row.emitted * 1e6
                    if row.emitted and row.redis_cpu_s is not None
                    else None,
                    1,
                ),
                f"{row.lifecycle_per_client * row.clients:,}",
                str(row.lost),
                str(row.extra),
            )
        )
    right = (True, True, False, *([True] * 12))
    return format_table(header, cells, right)


def targets(
    comparison: dict[str, Any] | None, fanout: Sequence[FanoutRow], fanout_ran: bool
) -> list[str]:
    lines = []
    added = None if comparison is None else comparison["p50_added_ms"]
    if added is None:
        lines.append(f"- Redis adds <= {TARGET_ADDED_P50_MS:g} ms at p50: not measured")
    else:
        lines.append(
            f"- Redis adds <= {TARGET_ADDED_P50_MS:g} ms at p50 (worker via Redis against "
            f"in-process): {added:+.2f} ms: {verdict(added <= TARGET_ADDED_P50_MS)}"
        )
    if not fanout or not fanout_ran:
        lines.append("- the 1,000-client fan-out loses nothing: not measured")
    else:
        lost = sum(row.lost for row in fanout)
        expected = sum(row.lifecycle_per_client * row.clients for row in fanout)
        ok = lost == 0 and all(
            not row.timed_out and row.phase_clients == row.clients for row in fanout
        )
        clients = ", ".join(sorted({f"{row.clients:,}" for row in fanout}))
        lines.append(
            f"- the {clients}-client fan-out loses nothing: {lost} of {expected:,} lifecycle "
            f"updates lost over {len(fanout)} run(s): {verdict(ok)}"
        )
    return lines


# -- the run --------------------------------------------------------------------------


def _describe(settings: Settings) -> str:
    rates = ", ".join(f"{r:g}/s" if r > 0 else "back to back" for r in settings.fanout_rates)
    text = (
        f"latency: {settings.latency_clients} clients, {settings.latency_events} events per "
        f"phase at {settings.rate:g}/s, {settings.rounds} rounds of 3 paths; store: "
        f"{settings.store_calls:,} calls per thread, threads "
        f"{','.join(map(str, settings.store_threads))}, {settings.store_rounds} rounds; "
        f"fan-out: {settings.fanout_clients:,} clients over {settings.fanout_subjects} "
        f"subjects, {settings.fanout_tasks} tasks x (2 + {settings.fanout_progress} progress) "
        f"per subject, worker at {rates}, clients connecting "
        + (
            f"{settings.connect_concurrency} at a time"
            if settings.connect_concurrency
            else "all at once"
        )
    )
    if settings.tcp_nodelay:
        text += "; TCP_NODELAY on the web processes"
    return text + (" (quick: numbers are not meaningful)" if settings.quick else "")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    settings, args = parse_args(argv)
    url = args.redis_url or os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
    node = args.node or shutil.which("node")
    env = environment(node)
    nofile = raise_nofile()
    prefix = f"taskevents-bench-{uuid.uuid4().hex}"
    results: dict[str, Any] = {
        "latency": [],
        "store": [],
        "fanout": [],
        "fanout_info": {},
        "servers": {},
        "notes": [],
    }
    errors: list[str] = []
    redis: RedisInfo | None = None
    try:
        redis = RedisInfo(url)
    except Exception as exc:
        errors.append(f"no Redis server answers at {url}: {type(exc).__name__}: {exc}")
    load_before = begin(
        "redis scale-out",
        env,
        _describe(settings),
        f"Redis {url}, key prefix {prefix}; open files limit {nofile:,}",
        extra=[f"Redis {redis.version if redis else '?'}"],
    )

    if not have_node(node):
        errors.append(NODE_NEEDED)
    started = time.perf_counter()
    interrupted = False
    previous = signal.signal(signal.SIGTERM, _interrupt)
    fanout_ran = False
    if not errors:
        assert redis is not None
        assert node is not None
        try:
            fanout_ran = _run(
                settings, url, prefix, node, redis, results, errors, show_progress, args.logs
            )
        except KeyboardInterrupt:
            interrupted = True
            errors.append("interrupted")
        finally:
            signal.signal(signal.SIGTERM, previous)
            try:
                deleted = delete_keys(redis, prefix)
                results["notes"].append(f"deleted the run's {deleted:,} Redis keys ({prefix}:*)")
            except Exception as exc:
                errors.append(f"could not delete the keys {prefix}:*: {exc}")
    if redis is not None:
        redis.close()
    wall = time.perf_counter() - started

    comparison = _print(settings, results, fanout_ran)
    for note in results["notes"]:
        print(f"NOTE {note}")
    load_after = finish(errors, env, wall)
    if args.json:
        document = {
            "benchmark": "redis_bench",
            "settings": asdict(settings),
            "environment": {**env, "redis": redis.version if redis else None},
            "redis_url": url,
            "prefix": prefix,
            "load_average": {"before": load_before, "after": load_after},
            "latency": [row.to_dict() for row in results["latency"]],
            "comparisons": comparison,
            "store": [row.to_dict() for row in results["store"]],
            "fanout": [row.to_dict() for row in results["fanout"]],
            "fanout_info": results["fanout_info"],
            "servers": results["servers"],
            "targets": targets(comparison.get(REDIS_WORKER), results["fanout"], fanout_ran),
            "notes": results["notes"],
            "errors": errors,
            "wall_time_s": wall,
        }
        write_json(args.json, document)
    return 130 if interrupted else 0


def _run(
    settings: Settings,
    url: str,
    prefix: str,
    node: str,
    redis: RedisInfo,
    results: dict[str, Any],
    errors: list[str],
    show: Any,
    logs: str | None,
) -> bool:
    """Every measurement; returns whether the fan-out ran to its end."""
    subjects = [LATENCY_SUBJECT, *fanout_subjects(settings.fanout_subjects)]
    fanout_ran = False
    with tempfile.TemporaryDirectory(prefix="redis_bench-") as tmp:
        workdir = Path(logs or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        show("starting the worker process")
        worker = Worker(url, prefix)
        servers: dict[str, WebServer] = {}
        try:
            try:
                results["store"] = run_store_rates(settings, worker, redis, show)
            except (BenchError, OSError) as exc:
                errors.append(f"store throughput: {type(exc).__name__}: {exc}")
            for name, redis_url in ((MEMORY, None), (REDIS_LOCAL, url)):
                show(f"starting the gevent web process ({'Redis' if redis_url else 'memory'})")
                servers[name] = WebServer(
                    name,
                    workdir,
                    subjects,
                    redis_url=redis_url,
                    redis_prefix=prefix,
                    tcp_nodelay=settings.tcp_nodelay,
                )
                results["servers"][name] = servers[name].info
            loadgens: dict[str, SpreadLoadGen] = {}
            try:
                for name, server in servers.items():
                    show(f"connecting {settings.latency_clients} clients to {name}")
                    loadgens[name] = SpreadLoadGen(
                        node, server.url, settings.latency_clients, [LATENCY_SUBJECT]
                    )
                results["latency"] = run_latency(settings, servers, loadgens, worker, redis, show)
            except (BenchError, OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                errors.append(f"latency: {type(exc).__name__}: {exc}")
            finally:
                for name, loadgen in loadgens.items():
                    results["notes"] += [f"{name} load generator: {w}" for w in loadgen.warnings]
                    loadgen.close()
            try:
                rows, info = run_fanout(settings, servers[REDIS_LOCAL], worker, redis, node, show)
                results["fanout"], results["fanout_info"] = rows, info
                fanout_ran = True
                results["notes"] += [f"fan-out load generator: {w}" for w in info["warnings"]]
            except (BenchError, OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                errors.append(f"fan-out: {type(exc).__name__}: {exc}")
        finally:
            worker.close()
            for name, server in servers.items():
                server.close()
                results["notes"] += _log_notes(name, server)
    return fanout_ran


def _log_notes(name: str, server: WebServer, most: int = 8) -> list[str]:
    """The web process's warnings and errors, each distinct line once with its count
    (at most ``most`` lines)."""
    counts: dict[str, int] = {}
    for line in server.log_lines("WARNING", "ERROR", "Error:", "Exception:"):
        counts[line.strip()] = counts.get(line.strip(), 0) + 1
    notes = [
        f"{name} web process log ({count}x): {line[:300]}"
        for line, count in sorted(counts.items(), key=lambda item: -item[1])
    ]
    if len(notes) > most:
        notes = [*notes[:most], f"{name} web process log: {len(notes) - most} more distinct lines"]
    return notes


def _print(settings: Settings, results: dict[str, Any], fanout_ran: bool) -> dict[str, Any]:
    comparison: dict[str, Any] = {}
    latency: list[LatencyRow] = results["latency"]
    if latency:
        rows = {row.path: row for row in latency}
        print()
        print("## End-to-end latency: emit to Socket.IO client, in one process and through Redis")
        print()
        print(
            f"Paced lifecycle events (started/completed) at {settings.rate:g}/s on one subject, "
            f"{settings.latency_clients} clients (one Node process) on a gevent web process; "
            "latency = receive time - the emitting process's wall clock just before the emit "
            f"call. {settings.rounds} rounds, the first path rotating. Paths:"
        )
        for key, (emitter, kind, via) in LATENCY_PATHS.items():
            print(f"- {key}: the {emitter} emits, {kind} store, delivered by {via}")
        print()
        print(latency_table(latency))
        print()
        for ours in (REDIS_WORKER, REDIS_LOCAL):
            comparison[ours] = _compare(rows, ours, MEMORY)
            print(_comparison_line(comparison[ours]))
        for lrow in latency:
            for error in lrow.errors:
                print(f"ERROR {lrow.path}: {error}")
            if lrow.timed_out or lrow.seq_errors or lrow.disconnects:
                print(
                    f"WARNING {lrow.path}: {lrow.timed_out} phases timed out, "
                    f"{lrow.seq_errors} seq errors, {lrow.disconnects} disconnects"
                )
    store: list[StoreRow] = results["store"]
    if store:
        print()
        print("## Events/s through the state store: emitter.progress() on a started task")
        print()
        print(
            f"{settings.store_calls:,} calls per thread (each thread on its own subject), in "
            "the worker process, no web process listening to this prefix; configurations "
            "interleaved round by round; events/s is the median of the rounds."
        )
        print()
        print(store_table(store))
        for srow in store:
            for error in srow.errors:
                print(f"ERROR store {srow.store} x {srow.threads}: {error}")
    fanout: list[FanoutRow] = results["fanout"]
    if fanout:
        info = results["fanout_info"]
        print()
        print(
            f"## Fan-out: {settings.fanout_clients:,} clients on one gevent web process, "
            "a worker emitting through Redis"
        )
        print()
        print(
            f"{info.get('connected', '?')} clients connected (one Node process, connect "
            f"{info.get('loadgen', {}).get('connect_ms', 0) / 1000:.1f} s), each subscribed "
            f"to one of {settings.fanout_subjects} subjects; per subject {settings.fanout_tasks} "
            f"tasks (started, {settings.fanout_progress} progress, completed). LOST: lifecycle "
            "updates (started, completed) some client did not get; progress may be "
            "coalesced by design."
        )
        print()
        print(fanout_table(fanout))
        print()
        for frow in fanout:
            rate = f"{frow.rate:,.0f} ev/s" if frow.rate > 0 else "back to back"
            coalesced = frow.adapter.get("coalesced", 0)
            offered = frow.progress_emitted_per_subject * frow.clients
            print(
                f"- {rate}: the worker emitted for {frow.loop_s:.2f} s (emit call p50 "
                f"{format_number(frow.call_us_p50, 1)} {MICRO}s); progress updates received "
                f"{frow.progress_received:,} of {offered:,} emitted x subscribers "
                f"({coalesced:,} coalesced by the adapter); {frow.phase_clients:,} clients "
                f"in the phase, {frow.clients_short} short, {frow.seq_errors} seq errors, "
                f"{frow.disconnects} disconnects" + (", TIMED OUT" if frow.timed_out else "")
            )
    print()
    print("## Targets")
    print()
    for line in targets(comparison.get(REDIS_WORKER), fanout, fanout_ran):
        print(line)
    print()
    return comparison


if __name__ == "__main__":
    raise SystemExit(main())
