"""Subject state on Redis, shared by every process that emits: :class:`RedisStateStore`.

::

    from taskevents import Emitter
    from taskevents.redis import RedisStateStore

    emitter = Emitter(state=RedisStateStore("redis://127.0.0.1:6379/0"))

Every emit is one Lua script on the server (check the running task, assign the next
seq, fold the event into the state, append it to the history), so seqs stay gap-free
per subject and ``exclusive=True`` holds however many processes emit. The same script
publishes the event to every process (see :class:`RedisBridge`). Needs
``pip install 'taskevents[redis]'`` and Redis 6.2 or newer (not Redis Cluster).

Keys, each under the store's ``prefix``; a subject name goes last, as is, so that any
name (``:`` and ``*`` included) maps to its own keys:

``{prefix}:subject:{name}``
    a hash: ``seq``; ``registered``; ``running`` (the running task ids as a JSON list,
    oldest first) with ``t:{id}``, ``s:{id}``, ``p:{id}`` (each running task's type,
    start time, latest progress); ``l:*`` (the last task that ended); ``m:{key}``
    (metadata, one JSON value per key); ``hbytes`` (the history's size).
``{prefix}:history:{name}``
    a stream with the subject's recent events, the entry id ``{seq}-0``, trimmed to
    ``history_size`` events and ``history_bytes`` characters.
``{prefix}:events``
    a stream of every process's events, newest last, trimmed to about
    ``events_size`` entries: what :class:`RedisBridge` reads. Fields: ``o`` (the
    recording store's :attr:`~RedisStateStore.origin`), ``j`` (the subject), ``q`` (the
    seq), then those of the history; or, when a subject was forgotten, ``o``, ``j`` and
    ``f``.
``{prefix}:stream``
    the :attr:`~RedisStateStore.stream_id`, made by the first process that asks.
``{prefix}:subjects``
    a set of every known subject.
``{prefix}:idle``
    a sorted set of the subjects a retention policy may forget (never registered, no
    task running), scored by their last activity on the server's clock.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from taskevents._checks import name as check_name
from taskevents._checks import number, positive_int
from taskevents._checks import subject as check_subject
from taskevents._optional import require
from taskevents._reporting import ErrorReporter, safe_message
from taskevents._urls import describe_url
from taskevents.events import (
    _ID_PREFIX,
    TASK_STARTED,
    TaskEvent,
    is_event_type,
    json_copy,
    json_copy_sized,
    parse_time,
)
from taskevents.exceptions import (
    NoRunningTask,
    StoreUnavailable,
    SubjectBusy,
    UsageError,
    ValidationError,
)
from taskevents.signals import REMOTE, SIGNALS, bridging_for, subject_forgotten
from taskevents.state import SubjectState, TaskInfo

if TYPE_CHECKING:
    import redis

    #: A script registered with the server, run as ``script(keys, args)``.
    Script = Callable[..., Any]

__all__ = ["RedisBridge", "RedisStateStore", "StoreUnavailable"]

logger = logging.getLogger("taskevents")


_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,64}")
_URL_EXPECTED = "a Redis URL such as redis://127.0.0.1:6379/0 (redis://, rediss:// or unix://)"

# -- the scripts ----------------------------------------------------------------------
# Shared by the scripts that change state. KEYS, always: the subject's hash, its history
# stream, the set of subjects, the sorted set of idle subjects.
_PRELUDE = """
local skey, hkey, subjects_key, idle_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end

-- characters, as Python's len() counts them: UTF-8 bytes less continuation bytes
local function chars(text)
  local _, continuation = string.gsub(text, '[\\128-\\191]', '')
  return #text - continuation
end

local function create(subject)
  redis.call('DEL', hkey)  -- a stream left behind by a lost hash would refuse new ids
  redis.call('HSET', skey, 'seq', 0)
  redis.call('SADD', subjects_key, subject)
  redis.call('ZADD', idle_key, now(), subject)
end

local function save_running(running)
  if #running == 0 then
    redis.call('HDEL', skey, 'running')
  else
    redis.call('HSET', skey, 'running', cjson.encode(running))
  end
end

local function size_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'z' then return tonumber(fields[i + 1]) end
  end
  return 0
end

-- drop the oldest events until the history is within both bounds
local function trim(count, total, max_count, max_bytes)
  local start, last = '-', nil
  while count > 0 and (count > max_count or total > max_bytes) do
    local batch = redis.call('XRANGE', hkey, start, '+', 'COUNT', math.max(count - max_count, 16))
    if #batch == 0 then break end
    for _, entry in ipairs(batch) do
      if not (count > max_count or total > max_bytes) then break end
      total = total - size_of(entry[2])
      count = count - 1
      last = entry[1]
    end
    start = '(' .. last
  end
  if last then
    local dropped = tonumber(string.match(last, '^(%d+)'))
    redis.call('XTRIM', hkey, 'MINID', string.format('%d', dropped + 1))
    redis.call('HSET', skey, 'hbytes', total)
  end
end

