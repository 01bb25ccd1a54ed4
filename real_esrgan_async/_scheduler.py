"""When to check the status of each in-flight job: a pure poll scheduler.

Rules of this module:

- It does no I/O and reads no clock and no random source: every input carries
  ``now`` (seconds, any origin, never decreasing) and jitter comes from the
  injected ``rng`` (a number in [0, 1)).
- An id is *tracked* while it has at least one waiter. A tracked id is either
  *scheduled* (it waits in the due-heap) or *checking* (``due()`` handed it out;
  ``on_state()`` or ``on_check_failed()`` ends that). A checking id is never
  handed out again. Waiters on one id share its checks.
- Every waiter token leaves exactly once: through a terminal ``on_state()``,
  ``expired()``, ``forget()`` or ``remove_waiter()``.
- News about an id that is not tracked changes nothing, so late and duplicate
  results are harmless.
- Two checks of one id are at least ``min_interval`` apart; after the first,
  at most ``max_interval`` apart, unless a pause or the budget holds them back,
  or the id is on the safety net.
- An id on the *safety net* (its job reports by webhook, so checks only catch
  lost callbacks) is checked late and rarely: first at the learned second
  quantile times ``safety_net_factor`` but no later than ``safety_net_interval``
  after submission, then every ``safety_net_interval``. A sign of life from
  elsewhere puts its next check a full interval away. A waiter that is not on
  the safety net takes its id off it.
- The first check comes when most jobs are done, as learned from the jobs seen
  finishing; until enough are seen, the scheduler probes with a growing gap.
- ``due()`` honours ``pause_until()`` and a token bucket; ``next_wakeup()``
  tells when calling ``due()`` or ``expired()`` again can yield something.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from collections.abc import Callable
from typing import Any

import attrs

_CHECKING = math.inf  # an entry's due time while its check is out: matches no heap item
_SLACK = 1e-9  # float rounding allowed when counting the budget's tokens


def _field(
    default: Any,
    allowed: str,
    ok: Callable[[Any, Any], bool],
    *,
    kind: type[int] | type[float] = float,
    optional: bool = False,
) -> Any:
    """An attrs field whose validator says what was wrong and what is allowed."""
    noun = "an int" if kind is int else "a finite number"
    allowed = f"{'None or ' if optional else ''}{noun} {allowed}"

    def validate(policy: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        message = f"PollPolicy.{attribute.name} must be {allowed}, got {value!r}"
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, kind)):
            raise TypeError(message)
        if not (math.isfinite(value) and ok(policy, value)):
            raise ValueError(message)

    return attrs.field(default=default, validator=validate)


@attrs.frozen(kw_only=True)
class PollPolicy:
    """When to check a job's status, and how often at most (times in seconds).

    Args:
        initial_delay: Until durations are learned, the first check comes this
            long after submission; the gaps then grow by ``backoff``.
        min_interval: Two checks of one id are never closer than this.
        max_interval: After the first check, checks of one id are at most this far apart.
        max_first_check: The first check is never later than submission + this.
        backoff: Growth factor of the gap once the learned checks are used up.
        jitter: Each delay is multiplied by a factor in [1 - jitter, 1 + jitter].
        first_check_quantile: The first check comes at this quantile of the
            learned durations.
        second_check_quantile: The second check comes at this quantile.
        min_samples: Learned quantiles are used once this many jobs were seen finishing.
        learn_window: How many recent durations are remembered.
        max_checks_per_second: Status checks allowed per second over all ids
            (a token bucket); ``None`` for no limit.
        burst: Size of the token bucket.
        safety_net_interval: For jobs that report by webhook: the longest wait
            from submission to the first check, and between later checks.
            It bounds how late a lost callback is noticed.
        safety_net_factor: For jobs that report by webhook: the first check
            comes at the learned second quantile times this, when that is
            sooner than ``safety_net_interval``.
    """

    initial_delay: float = _field(1.0, "> 0", lambda p, v: v > 0)
    min_interval: float = _field(0.25, ">= 0", lambda p, v: v >= 0)
    max_interval: float = _field(
        10.0, "> 0 and >= min_interval", lambda p, v: v > 0 and v >= p.min_interval
    )
    max_first_check: float = _field(
        60.0, "> 0 and >= min_interval", lambda p, v: v > 0 and v >= p.min_interval
    )
    backoff: float = _field(1.6, ">= 1", lambda p, v: v >= 1)
    jitter: float = _field(0.1, "in [0, 1)", lambda p, v: 0 <= v < 1)
    first_check_quantile: float = _field(0.85, "in (0, 1]", lambda p, v: 0 < v <= 1)
    second_check_quantile: float = _field(
        0.97, "in [first_check_quantile, 1]", lambda p, v: p.first_check_quantile <= v <= 1
    )
    min_samples: int = _field(8, ">= 1", lambda p, v: v >= 1, kind=int)
    learn_window: int = _field(1024, ">= min_samples", lambda p, v: v >= p.min_samples, kind=int)
    max_checks_per_second: float | None = _field(50.0, "> 0", lambda p, v: v > 0, optional=True)
    burst: int = _field(50, ">= 1", lambda p, v: v >= 1, kind=int)
    safety_net_interval: float = _field(
        60.0, "> 0 and >= min_interval", lambda p, v: v > 0 and v >= p.min_interval
    )
    safety_net_factor: float = _field(2.0, ">= 1", lambda p, v: v >= 1)


class _Entry:
    """One tracked id (slots keep 10,000+ of them cheap)."""

    __slots__ = (
        "alive",
        "due",
        "gap",
        "last",
        "learned",
        "safety",
        "stage",
        "submitted",
        "tokens",
    )

    def __init__(self, submitted: float, gap: float, *, safety: bool = False) -> None:
        self.submitted = submitted
        self.alive = submitted  # the last moment the job was known not to be finished
        self.last: float | None = None  # when its previous check was handed out
        self.due = _CHECKING  # when it is next checked; its heap item holds the same value
        self.gap = gap  # the next backoff gap (nominal, before jitter)
        self.stage = 0  # learned quantile targets used up: 0, 1 or 2
        self.learned = False  # whether `due` was planned with learned quantiles
        self.tokens: tuple[int, ...] = ()  # its waiters
        self.safety = safety  # on the safety net: a webhook reports it, checks are a fallback


_DEFAULT_POLICY = PollPolicy()


class PollScheduler:
    """Tracks every in-flight ``request_id`` and decides when each is checked next.

    Args:
        policy: The knobs.
        rng: Returns a number in [0, 1) for each jitter draw.
    """

    def __init__(self, policy: PollPolicy = _DEFAULT_POLICY, *, rng: Callable[[], float]) -> None:
        self._policy = policy
        self._rng = rng
        self._entries: dict[str, _Entry] = {}
        self._waiters: dict[int, str] = {}  # token -> request_id
        # Lazy deletion in both heaps: an item is live only while it matches the tables.
        self._due_heap: list[tuple[float, str]] = []  # (due, request_id)
        self._deadline_heap: list[tuple[float, int]] = []  # (deadline, token)
        self._last_token = 0
        self._paused_until = -math.inf
        self._bucket = float(policy.burst)
        self._bucket_at: float | None = None
        self._ring: list[float] = []  # recent durations, oldest at _ring_pos once full
        self._ring_pos = 0
        self._sorted: list[float] = []  # the same durations, sorted
        self._quantiles: tuple[float, float] | None = None
        self._checks_scheduled = 0

    @property
    def in_flight(self) -> int:
        """Number of tracked ids."""
        return len(self._entries)

    @property
    def waiting(self) -> int:
        """Number of waiters."""
        return len(self._waiters)

    @property
    def learned_quantiles(self) -> tuple[float, float] | None:
        """The learned (first, second) check offsets, once ``min_samples`` jobs finished."""
        return self._quantiles

    @property
    def checks_scheduled(self) -> int:
        """How many ids ``due()`` has handed out in all."""
        return self._checks_scheduled

    def add_waiter(
        self,
        request_id: str,
        *,
        now: float,
        deadline: float | None = None,
        submitted_at: float | None = None,
        safety_net: bool = False,
    ) -> int:
        """Wait for ``request_id`` (until the absolute ``deadline``); returns a fresh token.

        With ``safety_net``, the job is expected to report by webhook and is
        checked only as a fallback; without it, the id gets the normal schedule
        (also when it was on the safety net for an earlier waiter).
        """
        self._last_token += 1
        token = self._last_token
        entry = self._entries.get(request_id)
        if entry is None:
            start = now if submitted_at is None else submitted_at
            entry = _Entry(start, self._policy.initial_delay, safety=safety_net)
            self._entries[request_id] = entry
            self._plan(request_id, entry)
        elif entry.safety and not safety_net:
            # This waiter was promised ordinary polling: the webhook may not reach it.
            entry.safety = False
            if entry.due != _CHECKING:
                self._plan(request_id, entry)
        entry.tokens += (token,)
        self._waiters[token] = request_id
        if deadline is not None:
            heapq.heappush(self._deadline_heap, (deadline, token))
            if len(self._deadline_heap) > 2 * len(self._waiters) + 64:
                live = [item for item in self._deadline_heap if item[1] in self._waiters]
                heapq.heapify(live)
                self._deadline_heap = live
        return token

    def remove_waiter(self, token: int) -> None:
        """The waiter left; its id is dropped when it was the last one. Idempotent."""
        request_id = self._waiters.pop(token, None)
        if request_id is not None:
            entry = self._entries[request_id]
            entry.tokens = tuple(t for t in entry.tokens if t != token)
            if not entry.tokens:
                del self._entries[request_id]

    def is_tracked(self, request_id: str) -> bool:
        """Whether ``request_id`` has a waiter here."""
        return request_id in self._entries

    def forget(self, request_id: str) -> list[int]:
        """Stop tracking ``request_id``; returns the tokens of its waiters."""
        entry = self._entries.pop(request_id, None)
        if entry is None:
            return []
        for token in entry.tokens:
            del self._waiters[token]
        return list(entry.tokens)

    def due(self, now: float) -> list[str]:
        """The ids to check now, in due order, within the budget; each is now *checking*."""
        if now < self._paused_until:
            return []
        tokens = self._tokens_at(now)
        limit = math.floor(tokens + _SLACK) if math.isfinite(tokens) else len(self._entries)
        ready: list[str] = []
        while len(ready) < limit:
            due = self._peek()
            if due is None or due > now:
                break
            _, request_id = heapq.heappop(self._due_heap)
            entry = self._entries[request_id]
            # Planned before durations were learned? Plan again with them.
            replan = not entry.learned and self._quantiles is not None
            if replan and self._replan(request_id, entry) and entry.due > now:
                continue
            entry.last = now
            entry.due = _CHECKING
            ready.append(request_id)
        if self._policy.max_checks_per_second is not None:
            self._bucket = tokens - len(ready)
            self._bucket_at = now if self._bucket_at is None else max(now, self._bucket_at)
        self._checks_scheduled += len(ready)
        return ready

    def on_state(
        self, request_id: str, *, terminal: bool, now: float, duration: float | None = None
    ) -> list[int]:
        """Feed a status (from a check, a webhook, anywhere); returns tokens resolved by it.

        ``duration`` is the job's true run time when known (the gateway's own
        timestamps tell it); it is learned instead of the midpoint estimate,
        which undervalues every job found finished at its first check.
        """
        entry = self._entries.get(request_id)
        if entry is None:
            return []
        if terminal:
            del self._entries[request_id]
            if duration is None:
                # It finished somewhere between the last sign of life and now: the midpoint.
                duration = (entry.alive + max(now, entry.alive)) / 2 - entry.submitted
            self._learn(duration)
            for token in entry.tokens:
                del self._waiters[token]
            return list(entry.tokens)
        entry.alive = max(entry.alive, now)
        if entry.due == _CHECKING:
            self._plan(request_id, entry)
        elif entry.safety:
            # A sign of life (a sync-mode callback): callbacks reach us, so the
            # fallback check can wait a whole interval from now.
            later = now + self._policy.safety_net_interval
            if entry.due < later:
                self._push(request_id, entry, later)
        elif entry.due < now + self._policy.min_interval:
            # Known alive just now: a check sooner than min_interval would tell nothing new.
            self._push(request_id, entry, now + self._policy.min_interval)
        return []

    def on_check_failed(self, request_id: str, *, now: float) -> None:
        """The check of ``request_id`` failed: try again after the backoff gap.

        Ignored unless ``request_id`` is being checked (its check may have been
        superseded by a state fed from elsewhere).
        """
        entry = self._entries.get(request_id)
        if entry is not None and entry.due == _CHECKING:
            self._plan(request_id, entry, failed_at=now)

    def pause_until(self, until: float) -> None:
        """Hand out no check before ``until`` (a later pause extends, an earlier one is moot)."""
        self._paused_until = max(self._paused_until, until)

    def expired(self, now: float) -> list[tuple[int, str]]:
        """Remove and return the waiters whose deadline is <= ``now``, as (token, request_id)."""
        gone: list[tuple[int, str]] = []
        while self._deadline_heap and self._deadline_heap[0][0] <= now:
            _, token = heapq.heappop(self._deadline_heap)
            request_id = self._waiters.get(token)
            if request_id is not None:
                gone.append((token, request_id))
                self.remove_waiter(token)
        return gone

    def next_wakeup(self, now: float) -> float | None:
        """When ``due()`` or ``expired()`` can next return something (never before ``now``).

        ``None`` when nothing is waiting to happen: no id is tracked, or every tracked
        id is being checked and no waiter has a deadline.
        """
        times: list[float] = []
        due = self._peek()
        if due is not None:
            times.append(max(due, self._paused_until, self._budget_ready(now)))
        while self._deadline_heap and self._deadline_heap[0][1] not in self._waiters:
            heapq.heappop(self._deadline_heap)
        if self._deadline_heap:
            times.append(self._deadline_heap[0][0])
        return max(min(times), now) if times else None

    # -- planning ----------------------------------------------------------------

    def _plan(self, request_id: str, entry: _Entry, *, failed_at: float | None = None) -> None:
        """Schedule the next check: the next usable learned quantile, else the backoff gap.

        An id on the safety net gets its slow schedule instead, except after a
        failed check, which is tried again after the ordinary backoff gap.
        """
        if failed_at is None and entry.safety:
            self._plan_safety(request_id, entry)
            return
        if failed_at is None and self._plan_target(request_id, entry):
            return
        policy = self._policy
        entry.learned = self._quantiles is not None
        delay = entry.gap
        entry.gap = min(delay * policy.backoff, policy.max_interval)
        if failed_at is not None:  # the gap counts from the failure, not from the check
            ref = failed_at
        else:
            ref = entry.submitted if entry.last is None else entry.last
        self._push_delay(request_id, entry, ref, delay)

    def _replan(self, request_id: str, entry: _Entry) -> bool:
        """Plan again with newly learned quantiles; False if they give no target."""
        if entry.safety:
            self._plan_safety(request_id, entry)
            return True
        return self._plan_target(request_id, entry)

    def _plan_safety(self, request_id: str, entry: _Entry) -> None:
        """Schedule the next fallback check of an id that reports by webhook."""
        policy = self._policy
        entry.learned = self._quantiles is not None
        delay = policy.safety_net_interval
        if entry.last is None:
            ref = entry.submitted
            if self._quantiles is not None:
                # Most callbacks have come by then; a later check would only
                # delay noticing a lost one.
                delay = min(delay, self._quantiles[1] * policy.safety_net_factor)
        else:
            ref = entry.last
        # Jitter only shortens it, so that the interval stays a bound on lateness.
        delay *= 1 - policy.jitter * self._rng()
        self._push(request_id, entry, ref + max(delay, policy.min_interval))

    def _plan_target(self, request_id: str, entry: _Entry) -> bool:
        """Schedule the next unused learned quantile that is usable; False if none is."""
        if self._quantiles is None:
            return False
        entry.learned = True
        policy = self._policy
        first, second = self._quantiles
        while entry.stage < 2:
            target = entry.submitted + self._quantiles[entry.stage]
            entry.stage += 1
            last = entry.last
            if last is None or (target > last and target >= last + policy.min_interval):
                # The backoff gap starts at q2 - q1 (a zero spread must not mean hot polling).
                spread = max(second - first, policy.min_interval) or policy.initial_delay
                if entry.stage == 2:
                    spread = min(spread * policy.backoff, policy.max_interval)
                entry.gap = spread
                ref = entry.submitted if last is None else last
                self._push_delay(request_id, entry, ref, target - ref)
                return True
        return False

    def _push_delay(self, request_id: str, entry: _Entry, ref: float, delay: float) -> None:
        """Jitter ``delay`` after ``ref``, clamp it to the policy's bounds, schedule it."""
        policy = self._policy
        delay *= 1 + policy.jitter * (2 * self._rng() - 1)
        cap = policy.max_first_check if entry.last is None else policy.max_interval
        self._push(request_id, entry, ref + min(max(delay, policy.min_interval), cap))

    def _push(self, request_id: str, entry: _Entry, due: float) -> None:
        entry.due = due
        heapq.heappush(self._due_heap, (due, request_id))
        if len(self._due_heap) > 2 * len(self._entries) + 64:  # too many stale items
            live = [(e.due, i) for i, e in self._entries.items() if e.due != _CHECKING]
            heapq.heapify(live)
            self._due_heap = live

    def _peek(self) -> float | None:
        """The earliest live due time, dropping stale heap items on the way."""
        heap = self._due_heap
        while heap:
            due, request_id = heap[0]
            entry = self._entries.get(request_id)
            if entry is not None and entry.due == due:
                return due
            heapq.heappop(heap)
        return None

    # -- budget ------------------------------------------------------------------

    def _tokens_at(self, now: float) -> float:
        rate = self._policy.max_checks_per_second
        if rate is None:
            return math.inf
        if self._bucket_at is None:
            return float(self._policy.burst)
        refill = rate * max(0.0, now - self._bucket_at)
        return min(float(self._policy.burst), self._bucket + refill)

    def _budget_ready(self, now: float) -> float:
        """The earliest time, from ``now`` on, at which the bucket holds a whole token."""
        tokens = self._tokens_at(now)
        rate = self._policy.max_checks_per_second
        if rate is None or tokens >= 1 - _SLACK:
            return now
        return now + (1 - tokens) / rate

    # -- learning ----------------------------------------------------------------

    def _learn(self, duration: float) -> None:
        """Remember one duration; refresh the quantiles (a bisect, not a sort)."""
        policy = self._policy
        duration = max(0.0, duration)
        if len(self._ring) < policy.learn_window:
            self._ring.append(duration)
        else:
            oldest = self._ring[self._ring_pos]
            self._ring[self._ring_pos] = duration
            self._ring_pos = (self._ring_pos + 1) % policy.learn_window
            del self._sorted[bisect_left(self._sorted, oldest)]
        insort(self._sorted, duration)
        if len(self._sorted) >= policy.min_samples:
            self._quantiles = (
                self._quantile(policy.first_check_quantile),
                self._quantile(policy.second_check_quantile),
            )

    def _quantile(self, q: float) -> float:
        """Nearest-rank quantile of the remembered durations."""
        return self._sorted[max(0, math.ceil(q * len(self._sorted)) - 1)]
