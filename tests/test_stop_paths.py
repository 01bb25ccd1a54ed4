"""Every paid id reaches the caller on every stop path: break, cancel, close, from any task.

Each scenario counts the jobs the fake gateway created (paid) and checks that each
one is reachable through the public API afterwards: an outcome the consumer took,
an outcome left unconsumed (`run.unconsumed_outcomes`, the client's
`take_unconsumed_outcomes()`), or an id still running (`unfinished_request_ids`).
Random stop moments, many iterations, on asyncio and trio.
"""

from __future__ import annotations

import random

import anyio
import pytest
from fake_gateway import BASE, FAST_RETRY, FakeGateway

from real_esrgan_async import (
    AsyncRealESRGAN,
    JobsUnfinishedError,
    Outcome,
    PollPolicy,
    UpscaleRun,
)

pytestmark = pytest.mark.anyio

#: Jobs finish on their first check, a few milliseconds after submission.
POLL = PollPolicy(
    initial_delay=0.002, min_interval=0.001, max_interval=0.005, jitter=0.0,
    max_checks_per_second=None,
)  # fmt: skip
ITERATIONS = 12


def urls(count: int, kind: str = "ok") -> list[str]:
    return [f"https://img.test/{kind}/{n}.png" for n in range(count)]


def new_client() -> AsyncRealESRGAN:
    return AsyncRealESRGAN("key", base_url=BASE, retry=FAST_RETRY, poll=POLL, max_connections=8)


def ids(outcomes: tuple[Outcome, ...] | list[Outcome]) -> set[str]:
    return {o.request_id for o in outcomes if o.request_id is not None}


async def test_a_break_while_the_consumer_is_busy_keeps_every_finished_result(
    fake: FakeGateway,
) -> None:
    """The issue's case: 16 slots, a slow consumer, a break; none of the paid ids is lost."""
    rng = random.Random(10)
    paid = reachable = 0
    for _ in range(ITERATIONS):
        fake.jobs.clear()
        async with new_client() as client:
            taken: list[Outcome] = []
            async with client.upscale_many(urls(200), max_in_flight=16) as run:
                async for outcome in run:
                    taken.append(outcome)
                    await anyio.sleep(rng.uniform(0, 0.03))  # jobs finish meanwhile
                    if rng.random() < 0.3:
                        break
            found = ids(taken) | ids(run.unconsumed_outcomes) | set(run.unfinished_request_ids)
            assert set(fake.jobs) == found
            assert ids(run.unconsumed_outcomes) == ids(client.take_unconsumed_outcomes())
            paid += len(fake.jobs)
            reachable += len(found)
    assert paid == reachable > ITERATIONS


@pytest.mark.parametrize("ordered", [False, True])
async def test_cancelling_the_consumer_at_random_moments_keeps_every_paid_id(
    fake: FakeGateway, ordered: bool
) -> None:
    """A plain `async for` (no run in hand): what was not taken is on the client."""
    rng = random.Random(11 + ordered)
    for _ in range(ITERATIONS):
        fake.jobs.clear()
        async with new_client() as client:
            taken: list[Outcome] = []

            async def consume(
                client: AsyncRealESRGAN = client, taken: list[Outcome] = taken
            ) -> None:
                async for outcome in client.upscale_many(
                    urls(100), max_in_flight=16, ordered=ordered
                ):
                    taken.append(outcome)
                    await anyio.sleep(rng.uniform(0, 0.005))

            with anyio.move_on_after(rng.uniform(0.005, 0.08)):
                await consume()
            await anyio.sleep(0.02)  # any POST still on the wire returns
            found = (
                ids(taken)
                | ids(client.take_unconsumed_outcomes())
                | set(client.unfinished_request_ids)
            )
            assert set(fake.jobs) == found
            assert len(taken) == len({o.index for o in taken})


async def test_closing_the_client_ends_waits_upscales_and_runs_at_once_with_their_ids(
    fake: FakeGateway,
) -> None:
    client = new_client()
    errors: dict[str, BaseException] = {}
    async with client:
        stuck = await client.submit("https://img.test/stuck/0.png")

        async def record(name: str, coro_fn: object) -> None:
            try:
                await coro_fn()  # type: ignore[operator]
            except BaseException as exc:
                errors[name] = exc

        async def run_many() -> None:
            async for _ in client.upscale_many(urls(5, "stuck"), max_in_flight=5):
                pass

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(record, "wait", lambda: client.wait(stuck))
                tg.start_soon(record, "wait-timeout", lambda: client.wait(stuck, timeout=30))
                tg.start_soon(
                    record, "upscale", lambda: client.upscale("https://img.test/stuck/1.png")
                )
                tg.start_soon(record, "run", run_many)
                while len(fake.jobs) < 7:  # noqa: ASYNC110 - the fake has no event to wait on
                    await anyio.sleep(0.001)
                await anyio.sleep(0.01)  # every wait has started
                await client.aclose()
    assert {"wait", "wait-timeout", "upscale", "run"} == set(errors)
    for error in errors.values():
        assert isinstance(error, JobsUnfinishedError), repr(error)
    assert (stuck.request_id,) == errors["wait"].request_ids  # type: ignore[attr-defined]
    assert len(errors["run"].request_ids) == 5  # type: ignore[attr-defined]
    assert set(fake.jobs) == set(client.unfinished_request_ids)


async def test_aclose_from_another_task_stops_an_active_run_cleanly(fake: FakeGateway) -> None:
    """An app's shutdown task closes the client while a handler iterates a run."""
    outcomes: list[Outcome] = []
    error: list[BaseException] = []
    client = new_client()

    async def handler(run: UpscaleRun) -> None:
        try:
            async for outcome in run:
                outcomes.append(outcome)
        except JobsUnfinishedError as exc:
            error.append(exc)

    async def shutdown() -> None:
        while len(fake.jobs) < 4:  # noqa: ASYNC110
            await anyio.sleep(0.001)
        await client.aclose()

    with anyio.fail_after(5):
        async with client, anyio.create_task_group() as tg:
            run = client.upscale_many(urls(8, "stuck"), max_in_flight=4)
            tg.start_soon(handler, run)
            tg.start_soon(shutdown)
    [closed] = error
    assert isinstance(closed, JobsUnfinishedError)
    assert set(fake.jobs) == set(closed.request_ids) == set(run.unfinished_request_ids)
    with pytest.raises(RuntimeError, match="closed"):
        await client.wait("real-esrgan_00000000")


async def test_a_run_left_with_break_releases_its_journal_for_an_immediate_rerun(
    fake: FakeGateway, tmp_path: anyio.Path
) -> None:
    path = tmp_path / "batch.journal"
    async with new_client() as client:
        for _ in range(3):
            async for _outcome in client.upscale_many(urls(10), journal=path):
                break
        outcomes = [o async for o in client.upscale_many(urls(10), journal=path)]
    assert list(range(10)) == sorted(o.index for o in outcomes)
    assert 10 == len(fake.jobs)  # nothing paid twice across the four runs
