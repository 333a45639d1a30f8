"""Reporting: Markdown tables, the target lines (PASS/FAIL, never an exit code), the
environment line, and the printed report."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from .config import (
    MAX_BURST_EVENTS,
    MICRO,
    ROOT,
    TARGET_LIFECYCLE_MS,
    TARGET_PROGRESS_PER_S,
    TARGET_RATIO,
    TASKEVENTS,
    TIMES,
    BenchError,
)
from .machine import load_average, package_version
from .measure import FloodSummary, Row, Settings, label_of, summarize_flood

__all__ = [
    "begin",
    "environment",
    "finish",
    "flood_table",
    "flood_targets",
    "format_ms",
    "format_number",
    "format_table",
    "load_average",
    "print_results",
    "round_ratio_lines",
    "show_progress",
    "throughput_table",
    "throughput_targets",
    "verdict",
]


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]
) -> str:
    """A plain-text table, aligned, that is also valid Markdown."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(w) if r else cell.ljust(w)
            for cell, w, r in zip(cells, widths, right, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|".join(
        "-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, right, strict=True)
    )
    return "\n".join([line(header), f"|{rule}|", *(line(row) for row in rows)])


def format_number(value: float | None, digits: int = 0) -> str:
    """``value`` with thousands separators and ``digits`` decimals; "-" for None."""
    return "-" if value is None else f"{value:,.{digits}f}"


