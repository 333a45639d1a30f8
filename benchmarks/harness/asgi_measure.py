"""The ASGI benchmark, from the orchestrator's side: the server subprocess
(:class:`AsgiServer`, :mod:`harness.asgi_server`), what to run (:class:`AsgiSettings`),
the whole run against one server (:func:`run_asgi`) and the loop-lag rows
(:class:`LagRow`).

The throughput phases are :class:`harness.measure.Runner`'s, unchanged: the same
lifecycle events, rounds (ABBA...), load generator and rows as the Flask-SocketIO
benchmark; before each emitter variant the server is told where to emit from
(``POST /bench/where``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .asgi_server import ASGI_SUBJECTS, IDLE, LAUNCHER, RAW_FLOOD_SUBJECT, SPIN
from .config import FLOOD_SUBJECT, HERE, MAX_BURST_EVENTS, PHASE_SLACK, RAW, TASKEVENTS, BenchError
from .control import LoadGen, Server
from .measure import Runner

__all__ = [
    "CONTROLS",
    "IDLE",
    "LAG_PATTERN",
    "SPIN",
    "AsgiServer",
    "AsgiSettings",
    "LagRow",
    "emitter_label",
    "run_asgi",
]

#: The throughput patterns, in the order they run.
PATTERNS = ("paced", "burst")
#: The scenarios: the two patterns, and the floods with the loop's lag.
ASGI_SCENARIOS = (*PATTERNS, "lag")
#: The lag rows without a flood: the ticker alone, and while a thread spins.
CONTROLS = (IDLE, SPIN)
#: How the load generator groups the flood phases.
LAG_PATTERN = "lag"


def emitter_label(where: str) -> str:
    """The ``mode`` column of the throughput rows emitted from ``where``."""
    return f"asgi, {where}"


class AsgiServer(Server):
    """The ASGI benchmark server in a subprocess (uvicorn, ``AsyncServer``,
    ``AsyncSocketIOAdapter``)."""

    def __init__(self, workdir: Path, *, loop: str, progress_interval: float) -> None:
        self.mode = "asgi"
        options = ["--loop", loop, "--progress-interval", repr(progress_interval)]
        log = workdir / "server-asgi.log"
        self._launch("ASGI server", [LAUNCHER, str(HERE)], options, log)

    def emit_from(self, where: str) -> None:
        """Emit the next runs from ``where`` (one of ``EMITTERS``)."""
        answer = self.post("/bench/where", {"where": where}, 10.0)
        if answer.get("where") != where:
            raise BenchError(f"the server did not switch to {where}: {answer}")


@dataclass
class AsgiSettings:
    """What to run: the scenarios (``paced``, ``burst``, ``lag``) and their sizes."""

    scenarios: list[str]
    emitters: list[str]
    clients: list[int]
    rate: float
    seconds: float
    rounds: int
    burst_deliveries: int
    flood_seconds: float
    flood_clients: int
    flood_max_events: int
    loop: str
    progress_interval: float
    quick: bool

    @property
    def patterns(self) -> list[str]:
        skip = {"burst"} if self.burst_deliveries <= 0 else set()
        return [p for p in PATTERNS if p in self.scenarios and p not in skip]

    @property
    def lag(self) -> bool:
        return "lag" in self.scenarios and self.flood_seconds > 0

    @property
    def warmup_events(self) -> int:
        return 20 if self.quick else 200


@dataclass
class LagRow:
    """One flood (or the idle ticker) and the loop's lag while it ran."""

    kind: str  # taskevents, raw, or a control: idle, spin
    where: str  # coroutine, thread, or "-" (idle)
    clients: int
    progress_events: int = 0
    loop_s: float = 0.0
    #: From the flood's first emit until everything emitted was sent (the ticker's run).
    window_s: float = 0.0
    cpu_s: float = 0.0
    lag: dict[str, Any] = field(default_factory=dict)
    adapter: dict[str, int] = field(default_factory=dict)
    progress_min: int = 0
    progress_max: int = 0
    lifecycle_ok: bool = True
    started_ms: float | None = None
    completed_ms: float | None = None
    timed_out: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def calls_per_s(self) -> float | None:
        if self.kind in CONTROLS or self.loop_s <= 0:
            return None
        return self.progress_events / self.loop_s

    @property
    def p99_ms(self) -> float | None:
        value = self.lag.get("p99_ms")
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "calls_per_s": self.calls_per_s}


def _even(value: float) -> int:
    return max(2, int(value) + int(value) % 2)


def _loadgen(node: str, url: str, clients: int, result: dict[str, Any], say: Any) -> LoadGen:
    """A load generator subscribed to the ASGI subjects; one retry (a VM pause can fire
    its connect timeout)."""
    try:
        return LoadGen(node, url, clients, ASGI_SUBJECTS)
    except BenchError as exc:
        result["warnings"].append(f"connecting {clients} clients failed, retrying once: {exc}")
        say(f"connecting {clients} clients failed ({exc}); retrying once")
        return LoadGen(node, url, clients, ASGI_SUBJECTS)


