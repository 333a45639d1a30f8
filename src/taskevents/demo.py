"""The demo server: the original system's standalone test server, grown up.

Simulated configs ``aws01``, ``aws02`` and ``aws03``; ``POST /api/tasks/<config_name>``
starts a simulated task that passes through several progress stages (and fails when
asked to); the dashboard at ``/`` and ``/websocket`` watches it all live. As the
original test server did, it also takes the Socket.IO events ``simulate_task_start``
and ``simulate_task_complete``, so the original's test page works against it unchanged.
Run it with ``taskevents demo``.

Against DNS rebinding, the app answers only the host names it is served on
(``taskevents._hosts.AllowedHosts``): any other ``Host`` gets a 400 on every path,
Socket.IO included. Against cross-site requests, the task endpoint refuses an
``Origin`` other than the app's own.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flask
from werkzeug.serving import WSGIRequestHandler

from taskevents._demo_common import (
    DEMO_CONFIGS,
    MAX_BODY,
    SIMULATE_EVENTS,
    SIMULATED_RESULT,  # noqa: F401 - still taskevents.demo.SIMULATED_RESULT
    STAGES,  # noqa: F401 - still taskevents.demo.STAGES
    HeldTasks,
    Refused,
    accepted,
    busy,
    check_config,
    check_content_type,
    check_origin,
    parse_body,
    simulate_complete,
    simulate_start,
    simulated_run,
    task_options,
)
from taskevents._hosts import AllowedHosts, HostCheck
from taskevents.adapters.socketio.protocol import BadRequest
from taskevents.emitter import Emitter
from taskevents.events import TaskEvent
from taskevents.exceptions import SubjectBusy
from taskevents.flask import TaskEvents, json_error
from taskevents.flask.api import json_errors_under

__all__ = ["DEMO_CONFIGS", "SIMULATE_EVENTS", "SimulatedTaskManager", "create_app", "serve"]

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment


class SimulatedTaskManager(HeldTasks):
    """Stands in for the original TaskManager: runs fake tasks that only call the
    emitter, each in a background task of the Socket.IO server's async mode."""

    def __init__(self, emitter: Emitter, socketio: Any, *, task_seconds: float = 5.0) -> None:
        super().__init__(emitter)
        self.socketio = socketio
        self.task_seconds = task_seconds

    def start(
        self, config_name: str, task_type: str = "change_ip", *, fail: bool = False
    ) -> TaskEvent:
        """Start a task that runs by itself; raises :class:`~taskevents.SubjectBusy` if
        one is running."""
        started = self.emitter.started(config_name, task_type)
        self.socketio.start_background_task(self._run, config_name, started.task_id, fail)
        return started

    def _run(self, config_name: str, task_id: str, fail: bool) -> None:
        for pause in simulated_run(self.emitter, config_name, task_id, fail, self.task_seconds):
            self.socketio.sleep(pause)


def create_app(
    *,
    task_seconds: float = 5.0,
    async_mode: str | None = "threading",
    log: bool = True,
    allowed_hosts: AllowedHosts | None = None,
    redis_url: str | None = None,
    redis_prefix: str | None = None,
    metrics: bool = False,
) -> tuple[flask.Flask, Any]:
    """The demo app and its SocketIO, ready for :func:`serve` (or ``socketio.run``).

    :param log: log every event, progress included, on the ``taskevents`` logger.
    :param allowed_hosts: the ``Host`` names answered (default: those of 127.0.0.1,
        ``AllowedHosts.serving("127.0.0.1")``); others get a 400 before reaching the
        app or the Socket.IO endpoint. A request without a ``Host`` header (HTTP/1.0;
        never a browser's) is let through.
    :param redis_url: keep the configs' state on this Redis server
        (``TASKEVENTS_REDIS_URL``): demos on the same URL and prefix, on any port,
        share subjects, tasks and streams. A task runs in the demo it was started on.
    :param metrics: serve Prometheus metrics at ``/metrics`` (``TASKEVENTS_METRICS``;
        needs ``taskevents[metrics]``).
    :param redis_prefix: their key prefix (``TASKEVENTS_REDIS_PREFIX``; default
        ``"taskevents"``).
    :raises ValidationError: a bad ``redis_url`` or ``redis_prefix``, naming its
        ``TASKEVENTS_*`` key.
    """
    from flask_socketio import SocketIO

    app = flask.Flask("taskevents.demo")
    app.config.update(
        TASKEVENTS_SUBJECTS=DEMO_CONFIGS,
        TASKEVENTS_DEMO=True,
        # Every event, progress too, is logged: the demo is for watching them.
        TASKEVENTS_ADAPTERS={"logging": {"levels": {"task_progress": "INFO"}}} if log else [],
        TASKEVENTS_SOURCE="taskevents-demo",
        TASKEVENTS_REDIS_URL=redis_url,
        TASKEVENTS_REDIS_PREFIX=redis_prefix,
        TASKEVENTS_METRICS=metrics,
        MAX_CONTENT_LENGTH=MAX_BODY,
    )
    socketio = SocketIO(app, async_mode=async_mode)
    extension = TaskEvents(app, socketio)
    state = extension.state(app)
    manager = SimulatedTaskManager(state.emitter, socketio, task_seconds=task_seconds)
    app.extensions["taskevents_demo"] = manager
    app.add_url_rule("/", "index", app.view_functions["taskevents_dashboard.page"])
    json_errors_under(app, "/api")
    hosts = AllowedHosts.serving("127.0.0.1") if allowed_hosts is None else allowed_hosts
    app.extensions["taskevents_demo_hosts"] = hosts

    def host_allowed(environ: WSGIEnvironment) -> bool:
        host = environ.get("HTTP_HOST")
        return host is None or hosts.allows(str(host))

    # Outermost, around Flask-SocketIO's middleware: /socket.io/ is checked too.
    app.wsgi_app = HostCheck(  # type: ignore[method-assign]
        app.wsgi_app,
        host_allowed,
        hint="To answer it, start taskevents demo with --allowed-host NAME.",
    )

    @app.post("/api/tasks/<config_name>")
    def start_task(config_name: str) -> tuple[flask.Response, int] | flask.Response:
        request = flask.request
        try:
            check_origin(
                request.headers.get("Origin"), request.scheme, request.headers.get("Host", "")
            )
            check_config(config_name)
            check_content_type(request.mimetype, request.is_json)
            raw = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH: a 413 (in JSON)
            task_type, fail = task_options(parse_body(raw))
            try:
                started = manager.start(config_name, task_type, fail=fail)
            except SubjectBusy as error:
                raise busy(config_name, error) from None
        except Refused as refused:
            return json_error(refused.status, refused.message, **refused.details)
        return flask.jsonify(accepted(started)), 202

    adapter = state.socketio_adapter
    _register_simulation(socketio, manager, adapter, adapter.namespace)
    return app, socketio


