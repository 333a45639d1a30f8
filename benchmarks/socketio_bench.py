"""Socket.IO fan-out: taskevents' ``SocketIOAdapter`` against raw Flask-SocketIO emits.

One command runs everything and prints Markdown tables::

    .venv/bin/python benchmarks/socketio_bench.py            # full run, about 5 minutes
    .venv/bin/python benchmarks/socketio_bench.py --quick    # smoke test, 15-20 s

For each async mode (``threading``: Werkzeug + simple-websocket; ``gevent``: gevent
pywsgi + simple-websocket, ``monkey.patch_all()`` first) it starts a server subprocess
with ``socketio.run``: a small Flask app with ``flask_socketio.SocketIO`` and
``taskevents.flask.TaskEvents`` (default config: ``TASKEVENTS_PROGRESS_INTERVAL`` 0.1 s),
plus a few ``/bench/*`` HTTP endpoints that make the server itself emit, from a Socket.IO
background task:

- **taskevents**: ``emitter.started(...)`` / ``emitter.completed(...)`` alternately on
  subject ``bench_te``; the adapter's worker emits ``task_status_update`` to room
  ``task_bench_te``;
- **raw**: ``socketio.emit("task_status_update", payload, to="task_bench_rw")`` with a
  payload built by hand in the same shape (same keys, same size within a few bytes).

Both paths send lifecycle events (started/completed), never progress: lifecycle events
are never coalesced, so both deliver every event and their throughputs compare like for
like. (With progress events the adapter would, by design, replace a progress still
waiting in its queue by a newer one -- even with ``progress_interval=0`` -- and deliver
fewer messages than raw emits under load.) Every client subscribes to both subjects
through the adapter's ``subscribe_task`` handler, so only the emit path differs.

The clients are N official ``socket.io-client`` sockets in one Node process
(``benchmarks/loadgen.mjs``): WebSocket transport only, permessage-deflate off (not even
offered). The latency of a message is its receive time minus the ``sent_ms`` it carries
(wall-clock milliseconds, a float, taken by the server just before the emit call).

The servers run as ``socketio.run`` starts them: neither Werkzeug nor pywsgi sets
TCP_NODELAY, so Nagle's algorithm is on. A last pass repeats the largest client count with
TCP_NODELAY set on every accepted connection, to show whether Nagle costs anything here
(``--no-nodelay-check`` skips it): simple-websocket writes each frame with one
``send()``, so there is no write-write-read pattern for Nagle and delayed ACKs to stall.

Measurements, for 1, 10 and 50 clients (``--clients``) in each mode:

1. **paced**: ``--rate`` events/s (default 100) per path, ``--rounds`` (default 4) phases
   of ``--seconds`` (default 2.5) per path, raw/taskevents then taskevents/raw, and so
   on: delivered events/s across all clients, p50/p99/max latency, lost messages, server
   CPU per delivery, and the taskevents/raw ratio (target >= 0.9);
2. **burst**: ``--burst-deliveries / clients`` events (at most 10,000) emitted back to
   back, ``--rounds`` phases per path: the delivery capacity of each path, the same
   measurements;
3. **flood** (10 clients, ``--flood-clients``): ``--flood-events`` (default 100,000)
   ``emitter.progress()`` calls on one subject as fast as the loop goes, with the default
   ``progress_interval`` 0.1 s: emitter cost per call, progress updates each client
   received (target <= 10/s), the started and completed events at every client, the
   completed event's latency (target < 50 ms), and the final state (snapshot seq ==
   events emitted, status idle; from ``GET /api/tasks/bench_fl`` and from each client's
   last seq). In gevent mode a second flood sleeps 1 ms every ``--flood-yield-every``
   calls, as a task doing some I/O would: a tight loop never lets the adapter's worker
   (a greenlet) run until it ends.

Speed is reported, never asserted: the exit code is 0 whatever the numbers are. All
traffic stays on 127.0.0.1; every wait is bounded; the server and the load generator exit
by themselves if this process goes away, and are killed on the way out.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import platform
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["main", "serve"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOADGEN = HERE / "loadgen.mjs"

MODES = ("threading", "gevent")
TE_SUBJECT = "bench_te"
RAW_SUBJECT = "bench_rw"
FLOOD_SUBJECT = "bench_fl"
SUBJECTS = (TE_SUBJECT, RAW_SUBJECT, FLOOD_SUBJECT)
TASKEVENTS = "taskevents"
RAW = "raw"

DEFAULT_CLIENTS = (1, 10, 50)
#: 100 events/s to 50 clients is 5,000 deliveries/s: about half of what the threading
#: server manages when events are paced (its CPU cost per paced delivery is 70-100 µs on
#: a 2-core VM); at 200 events/s it is near saturation (p99 in the hundreds of ms).
DEFAULT_RATE = 100.0
DEFAULT_SECONDS = 2.5
DEFAULT_ROUNDS = 4
DEFAULT_BURST_DELIVERIES = 60_000
MAX_BURST_EVENTS = 10_000
DEFAULT_FLOOD_EVENTS = 100_000
DEFAULT_FLOOD_CLIENTS = 10
DEFAULT_FLOOD_YIELD_EVERY = 1_000
#: The gevent flood's second loop sleeps this long every --flood-yield-every calls: what a
#: task doing some I/O between progress reports does. (sleep(0) is not enough: gevent then
#: runs ready greenlets but hardly ever its timers, and the adapter's worker waits on one.)
YIELD_SLEEP = 0.001
QUICK = {
    "clients": (1, 3),
    "rate": 100.0,
    "seconds": 0.4,
    "rounds": 1,
    "burst_deliveries": 600,
    "flood_events": 3_000,
    "flood_clients": 3,
    "flood_yield_every": 300,
}

#: Targets from the issue.
TARGET_RATIO = 0.9
TARGET_PROGRESS_PER_S = 10.0
TARGET_LIFECYCLE_MS = 50.0

TIMES = "\N{MULTIPLICATION SIGN}"
MICRO = "\N{MICRO SIGN}"

#: Upper bounds of every wait (seconds).
SERVER_START_TIMEOUT = 60.0
LOADGEN_CONNECT_TIMEOUT = 60.0
PHASE_SLACK = 60.0
SERVER_MAX_SECONDS = 1_800.0


class BenchError(Exception):
    """Something in the harness went wrong (not a slow result)."""


# =========================================================================================
# The server (runs in a subprocess; gevent monkey-patches before this module is imported)
# =========================================================================================

# The server process runs this: patch first (gevent), then import this module and serve.
_LAUNCHER = """\
import sys
if sys.argv[1] == "gevent":
    from gevent import monkey
    monkey.patch_all()
