"""The extension: :class:`TaskEvents` wires the Socket.IO adapter, the REST endpoints
(:mod:`.api`) and the dashboard (:mod:`.dashboard`) into an app, from its config, and
keeps what it set up per app in a :class:`TaskEventsState`."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import flask
from werkzeug.exceptions import SecurityError
from werkzeug.wsgi import get_host

from taskevents._bridges import acquire_bridge as _acquire_bridge
from taskevents._bridges import release_bridge as _release_bridge
from taskevents._hosts import HostCheck
from taskevents._optional import require
from taskevents._urls import describe_url
from taskevents._wiring import adapter_specs, load_named_adapter, redis_store, subjects_of
from taskevents.adapters import Adapter
from taskevents.adapters.socketio import (
    Authenticate,
    Authorize,
    SocketIOAdapter,
    resolve_identity,
)
from taskevents.emitter import Emitter
from taskevents.events import json_copy
from taskevents.exceptions import (
    MissingDependency,
    UsageError,
    ValidationError,
)
from taskevents.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from taskevents.metrics import enable as _enable_metrics

from .api import api_blueprint, json_errors_under
from .dashboard import dashboard_blueprint

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from taskevents.metrics import Metrics
    from taskevents.redis import RedisBridge, RedisStateStore

__all__ = ["DEFAULTS", "TaskEvents", "TaskEventsState"]

logger = logging.getLogger("taskevents")

DEFAULTS: Mapping[str, Any] = {
    "TASKEVENTS_SUBJECTS": (),
    "TASKEVENTS_NAMESPACE": "/",
    "TASKEVENTS_PROGRESS_INTERVAL": 0.1,
    "TASKEVENTS_MAX_SUBSCRIPTIONS": 100,
    "TASKEVENTS_MAX_BACKLOG": 1000,
    "TASKEVENTS_MAX_BACKLOG_BYTES": 16 << 20,
    "TASKEVENTS_API_PREFIX": "/api/tasks",
    "TASKEVENTS_DASHBOARD": True,
    "TASKEVENTS_DASHBOARD_PATH": "/websocket",
    "TASKEVENTS_ADAPTERS": (),
    "TASKEVENTS_CORS_ALLOWED_ORIGINS": None,
    "TASKEVENTS_ASYNC_MODE": None,
    "TASKEVENTS_SOURCE": None,
    "TASKEVENTS_DEMO": False,
    "TASKEVENTS_REDIS_URL": None,
    "TASKEVENTS_REDIS_PREFIX": None,
    "TASKEVENTS_METRICS": False,
    "TASKEVENTS_METRICS_PATH": "/metrics",
}


@dataclass
class TaskEventsState:
    """What the extension keeps per app, in ``app.extensions["taskevents"]``."""

    emitter: Emitter
    socketio: Any
    socketio_adapter: SocketIOAdapter
    adapters: list[Adapter] = field(default_factory=list)
    #: With ``TASKEVENTS_REDIS_URL``: the bridge that brings other processes' events in.
    bridge: RedisBridge | None = None
    #: The Redis store the extension created for ``TASKEVENTS_REDIS_URL`` (not one the
    #: app gave with its emitter), closed by :meth:`close`.
    redis_store: RedisStateStore | None = None
    #: With ``TASKEVENTS_METRICS``: the emitter's :class:`~taskevents.metrics.Metrics`,
    #: served at ``TASKEVENTS_METRICS_PATH``.
    metrics: Metrics | None = None

    def close(self) -> None:
        """Stop the Redis bridge, disconnect and flush every adapter, and close the Redis
        store the extension created (the emitter cannot emit afterwards)."""
        bridge, self.bridge = self.bridge, None
        if bridge is not None:
            _release_bridge(bridge)
        self.socketio_adapter.close()
        for adapter in self.adapters:
            adapter.close()
        if self.redis_store is not None:
            self.redis_store.close()


def _config_error(key: str, expected: str, got: object) -> ValidationError:
    return ValidationError(key, expected, got)


def _uses_message_queue(socketio: Any) -> bool:
    """Whether Flask-SocketIO (or python-socketio) was given a ``message_queue``: its
    client manager is then a ``PubSubManager`` (Redis, Kombu, Kafka, ...)."""
    if socketio is None:
        return False
    import socketio as python_socketio

    server = getattr(socketio, "server", None) or socketio
    return isinstance(getattr(server, "manager", None), python_socketio.PubSubManager)


def _redis_store(
    config: Mapping[str, Any], socketio: Any, given: Emitter | None
) -> RedisStateStore | None:
    """The Redis store that ``TASKEVENTS_REDIS_URL`` asks for, or None: a new one, or
    the given emitter's own (then None is returned and the caller bridges that)."""
    url = config["TASKEVENTS_REDIS_URL"]
    prefix = config["TASKEVENTS_REDIS_PREFIX"]
    if url is None:
        if prefix is not None:
            logger.warning("TASKEVENTS_REDIS_PREFIX ignored: TASKEVENTS_REDIS_URL is not set")
        return None
    if _uses_message_queue(socketio):
        raise _config_error(
            "TASKEVENTS_REDIS_URL",
            "no Flask-SocketIO message_queue with it (SocketIO(message_queue=...)): both "
            "carry every update to every process, so clients would get each twice; "
            "use one of them",
            describe_url(url) if isinstance(url, str) else url,
        )
    store, created = redis_store(
        given,
        url,
        prefix,
        url_key="TASKEVENTS_REDIS_URL",
        prefix_key="TASKEVENTS_REDIS_PREFIX",
    )
    return store if created else None


