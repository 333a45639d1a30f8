"""The ``taskevents`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from taskevents.exceptions import MissingDependency


def _demo(args: argparse.Namespace) -> int:
    try:
        from taskevents.demo import create_app, serve
    except ImportError as exc:
        missing = MissingDependency(exc.name or "flask-socketio", "socketio", "taskevents demo")
        print(missing, file=sys.stderr)
        return 1
    if args.task_seconds <= 0:
        print("--task-seconds: expected a number of seconds > 0", file=sys.stderr)
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
    app, socketio = create_app(
        task_seconds=args.task_seconds, async_mode=args.async_mode, allowed_hosts=hosts
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host

    def ready() -> None:
        print(f"taskevents demo: open http://{shown}:{args.port}/ (Ctrl+C stops it)")
        print(
            f"answering the host names {hosts.describe()} (more with --allowed-host)",
            flush=True,
        )

    try:
        serve(app, socketio, args.host, args.port, ready=ready)
    except OSError as exc:
        print(f"cannot listen on {shown}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print("taskevents demo: stopped", flush=True)
    return 0


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
        choices=["threading", "gevent"],
        default="threading",
        help="Flask-SocketIO async mode (default: %(default)s)",
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
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.async_mode == "gevent":
            from gevent import monkey

            monkey.patch_all()
        return _demo(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    raise SystemExit(main())
