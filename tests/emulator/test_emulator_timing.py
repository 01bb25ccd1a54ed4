"""The timing model and the lazy job states: pure parts with plain numbers, then over loopback."""

from __future__ import annotations

import asyncio
import random
import time
import tracemalloc
from typing import Any

import anyio
import pytest
from emulator_helpers import (
    SUBMIT_PATH,
    TERMINAL,
    async_client,
    await_terminal,
    fast_config,
    image_of,
    key_headers,
    png_bytes,
    slow_input,
    submit,
    sync_client,
)
from PIL import Image

from real_esrgan_async.testing import Emulator, EmulatorConfig, running_emulator
from real_esrgan_async.testing._images import Upscaled
from real_esrgan_async.testing._jobs import status_at
from real_esrgan_async.testing._state import EmulatorState, InsufficientBalance, RateLimited
from real_esrgan_async.testing._timing import (
    duration_factor,
    processing_seconds,
    queue_wait_seconds,
    sync_poll_delay,
)
from real_esrgan_async.testing._validation import SubmitRequest

REQUEST = SubmitRequest(image="https://example.com/cat.png", scale=4, face_enhance=False)


def _state(**overrides: Any) -> EmulatorState:
    return EmulatorState(fast_config(**overrides), b"png")


def _create(state: EmulatorState, now: float) -> Any:
    return state.try_create(now, 1_780_000_000.0 + now, REQUEST, base_url="http://gw", webhook=None)


def test_processing_time_follows_the_calibrated_formula() -> None:
    """2.7 s + 12.8 s per input megapixel + 0.09 s per megapixel of the network's 4x output
    (16 per input megapixel), + 1 s with faces, times the job's noise factor."""
    assert 2.7 + 12.8 + 0.09 * 16 == pytest.approx(
        processing_seconds(1_000_000, face_enhance=False)
    )
    assert 2.7 + 12.8 + 0.09 * 16 + 1.0 == pytest.approx(
        processing_seconds(1_000_000, face_enhance=True)
    )
    assert 2 * 2.7 == pytest.approx(processing_seconds(0, face_enhance=False, factor=2.0))


def test_duration_factor_is_noise_around_one_shortened_for_errors() -> None:
    """The noise has median ~1; a job that will ERROR gets through half to all of its run."""
    rng = random.Random(11)
    factors = sorted(duration_factor(rng, errors=False) for _ in range(2001))
    assert 0.95 < factors[1000] < 1.05
    erroring = sorted(duration_factor(rng, errors=True) for _ in range(2001))
    assert 0.7 < erroring[1000] < 0.8


def test_a_seeded_emulator_plans_jobs_independently_of_fault_draws() -> None:
    """Fault draws (made at request times the client controls) do not change job plans."""
    quiet = _state(time_scale=1.0, fetch_inputs=False, error_rate=0.5)
    noisy = _state(time_scale=1.0, fetch_inputs=False, error_rate=0.5)
    plans = []
    for state, faults in ((quiet, 0), (noisy, 7)):
        jobs = []
        for i in range(20):
            for _ in range(faults):
                state.roll(0.5)
            jobs.append(_create(state, float(i)))
        plans.append([(j.start_at, j.end_at, j.planned_error) for j in jobs])
    assert plans[0] == plans[1]


def test_queue_wait_is_lognormal_around_1_5_s_with_rare_cold_starts() -> None:
    """The median queue wait is about 1.5 s; with cold starts always on, every wait is at least
    20 s and at most 90 s more than a normal one."""
    rng = random.Random(7)
    waits = sorted(queue_wait_seconds(rng, 0.0) for _ in range(2001))
    assert 1.3 < waits[1000] < 1.7
    cold = [queue_wait_seconds(rng, 1.0) for _ in range(200)]
    assert min(cold) >= 20.0
    assert max(cold) < 90.0 + 20.0


