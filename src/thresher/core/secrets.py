"""Keeping credentials that users put into URLs (``https://user:password@host``, ``?token=...``) out of outputs,
logs and trackers."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import re2

_URL = re2.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]]+")  # re2: linear time on any text

SECRET_NAMES = ("token", "secret", "password", "passwd", "pwd", "key", "signature", "credential", "auth")
HIDDEN = "***"


def redact_url(url: str) -> str:
    """``url`` without its password (the user name stays) and with the values of query parameters whose names
    suggest a secret replaced by ``***``; text that is no URL comes back unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{HIDDEN}@{host}" if ":" in userinfo else f"{HIDDEN}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, HIDDEN if any(s in k.lower() for s in SECRET_NAMES) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it (up to a space, quote or bracket) passed through :func:`redact_url`."""
    if "://" not in text:
        return text
    redacted: str = _URL.sub(lambda m: redact_url(m.group(0)), text)
    return redacted
