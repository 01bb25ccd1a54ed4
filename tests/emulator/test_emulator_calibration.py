"""Jobs are timed by input size even when inputs are not fetched: the calibrated model of
``docs/gateway-model.md`` (median ~16 s, p95 ~33 s, p99 ~84 s, 3% cold starts at ``time_scale=1``),
driven through the pure timing functions and the clock-free state with fixed seeds."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from emulator_helpers import SUBMIT_PATH

from real_esrgan_async.testing import Emulator, EmulatorConfig
from real_esrgan_async.testing._state import EmulatorState
from real_esrgan_async.testing._timing import nominal_input_pixels, processing_seconds
from real_esrgan_async.testing._validation import (
    SubmitRejectedError,
    SubmitRequest,
    megapixels_hint,
)

JOBS = 20_000


def _durations(config: EmulatorConfig, image: str = "https://example.com/cat.png") -> list[Any]:
    """Create ``JOBS`` jobs a millisecond apart; return them (their plans are fixed at once)."""
    state = EmulatorState(config, b"png")
    request = SubmitRequest(image=image, scale=4, face_enhance=False)
    return [
        state.try_create(i * 1e-3, 1.78e9, request, base_url="http://gw", webhook=None)
        for i in range(JOBS)
    ]


def _quantile(values: list[float], fraction: float) -> float:
    return sorted(values)[int(fraction * (len(values) - 1))]


def test_default_config_times_jobs_with_the_calibrated_16_s_model_without_fetching() -> None:
    """With the defaults (0.3-2 MP inputs, 3% cold starts) and no fetching, the end-to-end job
    time has a median of about 16 s, a p95 of about 33 s and a p99 of about 84 s, and about 3%
    of jobs wait 20 s or more in the queue."""
    config = EmulatorConfig(fetch_inputs=False, seed=20, error_rate=0.0)
    jobs = _durations(config)
    totals = [job.end_at - job.created_at for job in jobs]
    queued = [job.start_at - job.created_at for job in jobs]
    cold = sum(wait >= 20.0 for wait in queued) / JOBS
    assert 15.0 < _quantile(totals, 0.5) < 17.0
    assert 30.0 < _quantile(totals, 0.95) < 36.0
    assert 70.0 < _quantile(totals, 0.99) < 95.0
    assert 0.025 < cold < 0.035


def test_nominal_sizes_are_log_uniform_over_the_range() -> None:
    """Drawn sizes stay in [low, high] and split evenly around the geometric middle (as many
    inputs between 0.3 and 0.77 MP as between 0.77 and 2 MP)."""
    rng = random.Random(5)
    pixels = [nominal_input_pixels(rng, (0.3, 2.0)) for _ in range(JOBS)]
    middle = math.sqrt(0.3 * 2.0) * 1e6
    below = sum(p < middle for p in pixels) / JOBS
    assert 300_000 <= min(pixels)
    assert max(pixels) <= 2_000_000
    assert 0.48 < below < 0.52


def test_a_fixed_nominal_size_consumes_no_randomness() -> None:
    """A fixed size is that size, and leaves the generator where it was."""
    rng = random.Random(3)
    before = rng.getstate()
    assert 1_250_000 == nominal_input_pixels(rng, 1.25)
    assert before == rng.getstate()


def test_a_fixed_nominal_size_times_every_job_by_that_size() -> None:
    """``nominal_megapixels=1.0``: a job is PROCESSING for exactly the model's time for a 1 MP
    input (with the job's own noise factor)."""
    config = EmulatorConfig(fetch_inputs=False, seed=2, error_rate=0.0, nominal_megapixels=1.0)
    state = EmulatorState(config, b"png")
    request = SubmitRequest(image="https://example.com/a.png", scale=2, face_enhance=False)
    job: Any = state.try_create(0.0, 1.78e9, request, base_url="http://gw", webhook=None)
    expected = processing_seconds(1_000_000, face_enhance=False, factor=job.duration_factor)
    assert expected == pytest.approx(job.end_at - job.start_at)


def test_the_requested_scale_does_not_change_the_plan() -> None:
    """The network always runs at 4x: with the same seed, scale 1 and scale 4 jobs are planned
    alike."""
    plans = []
    for scale in (1, 4):
        state = EmulatorState(EmulatorConfig(fetch_inputs=False, seed=9), b"png")
        request = SubmitRequest(image="https://example.com/a.png", scale=scale, face_enhance=False)
        jobs: list[Any] = [
            state.try_create(i, 1.78e9, request, base_url="http://gw", webhook=None)
            for i in range(50)
        ]
        plans.append([(job.start_at, job.end_at) for job in jobs])
    assert plans[0] == plans[1]


def test_a_size_hint_in_the_url_times_that_job_and_leaves_the_others_alone() -> None:
    """``?emulator_megapixels=2`` times a job as a 2 MP input; the jobs after it are planned
    exactly as without the hint."""
    config = EmulatorConfig(fetch_inputs=False, seed=4, error_rate=0.0, cold_start_rate=0.0)
    plain = EmulatorState(config, b"png")
    hinted = EmulatorState(config, b"png")
    request = SubmitRequest(image="https://example.com/a.png", scale=4, face_enhance=False)
    big = SubmitRequest(
        image="https://example.com/a.png?emulator_megapixels=2", scale=4, face_enhance=False
    )
    create: Any = EmulatorState.try_create
    first_plain = create(plain, 0.0, 1.78e9, request, base_url="http://gw", webhook=None)
    first_hinted = create(
        hinted, 0.0, 1.78e9, big, base_url="http://gw", webhook=None, megapixels=2.0
    )
    later_plain = [
        create(plain, t, 1.78e9, request, base_url="http://gw", webhook=None).end_at
        for t in (1.0, 2.0, 3.0)
    ]
    later_hinted = [
        create(hinted, t, 1.78e9, request, base_url="http://gw", webhook=None).end_at
        for t in (1.0, 2.0, 3.0)
    ]
    expected = processing_seconds(
        2_000_000, face_enhance=False, factor=first_hinted.duration_factor
    )
    assert expected == pytest.approx(first_hinted.end_at - first_hinted.start_at)
    assert first_plain.end_at != first_hinted.end_at
    assert later_plain == later_hinted


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("https://example.com/a.png", None),
        ("https://example.com/a.png?n=3", None),
        ("https://example.com/a.png?n=3&emulator_megapixels=0.5", 0.5),
        ("https://example.com/a.png?emulator_megapixels=2.096704", 2.096704),
    ],
)
def test_megapixels_hint_is_read_from_the_query(image: str, expected: float | None) -> None:
    """The hint is the ``emulator_megapixels`` query parameter, absent by default."""
    assert expected == megapixels_hint(image, limit=2.096704)


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf", "2.1", ""])
def test_an_invalid_megapixels_hint_is_refused_saying_what_is_allowed(value: str) -> None:
    """A hint that is not a size the model accepts is a 400 naming the parameter and the range."""
    with pytest.raises(SubmitRejectedError) as refused:
        megapixels_hint(f"https://example.com/a.png?emulator_megapixels={value}", limit=2.096704)
    assert (
        f"emulator_megapixels in the image URL must be a number of megapixels in (0, 2.096704], "
        f"got {value!r}"
    ) == str(refused.value)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, "got 0"),
        (2.5, ValueError, "got 2.5"),
        ((2.0, 1.0), ValueError, "got (2.0, 1.0)"),
        ((0.5,), ValueError, "got (0.5,)"),
        ("1", TypeError, "got '1'"),
        (True, TypeError, "got True"),
    ],
)
def test_nominal_megapixels_is_validated(value: Any, error: type[Exception], message: str) -> None:
    """A bad ``nominal_megapixels`` says what was wrong and what is allowed."""
    with pytest.raises(error) as refused:
        EmulatorConfig(nominal_megapixels=value)
    assert str(refused.value).startswith(
        "nominal_megapixels must be a number of megapixels in (0, 2.096704] or a (low, high) "
        "range of two such numbers with low <= high"
    )
    assert str(refused.value).endswith(message)


def test_nominal_megapixels_takes_a_json_list() -> None:
    """A config read from JSON (a benchmark's server process) gives the range as a list."""
    config = EmulatorConfig(**json.loads('{"nominal_megapixels": [0.5, 1.5]}'))
    assert (0.5, 1.5) == config.nominal_megapixels


def test_a_bad_hint_is_a_400_over_http() -> None:
    """Through the app, an invalid hint is refused before any job is created or charged."""
    import asyncio

    from test_emulator_timing import _asgi_post

    emulator = Emulator(EmulatorConfig(fetch_inputs=False, time_scale=0.0, seed=3))
    headers = [(b"ocp-apim-subscription-key", b"emulator-key")]
    body = b'{"image": "https://example.com/a.png?emulator_megapixels=9"}'
    status = asyncio.run(_asgi_post(emulator.app, SUBMIT_PATH, body, headers))
    assert (400, 0, 1) == (
        status,
        emulator.stats().jobs_created,
        emulator.stats().bad_requests,
    )
