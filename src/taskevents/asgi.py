"""The ASGI counterpart of :mod:`taskevents.flask`: Socket.IO, REST and the dashboard
for FastAPI, Starlette and any other ASGI app, served by uvicorn, hypercorn, ...

.. code-block:: python

    from fastapi import FastAPI
    from taskevents.asgi import TaskEvents

    api = FastAPI()
    tasks = TaskEvents(subjects=["aws01"])
    app = tasks.wrap(api)            # serve this one: uvicorn module:app

    @api.post("/run")
    async def run() -> dict[str, str]:
        async with tasks.emitter.track("aws01", "change_ip") as task:
            task.progress(50)
        return {"task_id": task.task_id}

:class:`TaskEvents` takes the options of the Flask extension's ``TASKEVENTS_*`` keys
as keyword arguments, with the same defaults, and serves the same protocol (through
:class:`~taskevents.adapters.socketio.AsyncSocketIOAdapter` on python-socketio's
``AsyncServer``), the same REST endpoints and the same dashboard.

Requires ``pip install 'taskevents[asgi]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from importlib import resources
from typing import TYPE_CHECKING, Any

from taskevents._bridges import acquire_bridge, release_bridge
from taskevents._hosts import host_allowed, normalize_name
from taskevents._optional import require
from taskevents._wiring import adapter_specs, load_named_adapter, redis_store, subjects_of
from taskevents.adapters import Adapter
from taskevents.adapters.socketio.async_server import AsyncSocketIOAdapter
from taskevents.adapters.socketio.protocol import (
    Authenticate,
    Authorize,
    budget_key,
    client_address,
    snapshot_payload,
    timestamp,
)
from taskevents.emitter import Emitter
from taskevents.events import json_copy
from taskevents.exceptions import (
    StoreUnavailable,
    UsageError,
    ValidationError,
)
from taskevents.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from taskevents.metrics import Metrics
from taskevents.metrics import enable as enable_metrics

if TYPE_CHECKING:
    from taskevents.redis import RedisBridge, RedisStateStore

__all__ = ["ASGIApp", "TaskEvents"]

logger = logging.getLogger("taskevents")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: An ASGI application.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where the dashboard's files are served from (as in the Flask extension).
STATIC_PREFIX = "/taskevents/static/"
_CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".map": "application/json",
}
_TEMPLATE_URL = re.compile(
    r"\{\{\s*url_for\('taskevents_dashboard\.static',\s*filename='([^']+)'\)\s*\}\}"
)
_TEMPLATE_SETTINGS = "{{ settings|tojson }}"


def _json_for_html(value: Any) -> str:
    """JSON safe inside a ``<script>`` element (as Jinja's ``tojson`` writes it)."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
    )


def _static_root() -> Any:
    return resources.files("taskevents") / "flask" / "static"


def _dashboard_page(settings: Mapping[str, Any], root: str = "") -> bytes:
    """The dashboard page: the Flask extension's template, filled in; its files' URLs
    under ``root`` (the app's ``root_path``)."""
    template = (
        resources.files("taskevents") / "flask" / "templates" / "taskevents" / "dashboard.html"
    ).read_text("utf-8")
    page = _TEMPLATE_URL.sub(lambda match: root + STATIC_PREFIX + match.group(1), template)
    page = page.replace(_TEMPLATE_SETTINGS, _json_for_html(dict(settings)))
    return page.encode("utf-8")


