"""Connection-string helpers that never let a password reach a log or a screen.

Masking a well-formed URL is not enough: libpq quotes the connection string, or a piece of it, in its
errors about a malformed one (no scheme, a bad `%` escape, an unbalanced `[`, a misspelt keyword, an
unescaped `@`). So besides `mask_url`, every candidate secret in a connection string is remembered
(`register_url`) and `scrub` removes all of them, whole or in pieces, from any text before it is shown.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import unquote

# libpq keywords whose values are not secret; any other keyword's value (password, sslpassword, a
# misspelt `passwrd`, an unknown option) is treated as one.
_PUBLIC = """service user passfile channel_binding connect_timeout dbname host hostaddr port client_encoding
options application_name fallback_application_name keepalives keepalives_idle keepalives_interval
keepalives_count tcp_user_timeout sslmode sslnegotiation sslcompression sslcert sslkey sslcertmode
sslrootcert sslcrl sslcrldir sslsni requirepeer require_auth min_protocol_version max_protocol_version
ssl_min_protocol_version ssl_max_protocol_version gssencmode krbsrvname gsslib gssdelegation
target_session_attrs load_balance_hosts oauth_issuer oauth_client_id oauth_scope sslkeylogfile"""
_PUBLIC_KEYWORDS = frozenset(_PUBLIC.split())
_KEYWORD_VALUE = re.compile(r"([A-Za-z_][\w.-]*)(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)")
_QUERY_VALUE = re.compile(r"([?&])([^=&#]*)=([^&#]*)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_WINDOW = 4  # pieces of a secret this long or longer count as a leak
MASK = "***"

_lock = threading.Lock()
_registered: dict[str, str] = {}  # raw connection string -> its masked form
_secrets: set[str] = set()


def _public(keyword: str) -> bool:
    return keyword.lower() in _PUBLIC_KEYWORDS


def _is_keyword_form(url: str) -> bool:
    return not _SCHEME.match(url) and bool(re.match(r"\s*[A-Za-z_][\w.-]*\s*=", url))


def _userinfo_passwords(url: str) -> set[str]:
    """The password as a URL parser would read it (up to the last `@`) and as libpq does (up to the
    first): with an unescaped `@` in the password the two differ, and both must be hidden."""
    rest = _SCHEME.sub("", url.strip(), count=1)
    authority = re.split(r"[?#]", rest, maxsplit=1)[0]
    found: set[str] = set()
    for cut in (authority.rfind("@"), authority.find("@")):
        if cut <= 0:
            continue
        userinfo = authority[:cut]
        if ":" in userinfo:
            found.add(userinfo.split(":", 1)[1])
    return found


def secrets_in(url: str) -> set[str]:
    """Every text that could be (part of) a secret in `url`, raw and percent-decoded."""
    # Read every way libpq might: hiding too much costs nothing, too little shows the password.
    candidates = _userinfo_passwords(url)
    for match in _KEYWORD_VALUE.finditer(url):
        if not _public(match.group(1)):
            value = match.group(3)
            candidates.add(value)
            if value.startswith("'") and value.endswith("'") and len(value) >= 2:
                candidates.add(value[1:-1])
    for match in _QUERY_VALUE.finditer(url):
        if not _public(match.group(2)):
            candidates.add(match.group(3))
    found: set[str] = set()
    for candidate in candidates:
        for text in (candidate, unquote(candidate)):
            # libpq stops at an unescaped `@`, and quotes either side of it
            found.update(piece for piece in (text, *text.split("@")) if piece)
    return found


def _mask_structure(url: str) -> str:
    if _is_keyword_form(url):
        return _KEYWORD_VALUE.sub(
            lambda m: m.group(0) if _public(m.group(1)) else f"{m.group(1)}{m.group(2)}{MASK}", url
        )
    scheme = _SCHEME.match(url)
    head = scheme.group(0) if scheme else ""
    rest = url[len(head) :]
    authority_end = re.search(r"[?#]", rest)
    authority = rest[: authority_end.start()] if authority_end else rest
    tail = rest[len(authority) :]
    cut = authority.rfind("@")
    if cut > 0:
        userinfo, hostinfo = authority[:cut], authority[cut + 1 :]
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + MASK
        authority = f"{userinfo}@{hostinfo}"
    tail = _QUERY_VALUE.sub(
        lambda m: m.group(0) if _public(m.group(2)) else f"{m.group(1)}{m.group(2)}={MASK}", tail
    )
    return head + authority + tail


def _remove(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _WINDOW:
            text = text.replace(secret, MASK)
        else:  # a short one only where it stands alone, or every word would lose its letters
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", MASK, text)
    return text


def _leaks(text: str, secrets: set[str]) -> bool:
    return any(
        secret[i : i + _WINDOW] in text
        for secret in secrets
        if len(secret) >= _WINDOW
        for i in range(len(secret) - _WINDOW + 1)
    )


def mask_url(url: str) -> str:
    """The connection string (URL or keyword/value, well-formed or not) with every secret `***`."""
    secrets = secrets_in(url)
    masked = _remove(_mask_structure(url), secrets)
    return masked if not _leaks(masked, secrets) else "(database URL hidden: it would show the password)"


def register_url(url: str | None) -> None:
    """Remember a connection string so that `scrub` hides it and its secrets from any text."""
    if not url:
        return
    masked = mask_url(url)
    with _lock:
        _registered[url] = masked
        _secrets.update(secrets_in(url))


def scrub(text: str, url: str | None = None) -> str:
    """`text` without any registered connection string (or `url`) or any piece of their secrets.

    A driver message that quotes only part of a secret loses its quoted parts; one that still shows a
    piece of it after that is replaced whole.
    """
    with _lock:
        registered = dict(_registered)
        secrets = set(_secrets)
    if url:
        registered[url] = mask_url(url)
        secrets |= secrets_in(url)
    for raw in sorted(registered, key=len, reverse=True):
        text = text.replace(raw, registered[raw])
    text = _remove(text, secrets)
    if _leaks(text, secrets):
        text = re.sub(
            r'"[^"]*"|\'[^\']*\'', lambda m: '"***"' if _leaks(m.group(0), secrets) else m.group(0), text
        )
    if _leaks(text, secrets):
        return "(details hidden: they would show the database password)"
    return text
