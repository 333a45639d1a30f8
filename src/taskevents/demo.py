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

import json
import random
import re
import signal
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import flask
from werkzeug.serving import WSGIRequestHandler

from taskevents._checks import MAX_SUBJECT_LENGTH, is_valid_name
from taskevents._hosts import AllowedHosts, HostCheck, same_origin
from taskevents.adapters.socketio.protocol import BadRequest, describe
from taskevents.emitter import Emitter
from taskevents.events import TaskEvent
from taskevents.exceptions import SubjectBusy
from taskevents.flask import TaskEvents, json_error
from taskevents.flask.api import json_errors_under

__all__ = ["DEMO_CONFIGS", "SIMULATE_EVENTS", "SimulatedTaskManager", "create_app", "serve"]

#: The simulated configs, with the metadata the original kept for each (under its
#: original name, which the status object's ``aws_current_region`` is read from).
DEMO_CONFIGS: dict[str, dict[str, Any]] = {
    "aws01": {"aws_current_region": "eu-west-1"},
    "aws02": {"aws_current_region": "us-east-1"},
    "aws03": {"aws_current_region": "ap-southeast-2"},
}

STAGES: Sequence[tuple[int, str, str]] = (
    (10, "preparation", "Allocating a new Elastic IP..."),
    (30, "execution", "Stopping the instance..."),
    (55, "execution", "Changing IP address..."),
    (80, "verification", "Checking the new address answers..."),
    (100, "verification", "Releasing the old address..."),
)

#: The client events the original test server took, and the demo takes too.
SIMULATE_EVENTS = ("simulate_task_start", "simulate_task_complete")
#: What ``simulate_task_complete`` completes a task with: the original's result.
SIMULATED_RESULT = {"status": "success", "data": "Simulated task result"}
#: The largest request body the demo reads (its bodies are a few dozen bytes).
MAX_BODY = 16 * 1024

_TASK_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
_TASK_TYPE_RULE = "a string of lowercase letters, digits and _ (at most 64)"
_EXAMPLE_BODY = '{"task_type": "change_ip"}'

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment


class SimulatedTaskManager:
    """Stands in for the original TaskManager: runs fake tasks that only call the
    emitter, each in a background task of the Socket.IO server's async mode."""

    def __init__(self, emitter: Emitter, socketio: Any, *, task_seconds: float = 5.0) -> None:
        self.emitter = emitter
        self.socketio = socketio
        self.task_seconds = task_seconds
        self._held: dict[str, str] = {}  # config_name -> id of a task begin() started
        self._held_lock = threading.Lock()

    def start(
        self, config_name: str, task_type: str = "change_ip", *, fail: bool = False
    ) -> TaskEvent:
        """Start a task that runs by itself; raises :class:`~taskevents.SubjectBusy` if
        one is running."""
        started = self.emitter.started(config_name, task_type)
        self.socketio.start_background_task(self._run, config_name, started.task_id, fail)
        return started

    def begin(self, config_name: str, task_type: str = "change_ip") -> TaskEvent:
        """Start a task that runs until :meth:`end` ends it, as the original test
        server's ``simulate_task_start`` did; raises :class:`~taskevents.SubjectBusy`
        if one is running."""
        with self._held_lock:
            started = self.emitter.started(config_name, task_type)
            self._held[config_name] = started.task_id
        return started

    def end(self, config_name: str, *, success: bool = True) -> TaskEvent | None:
        """End the task :meth:`begin` started on ``config_name``: completed with
        :data:`SIMULATED_RESULT`, or failed. None if there is no such task."""
        with self._held_lock:
            task_id = self._held.pop(config_name, None)
        if task_id is None:
            return None
        if success:
            return self.emitter.completed(config_name, dict(SIMULATED_RESULT), task_id=task_id)
        return self.emitter.failed(
            config_name, RuntimeError("the simulated task failed"), task_id=task_id
        )

    def _run(self, config_name: str, task_id: str, fail: bool) -> None:
        pause = self.task_seconds / (len(STAGES) + 1)
        for percent, stage, message in STAGES:
            self.socketio.sleep(pause)
            self.emitter.progress(config_name, percent, stage, message, task_id=task_id)
            if fail and percent >= 55:
                self.emitter.failed(
                    config_name,
                    RuntimeError("the instance refused the new address"),
                    task_id=task_id,
                )
                return
        self.socketio.sleep(pause)
        address = f"203.0.113.{random.randint(1, 254)}"  # TEST-NET-3: documentation only
        self.emitter.completed(
            config_name, {"status": "success", "data": {"ip": address}}, task_id=task_id
        )


