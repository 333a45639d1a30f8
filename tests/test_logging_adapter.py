import io
import json
import logging
import sys

import pytest

from taskevents import Emitter, MissingDependency, ValidationError
from taskevents.adapters.logging import JSONLinesFormatter, LoggingAdapter, console_handler


def run_task(emitter: Emitter, fail: bool = False) -> None:
    emitter.started("aws01", "change_ip")
    emitter.progress("aws01", 40, stage="execution", message="Changing IP address...")
    if fail:
        emitter.failed("aws01", RuntimeError("refused"))
    else:
        emitter.completed("aws01", {"ip": "203.0.113.7"})


def test_levels_by_type(emitter: Emitter, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="taskevents"), LoggingAdapter().connect():
        run_task(emitter)
        run_task(emitter, fail=True)
    records = [r for r in caplog.records if hasattr(r, "taskevent")]
    assert [(r.event_type, r.levelname) for r in records] == [  # type: ignore[attr-defined]
        ("task_started", "INFO"),
        ("task_progress", "DEBUG"),
        ("task_completed", "INFO"),
        ("task_started", "INFO"),
        ("task_progress", "DEBUG"),
        ("task_failed", "ERROR"),
    ]
    assert records[1].getMessage() == "aws01: change_ip 40% [execution] Changing IP address..."
    assert records[-1].getMessage() == "aws01: change_ip failed: RuntimeError: refused"


def test_fields_travel_in_extra(emitter: Emitter, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="taskevents"), LoggingAdapter().connect():
        event = emitter.started("aws01", "change_ip")
    record = next(r for r in caplog.records if hasattr(r, "taskevent"))
    fields = {
        name: getattr(record, name)
        for name in (
            "taskevent",
            "event_id",
            "event_type",
            "subject",
            "task_id",
            "task_type",
            "seq",
            "event_data",
        )
    }
    assert fields == {
        "taskevent": event,
        "event_id": event.id,
        "event_type": "task_started",
        "subject": "aws01",
        "task_id": event.task_id,
        "task_type": "change_ip",
        "seq": 1,
        "event_data": {},
    }


def test_levels_are_configurable(emitter: Emitter, caplog: pytest.LogCaptureFixture) -> None:
    adapter = LoggingAdapter("taskevents.custom", levels={"task_progress": "WARNING"})
    with caplog.at_level(logging.WARNING, logger="taskevents.custom"), adapter.connect():
        run_task(emitter)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert caplog.records[0].name == "taskevents.custom"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"levels": {"task_exploded": "INFO"}}, "levels"),
        ({"levels": {"task_failed": "LOUD"}}, "levels['task_failed']"),
        ({"logger": 42}, "logger"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        LoggingAdapter(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_json_lines_formatter_writes_one_object_per_event(emitter: Emitter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONLinesFormatter())
    logger = logging.getLogger("taskevents.jsonlines")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with LoggingAdapter(logger).connect():
            run_task(emitter)
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"]["type"] for line in lines] == [
        "task_started",
        "task_progress",
        "task_completed",
    ]
    assert lines[2]["event"]["data"] == {"result": {"ip": "203.0.113.7"}}
    assert lines[2]["level"] == "INFO"
    assert lines[2]["message"] == "aws01: change_ip completed"


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_handler_colours_a_terminal_with_colorlog() -> None:
    stream = FakeTTY()
    handler = console_handler(stream)
    record = logging.LogRecord("taskevents", logging.ERROR, __file__, 1, "boom", None, None)
    handler.handle(record)
    assert "\x1b[" in stream.getvalue()  # ANSI colour
    plain = io.StringIO()
    console_handler(plain).handle(record)
    assert "\x1b[" not in plain.getvalue()
    assert "boom" in plain.getvalue()


def test_console_handler_insisting_on_colour_without_colorlog_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "colorlog", None)
    with pytest.raises(MissingDependency, match=r"pip install 'taskevents\[color\]'"):
        console_handler(color=True)
    # without colorlog, a terminal still gets plain lines, not an error
    handler = console_handler(FakeTTY())
    record = logging.LogRecord("taskevents", logging.ERROR, __file__, 1, "boom", None, None)
    assert handler.formatter is not None
    line = handler.formatter.format(record)
    assert "boom" in line
    assert "\x1b[" not in line
