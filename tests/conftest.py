"""Shared fixtures. Signals are process-global, so every test must leave them empty."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest

from taskevents import Emitter
from taskevents.signals import SIGNALS, subject_forgotten

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # In CI a skip means a missing install step: make it a failure.
    report = yield
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (CI must install everything): {report.longrepr}"
    return report


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
def emitter() -> Emitter:
    return Emitter(source="tests")
