"""Malformed Socket.IO / Engine.IO frames: one quiet log line, never a traceback.

(Stub: to be filled in.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def guard_frames(sio: Any) -> Callable[[], None]:
    """Guard the python-socketio ``Server`` ``sio`` against malformed frames; returns a
    function that removes the guard."""
    return lambda: None
