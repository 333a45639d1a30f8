"""``taskevents tail``: watch a taskevents server's tasks from a terminal.

It connects to the server as any Socket.IO client does (see ``docs/protocol.rst``),
subscribes to the subjects asked for (or to every subject the server lists), and
shows each event as it comes: as a live view with a card and a progress bar per
subject on a terminal, as plain lines when the output is not one, or as JSON lines
(``--json``). With ``--wait SUBJECT`` it follows one task and exits with its outcome.
After a lost connection it connects again and resumes with ``since`` and ``stream``,
so no outcome is missed.

python-socketio and rich (the ``tail`` extra) are imported only when the command
runs, never by ``import taskevents``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from taskevents._checks import MAX_SUBJECT_LENGTH, is_valid_name
from taskevents._optional import require
from taskevents._urls import describe_url, printable
from taskevents.exceptions import MissingDependency

__all__ = [
    "EXIT_COMPLETED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "TailOptions",
    "run",
]

#: ``--wait``: the task completed (also: a watch that ended normally).
EXIT_COMPLETED = 0
#: ``--wait``: the task failed or was cancelled.
EXIT_FAILED = 1
#: The server cannot be reached, refused the connection, or does not let the client
#: watch the subject; also bad arguments.
EXIT_UNAVAILABLE = 2
#: ``--wait`` with ``--timeout``: no outcome in time (as GNU ``timeout``).
EXIT_TIMEOUT = 124
#: Ctrl+C.
EXIT_INTERRUPTED = 130

#: Seconds between two ``get_all_tasks`` when watching every subject, to pick up
#: subjects that appear later.
REFRESH_SECONDS = 30.0
#: Reconnection delays: doubling from the first to the last.
RETRY_FIRST, RETRY_MAX = 0.5, 5.0
#: The most subjects watched at once without ``--subject`` (a server lets a client
#: watch 100 by default).
MAX_SUBJECTS = 1000
OUTCOMES = {"task_completed": "completed", "task_failed": "failed", "task_cancelled": "cancelled"}
TOKEN_VARIABLE = "TASKEVENTS_TOKEN"


@dataclass
class TailOptions:
    """What ``taskevents tail`` was asked to do."""

    url: str
    subjects: list[str] = field(default_factory=list)
    token: str | None = None
    json: bool = False
    wait: str | None = None
    task_id: str | None = None
    timeout: float | None = None
    #: ``"live"``, ``"lines"`` or ``"json"``; None picks from ``json`` and the terminal.
    view: str | None = None


class Failure(Exception):
    """A reason to stop, with the exit code and one line for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- what is known of each subject -------------------------------------------------------


def _percent(progress: Any) -> float | None:
    if isinstance(progress, dict):
        value = progress.get("percent")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                return None
            return max(0.0, min(100.0, float(value)))
    return None


def _text(value: Any, limit: int = 200) -> str:
    """Outside text as it may be shown: printable, and not too long."""
    shown = printable(value if isinstance(value, str) else json.dumps(value, default=str))
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite (NaN, Infinity) as None: JSON has
    no such numbers, and strict readers (jq) refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json_line(line: dict[str, Any]) -> str:
    try:
        return json.dumps(line, default=str, allow_nan=False)
    except ValueError:  # a NaN or an Infinity somewhere in what the server sent
        return json.dumps(_finite(line), default=str, allow_nan=False)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        return ": ".join(_text(part) for part in (kind, message) if part is not None)
    return "" if error is None else _text(error)


