"""Metrics of a web process whose state lives in Redis, while another process's
emitter (here, another emitter on its own connection to the same store) runs tasks."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import flask
import pytest
import redis
from flask_socketio import SocketIO

from taskevents import Emitter
from taskevents.flask import TaskEvents
from taskevents.metrics import snapshot
from taskevents.redis import RedisStateStore
from tests.metrics.support import scrape
from tests.support.socketio import LiveServer, wait_until

REDIS_URL = os.environ.get("TASKEVENTS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"taskevents-test-{uuid.uuid4().hex}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def test_events_are_counted_where_emitted_and_subjects_store_wide(prefix: str) -> None:
    app = flask.Flask("taskevents-metrics-redis")
    app.config.update(
        TASKEVENTS_SUBJECTS=["aws01", "aws02"],
        TASKEVENTS_REDIS_URL=REDIS_URL,
        TASKEVENTS_REDIS_PREFIX=prefix,
        TASKEVENTS_METRICS=True,
    )
    TaskEvents(app, SocketIO(app, async_mode="threading"))
    state = TaskEvents.state(app)
    server = LiveServer(app)
    worker_store = RedisStateStore(REDIS_URL, prefix=prefix)
    try:
        worker = Emitter(source="worker", state=worker_store)  # "another process"
        worker.started("aws01", "change_ip")
        worker.progress("aws01", 50)
        state.emitter.started("aws02", "change_ip")  # this process's own
        assert wait_until(
            lambda: scrape(server.url).value("taskevents_subjects", status="busy") == 2
        )
        scraped = scrape(server.url)
        assert scraped.value("taskevents_events_total", type="task_started") == 1
        assert scraped.value("taskevents_events_total", type="task_progress") == 0
        assert scraped.value("taskevents_subjects", status="idle") == 0
        assert snapshot(state.emitter)["subjects"] == {"idle": 0, "busy": 2}
        worker.completed("aws01")
        assert wait_until(
            lambda: scrape(server.url).value("taskevents_subjects", status="idle") == 1
        )
    finally:
        server.stop()
        state.close()
        worker_store.close()
        if state.metrics is not None:
            state.metrics.close()
