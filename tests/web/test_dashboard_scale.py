"""The dashboard, ``get_all_tasks`` and ``GET /api/tasks`` with 10,000 subjects: a real
server (the Flask extension on Werkzeug, in this process) and Debian's Chromium driven
by Playwright; the subjects' events come from the server's emitter, as a task manager
would send them. Only correctness is checked here, never speed."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import IN_CI
from tests.support.browser import chromium, http_json
from tests.support.socketio import Client, LiveServer

# Outside CI a missing Playwright skips the module; under CI=true, tests/conftest.py
# makes that skip (seen only while collecting) a collection error.
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need playwright: run ./dev setup"
)
expect = sync_api.expect

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

    from tests.support.socketio import Served

#: Generous: a loaded CI machine may be slow, and waits end as soon as they succeed.
WAIT_MS = 30_000
COUNT = 10_000
#: vm00000 ... vm09999: their sorted order is their numeric order.
NAMES = [f"vm{number:05d}" for number in range(COUNT)]
#: The dashboard's page size (dashboard.js PAGE_SIZE), checked against the page's.
PAGE_SIZE = 48
PAGES = -(-COUNT // PAGE_SIZE)  # 209: 208 full pages and one of 16
DASH = "\u2013"  # an en dash: "Showing 1 (dash) 48 of 10,000 subjects"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def served(serve: Callable[..., Served]) -> Served:
    """The Flask extension on a live server, with 10,000 registered subjects."""
    return serve(subjects=NAMES)


class Dashboard:
    """The dashboard page of ``served``, open in Chromium."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def role(self, name: str, within: Locator | None = None) -> Locator:
        return (within or self.page).locator(f'[data-role="{name}"]')

    def card(self, name: str) -> Locator:
        return self.page.locator(f'[data-subject="{name}"]')

    @property
    def cards(self) -> Locator:
        return self.role("cards").locator("[data-subject]")

    def card_names(self) -> list[str]:
        names: list[str] = self.page.evaluate(
            "[...document.querySelectorAll('[data-subject]')].map((card) => card.dataset.subject)"
        )
        return names

    def filter(self, text: str) -> None:
        self.role("filter").fill(text)

    def expect_info(self, text: str) -> None:
        expect(self.role("pager-info")).to_have_text(text, timeout=WAIT_MS)

    def model(self, name: str) -> dict[str, Any]:
        """What the page's model holds of ``name`` (status, seq, last outcome)."""
        state: dict[str, Any] = self.page.evaluate(
            """(name) => {
                const subject = window.taskeventsDashboard.subjects.get(name);
                return subject && {status: subject.status, seq: subject.seq,
                    outcome: subject.last ? subject.last.outcome : null,
                    wanted: subject.wanted, hasCard: subject.dom !== null};
            }""",
            name,
        )
        return state

    def wait_model(self, name: str, condition: str) -> None:
        """Wait until ``condition`` (JavaScript, about ``subject``) holds in the model."""
        self.page.wait_for_function(
            f"""(name) => {{
                const subject = window.taskeventsDashboard.subjects.get(name);
                return Boolean(subject && ({condition}));
            }}""",
            arg=name,
            timeout=WAIT_MS,
        )

    def subscribe(self, name: str) -> Locator:
        card = self.card(name)
        self.role("subscribe", card).click()
        expect(card).to_have_attribute("data-subscribed", "true", timeout=WAIT_MS)
        return card


@pytest.fixture
def dashboard(browser: Browser, served: Served) -> Iterator[Dashboard]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="en-US")
    page = context.new_page()
    seen = Dashboard(page)
    try:
        page.goto(served.url + "/websocket")
        expect(seen.role("connection")).to_have_attribute(
            "data-state", "connected", timeout=WAIT_MS
        )
        seen.expect_info(f"Showing 1{DASH}{PAGE_SIZE} of 10,000 subjects")
        yield seen
        assert seen.errors == []
    finally:
        context.close()


