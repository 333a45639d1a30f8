"""Measurements: a phase (one path, one run of events, seen by every client), a round
(both paths back to back, alternating which goes first), the rows they add up to, one
server set-up's whole run, and the flood's summary."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import (
    FLOOD_SUBJECT,
    MAX_BURST_EVENTS,
    PHASE_SLACK,
    RAW,
    RAW_SUBJECT,
    TARGET_PROGRESS_PER_S,
    TASKEVENTS,
    TE_SUBJECT,
    BenchError,
)
from .control import LoadGen, Server

__all__ = [
    "FloodSummary",
    "PhaseCounts",
    "Row",
    "Runner",
    "Settings",
    "run_setup",
    "summarize_flood",
]


def label_of(mode: str, nodelay: bool) -> str:
    return f"{mode}, TCP_NODELAY" if nodelay else mode


class PhaseCounts:
    """What a row of phases counts (a mixin of the row dataclasses, here and in
    :mod:`harness.redis_measure`, which declare these fields): the phases, the events
    emitted and expected, and what the load generator reports."""

    phases: int
    expected: int
    received: int
    emitted: int
    latency: dict[str, Any]
    timed_out: int
    seq_errors: int
    disconnects: int
    errors: list[str]

    @property
    def lost(self) -> int:
        return self.expected - self.received

    def count_phase(
        self, events: int, clients: int, done: dict[str, Any], sent: dict[str, Any]
    ) -> bool:
        """Count one phase of ``events`` to ``clients`` clients (``done``: the load
        generator's answer; ``sent``: the emitting process's); False, the error kept,
        when the emit loop failed."""
        self.phases += 1
        self.expected += events * clients
        self.timed_out += int(bool(done["timed_out"]))
        if "error" in sent:
            self.errors.append(str(sent["error"]))
            return False
        self.emitted += int(sent["emitted"])
        return True

    def count_report(self, report: dict[str, Any]) -> None:
        """Take in the load generator's report of the row's phases."""
        self.received = int(report.get("received", 0))
        self.latency = report.get("latency", {})
        self.seq_errors = int(report.get("seq_errors", 0))
        self.disconnects = int(report.get("disconnects", 0))


@dataclass
class Row(PhaseCounts):
    """One path (taskevents or raw) in one server set-up, one client count, one pattern."""

    mode: str
    nodelay: bool
    clients: int
    pattern: str  # "paced" or "burst"
    path: str
    events_per_phase: int
    rate: float  # requested events/s (0: back to back)
    phases: int = 0
    expected: int = 0
    received: int = 0
    emitted: int = 0
    loop_s: float = 0.0
    drained_s: float = 0.0
    emit_call_us_medians: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    delivered_per_s: float | None = None
    latency: dict[str, Any] = field(default_factory=dict)
    loadgen_cpu_ms: float = 0.0
    loadgen_wall_ms: float = 0.0
    timed_out: int = 0
    seq_errors: int = 0
    disconnects: int = 0
    payload_bytes: int = 0
    ratio: float | None = None
    #: taskevents/raw delivered ev/s of each round (the two phases of one round run
    #: back to back), for the spread.
    round_ratios: list[float] = field(default_factory=list)
    #: raw's server CPU per delivery / taskevents', round by round: steadier than the
    #: delivered ev/s on a busy machine (another process's load stretches the windows).
    cpu_round_ratios: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Per phase: window_ms, received, loop_s, drained_s, server_cpu_s (for the JSON).
    phase_log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return label_of(self.mode, self.nodelay)

    @property
    def sent_per_s(self) -> float | None:
        return self.emitted / self.loop_s if self.loop_s > 0 else None

    @property
    def emit_call_us(self) -> float | None:
        medians = self.emit_call_us_medians
        return statistics.median(medians) if medians else None

    @property
    def cpu_us_per_delivery(self) -> float | None:
        return self.server_cpu_s / self.received * 1e6 if self.received else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            label=self.label,
            lost=self.lost,
            sent_per_s=self.sent_per_s,
            emit_call_us=self.emit_call_us,
            server_cpu_us_per_delivery=self.cpu_us_per_delivery,
        )
        return data


#: The throughput patterns, in the order they run at each client count.
PATTERNS = ("paced", "burst")


@dataclass
class Settings:
    """What to run: the scenarios (``paced``, ``burst``, ``flood``, ``nodelay``) and
    their sizes."""

    scenarios: list[str]
    modes: list[str]
    clients: list[int]
    rate: float
    seconds: float
    rounds: int
    burst_deliveries: int
    flood_events: int
    flood_clients: int
    flood_yield_every: int
    quick: bool

    @property
    def patterns(self) -> list[str]:
        """The throughput patterns to run (paced, burst), in that order."""
        skip = {"burst"} if self.burst_deliveries <= 0 else set()
        return [p for p in PATTERNS if p in self.scenarios and p not in skip]

    @property
    def floods(self) -> bool:
        return "flood" in self.scenarios and self.flood_events > 0

    @property
    def nodelay(self) -> bool:
        """Whether to repeat the patterns at the largest client count with TCP_NODELAY."""
        return "nodelay" in self.scenarios and bool(self.patterns)

    @property
    def warmup_events(self) -> int:
        return 20 if self.quick else 200


def _even(value: float) -> int:
    return max(2, int(value) + int(value) % 2)


class Runner:
    """Runs the phases against one server."""

    def __init__(self, server: Server, progress: Callable[[str], None]) -> None:
        self.server = server
        self.progress = progress
        self.counter = itertools.count(1)

    def phase(self, loadgen: LoadGen, row: Row | None, kind: str, events: int, rate: float) -> None:
        """One run of ``events`` lifecycle events on ``kind``'s path; adds to ``row``."""
        phase_id = f"p{next(self.counter)}"
        group = f"{kind}/{'warmup' if row is None else row.pattern}"
        subject = TE_SUBJECT if kind == TASKEVENTS else RAW_SUBJECT
        timeout = (events / rate if rate > 0 else 0.0) + PHASE_SLACK
        cpu_before = self.server.cpu()
        loadgen.arm(phase_id, group, subject, timeout)
        sent = self.server.post(
            "/bench/run", {"kind": kind, "events": events, "rate": rate}, timeout + 5
        )
        done = loadgen.expect("done", timeout + 10)
        cpu_after = self.server.cpu()
        if row is None or not row.count_phase(events, loadgen.clients, done, sent):
            return
        row.emit_call_us_medians.append(float(sent["emit_call_us_median"]))
        row.loop_s += float(sent["loop_s"])
        row.drained_s += float(sent["drained_s"])
        row.payload_bytes = int(sent["payload_bytes"])
        row.server_cpu_s += cpu_after - cpu_before
        row.phase_log.append(
            {
                "received": done["received"],
                "window_ms": done["window_ms"],
                "loop_s": sent["loop_s"],
                "drained_s": sent["drained_s"],
                "server_cpu_s": cpu_after - cpu_before,
                "loadgen_cpu_ms": done["loadgen_cpu_ms"],
            }
        )

    def finish_row(self, loadgen: LoadGen, row: Row) -> None:
        report = loadgen.report(f"{row.path}/{row.pattern}")
        row.count_report(report)
        row.delivered_per_s = report.get("delivered_per_s")
        row.loadgen_cpu_ms = float(report.get("loadgen_cpu_ms", 0.0))
        row.loadgen_wall_ms = float(report.get("loadgen_wall_ms", 0.0))

    def compare(
        self,
        loadgen: LoadGen,
        mode: str,
        nodelay: bool,
        pattern: str,
        events: int,
        rate: float,
        rounds: int,
    ) -> list[Row]:
        """Both paths, ``rounds`` phases each, alternating which goes first (ABBA...)."""
        rows = {
            kind: Row(mode, nodelay, loadgen.clients, pattern, kind, events, rate)
            for kind in (TASKEVENTS, RAW)
        }
        for round_ in range(rounds):
            order = (RAW, TASKEVENTS) if round_ % 2 == 0 else (TASKEVENTS, RAW)
            for kind in order:
                self.progress(
                    f"{label_of(mode, nodelay)}: {loadgen.clients} clients, {pattern} {kind}, "
                    f"round {round_ + 1}/{rounds} ({events} events)"
                )
                self.phase(loadgen, rows[kind], kind, events, rate)
        for row in rows.values():
            self.finish_row(loadgen, row)
        te, raw = rows[TASKEVENTS], rows[RAW]
        if te.delivered_per_s and raw.delivered_per_s:
            te.ratio = te.delivered_per_s / raw.delivered_per_s
        for ours, theirs in zip(te.phase_log, raw.phase_log, strict=False):
            if ours["window_ms"] > 0 and theirs["window_ms"] > 0 and theirs["received"]:
                te.round_ratios.append(
                    (ours["received"] / ours["window_ms"])
                    / (theirs["received"] / theirs["window_ms"])
                )
            if ours["received"] and theirs["received"] and ours["server_cpu_s"] > 0:
                te.cpu_round_ratios.append(
                    (theirs["server_cpu_s"] / theirs["received"])
                    / (ours["server_cpu_s"] / ours["received"])
                )
        return [te, raw]

    def warm_up(self, loadgen: LoadGen, events: int) -> None:
        for kind in (RAW, TASKEVENTS):
            self.phase(loadgen, None, kind, events, 0.0)
        for kind in (RAW, TASKEVENTS):
            loadgen.report(f"{kind}/warmup")

    def flood(self, loadgen: LoadGen, mode: str, events: int, yield_every: int) -> dict[str, Any]:
        how = f", a 1 ms sleep every {yield_every:,} calls" if yield_every else ""
        self.progress(f"{mode}: flood, {events:,} progress events{how}, {loadgen.clients} clients")
        phase_id = f"flood{next(self.counter)}"
        timeout = PHASE_SLACK + events / 10_000
        loadgen.arm(phase_id, "flood", FLOOD_SUBJECT, timeout, detail=True)
        cpu_before = self.server.cpu()
        sent: dict[str, Any] = self.server.post(
            "/bench/flood", {"events": events, "yield_every": yield_every}, timeout + 5
        )
        done = loadgen.expect("done", timeout + 10)
        cpu_after = self.server.cpu()
        loadgen.report("flood")
        snapshot = self.server.get(f"/api/tasks/{FLOOD_SUBJECT}")
        after = self.server.get("/bench/adapter")
        before = sent.pop("adapter_before", {})
        return {
            "mode": mode,
            "clients": loadgen.clients,
            "server": sent,
            "loadgen": done,
            "snapshot": {"seq": snapshot.get("seq"), "status": snapshot["status"].get("status")},
            "adapter": {key: after[key] - before.get(key, 0) for key in after},
            "server_cpu_s": cpu_after - cpu_before,
            "progress_interval": self.server.info.get("progress_interval"),
        }


