"""Real servers and real clients for the Socket.IO tests, and the ``serve`` fixture's
server factory (registered in ``tests/conftest.py``)."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import engineio
import flask
import socketio
from flask_socketio import SocketIO
from werkzeug.serving import BaseWSGIServer, make_server

from taskevents import Emitter, MemoryStateStore, TaskEvent
from taskevents.adapters.socketio import AsyncSocketIOAdapter, SocketIOAdapter
from taskevents.flask import TaskEvents


class LiveServer:
    """A WSGI app served by Werkzeug on a free 127.0.0.1 port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        # Don't wait at shutdown for connection threads that clients left behind.
        self.server.daemon_threads = True  # type: ignore[attr-defined]
        self.server.block_on_close = False  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _InOrderEngineIO(engineio.Client):  # type: ignore[misc]
    # The stock client runs every message's handler in a new thread, so it may see
    # messages out of order; this one handles them in the order they arrive.
    def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("run_async", None)
        return super()._trigger_event(event, *args, **kwargs)

    def disconnect(self, abort: bool = False, reason: Any = None) -> None:
        # Werkzeug's development server does not answer the websocket closing
        # handshake; don't wait the default 3 s for it.
        ws = getattr(self, "ws", None)
        if ws is not None:
            close = ws.close
            ws.close = lambda *args, **kwargs: close(timeout=0.1)
        super().disconnect(abort=abort, reason=reason)


