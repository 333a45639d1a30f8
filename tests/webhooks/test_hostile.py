"""Hostile endpoints, hostile environments and hostile input against the durable webhooks.

Every test here shows a defect an attacker review found (and that is fixed): each failed
on the code before the fix.
Real servers only: the scriptable :class:`Receiver`, or a raw socket server for what no
well-behaved HTTP server would send.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from taskevents import Emitter
from taskevents.adapters.outbox import Delivery, MemoryOutbox, NewDelivery, SQLiteOutbox
from taskevents.adapters.webhooks import Endpoint, WebhookAdapter
from taskevents.cli import main as cli_main
from taskevents.exceptions import ValidationError
from taskevents.webhooks import generate_secret
from tests.support.http import Receiver, Reply
from tests.support.socketio import wait_until
from tests.webhooks.conftest import Make


class RawServer:
    """One-connection-at-a-time TCP server on 127.0.0.1 that reads a request and then
    runs ``script(conn)``: for answers no real HTTP server gives. Stops on close()."""

    def __init__(self, script: Callable[[socket.socket, threading.Event], None]) -> None:
        self.script = script
        self.stopping = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.script(conn, self.stopping)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()


def trickle(prefix: bytes, byte: bytes, seconds: float) -> Callable[..., None]:
    """Send ``prefix``, then ``byte`` every 0.2 s (well inside any read timeout) for
    ``seconds``."""

    def script(conn: socket.socket, stopping: threading.Event) -> None:
        conn.sendall(prefix)
        end = time.monotonic() + seconds
        while time.monotonic() < end and not stopping.is_set():
            conn.sendall(byte)
            time.sleep(0.2)

    return script


def fill_up(outbox: SQLiteOutbox) -> None:
    """Make the outbox unwritable (as a full disk or a read-only volume does)."""
    with outbox._lock:  # the workers share the connection
        outbox._db.execute("PRAGMA query_only = 1")


def unfill(outbox: SQLiteOutbox) -> None:
    with outbox._lock:
        outbox._db.execute("PRAGMA query_only = 0")


def one_delivery(url: str) -> Delivery:
    return Delivery(1, url, "aws01", "t1", "msg_1", "task_started", b"{}", 0, time.time(), 0)


# -- 1. a slowloris endpoint holds a send (and a worker) for as long as it likes --------------


@pytest.mark.parametrize(
    "script",
    [
        # headers that never end
        trickle(b"HTTP/1.1 200 OK\r\n", b"X", 5.0),
        # endless interim responses
        trickle(b"", b"HTTP/1.1 100 Continue\r\n\r\n", 5.0),
        # a 2xx whose (small, so drained) body trickles
        trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 60000\r\n\r\n", b"X", 5.0),
        # a 500 whose body trickles
        trickle(b"HTTP/1.1 500 Oops\r\nContent-Length: 60000\r\n\r\n", b"X", 5.0),
    ],
    ids=["endless-headers", "endless-100-continue", "trickled-2xx-body", "trickled-5xx-body"],
)
def test_a_trickling_endpoint_cannot_hold_one_send_past_its_timeout(
    script: Callable[..., None],
) -> None:
    # urllib3's read timeout is per read: a server sending a byte every 0.2 s never trips
    # a 0.5 s timeout, so one send lasts as long as the server wants, pinning a worker,
    # outliving the lane's lease (another worker then sends the same rows again) and
    # holding close() up. Expected: a deadline on the whole attempt.
    server = RawServer(script)
    adapter = WebhookAdapter(
        Endpoint(server.url, generate_secret(), timeout=0.5),
        outbox=MemoryOutbox(),
        allow_hosts=["127.0.0.1"],
    )
    try:
        start = time.monotonic()
        outcome = adapter.send(one_delivery(server.url))
        took = time.monotonic() - start
        assert took < 2.0, f"one send with timeout=0.5 took {took:.1f}s ({outcome})"
    finally:
        adapter.close(timeout=0)
        server.close()


# -- 2. close() takes workers x timeout, not timeout ----------------------------------------------


def test_close_returns_within_its_timeout_when_every_worker_is_stuck(
    receiver: Receiver, make: Make
) -> None:
    receiver.delay = 8.0
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret(), timeout=8), workers=4)
    adapter.connect(emitter)
    for n in range(4):
        emitter.started(f"s{n}", "change_ip")
    receiver.wait_for(4)
    start = time.monotonic()
    adapter.close(timeout=1.0)
    took = time.monotonic() - start
    # flush(1) then thread.join(1) for each of the 4 stuck workers in turn: about 5 s
    # (and at interpreter exit, close(timeout=2): about 10 s)
    assert took < 2.0, f"close(timeout=1) took {took:.1f}s"


# -- 3. a disabled endpoint (410) with rows left makes the workers spin ---------------------------


def test_a_disabled_endpoint_with_rows_left_does_not_make_the_workers_spin(
    receiver: Receiver, make: Make
) -> None:
    receiver.respond("/gone", Reply(410))
    emitter = Emitter()
    adapter = make(
        Endpoint(receiver.url + "/gone", generate_secret()), workers=1, poll_interval=0.2
    ).connect(emitter)
    for n in range(20):
        emitter.started(f"s{n}", "change_ip")
    wait_until(lambda: adapter.stats["endpoints"][receiver.url + "/gone"]["disabled"], timeout=5)
    time.sleep(0.3)
    claims = [0]
    claim = adapter.outbox.claim

    def counting(*args: Any, **kwargs: Any) -> Any:
        claims[0] += 1
        return claim(*args, **kwargs)

    adapter.outbox.claim = counting  # type: ignore[method-assign]
    time.sleep(1.0)
    # next_due() counts the disabled endpoint's lanes (due long ago), so _idle() waits
    # 5 ms and claims again, forever: about 200 write transactions a second per worker
    assert claims[0] < 30, f"{claims[0]} claims in 1 s with nothing claimable"


def test_a_large_disabled_backlog_does_not_slow_down_handle(
    receiver: Receiver, make: Make, tmp_path: Path
) -> None:
    gone, ok = receiver.url + "/gone", receiver.url + "/ok"
    path = tmp_path / "outbox.sqlite3"
    outbox = SQLiteOutbox(path)
    now = time.time()
    outbox.add(
        [
            NewDelivery(gone, f"s{i}", "t", f"e{i}", "task_started", b"{}", now)
            for i in range(50_000)
        ],
        now,
    )
    with outbox._write() as db:  # as a 410 leaves it
        db.execute(
            "INSERT INTO targets (target, disabled_at, disabled_reason) VALUES (?, ?, ?)",
            (gone, now, "410 Gone"),
        )
    outbox.close()
    emitter = Emitter()
    make([Endpoint(gone, generate_secret()), Endpoint(ok, generate_secret())]).connect(emitter)
    time.sleep(0.5)
    took = []
    for n in range(150):
        emitter.started(f"q{n}", "change_ip")
        start = time.perf_counter()
        emitter.completed(f"q{n}")
        took.append(time.perf_counter() - start)
        time.sleep(0.003)
    took.sort()
    median = took[len(took) // 2]
    # If every claim scanned the disabled endpoint's 50k due lanes under the outbox lock
    # (the workers claim every 5 ms), handle() would wait behind one most of the time, so
    # the typical call would take tens of ms. The median, unlike a p99, does not move
    # with a busy machine's stray pauses (a p99 of 10.4 ms failed a CI run once).
    assert median < 0.010, (
        f"completed() median {median * 1000:.1f} ms, "
        f"p99 {took[int(len(took) * 0.99)] * 1000:.1f} ms, max {took[-1] * 1000:.1f} ms"
    )


# -- 4. handle() waits busy_timeout (5 s) for another process's write lock -------------------------


def test_handle_does_not_wait_for_another_connections_write_lock(
    receiver: Receiver, make: Make, tmp_path: Path
) -> None:
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret())).connect(emitter)
    emitter.started("aws01", "change_ip")
    assert adapter.flush(5)
    other = sqlite3.connect(tmp_path / "outbox.sqlite3", isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")  # e.g. another process's long write, the CLI's purge
    try:
        start = time.monotonic()
        event = emitter.completed("aws01")
        took = time.monotonic() - start
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert adapter.flush(10)
    assert event.id in receiver.ids()
    assert took < 0.5, f"completed() blocked {took:.1f}s in the emitting thread"


# -- 5. the WAL is never checkpointed while there is a backlog ------------------------------------


def test_the_wal_is_checkpointed_while_the_workers_are_busy(
    receiver: Receiver, make: Make, tmp_path: Path
) -> None:
    receiver.delay = 0.02  # a slow endpoint: the workers always have a lane to work
    emitter = Emitter()
    make(Endpoint(receiver.url + "/hook", generate_secret())).connect(emitter)
    blob = "x" * 20_000
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < 3.0:
        emitter.started(f"s{n % 50}", "change_ip", blob=blob)
        emitter.completed(f"s{n % 50}")
        n += 1
        time.sleep(0.002)
    wal = os.path.getsize(tmp_path / "outbox.sqlite3-wal")
    # maintain() (the only checkpoint) runs only when a worker finds nothing to claim:
    # under a sustained backlog the WAL grows without bound (about 35 MB/s here)
    assert wal < 60_000_000, f"WAL at {wal / 1e6:.0f} MB after 3 s of backlog"


# -- 6. rows held in memory (outbox unwritable) are not coalesced: progress pushes out ---------
# -- the completion ---------------------------------------------------------------------------


def test_a_progress_flood_while_the_outbox_is_full_does_not_push_out_the_completion(
    receiver: Receiver, make: Make
) -> None:
    emitter = Emitter()
    adapter = make(
        Endpoint(receiver.url + "/hook", generate_secret(), progress=True), max_unwritten=50
    )
    outbox = adapter.outbox
    assert isinstance(outbox, SQLiteOutbox)
    adapter.connect(emitter)
    emitter.started("warmup", "change_ip")
    emitter.completed("warmup")
    assert adapter.flush(10)
    fill_up(outbox)
    started = emitter.started("aws01", "change_ip")
    for p in range(100):
        emitter.progress("aws01", p)
    completed = emitter.completed("aws01", {"ip": "203.0.113.9"})
    assert adapter.stats["unwritten"] > 0
    unfill(outbox)
    assert adapter.flush(10)
    ids = receiver.ids()
    assert started.id in ids
    # 100 progress rows of one task filled the 50 places; the completion was dropped
    assert completed.id in ids, f"dropped: {adapter.stats['unwritten_dropped']} rows"


def test_rows_lost_at_close_are_reported_as_a_warning(
    receiver: Receiver, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret()))
    outbox = adapter.outbox
    assert isinstance(outbox, SQLiteOutbox)
    adapter.connect(emitter)
    emitter.started("aws01", "change_ip")
    assert adapter.flush(10)
    fill_up(outbox)
    emitter.completed("aws01")
    assert adapter.stats["unwritten"] == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="taskevents"):
        adapter.close(timeout=0.2)
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    assert lost, [r.getMessage() for r in caplog.records]
    # events that will never be delivered are logged at INFO
    assert all(r.levelno >= logging.WARNING for r in lost), [r.levelname for r in lost]


# -- 7. hostile response details ------------------------------------------------------------------


def _answer(reply: bytes) -> Callable[..., None]:
    def script(conn: socket.socket, stopping: threading.Event) -> None:
        conn.sendall(reply)
        time.sleep(0.2)

    return script


def test_a_retry_after_with_a_non_ascii_digit_is_an_ordinary_retry() -> None:
    # http.client decodes headers as Latin-1: the byte 0xB2 is "²", which str.isdigit()
    # takes for a digit and float() refuses: send() raises ValueError (logged with its
    # traceback as an adapter error; the attempt loses its status)
    server = RawServer(
        _answer(b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n")
    )
    adapter = WebhookAdapter(
        Endpoint(server.url, generate_secret(), timeout=2),
        outbox=MemoryOutbox(),
        allow_hosts=["127.0.0.1"],
    )
    try:
        outcome = adapter.send(one_delivery(server.url))
        assert outcome.kind == "retry"
        assert outcome.status == 503
    finally:
        adapter.close(timeout=0)
        server.close()


@pytest.mark.parametrize("status", [101, 199])
def test_an_interim_status_as_a_final_answer_is_retried_not_a_dead_letter(status: int) -> None:
    # a 1xx is not an answer to the request at all (a broken proxy, a protocol mix-up):
    # today it makes a dead letter at once, like a 400
    server = RawServer(_answer(f"HTTP/1.1 {status} Odd\r\nContent-Length: 0\r\n\r\n".encode()))
    adapter = WebhookAdapter(
        Endpoint(server.url, generate_secret(), timeout=2),
        outbox=MemoryOutbox(),
        allow_hosts=["127.0.0.1"],
    )
    try:
        outcome = adapter.send(one_delivery(server.url))
        assert outcome.kind == "retry", outcome
    finally:
        adapter.close(timeout=0)
        server.close()


def test_a_redirect_location_cannot_put_terminal_escapes_in_the_cli_output(
    receiver: Receiver, make: Make, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # describe_url keeps control characters of the Location's host; the reason is printed
    # raw by `taskevents webhooks dead` (ESC c resets the operator's terminal)
    receiver.respond("/hook", Reply(302, headers={"Location": "http://a\x1bcb\x08.example/"}))
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret()), retry_schedule=(0,))
    adapter.connect(emitter)
    emitter.started("aws01", "change_ip")
    assert adapter.flush(10)
    assert adapter.stats["dead"] == 1
    adapter.close()
    capsys.readouterr()
    assert cli_main(["webhooks", "dead", "--outbox", str(tmp_path / "outbox.sqlite3")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out, repr(out)
    assert "\x08" not in out, repr(out)


# -- 8. URLs with a token in their path ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("http://10.0.0.5/hooks/SECRETTOKEN?key=SECRETKEY", {}),
        ("http://hooks.example.com/hooks/SECRETTOKEN?key=SECRETKEY", {"https_only": True}),
    ],
)
def test_configuration_errors_do_not_repeat_the_urls_path(
    url: str, options: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookAdapter(Endpoint(url, generate_secret()), outbox=tmp_path / "o.sqlite3", **options)
    message = str(caught.value)
    assert "endpoints[0].url" in message
    assert "SECRETTOKEN" not in message, message
    assert "SECRETKEY" not in message, message


def test_cli_status_json_hides_url_paths_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = SQLiteOutbox(path)
    now = time.time()
    url = "https://hooks.example.com/t/SECRETTOKEN"
    outbox.add([NewDelivery(url, "aws01", "t", "e1", "task_started", b"{}", now)], now)
    outbox.close()
    assert cli_main(["webhooks", "status", "--json", "--outbox", str(path)]) == 0
    out = capsys.readouterr().out
    assert "SECRETTOKEN" not in out, out  # the text form hides it; --json does not


# -- 9. the CLI with hostile input --------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["dead", "--limit", "99999999999999999999999"],
        ["dead", "99999999999999999999999"],
        ["retry", "99999999999999999999999"],
        ["purge", "99999999999999999999999"],
    ],
)
def test_cli_huge_numbers_are_a_usage_error_not_a_traceback(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "outbox.sqlite3"
    SQLiteOutbox(path).close()
    code: str | int | None
    try:
        code = cli_main(["webhooks", *args, "--outbox", str(path)])
    except SystemExit as exc:  # argparse's usage error is fine
        code = exc.code
    # today: OverflowError: Python int too large to convert to SQLite INTEGER
    assert code not in (0, None)
    assert "Traceback" not in capsys.readouterr().err


def test_cli_does_not_change_a_sqlite_file_that_is_not_an_outbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = tmp_path / "app.db"
    db = sqlite3.connect(app)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.commit()
    db.close()
    code = cli_main(["webhooks", "status", "--outbox", str(app)])
    db = sqlite3.connect(app)
    tables = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'"))
    mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    db.close()
    # today: exit 0, "the outbox is empty", five tables created in app.db and the file
    # switched to WAL for good
    assert tables == ["users"], tables
    assert mode == "delete"
    assert code != 0
