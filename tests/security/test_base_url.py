"""Attack: a base URL that would send the key across the network in clear text.

`check_base_url` is the check the client runs on `base_url`: plain http is
accepted only to a loopback host, unless the caller explicitly allows it.
"""

from __future__ import annotations

import pytest

from real_esrgan_async import InvalidRequestError
from real_esrgan_async._urls import check_base_url


@pytest.mark.parametrize(
    "url",
    [
        "http://gateway.pixazo.ai",
        "http://10.0.0.5:8080",
        "http://192.168.1.20",
        "http://emulator:8000",
        "http://localhost.evil.test",
        "http://127.0.0.1.nip.io",
    ],
)
def test_plain_http_to_a_host_off_this_machine_is_refused(url: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        check_base_url(url, allow_insecure=False)
    message = str(info.value)
    assert "the API key would cross the network in clear text" in message
    assert "allow_insecure_http=True" in message


@pytest.mark.parametrize(
    "url",
    [
        "https://gateway.pixazo.ai",
        "https://10.0.0.5:8443",
        "http://127.0.0.1:8000",
        "http://127.5.6.7",
        "http://localhost:9000",
        "http://[::1]:8000",
        "http://api.localhost",
    ],
)
def test_https_anywhere_and_plain_http_to_loopback_are_accepted(url: str) -> None:
    assert url == check_base_url(url, allow_insecure=False)


def test_plain_http_to_another_host_is_accepted_only_when_allowed() -> None:
    url = "http://emulator:8000"
    assert url == check_base_url(url, allow_insecure=True)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://gateway.test", "absolute http:// or https:// URL"),
        ("https://user:pw@gateway.test", "must not embed credentials"),
        (42, "base_url must be a str URL"),
    ],
)
def test_a_malformed_base_url_is_refused_even_when_insecure_is_allowed(
    url: object, fragment: str
) -> None:
    with pytest.raises(InvalidRequestError, match=fragment):
        check_base_url(url, allow_insecure=True)
