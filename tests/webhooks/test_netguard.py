"""The SSRF guard under the webhook adapter: which addresses are refused, what a URL may
look like, and real connections that never reach a refused address, whatever the
resolver says and however often it changes its mind."""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import pickle
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from urllib3.exceptions import MaxRetryError, NewConnectionError, SSLError

from taskevents._urls import describe_url
from taskevents.adapters._netguard import (
    AddressPolicy,
    AddressRefused,
    pool_manager,
    refused_reason,
)
from taskevents.exceptions import TaskEventsError, ValidationError

# --- a real server that counts what reaches it ---------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    """Records every TCP connection accepted and every request served; with ``tls``,
    also the server name (SNI) each client asked for."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], tls: ssl.SSLContext | None = None) -> None:
        self.connections = 0
        self.requests: list[str] = []
        self.server_names: list[str | None] = []
        self.tls = tls
        if tls is not None:
            tls.sni_callback = self._record_sni
        super().__init__(address, _Handler)

    def _record_sni(self, _sock: Any, name: str | None, _context: Any) -> None:
        self.server_names.append(name)

    def get_request(self) -> tuple[Any, Any]:
        sock, peer = self.socket.accept()
        self.connections += 1
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True)  # closes itself on failure
        return sock, peer

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@contextlib.contextmanager
def _serving(
    host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
) -> Iterator[_Server]:
    server = _Server((host, port), tls)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def server() -> Iterator[_Server]:
    with _serving() as server:
        yield server


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a resolver the test controls -----------------------------------------------------


