"""The command line shared by the scenario scripts: options, the run, the report and the
JSON document.

A scenario script calls :func:`main` with the scenarios it runs; only their options are
offered. ``socketio_bench.py`` runs them all (``--scenarios`` picks some).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import (
    DEFAULT_BURST_DELIVERIES,
    DEFAULT_CLIENTS,
    DEFAULT_FLOOD_CLIENTS,
    DEFAULT_FLOOD_EVENTS,
    DEFAULT_FLOOD_YIELD_EVERY,
    DEFAULT_RATE,
    DEFAULT_ROUNDS,
    DEFAULT_SECONDS,
    MODES,
    QUICK,
    TIMES,
    BenchError,
)
from .control import NODE_NEEDED, have_node
from .machine import write_json
from .measure import Settings, label_of, run_setup
from .report import (
    begin,
    environment,
    finish,
    flood_targets,
    print_results,
    show_progress,
    throughput_targets,
)

__all__ = ["SCENARIOS", "main", "number_list", "parse_args", "quick_picker"]

#: paced and burst: throughput and latency of both paths at each client count; flood:
#: emitter.progress() in a tight loop; nodelay: paced and burst again at the largest
#: client count with TCP_NODELAY on the server's connections.
SCENARIOS = ("paced", "burst", "flood", "nodelay")


def number_list(kind: type[int] | type[float], minimum: int) -> Callable[[str], list[Any]]:
    """An argparse type: numbers of ``kind`` separated by commas, each >= ``minimum``."""
    wanted = "positive numbers" if minimum == 1 else f"numbers >= {minimum}"

    def parse(text: str) -> list[Any]:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected numbers separated by commas: {text!r}"
            ) from None
        if not values or any(v < minimum for v in values):
            raise argparse.ArgumentTypeError(f"expected {wanted}: {text!r}")
        return values

    return parse


def quick_picker(args: argparse.Namespace, quick: dict[str, Any]) -> Callable[[str, Any], Any]:
    """``pick(name, default)``: the option ``name`` if given, else its ``quick`` size
    with ``--quick``, else ``default``."""

    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        if value is not None:
            return value
        return quick[name] if args.quick and name in quick else default

    return pick


def _choices(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [v for v in values if v not in allowed]
        if not values or unknown:
            raise argparse.ArgumentTypeError(f"expected some of {', '.join(allowed)}: {text!r}")
        return values

    return parse


def parse_args(
    scenarios: Sequence[str],
    argv: Sequence[str] | None,
    *,
    prog: str | None = None,
    description: str = "",
    clients: Sequence[int] = DEFAULT_CLIENTS,
) -> tuple[Settings, argparse.Namespace]:
    """The settings for ``scenarios`` from the command line (only their options are
    offered; ``--scenarios`` when there are several)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if len(scenarios) > 1:
        parser.add_argument(
            "--scenarios",
            type=_choices(scenarios),
            default=None,
            help=f"some of {','.join(scenarios)} (default: all of them)",
        )
    parser.add_argument(
        "--modes", type=_choices(MODES), default=None, help="threading,gevent (default: both)"
    )
    throughput = {"paced", "burst"} & set(scenarios)
    if throughput:
        parser.add_argument(
            "--clients",
            type=number_list(int, 1),
            default=None,
            help=f"client counts (default {','.join(map(str, clients))})",
        )
        parser.add_argument(
            "--rounds",
            type=int,
            default=None,
            help=f"phases per path and pattern (default {DEFAULT_ROUNDS})",
        )
    if "paced" in scenarios:
        parser.add_argument(
            "--rate", type=float, default=None, help=f"paced events/s (default {DEFAULT_RATE:g})"
        )
        parser.add_argument(
            "--seconds",
            type=float,
            default=None,
            help=f"per paced phase (default {DEFAULT_SECONDS:g})",
        )
    if "burst" in scenarios:
        parser.add_argument(
            "--burst-deliveries",
            type=int,
            default=None,
            help=f"events x clients per burst phase (default {DEFAULT_BURST_DELIVERIES:,}; "
            "0: no burst)",
        )
    if "flood" in scenarios:
        parser.add_argument(
            "--flood-events",
            type=int,
            default=None,
            help=f"progress calls in the flood (default {DEFAULT_FLOOD_EVENTS:,}; 0: no flood)",
        )
        parser.add_argument(
            "--flood-clients",
            type=int,
            default=None,
            help=f"clients during the flood (default {DEFAULT_FLOOD_CLIENTS})",
        )
        parser.add_argument(
            "--flood-yield-every",
            type=int,
            default=None,
            help="gevent only: a second flood with a 1 ms sleep every N calls (default "
            f"{DEFAULT_FLOOD_YIELD_EVERY:,}; 0: no second flood)",
        )
    if "nodelay" in scenarios and len(scenarios) > 1:
        parser.add_argument(
            "--no-nodelay-check",
            action="store_true",
            help="skip the pass with TCP_NODELAY set (the same as leaving nodelay out of "
            "--scenarios)",
        )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes for a smoke test (numbers are not meaningful); explicit options win",
    )
    parser.add_argument("--node", default=None, help="the node executable (default: on PATH)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    pick = quick_picker(args, QUICK)
    if args.quick:  # the script's own client counts, made small
        quick_clients = QUICK["clients"] if clients == DEFAULT_CLIENTS else [max(QUICK["clients"])]
        default_clients = list(quick_clients)
    else:
        default_clients = list(clients)
    chosen = list(pick("scenarios", list(scenarios)))
    if getattr(args, "no_nodelay_check", False) and "nodelay" in chosen:
        chosen.remove("nodelay")
    settings = Settings(
        scenarios=[s for s in SCENARIOS if s in chosen],
        modes=list(pick("modes", list(MODES))),
        clients=list(args.clients) if getattr(args, "clients", None) else default_clients,
        rate=float(pick("rate", DEFAULT_RATE)),
        seconds=float(pick("seconds", DEFAULT_SECONDS)),
        rounds=int(pick("rounds", DEFAULT_ROUNDS)),
        burst_deliveries=int(pick("burst_deliveries", DEFAULT_BURST_DELIVERIES)),
        flood_events=int(pick("flood_events", DEFAULT_FLOOD_EVENTS)),
        flood_clients=int(pick("flood_clients", DEFAULT_FLOOD_CLIENTS)),
        flood_yield_every=int(pick("flood_yield_every", DEFAULT_FLOOD_YIELD_EVERY)),
        quick=bool(args.quick),
    )
    if settings.rate <= 0 or settings.seconds <= 0 or settings.rounds < 1:
        parser.error("--rate and --seconds must be > 0, --rounds >= 1")
    if min(settings.burst_deliveries, settings.flood_events, settings.flood_yield_every) < 0:
        parser.error("--burst-deliveries, --flood-events and --flood-yield-every must be >= 0")
    if settings.flood_clients < 1:
        parser.error("--flood-clients must be >= 1")
    return settings, args


def _setups(settings: Settings) -> list[tuple[str, bool, list[int], bool]]:
    """(mode, TCP_NODELAY, client counts, floods) of each server to start, in order."""
    setups = []
    if settings.patterns or settings.floods:
        setups += [(mode, False, settings.clients, True) for mode in settings.modes]
    if settings.nodelay:
        setups += [(mode, True, [max(settings.clients)], False) for mode in settings.modes]
    return setups


def _describe(settings: Settings) -> str:
    parts = [f"modes {','.join(settings.modes)}"]
    if settings.patterns:
        parts.append(f"clients {','.join(map(str, settings.clients))}")
    if "paced" in settings.scenarios:
        parts.append(
            f"paced {settings.rate:g} events/s {TIMES} {settings.seconds:g} s {TIMES} "
            f"{settings.rounds} rounds per path"
        )
    if "burst" in settings.scenarios:
        parts.append(
            f"burst {settings.burst_deliveries:,} deliveries per phase {TIMES} "
            f"{settings.rounds} rounds per path"
        )
    if settings.floods:
        parts.append(
            f"flood {settings.flood_events:,} progress calls to {settings.flood_clients} clients"
        )
    if settings.nodelay:
        parts.append(f"TCP_NODELAY pass at {max(settings.clients)} clients")
    return "; ".join(parts) + (" (quick: numbers are not meaningful)" if settings.quick else "")


def main(
    scenarios: Sequence[str],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    description: str = "",
    clients: Sequence[int] = DEFAULT_CLIENTS,
) -> int:
    """Run ``scenarios`` (some of :data:`SCENARIOS`) as the command line says, print the
    report, and return 0 whatever the numbers are."""
    settings, args = parse_args(
        scenarios, argv, prog=prog, description=description, clients=clients
    )
    node = args.node or shutil.which("node")
    env = environment(node)
    title = f"socket.io fan-out ({', '.join(settings.scenarios)})"
    load_before = begin(title, env, _describe(settings))

    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    if not have_node(node):
        errors.append(NODE_NEEDED)
    else:
        with tempfile.TemporaryDirectory(prefix="socketio_bench-") as tmp:
            for mode, nodelay, counts, with_floods in _setups(settings):
                try:
                    results.append(
                        run_setup(
                            mode,
                            nodelay,
                            counts,
                            settings,
                            node,
                            Path(tmp),
                            show_progress,
                            floods=with_floods,
                        )
                    )
                except (BenchError, OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                    errors.append(f"{label_of(mode, nodelay)}: {type(exc).__name__}: {exc}")
    wall = time.perf_counter() - started

    rows, floods = print_results(settings, results, errors)
    load_after = finish(errors, env, wall)

    if args.json:
        document = {
            "benchmark": "socketio_bench",
            "settings": asdict(settings),
            "environment": env,
            "load_average": {"before": load_before, "after": load_after},
            "results": [
                {
                    **{k: v for k, v in result.items() if k != "rows"},
                    "rows": [row.to_dict() for row in result["rows"]],
                }
                for result in results
            ],
            "flood_summaries": [
                {**asdict(f), "final_ok": f.final_ok, "rate_ok": f.rate_ok} for f in floods
            ],
            "targets": throughput_targets([r for r in rows if not r.nodelay])
            + throughput_targets([r for r in rows if r.nodelay])
            + flood_targets(floods),
            "errors": errors,
            "wall_time_s": wall,
        }
        write_json(args.json, document)
    return 0
