"""The adapter contract and discovery. The adapters themselves live in submodules
(:mod:`taskevents.adapters.logging`, ...), imported only when used."""

from .base import Adapter, AsyncAdapter, BackgroundAdapter, CallableAdapter
from .registry import ENTRY_POINT_GROUP, available_adapters, load_adapter

__all__ = [
    "ENTRY_POINT_GROUP",
    "Adapter",
    "AsyncAdapter",
    "BackgroundAdapter",
    "CallableAdapter",
    "available_adapters",
    "load_adapter",
]
