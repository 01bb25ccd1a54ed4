"""`upscale_many`: bounded, lazy, exactly one outcome per input, nothing paid lost."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from fake_gateway import BASE, FAST_POLL, FAST_RETRY, FakeGateway

from real_esrgan_async import (
    AmbiguousSubmitError,
    AsyncRealESRGAN,
    AuthenticationError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobFailedError,
    JobsUnfinishedError,
    JobSystemError,
    JobTimeoutError,
    Outcome,
    Stats,
    UpscaleRequest,
    UpscaleRun,
)

pytestmark = pytest.mark.anyio


def url(kind: str, n: int) -> str:
    return f"https://img.test/{kind}/{n}.png"


async def collect(run: AsyncIterator[Outcome]) -> list[Outcome]:
    return [outcome async for outcome in run]


async def test_a_thousand_mixed_inputs_give_exactly_one_outcome_each(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    """COMPLETED/FAILED/ERROR/429/5xx/ambiguous mixed: one outcome per input, bound kept."""
    kinds = ["ok", "ok", "ok", "fail", "error", "throttled", "flaky", "ambiguous"]
    images = [url(kinds[n % len(kinds)], n) for n in range(1000)]
    # (resubmit=False: ERROR jobs would be POSTed again; tests/test_resubmit.py covers that.)
    outcomes = await collect(client.upscale_many(images, max_in_flight=50, resubmit=False))

    assert list(range(1000)) == sorted(o.index for o in outcomes)
    expected_errors = {
        "fail": JobFailedError,
        "error": JobSystemError,
        "ambiguous": AmbiguousSubmitError,
    }
    for outcome in outcomes:
        assert outcome.request is not None
        kind = outcome.request.image.split("/")[3]
        assert images[outcome.index] == outcome.request.image
        if kind in expected_errors:
            assert isinstance(outcome.error, expected_errors[kind]), outcome
            assert not outcome.ok
        else:
            assert outcome.ok, outcome
            assert outcome.result is not None
            assert outcome.request_id == outcome.result.request_id
    # No POST twice for one input, except the 429 that created nothing.
    assert {1} == {n for image, n in fake.posts_per_image.items() if "throttled" not in image}
    assert {2} == {n for image, n in fake.posts_per_image.items() if "throttled" in image}
    assert fake.peak_open_jobs <= 50
    stats = client.stats()
    assert (875, 125, 125, 125, 625) == (
        stats.submitted,
        stats.failed,
        stats.errored,
        stats.ambiguous_submits,
        stats.completed,
    )
    # Every paid job reached the caller: ambiguous ones as errors, never silently.
    assert 1000 == len(fake.jobs)


async def test_inputs_are_pulled_lazily_from_an_async_generator(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    """Only as many inputs are pulled as there are free slots."""
    pulled = 0

    async def images() -> AsyncIterator[str]:
        nonlocal pulled
        for n in range(1_000_000):
            pulled += 1
            yield url("ok", n)

    seen = 0
    async with contextlib.aclosing(images()) as source:
        async for _ in client.upscale_many(source, max_in_flight=5):
            seen += 1
            assert pulled <= seen + 5
            if seen == 20:
                break
    assert pulled <= 25


async def test_a_slow_consumer_holds_the_bound(fake: FakeGateway, client: AsyncRealESRGAN) -> None:
    """Slots free only when the consumer takes an outcome, so nothing piles up."""
    run = client.upscale_many((url("ok", n) for n in range(30)), max_in_flight=4)
    outcomes = []
    async for outcome in run:
        outcomes.append(outcome)
        await anyio.sleep(0.02)
        assert len(fake.jobs) - len(outcomes) <= 4
    assert 30 == len(outcomes)


async def test_ordered_mode_keeps_input_order(fake: FakeGateway, client: AsyncRealESRGAN) -> None:
    images = [url("stuck" if n == 0 else "ok", n) for n in range(10)]
    fake.jobs.clear()
    run = client.upscale_many(images, max_in_flight=10, ordered=True, job_timeout=0.2)
    outcomes = await collect(run)
    assert list(range(10)) == [o.index for o in outcomes]
    assert isinstance(outcomes[0].error, JobTimeoutError)


async def test_rejected_inputs_are_outcomes_and_cost_nothing(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    images: list[object] = [
        "ftp://nope/x.png",
        url("ok", 1),
        42,
        UpscaleRequest(url("ok", 2), scale=2),
    ]
    outcomes = sorted(await collect(client.upscale_many(images, scale=3)), key=lambda o: o.index)  # type: ignore[arg-type]
    assert [False, True, False, True] == [o.ok for o in outcomes]
    assert isinstance(outcomes[0].error, InvalidRequestError)
    assert isinstance(outcomes[2].error, InvalidRequestError)
    assert (None, 3, 2) == (
        outcomes[0].request,
        outcomes[1].request.scale,
        outcomes[3].request.scale,
    )  # type: ignore[union-attr]
    assert 2 == sum(fake.posts_per_image.values())


async def test_bad_arguments_are_refused_before_anything_runs(client: AsyncRealESRGAN) -> None:
    with pytest.raises(InvalidRequestError, match="got a single str; wrap it in a list"):
        client.upscale_many("https://img.test/ok/1.png")
    with pytest.raises(InvalidRequestError, match=r"max_in_flight must be an int >= 1, got 0"):
        client.upscale_many([], max_in_flight=0)
    with pytest.raises(InvalidRequestError, match="scale must be one of"):
        client.upscale_many([], scale=7)


async def test_a_job_timeout_is_an_outcome_carrying_the_request_id(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    [outcome] = await collect(client.upscale_many([url("stuck", 0)], job_timeout=0.05))
    assert isinstance(outcome.error, JobTimeoutError)
    assert outcome.request_id == outcome.error.request_id
    assert (outcome.request_id,) == client.unfinished_request_ids


async def test_breaking_out_stops_submission_and_reports_unfinished_ids(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    images = [url("ok", n) for n in range(3)] + [url("stuck", n) for n in range(3, 1000)]
    async with client.upscale_many(images, max_in_flight=10) as run:
        async for outcome in run:
            assert outcome.ok
            break
    posts = sum(fake.posts_per_image.values())
    assert posts <= 11
    unfinished = set(run.unfinished_request_ids)
    assert unfinished <= set(client.unfinished_request_ids)
    assert set(fake.jobs) - {o for o in fake.jobs if fake.jobs[o].get("reported")} >= unfinished
    await anyio.sleep(0.05)
    assert posts == sum(fake.posts_per_image.values())  # nothing more was submitted
    assert 0 == client.session().poller.scheduler.waiting  # no one polls them


async def test_a_plain_break_stops_submission_too(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    """Without `async with`, the loop's iterator is finalised on leaving the loop."""
    images = (url("stuck", n) for n in range(1000))
    async for _ in client.upscale_many(images, max_in_flight=5, job_timeout=0.01):
        break
    await anyio.sleep(0.05)
    posts = sum(fake.posts_per_image.values())
    await anyio.sleep(0.05)
    assert posts == sum(fake.posts_per_image.values())
    assert posts <= 6


