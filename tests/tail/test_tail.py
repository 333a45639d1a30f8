"""``taskevents tail`` as a person and a script use it: a real demo server (or a live
Flask app, for tokens and dropped connections), the real command in a subprocess, and a
real terminal (tmux) for the live view."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.support.browser import DemoServer, free_port, http_json
from tests.support.socketio import Served, by_token, wait_until

TAIL = (sys.executable, "-m", "taskevents", "tail")
TMUX = "/usr/bin/tmux"


class Tail:
    """``taskevents tail ARGS...`` in a subprocess, its output read as it comes."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        environ = {k: v for k, v in os.environ.items() if k != "TASKEVENTS_TOKEN"}
        self.process = subprocess.Popen(
            [*TAIL, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(
        self, lines: list[str], condition: Callable[[str], bool], timeout: float = 20
    ) -> None:
        assert wait_until(lambda: any(condition(line) for line in lines), timeout), (
            f"not seen in time; stdout: {self.out[-10:]}, stderr: {self.err[-10:]}"
        )

    def finish(self, timeout: float = 30) -> int:
        """Its exit code, once it has exited and its output is read."""
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.kill()
        for reader in self._readers:
            reader.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    """``taskevents demo --task-seconds 2``, shared by this module's tests (each uses
    subjects in a way that does not depend on what ran before)."""
    server = DemoServer(tmp_path_factory.mktemp("demo") / "demo.log", task_seconds=2)
    server.start()
    yield server
    server.stop()


def start_task(demo: DemoServer, subject: str, *, fail: bool = False) -> str:
    """Start a simulated task on the demo: its id."""
    status, body = http_json(
        f"{demo.url}/api/tasks/{subject}", {"task_type": "change_ip", "fail": fail}
    )
    assert status == 202, body
    task_id: str = body["task_id"]
    return task_id


def wait_idle(demo: DemoServer, subject: str) -> None:
    def idle() -> bool:
        return bool(http_json(f"{demo.url}/api/tasks/{subject}")[1]["status"]["status"] == "idle")

    assert wait_until(idle, 20)


# -- --wait: exit codes for scripts and CI --------------------------------------------------


def test_wait_exits_0_when_the_next_task_completes(demo: DemoServer) -> None:
    wait_idle(demo, "aws01")
    tail = Tail(demo.url, "--wait", "aws01")
    tail.wait_for(tail.err, lambda line: "waiting for a task to start" in line)
    task_id = start_task(demo, "aws01")
    assert tail.finish() == 0
    assert tail.err[-1] == "taskevents tail: aws01: change_ip completed"
    assert f"aws01: change_ip started (task {task_id})" in "\n".join(tail.out)
    assert "aws01: change_ip 100% [verification] Releasing the old address..." in "\n".join(
        tail.out
    )


def test_wait_follows_a_running_task_and_exits_1_when_it_fails(demo: DemoServer) -> None:
    wait_idle(demo, "aws02")
    start_task(demo, "aws02", fail=True)
    tail = Tail(demo.url, "--wait", "aws02")
    assert tail.finish() == 1
    assert tail.err[-1] == "taskevents tail: aws02: change_ip failed"
    assert any(
        "change_ip failed: RuntimeError: the instance refused the new address" in line
        for line in tail.out
    )


def test_wait_with_task_id_gives_the_outcome_of_a_task_that_has_ended(demo: DemoServer) -> None:
    wait_idle(demo, "aws02")
    task_id = start_task(demo, "aws02", fail=True)
    wait_idle(demo, "aws02")  # over before tail starts: no race
    tail = Tail(demo.url, "--wait", "aws02", "--task-id", task_id)
    assert tail.finish() == 1
    other = Tail(demo.url, "--wait", "aws02", "--task-id", "no-such-task")
    assert other.finish() == 2
    assert "task no-such-task is neither running nor the last one to end" in other.err[-1]


def test_wait_exits_2_on_an_unknown_subject(demo: DemoServer) -> None:
    tail = Tail(demo.url, "--wait", "aws09")
    assert tail.finish() == 2
    assert tail.err == ["taskevents tail: subscribe_task: unknown config_name 'aws09'"]
    assert tail.out == []


def test_wait_exits_2_when_nothing_listens(demo: DemoServer) -> None:
    tail = Tail(f"http://127.0.0.1:{free_port()}", "--wait", "aws01")
    assert tail.finish() == 2
    assert len(tail.err) == 1
    assert tail.err[0].startswith("taskevents tail: cannot connect to http://127.0.0.1:")
    assert tail.err[0].endswith("Connection refused")


def test_wait_times_out_with_124(demo: DemoServer) -> None:
    wait_idle(demo, "aws03")
    tail = Tail(demo.url, "--wait", "aws03", "--timeout", "1")
    assert tail.finish() == 124
    assert tail.err[-1] == "taskevents tail: no outcome for aws03 within 1 s"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "ftp://example.com",
            "expected the server's URL, http(s)://HOST[:PORT], got ftp://example.com",
        ),
        ("localhost:5000", "expected the server's URL, http(s)://HOST[:PORT], got localhost:5000"),
        ("http://[::1", "not a valid URL: http://[::1"),
        ("http://host:99999", "not a valid URL: http://host:99999"),
    ],
)
def test_a_bad_url_is_one_line_and_exit_2(url: str, message: str) -> None:
    tail = Tail(url, "--wait", "aws01")
    assert tail.finish() == 2
    assert tail.err == [f"taskevents tail: {message}"]


