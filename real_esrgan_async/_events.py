"""Per-job progress events: what a UI shows beside the `Stats` counters.

The client's `Ledger` emits them, in one place, for the jobs this client paid
for or waits on (``AsyncRealESRGAN(on_event=...)``). Rules of this module:
value objects only, no I/O, no clock.
"""

from __future__ import annotations

import enum

import attrs

from ._models import Status


class EventKind(enum.StrEnum):
    """What happened to a job."""

    SUBMITTED = "submitted"  # the gateway created (and charged) the job
    RESUBMITTED = "resubmitted"  # created to replace a job that ended ERROR
    STATUS = "status"  # a new non-terminal status was seen (QUEUED, PROCESSING)
    FINISHED = "finished"  # seen COMPLETED, FAILED or ERROR (once per job)


@attrs.frozen
class JobEvent:
    """One change in one job, as this client saw it.

    Attributes:
        request_id: The job.
        kind: What happened.
        status: The job's status as of this event (QUEUED for a new job).
        at: When the client saw it, in seconds since the epoch (``time.time()``).
        previous_request_id: For `EventKind.RESUBMITTED`: the job that ended
            ERROR and is replaced by this one.
        error: For a FAILED or ERROR job: the gateway's message, if any.
    """

    request_id: str
    kind: EventKind
    status: Status
    at: float
    previous_request_id: str | None = None
    error: str | None = None
