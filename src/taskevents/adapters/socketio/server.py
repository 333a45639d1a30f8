"""The Socket.IO server: binds the protocol (:mod:`.protocol`) to python-socketio.

The :class:`SocketIOAdapter` serves the wire protocol of the original TaskMaster system
(its clients keep working unchanged) and adds to it: a snapshot with a seq on subscribe,
gap-free resume with ``since``, progress coalescing, input validation with clear errors,
and authentication and authorisation hooks. It works with a Flask-SocketIO
``SocketIO`` (initialised with an app) and with a bare python-socketio ``Server``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar

from taskevents._checks import number, positive_int
from taskevents._optional import require
from taskevents._reporting import ErrorReporter
from taskevents.adapters.base import BackgroundAdapter, _QueuedAdapter
from taskevents.adapters.socketio._backlog import BacklogGuard
from taskevents.adapters.socketio._frames import guard_frames
from taskevents.emitter import Emitter
from taskevents.events import OUTCOME_TYPES, TaskEvent
from taskevents.exceptions import StoreUnavailable, ValidationError
from taskevents.signals import REMOTE, subject_forgotten
from taskevents.state import SubjectState

from .protocol import (
    PROTOCOL_VERSION,
    RESERVED_EVENTS,
    AccessPolicy,
    Authenticate,
    Authorize,
    BadRequest,
    SubjectBudget,
    TokenBucket,
    all_tasks_payload,
    budget_key,
    client_address,
    effective_since,
    join_messages,
    parse_get_all,
    parse_subscribe,
    parse_unsubscribe,
    resolve_identity,
    room_for,
    same_identity,
    too_many_requests,
    unknown_event,
    update_payload,
)

__all__ = ["SocketIOAdapter"]

logger = logging.getLogger("taskevents")

H = TypeVar("H", bound=Callable[..., None])
R = TypeVar("R", bound="_Rooms")


_EVENT_OF = {
    "_on_subscribe": "subscribe_task",
    "_on_unsubscribe": "unsubscribe_task",
    "_on_get_all": "get_all_tasks",
}


def _request(method: H) -> H:
    """A handler of a client request: the client is greeted first (so
    ``connection_status`` is always its first event), and a :class:`BadRequest` is
    answered with ``error``, to that client only."""

    event = _EVENT_OF[method.__name__]

    @functools.wraps(method)
    def handler(self: _Rooms, sid: str, *args: Any) -> None:
        self._greet_once(sid)
        try:
            method(self, sid, *args)
        except BadRequest as problem:
            self._send(sid, "error", problem.payload)
        except StoreUnavailable as exc:
            # Logged here; the client is not told the exception's text (it names the
            # server), only that it may try again.
            self.errors.report(exc, f"to answer {event}", traceback=False)
            self._send(
                sid,
                "error",
                {
                    "message": f"{event}: the state store is unavailable; try again shortly",
                    "event": event,
                    "retry_after": 1.0,
                },
            )

    return handler  # type: ignore[return-value]


class _Plain:
    """python-socketio's own emit machinery, imported once (see :func:`_emit_direct`)."""

    def __init__(self) -> None:
        import json

        import engineio.exceptions
        import engineio.packet
        import socketio.packet

        self.socket_closed = engineio.exceptions.SocketIsClosedError
        self.server_emit = socketio.Server.emit
        #: What Manager.emit sends each packet through (python-socketio 5.9 and later).
        self.send_eio_packet = getattr(socketio.Server, "_send_eio_packet", None)
        self.manager_emit = socketio.Manager.emit
        self.packet_encode = socketio.packet.Packet.encode
        self.json_dumps = json.dumps
        #: ``json.dumps(data, separators=(",", ":"))``, as the packet encoding calls it,
        #: without building a new encoder per call...
        encoder = json.JSONEncoder(separators=(",", ":"))
        self.encode: Callable[[Any], str] = encoder.encode
        # ...nor the C encoder json.dumps builds inside, where it has one: made once,
        # without the circular-reference check (event data are JSON copies, so a payload
        # is a tree; a circular one would raise RecursionError and go through sio.emit),
        # and used only if it writes what json.dumps writes.
        make: Any = getattr(json.encoder, "c_make_encoder", None)
        try:
            iterencode = make(
                None,
                encoder.default,
                json.encoder.encode_basestring_ascii,
                None,
                ":",
                ",",
                False,
                False,
                True,
            )
            sample = ["e", {"s": "\u00e9\n\U0001f600", "n": [1, -2.5, 1e300], "o": {}}]
            if "".join(iterencode(sample, 0)) == encoder.encode(sample):
                self.encode = lambda data: "".join(iterencode(data, 0))
        except Exception:  # no C encoder here, or another signature
            pass
        self.eio_packet = engineio.packet.Packet
        #: Event name -> its JSON text, as json.dumps writes it.
        self.names: dict[str, str] = {}
        self.message = engineio.packet.MESSAGE
        self.event = str(socketio.packet.EVENT)


_plain: _Plain | None = None


