"""TaskMaster on taskevents: change the public IP of EC2 instances, watched live.

The original TaskMaster app, rebuilt as a user migrating to taskevents would write it.
Run it from the repository's root, against moto's simulated AWS::

    python examples/taskmaster/app.py --simulate-aws --port 5000

or against your AWS account (the instances of ``--configs FILE``)::

    python examples/taskmaster/app.py --configs my-configs.json --port 5000

then open http://127.0.0.1:5000/websocket and start a task::

    curl -X POST -H 'Content-Type: application/json' -d '{"task_type": "change_ip"}' \\
        http://127.0.0.1:5000/api/tasks/aws01

The TaskManager (``taskmanager.py``) runs the tasks and reports to a taskevents
``Emitter``; the Flask extension serves what it reports: Socket.IO (the original's
protocol, extended), ``GET /api/tasks[/<config_name>]`` and the dashboard. This module
adds the one endpoint the extension does not have, ``POST /api/tasks/<config_name>``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script, Python puts this folder on sys.path; its parent makes the
    # taskmaster package importable (as the tests import it).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flask
from flask.typing import ResponseReturnValue
from flask_socketio import SocketIO

from taskevents import SubjectBusy
from taskevents.flask import TaskEvents, json_error
from taskmaster.aws import AwsConfig, ConfigError, SimulatedAws, aws_client, load_configs
from taskmaster.taskmanager import ClientFactory, TaskManager

__all__ = ["create_app", "main"]

log = logging.getLogger("taskmaster")

DEFAULT_CONFIGS = Path(__file__).resolve().parent / "configs.json"
#: The largest request body read (a task request is a few dozen bytes).
MAX_BODY = 16 * 1024
EXAMPLE_BODY = '{"task_type": "change_ip"}'


class Refused(Exception):
    """A request to start a task, refused: answered ``{"error": {"message": ...,
    **details}}`` with ``status``."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def create_app(
    configs: dict[str, AwsConfig],
    client_factory: ClientFactory,
    *,
    trusted_hosts: list[str] | None = None,
) -> flask.Flask:
    """The app: the TaskEvents extension, a TaskManager (in ``app.extensions["taskmaster"]``)
    and ``POST /api/tasks/<config_name>``.

    :param client_factory: gives the EC2 client for a config (real AWS or simulated).
    :param trusted_hosts: the host names the app answers (Flask's ``TRUSTED_HOSTS``,
        which the extension applies to Socket.IO too), against DNS rebinding.
    """
    app = flask.Flask(__name__)
    app.config.update(
        # The configs, with the metadata the original showed for each.
        TASKEVENTS_SUBJECTS={
            name: {"aws_current_region": config.region, "instance_id": config.instance_id}
            for name, config in configs.items()
        },
        # change_ip reports a handful of stages: hold none back (the default, 0.1 s,
        # sends only the latest of the progress reported within it).
        TASKEVENTS_PROGRESS_INTERVAL=0,
        # Every event on the console, progress included.
        TASKEVENTS_ADAPTERS={"logging": {"levels": {"task_progress": "INFO"}}},
        TASKEVENTS_SOURCE="examples/taskmaster",
        TRUSTED_HOSTS=trusted_hosts,
        MAX_CONTENT_LENGTH=MAX_BODY,
    )
    # CORS: only the serving origin (Flask-SocketIO's default), unlike the original's "*".
    socketio = SocketIO(app, async_mode="threading")
    tasks = TaskEvents(app, socketio)
    manager = TaskManager(tasks.emitter, configs, client_factory, socketio.start_background_task)
    app.extensions["taskmaster"] = manager

    @app.get("/")
    def index() -> ResponseReturnValue:
        return flask.redirect("/websocket")

    @app.post("/api/tasks/<config_name>")
    def start_task(config_name: str) -> tuple[flask.Response, int]:
        """Start a task: 202 with its id, or 403, 404, 415, 400, 409 (all JSON)."""
        check_origin(flask.request)
        if config_name not in configs:
            raise Refused(404, f"unknown config_name {config_name!r}", config_name=config_name)
        task_type = read_task_type(flask.request, manager.tasks)
        try:
            started = manager.start(config_name, task_type)
        except SubjectBusy as busy:
            raise Refused(
                409,
                f"{config_name} is busy with a {busy.running_task_type} task; "
                "try again when it has finished",
                config_name=config_name,
                task_id=busy.running_task_id,
            ) from None
        accepted = {
            "task_id": started.task_id,
            "config_name": config_name,
            "task_type": task_type,
            "status": "busy",
            "seq": started.seq,
        }
        return flask.jsonify(accepted), 202

    @app.errorhandler(Refused)
    def refused(error: Refused) -> flask.Response:
        return json_error(error.status, error.message, **error.details)

    return app