@dataclass
class SubjectView:
    """The client's picture of one subject: its last seq and the task it shows (the
    running one, else the last that ended)."""

    name: str
    seq: int | None = None
    stream: str | None = None
    status: str = "connecting"
    task_type: str | None = None
    task_id: str | None = None
    percent: float | None = None
    stage: str | None = None
    message: str | None = None
    outcome: str | None = None
    detail: str | None = None
    running: set[str] = field(default_factory=set)
    last_task_id: str | None = None
    last_outcome: str | None = None

    def apply_status(self, status: dict[str, Any], seq: int, stream: str | None) -> None:
        """Take a snapshot (``task_status``) as the whole truth."""
        self.seq, self.stream = seq, stream
        self.status = _text(status.get("status") or "idle", 32)
        running = status.get("running_tasks")
        self.running = {str(t.get("task_id")) for t in (running or []) if isinstance(t, dict)}
        last = status.get("last") if isinstance(status.get("last"), dict) else None
        self.last_task_id = str(last["task_id"]) if last and "task_id" in last else None
        self.last_outcome = _text(last.get("outcome"), 32) if last else None
        current = status.get("current") if isinstance(status.get("current"), dict) else None
        shown = current or last
        if shown is None:
            self.task_type = self.task_id = self.stage = self.message = None
            self.percent = None
            self.outcome = self.detail = None
            return
        self.task_type = _text(shown.get("task_type"), 64)
        self.task_id = str(shown.get("task_id"))
        progress = shown.get("progress")
        self.percent = _percent(progress)
        self._stage(progress)
        self.outcome = None if current else self.last_outcome
        self.detail = None
        if shown is last and last is not None:
            if self.outcome == "completed":
                self.percent = 100.0
            result = last.get("result")
            self.detail = (
                _error_text(last.get("error"))
                or (_text(last["reason"]) if last.get("reason") else None)
                or (_text(result, 120) if result is not None else None)
            )

    def _stage(self, progress: Any) -> None:
        if isinstance(progress, dict):
            stage, message = progress.get("stage"), progress.get("message")
            self.stage = _text(stage, 64) if stage is not None else None
            self.message = _text(message, 120) if message is not None else None
        else:
            self.stage = self.message = None

    def apply_update(self, update: dict[str, Any], seq: int) -> None:
        """Apply one ``task_status_update`` (its seq is greater than :attr:`seq`)."""
        self.seq = seq
        event = update.get("event")
        task_id = str(update.get("task_id"))
        if isinstance(update.get("status"), str):
            self.status = _text(update["status"], 32)
        if event == "task_started":
            self.running.add(task_id)
            self.task_type = _text(update.get("task_type"), 64)
            self.task_id = task_id
            self.percent = 0.0
            self.stage = self.message = self.outcome = self.detail = None
        elif event == "task_progress":
            if task_id == self.task_id or self.outcome is not None:
                self.task_id, self.outcome, self.detail = task_id, None, None
                self.task_type = _text(update.get("task_type"), 64)
                percent = _percent(update.get("progress"))
                self.percent = self.percent if percent is None else percent
                self._stage(update.get("progress"))
        elif event in OUTCOMES:
            self.running.discard(task_id)
            self.last_task_id, self.last_outcome = task_id, OUTCOMES[event]
            if task_id == self.task_id or not self.running:
                self.task_id = task_id
                self.task_type = _text(update.get("task_type"), 64)
                self.outcome = OUTCOMES[event]
                if event == "task_completed":
                    self.percent = 100.0
                    result = update.get("result")
                    self.detail = None if result is None else _text(result, 120)
                elif event == "task_failed":
                    self.detail = _error_text(update.get("error")) or None
                else:
                    reason = update.get("reason")
                    self.detail = _text(reason) if reason is not None else None


def describe_update(update: dict[str, Any]) -> str:
    """One event, as a line says it (without the subject)."""
    event = update.get("event")
    task = _text(update.get("task_type") or "task", 64)
    if event == "task_started":
        return f"{task} started (task {_text(update.get('task_id'), 64)})"
    if event == "task_progress":
        progress = _dict(update.get("progress"))
        parts = [task]
        percent = _percent(progress)
        if percent is not None:
            parts.append(f"{percent:.0f}%")
        if progress.get("stage") is not None:
            parts.append(f"[{_text(progress['stage'], 64)}]")
        if progress.get("message") is not None:
            parts.append(_text(progress["message"], 120))
        return " ".join(parts)
    if event == "task_completed":
        result = update.get("result")
        return f"{task} completed" + ("" if result is None else f": {_text(result)}")
    if event == "task_failed":
        return f"{task} failed: {_error_text(update.get('error')) or 'no error given'}"
    if event == "task_cancelled":
        reason = update.get("reason")
        return f"{task} cancelled" + ("" if reason is None else f": {_text(reason)}")
    return _text(event, 64)


def describe_view(view: SubjectView) -> str:
    """A subject's state, as a line says it (without the subject)."""
    if view.task_type is None:
        return f"{view.status}, no task yet"
    if view.outcome is None:
        shown = [f"{view.status}, {view.task_type} running"]
        if view.percent is not None:
            shown.append(f"{view.percent:.0f}%")
        if view.stage:
            shown.append(f"[{view.stage}]")
        if view.message:
            shown.append(view.message)
        return " ".join(shown)
    tail = f": {view.detail}" if view.detail else ""
    return f"{view.status}, last {view.task_type} {view.outcome}{tail}"


