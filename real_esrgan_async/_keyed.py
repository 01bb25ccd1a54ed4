"""The shell of keyed idempotency: a `Store` driven by the pure rules of `_keys`.

`Keys` is what a client holds when it was given a ``store``. For a keyed
submit it claims the key (one atomic write), POSTs only if the claim won, and
records the id the moment the POST returns; a caller that lost the claim waits
on the recorded id, gets the recorded result, or gets `AmbiguousSubmitError`.
Store calls run in worker threads (`anyio.to_thread`), on asyncio and trio.

When the store fails, keyed submits stop (`StoreError`) rather than risk a
second payment; an id already returned by the gateway is still handed to its
caller even if it could not be recorded (its key then turns AMBIGUOUS for
everyone else once its lease lapses).
"""

from __future__ import annotations

import collections
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol, TypeVar, runtime_checkable

import anyio
import anyio.to_thread
import attrs

from ._exceptions import (
    AmbiguousSubmitError,
    OutputExpiredError,
    RealESRGANError,
    StoreError,
)
from ._journal import JournalState
from ._keys import KeyRecord, Step, decide
from ._local_images import redact
from ._models import Job, JobState, Status, UpscaleRequest
from ._session import Session
from ._store import Store

logger = logging.getLogger("real_esrgan_async")
T = TypeVar("T")

#: How often a caller looks again at a key another process is POSTing (seconds, growing).
PENDING_POLL = (0.02, 0.05, 0.1, 0.2, 0.5)


@runtime_checkable
class FleetLimits(Protocol):
    """A store that also holds the fleet's submit budget and 429 pause (`RedisStore`)."""

    def take_submit_token(self) -> float:
        """Take a token; return 0, or the seconds to wait before asking again."""

    def pause_fleet(self, retry_after: float) -> float:
        """Pause every worker's submits for `retry_after` seconds."""

    def publish_callback(self, text: str) -> None:
        """Relay a callback to every worker."""

    def subscribe_callbacks(self) -> Subscription:
        """Receive the callbacks relayed by every worker."""


class Subscription(Protocol):
    """Relayed callbacks, one at a time."""

    def get(self, timeout: float) -> str | None:
        """The next one, or None after `timeout` seconds."""

    def close(self) -> None:
        """Stop receiving."""


@attrs.frozen
class Keyed:
    """What a keyed submit found: the job to wait on, and its result if it already finished."""

    job: Job
    result: JobState | None = None


