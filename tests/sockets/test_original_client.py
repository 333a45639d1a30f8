"""Clients written for the original TaskMaster system work against ``taskevents demo``
unchanged.

The browser tests drive ``tests/js/original_client.html``, a page that does exactly what
the original test page did (the same events, the same reads of every payload), served
from the demo server's origin, in Chromium. The others read the payloads field by field
with python-socketio, against the original's shapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from taskevents.demo import create_app
from taskevents.flask import TaskEvents
from tests.support.browser import DemoServer, chromium
from tests.support.socketio import Client, LiveServer

# Outside CI a missing Playwright skips the module; under CI=true, tests/conftest.py
# makes that skip a collection error.
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need playwright: run ./dev setup"
)
expect = sync_api.expect

if TYPE_CHECKING:
    import flask
    from playwright.sync_api import Browser, Locator, Page

PAGE = Path(__file__).resolve().parent.parent / "js" / "original_client.html"
WAIT_MS = 15_000
#: The original status object's keys, in its order; taskevents' own follow them.
ORIGINAL_KEYS = [
    "config_name",
    "status",
    "current_task",
    "task_start_time",
    "aws_current_region",
    "last_task",
]
NEW_KEYS = ["seq", "current", "last", "running_tasks", "metadata"]
LAST_TASK_KEYS = ["task_type", "start_time", "end_time", "status", "data"]
#: What the original test server's simulate_task_complete completed a task with.
SIMULATED_RESULT = {"status": "success", "data": "Simulated task result"}
REGIONS = {"aws01": "eu-west-1", "aws02": "us-east-1", "aws03": "ap-southeast-2"}


# -- the payloads, field by field ------------------------------------------------------


@pytest.fixture
def demo() -> Iterator[tuple[flask.Flask, LiveServer]]:
    app, _socketio = create_app(task_seconds=0.3, log=False)
    server = LiveServer(app)
    yield app, server
    server.stop()
    TaskEvents.state(app).close()


def connected(server: LiveServer) -> Client:
    client = Client().connect(server.url)
    assert client.next()[0] == "connection_status"
    return client


def all_tasks(client: Client) -> dict[str, Any]:
    client.emit("get_all_tasks")
    payload: dict[str, Any] = client.wait_for("all_tasks")
    return payload


def is_time(value: object) -> bool:
    return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None


def test_all_tasks_is_the_status_dict_itself(demo: tuple[flask.Flask, LiveServer]) -> None:
    client = connected(demo[1])
    try:
        listing = all_tasks(client)
        assert sorted(listing) == ["aws01", "aws02", "aws03"]  # no other top-level key
        for name, status in listing.items():
            assert list(status) == ORIGINAL_KEYS + NEW_KEYS
            assert status["config_name"] == name
            assert status["aws_current_region"] == REGIONS[name]
    finally:
        client.close()


def test_the_status_object_keeps_the_original_keys_and_types(
    demo: tuple[flask.Flask, LiveServer],
) -> None:
    app, server = demo
    client = connected(server)
    try:
        client.emit("subscribe_task", {"config_name": "aws01"})
        status = client.wait_for("task_status")["status"]
        assert {key: status[key] for key in ORIGINAL_KEYS} == {
            "config_name": "aws01",
            "status": "idle",
            "current_task": None,
            "task_start_time": None,
            "aws_current_region": "eu-west-1",
            "last_task": {},  # the original's empty last task: an object, never null
        }

        client.emit("simulate_task_start", {"config_name": "aws01", "task_type": "change_ip"})
        client.wait_for("task_status_update")
        busy = all_tasks(client)["aws01"]
        assert busy["status"] == "busy"
        assert busy["current_task"] == "change_ip"  # the task's type, as text
        assert is_time(busy["task_start_time"])
        assert busy["task_start_time"] == busy["current"]["started_at"]
        assert busy["current"]["task_type"] == "change_ip"
        assert busy["last_task"] == {}

        client.emit("simulate_task_complete", {"config_name": "aws01", "result": "success"})
        client.wait_for("task_status_update", lambda p: p["update"]["event"] == "task_completed")
        done = all_tasks(client)["aws01"]
        assert done["status"] == "idle"
        assert done["current_task"] is None
        assert done["task_start_time"] is None
        last = done["last_task"]
        assert list(last) == LAST_TASK_KEYS
        assert last["task_type"] == "change_ip"
        assert last["status"] == "success"
        assert last["data"] == SIMULATED_RESULT
        assert is_time(last["start_time"])
        assert is_time(last["end_time"])
        assert last["start_time"] == busy["task_start_time"]
        assert done["last"]["outcome"] == "completed"  # taskevents' own, under a new key
        assert done["last"]["result"] == SIMULATED_RESULT

        emitter = TaskEvents.state(app).emitter
        emitter.started("aws01", "reboot")
        emitter.failed("aws01", RuntimeError("no route to host"))
        failed = all_tasks(client)["aws01"]["last_task"]
        assert failed["status"] == "failed"
        assert failed["data"] == {"type": "RuntimeError", "message": "no route to host"}
        emitter.started("aws01", "reboot")
        emitter.cancelled("aws01", reason="operator asked")
        cancelled = all_tasks(client)["aws01"]
        assert cancelled["last_task"]["status"] == "failed"  # the original knew no other
        assert cancelled["last_task"]["data"] == {"reason": "operator asked"}
        assert cancelled["last"]["outcome"] == "cancelled"
    finally:
        client.close()


def test_task_status_and_connection_status_have_the_original_keys(
    demo: tuple[flask.Flask, LiveServer],
) -> None:
    client = Client().connect(demo[1].url)
    try:
        name, greeting = client.next()
        assert name == "connection_status"
        assert greeting["status"] == "connected"
        assert greeting["client_id"] == client.sio.get_sid()
        client.emit("subscribe_task", {"config_name": "aws02"})
        status = client.wait_for("task_status")
        assert status["config_name"] == "aws02"
        assert status["status"]["config_name"] == "aws02"
        assert status["status"]["aws_current_region"] == "us-east-1"
    finally:
        client.close()


# -- the original page, in Chromium ------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DemoServer]:
    demo = DemoServer(tmp_path / "demo.log", task_seconds=0.6)
    demo.start()
    try:
        yield demo
    finally:
        demo.stop()


class OriginalPage:
    """The original client's page, open on the demo server's origin."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.page_errors: list[str] = []
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def click(self, button: str) -> None:
        self.page.locator(f"#{button}").click()

    def fill(self, field: str, value: str) -> None:
        self.page.locator(f"#{field}").fill(value)

    def line(self, config_name: str, label: str) -> Locator:
        return self.page.locator(f'#task-{config_name} [data-label="{label}"]')

    def logs(self) -> Locator:
        return self.page.locator("#logs li")

    def get_all(self) -> None:
        self.click("getAllBtn")


