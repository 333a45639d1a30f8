"""Host header parsing and matching, and the WSGI middleware that refuses foreign hosts."""

from __future__ import annotations

import doctest
import socket
from collections.abc import Iterable
from typing import Any

import pytest
from werkzeug.test import Client

from taskevents import _hosts
from taskevents._hosts import (
    AllowedHosts,
    HostCheck,
    host_allowed,
    normalize_name,
    parse_host,
    same_origin,
)


def test_the_docstring_examples_hold() -> None:
    assert doctest.testmod(_hosts).failed == 0


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("localhost", ("localhost", None)),
        ("LocalHost:5000", ("localhost", 5000)),
        ("localhost.:5000", ("localhost", 5000)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535)),
        ("[::1]:5000", ("::1", 5000)),
        ("[::1]", ("::1", None)),
        ("[0:0:0:0:0:0:0:1]:80", ("::1", 80)),
        ("[FE80::1]", ("fe80::1", None)),
        ("my_service:8000", ("my_service", 8000)),
        ("", None),
        (":5000", None),
        ("localhost:", None),
        ("localhost:0", None),
        ("localhost:65536", None),
        ("localhost:5000x", None),
        ("::1", None),  # an IPv6 address needs its brackets in a Host header
        ("[::1", None),
        ("[not:an:address]", None),
        ("[::g]", None),
        ("a b", None),
        ("evil.example/x", None),
        ("user@localhost", None),
        (".localhost", None),
        ("local..host", None),
        ("localhost:5000:5000", None),
    ],
)
def test_parse_host(value: str, parsed: tuple[str, int | None] | None) -> None:
    assert parse_host(value) == parsed


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("Example.COM.", "example.com"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("0:0::1", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("*.Example.com", "*.example.com"),
    ],
)
def test_normalize_name(value: str, name: str) -> None:
    assert normalize_name(value) == name


@pytest.mark.parametrize("value", ["", "localhost:5000", "[::1]:5000", "a b", "*.", "*.[::1]"])
def test_normalize_name_refuses_what_is_not_a_name(value: str) -> None:
    with pytest.raises(ValueError, match="expected a host name or address without a port"):
        normalize_name(value)


LOCAL = ["localhost", "127.0.0.1", "::1"]


@pytest.mark.parametrize(
    ("host", "names", "any_ip", "allowed"),
    [
        ("localhost:5000", LOCAL, False, True),
        ("LOCALHOST:5000", LOCAL, False, True),
        ("localhost", LOCAL, False, True),
        ("127.0.0.1:8080", LOCAL, False, True),  # the port is not compared
        ("[::1]:5000", LOCAL, False, True),
        ("rebind.example:5000", LOCAL, False, False),
        ("localhost.rebind.example:5000", LOCAL, False, False),
        ("127.0.0.1.rebind.example", LOCAL, False, False),
        ("10.0.0.7:5000", LOCAL, False, False),
        ("10.0.0.7:5000", LOCAL, True, True),
        ("[fe80::1]:5000", LOCAL, True, True),
        ("rebind.example:5000", LOCAL, True, False),
        ("api.example.com", ["*.example.com"], False, True),
        ("a.b.example.com", ["*.example.com"], False, True),
        ("example.com", ["*.example.com"], False, False),
        ("badexample.com", ["*.example.com"], False, False),
        ("", LOCAL, True, False),
        ("localhost:99999", LOCAL, False, False),
    ],
)
def test_host_allowed(host: str, names: list[str], any_ip: bool, allowed: bool) -> None:
    assert host_allowed(host, names, any_ip=any_ip) is allowed


