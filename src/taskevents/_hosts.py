"""Host header checks against DNS rebinding, shared by the demo and the Flask extension.

A page on ``rebind.example`` whose name an attacker has re-pointed at 127.0.0.1 is
same-origin with itself, so origin checks let it in; only the ``Host`` header it sends
(``rebind.example:5000``) gives it away. :class:`HostCheck` refuses such requests with a
400 before they reach the application, Socket.IO endpoint included.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "ALL_INTERFACES",
    "LOOPBACK_NAMES",
    "AllowedHosts",
    "HostCheck",
    "host_allowed",
    "normalize_name",
    "parse_host",
    "same_origin",
]

#: The names of this machine's loopback interface that a browser sends as ``Host``.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

#: Listen addresses that mean "every interface".
ALL_INTERFACES = frozenset({"", "0.0.0.0", "::"})

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}

# A name or IPv4 address (letters, digits, ".", "-" and "_", which container names
# use), or an IPv6 address in brackets; then an optional port.
_HOST = re.compile(
    r"(?:(?P<name>[a-z0-9._-]+)|\[(?P<ipv6>[0-9a-f:.]+)\])(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE | re.ASCII,
)


def _name(name: str | None, ipv6: str | None) -> str | None:
    if ipv6 is not None:
        try:
            return str(ipaddress.IPv6Address(ipv6))  # canonical: "[0:0::1]" is "::1"
        except ValueError:
            return None
    assert name is not None
    name = name.lower()
    if name.endswith("."):  # "localhost." is the fully qualified "localhost"
        name = name[:-1]
    if not name or name.startswith(".") or ".." in name:
        return None
    return name


def parse_host(value: str) -> tuple[str, int | None] | None:
    """Split a ``Host`` header value into ``(name, port)``.

    The name is lowercased, an IPv6 address loses its brackets (and is written in its
    canonical form), and a final dot is dropped; the port is None when absent. A
    malformed value (bad characters, a port out of range) gives None.

    >>> parse_host("LocalHost:5000"), parse_host("[::1]:5000"), parse_host("a b")
    (('localhost', 5000), ('::1', 5000), None)
    """
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    name = _name(match["name"], match["ipv6"])
    port = None if match["port"] is None else int(match["port"])
    if name is None or (port is not None and not 1 <= port <= 65535):
        return None
    return name, port


def normalize_name(value: str) -> str:
    """An allowed host name as :func:`host_allowed` compares it: ``"Example.COM."``
    gives ``"example.com"``, ``"[::1]"`` gives ``"::1"``; ``"*.example.com"`` (any
    subdomain of example.com) stays a pattern.

    :raises ValueError: not a host name or address, or it has a port.
    """
    wildcard = value.startswith("*.")
    bare = value[2:] if wildcard else value
    try:
        address = ipaddress.ip_address(bare.strip("[]"))
    except ValueError:
        parsed = parse_host(bare)
    else:
        parsed = (str(address), None) if not wildcard else None
    if parsed is None or parsed[1] is not None:
        raise ValueError(f"expected a host name or address without a port, got {value!r}")
    return f"*.{parsed[0]}" if wildcard else parsed[0]


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(host: str, names: Iterable[str], *, any_ip: bool = False) -> bool:
    """Is ``host`` (a ``Host`` header value) one of ``names``?

    The port is not compared (a forwarded port changes it, and a rebinding page has to
    use the server's port anyway). ``names`` are as :func:`normalize_name` gives them;
    ``*.example.com`` matches the subdomains of example.com. With ``any_ip``, any IP
    address matches too: a page can only have an address as its origin when it comes
    from that address, so an address cannot be rebound.

    >>> host_allowed("LOCALHOST:5000", ["localhost", "127.0.0.1"])
    True
    >>> host_allowed("rebind.example:5000", ["localhost", "127.0.0.1"])
    False
    """
    parsed = parse_host(host)
    if parsed is None:
        return False
    name = parsed[0]
    for allowed in names:
        if name == allowed:
            return True
        if allowed.startswith("*.") and name.endswith(allowed[1:]):
            return True
    return any_ip and _is_ip(name)


def same_origin(origin: str, scheme: str, host: str) -> bool:
    """Is ``origin`` (an ``Origin`` header) the origin of a request to ``host`` over
    ``scheme``? Names compare as in :func:`host_allowed`, and a missing port is the
    scheme's default.

    >>> same_origin("http://localhost:5000", "http", "LocalHost:5000")
    True
    >>> same_origin("http://evil.example", "http", "localhost:5000")
    False
    """
    origin_scheme, sep, origin_host = origin.partition("://")
    origin_scheme, scheme = origin_scheme.lower(), scheme.lower()
    if not sep or origin_scheme != scheme:
        return False
    mine, theirs = parse_host(host), parse_host(origin_host)
    if mine is None or theirs is None:
        return False
    default = _DEFAULT_PORTS.get(scheme)
    return (mine[0], mine[1] or default) == (theirs[0], theirs[1] or default)


def _display(name: str) -> str:
    return f"[{name}]" if ":" in name else name


@dataclass(frozen=True)
class AllowedHosts:
    """The host names a server answers: ``names`` (normalised), and any IP address
    when ``any_ip``."""

    names: tuple[str, ...]
    any_ip: bool = False

    @classmethod
    def serving(cls, listen: str, extra: Iterable[str] = ()) -> AllowedHosts:
        """The names a server listening on ``listen`` answers, plus ``extra``.

        - a name or address: that one, and the loopback names ``localhost``,
          ``127.0.0.1`` and ``::1``;
        - every interface (``0.0.0.0``, ``::`` or empty): the loopback names, this
          machine's host name, and any IP address.

        :raises ValueError: an ``extra`` name is not a host name (the message says why).
        """
        names: list[str] = []
        every = listen.strip("[]") in ALL_INTERFACES
        # A name that is not one (an odd machine name) is left out; the loopback
        # names still work.
        with contextlib.suppress(ValueError):
            names.append(normalize_name(socket.gethostname() if every else listen))
        names.extend(LOOPBACK_NAMES)
        names.extend(normalize_name(name) for name in extra)
        return cls(tuple(dict.fromkeys(names)), any_ip=every)

    def allows(self, host: str) -> bool:
        """Is ``host`` (a ``Host`` header value) allowed?"""
        return host_allowed(host, self.names, any_ip=self.any_ip)

    def describe(self) -> str:
        """``"127.0.0.1, localhost, [::1]"``, for messages."""
        shown = ", ".join(_display(name) for name in self.names)
        return shown + (", any IP address" if self.any_ip else "")


class HostCheck:
    """WSGI middleware: a request whose ``Host`` is refused gets a 400 (plain text,
    naming the host) and never reaches ``app``.

    :param app: the WSGI application to protect; wrap it outermost, around the
        Socket.IO middleware too.
    :param allows: ``allows(environ) -> bool``: may this request through?
    :param prefix: check only the requests whose ``PATH_INFO`` starts with it.
    :param hint: a sentence added to the message: what to change to allow a host.
    """

    def __init__(
        self,
        app: WSGIApplication,
        allows: Callable[[WSGIEnvironment], bool],
        *,
        prefix: str = "/",
        hint: str = "",
    ) -> None:
        self.app = app
        self.allows = allows
        self.prefix = prefix
        self.hint = hint

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or ""
        if not path.startswith(self.prefix) or self.allows(environ):
            return self.app(environ, start_response)
        host = str(environ.get("HTTP_HOST", ""))
        shown = host if len(host) <= 100 else host[:100] + "..."
        message = f"Bad Request: Host {shown!r} is not allowed on this server."
        body = (" ".join(filter(None, [message, self.hint])) + "\n").encode("utf-8", "replace")
        start_response(
            "400 Bad Request",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("X-Content-Type-Options", "nosniff"),
            ],
        )
        return [body]
