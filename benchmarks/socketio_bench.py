"""Socket.IO fan-out, every scenario: taskevents' ``SocketIOAdapter`` against raw
Flask-SocketIO emits, same server, same clients, in threading and gevent modes.

    .venv/bin/python benchmarks/socketio_bench.py            # everything, about 6 minutes
    .venv/bin/python benchmarks/socketio_bench.py --quick    # smoke test, about 20 s
    .venv/bin/python benchmarks/socketio_bench.py --scenarios burst --clients 1

Runs ``paced.py``, ``burst.py``, ``flood.py`` and ``nodelay.py`` in one go (one server per
mode for all of them) and prints their tables; see ``benchmarks/README.md``. The harness
is in ``benchmarks/harness/``. Speed is reported, never asserted: the exit code is 0
whatever the numbers are.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.cli import SCENARIOS
from harness.cli import main as run

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    return run(
        SCENARIOS,
        argv,
        prog="socketio_bench.py",
        description="Socket.IO fan-out, every scenario: taskevents' SocketIOAdapter "
        "against raw Flask-SocketIO emits, in threading and gevent modes, with N "
        "socket.io-client sockets in one Node process.",
    )


if __name__ == "__main__":
    raise SystemExit(main())
