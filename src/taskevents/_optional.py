"""Optional dependencies: imported on use, with the exact pip command when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from .exceptions import MissingDependency


def require(module: str, *, extra: str, needed_by: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming ``taskevents[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and module.split(".")[0] != exc.name.split(".")[0]:
            raise  # the package is there but broken: show the real error
        raise MissingDependency(module.split(".")[0], extra, needed_by) from exc