sys.path.insert(0, sys.argv[2])
import socketio_bench
raise SystemExit(socketio_bench.serve(sys.argv[3:]))
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
        payload = {
            "config_name": RAW_SUBJECT,
            "update": update,
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "seq": self.raw_seq,
            "event_id": self.raw_prefix + str(next(self.raw_counter)),
        }
        self.socketio.emit("task_status_update", payload, to=self.raw_room)
        self.last = payload

    def payload_bytes(self, kind: str) -> int:
        from taskevents.adapters.socketio import update_payload

        message = update_payload(self.last) if kind == TASKEVENTS else self.last
        return len(json.dumps(message, separators=(",", ":")))

    # -- runs -------------------------------------------------------------------------------

    def in_background(self, func: Callable[[], dict[str, Any]], timeout: float) -> dict[str, Any]:
        """Run ``func`` in a Socket.IO background task (a thread, or a greenlet under
        gevent) and wait for it."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box.update(func())
            except Exception as exc:
                box["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                done.set()

        self.socketio.start_background_task(target)
        if not done.wait(timeout):
            box["error"] = f"the emit loop did not finish within {timeout:.0f} s"
        return box

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
        from gevent import pywsgi

        class NoDelayHandler(pywsgi.WSGIHandler):  # type: ignore[misc]
            def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                super().__init__(sock, *args, **kwargs)

        return {"handler_class": NoDelayHandler}
    from werkzeug.serving import WSGIRequestHandler

    class NoDelayRequestHandler(WSGIRequestHandler):
        disable_nagle_algorithm = True

    return {"request_handler": NoDelayRequestHandler}


def serve(argv: Sequence[str] | None = None) -> int:
    """The benchmark server (started by :func:`main` in a subprocess)."""
    parser = argparse.ArgumentParser(prog="socketio_bench.py server")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=SERVER_MAX_SECONDS)
    parser.add_argument("--tcp-nodelay", action="store_true")
    args = parser.parse_args(argv)

    import logging

    import flask
    from flask_socketio import SocketIO

    from taskevents.flask import TaskEvents

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = flask.Flask("socketio_bench")
    app.config.update(TASKEVENTS_SUBJECTS=list(SUBJECTS), TASKEVENTS_DASHBOARD=False)
    socketio = SocketIO(app, async_mode=args.mode)
    TaskEvents(app, socketio)
    state = TaskEvents.state(app)
    bench = _Bench(socketio, state.emitter, state.socketio_adapter)
    run_timeout = args.max_seconds

    @app.get("/bench/ping")
    def ping() -> flask.Response:
        return flask.jsonify(
            mode=socketio.async_mode,
            pid=os.getpid(),
            progress_interval=state.socketio_adapter.progress_interval,
        )

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

    def watchdog() -> None:
        # Stop by ourselves when the orchestrator is gone, or after max_seconds.
        deadline = time.monotonic() + args.max_seconds
        while os.getppid() == args.parent and time.monotonic() < deadline:
            socketio.sleep(0.5)
        os._exit(0)

    socketio.start_background_task(watchdog)
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


# =========================================================================================
# The orchestrator
# =========================================================================================

# No proxy, ever: every request goes to 127.0.0.1 directly.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, body: object = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with _opener.open(request, timeout=timeout) as response:
        return json.loads(response.read())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class Server:
    """A server subprocess in one async mode."""

    def __init__(self, mode: str, workdir: Path, *, tcp_nodelay: bool = False) -> None:
        self.mode = mode
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"server-{mode}.log"
        command = [sys.executable, "-c", _LAUNCHER, mode, str(HERE)]
        command += ["--mode", mode, "--port", str(self.port), "--parent", str(os.getpid())]
        if tcp_nodelay:
            command.append("--tcp-nodelay")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )
        try:
            self.info = self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"the {self.mode} server exited with {self.process.returncode}:\n"
                    + _tail(self.log)
                )
            try:
                info: dict[str, Any] = self.get("/bench/ping", timeout=2.0)
                return info
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise BenchError(f"the {self.mode} server did not answer within {SERVER_START_TIMEOUT} s")

    def get(self, path: str, timeout: float = 10.0) -> Any:
        return _http("GET", self.url + path, timeout=timeout)

    def post(self, path: str, body: object, timeout: float) -> Any:
        return _http("POST", self.url + path, body, timeout=timeout)

    def cpu(self) -> float:
        return float(self.get("/bench/cpu")["cpu_s"])

    def close(self) -> None:
        _stop(self.process)


class LoadGen:
    """N socket.io-client sockets in one Node process (``loadgen.mjs``)."""

    def __init__(self, node: str, url: str, clients: int) -> None:
        self.clients = clients
        self.warnings: list[str] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=30)
        self._lines: queue.Queue[str | None] = queue.Queue()
        command = [node, str(LOADGEN), "--url", url, "--clients", str(clients)]
        command += ["--subjects", ",".join(SUBJECTS)]
        command += ["--connect-timeout-ms", str(int(LOADGEN_CONNECT_TIMEOUT * 1000))]
        command += ["--max-seconds", str(int(SERVER_MAX_SECONDS))]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            cwd=ROOT,
            bufsize=1,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            self.ready = self.expect("ready", LOADGEN_CONNECT_TIMEOUT + 5)
        except BaseException:
            self.close()
            raise

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line.rstrip())

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except OSError as exc:
            raise BenchError(f"the load generator is gone: {exc}") from exc

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        """The next message carrying ``key`` (warnings are kept aside)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"the load generator sent no {key!r} within {timeout:.0f} s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.process.wait(5)
                raise BenchError(
                    f"the load generator exited ({self.process.returncode}) waiting for "
                    f"{key!r}:\n" + "\n".join(self._stderr)
                )
            message: dict[str, Any] = json.loads(line)
            if "warning" in message:
                self.warnings.append(str(message["warning"]))
            elif "error" in message:
                raise BenchError(str(message["error"]))
            elif key in message:
                return message

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send({"cmd": "quit"})
                self.process.wait(5)
            except (BenchError, subprocess.TimeoutExpired):
                pass
        _stop(self.process)


