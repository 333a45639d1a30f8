"""examples/multiprocess/ runs as its README says: one worker and two web processes on
one Redis prefix; a Socket.IO client on each web process sees the worker's task."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.redis.conftest import prefix, redis_client, redis_url  # noqa: F401 - fixtures
from tests.support.socketio import Client, wait_until
from tests.web.test_demo import send

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "multiprocess"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(log_path: Path, script: str, *args: str) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, str(EXAMPLE / script), *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=10)


def status_of(port: int, subject: str) -> dict[str, Any]:
    code, body = send(port, "GET", f"/api/tasks/{subject}", f"127.0.0.1:{port}")
    assert code == 200, body
    payload: dict[str, Any] = json.loads(body)
    return payload


def settled(port: int) -> bool:
    """Whether the web process on ``port`` shows the worker's five events."""
    seq: int = status_of(port, "aws01")["seq"]
    return seq == 5


@contextlib.contextmanager
def web_process(log_path: Path, url: str, redis_prefix: str) -> Iterator[int]:
    """``web.py --port PORT`` on the prefix, answering: its port."""
    port = free_port()
    args = ["--port", str(port), "--redis-url", url, "--redis-prefix", redis_prefix]
    process = start(log_path, "web.py", *args)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            with contextlib.suppress(OSError):
                if send(port, "GET", "/api/tasks", f"127.0.0.1:{port}")[0] == 200:
                    break
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield port
    finally:
        assert stop(process) == 0, log_path.read_text()
    assert "web: stopped" in log_path.read_text()


def test_a_worker_task_reaches_the_clients_of_both_web_processes(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture
    prefix: str,  # noqa: F811 - the fixture
) -> None:
    with (
        web_process(tmp_path / "web1.log", redis_url, prefix) as one,
        web_process(tmp_path / "web2.log", redis_url, prefix) as two,
    ):
        clients = []
        try:
            for port in (one, two):
                client = Client().connect(f"http://127.0.0.1:{port}")
                clients.append(client)
                client.emit("subscribe_task", {"config_name": "aws01"})
                status = client.wait_for("task_status", lambda p: p["config_name"] == "aws01")
                assert status["status"]["status"] == "idle"

            worker_log = tmp_path / "worker.log"
            worker = start(
                worker_log,
                "worker.py",
                *("--redis-url", redis_url, "--redis-prefix", prefix),
                *("--subject", "aws01", "--count", "1", "--pause", "0.2"),
            )
            try:
                assert worker.wait(timeout=60) == 0, worker_log.read_text()
            finally:
                stop(worker)
            printed = worker_log.read_text()
            assert "aws01: change_ip completed" in printed, printed

            for client in clients:
                started = client.wait_for(
                    "task_status_update", lambda p: p["update"]["event"] == "task_started"
                )
                completed = client.wait_for(
                    "task_status_update",
                    lambda p: p["update"]["event"] == "task_completed",
                    timeout=15,
                )
                assert started["config_name"] == completed["config_name"] == "aws01"
                assert started["update"]["task_type"] == "change_ip"
                assert completed["update"]["result"] == {
                    "status": "success",
                    "data": {"ip": "203.0.113.7"},
                }
                seqs = [update["seq"] for update in client.updates()]
                assert seqs == sorted(set(seqs)), seqs
                assert started["seq"] == seqs[0] == 1  # the subject's first task
                assert completed["seq"] == seqs[-1] == 5  # after three progress steps
        finally:
            for client in clients:
                client.close()

        for port in (one, two):
            assert wait_until(functools.partial(settled, port)), status_of(port, "aws01")
            state = status_of(port, "aws01")["status"]
            assert state["status"] == "idle"
            assert state["last"]["outcome"] == "completed"
            assert state["last"]["task_type"] == "change_ip"
            assert state["last"]["result"]["data"] == {"ip": "203.0.113.7"}