class _Resolver:
    """Stands in for ``socket.getaddrinfo``: the names in ``answers`` get the next of
    their scripted answers (the last one again once they run out); every other name is
    resolved for real. ``calls`` counts the look-ups of each name."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: dict[str, int] = {}

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.calls[name] = self.calls.get(name, 0) + 1
        if name not in self.answers:
            return self.real(host, port, *args, **kwargs)
        scripted = self.answers[name]
        addresses = scripted.pop(0) if len(scripted) > 1 else scripted[0]
        result: list[tuple[Any, ...]] = []
        for address in addresses:
            if ":" in address:
                result.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                result.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return result


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> _Resolver:
    fake = _Resolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


# --- refused_reason -------------------------------------------------------------------

REFUSED = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "reserved"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.1.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),
    ("192.0.0.1", "reserved"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("192.88.99.1", "reserved"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.1", "benchmarking"),
    ("224.0.0.1", "multicast"),  # is_global on Python 3.11.7
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::7f00:1", "reserved"),  # IPv4-compatible ::127.0.0.1; is_global on 3.11.7
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::ffff:169.254.169.254", "IPv4-mapped link-local"),
    ("::ffff:0.0.0.0", "IPv4-mapped unspecified"),
    ("64:ff9b::7f00:1", "NAT64 loopback"),  # 64:ff9b::127.0.0.1
    ("64:ff9b::a9fe:a9fe", "NAT64 link-local"),  # 64:ff9b::169.254.169.254
    ("64:ff9b:1::1", "private"),
    ("2002:a00:1::", "6to4 private"),  # 6to4 of 10.0.0.1
    ("2002:7f00:1::1", "6to4 loopback"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo documentation"),  # client 192.0.2.45
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo loopback"),  # client 127.0.0.1
    ("100::1", "discard-only"),
    ("2001:2::1", "benchmarking"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("5f00::1", "reserved"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fec0::1", "site-local"),  # is_global on 3.11.7
    ("ff02::1", "multicast"),  # is_global on 3.11.7
    ("4000::1", "reserved"),  # outside 2000::/3: not allocated
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.63.255.255",  # just below carrier-grade NAT
    "100.128.0.0",  # just above it
    "172.32.0.1",  # just above 172.16.0.0/12
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo of 8.8.8.8
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_refused_reason_names_why_an_address_is_refused(address: str, reason: str) -> None:
    assert refused_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", PUBLIC)
def test_refused_reason_is_none_for_public_addresses(address: str) -> None:
    assert refused_reason(ipaddress.ip_address(address)) is None


def test_address_refused_is_a_taskevents_error_and_not_an_os_error() -> None:
    # An OSError would be wrapped by urllib3 into a (retried) NewConnectionError.
    assert issubclass(AddressRefused, TaskEventsError)
    assert not issubclass(AddressRefused, OSError)


def test_address_refused_survives_pickling() -> None:
    loopback, v6 = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")
    error = AddressRefused("localhost", loopback, "loopback", [(v6, "loopback")])
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.host, copy.address, copy.reason, copy.refused) == (
        "localhost",
        loopback,
        "loopback",
        ((loopback, "loopback"), (v6, "loopback")),
    )
    assert str(copy) == str(error)


# --- AddressPolicy: allow_hosts -------------------------------------------------------


def test_allow_hosts_are_normalised() -> None:
    policy = AddressPolicy(["LocalHost.", "127.0.0.1", "[::1]", "10.0.0.0/8", "Bücher.example"])
    assert policy.allow_hosts == (
        "localhost",
        "xn--bcher-kva.example",
        "127.0.0.1/32",
        "::1/128",
        "10.0.0.0/8",
    )
    assert repr(policy).startswith("AddressPolicy(['localhost'")


def test_a_single_string_is_not_a_list_of_hosts() -> None:
    with pytest.raises(ValidationError) as info:
        AddressPolicy("localhost")
    assert info.value.field == "allow_hosts"


@pytest.mark.parametrize(
    "entry",
    ["", " localhost", "a b", "10.0.0.1/8", "127.1", "2130706433", "host:80", "*.example.com",
     "a/b", "http://example.com", "user@host", "[::1", 5, None],
)  # fmt: skip
def test_an_invalid_allow_hosts_entry_is_refused(entry: Any) -> None:
    with pytest.raises(ValidationError) as info:
        AddressPolicy([entry])
    assert info.value.field == "allow_hosts"
    assert info.value.got == entry


def test_https_only_must_be_a_bool() -> None:
    with pytest.raises(ValidationError) as info:
        AddressPolicy(https_only="yes")  # type: ignore[arg-type]
    assert info.value.field == "https_only"


def test_reason_explains_a_refusal_in_a_sentence() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    assert AddressPolicy().reason("localhost", loopback) == (
        "localhost resolves to 127.0.0.1 (loopback); add it to allow_hosts to allow it"
    )
    assert AddressPolicy().reason("127.0.0.1", loopback) == (
        "127.0.0.1 is refused (loopback); add it to allow_hosts to allow it"
    )
    assert AddressPolicy().reason("example.com", ipaddress.ip_address("8.8.8.8")) is None


def test_reason_allows_a_listed_name_whatever_it_resolves_to() -> None:
    policy = AddressPolicy(["hooks.internal"])
    metadata = ipaddress.ip_address("169.254.169.254")
    assert policy.reason("HOOKS.internal.", metadata) is None
    assert policy.reason("other.internal", metadata) is not None
    assert policy.reason("sub.hooks.internal", metadata) is not None  # exact names only


def test_reason_allows_a_listed_address_or_network_whatever_the_name() -> None:
    by_address = AddressPolicy(["127.0.0.1"])
    assert by_address.reason("anything.example", ipaddress.ip_address("127.0.0.1")) is None
    assert by_address.reason("x", ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert by_address.reason("x", ipaddress.ip_address("127.0.0.2")) is not None
    by_network = AddressPolicy(["10.0.0.0/8", "fd00::/8"])
    assert by_network.reason("x", ipaddress.ip_address("10.9.8.7")) is None
    assert by_network.reason("x", ipaddress.ip_address("fd00::5")) is None
    assert by_network.reason("x", ipaddress.ip_address("192.168.0.1")) == (
        "x resolves to 192.168.0.1 (private); add it to allow_hosts to allow it"
    )


# --- AddressPolicy.check_url ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.1:8080/hook",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[fe80::1%25eth0]/",
        "http://10.1.2.3/",
        "http://0.0.0.0/",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.64.1.1/",
    ],
)
def test_check_url_refuses_a_refused_literal_address(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        AddressPolicy().check_url(url, "endpoints[0].url")
    assert info.value.field == "endpoints[0].url"
    assert info.value.expected == "a public address, or a host listed in allow_hosts"
    assert info.value.got == describe_url(url)  # the path may hold a token


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "0x7f.1", "127.1", "0177.0.0.1", "127.0.0.01",
             "127.0.0.1.", "134744072", "1.2.3.4.5", "example.0x1"],
)  # fmt: skip
def test_check_url_refuses_hosts_written_as_odd_numbers(host: str) -> None:
    # Resolvers take all of these for addresses (2130706433 is 127.0.0.1, 134744072 is
    # 8.8.8.8): refused outright, even when the address would be allowed.
    with pytest.raises(ValidationError) as info:
        AddressPolicy(["127.0.0.0/8", "8.8.8.8"]).check_url(f"http://{host}/")
    assert info.value.field == "url"
    assert "a.b.c.d" in info.value.expected


@pytest.mark.parametrize("allow", [["127.0.0.1"], ["127.0.0.0/8"]])
def test_check_url_accepts_an_allowed_literal_address(allow: list[str]) -> None:
    parsed = AddressPolicy(allow).check_url("http://127.0.0.1:8080/hook?x=1")
    assert (parsed.scheme, parsed.host, parsed.port, parsed.request_uri) == (
        "http",
        "127.0.0.1",
        8080,
        "/hook?x=1",
    )


def test_check_url_accepts_public_addresses_and_names_without_resolving_them(
    resolver: _Resolver,
) -> None:
    policy = AddressPolicy()
    assert policy.check_url("https://8.8.8.8/").host == "8.8.8.8"
    assert policy.check_url("https://[2001:4860:4860::8888]/").host == "[2001:4860:4860::8888]"
    # A name is checked at delivery, on the address connected to.
    assert policy.check_url("http://localhost:8000/").host == "localhost"
    assert policy.check_url("https://Hooks.Example.COM/x").host == "hooks.example.com"
    assert resolver.calls == {}


def test_check_url_with_https_only_refuses_http() -> None:
    policy = AddressPolicy(https_only=True)
    assert policy.check_url("https://example.com/").scheme == "https"
    with pytest.raises(ValidationError) as info:
        policy.check_url("http://example.com/", "hook")
    assert (info.value.field, info.value.expected) == ("hook", "an https:// URL")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://example.com/", "an http:// or https:// URL"),
        ("file:///etc/passwd", "an http:// or https:// URL"),
        ("example.com/hook", "an http:// or https:// URL"),
        ("http:///hook", "a URL with a host"),
        ("http://example.com:0/", "a port from 1 to 65535"),
        ("http://example.com:99999/", "a well-formed URL (an http:// or https:// URL)"),
        ("http://exa mple.com/", "a well-formed URL (an http:// or https:// URL)"),
    ],
)
def test_check_url_refuses_what_is_not_an_http_url(url: str, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        AddressPolicy().check_url(url)
    assert (info.value.field, info.value.expected) == ("url", expected)


def test_check_url_refuses_a_non_string() -> None:
    with pytest.raises(ValidationError) as info:
        AddressPolicy().check_url(b"http://example.com/")  # type: ignore[arg-type]
    assert info.value.field == "url"


@pytest.mark.parametrize(
    "url", ["https://user:s3cret@example.com/", "https://s3cret@example.com/",
            "https://user:s3cret@example.com:99999/"],
)  # fmt: skip
def test_check_url_refuses_credentials_without_repeating_them(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        AddressPolicy().check_url(url)
    assert info.value.field == "url"
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(info.value.got)
    assert "example.com" in str(info.value)


# --- real connections -----------------------------------------------------------------


def test_a_name_that_resolves_to_loopback_is_refused_before_anything_is_sent(
    server: _Server,
) -> None:
    with (
        pool_manager(AddressPolicy()) as pool,
        pytest.raises(AddressRefused) as info,
    ):
        pool.request("GET", f"http://localhost:{server.port}/", retries=False)
    error = info.value
    assert type(error) is AddressRefused
    assert (error.host, error.address, error.reason) == (
        "localhost",
        ipaddress.ip_address("127.0.0.1"),
        "loopback",
    )
    assert "localhost" in str(error)
    assert "127.0.0.1 (loopback)" in str(error)
    assert "allow_hosts" in str(error)
    assert (server.connections, server.requests) == (0, [])


def test_address_refused_reaches_the_caller_unwrapped_and_is_not_retried(
    server: _Server, resolver: _Resolver
) -> None:
    # With retries=False and with urllib3's default retries alike: no MaxRetryError, no
    # NewConnectionError, no ProtocolError around it, and no second attempt.
    for retries in (False, None, urllib3.Retry(total=3, connect=3)):
        resolver.calls.clear()
        with pool_manager(AddressPolicy()) as pool:
            try:
                pool.request("GET", f"http://localhost:{server.port}/", retries=retries)
            except Exception as exc:
                raised: BaseException = exc
            else:
                pytest.fail("no exception")
        assert type(raised) is AddressRefused
        assert raised.__cause__ is None
        assert resolver.calls == {"localhost": 1}
    assert server.connections == 0


def test_a_literal_address_is_checked_at_delivery_too(server: _Server) -> None:
    # check_url refuses these when the adapter is built; the connection refuses them
    # anyway, odd spellings included, since it checks the address it would connect to.
    said = {}
    with pool_manager(AddressPolicy()) as pool:
        for host in ("127.0.0.1", "2130706433", "127.1"):
            with pytest.raises(AddressRefused) as info:
                pool.request("GET", f"http://{host}:{server.port}/", retries=False)
            assert info.value.address == ipaddress.ip_address("127.0.0.1")
            said[host] = str(info.value).partition(";")[0]
    assert said == {
        "127.0.0.1": "127.0.0.1 is refused (loopback)",
        "2130706433": "2130706433 resolves to 127.0.0.1 (loopback)",
        "127.1": "127.1 resolves to 127.0.0.1 (loopback)",
    }
    assert server.connections == 0


@pytest.mark.parametrize("allow", [["127.0.0.1"], ["127.0.0.0/8"], ["localhost"], ["LOCALHOST"]])
def test_an_allowed_host_or_address_is_reached(server: _Server, allow: list[str]) -> None:
    with pool_manager(AddressPolicy(allow)) as pool:
        response = pool.request("GET", f"http://localhost:{server.port}/hook", retries=False)
    assert (response.status, response.data) == (200, b"ok")
    assert server.requests == ["/hook"]


def test_an_allowed_address_that_does_not_answer_gives_the_usual_connect_error() -> None:
    port = _closed_port()
    with pool_manager(AddressPolicy(["127.0.0.1"])) as pool:
        with pytest.raises(NewConnectionError):
            pool.request("GET", f"http://localhost:{port}/", retries=False)
        with pytest.raises(MaxRetryError) as info:
            pool.request("GET", f"http://localhost:{port}/", retries=1)
    assert isinstance(info.value.reason, NewConnectionError)


def test_refused_addresses_are_skipped_and_the_allowed_one_is_used(
    server: _Server, resolver: _Resolver
) -> None:
    resolver.answers["mixed.example"] = [["10.0.0.1", "::1", "127.0.0.1"]]
    with pool_manager(AddressPolicy(["127.0.0.1"])) as pool:
        response = pool.request("GET", f"http://mixed.example:{server.port}/", retries=False)
    assert response.status == 200
    assert server.requests == ["/"]
    assert resolver.calls == {"mixed.example": 1}


def test_when_some_addresses_are_allowed_but_fail_the_connect_error_wins(
    resolver: _Resolver,
) -> None:
    resolver.answers["mixed.example"] = [["10.0.0.1", "127.0.0.1"]]
    with (
        pool_manager(AddressPolicy(["127.0.0.1"])) as pool,
        pytest.raises(NewConnectionError),
    ):
        pool.request("GET", f"http://mixed.example:{_closed_port()}/", retries=False)


def test_every_refused_address_is_named(server: _Server, resolver: _Resolver) -> None:
    resolver.answers["both.example"] = [["::1", "127.0.0.1", "169.254.169.254"]]
    with (
        pool_manager(AddressPolicy()) as pool,
        pytest.raises(AddressRefused) as info,
    ):
        pool.request("GET", f"http://both.example:{server.port}/", retries=False)
    assert str(info.value) == (
        "both.example resolves to ::1 (loopback), 127.0.0.1 (loopback), "
        "169.254.169.254 (link-local); add it to allow_hosts to allow it"
    )
    assert [str(address) for address, _ in info.value.refused] == [
        "::1",
        "127.0.0.1",
        "169.254.169.254",
    ]
    assert server.connections == 0


def test_dns_rebinding_an_earlier_public_answer_does_not_help(
    server: _Server, resolver: _Resolver
) -> None:
    # The classic attack: the name resolves to a public address when someone checks it,
    # and to 127.0.0.1 when the request is made. Here the first look-up (a naive
    # pre-check) gets 8.8.8.8; the guarded connection makes its own and gets 127.0.0.1.
    resolver.answers["rebind.example"] = [["8.8.8.8"], ["127.0.0.1"]]
    policy = AddressPolicy()
    url = f"http://rebind.example:{server.port}/"
    policy.check_url(url)  # passes, and resolves nothing
    naive = socket.getaddrinfo("rebind.example", server.port)
    assert naive[0][4][0] == "8.8.8.8"
    with pool_manager(policy) as pool, pytest.raises(AddressRefused) as info:
        pool.request("GET", url, retries=False)
    assert "rebind.example resolves to 127.0.0.1 (loopback)" in str(info.value)
    assert resolver.calls == {"rebind.example": 2}  # the pre-check's, and the connection's
    assert server.connections == 0


def test_dns_rebinding_the_address_checked_is_the_address_connected_to(
    resolver: _Resolver,
) -> None:
    # Two servers on one port: 127.0.0.1 (allowed) and 127.0.0.2 (refused). The name
    # answers 127.0.0.1 once, then 127.0.0.2. Each connection resolves once, and
    # connects to exactly what it checked: the first reaches 127.0.0.1; the next one is
    # refused, and 127.0.0.2 never sees a connection.
    with _serving("127.0.0.1") as allowed, _serving("127.0.0.2", allowed.port) as refused:
        resolver.answers["rebind.example"] = [["127.0.0.1"], ["127.0.0.2"]]
        url = f"http://rebind.example:{allowed.port}/"
        with pool_manager(AddressPolicy(["127.0.0.1"])) as pool:
            assert pool.request("GET", url, retries=False).status == 200
            assert resolver.calls == {"rebind.example": 1}
            pool.clear()  # drop the kept-alive connection: the next request connects anew
            with pytest.raises(AddressRefused) as info:
                pool.request("GET", url, retries=False)
        assert info.value.address == ipaddress.ip_address("127.0.0.2")
        assert resolver.calls == {"rebind.example": 2}
        assert (allowed.connections, allowed.requests) == (1, ["/"])
        assert (refused.connections, refused.requests) == (0, [])


def test_https_only_refuses_plain_http_at_delivery(server: _Server) -> None:
    with (
        pool_manager(AddressPolicy(["localhost"], https_only=True)) as pool,
        pytest.raises(ValidationError) as info,
    ):
        pool.request("GET", f"http://localhost:{server.port}/", retries=False)
    assert info.value.field == "url"
    assert server.connections == 0


def test_socket_options_timeout_and_source_address_are_kept(server: _Server) -> None:
    with pool_manager(
        AddressPolicy(["127.0.0.1"]),
        timeout=urllib3.Timeout(connect=1.5, read=2.5),
        source_address=("127.0.0.1", 0),
    ) as pool:
        response = pool.request(
            "GET", f"http://localhost:{server.port}/", retries=False, preload_content=False
        )
        sock = response.connection.sock  # type: ignore[union-attr]
        try:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert sock.gettimeout() == 2.5  # the read timeout, once connected
            assert sock.getsockname()[0] == "127.0.0.1"
        finally:
            response.read()
            response.release_conn()


def test_connect_sets_the_connect_timeout_before_connecting(server: _Server) -> None:
    sock = AddressPolicy(["localhost"]).connect("localhost", server.port, timeout=1.5)
    with sock:
        assert sock.gettimeout() == 1.5
        assert sock.getpeername() == ("127.0.0.1", server.port)


def test_proxies_are_never_used(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead)
    with pool_manager(AddressPolicy(["localhost"])) as pool:
        assert pool.request("GET", f"http://localhost:{server.port}/", retries=False).status == 200
    with pytest.raises(TypeError, match="proxies"):
        pool_manager(AddressPolicy(), _proxy=urllib3.util.parse_url(dead))


# --- HTTPS ----------------------------------------------------------------------------


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[_Server]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    with _serving(tls=context) as server:
        yield server


def test_https_verifies_the_certificate_and_sends_sni_for_the_name(
    tls_server: _Server, certificate: tuple[Path, Path]
) -> None:
    # Allowed by address, connected by address, yet TLS is about the name: SNI says
    # "localhost", and the certificate (which names no address) is checked against it.
    with pool_manager(AddressPolicy(["127.0.0.1"]), ca_certs=str(certificate[0])) as pool:
        response = pool.request("GET", f"https://localhost:{tls_server.port}/", retries=False)
    assert (response.status, response.data) == (200, b"ok")
    assert tls_server.server_names == ["localhost"]


def test_https_refuses_a_certificate_it_cannot_verify(tls_server: _Server) -> None:
    with pool_manager(AddressPolicy(["127.0.0.1"])) as pool, pytest.raises(SSLError):
        pool.request("GET", f"https://localhost:{tls_server.port}/", retries=False)
    assert tls_server.requests == []


def test_https_to_a_refused_address_never_starts_tls(
    tls_server: _Server, certificate: tuple[Path, Path]
) -> None:
    with (
        pool_manager(AddressPolicy(), ca_certs=str(certificate[0])) as pool,
        pytest.raises(AddressRefused),
    ):
        pool.request("GET", f"https://localhost:{tls_server.port}/", retries=False)
    assert (tls_server.connections, tls_server.server_names) == (0, [])