@pytest.fixture
def original(browser: Browser, server: DemoServer) -> Iterator[OriginalPage]:
    context = browser.new_context()
    page = context.new_page()
    url = server.url + "/original-client"  # on the demo's origin, as the original was
    page.route(url, lambda route: route.fulfill(body=PAGE.read_text(), content_type="text/html"))
    try:
        page.goto(url)
        opened = OriginalPage(page)
        opened.click("connectBtn")
        expect(page.locator("#connectionStatus")).to_have_text("Connected", timeout=WAIT_MS)
        expect(page.locator("#clientId")).to_contain_text("Client ID: ", timeout=WAIT_MS)
        client_id = page.evaluate("window.originalSocket.id")
        expect(page.locator("#clientId")).to_have_text(f"Client ID: {client_id}")
        yield opened
        assert opened.page_errors == []
    finally:
        context.close()


def test_the_original_page_lists_every_config(original: OriginalPage) -> None:
    original.get_all()
    expect(original.logs().filter(has_text="Received all tasks data")).to_have_text(
        ["Received all tasks data (3 configurations)"], timeout=WAIT_MS
    )
    for name, region in REGIONS.items():
        expect(original.line(name, "Status")).to_have_text("Status: idle")
        expect(original.line(name, "Current Task")).to_have_text("Current Task: None")
        expect(original.line(name, "Region")).to_have_text(f"Region: {region}")
        expect(original.line(name, "Last Task")).to_have_count(0)  # none has run yet


