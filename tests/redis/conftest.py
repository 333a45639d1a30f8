"""Fixtures for the Redis tests: a live server (``TASKEVENTS_TEST_REDIS_URL``, by default
``redis://127.0.0.1:6379/0``) and, per test, a fresh key prefix whose keys are deleted
afterwards. Without a server the tests are skipped, and fail under ``CI=true``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from taskevents import Emitter
from taskevents.redis import RedisStateStore
from tests.conftest import IN_CI

if TYPE_CHECKING:
    import redis

REDIS_URL = os.environ.get("TASKEVENTS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test server's URL, once it answers."""
    module = pytest.importorskip("redis", reason="pip install 'taskevents[redis]'")
    client = module.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except module.RedisError as exc:
        message = (
            f"no Redis server answers at {REDIS_URL} ({exc}); start one (redis-server) "
            "or point TASKEVENTS_TEST_REDIS_URL at one"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the test server, answering text."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"taskevents-test-{uuid.uuid4().hex}"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def store(redis_url: str, prefix: str) -> Iterator[RedisStateStore]:
    with RedisStateStore(redis_url, prefix=prefix) as store:
        yield store


@pytest.fixture
def emitter(store: RedisStateStore) -> Emitter:
    """The tests' emitter, on the Redis store."""
    return Emitter(source="tests", state=store)
