"""The test receiver (``tests/support/http.py``) itself: it records, answers as scripted,
delays, closes on request, survives a restart on the same port, and keeps connections
alive without Nagle stalls."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from tests.support.http import Received, Receiver, Reply
from tests.support.socketio import wait_until


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver
    assert receiver.errors == []


@pytest.fixture
def pool() -> Iterator[urllib3.PoolManager]:
    with urllib3.PoolManager(retries=False, timeout=5.0) as pool:
        yield pool


def _webhook(subject: str, seq: int) -> bytes:
    return json.dumps(
        {
            "type": "task.progress",
            "timestamp": "2026-01-01T00:00:00Z",
            "data": {"subject": subject, "seq": seq, "task_id": "t", "type": "progress"},
        }
    ).encode()


def test_records_each_request(receiver: Receiver, pool: urllib3.PoolManager) -> None:
    before = time.monotonic()
    response = pool.request(
        "POST",
        receiver.url + "/hooks/a?x=1",
        body=b'{"a": 1}',
        headers={"Content-Type": "application/json", "Webhook-Id": "msg_1", "X-Two": "2"},
    )
    assert response.status == 204
    assert response.data == b""
    assert response.headers.get("Content-Length") is None  # none on a 204
    [request] = receiver.wait_for(1)
    assert isinstance(request, Received)
    assert (request.method, request.path) == ("POST", "/hooks/a?x=1")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-two"] == "2"
    assert request.headers["content-length"] == "8"
    assert request.body == b'{"a": 1}'
    assert request.json == {"a": 1}
    assert request.id == "msg_1"
    assert receiver.ids() == ["msg_1"]
    assert before <= request.time <= time.monotonic()
    assert request.answered_status == 204
    assert request.answered_at is not None
    assert request.answered_at >= request.time

    response = pool.request("GET", receiver.url + "/")
    assert response.status == 204
    assert receiver.ids() == ["msg_1", None]
    assert receiver.requests[1].body == b""


def test_scripted_replies_in_order_per_path(receiver: Receiver, pool: urllib3.PoolManager) -> None:
    receiver.respond("/hook", Reply(500, b"boom"), Reply(200, "ok", {"X-Reply": "yes"}))
    receiver.respond(None, Reply(410))

    def post(path: str) -> tuple[int, bytes, str | None]:
        response = pool.request("POST", receiver.url + path, body=b"{}")
        return response.status, response.data, response.headers.get("X-Reply")

    assert post("/hook") == (500, b"boom", None)
    assert post("/other") == (410, b"", None)  # the any-path script
    assert post("/hook?attempt=2") == (200, b"ok", "yes")  # matched without the query
    assert post("/hook") == (204, b"", None)  # both scripts used up: the default
    receiver.default = Reply(202, b"accepted")
    assert post("/other") == (202, b"accepted", None)
    statuses = [request.answered_status for request in receiver.requests]
    assert statuses == [500, 410, 200, 204, 202]


def test_delay_records_first_and_can_change_on_the_fly(
    receiver: Receiver, pool: urllib3.PoolManager
) -> None:
    receiver.delay = 0.3
    result: list[float] = []

    def post() -> None:
        started = time.monotonic()
        pool.request("POST", receiver.url + "/slow", body=b"x")
        result.append(time.monotonic() - started)

    thread = threading.Thread(target=post)
    thread.start()
    try:
        [request] = receiver.wait_for(1, timeout=5)
        assert request.answered_status is None  # recorded before the answer
    finally:
        thread.join(5)
    assert result
    assert result[0] >= 0.3
    assert request.answered_status == 204

    receiver.delay = 0.0
    receiver.respond("/slow", Reply(200, delay=0.2))
    started = time.monotonic()
    assert pool.request("POST", receiver.url + "/slow").status == 200
    assert 0.2 <= time.monotonic() - started < 2
    started = time.monotonic()
    assert pool.request("POST", receiver.url + "/slow").status == 204
    assert time.monotonic() - started < 0.2


def test_a_client_timing_out_still_shows_the_attempt(
    receiver: Receiver, pool: urllib3.PoolManager
) -> None:
    receiver.delay = 5.0
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        pool.request("POST", receiver.url + "/hook", body=b"{}", timeout=0.2)
    [request] = receiver.wait_for(1)
    assert request.answered_status is None
    # stop() does not wait out the delay of the request still being handled
    started = time.monotonic()
    receiver.stop()
    assert time.monotonic() - started < 2
    assert request.answered_status is None


def test_stop_and_start_on_the_same_port_with_a_pooled_connection(
    receiver: Receiver, pool: urllib3.PoolManager
) -> None:
    port = receiver.port
    assert pool.request("POST", receiver.url + "/hook", body=b"1").status == 204
    connection_pool = pool.connection_from_url(receiver.url)
    assert connection_pool.num_connections == 1  # a kept-alive connection now in the pool

    receiver.stop()
    assert not receiver.running
    with pytest.raises(urllib3.exceptions.HTTPError):
        pool.request("POST", receiver.url + "/hook", body=b"2")
    receiver.stop()  # again: nothing happens

    receiver.start()
    assert receiver.running
    assert receiver.port == port
    # the pooled connection the old server dropped is noticed and replaced, no retry needed
    assert pool.request("POST", receiver.url + "/hook", body=b"3").status == 204
    assert [request.body for request in receiver.requests] == [b"1", b"3"]

    # and a connection kept by a plain http.client is shut by stop(), not left talking
    # to a server that is gone
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST", "/hook", body=b"4")
        assert connection.getresponse().read() == b""
        receiver.stop()
        receiver.start()

        def post_again() -> None:
            connection.request("POST", "/hook", body=b"5")
            connection.getresponse()

        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            post_again()
    finally:
        connection.close()
    assert [request.body for request in receiver.requests] == [b"1", b"3", b"4"]


def test_a_given_port_is_used(receiver: Receiver) -> None:
    port = receiver.port
    receiver.stop()
    with Receiver(port) as again:
        assert again.port == port
        assert again.url == f"http://127.0.0.1:{port}"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/")
            assert connection.getresponse().status == 204
        finally:
            connection.close()


def test_status_none_closes_the_connection_without_answering(
    receiver: Receiver, pool: urllib3.PoolManager
) -> None:
    receiver.respond("/hook", Reply(None))
    with pytest.raises(urllib3.exceptions.ProtocolError):
        pool.request("POST", receiver.url + "/hook", body=b"{}")
    assert pool.request("POST", receiver.url + "/hook", body=b"{}").status == 204
    first, second = receiver.wait_for(2)
    assert first.answered_status is None
    assert second.answered_status == 204
    assert first.client_port != second.client_port


def test_chunked_bodies_are_read_whole(receiver: Receiver) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
    try:
        connection.request("POST", "/hook", body=iter([b"ab", b"cde", b""]), encode_chunked=True)
        assert connection.getresponse().read() == b""
        connection.request("POST", "/hook", body=b"after")  # the same connection still works
        assert connection.getresponse().status == 204
    finally:
        connection.close()
    assert [request.body for request in receiver.wait_for(2)] == [b"abcde", b"after"]


def test_an_unfinished_body_is_not_recorded(receiver: Receiver) -> None:
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock:
        sock.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # closed without an answer
    receiver.respond(None, Reply(200))
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock:
        sock.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
    assert [request.body for request in receiver.wait_for(1)] == [b"abc"]


def test_by_subject_and_wait_for(receiver: Receiver, pool: urllib3.PoolManager) -> None:
    receiver.respond(None, Reply(503))
    sent = [("a", 1, "m1"), ("b", 1, "m2"), ("a", 1, "m1"), ("a", 2, "m3")]
    for subject, seq, message_id in sent:
        pool.request(
            "POST",
            receiver.url + "/hook",
            body=_webhook(subject, seq),
            headers={"Webhook-Id": message_id},
        )
    receiver.wait_for(4)
    assert receiver.by_subject() == {"a": [("m1", 1), ("m1", 1), ("m3", 2)], "b": [("m2", 1)]}
    assert receiver.by_subject(ok_only=True) == {"a": [("m1", 1), ("m3", 2)], "b": [("m2", 1)]}
    with pytest.raises(AssertionError, match=r"expected at least 5 requests .* got 4:\n.*id=m1"):
        receiver.wait_for(5, timeout=0.1)
    pool.request("POST", receiver.url + "/hook", body=b"not json")
    with pytest.raises(AssertionError, match="not a webhook body"):
        receiver.by_subject()


def test_keep_alive_posts_do_not_stall(receiver: Receiver, pool: urllib3.PoolManager) -> None:
    # A sanity check that Nagle is off (a stall would cost ~40 ms a request), not a benchmark.
    receiver.default = Reply(200, b'{"ok": true}')
    body = _webhook("a", 1)
    started = time.monotonic()
    for _ in range(100):
        response = pool.request("POST", receiver.url + "/hook", body=body)
        assert response.status == 200
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    requests = receiver.wait_for(100)
    assert len({request.client_port for request in requests}) == 1  # one kept-alive connection
    assert wait_until(lambda: all(r.answered_status == 200 for r in receiver.requests))


@pytest.mark.parametrize("end", ["stdin", "sigterm"])
def test_the_benchmark_receiver_counts_and_reports(end: str, pool: urllib3.PoolManager) -> None:
    # benchmarks/harness/receiver.py, run as the benchmarks run it: a subprocess
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "benchmarks.harness.receiver", "--port", "0"]
    with subprocess.Popen(
        command, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            ready = json.loads(process.stdout.readline())
            assert ready["ready"] is True
            assert ready["pid"] == process.pid
            url = f"http://127.0.0.1:{ready['port']}"
            for body in (b"{}", b"x" * 10_000, b""):
                response = pool.request("POST", url + "/hook", body=body)
                assert (response.status, response.data) == (204, b"")
            chunked = pool.request("POST", url + "/hook", body=iter([b"ab", b"c"]), chunked=True)
            assert chunked.status == 204
            counts = pool.request("GET", url + "/").json()
            assert (counts["count"], counts["answered"]) == (4, 4)
            if end == "stdin":
                process.stdin.close()
            else:
                process.send_signal(signal.SIGTERM)
            final = json.loads(process.stdout.readline())
            assert process.wait(5) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
    assert (final["count"], final["answered"]) == (4, 4)
    assert final["seconds"] >= 0
