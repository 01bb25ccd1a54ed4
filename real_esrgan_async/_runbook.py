"""The fan-out's decisions, as a pure run book: what was taken, owed, handed over, and why it ended.

`upscale_many`'s I/O shell (`_fanout`) keeps the streams of control (tasks,
cancel scopes, the journal's calls); every decision it makes is asked here.
Rules of this module:

- It does no I/O and reads no clock: the shell reports what happened, the book
  answers what to do next.
- An input is *taken* when pulled from the caller's iterable; it gets an index,
  then exactly one `Outcome`, which is *emitted* into the book and later
  *handed* to the consumer. A submitted job whose outcome is not emitted yet is
  *pending* under its ``request_id``.
- Slots: taken inputs not yet handed over never exceed ``max_in_flight`` (a slow
  consumer slows the pulling instead of growing a buffer).
- Phases: ``FEEDING`` (pulling while slots are free) → ``DRAINING`` (nothing more
  will be pulled; taken inputs are still awaited) → ``ENDED`` (nothing more will
  be emitted: the consumer gets what is left, then the run's error, if any).
  ``STOPPED``: the consumer left (``break``, a cancellation, ``aclose()``);
  nothing more is pulled, submitted or awaited, and what was owed stays listed:
  `unconsumed` outcomes and the `pending` and `abandoned` ids.
- Nothing is pulled once an error that ends the run was recorded, nor after a stop.
- Which error ends the run when several happen, by `Ending` (first listed wins;
  within one kind, the first recorded):
  ``FATAL`` (the key refused, the journal failed or contradicted: every further
  call would fail or could pay twice) > ``CLIENT_CLOSED`` > ``INPUT_FAILED`` (the
  caller's iterable raised) > ``WALLET_EMPTY`` (402) > ``STORE_FAILED`` (the
  idempotency store failed: a keyed submit could be paid twice).
  ``FATAL`` and ``CLIENT_CLOSED`` stop awaiting at once (pending ids stay
  unfinished); the others stop pulling and submitting (inputs already taken get
  an outcome carrying the error) but the jobs already paid for are still awaited
  and emitted.
- Idempotency keys: the first input of the run that carries a key *leads* it
  (the shell asks the store); a later input with the same key, while the leader
  has no outcome yet, *follows* it: it is never submitted, and gets a copy of
  the leader's outcome (its own index and request) when the leader's is
  emitted. A follower whose request differs from its leader's gets an
  `IdempotencyKeyMismatchError` at once. Once the leader's outcome is emitted
  the key is forgotten here (a later duplicate asks the store, which answers
  without paying), so the book stays as small as the inputs in flight.
- Resubmissions (see `_resubmit`): an awaited job that ended ERROR may be
  *held* for a resubmission instead of emitted (`hold_for_resubmit`): its input
  keeps its slot and stays owed, with the ERROR outcome kept as its fallback.
  The new job is reported with `resubmitted`, which answers like `submitted`
  (a job created after a stop is abandoned: its id is kept). A held input whose
  resubmission cannot happen (a stop, an error that stops awaiting, a 402) has
  its fallback emitted, so that it still gets exactly one outcome.
- Ordered runs hand outcomes over in index order; once the run has ended, what
  is held is handed over in index order even where an index is missing.
"""

from __future__ import annotations

import enum
from collections import deque

import attrs

from ._exceptions import IdempotencyKeyMismatchError
from ._models import Outcome, UpscaleRequest


class Phase(enum.Enum):
    """Where a run is."""

    FEEDING = "feeding"
    DRAINING = "draining"
    ENDED = "ended"
    STOPPED = "stopped"


class Ending(enum.IntEnum):
    """Why a run ends early, in order of precedence (the lowest value wins)."""

    FATAL = 1
    CLIENT_CLOSED = 2
    INPUT_FAILED = 3
    WALLET_EMPTY = 4
    STORE_FAILED = 5

    @property
    def stops_awaiting(self) -> bool:
        """True when jobs in flight are no longer awaited (their ids stay unfinished)."""
        return self <= Ending.CLIENT_CLOSED


