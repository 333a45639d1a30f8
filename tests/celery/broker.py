"""The Celery settings shared by the tests' worker app and the tests' client app."""

from __future__ import annotations

from typing import Any


def configure(celery_app: Any, prefix: str) -> None:
    """Broker keys under ``{prefix}:celery:``, no result backend, one task at a time
    per pool process."""
    celery_app.conf.update(
        broker_transport_options={"global_keyprefix": f"{prefix}:celery:"},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
    )
