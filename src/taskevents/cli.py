"""The ``taskevents`` command."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any

from taskevents.exceptions import MissingDependency, StoreUnavailable


def _demo(args: argparse.Namespace) -> int:
    asgi = args.async_mode == "asgi"
    if asgi:
        from taskevents._optional import require

        try:
            # uvicorn serves it: checked first, before the app is made (Redis, ...).
            for package in ("uvicorn", "socketio"):
                require(package, extra="asgi", needed_by="taskevents demo --async-mode asgi")
        except MissingDependency as error:
            print(error, file=sys.stderr)
            return 1
    else:
        try:
            from taskevents.demo import create_app, serve
        except ImportError as exc:
            missing = MissingDependency(exc.name or "flask-socketio", "socketio", "taskevents demo")
            print(missing, file=sys.stderr)
            return 1
    if args.task_seconds <= 0:
        print("--task-seconds: expected a number of seconds > 0", file=sys.stderr)
        return 2
    if args.redis_prefix is not None and args.redis_url is None:
        print("--redis-prefix: needs --redis-url", file=sys.stderr)
        return 2
    from taskevents._hosts import AllowedHosts

    try:
        hosts = AllowedHosts.serving(args.host, args.allowed_host)
    except ValueError as exc:
        print(f"--allowed-host: {exc}", file=sys.stderr)
        return 2
    log = logging.getLogger("taskevents")
    log.setLevel(logging.INFO)
    from taskevents.adapters.logging import console_handler

    log.addHandler(console_handler())
    log.propagate = False
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from taskevents.exceptions import ValidationError

    try:
        if asgi:
            from taskevents.demo_asgi import create_asgi_app
            from taskevents.demo_asgi import serve as serve_asgi

            run = functools.partial(
                serve_asgi,
                create_asgi_app(
                    task_seconds=args.task_seconds,
                    allowed_hosts=hosts,
                    redis_url=args.redis_url,
                    redis_prefix=args.redis_prefix,
                    metrics=args.metrics,
                ),
                args.host,
                args.port,
            )
        else:
            app, socketio = create_app(
                task_seconds=args.task_seconds,
                async_mode=args.async_mode,
                allowed_hosts=hosts,
                redis_url=args.redis_url,
                redis_prefix=args.redis_prefix,
                metrics=args.metrics,
            )
            run = functools.partial(serve, app, socketio, args.host, args.port)
    except ValidationError as exc:
        option = {
            "TASKEVENTS_REDIS_URL": "--redis-url",
            "TASKEVENTS_REDIS_PREFIX": "--redis-prefix",
            "redis_url": "--redis-url",
            "redis_prefix": "--redis-prefix",
        }
        name = option.get(exc.field, exc.field)
        print(f"{name}: expected {exc.expected}, got {exc.got!r}", file=sys.stderr)
        return 2
    except MissingDependency as exc:
        print(exc, file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        text = str(exc).removeprefix("TASKEVENTS_REDIS_URL: ").removeprefix("redis_url: ")
        print(f"taskevents demo: --redis-url: {text}", file=sys.stderr)
        return 1
    shown = f"[{args.host}]" if ":" in args.host else args.host

    def ready() -> None:
        print(f"taskevents demo: open http://{shown}:{args.port}/ (Ctrl+C stops it)")
        if args.redis_url is not None:
            from taskevents._urls import describe_url

            print(
                f"sharing configs, tasks and updates through {describe_url(args.redis_url)} "
                f"(prefix {args.redis_prefix or 'taskevents'!r})"
            )
        print(
            f"answering the host names {hosts.describe()} (more with --allowed-host)",
            flush=True,
        )

    try:
        run(ready=ready)
    except OSError as exc:
        print(f"cannot listen on {shown}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print("taskevents demo: stopped", flush=True)
    return 0


def _open_outbox(path: str) -> Any:
    from pathlib import Path

    from taskevents.adapters.outbox import OutboxError, SQLiteOutbox

    if not Path(path).is_file():
        raise OutboxError(f"--outbox: no outbox file at {path!r}")
    return SQLiteOutbox(path, create=False)  # never creates or converts a file


def _missing_ids(ids: list[int], found: int) -> str:
    return (
        f"{len(ids) - found} of the IDs given are no dead letter of this outbox (an ID is "
        "the first column of `taskevents webhooks dead`)"
    )


def _row_id(text: str) -> int:
    """A whole number from 1 to 2**63 - 1 (what SQLite can hold), for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a dead letter's number (the first column of `taskevents webhooks "
            f"dead`), got {text!r}"
        ) from None
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to 2**63-1, got {text}")
    return value


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _webhooks(args: argparse.Namespace) -> int:
    from taskevents.adapters.outbox import OutboxError

    if args.action in ("retry", "purge") and not (args.ids or args.all):
        print(f"taskevents webhooks {args.action}: give dead letter IDs, or --all", file=sys.stderr)
        return 2
    if args.action in ("retry", "purge") and args.ids and args.all:
        print(f"taskevents webhooks {args.action}: IDs or --all, not both", file=sys.stderr)
        return 2
    try:
        outbox = _open_outbox(args.outbox)
    except OutboxError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        return _webhooks_action(outbox, args)
    finally:
        outbox.close()