class RunBook:
    """The state of one fan-out run.

    Args:
        max_in_flight: Inputs taken and not yet handed to the consumer, at most.
        ordered: Hand outcomes over in input order instead of completion order.
    """

    def __init__(self, *, max_in_flight: int, ordered: bool) -> None:
        self.max_in_flight = max_in_flight
        self.ordered = ordered
        self.phase = Phase.FEEDING
        self.taken = 0
        self.emitted = 0
        self.handed = 0
        self.pending: dict[str, int] = {}  # request_id -> index, submitted and awaited
        self.abandoned: list[str] = []  # ids whose POST returned after the run stopped
        self._ready: deque[Outcome] = deque()  # completion order
        self._held: dict[int, Outcome] = {}  # ordered runs: index -> outcome
        self.resubmitting: dict[int, Outcome] = {}  # index -> its ERROR outcome, held
        self._next_index = 0
        self._errors: dict[Ending, BaseException] = {}
        self._input_done = False
        self._leaders: dict[str, tuple[int, UpscaleRequest]] = {}  # key -> its leading input
        self._key_of: dict[int, str] = {}  # leading index -> its key
        self._followers: dict[int, list[tuple[int, UpscaleRequest]]] = {}  # leader -> followers

    # The feeder's questions --------------------------------------------------------

    def may_pull(self) -> bool:
        """Whether to pull the next input now (a slot is free and nothing ended the run)."""
        return (
            self.phase is Phase.FEEDING
            and not self._errors
            and self.taken - self.handed < self.max_in_flight
        )

    def blocked_by_slots(self) -> bool:
        """Whether pulling waits only for the consumer to take an outcome."""
        return self.phase is Phase.FEEDING and not self._errors and not self.may_pull()

    def take(self) -> int:
        """An input was pulled (`may_pull` said so before the pull began): return its index.

        The pull itself may have taken a while (an async iterable), during which
        the run may have ended: the input still gets an index, and an outcome
        unless the run stopped awaiting.
        """
        index = self.taken
        self.taken += 1
        return index

    def input_exhausted(self) -> None:
        """The caller's iterable is exhausted, or pulling stopped for good."""
        self._input_done = True
        if self.phase is Phase.FEEDING:
            self.phase = Phase.DRAINING
        self._maybe_ended()

    def submit_refusal(self) -> BaseException | None:
        """Before a taken input is POSTed: the error that forbids it, if any (a 402
        seen, or the idempotency store failed)."""
        return self._errors.get(Ending.WALLET_EMPTY) or self._errors.get(Ending.STORE_FAILED)

    def lead_key(self, key: str, index: int, request: UpscaleRequest) -> bool:
        """Input `index` carries idempotency key `key`: whether it leads the key.

        True: no other input of this run awaits that key; the shell asks the
        store. False: it follows the input that does (its outcome comes with
        the leader's), or its request contradicts the leader's (its outcome,
        an `IdempotencyKeyMismatchError`, is emitted now).
        """
        leader = self._leaders.get(key)
        if leader is None:
            self._leaders[key] = (index, request)
            self._key_of[index] = key
            return True
        lead_index, lead_request = leader
        if lead_request != request:
            error = IdempotencyKeyMismatchError(key, lead_request, request)
            self.emit(Outcome(index, request, error=error))
        else:
            self._followers.setdefault(lead_index, []).append((index, request))
        return False

    # What the shell reports ---------------------------------------------------------

    def submitted(self, index: int, request_id: str) -> bool:
        """A job was created for input `index`; return whether to await it.

        A job created after the run stopped or was ended by a fatal error is
        *abandoned*: nobody will take its outcome, so its id is kept instead.
        """
        if self.phase is Phase.STOPPED or self._stops_awaiting():
            self.abandoned.append(request_id)
            return False
        self.pending[request_id] = index
        return True

    def hold_for_resubmit(self, request_id: str, outcome: Outcome) -> bool:
        """An awaited job ended ERROR and the policy resubmits it: hold `outcome`.

        Returns:
            Whether it is held (the shell then resubmits the input). False when
            the job was no longer awaited, or the run may submit nothing more;
            the shell then reports it with `finished` as usual.
        """
        if request_id not in self.pending or self._submits_nothing_more():
            return False
        del self.pending[request_id]
        self.resubmitting[outcome.index] = outcome
        return True

    def may_resubmit(self, index: int) -> bool:
        """Right before a held input's new POST: whether it may go (else its fallback was
        emitted, or is emitted now: a stop, an error that stops awaiting, or a 402 came)."""
        if index not in self.resubmitting:
            return False
        if self._submits_nothing_more() or self.submit_refusal() is not None:
            self.give_up_resubmit(index)
            return False
        return True

    def give_up_resubmit(self, index: int, replacement: Outcome | None = None) -> None:
        """The held input will not be resubmitted: emit its fallback (or `replacement`,
        the outcome of a resubmission that failed, when it is still held)."""
        fallback = self.resubmitting.pop(index, None)
        if fallback is not None:
            self.emit(fallback if replacement is None else replacement)

    def resubmitted(self, index: int, request_id: str) -> bool:
        """A new job was created for held input `index`; return whether to await it."""
        self.resubmitting.pop(index, None)
        if self.phase is Phase.STOPPED or self._stops_awaiting():
            self.abandoned.append(request_id)
            return False
        self.pending[request_id] = index
        return True

    def abandon(self, request_id: str) -> None:
        """A job was created but cannot be awaited (its journal record failed): keep its id."""
        self.abandoned.append(request_id)

    def finished(self, request_id: str, outcome: Outcome) -> bool:
        """An awaited job ended (or its wait did): emit its outcome; return whether it was."""
        if self.pending.pop(request_id, None) is None:
            return False  # stopped awaiting it already: its id stays unfinished
        self.emit(outcome)
        return True

    def emit(self, outcome: Outcome) -> None:
        """Input `outcome.index` has its outcome (without a job, or with one)."""
        self.emitted += 1
        if self.ordered:
            self._held[outcome.index] = outcome
        else:
            self._ready.append(outcome)
        key = self._key_of.pop(outcome.index, None)
        if key is not None:
            del self._leaders[key]
            for index, request in self._followers.pop(outcome.index, ()):
                self.emit(attrs.evolve(outcome, index=index, request=request, saved_to=None))
        self._maybe_ended()

    def fail(self, ending: Ending, error: BaseException) -> list[str]:
        """Record an error that ends the run; return the ids no longer awaited.

        Nothing more is pulled. For `Ending.FATAL` and `Ending.CLIENT_CLOSED`
        the pending jobs are dropped from the wait (their ids stay pending,
        hence unfinished); otherwise they are still awaited.
        """
        self._errors.setdefault(ending, error)
        if self.phase is Phase.FEEDING:
            self.phase = Phase.DRAINING
        dropped: list[str] = []
        if ending.stops_awaiting:
            dropped = list(self.pending)
            self._release_resubmissions()
            if self.phase is not Phase.STOPPED:
                self.phase = Phase.ENDED
        self._maybe_ended()
        return dropped

    def stop(self) -> list[str]:
        """The consumer left: return the ids to stop awaiting (they stay pending).

        Held resubmissions get their fallback outcome (it is then unconsumed).
        """
        already = self.phase is Phase.STOPPED
        if not already:
            self._release_resubmissions()
        self.phase = Phase.STOPPED
        return [] if already else list(self.pending)

    # The consumer's questions -------------------------------------------------------

    def next_outcome(self) -> Outcome | None:
        """The outcome to hand over now, or None (wait, or the run is over)."""
        if self.phase is Phase.STOPPED:
            return None
        outcome: Outcome | None = None
        if not self.ordered:
            if self._ready:
                outcome = self._ready.popleft()
        elif self._next_index in self._held:
            outcome = self._held.pop(self._next_index)
            self._next_index += 1
        elif self.phase is Phase.ENDED and self._held:
            # Ended with gaps (a fatal error): hand over the rest in index order.
            self._next_index = min(self._held)
            outcome = self._held.pop(self._next_index)
            self._next_index += 1
        if outcome is not None:
            self.handed += 1
        return outcome

    @property
    def over(self) -> bool:
        """True when the consumer has had every outcome it will get."""
        if self.phase is Phase.STOPPED:
            return True
        return self.phase is Phase.ENDED and not self._ready and not self._held

    def ending_error(self) -> BaseException | None:
        """The error that ends the run, by the documented precedence, or None."""
        if not self._errors:
            return None
        return self._errors[min(self._errors)]

    def unconsumed(self) -> tuple[Outcome, ...]:
        """Outcomes emitted but not handed over (in completion, or index, order)."""
        held = (self._held[index] for index in sorted(self._held))
        return (*self._ready, *held)

    # Helpers ----------------------------------------------------------------------

    def _submits_nothing_more(self) -> bool:
        return self.phase is Phase.STOPPED or self._stops_awaiting()

    def _release_resubmissions(self) -> None:
        for index in list(self.resubmitting):
            self.give_up_resubmit(index)

    def _stops_awaiting(self) -> bool:
        return any(ending.stops_awaiting for ending in self._errors)

    def _maybe_ended(self) -> None:
        if self.phase is Phase.DRAINING and self._input_done and self.emitted == self.taken:
            self.phase = Phase.ENDED
