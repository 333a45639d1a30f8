"""Signing and verifying webhooks the `Standard Webhooks <https://www.standardwebhooks.com/>`_
way (version 1): what a receiving application needs, and what a sender signs with.

Each request carries three headers: ``webhook-id`` (unique per message, the same on
retries), ``webhook-timestamp`` (seconds since the epoch) and ``webhook-signature``, one
``v1,<base64 HMAC-SHA256>`` per secret, separated by spaces, of the text
``{webhook-id}.{webhook-timestamp}.{body}``. Secrets are written ``whsec_<base64>``; make
one with :func:`generate_secret`. While a secret is rotated the sender signs with both,
and a receiver holding either one accepts the request.

In a Flask application, :func:`webhook_view` verifies the request and hands the view the
decoded JSON body; a request that fails verification gets a JSON 401 naming the problem:

.. code-block:: python

    import os

    from flask import Flask
    from taskevents.webhooks import webhook_view

    app = Flask(__name__)

    @app.post("/hooks")
    @webhook_view(os.environ["TASKEVENTS_WEBHOOK_SECRET"])
    def hooks(payload):
        event = payload["data"]  # TaskEvent.to_dict()
        print(payload["type"], event["subject"], event["task_id"])
        return "", 204

Anywhere else, pass the raw body and the headers to :func:`verify`:

.. code-block:: python

    from taskevents.webhooks import InvalidSignature, verify

    try:
        payload = verify(body, headers, secret)
    except InvalidSignature as exc:
        ...  # answer 401 with str(exc)

This module needs only the standard library; Flask is imported by the Flask helpers alone.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
import secrets as _random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, NoReturn, Protocol, TypeVar

from ._checks import number
from .exceptions import TaskEventsError, ValidationError

__all__ = [
    "DEFAULT_TOLERANCE",
    "MAX_BODY_SIZE",
    "MAX_SIGNATURES",
    "MAX_SIGNATURE_HEADER_LENGTH",
    "HeadersLike",
    "InvalidSignature",
    "decode_secret",
    "generate_secret",
    "receive",
    "sign",
    "signed_headers",
    "verify",
    "webhook_view",
]

R = TypeVar("R")

#: How far, in seconds, a request's ``webhook-timestamp`` may be from now, either way.
DEFAULT_TOLERANCE: Final = 300
#: The largest body :func:`receive` and :func:`webhook_view` read: 1 MiB.
MAX_BODY_SIZE: Final = 1024 * 1024
#: The most signatures accepted in one ``webhook-signature`` header.
MAX_SIGNATURES: Final = 16
#: The longest ``webhook-signature`` header accepted, in characters.
MAX_SIGNATURE_HEADER_LENGTH: Final = 4096
#: The longest ``webhook-id`` accepted, in characters.
MAX_ID_LENGTH: Final = 1024

SECRET_PREFIX: Final = "whsec_"
SECRET_RULE: Final = "a secret written whsec_<base64>"
_SECRET_BYTES: Final = 24

ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"
_HEADERS: Final = (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)

#: What :func:`sign` accepts as a message id: it goes into a header as it is.
_MSG_ID: Final = re.compile(r"[!-~]{1,256}")
_MSG_ID_RULE: Final = "1 to 256 visible ASCII characters (no spaces)"
#: Whole seconds in ASCII digits: ``int()`` would also take " 12", "1_2" and other scripts' digits.
_TIMESTAMP: Final = re.compile(r"[0-9]{1,15}")
_SIGNATURE_LENGTH: Final = hashlib.sha256().digest_size


class InvalidSignature(TaskEventsError):
    """A webhook request failed verification: a header is missing or malformed, its
    timestamp is outside the tolerance, no signature matches, or the body is not JSON.

    The message says which, and never contains a secret.
    """


class HeadersLike(Protocol):
    """Request headers: a :class:`dict`, Werkzeug's ``Headers`` (Flask's
    ``request.headers``) or an ``http.client.HTTPMessage``; anything with ``get()`` and
    ``items()``. Names are matched without regard to case."""

    def get(self, key: str, /) -> str | None: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


class _Hidden:
    """Stands in for a secret in an error: says what it looks like, never what it is."""

    __slots__ = ("_description",)

    def __init__(self, value: object) -> None:
        if isinstance(value, str):
            prefix = "with" if value.startswith(SECRET_PREFIX) else "without"
            self._description = (
                f"<hidden: {len(value)} characters, {prefix} the {SECRET_PREFIX} prefix>"
            )
        else:
            self._description = f"<hidden: a {type(value).__name__}, not a str>"

    def __repr__(self) -> str:
        return self._description


def generate_secret() -> str:
    """A new random secret, ``whsec_`` and the base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(_SECRET_BYTES)).decode("ascii")


