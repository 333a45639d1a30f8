"""The Flask extension: config, app factories, REST endpoints, dashboard mounting."""

from __future__ import annotations

import http.client
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import flask
import pytest
import socketio
from flask_socketio import SocketIO

from taskevents import Emitter, ValidationError
from taskevents.adapters.logging import LoggingAdapter
from taskevents.exceptions import UsageError
from taskevents.flask import TaskEvents
from tests.support.socketio import Client, LiveServer


@pytest.fixture
def apps() -> Iterator[list[flask.Flask]]:
    made: list[flask.Flask] = []
    yield made
    for app in made:
        if "taskevents" in app.extensions:
            TaskEvents.state(app).close()


def make_app(apps: list[flask.Flask], **config: Any) -> flask.Flask:
    app = flask.Flask("taskevents-flask-test")
    app.config.update({f"TASKEVENTS_{key.upper()}": value for key, value in config.items()})
    apps.append(app)
    return app


def test_app_factory_gives_each_app_its_own_state(apps: list[flask.Flask]) -> None:
    extension = TaskEvents()
    one = make_app(apps, subjects=["aws01"])
    two = make_app(apps, subjects={"aws02": {"region": "us-east-1"}})
    extension.init_app(one, SocketIO(one, async_mode="threading"))
    extension.init_app(two, SocketIO(two, async_mode="threading"))
    assert TaskEvents.state(one).emitter is not TaskEvents.state(two).emitter
    with one.app_context():
        assert extension.emitter.state.subjects() == ["aws01"]
    with two.app_context():
        assert extension.emitter.state.subjects() == ["aws02"]
        snapshot = extension.emitter.state.snapshot("aws02")
        assert snapshot is not None
        assert snapshot.metadata == {"region": "us-east-1"}


def test_creates_a_socketio_when_none_is_given(apps: list[flask.Flask]) -> None:
    app = make_app(apps, subjects=["aws01"], async_mode="threading")
    TaskEvents(app)
    state = TaskEvents.state(app)
    assert isinstance(state.socketio, SocketIO)
    # CORS: only the serving origin unless configured
    assert state.socketio.server.eio.cors_allowed_origins is None


def test_rest_endpoints(apps: list[flask.Flask]) -> None:
    emitter = Emitter()
    app = make_app(apps, subjects=["aws01", "aws02"])
    TaskEvents(app, SocketIO(app, async_mode="threading"), emitter=emitter)
    emitter.started("aws01", "change_ip")
    emitter.progress("aws01", 40, stage="execution")
    client = app.test_client()

    everything = client.get("/api/tasks")
    assert everything.status_code == 200
    listing = everything.get_json()
    assert sorted(listing) == ["tasks", "timestamp"]  # REST keeps its own envelope
    assert datetime.fromisoformat(listing["timestamp"]).tzinfo is not None
    tasks = listing["tasks"]
    assert sorted(tasks) == ["aws01", "aws02"]
    assert tasks["aws01"]["status"] == "busy"
    assert tasks["aws01"]["current_task"] == "change_ip"

    one = client.get("/api/tasks/aws01")
    assert one.status_code == 200
    body = one.get_json()
    assert body["config_name"] == "aws01"
    assert body["seq"] == 2
    assert body["status"]["current"]["progress"] == {"percent": 40, "stage": "execution"}

    missing = client.get("/api/tasks/aws09")
    assert missing.status_code == 404
    assert missing.get_json() == {
        "error": {"message": "unknown config_name 'aws09'", "config_name": "aws09"}
    }