def test_sync_poll_delays_grow_and_are_capped_at_15_s() -> None:
    """Sync-mode poll cycles come after 1, 2, 4, 8, then 15 s each."""
    assert [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0] == [sync_poll_delay(i) for i in range(7)]
    assert 15.0 == sync_poll_delay(10_000)


def test_states_are_computed_from_planned_instants() -> None:
    """QUEUED before ``start_at``, PROCESSING until ``end_at``, then the outcome; nothing
    changes in the job record when time passes."""
    state = _state(time_scale=1.0, fetch_inputs=False)
    job = _create(state, 100.0)
    assert job.created_at < job.start_at < job.end_at
    assert "QUEUED" == status_at(job, 100.0)
    assert "QUEUED" == status_at(job, job.start_at - 1e-6)
    assert "PROCESSING" == status_at(job, job.start_at)
    assert "PROCESSING" == status_at(job, job.end_at - 1e-6)
    assert "COMPLETED" == status_at(job, job.end_at)
    assert "COMPLETED" == status_at(job, job.end_at + 1e6)


def test_time_scale_multiplies_every_planned_duration() -> None:
    """With the same seed, ``time_scale=0.001`` plans the same job 1000 times faster."""
    real = _create(_state(time_scale=1.0, fetch_inputs=False), 0.0)
    fast = _create(_state(time_scale=0.001, fetch_inputs=False), 0.0)
    assert real.start_at / 1000 == pytest.approx(fast.start_at)
    assert real.end_at / 1000 == pytest.approx(fast.end_at)


def test_time_scale_zero_ends_jobs_at_once() -> None:
    """With ``time_scale=0`` a job is terminal at its creation instant."""
    job = _create(_state(time_scale=0.0, fetch_inputs=False), 5.0)
    assert (5.0, 5.0, "COMPLETED") == (job.start_at, job.end_at, status_at(job, 5.0))


def test_a_job_stays_processing_until_its_input_is_processed() -> None:
    """With inputs fetched, the terminal instant is unknown (PROCESSING) until ``finish``, and
    never before the instant the processing actually finished."""
    state = _state(time_scale=0.0)
    job = _create(state, 0.0)
    assert (None, "PROCESSING") == (job.end_at, status_at(job, 1000.0))
    end_at = state.finish(job, 7.0, Upscaled(png=b"png", input_pixels=64, output_pixels=1024))
    assert (7.0, "COMPLETED") == (end_at, status_at(job, 7.0))


def test_failed_inputs_end_failed_with_their_message() -> None:
    """``finish`` with a message ends the job FAILED with that error and no output."""
    state = _state(time_scale=1.0)
    job = _create(state, 0.0)
    end_at = state.finish(job, 0.5, "'NoneType' object has no attribute 'shape'")
    assert end_at is not None
    assert ("FAILED", "'NoneType' object has no attribute 'shape'", None) == (
        status_at(job, end_at),
        job.error,
        job.output,
    )


def test_advance_refunds_errors_and_counts_outcomes() -> None:
    """Settling at a later instant counts each outcome once and refunds ERROR jobs."""
    state = _state(time_scale=1.0, fetch_inputs=False, error_rate=1.0, wallet_balance=0.01)
    jobs = [_create(state, float(i)) for i in range(3)]
    assert pytest.approx(0.004) == state.wallet.balance_usd
    state.advance(max(job.end_at for job in jobs))
    state.advance(1e9)
    stats = state.snapshot(1e9)
    assert (3, 0, 0.01, 0.006) == (
        stats.jobs_errored,
        stats.active_jobs,
        stats.wallet_balance,
        stats.amount_refunded,
    )


def test_rate_limit_and_wallet_refusals() -> None:
    """Creation is refused with the seconds until the window frees, or for lack of balance."""
    limited = _state(rate_limit=2, rate_limit_window=10.0, fetch_inputs=False)
    _create(limited, 0.0)
    _create(limited, 4.0)
    assert RateLimited(retry_after=5.0) == _create(limited, 5.0)
    assert not isinstance(_create(limited, 10.0), RateLimited)
    broke = _state(wallet_balance=0.001, fetch_inputs=False)
    assert InsufficientBalance() == _create(broke, 0.0)