def format_ms(value: float | None) -> str:
    """Milliseconds, with fewer decimals the larger they are; "-" for None."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


THROUGHPUT_HEADER = (
    "mode",
    "clients",
    "path",
    "sent ev/s",
    "delivered ev/s",
    "lost",
    "p50 ms",
    "p99 ms",
    "max ms",
    f"emit call {MICRO}s",
    f"server CPU {MICRO}s/delivery",
    "te/raw",
    "te/raw by round",
)


def throughput_table(rows: Sequence[Row]) -> str:
    cells = []
    for row in rows:
        lat = row.latency
        cells.append(
            (
                row.label,
                str(row.clients),
                row.path,
                format_number(row.sent_per_s),
                format_number(row.delivered_per_s),
                str(row.lost),
                format_ms(lat.get("p50_ms")),
                format_ms(lat.get("p99_ms")),
                format_ms(lat.get("max_ms")),
                format_number(row.emit_call_us, 1),
                format_number(row.cpu_us_per_delivery, 1),
                "-" if row.ratio is None else f"{row.ratio:.2f}{TIMES}",
                (
                    f"{min(row.round_ratios):.2f}-{max(row.round_ratios):.2f}"
                    if row.round_ratios
                    else "-"
                ),
            )
        )
    right = (False, True, False, *([True] * 10))
    return format_table(THROUGHPUT_HEADER, cells, right)


FLOOD_HEADER = (
    "mode",
    "loop",
    f"emitter {MICRO}s/call",
    f"core alone {MICRO}s/call",
    "loop s",
    "progress rcvd/client",
    "window s",
    "progress/s",
    "steady/s",
    "min gap ms",
    "started+completed at every client",
    "started ms",
    "completed ms",
    "final seq: snapshot / clients / expected",
    "status",
)


def flood_table(floods: Sequence[FloodSummary]) -> str:
    cells = []
    for f in floods:
        received = (
            str(f.progress_min)
            if f.progress_min == f.progress_max
            else f"{f.progress_min}-{f.progress_max}"
        )
        seqs = ",".join(str(seq) for seq in sorted(set(f.clients_last_seq)))
        cells.append(
            (
                f.mode,
                f.variant,
                f"{f.per_call_us:.2f}",
                f"{f.bare_per_call_us:.2f}",
                f"{f.loop_s:.2f}",
                received,
                f"{f.window_s:.2f}",
                "-" if f.progress_per_s is None else f"{f.progress_per_s:.1f}",
                "-" if f.steady_per_s is None else f"{f.steady_per_s:.1f}",
                format_ms(f.min_gap_ms),
                "yes" if f.lifecycle_ok else "NO",
                format_ms(f.started_ms),
                format_ms(f.completed_ms),
                f"{f.snapshot_seq} / {seqs} / {f.final_seq_expected}",
                str(f.snapshot_status),
            )
        )
    right = (False, False, *([True] * 12), False)
    return format_table(FLOOD_HEADER, cells, right)


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def throughput_targets(rows: Sequence[Row]) -> list[str]:
    """One line per server set-up and pattern: taskevents/raw for every client count."""
    lines = []
    keys = dict.fromkeys((row.label, row.pattern) for row in rows if row.path == TASKEVENTS)
    for label, pattern in keys:
        selected = [r for r in rows if (r.label, r.pattern, r.path) == (label, pattern, TASKEVENTS)]
        ratios = ", ".join(
            f"{r.ratio:.2f} ({r.clients} clients)" if r.ratio is not None else "none"
            for r in selected
        )
        passed = all(r.ratio is not None and r.ratio >= TARGET_RATIO for r in selected)
        lines.append(
            f"{verdict(passed)} throughput, {label}, {pattern}: taskevents/raw delivered "
            f"ev/s = {ratios}; target >= {TARGET_RATIO} each"
        )
    return lines


def flood_targets(floods: Sequence[FloodSummary]) -> list[str]:
    lines = []
    for f in floods:
        name = f"flood, {f.mode}, {f.variant}"
        steady = "-" if f.steady_per_s is None else f"{f.steady_per_s:.1f}/s"
        lines.append(
            f"{verdict(f.rate_ok)} {name}: progress updates per client: steady rate {steady} "
            f"(target <= {TARGET_PROGRESS_PER_S:g}/s; 1 / mean gap, without the final one "
            f"flushed before task_completed); {f.progress_max} in {f.window_s:.2f} s overall"
        )
        lines.append(
            f"{verdict(f.lifecycle_ok)} {name}: task_started and task_completed received "
            f"once each by every one of the {f.clients} clients"
        )
        lines.append(
            f"{verdict(f.completed_ms is not None and f.completed_ms < TARGET_LIFECYCLE_MS)} "
            f"{name}: task_completed latency, worst client = {format_ms(f.completed_ms)} ms "
            f"(target < {TARGET_LIFECYCLE_MS:g} ms)"
        )
        lines.append(
            f"{verdict(f.final_ok)} {name}: final state exact: snapshot seq "
            f"{f.snapshot_seq} status {f.snapshot_status}, clients' last seq "
            f"{sorted(set(f.clients_last_seq))}; expected seq {f.final_seq_expected}, idle"
        )
    return lines


def show_progress(message: str) -> None:
    """A progress line, on stderr (the report is on stdout)."""
    print(f"  ... {message}", file=sys.stderr, flush=True)


def begin(title: str, env: dict[str, Any], *lines: str, extra: Sequence[str] = ()) -> str:
    """The report's first lines: ``title`` and the environment (:func:`environment`;
    ``extra`` before the package versions), then ``lines``, then the load average before
    the run (returned)."""
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    print(
        f"{title}: Python {env['python']} on {env['platform']} ({env['cpu_count']} CPUs); "
        + "; ".join([f"node {env['node']}", *extra, versions]),
        flush=True,
    )
    for line in lines:
        print(line, flush=True)
    load_before = load_average()
    print(f"load average before: {load_before}", flush=True)
    return load_before


def finish(errors: Sequence[str], env: dict[str, Any], wall: float) -> str:
    """The report's last lines: the errors, the load average after the run (returned)
    and the wall time."""
    for error in errors:
        print(f"ERROR {error}")
    load_after = load_average()
    print(f"load average after: {load_after} ({env['cpu_count']} CPUs)")
    print(f"wall time: {wall:.1f} s")
    return load_after


def environment(node: str | None) -> dict[str, Any]:
    versions = {
        name: package_version(name)
        for name in (
            "taskevents",
            "flask",
            "flask-socketio",
            "python-socketio",
            "python-engineio",
            "simple-websocket",
            "werkzeug",
            "gevent",
        )
    }
    client = ROOT / "node_modules" / "socket.io-client" / "package.json"
    try:
        versions["socket.io-client"] = json.loads(client.read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        versions["socket.io-client"] = "not installed"
    node_version = "not found"
    if node:
        with suppress(OSError, subprocess.TimeoutExpired):
            node_version = subprocess.run(
                [node, "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "node": node_version,
        "versions": versions,
    }


def print_results(
    settings: Settings, results: Sequence[dict[str, Any]], errors: list[str]
) -> tuple[list[Row], list[FloodSummary]]:
    rows: list[Row] = [row for result in results for row in result["rows"]]
    floods: list[FloodSummary] = []
    for result in results:
        for flood in result["floods"]:
            try:
                floods.append(summarize_flood(flood))
            except (BenchError, KeyError, TypeError, ValueError) as exc:
                errors.append(f"flood {result['mode']}: {type(exc).__name__}: {exc}")
    main_rows = [row for row in rows if not row.nodelay]
    nodelay_rows = [row for row in rows if row.nodelay]

    if rows:
        _print_throughput(settings, results, main_rows, nodelay_rows)
    if floods:
        _print_floods(settings, floods)
    print()
    print("## Targets")
    print()
    for line in throughput_targets(main_rows) + throughput_targets(nodelay_rows):
        print(line)
    for line in flood_targets(floods):
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
    for result in results:
        for warning in result["warnings"][:10]:
            print(f"NOTE {label_of(result['mode'], result['nodelay'])}: load generator: {warning}")
    return rows, floods


def _print_throughput(
    settings: Settings,
    results: Sequence[dict[str, Any]],
    main_rows: Sequence[Row],
    nodelay_rows: Sequence[Row],
) -> None:
    extensions = sorted({e for r in results for lg in r["loadgen"] for e in lg["ws_extensions"]})
    print()
    print("## Throughput and latency: taskevents vs raw emit, same server, same clients")
    print()
    print(
        "Events: task_started / task_completed alternately, never progress: the adapter "
        "never coalesces lifecycle events, so both paths must deliver every event and the "
        "counts compare like for like (progress, even with progress_interval=0, is "
        "replaced while it waits in the adapter's queue: fewer messages by design). "
        "Servers as socketio.run starts them (no TCP_NODELAY); WebSocket only; "
        f"permessage-deflate negotiated: "
        f"{'no' if extensions == [''] else extensions}."
    )
    backlogs = {r.get("server", {}).get("max_backlog") for r in results} - {None}
    if backlogs:
        print()
        print(
            "The benchmark servers lift the adapter's backlog guard (max_backlog, 1,000 "
            f"packets per client by default) to {max(backlogs):,}: a burst queues up to "
            f"{MAX_BURST_EVENTS:,} messages per client by design, and the guard would drop "
            "those clients in both paths."
        )
    for pattern, title in (
        ("paced", f"Paced: {settings.rate:g} events/s per path, {settings.seconds:g} s phases"),
        ("burst", "Burst: events emitted back to back, then drained"),
    ):
        selected = [row for row in main_rows if row.pattern == pattern]
        if selected:
            print()
            print(f"### {title}")
            print()
            print(throughput_table(selected))
    if nodelay_rows:
        print()
        print(
            "### The same with TCP_NODELAY set on the server's connections (Nagle off), "
            f"{nodelay_rows[0].clients} clients"
        )
        print()
        print(throughput_table(nodelay_rows))
    for result in results:
        probe = result.get("wake_probe", {})
        if not result["nodelay"] and "after_sleep_us" in probe:
            woken, warm = probe["after_sleep_us"], probe["back_to_back_us"]
            print(
                f"- {result['mode']} server: a 200-iteration Python loop takes {woken:.1f} "
                f"{MICRO}s right after a 10 ms sleep, {warm:.1f} {MICRO}s back to back "
                f"({woken / warm:.1f}{TIMES}): every paced event runs on a just-woken "
                "process, hence the paced emit call and CPU per delivery well above the "
                "burst ones."
            )
    print()
    print(
        "sent ev/s: events per second out of the server's emit loop; delivered ev/s: "
        "messages received by all clients together / (last receive - first send), pooled "
        "over the rounds; lost: expected - received; latency: receive time - the sent_ms "
        "the server put in the message just before the emit call; emit call: median time "
        "inside emitter.started/completed (taskevents: up to the adapter's queue) or "
        "socketio.emit (raw: the whole fan-out), wall clock in the emitting task; server "
        "CPU: the server process's CPU time (all threads) during the phases / messages "
        "delivered; te/raw: taskevents' delivered ev/s / raw's, pooled, and the lowest and "
        "highest of the rounds (each round runs both paths back to back)."
    )
    ratios = round_ratio_lines([*main_rows, *nodelay_rows])
    if ratios:
        print()
        print("te/raw delivered ev/s, round by round (the median of the rounds first):")
        print()
        for line in ratios:
            print(line)


def round_ratio_lines(rows: Sequence[Row]) -> list[str]:
    """One line per taskevents row: the median of its per-round te/raw ratios, then each
    round's, in the order they ran; and the median of the rounds' server CPU per delivery,
    raw's over taskevents' (the same ratio seen from the server's side: above 1, taskevents
    costs less per delivery)."""
    lines = []
    for row in rows:
        if row.path != TASKEVENTS or not row.round_ratios:
            continue
        each = ", ".join(f"{ratio:.2f}" for ratio in row.round_ratios)
        line = (
            f"- {row.label}, {row.pattern}, {row.clients} clients: median "
            f"{statistics.median(row.round_ratios):.2f}{TIMES} ({each})"
        )
        if row.cpu_round_ratios:
            line += (
                "; server CPU per delivery, raw/te: median "
                f"{statistics.median(row.cpu_round_ratios):.2f}{TIMES}"
            )
        lines.append(line)
    return lines


def _print_floods(settings: Settings, floods: Sequence[FloodSummary]) -> None:
    print()
    print(
        f"## Flood: {settings.flood_events:,} emitter.progress() calls on one subject, "
        f"as fast as they go, {floods[0].clients} clients, progress_interval "
        "0.1 s (the default)"
    )
    print()
    print(flood_table(floods))
    print()
    print(
        "emitter µs/call: the progress loop in the server / calls (time in sleep "
        "left out), SocketIOAdapter connected; core alone: the same calls on an Emitter "
        "with no receiver, best of 3 x 20,000; window: a client's first message "
        "(started) to its last (completed); progress/s: updates / window; steady/s: "
        "1 / the mean gap between updates, leaving out the last one (flushed at once "
        "before task_completed, whatever the interval); latencies: receive - sent_ms, "
        "worst client."
    )
    for f in floods:
        a = f.adapter
        print(
            f"- {f.mode}, {f.variant}: adapter received {a.get('received', 0):,}, "
            f"delivered {a.get('delivered', 0):,}, coalesced {a.get('coalesced', 0):,}, "
            f"dropped {a.get('dropped', 0)}; server CPU {f.server_cpu_s:.2f} s"
            + ("; the load generator TIMED OUT" if f.timed_out else "")
        )
