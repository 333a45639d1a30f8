"""The Socket.IO benchmark harness: taskevents' ``SocketIOAdapter`` against raw
Flask-SocketIO emits, same server, same clients.

The scenario scripts beside this package (``paced.py``, ``burst.py``, ``flood.py``,
``nodelay.py``, and ``socketio_bench.py`` for all of them) are thin: each names its
scenarios and calls :func:`harness.cli.main`. The pieces:

- :mod:`harness.config`: paths, subjects, defaults, targets, time limits;
- :mod:`harness.server`: the benchmark server (runs in a subprocess; gevent patches
  first), which emits on request from a Socket.IO background task;
- :mod:`harness.control`: the server subprocess and the Node load generator
  (``loadgen.mjs``), seen from the orchestrator;
- :mod:`harness.measure`: rounds, phases, rows, one server set-up's run, the flood
  summary;
- :mod:`harness.report`: tables, targets, the environment line;
- :mod:`harness.cli`: options, scenario selection, the run and its JSON document.

Nothing is imported here: the server subprocess imports :mod:`harness.server` alone.
"""
