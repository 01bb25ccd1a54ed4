"""`upscale_many(journal=...)`: a rerun resumes, never pays twice, and says what it skipped."""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from fake_gateway import BASE, FAST_POLL, FAST_RETRY, FakeGateway

from real_esrgan_async import (
    AmbiguousSubmitError,
    AsyncRealESRGAN,
    InsufficientBalanceError,
    InvalidRequestError,
    JobFailedError,
    JournalLockedError,
    JournalMismatchError,
    JournalState,
    Outcome,
    SQLiteJournal,
    Stats,
    UpscaleRun,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "batch.journal"


def url(kind: str, n: int) -> str:
    return f"https://img.test/{kind}/{n}.png"


async def collect(run: UpscaleRun) -> list[Outcome]:
    async with run:
        return sorted([outcome async for outcome in run], key=lambda o: o.index)


async def stop_when(run: UpscaleRun, done: Callable[[list[Outcome]], bool]) -> list[Outcome]:
    """Consume `run` until `done(outcomes so far)`, then stop it as a Ctrl+C would."""
    outcomes: list[Outcome] = []

    async def consume() -> None:
        async with run:
            async for outcome in run:
                outcomes.append(outcome)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        with anyio.fail_after(10):
            while not done(outcomes):  # noqa: ASYNC110 - a condition on fakes, no event
                await anyio.sleep(0.002)
        tg.cancel_scope.cancel()
    return outcomes


def finish_stuck_jobs(fake: FakeGateway) -> None:
    """The jobs left running by a killed run finish at the provider meanwhile."""
    for job in fake.jobs.values():
        if job["kind"] == "stuck":
            job["kind"] = "ok"


async def test_a_rerun_polls_jobs_in_flight_and_replays_finished_ones(
    fake: FakeGateway, client: AsyncRealESRGAN, journal_path: Path
) -> None:
    """Exactly one outcome per input per run, and exactly one POST per input overall."""
    images = [url("ok", n) for n in range(4)] + [url("stuck", n) for n in range(4, 10)]
    # The crawler is stopped with six jobs in flight.
    first = await stop_when(
        client.upscale_many(images, journal=journal_path),
        lambda outcomes: len(outcomes) == 4 and len(fake.jobs) == 10,
    )
    assert [0, 1, 2, 3] == sorted(o.index for o in first)
    finish_stuck_jobs(fake)

    second = await collect(client.upscale_many(images, journal=journal_path))

    assert list(range(10)) == [o.index for o in second]
    assert all(o.ok and o.resumed for o in second)
    assert {o.index: o.request_id for o in first} == {
        o.index: o.request_id for o in second if o.index < 4
    }
    assert {1} == set(fake.posts_per_image.values())
    assert 10 == len(fake.jobs)
    with SQLiteJournal(journal_path) as journal:
        assert 10 == journal.counts()["completed"]


async def test_outputs_marked_saved_come_back_with_where_they_are(
    fake: FakeGateway, client: AsyncRealESRGAN, journal_path: Path
) -> None:
    images = [url("ok", n) for n in range(6)]
    async with client.upscale_many(images, journal=journal_path) as run:
        async for outcome in run:
            if outcome.index % 2 == 0:
                run.mark_saved(outcome, f"out/{outcome.index}.png")
    again = await collect(client.upscale_many(images, journal=journal_path))
    assert ["out/0.png", None, "out/2.png", None, "out/4.png", None] == [o.saved_to for o in again]
    assert all(o.ok and o.result is not None and o.result.media_url for o in again)
    assert {1} == set(fake.posts_per_image.values())


async def test_failed_jobs_are_replayed_not_resubmitted(
    fake: FakeGateway, client: AsyncRealESRGAN, journal_path: Path
) -> None:
    images = [url("fail", 0), url("ok", 1)]
    await collect(client.upscale_many(images, journal=journal_path))
    again = await collect(client.upscale_many(images, journal=journal_path))
    assert isinstance(again[0].error, JobFailedError)
    assert again[0].request_id == again[0].error.request_id
    assert {1} == set(fake.posts_per_image.values())


async def test_ambiguous_submits_are_reported_and_resubmitted_only_when_asked(
    fake: FakeGateway, client: AsyncRealESRGAN, journal_path: Path
) -> None:
    images = [url("ambiguous", 0), url("ok", 1)]
    first = await collect(client.upscale_many(images, journal=journal_path))
    assert isinstance(first[0].error, AmbiguousSubmitError)

    second = await collect(client.upscale_many(images, journal=journal_path))
    assert isinstance(second[0].error, AmbiguousSubmitError)
    assert "recorded in the journal: ReadTimeout: answer lost" in str(second[0].error)
    assert (True, True) == (second[0].resumed, second[1].resumed)
    assert 1 == fake.posts_per_image[url("ambiguous", 0)]

    for job in fake.jobs.values():
        job["kind"] = "ok"  # the dashboard shows no job came of it; the user resubmits
    fake_kind_ok = url("ambiguous", 0)
    third = await collect(
        client.upscale_many(images, journal=journal_path, resubmit_ambiguous=True)
    )
    assert 2 == fake.posts_per_image[fake_kind_ok]
    assert isinstance(third[0].error, AmbiguousSubmitError)  # the fake loses that answer again
    assert 1 == fake.posts_per_image[url("ok", 1)]


async def test_a_resolved_ambiguous_input_is_polled_under_the_id_given(
    fake: FakeGateway, client: AsyncRealESRGAN, journal_path: Path
) -> None:
    images = [url("ambiguous", 0)]
    await collect(client.upscale_many(images, journal=journal_path))
    [request_id] = fake.jobs  # found on the provider's dashboard
    fake.jobs[request_id]["kind"] = "ok"
    with SQLiteJournal(journal_path) as journal:
        journal.resolve_ambiguous(0, request_id)
    [outcome] = await collect(client.upscale_many(images, journal=journal_path))
    assert (True, request_id) == (outcome.ok, outcome.request_id)
    assert 1 == fake.posts_per_image[url("ambiguous", 0)]


async def test_inputs_of_another_batch_are_refused_before_anything_is_paid(
    fake: FakeGateway, client: AsyncRealESRGAN, journal_path: Path
) -> None:
    await collect(client.upscale_many([url("ok", n) for n in range(3)], journal=journal_path))
    other = [url("ok", n) for n in range(100, 120)]
    with pytest.raises(JournalMismatchError, match=r"input 0 is 'https://img\.test/ok/100\.png'"):
        await collect(client.upscale_many(other, journal=journal_path))
    assert 3 == sum(fake.posts_per_image.values())


async def test_a_batch_that_changes_midway_stops_at_the_first_difference(
    fake: FakeGateway, client: AsyncRealESRGAN, journal_path: Path
) -> None:
    await collect(client.upscale_many([url("ok", n) for n in range(3)], journal=journal_path))
    changed = [url("ok", 0), url("ok", 1), url("ok", 99)] + [url("ok", n) for n in range(3, 20)]
    outcomes: list[Outcome] = []
    with pytest.raises(JournalMismatchError) as info:
        async for outcome in client.upscale_many(changed, journal=journal_path):
            outcomes.append(outcome)
    assert 2 == info.value.index
    assert 3 == sum(fake.posts_per_image.values())  # nothing after the difference was paid


async def test_two_runs_on_one_journal_refuse_the_second(
    fake: FakeGateway, client: AsyncRealESRGAN, journal_path: Path
) -> None:
    images = [url("stuck", n) for n in range(3)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(collect, client.upscale_many(images, journal=journal_path))
        with anyio.fail_after(10):
            while len(fake.jobs) < 3:  # noqa: ASYNC110 - then the first run holds the journal
                await anyio.sleep(0.002)
        with pytest.raises(JournalLockedError, match=r"batch\.journal is in use by process"):
            await collect(client.upscale_many(images, journal=journal_path))
        tg.cancel_scope.cancel()
    assert 3 == sum(fake.posts_per_image.values())


async def test_a_refused_submit_is_submitted_again_by_the_rerun(
    fake: FakeGateway, client: AsyncRealESRGAN, journal_path: Path
) -> None:
    """402 created no job: the input is not ambiguous, it is simply not submitted yet."""
    fake.balance = 2
    images = [url("ok", n) for n in range(5)]
    with pytest.raises(InsufficientBalanceError):
        await collect(client.upscale_many(images, journal=journal_path, max_in_flight=1))
    fake.balance = None  # topped up
    again = await collect(client.upscale_many(images, journal=journal_path))
    assert [True] * 5 == [o.ok for o in again]
    assert [True, True, False, False, False] == [o.resumed for o in again]
    assert 5 == len(fake.jobs)


async def test_stopping_before_the_post_leaves_nothing_ambiguous(
    fake: FakeGateway, journal_path: Path
) -> None:
    """Inputs waiting for a connection when the run stops were not sent: not ambiguous."""
    with anyio.CancelScope() as scope:

        def stop_after_three(stats: Stats) -> None:
            if stats.submitted == 3:
                scope.cancel()  # a Ctrl-C, with 17 submits waiting for the one connection

        async with AsyncRealESRGAN(
            "key",
            base_url=BASE,
            retry=FAST_RETRY,
            poll=FAST_POLL,
            max_connections=1,
            on_progress=stop_after_three,
        ) as client:
            images = [url("stuck", n) for n in range(50)]
            await collect(client.upscale_many(images, journal=journal_path, max_in_flight=20))
    with SQLiteJournal(journal_path) as journal:
        counts = journal.counts()
    assert 0 == counts["ambiguous"] + counts["pending"]
    assert len(fake.jobs) == counts["submitted"]
    assert 3 <= len(fake.jobs) < 20


async def test_a_journal_object_is_used_and_left_open(
    fake: FakeGateway, client: AsyncRealESRGAN, journal_path: Path
) -> None:
    async with SQLiteJournal(journal_path) as journal:
        run = client.upscale_many([url("ok", 0)], journal=journal)
        outcomes = await collect(run)
        assert journal is run.journal
        journal.mark_saved(outcomes[0].index, "later.png")  # still open: the caller owns it
        entry = journal.get(0)
        assert entry is not None
        assert (JournalState.COMPLETED, "later.png") == (entry.state, entry.saved_to)


async def test_rejected_inputs_are_not_journaled_and_cost_nothing(
    fake: FakeGateway, client: AsyncRealESRGAN, journal_path: Path
) -> None:
    images = ["ftp://nope/x.png", url("ok", 1)]
    for _ in range(2):
        outcomes = await collect(client.upscale_many(images, journal=journal_path))
        assert isinstance(outcomes[0].error, InvalidRequestError)
    with SQLiteJournal(journal_path) as journal:
        assert [1] == [e.index for e in journal.entries()]


async def test_resumed_jobs_count_against_max_in_flight(
    fake: FakeGateway, client: AsyncRealESRGAN, journal_path: Path
) -> None:
    images = [url("stuck", n) for n in range(12)]
    await stop_when(
        client.upscale_many(images, journal=journal_path, max_in_flight=12),
        lambda _: 12 == len(fake.jobs),
    )
    run = client.upscale_many(images, journal=journal_path, max_in_flight=4)
    watched = await stop_when(run, lambda _: 4 <= len(run.unfinished_request_ids))
    assert [] == watched
    await anyio.sleep(0.05)
    assert 4 == len(run.unfinished_request_ids)  # and no more were taken
    assert 12 == sum(fake.posts_per_image.values())


async def test_bad_journal_arguments_are_refused(client: AsyncRealESRGAN) -> None:
    with pytest.raises(InvalidRequestError, match="journal must be a path or a Journal, got int"):
        client.upscale_many([], journal=42)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="resubmit_ambiguous must be a bool"):
        client.upscale_many([], resubmit_ambiguous="yes")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="this run has no journal"):
        client.upscale_many([]).mark_saved(0, "x.png")


async def test_without_a_journal_nothing_changes(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    outcomes = await collect(client.upscale_many([url("ok", n) for n in range(5)]))
    assert [False] * 5 == [o.resumed for o in outcomes]
    assert collections.Counter({1: 5}) == collections.Counter(fake.posts_per_image.values())
