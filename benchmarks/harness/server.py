"""The benchmark server: a small Flask app with ``flask_socketio.SocketIO`` and
``taskevents.flask.TaskEvents`` in its default configuration, plus ``/bench/*`` HTTP
endpoints through which the orchestrator makes the server itself emit, from a Socket.IO
background task (a thread, or a greenlet under gevent).

It runs in a subprocess (:data:`LAUNCHER`): under gevent, ``monkey.patch_all()`` must
come before this module (and everything it imports) is imported.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from .config import (
    BENCH_MAX_BACKLOG,
    FLOOD_SUBJECT,
    MODES,
    RAW_SUBJECT,
    SUBJECTS,
    TASKEVENTS,
    TE_SUBJECT,
    YIELD_SLEEP,
)
from .serving import gevent_nodelay_handler, in_background, parser_for, ping_info, start_watchdog

__all__ = ["LAUNCHER", "serve"]

#: What the server subprocess runs (``python -c LAUNCHER MODE BENCHMARKS_DIR ARGS...``):
#: patch first (gevent), then import the harness and serve.
LAUNCHER = """\
import sys
if sys.argv[1] == "gevent":
    from gevent import monkey
    monkey.patch_all()
sys.path.insert(0, sys.argv[2])
from harness.server import serve
raise SystemExit(serve(sys.argv[3:]))
"""


class _Bench:
    """The server side of the measurements: emits from a background task on request."""

    def __init__(self, socketio: Any, emitter: Any, adapter: Any) -> None:
        from taskevents.adapters.socketio import room_for

        self.socketio = socketio
        self.emitter = emitter
        self.adapter = adapter
        self.raw_room = room_for(RAW_SUBJECT)
        self.raw_seq = 0
        self.raw_task_id = ""
        self.raw_prefix = uuid.uuid4().hex[:16] + "-"
        self.raw_counter = itertools.count(1)
        self.last: Any = None  # the last event (taskevents) or payload (raw) sent

    # -- the two emit paths ---------------------------------------------------------------

    def send_taskevents(self, index: int, sent_ms: float, last: bool) -> None:
        if index % 2 == 0:
            self.last = self.emitter.started(TE_SUBJECT, "bench", sent_ms=sent_ms)
        else:
            self.last = self.emitter.completed(TE_SUBJECT, {"sent_ms": sent_ms, "last": last})

    def send_raw(self, index: int, sent_ms: float, last: bool) -> None:
        # What a hand-written app would do: build the message, emit it to the room.
        payload = self.raw_payload(index, sent_ms, last)
        self.socketio.emit("task_status_update", payload, to=self.raw_room)
        self.last = payload

    def raw_payload(
        self, index: int, sent_ms: float, last: bool, subject: str = RAW_SUBJECT
    ) -> dict[str, Any]:
        """The raw path's message for event ``index`` (even: a start, odd: a completion)
        on ``subject``: the keys and size of taskevents' ``task_status_update``."""
        self.raw_seq += 1
        update: dict[str, Any]
        if index % 2 == 0:
            self.raw_task_id = uuid.uuid4().hex
            update = {
                "event": "task_started",
                "task_type": "bench",
                "status": "busy",
                "details": {"sent_ms": sent_ms},
                "task_id": self.raw_task_id,
            }
        else:
            update = {
                "event": "task_completed",
                "result": {"sent_ms": sent_ms, "last": last},
                "status": "idle",
                "task_id": self.raw_task_id,
                "task_type": "bench",
            }
        return {
            "config_name": subject,
            "update": update,
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "seq": self.raw_seq,
            "event_id": self.raw_prefix + str(next(self.raw_counter)),
        }

    def payload_bytes(self, kind: str) -> int:
        from taskevents.adapters.socketio import update_payload

        message = update_payload(self.last) if kind == TASKEVENTS else self.last
        return len(json.dumps(message, separators=(",", ":")))

    # -- runs -------------------------------------------------------------------------------

    def in_background(self, func: Callable[[], dict[str, Any]], timeout: float) -> dict[str, Any]:
        """Run ``func`` in a Socket.IO background task (a thread, or a greenlet under
        gevent) and wait for it."""
        return in_background(self.socketio, func, timeout)

    def lifecycle(self, kind: str, events: int, rate: float) -> dict[str, Any]:
        """``events`` lifecycle events (started, completed, started, ...), paced at
        ``rate`` per second (0: back to back)."""
        send = self.send_taskevents if kind == TASKEVENTS else self.send_raw
        sleep = self.socketio.sleep
        clock = time.perf_counter
        wall = time.time
        calls: list[float] = []
        start = clock()
        for index in range(events):
            if rate > 0:
                delay = start + index / rate - clock()
                sleep(delay if delay > 0 else 0)  # always yield, even when behind
            before = clock()
            send(index, wall() * 1000.0, index == events - 1)
            calls.append(clock() - before)
        loop = clock() - start
        # When the adapter's worker has emitted the last one (raw: at once). Under gevent
        # this poll runs only when the hub gives it a turn: an upper bound there.
        give_up = clock() + 60.0
        while kind == TASKEVENTS and self.adapter.stats["queued"] and clock() < give_up:
            sleep(0.001)
        drained = clock() - start
        return {
            "emitted": events,
            "loop_s": loop,
            "drained_s": drained,
            "emit_call_us_median": statistics.median(calls) * 1e6,
            "emit_call_us_mean": statistics.fmean(calls) * 1e6,
            "payload_bytes": self.payload_bytes(kind),
        }

    def wake_probe(self, rounds: int = 50) -> dict[str, Any]:
        """The same small piece of Python timed right after a 10 ms sleep, and back to
        back: how much slower code runs when the process has just woken up (caches and
        CPU cold), which is what every paced event pays."""
        sleep = self.socketio.sleep
        clock = time.perf_counter

        def work() -> int:
            total = 0
            for index in range(200):
                total += index
            return total

        woken, warm = [], []
        for _ in range(rounds):
            sleep(0.01)
            t0 = clock()
            work()
            woken.append(clock() - t0)
        for _ in range(rounds):
            t0 = clock()
            work()
            warm.append(clock() - t0)
        return {
            "after_sleep_us": statistics.median(woken) * 1e6,
            "back_to_back_us": statistics.median(warm) * 1e6,
        }

    def flood(self, events: int, yield_every: int) -> dict[str, Any]:
        """started, ``events`` progress calls as fast as they go (with a 1 ms sleep, a
        stand-in for the task's own I/O, every ``yield_every`` calls, if not 0),
        completed."""
        from taskevents import Emitter

        percents = [index * 100.0 / events for index in range(1, events + 1)]
        clock = time.perf_counter
        # The same calls on an emitter nobody listens to: the core's own cost (the best
        # of three runs of up to 20,000 calls).
        bare = Emitter(source="benchmarks/socketio_bench")
        bare.started("bare", "flood")
        sample = percents[: min(events, 20_000)]
        runs = []
        for _ in range(3):
            t0 = clock()
            for percent in sample:
                bare.progress("bare", percent)
            runs.append(clock() - t0)
        bare_us = min(runs) / len(sample) * 1e6
        bare.completed("bare")

        emitter = self.emitter
        before = self.adapter.stats
        emitter.started(FLOOD_SUBJECT, "flood", sent_ms=time.time() * 1000.0)
        progress = emitter.progress
        yielding = 0.0
        if yield_every:
            sleep = self.socketio.sleep
            t0 = clock()
            for index, percent in enumerate(percents, 1):
                progress(FLOOD_SUBJECT, percent)
                if index % yield_every == 0:
                    y0 = clock()
                    sleep(YIELD_SLEEP)
                    yielding += clock() - y0
            loop = clock() - t0
        else:
            t0 = clock()
            for percent in percents:
                progress(FLOOD_SUBJECT, percent)
            loop = clock() - t0
        end = emitter.completed(FLOOD_SUBJECT, {"sent_ms": time.time() * 1000.0, "last": True})
        return {
            "progress_events": events,
            "yield_every": yield_every,
            "emitted": events + 2,
            "loop_s": loop,
            "yielded_s": yielding,
            "per_call_us": (loop - yielding) / events * 1e6,
            "bare_per_call_us": bare_us,
            "final_seq": end.seq,
            "adapter_before": before,
        }