@functools.lru_cache(maxsize=64)
def _key(secret: str) -> bytes:
    """The key written in ``secret``; cached, as the same few secrets sign every request.

    :raises ValueError: without the secret in its message.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("no prefix")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if not key:
        raise ValueError("empty")
    return key


def decode_secret(secret: str, field: str = "secret") -> bytes:
    """The key written in ``secret`` (``whsec_<base64>``; the padding may be left out).

    :param field: the name given in the error.
    :raises ~taskevents.ValidationError: ``secret`` is not such a string, or its key is empty. The
        error describes the value without showing it.
    """
    if isinstance(secret, str):
        try:
            return _key(secret)
        except ValueError:
            pass
    raise ValidationError(field, SECRET_RULE, _Hidden(secret))


def _keys(secrets: str | Sequence[str], field: str) -> list[bytes]:
    if isinstance(secrets, str):
        return [decode_secret(secrets, field)]
    if not isinstance(secrets, Sequence) or not secrets:
        got = _Hidden(secrets) if isinstance(secrets, (bytes, bytearray)) else secrets
        raise ValidationError(field, f"{SECRET_RULE}, or a non-empty list of them", got)
    return [decode_secret(secret, f"{field}[{i}]") for i, secret in enumerate(secrets)]


def _signatures(keys: list[bytes], signed_prefix: bytes, body: bytes) -> list[bytes]:
    digests = []
    for key in keys:
        mac = hmac.new(key, signed_prefix, hashlib.sha256)
        mac.update(body)  # no copy of a large body
        digests.append(mac.digest())
    return digests


def sign(body: bytes | str, *, msg_id: str, timestamp: int, secrets: str | Sequence[str]) -> str:
    """The ``webhook-signature`` header for a request: ``v1,<base64>`` for each secret,
    separated by spaces.

    :param body: the request body, exactly as sent; text is encoded as UTF-8.
    :param msg_id: the ``webhook-id`` header: 1 to 256 visible ASCII characters.
    :param timestamp: the ``webhook-timestamp`` header, in whole seconds since the epoch.
    :param secrets: a secret, or several while one is rotated (see :func:`generate_secret`).
    :raises ~taskevents.ValidationError: naming the argument that is not as described.
    """
    keys = _keys(secrets, "secrets")
    if not isinstance(msg_id, str) or not _MSG_ID.fullmatch(msg_id):
        raise ValidationError("msg_id", _MSG_ID_RULE, msg_id)
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or not 0 <= timestamp < 10**15:
        raise ValidationError("timestamp", "whole seconds since the epoch (an int >= 0)", timestamp)
    if isinstance(body, str):
        try:
            body = body.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("body", "bytes, or text that UTF-8 can encode", body) from None
    elif not isinstance(body, bytes):
        raise ValidationError("body", "bytes or str", body)
    signed_prefix = f"{msg_id}.{timestamp}.".encode("ascii")
    return " ".join(
        "v1," + base64.b64encode(digest).decode("ascii")
        for digest in _signatures(keys, signed_prefix, body)
    )


def signed_headers(
    body: bytes | str,
    *,
    msg_id: str,
    timestamp: int | None = None,
    secrets: str | Sequence[str],
) -> dict[str, str]:
    """The three Standard Webhooks headers for a request: ``webhook-id``,
    ``webhook-timestamp`` and ``webhook-signature`` (see :func:`sign`).

    :param timestamp: whole seconds since the epoch; now by default.
    """
    if timestamp is None:
        timestamp = int(time.time())
    signature = sign(body, msg_id=msg_id, timestamp=timestamp, secrets=secrets)
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature}


def _header_values(headers: HeadersLike) -> list[str]:
    """The three headers' values, found without regard to case."""
    found: dict[str, object] = {name: headers.get(name) for name in _HEADERS}
    if None in found.values():  # a plain dict whose keys are not lower case
        for key, candidate in headers.items():
            if isinstance(key, str) and found.get(key.lower(), "") is None:
                found[key.lower()] = candidate
    values = []
    for name in _HEADERS:
        value = found[name]
        if value is None or value == "":
            raise InvalidSignature(f"missing header {name!r}")
        if not isinstance(value, str):
            raise InvalidSignature(f"header {name!r} is not text")
        values.append(value)
    return values


