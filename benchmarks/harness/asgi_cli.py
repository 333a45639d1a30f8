"""The ASGI benchmark's command line (``benchmarks/asgi_bench.py``): options, the run,
the report and the JSON document."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import urllib.error
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .asgi_measure import ASGI_SCENARIOS, AsgiSettings, run_asgi
from .asgi_report import asgi_environment, lag_targets, print_report, ratio_summary
from .asgi_server import EMITTERS, LOOPS
from .cli import number_list, quick_picker
from .config import (
    DEFAULT_BURST_DELIVERIES,
    DEFAULT_CLIENTS,
    DEFAULT_FLOOD_CLIENTS,
    DEFAULT_RATE,
    DEFAULT_ROUNDS,
    DEFAULT_SECONDS,
    TIMES,
    BenchError,
)
from .control import NODE_NEEDED, have_node
from .machine import write_json
from .report import begin, finish, show_progress, throughput_targets

__all__ = ["ASGI_QUICK", "main", "parse_args"]

DEFAULT_FLOOD_SECONDS = 3.0
#: An upper bound of progress calls per flood (a thread calling emitter.progress in a
#: tight loop makes a few hundred thousand a second).
DEFAULT_FLOOD_MAX_EVENTS = 1_000_000
ASGI_QUICK: dict[str, Any] = {
    "clients": [1, 3],
    "seconds": 0.4,
    "rounds": 1,
    "burst_deliveries": 600,
    "flood_seconds": 0.5,
    "flood_clients": 3,
}


def _choices(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [v for v in values if v not in allowed]
        if not values or unknown:
            raise argparse.ArgumentTypeError(f"expected some of {', '.join(allowed)}: {text!r}")
        return values

    return parse


def parse_args(argv: Sequence[str] | None) -> tuple[AsgiSettings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="asgi_bench.py",
        description="Socket.IO fan-out on the ASGI server (uvicorn, python-socketio "
        "AsyncServer): taskevents' AsyncSocketIOAdapter against raw AsyncServer.emit, "
        "from a coroutine and from a thread, to N socket.io-client sockets in one Node "
        "process; and the event loop's lag while a task floods progress.",
    )
    parser.add_argument(
        "--scenarios",
        type=_choices(ASGI_SCENARIOS),
        default=None,
        help=f"some of {','.join(ASGI_SCENARIOS)} (default: all of them)",
    )
    parser.add_argument(
        "--emitters",
        type=_choices(EMITTERS),
        default=None,
        help=f"where the events are emitted from: some of {','.join(EMITTERS)} (default: both)",
    )
    parser.add_argument(
        "--clients",
        type=number_list(int, 1),
        default=None,
        help=f"client counts (default {','.join(map(str, DEFAULT_CLIENTS))})",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"phases per path and pattern (default {DEFAULT_ROUNDS})",
    )
    parser.add_argument(
        "--rate", type=float, default=None, help=f"paced events/s (default {DEFAULT_RATE:g})"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help=f"per paced phase (default {DEFAULT_SECONDS:g})"
    )
    parser.add_argument(
        "--burst-deliveries",
        type=int,
        default=None,
        help=f"events x clients per burst phase (default {DEFAULT_BURST_DELIVERIES:,}; "
        "0: no burst)",
    )
    parser.add_argument(
        "--flood-seconds",
        type=float,
        default=None,
        help=f"each progress flood of the lag scenario (default {DEFAULT_FLOOD_SECONDS:g}; "
        "0: no lag scenario)",
    )
    parser.add_argument(
        "--flood-clients",
        type=int,
        default=None,
        help=f"clients during the floods (default {DEFAULT_FLOOD_CLIENTS})",
    )
    parser.add_argument(
        "--flood-max-events",
        type=int,
        default=None,
        help=f"at most this many progress calls per flood (default {DEFAULT_FLOOD_MAX_EVENTS:,})",
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="the server's event loop (default auto: uvloop when installed)",
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=0.0,
        help="the adapter's progress_interval (default 0: only the queue coalesces)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes for a smoke test (numbers are not meaningful); explicit options win",
    )
    parser.add_argument("--node", default=None, help="the node executable (default: on PATH)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    pick = quick_picker(args, ASGI_QUICK)
    chosen = list(pick("scenarios", list(ASGI_SCENARIOS)))
    settings = AsgiSettings(
        scenarios=[s for s in ASGI_SCENARIOS if s in chosen],
        emitters=[e for e in EMITTERS if e in pick("emitters", list(EMITTERS))],
        clients=list(pick("clients", list(DEFAULT_CLIENTS))),
        rate=float(pick("rate", DEFAULT_RATE)),
        seconds=float(pick("seconds", DEFAULT_SECONDS)),
        rounds=int(pick("rounds", DEFAULT_ROUNDS)),
        burst_deliveries=int(pick("burst_deliveries", DEFAULT_BURST_DELIVERIES)),
        flood_seconds=float(pick("flood_seconds", DEFAULT_FLOOD_SECONDS)),
        flood_clients=int(pick("flood_clients", DEFAULT_FLOOD_CLIENTS)),
        flood_max_events=int(pick("flood_max_events", DEFAULT_FLOOD_MAX_EVENTS)),
        loop=str(args.loop),
        progress_interval=float(args.progress_interval),
        quick=bool(args.quick),
    )
    if settings.rate <= 0 or settings.seconds <= 0 or settings.rounds < 1:
        parser.error("--rate and --seconds must be > 0, --rounds >= 1")
    if settings.burst_deliveries < 0 or settings.flood_seconds < 0:
        parser.error("--burst-deliveries and --flood-seconds must be >= 0")
    if settings.flood_clients < 1 or settings.flood_max_events < 1:
        parser.error("--flood-clients and --flood-max-events must be >= 1")
    if settings.progress_interval < 0:
        parser.error("--progress-interval must be >= 0")
    return settings, args


def _describe(settings: AsgiSettings) -> str:
    parts = [f"emitters {','.join(settings.emitters)}"]
    if settings.patterns:
        parts.append(f"clients {','.join(map(str, settings.clients))}")
    if "paced" in settings.patterns:
        parts.append(
            f"paced {settings.rate:g} events/s {TIMES} {settings.seconds:g} s {TIMES} "
            f"{settings.rounds} rounds per path"
        )
    if "burst" in settings.patterns:
        parts.append(
            f"burst {settings.burst_deliveries:,} deliveries per phase {TIMES} "
            f"{settings.rounds} rounds per path"
        )
    if settings.lag:
        parts.append(
            f"loop lag: {settings.flood_seconds:g} s progress floods to "
            f"{settings.flood_clients} clients"
        )
    parts.append(f"loop {settings.loop}, progress_interval {settings.progress_interval:g}")
    return "; ".join(parts) + (" (quick: numbers are not meaningful)" if settings.quick else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ASGI benchmark as the command line says, print the report, and return 0
    whatever the numbers are."""
    settings, args = parse_args(argv)
    node = args.node or shutil.which("node")
    env = asgi_environment(node)
    title = f"socket.io fan-out on ASGI ({', '.join(settings.scenarios)})"
    load_before = begin(title, env, _describe(settings))

    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    if not have_node(node):
        errors.append(NODE_NEEDED)
    else:
        with tempfile.TemporaryDirectory(prefix="asgi_bench-") as tmp:
            try:
                results.append(run_asgi(settings, node, Path(tmp), show_progress))
            except (BenchError, OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                errors.append(f"asgi: {type(exc).__name__}: {exc}")
    wall = time.perf_counter() - started

    rows, lags = print_report(settings, results, errors)
    load_after = finish(errors, env, wall)

    if args.json:
        document = {
            "benchmark": "asgi_bench",
            "settings": asdict(settings),
            "environment": env,
            "load_average": {"before": load_before, "after": load_after},
            "results": [
                {
                    **{k: v for k, v in result.items() if k not in ("rows", "lag")},
                    "rows": [row.to_dict() for row in result["rows"]],
                    "lag": [row.to_dict() for row in result["lag"]],
                }
                for result in results
            ],
            "ratios": ratio_summary(rows),
            "targets": throughput_targets(rows) + lag_targets(lags),
            "errors": errors,
            "wall_time_s": wall,
        }
        write_json(args.json, document)
    return 0
