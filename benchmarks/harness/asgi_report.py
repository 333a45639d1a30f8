"""The ASGI benchmark's report: the throughput tables (:mod:`harness.report`'s), the
loop-lag table, the targets (PASS/FAIL, never an exit code) and the environment."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .asgi_measure import CONTROLS, IDLE, SPIN, AsgiSettings, LagRow
from .config import MICRO, TASKEVENTS
from .machine import package_version
from .measure import Row
from .report import (
    environment,
    format_ms,
    format_number,
    format_table,
    round_ratio_lines,
    throughput_table,
    throughput_targets,
    verdict,
)

__all__ = ["LAG_HEADER", "TARGET_LAG_P99_MS", "asgi_environment", "lag_table", "print_report"]

#: The issue's target for the loop's lag while a task floods progress.
TARGET_LAG_P99_MS = 5.0
CONTROL_NAMES = {IDLE: "none (ticker alone)", SPIN: "none (thread spinning)"}

LAG_HEADER = (
    "emitter",
    "path",
    "progress calls",
    "calls/s",
    "emit loop s",
    "window s",
    "progress rcvd/client",
    "started+completed at every client",
    "completed ms",
    "server CPU s",
    "ticks",
    "lag p50 ms",
    "lag p99 ms",
    "lag max ms",
    "ticks > 5 ms",
)


def asgi_environment(node: str | None) -> dict[str, Any]:
    """:func:`harness.report.environment`, with the ASGI stack's packages instead of
    Flask's."""
    env = environment(node)
    flask_only = ("flask", "flask-socketio", "simple-websocket", "werkzeug", "gevent")
    versions = {k: v for k, v in env["versions"].items() if k not in flask_only}
    client = versions.pop("socket.io-client", "not installed")
    for name in ("uvicorn", "uvloop", "websockets"):
        versions[name] = package_version(name)
    versions["socket.io-client"] = client
    env["versions"] = versions
    return env


def lag_table(rows: Sequence[LagRow]) -> str:
    cells = []
    for row in rows:
        lag = row.lag
        idle = row.kind in CONTROLS
        received = (
            str(row.progress_min)
            if row.progress_min == row.progress_max
            else f"{row.progress_min}-{row.progress_max}"
        )
        cells.append(
            (
                row.where,
                CONTROL_NAMES.get(row.kind, row.kind),
                "-" if idle else f"{row.progress_events:,}",
                format_number(row.calls_per_s),
                "-" if idle else f"{row.loop_s:.2f}",
                f"{row.window_s:.2f}",
                "-" if idle else received,
                "-" if idle else ("yes" if row.lifecycle_ok else "NO"),
                "-" if idle else format_ms(row.completed_ms),
                f"{row.cpu_s:.2f}",
                format_number(lag.get("ticks")),
                format_ms(lag.get("p50_ms")),
                format_ms(lag.get("p99_ms")),
                format_ms(lag.get("max_ms")),
                format_number(lag.get("over_5ms")),
            )
        )
    right = (False, False, *([True] * 5), False, *([True] * 7))
    return format_table(LAG_HEADER, cells, right)


def lag_targets(rows: Sequence[LagRow]) -> list[str]:
    """One line per taskevents flood: the loop's lag p99 against the target; the raw
    floods' p99 alongside for comparison."""
    lines = []
    raw = {row.where: row for row in rows if row.kind not in (TASKEVENTS, *CONTROLS)}
    spin = next((row for row in rows if row.kind == SPIN), None)
    for row in rows:
        if row.kind != TASKEVENTS:
            continue
        p99 = row.p99_ms
        passed = p99 is not None and p99 <= TARGET_LAG_P99_MS and not row.errors
        theirs = raw.get(row.where)
        compare = (
            f"; raw emit flood from a {row.where}: {format_ms(theirs.p99_ms)} ms"
            if theirs is not None
            else ""
        )
        if row.where == "thread" and spin is not None:
            compare += f"; a thread spinning without emitting: {format_ms(spin.p99_ms)} ms"
        lines.append(
            f"{verdict(passed)} loop lag, taskevents progress flood from a {row.where}: "
            f"p99 {format_ms(p99)} ms (target <= {TARGET_LAG_P99_MS:g} ms){compare}"
        )
    return lines


