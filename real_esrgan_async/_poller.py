"""The I/O loop that drives the pure `PollScheduler`.

One poller per client, one task: it reads the clock, asks the scheduler what is
due, starts those status GETs in the client's task group, feeds the answers
back and resolves waiters through their callbacks. It sleeps until the
scheduler's next wake-up (never less than `MIN_SLEEP`, so it cannot spin) or
until a new waiter needs an earlier check.

Given a `StatusCoalescer` (`coalesce_with`), each status read goes through it,
so that processes waiting on one job share one status call.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
import anyio.abc

from ._exceptions import (
    APIConnectionError,
    APIError,
    JobTimeoutError,
    RateLimitError,
    ServerError,
)
from ._gateway import Gateway
from ._models import JobState, Resolution, Status
from ._scheduler import PollPolicy, PollScheduler

#: The shortest sleep of the loop: sleeping to exact sub-millisecond due times
#: spins the CPU (measured: 61% of an idle core under uvloop with no floor, 3% with
#: a 1 ms one); 5 ms keeps a margin over that and delays no check noticeably.
MIN_SLEEP = 0.005

#: While checkers run, they hand out what falls due as each of their checks ends,
#: and the loop only passes this often (seconds): for a check due while every checker
#: is held up by a slow request, and for timeouts. Waking the loop for each job
#: instead cost more than a status check's own bookkeeping when jobs end fast.
BUSY_PASS = 0.05

#: Checker tasks at most (more when the client has more connections): due checks wait
#: in a queue for one, instead of a task each (a task costs more than the check's own
#: bookkeeping, and memory per job when thousands fall due at once).
MIN_CHECKERS = 64

#: A waiter's callback receives the job's request_id and the COMPLETED/FAILED/ERROR
#: state, or the error that ended the wait (a timeout, a key rejected, an unknown id).
#: The id comes with it so that one callback can serve every job of a fan-out (a
#: closure per job would cost ~300 bytes per job in flight).
Callback = Callable[[str, Resolution], None]


class StatusCoalescer(Protocol):
    """Shares status reads with other processes waiting on the same jobs (`_checks`)."""

    async def status(
        self, request_id: str, call: Callable[[str], Awaitable[JobState]], *, max_age: float
    ) -> JobState:
        """The job's state: an answer another process read less than `max_age` s ago
        (any age if terminal), or else what `call(request_id)` returns (then shared).
        `call`'s errors propagate unchanged."""
        ...


