"""``/metrics`` on real servers: the Flask extension (``TASKEVENTS_METRICS``) on
Werkzeug and ``taskevents.asgi.TaskEvents(metrics=True)`` on uvicorn, scraped over HTTP
while tasks run and parsed with prometheus_client's parser."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import flask
import pytest
from flask_socketio import SocketIO

from taskevents import Emitter, MemoryStateStore, ValidationError
from taskevents.asgi import TaskEvents as ASGITaskEvents
from taskevents.flask import TaskEvents
from taskevents.metrics import Metrics, snapshot
from tests.metrics.support import PROMISED, FailingAdapter, fetch, scrape
from tests.support.socketio import Client, LiveASGIServer, LiveServer, by_token, subscribe

SUBJECTS = ["aws01", "aws02", "aws03"]


@dataclass
class Running:
    url: str
    emitter: Emitter
    metrics: Metrics


Start = Callable[..., Running]


@pytest.fixture(params=["flask", "asgi"])
def start(request: pytest.FixtureRequest) -> Iterator[Start]:
    """``start(**options)``: the Flask extension or the ASGI app, metrics on, served."""
    stops: list[Callable[[], None]] = []

    def flask_app(
        *, authenticate: Any = None, trusted_hosts: list[str] | None = None, **options: Any
    ) -> Running:
        app = flask.Flask("taskevents-metrics-test")
        config = {"subjects": SUBJECTS, "progress_interval": 0, "metrics": True, **options}
        app.config.update({f"TASKEVENTS_{k.upper()}": v for k, v in config.items()})
        app.config["TRUSTED_HOSTS"] = trusted_hosts
        emitter = Emitter(source="tests", state=MemoryStateStore())
        TaskEvents(
            app, SocketIO(app, async_mode="threading"), emitter=emitter, authenticate=authenticate
        )
        server = LiveServer(app)
        state = TaskEvents.state(app)

        def stop() -> None:
            state.close()
            server.stop()

        stops.append(stop)
        assert state.metrics is not None
        return Running(server.url, emitter, state.metrics)

    def asgi_app(**options: Any) -> Running:
        config = {"subjects": SUBJECTS, "progress_interval": 0, "metrics": True, **options}
        emitter = Emitter(source="tests", state=MemoryStateStore())
        tasks = ASGITaskEvents(emitter, **config)
        server = LiveASGIServer(tasks.app)

        def stop() -> None:
            server.stop()
            tasks.close()

        stops.append(stop)
        assert tasks.metrics is not None
        return Running(server.url, emitter, tasks.metrics)

    yield flask_app if request.param == "flask" else asgi_app
    for stop in reversed(stops):
        stop()
    # metrics stay enabled as long as their emitter lives: close them with the test
    for emitter_metrics in list(_enabled_metrics()):
        emitter_metrics.close()


def _enabled_metrics() -> list[Metrics]:
    from taskevents.metrics import _enabled

    return list(_enabled.values())


def run_tasks(emitter: Emitter, rounds: int, steps: int) -> dict[str, int]:
    """Tasks on every subject, some failing; returns how many events of each type."""
    emitted = dict.fromkeys(
        ("task_started", "task_progress", "task_completed", "task_failed", "task_cancelled"), 0
    )
    for round_ in range(rounds):
        for subject in SUBJECTS:
            emitter.started(subject, "change_ip")
            emitted["task_started"] += 1
            for step in range(steps):
                emitter.progress(subject, 100 * (step + 1) / steps, stage="execution")
                emitted["task_progress"] += 1
            if round_ % 3 == 2:
                emitter.failed(subject, RuntimeError("boom"))
                emitted["task_failed"] += 1
            elif round_ % 5 == 4:
                emitter.cancelled(subject, "stopped")
                emitted["task_cancelled"] += 1
            else:
                emitter.completed(subject, {"ip": "203.0.113.7"})
                emitted["task_completed"] += 1
    return emitted


def test_every_promised_metric_is_served(start: Start) -> None:
    running = start()
    scraped = scrape(running.url)
    for name in PROMISED:
        assert name in scraped.types
    assert scraped.value("taskevents_subjects", status="idle") == 3
    assert scraped.value("taskevents_subjects", status="busy") == 0
    assert scraped.value("taskevents_adapter_errors_total", adapter="socketio") == 0
    assert scraped.value("taskevents_adapter_queue_depth", adapter="socketio") == 0


def test_counters_move_by_exactly_the_events_emitted_while_tasks_run(start: Start) -> None:
    running = start()
    emitted: dict[str, int] = {}
    worker = threading.Thread(
        target=lambda: emitted.update(run_tasks(running.emitter, rounds=30, steps=20))
    )
    worker.start()
    previous: dict[str, float] = {}
    scrapes = 0
    while worker.is_alive() or scrapes == 0:
        scraped = scrape(running.url)
        scrapes += 1
        for type_ in ("task_started", "task_progress", "task_completed"):
            value = scraped.value("taskevents_events_total", type=type_)
            assert value >= previous.get(type_, 0)  # counters never go back
            previous[type_] = value
        busy = scraped.value("taskevents_subjects", status="busy")
        idle = scraped.value("taskevents_subjects", status="idle")
        assert busy + idle == 3
    worker.join()
    final = scrape(running.url)
    for type_, count in emitted.items():
        assert final.value("taskevents_events_total", type=type_) == count
    assert sum(emitted.values()) == 30 * 3 * 22
    assert final.value("taskevents_subjects", status="idle") == 3
    # the same numbers from Python
    numbers = snapshot(running.emitter)["events"]
    assert {type_: numbers[type_] for type_ in emitted} == {
        type_: int(final.value("taskevents_events_total", type=type_)) for type_ in emitted
    }


def test_adapter_errors_match_a_deliberately_failing_adapter(start: Start) -> None:
    running = start()
    failing = FailingAdapter().connect(running.emitter)
    try:
        assert running.metrics.watch(failing, "failing") == "failing"
        emitted = run_tasks(running.emitter, rounds=4, steps=5)
        assert failing.flush(10)
        scraped = scrape(running.url)
    finally:
        failing.close()
    total = sum(emitted.values())
    assert failing.tried == total
    assert scraped.value("taskevents_adapter_errors_total", adapter="failing") == total
    assert scraped.value("taskevents_adapter_deliveries_total", adapter="failing") == 0
    assert scraped.value("taskevents_adapter_errors_total", adapter="socketio") == 0


def test_socketio_clients_are_counted(start: Start) -> None:
    running = start()
    client = Client().connect(running.url)
    try:
        subscribe(client, "aws01")
        assert scrape(running.url).value("taskevents_socketio_clients") == 1
        running.emitter.started("aws01", "change_ip")
        client.wait_for("task_status_update")
        scraped = scrape(running.url)
        assert scraped.value("taskevents_adapter_deliveries_total", adapter="socketio") >= 1
    finally:
        client.close()


def test_configured_adapters_are_reported_by_their_names(start: Start) -> None:
    running = start(adapters=["logging"])
    running.emitter.started("aws01", "change_ip")
    scraped = scrape(running.url)
    assert scraped.value("taskevents_adapter_errors_total", adapter="logging") == 0
    # a synchronous adapter counts no deliveries and has no queue
    assert scraped.get("taskevents_adapter_deliveries_total", adapter="logging") is None


def test_head_answers_without_a_body_and_other_methods_are_refused(start: Start) -> None:
    running = start()
    status, headers, body = fetch(running.url, method="HEAD")
    assert status == 200
    assert body == b""
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = fetch(running.url, method=method)
        assert status == 405
        assert "GET" in headers["allow"]


def test_a_query_string_changes_nothing_and_other_paths_are_not_metrics(start: Start) -> None:
    running = start()
    assert "taskevents_events" in scrape(running.url, "/metrics?name[]=x&" + "a" * 2000).types
    status, _, _ = fetch(running.url, "/metrics/extra")
    assert status == 404


def test_the_path_can_be_moved(start: Start) -> None:
    running = start(metrics_path="/internal/metrics")
    assert "taskevents_events" in scrape(running.url, "/internal/metrics").types
    status, _, _ = fetch(running.url, "/metrics")
    assert status == 404


def test_authenticate_guards_metrics_as_it_guards_the_rest_api(start: Start) -> None:
    running = start(authenticate=by_token)
    status, headers, body = fetch(running.url)
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert b"taskevents_" not in body
    status, _, _ = fetch(running.url, headers={"Authorization": "Bearer wrong"})
    assert status == 401
    scraped = scrape(running.url, headers={"Authorization": "Bearer alice-token"})
    assert "taskevents_events" in scraped.types


def test_a_host_not_trusted_is_refused(start: Start) -> None:
    running = start(trusted_hosts=["localhost"])
    status, _, body = fetch(running.url, headers={"Host": "rebind.example"})
    assert status == 400
    assert b"taskevents_" not in body
    assert "taskevents_events" in scrape(running.url, headers={"Host": "localhost"}).types


# -- configuration ----------------------------------------------------------------------


def test_flask_without_metrics_serves_no_metrics() -> None:
    app = flask.Flask("taskevents-no-metrics")
    TaskEvents(app, SocketIO(app, async_mode="threading"))
    state = TaskEvents.state(app)
    try:
        assert state.metrics is None
        assert app.test_client().get("/metrics").status_code == 404
    finally:
        state.close()


@pytest.mark.parametrize(
    ("key", "value"),
    [("TASKEVENTS_METRICS", "yes"), ("TASKEVENTS_METRICS_PATH", "metrics")],
)
def test_flask_refuses_bad_metrics_settings(key: str, value: object) -> None:
    app = flask.Flask("taskevents-bad-metrics")
    app.config["TASKEVENTS_METRICS"] = True
    app.config[key] = value
    with pytest.raises(ValidationError, match=key):
        TaskEvents(app, SocketIO(app, async_mode="threading"))
    assert "taskevents" not in app.extensions


@pytest.mark.parametrize(
    ("option", "value"), [("metrics", 1), ("metrics_path", "metrics"), ("metrics_path", None)]
)
def test_asgi_refuses_bad_metrics_options(option: str, value: object) -> None:
    options: dict[str, Any] = {"metrics": True, option: value}
    with pytest.raises(ValidationError, match=option):
        ASGITaskEvents(**options)


def test_asgi_without_metrics_serves_no_metrics() -> None:
    tasks = ASGITaskEvents()
    server = LiveASGIServer(tasks.app)
    try:
        assert tasks.metrics is None
        status, _, _ = fetch(server.url)
        assert status == 404
    finally:
        server.stop()
        tasks.close()


def test_serving_metrics_without_prometheus_client_says_what_to_install() -> None:
    code = """
import sys
sys.modules["prometheus_client"] = None  # as if it were not installed
import flask
from flask_socketio import SocketIO
from taskevents import MissingDependency
from taskevents.asgi import TaskEvents as ASGITaskEvents
from taskevents.flask import TaskEvents

app = flask.Flask("no-prometheus")
app.config["TASKEVENTS_METRICS"] = True
for make in (lambda: TaskEvents(app, SocketIO(app, async_mode="threading")),
             lambda: ASGITaskEvents(metrics=True)):
    try:
        make()
    except MissingDependency as exc:
        print(exc)
    else:
        raise SystemExit("served metrics without prometheus_client")
"""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert all("taskevents[metrics]" in line for line in lines)
