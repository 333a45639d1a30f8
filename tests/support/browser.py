"""The real demo server in a subprocess, and small HTTP helpers, for the browser tests."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

#: Debian's Chromium, which Playwright drives (``./dev`` installs it).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, launched headless by Playwright; a skip when it is missing
    (which tests/conftest.py turns into a failure under CI=true)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (./dev test does it)")
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_json(url: str, body: Any = None, *, timeout: float = 5.0) -> tuple[int, Any]:
    """GET ``url``, or POST ``body`` as JSON: ``(status, decoded JSON body)``."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"null")


class DemoServer:
    """``taskevents demo`` on a free 127.0.0.1 port; :meth:`stop` always reaps it.

    :param log_path: where the server's output goes (shown when it fails to start).
    """

    def __init__(
        self, log_path: Path, *, task_seconds: float = 1.5, async_mode: str = "threading"
    ) -> None:
        self.port = free_port()
        self.async_mode = async_mode
        self.log_path = log_path
        self.task_seconds = task_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, *, timeout: float = 30.0) -> None:
        """Start the server (on the same port as before, after a :meth:`stop`) and wait
        until it answers HTTP."""
        assert self.process is None, "already running"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskevents",
                "demo",
                "--port",
                str(self.port),
                "--task-seconds",
                str(self.task_seconds),
                "--async-mode",
                self.async_mode,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the demo server exited early:\n{self.log()}")
            try:
                status, _ = http_json(self.url + "/api/tasks", timeout=1.0)
            except (OSError, ValueError):
                status = 0
            if status == 200:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the demo server did not answer in {timeout} s:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Terminate the server and wait for it (kill it if it does not go)."""
        process, self.process = self.process, None
        if process is not None:
            process.terminate()  # harmless if it has exited already
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def subject(self, name: str) -> dict[str, Any]:
        """The server's ``task_status`` snapshot of ``name``."""
        status, payload = http_json(f"{self.url}/api/tasks/{name}")
        assert status == 200, payload
        assert isinstance(payload, dict)
        return payload

    def run_task(self, name: str, *, fail: bool = False) -> dict[str, Any]:
        """Start a simulated task over HTTP, as the dashboard's buttons do."""
        body: dict[str, Any] = {"task_type": "change_ip"}
        if fail:
            body["fail"] = True
        status, payload = http_json(f"{self.url}/api/tasks/{name}", body)
        assert status == 202, payload
        assert isinstance(payload, dict)
        return payload

    def wait_idle(self, name: str, *, timeout: float = 20.0) -> dict[str, Any]:
        """Poll until ``name`` is idle on the server; its snapshot."""
        deadline = time.monotonic() + timeout
        while True:
            snapshot = self.subject(name)
            if snapshot["status"]["status"] == "idle":
                return snapshot
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} still busy after {timeout} s: {snapshot}")
            time.sleep(0.1)
