"""Hostile endpoints against the webhook adapter's own request writer and response reader
(``_Route`` / ``send`` / ``_post`` / ``_judge``), which replaced urllib3's send path.

Each test shows a defect an attacker review found; each fails on the code it was written
against. Real sockets only: a keep-alive raw server that reads whole requests (so several
can come on one connection) and answers as a script says.
"""

from __future__ import annotations

import gc
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskevents import Emitter
from taskevents.adapters.outbox import Delivery, MemoryOutbox
from taskevents.adapters.webhooks import Endpoint, WebhookAdapter
from taskevents.webhooks import generate_secret
from tests.support.http import self_signed

Script = Callable[[socket.socket, int], None]


class KeepAliveServer:
    """A TCP server on 127.0.0.1 that reads whole requests (head, then Content-Length
    bytes of body) in a loop on each connection and calls ``script(conn, n)`` for the
    n-th request it has read (counted over all connections, from 0)."""

    def __init__(
        self, script: Script, tls: ssl.SSLContext | None = None, handshake_delay: float = 0.0
    ) -> None:
        self.script = script
        self.tls = tls
        self.handshake_delay = handshake_delay
        self.requests: list[tuple[int, bytes, bytes]] = []  # (connection number, head, body)
        self.connections = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def ids(self) -> list[str]:
        with self.lock:
            heads = [head for _, head, _ in self.requests]
        found = []
        for head in heads:
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"webhook-id:"):
                    found.append(line.split(b":", 1)[1].strip().decode())
        return found

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with self.lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._one, args=(conn, number), daemon=True).start()

    def _one(self, conn: socket.socket, number: int) -> None:
        try:
            conn.settimeout(10)
            if self.tls is not None:
                time.sleep(self.handshake_delay)
                conn = self.tls.wrap_socket(conn, server_side=True)
            buffer = b""
            while not self.stopping.is_set():
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                body, buffer = buffer[:length], buffer[length:]
                with self.lock:
                    n = len(self.requests)
                    self.requests.append((number, head, body))
                self.script(conn, n)
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()
        self.thread.join(2)


def delivery(url: str, n: int, body: bytes = b"{}") -> Delivery:
    return Delivery(n, url, "aws01", "t1", f"msg_{n}", "task_started", body, 0, time.time(), 0)


@pytest.fixture
def serve() -> Iterator[Callable[..., KeepAliveServer]]:
    made: list[KeepAliveServer] = []

    def serve(script: Script, tls: ssl.SSLContext | None = None, **kw: Any) -> KeepAliveServer:
        server = KeepAliveServer(script, tls, **kw)
        made.append(server)
        return server

    yield serve
    for server in made:
        server.close()


@pytest.fixture
def adapter_for() -> Iterator[Callable[..., WebhookAdapter]]:
    made: list[WebhookAdapter] = []

    def adapter_for(url: str, timeout: float = 2.0, **options: Any) -> WebhookAdapter:
        options.setdefault("allow_hosts", ["127.0.0.1"])
        adapter = WebhookAdapter(
            Endpoint(url, generate_secret(), timeout=timeout), outbox=MemoryOutbox(), **options
        )
        made.append(adapter)
        return adapter

    yield adapter_for
    for adapter in made:
        adapter.close(timeout=0)


# -- 1. a response is attributed to the wrong request ---------------------------------------


@pytest.mark.parametrize("interim", [102, 103])
def test_an_interim_response_does_not_make_the_final_one_the_next_requests_answer(
    interim: int, serve: Callable[..., KeepAliveServer], adapter_for: Callable[..., WebhookAdapter]
) -> None:
    # http.client's begin() skips 100 only: a 102 Processing (sent while a long request
    # is worked on) or a 103 Early Hints is taken for the answer. _judge retries it, but
    # the connection is kept (length 0, "closed", no Connection: close), so the real
    # final answer to request 1, arriving a moment later, is read as the answer to
    # request 2: msg_2 is marked delivered although the server answered it 503.
    def script(conn: socket.socket, n: int) -> None:
        if n == 0:
            conn.sendall(f"HTTP/1.1 {interim} Interim\r\n\r\n".encode())
            time.sleep(0.2)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")

    server = serve(script)
    adapter = adapter_for(server.url)
    first = adapter.send(delivery(server.url, 1))
    second = adapter.send(delivery(server.url, 2))
    assert (second.kind, second.status) == ("retry", 503), (first, second)


