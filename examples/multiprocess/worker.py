"""A worker process: runs tasks and publishes their events through Redis.

It emits with ``Emitter(state=RedisStateStore(url, prefix=...))`` and nothing else: no
adapters, no web server, no bridge. Each emit is recorded in Redis and published there,
and the web processes (``web.py``) bring it to their Socket.IO clients. Run it with::

    python examples/multiprocess/worker.py --redis-url redis://127.0.0.1:6379/0

It runs a simulated ``change_ip`` task on each subject in turn, one after another,
until Ctrl+C (or ``--count`` tasks), and prints one line per event it emitted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from taskevents import Emitter, SubjectBusy
from taskevents.redis import RedisStateStore, StoreUnavailable

DEFAULT_URL = "redis://127.0.0.1:6379/0"
STEPS = [
    (10, "preparation", "Allocating a new Elastic IP..."),
    (50, "execution", "Changing IP address..."),
    (90, "verification", "Checking the new address answers..."),
]


def change_ip(emitter: Emitter, subject: str, *, pause: float) -> None:
    """One simulated task: started, three progress steps, completed."""
    with emitter.track(subject, "change_ip") as task:
        print(f"{subject}: change_ip started, task {task.task_id}", flush=True)
        for percent, stage, message in STEPS:
            time.sleep(pause)
            event = task.progress(percent, stage=stage, message=message)
            print(f"{subject}: {percent}% [{stage}] seq {event.seq}", flush=True)
        time.sleep(pause)
        task.result = {"status": "success", "data": {"ip": "203.0.113.7"}}
    print(f"{subject}: change_ip completed", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM as Ctrl+C: a task under way ends as cancelled rather than busy for ever.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("TASKEVENTS_REDIS_URL", DEFAULT_URL),
        help=f"the Redis server (TASKEVENTS_REDIS_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--redis-prefix",
        default=os.environ.get("TASKEVENTS_REDIS_PREFIX", "taskevents"),
        help="the key prefix, as the web processes' (TASKEVENTS_REDIS_PREFIX, else taskevents)",
    )
    parser.add_argument(
        "--subject",
        action="append",
        help="a subject to run tasks on; repeatable (default: aws01 and aws02)",
    )
    parser.add_argument("--count", type=int, default=0, help="tasks to run; 0: until stopped")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between steps (1)")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between tasks (2)")
    args = parser.parse_args(argv)
    subjects = args.subject or ["aws01", "aws02"]

    signal.signal(signal.SIGTERM, _interrupt)
    store = RedisStateStore(args.redis_url, prefix=args.redis_prefix)
    emitter = Emitter(source="examples/multiprocess/worker", state=store)
    done = 0
    try:
        while args.count <= 0 or done < args.count:
            subject = subjects[done % len(subjects)]
            try:
                change_ip(emitter, subject, pause=args.pause)
            except SubjectBusy as busy:  # another worker runs a task on it
                print(f"{subject}: busy ({busy}); skipped", flush=True)
            done += 1
            if args.count <= 0 or done < args.count:
                time.sleep(args.every)
    except KeyboardInterrupt:
        print("worker: stopped", flush=True)
    except StoreUnavailable as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
