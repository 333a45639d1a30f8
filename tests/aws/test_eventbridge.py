"""EventBridgeAdapter against moto: a rule routes our events to an SQS queue."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from taskevents import Emitter
from taskevents.adapters import load_adapter
from taskevents.adapters.aws import EventBridgeAdapter
from taskevents.adapters.outbox import MemoryOutbox, SQLiteOutbox
from taskevents.events import TaskEvent
from taskevents.exceptions import ValidationError

from .conftest import AWS, REGION, Faults, bodies, count_calls

FAST = (0.0, 0.05, 0.05, 0.05, 0.05)


def bus_to_queue(aws: AWS, source: str = "taskevents") -> tuple[str, str]:
    """A new event bus whose rule sends events of ``source`` to a new queue."""
    events = aws.client("events")
    bus = aws.name("bus")
    events.create_event_bus(Name=bus)
    queue_url, queue_arn = aws.queue()
    events.put_rule(Name="all", EventBusName=bus, EventPattern=json.dumps({"source": [source]}))
    events.put_targets(Rule="all", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
    return bus, queue_url


def adapter(aws: AWS, bus: str, **options: Any) -> EventBridgeAdapter:
    options.setdefault("outbox", MemoryOutbox())
    options.setdefault("retry_schedule", FAST)
    return EventBridgeAdapter(bus, region_name=REGION, endpoint_url=aws.url, **options)


def test_a_rule_routes_the_events_to_a_queue_as_cloudevents(aws: AWS) -> None:
    bus, queue = bus_to_queue(aws)
    emitter = Emitter()
    sent: list[TaskEvent] = []
    with adapter(aws, bus, progress=True).connect(emitter) as bridge:
        sent.append(emitter.started("aws01", "change_ip", ip="203.0.113.1"))
        sent.append(emitter.progress("aws01", 50, stage="associate"))
        sent.append(emitter.completed("aws01", {"status": "success"}))
        assert bridge.flush(15)
    got = bodies(aws.receive(queue, 3))
    assert len(got) == 3
    by_id = {g["detail"]["id"]: g for g in got}
    for event in sent:
        envelope = by_id[event.id]
        assert envelope["source"] == "taskevents"
        assert envelope["detail-type"] == f"io.taskevents.{event.type}"
        assert envelope["detail"] == event.to_cloudevent()
        assert envelope["detail"]["specversion"] == "1.0"
    assert by_id[sent[1].id]["detail"]["data"]["stage"] == "associate"


def test_progress_is_left_out_unless_asked_for(aws: AWS) -> None:
    bus, queue = bus_to_queue(aws)
    emitter = Emitter()
    with adapter(aws, bus).connect(emitter) as bridge:
        emitter.started("aws01", "change_ip")
        emitter.progress("aws01", 50)
        emitter.completed("aws01")
        assert bridge.flush(15)
    types = [g["detail"]["type"] for g in bodies(aws.receive(queue, 2))]
    assert sorted(types) == ["io.taskevents.task_completed", "io.taskevents.task_started"]


def test_source_and_detail_type_can_be_set(aws: AWS) -> None:
    bus, queue = bus_to_queue(aws, source="com.example.inventory")
    emitter = Emitter()
    options = {"source": "com.example.inventory", "detail_type": "Task event"}
    with adapter(aws, bus, **options).connect(emitter) as bridge:
        emitter.started("aws01", "change_ip")
        assert bridge.flush(15)
    (got,) = bodies(aws.receive(queue, 1))
    assert (got["source"], got["detail-type"]) == ("com.example.inventory", "Task event")


@pytest.mark.parametrize(("subjects", "workers"), [(1, 2), (4, 1)])
def test_25_events_go_out_in_3_put_events_calls(aws: AWS, subjects: int, workers: int) -> None:
    """One subject's burst, or several subjects' gathered by one worker (with two, each
    worker would send its own batches)."""
    bus, queue = bus_to_queue(aws)
    emitter = Emitter()
    # A window wide enough to hold the whole burst; the workers' polls out of the way.
    bridge = adapter(aws, bus, batch_window=1.0, poll_interval=30.0, workers=workers)
    calls = count_calls(bridge.client, "PutEvents")
    ids = []
    with bridge.connect(emitter):
        for n in range(25):
            subject = f"vm{(n // 2) % subjects}"
            if n % 2 == 0:
                ids.append(emitter.started(subject, "change_ip", task_id=f"t{n}").id)
            else:
                ids.append(emitter.completed(subject, task_id=f"t{n - 1}").id)
        assert bridge.flush(15)
    assert [len(c) for c in calls] == [10, 10, 5]
    got = bodies(aws.receive(queue, 25))
    assert sorted(g["detail"]["id"] for g in got) == sorted(ids)


def test_a_partial_failure_is_retried_for_the_failed_entries_only(aws: AWS) -> None:
    bus, queue = bus_to_queue(aws)
    emitter = Emitter()
    # One worker: all ten go in its first call (with two, each could take some).
    bridge = adapter(aws, bus, batch_window=1.0, poll_interval=30.0, workers=1, jitter=0)
    calls = count_calls(bridge.client, "PutEvents")  # what the adapter asks for
    faults = Faults(bridge.client, "PutEvents")
    faults.fail_subjects.update(vm2="ThrottlingException", vm7="InternalFailure")
    with bridge.connect(emitter):
        events = [emitter.started(f"vm{n}", "change_ip") for n in range(10)]
        assert bridge.flush(15)
        stats = bridge.stats
    assert len(calls[0]) == 10
    first = [json.loads(entry["Detail"])["id"] for entry in calls[0]]
    retried = [json.loads(entry["Detail"])["id"] for call in calls[1:] for entry in call]
    assert sorted(retried) == sorted([events[2].id, events[7].id])
    assert sorted(first) == sorted(e.id for e in events)
    got = bodies(aws.receive(queue, 10))
    assert sorted(g["detail"]["id"] for g in got) == sorted(e.id for e in events)  # once each
    assert (stats["delivered"], stats["retries"], stats["dead"]) == (10, 2, 0)


def test_an_entry_aws_refuses_is_a_dead_letter_and_the_rest_go_on(aws: AWS, tmp_path: Path) -> None:
    bus, queue = bus_to_queue(aws)
    emitter = Emitter()
    outbox = SQLiteOutbox(tmp_path / "aws.sqlite3")
    bridge = adapter(aws, bus, outbox=outbox, batch_window=1.0, poll_interval=30.0)
    faults = Faults(bridge.client, "PutEvents")
    faults.fail_subjects["vm1"] = "MalformedDetail"
    with bridge.connect(emitter):
        events = [emitter.started(f"vm{n}", "change_ip") for n in range(3)]
        assert bridge.flush(15)
        (letter,) = outbox.dead_letters()
        assert letter.event_id == events[1].id
        assert "MalformedDetail" in letter.reason
    got = bodies(aws.receive(queue, 2))
    assert sorted(g["detail"]["id"] for g in got) == sorted([events[0].id, events[2].id])


def test_an_entry_over_256_kib_is_a_dead_letter_without_being_sent(
    aws: AWS, tmp_path: Path
) -> None:
    bus, queue = bus_to_queue(aws)
    emitter = Emitter(max_event_size=1024 * 1024)
    outbox = SQLiteOutbox(tmp_path / "aws.sqlite3")
    bridge = adapter(aws, bus, outbox=outbox)
    calls = count_calls(bridge.client, "PutEvents")
    with bridge.connect(emitter):
        big = emitter.started("aws01", "change_ip", blob="x" * 300_000)
        small = emitter.completed("aws01")
        assert bridge.flush(15)
        (letter,) = outbox.dead_letters()
    assert letter.event_id == big.id
    assert "takes at most 262,144" in letter.reason
    assert all(json.loads(e["Detail"])["id"] != big.id for call in calls for e in call)
    (got,) = bodies(aws.receive(queue, 1))
    assert got["detail"]["id"] == small.id


def test_a_throttled_bus_is_retried_and_keeps_each_subject_in_order(aws: AWS) -> None:
    bus, queue = bus_to_queue(aws)
    emitter = Emitter()
    bridge = adapter(aws, bus)
    faults = Faults(bridge.client, "PutEvents")
    faults.refuse.extend([("ThrottlingException", 400)] * 3)
    with bridge.connect(emitter):
        for n in range(6):
            emitter.started("aws01", "change_ip", task_id=f"t{n}")
            emitter.completed("aws01", task_id=f"t{n}")
        assert bridge.flush(15)
        assert bridge.stats["retries"] >= 1
    got = bodies(aws.receive(queue, 12))
    seqs = [int(g["detail"]["sequence"]) for g in got]
    assert sorted(seqs) == list(range(1, 13))
    assert len(seqs) == 12


def test_a_missing_bus_is_one_error_and_the_events_wait_for_a_restart(
    aws: AWS, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bus = aws.name("bus")  # not created yet
    emitter = Emitter()
    path = tmp_path / "aws.sqlite3"
    bridge = adapter(aws, bus, outbox=SQLiteOutbox(path))
    with caplog.at_level(logging.INFO, logger="taskevents"), bridge.connect(emitter):
        first = emitter.started("aws01", "change_ip")
        assert bridge.flush(15)
        for n in range(5):
            emitter.progress("aws01", n)
        emitter.completed("aws01")
        assert bridge.flush(1)
        stats = bridge.stats
    assert stats["dead"] == 1
    assert stats["pending"] == 1  # the completed waits, unsent
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert f"the event bus {bus} does not exist" in errors[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    # Once the bus exists, the dead letter is queued again (before its lane's waiting
    # rows, by its place) and a restart sends them all, in order.
    events = aws.client("events")
    events.create_event_bus(Name=bus)
    queue, queue_arn = aws.queue()
    events.put_rule(
        Name="all", EventBusName=bus, EventPattern=json.dumps({"source": ["taskevents"]})
    )
    events.put_targets(Rule="all", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
    outbox = SQLiteOutbox(path)
    assert outbox.retry_dead(None, 0) == 1
    with adapter(aws, bus, outbox=outbox).connect(emitter) as bridge:
        assert bridge.flush(15)
    got = bodies(aws.receive(queue, 2))
    assert [g["detail"]["type"] for g in got] == [
        "io.taskevents.task_started",
        "io.taskevents.task_completed",
    ]
    assert got[0]["detail"]["id"] == first.id


def test_access_denied_disables_the_target_with_one_error(
    aws: AWS, caplog: pytest.LogCaptureFixture
) -> None:
    bus, _ = bus_to_queue(aws)
    emitter = Emitter()
    bridge = adapter(aws, bus)
    faults = Faults(bridge.client, "PutEvents")
    faults.refuse.extend([("AccessDeniedException", 400)] * 10)
    with caplog.at_level(logging.INFO, logger="taskevents"), bridge.connect(emitter):
        for _ in range(3):
            emitter.started("aws01", "change_ip")
            emitter.completed("aws01")
        assert bridge.flush(5)
        stats = bridge.stats
    assert stats["endpoints"][bridge.target]["disabled"]
    assert "refused access" in stats["endpoints"][bridge.target]["disabled"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "permissions" in errors[0]


def test_no_region_is_refused_naming_the_option() -> None:
    with pytest.raises(ValidationError, match="region_name"):
        EventBridgeAdapter(outbox=MemoryOutbox())


def test_the_region_comes_from_a_bus_arn() -> None:
    arn = "arn:aws:events:ap-southeast-2:123456789012:event-bus/orders"
    bridge = EventBridgeAdapter(arn, outbox=MemoryOutbox())
    assert bridge.region_name == "ap-southeast-2"
    assert bridge.target == f"eventbridge:{arn}"
    bridge.close(0)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"event_bus_name": "no spaces"}, "event_bus_name"),
        ({"event_bus_name": 7}, "event_bus_name"),
        ({"source": "aws.ec2"}, "source"),
        ({"source": ""}, "source"),
        ({"detail_type": "x" * 129}, "detail_type"),
        ({"timeout": 0}, "timeout"),
        ({"progress": "yes"}, "progress"),
        ({"client": object()}, "client"),
        ({"endpoint_url": "localhost:4566"}, "endpoint_url"),
        ({"batch_window": -1}, "batch_window"),
    ],
)
def test_bad_options_are_refused_naming_them(options: dict[str, Any], field: str) -> None:
    options.setdefault("region_name", REGION)
    with pytest.raises(ValidationError) as caught:
        EventBridgeAdapter(outbox=MemoryOutbox(), **options)
    assert caught.value.field == field


def test_loadable_by_name(aws: AWS) -> None:
    bus, queue = bus_to_queue(aws)
    emitter = Emitter()
    made = load_adapter(
        "eventbridge",
        event_bus_name=bus,
        region_name=REGION,
        endpoint_url=aws.url,
        outbox=MemoryOutbox(),
    )
    assert isinstance(made, EventBridgeAdapter)
    with made.connect(emitter):
        emitter.started("aws01", "change_ip")
        assert made.flush(15)
    assert len(aws.receive(queue, 1)) == 1


def test_an_event_whose_source_eventbridge_refuses_is_a_dead_letter_alone(
    aws: AWS, tmp_path: Path
) -> None:
    """The emitter's source is EventBridge's Source: one it would refuse ('aws.*') is not
    sent, and neither disables the bus nor holds back another emitter's events."""
    bus, queue = bus_to_queue(aws)
    outbox = SQLiteOutbox(tmp_path / "aws.sqlite3")
    bridge = adapter(aws, bus, outbox=outbox)
    calls = count_calls(bridge.client, "PutEvents")
    bad, good = Emitter(source="aws.ec2"), Emitter()
    with bridge:
        bridge.connect(bad)
        bridge.connect(good)
        refused = bad.started("vm1", "change_ip")
        sent = good.started("vm2", "change_ip")
        assert bridge.flush(15)
        (letter,) = outbox.dead_letters()
        stats = bridge.stats
    assert letter.event_id == refused.id
    assert "not 'aws.*'" in letter.reason
    assert not stats["endpoints"][bridge.target]["disabled"]
    assert [json.loads(e["Detail"])["id"] for call in calls for e in call] == [sent.id]
    (got,) = bodies(aws.receive(queue, 1))
    assert got["detail"]["id"] == sent.id
