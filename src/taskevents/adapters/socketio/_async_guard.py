"""Hostile input on python-socketio's ``AsyncServer``: the asyncio counterparts of
:mod:`._frames` and :mod:`._backlog`.

* A checking packet class and an (async) wrapper of the Engine.IO ``message``
  handler: a Socket.IO packet that does not decode, or is not one a client may send,
  closes that connection with one rate-limited log line, never a traceback.
* The logging filter of :mod:`._frames` on the ``engineio.server`` and
  ``socketio.server`` loggers, as the last line of defence.
* A backlog check, a task on the server's event loop: a client whose Engine.IO queue
  holds more than ``max_packets`` packets (or ``max_bytes`` bytes) at two checks in a
  row, not fewer at the second, or four times a limit at once, stopped reading; its
  session is closed without waiting for the queue, and the queue is let go of.

Engine.IO's asyncio server reads whole websocket messages and long-polling bodies
through the ASGI server, which enforces ``max_http_buffer_size`` itself, so there is
no counterpart of the WSGI websocket and POST checks here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ._backlog import DROP_AT_ONCE
from ._frames import (
    SERVER_LOGGERS,
    RateLimitedLog,
    _checking_packet_class,
    _OneLineFilter,
    _Refused,
    _socketio_text_cause,
    one_line,
)
from .protocol import client_address

__all__ = ["AsyncGuard"]

logger = logging.getLogger("taskevents")


def _queued(queue: Any) -> list[Any]:
    items = getattr(queue, "_queue", None)
    return list(items) if items is not None else []


async def close_session(sock: Any, *, abort: bool = True) -> None:
    """Close an Engine.IO asyncio socket without waiting for its queue to drain, let go
    of that queue, and forget the session."""
    server = sock.server
    reason = getattr(getattr(server, "reason", None), "SERVER_DISCONNECT", None)
    with contextlib.suppress(Exception):
        try:
            await sock.close(wait=False, abort=abort, reason=reason)
        except TypeError:  # an Engine.IO without disconnect reasons
            await sock.close(wait=False, abort=abort)
    queue = getattr(sock, "queue", None)
    if queue is not None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            with contextlib.suppress(ValueError):
                queue.task_done()
        queue.put_nowait(None)  # tells its writer, or a waiting poll, to stop
    sockets: dict[str, Any] = getattr(server, "sockets", {})
    sid: str = sock.sid
    if sockets.get(sid) is sock:
        with contextlib.suppress(KeyError):
            del sockets[sid]


class AsyncGuard:
    """Guards one ``AsyncServer``: frames, log records and backlogs (see the module).
    :meth:`install` when created; :meth:`start` on the server's loop; :meth:`uninstall`
    restores everything."""

    def __init__(
        self,
        sio: Any,
        *,
        max_packets: int,
        max_bytes: int | None,
        interval: float = 0.25,
    ) -> None:
        self.sio = sio
        self.eio = sio.eio
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.interval = interval
        self.limiter = RateLimitedLog()
        #: How many clients the backlog check has dropped.
        self.dropped = 0
        self._filter = _OneLineFilter(self.limiter)
        self._loggers: list[logging.Logger] = []
        self._original_message: Callable[..., Any] | None = None
        self._original_packet_class: type | None = None
        self._packet_class: type | None = None
        self._check_text = False
        self._task: asyncio.Task[None] | None = None
        self._over: dict[str, float] = {}
        self._closing: set[Any] = set()

    # -- install -------------------------------------------------------------------------

    def install(self) -> None:
        sio, eio = self.sio, self.eio
        original = eio.handlers.get("message")
        if original is not None:
            self._original_message = original
            eio.handlers["message"] = self._on_message
        base = getattr(sio, "packet_class", None)
        if isinstance(base, type) and hasattr(base, "decode"):
            import socketio.packet

            self._original_packet_class = base
            self._packet_class = _checking_packet_class(base)
            sio.packet_class = self._packet_class
            self._check_text = issubclass(base, socketio.packet.Packet) and bool(
                getattr(base, "uses_binary_events", False)
            )
        loggers = [logging.getLogger(name) for name in SERVER_LOGGERS]
        for candidate in (getattr(sio, "logger", None), getattr(eio, "logger", None)):
            if isinstance(candidate, logging.Logger) and candidate not in loggers:
                loggers.append(candidate)
        for log in loggers:
            log.addFilter(self._filter)
        self._loggers = loggers

    def uninstall(self) -> None:
        self.stop()
        sio, eio = self.sio, self.eio
        if self._original_message is not None and eio.handlers.get("message") == self._on_message:
            eio.handlers["message"] = self._original_message
        if self._packet_class is not None and sio.packet_class is self._packet_class:
            sio.packet_class = self._original_packet_class
        for log in self._loggers:
            log.removeFilter(self._filter)
        self._loggers = []

    def start(self) -> None:
        """Start the backlog check; call it on the server's event loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="taskevents-backlog"
            )

    def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # its loop is closed: it is gone
                task.get_loop().call_soon_threadsafe(task.cancel)

    # -- frames --------------------------------------------------------------------------

    def client_of(self, eio_sid: str | None) -> str:
        environ = getattr(self.sio, "environ", {}).get(eio_sid) or {}
        return one_line(client_address(environ) or "unknown", 64)

    def report(self, what: str, cause: str, eio_sid: str | None, detail: str = "") -> None:
        client = self.client_of(eio_sid)
        details = f" ({one_line(detail)})" if detail else ""
        self.limiter.log(
            logging.WARNING,
            (what, cause, client),
            f"AsyncSocketIOAdapter: {what} from {client} (session {eio_sid}): {cause}"
            f"{details}; closed the connection",
            cause=cause,
            client=client,
        )

    async def refuse(self, eio_sid: str, cause: str, detail: str = "") -> None:
        self.report("refused a frame", cause, eio_sid, detail)
        sock = self.eio.sockets.get(eio_sid)
        if sock is not None:
            await close_session(sock)

    async def _on_message(self, eio_sid: str, data: Any) -> Any:
        sock = self.eio.sockets.get(eio_sid)
        if sock is None or sock.closed or getattr(sock, "closing", False):
            return None  # refused or gone: nothing more from it is handled
        original = self._original_message
        assert original is not None
        if self._check_text and eio_sid not in getattr(self.sio, "_binary_packet", {}):
            cause = _socketio_text_cause(data)
            if cause:
                await self.refuse(eio_sid, cause)
                return None
        try:
            result = original(eio_sid, data)
            if asyncio.iscoroutine(result):
                result = await result
            return result
        except _Refused as exc:
            await self.refuse(eio_sid, exc.cause, exc.detail)
        except Exception as exc:
            logger.debug("AsyncSocketIOAdapter: error handling a frame", exc_info=True)
            await self.refuse(eio_sid, f"error handling it ({type(exc).__name__})")
        return None

    # -- backlogs ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as exc:
                self.limiter.log(
                    logging.ERROR,
                    ("backlog-check", type(exc).__name__),
                    f"AsyncSocketIOAdapter: the backlog check failed: {type(exc).__name__}: {exc}",
                )

    async def check(self) -> int:
        """Drop the clients whose backlog is over the limit and not going down; returns
        how many were dropped (see :meth:`taskevents.adapters.socketio._backlog.
        BacklogGuard.check`)."""
        dropped = 0
        over: dict[str, float] = {}
        for sock in list(self.eio.sockets.values()):
            if sock.closed or getattr(sock, "closing", False):
                continue
            queue = getattr(sock, "queue", None)
            size = queue.qsize() if queue is not None else 0
            if not size:
                continue
            nbytes = 0
            if self.max_bytes is not None:
                for packet in _queued(queue):
                    data = getattr(packet, "data", None)
                    nbytes += len(data) if isinstance(data, (str, bytes)) else 16
            load = size / self.max_packets
            if self.max_bytes is not None:
                load = max(load, nbytes / self.max_bytes)
            if load <= 1:
                continue
            before = self._over.get(sock.sid)
            if load > DROP_AT_ONCE or (before is not None and load >= before):
                await self.drop(sock, size, nbytes)
                dropped += 1
            else:
                over[sock.sid] = load
        self._over = over
        return dropped

    async def drop(self, sock: Any, backlog: int, nbytes: int) -> None:
        client = self.client_of(sock.sid)
        await close_session(sock)
        self.dropped += 1
        waiting = f"{backlog} packets" + (f" ({nbytes} bytes)" if nbytes else "")
        self.limiter.log(
            logging.WARNING,
            ("dropped a client", "backlog", client),
            f"AsyncSocketIOAdapter: dropped a client from {client} (session {sock.sid}): "
            f"{waiting} waiting to be sent, over max_backlog={self.max_packets} or "
            f"max_backlog_bytes={self.max_bytes} (it stopped reading); closed the connection",
            cause="backlog",
            client=client,
        )
