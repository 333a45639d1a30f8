"""The webhook adapter from a Flask app's config (``TASKEVENTS_ADAPTERS``)."""

from __future__ import annotations

from pathlib import Path

import flask
import pytest
from flask_socketio import SocketIO

from taskevents.adapters.webhooks import WebhookAdapter
from taskevents.exceptions import ValidationError
from taskevents.flask import TaskEvents
from taskevents.webhooks import generate_secret, verify
from tests.support.http import Receiver


def test_configured_in_flask_it_delivers_the_apps_events(tmp_path: Path) -> None:
    secret = generate_secret()
    with Receiver() as receiver:
        app = flask.Flask("webhook-config-test")
        app.config.update(
            TASKEVENTS_SUBJECTS=["aws01"],
            TASKEVENTS_ADAPTERS={
                "webhooks": {
                    "endpoints": [{"url": receiver.url + "/tasks", "secret": secret}],
                    "outbox": str(tmp_path / "webhooks.sqlite3"),
                    "allow_hosts": ["127.0.0.1"],
                }
            },
        )
        extension = TaskEvents(app, SocketIO(app, async_mode="threading"))
        state = TaskEvents.state(app)
        try:
            (adapter,) = [a for a in state.adapters if isinstance(a, WebhookAdapter)]
            with app.app_context():
                started = extension.emitter.started("aws01", "change_ip")
                extension.emitter.completed("aws01")
            assert adapter.flush(10)
        finally:
            state.close()
        first = receiver.requests[0]
        assert first.id == started.id
        assert verify(first.body, first.headers, secret)["data"]["subject"] == "aws01"
        assert len(receiver.requests) == 2


def test_a_private_endpoint_in_the_config_is_refused_naming_it(tmp_path: Path) -> None:
    app = flask.Flask("webhook-config-test")
    app.config["TASKEVENTS_ADAPTERS"] = {
        "webhooks": {
            "endpoints": [{"url": "http://10.0.0.5/hook", "secret": generate_secret()}],
            "outbox": str(tmp_path / "webhooks.sqlite3"),
        }
    }
    with pytest.raises(ValidationError, match=r"endpoints\[0\]\.url"):
        TaskEvents(app, SocketIO(app, async_mode="threading"))
