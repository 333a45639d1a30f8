"""The REST endpoints (a blueprint) and the JSON errors under their prefix.

``GET <prefix>`` lists every subject the caller may watch (rate-limited by what that
costs: see :class:`SubjectBudget`), ``GET <prefix>/<subject>`` gives one; both read
through the Socket.IO adapter's public methods, so they answer exactly what a Socket.IO
client with the same identity would get. Every error under the prefix is JSON,
``{"error": {"message": ..., ...}}``, Flask's own included (an unknown path, a method
the path does not take, a body too large, a crash).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flask
from werkzeug.exceptions import (
    HTTPException,
    InternalServerError,
    MethodNotAllowed,
    default_exceptions,
)

from taskevents.adapters.socketio import SocketIOAdapter
from taskevents.adapters.socketio.protocol import (
    SubjectBudget,
    budget_key,
    snapshot_payload,
    timestamp,
)
from taskevents.exceptions import StoreUnavailable

__all__ = ["API_ERROR_CODES", "SubjectBudget", "api_blueprint", "json_error", "json_errors_under"]

#: ``identify() -> (accepted, identity)``: who makes the current request.
Identify = Callable[[], tuple[bool, Any]]


def _client_key(identity: Any) -> Any:
    return budget_key(identity, flask.request.remote_addr)


#: The HTTP errors Flask itself raises that are answered in JSON under the prefix.
API_ERROR_CODES = (400, 403, 404, 405, 413, 415, 429, 500)


def json_error(status: int, message: str, **details: Any) -> flask.Response:
    """A JSON error response: ``{"error": {"message": ..., **details}}``."""
    response = flask.jsonify({"error": {"message": message, **details}})
    response.status_code = status
    return response


def api_blueprint(identify: Identify, adapter: Callable[[], SocketIOAdapter]) -> flask.Blueprint:
    """The REST endpoints. ``identify`` authenticates the request; ``adapter`` returns
    the current app's Socket.IO adapter, whose ``allowed()`` and ``all_tasks()`` decide
    what the caller sees."""
    api = flask.Blueprint("taskevents_api", __name__)

    @api.get("")
    def all_tasks() -> flask.Response:
        ok, identity = identify()
        if not ok:
            return json_error(401, "authentication required")
        served = adapter()
        budget = served.subject_budget  # shared with the adapter's get_all_tasks
        wait = budget.take(_client_key(identity), served.listed_count())
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            response = json_error(
                429,
                f"too many requests: this list may be fetched for at most "
                f"{budget.burst:,.0f} subjects at once, then {budget.rate:,.0f} a second; "
                f"try again in {seconds} s",
                retry_after=seconds,
            )
            response.headers["Retry-After"] = str(seconds)
            return response
        # The Socket.IO all_tasks message is the status dict itself; here it is kept
        # under "tasks", with the time it was read.
        return flask.jsonify({"tasks": adapter().all_tasks(identity), "timestamp": timestamp()})

    @api.get("/<subject>")
    def one_task(subject: str) -> flask.Response:
        ok, identity = identify()
        if not ok:
            return json_error(401, "authentication required")
        served = adapter()
        snapshot = served.emitter.state.snapshot(subject)
        if snapshot is None or not served.allowed(identity, subject):
            return json_error(404, f"unknown config_name {subject!r}", config_name=subject)
        return flask.jsonify(snapshot_payload(snapshot))

    @api.errorhandler(StoreUnavailable)
    def unavailable(error: StoreUnavailable) -> flask.Response:
        # Not the exception's text: it names the server.
        response = json_error(503, "the state store is unavailable; try again shortly")
        response.headers["Retry-After"] = "1"
        return response

    return api


def _is_under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def _shown(path: str) -> str:
    return path if len(path) <= 200 else path[:199] + "…"


def _error_body(error: HTTPException) -> flask.Response:
    request = flask.request
    code = error.code or 500
    headers: dict[str, str] = {}
    details: dict[str, Any] = {}
    if isinstance(error, MethodNotAllowed):
        allowed = sorted(error.valid_methods or ())
        message = f"{request.method} is not allowed on {_shown(request.path)!r}"
        if allowed:
            message += f"; allowed: {', '.join(allowed)}"
            headers["Allow"] = ", ".join(allowed)
            details["allowed"] = allowed
    elif code == 404:
        message = f"nothing here: {request.method} {_shown(request.path)!r}"
    elif code == 413:
        limit = request.max_content_length
        message = "the request body is too large" + (
            f"; at most {limit} bytes" if limit is not None else ""
        )
    elif isinstance(error, InternalServerError):
        message = "internal server error"  # never the exception's text
    else:
        message = error.description or error.name
    response = json_error(code, message, **details)
    response.headers.update(headers)
    return response


def json_errors_under(app: flask.Flask, prefix: str) -> None:
    """Answer the HTTP errors of :data:`API_ERROR_CODES` in JSON for requests under
    ``prefix``. Elsewhere, the handler the app had for the code before (if any) still
    answers, or Flask's default page. A handler the app registers for one of these
    codes afterwards replaces this one, under the prefix too."""
    for code in API_ERROR_CODES:
        previous = app.error_handler_spec[None][code].get(default_exceptions[code])
        app.register_error_handler(code, _handler(prefix, previous))


def _handler(prefix: str, previous: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    def handle(error: HTTPException) -> Any:
        if _is_under(flask.request.path, prefix):
            return _error_body(error)
        if previous is not None:
            return previous(error)
        return error

    return handle
