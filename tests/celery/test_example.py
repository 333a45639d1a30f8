"""examples/celery_app/ runs as its README says: a Celery worker (``celery --workdir
examples -A celery_app.tasks worker``) and the web process (``web.py``) on one Redis
server and prefix; a Socket.IO client of the web process sees the tasks that the web
process's endpoints start: completed, failed, and cancelled when revoked."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.celery.conftest import ROOT, start_worker, stop_worker
from tests.support.socketio import Client, subscribe
from tests.test_multiprocess_example import free_port
from tests.web.test_demo import send

EXAMPLE = ROOT / "examples" / "celery_app"


@pytest.fixture
def example_env(redis_url: str) -> Iterator[dict[str, str]]:
    """The README's environment, on a prefix of this test's own (deleted afterwards)."""
    import redis

    prefix = f"taskevents-test-example-{uuid.uuid4().hex}"
    yield {
        **os.environ,
        "TASKEVENTS_REDIS_URL": redis_url,
        "TASKEVENTS_REDIS_PREFIX": prefix,
        "CELERY_BROKER_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
    }
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextlib.contextmanager
def web_process(log_path: Path, env: dict[str, str]) -> Iterator[int]:
    """``python examples/celery_app/web.py --port PORT``, answering: its port."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "web.py"), "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert "web: stopped" in log_path.read_text(), log_path.read_text()


def post(port: int, path: str, body: Any) -> tuple[int, Any]:
    code, text = send(
        port,
        "POST",
        path,
        f"127.0.0.1:{port}",
        {"Content-Type": "application/json"},
        json.dumps(body),
    )
    return code, json.loads(text)


ENDS = {"task_completed", "task_failed", "task_cancelled"}


def outcome(client: Client, task_id: str, worker_log: Path, timeout: float = 30) -> dict[str, Any]:
    """The update that ends ``task_id``, received already or to come (tasks end in any
    order); on a timeout, the worker's log says why."""
    for payload in client.updates():
        if payload["update"]["task_id"] == task_id and payload["update"]["event"] in ENDS:
            found: dict[str, Any] = payload["update"]
            return found
    try:
        payload = client.wait_for(
            "task_status_update",
            lambda p: p["update"]["task_id"] == task_id and p["update"]["event"] in ENDS,
            timeout=timeout,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the worker's log:\n{worker_log.read_text()}") from None
    update: dict[str, Any] = payload["update"]
    return update


def test_the_example_reports_completed_failed_and_revoked_tasks(
    tmp_path: Path, example_env: dict[str, str]
) -> None:
    worker_log = tmp_path / "worker.log"
    worker = start_worker(worker_log, "celery_app.tasks", example_env, "--workdir", "examples")
    try:
        with web_process(tmp_path / "web.log", example_env) as port:
            client = Client().connect(f"http://127.0.0.1:{port}")
            try:
                for subject in ("aws01", "aws02", "aws03"):
                    subscribe(client, subject)

                code, changed = post(port, "/api/jobs/aws01", {"task": "change_ip", "pause": 0})
                assert code == 202, changed
                code, released = post(port, "/api/jobs/aws02", {"task": "release_ip", "pause": 0})
                assert code == 202, released
                code, backup = post(port, "/api/jobs/aws03", {"task": "backup", "pause": 0.2})
                assert code == 202, backup

                completed = outcome(client, changed["task_id"], worker_log)
                assert completed["result"] == {"status": "success", "data": {"ip": "203.0.113.7"}}
                failed = outcome(client, released["task_id"], worker_log)
                assert failed["error"] == {
                    "type": "LookupError",
                    "message": "aws02 has no Elastic IP to release",
                }
                # Revoked once it runs: it has reported progress.
                client.wait_for(
                    "task_status_update",
                    lambda p: (
                        p["update"]["task_id"] == backup["task_id"]
                        and p["update"]["event"] == "task_progress"
                    ),
                    timeout=30,
                )
                # Celery's broadcasts are not persistent: revoke again if one is missed.
                deadline = time.monotonic() + 30
                while True:
                    code, revoked = post(port, f"/api/jobs/{backup['task_id']}/revoke", {})
                    assert code == 202, revoked
                    try:
                        cancelled = outcome(client, backup["task_id"], worker_log, timeout=5)
                        break
                    except AssertionError:
                        if time.monotonic() > deadline:
                            raise
                assert cancelled["event"] == "task_cancelled"
                assert cancelled["reason"] == "terminated"

                for task in (changed, released, backup):
                    events = [
                        u["update"]["event"]
                        for u in client.updates()
                        if u["update"]["task_id"] == task["task_id"]
                    ]
                    assert events[0] == "task_started", events
                    assert set(events[1:-1]) == {"task_progress"}, events

                code, refused = post(port, "/api/jobs/aws01", {"task": "rm -rf"})
                assert code == 400, refused
                code, refused = post(port, "/api/jobs/nope", {"task": "change_ip"})
                assert code == 404, refused
            finally:
                client.close()
    finally:
        stop_worker(worker)
    log = worker_log.read_text()
    assert "LookupError" in log
    assert "Terminating" in log
