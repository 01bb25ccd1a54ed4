"""The emulator's bookkeeping: jobs, their planned instants, wallet, rate limit and counters.

Rules of this module: no clock, no I/O, no lock. Every method takes ``now`` (monotonic seconds)
and the caller holds the emulator's lock around it. Job states are lazy (see ``_jobs``); the only
eager work is ``advance``, which pops the jobs whose terminal instant has passed from a heap to
settle what a terminal status implies (refund on ERROR, active-job count, media expiry). Any
reader calls ``advance`` first, so every observer sees the same, up-to-date books.

Outputs are the only large thing held: their bytes are kept in a least-recently-used order and
the oldest evicted once they exceed ``max_output_bytes`` (an evicted output answers 404, as an
expired one does). The shared tiny output of jobs that fetch nothing costs nothing per job and
is not counted.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import random

import attrs

from ._config import EmulatorConfig
from ._ids import RequestIdFactory
from ._images import Upscaled
from ._jobs import EmulatedJob, JobOutcome, status_at
from ._ratelimit import SlidingWindowLimiter
from ._stats import EmulatorCounters, EmulatorStats
from ._timing import (
    FAILURE_SECONDS,
    cuda_oom_message,
    duration_factor,
    nominal_input_pixels,
    processing_seconds,
    queue_wait_seconds,
)
from ._validation import CallbackTarget, SubmitRequest
from ._wallet import Wallet

__all__ = ["EmulatorState", "InsufficientBalance", "RateLimited"]


@attrs.frozen
class RateLimited:
    """Creation refused: the rate-limit window is full for ``retry_after`` more seconds."""

    retry_after: float


@attrs.frozen
class InsufficientBalance:
    """Creation refused: the wallet cannot pay."""


class EmulatorState:
    """Everything the emulator remembers.

    Args:
        config: The knobs.
        tiny_output: The output PNG of every job when ``fetch_inputs`` is off.
    """

    def __init__(self, config: EmulatorConfig, tiny_output: bytes) -> None:
        self.config = config
        # Three independent streams from one seed: jobs' plans, injected faults (drawn at
        # request times that depend on the client's timing) and ids, so that turning a fault
        # knob on, or polling more often, does not change how a seeded emulator plans its jobs.
        master = random.Random(config.seed)
        self._job_rng = random.Random(master.getrandbits(64))
        self.fault_rng = random.Random(master.getrandbits(64))
        self._ids = RequestIdFactory(random.Random(master.getrandbits(64)))
        self._tiny_output = tiny_output
        self.counters = EmulatorCounters()
        self.wallet = Wallet(config.wallet_balance, config.price_per_image)
        self.limiter = SlidingWindowLimiter(config.rate_limit, config.rate_limit_window)
        self.jobs: dict[str, EmulatedJob] = {}
        self._seq = itertools.count()
        self._terminals: list[tuple[float, int, str]] = []
        self._expiries: list[tuple[float, int, str]] = []
        # request id -> bytes of its held output, least recently used first.
        self._held: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.held_output_bytes = 0

    def roll(self, probability: float) -> bool:
        """Draw an injected fault of ``probability``; zero consumes no randomness."""
        return probability > 0 and self.fault_rng.random() < probability

    def advance(self, now: float) -> None:
        """Settle every job whose terminal instant is at or before ``now``."""
        while self._terminals and self._terminals[0][0] <= now:
            _, _, request_id = heapq.heappop(self._terminals)
            job = self.jobs.get(request_id)
            if job is None or job.finalized:
                continue
            job.finalized = True
            self.counters.active_jobs -= 1
            if job.outcome == "COMPLETED":
                self.counters.jobs_completed += 1
                assert job.end_at is not None
                expiry = job.end_at + self.config.media_ttl
                heapq.heappush(self._expiries, (expiry, next(self._seq), request_id))
            elif job.outcome == "FAILED":
                self.counters.jobs_failed += 1
            else:
                self.counters.jobs_errored += 1
                self.wallet.refund()  # the gateway does not charge for ERROR
        while self._expiries and self._expiries[0][0] <= now:
            _, _, request_id = heapq.heappop(self._expiries)
            job = self.jobs.get(request_id)
            if job is not None:
                job.output = None
            self._release(request_id)

    def try_create(
        self,
        now: float,
        wall_now: float,
        request: SubmitRequest,
        *,
        base_url: str,
        webhook: CallbackTarget | None,
        megapixels: float | None = None,
    ) -> EmulatedJob | RateLimited | InsufficientBalance:
        """Create and charge a job, unless the rate limit or the wallet refuses.

        Args:
            now: Monotonic instant of the submit.
            wall_now: The same instant in seconds since the epoch (for the UUIDv7).
            request: The validated body.
            base_url: Scheme and authority the submit arrived on.
            webhook: The callback target, if any.
            megapixels: The input size the image URL states (``emulator_megapixels``); used
                instead of the ``nominal_megapixels`` draw when inputs are not fetched.

        Returns:
            The new job, or why it was refused.
        """
        self.advance(now)
        retry_after = self.limiter.retry_after(now)
        if retry_after is not None:
            return RateLimited(retry_after)
        if not self.wallet.can_pay():
            return InsufficientBalance()
        scale = self.config.time_scale
        rng = self._job_rng
        errors = self.config.error_rate > 0 and rng.random() < self.config.error_rate
        job = EmulatedJob(
            request_id=self._ids.next_id(wall_now),
            image=request.image,
            scale=request.scale,
            face_enhance=request.face_enhance,
            base_url=base_url,
            created_at=now,
            start_at=now + queue_wait_seconds(rng, self.config.cold_start_rate) * scale,
            planned_error=cuda_oom_message(rng) if errors else None,
            duration_factor=duration_factor(rng, errors=errors),
            webhook_url=webhook.url if webhook else None,
            webhook_mode=webhook.mode if webhook else None,
        )
        self.jobs[job.request_id] = job
        self.wallet.charge()
        self.limiter.record(now)
        self.counters.job_started()
        if not self.config.fetch_inputs:
            # Drawn even when the URL states a size, so that a hint on one job leaves the plans
            # of the others as they were.
            pixels = nominal_input_pixels(rng, self.config.nominal_megapixels)
            if megapixels is not None:
                pixels = max(1, round(megapixels * 1e6))
            self._plan_end(job, now, pixels, self._tiny_output)
        return job

    def finish(self, job: EmulatedJob, now: float, result: Upscaled | str) -> float | None:
        """Record the processed input of ``job`` (an output, or the FAILED message).

        Returns:
            The job's terminal instant, or None if the job is no longer known (reset).
        """
        if self.jobs.get(job.request_id) is not job:
            return None
        if isinstance(result, str):
            job.end_at = max(job.start_at + FAILURE_SECONDS * self.config.time_scale, now)
            self._settle(job, "FAILED", result, None)
            return job.end_at
        return self._plan_end(job, now, result.input_pixels, result.png)

    def _plan_end(self, job: EmulatedJob, now: float, input_pixels: int, png: bytes) -> float:
        seconds = processing_seconds(
            input_pixels,
            face_enhance=job.face_enhance,
            factor=job.duration_factor,
        )
        # The job cannot end before its input was actually processed (``now``).
        job.end_at = max(job.start_at + seconds * self.config.time_scale, now)
        if job.planned_error is not None:
            self._settle(job, "ERROR", job.planned_error, None)
        else:
            self._settle(job, "COMPLETED", None, png)
        return job.end_at

    def _settle(
        self, job: EmulatedJob, outcome: JobOutcome, error: str | None, png: bytes | None
    ) -> None:
        assert job.end_at is not None
        job.outcome = outcome
        job.error = error
        job.output = png
        if png is not None and png is not self._tiny_output:
            self._hold(job.request_id, len(png))
        heapq.heappush(self._terminals, (job.end_at, next(self._seq), job.request_id))

    def _hold(self, request_id: str, size: int) -> None:
        """Count a new output, evicting the least recently used ones past the cap."""
        self._held[request_id] = size
        self.held_output_bytes += size
        while self.held_output_bytes > self.config.max_output_bytes and len(self._held) > 1:
            evicted, evicted_size = self._held.popitem(last=False)
            self.held_output_bytes -= evicted_size
            self.counters.outputs_evicted += 1
            job = self.jobs.get(evicted)
            if job is not None:
                job.output = None

    def _release(self, request_id: str) -> None:
        size = self._held.pop(request_id, None)
        if size is not None:
            self.held_output_bytes -= size

    def media(self, request_id: str, now: float) -> bytes | None:
        """The output of ``request_id`` if it is COMPLETED at ``now`` and still held (neither
        expired nor evicted); serving it makes it the most recently used."""
        self.advance(now)
        job = self.jobs.get(request_id)
        if job is None or status_at(job, now) != "COMPLETED":
            return None
        if request_id in self._held:
            self._held.move_to_end(request_id)
        return job.output

    def snapshot(self, now: float) -> EmulatorStats:
        """The counters, settled up to ``now``."""
        self.advance(now)
        return EmulatorStats.from_counters(
            self.counters,
            wallet_balance=self.wallet.balance_usd,
            amount_charged=self.wallet.charged_usd,
            amount_refunded=self.wallet.refunded_usd,
        )
