"""The dashboard: one page (a blueprint) that watches subjects over Socket.IO.

Its files are in this package's ``static/`` and ``templates/`` folders, and are served
from ``/taskevents/static/``.
"""

from __future__ import annotations

import flask

__all__ = ["dashboard_blueprint"]


def dashboard_blueprint(path: str) -> flask.Blueprint:
    """The dashboard page at ``path``; its settings come from the current app's config
    (``TASKEVENTS_NAMESPACE``, ``TASKEVENTS_API_PREFIX``, ``TASKEVENTS_DEMO``)."""
    dashboard = flask.Blueprint(
        "taskevents_dashboard",
        __name__,
        static_folder="static",
        static_url_path="/taskevents/static",
        template_folder="templates",
    )

    @dashboard.get(path)
    def page() -> str:
        config = flask.current_app.config
        settings = {
            "namespace": config["TASKEVENTS_NAMESPACE"],
            "apiPrefix": config["TASKEVENTS_API_PREFIX"],
            "demo": bool(config["TASKEVENTS_DEMO"]),
        }
        return flask.render_template("taskevents/dashboard.html", settings=settings)

    return dashboard
