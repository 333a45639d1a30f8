"""The Celery app and its tasks; taskevents reports each task's start, progress and
outcome. Run a worker from the repository's root::

    celery --workdir examples -A celery_app.tasks worker --loglevel=INFO

Settings, from the environment (``web.py`` reads the same): ``TASKEVENTS_REDIS_URL``
(the state store; default ``redis://127.0.0.1:6379/0``), ``TASKEVENTS_REDIS_PREFIX``
(default ``demo-celery``), ``CELERY_BROKER_URL`` (default: the state store's server).
Celery has no type hints, hence the ``type: ignore`` on its decorator for mypy --strict.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

import taskevents.celery

DEFAULT_URL = "redis://127.0.0.1:6379/0"
# What taskevents.celery.instrument() reads when given no emitter.
os.environ.setdefault("TASKEVENTS_REDIS_URL", DEFAULT_URL)
os.environ.setdefault("TASKEVENTS_REDIS_PREFIX", "demo-celery")
PREFIX = os.environ["TASKEVENTS_REDIS_PREFIX"]

app = Celery(
    "celery_app",
    broker=os.environ.get("CELERY_BROKER_URL") or os.environ["TASKEVENTS_REDIS_URL"],
)
app.conf.update(
    # The broker's keys under the deployment's prefix too: one prefix, one deployment.
    broker_transport_options={"global_keyprefix": f"{PREFIX}:celery:"},
    broker_connection_retry_on_startup=True,
    # No result backend: results reach the browsers as task events.
    task_ignore_result=True,
    # A worker process takes one task at a time, so a long one holds up no other.
    worker_prefetch_multiplier=1,
)

# Every task of the app reports on the subject named by its config_name argument.
taskevents.celery.instrument(app, subject="config_name")

STEPS = [
    (10, "preparation", "Allocating a new Elastic IP..."),
    (50, "execution", "Changing IP address..."),
    (90, "verification", "Checking the new address answers..."),
]


@app.task(name="change_ip")  # type: ignore[untyped-decorator]
def change_ip(config_name: str, pause: float = 1.0) -> dict[str, Any]:
    """Give the config's instance a new public IP (simulated): three steps, a result."""
    for percent, stage, message in STEPS:
        time.sleep(pause)
        taskevents.celery.progress(percent, stage=stage, message=message)
    time.sleep(pause)
    return {"status": "success", "data": {"ip": "203.0.113.7"}}


@app.task(name="release_ip")  # type: ignore[untyped-decorator]
def release_ip(config_name: str, pause: float = 1.0) -> None:
    """Release the config's Elastic IP: it has none, so the task fails."""
    taskevents.celery.progress(30, stage="lookup", message="Looking the address up...")
    time.sleep(pause)
    raise LookupError(f"{config_name} has no Elastic IP to release")


@app.task(name="backup")  # type: ignore[untyped-decorator]
def backup(config_name: str, pause: float = 1.0) -> dict[str, Any]:
    """Back the config's volume up, 1 % every ``pause`` seconds: one to revoke."""
    for percent in range(1, 101):
        time.sleep(pause)
        taskevents.celery.progress(percent, stage="copy", message=f"{percent}% copied")
    return {"snapshot": f"snap-{config_name}"}


#: What web.py may start, by name.
TASKS = {"change_ip": change_ip, "release_ip": release_ip, "backup": backup}
