"""The official JavaScript socket.io-client interoperates with the demo server.

Each test starts the real demo server (``python -m taskevents demo``) in a subprocess and
drives it with ``tests/js/protocol_client.mjs`` under Node, which checks the original
TaskMaster protocol field by field. Node and the pinned socket.io-client come from
``./dev setup``; without them these tests fail (never skip), so CI cannot pass without
them.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
CLIENT_SCRIPT = ROOT / "tests" / "js" / "protocol_client.mjs"
NODE_MODULES = ROOT / "node_modules"
FOREIGN_ORIGIN = "http://evil.example"
DEMO_COMMAND = (sys.executable, "-m", "taskevents", "demo")
SERVER_START_TIMEOUT = 20.0
CLIENT_TIMEOUT = 40.0  # the script gives up by itself after 20 s
SETUP_ADVICE = "run ./dev setup (it installs the pinned socket.io-client with npm ci)"


def node_client_problem(node: str | None, node_modules: Path, package_json: Path) -> str | None:
    """What is missing to run the JS client, or None if Node and the pinned client are
    both there."""
    if node is None:
        return f"`node` (Node.js 18+) is not on PATH; install it, then {SETUP_ADVICE}"
    installed = node_modules / "socket.io-client" / "package.json"
    if not installed.is_file():
        return f"{installed} is missing; {SETUP_ADVICE}"
    wanted = json.loads(package_json.read_text())["dependencies"]["socket.io-client"]
    version = json.loads(installed.read_text())["version"]
    if version != wanted:
        return f"socket.io-client {version} is installed but package.json pins {wanted}; " + (
            SETUP_ADVICE
        )
    return None


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    problem = node_client_problem(path, NODE_MODULES, ROOT / "package.json")
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    assert path is not None
    result = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    major = int(result.stdout.strip().lstrip("v").split(".")[0] or 0)
    if result.returncode != 0 or major < 18:
        pytest.fail(
            f"Node.js 18+ is needed (global fetch); `node --version` said "
            f"{result.stdout.strip() or result.stderr.strip()!r}",
            pytrace=False,
        )
    return path


@dataclass
class DemoServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    """One GET; the response is read and closed before it is returned."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def start_demo_server(log_path: Path, async_mode: str = "threading") -> DemoServer:
    """Start the demo on a free port and wait until it answers HTTP; retried on a new port
    if another process took the port in between."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for _attempt in range(3):
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    *DEMO_COMMAND,
                    "--port",
                    str(port),
                    "--task-seconds",
                    "1",
                    "--async-mode",
                    async_mode,
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = DemoServer(process, port, log_path)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        try:
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    if http_get(port, "/api/tasks").status == 200:
                        return server
                except OSError:
                    pass
                time.sleep(0.1)
        except BaseException:
            stop(process)
            raise
        stop(process)
        if "Address already in use" not in server.log():
            pytest.fail(
                f"the demo server did not answer on port {port} within "
                f"{SERVER_START_TIMEOUT} s (exit code {process.returncode}):\n{server.log()}",
                pytrace=False,
            )
    pytest.fail("the demo server found no free port in 3 attempts", pytrace=False)


@pytest.fixture(params=["threading", "asgi"])
def demo_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DemoServer]:
    """The demo on Flask-SocketIO, and on ASGI (python-socketio's AsyncServer)."""
    server = start_demo_server(tmp_path / "demo-server.log", request.param)
    try:
        yield server
    finally:
        stop(server.process)


def run_client(node: str, server: DemoServer, mode: str) -> dict[str, Any]:
    """Run the JS client in ``mode`` against ``server``; its JSON verdict, which must say
    ok."""
    try:
        result = subprocess.run(
            [node, str(CLIENT_SCRIPT), server.url, mode],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the JS client hung in mode {mode}: {exc}\nserver log:\n{server.log()}")
    context = (
        f"mode {mode}, exit code {result.returncode}\nstdout:\n{result.stdout}\n"
        f"stderr:\n{result.stderr}\nserver log:\n{server.log()}"
    )
    lines = result.stdout.strip().splitlines()
    assert lines, f"the JS client printed nothing; {context}"
    try:
        verdict = json.loads(lines[-1])
    except json.JSONDecodeError:
        pytest.fail(f"the JS client's last line is not JSON; {context}")
    assert isinstance(verdict, dict), context
    assert verdict.get("ok") is True, f"the JS client failed: {verdict.get('error')}; {context}"
    assert result.returncode == 0, context
    return verdict


@pytest.mark.parametrize("mode", ["websocket", "polling-upgrade"])
def test_official_client_speaks_the_protocol(node: str, demo_server: DemoServer, mode: str) -> None:
    verdict = run_client(node, demo_server, mode)
    assert verdict["transport"] == "websocket"
    assert verdict["first_transport"] == ("polling" if mode == "polling-upgrade" else "websocket")
    updates = verdict["updates"]
    assert updates[0] == "task_started"
    assert updates[-1] == "task_completed"
    assert "task_progress" in updates
    events = verdict["events"]
    assert events[:3] == ["connection_status", "all_tasks", "task_status"]
    assert events.count("task_status_update") == len(updates)
    assert events[-3:] == ["error", "unsubscribed", "all_tasks"]


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_official_client_from_a_foreign_origin_is_refused(
    node: str, demo_server: DemoServer, transport: str
) -> None:
    verdict = run_client(node, demo_server, f"foreign-origin-{transport}")
    assert verdict["refused"] is True
    assert "not an accepted origin" in demo_server.log()


def test_polling_handshake_is_allowed_only_for_the_serving_origin(
    demo_server: DemoServer,
) -> None:
    path = "/socket.io/?EIO=4&transport=polling"
    own = http_get(demo_server.port, path, {"Origin": demo_server.url})
    assert own.status == 200
    assert own.getheader("Access-Control-Allow-Origin") == demo_server.url

    foreign = http_get(demo_server.port, path, {"Origin": FOREIGN_ORIGIN})
    assert foreign.status == 400
    assert foreign.getheader("Access-Control-Allow-Origin") is None


def test_missing_node_or_client_fails_with_setup_advice(tmp_path: Path) -> None:
    package_json = ROOT / "package.json"
    no_node = node_client_problem(None, NODE_MODULES, package_json)
    assert no_node is not None
    assert "./dev setup" in no_node

    no_client = node_client_problem("/usr/bin/node", tmp_path, package_json)
    assert no_client is not None
    assert "socket.io-client" in no_client
    assert "./dev setup" in no_client

    stale = tmp_path / "socket.io-client"
    stale.mkdir()
    (stale / "package.json").write_text('{"version": "0.0.1"}')
    mismatch = node_client_problem("/usr/bin/node", tmp_path, package_json)
    assert mismatch is not None
    assert "0.0.1" in mismatch
    assert "./dev setup" in mismatch
