"""The SSRF guard under the webhook adapter: which addresses an outgoing request may reach.

A webhook URL comes from configuration, and whoever writes it should not be able to
make this process talk to its own loopback, the private network around it, or the cloud
metadata service at 169.254.169.254. So by default an endpoint may only be a public
address; :class:`AddressPolicy` says which other hosts are allowed anyway
(``allow_hosts``) and whether plain ``http://`` is allowed at all (``https_only``).

The check runs twice:

- when the adapter is built, :meth:`AddressPolicy.check_url` refuses a malformed URL, and
  a URL whose host is a refused IP address, with a :class:`~taskevents.ValidationError`
  naming the field. A host *name* is not resolved then: what it resolves to may change;
- at delivery, the connections of :func:`pool_manager` resolve the name themselves, once,
  check every address with the policy and connect only to an allowed one. The address
  checked is the address connected to, so DNS rebinding (a name that resolves to a
  public address for a check and to 127.0.0.1 a moment later) gets nowhere. When every
  address is refused, :class:`AddressRefused` is raised, and reaches the caller of
  :meth:`urllib3.PoolManager.request` as itself: it is not an :class:`OSError`, so urllib3
  neither wraps it nor retries.

Not covered: a network-specific NAT64 prefix (only the well-known ``64:ff9b::/96`` is
unwrapped) and ISATAP addresses; a host that has either set up is trusted to be the
operator's choice. This module needs urllib3 (``taskevents[webhooks]``); import it
through the webhook adapter, which says so when it is missing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeAlias

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    LocationParseError,
    NameResolutionError,
    NewConnectionError,
)
from urllib3.util import Url, parse_url
from urllib3.util.connection import allowed_gai_family
from urllib3.util.timeout import _DEFAULT_TIMEOUT, _TYPE_TIMEOUT

from taskevents._urls import describe_url
from taskevents.exceptions import TaskEventsError, ValidationError

__all__ = ["AddressPolicy", "AddressRefused", "IPAddress", "pool_manager", "refused_reason"]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# The IANA special-purpose registries, most specific first. Spelled out rather than
# left to ``is_private``/``is_global``, whose answers differ between Python versions
# (on 3.11.7: 224.0.0.1, ff02::1, fec0::1, ::7f00:1 and 64:ff9b::7f00:1 are "global",
# and 100.64.0.0/10 is neither private nor global).
_IPV4_RANGES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/32"), "unspecified"),
    (_V4("0.0.0.0/8"), "reserved"),  # "this network"; Linux connects 0.x to itself
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),  # cloud metadata services live here
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "reserved"),  # IETF protocol assignments
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("192.88.99.0/24"), "reserved"),  # the deprecated 6to4 relay anycast
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
)

_NAT64 = _V6("64:ff9b::/96")
_GLOBAL_UNICAST = _V6("2000::/3")
_IPV6_RANGES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("64:ff9b:1::/48"), "private"),  # local-use NAT64 (RFC 8215)
    (_V6("::/8"), "reserved"),  # the deprecated IPv4-compatible ::a.b.c.d among them
    (_V6("100::/64"), "discard-only"),
    (_V6("2001:2::/48"), "benchmarking"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("2001::/23"), "reserved"),  # IETF protocol assignments
    (_V6("3fff::/20"), "documentation"),
    (_V6("5f00::/16"), "reserved"),  # SRv6 segment identifiers
    (_V6("fc00::/7"), "private"),  # unique local
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local"),
    (_V6("ff00::/8"), "multicast"),
)


def refused_reason(ip: IPAddress) -> str | None:
    """Why a request must not go to ``ip`` by default, in a word or two; None when it is
    a public address.

    An IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, NAT64
    ``64:ff9b::a.b.c.d``, 6to4 ``2002::/16``, Teredo ``2001::/32``) is judged by what it
    carries: ``::ffff:127.0.0.1`` gives ``"IPv4-mapped loopback"``.

    >>> refused_reason(ipaddress.ip_address("169.254.169.254"))
    'link-local'
    >>> refused_reason(ipaddress.ip_address("8.8.8.8")) is None
    True
    """
    if isinstance(ip, ipaddress.IPv4Address):
        for network, reason in _IPV4_RANGES:
            if ip in network:
                return reason
        return None if ip.is_global else "not globally routable"
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        kind, addresses = embedded
        for address in addresses:
            inner = refused_reason(address)
            if inner is not None:
                return f"{kind} {inner}"
        return None
    for network6, reason in _IPV6_RANGES:
        if ip in network6:
            return reason
    if ip not in _GLOBAL_UNICAST:
        return "reserved"  # not allocated for unicast
    return None if ip.is_global else "not globally routable"


def _embedded_ipv4(
    ip: ipaddress.IPv6Address,
) -> tuple[str, tuple[ipaddress.IPv4Address, ...]] | None:
    """The IPv4 addresses a packet to ``ip`` is really for, and how they are carried."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", (ip.ipv4_mapped,)
    if ip in _NAT64:
        return "NAT64", (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return "6to4", (ip.sixtofour,)
    if ip.teredo is not None:
        server, client = ip.teredo
        return "Teredo", (client, server)
    return None


class AddressRefused(TaskEventsError):
    """A connection was not made: every address the host resolved to is refused by the
    :class:`AddressPolicy`.

    Raised at connect time by the connections of :func:`pool_manager`, before a byte is
    sent. Not an :class:`OSError`, so urllib3 passes it through untouched (no
    ``NewConnectionError``, no ``MaxRetryError``, no retry).

    :param host: the host name of the URL.
    :param address: the first refused address.
    :param reason: why it is refused (as :func:`refused_reason` says).
    :param others: the other refused addresses the host resolved to, with their reasons.
    """

    def __init__(
        self,
        host: str,
        address: IPAddress,
        reason: str,
        others: Iterable[tuple[IPAddress, str]] = (),
    ) -> None:
        self.host = host
        self.address = address
        self.reason = reason
        #: Every refused address with its reason, ``(address, reason)`` first.
        self.refused: tuple[tuple[IPAddress, str], ...] = ((address, reason), *others)
        super().__init__(_refusal_sentence(host, self.refused))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.host, self.address, self.reason, self.refused[1:]))


