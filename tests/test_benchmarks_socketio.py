"""The Socket.IO benchmarks run end to end (``--quick``) and print their tables: all of
them through ``benchmarks/socketio_bench.py``, and a scenario script alone; the harness's
option handling picks the scenarios and options each script offers."""

from __future__ import annotations

import importlib
import json
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
    if shutil.which("node") is None or not (ROOT / "node_modules" / "socket.io-client").is_dir():
        pytest.skip("needs node and node_modules/socket.io-client (./dev setup installs them)")


def _run(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(180)
def test_socketio_benchmark_quick_runs_and_prints_its_tables(tmp_path: Path) -> None:
    _needs_node()
    report = tmp_path / "socketio_bench.json"
    result = _run("benchmarks/socketio_bench.py", "--quick", "--json", str(report))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "| mode " in out
    assert "| delivered ev/s |" in out
    assert "### Paced" in out
    assert "### Burst" in out
    assert "TCP_NODELAY set" in out
    assert "te/raw delivered ev/s, round by round" in out
    assert "| progress rcvd/client |" in out
    assert "## Targets" in out
    assert "ERROR" not in out, out
    document = json.loads(report.read_text(encoding="utf-8"))
    assert document["errors"] == []
    assert document["settings"]["scenarios"] == ["paced", "burst", "flood", "nodelay"]
    setups = {(r["mode"], r["nodelay"]) for r in document["results"]}
    assert setups == {
        (mode, nodelay) for mode in ("threading", "gevent") for nodelay in (True, False)
    }
    rows = [row for r in document["results"] for row in r["rows"]]
    assert rows
    assert all(row["received"] > 0 for row in rows)
    assert all(row["lost"] == 0 for row in rows), [r for r in rows if r["lost"]]
    assert {row["pattern"] for row in rows} == {"paced", "burst"}
    assert {f["mode"] for f in document["flood_summaries"]} == {"threading", "gevent"}
    # the benchmark server lifts the backlog guard's limit: a burst queues by design
    assert all(r["server"]["max_backlog"] >= 10_000 for r in document["results"])


@pytest.mark.timeout(120)
def test_a_scenario_script_runs_alone(tmp_path: Path) -> None:
    _needs_node()
    report = tmp_path / "burst.json"
    result = _run("benchmarks/burst.py", "--quick", "--modes", "threading", "--json", str(report))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "### Burst" in out
    assert "### Paced" not in out
    assert "## Flood" not in out
    assert "ERROR" not in out, out
    document = json.loads(report.read_text(encoding="utf-8"))
    assert document["settings"]["scenarios"] == ["burst"]
    rows = [row for r in document["results"] for row in r["rows"]]
    assert {(row["mode"], row["pattern"], row["nodelay"]) for row in rows} == {
        ("threading", "burst", False)
    }
    assert document["flood_summaries"] == []


@pytest.fixture
def cli() -> Iterator[Any]:
    """``benchmarks/harness/cli.py``, imported the way the scripts import it."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("harness.cli")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_each_script_offers_its_scenarios_options(
    cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, _ = cli.parse_args(["burst"], ["--clients", "1,5", "--rounds", "9"])
    assert settings.scenarios == ["burst"]
    assert settings.patterns == ["burst"]
    assert (settings.clients, settings.rounds) == ([1, 5], 9)
    assert not settings.floods
    assert not settings.nodelay
    with pytest.raises(SystemExit):
        cli.parse_args(["burst"], ["--rate", "5"])
    assert "--rate" in capsys.readouterr().err

    settings, _ = cli.parse_args(cli.SCENARIOS, ["--scenarios", "flood,paced", "--quick"])
    assert settings.scenarios == ["paced", "flood"]
    assert settings.floods
    assert settings.patterns == ["paced"]
    settings, _ = cli.parse_args(cli.SCENARIOS, ["--no-nodelay-check"])
    assert "nodelay" not in settings.scenarios
    settings, _ = cli.parse_args(cli.SCENARIOS, ["--burst-deliveries", "0"])
    assert settings.patterns == ["paced"]

    # nodelay.py: paced and burst at its own client count, plain and TCP_NODELAY servers
    settings, _ = cli.parse_args(["paced", "burst", "nodelay"], [], clients=[50])
    assert settings.clients == [50]
    assert settings.nodelay
    assert cli._setups(settings) == [
        ("threading", False, [50], True),
        ("gevent", False, [50], True),
        ("threading", True, [50], False),
        ("gevent", True, [50], False),
    ]
    quick, _ = cli.parse_args(["paced", "burst", "nodelay"], ["--quick"], clients=[50])
    assert quick.clients == [3]