# -- measurements --------------------------------------------------------------------------


def _label(mode: str, nodelay: bool) -> str:
    return f"{mode}, TCP_NODELAY" if nodelay else mode


@dataclass
class Row:
    """One path (taskevents or raw) in one server set-up, one client count, one pattern."""

    mode: str
    nodelay: bool
    clients: int
    pattern: str  # "paced" or "burst"
    path: str
    events_per_phase: int
    rate: float  # requested events/s (0: back to back)
    phases: int = 0
    expected: int = 0
    received: int = 0
    emitted: int = 0
    loop_s: float = 0.0
    drained_s: float = 0.0
    emit_call_us_medians: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    delivered_per_s: float | None = None
    latency: dict[str, Any] = field(default_factory=dict)
    loadgen_cpu_ms: float = 0.0
    loadgen_wall_ms: float = 0.0
    timed_out: int = 0
    seq_errors: int = 0
    disconnects: int = 0
    payload_bytes: int = 0
    ratio: float | None = None
    #: taskevents/raw delivered ev/s of each round (the two phases of one round run
    #: back to back), for the spread.
    round_ratios: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Per phase: window_ms, received, loop_s, drained_s, server_cpu_s (for the JSON).
    phase_log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return _label(self.mode, self.nodelay)

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def sent_per_s(self) -> float | None:
        return self.emitted / self.loop_s if self.loop_s > 0 else None

    @property
    def emit_call_us(self) -> float | None:
        medians = self.emit_call_us_medians
        return statistics.median(medians) if medians else None

    @property
    def cpu_us_per_delivery(self) -> float | None:
        return self.server_cpu_s / self.received * 1e6 if self.received else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            label=self.label,
            lost=self.lost,
            sent_per_s=self.sent_per_s,
            emit_call_us=self.emit_call_us,
            server_cpu_us_per_delivery=self.cpu_us_per_delivery,
        )
        return data


@dataclass
class Settings:
    modes: list[str]
    clients: list[int]
    rate: float
    seconds: float
    rounds: int
    burst_deliveries: int
    flood_events: int
    flood_clients: int
    flood_yield_every: int
    nodelay_check: bool
    quick: bool


def _even(value: float) -> int:
    return max(2, int(value) + int(value) % 2)