def _refusal_sentence(host: str, refused: Sequence[tuple[IPAddress, str]]) -> str:
    shown = ", ".join(f"{address} ({reason})" for address, reason in refused)
    if len(refused) == 1 and str(refused[0][0]) == host:
        return f"{host} is refused ({refused[0][1]}); add it to allow_hosts to allow it"
    return f"{host} resolves to {shown}; add it to allow_hosts to allow it"


def _ends_in_number(host: str) -> bool:
    """Whether URL parsers (WHATWG) and resolvers (``inet_aton``) take ``host`` for an
    IPv4 address: its last label is a decimal, octal or ``0x`` hexadecimal number. Such
    a host is an address however it is written: ``2130706433``, ``0x7f.1`` and
    ``127.1`` are all 127.0.0.1."""
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    last = labels[-1]
    if last[:2].lower() == "0x":
        return all(c in "0123456789abcdefABCDEF" for c in last[2:])
    return last.isascii() and last.isdigit()


def _literal_ip(host: str) -> IPAddress | None:
    """The address ``host`` (as urllib3 parses it: IPv6 in brackets) is, if it is one.

    :raises ValueError: it is written as a number that is not a canonical address.
    """
    if host.startswith("[") and host.endswith("]"):
        return ipaddress.IPv6Address(host[1:-1])
    if _ends_in_number(host):
        ip = ipaddress.IPv4Address(host)  # ValueError for "127.1", "0x7f.1", "010.0.0.1"
        if str(ip) != host:
            raise ValueError(host)
        return ip
    return None


# A host name as urllib3 leaves it: lowercase, IDNA-encoded, dot-separated labels.
_NAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*\.?", re.ASCII)
_NAME_SPECIALS = frozenset("/?#@:[]\\%")
_ALLOW_RULE = "a host name, an IP address or a network such as '10.0.0.0/8'"


