"""Finding adapters by name, through the ``taskevents.adapters`` entry-point group.

The built-in adapters are registered in that group by taskevents' own package metadata,
so ``load_adapter("logging")`` and ``load_adapter("my-company-slack")`` work the same
way. A third-party package registers its adapter in its ``pyproject.toml``:

.. code-block:: toml

    [project.entry-points."taskevents.adapters"]
    slack = "my_package.adapters:SlackAdapter"
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from taskevents.exceptions import (
    AdapterNotFound,
    MissingDependency,
    TaskEventsError,
    ValidationError,
)

from .base import Adapter

__all__ = ["ENTRY_POINT_GROUP", "available_adapters", "load_adapter"]

#: The entry-point group adapters register in.
ENTRY_POINT_GROUP = "taskevents.adapters"


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)  # the first distribution to claim a name keeps it
    return found


def _describe_options(factory: Callable[..., Any]) -> str:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except ValueError:
        return "see its documentation"
    required = [p.name for p in parameters if p.default is p.empty and p.kind != p.VAR_KEYWORD]
    optional = [p.name for p in parameters if p.default is not p.empty]
    parts = []
    if required:
        parts.append("required: " + ", ".join(required))
    if optional:
        parts.append("optional: " + ", ".join(optional))
    return "; ".join(parts) or "none"


def _unknown_options(factory: Callable[..., Any], options: dict[str, Any]) -> list[str]:
    """The names in ``options`` that ``factory`` takes no parameter for (a misspelling of
    a required one is reported as that one missing: this names the stray key too)."""
    try:
        parameters = inspect.signature(factory).parameters
    except ValueError:
        return []
    if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        return []
    return sorted(set(options) - set(parameters))


def available_adapters() -> list[str]:
    """The names of every installed adapter, sorted."""
    return sorted(_entry_points())


def load_adapter(name: str, /, **options: Any) -> Adapter:
    """Create the adapter registered as ``name`` with ``options``.

    The adapter is not connected yet; call :meth:`~taskevents.Adapter.connect`.

    :raises AdapterNotFound: no adapter has that name (the message lists those that do).
    :raises MissingDependency: the adapter needs an extra that is not installed (the
        message has the ``pip install`` command).
    :raises ValidationError: ``options`` lack one the adapter needs, or name one it
        does not take (the message lists its options).
    :raises TaskEventsError: the adapter's module failed to import, or its factory did
        not return an :class:`~taskevents.Adapter`.
    """
    found = _entry_points()
    ep = found.get(name)
    if ep is None:
        raise AdapterNotFound(name, sorted(found))
    try:
        factory = ep.load()
    except MissingDependency:
        raise
    except ImportError as exc:
        raise TaskEventsError(
            f"adapter {name!r} ({ep.value}) could not be imported: {exc}"
        ) from exc
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        unknown = _unknown_options(factory, options)
        got: object = exc if not unknown else f"{exc}; unknown: {', '.join(unknown)}"
        raise ValidationError(
            "options", f"the options adapter {name!r} takes ({_describe_options(factory)})", got
        ) from None
    except ValueError:  # no signature to check (a builtin): let the call say
        pass
    try:
        adapter = factory(**options)
    except TypeError as exc:
        if "keyword argument" not in str(exc):
            raise
        # an option the class hierarchy refuses further down (e.g. **options passed on)
        raise ValidationError(
            "options", f"the options adapter {name!r} takes ({_describe_options(factory)})", exc
        ) from exc
    if not isinstance(adapter, Adapter):
        raise TaskEventsError(
            f"adapter {name!r} ({ep.value}) returned {type(adapter).__name__}, "
            "not a taskevents.Adapter"
        )
    return adapter
