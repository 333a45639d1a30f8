"""A raw WebSocket client for tests that speak Engine.IO by hand."""

from __future__ import annotations

import simple_websocket


class WebSocketClient(simple_websocket.Client):  # type: ignore[misc]
    """simple-websocket's client without its handshake race: the server's first message
    (Engine.IO's open packet) may come in the same read as the answer to the handshake,
    and the stock client reads only the first event of that read, leaving the message
    unread until more data comes (which, as the server waits for the client, it never
    does)."""

    def handshake(self) -> None:
        super().handshake()
        self._handle_events()  # what came with the answer