def test_a_second_response_to_one_request_is_not_taken_for_the_next_requests_answer(
    serve: Callable[..., KeepAliveServer], adapter_for: Callable[..., WebhookAdapter]
) -> None:
    # A server (or a framework writing an error page after the response had gone out)
    # that answers one request twice. urllib3 does not reuse a pooled connection that
    # has something to read (is_connection_dropped); _post reuses it blindly, so the
    # stray 200 becomes the answer to the next event, which the server refused.
    def script(conn: socket.socket, n: int) -> None:
        if n == 0:
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            time.sleep(0.1)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")

    server = serve(script)
    adapter = adapter_for(server.url)
    assert adapter.send(delivery(server.url, 1)).kind == "delivered"
    time.sleep(0.3)  # idle between two events: the stray answer is waiting
    second = adapter.send(delivery(server.url, 2))
    assert (second.kind, second.status) == ("retry", 503), second


# -- 2. the deadline, on a kept-alive connection --------------------------------------------


def test_a_deadline_on_a_reused_connection_neither_resends_nor_loses_the_deadline(
    serve: Callable[..., KeepAliveServer], adapter_for: Callable[..., WebhookAdapter]
) -> None:
    # The watchdog shuts the socket: begin() then sees EOF and raises RemoteDisconnected,
    # which on a reused connection _post takes for "the server had closed it" and sends
    # the POST again on a new connection. The watchdog strikes only once per attempt
    # (entry[2] is already True), so the new connection has no deadline at all: a
    # trickling server holds the send for as long as it likes, and got the event twice.
    def script(conn: socket.socket, n: int) -> None:
        if n == 0:
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            return
        end = time.monotonic() + 4.0
        while time.monotonic() < end:
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            time.sleep(0.2)
        conn.sendall(b"HTTP/1.1 500 Late\r\nContent-Length: 0\r\n\r\n")

    server = serve(script)
    adapter = adapter_for(server.url, timeout=0.5)
    assert adapter.send(delivery(server.url, 1)).kind == "delivered"
    start = time.monotonic()
    outcome = adapter.send(delivery(server.url, 2))
    took = time.monotonic() - start
    assert server.ids().count("msg_2") == 1, (server.ids(), outcome)
    assert took < 1.5, f"one send with timeout=0.5 took {took:.1f}s ({outcome})"


