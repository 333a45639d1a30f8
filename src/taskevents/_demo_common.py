"""What the demo servers share, without a web framework: the simulated configs and
tasks, and the checks of what clients send them.

``taskevents demo`` runs on Flask-SocketIO (:mod:`taskevents.demo`) or, with
``--async-mode asgi``, on python-socketio's ``AsyncServer`` under uvicorn
(:mod:`taskevents.demo_asgi`). Both answer the same requests with the same words: the
checks are here, and each server only reads the request and sends the answer.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from taskevents._checks import MAX_SUBJECT_LENGTH, is_valid_name
from taskevents._hosts import same_origin
from taskevents.adapters.socketio.protocol import BadRequest, describe
from taskevents.emitter import Emitter
from taskevents.events import TaskEvent
from taskevents.exceptions import SubjectBusy

#: The simulated configs, with the metadata the original kept for each (under its
#: original name, which the status object's ``aws_current_region`` is read from).
DEMO_CONFIGS: dict[str, dict[str, Any]] = {
    "aws01": {"aws_current_region": "eu-west-1"},
    "aws02": {"aws_current_region": "us-east-1"},
    "aws03": {"aws_current_region": "ap-southeast-2"},
}

STAGES: Sequence[tuple[int, str, str]] = (
    (10, "preparation", "Allocating a new Elastic IP..."),
    (30, "execution", "Stopping the instance..."),
    (55, "execution", "Changing IP address..."),
    (80, "verification", "Checking the new address answers..."),
    (100, "verification", "Releasing the old address..."),
)

#: The client events the original test server took, and the demo takes too.
SIMULATE_EVENTS = ("simulate_task_start", "simulate_task_complete")
#: What ``simulate_task_complete`` completes a task with: the original's result.
SIMULATED_RESULT = {"status": "success", "data": "Simulated task result"}
#: The largest request body the demo reads (its bodies are a few dozen bytes).
MAX_BODY = 16 * 1024
#: The message of the 413 answer to a larger body.
TOO_LARGE = f"the request body is too large; at most {MAX_BODY} bytes"

TASK_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
TASK_TYPE_RULE = "a string of lowercase letters, digits and _ (at most 64)"
EXAMPLE_BODY = '{"task_type": "change_ip"}'


# -- the simulated tasks ----------------------------------------------------------------


def simulated_run(
    emitter: Emitter, config_name: str, task_id: str, fail: bool, task_seconds: float
) -> Iterator[float]:
    """A simulated task's steps: each yields the seconds to pause (the caller sleeps the
    way its server does), then emits the next stage's progress, then the outcome: a new
    address, or a failure at 55 % when ``fail``."""
    pause = task_seconds / (len(STAGES) + 1)
    for percent, stage, message in STAGES:
        yield pause
        emitter.progress(config_name, percent, stage, message, task_id=task_id)
        if fail and percent >= 55:
            emitter.failed(
                config_name, RuntimeError("the instance refused the new address"), task_id=task_id
            )
            return
    yield pause
    address = f"203.0.113.{random.randint(1, 254)}"  # TEST-NET-3: documentation only
    emitter.completed(config_name, {"status": "success", "data": {"ip": address}}, task_id=task_id)


class HeldTasks:
    """The tasks of the original test server's ``simulate_task_start``: they run until
    ``simulate_task_complete`` ends them."""

    def __init__(self, emitter: Emitter) -> None:
        self.emitter = emitter
        self._held: dict[str, str] = {}  # config_name -> id of a task begin() started
        self._held_lock = threading.Lock()

    def begin(self, config_name: str, task_type: str = "change_ip") -> TaskEvent:
        """Start a task that runs until :meth:`end` ends it, as the original test
        server's ``simulate_task_start`` did; raises :class:`~taskevents.SubjectBusy`
        if one is running."""
        with self._held_lock:
            started = self.emitter.started(config_name, task_type)
            self._held[config_name] = started.task_id
        return started

    def end(self, config_name: str, *, success: bool = True) -> TaskEvent | None:
        """End the task :meth:`begin` started on ``config_name``: completed with
        :data:`SIMULATED_RESULT`, or failed. None if there is no such task."""
        with self._held_lock:
            task_id = self._held.pop(config_name, None)
        if task_id is None:
            return None
        if success:
            return self.emitter.completed(config_name, dict(SIMULATED_RESULT), task_id=task_id)
        return self.emitter.failed(
            config_name, RuntimeError("the simulated task failed"), task_id=task_id
        )


# -- POST /api/tasks/<config_name> ------------------------------------------------------


class Refused(Exception):
    """A request to start a task, refused: the HTTP status, and the JSON error's
    message and details (``{"error": {"message": ..., **details}}``)."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def check_origin(origin: str | None, scheme: str, host: str) -> None:
    """403 unless the request has no ``Origin`` (curl) or the server's own."""
    if origin is not None and not same_origin(origin, scheme, host):
        raise Refused(
            403,
            f"cross-origin request from {origin!r} refused: tasks start only from "
            "this server's own pages, or from clients that send no Origin (curl)",
            origin=origin,
        )


def check_config(config_name: str) -> None:
    """404 unless ``config_name`` is a demo config."""
    if config_name not in DEMO_CONFIGS:
        raise Refused(404, f"unknown config_name {config_name!r}", config_name=config_name)


