"""Counters a user can log or plot, and the snapshot `client.stats()` returns."""

from __future__ import annotations

import attrs

PRICE_PER_IMAGE_USD = 0.002


@attrs.frozen
class Stats:
    """What one client has done so far. Cheap to take; immutable.

    Attributes:
        submitted: Jobs created (each one paid, unless it ends ERROR).
        completed: Jobs seen COMPLETED.
        failed: Jobs seen FAILED (charged).
        errored: Jobs seen ERROR (not charged).
        in_flight: Jobs submitted or waited on and not yet seen finished.
        status_calls: Status GETs answered by the gateway.
        retries: Requests sent again after a transient failure or a 429.
        rate_limited: 429 answers received.
        ambiguous_submits: Submits whose fate is unknown (a job may exist).
        resubmitted: Inputs submitted again after their job ended ERROR (each
            resubmission is also counted in `submitted`; see `ResubmitPolicy`).
    """

    submitted: int = 0
    completed: int = 0
    failed: int = 0
    errored: int = 0
    in_flight: int = 0
    status_calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    ambiguous_submits: int = 0
    resubmitted: int = 0

    @property
    def finished(self) -> int:
        """Jobs seen in a terminal state."""
        return self.completed + self.failed + self.errored

    @property
    def cost_usd(self) -> float:
        """Estimated spend: $0.002 per submitted job; ERROR jobs are not charged."""
        return round((self.submitted - self.errored) * PRICE_PER_IMAGE_USD, 6)

    @property
    def status_calls_per_job(self) -> float:
        """Status GETs per finished job (0 before any finished)."""
        return self.status_calls / self.finished if self.finished else 0.0


class Counters:
    """The client's live, mutable counters (single event loop: no locking needed)."""

    __slots__ = (
        "ambiguous_submits",
        "completed",
        "errored",
        "failed",
        "rate_limited",
        "resubmitted",
        "retries",
        "status_calls",
        "submitted",
    )

    def __init__(self) -> None:
        self.submitted = 0
        self.completed = 0
        self.failed = 0
        self.errored = 0
        self.status_calls = 0
        self.retries = 0
        self.rate_limited = 0
        self.ambiguous_submits = 0
        self.resubmitted = 0

    def snapshot(self, *, in_flight: int) -> Stats:
        """An immutable copy, with the number of jobs in flight."""
        return Stats(
            submitted=self.submitted,
            completed=self.completed,
            failed=self.failed,
            errored=self.errored,
            in_flight=in_flight,
            status_calls=self.status_calls,
            retries=self.retries,
            rate_limited=self.rate_limited,
            ambiguous_submits=self.ambiguous_submits,
            resubmitted=self.resubmitted,
        )
