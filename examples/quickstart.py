"""Quick start: an existing task manager emits, the logging adapter shows it.

Run it with ``./dev demo`` (or ``python examples/quickstart.py`` once taskevents is
installed). It runs one task that succeeds and one that fails, then prints the state.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time

from taskevents import Emitter, load_adapter
from taskevents.adapters.logging import console_handler


def change_ip(emitter: Emitter, config_name: str, *, fail: bool, pause: float) -> None:
    """A stand-in for the seed's TaskManager job: it only has to call the emitter."""
    with emitter.track(config_name, "change_ip") as task:
        for percent, stage, message in [
            (10, "preparation", "Allocating a new Elastic IP..."),
            (50, "execution", "Changing IP address..."),
            (90, "verification", "Checking the new address answers..."),
        ]:
            time.sleep(pause)
            task.progress(percent, stage=stage, message=message)
            if fail and stage == "execution":
                raise RuntimeError("the instance refused the new address")
        task.result = {"status": "success", "data": {"ip": "203.0.113.7"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between steps")
    args = parser.parse_args(argv)

    log = logging.getLogger("taskevents")
    log.setLevel(logging.DEBUG)
    log.addHandler(console_handler())
    log.propagate = False

    emitter = Emitter(source="examples/quickstart")
    emitter.register("aws01", region="eu-west-1")
    emitter.register("aws02", region="us-east-1")

    with load_adapter("logging").connect(emitter):
        change_ip(emitter, "aws01", fail=False, pause=args.pause)
        # The adapter logs task_failed; the caller still gets the task's own exception.
        with contextlib.suppress(RuntimeError):
            change_ip(emitter, "aws02", fail=True, pause=args.pause)

    snapshots = {name: snap.to_dict() for name, snap in emitter.state.snapshot_all().items()}
    for name, snap in snapshots.items():
        last = snap["last_task"]
        print(f"{name}: {snap['status']}, last task {last['task_type']} {last['outcome']}")
    print(json.dumps(snapshots["aws01"]["last_task"]["result"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
