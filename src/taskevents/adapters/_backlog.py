"""Bounded per-client outgoing buffers: a client that stops reading is disconnected.

(Stub: to be filled in.)
"""

from __future__ import annotations

from typing import Any


class BacklogGuard:
    """Disconnects clients of ``sio`` whose outgoing queue holds more than
    ``max_packets`` packets."""

    def __init__(self, sio: Any, *, max_packets: int, interval: float = 0.25) -> None:
        self.sio = sio
        self.max_packets = max_packets
        self.interval = interval

    def start(self) -> None:
        """Start watching (a background task of the server's async mode)."""

    def stop(self) -> None:
        """Stop watching. Idempotent."""
