"""A process that emits to a shared :class:`RedisStateStore`; the tests run several.

python -m tests.redis.emit_process flood URL PREFIX INDEX COUNT SUBJECT...
python -m tests.redis.emit_process race URL PREFIX INDEX ROUNDS
python -m tests.redis.emit_process tasks URL PREFIX INDEX COUNT SUBJECT...
python -m tests.redis.emit_process lifecycle URL PREFIX INDEX COUNT SUBJECT

``flood`` and ``race`` wait at a barrier (``{PREFIX}:ready``/``{PREFIX}:go`` lists; one
pair per round when racing) so that all start together; ``tasks`` starts at once. Each
prints one JSON line per emit.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from taskevents import Emitter, SubjectBusy
from taskevents.redis import RedisStateStore

if TYPE_CHECKING:
    import redis

#: Seconds a process waits at a barrier before giving up.
BARRIER_TIMEOUT = 60


def barrier(client: redis.Redis, prefix: str, name: str) -> None:
    client.rpush(f"{prefix}:ready{name}", 1)
    if client.blpop([f"{prefix}:go{name}"], timeout=BARRIER_TIMEOUT) is None:
        raise SystemExit(f"nobody opened the barrier {name!r}")


def flood(url: str, prefix: str, index: int, count: int, subjects: list[str]) -> None:
    """``count`` events on ``subjects`` in turn: per subject one task (started,
    progress..., completed), run side by side with the other processes' tasks."""
    import redis  # here: ruff would take tests/redis for it, as a first-party module

    client = redis.Redis.from_url(url)
    per_subject = {s: len(range(n, count, len(subjects))) for n, s in enumerate(subjects)}
    done = dict.fromkeys(subjects, 0)
    with RedisStateStore(url, prefix=prefix, history_size=100_000) as store:
        emitter = Emitter(source=f"process-{index}", state=store, exclusive=False)
        barrier(client, prefix, "")
        for n in range(count):
            subject = subjects[n % len(subjects)]
            task_id = f"p{index}-{subject}"
            done[subject] += 1
            if done[subject] == 1:
                event = emitter.started(subject, "flood", task_id=task_id, process=index)
            elif done[subject] == per_subject[subject]:
                event = emitter.completed(subject, {"process": index}, task_id=task_id)
            else:
                event = emitter.progress(subject, n % 101, task_id=task_id)
            print(json.dumps({"subject": subject, "seq": event.seq, "id": event.id}))
    client.close()


def race(url: str, prefix: str, index: int, rounds: int) -> None:
    """Per round, start a task on a fresh subject at the same moment as the others."""
    import redis

    client = redis.Redis.from_url(url)
    with RedisStateStore(url, prefix=prefix) as store:
        emitter = Emitter(source=f"process-{index}", state=store)
        for round_ in range(rounds):
            subject = f"race-{round_}"
            barrier(client, prefix, f":{round_}")
            try:
                event = emitter.started(subject, "change_ip", exclusive=True)
            except SubjectBusy as busy:
                line = {"round": round_, "won": False, "running": busy.running_task_id}
            else:
                line = {"round": round_, "won": True, "task_id": event.task_id}
            print(json.dumps(line), flush=True)
    client.close()


def tasks(url: str, prefix: str, index: int, count: int, subjects: list[str]) -> None:
    """Per subject in turn, one task: started, ``count`` progress events, completed."""
    with RedisStateStore(url, prefix=prefix) as store:
        emitter = Emitter(source=f"process-{index}", state=store)
        for subject in subjects:
            events = [emitter.started(subject, "change_ip", process=index)]
            events += [emitter.progress(subject, n * 100 // count) for n in range(count)]
            events.append(emitter.completed(subject, {"process": index}))
            for event in events:
                print(json.dumps(event.to_dict()))


def lifecycle(url: str, prefix: str, index: int, count: int, subject: str) -> None:
    """``count`` tasks on ``subject``, each started then completed, side by side with
    other processes' tasks (``exclusive=False``): lifecycle events only, never coalesced."""
    with RedisStateStore(url, prefix=prefix) as store:
        emitter = Emitter(source=f"process-{index}", state=store, exclusive=False)
        for n in range(count):
            started = emitter.started(subject, "lifecycle", task_id=f"p{index}-{n}")
            completed = emitter.completed(subject, {}, task_id=started.task_id)
            for event in (started, completed):
                print(json.dumps({"subject": subject, "seq": event.seq, "id": event.id}))


def main(argv: list[str]) -> None:
    mode, url, prefix, index = argv[:4]
    if mode == "flood":
        flood(url, prefix, int(index), int(argv[4]), argv[5:])
    elif mode == "race":
        race(url, prefix, int(index), int(argv[4]))
    elif mode == "tasks":
        tasks(url, prefix, int(index), int(argv[4]), argv[5:])
    elif mode == "lifecycle":
        lifecycle(url, prefix, int(index), int(argv[4]), argv[5])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