def test_errors_under_the_api_prefix_are_json(apps: list[flask.Flask]) -> None:
    app = make_app(apps, subjects=["aws01"])
    app.config["MAX_CONTENT_LENGTH"] = 100

    @app.post("/api/tasks/<subject>/notes")  # the app's own endpoint under the prefix
    def add_note(subject: str) -> str:
        flask.request.get_data()
        return "noted"

    @app.get("/api/tasks/<subject>/crash")
    def crash(subject: str) -> str:
        raise RuntimeError("secret detail")

    @app.post("/api/tasks/<subject>/start")  # an app's endpoint that reads JSON
    def start(subject: str) -> dict[str, Any]:
        return {"body": flask.request.get_json()}

    @app.get("/api/tasks/<subject>/secret")
    def secret(subject: str) -> str:
        flask.abort(403)

    TaskEvents(app, SocketIO(app, async_mode="threading"))
    client = app.test_client()

    missing = client.get("/api/tasks/aws01/history")
    assert missing.status_code == 404
    assert missing.is_json
    assert missing.get_json() == {
        "error": {"message": "nothing here: GET '/api/tasks/aws01/history'"}
    }

    wrong_method = client.delete("/api/tasks/aws01")
    assert wrong_method.status_code == 405
    assert wrong_method.get_json() == {
        "error": {
            "message": "DELETE is not allowed on '/api/tasks/aws01'; allowed: GET, HEAD, OPTIONS",
            "allowed": ["GET", "HEAD", "OPTIONS"],
        }
    }
    assert wrong_method.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert client.post("/api/tasks").status_code == 405

    too_large = client.post("/api/tasks/aws01/notes", data="x" * 101)
    assert too_large.status_code == 413
    assert too_large.get_json() == {
        "error": {"message": "the request body is too large; at most 100 bytes"}
    }
    assert client.post("/api/tasks/aws01/notes", data="x" * 100).status_code == 200

    form = client.post("/api/tasks/aws01/start", data={"task_type": "change_ip"})
    assert form.status_code == 415  # Flask's own, for a form body: JSON too
    assert "application/json" in form.get_json()["error"]["message"]
    forbidden = client.get("/api/tasks/aws01/secret")
    assert forbidden.status_code == 403
    assert forbidden.is_json

    crashed = client.get("/api/tasks/aws01/crash")
    assert crashed.status_code == 500
    assert crashed.get_json() == {"error": {"message": "internal server error"}}

    app.config["TRUSTED_HOSTS"] = ["localhost"]
    refused = client.get("/api/tasks", headers={"Host": "rebind.example"})
    assert refused.status_code == 400
    assert refused.get_json() == {"error": {"message": "Host 'rebind.example' is not trusted."}}
    app.config["TRUSTED_HOSTS"] = None

    # Elsewhere, Flask's own pages as before.
    assert client.get("/elsewhere").mimetype == "text/html"
    assert client.delete("/websocket").mimetype == "text/html"
    assert client.get("/api/tasksx").mimetype == "text/html"  # not under the prefix


def test_json_errors_leave_the_apps_own_handlers_for_other_paths(
    apps: list[flask.Flask],
) -> None:
    app = make_app(apps, subjects=["aws01"], api_prefix="/v2/tasks")

    @app.errorhandler(404)
    def not_found(error: Exception) -> tuple[str, int]:
        return "the app's own 404", 404

    TaskEvents(app, SocketIO(app, async_mode="threading"))
    client = app.test_client()
    assert client.get("/nowhere").get_data(as_text=True) == "the app's own 404"
    under = client.get("/v2/tasks/aws01/x")
    assert under.status_code == 404
    assert under.get_json()["error"]["message"] == "nothing here: GET '/v2/tasks/aws01/x'"


def test_rest_endpoints_use_the_auth_hooks(apps: list[flask.Flask]) -> None:
    def authenticate(environ: Any, auth: Any) -> str | None:
        if auth == {"token": "alice-token"}:
            return "alice"
        if flask.request.headers.get("X-Crash"):
            raise RuntimeError("identity provider down")
        return flask.request.headers.get("X-User") or None

    def authorize(identity: Any, subject: str) -> bool:
        return bool(identity == "alice" and subject == "aws01")

    app = make_app(apps, subjects=["aws01", "aws02"])
    TaskEvents(
        app,
        SocketIO(app, async_mode="threading"),
        authenticate=authenticate,
        authorize=authorize,
    )
    client = app.test_client()
    assert client.get("/api/tasks").status_code == 401
    alice = {"X-User": "alice"}
    assert sorted(client.get("/api/tasks", headers=alice).get_json()["tasks"]) == ["aws01"]
    assert client.get("/api/tasks/aws01", headers=alice).status_code == 200
    assert client.get("/api/tasks/aws02", headers=alice).status_code == 404
    bearer = {"Authorization": "Bearer alice-token"}
    assert sorted(client.get("/api/tasks", headers=bearer).get_json()["tasks"]) == ["aws01"]
    assert client.get("/api/tasks", headers={"X-Crash": "1"}).status_code == 401