def _nodelay_options(mode: str) -> dict[str, Any]:
    """Server options that set TCP_NODELAY on every accepted connection (neither
    Werkzeug nor gevent's pywsgi does by default)."""
    if mode == "gevent":
        return {"handler_class": gevent_nodelay_handler()}
    from werkzeug.serving import WSGIRequestHandler

    class NoDelayRequestHandler(WSGIRequestHandler):
        disable_nagle_algorithm = True

    return {"request_handler": NoDelayRequestHandler}


def serve(argv: Sequence[str] | None = None) -> int:
    """The benchmark server (started by :class:`harness.control.Server` in a
    subprocess)."""
    parser = parser_for("harness.server")
    parser.add_argument("--mode", choices=MODES, required=True)
    args = parser.parse_args(argv)

    import logging

    import flask
    from flask_socketio import SocketIO

    from taskevents.flask import TaskEvents

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = flask.Flask("socketio_bench")
    # A burst queues up to MAX_BURST_EVENTS messages per client by design: the guard that
    # drops a client whose backlog passes max_backlog (1,000 by default) would drop every
    # client of a burst, in both paths, so the benchmark raises it.
    app.config.update(
        TASKEVENTS_SUBJECTS=list(SUBJECTS),
        TASKEVENTS_DASHBOARD=False,
        TASKEVENTS_MAX_BACKLOG=BENCH_MAX_BACKLOG,
    )
    socketio = SocketIO(app, async_mode=args.mode)
    TaskEvents(app, socketio)
    state = TaskEvents.state(app)
    adapter = state.socketio_adapter
    bench = _Bench(socketio, state.emitter, adapter)
    run_timeout = args.max_seconds

    @app.get("/bench/ping")
    def ping() -> flask.Response:
        return flask.jsonify(ping_info(socketio, adapter))

    @app.get("/bench/cpu")
    def cpu() -> flask.Response:
        return flask.jsonify(cpu_s=time.process_time())

    @app.get("/bench/adapter")
    def adapter_stats() -> flask.Response:
        return flask.jsonify(state.socketio_adapter.stats)

    @app.post("/bench/run")
    def run() -> flask.Response:
        body = flask.request.get_json(force=True)
        kind, events, rate = str(body["kind"]), int(body["events"]), float(body["rate"])
        return flask.jsonify(
            bench.in_background(lambda: bench.lifecycle(kind, events, rate), run_timeout)
        )

    @app.get("/bench/probe")
    def probe() -> flask.Response:
        return flask.jsonify(bench.in_background(bench.wake_probe, 30.0))

    @app.post("/bench/flood")
    def flood() -> flask.Response:
        body = flask.request.get_json(force=True)
        events, yield_every = int(body["events"]), int(body["yield_every"])
        return flask.jsonify(
            bench.in_background(lambda: bench.flood(events, yield_every), run_timeout)
        )

    start_watchdog(socketio, args.parent, args.max_seconds)
    options: dict[str, Any] = {}
    if args.tcp_nodelay:
        options.update(_nodelay_options(args.mode))
    socketio.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_output=False,
        allow_unsafe_werkzeug=True,
        **options,
    )
    return 0