class Keys:
    """Keyed submits over one open `Store`; see the module docstring."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        # Renewed every third of it while the POST (with its retries and 429 pauses) runs.
        self.lease = store.lease
        self.clock = clock
        self.owner = secrets.token_hex(12)
        self._keys_of: dict[str, str] = {}  # request_id -> its idempotency key
        self._limits = store if isinstance(store, FleetLimits) else None
        self._paused_until = float("-inf")
        self._relaying = False  # a relayed callback is being handed to the session
        self.relayed: collections.Counter[str] = collections.Counter()
        self._outbox: list[str] = []
        self._outbox_ready = anyio.Event()

    async def open(self, gateway: str) -> None:
        """Open the store for `gateway` (its errors name the store)."""
        await anyio.to_thread.run_sync(self.store.open, gateway)

    async def close(self) -> None:
        """Close the store."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.store.close)

    async def _call(self, func: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(partial(func, *args))

    # Keyed submits ---------------------------------------------------------------

    async def submit(
        self,
        session: Session,
        key: str,
        request: UpscaleRequest,
        headers: dict[str, str],
        *,
        prepare: Callable[[], Awaitable[UpscaleRequest]] | None = None,
        on_created: Callable[[Job], None] | None = None,
    ) -> Keyed:
        """Submit `request` under `key`, unless the key already names a job.

        Args:
            session: The open session.
            key: The idempotency key.
            request: What the key is recorded with (and compared against).
            headers: The submit's extra headers (webhooks).
            prepare: Called only when this caller will POST, for the request
                to send instead of `request` (a local input, published first
                under `request`'s content name).
            on_created: Run with the new job before any checkpoint.

        Raises:
            AmbiguousSubmitError: The key's POST may or may not have created a job.
            OutputExpiredError: The key's job finished and its output expired.
            IdempotencyKeyMismatchError: The key was used with another request.
            StoreError: The store failed; nothing was sent.
        """
        pending = KeyRecord(key=key, request=request, state=JournalState.PENDING, owner=self.owner)
        mine = pending.dumps()
        claimed, text, leased = await self._call(
            self.store.claim, key, mine, self.owner, self.lease
        )
        delay = iter(PENDING_POLL)
        while True:
            record = KeyRecord.loads(text)
            step = decide(
                record,
                claimed=claimed and text == mine,
                request=request,
                lease_alive=leased,
                now=self.clock(),
            )
            if step is Step.POST:
                return await self._post(session, pending, headers, prepare, on_created)
            if step is Step.WAIT:
                assert record.request_id is not None
                self._keys_of[record.request_id] = key
                return Keyed(Job(record.request_id, Status.QUEUED))
            if step is Step.RESULT:
                assert record.result is not None
                return Keyed(Job(record.result.request_id, record.result.status), record.result)
            if step is Step.EXPIRED:
                assert record.finished_at is not None
                raise OutputExpiredError(key, record.request_id, self.clock() - record.finished_at)
            if step is Step.LAPSED:
                lapsed = record.ambiguous("the process that claimed the key stopped mid-POST")
                await self._call(
                    partial(self.store.swap, lapsed_only=True), key, text, lapsed.dumps()
                )
            elif step is Step.AMBIGUOUS:
                raise AmbiguousSubmitError(
                    request.image,
                    reason=f"recorded under idempotency key {key!r}: {record.error}",
                )
            else:  # WAIT_PENDING: another process is POSTing it right now
                await anyio.sleep(next(delay, PENDING_POLL[-1]))
            found, leased = await self._call(self.store.get, key)
            claimed = False
            if found is None:  # its POST provably created nothing: claim it ourselves
                claimed, text, leased = await self._call(
                    self.store.claim, key, mine, self.owner, self.lease
                )
            else:
                text = found

    async def _post(
        self,
        session: Session,
        pending: KeyRecord,
        headers: dict[str, str],
        prepare: Callable[[], Awaitable[UpscaleRequest]] | None,
        on_created: Callable[[Job], None] | None,
    ) -> Keyed:
        key, text = pending.key, pending.dumps()
        created: list[Job] = []
        sending = pending.request

        def booked(job: Job) -> None:
            created.append(job)
            if on_created is not None:
                on_created(job)

        try:
            failure: Exception | None = None
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._renew, key)  # (also while `prepare` uploads)
                try:
                    sending = pending.request if prepare is None else await prepare()
                    await self.take_submit_token()  # only a POST spends the fleet's budget
                    job = await session.submit(sending, headers, on_created=booked)
                except Exception as exc:  # noqa: BLE001 (re-raised below, outside the group)
                    # Raised here, it would leave the task group wrapped in an
                    # ExceptionGroup, and miss the AMBIGUOUS branch: the key would be
                    # freed and the next caller would pay again.
                    failure = exc
                finally:
                    tasks.cancel_scope.cancel()
            if failure is not None:
                raise failure
        except AmbiguousSubmitError as exc:
            # A published input's signed URL is a secret: the store keeps it redacted.
            reason = str(exc).replace(sending.image, redact(sending.image))
            with anyio.CancelScope(shield=True):
                await self._record(key, text, pending.ambiguous(reason).dumps())
            raise
        except BaseException:
            with anyio.CancelScope(shield=True):
                if created:  # paid: record it (and the caller learns it from the error path)
                    await self._record(key, text, pending.submitted(created[0].request_id).dumps())
                else:  # refused, unreachable, or cancelled before sending: nothing was paid
                    await self._record(key, text, None)
            raise
        with anyio.CancelScope(shield=True):
            await self._record(key, text, pending.submitted(job.request_id).dumps())
        self._keys_of[job.request_id] = key
        return Keyed(job)

    async def _renew(self, key: str) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            try:
                await self._call(self.store.renew, key, self.owner, self.lease)
            except StoreError as exc:
                logger.warning("could not renew the claim on idempotency key %r: %s", key, exc)

    async def _record(self, key: str, old: str, new: str | None) -> None:
        """Swap `old` for `new`; if the lease lapsed meanwhile, the truth still wins."""
        try:
            if await self._call(self.store.swap, key, old, new):
                return
            # The lease lapsed (a long pause) and another caller marked the key
            # AMBIGUOUS: what this process knows is better than that guess.
            found, _ = await self._call(self.store.get, key)
            if found is not None and new is not None:
                record = KeyRecord.loads(found)
                if record.owner == self.owner and record.state is JournalState.AMBIGUOUS:
                    await self._call(self.store.swap, key, found, new)
        except StoreError as exc:
            # The id still reaches the caller; the key turns AMBIGUOUS for others.
            logger.error("could not record idempotency key %r in the store: %s", key, exc)

    async def finished(self, state: JobState) -> None:
        """Record a keyed job's terminal `state` (a no-op for ids not submitted by key here)."""
        key = self._keys_of.pop(state.request_id, None)
        if key is not None:
            await self.record_end(key, state)

    async def record_end(self, key: str, state: JobState) -> None:
        """Record the terminal `state` of the job under `key` (never raises: a failure is
        logged, and the key stays SUBMITTED, so a later caller polls the job again)."""
        self._keys_of.pop(state.request_id, None)
        if not state.status.is_terminal:
            return
        with anyio.CancelScope(shield=True):
            try:
                text, _ = await self._call(self.store.get, key)
                if text is None:
                    return
                record = KeyRecord.loads(text)
                if record.state.is_finished or record.request_id != state.request_id:
                    return
                await self._call(
                    self.store.swap, key, text, record.finished(state, self.clock()).dumps()
                )
            except (StoreError, RuntimeError) as exc:  # (RuntimeError: closed meanwhile)
                logger.error("could not record the end of idempotency key %r: %s", key, exc)

    # The fleet's rate limit -------------------------------------------------------

    @property
    def limits_submits(self) -> bool:
        """Whether the store holds a fleet budget for submits."""
        return self._limits is not None

    async def take_submit_token(self) -> None:
        """Wait until the fleet's budget (and its 429 pause) lets one submit go."""
        if self._limits is None:
            return
        # The budget lives on the server: there is no local event to wait for.
        while (wait := await self._call(self._limits.take_submit_token)) > 0:  # noqa: ASYNC110
            await anyio.sleep(wait)

    async def share_cooldown(self, session: Session, interval: float = 0.05) -> None:
        """Run forever: tell the fleet of each 429 pause this process's gateway starts."""
        if self._limits is None:
            return
        cooldown = session.gateway.cooldown
        while True:
            await anyio.sleep(interval)
            if cooldown.until > self._paused_until:
                self._paused_until = cooldown.until
                remaining = cooldown.remaining(anyio.current_time())
                if remaining > 0:
                    try:
                        await self._call(self._limits.pause_fleet, remaining)
                    except StoreError as exc:
                        logger.warning("could not share a 429 pause with the fleet: %s", exc)

    # Webhook fan-in ---------------------------------------------------------------

    def relay_callbacks(self, session: Session) -> None:
        """Relay callbacks about jobs not known here to the worker that waits on them.

        Any worker's receiver may get the callback of a job another worker
        waits on; it publishes it, and the waiting worker hands it to its own
        session (which confirms it with one status call, as usual).
        """
        if self._limits is None:
            return
        session.forward_callback = self._forward
        session.start_soon(self._publish)
        session.start_soon(self._subscribe, session)

    def _forward(self, state: JobState) -> None:
        if self._relaying:
            return  # relayed here already: never sent round again
        self._outbox.append(json.dumps(state.to_json(), separators=(",", ":")))
        self._outbox_ready.set()

    async def _publish(self) -> None:
        assert self._limits is not None
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready = anyio.Event()
            batch, self._outbox = self._outbox, []
            for text in batch:
                try:
                    await self._call(self._limits.publish_callback, text)
                    self.relayed["published"] += 1
                except StoreError as exc:
                    logger.warning("could not relay a callback to the fleet: %s", exc)

    async def _subscribe(self, session: Session) -> None:
        assert self._limits is not None
        try:
            subscription = await self._call(self._limits.subscribe_callbacks)
        except StoreError as exc:
            logger.error("callbacks of other workers will not reach this one: %s", exc)
            return
        try:
            while True:
                try:
                    # Short, so that closing the client waits for no more than this.
                    text = await self._call(subscription.get, 0.1)
                except StoreError as exc:
                    logger.warning("relayed callbacks: %s", exc)
                    await anyio.sleep(1.0)
                    continue
                if text is None:
                    continue
                try:
                    state = JobState.from_json(json.loads(text))
                except (ValueError, RealESRGANError):
                    continue
                if not session.is_ours(state.request_id):
                    continue
                self.relayed["received"] += 1
                self._relaying = True
                try:
                    session.accept_callback(state, self.relayed)
                finally:
                    self._relaying = False
        finally:
            with anyio.CancelScope(shield=True):
                await self._call(subscription.close)
