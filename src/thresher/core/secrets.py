"""Keeping credentials that users put into URLs (``https://user:password@host``, ``?token=...``) out of outputs,
logs and trackers."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import re2

# re2: linear time on any text
_URL = re2.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]]+")
# ``user:password@``, after a scheme or not (an error message may quote a URI without it): the password runs to the
# last ``@`` before a space, so one with ``(``, ``'``, ``/`` or ``@`` in it is hidden whole; it does not start with
# ``//`` (``https://token@host`` is a scheme and a user, left to redact_url)
_PASSWORD = re2.compile(r"((?:[A-Za-z][A-Za-z0-9+.-]*://)?[^\s/:@'\"<>()\[\]{}]+):(?:/?[^\s/@][^\s@]*)?@")

SECRET_NAMES = ("token", "secret", "password", "passwd", "pwd", "key", "sig", "credential", "auth")
HIDDEN = "***"


def redact_url(url: str) -> str:
    """``url`` without its password (the user name stays) and with the values of query parameters whose names
    suggest a secret (``sig``: Azure SAS, ``X-Amz-Signature``) replaced by ``***``; text that is no URL comes back
    unchanged."""
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
    """``text`` with the password of every ``user:password@`` hidden, and every URL in it (up to a space, quote or
    bracket) passed through :func:`redact_url`."""
    if "@" in text:
        text = _PASSWORD.sub(lambda m: f"{m.group(1)}:{HIDDEN}@", text)
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    return text


def redact_data(value: Any) -> Any:
    """``value`` (mappings, lists and scalars, as a config or a JSON record holds them) with every string passed
    through :func:`redact_text`."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v) for v in value]
    return value
