"""The fan-out's run book, with plain numbers: slots, phases, precedence, what a stop leaves."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from real_esrgan_async import InsufficientBalanceError, Outcome
from real_esrgan_async._runbook import Ending, Phase, RunBook


def outcome(index: int, request_id: str | None = None) -> Outcome:
    return Outcome(index, None, request_id=request_id)


def test_pulling_waits_for_a_free_slot_and_taking_an_outcome_frees_one() -> None:
    book = RunBook(max_in_flight=2, ordered=False)
    assert [0, 1] == [book.take(), book.take()]
    assert (False, True) == (book.may_pull(), book.blocked_by_slots())
    book.submitted(0, "a")
    book.finished("a", outcome(0, "a"))
    assert not book.may_pull()  # emitted is not enough: the consumer must take it
    assert 0 == book.next_outcome().index  # type: ignore[union-attr]
    assert book.may_pull()


def test_a_run_ends_once_the_input_is_exhausted_and_every_taken_input_was_emitted() -> None:
    book = RunBook(max_in_flight=4, ordered=False)
    book.take()
    book.submitted(0, "a")
    book.input_exhausted()
    assert (Phase.DRAINING, False) == (book.phase, book.over)
    book.finished("a", outcome(0, "a"))
    assert (Phase.ENDED, False) == (book.phase, book.over)
    book.next_outcome()
    assert (True, None) == (book.over, book.ending_error())


def test_ordered_runs_hand_over_in_index_order() -> None:
    book = RunBook(max_in_flight=3, ordered=True)
    for _ in range(3):
        book.take()
    book.emit(outcome(2))
    book.emit(outcome(1))
    assert book.next_outcome() is None  # 0 is not there yet
    book.emit(outcome(0))
    assert [0, 1, 2] == [book.next_outcome().index for _ in range(3)]  # type: ignore[union-attr]


def test_an_ordered_run_ended_by_a_fatal_error_hands_over_what_it_holds_across_gaps() -> None:
    book = RunBook(max_in_flight=3, ordered=True)
    for index in range(3):
        book.take()
        book.submitted(index, f"id{index}")
    book.finished("id2", outcome(2, "id2"))
    assert ["id0", "id1"] == book.fail(Ending.FATAL, PermissionError("403"))
    assert 2 == book.next_outcome().index  # type: ignore[union-attr]
    assert book.over
    assert {"id0": 0, "id1": 1} == book.pending  # still owed: unfinished, not lost


def test_a_stop_leaves_unconsumed_outcomes_and_pending_ids_listed() -> None:
    book = RunBook(max_in_flight=4, ordered=False)
    for index in range(3):
        book.take()
        book.submitted(index, f"id{index}")
    book.finished("id0", outcome(0, "id0"))
    book.finished("id1", outcome(1, "id1"))
    assert ["id2"] == book.stop()
    assert [] == book.stop()  # idempotent
    assert [0, 1] == [o.index for o in book.unconsumed()]
    assert (None, True) == (book.next_outcome(), book.over)
    assert book.submitted(3, "late") is False  # a POST that returned after the stop
    assert ["late"] == book.abandoned


def test_a_402_refuses_the_inputs_already_taken_but_still_awaits_paid_jobs() -> None:
    book = RunBook(max_in_flight=4, ordered=False)
    book.take()
    book.submitted(0, "paid")
    book.take()
    wallet = InsufficientBalanceError(402)
    assert [] == book.fail(Ending.WALLET_EMPTY, wallet)  # nothing dropped
    assert (False, wallet) == (book.may_pull(), book.submit_refusal())
    book.emit(outcome(1))  # the refused input's outcome
    book.input_exhausted()
    assert Phase.DRAINING == book.phase
    book.finished("paid", outcome(0, "paid"))
    assert Phase.ENDED == book.phase


def test_the_documented_precedence_decides_which_error_ends_the_run() -> None:
    book = RunBook(max_in_flight=1, ordered=False)
    wallet, broken_input = InsufficientBalanceError(402), ValueError("bad iterator")
    closed, refused = RuntimeError("closed"), PermissionError("403")
    book.fail(Ending.WALLET_EMPTY, wallet)
    book.fail(Ending.INPUT_FAILED, broken_input)
    assert broken_input is book.ending_error()
    book.fail(Ending.CLIENT_CLOSED, closed)
    assert closed is book.ending_error()
    book.fail(Ending.FATAL, refused)
    book.fail(Ending.FATAL, ValueError("a later fatal error"))
    assert refused is book.ending_error()  # within one kind, the first


# Properties: random runs driven event by event -----------------------------------------------

EVENTS = st.lists(
    st.sampled_from(["pull", "submit", "finish", "consume", "reject", "wallet", "fatal", "end"]),
    max_size=80,
)


class Driver:
    """Plays events on a book the way the shell would, remembering what it took."""

    def __init__(self, book: RunBook, inputs: int) -> None:
        self.book = book
        self.inputs = inputs
        self.taken: set[int] = set()
        self.unsent: list[int] = []  # taken, not yet submitted
        self.handed: list[int] = []
        self.exhausted = False

    def play(self, events: list[str]) -> None:
        for event in events:
            self.step(event)

    def step(self, event: str) -> None:
        book = self.book
        if event == "pull" and book.may_pull() and not self.exhausted:
            if len(self.taken) == self.inputs:
                self.end()
            else:
                index = book.take()
                self.taken.add(index)
                self.unsent.append(index)
        elif event == "submit" and self.unsent:
            index = self.unsent.pop(0)
            refusal = book.submit_refusal()
            if refusal is not None:
                book.emit(Outcome(index, None, error=refusal))
            else:
                book.submitted(index, f"id{index}")
        elif event == "reject" and self.unsent:
            book.emit(outcome(self.unsent.pop(0)))
        elif event == "finish" and book.pending:
            request_id, index = next(iter(book.pending.items()))
            book.finished(request_id, outcome(index, request_id))
        elif event == "consume":
            handed_over = book.next_outcome()
            if handed_over is not None:
                self.handed.append(handed_over.index)
        elif event == "wallet":
            book.fail(Ending.WALLET_EMPTY, InsufficientBalanceError(402))
        elif event == "fatal":
            book.fail(Ending.FATAL, PermissionError("403"))
        elif event == "end":
            self.end()

    def end(self) -> None:
        if not self.exhausted:
            self.exhausted = True
            self.book.input_exhausted()


@settings(max_examples=300, deadline=None)
@given(events=EVENTS, inputs=st.integers(0, 12), limit=st.integers(1, 5), ordered=st.booleans())
def test_slots_are_never_exceeded_and_nothing_is_pulled_after_an_ending_error(
    events: list[str], inputs: int, limit: int, ordered: bool
) -> None:
    book = RunBook(max_in_flight=limit, ordered=ordered)
    driver = Driver(book, inputs)
    taken_before_error: int | None = None
    for event in events:
        driver.step(event)
        assert book.taken - book.handed <= limit
        if book.ending_error() is not None:
            if taken_before_error is None:
                taken_before_error = book.taken
            assert taken_before_error == book.taken  # nothing pulled after it


@settings(max_examples=300, deadline=None)
@given(events=EVENTS, inputs=st.integers(0, 12), limit=st.integers(1, 5), ordered=st.booleans())
def test_every_taken_index_reaches_the_consumer_exactly_once_or_stays_owed(
    events: list[str], inputs: int, limit: int, ordered: bool
) -> None:
    """After any history and a full drain, each taken index is handed over once, or owed."""
    book = RunBook(max_in_flight=limit, ordered=ordered)
    driver = Driver(book, inputs)
    driver.play(events)
    # Drain: submit and finish everything still in flight, consume until over.
    driver.play(["submit", "finish", "consume", "pull"] * (inputs + 2) * 4 + ["end"])
    driver.play(["submit", "finish", "consume"] * (inputs + 2) * 4)
    taken, handed = driver.taken, driver.handed
    assert len(handed) == len(set(handed))  # never twice
    owed = set(book.pending.values())
    assert set(handed) | owed | {o.index for o in book.unconsumed()} <= taken
    if book.ending_error() is None or not isinstance(book.ending_error(), PermissionError):
        assert taken == set(handed)  # no fatal error: everything taken was handed over
        assert book.over


@settings(max_examples=300, deadline=None)
@given(
    events=EVENTS,
    after=EVENTS,
    inputs=st.integers(0, 12),
    limit=st.integers(1, 5),
    ordered=st.booleans(),
)
def test_a_stop_at_any_moment_leaves_every_paid_job_listed(
    events: list[str], after: list[str], inputs: int, limit: int, ordered: bool
) -> None:
    """Each index taken and submitted is handed over, unconsumed, pending or abandoned."""
    book = RunBook(max_in_flight=limit, ordered=ordered)
    driver = Driver(book, inputs)
    driver.play(events)
    book.stop()
    handed_before_stop = len(driver.handed)
    driver.play(after)  # POSTs on the wire return; nothing more is taken or handed over
    assert handed_before_stop == len(driver.handed)
    owed = (
        set(driver.handed)
        | {o.index for o in book.unconsumed()}
        | set(book.pending.values())
        | {int(request_id[2:]) for request_id in book.abandoned}
    )
    assert driver.taken - set(driver.unsent) == owed
