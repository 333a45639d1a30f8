import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat
from hypothesis import given
from hypothesis import strategies as st

from taskevents import EVENT_TYPES, Emitter, TaskEvent, ValidationError

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
names = st.text(min_size=1, max_size=40)
events = st.builds(
    TaskEvent,
    id=names,
    type=st.sampled_from(EVENT_TYPES),
    subject=names,
    task_id=names,
    task_type=names,
    seq=st.integers(min_value=1, max_value=2**53),
    time=st.datetimes(timezones=st.just(timezone.utc)),
    source=names,
    data=st.dictionaries(st.text(), json_values, max_size=5),
)


@given(events)
def test_json_round_trip_is_lossless(event: TaskEvent) -> None:
    wire = json.dumps(event.to_dict())
    again = TaskEvent.from_dict(json.loads(wire))
    assert again == event
    assert again.to_dict() == event.to_dict()
    assert again.time.tzinfo is timezone.utc


@given(events)
def test_cloudevent_is_accepted_by_the_official_sdk(event: TaskEvent) -> None:
    document = event.to_cloudevent()
    parsed = JSONFormat().read(None, json.dumps(document))
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_id() == event.id
    assert parsed.get_source() == event.source
    assert parsed.get_type() == "io.taskevents." + event.type
    assert parsed.get_subject() == event.subject
    assert parsed.get_time() == event.time
    assert parsed.get_datacontenttype() == "application/json"
    assert parsed.get_extension("sequence") == str(event.seq)
    assert parsed.get_extension("taskid") == event.task_id
    assert parsed.get_extension("tasktype") == event.task_type
    assert parsed.get_data() == event.data
    # and what the SDK writes back carries the same attributes
    rewritten = json.loads(JSONFormat().write(parsed))
    assert {k: v for k, v in rewritten.items() if k != "time"} == {
        k: v for k, v in document.items() if k != "time"
    }


def test_emitted_event_time_is_aware_utc(emitter: Emitter) -> None:
    event = emitter.started("aws01", "change_ip")
    assert event.time.tzinfo is timezone.utc
    assert abs(datetime.now(timezone.utc) - event.time) < timedelta(minutes=1)


def test_event_is_immutable(emitter: Emitter) -> None:
    event = emitter.started("aws01", "change_ip")
    with pytest.raises(AttributeError):
        event.seq = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        event.extra = 1  # type: ignore[attr-defined]


def test_time_with_z_suffix_and_other_offsets_becomes_utc() -> None:
    raw = TaskEvent(
        "i",
        "task_started",
        "s",
        "t",
        "x",
        1,
        datetime(2025, 1, 1, 12, tzinfo=timezone.utc),
        "src",
        {},
    ).to_dict()
    raw["time"] = "2025-01-01T14:00:00+02:00"
    assert TaskEvent.from_dict(raw).time == datetime(2025, 1, 1, 12, tzinfo=timezone.utc)
    raw["time"] = "2025-01-01T12:00:00Z"
    assert TaskEvent.from_dict(raw).time.tzinfo is timezone.utc


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": ""}, "id"),
        ({"type": "task_exploded"}, "type"),
        ({"seq": 0}, "seq"),
        ({"seq": True}, "seq"),
        ({"seq": "3"}, "seq"),
        ({"time": "yesterday"}, "time"),
        ({"time": "2025-01-01T12:00:00"}, "time"),
        ({"data": []}, "data"),
        ({"data": {"x": float("nan")}}, "data.x"),
        ({"subject": None}, "subject"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_from_dict_names_the_bad_field(change: dict[str, Any], field: str) -> None:
    raw = TaskEvent(
        "i", "task_started", "s", "t", "x", 1, datetime(2025, 1, 1, tzinfo=timezone.utc), "src", {}
    ).to_dict()
    raw.update(change)
    with pytest.raises(ValidationError) as caught:
        TaskEvent.from_dict(raw)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: expected ")


def test_from_dict_rejects_a_non_object() -> None:
    with pytest.raises(ValidationError, match="event: expected a JSON object"):
        TaskEvent.from_dict([1, 2])  # type: ignore[arg-type]


def test_events_pickle(emitter: Emitter) -> None:
    import pickle

    event = emitter.started("aws01", "change_ip", reason="test")
    assert pickle.loads(pickle.dumps(event)) == event
