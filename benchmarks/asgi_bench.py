"""Socket.IO fan-out on the ASGI server: taskevents' ``AsyncSocketIOAdapter`` against
raw ``AsyncServer.emit``, same uvicorn server, same clients, events emitted from a
coroutine on the server's loop and from a worker thread; and the event loop's lag while
a task floods progress.

    .venv/bin/python benchmarks/asgi_bench.py            # everything, about 4 minutes
    .venv/bin/python benchmarks/asgi_bench.py --quick    # smoke test, about 30 s
    .venv/bin/python benchmarks/asgi_bench.py --scenarios burst,lag --emitters coroutine

See ``benchmarks/README.md``. The harness is in ``benchmarks/harness/`` (``asgi_*``
modules, on top of the Socket.IO benchmark's). Speed is reported, never asserted: the
exit code is 0 whatever the numbers are.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.asgi_cli import main as run

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
