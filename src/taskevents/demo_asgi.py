"""The demo server on asyncio: ``taskevents demo --async-mode asgi``.

The same demo as :mod:`taskevents.demo` (the configs ``aws01``, ``aws02`` and
``aws03``, the dashboard at ``/`` and ``/websocket``, the REST endpoints,
``POST /api/tasks/<config_name>``, the ``simulate_task_start`` and
``simulate_task_complete`` events, the same answers to the same requests), served by
:class:`taskevents.asgi.TaskEvents` on python-socketio's ``AsyncServer`` under uvicorn.
Its simulated tasks are coroutines on the server's event loop. Flask is not needed:
``pip install 'taskevents[asgi]'``.

Against DNS rebinding, the app answers only the host names it is served on
(``taskevents._hosts.AllowedHosts``): any other ``Host`` gets a 400 on every path,
Socket.IO included. Against cross-site requests, the task endpoint refuses an
``Origin`` other than the app's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any, TypeVar

from taskevents._demo_common import (
    DEMO_CONFIGS,
    MAX_BODY,
    SIMULATE_EVENTS,
    TOO_LARGE,
    HeldTasks,
    Refused,
    accepted,
    busy,
    check_config,
    check_content_type,
    check_origin,
    is_json_type,
    parse_body,
    simulate_complete,
    simulate_start,
    simulated_run,
    task_options,
)
from taskevents._hosts import AllowedHosts
from taskevents._optional import require
from taskevents.adapters.socketio.protocol import BadRequest
from taskevents.asgi import TaskEvents
from taskevents.emitter import Emitter
from taskevents.events import TaskEvent
from taskevents.exceptions import NoRunningTask, StoreUnavailable, SubjectBusy

__all__ = ["AsyncSimulatedTaskManager", "DemoApp", "create_asgi_app", "serve"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

T = TypeVar("T")

_HOST_HINT = "To answer it, start taskevents demo with --allowed-host NAME."


class AsyncSimulatedTaskManager(HeldTasks):
    """Stands in for the original TaskManager, on asyncio: each fake task is a
    coroutine, run as an :class:`asyncio.Task` on the running loop, that only calls the
    emitter.

    With a state store shared by processes (Redis), every emit is a network round trip:
    it is made in a worker thread, never on the loop.
    """

    def __init__(self, emitter: Emitter, *, task_seconds: float = 5.0) -> None:
        super().__init__(emitter)
        self.task_seconds = task_seconds
        self.shared = bool(getattr(emitter.state, "shared", False))
        self._running: set[asyncio.Task[None]] = set()

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)``: in a worker thread with a shared store, else right here."""
        if self.shared:
            return await asyncio.to_thread(func, *args)
        return func(*args)

    async def start(
        self, config_name: str, task_type: str = "change_ip", *, fail: bool = False
    ) -> TaskEvent:
        """Start a task that runs by itself; raises :class:`~taskevents.SubjectBusy` if
        one is running."""
        started = await self.call(self.emitter.started, config_name, task_type)
        task = asyncio.get_running_loop().create_task(self._run(config_name, started.task_id, fail))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return started

    async def _run(self, config_name: str, task_id: str, fail: bool) -> None:
        steps = simulated_run(self.emitter, config_name, task_id, fail, self.task_seconds)
        try:
            while (pause := await self.call(next, steps, None)) is not None:
                await asyncio.sleep(pause)
        except asyncio.CancelledError:
            # The server stops: the task ends as cancelled rather than busy for ever
            # (which matters with a shared store, where the state outlives the process).
            with contextlib.suppress(NoRunningTask):
                await self.call(self._cancelled, config_name, task_id)
            raise

    def _cancelled(self, config_name: str, task_id: str) -> None:
        self.emitter.cancelled(config_name, "the demo server stopped", task_id=task_id)

    async def aclose(self) -> None:
        """Cancel the running tasks, and wait until they have ended."""
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers") or ():
        if bytes(name).lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


def _head(
    status: int, content_type: str, length: int, extra: Iterable[tuple[str, str]] = ()
) -> dict[str, Any]:
    return {
        "status": status,
        "headers": [
            (b"content-type", content_type.encode()),
            (b"content-length", str(length).encode()),
            (b"x-content-type-options", b"nosniff"),
            *((name.lower().encode(), value.encode("latin-1")) for name, value in extra),
        ],
    }


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    await send({"type": "http.response.start", **_head(status, content_type, len(body), headers)})
    await send({"type": "http.response.body", "body": body})


async def _json(
    send: Send, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()
) -> None:
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    await _respond(send, status, body, "application/json", headers)


async def _json_error(
    send: Send, status: int, message: str, headers: Iterable[tuple[str, str]] = (), **details: Any
) -> None:
    await _json(send, status, {"error": {"message": message, **details}}, headers)


