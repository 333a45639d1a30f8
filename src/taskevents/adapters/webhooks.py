"""Signed, durable webhooks: every event POSTed to your endpoints, at least once.

::

    from taskevents.adapters.webhooks import Endpoint, WebhookAdapter

    webhooks = WebhookAdapter(
        [Endpoint("https://hooks.example.com/tasks", "whsec_...")],
        outbox="/var/lib/myapp/webhooks.sqlite3",
    ).connect()

Each request follows Standard Webhooks v1: the headers ``webhook-id`` (the event's id,
the same on every retry), ``webhook-timestamp`` and ``webhook-signature``, and by
default the body ``{"type", "timestamp", "data"}`` with ``data`` =
:meth:`TaskEvent.to_dict() <taskevents.TaskEvent.to_dict>`. Receivers check it with
:func:`taskevents.webhooks.verify` (or any Standard Webhooks library).

:meth:`~WebhookAdapter.handle` only writes the event to the outbox (a SQLite file) and
returns; workers deliver from there, in order per subject and endpoint, retrying on the
Standard Webhooks schedule, and keep what cannot be delivered as dead letters for
``taskevents webhooks dead|retry|purge``. Requires ``pip install 'taskevents[webhooks]'``.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import os
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from taskevents import webhooks as _signing
from taskevents._checks import number, positive_int
from taskevents._optional import require
from taskevents._reporting import safe_message
from taskevents._urls import describe_url, printable
from taskevents.events import TASK_PROGRESS, TaskEvent
from taskevents.exceptions import ValidationError

from .base import _check_types
from .outbox import DEFAULT_RETRY_SCHEDULE, Delivery, DurableAdapter, Outbox, Outcome

urllib3 = require("urllib3", extra="webhooks", needed_by="WebhookAdapter")

# after the check above: the guard imports urllib3 itself
from ._netguard import AddressPolicy, AddressRefused, attach, deadline  # noqa: E402

__all__ = ["Endpoint", "WebhookAdapter"]

#: Body formats an endpoint can take.
FORMATS = ("standard", "cloudevents")

_CONTENT_TYPES = {
    "standard": "application/json",
    "cloudevents": "application/cloudevents+json; charset=utf-8",
}

#: The shortest signing key an endpoint takes (Standard Webhooks asks for 24 to 64).
MIN_SECRET_BYTES = 24

#: Statuses retried (besides every 5xx).
RETRIED_STATUSES = frozenset({408, 429})


class Endpoint:
    """Where events are POSTed, and which ones.

    :param url: an ``http://`` or ``https://`` URL.
    :param secret: the signing secret, ``whsec_<base64>`` (make one with
        :func:`taskevents.webhooks.generate_secret`); a list of secrets while one is
        being rotated (each request then carries a signature per secret).
    :param types: the event types to send. Default: every type but ``task_progress``
        (including types declared later).
    :param subjects: the subjects to send (default: all).
    :param format: ``"standard"`` (``{"type", "timestamp", "data"}``) or
        ``"cloudevents"`` (a CloudEvents 1.0 structured-mode body,
        ``application/cloudevents+json``).
    :param timeout: seconds to wait for the endpoint to answer.
    :param progress: also send ``task_progress`` (coalesced per task, at most one per
        subject per the adapter's ``progress_interval``); the same as listing it in
        ``types``.
    """

    __slots__ = ("_secrets", "format", "progress", "subjects", "timeout", "types", "url")

    def __init__(
        self,
        url: str,
        secret: str | Sequence[str],
        *,
        types: Iterable[str] | None = None,
        subjects: Iterable[str] | None = None,
        format: Literal["standard", "cloudevents"] = "standard",
        timeout: float = 15.0,
        progress: bool = False,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ValidationError("url", "an http:// or https:// URL", url)
        try:
            parts = urlsplit(url)
        except ValueError:
            raise ValidationError("url", "a well-formed URL", describe_url(url)) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError(
                "url", "an http:// or https:// URL with a host", describe_url(url)
            )
        self.url = url
        secrets = [secret] if isinstance(secret, str) else secret
        if not isinstance(secrets, Sequence) or not secrets:
            raise ValidationError(
                "secret", "a secret written whsec_<base64>, or a list", type(secret).__name__
            )
        for i, one in enumerate(secrets):
            field = "secret" if len(secrets) == 1 else f"secret[{i}]"
            if len(_signing.decode_secret(one, field)) < MIN_SECRET_BYTES:
                raise ValidationError(
                    field,
                    f"a secret of at least {MIN_SECRET_BYTES} random bytes "
                    "(taskevents.webhooks.generate_secret() makes one)",
                    "(hidden: too short)",
                )
        self._secrets = tuple(secrets)
        if format not in FORMATS:
            raise ValidationError("format", " or ".join(repr(f) for f in FORMATS), format)
        self.format = format
        self.timeout = number(timeout, "timeout", above=0)
        if not isinstance(progress, bool):
            raise ValidationError("progress", "True or False", progress)
        self.types: tuple[str, ...] | None = None if types is None else _check_types(types)
        self.progress = progress or (self.types is not None and TASK_PROGRESS in self.types)
        if isinstance(subjects, str):
            raise ValidationError("subjects", "a collection of subject names", subjects)
        self.subjects = None if subjects is None else frozenset(subjects)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The signing secrets (not shown in ``repr``)."""
        return self._secrets

    def accepts(self, event: TaskEvent) -> bool:
        """Whether this endpoint takes ``event``."""
        if self.subjects is not None and event.subject not in self.subjects:
            return False
        if self.types is None:
            return self.progress or event.type != TASK_PROGRESS
        return event.type in self.types

    def __repr__(self) -> str:
        return f"Endpoint({describe_url(self.url)!r}, secret=<hidden>, format={self.format!r})"

    @classmethod
    def coerce(cls, value: object, field: str) -> Endpoint:
        """An Endpoint from an Endpoint or a mapping of its arguments (as config files
        write it)."""
        if isinstance(value, Endpoint):
            return value
        if isinstance(value, Mapping):
            options = dict(value)
            try:
                return cls(options.pop("url"), options.pop("secret"), **options)
            except KeyError as exc:
                raise ValidationError(
                    field, f"a mapping with {exc.args[0]!r}", "(no such key)"
                ) from None
            except TypeError as exc:
                raise ValidationError(
                    field,
                    "url, secret and the options types, subjects, format, timeout, progress",
                    safe_message(exc),
                ) from None
            except ValidationError as exc:
                raise ValidationError(f"{field}.{exc.field}", exc.expected, exc.got) from None
        raise ValidationError(field, "an Endpoint or a mapping with url and secret", value)


#: What may stand in a header value or request line that we write: printable ASCII.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_NO_SPACES = re.compile(r"[\x21-\x7e]+")


class _Route:
    """How to reach one endpoint, worked out once: where to connect, and the start of
    every request (request line and fixed headers)."""

    __slots__ = ("head", "host", "port", "server_name", "tls", "url")

    def __init__(self, url: str, host: str, port: int, tls: bool, head: bytes) -> None:
        self.url = url
        self.host = host
        self.port = port
        self.tls = tls
        self.head = head
        #: The name TLS sends (SNI) and checks the certificate against.
        self.server_name = host.strip("[]").rstrip(".")

    @classmethod
    def of(cls, endpoint: Endpoint, parsed: Any, user_agent: str, field: str) -> _Route:
        host = parsed.host or ""
        path = parsed.request_uri or "/"
        tls = parsed.scheme == "https"
        port = parsed.port or (443 if tls else 80)
        # As http.client writes it: no final dot, no default port.
        shown = host if host.startswith("[") else host.rstrip(".")
        authority = shown if port == (443 if tls else 80) else f"{shown}:{port}"
        if not (_NO_SPACES.fullmatch(path) and _NO_SPACES.fullmatch(authority)):
            raise ValidationError(
                field,
                "a URL whose host and path are ASCII, without spaces or control characters "
                "(percent-encode the rest)",
                describe_url(endpoint.url),
            )
        head = (
            f"POST {path} HTTP/1.1\r\n"
            f"Host: {authority}\r\n"
            f"User-Agent: {user_agent}\r\n"
            f"Content-Type: {_CONTENT_TYPES[endpoint.format]}\r\n"
            "Accept-Encoding: identity\r\n"
        ).encode("ascii")
        return cls(endpoint.url, host, port, tls, head)


class _Response(http.client.HTTPResponse):
    """http.client's response, reading past every interim (1xx) answer but 101: it
    only skips ``100 Continue``, and a ``102``/``103`` taken for the answer would leave
    the real one to be read as the next request's."""

    def _read_status(self) -> tuple[str, int, str]:
        for _ in range(32):
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 100 <= status < 200 or status == 101:
                return version, status, reason
            for _ in range(101):  # the interim answer's headers, up to the blank line
                line = self.fp.readline(65537)
                if len(line) > 65536:
                    raise http.client.LineTooLong("header line")
                if line in (b"\r\n", b"\n", b""):
                    break
            else:
                raise http.client.HTTPException("an interim answer with over 100 headers")
        raise http.client.HTTPException("over 32 interim answers")


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read (or was closed): then it
    cannot carry a new request."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)


class _Connection:
    """A kept-alive connection to an endpoint (the watchdog shuts ``sock`` when a
    request outlives its deadline)."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class WebhookAdapter(DurableAdapter):
    """POSTs events to :class:`Endpoint` s, signed (Standard Webhooks v1), at least once.

    :param endpoints: an :class:`Endpoint`, or a list of them (or of mappings with their
        arguments, as in ``TASKEVENTS_ADAPTERS``). Two endpoints may not share a URL.
    :param outbox: the SQLite file rows wait in (created if missing; several processes
        may share it), or an :class:`~taskevents.adapters.outbox.Outbox`.
    :param allow_hosts: host names, addresses or networks (``"10.0.0.0/8"``) that may be
        private. By default an endpoint that is, or resolves to, a loopback, private,
        link-local, shared (CGNAT), multicast or reserved address is refused: checked on
        the address actually connected to, so DNS rebinding cannot get around it.
    :param https_only: refuse ``http://`` endpoints.
    :param max_response_bytes: how much of a failed response's body is kept.
    :param user_agent: the ``User-Agent`` header.
    :param ssl_context: for ``https://`` endpoints (default: the system's trusted
        certificates, host names checked).

    The other options (``workers``, ``retry_schedule``, ``jitter``, ``lease``,
    ``progress_interval``, ``poll_interval``, ``max_unwritten``, ``types``,
    ``subjects``) are :class:`~taskevents.adapters.outbox.DurableAdapter`'s.

    What becomes of a response: 2xx is delivered; 5xx, 408, 429, a timeout or a
    connection error is retried (``Retry-After`` is honoured, up to a day); a redirect
    is not followed and is retried; 410 disables the endpoint (until
    ``taskevents webhooks retry`` or ``enable``); any other 4xx, and an address the
    guard refuses, make a dead letter at once.
    """

    def __init__(
        self,
        endpoints: Endpoint | Mapping[str, Any] | Sequence[Endpoint | Mapping[str, Any]],
        *,
        outbox: str | os.PathLike[str] | Outbox = "taskevents-webhooks.sqlite3",
        allow_hosts: Iterable[str] = (),
        https_only: bool = False,
        workers: int = 4,
        retry_schedule: Sequence[float] = DEFAULT_RETRY_SCHEDULE,
        jitter: float = 0.1,
        lease: float = 30.0,
        progress_interval: float = 5.0,
        poll_interval: float = 1.0,
        max_unwritten: int = 100_000,
        max_response_bytes: int = 1024,
        user_agent: str = "taskevents-webhooks/1",
        ssl_context: ssl.SSLContext | None = None,
        types: Iterable[str] | None = None,
        subjects: Iterable[str] | None = None,
    ) -> None:
        if isinstance(endpoints, (Endpoint, Mapping)):
            endpoints = [endpoints]
        if isinstance(endpoints, (str, bytes)) or not isinstance(endpoints, Sequence):
            raise ValidationError("endpoints", "a list of Endpoint", endpoints)
        if not endpoints:
            raise ValidationError("endpoints", "at least one Endpoint", endpoints)
        if not isinstance(https_only, bool):
            raise ValidationError("https_only", "True or False", https_only)
        self.policy = AddressPolicy(allow_hosts, https_only=https_only)
        chosen: dict[str, Endpoint] = {}
        if not isinstance(user_agent, str) or not _HEADER_VALUE.fullmatch(user_agent):
            raise ValidationError("user_agent", "printable ASCII", user_agent)
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise ValidationError("ssl_context", "an ssl.SSLContext", ssl_context)
        self._routes: dict[str, _Route] = {}
        for i, raw in enumerate(endpoints):
            endpoint = Endpoint.coerce(raw, f"endpoints[{i}]")
            parsed = self.policy.check_url(endpoint.url, f"endpoints[{i}].url")
            if endpoint.url in chosen:
                raise ValidationError(f"endpoints[{i}].url", "a URL no other endpoint has", "")
            chosen[endpoint.url] = endpoint
            self._routes[endpoint.url] = _Route.of(
                endpoint, parsed, user_agent, f"endpoints[{i}].url"
            )
        self.endpoints: tuple[Endpoint, ...] = tuple(chosen.values())
        self.max_response_bytes = positive_int(max_response_bytes, "max_response_bytes")
        self.user_agent = user_agent
        super().__init__(
            outbox=outbox,
            workers=workers,
            retry_schedule=retry_schedule,
            jitter=jitter,
            lease=lease,
            progress_interval=progress_interval,
            poll_interval=poll_interval,
            max_unwritten=max_unwritten,
            types=types,
            subjects=subjects,
            targets=tuple(chosen),
        )
        self._by_url = chosen
        # Per worker thread, one kept-alive connection per endpoint.
        self._local = threading.local()
        self._connections: set[_Connection] = set()
        self._connections_lock = threading.Lock()
        self._sender_closed = False
        self.ssl_context = ssl_context if ssl_context is not None else ssl.create_default_context()

    # -- DurableAdapter ----------------------------------------------------------------

    def rows(self, event: TaskEvent) -> list[tuple[str, bytes]]:
        made: list[tuple[str, bytes]] = []
        bodies: dict[str, bytes] = {}
        for endpoint in self.endpoints:
            if not endpoint.accepts(event):
                continue
            body = bodies.get(endpoint.format)
            if body is None:
                body = bodies[endpoint.format] = self.body(event, endpoint.format)
            made.append((endpoint.url, body))
        return made

    @staticmethod
    def body(event: TaskEvent, format: str = "standard") -> bytes:
        """The request body ``event`` is sent as, in ``format``."""
        if format == "cloudevents":
            document = event.to_cloudevent()
        else:
            document = {
                "type": event.type,
                "timestamp": event.time.isoformat(timespec="microseconds"),
                "data": event.to_dict(),
            }
        return json.dumps(
            document, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()

    def timeout_for(self, target: str) -> float:
        endpoint = self._by_url.get(target)
        return 0.0 if endpoint is None else endpoint.timeout

    def label(self, target: str) -> str:
        return describe_url(target)

    def send(self, delivery: Delivery) -> Outcome:
        endpoint = self._by_url[delivery.target]
        route = self._routes[endpoint.url]
        try:
            signature = _signing.sign(
                delivery.body,
                msg_id=delivery.event_id,
                timestamp=(now := int(time.time())),
                secrets=endpoint.secrets,
            )
        except ValidationError as exc:  # an event id no header can carry, re-emitted
            return Outcome("dead", error=f"cannot be signed: {exc}")
        # The request in one piece (one write, one packet for a small event). Every value
        # in it was checked to be printable ASCII: the URL's host and path when the
        # adapter was made, the id by sign(), the rest is ours.
        request = b"".join(
            (
                route.head,
                (
                    f"Content-Length: {len(delivery.body)}\r\n"
                    f"webhook-id: {delivery.event_id}\r\n"
                    f"webhook-timestamp: {now}\r\n"
                    f"webhook-signature: {signature}\r\n\r\n"
                ).encode("ascii"),
                delivery.body,
            )
        )
        # The endpoint's timeout bounds the whole attempt, not each read: a server that
        # trickles its answer is cut off as one that does not answer.
        with deadline(endpoint.timeout) as watch:
            outcome = self._post(route, endpoint, request, watch)
        if watch[2] and outcome.kind == "retry" and outcome.status is None:
            return Outcome("retry", error=f"no whole answer within {endpoint.timeout:g}s")
        return outcome

    def _post(self, route: _Route, endpoint: Endpoint, request: bytes, watch: list[Any]) -> Outcome:
        connections: dict[str, _Connection] = self._local.__dict__.setdefault("open", {})
        connection = connections.pop(route.url, None)
        if connection is not None and _readable(connection.sock):
            # Something the server sent after its last answer (a stray response, or the
            # end of the connection): never to be read as the answer to this request.
            self._drop(connection)
            connection = None
        while True:
            reused = connection is not None
            if connection is None:
                left = watch[0] - time.monotonic()
                if watch[2] or left <= 0:
                    return Outcome("retry", error=f"no answer within {endpoint.timeout:g}s")
                try:
                    connection = self._connect(route, endpoint.timeout, left)
                except AddressRefused as exc:
                    return Outcome("dead", error=f"address refused: {printable(str(exc))}")
                except TimeoutError:
                    return Outcome("retry", error=f"no connection within {endpoint.timeout:g}s")
                except (OSError, ValueError) as exc:
                    return Outcome("retry", error=f"cannot connect: {_describe(exc)}")
            attach(connection)
            try:
                # The server may have answered (a 413) before taking it all: read that.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    connection.sock.sendall(request)
                response = _Response(connection.sock, method="POST")
                response.begin()
            except TimeoutError:
                self._drop(connection)
                return Outcome("retry", error=f"no answer within {endpoint.timeout:g}s")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self._drop(connection)
                connection = None
                if reused and not watch[2]:
                    # A kept-alive connection the server had closed or reset, with no
                    # answer on it: once more on a new one.
                    continue
                if isinstance(exc, http.client.RemoteDisconnected):
                    return Outcome("retry", error="the connection was closed without an answer")
                return Outcome("retry", error=_describe(exc))
            break
        if watch[2]:  # cut off: what begin() read may be a head that never ended
            self._drop(connection)
            return Outcome("retry", error=f"no whole answer within {endpoint.timeout:g}s")
        try:
            outcome = self._judge(response)
        finally:
            if (
                response.status >= 200
                and response.isclosed()
                and not response.will_close
                and not watch[2]
                and not self._sender_closed
            ):
                connections[route.url] = connection  # kept alive for the next request
            else:
                self._drop(connection)
        return outcome

    def _judge(self, response: http.client.HTTPResponse) -> Outcome:
        """The outcome of an answered request; reads (some of) the body."""
        status = response.status
        if 200 <= status < 300:
            # The rest of a small body is read, to keep the connection; a big one is not.
            length = response.length
            if (length is not None and length <= 65536) or (length is None and response.chunked):
                with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                    response.read(65537)
            return Outcome.delivered(status)
        text = self._read_some(response)
        if status < 200:  # an interim status as the answer: the exchange went wrong
            return Outcome("retry", status, f"an interim status ({status}) as the answer")
        if 300 <= status < 400:
            location = response.getheader("location", "")
            where = f" to {describe_url(location)}" if location else ""
            return Outcome("retry", status, f"redirect ({status}){where} not followed", text)
        if status == 410:
            return Outcome("disable", status, "410 Gone: the endpoint is disabled", text)
        if status >= 500 or status in RETRIED_STATUSES:
            return Outcome(
                "retry",
                status,
                f"HTTP {status}",
                text,
                _retry_after(response.getheader("retry-after")),
            )
        return Outcome("dead", status, f"HTTP {status}: refused by the endpoint", text)

    def _read_some(self, response: http.client.HTTPResponse) -> str:
        try:
            data = response.read(self.max_response_bytes + 1)
        except (OSError, http.client.HTTPException, ValueError):
            return ""
        text = data[: self.max_response_bytes].decode("utf-8", "replace")
        return text + ("..." if len(data) > self.max_response_bytes else "")

    def _connect(self, route: _Route, timeout: float, left: float) -> _Connection:
        """A new connection, within ``left`` seconds in all (every address tried, and the
        TLS handshake)."""
        sock = self.policy.connect(
            route.host,
            route.port,
            timeout=min(timeout, 10.0, left),
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            deadline=time.monotonic() + left,
        )
        try:
            if route.tls:
                sock.settimeout(max(left - 0.0, 0.001))
                sock = self.ssl_context.wrap_socket(sock, server_hostname=route.server_name)
            sock.settimeout(timeout)
            with self._connections_lock:
                if self._sender_closed:
                    raise OSError("the adapter is closed")
                connection = _Connection(sock)
                self._connections.add(connection)
        except BaseException:
            sock.close()
            raise
        return connection

    def _drop(self, connection: _Connection) -> None:
        with self._connections_lock:
            self._connections.discard(connection)
        connection.close()

    def close(self, timeout: float = 5.0) -> None:
        super().close(timeout)
        with self._connections_lock:
            self._sender_closed = True
            connections, self._connections = self._connections, set()
        for connection in connections:
            connection.close()


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {printable(safe_message(exc, 300))}"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds, or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit() and len(value) < 10:
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())