# -- outputs ------------------------------------------------------------------------------


class Output(Protocol):
    """Where events go: a live view, plain lines, or JSON lines."""

    def status(self, view: SubjectView, payload: dict[str, Any]) -> None: ...
    def update(self, view: SubjectView, payload: dict[str, Any]) -> None: ...
    def notice(self, text: str) -> None: ...
    def connection(self, text: str) -> None: ...
    def tick(self) -> None: ...
    def close(self) -> None: ...


def _stderr(text: str) -> None:
    print(f"taskevents tail: {text}", file=sys.stderr, flush=True)


class _LineOutput:
    """What the two line outputs share: notices on stderr, nothing to redraw."""

    def notice(self, text: str) -> None:
        _stderr(text)

    def connection(self, text: str) -> None:
        pass  # lost connections and resumes are notices; the rest is routine

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonLines(_LineOutput):
    """One JSON object per line on stdout: every ``task_status_update`` flattened
    (``event`` is the event type), every ``task_status`` with ``"event":
    "task_status"``. Notices go to stderr."""

    def status(self, view: SubjectView, payload: dict[str, Any]) -> None:
        self._write({"event": "task_status", **payload})

    def update(self, view: SubjectView, payload: dict[str, Any]) -> None:
        update = _dict(payload.get("update"))
        line = {k: v for k, v in payload.items() if k != "update"}
        self._write({**update, **line})

    def _write(self, line: dict[str, Any]) -> None:
        sys.stdout.write(_json_line(line) + "\n")
        sys.stdout.flush()


class PlainLines(_LineOutput):
    """One line per snapshot and per event on stdout, for pipes and logs."""

    def status(self, view: SubjectView, payload: dict[str, Any]) -> None:
        how = (
            " (resync)" if payload.get("resync") else " (resumed)" if payload.get("resumed") else ""
        )
        self._write(payload.get("timestamp"), view, describe_view(view) + how)

    def update(self, view: SubjectView, payload: dict[str, Any]) -> None:
        update = _dict(payload.get("update"))
        replayed = " (replayed)" if payload.get("replayed") else ""
        self._write(payload.get("timestamp"), view, describe_update(update) + replayed)

    def _write(self, timestamp: Any, view: SubjectView, text: str) -> None:
        clock = timestamp[11:19] if isinstance(timestamp, str) and len(timestamp) >= 19 else ""
        sys.stdout.write(f"{printable(clock)} {printable(view.name)}: {text}\n".lstrip())
        sys.stdout.flush()


