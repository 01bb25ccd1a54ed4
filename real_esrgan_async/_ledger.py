"""The ledger: what a client paid for, and what of it has not reached the caller yet.

It is the one place that knows which paid jobs are still owed to someone, so it
is where a coordinator of several processes will hook in. Its whole interface:

- `record_submitted(request_id, webhook=...)`: the gateway created (and charged)
  a job for this client.
- `record_ambiguous()`: a submit may or may not have created a job.
- `adopt(request_id)`: a job paid for elsewhere (an earlier run, another
  process, an id the user passed to ``wait``) is now awaited here.
- `record_terminal(state)`: the job was seen COMPLETED, FAILED or ERROR; returns
  whether this was news (each job is counted once).
- `record_state(state)`: a status was seen (any: a check, a callback, a status
  call); a change of a job of ours becomes an event.
- `record_resubmitted(previous, request_id)`: a job that ended ERROR was
  replaced by a new one (see `ResubmitPolicy`).
- `park(outcomes)` / `take_parked()`: finished outcomes a stopped fan-out could
  not hand to its consumer, kept until the caller takes them.
- Queries: `is_unfinished`, `reports_by_webhook`, `unfinished_request_ids`, `stats`.

Rules of this module: no I/O, and the clock is injected (``clock``, for the
events' timestamps); a single event loop calls it, so it needs no lock.
``on_progress`` is called with a fresh `Stats` after each submission and each
finish; ``on_event`` with a `JobEvent` for each change of a job of ours. It is
also the one place that logs per job (at DEBUG, under ``real_esrgan_async``),
and warns once per client when a job that reports by webhook is found
finished by a status check: its callback never came.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from ._events import EventKind, JobEvent
from ._models import JobState, Outcome, Status
from ._stats import Counters, Stats

logger = logging.getLogger("real_esrgan_async")


def _no_clock() -> float:
    return 0.0


class Ledger:
    """The books of one client: unfinished ids, ids reporting by webhook, counters.

    Args:
        on_progress: Called with a `Stats` snapshot after each submission and
            each job seen finished (it runs in the event loop: keep it quick).
        on_event: Called with a `JobEvent` for each change of a job of ours
            (in the event loop too).
        clock: The events' timestamps (the client passes ``time.time``).
    """

    def __init__(
        self,
        *,
        on_progress: Callable[[Stats], None] | None = None,
        on_event: Callable[[JobEvent], None] | None = None,
        clock: Callable[[], float] = _no_clock,
    ) -> None:
        self.counters = Counters()
        self._on_progress = on_progress
        self._on_event = on_event
        self._clock = clock
        # Unfinished jobs, oldest first -> the last status seen (None: none yet). One table,
        # not two: it holds every job in flight (memory per job at 100,000 in flight).
        self._unfinished: dict[str, Status | None] = {}
        self._webhooked: set[str] = set()
        self._called_back: set[str] = set()  # webhook jobs a callback was heard about
        self._parked: list[Outcome] = []
        self._warned_lost_callbacks = False

    # Writes ------------------------------------------------------------------------

    def record_submitted(self, request_id: str, *, webhook: bool) -> None:
        """The gateway created a job for us: it is paid for and unfinished."""
        self.counters.submitted += 1
        if self._unfinished.get(request_id) is None:  # (a job adopted first keeps its status)
            self._unfinished[request_id] = Status.QUEUED
        if webhook:
            self._webhooked.add(request_id)
        logger.debug("submitted %s%s", request_id, " (reports by webhook)" if webhook else "")
        if self._on_event is not None:  # (no event is built for nobody: one per job and change)
            self._on_event(JobEvent(request_id, EventKind.SUBMITTED, Status.QUEUED, self._clock()))
        self._progress()

    def record_resubmitted(self, previous: str, request_id: str) -> None:
        """Job `request_id` was created to replace `previous`, which ended ERROR."""
        self.counters.resubmitted += 1
        logger.debug("resubmitted %s (ended ERROR) as %s", previous, request_id)
        self._event(
            JobEvent(
                request_id,
                EventKind.RESUBMITTED,
                Status.QUEUED,
                self._clock(),
                previous_request_id=previous,
            )
        )

    def record_ambiguous(self) -> None:
        """A submit failed after it was sent: a job may exist, under an unknown id."""
        self.counters.ambiguous_submits += 1
        logger.warning(
            "a submit failed after it was sent: a job may exist under an unknown id "
            "(see stats().ambiguous_submits; it is not resubmitted unless asked)"
        )

    def adopt(self, request_id: str) -> None:
        """Await here a job paid for elsewhere (it is unfinished until seen finished)."""
        self._unfinished.setdefault(request_id, None)

    def record_callback(self, request_id: str) -> None:
        """A webhook callback about `request_id` arrived (it may still be unconfirmed)."""
        if request_id in self._webhooked:
            self._called_back.add(request_id)

    def record_state(self, state: JobState) -> None:
        """A status of a job was seen; a new non-terminal status of ours is an event."""
        request_id = state.request_id
        if state.status.is_terminal or request_id not in self._unfinished:
            return  # terminal states go through `record_terminal`
        if self._unfinished[request_id] is state.status:
            return
        self._unfinished[request_id] = state.status
        logger.debug("%s is %s", request_id, state.status.value)
        if self._on_event is not None:
            self._on_event(JobEvent(request_id, EventKind.STATUS, state.status, self._clock()))

    def record_terminal(self, state: JobState) -> bool:
        """The job was seen finished; return True the first time for an unfinished job."""
        request_id = state.request_id
        webhooked = request_id in self._webhooked
        self._webhooked.discard(request_id)
        called_back = request_id in self._called_back
        self._called_back.discard(request_id)
        if request_id not in self._unfinished:
            return False  # not a job of ours, or already counted
        del self._unfinished[request_id]
        if state.status is Status.COMPLETED:
            self.counters.completed += 1
        elif state.status is Status.FAILED:
            self.counters.failed += 1
        else:
            self.counters.errored += 1
        logger.debug(
            "%s finished %s%s",
            request_id,
            state.status.value,
            f": {state.error}" if state.error else "",
        )
        if webhooked and not called_back:
            self._lost_callback(request_id)
        if self._on_event is not None:
            self._on_event(
                JobEvent(
                    request_id, EventKind.FINISHED, state.status, self._clock(), error=state.error
                )
            )
        self._progress()
        return True

    def park(self, outcomes: Iterable[Outcome]) -> None:
        """Keep outcomes that a stopped fan-out could not hand to its consumer."""
        self._parked.extend(outcomes)

    def take_parked(self) -> tuple[Outcome, ...]:
        """Return the parked outcomes and forget them."""
        parked, self._parked = tuple(self._parked), []
        return parked

    # Queries -----------------------------------------------------------------------

    def was_seen(self, request_id: str) -> bool:
        """Whether `request_id` was submitted here, or a status of it seen here."""
        return self._unfinished.get(request_id) is not None

    def is_unfinished(self, request_id: str) -> bool:
        """Whether `request_id` is a job of ours not yet seen finished."""
        return request_id in self._unfinished

    def reports_by_webhook(self, request_id: str) -> bool:
        """Whether the job was submitted with a webhook and has not been seen finished."""
        return request_id in self._webhooked

    @property
    def unfinished_request_ids(self) -> tuple[str, ...]:
        """Jobs paid for or awaited here and not yet seen finished, oldest first."""
        return tuple(self._unfinished)

    def stats(self) -> Stats:
        """A snapshot of the counters."""
        return self.counters.snapshot(in_flight=len(self._unfinished))

    def _lost_callback(self, request_id: str) -> None:
        """A job that reports by webhook was found finished by a check, no callback heard."""
        logger.debug("%s was found finished by a status check; no callback came", request_id)
        if self._warned_lost_callbacks:
            return
        self._warned_lost_callbacks = True
        logger.warning(
            "job %s reports by webhook but was found finished by a status check: its "
            "callback never came. Is webhook_url right and reachable from the gateway, "
            "and is the WebhookReceiver mounted there? Until callbacks arrive, each job "
            "waits for the safety net (PollPolicy.safety_net_interval). Logged once per client.",
            request_id,
        )

    def _event(self, event: JobEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    def _progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.stats())