def test_the_page_holds_one_page_of_cards_out_of_10000(dashboard: Dashboard) -> None:
    page = dashboard.page
    assert page.evaluate("window.taskeventsDashboard.pageSize") == PAGE_SIZE
    assert page.evaluate("window.taskeventsDashboard.subjects.size") == COUNT
    expect(dashboard.cards).to_have_count(PAGE_SIZE)
    assert page.locator("article.card").count() == PAGE_SIZE  # nothing hidden elsewhere
    assert dashboard.card_names() == NAMES[:PAGE_SIZE]
    expect(dashboard.role("toolbar")).to_be_visible()
    expect(dashboard.role("pager")).to_be_visible()
    expect(dashboard.role("page-count")).to_have_text(str(PAGES))
    expect(dashboard.role("page-prev")).to_be_disabled()
    expect(dashboard.role("page-next")).to_be_enabled()
    options = dashboard.role("status-filter").locator("option")
    expect(options).to_have_text(
        ["All (10,000)", "Busy (0)", "Last run failed (0)", "Subscribed (0)"]
    )
    # Labelled for assistive technology, and "Subscribe to all" is about what is shown.
    expect(page.get_by_label("Name")).to_have_attribute("data-role", "filter")
    expect(page.get_by_label("Show")).to_have_attribute("data-role", "status-filter")
    expect(page.get_by_label("Page", exact=True)).to_have_attribute("data-role", "page-number")
    expect(dashboard.role("subscribe-all")).to_have_text("Subscribe to this page")


def test_the_filter_finds_one_subject_among_10000(dashboard: Dashboard) -> None:
    # "/" takes the keyboard to the filter
    dashboard.page.keyboard.press("/")
    expect(dashboard.role("filter")).to_be_focused()
    dashboard.page.keyboard.type("vm07342")
    expect(dashboard.cards).to_have_count(1, timeout=WAIT_MS)
    card = dashboard.card("vm07342")
    expect(card).to_be_visible()
    expect(dashboard.role("status", card)).to_have_text("idle")
    expect(dashboard.role("sync", card)).to_have_text("Not subscribed · refreshed every 50 s")
    dashboard.expect_info("Showing 1 matching subject (10,000 in all)")
    expect(dashboard.role("pager")).to_be_hidden()  # one page suffices

    dashboard.filter("VM0734")  # a part of the name, in any case
    expect(dashboard.cards).to_have_count(10)
    assert dashboard.card_names() == [f"vm0734{digit}" for digit in range(10)]
    dashboard.expect_info("Showing 10 matching subjects (10,000 in all)")

    dashboard.filter("vm01")  # vm01000 ... vm01999: 1,000 subjects, paged too
    dashboard.expect_info(f"Showing 1{DASH}{PAGE_SIZE} of 1,000 matching subjects (10,000 in all)")
    expect(dashboard.role("page-count")).to_have_text("21")
    assert dashboard.card_names() == NAMES[1000 : 1000 + PAGE_SIZE]

    dashboard.filter("no-such-subject")
    expect(dashboard.cards).to_have_count(0)
    expect(dashboard.role("no-match")).to_be_visible()
    dashboard.expect_info("No matching subject (10,000 in all)")

    dashboard.filter("")
    expect(dashboard.cards).to_have_count(PAGE_SIZE)
    expect(dashboard.role("no-match")).to_be_hidden()
    dashboard.expect_info(f"Showing 1{DASH}{PAGE_SIZE} of 10,000 subjects")


