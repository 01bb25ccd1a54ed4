"""The library against the emulator, over real loopback sockets, on asyncio and trio."""

from __future__ import annotations

import collections
import io
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from PIL import Image

from real_esrgan_async import (
    AmbiguousSubmitError,
    AsyncRealESRGAN,
    InsufficientBalanceError,
    JobFailedError,
    JobSystemError,
    Outcome,
    PollPolicy,
    RetryPolicy,
    SQLiteStore,
    Status,
)
from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)
FAST_POLL = PollPolicy(initial_delay=0.02, min_interval=0.005, max_interval=0.05)
OVERSIZED = (  # verbatim from the hosted model, for a 1080 x 2400 RGB input
    "Input image of dimensions (2400, 1080, 3) has a total number of pixels 2592000 greater "
    "than the max size that fits in GPU memory on this hardware, 2096704. "
    "Resize input image and try again."
)


@pytest.fixture
def emulator() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(time_scale=0.002, seed=7, error_rate=0.0)) as running:
        yield running


def client_for(gateway: RunningEmulator, **options: object) -> AsyncRealESRGAN:
    options = {"retry": FAST_RETRY, "poll": FAST_POLL, **options}
    return AsyncRealESRGAN(
        gateway.api_key,
        base_url=gateway.base_url,
        **options,  # type: ignore[arg-type]
    )


