"""The Socket.IO protocol on python-socketio's ``AsyncServer`` (ASGI: FastAPI,
Starlette, uvicorn, hypercorn).

:class:`AsyncSocketIOAdapter` serves exactly what :class:`~.server.SocketIOAdapter`
serves, and shares its code: the pure protocol (:mod:`.protocol`: payloads, request
validation, rate limits, access policy, resume decisions) and the request handling and
ordering of :class:`~.server._Rooms`. Only the I/O differs: updates go out from a
worker task on the server's event loop (:class:`~taskevents.AsyncAdapter`'s queue, so
ordering per subject and progress coalescing are the same), and a send never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from taskevents._optional import require
from taskevents.adapters.base import Adapter, AsyncAdapter
from taskevents.events import TaskEvent
from taskevents.exceptions import UsageError, ValidationError
from taskevents.signals import REMOTE, subject_forgotten

from ._async_guard import AsyncGuard
from .protocol import (
    RESERVED_EVENTS,
    resolve_identity,
    room_for,
    update_payload,
)
from .server import _Plain, _Rooms

__all__ = ["AsyncSocketIOAdapter"]

logger = logging.getLogger("taskevents")

A = TypeVar("A", bound="AsyncSocketIOAdapter")


class _AsyncPlain:
    """python-socketio's asyncio emit machinery, imported once (see :func:`_emit_now`)."""

    def __init__(self) -> None:
        import engineio
        import socketio

        self.plain = _Plain()
        self.server_emit = socketio.AsyncServer.emit
        self.send_eio_packet = getattr(socketio.AsyncServer, "_send_eio_packet", None)
        self.manager_emit = socketio.AsyncManager.emit
        self.manager_enter = socketio.AsyncManager.enter_room
        self.manager_leave = socketio.AsyncManager.leave_room
        self.eio_send_packet = engineio.AsyncServer.send_packet
        from engineio.async_socket import AsyncSocket

        self.socket_send = AsyncSocket.send


_async_plain: _AsyncPlain | None = None


def _plain_of() -> _AsyncPlain:
    global _async_plain
    if _async_plain is None:
        _async_plain = _AsyncPlain()
    return _async_plain


def _emit_now(
    sio: Any,
    name: str,
    payload: Mapping[str, Any],
    room: str,
    namespace: str,
    skip: Collection[str] = (),
) -> bool:
    """On the server's loop: put what ``await sio.emit(name, payload, room=room,
    namespace=namespace)`` sends -- the same Engine.IO packet, to the same participants
    -- into their Engine.IO queues now, and return True; or send nothing and return
    False where that could differ (a message-queue manager, an overridden emit or send,
    another packet encoding, the server's INFO log on), so that the caller awaits
    ``sio.emit`` instead. Sending now, without awaiting, keeps every send in the order
    it was made, whichever task made it."""
    plain = _plain_of()
    base = plain.plain
    cls = type(sio)
    eio = sio.eio
    overridden = vars(sio)
    packet_class = sio.packet_class
    if (
        plain.send_eio_packet is None
        or cls.emit is not plain.server_emit
        or getattr(cls, "_send_eio_packet", None) is not plain.send_eio_packet
        or "emit" in overridden
        or "_send_eio_packet" in overridden
        or type(sio.manager).emit is not plain.manager_emit
        or type(eio).send_packet is not plain.eio_send_packet
        or "send_packet" in vars(eio)
        or packet_class.encode is not base.packet_encode
        or packet_class.json.dumps is not base.json_dumps
        or sio.logger.isEnabledFor(logging.INFO)
        or eio.logger.isEnabledFor(logging.INFO)
    ):
        return False
    try:
        text = base.encode(payload)
        quoted = base.names.get(name) or base.names.setdefault(name, base.encode(name))
    except (TypeError, ValueError, RecursionError):
        return False
    head = base.event if namespace == "/" else base.event + namespace + ","
    packet = base.eio_packet(base.message, f"{head}[{quoted},{text}]")
    sockets = eio.sockets
    targets = []
    for sid, eio_sid in sio.manager.get_participants(namespace, room):
        if skip and sid in skip:
            continue
        sock = sockets.get(eio_sid)
        if sock is None or sock.closed:
            continue  # it left meanwhile; the rest of the room still gets the event
        if type(sock).send is not plain.socket_send:
            return False  # pragma: no cover - an Engine.IO socket of another kind
        targets.append(sock)
    for sock in targets:
        sock.queue.put_nowait(packet)
    return True