def _check_timestamp(text: str, tolerance: float) -> None:
    if not _TIMESTAMP.fullmatch(text):
        raise InvalidSignature(
            f"header {TIMESTAMP_HEADER!r} is not a whole number of seconds since the epoch"
        )
    offset = int(text) - time.time()
    if offset < -tolerance:
        raise InvalidSignature(
            f"timestamp too old: sent {-offset:.0f} s ago, "
            f"more than the tolerance of {tolerance:g} s"
        )
    if offset > tolerance:
        raise InvalidSignature(
            f"timestamp too new: {offset:.0f} s in the future, more than the tolerance of "
            f"{tolerance:g} s (is the sender's or this machine's clock wrong?)"
        )


def _received_signatures(header: str) -> list[bytes]:
    """The v1 signatures in a ``webhook-signature`` header; other versions are skipped."""
    if len(header) > MAX_SIGNATURE_HEADER_LENGTH:
        raise InvalidSignature(
            f"header {SIGNATURE_HEADER!r} is longer than {MAX_SIGNATURE_HEADER_LENGTH} characters"
        )
    entries = header.split()
    if len(entries) > MAX_SIGNATURES:
        raise InvalidSignature(
            f"header {SIGNATURE_HEADER!r} has more than {MAX_SIGNATURES} signatures"
        )
    malformed = InvalidSignature(
        f"header {SIGNATURE_HEADER!r} is malformed: expected signatures such as "
        "'v1,<base64 of 32 bytes>', separated by spaces"
    )
    received = []
    for entry in entries:
        version, comma, encoded = entry.partition(",")
        if not comma or not version:
            raise malformed
        if version != "v1":
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise malformed from None
        if len(signature) != _SIGNATURE_LENGTH:
            raise malformed
        received.append(signature)
    if not received:
        raise InvalidSignature(f"header {SIGNATURE_HEADER!r} has no v1 signature")
    return received


