"""Passwords out of every message: one ``mask_url`` and one ``redact`` for all URLs.

    mask_url("postgresql://app:s3cret@db/agents")   # postgresql://app:***@db/agents
    redact(str(exc), url)                           # the reason, with no part of the password

A URL typed by hand is often not valid: a password holding ``@``, ``/`` or ``:`` unescaped
(``postgresql://u:pa@ss@host/db``), a bad IPv6 bracket. Parsers then disagree on where the
password ends: ``urllib`` splits at the last ``@`` of the network location, libpq at the first,
and both stop at the first ``/``. So the password is taken as *everything* between the
scheme's ``user:`` and the last ``@`` of the whole string: a superset of what any parser could
have read as the password. Masking too much is harmless; masking too little is a leak.
A reason from a driver may still hold a piece of such a password glued to the host
("failed to resolve host 'ss@127.0.0.1'"), so ``redact`` also removes every piece of it
(between special characters, 3 characters or more) and anything glued before an ``@``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)(.*)\Z", re.S)
# libpq takes ``password=`` in a URL's query and in a ``key=value`` connection string.
_PASSWORD_PARAM = re.compile(r"(?i)((?:^|[?&;\s])password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&;\s#]*)")
_PIECE_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_URL_SPECIAL = re.compile(r"[@:/?#%&=\s]+")
_GLUED_TO_AT = re.compile(r"[^\s'\"()<>\[\],;]+@")
MIN_PIECE = 3  # shorter pieces say next to nothing and would blank out ordinary words


def _userinfo(url: str) -> tuple[str, str, str | None, str] | None:
    """``(scheme://, user, password or None, after the last @)``; None without credentials."""
    m = _SCHEME.match(url)
    if m is None or "@" not in m[2]:
        return None
    userinfo, _, after = m[2].rpartition("@")
    user, sep, password = userinfo.partition(":")
    return m[1], user, (password if sep else None), after


def _mask_params(text: str) -> str:
    return _PASSWORD_PARAM.sub(lambda m: m[1] + MASK, text)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for every message and log.

    Works on malformed URLs too (never raises): the password is everything between
    ``user:`` and the last ``@``, and a ``password=`` parameter is masked as well.
    """
    parts = _userinfo(url)
    if parts is None or parts[2] is None:
        return _mask_params(url)
    scheme, user, _, after = parts
    return _mask_params(f"{scheme}{user}:{MASK}@{after}")


def url_secrets(url: str) -> set[str]:
    """Every spelling of the URL's password that a parser or a driver may have echoed."""
    found: set[str] = set()
    parts = _userinfo(url)
    if parts is not None and parts[2]:
        found.add(parts[2])
    try:
        if password := urlsplit(url).password:
            found.add(password)
    except ValueError:  # malformed (a bad port or IPv6 bracket): the raw split above covers it
        pass
    found.update(m[2].strip("'") for m in _PASSWORD_PARAM.finditer(url) if m[2].strip("'"))
    return {variant for s in found for variant in (s, unquote(s), quote(unquote(s), safe=""))
            if variant}


def secret_pieces(secrets: Iterable[str]) -> list[str]:
    """The secrets and their pieces between special characters (>= 3 chars), longest first."""
    pieces: set[str] = set()
    for secret in secrets:
        if len(secret) >= MIN_PIECE:  # a 1-2 character password cannot be told from text
            pieces.add(secret)
        for splitter in (_URL_SPECIAL, _PIECE_SPLIT):
            pieces.update(p for p in splitter.split(secret) if len(p) >= MIN_PIECE)
    return sorted(pieces, key=len, reverse=True)


def redact(text: str, *urls: str | None, secrets: Iterable[str] = ()) -> str:
    """``text`` (an exception's reason, a whole message) with no part of any password left.

    Every URL in ``urls`` is masked where it appears whole; then every spelling and piece of
    its password (and of ``secrets``) is replaced by ``***``; when a password holds an ``@``,
    whatever is glued before an ``@`` is masked too, since a driver may have read the rest of
    the password as a user or a host.
    """
    given = [u for u in urls if u]
    for url in given:
        text = text.replace(url, mask_url(url))
    found = {s for u in given for s in url_secrets(u)} | {s for s in secrets if s}
    pieces = secret_pieces(found)
    if pieces:
        text = re.sub("|".join(map(re.escape, pieces)), MASK, text, flags=re.IGNORECASE)
    if any("@" in s for s in found):
        text = _GLUED_TO_AT.sub(_mask_glued, text)
    return _mask_params(text)


def _mask_glued(m: re.Match[str]) -> str:
    token = m[0]
    if "://" in token:  # a URL: masked whole above, or an example such as USER:PASSWORD@
        return token
    return token if token.endswith(f":{MASK}@") or token == f"{MASK}@" else f"{MASK}@"
