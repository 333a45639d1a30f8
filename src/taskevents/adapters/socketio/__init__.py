"""Live task events in browsers and Socket.IO clients.

:class:`SocketIOAdapter` (on a python-socketio ``Server`` or Flask-SocketIO) and
:class:`AsyncSocketIOAdapter` (on an ``AsyncServer``: ASGI) serve the taskevents
Socket.IO protocol, a superset of the original TaskMaster system's, written down in
the docs (``docs/protocol.rst``). The protocol itself, without I/O, is
:mod:`taskevents.adapters.socketio.protocol`; the python-socketio bindings are
:mod:`taskevents.adapters.socketio.server` and
:mod:`taskevents.adapters.socketio.async_server`.

Requires ``pip install 'taskevents[socketio]'``.
"""

from __future__ import annotations

from .async_server import AsyncSocketIOAdapter
from .protocol import (
    MAX_SUBJECT_LENGTH,
    PROTOCOL_VERSION,
    Authenticate,
    Authorize,
    Expiring,
    merge_progress,
    resolve_identity,
    room_for,
    snapshot_payload,
    status_object,
    update_payload,
)
from .server import SocketIOAdapter

__all__ = [
    "MAX_SUBJECT_LENGTH",
    "PROTOCOL_VERSION",
    "AsyncSocketIOAdapter",
    "Authenticate",
    "Authorize",
    "Expiring",
    "SocketIOAdapter",
    "merge_progress",
    "resolve_identity",
    "room_for",
    "snapshot_payload",
    "status_object",
    "update_payload",
]