def verify(
    body: bytes | str,
    headers: HeadersLike,
    secret: str | Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Any:
    """Check a received request's signature and return its body decoded from JSON.

    The request is accepted when its timestamp is within ``tolerance`` seconds of now and
    any of its ``v1`` signatures matches any of the secrets; signatures of other versions
    are ignored. Signatures are compared in constant time.

    :param body: the request body, exactly as received (text is encoded as UTF-8).
    :param headers: the request headers: a dict, Flask's ``request.headers`` or an
        ``http.client.HTTPMessage``; names are matched without regard to case.
    :param secret: the secret (``whsec_...``), or several while one is rotated.
    :param tolerance: how far in seconds the timestamp may be from now, either way.
    :raises InvalidSignature: whatever is wrong with the request, its message says what.
        Nothing else is raised for any header value, however malformed.
    :raises ~taskevents.ValidationError: ``secret`` or ``tolerance`` is not valid (a mistake in the
        receiver's configuration, not in the request).
    """
    keys = _keys(secret, "secret")
    tolerance = number(tolerance, "tolerance")
    if isinstance(body, str):
        try:
            body = body.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidSignature("the body is not valid UTF-8 text") from None
    elif isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    elif not isinstance(body, bytes):
        raise ValidationError("body", "bytes or str", type(body).__name__)

    msg_id, timestamp, signature_header = _header_values(headers)
    if len(msg_id) > MAX_ID_LENGTH:
        raise InvalidSignature(f"header {ID_HEADER!r} is longer than {MAX_ID_LENGTH} characters")
    _check_timestamp(timestamp, tolerance)
    received = _received_signatures(signature_header)
    try:
        signed_prefix = f"{msg_id}.{timestamp}.".encode()
    except UnicodeEncodeError:
        raise InvalidSignature(f"header {ID_HEADER!r} is not valid text") from None

    matched = False
    for expected in _signatures(keys, signed_prefix, body):
        for signature in received:
            # No early exit: the time taken says nothing about which one matched.
            matched |= hmac.compare_digest(expected, signature)
    if not matched:
        raise InvalidSignature(
            "no signature matches: the body, webhook-id or webhook-timestamp was changed, "
            "or the request was signed with another secret"
        )
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidSignature(f"the body is not JSON: {exc}") from None


# -- Flask ------------------------------------------------------------------------------


def _abort(status: int, message: str) -> NoReturn:
    import flask

    response = flask.jsonify({"error": {"message": message}})
    response.status_code = status
    flask.abort(response)


def _read_body(limit: int) -> bytes:
    """``request.get_data()``, refusing (413) a body over ``limit`` bytes without
    reading it all."""
    from flask import request
    from werkzeug.exceptions import RequestEntityTooLarge

    length = request.content_length
    current = request.max_content_length
    if current is not None and current < limit:
        limit = current
    too_large = f"the body is larger than {limit} bytes"
    if length is not None and length > limit:
        _abort(413, too_large)
    if length is None:  # chunked: werkzeug would cut the body at the limit silently
        try:
            request.max_content_length = limit + 1  # so a byte more says it is too large
        except AttributeError:  # Flask < 3.1 takes it from the app's config alone
            _abort(411, "send a Content-Length header")
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        _abort(413, too_large)
    if len(body) > limit:
        _abort(413, too_large)
    return body


def receive(secret: str | Sequence[str], *, tolerance: float = DEFAULT_TOLERANCE) -> Any:
    """Verify the current Flask request with :func:`verify` and return its JSON body.

    A request that fails verification is answered with a 401 and a JSON body naming the
    problem, ``{"error": {"message": ...}}``, through :func:`flask.abort`.

    The body is read with ``request.get_data()``, at most :data:`MAX_BODY_SIZE` (1 MiB)
    of it, or the application's ``MAX_CONTENT_LENGTH`` if smaller: a larger body is
    answered with a 413 (before it is read, when its ``Content-Length`` says so). With
    Flask older than 3.1, a body sent without ``Content-Length`` (chunked) gets a 411.

    :param secret: the secret (``whsec_...``), or several while one is rotated.
    :param tolerance: how far in seconds the timestamp may be from now, either way.
    """
    from flask import request

    _keys(secret, "secret")  # a configuration mistake is a 500, before the body is read
    body = _read_body(MAX_BODY_SIZE)
    try:
        return verify(body, request.headers, secret, tolerance=tolerance)
    except InvalidSignature as exc:
        _abort(401, str(exc))


def webhook_view(
    secret: str | Sequence[str], *, tolerance: float = DEFAULT_TOLERANCE
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Decorate a Flask view that receives webhooks: it is called with the verified
    payload first, then the URL's variables, and only for requests that pass
    :func:`receive` (which answers the others with a JSON 401, or a 413 for a body over
    :data:`MAX_BODY_SIZE`)::

        @app.post("/hooks")
        @webhook_view(secret)
        def hooks(payload):
            ...

    :param secret: the secret (``whsec_...``), or several while one is rotated; checked
        now, so that a wrong one fails when the application starts.
    :param tolerance: how far in seconds the timestamp may be from now, either way.
    :raises ~taskevents.ValidationError: ``secret`` or ``tolerance`` is not valid.
    """
    _keys(secret, "secret")
    number(tolerance, "tolerance")

    def decorate(view: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(view)
        def receiving_view(*args: Any, **kwargs: Any) -> R:
            return view(receive(secret, tolerance=tolerance), *args, **kwargs)

        return receiving_view

    return decorate
