"""The ledger: what a client paid for, counted once, with plain values."""

from __future__ import annotations

from real_esrgan_async import JobState, Outcome, Stats, Status
from real_esrgan_async._ledger import Ledger


def state(request_id: str, status: Status) -> JobState:
    return JobState(request_id=request_id, status=status)


def test_each_job_is_counted_once_and_leaves_the_unfinished_ids_when_seen_finished() -> None:
    seen: list[Stats] = []
    ledger = Ledger(on_progress=seen.append)
    ledger.record_submitted("a", webhook=True)
    ledger.record_submitted("b", webhook=False)
    assert (("a", "b"), True, False) == (
        ledger.unfinished_request_ids,
        ledger.reports_by_webhook("a"),
        ledger.reports_by_webhook("b"),
    )
    assert ledger.record_terminal(state("a", Status.COMPLETED)) is True
    assert ledger.record_terminal(state("a", Status.COMPLETED)) is False  # a duplicate
    assert ledger.record_terminal(state("x", Status.FAILED)) is False  # not ours
    assert ledger.record_terminal(state("b", Status.ERROR)) is True
    stats = ledger.stats()
    assert (2, 1, 0, 1, 0) == (
        stats.submitted, stats.completed, stats.failed, stats.errored, stats.in_flight
    )  # fmt: skip
    assert 4 == len(seen)  # two submissions, two finishes
    assert not ledger.reports_by_webhook("a")


def test_an_adopted_job_is_unfinished_until_seen_finished_and_never_counted_as_submitted() -> None:
    ledger = Ledger()
    ledger.adopt("earlier")
    ledger.adopt("earlier")
    assert (("earlier",), 0) == (ledger.unfinished_request_ids, ledger.stats().submitted)
    ledger.record_terminal(state("earlier", Status.COMPLETED))
    assert ((), 1) == (ledger.unfinished_request_ids, ledger.stats().completed)


def test_parked_outcomes_are_returned_once() -> None:
    ledger = Ledger()
    outcomes = [Outcome(0, None, request_id="a"), Outcome(1, None, request_id="b")]
    ledger.park(outcomes[:1])
    ledger.park(outcomes[1:])
    assert tuple(outcomes) == ledger.take_parked()
    assert () == ledger.take_parked()
