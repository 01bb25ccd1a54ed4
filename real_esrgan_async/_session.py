"""The session: everything that exists only while a client is open, behind named methods.

`AsyncRealESRGAN.__aenter__` builds one `Session`; the client's methods, the
fan-out (`_fanout`) and the webhook receiver (`_webhooks`) talk to it, never to
each other's private state. It holds:

- the gateway shell (`Gateway`: requests, retries, the 429 cooldown),
- the poller (`Poller`: one loop of coalesced status checks),
- the client's task group (the poller, status confirmations, fan-out feeders),
- the webhook settings (`WebhookSettings`),
- the client's `Ledger` (what was paid for; it outlives the session, so that
  ``stats()`` and ``unfinished_request_ids`` still answer after closing).

Closing ends everything that waits, at once: each fan-out run is told first
(it raises `JobsUnfinishedError` after what it already has), then every other
wait ends with a `JobsUnfinishedError` naming its job. Paid ids stay in the
ledger.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from ._exceptions import AmbiguousSubmitError, APIError, InvalidRequestError, JobsUnfinishedError
from ._gateway import Gateway
from ._ledger import Ledger
from ._models import Job, JobState, UpscaleRequest
from ._poller import Callback, Poller
from ._preflight import Preflight
from ._scheduler import PollPolicy
from ._webhook_urls import url_with_token

logger = logging.getLogger("real_esrgan_async")

#: Terminal states remembered for ids nobody waited on when they were seen, so that
#: a wait that starts a moment later (a callback that beat the submit's answer,
#: a wait on a job another wait just saw finish) resolves at once, without a call.
RECENT_TERMINAL = 1024
#: Status calls that callbacks may cost one job, in all: a flood of forged terminal
#: callbacks with the right token costs no more (the safety net still checks it).
MAX_CONFIRMATIONS_PER_JOB = 8
#: Callbacks about ids not known yet, kept until the submit that creates the id
#: returns (the gateway may call back before its 202 is read). Bounded: a flood of
#: callbacks with the right token but made-up ids costs memory, never calls.
EARLY_CALLBACKS = 256
#: Input sizes learned by preflight, kept from the submit until the job is watched
#: (a fan-out watches at once; a `submit` whose job is never waited on here is
#: forgotten oldest first).
PREFLIGHT_SIZES = 4096
#: Shortest time, in seconds, between two signs of life (non-terminal callbacks)
#: acted on for one job, whichever worker received them; those in between are
#: dropped at no cost (``throttled``). Whoever holds the webhook token could
#: otherwise make the client replan a job's check as fast as they send.
HEARTBEAT_MIN_GAP = 0.25
#: Jobs whose last sign of life is remembered for `HEARTBEAT_MIN_GAP`.
HEARTBEAT_MEMORY = 4096


@attrs.frozen
class WebhookSettings:
    """How a client's jobs report by webhook (validated by the client).

    Attributes:
        url: The default callback URL (without the token), or None.
        mode: The default ``X-Webhook-Mode``.
        confirm: Confirm each terminal callback with one status call.
        token: The secret last path segment of callback URLs.
    """

    url: str | None
    mode: str
    confirm: bool
    token: str = attrs.field(repr=False)

    def headers(self, url: str | None, mode: str | None) -> dict[str, str]:
        """The submit's webhook headers for `url` (or the default), or none."""
        url = url if url is not None else self.url
        if url is None:
            return {}
        return {
            "X-Webhook-URL": url_with_token(url, self.token),
            "X-Webhook-Mode": mode or self.mode,
        }


