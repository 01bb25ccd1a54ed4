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
- With a journal, each input is looked up as it is pulled (`plan`): a rerun
  polls the ids still in flight, replays finished outcomes and submits the
  rest. An input is recorded before its POST (and synced to disk), its id the
  moment the gateway returns it, its end as it is seen (see `_journal`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Self

import anyio
import anyio.abc

from ._exceptions import (
    AmbiguousSubmitError,
    AuthenticationError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobsUnfinishedError,
    JournalError,
    PermissionDeniedError,
    RealESRGANError,
)
from ._journal import Journal, Resume, plan, replay
from ._journal_sqlite import SQLiteJournal
from ._models import Job, JobState, Outcome, UpscaleRequest, check_face_enhance, check_scale
from ._poller import Resolution, unwrap

if TYPE_CHECKING:
    from ._client import AsyncRealESRGAN, ImageInput

#: Errors after which every further call would fail too: they end the run. A
#: journal that cannot be written could no longer keep a rerun from paying twice.
_FATAL = (AuthenticationError, PermissionDeniedError, JournalError)

#: With a journal, sync it every this many inputs pulled, so that its WAL stays
#: short even when a rerun submits nothing (each submit syncs it anyway).
_SYNC_EVERY = 256


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
        Whatever the caller's iterator raised: nothing more is pulled, the jobs
            already paid for are still awaited and yielded, then it is re-raised.
        JournalLockedError: Another process holds the journal (nothing was sent).
        JournalMismatchError: An input differs from the journal's at its index;
            nothing from that index on was submitted.
        JournalError: The journal could not be read or written.
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
        journal: str | os.PathLike[str] | Journal | None = None,
        resubmit_ambiguous: bool = False,
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
        if not isinstance(resubmit_ambiguous, bool):
            raise InvalidRequestError(
                f"resubmit_ambiguous must be a bool, got {type(resubmit_ambiguous).__name__}"
            )
        owned: SQLiteJournal | None = None
        if isinstance(journal, str | os.PathLike):
            journal = owned = SQLiteJournal(journal)  # opened by the run, closed at its end
        elif journal is not None and not isinstance(journal, Journal):
            raise InvalidRequestError(
                f"journal must be a path or a Journal, got {type(journal).__name__}"
            )
        self._engine = _Engine(
            client,
            images,
            scale=scale,
            face_enhance=face_enhance,
            max_in_flight=max_in_flight,
            job_timeout=job_timeout,
            journal=journal,
            owned_journal=owned,
            resubmit_ambiguous=resubmit_ambiguous,
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

    @property
    def journal(self) -> Journal | None:
        """The run's journal (an `SQLiteJournal` when a path was given), or None."""
        return self._engine.journal

    def mark_saved(self, outcome: Outcome | int, path: str | os.PathLike[str]) -> None:
        """Record in the journal that `outcome`'s output was saved at `path`.

        A rerun then yields that outcome with `Outcome.saved_to` set, so that it
        need not be downloaded again. With ``journal=PATH`` the run closes the
        journal when the loop ends: mark each output inside the loop.

        Args:
            outcome: A COMPLETED outcome of this run, or its index.
            path: Where its output was written.

        Raises:
            RuntimeError: The run has no journal, or it is closed.
            JournalError: The journal has no COMPLETED entry at that index.
        """
        journal = self._engine.journal
        if journal is None:
            raise RuntimeError("this run has no journal; pass journal= to upscale_many")
        index = outcome.index if isinstance(outcome, Outcome) else outcome
        journal.mark_saved(index, os.fspath(path))

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
                    await engine.close_journal()
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
        await self._engine.close_journal()

    def __del__(self) -> None:
        # A `break` out of `async for ... in client.upscale_many(...)` drops the last
        # reference here (at once on CPython): stop submitting. The engine, which the
        # feeder task holds, never holds this object, so this really runs.
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.stop()
            engine.close_journal_now()


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
        journal: Journal | None,
        owned_journal: SQLiteJournal | None,
        resubmit_ambiguous: bool,
    ) -> None:
        self._client = client
        self._gateway, self._poller, _ = client._open()
        self._images = images
        self._scale = scale
        self._face_enhance = face_enhance
        self._max_in_flight = max_in_flight
        self._job_timeout = job_timeout
        self.journal = journal
        self._owned_journal = owned_journal
        self._resubmit_ambiguous = resubmit_ambiguous
        self._feeding = False
        self._pending: dict[str, int] = {}  # submitted, unfinished: request_id -> waiter token
        self._abandoned: list[str] = []  # ids that landed after the run was stopped
        self._taken = 0
        self._emitted = 0
        self._input_done = False
        self._stopped = False
        self._closed = False
        self._balance_error: InsufficientBalanceError | None = None
        self._fatal: BaseException | None = None
        self._input_error: Exception | None = None  # the caller's iterator failed
        self._send, self.receive = anyio.create_memory_object_stream[Outcome](max_in_flight)
        self.slots = anyio.Semaphore(max_in_flight)
        self._submit_permits = anyio.Semaphore(client.max_connections)
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

    # A journal the run opened is closed once both sides are done with it: the
    # feeder (nothing is recorded any more) and the consumer (who marks outputs
    # saved), whichever ends last. Closing checkpoints the WAL: off the loop.

    async def close_journal(self) -> None:
        """Close the run's own journal in a worker thread, if both sides are done."""
        journal = self._owned_journal
        if journal is not None and self._stopped and not self._feeding:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(journal.close)

    def close_journal_now(self) -> None:
        """`close_journal`, blocking: for a run dropped without `aclose`."""
        if self._owned_journal is not None and self._stopped and not self._feeding:
            self._owned_journal.close()

    def raise_for_end(self) -> None:
        """At the end of the stream, raise what ended the run, if anything did."""
        if self._fatal is not None:
            raise self._fatal
        if self._input_error is not None:
            raise self._input_error
        if self._balance_error is not None:
            raise self._balance_error

    # The feeder's side ------------------------------------------------------------

    async def feed(self) -> None:
        self._feeding = True
        try:
            with self._scope:  # cancelled by stop() or _fail(): ends here, quietly
                if self._owned_journal is not None:
                    await anyio.to_thread.run_sync(self._owned_journal.open)
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
            self._feeding = False
            await self.close_journal()
            self.feeder_done.set()

    async def _pull(self, submits: anyio.abc.TaskGroup) -> None:
        images = self._images
        sync_iter = iter(images) if isinstance(images, Iterable) else None
        async_iter = None if sync_iter is not None else aiter(images)  # type: ignore[arg-type]
        while True:
            await self.slots.acquire()
            # A submit permit too, before pulling: at most `max_connections` submit tasks
            # exist at once, not one per slot (10,000 waiting tasks cost ~5 KB each).
            await self._submit_permits.acquire()
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
                self._submit_permits.release()
                return
            except Exception as exc:  # noqa: BLE001 - raised once the paid jobs are yielded
                self.slots.release()
                self._submit_permits.release()
                self._input_error = exc
                return
            index = self._taken
            self._taken += 1
            if not self._take(submits, index, item):
                self._submit_permits.release()
            if self._scope.cancel_called:
                return  # the input contradicted the journal, or the journal failed
            if self.journal is not None and self._taken % _SYNC_EVERY == 0:
                await self.journal.sync()

    def _take(self, submits: anyio.abc.TaskGroup, index: int, item: ImageInput) -> bool:
        """Validate one input; with a journal, submit, watch or replay it as `plan` says.

        Synchronous, in the feeder: an input that contradicts the journal ends
        the run before it, or any later input, is submitted.

        Returns:
            Whether a submit task was started (it then owns the submit permit).
        """
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
            return False
        if self.journal is not None:
            try:
                entry = self.journal.get(index)
                action = plan(entry, request, resubmit_ambiguous=self._resubmit_ambiguous)
            except JournalError as exc:
                self._fail(exc)
                return False
            if entry is not None and action is Resume.REPLAY:
                self._emit(replay(entry))
                return False
            if entry is not None and entry.request_id is not None and action is Resume.WATCH:
                # Paid for by an earlier run: poll it, never POST it again.
                client._unfinished.setdefault(entry.request_id, None)
                self._watch(index, request, entry.request_id, resumed=True)
                return False
        submits.start_soon(self._submit, index, request)
        return True

    async def _submit(self, index: int, request: UpscaleRequest) -> None:
        try:
            await self._submit_once(index, request)
        finally:
            self._submit_permits.release()

    async def _submit_once(self, index: int, request: UpscaleRequest) -> None:
        client = self._client
        if self._balance_error is not None:
            self._emit(Outcome(index, request, error=self._balance_error))
            return
        try:
            if self.journal is None:
                headers = client._webhook_headers(None, None)
                job = await client._submit(self._gateway, request, headers)
            else:
                job = await self._submit_journaled(self.journal, index, request)
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
        if self._closed:  # stopped, or ended by a fatal error: nobody will take its outcome
            self._abandoned.append(job.request_id)
            return
        self._watch(index, request, job.request_id, resumed=False)

    async def _submit_journaled(self, journal: Journal, index: int, request: UpscaleRequest) -> Job:
        """POST in the journal's order: the input on disk first, its id the moment it exists."""
        client = self._client
        request_id: str | None = None

        def recorded(job: Job) -> None:  # called by the gateway before any other task runs
            nonlocal request_id
            request_id = job.request_id
            journal.record_submitted(index, job.request_id)

        journal.record_pending(index, request)
        try:
            await journal.sync()  # a POST follows: a power cut must not forget the attempt
            headers = client._webhook_headers(None, None)
            return await client._submit(self._gateway, request, headers, on_created=recorded)
        except AmbiguousSubmitError as exc:
            journal.record_ambiguous(index, _ambiguity(exc))
            raise
        except BaseException:
            if request_id is None:
                # Cancelled before sending, or refused: the gateway created no job
                # (a POST that may have is AmbiguousSubmitError), so a rerun submits it.
                journal.record_unsent(index)
            else:
                self._abandoned.append(request_id)  # paid, but the journal failed: keep the id
            raise

    def _watch(
        self, index: int, request: UpscaleRequest, request_id: str, *, resumed: bool
    ) -> None:
        done = functools.partial(self._finished, index, request, request_id, resumed)
        self._pending[request_id] = self._poller.watch(
            request_id,
            done,
            timeout=self._job_timeout,
            safety_net=request_id in self._client._webhooked,  # it reports by webhook
        )

    def _finished(
        self,
        index: int,
        request: UpscaleRequest,
        request_id: str,
        resumed: bool,
        resolution: Resolution,
    ) -> None:
        del self._pending[request_id]
        if self.journal is not None and isinstance(resolution, JobState):
            try:
                self.journal.record_finished(index, resolution)
            except JournalError as exc:
                self._fail(exc)
                return
        result: JobState | None = None
        error: BaseException | None = None
        try:
            result = unwrap(resolution)
        except _FATAL as exc:
            self._fail(exc)
            return
        except Exception as exc:  # noqa: BLE001 - any other error is this input's outcome
            error = exc
        self._emit(
            Outcome(
                index, request, result=result, error=error, request_id=request_id, resumed=resumed
            )
        )

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


def _ambiguity(exc: AmbiguousSubmitError) -> str:
    """Why a submit was ambiguous, for the journal (its message says the rest)."""
    cause = exc.__cause__
    if cause is None:
        return "the submit failed after it was sent"
    return f"{type(cause).__name__}: {cause}"
