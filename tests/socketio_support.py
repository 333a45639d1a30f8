"""Real servers and real clients for the Socket.IO tests."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import engineio
import socketio
from werkzeug.serving import BaseWSGIServer, make_server


class LiveServer:
    """A WSGI app served by Werkzeug on a free 127.0.0.1 port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        # Don't wait at shutdown for connection threads that clients left behind.
        self.server.daemon_threads = True  # type: ignore[attr-defined]
        self.server.block_on_close = False  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _InOrderEngineIO(engineio.Client):  # type: ignore[misc]
    # The stock client runs every message's handler in a new thread, so it may see
    # messages out of order; this one handles them in the order they arrive.
    def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("run_async", None)
        return super()._trigger_event(event, *args, **kwargs)

    def disconnect(self, abort: bool = False, reason: Any = None) -> None:
        # Werkzeug's development server does not answer the websocket closing
        # handshake; don't wait the default 3 s for it.
        ws = getattr(self, "ws", None)
        if ws is not None:
            close = ws.close
            ws.close = lambda *args, **kwargs: close(timeout=0.1)
        super().disconnect(abort=abort, reason=reason)


class Client:
    """A python-socketio client that records every event it receives, in order."""

    def __init__(self) -> None:
        class _Client(socketio.Client):  # type: ignore[misc]
            def _engineio_client_class(self) -> type:
                return _InOrderEngineIO

        self.sio = _Client(reconnection=False)
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.seen: list[tuple[str, Any]] = []
        self.sio.on("*", self._record, namespace="*")
        self.connect_errors: list[Any] = []
        self.confirmed_before_greeting: bool | None = None
        self.sio.on(
            "connect_error",
            lambda namespace, data: self.connect_errors.append(data),
            namespace="*",
        )

    def _record(self, event: str, namespace: str, *args: Any) -> None:
        if event == "connection_status":
            # was the Socket.IO connection confirmed before this event arrived?
            self.confirmed_before_greeting = namespace in self.sio.namespaces
        self.inbox.put((event, args[0] if len(args) == 1 else list(args)))

    def connect(
        self,
        url: str,
        *,
        transports: list[str] | None = None,
        auth: Any = None,
        namespace: str = "/",
        headers: dict[str, str] | None = None,
    ) -> Client:
        self.sio.connect(
            url,
            transports=transports or ["websocket"],
            auth=auth,
            namespaces=[namespace],
            headers=headers or {},
            wait_timeout=5,
        )
        return self

    def emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        """Emit with exactly these arguments: none, one, or several."""
        data: Any = None if not args else args[0] if len(args) == 1 else tuple(args)
        self.sio.emit(event, data, namespace=namespace)

    def next(self, timeout: float = 5.0) -> tuple[str, Any]:
        item = self.inbox.get(timeout=timeout)
        self.seen.append(item)
        return item

    def wait_for(
        self, event: str, where: Callable[[Any], bool] = lambda _: True, timeout: float = 5.0
    ) -> Any:
        """The payload of the next ``event`` matching ``where``; others are kept in seen."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} within {timeout}s; saw {self.seen[-5:]}")
            try:
                name, payload = self.next(remaining)
            except queue.Empty:
                continue
            if name == event and where(payload):
                return payload

    def drain(self, quiet: float = 0.3) -> list[tuple[str, Any]]:
        """Everything that arrives until nothing has for ``quiet`` seconds."""
        got = []
        while True:
            try:
                got.append(self.next(quiet))
            except queue.Empty:
                return got

    def updates(self) -> list[dict[str, Any]]:
        return [payload for name, payload in self.seen if name == "task_status_update"]

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()
