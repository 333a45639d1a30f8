"""The dashboard page in a real browser (Debian's Chromium driven by Playwright) against
the real demo server, started as ``python -m taskevents demo`` in a subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.support.browser import DemoServer, chromium

# Outside CI a missing Playwright skips the module; under CI=true, tests/conftest.py
# makes that skip (seen only while collecting) a collection error.
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need playwright: run ./dev setup"
)
expect = sync_api.expect

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Locator, Page

#: Generous: a loaded CI machine may be slow, and waits end as soon as they succeed.
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(params=["threading", "asgi"])
def demo_mode(request: pytest.FixtureRequest) -> str:
    """Every dashboard test runs against the demo on Flask-SocketIO and on ASGI."""
    mode: str = request.param
    return mode


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest, demo_mode: str) -> Iterator[DemoServer]:
    # A test may ask for slower tasks: @pytest.mark.parametrize("server", [6.0], indirect=True)
    demo = DemoServer(
        tmp_path / "demo.log",
        task_seconds=getattr(request, "param", 1.5),
        async_mode=demo_mode,
    )
    demo.start()
    try:
        yield demo
    finally:
        demo.stop()
    # Werkzeug read a closed websocket's last frames as a new request, and logged each
    assert "Bad request syntax" not in demo.log()


@dataclass
class Dashboard:
    """An open dashboard page, and what the browser did while showing it."""

    page: Page
    server: DemoServer
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def card(self, name: str) -> Locator:
        return self.page.locator(f'[data-subject="{name}"]')

    def role(self, name: str, within: Locator | None = None) -> Locator:
        return (within or self.page).locator(f'[data-role="{name}"]')

    def log_entries(self, event: str, subject: str) -> Locator:
        return self.role("log").locator(f'[data-event="{event}"][data-log-subject="{subject}"]')

    def expect_connection(self, state: str, timeout: float = WAIT_MS) -> None:
        expect(self.role("connection")).to_have_attribute("data-state", state, timeout=timeout)

    def socket(self, method: str) -> None:
        self.page.evaluate(f"window.taskeventsDashboard.socket.{method}()")

    def subscribe(self, name: str) -> Locator:
        card = self.card(name)
        self.role("subscribe", card).click()
        expect(card).to_have_attribute("data-subscribed", "true", timeout=WAIT_MS)
        return card


@pytest.fixture
def dashboard(browser: Browser, server: DemoServer) -> Iterator[Dashboard]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    seen = Dashboard(page, server)
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("pageerror", lambda error: seen.page_errors.append(str(error)))

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            seen.console_errors.append(message.text)

    page.on("console", on_console)
    try:
        page.goto(server.url + "/websocket")
        seen.expect_connection("connected")
        expect(seen.card("aws01")).to_be_visible(timeout=WAIT_MS)
        yield seen
    finally:
        context.close()


def test_a_task_is_watched_live_from_start_to_completion(dashboard: Dashboard) -> None:
    expect(dashboard.role("connection")).to_contain_text("Connected")
    card = dashboard.subscribe("aws01")
    expect(dashboard.role("status", card)).to_have_text("idle")

    dashboard.role("run", card).click()

    progress = dashboard.role("progress", card)
    expect(progress).to_have_attribute("role", "progressbar")
    expect(progress).to_be_visible(timeout=WAIT_MS)
    expect(dashboard.role("status", card)).to_have_text("idle", timeout=WAIT_MS)
    expect(card).to_have_attribute("data-outcome", "completed")
    expect(progress).to_be_hidden()  # an ended task's bar is gone; the outcome says it
    expect(dashboard.role("outcome", card)).to_contain_text("completed")
    expect(dashboard.role("outcome", card)).to_contain_text("203.0.113.")
    expect(dashboard.log_entries("task_started", "aws01")).to_have_count(1)
    expect(dashboard.log_entries("task_completed", "aws01")).to_have_count(1)
    assert dashboard.log_entries("task_progress", "aws01").count() >= 1
    # newest first
    first = dashboard.role("log").locator("li").first
    expect(first).to_have_attribute("data-event", "task_completed")


def test_a_failing_task_shows_its_error(dashboard: Dashboard) -> None:
    card = dashboard.card("aws02")
    # Starting a task subscribes the card, so its progress shows without a click more.
    dashboard.role("run-fail", card).click()

    expect(card).to_have_attribute("data-outcome", "failed", timeout=WAIT_MS)
    expect(dashboard.role("outcome", card)).to_contain_text("the instance refused the new address")
    expect(dashboard.role("status", card)).to_have_text("idle")
    expect(dashboard.role("progress-block", card)).to_be_hidden()
    expect(dashboard.role("message", card)).to_have_text("")  # no stale progress message
    expect(card).to_have_attribute("data-subscribed", "true")
    expect(dashboard.log_entries("task_failed", "aws02")).to_have_count(1)


def test_starting_a_task_on_a_busy_subject_shows_the_409(dashboard: Dashboard) -> None:
    card = dashboard.subscribe("aws03")
    run = dashboard.role("run", card)
    run.click()
    run.click()

    error = dashboard.role("card-error", card)
    expect(error).to_be_visible(timeout=WAIT_MS)
    expect(error).to_contain_text("409")
    expect(error).to_contain_text("busy")
    expect(dashboard.log_entries("task_started", "aws03")).to_have_count(1)
    expect(card).to_have_attribute("data-outcome", "completed", timeout=WAIT_MS)


def test_the_page_stays_on_its_server_and_logs_no_errors(dashboard: Dashboard) -> None:
    dashboard.role("subscribe-all").click()
    for name in ("aws01", "aws02", "aws03"):
        expect(dashboard.card(name)).to_have_attribute("data-subscribed", "true", timeout=WAIT_MS)
    card = dashboard.card("aws01")
    dashboard.role("run", card).click()
    expect(card).to_have_attribute("data-outcome", "completed", timeout=WAIT_MS)

    hosts = {urlsplit(url).hostname for url in dashboard.requests}
    assert hosts == {"127.0.0.1"}, dashboard.requests
    assert any(url.endswith("/socket.io.min.js") for url in dashboard.requests)
    assert dashboard.console_errors == []
    assert dashboard.page_errors == []
    settings = dashboard.page.evaluate("window.TASKEVENTS")
    assert settings == {"namespace": "/", "apiPrefix": "/api/tasks", "demo": True}


def test_after_a_reconnect_the_card_catches_up_with_what_it_missed(
    dashboard: Dashboard,
) -> None:
    server = dashboard.server
    card = dashboard.subscribe("aws01")
    dashboard.role("run", card).click()
    expect(card).to_have_attribute("data-outcome", "completed", timeout=WAIT_MS)
    seen_seq = server.subject("aws01")["seq"]
    expect(card).to_have_attribute("data-seq", str(seen_seq), timeout=WAIT_MS)

    dashboard.socket("disconnect")
    dashboard.expect_connection("disconnected")
    server.run_task("aws01", fail=True)
    missed_seq = server.wait_idle("aws01")["seq"]
    assert missed_seq > seen_seq
    expect(card).to_have_attribute("data-seq", str(seen_seq))  # it did not hear of it

    dashboard.socket("connect")
    dashboard.expect_connection("connected")
    expect(card).to_have_attribute("data-seq", str(missed_seq), timeout=WAIT_MS)
    expect(card).to_have_attribute("data-sync", "resumed")
    expect(card).to_have_attribute("data-subscribed", "true")
    expect(card).to_have_attribute("data-outcome", "failed")
    replayed = dashboard.role("log").locator('[data-replayed="true"]')
    expect(replayed.and_(dashboard.page.locator('[data-event="task_failed"]'))).to_have_count(1)
    expect(replayed.and_(dashboard.page.locator('[data-event="task_started"]'))).to_have_count(1)
    stats: dict[str, Any] = dashboard.page.evaluate("window.taskeventsDashboard.stats")
    assert stats["resumed"] == 1
    assert stats["resynced"] == 0


def test_a_restarted_server_is_reconnected_to_and_resynced(dashboard: Dashboard) -> None:
    server = dashboard.server
    card = dashboard.subscribe("aws02")
    dashboard.role("run", card).click()
    expect(card).to_have_attribute("data-outcome", "completed", timeout=WAIT_MS)

    server.stop()
    dashboard.expect_connection("reconnecting")
    server.start()  # same port, fresh state: seq starts again from 0
    dashboard.expect_connection("connected", timeout=30_000)
    expect(card).to_have_attribute("data-sync", "resync", timeout=WAIT_MS)
    expect(card).to_have_attribute("data-seq", "0")
    expect(card).to_have_attribute("data-outcome", "")
    expect(dashboard.role("status", card)).to_have_text("idle")

    # and the fresh stream is applied, not dropped as already seen
    dashboard.role("run", card).click()
    expect(card).to_have_attribute("data-outcome", "completed", timeout=WAIT_MS)


def test_updates_already_applied_are_ignored_and_data_is_shown_as_text(
    dashboard: Dashboard,
) -> None:
    card = dashboard.subscribe("aws01")
    deliver = """([payload]) => {
        const socket = window.taskeventsDashboard.socket;
        for (const listener of socket.listeners("task_status_update")) listener(payload);
    }"""
    hostile = "<img src=x onerror=window.hacked=1>"
    update = {"event": "task_started", "task_type": hostile, "status": "busy", "task_id": "t1"}
    dashboard.page.evaluate(
        deliver, [{"config_name": "aws01", "update": update, "seq": 1, "timestamp": "x"}]
    )
    expect(dashboard.role("task-type", card)).to_have_text(hostile)
    expect(dashboard.role("status", card)).to_have_text("busy")
    assert dashboard.page.locator("img").count() == 0
    assert dashboard.page.evaluate("window.hacked") is None

    stale = {"event": "task_completed", "result": None, "status": "idle", "task_id": "t1"}
    dashboard.page.evaluate(
        deliver, [{"config_name": "aws01", "update": stale, "seq": 1, "timestamp": "x"}]
    )
    expect(dashboard.role("status", card)).to_have_text("busy")
    stats: dict[str, Any] = dashboard.page.evaluate("window.taskeventsDashboard.stats")
    assert stats["duplicatesIgnored"] == 1


def test_server_errors_are_shown(dashboard: Dashboard) -> None:
    dashboard.page.evaluate("window.taskeventsDashboard.socket.emit('subscribe_task', {})")
    alert = dashboard.role("errors")
    expect(alert).to_contain_text("missing field 'config_name'", timeout=WAIT_MS)
    expect(alert).to_contain_text("field config_name")
    expect(dashboard.role("log").locator('[data-event="error"]')).to_have_count(1)


def test_unsubscribing_stops_the_live_stream(dashboard: Dashboard) -> None:
    card = dashboard.subscribe("aws03")
    dashboard.role("subscribe", card).click()
    expect(dashboard.log_entries("unsubscribed", "aws03")).to_have_count(1, timeout=WAIT_MS)
    expect(card).to_have_attribute("data-subscribed", "false")
    expect(dashboard.role("subscribe", card)).to_have_text("Subscribe")

    dashboard.server.run_task("aws03")
    dashboard.server.wait_idle("aws03")
    # the card hears of it only through the periodic refresh of all_tasks, not live
    expect(card).to_have_attribute("data-outcome", "completed", timeout=WAIT_MS)
    expect(dashboard.log_entries("task_started", "aws03")).to_have_count(0)


def test_a_subject_stays_busy_while_another_of_its_tasks_runs(dashboard: Dashboard) -> None:
    # Emitters with exclusive=False run several tasks per subject; the end of one says
    # "status": "idle" on the wire, but the card counts what still runs.
    card = dashboard.subscribe("aws02")
    deliver = """([payloads]) => {
        const socket = window.taskeventsDashboard.socket;
        for (const payload of payloads) {
            for (const listener of socket.listeners("task_status_update")) listener(payload);
        }
    }"""
    started = [
        {"event": "task_started", "task_type": kind, "status": "busy", "task_id": kind}
        for kind in ("backup", "resize")
    ]
    ended = {"event": "task_completed", "result": None, "status": "idle", "task_id": "backup"}
    payloads = [
        {"config_name": "aws02", "update": update, "seq": seq, "timestamp": "x"}
        for seq, update in enumerate([*started, ended], start=1)
    ]
    dashboard.page.evaluate(deliver, [payloads[:2]])
    expect(dashboard.role("task-type", card)).to_have_text("resize (+1 more)")
    dashboard.page.evaluate(deliver, [payloads[2:]])
    expect(card).to_have_attribute("data-outcome", "completed")
    expect(dashboard.role("status", card)).to_have_text("busy")
    expect(dashboard.role("task-type", card)).to_have_text("resize")


# -- how each state looks: DOM assertions, and a screenshot of each to look at ----------


def screenshot(dashboard: Dashboard, tmp_path: Path, name: str) -> Path:
    """Save the page as ``<pytest tmp dir>/screenshots/<name>.png``."""
    path = tmp_path / "screenshots" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    dashboard.page.screenshot(path=str(path))
    return path


def buttons(dashboard: Dashboard, card: Locator) -> list[Locator]:
    return [dashboard.role(name, card) for name in ("subscribe", "run", "run-fail")]


def test_idle_cards_show_no_progress_bar(dashboard: Dashboard, tmp_path: Path) -> None:
    dashboard.subscribe("aws02")
    for name in ("aws01", "aws02", "aws03"):
        card = dashboard.card(name)
        expect(dashboard.role("status", card)).to_have_text("idle")
        expect(dashboard.role("progress-block", card)).to_be_hidden()
        expect(dashboard.role("outcome", card)).to_have_text("No finished task yet")
        expect(card).not_to_contain_text("0%")
        for button in buttons(dashboard, card):
            expect(button).to_be_enabled()
    region = {"aws01": "eu-west-1", "aws02": "us-east-1", "aws03": "ap-southeast-2"}
    for name, value in region.items():
        expect(dashboard.role("meta", dashboard.card(name))).to_have_text(f"region {value}")
    # the footer speaks to people; the protocol's details are in its tooltip
    footer = dashboard.role("sync", dashboard.card("aws02"))
    expect(footer).to_have_text("Live")
    title = footer.get_attribute("title") or ""
    assert title.startswith("seq 0 · last sync: snapshot · stream "), title
    expect(dashboard.role("sync", dashboard.card("aws01"))).to_have_text(
        "Not subscribed · refreshed every 5 s"
    )
    screenshot(dashboard, tmp_path, "idle")


@pytest.mark.parametrize("server", [6.0], indirect=True)
def test_a_running_task_shows_its_progress(dashboard: Dashboard, tmp_path: Path) -> None:
    card = dashboard.subscribe("aws01")
    dashboard.role("run", card).click()
    progress = dashboard.role("progress", card)
    expect(progress).to_have_attribute("aria-valuenow", "30", timeout=WAIT_MS)
    expect(progress).to_be_visible()
    expect(progress).to_have_class("progress progress-running")
    expect(dashboard.role("status", card)).to_have_text("busy")
    expect(dashboard.role("task-type", card)).to_have_text("change_ip")
    expect(dashboard.role("percent", card)).to_have_text("30%")
    expect(dashboard.role("stage", card)).to_have_text("execution")
    expect(dashboard.role("message", card)).to_have_text("Stopping the instance...")
    expect(dashboard.role("sync", card)).to_have_text("Live")
    screenshot(dashboard, tmp_path, "running")


def test_a_failed_task_shows_its_error_and_no_stale_progress(
    dashboard: Dashboard, tmp_path: Path
) -> None:
    card = dashboard.subscribe("aws02")
    dashboard.role("run-fail", card).click()
    # the card had the task's progress message...
    progress = dashboard.log_entries("task_progress", "aws02")
    expect(progress.filter(has_text="Changing IP address...")).to_have_count(1, timeout=WAIT_MS)
    expect(card).to_have_attribute("data-outcome", "failed", timeout=WAIT_MS)
    # ...which went with the bar when the task failed
    expect(dashboard.role("progress-block", card)).to_be_hidden()
    expect(dashboard.role("message", card)).to_have_text("")
    expect(card).not_to_contain_text("Changing IP address...")
    outcome = dashboard.role("outcome", card)
    expect(outcome).to_contain_text("failed")
    expect(outcome).to_contain_text("RuntimeError: the instance refused the new address")
    expect(dashboard.role("status", card)).to_have_text("idle")
    screenshot(dashboard, tmp_path, "failed")


def test_a_completed_task_shows_its_result(dashboard: Dashboard, tmp_path: Path) -> None:
    card = dashboard.subscribe("aws03")
    dashboard.role("run", card).click()
    expect(card).to_have_attribute("data-outcome", "completed", timeout=WAIT_MS)
    expect(dashboard.role("progress", card)).to_be_hidden()
    expect(dashboard.role("percent", card)).to_be_hidden()
    outcome = dashboard.role("outcome", card)
    expect(outcome).to_contain_text("completed")
    expect(outcome).to_contain_text("data.ip: 203.0.113.")
    expect(dashboard.role("task-type", card)).to_have_text("change_ip")
    screenshot(dashboard, tmp_path, "completed")


@pytest.mark.parametrize("server", [6.0], indirect=True)
def test_a_lost_connection_shows_on_every_card_and_disables_the_buttons(
    dashboard: Dashboard, tmp_path: Path
) -> None:
    server = dashboard.server
    card = dashboard.subscribe("aws01")
    dashboard.role("run", card).click()
    expect(dashboard.role("progress", card)).to_have_attribute(
        "aria-valuenow", "10", timeout=WAIT_MS
    )

    server.stop()
    dashboard.expect_connection("reconnecting")
    for name in ("aws01", "aws02", "aws03"):
        each = dashboard.card(name)
        expect(each).to_have_attribute("data-connection", "offline")
        expect(dashboard.role("status", each)).to_have_text("offline")
        expect(dashboard.role("card-notice", each)).to_contain_text("Connection lost")
        expect(dashboard.role("progress-block", each)).to_be_hidden()  # no moving bar
        for button in buttons(dashboard, each):
            expect(button).to_be_disabled()
    expect(dashboard.role("card-notice", card)).to_have_text(
        "Connection lost, reconnecting. Last known state: busy, change_ip at 10%."
    )
    expect(dashboard.role("status", card)).to_have_attribute(
        "title", "Last known: busy, change_ip at 10%"
    )
    expect(dashboard.role("subscribe-all")).to_be_disabled()
    expect(dashboard.role("connection-toggle")).to_be_enabled()  # it can always act
    screenshot(dashboard, tmp_path, "disconnected")

    server.start()
    dashboard.expect_connection("connected", timeout=30_000)
    for name in ("aws01", "aws02", "aws03"):
        each = dashboard.card(name)
        expect(each).to_have_attribute("data-connection", "online")
        expect(dashboard.role("card-notice", each)).to_be_hidden()
        for button in buttons(dashboard, each):
            expect(button).to_be_enabled()
    expect(card).to_have_attribute("data-sync", "resync", timeout=WAIT_MS)  # a new server
    expect(dashboard.role("status", card)).to_have_text("idle")


def test_at_1280_px_the_cards_share_the_width_and_the_log_sits_below(
    dashboard: Dashboard, tmp_path: Path
) -> None:
    page = dashboard.page
    page.set_viewport_size({"width": 1280, "height": 900})
    dashboard.role("subscribe-all").click()
    dashboard.role("run", dashboard.card("aws01")).click()
    expect(dashboard.card("aws01")).to_have_attribute("data-outcome", "completed", timeout=WAIT_MS)
    boxes = [dashboard.card(name).bounding_box() for name in ("aws01", "aws02", "aws03")]
    assert all(box is not None for box in boxes)
    tops = {round(box["y"]) for box in boxes if box}
    assert len(tops) == 1, boxes  # one row: three columns
    lefts = [box["x"] for box in boxes if box]
    assert lefts == sorted(lefts)
    cards = dashboard.role("cards").bounding_box()
    log = page.locator(".log-panel").bounding_box()
    assert cards is not None
    assert log is not None
    assert log["y"] >= cards["y"] + cards["height"]  # below the cards...
    assert abs(log["width"] - cards["width"]) < 1  # ...as wide as they are
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    screenshot(dashboard, tmp_path, "layout-1280")


def test_a_subscription_the_server_ends_is_shown_and_not_retried(
    dashboard: Dashboard, tmp_path: Path
) -> None:
    card = dashboard.subscribe("aws01")
    dashboard.subscribe("aws02")
    emitted = """() => {
        const socket = window.taskeventsDashboard.socket;
        window.emitted = [];
        const emit = socket.emit.bind(socket);
        socket.emit = (name, ...args) => {
            window.emitted.push([name, ...args]);
            return emit(name, ...args);
        };
    }"""
    dashboard.page.evaluate(emitted)
    deliver = """([payload]) => {
        const socket = window.taskeventsDashboard.socket;
        for (const listener of socket.listeners("unsubscribed")) listener(payload);
    }"""
    dashboard.page.evaluate(deliver, [{"config_name": "aws01", "reason": "revoked"}])
    expect(card).to_have_attribute("data-subscribed", "false")
    notice = dashboard.role("card-notice", card)
    expect(notice).to_have_text(
        "You may no longer watch this subject: the server withdrew your access."
    )
    expect(dashboard.role("subscribe", card)).to_have_text("Subscribe")
    expect(dashboard.role("sync", card)).to_have_text("Not subscribed")
    screenshot(dashboard, tmp_path, "revoked")

    dashboard.page.evaluate(deliver, [{"config_name": "aws02", "reason": "forgotten"}])
    other = dashboard.card("aws02")
    expect(dashboard.role("card-notice", other)).to_have_text(
        "The server no longer has this subject."
    )
    # a reconnection resubscribes to nothing of either, with or without since
    dashboard.socket("disconnect")
    dashboard.expect_connection("disconnected")
    dashboard.socket("connect")
    dashboard.expect_connection("connected")
    dashboard.page.wait_for_timeout(500)
    sent = dashboard.page.evaluate("window.emitted")
    assert [args for args in sent if args[0] == "subscribe_task"] == []
    stored = dashboard.page.evaluate(
        "JSON.parse(localStorage.getItem('taskevents.dashboard.subscriptions'))"
    )
    assert stored == []
    # the user may ask again; the notice goes
    dashboard.role("subscribe", card).click()
    expect(card).to_have_attribute("data-subscribed", "true", timeout=WAIT_MS)
    expect(notice).to_be_hidden()