def _webhooks_action(outbox: Any, args: argparse.Namespace) -> int:
    from taskevents._urls import describe_url, printable

    def show(target: str) -> str:
        # An endpoint's path may hold a token; an AWS target (sqs:..., sns:...,
        # eventbridge:...) holds none and is shown whole.
        if args.full_urls or not target.startswith(("http://", "https://")):
            return printable(target)
        return describe_url(target)

    ids = args.ids or None
    if args.action == "status":
        stats = {show(target): s for target, s in outbox.stats().items()}
        if args.json:
            print(json.dumps(stats, indent=2, sort_keys=True))
            return 0
        if not stats:
            print("nothing pending, retrying or dead, and nothing delivered yet")
            return 0
        width = max(len(t) for t in stats)
        print(f"{'endpoint':<{width}}  pending  retrying  dead  delivered  state")
        for target, s in sorted(stats.items()):
            state = f"disabled: {printable(s['disabled'])}" if s["disabled"] else "enabled"
            print(
                f"{target:<{width}}  {s['pending']:>7}  {s['retrying']:>8}  "
                f"{s['dead']:>4}  {s['delivered']:>9}  {state}"
            )
            if s.get("last_error"):
                print(f"{'':<{width}}  retrying after: {printable(s['last_error'])}")
        return 0
    if args.action == "dead":
        letters = outbox.dead_letters(limit=args.limit, ids=ids)
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "id": d.id,
                            "endpoint": show(d.target),
                            "subject": d.subject,
                            "event_id": d.event_id,
                            "type": d.event_type,
                            "created": _when(d.created),
                            "dead_at": _when(d.dead_at),
                            "reason": d.reason,
                            "attempts": [
                                {
                                    "at": _when(a.at),
                                    "status": a.status,
                                    "duration": a.duration,
                                    "error": a.error,
                                    "response": a.response,
                                }
                                for a in d.attempts
                            ],
                            "body": d.body.decode("utf-8", "replace"),
                        }
                        for d in letters
                    ],
                    indent=2,
                )
            )
            return 0
        if not letters:
            print("no dead letters")
            return 0
        for d in letters:
            print(
                f"{d.id}  {_when(d.dead_at)}  {show(d.target)}  {printable(d.event_type)} "
                f"{d.subject!r} (event {printable(d.event_id)}), {len(d.attempts)} attempt"
                f"{'' if len(d.attempts) == 1 else 's'}: {printable(d.reason)}"
            )
        return 0
    if args.action == "retry":
        count = outbox.retry_dead(ids, time.time())
        print(f"{count} dead letter{'' if count == 1 else 's'} queued again")
        if ids and count < len(ids):
            print(_missing_ids(ids, count), file=sys.stderr)
            return 1
        return 0
    if args.action == "purge":
        count = outbox.purge_dead(ids)
        print(f"{count} dead letter{'' if count == 1 else 's'} deleted")
        if ids and count < len(ids):
            print(_missing_ids(ids, count), file=sys.stderr)
            return 1
        return 0
    if args.action == "enable":
        if not args.url:
            print("taskevents webhooks enable: give the endpoint's URL", file=sys.stderr)
            return 2
        done = outbox.enable(args.url)
        if done:
            print(f"{show(args.url)} enabled")
            return 0
        if args.url in outbox.stats():
            print(f"{show(args.url)} was not disabled: nothing to do")
            return 0  # the state asked for is the state it is in
        print(
            f"no endpoint or target {show(args.url)} in this outbox (status --full-urls "
            "lists them, whole)",
            file=sys.stderr,
        )
        return 1
    return 2  # pragma: no cover - argparse rejects unknown actions


def _add_tail(commands: Any) -> None:
    tail = commands.add_parser(
        "tail",
        help="watch a taskevents server's tasks live: cards and progress bars, JSON lines, "
        "or --wait for one task's outcome",
        description="Connect to a taskevents server over Socket.IO and show its subjects' "
        "tasks as they run: on a terminal, a card and a progress bar per subject, updated "
        "in place; otherwise one line per event (--json: one JSON object per line). After a "
        "lost connection it connects again and resumes where it left off. Exit codes: 0 "
        "(--wait: the task completed), 1 (--wait: it failed or was cancelled), 2 (cannot "
        "connect, refused, unknown subject, bad arguments), 124 (--timeout), 130 (Ctrl+C).",
    )
    tail.add_argument("url", metavar="URL", help="the server, http(s)://HOST[:PORT]")
    tail.add_argument(
        "--subject",
        action="append",
        default=[],
        metavar="S",
        help="watch subject S (repeatable). Default: every subject the server lists",
    )
    tail.add_argument(
        "--token",
        metavar="T",
        help='send token T (as the Socket.IO auth {"token": T} and an Authorization: '
        "Bearer header). Better: set TASKEVENTS_TOKEN, which stays out of shell history "
        "and ps",
    )
    tail.add_argument("--json", action="store_true", help="print one JSON object per line")
    tail.add_argument(
        "--wait",
        metavar="SUBJECT",
        help="follow the task running on SUBJECT (or, when it is idle, the next one to "
        "start) and exit with its outcome: 0 completed, 1 failed or cancelled",
    )
    tail.add_argument(
        "--task-id",
        metavar="ID",
        help="with --wait: follow this task (as POST /api/tasks answered it); one that has "
        "already ended gives its outcome at once",
    )
    tail.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="with --wait: give up after SECONDS, with exit code 124",
    )


