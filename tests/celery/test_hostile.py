"""taskevents.celery with hostile input: what a task's caller controls (its arguments)
must not drive the worker's log or terminal. Eager mode, as ``test_instrument.py``."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery import Celery

from taskevents import Emitter
from taskevents.celery import instrument
from tests.celery.test_instrument import app, emitter  # noqa: F401 - the fixtures


def test_a_subject_callable_failing_on_hostile_arguments_cannot_forge_log_output(
    app: Celery,  # noqa: F811
    emitter: Emitter,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Defect: when the subject callable raises, the warning quotes the exception's
    message through ``safe_message`` (``_reporting.py``), which folds whitespace but
    keeps every other control character: an argument sent by whoever queues the task
    (``ValueError(f"unknown host {host}")``) puts ESC/BEL sequences into the worker's
    log, which drive the terminal of whoever tails it. Escape them (``printable``)."""

    def subject(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        raise ValueError(f"unknown host {kwargs['host']}")

    instrumentation = instrument(app, emitter, subject=subject)
    try:

        @app.task(name="lookup")  # type: ignore[untyped-decorator]
        def lookup(host: str) -> str:
            return "ok"

        with caplog.at_level(logging.WARNING, logger="taskevents"):
            assert lookup.delay(host="\x1b]0;owned\x07\x1b[2J\x08\x08").get() == "ok"
    finally:
        instrumentation.close()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "unknown host" in logged
    assert "\x1b" not in logged, logged
    assert "\x07" not in logged, logged
    assert "\x08" not in logged, logged