# -- the original test server's simulate events ---------------------------------------


def _register_simulation(
    socketio: Any, manager: SimulatedTaskManager, adapter: Any, namespace: str
) -> None:
    """The original test server's two extra client events, on the demo's SocketIO only.

    python-socketio runs the handler registered for an event's name and falls back to
    the adapter's catch-all (``*``, which answers unknown events) only when there is
    none, so these two win over it.
    """
    handlers: dict[str, Callable[[SimulatedTaskManager, tuple[Any, ...]], None]] = {
        "simulate_task_start": simulate_start,
        "simulate_task_complete": simulate_complete,
    }

    def bind(name: str) -> Callable[..., None]:
        run = handlers[name]

        def handler(*args: Any) -> None:
            sid = flask.request.sid  # type: ignore[attr-defined]
            # connection_status must stay the first event the client gets.
            adapter.greet(sid)
            try:
                run(manager, args)
            except BadRequest as problem:
                socketio.emit("error", problem.payload, to=sid, namespace=namespace)

        return handler

    for name in SIMULATE_EVENTS:
        socketio.on_event(name, bind(name), namespace=namespace)


# -- serving ----------------------------------------------------------------------------


class _RequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, minus a spurious error on every websocket close.

    When a websocket ends, python-engineio hands the socket back to Werkzeug by raising
    ``ConnectionError``, which Werkzeug takes for a dropped connection; it would then go
    on reading the socket for a next HTTP request, find the websocket's last frames
    there, and log each as ``code 400, message Bad request syntax``. A dropped
    connection has no next request: close it. Every other error is logged as before.
    """

    def connection_dropped(
        self, error: BaseException, environ: WSGIEnvironment | None = None
    ) -> None:
        self.close_connection = True
        super().connection_dropped(error, environ)


class _Stop(BaseException):
    """Raised in the main thread by SIGTERM or SIGINT, to leave ``serve_forever``."""


def serve(
    app: flask.Flask,
    socketio: Any,
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve the demo with the development server of the SocketIO's async mode until
    SIGTERM or SIGINT (Ctrl+C), then stop at once: the listening socket and every
    connection are closed, the adapters flushed, and the function returns.

    The development servers are what the demo is for; neither warns about it.

    :param ready: called once the port is open, before serving.
    :raises OSError: the address cannot be listened on.
    """
    if socketio.server.eio.async_mode == "gevent":
        _serve_gevent(app, host, port, ready)
    else:
        _serve_threading(app, host, port, ready)
    TaskEvents.state(app).close()


def _serve_threading(
    app: flask.Flask, host: str, port: int, ready: Callable[[], None] | None
) -> None:
    from werkzeug.serving import make_server

    server = make_server(host, port, app, threaded=True, request_handler=_RequestHandler)

    def stop(signum: int, frame: object) -> None:
        for name in (signal.SIGTERM, signal.SIGINT):
            signal.signal(name, signal.SIG_DFL)  # a second signal ends it outright
        raise _Stop

    previous = {name: signal.signal(name, stop) for name in (signal.SIGTERM, signal.SIGINT)}
    try:
        if ready is not None:
            ready()
        server.serve_forever()
    except _Stop:
        pass
    finally:
        server.server_close()  # connection threads are daemons: not waited for
        for name, handler in previous.items():
            signal.signal(name, handler)


def _serve_gevent(app: flask.Flask, host: str, port: int, ready: Callable[[], None] | None) -> None:
    import gevent
    from gevent import pywsgi

    class Handler(pywsgi.WSGIHandler):  # type: ignore[misc]
        # As _RequestHandler: once a websocket has ended, what is left on the socket
        # is its last frames, not a next request; don't read them as one.
        def handle_one_response(self) -> None:
            super().handle_one_response()
            if str(self.environ.get("HTTP_UPGRADE", "")).lower() == "websocket":
                self.close_connection = True

    server = pywsgi.WSGIServer((host, port), app, log=None, handler_class=Handler)
    server.init_socket()  # listen now: a busy port fails here
    handlers = [
        gevent.signal_handler(name, server.stop, timeout=0.1)
        for name in (signal.SIGTERM, signal.SIGINT)
    ]
    try:
        if ready is not None:
            ready()
        server.serve_forever()
    finally:
        for handler in handlers:
            handler.cancel()
