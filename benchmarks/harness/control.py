"""The orchestrator's side of the processes: the benchmark server subprocess
(:class:`Server`) and the Node load generator (:class:`LoadGen`, ``loadgen.mjs``), and
what the Redis benchmark's processes (:mod:`harness.redis_control`) build on: a
subprocess answering HTTP (:class:`HttpProcess`) and one driven by JSON lines
(:class:`JsonLinesProcess`).

Every wait is bounded; both processes exit by themselves if the orchestrator goes away,
and are killed on the way out.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeGuard

from .config import (
    HERE,
    LOADGEN,
    LOADGEN_CONNECT_TIMEOUT,
    ROOT,
    SERVER_MAX_SECONDS,
    SERVER_START_TIMEOUT,
    SUBJECTS,
    BenchError,
)
from .server import LAUNCHER

__all__ = ["NODE_NEEDED", "HttpProcess", "JsonLinesProcess", "LoadGen", "Server", "have_node"]

# No proxy, ever: every request goes to 127.0.0.1 directly.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, body: object = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with _opener.open(request, timeout=timeout) as response:
        return json.loads(response.read())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


#: The error when :func:`have_node` says no.
NODE_NEEDED = "node and node_modules/socket.io-client are needed (./dev setup installs them)"


def have_node(node: str | None) -> TypeGuard[str]:
    """Whether ``node`` and ``node_modules/socket.io-client``, which the load generator
    needs, are there."""
    return node is not None and (ROOT / "node_modules" / "socket.io-client").is_dir()


class HttpProcess:
    """A Python subprocess (``python -c launcher ...``) serving ``/bench/*`` on a free
    port of 127.0.0.1, its output in a log file; ready once ``/bench/ping`` answers
    (:attr:`info`)."""

    def _launch(
        self, what: str, launcher: Sequence[str], options: Sequence[str], log: Path
    ) -> None:
        """Start ``python -c *launcher --port P --parent PID *options`` and wait for it;
        ``what`` names the process in errors."""
        self.what = what
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-c", *launcher]
        command += ["--port", str(self.port), "--parent", str(os.getpid()), *options]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )
        try:
            self.info = self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"the {self.what} exited with {self.process.returncode}:\n" + _tail(self.log)
                )
            try:
                info: dict[str, Any] = self.get("/bench/ping", timeout=2.0)
                return info
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise BenchError(f"the {self.what} did not answer within {SERVER_START_TIMEOUT} s")

    def get(self, path: str, timeout: float = 10.0) -> Any:
        return _http("GET", self.url + path, timeout=timeout)

    def post(self, path: str, body: object, timeout: float) -> Any:
        return _http("POST", self.url + path, body, timeout=timeout)

    def close(self) -> None:
        _stop(self.process)


class Server(HttpProcess):
    """A server subprocess in one async mode."""

    def __init__(self, mode: str, workdir: Path, *, tcp_nodelay: bool = False) -> None:
        self.mode = mode
        options = ["--mode", mode, *(["--tcp-nodelay"] if tcp_nodelay else [])]
        log = workdir / f"server-{mode}.log"
        self._launch(f"{mode} server", [LAUNCHER, mode, str(HERE)], options, log)

    def cpu(self) -> float:
        return float(self.get("/bench/cpu")["cpu_s"])


class JsonLinesProcess:
    """A subprocess driven by JSON lines: commands on its stdin, messages on its stdout
    (warnings kept aside, an ``error`` raised), the tail of its stderr kept for errors;
    ready once it sends a ``ready`` message (:attr:`ready`)."""

    def _spawn(self, command: Sequence[str], ready_timeout: float) -> None:
        self.warnings: list[str] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=30)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            cwd=ROOT,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            self.ready = self.expect("ready", ready_timeout)
        except BaseException:
            self.close()
            raise

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line.rstrip())

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except OSError as exc:
            raise BenchError(f"the load generator is gone: {exc}") from exc

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        """The next message carrying ``key`` (warnings are kept aside)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"the load generator sent no {key!r} within {timeout:.0f} s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.process.wait(5)
                raise BenchError(
                    f"the load generator exited ({self.process.returncode}) waiting for "
                    f"{key!r}:\n" + "\n".join(self._stderr)
                )
            message: dict[str, Any] = json.loads(line)
            if "warning" in message:
                self.warnings.append(str(message["warning"]))
            elif "error" in message:
                raise BenchError(str(message["error"]))
            elif key in message:
                return message

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send({"cmd": "quit"})
                self.process.wait(5)
            except (BenchError, subprocess.TimeoutExpired):
                pass
        _stop(self.process)


class LoadGen(JsonLinesProcess):
    """N socket.io-client sockets in one Node process (``loadgen.mjs``), subscribed to
    ``subjects``; ``options`` are more of ``loadgen.mjs``'s."""

    def __init__(
        self,
        node: str,
        url: str,
        clients: int,
        subjects: Sequence[str] = SUBJECTS,
        options: Sequence[str] = (),
    ) -> None:
        self.clients = clients
        command = [node, str(LOADGEN), "--url", url, "--clients", str(clients)]
        command += ["--subjects", ",".join(subjects), *options]
        command += ["--connect-timeout-ms", str(int(LOADGEN_CONNECT_TIMEOUT * 1000))]
        command += ["--max-seconds", str(int(SERVER_MAX_SECONDS))]
        self._spawn(command, LOADGEN_CONNECT_TIMEOUT + 5)

    def arm(
        self,
        ident: str,
        group: str,
        subject: str | list[str],
        timeout: float,
        *,
        detail: bool = False,
    ) -> None:
        """Make every client count the next messages on ``subject`` (a list: on any of
        them) as phase ``ident`` of ``group``, for ``timeout`` seconds at the most
        (``detail``: with per-client details in the answer)."""
        command: dict[str, Any] = {"cmd": "arm", "id": ident, "group": group}
        command["subjects" if isinstance(subject, list) else "subject"] = subject
        command["timeout_ms"] = int(timeout * 1000)
        if detail:
            command["detail"] = True
        self.send(command)
        self.expect("armed", 10)

    def report(self, group: str) -> dict[str, Any]:
        """What the clients counted for ``group``'s phases, pooled."""
        self.send({"cmd": "report", "group": group})
        return self.expect("report", 30)