def _tail(args: argparse.Namespace) -> int:
    if args.wait is None and (args.task_id is not None or args.timeout is not None):
        print("taskevents tail: --task-id and --timeout need --wait", file=sys.stderr)
        return 2
    if args.timeout is not None and not args.timeout > 0:
        print("taskevents tail: --timeout: expected a number of seconds > 0", file=sys.stderr)
        return 2
    from taskevents.tail import TailOptions, run

    return run(
        TailOptions(
            url=args.url,
            subjects=args.subject,
            token=args.token,
            json=args.json,
            wait=args.wait,
            task_id=args.task_id,
            timeout=args.timeout,
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskevents", description="taskevents tools")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="serve the dashboard with simulated configs aws01, aws02, aws03"
    )
    demo.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    demo.add_argument(
        "--port", type=int, default=5000, help="port to listen on (default: %(default)s)"
    )
    demo.add_argument(
        "--task-seconds",
        type=float,
        default=5.0,
        help="how long a simulated task runs (default: %(default)s)",
    )
    demo.add_argument(
        "--async-mode",
        choices=["threading", "gevent", "asgi"],
        default="threading",
        help="Flask-SocketIO async mode (default: %(default)s), or asgi: python-socketio's "
        "AsyncServer under uvicorn, without Flask (needs taskevents[asgi])",
    )
    demo.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for the host NAME (repeatable; *.example.com for its "
        "subdomains). Default: only the --host address and localhost, 127.0.0.1, [::1]; "
        "with --host 0.0.0.0 or ::, also this machine's name and any IP address. "
        "Other Host headers get 400, against DNS rebinding",
    )
    demo.add_argument(
        "--redis-url",
        metavar="URL",
        help="keep the configs' state on this Redis server (redis://HOST:PORT/DB; needs "
        "taskevents[redis]): several demos, on different ports, with the same URL and "
        "prefix share configs, tasks and live updates. Default: in memory",
    )
    demo.add_argument(
        "--metrics",
        action="store_true",
        help="also serve Prometheus metrics at /metrics (needs taskevents[metrics])",
    )
    demo.add_argument(
        "--redis-prefix",
        metavar="P",
        help="the Redis key prefix; demos with another prefix share nothing (default: taskevents)",
    )
    hooks = commands.add_parser(
        "webhooks",
        aliases=["outbox"],
        help="inspect an outbox (webhooks, AWS): its targets, dead letters; retry or purge them",
        description="Inspect and repair an outbox (the SQLite file a WebhookAdapter or an "
        "AWS adapter writes; `taskevents outbox` is the same command). status: per endpoint "
        "or AWS target, rows pending, retrying, dead and delivered. dead: the dead letters "
        "with their last error. retry: queue dead letters again (and re-enable their "
        "targets). purge: delete dead letters. enable: re-enable a target disabled by a 410, "
        "or by AWS (a missing queue, access denied).",
    )
    hooks.add_argument("action", choices=["status", "dead", "retry", "purge", "enable"])
    hooks.add_argument(
        "ids", nargs="*", type=_row_id, metavar="ID", help="dead letter ids (dead, retry, purge)"
    )
    hooks.add_argument("--outbox", required=True, metavar="PATH", help="the outbox file")
    hooks.add_argument("--all", action="store_true", help="every dead letter (retry, purge)")
    hooks.add_argument(
        "--url",
        "--target",
        dest="url",
        help="the endpoint URL or AWS target (as status shows it) to re-enable (enable)",
    )
    hooks.add_argument(
        "--limit", type=_row_id, default=100, help="most dead letters listed (default 100)"
    )
    hooks.add_argument("--json", action="store_true", help="print JSON (status, dead)")
    hooks.add_argument(
        "--full-urls",
        action="store_true",
        help="show endpoint URLs whole (by default their path is hidden: it may hold a token)",
    )
    _add_tail(commands)
    args = parser.parse_args(argv)
    if args.command == "tail":
        return _tail(args)
    if args.command in ("webhooks", "outbox"):
        try:
            code = _webhooks(args)
            sys.stdout.flush()  # here, where a closed pipe is caught
            return code
        except BrokenPipeError:  # | head: the reader has what it wanted
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - flushed at exit
            return 0
    if args.command == "demo":
        if args.async_mode == "gevent":
            from gevent import monkey

            monkey.patch_all()
        return _demo(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    raise SystemExit(main())
