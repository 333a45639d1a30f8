"""What the Flask extension and the ASGI app both read from their options: subjects,
adapters by name, and their Redis store. Each error names the option as the caller
spells it (``TASKEVENTS_SUBJECTS``, or ``subjects``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from taskevents.adapters import Adapter, load_adapter
from taskevents.exceptions import (
    AdapterNotFound,
    MissingDependency,
    StoreUnavailable,
    TaskEventsError,
    ValidationError,
)

if TYPE_CHECKING:
    from taskevents.redis import RedisStateStore

__all__ = ["adapter_specs", "load_named_adapter", "redis_store", "subjects_of"]

logger = logging.getLogger("taskevents")


def subjects_of(value: object, key: str) -> dict[str, Mapping[str, Any]]:
    """A list of subject names, or a mapping name -> metadata (or None), as a mapping."""
    if isinstance(value, Mapping):
        for name, metadata in value.items():
            if not isinstance(name, str) or not (metadata is None or isinstance(metadata, Mapping)):
                raise ValidationError(key, "subject names mapped to metadata objects", metadata)
        return {k: (v or {}) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return {name: {} for name in value}
    raise ValidationError(key, "a list of subject names or a mapping name -> metadata", value)


def adapter_specs(value: object, key: str) -> list[tuple[str, dict[str, Any]]]:
    """Adapter names, or a mapping name -> options, as ``(name, options)`` pairs."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = [(item, {}) if isinstance(item, str) else (None, item) for item in value]
    else:
        raise ValidationError(key, "a list of adapter names or a mapping name -> options", value)
    specs = []
    for name, options in items:
        if not isinstance(name, str) or not isinstance(options, Mapping):
            raise ValidationError(key, "adapter names (strings) with option mappings", name)
        specs.append((name, dict(options)))
    return specs


def load_named_adapter(name: str, options: dict[str, Any], key: str) -> Adapter:
    """The adapter ``name`` made with ``options``; an error names ``key[name]``, and the
    option at fault."""
    try:
        return load_adapter(name, **options)
    except TaskEventsError as exc:
        if isinstance(exc, ValidationError):  # an option: say which, whole
            raise ValidationError(f"{key}[{name!r}].{exc.field}", exc.expected, exc.got) from exc
        if not isinstance(exc, (AdapterNotFound, MissingDependency)):
            raise TaskEventsError(
                f"{key}[{name!r}]: the adapter could not be created: {exc}"
            ) from exc
        raise ValidationError(
            f"{key}[{name!r}]", "an installed adapter name with the options it takes", exc
        ) from exc


def redis_store(
    given: Any, url: object, prefix: object, *, url_key: str, prefix_key: str
) -> tuple[RedisStateStore | None, bool]:
    """The Redis store that ``url`` asks for, and whether it was created here: the
    ``given`` emitter's own store (which must be a ``RedisStateStore``, with the same
    prefix if one is asked for), or a new one on ``url`` that answers a ping. ``(None,
    False)`` without ``url``."""
    if url is None:
        if prefix is not None:
            logger.warning("%s ignored: %s is not set", prefix_key, url_key)
        return None, False
    from taskevents.redis import RedisStateStore

    if given is not None:
        store = given.state
        if not isinstance(store, RedisStateStore):
            raise ValidationError(
                url_key,
                "unset when an emitter with another state store is given; give "
                "Emitter(state=RedisStateStore(url, prefix=...)), or no emitter",
                f"an emitter on {type(store).__name__}",
            )
        if prefix is not None and prefix != store.prefix:
            raise ValidationError(
                prefix_key,
                f"the prefix of the given emitter's RedisStateStore ({store.prefix!r})",
                prefix,
            )
        return store, False
    try:
        store = RedisStateStore(url, prefix="taskevents" if prefix is None else prefix)  # type: ignore[arg-type]
    except ValidationError as exc:
        field = {"url": url_key, "prefix": prefix_key}.get(exc.field, exc.field)
        raise ValidationError(field, exc.expected, exc.got) from None
    try:
        store.ping()
    except StoreUnavailable as exc:
        store.close()
        raise StoreUnavailable(f"{url_key}: {exc}") from None
    return store, True
