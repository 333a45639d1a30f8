"""AWS for the tests: moto's server on a free port (the one stand-in the project allows,
since AWS itself is out of reach), and clients of it with made-up credentials."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "eu-west-1"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    # Made-up credentials and no shared files: nothing of this machine's AWS setup counts.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


class AWS:
    """Clients of the moto server, and what the tests make there."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.options = {"region_name": REGION, "endpoint_url": url}

    def client(self, service: str) -> Any:
        return boto3.session.Session().client(service, **self.options)

    def name(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    def queue(self, fifo: bool = False) -> tuple[str, str]:
        """A new queue: (URL, ARN)."""
        sqs = self.client("sqs")
        name = self.name("q") + (".fifo" if fifo else "")
        attributes = {"FifoQueue": "true"} if fifo else {}
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(url), str(arn["Attributes"]["QueueArn"])

    def receive(
        self, queue_url: str, count: int, timeout: float = 15.0, *, settle: float = 0.3
    ) -> list[dict[str, Any]]:
        """Every message of the queue until ``count`` arrived (and ``settle`` seconds
        more, to see any extra), deleted as received."""
        sqs = self.client("sqs")
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        quiet_until: float | None = None
        while time.monotonic() < deadline:
            messages = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
            ).get("Messages", [])
            for message in messages:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            got.extend(messages)
            if len(got) >= count:
                if quiet_until is None:
                    quiet_until = time.monotonic() + settle
                elif time.monotonic() >= quiet_until:
                    return got
            if not messages:
                time.sleep(0.05)
        return got


@pytest.fixture
def aws(moto_url: str) -> AWS:
    return AWS(moto_url)


def count_calls(client: Any, operation: str) -> list[list[dict[str, Any]]]:
    """The entries of every ``operation`` call ``client`` makes from now on."""
    calls: list[list[dict[str, Any]]] = []
    key = {"PutEvents": "Entries", "SendMessageBatch": "Entries"}.get(
        operation, "PublishBatchRequestEntries"
    )

    def seen(params: dict[str, Any], **_: Any) -> None:
        calls.append([dict(entry) for entry in params[key]])

    service = client.meta.service_model.service_name
    client.meta.events.register(f"before-parameter-build.{service}.{operation}", seen)
    return calls


def bodies(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in messages]


Hook = Callable[..., Any]


class Faults:
    """AWS misbehaving on cue, at the client: whole calls refused with an error code, or
    the entries of chosen subjects failed once each (taken out of the request, so AWS
    never sees them, and put back in the answer as failed, as PutEvents reports it)."""

    def __init__(self, client: Any, operation: str) -> None:
        from botocore.awsrequest import AWSResponse

        self._response = AWSResponse
        self.operation = operation
        self.refuse: list[tuple[str, int]] = []  # (code, status) for the next calls
        self.fail_subjects: dict[str, str] = {}  # subject -> error code, once each
        self._lock = threading.Lock()
        self._local = threading.local()  # the workers call at once
        service = client.meta.service_model.service_name
        events = client.meta.events
        events.register(f"before-parameter-build.{service}.{operation}", self._take_out)
        events.register(f"before-call.{service}.{operation}", self._refuse)
        events.register(f"after-call.{service}.{operation}", self._put_back)

    def _take_out(self, params: dict[str, Any], **_: Any) -> None:
        failing: dict[int, str] = {}
        with self._lock:
            for i, entry in enumerate(params["Entries"]):
                subject = json.loads(entry["Detail"])["subject"]
                code = self.fail_subjects.pop(subject, None)
                if code is not None:
                    failing[i] = code
        self._local.failing = failing
        self._local.all_failed = None
        if failing and len(failing) == len(params["Entries"]):
            # Nothing left to send (an empty call is invalid): answer it in before-call.
            self._local.failing = {}
            self._local.all_failed = [failing[i] for i in sorted(failing)]
        elif failing:
            params["Entries"] = [e for i, e in enumerate(params["Entries"]) if i not in failing]

    def _refuse(self, **_: Any) -> Any:
        all_failed = getattr(self._local, "all_failed", None)
        if all_failed:
            self._local.all_failed = None
            answer = {
                "FailedEntryCount": len(all_failed),
                "Entries": [{"ErrorCode": c, "ErrorMessage": "injected"} for c in all_failed],
            }
            return self._response("https://aws.invalid/", 200, {}, None), answer
        with self._lock:
            if not self.refuse:
                return None
            code, status = self.refuse.pop(0)
        error = {
            "Error": {"Code": code, "Message": f"{code} (injected by the test)"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return self._response("https://aws.invalid/", status, {}, None), error

    def _put_back(self, parsed: dict[str, Any], **_: Any) -> None:
        failing: dict[int, str] = getattr(self._local, "failing", {})
        self._local.failing = {}
        if not failing or "Entries" not in parsed:
            return
        results = list(parsed["Entries"])
        for index in sorted(failing):
            results.insert(
                index, {"ErrorCode": failing[index], "ErrorMessage": "injected by the test"}
            )
        parsed["Entries"] = results
        parsed["FailedEntryCount"] = len(failing)
