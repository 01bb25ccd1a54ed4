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
  at most ``max_interval`` apart (with a target, the first one too), unless a
  pause or the budget holds them back, or the id is on the safety net.
- An id on the *safety net* (its job reports by webhook, so checks only catch
  lost callbacks) is checked late and rarely: first at the learned second
  quantile times ``safety_net_factor`` but no later than ``safety_net_interval``
  after submission, then every ``safety_net_interval``. A sign of life from
  elsewhere puts its next check a full interval away, but never past twice the
  interval after its last real check (or submission): a forger sending
  PROCESSING forever cannot starve it. A waiter that is not on the safety net
  takes its id off it.
- With a latency target (``PollPolicy.target_delay``, the default), every check
  is placed from a model of the job's remaining time given what was seen of it
  (QUEUED at some age, PROCESSING since a known moment, or nothing yet): the
  next check comes ``target_delay`` after the moment by which all but a small
  share ``eps`` of the jobs still running are expected to finish. Each check
  thus lets about ``eps`` of the jobs it covers be seen later than the target;
  ``eps`` is the allowed share ``1 - target_quantile`` over the mean number of
  checks per job, corrected by the share of jobs actually seen late. No gap is
  shorter than the target (a shorter one would catch nothing the longer one
  misses, for that target).
- The model learns queue wait and processing time apart, with Kaplan-Meier
  estimates over the most recent ``learn_window`` jobs that count the ages of
  jobs still running (censored), so early learning is not biased to the short
  ones; it starts from priors for the hosted model (0.3-2 MP inputs, ~16 s
  median, 3% cold starts). A caller-given input size narrows processing time.
- Without a target (``target_delay=None``), the first check comes when most
  jobs are done, as learned from the jobs seen finishing; until enough are
  seen, the scheduler probes with a growing gap.
- ``expect_finish()`` (a terminal callback its confirming check did not yet
  see) re-checks soon at a short bounded backoff, then returns to the plan.
- The budget adapts (AIMD): it grows by ``budget_increase`` checks/s per second
  while it holds checks back, and halves on ``on_rate_limited()``.
- ``due()`` honours ``pause_until()`` and a token bucket; ``next_wakeup()``
  tells when calling ``due()`` or ``expired()`` again can yield something.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right, insort
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


def _default_max_interval(policy: Any) -> float:
    """10 s; with a target, room for the long gaps of large inputs and cold starts."""
    target = policy.target_delay
    if isinstance(target, bool) or not isinstance(target, (int, float)):
        return 10.0  # no target (or a bad one, which its validator reports)
    return max(40.0, 4.0 * target) if math.isfinite(target) else 10.0