def create_app(
    *,
    task_seconds: float = 5.0,
    async_mode: str | None = "threading",
    log: bool = True,
    allowed_hosts: AllowedHosts | None = None,
    redis_url: str | None = None,
    redis_prefix: str | None = None,
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
        origin = request.headers.get("Origin")
        if origin is not None and not same_origin(
            origin, request.scheme, request.headers.get("Host", "")
        ):
            return json_error(
                403,
                f"cross-origin request from {origin!r} refused: tasks start only from "
                "this server's own pages, or from clients that send no Origin (curl)",
                origin=origin,
            )
        if config_name not in DEMO_CONFIGS:
            return json_error(404, f"unknown config_name {config_name!r}", config_name=config_name)
        body = _json_object_body()
        if isinstance(body, flask.Response):
            return body
        unknown = sorted(set(body) - {"task_type", "fail"})
        if unknown:
            return json_error(
                400,
                f"unknown field {unknown[0][:64]!r}; expected task_type and optionally fail",
                field=unknown[0][:64],
            )
        if "task_type" not in body:
            return json_error(
                400, f"missing field 'task_type'; e.g. {_EXAMPLE_BODY}", field="task_type"
            )
        task_type = body["task_type"]
        if not isinstance(task_type, str) or not _TASK_TYPE.match(task_type):
            return json_error(
                400,
                f'task_type must be {_TASK_TYPE_RULE}, e.g. "change_ip"',
                field="task_type",
            )
        fail = body.get("fail", False)
        if not isinstance(fail, bool):
            return json_error(400, "fail must be true or false", field="fail")
        try:
            started = manager.start(config_name, task_type, fail=fail)
        except SubjectBusy as busy:
            return json_error(
                409,
                f"{config_name} is busy with a {busy.running_task_type} task; "
                "try again when it has finished",
                config_name=config_name,
                task_id=busy.running_task_id,
            )
        payload = {
            "task_id": started.task_id,
            "config_name": config_name,
            "task_type": task_type,
            "status": "busy",
            "seq": started.seq,
        }
        return flask.jsonify(payload), 202

    adapter = state.socketio_adapter
    _register_simulation(socketio, manager, adapter, adapter.namespace)
    return app, socketio


def _json_object_body() -> dict[str, Any] | flask.Response:
    """The request's body, a JSON object; or the 4xx response that says what is wrong.

    A body without ``Content-Type`` is read as JSON (curl's ``--data-raw`` without
    ``-H``, scripts); one declared as something else (a form, text) is refused with
    415, since a browser can send those cross-site without asking first.
    """
    request = flask.request
    if request.mimetype and not request.is_json:
        return json_error(
            415,
            f"the body must be JSON, sent with Content-Type: application/json (got "
            f"{request.mimetype[:64]!r}); e.g. {_EXAMPLE_BODY}",
            expected="application/json",
        )
    raw = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH: a 413 (in JSON)
    if not raw.strip():
        return json_error(400, f"the body is empty; send a JSON object such as {_EXAMPLE_BODY}")
    try:
        body = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8/16/32
        return json_error(
            400, f"the body is not valid JSON; send a JSON object such as {_EXAMPLE_BODY}"
        )
    if not isinstance(body, dict):
        return json_error(
            400, f"the body must be a JSON object such as {_EXAMPLE_BODY}, got {describe(body)}"
        )
    return body


# -- the original test server's simulate events ---------------------------------------


def _simulate_fields(event: str, args: tuple[Any, ...], optional: str) -> dict[str, Any]:
    """A simulate event's payload: one object with ``config_name`` (a demo config) and,
    optionally, ``optional``; :class:`BadRequest` names what is wrong, as the protocol
    does."""
    if len(args) > 1:
        raise BadRequest(event, f"{event} takes one argument, an object; got {len(args)}")
    payload = args[0] if args else None
    if payload is None:
        raise BadRequest(event, f"{event} needs an object with 'config_name'", field="config_name")
    if not isinstance(payload, dict):
        raise BadRequest(
            event, f"{event} expects an object, got {describe(payload)}", expected="an object"
        )
    expected = f"config_name, {optional}"
    unknown = sorted(str(key) for key in payload if key not in ("config_name", optional))
    if unknown:
        raise BadRequest(
            event,
            f"{event}: unknown field {unknown[0][:64]!r}; expected {expected}",
            field=unknown[0][:64],
            expected=expected,
        )
    if "config_name" not in payload:
        raise BadRequest(event, f"{event}: missing field 'config_name'", field="config_name")
    name = payload["config_name"]
    if not isinstance(name, str) or not is_valid_name(name, MAX_SUBJECT_LENGTH):
        raise BadRequest(
            event,
            f"{event}: config_name must be one of {', '.join(DEMO_CONFIGS)}",
            field="config_name",
            expected="the name of a registered config",
        )
    if name not in DEMO_CONFIGS:
        raise BadRequest(
            event,
            f"{event}: unknown config_name {name!r}",
            field="config_name",
            expected="the name of a registered config",
            config_name=name,
        )
    return payload


def _simulate_start(manager: SimulatedTaskManager, args: tuple[Any, ...]) -> None:
    event = "simulate_task_start"
    payload = _simulate_fields(event, args, "task_type")
    name = payload["config_name"]
    task_type = payload.get("task_type", "change_ip")
    if not isinstance(task_type, str) or not _TASK_TYPE.match(task_type):
        raise BadRequest(
            event,
            f"{event}: task_type must be {_TASK_TYPE_RULE}",
            field="task_type",
            expected=_TASK_TYPE_RULE,
        )
    try:
        manager.begin(name, task_type)
    except SubjectBusy as busy:
        raise BadRequest(
            event,
            f"{event}: {name} is busy with a {busy.running_task_type} task",
            field="config_name",
            config_name=name,
        ) from None


def _simulate_complete(manager: SimulatedTaskManager, args: tuple[Any, ...]) -> None:
    event = "simulate_task_complete"
    payload = _simulate_fields(event, args, "result")
    name = payload["config_name"]
    result = payload.get("result", "success")
    if result not in ("success", "failed"):
        raise BadRequest(
            event,
            f'{event}: result must be "success" or "failed", got {describe(result)}',
            field="result",
            expected='"success" or "failed"',
        )
    if manager.end(name, success=result == "success") is None:
        raise BadRequest(
            event,
            f"{event}: no task started with simulate_task_start runs on {name}",
            field="config_name",
            config_name=name,
        )


def _register_simulation(
    socketio: Any, manager: SimulatedTaskManager, adapter: Any, namespace: str
) -> None:
    """The original test server's two extra client events, on the demo's SocketIO only.

    python-socketio runs the handler registered for an event's name and falls back to
    the adapter's catch-all (``*``, which answers unknown events) only when there is
    none, so these two win over it.
    """
    handlers: dict[str, Callable[[SimulatedTaskManager, tuple[Any, ...]], None]] = {
        "simulate_task_start": _simulate_start,
        "simulate_task_complete": _simulate_complete,
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