def _emit_direct(
    sio: Any,
    name: str,
    payload: dict[str, Any],
    room: str,
    namespace: str,
    skip: Collection[str] = (),
) -> bool:
    """Send what ``sio.emit(name, payload, room=room, namespace=namespace)`` sends -- the
    same Engine.IO packet, character for character, to the same participants -- and
    return True; or send nothing and return False where that could differ, so that the
    caller emits as usual.

    It goes direct only with python-socketio's own ``Server.emit`` and
    ``_send_eio_packet`` (which hands the packet to ``eio.send_packet``) and in-process
    ``Manager`` (a message-queue manager publishes instead), the standard packet encoding
    with the stdlib ``json`` module, and the server's INFO log off (``emit`` logs each
    call). It then saves, per event: the log calls, the packet object and its recursive
    search for binary data (needless: a payload with bytes fails to encode, and then the
    caller emits as usual), a new JSON encoder per ``json.dumps``, and a call per
    recipient.
    """
    global _plain
    plain = _plain
    if plain is None:
        plain = _plain = _Plain()
    manager = sio.manager
    packet_class = sio.packet_class
    cls = type(sio)
    overridden = vars(sio)
    if (
        plain.send_eio_packet is None
        or cls.emit is not plain.server_emit
        or getattr(cls, "_send_eio_packet", None) is not plain.send_eio_packet
        or "emit" in overridden
        or "_send_eio_packet" in overridden
        or type(manager).emit is not plain.manager_emit
        or packet_class.encode is not plain.packet_encode
        or packet_class.json.dumps is not plain.json_dumps
        or sio.logger.isEnabledFor(logging.INFO)
    ):
        return False
    try:
        text = plain.encode(payload)
        quoted = plain.names.get(name) or plain.names.setdefault(name, plain.encode(name))
    except (TypeError, ValueError, RecursionError):
        return False
    # The packet type, the namespace unless "/", then json.dumps([name, payload]), which
    # is "[" + json.dumps(name) + "," + json.dumps(payload) + "]".
    head = plain.event if namespace == "/" else plain.event + namespace + ","
    packet = plain.eio_packet(plain.message, f"{head}[{quoted},{text}]")
    send = sio.eio.send_packet
    closed = plain.socket_closed
    for sid, eio_sid in manager.get_participants(namespace, room):
        if skip and sid in skip:
            continue
        try:
            send(eio_sid, packet)
        except closed:
            continue  # it left meanwhile; the rest of the room still gets the event
    return True


class _Client:
    __slots__ = (
        "all_tasks",
        "budget_key",
        "expires",
        "greeted",
        "identity",
        "subjects",
        "subscribes",
    )

    def __init__(
        self, identity: Any, subscribes: TokenBucket, all_tasks: TokenBucket, address: Any
    ) -> None:
        self.identity = identity
        self.budget_key = budget_key(identity, address if isinstance(address, str) else None)
        self.subjects: set[str] = set()
        self.greeted = False
        self.subscribes = subscribes
        self.all_tasks = all_tasks
        self.expires: float | None = None  # time.monotonic() deadline


