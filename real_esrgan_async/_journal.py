"""The journal of a fan-out: its protocol, its value objects, and the pure resume rules.

A journal keeps one entry per input index, so that a run killed at any moment
can be resumed without paying twice and without losing a job that was paid
for. The states and their moves::

    (none) ─record_pending─▶ PENDING ─record_submitted─▶ SUBMITTED ─record_finished─▶ COMPLETED
                               │ │                                                    FAILED
                               │ └─record_unsent─▶ (none)   the POST created nothing  ERROR
                               └─record_ambiguous─▶ AMBIGUOUS
    PENDING found on opening ─▶ AMBIGUOUS   (the process died; its POST may have been sent)
    AMBIGUOUS ─resubmit_ambiguous─▶ PENDING     AMBIGUOUS ─resolve_ambiguous(id)─▶ SUBMITTED
    ERROR ─resubmitted (ResubmitPolicy)─▶ PENDING   (ERROR is not charged; the new id replaces it)
    COMPLETED ─mark_saved─▶ COMPLETED with `saved_to`

Rules of this module: no I/O and no clock. `plan` decides what a run does with
an input given its entry; `replay` rebuilds the outcome of a finished one.
Durability is the implementation's side of the protocol (see `Journal`).
"""

from __future__ import annotations

import enum
import json
from typing import Protocol, runtime_checkable

import attrs

from ._exceptions import AmbiguousSubmitError, JournalMismatchError, RealESRGANError
from ._models import JobState, Outcome, Status, UpscaleRequest, unwrap