def test_single_app_extension_exposes_its_emitter_anywhere(apps: list[flask.Flask]) -> None:
    app = make_app(apps, subjects=["aws01"])
    tasks = TaskEvents(app, SocketIO(app, async_mode="threading"))
    assert tasks.emitter is TaskEvents.state(app).emitter
    assert tasks.emitter.started("aws01", "change_ip").seq == 1


def test_config_errors_show_the_value(apps: list[flask.Flask]) -> None:
    app = make_app(apps, max_subscriptions=0)
    with pytest.raises(ValidationError, match=r"TASKEVENTS_MAX_SUBSCRIPTIONS: .*got 0"):
        TaskEvents(app, SocketIO(app, async_mode="threading"))


def test_dashboard_is_mounted_at_the_seed_path_and_can_be_turned_off(
    apps: list[flask.Flask],
) -> None:
    app = make_app(apps, subjects=["aws01"])
    TaskEvents(app, SocketIO(app, async_mode="threading"))
    page = app.test_client().get("/websocket")
    assert page.status_code == 200
    assert b"socket.io.min.js" in page.data
    script = app.test_client().get("/taskevents/static/vendor/socket.io.min.js")
    assert script.status_code == 200
    assert len(script.data) > 10_000
    script.close()

    quiet = make_app(apps, subjects=["aws01"], dashboard=False, api_prefix=None)
    TaskEvents(quiet, SocketIO(quiet, async_mode="threading"))
    assert quiet.test_client().get("/websocket").status_code == 404
    assert quiet.test_client().get("/api/tasks").status_code == 404

    moved = make_app(apps, subjects=["aws01"], dashboard_path="/tasks/live")
    TaskEvents(moved, SocketIO(moved, async_mode="threading"))
    assert moved.test_client().get("/tasks/live").status_code == 200


def test_adapters_are_enabled_by_name_from_config(
    apps: list[flask.Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(apps, subjects=["aws01"], adapters={"logging": {"logger": "myapp.tasks"}})
    TaskEvents(app, SocketIO(app, async_mode="threading"))
    state = TaskEvents.state(app)
    assert [type(a) for a in state.adapters] == [LoggingAdapter]
    with caplog.at_level(logging.INFO, logger="myapp.tasks"):
        state.emitter.started("aws01", "change_ip")
    assert [r.getMessage() for r in caplog.records][-1].startswith("aws01: change_ip started")


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        ({"adapters": "logging,webhooks"}, ValidationError, "TASKEVENTS_ADAPTERS"),
        (
            {"adapters": ["carrier-pigeon"]},
            ValidationError,
            r"TASKEVENTS_ADAPTERS\['carrier-pigeon'\]",
        ),
        ({"subjects": "aws01"}, ValidationError, "TASKEVENTS_SUBJECTS"),
        ({"progress_interval": -1}, ValidationError, "TASKEVENTS_PROGRESS_INTERVAL"),
        ({"max_subscriptions": 0}, ValidationError, "TASKEVENTS_MAX_SUBSCRIPTIONS"),
        ({"namespace": "tasks"}, ValidationError, "TASKEVENTS_NAMESPACE"),
        ({"dashboard_path": "websocket"}, ValidationError, "TASKEVENTS_DASHBOARD_PATH"),
        ({"api_prefix": "api"}, ValidationError, "TASKEVENTS_API_PREFIX"),
        ({"subjects": {"aws01": "eu-west-1"}}, ValidationError, "TASKEVENTS_SUBJECTS"),
        (
            {"subjects": {"aws01": {"region": {1, 2}}}},
            ValidationError,
            r"TASKEVENTS_SUBJECTS\['aws01'\]\.region: .*got \{1, 2\}$",
        ),
        ({"dashboard_path": None}, ValidationError, "TASKEVENTS_DASHBOARD_PATH"),
    ],
)
def test_bad_config_names_the_key(
    apps: list[flask.Flask], config: dict[str, Any], error: type[Exception], match: str
) -> None:
    app = make_app(apps, **config)
    emitter = Emitter()
    with pytest.raises(error, match=match):
        TaskEvents(app, SocketIO(app, async_mode="threading"), emitter=emitter)
    assert emitter.state.subjects() == []  # nothing registered either


