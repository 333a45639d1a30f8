"""Webhooks with several processes on one Redis prefix: two web processes, each with a
WebhookAdapter (outbox of its own) in ``TASKEVENTS_ADAPTERS``, and a worker with one of
its own, all pointing at one real HTTP receiver. Each event is POSTed once per endpoint,
by the process that emitted it: the web processes get the others' events through their
bridge, and their webhook adapters (``remote`` false) do not send them again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskevents.webhooks import generate_secret
from tests.support.http import Receiver

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(condition: Any, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def call(port: int, method: str, path: str) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class Process:
    """A ``tests.redis.webhook_process`` process, its output in a log file."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "tests.redis.webhook_process", *args],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONWARNINGS": "error", "PYTHONUNBUFFERED": "1"},
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as a service manager would; the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
            raise

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    made: list[Process] = []
    yield made
    for process in made:
        process.kill()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def start_web(processes: list[Process], folder: Path, name: str, *args: str) -> tuple[Process, int]:
    port = free_port()
    outbox = folder / f"{name}.sqlite3"
    args = (args[0], args[1], str(port), str(outbox), *args[2:])
    process = Process(folder / f"{name}.log", "web", *args)
    processes.append(process)

    def answers() -> bool:
        assert process.popen.poll() is None, process.text()
        with contextlib.suppress(OSError):
            call(port, "GET", "/seen")
            return True
        return False

    wait_until(answers, 30, f"{name} answering: {process.text()}")
    return process, port


def test_each_event_is_posted_once_per_endpoint_by_the_process_that_emitted_it(
    redis_url: str,
    prefix: str,
    receiver: Receiver,
    processes: list[Process],
    tmp_path: Path,
) -> None:
    secret = generate_secret()
    common = (redis_url, prefix, receiver.url, secret)
    web1, port1 = start_web(processes, tmp_path, "web1", *common)
    web2, port2 = start_web(processes, tmp_path, "web2", *common)

    worker = Process(
        tmp_path / "worker.log",
        "worker",
        redis_url,
        prefix,
        str(tmp_path / "worker.sqlite3"),
        receiver.url,
        secret,
        "10",
    )
    processes.append(worker)
    own1 = call(port1, "POST", "/emit/web1-own")["events"]
    own2 = call(port2, "POST", "/emit/web2-own")["events"]
    assert worker.popen.wait(timeout=60) == 0, worker.text()
    worked = [json.loads(line) for line in worker.text().splitlines() if line.startswith("{")]
    assert len(worked) == 10 * 3

    everything = worked + own1 + own2
    all_ids = {event["id"] for event in everything}
    assert len(all_ids) == len(everything) == 36
    # Each web process got every event, through its bridge (the others') or at once (its
    # own): its webhook adapter had every chance to send the others' again.
    for port in (port1, port2):
        wait_until(
            lambda port=port: set(call(port, "GET", "/seen")["ids"]) >= all_ids,
            what=f"every event reaching the web process on {port}",
        )

    # Progress is not sent by default: the starts and ends, from all three processes.
    expected = Counter(e["id"] for e in everything if e["type"] != "task_progress")
    assert len(expected) == 24

    def posted(path: str) -> Counter[str | None]:
        return Counter(r.id for r in receiver.received() if r.path == path)

    for path in ("/a", "/b"):
        wait_until(
            lambda path=path: set(posted(path)) >= set(expected),
            what=f"every event POSTed to {path}",
        )
    # Stopped, the web processes flush their outboxes: anything they would have sent
    # twice is at the receiver by then.
    for process in (web1, web2):
        assert process.stop() == 0, process.text()
        assert "web: stopped" in process.text()
    for path in ("/a", "/b"):
        assert posted(path) == expected, path
    assert {r.path for r in receiver.received()} == {"/a", "/b"}
    assert receiver.errors == []
    # Each by the process that emitted it, in seq order per subject.
    for path in ("/a", "/b"):
        bodies = [r.json["data"] for r in receiver.received() if r.path == path]
        for subject in ("worker-0", "worker-1", "web1-own", "web2-own"):
            seqs = [body["seq"] for body in bodies if body["subject"] == subject]
            assert seqs == sorted(seqs), (path, subject, seqs)
        sources = {body["subject"]: body["source"] for body in bodies}
        assert sources["web1-own"] == f"web-{port1}"
        assert sources["web2-own"] == f"web-{port2}"
        assert sources["worker-0"] == sources["worker-1"] == "webhook-worker"
