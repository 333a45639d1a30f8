"""A real Celery worker (``celery -A tests.celery.app worker``, prefork pool) on the
Redis broker, a web process's Flask extension on the Redis state store, and a Celery
client app for sending and revoking tasks. Needs the Redis server of the Redis tests
(``TASKEVENTS_TEST_REDIS_URL``); every key goes under a prefix of the session's own, and
is deleted afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.redis.conftest import redis_url  # noqa: F401 - the fixture
from tests.support.socketio import Client, LiveServer

if TYPE_CHECKING:
    import redis

    from taskevents.redis import RedisStateStore

ROOT = Path(__file__).resolve().parents[2]
CELERY = Path(sys.executable).parent / "celery"


@pytest.fixture(scope="session")
def celery_prefix(redis_url: str) -> Iterator[str]:  # noqa: F811 - the fixture
    """The session's key prefix, for the state store and (``{prefix}:celery:``) the
    broker; its keys are deleted afterwards."""
    import redis

    prefix = f"taskevents-test-celery-{uuid.uuid4().hex}"
    yield prefix
    client: redis.Redis = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def worker_env(redis_url: str, prefix: str) -> dict[str, str]:  # noqa: F811
    return {
        **os.environ,
        "CELERY_BROKER_URL": redis_url,
        "TASKEVENTS_REDIS_URL": redis_url,
        "TASKEVENTS_REDIS_PREFIX": prefix,
        "PYTHONUNBUFFERED": "1",
    }


def start_worker(
    log_path: Path, app: str, env: dict[str, str], *options: str, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """``celery -A APP worker`` with the prefork pool; returns once it says it is ready."""
    command = [
        str(CELERY),
        *options,
        "-A",
        app,
        "worker",
        "--loglevel=INFO",
        "--pool=prefork",
        "--concurrency=2",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--hostname",
        f"taskevents-test-{uuid.uuid4().hex[:8]}@%h",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its pool processes in a group of their own
        )
    try:
        deadline = time.monotonic() + 60
        while " ready." not in log_path.read_text(errors="replace"):
            assert process.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.1)
    except BaseException:
        stop_worker(process)
        raise
    return process


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """A warm shutdown; if a task holds it up, a cold one; then the process group."""
    for sig in (signal.SIGTERM, signal.SIGQUIT):
        if process.poll() is not None:
            break
        process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the group of the worker we started
    process.wait(timeout=10)


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def worker(
    redis_url: str,  # noqa: F811 - the fixture
    celery_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    """A worker of ``tests.celery.app``, two pool processes, for the whole session."""
    log_path = tmp_path_factory.mktemp("celery") / "worker.log"
    process = start_worker(log_path, "tests.celery.app", worker_env(redis_url, celery_prefix))
    try:
        yield Worker(process, log_path)
    finally:
        stop_worker(process)


@pytest.fixture(scope="session")
def client_app(redis_url: str, celery_prefix: str) -> Iterator[Any]:  # noqa: F811
    """A Celery app that sends tasks to the worker (by name) and revokes them."""
    from celery import Celery

    from tests.celery.broker import configure

    app = Celery("tests-client", broker=redis_url)
    configure(app, celery_prefix)
    yield app
    app.close()


@dataclass
class Web:
    """A web process's Flask extension on the Redis store, served live."""

    url: str
    clients: list[Client] = field(default_factory=list)

    def subscribe(self, subject: str) -> Client:
        client = Client().connect(self.url)
        self.clients.append(client)
        client.emit("subscribe_task", {"config_name": subject})
        client.wait_for("task_status", lambda p: p["config_name"] == subject)
        return client


@pytest.fixture
def web(redis_url: str, celery_prefix: str) -> Iterator[Callable[[list[str]], Web]]:  # noqa: F811
    """``web(subjects)``: the Flask extension with those subjects, on the session's
    Redis prefix, served on a free port; stopped afterwards."""
    import flask
    from flask_socketio import SocketIO

    from taskevents.flask import TaskEvents

    running: list[tuple[flask.Flask, LiveServer, Web]] = []

    def start(subjects: list[str]) -> Web:
        app = flask.Flask("taskevents-celery-test")
        app.config.update(
            TASKEVENTS_REDIS_URL=redis_url,
            TASKEVENTS_REDIS_PREFIX=celery_prefix,
            TASKEVENTS_SUBJECTS=subjects,
            TASKEVENTS_PROGRESS_INTERVAL=0,
        )
        TaskEvents(app, SocketIO(app, async_mode="threading"))
        server = LiveServer(app)
        served = Web(server.url)
        running.append((app, server, served))
        return served

    yield start
    from taskevents.flask import TaskEvents as Extension

    for app, server, served in running:
        for client in served.clients:
            client.close()
        Extension.state(app).close()
        server.stop()


def new_subject() -> str:
    """A subject no other test uses."""
    return f"cfg-{uuid.uuid4().hex[:12]}"


def until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def store(redis_url: str, celery_prefix: str) -> Iterator[RedisStateStore]:  # noqa: F811
    """The state store the worker and the web process share."""
    from taskevents.redis import RedisStateStore

    with RedisStateStore(redis_url, prefix=celery_prefix) as store:
        yield store
