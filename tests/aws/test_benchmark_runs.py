"""The AWS benchmark's one command keeps working (its numbers are not asserted: speed is
measured in benchmarks/, never in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_aws_benchmark_runs_prints_its_tables_and_cleans_up(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/aws_bench.py",
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
    for row in (
        "| raw boto3 send_message_batch, 10 a call (serial) |",
        "| SQSAdapter, delivery only ",
        "| SQSAdapter, emit + deliver ",
        "| raw boto3 put_events, 10 a call (serial) |",
        "| EventBridgeAdapter, delivery only ",
        "| EventBridgeAdapter, emit + deliver ",
        "| no adapter ",
        "| SQSAdapter, AWS unreachable ",
        "| SQSAdapter, moto live ",
    ):
        assert row in out, out
    for line in (
        "SQSAdapter, delivery only",
        "EventBridgeAdapter, delivery only",
        "emit p99, SQSAdapter, AWS unreachable",
        "emit p99, SQSAdapter, moto live",
    ):
        assert f"PASS {line}" in out or f"FAIL {line}" in out, out
    # Nothing of the run outlives it: no adapter's worker thread, and moto's server ended.
    assert "clean-up: 0 adapter worker threads left; moto's server stopped" in out, out
    document = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))
    assert document["benchmark"] == "aws_bench"
    assert {(d["service"], d["path"]) for d in document["deliveries"]} == {
        (service, path)
        for service in ("sqs", "eventbridge")
        for path in ("raw", "delivery", "end-to-end")
    }
    assert document["cleanup"]["adapter_threads_left"] == []
    assert document["cleanup"]["server_still_running"] is False
