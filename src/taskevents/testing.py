"""Helpers for testing code that emits task events."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from .adapters.base import CallableAdapter
from .events import TaskEvent

__all__ = ["capture_events"]


@contextmanager
def capture_events(
    emitter: object | None = None,
    *,
    types: Iterable[str] | None = None,
    subjects: Iterable[str] | None = None,
) -> Iterator[list[TaskEvent]]:
    """Record every event sent while the block runs, in the order sent::

        with capture_events() as events:
            run_my_task()
        assert [e.type for e in events] == ["task_started", "task_completed"]

    :param emitter: only this emitter's events (default: every emitter's).
    :param types: only these event types.
    :param subjects: only these subjects.
    """
    events: list[TaskEvent] = []
    adapter = CallableAdapter(events.append, types=types, subjects=subjects)
    adapter.connect(emitter)
    try:
        yield events
    finally:
        adapter.close()
