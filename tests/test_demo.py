"""The demo server's REST API and simulated task manager (``taskevents demo``)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import flask
import pytest

from browser_support import DemoServer, free_port
from socketio_support import Client, LiveServer
from taskevents._hosts import AllowedHosts
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


# -- Host checks (DNS rebinding) and Origin checks, against real servers --------------

WEBSOCKET_UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
POLLING = "/socket.io/?EIO=4&transport=polling"
WEBSOCKET = "/socket.io/?EIO=4&transport=websocket"
CHANGE_IP = json.dumps({"task_type": "change_ip"})


def send(
    port: int,
    method: str,
    path: str,
    host: str,
    headers: dict[str, str] | None = None,
    body: str | None = None,
) -> tuple[int, str]:
    """One request to 127.0.0.1:``port`` with this ``Host`` header: (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        all_headers = {"Host": host, **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def every_kind_of_request(port: int, host: str, config_name: str) -> dict[str, int]:
    """The status of each kind of request the demo serves, with ``Host: host``."""
    statuses = {}
    for name, method, path, headers, body in [
        ("dashboard", "GET", "/", None, None),
        ("seed path", "GET", "/websocket", None, None),
        ("static", "GET", "/taskevents/static/vendor/socket.io.min.js", None, None),
        ("rest", "GET", "/api/tasks", None, None),
        ("post", "POST", f"/api/tasks/{config_name}", None, CHANGE_IP),
        ("polling", "GET", POLLING, None, None),
        ("websocket", "GET", WEBSOCKET, WEBSOCKET_UPGRADE, None),
    ]:
        statuses[name], text = send(port, method, path, host, headers, body)
        if statuses[name] == 400:
            assert text == (
                f"Bad Request: Host {host!r} is not allowed on this server. "
                "To answer it, start taskevents demo with --allowed-host NAME.\n"
            ), name
    return statuses


ANSWERED = {
    "dashboard": 200,
    "seed path": 200,
    "static": 200,
    "rest": 200,
    "post": 202,
    "polling": 200,
    "websocket": 101,
}
REFUSED = dict.fromkeys(ANSWERED, 400)


@pytest.mark.parametrize("async_mode", ["threading", "gevent"])
def test_demo_answers_only_its_own_host_names(tmp_path: Path, async_mode: str) -> None:
    server = DemoServer(tmp_path / "demo.log", task_seconds=0.2, async_mode=async_mode)
    server.start()
    try:
        port = server.port
        # DNS rebinding: rebind.example now resolves to 127.0.0.1
        assert every_kind_of_request(port, f"rebind.example:{port}", "aws01") == REFUSED
        assert every_kind_of_request(port, "rebind.example", "aws01") == REFUSED
        assert server.subject("aws01")["seq"] == 0  # the refused POST started nothing
        assert every_kind_of_request(port, f"127.0.0.1:{port}", "aws01") == ANSWERED
        assert every_kind_of_request(port, f"localhost:{port}", "aws02") == ANSWERED
        assert every_kind_of_request(port, f"[::1]:{port}", "aws03") == ANSWERED
        client = Client()
        try:  # a real Socket.IO client on the served name still connects
            client.connect(server.url, transports=["polling", "websocket"])
            assert client.next()[0] == "connection_status"
        finally:
            client.close()
    finally:
        server.stop()


@contextmanager
def demo_process(log_path: Path, *args: str) -> Iterator[int]:
    """``taskevents demo --port PORT ARGS...``, answering; its port."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "taskevents", "demo", "--port", str(port), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if send(port, "GET", "/api/tasks", f"127.0.0.1:{port}")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_allowed_host_option_answers_more_names(tmp_path: Path) -> None:
    log_path = tmp_path / "demo.log"
    args = ["--task-seconds", "0.2", "--allowed-host", "rebind.example"]
    with demo_process(log_path, *args, "--allowed-host", "*.lan") as port:
        assert every_kind_of_request(port, f"rebind.example:{port}", "aws01") == ANSWERED
        assert every_kind_of_request(port, f"box.lan:{port}", "aws02") == ANSWERED
        assert every_kind_of_request(port, f"127.0.0.1:{port}", "aws03") == ANSWERED
        assert every_kind_of_request(port, f"other.example:{port}", "aws01") == REFUSED
    assert (
        "answering the host names 127.0.0.1, localhost, [::1], rebind.example, *.lan "
        "(more with --allowed-host)"
    ) in log_path.read_text()


def test_cli_help_shows_the_options_and_their_defaults() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "taskevents", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "1000"},
    )
    text = " ".join(result.stdout.split())
    for expected in [
        "--host HOST address to listen on (default: 127.0.0.1)",
        "--port PORT port to listen on (default: 5000)",
        "how long a simulated task runs (default: 5.0)",
        "Flask-SocketIO async mode (default: threading)",
        "--allowed-host NAME also answer requests for the host NAME (repeatable;",
        "Default: only the --host address and localhost, 127.0.0.1, [::1];",
        "Other Host headers get 400",
    ]:
        assert expected in text


def test_cli_rejects_an_allowed_host_with_a_port() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "taskevents", "demo", "--allowed-host", "rebind.example:80"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "--allowed-host: expected a host name or address without a port, got 'rebind.example:80'"
    )


@pytest.fixture
def live_demo() -> Iterator[LiveServer]:
    app, _socketio = create_app(task_seconds=0.2, log=False)
    server = LiveServer(app)
    yield server
    server.stop()
    TaskEvents.state(app).close()


def test_starting_a_task_refuses_foreign_origins(live_demo: LiveServer) -> None:
    port = live_demo.server.server_port
    host = f"127.0.0.1:{port}"
    for origin in [
        "http://evil.example",
        f"http://rebind.example:{port}",
        f"http://localhost:{port}",  # another origin, though the same server
        f"http://127.0.0.1:{port + 1}",
        f"https://127.0.0.1:{port}",
        "null",
    ]:
        status, text = send(port, "POST", "/api/tasks/aws01", host, {"Origin": origin}, CHANGE_IP)
        assert status == 403, origin
        error = json.loads(text)["error"]
        assert error["origin"] == origin
        assert error["message"].startswith(f"cross-origin request from {origin!r} refused")
    assert json.loads(send(port, "GET", "/api/tasks/aws01", host)[1])["seq"] == 0

    same = {"Origin": f"http://127.0.0.1:{port}"}
    assert send(port, "POST", "/api/tasks/aws01", host, same, CHANGE_IP)[0] == 202
    assert send(port, "POST", "/api/tasks/aws02", host, None, CHANGE_IP)[0] == 202  # curl
    local = {"Origin": f"http://localhost:{port}"}
    assert send(port, "POST", "/api/tasks/aws03", f"localhost:{port}", local, CHANGE_IP)[0] == 202


def test_create_app_answers_the_loopback_names_by_default() -> None:
    app, _socketio = create_app(task_seconds=0.2, log=False)
    try:
        assert app.extensions["taskevents_demo_hosts"] == AllowedHosts.serving("127.0.0.1")
        client = app.test_client()
        assert client.get("/api/tasks").status_code == 200  # Host: localhost
        refused = client.get("/api/tasks", headers={"Host": "rebind.example"})
        assert refused.status_code == 400
    finally:
        TaskEvents.state(app).close()