def test_ten_thousand_jobs_are_cheap() -> None:
    """10,000 jobs (no fetching) are plain records of well under 2 KB each, settled from their
    planned instants."""
    state = _state(time_scale=0.0, fetch_inputs=False, error_rate=0.015)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(10_000):
            _create(state, i * 1e-3)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stats = state.snapshot(1e6)
    assert 10_000 == stats.jobs_created
    assert 10_000 == stats.jobs_completed + stats.jobs_errored
    assert 0 == stats.active_jobs
    assert used / 10_000 < 2_000


async def _asgi_post(app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """One request straight into the ASGI app (no client library): returns the status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await anyio.sleep_forever()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def test_ten_thousand_jobs_through_the_app() -> None:
    """The ASGI app accepts 10,000 submits with ``fetch_inputs=False`` and ``time_scale=0``,
    holds them without a task each, and answers for any of them (driven in-process, without
    sockets, to stay quick)."""
    emulator = Emulator(EmulatorConfig(fetch_inputs=False, time_scale=0.0, seed=3))
    headers = [(b"ocp-apim-subscription-key", b"emulator-key")]

    async def main() -> tuple[list[int], int]:
        codes = [
            await _asgi_post(
                emulator.app, SUBMIT_PATH, b'{"image": "https://example.com/%d.png"}' % i, headers
            )
            for i in range(10_000)
        ]
        return codes, len(asyncio.all_tasks())

    codes, tasks = asyncio.run(main())
    stats = emulator.stats()
    last = emulator.job(emulator.request_ids()[-1])
    assert [202] * 10_000 == codes
    assert 1 == tasks  # only main(): no task per job
    assert (10_000, 0) == (stats.jobs_created, stats.active_jobs)
    assert last is not None
    assert last.status in TERMINAL


def test_progression_over_loopback() -> None:
    """Polled over loopback, a job (a cold start of 20-90 model seconds at time_scale 0.01) is
    first QUEUED, its statuses never go backwards, and it ends COMPLETED."""
    config = fast_config(time_scale=0.01, cold_start_rate=1.0)
    order = ["QUEUED", "PROCESSING", "COMPLETED"]
    with running_emulator(config) as gateway, sync_client() as client:
        accepted = submit(client, gateway, gateway.sample_url("tiny.png")).json()
        seen: list[str] = []
        while not seen or seen[-1] not in TERMINAL:
            response = client.get(accepted["polling_url"], headers=key_headers(gateway))
            seen.append(response.json()["status"])
            time.sleep(0.005)
    assert "QUEUED" == seen[0]
    assert "COMPLETED" == seen[-1]
    assert sorted(seen, key=order.index) == seen


@pytest.mark.anyio
async def test_job_cannot_complete_before_its_input_is_fetched() -> None:
    """Even with ``time_scale=0``, a job whose input download is held stays PROCESSING until
    the input arrives, and then completes with the upscaled input."""
    held = slow_input(png_bytes(Image.new("RGB", (10, 6), (1, 2, 3))))
    try:
        with running_emulator(fast_config(time_scale=0.0)) as gateway:
            async with async_client() as client:
                response = await client.post(
                    gateway.base_url + SUBMIT_PATH,
                    json={"image": held.url, "scale": 2},
                    headers=key_headers(gateway),
                )
                polling_url = response.json()["polling_url"]
                await anyio.to_thread.run_sync(held.requested.wait, 10.0)
                await anyio.sleep(0.1)
                while_held = await client.get(polling_url, headers=key_headers(gateway))
                held.release()
                body = await await_terminal(client, gateway, response.json()["request_id"])
                media = await client.get(body["output"]["media_url"][0])
                output = image_of(media.content)
    finally:
        held.close()
    assert "PROCESSING" == while_held.json()["status"]
    assert "COMPLETED" == body["status"]
    assert (20, 12) == output.size
