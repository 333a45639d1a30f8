"""The ASGI benchmark (``benchmarks/asgi_bench.py``) runs end to end (``--quick``) and
prints its tables and targets, with every row it should have; its options pick the
scenarios and emitters. Speeds are never checked."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


def _needs_node() -> None:
    # Under CI=true, tests/conftest.py turns these skips into failures.
    if shutil.which("node") is None or not (ROOT / "node_modules" / "socket.io-client").is_dir():
        pytest.skip("needs node and node_modules/socket.io-client (./dev setup installs them)")
    pytest.importorskip("uvicorn", reason="needs the asgi extra (./dev setup installs it)")
    pytest.importorskip("socketio", reason="needs the asgi extra (./dev setup installs it)")


@pytest.mark.timeout(180)
def test_asgi_benchmark_quick_runs_and_prints_its_tables(tmp_path: Path) -> None:
    _needs_node()
    report = tmp_path / "asgi_bench.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/asgi_bench.py", "--quick", "--json", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ERROR" not in out, out
    assert "## Throughput and latency: taskevents vs raw AsyncServer.emit" in out
    assert "### Paced" in out
    assert "### Burst" in out
    assert "| delivered ev/s |" in out
    assert "te/raw delivered ev/s, round by round" in out
    for where in ("coroutine", "thread"):
        for path in ("taskevents", "raw"):
            for clients in (1, 3):
                row = rf"^\| asgi, {where} +\| +{clients} \| {path} +\|"
                assert re.search(row, out, re.MULTILINE), (where, path, clients)
    assert "## Event-loop lag while a task floods progress" in out
    for where, path in (
        ("-", "none (ticker alone)"),
        ("thread", "none (thread spinning)"),
        ("coroutine", "taskevents"),
        ("coroutine", "raw"),
        ("thread", "taskevents"),
        ("thread", "raw"),
    ):
        row = rf"^\| {where} +\| {re.escape(path)} +\|"
        assert re.search(row, out, re.MULTILINE), (where, path)
    assert "| lag p99 ms |" in out
    assert "## Targets" in out
    for pattern in ("paced", "burst"):
        for where in ("coroutine", "thread"):
            assert f" throughput, asgi, {where}, {pattern}: taskevents/raw" in out
    assert " loop lag, taskevents progress flood from a coroutine: p99 " in out
    assert " loop lag, taskevents progress flood from a thread: p99 " in out

    document = json.loads(report.read_text(encoding="utf-8"))
    assert document["errors"] == []
    assert document["settings"]["scenarios"] == ["paced", "burst", "lag"]
    (run,) = document["results"]
    assert run["server"]["mode"] == "asgi"
    # the benchmark server lifts the backlog guard's limit: a burst queues by design
    assert run["server"]["max_backlog"] >= 10_000
    rows = run["rows"]
    assert {(r["label"], r["pattern"], r["path"], r["clients"]) for r in rows} == {
        (f"asgi, {where}", pattern, path, clients)
        for where in ("coroutine", "thread")
        for pattern in ("paced", "burst")
        for path in ("taskevents", "raw")
        for clients in (1, 3)
    }
    assert all(r["received"] > 0 for r in rows)
    assert all(r["lost"] == 0 for r in rows), [r for r in rows if r["lost"]]
    assert all(r["ratio"] is not None for r in rows if r["path"] == "taskevents")
    lags = run["lag"]
    assert [(r["kind"], r["where"]) for r in lags] == [
        ("idle", "-"),
        ("taskevents", "coroutine"),
        ("raw", "coroutine"),
        ("spin", "thread"),
        ("raw", "thread"),
        ("taskevents", "thread"),
    ]
    assert all(r["lag"]["ticks"] > 0 and r["errors"] == [] for r in lags), lags
    floods = [r for r in lags if r["kind"] in ("taskevents", "raw")]
    assert all(r["lifecycle_ok"] and r["progress_events"] > 0 for r in floods), floods
    # raw sends every progress; the adapter may coalesce but not lose the lifecycle
    assert all(r["progress_max"] == r["progress_events"] for r in floods if r["kind"] == "raw")


@pytest.fixture
def asgi_cli() -> Iterator[Any]:
    """``benchmarks/harness/asgi_cli.py``, imported the way the script imports it."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("harness.asgi_cli")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_its_options_pick_scenarios_emitters_and_sizes(
    asgi_cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, _ = asgi_cli.parse_args([])
    assert settings.scenarios == ["paced", "burst", "lag"]
    assert settings.emitters == ["coroutine", "thread"]
    assert settings.clients == [1, 10, 50]
    assert settings.patterns == ["paced", "burst"]
    assert settings.lag
    assert (settings.flood_clients, settings.progress_interval) == (10, 0.0)

    settings, _ = asgi_cli.parse_args(
        ["--scenarios", "lag,burst", "--emitters", "thread", "--clients", "2,4", "--quick"]
    )
    assert settings.scenarios == ["burst", "lag"]
    assert settings.patterns == ["burst"]
    assert settings.emitters == ["thread"]
    assert settings.clients == [2, 4]  # explicit options win over --quick
    assert settings.rounds == 1
    assert settings.flood_seconds == asgi_cli.ASGI_QUICK["flood_seconds"]

    settings, _ = asgi_cli.parse_args(["--flood-seconds", "0", "--burst-deliveries", "0"])
    assert not settings.lag
    assert settings.patterns == ["paced"]

    with pytest.raises(SystemExit):
        asgi_cli.parse_args(["--emitters", "greenlet"])
    assert "--emitters" in capsys.readouterr().err