class JournalState(enum.StrEnum):
    """Where an input is, as far as the journal knows."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    AMBIGUOUS = "ambiguous"
    COMPLETED = "completed"
    FAILED = "failed"
    ERROR = "error"

    @property
    def is_finished(self) -> bool:
        """True once the job reached a terminal status: a rerun does not touch it again."""
        return self in (JournalState.COMPLETED, JournalState.FAILED, JournalState.ERROR)


#: The journal state a terminal job status is recorded as.
FINISHED_STATES = {
    Status.COMPLETED: JournalState.COMPLETED,
    Status.FAILED: JournalState.FAILED,
    Status.ERROR: JournalState.ERROR,
}


@attrs.frozen
class JournalEntry:
    """What a journal recorded about one input.

    Attributes:
        index: The input's position in the caller's iterable.
        request: The request at that position (a rerun must pass the same).
        state: Where it is.
        request_id: The job's id, once the gateway returned one.
        result: The terminal state, once FINISHED (COMPLETED, FAILED or ERROR).
        saved_to: Where the caller saved the output (`mark_saved`), if it did.
        error: Why the entry is AMBIGUOUS (kept after a resubmission, for the record).
    """

    index: int
    request: UpscaleRequest
    state: JournalState
    request_id: str | None = None
    result: JobState | None = None
    saved_to: str | None = None
    error: str | None = None


@runtime_checkable
class Journal(Protocol):
    """Where `upscale_many(journal=...)` records each input; `SQLiteJournal` is the default.

    The run calls these methods on the event loop's thread, in this order for
    each input it submits: `get`, `record_pending`, ``await sync()``, the POST,
    then `record_submitted` (or `record_unsent`, or `record_ambiguous`), then
    `record_finished`. The caller adds `mark_saved`.

    Durability is the contract: when `record_submitted` returns, the id must
    survive the process being killed (it is called synchronously the moment
    the gateway answers, before any other task runs); when `sync` returns,
    every record so far must survive a power cut, since a POST follows it.
    Other writes may be lost to a crash: the rerun then polls again.
    """

    def get(self, index: int) -> JournalEntry | None:
        """The entry of input `index`, or None if it was never submitted."""

    def record_pending(self, index: int, request: UpscaleRequest) -> None:
        """Input `index` is about to be submitted (PENDING): it is new, AMBIGUOUS, or
        ERROR (a resubmission; the next `record_submitted` replaces its id)."""

    async def sync(self) -> None:
        """Return once every record so far would survive a power cut."""

    def record_submitted(self, index: int, request_id: str) -> None:
        """The gateway created a job for input `index` (SUBMITTED)."""

    def record_unsent(self, index: int) -> None:
        """The POST for input `index` provably created no job: forget the attempt."""

    def record_ambiguous(self, index: int, reason: str) -> None:
        """The POST for input `index` may or may not have created a job (AMBIGUOUS)."""

    def record_finished(self, index: int, state: JobState) -> None:
        """The job of input `index` reached terminal `state`."""

    def mark_saved(self, index: int, path: str) -> None:
        """The caller saved the COMPLETED output of input `index` at `path`."""


class Resume(enum.Enum):
    """What a run does with an input, given its journal entry."""

    SUBMIT = "submit"  # never submitted, ended ERROR, or a resubmission was asked: POST
    WATCH = "watch"  # submitted and unfinished: poll its id, never POST it again
    REPLAY = "replay"  # finished, or ambiguous: yield the recorded outcome again


def plan(
    entry: JournalEntry | None,
    request: UpscaleRequest,
    *,
    resubmit_ambiguous: bool,
    resubmit_errors: bool = False,
    keyed: bool = False,
) -> Resume:
    """Decide what to do with input `request` whose journal entry is `entry`.

    For an input with an idempotency key, the key's store takes precedence
    over the journal wherever the journal is unsure: an AMBIGUOUS entry (the
    run died between the store and the journal, or the POST itself was
    ambiguous) is SUBMIT, which for a keyed input means *ask the store* (it
    never pays twice: it answers with the key's job, its result, or
    `AmbiguousSubmitError`). An ERROR entry is replayed: one key names one job.

    Args:
        entry: What the journal recorded at the input's index, or None.
        request: The input the run has at that index now.
        resubmit_ambiguous: Submit again an AMBIGUOUS entry (it may pay twice).
        resubmit_errors: Submit again an entry whose job ended ERROR (not
            charged): a rerun with a `ResubmitPolicy` that resubmits does.
        keyed: The input carries an idempotency key (see above).

    Raises:
        JournalMismatchError: The entry records another request at that index.
    """
    if entry is None:
        return Resume.SUBMIT
    if entry.request != request:
        raise JournalMismatchError(entry.index, _describe(entry.request), _describe(request))
    if entry.state is JournalState.SUBMITTED:
        return Resume.WATCH
    if keyed:
        return Resume.REPLAY if entry.state.is_finished else Resume.SUBMIT
    if entry.state is JournalState.ERROR and resubmit_errors:
        return Resume.SUBMIT
    if entry.state.is_finished:
        return Resume.REPLAY
    # AMBIGUOUS (a PENDING entry is AMBIGUOUS by the time a journal is read).
    return Resume.SUBMIT if resubmit_ambiguous else Resume.REPLAY


def replay(entry: JournalEntry) -> Outcome:
    """The outcome of a finished or ambiguous entry, flagged ``resumed``."""
    result: JobState | None = None
    error: BaseException | None = None
    if entry.result is not None:
        try:
            result = unwrap(entry.result)
        except RealESRGANError as exc:
            error = exc
    else:
        reason = entry.error or "the run stopped while its submit was in flight"
        error = AmbiguousSubmitError(
            entry.request.image, reason=f"recorded in the journal: {reason}"
        )
    return Outcome(
        entry.index,
        entry.request,
        result=result,
        error=error,
        request_id=entry.request_id,
        resumed=True,
        saved_to=entry.saved_to,
    )


def state_to_json(state: JobState) -> str:
    """`state` as the gateway's status JSON, which `JobState.from_json` reads back."""
    return json.dumps(state.to_json(), separators=(",", ":"))


def state_from_json(text: str) -> JobState:
    """The inverse of `state_to_json`."""
    return JobState.from_json(json.loads(text))


def _describe(request: UpscaleRequest) -> str:
    return f"{request.image[:100]!r} (scale {request.scale}, face_enhance {request.face_enhance})"