def test_state_before_init_app_is_a_clear_error() -> None:
    app = flask.Flask("x")
    with pytest.raises(UsageError, match="init_app"):
        TaskEvents.state(app)


def test_init_app_twice_is_refused(apps: list[flask.Flask]) -> None:
    app = make_app(apps, subjects=["aws01"])
    extension = TaskEvents(app, SocketIO(app, async_mode="threading"))
    with pytest.raises(UsageError, match="already set up"):
        extension.init_app(app)


def test_authorize_runs_in_the_app_context_on_socketio_too(apps: list[flask.Flask]) -> None:
    def authorize(identity: Any, subject: str) -> bool:
        return subject in flask.current_app.config["ALLOWED"]

    app = make_app(apps, subjects=["aws01", "aws02"])
    app.config["ALLOWED"] = {"aws02"}
    TaskEvents(app, SocketIO(app, async_mode="threading"), authorize=authorize)
    adapter = TaskEvents.state(app).socketio_adapter
    server = LiveServer(app)
    client = Client().connect(server.url)
    try:
        # the Socket.IO handlers run the hook outside any request: it still sees the app
        client.emit("get_all_tasks")
        assert sorted(client.wait_for("all_tasks")) == ["aws02"]
        client.emit("subscribe_task", {"config_name": "aws01"})
        assert "not authorised" in client.wait_for("error")["message"]
        client.emit("subscribe_task", {"config_name": "aws02"})
        assert client.wait_for("task_status")["config_name"] == "aws02"
        assert adapter.hook_errors.count == 0
    finally:
        client.close()
        server.stop()


def test_hooks_must_be_callable() -> None:
    with pytest.raises(ValidationError, match="authorize: expected a callable"):
        TaskEvents(authorize="admin")  # type: ignore[arg-type]


# -- TRUSTED_HOSTS on the Socket.IO endpoint too (DNS rebinding) ----------------------

