"""The web process of the Redis benchmark (``benchmarks/redis_bench.py``): a Flask app
with ``flask_socketio.SocketIO(app, async_mode="gevent")`` and
``taskevents.flask.TaskEvents(app, socketio)``, served by gevent's pywsgi, as a
production web process runs. With ``--redis-url`` its emitter keeps the state in Redis
(``TASKEVENTS_REDIS_URL`` and ``TASKEVENTS_REDIS_PREFIX``) and the extension starts a
``RedisBridge``; without, the state is in memory.

``/bench/*`` HTTP endpoints let the orchestrator make this process's own emitter emit
(paced lifecycle events, from a greenlet) and read the adapter's counters.

It runs in a subprocess (:data:`LAUNCHER`): ``monkey.patch_all()`` comes before this
module (and everything it imports) is imported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from .redis_common import paced_lifecycle, raise_nofile
from .serving import gevent_nodelay_handler, in_background, parser_for, ping_info, start_watchdog

__all__ = ["LAUNCHER", "serve"]

#: What the web subprocess runs (``python -c LAUNCHER BENCHMARKS_DIR ARGS...``).
LAUNCHER = """\
from gevent import monkey
monkey.patch_all()
import sys
sys.path.insert(0, sys.argv[1])
from harness.redis_server import serve
raise SystemExit(serve(sys.argv[2:]))
"""


def serve(argv: Sequence[str] | None = None) -> int:
    """The web process (started by :class:`harness.redis_control.WebServer`)."""
    parser = parser_for("harness.redis_server")
    parser.add_argument("--subjects", required=True, help="comma-separated, registered")
    parser.add_argument("--redis-url", default=None, help="none: the state is in memory")
    parser.add_argument("--redis-prefix", default=None)
    args = parser.parse_args(argv)
    nofile = raise_nofile()

    import flask
    from flask_socketio import SocketIO

    from taskevents.flask import TaskEvents

    # The library's warnings (e.g. a bridge that missed events) go to the log file, which
    # the orchestrator reads at the end.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = flask.Flask("redis_bench")
    app.config.update(
        TASKEVENTS_SUBJECTS=[s for s in args.subjects.split(",") if s],
        TASKEVENTS_DASHBOARD=False,
        TASKEVENTS_SOURCE="benchmarks/redis_bench web",
    )
    if args.redis_url:
        app.config.update(
            TASKEVENTS_REDIS_URL=args.redis_url, TASKEVENTS_REDIS_PREFIX=args.redis_prefix
        )
    socketio = SocketIO(app, async_mode="gevent")
    TaskEvents(app, socketio)
    state = TaskEvents.state(app)
    adapter = state.socketio_adapter

    @app.get("/bench/ping")
    def ping() -> flask.Response:
        return flask.jsonify(
            {
                **ping_info(socketio, adapter),
                "store": type(state.emitter.state).__name__,
                "prefix": getattr(state.emitter.state, "prefix", None),
                "bridge": state.bridge is not None and state.bridge.running,
                "nofile": nofile,
                "tcp_nodelay": args.tcp_nodelay,
            }
        )

    @app.get("/bench/adapter")
    def adapter_stats() -> flask.Response:
        return flask.jsonify(
            stats=adapter.stats,
            clients=adapter.client_count,
            bridge=state.bridge is not None and state.bridge.running,
        )

    @app.post("/bench/run")
    def run() -> flask.Response:
        body = flask.request.get_json(force=True)
        subject, events, rate = str(body["subject"]), int(body["events"]), float(body["rate"])
        return flask.jsonify(
            in_background(
                socketio,
                lambda: paced_lifecycle(state.emitter, subject, events, rate, socketio.sleep),
                args.max_seconds,
            )
        )

    start_watchdog(socketio, args.parent, args.max_seconds)
    options: dict[str, Any] = {}
    if args.tcp_nodelay:
        options["handler_class"] = gevent_nodelay_handler()
    try:
        socketio.run(app, host="127.0.0.1", port=args.port, log_output=False, **options)
    finally:
        state.close()
    return 0
