"""One validation style: every option says what was wrong and what is allowed."""

from __future__ import annotations

from typing import Any

import pytest

from real_esrgan_async import (
    AsyncRealESRGAN,
    InvalidRequestError,
    PollPolicy,
    RetryPolicy,
    WebhookReceiver,
)

CLIENT = "AsyncRealESRGAN."


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_download_bytes": -1}, CLIENT + "max_download_bytes must be an int >= 1, got -1"),
        ({"max_download_bytes": 1.5}, CLIENT + "max_download_bytes must be an int >= 1"),
        (
            {"webhook_confirm": "no"},
            CLIENT + "webhook_confirm must be a bool (True or False), got 'no'",
        ),
        ({"on_progress": 42}, CLIENT + "on_progress must be None or a callable, got int 42"),
        (
            {"webhook_mode": "loud"},
            CLIENT + "webhook_mode must be 'terminal' or 'sync', got 'loud'",
        ),
        ({"max_connections": True}, CLIENT + "max_connections must be an int >= 1, got True"),
        ({"timeout": "30"}, CLIENT + "timeout must be a finite number > 0 or an httpx.Timeout"),
        ({"timeout": float("nan")}, CLIENT + "timeout must be a finite number"),
        ({"retry": {"max_attempts": 3}}, CLIENT + "retry must be None or a RetryPolicy, got dict"),
        ({"poll": 5}, CLIENT + "poll must be None or a PollPolicy, got int 5"),
        ({"allow_insecure_webhooks": 1}, CLIENT + "allow_insecure_webhooks must be a bool"),
        ({"allow_private_image_hosts": "yes"}, CLIENT + "allow_private_image_hosts must be a bool"),
        ({"http_client": object()}, CLIENT + "http_client must be None or a AsyncClient"),
    ],
)
def test_every_client_option_is_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        AsyncRealESRGAN("key", **options)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base_delay": "1"}, "RetryPolicy.base_delay must be a finite number > 0, got '1'"),
        ({"max_attempts": True}, "RetryPolicy.max_attempts must be an int >= 1, got True"),
        ({"max_delay": float("inf")}, "RetryPolicy.max_delay must be a finite number > 0, got inf"),
    ],
)
def test_retry_policy_fields_say_what_is_allowed(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match="^" + message.replace("(", r"\(")):
        RetryPolicy(**options)


@pytest.mark.anyio
async def test_fan_out_options_are_checked_before_anything_runs() -> None:
    async with AsyncRealESRGAN("key", base_url="https://gateway.test") as client:
        with pytest.raises(InvalidRequestError, match=r"upscale_many\.ordered must be a bool"):
            client.upscale_many([], ordered=1)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError, match=r"upscale_many\.job_timeout must be None"):
            client.upscale_many([], job_timeout=-1)
        with pytest.raises(InvalidRequestError, match=r"wait\.timeout must be a finite number"):
            await client.wait("real-esrgan_1", timeout=0)


def test_the_receiver_checks_its_options() -> None:
    client = AsyncRealESRGAN("key")
    with pytest.raises(
        InvalidRequestError, match=r"WebhookReceiver\.max_body_bytes must be an int"
    ):
        WebhookReceiver(client, max_body_bytes=True)


def test_policies_still_accept_what_they_always_did() -> None:
    assert 2 == RetryPolicy(max_attempts=2).max_attempts
    assert 0.5 == PollPolicy(initial_delay=0.5).initial_delay
