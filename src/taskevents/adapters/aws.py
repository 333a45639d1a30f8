"""Events to AWS: EventBridge, SNS and SQS, durably, at least once.

::

    from taskevents.adapters.aws import EventBridgeAdapter, SNSAdapter, SQSAdapter

    EventBridgeAdapter("orders-bus", region_name="eu-west-1").connect(emitter)
    SNSAdapter("arn:aws:sns:eu-west-1:123456789012:task-events").connect(emitter)
    SQSAdapter("https://sqs.eu-west-1.amazonaws.com/123456789012/tasks.fifo").connect(emitter)

Each event travels as its CloudEvents 1.0 structure
(:meth:`TaskEvent.to_cloudevent() <taskevents.TaskEvent.to_cloudevent>`): the ``Detail``
of an EventBridge entry, the message of SNS and the body of SQS. The adapters stand on
:class:`~taskevents.adapters.outbox.DurableAdapter`: :meth:`~taskevents.Adapter.handle`
writes the event to an outbox (a SQLite file) and returns, and worker threads send it
from there in batches of up to 10, keeping the order of each subject, retrying what AWS
throttles or fails, and keeping what it refuses for good as dead letters
(``taskevents outbox dead|retry|purge``). Requires ``pip install 'taskevents[aws]'``.

Credentials and region come from boto3's usual chain (environment, shared files,
instance or task role), or from the ``region_name``, ``session`` or ``client`` given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from taskevents._checks import number
from taskevents._optional import require
from taskevents._reporting import safe_message
from taskevents.events import TASK_PROGRESS, TaskEvent, format_time
from taskevents.exceptions import ValidationError

from .base import _check_types
from .outbox import Delivery, DurableAdapter, Outbox, Outcome

boto3 = require("boto3", extra="aws", needed_by="the AWS adapters")

import botocore.awsrequest  # noqa: E402  (after the check above: boto3 brings botocore)
import botocore.config  # noqa: E402
import botocore.exceptions  # noqa: E402

from ._netguard import attach as _watch_connection  # noqa: E402  (urllib3: botocore's)
from ._netguard import deadline as _deadline  # noqa: E402

__all__ = [
    "AWS_RETRY_SCHEDULE",
    "MAX_BATCH",
    "MAX_ENTRY_BYTES",
    "EventBridgeAdapter",
    "SNSAdapter",
    "SQSAdapter",
]

logger = logging.getLogger("taskevents")

#: Seconds to wait before each attempt, the first included: at once, 1 s, 5 s, 30 s,
#: 2 min, 10 min, 30 min, 1 h, 3 h, 6 h, 12 h, 24 h (about two days in all), then a dead
#: letter. (Each attempt is one request: the adapters turn botocore's own retries off.)
AWS_RETRY_SCHEDULE: tuple[float, ...] = (
    0.0,
    1.0,
    5.0,
    30.0,
    120.0,
    600.0,
    1800.0,
    3600.0,
    10800.0,
    21600.0,
    43200.0,
    86400.0,
)

#: Most entries PutEvents, PublishBatch and SendMessageBatch take in one call.
MAX_BATCH = 10
#: Most bytes of one entry, and of one call's entries together (256 KiB), for all three.
MAX_ENTRY_BYTES = 256 * 1024

#: The default outbox file of the AWS adapters (several adapters may share one).
DEFAULT_OUTBOX = "taskevents-aws.sqlite3"

# -- what AWS answers, sorted -------------------------------------------------------------

#: The bus, topic or queue does not exist.
_MISSING = frozenset(
    {
        "ResourceNotFoundException",
        "NotFound",
        "NotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    }
)
#: The credentials are not allowed to, or are not valid.
_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "MissingAuthenticationToken",
        "IncompleteSignature",
        "KMS.AccessDeniedException",
        "KMSAccessDenied",
        "KMSDisabled",
        "KMS.DisabledException",
    }
)
#: Worth another try later.
_TRANSIENT = frozenset(
    {
        "InternalFailure",
        "InternalError",
        "InternalErrorException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Throttling",
        "Throttled",
        "ThrottlingException",
        "SlowDown",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "KMSThrottling",
        "KMSThrottlingException",
        "KmsThrottled",
        "KMS.ThrottlingException",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
    }
)

_GROUP_ID = re.compile(r"[\x21-\x7e]{1,128}")
_BUS_NAME = re.compile(r"[/.\-_A-Za-z0-9]{1,256}")
_BUS_ARN = re.compile(r"arn:aws[\w-]*:events:([a-z0-9-]+):\d{12}:event-bus/[/.\-_A-Za-z0-9]{1,256}")
_TOPIC_ARN = re.compile(r"arn:aws[\w-]*:sns:([a-z0-9-]+):\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?")
_QUEUE_URL = re.compile(r"https?://([^/\s]+)/\d{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?")
_QUEUE_HOST_REGION = re.compile(
    r"(?:sqs\.([a-z0-9-]+)\.amazonaws\.com|([a-z0-9-]+)\.queue\.amazonaws\.com)"
)


_REGION = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
#: What SQS takes in a body or a String attribute (and SNS in an attribute).
_NOT_XML_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: Runs that look like keys, tokens or signatures, hidden from logs and records.
_SECRETISH = re.compile(r"[A-Za-z0-9+/=_-]{32,}")


def _clean(message: str) -> str:
    """AWS's error message, fit for a log and a record: its first line only (a signature
    error goes on with the canonical request, session token included), clipped, with
    anything that looks like a key or a token hidden."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    first = _SECRETISH.sub("(hidden)", first)
    return first if len(first) <= 300 else first[:297] + "..."


