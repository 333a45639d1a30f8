"""What every benchmark prints about the machine and the packages it measured, and how
it writes its JSON document."""

from __future__ import annotations

import json
import os
from importlib import metadata
from typing import Any


def package_version(distribution: str) -> str:
    """The installed version of ``distribution``, or ``"not installed"``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or ``"unknown"``."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def write_json(path: str, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` (indented, UTF-8) and say so."""
    with open(path, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=2, ensure_ascii=False)
        out.write("\n")
    print(f"wrote {path}")