def is_json_type(mimetype: str) -> bool:
    """Is ``mimetype`` (lowercase, without parameters) JSON? As Flask's ``is_json``."""
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def check_content_type(mimetype: str, is_json: bool) -> None:
    """415 for a body declared as something other than JSON (a form, text), which a
    browser can send cross-site without asking first; a body without ``Content-Type``
    (curl's ``--data-raw`` without ``-H``, scripts) is read as JSON."""
    if mimetype and not is_json:
        raise Refused(
            415,
            f"the body must be JSON, sent with Content-Type: application/json (got "
            f"{mimetype[:64]!r}); e.g. {EXAMPLE_BODY}",
            expected="application/json",
        )


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body, a JSON object; 400 if it is empty, not JSON, or not an object."""
    if not raw.strip():
        raise Refused(400, f"the body is empty; send a JSON object such as {EXAMPLE_BODY}")
    try:
        body = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8/16/32
        raise Refused(
            400, f"the body is not valid JSON; send a JSON object such as {EXAMPLE_BODY}"
        ) from None
    if not isinstance(body, dict):
        raise Refused(
            400, f"the body must be a JSON object such as {EXAMPLE_BODY}, got {describe(body)}"
        )
    return body


def task_options(body: dict[str, Any]) -> tuple[str, bool]:
    """``(task_type, fail)`` from the body; 400 naming the field at fault."""
    unknown = sorted(set(body) - {"task_type", "fail"})
    if unknown:
        raise Refused(
            400,
            f"unknown field {unknown[0][:64]!r}; expected task_type and optionally fail",
            field=unknown[0][:64],
        )
    if "task_type" not in body:
        raise Refused(400, f"missing field 'task_type'; e.g. {EXAMPLE_BODY}", field="task_type")
    task_type = body["task_type"]
    if not isinstance(task_type, str) or not TASK_TYPE.match(task_type):
        raise Refused(
            400, f'task_type must be {TASK_TYPE_RULE}, e.g. "change_ip"', field="task_type"
        )
    fail = body.get("fail", False)
    if not isinstance(fail, bool):
        raise Refused(400, "fail must be true or false", field="fail")
    return task_type, fail


def busy(config_name: str, error: SubjectBusy) -> Refused:
    """The 409 for a config already running a task."""
    return Refused(
        409,
        f"{config_name} is busy with a {error.running_task_type} task; "
        "try again when it has finished",
        config_name=config_name,
        task_id=error.running_task_id,
    )


def accepted(started: TaskEvent) -> dict[str, Any]:
    """The 202 answer's body."""
    return {
        "task_id": started.task_id,
        "config_name": started.subject,
        "task_type": started.task_type,
        "status": "busy",
        "seq": started.seq,
    }


# -- the original test server's simulate events -----------------------------------------


def simulate_fields(event: str, args: tuple[Any, ...], optional: str) -> dict[str, Any]:
    """A simulate event's payload: one object with ``config_name`` (a demo config) and,
    optionally, ``optional``; :class:`BadRequest` names what is wrong, as the protocol
    does."""
    if len(args) > 1:
        raise BadRequest(event, f"{event} takes one argument, an object; got {len(args)}")
    payload = args[0] if args else None
    if payload is None:
        raise BadRequest(event, f"{event} needs an object with 'config_name'", field="config_name")
    if not isinstance(payload, dict):
        raise BadRequest(
            event, f"{event} expects an object, got {describe(payload)}", expected="an object"
        )
    expected = f"config_name, {optional}"
    unknown = sorted(str(key) for key in payload if key not in ("config_name", optional))
    if unknown:
        raise BadRequest(
            event,
            f"{event}: unknown field {unknown[0][:64]!r}; expected {expected}",
            field=unknown[0][:64],
            expected=expected,
        )
    if "config_name" not in payload:
        raise BadRequest(event, f"{event}: missing field 'config_name'", field="config_name")
    name = payload["config_name"]
    if not isinstance(name, str) or not is_valid_name(name, MAX_SUBJECT_LENGTH):
        raise BadRequest(
            event,
            f"{event}: config_name must be one of {', '.join(DEMO_CONFIGS)}",
            field="config_name",
            expected="the name of a registered config",
        )
    if name not in DEMO_CONFIGS:
        raise BadRequest(
            event,
            f"{event}: unknown config_name {name!r}",
            field="config_name",
            expected="the name of a registered config",
            config_name=name,
        )
    return payload


def simulate_start(tasks: HeldTasks, args: tuple[Any, ...]) -> None:
    """``simulate_task_start``: begin a held task; :class:`BadRequest` if it can't."""
    event = "simulate_task_start"
    payload = simulate_fields(event, args, "task_type")
    name = payload["config_name"]
    task_type = payload.get("task_type", "change_ip")
    if not isinstance(task_type, str) or not TASK_TYPE.match(task_type):
        raise BadRequest(
            event,
            f"{event}: task_type must be {TASK_TYPE_RULE}",
            field="task_type",
            expected=TASK_TYPE_RULE,
        )
    try:
        tasks.begin(name, task_type)
    except SubjectBusy as error:
        raise BadRequest(
            event,
            f"{event}: {name} is busy with a {error.running_task_type} task",
            field="config_name",
            config_name=name,
        ) from None


def simulate_complete(tasks: HeldTasks, args: tuple[Any, ...]) -> None:
    """``simulate_task_complete``: end a held task; :class:`BadRequest` if it can't."""
    event = "simulate_task_complete"
    payload = simulate_fields(event, args, "result")
    name = payload["config_name"]
    result = payload.get("result", "success")
    if result not in ("success", "failed"):
        raise BadRequest(
            event,
            f'{event}: result must be "success" or "failed", got {describe(result)}',
            field="result",
            expected='"success" or "failed"',
        )
    if tasks.end(name, success=result == "success") is None:
        raise BadRequest(
            event,
            f"{event}: no task started with simulate_task_start runs on {name}",
            field="config_name",
            config_name=name,
        )
