"""The Flask extension on Redis: ``TASKEVENTS_REDIS_URL`` and ``TASKEVENTS_REDIS_PREFIX``
switch an app from embedded to Redis. Another store on the same prefix stands for
another process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import flask
import pytest
from flask_socketio import SocketIO

from taskevents import Emitter, MemoryStateStore, ValidationError
from taskevents.flask import TaskEvents
from taskevents.redis import RedisBridge, RedisStateStore
from tests.support.socketio import Client, LiveServer, subscribe


@pytest.fixture
def apps() -> Iterator[list[flask.Flask]]:
    made: list[flask.Flask] = []
    yield made
    for app in made:
        if "taskevents" in app.extensions:
            TaskEvents.state(app).close()


@pytest.fixture
def make_app(apps: list[flask.Flask], redis_url: str, prefix: str) -> Callable[..., flask.Flask]:
    """``make_app(**config)``: an app whose extension is on this test's Redis prefix."""

    def make(**config: Any) -> flask.Flask:
        app = flask.Flask("taskevents-redis-test")
        settings = {
            "subjects": ["aws01", "aws02"],
            "progress_interval": 0,
            "redis_url": redis_url,
            "redis_prefix": prefix,
            **config,
        }
        app.config.update({f"TASKEVENTS_{key.upper()}": value for key, value in settings.items()})
        apps.append(app)
        return app

    return make


@pytest.fixture
def other(redis_url: str, prefix: str) -> Iterator[Emitter]:
    """The emitter of another process on the same Redis prefix."""
    with RedisStateStore(redis_url, prefix=prefix) as store:
        yield Emitter(source="worker", state=store)


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    made: list[LiveServer] = []
    yield made
    for server in made:
        server.stop()


def test_the_rest_endpoints_show_tasks_started_by_another_process(
    make_app: Callable[..., flask.Flask], other: Emitter, prefix: str
) -> None:
    app = make_app()
    TaskEvents(app, SocketIO(app, async_mode="threading"))
    state = TaskEvents.state(app)
    assert isinstance(state.emitter.state, RedisStateStore)
    assert state.emitter.state.prefix == prefix
    assert isinstance(state.bridge, RedisBridge)
    assert state.bridge.running

    other.started("aws01", "change_ip")
    other.progress("aws01", 40, stage="execution")
    client = app.test_client()
    tasks = client.get("/api/tasks").get_json()["tasks"]
    assert sorted(tasks) == ["aws01", "aws02"]
    assert tasks["aws01"]["status"] == "busy"
    assert tasks["aws01"]["current_task"] == "change_ip"
    one = client.get("/api/tasks/aws01").get_json()
    assert one["seq"] == 2
    assert one["status"]["current"]["progress"] == {"percent": 40, "stage": "execution"}


def test_socketio_clients_get_the_events_of_another_process(
    make_app: Callable[..., flask.Flask], other: Emitter, servers: list[LiveServer]
) -> None:
    app = make_app()
    TaskEvents(app, SocketIO(app, async_mode="threading"))
    server = LiveServer(app)
    servers.append(server)
    client = Client().connect(server.url)
    try:
        snapshot = subscribe(client)
        assert snapshot["seq"] == 0
        started = other.started("aws01", "change_ip")
        other.progress("aws01", 50)
        completed = other.completed("aws01", {"ip": "203.0.113.9"})
        done = client.wait_for(
            "task_status_update", lambda p: p["update"]["event"] == "task_completed"
        )
        assert done["seq"] == completed.seq
        assert done["event_id"] == completed.id
        seqs = [update["seq"] for update in client.updates()]
        assert seqs[0] == started.seq
        assert seqs == sorted(set(seqs))
    finally:
        client.close()


def test_the_app_emitter_reaches_the_other_processes(
    make_app: Callable[..., flask.Flask], redis_url: str, prefix: str
) -> None:
    app = make_app()
    tasks = TaskEvents(app, SocketIO(app, async_mode="threading"))
    tasks.emitter.started("aws02", "change_ip")
    with RedisStateStore(redis_url, prefix=prefix) as store:
        snapshot = store.snapshot("aws02")
        assert snapshot is not None
        assert snapshot.status == "busy"


def test_a_bad_redis_url_is_named_at_init(make_app: Callable[..., flask.Flask]) -> None:
    app = make_app(redis_url="http://127.0.0.1:6379/0")
    with pytest.raises(ValidationError, match="TASKEVENTS_REDIS_URL") as caught:
        TaskEvents(app, SocketIO(app, async_mode="threading"))
    assert caught.value.field == "TASKEVENTS_REDIS_URL"
    assert "taskevents" not in app.extensions
    app = make_app(redis_prefix="")
    with pytest.raises(ValidationError) as caught:
        TaskEvents(app, SocketIO(app, async_mode="threading"))
    assert caught.value.field == "TASKEVENTS_REDIS_PREFIX"


def test_flask_socketio_message_queue_is_refused_with_it(
    make_app: Callable[..., flask.Flask], redis_url: str
) -> None:
    app = make_app()
    socketio = SocketIO(app, async_mode="threading", message_queue=redis_url)
    with pytest.raises(ValidationError, match="message_queue") as caught:
        TaskEvents(app, socketio)
    assert caught.value.field == "TASKEVENTS_REDIS_URL"
    assert "taskevents" not in app.extensions


def test_an_emitter_given_must_be_on_redis_and_is_bridged(
    make_app: Callable[..., flask.Flask], other: Emitter, prefix: str
) -> None:
    app = make_app()
    with pytest.raises(ValidationError, match="RedisStateStore") as caught:
        TaskEvents(app, SocketIO(app, async_mode="threading"), emitter=Emitter())
    assert caught.value.field == "TASKEVENTS_REDIS_URL"

    app = make_app(redis_prefix="elsewhere")
    with pytest.raises(ValidationError) as caught:
        TaskEvents(app, SocketIO(app, async_mode="threading"), emitter=other)
    assert caught.value.field == "TASKEVENTS_REDIS_PREFIX"

    app = make_app()
    TaskEvents(app, SocketIO(app, async_mode="threading"), emitter=other)
    state = TaskEvents.state(app)
    assert state.emitter is other
    assert state.bridge is not None
    assert state.bridge.store is other.state
    assert state.redis_store is None  # the app's own: not closed by the extension


def test_apps_that_serve_one_emitter_share_one_bridge(
    make_app: Callable[..., flask.Flask], other: Emitter
) -> None:
    extension = TaskEvents(emitter=other)
    one, two = make_app(), make_app()
    extension.init_app(one, SocketIO(one, async_mode="threading"))
    extension.init_app(two, SocketIO(two, async_mode="threading"))
    bridge = TaskEvents.state(one).bridge
    assert bridge is not None
    assert TaskEvents.state(two).bridge is bridge  # two would bring each event in twice
    TaskEvents.state(one).close()
    assert bridge.running  # still the other app's
    TaskEvents.state(two).close()
    assert not bridge.running


def test_without_redis_url_the_app_stays_embedded(
    apps: list[flask.Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = flask.Flask("taskevents-embedded")
    app.config["TASKEVENTS_REDIS_PREFIX"] = "ignored"
    apps.append(app)
    TaskEvents(app, SocketIO(app, async_mode="threading"))
    state = TaskEvents.state(app)
    assert isinstance(state.emitter.state, MemoryStateStore)
    assert state.bridge is None
    assert "TASKEVENTS_REDIS_PREFIX ignored" in caplog.text
