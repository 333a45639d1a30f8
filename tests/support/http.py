"""A real HTTP receiver for the webhook tests: a threaded ``http.server`` on 127.0.0.1 that
records every request and answers as scripted.

    with Receiver() as receiver:
        receiver.respond("/hook", Reply(500), Reply(200))  # then the default, Reply(204)
        ...  # point a sender at receiver.url + "/hook"
        receiver.wait_for(2)
        assert receiver.ids() == [first_id, first_id]

It speaks HTTP/1.1 with keep-alive and TCP_NODELAY. Every request is recorded (as a
:class:`Received`) as soon as its body is read, before any delay or answer, so a test sees
an attempt even when the sender gave up waiting. :meth:`Receiver.stop` also shuts the
connections clients keep open, and :meth:`Receiver.start` listens on the same port again.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

__all__ = ["Received", "Receiver", "Reply"]

#: Statuses whose responses carry neither a body nor Content-Length (RFC 9110, 8.6).
_NO_BODY = frozenset({204, 304})


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``status=None`` closes the connection without answering."""

    status: int | None = 200
    body: bytes | str = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds, on top of Receiver.delay


@dataclass
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    time: float  # time.monotonic() when the body had been read
    client_port: int = 0  # the client's port: which connection it came on
    answered_status: int | None = None  # set once answered; None if not (yet), or closed
    answered_at: float | None = None  # time.monotonic() when the answer was sent

    @property
    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def id(self) -> str | None:
        return self.headers.get("webhook-id")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, receiver: Receiver, port: int) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the host name up (socket.getfqdn): not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        # Register the connection and its thread before the thread starts, so that once
        # shutdown() has returned, stop() knows every connection there is.
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        self.receiver._track(request, thread)
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.receiver._untrack(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (reset, broken pipe) is not an error of the receiver;
        # anything else is kept for the tests to look at rather than printed.
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, OSError):
            self.receiver.errors.append(error)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log on stderr

    def _read_body(self) -> bytes | None:
        """The whole body, or None if the connection ended before it did."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                line = self.rfile.readline()
                if not line:
                    return None
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    return None
                chunks.append(chunk)
                self.rfile.readline()  # the CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        return body if len(body) == length else None

    def _handle(self) -> None:
        body = self._read_body()
        if body is None:  # cut off (the client went away, or stop()): not a request
            self.close_connection = True
            return
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        received = Received(
            self.command, self.path, headers, body, time.monotonic(), self.client_address[1]
        )
        receiver = self.server.receiver
        reply = receiver._record(received)
        delay = receiver.delay + reply.delay
        if delay > 0 and receiver._stopping.wait(delay):
            self.close_connection = True  # stopped while delaying: no answer
            return
        if reply.status is None:
            self.close_connection = True
            return
        # Marked answered before the first byte leaves, so that a client that has read
        # its answer finds it marked; undone if the answer could not be written.
        received.answered_status, received.answered_at = reply.status, time.monotonic()
        try:
            self._answer(reply)
        except OSError:
            received.answered_status = received.answered_at = None
            raise

    def _answer(self, reply: Reply) -> None:
        assert reply.status is not None
        payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
        no_body = reply.status in _NO_BODY or reply.status < 200
        self.send_response(reply.status)
        names = set()
        for name, value in reply.headers.items():
            self.send_header(name, value)
            names.add(name.lower())
        if not no_body and "content-length" not in names:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and not no_body and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class Receiver:
    """A recording HTTP server on 127.0.0.1 (``port=0``: a free port), serving from the
    start; stop() and start() again keep the port, the records and the scripts."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.requests: list[Received] = []
        self.errors: list[BaseException] = []  # unexpected exceptions in handlers
        self.default = Reply(204)
        self.delay = 0.0  # seconds before every answer; may be changed at any time
        self._lock = threading.Lock()
        self._scripts: dict[str | None, list[Reply]] = {}
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Listen (again) on :attr:`port`."""
        if self._server is not None:
            raise RuntimeError("the receiver is already running")
        self._stopping = threading.Event()
        self._server = _Server(self, self.port)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"receiver:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and drop every connection, answering nothing more (a request
        being delayed is left unanswered). Does nothing if already stopped."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        self._stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
        with self._lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked reading it
        for _, handler in connections:
            handler.join(5)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- scripts --------------------------------------------------------------------------

    def respond(self, path: str | None, *replies: Reply) -> None:
        """Answer the next requests to ``path`` (``None``: any path) with ``replies``, in
        order, after any replies already scripted for it. A request takes the next reply
        of its exact path (query string included), else of its path without the query,
        else of ``None``, else gets :attr:`default`."""
        with self._lock:
            self._scripts.setdefault(path, []).extend(replies)

    def _record(self, received: Received) -> Reply:
        bare = received.path.split("?", 1)[0]
        with self._lock:
            self.requests.append(received)
            for key in (received.path, bare, None):
                script = self._scripts.get(key)
                if script:
                    return script.pop(0)
        return self.default

    def _track(self, sock: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._connections[sock] = thread

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.pop(sock, None)

    # -- reading what came ----------------------------------------------------------------

    def received(self) -> list[Received]:
        """A snapshot of :attr:`requests`."""
        with self._lock:
            return list(self.requests)

    def ids(self) -> list[str | None]:
        """The ``webhook-id`` header of every request, in arrival order."""
        return [request.id for request in self.received()]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least ``count`` requests have been recorded; returns them all."""
        deadline = time.monotonic() + timeout
        while True:
            requests = self.received()
            if len(requests) >= count:
                return requests
            if time.monotonic() >= deadline:
                seen = "\n".join(
                    f"  {r.method} {r.path} id={r.id} -> {r.answered_status}" for r in requests
                )
                raise AssertionError(
                    f"expected at least {count} requests within {timeout} s at {self.url}, "
                    f"got {len(requests)}" + (f":\n{seen}" if seen else "")
                )
            time.sleep(0.01)

    def by_subject(self, *, ok_only: bool = False) -> dict[str, list[tuple[str | None, int]]]:
        """subject -> [(webhook-id, seq), ...] in arrival order, from the webhook bodies
        (``{"type", "timestamp", "data": {..., "subject", "seq", ...}}``). With
        ``ok_only``, only the requests answered with a 2xx status."""
        result: dict[str, list[tuple[str | None, int]]] = {}
        for request in self.received():
            if ok_only and not (
                request.answered_status is not None and 200 <= request.answered_status < 300
            ):
                continue
            try:
                data = cast(dict[str, Any], request.json["data"])
                subject, seq = str(data["subject"]), int(data["seq"])
            except (ValueError, KeyError, TypeError) as exc:
                raise AssertionError(
                    f"not a webhook body ({exc!r}): {request.method} {request.path} "
                    f"{request.body[:200]!r}"
                ) from exc
            result.setdefault(subject, []).append((request.id, seq))
        return result


def self_signed(folder: Any, name: str) -> tuple[Any, Any]:
    """A self-signed certificate and key for the host ``name`` only, in ``folder``,
    made with the ``openssl`` command (the test skips without it, which fails in CI)."""
    import shutil
    import subprocess

    import pytest

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key
