"""``taskevents demo --redis-url URL --redis-prefix P``: demos on different ports share
configs, tasks and live updates."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.socketio import Client, wait_until
from tests.web.test_demo import demo_process, send


@pytest.mark.parametrize("async_mode", ["threading", "gevent"])
def test_two_demos_on_one_prefix_share_tasks_and_updates(
    tmp_path: Path, redis_url: str, prefix: str, async_mode: str
) -> None:
    options = ["--task-seconds", "1", "--async-mode", async_mode]
    options += ["--redis-url", redis_url, "--redis-prefix", prefix]
    with (
        demo_process(tmp_path / "one.log", *options) as one,
        demo_process(tmp_path / "two.log", *options) as two,
    ):
        client = Client().connect(f"http://127.0.0.1:{two}")
        try:
            client.emit("subscribe_task", {"config_name": "aws01"})
            assert client.wait_for("task_status")["status"]["status"] == "idle"
            status, body = send(
                one,
                "POST",
                "/api/tasks/aws01",
                f"127.0.0.1:{one}",
                body='{"task_type": "change_ip"}',
            )
            assert status == 202, body
            task_id = json.loads(body)["task_id"]

            status, body = send(two, "GET", "/api/tasks/aws01", f"127.0.0.1:{two}")
            assert status == 200, body
            assert json.loads(body)["status"]["status"] == "busy"
            # Busy everywhere: the other demo refuses a second task on it.
            status, body = send(
                two,
                "POST",
                "/api/tasks/aws01",
                f"127.0.0.1:{two}",
                body='{"task_type": "change_ip"}',
            )
            assert status == 409, body

            done = client.wait_for(
                "task_status_update",
                lambda p: p["update"]["event"] == "task_completed",
                timeout=15,
            )
            assert done["update"]["task_id"] == task_id
            seqs = [update["seq"] for update in client.updates()]
            assert seqs == sorted(set(seqs))
            assert wait_until(
                lambda: (
                    json.loads(send(two, "GET", "/api/tasks/aws01", f"127.0.0.1:{two}")[1])[
                        "status"
                    ]["status"]
                    == "idle"
                )
            )
        finally:
            client.close()
    assert "sharing configs, tasks and updates through" in (tmp_path / "one.log").read_text()


def test_the_demo_names_a_bad_redis_option() -> None:
    for args, named in (
        (["--redis-url", "http://127.0.0.1:6379"], "--redis-url:"),
        (["--redis-prefix", "p"], "--redis-prefix: needs --redis-url"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "taskevents", "demo", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert named in result.stderr


DEMO = (sys.executable, "-m", "taskevents", "demo")


def test_the_demo_says_when_no_redis_answers_without_a_traceback() -> None:
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [*DEMO, "--port", "0", "--redis-url", f"redis://127.0.0.1:{port}/0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("taskevents demo: --redis-url: ")
    assert "unavailable" in result.stderr
    assert "Traceback" not in result.stderr
