"""The Flask extension: Socket.IO adapter, REST endpoints and dashboard, wired from config.

.. code-block:: python

    from flask import Flask
    from flask_socketio import SocketIO
    from taskevents.flask import TaskEvents

    app = Flask(__name__)
    socketio = SocketIO(app)
    tasks = TaskEvents(app, socketio)
    tasks.emitter.register("aws01")          # then, in the task manager:
    tasks.emitter.started("aws01", "change_ip")

Works with app factories (``TaskEvents()`` then ``init_app(app, socketio)``) and with
several apps; each app's state lives in ``app.extensions["taskevents"]``.

Configuration keys (all optional):

=================================== ==============================================
``TASKEVENTS_SUBJECTS``             subjects to register: a list of names, or a
                                    mapping of name to metadata
``TASKEVENTS_NAMESPACE``            Socket.IO namespace (``"/"``)
``TASKEVENTS_PROGRESS_INTERVAL``    seconds between progress updates per subject
                                    (``0.1``)
``TASKEVENTS_MAX_SUBSCRIPTIONS``    subjects one client may watch at once (``100``)
``TASKEVENTS_MAX_BACKLOG``          packets that may wait for one client before it
                                    is dropped as not reading (``1000``)
``TASKEVENTS_MAX_BACKLOG_BYTES``    ...and bytes (``16 MiB``)
``TASKEVENTS_API_PREFIX``           REST endpoints' prefix (``"/api/tasks"``); None
                                    turns them off
``TASKEVENTS_DASHBOARD``            serve the dashboard (``True``)
``TASKEVENTS_DASHBOARD_PATH``       where (``"/websocket"``, the original's path)
``TASKEVENTS_ADAPTERS``             more adapters by name: ``["logging"]`` or
                                    ``{"logging": {"logger": "myapp.tasks"}}``
``TASKEVENTS_CORS_ALLOWED_ORIGINS`` only when the extension creates the SocketIO:
                                    the origins allowed; it replaces the
                                    same-origin default, so list the serving
                                    origin too
``TASKEVENTS_ASYNC_MODE``           only when the extension creates the SocketIO
``TASKEVENTS_SOURCE``               the emitter's source (the app's import name)
``TASKEVENTS_DEMO``                 show the dashboard's "run a task" buttons
``TASKEVENTS_REDIS_URL``            keep subject state on this Redis server and
                                    serve every process's events (None: in memory)
``TASKEVENTS_REDIS_PREFIX``         the Redis key prefix (``"taskevents"``)
``TASKEVENTS_METRICS``              serve Prometheus metrics (``False``; needs
                                    ``taskevents[metrics]``)
``TASKEVENTS_METRICS_PATH``         where (``"/metrics"``)
=================================== ==============================================

Flask's own ``TRUSTED_HOSTS`` is honoured on the Socket.IO endpoint too: Flask refuses
a request for another host on its routes, and the extension wraps ``app.wsgi_app``
(outside Flask-SocketIO's middleware) so that ``/socket.io/`` refuses it as well, with
the same rules, read on every request. Set it against DNS rebinding.

The package: :mod:`~taskevents.flask.extension` (the :class:`TaskEvents` extension and
its per-app state), :mod:`~taskevents.flask.api` (the REST blueprint and JSON errors)
and :mod:`~taskevents.flask.dashboard` (the dashboard blueprint).
"""

from __future__ import annotations

from taskevents.exceptions import MissingDependency

try:
    import flask  # noqa: F401
    import werkzeug  # noqa: F401
except ImportError as _missing:  # pragma: no cover - the socketio extra is installed in tests
    raise MissingDependency(_missing.name or "flask", "socketio", "taskevents.flask") from _missing

from .api import json_error
from .extension import TaskEvents, TaskEventsState

__all__ = ["TaskEvents", "TaskEventsState", "json_error"]