@attrs.frozen(kw_only=True)
class PollPolicy:
    """When to check a job's status, and how often at most (times in seconds).

    Args:
        initial_delay: Until durations are learned, the first check comes this
            long after submission; the gaps then grow by ``backoff``.
        min_interval: Two checks of one id are never closer than this.
        max_interval: After the first check, checks of one id are at most this far
            apart; with a target, also the first check after submission. By
            default 10 s, and with a target ``max(40 s, 4 x target_delay)``.
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
        target_delay: How late you accept to learn that a job finished (seconds,
            at ``target_quantile``): checks are placed to meet it with as few
            calls as the learned timings allow. ``None`` for the older
            quantile-and-backoff schedule (``initial_delay``, ``backoff``,
            ``first_check_quantile``, ``second_check_quantile``, ``min_samples``
            then rule the first checks; with a target they rule only retries
            after a failed check).
        target_quantile: The share of jobs seen within ``target_delay``.
        budget_increase: While the budget holds checks back, it grows by this
            many checks/s per second; ``on_rate_limited()`` (a 429) halves it.
            0 keeps ``max_checks_per_second`` fixed.
        prior_scale: The calibrated priors' durations are multiplied by this,
            for a service known to run slower or faster than the hosted model,
            or an emulator that compresses time. Learning corrects a wrong
            prior within a few dozen jobs either way.
    """

    # First: the default of max_interval depends on it (every field is keyword-only).
    target_delay: float | None = _field(5.0, "> 0", lambda p, v: v > 0, optional=True)
    initial_delay: float = _field(1.0, "> 0", lambda p, v: v > 0)
    min_interval: float = _field(0.25, ">= 0", lambda p, v: v >= 0)
    max_interval: float = _field(
        attrs.Factory(_default_max_interval, takes_self=True),
        "> 0 and >= min_interval",
        lambda p, v: v > 0 and v >= p.min_interval,
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
    target_quantile: float = _field(0.95, "in [0.5, 1)", lambda p, v: 0.5 <= v < 1)
    budget_increase: float = _field(5.0, ">= 0", lambda p, v: v >= 0)
    prior_scale: float = _field(1.0, "> 0", lambda p, v: v > 0)

    @classmethod
    def profile(cls, name: str, **changes: Any) -> PollPolicy:
        """A named latency target: ``"interactive"``, ``"balanced"`` or ``"frugal"``.

        ``interactive`` (2 s) suits a request handler that waits; ``balanced``
        (5 s, the default) a handler or a crawler; ``frugal`` (20 s) a batch
        that pays per status call more than it waits. ``changes`` set any
        other field.

        Raises:
            ValueError: An unknown name.
        """
        if name not in PROFILES:
            allowed = ", ".join(repr(n) for n in PROFILES)
            raise ValueError(f"PollPolicy.profile name must be one of {allowed}, got {name!r}")
        return cls(**{**PROFILES[name], **changes})


#: The named latency targets of `PollPolicy.profile`.
PROFILES: dict[str, dict[str, Any]] = {
    "interactive": {"target_delay": 2.0},
    "balanced": {"target_delay": 5.0},
    "frugal": {"target_delay": 20.0},
}


def _tokens(entry: _Entry) -> tuple[int, ...]:
    """An entry's waiters, as a tuple."""
    tokens = entry.tokens
    return (tokens,) if isinstance(tokens, int) else tokens


class _Entry:
    """One tracked id (slots keep 10,000+ of them cheap)."""

    __slots__ = (
        "adopted",
        "alive",
        "checks",
        "due",
        "expect",
        "gap",
        "last",
        "learned",
        "megapixels",
        "queued",
        "run",
        "safety",
        "stage",
        "started",
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
        # Its waiters: one token alone (the usual case) or a tuple of them; a
        # one-item tuple would cost 48 bytes more per job in flight.
        self.tokens: int | tuple[int, ...] = ()
        self.safety = safety  # on the safety net: a webhook reports it, checks are a fallback
        self.checks = 0  # checks handed out
        self.expect = 0  # > 0: re-checking after an unconfirmed terminal callback
        self.megapixels: float | None = None  # the input's size, when the caller knows it
        self.queued: float | None = None  # the age at which it was last seen QUEUED
        self.started: float | None = None  # when it started PROCESSING (local clock)
        self.run: float | None = None  # once it ended: its processing time
        # Submitted by another process or an earlier run, at a moment not known here:
        # checked at once, and never learned from (its age would be wrong).
        self.adopted = False


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
        self._rate = policy.max_checks_per_second
        self._held_at: float | None = None  # when due() last held checks back for the budget
        self._model: _Model | None = None
        self._checks_per_job = 2.0  # a running mean, for the share each check may miss
        self._boost = 0.6  # corrects that share by the share of jobs seen late
        if policy.target_delay is not None:
            self._model = _Model(policy.learn_window, policy.prior_scale)
            self._set_quantiles()

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

    @property
    def checks_per_second(self) -> float | None:
        """The budget now (it adapts: see ``PollPolicy.budget_increase``)."""
        return self._rate

    @property
    def miss_share(self) -> float:
        """With a target: the share of the running jobs each check may see late."""
        share = (1 - self._policy.target_quantile) * _MISS_MARGIN * self._boost
        return share / max(1.0, self._checks_per_job)

    def add_waiter(
        self,
        request_id: str,
        *,
        now: float,
        deadline: float | None = None,
        submitted_at: float | None = None,
        safety_net: bool = False,
        megapixels: float | None = None,
        adopted: bool = False,
    ) -> int:
        """Wait for ``request_id`` (until the absolute ``deadline``); returns a fresh token.

        With ``safety_net``, the job is expected to report by webhook and is
        checked only as a fallback; without it, the id gets the normal schedule
        (also when it was on the safety net for an earlier waiter).
        ``megapixels``, the input's size, narrows the processing time a target
        schedule expects. An ``adopted`` id was submitted elsewhere, at a moment
        not known here (another worker, an earlier run): it may have finished
        long ago, so it is checked at once, then planned from what that check
        says; its duration is not learned from.

        Raises:
            ValueError: ``megapixels`` is not a finite number > 0.
        """
        if megapixels is not None and (
            isinstance(megapixels, bool) or not math.isfinite(megapixels) or megapixels <= 0
        ):
            raise ValueError(f"megapixels must be None or a finite number > 0, got {megapixels!r}")
        self._last_token += 1
        token = self._last_token
        entry = self._entries.get(request_id)
        if entry is None:
            start = now if submitted_at is None else submitted_at
            entry = _Entry(start, self._policy.initial_delay, safety=safety_net)
            entry.megapixels = megapixels
            entry.adopted = adopted
            self._entries[request_id] = entry
            if adopted:
                entry.learned = True  # "at once" holds whatever is learned meanwhile
                self._push(request_id, entry, now)
            else:
                if self._model is not None:
                    self._model.track(entry)
                self._plan(request_id, entry)
        elif entry.safety and not safety_net:
            # This waiter was promised ordinary polling: the webhook may not reach it.
            entry.safety = False
            if entry.due != _CHECKING:
                self._plan(request_id, entry)
        entry.tokens = token if entry.tokens == () else (*_tokens(entry), token)
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
            left = tuple(t for t in _tokens(entry) if t != token)
            entry.tokens = left[0] if len(left) == 1 else left
            if not left:
                del self._entries[request_id]

    def request_id_of(self, token: int) -> str | None:
        """The id waiter ``token`` waits on; None once the token has left."""
        return self._waiters.get(token)

    def tokens_of(self, request_id: str) -> tuple[int, ...]:
        """The tokens of the waiters on ``request_id`` (empty when it is not tracked)."""
        entry = self._entries.get(request_id)
        return () if entry is None else _tokens(entry)

    def is_tracked(self, request_id: str) -> bool:
        """Whether ``request_id`` has a waiter here."""
        return request_id in self._entries

    def forget(self, request_id: str) -> list[int]:
        """Stop tracking ``request_id``; returns the tokens of its waiters."""
        entry = self._entries.pop(request_id, None)
        if entry is None:
            return []
        tokens = _tokens(entry)
        for token in tokens:
            del self._waiters[token]
        return list(tokens)

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
            entry.checks += 1
            ready.append(request_id)
        if self._rate is not None:
            self._bucket = tokens - len(ready)
            self._bucket_at = now if self._bucket_at is None else max(now, self._bucket_at)
            self._grow_budget(now, held=len(ready) >= limit and (self._peek() or math.inf) <= now)
        self._checks_scheduled += len(ready)
        return ready

    def on_state(
        self,
        request_id: str,
        *,
        terminal: bool,
        now: float,
        duration: float | None = None,
        queued: bool | None = None,
        queue_wait: float | None = None,
    ) -> list[int]:
        """Feed a status (from a check, a webhook, anywhere); returns tokens resolved by it.

        Args:
            request_id: The job.
            terminal: Whether it is COMPLETED, FAILED or ERROR.
            now: When the status was learned.
            duration: A terminal job's true run time, creation to end, when the
                gateway's own timestamps tell it; learned instead of the
                midpoint estimate, which undervalues every job found finished
                at its first check.
            queued: For a running job: True when QUEUED, False when PROCESSING,
                None when not told.
            queue_wait: For a PROCESSING job: seconds from its creation to the
                start of processing (``updated_at - created_at``), when known.
        """
        entry = self._entries.get(request_id)
        if entry is None:
            return []
        if terminal:
            del self._entries[request_id]
            if not entry.adopted:
                measured = duration is not None
                if duration is None:
                    # It finished between the last sign of life and now: the midpoint.
                    duration = (entry.alive + max(now, entry.alive)) / 2 - entry.submitted
                if self._model is None:
                    self._learn(duration)
                else:
                    self._learn_end(entry, max(0.0, duration), now, measured=measured)
            tokens = _tokens(entry)
            for token in tokens:
                del self._waiters[token]
            return list(tokens)
        entry.alive = max(entry.alive, now)
        if self._model is not None:
            self._learn_running(entry, now, queued, queue_wait)
        if entry.due == _CHECKING:
            self._plan(request_id, entry)
        elif entry.safety:
            # A sign of life (a sync-mode callback): callbacks reach us, so the
            # fallback check can wait a whole interval from now; but never past
            # two intervals after the last real check, or a forger sending
            # PROCESSING forever would keep the job from ever being checked.
            interval = self._policy.safety_net_interval
            ref = entry.submitted if entry.last is None else entry.last
            later = min(now + interval, ref + 2 * interval)
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

    def expect_finish(self, request_id: str, *, now: float) -> None:
        """A terminal callback came, but its confirming check still saw the job running.

        The gateway lags its own callback: re-check soon, after 0.5, 1, 2, 4
        and 4 s, then return to the normal plan (not to the safety net's
        interval). Ignored for an id not tracked.
        """
        entry = self._entries.get(request_id)
        if entry is None:
            return
        entry.expect = 1
        if entry.due != _CHECKING:
            due = self._expected(entry, now)
            if due < entry.due:
                self._push(request_id, entry, due)

    def on_rate_limited(self, now: float) -> None:
        """The gateway refused a check (429): halve the budget (never below 1 check/s)."""
        if self._rate is not None:
            self._bucket = min(self._tokens_at(now), self._rate / 2)
            self._bucket_at = now if self._bucket_at is None else max(now, self._bucket_at)
            self._rate = max(_MIN_RATE, self._rate / 2)
        self._held_at = None

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
        if failed_at is None and entry.expect:
            if entry.expect <= len(_EXPECT_GAPS):
                self._push(request_id, entry, self._expected(entry, entry.alive))
                return
            entry.expect = 0  # the re-checks are used up: back to the normal plan
        if failed_at is None and entry.safety:
            self._plan_safety(request_id, entry)
            return
        if failed_at is None and self._model is not None:
            self._plan_delay(request_id, entry)
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

    def _plan_delay(self, request_id: str, entry: _Entry) -> None:
        """Schedule the next check of a target schedule from what was seen of the job."""
        policy = self._policy
        model = self._model
        assert model is not None
        assert policy.target_delay is not None
        entry.learned = True
        delay = policy.target_delay
        if entry.started is not None:
            origin, points = entry.started, model.processing_for(entry.megapixels)
        elif entry.queued is not None:
            origin, points = entry.submitted, model.queued_for(entry.queued, entry.megapixels)
        else:
            origin, points = entry.submitted, model.total_for(entry.megapixels)
        # Jitter spreads the share missed, not the delay: the target stays a bound.
        eps = self.miss_share * (1 + policy.jitter * (2 * self._rng() - 1))
        due = next_check(points, origin, entry.alive, delay, eps)
        if due is None:  # it outlived the model: a gap growing with its age
            due = entry.alive + max(delay, 0.25 * (entry.alive - origin))
        if entry.last is None:
            cap = min(policy.max_interval, policy.max_first_check)
            due = min(max(due, entry.submitted + policy.min_interval), entry.submitted + cap)
        else:
            due = min(max(due, entry.last + policy.min_interval), entry.last + policy.max_interval)
        self._push(request_id, entry, due)

    def _expected(self, entry: _Entry, now: float) -> float:
        """The next re-check after an unconfirmed terminal callback; then the normal plan."""
        gap = _EXPECT_GAPS[entry.expect - 1]
        entry.expect += 1
        floor = -math.inf if entry.last is None else entry.last + self._policy.min_interval
        return max(now + gap, floor)

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
        rate = self._rate
        if rate is None:
            return math.inf
        if self._bucket_at is None:
            return float(self._policy.burst)
        refill = rate * max(0.0, now - self._bucket_at)
        return min(float(self._policy.burst), self._bucket + refill)

    def _budget_ready(self, now: float) -> float:
        """The earliest time, from ``now`` on, at which the bucket holds a whole token."""
        tokens = self._tokens_at(now)
        rate = self._rate
        if rate is None or tokens >= 1 - _SLACK:
            return now
        return now + (1 - tokens) / rate

    def _grow_budget(self, now: float, *, held: bool) -> None:
        """Additive increase: the budget grows while it holds checks back."""
        increase = self._policy.budget_increase
        if not held or not increase:
            self._held_at = None
            return
        if self._held_at is not None and self._rate is not None:
            self._rate += increase * (now - self._held_at)
        self._held_at = now

    # -- learning ----------------------------------------------------------------

    def _learn_running(
        self, entry: _Entry, now: float, queued: bool | None, queue_wait: float | None
    ) -> None:
        """Learn from a job seen running: it waits longer, or it started at a known time."""
        age = max(0.0, now - entry.submitted)
        if queued and entry.started is None:
            entry.queued = age
        elif queued is False and queue_wait is not None and queue_wait >= 0:
            entry.started = entry.submitted + min(queue_wait, age)

    def _learn_end(self, entry: _Entry, duration: float, now: float, *, measured: bool) -> None:
        """Learn a finished job's processing time, how many checks it took, and if it was late."""
        assert self._model is not None
        policy = self._policy
        assert policy.target_delay is not None
        if not entry.safety and not entry.expect:
            self._checks_per_job += (entry.checks - self._checks_per_job) / 64
            if measured and entry.checks:
                # The model is an estimate: steer the share each check may miss by the
                # share of jobs actually seen late (the gateway's timestamps tell it).
                late = now - entry.submitted - duration > policy.target_delay
                allowed = (1 - policy.target_quantile) * _LATE_MARGIN
                self._boost *= math.exp(_BOOST_GAIN * (allowed - late))
                self._boost = min(max(self._boost, _BOOST_RANGE[0]), _BOOST_RANGE[1])
        if entry.started is not None:
            wait = entry.started - entry.submitted
        else:
            # Not seen starting: the learned median wait, but no less than it was seen
            # queued, and no more than it lasted.
            floor = entry.queued or 0.0
            wait = min(duration, max(floor, self._model.wait[len(self._model.wait) // 2]))
        entry.run = max(0.0, duration - wait)
        if self._model.ended():
            self._set_quantiles()
            if self._model.rebuilds <= _EARLY_REBUILDS:
                # The first data can prove the priors wrong (another service, an emulator):
                # plans made from them are revised, once or twice per run (a scan).
                for request_id, other in self._entries.items():
                    if other.due != _CHECKING and not other.safety and not other.expect:
                        self._plan_delay(request_id, other)

    def _set_quantiles(self) -> None:
        """The learned quantiles of a target schedule (for the safety net): of its model."""
        assert self._model is not None
        total = self._model.total
        policy = self._policy
        self._quantiles = tuple(  # type: ignore[assignment]
            total[max(0, math.ceil(q * len(total)) - 1)]
            for q in (policy.first_check_quantile, policy.second_check_quantile)
        )

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


# -- the timing model of a latency target ------------------------------------------

_FINE = 200  # quantile points of queue wait, processing time and size ratio
_COARSE = 48  # points of each side of a sum (48 x 48 = 2,304 points)
_PRIOR_WEIGHT = 32.0  # the priors weigh as much as this many jobs
_MISS_MARGIN = 0.7  # plan for this share of the allowed misses (the model is an estimate)
_LATE_MARGIN = 0.9  # steer to this share of the allowed late jobs (a p95 of 5 s: 4.5%)
_BOOST_GAIN = 0.05  # how fast the share seen late steers (about 1/20 of the gap per job)
_BOOST_RANGE = (0.25, 4.0)
_EXPECT_GAPS = (0.5, 1.0, 2.0, 4.0, 4.0)  # re-checks after a terminal callback not yet confirmed
_EARLY_REBUILDS = 3  # plans made before this many rebuilds of the model are revised
_MIN_RATE = 1.0  # the budget never halves below this many checks/s


def nominal_processing(megapixels: float) -> float:
    """Seconds the hosted model takes for an input of this size (calibrated, not measured).

    2.7 s + 12.8 s per input megapixel + 0.09 s per output megapixel (the
    network always runs at 4x, so 16 output megapixels per input megapixel).
    """
    return 2.7 + (12.8 + 16 * 0.09) * megapixels


def _points(n: int, inverse: Callable[[float], float]) -> list[float]:
    return sorted(inverse((i + 0.5) / n) for i in range(n))


def _normal_quantile(p: float) -> float:
    """The standard normal's quantile, by bisection (statistics would import random)."""
    low, high = -10.0, 10.0
    for _ in range(60):
        mid = (low + high) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _prior_wait(n: int) -> list[float]:
    """Queue wait: lognormal, median 1.5 s; 3% cold starts spread over 20-90 s."""
    cold = max(1, round(0.03 * n))
    return sorted(
        [
            math.exp(math.log(1.5) + 0.6 * _normal_quantile((i + 0.5) / (n - cold)))
            for i in range(n - cold)
        ]
        + [20.0 + 70.0 * (i + 0.5) / cold for i in range(cold)]
    )


def _prior_processing(n: int) -> list[float]:
    """Processing time of inputs of 0.3-2 MP spread log-uniformly, with its 10% noise."""
    sizes = _points(n, lambda p: nominal_processing(0.3 * (2 / 0.3) ** p))
    both = sorted(size * ratio for size in sizes for ratio in _prior_ratio(9))
    return [both[int((i + 0.5) * len(both) / n)] for i in range(n)]


def _prior_ratio(n: int) -> list[float]:
    """Processing time over its nominal value for the input's size: about 10% noise."""
    return _points(n, lambda p: math.exp(0.1 * _normal_quantile(p)))


_PRIOR_WAIT = _prior_wait(_FINE)
_PRIOR_PROCESSING = _prior_processing(_FINE)
_PRIOR_RATIO = _prior_ratio(_FINE)


def kaplan_meier(
    prior: list[float], exact: list[float], censored: list[float], n: int
) -> list[float]:
    """``n`` quantile points of the Kaplan-Meier estimate of a duration.

    Args:
        prior: Pseudo-observations (exact), weighing ``_PRIOR_WEIGHT`` in all.
        exact: Durations seen whole.
        censored: Durations known only to exceed these values (jobs still running).
        n: How many points to return (at probabilities (i + 0.5) / n).

    Returns:
        The points, sorted; beyond the last exact duration, that duration.
    """
    weight = _PRIOR_WEIGHT / len(prior)
    events = [(v, 0, weight) for v in prior] + [(v, 0, 1.0) for v in exact]
    events += [(v, 1, 1.0) for v in censored]  # at a tie, a censoring counts as after
    events.sort()
    at_risk = math.fsum(w for _, _, w in events)
    survival = 1.0
    steps: list[tuple[float, float]] = []  # (duration, CDF from it on)
    for value, is_censored, w in events:
        if not is_censored:
            survival *= 1 - w / at_risk
            steps.append((value, 1 - survival))
        at_risk -= w
    out: list[float] = []
    j = 0
    for i in range(n):
        p = (i + 0.5) / n
        while j < len(steps) - 1 and steps[j][1] < p:
            j += 1
        out.append(steps[j][0])
    return out


def _coarse(points: list[float], n: int) -> list[float]:
    step = len(points) / n
    return [points[int((i + 0.5) * step)] for i in range(n)] if step > 1 else points


def _sum(first: list[float], second: list[float], n: int = _COARSE) -> list[float]:
    """Points of the sum of two independent durations (``n`` x ``n`` of them)."""
    return sorted(a + b for a in _coarse(first, n) for b in _coarse(second, n))


def next_check(
    points: list[float], origin: float, alive: float, delay: float, eps: float
) -> float | None:
    """When to check a job that finishes at ``origin + X``, X spread as ``points``.

    The job was running at ``alive``. The check comes ``delay`` after the moment
    by which all but a share ``eps`` of the jobs still running then are done:
    that share (those finishing first) is seen later than ``delay``; the rest
    within it. None when every point is behind ``alive`` (the job outlived
    what was learned).
    """
    start = bisect_right(points, alive - origin)
    left = len(points) - start
    if left <= 0:
        return None
    return origin + points[start + min(left - 1, int(eps * left))] + delay


class _Model:
    """Queue wait and processing time of the most recent ``window`` jobs, and their sums."""

    def __init__(self, window: int, scale: float) -> None:
        self.window = window
        self._priors = tuple(
            [v * scale for v in prior] for prior in (_PRIOR_WAIT, _PRIOR_PROCESSING, _PRIOR_RATIO)
        )
        self.jobs: list[_Entry] = []  # the window (finished entries stay here until replaced)
        self._pos = 0
        self._fresh = 0
        self.wait, self.processing, self.ratio = self._priors
        self.total = _sum(self.wait, self.processing)
        self._cache: dict[tuple[int, int], list[float]] = {}
        self.rebuilds = 0

    def track(self, entry: _Entry) -> None:
        """Put a new job in the window (the oldest leaves it)."""
        if len(self.jobs) < self.window:
            self.jobs.append(entry)
        else:
            self.jobs[self._pos] = entry
            self._pos = (self._pos + 1) % self.window

    def ended(self) -> bool:
        """A job ended: rebuild once enough did (the cost per job stays flat); True if so.

        What was seen of running jobs counts at the next rebuild.
        """
        self._fresh += 1
        if self._fresh >= max(16, len(self.jobs) // 8):
            self.rebuild()
            return True
        return False

    def rebuild(self) -> None:
        self._fresh = 0
        self.rebuilds += 1
        # (exact, censored): a job still running counts as lasting at least its age.
        waits: tuple[list[float], list[float]] = ([], [])
        runs: tuple[list[float], list[float]] = ([], [])
        ratios: tuple[list[float], list[float]] = ([], [])
        for job in self.jobs:
            if job.started is not None:
                waits[0].append(job.started - job.submitted)
            elif job.queued is not None:
                waits[1].append(job.queued)
            if job.run is not None:
                run, kind = job.run, 0
            elif job.started is not None:
                run, kind = max(0.0, job.alive - job.started), 1
            else:
                continue
            runs[kind].append(run)
            if job.megapixels is not None:
                ratios[kind].append(run / nominal_processing(job.megapixels))
        self.wait = kaplan_meier(self._priors[0], *waits, _FINE)
        self.processing = kaplan_meier(self._priors[1], *runs, _FINE)
        self.ratio = kaplan_meier(self._priors[2], *ratios, _FINE)
        self.total = _sum(self.wait, self.processing)
        self._cache.clear()

    def processing_for(self, megapixels: float | None) -> list[float]:
        """Points of the processing time (of an input of ``megapixels``, when given)."""
        if megapixels is None:
            return self.processing
        key = (-1, _size_key(megapixels))
        points = self._cache.get(key)
        if points is None:
            nominal = nominal_processing(megapixels)
            points = self._cache[key] = [nominal * r for r in self.ratio]
        return points

    def total_for(self, megapixels: float | None) -> list[float]:
        """Points of submission-to-finish of a job nothing is known of yet."""
        if megapixels is None:
            return self.total
        key = (-2, _size_key(megapixels))
        points = self._cache.get(key)
        if points is None:
            # Coarser: one per input size and rebuild, and the size leaves little spread.
            sizes = self.processing_for(megapixels)
            points = self._cache[key] = _sum(self.wait, sizes, _COARSE // 2)
        return points

    def queued_for(self, age: float, megapixels: float | None) -> list[float]:
        """Points of submission-to-finish of a job still QUEUED at ``age`` (a cold start)."""
        bucket = int(age)
        key = (bucket, -1 if megapixels is None else _size_key(megapixels))
        points = self._cache.get(key)
        if points is None:
            waits = self.wait[bisect_right(self.wait, bucket) :]
            if len(waits) < 4:  # it outlived every wait learned: it may last as long again
                waits = [bucket * (1 + (i + 0.5) / 8) for i in range(8)]
            points = self._cache[key] = _sum(waits, self.processing_for(megapixels))
        return points


def _size_key(megapixels: float) -> int:
    return round(math.log(megapixels) * 25)  # 4% steps: finer than the model's 10% noise
