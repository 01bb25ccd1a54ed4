"""Injected faults: 5xx on status calls, dropped submit connections, latency, and the
concurrency counters a client's bounds are checked against."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest
from emulator_helpers import (
    SUBMIT_PATH,
    async_client,
    fast_config,
    key_headers,
    submit,
    sync_client,
    wait_terminal,
)

from real_esrgan_async.testing import running_emulator


def test_status_error_rate_answers_500() -> None:
    """With ``status_error_rate=1`` every status call answers 500 with an error body."""
    config = fast_config(status_error_rate=1.0, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        accepted = submit(client, gateway, "https://example.com/a.png").json()
        responses = [
            client.get(accepted["polling_url"], headers=key_headers(gateway)) for _ in range(3)
        ]
        stats = gateway.emulator.stats()
    assert [500, 500, 500] == [response.status_code for response in responses]
    assert "Internal Server Error" == responses[0].json()["error"]
    assert ["error", "message"] == list(responses[0].json())
    assert (3, 3) == (stats.server_errors, stats.status_calls)


def test_partial_status_error_rate_mixes_500_and_200() -> None:
    """A rate of 0.5 (seeded) fails some status calls and answers others."""
    config = fast_config(status_error_rate=0.5, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        accepted = submit(client, gateway, "https://example.com/a.png").json()
        codes = {
            client.get(accepted["polling_url"], headers=key_headers(gateway)).status_code
            for _ in range(40)
        }
    assert {200, 500} == codes


def test_drop_before_create_is_a_transport_error_without_a_job() -> None:
    """A drop before creation cuts the connection (the client gets an httpx transport error),
    and no job exists and nothing is charged."""
    config = fast_config(drop_before_create_rate=1.0, fetch_inputs=False, wallet_balance=1.0)
    with running_emulator(config) as gateway, sync_client() as client:
        with pytest.raises(httpx.TransportError):
            submit(client, gateway, "https://example.com/a.png")
        stats = gateway.emulator.stats()
        ids = gateway.emulator.request_ids()
    assert (1, 0, 0, 0.0, 1.0) == (
        stats.dropped_before_create,
        stats.dropped_after_create,
        stats.jobs_created,
        stats.amount_charged,
        stats.wallet_balance,
    )
    assert [] == ids


def test_drop_after_create_is_a_transport_error_but_the_job_runs_and_is_charged() -> None:
    """A drop after creation looks the same to the client, but the job exists, is charged,
    and completes."""
    config = fast_config(drop_after_create_rate=1.0, fetch_inputs=False, wallet_balance=1.0)
    with running_emulator(config) as gateway, sync_client() as client:
        with pytest.raises(httpx.TransportError):
            submit(client, gateway, "https://example.com/a.png")
        [request_id] = gateway.emulator.request_ids()
        body = wait_terminal(client, gateway, request_id)
        stats = gateway.emulator.stats()
    assert "COMPLETED" == body["status"]
    assert (0, 1, 1, 0.002, 0.998) == (
        stats.dropped_before_create,
        stats.dropped_after_create,
        stats.jobs_created,
        stats.amount_charged,
        stats.wallet_balance,
    )


def test_a_dropped_connection_does_not_break_the_server() -> None:
    """After drops, the same client (new connection) gets normal answers."""
    config = fast_config(drop_after_create_rate=0.5, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        outcomes: list[int | str] = []
        for i in range(30):
            try:
                outcomes.append(submit(client, gateway, f"https://example.com/{i}.png").status_code)
            except httpx.TransportError:
                outcomes.append("dropped")
        stats = gateway.emulator.stats()
    assert {202, "dropped"} == set(outcomes)
    assert 30 == stats.jobs_created
    assert outcomes.count("dropped") == stats.dropped_after_create


def test_latency_delays_every_api_request() -> None:
    """``latency`` seconds are added to submit and status calls (not to media or samples)."""
    config = fast_config(latency=0.3, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        started = time.monotonic()
        accepted = submit(client, gateway, "https://example.com/a.png").json()
        submitted = time.monotonic()
        client.get(accepted["polling_url"], headers=key_headers(gateway))
        polled = time.monotonic()
    assert submitted - started >= 0.3
    assert polled - submitted >= 0.3


def test_latency_jitter_adds_up_to_its_value() -> None:
    """``latency_jitter`` adds a uniform extra delay in [0, jitter] to ``latency``."""
    config = fast_config(latency=0.1, latency_jitter=0.2, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        started = time.monotonic()
        submit(client, gateway, "https://example.com/a.png")
        elapsed = time.monotonic() - started
    assert elapsed >= 0.1


@pytest.mark.anyio
async def test_peak_concurrent_requests_counts_overlapping_requests() -> None:
    """Ten status calls in flight at once (each held 1 s by ``latency``) make a peak of ten;
    when they are done none is in flight."""
    config = fast_config(latency=1.0, fetch_inputs=False)
    with running_emulator(config) as gateway:
        async with async_client() as client:
            url = gateway.base_url + "/v2/requests/status/real-esrgan_nope"

            async def poll() -> None:
                await client.get(url, headers=key_headers(gateway))

            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(poll)
        stats = gateway.emulator.stats()
    assert (10, 0) == (stats.peak_concurrent_requests, stats.concurrent_requests)


@pytest.mark.anyio
async def test_active_jobs_and_their_peak() -> None:
    """Jobs count as active until terminal: five long jobs (cold starts at real time) are
    five active jobs, and the peak is five."""
    config = fast_config(time_scale=1.0, cold_start_rate=1.0, fetch_inputs=False)
    with running_emulator(config) as gateway:
        async with async_client() as client:
            for i in range(5):
                response = await client.post(
                    gateway.base_url + SUBMIT_PATH,
                    json={"image": f"https://example.com/{i}.png"},
                    headers=key_headers(gateway),
                )
                assert 202 == response.status_code
        stats = gateway.emulator.stats()
    assert (5, 5, 0) == (stats.active_jobs, stats.peak_active_jobs, stats.jobs_completed)


def test_active_jobs_drop_to_zero_once_terminal() -> None:
    """Once every job is terminal, no job is active and the peak remains."""
    config = fast_config(time_scale=0.0, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        for i in range(4):
            submit(client, gateway, f"https://example.com/{i}.png")
        stats = gateway.emulator.stats()
    assert (0, 1, 4) == (stats.active_jobs, stats.peak_active_jobs, stats.jobs_completed)
