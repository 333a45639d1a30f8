"""benchmarks/socketio_bench.py runs end to end (``--quick``) and prints its tables."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_socketio_benchmark_quick_runs_and_prints_its_tables(tmp_path: Path) -> None:
    if shutil.which("node") is None or not (ROOT / "node_modules" / "socket.io-client").is_dir():
        pytest.skip("needs node and node_modules/socket.io-client (./dev setup installs them)")
    report = tmp_path / "socketio_bench.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/socketio_bench.py", "--quick", "--json", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "| mode " in out
    assert "| delivered ev/s |" in out
    assert "| progress rcvd/client |" in out
    assert "## Targets" in out
    assert "ERROR" not in out, out
    document = json.loads(report.read_text(encoding="utf-8"))
    assert document["errors"] == []
    setups = {(r["mode"], r["nodelay"]) for r in document["results"]}
    assert setups == {
        (mode, nodelay) for mode in ("threading", "gevent") for nodelay in (True, False)
    }
    rows = [row for r in document["results"] for row in r["rows"]]
    assert rows
    assert all(row["received"] > 0 for row in rows)
    assert {f["mode"] for f in document["flood_summaries"]} == {"threading", "gevent"}