@pytest.mark.parametrize(
    ("origin", "scheme", "host", "same"),
    [
        ("http://127.0.0.1:5000", "http", "127.0.0.1:5000", True),
        ("http://LOCALHOST:5000", "http", "localhost:5000", True),
        ("http://[::1]:5000", "http", "[::1]:5000", True),
        ("http://example.com", "http", "example.com:80", True),
        ("https://example.com:443", "https", "example.com", True),
        ("http://127.0.0.1:5001", "http", "127.0.0.1:5000", False),
        ("https://127.0.0.1:5000", "http", "127.0.0.1:5000", False),
        ("http://localhost:5000", "http", "127.0.0.1:5000", False),
        ("http://evil.example", "http", "127.0.0.1:5000", False),
        ("null", "http", "127.0.0.1:5000", False),
        ("http://127.0.0.1:5000/", "http", "127.0.0.1:5000", False),
        ("http://127.0.0.1:5000", "http", "", False),
    ],
)
def test_same_origin(origin: str, scheme: str, host: str, same: bool) -> None:
    assert same_origin(origin, scheme, host) is same


@pytest.mark.parametrize(
    ("listen", "extra", "names", "any_ip"),
    [
        ("127.0.0.1", [], ("127.0.0.1", "localhost", "::1"), False),
        ("localhost", [], ("localhost", "127.0.0.1", "::1"), False),
        ("::1", [], ("::1", "localhost", "127.0.0.1"), False),
        ("[::1]", [], ("::1", "localhost", "127.0.0.1"), False),
        ("192.0.2.10", [], ("192.0.2.10", "localhost", "127.0.0.1", "::1"), False),
        (
            "127.0.0.1",
            ["Rebind.Example", "*.lan", "localhost"],
            ("127.0.0.1", "localhost", "::1", "rebind.example", "*.lan"),
            False,
        ),
    ],
)
def test_allowed_hosts_for_a_listen_address(
    listen: str, extra: list[str], names: tuple[str, ...], any_ip: bool
) -> None:
    hosts = AllowedHosts.serving(listen, extra)
    assert hosts == AllowedHosts(names, any_ip=any_ip)


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "[::]", ""])
def test_every_interface_answers_loopback_any_address_and_the_machine_name(
    listen: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "MyBox")
    hosts = AllowedHosts.serving(listen)
    assert hosts.names == ("mybox", "localhost", "127.0.0.1", "::1")
    assert hosts.any_ip
    assert hosts.allows("192.168.1.20:5000")
    assert hosts.allows("mybox:5000")
    assert not hosts.allows("rebind.example:5000")
    assert hosts.describe() == "mybox, localhost, 127.0.0.1, [::1], any IP address"


def test_a_bad_extra_name_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"'rebind\.example:5000'"):
        AllowedHosts.serving("127.0.0.1", ["rebind.example:5000"])


def _hello(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_host_check_refuses_before_the_app_with_a_message_naming_the_host() -> None:
    reached: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        reached.append(environ["HTTP_HOST"])
        return _hello(environ, start_response)

    hosts = AllowedHosts.serving("127.0.0.1")
    client = Client(HostCheck(app, lambda env: hosts.allows(env["HTTP_HOST"]), hint="Add it."))
    ok = client.get("/x", headers={"Host": "localhost:5000"})
    assert (ok.status_code, ok.data) == (200, b"hello")
    refused = client.get("/x", headers={"Host": "rebind.example:5000"})
    assert refused.status_code == 400
    assert refused.mimetype == "text/plain"
    assert refused.headers["X-Content-Type-Options"] == "nosniff"
    assert refused.get_data(as_text=True) == (
        "Bad Request: Host 'rebind.example:5000' is not allowed on this server. Add it.\n"
    )
    assert reached == ["localhost:5000"]


def test_host_check_only_checks_under_its_prefix() -> None:
    client = Client(HostCheck(_hello, lambda env: False, prefix="/socket.io/"))
    assert client.get("/api/tasks", headers={"Host": "rebind.example"}).status_code == 200
    assert client.get("/socket.io", headers={"Host": "rebind.example"}).status_code == 200
    refused = client.get("/socket.io/?EIO=4", headers={"Host": "rebind.example"})
    assert refused.status_code == 400


def test_host_check_shortens_a_long_host_in_its_message() -> None:
    client = Client(HostCheck(_hello, lambda env: False))
    refused = client.get("/", headers={"Host": "a" * 500})
    assert refused.status_code == 400
    assert len(refused.data) < 200
    assert "a" * 100 + "..." in refused.get_data(as_text=True)
