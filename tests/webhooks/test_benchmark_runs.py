"""The webhook benchmark's one command keeps working (its numbers are not asserted:
speed is measured in benchmarks/, never in tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_webhook_benchmark_runs_and_prints_its_targets(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/webhook_bench.py",
            "--quick",
            "--json",
            str(tmp_path / "b.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for line in ("durable delivery", "emit p99, adapter, endpoint down", "endpoint answers in 5 s"):
        assert line in out, out
    assert "| raw urllib3 keep-alive loop (serial) |" in out
    assert (tmp_path / "b.json").stat().st_size > 0
