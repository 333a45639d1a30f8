"""A web process: the dashboard, the REST endpoints and Socket.IO, on Redis.

It emits nothing itself. With ``TASKEVENTS_REDIS_URL`` set, the TaskEvents extension
keeps the subjects' state in Redis and starts a ``RedisBridge``, so that this process's
Socket.IO clients get the events that any process (``worker.py``) emits. Run as many as
you like, each on its own port::

    python examples/multiprocess/web.py --port 8001 --redis-url redis://127.0.0.1:6379/0

That serves with the development server (Werkzeug's). In production, serve
:func:`create_app` with gunicorn and gevent, one worker per process::

    TASKEVENTS_REDIS_URL=redis://127.0.0.1:6379/0 \\
        gunicorn -k gevent -w 1 -b 127.0.0.1:8001 --chdir examples/multiprocess 'web:create_app()'
"""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

import flask
from flask_socketio import SocketIO

from taskevents.flask import TaskEvents

DEFAULT_URL = "redis://127.0.0.1:6379/0"
SUBJECTS = {"aws01": {"region": "eu-west-1"}, "aws02": {"region": "us-east-1"}}


def create_app(
    redis_url: str | None = None,
    redis_prefix: str | None = None,
    *,
    async_mode: str | None = None,
) -> flask.Flask:
    """The app. ``redis_url`` and ``redis_prefix`` default to the environment's
    ``TASKEVENTS_REDIS_URL`` (else a local server) and ``TASKEVENTS_REDIS_PREFIX`` (else
    ``taskevents``); ``async_mode`` None lets Flask-SocketIO choose (gevent under
    gunicorn's gevent worker)."""
    app = flask.Flask(__name__)
    app.config.update(
        TASKEVENTS_REDIS_URL=redis_url or os.environ.get("TASKEVENTS_REDIS_URL", DEFAULT_URL),
        TASKEVENTS_REDIS_PREFIX=redis_prefix or os.environ.get("TASKEVENTS_REDIS_PREFIX"),
        # Registered in Redis by every web process alike: they show before any task ran.
        TASKEVENTS_SUBJECTS=SUBJECTS,
        TASKEVENTS_SOURCE="examples/multiprocess/web",
    )
    socketio = SocketIO(app, async_mode=async_mode)
    TaskEvents(app, socketio)
    app.add_url_rule("/", "index", app.view_functions["taskevents_dashboard.page"])
    return app


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl+C: the server returns, and we clean up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on (8001)")
    parser.add_argument("--redis-url", help=f"TASKEVENTS_REDIS_URL, else {DEFAULT_URL}")
    parser.add_argument("--redis-prefix", help="TASKEVENTS_REDIS_PREFIX, else taskevents")
    args = parser.parse_args(argv)

    app = create_app(args.redis_url, args.redis_prefix, async_mode="threading")
    state = TaskEvents.state(app)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"web: serving on http://{args.host}:{args.port}/", flush=True)
    try:
        state.socketio.run(app, host=args.host, port=args.port, allow_unsafe_werkzeug=True)
    except KeyboardInterrupt:
        pass
    finally:
        state.close()  # stops the bridge, closes the Redis connections
    print("web: stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
