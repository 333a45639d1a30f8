"""Every exception taskevents raises on purpose derives from one root.

.. code-block:: text

    TaskEventsError
     ├── SubjectBusy            a second task on a subject that runs one at a time
     ├── NoRunningTask          progress or an outcome for a subject with no task running
     ├── ValidationError        bad input: names the field and what was expected
     │                          (also a ValueError)
     ├── UsageError             an API used in the wrong order or place (also a RuntimeError)
     ├── AdapterNotFound        no adapter registered under that name (also a LookupError)
     ├── MissingDependency      an optional package is not installed (also an ImportError)
     ├── OutboxError            a webhook outbox file that cannot be used
     │                          (taskevents.adapters.outbox)
     └── InvalidSignature       a received webhook failed verification (taskevents.webhooks)
"""

from __future__ import annotations

__all__ = [
    "AdapterNotFound",
    "MissingDependency",
    "NoRunningTask",
    "StoreUnavailable",
    "SubjectBusy",
    "TaskEventsError",
    "ValidationError",
]


class TaskEventsError(Exception):
    """The root of every exception raised by taskevents."""


class SubjectBusy(TaskEventsError):
    """A task was started on a subject that is already running one.

    Raised by :meth:`~taskevents.Emitter.started` (and :meth:`~taskevents.Emitter.track`)
    when ``exclusive=True``. Nothing is emitted and the state is left as it was.
    """

    def __init__(self, subject: str, running_task_id: str, running_task_type: str) -> None:
        self.subject = subject
        self.running_task_id = running_task_id
        self.running_task_type = running_task_type
        super().__init__(
            f"subject {subject!r} is busy with task {running_task_id!r} "
            f"({running_task_type}); wait for it to finish or pass exclusive=False"
        )


class NoRunningTask(TaskEventsError):
    """Progress, completion, failure or cancellation was reported for a subject
    (or a task id) with no task running."""

    def __init__(self, subject: str, task_id: str | None = None) -> None:
        self.subject = subject
        self.task_id = task_id
        if task_id is None:
            msg = f"subject {subject!r} has no running task; call started() first"
        else:
            msg = f"subject {subject!r} has no running task with id {task_id!r}"
        super().__init__(msg)


def _shorten(got: object) -> str:
    """``repr(got)`` in at most 80 characters; never raises (huge integers, text of
    millions of characters and objects whose ``__repr__`` fails included)."""
    if isinstance(got, str) and len(got) > 80:
        got = got[:80]
    elif isinstance(got, int) and not isinstance(got, bool) and got.bit_length() > 256:
        return f"<an integer of {got.bit_length()} bits>"
    try:
        shown = repr(got)
    except Exception:
        return f"<{type(got).__name__} object>"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return shown


class ValidationError(TaskEventsError, ValueError):
    """Input from outside (an API call, a JSON document, a config) is not what was expected.

    :param field: the name of the offending field, e.g. ``"percent"`` or ``"data.result"``.
    :param expected: what was expected, in words.
    :param got: the value received (shown with :func:`repr`, shortened).
    """

    def __init__(self, field: str, expected: str, got: object = None) -> None:
        self.field = field
        self.expected = expected
        #: The value received.
        self.got = got
        shown = _shorten(got)
        super().__init__(f"{field}: expected {expected}, got {shown}")


class UsageError(TaskEventsError, RuntimeError):
    """An API was used in the wrong order or place, e.g. a Flask extension set up twice
    for one app, or a task tracker entered twice."""


class AdapterNotFound(TaskEventsError, LookupError):
    """No adapter is registered under the name given to :func:`~taskevents.load_adapter`."""

    def __init__(self, name: str, available: list[str]) -> None:
        self.name = name
        self.available = available
        names = ", ".join(available) if available else "(none installed)"
        super().__init__(f"no adapter named {name!r}; available adapters: {names}")


class MissingDependency(TaskEventsError, ImportError):
    """An optional dependency needed by an adapter is not installed.

    The message carries the exact ``pip install`` command that fixes it.
    """

    def __init__(self, package: str, extra: str, needed_by: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{needed_by} needs the {package!r} package, which is not installed; "
            f"install it with: pip install 'taskevents[{extra}]'"
        )


class StoreUnavailable(TaskEventsError):
    """The state store's server could not be reached in time, or refused the operation
    (e.g. out of memory, a read-only replica, a wrong password): raised by
    :class:`taskevents.redis.RedisStateStore` (and exported there too). The operation may
    or may not have taken effect when the connection was lost after the request was sent.
    """
