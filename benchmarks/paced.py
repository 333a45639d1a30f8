"""Socket.IO paced delivery: lifecycle events at a steady rate, taskevents'
``SocketIOAdapter`` against raw Flask-SocketIO emits, same server, same clients.

    .venv/bin/python benchmarks/paced.py                       # 100 events/s, 1, 10, 50 clients
    .venv/bin/python benchmarks/paced.py --modes gevent --clients 50 --rate 200

Below saturation both paths deliver everything (ratio ~1.00); the latency columns and the
server CPU per delivery are the point. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.cli import main as run

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    return run(
        ["paced"],
        argv,
        prog="paced.py",
        description="Socket.IO paced delivery and latency, taskevents vs raw emit.",
    )


if __name__ == "__main__":
    raise SystemExit(main())
