"""The Redis benchmark's measurements (``benchmarks/redis_bench.py``): end-to-end latency
of three emit paths in interleaved rounds, the store's record throughput, and the
1,000-client fan-out."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import PHASE_SLACK, BenchError
from .measure import PhaseCounts
from .redis_common import LATENCY_SUBJECT, WARMUP_EVENTS, fanout_subjects
from .redis_control import RedisInfo, SpreadLoadGen, WebServer, Worker

__all__ = [
    "LATENCY_PATHS",
    "FanoutRow",
    "LatencyRow",
    "Settings",
    "StoreRow",
    "median_or_none",
    "run_fanout",
    "run_latency",
    "run_store_rates",
]

Progress = Callable[[str], None]

#: The latency paths: key, emitting process, store, how the event reaches the clients.
MEMORY, REDIS_LOCAL, REDIS_WORKER = "in-process", "web on Redis", "worker via Redis"
LATENCY_PATHS: dict[str, tuple[str, str, str]] = {
    MEMORY: ("web process", "memory", "its own adapter"),
    REDIS_LOCAL: ("web process", "Redis", "its own adapter"),
    REDIS_WORKER: ("worker process", "Redis", "web process's bridge"),
}


@dataclass
class Settings:
    rounds: int
    latency_clients: int
    latency_events: int
    rate: float
    store_calls: int
    store_threads: list[int]
    store_rounds: int
    fanout_clients: int
    fanout_subjects: int
    fanout_tasks: int
    fanout_progress: int
    fanout_rates: list[float]
    connect_concurrency: int
    tcp_nodelay: bool
    quick: bool


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def _add(total: float | None, value: float | None) -> float | None:
    return None if total is None or value is None else total + value


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# -- latency --------------------------------------------------------------------------


@dataclass
class LatencyRow(PhaseCounts):
    path: str
    clients: int
    events_per_phase: int
    rate: float
    phases: int = 0
    emitted: int = 0
    expected: int = 0
    received: int = 0
    latency: dict[str, Any] = field(default_factory=dict)
    #: The p50 and p99 of each phase, in the order they ran.
    round_p50: list[float] = field(default_factory=list)
    round_p99: list[float] = field(default_factory=list)
    #: The emit call's median in each phase (µs).
    call_us_p50: list[float] = field(default_factory=list)
    web_cpu_s: float = 0.0
    worker_cpu_s: float = 0.0
    redis_cpu_s: float | None = 0.0
    timed_out: int = 0
    seq_errors: int = 0
    disconnects: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def emitter(self) -> str:
        return LATENCY_PATHS[self.path][0]

    @property
    def store(self) -> str:
        return LATENCY_PATHS[self.path][1]

    def per_delivery_us(self, seconds: float | None) -> float | None:
        return None if seconds is None or not self.received else seconds / self.received * 1e6

    def per_event_us(self, seconds: float | None) -> float | None:
        return None if seconds is None or not self.emitted else seconds / self.emitted * 1e6

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            lost=self.lost,
            emitter=self.emitter,
            store=self.store,
            web_cpu_us_per_delivery=self.per_delivery_us(self.web_cpu_s),
            worker_cpu_us_per_event=self.per_event_us(self.worker_cpu_s),
            redis_cpu_us_per_event=self.per_event_us(self.redis_cpu_s),
        )
        return data


def run_latency(
    settings: Settings,
    servers: dict[str, WebServer],
    loadgens: dict[str, SpreadLoadGen],
    worker: Worker,
    redis: RedisInfo,
    progress: Progress,
) -> list[LatencyRow]:
    """``settings.rounds`` rounds; each runs one phase per path, the first path rotating
    from round to round (A B C, B C A, C A B, ...), after one warm-up phase per path."""
    keys = list(LATENCY_PATHS)
    rows = {
        key: LatencyRow(key, settings.latency_clients, settings.latency_events, settings.rate)
        for key in keys
    }
    counter = iter(range(1, 1_000_000))

    def phase(key: str, events: int, row: LatencyRow | None) -> None:
        server = servers[MEMORY if key == MEMORY else REDIS_LOCAL]
        loadgen = loadgens[server.name]
        group = key if row is not None else f"{key}/warmup"
        timeout = events / settings.rate + PHASE_SLACK
        ident = f"lat{next(counter)}"
        loadgen.arm(ident, group, LATENCY_SUBJECT, timeout, detail=True)
        web0, worker0, redis0 = server.cpu(), worker.cpu(), redis.cpu()
        command = {"subject": LATENCY_SUBJECT, "events": events, "rate": settings.rate}
        if key == REDIS_WORKER:
            sent = worker.run({"cmd": "lifecycle", **command}, timeout + 5)
        else:
            sent = server.post("/bench/run", command, timeout + 5)
        done = loadgen.expect("done", timeout + 10)
        web1, worker1, redis1 = server.cpu(), worker.cpu(), redis.cpu()
        if row is None or not row.count_phase(events, loadgen.clients, done, sent):
            return
        if sent.get("call_us_p50") is not None:
            row.call_us_p50.append(float(sent["call_us_p50"]))
        row.web_cpu_s += web1 - web0
        if key == REDIS_WORKER:
            row.worker_cpu_s += _delta(worker1, worker0) or 0.0
        row.redis_cpu_s = _add(row.redis_cpu_s, _delta(redis1, redis0))
        latency = done.get("latency") or {}
        if latency.get("p50_ms") is not None:
            row.round_p50.append(float(latency["p50_ms"]))
            row.round_p99.append(float(latency["p99_ms"]))

    progress(f"latency: warming up ({WARMUP_EVENTS} events per path)")
    for key in keys:
        phase(key, WARMUP_EVENTS, None)
    for loadgen in loadgens.values():
        for key in keys:
            loadgen.report(f"{key}/warmup")
    for round_ in range(settings.rounds):
        order = keys[round_ % len(keys) :] + keys[: round_ % len(keys)]
        progress(
            f"latency: round {round_ + 1}/{settings.rounds} ({' / '.join(order)}; "
            f"{settings.latency_events} events at {settings.rate:g}/s each)"
        )
        for key in order:
            phase(key, settings.latency_events, rows[key])
    for key, row in rows.items():
        loadgen = loadgens[servers[MEMORY if key == MEMORY else REDIS_LOCAL].name]
        row.count_report(loadgen.report(key))
    return [rows[key] for key in keys]


# -- store throughput -----------------------------------------------------------------


@dataclass
class StoreRow:
    store: str
    threads: int
    calls_per_thread: int
    events_per_s: list[float] = field(default_factory=list)
    call_us_p50: list[float] = field(default_factory=list)
    call_us_p99: list[float] = field(default_factory=list)
    events: int = 0
    worker_cpu_s: float = 0.0
    redis_cpu_s: float | None = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def median_per_s(self) -> float | None:
        return median_or_none(self.events_per_s)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            median_events_per_s=self.median_per_s,
            worker_cpu_us_per_event=self.worker_cpu_s / self.events * 1e6 if self.events else None,
            redis_cpu_us_per_event=(
                self.redis_cpu_s / self.events * 1e6
                if self.events and self.redis_cpu_s is not None
                else None
            ),
        )
        return data


def run_store_rates(
    settings: Settings, worker: Worker, redis: RedisInfo, progress: Progress
) -> list[StoreRow]:
    """``emitter.progress()`` on a started task, through MemoryStateStore and
    RedisStateStore, at each thread count; configurations interleaved round by round."""
    configs = [
        (store, threads) for store in ("memory", "redis") for threads in settings.store_threads
    ]
    rows = {config: StoreRow(config[0], config[1], settings.store_calls) for config in configs}
    for round_ in range(settings.store_rounds):
        shift = round_ % len(configs)
        order = configs[shift:] + configs[:shift]
        progress(
            f"store: round {round_ + 1}/{settings.store_rounds} "
            f"({settings.store_calls:,} progress calls per thread per configuration)"
        )
        for store, threads in order:
            row = rows[(store, threads)]
            redis0 = redis.cpu()
            answer = worker.run(
                {
                    "cmd": "store_rate",
                    "store": store,
                    "threads": threads,
                    "calls": settings.store_calls,
                },
                PHASE_SLACK + settings.store_calls * threads / 500,
            )
            redis1 = redis.cpu()
            if answer.get("events_per_s") is None:
                row.errors.append(str(answer))
                continue
            row.events_per_s.append(float(answer["events_per_s"]))
            row.events += int(answer["events"])
            row.worker_cpu_s += float(answer["cpu_s"])
            row.redis_cpu_s = _add(row.redis_cpu_s, _delta(redis1, redis0))
            if answer.get("call_us_p50") is not None:
                row.call_us_p50.append(float(answer["call_us_p50"]))
                row.call_us_p99.append(float(answer["call_us_p99"]))
    return [rows[config] for config in configs]


# -- fan-out --------------------------------------------------------------------------


@dataclass
class FanoutRow:
    clients: int
    subjects: int
    tasks: int
    progress_per_task: int
    rate: float  # the worker's events/s (0: back to back)
    connected: int = 0
    emitted: int = 0
    loop_s: float = 0.0
    #: Lifecycle updates (started, completed) each client should get: its subject's.
    lifecycle_per_client: int = 0
    progress_emitted_per_subject: int = 0
    phase_clients: int = 0
    received: int = 0
    lifecycle_received: int = 0
    #: Expected lifecycle updates some client did not get (clients missing from the
    #: phase count for all of theirs).
    lost: int = 0
    #: Lifecycle updates beyond the expected ones (duplicates).
    extra: int = 0
    clients_short: int = 0
    delivered_per_s: float | None = None
    latency: dict[str, Any] = field(default_factory=dict)
    web_cpu_s: float = 0.0
    worker_cpu_s: float = 0.0
    redis_cpu_s: float | None = None
    call_us_p50: float | None = None
    timed_out: bool = False
    seq_errors: int = 0
    disconnects: int = 0
    adapter: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def web_cpu_us_per_delivery(self) -> float | None:
        return self.web_cpu_s / self.received * 1e6 if self.received else None

    @property
    def progress_received(self) -> int:
        return self.received - self.lifecycle_received

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            web_cpu_us_per_delivery=self.web_cpu_us_per_delivery,
            progress_received=self.progress_received,
        )
        return data


def run_fanout(
    settings: Settings,
    server: WebServer,
    worker: Worker,
    redis: RedisInfo,
    node: str,
    progress: Progress,
) -> tuple[list[FanoutRow], dict[str, Any]]:
    """``settings.fanout_clients`` sockets on ``server``, socket i subscribed to subject
    i % ``fanout_subjects``; the worker runs tasks on every subject, once per rate in
    ``settings.fanout_rates`` (after a warm-up task on every subject)."""
    subjects = fanout_subjects(settings.fanout_subjects)
    progress(
        f"fan-out: connecting {settings.fanout_clients:,} clients, each subscribed to one of "
        f"{len(subjects)} subjects"
    )
    loadgen = SpreadLoadGen(
        node,
        server.url,
        settings.fanout_clients,
        subjects,
        "spread",
        settings.connect_concurrency,
    )
    info: dict[str, Any] = {"loadgen": loadgen.ready}
    rows: list[FanoutRow] = []
    try:
        info["connected"] = int(server.get("/bench/adapter")["clients"])
        counter = iter(range(1, 1_000_000))

        def phase(tasks: int, progress_per_task: int, rate: float, group: str) -> FanoutRow:
            row = FanoutRow(settings.fanout_clients, len(subjects), tasks, progress_per_task, rate)
            row.connected = info["connected"]
            events = tasks * (2 + progress_per_task) * len(subjects)
            timeout = (events / rate if rate > 0 else events / 500) + PHASE_SLACK
            ident = f"fan{next(counter)}"
            loadgen.arm(ident, group, subjects, timeout)
            before = server.get("/bench/adapter")["stats"]
            web0, worker0, redis0 = server.cpu(), worker.cpu(), redis.cpu()
            sent = worker.run(
                {
                    "cmd": "fanout",
                    "subjects": subjects,
                    "tasks": tasks,
                    "progress": progress_per_task,
                    "rate": rate,
                },
                timeout + 5,
            )
            done = loadgen.expect("done", timeout + 10)
            web1, worker1, redis1 = server.cpu(), worker.cpu(), redis.cpu()
            after = server.get("/bench/adapter")["stats"]
            report = loadgen.report(group)
            row.emitted = int(sent["emitted"])
            row.loop_s = float(sent["loop_s"])
            row.call_us_p50 = sent.get("call_us_p50")
            row.lifecycle_per_client = int(sent["lifecycle_per_subject"])
            row.progress_emitted_per_subject = int(sent["progress_per_subject"])
            counts = [int(n) for n in done.get("per_client_lifecycle", [])]
            row.phase_clients = len(counts)
            row.received = int(done["received"])
            row.lifecycle_received = sum(counts)
            expected = row.lifecycle_per_client
            missing_clients = max(0, settings.fanout_clients - len(counts))
            row.lost = sum(max(0, expected - n) for n in counts) + missing_clients * expected
            row.extra = sum(max(0, n - expected) for n in counts)
            row.clients_short = sum(1 for n in counts if n < expected) + missing_clients
            row.delivered_per_s = report.get("delivered_per_s")
            row.latency = report.get("latency", {})
            row.web_cpu_s = web1 - web0
            row.worker_cpu_s = _delta(worker1, worker0) or 0.0
            row.redis_cpu_s = _delta(redis1, redis0)
            row.timed_out = bool(done["timed_out"])
            row.seq_errors = int(done.get("seq_errors", 0))
            row.disconnects = int(done.get("disconnects", 0))
            row.adapter = {
                key: after[key] - before.get(key, 0)
                for key in after
                if isinstance(after[key], int | float)
            }
            return row

        progress("fan-out: warm-up (one task on every subject)")
        warmup = phase(1, 0, 0.0, "fanout/warmup")
        info["warmup"] = {"lost": warmup.lost, "extra": warmup.extra}
        if warmup.lost:
            raise BenchError(
                f"the fan-out's warm-up lost {warmup.lost} lifecycle updates "
                f"({warmup.clients_short} clients short); see the web process's log"
            )
        for rate in settings.fanout_rates:
            how = f"{rate:,.0f} events/s" if rate > 0 else "back to back"
            progress(
                f"fan-out: {settings.fanout_tasks} tasks x {len(subjects)} subjects, "
                f"{settings.fanout_progress} progress each, {how}"
            )
            rows.append(
                phase(
                    settings.fanout_tasks,
                    settings.fanout_progress,
                    rate,
                    f"fanout/{rate:g}",
                )
            )
    finally:
        info["warnings"] = loadgen.warnings
        loadgen.close()
    return rows, info
