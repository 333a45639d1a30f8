"""Durable delivery: an outbox of rows on disk, and workers that deliver them by due time.

:class:`DurableAdapter` is the base of adapters that must not lose an event, even across
a crash: the webhook adapter, and the AWS adapters after it. Its
:meth:`~taskevents.Adapter.handle`
writes one row per target (an endpoint, a queue) to an :class:`Outbox` before it
returns; a small pool of worker threads takes the rows that are due and hands each to
:meth:`DurableAdapter.send`, which says what became of it (an :class:`Outcome`).

The rules the outbox keeps, whatever stores it:

- **Lanes.** The rows of one target and one subject form a lane, delivered in the order
  they were written. A lane is worked by one worker at a time (a claim with a lease, so
  several processes can share one outbox file); while its first row waits for a retry,
  the rest of the lane waits too. Lanes of other subjects and other targets go on.
- **At least once.** A row leaves the outbox only once :meth:`~DurableAdapter.send`
  said it was delivered. A process killed between the send and that mark leaves the
  row (and its lane's claim, until the lease runs out) for another worker or process:
  the row is sent again, with the same event id.
- **Dead letters.** A row that can never be delivered (a permanent refusal, or its
  retries exhausted) is kept as a dead letter, with every failed attempt, until it is
  retried or purged (``taskevents webhooks dead|retry|purge``).
- **Progress** rows are coalesced: a newer progress of the same task replaces one that
  waits at the end of its lane and has not been tried yet (latest wins), and a lane
  takes at most one progress per ``progress_interval``.

:class:`SQLiteOutbox` keeps the rows in a SQLite file in WAL mode (no server needed);
:class:`MemoryOutbox` keeps them in memory, for tests and for sinks that need the
scheduling but not the durability.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import dataclasses
import itertools
import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from taskevents._checks import number, positive_int
from taskevents._reporting import ErrorReporter, safe_message
from taskevents.events import TASK_PROGRESS, TaskEvent
from taskevents.exceptions import TaskEventsError, ValidationError

from .base import Adapter

__all__ = [
    "DEFAULT_RETRY_SCHEDULE",
    "DeadLetter",
    "Delivery",
    "DurableAdapter",
    "MemoryOutbox",
    "NewDelivery",
    "Outbox",
    "Outcome",
    "SQLiteOutbox",
]

logger = logging.getLogger("taskevents")

D = TypeVar("D", bound="DurableAdapter")

#: Seconds to wait before each attempt, the first one included (the Standard Webhooks
#: schedule: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h).
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (
    0.0,
    5.0,
    300.0,
    1800.0,
    7200.0,
    18000.0,
    36000.0,
    50400.0,
    72000.0,
    86400.0,
)

#: What :meth:`Outbox.add` did with each row: it replaced a waiting progress of the same
#: task, joined a lane that has rows, or started a lane (the one case to wake a worker for).
REPLACED, QUEUED, NEW_LANE = 0, 1, 2

#: Longest error text and response body kept per attempt.
MAX_RECORDED_TEXT = 1000
#: Longest wait a ``Retry-After`` can ask for (beyond it, the schedule applies).
MAX_RETRY_AFTER = 86400.0


def _clip(text: str | None, limit: int = MAX_RECORDED_TEXT) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 3] + "..."


# -- what the outbox holds ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NewDelivery:
    """A row to write: one event for one target."""

    target: str
    subject: str
    task_id: str
    event_id: str
    event_type: str
    body: bytes
    #: Not before this time (``time.time()``); later than now only for rate-limited
    #: progress.
    not_before: float
    #: True for progress, which may be replaced by a newer progress of the same task.
    replaceable: bool = False


@dataclasses.dataclass
class Delivery:
    """A row taken for delivery."""

    id: int
    target: str
    subject: str
    task_id: str
    event_id: str
    event_type: str
    body: bytes
    #: Attempts made before this one.
    attempts: int
    created: float
    #: Changes when a newer progress replaces the body.
    version: int


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What :meth:`DurableAdapter.send` made of one attempt.

    :param kind: ``"delivered"``; ``"retry"`` (the target failed for now); ``"dead"``
        (this row can never be delivered: a dead letter at once); ``"disable"`` (the
        target is gone: it takes no more rows until re-enabled, and this row is a dead
        letter).
    :param status: the response's status code, if there was one.
    :param error: what went wrong, for the record and the log (no secrets in it).
    :param response: the start of the response body, kept with failed attempts.
    :param retry_after: seconds the target asked to wait (at most a day is honoured).
    """

    kind: Literal["delivered", "retry", "dead", "disable"]
    status: int | None = None
    error: str | None = None
    response: str | None = None
    retry_after: float | None = None

    @classmethod
    def delivered(cls, status: int | None = None) -> Outcome:
        return cls("delivered", status)


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One failed attempt, as recorded."""

    at: float
    status: int | None
    duration: float
    error: str | None
    response: str | None


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A row given up on, with its failed attempts (oldest first)."""

    id: int
    target: str
    subject: str
    event_id: str
    event_type: str
    body: bytes
    created: float
    dead_at: float
    reason: str
    attempts: tuple[Attempt, ...]


@dataclasses.dataclass
class Lane:
    """The due rows of one target and subject, claimed by one worker."""

    target: str
    subject: str
    rows: list[Delivery]
    claim: str


class Outbox(Protocol):
    """Where durable rows wait. Every method is one atomic step; the rules are in the
    module docstring. ``now`` is ``time.time()``."""

    def add(self, rows: Sequence[NewDelivery], now: float) -> list[int]:
        """Write ``rows`` (in order) before returning. For each row, ``REPLACED`` (it took
        the place of a waiting progress), ``QUEUED`` or ``NEW_LANE`` (module constants)."""

    def claim(
        self, targets: Sequence[str], owner: str, now: float, lease: float, limit: int
    ) -> Lane | None:
        """Claim the lane (of one of ``targets``) that is due first, with up to
        ``limit`` of its due rows; None if no lane is due and free."""

    def renew(self, lane: Lane, now: float, lease: float) -> bool:
        """Extend the claim; False if it was lost (the lease ran out and another
        worker took the lane)."""

    def delivered(self, lane: Lane, deliveries: Sequence[Delivery], now: float) -> None:
        """Remove delivered rows (a row is kept if a newer progress replaced it
        meanwhile)."""

    def failed(
        self,
        lane: Lane,
        delivery: Delivery,
        attempt: Attempt,
        *,
        retry_at: float | None,
        dead_reason: str | None = None,
        disable: str | None = None,
    ) -> None:
        """Record a failed attempt: retry at ``retry_at``, or (None) make the row a dead
        letter for ``dead_reason``; ``disable`` also disables the target."""

    def release(self, lane: Lane, now: float) -> None:
        """End the claim: the lane is next due when its first row is."""

    def hurry(self, targets: Sequence[str], now: float) -> None:
        """Make rate-limited rows (not yet tried) due now: for flush."""

    def next_due(self, targets: Sequence[str]) -> float | None:
        """When the next unclaimed lane of ``targets`` falls due (disabled targets
        left out)."""

    def pending(self, targets: Sequence[str]) -> int:
        """Rows of ``targets`` not delivered and not dead (disabled targets left out)."""

    def disabled(self) -> dict[str, str]:
        """The disabled targets, with the reason of each."""

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per target: pending, retrying, dead, delivered, disabled (a reason or None),
        and while rows are retried, ``last_error``."""

    def dead_letters(self, limit: int = 100, ids: Sequence[int] | None = None) -> list[DeadLetter]:
        """The dead letters, oldest first."""

    def retry_dead(self, ids: Sequence[int] | None, now: float) -> int:
        """Make dead letters (all when ``ids`` is None) pending again, due now, and
        re-enable their targets. Returns how many."""

    def purge_dead(self, ids: Sequence[int] | None) -> int:
        """Delete dead letters (all when ``ids`` is None). Returns how many."""

    def enable(self, target: str) -> bool:
        """Re-enable a disabled target; False if it was not disabled."""

    def maintain(self) -> None:
        """Housekeeping a worker runs now and then (e.g. a WAL checkpoint)."""

    def close(self) -> None:
        """Release the store."""


# -- SQLite ------------------------------------------------------------------------------

_SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    subject TEXT NOT NULL,
    task_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    replaceable INTEGER NOT NULL,
    body BLOB NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    created REAL NOT NULL,
    dead_at REAL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_lane ON deliveries (target, subject, dead, id);
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (dead, id);
CREATE TABLE IF NOT EXISTS lanes (
    target TEXT NOT NULL,
    subject TEXT NOT NULL,
    next_at REAL NOT NULL,
    claim TEXT,
    claim_until REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (target, subject)
);
CREATE INDEX IF NOT EXISTS lanes_due ON lanes (target, next_at);
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id INTEGER NOT NULL,
    at REAL NOT NULL,
    status INTEGER,
    duration REAL NOT NULL,
    error TEXT,
    response TEXT
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts (delivery_id);
CREATE TABLE IF NOT EXISTS targets (
    target TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL DEFAULT 0,
    disabled_at REAL,
    disabled_reason TEXT
);
"""

