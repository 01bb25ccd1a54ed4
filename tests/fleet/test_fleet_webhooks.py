"""Webhook fan-in: a callback that reaches the wrong worker is relayed to the one that waits."""

from __future__ import annotations

import collections

import anyio
import pytest

from real_esrgan_async import (
    AsyncRealESRGAN,
    JobState,
    PollPolicy,
    RedisStore,
    RetryPolicy,
    Status,
)
from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator

pytestmark = pytest.mark.anyio

#: So slow that a wait which ended did not end by polling.
SAFETY_NET = PollPolicy(safety_net_interval=600.0, safety_net_factor=1000.0)


def client_for(gateway: RunningEmulator, redis_url: str, prefix: str) -> AsyncRealESRGAN:
    return AsyncRealESRGAN(
        gateway.api_key,
        base_url=gateway.base_url,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.05),
        poll=SAFETY_NET,
        webhook_url="http://127.0.0.1:9/hook",
        allow_insecure_webhooks=True,
        store=RedisStore(redis_url, prefix=prefix),
    )


def completed(gateway: RunningEmulator, request_id: str) -> bool:
    snapshot = gateway.emulator.job(request_id)
    return snapshot is not None and snapshot.status == "COMPLETED"


async def test_a_callback_received_by_another_worker_ends_the_wait(
    redis_url: str, prefix: str
) -> None:
    """Worker B waits on its job (webhooks on, safety net ten minutes away); the callback
    reaches worker A's receiver, which does not know the job. B's wait ends anyway, at the
    cost of B's one confirming status call and none of A's."""
    # The emulator's own callbacks are dropped: the test hands the callback to A itself.
    config = EmulatorConfig(
        time_scale=0.002, seed=9, error_rate=0.0, allow_http_webhooks=True, webhook_loss_rate=1.0
    )
    with running_emulator(config) as gateway:
        sample = gateway.sample_urls()[0]
        async with (
            client_for(gateway, redis_url, prefix) as a,
            client_for(gateway, redis_url, prefix) as b,
        ):
            job = await b.submit(sample)
            with anyio.fail_after(30):
                # The emulator runs in its own thread: polling it is what a test can do.
                while not completed(gateway, job.request_id):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            counts: collections.Counter[str] = collections.Counter()
            a.session().accept_callback(JobState(job.request_id, Status.COMPLETED), counts)
            with anyio.fail_after(10):
                state = await b.wait(job)
            calls = (a.stats().status_calls, b.stats().status_calls)
    assert (Status.COMPLETED, job.request_id) == (state.status, state.request_id)
    assert 1 == counts["ignored"]  # not A's job: A spent nothing on it
    assert (0, 1) == calls