class Client:
    """A python-socketio client that records every event it receives, in order."""

    def __init__(self) -> None:
        class _Client(socketio.Client):  # type: ignore[misc]
            def _engineio_client_class(self) -> type:
                return _InOrderEngineIO

        self.sio = _Client(reconnection=False)
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.seen: list[tuple[str, Any]] = []
        self.sio.on("*", self._record, namespace="*")
        self.connect_errors: list[Any] = []
        self.confirmed_before_greeting: bool | None = None
        self.sio.on(
            "connect_error",
            lambda namespace, data: self.connect_errors.append(data),
            namespace="*",
        )

    def _record(self, event: str, namespace: str, *args: Any) -> None:
        if event == "connection_status":
            # was the Socket.IO connection confirmed before this event arrived?
            self.confirmed_before_greeting = namespace in self.sio.namespaces
        self.inbox.put((event, args[0] if len(args) == 1 else list(args)))

    def connect(
        self,
        url: str,
        *,
        transports: list[str] | None = None,
        auth: Any = None,
        namespace: str = "/",
        headers: dict[str, str] | None = None,
    ) -> Client:
        self.sio.connect(
            url,
            transports=transports or ["websocket"],
            auth=auth,
            namespaces=[namespace],
            headers=headers or {},
            wait_timeout=5,
        )
        return self

    def emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        """Emit with exactly these arguments: none, one, or several."""
        data: Any = None if not args else args[0] if len(args) == 1 else tuple(args)
        self.sio.emit(event, data, namespace=namespace)

    def next(self, timeout: float = 5.0) -> tuple[str, Any]:
        item = self.inbox.get(timeout=timeout)
        self.seen.append(item)
        return item

    def wait_for(
        self, event: str, where: Callable[[Any], bool] = lambda _: True, timeout: float = 5.0
    ) -> Any:
        """The payload of the next ``event`` matching ``where``; others are kept in seen."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} within {timeout}s; saw {self.seen[-5:]}")
            try:
                name, payload = self.next(remaining)
            except queue.Empty:
                continue
            if name == event and where(payload):
                return payload

    def drain(self, quiet: float = 0.3) -> list[tuple[str, Any]]:
        """Everything that arrives until nothing has for ``quiet`` seconds."""
        got = []
        while True:
            try:
                got.append(self.next(quiet))
            except queue.Empty:
                return got

    def updates(self) -> list[dict[str, Any]]:
        return [payload for name, payload in self.seen if name == "task_status_update"]

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()


SUBJECTS = {"aws01": {"region": "eu-west-1"}, "aws02": {}, "aws03": {}}


@dataclass
class Served:
    url: str
    emitter: Emitter
    adapter: SocketIOAdapter | AsyncSocketIOAdapter
    #: The Flask app, or the taskevents.asgi.TaskEvents serving on uvicorn.
    app: Any

    def client(self, **options: Any) -> Client:
        client = Client().connect(self.url, **options)
        self._clients.append(client)
        return client

    def __post_init__(self) -> None:
        self._clients: list[Client] = []

    def flush(self, timeout: float) -> bool:
        """The adapter's flush, from the test's thread, whichever server."""
        adapter = self.adapter
        if isinstance(adapter, AsyncSocketIOAdapter):
            assert adapter.loop is not None
            done = asyncio.run_coroutine_threadsafe(adapter.flush(timeout), adapter.loop)
            return done.result(timeout + 1)
        return adapter.flush(timeout)


class LiveASGIServer:
    """An ASGI app served by uvicorn on a free 127.0.0.1 port, in a thread."""

    def __init__(self, app: Any, **options: Any) -> None:
        import uvicorn

        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", **options
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def serving(kind: str = "flask") -> Iterator[Callable[..., Served]]:
    """The ``serve`` fixture: ``serve(**config)`` starts a Flask app with the extension on
    a live server (``kind="flask"``), or ``taskevents.asgi.TaskEvents`` on uvicorn
    (``kind="asgi"``), with the same options, and returns a :class:`Served`;
    everything is stopped afterwards."""
    if kind == "asgi":
        yield from _serving_asgi()
        return
    running: list[tuple[Served, LiveServer, TaskEvents]] = []

    def start(
        *,
        history_size: int = 1000,
        authenticate: Any = None,
        authorize: Any = None,
        **config: Any,
    ) -> Served:
        app = flask.Flask("taskevents-test")
        settings = {"subjects": SUBJECTS, "progress_interval": 0, **config}
        app.config.update({f"TASKEVENTS_{key.upper()}": value for key, value in settings.items()})
        emitter = Emitter(source="tests", state=MemoryStateStore(history_size=history_size))
        socketio_ = SocketIO(app, async_mode="threading")
        extension = TaskEvents(
            app, socketio_, emitter=emitter, authenticate=authenticate, authorize=authorize
        )
        server = LiveServer(app)
        served = Served(server.url, emitter, extension.state(app).socketio_adapter, app)
        running.append((served, server, extension))
        return served

    yield start
    for served, server, _extension in running:
        for client in served._clients:
            client.close()
        TaskEvents.state(served.app).close()
        server.stop()


def _serving_asgi() -> Iterator[Callable[..., Served]]:
    from taskevents.asgi import TaskEvents as ASGITaskEvents

    running: list[tuple[Served, LiveASGIServer, ASGITaskEvents]] = []

    def start(
        *,
        history_size: int = 1000,
        authenticate: Any = None,
        authorize: Any = None,
        **config: Any,
    ) -> Served:
        settings = {"subjects": SUBJECTS, "progress_interval": 0, **config}
        emitter = Emitter(source="tests", state=MemoryStateStore(history_size=history_size))
        tasks = ASGITaskEvents(emitter, authenticate=authenticate, authorize=authorize, **settings)
        server = LiveASGIServer(tasks.app)
        served = Served(server.url, emitter, tasks.adapter, tasks)
        running.append((served, server, tasks))
        return served

    yield start
    for served, server, tasks in running:
        for client in served._clients:
            client.close()
        tasks.close()
        server.stop()


def subscribe(client: Client, subject: str = "aws01", **extra: Any) -> dict[str, Any]:
    client.emit("subscribe_task", {"config_name": subject, **extra})
    status: dict[str, Any] = client.wait_for("task_status", lambda p: p["config_name"] == subject)
    return status


def run_task(emitter: Emitter, subject: str = "aws01", steps: int = 3) -> list[TaskEvent]:
    events = [emitter.started(subject, "change_ip")]
    for n in range(1, steps + 1):
        events.append(
            emitter.progress(subject, 100 * n // steps, stage="execution", message="Changing IP...")
        )
    events.append(emitter.completed(subject, {"status": "success", "data": {"ip": "203.0.113.7"}}))
    return events


def by_token(environ: Any, auth: Any) -> str | None:
    tokens = {"alice-token": "alice", "bob-token": "bob"}
    token = auth.get("token") if isinstance(auth, dict) else None
    return tokens.get(token) if isinstance(token, str) else None


def only_own(identity: Any, subject: str) -> bool:
    return (identity, subject) in {("alice", "aws01"), ("alice", "aws02"), ("bob", "aws03")}


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
