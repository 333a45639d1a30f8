"""Fixtures of the webhook tests: a receiver, adapters that close themselves, a
certificate."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskevents.adapters.webhooks import WebhookAdapter
from tests.support.http import Receiver, self_signed

#: A retry schedule for tests: four attempts, 50 ms apart.
FAST = (0.0, 0.05, 0.05, 0.05)

Make = Callable[..., WebhookAdapter]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Make]:
    """``make(endpoints, **options)``: a WebhookAdapter with test defaults (an outbox in
    ``tmp_path``, 127.0.0.1 allowed, fast retries), closed at the end."""
    made: list[WebhookAdapter] = []

    def make(endpoints: Any, **options: Any) -> WebhookAdapter:
        options.setdefault("outbox", tmp_path / "outbox.sqlite3")
        options.setdefault("allow_hosts", ["127.0.0.1"])
        options.setdefault("retry_schedule", FAST)
        options.setdefault("jitter", 0.0)
        options.setdefault("poll_interval", 0.1)
        adapter = WebhookAdapter(endpoints, **options)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close(timeout=0)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for the name ``localhost`` only (no address in it)."""
    cert, key = self_signed(tmp_path_factory.mktemp("tls"), "localhost")
    return Path(cert), Path(key)
