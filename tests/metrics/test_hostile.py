"""``/metrics`` and :mod:`taskevents.metrics` under hostile use: scrape floods, adapters
that misbehave, odd adapters."""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from taskevents import Emitter, MemoryStateStore, ValidationError
from taskevents.asgi import TaskEvents as ASGITaskEvents
from taskevents.metrics import _enabled, enable
from taskevents.redis import RedisStateStore
from tests.metrics.support import fetch
from tests.metrics.test_redis_metrics import REDIS_URL, prefix  # noqa: F401 - the fixture
from tests.support.socketio import LiveASGIServer


@pytest.fixture(autouse=True)
def _close_metrics() -> Iterator[None]:
    yield
    for metrics in list(_enabled.values()):
        metrics.close()


class SlowStats:
    """An adapter whose ``stats`` blocks until released (a durable adapter whose outbox
    does not answer), counting the reads in progress."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.reading = 0
        self.most = 0

    @property
    def stats(self) -> dict[str, int]:
        with self.lock:
            self.reading += 1
            self.most = max(self.most, self.reading)
        try:
            self.release.wait(15)
        finally:
            with self.lock:
                self.reading -= 1
        return {"delivered": 0, "errors": 0, "queued": 0}


def test_a_scrape_flood_cannot_starve_the_asgi_app_of_threads(prefix: str) -> None:  # noqa: F811
    """Defect: the ASGI app renders each ``/metrics`` request in its own
    ``asyncio.to_thread`` (the loop's default executor, a few threads), with no
    single-flight and no time limit. When a scrape is slow (an adapter's outbox or the
    state store does not answer), a burst of scrapes (anyone, when there is no
    ``authenticate`` hook) holds every executor thread, and the REST API (which reads a
    shared store in the same executor) and shutdown stall behind them. Concurrent
    scrapes should share one render (or be refused), not each take a thread."""
    store = RedisStateStore(REDIS_URL, prefix=prefix)
    emitter = Emitter(source="tests", state=store)
    tasks = ASGITaskEvents(emitter, subjects=["aws01"], metrics=True)
    assert tasks.metrics is not None
    slow = SlowStats()
    tasks.metrics.watch(slow, "slow")
    server = LiveASGIServer(tasks.app)
    scrapers: list[threading.Thread] = []
    try:
        for _ in range(40):
            scraper = threading.Thread(target=_scrape_quietly, args=(server.url,), daemon=True)
            scraper.start()
            scrapers.append(scraper)
        deadline = time.monotonic() + 10
        while slow.reading < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # let the burst arrive
        answered = _get_within(server.url, "/api/tasks/aws01", 3.0)
        assert answered == 200, "the REST API did not answer in 3 s, behind the scrapes"
        assert slow.most <= 1, f"{slow.most} scrapes read the adapter at once"
    finally:
        slow.release.set()
        for scraper in scrapers:
            scraper.join(20)
        server.stop()
        tasks.close()
        store.close()


def _get_within(url: str, path: str, seconds: float) -> int | None:
    """The status of GET ``path``, or None if it took more than ``seconds``."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=seconds)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except TimeoutError:
        return None
    finally:
        connection.close()


def _scrape_quietly(url: str) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        fetch(url)


class NoWeakref:
    """An adapter that cannot be weakly referenced (``__slots__`` without
    ``__weakref__``)."""

    __slots__ = ("error_count",)

    def __init__(self) -> None:
        self.error_count = 0


def test_watching_an_adapter_that_cannot_be_held_weakly_takes_no_label() -> None:
    """Defect: ``Metrics.watch`` adds the label to ``_labels`` before it makes the weak
    reference; for an adapter that has none (``__slots__``) it raises a bare
    ``TypeError`` and the label stays taken for ever: the next adapter watched under
    that name is reported as ``name_2``. It should refuse with ValidationError (or hold
    such an adapter strongly) and leave the label free."""
    metrics = enable(Emitter(state=MemoryStateStore()))
    with pytest.raises((ValidationError, TypeError)):
        metrics.watch(NoWeakref(), "logging")

    class Fine:
        error_count = 0

    fine: Any = Fine()
    assert metrics.watch(fine, "logging") == "logging"