def _print_throughput(settings: AsgiSettings, result: dict[str, Any], rows: Sequence[Row]) -> None:
    extensions = sorted({e for lg in result["loadgen"] for e in lg["ws_extensions"]})
    server = result.get("server", {})
    print()
    print(
        "## Throughput and latency: taskevents vs raw AsyncServer.emit, same server, same clients"
    )
    print()
    print(
        f"Server: {server.get('server', 'uvicorn')} on {server.get('loop_class', '?')}, "
        "python-socketio AsyncServer(async_mode='asgi') behind socketio.ASGIApp, "
        f"AsyncSocketIOAdapter(progress_interval={server.get('progress_interval', '?')}, "
        f"max_backlog={server.get('max_backlog', '?'):,}); WebSocket only; "
        f"permessage-deflate negotiated: {'no' if extensions == [''] else extensions}; "
        "TCP_NODELAY set by the event loop on every connection. Events: task_started / "
        "task_completed alternately (never coalesced, so both paths deliver every one). "
        "Emitter 'coroutine': a coroutine on the server's loop, 'await asyncio.sleep(...)' "
        "before every event (the pacing delay, or 0 in a burst), raw = 'await "
        "sio.emit(...)'; 'thread': a worker thread, time.sleep to pace, no yield in a "
        "burst, raw = asyncio.run_coroutine_threadsafe(sio.emit(...), loop) without "
        "waiting for each (all waited for at the end)."
    )
    for pattern, title in (
        ("paced", f"Paced: {settings.rate:g} events/s per path, {settings.seconds:g} s phases"),
        ("burst", "Burst: events emitted back to back, then drained"),
    ):
        selected = [row for row in rows if row.pattern == pattern]
        if selected:
            print()
            print(f"### {title}")
            print()
            print(throughput_table(selected))
    print()
    print(
        "sent ev/s: events per second out of the server's emit loop; delivered ev/s: "
        "messages received by all clients together / (last receive - first send), pooled "
        "over the rounds; lost: expected - received; latency: receive time - the sent_ms "
        "the server put in the message just before the emit call; emit call: median time "
        f"inside emitter.started/completed (taskevents: up to the adapter's queue), 'await "
        f"sio.emit' (raw, coroutine: the whole fan-out into the clients' queues) or "
        f"run_coroutine_threadsafe (raw, thread: the hand-off), {MICRO}s; server CPU: the "
        "server process's CPU time (all threads) during the phases / messages delivered; "
        "te/raw: taskevents' delivered ev/s / raw's, pooled, and the lowest and highest of "
        "the rounds (each round runs both paths back to back)."
    )
    lines = round_ratio_lines(rows)
    if lines:
        print()
        print("te/raw delivered ev/s, round by round (the median of the rounds first):")
        print()
        for line in lines:
            print(line)


def _print_lag(settings: AsgiSettings, rows: Sequence[LagRow]) -> None:
    print()
    print(
        f"## Event-loop lag while a task floods progress ({settings.flood_seconds:g} s "
        f"floods, {rows[0].clients} clients)"
    )
    print()
    print(lag_table(rows))
    print()
    print(
        "A ticker coroutine on the server's loop sleeps 1 ms over and over; lag = how much "
        "later than 1 ms it woke (0 when early), from the flood's first emit until "
        "everything emitted was handed to the clients' queues ('window'). The flood: "
        "started, progress as fast as it goes for the flood's seconds, completed (last); "
        "from a coroutine each progress call is preceded by 'await asyncio.sleep(0)'; "
        "from a thread, back to back (raw: one run_coroutine_threadsafe per progress, "
        "none waited for). taskevents' progress is coalesced by the adapter (latest wins "
        "while it waits in the queue), raw sends every one: compare the loop's lag, not "
        "the counts. progress rcvd/client: progress updates each client got (lowest-"
        "highest); completed ms: task_completed's latency, worst client; server CPU: the "
        "process's CPU time over the window. Controls: the ticker alone, and while a "
        "thread runs the flood's loop without emitting ('thread spinning': what sharing "
        "the GIL with a busy thread costs the loop, whatever it emits; CPython hands "
        "the GIL over every 5 ms by default, sys.getswitchinterval())."
    )
    for row in rows:
        if row.kind == TASKEVENTS:
            a = row.adapter
            print(
                f"- taskevents from a {row.where}: adapter received {a.get('received', 0):,}, "
                f"delivered {a.get('delivered', 0):,}, coalesced {a.get('coalesced', 0):,}, "
                f"dropped {a.get('dropped', 0)}"
            )


def print_report(
    settings: AsgiSettings, results: Sequence[dict[str, Any]], errors: list[str]
) -> tuple[list[Row], list[LagRow]]:
    """Print the tables, the targets and the notes; returns the rows."""
    rows: list[Row] = [row for result in results for row in result["rows"]]
    lags: list[LagRow] = [row for result in results for row in result["lag"]]
    for result in results:
        if rows:
            _print_throughput(settings, result, rows)
    if lags:
        _print_lag(settings, lags)
    print()
    print("## Targets")
    print()
    for line in throughput_targets(rows):
        print(line)
    for line in lag_targets(lags):
        print(line)
    for row in rows:
        problems = []
        if row.lost:
            problems.append(f"{row.lost} messages lost")
        if row.timed_out:
            problems.append(f"{row.timed_out} phases timed out")
        if row.seq_errors and row.path == TASKEVENTS:
            problems.append(f"{row.seq_errors} seq out of order")
        if row.disconnects:
            problems.append(f"{row.disconnects} disconnects")
        problems += row.errors
        if problems:
            print(
                f"NOTE {row.label}, {row.pattern}, {row.clients} clients, {row.path}: "
                + "; ".join(problems)
            )
    for lag in lags:
        problems = list(lag.errors)
        if lag.timed_out:
            problems.append("the load generator timed out")
        if lag.kind not in CONTROLS and not lag.lifecycle_ok:
            problems.append("started/completed missing at some client")
        if problems:
            print(f"NOTE loop lag, {lag.kind} from {lag.where}: " + "; ".join(problems))
    for result in results:
        for warning in result["warnings"][:10]:
            print(f"NOTE asgi: load generator: {warning}")
    return rows, lags


def ratio_summary(rows: Sequence[Row]) -> dict[str, Any]:
    """taskevents/raw per emitter, pattern and client count (pooled, and the median of
    the rounds), for the JSON document."""
    summary: dict[str, Any] = {}
    for row in rows:
        if row.path != TASKEVENTS:
            continue
        summary[f"{row.label}/{row.pattern}/{row.clients}"] = {
            "ratio": row.ratio,
            "median_of_rounds": statistics.median(row.round_ratios) if row.round_ratios else None,
        }
    return summary
