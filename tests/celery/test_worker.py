"""A real Celery worker (prefork pool) on the Redis broker reports its tasks through the
Redis state store; a python-socketio client of a web process with the Flask extension
sees them live: started, progress and completed; failed; cancelled when revoked while
running."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from taskevents.redis import RedisStateStore
from tests.celery.conftest import Web, Worker, new_subject, until

LIFECYCLE_TIMEOUT = 30.0


def update(event: str, task_id: str) -> Callable[[Any], bool]:
    def matches(payload: Any) -> bool:
        found: bool = (
            payload["update"]["event"] == event and payload["update"]["task_id"] == task_id
        )
        return found

    return matches


def revoke_until_cancelled(client_app: Any, client: Any, task_id: str, worker: Worker) -> Any:
    """Revoke a running task (terminating it) until its cancellation arrives: Celery's
    broadcasts are not persistent, so a worker may miss one; revoking again is
    harmless, and a cancellation never reported still fails the test."""
    deadline = time.monotonic() + LIFECYCLE_TIMEOUT
    while True:
        client_app.control.revoke(task_id, terminate=True)
        try:
            return client.wait_for(
                "task_status_update", update("task_cancelled", task_id), timeout=5
            )
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no task_cancelled; the worker's log:\n{worker.log()}"
                ) from None


def wait_update(client: Any, event: str, task_id: str, worker: Worker) -> Any:
    """The next ``event`` update of ``task_id``; on a timeout, the worker's log says why."""
    try:
        return client.wait_for("task_status_update", update(event, task_id), LIFECYCLE_TIMEOUT)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the worker's log:\n{worker.log()}") from None


def events_of(client: Any, task_id: str) -> list[str]:
    return [u["update"]["event"] for u in client.updates() if u["update"]["task_id"] == task_id]


def test_a_task_reports_started_progress_and_completed_with_its_result(
    worker: Worker, client_app: Any, web: Callable[[list[str]], Web], store: RedisStateStore
) -> None:
    subject = new_subject()
    client = web([subject]).subscribe(subject)

    sent = client_app.send_task("tests.steps", kwargs={"config_name": subject, "count": 3})
    completed = wait_update(client, "task_completed", sent.id, worker)

    assert completed["config_name"] == subject
    assert completed["update"]["task_type"] == "tests.steps"
    assert completed["update"]["result"] == {"ip": "203.0.113.7", "steps": 3}
    updates = [u for u in client.updates() if u["update"]["task_id"] == sent.id]
    events = [u["update"]["event"] for u in updates]
    # Progress may be coalesced on the way to a client (latest wins); the rest may not.
    assert events[0] == "task_started"
    assert events[-1] == "task_completed"
    assert set(events[1:-1]) == {"task_progress"}
    assert updates[0]["update"]["task_type"] == "tests.steps"
    percents = [u["update"]["percent"] for u in updates[1:-1]]
    assert percents == sorted(percents)
    assert percents[-1] == 100
    seqs = [u["seq"] for u in updates]
    assert seqs == sorted(set(seqs))
    # The store has every event.
    history = store.history(subject, 0)
    assert history is not None
    assert [(e.type, e.task_id, e.task_type) for e in history] == [
        ("task_started", sent.id, "tests.steps"),
        *[("task_progress", sent.id, "tests.steps")] * 3,
        ("task_completed", sent.id, "tests.steps"),
    ]
    assert [e.data.get("message") for e in history[1:4]] == ["step 1", "step 2", "step 3"]
    assert history[0].source == "celery"


def test_a_task_that_raises_reports_failed_with_the_exception(
    worker: Worker, client_app: Any, web: Callable[[list[str]], Web]
) -> None:
    subject = new_subject()
    client = web([subject]).subscribe(subject)

    sent = client_app.send_task("tests.fails", args=[subject])  # the subject by position
    failed = wait_update(client, "task_failed", sent.id, worker)

    assert failed["update"]["error"] == {
        "type": "PermissionError",
        "message": f"{subject}: not allowed to change the IP",
    }
    assert failed["update"]["status"] == "idle"
    assert events_of(client, sent.id) == ["task_started", "task_progress", "task_failed"]


