"""A process that emits to, or delivers from, a webhook outbox: the crash test kills it.

python -m tests.webhooks.outbox_process emit URL OUTBOX SECRET IDS_FILE COUNT SUBJECTS
python -m tests.webhooks.outbox_process deliver URL OUTBOX SECRET
"""

from __future__ import annotations

import json
import sys
import time

from taskevents import Emitter
from taskevents.adapters.webhooks import Endpoint, WebhookAdapter

LEASE = 2.0


def adapter(url: str, outbox: str, secret: str) -> WebhookAdapter:
    return WebhookAdapter(
        Endpoint(url, secret, timeout=5),
        outbox=outbox,
        allow_hosts=["127.0.0.1"],
        lease=LEASE,
        poll_interval=0.1,
        retry_schedule=(0, 0.1, 0.2, 0.5, 1, 1, 1, 1, 1, 1),
    )


def emit(url: str, outbox: str, secret: str, ids_file: str, count: int, subjects: int) -> None:
    emitter = Emitter()
    adapter(url, outbox, secret).connect(emitter)
    ids: list[str] = []
    for n in range(count // 2):
        subject = f"s{n % subjects:02d}"
        ids.append(emitter.started(subject, "change_ip").id)
        ids.append(emitter.completed(subject, {"n": n}).id)
    with open(ids_file + ".part", "w") as out:
        json.dump(ids, out)
    import os

    os.replace(ids_file + ".part", ids_file)  # all rows are in the outbox by now
    time.sleep(3600)  # delivering, until killed


def deliver(url: str, outbox: str, secret: str) -> None:
    hooks = adapter(url, outbox, secret).connect()
    done = hooks.flush(120)
    print(json.dumps({"flushed": done, "stats": hooks.stats}), flush=True)
    hooks.close()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "emit":
        emit(args[0], args[1], args[2], args[3], int(args[4]), int(args[5]))
    else:
        deliver(*args[:3])
