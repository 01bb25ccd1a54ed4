"""What the keyed-submit tests share: fast policies, a client per "process", the bill."""

from __future__ import annotations

from collections.abc import Callable

from real_esrgan_async import AsyncRealESRGAN, PollPolicy, RetryPolicy, Store
from real_esrgan_async.testing import RunningEmulator

FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)
FAST_POLL = PollPolicy(initial_delay=0.02, min_interval=0.005, max_interval=0.05)
MakeStore = Callable[[], Store]


def client_for(gateway: RunningEmulator, store: Store | None) -> AsyncRealESRGAN:
    return AsyncRealESRGAN(
        gateway.api_key, base_url=gateway.base_url, retry=FAST_RETRY, poll=FAST_POLL, store=store
    )


def paid(gateway: RunningEmulator) -> int:
    return gateway.emulator.stats().jobs_created
