"""The client-level wiring of the attack suite: plain http, and the key in constructor locals."""

from __future__ import annotations

import traceback

import pytest

from real_esrgan_async import AsyncRealESRGAN, InvalidRequestError, RealESRGAN

KEY = "sk-live-0123456789abcdef0123456789abcdef"


def test_plain_http_to_another_host_is_refused_unless_explicitly_allowed() -> None:
    with pytest.raises(InvalidRequestError, match="clear text"):
        AsyncRealESRGAN(KEY, base_url="http://gateway.example")
    with pytest.raises(InvalidRequestError, match="clear text"):
        RealESRGAN(KEY, base_url="http://10.0.0.5:8000")
    allowed = AsyncRealESRGAN(KEY, base_url="http://gateway.example", allow_insecure_http=True)
    assert "http://gateway.example" == str(allowed.base_url)
    assert "127.0.0.1" == AsyncRealESRGAN(KEY, base_url="http://127.0.0.1:8000").base_url.host


@pytest.mark.parametrize(
    "bad",
    [{"max_connections": 0}, {"base_url": "http://gateway.example"}, {"timeout": "x"}],
)
@pytest.mark.parametrize("cls", [AsyncRealESRGAN, RealESRGAN])
def test_a_constructor_error_formatted_with_locals_never_shows_the_key(
    cls: type[AsyncRealESRGAN] | type[RealESRGAN], bad: dict[str, object]
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        cls(KEY, **bad)  # type: ignore[arg-type]
    formatted = "".join(
        traceback.TracebackException.from_exception(info.value, capture_locals=True).format()
    )
    assert "InvalidRequestError" in formatted  # the chain was really formatted
    assert KEY not in formatted


@pytest.mark.parametrize("cls", [AsyncRealESRGAN, RealESRGAN])
def test_a_malformed_key_is_refused_without_showing_it_anywhere(
    cls: type[AsyncRealESRGAN] | type[RealESRGAN],
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        cls(KEY + "\n")  # (built inline: a local of this test's frame would show it)
    formatted = "".join(
        traceback.TracebackException.from_exception(info.value, capture_locals=True).format()
    )
    assert KEY not in formatted
