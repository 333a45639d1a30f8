"""Does Nagle's algorithm cost anything? Paced and burst at 50 clients on servers as
``socketio.run`` starts them (Nagle on), then on servers that set TCP_NODELAY on every
accepted connection.

    .venv/bin/python benchmarks/nodelay.py
    .venv/bin/python benchmarks/nodelay.py --modes threading --clients 10

See ``benchmarks/README.md``.
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
        ["paced", "burst", "nodelay"],
        argv,
        prog="nodelay.py",
        description="Socket.IO paced and burst with and without TCP_NODELAY.",
        clients=[50],
    )


if __name__ == "__main__":
    raise SystemExit(main())
