"""The URL checks' fast path decides exactly as the full parse does.

`check_image_url` and the host checks skip `httpx.URL` for URLs spelled the
common way; these tests hold that shortcut to the full parse's answers.
"""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from real_esrgan_async import InvalidRequestError
from real_esrgan_async._urls import check_image_url, is_loopback_url, is_private_host


def _reference(value: str) -> bool:
    """The check before the fast path: whether the full parse accepts `value`."""
    if not value or any(char.isspace() or not char.isprintable() for char in value):
        return False
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return False
    return (
        url.scheme in ("http", "https")
        and bool(url.host)
        and "%" not in url.host
        and not url.userinfo
    )


def _accepted(value: str) -> bool:
    try:
        check_image_url(value)
    except InvalidRequestError:
        return False
    return True


_PIECES = st.sampled_from(
    [
        "http://",
        "https://",
        "HTTP://",
        "ftp://",
        "example.com",
        "EXAMPLE.com",
        "127.0.0.1",
        "999.1.1.1",
        "1.2.3",
        "01.2.3.4",
        "[::1]",
        "user:pw@",
        "@",
        ":",
        ":8080",
        ":99999",
        ":x",
        "/",
        "/a/b.jpg",
        "?n=1",
        "#f",
        "%41",
        "%zz",
        " ",
        "\t",
        "\x7f",
        "\xa0",
        "é",
        "-",
        ".",
        "\\",
        "localhost",
    ]
)


@given(st.lists(_PIECES, max_size=6).map("".join))
@example("http://127.0.0.1:8000/samples/photo.jpg?n=1")
@example("http://256.0.0.1/x")
@example("https://a..b/")
def test_check_image_url_matches_the_full_parse(value: str) -> None:
    assert _reference(value) == _accepted(value)


@given(st.text(max_size=40))
def test_check_image_url_matches_the_full_parse_on_any_text(value: str) -> None:
    assert _reference(value) == _accepted(value)


def _reference_address(url: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host = httpx.URL(url).host
    if host == "localhost" or host.endswith(".localhost"):
        return ipaddress.IPv4Address("127.0.0.1")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/a.jpg",
        "http://LOCALHOST/a.jpg",
        "http://api.localhost/a",
        "https://10.1.2.3/a",
        "https://example.com/a",
        "https://[::1]/a",
        "http://169.254.1.1",
        "http://0.0.0.0/",
        "https://8.8.8.8/x?y=1",
    ],
)
def test_host_checks_match_the_full_parse(url: str) -> None:
    address = _reference_address(url)
    assert (address is not None and address.is_loopback) == is_loopback_url(url)
    expected_private = address is not None and (
        address.is_private or address.is_loopback or address.is_link_local or address.is_unspecified
    )
    assert expected_private == is_private_host(url)
