"""The ASGI benchmark server: python-socketio's ``AsyncServer`` in ``asgi`` mode,
served by uvicorn on one event loop (uvloop by default), with taskevents'
``AsyncSocketIOAdapter`` and ``/bench/*`` HTTP endpoints through which the
orchestrator (:mod:`harness.asgi_measure`) starts each measured run.

Runs in a subprocess (:data:`LAUNCHER`). Every event is generated inside this process,
in one of two places (:data:`EMITTERS`, chosen with ``POST /bench/where``):

- ``coroutine``: a coroutine on the server's loop (the HTTP request's own task), which
  yields to the loop before every event (``await asyncio.sleep(...)``: the pacing
  delay, or 0 in a burst) the way an async task of an application does;
- ``thread``: a worker thread (``asyncio.to_thread``), as an application running sync
  work in a thread pool does; it never yields on purpose (``time.sleep`` only to pace).

Two emit paths, as in :mod:`harness.server`: *taskevents* (``emitter.started`` /
``emitter.completed`` on ``bench_te``; the adapter's worker task sends) and *raw*
(the same message built by hand, sent with ``await sio.emit(...)`` from the coroutine,
or handed to the loop with ``asyncio.run_coroutine_threadsafe(sio.emit(...), loop)``
from the thread, not waiting for each: what an application does without taskevents).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping, Sequence
from datetime import datetime, timezone
from typing import Any

from .config import BENCH_MAX_BACKLOG, FLOOD_SUBJECT, RAW_SUBJECT, TASKEVENTS, TE_SUBJECT
from .server import _Bench
from .serving import parser_for

__all__ = [
    "ASGI_SUBJECTS",
    "EMITTERS",
    "IDLE",
    "LAG_TICK",
    "LAUNCHER",
    "LOOPS",
    "RAW_FLOOD_SUBJECT",
    "SPIN",
    "serve",
]

#: What the server subprocess runs (``python -c LAUNCHER BENCHMARKS_DIR ARGS...``).
LAUNCHER = """\
import sys
sys.path.insert(0, sys.argv[1])
from harness.asgi_server import serve
raise SystemExit(serve(sys.argv[2:]))
"""

#: Where the events are emitted from (see the module's docstring).
EMITTERS = ("coroutine", "thread")
#: The event loops ``--loop`` offers (``auto``: uvloop when installed).
LOOPS = ("auto", "uvloop", "asyncio")
#: The raw path's flood goes to a subject of its own, so that the load generator can
#: tell the two floods apart.
RAW_FLOOD_SUBJECT = "bench_rf"
ASGI_SUBJECTS = (TE_SUBJECT, RAW_SUBJECT, FLOOD_SUBJECT, RAW_FLOOD_SUBJECT)
#: The lag ticker's sleep (seconds).
LAG_TICK = 0.001
#: The lag scenario's controls: the ticker alone, and the ticker while a thread spins
#: (a pure-Python loop as busy as the flood's, emitting nothing): what the GIL alone
#: costs the loop.
IDLE = "idle"
SPIN = "spin"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _median_us(calls: Sequence[float]) -> tuple[float, float]:
    if not calls:
        return 0.0, 0.0
    return statistics.median(calls) * 1e6, statistics.fmean(calls) * 1e6


def _lag_stats(lags: Sequence[float]) -> dict[str, Any]:
    """Nearest-rank percentiles of the ticker's lateness, in milliseconds."""
    ordered = sorted(lags)

    def rank(q: float) -> float | None:
        if not ordered:
            return None
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000.0

    return {
        "ticks": len(ordered),
        "p50_ms": rank(0.5),
        "p90_ms": rank(0.9),
        "p99_ms": rank(0.99),
        "max_ms": ordered[-1] * 1000.0 if ordered else None,
        "over_5ms": sum(1 for lag in ordered if lag > 0.005),
    }