def test_bad_arguments_exit_2() -> None:
    for args in (["--timeout", "5"], ["--wait", "aws01", "--timeout", "0"], ["--subject", ""]):
        tail = Tail("http://127.0.0.1:1", *args)
        assert tail.finish() == 2
        assert len(tail.err) == 1, tail.err


# -- tokens: the authenticate hook -----------------------------------------------------------


def test_a_refused_token_exits_2_and_a_good_one_follows_the_task(
    serve: Callable[..., Served],
) -> None:
    served = serve(authenticate=by_token)
    refused = Tail(served.url, "--wait", "aws01", "--token", "mallory-token")
    assert refused.finish() == 2
    assert refused.err == [
        f"taskevents tail: {served.url} refused the connection: authentication failed"
    ]
    nothing = Tail(served.url, "--wait", "aws01")
    assert nothing.finish() == 2
    assert "authentication failed" in nothing.err[-1]

    tail = Tail(served.url, "--wait", "aws01", "--json", env={"TASKEVENTS_TOKEN": "alice-token"})
    tail.wait_for(tail.err, lambda line: "waiting for a task to start" in line)
    served.emitter.started("aws01", "reboot")
    served.emitter.progress("aws01", 50)
    served.emitter.completed("aws01", {"ok": True})
    assert tail.finish() == 0
    events = [line["event"] for line in tail.json_lines()]
    assert events == ["task_status", "task_started", "task_progress", "task_completed"]
    everything = "\n".join(refused.err + nothing.err + tail.err + tail.out)
    assert "alice-token" not in everything
    assert "mallory-token" not in everything


def test_a_cancelled_task_exits_1(serve: Callable[..., Served]) -> None:
    served = serve()
    tail = Tail(served.url, "--wait", "aws03")
    tail.wait_for(tail.err, lambda line: "waiting for a task to start" in line)
    served.emitter.started("aws03", "reboot")
    served.emitter.cancelled("aws03", "operator asked")
    assert tail.finish() == 1
    assert tail.err[-1] == "taskevents tail: aws03: reboot cancelled"
    assert tail.out[-1].endswith("aws03: reboot cancelled: operator asked")


# -- resuming after a dropped connection ------------------------------------------------------