class Runner:
    """Runs the phases against one server."""

    def __init__(self, server: Server, progress: Callable[[str], None]) -> None:
        self.server = server
        self.progress = progress
        self.counter = itertools.count(1)

    def phase(self, loadgen: LoadGen, row: Row | None, kind: str, events: int, rate: float) -> None:
        """One run of ``events`` lifecycle events on ``kind``'s path; adds to ``row``."""
        phase_id = f"p{next(self.counter)}"
        group = f"{kind}/{'warmup' if row is None else row.pattern}"
        subject = TE_SUBJECT if kind == TASKEVENTS else RAW_SUBJECT
        timeout = (events / rate if rate > 0 else 0.0) + PHASE_SLACK
        cpu_before = self.server.cpu()
        loadgen.send(
            {
                "cmd": "arm",
                "id": phase_id,
                "group": group,
                "subject": subject,
                "timeout_ms": int(timeout * 1000),
            }
        )
        loadgen.expect("armed", 10)
        sent = self.server.post(
            "/bench/run", {"kind": kind, "events": events, "rate": rate}, timeout + 5
        )
        done = loadgen.expect("done", timeout + 10)
        cpu_after = self.server.cpu()
        if row is None:
            return
        row.phases += 1
        row.expected += events * loadgen.clients
        row.timed_out += int(bool(done["timed_out"]))
        if "error" in sent:
            row.errors.append(str(sent["error"]))
            return
        row.emitted += int(sent["emitted"])
        row.emit_call_us_medians.append(float(sent["emit_call_us_median"]))
        row.loop_s += float(sent["loop_s"])
        row.drained_s += float(sent["drained_s"])
        row.payload_bytes = int(sent["payload_bytes"])
        row.server_cpu_s += cpu_after - cpu_before
        row.phase_log.append(
            {
                "received": done["received"],
                "window_ms": done["window_ms"],
                "loop_s": sent["loop_s"],
                "drained_s": sent["drained_s"],
                "server_cpu_s": cpu_after - cpu_before,
                "loadgen_cpu_ms": done["loadgen_cpu_ms"],
            }
        )

    def finish_row(self, loadgen: LoadGen, row: Row) -> None:
        loadgen.send({"cmd": "report", "group": f"{row.path}/{row.pattern}"})
        report = loadgen.expect("report", 30)
        row.received = int(report.get("received", 0))
        row.delivered_per_s = report.get("delivered_per_s")
        row.latency = report.get("latency", {})
        row.loadgen_cpu_ms = float(report.get("loadgen_cpu_ms", 0.0))
        row.loadgen_wall_ms = float(report.get("loadgen_wall_ms", 0.0))
        row.seq_errors = int(report.get("seq_errors", 0))
        row.disconnects = int(report.get("disconnects", 0))

    def compare(
        self,
        loadgen: LoadGen,
        mode: str,
        nodelay: bool,
        pattern: str,
        events: int,
        rate: float,
        rounds: int,
    ) -> list[Row]:
        """Both paths, ``rounds`` phases each, alternating which goes first (ABBA...)."""
        rows = {
            kind: Row(mode, nodelay, loadgen.clients, pattern, kind, events, rate)
            for kind in (TASKEVENTS, RAW)
        }
        for round_ in range(rounds):
            order = (RAW, TASKEVENTS) if round_ % 2 == 0 else (TASKEVENTS, RAW)
            for kind in order:
                self.progress(
                    f"{_label(mode, nodelay)}: {loadgen.clients} clients, {pattern} {kind}, "
                    f"round {round_ + 1}/{rounds} ({events} events)"
                )
                self.phase(loadgen, rows[kind], kind, events, rate)
        for row in rows.values():
            self.finish_row(loadgen, row)
        te, raw = rows[TASKEVENTS], rows[RAW]
        if te.delivered_per_s and raw.delivered_per_s:
            te.ratio = te.delivered_per_s / raw.delivered_per_s
        for ours, theirs in zip(te.phase_log, raw.phase_log, strict=False):
            if ours["window_ms"] > 0 and theirs["window_ms"] > 0 and theirs["received"]:
                te.round_ratios.append(
                    (ours["received"] / ours["window_ms"])
                    / (theirs["received"] / theirs["window_ms"])
                )
        return [te, raw]

    def warm_up(self, loadgen: LoadGen, events: int) -> None:
        for kind in (RAW, TASKEVENTS):
            self.phase(loadgen, None, kind, events, 0.0)
        for kind in (RAW, TASKEVENTS):
            loadgen.send({"cmd": "report", "group": f"{kind}/warmup"})
            loadgen.expect("report", 30)

    def flood(self, loadgen: LoadGen, mode: str, events: int, yield_every: int) -> dict[str, Any]:
        how = f", a 1 ms sleep every {yield_every:,} calls" if yield_every else ""
        self.progress(f"{mode}: flood, {events:,} progress events{how}, {loadgen.clients} clients")
        phase_id = f"flood{next(self.counter)}"
        timeout = PHASE_SLACK + events / 10_000
        loadgen.send(
            {
                "cmd": "arm",
                "id": phase_id,
                "group": "flood",
                "subject": FLOOD_SUBJECT,
                "timeout_ms": int(timeout * 1000),
                "detail": True,
            }
        )
        loadgen.expect("armed", 10)
        cpu_before = self.server.cpu()
        sent: dict[str, Any] = self.server.post(
            "/bench/flood", {"events": events, "yield_every": yield_every}, timeout + 5
        )
        done = loadgen.expect("done", timeout + 10)
        cpu_after = self.server.cpu()
        loadgen.send({"cmd": "report", "group": "flood"})
        loadgen.expect("report", 30)
        snapshot = self.server.get(f"/api/tasks/{FLOOD_SUBJECT}")
        after = self.server.get("/bench/adapter")
        before = sent.pop("adapter_before", {})
        return {
            "mode": mode,
            "clients": loadgen.clients,
            "server": sent,
            "loadgen": done,
            "snapshot": {"seq": snapshot.get("seq"), "status": snapshot["status"].get("status")},
            "adapter": {key: after[key] - before.get(key, 0) for key in after},
            "server_cpu_s": cpu_after - cpu_before,
            "progress_interval": self.server.info.get("progress_interval"),
        }


def _connect(
    node: str, url: str, clients: int, result: dict[str, Any], progress: Callable[[str], None]
) -> LoadGen:
    """A connected load generator; one retry (a VM pause can fire its connect timeout)."""
    try:
        return LoadGen(node, url, clients)
    except BenchError as exc:
        result["warnings"].append(f"connecting {clients} clients failed, retrying once: {exc}")
        progress(f"connecting {clients} clients failed ({exc}); retrying once")
        return LoadGen(node, url, clients)


def run_setup(
    mode: str,
    nodelay: bool,
    clients: Sequence[int],
    settings: Settings,
    node: str,
    workdir: Path,
    progress: Callable[[str], None],
    *,
    floods: bool,
) -> dict[str, Any]:
    """Every measurement against one server (an async mode, with or without
    TCP_NODELAY)."""
    label = _label(mode, nodelay)
    result: dict[str, Any] = {
        "mode": mode,
        "nodelay": nodelay,
        "rows": [],
        "floods": [],
        "warnings": [],
        "loadgen": [],
    }
    progress(f"{label}: starting the server")
    server = Server(mode, workdir, tcp_nodelay=nodelay)
    flood_runs = []
    if floods and settings.flood_events > 0:
        flood_runs.append(0)
        if mode == "gevent" and settings.flood_yield_every > 0:
            flood_runs.append(settings.flood_yield_every)
    try:
        runner = Runner(server, progress)
        result["server"] = server.info
        result["wake_probe"] = server.get("/bench/probe", timeout=40.0)
        for count in clients:
            progress(f"{label}: connecting {count} clients")
            loadgen = _connect(node, server.url, count, result, progress)
            try:
                result["loadgen"].append(loadgen.ready)
                runner.warm_up(loadgen, 20 if settings.quick else 200)
                paced_events = _even(settings.rate * settings.seconds)
                result["rows"] += runner.compare(
                    loadgen, mode, nodelay, "paced", paced_events, settings.rate, settings.rounds
                )
                if settings.burst_deliveries > 0:
                    burst_events = min(MAX_BURST_EVENTS, _even(settings.burst_deliveries / count))
                    result["rows"] += runner.compare(
                        loadgen, mode, nodelay, "burst", burst_events, 0.0, settings.rounds
                    )
                if count == settings.flood_clients:
                    while flood_runs:
                        result["floods"].append(
                            runner.flood(loadgen, mode, settings.flood_events, flood_runs.pop(0))
                        )
            finally:
                result["warnings"] += loadgen.warnings
                loadgen.close()
        if flood_runs:
            progress(f"{label}: connecting {settings.flood_clients} clients for the flood")
            loadgen = _connect(node, server.url, settings.flood_clients, result, progress)
            try:
                result["loadgen"].append(loadgen.ready)
                while flood_runs:
                    result["floods"].append(
                        runner.flood(loadgen, mode, settings.flood_events, flood_runs.pop(0))
                    )
            finally:
                result["warnings"] += loadgen.warnings
                loadgen.close()
    finally:
        server.close()
    return result