def _connect(
    node: str, url: str, clients: int, result: dict[str, Any], progress: Callable[[str], None]
) -> LoadGen:
    """A connected load generator; one retry (a VM pause can fire its connect timeout)."""
    try:
        return LoadGen(node, url, clients)
    except BenchError as exc:
        result["warnings"].append(f"connecting {clients} clients failed, retrying once: {exc}")
        progress(f"connecting {clients} clients failed ({exc}); retrying once")
        return LoadGen(node, url, clients)


def run_setup(
    mode: str,
    nodelay: bool,
    clients: Sequence[int],
    settings: Settings,
    node: str,
    workdir: Path,
    progress: Callable[[str], None],
    *,
    floods: bool,
) -> dict[str, Any]:
    """Every measurement against one server (an async mode, with or without
    TCP_NODELAY): the patterns of ``settings`` at each of ``clients``, and the floods
    if ``floods``."""
    label = label_of(mode, nodelay)
    result: dict[str, Any] = {
        "mode": mode,
        "nodelay": nodelay,
        "rows": [],
        "floods": [],
        "warnings": [],
        "loadgen": [],
    }
    progress(f"{label}: starting the server")
    server = Server(mode, workdir, tcp_nodelay=nodelay)
    flood_runs = []
    if floods and settings.floods:
        flood_runs.append(0)
        if mode == "gevent" and settings.flood_yield_every > 0:
            flood_runs.append(settings.flood_yield_every)
    patterns = settings.patterns
    try:
        runner = Runner(server, progress)
        result["server"] = server.info
        if "paced" in patterns:
            result["wake_probe"] = server.get("/bench/probe", timeout=40.0)
        for count in clients if patterns else ():
            progress(f"{label}: connecting {count} clients")
            loadgen = _connect(node, server.url, count, result, progress)
            try:
                result["loadgen"].append(loadgen.ready)
                runner.warm_up(loadgen, settings.warmup_events)
                for pattern in patterns:
                    if pattern == "paced":
                        events, rate = _even(settings.rate * settings.seconds), settings.rate
                    else:
                        events = min(MAX_BURST_EVENTS, _even(settings.burst_deliveries / count))
                        rate = 0.0
                    result["rows"] += runner.compare(
                        loadgen, mode, nodelay, pattern, events, rate, settings.rounds
                    )
                if count == settings.flood_clients:
                    while flood_runs:
                        result["floods"].append(
                            runner.flood(loadgen, mode, settings.flood_events, flood_runs.pop(0))
                        )
            finally:
                result["warnings"] += loadgen.warnings
                loadgen.close()
        if flood_runs:
            progress(f"{label}: connecting {settings.flood_clients} clients for the flood")
            loadgen = _connect(node, server.url, settings.flood_clients, result, progress)
            try:
                result["loadgen"].append(loadgen.ready)
                while flood_runs:
                    result["floods"].append(
                        runner.flood(loadgen, mode, settings.flood_events, flood_runs.pop(0))
                    )
            finally:
                result["warnings"] += loadgen.warnings
                loadgen.close()
    finally:
        server.close()
    return result


