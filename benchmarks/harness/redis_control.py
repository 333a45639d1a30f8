"""The orchestrator's side of the Redis benchmark's processes: the gevent web process
(:class:`WebServer`), the publish-only worker (:class:`Worker`), the Node load generator
with its sockets spread over subjects (:class:`SpreadLoadGen`), CPU time from ``/proc``,
and the Redis server itself (its process, the run's keys).

Every wait is bounded; the subprocesses exit by themselves if the orchestrator goes away,
and are stopped on the way out.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .config import HERE, SERVER_START_TIMEOUT, BenchError
from .control import HttpProcess, JsonLinesProcess, LoadGen
from .redis_server import LAUNCHER as WEB_LAUNCHER
from .redis_worker import LAUNCHER as WORKER_LAUNCHER

__all__ = [
    "RedisInfo",
    "SpreadLoadGen",
    "WebServer",
    "Worker",
    "delete_keys",
    "proc_cpu_s",
]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_s(pid: int | None) -> float | None:
    """CPU time (user + system, all threads) of process ``pid`` in seconds, from
    ``/proc/PID/stat`` (Linux; 1 / SC_CLK_TCK resolution); None if unreadable."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # After "(comm)": state is field 3, utime field 14 and stime field 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _TICKS


class WebServer(HttpProcess):
    """The gevent web process, on memory or on Redis."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        subjects: list[str],
        *,
        redis_url: str | None,
        redis_prefix: str | None,
        tcp_nodelay: bool,
    ) -> None:
        self.name = name
        options = ["--subjects", ",".join(subjects)]
        if redis_url:
            options += ["--redis-url", redis_url, "--redis-prefix", str(redis_prefix)]
        if tcp_nodelay:
            options.append("--tcp-nodelay")
        log = workdir / f"web-{name}.log"
        self._launch(f"{name} web process", [WEB_LAUNCHER, str(HERE)], options, log)
        self.pid = int(self.info["pid"])

    def cpu(self) -> float:
        value = proc_cpu_s(self.pid)
        if value is None:
            raise BenchError(f"cannot read /proc/{self.pid}/stat (the {self.name} web process)")
        return value

    def log_lines(self, *needles: str) -> list[str]:
        """The lines of the process's log that contain one of ``needles``."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if any(n in line for n in needles)]


class SpreadLoadGen(LoadGen):
    """``loadgen.mjs`` with its sockets subscribed to ``subjects``: each to all of them
    (``assign="all"``) or socket i to subject i % len(subjects) (``"spread"``); at most
    ``connect_concurrency`` sockets connecting at a time (0: all at once)."""

    def __init__(
        self,
        node: str,
        url: str,
        clients: int,
        subjects: list[str],
        assign: str = "all",
        connect_concurrency: int = 0,
    ) -> None:
        # The wall clock at every message, as the emitting process stamps it: on a VM
        # the monotonic clock loadgen.mjs uses by default drifts from it.
        options = ["--assign", assign, "--clock", "realtime"]
        options += ["--connect-concurrency", str(connect_concurrency)]
        super().__init__(node, url, clients, subjects, options)


class Worker(JsonLinesProcess):
    """The publish-only worker process (:mod:`harness.redis_worker`)."""

    def __init__(self, redis_url: str, redis_prefix: str) -> None:
        command = [sys.executable, "-c", WORKER_LAUNCHER, str(HERE)]
        command += ["--redis-url", redis_url, "--redis-prefix", redis_prefix]
        command += ["--parent", str(os.getpid())]
        self._spawn(command, SERVER_START_TIMEOUT)
        self.pid = int(self.ready["pid"])
        self._counter = 0

    def cpu(self) -> float | None:
        return proc_cpu_s(self.pid)

    def run(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``command`` and wait for its answer."""
        self._counter += 1
        ident = f"w{self._counter}"
        self.send({**command, "id": ident})
        while True:
            answer = self.expect("done", timeout)
            if answer["done"] == ident:
                return answer


class RedisInfo:
    """The Redis server: a client for the run's bookkeeping, its version, and its
    process's CPU time when it runs on this machine."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=10, decode_responses=True
        )
        info = self.client.info("server")
        self.version = str(info.get("redis_version", "?"))
        self.pid: int | None = None
        host = urlsplit(url).hostname or ""
        pid = info.get("process_id")
        local = url.startswith("unix:") or host in ("127.0.0.1", "localhost", "::1")
        if local and isinstance(pid, int):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text(encoding="ascii").strip()
            except OSError:
                comm = ""
            if "redis" in comm:
                self.pid = pid

    def cpu(self) -> float | None:
        return proc_cpu_s(self.pid)

    def close(self) -> None:
        self.client.close()


def delete_keys(info: RedisInfo, prefix: str) -> int:
    """Delete every key of the run: under ``{prefix}:`` and ``{prefix}-store:`` (SCAN,
    then DEL in batches); returns how many."""
    deleted = 0
    batch: list[str] = []
    for key in info.client.scan_iter(match=f"{prefix}[-:]*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(info.client.delete(*batch))
            batch = []
    if batch:
        deleted += int(info.client.delete(*batch))
    return deleted