-- fold one event into the state and append it to the history; returns its size
local function fold(subject, seq, etype, tid, ttype, data, eid, time, source, size,
                    max_count, max_bytes, running, registered, touch)
  if etype == 'task_progress' then
    if redis.call('HEXISTS', skey, 't:' .. tid) == 1 then
      redis.call('HSET', skey, 'p:' .. tid, data)
    end
  elseif etype == 'task_started' then
    if redis.call('HEXISTS', skey, 't:' .. tid) == 0 then
      table.insert(running, tid)
      save_running(running)
    end
    redis.call('HSET', skey, 't:' .. tid, ttype, 's:' .. tid, time)
    redis.call('HDEL', skey, 'p:' .. tid)
  elseif etype == 'task_completed' or etype == 'task_failed' or etype == 'task_cancelled' then
    local started, progress = time, false
    for i, id in ipairs(running) do
      if id == tid then
        table.remove(running, i)
        save_running(running)
        local got = redis.call('HMGET', skey, 's:' .. tid, 'p:' .. tid)
        started, progress = got[1] or time, got[2]
        redis.call('HDEL', skey, 't:' .. tid, 's:' .. tid, 'p:' .. tid)
        break
      end
    end
    redis.call('HSET', skey, 'l:id', tid, 'l:type', ttype, 'l:started', started,
               'l:ended', time, 'l:outcome', etype, 'l:data', data)
    if progress then
      redis.call('HSET', skey, 'l:progress', progress)
    else
      redis.call('HDEL', skey, 'l:progress')
    end
  end
  redis.call('HSET', skey, 'seq', seq)
  if touch then
    if registered or #running > 0 then
      redis.call('ZREM', idle_key, subject)
    else
      redis.call('ZADD', idle_key, now(), subject)
    end
  end
  size = size + chars(tid) + chars(ttype)
  redis.call('XADD', hkey, string.format('%d-0', seq), 'i', eid, 'y', etype, 'k', tid,
             'n', ttype, 't', time, 's', source, 'd', data, 'z', size)
  local total = redis.call('HINCRBY', skey, 'hbytes', size)
  local count = redis.call('XLEN', hkey)
  if count > max_count or total > max_bytes then
    trim(count, total, max_count, max_bytes)
  end
  return size
