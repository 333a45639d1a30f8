"""Webhooks over HTTPS: the certificate is checked against the URL's host name."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from taskevents import Emitter
from taskevents.adapters.webhooks import Endpoint, WebhookAdapter
from taskevents.webhooks import generate_secret, verify
from tests.support.socketio import wait_until


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    received: list[tuple[bytes, dict[str, str]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((body, {k.lower(): v for k, v in self.headers.items()}))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(
    certificate: tuple[Path, Path],
) -> Iterator[tuple[int, list[tuple[bytes, dict[str, str]]]]]:
    received: list[tuple[bytes, dict[str, str]]] = []
    handler = type("Handler", (_Handler,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_an_https_endpoint_with_a_trusted_certificate_gets_the_events(
    tls_server: tuple[int, list[tuple[bytes, dict[str, str]]]],
    certificate: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    port, received = tls_server
    secret = generate_secret()
    emitter = Emitter()
    adapter = WebhookAdapter(
        Endpoint(f"https://localhost:{port}/hook", secret),
        outbox=tmp_path / "o.sqlite3",
        allow_hosts=["127.0.0.1"],
        https_only=True,
        ssl_context=ssl.create_default_context(cafile=str(certificate[0])),
    ).connect(emitter)
    try:
        started = emitter.started("aws01", "change_ip")
        emitter.completed("aws01")
        assert adapter.flush(10)
    finally:
        adapter.close()
    assert len(received) == 2
    body, headers = received[0]
    assert headers["webhook-id"] == started.id
    assert headers["host"] == f"localhost:{port}"
    assert verify(body, headers, secret)["data"]["id"] == started.id


def test_an_untrusted_certificate_is_retried_not_delivered(
    tls_server: tuple[int, list[tuple[bytes, dict[str, str]]]], tmp_path: Path
) -> None:
    port, received = tls_server
    emitter = Emitter()
    url = f"https://localhost:{port}/hook"
    adapter = WebhookAdapter(
        Endpoint(url, generate_secret()),
        outbox=tmp_path / "o.sqlite3",
        allow_hosts=["127.0.0.1"],
        retry_schedule=(0, 30),
    ).connect(emitter)  # the system's trusted certificates: not this one
    try:
        emitter.started("aws01", "change_ip")
        assert wait_until(lambda: adapter.stats["retrying"] == 1, timeout=10)
        assert "CERTIFICATE_VERIFY_FAILED" in adapter.stats["endpoints"][url]["last_error"]
    finally:
        adapter.close(timeout=0)
    assert received == []
