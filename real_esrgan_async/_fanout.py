"""`upscale_many`: a bounded, lazy fan-out that streams one outcome per input.

How it is put together:

- A feeder task, started in the *client's* task group (never in a task group
  held across a ``yield``), pulls inputs one at a time, and only when one of
  the `max_in_flight` slots is free: a generator of a million URLs is never
  materialised.
- Each input is validated and submitted in its own short task; a submitted
  job is handed to the client's poller, which calls back when it finishes.
  No task waits per job: a waiting job costs a scheduler entry and a callback.
- Outcomes go through a memory stream to the consumer. A slot is freed only
  when the consumer takes the outcome, so the submitted-unfinished jobs plus
  the outcomes not yet consumed never exceed `max_in_flight` (and a slow
  consumer slows submission instead of growing a buffer).
- Stopping (a ``break``, a cancellation, `aclose()`) stops pulling and
  submitting at once; a paid POST already on the wire finishes and its id is
  kept. Every submitted but unfinished id stays in `unfinished_request_ids`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Self

import anyio
import anyio.abc

from ._exceptions import (
    AuthenticationError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobsUnfinishedError,
    PermissionDeniedError,
    RealESRGANError,
)
from ._models import JobState, Outcome, UpscaleRequest, check_face_enhance, check_scale
from ._poller import Resolution, unwrap

if TYPE_CHECKING:
    from ._client import AsyncRealESRGAN, ImageInput

#: Errors after which every further call would fail too: they end the run.
_FATAL = (AuthenticationError, PermissionDeniedError)


class UpscaleRun:
    """The async iterator `AsyncRealESRGAN.upscale_many` returns.

    Leaving the loop early stops submission: at once when the run was made in
    the ``async for`` line itself (the dropped run stops itself, on CPython),
    and always with ``async with client.upscale_many(...) as run:`` or
    `aclose()`, which also wait until no POST of the run is on the wire. Either
    way the ids of jobs submitted but unfinished stay in `unfinished_request_ids`
    (and in the client's). A cancelled consumer stops the run the same way.

    Raises (from the loop, after the outcomes it could yield):
        InsufficientBalanceError: The wallet ran dry (402): nothing more was
            pulled or submitted; inputs already taken got outcomes carrying it.
        AuthenticationError, PermissionDeniedError: The key was refused.
        JobsUnfinishedError: The client was closed under the run.
    """

    def __init__(
        self,
        client: AsyncRealESRGAN,
        task_group: anyio.abc.TaskGroup,
        images: Iterable[ImageInput] | AsyncIterable[ImageInput],
        *,
        scale: int | None,
        face_enhance: bool | None,
        max_in_flight: int,
        job_timeout: float | None,
        ordered: bool,
    ) -> None:
        if isinstance(images, str | bytes):
            raise InvalidRequestError(
                "images must be an iterable of URLs or UpscaleRequests, got a single "
                f"{type(images).__name__}; wrap it in a list"
            )
        if not isinstance(images, Iterable | AsyncIterable):
            raise InvalidRequestError(
                f"images must be an iterable or async iterable, got {type(images).__name__}"
            )
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
            raise InvalidRequestError(f"max_in_flight must be an int, got {max_in_flight!r}")
        if max_in_flight < 1:
            raise InvalidRequestError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if job_timeout is not None and not job_timeout > 0:
            raise InvalidRequestError(f"job_timeout must be > 0 seconds or None, got {job_timeout}")
        if scale is not None:
            check_scale(scale)
        if face_enhance is not None:
            check_face_enhance(face_enhance)
        self._engine = _Engine(
            client,
            images,
            scale=scale,
            face_enhance=face_enhance,
            max_in_flight=max_in_flight,
            job_timeout=job_timeout,
        )
        self._task_group = task_group
        self._ordered = ordered
        self._held: dict[int, Outcome] = {}
        self._next_index = 0
        self._started = False

    @property
    def unfinished_request_ids(self) -> tuple[str, ...]:
        """Jobs this run submitted (and paid for) that have not been seen finished."""
        return self._engine.unfinished_request_ids

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Outcome:
        engine = self._engine
        if not self._started:
            self._started = True
            self._task_group.start_soon(engine.feed)
        try:
            while self._next_index not in self._held:
                try:
                    outcome = await engine.receive.receive()
                except anyio.EndOfStream:
                    engine.stop()
                    engine.raise_for_end()
                    raise StopAsyncIteration from None
                if not self._ordered:
                    engine.slots.release()
                    return outcome
                self._held[outcome.index] = outcome
        except BaseException:
            engine.stop()  # cancelled, or the run failed: stop submitting at once
            raise
        self._next_index += 1
        engine.slots.release()
        return self._held.pop(self._next_index - 1)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop pulling and submitting; return once no POST of this run is on the wire."""
        self._engine.stop()
        if self._started:
            with anyio.CancelScope(shield=True):
                await self._engine.feeder_done.wait()

    def __del__(self) -> None:
        # A `break` out of `async for ... in client.upscale_many(...)` drops the last
        # reference here (at once on CPython): stop submitting. The engine, which the
        # feeder task holds, never holds this object, so this really runs.
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.stop()


class _Engine:
    """The feeder and its bookkeeping; tasks in the client's task group hold it."""

    def __init__(
        self,
        client: AsyncRealESRGAN,
        images: Iterable[ImageInput] | AsyncIterable[ImageInput],
        *,
        scale: int | None,
        face_enhance: bool | None,
        max_in_flight: int,
        job_timeout: float | None,
    ) -> None:
        self._client = client
        self._gateway, self._poller, _ = client._open()
        self._images = images
        self._scale = scale
        self._face_enhance = face_enhance
        self._max_in_flight = max_in_flight
        self._job_timeout = job_timeout
        self._pending: dict[str, int] = {}  # submitted, unfinished: request_id -> waiter token
        self._abandoned: list[str] = []  # ids that landed after the run was stopped
        self._taken = 0
        self._emitted = 0
        self._input_done = False
        self._stopped = False
        self._closed = False
        self._balance_error: InsufficientBalanceError | None = None
        self._fatal: BaseException | None = None
        self._send, self.receive = anyio.create_memory_object_stream[Outcome](max_in_flight)
        self.slots = anyio.Semaphore(max_in_flight)
        self._all_emitted = anyio.Event()
        self.feeder_done = anyio.Event()
        self._scope = anyio.CancelScope()

    @property
    def unfinished_request_ids(self) -> tuple[str, ...]:
        unfinished = self._client._unfinished  # a job seen finished by anyone is not unfinished
        return tuple(rid for rid in (*self._pending, *self._abandoned) if rid in unfinished)

    def stop(self) -> None:
        """Stop at once: pull, submit and wait for nothing more."""
        if self._stopped:
            return
        self._stopped = True
        self._end()
        self.receive.close()

    def raise_for_end(self) -> None:
        """At the end of the stream, raise what ended the run, if anything did."""
        if self._fatal is not None:
            raise self._fatal
        if self._balance_error is not None:
            raise self._balance_error

    # The feeder's side ------------------------------------------------------------

    async def feed(self) -> None:
        try:
            with self._scope:  # cancelled by stop() or _fail(): ends here, quietly
                async with anyio.create_task_group() as submits:
                    await self._pull(submits)
                    self._input_done = True
                    self._check_all_emitted()
                await self._all_emitted.wait()
        except anyio.get_cancelled_exc_class():
            if self._fatal is None and not self._stopped:
                self._fatal = JobsUnfinishedError(
                    self.unfinished_request_ids, "the client was closed during the run"
                )
            raise
        except Exception as exc:  # noqa: BLE001
            # Reported to the consumer, never raised into the client's task group.
            self._fatal = self._fatal or exc
        finally:
            self._end()
            self.feeder_done.set()

    async def _pull(self, submits: anyio.abc.TaskGroup) -> None:
        images = self._images
        sync_iter = iter(images) if isinstance(images, Iterable) else None
        async_iter = None if sync_iter is not None else aiter(images)  # type: ignore[arg-type]
        while True:
            await self.slots.acquire()
            if self._balance_error is not None or self._fatal is not None:
                return  # 402 or 401/403: pull nothing more; the caller's iterator keeps the rest
            try:
                if sync_iter is not None:
                    item = next(sync_iter)
                else:
                    assert async_iter is not None
                    item = await anext(async_iter)
            except (StopIteration, StopAsyncIteration):
                self.slots.release()
                return
            except Exception as exc:  # noqa: BLE001 - the caller's iterator failed: end the run with it
                self.slots.release()
                self._fail(exc)
                return
            submits.start_soon(self._submit, self._taken, item)
            self._taken += 1

    async def _submit(self, index: int, item: ImageInput) -> None:
        client = self._client
        try:
            if isinstance(item, UpscaleRequest):
                request = client.make_request(item)
            else:
                request = client.make_request(
                    item, scale=self._scale, face_enhance=self._face_enhance
                )
        except InvalidRequestError as exc:
            self._emit(Outcome(index, None, error=exc))
            return
        if self._balance_error is not None:
            self._emit(Outcome(index, request, error=self._balance_error))
            return
        try:
            job = await client._submit(self._gateway, request, client._webhook_headers(None, None))
        except InsufficientBalanceError as exc:
            self._balance_error = exc
            self._emit(Outcome(index, request, error=exc))
            return
        except _FATAL as exc:
            self._fail(exc)
            return
        except RealESRGANError as exc:
            self._emit(Outcome(index, request, error=exc))
            return
        if self._stopped:
            self._abandoned.append(job.request_id)
            return
        done = functools.partial(self._finished, index, request, job.request_id)
        self._pending[job.request_id] = self._poller.watch(
            job.request_id, done, timeout=self._job_timeout
        )

    def _finished(
        self, index: int, request: UpscaleRequest, request_id: str, resolution: Resolution
    ) -> None:
        del self._pending[request_id]
        result: JobState | None = None
        error: BaseException | None = None
        try:
            result = unwrap(resolution)
        except _FATAL as exc:
            self._fail(exc)
            return
        except Exception as exc:  # noqa: BLE001 - any other error is this input's outcome
            error = exc
        self._emit(Outcome(index, request, result=result, error=error, request_id=request_id))

    def _emit(self, outcome: Outcome) -> None:
        self._emitted += 1
        if not self._closed:
            self._send.send_nowait(outcome)  # never blocks: the buffer has a place per slot
        self._check_all_emitted()

    def _check_all_emitted(self) -> None:
        if self._input_done and self._emitted == self._taken:
            self._all_emitted.set()

    def _fail(self, exc: BaseException) -> None:
        """End the run with `exc` (raised to the consumer after what it already has)."""
        if self._fatal is None:
            self._fatal = exc
        self._end()

    def _end(self) -> None:
        """Pull and submit nothing more, stop waiting; unfinished ids stay in `_pending`."""
        self._scope.cancel()
        for token in self._pending.values():
            self._poller.unwatch(token)
        if not self._closed:
            self._closed = True
            self._send.close()
