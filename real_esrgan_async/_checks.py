"""Status checks shared by the fleet: the shell over a `Store`'s per-job claim to check.

When several processes wait on one job (duplicate items under one idempotency
key), the first whose check comes due claims the job's check in the store,
makes the status call and relays the answer there; the others use that answer
instead of calling, if it is fresh enough for them (`_keys.answer_is_fresh`),
or wait briefly while the claimant's call is on the wire (`_keys.look_again_in`)
and take the answer it brings, read after their own check came due.
The claim lapses on its own (`_keys.CHECK_LEASE`), so a dead checker never
blocks the others for long.

A failing store never loses or stalls a job: the check is made against the
gateway directly, and the store is left alone for `STORE_RETRY` seconds before
it is tried again. Store calls run in worker threads, as every `Store` call does.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import anyio
import anyio.to_thread

from ._exceptions import RealESRGANError, StoreError
from ._keys import CHECK_LEASE, CheckStep, look_again_in
from ._models import JobState
from ._poller import Poller
from ._store import Store

logger = logging.getLogger("real_esrgan_async")
T = TypeVar("T")

#: After a store failure, checks go straight to the gateway for this long (seconds).
STORE_RETRY = 5.0


class SharedChecks:
    """A `StatusCoalescer` over a `Store`; see the module docstring.

    Attributes:
        counts: ``called`` (status calls made here), ``shared`` (answers used
            instead of a call), ``waited`` (checks that waited for another
            worker's call), ``store_failed`` (checks the store could not help).
    """

    def __init__(
        self,
        store: Store,
        *,
        lease: float = CHECK_LEASE,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.store = store
        self.lease = lease
        self.owner = secrets.token_hex(12)
        self.counts: collections.Counter[str] = collections.Counter()
        self._clock = clock
        self._store_down_until = -math.inf

    async def status(
        self, request_id: str, call: Callable[[str], Awaitable[JobState]], *, max_age: float
    ) -> JobState:
        """See `_poller.StatusCoalescer.status`."""
        step, answer = await self._claim(request_id, max_age)
        start, looks = self._clock(), 0
        while step is CheckStep.WAIT:
            delay = look_again_in(looks, self._clock() - start, lease=self.lease)
            if delay is None:
                step = None  # waited a whole lease: call, unclaimed
                break
            if looks == 0:
                self.counts["waited"] += 1
            await anyio.sleep(delay)
            looks += 1
            # An answer read while this worker waited is newer than the moment its check
            # came due: it serves, however long the claimant's call took.
            step, answer = await self._claim(request_id, max_age + self._clock() - start)
        if step is CheckStep.SHARE and answer is not None:
            try:
                state = JobState.from_json(json.loads(answer))
            except (ValueError, RealESRGANError):
                step = None  # unreadable (another version?): call, unclaimed
            else:
                if state.request_id == request_id:
                    self.counts["shared"] += 1
                    return state
                step = None
        claimed = step is CheckStep.CALL
        self.counts["called"] += 1
        try:
            state = await call(request_id)
        except Exception:
            # A cancelled call leaves its claim to lapse: closing never waits on the store.
            if claimed:
                await self._store(self.store.release_check, request_id, self.owner)
            raise
        if claimed:
            text = json.dumps(state.to_json(), separators=(",", ":"))
            await self._store(
                partial(self.store.share_check, terminal=state.status.is_terminal),
                request_id,
                self.owner,
                text,
            )
        return state

    async def _claim(self, request_id: str, max_age: float) -> tuple[CheckStep | None, str | None]:
        """The store's step, or (None, None) when it failed: call, unclaimed."""
        found = await self._store(
            self.store.claim_check, request_id, self.owner, max_age, self.lease
        )
        return (None, None) if found is None else found

    async def _store(self, func: Callable[..., T], *args: object) -> T | None:
        """`func(*args)` in a worker thread; None if the store is failing."""
        if self._clock() < self._store_down_until:
            self.counts["store_failed"] += 1
            return None
        try:
            return await anyio.to_thread.run_sync(partial(func, *args))
        except StoreError as exc:
            self.counts["store_failed"] += 1
            self._store_down_until = self._clock() + STORE_RETRY
            logger.warning(
                "status checks are not shared for %g s: the store failed: %s", STORE_RETRY, exc
            )
            return None


def share_checks(poller: Poller, store: Store) -> None:
    """Make `poller` share its status reads through `store`, unless the store says not to."""
    if store.coalesce_checks:
        poller.coalesce_with(SharedChecks(store))
