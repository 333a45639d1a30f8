"""The Redis scale-out benchmark runs end to end (``--quick``) and prints its tables; its
1,000-client fan-out (1,000 clients even in quick mode) loses nothing. Speed is never
asserted. Needs a Redis server (``TASKEVENTS_TEST_REDIS_URL``, by default
``redis://127.0.0.1:6379/0``), Node and ``node_modules/socket.io-client``: without them
the test is skipped, and fails under ``CI=true``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TASKEVENTS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _needs_node_and_redis() -> None:
    if shutil.which("node") is None or not (ROOT / "node_modules" / "socket.io-client").is_dir():
        pytest.skip("needs node and node_modules/socket.io-client (./dev setup installs them)")
    redis = pytest.importorskip("redis", reason="pip install 'taskevents[redis]'")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(
            f"no Redis server answers at {REDIS_URL} ({exc}); start one (redis-server) or "
            "point TASKEVENTS_TEST_REDIS_URL at one"
        )
    finally:
        client.close()


@pytest.mark.timeout(240)
def test_redis_benchmark_quick_runs_prints_its_tables_and_loses_nothing(tmp_path: Path) -> None:
    _needs_node_and_redis()
    report = tmp_path / "redis_bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/redis_bench.py",
            "--quick",
            "--redis-url",
            REDIS_URL,
            "--json",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "## End-to-end latency" in out, out
    assert "| worker via Redis " in out
    assert "| in-process " in out
    assert "## Events/s through the state store" in out
    assert "| RedisStateStore " in out
    assert "## Fan-out: 1,000 clients" in out
    assert "| LOST |" in out
    assert "Redis adds <= 2 ms at p50" in out
    assert "ERROR" not in out, out
    document = json.loads(report.read_text(encoding="utf-8"))
    assert document["errors"] == []
    # every path delivered every event to every client
    assert {row["path"] for row in document["latency"]} == {
        "in-process",
        "web on Redis",
        "worker via Redis",
    }
    assert all(row["received"] > 0 and row["lost"] == 0 for row in document["latency"])
    assert {(row["store"], row["threads"]) for row in document["store"]} == {
        ("memory", 1),
        ("memory", 4),
        ("redis", 1),
        ("redis", 4),
    }
    # the fan-out: 1,000 clients in every run, none short of a lifecycle update
    fanout = document["fanout"]
    assert fanout
    for row in fanout:
        assert row["clients"] == 1000
        assert row["connected"] == 1000
        assert row["phase_clients"] == 1000
        assert not row["timed_out"]
        assert row["lost"] == 0, row
        assert row["extra"] == 0, row
        assert row["lifecycle_received"] == row["lifecycle_per_client"] * 1000
    # the run's keys are gone
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert not list(client.scan_iter(match=f"{document['prefix']}[-:]*", count=1000))
    finally:
        client.close()