def test_the_deadline_covers_connecting_to_every_address(
    serve: Callable[..., KeepAliveServer],
    adapter_for: Callable[..., WebhookAdapter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # policy.connect gives each address min(timeout, 10) s and the watchdog only sees the
    # connection once made, so a name with several unreachable addresses takes
    # addresses x timeout (default 15 s: 10 s each, past the 30 s lease with 4 of them).
    # Here: three addresses that never complete the handshake (a full accept backlog).
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    filler = socket.create_connection(full.getsockname())  # fills the backlog
    try:
        address = full.getsockname()
        real = socket.getaddrinfo

        def three_dead(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host == "hooks.example":
                entry = (socket.AF_INET, socket.SOCK_STREAM, 6, "", address)
                return [entry, entry, entry]
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", three_dead)
        url = f"http://hooks.example:{address[1]}/hook"
        adapter = adapter_for(url, timeout=0.6, allow_hosts=["hooks.example"])
        start = time.monotonic()
        outcome = adapter.send(delivery(url, 1))
        took = time.monotonic() - start
        assert outcome.kind == "retry"
        assert took < 1.5, f"one send with timeout=0.6 took {took:.1f}s ({outcome})"
    finally:
        filler.close()
        full.close()


# -- 3. an early answer is lost ------------------------------------------------------------------


def test_an_early_answer_to_a_large_body_is_read_as_urllib3_did(
    adapter_for: Callable[..., WebhookAdapter],
) -> None:
    # A receiver that refuses a too-large body from its headers (413, Connection: close)
    # and closes without reading it: sendall() fails with EPIPE/ECONNRESET and _post
    # reports "closed without an answer" (a retry, through the whole schedule, resending
    # megabytes each time) instead of reading the 413 already received (a dead letter).
    # urllib3 swallows the broken pipe on send and reads the response: 413.
    stopping = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.1)

    def serve() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(
                    b"HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                )
                time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        adapter = adapter_for(url, timeout=3)
        body = b'{"blob":"' + b"a" * 8_000_000 + b'"}'
        outcome = adapter.send(delivery(url, 1, body))
        assert (outcome.kind, outcome.status) == ("dead", 413), outcome
    finally:
        stopping.set()
        listener.close()
        thread.join(2)


# -- 4. a response cut short by the deadline counts as delivered -----------------------------


def test_a_response_head_cut_off_by_the_deadline_is_not_delivered(
    serve: Callable[..., KeepAliveServer], adapter_for: Callable[..., WebhookAdapter]
) -> None:
    # The watchdog's shutdown makes readline() return b"", which http.client's header
    # parser takes for the blank line ending the head: a status line then a trickle of
    # headers, cut at the deadline, comes out as a complete "200" and is delivered,
    # although no whole answer came within the timeout.
    def script(conn: socket.socket, n: int) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            conn.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.1)

    server = serve(script)
    adapter = adapter_for(server.url, timeout=0.5)
    outcome = adapter.send(delivery(server.url, 1))
    assert outcome.kind == "retry", outcome


# -- 5. TLS: a host name written with its final dot -----------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ``hooks.example`` (a name resolved to 127.0.0.1 here)."""
    cert, key = self_signed(tmp_path_factory.mktemp("tls-sender"), "hooks.example")
    return Path(cert), Path(key)


def test_an_https_host_with_a_final_dot_is_checked_and_named_without_it(
    certificate: tuple[Path, Path],
    serve: Callable[..., KeepAliveServer],
    adapter_for: Callable[..., WebhookAdapter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "https://hooks.example./" (the fully qualified form) worked with urllib3, which
    # strips the final dot for SNI, the certificate check and the Host header. _connect
    # passes "hooks.example." as server_hostname: the check fails (Hostname mismatch) and
    # the SNI carries a final dot (RFC 6066 forbids it); Host is "hooks.example.:port".
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)
    server = serve(lambda conn, n: conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n"), context)
    real = socket.getaddrinfo

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.rstrip(".") == "hooks.example":
            host = "127.0.0.1"
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    url = f"https://hooks.example.:{server.port}/hook"
    adapter = adapter_for(
        url,
        allow_hosts=["hooks.example"],
        ssl_context=ssl.create_default_context(cafile=str(certificate[0])),
    )
    outcome = adapter.send(delivery(url, 1))
    assert outcome.kind == "delivered", outcome
    assert names == ["hooks.example"]
    host = [
        line for line in server.requests[0][1].split(b"\r\n") if line.lower().startswith(b"host:")
    ]
    assert host == [f"Host: hooks.example:{server.port}".encode()]


# -- 6. a connection made after close() is never closed ---------------------------------------


def test_a_connection_made_while_closing_is_not_left_open(
    certificate: tuple[Path, Path],
    serve: Callable[..., KeepAliveServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # close(timeout=0) swaps _connections out and closes what was in it; a worker that was
    # still connecting (a slow TLS handshake) adds its new connection to the new set and
    # keeps it after its send: nothing closes it. An fd held as long as the adapter lives,
    # and a ResourceWarning ("unclosed <ssl.SSLSocket>") when it is collected.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server = serve(
        lambda conn, n: conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n"),
        context,
        handshake_delay=0.4,
    )
    real = socket.getaddrinfo

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "hooks.example" else host, port, *args, **kwargs)

    url = f"https://hooks.example:{server.port}/hook"
    adapter = WebhookAdapter(
        Endpoint(url, generate_secret(), timeout=3),
        outbox=MemoryOutbox(),
        allow_hosts=["hooks.example"],
        ssl_context=ssl.create_default_context(cafile=str(certificate[0])),
    )
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    try:
        emitter = Emitter()
        adapter.connect(emitter)
        emitter.started("aws01", "change_ip")
        time.sleep(0.15)  # the worker is in the TLS handshake
        adapter.close(timeout=0)
        time.sleep(0.8)  # the handshake ends
        # a connection finished after close() is not used (the row stays in the outbox)
        assert server.ids() == []
        left = [c for c in adapter._connections if c.sock.fileno() != -1]
        assert left == [], f"{len(left)} connection(s) still open after close()"
    finally:
        for connection in list(adapter._connections):
            connection.close()
        gc.collect()


# -- 7. a kept-alive TLS connection the server reset ------------------------------------------


def test_a_kept_alive_tls_connection_reset_by_the_server_is_replaced_not_a_failed_attempt(
    certificate: tuple[Path, Path],
    serve: Callable[..., KeepAliveServer],
    adapter_for: Callable[..., WebhookAdapter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A load balancer's idle timeout that resets (RST) the kept-alive connection: over
    # TLS the next send fails with ssl.SSLEOFError, which is not among the errors _post
    # takes for a stale connection (RemoteDisconnected, ConnectionResetError,
    # BrokenPipeError): the event gets a failed attempt (and the retry schedule's wait)
    # instead of a new connection. urllib3 checked an idle pooled connection before
    # reusing it (is_connection_dropped) and did not use it.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)

    def answer_then_reset(conn: socket.socket, n: int) -> None:
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        time.sleep(0.1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    server = serve(answer_then_reset, context)
    real = socket.getaddrinfo

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "hooks.example" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    url = f"https://hooks.example:{server.port}/hook"
    adapter = adapter_for(
        url,
        allow_hosts=["hooks.example"],
        ssl_context=ssl.create_default_context(cafile=str(certificate[0])),
    )
    outcomes = []
    for n in range(3):
        outcomes.append(adapter.send(delivery(url, n)))
        time.sleep(0.3)  # idle: the server resets the connection meanwhile
    assert [o.kind for o in outcomes] == ["delivered"] * 3, outcomes
