"""Checks on the URLs the client sends or follows.

Pure functions: no I/O, no DNS. A hostname is judged by its spelling only
(an IP literal, ``localhost``), which catches the mistakes the provider would
bill for without ever being able to fetch the image.
"""

from __future__ import annotations

import functools
import ipaddress
import re

import httpx

from ._exceptions import InvalidRequestError

MAX_URL_LENGTH = 2048
#: Longest URL accepted from the gateway (a signed output URL can be long; refusing a
#: COMPLETED answer over its length would cost the caller the result).
MAX_GATEWAY_URL_LENGTH = 16384

#: The common spelling of a URL: http(s), an ASCII host name or dotted IPv4, an optional
#: port, then a path, query or fragment of printable ASCII. `httpx.URL` accepts every such
#: string (a dotted host only if it is a valid IPv4 address, checked apart), with this
#: host, no credentials and no ``%`` in the host, so such a URL is checked without it:
#: parsing costs more than the rest of a request's bookkeeping (benchmarks/throughput.py).
#: Anything else takes the full parse.
_SIMPLE_URL = re.compile(r"https?://([A-Za-z0-9.\-]+)(?::[0-9]{1,5})?(?:[/?#][!-~]*)?", re.ASCII)
#: What `httpx.URL` validates as an IPv4 address.
_IPV4_STYLE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+", re.ASCII)


def check_image_url(
    value: object, *, field: str = "image", max_length: int = MAX_URL_LENGTH
) -> str:
    """Return `value` if it is an absolute http(s) URL the provider could fetch.

    Args:
        value: The URL.
        field: Its name, for the message.
        max_length: The longest accepted.

    Raises:
        InvalidRequestError: `value` is not a string, or the URL is malformed,
            relative, not http(s), too long, or carries credentials.
    """
    if not isinstance(value, str):
        raise InvalidRequestError(
            f"{field} must be a str URL, got {type(value).__name__} {value!r}"
        )
    # (Every whitespace character but " " is also not printable.)
    if not value or not value.isprintable() or " " in value:
        raise InvalidRequestError(
            f"{field} must be an absolute http(s) URL with no spaces or control characters "
            f"(percent-encode them), got {value[:80]!r}"
        )
    if len(value) > max_length:
        raise InvalidRequestError(
            f"{field} is {len(value)} characters long; at most {max_length} are allowed"
        )
    if _simple_host(value) is not None:
        return value
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise InvalidRequestError(f"{field} {value!r} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        shown = f"{url.scheme}:" if url.scheme else "no scheme"
        raise InvalidRequestError(
            f"{field} must be an absolute http:// or https:// URL, got {shown} in {value[:80]!r}"
        )
    if not url.host or "%" in url.host:
        raise InvalidRequestError(f"{field} must name a valid host, got {value[:80]!r}")
    if url.userinfo:
        raise InvalidRequestError(
            f"{field} must not embed credentials (user:password@); got a URL for host {url.host!r}"
        )
    return value


def check_base_url(url: object, *, allow_insecure: bool) -> str:
    """Return `url` if the API key may be sent to it.

    The key travels in a header of every gateway request: over ``http://`` it
    would cross the network in clear text. Plain http is therefore accepted
    only to a loopback host (an emulator on this machine), or when the caller
    says so explicitly.

    Args:
        url: The gateway's base URL.
        allow_insecure: Accept ``http://`` to any host (a trusted private network).

    Raises:
        InvalidRequestError: `url` is malformed, or is ``http://`` to a host
            that is not loopback while `allow_insecure` is False.
    """
    checked = check_image_url(url, field="base_url")
    if not allow_insecure and not is_https(checked) and not is_loopback_url(checked):
        raise InvalidRequestError(
            f"base_url {checked[:80]!r} is plain http:// to {httpx.URL(checked).host!r}: the API "
            "key would cross the network in clear text. Use https://, or http:// to a loopback "
            "host (localhost, 127.0.0.1, ::1); pass allow_insecure_http=True only for a "
            "network you trust"
        )
    return checked


def is_private_host(url: str) -> bool:
    """Whether `url` names a host the provider cannot reach: loopback, private, link-local."""
    address = _address(url)
    if address is None:
        return False
    return (
        address.is_private or address.is_loopback or address.is_link_local or address.is_unspecified
    )


def is_loopback_url(url: str) -> bool:
    """Whether `url` names this machine: ``localhost`` or a loopback address."""
    address = _address(url)
    return address is not None and address.is_loopback


def _address(url: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address `url`'s host spells (``localhost`` is 127.0.0.1), or None for a name."""
    host = _simple_host(url)
    return _host_address(httpx.URL(url).host if host is None else host.lower())


@functools.lru_cache(maxsize=1024)
def _host_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a (lowercase) host spells; cached: a run sends many URLs to few hosts."""
    if host == "localhost" or host.endswith(".localhost"):
        return ipaddress.IPv4Address("127.0.0.1")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _simple_host(url: str) -> str | None:
    """The host of `url` if `url` is spelled the common way (`_SIMPLE_URL`), else None.

    None means "parse it in full", never "invalid".
    """
    match = _SIMPLE_URL.fullmatch(url)
    if match is None:
        return None
    host = match.group(1)
    if _IPV4_STYLE.fullmatch(host) and not _valid_ipv4(host):
        return None
    return host


@functools.lru_cache(maxsize=1024)
def _valid_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def same_origin(url: str, base: httpx.URL) -> bool:
    """Whether `url` has the scheme, host and port of `base` (so the key may travel to it)."""
    try:
        other = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return (other.scheme, other.host, other.port) == (base.scheme, base.host, base.port)


def is_https(url: str) -> bool:
    """Whether `url` is an https:// URL."""
    return httpx.URL(url).scheme == "https"