def _allow_entry(entry: object) -> str | ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An ``allow_hosts`` entry as it is matched: a host name (lowercase, IDNA, no final
    dot) or a network (an address is a network of one)."""
    if not isinstance(entry, str) or not entry or entry != entry.strip():
        raise ValidationError("allow_hosts", _ALLOW_RULE, entry)
    try:
        if "/" in entry:
            return ipaddress.ip_network(entry)  # strict: "10.0.0.1/8" is refused
        bare = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
        ip = ipaddress.ip_address(bare)
        return ipaddress.ip_network(str(ip).split("%")[0])
    except ValueError:
        pass
    if _NAME_SPECIALS.intersection(entry) or _ends_in_number(entry):
        raise ValidationError("allow_hosts", _ALLOW_RULE, entry)
    try:
        name = parse_url(f"http://{entry}/").host
    except LocationParseError:
        name = None
    if name is None or len(name) > 254 or not _NAME.fullmatch(name):
        raise ValidationError("allow_hosts", _ALLOW_RULE, entry)
    return name.rstrip(".")


def _normalize_host(host: str) -> str:
    """``host`` as allow-list names are: lowercase, no brackets, no final dot."""
    return host.strip("[]").rstrip(".").lower()


def _redacted(url: str) -> str:
    """``url`` fit for an error message: a user name and password are hidden (however
    the URL is malformed), and so are its path and query, which often hold a token."""
    shown = describe_url(url)
    if "@" in url:
        scheme, sep, rest = shown.partition("://")
        shown = f"{scheme}{sep}***@{rest}" if sep else f"***@{shown}"
    return shown


class AddressPolicy:
    """Which hosts a webhook may reach: public addresses, plus ``allow_hosts``.

    :param allow_hosts: exceptions to the rule, each one of

        - a host name, matched exactly (case aside) against the URL's host: any address
          it resolves to is allowed, e.g. ``"localhost"`` or ``"hooks.internal"``;
        - an IP address, e.g. ``"127.0.0.1"`` or ``"::1"``: allowed whatever name led
          to it;
        - a network, e.g. ``"10.0.0.0/8"``.
    :param https_only: refuse ``http://`` URLs.
    :raises ValidationError: ``allow_hosts`` is a string rather than a list of them, or
        holds something that is none of the above.
    """

    def __init__(self, allow_hosts: Iterable[str] = (), *, https_only: bool = False) -> None:
        if isinstance(allow_hosts, (str, bytes)) or not isinstance(allow_hosts, Iterable):
            raise ValidationError(
                "allow_hosts", "a list of host names, IP addresses or networks", allow_hosts
            )
        if not isinstance(https_only, bool):
            raise ValidationError("https_only", "True or False", https_only)
        names: list[str] = []
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow_hosts:
            allowed = _allow_entry(entry)
            if isinstance(allowed, str):
                names.append(allowed)
            else:
                networks.append(allowed)
        self._names = frozenset(names)
        self._networks = tuple(dict.fromkeys(networks))
        #: The ``allow_hosts`` entries, normalised: names, then networks.
        self.allow_hosts: tuple[str, ...] = (
            *sorted(self._names),
            *(str(network) for network in self._networks),
        )
        #: Whether ``http://`` URLs are refused.
        self.https_only = https_only

    def __repr__(self) -> str:
        return f"AddressPolicy({list(self.allow_hosts)!r}, https_only={self.https_only})"

    @property
    def schemes(self) -> tuple[str, ...]:
        """The URL schemes allowed."""
        return ("https",) if self.https_only else ("http", "https")

    def allows(self, host: str, ip: IPAddress) -> bool:
        """Whether a connection to ``host`` may go to ``ip``: the host or the address is
        in ``allow_hosts``, or the address is public."""
        return self._refusal(host, ip) is None

    def reason(self, host: str, ip: IPAddress) -> str | None:
        """None when connecting ``host`` (the URL's host) to ``ip`` is allowed, else
        why not, in a sentence: ``"localhost resolves to 127.0.0.1 (loopback); add it
        to allow_hosts to allow it"``."""
        refusal = self._refusal(host, ip)
        if refusal is None:
            return None
        return _refusal_sentence(_normalize_host(host), [(ip, refusal)])

    def _refusal(self, host: str, ip: IPAddress) -> str | None:
        if _normalize_host(host) in self._names:
            return None
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        # ``in`` compares the numbers, so a zone ("fe80::1%eth0") does not get in the way.
        if any(address in network for address in candidates for network in self._networks):
            return None
        return refused_reason(ip)

    def check_url(self, url: str, field: str = "url") -> Url:
        """``url`` parsed (as urllib3 will parse it when sending), if it may be used.

        Refused: a scheme other than ``http``/``https`` (only ``https`` with
        ``https_only``); no host; a user name or password (they would end up in logs);
        a port out of range; a host written as a number that is not a canonical IPv4
        address (``2130706433``, ``0x7f.1``, ``127.1``: resolvers take them for
        addresses); and an IP address host that is refused and not in ``allow_hosts``.
        A host name is not resolved here: the connection checks what it resolves to.

        :param field: the name of the field in errors, e.g. ``"endpoints[0].url"``.
        :raises ValidationError: naming ``field``.
        """
        scheme_rule = "an https:// URL" if self.https_only else "an http:// or https:// URL"
        if not isinstance(url, str):
            raise ValidationError(field, scheme_rule, url)
        try:
            parsed = parse_url(url)
        except LocationParseError:
            raise ValidationError(
                field, f"a well-formed URL ({scheme_rule})", _redacted(url)
            ) from None
        if parsed.auth is not None:
            raise ValidationError(
                field,
                "a URL without a user name or password (they would be written to logs; "
                "send credentials in a header)",
                _redacted(url),
            )
        if parsed.scheme not in self.schemes:
            raise ValidationError(field, scheme_rule, _redacted(url))
        if not parsed.host:
            raise ValidationError(field, "a URL with a host", _redacted(url))
        if parsed.port is not None and not 1 <= parsed.port <= 65535:
            raise ValidationError(field, "a port from 1 to 65535", _redacted(url))
        try:
            ip = _literal_ip(parsed.host)
        except ValueError:
            raise ValidationError(
                field,
                "a host name, or an IP address written the usual way (a.b.c.d)",
                _redacted(url),
            ) from None
        if ip is not None and self._refusal(parsed.host, ip) is not None:
            raise ValidationError(
                field, "a public address, or a host listed in allow_hosts", _redacted(url)
            )
        return parsed

    def connect(
        self,
        host: str,
        port: int,
        *,
        dns_host: str | None = None,
        timeout: _TYPE_TIMEOUT = _DEFAULT_TIMEOUT,
        source_address: tuple[str, int] | None = None,
        socket_options: Sequence[tuple[int, int, int | bytes]] | None = None,
        deadline: float | None = None,
    ) -> socket.socket:
        """A TCP connection to ``host`` on an allowed address: the host is resolved once,
        and the addresses are tried in order, skipping the refused ones.

        :param host: the URL's host, as the allow-list sees it.
        :param dns_host: the name to resolve, if it differs (urllib3 keeps a final dot).
        :param deadline: a :func:`time.monotonic` time by which to have connected, every
            address tried included (each one still gets at most ``timeout``).
        :raises AddressRefused: every address is refused.
        :raises OSError: the resolution failed (:class:`socket.gaierror`), or every
            allowed address failed to connect (the last error).
        """
        name = (dns_host or host).strip("[]")
        try:
            name.encode("idna")
        except UnicodeError:
            raise LocationParseError(f"'{name}', label empty or too long") from None
        refused: list[tuple[IPAddress, str]] = []
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in socket.getaddrinfo(
            name, port, allowed_gai_family(), socket.SOCK_STREAM
        ):
            try:
                address: IPAddress = ipaddress.ip_address(sockaddr[0])
            except (ValueError, TypeError, IndexError):
                continue  # not an IP socket address: nothing to check, nothing to use
            refusal = self._refusal(host, address)
            if refusal is not None:
                refused.append((address, refusal))
                continue
            wait = timeout
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no connection to {name} in time")
                if wait is _DEFAULT_TIMEOUT or wait is None or left < wait:
                    wait = left
            sock = socket.socket(family, kind, proto)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                if wait is not _DEFAULT_TIMEOUT:
                    sock.settimeout(wait)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)  # the address checked, never the name again
            except OSError as exc:
                sock.close()
                error = exc
                continue
            return sock
        if error is not None:
            try:
                raise error
            finally:
                error = None  # no reference cycle through the traceback
        if refused:
            (address, reason), *others = refused
            raise AddressRefused(_normalize_host(host), address, reason, others)
        raise OSError(f"{name} resolved to no address")


