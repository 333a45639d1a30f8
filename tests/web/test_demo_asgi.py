"""``taskevents demo --async-mode asgi``: the demo on python-socketio's ``AsyncServer``
under uvicorn, run as a real process, answers as the Flask demo does (see
tests/web/test_demo.py, whose request helpers these tests share), without Flask."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis.conftest import prefix, redis_client, redis_url  # noqa: F401 - fixtures
from tests.support.browser import DemoServer, chromium, free_port
from tests.support.demo_cases import BAD_BODIES, SIMULATE_MISTAKES
from tests.support.socketio import Client
from tests.web.test_demo import (
    ANSWERED,
    CHANGE_IP,
    REFUSED,
    demo_process,
    every_kind_of_request,
    send,
)

ASGI = ("--async-mode", "asgi")
DEMO = (sys.executable, "-m", "taskevents", "demo")
#: Generous: a loaded CI machine may be slow, and waits end as soon as they succeed.
WAIT = 15.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    """One ASGI demo for the tests that leave every config idle."""
    log = tmp_path_factory.mktemp("asgi-demo") / "demo.log"
    server = DemoServer(log, task_seconds=0.6, async_mode="asgi")
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not server_noise(server.log()), server.log()


def server_noise(log: str) -> list[str]:
    """The lines of a demo's log that are not the demo's own: uvicorn's messages
    (``ERROR:    ...``) and tracebacks."""
    return [
        line
        for line in log.splitlines()
        if re.match(r"(ERROR|WARNING|INFO|DEBUG|CRITICAL):\s", line) or "Traceback" in line
    ]


def post(
    server: DemoServer,
    config_name: str,
    body: str | None = CHANGE_IP,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """POST ``body`` (JSON, unless ``headers`` say otherwise) to the task endpoint:
    ``(status, decoded JSON answer)``."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        all_headers = {"Host": f"127.0.0.1:{server.port}", **(headers or {})}
        connection.request("POST", f"/api/tasks/{config_name}", body=body, headers=all_headers)
        response = connection.getresponse()
        assert response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def greeted(server: DemoServer, **options: Any) -> Client:
    client = Client().connect(server.url, **options)
    assert client.next()[0] == "connection_status"
    return client


def watching(server: DemoServer, config_name: str) -> Client:
    client = greeted(server)
    client.emit("subscribe_task", {"config_name": config_name})
    assert client.wait_for("task_status")["config_name"] == config_name
    return client


def until_ended(client: Client) -> list[dict[str, Any]]:
    """The updates ``client`` gets until a task ends, in order."""
    client.wait_for(
        "task_status_update",
        lambda p: p["update"]["event"] in ("task_completed", "task_failed", "task_cancelled"),
        timeout=WAIT,
    )
    return [payload["update"] for payload in client.updates()]


# -- the dashboard and the REST endpoints ------------------------------------------------


def test_the_dashboard_is_served_at_root_and_seed_path(demo: DemoServer) -> None:
    host = f"127.0.0.1:{demo.port}"
    for path in ("/", "/websocket"):
        status, page = send(demo.port, "GET", path, host)
        assert status == 200, path
        assert re.search(r'"demo":\s*true', page), page[:500]
        assert "/taskevents/static/dashboard.js" in page
    for path in ("/taskevents/static/dashboard.js", "/taskevents/static/vendor/socket.io.min.js"):
        assert send(demo.port, "GET", path, host)[0] == 200, path
    assert send(demo.port, "GET", "/nowhere", host)[0] == 404


def test_the_rest_endpoints_show_the_demo_configs(demo: DemoServer) -> None:
    status, listing = send(demo.port, "GET", "/api/tasks", f"127.0.0.1:{demo.port}")
    assert status == 200
    tasks = json.loads(listing)["tasks"]
    assert sorted(tasks) == ["aws01", "aws02", "aws03"]
    assert tasks["aws03"]["aws_current_region"] == "ap-southeast-2"
    one = demo.subject("aws02")
    assert one["config_name"] == "aws02"
    assert one["status"]["status"] == "idle"
    assert one["status"]["metadata"] == {"aws_current_region": "us-east-1"}