class _AsgiBench(_Bench):
    """The server side of the measurements on the ``AsyncServer``: the emit paths of
    :class:`harness.server._Bench` (its message shapes, its taskevents calls), sent from
    a coroutine on the loop or from a thread."""

    def __init__(
        self, sio: Any, emitter: Any, adapter: Any, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(sio, emitter, adapter)
        self.loop = loop
        self.where = EMITTERS[0]

    # -- raw sends ------------------------------------------------------------------------

    def emit_raw(self, payload: dict[str, Any], room: str) -> Awaitable[None]:
        """``sio.emit(...)`` of ``payload`` to ``room``: the coroutine to await (no
        wrapper of ours around it)."""
        coroutine: Awaitable[None] = self.socketio.emit("task_status_update", payload, to=room)
        return coroutine

    def emit_raw_from_thread(
        self, payload: dict[str, Any], room: str
    ) -> concurrent.futures.Future[None]:
        coroutine: Coroutine[Any, Any, None] = self.socketio.emit(
            "task_status_update", payload, to=room
        )
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def raw_progress_payload(self, percent: float, subject: str) -> dict[str, Any]:
        """The raw path's progress message: the keys of taskevents' progress update."""
        self.raw_seq += 1
        return {
            "config_name": subject,
            "update": {
                "event": "task_progress",
                "progress": {"percent": percent},
                "percent": percent,
                "task_id": self.raw_task_id,
                "task_type": "bench",
            },
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "seq": self.raw_seq,
            "event_id": self.raw_prefix + str(next(self.raw_counter)),
        }

    async def drain_taskevents(self) -> bool:
        """On the loop: wait until the adapter has handed everything queued so far to
        the clients' Engine.IO queues (what a finished ``await sio.emit`` means)."""
        done: bool = await self.adapter.flush(60.0)
        return done

    # -- lifecycle runs (throughput) ------------------------------------------------------

    async def lifecycle_coroutine(self, kind: str, events: int, rate: float) -> dict[str, Any]:
        """``events`` lifecycle events from this coroutine, paced at ``rate`` per second
        (0: back to back), yielding to the loop before each."""
        clock, wall = time.perf_counter, time.time
        taskevents = kind == TASKEVENTS
        room = self.raw_room
        calls: list[float] = []
        start = clock()
        for index in range(events):
            if rate > 0:
                delay = start + index / rate - clock()
                await asyncio.sleep(delay if delay > 0 else 0)
            else:
                await asyncio.sleep(0)
            last = index == events - 1
            before = clock()
            if taskevents:
                self.send_taskevents(index, wall() * 1000.0, last)
            else:
                payload = self.raw_payload(index, wall() * 1000.0, last)
                await self.emit_raw(payload, room)
                self.last = payload
            calls.append(clock() - before)
        loop_s = clock() - start
        drained = await self.drain_taskevents() if taskevents else True
        return self._lifecycle_result(kind, events, calls, loop_s, clock() - start, drained)

    def lifecycle_thread(self, kind: str, events: int, rate: float) -> dict[str, Any]:
        """The same from a worker thread: ``time.sleep`` to pace, no yield in a burst;
        the raw path hands each emit to the loop without waiting for it."""
        clock, wall = time.perf_counter, time.time
        taskevents = kind == TASKEVENTS
        room = self.raw_room
        sends: list[concurrent.futures.Future[None]] = []
        calls: list[float] = []
        start = clock()
        for index in range(events):
            if rate > 0:
                delay = start + index / rate - clock()
                time.sleep(delay if delay > 0 else 0)
            last = index == events - 1
            before = clock()
            if taskevents:
                self.send_taskevents(index, wall() * 1000.0, last)
            else:
                payload = self.raw_payload(index, wall() * 1000.0, last)
                sends.append(self.emit_raw_from_thread(payload, room))
                self.last = payload
            calls.append(clock() - before)
        loop_s = clock() - start
        drained = self._drain_from_thread(sends)
        return self._lifecycle_result(kind, events, calls, loop_s, clock() - start, drained)

    def _drain_from_thread(self, sends: Sequence[concurrent.futures.Future[None]]) -> bool:
        if not sends:  # taskevents
            return asyncio.run_coroutine_threadsafe(self.drain_taskevents(), self.loop).result(65.0)
        _, pending = concurrent.futures.wait(sends, timeout=60.0)
        for send in sends:
            if send.done() and send.exception() is not None:
                raise RuntimeError(f"a raw emit failed: {send.exception()!r}")
        return not pending

    def _lifecycle_result(
        self,
        kind: str,
        events: int,
        calls: Sequence[float],
        loop_s: float,
        drained_s: float,
        drained: bool,
    ) -> dict[str, Any]:
        median, mean = _median_us(calls)
        result = {
            "emitted": events,
            "where": self.where,
            "loop_s": loop_s,
            "drained_s": drained_s,
            "emit_call_us_median": median,
            "emit_call_us_mean": mean,
            "payload_bytes": self.payload_bytes(kind),
        }
        if not drained:
            result["error"] = "the emits were not all sent within 60 s"
        return result

    async def run_lifecycle(self, kind: str, events: int, rate: float) -> dict[str, Any]:
        if self.where == "thread":
            return await asyncio.to_thread(self.lifecycle_thread, kind, events, rate)
        return await self.lifecycle_coroutine(kind, events, rate)

    # -- floods and the loop's lag --------------------------------------------------------

    async def lag_run(
        self, kind: str, where: str, seconds: float, max_events: int
    ) -> dict[str, Any]:
        """A ticker coroutine sleeps :data:`LAG_TICK` over and over and records how late
        it wakes, while ``kind``'s path floods progress for ``seconds`` (at most
        ``max_events`` calls) from ``where``, from the flood's start until everything
        emitted is sent (``kind`` :data:`IDLE`: no flood, ``seconds`` of ticks alone;
        :data:`SPIN`: a thread spinning without emitting)."""
        clock = time.perf_counter
        lags: list[float] = []
        stop = False

        async def ticker() -> None:
            while not stop:
                t0 = clock()
                await asyncio.sleep(LAG_TICK)
                # A timer may fire a little early (uvloop rounds to its cached
                # millisecond clock): that counts as on time.
                lags.append(max(0.0, clock() - t0 - LAG_TICK))

        tick_task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)  # the ticker is running before the flood starts
        before = self.adapter.stats
        cpu0 = time.process_time()
        t0 = clock()
        try:
            if kind == IDLE:
                await asyncio.sleep(seconds)
                flood: dict[str, Any] = {"progress_events": 0, "loop_s": seconds}
            elif kind == SPIN:
                flood = await asyncio.to_thread(self.spin_thread, seconds)
            elif where == "thread":
                flood = await asyncio.to_thread(self.flood_thread, kind, seconds, max_events)
                if kind == TASKEVENTS:
                    flood["drained"] = await self.drain_taskevents()
            else:
                flood = await self.flood_coroutine(kind, seconds, max_events)
            window = clock() - t0
        finally:
            stop = True
            await tick_task
        after = self.adapter.stats
        flood.update(
            kind=kind,
            where=where,
            window_s=window,
            cpu_s=time.process_time() - cpu0,
            lag=_lag_stats(lags),
            adapter={key: after[key] - before.get(key, 0) for key in after},
        )
        if not flood.pop("drained", True):
            flood["error"] = "the flood's emits were not all sent within 60 s"
        return flood

    async def flood_coroutine(self, kind: str, seconds: float, max_events: int) -> dict[str, Any]:
        clock, wall = time.perf_counter, time.time
        taskevents = kind == TASKEVENTS
        room = self._flood_room(kind)
        progress = self.emitter.progress
        count = 0
        start = clock()
        deadline = start + seconds
        if taskevents:
            self.emitter.started(FLOOD_SUBJECT, "flood", sent_ms=wall() * 1000.0)
        else:
            await self.emit_raw(
                self.raw_payload(0, wall() * 1000.0, False, RAW_FLOOD_SUBJECT), room
            )
        while count < max_events:
            await asyncio.sleep(0)
            now = clock()
            if now >= deadline:
                break
            count += 1
            percent = (now - start) * 100.0 / seconds
            if taskevents:
                progress(FLOOD_SUBJECT, percent)
            else:
                await self.emit_raw(self.raw_progress_payload(percent, RAW_FLOOD_SUBJECT), room)
        loop_s = clock() - start
        await asyncio.sleep(0)
        end = {"sent_ms": wall() * 1000.0, "last": True}
        if taskevents:
            self.emitter.completed(FLOOD_SUBJECT, end)
            drained = await self.drain_taskevents()
        else:
            payload = self.raw_payload(1, end["sent_ms"], True, RAW_FLOOD_SUBJECT)
            await self.emit_raw(payload, room)
            drained = True
        return {"progress_events": count, "loop_s": loop_s, "drained": drained}

    def flood_thread(self, kind: str, seconds: float, max_events: int) -> dict[str, Any]:
        clock, wall = time.perf_counter, time.time
        taskevents = kind == TASKEVENTS
        room = self._flood_room(kind)
        progress = self.emitter.progress
        sends: list[concurrent.futures.Future[None]] = []
        count = 0
        start = clock()
        deadline = start + seconds
        if taskevents:
            self.emitter.started(FLOOD_SUBJECT, "flood", sent_ms=wall() * 1000.0)
        else:
            payload = self.raw_payload(0, wall() * 1000.0, False, RAW_FLOOD_SUBJECT)
            sends.append(self.emit_raw_from_thread(payload, room))
        while count < max_events:
            now = clock()
            if now >= deadline:
                break
            count += 1
            percent = (now - start) * 100.0 / seconds
            if taskevents:
                progress(FLOOD_SUBJECT, percent)
            else:
                payload = self.raw_progress_payload(percent, RAW_FLOOD_SUBJECT)
                sends.append(self.emit_raw_from_thread(payload, room))
        loop_s = clock() - start
        end = {"sent_ms": wall() * 1000.0, "last": True}
        drained = True
        if taskevents:
            self.emitter.completed(FLOOD_SUBJECT, end)  # drained on the loop, by lag_run
        else:
            payload = self.raw_payload(1, end["sent_ms"], True, RAW_FLOOD_SUBJECT)
            sends.append(self.emit_raw_from_thread(payload, room))
            drained = self._drain_from_thread(sends)
        return {"progress_events": count, "loop_s": loop_s, "drained": drained}

    def spin_thread(self, seconds: float) -> dict[str, Any]:
        """:meth:`flood_thread`'s loop without the emits (the control), for ``seconds``
        whatever the count."""
        clock = time.perf_counter
        count = 0
        start = clock()
        deadline = start + seconds
        percent = 0.0
        while True:
            now = clock()
            if now >= deadline:
                break
            count += 1
            percent = (now - start) * 100.0 / seconds
        return {"progress_events": count, "loop_s": clock() - start, "percent": percent}

    def _flood_room(self, kind: str) -> str:
        from taskevents.adapters.socketio import room_for

        return room_for(FLOOD_SUBJECT if kind == TASKEVENTS else RAW_FLOOD_SUBJECT)