@dataclass
class FloodSummary:
    mode: str
    clients: int
    progress_events: int
    yield_every: int
    per_call_us: float
    bare_per_call_us: float
    loop_s: float
    progress_min: int
    progress_max: int
    #: The longest client window: from its first message (started) to its last (completed).
    window_s: float
    #: Progress updates per second over the window, the highest over clients; None when
    #: every window is shorter than 0.1 s (the whole flood reached the client at once).
    progress_per_s: float | None
    #: 1 / the mean gap between consecutive progress updates, leaving out the last one
    #: (flushed at once before task_completed), the highest over clients; None with
    #: fewer than 3 updates.
    steady_per_s: float | None
    #: The shortest gap between consecutive progress updates (same set), over clients.
    min_gap_ms: float | None
    lifecycle_ok: bool
    completed_ms: float | None  # the highest over clients
    started_ms: float | None
    final_seq_expected: int
    snapshot_seq: int | None
    snapshot_status: str | None
    clients_last_seq: list[int]
    timed_out: bool
    adapter: dict[str, int]
    server_cpu_s: float

    @property
    def variant(self) -> str:
        return f"1 ms sleep every {self.yield_every:,}" if self.yield_every else "tight loop"

    @property
    def final_ok(self) -> bool:
        return (
            self.snapshot_seq == self.final_seq_expected
            and self.snapshot_status == "idle"
            and all(seq == self.final_seq_expected for seq in self.clients_last_seq)
        )

    @property
    def rate_ok(self) -> bool:
        return self.steady_per_s is None or self.steady_per_s <= TARGET_PROGRESS_PER_S


