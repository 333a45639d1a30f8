"""URLs and other outside text as logs and the CLI show them."""

from __future__ import annotations

from urllib.parse import urlsplit


def printable(text: str) -> str:
    """``text`` with control and other unprintable characters escaped (``\\x1b``), so
    that what an outside party wrote cannot drive the terminal it is shown on."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def describe_url(url: str) -> str:
    """``url`` as logs show it: scheme, host and port; a path or query is shown as
    ``/...``, because webhook URLs often carry a token there. Never raises."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "(a malformed URL)"
    shown = f"{parts.scheme}://{netloc}"
    return printable(shown + ("/..." if parts.path not in ("", "/") or parts.query else ""))