def _shown(path: str) -> str:
    return path if len(path) <= 200 else path[:199] + "…"


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    """The request's body; :class:`Refused` (413) past :data:`MAX_BODY` bytes."""
    length = _header(scope, b"content-length")
    if length is not None and length.strip().isdigit() and int(length) > MAX_BODY:
        raise Refused(413, TOO_LARGE)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refused(400, "the request body was cut short")
        chunk = bytes(message.get("body") or b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise Refused(413, TOO_LARGE)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


class DemoApp:
    """The demo's ASGI app: the host check, the dashboard at ``/``, the task endpoint
    ``POST /api/tasks/<config_name>``, and, for everything else, :attr:`tasks` (a
    :class:`~taskevents.asgi.TaskEvents`: Socket.IO, the REST endpoints, the dashboard
    at ``/websocket``).

    :param tasks: the demo's TaskEvents.
    :param manager: runs the simulated tasks.
    :param hosts: the ``Host`` names answered; a request without ``Host`` (HTTP/1.0,
        never a browser's) is let through.
    """

    def __init__(
        self, tasks: TaskEvents, manager: AsyncSimulatedTaskManager, hosts: AllowedHosts
    ) -> None:
        self.tasks = tasks
        self.manager = manager
        self.hosts = hosts
        self._api = tasks.api_prefix or "/api/tasks"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind in ("http", "websocket"):
            host = _header(scope, b"host")
            if host is not None and not self.hosts.allows(host):
                await self._refuse_host(host, scope, send)
                return
        if kind == "http" and await self._serve_own(scope, receive, send):
            return
        await self.tasks.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_around() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.manager.aclose()  # before the adapters close: they send its end
            return message

        await self.tasks.app(scope, receive_around, send)

    async def _refuse_host(self, host: str, scope: Scope, send: Send) -> None:
        shown = host if len(host) <= 100 else host[:100] + "..."
        body = (
            f"Bad Request: Host {shown!r} is not allowed on this server. {_HOST_HINT}\n"
        ).encode("utf-8", "replace")
        if scope["type"] == "http":
            await _respond(send, 400, body, "text/plain; charset=utf-8")
        elif "websocket.http.response" in (scope.get("extensions") or {}):
            # Refused before the handshake, with the same 400 as a plain request.
            head = _head(400, "text/plain; charset=utf-8", len(body))
            await send({"type": "websocket.http.response.start", **head})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})

    async def _serve_own(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer what the demo adds to TaskEvents; False for everything else."""
        path = scope.get("path") or "/"
        method = scope.get("method", "GET")
        if path == "/":
            if method != "GET":
                await _respond(
                    send,
                    405,
                    b"Method Not Allowed\n",
                    "text/plain; charset=utf-8",
                    [("Allow", "GET")],
                )
            else:
                page = self.tasks.dashboard_page()
                await _respond(send, 200, page, "text/html; charset=utf-8")
            return True
        prefix = self._api + "/"
        name = path[len(prefix) :] if path.startswith(prefix) else ""
        if name and "/" not in name:
            if method == "POST":
                await self._start_task(name, scope, receive, send)
                return True
            if method != "GET":
                await _json_error(
                    send,
                    405,
                    f"{method} is not allowed on {_shown(path)!r}; allowed: GET, POST",
                    [("Allow", "GET, POST")],
                    allowed=["GET", "POST"],
                )
                return True
            return False
        if (path == "/api" or path.startswith("/api/")) and not (
            path == self._api or path.startswith(prefix)
        ):
            # Every answer under /api is JSON, as in the Flask demo.
            await _json_error(send, 404, f"nothing here: {method} {_shown(path)!r}")
            return True
        return False

    async def _start_task(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            check_origin(
                _header(scope, b"origin"),
                str(scope.get("scheme") or "http"),
                _header(scope, b"host") or "",
            )
            check_config(name)
            mimetype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            check_content_type(mimetype, is_json_type(mimetype))
            task_type, fail = task_options(parse_body(await _read_body(scope, receive)))
            try:
                started = await self.manager.start(name, task_type, fail=fail)
            except SubjectBusy as error:
                raise busy(name, error) from None
        except Refused as refused:
            await _json_error(send, refused.status, refused.message, **refused.details)
            return
        except StoreUnavailable:  # as the REST endpoints answer it; not its text
            await _json_error(
                send,
                503,
                "the state store is unavailable; try again shortly",
                [("Retry-After", "1")],
            )
            return
        await _json(send, 202, accepted(started))


def _register_simulation(tasks: TaskEvents, manager: AsyncSimulatedTaskManager) -> None:
    """The original test server's two extra client events, on the demo's server only.

    python-socketio runs the handler registered for an event's name and falls back to
    the adapter's catch-all (``*``, which answers unknown events) only when there is
    none, so these two win over it.
    """
    namespace = tasks.namespace
    handlers: dict[str, Callable[[HeldTasks, tuple[Any, ...]], None]] = {
        "simulate_task_start": simulate_start,
        "simulate_task_complete": simulate_complete,
    }

    def bind(name: str) -> Callable[..., Awaitable[None]]:
        run = handlers[name]

        async def handler(sid: str, *args: Any) -> None:
            # connection_status must stay the first event the client gets.
            tasks.adapter.greet(sid)
            try:
                await manager.call(run, manager, args)
            except BadRequest as problem:
                await tasks.sio.emit("error", problem.payload, to=sid, namespace=namespace)

        return handler

    for name in SIMULATE_EVENTS:
        tasks.sio.on(name, bind(name), namespace=namespace)


def create_asgi_app(
    *,
    task_seconds: float = 5.0,
    log: bool = True,
    allowed_hosts: AllowedHosts | None = None,
    redis_url: str | None = None,
    redis_prefix: str | None = None,
    metrics: bool = False,
) -> DemoApp:
    """The demo's ASGI app, ready for :func:`serve` (or any ASGI server, with the
    lifespan on). Its :class:`~taskevents.asgi.TaskEvents` is ``app.tasks``.

    :param task_seconds: how long a simulated task runs.
    :param log: log every event, progress included, on the ``taskevents`` logger.
    :param allowed_hosts: the ``Host`` names answered (default: those of 127.0.0.1,
        ``AllowedHosts.serving("127.0.0.1")``); others get a 400 before reaching the
        app or the Socket.IO endpoint. A request without a ``Host`` header (HTTP/1.0;
        never a browser's) is let through.
    :param redis_url: keep the configs' state on this Redis server: demos on the same
        URL and prefix, on any port and in any async mode, share subjects, tasks and
        streams. A task runs in the demo it was started on.
    :param redis_prefix: their key prefix (default ``"taskevents"``).
    :raises ValidationError: a bad ``redis_url`` or ``redis_prefix``, naming it.
    :raises StoreUnavailable: ``redis_url`` does not answer.
    :raises MissingDependency: python-socketio is not installed.
    """
    tasks = TaskEvents(
        subjects=DEMO_CONFIGS,
        demo=True,
        # Every event, progress too, is logged: the demo is for watching them.
        adapters={"logging": {"levels": {"task_progress": "INFO"}}} if log else (),
        source="taskevents-demo",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        metrics=metrics,
    )
    manager = AsyncSimulatedTaskManager(tasks.emitter, task_seconds=task_seconds)
    _register_simulation(tasks, manager)
    hosts = AllowedHosts.serving("127.0.0.1") if allowed_hosts is None else allowed_hosts
    return DemoApp(tasks, manager, hosts)


# -- serving ----------------------------------------------------------------------------

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def _disconnect_clients(tasks: TaskEvents) -> None:
    """End every Engine.IO session now: a pending long-poll gets its answer (else the
    server would wait for it, up to the ping interval), a websocket closes. Sessions
    whose client has gone are not waited for."""
    for session in list(getattr(tasks.sio.eio, "sockets", {}).values()):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(session.close(wait=False), timeout=1)


def serve(
    app: DemoApp,
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve the demo with uvicorn until SIGTERM or SIGINT (Ctrl+C), then stop at once:
    the listening socket and every connection are closed (Socket.IO clients first, so
    that no long-poll holds the server up), the running tasks cancelled, the adapters
    flushed, and the function returns. (A second signal while it stops ends it
    outright.)

    :param ready: called once the port is open, before serving.
    :raises OSError: the address cannot be listened on.
    :raises MissingDependency: uvicorn is not installed.
    """
    uvicorn = require("uvicorn", extra="asgi", needed_by="taskevents demo --async-mode asgi")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.create_server((host, port), family=family)  # a busy port fails here
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        proxy_headers=False,  # the demo is reached directly: no X-Forwarded-* to trust
        timeout_graceful_shutdown=5,  # a safety net: clients are disconnected first
        # uvicorn's default websocket protocol logs an error for a websocket refused
        # with an HTTP answer (a foreign Host); wsproto's does not. python-engineio
        # brings wsproto (through simple-websocket).
        ws="wsproto" if importlib.util.find_spec("wsproto") is not None else "auto",
        # Engine.IO refuses a bigger message only once uvicorn has read it whole.
        ws_max_size=app.tasks.sio.eio.max_http_buffer_size,
    )

    class Server(uvicorn.Server):  # type: ignore[misc,name-defined]
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's own re-raises the signal once stopped, which would end the
            # process with it (or a KeyboardInterrupt) instead of a clean exit 0.
            def stop(signum: int, frame: object) -> None:
                for name in _SIGNALS:
                    signal.signal(name, signal.SIG_DFL)  # a second signal ends it outright
                self.should_exit = True

            previous = {name: signal.signal(name, stop) for name in _SIGNALS}
            try:
                yield
            finally:
                for name, handler in previous.items():
                    signal.signal(name, handler)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:
                server.close()  # no new connection, then end those of Socket.IO
            await _disconnect_clients(app.tasks)
            await super().shutdown(sockets)

    try:
        if ready is not None:
            ready()
        Server(config).run(sockets=[listening])
    finally:
        listening.close()