class _Rooms(_QueuedAdapter):
    """What the threaded and the asyncio Socket.IO adapters share: the clients, their
    subscriptions and limits, the snapshot-then-stream joins, ordering across
    processes, and the request handlers (which run on either server: only the I/O
    hooks below differ). Each subclass brings the queue's worker (its second base) and
    the I/O: ``deliver``, ``_send``, ``_enter_room``, ``_leave_room``, ``_start_greet``,
    ``_start_expiry`` and ``_install_guards``."""

    #: Every process's events, when a :class:`taskevents.redis.RedisBridge` brings them
    #: in: each web process serves its own clients, whichever process emitted. A new
    #: subscriber is not sent an update its snapshot (or resume) already holds, whichever
    #: process emitted it, nor does it miss one that arrives while it subscribes.
    remote = True

    def __init__(
        self,
        server: Any,
        emitter: Emitter,
        *,
        namespace: str = "/",
        progress_interval: float = 0.1,
        authenticate: Authenticate | None = None,
        authorize: Authorize | None = None,
        max_subscriptions: int = 100,
        subscribe_burst: int | None = None,
        subscribe_rate: float = 5.0,
        all_tasks_burst: int = 5,
        all_tasks_rate: float = 1.0,
        subjects: Iterable[str] | None = None,
        max_backlog: int = 1000,
        max_backlog_bytes: int = 16 << 20,
    ) -> None:
        sio = self._server_of(server)
        if not isinstance(emitter, Emitter):
            raise ValidationError("emitter", "a taskevents.Emitter", emitter)
        if not isinstance(namespace, str) or not namespace.startswith("/"):
            raise ValidationError("namespace", "a string starting with '/'", namespace)
        positive_int(max_subscriptions, "max_subscriptions")
        positive_int(max_backlog, "max_backlog")
        positive_int(max_backlog_bytes, "max_backlog_bytes")
        if subscribe_burst is None:
            # a reconnecting client re-subscribes to everything at once
            subscribe_burst = max(20, max_subscriptions)
        positive_int(subscribe_burst, "subscribe_burst")
        subscribe_rate = number(subscribe_rate, "subscribe_rate", above=0)
        positive_int(all_tasks_burst, "all_tasks_burst")
        all_tasks_rate = number(all_tasks_rate, "all_tasks_rate", above=0)
        for name, hook in (("authenticate", authenticate), ("authorize", authorize)):
            if hook is not None and not callable(hook):
                raise ValidationError(name, "a callable or None", hook)
        if authorize is not None and inspect.iscoroutinefunction(authorize):
            raise ValidationError(
                "authorize",
                "a plain function returning True or False, not an async def one: it is "
                "asked for every subject a client lists, so look what it needs up in "
                "authenticate (which may be async) and keep it in the identity",
                authorize,
            )
        # An in-process emit rarely fails (a message-queue manager may): retry soon,
        # and never give a lifecycle event up while the adapter is open.
        super().__init__(
            subjects=subjects,
            progress_interval=progress_interval,
            retry_initial=0.05,
            retry_max=2.0,
        )
        self.sio = sio
        self.emitter = emitter
        #: Errors of the authenticate and authorize hooks, apart from delivery errors (so a
        #: client cannot hide those) and logged without message or traceback (which may
        #: hold the token a client sent).
        self.hook_errors = ErrorReporter(f"adapter {type(self).__name__}")
        self.access = AccessPolicy(authorize, self.subjects, self._report_hook)
        self.namespace = namespace
        self.authenticate = authenticate
        self.authorize = authorize
        self.max_subscriptions = max_subscriptions
        self.subscribe_burst = subscribe_burst
        self.subscribe_rate = subscribe_rate
        self.all_tasks_burst = all_tasks_burst
        self.all_tasks_rate = all_tasks_rate
        self._clients: dict[str, _Client] = {}
        self._clients_lock = threading.Lock()
        self._still_busy: set[str] = set()
        self._pending_joins: set[tuple[str, str]] = set()
        # subject -> sid -> the seq of the snapshot the client joined with: updates up to
        # it are not sent to it (see _join). Under _clients_lock; one entry per live
        # subscription at most, gone once an update passes it.
        self._floors: dict[str, dict[str, int]] = {}
        # Held while a subscribe reads its snapshot and queues the join, and while an
        # event of another process is queued (see _receive).
        self._remote_gate = threading.Lock()
        # This adapter's stream id, for a store that has none of its own (see stream_id),
        # and the last one sent to a client.
        self._own_stream = uuid.uuid4().hex[:16]
        self._stream = self._own_stream
        # With a store shared by processes (see _in_seq): subject -> the highest seq
        # queued, and the ids of events queued before they arrived here. Under
        # _remote_gate.
        self._ordering = (
            self.remote and self._every_type and bool(getattr(emitter.state, "shared", False))
        )
        self._queued_seq: dict[str, int] = {}
        # The last snapshot_all() read and when it ended (see _snapshot_all).
        self._all_lock = threading.Lock()
        #: How many subjects each client may have listed (``get_all_tasks``, and the
        #: Flask extension's ``GET /api/tasks``): see
        #: :class:`~taskevents.adapters.socketio.protocol.SubjectBudget`.
        self.subject_budget = SubjectBudget()
        self._all_read: tuple[dict[str, SubjectState] | StoreUnavailable | None, float] = (
            None,
            0.0,
        )
        self._ahead: dict[str, set[str]] = {}
        self._handlers: tuple[tuple[str, Callable[..., Any]], ...] = self._handler_table()
        for event, handler in self._handlers:
            sio.on(event, handler, namespace=namespace)
        self._closed = False
        self._expiry_task: Any = None
        self._install_guards(max_backlog, max_backlog_bytes)

    # -- what each server brings ---------------------------------------------------------

    def _handler_table(self) -> tuple[tuple[str, Callable[..., Any]], ...]:
        """The Socket.IO event handlers the adapter registers on its namespace."""
        return (
            ("connect", self._on_connect),
            ("disconnect", self._on_disconnect),
            ("subscribe_task", self._on_subscribe),
            ("unsubscribe_task", self._on_unsubscribe),
            ("get_all_tasks", self._on_get_all),
            ("*", self._on_unknown),
        )

    @staticmethod
    def _server_of(server: Any) -> Any:
        """The python-socketio server that ``server`` is or wraps; raises
        :class:`ValidationError` naming ``server`` otherwise."""
        raise NotImplementedError

    def _install_guards(self, max_backlog: int, max_backlog_bytes: int) -> None:
        """Guard the server against reserved event names, malformed frames and clients
        that stop reading."""
        raise NotImplementedError

    def _send(self, sid: str, name: str, payload: Mapping[str, Any]) -> None:
        """Send ``name`` to one client, after whatever was sent to it before; never
        blocks (callable from any thread)."""
        raise NotImplementedError

    def _enter_room(self, sid: str, room: str) -> None:
        raise NotImplementedError

    def _leave_room(self, sid: str, room: str) -> None:
        raise NotImplementedError

    def _start_greet(self, sid: str) -> None:
        """Send ``connection_status`` once python-socketio has confirmed the connection."""
        raise NotImplementedError

    def _start_expiry(self) -> Any:
        """Start the task that closes connections whose identity expired (see
        :meth:`_expired`)."""
        raise NotImplementedError

    def _unregister(self) -> None:
        """Take the handlers off the server; what close() does first."""
        self._closed = True
        handlers = self.sio.handlers.get(self.namespace, {})
        for event, handler in self._handlers:
            if handlers.get(event) == handler:
                del handlers[event]

    def _expired(self) -> list[str]:
        """The clients whose identity has expired since the last call."""
        now = time.monotonic()
        with self._clients_lock:
            due = [
                sid
                for sid, client in self._clients.items()
                if client.expires is not None and client.expires <= now
            ]
            for sid in due:
                self._clients[sid].expires = None
        return due

    #: What a client whose identity expired is sent before it is disconnected.
    EXPIRED: Mapping[str, Any] = {
        "message": "authentication expired; connect again",
        "event": "connect",
        "reason": "expired",
    }

    @property
    def stream_id(self) -> str:
        """Names the stream the seqs sent to clients belong to; a client that resumes
        with a seq of another stream is sent a fresh snapshot (``resync``). The store's
        :attr:`~taskevents.redis.RedisStateStore.stream_id` when it has one, so that a
        client can resume on any process sharing the store; otherwise the adapter's own
        (a restarted server has a new one)."""
        stream = getattr(self.emitter.state, "stream_id", None)
        return stream if isinstance(stream, str) else self._own_stream

    def connect(self: R, emitter: object | None = None) -> R:
        """Start serving the events of ``emitter`` (by default the one given at
        construction)."""
        sender = self.emitter if emitter is None else emitter
        subject_forgotten.connect(self._on_forgotten, sender=sender, weak=False)
        if self.remote:
            subject_forgotten.connect(self._on_forgotten, sender=REMOTE, weak=False)
        return super().connect(sender)

    def disconnect(self) -> None:
        """Stop receiving events (clients stay connected)."""
        subject_forgotten.disconnect(self._on_forgotten)
        super().disconnect()

    @property
    def client_count(self) -> int:
        """How many clients are connected to the namespace."""
        with self._clients_lock:
            return len(self._clients)

    # -- events to clients ---------------------------------------------------------

    def handle(self, event: TaskEvent) -> None:
        if event.type in OUTCOME_TYPES and self._runs_on(event):
            # Another task still runs (exclusive=False): known now, not when delivered.
            self._still_busy.add(event.id)
        super().handle(event)

    def _runs_on(self, event: TaskEvent) -> bool:
        """Whether a task still runs on the subject of the outcome ``event``: from the
        store's note of it when it has one (the Redis store, without a round trip),
        else by asking."""
        state = self.emitter.state
        running_after = getattr(state, "running_after", None)
        if running_after is not None:
            known = running_after(event.subject, event.seq)
            if isinstance(known, bool):
                return known
        return state.running_task(event.subject) is not None

    def _receive(self, sender: object, *, event: TaskEvent) -> None:
        if self._ordering:
            subjects = self.subjects
            if (subjects is not None and event.subject not in subjects) or not self._takes(sender):
                return
            with self._remote_gate:
                for one in self._in_seq(event):
                    super()._receive(sender, event=one)
        elif sender is REMOTE:
            # An event of another process is not held back by this emitter's ordered():
            # queue it either before a subscribe's snapshot is read or after its join is
            # queued, never in between, so that no client misses it (see _join).
            with self._remote_gate:
                super()._receive(sender, event=event)
        else:
            super()._receive(sender, event=event)

    def _in_seq(self, event: TaskEvent) -> list[TaskEvent]:
        """What to queue, in seq order, now that ``event`` is here. With a store shared by
        processes, this process's own events arrive as they are emitted and the others'
        through the bridge, a little later: one of ours can come before an earlier one
        of another process. Then the events in between are read from the store's
        history and queued first; when they arrive themselves, they are not queued
        again."""
        subject, seq = event.subject, event.seq
        last = self._queued_seq.get(subject)
        ahead = self._ahead.get(subject)
        if last is None or seq == last + 1:
            self._queued_seq[subject] = seq
            return [event]
        if seq <= last:
            if ahead is not None and event.id in ahead:
                ahead.discard(event.id)
                if not ahead:
                    del self._ahead[subject]
                return []  # queued already, from the history
            if not self._restarted(subject, last):
                return []  # given twice (e.g. two bridges on one store): queued already
            # A sequence that starts again (the store lost its data, or the subject was
            # forgotten and this process missed it): from here on.
            self._ahead.pop(subject, None)
            self._queued_seq[subject] = seq
            return [event]
        try:
            missed = self.emitter.state.history(subject, last) or []
        except Exception as exc:  # the store unreachable: this one, at least, goes out
            self.errors.report(exc, f"to read the events of {subject!r} after seq {last}")
            missed = []
        between = [one for one in missed if last < one.seq < seq and self.accepts(one)]
        if between:
            if ahead is None or len(ahead) > 10_000:  # some never come: keep it bounded
                ahead = self._ahead[subject] = set()
            ahead.update(one.id for one in between)
        self._queued_seq[subject] = seq
        return [*between, event]

    def _restarted(self, subject: str, last: int) -> bool:
        """Whether the store's sequence for ``subject`` is behind ``last``, the highest
        seq queued here (it started again); asked only when an event comes again."""
        try:
            return self.emitter.state.last_seq(subject) < last
        except Exception as exc:
            self.errors.report(exc, f"to read the last seq of {subject!r}")
            return False

    def _skip_for(self, event: TaskEvent) -> set[str]:
        """The clients of the room that have ``event`` in their snapshot already; the
        floors it passes are dropped."""
        with self._clients_lock:
            floors = self._floors.get(event.subject)
            if floors is None:
                return set()
            skip = {sid for sid, seq in floors.items() if event.seq <= seq}
            for sid in [sid for sid in floors if sid not in skip]:
                del floors[sid]
            if not floors:
                del self._floors[event.subject]
            return skip

    def _drop_floor(self, sid: str, subject: str) -> None:
        """Forget a client's floor for ``subject``; called with _clients_lock held."""
        floors = self._floors.get(subject)
        if floors is not None and floors.pop(sid, None) is not None and not floors:
            del self._floors[subject]

    def _from_server(self, sid: str, environ: object) -> bool:
        """Whether a connect handler call comes from python-socketio itself: only it
        can pass the connection's own environ object."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, self.namespace)
        return eio_sid is not None and self.sio.environ.get(eio_sid) is environ

    def _on_connect(self, sid: str, *args: Any) -> Any:
        environ: Any = args[0] if args else None
        auth = args[1] if len(args) > 1 else None
        if not self._connecting(sid, environ):
            return None
        outcome: tuple[bool, Any, float | None] = (True, None, None)
        if self.authenticate is not None:
            try:
                outcome = resolve_identity(self.authenticate(environ, auth))
            except Exception as exc:
                self._report_hook(exc, "in the authenticate hook")
                outcome = (False, None, None)
        self._admit(sid, environ, outcome)
        return None

    def _connecting(self, sid: str, environ: object) -> bool:
        """Whether a connect handler call is a new connection, from python-socketio
        itself; a client's event called "connect" gets an ``error``."""
        with self._clients_lock:
            known = sid in self._clients
        if known or environ is None or not self._from_server(sid, environ):
            if known:
                self._on_unknown("connect", sid)
            return False
        return True

    def _admit(
        self,
        sid: str,
        environ: Any,
        outcome: tuple[bool, Any, float | None],
        stream: str | None = None,
    ) -> None:
        """Admit a new connection with what ``authenticate`` said (``accepted,
        identity, seconds_left``), or refuse it. ``stream``: the stream id, if the
        caller has read it already."""
        accepted, identity, seconds_left = outcome
        if not accepted:
            socketio = require("socketio", extra="socketio", needed_by=type(self).__name__)
            raise socketio.exceptions.ConnectionRefusedError("authentication failed")
        # read afresh: what connection_status carries
        self._stream = self.stream_id if stream is None else stream
        client = _Client(
            identity,
            TokenBucket(self.subscribe_burst, self.subscribe_rate),
            TokenBucket(self.all_tasks_burst, self.all_tasks_rate),
            client_address(environ),
        )
        with self._clients_lock:
            self._clients[sid] = client
            if seconds_left is not None:
                client.expires = time.monotonic() + seconds_left
                if self._expiry_task is None:
                    self._expiry_task = self._start_expiry()
        # python-socketio confirms the connection only after this handler returns;
        # greet the client once it has, so no event precedes the confirmation.
        self._start_greet(sid)

    def _report_hook(self, exc: Exception, doing: str) -> None:
        self.hook_errors.report(exc, doing, traceback=False, detail=False)

    def greet(self, sid: str) -> None:
        """Send ``connection_status`` to ``sid`` now unless it was sent: for handlers of
        the app's own on the adapter's namespace, so that it stays the first event a
        client gets."""
        self._greet_once(sid)

    def _greet_once(self, sid: str) -> _Client | None:
        """Send ``connection_status`` unless sent already; every handler calls this
        first, so it is always the first event a client gets."""
        with self._clients_lock:
            client = self._clients.get(sid)
            if client is not None and not client.greeted:
                client.greeted = True
                self._send(
                    sid,
                    "connection_status",
                    {
                        "status": "connected",
                        "client_id": sid,
                        "protocol": PROTOCOL_VERSION,
                        "stream": self._stream,
                    },
                )
            return client

    def _on_disconnect(self, sid: str, *args: Any) -> None:
        if self.sio.manager.is_connected(sid, self.namespace):
            # python-socketio calls this handler only for a client on its way out; a
            # client still connected sent an event called "disconnect".
            self._on_unknown("disconnect", sid)
            return
        with self._clients_lock:
            client = self._clients.pop(sid, None)
            for subject in client.subjects if client is not None else ():
                self._drop_floor(sid, subject)

    def revoke(self, identity: Any, subject: str | None = None) -> int:
        """Withdraw ``identity``'s access to ``subject`` (default: to every subject) at
        once: its clients leave those subjects' rooms and get ``unsubscribed`` with
        ``reason: "revoked"``. Make ``authorize`` refuse too, or they may subscribe
        again. Returns how many subscriptions were withdrawn."""
        return self._withdraw(
            lambda client, name: (
                same_identity(client.identity, identity) and (subject is None or name == subject)
            )
        )

    def recheck_access(self) -> int:
        """Ask ``authorize`` again about every subscription and withdraw (as
        :meth:`revoke` does) those it now refuses. Returns how many were withdrawn."""
        return self._withdraw(lambda client, name: not self.access.allowed(client.identity, name))

    def _withdraw(self, refused: Callable[[_Client, str], bool], reason: str = "revoked") -> int:
        # Ask about a copy, outside the lock: the hook may be slow or ask the adapter.
        with self._clients_lock:
            subscriptions = [
                (sid, client, name)
                for sid, client in self._clients.items()
                for name in sorted(client.subjects)
            ]
        refusals = [
            (sid, client, name) for sid, client, name in subscriptions if refused(client, name)
        ]
        withdrawn: list[tuple[str, str]] = []
        with self._clients_lock:
            for sid, client, name in refusals:
                if self._clients.get(sid) is client and name in client.subjects:
                    client.subjects.discard(name)
                    self._drop_floor(sid, name)
                    withdrawn.append((sid, name))
        for sid, name in withdrawn:
            self._leave_room(sid, room_for(name))
            self._send(sid, "unsubscribed", {"config_name": name, "reason": reason})
        return len(withdrawn)

    def _on_forgotten(self, sender: object, *, subject: str, reason: str) -> None:
        # In stream order: after every event of the subject queued so far. (Another
        # process's, like its events, not between a subscribe's snapshot and its join.)
        if not self._takes(sender):
            return
        with self._remote_gate:
            self._queued_seq.pop(subject, None)
            self._ahead.pop(subject, None)
            self.call_soon(subject, functools.partial(self._drop_subject, subject, reason))

    def _drop_subject(self, subject: str, reason: str) -> None:
        with self._clients_lock:
            sids = [sid for sid, client in self._clients.items() if subject in client.subjects]
            for sid in sids:
                self._clients[sid].subjects.discard(subject)
            self._floors.pop(subject, None)
        for sid in sids:
            self._leave_room(sid, room_for(subject))
            self._send(sid, "unsubscribed", {"config_name": subject, "reason": reason})

    def _on_unknown(self, event: str, sid: str, *args: Any) -> None:
        self._greet_once(sid)
        self._send(sid, "error", unknown_event(event).payload)

    def allowed(self, identity: Any, subject: str) -> bool:
        """Whether ``identity`` may watch ``subject`` (the adapter's ``subjects`` and
        the ``authorize`` hook); what the REST endpoints use as well."""
        return self.access.allowed(identity, subject)

    @_request
    def _on_subscribe(self, sid: str, *args: Any) -> None:
        event = "subscribe_task"
        request = parse_subscribe(args)
        subject = request.subject
        with self._clients_lock:
            client = self._clients.get(sid)
        if client is None:
            return
        if not client.subscribes.take():
            raise too_many_requests(
                event, self.subscribe_burst, self.subscribe_rate, config_name=subject
            )
        state = self.emitter.state
        if not self.access.allowed(client.identity, subject):
            raise BadRequest(
                event,
                f"{event}: not authorised to watch {subject!r}",
                field="config_name",
                config_name=subject,
            )
        if state.snapshot(subject) is None:
            raise BadRequest(
                event,
                f"{event}: unknown config_name {subject!r}",
                field="config_name",
                expected="the name of a registered config",
                config_name=subject,
            )
        with self._clients_lock:
            if subject not in client.subjects:
                if len(client.subjects) >= self.max_subscriptions:
                    raise BadRequest(
                        event,
                        f"{event}: at most {self.max_subscriptions} subscriptions per "
                        "client; unsubscribe from one first",
                        field="config_name",
                        config_name=subject,
                    )
                client.subjects.add(subject)
            if (sid, subject) in self._pending_joins:
                return  # the join already queued answers this one too
            self._pending_joins.add((sid, subject))
        stream = self._stream = self.stream_id
        since = effective_since(request.since, request.stream, stream)
        # The history is read before the gate is taken: the gate holds back every
        # subject's events, and a long replay may take a while to read.
        early = state.history(subject, since) if since is not None and since >= 0 else None
        with self.emitter.ordered(subject), self._remote_gate:
            # No event of the subject reaches the adapter until the worker has the join in
            # its queue, so the client gets exactly the events after the snapshot. (An
            # event of another process may be in the snapshot and still come after the
            # join: the join's floor keeps it from the client.)
            snapshot = state.snapshot(subject)
            replay = None
            if early is not None and snapshot is not None:
                read_up_to = early[-1].seq if early else since
                if read_up_to is not None and snapshot.seq > read_up_to:
                    more = state.history(subject, read_up_to)  # what came meanwhile
                    early = None if more is None else [*early, *more]
                if early is not None:  # nothing after the snapshot: it comes live
                    replay = [event for event in early if event.seq <= snapshot.seq]
            if snapshot is not None:
                self.call_soon(
                    subject, functools.partial(self._join, sid, snapshot, since, replay, stream)
                )
                return
        with self._clients_lock:  # forgotten meanwhile
            self._pending_joins.discard((sid, subject))
            client.subjects.discard(subject)
        self._send(sid, "unsubscribed", {"config_name": subject, "reason": "forgotten"})

    def _join(
        self,
        sid: str,
        snapshot: SubjectState,
        since: int | None,
        replay: list[TaskEvent] | None,
        stream: str,
    ) -> None:
        subject = snapshot.subject
        with self._clients_lock:
            self._pending_joins.discard((sid, subject))
            client = self._clients.get(sid)
            if client is None or subject not in client.subjects:
                return  # gone, or unsubscribed meanwhile
            # What the snapshot (or the resume) gives the client, it is not sent again:
            # whatever process emitted, its updates go on from the snapshot's seq.
            self._floors.setdefault(subject, {})[sid] = snapshot.seq
            self._enter_room(sid, room_for(subject))
        for name, payload in join_messages(snapshot, since, replay, stream):
            self._send(sid, name, payload)

    @_request
    def _on_unsubscribe(self, sid: str, *args: Any) -> None:
        subject = parse_unsubscribe(args)
        with self._clients_lock:
            client = self._clients.get(sid)
            if client is None:
                return
            client.subjects.discard(subject)
        self.call_soon(subject, functools.partial(self._leave, sid, subject))

    def _leave(self, sid: str, subject: str) -> None:
        with self._clients_lock:
            client = self._clients.get(sid)
            if client is None:
                return
            if subject not in client.subjects:
                self._drop_floor(sid, subject)
                self._leave_room(sid, room_for(subject))
        self._send(sid, "unsubscribed", {"config_name": subject})

    @_request
    def _on_get_all(self, sid: str, *args: Any) -> None:
        parse_get_all(args)
        with self._clients_lock:
            client = self._clients.get(sid)
            allowed = client is not None and client.all_tasks.take()
        if client is None:
            return
        if not allowed:
            raise too_many_requests("get_all_tasks", self.all_tasks_burst, self.all_tasks_rate)
        budget = self.subject_budget
        wait = budget.take(client.budget_key, self.listed_count())
        if wait > 0:
            raise BadRequest(
                "get_all_tasks",
                f"get_all_tasks: too many requests; this list may be fetched for at most "
                f"{budget.burst:,.0f} subjects at once, then {budget.rate:,.0f} a second "
                "(by every connection from the same client)",
                retry_after=max(1, math.ceil(wait)),
            )
        self._send(sid, "all_tasks", self.all_tasks(client.identity))

    def all_tasks(self, identity: Any = None) -> dict[str, Any]:
        """The ``all_tasks`` message: every subject ``identity`` may watch."""
        return all_tasks_payload(
            self._snapshot_all(), lambda subject: self.access.allowed(identity, subject)
        )

    def listed_count(self) -> int:
        """How many subjects a list of them all holds, for :attr:`subject_budget`: as
        many as the last read found (no read of the store), or, before any, the store's
        count."""
        outcome = self._all_read[0]
        if isinstance(outcome, dict):
            return len(outcome)
        return self.emitter.state.subject_count()

    def _snapshot_all(self) -> dict[str, SubjectState]:
        """The store's ``snapshot_all()``, read once for every request that comes while
        a read is under way: with thousands of subjects (on Redis, most of a second),
        a crowd of ``get_all_tasks`` costs one read, not one each. What a request gets
        was read after it came, or was being read when it came; a read that failed
        fails every request that waited for it (so that while the store does not
        answer, each waits one timeout at most, not one per request before it)."""
        asked = time.monotonic()
        with self._all_lock:
            outcome, read_at = self._all_read
            if read_at >= asked:
                if isinstance(outcome, StoreUnavailable):
                    raise StoreUnavailable(str(outcome))
                if outcome is not None:
                    return outcome
            try:
                snapshots = self.emitter.state.snapshot_all()
            except StoreUnavailable as exc:
                self._all_read = (exc, time.monotonic())
                raise
            self._all_read = (snapshots, time.monotonic())
            return snapshots