def summarize_flood(flood: dict[str, Any]) -> FloodSummary:
    server, loadgen = flood["server"], flood["loadgen"]
    if "error" in server:
        raise BenchError(f"flood in {flood['mode']} mode: {server['error']}")
    clients = loadgen.get("clients", [])
    counts = [c["by_type"].get("task_progress", 0) for c in clients] or [0]
    windows = [c["window_ms"] / 1000.0 for c in clients] or [0.0]
    rates = [n / w for n, w in zip(counts, windows, strict=True) if w >= 0.1]
    steady: list[float] = []
    gaps: list[float] = []
    for c in clients:
        times = c["progress_ms"][:-1]  # the last one goes at once before task_completed
        if len(times) >= 2:
            span = times[-1] - times[0]
            steady.append((len(times) - 1) / (span / 1000.0) if span > 0 else float("inf"))
            gaps.append(min(b - a for a, b in itertools.pairwise(times)))
    lifecycle_ok = len(clients) == flood["clients"] and all(
        c["by_type"].get("task_started", 0) == 1 and c["by_type"].get("task_completed", 0) == 1
        for c in clients
    )
    completed = [v for c in clients for v in c["completed_latency_ms"]]
    started = [v for c in clients for v in c["started_latency_ms"]]
    return FloodSummary(
        mode=flood["mode"],
        clients=flood["clients"],
        progress_events=int(server["progress_events"]),
        yield_every=int(server["yield_every"]),
        per_call_us=float(server["per_call_us"]),
        bare_per_call_us=float(server["bare_per_call_us"]),
        loop_s=float(server["loop_s"]),
        progress_min=min(counts),
        progress_max=max(counts),
        window_s=max(windows),
        progress_per_s=max(rates) if rates else None,
        steady_per_s=max(steady) if steady else None,
        min_gap_ms=min(gaps) if gaps else None,
        lifecycle_ok=lifecycle_ok,
        completed_ms=max(completed) if completed else None,
        started_ms=max(started) if started else None,
        final_seq_expected=int(server["final_seq"]),
        snapshot_seq=flood["snapshot"]["seq"],
        snapshot_status=flood["snapshot"]["status"],
        clients_last_seq=[int(c["last_seq"]) for c in clients],
        timed_out=bool(loadgen.get("timed_out")),
        adapter=flood["adapter"],
        server_cpu_s=float(flood["server_cpu_s"]),
    )
