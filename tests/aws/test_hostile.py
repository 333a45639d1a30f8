"""The AWS adapters tried as an attacker and as a careless operator would, against moto's
server (the accepted stand-in for AWS), with AWS's own answers injected where moto does
not give them (a throttle, a KMS key gone, a signature error).

Each test names, in its docstring, the defect it shows.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import math
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskevents import Emitter
from taskevents.adapters import load_adapter
from taskevents.adapters.aws import EventBridgeAdapter, SNSAdapter, SQSAdapter
from taskevents.adapters.outbox import Lane, MemoryOutbox, OutboxBusy, SQLiteOutbox
from taskevents.cli import main as cli
from taskevents.exceptions import ValidationError
from tests.support.socketio import wait_until

from .conftest import AWS, REGION, bodies, count_calls

#: Retries close together, and enough of them that nothing dies of old age in a test.
FAST = (0.0,) + (0.05,) * 11
#: One attempt now, the next one far away: a failed row stays put for the test's length.
ONCE = (0.0, 60.0)
#: A queue URL no test creates: for adapters whose calls never reach moto.
NOWHERE = "https://sqs.eu-west-1.amazonaws.com/123456789012/nowhere"


def topic_to_queue(aws: AWS) -> tuple[str, str]:
    """A new SNS topic whose (raw) subscription feeds a new queue: (topic ARN, queue URL)."""
    sns = aws.client("sns")
    arn = str(sns.create_topic(Name=aws.name("t"))["TopicArn"])
    url, queue_arn = aws.queue()
    sns.subscribe(
        TopicArn=arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return arn, url


class Refuse:
    """The next ``times`` calls of ``operation`` refused as AWS refuses a whole call: an
    error code and an HTTP status (the fixture's Faults knows only PutEvents' entries)."""

    def __init__(self, client: Any, operation: str, code: str, status: int, times: int) -> None:
        from botocore.awsrequest import AWSResponse

        self._response = AWSResponse
        self.code, self.status, self.left = code, status, times
        self.calls = 0
        self._lock = threading.Lock()
        service = client.meta.service_model.service_name
        client.meta.events.register(f"before-call.{service}.{operation}", self._refuse)

    def _refuse(self, **_: Any) -> Any:
        with self._lock:
            self.calls += 1
            if self.left <= 0:
                return None
            self.left -= 1
        error = {
            "Error": {"Code": self.code, "Message": f"{self.code} (injected by the test)"},
            "ResponseMetadata": {"HTTPStatusCode": self.status},
        }
        return self._response("https://aws.invalid/", self.status, {}, None), error


def made_or_refused(factory: Any, *args: Any, **options: Any) -> Any:
    """The adapter ``factory`` makes, or the ValidationError it raises instead."""
    try:
        return factory(*args, **options)
    except ValidationError as exc:
        return exc


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loud(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "taskevents"]


# -- 1. SNS throttling ------------------------------------------------------------------


def test_sns_throttling_is_retried_not_made_dead_letters(aws: AWS) -> None:
    """Defect: SNS throttles with the error code ``Throttled`` and HTTP 429 (botocore's
    SNS model: ThrottledException). aws.py's _TRANSIENT lists ``ThrottledException`` but
    not ``Throttled``, and _judge() treats any other 4xx as the sender's fault: the call
    is split into one call per entry (more calls while throttled) and every entry still
    throttled becomes a dead letter. The docs promise a throttled call is retried."""
    arn, queue = topic_to_queue(aws)
    emitter = Emitter()
    sns = SNSAdapter(
        arn,
        region_name=REGION,
        endpoint_url=aws.url,
        outbox=MemoryOutbox(),
        retry_schedule=FAST,
        workers=1,
        jitter=0,
    )
    throttle = Refuse(sns.client, "PublishBatch", "Throttled", 429, times=3)
    with sns.connect(emitter):
        sent = [emitter.started(f"vm{n}", "change_ip") for n in range(5)]
        assert sns.flush(15)
        stats = sns.stats
    assert throttle.left == 0
    assert stats["dead"] == 0, "a throttled call made dead letters"
    got = bodies(aws.receive(queue, 5))
    assert sorted(g["id"] for g in got) == sorted(e.id for e in sent)


# -- 2. A refusal that is the target's, not an entry's ----------------------------------


@pytest.mark.parametrize("code", ["KMS.NotFoundException", "KMS.InvalidStateException"])
def test_a_kms_key_that_is_gone_is_one_cause_not_a_dead_letter_per_event(
    aws: AWS, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect: a queue whose KMS key was deleted (or is pending deletion) refuses every
    SendMessageBatch with KMS.NotFoundException / KMS.InvalidStateException (SNS:
    KMSNotFound, KMSInvalidState, KMSOptInRequired). _DENIED knows only KMS access
    denied and disabled, so _judge() calls these the entries' fault: each call is split
    into single calls and every event becomes a dead letter, with one WARNING per event.
    The docs promise one error per cause and the events kept waiting (as for access
    denied), not a dead-letter flood."""
    url, _ = aws.queue()
    emitter = Emitter()
    sqs = SQSAdapter(
        url,
        region_name=REGION,
        endpoint_url=aws.url,
        outbox=MemoryOutbox(),
        retry_schedule=ONCE,
        workers=1,
    )
    Refuse(sqs.client, "SendMessageBatch", code, 400, times=10**6)
    with caplog.at_level(logging.INFO, logger="taskevents"), sqs.connect(emitter):
        for n in range(10):
            emitter.started(f"vm{n}", "change_ip")
        sqs.flush(3)
        stats = sqs.stats
    assert stats["delivered"] == 0
    assert stats["dead"] <= 1, f"{stats['dead']} dead letters for one cause"
    records = loud(caplog)
    assert len(records) <= 2, [r.getMessage()[:120] for r in records]


