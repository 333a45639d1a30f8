"""The demo server: the original system's standalone test server, grown up.

Simulated configs ``aws01``, ``aws02`` and ``aws03``; ``POST /api/tasks/<config_name>``
starts a simulated task that passes through several progress stages (and fails when
asked to); the dashboard at ``/`` and ``/websocket`` watches it all live.
Run it with ``taskevents demo``.

Against DNS rebinding, the app answers only the host names it is served on
(``taskevents._hosts.AllowedHosts``): any other ``Host`` gets a 400 on every path,
Socket.IO included. Against cross-site requests, the task endpoint refuses an
``Origin`` other than the app's own.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import flask

from taskevents._hosts import AllowedHosts, HostCheck, same_origin
from taskevents.emitter import Emitter
from taskevents.events import TaskEvent
from taskevents.exceptions import SubjectBusy
from taskevents.flask import TaskEvents, json_error

__all__ = ["DEMO_CONFIGS", "SimulatedTaskManager", "create_app"]

#: The simulated configs, with the metadata the original kept for each.
DEMO_CONFIGS: dict[str, dict[str, Any]] = {
    "aws01": {"region": "eu-west-1"},
    "aws02": {"region": "us-east-1"},
    "aws03": {"region": "ap-southeast-2"},
}

STAGES: Sequence[tuple[int, str, str]] = (
    (10, "preparation", "Allocating a new Elastic IP..."),
    (30, "execution", "Stopping the instance..."),
    (55, "execution", "Changing IP address..."),
    (80, "verification", "Checking the new address answers..."),
    (100, "verification", "Releasing the old address..."),
)

_TASK_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment


class SimulatedTaskManager:
    """Stands in for the original TaskManager: runs fake tasks that only call the
    emitter, each in a background task of the Socket.IO server's async mode."""

    def __init__(self, emitter: Emitter, socketio: Any, *, task_seconds: float = 5.0) -> None:
        self.emitter = emitter
        self.socketio = socketio
        self.task_seconds = task_seconds

    def start(
        self, config_name: str, task_type: str = "change_ip", *, fail: bool = False
    ) -> TaskEvent:
        """Start a task; raises :class:`~taskevents.SubjectBusy` if one is running."""
        started = self.emitter.started(config_name, task_type)
        self.socketio.start_background_task(self._run, config_name, started.task_id, fail)
        return started

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
) -> tuple[flask.Flask, Any]:
    """The demo app and its SocketIO, ready for ``socketio.run(app)``.

    :param allowed_hosts: the ``Host`` names answered (default: those of 127.0.0.1,
        ``AllowedHosts.serving("127.0.0.1")``); others get a 400 before reaching the
        app or the Socket.IO endpoint. A request without a ``Host`` header (HTTP/1.0;
        never a browser's) is let through.
    """
    from flask_socketio import SocketIO

    app = flask.Flask("taskevents.demo")
    app.config.update(
        TASKEVENTS_SUBJECTS=DEMO_CONFIGS,
        TASKEVENTS_DEMO=True,
        TASKEVENTS_ADAPTERS=["logging"] if log else [],
        TASKEVENTS_SOURCE="taskevents-demo",
    )
    socketio = SocketIO(app, async_mode=async_mode)
    extension = TaskEvents(app, socketio)
    manager = SimulatedTaskManager(
        extension.state(app).emitter, socketio, task_seconds=task_seconds
    )
    app.extensions["taskevents_demo"] = manager
    app.add_url_rule("/", "index", app.view_functions["taskevents_dashboard.page"])
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
        body = flask.request.get_json(silent=True)
        if not isinstance(body, dict):
            return json_error(
                400, 'the body must be a JSON object such as {"task_type": "change_ip"}'
            )
        unknown = sorted(set(body) - {"task_type", "fail"})
        if unknown:
            return json_error(
                400,
                f"unknown field {unknown[0]!r}; expected task_type and optionally fail",
                field=unknown[0],
            )
        task_type = body.get("task_type")
        if not isinstance(task_type, str) or not _TASK_TYPE.match(task_type):
            return json_error(
                400,
                "task_type must be a string of lowercase letters, digits and _ "
                '(at most 64), e.g. "change_ip"',
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

    return app, socketio
