"""The fleet's rate limit through clients: a submit budget and a 429 pause shared in Redis."""

from __future__ import annotations

import anyio
import pytest

from real_esrgan_async import AsyncRealESRGAN, RedisStore, RetryPolicy
from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)


def client_for(gateway: RunningEmulator, store: RedisStore) -> AsyncRealESRGAN:
    return AsyncRealESRGAN(
        gateway.api_key, base_url=gateway.base_url, retry=FAST_RETRY, store=store
    )


async def test_a_429_seen_by_one_worker_pauses_the_others(redis_url: str, prefix: str) -> None:
    """Worker A meets a 429; worker B, which never asked, waits out the same pause and
    meets none. Without the shared pause B would have hit the limit too."""
    config = EmulatorConfig(
        time_scale=1.0, seed=5, error_rate=0.0, rate_limit=2, rate_limit_window=2.0
    )
    with running_emulator(config) as gateway:
        sample = gateway.sample_urls()[0]
        probe = RedisStore(redis_url, prefix=prefix)
        async with (
            client_for(gateway, RedisStore(redis_url, prefix=prefix)) as a,
            client_for(gateway, RedisStore(redis_url, prefix=prefix)) as b,
        ):
            await probe_open(probe, gateway.base_url)
            await a.submit(sample)
            await a.submit(sample)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(a.submit, sample)  # refused with a 429, retried after the pause
                with anyio.fail_after(10):  # the pause reaches the store within ~50 ms
                    # The pause lives on the server: polling it is what a test can do.
                    while await anyio.to_thread.run_sync(probe.take_submit_token) == 0:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                # Refused by the limit now; let through only once A's pause is over.
                await b.submit(sample)
            a_429, b_429 = a.stats().rate_limited, b.stats().rate_limited
        probe.close()
        served_429 = gateway.emulator.stats().rate_limited
    assert (1, 0) == (a_429, b_429)
    assert 1 == served_429


async def probe_open(store: RedisStore, base_url: str) -> None:
    await anyio.to_thread.run_sync(
        store.open, str(AsyncRealESRGAN("k", base_url=base_url).base_url)
    )


async def test_the_fleet_budget_spaces_submits_across_clients(redis_url: str, prefix: str) -> None:
    """Two clients share a budget of burst 2: the third submit of the pair waits for a
    token (counted as a wait asked by the server, not as a 429)."""
    config = EmulatorConfig(time_scale=1.0, seed=5, error_rate=0.0)
    with running_emulator(config) as gateway:
        sample = gateway.sample_urls()[0]
        probe = RedisStore(redis_url, prefix=prefix, submit_rate=5.0, submit_burst=2)

        def store() -> RedisStore:
            return RedisStore(redis_url, prefix=prefix, submit_rate=5.0, submit_burst=2)

        async with client_for(gateway, store()) as a, client_for(gateway, store()) as b:
            await a.submit(sample)
            await b.submit(sample)
            await probe_open(probe, gateway.base_url)
            empty = await anyio.to_thread.run_sync(probe.take_submit_token)
            await a.submit(sample)  # waits for the bucket to refill, then goes
        probe.close()
        paid = gateway.emulator.stats().jobs_created
    assert 0 < empty <= 0.2
    assert 3 == paid
