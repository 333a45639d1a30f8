import sys

import pytest

from taskevents import (
    AdapterNotFound,
    Emitter,
    MissingDependency,
    TaskEventsError,
    ValidationError,
    available_adapters,
    load_adapter,
)
from taskevents._optional import require
from taskevents.adapters.logging import LoggingAdapter


def test_built_in_adapters_are_found_by_entry_point() -> None:
    adapter = load_adapter("logging", logger="taskevents.test")
    assert isinstance(adapter, LoggingAdapter)
    assert adapter.logger.name == "taskevents.test"


def test_a_third_party_adapter_is_found_the_same_way(emitter: Emitter) -> None:
    # examples/custom_adapter is a separate distribution, installed by ./dev setup
    assert "counter" in available_adapters()
    with load_adapter("counter", types=["task_started"]).connect() as adapter:
        emitter.started("aws01", "change_ip")
        emitter.completed("aws01")
    assert type(adapter).__module__ == "taskevents_example_adapter"
    assert adapter.counts == {("aws01", "task_started"): 1}  # type: ignore[attr-defined]


def test_unknown_name_lists_the_available_adapters() -> None:
    with pytest.raises(AdapterNotFound) as caught:
        load_adapter("carrier-pigeon")
    message = str(caught.value)
    assert "no adapter named 'carrier-pigeon'" in message
    assert "logging" in message
    assert "counter" in message
    assert isinstance(caught.value, LookupError)


def test_bad_options_reach_the_adapter_unchanged() -> None:
    with pytest.raises(TaskEventsError, match="levels"):
        load_adapter("logging", levels={"task_started": "LOUD"})


def test_a_missing_optional_dependency_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "colorlog", None)  # as if not installed
    with pytest.raises(MissingDependency) as caught:
        require("colorlog", extra="color", needed_by="colour output")
    assert "pip install 'taskevents[color]'" in str(caught.value)
    assert isinstance(caught.value, ImportError)


def test_a_registered_adapter_missing_its_options_names_them() -> None:
    with pytest.raises(ValidationError) as caught:
        load_adapter("socketio")
    assert caught.value.field == "options"
    assert "required: server, emitter" in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        load_adapter("logging", colour=True)
    assert "optional: logger, levels" in str(caught.value)


def test_a_misspelled_required_option_is_named_as_well_as_the_missing_one() -> None:
    with pytest.raises(ValidationError) as caught:
        load_adapter("sqs", queue="https://sqs.eu-west-1.amazonaws.com/123456789012/q")
    assert "missing a required argument: 'queue_url'" in str(caught.value)
    assert "unknown: queue" in str(caught.value)


def test_every_registered_adapter_loads_with_its_documented_options() -> None:
    import flask
    from flask_socketio import SocketIO

    from taskevents.adapters.outbox import MemoryOutbox

    emitter = Emitter(source="tests")
    app = flask.Flask("registry-test")
    options = {
        "logging": {},
        "socketio": {"server": SocketIO(app, async_mode="threading"), "emitter": emitter},
        "eventbridge": {"region_name": "eu-west-1", "outbox": MemoryOutbox()},
        "sns": {"topic_arn": "arn:aws:sns:eu-west-1:123456789012:tasks", "outbox": MemoryOutbox()},
        "sqs": {
            "queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/tasks",
            "outbox": MemoryOutbox(),
        },
    }
    for name in available_adapters():
        if name not in options:
            continue  # third-party ones installed for the tests (examples/custom_adapter)
        adapter = load_adapter(name, **options[name])
        adapter.close()
    assert set(options) <= set(available_adapters())
