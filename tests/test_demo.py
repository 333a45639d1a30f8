"""The demo server's REST API and simulated task manager (``taskevents demo``)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import pytest

from browser_support import DemoServer
from socketio_support import Client
from taskevents.demo import create_app
from taskevents.flask import TaskEvents
from taskevents.testing import capture_events


@pytest.fixture
def demo() -> Iterator[flask.Flask]:
    app, _socketio = create_app(task_seconds=0.3, log=False)
    yield app
    TaskEvents.state(app).close()


def wait_idle(app: flask.Flask, config_name: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    client = app.test_client()
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/api/tasks/{config_name}").get_json()
        if body["status"]["status"] == "idle" and body["status"]["last_task"]:
            return body
        time.sleep(0.02)
    raise AssertionError(f"{config_name} did not finish")


def test_start_a_task_and_watch_it_complete(demo: flask.Flask) -> None:
    client = demo.test_client()
    assert sorted(client.get("/api/tasks").get_json()["tasks"]) == ["aws01", "aws02", "aws03"]
    with capture_events(subjects=["aws01"]) as events:
        response = client.post("/api/tasks/aws01", json={"task_type": "change_ip"})
        assert response.status_code == 202
        accepted = response.get_json()
        assert accepted["config_name"] == "aws01"
        assert accepted["task_type"] == "change_ip"
        assert accepted["status"] == "busy"
        busy = client.post("/api/tasks/aws01", json={"task_type": "change_ip"})
        assert busy.status_code == 409
        assert busy.get_json()["error"]["task_id"] == accepted["task_id"]
        assert busy.get_json()["error"]["message"] == (
            "aws01 is busy with a change_ip task; try again when it has finished"
        )
        final = wait_idle(demo, "aws01")
    last = final["status"]["last_task"]
    assert last["task_id"] == accepted["task_id"]
    assert last["outcome"] == "completed"
    assert last["result"]["status"] == "success"
    stages = [e.data["stage"] for e in events if e.type == "task_progress"]
    assert stages == ["preparation", "execution", "execution", "verification", "verification"]
    assert [e.data["percent"] for e in events if e.type == "task_progress"][-1] == 100


def test_a_task_can_be_asked_to_fail(demo: flask.Flask) -> None:
    client = demo.test_client()
    response = client.post("/api/tasks/aws02", json={"task_type": "change_ip", "fail": True})
    assert response.status_code == 202
    last = wait_idle(demo, "aws02")["status"]["last_task"]
    assert last["outcome"] == "failed"
    assert last["error"] == {
        "type": "RuntimeError",
        "message": "the instance refused the new address",
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (None, None),
        ("change_ip", None),
        ([1], None),
        ({}, "task_type"),
        ({"task_type": ""}, "task_type"),
        ({"task_type": 5}, "task_type"),
        ({"task_type": "Change IP!"}, "task_type"),
        ({"task_type": "change_ip", "fail": "yes"}, "fail"),
        ({"task_type": "change_ip", "priority": 1}, "priority"),
    ],
)
def test_bad_bodies_get_400_with_a_clear_message(
    demo: flask.Flask, body: Any, field: str | None
) -> None:
    client = demo.test_client()
    if body is None:
        response = client.post("/api/tasks/aws03", data="not json", content_type="text/plain")
    else:
        response = client.post("/api/tasks/aws03", json=body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["message"]
    assert error.get("field") == field
    assert client.get("/api/tasks/aws03").get_json()["status"]["status"] == "idle"


def test_unknown_config_is_404(demo: flask.Flask) -> None:
    response = demo.test_client().post("/api/tasks/aws99", json={"task_type": "change_ip"})
    assert response.status_code == 404
    assert response.get_json()["error"]["config_name"] == "aws99"


def test_dashboard_served_at_root_and_seed_path(demo: flask.Flask) -> None:
    client = demo.test_client()
    for path in ("/", "/websocket"):
        page = client.get(path)
        assert page.status_code == 200
        assert b'"demo": true' in page.data


def test_cli_rejects_bad_arguments() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "taskevents", "demo", "--task-seconds", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--task-seconds: expected a number of seconds > 0" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "taskevents", "launch"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid choice: 'launch'" in result.stderr


@pytest.mark.parametrize("async_mode", ["threading", "gevent"])
def test_demo_server_serves_live_updates_in_each_async_mode(
    tmp_path: Path, async_mode: str
) -> None:
    server = DemoServer(tmp_path / "demo.log", task_seconds=0.5, async_mode=async_mode)
    server.start()
    client = Client()
    try:
        client.connect(server.url)
        assert client.next()[0] == "connection_status"
        client.emit("subscribe_task", {"config_name": "aws01"})
        assert client.wait_for("task_status")["config_name"] == "aws01"
        started = server.run_task("aws01")
        done = client.wait_for(
            "task_status_update",
            lambda p: p["update"]["event"] == "task_completed",
            timeout=15,
        )
        assert done["update"]["task_id"] == started["task_id"]
        events = [u["update"]["event"] for u in client.updates()]
        assert events[0] == "task_started"
        assert "task_progress" in events
    finally:
        client.close()
        server.stop()
