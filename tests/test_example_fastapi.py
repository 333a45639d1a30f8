"""examples/fastapi_app/ runs as its README says, under a real uvicorn: a job in a
coroutine and one in a worker thread, watched live by a Socket.IO client and in
Chromium, and ended as cancelled when the server stops."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import chromium, free_port
from tests.support.socketio import Client
from tests.web.test_demo import send

ROOT = Path(__file__).resolve().parent.parent
#: Generous: a loaded CI machine may be slow, and waits end as soon as they succeed.
WAIT = 15.0


@dataclass
class Example:
    """The example app, served by uvicorn on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str) -> tuple[int, Any]:
        status, text = send(self.port, method, path, f"127.0.0.1:{self.port}")
        return status, json.loads(text)

    def watch(self, server: str) -> Client:
        client = Client().connect(self.url)
        assert client.next()[0] == "connection_status"
        client.emit("subscribe_task", {"config_name": server})
        assert client.wait_for("task_status")["config_name"] == server
        return client

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)


@contextlib.contextmanager
def uvicorn(log_path: Path) -> Iterator[Example]:
    """``uvicorn examples.fastapi_app.app:app --port PORT`` from the repository's root,
    as the README runs it; stopped afterwards."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app", "--port", str(port)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    example = Example(process, port, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, example.log()
            with contextlib.suppress(OSError):
                if send(port, "GET", "/api/tasks", f"127.0.0.1:{port}")[0] == 200:
                    break
            assert time.monotonic() < deadline, example.log()
            time.sleep(0.1)
        yield example
    finally:
        example.stop()


@pytest.fixture
def example(tmp_path: Path) -> Iterator[Example]:
    with uvicorn(tmp_path / "uvicorn.log") as served:
        yield served
    assert "Traceback" not in served.log(), served.log()


def until_ended(client: Client) -> list[dict[str, Any]]:
    client.wait_for(
        "task_status_update",
        lambda p: p["update"]["event"] in ("task_completed", "task_failed", "task_cancelled"),
        timeout=WAIT,
    )
    return [payload["update"] for payload in client.updates()]


def test_a_deployment_in_a_coroutine_is_watched_live(example: Example) -> None:
    client = example.watch("web01")
    try:
        status, answer = example.request("POST", "/deploy/web01?seconds=0.5")
        assert status == 202, answer
        assert answer["server"] == "web01"
        busy = example.request("POST", "/deploy/web01?seconds=0.5")
        assert busy == (409, {"detail": "web01 is busy with a deploy task"})
        updates = until_ended(client)
    finally:
        client.close()
    assert {u["task_id"] for u in updates} == {answer["task_id"]}
    assert [u["event"] for u in (updates[0], updates[-1])] == ["task_started", "task_completed"]
    progress = [u["progress"] for u in updates[1:-1]]
    assert progress, updates
    assert [p["percent"] for p in progress] == sorted(p["percent"] for p in progress)
    assert progress[-1]["stage"] == "verify"
    assert updates[-1]["result"] == {"version": "2.4.1"}
    status, snapshot = example.request("GET", "/api/tasks/web01")
    assert snapshot["status"]["last"]["outcome"] == "completed"
    assert snapshot["status"]["metadata"] == {"region": "eu-west-1"}


def test_a_backup_in_a_worker_thread_is_watched_live(example: Example) -> None:
    client = example.watch("web02")
    try:
        status, answer = example.request("POST", "/backup/web02?seconds=0.5")
        assert status == 202, answer
        updates = until_ended(client)
    finally:
        client.close()
    assert updates[0]["event"] == "task_started"
    assert updates[-1]["event"] == "task_completed"
    assert updates[-1]["result"] == {"megabytes": 2500}
    assert {u["event"] for u in updates[1:-1]} == {"task_progress"}
    assert updates[-2]["progress"]["message"].endswith("MB copied")
    log = example.log()
    assert "web02: backup started" in log
    assert "web02: backup completed" in log


def test_unknown_servers_are_404(example: Example) -> None:
    for path in ("/deploy/web09", "/backup/web09"):
        assert example.request("POST", path) == (404, {"detail": "unknown server 'web09'"})


def test_stopping_the_server_ends_running_jobs_as_cancelled(tmp_path: Path) -> None:
    with uvicorn(tmp_path / "uvicorn.log") as served:
        client = served.watch("web01")
        try:
            assert served.request("POST", "/deploy/web01?seconds=60")[0] == 202
            assert served.request("POST", "/backup/web02?seconds=5")[0] == 202
            client.wait_for("task_status_update")  # web01 is running
        finally:
            client.close()
        served.process.send_signal(signal.SIGTERM)
        served.stop()
        log = served.log()
    assert "web01: deploy cancelled: CancelledError" in log, log
    assert "web02: backup cancelled: the server stopped" in log, log
    assert "Traceback" not in log, log


def test_the_dashboard_shows_a_deployment(example: Example) -> None:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser tests need playwright: run ./dev setup"
    )
    expect = sync_api.expect
    errors: list[str] = []
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(example.url + "/")  # redirected to the dashboard, /websocket
        assert page.url == example.url + "/websocket"
        expect(page.locator('[data-role="connection"]')).to_have_attribute(
            "data-state", "connected", timeout=WAIT * 1000
        )
        card = page.locator('[data-subject="web01"]')
        expect(card).to_be_visible(timeout=WAIT * 1000)
        card.locator('[data-role="subscribe"]').click()
        expect(card).to_have_attribute("data-subscribed", "true", timeout=WAIT * 1000)
        status, answer = example.request("POST", "/deploy/web01?seconds=2")
        assert status == 202, answer
        expect(card).to_have_attribute("data-status", "busy", timeout=WAIT * 1000)
        expect(card.locator('[data-role="stage"]')).not_to_be_empty(timeout=WAIT * 1000)
        expect(card).to_have_attribute("data-status", "idle", timeout=WAIT * 1000)
        expect(card).to_have_attribute("data-outcome", "completed")
        expect(card.locator('[data-role="outcome"]')).to_contain_text("completed")
        context.close()
    assert errors == []