def test_paging_moves_through_the_10000(dashboard: Dashboard) -> None:
    next_page = dashboard.role("page-next")
    next_page.click()
    dashboard.expect_info(f"Showing 49{DASH}96 of 10,000 subjects")
    assert dashboard.card_names() == NAMES[PAGE_SIZE : 2 * PAGE_SIZE]
    expect(dashboard.role("page-number")).to_have_value("2")
    expect(dashboard.role("page-prev")).to_be_enabled()

    # by keyboard: Enter on the focused button
    next_page.focus()
    dashboard.page.keyboard.press("Enter")
    dashboard.expect_info(f"Showing 97{DASH}144 of 10,000 subjects")

    # straight to the last page by its number: 16 cards
    number = dashboard.role("page-number")
    number.fill(str(PAGES))
    number.press("Enter")
    dashboard.expect_info(f"Showing 9,985{DASH}10,000 of 10,000 subjects")
    expect(dashboard.cards).to_have_count(COUNT - (PAGES - 1) * PAGE_SIZE)
    assert dashboard.card_names() == NAMES[(PAGES - 1) * PAGE_SIZE :]
    expect(next_page).to_be_disabled()

    dashboard.role("page-prev").click()
    dashboard.expect_info(f"Showing 9,937{DASH}9,984 of 10,000 subjects")
    expect(dashboard.cards).to_have_count(PAGE_SIZE)

    number.fill("99999")  # past the end: the last page
    number.press("Enter")
    dashboard.expect_info(f"Showing 9,985{DASH}10,000 of 10,000 subjects")
    expect(number).to_have_value(str(PAGES))

    # a filter starts again from its first page
    dashboard.filter("vm099")
    dashboard.expect_info(f"Showing 1{DASH}48 of 100 matching subjects (10,000 in all)")
    assert dashboard.card_names() == NAMES[9900 : 9900 + PAGE_SIZE]


def test_a_live_event_updates_a_card_of_the_page_shown(
    dashboard: Dashboard, served: Served
) -> None:
    card = dashboard.subscribe("vm00003")
    served.emitter.started("vm00003", "change_ip", task_id="t1")
    served.emitter.progress("vm00003", 40, stage="execution", message="Changing IP address...")
    expect(dashboard.role("progress", card)).to_have_attribute(
        "aria-valuenow", "40", timeout=WAIT_MS
    )
    expect(dashboard.role("status", card)).to_have_text("busy")
    expect(dashboard.role("message", card)).to_have_text("Changing IP address...")
    # the counts follow
    options = dashboard.role("status-filter").locator("option")
    expect(options).to_have_text(
        ["All (10,000)", "Busy (1)", "Last run failed (0)", "Subscribed (1)"], timeout=WAIT_MS
    )

    served.emitter.completed("vm00003", {"status": "success", "data": {"ip": "203.0.113.9"}})
    expect(card).to_have_attribute("data-outcome", "completed", timeout=WAIT_MS)
    expect(dashboard.role("outcome", card)).to_contain_text("data.ip: 203.0.113.9")
    expect(dashboard.role("status", card)).to_have_text("idle")
    expect(options.nth(1)).to_have_text("Busy (0)", timeout=WAIT_MS)
    expect(dashboard.cards).to_have_count(PAGE_SIZE)


def test_a_live_event_for_a_subject_on_another_page_is_kept_for_when_it_is_shown(
    dashboard: Dashboard, served: Served
) -> None:
    name = "vm09998"  # on the last page
    dashboard.filter(name)
    dashboard.subscribe(name)
    dashboard.filter("")
    dashboard.expect_info(f"Showing 1{DASH}{PAGE_SIZE} of 10,000 subjects")
    expect(dashboard.card(name)).to_have_count(0)

    served.emitter.started(name, "change_ip", task_id="t1")
    served.emitter.progress(name, 55, stage="execution", message="Changing IP address...")
    served.emitter.failed(name, RuntimeError("the instance refused the new address"))
    dashboard.wait_model(name, "subject.seq === 3 && subject.last && !subject.running.size")
    assert dashboard.model(name) == {
        "status": "idle",
        "seq": 3,
        "outcome": "failed",
        "wanted": True,
        "hasCard": False,  # the model has it; the page shown does not
    }
    expect(dashboard.card(name)).to_have_count(0)
    expect(dashboard.cards).to_have_count(PAGE_SIZE)

    # paging to it shows it as it now is
    number = dashboard.role("page-number")
    number.fill(str(PAGES))
    number.press("Enter")
    card = dashboard.card(name)
    expect(card).to_have_attribute("data-outcome", "failed", timeout=WAIT_MS)
    expect(card).to_have_attribute("data-seq", "3")
    expect(card).to_have_attribute("data-subscribed", "true")
    expect(dashboard.role("outcome", card)).to_contain_text(
        "RuntimeError: the instance refused the new address"
    )
    expect(dashboard.role("progress-block", card)).to_be_hidden()

    # so does the status filter, from the first page
    dashboard.role("page-number").fill("1")
    dashboard.role("page-number").press("Enter")
    expect(card).to_have_count(0)
    dashboard.role("status-filter").select_option("failed")
    dashboard.expect_info("Showing 1 matching subject (10,000 in all)")
    expect(dashboard.cards).to_have_count(1)
    expect(card).to_have_attribute("data-outcome", "failed")

    # a subject that starts a task while "Busy" is shown comes onto the page
    dashboard.role("status-filter").select_option("busy")
    expect(dashboard.role("no-match")).to_be_visible()
    served.emitter.started(name, "change_ip", task_id="t2")
    expect(card).to_have_attribute("data-status", "busy", timeout=WAIT_MS)
    dashboard.expect_info("Showing 1 matching subject (10,000 in all)")
    served.emitter.completed(name, None)
    expect(dashboard.role("no-match")).to_be_visible(timeout=WAIT_MS)


