"""Event types of your own: a task streams log lines and announces its report.

Run it with ``python examples/event_types.py`` once taskevents is installed. It declares
``task_log`` and ``task_artifact``, runs one task that emits both between its progress
reports, and prints every event an adapter received, then what a client resuming from
the start would be replayed.
"""

from __future__ import annotations

import json

from taskevents import CallableAdapter, Emitter, TaskEvent, define_event_type

# Declare once, at import time, before adapters connect (those that take every type
# also get types declared later).
task_log = define_event_type("task_log")
task_artifact = define_event_type("task_artifact")


def export(emitter: Emitter, subject: str) -> None:
    """A stand-in for a job in an existing task manager."""
    with emitter.track(subject, "export") as task:
        emitter.emit(subject, "task_log", line="querying 3 tables", level="info")
        task.progress(50, stage="query")
        emitter.emit(subject, "task_log", line="table orders: 1,204 rows", level="info")
        emitter.emit(subject, "task_artifact", name="report.csv", size=48_213)
        task.result = {"rows": 1_204}


def main() -> int:
    emitter = Emitter(source="examples/event_types")
    received: list[TaskEvent] = []
    with CallableAdapter(received.append).connect(emitter):
        export(emitter, "export-42")
    for event in received:
        print(f"{event.seq} {event.type:15} {json.dumps(dict(event.data), sort_keys=True)}")
    replay = emitter.state.history("export-42", 0) or []
    print("a client resuming from seq 0 gets:", ", ".join(event.type for event in replay))
    snapshot = emitter.state.snapshot("export-42")
    assert snapshot is not None
    print("state:", snapshot.status, "last task", snapshot.last.outcome if snapshot.last else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