_DELIVERY_COLUMNS = (
    "id, target, subject, task_id, event_id, event_type, body, attempts, created, version"
)


class OutboxError(TaskEventsError):
    """The outbox file cannot be used (not an outbox, a newer schema, unreadable)."""


class OutboxBusy(OutboxError):
    """A write to the outbox waited longer than it may (another write held it)."""


#: Bytes a WAL file is cut back to after a checkpoint.
_WAL_SIZE_LIMIT = 16 * 1024 * 1024
#: A WAL this big is checkpointed at once rather than at the next second.
_WAL_CHECKPOINT_SIZE = 4 * 1024 * 1024


class SQLiteOutbox:
    """An :class:`Outbox` in a SQLite file, in WAL mode: durable across a crash of the
    process (a committed row survives ``kill -9``), shared safely by several processes.

    :param path: the file; created if missing.
    :param synchronous: SQLite's ``synchronous`` setting: ``"NORMAL"`` (default) survives
        any crash of the process, ``"FULL"`` also a power cut, at the cost of an fsync
        per emitted event.
    :param busy_timeout: seconds to wait for another process's write lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
        write_wait: float = 0.05,
        create: bool = True,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValidationError("synchronous", '"NORMAL" or "FULL"', synchronous)
        self.path = Path(path)
        self.busy_timeout = number(busy_timeout, "busy_timeout")
        self.write_wait = number(write_wait, "write_wait")
        self._lock = threading.Lock()
        self._maintaining = threading.Lock()
        self._next_checkpoint = 0.0
        self._waits = self.busy_timeout  # the busy timeout set on the connection now
        if create and not self.path.parent.is_dir():
            raise OutboxError(
                f"cannot open the outbox {str(self.path)!r}: the directory "
                f"{str(self.path.parent)!r} does not exist"
            )
        new = create and not self.path.exists()
        try:
            if create:
                self._db = sqlite3.connect(
                    str(self.path),
                    timeout=self.busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:  # an existing outbox only: never create or convert a file
                self._db = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=rw",
                    uri=True,
                    timeout=self.busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open the outbox {str(self.path)!r}: {exc}") from exc
        if new:
            # It holds every event's body: for this user only (the WAL and shared-memory
            # files SQLite makes next to it take the same mode).
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)
        try:
            self._check_or_create(create)
            if create:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            # Checkpoints run in maintain() (a worker), never in an emitting thread; and
            # a WAL that grew during a backlog is cut back after each.
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise OutboxError(
                f"{str(self.path)!r} is not a taskevents outbox (SQLite said: {exc})"
            ) from exc
        except OutboxError:
            self._db.close()
            raise

    def _check_or_create(self, create: bool) -> None:
        db = self._db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = None
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            version = None if row is None else row[0]
        if version is None and (tables - {"sqlite_sequence"} or not create):
            # someone else's database (or an empty file when only opening): leave it be
            raise OutboxError(
                f"{str(self.path)!r} is not a taskevents outbox (a SQLite database "
                f"without the outbox's tables)"
            )
        if version is not None and version != _SCHEMA_VERSION:
            raise OutboxError(
                f"the outbox {str(self.path)!r} has schema {version}; this taskevents "
                f"reads schema {_SCHEMA_VERSION}"
            )
        if version is None:
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (_SCHEMA_VERSION,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    class _Tx:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the connection's lock. ``wait``: at
        most this long for the lock and for another process's write (None: the full
        busy timeout); past it, :class:`OutboxBusy`."""

        def __init__(self, outbox: SQLiteOutbox, wait: float | None) -> None:
            self.outbox = outbox
            self.wait = wait

        def __enter__(self) -> sqlite3.Connection:
            outbox = self.outbox
            wait = self.wait
            if wait is None:
                wait = outbox.busy_timeout
                if not outbox._lock.acquire(timeout=2 * wait + 1):
                    raise OutboxBusy(
                        "the outbox's connection is held (by a write that never ended?)"
                    )
            elif not outbox._lock.acquire(timeout=wait):
                raise OutboxBusy(f"the outbox was busy for {wait:g}s (another write holds it)")
            db = outbox._db
            try:
                if db.in_transaction:  # left open by an interrupted write: nobody owns it
                    db.execute("ROLLBACK")
                if outbox._waits != wait:
                    db.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
                    outbox._waits = wait
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                outbox._lock.release()
                if "locked" in str(exc) or "busy" in str(exc):
                    raise OutboxBusy(
                        f"the outbox was busy for {wait:g}s (another connection held its "
                        "write lock: another process, or a checkpoint of the WAL)"
                    ) from exc
                raise
            except BaseException:
                outbox._lock.release()
                raise
            return db

        def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
            db = self.outbox._db
            try:
                if exc_type is None:
                    db.execute("COMMIT")
            finally:
                try:
                    # SQLite may have rolled back already (a full disk does): then the
                    # error that did it is the one to see.
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                finally:
                    self.outbox._lock.release()

    def _write(self, wait: float | None = None) -> SQLiteOutbox._Tx:
        return SQLiteOutbox._Tx(self, wait)

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        if not self._lock.acquire(timeout=2 * self.busy_timeout + 1):
            raise OutboxBusy("the outbox's connection is held (by a write that never ended?)")
        try:
            return self._db.execute(sql, args).fetchall()
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._lock.acquire(timeout=2 * self.busy_timeout + 1):
            raise OutboxBusy("the outbox's connection is held (by a write that never ended?)")
        try:
            yield
        finally:
            self._lock.release()

    @staticmethod
    def _in(targets: Sequence[object]) -> str:
        return ",".join("?" * len(targets))

    # -- writing -------------------------------------------------------------------------

    def add(self, rows: Sequence[NewDelivery], now: float) -> list[int]:
        written = []
        # The emitting thread's write: it waits briefly, then the rows wait in memory.
        with self._write(self.write_wait) as db:
            for row in rows:
                lane = (row.target, row.subject)
                tail = db.execute(
                    "SELECT id, task_id, replaceable, attempts, next_at FROM deliveries "
                    "WHERE target = ? AND subject = ? AND dead = 0 ORDER BY id DESC LIMIT 1",
                    lane,
                ).fetchone()
                if tail is not None and row.replaceable:
                    tail_id, task_id, replaceable, attempts, next_at = tail
                    if (
                        replaceable
                        and attempts == 0
                        and task_id == row.task_id
                        and not (next_at <= now and self._claimed(db, lane, now))
                    ):
                        db.execute(
                            "UPDATE deliveries SET body = ?, event_id = ?, "
                            "version = version + 1 WHERE id = ?",
                            (row.body, row.event_id, tail_id),
                        )
                        written.append(REPLACED)
                        continue
                if tail is not None and not row.replaceable and tail[2] and tail[4] > now:
                    # What follows a rate-limited progress does not wait for its interval.
                    db.execute(
                        "UPDATE deliveries SET next_at = ? WHERE target = ? AND subject = ? "
                        "AND dead = 0 AND replaceable = 1 AND attempts = 0 AND next_at > ?",
                        (now, *lane, now),
                    )
                    db.execute(
                        "UPDATE lanes SET next_at = ? WHERE target = ? AND subject = ? "
                        "AND next_at > ? AND NOT EXISTS (SELECT 1 FROM deliveries WHERE "
                        "target = ? AND subject = ? AND dead = 0 AND attempts > 0)",
                        (now, *lane, now, *lane),
                    )
                db.execute(
                    "INSERT INTO deliveries (target, subject, task_id, event_id, event_type, "
                    "replaceable, body, next_at, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        *lane,
                        row.task_id,
                        row.event_id,
                        row.event_type,
                        int(row.replaceable),
                        row.body,
                        row.not_before,
                        now,
                    ),
                )
                if tail is None:
                    db.execute(
                        "INSERT INTO lanes (target, subject, next_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (target, subject) DO UPDATE SET next_at = excluded.next_at "
                        "WHERE claim_until <= ?",
                        (*lane, row.not_before, now),
                    )
                written.append(NEW_LANE if tail is None else QUEUED)
        return written

    @staticmethod
    def _claimed(db: sqlite3.Connection, lane: tuple[str, str], now: float) -> bool:
        """Whether a worker holds ``lane`` (so its due rows may be on their way)."""
        return (
            db.execute(
                "SELECT 1 FROM lanes WHERE target = ? AND subject = ? AND claim_until > ?",
                (*lane, now),
            ).fetchone()
            is not None
        )

    def _enabled(self, db: sqlite3.Connection, targets: Sequence[str]) -> list[str]:
        off = {r[0] for r in db.execute("SELECT target FROM targets WHERE disabled_at IS NOT NULL")}
        return [t for t in targets if t not in off]

    def claim(
        self, targets: Sequence[str], owner: str, now: float, lease: float, limit: int
    ) -> Lane | None:
        if not targets:
            return None
        first = self.next_due(targets)
        if first is None or first > now:
            return None  # nothing to claim: no write transaction for it
        with self._write() as db:
            # One index lookup per target (lanes by target and due time): a target with
            # a large backlog, disabled or waiting, costs nothing to skip.
            found = None
            for target in self._enabled(db, targets):
                lane = db.execute(
                    "SELECT next_at, subject FROM lanes WHERE target = ? AND next_at <= ? "
                    "AND claim_until <= ? ORDER BY next_at LIMIT 1",
                    (target, now, now),
                ).fetchone()
                if lane is not None and (found is None or lane[0] < found[0]):
                    found = (lane[0], target, lane[1])
            if found is None:
                return None
            _, target, subject = found
            claim = f"{owner}:{next(_claims)}"
            db.execute(
                "UPDATE lanes SET claim = ?, claim_until = ? WHERE target = ? AND subject = ?",
                (claim, now + lease, target, subject),
            )
            rows = db.execute(
                f"SELECT {_DELIVERY_COLUMNS}, next_at FROM deliveries "
                "WHERE target = ? AND subject = ? AND dead = 0 ORDER BY id LIMIT ?",
                (target, subject, limit),
            ).fetchall()
            if not rows:  # an empty lane left behind: drop it
                db.execute("DELETE FROM lanes WHERE target = ? AND subject = ?", (target, subject))
                return None
        taken: list[Delivery] = []
        for row in rows:
            if row[-1] > now:
                break
            taken.append(Delivery(*row[:-1]))
        return Lane(target, subject, taken, claim)

    def renew(self, lane: Lane, now: float, lease: float) -> bool:
        with self._write() as db:
            changed = db.execute(
                "UPDATE lanes SET claim_until = ? WHERE target = ? AND subject = ? AND claim = ?",
                (now + lease, lane.target, lane.subject, lane.claim),
            ).rowcount
        return bool(changed)

    def delivered(self, lane: Lane, deliveries: Sequence[Delivery], now: float) -> None:
        if not deliveries:
            return
        with self._write() as db:
            for delivery in deliveries:
                gone = db.execute(
                    "DELETE FROM deliveries WHERE id = ? AND version = ?",
                    (delivery.id, delivery.version),
                ).rowcount
                if gone:
                    if delivery.attempts:
                        db.execute("DELETE FROM attempts WHERE delivery_id = ?", (delivery.id,))
                else:  # replaced by newer progress meanwhile: that one is still to send
                    db.execute("UPDATE deliveries SET attempts = 0 WHERE id = ?", (delivery.id,))
            db.execute(
                "INSERT INTO targets (target, delivered) VALUES (?, ?) ON CONFLICT (target) "
                "DO UPDATE SET delivered = delivered + excluded.delivered",
                (lane.target, len(deliveries)),
            )

    def failed(
        self,
        lane: Lane,
        delivery: Delivery,
        attempt: Attempt,
        *,
        retry_at: float | None,
        dead_reason: str | None = None,
        disable: str | None = None,
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?)",
                (
                    delivery.id,
                    attempt.at,
                    attempt.status,
                    attempt.duration,
                    _clip(attempt.error),
                    _clip(attempt.response),
                ),
            )
            if retry_at is not None:
                db.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, next_at = ?, reason = ? "
                    "WHERE id = ?",
                    (retry_at, _clip(attempt.error), delivery.id),
                )
            else:
                db.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, dead = 1, dead_at = ?, "
                    "reason = ? WHERE id = ?",
                    (attempt.at, _clip(dead_reason or attempt.error), delivery.id),
                )
            if disable is not None:
                db.execute(
                    "INSERT INTO targets (target, disabled_at, disabled_reason) "
                    "VALUES (?, ?, ?) ON CONFLICT (target) DO UPDATE SET "
                    "disabled_at = excluded.disabled_at, "
                    "disabled_reason = excluded.disabled_reason",
                    (delivery.target, attempt.at, _clip(disable)),
                )

    def release(self, lane: Lane, now: float) -> None:
        with self._write() as db:
            head = db.execute(
                "SELECT next_at FROM deliveries WHERE target = ? AND subject = ? AND dead = 0 "
                "ORDER BY id LIMIT 1",
                (lane.target, lane.subject),
            ).fetchone()
            if head is None:
                db.execute(
                    "DELETE FROM lanes WHERE target = ? AND subject = ? AND claim = ?",
                    (lane.target, lane.subject, lane.claim),
                )
            else:
                db.execute(
                    "UPDATE lanes SET next_at = ?, claim = NULL, claim_until = 0 "
                    "WHERE target = ? AND subject = ? AND claim = ?",
                    (head[0], lane.target, lane.subject, lane.claim),
                )

    def hurry(self, targets: Sequence[str], now: float) -> None:
        if not targets:
            return
        with self._write() as db:
            db.execute(
                f"UPDATE deliveries SET next_at = ? WHERE target IN ({self._in(targets)}) "
                "AND dead = 0 AND replaceable = 1 AND attempts = 0 AND next_at > ?",
                (now, *targets, now),
            )
            db.execute(
                f"UPDATE lanes SET next_at = ? WHERE target IN ({self._in(targets)}) "
                "AND next_at > ? AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE "
                "d.target = lanes.target AND d.subject = lanes.subject AND d.dead = 0 "
                "AND d.attempts > 0)",
                (now, *targets, now),
            )

    # -- reading -------------------------------------------------------------------------

    def next_due(self, targets: Sequence[str]) -> float | None:
        due = None
        with self._locked():
            for target in self._enabled(self._db, targets):
                row = self._db.execute(
                    "SELECT next_at FROM lanes WHERE target = ? AND claim_until <= ? "
                    "ORDER BY next_at LIMIT 1",
                    (target, time.time()),
                ).fetchone()
                if row is not None and (due is None or row[0] < due):
                    due = float(row[0])
        return due

    def pending(self, targets: Sequence[str]) -> int:
        with self._locked():
            enabled = self._enabled(self._db, targets)
            if not enabled:
                return 0
            row = self._db.execute(
                f"SELECT count(*) FROM deliveries WHERE dead = 0 AND target IN "
                f"({self._in(enabled)})",
                enabled,
            ).fetchone()
        return int(row[0])

    def disabled(self) -> dict[str, str]:
        return {
            target: reason or ""
            for target, reason in self._read(
                "SELECT target, disabled_reason FROM targets WHERE disabled_at IS NOT NULL"
            )
        }

    def stats(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}

        def entry(target: str) -> dict[str, Any]:
            return found.setdefault(
                target,
                {"pending": 0, "retrying": 0, "dead": 0, "delivered": 0, "disabled": None},
            )

        for target, dead, retrying, count in self._read(
            "SELECT target, dead, attempts > 0, count(*) FROM deliveries "
            "GROUP BY target, dead, attempts > 0"
        ):
            slot = entry(target)
            if dead:
                slot["dead"] += count
            else:
                slot["pending"] += count
                if retrying:
                    slot["retrying"] += count
        for target, delivered, reason in self._read(
            "SELECT target, delivered, disabled_reason FROM targets"
        ):
            slot = entry(target)
            slot["delivered"] = delivered
            slot["disabled"] = reason
        for target, slot in found.items():
            if slot["retrying"]:
                row = self._read(
                    "SELECT reason FROM deliveries WHERE target = ? AND dead = 0 "
                    "AND attempts > 0 ORDER BY id DESC LIMIT 1",
                    (target,),
                )
                slot["last_error"] = row[0][0] if row else None
        return found

    def dead_letters(self, limit: int = 100, ids: Sequence[int] | None = None) -> list[DeadLetter]:
        if ids is not None:
            rows = self._read(
                "SELECT id, target, subject, event_id, event_type, body, created, dead_at, "
                f"reason FROM deliveries WHERE dead = 1 AND id IN ({self._in(ids)}) ORDER BY id",
                [int(i) for i in ids],
            )
        else:
            rows = self._read(
                "SELECT id, target, subject, event_id, event_type, body, created, dead_at, "
                "reason FROM deliveries WHERE dead = 1 ORDER BY id LIMIT ?",
                (limit,),
            )
        letters = []
        for row in rows:
            attempts = tuple(
                Attempt(*a)
                for a in self._read(
                    "SELECT at, status, duration, error, response FROM attempts "
                    "WHERE delivery_id = ? ORDER BY at",
                    (row[0],),
                )
            )
            id_, target, subject, event_id, event_type, body, created, dead_at, reason = row
            letters.append(
                DeadLetter(
                    id_,
                    target,
                    subject,
                    event_id,
                    event_type,
                    body,
                    created,
                    dead_at,
                    reason or "",
                    attempts,
                )
            )
        return letters

    # -- operators -----------------------------------------------------------------------

    def retry_dead(self, ids: Sequence[int] | None, now: float) -> int:
        where = "dead = 1" if ids is None else f"dead = 1 AND id IN ({self._in(ids)})"
        args = [] if ids is None else [int(i) for i in ids]
        with self._write() as db:
            lanes = db.execute(
                f"SELECT DISTINCT target, subject FROM deliveries WHERE {where}", args
            ).fetchall()
            count = db.execute(
                f"UPDATE deliveries SET dead = 0, attempts = 0, next_at = ?, dead_at = NULL "
                f"WHERE {where}",
                (now, *args),
            ).rowcount
            for target, subject in lanes:
                db.execute(
                    "INSERT INTO lanes (target, subject, next_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (target, subject) DO UPDATE SET next_at = min(next_at, ?)",
                    (target, subject, now, now),
                )
                db.execute(
                    "UPDATE targets SET disabled_at = NULL, disabled_reason = NULL "
                    "WHERE target = ?",
                    (target,),
                )
        return int(count)

    def purge_dead(self, ids: Sequence[int] | None) -> int:
        where = "dead = 1" if ids is None else f"dead = 1 AND id IN ({self._in(ids)})"
        args = [] if ids is None else [int(i) for i in ids]
        with self._write() as db:
            db.execute(
                f"DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries "
                f"WHERE {where})",
                args,
            )
            return int(db.execute(f"DELETE FROM deliveries WHERE {where}", args).rowcount)

    def enable(self, target: str) -> bool:
        with self._write() as db:
            return bool(
                db.execute(
                    "UPDATE targets SET disabled_at = NULL, disabled_reason = NULL "
                    "WHERE target = ? AND disabled_at IS NOT NULL",
                    (target,),
                ).rowcount
            )

    def maintain(self) -> None:
        """Checkpoint the WAL into the database once a second, or at once when it has
        grown past a few MB (a backlog of big events), on a connection of its own so that
        writers do not wait for it."""
        now = time.monotonic()
        try:
            wal = os.path.getsize(f"{self.path}-wal")
        except OSError:
            wal = 0
        if wal < _WAL_CHECKPOINT_SIZE and now < self._next_checkpoint:
            return
        if not self._maintaining.acquire(blocking=False):
            return
        try:
            self._next_checkpoint = now + 1.0
            db = sqlite3.connect(str(self.path), timeout=0, isolation_level=None)
            try:
                db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
                # PASSIVE never holds up a writer (an emit): once it has caught up, the
                # next write starts the WAL over, cut back to journal_size_limit. Only a
                # WAL it cannot catch up with is cut back by TRUNCATE, which holds the
                # write lock while it runs (tens of ms), so emits may wait for it.
                mode = "TRUNCATE" if wal >= 4 * _WAL_SIZE_LIMIT else "PASSIVE"
                db.execute(f"PRAGMA wal_checkpoint({mode})")
            except sqlite3.OperationalError:
                pass  # busy: the next turn
            finally:
                db.close()
        finally:
            self._maintaining.release()

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._db.close()


