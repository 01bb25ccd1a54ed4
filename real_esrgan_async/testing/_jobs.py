"""A job's record, its state at any instant, and the status body the gateway would return.

Rules of this module: no clock, no I/O. A job's state is never stored as "current": it is
computed from the job's planned instants (``start_at``, ``end_at``; monotonic seconds) and the
``now`` the caller passes, so ten thousand jobs cost ten thousand small records and nothing else.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import attrs

from ._config import TimestampFormat

__all__ = [
    "MODEL_ID",
    "TERMINAL",
    "EmulatedJob",
    "JobOutcome",
    "JobStatus",
    "format_timestamp",
    "media_url",
    "status_at",
    "status_body",
]

MODEL_ID = "real-esrgan"

JobStatus = Literal["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "ERROR"]
JobOutcome = Literal["COMPLETED", "FAILED", "ERROR"]
TERMINAL: frozenset[str] = frozenset(("COMPLETED", "FAILED", "ERROR"))


@attrs.define(eq=False)
class EmulatedJob:
    """One submitted job; mutated only under the emulator's lock.

    ``end_at``, ``outcome`` and ``error`` are unknown (None) until the input has been fetched
    and processed: the job stays PROCESSING until then, whatever the timing model planned.
    """

    request_id: str
    image: str
    scale: int
    face_enhance: bool
    base_url: str
    created_at: float
    start_at: float
    planned_error: str | None
    duration_factor: float
    webhook_url: str | None = None
    webhook_mode: str | None = None
    end_at: float | None = None
    outcome: JobOutcome | None = None
    error: str | None = None
    output: bytes | None = None
    finalized: bool = False


def status_at(job: EmulatedJob, now: float) -> JobStatus:
    """The job's status at monotonic instant ``now``."""
    if now < job.start_at:
        return "QUEUED"
    if job.end_at is None or job.outcome is None or now < job.end_at:
        return "PROCESSING"
    return job.outcome


def media_url(base_url: str, request_id: str) -> str:
    """Where the emulator serves a job's output."""
    return f"{base_url}/media/{request_id}/output.png"


def format_timestamp(wall_time: float, form: Literal["iso", "space"]) -> str:
    """``2026-05-22T13:17:32.110Z`` (``iso``) or ``2026-05-22 13:19:23`` (``space``, UTC)."""
    millis = int(wall_time * 1000)
    seconds, ms = divmod(millis, 1000)
    moment = time.gmtime(seconds)
    if form == "space":
        return time.strftime("%Y-%m-%d %H:%M:%S", moment)
    return time.strftime("%Y-%m-%dT%H:%M:%S", moment) + f".{ms:03d}Z"


def status_body(
    job: EmulatedJob,
    now: float,
    *,
    base_url: str,
    wall_offset: float,
    timestamp_format: TimestampFormat,
) -> dict[str, Any]:
    """The JSON body of ``GET /v2/requests/status/{id}`` (and of a webhook) at ``now``.

    Args:
        job: The job.
        now: Monotonic instant the body describes.
        base_url: Scheme and authority the media URL is built on.
        wall_offset: Add to a monotonic instant to get seconds since the epoch.
        timestamp_format: The configured timestamp form.

    Returns:
        The body, with the reference's keys in the reference's order.
    """
    status = status_at(job, now)
    created_form: Literal["iso", "space"] = "space" if timestamp_format == "space" else "iso"
    completed_form: Literal["iso", "space"] = "iso" if timestamp_format == "iso" else "space"

    if status == "QUEUED":
        updated = job.created_at
    elif status == "PROCESSING":
        updated = job.start_at
    else:
        assert job.end_at is not None
        updated = job.end_at
    terminal = status in TERMINAL
    output = (
        {"media_url": [media_url(base_url, job.request_id)], "media_type": "image/png"}
        if status == "COMPLETED"
        else None
    )
    return {
        "request_id": job.request_id,
        "status": status,
        "model_id": MODEL_ID,
        "error": job.error if terminal else None,
        "output": output,
        "created_at": format_timestamp(job.created_at + wall_offset, created_form),
        "updated_at": format_timestamp(updated + wall_offset, created_form),
        "completed_at": (
            format_timestamp(updated + wall_offset, completed_form) if terminal else None
        ),
    }
