"""The web process: the dashboard, the REST endpoints and Socket.IO (the TaskEvents
extension, on the Redis state store), and two endpoints that start and revoke Celery
tasks. Run it from the repository's root::

    python examples/celery_app/web.py --port 8001

then start a task with ``curl -X POST -H 'Content-Type: application/json' -d
'{"task": "change_ip"}' http://127.0.0.1:8001/api/jobs/aws01`` and watch it at
http://127.0.0.1:8001/. The Celery worker runs the task, and its events reach this
process through Redis.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script, Python puts this folder on sys.path; its parent makes the
    # celery_app package importable (as the worker imports it).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flask
from flask_socketio import SocketIO

from celery_app.tasks import TASKS
from celery_app.tasks import app as celery
from taskevents.flask import TaskEvents, json_error

SUBJECTS = {"aws01": {"region": "eu-west-1"}, "aws02": {"region": "us-east-1"}, "aws03": {}}
#: Celery's task ids.
TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def create_app(*, async_mode: str | None = None) -> flask.Flask:
    """The app, on ``TASKEVENTS_REDIS_URL`` and ``TASKEVENTS_REDIS_PREFIX`` (set by
    ``celery_app.tasks`` when missing)."""
    app = flask.Flask(__name__)
    app.config.update(
        TASKEVENTS_REDIS_URL=os.environ["TASKEVENTS_REDIS_URL"],
        TASKEVENTS_REDIS_PREFIX=os.environ["TASKEVENTS_REDIS_PREFIX"],
        TASKEVENTS_SUBJECTS=SUBJECTS,
        # The tasks report a handful of steps: hold none back.
        TASKEVENTS_PROGRESS_INTERVAL=0,
        TASKEVENTS_SOURCE="examples/celery_app/web",
        MAX_CONTENT_LENGTH=16 * 1024,
    )
    TaskEvents(app, SocketIO(app, async_mode=async_mode))
    app.add_url_rule("/", "index", app.view_functions["taskevents_dashboard.page"])

    @app.post("/api/jobs/<config_name>")
    def start(config_name: str) -> Any:
        """``{"task": "change_ip" | "release_ip" | "backup", "pause": seconds}``: 202
        with the Celery task id."""
        body = flask.request.get_json(silent=True)  # JSON only: no form posted elsewhere
        if config_name not in SUBJECTS:
            return json_error(404, f"unknown config_name {config_name!r}")
        if not isinstance(body, dict) or body.get("task") not in TASKS:
            return json_error(400, f"expected a JSON body {{'task': one of {sorted(TASKS)}}}")
        pause = body.get("pause", 1.0)
        if not isinstance(pause, (int, float)) or not (0 <= pause <= 10) or math.isnan(pause):
            return json_error(400, "pause: expected a number of seconds from 0 to 10")
        sent = TASKS[body["task"]].delay(config_name, pause=pause)
        return {"task_id": sent.id, "task": body["task"], "config_name": config_name}, 202

    @app.post("/api/jobs/<task_id>/revoke")
    def revoke(task_id: str) -> Any:
        """Revoke a task, and stop it if it runs: 202."""
        if not TASK_ID.fullmatch(task_id):
            return json_error(404, "expected a Celery task id")
        celery.control.revoke(task_id, terminate=True)
        return {"task_id": task_id, "revoked": True}, 202

    return app


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl+C: the server returns, and we clean up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on (8001)")
    args = parser.parse_args(argv)

    app = create_app(async_mode="threading")
    state = TaskEvents.state(app)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"web: serving on http://{args.host}:{args.port}/", flush=True)
    try:
        state.socketio.run(app, host=args.host, port=args.port, allow_unsafe_werkzeug=True)
    except KeyboardInterrupt:
        pass
    finally:
        state.close()
    print("web: stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