def test_paths_under_api_that_are_no_endpoint_get_json(demo: DemoServer) -> None:
    host = f"127.0.0.1:{demo.port}"
    for path in ("/api/tasks/aws01/start", "/api/other", "/api"):
        status, text = send(demo.port, "GET", path, host)
        assert status == 404, path
        assert json.loads(text) == {"error": {"message": f"nothing here: GET {path!r}"}}
    status, text = send(demo.port, "GET", "/api/tasks/aws99", host)
    assert status == 404
    assert json.loads(text)["error"]["config_name"] == "aws99"
    connection = http.client.HTTPConnection("127.0.0.1", demo.port, timeout=10)
    try:
        connection.request("DELETE", "/api/tasks/aws01", headers={"Host": host})
        response = connection.getresponse()
        assert response.status == 405
        assert response.getheader("Allow") == "GET, POST"
        assert json.loads(response.read())["error"]["allowed"] == ["GET", "POST"]
    finally:
        connection.close()


# -- starting tasks ----------------------------------------------------------------------


def test_a_task_is_watched_live_from_start_to_completion(demo: DemoServer) -> None:
    client = watching(demo, "aws01")
    try:
        status, answer = post(demo, "aws01")
        assert status == 202, answer
        assert answer["config_name"] == "aws01"
        assert answer["task_type"] == "change_ip"
        assert answer["status"] == "busy"
        updates = until_ended(client)
    finally:
        client.close()
    assert client.updates()[0]["seq"] == answer["seq"]
    assert {u["task_id"] for u in updates} == {answer["task_id"]}
    events = [u["event"] for u in updates]
    assert events[0] == "task_started"
    assert events[-1] == "task_completed"
    assert set(events[1:-1]) == {"task_progress"}, events
    percents = [u["progress"]["percent"] for u in updates if u["event"] == "task_progress"]
    assert percents == sorted(percents)
    assert updates[-1]["result"]["status"] == "success"
    assert updates[-1]["result"]["data"]["ip"].startswith("203.0.113.")
    last = demo.wait_idle("aws01")["status"]["last"]
    assert last["task_id"] == answer["task_id"]
    assert last["outcome"] == "completed"


def test_a_task_can_be_asked_to_fail(demo: DemoServer) -> None:
    client = watching(demo, "aws02")
    try:
        status, answer = post(demo, "aws02", '{"task_type": "change_ip", "fail": true}')
        assert status == 202, answer
        updates = until_ended(client)
    finally:
        client.close()
    assert updates[-1]["event"] == "task_failed"
    assert updates[-1]["error"] == {
        "type": "RuntimeError",
        "message": "the instance refused the new address",
    }
    progress = [u for u in updates if u["event"] == "task_progress"]
    assert progress
    assert progress[-1]["progress"]["percent"] <= 55
    assert demo.wait_idle("aws02")["status"]["last"]["outcome"] == "failed"


def test_a_busy_config_is_refused_with_409(demo: DemoServer) -> None:
    driver = greeted(demo)
    try:
        # simulate_task_start holds the config busy until simulate_task_complete
        driver.emit("simulate_task_start", {"config_name": "aws02", "task_type": "reboot"})
        deadline = time.monotonic() + WAIT
        while demo.subject("aws02")["status"]["status"] != "busy":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        running = demo.subject("aws02")["status"]["current"]["task_id"]
        status, answer = post(demo, "aws02")
        assert status == 409
        assert answer["error"] == {
            "message": "aws02 is busy with a reboot task; try again when it has finished",
            "config_name": "aws02",
            "task_id": running,
        }
    finally:
        driver.emit("simulate_task_complete", {"config_name": "aws02"})
        try:  # connected until it has ended: a packet still queued would be lost
            last = demo.wait_idle("aws02")["status"]["last"]
        finally:
            driver.close()
    assert last["task_id"] == running


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message", "field"),
    BAD_BODIES,
)
def test_bad_bodies_get_the_answers_of_the_flask_demo(
    demo: DemoServer,
    body: str,
    content_type: str | None,
    status: int,
    message: str,
    field: str | None,
) -> None:
    before = demo.subject("aws03")["seq"]
    headers = {} if content_type is None else {"Content-Type": content_type}
    got, answer = post(demo, "aws03", body, headers)
    assert got == status
    assert answer["error"]["message"] == message
    assert answer["error"].get("field") == field
    assert demo.subject("aws03")["seq"] == before  # nothing started


def test_an_unknown_config_is_404(demo: DemoServer) -> None:
    status, answer = post(demo, "aws99")
    assert status == 404
    assert answer == {"error": {"message": "unknown config_name 'aws99'", "config_name": "aws99"}}


