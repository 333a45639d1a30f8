"""Bounded per-client outgoing buffers: a client that stops reading is disconnected.

Engine.IO queues every packet for a client in an unbounded per-socket ``queue``; its
websocket writer takes them out and blocks in the socket's send while the client does
not read. A client that subscribes and then never reads (it need not even answer
pings for a while: its pings wait in the same queue) grows that queue for as long as
events flow, and even the ping timeout, when it comes, leaves the writer blocked in
its send, holding the queue, for ever.

:class:`BacklogGuard` is a background task of the server's async mode (a thread, or a
greenlet under gevent) that every ``interval`` seconds walks the Engine.IO sockets and
drops each whose queue holds more than ``max_packets`` packets (at two checks in a
row, not fewer at the second; or more than twice that at once): it closes the
Engine.IO session without waiting for the queue (the Socket.IO ``disconnect``
handlers run; the client resumes with ``since`` when it reconnects), empties the
queue, and shuts the TCP connection of its websocket down, so that the writer blocked
in a send gets an error and lets go. It also aborts the websockets of sessions that
Engine.IO itself has closed (a ping timeout) but whose writer is still stuck in a send
``stuck_after`` seconds later.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from ._frames import (
    POLICY_VIOLATION,
    RateLimitedLog,
    close_socket,
    guard_frames,
    installation_of,
    websockets_of,
)

__all__ = ["BacklogGuard"]


#: A backlog this many times over a limit is dropped without waiting for a second look.
DROP_AT_ONCE = 4.0


def _queued_bytes(queue: Any) -> int:
    """About how many bytes wait in an Engine.IO socket's queue (its packets' text)."""
    total = 0
    items = getattr(queue, "queue", None)
    if items is None:
        return 0
    for packet in list(items):
        data = getattr(packet, "data", None)
        total += len(data) if isinstance(data, (str, bytes)) else 16
    return total


class BacklogGuard:
    """Disconnects clients of ``sio`` whose outgoing queue holds more than
    ``max_packets`` packets.

    :param sio: the python-socketio ``Server``.
    :param max_packets: the most packets that may wait to be sent to one client.
    :param interval: seconds between two checks.
    :param stuck_after: seconds after which the websocket of a session Engine.IO has
        closed, but whose writer is still blocked in a send, is aborted.
    """

    def __init__(
        self,
        sio: Any,
        *,
        max_packets: int,
        max_bytes: int | None = None,
        interval: float = 0.25,
        stuck_after: float = 5.0,
    ) -> None:
        self.sio = sio
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.interval = interval
        self.stuck_after = stuck_after
        #: How many clients this guard has dropped.
        self.dropped = 0
        self._lock = threading.Lock()
        self._task: Any = None
        self._running = False
        self._runner: int | None = None
        self._unguard: Any = None
        self._fallback_log: RateLimitedLog | None = None
        # sid -> backlog at the last check, of the sockets that were over the limit
        self._over: dict[str, int] = {}

    def start(self) -> None:
        """Start watching (a background task of the server's async mode)."""
        with self._lock:
            if self._task is not None:
                return
            # The frame guard tracks websockets, so a dropped one can be aborted.
            self._unguard = guard_frames(self.sio)
            self._running = True
            self._task = self.sio.start_background_task(self._run)

    def stop(self) -> None:
        """Stop watching. Idempotent."""
        with self._lock:
            task, self._task = self._task, None
            unguard, self._unguard = self._unguard, None
            self._running = False
        if task is not None and self._runner != threading.get_ident():
            with contextlib.suppress(Exception):
                task.join(timeout=max(1.0, 4 * self.interval))
        if unguard is not None:
            unguard()

    def _run(self) -> None:
        self._runner = threading.get_ident()
        while self._running:
            try:
                self.check()
            except Exception as exc:
                self._log().log(
                    logging.ERROR,
                    ("backlog-check", type(exc).__name__),
                    f"SocketIOAdapter: the backlog check failed: {type(exc).__name__}: {exc}",
                )
            # sleep in short steps, so that stop() is prompt whatever the interval
            deadline = time.monotonic() + self.interval
            while self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.sio.sleep(min(left, 0.25))

    def check(self) -> int:
        """Drop the clients whose backlog is over the limit and not going down; returns
        how many were dropped.

        A backlog over ``max_packets`` (or ``max_bytes``) at two checks in a row, not
        smaller at the second, is a client that stopped reading; one over four times a
        limit is dropped at once. A burst that a reading client drains (a resume that replays a long
        history, queued at once) is left alone.
        """
        eio = self.sio.eio
        dropped = 0
        over: dict[str, int] = {}
        for sock in list(eio.sockets.copy().values()):
            if sock.closed or getattr(sock, "closing", False):
                continue
            queue = getattr(sock, "queue", None)
            if queue is None:
                continue
            size = queue.qsize()
            if not size:
                continue
            nbytes = _queued_bytes(queue) if self.max_bytes is not None else 0
            load = size / self.max_packets
            if self.max_bytes is not None:
                load = max(load, nbytes / self.max_bytes)
            if load <= 1:
                continue
            before = self._over.get(sock.sid)
            if load > DROP_AT_ONCE or (before is not None and load >= before):
                self.drop(sock, size, nbytes)
                dropped += 1
            else:
                over[sock.sid] = load
        self._over = over
        self._abort_stuck(eio)
        return dropped

    def drop(self, sock: Any, backlog: int | None = None, nbytes: int | None = None) -> None:
        """Disconnect the Engine.IO socket ``sock`` now, and let go of its backlog."""
        eio = self.sio.eio
        sid = sock.sid
        installation = installation_of(self.sio)
        client = installation.client_of(sid) if installation is not None else "unknown"
        ws = None
        for candidate, websocket in websockets_of(eio):
            if candidate is sock:
                ws = websocket
        if ws is not None:
            ws.close_code = (POLICY_VIOLATION, "too far behind")
        close_socket(sock, abort=True)
        if ws is not None:
            ws.abort()
        _empty(sock.queue, eio)
        self.dropped += 1
        waiting = f"{backlog} packets" if backlog is not None else "its packets"
        if nbytes:
            waiting += f" ({nbytes} bytes)"
        self._log().log(
            logging.WARNING,
            ("dropped a client", "backlog", client),
            f"SocketIOAdapter: dropped a client from {client} (session {sid}): {waiting} waiting "
            f"to be sent, over max_backlog={self.max_packets} or "
            f"max_backlog_bytes={self.max_bytes} (it stopped reading); "
            "closed the connection",
            cause="backlog",
            client=client,
        )

    def _abort_stuck(self, eio: Any) -> None:
        now = time.monotonic()
        for sock, ws in websockets_of(eio):
            if not sock.closed or ws.aborted:
                continue
            if ws.closed_seen_at is None:
                ws.closed_seen_at = now
            elif now - ws.closed_seen_at > self.stuck_after:
                ws.abort()
                _empty(sock.queue, eio)

    def _log(self) -> RateLimitedLog:
        installation = installation_of(self.sio)
        if installation is not None:
            return installation.limiter
        if self._fallback_log is None:
            self._fallback_log = RateLimitedLog()
        return self._fallback_log


def _empty(queue: Any, eio: Any) -> None:
    """Let go of what waits in an Engine.IO socket's queue, leaving the end marker (None)
    that tells its writer or a pending poll to stop."""
    empty = eio.get_queue_empty_exception()
    for _ in range(queue.qsize() + 1):
        try:
            queue.get_nowait()
        except empty:
            break
        with contextlib.suppress(ValueError):
            queue.task_done()
    queue.put(None)
