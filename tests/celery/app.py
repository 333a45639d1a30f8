"""The Celery app that the tests' worker runs: ``celery -A tests.celery.app worker``.

The worker's environment names the broker (``CELERY_BROKER_URL``) and the state store
(``TASKEVENTS_REDIS_URL``, ``TASKEVENTS_REDIS_PREFIX``); every broker key goes under the
test session's prefix, so that nothing is shared with another worker on the server.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from celery import Celery

import taskevents.celery
from tests.celery.broker import configure

PREFIX = os.environ.get("TASKEVENTS_REDIS_PREFIX", "taskevents")

app = Celery("tests.celery.app", broker=os.environ.get("CELERY_BROKER_URL"))
configure(app, PREFIX)
taskevents.celery.instrument(app, subject="config_name")


@app.task(name="tests.steps")  # type: ignore[untyped-decorator]
def steps(config_name: str, count: int = 3) -> dict[str, Any]:
    """Reports ``count`` steps, then returns a result."""
    for step in range(1, count + 1):
        taskevents.celery.progress(100 * step // count, stage="execution", message=f"step {step}")
    return {"ip": "203.0.113.7", "steps": count}


@app.task(name="tests.fails")  # type: ignore[untyped-decorator]
def fails(config_name: str) -> None:
    """Reports one step, then raises."""
    taskevents.celery.progress(10, stage="lookup")
    raise PermissionError(f"{config_name}: not allowed to change the IP")


@app.task(name="tests.waits")  # type: ignore[untyped-decorator]
def waits(config_name: str, seconds: float = 60.0) -> str:
    """Reports progress every tenth of a second until ``seconds`` pass (or revoked)."""
    deadline = time.monotonic() + seconds
    ticks = 0
    while time.monotonic() < deadline:
        ticks += 1
        taskevents.celery.progress(stage="waiting", ticks=ticks)
        time.sleep(0.1)
    return "waited"


@app.task(name="tests.quiet")  # type: ignore[untyped-decorator]
def quiet(config_name: str) -> list[int]:
    """Calls nothing of taskevents."""
    return [1, 2, 3]


@app.task(name="tests.odd_result")  # type: ignore[untyped-decorator]
def odd_result(config_name: str) -> set[int]:
    """Returns a set, which is not JSON (there is no result backend to refuse it)."""
    return {1, 2}


@app.task(name="tests.retries", bind=True, max_retries=2)  # type: ignore[untyped-decorator]
def retries(self: Any, config_name: str) -> str:
    """Retries once, then succeeds."""
    if self.request.retries == 0:
        raise self.retry(countdown=0.1, exc=ConnectionError("the API did not answer"))
    return f"attempt {self.request.retries + 1}"


@app.task(name="tests.dies")  # type: ignore[untyped-decorator]
def dies(config_name: str) -> None:
    """Kills its own pool process, as the out-of-memory killer would."""
    taskevents.celery.progress(10, stage="allocating")
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="tests.overruns", time_limit=1)  # type: ignore[untyped-decorator]
def overruns(config_name: str) -> None:
    """Runs past its hard time limit."""
    taskevents.celery.progress(10, stage="slow")
    time.sleep(30)
