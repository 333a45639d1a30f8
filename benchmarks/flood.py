"""Socket.IO progress flood: ``emitter.progress()`` in a tight loop in the server, with
the default ``progress_interval`` (0.1 s), to 10 clients.

    .venv/bin/python benchmarks/flood.py
    .venv/bin/python benchmarks/flood.py --modes gevent --flood-events 200000

Reports the emitter's cost per call, the progress updates each client got (target at most
10/s), the lifecycle events at every client, their latency and the final state. See
``benchmarks/README.md``.
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
        ["flood"],
        argv,
        prog="flood.py",
        description="Socket.IO progress flood through taskevents' coalescing adapter.",
    )


if __name__ == "__main__":
    raise SystemExit(main())
