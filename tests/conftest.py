"""Shared fixtures. Signals are process-global, so every test must leave them empty."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING

import pytest

from taskevents import Emitter
from taskevents.signals import SIGNALS, subject_forgotten

if TYPE_CHECKING:
    from tests.support.socketio import Served

IN_CI = os.environ.get("CI", "").lower() == "true"
CI_ADVICE = "CI must install everything and run every test: ./dev test sets it all up"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # In CI a skip means a missing install step, and an xfail (failing or not) a test that
    # proves nothing: make both failures.
    report = yield
    if IN_CI and hasattr(report, "wasxfail"):
        reason = report.wasxfail
        outcome = "xfailed" if report.skipped else "xpassed"
        del report.wasxfail  # else it would still be shown as xfailed / xpassed
        report.outcome = "failed"
        report.longrepr = (
            f"{outcome} under CI=true, where xfail is not allowed: fix the test or the code, "
            f"and remove the xfail marker ({reason or 'no reason given'})"
        )
    elif IN_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true ({CI_ADVICE}): {_skip_reason(report)}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    # A skip while collecting (pytest.importorskip, or pytest.skip(allow_module_level=True)
    # at the top of a module) drops the whole module before pytest_runtest_makereport ever
    # sees a test of it: in CI, make it a collection error.
    report = yield
    if IN_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = (
            f"{collector.nodeid} skipped while collecting under CI=true ({CI_ADVICE}): "
            f"{_skip_reason(report)}"
        )
    return report


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: why")
        return str(longrepr[2])
    return str(longrepr)


@pytest.fixture(autouse=True)
def _no_leftover_receivers() -> Iterator[None]:
    before = {name: len(signal.receivers) for name, signal in SIGNALS.items()}
    before["subject-forgotten"] = len(subject_forgotten.receivers)
    yield
    after = {name: len(signal.receivers) for name, signal in SIGNALS.items()}
    for name in set(after) - set(before):  # declared during the test
        before[name] = 0
    after["subject-forgotten"] = len(subject_forgotten.receivers)
    assert after == before, "a test left receivers connected; close() its adapters"


@pytest.fixture
def server_kind() -> str:
    """Which server ``serve`` starts: "flask" (Flask-SocketIO), or, for the tests of a
    module marked ``both_servers``, each of "flask" and "asgi" (taskevents.asgi on
    uvicorn) in turn."""
    return "flask"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The protocol tests run unchanged against both servers; a test about Flask itself
    # is marked flask_only.
    definition = metafunc.definition
    if (
        "server_kind" in metafunc.fixturenames
        and definition.get_closest_marker("both_servers") is not None
        and definition.get_closest_marker("flask_only") is None
    ):
        metafunc.parametrize("server_kind", ["flask", "asgi"])


@pytest.fixture
def serve(server_kind: str) -> Iterator[Callable[..., Served]]:
    """``serve(**config)``: a Flask app with the extension on a live server, or (see
    ``server_kind``) taskevents.asgi on uvicorn."""
    from tests.support.socketio import serving  # only where used: it needs Flask

    yield from serving(server_kind)


@pytest.fixture
def emitter() -> Emitter:
    return Emitter(source="tests")
