"""examples/webhook_receiver/app.py, run as documented, receiving signed requests."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

import pytest

from taskevents.webhooks import generate_secret, signed_headers
from tests.support.browser import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
APP = ROOT / "examples" / "webhook_receiver" / "app.py"
SECRET = generate_secret()
#: What a WebhookAdapter sends in its "standard" format: {type, timestamp, data: the event}.
EVENT = {
    "id": "evt-1",
    "type": "task_started",
    "subject": "aws01",
    "task_id": "task-7",
    "task_type": "change_ip",
    "seq": 1,
    "time": "2024-05-01T12:00:00.000000+00:00",
    "source": "tests",
    "data": {},
}
BODY = json.dumps(
    {"type": "task_started", "timestamp": "2024-05-01T12:00:00.000000+00:00", "data": EVENT}
).encode()


class Receiver(NamedTuple):
    url: str
    lines: queue.Queue[str]


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        if not line.startswith(" * "):  # Flask's banner ("Serving Flask app", "Running on")
            lines.put(line.rstrip("\n"))


def _wait_until_listening(process: subprocess.Popen[str], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the receiver exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return
        except urllib.error.HTTPError as error:  # 404 on /: it answers
            error.close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the receiver did not start:\n{log.read_text()}")


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    port = free_port()
    log = tmp_path / "receiver.log"
    env = {**os.environ, "TASKEVENTS_WEBHOOK_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    with (
        log.open("w") as errors,
        subprocess.Popen(
            [sys.executable, str(APP), "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        ) as process,
    ):
        assert process.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        pump = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
        pump.start()
        try:
            _wait_until_listening(process, port, log)
            yield Receiver(f"http://127.0.0.1:{port}/hooks", lines)
        finally:
            process.terminate()
            process.wait(timeout=10)
            pump.join(timeout=10)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def test_the_receiver_prints_each_verified_event(receiver: Receiver) -> None:
    status, _ = post(receiver.url, BODY, signed_headers(BODY, msg_id="evt-1", secrets=SECRET))
    assert status == 204
    assert receiver.lines.get(timeout=10) == (
        "received task_started for aws01: task task-7 (change_ip), webhook-id evt-1"
    )
    other = b'{"event": "something else"}'
    status, _ = post(receiver.url, other, signed_headers(other, msg_id="x-1", secrets=SECRET))
    assert status == 422
    assert receiver.lines.empty()


def test_the_receiver_refuses_a_bad_signature_with_a_401(receiver: Receiver) -> None:
    headers = signed_headers(BODY, msg_id="evt-1", secrets=generate_secret())
    status, answer = post(receiver.url, BODY, headers)
    assert status == 401
    assert json.loads(answer)["error"]["message"].startswith("no signature matches")
    stale = signed_headers(BODY, msg_id="evt-1", timestamp=int(time.time()) - 3600, secrets=SECRET)
    status, answer = post(receiver.url, BODY, stale)
    assert status == 401
    assert json.loads(answer)["error"]["message"].startswith("timestamp too old")
    assert receiver.lines.empty()


def test_the_receiver_needs_its_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TASKEVENTS_WEBHOOK_SECRET"}
    result = subprocess.run(
        [sys.executable, str(APP)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "set TASKEVENTS_WEBHOOK_SECRET" in result.stderr
    env["TASKEVENTS_WEBHOOK_SECRET"] = "hunter2hunter2"
    result = subprocess.run(
        [sys.executable, str(APP)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "expected a secret written whsec_<base64>" in result.stderr
    assert "hunter2" not in result.stderr
