"""Webhook callbacks: one background loop over a heap of due deliveries.

A job with a webhook costs one heap entry, not a task: the loop sleeps until the earliest due
delivery (or until a new one is pushed), then starts a short-lived task per POST so that a slow
receiver never delays other callbacks. Kinds of delivery:

- ``terminal``: at the job's terminal instant (known once its input is processed);
- ``cycle``: sync mode only, one per poll cycle of the provider's queue (delays 1, 2, 4, 8, then
  15 model seconds), while the job is not terminal;
- ``retry``: a failed POST again, after ``webhook_retry_delay`` doubled per attempt;
- ``duplicate``: an already delivered callback again (injected fault).

Callbacks go to loopback hosts only unless ``allow_remote_hosts`` is set, redirects included
(each hop is checked before it is followed, see ``_hosts``); a refused callback is counted in
``webhooks_refused`` and not retried, since no retry could reach it.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import time
from collections.abc import Callable
from typing import Literal, Protocol

import anyio
import attrs
import httpx
from anyio.abc import TaskGroup

from ._config import EmulatorConfig
from ._hosts import RefusedHostError, open_checked
from ._timing import sync_poll_delay

__all__ = ["Payload", "PayloadSource", "WebhookCounter", "WebhookDispatcher", "encode_body"]

Kind = Literal["terminal", "cycle", "retry", "duplicate"]
WebhookCounter = Literal[
    "webhooks_delivered",
    "webhooks_failed",
    "webhooks_duplicated",
    "webhooks_lost",
    "webhooks_abandoned",
    "webhooks_refused",
]

# Sync cycles are never closer than this in real time, so a tiny time_scale with a slow input
# download cannot turn into a flood of callbacks.
MIN_CYCLE_DELAY = 0.005
DUPLICATE_DELAY = (0.01, 0.1)
MAX_CONCURRENT_POSTS = 32


@attrs.frozen
class Payload:
    """What to POST for a job at some instant."""

    url: str
    body: bytes
    terminal: bool


class PayloadSource(Protocol):
    """What the dispatcher needs from the emulator (each call takes the emulator's lock)."""

    def webhook_payload(self, request_id: str, at: float) -> Payload | None:
        """The callback of ``request_id`` describing instant ``at``; None if the job is gone."""
        ...

    def roll(self, probability: float) -> bool:
        """Draw a fault with the emulator's seeded generator."""
        ...

    def uniform(self, low: float, high: float) -> float:
        """Draw a delay with the emulator's seeded generator."""
        ...

    def count(self, counter: WebhookCounter) -> None:
        """Increment one of the ``webhooks_*`` counters."""
        ...


@attrs.frozen
class _Delivery:
    request_id: str
    kind: Kind
    cycle: int = 0
    attempt: int = 1
    payload: Payload | None = None


class WebhookDispatcher:
    """Schedules and sends the callbacks of one served emulator.

    Args:
        config: The emulator's knobs.
        source: Builds the bodies and keeps the counters.
        client: The HTTP client that POSTs.
        clock: Monotonic clock, the one the jobs' instants are on.
    """

    def __init__(
        self,
        config: EmulatorConfig,
        source: PayloadSource,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._source = source
        self._client = client
        self._clock = clock
        self._heap: list[tuple[float, int, _Delivery]] = []
        self._seq = itertools.count()
        self._wake: anyio.Event | None = None
        self._limiter = anyio.CapacityLimiter(MAX_CONCURRENT_POSTS)

    def _push(self, due: float, delivery: _Delivery) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), delivery))
        if self._wake is not None:
            self._wake.set()

    def schedule_terminal(self, request_id: str, end_at: float) -> None:
        """Deliver the terminal callback of ``request_id`` at ``end_at``."""
        self._push(end_at, _Delivery(request_id, "terminal"))

    def schedule_cycles(self, request_id: str, created_at: float) -> None:
        """Start the sync-mode poll cycles of a job created at ``created_at``."""
        delay = self._cycle_delay(0)
        if delay is not None:
            self._push(created_at + delay, _Delivery(request_id, "cycle"))

    def _cycle_delay(self, cycle: int) -> float | None:
        if self._config.time_scale == 0:
            # Every job is over before its first poll cycle: only the terminal callback is sent.
            return None
        return max(MIN_CYCLE_DELAY, sync_poll_delay(cycle) * self._config.time_scale)

    async def run(self, task_group: TaskGroup) -> None:
        """Deliver callbacks as they fall due, until cancelled."""
        while True:
            self._wake = anyio.Event()
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                due, _, delivery = heapq.heappop(self._heap)
                task_group.start_soon(self._fire, due, delivery)
            timeout = self._heap[0][0] - now if self._heap else math.inf
            with anyio.move_on_after(timeout):
                await self._wake.wait()

    async def _fire(self, due: float, delivery: _Delivery) -> None:
        if delivery.payload is not None:
            await self._attempt(delivery)
            return
        payload = self._source.webhook_payload(delivery.request_id, due)
        if payload is None:
            return
        if delivery.kind == "cycle":
            if payload.terminal:
                return  # the terminal delivery reports this status
            delay = self._cycle_delay(delivery.cycle + 1)
            if delay is not None:
                next_cycle = attrs.evolve(delivery, cycle=delivery.cycle + 1)
                self._push(due + delay, next_cycle)
        if self._source.roll(self._config.webhook_loss_rate):
            self._source.count("webhooks_lost")
            return
        await self._attempt(attrs.evolve(delivery, payload=payload))

    async def _attempt(self, delivery: _Delivery) -> None:
        assert delivery.payload is not None
        delivered = await self._post(delivery.payload)
        if delivered is None:
            self._source.count("webhooks_refused")
            return
        if delivered:
            self._source.count("webhooks_delivered")
            if delivery.kind != "duplicate" and self._source.roll(
                self._config.webhook_duplicate_rate
            ):
                self._source.count("webhooks_duplicated")
                delay = self._source.uniform(*DUPLICATE_DELAY)
                self._push(self._clock() + delay, attrs.evolve(delivery, kind="duplicate"))
            return
        self._source.count("webhooks_failed")
        if delivery.kind == "duplicate":
            return  # the original was delivered; a lost duplicate is nobody's loss
        if delivery.attempt >= self._config.webhook_max_attempts:
            self._source.count("webhooks_abandoned")
            return
        delay = self._config.webhook_retry_delay * 2 ** (delivery.attempt - 1)
        retry = attrs.evolve(delivery, kind="retry", attempt=delivery.attempt + 1)
        self._push(self._clock() + delay, retry)

    async def _post(self, payload: Payload) -> bool | None:
        """POST one callback: True if answered 2xx, False if it failed, None if refused."""
        request = self._client.build_request(
            "POST",
            payload.url,
            content=payload.body,
            headers={"Content-Type": "application/json"},
            timeout=self._config.webhook_timeout,
        )
        async with self._limiter:
            try:
                response = await open_checked(
                    self._client, request, allow_remote_hosts=self._config.allow_remote_hosts
                )
            except RefusedHostError:
                return None
            except httpx.HTTPError:
                return False
            await response.aclose()
        return response.is_success


def encode_body(body: object) -> bytes:
    """A callback body, serialised as the gateway serialises its responses."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
