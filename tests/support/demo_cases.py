"""Cases both demos (Flask and ASGI) must answer alike: bad task-start bodies, and
mistakes in the original test server's simulate events."""

from __future__ import annotations

from typing import Any

#: The body the errors suggest.
EXAMPLE = '{"task_type": "change_ip"}'

#: ``(body, content type, status, message, field)`` of a POST /api/tasks/<name>.
BAD_BODIES: list[tuple[str, str | None, int, str, str | None]] = [
    (
        '{"task_type": "change_ip"}',
        "text/plain",
        415,
        "the body must be JSON, sent with Content-Type: application/json (got "
        f"'text/plain'); e.g. {EXAMPLE}",
        None,
    ),
    (
        "task_type=change_ip",
        "application/x-www-form-urlencoded",  # curl -d without -H
        415,
        "the body must be JSON, sent with Content-Type: application/json (got "
        f"'application/x-www-form-urlencoded'); e.g. {EXAMPLE}",
        None,
    ),
    ("", None, 400, f"the body is empty; send a JSON object such as {EXAMPLE}", None),
    (
        "not json",
        None,
        400,
        f"the body is not valid JSON; send a JSON object such as {EXAMPLE}",
        None,
    ),
    (
        "{",
        "application/json",
        400,
        f"the body is not valid JSON; send a JSON object such as {EXAMPLE}",
        None,
    ),
    (
        '"change_ip"',
        "application/json",
        400,
        f"the body must be a JSON object such as {EXAMPLE}, got a string",
        None,
    ),
    (
        "[1]",
        None,
        400,
        f"the body must be a JSON object such as {EXAMPLE}, got an array",
        None,
    ),
    ("{}", "application/json", 400, f"missing field 'task_type'; e.g. {EXAMPLE}", "task_type"),
    ('{"fail": true}', None, 400, f"missing field 'task_type'; e.g. {EXAMPLE}", "task_type"),
    *[
        (
            body,
            "application/json",
            400,
            "task_type must be a string of lowercase letters, digits and _ (at most 64), "
            'e.g. "change_ip"',
            "task_type",
        )
        for body in ['{"task_type": ""}', '{"task_type": 5}', '{"task_type": "Change IP!"}']
    ],
    (
        '{"task_type": "change_ip", "fail": "yes"}',
        "application/json",
        400,
        "fail must be true or false",
        "fail",
    ),
    (
        '{"task_type": "change_ip", "priority": 1}',
        "application/json",
        400,
        "unknown field 'priority'; expected task_type and optionally fail",
        "priority",
    ),
]

#: ``(event, args, error payload)`` of a simulate event sent wrong.
SIMULATE_MISTAKES: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    (
        "simulate_task_start",
        (),
        {
            "message": "simulate_task_start needs an object with 'config_name'",
            "field": "config_name",
        },
    ),
    (
        "simulate_task_start",
        ("aws01",),
        {
            "message": "simulate_task_start expects an object, got a string",
            "expected": "an object",
        },
    ),
    (
        "simulate_task_start",
        ({"config_name": "aws01"}, {}),
        {"message": "simulate_task_start takes one argument, an object; got 2"},
    ),
    (
        "simulate_task_start",
        ({"config_name": "aws01", "colour": "red"},),
        {
            "message": "simulate_task_start: unknown field 'colour'; expected config_name, "
            "task_type",
            "field": "colour",
            "expected": "config_name, task_type",
        },
    ),
    (
        "simulate_task_start",
        ({"task_type": "change_ip"},),
        {"message": "simulate_task_start: missing field 'config_name'", "field": "config_name"},
    ),
    (
        "simulate_task_start",
        ({"config_name": 1},),
        {
            "message": "simulate_task_start: config_name must be one of aws01, aws02, aws03",
            "field": "config_name",
            "expected": "the name of a registered config",
        },
    ),
    (
        "simulate_task_start",
        ({"config_name": "aws99"},),
        {
            "message": "simulate_task_start: unknown config_name 'aws99'",
            "field": "config_name",
            "expected": "the name of a registered config",
            "config_name": "aws99",
        },
    ),
    (
        "simulate_task_start",
        ({"config_name": "aws01", "task_type": "Change IP!"},),
        {
            "message": "simulate_task_start: task_type must be a string of lowercase "
            "letters, digits and _ (at most 64)",
            "field": "task_type",
            "expected": "a string of lowercase letters, digits and _ (at most 64)",
        },
    ),
    (
        "simulate_task_complete",
        ({"config_name": "aws01", "result": "maybe"},),
        {
            "message": 'simulate_task_complete: result must be "success" or "failed", got a string',
            "field": "result",
            "expected": '"success" or "failed"',
        },
    ),
    (
        "simulate_task_complete",
        ({"config_name": "aws01"},),
        {
            "message": "simulate_task_complete: no task started with simulate_task_start "
            "runs on aws01",
            "field": "config_name",
            "config_name": "aws01",
        },
    ),
]