class Session:
    """What exists while a client is open; see the module docstring."""

    def __init__(
        self,
        *,
        gateway: Gateway,
        poll_policy: PollPolicy,
        ledger: Ledger,
        webhooks: WebhookSettings,
        preflight: Preflight | None = None,
    ) -> None:
        self.gateway = gateway
        self.preflight = preflight
        self._sizes: OrderedDict[str, float] = OrderedDict()  # request_id -> megapixels
        self.poller = Poller(
            gateway, poll_policy, on_terminal=self.saw_terminal, on_state=ledger.record_state
        )
        self.ledger = ledger
        self.webhooks = webhooks
        self._tasks: anyio.abc.TaskGroup | None = None
        self._scope = anyio.CancelScope()
        self._work_done = anyio.Event()
        self._closed = False
        self._close_listeners: dict[int, Callable[[str], None]] = {}
        self._next_listener = 0
        self._recent: OrderedDict[str, JobState] = OrderedDict()
        self._late: dict[str, Callable[[JobState], None]] = {}
        self._early: OrderedDict[str, tuple[JobState, MutableMapping[str, int]]] = OrderedDict()
        # request_id -> when its last sign of life was acted on (oldest first).
        self._heartbeats: OrderedDict[str, float] = OrderedDict()
        self._confirming: set[str] = set()  # a confirmation is on the wire
        self._confirmations: dict[str, int] = {}  # request_id -> calls spent, while unfinished
        self._posts_on_the_wire = 0
        self._no_post_on_the_wire = anyio.Event()
        self._no_post_on_the_wire.set()
        #: Called with each callback about a job not known here: a fleet relays it to
        #: the worker that waits on it (`_keyed.Keys.relay_callbacks`).
        self.forward_callback: Callable[[JobState], None] | None = None

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start the session's work (the poller, later confirmations and feeders).

        It runs in a task group of its own, hosted by one task of `task_group`
        (the client's), so that closing cancels that work only: never the task
        that opened the client, whichever task closes it.
        """
        await task_group.start(self._host)

    async def _host(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            with self._scope:
                async with anyio.create_task_group() as tasks:
                    self._tasks = tasks
                    tasks.start_soon(self.poller.run, tasks)
                    task_status.started()
                    await anyio.sleep_forever()
        finally:
            self._work_done.set()

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closed

    # Jobs ----------------------------------------------------------------------------

    async def submit(
        self,
        request: UpscaleRequest,
        headers: dict[str, str],
        *,
        on_created: Callable[[Job], None] | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Job:
        """POST one paid job, keeping the books.

        `on_created` runs with the job before any checkpoint, then the ledger
        records it, whatever `on_created` does: the paid id is never dropped.
        `before_send` is awaited right before the POST goes on the wire.

        With preflight on, the input's header is read from its host first.

        Raises:
            InvalidRequestError: Preflight found the input over the model's pixel
                limit or not a decodable image; nothing was sent to the gateway.
            AmbiguousSubmitError: Sent, but whether a job exists is unknown.
            APIStatusError, APIConnectionError: Refused or unreachable; nothing paid.
        """
        # A submit task of the session's own that starts after `close` ends here, before
        # it could use connections that are being closed.
        await anyio.lowlevel.checkpoint_if_cancelled()
        webhook = "X-Webhook-URL" in headers
        megapixels = None
        if self.preflight is not None:
            megapixels = await self.preflight.check(request.image)

        def created(job: Job) -> None:
            if megapixels is not None:
                self._sizes[job.request_id] = megapixels
                while len(self._sizes) > PREFLIGHT_SIZES:
                    self._sizes.popitem(last=False)
            try:
                if on_created is not None:
                    on_created(job)
            finally:
                self.ledger.record_submitted(job.request_id, webhook=webhook)
                self._apply_early_callback(job.request_id)

        if self._posts_on_the_wire == 0:  # (an event per quiet spell, not per POST)
            self._no_post_on_the_wire = anyio.Event()
        self._posts_on_the_wire += 1
        try:
            return await self.gateway.submit(
                request, extra_headers=headers, on_created=created, before_send=before_send
            )
        except AmbiguousSubmitError:
            self.ledger.record_ambiguous()
            raise
        finally:
            self._posts_on_the_wire -= 1
            if self._posts_on_the_wire == 0:
                self._no_post_on_the_wire.set()

    async def status(self, request_id: str, *, url: str | None = None) -> JobState:
        """One status GET (retried on transient failures); its answer feeds the poller."""
        state = await self.gateway.status(request_id, url=url)
        self.observe(state)
        return state

    def watch(
        self,
        request_id: str,
        callback: Callback,
        *,
        timeout: float | None = None,
        megapixels: float | None = None,
    ) -> int:
        """Call `callback(request_id, end)` once, when `request_id` finishes or its wait
        ends; return a token.

        A job that reports by webhook is checked only by the slow safety net.
        A job seen finished a moment ago resolves at once. `megapixels`, the
        input's size, is by default what preflight learned at its submit. A job
        this session neither submitted nor saw (another worker's, an earlier
        run's, an id the caller kept) may be long finished: it is checked at once.
        """
        if self._closed:
            raise RuntimeError("this AsyncRealESRGAN is closed; create a new client")
        recent = self._recent.get(request_id)
        adopted = recent is None and not self.ledger.was_seen(request_id)
        if recent is None:
            self.ledger.adopt(request_id)  # (a job seen finished is not owed again)
        token = self.poller.watch(
            request_id,
            callback,
            timeout=timeout,
            safety_net=self.ledger.reports_by_webhook(request_id),
            megapixels=self._sizes.pop(request_id, None) if megapixels is None else megapixels,
            adopted=adopted,
        )
        if recent is not None:
            self.poller.observe(recent)
        return token

    def unwatch(self, token: int) -> None:
        """Forget a wait that left (its callback will not be called)."""
        self.poller.unwatch(token)

    def unwatch_callback(self, request_id: str, callback: Callback) -> None:
        """Forget the waits on `request_id` made with `callback` (its callback will not be
        called for them): for a caller that serves many jobs with one callback."""
        self.poller.unwatch_callback(request_id, callback)

    def observe(self, state: JobState) -> None:
        """Feed a state learned elsewhere (a status call the user made, a callback)."""
        self.poller.observe(state)

    def saw_terminal(self, state: JobState) -> None:
        """The poller saw a job finish: keep the books and remember it for late waits."""
        self.ledger.record_terminal(state)
        self._confirmations.pop(state.request_id, None)
        self._recent[state.request_id] = state
        self._recent.move_to_end(state.request_id)
        while len(self._recent) > RECENT_TERMINAL:
            self._recent.popitem(last=False)
        late = self._late.pop(state.request_id, None)
        if late is not None:
            late(state)

    def when_seen_finished(self, request_id: str, callback: Callable[[JobState], None]) -> None:
        """Call `callback` if `request_id` is seen finished without anyone waiting on it.

        For a fan-out that stopped waiting on its jobs: a check already on the
        wire, or a callback, may still bring a job's end, which must not be dropped.
        """
        self._late[request_id] = callback

    def is_ours(self, request_id: str) -> bool:
        """Whether someone here waits on `request_id`, or it is a job of ours not seen finished."""
        return self.poller.tracks(request_id) or self.ledger.is_unfinished(request_id)

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, None]], *args: object) -> None:
        """Run `func(*args)` in the session's task group (it must never raise)."""
        assert self._tasks is not None, "the session was not started"
        self._tasks.start_soon(func, *args)

    # Callbacks -----------------------------------------------------------------------

    def accept_callback(self, state: JobState, counts: MutableMapping[str, int]) -> None:
        """Act on a callback already answered; `counts` is the receiver's tally.

        About an id unknown here: kept a while (its submit may not have returned
        yet) at no cost. Non-terminal: a sign of life. Terminal: confirmed by one
        status call (duplicates coalesced) unless confirmation is off.
        """
        request_id = state.request_id
        if not self.is_ours(request_id):
            # Another process's job, a finished one, a forgery, or one whose submit has
            # not returned yet: no call is spent on it.
            counts["ignored"] += 1
            if self.forward_callback is not None:
                self.forward_callback(state)
            if state.status.is_terminal and request_id not in self._recent:
                self._early[request_id] = (state, counts)
                while len(self._early) > EARLY_CALLBACKS:
                    self._early.popitem(last=False)
            return
        if not state.status.is_terminal and self._too_soon(request_id):
            counts["throttled"] += 1
            return
        self.ledger.record_callback(request_id)  # (a check that finds it finished says so)
        if not state.status.is_terminal or not self.webhooks.confirm:
            self.observe(state)
            return
        if request_id in self._confirming:
            counts["coalesced"] += 1
            return
        if self._confirmations.get(request_id, 0) >= MAX_CONFIRMATIONS_PER_JOB:
            counts["coalesced"] += 1
            return  # enough spent on this job's callbacks: its checks find it
        self._confirming.add(request_id)
        self.start_soon(self._confirm, request_id, counts)

    def _too_soon(self, request_id: str) -> bool:
        """Whether a sign of life for `request_id` came within `HEARTBEAT_MIN_GAP` of the last."""
        now = anyio.current_time()
        last = self._heartbeats.get(request_id)
        if last is not None and now - last < HEARTBEAT_MIN_GAP:
            return True
        self._heartbeats[request_id] = now
        self._heartbeats.move_to_end(request_id)
        while len(self._heartbeats) > HEARTBEAT_MEMORY:
            self._heartbeats.popitem(last=False)
        return False

    def _apply_early_callback(self, request_id: str) -> None:
        early = self._early.pop(request_id, None)
        if early is not None:
            state, counts = early
            counts["ignored"] -= 1  # it was about our job after all
            self.accept_callback(state, counts)

    async def _confirm(self, request_id: str, counts: MutableMapping[str, int]) -> None:
        spent = self._confirmations.get(request_id, 0)
        self._confirmations[request_id] = spent + 1
        counts["confirmations"] += 1
        try:
            state = await self.gateway.status(request_id)
        except (APIError, InvalidRequestError) as exc:
            # Never raised into the session's task group: the safety net looks again.
            logger.warning("could not confirm the callback about %s: %s", request_id, exc)
            return
        finally:
            self._confirming.discard(request_id)
        self.observe(state)
        if not state.status.is_terminal:
            counts["unconfirmed"] += 1
            logger.warning(
                "a callback said %s had finished; the gateway says %s (a forgery?) "
                "or the gateway lags its own callback: checking again soon",
                request_id,
                state.status.value,
            )
            # The scheduler looks again at a short, bounded backoff (coalesced with the
            # job's other checks), not at the safety net's interval.
            self.poller.expect_finish(request_id)

    # Lifecycle -----------------------------------------------------------------------

    def on_close(self, listener: Callable[[str], None]) -> int:
        """Call `listener(reason)` when the session closes; return a handle."""
        handle = self._next_listener
        self._next_listener += 1
        self._close_listeners[handle] = listener
        return handle

    def remove_close_listener(self, handle: int) -> None:
        """Forget a listener (idempotent)."""
        self._close_listeners.pop(handle, None)

    def close(self, reason: str) -> None:
        """End every wait at once and stop the task group's work; idempotent.

        Fan-out runs are told first, then every remaining wait ends with a
        `JobsUnfinishedError` naming its job.
        """
        if self._closed:
            return
        self._closed = True
        listeners, self._close_listeners = list(self._close_listeners.values()), {}
        for listener in listeners:
            listener(reason)
        self.poller.fail_all(lambda request_id: JobsUnfinishedError((request_id,), reason))
        self._scope.cancel()

    async def wait_closed(self) -> None:
        """After `close`: return once the session's work has ended and no paid POST is
        on the wire (a POST is shielded from cancellation: its id must be kept)."""
        if self._tasks is not None:
            await self._work_done.wait()
        await self._no_post_on_the_wire.wait()
        if self.preflight is not None:
            await self.preflight.aclose()
