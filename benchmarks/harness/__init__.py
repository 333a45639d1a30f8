"""The Socket.IO benchmark harness: taskevents' ``SocketIOAdapter`` against raw
Flask-SocketIO emits, same server, same clients.

The scenario scripts beside this package (``paced.py``, ``burst.py``, ``flood.py``,
``nodelay.py``, and ``socketio_bench.py`` for all of them) are thin: each names its
scenarios and calls :func:`harness.cli.main`. The pieces:

- :mod:`harness.config`: paths, subjects, defaults, targets, time limits;
- :mod:`harness.server`: the benchmark server (runs in a subprocess; gevent patches
  first), which emits on request from a Socket.IO background task;
- :mod:`harness.serving`: what the benchmark web processes share (options, background
  tasks, the watchdog, TCP_NODELAY under gevent);
- :mod:`harness.control`: the server subprocess and the Node load generator
  (``loadgen.mjs``), seen from the orchestrator;
- :mod:`harness.measure`: rounds, phases, rows, one server set-up's run, the flood
  summary;
- :mod:`harness.report`: tables, targets, the environment line;
- :mod:`harness.cli`: options, scenario selection, the run and its JSON document.

The Redis benchmark (``redis_bench.py``) builds on these with :mod:`harness.redis_common`,
:mod:`harness.redis_server`, :mod:`harness.redis_worker`, :mod:`harness.redis_control`
and :mod:`harness.redis_measure`. The ASGI benchmark (``asgi_bench.py``: the asyncio
adapter against raw ``AsyncServer.emit``, and the loop's lag) with
:mod:`harness.asgi_server`, :mod:`harness.asgi_measure`, :mod:`harness.asgi_report` and
:mod:`harness.asgi_cli`.

Nothing is imported here: the server subprocess imports :mod:`harness.server` (with
:mod:`harness.config` and :mod:`harness.serving`) and nothing else.
"""
