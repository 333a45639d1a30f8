"""A complete third-party adapter: counts events per subject and type.

Registered in this package's ``pyproject.toml`` under the entry-point group
``taskevents.adapters`` as ``counter``, so ``taskevents.load_adapter("counter")`` finds it.
"""

from collections import Counter
from collections.abc import Iterable

from taskevents import Adapter, TaskEvent


class CountingAdapter(Adapter):
    """Counts the events it handles, by ``(subject, type)``."""

    def __init__(
        self, *, types: Iterable[str] | None = None, subjects: Iterable[str] | None = None
    ) -> None:
        super().__init__(types=types, subjects=subjects)
        self.counts: Counter[tuple[str, str]] = Counter()

    def handle(self, event: TaskEvent) -> None:
        self.counts[event.subject, event.type] += 1
