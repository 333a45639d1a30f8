"""Processes with a WebhookAdapter on a shared Redis prefix, for
``test_webhooks_across.py``.

python -m tests.redis.webhook_process web URL PREFIX PORT OUTBOX RECEIVER SECRET
python -m tests.redis.webhook_process worker URL PREFIX OUTBOX RECEIVER SECRET COUNT

``web`` serves a Flask app with ``TASKEVENTS_REDIS_URL`` and the ``webhooks`` adapter in
``TASKEVENTS_ADAPTERS`` (endpoints ``RECEIVER/a`` and ``RECEIVER/b``, outbox ``OUTBOX``),
plus two routes of its own: ``POST /emit/SUBJECT`` runs a task with the app's emitter
and answers its events' ids; ``GET /seen`` answers the ids of every event that reached
this process (a ``remote=True`` adapter: its own and, through the bridge, the others').
SIGTERM stops it, closing the extension (which flushes the webhooks).

``worker`` emits ``COUNT`` tasks (started, progress, completed) on two subjects with a
WebhookAdapter of its own on the same endpoints, prints each event as a JSON line,
then flushes the adapter.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any

from taskevents import CallableAdapter, Emitter, TaskEvent
from taskevents.adapters.webhooks import Endpoint, WebhookAdapter
from taskevents.redis import RedisStateStore

#: Webhook options for the tests: 127.0.0.1 allowed, quick retries and polling.
OPTIONS: dict[str, Any] = {
    "allow_hosts": ["127.0.0.1"],
    "retry_schedule": [0.0, 0.1, 0.2, 0.5],
    "jitter": 0.0,
    "poll_interval": 0.1,
}


def endpoints(receiver: str, secret: str) -> list[dict[str, Any]]:
    return [{"url": f"{receiver}/a", "secret": secret}, {"url": f"{receiver}/b", "secret": secret}]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def web(url: str, prefix: str, port: int, outbox: str, receiver: str, secret: str) -> None:
    import flask
    from flask_socketio import SocketIO

    from taskevents.flask import TaskEvents

    app = flask.Flask("webhook-web")
    app.config.update(
        TASKEVENTS_REDIS_URL=url,
        TASKEVENTS_REDIS_PREFIX=prefix,
        TASKEVENTS_SOURCE=f"web-{port}",
        TASKEVENTS_ADAPTERS={
            "webhooks": {"endpoints": endpoints(receiver, secret), "outbox": outbox, **OPTIONS}
        },
    )
    tasks = TaskEvents(app, SocketIO(app, async_mode="threading"))
    state = TaskEvents.state(app)
    seen: list[str] = []
    lock = threading.Lock()

    def record(event: TaskEvent) -> None:
        with lock:
            seen.append(event.id)

    recorder = CallableAdapter(record, remote=True).connect(tasks.emitter)

    @app.post("/emit/<subject>")
    def emit(subject: str) -> Any:
        emitter = tasks.emitter
        events = [emitter.started(subject, "change_ip"), emitter.progress(subject, 50)]
        events.append(emitter.completed(subject, {"port": port}))
        return {"events": [event.to_dict() for event in events]}

    @app.get("/seen")
    def show_seen() -> Any:
        with lock:
            return {"ids": list(seen)}

    signal.signal(signal.SIGTERM, _interrupt)
    print(f"web: serving on {port}", flush=True)
    try:
        state.socketio.run(app, host="127.0.0.1", port=port, allow_unsafe_werkzeug=True)
    except KeyboardInterrupt:
        pass
    finally:
        recorder.disconnect()
        state.close()  # stops the bridge, flushes and closes the webhook adapter
    print("web: stopped", flush=True)


def worker(url: str, prefix: str, outbox: str, receiver: str, secret: str, count: int) -> None:
    with RedisStateStore(url, prefix=prefix) as store:
        emitter = Emitter(source="webhook-worker", state=store)
        hooks = WebhookAdapter(
            [Endpoint(**one) for one in endpoints(receiver, secret)], outbox=outbox, **OPTIONS
        ).connect(emitter)
        try:
            for n in range(count):
                subject = f"worker-{n % 2}"
                events = [emitter.started(subject, "change_ip"), emitter.progress(subject, 50)]
                events.append(emitter.completed(subject, {"n": n}))
                for event in events:
                    print(json.dumps(event.to_dict()), flush=True)
            if not hooks.flush(30):
                raise SystemExit("the webhooks were not all delivered within 30 s")
        finally:
            hooks.close()


def main(argv: list[str]) -> None:
    mode, rest = argv[0], argv[1:]
    if mode == "web":
        web(rest[0], rest[1], int(rest[2]), rest[3], rest[4], rest[5])
    elif mode == "worker":
        worker(rest[0], rest[1], rest[2], rest[3], rest[4], int(rest[5]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
