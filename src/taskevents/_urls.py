"""URLs as logs and the CLI show them."""

from __future__ import annotations

from urllib.parse import urlsplit


def describe_url(url: str) -> str:
    """``url`` as logs show it: scheme, host and port; a path or query is shown as
    ``/...``, because webhook URLs often carry a token there."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "(a malformed URL)"
    shown = f"{parts.scheme}://{netloc}"
    return shown + ("/..." if parts.path not in ("", "/") or parts.query else "")