def test_a_task_revoked_while_running_reports_cancelled(
    worker: Worker, client_app: Any, web: Callable[[list[str]], Web]
) -> None:
    subject = new_subject()
    client = web([subject]).subscribe(subject)

    sent = client_app.send_task("tests.waits", kwargs={"config_name": subject, "seconds": 60})
    wait_update(client, "task_progress", sent.id, worker)
    cancelled = revoke_until_cancelled(client_app, client, sent.id, worker)

    assert cancelled["update"]["reason"] == "terminated"
    assert cancelled["update"]["status"] == "idle"
    assert cancelled["update"]["task_type"] == "tests.waits"
    events = events_of(client, sent.id)
    assert events[0] == "task_started"
    assert events[-1] == "task_cancelled"
    assert set(events[1:-1]) == {"task_progress"}


def test_a_task_that_calls_nothing_reports_started_and_completed(
    worker: Worker, client_app: Any, web: Callable[[list[str]], Web]
) -> None:
    subject = new_subject()
    client = web([subject]).subscribe(subject)

    sent = client_app.send_task("tests.quiet", kwargs={"config_name": subject})
    completed = wait_update(client, "task_completed", sent.id, worker)

    assert completed["update"]["result"] == [1, 2, 3]
    assert events_of(client, sent.id) == ["task_started", "task_completed"]


def test_a_result_that_is_not_json_completes_with_none(
    worker: Worker, client_app: Any, web: Callable[[list[str]], Web]
) -> None:
    subject = new_subject()
    client = web([subject]).subscribe(subject)

    sent = client_app.send_task("tests.odd_result", kwargs={"config_name": subject})
    completed = wait_update(client, "task_completed", sent.id, worker)

    assert completed["update"]["result"] is None
    assert "tests.odd_result completed with a result that is not reported" in worker.log()


def test_a_retry_does_not_end_the_task(
    worker: Worker, client_app: Any, web: Callable[[list[str]], Web]
) -> None:
    subject = new_subject()
    client = web([subject]).subscribe(subject)

    sent = client_app.send_task("tests.retries", kwargs={"config_name": subject})
    completed = wait_update(client, "task_completed", sent.id, worker)

    assert completed["update"]["result"] == "attempt 2"
    assert events_of(client, sent.id) == ["task_started", "task_progress", "task_completed"]
    retry = client.updates()[1]["update"]["progress"]
    assert retry["stage"] == "retry"
    assert retry["retries"] == 1
    assert "the API did not answer" in retry["message"]


def test_a_pool_process_that_dies_reports_failed_from_the_main_process(
    worker: Worker, client_app: Any, web: Callable[[list[str]], Web]
) -> None:
    subject = new_subject()
    client = web([subject]).subscribe(subject)

    sent = client_app.send_task("tests.dies", kwargs={"config_name": subject})
    failed = wait_update(client, "task_failed", sent.id, worker)

    assert failed["update"]["error"]["type"] == "WorkerLostError"
    assert failed["update"]["status"] == "idle"
    assert events_of(client, sent.id) == ["task_started", "task_progress", "task_failed"]


def test_a_hard_time_limit_reports_failed(
    worker: Worker, client_app: Any, web: Callable[[list[str]], Web]
) -> None:
    subject = new_subject()
    client = web([subject]).subscribe(subject)

    sent = client_app.send_task("tests.overruns", kwargs={"config_name": subject})
    failed = wait_update(client, "task_failed", sent.id, worker)

    assert failed["update"]["error"]["type"] == "TimeLimitExceeded"
    assert events_of(client, sent.id) == ["task_started", "task_progress", "task_failed"]


def test_a_task_that_expired_before_it_started_emits_nothing(
    worker: Worker, client_app: Any, web: Callable[[list[str]], Web], store: RedisStateStore
) -> None:
    subject = new_subject()
    client = web([subject]).subscribe(subject)

    expired = client_app.send_task(
        "tests.quiet", kwargs={"config_name": subject}, expires=datetime.now(timezone.utc)
    )
    after = client_app.send_task("tests.quiet", kwargs={"config_name": subject})
    wait_update(client, "task_completed", after.id, worker)

    # The worker takes the messages in order: the expired one was discarded first.
    assert until(lambda: f"Discarding revoked task: tests.quiet[{expired.id}]" in worker.log())
    assert {u["update"]["task_id"] for u in client.updates()} == {after.id}
    history = store.history(subject, 0)
    assert history is not None
    assert {event.task_id for event in history} == {after.id}