# -- 3. Secrets in logs and in the outbox -----------------------------------------------


def test_a_signature_error_does_not_put_the_session_token_in_logs_or_the_outbox(
    aws: AWS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Defect: AWS answers a SigV4 signature error (InvalidSignatureException,
    SignatureDoesNotMatch) with a message that quotes the canonical request it expected,
    x-amz-security-token header included. aws.py's _judge()/_disable() copy AWS's message
    verbatim (multi-line, unredacted) into the ERROR log, the dead letter's reason, the
    attempt record and the target's disabled reason, which `taskevents outbox status`
    and `dead` print: the session token leaks to logs and to anyone who can read the
    outbox file."""
    from botocore.awsrequest import AWSResponse

    token = "IQoJb3JpZ2luX2VjEHhostileTESTsessionTOKEN0123456789abcdefghijklmnop"
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    path = str(tmp_path / "aws.sqlite3")
    bridge = EventBridgeAdapter(
        aws.name("bus"), region_name=REGION, endpoint_url=aws.url, outbox=path
    )

    def signature_error(request: Any, **_: Any) -> Any:
        sent = request.headers["X-Amz-Security-Token"]
        sent = sent.decode() if isinstance(sent, bytes) else sent
        message = (
            "The request signature we calculated does not match the signature you "
            "provided. Check your AWS Secret Access Key and signing method. Consult the "
            "service documentation for details.\n\nThe Canonical String for this request "
            "should have been\n'POST\n/\n\ncontent-type:application/x-amz-json-1.1\n"
            f"host:events.{REGION}.amazonaws.com\nx-amz-date:20260101T000000Z\n"
            f"x-amz-security-token:{sent}\nx-amz-target:AWSEvents.PutEvents\n\n"
            "content-type;host;x-amz-date;x-amz-security-token;x-amz-target\n"
            "0123abcd'\n\nThe String-to-Sign should have been\n'AWS4-HMAC-SHA256\n"
            f"20260101T000000Z\n20260101/{REGION}/events/aws4_request\n4567ef'\n"
        )
        body = json.dumps({"__type": "InvalidSignatureException", "message": message}).encode()

        class Raw:
            def stream(self, **_: Any) -> Iterator[bytes]:
                yield body

        headers = {"Content-Type": "application/x-amz-json-1.1"}
        return AWSResponse(request.url, 400, headers, Raw())

    bridge.client.meta.events.register("before-send.events.PutEvents", signature_error)
    emitter = Emitter()
    with caplog.at_level(logging.INFO, logger="taskevents"), bridge.connect(emitter):
        emitter.started("aws01", "change_ip")
        assert bridge.flush(10)
        stats = bridge.stats
    assert stats["endpoints"][bridge.target]["disabled"], "the signature error was not seen"
    assert token not in caplog.text, "the session token is in the log"
    assert token not in json.dumps(stats, default=str)
    outbox = SQLiteOutbox(path)
    try:
        for letter in outbox.dead_letters():
            assert token not in letter.reason
            assert all(token not in (a.error or "") for a in letter.attempts)
        assert token not in json.dumps(outbox.stats())
    finally:
        outbox.close()
    capsys.readouterr()
    assert cli(["outbox", "status", "--outbox", path]) == 0
    assert cli(["outbox", "dead", "--json", "--outbox", path]) == 0
    assert token not in capsys.readouterr().out, "`taskevents outbox` prints the token"


def test_a_password_in_the_endpoint_url_is_refused_or_kept_out_of_the_log(
    aws: AWS, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect (careless operator): an endpoint_url with user:password@ is accepted, and
    botocore's EndpointConnectionError text, which aws.py logs and records as is, carries
    the URL whole: the password is in the ERROR log, the WARNING, ``stats`` and the
    outbox's attempts. (The webhook adapter hides such parts with describe_url().)"""
    secret = "hunter2-hostile-password"
    url = f"http://admin:{secret}@127.0.0.1:{closed_port()}"
    sqs = made_or_refused(
        SQSAdapter,
        NOWHERE,
        region_name=REGION,
        endpoint_url=url,
        outbox=MemoryOutbox(),
        timeout=0.5,
        retry_schedule=ONCE,
        workers=1,
    )
    if isinstance(sqs, ValidationError):
        assert sqs.field == "endpoint_url"
        assert secret not in str(sqs)
        return
    emitter = Emitter()
    with caplog.at_level(logging.INFO, logger="taskevents"):
        sqs.connect(emitter)
        try:
            emitter.started("aws01", "change_ip")
            assert wait_until(lambda: sqs.stats["retries"] >= 1, timeout=15)
            stats = sqs.stats
        finally:
            sqs.close(0.5)
    assert secret not in caplog.text
    assert secret not in json.dumps(stats, default=str)


# -- 4. A target that trickles its answer -----------------------------------------------


class Trickler:
    """An HTTP server that starts an answer and then sends one byte of a header every
    0.1 s, for ever: every read gets something well within any read timeout."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        try:
            seen = b""
            while b"\r\n\r\n" not in seen:
                data = conn.recv(65536)
                if not data:
                    return
                seen += data
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nX-Slow: ")
            while not self.stop.wait(0.1):
                conn.sendall(b"a")
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def test_a_target_that_trickles_its_answer_does_not_hold_a_worker_for_ever() -> None:
    """Defect: ``timeout`` is botocore's read_timeout, which bounds each socket read, not
    the call. An endpoint (a proxy, a middlebox, a stand-in) that trickles its answer a
    byte at a time keeps a worker in one call for ever, silently: no attempt is recorded,
    nothing is logged, and once the claim's lease (lease + timeout_for) runs out the next
    worker takes the lane and hangs the same way. The webhook adapter bounds the whole
    attempt (``deadline(endpoint.timeout)``); the AWS adapters should too (about
    timeout_for() at most)."""
    trickler = Trickler()
    sqs = SQSAdapter(
        NOWHERE,
        region_name=REGION,
        endpoint_url=trickler.url,
        outbox=MemoryOutbox(),
        timeout=0.5,
        retry_schedule=ONCE,
        workers=1,
    )
    emitter = Emitter()
    sqs.connect(emitter)
    try:
        emitter.started("aws01", "change_ip")
        # timeout_for() is 3 * (0.5 + 0.5) + 5 = 8 s: the call should be over by then.
        gave_up = wait_until(lambda: sqs.stats["retries"] + sqs.stats["dead"] >= 1, timeout=12)
    finally:
        trickler.close()
        sqs.close(2)
    assert gave_up, "the worker is still in its first call after 12 s"


# -- 5. Values no thread can wait for ---------------------------------------------------


@pytest.mark.parametrize("field", ["batch_window", "poll_interval", "timeout"])
def test_an_infinite_option_is_refused_or_harmless(
    aws: AWS, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect (careless operator): _checks.number() accepts ``inf`` (and values past
    threading.TIMEOUT_MAX), so:
    - ``batch_window=inf``: _linger() calls Condition.wait(inf), OverflowError; _work()
      catches it and claims again at once: a tight loop (hundreds of thousands of errors
      a second, a SQLite write each) and the events are never sent until a flush();
    - ``poll_interval=inf``: _sleep() raises OverflowError outside any try, and every
      worker thread dies;
    - ``timeout=inf``: every call fails *after* AWS took the message (urllib3 cannot set
      the socket timeout), so each attempt delivers a duplicate and the row is retried.
    Each should be refused naming the option (or made harmless)."""
    url, _ = aws.queue()
    sqs = made_or_refused(
        SQSAdapter,
        url,
        region_name=REGION,
        endpoint_url=aws.url,
        outbox=MemoryOutbox(),
        retry_schedule=ONCE,
        **{field: math.inf},
    )
    if isinstance(sqs, ValidationError):
        assert sqs.field == field
        return
    emitter = Emitter()
    sqs.connect(emitter)
    try:
        event = emitter.started("aws01", "change_ip")
        delivered = wait_until(lambda: sqs.stats["delivered"] == 1, timeout=8)
        stats = sqs.stats
    finally:
        sqs.close(1)
    assert delivered, f"{field}=inf: the event was not sent by the workers"
    assert stats["errors"] == 0
    got = aws.receive(url, 1, timeout=5)
    assert [json.loads(m["Body"])["id"] for m in got] == [event.id]


# -- 6. An outbox error while gathering a batch -----------------------------------------


class BusyOnce(SQLiteOutbox):
    """A SQLite outbox whose claim, once, after a lane was handed out, finds the file
    busy (as when another process holds a long write): OutboxBusy."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.handed_out = False
        self.was_busy = False

    def claim(self, targets: Any, owner: str, now: float, lease: float, limit: int) -> Lane | None:
        if self.handed_out and not self.was_busy:
            self.was_busy = True
            raise OutboxBusy("the outbox was busy for 5s (another process writes to it)")
        lane = super().claim(targets, owner, now, lease, limit)
        if lane is not None and lane.rows:
            self.handed_out = True
        return lane


def test_an_outbox_error_while_gathering_a_batch_does_not_strand_the_claimed_lane(
    aws: AWS, tmp_path: Path
) -> None:
    """Defect: DurableAdapter._run_batches() claims more lanes (_more_lanes) and may
    linger (_linger, which releases and claims again) *before* its try/finally. An outbox
    error there (OutboxBusy while another process writes; an OverflowError in _linger)
    propagates with the first lane still claimed: its subject's events wait for the claim
    to run out, lease + timeout_for() (80 s by default), and the log gets a traceback."""
    url, _ = aws.queue()
    outbox = BusyOnce(tmp_path / "aws.sqlite3")
    sqs = SQSAdapter(url, region_name=REGION, endpoint_url=aws.url, outbox=outbox, workers=1)
    emitter = Emitter()
    sqs.connect(emitter)
    try:
        event = emitter.started("aws01", "change_ip")
        delivered = wait_until(lambda: sqs.stats["delivered"] == 1, timeout=10)
    finally:
        sqs.close(1)
    assert outbox.was_busy
    assert delivered, "the lane stayed claimed after the outbox error"
    got = aws.receive(url, 1, timeout=5)
    assert [json.loads(m["Body"])["id"] for m in got] == [event.id]


# -- 7. Options the error does not name -------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("region_name", "eu west 1"),
        ("region_name", "eu-west-1/../../x"),
        ("endpoint_url", "http://exa mple.com"),
        ("endpoint_url", "https://[::1"),
    ],
)
def test_a_malformed_region_or_endpoint_is_refused_naming_it(option: str, value: str) -> None:
    """Defect: a malformed region_name reaches botocore, which raises InvalidRegionError;
    a malformed endpoint_url, ValueError('Invalid endpoint'). Neither is a
    ValidationError, so neither load_adapter() nor TASKEVENTS_ADAPTERS names the option
    (aws.py _client() catches only NoRegionError)."""
    options: dict[str, Any] = {"region_name": REGION, "outbox": MemoryOutbox(), option: value}
    with pytest.raises(ValidationError) as caught:
        load_adapter("sqs", queue_url=NOWHERE, **options)
    assert caught.value.field == option


def test_a_malformed_region_in_the_flask_config_is_named(tmp_path: Path) -> None:
    """Defect: the same, through the Flask configuration: the app fails to start with
    botocore's InvalidRegionError and no TASKEVENTS_ADAPTERS['sqs'].region_name."""
    import flask
    from flask_socketio import SocketIO

    from taskevents.flask import TaskEvents

    app = flask.Flask("aws-hostile-config")
    app.config["TASKEVENTS_ADAPTERS"] = {
        "sqs": {
            "queue_url": NOWHERE,
            "region_name": "eu west 1",
            "outbox": str(tmp_path / "aws.sqlite3"),
        }
    }
    with pytest.raises(ValidationError, match=r"TASKEVENTS_ADAPTERS\['sqs'\]\.region_name"):
        TaskEvents(app, SocketIO(app, async_mode="threading"))


def test_a_client_without_meta_is_refused_naming_client() -> None:
    """Defect: ``client=`` is checked only for the send method; aws.py then reads
    ``client.meta.region_name`` unguarded, so a wrapper object (or a mock with a spec)
    fails with AttributeError instead of a ValidationError naming ``client``."""

    class Wrapper:
        def put_events(self, **_: Any) -> dict[str, Any]:
            return {"FailedEntryCount": 0, "Entries": []}

    bridge = made_or_refused(EventBridgeAdapter, "bus", client=Wrapper(), outbox=MemoryOutbox())
    if isinstance(bridge, ValidationError):
        assert bridge.field == "client"
        return
    bridge.close(0)


# -- 8. Attribute values SQS refuses ----------------------------------------------------

#: What SQS takes in a message body, and so in a String attribute's value.
_SQS_TEXT = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


def test_message_attributes_hold_only_characters_sqs_accepts(aws: AWS) -> None:
    """Defect: the emitter accepts U+FFFE and U+FFFF in a subject and a task type (they
    are neither control characters nor surrogates), and the body is safe (ASCII-escaped
    JSON), but _attributes() sends ``subject`` and ``task_type`` as they are. SQS refuses
    a String attribute value outside #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD
    #x10000-#x10FFFF ("the same restrictions as the message body"), so on AWS every event
    of such a subject becomes a dead letter. (moto does not check; the request does.)"""
    url, _ = aws.queue()
    emitter = Emitter()
    sqs = SQSAdapter(url, region_name=REGION, endpoint_url=aws.url, outbox=MemoryOutbox())
    calls = count_calls(sqs.client, "SendMessageBatch")
    with sqs.connect(emitter):
        emitter.started("vm\uffff", "change\ufffe_ip")
        assert sqs.flush(15)
    sent = [entry for call in calls for entry in call]
    assert sent
    for entry in sent:
        for name, value in entry["MessageAttributes"].items():
            text = value["StringValue"]
            assert _SQS_TEXT.fullmatch(text), f"attribute {name} = {text!r}: SQS refuses it"


# -- 9. A target that answers garbage ---------------------------------------------------


class Portal(http.server.BaseHTTPRequestHandler):
    """Answers every request 200 with an HTML page, as a captive portal or a misrouted
    proxy does."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html><body>Please log in to continue</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_target_answering_garbage_is_a_quiet_retry_without_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Defect: an answer botocore cannot parse (HTML with 200 to SNS's query protocol
    gives KeyError 'PublishBatchResult'; malformed JSON gives ResponseParserError,
    TypeError or AttributeError) is not one of the exceptions _attempt() sorts, so it
    reaches _run_batches()' catch-all, which logs an ERROR with a full traceback (every
    10 s while it lasts), where the docs promise a failing target is a WARNING at its first
    failure and then at most one a minute."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    sns = SNSAdapter(
        "arn:aws:sns:eu-west-1:123456789012:task-events",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{port}",
        outbox=MemoryOutbox(),
        retry_schedule=(0.0, 0.05, 0.05, 0.05, 60.0),  # no dead letter within the test
        workers=1,
    )
    emitter = Emitter()
    with caplog.at_level(logging.INFO, logger="taskevents"):
        sns.connect(emitter)
        try:
            emitter.started("aws01", "change_ip")
            assert wait_until(lambda: sns.stats["retries"] >= 3, timeout=15)
        finally:
            sns.close(0.5)
            server.shutdown()
            server.server_close()
    records = loud(caplog)
    assert not [r for r in records if r.exc_info], "a traceback for a garbage answer"
    failures = [r for r in records if "closed with" not in r.getMessage()]
    assert len(failures) <= 1, [r.getMessage()[:120] for r in failures]