end
"""

# KEYS[5]: the stream of every process's events. ARGV: type, subject, task id, has task
# id, task type, data, event id, time, source, size less the task's id and type,
# exclusive, history size, history bytes, origin, events size. Returns {0, seq, task id,
# task type}, {1, running id, running type} (busy), {2} (no such running task) or {3} (a
# started task's id is running already).
_RECORD = """
local etype, subject, tid, ttype = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local got = redis.call('HMGET', skey, 'seq', 'running', 'registered')
local running = {}
if got[2] then running = cjson.decode(got[2]) end
if etype == 'task_started' then
  if #running > 0 then
    if ARGV[11] == '1' then
      local newest = running[#running]
      return {1, newest, redis.call('HGET', skey, 't:' .. newest)}
    end
    if redis.call('HEXISTS', skey, 't:' .. tid) == 1 then return {3} end
  end
  if not got[1] then create(subject) end
else
  if not got[1] then return {2} end
  if ARGV[4] == '0' then
    if #running == 0 then return {2} end
    tid = running[#running]
  end
  ttype = redis.call('HGET', skey, 't:' .. tid)
  if not ttype then return {2} end
end
local seq = (tonumber(got[1]) or 0) + 1
-- a busy subject is never idle: progress leaves its activity time alone
local size = fold(subject, seq, etype, tid, ttype, ARGV[6], ARGV[7], ARGV[8], ARGV[9],
                  tonumber(ARGV[10]), tonumber(ARGV[12]), tonumber(ARGV[13]), running, got[3],
                  etype ~= 'task_progress')
-- published in the same script: an event recorded is an event published
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[15], '*', 'o', ARGV[14], 'j', subject,
           'q', seq, 'i', ARGV[7], 'y', etype, 'k', tid, 'n', ttype, 't', ARGV[8], 's', ARGV[9],
           'd', ARGV[6], 'z', size, 'r', #running)
return {0, seq, tid, ttype, #running}
"""

# ARGV: type, subject, task id, task type, data, event id, time, source, size less the
# task's id and type, seq, history size, history bytes. Returns 1 if applied, else 0.
_APPLY = """
local subject, seq = ARGV[2], tonumber(ARGV[10])
local got = redis.call('HMGET', skey, 'seq', 'running', 'registered')
if not got[1] then create(subject) end
if seq <= (tonumber(got[1]) or 0) then return 0 end
local running = {}
if got[2] then running = cjson.decode(got[2]) end
fold(subject, seq, ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8],
     tonumber(ARGV[9]), tonumber(ARGV[11]), tonumber(ARGV[12]), running, got[3], true)
return 1
"""

# ARGV: subject, then metadata keys and JSON values, alternating.
_REGISTER = """
if redis.call('HEXISTS', skey, 'seq') == 0 then create(ARGV[1]) end
redis.call('HSET', skey, 'registered', '1')
for i = 2, #ARGV, 2 do
  redis.call('HSET', skey, 'm:' .. ARGV[i], ARGV[i + 1])
end
redis.call('ZREM', idle_key, ARGV[1])
"""

# KEYS[5]: the stream of every process's events. ARGV: subject, origin, events size.
# Returns 1 (forgotten), 0 (unknown) or {running id, running type} (busy).
_FORGET = """
local got = redis.call('HMGET', skey, 'seq', 'running')
if not got[1] then return 0 end
if got[2] then
  local running = cjson.decode(got[2])
  if #running > 0 then
    local newest = running[#running]
    return {newest, redis.call('HGET', skey, 't:' .. newest)}
  end
end
redis.call('DEL', skey, hkey)
redis.call('SREM', subjects_key, ARGV[1])
redis.call('ZREM', idle_key, ARGV[1])
-- published too, so that every process's subscribers hear of it, in stream order
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[3], '*', 'o', ARGV[2], 'j', ARGV[1], 'f', '1')
return 1
"""

# KEYS: the subject's hash. ARGV: task id, has task id. Returns {id, type} or nil.
_RUNNING = """
local tid = ARGV[1]
if ARGV[2] == '0' then
  local running = redis.call('HGET', KEYS[1], 'running')
  if not running then return false end
  running = cjson.decode(running)
  tid = running[#running]
end
local ttype = redis.call('HGET', KEYS[1], 't:' .. tid)
if not ttype then return false end
return {tid, ttype}
"""

# KEYS: the subject's hash, its history. ARGV: since seq. Returns the entries after it,
# or nil when some of them are no longer kept (see MemoryStateStore.history).
_HISTORY = """
local seq = redis.call('HGET', KEYS[1], 'seq')
if not seq then return false end
seq = tonumber(seq)
local since = tonumber(ARGV[1])
if since == seq then return {} end
if since > seq then return false end
local oldest = seq + 1
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first > 0 then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
if since < oldest - 1 then return false end
return redis.call('XRANGE', KEYS[2], string.format('%d', since + 1), '+')
"""

# KEYS: the idle subjects. ARGV: keep, idle seconds ('' for no limit). Returns {those idle
# for too long, the longest idle beyond keep}.
_EXPIRED = """
local idle, older = {}, {}
if ARGV[2] ~= '' then
  local t = redis.call('TIME')
  local cutoff = tonumber(t[1]) + tonumber(t[2]) / 1000000 - tonumber(ARGV[2])
  idle = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.6f', cutoff))
end
if ARGV[1] ~= '' then
  local keep = tonumber(ARGV[1])
  local count = redis.call('ZCARD', KEYS[1])
  if count > keep then older = redis.call('ZRANGE', KEYS[1], 0, count - keep - 1) end
end
return {idle, older}
"""


def _dump_time(value: datetime | float) -> str:
    # A float (the emitter's time.time()) as its exact repr: read back, it makes the same
    # datetime as the event's own.
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(float(value))


def _load_time(text: str) -> datetime | float:
    return parse_time(text, "time") if "T" in text else float(text)


def _datetime(text: str) -> datetime:
    value = _load_time(text)
    return value if isinstance(value, datetime) else datetime.fromtimestamp(value, timezone.utc)


def _wrong_type(exc: Exception) -> bool:
    """Whether the server refused a command because a key holds another type."""
    return str(exc).startswith("WRONGTYPE")


def _from_timestamp(value: float) -> datetime:
    if value != value:
        raise ValueError("not a number")
    return datetime.fromtimestamp(value, timezone.utc)


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValidationError("data", "finite numbers", text)
    return value


def _no_constant(text: str) -> Any:
    raise ValidationError("data", "finite numbers", text)


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class RedisStateStore:
    """A :class:`~taskevents.StateStore` on a Redis server, shared by every process
    that uses the same URL and ``prefix``: to them all, it behaves as one
    :class:`~taskevents.MemoryStateStore` would to the threads of one process.
    Thread-safe.

    Nothing is sent to the server before the first operation; an operation that cannot
    reach it in time raises :class:`~taskevents.StoreUnavailable` (nothing is retried:
    an event recorded twice would take two seqs).

    :param url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS)
        or ``unix:///path/to/socket?db=0``; options in its query (e.g.
        ``socket_timeout``) win over the arguments below.
    :param prefix: the start of every key (letters, digits, ``.``, ``_``, ``-``); stores
        with different prefixes share nothing.
    :param history_size: how many events per subject are kept for
        :meth:`~taskevents.StateStore.history`...
    :param history_bytes: ...and how many characters of JSON they may add up to per
        subject (see :attr:`TaskEvent.size <taskevents.TaskEvent.size>`); the oldest go
        first.
    :param events_size: about how many events the stream read by every process's
        :class:`RedisBridge` keeps (``{prefix}:events``); a bridge that falls further
        behind misses some, and says so.
    :param socket_timeout: seconds to wait for the server's answer...
    :param socket_connect_timeout: ...and for a connection.
    :param max_connections: at most this many connections to the server at once (each
        operation holds one while it runs); an operation that finds them all busy waits
        for one, up to ``socket_connect_timeout``.
    :raises ValidationError: a malformed ``url`` or another bad argument, naming it.
    :raises MissingDependency: the ``redis`` package is not installed.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "taskevents",
        history_size: int = 1000,
        history_bytes: int = 1 << 20,
        events_size: int = 10_000,
        socket_timeout: float = 2.0,
        socket_connect_timeout: float = 2.0,
        max_connections: int = 50,
    ) -> None:
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            # No ":": a prefix "a:subject:b" would share keys with the prefix "a".
            raise ValidationError(
                "prefix", "1 to 64 letters, digits, '.', '_' or '-' (no ':')", prefix
            )
        self.prefix = prefix
        self.history_size = positive_int(history_size, "history_size")
        self.history_bytes = positive_int(history_bytes, "history_bytes")
        self.events_size = positive_int(events_size, "events_size")
        #: What marks the events this store records in ``{prefix}:events``, unique to
        #: the store: a :class:`RedisBridge` on it skips them, as this process has them.
        self.origin = uuid.uuid4().hex
        self._stream_id = uuid.uuid4().hex[:16]
        self._corrupt = ErrorReporter("RedisStateStore")
        # subject -> (seq, how many tasks ran after that event): see running_after
        self._running_after: dict[str, tuple[int, int]] = {}
        #: The name of the store's connections on the server (``CLIENT LIST``), unless
        #: the URL sets ``client_name``.
        self.client_name = f"taskevents-store-{self.origin}"
        socket_timeout = number(socket_timeout, "socket_timeout", above=0)
        socket_connect_timeout = number(socket_connect_timeout, "socket_connect_timeout", above=0)
        if not isinstance(url, str):
            raise ValidationError("url", _URL_EXPECTED, url)
        self._where = describe_url(url)
        module = require("redis", extra="redis", needed_by="RedisStateStore")
        retry = importlib.import_module("redis.retry").Retry
        no_backoff = importlib.import_module("redis.backoff").NoBackoff
        self._errors: type[Exception] = module.RedisError
        try:
            # Blocking: many greenlets subscribing at once wait for a connection rather
            # than fail (the plain pool raises past its limit).
            pool = module.BlockingConnectionPool.from_url(
                url,
                decode_responses=True,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_connect_timeout,
                retry=retry(no_backoff(), 0),
                max_connections=positive_int(max_connections, "max_connections"),
                timeout=socket_connect_timeout,
                client_name=self.client_name,
                # Bytes written by someone else that are not UTF-8 must not make every
                # read raise (nor kill the bridge, which copies these options).
                encoding_errors="replace",
            )
            # What the pool does on first use, done now: bad options fail here.
            pool.connection_class(**pool.connection_kwargs)
        except (ValueError, TypeError) as exc:
            raise ValidationError(
                "url", f"{_URL_EXPECTED}; {safe_message(exc, 200)}", self._where
            ) from None
        parts = urlsplit(url)
        database = parts.path.strip("/")
        if parts.scheme in ("redis", "rediss") and database and not database.isdigit():
            # redis-py would take database 0 without a word.
            raise ValidationError(
                "url", f"{_URL_EXPECTED}; the path, if any, is the database number", self._where
            )
        self._pool = pool
        self._client: redis.Redis = module.Redis(connection_pool=pool)
        self._subjects_key = f"{prefix}:subjects"
        self._idle_key = f"{prefix}:idle"
        self._events_key = f"{prefix}:events"
        self._record: Script = self._client.register_script(_PRELUDE + _RECORD)
        self._apply: Script = self._client.register_script(_PRELUDE + _APPLY)
        self._register: Script = self._client.register_script(_PRELUDE + _REGISTER)
        self._forget: Script = self._client.register_script(_PRELUDE + _FORGET)
        self._running: Script = self._client.register_script(_RUNNING)
        self._history: Script = self._client.register_script(_HISTORY)
        self._expired: Script = self._client.register_script(_EXPIRED)

    def __repr__(self) -> str:
        return f"<RedisStateStore {self._where} prefix={self.prefix!r}>"

    #: Every process on the same server and prefix numbers a subject's events in one
    #: sequence (what lets a Socket.IO client resume on another process).
    shared = True

    @property
    def stream_id(self) -> str:
        """Names the sequence this store's seqs belong to: the same in every process on
        the same server and ``prefix`` (kept in ``{prefix}:stream``), and a new one if
        the server lost the prefix's keys (a restart without persistence, a flush), as
        the seqs then start again. A Socket.IO client that resumes with a seq of another
        stream is sent a fresh snapshot. Read from the server each time; while it
        cannot be reached, the last value read (or, before any, one of this process's
        own, which makes resuming clients take a snapshot)."""
        value = self._read_stream_id()
        if value is not None:
            self._stream_id = value
        return self._stream_id

    def _read_stream_id(self) -> str | None:
        """The stream id on the server (made if missing), or None if unreachable."""
        key = f"{self.prefix}:stream"
        try:
            value = self._client.get(key)
            if value is None:
                self._client.set(key, uuid.uuid4().hex[:16], nx=True)
                value = self._client.get(key)
        except self._errors:
            return None
        return value if isinstance(value, str) and value else None

    def _keys(self, subject: str) -> list[str]:
        prefix = self.prefix
        return [
            f"{prefix}:subject:{subject}",
            f"{prefix}:history:{subject}",
            self._subjects_key,
            self._idle_key,
        ]

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(
            f"the Redis state store at {self._where} is unavailable: {safe_message(exc)}"
        )

    def ping(self) -> None:
        """Check that the server answers (what the Flask extension does at start-up).

        :raises ~taskevents.StoreUnavailable: it does not, within the timeouts, or
            refuses (e.g. a wrong password).
        """
        try:
            self._client.ping()
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def close(self) -> None:
        """Close the connections to the server. The store is not used afterwards."""
        self._client.close()
        self._pool.disconnect()

    def __enter__(self) -> RedisStateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the StateStore protocol ------------------------------------------------------

    def record(
        self,
        type: str,
        subject: str,
        task_id: str | None,
        task_type: str | None,
        data: Mapping[str, Any],
        event_id: str,
        time: datetime | float,
        source: str,
        size: int = -1,
        exclusive: bool = False,
    ) -> TaskEvent:
        """See :meth:`taskevents.StateStore.record`: one script on the server."""
        if type == TASK_STARTED and (task_id is None or task_type is None):
            raise ValidationError("task_id", "a task id and type for task_started", task_id)
        # The emitter passes a number, made text on first use: the history needs the text.
        text_id = event_id if isinstance(event_id, str) else _ID_PREFIX + str(event_id)
        base = size
        if base < 0:  # as TaskEvent.size counts, less the task's id and type
            base = json_copy_sized(data, "data")[1] + len(subject) + len(source) + 160
        try:
            reply = self._record(
                [*self._keys(subject), self._events_key],
                [
                    type,
                    subject,
                    task_id or "",
                    "0" if task_id is None else "1",
                    task_type or "",
                    _dumps(data if isinstance(data, dict) else dict(data)),
                    text_id,
                    _dump_time(time),
                    source,
                    base,
                    "1" if exclusive else "0",
                    self.history_size,
                    self.history_bytes,
                    self.origin,
                    self.events_size,
                ],
            )
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        status = reply[0]
        if status == 0:
            _, seq, task_id, task_type, running = reply
            self._note_running(subject, seq, running)
            event = TaskEvent(
                text_id,
                type,
                subject,
                task_id,
                task_type,
                seq,
                time,  # type: ignore[arg-type]  # a float is made a datetime on first use
                source,
                data,
            )
            event._size = base + len(task_id) + len(task_type)
            return event
        if status == 1:
            raise SubjectBusy(subject, reply[1], reply[2])
        if status == 2:
            raise NoRunningTask(subject, task_id)
        raise ValidationError("task_id", "an id not already running", task_id)

    def _note_running(self, subject: str, seq: int, count: int) -> None:
        running = self._running_after
        if len(running) >= 10_000:
            running.clear()  # a hint, not a record: bounded
        running[subject] = (seq, count)

    def running_after(self, subject: str, seq: int) -> bool | None:
        """Whether a task still ran on ``subject`` right after its event ``seq``, if this
        process knows without asking the server (it recorded that event, or its bridge
        brought it in); else None. What the Socket.IO adapter asks of an outcome, to
        tell clients that another task runs on, without a round trip."""
        known = self._running_after.get(subject)
        if known is None or known[0] != seq:
            return None
        return known[1] > 0

    def running_task(self, subject: str, task_id: str | None = None) -> tuple[str, str] | None:
        """See :meth:`taskevents.StateStore.running_task`."""
        try:
            reply = self._running(
                self._keys(subject)[:1], [task_id or "", "0" if task_id is None else "1"]
            )
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return None if reply is None else (reply[0], reply[1])

    def last_seq(self, subject: str) -> int:
        """See :meth:`taskevents.StateStore.last_seq`."""
        try:
            seq = self._client.hget(f"{self.prefix}:subject:{subject}", "seq")
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return int(seq) if seq is not None else 0

    def apply(self, event: TaskEvent) -> bool:
        """See :meth:`taskevents.StateStore.apply`: one script on the server."""
        task_id, task_type = event.task_id, event.task_type
        try:
            applied = self._apply(
                self._keys(event.subject),
                [
                    event.type,
                    event.subject,
                    task_id,
                    task_type,
                    _dumps(dict(event.data)),
                    event.id,
                    _dump_time(event._time),
                    event.source,
                    event.size - len(task_id) - len(task_type),
                    event.seq,
                    self.history_size,
                    self.history_bytes,
                ],
            )
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return bool(applied)

    def register(self, subject: str, metadata: Mapping[str, Any] | None = None) -> None:
        """See :meth:`taskevents.StateStore.register`. Metadata values must be JSON."""
        check_subject(subject)
        args = [subject]
        for key, value in json_copy(dict(metadata or {}), "metadata").items():
            args += [key, _dumps(value)]
        try:
            self._register(self._keys(subject), args)
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def subjects(self) -> list[str]:
        """See :meth:`taskevents.StateStore.subjects`."""
        try:
            members = self._client.smembers(self._subjects_key)
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return sorted(cast("set[str]", members))

    def __contains__(self, subject: object) -> bool:
        """Whether ``subject`` is known."""
        if not isinstance(subject, str):
            return False
        try:
            return bool(self._client.exists(f"{self.prefix}:subject:{subject}"))
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def snapshot(self, subject: str) -> SubjectState | None:
        """See :meth:`taskevents.StateStore.snapshot`: one read of the subject's hash.
        (Metadata keys may come in another order than registered.)"""
        try:
            fields = self._client.hgetall(f"{self.prefix}:subject:{subject}")
        except self._errors as exc:
            if _wrong_type(exc):  # not a hash: written by something else
                self._corrupt.report(exc, f"to read {subject[:64]!r}", traceback=False)
                return None
            raise self._unavailable(exc) from exc
        return self._state(subject, cast("dict[str, str]", fields))

    def _state(self, subject: str, fields: dict[str, str]) -> SubjectState | None:
        """The snapshot in a subject's hash; None if there is none, or if it cannot be
        read (written by something else than this store: reported, once in a while)."""
        if "seq" not in fields:
            return None
        try:
            return self._parse_state(subject, fields)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._corrupt.report(
                exc, f"to read the state of {subject[:64]!r}; left out", traceback=False
            )
            return None

    def _parse_state(self, subject: str, fields: dict[str, str]) -> SubjectState:
        running = tuple(
            TaskInfo(
                task_id,
                fields[f"t:{task_id}"],
                _datetime(fields[f"s:{task_id}"]),
                _json(fields.get(f"p:{task_id}")),
            )
            for task_id in json.loads(fields.get("running", "[]"))
        )
        last = None
        if "l:id" in fields:
            data = json.loads(fields["l:data"])
            error = data.get("error")
            last = TaskInfo(
                task_id=fields["l:id"],
                task_type=fields["l:type"],
                started_at=_datetime(fields["l:started"]),
                progress=_json(fields.get("l:progress")),
                ended_at=_datetime(fields["l:ended"]),
                outcome=fields["l:outcome"][len("task_") :],  # type: ignore[arg-type]
                result=data.get("result"),
                error=error if isinstance(error, Mapping) else None,
                reason=data.get("reason"),
            )
        return SubjectState(
            subject=subject,
            status="busy" if running else "idle",
            seq=int(fields["seq"]),
            current=running[-1] if running else None,
            last=last,
            running=running,
            metadata={
                key[2:]: json.loads(value) for key, value in fields.items() if key[:2] == "m:"
            },
        )

    def snapshot_all(self) -> dict[str, SubjectState]:
        """See :meth:`taskevents.StateStore.snapshot_all`."""
        subjects = self.subjects()
        result = {}
        for start in range(0, len(subjects), 1000):  # bounded replies, one at a time
            chunk = subjects[start : start + 1000]
            try:
                with self._client.pipeline(transaction=False) as pipe:
                    for subject in chunk:
                        pipe.hgetall(f"{self.prefix}:subject:{subject}")
                    replies = pipe.execute(raise_on_error=False)
            except self._errors as exc:
                raise self._unavailable(exc) from exc
            for subject, fields in zip(chunk, replies, strict=True):
                if isinstance(fields, Exception):
                    if not _wrong_type(fields):
                        raise self._unavailable(fields)
                    # not a hash: written by something else, left out
                    self._corrupt.report(fields, f"to read {subject[:64]!r}", traceback=False)
                    continue
                snapshot = self._state(subject, fields)
                if snapshot is not None:  # forgotten meanwhile
                    result[subject] = snapshot
        return result

    def history(self, subject: str, since_seq: int) -> list[TaskEvent] | None:
        """See :meth:`taskevents.StateStore.history`."""
        try:
            entries = self._history(self._keys(subject)[:2], [int(since_seq)])
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        if entries is None:
            return None
        events = []
        for entry_id, flat in entries:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            event = TaskEvent(
                fields["i"],
                fields["y"],
                subject,
                fields["k"],
                fields["n"],
                int(entry_id.partition("-")[0]),
                _load_time(fields["t"]),  # type: ignore[arg-type]
                fields["s"],
                json.loads(fields["d"]),
            )
            event._size = int(fields["z"])
            events.append(event)
        return events

    def forget(self, subject: str) -> bool:
        """See :meth:`taskevents.StateStore.forget`: one script on the server."""
        try:
            reply = self._forget(
                [*self._keys(subject), self._events_key], [subject, self.origin, self.events_size]
            )
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        if isinstance(reply, list):
            raise SubjectBusy(subject, reply[0], reply[1])
        return bool(reply)

    def expired(self, *, keep: int | None, idle_seconds: float | None) -> list[str]:
        """See :meth:`taskevents.StateStore.expired`. Idle time is measured on the
        server's clock, so every process agrees on it."""
        try:
            idle, older = self._expired(
                [self._idle_key],
                ["" if keep is None else keep, "" if idle_seconds is None else repr(idle_seconds)],
            )
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return sorted({*idle, *older})

    def subject_count(self) -> int:
        """See :meth:`taskevents.StateStore.subject_count`."""
        try:
            return int(self._client.scard(self._subjects_key))
        except self._errors as exc:
            raise self._unavailable(exc) from exc