def _socketio_path(app: flask.Flask, socketio: Any) -> str:
    """Where the Engine.IO middleware in front of ``app`` serves (``"/socket.io/"``)."""
    layer: Any = app.wsgi_app
    for _ in range(20):  # down the chain of middlewares, to Flask-SocketIO's
        path = getattr(layer, "engineio_path", None)
        if isinstance(path, str):
            return path
        layer = getattr(layer, "app", None) or getattr(layer, "wsgi_app", None)
        if layer is None:
            break
    path = getattr(getattr(socketio, "sockio_mw", None), "engineio_path", None)
    return path if isinstance(path, str) else "/socket.io/"


def _trusted_by(app: flask.Flask) -> Callable[[WSGIEnvironment], bool]:
    """``allows(environ)``: Flask's ``TRUSTED_HOSTS`` check, as Flask makes it."""

    def allows(environ: WSGIEnvironment) -> bool:
        trusted = app.config.get("TRUSTED_HOSTS")
        if trusted is None:
            return True
        try:
            get_host(environ, trusted)
        except SecurityError:
            return False
        return True

    return allows


class TaskEvents:
    """The Flask extension.

    :param app: the app, or None to call :meth:`init_app` later (app factories).
    :param socketio: the app's Flask-SocketIO ``SocketIO``; None creates one (with CORS
        limited to the serving origin unless ``TASKEVENTS_CORS_ALLOWED_ORIGINS`` says
        otherwise).
    :param emitter: the emitter to serve. None creates one: with ``app`` given, one
        that :attr:`emitter` returns anywhere; with :meth:`init_app` (app factories),
        one per app, which :attr:`emitter` returns inside that app's context. With
        ``TASKEVENTS_REDIS_URL`` set, a created emitter keeps its state in a
        :class:`~taskevents.redis.RedisStateStore` on that URL (key prefix
        ``TASKEVENTS_REDIS_PREFIX``, default ``"taskevents"``); an emitter given must
        then already have a ``RedisStateStore`` (else :meth:`init_app` raises
        :class:`~taskevents.ValidationError` naming ``TASKEVENTS_REDIS_URL``), which
        is used as it is: its own URL and prefix win, and a ``TASKEVENTS_REDIS_PREFIX``
        other than its prefix is refused. Either way the extension starts a
        :class:`~taskevents.redis.RedisBridge` on the store, so that the app's
        Socket.IO clients get every process's events (one per store: apps that serve
        one emitter share it), and :meth:`TaskEventsState.close` stops it once no app
        uses it. (An emitter given with a Redis store but
        without ``TASKEVENTS_REDIS_URL`` gets no bridge.)
    :param authenticate: ``authenticate(environ, auth) -> identity``, run inside the
        app's request context on Socket.IO connect (``auth`` is what the client sent)
        and on REST calls (``auth`` is ``{"token": ...}`` from an ``Authorization:
        Bearer`` header, else None); returning None or False, or raising, refuses.
        Default: everyone.
    :param authorize: ``authorize(identity, subject) -> bool``. Default: everything.
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        socketio: Any = None,
        *,
        emitter: Emitter | None = None,
        authenticate: Authenticate | None = None,
        authorize: Authorize | None = None,
    ) -> None:
        for name, hook in (("authenticate", authenticate), ("authorize", authorize)):
            if hook is not None and not callable(hook):
                raise ValidationError(name, "a callable or None", hook)
        self._emitter = emitter
        self.authenticate = authenticate
        self.authorize = authorize
        if app is not None:
            self.init_app(app, socketio)
            if emitter is None:
                # One app: one emitter, reachable as ``extension.emitter`` anywhere.
                self._emitter = self.state(app).emitter

    def init_app(self, app: flask.Flask, socketio: Any = None) -> None:
        """Set the extension up for ``app``.

        A ``socketio`` given must already be set up with ``app`` (``SocketIO(app)``,
        or its ``init_app(app)`` first): the extension wraps ``app.wsgi_app`` around
        Flask-SocketIO's middleware, so that Flask's ``TRUSTED_HOSTS`` (read on every
        request) guards the Socket.IO endpoint too.

        :raises ValidationError: a ``TASKEVENTS_*`` setting is wrong (the message names
            it); nothing is left connected or registered. ``TASKEVENTS_REDIS_URL``
            together with a Flask-SocketIO ``message_queue`` is refused too: both would
            carry every update to every process, and clients would get each twice.
        :raises UsageError: the extension is already set up for ``app``.
        """
        if "taskevents" in app.extensions:
            raise UsageError(
                "TaskEvents is already set up for this app; use that extension, or "
                "TaskEvents.state(app) for what it set up"
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        config = app.config
        for key in config:
            if key.startswith("TASKEVENTS_") and key not in DEFAULTS:
                close = difflib.get_close_matches(key, DEFAULTS, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                logger.warning("unknown configuration key %s ignored%s", key, hint)
        serve_metrics = config["TASKEVENTS_METRICS"]
        if not isinstance(serve_metrics, bool):
            raise _config_error("TASKEVENTS_METRICS", "True or False", serve_metrics)
        if serve_metrics:
            require("prometheus_client", extra="metrics", needed_by="TASKEVENTS_METRICS")
        for key, needed in (
            ("TASKEVENTS_DASHBOARD_PATH", bool(config["TASKEVENTS_DASHBOARD"])),
            ("TASKEVENTS_API_PREFIX", False),
            ("TASKEVENTS_METRICS_PATH", serve_metrics),
        ):
            path = config[key]
            if (path is not None or needed) and (
                not isinstance(path, str) or not path.startswith("/")
            ):
                raise _config_error(key, "a URL path starting with '/'", path)
        specs = adapter_specs(config["TASKEVENTS_ADAPTERS"], "TASKEVENTS_ADAPTERS")
        subjects = subjects_of(config["TASKEVENTS_SUBJECTS"], "TASKEVENTS_SUBJECTS")
        given = self._emitter  # the app's, or the one made for this extension's first app
        redis_store = _redis_store(config, socketio, given)
        try:
            emitter = self._emitter or Emitter(
                source=config["TASKEVENTS_SOURCE"] or app.import_name, state=redis_store
            )
        except BaseException:
            if redis_store is not None:
                redis_store.close()
            raise
        bridged: object = redis_store
        if given is not None and config["TASKEVENTS_REDIS_URL"] is not None:
            bridged = given.state  # a RedisStateStore: _redis_store checked it
        if socketio is None:
            try:
                from flask_socketio import SocketIO
            except ImportError as exc:  # pragma: no cover - installed with the extra
                raise MissingDependency("flask-socketio", "socketio", "TaskEvents") from exc

            socketio = SocketIO(
                app,
                async_mode=config["TASKEVENTS_ASYNC_MODE"],
                cors_allowed_origins=config["TASKEVENTS_CORS_ALLOWED_ORIGINS"],
            )
        authenticate = self._authenticate_in(app) if self.authenticate else None
        authorize = self._authorize_in(app) if self.authorize else None
        try:
            adapter = SocketIOAdapter(
                socketio,
                emitter,
                namespace=config["TASKEVENTS_NAMESPACE"],
                progress_interval=config["TASKEVENTS_PROGRESS_INTERVAL"],
                max_subscriptions=config["TASKEVENTS_MAX_SUBSCRIPTIONS"],
                max_backlog=config["TASKEVENTS_MAX_BACKLOG"],
                max_backlog_bytes=config["TASKEVENTS_MAX_BACKLOG_BYTES"],
                authenticate=authenticate,
                authorize=authorize,
            )
        except ValidationError as exc:
            if redis_store is not None:
                redis_store.close()
            if exc.field in ("server", "emitter"):
                raise
            key = f"TASKEVENTS_{exc.field.upper()}"
            raise _config_error(key, exc.expected, config.get(key)) from exc
        except BaseException:
            if redis_store is not None:
                redis_store.close()
            raise
        state = TaskEventsState(emitter, socketio, adapter, redis_store=redis_store)
        try:
            for name, options in specs:
                state.adapters.append(load_named_adapter(name, options, "TASKEVENTS_ADAPTERS"))
            prefix = config["TASKEVENTS_API_PREFIX"]
            if prefix:
                api = api_blueprint(self._identity, lambda: self.state().socketio_adapter)
                app.register_blueprint(api, url_prefix=prefix)
                json_errors_under(app, prefix)
            if config["TASKEVENTS_DASHBOARD"]:
                app.register_blueprint(dashboard_blueprint(config["TASKEVENTS_DASHBOARD_PATH"]))
            if serve_metrics:
                app.add_url_rule(
                    config["TASKEVENTS_METRICS_PATH"],
                    endpoint="taskevents_metrics",
                    view_func=self._metrics_view,
                    methods=["GET"],  # and HEAD, which Flask adds
                )
            for subject, metadata in subjects.items():
                try:
                    emitter.register(subject, **json_copy(metadata, "metadata"))
                except ValidationError as exc:
                    if exc.field == "subject":
                        raise _config_error("TASKEVENTS_SUBJECTS", exc.expected, subject) from exc
                    key = f"TASKEVENTS_SUBJECTS[{subject!r}]{exc.field[len('metadata') :]}"
                    raise _config_error(key, exc.expected, exc.got) from exc
        except BaseException:
            state.close()  # leave nothing half set up behind
            raise
        adapter.connect(emitter)
        for other in state.adapters:
            other.connect(emitter)
        if serve_metrics:
            state.metrics = _enable_metrics(emitter)
            state.metrics.watch(adapter, "socketio")
            for (name, _), other in zip(specs, state.adapters, strict=True):
                state.metrics.watch(other, name)
        if bridged is not None:
            from taskevents.redis import RedisStateStore

            assert isinstance(bridged, RedisStateStore)
            state.bridge = _acquire_bridge(bridged)
        # Flask checks TRUSTED_HOSTS on its routes only; Flask-SocketIO's middleware
        # answers /socket.io/ before Flask sees the request, so check it out here.
        app.wsgi_app = HostCheck(  # type: ignore[method-assign]
            app.wsgi_app,
            _trusted_by(app),
            prefix=_socketio_path(app, socketio),
            hint="It is not in the app's TRUSTED_HOSTS.",
        )
        app.extensions["taskevents"] = state

    # -- access ------------------------------------------------------------------------

    @staticmethod
    def state(app: flask.Flask | None = None) -> TaskEventsState:
        """The extension's state for ``app`` (default: the current app)."""
        app = app or flask.current_app
        try:
            state = app.extensions["taskevents"]
        except KeyError:
            raise UsageError("TaskEvents.init_app() has not been called for this app") from None
        assert isinstance(state, TaskEventsState)
        return state

    @property
    def emitter(self) -> Emitter:
        """The emitter: the one given, or the current app's."""
        return self._emitter or self.state().emitter

    # -- auth ----------------------------------------------------------------------------

    def _authenticate_in(self, app: flask.Flask) -> Authenticate:
        hook = self.authenticate
        assert hook is not None

        def authenticate(environ: Mapping[str, Any], auth: Any) -> Any:
            with app.request_context(dict(environ)):
                return hook(environ, auth)

        return authenticate

    def _authorize_in(self, app: flask.Flask) -> Authorize:
        hook = self.authorize
        assert hook is not None

        def authorize(identity: Any, subject: str) -> bool:
            if flask.has_app_context():
                return hook(identity, subject)
            with app.app_context():
                return hook(identity, subject)

        return authorize

    def _metrics_view(self) -> flask.Response:
        """``TASKEVENTS_METRICS_PATH``: the metrics in the Prometheus text format, to
        callers the ``authenticate`` hook accepts (a Bearer token), as the REST API."""
        accepted, _ = self._identity()
        if not accepted:
            return flask.Response(
                "authentication required\n",
                401,
                content_type="text/plain; charset=utf-8",
                headers={"WWW-Authenticate": "Bearer"},
            )
        metrics = self.state().metrics
        assert metrics is not None
        response = flask.Response(metrics.render(), content_type=METRICS_CONTENT_TYPE)
        response.headers["Cache-Control"] = "no-store"
        return response

    def _identity(self) -> tuple[bool, Any]:
        """Authenticate a REST call. ``auth`` is ``{"token": ...}`` from an
        ``Authorization: Bearer ...`` header, as a Socket.IO client would send it."""
        if self.authenticate is None:
            return True, None
        header = flask.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        auth = {"token": token.strip()} if scheme.lower() == "bearer" and token.strip() else None
        try:
            accepted, identity, _ = resolve_identity(self.authenticate(flask.request.environ, auth))
        except Exception as exc:
            self.state().socketio_adapter._report_hook(exc, "in the authenticate hook")
            return False, None
        return accepted, identity