def test_after_a_dropped_connection_it_resumes_and_gets_what_it_missed(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    tail = Tail(served.url, "--wait", "aws01", "--json")
    tail.wait_for(tail.err, lambda line: "waiting for a task to start" in line)
    served.emitter.started("aws01", "change_ip")
    tail.wait_for(tail.out, lambda line: "task_started" in line)
    socketio = served.app.extensions["socketio"]
    socketio.server.eio.disconnect()  # every connection, cut by the server
    # while the client is away (it waits half a second before connecting again):
    served.emitter.progress("aws01", 60, stage="execution")
    served.emitter.completed("aws01", {"ip": "203.0.113.7"})
    assert tail.finish() == 0
    lines = tail.json_lines()
    assert [(line["event"], line["seq"], line.get("replayed")) for line in lines] == [
        ("task_status", 0, None),
        ("task_started", 1, None),
        ("task_progress", 2, True),
        ("task_completed", 3, True),
    ]
    assert any("connection lost" in line for line in tail.err)
    assert any("connected again; resuming" in line for line in tail.err)


def test_after_the_server_restarts_it_reconnects_and_shows_the_new_state(
    tmp_path: Path,
) -> None:
    server = DemoServer(tmp_path / "demo.log", task_seconds=0.6)
    server.start()
    tail = Tail(server.url, "--subject", "aws01")
    try:
        tail.wait_for(tail.out, lambda line: "aws01: idle, no task yet" in line)
        start_task(server, "aws01")
        tail.wait_for(tail.out, lambda line: "change_ip completed" in line)
        server.stop()
        tail.wait_for(tail.err, lambda line: "connection lost" in line)
        server.start()
        # a new server, a new stream: the seq kept cannot be resumed
        tail.wait_for(tail.err, lambda line: "could not resume" in line)
        tail.wait_for(tail.out, lambda line: line.endswith("aws01: idle, no task yet (resync)"))
        start_task(server, "aws01")
        assert wait_until(lambda: sum("change_ip completed" in line for line in tail.out) == 2)
    finally:
        tail.process.send_signal(signal.SIGINT)
        assert tail.finish() == 130
        server.stop()
    assert not any("Traceback" in line for line in tail.err)


# -- --json and plain lines in a pipe ---------------------------------------------------------


def test_json_lines_in_a_pipe_one_object_per_event(demo: DemoServer) -> None:
    wait_idle(demo, "aws03")
    tail = Tail(demo.url, "--json", "--subject", "aws03")
    tail.wait_for(tail.out, lambda line: '"task_status"' in line)
    task_id = start_task(demo, "aws03")
    tail.wait_for(tail.out, lambda line: '"task_completed"' in line)
    tail.process.send_signal(signal.SIGINT)  # Ctrl+C
    assert tail.finish() == 130
    lines = tail.json_lines()
    assert lines[0]["event"] == "task_status"
    assert lines[0]["status"]["status"] == "idle"
    run = [line for line in lines[1:] if line["task_id"] == task_id]
    assert [line["event"] for line in run] == [
        "task_started",
        *["task_progress"] * 5,
        "task_completed",
    ]
    assert [line["percent"] for line in run if line["event"] == "task_progress"] == [
        10,
        30,
        55,
        80,
        100,
    ]
    assert all(line["config_name"] == "aws03" for line in run)
    assert [line["seq"] for line in run] == sorted({line["seq"] for line in run})
    assert run[-1]["result"]["status"] == "success"
    assert tail.err == []  # Ctrl+C is quiet


def test_json_into_head_stops_quietly(demo: DemoServer) -> None:
    shell = subprocess.Popen(
        f"{' '.join(TAIL)} {demo.url} --json --subject aws01 | head -n 1; "
        'echo "codes=${PIPESTATUS[*]}"',
        shell=True,
        executable="/bin/bash",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # tail sees that head has gone at its next line: give it some
        deadline = time.monotonic() + 60
        while shell.poll() is None and time.monotonic() < deadline:
            if http_json(f"{demo.url}/api/tasks/aws01")[1]["status"]["status"] == "idle":
                start_task(demo, "aws01")
            time.sleep(0.3)
        stdout, stderr = shell.communicate(timeout=10)
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait(10)
    first, codes = stdout.splitlines()
    assert json.loads(first)["event"] == "task_status"
    assert codes == "codes=0 0"
    assert stderr == ""


def test_every_subject_by_default_as_plain_lines_when_not_a_terminal(demo: DemoServer) -> None:
    tail = Tail(demo.url)
    for subject in ("aws01", "aws02", "aws03"):
        tail.wait_for(tail.out, lambda line, s=subject: f" {s}: " in line)  # type: ignore[misc]
    wait_idle(demo, "aws02")
    start_task(demo, "aws02")
    tail.wait_for(tail.out, lambda line: "aws02: change_ip completed: {" in line)
    tail.process.send_signal(signal.SIGINT)
    assert tail.finish() == 130
    text = "\n".join(tail.out)
    assert "aws02: change_ip 55% [execution] Changing IP address..." in text
    assert "\x1b" not in text  # no colours, no cursor movement


# -- the live view, in a real terminal --------------------------------------------------------


@pytest.fixture
def tmux() -> Iterator[Callable[[str], str]]:
    """``start(command)`` runs a command in a new 120x40 tmux session: its name, for
    :func:`pane`. Every session is killed afterwards."""
    if not os.access(TMUX, os.X_OK):
        pytest.skip(f"{TMUX} is missing: apt-get install tmux (./dev test does it)")
    sessions: list[str] = []

    def start(command: str) -> str:
        name = f"tail-{uuid.uuid4().hex[:8]}"
        subprocess.run(
            [TMUX, "new-session", "-d", "-s", name, "-x", "120", "-y", "40", command],
            check=True,
            env={k: v for k, v in os.environ.items() if k != "TMUX"},
        )
        sessions.append(name)
        return name

    yield start
    for name in sessions:
        subprocess.run([TMUX, "kill-session", "-t", name], check=False, capture_output=True)


def pane(session: str) -> str:
    return subprocess.run(
        [TMUX, "capture-pane", "-p", "-t", session], check=True, capture_output=True, text=True
    ).stdout


def test_the_live_view_in_a_terminal_shows_a_bar_that_reaches_100_percent(
    demo: DemoServer, tmux: Callable[[str], str], tmp_path: Path
) -> None:
    wait_idle(demo, "aws01")
    session = tmux(
        f"{sys.executable} -m taskevents tail {demo.url} --subject aws01 --subject aws03; "
        f"echo EXIT=$?; sleep 60"
    )
    assert wait_until(lambda: "(Ctrl+C quits)" in pane(session), 20), pane(session)
    assert wait_until(lambda: "connected" in pane(session), 20), pane(session)
    start_task(demo, "aws01")
    seen: list[str] = []

    def first_card() -> str:
        """aws01's card: the first 38 columns of the screen (cards are 38 wide)."""
        seen.append(pane(session))
        return "\n".join(line[:38] for line in seen[-1].splitlines() if line[:1] in "╭│╰")

    assert wait_until(lambda: "change_ip  running" in first_card(), 20), seen[-1]
    assert wait_until(lambda: "change_ip  completed" in first_card(), 20), seen[-1]
    running = [screen for screen in seen if "change_ip  running" in screen]
    assert any("[execution] " in screen for screen in running), running
    final = seen[-1]
    card = final.splitlines()[:5]
    assert "aws01" in card[0]
    assert "aws03" in card[0]  # a card each, side by side
    assert "change_ip  completed" in card[1]
    assert "100%" in card[2]
    assert "━" * 27 in card[2]  # the bar, full
    assert '{"status": "success"' in card[3]  # the result, cut to fit
    assert "idle" in card[4]
    assert final.count("╭") == 2  # redrawn in place, not scrolled
    # on the way there the bar moved through the stages, less than full
    stages = {p for p in ("10%", "30%", "55%", "80%") if any(p in s[: 38 * 3 + 200] for s in seen)}
    assert len(stages) >= 2, seen
    subprocess.run([TMUX, "send-keys", "-t", session, "C-c"], check=True)
    assert wait_until(lambda: "EXIT=130" in pane(session), 20), pane(session)
    assert "Traceback" not in pane(session)


# -- staying light --------------------------------------------------------------------------


def test_import_taskevents_does_not_import_the_client_or_rich() -> None:
    code = (
        "import sys, taskevents, taskevents.cli, taskevents.tail; "
        "print(sorted(m for m in ('socketio', 'engineio', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_without_the_extra_it_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['socketio'] = None; "
        "from taskevents.cli import main; "
        "sys.exit(main(['tail', 'http://127.0.0.1:1', '--subject', 'aws01']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2
    assert "taskevents[tail]" in out.stderr
    assert "Traceback" not in out.stderr


def test_text_from_the_server_cannot_drive_the_terminal(serve: Callable[..., Served]) -> None:
    served = serve()
    tail = Tail(served.url, "--wait", "aws02")
    tail.wait_for(tail.err, lambda line: "waiting for a task to start" in line)
    served.emitter.started("aws02", "reboot")
    served.emitter.progress("aws02", 50, stage="\x1b[31m", message="\x1b[2Jcleared\x07")
    served.emitter.failed("aws02", RuntimeError("\x1b]0;title\x07"))
    assert tail.finish() == 1
    text = "\n".join(tail.out + tail.err)
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "aws02: reboot 50% [\\x1b[31m] \\x1b[2Jcleared\\x07" in text


def test_a_server_that_is_not_taskevents_is_one_line_and_exit_2() -> None:
    import http.server

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tail = Tail(f"http://127.0.0.1:{server.server_port}", "--wait", "aws01")
        assert tail.finish() == 2
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert tail.err == [
        f"taskevents tail: cannot connect to http://127.0.0.1:{server.server_port}: Unexpected "
        "status code 501 in server response (is it a taskevents server's URL?)"
    ]


def test_wait_exits_2_when_a_restarted_server_no_longer_knows_the_task(tmp_path: Path) -> None:
    server = DemoServer(tmp_path / "demo.log", task_seconds=30)
    server.start()
    try:
        start_task(server, "aws01")
        tail = Tail(server.url, "--wait", "aws01")
        tail.wait_for(tail.out, lambda line: "change_ip running" in line)
        server.stop()
        tail.wait_for(tail.err, lambda line: "connection lost" in line)
        server.start()
        assert tail.finish() == 2
    finally:
        server.stop()
    assert tail.err[-1] == (
        "taskevents tail: aws01: lost track of the task (the server has restarted?)"
    )
