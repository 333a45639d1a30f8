"""A process that keeps emitting to a shared :class:`RedisStateStore` through outages;
the fault tests run it beside the one under test.

python -m tests.redis.fault_process URL PREFIX STOP_FILE PAUSE STEPS SUBJECT...

It emits on each subject in turn, ``PAUSE`` seconds apart, until ``STOP_FILE`` exists,
then completes the tasks still running: per subject a task (started), ``STEPS`` progress
events, completed, and the next task (``STEPS`` 0: one task, progress until the end).
It never gives up on a fault: an emit that raises
:class:`~taskevents.redis.StoreUnavailable` is tried again (as a new emit) a little
later, and a task that the server no longer knows (its data was lost) is started again.
While a file named as ``STOP_FILE`` with ``.pause`` added exists, it emits nothing (and
says so once). One JSON line per attempt on stdout:

``{"ok": true, "subject", "seq", "id", "type"}``
    an emit that was recorded;
``{"ok": false, "error", "elapsed", "subject"}``
    an emit that raised StoreUnavailable after ``elapsed`` seconds;
``{"ok": false, "lost": true, "subject"}``
    an emit refused as the server does not know the task (NoRunningTask);
``{"ok": false, "paused": true}``
    pausing.

Timeouts and a client name can go in the URL's query, as for any store.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from taskevents import Emitter, NoRunningTask, TaskEvent
from taskevents.redis import RedisStateStore, StoreUnavailable

#: Seconds the process goes on trying to end its tasks once told to stop.
END_TIMEOUT = 30.0


def say(**line: object) -> None:
    print(json.dumps(line), flush=True)


def attempt(subject: str, emit: object) -> TaskEvent | None:
    """Run ``emit()``; print what came of it. None if it did not record."""
    began = time.monotonic()
    try:
        event: TaskEvent = emit()  # type: ignore[operator]
    except StoreUnavailable as exc:
        say(ok=False, error=str(exc), elapsed=time.monotonic() - began, subject=subject)
        time.sleep(0.05)
        return None
    except NoRunningTask:
        say(ok=False, lost=True, subject=subject)
        return None
    say(ok=True, subject=subject, seq=event.seq, id=event.id, type=event.type)
    return event


def still_running(store: RedisStateStore, subject: str) -> bool:
    """After a failed emit: whether the subject's task still runs. Not if the server lost
    it with its data, or if the failed emit was a completion recorded all the same."""
    try:
        return store.running_task(subject) is not None
    except StoreUnavailable:
        return True  # still away: as far as we know


def main(argv: list[str]) -> None:
    url, prefix, stop_file, pause = argv[0], argv[1], Path(argv[2]), float(argv[3])
    steps, subjects = int(argv[4]), argv[5:]
    with RedisStateStore(url, prefix=prefix, history_size=100_000) as store:
        emitter = Emitter(source="fault-process", state=store, exclusive=False)
        running = dict.fromkeys(subjects, False)
        progressed = dict.fromkeys(subjects, 0)
        n = 0
        pause_file, paused = Path(f"{stop_file}.pause"), False
        while not stop_file.exists():
            if pause_file.exists():
                if not paused:
                    say(ok=False, paused=True)
                paused = True
                time.sleep(0.01)
                continue
            paused = False
            subject = subjects[n % len(subjects)]
            n += 1
            if not running[subject]:
                task_id = f"{subject}-{n}"
                started = attempt(
                    subject, lambda s=subject, t=task_id: emitter.started(s, "fault", task_id=t)
                )
                running[subject] = started is not None
                progressed[subject] = 0
            elif steps and progressed[subject] >= steps:
                if attempt(subject, lambda s=subject, n=n: emitter.completed(s, {"n": n})):
                    running[subject] = False
                else:
                    running[subject] = still_running(store, subject)
            elif attempt(subject, lambda s=subject, n=n: emitter.progress(s, n % 101)) is not None:
                progressed[subject] += 1
            else:
                running[subject] = still_running(store, subject)
            time.sleep(pause)
        deadline = time.monotonic() + END_TIMEOUT
        for subject in subjects:
            while running[subject] and time.monotonic() < deadline:
                if attempt(subject, lambda s=subject: emitter.completed(s, {"n": n})) is not None:
                    running[subject] = False
                else:
                    running[subject] = still_running(store, subject)
        if any(running.values()):
            raise SystemExit(f"could not end the tasks of {running}")


if __name__ == "__main__":
    main(sys.argv[1:])
