"""One :class:`~taskevents.redis.RedisBridge` per Redis store in a process, shared by
the apps (Flask or ASGI) that serve it: two bridges on one store would bring every
event in twice."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskevents.redis import RedisBridge, RedisStateStore

__all__ = ["acquire_bridge", "release_bridge"]

# id(store) -> [bridge, apps using it].
_bridges: dict[int, list[Any]] = {}
_bridges_lock = threading.Lock()


def acquire_bridge(store: RedisStateStore) -> RedisBridge:
    from taskevents.redis import RedisBridge

    with _bridges_lock:
        entry = _bridges.get(id(store))
        if entry is None or entry[0].store is not store:
            entry = _bridges[id(store)] = [RedisBridge(store).start(), 0]
        entry[1] += 1
        bridge: RedisBridge = entry[0]
        return bridge


def release_bridge(bridge: RedisBridge) -> None:
    with _bridges_lock:
        entry = _bridges.get(id(bridge.store))
        if entry is not None and entry[0] is bridge:
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _bridges[id(bridge.store)]
    bridge.close()
