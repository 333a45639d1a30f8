"""Standard Webhooks v1 signing and verifying (taskevents.webhooks), and its Flask helpers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import io
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Any

import flask
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug.datastructures import EnvironHeaders

from taskevents import TaskEventsError, ValidationError
from taskevents.webhooks import (
    MAX_BODY_SIZE,
    MAX_SIGNATURES,
    InvalidSignature,
    decode_secret,
    generate_secret,
    sign,
    signed_headers,
    verify,
    webhook_view,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
BODY = b'{"type":"task_started","subject":"aws01","task_id":"t1"}'


def now() -> int:
    return int(time.time())


def headers_for(body: bytes = BODY, secret: str | list[str] = SECRET, **kw: Any) -> dict[str, str]:
    return signed_headers(body, msg_id=kw.pop("msg_id", "msg_1"), secrets=secret, **kw)


def refused(body: bytes | str, headers: Any, secret: str | list[str] = SECRET) -> str:
    """The message of the InvalidSignature that ``verify`` raises."""
    with pytest.raises(InvalidSignature) as caught:
        verify(body, headers, secret)
    return str(caught.value)


# -- secrets ----------------------------------------------------------------------------


def test_generated_secrets_hold_24_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_")
    assert len(decode_secret(first)) == 24
    assert first != second


def test_a_secret_decodes_with_or_without_its_padding() -> None:
    secret = "whsec_" + base64.b64encode(b"0123456789abcdefghij").decode()
    assert secret.endswith("=")
    assert decode_secret(secret) == b"0123456789abcdefghij"
    assert decode_secret(secret.rstrip("=")) == b"0123456789abcdefghij"


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_",  # an empty key
        "whsec_MfKQ9r8G!KYqrTwjUPD8ILPZ",  # not base64
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwé",
        "",
    ],
)
def test_a_malformed_secret_is_refused_without_being_shown(secret: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_secret(secret, "endpoint.secret")
    error = caught.value
    assert error.field == "endpoint.secret"
    assert str(error).startswith("endpoint.secret: expected a secret written whsec_<base64>, got")
    assert_hidden(secret, error)


def test_a_secret_that_is_not_a_string_is_refused_without_being_shown() -> None:
    with pytest.raises(ValidationError) as caught:
        decode_secret(KEY)  # type: ignore[arg-type]
    assert "bytes" in str(caught.value)
    assert_hidden(KEY.decode("latin-1"), caught.value)
    with pytest.raises(ValidationError, match="non-empty list"):
        verify(BODY, headers_for(), [])


def assert_hidden(secret: str, error: BaseException) -> None:
    shown = [str(error), repr(error), *map(repr, vars(error).values()), *map(repr, error.args)]
    key_text = secret.removeprefix("whsec_").strip()
    for text in shown:
        if key_text:
            assert key_text not in text
            assert key_text[:8] not in text
    assert error.__cause__ is None


def test_secrets_never_appear_in_verification_errors() -> None:
    other = generate_secret()
    headers = headers_for(secret=other)
    with pytest.raises(InvalidSignature) as caught:
        verify(BODY, headers, [SECRET, "whsec_" + base64.b64encode(b"x" * 24).decode()])
    assert_hidden(SECRET, caught.value)
    assert_hidden(other, caught.value)
    with pytest.raises(ValidationError) as invalid:
        verify(BODY, headers, [SECRET, SECRET + "!"])
    assert invalid.value.field == "secret[1]"
    assert_hidden(SECRET, invalid.value)


# -- signing ----------------------------------------------------------------------------


def test_the_signature_is_the_hmac_of_id_timestamp_and_body() -> None:
    expected = hmac.new(KEY, b"msg_1.1700000000." + BODY, hashlib.sha256).digest()
    signature = sign(BODY, msg_id="msg_1", timestamp=1700000000, secrets=SECRET)
    assert signature == "v1," + base64.b64encode(expected).decode()
    assert sign(BODY.decode(), msg_id="msg_1", timestamp=1700000000, secrets=[SECRET]) == signature


def test_signed_headers_carry_the_id_the_timestamp_now_and_one_signature_per_secret() -> None:
    before = now()
    headers = headers_for(secret=[SECRET, generate_secret()])
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "msg_1"
    assert before <= int(headers["webhook-timestamp"]) <= now()
    assert [s[:3] for s in headers["webhook-signature"].split(" ")] == ["v1,", "v1,"]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"msg_id": ""}, "msg_id"),
        ({"msg_id": "has space"}, "msg_id"),
        ({"msg_id": "line\nbreak"}, "msg_id"),
        ({"msg_id": "é"}, "msg_id"),
        ({"timestamp": -1}, "timestamp"),
        ({"timestamp": 1.5}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"secrets": "not a secret"}, "secrets"),
        ({"secrets": ()}, "secrets"),
        ({"body": "\ud800"}, "body"),
    ],
)
def test_signing_names_the_argument_that_is_wrong(arguments: dict[str, Any], field: str) -> None:
    call: dict[str, Any] = {"msg_id": "msg_1", "timestamp": 1700000000, "secrets": SECRET}
    body = arguments.pop("body", BODY)
    call.update(arguments)
    with pytest.raises(ValidationError) as caught:
        sign(body, **call)
    assert caught.value.field == field


# -- interoperability with the standardwebhooks package --------------------------------


def test_standardwebhooks_accepts_what_we_sign() -> None:
    old, new = generate_secret(), generate_secret()
    headers = headers_for(secret=[old, new])
    assert Webhook(old).verify(BODY, headers) == json.loads(BODY)
    assert Webhook(new).verify(BODY.decode(), headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_we_accept_what_standardwebhooks_signs() -> None:
    sent = datetime.now(tz=timezone.utc)
    signature = Webhook(SECRET).sign("msg_2Lx", sent, BODY.decode())
    headers = {
        "webhook-id": "msg_2Lx",
        "webhook-timestamp": str(int(sent.timestamp())),
        "webhook-signature": signature,
    }
    assert verify(BODY, headers, SECRET) == json.loads(BODY)
    assert "no signature matches" in refused(BODY, headers, generate_secret())


# -- verifying --------------------------------------------------------------------------


def test_header_names_are_matched_without_regard_to_case() -> None:
    headers = headers_for()
    titled = {name.title(): value for name, value in headers.items()}
    assert verify(BODY, titled, SECRET) == json.loads(BODY)
    message = http.client.parse_headers(
        io.BytesIO("".join(f"{k.upper()}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n")
    )
    assert verify(BODY, message, SECRET) == json.loads(BODY)
    environ = {f"HTTP_{name.upper().replace('-', '_')}": v for name, v in headers.items()}
    assert verify(BODY, EnvironHeaders(environ), SECRET) == json.loads(BODY)


def test_a_rotated_secret_verifies_with_either_the_old_or_the_new_one() -> None:
    old, new, unrelated = generate_secret(), generate_secret(), generate_secret()
    headers = headers_for(secret=[old, new])
    assert verify(BODY, headers, old) == json.loads(BODY)
    assert verify(BODY, headers, new) == json.loads(BODY)
    assert verify(BODY, headers, [unrelated, new]) == json.loads(BODY)
    assert "no signature matches" in refused(BODY, headers, unrelated)


def test_a_timestamp_outside_the_tolerance_is_refused_naming_which_way() -> None:
    old = headers_for(timestamp=now() - 301)
    assert refused(BODY, old).startswith("timestamp too old")
    assert "tolerance of 300 s" in refused(BODY, old)
    new = headers_for(timestamp=now() + 301)
    assert refused(BODY, new).startswith("timestamp too new")
    assert verify(BODY, headers_for(timestamp=now() - 290), SECRET) == json.loads(BODY)
    assert verify(BODY, headers_for(timestamp=now() + 290), SECRET) == json.loads(BODY)


def test_the_tolerance_can_be_changed() -> None:
    hour_old = headers_for(timestamp=now() - 3600)
    assert verify(BODY, hour_old, SECRET, tolerance=7200) == json.loads(BODY)
    with pytest.raises(InvalidSignature, match="tolerance of 10 s"):
        verify(BODY, headers_for(timestamp=now() - 20), SECRET, tolerance=10)
    with pytest.raises(ValidationError, match="tolerance"):
        verify(BODY, hour_old, SECRET, tolerance=-1)


def test_a_changed_body_id_or_timestamp_is_refused() -> None:
    headers = headers_for()
    assert "no signature matches" in refused(BODY.replace(b"aws01", b"aws02"), headers)
    assert "no signature matches" in refused(BODY, {**headers, "webhook-id": "msg_2"})
    moved = str(int(headers["webhook-timestamp"]) - 1)
    assert "no signature matches" in refused(BODY, {**headers, "webhook-timestamp": moved})


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_named(missing: str) -> None:
    headers = headers_for()
    del headers[missing]
    assert refused(BODY, headers) == f"missing header {missing!r}"
    assert refused(BODY, {**headers, missing: ""}) == f"missing header {missing!r}"


def test_other_signature_versions_are_ignored() -> None:
    headers = headers_for()
    signature = headers["webhook-signature"]
    other = "v1a,c2lnbmVkIHdpdGggYW4gZWQyNTUxOSBrZXk="
    assert verify(BODY, {**headers, "webhook-signature": f"{other} {signature}"}, SECRET)
    assert refused(BODY, {**headers, "webhook-signature": other}) == (
        "header 'webhook-signature' has no v1 signature"
    )


GOOD_SIGNATURE = "v1," + base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        ("webhook-timestamp", "1e999", "not a whole number of seconds"),
        ("webhook-timestamp", "9" * 5000, "not a whole number of seconds"),
        ("webhook-timestamp", "-5", "not a whole number of seconds"),
        ("webhook-timestamp", " 1700000000", "not a whole number of seconds"),
        ("webhook-timestamp", "\u0661\u0667" + "\u0660" * 8, "not a whole number of seconds"),
        ("webhook-timestamp", "1_700_000_000", "not a whole number of seconds"),
        ("webhook-signature", "v1", "malformed"),
        ("webhook-signature", "v1:abc", "malformed"),
        ("webhook-signature", ",abc", "malformed"),
        ("webhook-signature", "v1,not base64!", "malformed"),
        ("webhook-signature", "v1,YWJj", "malformed"),  # 3 bytes, not 32
        ("webhook-signature", "v1,é", "malformed"),
        ("webhook-signature", f"{GOOD_SIGNATURE} v1", "malformed"),
        ("webhook-signature", " ".join([GOOD_SIGNATURE] * (MAX_SIGNATURES + 1)), "more than 16"),
        ("webhook-signature", "v2," + "a" * 5000, "longer than 4096"),
        ("webhook-id", "x" * 2000, "longer than 1024"),
        ("webhook-id", "\ud800", "not valid text"),
    ],
)
def test_a_malformed_header_is_refused_saying_what_is_wrong(
    header: str, value: str, expected: str
) -> None:
    headers = headers_for()
    assert expected in refused(BODY, {**headers, header: value})


def test_a_header_value_that_is_not_text_is_refused() -> None:
    headers: dict[str, Any] = {**headers_for(), "webhook-id": b"msg_1"}
    assert refused(BODY, headers) == "header 'webhook-id' is not text"


def test_a_signed_body_that_is_not_json_is_refused() -> None:
    for body in (b"not json", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000):
        assert refused(body, headers_for(body)).startswith("the body is not JSON")
    assert refused("\ud800", headers_for()) == "the body is not valid UTF-8 text"


@given(
    msg_id=st.text(max_size=60),
    timestamp=st.one_of(st.text(max_size=30), st.integers().map(str)),
    signature=st.one_of(
        st.text(max_size=200),
        st.lists(st.text(max_size=50), max_size=20).map(" ".join),
        st.lists(st.sampled_from(["v1,", "v1a,", "v2,", ",", " ", "=", "AAAA", "é"])).map("".join),
    ),
    body=st.one_of(st.binary(max_size=100), st.text(max_size=100)),
)
def test_any_header_values_raise_invalid_signature_and_nothing_else(
    msg_id: str, timestamp: str, signature: str, body: bytes | str
) -> None:
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    with pytest.raises(InvalidSignature):
        verify(body, headers, SECRET)


@given(signature=st.text(max_size=300), body=st.binary(max_size=50))
def test_any_signature_header_with_a_good_id_and_timestamp_raises_invalid_signature(
    signature: str, body: bytes
) -> None:
    headers = {**headers_for(body), "webhook-signature": signature}
    with pytest.raises(InvalidSignature):
        verify(body, headers, SECRET)


def test_invalid_signature_is_a_taskevents_error() -> None:
    assert issubclass(InvalidSignature, TaskEventsError)


def test_importing_the_module_does_not_import_flask() -> None:
    code = "import taskevents.webhooks, sys; assert 'flask' not in sys.modules, 'flask imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- Flask ------------------------------------------------------------------------------


def make_app(secret: str | list[str] = SECRET) -> tuple[flask.Flask, list[Any]]:
    received: list[Any] = []
    app = flask.Flask("taskevents-webhooks-test")

    @app.post("/hooks/<source>")
    @webhook_view(secret)
    def hooks(payload: Any, source: str) -> tuple[str, int]:
        received.append((source, payload))
        return "", 204

    @app.post("/plain")
    def plain() -> dict[str, Any]:
        from taskevents.webhooks import receive

        return {"received": receive(secret, tolerance=10)}

    return app, received


def test_the_view_gets_the_verified_payload_and_the_url_variables() -> None:
    app, received = make_app()
    response = app.test_client().post("/hooks/ci", data=BODY, headers=headers_for())
    assert response.status_code == 204
    assert received == [("ci", json.loads(BODY))]
    assert app.view_functions["hooks"].__name__ == "hooks"


def test_a_bad_signature_gets_a_401_naming_the_problem() -> None:
    app, received = make_app()
    client = app.test_client()
    headers = headers_for(secret=generate_secret())
    response = client.post("/hooks/ci", data=BODY, headers=headers)
    assert response.status_code == 401
    assert response.is_json
    assert response.get_json()["error"]["message"].startswith("no signature matches")
    assert SECRET.removeprefix("whsec_") not in response.get_data(as_text=True)
    headers = headers_for()
    del headers["webhook-id"]
    response = client.post("/hooks/ci", data=BODY, headers=headers)
    assert response.get_json() == {"error": {"message": "missing header 'webhook-id'"}}
    assert received == []


def test_receive_verifies_the_current_request_with_its_tolerance() -> None:
    app, _ = make_app()
    client = app.test_client()
    response = client.post("/plain", data=BODY, headers=headers_for())
    assert response.get_json() == {"received": json.loads(BODY)}
    response = client.post("/plain", data=BODY, headers=headers_for(timestamp=now() - 20))
    assert response.status_code == 401
    assert "tolerance of 10 s" in response.get_json()["error"]["message"]


def chunked(app: flask.Flask) -> None:
    """Make requests reach ``app`` as a server passes on a chunked body: without a
    Content-Length, its end marked by ``wsgi.input_terminated``."""
    inner = app.wsgi_app

    def dechunked(environ: dict[str, Any], start_response: Any) -> Any:
        del environ["CONTENT_LENGTH"]
        environ["wsgi.input_terminated"] = True
        return inner(environ, start_response)

    app.wsgi_app = dechunked  # type: ignore[method-assign]


def test_a_body_over_1_mib_gets_a_413() -> None:
    app, received = make_app()
    client = app.test_client()
    big = b'"' + b"x" * MAX_BODY_SIZE + b'"'
    response = client.post("/hooks/ci", data=big, headers=headers_for(big))
    assert response.status_code == 413
    assert response.get_json() == {"error": {"message": "the body is larger than 1048576 bytes"}}
    fits = b'"' + b"x" * (MAX_BODY_SIZE - 2) + b'"'
    assert client.post("/hooks/ci", data=fits, headers=headers_for(fits)).status_code == 204
    chunked(app)  # no Content-Length: the read stops just past the limit
    assert client.post("/hooks/ci", data=big, headers=headers_for(big)).status_code == 413
    assert client.post("/hooks/ci", data=fits, headers=headers_for(fits)).status_code == 204
    assert len(received) == 2


def test_the_applications_smaller_body_limit_is_kept() -> None:
    app, _ = make_app()
    app.config["MAX_CONTENT_LENGTH"] = 100
    body = b'"' + b"x" * 200 + b'"'
    response = app.test_client().post("/hooks/ci", data=body, headers=headers_for(body))
    assert response.status_code == 413
    assert response.get_json()["error"]["message"] == "the body is larger than 100 bytes"


class RequestBeforeFlask31(flask.Request):
    """Before Flask 3.1, a request's max_content_length could not be set."""

    @property  # type: ignore[misc]
    def max_content_length(self) -> int | None:  # type: ignore[override]
        return None


def test_before_flask_3_1_a_body_without_a_content_length_gets_a_411() -> None:
    app, received = make_app()
    app.request_class = RequestBeforeFlask31
    client = app.test_client()
    big = b'"' + b"x" * MAX_BODY_SIZE + b'"'
    assert client.post("/hooks/ci", data=big, headers=headers_for(big)).status_code == 413
    assert client.post("/hooks/ci", data=BODY, headers=headers_for()).status_code == 204
    assert len(received) == 1
    chunked(app)
    response = client.post("/hooks/ci", data=BODY, headers=headers_for())
    assert response.status_code == 411
    assert response.get_json() == {"error": {"message": "send a Content-Length header"}}
    assert len(received) == 1


def test_a_wrong_secret_in_the_decorator_fails_when_the_app_is_set_up() -> None:
    with pytest.raises(ValidationError, match=r"^secret: expected a secret written whsec_"):
        webhook_view("hunter2")
    with pytest.raises(ValidationError, match=r"^tolerance: "):
        webhook_view(SECRET, tolerance=-5)
