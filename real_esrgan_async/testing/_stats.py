"""What the emulator counts, and the frozen snapshot tests read from another thread.

``EmulatorCounters`` is mutated under the emulator's lock; ``EmulatorStats`` is an immutable
copy taken under the same lock, so a test thread never sees a half-updated set of numbers.
"""

from __future__ import annotations

import collections
import types
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["EmulatorCounters", "EmulatorStats"]


@attrs.define
class EmulatorCounters:
    """Mutable counters; see ``EmulatorStats`` for their meaning."""

    submits_received: int = 0
    jobs_created: int = 0
    submits_by_image: collections.Counter[str] = attrs.Factory(collections.Counter)
    status_calls: int = 0
    status_calls_by_request_id: collections.Counter[str] = attrs.Factory(collections.Counter)
    media_downloads: int = 0
    outputs_evicted: int = 0
    unauthorized: int = 0
    bad_requests: int = 0
    insufficient_balance: int = 0
    not_found: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    dropped_before_create: int = 0
    dropped_after_create: int = 0
    webhooks_delivered: int = 0
    webhooks_failed: int = 0
    webhooks_duplicated: int = 0
    webhooks_lost: int = 0
    webhooks_abandoned: int = 0
    webhooks_refused: int = 0
    concurrent_requests: int = 0
    peak_concurrent_requests: int = 0
    active_jobs: int = 0
    peak_active_jobs: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    jobs_errored: int = 0

    def request_started(self) -> None:
        """Count one more HTTP request in flight."""
        self.concurrent_requests += 1
        self.peak_concurrent_requests = max(self.peak_concurrent_requests, self.concurrent_requests)

    def request_finished(self) -> None:
        """Count one fewer HTTP request in flight."""
        self.concurrent_requests -= 1

    def job_started(self) -> None:
        """Count one more non-terminal job."""
        self.jobs_created += 1
        self.active_jobs += 1
        self.peak_active_jobs = max(self.peak_active_jobs, self.active_jobs)


@attrs.frozen(kw_only=True)
class EmulatorStats:
    """A consistent snapshot of the emulator's counters.

    Attributes:
        submits_received: ``POST .../generate`` requests received, whatever their outcome.
        jobs_created: Jobs created (each one charged).
        submits_by_image: Submits per ``image`` URL, for every submit whose body named one
            (including those refused), so a test can assert one POST per input.
        status_calls: ``GET /v2/requests/status/...`` requests received.
        status_calls_by_request_id: The same, per request id in the path.
        media_downloads: Outputs served (200) from ``/media/...``.
        outputs_evicted: Outputs dropped before their TTL to keep held outputs under
            ``max_output_bytes``.
        unauthorized: 401 responses.
        bad_requests: 400 responses (including "Model not found").
        insufficient_balance: 402 responses.
        not_found: 404 responses to status calls and media downloads.
        rate_limited: 429 responses.
        server_errors: 5xx responses.
        dropped_before_create: Submit connections cut before a job was created.
        dropped_after_create: Submit connections cut after the job was created and charged.
        webhooks_delivered: Callback POSTs answered with 2xx (duplicates included).
        webhooks_failed: Callback attempts that failed (non-2xx, timeout, connection error).
        webhooks_duplicated: Extra deliveries of an already delivered callback.
        webhooks_lost: Callbacks deliberately never sent.
        webhooks_abandoned: Callbacks given up after ``webhook_max_attempts`` failures.
        webhooks_refused: Callbacks not sent because their URL, or a redirect, named a
            non-loopback host while ``allow_remote_hosts`` is off.
        concurrent_requests: API requests (submit, status, media) in flight now.
        peak_concurrent_requests: The most API requests ever in flight at once.
        active_jobs: Jobs not yet in a terminal status.
        peak_active_jobs: The most non-terminal jobs ever at once.
        jobs_completed: Jobs that reached COMPLETED.
        jobs_failed: Jobs that reached FAILED.
        jobs_errored: Jobs that reached ERROR (and were refunded).
        wallet_balance: Balance in USD; None for an unlimited wallet.
        amount_charged: USD charged so far (refunds not deducted).
        amount_refunded: USD refunded so far.
    """

    submits_received: int
    jobs_created: int
    submits_by_image: Mapping[str, int]
    status_calls: int
    status_calls_by_request_id: Mapping[str, int]
    media_downloads: int
    outputs_evicted: int
    unauthorized: int
    bad_requests: int
    insufficient_balance: int
    not_found: int
    rate_limited: int
    server_errors: int
    dropped_before_create: int
    dropped_after_create: int
    webhooks_delivered: int
    webhooks_failed: int
    webhooks_duplicated: int
    webhooks_lost: int
    webhooks_abandoned: int
    webhooks_refused: int
    concurrent_requests: int
    peak_concurrent_requests: int
    active_jobs: int
    peak_active_jobs: int
    jobs_completed: int
    jobs_failed: int
    jobs_errored: int
    wallet_balance: float | None
    amount_charged: float
    amount_refunded: float

    @classmethod
    def from_counters(
        cls,
        counters: EmulatorCounters,
        *,
        wallet_balance: float | None,
        amount_charged: float,
        amount_refunded: float,
    ) -> EmulatorStats:
        """Copy ``counters`` (call under the lock that guards them)."""
        values: dict[str, Any] = attrs.asdict(counters, recurse=False)
        for name in ("submits_by_image", "status_calls_by_request_id"):
            values[name] = types.MappingProxyType(dict(values[name]))
        return cls(
            **values,
            wallet_balance=wallet_balance,
            amount_charged=amount_charged,
            amount_refunded=amount_refunded,
        )

    def to_json(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data (what ``GET /_emulator/stats`` returns)."""
        values: dict[str, Any] = attrs.asdict(self, recurse=False)
        for name in ("submits_by_image", "status_calls_by_request_id"):
            values[name] = dict(values[name])
        return values
