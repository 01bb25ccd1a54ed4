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
- `park(outcomes)` / `take_parked()`: finished outcomes a stopped fan-out could
  not hand to its consumer, kept until the caller takes them.
- Queries: `is_unfinished`, `reports_by_webhook`, `unfinished_request_ids`, `stats`.

Rules of this module: no I/O, no clock; a single event loop calls it, so it
needs no lock. ``on_progress`` is called with a fresh `Stats` after each
submission and each finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ._models import JobState, Outcome, Status
from ._stats import Counters, Stats


class Ledger:
    """The books of one client: unfinished ids, ids reporting by webhook, counters.

    Args:
        on_progress: Called with a `Stats` snapshot after each submission and
            each job seen finished (it runs in the event loop: keep it quick).
    """

    def __init__(self, *, on_progress: Callable[[Stats], None] | None = None) -> None:
        self.counters = Counters()
        self._on_progress = on_progress
        self._unfinished: dict[str, None] = {}  # insertion-ordered set
        self._webhooked: set[str] = set()
        self._parked: list[Outcome] = []

    # Writes ------------------------------------------------------------------------

    def record_submitted(self, request_id: str, *, webhook: bool) -> None:
        """The gateway created a job for us: it is paid for and unfinished."""
        self.counters.submitted += 1
        self._unfinished[request_id] = None
        if webhook:
            self._webhooked.add(request_id)
        self._progress()

    def record_ambiguous(self) -> None:
        """A submit failed after it was sent: a job may exist, under an unknown id."""
        self.counters.ambiguous_submits += 1

    def adopt(self, request_id: str) -> None:
        """Await here a job paid for elsewhere (it is unfinished until seen finished)."""
        self._unfinished.setdefault(request_id, None)

    def record_terminal(self, state: JobState) -> bool:
        """The job was seen finished; return True the first time for an unfinished job."""
        self._webhooked.discard(state.request_id)
        if state.request_id not in self._unfinished:
            return False  # not a job of ours, or already counted
        del self._unfinished[state.request_id]
        if state.status is Status.COMPLETED:
            self.counters.completed += 1
        elif state.status is Status.FAILED:
            self.counters.failed += 1
        else:
            self.counters.errored += 1
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

    def _progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.stats())