def _check_endpoint(endpoint_url: object) -> str:
    if not isinstance(endpoint_url, str):
        raise ValidationError("endpoint_url", "an http:// or https:// URL", endpoint_url)
    try:
        parts = urlsplit(endpoint_url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValidationError("endpoint_url", "a well-formed URL", endpoint_url) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in endpoint_url:
        raise ValidationError(
            "endpoint_url", "an http:// or https:// URL with a host", endpoint_url
        )
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            "endpoint_url",
            "a URL without user:password@ (credentials come from boto3's chain)",
            f"{parts.scheme}://(hidden)@{parts.hostname}",
        )
    return endpoint_url


def _text(value: object) -> str:
    """``value`` with the characters SQS and SNS refuse in an attribute replaced by
    U+FFFD."""
    return _NOT_XML_TEXT.sub("\ufffd", str(value))


def _watch_botocore_connections() -> None:
    """Let the send deadline see botocore's connections: each notes itself when it sends
    (a no-op outside a :func:`~taskevents.adapters._netguard.deadline` block), so that a
    target that trickles its answer is cut off at the deadline, as webhooks are.

    This wraps ``AWSConnection.request`` for the whole process, since botocore offers no
    hook that sees the connection: outside an adapter's send nothing changes (the note
    is a dictionary lookup), and if botocore ever drops the method, the wrapper is not
    installed and only the deadline is lost (read timeouts still apply).
    """
    cls: Any = getattr(botocore.awsrequest, "AWSConnection", None)
    if cls is None or not callable(getattr(cls, "request", None)):
        return
    if getattr(cls.request, "_taskevents_watched", False):
        return
    original: Callable[..., Any] = cls.request

    def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        _watch_connection(self)
        return original(self, *args, **kwargs)

    request._taskevents_watched = True  # type: ignore[attr-defined]
    cls.request = request


_watch_botocore_connections()


def _group_id(value: str) -> str:
    """``value`` if SNS and SQS take it as a message group or deduplication id (1 to 128
    printable ASCII characters), else a digest of it that they take."""
    if _GROUP_ID.fullmatch(value):
        return value
    return "sha256-" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _json(document: object) -> str:
    # ASCII only: every character escaped is one SQS and SNS accept, whatever the data.
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _error_code(exc: Exception) -> tuple[str, int | None, str]:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return str(error.get("Code") or ""), status, str(error.get("Message") or "")