class SocketIOAdapter(_Rooms, BackgroundAdapter):
    """Serves task events to Socket.IO clients, one room per subject.

    :param server: a Flask-SocketIO ``SocketIO`` initialised with an app, or a
        python-socketio ``Server``.
    :param emitter: whose events and state to serve.
    :param namespace: the Socket.IO namespace the handlers are registered on. The
        adapter owns the ``connect``, ``disconnect``, ``subscribe_task``,
        ``unsubscribe_task`` and ``get_all_tasks`` handlers there (and a catch-all that
        answers unknown events with an ``error``); give it a namespace of its own if the
        app has handlers of its own on ``/``.
    :param progress_interval: at most one progress update per subject per this many
        seconds reaches clients (the latest wins; with ``exclusive=False``, each task's
        latest is kept when two report in turn); lifecycle events are never delayed
        by it.
    :param authenticate: called on connect; see :data:`Authenticate`. Default: everyone
        may connect.
    :param authorize: called on subscribe, and to filter ``all_tasks``; see
        :data:`Authorize`. Default: every client may watch every subject.
    :param max_subscriptions: how many subjects one client may watch at once.
    :param subscribe_burst: how many ``subscribe_task`` one client may send at once
        (default: ``max_subscriptions`` or 20, whichever is more, so a reconnecting
        client can re-subscribe to everything at once)...
    :param subscribe_rate: ...and then per second; more get an ``error`` with
        ``retry_after`` (seconds), since each can replay up to the history kept.
    :param all_tasks_burst: how many ``get_all_tasks`` one client may send at once...
    :param all_tasks_rate: ...and then per second; more get an ``error`` with
        ``retry_after``, since each answer lists every subject.
    :param subjects: serve only these subjects (default: all the emitter's).
    :param max_backlog: how many packets may wait to be sent to one client; a client
        whose backlog grows past it (it stopped reading) is disconnected, and resumes
        with ``since`` when it reconnects...
    :param max_backlog_bytes: ...and how many bytes of them (16 MiB by default).
    """

    @staticmethod
    def _server_of(server: Any) -> Any:
        socketio = require("socketio", extra="socketio", needed_by="SocketIOAdapter")
        sio = server
        if not isinstance(sio, socketio.Server) and hasattr(server, "init_app"):
            sio = getattr(server, "server", None)  # Flask-SocketIO wraps a Server
            if sio is None:
                raise ValidationError(
                    "server", "a Flask-SocketIO SocketIO initialised with an app", server
                )
        if not isinstance(sio, socketio.Server):
            hint = ""
            if isinstance(sio, socketio.AsyncServer):
                hint = " (for a socketio.AsyncServer, use AsyncSocketIOAdapter)"
            raise ValidationError(
                "server", "a python-socketio Server or a Flask-SocketIO SocketIO" + hint, server
            )
        return sio

    def _install_guards(self, max_backlog: int, max_backlog_bytes: int) -> None:
        sio = self.sio
        # Client events named like the connection handlers never reach them.
        self._unguarded_handle_event = sio._handle_event
        sio._handle_event = self._guard_reserved
        self._unguard_frames = guard_frames(sio)
        self._backlog = BacklogGuard(sio, max_packets=max_backlog, max_bytes=max_backlog_bytes)
        self._backlog.start()

    def _enter_room(self, sid: str, room: str) -> None:
        self.sio.enter_room(sid, room, namespace=self.namespace)

    def _leave_room(self, sid: str, room: str) -> None:
        self.sio.leave_room(sid, room, namespace=self.namespace)

    def _start_greet(self, sid: str) -> None:
        self.sio.start_background_task(self._greet, sid)

    def _start_expiry(self) -> Any:
        return self.sio.start_background_task(self._expire)

    def close(self, timeout: float = 10.0) -> None:
        """Stop serving: the handlers leave the server, queued updates are flushed."""
        self._unregister()
        if self.sio.__dict__.get("_handle_event") == self._guard_reserved:
            self.sio._handle_event = self._unguarded_handle_event
        self._backlog.stop()
        self._unguard_frames()
        super().close(timeout)
        self._still_busy.clear()

    def deliver(self, event: TaskEvent) -> None:
        still_busy = bool(self._still_busy) and event.id in self._still_busy
        payload = update_payload(event, still_busy=still_busy)
        room = room_for(event.subject)
        skip = self._skip_for(event) if event.subject in self._floors else ()
        if not _emit_direct(self.sio, "task_status_update", payload, room, self.namespace, skip):
            self.sio.emit(
                "task_status_update",
                payload,
                room=room,
                namespace=self.namespace,
                skip_sid=list(skip) or None,
            )
        if still_busy:
            self._still_busy.discard(event.id)

    def _send(self, sid: str, name: str, payload: Mapping[str, Any]) -> None:
        self.sio.emit(name, payload, to=sid, namespace=self.namespace)

    # -- handlers ----------------------------------------------------------------------

    def _guard_reserved(self, eio_sid: str, namespace: str | None, id: Any, data: Any) -> Any:
        # python-socketio dispatches a client event by its name, so an event called
        # "connect" would run the connect handler again (a new identity, fresh limits)
        # and one called "disconnect" would make the adapter forget a live client.
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
            return None  # on the app's own namespaces too: never to its connect handlers
        return self._unguarded_handle_event(eio_sid, namespace, id, data)

    def _greet(self, sid: str) -> None:
        for _ in range(400):  # up to about 2 s
            if self.sio.manager.is_connected(sid, self.namespace):
                self._greet_once(sid)
                return
            with self._clients_lock:
                if sid not in self._clients:
                    return
            self.sio.sleep(0.005)

    def _expire(self) -> None:
        """Close connections whose identity has expired; runs while any may."""
        while not self._closed:
            self.sio.sleep(0.25)
            for sid in self._expired():
                self._send(sid, "error", dict(self.EXPIRED))
                self.sio.disconnect(sid, namespace=self.namespace)
