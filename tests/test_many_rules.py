"""The pure rules behind `upscale_many`'s keys and local inputs, with plain values.

Keys in a run (`RunBook.lead_key`), where the store outranks the journal
(`plan(..., keyed=True)`), the store failing (`Ending.STORE_FAILED`), and the
content name a local input is journaled under (`identity`).
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from real_esrgan_async import (
    IdempotencyKeyMismatchError,
    InvalidRequestError,
    JobState,
    JournalEntry,
    JournalMismatchError,
    JournalState,
    Outcome,
    Status,
    StoreError,
    UpscaleRequest,
)
from real_esrgan_async._journal import Resume, plan
from real_esrgan_async._keys import check_key
from real_esrgan_async._local_images import identity
from real_esrgan_async._runbook import Ending, RunBook

A = UpscaleRequest("https://img.test/a.png", scale=2)
B = UpscaleRequest("https://img.test/b.png", scale=2)


def done(index: int, request: UpscaleRequest, request_id: str) -> Outcome:
    state = JobState(request_id, Status.COMPLETED, media_urls=("https://out.test/x.png",))
    return Outcome(index, request, result=state, request_id=request_id)


def drain(book: RunBook) -> list[Outcome]:
    handed = []
    while (outcome := book.next_outcome()) is not None:
        handed.append(outcome)
    return handed


def test_the_first_input_with_a_key_leads_it_and_later_ones_get_a_copy_of_its_outcome() -> None:
    book = RunBook(max_in_flight=8, ordered=False)
    for _ in range(3):
        book.take()
    assert book.lead_key("k", 0, A)
    assert not book.lead_key("k", 2, A)
    assert [] == drain(book)  # the follower waits for its leader
    book.submitted(0, "job-1")
    book.finished("job-1", done(0, A, "job-1"))
    handed = drain(book)
    assert [(0, "job-1"), (2, "job-1")] == [(o.index, o.request_id) for o in handed]
    assert 2 == book.emitted


def test_a_follower_with_another_request_is_a_mismatch_at_once() -> None:
    book = RunBook(max_in_flight=8, ordered=False)
    book.take()
    book.take()
    assert book.lead_key("k", 0, A)
    assert not book.lead_key("k", 1, B)
    [outcome] = drain(book)
    assert (1, IdempotencyKeyMismatchError) == (outcome.index, type(outcome.error))


def test_a_key_is_forgotten_once_its_leader_has_an_outcome() -> None:
    """The book stays as small as the inputs in flight: a later duplicate asks the store."""
    book = RunBook(max_in_flight=8, ordered=False)
    book.take()
    assert book.lead_key("k", 0, A)
    book.emit(done(0, A, "job-1"))
    book.take()
    assert book.lead_key("k", 1, A)


@given(st.lists(st.sampled_from("abc"), min_size=1, max_size=30))
def test_every_input_gets_exactly_one_outcome_however_keys_repeat(keys: list[str]) -> None:
    book = RunBook(max_in_flight=len(keys), ordered=True)
    leading: dict[int, str] = {}
    for index, key in enumerate(keys):
        book.take()
        if book.lead_key(key, index, A):
            leading[index] = key
            book.submitted(index, f"job-{index}")
    book.input_exhausted()
    for index in leading:
        book.finished(f"job-{index}", done(index, A, f"job-{index}"))
    handed = drain(book)
    assert list(range(len(keys))) == [o.index for o in handed]
    assert len(leading) == len({o.request_id for o in handed})
    assert book.over


def test_a_failed_store_refuses_further_submits_but_awaits_paid_jobs() -> None:
    book = RunBook(max_in_flight=8, ordered=False)
    book.take()
    book.submitted(0, "job-1")
    error = StoreError("the store went away")
    assert [] == book.fail(Ending.STORE_FAILED, error)  # job-1 is still awaited
    assert (False, error) == (book.may_pull(), book.submit_refusal())
    assert Ending.WALLET_EMPTY < Ending.STORE_FAILED  # a 402 is reported first


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (JournalState.SUBMITTED, Resume.WATCH),
        (JournalState.AMBIGUOUS, Resume.SUBMIT),  # the store decides: never a second payment
        (JournalState.PENDING, Resume.SUBMIT),
        (JournalState.COMPLETED, Resume.REPLAY),
        (JournalState.FAILED, Resume.REPLAY),
        (JournalState.ERROR, Resume.REPLAY),  # one key names one job
    ],
)
def test_with_a_key_the_store_decides_where_the_journal_is_unsure(
    state: JournalState, expected: Resume
) -> None:
    entry = JournalEntry(0, A, state, request_id="job-1")
    assert expected == plan(entry, A, resubmit_ambiguous=False, resubmit_errors=True, keyed=True)


def test_with_a_key_another_request_at_the_index_is_still_a_mismatch() -> None:
    entry = JournalEntry(0, A, JournalState.COMPLETED, request_id="job-1")
    with pytest.raises(JournalMismatchError):
        plan(entry, B, resubmit_ambiguous=False, keyed=True)


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_a_local_input_is_named_by_its_content_and_the_name_is_a_valid_request(
    a: bytes, b: bytes
) -> None:
    name_a = identity(hashlib.sha256(a).hexdigest())
    name_b = identity(hashlib.sha256(b).hexdigest())
    assert (a == b) == (name_a == name_b)
    assert name_a == UpscaleRequest(name_a).image  # it passes the request's own checks
    assert name_a.startswith("https://local.invalid/sha256/")  # .invalid never resolves


@pytest.mark.parametrize("key", ["", "k" * 513, 7, None])
def test_a_key_must_be_a_short_non_empty_str(key: object) -> None:
    with pytest.raises(InvalidRequestError, match="non-empty str of at most 512"):
        check_key(key)