_claims = itertools.count(1)


# -- memory ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Row:
    delivery: Delivery
    replaceable: bool
    next_at: float
    dead: bool = False
    dead_at: float = 0.0
    reason: str = ""
    attempts: list[Attempt] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _MemoryLane:
    rows: deque[_Row]
    next_at: float
    claim: str | None = None
    claim_until: float = 0.0


class MemoryOutbox:
    """An :class:`Outbox` in memory: the same lanes, order, retries and dead letters
    as :class:`SQLiteOutbox`, lost when the process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lanes: dict[tuple[str, str], _MemoryLane] = {}
        self._dead: dict[int, _Row] = {}
        self._delivered: dict[str, int] = {}
        self._disabled: dict[str, str] = {}
        self._ids = itertools.count(1)

    def add(self, rows: Sequence[NewDelivery], now: float) -> list[int]:
        written = []
        with self._lock:
            for new in rows:
                key = (new.target, new.subject)
                lane = self._lanes.get(key)
                if lane is not None and lane.rows:
                    tail = lane.rows[-1]
                    if new.replaceable:
                        d = tail.delivery
                        in_flight = tail.next_at <= now and lane.claim_until > now
                        if (
                            tail.replaceable
                            and d.attempts == 0
                            and d.task_id == new.task_id
                            and not in_flight
                        ):
                            d.body, d.event_id = new.body, new.event_id
                            d.version += 1
                            written.append(REPLACED)
                            continue
                    elif tail.replaceable and tail.next_at > now:  # a rate-limited progress
                        retrying = any(r.delivery.attempts for r in lane.rows)
                        for r in lane.rows:
                            if r.replaceable and r.delivery.attempts == 0 and r.next_at > now:
                                r.next_at = now
                        if not retrying and lane.claim is None:
                            lane.next_at = min(lane.next_at, now)
                row = _Row(
                    Delivery(
                        next(self._ids),
                        new.target,
                        new.subject,
                        new.task_id,
                        new.event_id,
                        new.event_type,
                        new.body,
                        0,
                        now,
                        0,
                    ),
                    new.replaceable,
                    new.not_before,
                )
                started = lane is None or not lane.rows
                if lane is None:
                    lane = self._lanes[key] = _MemoryLane(deque(), new.not_before)
                elif not lane.rows and lane.claim is None:
                    lane.next_at = new.not_before
                lane.rows.append(row)
                written.append(NEW_LANE if started else QUEUED)
        return written

    def claim(
        self, targets: Sequence[str], owner: str, now: float, lease: float, limit: int
    ) -> Lane | None:
        with self._lock:
            best: tuple[str, str] | None = None
            best_at = 0.0
            for key, lane in self._lanes.items():
                if key[0] not in targets or key[0] in self._disabled:
                    continue
                due = lane.next_at <= now and lane.claim_until <= now
                if due and (best is None or lane.next_at < best_at):
                    best, best_at = key, lane.next_at
            if best is None:
                return None
            lane = self._lanes[best]
            if not lane.rows:
                del self._lanes[best]
                return None
            lane.claim = f"{owner}:{next(_claims)}"
            lane.claim_until = now + lease
            taken: list[Delivery] = []
            for row in itertools.islice(lane.rows, limit):
                if row.next_at > now:
                    break
                taken.append(dataclasses.replace(row.delivery))
            return Lane(best[0], best[1], taken, lane.claim)

    def _row(self, lane: Lane, delivery_id: int) -> tuple[_MemoryLane, _Row] | None:
        memory = self._lanes.get((lane.target, lane.subject))
        if memory is None:
            return None
        for row in memory.rows:
            if row.delivery.id == delivery_id:
                return memory, row
        return None

    def renew(self, lane: Lane, now: float, lease: float) -> bool:
        with self._lock:
            memory = self._lanes.get((lane.target, lane.subject))
            if memory is None or memory.claim != lane.claim:
                return False
            memory.claim_until = now + lease
            return True

    def delivered(self, lane: Lane, deliveries: Sequence[Delivery], now: float) -> None:
        with self._lock:
            for delivery in deliveries:
                self._delivered[delivery.target] = self._delivered.get(delivery.target, 0) + 1
                found = self._row(lane, delivery.id)
                if found is None:
                    continue
                memory, row = found
                if row.delivery.version == delivery.version:
                    memory.rows.remove(row)
                else:
                    row.delivery.attempts = 0

    def failed(
        self,
        lane: Lane,
        delivery: Delivery,
        attempt: Attempt,
        *,
        retry_at: float | None,
        dead_reason: str | None = None,
        disable: str | None = None,
    ) -> None:
        with self._lock:
            found = self._row(lane, delivery.id)
            if found is not None:
                memory, row = found
                row.attempts.append(attempt)
                row.delivery.attempts += 1
                if retry_at is not None:
                    row.next_at = retry_at
                else:
                    memory.rows.remove(row)
                    row.dead, row.dead_at = True, attempt.at
                    row.reason = _clip(dead_reason or attempt.error) or ""
                    self._dead[row.delivery.id] = row
            if disable is not None:
                self._disabled[delivery.target] = disable

    def release(self, lane: Lane, now: float) -> None:
        with self._lock:
            key = (lane.target, lane.subject)
            memory = self._lanes.get(key)
            if memory is None or memory.claim != lane.claim:
                return
            if not memory.rows:
                del self._lanes[key]
            else:
                memory.claim, memory.claim_until = None, 0.0
                memory.next_at = memory.rows[0].next_at

    def hurry(self, targets: Sequence[str], now: float) -> None:
        with self._lock:
            for (target, _), lane in self._lanes.items():
                if target not in targets:
                    continue
                retrying = False
                for row in lane.rows:
                    retrying = retrying or row.delivery.attempts > 0
                    if row.replaceable and row.delivery.attempts == 0 and row.next_at > now:
                        row.next_at = now
                if not retrying and lane.claim is None:
                    lane.next_at = min(lane.next_at, now)

    def next_due(self, targets: Sequence[str]) -> float | None:
        now = time.time()
        with self._lock:
            times = [
                lane.next_at
                for (target, _), lane in self._lanes.items()
                if target in targets and target not in self._disabled and lane.claim_until <= now
            ]
        return min(times) if times else None

    def pending(self, targets: Sequence[str]) -> int:
        with self._lock:
            return sum(
                len(lane.rows)
                for (target, _), lane in self._lanes.items()
                if target in targets and target not in self._disabled
            )

    def disabled(self) -> dict[str, str]:
        with self._lock:
            return dict(self._disabled)

    def stats(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}

        def entry(target: str) -> dict[str, Any]:
            return found.setdefault(
                target,
                {"pending": 0, "retrying": 0, "dead": 0, "delivered": 0, "disabled": None},
            )

        with self._lock:
            for (target, _), lane in self._lanes.items():
                slot = entry(target)
                slot["pending"] += len(lane.rows)
                for row in lane.rows:
                    if row.delivery.attempts:
                        slot["retrying"] += 1
                        slot["last_error"] = row.attempts[-1].error if row.attempts else None
            for row in self._dead.values():
                entry(row.delivery.target)["dead"] += 1
            for target, count in self._delivered.items():
                entry(target)["delivered"] = count
            for target, reason in self._disabled.items():
                entry(target)["disabled"] = reason
        return found

    def dead_letters(self, limit: int = 100, ids: Sequence[int] | None = None) -> list[DeadLetter]:
        with self._lock:
            rows = sorted(self._dead.values(), key=lambda r: r.delivery.id)
            if ids is not None:
                wanted = set(ids)
                rows = [r for r in rows if r.delivery.id in wanted]
            else:
                rows = rows[:limit]
            return [
                DeadLetter(
                    r.delivery.id,
                    r.delivery.target,
                    r.delivery.subject,
                    r.delivery.event_id,
                    r.delivery.event_type,
                    r.delivery.body,
                    r.delivery.created,
                    r.dead_at,
                    r.reason,
                    tuple(r.attempts),
                )
                for r in rows
            ]

    def retry_dead(self, ids: Sequence[int] | None, now: float) -> int:
        with self._lock:
            chosen = list(self._dead) if ids is None else [i for i in ids if i in self._dead]
            for i in sorted(chosen):
                row = self._dead.pop(i)
                row.dead, row.next_at = False, now
                row.delivery.attempts = 0
                key = (row.delivery.target, row.delivery.subject)
                lane = self._lanes.setdefault(key, _MemoryLane(deque(), now))
                lane.next_at = min(lane.next_at, now)
                # Back in id order, so the lane keeps emit order.
                lane.rows.append(row)
                lane.rows = deque(sorted(lane.rows, key=lambda r: r.delivery.id))
                self._disabled.pop(row.delivery.target, None)
            return len(chosen)

    def purge_dead(self, ids: Sequence[int] | None) -> int:
        with self._lock:
            chosen = list(self._dead) if ids is None else [i for i in ids if i in self._dead]
            for i in chosen:
                del self._dead[i]
            return len(chosen)

    def enable(self, target: str) -> bool:
        with self._lock:
            return self._disabled.pop(target, None) is not None

    def maintain(self) -> None:
        pass

    def close(self) -> None:
        pass


# -- the adapter -------------------------------------------------------------------------

_live: weakref.WeakSet[DurableAdapter] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    for adapter in list(_live):
        adapter.close(timeout=2.0)


def open_outbox(outbox: str | os.PathLike[str] | Outbox, field: str = "outbox") -> Outbox:
    """An :class:`Outbox` from a path (a :class:`SQLiteOutbox`) or an outbox itself."""
    if isinstance(outbox, (str, os.PathLike)):
        if not str(outbox):
            raise ValidationError(field, "a file path or an Outbox", outbox)
        return SQLiteOutbox(outbox)
    for method in ("add", "claim", "delivered", "failed", "release"):
        if not callable(getattr(outbox, method, None)):
            raise ValidationError(field, "a file path or an Outbox", outbox)
    return outbox


class DurableAdapter(Adapter):
    """Base for adapters that deliver at least once: :meth:`handle` writes rows to an
    :class:`Outbox` and returns; worker threads :meth:`send` each row when it is due.

    A subclass implements two methods: :meth:`rows` (which targets get an event, and
    the body each one gets) and :meth:`send` (one attempt, returning an
    :class:`Outcome`). Everything else (order per subject and target, claims, retries
    on a schedule, dead letters, rate-limited progress) is here.

    :param targets: where this adapter delivers (e.g. endpoint URLs): the names
        :meth:`rows` returns and :meth:`send` finds in :attr:`Delivery.target`. Its
        workers claim only these targets' rows, so adapters with other targets can
        share one outbox.
    :param outbox: a file path (a :class:`SQLiteOutbox`) or an :class:`Outbox`.
    :param workers: worker threads. One target never takes them all while other
        targets have work (``workers - 1`` at most, when there are several targets).
    :param retry_schedule: seconds to wait before each attempt, the first included
        (usually 0: at once); its length is the number of attempts before a row becomes
        a dead letter.
    :param jitter: each wait is moved by up to this fraction, at random, so that
        retries of many rows do not arrive together.
    :param lease: seconds a claim on a lane lasts without renewal; the rows of a
        killed process are taken over this long after it died (at most).
    :param progress_interval: a lane takes at most one progress per this many seconds.
    :param poll_interval: how often idle workers look for rows written by other
        processes (rows of this process wake them at once).
    :param max_unwritten: while the outbox cannot be written (a full disk), up to this
        many rows wait in memory and are written when it can be again (a newer progress
        replacing a waiting one of its task); beyond that, progress is dropped first,
        then what does not fit, logged and counted as ``unwritten_dropped``.
    :param max_unwritten_bytes: the same bound in bytes of bodies.
    :param batch_window: for an adapter that sends in batches (:attr:`batch_size` over
        1): a worker that finds fewer rows than a batch holds, all written less than this
        many seconds ago, waits until the oldest is this old before it sends, so that a
        burst goes in full batches (0: send at once; a backlog never waits).

    A subclass that sends several rows in one call sets :attr:`batch_size` (and
    :attr:`batch_bytes`) and implements :meth:`send_batch`. A worker then claims the
    due lanes of one target until it has a batch's worth of rows, and each row's
    outcome is settled on its own: the delivered ones leave the outbox, a failed one is
    retried (and holds back the rest of its lane) or becomes a dead letter.
    """

    #: Most rows one :meth:`send_batch` call takes (1: no batches; :meth:`send` is called).
    batch_size: int = 1
    #: Most bytes of bodies one :meth:`send_batch` call takes (None: no bound); a row
    #: larger than this goes alone.
    batch_bytes: int | None = None

    def __init__(
        self,
        *,
        targets: Sequence[str],
        outbox: str | os.PathLike[str] | Outbox,
        workers: int = 4,
        retry_schedule: Sequence[float] = DEFAULT_RETRY_SCHEDULE,
        jitter: float = 0.1,
        lease: float = 30.0,
        progress_interval: float = 5.0,
        poll_interval: float = 1.0,
        max_unwritten: int = 100_000,
        max_unwritten_bytes: int = 64 * 1024 * 1024,
        batch_window: float = 0.0,
        types: Iterable[str] | None = None,
        subjects: Iterable[str] | None = None,
    ) -> None:
        super().__init__(types=types, subjects=subjects)
        self.workers = positive_int(workers, "workers")
        if self.workers > 256:
            raise ValidationError("workers", "at most 256 threads", workers)
        self.batch_window = number(batch_window, "batch_window")
        if self.batch_window > 60:
            raise ValidationError("batch_window", "at most 60 seconds", batch_window)
        if isinstance(retry_schedule, (str, bytes)) or not isinstance(retry_schedule, Sequence):
            raise ValidationError("retry_schedule", "a list of seconds", retry_schedule)
        if not retry_schedule:
            raise ValidationError("retry_schedule", "at least one entry", retry_schedule)
        self.retry_schedule = tuple(
            number(s, f"retry_schedule[{i}]") for i, s in enumerate(retry_schedule)
        )
        self.jitter = number(jitter, "jitter")
        if self.jitter >= 1:
            raise ValidationError("jitter", "a fraction between 0 and 1", jitter)
        self.lease = number(lease, "lease", above=0)
        self.progress_interval = number(progress_interval, "progress_interval")
        self.poll_interval = number(poll_interval, "poll_interval", above=0)
        if self.poll_interval > 3600:
            raise ValidationError("poll_interval", "at most 3600 seconds", poll_interval)
        self.max_unwritten = positive_int(max_unwritten, "max_unwritten")
        self.max_unwritten_bytes = positive_int(max_unwritten_bytes, "max_unwritten_bytes")
        self.outbox: Outbox = open_outbox(outbox)
        self.write_errors = ErrorReporter(f"adapter {type(self).__name__}: outbox write")
        self._owner = f"{os.getpid()}-{random.getrandbits(32):08x}"
        self._cond = threading.Condition(threading.Lock())
        self._unwritten: deque[NewDelivery] = deque()
        #: Held rows taken out of ``_unwritten`` and being written (they still count as
        #: held: what is emitted meanwhile waits behind them).
        self._writing_held = 0
        self._unwritten_bytes = 0
        self._disabled: set[str] = set()
        self._drain = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._flushing = 0
        self._closing = False
        self._wake = False
        self._threads: list[threading.Thread] = []
        self._started = False
        self._last_progress: dict[tuple[str, str], float] = {}
        self._counts = dict.fromkeys(
            (
                "received",
                "written",
                "coalesced",
                "delivered",
                "retries",
                "dead",
                "unwritten_dropped",
            ),
            0,
        )
        self._last: dict[str, dict[str, Any]] = {}
        if isinstance(targets, str) or not isinstance(targets, Sequence) or not targets:
            raise ValidationError("targets", "a list of target names", targets)
        self._targets: tuple[str, ...] = tuple(targets)
        self._hold_for = self.lease
        self._next_housekeeping = 0.0
        self._closed = False
        self._failure_logged: dict[str, float] = {}

    # -- what a subclass says --------------------------------------------------------

    @property
    def targets(self) -> tuple[str, ...]:
        """The targets this adapter delivers to (its workers claim only their rows)."""
        return self._targets

    @abc.abstractmethod
    def rows(self, event: TaskEvent) -> list[tuple[str, bytes]]:
        """``(target, body)`` for each target that takes ``event``; runs in the
        emitting thread, so keep it quick."""

    @abc.abstractmethod
    def send(self, delivery: Delivery) -> Outcome:
        """Make one attempt at ``delivery``; runs in a worker thread. What it raises is
        recorded as a failed attempt and retried."""

    def send_batch(self, deliveries: Sequence[Delivery]) -> Sequence[Outcome]:
        """Make one attempt at each of ``deliveries`` (rows of one target, at most
        :attr:`batch_size` of them and :attr:`batch_bytes` of bodies, unless one row is
        larger), in one call if the target takes batches; return one :class:`Outcome` per
        row, in their order. What it raises counts as a failed attempt of each row.
        The default sends them one by one with :meth:`send`."""
        return [self.send(delivery) for delivery in deliveries]

    def strict_order(self, target: str) -> bool:
        """True if one :meth:`send_batch` call may carry only one row of a subject for
        ``target``: for a target that keeps order (a FIFO queue), where a batch whose
        earlier row failed but whose later row of the same subject went through would
        deliver them out of order."""
        return False

    def label(self, target: str) -> str:
        """``target`` as logs show it (e.g. without a token the URL carries)."""
        return target

    def timeout_for(self, target: str) -> float:
        """Longest a :meth:`send` to ``target`` can take (the claim is held this much
        longer than the lease)."""
        return 0.0

    # -- emitting side ---------------------------------------------------------------

    def handle(self, event: TaskEvent) -> None:
        """Write ``event``'s rows to the outbox; never raises for the outbox's sake (a
        failed write keeps the rows in memory and is logged once per cause)."""
        if not self._started:
            self._start()
        made = self.rows(event)
        if not made:
            return
        now = time.time()
        progress = event.type == TASK_PROGRESS
        rows = []
        first = now + self.retry_schedule[0]
        for target, body in made:
            not_before = first
            if progress and self.progress_interval:
                # A new progress row no sooner than an interval after the last new one;
                # until then, newer progress replaces the row waiting (latest wins).
                last = self._last_progress.get((target, event.subject))
                if last is not None:
                    not_before = max(first, last + self.progress_interval)
            rows.append(
                NewDelivery(
                    target,
                    event.subject,
                    event.task_id,
                    event.id,
                    event.type,
                    body,
                    not_before,
                    progress,
                )
            )
        self._write(rows, now)

    def _note_written(self, rows: Sequence[NewDelivery], written: Sequence[int]) -> None:
        if not self.progress_interval:
            return
        last = self._last_progress
        for row, new in zip(rows, written, strict=False):
            if new != REPLACED and row.replaceable:
                last[(row.target, row.subject)] = row.not_before
        if len(last) > 4096:
            self._forget_old_progress(time.time())

    def _forget_old_progress(self, now: float) -> None:
        for key, when in list(self._last_progress.items()):
            if when + self.progress_interval < now:
                self._last_progress.pop(key, None)

    def _write(self, rows: list[NewDelivery], now: float) -> None:
        """Write one event's rows (or hold them), and count it: emitting threads run
        this concurrently, so the counters change under the lock."""
        if self._unwritten or self._writing_held:  # keep the order: behind what waits
            with self._cond:
                self._counts["received"] += 1
            self._hold(rows)
            # and help: a fast emitter would otherwise outrun the workers' catching up,
            # and the rows would stay in memory (lost in a crash) for as long as it runs
            self._write_held(batches=1)
            return
        try:
            written = self.outbox.add(rows, now)
        except Exception as exc:
            self.write_errors.report(
                exc, "to write to the outbox; rows wait in memory", traceback=False
            )
            with self._cond:
                self._counts["received"] += 1
            self._hold(rows)
            return
        self._note_written(rows, written)
        replaced = written.count(REPLACED)
        with self._cond:
            self._counts["received"] += 1
            self._counts["written"] += len(written) - replaced
            self._counts["coalesced"] += replaced
            # a lane with rows already is some worker's business: wake one for a new lane
            if NEW_LANE in written and not self._wake:
                self._wake = True
                self._cond.notify()

    def _hold(self, rows: list[NewDelivery]) -> None:
        """Keep rows in memory while the outbox cannot be written: a newer progress
        replaces a waiting one of the same task (as in the outbox), and when full,
        progress makes room for lifecycle rows."""
        dropped = 0
        with self._cond:
            held = self._unwritten
            for row in rows:
                if row.replaceable and self._replace_held(row):
                    continue
                while (
                    len(held) >= self.max_unwritten
                    or self._unwritten_bytes + len(row.body) > self.max_unwritten_bytes
                ):
                    victim = None if row.replaceable else self._oldest_progress()
                    if victim is None:
                        dropped += 1  # no room, and nothing less important to make room
                        break
                    del held[victim]
                    dropped += 1
                else:
                    held.append(row)
                    self._unwritten_bytes += len(row.body)
            self._counts["unwritten_dropped"] += dropped
            self._cond.notify()
        if dropped:
            logger.error(
                "%s: the outbox cannot be written and memory holds all it may (%d rows, "
                "%d bytes); dropped %d (progress first)",
                type(self).__name__,
                self.max_unwritten,
                self.max_unwritten_bytes,
                dropped,
            )

    def _replace_held(self, row: NewDelivery) -> bool:
        """Put ``row`` in the place of the held progress of its task, if that is the last
        held row of its target and subject."""
        held = self._unwritten
        for i in range(len(held) - 1, max(len(held) - 256, 0) - 1, -1):
            other = held[i]
            if other.target == row.target and other.subject == row.subject:
                if other.replaceable and other.task_id == row.task_id:
                    self._unwritten_bytes += len(row.body) - len(other.body)
                    held[i] = row
                    return True
                return False
        return False

    def _oldest_progress(self) -> int | None:
        for i, row in enumerate(self._unwritten):
            if row.replaceable:
                self._unwritten_bytes -= len(row.body)
                return i
        return None

    def _write_held(self, batches: int | None = None) -> None:
        """Write the rows held in memory, 100 a transaction (at most ``batches`` of
        them), unless another thread is at it."""
        if not self._drain.acquire(blocking=False):
            return  # another thread is writing them
        try:
            self._write_held_now(batches)
        finally:
            self._drain.release()

    def _write_held_now(self, batches: int | None = None) -> None:
        for _ in itertools.count() if batches is None else range(batches):
            # The batch leaves the deque while it is written, so that what _hold() does
            # meanwhile (replace a held progress, drop one for room) never touches it.
            with self._cond:
                if not self._unwritten:
                    return
                batch = [self._unwritten.popleft() for _ in range(min(100, len(self._unwritten)))]
                self._writing_held += len(batch)
            try:
                written = self.outbox.add(batch, time.time())
            except Exception as exc:
                with self._cond:  # back in front, in order
                    self._unwritten.extendleft(reversed(batch))
                    self._writing_held -= len(batch)
                self.write_errors.report(exc, "to write held rows to the outbox", traceback=False)
                return
            self._note_written(batch, written)
            with self._cond:
                self._writing_held -= len(batch)
                self._unwritten_bytes -= sum(len(row.body) for row in batch)
                replaced = written.count(REPLACED)
                self._counts["written"] += len(written) - replaced
                self._counts["coalesced"] += replaced

    # -- workers ---------------------------------------------------------------------

    def _start(self) -> None:
        if self._started:
            return
        with self._cond:
            if self._started or self._closing:
                return
            self._started = True
            # A claim outlasts the longest send, so a slow target never loses its lane.
            self._hold_for = self.lease + max(
                (self.timeout_for(t) for t in self._targets), default=0.0
            )
            for n in range(self.workers):
                thread = threading.Thread(
                    target=self._work,
                    name=f"taskevents-{type(self).__name__}-{n}",
                    daemon=True,
                )
                self._threads.append(thread)
            self._threads.append(
                threading.Thread(
                    target=self._keep, name=f"taskevents-{type(self).__name__}-keeper", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()
        _live.add(self)

    def connect(self: D, emitter: object | None = None) -> D:
        """Connect (see :meth:`taskevents.Adapter.connect`) and start the workers, which also take
        up rows left in the outbox by an earlier run."""
        self._start()
        return super().connect(emitter)

    def _busy_targets(self) -> list[str]:
        if len(self._targets) < 2:
            return []
        limit = max(1, self.workers - 1)
        return [t for t, n in self._in_flight.items() if n >= limit]

    def _housekeeping(self) -> None:
        """Every 0.2 s, in whichever worker comes first: let the outbox checkpoint (it
        says when it has to) and learn which targets are disabled (by any process)."""
        now = time.monotonic()
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + 0.2
        try:
            self.outbox.maintain()
            self._disabled = set(self.outbox.disabled()).intersection(self._targets)
        except Exception as exc:
            self.errors.report(exc, "to maintain the outbox", traceback=False)

    def _keep(self) -> None:
        """Housekeeping on a thread of its own: it must not wait for a worker to be free
        (all of them may be waiting for a slow endpoint)."""
        while True:
            with self._cond:
                if self._closing:
                    return
                self._cond.wait(0.2)
                if self._closing:
                    return
            self._housekeeping()

    def _work(self) -> None:
        while True:
            with self._cond:
                if self._closing:
                    return
                busy = self._busy_targets()
            if self._unwritten:
                self._write_held()
            disabled = self._disabled
            targets = [t for t in self._targets if t not in busy and t not in disabled]
            now = time.time()
            try:
                lane = self.outbox.claim(targets, self._owner, now, self._hold_for, 100)
            except Exception as exc:
                self.errors.report(exc, "to claim rows from the outbox", traceback=False)
                lane = None
                self._sleep(self.poll_interval)
                continue
            if lane is None:
                self._idle(targets)
                continue
            with self._cond:
                self._in_flight[lane.target] = self._in_flight.get(lane.target, 0) + 1
            try:
                if self.batch_size > 1:
                    self._run_batches(lane)
                else:
                    self._run_lane(lane)
            except Exception as exc:  # the outbox failed: the lease frees the lane
                self.errors.report(exc, f"to deliver to {self.label(lane.target)}")
            finally:
                with self._cond:
                    self._in_flight[lane.target] -= 1
                    self._cond.notify_all()

    def _idle(self, targets: Sequence[str]) -> None:
        try:
            due = self.outbox.next_due(targets)
        except Exception:
            due = None
        wait = self.poll_interval
        if due is not None:
            wait = min(wait, max(due - time.time(), 0.005))
        self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            if self._closing:
                return
            if self._wake:
                self._wake = False
                return
            self._cond.wait(seconds)
            self._wake = False

    def _run_lane(self, lane: Lane) -> None:
        outbox = self.outbox
        hold = self._hold_for
        renewed = time.time()
        # Delivered rows are marked in batches (one transaction for up to 32, or 50 ms):
        # a crash before the mark sends them again, which at-least-once allows.
        done: list[Delivery] = []
        marked = time.monotonic()
        try:
            for delivery in lane.rows:
                if self._closing or lane.target in self._disabled:
                    return
                now = time.time()
                if now - renewed > self.lease / 3:
                    if not outbox.renew(lane, now, hold):
                        done.clear()  # another worker took the lane over (and sends them)
                        return
                    renewed = now
                started = time.monotonic()
                try:
                    outcome = self.send(delivery)
                except Exception as exc:
                    self.errors.report(exc, f"to send to {self.label(lane.target)}")
                    outcome = Outcome("retry", error=f"{type(exc).__name__}: {safe_message(exc)}")
                finished = time.monotonic()
                if outcome.kind == "delivered":
                    self._note_attempt(lane.target, outcome, finished - started)
                    done.append(delivery)
                    if len(done) >= 32 or finished - marked > 0.05:
                        self._mark_delivered(lane, done)
                        marked = finished
                    continue
                self._mark_delivered(lane, done)
                if not self._settle(lane, delivery, outcome, finished - started):
                    return
        finally:
            try:
                self._mark_delivered(lane, done)
            finally:
                outbox.release(lane, time.time())

    # -- batches ---------------------------------------------------------------------

    def _more_lanes(self, target: str, held: list[Lane], have: int) -> Iterator[Lane]:
        """Claim more due lanes of ``target`` while what is in hand (``have``: rows, or
        lanes for a target that takes one row per subject per call) does not fill a
        batch; at most ``4 * batch_size`` lanes are held."""
        strict = self.strict_order(target)
        while have < self.batch_size and len(held) < 4 * self.batch_size and not self._closing:
            more = self.outbox.claim([target], self._owner, time.time(), self._hold_for, 100)
            if more is None:
                return
            held.append(more)
            yield more
            if not more.rows:
                return
            have += 1 if strict else len(more.rows)

    def _linger(self, lanes: list[Lane]) -> bool:
        """With a ``batch_window``: if the claimed rows are fewer than a batch and all
        young, give the lanes back and wait for the oldest to reach the window's age.
        True if it waited (``lanes`` is then empty, and the caller claims again)."""
        if not self.batch_window or self._flushing:
            return False
        rows = [row for lane in lanes for row in lane.rows]
        if not rows or len(rows) >= self.batch_size:
            return False
        if any(row.attempts for row in rows):
            return False  # retries go when due
        until = min(row.created for row in rows) + self.batch_window
        if until <= time.time():
            return False
        while lanes:  # given back one by one: what is still listed is still held
            self.outbox.release(lanes[0], time.time())
            del lanes[0]
        with self._cond:
            while not self._closing and not self._flushing:
                left = until - time.time()
                if left <= 0:
                    break
                self._cond.wait(left)
        return True

    def _run_batches(self, lane: Lane) -> None:
        held = [lane]  # claimed and not yet released
        try:
            self._send_batches(lane.target, held)
        finally:
            failure: Exception | None = None
            for one in list(held):
                try:
                    self.outbox.release(one, time.time())
                except Exception as exc:  # the others are still given back
                    failure = failure or exc
            if failure is not None:
                raise failure

    def _send_batches(self, target: str, held: list[Lane]) -> None:
        """Send the rows of the lanes in ``held`` (claiming more as room allows) in
        batches; a lane is removed from ``held`` once given back."""
        strict = self.strict_order(target)
        for _ in self._more_lanes(target, held, 1 if strict else len(held[0].rows)):
            pass
        if self._linger(held):  # gave them back
            again = self.outbox.claim([target], self._owner, time.time(), self._hold_for, 100)
            if again is None:
                return
            held.append(again)
        waiting: dict[int, deque[Delivery]] = {}
        done: dict[int, list[Delivery]] = {}
        live: list[Lane] = []  # the lanes with rows to send

        def take(one: Lane) -> None:
            waiting[id(one)] = deque(one.rows)
            done[id(one)] = []
            if one.rows:
                live.append(one)

        def finish(one: Lane) -> None:
            try:
                self._mark_delivered(one, done[id(one)])
            finally:
                held.remove(one)
                self.outbox.release(one, time.time())

        for one in list(held):
            take(one)
        renewed = time.time()
        limit = self.batch_bytes
        try:
            while True:
                # Lanes done with are given back at once; while the rows in hand do not
                # fill a batch, more lanes are claimed.
                for one in [one for one in held if one not in live]:
                    finish(one)
                have = len(live) if strict else sum(len(waiting[id(one)]) for one in live)
                for more in self._more_lanes(target, held, have):
                    take(more)
                if not live or self._closing or target in self._disabled:
                    return
                now = time.time()
                if now - renewed > self.lease / 3:
                    for one in list(live):
                        if not self.outbox.renew(one, now, self._hold_for):
                            done[id(one)].clear()  # taken over by another worker
                            live.remove(one)
                    renewed = now
                batch: list[tuple[Lane, Delivery]] = []
                size = 0
                for one in live:
                    rows = waiting[id(one)]
                    while rows and len(batch) < self.batch_size:
                        body = len(rows[0].body)
                        if batch and limit is not None and size + body > limit:
                            break
                        batch.append((one, rows.popleft()))
                        size += body
                        if strict:
                            break
                    if len(batch) >= self.batch_size or (limit is not None and size >= limit):
                        break
                if not batch:
                    return
                started = time.monotonic()
                deliveries = [delivery for _, delivery in batch]
                try:
                    outcomes = list(self.send_batch(deliveries))
                    if len(outcomes) != len(deliveries):
                        raise TaskEventsError(
                            f"send_batch() returned {len(outcomes)} outcomes for "
                            f"{len(deliveries)} rows"
                        )
                except Exception as exc:
                    self.errors.report(exc, f"to send to {self.label(target)}")
                    error = f"{type(exc).__name__}: {safe_message(exc)}"
                    outcomes = [Outcome("retry", error=error)] * len(deliveries)
                duration = time.monotonic() - started
                stopped: set[int] = set()
                for (one, delivery), outcome in zip(batch, outcomes, strict=True):
                    if outcome.kind == "delivered":
                        self._note_attempt(target, outcome, duration)
                        done[id(one)].append(delivery)
                        continue
                    if not self._settle(one, delivery, outcome, duration):
                        stopped.add(id(one))
                        if outcome.kind == "disable":
                            return
                for one in live:
                    self._mark_delivered(one, done[id(one)])
                live = [one for one in live if id(one) not in stopped and waiting[id(one)]]
        finally:
            for one in list(held):  # what was delivered is marked; the caller releases
                self._mark_delivered(one, done.get(id(one), []))

    def _mark_delivered(self, lane: Lane, done: list[Delivery]) -> None:
        if done:
            self.outbox.delivered(lane, done, time.time())
            with self._cond:
                self._counts["delivered"] += len(done)
            done.clear()

    def _note_attempt(self, target: str, outcome: Outcome, duration: float) -> None:
        last = self._last.get(target)
        if last is None:
            last = self._last[target] = {}
        last["status"] = outcome.status
        last["error"] = outcome.error
        last["duration"] = round(duration, 4)

    def _settle(self, lane: Lane, delivery: Delivery, outcome: Outcome, duration: float) -> bool:
        """Record ``outcome``; True if the lane may go on to its next row."""
        now = time.time()
        self._note_attempt(lane.target, outcome, duration)
        attempt = Attempt(now, outcome.status, duration, outcome.error, outcome.response)
        made = delivery.attempts + 1
        if outcome.kind == "retry" and made < len(self.retry_schedule):
            wait = self.retry_schedule[made]
            if self.jitter:
                wait *= 1 + random.uniform(-self.jitter, self.jitter)
            if outcome.retry_after is not None:
                wait = max(wait, min(outcome.retry_after, MAX_RETRY_AFTER))
            self.outbox.failed(lane, delivery, attempt, retry_at=now + wait)
            self._count("retries")
            self._log_failure(lane.target, made, outcome, wait)
            return False
        if outcome.kind == "retry":
            reason = f"gave up after {made} attempts; the last: {outcome.error}"
        else:
            reason = outcome.error or outcome.kind
        disable = reason if outcome.kind == "disable" else None
        self.outbox.failed(
            lane, delivery, attempt, retry_at=None, dead_reason=reason, disable=disable
        )
        if disable is not None:
            self._disabled = {*self._disabled, lane.target}  # the other workers stop too
        self._count("dead")
        logger.warning(
            "%s: event %s (%s for %r) to %s is a dead letter: %s",
            type(self).__name__,
            delivery.event_id,
            delivery.event_type,
            delivery.subject,
            self.label(lane.target),
            reason,
        )
        return outcome.kind != "disable"

    def _log_failure(self, target: str, attempt: int, outcome: Outcome, wait: float) -> None:
        """A warning per target at most every 60 s: a sink that is down is not silent."""
        now = time.monotonic()
        if now - self._failure_logged.get(target, -1e9) < 60.0:
            return
        self._failure_logged[target] = now
        logger.warning(
            "%s: delivery to %s failed (attempt %d): %s; retrying in %.0fs (more failures "
            "of this target are not logged for a minute)",
            type(self).__name__,
            self.label(target),
            attempt,
            outcome.error or outcome.kind,
            wait,
        )

    def _count(self, name: str) -> None:
        with self._cond:
            self._counts[name] += 1

    # -- control ---------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, Any]:
        """Totals (pending, retrying, dead, delivered, unwritten) over this adapter's
        targets, as the outbox holds them (so across every process sharing it), this
        process's counters (received, written, coalesced, retries, unwritten_dropped,
        errors), and ``endpoints``: per target, the same totals and the last attempt."""
        per_target = {} if self._closed else self.outbox.stats()
        endpoints: dict[str, dict[str, Any]] = {}
        totals = dict.fromkeys(("pending", "retrying", "dead", "delivered"), 0)
        for target in self._targets:
            slot = dict(
                per_target.get(
                    target,
                    {"pending": 0, "retrying": 0, "dead": 0, "delivered": 0, "disabled": None},
                )
            )
            slot["last_attempt"] = dict(self._last.get(target, {}))
            endpoints[target] = slot
            for key in totals:
                totals[key] += slot[key]
        with self._cond:
            counts: dict[str, Any] = dict(self._counts)
            counts["unwritten"] = len(self._unwritten) + self._writing_held
        counts.update(totals)
        counts["in_flight"] = sum(self._in_flight.values())
        counts["errors"] = self.errors.count + self.write_errors.count
        counts["endpoints"] = endpoints
        counts["closed"] = self._closed
        return counts

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing of this adapter's targets is pending or in flight
        (rate-limited progress goes at once; rows waiting for a retry keep their time,
        so this can take as long as the retry schedule; the rows of a disabled target
        are not waited for). True once done, False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._started:
            self._start()
        with self._cond:
            self._flushing += 1
        hurried = False
        try:
            while True:
                if self._unwritten:
                    self._write_held()
                    hurried = False
                try:
                    if not hurried:  # once (a worker's lane may hold the lock a while)
                        self.outbox.hurry(self._targets, time.time())
                        hurried = True
                    pending = self.outbox.pending(self._targets)
                except Exception as exc:
                    self.errors.report(exc, "to read the outbox", traceback=False)
                    pending = 1
                with self._cond:
                    if (
                        not pending
                        and not self._unwritten
                        and not self._writing_held
                        and not any(self._in_flight.values())
                    ):
                        return True
                    self._wake = True
                    self._cond.notify_all()
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(0.05 if remaining is None else min(remaining, 0.05))
        finally:
            with self._cond:
                self._flushing -= 1

    def close(self, timeout: float = 5.0) -> None:
        """Disconnect, deliver what is due (waiting up to ``timeout`` seconds), stop the
        workers and close the outbox. What is left stays in the outbox (on disk, for a
        :class:`~taskevents.adapters.outbox.SQLiteOutbox`) and is delivered by the next
        adapter that opens it.
        Idempotent."""
        self.disconnect()
        with self._cond:
            if self._closing:
                return
        # One deadline for all of it: flushing, then the workers' current sends.
        deadline = time.monotonic() + max(timeout, 0.1)
        if self._started and timeout > 0:
            self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        hung = [t for t in self._threads if t.is_alive()]
        left = 0
        with contextlib.suppress(Exception):
            left = self.outbox.pending(self._targets)
        if left:
            logger.warning(
                "%s closed with %d row%s still in the outbox; they are delivered when an "
                "adapter opens it again",
                type(self).__name__,
                left,
                "" if left == 1 else "s",
            )
        if self._unwritten:
            logger.warning(
                "%s closed with %d row%s that the outbox could not take: lost",
                type(self).__name__,
                len(self._unwritten),
                "" if len(self._unwritten) == 1 else "s",
            )
        if not self._started:
            logger.warning(
                "%s closed without ever being connected: it received no event "
                "(call .connect() to receive them)",
                type(self).__name__,
            )
        if not hung:
            try:
                self.outbox.close()
            except Exception as exc:
                self.errors.report(exc, "to close the outbox", traceback=False)
        self._closed = True
        _live.discard(self)
