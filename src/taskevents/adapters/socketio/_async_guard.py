"""Hostile input on python-socketio's ``AsyncServer``: the asyncio counterparts of
:mod:`._frames` and :mod:`._backlog`.

* A checking packet class and an (async) wrapper of the Engine.IO ``message``
  handler: a Socket.IO packet that does not decode, or is not one a client may send,
  closes that connection with one rate-limited log line, never a traceback.
* A wrapper of the Engine.IO websocket class: an Engine.IO frame that would make
  Engine.IO fail (empty, an unknown packet type, invalid base64) or one over
  ``max_http_buffer_size`` closes the session with one log line, instead of a
  traceback from the ASGI server for every such frame.
* A check of long-polling POST bodies before Engine.IO reads them: a body over
  ``max_http_buffer_size`` gets HTTP 413, a malformed one (or one for a session
  closed meanwhile) HTTP 400, and the session is closed at once. (Engine.IO's own
  refusal waits for the client's next poll, for ever if it never polls: a request
  that was never answered, and its memory, for each such POST.)
* The logging filter of :mod:`._frames` on the ``engineio.server`` and
  ``socketio.server`` loggers, as the last line of defence.
* A backlog check, a task on the server's event loop: a client whose Engine.IO queue
  holds more than ``max_packets`` packets (or ``max_bytes`` bytes) at two checks in a
  row, not fewer at the second, or four times a limit at once, stopped reading; its
  session is closed without waiting for the queue, and the queue is let go of.

A dropped client's websocket writer (stuck in a send to a client that does not read)
and the ASGI task serving its websocket are cancelled, so that the ASGI server closes
the connection. What ASGI cannot do: refuse a websocket message while it arrives (the
ASGI server buffers it whole first, up to its own limit: uvicorn's ``ws_max_size``,
16 MiB by default, so set it to ``max_http_buffer_size``), or abort a TCP connection
outright (what the kernel buffered for it is the ASGI server's to let go of).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
import weakref
from typing import Any

from ._backlog import DROP_AT_ONCE
from ._frames import (
    POLICY_VIOLATION,
    _engineio_cause,
    _Guard,
    _payload_cause,
    _Refused,
    _socketio_text_cause,
)

__all__ = ["AsyncGuard"]

#: Websocket close code (RFC 6455): a message too big to process.
MESSAGE_TOO_BIG = 1009

logger = logging.getLogger("taskevents")


def _queued(queue: Any) -> list[Any]:
    items = getattr(queue, "_queue", None)
    return list(items) if items is not None else []


async def close_session(sock: Any, *, abort: bool = True) -> None:
    """Close an Engine.IO asyncio socket without waiting for its queue to drain, and
    forget the session. With ``abort``, what waits in its queue is let go of; without,
    the client is sent what was queued and an Engine.IO CLOSE packet first."""
    server = sock.server
    reason = getattr(getattr(server, "reason", None), "SERVER_DISCONNECT", None)
    with contextlib.suppress(Exception):
        try:
            await sock.close(wait=False, abort=abort, reason=reason)
        except TypeError:  # an Engine.IO without disconnect reasons
            await sock.close(wait=False, abort=abort)
    queue = getattr(sock, "queue", None)
    if queue is not None:
        while abort:
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


async def _answer(send: Any, status: int, message: str) -> None:
    body = message.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AsyncGuard(_Guard):
    """Guards one ``AsyncServer``: frames, log records and backlogs (see the module).
    :meth:`install` when created; :meth:`start` on the server's loop; :meth:`uninstall`
    restores everything."""

    who = "AsyncSocketIOAdapter"

    def __init__(
        self,
        sio: Any,
        *,
        max_packets: int,
        max_bytes: int | None,
        interval: float = 0.25,
    ) -> None:
        super().__init__(sio)
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.interval = interval
        #: How many clients the backlog check has dropped.
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._websockets: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._over: dict[str, float] = {}

    def _wrap_websocket(self, original: Any) -> Any:
        return self._websocket_class(original) if isinstance(original, type) else None

    def uninstall(self) -> None:
        self.stop()
        super().uninstall()

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

    async def refuse(self, eio_sid: str, cause: str, detail: str = "") -> None:
        """A Socket.IO-level refusal: log, then close: the client is sent an Engine.IO
        CLOSE packet, and its websocket ends with close code 1008."""
        self.report("refused a frame", cause, eio_sid, detail)
        sock = self.eio.sockets.get(eio_sid)
        if sock is not None:
            ws = self._websockets.get(sock)
            if ws is not None:
                ws.close_code = POLICY_VIOLATION
            await close_session(sock, abort=False)

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

    def _websocket_class(self, base: type) -> type:
        guard = self

        class GuardedWebSocket(base):  # type: ignore[misc]
            """Engine.IO's ASGI websocket, whose frames are checked as they arrive."""

            def __init__(self, handler: Any, server: Any, *args: Any, **kwargs: Any) -> None:
                super().__init__(handler, server, *args, **kwargs)
                self._eio_socket = getattr(handler, "__self__", None)
                self._writer: asyncio.Task[Any] | None = None
                self._app_task: asyncio.Task[Any] | None = None
                self._dropped = False
                #: The websocket close code the connection ends with.
                self.close_code = 1000
                if self._eio_socket is not None:
                    guard._websockets[self._eio_socket] = self

            async def __call__(self, environ: Any) -> Any:
                self._app_task = asyncio.current_task()
                return await super().__call__(environ)

            async def send(self, message: Any) -> None:
                # Engine.IO's writer task sends; a dropped client's writer, stuck in a
                # send to a client that stopped reading, is cancelled (see drop).
                self._writer = asyncio.current_task()
                await super().send(message)

            async def close(self) -> None:
                if self._dropped:  # a dropped client's close frame would wait too
                    return
                with contextlib.suppress(Exception):  # closed already
                    await self.asgi_send({"type": "websocket.close", "code": self.close_code})

            def drop(self) -> None:
                self._dropped = True
                for task in (self._writer, self._app_task):
                    if task is not None and not task.done():
                        task.cancel()

            async def wait(self) -> Any:
                data = await super().wait()
                limit = guard.eio.max_http_buffer_size
                if isinstance(data, (str, bytes)) and len(data) > limit:
                    cause = "message over max_http_buffer_size"
                else:
                    cause = _engineio_cause(data)
                if not cause:
                    return data
                sock = self._eio_socket
                guard.report("refused a frame", cause, getattr(sock, "sid", None))
                self.close_code = (
                    MESSAGE_TOO_BIG if cause.startswith("message over") else (POLICY_VIOLATION)
                )
                if sock is not None:
                    await close_session(sock, abort=False)
                return None  # to Engine.IO: the client has gone

        return GuardedWebSocket

    async def _handle_request(self, scope: Any, receive: Any, send: Any) -> Any:
        """Check a long-polling POST before Engine.IO reads it (see the module)."""
        original = self._original_handle_request
        assert original is not None
        if not (
            isinstance(scope, dict)
            and scope.get("type") == "http"
            and scope.get("method") == "POST"
        ):
            return await original(scope, receive, send)
        query = urllib.parse.parse_qs(bytes(scope.get("query_string") or b"").decode("latin-1"))
        sids = query.get("sid")
        sock = self.eio.sockets.get(sids[0]) if sids else None
        if sock is not None and sock.closed:
            # closed (by the client, or a ping timeout) and not forgotten yet: Engine.IO's
            # own answer would be a 500 and a traceback
            await close_session(sock)
            return await _answer(send, 400, "Invalid session")
        if sock is None or not sock.connected or sock.upgraded:
            return await original(scope, receive, send)
        limit = self.eio.max_http_buffer_size
        declared = None
        for name, value in scope.get("headers") or ():
            if bytes(name).lower() == b"content-length":
                try:
                    declared = int(bytes(value))
                except ValueError:
                    declared = -1
        if declared is not None and declared < 0:
            return await self._refuse_post(send, sock, "invalid Content-Length", 400)
        if declared is not None and declared > limit:
            return await self._refuse_post(
                send, sock, "payload over max_http_buffer_size", 413, f"{declared} bytes"
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message.get("type") != "http.request":
                return None  # the client went away
            chunk = bytes(message.get("body") or b"")
            size += len(chunk)
            if size > limit:
                return await self._refuse_post(
                    send, sock, "payload over max_http_buffer_size", 413, f"over {limit} bytes"
                )
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        cause = _payload_cause(body)
        if cause:
            return await self._refuse_post(send, sock, cause, 400)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await original(scope, replay, send)

    async def _refuse_post(
        self, send: Any, sock: Any, cause: str, status: int, detail: str = ""
    ) -> None:
        self.report("refused a long-polling request", cause, sock.sid, detail)
        await close_session(sock)
        message = "Payload too large" if status == 413 else "Bad Request"
        await _answer(send, status, message)

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
        ws = self._websockets.get(sock)
        if ws is not None:
            ws.drop()
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