def test_a_body_over_16_kib_is_413_whether_its_length_is_given_or_not(demo: DemoServer) -> None:
    before = demo.subject("aws03")["seq"]
    big = '{"task_type": "' + "x" * 20_000 + '"}'
    too_large = {"error": {"message": "the request body is too large; at most 16384 bytes"}}
    assert post(demo, "aws03", big) == (413, too_large)
    connection = http.client.HTTPConnection("127.0.0.1", demo.port, timeout=10)
    try:  # chunked: the size is known only while reading
        connection.request(
            "POST",
            "/api/tasks/aws03",
            body=iter([big[:10_000].encode(), big[10_000:].encode()]),
            headers={"Host": f"127.0.0.1:{demo.port}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())) == (413, too_large)
    finally:
        connection.close()
    assert demo.subject("aws03")["seq"] == before


def test_starting_a_task_refuses_foreign_origins(demo: DemoServer) -> None:
    port = demo.port
    for origin in [
        "http://evil.example",
        f"http://localhost:{port}",  # another origin, though the same server
        f"https://127.0.0.1:{port}",
        "null",
    ]:
        status, answer = post(demo, "aws01", headers={"Origin": origin})
        assert status == 403, origin
        assert answer["error"]["origin"] == origin
        assert answer["error"]["message"].startswith(
            f"cross-origin request from {origin!r} refused"
        )
    status, answer = post(demo, "aws01", headers={"Origin": f"http://127.0.0.1:{port}"})
    assert status == 202, answer
    demo.wait_idle("aws01")
    status, answer = post(
        demo, "aws01", headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert status == 202, answer
    demo.wait_idle("aws01")


# -- the original test server's simulate events -----------------------------------------


def test_simulate_events_start_and_end_a_task(demo: DemoServer) -> None:
    watcher = watching(demo, "aws02")
    driver = greeted(demo)
    try:
        driver.emit("simulate_task_start", {"config_name": "aws02", "task_type": "change_region"})
        started = watcher.wait_for("task_status_update")["update"]
        assert started["event"] == "task_started"
        assert started["task_type"] == "change_region"
        driver.emit("simulate_task_complete", {"config_name": "aws02", "result": "success"})
        done = watcher.wait_for("task_status_update")["update"]
        assert done["event"] == "task_completed"
        assert done["result"] == {"status": "success", "data": "Simulated task result"}
        assert done["task_id"] == started["task_id"]
        driver.emit("simulate_task_start", {"config_name": "aws02"})
        assert watcher.wait_for("task_status_update")["update"]["task_type"] == "change_ip"
        driver.emit("simulate_task_complete", {"config_name": "aws02", "result": "failed"})
        failed = watcher.wait_for("task_status_update")["update"]
        assert failed["event"] == "task_failed"
        assert failed["error"] == {"type": "RuntimeError", "message": "the simulated task failed"}
        assert [name for name, _ in driver.drain()] == []  # no error, nothing else
    finally:
        watcher.close()
        driver.close()


@pytest.mark.parametrize(
    ("event", "args", "error"),
    SIMULATE_MISTAKES,
)
def test_simulate_events_answer_mistakes_with_an_error(
    demo: DemoServer, event: str, args: tuple[Any, ...], error: dict[str, Any]
) -> None:
    before = demo.subject("aws01")["seq"]
    client = greeted(demo)
    try:
        client.emit(event, *args)
        assert client.wait_for("error") == {"event": event, **error}
    finally:
        client.close()
    assert demo.subject("aws01")["seq"] == before  # nothing happened


def test_connection_status_comes_before_a_simulate_answer(demo: DemoServer) -> None:
    for _ in range(5):
        client = Client().connect(demo.url)
        try:
            client.emit("simulate_task_complete", {"config_name": "aws01"})
            assert [client.next()[0], client.next()[0]] == ["connection_status", "error"]
        finally:
            client.close()


# -- host names (DNS rebinding), the process and its log ---------------------------------


def test_the_demo_answers_only_its_own_host_names(tmp_path: Path) -> None:
    args = [*ASGI, "--task-seconds", "0.2", "--allowed-host", "*.lan"]
    with demo_process(tmp_path / "demo.log", *args) as port:
        # DNS rebinding: rebind.example now resolves to 127.0.0.1
        assert every_kind_of_request(port, f"rebind.example:{port}", "aws01") == REFUSED
        assert every_kind_of_request(port, "rebind.example", "aws01") == REFUSED
        _, text = send(port, "GET", "/api/tasks/aws01", f"127.0.0.1:{port}")
        assert json.loads(text)["seq"] == 0  # the refused POST started nothing
        assert every_kind_of_request(port, f"127.0.0.1:{port}", "aws01") == ANSWERED
        assert every_kind_of_request(port, f"localhost:{port}", "aws02") == ANSWERED
        assert every_kind_of_request(port, f"box.lan:{port}", "aws03") == ANSWERED
        client = Client()
        try:  # a real Socket.IO client on the served name still connects, and upgrades
            client.connect(f"http://127.0.0.1:{port}", transports=["polling", "websocket"])
            assert client.next()[0] == "connection_status"
        finally:
            client.close()
    log = (tmp_path / "demo.log").read_text()
    assert "answering the host names 127.0.0.1, localhost, [::1], *.lan" in log
    assert not server_noise(log), log  # not even for the refused websockets


def test_a_request_without_host_is_let_through(demo: DemoServer) -> None:
    # HTTP/1.0 needs no Host (a browser always sends one, so rebinding needs one)
    with socket.create_connection(("127.0.0.1", demo.port), timeout=10) as raw:
        raw.sendall(b"GET /api/tasks HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b'"aws01"' in answer


def test_the_demo_log_shows_every_event_at_info(tmp_path: Path) -> None:
    log_path = tmp_path / "demo.log"
    with demo_process(log_path, *ASGI, "--task-seconds", "0.3") as port:
        url = f"http://127.0.0.1:{port}"
        watcher = Client().connect(url)
        upgraded = Client().connect(url, transports=["polling", "websocket"])
        try:
            watcher.emit("subscribe_task", {"config_name": "aws01"})
            watcher.wait_for("task_status")
            send(port, "POST", "/api/tasks/aws01", f"127.0.0.1:{port}", None, CHANGE_IP)
            watcher.wait_for(
                "task_status_update",
                lambda p: p["update"]["event"] == "task_completed",
                timeout=WAIT,
            )
        finally:
            watcher.close()
            upgraded.close()
    log = log_path.read_text(errors="replace")
    assert log.startswith(f"taskevents demo: open http://127.0.0.1:{port}/ (Ctrl+C stops it)\n")
    for stage in ("10% [preparation]", "55% [execution]", "100% [verification]"):
        assert f"INFO     aws01: change_ip {stage}" in log
    assert "aws01: change_ip completed" in log
    assert not server_noise(log), log
    assert "Uvicorn running" not in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_demo_stops_at_once_on_sigterm_and_ctrl_c(tmp_path: Path, signum: int) -> None:
    log_path = tmp_path / "demo.log"
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*DEMO, "--port", str(port), "--task-seconds", "30", *ASGI],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    websocket = Client()
    polling = Client()  # a long-poll waiting for the server's next packet
    try:
        deadline = time.monotonic() + 30
        while "answering the host names" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        websocket.connect(f"http://127.0.0.1:{port}")
        polling.connect(f"http://127.0.0.1:{port}", transports=["polling"])
        websocket.emit("subscribe_task", {"config_name": "aws01"})
        websocket.wait_for("task_status")
        send(port, "POST", "/api/tasks/aws01", f"127.0.0.1:{port}", None, CHANGE_IP)
        websocket.wait_for("task_status_update")  # a task running
        began = time.monotonic()
        process.send_signal(signum)
        code = process.wait(timeout=20)
        took = time.monotonic() - began
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        websocket.close()
        polling.close()
    text = log_path.read_text()
    assert code == 0, text
    # Not the 25 s a long-poll could hold uvicorn's shutdown for, nor the task's 30 s.
    assert took < 5, f"{took:.3f} s\n{text}"
    assert "aws01: change_ip cancelled: the demo server stopped" in text
    assert text.rstrip().endswith("taskevents demo: stopped"), text
    assert "Traceback" not in text


def run_cli(*args: str, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``taskevents ARGS`` in a fresh interpreter where the ``blocked`` modules cannot be
    imported, as when they are not installed."""
    code = (
        "import sys\n"
        f"sys.modules.update(dict.fromkeys({list(blocked)!r}))\n"
        "from taskevents.cli import main\n"
        "sys.exit(main())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_uvicorn_the_asgi_demo_says_what_to_install() -> None:
    result = run_cli("demo", *ASGI, "--port", "0", blocked=("uvicorn",))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "taskevents demo --async-mode asgi needs the 'uvicorn' package, which is not "
        "installed; install it with: pip install 'taskevents[asgi]'"
    )


def test_the_asgi_demo_needs_no_flask(tmp_path: Path) -> None:
    port = free_port()
    blocked = ("flask", "flask_socketio", "werkzeug", "gevent")
    code = (
        "import sys\n"
        f"sys.modules.update(dict.fromkeys({list(blocked)!r}))\n"
        "from taskevents.cli import main\n"
        "sys.exit(main())\n"
    )
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "demo",
                *ASGI,
                "--port",
                str(port),
                "--task-seconds",
                "0.2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = Client()
    try:
        deadline = time.monotonic() + 30
        while "answering the host names" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        client.connect(f"http://127.0.0.1:{port}")
        client.emit("subscribe_task", {"config_name": "aws03"})
        client.wait_for("task_status")
        status, _ = send(port, "POST", "/api/tasks/aws03", f"127.0.0.1:{port}", None, CHANGE_IP)
        assert status == 202
        client.wait_for(
            "task_status_update", lambda p: p["update"]["event"] == "task_completed", timeout=WAIT
        )
    finally:
        client.close()
        process.terminate()
        assert process.wait(timeout=20) == 0, log_path.read_text()
    assert "flask" not in log_path.read_text().lower()


def test_the_help_lists_the_asgi_mode() -> None:
    result = subprocess.run(
        [*DEMO, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "1000"},
    )
    text = " ".join(result.stdout.split())
    assert "--async-mode {threading,gevent,asgi}" in text
    assert "or asgi: python-socketio's AsyncServer under uvicorn, without Flask" in text


# -- Redis: an ASGI demo and a Flask demo share their configs -----------------------------


def test_an_asgi_and_a_flask_demo_share_configs_through_redis(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture
    prefix: str,  # noqa: F811 - the fixture
) -> None:
    shared = ["--redis-url", redis_url, "--redis-prefix", prefix, "--task-seconds", "0.5"]
    with (
        demo_process(tmp_path / "asgi.log", *ASGI, *shared) as asgi_port,
        demo_process(tmp_path / "flask.log", *shared) as flask_port,
    ):
        client = Client().connect(f"http://127.0.0.1:{flask_port}")
        try:
            assert client.next()[0] == "connection_status"
            client.emit("subscribe_task", {"config_name": "aws02"})
            client.wait_for("task_status")
            status, text = send(
                asgi_port, "POST", "/api/tasks/aws02", f"127.0.0.1:{asgi_port}", None, CHANGE_IP
            )
            assert status == 202, text
            task_id = json.loads(text)["task_id"]
            # the Flask demo refuses a second task there: the state is Redis's
            status, text = send(
                flask_port, "POST", "/api/tasks/aws02", f"127.0.0.1:{flask_port}", None, CHANGE_IP
            )
            assert status == 409, text
            done = client.wait_for(
                "task_status_update",
                lambda p: p["update"]["event"] == "task_completed",
                timeout=WAIT,
            )
            assert done["update"]["task_id"] == task_id
        finally:
            client.close()
    log = (tmp_path / "asgi.log").read_text()
    assert "sharing configs, tasks and updates through redis://" in log
    assert "Traceback" not in log, log


def test_the_asgi_demo_names_a_bad_redis_url() -> None:
    result = subprocess.run(
        [*DEMO, *ASGI, "--port", "0", "--redis-url", "http://127.0.0.1:6379"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("--redis-url: expected a Redis URL"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_asgi_demo_says_when_no_redis_answers() -> None:
    port = free_port()  # nothing listens there
    result = subprocess.run(
        [*DEMO, *ASGI, "--port", "0", "--redis-url", f"redis://127.0.0.1:{port}/0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("taskevents demo: --redis-url: the Redis state store at ")
    assert "unavailable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- the dashboard in Chromium -------------------------------------------------------------


def test_the_dashboard_runs_a_task_in_chromium(tmp_path: Path) -> None:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser tests need playwright: run ./dev setup"
    )
    expect = sync_api.expect
    server = DemoServer(tmp_path / "demo.log", task_seconds=2.0, async_mode="asgi")
    server.start()
    errors: list[str] = []
    try:
        with chromium() as browser:
            context = browser.new_context(viewport={"width": 1360, "height": 900})
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(
                "console",
                lambda message: errors.append(message.text) if message.type == "error" else None,
            )
            page.goto(server.url + "/")
            connection = page.locator('[data-role="connection"]')
            expect(connection).to_have_attribute("data-state", "connected", timeout=WAIT * 1000)
            card = page.locator('[data-subject="aws01"]')
            expect(card).to_be_visible(timeout=WAIT * 1000)
            card.locator('[data-role="run"]').click()
            expect(card).to_have_attribute("data-status", "busy", timeout=WAIT * 1000)
            expect(card.locator('[data-role="progress"]')).to_be_visible(timeout=WAIT * 1000)
            expect(card).to_have_attribute("data-status", "idle", timeout=WAIT * 1000)
            expect(card).to_have_attribute("data-outcome", "completed")
            outcome = card.locator('[data-role="outcome"]')
            expect(outcome).to_contain_text("completed")
            expect(outcome).to_contain_text("203.0.113.")
            context.close()
    finally:
        server.stop()
    assert errors == []