def dimensions(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def test_one_image_end_to_end(emulator: RunningEmulator, tmp_path: Path) -> None:
    sample = emulator.sample_urls()[0]
    async with client_for(emulator) as client:
        state = await client.upscale(sample, scale=3)
        written = await client.download(state, tmp_path)
        original = await client.download(state)
    assert isinstance(written, Path)
    assert isinstance(original, bytes)
    assert original == written.read_bytes()
    source = emulator.emulator.job(state.request_id)
    assert source is not None
    width, height = dimensions(written.read_bytes())
    assert 0 == width % 3
    assert 0 == height % 3
    assert 1 == emulator.emulator.stats().jobs_created


async def test_the_samples_and_the_failure_paths_through_upscale_many(
    emulator: RunningEmulator,
) -> None:
    samples = emulator.sample_urls()
    bad = {
        emulator.sample_url("corrupt.png"): "'NoneType' object has no attribute 'shape'",
        emulator.sample_url("oversized.png"): OVERSIZED,
    }
    images = [*samples, *bad]
    async with client_for(emulator) as client:
        outcomes: list[Outcome] = [o async for o in client.upscale_many(images, scale=2)]
        stats = client.stats()
    assert sorted(range(len(images))) == sorted(o.index for o in outcomes)
    for outcome in outcomes:
        assert outcome.request is not None
        if outcome.request.image in bad:
            assert isinstance(outcome.error, JobFailedError)
            assert bad[outcome.request.image] == outcome.error.error
        else:
            assert outcome.ok, outcome.error
    assert (len(samples), 2, 0) == (stats.completed, stats.failed, stats.in_flight)
    assert {1} == set(emulator.emulator.stats().submits_by_image.values())


async def test_faults_lose_nothing_and_pay_nothing_twice() -> None:
    """5xx on status calls, transient ERRORs and cut connections on submit, all at once."""
    config = EmulatorConfig(
        time_scale=0.001,
        seed=11,
        fetch_inputs=False,
        error_rate=0.1,
        status_error_rate=0.2,
        drop_before_create_rate=0.1,
        drop_after_create_rate=0.1,
    )
    with running_emulator(config) as gateway:
        images = [f"{gateway.base_url}/samples/tiny.png?n={n}" for n in range(200)]
        async with client_for(gateway) as client:
            # (resubmit=False: one POST per input; tests/test_resubmit.py covers ERROR resubmits.)
            run = client.upscale_many(images, max_in_flight=20, resubmit=False)
            outcomes = [o async for o in run]
            unfinished = client.unfinished_request_ids
        stats = gateway.emulator.stats()
        jobs_by_request = {
            rid: job.image
            for rid in gateway.emulator.request_ids()
            if (job := gateway.emulator.job(rid)) is not None
        }
    assert list(range(200)) == sorted(o.index for o in outcomes)
    ambiguous = [o for o in outcomes if isinstance(o.error, AmbiguousSubmitError)]
    errored = [o for o in outcomes if isinstance(o.error, JobSystemError)]
    done = [o for o in outcomes if o.ok]
    assert len(ambiguous) + len(errored) + len(done) == 200
    # Every job whose id reached the client was seen through to its end.
    assert len(done) + len(errored) == stats.jobs_created - stats.dropped_after_create
    # A connection cut after the request was sent is ambiguous to the client, whether or
    # not the job was created: it is reported, never resubmitted. One POST per input.
    assert stats.dropped_after_create + stats.dropped_before_create == len(ambiguous)
    assert 200 == stats.submits_received
    assert {1} == set(collections.Counter(jobs_by_request.values()).values())
    assert stats.peak_active_jobs <= 20 + len(ambiguous)
    assert () == unfinished
    assert stats.server_errors > 0


async def test_a_throttled_gateway_is_waited_out() -> None:
    # A window long enough that even a loaded machine sends more than 10 submits in one
    # (with 0.5 s, a slow run could stay under the limit and never meet a 429).
    config = EmulatorConfig(
        time_scale=0.0, fetch_inputs=False, error_rate=0.0, rate_limit=10, rate_limit_window=2.0
    )
    with running_emulator(config) as gateway:
        images = [f"{gateway.base_url}/samples/tiny.png?n={n}" for n in range(25)]
        async with client_for(gateway) as client:
            outcomes = [o async for o in client.upscale_many(images)]
            stats = client.stats()
        created = gateway.emulator.stats().jobs_created
    assert [] == [o.error for o in outcomes if not o.ok]
    assert 25 == created
    assert stats.rate_limited > 0


async def test_an_empty_wallet_stops_the_run_and_keeps_the_rest() -> None:
    config = EmulatorConfig(
        time_scale=0.0, fetch_inputs=False, error_rate=0.0, wallet_balance=0.002 * 3
    )
    with running_emulator(config) as gateway:
        source = iter([f"{gateway.base_url}/samples/tiny.png?n={n}" for n in range(50)])
        outcomes: list[Outcome] = []
        async with client_for(gateway) as client:
            with pytest.raises(InsufficientBalanceError):
                async for outcome in client.upscale_many(source, max_in_flight=4):
                    outcomes.append(outcome)
    assert 3 == sum(o.ok for o in outcomes)
    assert 50 == len(outcomes) + len(list(source))


@pytest.mark.parametrize("keyed", [False, True], ids=["by-id", "by-key"])
async def test_a_job_submitted_elsewhere_is_checked_at_once(
    emulator: RunningEmulator, tmp_path: Path, keyed: bool
) -> None:
    """A job this client neither submitted nor saw (another worker's, found through its
    idempotency key; an id kept from an earlier run) may have finished long ago: its first
    check is made at once, not after a fresh job's first delay (an hour, here)."""
    sample = emulator.sample_urls()[0]
    store = SQLiteStore(tmp_path / "keys.db")
    async with client_for(emulator, store=store) as first:
        job = await first.submit(sample, idempotency_key="item-1")
        await first.wait(job)
    hour = PollPolicy(target_delay=None, initial_delay=3600.0, max_first_check=3600.0)
    shared = {"store": SQLiteStore(tmp_path / "keys.db")} if keyed else {}
    async with client_for(emulator, poll=hour, **shared) as later:
        with anyio.fail_after(30):
            if keyed:
                found = await later.submit(sample, idempotency_key="item-1")
                state = await later.wait(found)
            else:
                state = await later.wait(job.request_id)
        calls = later.stats().status_calls

    assert (job.request_id, Status.COMPLETED) == (state.request_id, state.status)
    assert calls <= 1  # (none when the store shares the first client's answer)
