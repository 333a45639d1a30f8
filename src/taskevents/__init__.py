"""taskevents: live task lifecycle events for Python apps.

An existing task manager calls an :class:`Emitter` ("started", "40 %", "completed");
taskevents keeps each subject's state and sends each :class:`TaskEvent` on a blinker
signal, where adapters deliver it: to logs, browsers, webhooks, the cloud.
"""

from .adapters import (
    Adapter,
    AsyncAdapter,
    BackgroundAdapter,
    CallableAdapter,
    available_adapters,
    load_adapter,
)
from .emitter import Emitter, TaskTracker
from .events import EVENT_TYPES, LIFECYCLE_TYPES, TaskEvent
from .exceptions import (
    AdapterNotFound,
    MissingDependency,
    NoRunningTask,
    StoreUnavailable,
    SubjectBusy,
    TaskEventsError,
    UsageError,
    ValidationError,
)
from .signals import define_event_type
from .state import MemoryStateStore, StateStore, SubjectState, TaskInfo

__version__ = "0.1.0"

__all__ = [
    "EVENT_TYPES",
    "LIFECYCLE_TYPES",
    "Adapter",
    "AdapterNotFound",
    "AsyncAdapter",
    "BackgroundAdapter",
    "CallableAdapter",
    "Emitter",
    "MemoryStateStore",
    "MissingDependency",
    "NoRunningTask",
    "StateStore",
    "StoreUnavailable",
    "SubjectBusy",
    "SubjectState",
    "TaskEvent",
    "TaskEventsError",
    "TaskInfo",
    "TaskTracker",
    "UsageError",
    "ValidationError",
    "available_adapters",
    "define_event_type",
    "load_adapter",
]
