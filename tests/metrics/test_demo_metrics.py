"""`taskevents demo --metrics`: the zero-code way to see the metrics, on both servers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.metrics.support import fetch, parse
from tests.support.browser import free_port
from tests.support.socketio import wait_until


@pytest.mark.parametrize("async_mode", ["threading", "asgi"])
def test_the_demo_serves_metrics_when_asked(tmp_path: Path, async_mode: str) -> None:
    port = free_port()
    log = (tmp_path / "demo.log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "taskevents", "demo", "--port", str(port), "--metrics"),
            *("--async-mode", async_mode),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return fetch(url, "/api/tasks")[0] == 200
            except OSError:
                return False

        assert wait_until(up, timeout=30), (tmp_path / "demo.log").read_text()
        status, _, body = fetch(url, "/metrics")
        assert status == 200, body
        scraped = parse(body.decode())
        assert scraped.get("taskevents_subjects", status="idle") == 3.0
        assert "taskevents_events" in scraped.types
    finally:
        process.terminate()
        process.wait(15)
        log.close()