WEBSOCKET_UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def status_of(
    server: LiveServer, path: str, host: str, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """GET ``path`` from ``server`` with this ``Host`` header: (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server.server_port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


@pytest.fixture
def served(apps: list[flask.Flask]) -> Iterator[Callable[[flask.Flask], LiveServer]]:
    servers: list[LiveServer] = []

    def serve(app: flask.Flask) -> LiveServer:
        servers.append(LiveServer(app))
        return servers[-1]

    yield serve
    for server in servers:
        server.stop()


def given_socketio(app: flask.Flask) -> None:
    TaskEvents(app, SocketIO(app, async_mode="threading"))


def created_socketio(app: flask.Flask) -> None:
    app.config["TASKEVENTS_ASYNC_MODE"] = "threading"
    TaskEvents(app)


def app_factory(app: flask.Flask) -> None:
    sio = SocketIO(async_mode="threading")
    extension = TaskEvents()
    sio.init_app(app)
    extension.init_app(app, sio)


@pytest.mark.parametrize("setup", [given_socketio, created_socketio, app_factory])
@pytest.mark.parametrize("when", ["before init_app", "after init_app"])
def test_trusted_hosts_guard_the_socketio_endpoint_too(
    apps: list[flask.Flask],
    served: Callable[[flask.Flask], LiveServer],
    setup: Callable[[flask.Flask], None],
    when: str,
) -> None:
    app = make_app(apps, subjects=["aws01"])
    if when == "before init_app":
        app.config["TRUSTED_HOSTS"] = ["127.0.0.1"]
    setup(app)
    server = served(app)
    port = server.server.server_port
    foreign = f"rebind.example:{port}"
    if when == "after init_app":
        assert status_of(server, "/socket.io/?EIO=4&transport=polling", foreign)[0] == 200
        app.config["TRUSTED_HOSTS"] = ["127.0.0.1"]
    adapter = TaskEvents.state(app).socketio_adapter

    # "localhost" resolves to 127.0.0.1 but is not trusted, like a rebound name
    for transport in ("polling", "websocket"):
        refused = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            refused.connect(f"http://localhost:{port}", transports=[transport])
        refused.close()
        trusted = Client().connect(server.url, transports=[transport])
        try:
            assert trusted.next()[0] == "connection_status"
        finally:
            trusted.close()
    assert adapter.error_count == 0

    polling = "/socket.io/?EIO=4&transport=polling"
    websocket = "/socket.io/?EIO=4&transport=websocket"
    message = (
        f"Bad Request: Host {foreign!r} is not allowed on this server. "
        "It is not in the app's TRUSTED_HOSTS.\n"
    )
    assert status_of(server, polling, foreign) == (400, message)
    assert status_of(server, websocket, foreign, WEBSOCKET_UPGRADE) == (400, message)
    for path in ("/api/tasks", "/api/tasks/aws01", "/websocket"):  # Flask's own check
        status, text = status_of(server, path, foreign)
        assert status == 400
        assert "is not trusted" in text
    trusted_host = f"127.0.0.1:{port}"
    assert status_of(server, polling, trusted_host)[0] == 200
    assert status_of(server, websocket, trusted_host, WEBSOCKET_UPGRADE)[0] == 101
    assert status_of(server, "/api/tasks", trusted_host)[0] == 200


@pytest.mark.parametrize("trusted", [["example.com", ".example.org"], ["localhost:5000"], []])
def test_the_socketio_endpoint_trusts_exactly_the_hosts_flask_trusts(
    apps: list[flask.Flask], served: Callable[[flask.Flask], LiveServer], trusted: list[str]
) -> None:
    app = make_app(apps, subjects=["aws01"])
    app.config["TRUSTED_HOSTS"] = trusted
    TaskEvents(app, SocketIO(app, async_mode="threading"))
    server = served(app)
    hosts = [
        "example.com",
        "example.com:8080",
        "api.example.com",
        "EXAMPLE.COM",
        "example.org",
        "api.example.org",
        "rebind.example",
        "localhost",
        "localhost:6000",
        "[::1]:5000",
        "bad_name",
    ]
    flask_says = {host: status_of(server, "/api/tasks", host)[0] for host in hosts}
    socketio_says = {
        host: status_of(server, "/socket.io/?EIO=4&transport=polling", host)[0] for host in hosts
    }
    assert set(flask_says.values()) == ({200} if not trusted else {200, 400})
    assert socketio_says == flask_says


def test_trusted_hosts_follow_the_socketio_path(
    apps: list[flask.Flask], served: Callable[[flask.Flask], LiveServer]
) -> None:
    app = make_app(apps, subjects=["aws01"])
    app.config["TRUSTED_HOSTS"] = ["127.0.0.1"]
    TaskEvents(app, SocketIO(app, async_mode="threading", path="live"))
    server = served(app)
    port = server.server.server_port
    assert status_of(server, "/live/?EIO=4&transport=polling", f"127.0.0.1:{port}")[0] == 200
    refused = status_of(server, "/live/?EIO=4&transport=polling", f"rebind.example:{port}")
    assert refused[0] == 400
    assert "It is not in the app's TRUSTED_HOSTS." in refused[1]


def test_newcomer_mistakes_in_the_configuration_are_named(
    apps: list[flask.Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(apps, subjects=["aws01"])
    app.config["TASKEVENTS_SUBJECT"] = ["aws02"]  # a typo
    with caplog.at_level(logging.WARNING, logger="taskevents"):
        TaskEvents(app, SocketIO(app, async_mode="threading"))
    assert any(
        "TASKEVENTS_SUBJECT ignored; did you mean TASKEVENTS_SUBJECTS?" in r.getMessage()
        for r in caplog.records
    )
    with pytest.raises(UsageError, match=r"TaskEvents.state\(app\)"):
        TaskEvents(app, SocketIO(app, async_mode="threading"))
    other = make_app(apps, subjects=["aws01"], adapters=["loging"])
    with pytest.raises(ValidationError) as caught:
        TaskEvents(other, SocketIO(other, async_mode="threading"))
    assert caught.value.field == "TASKEVENTS_ADAPTERS['loging']"
    assert "no adapter named 'loging'" in str(caught.value)
    third = make_app(apps, subjects=["aws01"])
    with pytest.raises(ValidationError) as caught:
        TaskEvents(third, SocketIO(third, async_mode="threading"), emitter="x")  # type: ignore[arg-type]
    assert caught.value.field == "emitter"


def test_the_list_of_every_subject_is_rate_limited_by_what_it_costs(
    apps: list[flask.Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that loops on GET /api/tasks at 12,000 subjects gets four lists, then a
    429 with Retry-After; another client, and a small deployment, are not limited."""
    from taskevents.adapters.socketio.protocol import SubjectBudget

    now = [1000.0]  # the budget's clock stands still, whatever this machine's speed
    monkeypatch.setattr(SubjectBudget, "clock", staticmethod(lambda: now[0]))
    app = make_app(apps)
    TaskEvents(app, SocketIO(app, async_mode="threading"))
    emitter = TaskEvents.state(app).emitter
    for n in range(12_000):
        emitter.register(f"vm{n:05d}")
    client = app.test_client()
    codes = [client.get("/api/tasks").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 200, 429]
    refused = client.get("/api/tasks")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    body = refused.get_json()["error"]
    assert body["retry_after"] == int(refused.headers["Retry-After"])
    assert "50,000 subjects at once, then 10,000 a second" in body["message"]
    other = client.get("/api/tasks", environ_base={"REMOTE_ADDR": "127.0.0.2"})
    assert other.status_code == 200
    assert client.get("/api/tasks/vm00001").status_code == 200  # one subject: no limit

    now[0] += 1.2  # 12,000 more subjects' worth
    assert client.get("/api/tasks").status_code == 200

    small = make_app(apps)
    TaskEvents(small, SocketIO(small, async_mode="threading"))
    assert {small.test_client().get("/api/tasks").status_code for _ in range(50)} == {200}


def test_get_all_tasks_spends_the_same_subject_budget_as_the_rest_endpoint(
    apps: list[flask.Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskevents.adapters.socketio.protocol import SubjectBudget

    monkeypatch.setattr(SubjectBudget, "clock", staticmethod(lambda: 1000.0))
    app = make_app(apps)
    TaskEvents(app, SocketIO(app, async_mode="threading"))
    emitter = TaskEvents.state(app).emitter
    for n in range(12_000):
        emitter.register(f"vm{n:05d}")
    assert app.test_client().get("/api/tasks").status_code == 200  # from 127.0.0.1
    server = LiveServer(app)
    client = Client().connect(server.url)
    try:
        for _ in range(3):  # the rest of this address's budget
            client.emit("get_all_tasks")
            assert len(client.wait_for("all_tasks", timeout=30)) == 12_000
        client.emit("get_all_tasks")
        refused = client.wait_for("error", timeout=30)
        assert refused["event"] == "get_all_tasks"
        assert refused["retry_after"] >= 1
        assert "50,000 subjects at once" in refused["message"]
        assert app.test_client().get("/api/tasks").status_code == 429
    finally:
        client.close()
        server.stop()
