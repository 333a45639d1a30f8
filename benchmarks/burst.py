"""Socket.IO burst throughput: lifecycle events emitted back to back, taskevents'
``SocketIOAdapter`` against raw Flask-SocketIO emits, same server, same clients.

    .venv/bin/python benchmarks/burst.py                       # 1, 10, 50 clients, both modes
    .venv/bin/python benchmarks/burst.py --clients 1 --rounds 8

``--burst-deliveries / clients`` events per phase (at most 10,000): the server is
CPU-bound, so delivered events/s is each path's capacity. See ``benchmarks/README.md``.
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
        ["burst"],
        argv,
        prog="burst.py",
        description="Socket.IO burst throughput, taskevents vs raw emit.",
    )


if __name__ == "__main__":
    raise SystemExit(main())
