"""What the benchmark web processes share (:mod:`harness.server` and
:mod:`harness.redis_server`): their common options, running a function in a Socket.IO
background task, the watchdog that stops them, the ``/bench/ping`` basics, and
TCP_NODELAY under gevent.

Imported by those processes after gevent's ``monkey.patch_all()`` (when they patch):
only the standard library and :mod:`harness.config` at import time.
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .config import SERVER_MAX_SECONDS

__all__ = [
    "gevent_nodelay_handler",
    "in_background",
    "parser_for",
    "ping_info",
    "start_watchdog",
]


def parser_for(prog: str) -> argparse.ArgumentParser:
    """A parser with the options every benchmark web process takes (``--port``,
    ``--parent``, ``--max-seconds``, ``--tcp-nodelay``)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=SERVER_MAX_SECONDS)
    parser.add_argument("--tcp-nodelay", action="store_true")
    return parser


def in_background(
    socketio: Any, func: Callable[[], dict[str, Any]], timeout: float
) -> dict[str, Any]:
    """Run ``func`` in a Socket.IO background task (a thread, or a greenlet under
    gevent) and wait for it: its result, or ``{"error": ...}``."""
    done = threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box.update(func())
        except Exception as exc:
            box["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            done.set()

    socketio.start_background_task(target)
    if not done.wait(timeout):
        box["error"] = f"the emit loop did not finish within {timeout:.0f} s"
    return box


def start_watchdog(socketio: Any, parent: int, max_seconds: float) -> None:
    """Stop the process (``os._exit``) when the orchestrator ``parent`` is gone, or
    after ``max_seconds``."""

    def watchdog() -> None:
        deadline = time.monotonic() + max_seconds
        while os.getppid() == parent and time.monotonic() < deadline:
            socketio.sleep(0.5)
        os._exit(0)

    socketio.start_background_task(watchdog)


def ping_info(socketio: Any, adapter: Any) -> dict[str, Any]:
    """What every ``/bench/ping`` answers: the async mode, the process id, the adapter's
    progress interval and its backlog guard's limit."""
    guard = getattr(adapter, "_backlog", None)
    return {
        "mode": socketio.async_mode,
        "pid": os.getpid(),
        "progress_interval": adapter.progress_interval,
        "max_backlog": getattr(guard, "max_packets", None),
    }


def gevent_nodelay_handler() -> Any:
    """A gevent pywsgi handler class that sets TCP_NODELAY on every accepted connection
    (pywsgi does not by default)."""
    from gevent import pywsgi

    class NoDelayHandler(pywsgi.WSGIHandler):  # type: ignore[misc]
        def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().__init__(sock, *args, **kwargs)

    return NoDelayHandler
