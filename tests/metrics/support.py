"""Helpers for the metrics tests: a scrape parsed with prometheus_client's own parser,
and adapters whose numbers are known."""

from __future__ import annotations

import http.client
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from taskevents import BackgroundAdapter, TaskEvent

#: Every metric the public contract promises.
PROMISED = (
    "taskevents_events",
    "taskevents_adapter_deliveries",
    "taskevents_adapter_errors",
    "taskevents_adapter_queue_depth",
    "taskevents_socketio_clients",
    "taskevents_subjects",
)


@dataclass
class Scrape:
    """One parsed ``/metrics`` body."""

    types: dict[str, str]  # family name -> counter / gauge
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))


def parse(text: str) -> Scrape:
    """A scrape, read by prometheus_client's parser (which rejects malformed text)."""
    types: dict[str, str] = {}
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = sample.value
    return Scrape(types, samples)


def fetch(
    url: str,
    path: str = "/metrics",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One real HTTP request: (status, headers with lower-case names, body)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def scrape(url: str, path: str = "/metrics", headers: dict[str, str] | None = None) -> Scrape:
    status, got, body = fetch(url, path, headers=headers)
    assert status == 200, body
    assert got["content-type"].startswith("text/plain; version=0.0.4")
    return parse(body.decode("utf-8"))


class FailingAdapter(BackgroundAdapter):
    """Refuses every event with a permanent error: one error per event, each given up
    at once (progress not coalesced, so every event is tried)."""

    def __init__(self) -> None:
        super().__init__(coalesce_progress=False)
        self.tried = 0

    def deliver(self, event: TaskEvent) -> None:
        self.tried += 1
        raise ValueError(f"refusing {event.type} on purpose")


class CountingAdapter(BackgroundAdapter):
    """Takes every event (progress not coalesced)."""

    def __init__(self) -> None:
        super().__init__(coalesce_progress=False)

    def deliver(self, event: TaskEvent) -> None:
        return None