class LiveView:
    """A card per subject, with its task, a progress bar, its stage and message, or how
    the last task ended; redrawn in place (rich's ``Live``)."""

    CARD_WIDTH = 38
    FRAME_SECONDS = 0.1

    def __init__(self, views: dict[str, SubjectView], url: str) -> None:
        require("rich", extra="tail", needed_by="taskevents tail")
        from rich.console import Console
        from rich.live import Live

        self.views = views
        self.url = url
        self.state = "connecting"
        self.console = Console()
        self.live = Live(
            console=self.console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.live.start()
        self.dirty = True
        self.drawn_at = 0.0
        self.tick()

    def status(self, view: SubjectView, payload: dict[str, Any]) -> None:
        self.dirty = True

    def update(self, view: SubjectView, payload: dict[str, Any]) -> None:
        self.dirty = True

    def notice(self, text: str) -> None:
        from rich.text import Text

        self.live.console.print(Text(printable(text), style="yellow"))
        self.dirty = True

    def connection(self, text: str) -> None:
        self.state = text
        self.dirty = True

    def tick(self) -> None:
        now = time.monotonic()
        if self.dirty and now - self.drawn_at >= self.FRAME_SECONDS:
            self.live.update(self.render(), refresh=True)
            self.dirty, self.drawn_at = False, now

    def close(self) -> None:
        self.live.update(self.render(), refresh=True)
        self.live.stop()

    def render(self) -> Any:
        from rich.columns import Columns
        from rich.console import Group
        from rich.text import Text

        cards = [self.card(view) for _, view in sorted(self.views.items())]
        footer = Text(f"{describe_url(self.url)}: {self.state}  (Ctrl+C quits)", style="dim")
        if not cards:
            return Group(Text("no subjects yet", style="dim"), footer)
        return Group(Columns(cards), footer)

    def card(self, view: SubjectView) -> Any:
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        styles = {"completed": "green", "failed": "red", "cancelled": "yellow"}
        grid = Table.grid(padding=(0, 1))
        grid.add_column()
        if view.task_type is None:
            grid.add_row(Text(f"{view.status} · no task yet", style="dim"))
        else:
            state = view.outcome or "running"
            head = Text(view.task_type, style="bold")
            head.append(f"  {state}", style=styles.get(state, "cyan"))
            grid.add_row(head)
            percent = view.percent or 0.0
            bar = Table.grid(padding=(0, 1))
            bar.add_column(width=self.CARD_WIDTH - 11)
            bar.add_column(justify="right", width=4)
            bar.add_row(
                ProgressBar(
                    total=100.0,
                    completed=percent,
                    width=self.CARD_WIDTH - 11,
                    complete_style=styles.get(state, "cyan"),
                    finished_style=styles.get(state, "green"),
                ),
                Text(f"{percent:.0f}%"),
            )
            grid.add_row(bar)
            if view.outcome is None:
                words = " ".join(
                    part
                    for part in (f"[{view.stage}]" if view.stage else "", view.message or "")
                    if part
                )
                grid.add_row(Text(words or " ", style="dim", overflow="ellipsis", no_wrap=True))
            else:
                grid.add_row(
                    Text(view.detail or " ", style="dim", overflow="ellipsis", no_wrap=True)
                )
        title = Text(printable(view.name), style="bold")
        status = Text(view.status, style="cyan" if view.status == "busy" else "dim")
        return Panel(grid, title=title, subtitle=status, width=self.CARD_WIDTH, padding=(0, 1))


# -- the Socket.IO client -------------------------------------------------------------------


def _client(socketio: Any, engineio: Any) -> Any:
    """A python-socketio client that handles messages in the order they arrive (the
    stock one starts a thread per message), without reconnecting by itself (the watcher
    does, to resubscribe with ``since``) and without a SIGINT handler of its own."""

    class InOrderEngineIO(engineio.Client):  # type: ignore[misc]
        def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
            kwargs.pop("run_async", None)
            return super()._trigger_event(event, *args, **kwargs)

        def disconnect(self, abort: bool = False, reason: Any = None) -> None:
            # Messages are handled on the read loop's thread: a disconnect that comes
            # from there (the server disconnected us) cannot wait for that thread.
            if threading.current_thread() is getattr(self, "read_loop_task", None):
                abort = True
            # Not every server answers the websocket closing handshake: wait briefly.
            ws = getattr(self, "ws", None)
            if ws is not None:
                close = ws.close
                ws.close = lambda *args, **kwargs: close(timeout=0.2)
            super().disconnect(abort=abort, reason=reason)

    class InOrderClient(socketio.Client):  # type: ignore[misc]
        def _engineio_client_class(self) -> type:
            return InOrderEngineIO

    return InOrderClient(reconnection=False, handle_sigint=False)


def _connect_error(exc: BaseException) -> str:
    """What went wrong, in a few words: the OS's reason when there is one, not the
    repr of a chain of requests' and urllib3's exceptions."""
    texts: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(texts) < 10:
        texts.append(str(cause.args[0] if cause.args else cause))
        cause = cause.__cause__ or cause.__context__
    text = " ".join(texts)
    tls = re.search(r"\[SSL: [A-Z_]+\] ([^'\"()]+)", text)
    if tls:
        return f"TLS: {_text(tls.group(1).strip(), 100)}"
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text) or re.search(
        r"(Name or service not known|nodename nor servname|timed out)", text
    )
    if found:
        return _text(found.group(1), 160)
    if "Unexpected status code" in texts[0]:
        return f"{_text(texts[0], 100)} (is it a taskevents server's URL?)"
    return _text(texts[0], 160)