def check_origin(request: flask.Request) -> None:
    """403 for a request from another site's page. Browsers send ``Origin`` with every
    POST; curl and scripts send none, and are let through."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise Refused(
            403,
            f"cross-origin request from {origin!r} refused: tasks start only from this "
            "server's own pages, or from clients that send no Origin (curl)",
            origin=origin,
        )


def read_task_type(request: flask.Request, task_types: dict[str, Any]) -> str:
    """The ``task_type`` of the request's JSON body, one of ``task_types``.

    A body sent as a form or as text is refused (415): pages of other sites can send
    those without asking the browser first. A body without ``Content-Type`` (``curl -H
    'Content-Type:' --data-raw ...``) is read as JSON.
    """
    if request.mimetype and not request.is_json:
        raise Refused(
            415,
            f"the body must be JSON, sent with Content-Type: application/json; e.g. {EXAMPLE_BODY}",
            expected="application/json",
        )
    body = request.get_json(force=True, silent=True)  # None: empty, or not JSON
    if not isinstance(body, dict):
        raise Refused(400, f"the body must be a JSON object such as {EXAMPLE_BODY}")
    unknown = sorted(set(body) - {"task_type"})
    if unknown:
        raise Refused(400, f"unknown field {unknown[0][:64]!r}", field=unknown[0][:64])
    if "task_type" not in body:
        raise Refused(400, f"missing field 'task_type'; e.g. {EXAMPLE_BODY}", field="task_type")
    task_type = body["task_type"]
    if not isinstance(task_type, str) or task_type not in task_types:
        raise Refused(400, f"task_type must be one of: {', '.join(task_types)}", field="task_type")
    return task_type


# -- running it ---------------------------------------------------------------------------

#: Listen addresses that mean "every interface".
ALL_INTERFACES = ("0.0.0.0", "::", "")


def trusted_hosts_for(host: str, allowed: list[str]) -> list[str]:
    """The host names to answer: those of ``host``, and the ``--allowed-host`` ones."""
    if host in ("127.0.0.1", "localhost"):
        return ["127.0.0.1", "localhost", *allowed]
    if host in ALL_INTERFACES:
        return allowed
    return [host, *allowed]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl+C: the server returns, and we clean up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (5000)")
    parser.add_argument(
        "--configs", default=str(DEFAULT_CONFIGS), help="the configs file (configs.json here)"
    )
    parser.add_argument(
        "--simulate-aws",
        action="store_true",
        help="run on moto's simulated AWS, in this process, instead of your account",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this host name (repeatable); with --host 0.0.0.0, "
        "the names clients use",
    )
    args = parser.parse_args(argv)
    if args.host in ALL_INTERFACES and not args.allowed_host:
        parser.error(f"--host {args.host!r} needs --allowed-host NAME: the names clients use")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # The HTTP servers' access logs (this app's, and moto's, which would log every AWS
    # call): warnings only. The events above say what happens.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        configs = load_configs(args.configs)
    except ConfigError as error:
        parser.error(str(error))

    with contextlib.ExitStack() as cleanup:
        client_factory: ClientFactory = aws_client
        if args.simulate_aws:
            aws = cleanup.enter_context(SimulatedAws())
            log.info("simulated AWS (moto) at %s", aws.endpoint_url)
            configs = aws.create_instances(configs)
            client_factory = aws.client
        app = create_app(
            configs, client_factory, trusted_hosts=trusted_hosts_for(args.host, args.allowed_host)
        )
        state = TaskEvents.state(app)
        manager: TaskManager = app.extensions["taskmaster"]
        cleanup.callback(state.close)  # last in, first out: before moto stops
        cleanup.callback(manager.wait, 60)  # let running tasks end: no address half moved

        signal.signal(signal.SIGTERM, _interrupt)
        log.info("serving on http://%s:%d/websocket", args.host, args.port)
        with contextlib.suppress(KeyboardInterrupt):
            # Werkzeug's development server, as in the original (see the README for
            # production).
            state.socketio.run(app, host=args.host, port=args.port, allow_unsafe_werkzeug=True)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