# -- reporting -------------------------------------------------------------------------------


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]
) -> str:
    """A plain-text table, aligned, that is also valid Markdown."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(w) if r else cell.ljust(w)
            for cell, w, r in zip(cells, widths, right, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|".join(
        "-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, right, strict=True)
    )
    return "\n".join([line(header), f"|{rule}|", *(line(row) for row in rows)])


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


THROUGHPUT_HEADER = (
    "mode",
    "clients",
    "path",
    "sent ev/s",
    "delivered ev/s",
    "lost",
    "p50 ms",
    "p99 ms",
    "max ms",
    f"emit call {MICRO}s",
    f"server CPU {MICRO}s/delivery",
    "te/raw",
    "te/raw by round",
)


def throughput_table(rows: Sequence[Row]) -> str:
    cells = []
    for row in rows:
        lat = row.latency
        cells.append(
            (
                row.label,
                str(row.clients),
                row.path,
                _num(row.sent_per_s),
                _num(row.delivered_per_s),
                str(row.lost),
                _ms(lat.get("p50_ms")),
                _ms(lat.get("p99_ms")),
                _ms(lat.get("max_ms")),
                _num(row.emit_call_us, 1),
                _num(row.cpu_us_per_delivery, 1),
                "-" if row.ratio is None else f"{row.ratio:.2f}{TIMES}",
                (
                    f"{min(row.round_ratios):.2f}-{max(row.round_ratios):.2f}"
                    if row.round_ratios
                    else "-"
                ),
            )
        )
    right = (False, True, False, *([True] * 10))
    return format_table(THROUGHPUT_HEADER, cells, right)


@dataclass
class FloodSummary:
    mode: str
    clients: int
    progress_events: int
    yield_every: int
    per_call_us: float
    bare_per_call_us: float
    loop_s: float
    progress_min: int
    progress_max: int
    #: The longest client window: from its first message (started) to its last (completed).
    window_s: float
    #: Progress updates per second over the window, the highest over clients; None when
    #: every window is shorter than 0.1 s (the whole flood reached the client at once).
    progress_per_s: float | None
    #: 1 / the mean gap between consecutive progress updates, leaving out the last one
    #: (flushed at once before task_completed), the highest over clients; None with
    #: fewer than 3 updates.
    steady_per_s: float | None
    #: The shortest gap between consecutive progress updates (same set), over clients.
    min_gap_ms: float | None
    lifecycle_ok: bool
    completed_ms: float | None  # the highest over clients
    started_ms: float | None
    final_seq_expected: int
    snapshot_seq: int | None
    snapshot_status: str | None
    clients_last_seq: list[int]
    timed_out: bool
    adapter: dict[str, int]
    server_cpu_s: float

    @property
    def variant(self) -> str:
        return f"1 ms sleep every {self.yield_every:,}" if self.yield_every else "tight loop"

    @property
    def final_ok(self) -> bool:
        return (
            self.snapshot_seq == self.final_seq_expected
            and self.snapshot_status == "idle"
            and all(seq == self.final_seq_expected for seq in self.clients_last_seq)
        )

    @property
    def rate_ok(self) -> bool:
        return self.steady_per_s is None or self.steady_per_s <= TARGET_PROGRESS_PER_S


def summarize_flood(flood: dict[str, Any]) -> FloodSummary:
    server, loadgen = flood["server"], flood["loadgen"]
    if "error" in server:
        raise BenchError(f"flood in {flood['mode']} mode: {server['error']}")
    clients = loadgen.get("clients", [])
    counts = [c["by_type"].get("task_progress", 0) for c in clients] or [0]
    windows = [c["window_ms"] / 1000.0 for c in clients] or [0.0]
    rates = [n / w for n, w in zip(counts, windows, strict=True) if w >= 0.1]
    steady: list[float] = []
    gaps: list[float] = []
    for c in clients:
        times = c["progress_ms"][:-1]  # the last one goes at once before task_completed
        if len(times) >= 2:
            span = times[-1] - times[0]
            steady.append((len(times) - 1) / (span / 1000.0) if span > 0 else float("inf"))
            gaps.append(min(b - a for a, b in itertools.pairwise(times)))
    lifecycle_ok = len(clients) == flood["clients"] and all(
        c["by_type"].get("task_started", 0) == 1 and c["by_type"].get("task_completed", 0) == 1
        for c in clients
    )
    completed = [v for c in clients for v in c["completed_latency_ms"]]
    started = [v for c in clients for v in c["started_latency_ms"]]
    return FloodSummary(
        mode=flood["mode"],
        clients=flood["clients"],
        progress_events=int(server["progress_events"]),
        yield_every=int(server["yield_every"]),
        per_call_us=float(server["per_call_us"]),
        bare_per_call_us=float(server["bare_per_call_us"]),
        loop_s=float(server["loop_s"]),
        progress_min=min(counts),
        progress_max=max(counts),
        window_s=max(windows),
        progress_per_s=max(rates) if rates else None,
        steady_per_s=max(steady) if steady else None,
        min_gap_ms=min(gaps) if gaps else None,
        lifecycle_ok=lifecycle_ok,
        completed_ms=max(completed) if completed else None,
        started_ms=max(started) if started else None,
        final_seq_expected=int(server["final_seq"]),
        snapshot_seq=flood["snapshot"]["seq"],
        snapshot_status=flood["snapshot"]["status"],
        clients_last_seq=[int(c["last_seq"]) for c in clients],
        timed_out=bool(loadgen.get("timed_out")),
        adapter=flood["adapter"],
        server_cpu_s=float(flood["server_cpu_s"]),
    )


FLOOD_HEADER = (
    "mode",
    "loop",
    f"emitter {MICRO}s/call",
    f"core alone {MICRO}s/call",
    "loop s",
    "progress rcvd/client",
    "window s",
    "progress/s",
    "steady/s",
    "min gap ms",
    "started+completed at every client",
    "started ms",
    "completed ms",
    "final seq: snapshot / clients / expected",
    "status",
)


def flood_table(floods: Sequence[FloodSummary]) -> str:
    cells = []
    for f in floods:
        received = (
            str(f.progress_min)
            if f.progress_min == f.progress_max
            else f"{f.progress_min}-{f.progress_max}"
        )
        seqs = ",".join(str(seq) for seq in sorted(set(f.clients_last_seq)))
        cells.append(
            (
                f.mode,
                f.variant,
                f"{f.per_call_us:.2f}",
                f"{f.bare_per_call_us:.2f}",
                f"{f.loop_s:.2f}",
                received,
                f"{f.window_s:.2f}",
                "-" if f.progress_per_s is None else f"{f.progress_per_s:.1f}",
                "-" if f.steady_per_s is None else f"{f.steady_per_s:.1f}",
                _ms(f.min_gap_ms),
                "yes" if f.lifecycle_ok else "NO",
                _ms(f.started_ms),
                _ms(f.completed_ms),
                f"{f.snapshot_seq} / {seqs} / {f.final_seq_expected}",
                str(f.snapshot_status),
            )
        )
    right = (False, False, *([True] * 12), False)
    return format_table(FLOOD_HEADER, cells, right)


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def throughput_targets(rows: Sequence[Row]) -> list[str]:
    """One line per server set-up and pattern: taskevents/raw for every client count."""
    lines = []
    keys = dict.fromkeys((row.label, row.pattern) for row in rows if row.path == TASKEVENTS)
    for label, pattern in keys:
        selected = [r for r in rows if (r.label, r.pattern, r.path) == (label, pattern, TASKEVENTS)]
        ratios = ", ".join(
            f"{r.ratio:.2f} ({r.clients} clients)" if r.ratio is not None else "none"
            for r in selected
        )
        passed = all(r.ratio is not None and r.ratio >= TARGET_RATIO for r in selected)
        lines.append(
            f"{_verdict(passed)} throughput, {label}, {pattern}: taskevents/raw delivered "
            f"ev/s = {ratios}; target >= {TARGET_RATIO} each"
        )
    return lines


def flood_targets(floods: Sequence[FloodSummary]) -> list[str]:
    lines = []
    for f in floods:
        name = f"flood, {f.mode}, {f.variant}"
        steady = "-" if f.steady_per_s is None else f"{f.steady_per_s:.1f}/s"
        lines.append(
            f"{_verdict(f.rate_ok)} {name}: progress updates per client: steady rate {steady} "
            f"(target <= {TARGET_PROGRESS_PER_S:g}/s; 1 / mean gap, without the final one "
            f"flushed before task_completed); {f.progress_max} in {f.window_s:.2f} s overall"
        )
        lines.append(
            f"{_verdict(f.lifecycle_ok)} {name}: task_started and task_completed received "
            f"once each by every one of the {f.clients} clients"
        )
        lines.append(
            f"{_verdict(f.completed_ms is not None and f.completed_ms < TARGET_LIFECYCLE_MS)} "
            f"{name}: task_completed latency, worst client = {_ms(f.completed_ms)} ms "
            f"(target < {TARGET_LIFECYCLE_MS:g} ms)"
        )
        lines.append(
            f"{_verdict(f.final_ok)} {name}: final state exact: snapshot seq "
            f"{f.snapshot_seq} status {f.snapshot_status}, clients' last seq "
            f"{sorted(set(f.clients_last_seq))}; expected seq {f.final_seq_expected}, idle"
        )
    return lines


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def environment(node: str | None) -> dict[str, Any]:
    versions = {
        name: _version(name)
        for name in (
            "taskevents",
            "flask",
            "flask-socketio",
            "python-socketio",
            "python-engineio",
            "simple-websocket",
            "werkzeug",
            "gevent",
        )
    }
    client = ROOT / "node_modules" / "socket.io-client" / "package.json"
    try:
        versions["socket.io-client"] = json.loads(client.read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        versions["socket.io-client"] = "not installed"
    node_version = "not found"
    if node:
        with suppress(OSError, subprocess.TimeoutExpired):
            node_version = subprocess.run(
                [node, "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "node": node_version,
        "versions": versions,
    }


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas: {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers: {text!r}")
    return values


def _mode_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [v for v in values if v not in MODES]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)}; got {text!r}")
    return values


def _parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="Socket.IO fan-out: taskevents' SocketIOAdapter against raw "
        "Flask-SocketIO emits, in threading and gevent modes, with N socket.io-client "
        "sockets in one Node process."
    )
    parser.add_argument(
        "--modes", type=_mode_list, default=None, help="threading,gevent (default: both)"
    )
    parser.add_argument(
        "--clients", type=_int_list, default=None, help="client counts (default 1,10,50)"
    )
    parser.add_argument(
        "--rate", type=float, default=None, help=f"paced events/s (default {DEFAULT_RATE:g})"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help=f"per paced phase (default {DEFAULT_SECONDS:g})",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"phases per path and pattern (default {DEFAULT_ROUNDS})",
    )
    parser.add_argument(
        "--burst-deliveries",
        type=int,
        default=None,
        help=f"events x clients per burst phase (default {DEFAULT_BURST_DELIVERIES:,}; "
        "0: no burst)",
    )
    parser.add_argument(
        "--flood-events",
        type=int,
        default=None,
        help=f"progress calls in the flood (default {DEFAULT_FLOOD_EVENTS:,}; 0: no flood)",
    )
    parser.add_argument(
        "--flood-clients",
        type=int,
        default=None,
        help=f"clients during the flood (default {DEFAULT_FLOOD_CLIENTS})",
    )
    parser.add_argument(
        "--flood-yield-every",
        type=int,
        default=None,
        help="gevent only: a second flood with a 1 ms sleep every N calls (default "
        f"{DEFAULT_FLOOD_YIELD_EVERY:,}; 0: no second flood)",
    )
    parser.add_argument(
        "--no-nodelay-check",
        action="store_true",
        help="skip the pass with TCP_NODELAY set, at the largest client count",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes for a smoke test (numbers are not meaningful); explicit options win",
    )
    parser.add_argument("--node", default=None, help="the node executable (default: on PATH)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)

    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name)
        if value is not None:
            return value
        return QUICK[name] if args.quick and name in QUICK else default

    settings = Settings(
        modes=list(pick("modes", list(MODES))),
        clients=list(pick("clients", list(DEFAULT_CLIENTS))),
        rate=float(pick("rate", DEFAULT_RATE)),
        seconds=float(pick("seconds", DEFAULT_SECONDS)),
        rounds=int(pick("rounds", DEFAULT_ROUNDS)),
        burst_deliveries=int(pick("burst_deliveries", DEFAULT_BURST_DELIVERIES)),
        flood_events=int(pick("flood_events", DEFAULT_FLOOD_EVENTS)),
        flood_clients=int(pick("flood_clients", DEFAULT_FLOOD_CLIENTS)),
        flood_yield_every=int(pick("flood_yield_every", DEFAULT_FLOOD_YIELD_EVERY)),
        nodelay_check=not args.no_nodelay_check,
        quick=bool(args.quick),
    )
    if settings.rate <= 0 or settings.seconds <= 0 or settings.rounds < 1:
        parser.error("--rate and --seconds must be > 0, --rounds >= 1")
    if min(settings.burst_deliveries, settings.flood_events, settings.flood_yield_every) < 0:
        parser.error("--burst-deliveries, --flood-events and --flood-yield-every must be >= 0")
    if settings.flood_clients < 1:
        parser.error("--flood-clients must be >= 1")
    return settings, args


def _print_results(
    settings: Settings, results: Sequence[dict[str, Any]], errors: list[str]
) -> tuple[list[Row], list[FloodSummary]]:
    rows: list[Row] = [row for result in results for row in result["rows"]]
    floods: list[FloodSummary] = []
    for result in results:
        for flood in result["floods"]:
            try:
                floods.append(summarize_flood(flood))
            except (BenchError, KeyError, TypeError, ValueError) as exc:
                errors.append(f"flood {result['mode']}: {type(exc).__name__}: {exc}")
    main_rows = [row for row in rows if not row.nodelay]
    nodelay_rows = [row for row in rows if row.nodelay]
    extensions = sorted({e for r in results for lg in r["loadgen"] for e in lg["ws_extensions"]})

    print()
    print("## Throughput and latency: taskevents vs raw emit, same server, same clients")
    print()
    print(
        "Events: task_started / task_completed alternately, never progress: the adapter "
        "never coalesces lifecycle events, so both paths must deliver every event and the "
        "counts compare like for like (progress, even with progress_interval=0, is "
        "replaced while it waits in the adapter's queue: fewer messages by design). "
        "Servers as socketio.run starts them (no TCP_NODELAY); WebSocket only; "
        f"permessage-deflate negotiated: "
        f"{'no' if extensions == [''] else extensions}."
    )
    for pattern, title in (
        ("paced", f"Paced: {settings.rate:g} events/s per path, {settings.seconds:g} s phases"),
        ("burst", "Burst: events emitted back to back, then drained"),
    ):
        selected = [row for row in main_rows if row.pattern == pattern]
        if selected:
            print()
            print(f"### {title}")
            print()
            print(throughput_table(selected))
    if nodelay_rows:
        print()
        print(
            "### The same with TCP_NODELAY set on the server's connections (Nagle off), "
            f"{nodelay_rows[0].clients} clients"
        )
        print()
        print(throughput_table(nodelay_rows))
    for result in results:
        probe = result.get("wake_probe", {})
        if not result["nodelay"] and "after_sleep_us" in probe:
            woken, warm = probe["after_sleep_us"], probe["back_to_back_us"]
            print(
                f"- {result['mode']} server: a 200-iteration Python loop takes {woken:.1f} "
                f"{MICRO}s right after a 10 ms sleep, {warm:.1f} {MICRO}s back to back "
                f"({woken / warm:.1f}{TIMES}): every paced event runs on a just-woken "
                "process, hence the paced emit call and CPU per delivery well above the "
                "burst ones."
            )
    print()
    print(
        "sent ev/s: events per second out of the server's emit loop; delivered ev/s: "
        "messages received by all clients together / (last receive - first send), pooled "
        "over the rounds; lost: expected - received; latency: receive time - the sent_ms "
        "the server put in the message just before the emit call; emit call: median time "
        "inside emitter.started/completed (taskevents: up to the adapter's queue) or "
        "socketio.emit (raw: the whole fan-out), wall clock in the emitting task; server "
        "CPU: the server process's CPU time (all threads) during the phases / messages "
        "delivered; te/raw: taskevents' delivered ev/s / raw's, pooled, and the lowest and "
        "highest of the rounds (each round runs both paths back to back)."
    )
    if floods:
        print()
        print(
            f"## Flood: {settings.flood_events:,} emitter.progress() calls on one subject, "
            f"as fast as they go, {floods[0].clients} clients, progress_interval "
            "0.1 s (the default)"
        )
        print()
        print(flood_table(floods))
        print()
        print(
            "emitter µs/call: the progress loop in the server / calls (time in sleep "
            "left out), SocketIOAdapter connected; core alone: the same calls on an Emitter "
            "with no receiver, best of 3 x 20,000; window: a client's first message "
            "(started) to its last (completed); progress/s: updates / window; steady/s: "
            "1 / the mean gap between updates, leaving out the last one (flushed at once "
            "before task_completed, whatever the interval); latencies: receive - sent_ms, "
            "worst client."
        )
        for f in floods:
            a = f.adapter
            print(
                f"- {f.mode}, {f.variant}: adapter received {a.get('received', 0):,}, "
                f"delivered {a.get('delivered', 0):,}, coalesced {a.get('coalesced', 0):,}, "
                f"dropped {a.get('dropped', 0)}; server CPU {f.server_cpu_s:.2f} s"
                + ("; the load generator TIMED OUT" if f.timed_out else "")
            )
    print()
    print("## Targets")
    print()
    for line in throughput_targets(main_rows) + throughput_targets(nodelay_rows):
        print(line)
    for line in flood_targets(floods):
        print(line)
    for row in rows:
        problems = []
        if row.lost:
            problems.append(f"{row.lost} messages lost")
        if row.timed_out:
            problems.append(f"{row.timed_out} phases timed out")
        if row.seq_errors and row.path == TASKEVENTS:
            problems.append(f"{row.seq_errors} seq out of order")
        if row.disconnects:
            problems.append(f"{row.disconnects} disconnects")
        problems += row.errors
        if problems:
            print(
                f"NOTE {row.label}, {row.pattern}, {row.clients} clients, {row.path}: "
                + "; ".join(problems)
            )
    for result in results:
        for warning in result["warnings"][:10]:
            print(f"NOTE {_label(result['mode'], result['nodelay'])}: load generator: {warning}")
    return rows, floods


def main(argv: Sequence[str] | None = None) -> int:
    settings, args = _parse_args(argv)
    node = args.node or shutil.which("node")
    env = environment(node)
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    print(
        f"socket.io fan-out: Python {env['python']} on {env['platform']} "
        f"({env['cpu_count']} CPUs); node {env['node']}; {versions}",
        flush=True,
    )
    print(
        f"modes {','.join(settings.modes)}; clients {','.join(map(str, settings.clients))}; "
        f"paced {settings.rate:g} events/s {TIMES} {settings.seconds:g} s {TIMES} "
        f"{settings.rounds} rounds per path; burst {settings.burst_deliveries:,} deliveries "
        f"per phase; flood {settings.flood_events:,} progress calls to "
        f"{settings.flood_clients} clients"
        + (" (quick: numbers are not meaningful)" if settings.quick else ""),
        flush=True,
    )
    load_before = _load()
    print(f"load average before: {load_before}", flush=True)

    def show(message: str) -> None:
        print(f"  ... {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    if node is None or not (ROOT / "node_modules" / "socket.io-client").is_dir():
        errors.append(
            "node and node_modules/socket.io-client are needed (./dev setup installs them)"
        )
    else:
        setups = [(mode, False, settings.clients, True) for mode in settings.modes]
        if settings.nodelay_check:
            setups += [(mode, True, [max(settings.clients)], False) for mode in settings.modes]
        with tempfile.TemporaryDirectory(prefix="socketio_bench-") as tmp:
            for mode, nodelay, clients, with_floods in setups:
                try:
                    results.append(
                        run_setup(
                            mode,
                            nodelay,
                            clients,
                            settings,
                            node,
                            Path(tmp),
                            show,
                            floods=with_floods,
                        )
                    )
                except (BenchError, OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                    errors.append(f"{_label(mode, nodelay)}: {type(exc).__name__}: {exc}")
    wall = time.perf_counter() - started

    rows, floods = _print_results(settings, results, errors)
    for error in errors:
        print(f"ERROR {error}")
    load_after = _load()
    print(f"load average after: {load_after} ({env['cpu_count']} CPUs)")
    print(f"wall time: {wall:.1f} s")

    if args.json:
        document = {
            "benchmark": "socketio_bench",
            "settings": asdict(settings),
            "environment": env,
            "load_average": {"before": load_before, "after": load_after},
            "results": [
                {
                    **{k: v for k, v in result.items() if k != "rows"},
                    "rows": [row.to_dict() for row in result["rows"]],
                }
                for result in results
            ],
            "flood_summaries": [
                {**asdict(f), "final_ok": f.final_ok, "rate_ok": f.rate_ok} for f in floods
            ],
            "targets": throughput_targets([r for r in rows if not r.nodelay])
            + throughput_targets([r for r in rows if r.nodelay])
            + flood_targets(floods),
            "errors": errors,
            "wall_time_s": wall,
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2, ensure_ascii=False)
            out.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
