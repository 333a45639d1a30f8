"""moto's server for the AWS benchmark, in a process of its own.

    .venv/bin/python benchmarks/harness/aws_server.py [--port 0] [--parent PID] [--sink-prefix P]

(from the repository root; it imports nothing from the harness). AWS itself is out of
reach, so the benchmark measures against moto (``moto.server.ThreadedMotoServer``:
Werkzeug's threaded development server, one thread per connection, every service moto
knows). It runs here, in its own interpreter, so that its CPU does not share the GIL
with the process being measured.

Standard output carries JSON lines: ``{"ready": true, "url": "http://127.0.0.1:N",
"pid": P}`` once listening (``--port 0``, the default, picks a free port), and
``{"stopped": true}`` at the end. It ends on SIGTERM or SIGINT, when its standard input
is closed, or when the process ``--parent`` is gone. Werkzeug's request log is off (one
line per request on stderr would cost the server CPU and fill a pipe).

**Sink queues.** moto's SQS costs more per message the more messages a queue holds:
``SendMessage`` (and each entry of ``SendMessageBatch``) reads every attribute of the
queue, and ``ApproximateNumberOfMessages`` among them is counted by checking every
message's visibility (two clock reads each). At 1,000 messages in the queue one more
costs ~13-16 ms of server CPU, and the cost grows with the queue's length: any
throughput measured into a filling queue would measure moto. A queue whose name starts
with ``--sink-prefix`` (default ``sink-``) therefore counts the messages it is sent and
keeps none (standard queues only; a FIFO queue's deduplication needs its messages): its
``ApproximateNumberOfMessages`` is that count. Real SQS does not slow down with the
queue's length; moto's cost per call stays what it is with an empty queue.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _say(message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # nobody reads any more
        print(json.dumps(message), flush=True)


def _sink_queues(prefix: str) -> None:
    """Make the standard queues whose names start with ``prefix`` count what they are
    sent instead of keeping it (see the module's docstring)."""
    if not prefix:
        return
    from moto.sqs.models import Queue

    add_message = Queue.add_message
    counted = Queue.approximate_number_of_messages
    lock = threading.Lock()

    def sink(self: Any) -> bool:
        return bool(str(self.name).startswith(prefix) and not self.fifo_queue)

    def add(self: Any, message: Any) -> None:
        if not sink(self):
            add_message(self, message)
            return
        with lock:
            self.bench_sunk = getattr(self, "bench_sunk", 0) + 1

    def number(self: Any) -> int:
        held: int = counted.fget(self)  # type: ignore[attr-defined]
        return held + int(getattr(self, "bench_sunk", 0)) if sink(self) else held

    Queue.add_message = add  # type: ignore[method-assign]
    Queue.approximate_number_of_messages = property(number)  # type: ignore[assignment,method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness.aws_server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    parser.add_argument("--parent", type=int, help="end when this process is gone")
    parser.add_argument(
        "--sink-prefix",
        default="sink-",
        help="standard queues named so count their messages and keep none (default "
        "'sink-'; '' turns it off)",
    )
    args = parser.parse_args(argv)

    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from moto.server import ThreadedMotoServer  # slow to import: after the handlers

    _sink_queues(args.sink_prefix)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()

    def watch_stdin(fd: int) -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside the buffered reader
        # would hold its lock at interpreter shutdown (a fatal error).
        with contextlib.suppress(OSError):
            while os.read(fd, 65536):
                pass
        done.set()

    def watch_parent(parent: int) -> None:
        while os.getppid() == parent and not done.is_set():
            time.sleep(0.5)
        done.set()

    threading.Thread(target=watch_stdin, args=(sys.stdin.fileno(),), daemon=True).start()
    if args.parent is not None:
        threading.Thread(target=watch_parent, args=(args.parent,), daemon=True).start()
    _say({"ready": True, "url": f"http://{host}:{port}", "pid": os.getpid()})
    while not done.wait(0.2):
        pass
    # shutdown() waits for serve_forever() to return (at most its 0.5 s poll); the
    # threads of open connections are daemons and end with the process.
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(5.0)
    _say({"stopped": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
