"""Callback URLs and their secret tokens: pure checks, shared by the client and the receiver."""

from __future__ import annotations

import secrets
import string

import httpx

from ._exceptions import InvalidRequestError
from ._urls import check_image_url, is_https, is_loopback_url

#: Shortest ``webhook_secret`` accepted: 128 bits of base64.
MIN_SECRET_LENGTH = 22

#: Fewest different characters in a ``webhook_secret``; ``secrets.token_urlsafe(16)`` has
#: about 19, ``secrets.token_hex(16)`` about 15 (neither was refused in a million draws).
MIN_SECRET_DISTINCT = 8

_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
_CLASSES = (
    ("lowercase letters", frozenset(string.ascii_lowercase)),
    ("uppercase letters", frozenset(string.ascii_uppercase)),
    ("digits", frozenset(string.digits)),
    ("'-' and '_'", frozenset("-_")),
)
_ADVICE = "use a random one, e.g. secrets.token_urlsafe(32)"


def new_token() -> str:
    """A fresh, unguessable token for one client's callback URLs (256 random bits)."""
    return secrets.token_urlsafe(32)


def check_secret(secret: object) -> str:
    """Return `secret` if it can serve as the token shared by several processes.

    A secret long enough can still be guessable: one made of a single class
    of characters (``"s" * 30``, digits only), of few different characters,
    or mostly of one is refused too. Random secrets pass: these rules refuse
    none of a million ``secrets.token_urlsafe(16)`` or ``token_hex(16)``.

    Raises:
        InvalidRequestError: It is not a str of at least `MIN_SECRET_LENGTH`
            URL-safe characters (letters, digits, ``-``, ``_``), or it looks
            weak; the message says which rule it broke.
    """
    if not isinstance(secret, str):
        raise InvalidRequestError(f"webhook_secret must be a str, got {type(secret).__name__}")
    if len(secret) < MIN_SECRET_LENGTH or not _TOKEN_CHARS.issuperset(secret):
        raise InvalidRequestError(
            f"webhook_secret must be at least {MIN_SECRET_LENGTH} URL-safe characters "
            "(letters, digits, '-', '_'), e.g. from secrets.token_urlsafe(32); "
            f"got {len(secret)} characters"
        )
    weakness = _weakness(secret)
    if weakness is not None:
        # The secret itself is never quoted: it would end up in logs.
        raise InvalidRequestError(f"webhook_secret looks weak: {weakness}; {_ADVICE}")
    return secret


def _weakness(secret: str) -> str | None:
    """Why `secret` (long enough, URL-safe) looks guessable, or None.

    Cheap signs of a hand-made secret, not an entropy measure: a random token
    mixes character classes, has many different characters and repeats none
    much.
    """
    used = [name for name, chars in _CLASSES if not chars.isdisjoint(secret)]
    if len(used) < 2:
        return f"all its characters are {used[0]}; mix at least two kinds"
    distinct = len(set(secret))
    if distinct < MIN_SECRET_DISTINCT:
        return (
            f"it has only {distinct} different characters; "
            f"at least {MIN_SECRET_DISTINCT} are required"
        )
    top = max(secret.count(char) for char in set(secret))
    if 2 * top > len(secret):
        return f"one character fills {top} of its {len(secret)} places; at most half may be one"
    return None


def check_webhook_url(url: object, *, allow_insecure: bool = False) -> str:
    """Return `url` if the gateway can POST callbacks to it.

    Args:
        url: The receiver's public URL.
        allow_insecure: Also accept ``http://`` to a loopback host (for tests
            against the emulator; the real gateway rejects any ``http://``).

    Raises:
        InvalidRequestError: It is not an absolute https URL (or, with
            `allow_insecure`, an http URL to a loopback host).
    """
    checked = check_image_url(url, field="webhook_url")
    if is_https(checked) or (allow_insecure and is_loopback_url(checked)):
        return checked
    hint = (
        "only loopback hosts may use http:// with allow_insecure_webhooks=True"
        if allow_insecure
        else "http:// to a loopback host is allowed with allow_insecure_webhooks=True, for tests"
    )
    raise InvalidRequestError(
        f"webhook_url must be an https:// URL (the gateway rejects http), got {checked[:80]!r}; "
        + hint
    )


def url_with_token(url: str, token: str) -> str:
    """`url` with `token` appended as its last path segment (any query is kept)."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(path=parsed.path.rstrip("/") + "/" + token))