# -- the /bench endpoints ------------------------------------------------------------------


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body", False):
            return body


async def _respond(send: Send, status: int, document: object) -> None:
    data = json.dumps(document).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _bench_app(bench: _AsgiBench, info: dict[str, Any], run_timeout: float) -> Any:
    """The ASGI app of the ``/bench/*`` endpoints (everything but ``/socket.io/``)."""

    async def guarded(work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(work, run_timeout)
        except asyncio.TimeoutError:
            return {"error": f"the run did not finish within {run_timeout:.0f} s"}
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        request: dict[str, Any] = json.loads(body) if body else {}
        route = (scope["method"], scope["path"])
        answer: dict[str, Any]
        if route == ("GET", "/bench/ping"):
            answer = info
        elif route == ("GET", "/bench/cpu"):
            answer = {"cpu_s": time.process_time()}
        elif route == ("GET", "/bench/adapter"):
            answer = bench.adapter.stats
        elif route == ("POST", "/bench/where"):
            where = str(request["where"])
            if where not in EMITTERS:
                await _respond(send, 400, {"error": f"where: one of {EMITTERS}"})
                return
            bench.where = where
            answer = {"where": where}
        elif route == ("POST", "/bench/run"):
            kind, events, rate = (
                str(request["kind"]),
                int(request["events"]),
                float(request["rate"]),
            )
            answer = await guarded(bench.run_lifecycle(kind, events, rate))
        elif route == ("POST", "/bench/lag"):
            answer = await guarded(
                bench.lag_run(
                    str(request["kind"]),
                    str(request["where"]),
                    float(request["seconds"]),
                    int(request["max_events"]),
                )
            )
        else:
            await _respond(send, 404, {"error": f"no route {route}"})
            return
        await _respond(send, 200, answer)

    return app


async def _watchdog(parent: int, max_seconds: float) -> None:
    """Stop the process (``os._exit``) when the orchestrator ``parent`` is gone, or
    after ``max_seconds``."""
    deadline = time.monotonic() + max_seconds
    while os.getppid() == parent and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    os._exit(0)


def _loop_name(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def serve(argv: Sequence[str] | None = None) -> int:
    """The ASGI benchmark server (started by :class:`harness.asgi_measure.AsgiServer`
    in a subprocess)."""
    parser = parser_for("harness.asgi_server")
    parser.add_argument("--loop", choices=LOOPS, default="auto")
    parser.add_argument("--progress-interval", type=float, default=0.0)
    args = parser.parse_args(argv)
    loop_name = _loop_name(args.loop)

    import socketio
    import uvicorn

    from taskevents import Emitter
    from taskevents.adapters.socketio import AsyncSocketIOAdapter

    async def main() -> None:
        emitter = Emitter(source="benchmarks/asgi_bench")
        for subject in ASGI_SUBJECTS:
            emitter.register(subject)
        sio = socketio.AsyncServer(async_mode="asgi")
        # A burst queues up to MAX_BURST_EVENTS messages per client by design: the backlog
        # guard (1,000 packets by default) would drop every client of a burst, in both
        # paths, so the benchmark lifts it (as harness.server does).
        adapter = AsyncSocketIOAdapter(
            sio,
            emitter,
            progress_interval=args.progress_interval,
            max_backlog=BENCH_MAX_BACKLOG,
        ).connect()  # on this loop: bound, its worker started
        loop = asyncio.get_running_loop()
        bench = _AsgiBench(sio, emitter, adapter, loop)
        info = {
            "mode": "asgi",
            "pid": os.getpid(),
            "loop": loop_name,
            "loop_class": f"{type(loop).__module__}.{type(loop).__qualname__}",
            "progress_interval": adapter.progress_interval,
            "max_backlog": BENCH_MAX_BACKLOG,
            "server": f"uvicorn {uvicorn.__version__}",
        }
        app = socketio.ASGIApp(sio, other_asgi_app=_bench_app(bench, info, args.max_seconds))
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        watchdog = asyncio.ensure_future(_watchdog(args.parent, args.max_seconds))
        try:
            await server.serve()
        finally:
            watchdog.cancel()
            await adapter.aclose(2.0)

    if loop_name == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
    return 0
