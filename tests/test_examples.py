"""Every program in examples/ and benchmarks/ runs as documented."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_quickstart_logs_a_task_that_succeeds_and_one_that_fails() -> None:
    result = run("examples/quickstart.py", "--pause", "0")
    assert result.returncode == 0, result.stderr
    assert "aws01: change_ip started" in result.stderr
    assert "aws01: change_ip 50% [execution] Changing IP address..." in result.stderr
    assert "aws01: change_ip completed" in result.stderr
    assert "aws02: change_ip failed: RuntimeError: the instance refused" in result.stderr
    assert "aws01: idle, last task change_ip completed" in result.stdout
    assert "aws02: idle, last task change_ip failed" in result.stdout


def test_emit_benchmark_runs_and_prints_its_table() -> None:
    result = run("benchmarks/emit_cost.py", "--quick")
    assert result.returncode == 0, result.stderr
    assert "bare blinker" in result.stdout
    assert "taskevents" in result.stdout


def test_event_types_example_emits_and_replays_its_own_types() -> None:
    result = run("examples/event_types.py")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1 task_started    {}"
    assert lines[1] == '2 task_log        {"level": "info", "line": "querying 3 tables"}'
    assert lines[4] == '5 task_artifact   {"name": "report.csv", "size": 48213}'
    assert lines[5].startswith("6 task_completed")
    assert lines[6] == (
        "a client resuming from seq 0 gets: task_started, task_log, task_progress, "
        "task_log, task_artifact, task_completed"
    )
    assert lines[7] == "state: idle last task completed"