class Poller:
    """Coalesced status checks for every job a client waits on."""

    def __init__(
        self,
        gateway: Gateway,
        policy: PollPolicy,
        *,
        on_terminal: Callable[[JobState], None],
        on_state: Callable[[JobState], None] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.scheduler = PollScheduler(policy, rng=rng)
        self._gateway = gateway
        self._on_terminal = on_terminal
        self._on_state = on_state  # every state fed, before `on_terminal` (progress events)
        # token -> callback, and the timeout of the waits that have one (a tuple per wait
        # would cost 64 bytes per job in flight; the scheduler knows each token's id).
        self._waiters: dict[int, Callback] = {}
        self._timeouts: dict[int, float] = {}
        self._wakeup = anyio.Event()
        self._sleeping_until = math.inf
        self._due: deque[str] = deque()  # handed out by the scheduler, not yet on the wire
        self._checkers = 0
        self._starting = 0  # checkers started that have not taken a check yet
        self._tasks: anyio.abc.TaskGroup | None = None  # where checkers start (`run`'s)
        self._max_checkers = max(MIN_CHECKERS, int(gateway.limiter.total_tokens))
        self._coalescer: StatusCoalescer | None = None
        self._fresh_for = policy.min_interval  # a shared answer younger than this will do

    def coalesce_with(self, coalescer: StatusCoalescer) -> None:
        """Read every status through `coalescer`, shared with the other processes."""
        self._coalescer = coalescer

    def watch(
        self,
        request_id: str,
        callback: Callback,
        *,
        timeout: float | None = None,
        submitted_at: float | None = None,
        safety_net: bool = False,
        megapixels: float | None = None,
        adopted: bool = False,
    ) -> int:
        """Call `callback` once, when `request_id` finishes or the wait ends; return a token.

        With `safety_net`, the job reports by webhook and is checked only
        rarely, to catch a lost callback. `megapixels`, the input's size when
        known, lets a latency target be met with fewer checks. An `adopted`
        job was submitted elsewhere, at an unknown moment: it is checked at once.

        Raises:
            ValueError: `megapixels` is not a finite number > 0.
        """
        now = anyio.current_time()
        deadline = None if timeout is None else now + timeout
        token = self.scheduler.add_waiter(
            request_id,
            now=now,
            deadline=deadline,
            submitted_at=submitted_at,
            safety_net=safety_net,
            megapixels=megapixels,
            adopted=adopted,
        )
        self._waiters[token] = callback
        if timeout is not None:
            self._timeouts[token] = timeout
        self._wake_if_sooner(now)
        return token

    def unwatch(self, token: int) -> None:
        """Forget a waiter that left (its callback will not be called)."""
        self._timeouts.pop(token, None)
        if self._waiters.pop(token, None) is not None:
            self.scheduler.remove_waiter(token)

    def unwatch_callback(self, request_id: str, callback: Callback) -> None:
        """Forget the waits on `request_id` made with `callback` (a caller that keeps
        no token per job)."""
        for token in self.scheduler.tokens_of(request_id):
            if self._waiters.get(token) == callback:
                self.unwatch(token)

    def observe(self, state: JobState) -> None:
        """Feed a state learned elsewhere: a webhook, or a status call made by the user."""
        now = anyio.current_time()
        self._feed(state, now)
        # It may have planned the next check of an id whose own check was out.
        self._wake_if_sooner(now)

    def fail_all(self, make_error: Callable[[str], BaseException]) -> None:
        """End every wait now: each callback gets `make_error(its request_id)`."""
        waiters, self._waiters = self._waiters, {}
        for token, callback in waiters.items():
            request_id = self.scheduler.request_id_of(token)
            if request_id is None:
                # The scheduler already handed it out (an answer or a timeout is being
                # delivered right now, by the loop that called this): that loop resolves it.
                self._waiters[token] = callback
                continue
            self._timeouts.pop(token, None)
            self.scheduler.remove_waiter(token)
            callback(request_id, make_error(request_id))

    def expect_finish(self, request_id: str) -> None:
        """A terminal callback for `request_id` was not yet confirmed by a status check.

        The gateway can lag its own callback: the job is re-checked soon, at a
        short bounded backoff, instead of at the safety net's interval.
        """
        now = anyio.current_time()
        self.scheduler.expect_finish(request_id, now=now)
        self._wake_if_sooner(now)

    def tracks(self, request_id: str) -> bool:
        """Whether someone here waits on `request_id`."""
        return self.scheduler.is_tracked(request_id)

    async def run(self, task_group: anyio.abc.TaskGroup) -> None:
        """The loop; runs until cancelled (when the client closes)."""
        self._tasks = task_group
        scheduler = self.scheduler
        while True:
            now = anyio.current_time()
            self._dispatch(now)
            wake_at = scheduler.next_wakeup(now)
            if self._checkers:
                busy = now + BUSY_PASS
                wake_at = busy if wake_at is None else min(wake_at, busy)
            self._sleeping_until = math.inf if wake_at is None else max(wake_at, now + MIN_SLEEP)
            self._wakeup = anyio.Event()
            with anyio.move_on_after(self._sleeping_until - now):
                await self._wakeup.wait()
            # A wake-up by `watch` can come sooner than the floor; keep the floor (and
            # skip the extra trip through the event loop once it has passed).
            floor = now + MIN_SLEEP - anyio.current_time()
            if floor > 0:
                await anyio.sleep(floor)

    def _dispatch(self, now: float, *, taking: int = 0) -> None:
        """End the waits past their deadline; queue the checks due, with checkers for them.

        A check queued gets a checker of its own (up to the most allowed) unless one
        started, or the `taking` caller, is about to take it: checks do not wait
        behind a check held up by a slow request.
        """
        scheduler = self.scheduler
        for token, request_id in scheduler.expired(now):
            timeout = self._timeouts[token]
            self._resolve(token, request_id, JobTimeoutError(request_id, timeout))
        due = self._due
        due.extend(scheduler.due(now))
        tasks = self._tasks
        while (
            tasks is not None
            and len(due) > self._starting + taking
            and self._checkers < self._max_checkers
        ):
            self._checkers += 1
            self._starting += 1
            tasks.start_soon(self._checker)

    async def _checker(self) -> None:
        """Make the queued checks, one after another, then what fell due meanwhile, until
        nothing is due: under load, checks go out without a trip through the loop."""
        self._starting -= 1
        due = self._due
        try:
            while True:
                if not due:
                    self._dispatch(anyio.current_time(), taking=1)
                    if not due:
                        return
                await self._check(due.popleft())
        finally:
            self._checkers -= 1
            if not self._checkers:  # the loop plans the next check again
                self._wake_if_sooner(anyio.current_time())

    async def _check(self, request_id: str) -> None:
        scheduler = self.scheduler
        try:
            state = await self._status(request_id)
        except RateLimitError:
            # The gateway says how many checks it allows: halve the budget (AIMD).
            now = anyio.current_time()
            scheduler.on_rate_limited(now)
            scheduler.pause_until(self._gateway.cooldown.until)
            scheduler.on_check_failed(request_id, now=now)
        except (APIConnectionError, ServerError):
            # Transient: the scheduler looks again after its backoff gap.
            now = anyio.current_time()
            scheduler.on_check_failed(request_id, now=now)
        except APIError as exc:
            # 401/403/404 or a malformed answer: repeating will not help. The error
            # names the request_id, so the paid job still reaches the caller.
            now = anyio.current_time()
            for token in scheduler.forget(request_id):
                self._resolve(token, request_id, exc)
        else:
            self._feed(state, anyio.current_time())

    async def _status(self, request_id: str) -> JobState:
        if self._coalescer is None:
            return await self._call(request_id)
        return await self._coalescer.status(request_id, self._call, max_age=self._fresh_for)

    async def _call(self, request_id: str) -> JobState:
        return await self._gateway.status(request_id, retry=False)

    def _feed(self, state: JobState, now: float) -> None:
        terminal = state.status.is_terminal
        tokens = self.scheduler.on_state(
            state.request_id,
            terminal=terminal,
            now=now,
            duration=_run_time(state),
            queued=_queued(state),
            queue_wait=_queue_wait(state),
        )
        if self._on_state is not None:
            self._on_state(state)
        if terminal:
            self._on_terminal(state)
        for token in tokens:
            self._resolve(token, state.request_id, state)

    def _resolve(self, token: int, request_id: str, resolution: Resolution) -> None:
        self._timeouts.pop(token, None)
        callback = self._waiters.pop(token, None)
        if callback is not None:
            callback(request_id, resolution)

    def _wake_if_sooner(self, now: float) -> None:
        if self._checkers:
            return  # a checker hands out what falls due when its check ends (`_checker`)
        wake_at = self.scheduler.next_wakeup(now)
        if wake_at is not None and wake_at < self._sleeping_until:
            self._wakeup.set()


def _run_time(state: JobState) -> float | None:
    """The job's run time by the gateway's own clock, when its timestamps tell it."""
    end = state.completed_at or state.updated_at
    if not state.status.is_terminal or state.created_at is None or end is None:
        return None
    seconds = (end - state.created_at).total_seconds()
    return seconds if seconds >= 0 else None


def _queued(state: JobState) -> bool | None:
    """True when QUEUED, False when PROCESSING, None for a terminal state."""
    if state.status is Status.QUEUED:
        return True
    return False if state.status is Status.PROCESSING else None


def _queue_wait(state: JobState) -> float | None:
    """How long a PROCESSING job waited in the queue, by the gateway's own clock.

    `updated_at` of a PROCESSING answer is when processing started.
    """
    if state.status is not Status.PROCESSING or state.created_at is None:
        return None
    if state.updated_at is None:
        return None
    seconds = (state.updated_at - state.created_at).total_seconds()
    return seconds if seconds >= 0 else None
