"""Callback URLs and their secret tokens: pure checks, shared by the client and the receiver."""

from __future__ import annotations

import secrets
import string

import httpx

from ._exceptions import InvalidRequestError
from ._urls import check_image_url, is_https, is_loopback_url

#: Shortest ``webhook_secret`` accepted: 128 bits of base64.
MIN_SECRET_LENGTH = 22

_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-_")


def new_token() -> str:
    """A fresh, unguessable token for one client's callback URLs (256 random bits)."""
    return secrets.token_urlsafe(32)


def check_secret(secret: object) -> str:
    """Return `secret` if it can serve as the token shared by several processes.

    Raises:
        InvalidRequestError: It is not a str of at least `MIN_SECRET_LENGTH`
            URL-safe characters (letters, digits, ``-``, ``_``).
    """
    if not isinstance(secret, str):
        raise InvalidRequestError(f"webhook_secret must be a str, got {type(secret).__name__}")
    if len(secret) < MIN_SECRET_LENGTH or not _TOKEN_CHARS.issuperset(secret):
        raise InvalidRequestError(
            f"webhook_secret must be at least {MIN_SECRET_LENGTH} URL-safe characters "
            "(letters, digits, '-', '_'), e.g. from secrets.token_urlsafe(32); "
            f"got {len(secret)} characters"
        )
    return secret


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