def check_url(url: str) -> str:
    """The URL to connect to (``ws://`` and ``wss://`` become ``http://`` and
    ``https://``), or :class:`Failure`."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port out of range raises ValueError here
    except ValueError:
        raise Failure(EXIT_UNAVAILABLE, f"not a valid URL: {_text(url, 100)}") from None
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        raise Failure(
            EXIT_UNAVAILABLE,
            "expected the server's URL, http(s)://HOST[:PORT], got "
            + (describe_url(url) if parts.hostname else _text(url, 100)),
        )
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


class Watcher:
    """One ``taskevents tail`` run: connects, subscribes, follows, reconnects."""

    def __init__(self, options: TailOptions, output: Output | None = None) -> None:
        self.options = options
        self.url = check_url(options.url)
        for name in [*options.subjects, *([options.wait] if options.wait else [])]:
            if not is_valid_name(name, MAX_SUBJECT_LENGTH):
                raise Failure(
                    EXIT_UNAVAILABLE,
                    f"not a subject name: '{_text(name, 64)}' (1 to {MAX_SUBJECT_LENGTH} "
                    "characters, no control characters)",
                )
        self.socketio = require("socketio", extra="tail", needed_by="taskevents tail")
        engineio = require("engineio", extra="tail", needed_by="taskevents tail")
        require("websocket", extra="tail", needed_by="taskevents tail")
        self.wanted: list[str] = list(dict.fromkeys(options.subjects))
        if options.wait and options.wait not in self.wanted:
            self.wanted.append(options.wait)
        self.watch_all = not self.wanted
        self.views: dict[str, SubjectView] = {name: SubjectView(name) for name in self.wanted}
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.sio = _client(self.socketio, engineio)
        self._wire()
        self.output: Output = output or self._output()
        self.connected = False
        self.stream: str | None = None
        self.retry_at = 0.0
        self.retry_delay = RETRY_FIRST
        self.refresh_at = 0.0
        self.resubscribe_at: dict[str, float] = {}
        self.refusal: Any = None
        # --wait: the id of the task followed; "" until one has started
        self.follow: str | None = None
        self.result: int | None = None
        self.final = ""
        self.last_error = ""
        self.capped = False

    def _output(self) -> Output:
        view = self.options.view or (
            "json" if self.options.json else "live" if sys.stdout.isatty() else "lines"
        )
        if view == "json":
            return JsonLines()
        if view == "live":
            return LiveView(self.views, self.url)
        return PlainLines()

    def _wire(self) -> None:
        def put(kind: str) -> Callable[..., None]:
            def handler(*args: Any) -> None:
                self.inbox.put((kind, args[0] if args else None))

            return handler

        for event, kind in (
            ("connection_status", "connected"),
            ("task_status", "status"),
            ("task_status_update", "update"),
            ("all_tasks", "all"),
            ("error", "error"),
            ("unsubscribed", "unsubscribed"),
            ("disconnect", "disconnected"),
        ):
            self.sio.on(event, put(kind))

        def refused(*args: Any) -> None:
            self.refusal = args[0] if args else None

        self.sio.on("connect_error", refused)

    # -- connecting ------------------------------------------------------------------

    def _connect(self) -> None:
        """One connection attempt; raises :class:`Failure` when refused, or returns
        with :attr:`connected` false when the server cannot be reached."""
        token = self.options.token
        self.refusal = None
        try:
            self.sio.connect(
                self.url,
                headers={"Authorization": f"Bearer {token}"} if token else {},
                auth={"token": token} if token else None,
                wait_timeout=10,
            )
        except self.socketio.exceptions.ConnectionError as exc:
            if self.sio.failed_namespaces:
                why = self.refusal.get("message") if isinstance(self.refusal, dict) else None
                why = _text(why or self.refusal or "no reason given", 120)
                raise Failure(
                    EXIT_UNAVAILABLE, f"{describe_url(self.url)} refused the connection: {why}"
                ) from None
            self.last_error = _connect_error(exc)
            return
        except ValueError as exc:  # a URL engineio cannot use
            raise Failure(
                EXIT_UNAVAILABLE, f"cannot connect to {describe_url(self.url)}: {_text(exc)}"
            ) from None
        self.retry_delay = RETRY_FIRST

    def run(self) -> int:
        """Watch until done: the exit code. Ctrl+C is :data:`EXIT_INTERRUPTED`."""
        try:
            return self._run()
        except KeyboardInterrupt:
            self._stop()
            return EXIT_INTERRUPTED
        except Failure as failure:
            self._stop()
            _stderr(failure.message)
            return failure.code
        except BrokenPipeError:  # | head: the reader has what it wanted
            self._stop()
            with contextlib.suppress(Exception):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - flushed at exit
            return EXIT_COMPLETED

    def _stop(self) -> None:
        self.output.close()
        closing = threading.Thread(target=self._disconnect, daemon=True)
        closing.start()
        closing.join(2.0)

    def _disconnect(self) -> None:
        with contextlib.suppress(Exception):
            self.sio.disconnect()

    def _run(self) -> int:
        self.output.connection("connecting")
        self._connect()
        if not self.sio.connected:
            raise Failure(
                EXIT_UNAVAILABLE, f"cannot connect to {describe_url(self.url)}: {self.last_error}"
            )
        deadline = None if self.options.timeout is None else time.monotonic() + self.options.timeout
        while self.result is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise Failure(
                    EXIT_TIMEOUT,
                    f"no outcome for {printable(self.options.wait or '')} within "
                    f"{self.options.timeout:g} s",
                )
            if not self.sio.connected and not self.connected and now >= self.retry_at:
                self._reconnect()
            self._due(now)
            try:
                kind, payload = self.inbox.get(timeout=0.05)
            except queue.Empty:
                self.output.tick()
                continue
            self._handle(kind, payload)
            self.output.tick()
        self._stop()
        _stderr(self.final)
        return self.result

    def _reconnect(self) -> None:
        self.output.connection("reconnecting")
        self._connect()
        if not self.sio.connected:
            self.retry_at = time.monotonic() + self.retry_delay
            self.retry_delay = min(self.retry_delay * 2, RETRY_MAX)
            self.output.connection(f"reconnecting (last try: {self.last_error})")

    def _due(self, now: float) -> None:
        if not self.connected:
            return
        if self.watch_all and now >= self.refresh_at:
            self.refresh_at = now + REFRESH_SECONDS
            self._emit("get_all_tasks", {})
        for name, when in list(self.resubscribe_at.items()):
            if now >= when:
                del self.resubscribe_at[name]
                self._subscribe(name)

    def _subscribe(self, name: str) -> None:
        view = self.views.setdefault(name, SubjectView(name))
        payload: dict[str, Any] = {"config_name": name}
        if view.seq is not None:
            payload["since"] = view.seq
            if view.stream is not None:
                payload["stream"] = view.stream
        self._emit("subscribe_task", payload)

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        """Send, unless the connection has just gone: the reconnection subscribes again."""
        with contextlib.suppress(self.socketio.exceptions.SocketIOError):
            self.sio.emit(event, payload)

    # -- what the server sends ----------------------------------------------------------

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "disconnected":
            if self.connected:
                self.connected = False
                self.retry_at = time.monotonic() + RETRY_FIRST
                self.retry_delay = RETRY_FIRST
                self.output.connection("connection lost; reconnecting")
                self.output.notice(f"connection lost ({_text(payload, 60)}); reconnecting")
            return
        if not isinstance(payload, dict):
            return
        if kind == "connected":
            resuming = self.connected or self.stream is not None
            self.connected = True
            stream = payload.get("stream")
            self.stream = stream if isinstance(stream, str) else None
            self.output.connection("connected")
            if resuming:
                self.output.notice("connected again; resuming")
            for name in list(self.views):
                self._subscribe(name)
            if self.watch_all:
                self.refresh_at = 0.0
        elif kind == "all":
            for name in sorted(payload):
                if name in self.views or not is_valid_name(name, MAX_SUBJECT_LENGTH):
                    continue
                if len(self.views) >= MAX_SUBJECTS:
                    if not self.capped:
                        self.capped = True
                        self.output.notice(f"watching the first {MAX_SUBJECTS} subjects only")
                    break
                self._subscribe(name)
        elif kind == "status":
            self._status(payload)
        elif kind == "update":
            self._update(payload)
        elif kind == "error":
            self._error(payload)
        elif kind == "unsubscribed":
            self._unsubscribed(payload)

    def _status(self, payload: dict[str, Any]) -> None:
        name, seq, status = payload.get("config_name"), payload.get("seq"), payload.get("status")
        if not isinstance(name, str) or not isinstance(seq, int) or not isinstance(status, dict):
            return
        view = self.views.get(name)
        if view is None:
            return  # a subject not asked for: the server does not choose what is watched
        stream = payload.get("stream")
        view.apply_status(status, seq, stream if isinstance(stream, str) else self.stream)
        if payload.get("resync"):
            self.output.notice(f"{printable(name)}: could not resume; showing the current state")
        self.output.status(view, payload)
        if name == self.options.wait:
            self._follow_snapshot(view, resync=bool(payload.get("resync")))

    def _update(self, payload: dict[str, Any]) -> None:
        name, seq, update = payload.get("config_name"), payload.get("seq"), payload.get("update")
        if not isinstance(name, str) or not isinstance(seq, int) or not isinstance(update, dict):
            return
        view = self.views.get(name)
        if view is None or view.seq is None or seq <= view.seq:
            return  # before its snapshot, or already applied
        view.apply_update(update, seq)
        self.output.update(view, payload)
        if name == self.options.wait:
            self._follow_update(update)

    def _error(self, payload: dict[str, Any]) -> None:
        event, name = payload.get("event"), payload.get("config_name")
        message = _text(payload.get("message") or "an error", 200)
        if event == "subscribe_task" and isinstance(name, str) and name in self.views:
            retry = payload.get("retry_after")
            if (
                isinstance(retry, (int, float))
                and not isinstance(retry, bool)
                and math.isfinite(retry)
            ):
                self.resubscribe_at[name] = time.monotonic() + min(max(float(retry), 0.1), 60)
                return
            if name == self.options.wait:
                raise Failure(EXIT_UNAVAILABLE, message)
            self.output.notice(message)
            self.views.pop(name, None)
            if name in self.wanted:
                self.wanted.remove(name)
                if not self.wanted:
                    raise Failure(EXIT_UNAVAILABLE, "none of the subjects asked for can be watched")
            return
        if payload.get("reason") == "expired":
            self.output.notice(message)
            return
        self.output.notice(message)

    def _unsubscribed(self, payload: dict[str, Any]) -> None:
        name, reason = payload.get("config_name"), payload.get("reason")
        if not isinstance(name, str) or name not in self.views or reason is None:
            return
        if name == self.options.wait:
            raise Failure(
                EXIT_UNAVAILABLE,
                f"{printable(name)}: the server ended the subscription ({_text(reason, 40)})",
            )
        self.output.notice(
            f"{printable(name)}: the server ended the subscription ({_text(reason, 40)})"
        )
        self.views.pop(name, None)

    # -- --wait --------------------------------------------------------------------------

    def _follow_snapshot(self, view: SubjectView, *, resync: bool) -> None:
        wanted = self.options.task_id
        if self.follow is None:
            if wanted is not None:
                if wanted in view.running:
                    self.follow = wanted
                elif view.last_task_id == wanted:
                    self._finish(view.last_outcome)
                else:
                    raise Failure(
                        EXIT_UNAVAILABLE,
                        f"{printable(view.name)}: task {_text(wanted, 64)} is neither running "
                        "nor the last one to end",
                    )
            elif view.running:
                self.follow = view.task_id if view.task_id in view.running else min(view.running)
            else:
                self.follow = ""  # the next task to start
                self.output.notice(f"{printable(view.name)} is idle; waiting for a task to start")
            return
        if self.follow == "" or self.follow in view.running:
            return
        if view.last_task_id == self.follow:
            self._finish(view.last_outcome)
        elif resync:
            raise Failure(
                EXIT_UNAVAILABLE,
                f"{printable(view.name)}: lost track of the task (the server has restarted?)",
            )

    def _follow_update(self, update: dict[str, Any]) -> None:
        task_id, event = str(update.get("task_id")), update.get("event")
        if self.follow == "" and event == "task_started":
            self.follow = task_id
        elif task_id == self.follow and event in OUTCOMES:
            self._finish(OUTCOMES[str(event)])

    def _finish(self, outcome: str | None) -> None:
        self.result = EXIT_COMPLETED if outcome == "completed" else EXIT_FAILED
        view = self.views[self.options.wait or ""]
        self.final = f"{printable(view.name)}: {view.task_type or 'task'} {outcome}"


def run(options: TailOptions) -> int:
    """Run ``taskevents tail`` with these options; the exit code."""
    if options.token is None:
        options.token = os.environ.get(TOKEN_VARIABLE) or None
    try:
        watcher = Watcher(options)
    except Failure as failure:
        _stderr(failure.message)
        return failure.code
    except MissingDependency as missing:
        print(missing, file=sys.stderr)
        return EXIT_UNAVAILABLE
    return watcher.run()