async def test_cancelling_the_consumer_loses_no_request_id(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    images = [url("stuck", n) for n in range(100)]

    async def consume(scope: anyio.CancelScope) -> None:
        with scope:
            async with client.upscale_many(images, max_in_flight=10) as run:
                runs.append(run)
                async for _ in run:
                    pass

    runs: list[UpscaleRun] = []
    scope = anyio.CancelScope()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, scope)
            while len(fake.jobs) < 10:  # noqa: ASYNC110 - the fake has no event to wait on
                await anyio.sleep(0.005)
            scope.cancel()
    [run] = runs
    assert 10 == len(fake.jobs)
    assert set(fake.jobs) == set(run.unfinished_request_ids) == set(client.unfinished_request_ids)


async def test_insufficient_balance_stops_pulling_but_finishes_what_was_paid(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    fake.balance = 5
    source = iter([url("ok", n) for n in range(100)])
    outcomes: list[Outcome] = []
    with pytest.raises(InsufficientBalanceError):
        async for outcome in client.upscale_many(source, max_in_flight=8):
            outcomes.append(outcome)
    paid = [o for o in outcomes if o.ok]
    refused = [o for o in outcomes if isinstance(o.error, InsufficientBalanceError)]
    assert (5, len(outcomes) - 5) == (len(paid), len(refused))
    assert len(outcomes) <= 8 + 1
    # The rest is still in the caller's iterator, ready for a top-up and a rerun.
    remaining = list(source)
    assert 100 == len(outcomes) + len(remaining)
    assert url("ok", 99) == remaining[-1]


async def test_a_refused_key_ends_the_run_with_the_error(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    fake.refuse_key = True
    with pytest.raises(AuthenticationError):
        await collect(client.upscale_many([url("ok", n) for n in range(50)]))
    assert 0 == len(fake.jobs)


async def test_closing_the_client_under_a_run_raises_with_the_unfinished_ids(
    fake: FakeGateway,
) -> None:
    client = AsyncRealESRGAN("key", base_url=BASE, retry=FAST_RETRY, poll=FAST_POLL)
    outcomes: list[Outcome] = []
    with pytest.raises(JobsUnfinishedError) as info:
        async with client:
            run = client.upscale_many([url("ok", 0)] + [url("stuck", n) for n in range(1, 5)])
            async for outcome in run:
                outcomes.append(outcome)
                await client.aclose()
    assert 1 == len(outcomes)
    assert set(info.value.request_ids) == set(fake.jobs) - {outcomes[0].request_id}


async def test_progress_hook_sees_each_submission_and_finish(fake: FakeGateway) -> None:
    seen: list[Stats] = []
    async with AsyncRealESRGAN(
        "key", base_url=BASE, retry=FAST_RETRY, poll=FAST_POLL, on_progress=seen.append
    ) as client:
        await collect(client.upscale_many([url("ok", n) for n in range(3)] + [url("fail", 3)]))
    assert 8 == len(seen)
    last = seen[-1]
    assert (4, 3, 1, 0, 0.008) == (
        last.submitted,
        last.completed,
        last.failed,
        last.in_flight,
        last.cost_usd,
    )
    assert collections.Counter({1: 4}) == collections.Counter(fake.posts_per_image.values())


async def test_a_failing_input_iterator_still_yields_what_was_paid_for(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    """Like a 402: no more input, the jobs in flight are awaited, then the error is raised."""

    def images() -> Iterator[str]:
        yield from (url("ok", n) for n in range(3))
        raise OSError("the crawler's disk went away")

    outcomes: list[Outcome] = []
    with pytest.raises(OSError, match="disk went away"):
        async for outcome in client.upscale_many(images()):
            outcomes.append(outcome)
    assert [True, True, True] == [o.ok for o in outcomes]
    assert () == client.unfinished_request_ids
