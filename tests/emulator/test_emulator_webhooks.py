"""Webhook callbacks: terminal and sync modes, HTTPS rule, retries, duplicates and losses."""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator

import pytest
from emulator_helpers import (
    STATUS_KEYS,
    TERMINAL,
    Receiver,
    fast_config,
    key_headers,
    submit,
    sync_client,
    wait_terminal,
    wait_until,
)

from real_esrgan_async.testing import RunningEmulator, running_emulator

# A callback that should have arrived has arrived well within this (real seconds).
SETTLE = 0.3


def _hook(gateway: RunningEmulator, url: str, mode: str | None = None) -> dict[str, str]:
    extra = {"X-Webhook-URL": url}
    if mode is not None:
        extra["X-Webhook-Mode"] = mode
    return key_headers(gateway, **extra)


def _wall(iso: str) -> float:
    """Seconds since the epoch of ``2026-05-22T13:17:32.110Z``."""
    seconds = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
    return seconds + int(iso[20:23]) / 1000


def test_terminal_mode_posts_the_status_body_once(receiver: Receiver) -> None:
    """Terminal mode (the default) POSTs once, as JSON, the same body a status call returns at
    the terminal status, close to the job's ``completed_at``; nothing during PROCESSING."""
    config = fast_config(allow_http_webhooks=True)
    with running_emulator(config) as gateway, sync_client() as client:
        accepted = submit(
            client, gateway, gateway.sample_url("tiny.png"), headers=_hook(gateway, receiver.url)
        ).json()
        [call] = receiver.wait_for(1)
        status = wait_terminal(client, gateway, accepted["request_id"])
        time.sleep(SETTLE)
        stats = gateway.emulator.stats()
    assert 1 == len(receiver.calls)
    assert "application/json" == call.headers["Content-Type"]
    assert "/hook" == call.path
    assert status == call.json()
    assert STATUS_KEYS == list(call.json())
    assert "COMPLETED" == call.json()["status"]
    # Delivered at (not before) the terminal instant, and promptly after it.
    completed = _wall(call.json()["completed_at"])
    assert completed - 0.01 <= call.received_at < completed + 5.0
    assert (1, 0, 0) == (stats.webhooks_delivered, stats.webhooks_failed, stats.webhooks_lost)


def test_terminal_mode_reports_failures_too(receiver: Receiver) -> None:
    """A FAILED job's callback carries its error."""
    config = fast_config(allow_http_webhooks=True)
    with running_emulator(config) as gateway, sync_client() as client:
        submit(
            client,
            gateway,
            gateway.sample_url("corrupt.png"),
            headers=_hook(gateway, receiver.url, "terminal"),
        )
        [call] = receiver.wait_for(1)
    assert ("FAILED", "'NoneType' object has no attribute 'shape'") == (
        call.json()["status"],
        call.json()["error"],
    )


def test_sync_mode_posts_each_poll_cycle_then_the_terminal_status(receiver: Receiver) -> None:
    """Sync mode POSTs the non-terminal status on each queue poll cycle while the job runs,
    then the terminal status once; the statuses never go backwards."""
    # A cold start keeps the job QUEUED for 20-90 model seconds = 0.1-0.45 s; poll cycles come
    # every 1, 2, 4, 8, 15 model seconds = 5 ms to 75 ms.
    config = fast_config(
        allow_http_webhooks=True, time_scale=0.005, cold_start_rate=1.0, fetch_inputs=False
    )
    with running_emulator(config) as gateway, sync_client() as client:
        accepted = submit(
            client,
            gateway,
            "https://example.com/cat.png",
            headers=_hook(gateway, receiver.url, "sync"),
        ).json()
        status = wait_terminal(client, gateway, accepted["request_id"])
        wait_until(lambda: receiver.calls and receiver.calls[-1].json()["status"] in TERMINAL)
        time.sleep(SETTLE)
        bodies = [call.json() for call in receiver.calls]
    statuses = [body["status"] for body in bodies]
    assert len(statuses) >= 3
    assert ["COMPLETED"] == [s for s in statuses if s in TERMINAL]
    assert "COMPLETED" == statuses[-1]
    order = ["QUEUED", "PROCESSING", "COMPLETED"]
    assert sorted(statuses, key=order.index) == statuses
    assert status == bodies[-1]
    assert all(body["request_id"] == accepted["request_id"] for body in bodies)


