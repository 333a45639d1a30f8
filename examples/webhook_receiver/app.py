"""A webhook receiver: a Flask app that verifies the events a WebhookAdapter sends.

Run it with the secret the sender signs with, then point a ``WebhookAdapter`` at
``http://127.0.0.1:8001/hooks`` (see README.md next to this file)::

    TASKEVENTS_WEBHOOK_SECRET=whsec_... python examples/webhook_receiver/app.py --port 8001

It prints one line per verified event; requests that fail verification get a 401.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import flask

from taskevents import ValidationError
from taskevents.webhooks import webhook_view

SECRET_VARIABLE = "TASKEVENTS_WEBHOOK_SECRET"


def create_app(secret: str) -> flask.Flask:
    """The receiving app: ``POST /hooks`` takes Standard Webhooks signed with ``secret``."""
    app = flask.Flask(__name__)

    @app.post("/hooks")
    @webhook_view(secret)
    def hooks(payload: Any) -> tuple[str, int]:
        # The adapter's "standard" body: {"type": ..., "timestamp": ..., "data": <the event>}
        event = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(event, dict):
            return "expected the standard body, {type, timestamp, data}", 422
        print(
            f"received {payload.get('type')} for {event.get('subject')}: "
            f"task {event.get('task_id')} ({event.get('task_type')}), "
            f"webhook-id {flask.request.headers['webhook-id']}",
            flush=True,
        )
        return "", 204

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8001, help="port on 127.0.0.1 (8001)")
    args = parser.parse_args(argv)
    secret = os.environ.get(SECRET_VARIABLE)
    if not secret:
        print(
            f"set {SECRET_VARIABLE} to the secret the sender signs with; make one with\n"
            "  python -c 'from taskevents.webhooks import generate_secret; "
            "print(generate_secret())'",
            file=sys.stderr,
        )
        return 2
    try:
        app = create_app(secret)
    except ValidationError as exc:  # the message describes the secret without showing it
        print(f"{SECRET_VARIABLE}: {exc}", file=sys.stderr)
        return 2
    app.run(host="127.0.0.1", port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
