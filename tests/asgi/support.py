"""Real ASGI servers and real Socket.IO clients for the tests of the asyncio adapter.

* :class:`LiveASGI` serves an ASGI app with uvicorn on a free 127.0.0.1 port, in a thread
  that runs an event loop of its own (:attr:`LiveASGI.loop`, where the app's coroutines
  and the adapter's worker run); :meth:`LiveASGI.run` runs a coroutine there.
  :func:`live_asgi` is the same as a context manager.
* :class:`AsyncioClient` (a ``socketio.AsyncClient``, on a loop of its own in a thread) and
  :class:`ThreadedClient` (a ``socketio.Client``) record what they receive, in order, and
  offer the same blocking methods to the tests, so a test can run with either
  (:data:`CLIENT_KINDS`).
* :func:`serving` is the factory behind the tests' ``asgi`` fixture: a
  ``socketio.AsyncServer`` with an :class:`AsyncSocketIOAdapter` on a live server, torn
  down afterwards (clients, adapter, server, loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

import engineio
import socketio
import uvicorn

from taskevents import Emitter, MemoryStateStore, TaskEvent
from taskevents.adapters.socketio import AsyncSocketIOAdapter

T = TypeVar("T")

#: The subjects every server registers, with their metadata.
SUBJECTS: Mapping[str, Mapping[str, Any]] = {
    "aws01": {"region": "eu-west-1"},
    "aws02": {},
    "aws03": {},
}

#: The python-socketio clients the tests run with: the name of each client class.
CLIENT_KINDS = ("AsyncClient", "Client")


def _finish(loop: asyncio.AbstractEventLoop) -> list[str]:
    """End ``loop`` as ``asyncio.run`` ends its own: cancel the tasks still pending and
    wait for them, shut down async generators and the default executor, close the loop.
    Called in the loop's thread once it has stopped. Returns what went wrong: a task of
    taskevents still pending (an adapter's worker or backlog check that outlived its
    close), or a task that raised."""
    problems: list[str] = []
    try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        problems += [
            f"{task.get_name()} still pending"
            for task in pending
            if task.get_name().startswith("taskevents")
        ]
        for task in pending:
            task.cancel()
        if pending:
            outcomes = loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            problems += [
                f"{task.get_name()} raised {outcome!r}"
                for task, outcome in zip(pending, outcomes, strict=True)
                if isinstance(outcome, BaseException)
                and not isinstance(outcome, asyncio.CancelledError)
            ]
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return problems


class LiveASGI:
    """An ASGI app served by uvicorn on a free 127.0.0.1 port, in a thread of its own
    that runs :attr:`loop`. :meth:`stop` shuts uvicorn down and ends the loop."""

    def __init__(self, app: Any, **config: Any) -> None:
        # The port is chosen (and held) before uvicorn starts: no race for a free one.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        self.port: int = listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # log_config=None: uvicorn's records propagate (to caplog) instead of going to
        # handlers of its own.
        options: dict[str, Any] = {
            "log_level": "warning",
            "log_config": None,
            "timeout_graceful_shutdown": 3,
            **config,
        }
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.loop = asyncio.new_event_loop()
        #: What serving raised, and what was wrong with the tasks left at the end.
        self.error: BaseException | None = None
        self.problems: list[str] = []
        self.thread = threading.Thread(
            target=self._serve, args=(listener,), name=f"uvicorn-{self.port}", daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"uvicorn did not start on {self.url}: {self.error!r}")
            time.sleep(0.01)

    def _serve(self, listener: socket.socket) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve(sockets=[listener]))
        except BaseException as exc:
            self.error = exc
        finally:
            listener.close()
            self.problems = _finish(self.loop)

    @property
    def thread_id(self) -> int | None:
        """The identity of the thread that runs :attr:`loop`."""
        return self.thread.ident

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coroutine`` on the server's loop; block until it is done (or cancel it
        after ``timeout`` seconds and raise ``TimeoutError``)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def call(self, func: Callable[..., T], *args: Any, timeout: float = 60.0) -> T:
        """Call ``func(*args)`` on the server's loop and return what it returns."""

        async def call() -> T:
            return func(*args)

        return self.run(call(), timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Shut uvicorn down (as on SIGTERM) and end the loop; idempotent. Raises if
        serving failed, or if the loop ended with a task of taskevents still pending
        or with a task that had raised."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():  # pragma: no cover - a shutdown that hangs
            self.server.force_exit = True
            self.thread.join(10)
        assert not self.thread.is_alive(), "uvicorn did not stop"
        if self.error is not None:
            raise AssertionError(f"uvicorn failed: {self.error!r}") from self.error
        assert self.problems == [], self.problems


@contextlib.contextmanager
def live_asgi(app: Any, **config: Any) -> Iterator[LiveASGI]:
    """``app`` served by uvicorn on 127.0.0.1 while the block runs (see :class:`LiveASGI`);
    ``config``: more ``uvicorn.Config`` options."""
    live = LiveASGI(app, **config)
    try:
        yield live
    finally:
        live.stop()


# -- clients -------------------------------------------------------------------------------


class Recorder:
    """What a Socket.IO client received, in the order it arrived: :attr:`inbox` holds
    what the test has not looked at yet, :attr:`seen` what it has."""

    kind = ""

    def __init__(self) -> None:
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.seen: list[tuple[str, Any]] = []
        #: The data of each ``connect_error`` (a refused connection).
        self.connect_errors: list[Any] = []

    def _record(self, event: str, namespace: str, *args: Any) -> None:
        self.inbox.put((event, args[0] if len(args) == 1 else list(args)))

    def _connect_error(self, namespace: str, data: Any = None) -> None:
        self.connect_errors.append(data)

    # -- what each kind brings

    def connect(
        self,
        url: str,
        *,
        auth: Any = None,
        headers: Mapping[str, str] | None = None,
        namespace: str = "/",
        transports: list[str] | None = None,
    ) -> Recorder:
        raise NotImplementedError

    def emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        """Emit ``event`` with exactly these arguments: none, one or several."""
        raise NotImplementedError

    @property
    def sid(self) -> str | None:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- reading

    def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        """The next event and its payload; raises ``queue.Empty`` after ``timeout``."""
        item = self.inbox.get(timeout=timeout)
        self.seen.append(item)
        return item

    def wait_for(
        self, event: str, where: Callable[[Any], bool] = lambda _: True, timeout: float = 10.0
    ) -> Any:
        """The payload of the next ``event`` that ``where`` accepts; what comes before
        it goes to :attr:`seen` too."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.kind}: no {event!r} within {timeout}s; the last seen: {self.seen[-5:]}"
                )
            try:
                name, payload = self.next(remaining)
            except queue.Empty:
                continue
            if name == event and where(payload):
                return payload

    def drain(self, quiet: float = 0.3) -> list[tuple[str, Any]]:
        """Everything that arrives until nothing has for ``quiet`` seconds."""
        got: list[tuple[str, Any]] = []
        while True:
            try:
                got.append(self.next(quiet))
            except queue.Empty:
                return got

    def updates(self, subject: str | None = None) -> list[dict[str, Any]]:
        """The ``task_status_update`` payloads seen so far (of ``subject``, if given)."""
        return [
            payload
            for name, payload in self.seen
            if name == "task_status_update" and subject in (None, payload["config_name"])
        ]

    def errors(self) -> list[dict[str, Any]]:
        return [payload for name, payload in self.seen if name == "error"]


class _InOrderEngineIO(engineio.Client):  # type: ignore[misc]
    # The stock client runs each message's handlers in a thread of their own, so they may
    # see messages out of order; this one runs them in the order the messages arrive.
    def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("run_async", None)
        return super()._trigger_event(event, *args, **kwargs)


class _ThreadedSocketIO(socketio.Client):  # type: ignore[misc]
    def _engineio_client_class(self) -> type:
        return _InOrderEngineIO


class ThreadedClient(Recorder):
    """A ``socketio.Client`` (threads) that records what it receives."""

    kind = "Client"

    def __init__(self) -> None:
        super().__init__()
        # websocket-client adds an Origin header of its own (the server's): leave that to
        # the test, which may send one in connect(headers=...), as an AsyncClient does.
        self.sio = _ThreadedSocketIO(
            reconnection=False, websocket_extra_options={"suppress_origin": True}
        )
        self.sio.on("*", self._record, namespace="*")
        self.sio.on("connect_error", self._connect_error, namespace="*")

    def connect(
        self,
        url: str,
        *,
        auth: Any = None,
        headers: Mapping[str, str] | None = None,
        namespace: str = "/",
        transports: list[str] | None = None,
    ) -> ThreadedClient:
        self.sio.connect(
            url,
            headers=dict(headers or {}),
            auth=auth,
            transports=transports or ["websocket"],
            namespaces=[namespace],
            wait_timeout=10,
        )
        return self

    def emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        data: Any = None if not args else args[0] if len(args) == 1 else tuple(args)
        self.sio.emit(event, data, namespace=namespace)

    @property
    def sid(self) -> str | None:
        sid: str | None = self.sio.get_sid("/")
        return sid

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected)

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()
        # a refused connection may leave Engine.IO's transport open
        with contextlib.suppress(Exception):
            self.sio.eio.disconnect(abort=True)


class _InOrderAsyncEngineIO(engineio.AsyncClient):  # type: ignore[misc]
    # As _InOrderEngineIO: handlers run in the order the messages arrive, not each in a
    # task of its own.
    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("run_async", None)
        return await super()._trigger_event(event, *args, **kwargs)


class _AsyncSocketIO(socketio.AsyncClient):  # type: ignore[misc]
    def _engineio_client_class(self) -> type:
        return _InOrderAsyncEngineIO


class AsyncioClient(Recorder):
    """A ``socketio.AsyncClient`` (aiohttp) that records what it receives. It runs on an
    event loop of its own, in a thread, so the tests call it as they call the threaded
    client: each method blocks until the coroutine it runs is done."""

    kind = "AsyncClient"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="asyncio-client", daemon=True)
        self._thread.start()
        self.sio: Any = self._run(self._create())

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            _finish(self.loop)  # what the client library left behind is its own business

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _create(self) -> Any:
        sio = _AsyncSocketIO(reconnection=False)
        sio.on("*", self._record, namespace="*")
        sio.on("connect_error", self._connect_error, namespace="*")
        return sio

    def connect(
        self,
        url: str,
        *,
        auth: Any = None,
        headers: Mapping[str, str] | None = None,
        namespace: str = "/",
        transports: list[str] | None = None,
    ) -> AsyncioClient:
        self._run(
            self.sio.connect(
                url,
                headers=dict(headers or {}),
                auth=auth,
                transports=transports or ["websocket"],
                namespaces=[namespace],
                wait_timeout=10,
            )
        )
        return self

    def emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        data: Any = None if not args else args[0] if len(args) == 1 else tuple(args)
        self._run(self.sio.emit(event, data, namespace=namespace))

    @property
    def sid(self) -> str | None:
        sid: str | None = self.sio.get_sid("/")
        return sid

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected)

    async def _shutdown(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
        # A refused connection leaves the aiohttp session open: close it.
        eio = self.sio.eio
        with contextlib.suppress(Exception):
            await eio.disconnect(abort=True)
        http = getattr(eio, "http", None)
        if http is not None and not http.closed:
            await http.close()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        try:
            self._run(self._shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(15)


def make_client(kind: str) -> Recorder:
    """A new, unconnected client of ``kind`` (one of :data:`CLIENT_KINDS`)."""
    if kind == AsyncioClient.kind:
        return AsyncioClient()
    if kind == ThreadedClient.kind:
        return ThreadedClient()
    raise ValueError(f"no client kind {kind!r}; one of {CLIENT_KINDS}")


# -- a served AsyncServer ------------------------------------------------------------------


class AsgiServed:
    """A ``socketio.AsyncServer`` with an :class:`AsyncSocketIOAdapter`, served live."""

    def __init__(
        self,
        live: LiveASGI,
        emitter: Emitter,
        adapter: AsyncSocketIOAdapter,
        sio: Any,
    ) -> None:
        self.live = live
        self.emitter = emitter
        self.adapter = adapter
        self.sio = sio
        self.clients: list[Recorder] = []

    @property
    def url(self) -> str:
        return self.live.url

    @property
    def port(self) -> int:
        return self.live.port

    def unconnected(self, kind: str = "AsyncClient") -> Recorder:
        """A client of ``kind``, not connected yet (closed at the end of the test)."""
        client = make_client(kind)
        self.clients.append(client)
        return client

    def client(self, kind: str = "AsyncClient", **options: Any) -> Recorder:
        """A client of ``kind``, connected (closed at the end of the test); ``options``
        for :meth:`Recorder.connect`."""
        return self.unconnected(kind).connect(self.url, **options)

    def close(self) -> None:
        with contextlib.ExitStack() as stack:
            stack.callback(self.live.stop)
            stack.callback(self.adapter.close)
            for client in self.clients:
                stack.callback(client.close)


def serving() -> Iterator[Callable[..., AsgiServed]]:
    """The ``asgi`` fixture of the tests: ``asgi(**options)`` starts a served
    ``AsyncServer`` with an adapter and returns an :class:`AsgiServed`.

    Options: ``emitter`` (default: a new one on a :class:`MemoryStateStore` with
    ``history_size``), ``subjects`` to register (default: :data:`SUBJECTS`),
    ``server_options`` for ``socketio.AsyncServer``, ``uvicorn_options`` for
    ``uvicorn.Config``, and the rest for the adapter (``progress_interval`` is 0 unless
    given)."""
    running: list[AsgiServed] = []

    def start(
        *,
        emitter: Emitter | None = None,
        subjects: Mapping[str, Mapping[str, Any]] = SUBJECTS,
        history_size: int = 1000,
        server_options: Mapping[str, Any] | None = None,
        uvicorn_options: Mapping[str, Any] | None = None,
        **adapter_options: Any,
    ) -> AsgiServed:
        if emitter is None:
            emitter = Emitter(source="tests", state=MemoryStateStore(history_size=history_size))
        for subject, metadata in subjects.items():
            emitter.register(subject, **metadata)
        sio = socketio.AsyncServer(async_mode="asgi", **(server_options or {}))
        options = {"progress_interval": 0, **adapter_options}
        adapter = AsyncSocketIOAdapter(sio, emitter, **options).connect()
        try:
            live = LiveASGI(socketio.ASGIApp(sio), **(uvicorn_options or {}))
        except BaseException:
            adapter.close()
            raise
        served = AsgiServed(live, emitter, adapter, sio)
        running.append(served)
        return served

    try:
        yield start
    finally:
        with contextlib.ExitStack() as stack:
            for served in running:
                stack.callback(served.close)


# -- the protocol, from a client's side ---------------------------------------------------


def subscribe(client: Recorder, subject: str = "aws01", **extra: Any) -> dict[str, Any]:
    """Subscribe ``client`` to ``subject``; the ``task_status`` it is answered with."""
    client.emit("subscribe_task", {"config_name": subject, **extra})
    status: dict[str, Any] = client.wait_for("task_status", lambda p: p["config_name"] == subject)
    return status


def run_task(emitter: Emitter, subject: str = "aws01", steps: int = 3) -> list[TaskEvent]:
    """One task on ``subject``: started, ``steps`` progress events, completed."""
    events = [emitter.started(subject, "change_ip")]
    for step in range(1, steps + 1):
        events.append(emitter.progress(subject, 100 * step // steps, stage="execution"))
    events.append(emitter.completed(subject, {"ip": "203.0.113.7"}))
    return events


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