def test_sync_mode_with_time_scale_zero_posts_only_the_terminal_status(receiver: Receiver) -> None:
    """With ``time_scale=0`` a job ends before its first poll cycle: one terminal POST."""
    config = fast_config(allow_http_webhooks=True, time_scale=0.0, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        submit(
            client,
            gateway,
            "https://example.com/a.png",
            headers=_hook(gateway, receiver.url, "sync"),
        )
        receiver.wait_for(1)
        time.sleep(SETTLE)
    assert ["COMPLETED"] == [call.json()["status"] for call in receiver.calls]


@pytest.fixture(scope="module")
def hook_gateways() -> Iterator[dict[bool, RunningEmulator]]:
    """Emulators with and without ``allow_http_webhooks``, where jobs stay queued (time_scale
    10), so that no callback to the test URLs is ever attempted."""
    with (
        running_emulator(
            fast_config(allow_http_webhooks=False, time_scale=10.0, fetch_inputs=False)
        ) as strict,
        running_emulator(
            fast_config(allow_http_webhooks=True, time_scale=10.0, fetch_inputs=False)
        ) as lenient,
    ):
        yield {False: strict, True: lenient}


@pytest.mark.parametrize(
    ("url", "allow_http", "expected"),
    [
        ("http://127.0.0.1:9/hook", False, 400),
        ("http://localhost:9/hook", False, 400),
        ("http://127.0.0.1:9/hook", True, 202),
        ("http://127.8.9.10:9/hook", True, 202),
        ("http://localhost:9/hook", True, 202),
        ("http://[::1]:9/hook", True, 202),
        ("http://example.com/hook", True, 400),
        ("http://10.0.0.1/hook", True, 400),
        ("https://127.0.0.1:9/hook", False, 202),
        ("ftp://127.0.0.1/hook", True, 400),
        ("/relative/hook", True, 400),
    ],
)
def test_webhook_url_must_be_https_unless_loopback_http_is_allowed(
    hook_gateways: dict[bool, RunningEmulator], url: str, allow_http: bool, expected: int
) -> None:
    """``http://`` webhook URLs are refused with 400, except loopback hosts when
    ``allow_http_webhooks`` is on; https is always accepted."""
    gateway = hook_gateways[allow_http]
    before = gateway.emulator.stats().jobs_created
    with sync_client() as client:
        response = submit(client, gateway, "https://example.com/a.png", headers=_hook(gateway, url))
    created = gateway.emulator.stats().jobs_created - before
    assert expected == response.status_code
    assert (1 if expected == 202 else 0) == created
    if expected == 400:
        assert "Bad Request" == response.json()["error"]
        assert "X-Webhook-URL" in response.json()["message"]


def test_unknown_webhook_mode_is_400(shared_gateway: RunningEmulator) -> None:
    """``X-Webhook-Mode`` is ``terminal`` or ``sync``."""
    with sync_client() as client:
        response = submit(
            client,
            shared_gateway,
            shared_gateway.sample_url("tiny.png"),
            headers=_hook(shared_gateway, "https://127.0.0.1:9/hook", "always"),
        )
    assert 400 == response.status_code
    assert "X-Webhook-Mode" in response.json()["message"]


def test_duplicate_rate_delivers_callbacks_twice(receiver: Receiver) -> None:
    """With ``webhook_duplicate_rate=1`` every callback arrives twice, identical."""
    config = fast_config(allow_http_webhooks=True, webhook_duplicate_rate=1.0, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        for i in range(3):
            submit(
                client,
                gateway,
                f"https://example.com/{i}.png",
                headers=_hook(gateway, receiver.url),
            )
        calls = receiver.wait_for(6)
        time.sleep(SETTLE)
        stats = gateway.emulator.stats()
    assert 6 == len(receiver.calls)
    by_id: dict[str, list[bytes]] = {}
    for call in calls:
        by_id.setdefault(call.json()["request_id"], []).append(call.body)
    assert [2, 2, 2] == [len(bodies) for bodies in by_id.values()]
    assert all(bodies[0] == bodies[1] for bodies in by_id.values())
    assert (6, 3) == (stats.webhooks_delivered, stats.webhooks_duplicated)


def test_loss_rate_loses_callbacks(receiver: Receiver) -> None:
    """With ``webhook_loss_rate=1`` no callback arrives and each one is counted lost."""
    config = fast_config(allow_http_webhooks=True, webhook_loss_rate=1.0, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        for i in range(3):
            submit(
                client,
                gateway,
                f"https://example.com/{i}.png",
                headers=_hook(gateway, receiver.url),
            )
        wait_until(lambda: gateway.emulator.stats().webhooks_lost == 3)
        time.sleep(SETTLE)
        stats = gateway.emulator.stats()
    assert [] == receiver.calls
    assert (0, 3) == (stats.webhooks_delivered, stats.webhooks_lost)


def test_failed_deliveries_are_retried_with_backoff(receiver: Receiver) -> None:
    """A receiver answering 500 twice gets the same callback a third time, after growing
    delays; the failures are counted."""
    receiver.answer([500, 503])
    config = fast_config(allow_http_webhooks=True, webhook_retry_delay=0.05, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        submit(client, gateway, "https://example.com/a.png", headers=_hook(gateway, receiver.url))
        calls = receiver.wait_for(3)
        time.sleep(SETTLE)
        stats = gateway.emulator.stats()
    assert 3 == len(receiver.calls)
    assert calls[0].body == calls[1].body == calls[2].body
    first_gap = calls[1].received_at - calls[0].received_at
    second_gap = calls[2].received_at - calls[1].received_at
    assert first_gap >= 0.05
    assert second_gap >= 0.1
    assert (1, 2, 0) == (stats.webhooks_delivered, stats.webhooks_failed, stats.webhooks_abandoned)


def test_persistent_failures_are_abandoned(receiver: Receiver) -> None:
    """After ``webhook_max_attempts`` failed attempts the callback is given up."""
    receiver.answer([500] * 10)
    config = fast_config(
        allow_http_webhooks=True,
        webhook_retry_delay=0.01,
        webhook_max_attempts=3,
        fetch_inputs=False,
    )
    with running_emulator(config) as gateway, sync_client() as client:
        submit(client, gateway, "https://example.com/a.png", headers=_hook(gateway, receiver.url))
        wait_until(lambda: gateway.emulator.stats().webhooks_abandoned == 1)
        time.sleep(SETTLE)
        stats = gateway.emulator.stats()
    assert 3 == len(receiver.calls)
    assert (0, 3, 1) == (stats.webhooks_delivered, stats.webhooks_failed, stats.webhooks_abandoned)


def test_unreachable_receiver_counts_as_failed_delivery() -> None:
    """A connection error is a failed attempt like a non-2xx answer."""
    config = fast_config(allow_http_webhooks=True, webhook_max_attempts=1, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        with running_emulator(fast_config()) as gone:
            dead_url = gone.base_url + "/hook"
        submit(client, gateway, "https://example.com/a.png", headers=_hook(gateway, dead_url))
        wait_until(lambda: gateway.emulator.stats().webhooks_abandoned == 1)
        stats = gateway.emulator.stats()
    assert (0, 1, 1) == (stats.webhooks_delivered, stats.webhooks_failed, stats.webhooks_abandoned)
