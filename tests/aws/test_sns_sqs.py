"""SNSAdapter and SQSAdapter against moto."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from taskevents import Emitter
from taskevents.adapters import load_adapter
from taskevents.adapters.aws import SNSAdapter, SQSAdapter
from taskevents.adapters.outbox import MemoryOutbox, SQLiteOutbox
from taskevents.exceptions import ValidationError

from .conftest import AWS, REGION, bodies, count_calls

FAST = (0.0, 0.05, 0.05, 0.05, 0.05)


def options(aws: AWS, **more: Any) -> dict[str, Any]:
    more.setdefault("outbox", MemoryOutbox())
    more.setdefault("retry_schedule", FAST)
    return {"region_name": REGION, "endpoint_url": aws.url, **more}


def topic(aws: AWS, fifo: bool = False) -> str:
    name = aws.name("t") + (".fifo" if fifo else "")
    attributes = {"FifoTopic": "true"} if fifo else {}
    return str(aws.client("sns").create_topic(Name=name, Attributes=attributes)["TopicArn"])


def subscribe(aws: AWS, topic_arn: str, queue_arn: str, policy: dict[str, Any] | None) -> None:
    attributes = {"RawMessageDelivery": "true"}
    if policy is not None:
        attributes["FilterPolicy"] = json.dumps(policy)
    aws.client("sns").subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes=attributes
    )


# -- SNS --------------------------------------------------------------------------------


def test_an_sns_filter_policy_on_event_type_lets_only_those_through(aws: AWS) -> None:
    arn = topic(aws)
    done_url, done_arn = aws.queue()
    all_url, all_arn = aws.queue()
    subscribe(aws, arn, done_arn, {"event_type": ["task_completed", "task_failed"]})
    subscribe(aws, arn, all_arn, None)
    emitter = Emitter()
    with SNSAdapter(arn, **options(aws)).connect(emitter) as sns:
        emitter.started("aws01", "change_ip")
        completed = emitter.completed("aws01", {"ip": "203.0.113.9"})
        emitter.started("aws02", "change_ip")
        failed = emitter.failed("aws02", "no such instance")
        assert sns.flush(15)
    finished = aws.receive(done_url, 2)
    assert sorted(json.loads(m["Body"])["id"] for m in finished) == sorted(
        [completed.id, failed.id]
    )
    assert len(aws.receive(all_url, 4)) == 4
    attributes = {
        name: value["StringValue"] for name, value in finished[0]["MessageAttributes"].items()
    }
    assert attributes["subject"] in ("aws01", "aws02")
    assert attributes["task_type"] == "change_ip"
    assert attributes["event_type"] in ("task_completed", "task_failed")


def test_an_sns_message_is_the_cloudevent(aws: AWS) -> None:
    arn = topic(aws)
    url, queue_arn = aws.queue()
    subscribe(aws, arn, queue_arn, None)
    emitter = Emitter()
    with SNSAdapter(arn, **options(aws)).connect(emitter) as sns:
        event = emitter.started("aws01", "change_ip", region="eu-west-1")
        assert sns.flush(15)
    (got,) = bodies(aws.receive(url, 1))
    assert got == event.to_cloudevent()


def test_an_sns_fifo_topic_gets_the_subject_as_group_and_the_event_id_as_dedup_id(
    aws: AWS,
) -> None:
    arn = topic(aws, fifo=True)
    url, queue_arn = aws.queue(fifo=True)
    subscribe(aws, arn, queue_arn, None)
    emitter = Emitter()
    sns = SNSAdapter(arn, **options(aws))
    calls = count_calls(sns.client, "PublishBatch")
    sent = []
    with sns.connect(emitter):
        for n in range(4):
            for subject in ("aws01", "aws02"):
                sent.append(emitter.started(subject, "change_ip", task_id=f"{subject}-{n}"))
                sent.append(emitter.completed(subject, task_id=f"{subject}-{n}"))
        assert sns.flush(15)
    entries = [entry for call in calls for entry in call]
    by_id = {e.id: e for e in sent}
    for entry in entries:
        event = by_id[entry["MessageDeduplicationId"]]
        assert entry["MessageGroupId"] == event.subject
    # One row per subject per call on a FIFO topic: a later event never overtakes.
    for call in calls:
        groups = [entry["MessageGroupId"] for entry in call]
        assert len(groups) == len(set(groups))
    got = bodies(aws.receive(url, len(sent)))
    for subject in ("aws01", "aws02"):
        seqs = [int(g["sequence"]) for g in got if g["subject"] == subject]
        assert seqs == list(range(1, 9))


def test_a_missing_topic_disables_the_target_with_one_error(
    aws: AWS, caplog: pytest.LogCaptureFixture
) -> None:
    arn = f"arn:aws:sns:{REGION}:123456789012:{aws.name('gone')}"
    emitter = Emitter()
    sns = SNSAdapter(arn, **options(aws))
    with caplog.at_level(logging.INFO, logger="taskevents"), sns.connect(emitter):
        for _ in range(3):
            emitter.started("aws01", "change_ip")
            emitter.completed("aws01")
        assert sns.flush(10)
        stats = sns.stats
    assert stats["dead"] == 1
    assert stats["pending"] == 5
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith(f"SNSAdapter: the topic {arn} does not exist (NotFound")


def test_the_region_comes_from_the_topic_arn() -> None:
    sns = SNSAdapter("arn:aws:sns:sa-east-1:123456789012:events", outbox=MemoryOutbox())
    assert sns.region_name == "sa-east-1"
    sns.close(0)


# -- SQS --------------------------------------------------------------------------------


def test_sqs_batches_the_events_and_carries_attributes(aws: AWS) -> None:
    url, _ = aws.queue()
    emitter = Emitter()
    sqs = SQSAdapter(url, **options(aws, batch_window=1.0, poll_interval=30.0))
    calls = count_calls(sqs.client, "SendMessageBatch")
    with sqs.connect(emitter):
        sent = []
        for n in range(6):
            sent.append(emitter.started("aws01", "change_ip", task_id=f"t{n}"))
            sent.append(emitter.completed("aws01", task_id=f"t{n}"))
        assert sqs.flush(15)
    assert [len(c) for c in calls] == [10, 2]
    got = aws.receive(url, 12)
    assert sorted(json.loads(m["Body"])["id"] for m in got) == sorted(e.id for e in sent)
    first = got[0]["MessageAttributes"]
    assert first["event_type"]["StringValue"] in ("task_started", "task_completed")
    assert first["subject"]["StringValue"] == "aws01"


def test_an_sqs_fifo_queue_keeps_each_subjects_order(aws: AWS) -> None:
    url, _ = aws.queue(fifo=True)
    emitter = Emitter()
    sqs = SQSAdapter(url, **options(aws, workers=4))
    calls = count_calls(sqs.client, "SendMessageBatch")
    subjects = [f"vm{n}" for n in range(5)]
    with sqs.connect(emitter):
        for n in range(10):
            for subject in subjects:
                emitter.started(subject, "change_ip", task_id=f"{subject}-{n}")
                emitter.progress(subject, 50, task_id=f"{subject}-{n}")
                emitter.completed(subject, {"n": n}, task_id=f"{subject}-{n}")
        assert sqs.flush(30)
    got = aws.receive(url, 100, timeout=30)
    assert len(got) == 100  # progress is not sent by default
    for subject in subjects:
        mine = [m for m in got if m["Attributes"]["MessageGroupId"] == subject]
        seqs = [int(json.loads(m["Body"])["sequence"]) for m in mine]
        assert len(seqs) == 20
        assert seqs == sorted(seqs), f"{subject} out of order: {seqs}"
        ids = {m["Attributes"]["MessageDeduplicationId"] for m in mine}
        assert ids == {json.loads(m["Body"])["id"] for m in mine}
    assert max(len(c) for c in calls) > 1  # batched, across subjects


def test_a_subject_no_group_id_can_hold_is_sent_under_a_digest(aws: AWS) -> None:
    url, _ = aws.queue(fifo=True)
    emitter = Emitter()
    odd = "café 東京 #1"  # not ASCII, a space: no group id
    with SQSAdapter(url, **options(aws)).connect(emitter) as sqs:
        event = emitter.started(odd, "change_ip")
        assert sqs.flush(15)
    (got,) = aws.receive(url, 1)
    group = got["Attributes"]["MessageGroupId"]
    assert group.startswith("sha256-")
    assert len(group) <= 128
    assert json.loads(got["Body"])["subject"] == odd
    assert json.loads(got["Body"])["id"] == event.id


def test_a_missing_queue_is_one_error_and_waits_for_a_restart(
    aws: AWS, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = aws.queue()
    gone = url + "-gone"
    emitter = Emitter()
    path = tmp_path / "aws.sqlite3"
    sqs = SQSAdapter(gone, **options(aws, outbox=SQLiteOutbox(path)))
    with caplog.at_level(logging.INFO, logger="taskevents"), sqs.connect(emitter):
        emitter.started("aws01", "change_ip")
        assert sqs.flush(10)
        emitter.completed("aws01")
        assert sqs.flush(1)
    assert [r.levelno for r in caplog.records if r.levelno >= logging.ERROR] == [logging.ERROR]
    assert "does not exist" in caplog.text
    assert not any(r.exc_info for r in caplog.records)


def test_the_region_comes_from_the_queue_url() -> None:
    sqs = SQSAdapter("https://sqs.ca-central-1.amazonaws.com/123456789012/q", outbox=MemoryOutbox())
    assert sqs.region_name == "ca-central-1"
    sqs.close(0)


@pytest.mark.parametrize(
    ("factory", "value", "field"),
    [
        (SQSAdapter, "not a url", "queue_url"),
        (SQSAdapter, "https://sqs.eu-west-1.amazonaws.com/queue-without-account", "queue_url"),
        (SNSAdapter, "arn:aws:sqs:eu-west-1:123456789012:q", "topic_arn"),
        (SNSAdapter, None, "topic_arn"),
    ],
)
def test_bad_targets_are_refused_naming_them(factory: Any, value: Any, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        factory(value, region_name=REGION, outbox=MemoryOutbox())
    assert caught.value.field == field


def test_sns_and_sqs_load_by_name(aws: AWS) -> None:
    url, queue_arn = aws.queue()
    arn = topic(aws)
    subscribe(aws, arn, queue_arn, None)
    emitter = Emitter()
    made = [
        load_adapter("sqs", queue_url=url, **options(aws)),
        load_adapter("sns", topic_arn=arn, **options(aws)),
    ]
    assert isinstance(made[0], SQSAdapter)
    assert isinstance(made[1], SNSAdapter)
    for adapter in made:
        adapter.connect(emitter)
    try:
        emitter.started("aws01", "change_ip")
        assert made[0].flush(15)
        assert made[1].flush(15)
    finally:
        for adapter in made:
            adapter.close()
    assert len(aws.receive(url, 2)) == 2  # one sent, one through the topic