def test_with_a_few_subjects_there_is_no_filter_and_no_pager(
    browser: Browser, serve: Callable[..., Served]
) -> None:
    served = serve()  # aws01, aws02, aws03
    context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="en-US")
    try:
        dashboard = Dashboard(context.new_page())
        dashboard.page.goto(served.url + "/websocket")
        expect(dashboard.cards).to_have_count(3, timeout=WAIT_MS)
        assert dashboard.card_names() == ["aws01", "aws02", "aws03"]
        expect(dashboard.role("toolbar")).to_be_hidden()
        expect(dashboard.role("no-match")).to_be_hidden()
        expect(dashboard.role("subscribe-all")).to_have_text("Subscribe to all")
        expect(dashboard.role("sync", dashboard.card("aws01"))).to_have_text(
            "Not subscribed · refreshed every 5 s"
        )
        dashboard.page.keyboard.press("/")  # nothing to jump to
        expect(dashboard.role("filter")).not_to_be_focused()
        assert dashboard.errors == []
    finally:
        context.close()


# -- get_all_tasks and GET /api/tasks --------------------------------------------------


REDIS_URL = os.environ.get("TASKEVENTS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a server with the 10,000 subjects: on the memory store (the ``serve``
    fixture), or on a RedisStateStore with a prefix of its own, deleted afterwards."""
    if request.param == "memory":
        served: Served = request.getfixturevalue("served")
        yield served.url
        return
    redis = pytest.importorskip("redis", reason="pip install 'taskevents[redis]'")
    import flask
    from flask_socketio import SocketIO

    from taskevents.flask import TaskEvents

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        message = f"no Redis server answers at {REDIS_URL} ({exc}); start one (redis-server)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    prefix = f"taskevents-test-{uuid.uuid4().hex}"
    app = flask.Flask("taskevents-scale")
    app.config.update(
        TASKEVENTS_SUBJECTS=NAMES,
        TASKEVENTS_REDIS_URL=REDIS_URL,
        TASKEVENTS_REDIS_PREFIX=prefix,
    )
    try:
        TaskEvents(app, SocketIO(app, async_mode="threading"))
        server = LiveServer(app)
        try:
            yield server.url
        finally:
            server.stop()
            TaskEvents.state(app).close()
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def test_get_all_tasks_and_the_rest_endpoint_list_all_10000(store_url: str) -> None:
    client = Client().connect(store_url)
    try:
        client.wait_for("connection_status")
        client.emit("get_all_tasks")
        tasks = client.wait_for("all_tasks", timeout=60)
        assert sorted(tasks) == NAMES
        assert tasks["vm04321"]["config_name"] == "vm04321"
        assert tasks["vm04321"]["status"] == "idle"
        assert client.sio.connected  # not cut off for the size of the answer
    finally:
        client.close()
    status, body = http_json(store_url + "/api/tasks", timeout=60)
    assert status == 200
    assert sorted(body["tasks"]) == NAMES
