"""Jobs that end ERROR (not charged) are resubmitted within a policy; FAILED never is.

The rule (`resubmit_delay`), the journal's `plan` and the run book's holds are
tested with plain numbers; the shells against the fake gateway and the emulator.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_gateway import BASE, FAST_POLL, FAST_RETRY, FakeGateway
from hypothesis import given
from hypothesis import strategies as st

from real_esrgan_async import (
    AsyncRealESRGAN,
    InsufficientBalanceError,
    InvalidRequestError,
    JobFailedError,
    JobSystemError,
    JournalEntry,
    JournalState,
    Outcome,
    PollPolicy,
    RealESRGAN,
    ResubmitPolicy,
    SQLiteJournal,
    Status,
    UpscaleRequest,
)
from real_esrgan_async._journal import Resume, plan
from real_esrgan_async._resubmit import as_policy, resubmit_delay
from real_esrgan_async._runbook import Ending, Phase, RunBook
from real_esrgan_async.testing import EmulatorConfig, running_emulator

NO_WAIT = ResubmitPolicy(backoff=0.0, max_backoff=0.0)
EMULATOR_POLL = PollPolicy(initial_delay=0.01, min_interval=0.005, max_interval=0.05)
CAT = UpscaleRequest("https://img.test/cat.png")

# The rule ---------------------------------------------------------------------------


def test_an_error_job_is_resubmitted_after_a_growing_capped_backoff() -> None:
    policy = ResubmitPolicy(max_resubmits=4, backoff=1.0, backoff_factor=3.0, max_backoff=5.0)
    delays = [resubmit_delay(policy, Status.ERROR, n) for n in range(5)]
    assert [1.0, 3.0, 5.0, 5.0, None] == delays


def test_failed_and_completed_jobs_are_never_resubmitted() -> None:
    policy = ResubmitPolicy(max_resubmits=5)
    assert [None, None, None, None] == [
        resubmit_delay(policy, status, 0)
        for status in (Status.FAILED, Status.COMPLETED, Status.QUEUED, Status.PROCESSING)
    ]


def test_the_default_policy_resubmits_twice_and_off_never() -> None:
    default = ResubmitPolicy()
    assert [1.0, 2.0, None] == [resubmit_delay(default, Status.ERROR, n) for n in range(3)]
    assert None is resubmit_delay(ResubmitPolicy.off(), Status.ERROR, 0)
    assert (True, False) == (default.enabled, ResubmitPolicy.off().enabled)


@given(
    max_resubmits=st.integers(0, 10),
    backoff=st.floats(0, 100),
    factor=st.floats(1, 10),
    extra=st.floats(0, 100),
    so_far=st.integers(0, 20),
)
def test_the_rule_never_exceeds_the_count_nor_the_cap(
    max_resubmits: int, backoff: float, factor: float, extra: float, so_far: int
) -> None:
    policy = ResubmitPolicy(
        max_resubmits=max_resubmits,
        backoff=backoff,
        backoff_factor=factor,
        max_backoff=backoff + extra,
    )
    delay = resubmit_delay(policy, Status.ERROR, so_far)
    assert (so_far < max_resubmits) == (delay is not None)
    if delay is not None:
        assert backoff <= delay <= policy.max_backoff
        assert delay <= (resubmit_delay(policy, Status.ERROR, so_far + 1) or policy.max_backoff)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_resubmits": -1}, "ResubmitPolicy.max_resubmits must be an int >= 0, got -1"),
        ({"max_resubmits": True}, "ResubmitPolicy.max_resubmits must be an int >= 0, got True"),
        ({"backoff": "1"}, "ResubmitPolicy.backoff must be a finite number >= 0 seconds, got '1'"),
        ({"backoff_factor": 0.5}, "ResubmitPolicy.backoff_factor must be a finite number >= 1"),
        ({"backoff": 40.0}, "ResubmitPolicy.max_backoff must be a finite number >= backoff"),
    ],
)
def test_a_bad_policy_says_what_is_allowed(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        ResubmitPolicy(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)


def test_the_resubmit_option_takes_a_policy_or_a_bool_and_nothing_else() -> None:
    policy = ResubmitPolicy(max_resubmits=7)
    assert (policy, ResubmitPolicy(), ResubmitPolicy.off()) == (
        as_policy("x", policy),
        as_policy("x", True),
        as_policy("x", False),
    )
    with pytest.raises(InvalidRequestError, match=r"x\.resubmit must be True, False or a Resubmit"):
        as_policy("x", 1)
    with pytest.raises(InvalidRequestError, match=r"AsyncRealESRGAN\.resubmit must be True"):
        AsyncRealESRGAN("key", resubmit="yes")  # type: ignore[arg-type]


# The journal's plan -----------------------------------------------------------------


def entry(state: JournalState) -> JournalEntry:
    return JournalEntry(0, CAT, state, request_id="old")


def test_a_rerun_resubmits_error_entries_only_when_resubmitting_is_on() -> None:
    assert [Resume.SUBMIT, Resume.REPLAY, Resume.REPLAY, Resume.REPLAY] == [
        plan(entry(JournalState.ERROR), CAT, resubmit_ambiguous=False, resubmit_errors=True),
        plan(entry(JournalState.ERROR), CAT, resubmit_ambiguous=False, resubmit_errors=False),
        plan(entry(JournalState.FAILED), CAT, resubmit_ambiguous=False, resubmit_errors=True),
        plan(entry(JournalState.COMPLETED), CAT, resubmit_ambiguous=False, resubmit_errors=True),
    ]


# The run book ------------------------------------------------------------------------


def error_outcome(index: int, request_id: str) -> Outcome:
    return Outcome(index, None, error=JobSystemError(request_id, Status.ERROR, "OOM"))


def test_a_held_input_keeps_its_slot_until_its_new_job_finishes() -> None:
    book = RunBook(max_in_flight=1, ordered=False)
    book.take()
    book.submitted(0, "a")
    book.input_exhausted()
    assert book.hold_for_resubmit("a", error_outcome(0, "a"))
    assert (False, Phase.DRAINING, None) == (book.may_pull(), book.phase, book.next_outcome())
    assert book.may_resubmit(0)
    assert book.resubmitted(0, "b")
    assert {"b": 0} == book.pending
    book.finished("b", Outcome(0, None, request_id="b"))
    assert ("b", Phase.ENDED) == (book.next_outcome().request_id, book.phase)  # type: ignore[union-attr]


def test_a_stop_during_the_backoff_leaves_the_error_outcome_unconsumed() -> None:
    book = RunBook(max_in_flight=2, ordered=False)
    book.take()
    book.submitted(0, "a")
    fallback = error_outcome(0, "a")
    book.hold_for_resubmit("a", fallback)
    assert [] == book.stop()
    assert ((fallback,), False) == (book.unconsumed(), book.may_resubmit(0))


def test_a_resubmission_that_returns_after_a_stop_is_abandoned_not_lost() -> None:
    book = RunBook(max_in_flight=2, ordered=False)
    book.take()
    book.submitted(0, "a")
    book.hold_for_resubmit("a", error_outcome(0, "a"))
    assert book.may_resubmit(0)  # its POST goes on the wire...
    book.stop()  # ...the consumer leaves...
    assert not book.resubmitted(0, "b")  # ...and the paid id comes back: kept
    assert (["b"], 1) == (book.abandoned, len(book.unconsumed()))


def test_a_402_cancels_the_resubmissions_not_yet_sent() -> None:
    book = RunBook(max_in_flight=2, ordered=False)
    book.take()
    book.submitted(0, "a")
    fallback = error_outcome(0, "a")
    book.hold_for_resubmit("a", fallback)
    book.fail(Ending.WALLET_EMPTY, InsufficientBalanceError(402))
    assert not book.may_resubmit(0)
    assert fallback is book.next_outcome()


def test_nothing_is_held_once_the_run_stopped_or_a_fatal_error_came() -> None:
    book = RunBook(max_in_flight=2, ordered=False)
    book.take()
    book.submitted(0, "a")
    book.fail(Ending.FATAL, RuntimeError("key refused"))
    assert not book.hold_for_resubmit("a", error_outcome(0, "a"))


# The shells: upscale and the fan-out on the fake gateway ---------------------------------


@pytest.mark.anyio
async def test_upscale_resubmits_an_error_job_and_gives_up_after_the_policy(
    fake: FakeGateway,
) -> None:
    async with AsyncRealESRGAN(
        "key", base_url=BASE, retry=FAST_RETRY, poll=FAST_POLL, resubmit=NO_WAIT
    ) as client:
        with pytest.raises(JobSystemError):
            await client.upscale("https://img.test/error/1.png")
        stats = client.stats()
    posts = fake.posts_per_image["https://img.test/error/1.png"]
    assert (3, 2, 3) == (posts, stats.resubmitted, stats.errored)


@pytest.mark.anyio
async def test_upscale_never_resubmits_a_failed_job(fake: FakeGateway) -> None:
    async with AsyncRealESRGAN(
        "key", base_url=BASE, retry=FAST_RETRY, poll=FAST_POLL, resubmit=NO_WAIT
    ) as client:
        with pytest.raises(JobFailedError):
            await client.upscale("https://img.test/fail/1.png")
        assert 0 == client.stats().resubmitted
    assert 1 == fake.posts_per_image["https://img.test/fail/1.png"]


@pytest.mark.anyio
async def test_the_fan_out_keeps_the_earlier_ids_of_a_resubmitted_input(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    images = ["https://img.test/error/0.png", "https://img.test/fail/1.png"]
    outcomes = {
        o.index: o async for o in client.upscale_many(images, resubmit=NO_WAIT, ordered=True)
    }
    error, failed = outcomes[0], outcomes[1]
    assert isinstance(error.error, JobSystemError)
    assert 2 == len(error.earlier_request_ids)
    assert error.request_id not in error.earlier_request_ids
    assert ((), 1) == (failed.earlier_request_ids, fake.posts_per_image[images[1]])
    assert 2 == client.stats().resubmitted


# End to end: the emulator at its default 1.5% error rate -------------------------------


@pytest.mark.anyio
@pytest.mark.timeout(180)  # 500 jobs over loopback HTTP on a shared machine
async def test_500_emulator_jobs_end_with_no_error_under_the_default_policy() -> None:
    config = EmulatorConfig(time_scale=0.001, seed=11, fetch_inputs=False)
    with running_emulator(config) as emulator:
        images = [f"{emulator.base_url}/samples/cat.png?n={n}" for n in range(500)]
        async with AsyncRealESRGAN(
            emulator.api_key, base_url=emulator.base_url, poll=EMULATOR_POLL
        ) as client:
            outcomes = [o async for o in client.upscale_many(images, max_in_flight=200)]
            stats = client.stats()
    resubmitted = sum(len(o.earlier_request_ids) for o in outcomes)
    assert (500, 0) == (len(outcomes), sum(not o.ok for o in outcomes))
    assert resubmitted == stats.resubmitted
    assert stats.resubmitted >= 1  # seed 11 draws some ERRORs: each was resubmitted
    assert stats.errored == stats.resubmitted  # every ERROR job was replaced


@pytest.mark.anyio
async def test_a_journal_rerun_resubmits_exactly_the_error_entries(tmp_path: Path) -> None:
    config = EmulatorConfig(time_scale=0.001, seed=5, fetch_inputs=False, error_rate=0.1)
    journal = tmp_path / "batch.journal"
    with running_emulator(config) as emulator:
        images = [f"{emulator.base_url}/samples/cat.png?n={n}" for n in range(60)]

        def new_client() -> AsyncRealESRGAN:
            return AsyncRealESRGAN(emulator.api_key, base_url=emulator.base_url, poll=EMULATOR_POLL)

        async with new_client() as client:
            first = {
                o.index: o
                async for o in client.upscale_many(images, journal=journal, resubmit=False)
            }
        errored = {i: o.request_id for i, o in first.items() if isinstance(o.error, JobSystemError)}
        assert errored  # seed 5 at 10%: some jobs ended ERROR and were not resubmitted
        with SQLiteJournal(journal) as opened:
            assert len(errored) == opened.counts()["error"]

        async with new_client() as client:
            rerun = {
                o.index: o
                async for o in client.upscale_many(images, journal=journal, resubmit=NO_WAIT)
            }
            stats = client.stats()
    resubmitted = {i: o.earlier_request_ids[0] for i, o in rerun.items() if o.earlier_request_ids}
    assert errored == resubmitted
    assert stats.submitted == stats.resubmitted  # the rerun POSTed resubmissions only
    assert len(errored) <= stats.resubmitted  # (a resubmission may end ERROR and go again)
    assert set(range(60)) - set(errored) == {i for i, o in rerun.items() if o.resumed}


@given(st.data())
def test_with_resubmissions_and_a_stop_anywhere_no_input_or_paid_id_is_lost(
    data: st.DataObject,
) -> None:
    """Random interleavings: each input gets one outcome or stays owed; each paid id is kept."""
    book = RunBook(max_in_flight=4, ordered=data.draw(st.booleans()))
    inputs = data.draw(st.integers(1, 6))
    paid: dict[str, int] = {}  # request_id -> its input
    held: set[str] = set()  # ids that ended ERROR and were held for a resubmission
    posting: dict[int, int] = {}  # index -> POSTs on the wire for it
    handed: list[Outcome] = []
    counter = 0
    stopped = False
    for _ in range(60):
        moves = ["take"] if book.may_pull() and book.taken < inputs else []
        moves += ["post"] * bool(posting) + ["finish"] * bool(book.pending)
        moves += ["hand", "stop"] if not stopped else []
        if not moves:
            break
        move = data.draw(st.sampled_from(moves))
        if move == "take":
            posting[book.take()] = 1
        elif move == "post":  # a POST returns: a new paid id
            index = data.draw(st.sampled_from(sorted(posting)))
            del posting[index]
            counter += 1
            rid = f"r{counter}"
            paid[rid] = index
            if index in book.resubmitting:
                book.resubmitted(index, rid)
            else:
                book.submitted(index, rid)
        elif move == "finish":
            rid = data.draw(st.sampled_from(sorted(book.pending)))
            index = book.pending[rid]
            if data.draw(st.booleans()) and book.hold_for_resubmit(rid, error_outcome(index, rid)):
                held.add(rid)
                if book.may_resubmit(index):
                    posting[index] = 1
            else:
                book.finished(rid, Outcome(index, None, request_id=rid))
        elif move == "hand":
            outcome = book.next_outcome()
            if outcome is not None:
                handed.append(outcome)
        else:
            book.stop()
            stopped = True
    given_back = [*handed, *book.unconsumed()]
    indices = [o.index for o in given_back]
    assert sorted(set(indices)) == sorted(indices)  # never two outcomes for one input
    if stopped:  # a stop hands held inputs their ERROR outcome: nothing waits any more
        assert {} == book.resubmitting
    abandoned = {paid[rid] for rid in book.abandoned}
    owed = set(book.pending.values()) | set(posting) | set(book.resubmitting) | abandoned
    assert set(range(book.taken)) == set(indices) | owed
    error_ids = {o.error.request_id for o in given_back if isinstance(o.error, JobSystemError)}
    kept = {o.request_id for o in given_back} | error_ids | set(book.pending) | set(book.abandoned)
    # Every paid id reaches the caller, but a job that ended ERROR (not charged) and was replaced.
    assert set() == set(paid) - kept - held


@pytest.mark.timeout(120)
def test_the_sync_client_resubmits_as_the_async_one_does() -> None:
    config = EmulatorConfig(time_scale=0.001, seed=8, fetch_inputs=False, error_rate=1.0)
    events: list[str] = []
    with (
        running_emulator(config) as emulator,
        RealESRGAN(
            emulator.api_key,
            base_url=emulator.base_url,
            poll=EMULATOR_POLL,
            resubmit=ResubmitPolicy(max_resubmits=1, backoff=0.0, max_backoff=0.0),
            on_event=lambda event: events.append(event.kind.value),
        ) as client,
    ):
        with pytest.raises(JobSystemError):
            client.upscale(emulator.sample_url("tiny.png"))
        stats = client.stats()
    assert (2, 1, 2) == (stats.submitted, stats.resubmitted, stats.errored)
    assert ["submitted", "finished", "resubmitted", "submitted", "finished"] == [
        kind for kind in events if kind != "status"
    ]