def lag_row(
    server: AsgiServer,
    loadgen: LoadGen,
    kind: str,
    where: str,
    settings: AsgiSettings,
    phase_id: str,
) -> LagRow:
    """One flood of ``kind``'s path from ``where`` (or the idle ticker) and what the
    clients received."""
    row = LagRow(kind, where if kind != IDLE else "-", loadgen.clients)
    timeout = settings.flood_seconds + PHASE_SLACK
    if kind not in CONTROLS:
        subject = FLOOD_SUBJECT if kind == TASKEVENTS else RAW_FLOOD_SUBJECT
        loadgen.arm(phase_id, LAG_PATTERN, subject, timeout, detail=True)
    body = {
        "kind": kind,
        "where": where,
        "seconds": settings.flood_seconds,
        "max_events": settings.flood_max_events,
    }
    sent: dict[str, Any] = server.post("/bench/lag", body, timeout + 5)
    if "error" in sent:
        row.errors.append(str(sent["error"]))
    row.progress_events = int(sent.get("progress_events", 0))
    row.loop_s = float(sent.get("loop_s", 0.0))
    row.window_s = float(sent.get("window_s", 0.0))
    row.cpu_s = float(sent.get("cpu_s", 0.0))
    row.lag = dict(sent.get("lag", {}))
    row.adapter = dict(sent.get("adapter", {}))
    if kind in CONTROLS:
        return row
    done = loadgen.expect("done", timeout + 10)
    loadgen.report(LAG_PATTERN)
    clients = done.get("clients", [])
    counts = [int(c["by_type"].get("task_progress", 0)) for c in clients] or [0]
    row.progress_min, row.progress_max = min(counts), max(counts)
    row.lifecycle_ok = len(clients) == loadgen.clients and all(
        c["by_type"].get("task_started", 0) == 1 and c["by_type"].get("task_completed", 0) == 1
        for c in clients
    )
    started = [v for c in clients for v in c["started_latency_ms"]]
    completed = [v for c in clients for v in c["completed_latency_ms"]]
    row.started_ms = max(started) if started else None
    row.completed_ms = max(completed) if completed else None
    row.timed_out = bool(done.get("timed_out"))
    return row


def lag_rows(
    server: AsgiServer,
    loadgen: LoadGen,
    settings: AsgiSettings,
    say: Callable[[str], None],
) -> list[LagRow]:
    """The idle ticker, then a flood of each path from each emitter (taskevents and raw
    alternating which goes first; before the thread's, a thread spinning)."""
    runs = [(IDLE, "-")]
    for index, where in enumerate(settings.emitters):
        if where == "thread":
            runs.append((SPIN, where))
        kinds = (TASKEVENTS, RAW) if index % 2 == 0 else (RAW, TASKEVENTS)
        runs += [(kind, where) for kind in kinds]
    rows = []
    names = {IDLE: "the ticker alone", SPIN: "a thread spinning, no emits"}
    for number, (kind, where) in enumerate(runs, 1):
        what = names.get(kind) or f"{kind} flood from a {where}"
        say(f"asgi: loop lag, {what}, {settings.flood_seconds:g} s, {loadgen.clients} clients")
        rows.append(lag_row(server, loadgen, kind, where, settings, f"lag{number}"))
    return rows


def run_asgi(
    settings: AsgiSettings,
    node: str,
    workdir: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Every measurement against one ASGI server: the patterns of ``settings`` from
    each emitter at each client count, then the floods with the loop's lag."""
    result: dict[str, Any] = {
        "mode": "asgi",
        "nodelay": False,
        "rows": [],
        "lag": [],
        "warnings": [],
        "loadgen": [],
    }
    say("asgi: starting the server")
    server = AsgiServer(workdir, loop=settings.loop, progress_interval=settings.progress_interval)
    lag_pending = settings.lag
    try:
        result["server"] = server.info
        runner = Runner(server, say)
        for count in settings.clients if settings.patterns else ():
            say(f"asgi: connecting {count} clients")
            loadgen = _loadgen(node, server.url, count, result, say)
            try:
                result["loadgen"].append(loadgen.ready)
                for where in settings.emitters:
                    server.emit_from(where)
                    runner.warm_up(loadgen, settings.warmup_events)
                    for pattern in settings.patterns:
                        if pattern == "paced":
                            events = _even(settings.rate * settings.seconds)
                            rate = settings.rate
                        else:
                            events = min(MAX_BURST_EVENTS, _even(settings.burst_deliveries / count))
                            rate = 0.0
                        result["rows"] += runner.compare(
                            loadgen,
                            emitter_label(where),
                            False,
                            pattern,
                            events,
                            rate,
                            settings.rounds,
                        )
                if lag_pending and count == settings.flood_clients:
                    lag_pending = False
                    result["lag"] += lag_rows(server, loadgen, settings, say)
            finally:
                result["warnings"] += loadgen.warnings
                loadgen.close()
        if lag_pending:
            say(f"asgi: connecting {settings.flood_clients} clients for the floods")
            loadgen = _loadgen(node, server.url, settings.flood_clients, result, say)
            try:
                result["loadgen"].append(loadgen.ready)
                result["lag"] += lag_rows(server, loadgen, settings, say)
            finally:
                result["warnings"] += loadgen.warnings
                loadgen.close()
        result["adapter"] = server.get("/bench/adapter")
    finally:
        server.close()
    return result
