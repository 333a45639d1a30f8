"""Rate-limited, counted error reports: errors are contained, never silent, never a flood."""

from __future__ import annotations

import logging
import threading
import time

from ._urls import printable

logger = logging.getLogger("taskevents")

#: Seconds between two log records for errors from the same place.
ERROR_LOG_INTERVAL = 10.0


def safe_message(exc: BaseException, limit: int = 500) -> str:
    """``str(exc)`` on one line, at most ``limit`` characters; never raises."""
    try:
        text = str(exc)
    except Exception:
        return f"<{type(exc).__name__}: its message cannot be shown>"
    if not isinstance(text, str):
        return f"<{type(exc).__name__}>"
    # One line, with control characters escaped: an exception's text may quote what
    # an outside party sent (a task's arguments), which must not drive a terminal.
    text = printable(" ".join(text[: limit + 1].split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ErrorReporter:
    """Counts errors from one place (a receiver, an adapter) and logs at most one record
    per ``interval`` seconds, saying how many were not logged in between."""

    def __init__(self, where: str, *, interval: float = ERROR_LOG_INTERVAL) -> None:
        self.where = where
        self.interval = interval
        self.count = 0
        self._suppressed = 0
        self._last = -float("inf")
        self._lock = threading.Lock()

    def report(
        self, exc: BaseException, doing: str, *, traceback: bool = True, detail: bool = True
    ) -> None:
        """Count ``exc`` and log it unless one was logged less than ``interval`` ago
        (with its traceback unless ``traceback`` is false, and its message unless
        ``detail`` is false: for errors whose text may hold what a client sent)."""
        now = time.monotonic()
        with self._lock:
            self.count += 1
            if now - self._last < self.interval:
                self._suppressed += 1
                return
            self._last = now
            suppressed, self._suppressed = self._suppressed, 0
        more = f"; {suppressed} more since the last report" if suppressed else ""
        logger.error(
            "%s failed %s: %s: %s (%d errors in all%s)",
            self.where,
            doing,
            type(exc).__name__,
            safe_message(exc) if detail else "(message not logged: it may hold client input)",
            self.count,
            more,
            exc_info=exc if traceback else None,
        )