def test_the_original_page_simulates_a_task_and_sees_it_run_and_succeed(
    original: OriginalPage, server: DemoServer
) -> None:
    original.fill("configName", "aws02")
    original.click("subscribeBtn")
    expect(original.line("aws02", "Region")).to_have_text("Region: us-east-1", timeout=WAIT_MS)

    original.fill("simConfigName", "aws02")
    original.fill("simTaskType", "change_region")
    original.click("simStartBtn")
    expect(original.line("aws02", "Status")).to_have_text("Status: busy", timeout=WAIT_MS)
    expect(original.line("aws02", "Current Task")).to_have_text("Current Task: change_region")
    original.get_all()  # the full status object now, from all_tasks
    expect(original.line("aws02", "Region")).to_have_text("Region: us-east-1", timeout=WAIT_MS)
    expect(original.line("aws02", "Current Task")).to_have_text("Current Task: change_region")

    original.click("simCompleteBtn")
    expect(original.line("aws02", "Status")).to_have_text("Status: idle", timeout=WAIT_MS)
    original.get_all()
    expect(original.line("aws02", "Last Task")).to_have_text(
        "Last Task: change_region (success)", timeout=WAIT_MS
    )
    expect(original.line("aws02", "Started")).to_have_count(1)
    expect(original.line("aws02", "Ended")).to_have_count(1)
    expect(original.line("aws02", "Current Task")).to_have_text("Current Task: None")
    expect(original.logs().filter(has_text="Error")).to_have_count(0)
    last = server.subject("aws02")["status"]["last_task"]
    assert last["status"] == "success"
    assert last["data"] == SIMULATED_RESULT


def test_the_original_page_follows_tasks_the_task_manager_runs(
    original: OriginalPage, server: DemoServer
) -> None:
    original.fill("configName", "aws01")
    original.click("subscribeBtn")
    expect(original.line("aws01", "Status")).to_have_text("Status: idle", timeout=WAIT_MS)
    updates = original.logs().filter(has_text="Task update for aws01")

    server.run_task("aws01")
    expect(updates.filter(has_text="task_completed")).to_have_count(1, timeout=WAIT_MS)
    expect(updates.filter(has_text="task_progress").first).to_be_attached()
    original.get_all()
    expect(original.line("aws01", "Last Task")).to_have_text(
        "Last Task: change_ip (success)", timeout=WAIT_MS
    )

    server.run_task("aws01", fail=True)
    expect(updates.filter(has_text="task_failed")).to_have_count(1, timeout=WAIT_MS)
    expect(original.line("aws01", "Status")).to_have_text("Status: idle")
    original.get_all()
    expect(original.line("aws01", "Last Task")).to_have_text(
        "Last Task: change_ip (failed)", timeout=WAIT_MS
    )


def test_the_original_page_is_told_what_is_wrong_with_a_simulation(
    original: OriginalPage,
) -> None:
    errors = original.logs().filter(has_text="Error: ")
    original.fill("simConfigName", "aws99")
    original.click("simStartBtn")
    expect(errors).to_have_text(
        ["Error: simulate_task_start: unknown config_name 'aws99'"], timeout=WAIT_MS
    )
    original.fill("simConfigName", "aws03")
    original.click("simCompleteBtn")
    expect(errors.nth(1)).to_have_text(
        "Error: simulate_task_complete: no task started with simulate_task_start runs on aws03",
        timeout=WAIT_MS,
    )
    original.click("simStartBtn")
    original.click("simStartBtn")
    expect(errors.nth(2)).to_have_text(
        "Error: simulate_task_start: aws03 is busy with a change_ip task", timeout=WAIT_MS
    )
    original.click("simCompleteBtn")
    original.get_all()
    expect(original.line("aws03", "Last Task")).to_have_text(
        "Last Task: change_ip (success)", timeout=WAIT_MS
    )
    expect(errors).to_have_count(3)
