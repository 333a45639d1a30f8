"""A webhook receiver for the benchmarks: answers every POST with 204 and counts them.

    .venv/bin/python -m benchmarks.harness.receiver --port 8123 [--delay 0.05]
    .venv/bin/python -m benchmarks.harness.receiver --server stdlib

(from the repository root; ``python benchmarks/harness/receiver.py`` works too: it imports
nothing from the harness). Both servers are a ``ThreadingHTTPServer`` (one daemon thread
per connection) speaking HTTP/1.1 with keep-alive and TCP_NODELAY; they differ in how a
request is answered:

- ``--server minimal`` (the default): as fast as a Python server can; the request line and
  headers are parsed by ``BaseHTTPRequestHandler``, the answer is the bare status line
  (``HTTP/1.1 204 No Content`` and an empty line) written by hand: no ``Date`` or
  ``Server`` header, no logging call.
- ``--server stdlib``: what a typical receiver built on ``http.server`` looks like: reads
  the body by its ``Content-Length``, then ``send_response(204)`` (status line, ``Server``
  and ``Date`` headers, ``log_request``, silenced here) and ``end_headers()``. Real
  receivers do more still (verify the signature, store the event).

Both read chunked bodies too, count POSTs the same way and answer ``GET`` the same way.
Standard output carries JSON lines: ``{"ready": true, "port": N, "pid": P}``
once listening (``--port 0``, the default, picks a free port), and at the end
``{"count": N, "answered": N, "seconds": S}``: the POSTs received, those answered, and the
time from the first to the last arrival. It ends on SIGTERM or SIGINT, when its standard
input is closed (unless ``--no-stdin``: with stdin from /dev/null it would end at once),
or when the process ``--parent`` is gone. ``GET`` on any path answers the counts so far.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socketserver
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["main"]

_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"

#: --server's choices.
SERVERS = ("minimal", "stdlib")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, port: int, delay: float, handler: type[BaseHTTPRequestHandler] | None = None
    ) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.count = self.answered = 0
        self.first = self.last = 0.0
        super().__init__(("127.0.0.1", port), handler or _Handler)

    def server_bind(self) -> None:  # without HTTPServer's host name look-up
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away

    def counts(self) -> dict[str, Any]:
        with self.lock:
            seconds = self.last - self.first if self.count else 0.0
            return {"count": self.count, "answered": self.answered, "seconds": seconds}

    def received(self) -> None:
        """Count a POST whose body has been read; then wait ``--delay``, if any."""
        now = time.monotonic()
        with self.lock:
            self.count += 1
            self.first = self.first or now
            self.last = now
        if self.delay > 0:
            time.sleep(self.delay)

    def done(self) -> None:
        """Count a POST answered."""
        with self.lock:
            self.answered += 1


def _read_chunked(rfile: Any) -> None:
    while size := int(rfile.readline().split(b";", 1)[0] or b"0", 16):
        rfile.read(size + 2)  # the chunk and its CRLF
    while rfile.readline() not in (b"\r\n", b"\n", b""):
        pass


class _Handler(BaseHTTPRequestHandler):
    """``--server minimal``: the status line written by hand, nothing else."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            _read_chunked(self.rfile)
        elif length := int(self.headers.get("Content-Length") or 0):
            self.rfile.read(length)
        server = self.server
        server.received()
        self.wfile.write(_NO_CONTENT)
        server.done()

    def do_GET(self) -> None:
        body = json.dumps(self.server.counts()).encode()
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self.wfile.write(head.encode() + body)


class _StdlibHandler(BaseHTTPRequestHandler):
    """``--server stdlib``: a receiver as one writes it with ``http.server``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # or every keep-alive answer with a body stalls ~40 ms
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # send_response() logs every request to stderr otherwise

    def do_POST(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            _read_chunked(self.rfile)  # (the adapter and urllib3 send a Content-Length)
        else:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received()
        self.send_response(204)
        self.end_headers()
        self.server.done()

    def do_GET(self) -> None:
        body = json.dumps(self.server.counts()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


_HANDLERS: dict[str, type[BaseHTTPRequestHandler]] = {
    "minimal": _Handler,
    "stdlib": _StdlibHandler,
}


def _say(message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # nobody reads any more
        print(json.dumps(message), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness.receiver", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default=SERVERS[0],
        help="minimal (default): the status line written by hand; stdlib: "
        "send_response(204) + end_headers(), as a typical http.server receiver does",
    )
    parser.add_argument("--parent", type=int, help="end when this process is gone")
    parser.add_argument("--no-stdin", action="store_true", help="don't end when stdin closes")
    args = parser.parse_args(argv)

    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    server = _Server(args.port, args.delay, _HANDLERS[args.server])
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def watch_stdin(fd: int) -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside the buffered reader
        # would hold its lock at interpreter shutdown (a fatal error).
        with contextlib.suppress(OSError):
            while os.read(fd, 65536):
                pass
        done.set()

    def watch_parent(parent: int) -> None:
        while os.getppid() == parent and not done.is_set():
            time.sleep(0.5)
        done.set()

    if not args.no_stdin:
        threading.Thread(target=watch_stdin, args=(sys.stdin.fileno(),), daemon=True).start()
    if args.parent is not None:
        threading.Thread(target=watch_parent, args=(args.parent,), daemon=True).start()
    _say({"ready": True, "port": server.server_port, "pid": os.getpid(), "server": args.server})
    while not done.wait(0.2):
        pass
    server.shutdown()
    server.server_close()
    _say(server.counts())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