class _AWSAdapter(DurableAdapter):
    """What the three adapters share: the client, batches, and what each error means."""

    #: boto3's name of the service.
    service: ClassVar[str]
    #: What the target is called in messages ("event bus", "topic", "queue").
    noun: ClassVar[str]
    batch_size = MAX_BATCH
    batch_bytes = MAX_ENTRY_BYTES

    def __init__(
        self,
        name: str,
        *,
        region_hint: str | None,
        client: Any,
        session: Any,
        region_name: str | None,
        endpoint_url: str | None,
        timeout: float,
        progress: bool,
        outbox: str | os.PathLike[str] | Outbox,
        workers: int,
        retry_schedule: Sequence[float],
        jitter: float,
        lease: float,
        progress_interval: float,
        poll_interval: float,
        max_unwritten: int,
        batch_window: float,
        types: Iterable[str] | None,
        subjects: Iterable[str] | None,
    ) -> None:
        self.timeout = number(timeout, "timeout", above=0)
        if self.timeout > 3600:
            raise ValidationError("timeout", "at most 3600 seconds", timeout)
        if not isinstance(progress, bool):
            raise ValidationError("progress", "True or False", progress)
        checked = None if types is None else _check_types(types)
        self.progress = progress or (checked is not None and TASK_PROGRESS in checked)
        self.name = name
        self.client = self._client(client, session, region_name or region_hint, endpoint_url)
        self.region_name: str | None = getattr(self.client.meta, "region_name", None)
        target = self._target()
        super().__init__(
            targets=[target],
            outbox=outbox,
            workers=workers,
            retry_schedule=retry_schedule,
            jitter=jitter,
            lease=lease,
            progress_interval=progress_interval,
            poll_interval=poll_interval,
            max_unwritten=max_unwritten,
            batch_window=batch_window,
            types=types,
            subjects=subjects,
        )
        self.target = target
        self._causes: dict[str, str] = {}
        self._causes_lock = threading.Lock()

    def _client(
        self, client: Any, session: Any, region_name: str | None, endpoint_url: str | None
    ) -> Any:
        if client is not None:
            if session is not None or endpoint_url is not None:
                raise ValidationError(
                    "client", "a client, or session/endpoint_url to make one (not both)", client
                )
            if not callable(getattr(client, self._operation, None)) or not hasattr(client, "meta"):
                raise ValidationError(
                    "client", f"a boto3 {self.service!r} client", type(client).__name__
                )
            return client
        if region_name is not None and (
            not isinstance(region_name, str) or not _REGION.fullmatch(region_name)
        ):
            raise ValidationError(
                "region_name", "an AWS region name such as 'eu-west-1'", region_name
            )
        if endpoint_url is not None:
            _check_endpoint(endpoint_url)
        if session is None:
            session = boto3.session.Session()  # one per adapter: sessions are not thread-safe
        elif not callable(getattr(session, "client", None)):
            raise ValidationError("session", "a boto3.session.Session", type(session).__name__)
        config = botocore.config.Config(
            # One request per attempt: the outbox's schedule retries, and the deadline
            # bounds one request.
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=min(self.timeout, 5.0),
            read_timeout=self.timeout,
            user_agent_extra="taskevents",
        )
        try:
            return session.client(
                self.service, region_name=region_name, endpoint_url=endpoint_url, config=config
            )
        except botocore.exceptions.InvalidRegionError:
            raise ValidationError(
                "region_name", "an AWS region name such as 'eu-west-1'", region_name
            ) from None
        except ValueError as exc:  # botocore: "Invalid endpoint"
            raise ValidationError("endpoint_url", "a URL botocore takes", str(exc)) from None
        except botocore.exceptions.NoRegionError:
            raise ValidationError(
                "region_name",
                "an AWS region: pass region_name=, or set AWS_DEFAULT_REGION, "
                "or a region in the AWS profile",
                None,
            ) from None

    #: The client method that sends a batch.
    _operation: ClassVar[str]

    # -- what a subclass says ------------------------------------------------------------

    def _target(self) -> str:
        """The outbox's name of the target (set once the client is made)."""
        raise NotImplementedError

    def entry(self, event: TaskEvent) -> dict[str, Any]:
        """What one event is sent as (stored in the outbox as JSON)."""
        raise NotImplementedError

    def _call(self, entries: list[dict[str, Any]]) -> list[tuple[bool, str, str, bool]]:
        """One batch call; per entry: (delivered, error code, message, sender's fault)."""
        raise NotImplementedError

    def _entry_bytes(self, entry: dict[str, Any]) -> int:
        raise NotImplementedError

    def _refuse(self, entry: dict[str, Any]) -> str | None:
        """Why the service would refuse ``entry`` whatever the moment, if it would."""
        return None

    # -- DurableAdapter ------------------------------------------------------------------

    def rows(self, event: TaskEvent) -> list[tuple[str, bytes]]:
        if event.type == TASK_PROGRESS and not self.progress:
            return []
        return [(self.target, _json(self.entry(event)).encode("ascii"))]

    def label(self, target: str) -> str:
        return f"{self.noun} {self.name}"

    def timeout_for(self, target: str) -> float:
        return self._call_deadline() + 5.0

    def _call_deadline(self) -> float:
        """The longest one call may take, connecting, sending and reading the answer."""
        return self.timeout + min(self.timeout, 5.0)

    def send(self, delivery: Delivery) -> Outcome:
        return self.send_batch([delivery])[0]

    def send_batch(self, deliveries: Sequence[Delivery]) -> Sequence[Outcome]:
        entries: list[dict[str, Any] | None] = []
        outcomes: list[Outcome | None] = []
        for delivery in deliveries:
            entry, refused = self._load(delivery)
            entries.append(entry)
            outcomes.append(refused)
        ready = [i for i, o in enumerate(outcomes) if o is None]
        if ready:
            sent = self._attempt([entries[i] for i in ready])  # type: ignore[misc]
            for i, outcome in zip(ready, sent, strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def _load(self, delivery: Delivery) -> tuple[dict[str, Any] | None, Outcome | None]:
        try:
            entry = json.loads(delivery.body)
        except ValueError as exc:
            return None, Outcome("dead", error=f"the stored entry is not JSON: {exc}")
        refused = self._refuse(entry)
        if refused is not None:
            return None, Outcome("dead", error=f"{refused}: it was not sent")
        size = self._entry_bytes(entry)
        if size > MAX_ENTRY_BYTES:
            return None, Outcome(
                "dead",
                error=f"the entry is {size:,} bytes; {self.service} takes at most "
                f"{MAX_ENTRY_BYTES:,} (256 KiB): it was not sent",
            )
        return entry, None

    def _attempt(self, entries: list[dict[str, Any]]) -> list[Outcome]:
        limit = self._call_deadline()
        watch: list[Any] = [0.0, None, False]
        try:
            with _deadline(limit) as watch:
                results = self._call(entries)
        except (botocore.exceptions.ClientError, botocore.exceptions.ParamValidationError) as exc:
            code, status, message = _error_code(exc)
            message = _clean(message)
            if isinstance(exc, botocore.exceptions.ParamValidationError):
                code, message = "ParamValidationError", _clean(safe_message(exc))
            outcome = self._judge(code, message, status, sender=None)
            if outcome.kind == "dead" and len(entries) > 1:
                # The call was refused for something in it: find out which, one by one.
                return [self._attempt([entry])[0] for entry in entries]
            return [outcome] * len(entries)
        except botocore.exceptions.NoCredentialsError as exc:
            return [self._retry("credentials", f"no AWS credentials found ({exc})")] * len(entries)
        except (
            botocore.exceptions.PartialCredentialsError,
            botocore.exceptions.CredentialRetrievalError,
        ) as exc:
            return [self._retry("credentials", f"AWS credentials: {safe_message(exc)}")] * len(
                entries
            )
        except Exception as exc:
            # No connection, a timeout, an answer botocore could not read (a proxy's page,
            # a cut-off reply): retried; the outbox logs the first failure of a target.
            if watch[2]:
                error = f"no whole answer within {limit:g}s"
            elif isinstance(exc, botocore.exceptions.BotoCoreError):
                error = f"{type(exc).__name__}: {_clean(safe_message(exc))}"
            else:
                logger.debug("%s: an unreadable answer", type(self).__name__, exc_info=exc)
                error = f"an answer that could not be read ({type(exc).__name__})"
            return [Outcome("retry", error=error)] * len(entries)

        self._clear_causes()
        outcomes = []
        for delivered, code, message, sender in results:
            if delivered:
                outcomes.append(Outcome.delivered())
            else:
                outcomes.append(self._judge(code, _clean(message), None, sender=sender))
        return outcomes

    def _judge(
        self, code: str, message: str, status: int | None, *, sender: bool | None
    ) -> Outcome:
        what = f"{code}: {message}" if message else code
        if code in _MISSING:
            return self._disable("missing", f"the {self.noun} {self.name} does not exist ({what})")
        if code.lower().startswith("kms") and code not in _TRANSIENT:
            return self._disable(
                "kms",
                f"the {self.noun} {self.name} cannot use its KMS key ({what}); the key must "
                "exist, be enabled, and allow the credentials to use it",
            )
        if code in _DENIED:
            return self._disable(
                "denied",
                f"AWS refused access to the {self.noun} {self.name} ({what}); the "
                "credentials need the permissions the AWS page of the docs lists",
            )
        if code in _TRANSIENT or status == 429 or (status is not None and status >= 500):
            return Outcome("retry", status, error=what)
        if sender is False:
            return Outcome("retry", status, error=what)
        if sender is True or (status is not None and 400 <= status < 500) or code:
            return Outcome("dead", status, error=f"refused by {self.service}: {what}")
        return Outcome("retry", status, error=what or "failed without an error code")

    def _disable(self, cause: str, text: str) -> Outcome:
        self._log_cause(cause, text, level=logging.ERROR)
        return Outcome(
            "disable",
            error=f"{text}; the target is disabled: its events wait in the outbox until it "
            "is enabled again (`taskevents outbox enable`, or a restart of the adapter)",
        )

    def _retry(self, cause: str, text: str) -> Outcome:
        self._log_cause(cause, text, level=logging.ERROR)
        return Outcome("retry", error=text)

    def _log_cause(self, cause: str, text: str, *, level: int) -> None:
        """One log record per cause, until a call goes through again."""
        with self._causes_lock:
            if cause in self._causes:
                return
            self._causes[cause] = text
        logger.log(level, "%s: %s", type(self).__name__, text)

    def _clear_causes(self) -> None:
        if self._causes:
            with self._causes_lock:
                self._causes.clear()

    def _start(self) -> None:
        # A target disabled by an earlier run (a missing queue, a denied access) is
        # tried again: restarting after fixing the cause is what one does.
        if not self._started:
            try:
                reason = self.outbox.disabled().get(self.target)
                if reason is not None and self.outbox.enable(self.target):
                    logger.info(
                        "%s: %s was disabled (%s); enabled again at start",
                        type(self).__name__,
                        self.label(self.target),
                        reason,
                    )
            except Exception as exc:
                self.errors.report(exc, "to read the outbox's disabled targets", traceback=False)
        super()._start()


def _region_of_arn(pattern: re.Pattern[str], value: str) -> str | None:
    match = pattern.fullmatch(value)
    return match.group(1) if match else None


class EventBridgeAdapter(_AWSAdapter):
    """Puts events on an EventBridge event bus (PutEvents, up to 10 entries a call).

    :param event_bus_name: the bus's name or ARN (default: the account's ``default``
        bus).
    :param source: each entry's ``Source`` (default: the event's ``source``, the
        emitter's); it may not begin with ``aws.``.
    :param detail_type: each entry's ``DetailType`` (default: the CloudEvents type,
        e.g. ``io.taskevents.task_completed``).
    :param client: a boto3 ``events`` client to use (default: one made from
        ``session``, ``region_name`` and ``endpoint_url``).
    :param session: a ``boto3.session.Session`` (e.g. for a named profile).
    :param region_name: the region (default: the bus ARN's, or boto3's chain).
    :param endpoint_url: another endpoint (a VPC endpoint, or a local stand-in).
    :param timeout: seconds to wait for AWS to answer a call.
    :param progress: also send ``task_progress`` (coalesced per task, at most one per
        subject per ``progress_interval``); the same as listing it in ``types``.
    :param outbox: the SQLite file events wait in (or an
        :class:`~taskevents.adapters.outbox.Outbox`).

    The other options (``workers``, ``retry_schedule``, ``jitter``, ``lease``,
    ``progress_interval``, ``poll_interval``, ``max_unwritten``, ``batch_window``,
    ``types``, ``subjects``) are
    :class:`~taskevents.adapters.outbox.DurableAdapter`'s.

    An entry AWS fails with ``InternalFailure`` or ``ThrottlingException`` is retried on
    its own; an entry it refuses (``MalformedDetail``, ``InvalidArgument``, ...) and one
    over 256 KiB (never sent) become dead letters; a bus that does not exist, or access
    denied, disables the target (logged once) until the adapter starts again.
    """

    service = "events"
    noun = "event bus"
    _operation = "put_events"

    def __init__(
        self,
        event_bus_name: str = "default",
        *,
        source: str | None = None,
        detail_type: str | None = None,
        client: Any = None,
        session: Any = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        timeout: float = 10.0,
        progress: bool = False,
        outbox: str | os.PathLike[str] | Outbox = DEFAULT_OUTBOX,
        workers: int = 2,
        retry_schedule: Sequence[float] = AWS_RETRY_SCHEDULE,
        jitter: float = 0.1,
        lease: float = 30.0,
        progress_interval: float = 5.0,
        poll_interval: float = 1.0,
        max_unwritten: int = 100_000,
        batch_window: float = 0.0,
        types: Iterable[str] | None = None,
        subjects: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(event_bus_name, str) or not (
            _BUS_NAME.fullmatch(event_bus_name) or _BUS_ARN.fullmatch(event_bus_name)
        ):
            raise ValidationError(
                "event_bus_name", "an event bus name or ARN (letters, digits, ._-/)", event_bus_name
            )
        if source is not None and (
            not isinstance(source, str) or not 1 <= len(source) <= 256 or source.startswith("aws.")
        ):
            raise ValidationError(
                "source", "1 to 256 characters, not beginning with 'aws.'", source
            )
        if detail_type is not None and (
            not isinstance(detail_type, str) or not 1 <= len(detail_type) <= 128
        ):
            raise ValidationError("detail_type", "1 to 128 characters", detail_type)
        self.event_bus_name = event_bus_name
        self.source = source
        self.detail_type = detail_type
        region = _region_of_arn(_BUS_ARN, event_bus_name)
        super().__init__(
            event_bus_name,
            region_hint=region,
            client=client,
            session=session,
            region_name=region_name,
            endpoint_url=endpoint_url,
            timeout=timeout,
            progress=progress,
            outbox=outbox,
            workers=workers,
            retry_schedule=retry_schedule,
            jitter=jitter,
            lease=lease,
            progress_interval=progress_interval,
            poll_interval=poll_interval,
            max_unwritten=max_unwritten,
            batch_window=batch_window,
            types=types,
            subjects=subjects,
        )

    def _target(self) -> str:
        # A bus name is unique only within a region: the target names the region too.
        if self.event_bus_name.startswith("arn:"):
            return f"eventbridge:{self.event_bus_name}"
        return f"eventbridge:{self.region_name or '?'}:{self.event_bus_name}"

    def entry(self, event: TaskEvent) -> dict[str, Any]:
        document = event.to_cloudevent()
        return {
            "Time": format_time(event.time),
            "Source": self.source if self.source is not None else event.source,
            "DetailType": self.detail_type if self.detail_type is not None else document["type"],
            "Detail": _json(document),
        }

    def _refuse(self, entry: dict[str, Any]) -> str | None:
        source, detail_type = str(entry.get("Source", "")), str(entry.get("DetailType", ""))
        if not 1 <= len(source) <= 256 or source.startswith("aws."):
            return f"EventBridge takes a source of 1 to 256 characters, not 'aws.*': {source!r}"
        if not 1 <= len(detail_type) <= 128:
            return f"EventBridge takes a detail type of 1 to 128 characters: {detail_type!r}"
        return None

    def _entry_bytes(self, entry: dict[str, Any]) -> int:
        # As AWS counts it: 14 bytes for the time, and the text of the other fields.
        return 14 + sum(
            len(str(entry.get(key, "")).encode("utf-8", "surrogatepass"))
            for key in ("Source", "DetailType", "Detail")
        )

    def _call(self, entries: list[dict[str, Any]]) -> list[tuple[bool, str, str, bool]]:
        request = []
        for entry in entries:
            one = dict(entry)
            one["Time"] = datetime.fromisoformat(str(one["Time"]).replace("Z", "+00:00"))
            one["EventBusName"] = self.event_bus_name
            request.append(one)
        response = self.client.put_events(Entries=request)
        results = response.get("Entries") or []
        if len(results) != len(entries):
            raise botocore.exceptions.ClientError(
                {
                    "Error": {
                        "Code": "InternalFailure",
                        "Message": "PutEvents answered "
                        f"{len(results)} results for {len(entries)} entries",
                    }
                },
                "PutEvents",
            )
        answer = []
        for result in results:
            code = result.get("ErrorCode")
            if code:
                answer.append((False, str(code), str(result.get("ErrorMessage") or ""), True))
            else:
                answer.append((True, "", "", False))
        return answer

    def _judge(
        self, code: str, message: str, status: int | None, *, sender: bool | None
    ) -> Outcome:
        # PutEvents marks no entry error as the sender's or not: its codes say it.
        if sender is True and code in _TRANSIENT:
            sender = None
        return super()._judge(code, message, status, sender=sender)


class _MessageAdapter(_AWSAdapter):
    """SNS and SQS alike: a message per event with attributes, FIFO by the name."""

    #: The batch call's parameter naming the target, its entries, and an entry's body.
    _target_param: ClassVar[str]
    _entries_param: ClassVar[str]
    _body_param: ClassVar[str]
    fifo: bool

    def _target(self) -> str:
        return f"{self.service}:{self.name}"

    def strict_order(self, target: str) -> bool:
        return self.fifo

    def entry(self, event: TaskEvent) -> dict[str, Any]:
        return _message(event, self.fifo)

    def _entry_bytes(self, entry: dict[str, Any]) -> int:
        return _message_bytes(entry)

    def _call(self, entries: list[dict[str, Any]]) -> list[tuple[bool, str, str, bool]]:
        request = []
        for i, entry in enumerate(entries):
            one: dict[str, Any] = {
                "Id": str(i),
                self._body_param: entry["body"],
                "MessageAttributes": _attributes(entry),
            }
            if self.fifo:
                one["MessageGroupId"] = entry["group"]
                one["MessageDeduplicationId"] = entry["dedup"]
            request.append(one)
        send = getattr(self.client, self._operation)
        response = send(**{self._target_param: self.name, self._entries_param: request})
        return _batch_results(response, len(entries))


class SNSAdapter(_MessageAdapter):
    """Publishes events to an SNS topic (PublishBatch, up to 10 messages a call).

    Each message carries the attributes ``event_type``, ``subject`` and ``task_type``
    (strings), for subscriptions' filter policies. On a FIFO topic (its name ends in
    ``.fifo``) the subject is the message group (events of one subject stay in order)
    and the event id the deduplication id.

    :param topic_arn: the topic's ARN (its region is the client's unless
        ``region_name`` says otherwise).

    The other options are :class:`EventBridgeAdapter`'s (but ``event_bus_name``,
    ``source`` and ``detail_type``).
    """

    service = "sns"
    noun = "topic"
    _operation = "publish_batch"
    _target_param = "TopicArn"
    _entries_param = "PublishBatchRequestEntries"
    _body_param = "Message"

    def __init__(
        self,
        topic_arn: str,
        *,
        client: Any = None,
        session: Any = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        timeout: float = 10.0,
        progress: bool = False,
        outbox: str | os.PathLike[str] | Outbox = DEFAULT_OUTBOX,
        workers: int = 2,
        retry_schedule: Sequence[float] = AWS_RETRY_SCHEDULE,
        jitter: float = 0.1,
        lease: float = 30.0,
        progress_interval: float = 5.0,
        poll_interval: float = 1.0,
        max_unwritten: int = 100_000,
        batch_window: float = 0.0,
        types: Iterable[str] | None = None,
        subjects: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(topic_arn, str) or not _TOPIC_ARN.fullmatch(topic_arn):
            raise ValidationError(
                "topic_arn", "an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)", topic_arn
            )
        self.topic_arn = topic_arn
        self.fifo = topic_arn.endswith(".fifo")
        super().__init__(
            topic_arn,
            region_hint=_region_of_arn(_TOPIC_ARN, topic_arn),
            client=client,
            session=session,
            region_name=region_name,
            endpoint_url=endpoint_url,
            timeout=timeout,
            progress=progress,
            outbox=outbox,
            workers=workers,
            retry_schedule=retry_schedule,
            jitter=jitter,
            lease=lease,
            progress_interval=progress_interval,
            poll_interval=poll_interval,
            max_unwritten=max_unwritten,
            batch_window=batch_window,
            types=types,
            subjects=subjects,
        )


class SQSAdapter(_MessageAdapter):
    """Sends events to an SQS queue (SendMessageBatch, up to 10 messages a call).

    Each message carries the attributes ``event_type``, ``subject`` and ``task_type``.
    On a FIFO queue (its name ends in ``.fifo``) the subject is the message group, so
    the events of one subject are received in order, and the event id is the
    deduplication id, so a resend within SQS's five-minute window is dropped by SQS.

    :param queue_url: the queue's URL (its region is the client's unless the URL or
        ``region_name`` says otherwise).

    The other options are :class:`EventBridgeAdapter`'s (but ``event_bus_name``,
    ``source`` and ``detail_type``).
    """

    service = "sqs"
    noun = "queue"
    _operation = "send_message_batch"
    _target_param = "QueueUrl"
    _entries_param = "Entries"
    _body_param = "MessageBody"

    def __init__(
        self,
        queue_url: str,
        *,
        client: Any = None,
        session: Any = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        timeout: float = 10.0,
        progress: bool = False,
        outbox: str | os.PathLike[str] | Outbox = DEFAULT_OUTBOX,
        workers: int = 2,
        retry_schedule: Sequence[float] = AWS_RETRY_SCHEDULE,
        jitter: float = 0.1,
        lease: float = 30.0,
        progress_interval: float = 5.0,
        poll_interval: float = 1.0,
        max_unwritten: int = 100_000,
        batch_window: float = 0.0,
        types: Iterable[str] | None = None,
        subjects: Iterable[str] | None = None,
    ) -> None:
        match = _QUEUE_URL.fullmatch(queue_url) if isinstance(queue_url, str) else None
        if match is None:
            raise ValidationError(
                "queue_url",
                "an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)",
                queue_url,
            )
        host = _QUEUE_HOST_REGION.fullmatch(match.group(1))
        self.queue_url = queue_url
        self.fifo = queue_url.endswith(".fifo")
        super().__init__(
            queue_url,
            region_hint=(host.group(1) or host.group(2)) if host else None,
            client=client,
            session=session,
            region_name=region_name,
            endpoint_url=endpoint_url,
            timeout=timeout,
            progress=progress,
            outbox=outbox,
            workers=workers,
            retry_schedule=retry_schedule,
            jitter=jitter,
            lease=lease,
            progress_interval=progress_interval,
            poll_interval=poll_interval,
            max_unwritten=max_unwritten,
            batch_window=batch_window,
            types=types,
            subjects=subjects,
        )


# -- SNS and SQS alike ----------------------------------------------------------------------


def _message(event: TaskEvent, fifo: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "body": _json(event.to_cloudevent()),
        "event_type": event.type,
        "subject": event.subject,
        "task_type": event.task_type,
    }
    if fifo:
        entry["group"] = _group_id(event.subject)
        entry["dedup"] = _group_id(event.id)
    return entry


_ATTRIBUTES = ("event_type", "subject", "task_type")


def _attributes(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {"DataType": "String", "StringValue": _text(entry[name])}
        for name in _ATTRIBUTES
        if entry.get(name)
    }


def _message_bytes(entry: dict[str, Any]) -> int:
    # The body, and each attribute's name, type and value, as SNS and SQS count them.
    size = len(str(entry.get("body", "")).encode("utf-8", "surrogatepass"))
    for name in _ATTRIBUTES:
        value = entry.get(name)
        if value:
            size += len(name) + len("String") + len(str(value).encode("utf-8", "surrogatepass"))
    return size


def _batch_results(response: dict[str, Any], count: int) -> list[tuple[bool, str, str, bool]]:
    answer: list[tuple[bool, str, str, bool] | None] = [None] * count
    for ok in response.get("Successful") or []:
        index = _index(ok.get("Id"), count)
        if index is not None:
            answer[index] = (True, "", "", False)
    for failed in response.get("Failed") or []:
        index = _index(failed.get("Id"), count)
        if index is not None:
            answer[index] = (
                False,
                str(failed.get("Code") or ""),
                str(failed.get("Message") or ""),
                bool(failed.get("SenderFault")),
            )
    return [
        one if one is not None else (False, "InternalFailure", "no result for this entry", False)
        for one in answer
    ]


def _index(value: object, count: int) -> int | None:
    try:
        index = int(str(value))
    except ValueError:
        return None
    return index if 0 <= index < count else None