def _path_option(name: str, value: object, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValidationError(name, "a URL path starting with '/'", value)
    return value.rstrip("/") or "/"


def _environ(scope: Scope) -> dict[str, Any]:
    """A WSGI-like environ for the ``authenticate`` hook, as python-engineio builds one
    for a Socket.IO connection (``HTTP_*`` headers, ``REMOTE_ADDR``, ``asgi.scope``)."""
    client = scope.get("client")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope.get("method", "GET"),
        "PATH_INFO": scope.get("path", ""),
        "QUERY_STRING": bytes(scope.get("query_string") or b"").decode("latin-1"),
        "REMOTE_ADDR": client[0] if client else "",
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "asgi.scope": scope,
    }
    for raw_name, raw_value in scope.get("headers") or ():
        name = bytes(raw_name).decode("latin-1").upper().replace("-", "_")
        value = bytes(raw_value).decode("latin-1")
        if name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[name] = value
            continue
        key = f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers") or ():
        if bytes(name).lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    raw = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        *((name.lower().encode(), value.encode("latin-1")) for name, value in headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _json(
    send: Send, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await _respond(send, status, body, "application/json", headers)


async def _json_error(
    send: Send,
    status: int,
    message: str,
    headers: Iterable[tuple[str, str]] = (),
    **details: Any,
) -> None:
    await _json(send, status, {"error": {"message": message, **details}}, headers)


def _without_body(send: Send) -> Send:
    """``send`` for a HEAD request: the response's headers, not its body."""

    async def head(message: Message) -> None:
        if message.get("type") == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return head


def _shown(path: str) -> str:
    return path if len(path) <= 200 else path[:199] + "…"


class TaskEvents:
    """Socket.IO, REST and the dashboard for an ASGI app.

    :param emitter: the emitter to serve; None creates one (on a
        :class:`~taskevents.redis.RedisStateStore` with ``redis_url``), as
        :attr:`emitter`.
    :param subjects: subjects to register: a list of names, or a mapping of name to
        metadata.
    :param authenticate: ``authenticate(environ, auth) -> identity``, on Socket.IO
        connect (``auth`` is what the client sent) and on REST calls (``auth`` is
        ``{"token": ...}`` from an ``Authorization: Bearer`` header, else None); it may
        be an ``async def`` function; a plain one runs in a worker thread, and either
        must answer within 10 s (``adapter.authenticate_timeout``). ``environ`` is
        WSGI-like: ``HTTP_*`` headers, ``REMOTE_ADDR``, and the ASGI scope as
        ``environ["asgi.scope"]``. Returning None or False, or raising, refuses.
        Default: everyone.
    :param authorize: ``authorize(identity, subject) -> bool``, called on the event loop
        (keep it quick). Default: everything.
    :param cors_allowed_origins: the origins whose pages may connect to Socket.IO;
        None (the default) allows only the serving origin. It replaces that default, so
        list the serving origin too. Ignored with ``server``.
    :param dashboard: serve the dashboard, at ``dashboard_path`` (``"/websocket"``).
    :param api_prefix: the REST endpoints' prefix (``"/api/tasks"``); None turns them
        off.
    :param namespace: the Socket.IO namespace (``"/"``).
    :param progress_interval: seconds between progress updates per subject (``0.1``).
    :param max_subscriptions: subjects one client may watch at once (``100``).
    :param max_backlog: packets that may wait for one client before it is dropped as
        not reading (``1000``)...
    :param max_backlog_bytes: ...and bytes (16 MiB).
    :param adapters: more adapters by name: ``["logging"]`` or ``{"logging":
        {"logger": "myapp.tasks"}}``.
    :param source: the created emitter's ``source`` (default ``"taskevents"``).
    :param demo: the dashboard shows the demo's controls.
    :param redis_url: keep the created emitter's state on this Redis server, and
        bring every process's events to this app's clients (a
        :class:`~taskevents.redis.RedisBridge`). With an emitter given, it must have a
        ``RedisStateStore`` already; it is bridged as it is.
    :param redis_prefix: the Redis key prefix (default ``"taskevents"``).
    :param trusted_hosts: the ``Host`` names answered (``"example.com"``,
        ``"*.example.com"``), against DNS rebinding; others get a 400 on every path,
        Socket.IO included. Default: every host, as Flask's ``TRUSTED_HOSTS``.
    :param server: a ``socketio.AsyncServer`` of the app's own to serve on; None
        creates one (``async_mode="asgi"``).
    :param socketio_path: where Socket.IO is served (``"socket.io"``).
    :param metrics: serve the emitter's and the adapters' metrics in the Prometheus text
        format at ``metrics_path`` (``"/metrics"``), to callers ``authenticate``
        accepts, as the REST endpoints (see :doc:`metrics`). Needs
        ``pip install 'taskevents[metrics]'``.

    :raises ValidationError: an option is wrong; the message names it.
    :raises StoreUnavailable: ``redis_url`` does not answer.
    """

    def __init__(
        self,
        emitter: Emitter | None = None,
        *,
        subjects: Iterable[str] | Mapping[str, Mapping[str, Any] | None] = (),
        authenticate: Authenticate | None = None,
        authorize: Authorize | None = None,
        cors_allowed_origins: str | list[str] | None = None,
        dashboard: bool = True,
        dashboard_path: str = "/websocket",
        api_prefix: str | None = "/api/tasks",
        namespace: str = "/",
        progress_interval: float = 0.1,
        max_subscriptions: int = 100,
        max_backlog: int = 1000,
        max_backlog_bytes: int = 16 << 20,
        adapters: Iterable[str] | Mapping[str, Mapping[str, Any]] = (),
        source: str | None = None,
        demo: bool = False,
        redis_url: str | None = None,
        redis_prefix: str | None = None,
        trusted_hosts: Iterable[str] | None = None,
        server: Any = None,
        socketio_path: str = "socket.io",
        metrics: bool = False,
        metrics_path: str = "/metrics",
    ) -> None:
        socketio = require("socketio", extra="asgi", needed_by="taskevents.asgi.TaskEvents")
        for name, hook in (("authenticate", authenticate), ("authorize", authorize)):
            if hook is not None and not callable(hook):
                raise ValidationError(name, "a callable or None", hook)
        if emitter is not None and not isinstance(emitter, Emitter):
            expected = "a taskevents.Emitter or None"
            if isinstance(emitter, Mapping):
                expected += (
                    " (the options are keyword arguments, e.g. TaskEvents(subjects=[...]), "
                    "not a config mapping)"
                )
            raise ValidationError("emitter", expected, emitter)
        if not isinstance(dashboard, bool):
            raise ValidationError("dashboard", "True or False", dashboard)
        self.dashboard_path = _path_option("dashboard_path", dashboard_path, optional=not dashboard)
        self.api_prefix = _path_option("api_prefix", api_prefix, optional=True)
        if not isinstance(socketio_path, str) or not socketio_path.strip("/"):
            raise ValidationError("socketio_path", "a URL path such as 'socket.io'", socketio_path)
        self.socketio_path = "/" + socketio_path.strip("/") + "/"
        if not isinstance(metrics, bool):
            raise ValidationError("metrics", "True or False", metrics)
        if metrics:
            require("prometheus_client", extra="metrics", needed_by="TaskEvents(metrics=True)")
        self.metrics_path = _path_option("metrics_path", metrics_path, optional=not metrics)
        self.trusted_hosts: tuple[str, ...] | None = None
        if trusted_hosts is not None:
            if isinstance(trusted_hosts, str):
                raise ValidationError("trusted_hosts", "a list of host names", trusted_hosts)
            try:
                self.trusted_hosts = tuple(normalize_name(name) for name in trusted_hosts)
            except (ValueError, TypeError) as exc:
                raise ValidationError("trusted_hosts", "host names", str(exc)) from None
        specs = adapter_specs(adapters, "adapters")
        registered = subjects_of(subjects, "subjects")
        if server is not None and not isinstance(server, socketio.AsyncServer):
            hint = ""
            if isinstance(server, socketio.Server) or hasattr(server, "init_app"):
                hint = " (a socketio.Server or Flask-SocketIO is served by taskevents.flask)"
            raise ValidationError("server", "a python-socketio AsyncServer or None" + hint, server)
        self.dashboard = dashboard
        self.demo = bool(demo)
        self.namespace = namespace
        self.authenticate = authenticate
        self.redis_store: RedisStateStore | None = None
        self.bridge: RedisBridge | None = None
        self._closed = False
        bridged = self._redis(emitter, redis_url, redis_prefix)
        self.adapters: list[Adapter] = []
        try:
            self.emitter = emitter or Emitter(source=source or "taskevents", state=self.redis_store)
            self.sio = server or socketio.AsyncServer(
                async_mode="asgi", cors_allowed_origins=cors_allowed_origins
            )
            self.adapter = AsyncSocketIOAdapter(
                self.sio,
                self.emitter,
                namespace=namespace,
                progress_interval=progress_interval,
                max_subscriptions=max_subscriptions,
                max_backlog=max_backlog,
                max_backlog_bytes=max_backlog_bytes,
                authenticate=authenticate,
                authorize=authorize,
            )
        except BaseException:
            if self.redis_store is not None:
                self.redis_store.close()
            raise
        try:
            for name, options in specs:
                self.adapters.append(load_named_adapter(name, options, "adapters"))
            for subject, metadata in registered.items():
                try:
                    self.emitter.register(subject, **json_copy(metadata, "metadata"))
                except ValidationError as exc:
                    if exc.field == "subject":
                        raise ValidationError("subjects", exc.expected, subject) from exc
                    field = f"subjects[{subject!r}]{exc.field[len('metadata') :]}"
                    raise ValidationError(field, exc.expected, exc.got) from exc
        except BaseException:
            self.close()
            raise
        self.adapter.connect(self.emitter)
        for other in self.adapters:
            other.connect(self.emitter)
        #: With ``metrics=True``: the emitter's metrics, served at ``metrics_path``.
        self.metrics: Metrics | None = None
        self._metrics_lock = asyncio.Lock()
        if metrics:
            self.metrics = enable_metrics(self.emitter)
            self.metrics.watch(self.adapter, "socketio")
            for (name, _), other in zip(specs, self.adapters, strict=True):
                self.metrics.watch(other, name)
        if bridged is not None:
            self.bridge = acquire_bridge(bridged)
        self._engineio = socketio.ASGIApp(self.sio, socketio_path=self.socketio_path.strip("/"))
        self._statics: dict[str, Any] = {}
        root = _static_root()
        for entry in (root, root / "vendor"):
            if entry.is_dir():
                for item in entry.iterdir():
                    if item.is_file() and any(item.name.endswith(s) for s in _CONTENT_TYPES):
                        name = item.name if entry is root else f"vendor/{item.name}"
                        self._statics[name] = item
        self._pages: dict[str, bytes] = {}
        #: The ASGI app with nothing behind it: Socket.IO, REST and the dashboard, and
        #: a 404 for every other path.
        self.app: ASGIApp = self.wrap(None)

    def _redis(
        self, emitter: Emitter | None, url: str | None, prefix: str | None
    ) -> RedisStateStore | None:
        """The store to bridge, creating it (as :attr:`redis_store`) when needed."""
        store, created = redis_store(
            emitter, url, prefix, url_key="redis_url", prefix_key="redis_prefix"
        )
        if created:
            self.redis_store = store
        return store

    # -- lifecycle -----------------------------------------------------------------------

    async def startup(self) -> None:
        """Bind the Socket.IO adapter to the running loop and start it; the wrapped app
        does this on the ASGI lifespan's startup (without a lifespan, the first client's
        connect does it)."""
        if self.adapter.loop is None:
            self.adapter.bind()
        self.adapter._begin()

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop serving: stop the Redis bridge, close the adapters (queued updates are
        sent, for up to ``timeout`` seconds), and close the Redis store created for
        ``redis_url``. The wrapped app does this on the lifespan's shutdown."""
        if self._closed:
            return
        self._closed = True
        bridge, self.bridge = self.bridge, None
        if bridge is not None:
            await asyncio.to_thread(release_bridge, bridge)
        adapter = self.adapter
        if adapter.loop is not None and adapter._on_loop():
            await self._end_sessions()
        if adapter.loop is not None and adapter._on_loop():
            await adapter.aclose(timeout)
        else:
            await asyncio.to_thread(adapter.close, timeout)
        for other in self.adapters:
            await self._close_adapter(other, timeout)
        if self.redis_store is not None:
            self.redis_store.close()

    async def _end_sessions(self) -> None:
        """End every Engine.IO session: a pending long-poll gets its answer now (else
        the ASGI server would wait for it at shutdown, up to the ping interval), and a
        websocket closes."""
        for session in list(getattr(self.sio.eio, "sockets", {}).values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.close(wait=False), timeout=1)

    @staticmethod
    async def _close_adapter(adapter: Adapter, timeout: float) -> None:
        aclose = getattr(adapter, "aclose", None)
        if aclose is not None and getattr(adapter, "_on_loop", lambda: False)():
            await aclose(timeout)
        else:
            await asyncio.to_thread(adapter.close)

    def close(self, timeout: float = 10.0) -> None:
        """:meth:`aclose`, from a thread other than the event loop's.

        :raises UsageError: on the event loop's own thread, which it would block."""
        if self._closed:
            return
        adapter = getattr(self, "adapter", None)
        if adapter is not None and adapter.loop is not None and adapter._on_loop():
            raise UsageError(
                "TaskEvents.close() would block its own event loop: await tasks.aclose() instead"
            )
        self._closed = True
        bridge, self.bridge = self.bridge, None
        if bridge is not None:
            release_bridge(bridge)
        if adapter is not None:
            adapter.close(timeout)
        for other in self.adapters:
            other.close()
        if self.redis_store is not None:
            self.redis_store.close()

    # -- serving -------------------------------------------------------------------------

    def wrap(self, app: ASGIApp | None) -> ASGIApp:
        """An ASGI app that serves Socket.IO (at ``/socket.io/``), the REST endpoints and
        the dashboard, and hands every other request to ``app`` (FastAPI, Starlette, any
        ASGI app; None answers them 404). Its lifespan starts and stops the adapters
        around ``app``'s own."""

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            kind = scope.get("type")
            if kind == "lifespan":
                await self._lifespan(app, scope, receive, send)
                return
            if kind not in ("http", "websocket"):
                if app is not None:
                    await app(scope, receive, send)
                return
            if not self._host_allowed(scope):
                await self._refuse_host(scope, receive, send)
                return
            path = scope.get("path") or "/"
            root = scope.get("root_path") or ""
            if root and path.startswith(root):
                # mounted under a prefix (a mount(), the server's --root-path): the
                # scope's path has the prefix too, as ASGI servers and Starlette give it
                path = path[len(root) :] or "/"
            if path.startswith(self.socketio_path) or path == self.socketio_path.rstrip("/"):
                inner = scope if path == scope.get("path") else {**scope, "path": path}
                await self._engineio(inner, receive, send)
                return
            if kind == "http" and await self._serve_own(path, scope, send):
                return
            if app is not None:
                await app(scope, receive, send)
            elif kind == "http":
                await _respond(
                    send,
                    404,
                    f"Not found: {_shown(path)}\n".encode("utf-8", "replace"),
                    "text/plain; charset=utf-8",
                )
            else:
                await send({"type": "websocket.close", "code": 1000})

        asgi.tasks = self  # type: ignore[attr-defined]
        return asgi

    async def _lifespan(
        self, app: ASGIApp | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if app is None:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

        async def receive_around() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
            return message

        async def send_around(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.aclose()
            await send(message)

        await app(scope, receive_around, send_around)

    def _host_allowed(self, scope: Scope) -> bool:
        if self.trusted_hosts is None:
            return True
        host = _header(scope, b"host")
        return host is not None and host_allowed(host, self.trusted_hosts)

    async def _refuse_host(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = _header(scope, b"host") or ""
        shown = host if len(host) <= 100 else host[:100] + "..."
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _respond(
            send,
            400,
            f"Bad Request: Host {shown!r} is not allowed on this server. It is not in "
            "TaskEvents(trusted_hosts=...).\n".encode("utf-8", "replace"),
            "text/plain; charset=utf-8",
        )

    async def _serve_own(self, path: str, scope: Scope, send: Send) -> bool:
        """Answer a request for the REST endpoints or the dashboard; False if it is for
        neither. HEAD is answered as GET, without the body."""
        method = scope.get("method", "GET")
        if method == "HEAD":
            method = "GET"
            send = _without_body(send)
        if self.metrics is not None and path == self.metrics_path:
            await self._serve_metrics(method, scope, send)
            return True
        prefix = self.api_prefix
        if prefix is not None and (path == prefix or path.startswith(prefix + "/")):
            if method != "GET":
                await _json_error(
                    send,
                    405,
                    f"{method} is not allowed on {_shown(path)!r}; allowed: GET, HEAD",
                    [("Allow", "GET, HEAD")],
                    allowed=["GET", "HEAD"],
                )
                return True
            await self._api(path[len(prefix) :], scope, send)
            return True
        if self.dashboard and (path == self.dashboard_path or path.startswith(STATIC_PREFIX)):
            if method != "GET":
                await _respond(
                    send,
                    405,
                    b"Method Not Allowed\n",
                    "text/plain; charset=utf-8",
                    [("Allow", "GET, HEAD")],
                )
                return True
            if path == self.dashboard_path:
                page = self.dashboard_page(scope.get("root_path") or "")
                await _respond(send, 200, page, "text/html; charset=utf-8")
                return True
            item = self._statics.get(path[len(STATIC_PREFIX) :])
            if item is None:
                return False
            suffix = "." + item.name.rsplit(".", 1)[-1]
            await _respond(
                send,
                200,
                item.read_bytes(),
                _CONTENT_TYPES[suffix],
                [("Cache-Control", "no-cache")],
            )
            return True
        return False

    async def _serve_metrics(self, method: str, scope: Scope, send: Send) -> None:
        if method != "GET":
            await _respond(
                send,
                405,
                b"Method Not Allowed\n",
                "text/plain; charset=utf-8",
                [("Allow", "GET, HEAD")],
            )
            return
        accepted, _ = await self.identify(scope)
        if not accepted:
            await _respond(
                send,
                401,
                b"authentication required\n",
                "text/plain; charset=utf-8",
                [("WWW-Authenticate", "Bearer")],
            )
            return
        assert self.metrics is not None
        try:
            # In a thread: it reads the state store (Redis, maybe) and adapters' locks.
            # One scrape in a thread at a time: a burst waits here, on the loop, rather
            # than filling the executor the REST endpoints need.
            async with self._metrics_lock:
                body = await asyncio.to_thread(self.metrics.render)
        except Exception:
            logger.exception("taskevents.asgi: error rendering the metrics")
            await _respond(send, 500, b"internal server error\n", "text/plain; charset=utf-8")
            return
        await _respond(send, 200, body, METRICS_CONTENT_TYPE, [("Cache-Control", "no-store")])

    def dashboard_page(self, root: str = "") -> bytes:
        """The dashboard page's HTML, for the app served under ``root`` (its ASGI
        ``root_path``: the page's files, the REST endpoints and Socket.IO are under it
        too)."""
        page = self._pages.get(root)
        if page is None:
            settings: dict[str, Any] = {
                "namespace": self.namespace,
                "apiPrefix": None if self.api_prefix is None else root + self.api_prefix,
                "demo": self.demo,
            }
            if root:
                settings["socketioPath"] = root + self.socketio_path.rstrip("/")
            page = _dashboard_page(settings, root)
            if len(self._pages) < 16:  # root paths come from the server's set-up
                self._pages[root] = page
        return page

    # -- REST ----------------------------------------------------------------------------

    async def identify(self, scope: Scope) -> tuple[bool, Any]:
        """Authenticate a REST request: ``authenticate(environ, {"token": ...})`` with
        the ``Authorization: Bearer`` token, as a Socket.IO client would send it."""
        if self.authenticate is None:
            return True, None
        header = _header(scope, b"authorization") or ""
        scheme, _, token = header.partition(" ")
        auth = {"token": token.strip()} if scheme.lower() == "bearer" and token.strip() else None
        accepted, identity, _ = await self.adapter.authenticated(_environ(scope), auth)
        return accepted, identity

    async def _api(self, rest: str, scope: Scope, send: Send) -> None:
        accepted, identity = await self.identify(scope)
        if not accepted:
            await _json_error(send, 401, "authentication required")
            return
        adapter = self.adapter
        shared = bool(getattr(self.emitter.state, "shared", False))
        try:
            if rest in ("", "/"):
                budget = adapter.subject_budget
                key = budget_key(identity, client_address(_environ(scope)))
                # Before the first list is read, a shared store is asked how many there are.
                count = (
                    await asyncio.to_thread(adapter.listed_count)
                    if shared
                    else adapter.listed_count()
                )
                wait = budget.take(key, count)
                if wait > 0:
                    seconds = max(1, math.ceil(wait))
                    await _json_error(
                        send,
                        429,
                        f"too many requests: this list may be fetched for at most "
                        f"{budget.burst:,.0f} subjects at once, then {budget.rate:,.0f} a "
                        f"second; try again in {seconds} s",
                        [("Retry-After", str(seconds))],
                        retry_after=seconds,
                    )
                    return
                tasks = await adapter.all_tasks_async(identity)
                await _json(send, 200, {"tasks": tasks, "timestamp": timestamp()})
                return
            subject = rest[1:]
            if "/" in subject:
                await _json_error(send, 404, f"nothing here: GET {_shown(scope['path'])!r}")
                return
            state = self.emitter.state
            if shared:
                snapshot = await asyncio.to_thread(state.snapshot, subject)
            else:
                snapshot = state.snapshot(subject)
            if snapshot is None or not adapter.allowed(identity, subject):
                await _json_error(
                    send, 404, f"unknown config_name {subject!r}", config_name=subject
                )
                return
            await _json(send, 200, snapshot_payload(snapshot))
        except StoreUnavailable:
            # Not the exception's text: it names the server.
            await _json_error(
                send,
                503,
                "the state store is unavailable; try again shortly",
                [("Retry-After", "1")],
            )
        except Exception:
            logger.exception("taskevents.asgi: error answering %s", _shown(scope.get("path", "")))
            await _json_error(send, 500, "internal server error")

    def __repr__(self) -> str:
        return f"<TaskEvents {self.emitter!r} on {type(self.sio).__name__}>"
