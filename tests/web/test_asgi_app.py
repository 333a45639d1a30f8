"""taskevents.asgi.TaskEvents on a real uvicorn: options and their errors, the REST
endpoints, the dashboard's files, wrap() in front of FastAPI and Starlette, the
lifespan, trusted hosts, and Redis."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import socketio
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from taskevents import Emitter, StoreUnavailable, ValidationError
from taskevents.adapters.socketio.protocol import SubjectBudget
from taskevents.asgi import TaskEvents
from tests.support.socketio import Client, LiveASGIServer, subscribe


@pytest.fixture
def made() -> Iterator[list[tuple[TaskEvents, LiveASGIServer | None]]]:
    running: list[tuple[TaskEvents, LiveASGIServer | None]] = []
    yield running
    for tasks, server in running:
        if server is not None:
            server.stop()
        tasks.close()


def serve(
    made: list[tuple[TaskEvents, LiveASGIServer | None]],
    tasks: TaskEvents,
    app: Any = None,
) -> LiveASGIServer:
    server = LiveASGIServer(tasks.app if app is None else app)
    made.append((tasks, server))
    return server


def get(
    server: LiveASGIServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    port = int(server.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_rest_endpoints_answer_as_the_flask_ones(made: list[Any]) -> None:
    tasks = TaskEvents(subjects={"aws01": {"region": "eu-west-1"}, "aws02": None})
    server = serve(made, tasks)
    tasks.emitter.started("aws01", "change_ip")
    status, headers, body = get(server, "/api/tasks")
    assert status == 200
    assert headers["content-type"] == "application/json"
    listing = json.loads(body)
    assert set(listing["tasks"]) == {"aws01", "aws02"}
    assert listing["tasks"]["aws01"]["status"] == "busy"
    assert "timestamp" in listing
    status, _, body = get(server, "/api/tasks/aws01")
    one = json.loads(body)
    assert status == 200
    assert one["config_name"] == "aws01"
    assert one["status"]["current_task"] == "change_ip"
    status, _, body = get(server, "/api/tasks/nope")
    assert status == 404
    assert json.loads(body) == {
        "error": {"message": "unknown config_name 'nope'", "config_name": "nope"}
    }
    status, headers, body = get(server, "/api/tasks", method="POST")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert "POST is not allowed" in json.loads(body)["error"]["message"]
    status, headers, body = get(server, "/api/tasks/aws01", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0
    status, _, body = get(server, "/nothing-here")
    assert status == 404


def test_rest_endpoints_use_the_auth_hooks_sync_or_async(made: list[Any]) -> None:
    async def authenticate(environ: Mapping[str, Any], auth: Any) -> str | None:
        assert environ["asgi.scope"]["type"] in ("http", "websocket")
        token = auth.get("token") if isinstance(auth, dict) else None
        return {"alice-token": "alice"}.get(token) if isinstance(token, str) else None

    tasks = TaskEvents(
        subjects=["aws01", "aws02"],
        authenticate=authenticate,
        authorize=lambda who, what: (who, what) == ("alice", "aws01"),
    )
    server = serve(made, tasks)
    assert get(server, "/api/tasks")[0] == 401
    assert get(server, "/api/tasks", {"Authorization": "Bearer wrong"})[0] == 401
    status, _, body = get(server, "/api/tasks", {"Authorization": "Bearer alice-token"})
    assert status == 200
    assert list(json.loads(body)["tasks"]) == ["aws01"]
    assert get(server, "/api/tasks/aws02", {"Authorization": "Bearer alice-token"})[0] == 404
    # the Socket.IO connect takes the async hook too
    client = Client().connect(server.url, auth={"token": "alice-token"})
    try:
        assert subscribe(client, "aws01")["config_name"] == "aws01"
    finally:
        client.close()
    refused = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(server.url, auth={"token": "nope"})
    refused.close()


def test_the_list_is_rate_limited_by_what_it_costs(made: list[Any]) -> None:
    tasks = TaskEvents(subjects=[f"s{n}" for n in range(10)])
    tasks.adapter.subject_budget = SubjectBudget(burst=25, rate=1)
    server = serve(made, tasks)
    assert get(server, "/api/tasks")[0] == 200
    assert get(server, "/api/tasks")[0] == 200
    status, headers, body = get(server, "/api/tasks")
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert json.loads(body)["error"]["retry_after"] >= 1


def test_the_dashboard_and_its_files_are_served(made: list[Any]) -> None:
    tasks = TaskEvents(subjects=["aws01"], namespace="/tasks", api_prefix="/x/api")
    server = serve(made, tasks)
    status, headers, body = get(server, "/websocket")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    page = body.decode()
    assert "{{" not in page
    settings = page.split("window.TASKEVENTS = ", 1)[1].split(";</script>", 1)[0]
    assert json.loads(settings) == {"apiPrefix": "/x/api", "demo": False, "namespace": "/tasks"}
    for path in ("dashboard.css", "dashboard.js", "vendor/socket.io.min.js"):
        assert f'"/taskevents/static/{path}"' in page
        status, headers, body = get(server, f"/taskevents/static/{path}")
        assert status == 200, path
        assert body
    assert get(server, "/taskevents/static/../asgi.py")[0] == 404
    assert get(server, "/taskevents/static/nothing.js")[0] == 404
    assert get(server, "/websocket", method="POST")[0] == 405


def test_settings_in_the_page_cannot_close_its_script() -> None:
    tasks = TaskEvents(namespace="/</script><script>alert(1)</script>")
    try:
        page = tasks.dashboard_page().decode()
    finally:
        tasks.close()
    assert "<script>alert(1)" not in page
    assert "\\u003c/script\\u003e" in page


def test_the_dashboard_and_the_api_can_be_turned_off(made: list[Any]) -> None:
    tasks = TaskEvents(subjects=["aws01"], dashboard=False, api_prefix=None)
    server = serve(made, tasks)
    assert get(server, "/websocket")[0] == 404
    assert get(server, "/api/tasks")[0] == 404
    assert get(server, "/taskevents/static/dashboard.js")[0] == 404


def test_wrap_serves_fastapi_around_it_and_the_lifespan_runs_both(made: list[Any]) -> None:
    events: list[str] = []
    api = FastAPI(on_startup=[lambda: events.append("app startup")])
    tasks = TaskEvents(subjects=["aws01"], progress_interval=0)

    @api.post("/run")
    async def run() -> dict[str, str]:
        async with tasks.emitter.track("aws01", "change_ip") as task:
            task.progress(50)
        return {"task_id": task.task_id}

    server = serve(made, tasks, tasks.wrap(api))
    # the lifespan's startup bound the adapter to uvicorn's loop, before any client
    assert tasks.adapter.loop is not None
    assert events == ["app startup"]
    client = Client().connect(server.url)
    try:
        subscribe(client, "aws01")
        status, _, body = get(server, "/run", method="POST")
        assert status == 200
        done = client.wait_for(
            "task_status_update", lambda p: p["update"]["event"] == "task_completed"
        )
        assert done["update"]["task_id"] == json.loads(body)["task_id"]
        seqs = [update["seq"] for update in client.updates()]
        assert seqs == sorted(seqs)
        assert len(seqs) == 3
    finally:
        client.close()
    assert get(server, "/api/tasks/aws01")[0] == 200
    assert get(server, "/docs")[0] == 200  # FastAPI's own
    server.stop()
    assert tasks._closed  # the lifespan's shutdown closed it


def test_wrap_serves_starlette_too(made: list[Any]) -> None:
    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    tasks = TaskEvents(subjects=["aws01"])
    server = serve(made, tasks, tasks.wrap(Starlette(routes=[Route("/hello", hello)])))
    status, _, body = get(server, "/hello")
    assert (status, body) == (200, b"hello")
    assert get(server, "/api/tasks")[0] == 200


def test_trusted_hosts_guard_every_path_socketio_included(made: list[Any]) -> None:
    tasks = TaskEvents(subjects=["aws01"], trusted_hosts=["127.0.0.1", "*.example.com"])
    server = serve(made, tasks)
    port = server.url.rsplit(":", 1)[1]
    assert get(server, "/api/tasks")[0] == 200
    assert get(server, "/api/tasks", {"Host": f"app.example.com:{port}"})[0] == 200
    for path in ("/api/tasks", "/websocket", "/socket.io/?EIO=4&transport=polling"):
        status, _, body = get(server, path, {"Host": f"rebind.example:{port}"})
        assert status == 400, path
        assert b"rebind.example" in body
        assert b"trusted_hosts" in body
    refused = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(server.url, headers={"Host": f"rebind.example:{port}"})
    refused.close()


def test_the_default_cors_refuses_a_foreign_origin(made: list[Any]) -> None:
    tasks = TaskEvents(subjects=["aws01"])
    server = serve(made, tasks)
    path = "/socket.io/?EIO=4&transport=polling"
    own = get(server, path, {"Origin": server.url})
    assert own[0] == 200
    assert own[1]["access-control-allow-origin"] == server.url
    foreign = get(server, path, {"Origin": "http://evil.example"})
    assert foreign[0] == 400
    assert "access-control-allow-origin" not in foreign[1]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"subjects": "aws01"}, "subjects"),
        ({"subjects": {"aws01": 3}}, "subjects"),
        ({"subjects": [""]}, "subjects"),
        ({"dashboard_path": "websocket"}, "dashboard_path"),
        ({"api_prefix": "api"}, "api_prefix"),
        ({"progress_interval": -1}, "progress_interval"),
        ({"max_subscriptions": 0}, "max_subscriptions"),
        ({"namespace": "tasks"}, "namespace"),
        ({"adapters": ["no-such-adapter"]}, "adapters['no-such-adapter']"),
        ({"adapters": {"logging": {"nope": 1}}}, "adapters['logging']"),
        ({"authenticate": "yes"}, "authenticate"),
        ({"trusted_hosts": "example.com"}, "trusted_hosts"),
        ({"trusted_hosts": ["bad host"]}, "trusted_hosts"),
        ({"server": object()}, "server"),
        ({"redis_url": "http://127.0.0.1:6379"}, "redis_url"),
        ({"redis_url": "redis://127.0.0.1:6379/0", "redis_prefix": "a b"}, "redis_prefix"),
        ({"emitter": "emitter"}, "emitter"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TaskEvents(**options)
    assert caught.value.field.startswith(field), caught.value


def test_a_redis_url_that_does_not_answer_is_named() -> None:
    with pytest.raises(StoreUnavailable, match=r"^redis_url: .*127\.0\.0\.1:1"):
        TaskEvents(redis_url="redis://127.0.0.1:1/0")


def test_an_emitter_without_a_redis_store_and_a_redis_url_is_refused() -> None:
    with pytest.raises(ValidationError, match="redis_url"):
        TaskEvents(Emitter(), redis_url="redis://127.0.0.1:6379/0")


def test_with_redis_every_processs_events_reach_the_clients(made: list[Any]) -> None:
    redis = pytest.importorskip("redis")
    prefix = f"te-asgi-{time.monotonic_ns()}"
    url = "redis://127.0.0.1:6379/0"
    tasks = TaskEvents(subjects=["aws01"], redis_url=url, redis_prefix=prefix, progress_interval=0)
    server = serve(made, tasks)
    other = TaskEvents(redis_url=url, redis_prefix=prefix)  # another "process": its own store
    made.append((other, None))
    client = Client().connect(server.url)
    try:
        subscribe(client, "aws01")
        other.emitter.started("aws01", "change_ip")
        other.emitter.completed("aws01", {"ok": True})
        done = client.wait_for(
            "task_status_update", lambda p: p["update"]["event"] == "task_completed"
        )
        assert done["update"]["result"] == {"ok": True}
        status, _, body = get(server, "/api/tasks/aws01")
        assert status == 200
        assert json.loads(body)["status"]["last"]["result"] == {"ok": True}
    finally:
        client.close()
        connection = redis.Redis.from_url(url)
        keys = list(connection.scan_iter(f"{prefix}[-:]*"))
        if keys:
            connection.delete(*keys)
        connection.close()


def test_close_from_a_thread_is_idempotent_and_stops_the_adapter() -> None:
    tasks = TaskEvents(subjects=["aws01"])
    before = threading.active_count()
    tasks.close()
    tasks.close()
    assert tasks._closed
    assert threading.active_count() <= before
    assert tasks.adapter._closed


def test_an_async_authorize_hook_is_refused_at_once() -> None:
    async def authorize(identity: Any, subject: str) -> bool:
        return False

    with pytest.raises(ValidationError, match="not an async def") as caught:
        TaskEvents(authorize=authorize)  # type: ignore[arg-type]
    assert caught.value.field == "authorize"


def test_an_authorize_hook_that_answers_with_an_awaitable_refuses(made: list[Any]) -> None:
    async def no(identity: Any, subject: str) -> bool:
        return False

    # (a type checker catches it; at run time, without one, it must still refuse)
    tasks = TaskEvents(subjects=["aws01"], authorize=lambda who, what: no(who, what))  # type: ignore[arg-type,return-value]
    server = serve(made, tasks)
    assert get(server, "/api/tasks/aws01")[0] == 404  # a coroutine is not a yes
    assert json.loads(get(server, "/api/tasks")[2])["tasks"] == {}
    assert tasks.adapter.hook_errors.count >= 1


def test_close_on_the_loop_says_to_await_aclose_and_changes_nothing(made: list[Any]) -> None:
    import asyncio

    tasks = TaskEvents(subjects=["aws01"])
    server = serve(made, tasks)
    loop = tasks.adapter.loop
    assert loop is not None

    async def close_on_the_loop() -> str:
        try:
            tasks.close()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "closed"

    said = asyncio.run_coroutine_threadsafe(close_on_the_loop(), loop).result(10)
    assert said.startswith("UsageError: TaskEvents.close() would block its own event loop")
    assert "await tasks.aclose()" in said
    assert not tasks._closed
    assert get(server, "/api/tasks")[0] == 200


def test_mounted_under_a_prefix_every_path_is_found_there(made: list[Any]) -> None:
    tasks = TaskEvents(subjects=["aws01"], progress_interval=0)
    api = FastAPI()
    api.mount("/tasks", tasks.app)
    server = serve(made, tasks, api)
    assert get(server, "/tasks/api/tasks")[0] == 200
    assert get(server, "/tasks/api/tasks/aws01")[0] == 200
    assert get(server, "/tasks/taskevents/static/dashboard.js")[0] == 200
    status, _, body = get(server, "/tasks/websocket")
    assert status == 200
    page = body.decode()
    assert '"/tasks/taskevents/static/dashboard.js"' in page
    settings = json.loads(page.split("window.TASKEVENTS = ", 1)[1].split(";</script>", 1)[0])
    assert settings["apiPrefix"] == "/tasks/api/tasks"
    assert settings["socketioPath"] == "/tasks/socket.io"
    client = Client()
    client.sio.connect(
        server.url, socketio_path="/tasks/socket.io", transports=["websocket"], wait_timeout=5
    )
    try:
        subscribe(client, "aws01")
        tasks.emitter.started("aws01", "change_ip")
        started = client.wait_for("task_status_update")
        assert started["update"]["event"] == "task_started"
    finally:
        client.close()


def test_behind_a_proxy_that_strips_a_root_path_the_page_points_under_it(
    made: list[Any],
) -> None:
    tasks = TaskEvents(subjects=["aws01"])
    server = LiveASGIServer(tasks.app, root_path="/inv")
    made.append((tasks, server))
    assert get(server, "/api/tasks")[0] == 200  # the proxy took /inv off
    page = get(server, "/websocket")[2].decode()
    assert '"/inv/taskevents/static/dashboard.js"' in page
    settings = json.loads(page.split("window.TASKEVENTS = ", 1)[1].split(";</script>", 1)[0])
    assert settings["socketioPath"] == "/inv/socket.io"
