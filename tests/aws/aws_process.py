"""A process that emits to an SQS adapter whose AWS cannot be reached; the crash test
kills it with SIGKILL once its events are in the outbox.

python -m tests.aws.aws_process QUEUE_URL OUTBOX IDS_FILE COUNT
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from taskevents import Emitter
from taskevents.adapters.aws import SQSAdapter


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(queue_url: str, outbox: str, ids_file: str, count: int) -> None:
    emitter = Emitter()
    SQSAdapter(
        queue_url,
        region_name="eu-west-1",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",  # nobody listens: unreachable
        outbox=outbox,
        timeout=1,
        retry_schedule=(0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2),
        lease=1.0,
    ).connect(emitter)
    ids = []
    for n in range(count // 2):
        subject = f"vm{n % 5}"
        ids.append(emitter.started(subject, "change_ip", task_id=f"t{n}").id)
        ids.append(emitter.completed(subject, {"n": n}, task_id=f"t{n}").id)
    with open(ids_file + ".part", "w") as out:
        json.dump(ids, out)
    os.replace(ids_file + ".part", ids_file)
    while True:  # delivering (and failing) until killed
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
