"""Connection-string helpers that never let a password reach a log or a screen."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """Replace the password in a PostgreSQL URL or keyword/value conninfo with `***`."""
    if "://" not in url:
        return _KEYWORD_PASSWORD.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparseable database URL)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            userinfo = f"{user}:***"
        netloc = f"{userinfo}@{hostinfo}"
    query = _QUERY_PASSWORD.sub(r"\1***", "?" + parts.query)[1:] if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
