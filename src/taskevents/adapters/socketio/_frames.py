"""Malformed Socket.IO / Engine.IO frames: one quiet log line, never a traceback.

python-engineio and python-socketio decode what a client sends with little distrust:
``42[]``, invalid JSON, JSON nested 50,000 deep, a 5,000-digit ack id, a client-sent
CONNECT_ERROR or an unknown packet type each make them log a full traceback (and leave
the connection open); an undecodable Engine.IO frame on a websocket escapes to the WSGI
server (an "Error on request" traceback and an HTTP 500); over long-polling an unknown
packet type or an oversized body leaves the request thread waiting for the client's
next poll (for ever, if it never polls), and a POST to a session closed meanwhile
ends in a traceback; and a
frame that declares 99,999 binary attachments makes every later frame of that
connection disappear as an "attachment".

:func:`guard_frames` puts a guard in front of them, once per server however many
adapters ask for it (reference counted; the last release restores everything):

* a checking packet class (``sio.packet_class``) and a wrapper of the Engine.IO
  ``message`` handler: a Socket.IO packet that does not decode, or is not one a client
  may send, closes that connection with one log line;
* a wrapper of the websocket factory: frames are checked before Engine.IO decodes
  them, a message over ``max_http_buffer_size`` is refused while it arrives (close
  code 1009) instead of after it has been buffered whole, and a refused or dropped
  connection can be aborted at the TCP level (see :mod:`._backlog`);
* a check of long-polling POST bodies before Engine.IO reads them: an oversized body
  gets HTTP 413, a malformed one HTTP 400, and the session is closed;
* a logging filter on the ``engineio.server`` and ``socketio.server`` loggers, as the
  last line of defence: a record with a traceback becomes one rate-limited line
  (unless that logger is enabled for DEBUG).

Log records go to the ``taskevents`` logger, at most one per cause and client address
per :data:`LOG_PERIOD` seconds, with a count of those suppressed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from .protocol import client_address

__all__ = ["LOG_PERIOD", "MAX_ATTACHMENTS", "RateLimitedLog", "guard_frames"]

logger = logging.getLogger("taskevents")

#: Most binary attachments a packet may declare (taskevents itself never uses binary).
MAX_ATTACHMENTS = 10
#: At most one log record per cause and client in this many seconds.
LOG_PERIOD = 10.0
#: The loggers python-engineio and python-socketio log to by default.
SERVER_LOGGERS = ("engineio.server", "socketio.server")

_CONNECT_ERROR, _BINARY_EVENT, _BINARY_ACK = 4, 5, 6
_EVENT, _ACK = 2, 3
_ATTACHMENTS = re.compile(r"[56](\d{1,12})-")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Seconds between two looks at whether a websocket closed while its reader waited.
RECEIVE_POLL = 1.0
# Websocket close codes (RFC 6455).
POLICY_VIOLATION = 1008


def one_line(text: object, limit: int = 200) -> str:
    """``text`` on one line, control characters escaped, at most ``limit`` characters."""
    value = str(text)
    if len(value) > limit:
        value = value[:limit] + "..."
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", value)


class RateLimitedLog:
    """At most one record per key per ``period`` seconds; the rest are counted, and the
    count is reported with the key's next record.

    Memory is bounded: at most ``max_keys`` keys are remembered (the oldest are
    forgotten first), and over all keys at most ``max_records`` records are logged per
    period; what is dropped for either reason is counted and reported with the next
    record logged.
    """

    def __init__(
        self,
        log: logging.Logger = logger,
        *,
        period: float = LOG_PERIOD,
        max_keys: int = 1024,
        max_records: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = log
        self.period = period
        self.max_keys = max_keys
        self.max_records = max_records
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [when last logged, how many suppressed since]; oldest first
        self._entries: OrderedDict[Hashable, list[float]] = OrderedDict()
        self._window_start = float("-inf")
        self._window_count = 0
        self._overflow = 0

    def __len__(self) -> int:
        return len(self._entries)

    def admit(self, key: Hashable) -> str | None:
        """None if a record for ``key`` is to be suppressed now, else a note to append
        to it (empty, or the counts of records suppressed)."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now - entry[0] < self.period:
                entry[1] += 1
                return None
            if now - self._window_start >= self.period:
                self._window_start, self._window_count = now, 0
            if self._window_count >= self.max_records:
                self._overflow += 1
                return None
            suppressed = 0
            if entry is not None:
                suppressed = int(entry[1])
                self._entries.move_to_end(key)
                entry[0], entry[1] = now, 0
            else:
                self._make_room(now)
                self._entries[key] = [now, 0]
            self._window_count += 1
            overflow, self._overflow = self._overflow, 0
        notes = []
        if suppressed:
            notes.append(f"{suppressed} more like it suppressed")
        if overflow:
            notes.append(f"{overflow} other records suppressed")
        return f" ({'; '.join(notes)})" if notes else ""

    def _make_room(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if len(entries) < self.max_keys and now - entry[0] < self.period:
                return
            del entries[key]
            self._overflow += int(entry[1])

    def log(self, level: int, key: Hashable, message: str, **extra: Any) -> bool:
        """Log ``message`` (taken literally, made one line) unless ``key`` was logged
        less than ``period`` seconds ago. Returns whether it was logged."""
        note = self.admit(key)
        if note is None:
            return False
        self.logger.log(level, "%s", one_line(message, 500) + note, extra=extra)
        return True


class _Refused(Exception):
    def __init__(self, cause: str, detail: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.detail = detail


def _decode_cause(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return "invalid JSON"
    text = str(exc)
    if "id field is too long" in text:
        return "ack id too long"
    if "too many attachments" in text:
        return "too many binary attachments"
    return f"undecodable packet ({type(exc).__name__})"


def _packet_cause(packet_type: object, data: object, id_: object, attachments: int) -> str:
    """Why a decoded Socket.IO packet is not one a client may send, or ''."""
    if not isinstance(packet_type, int) or not 0 <= packet_type <= _BINARY_ACK:
        return "unknown Socket.IO packet type"
    if packet_type == _CONNECT_ERROR:
        return "CONNECT_ERROR sent by a client"
    if packet_type in (_BINARY_EVENT, _BINARY_ACK):
        if attachments > MAX_ATTACHMENTS:
            return "too many binary attachments"
        if attachments < 1:
            return "binary packet without attachments"
    if packet_type in (_EVENT, _BINARY_EVENT) and not (
        isinstance(data, list) and data and isinstance(data[0], str)
    ):
        return "event without a name"
    if packet_type in (_ACK, _BINARY_ACK) and (id_ is None or not isinstance(data, list)):
        return "malformed ack"
    return ""


_PACKET_CLASSES: dict[type, type] = {}


def _checking_packet_class(base: type) -> type:
    """A subclass of python-socketio's packet class ``base`` whose decoding refuses
    what a client may not send, with a cause (:class:`_Refused`)."""
    checking = _PACKET_CLASSES.get(base)
    if checking is not None:
        return checking

    def decode(self: Any, encoded_packet: Any) -> Any:
        try:
            attachments = base.decode(self, encoded_packet)  # type: ignore[attr-defined]
        except Exception as exc:
            raise _Refused(_decode_cause(exc)) from None
        cause = _packet_cause(self.packet_type, self.data, self.id, int(attachments or 0))
        if cause:
            raise _Refused(cause)
        return attachments

    checking = type(f"Checking{base.__name__}", (base,), {"decode": decode})
    _PACKET_CLASSES[base] = checking
    return checking


def _socketio_text_cause(data: object) -> str:
    """Cheap checks of a Socket.IO packet in the text encoding, before it is decoded."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return "unexpected binary frame"
    if not isinstance(data, str) or not data:
        return "empty packet"
    kind = data[0]
    if kind not in "0123456":
        return "unknown Socket.IO packet type"
    if kind == "4":
        return "CONNECT_ERROR sent by a client"
    if kind in "56":
        match = _ATTACHMENTS.match(data)
        count = int(match.group(1)) if match else 0
        if count > MAX_ATTACHMENTS:
            return "too many binary attachments"
        if count < 1:
            return "binary packet without attachments"
    return ""


def _engineio_cause(data: object, *, polling: bool = False) -> str:
    """Why an Engine.IO packet would make Engine.IO fail, or ''."""
    if isinstance(data, (bytes, bytearray)):
        return ""  # a binary message
    if not isinstance(data, str) or not data:
        return "empty Engine.IO packet"
    kind = data[0]
    if kind == "b":
        try:
            base64.b64decode(data[1:])
        except (binascii.Error, ValueError):
            return "invalid base64 in a binary Engine.IO packet"
        return ""
    if kind not in "0123456":
        return "unknown Engine.IO packet type"
    if polling and kind in "026":
        # Engine.IO answers these by disconnecting with a wait for the next poll.
        return "Engine.IO packet type a client may not send"
    return ""


# -- websockets --------------------------------------------------------------------------

_TRANSPORTS_LOCK = threading.Lock()
_TRANSPORTS: weakref.WeakKeyDictionary[Any, _WebSocket] = weakref.WeakKeyDictionary()


def websocket_of(eio_socket: Any) -> _WebSocket | None:
    """The guarded websocket of an Engine.IO socket, if it has one."""
    with _TRANSPORTS_LOCK:
        return _TRANSPORTS.get(eio_socket)


def websockets_of(eio_server: Any) -> list[tuple[Any, _WebSocket]]:
    """The Engine.IO sockets of ``eio_server`` with a guarded websocket still running,
    including sockets Engine.IO has closed (and forgotten) whose websocket is stuck."""
    with _TRANSPORTS_LOCK:
        items = list(_TRANSPORTS.items())
    return [(sock, ws) for sock, ws in items if getattr(sock, "server", None) is eio_server]


def _is_connection_closed(exc: BaseException) -> bool:
    """Whether ``exc`` says the peer is gone (simple-websocket's ConnectionClosed, or a
    socket error), not a bug."""
    if isinstance(exc, OSError):
        return True
    try:
        from simple_websocket import ConnectionClosed
    except ImportError:  # pragma: no cover - simple-websocket comes with the extra
        return False
    return isinstance(exc, ConnectionClosed)


class _WebSocket:
    """Stands in for Engine.IO's websocket object (what its websocket handler gets):
    checks each frame before Engine.IO decodes it, closes with a reason, and can abort
    the TCP connection under a writer stuck in a send."""

    def __init__(self, inner: Any, eio_socket: Any, guard: _Installation) -> None:
        self._inner = inner
        self._eio_socket = eio_socket
        self._guard = guard
        #: (code, reason) to close with; set when the connection is refused or dropped.
        self.close_code: tuple[int, str] | None = None
        #: When the Engine.IO socket was first seen closed with this still running.
        self.closed_seen_at: float | None = None
        self.aborted = False
        #: The client went away while something was sent to it.
        self.gone = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _ended(self) -> str | None:
        # None tells Engine.IO's handler the client is gone; during an upgrade it
        # decodes what it gets (None would raise), and a NOOP ends the upgrade quietly.
        sock = self._eio_socket
        return None if sock is None or getattr(sock, "upgraded", True) else "6"

    def _receive(self) -> Any:
        ws: Any = getattr(self._inner, "ws", None)
        receive = getattr(ws, "receive", None)
        if receive is None:
            return self._inner.wait()
        from simple_websocket import ConnectionClosed

        # simple-websocket wakes its reader for an oversized message before it marks
        # the connection closed; a reader that looks in between would wait for ever.
        while True:
            try:
                data = receive(timeout=RECEIVE_POLL)
            except ConnectionClosed:
                return None
            if data is not None or not ws.connected:
                return data

    def wait(self) -> Any:
        if self.close_code is not None or self.gone:
            return self._ended()
        data = self._receive()
        if data is None:
            ws = getattr(self._inner, "ws", None)
            limit = getattr(ws, "max_message_size", None)
            if limit and getattr(ws, "incoming_message_len", 0) > limit:
                # simple-websocket stopped reading mid-message and sent close code 1009;
                # the rest of the message must not reach the WSGI server as a request.
                self._guard.refuse_websocket(
                    self, "message over max_http_buffer_size", f"over {limit} bytes", code=1009
                )
                self.abort()
            return self._ended()
        cause = _engineio_cause(data)
        if cause:
            self._guard.refuse_websocket(self, cause)
            return self._ended()
        return data

    def send(self, message: Any) -> Any:
        if self.gone:
            return None
        try:
            return self._inner.send(message)
        except Exception as exc:
            if not _is_connection_closed(exc):
                raise
            # The client went away (e.g. during an upgrade after its connect was refused):
            # Engine.IO's handler would end in a traceback and a 500; let the reader see
            # the end instead.
            self.gone = True
            return None

    def close(self) -> None:
        code = self.close_code
        ws = getattr(self._inner, "ws", None)
        try:
            if code is not None and ws is not None and hasattr(ws, "connected"):
                if ws.connected:
                    ws.close(reason=code[0], message=code[1])
            else:
                self._inner.close()
        except Exception:  # the connection is gone already: nothing left to close
            pass
        if code is not None:
            self.abort()

    def raw_socket(self) -> Any:
        """The TCP socket under the websocket, if known."""
        return getattr(getattr(self._inner, "ws", None), "sock", None)

    def abort(self) -> bool:
        """Shut the TCP connection down (both ways): a writer blocked in a send to a
        client that never reads gets an error, the reader sees the end. True if there
        was a socket to shut down."""
        if self.close_code is None:
            self.close_code = (POLICY_VIOLATION, "connection aborted")
        sock = self.raw_socket()
        if sock is None:
            return False
        self.aborted = True
        try:
            sock.shutdown(socket.SHUT_RDWR)
            # What arrived before the shutdown and nobody read would be parsed by the
            # WSGI server as the next HTTP request on this connection: discard it (what
            # arrives after the shutdown resets the connection).
            for _ in range(64):
                if not sock.recv(65536, socket.MSG_DONTWAIT):
                    break
        except (OSError, ValueError):
            pass
        return True


# -- one installation per server ----------------------------------------------------------


class _OneLineFilter(logging.Filter):
    """Makes records with a traceback one rate-limited line (the last line of defence:
    what the other guards let through)."""

    def __init__(self, limiter: RateLimitedLog) -> None:
        super().__init__()
        self.limiter = limiter

    def filter(self, record: logging.LogRecord) -> bool:
        multiline = "\n" in str(record.msg)
        if not (record.exc_info or record.exc_text or record.stack_info or multiline):
            return True
        if logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return True  # someone debugging wants the whole story
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            message = f"{message}: {type(exc).__name__}: {exc}"
        note = self.limiter.admit(("log", record.name, one_line(record.msg, 80)))
        if note is None:
            return False
        record.msg = one_line(message, 500) + " (traceback suppressed by taskevents)" + note
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


class _Guard:
    """What the guards of the threaded and the asyncio server share: the checking
    packet class, the Engine.IO ``message`` handler, the websocket and long-polling
    hooks, the logging filter, and one rate-limited line per refusal. Subclasses bring
    ``_on_message``, ``_wrap_websocket`` and ``_handle_request``."""

    #: Who the log lines name.
    who = "SocketIOAdapter"

    def __init__(self, sio: Any) -> None:
        self.sio = sio
        self.eio = sio.eio
        self.limiter = RateLimitedLog()
        self._filter = _OneLineFilter(self.limiter)
        self._loggers: list[logging.Logger] = []
        self._original_message: Callable[..., Any] | None = None
        self._original_packet_class: type | None = None
        self._packet_class: type | None = None
        self._check_text = False
        self._original_async: dict[str, Any] | None = None
        self._async: dict[str, Any] | None = None
        self._previous_handle_request: Any = None
        self._original_handle_request: Callable[..., Any] | None = None

    def _on_message(self, eio_sid: str, data: Any) -> Any:
        raise NotImplementedError

    def _wrap_websocket(self, original: Any) -> Any:
        """What replaces Engine.IO's websocket class or factory; None: nothing."""
        raise NotImplementedError

    def _handle_request(self, *args: Any) -> Any:
        raise NotImplementedError

    # -- install / uninstall ---------------------------------------------------------

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
        async_ = getattr(eio, "_async", None)
        if isinstance(async_, dict):
            wrapped = self._wrap_websocket(async_.get("websocket"))
            if wrapped is not None:
                self._original_async = async_
                self._async = {**async_, "websocket": wrapped}
                eio._async = self._async
        self._previous_handle_request = vars(eio).get("handle_request")
        self._original_handle_request = eio.handle_request
        eio.handle_request = self._handle_request
        loggers = [logging.getLogger(name) for name in SERVER_LOGGERS]
        for candidate in (getattr(sio, "logger", None), getattr(eio, "logger", None)):
            if isinstance(candidate, logging.Logger) and candidate not in loggers:
                loggers.append(candidate)
        for log in loggers:
            log.addFilter(self._filter)
        self._loggers = loggers

    def uninstall(self) -> None:
        sio, eio = self.sio, self.eio
        if self._original_message is not None and eio.handlers.get("message") == self._on_message:
            eio.handlers["message"] = self._original_message
        if self._packet_class is not None and sio.packet_class is self._packet_class:
            sio.packet_class = self._original_packet_class
        if self._async is not None and getattr(eio, "_async", None) is self._async:
            eio._async = self._original_async
        if vars(eio).get("handle_request") == self._handle_request:
            if self._previous_handle_request is None:
                del eio.handle_request
            else:
                eio.handle_request = self._previous_handle_request
        for log in self._loggers:
            log.removeFilter(self._filter)
        self._loggers = []

    # -- reporting ---------------------------------------------------------------------

    def client_of(self, eio_sid: str | None) -> str:
        environ = getattr(self.sio, "environ", {}).get(eio_sid) or {}
        return one_line(client_address(environ) or "unknown", 64)

    def report(self, what: str, cause: str, eio_sid: str | None, detail: str = "") -> None:
        client = self.client_of(eio_sid)
        details = f" ({one_line(detail)})" if detail else ""
        self.limiter.log(
            logging.WARNING,
            (what, cause, client),
            f"{self.who}: {what} from {client} (session {eio_sid}): {cause}{details}; "
            "closed the connection",
            cause=cause,
            client=client,
        )


class _Installation(_Guard):
    def __init__(self, sio: Any) -> None:
        super().__init__(sio)
        self.refs = 0

    def _wrap_websocket(self, original: Any) -> Any:
        return None if original is None else self._websocket_factory(original)

    # -- closing -----------------------------------------------------------------------

    def close_session(self, eio_sid: str | None, *, abort: bool = False) -> None:
        """Close an Engine.IO session without waiting for its queue to drain."""
        sock = self.eio.sockets.get(eio_sid) if eio_sid else None
        if sock is None:
            return
        close_socket(sock, abort=abort)

    def refuse(self, eio_sid: str, cause: str, detail: str = "") -> None:
        """A Socket.IO-level refusal: log, then close (the client is told with an
        Engine.IO CLOSE packet, and its websocket is shut after it)."""
        self.report("refused a frame", cause, eio_sid, detail)
        sock = self.eio.sockets.get(eio_sid)
        if sock is None:
            return
        ws = websocket_of(sock)
        if ws is not None:
            ws.close_code = (POLICY_VIOLATION, "malformed frame")
        close_socket(sock)

    def refuse_websocket(
        self, ws: _WebSocket, cause: str, detail: str = "", *, code: int = POLICY_VIOLATION
    ) -> None:
        """An Engine.IO-level refusal on a websocket: log and close the session; the
        websocket handler then ends the connection (``wait`` reports it closed)."""
        sock = ws._eio_socket
        self.report("refused a frame", cause, getattr(sock, "sid", None), detail)
        ws.close_code = (code, "message too big" if code == 1009 else "malformed frame")
        if sock is not None:
            close_socket(sock)

    # -- hooks -------------------------------------------------------------------------

    def _on_message(self, eio_sid: str, data: Any) -> Any:
        sock = self.eio.sockets.get(eio_sid)
        if sock is None or sock.closed or getattr(sock, "closing", False):
            return None  # refused or gone: nothing more from it is handled
        original = self._original_message
        assert original is not None
        if self._check_text and eio_sid not in getattr(self.sio, "_binary_packet", {}):
            cause = _socketio_text_cause(data)
            if cause:
                self.refuse(eio_sid, cause)
                return None
        try:
            return original(eio_sid, data)
        except _Refused as exc:
            self.refuse(eio_sid, exc.cause, exc.detail)
        except Exception as exc:
            # not necessarily the client's fault (an application's connect handler can
            # raise): the traceback is there for whoever enables DEBUG on "taskevents"
            logger.debug("SocketIOAdapter: error handling a frame", exc_info=True)
            # (its message may hold what the client sent, such as a token: not logged)
            self.refuse(eio_sid, f"error handling it ({type(exc).__name__})")
        return None

    def _websocket_factory(self, original: Callable[..., Any]) -> Callable[..., Any]:
        installation = self

        def factory(handler: Callable[[Any], Any], server: Any, *args: Any, **kwargs: Any) -> Any:
            eio_socket = getattr(handler, "__self__", None)

            def guarded_handler(inner: Any) -> Any:
                ws = _WebSocket(inner, eio_socket, installation)
                if eio_socket is not None:
                    with _TRANSPORTS_LOCK:
                        _TRANSPORTS[eio_socket] = ws
                try:
                    return handler(ws)
                finally:
                    if eio_socket is not None:
                        with _TRANSPORTS_LOCK:
                            if _TRANSPORTS.get(eio_socket) is ws:
                                del _TRANSPORTS[eio_socket]

            app = original(guarded_handler, server, *args, **kwargs)
            server_args = getattr(app, "server_args", None)
            limit = getattr(server, "max_http_buffer_size", None)
            if isinstance(server_args, dict) and isinstance(limit, int) and limit > 0:
                # refuse an oversized message while it arrives, not once buffered whole
                server_args.setdefault("max_message_size", limit)
            return app

        return factory

    def _handle_request(self, environ: dict[str, Any], start_response: Any) -> Any:
        assert self._original_handle_request is not None
        if environ.get("REQUEST_METHOD") == "POST":
            refusal = self._check_post(environ)
            if refusal is not None:
                status, message = refusal
                headers = [("Content-Type", "text/plain")]
                cors = getattr(self.eio, "_cors_headers", None)
                if callable(cors):
                    with contextlib.suppress(Exception):
                        headers += list(cors(environ))
                start_response(status, headers)
                return [json.dumps(message).encode()]
        return self._original_handle_request(environ, start_response)

    def _check_post(self, environ: dict[str, Any]) -> tuple[str, str] | None:
        """Check a long-polling POST before Engine.IO reads it: (status, message) to
        refuse it with, or None to let Engine.IO have it."""
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        sid = (query.get("sid") or [None])[0]
        sock = self.eio.sockets.get(sid) if sid else None
        if sock is not None and sock.closed:
            # Engine.IO closed it (a ping timeout) and has not forgotten it yet: its own
            # answer to a POST would be a traceback
            close_socket(sock)
            return "400 BAD REQUEST", f"Invalid session {sid}"
        if sock is None or not sock.connected or sock.upgraded:
            return None  # Engine.IO answers these itself
        limit = self.eio.max_http_buffer_size
        try:
            length = int(environ.get("CONTENT_LENGTH") or "0")
            if length < 0:
                raise ValueError(length)
        except ValueError:
            return self._refuse_post(sid, "invalid Content-Length", "400 BAD REQUEST")
        if length > limit:
            return self._refuse_post(
                sid,
                "payload over max_http_buffer_size",
                "413 Payload Too Large",
                f"{length} bytes, at most {limit}",
                message=f"Payload too large: at most {limit} bytes",
            )
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        cause = _payload_cause(body)
        if cause:
            return self._refuse_post(sid, cause, "400 BAD REQUEST")
        return None

    def _refuse_post(
        self, sid: str, cause: str, status: str, detail: str = "", *, message: str = "Bad Request"
    ) -> tuple[str, str]:
        self.report("refused a long-polling request", cause, sid, detail)
        self.close_session(sid)
        return status, message


def _payload_cause(body: bytes) -> str:
    """Why a long-polling payload would make Engine.IO fail, or ''."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "payload not UTF-8"
    if not text:
        return ""
    if text.startswith("d="):
        values = urllib.parse.parse_qs(text).get("d")
        if not values:
            return "malformed JSONP payload"
        text = values[0]
    from engineio.payload import Payload

    packets = text.split("\x1e")
    if len(packets) > Payload.max_decode_packets:
        return "too many packets in one payload"
    for packet in packets:
        cause = _engineio_cause(packet, polling=True)
        if cause:
            return cause
    return ""


def close_socket(sock: Any, *, abort: bool = False) -> None:
    """Close an Engine.IO socket without waiting for its queue to drain (Engine.IO's
    own ``disconnect`` waits, for ever if the client never reads), and forget it (a
    long-polling request for a closed session it still knows ends in a traceback)."""
    server = sock.server
    reason = getattr(getattr(server, "reason", None), "SERVER_DISCONNECT", None)
    try:
        sock.close(wait=False, abort=abort, reason=reason)
    except TypeError:  # an Engine.IO without disconnect reasons
        sock.close(wait=False, abort=abort)
    sockets = getattr(server, "sockets", {})
    sid = sock.sid
    if sockets.get(sid) is sock:
        with contextlib.suppress(KeyError):
            del sockets[sid]


_LOCK = threading.Lock()
_INSTALLATIONS: dict[int, _Installation] = {}


def installation_of(sio: Any) -> _Installation | None:
    """The guard installed on ``sio``, if any."""
    with _LOCK:
        return _INSTALLATIONS.get(id(sio))


def guard_frames(sio: Any) -> Callable[[], None]:
    """Guard the python-socketio ``Server`` ``sio`` against malformed frames; returns a
    function that removes the guard.

    Guarding a server twice installs the guard once; it is removed (and everything it
    replaced restored) when the last of the returned functions is called. Each returned
    function works once; calling it again does nothing.
    """
    with _LOCK:
        installation = _INSTALLATIONS.get(id(sio))
        if installation is None:
            installation = _Installation(sio)
            installation.install()
            _INSTALLATIONS[id(sio)] = installation
        installation.refs += 1
    released = False

    def unguard() -> None:
        nonlocal released
        with _LOCK:
            if released:
                return
            released = True
            installation.refs -= 1
            if installation.refs == 0:
                del _INSTALLATIONS[id(sio)]
                installation.uninstall()

    return unguard