class _Watchdog:
    """Ends requests that outlive their deadline.

    urllib3's read timeout bounds each read, not the whole answer: a server that sends a
    byte every so often can hold a request for ever. Within :func:`deadline`, the
    connection a thread sends on is noted; a single daemon thread shuts the socket of
    any request past its deadline, and the read in progress fails at once.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        # thread id -> [deadline (monotonic), the connection in use, expired]
        self._active: dict[int, list[Any]] = {}
        self._thread: threading.Thread | None = None

    def begin(self, seconds: float) -> list[Any]:
        entry: list[Any] = [time.monotonic() + seconds, None, False]
        with self._cond:
            self._active[threading.get_ident()] = entry
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="taskevents-send-deadline", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return entry

    def attach(self, connection: Any) -> None:
        entry = self._active.get(threading.get_ident())
        if entry is not None:
            entry[1] = connection

    def end(self) -> None:
        with self._cond:
            self._active.pop(threading.get_ident(), None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._active:
                    self._cond.wait()
                now = time.monotonic()
                late = [e for e in self._active.values() if e[0] <= now and not e[2]]
            for entry in late:
                entry[2] = True
                sock = getattr(entry[1], "sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            time.sleep(0.05)


_watchdog = _Watchdog()


def attach(connection: Any) -> None:
    """Note ``connection`` (anything with a ``sock``) as the one this thread's request
    under :func:`deadline` uses, for connections made without :func:`pool_manager`."""
    _watchdog.attach(connection)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[list[Any]]:
    """Give the requests this thread makes through :func:`pool_manager` connections in
    the block ``seconds`` in all (connecting, sending, reading headers and body): past
    that, the socket is shut and the read in progress fails. Yields a record whose
    item ``[2]`` is True if the deadline struck."""
    entry = _watchdog.begin(seconds)
    try:
        yield entry
    finally:
        _watchdog.end()


class _GuardedHTTPConnection(HTTPConnection):
    """An HTTP connection that connects only where its :class:`AddressPolicy` allows."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watchdog.attach(self)  # under a deadline(), this request is the one to end
        super().request(*args, **kwargs)

    def __init__(self, *args: Any, address_policy: AddressPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.proxy is not None:
            raise ValueError("a guarded connection does not go through a proxy")
        self.address_policy = address_policy

    def _new_conn(self) -> socket.socket:
        # As urllib3's own, with the resolution and the connection done by the policy.
        assert self.port is not None
        try:
            sock = self.address_policy.connect(
                self.host,
                self.port,
                dns_host=self._dns_host,
                timeout=self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock


class _GuardedHTTPSConnection(_GuardedHTTPConnection, HTTPSConnection):
    """The same for HTTPS. TLS is urllib3's: SNI and the certificate check use the host
    name, never the address connected to."""


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedPoolManager(urllib3.PoolManager):
    """A :class:`urllib3.PoolManager` whose pools make guarded connections only."""

    def __init__(self, policy: AddressPolicy, **kw: Any) -> None:
        super().__init__(**kw)
        self.address_policy = policy
        self.pool_classes_by_scheme = {
            "http": _GuardedHTTPConnectionPool,
            "https": _GuardedHTTPSConnectionPool,
        }

    def _new_pool(
        self,
        scheme: str,
        host: str,
        port: int,
        request_context: dict[str, Any] | None = None,
    ) -> HTTPConnectionPool:
        if scheme not in self.address_policy.schemes:
            raise ValidationError(
                "url",
                "an https:// URL" if self.address_policy.https_only else "an http(s):// URL",
                f"{scheme}://{host}:{port}",
            )
        context = dict(self.connection_pool_kw if request_context is None else request_context)
        context["address_policy"] = self.address_policy
        return super()._new_pool(scheme, host, port, context)


def pool_manager(policy: AddressPolicy, *, maxsize: int = 4, **kw: Any) -> urllib3.PoolManager:
    """A :class:`urllib3.PoolManager` that connects only where ``policy`` allows.

    Each new connection resolves its host once, checks every address with ``policy``
    and connects to the first allowed one that answers. All refused:
    :class:`AddressRefused`, raised as itself from
    :meth:`~urllib3.PoolManager.request`, before anything is sent. Some allowed but
    none answering: urllib3's usual ``NewConnectionError`` (or ``MaxRetryError``
    around it, as ``retries`` says). A scheme the policy refuses (``http://`` with
    ``https_only``): :class:`~taskevents.ValidationError`.

    Everything else is urllib3's: ``TCP_NODELAY`` (unless ``socket_options`` says
    otherwise), timeouts, ``source_address``, certificate verification, SNI. No proxy
    is used, environment variables included; redirects are followed only if asked for,
    and each hop is checked the same way.

    :param maxsize: connections kept per host.
    :param kw: passed to :class:`urllib3.PoolManager` (``timeout``, ``retries``,
        ``headers``, ``ca_certs``, ``num_pools``...); proxy settings are refused.
    """
    if not isinstance(policy, AddressPolicy):
        raise ValidationError("policy", "an AddressPolicy", policy)
    proxied = sorted(key for key in kw if "proxy" in key)
    if proxied:
        raise TypeError(f"pool_manager() does not use proxies; got {', '.join(proxied)}")
    return _GuardedPoolManager(policy, maxsize=maxsize, **kw)