class AsyncSocketIOAdapter(_Rooms, AsyncAdapter):
    """Serves task events to Socket.IO clients of a python-socketio ``AsyncServer``,
    one room per subject: the same protocol, options and guarantees as
    :class:`~taskevents.adapters.socketio.SocketIOAdapter` (snapshot then live stream
    with no gap and no duplicate, resume with ``since``, progress coalescing,
    validation, rate limits, the authentication and authorisation hooks).

    :param server: a ``socketio.AsyncServer``.
    :param authenticate: as for ``SocketIOAdapter``; here it may also be an ``async
        def`` function, which is awaited. A plain function runs in a worker thread, so
        that a slow one (a database, an HTTP call) does not hold up the loop; either
        must answer within ``authenticate_timeout`` seconds (10), else the client
        is refused.

    The other parameters are ``SocketIOAdapter``'s. The adapter binds itself to the
    server's event loop when the first client connects (or when :meth:`connect` or
    :meth:`~taskevents.AsyncAdapter.bind` is called on a running loop); events emitted
    before then have no one to go to and are not queued. Emit from any thread or from
    coroutines on the loop: emitting only queues. ``authorize`` is called on the loop,
    so it should be quick (no I/O); with a state store shared by processes (Redis),
    subscribe and ``get_all_tasks`` read the store in a worker thread, never on the
    loop. Close it with ``await`` :meth:`aclose` on the loop, or :meth:`close` from
    another thread.
    """

    #: Seconds the ``authenticate`` hook may take before the client is refused.
    authenticate_timeout: float = 10.0
    # Sends that must be awaited (see _send_now), one after another, in order.
    _chain: asyncio.Future[None] | None = None

    # -- the server ----------------------------------------------------------------------

    @staticmethod
    def _server_of(server: Any) -> Any:
        socketio = require("socketio", extra="asgi", needed_by="AsyncSocketIOAdapter")
        if not isinstance(server, socketio.AsyncServer):
            hint = ""
            if isinstance(server, socketio.Server) or hasattr(server, "init_app"):
                hint = " (for a socketio.Server or Flask-SocketIO, use SocketIOAdapter)"
            raise ValidationError("server", "a python-socketio AsyncServer" + hint, server)
        return server

    def _install_guards(self, max_backlog: int, max_backlog_bytes: int) -> None:
        sio = self.sio
        # Client events named like the connection handlers never reach them.
        self._unguarded_handle_event = sio._handle_event
        sio._handle_event = self._guard_reserved
        self._guard = AsyncGuard(sio, max_packets=max_backlog, max_bytes=max_backlog_bytes)
        self._guard.install()

    def _handler_table(self) -> tuple[tuple[str, Callable[..., Any]], ...]:
        shared = bool(getattr(self.emitter.state, "shared", False))
        return (
            ("connect", self._on_connect_async),
            ("disconnect", self._on_disconnect),
            # A shared store (Redis) is read over the network: not on the loop.
            (
                "subscribe_task",
                self._in_thread(self._on_subscribe) if shared else self._on_subscribe,
            ),
            ("unsubscribe_task", self._on_unsubscribe),
            ("get_all_tasks", self._in_thread(self._on_get_all) if shared else self._on_get_all),
            ("*", self._on_unknown),
        )

    @staticmethod
    def _in_thread(handler: Callable[..., None]) -> Callable[..., Any]:
        async def in_thread(sid: str, *args: Any) -> None:
            await asyncio.to_thread(handler, sid, *args)

        return in_thread

    # -- the loop ------------------------------------------------------------------------

    def connect(self: A, emitter: object | None = None) -> A:
        """Start serving the events of ``emitter`` (by default the one given at
        construction). Called on a running loop, it binds the adapter to it; elsewhere,
        the adapter binds itself when the first client connects."""
        sender = self.emitter if emitter is None else emitter
        subject_forgotten.connect(self._on_forgotten, sender=sender, weak=False)
        if self.remote:
            subject_forgotten.connect(self._on_forgotten, sender=REMOTE, weak=False)
        if self._loop is None:
            with contextlib.suppress(UsageError):  # no running loop: the first client binds
                self.bind()
        if self._loop is not None:
            self._begin()
        Adapter.connect(self, sender)
        return self

    def _begin(self) -> None:
        """Start the worker and the backlog check; on the adapter's loop, or soon."""
        self._start()
        if self._on_loop():
            self._guard.start()
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._guard.start)

    def handle(self, event: TaskEvent) -> None:
        if self._loop is None:
            return  # not served yet: no client can be connected, nothing to queue
        super().handle(event)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop serving: the handlers leave the server, queued updates are sent (for up
        to ``timeout`` seconds), the worker and the backlog check stop."""
        self._unregister()
        if self.sio.__dict__.get("_handle_event") == self._guard_reserved:
            self.sio._handle_event = self._unguarded_handle_event
        self._guard.uninstall()
        await super().aclose(timeout)
        self._still_busy.clear()

    def close(self, timeout: float = 10.0) -> None:
        """:meth:`aclose` from another thread than the loop's (see
        :meth:`taskevents.AsyncAdapter.close`)."""
        if self._loop is None or not self._started:
            self._unregister()
            if self.sio.__dict__.get("_handle_event") == self._guard_reserved:
                self.sio._handle_event = self._unguarded_handle_event
            self._guard.uninstall()
        super().close(timeout)
        self._still_busy.clear()

    # -- events to clients ---------------------------------------------------------------

    async def deliver(self, event: TaskEvent) -> None:
        still_busy = bool(self._still_busy) and event.id in self._still_busy
        payload = update_payload(event, still_busy=still_busy)
        room = room_for(event.subject)
        skip = self._skip_for(event) if event.subject in self._floors else ()
        if self._chain is not None or not _emit_now(
            self.sio, "task_status_update", payload, room, self.namespace, skip
        ):
            await self._after_chain(
                self.sio.emit(
                    "task_status_update",
                    payload,
                    room=room,
                    namespace=self.namespace,
                    skip_sid=list(skip) or None,
                )
            )
        if still_busy:
            self._still_busy.discard(event.id)

    def _after_chain(self, awaitable: Any) -> asyncio.Future[None]:
        """Await ``awaitable`` after every send awaited so far (on the loop)."""
        before = self._chain

        async def run() -> None:
            if before is not None:
                await asyncio.wait({before})
            try:
                await awaitable
            finally:
                if self._chain is future:
                    self._chain = None

        future: asyncio.Future[None] = asyncio.ensure_future(run())
        self._chain = future
        return future

    def _soon(self, func: Callable[..., Any], *args: Any) -> None:
        """``func(*args)`` on the loop: now when called there, else as soon as it can
        (calls from one thread keep their order)."""
        if self._on_loop():
            func(*args)
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(func, *args)

    def _send(self, sid: str, name: str, payload: Mapping[str, Any]) -> None:
        self._soon(self._send_now, sid, name, payload)

    def _send_now(self, sid: str, name: str, payload: Mapping[str, Any]) -> None:
        if self._chain is None and _emit_now(self.sio, name, payload, sid, self.namespace):
            return
        self._after_chain(self.sio.emit(name, payload, to=sid, namespace=self.namespace))

    def _enter_room(self, sid: str, room: str) -> None:
        self._soon(self._room_now, True, sid, room)

    def _leave_room(self, sid: str, room: str) -> None:
        self._soon(self._room_now, False, sid, room)

    def _room_now(self, enter: bool, sid: str, room: str) -> None:
        manager = self.sio.manager
        plain = _plain_of()
        if enter and type(manager).enter_room is plain.manager_enter and self._chain is None:
            manager.basic_enter_room(sid, self.namespace, room)
        elif not enter and type(manager).leave_room is plain.manager_leave and self._chain is None:
            manager.basic_leave_room(sid, self.namespace, room)
        else:
            change = self.sio.enter_room if enter else self.sio.leave_room
            self._after_chain(change(sid, room, namespace=self.namespace))

    def _start_greet(self, sid: str) -> None:
        self.sio.start_background_task(self._greet, sid)

    async def _greet(self, sid: str) -> None:
        for _ in range(400):  # up to about 2 s
            if self.sio.manager.is_connected(sid, self.namespace):
                self._greet_once(sid)
                return
            with self._clients_lock:
                if sid not in self._clients:
                    return
            await asyncio.sleep(0.005)

    def _start_expiry(self) -> Any:
        return self.sio.start_background_task(self._expire)

    async def _expire(self) -> None:
        """Close connections whose identity has expired; runs while any may."""
        while not self._closed:
            await asyncio.sleep(0.25)
            for sid in self._expired():
                self._send(sid, "error", dict(self.EXPIRED))
                await self.sio.disconnect(sid, namespace=self.namespace)

    # -- handlers ------------------------------------------------------------------------

    async def _on_connect_async(self, sid: str, *args: Any) -> Any:
        if self._loop is None:
            self.bind()
        if not self._started:
            self._begin()
        environ: Any = args[0] if args else None
        auth = args[1] if len(args) > 1 else None
        if not self._connecting(sid, environ):
            return None
        outcome: tuple[bool, Any, float | None] = (True, None, None)
        if self.authenticate is not None:
            outcome = await self.authenticated(environ, auth)
        stream = None
        if outcome[0] and getattr(self.emitter.state, "shared", False):
            # the store's stream id: a read over the network, not on the loop
            stream = await asyncio.to_thread(lambda: self.stream_id)
        self._admit(sid, environ, outcome, stream)
        return None

    async def authenticated(self, environ: Any, auth: Any) -> tuple[bool, Any, float | None]:
        """Run the ``authenticate`` hook without blocking the loop: an ``async def``
        hook is awaited, a plain one runs in a worker thread (it may do I/O); either is
        given ``authenticate_timeout`` seconds, then the client is refused. Returns
        ``(accepted, identity, seconds_left)``."""
        hook = self.authenticate
        if hook is None:
            return True, None, None
        timeout = self.authenticate_timeout
        try:
            if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
                getattr(hook, "__call__", None)  # noqa: B004 - an object with async __call__
            ):
                result = await asyncio.wait_for(hook(environ, auth), timeout)
            else:
                result = await asyncio.wait_for(asyncio.to_thread(hook, environ, auth), timeout)
                if inspect.isawaitable(result):
                    result = await asyncio.wait_for(result, timeout)
            return resolve_identity(result)
        except asyncio.TimeoutError:
            self._report_hook(
                TimeoutError(f"no answer in {timeout:g} s"), "in the authenticate hook"
            )
        except Exception as exc:
            self._report_hook(exc, "in the authenticate hook")
        return False, None, None

    async def _guard_reserved(self, eio_sid: str, namespace: str | None, id: Any, data: Any) -> Any:
        # As SocketIOAdapter._guard_reserved: an event called "connect" or "disconnect"
        # never reaches the connection handlers.
        if (
            not self._closed
            and isinstance(data, list)
            and data
            and isinstance(data[0], str)
            and data[0] in RESERVED_EVENTS
        ):
            if (namespace or "/") == self.namespace:
                sid = self.sio.manager.sid_from_eio_sid(eio_sid, self.namespace)
                if sid is not None and self.sio.manager.is_connected(sid, self.namespace):
                    self._on_unknown(data[0], sid)
            return None
        return await self._unguarded_handle_event(eio_sid, namespace, id, data)

    async def all_tasks_async(self, identity: Any = None) -> dict[str, Any]:
        """:meth:`all_tasks` without blocking the loop: a shared store (Redis) is read
        in a worker thread."""
        if getattr(self.emitter.state, "shared", False):
            return await asyncio.to_thread(self.all_tasks, identity)
        return self.all_tasks(identity)