def _id_key(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _entries(reply: Any, key: str) -> list[tuple[str, dict[str, str]]]:
    """The entries of one stream in an ``XREAD`` reply (RESP2: a list of pairs; RESP3: a
    dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(reply.get(key) or [])
    return list(reply[0][1])


class RedisBridge:
    """Brings the events that other processes emit into this one, on the same
    :mod:`~taskevents.signals` as local events but with :data:`~taskevents.signals.REMOTE`
    as the sender::

        store = RedisStateStore("redis://127.0.0.1:6379/0")
        emitter = Emitter(state=store)
        bridge = RedisBridge(store).start()  # e.g. in each web process
        ...
        bridge.close()

    How: the script with which a :class:`RedisStateStore` records an event also appends it
    to the stream ``{prefix}:events``, marked with the store's
    :attr:`~RedisStateStore.origin`. The bridge reads that stream in a daemon thread,
    from where it stood at :meth:`start`; it skips the events of its own store (its
    emitter has delivered them here already) and sends each other one on
    ``SIGNALS[event.type]``. Adapters whose :attr:`~taskevents.Adapter.remote` is true
    (the Socket.IO adapter) take them; the others (logging, webhooks, AWS) leave them to
    the process that emitted them, so that nothing goes out once per process. A process
    that only emits (a worker) starts no bridge: its events are published all the same.

    What it promises: every event recorded after :meth:`start` by another store on the
    same server and ``prefix`` is sent here once, in the order recorded (for a subject,
    by seq). If the connection is lost, the bridge retries, :attr:`retry_initial` seconds
    doubling to :attr:`retry_max`, with one warning per outage and one info line when
    back, and resumes after the last event it read: nothing still in the stream is
    missed. If the stream was trimmed past that point (see ``events_size``), a warning
    says that events were missed.

    Events of a type declared with :func:`~taskevents.define_event_type` arrive only if
    this process declared the type too; others are skipped, with one warning per type.
    A subject forgotten by another process (:meth:`~taskevents.Emitter.forget`, or its
    retention policy) is sent on :data:`~taskevents.signals.subject_forgotten`, by
    :data:`~taskevents.signals.REMOTE`, with the reason ``"forgotten"``. Start one bridge
    per store: two would send each event twice. Receivers run in the bridge's thread.

    :param store: the store whose server, ``prefix`` and connection options to use.
    :param block_ms: how long, in milliseconds, one read waits on the server for new
        events; :meth:`close` returns within about that.
    :raises ValidationError: for a bad argument, naming it.
    """

    #: Seconds before the first attempt to reconnect; doubled after each failure...
    retry_initial: float = 0.1
    #: ...up to this.
    retry_max: float = 5.0
    #: The most events taken in one read.
    batch_size: int = 100

    def __init__(self, store: RedisStateStore, *, block_ms: int = 1000) -> None:
        if not isinstance(store, RedisStateStore):
            raise ValidationError("store", "a RedisStateStore", store)
        self.store = store
        self.block_ms = positive_int(block_ms, "block_ms")
        #: The name of the bridge's connection on the server (``CLIENT LIST``).
        self.client_name = f"taskevents-bridge-{store.origin}"
        module = importlib.import_module("redis")
        self._errors: type[Exception] = module.RedisError
        self._no_stream: type[Exception] = module.ResponseError
        pool = store._pool
        options = dict(pool.connection_kwargs)
        # A blocked read must not look like a dead server.
        options["socket_timeout"] = (options.get("socket_timeout") or 2.0) + self.block_ms / 1000
        options["client_name"] = self.client_name
        self._pool = type(pool)(connection_class=pool.connection_class, **options)
        self._client: redis.Redis = module.Redis(connection_pool=self._pool)
        self._key = store._events_key
        self._last_id: str | None = None
        # The store's stream id when the bridge found its position: another one later
        # means the server lost its data (and the stream with it).
        self._stream_id: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unknown_types: set[str] = set()
        self.errors = ErrorReporter("RedisBridge")

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisBridge {self.store._where} prefix={self.store.prefix!r} {state}>"

    @property
    def running(self) -> bool:
        """Whether the bridge's thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> RedisBridge:
        """Start reading, from the stream's end: events recorded from now on are sent
        here (if the server cannot be reached now, from when it can). Returns the bridge.

        :raises UsageError: if it was started before.
        """
        if self._thread is not None:
            raise UsageError("this RedisBridge was started already; make another")
        # If the server does not answer, the thread finds the end once it does.
        with contextlib.suppress(self._errors):
            self._last_id = self._tail()
            self._stream_id = self.store._read_stream_id()
        self._thread = threading.Thread(
            target=self._run, name="taskevents-redis-bridge", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread (within about ``block_ms``) and close the connection.
        Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.block_ms / 1000 + 5.0)
        self._client.close()
        self._pool.disconnect()

    def __enter__(self) -> RedisBridge:
        """Start the bridge unless started."""
        return self if self._thread is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the thread -------------------------------------------------------------------

    def _tail(self) -> str:
        """The id of the stream's newest entry, or ``0-0``."""
        newest = self._client.xrevrange(self._key, "+", "-", count=1)
        return str(newest[0][0]) if newest else "0-0"

    def _run(self) -> None:
        bridging_for(self.store.origin)
        delay = self.retry_initial
        outage = False
        check = False  # whether the stream may have been trimmed past our position
        while not self._stop.is_set():
            try:
                if self._last_id is None:
                    self._last_id = self._tail()
                    self._stream_id = self.store._read_stream_id()
                elif check:
                    self._check_missed(self._last_id)
                    check = False
                reply = self._client.xread(
                    {self._key: self._last_id}, count=self.batch_size, block=self.block_ms
                )
            except Exception as exc:
                if self._stop.is_set():
                    break
                if not isinstance(exc, self._errors):
                    # Not the server's absence (a reply this code cannot read): never
                    # the end of the bridge; reported, then tried again after a pause.
                    self.errors.report(exc, f"to read {self._key}")
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.retry_max)
                    continue
                if not outage:
                    outage = True
                    logger.warning(
                        "RedisBridge lost the Redis server at %s (%s); reconnecting, to "
                        "resume after event %s of %s",
                        self.store._where,
                        safe_message(exc, 200),
                        self._last_id or "(the end)",
                        self._key,
                    )
                check = True
                self._stop.wait(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            if outage:
                outage = False
                delay = self.retry_initial
                logger.info(
                    "RedisBridge reconnected to %s; resuming after event %s",
                    self.store._where,
                    self._last_id,
                )
            entries = _entries(reply, self._key)
            for entry_id, fields in entries:
                if self._stop.is_set():
                    return
                self._last_id = str(entry_id)
                try:
                    self._dispatch(fields)
                except Exception as exc:  # a bad entry: never the end of the bridge
                    self.errors.report(
                        exc,
                        f"to read event {entry_id} of {self._key}",
                        traceback=not isinstance(exc, (ValidationError, KeyError, ValueError)),
                    )
            if len(entries) >= self.batch_size:
                check = True  # behind: the stream may be trimmed before we catch up

    def _check_missed(self, last_id: str) -> None:
        """Log a warning if events after ``last_id`` were lost before they were read:
        the stream was trimmed past it (its oldest entry is newer; trimming drops the
        oldest first, a read entry may have gone with unread ones), an entry newer than
        it was deleted, or the stream is gone or new (the server lost its data: the
        store's stream id changed), and then read the stream from its start."""
        stream_id = self.store._read_stream_id()
        renewed = None not in (stream_id, self._stream_id) and stream_id != self._stream_id
        if stream_id is not None:
            self._stream_id = stream_id
        try:
            info = self._client.xinfo_stream(self._key)
        except self._no_stream:
            info = None
        if info is None or renewed:
            if last_id != "0-0":
                # It was there when read last: the server lost its data (a restart
                # without persistence, a flush) or someone deleted the key.
                logger.warning(
                    "RedisBridge missed events: %s is gone (the server lost its data, or "
                    "the key was deleted) after event %s; events recorded before then that "
                    "this process had not read are lost to its receivers. Reading it anew "
                    "from its start",
                    self._key,
                    last_id,
                )
                self._last_id = "0-0"
            return
        position = _id_key(last_id)
        first = info.get("first-entry")
        deleted = info.get("max-deleted-entry-id")  # Redis 7 and later
        missed = (last_id != "0-0" and first is not None and _id_key(str(first[0])) > position) or (
            deleted is not None and _id_key(str(deleted)) > position
        )
        if missed:
            logger.warning(
                "RedisBridge missed events: %s was trimmed (raise events_size?) or lost "
                "with the server's data past event %s before it was read; this process's "
                "receivers did not get them",
                self._key,
                last_id,
            )

    def _dispatch(self, fields: Mapping[str, str]) -> None:
        if fields.get("o") == self.store.origin:
            return  # this process's own: delivered here when emitted
        # Anyone who may write to the server may write here: what a store would not
        # have recorded is refused (ValidationError, reported without a traceback).
        subject = check_subject(fields.get("j"), "the entry's subject (j)")
        if "f" in fields:
            subject_forgotten.send(REMOTE, subject=subject, reason="forgotten")
            return
        type_ = fields["y"]
        if not is_event_type(type_):
            if type_ not in self._unknown_types and len(self._unknown_types) < 1000:
                self._unknown_types.add(type_)
                logger.warning(
                    "RedisBridge skips events of the type %r: not declared in this "
                    "process (taskevents.define_event_type)",
                    type_[:64],
                )
            return
        seq = int(fields["q"])
        if seq < 1:
            raise ValidationError("the entry's seq (q)", "a whole number >= 1", seq)
        data = json.loads(fields["d"], parse_float=_finite, parse_constant=_no_constant)
        if not isinstance(data, dict):
            raise ValidationError("the entry's data (d)", "a JSON object", data)
        time = _load_time(fields["t"])
        try:  # what the event's time will be asked for: a datetime, and its text
            (time if isinstance(time, datetime) else _from_timestamp(time)).isoformat()
        except (ValueError, OverflowError, OSError):
            raise ValidationError("the entry's time (t)", "a time", fields["t"]) from None
        event = TaskEvent(
            fields["i"],
            type_,
            subject,
            check_name(fields["k"], "the entry's task id (k)"),
            check_name(fields["n"], "the entry's task type (n)"),
            seq,
            time,  # type: ignore[arg-type]
            fields["s"],
            data,
        )
        event._size = int(fields["z"])
        running = fields.get("r")
        if running is not None:
            self.store._note_running(event.subject, event.seq, int(running))
        SIGNALS[type_].send(REMOTE, event=event)
