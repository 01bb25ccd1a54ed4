"""`upscale_many`: a bounded, lazy fan-out that streams one outcome per input.

This is the I/O shell around the pure `RunBook` (`_runbook`), which makes every
decision: when to pull, what is owed, what to hand over, which error ends the
run. The shell keeps the streams of control:

- A feeder task, started in the *client's* task group (never in a task group
  held across a ``yield``), runs the submitters below, which pull inputs one at
  a time, only when the book says a slot is free: a generator of a million URLs
  is never materialised.
- At most ``max_connections`` submitters, tasks started in the feeder's task
  group, each pull the next input, validate it and submit it themselves, then
  pull again: no task per input, and no hand-off between tasks per input. They
  pull one at a time, in turn, as a single feeder would (`_Run._pull_turn`).
  A submitted job is handed to the session's poller, which calls back when it
  finishes. No task waits per job.
- The consumer takes outcomes from the book; taking one frees a slot.
- Stopping (a ``break``, a cancellation, `aclose()`) stops pulling and
  submitting at once; a paid POST already on the wire finishes and its id is
  kept. Outcomes finished but not taken stay listed
  (`UpscaleRun.unconsumed_outcomes`, and the client's
  `take_unconsumed_outcomes`), the ids still running in `unfinished_request_ids`.
- A job that ends ERROR (not charged) is submitted again after a backoff, as
  the `ResubmitPolicy` says; the run book holds its input (and its slot) until
  the new job's outcome. The earlier ids are on `Outcome.earlier_request_ids`.
- With a journal, each input is looked up as it is pulled (`plan`): a rerun
  polls the ids still in flight, replays finished outcomes, resubmits ERROR
  entries when the policy resubmits, and submits the rest. An input is
  recorded (and synced to disk) right before its POST goes on the wire, its
  id the moment the gateway returns it, its end as it is seen (see `_journal`).
  A journal the run opened is closed once both the feeder and the consumer are
  done with it, however the run ended.
- With ``idempotency_key=``, an input with a key goes through the client's
  store (`_keyed`): it is POSTed only if its key is free, across every process
  sharing the store and across restarts. Inputs of one run with the same key
  share one job (`RunBook.lead_key`). With a journal too, the journal records
  what the store answered; where the journal is unsure (AMBIGUOUS), the store
  decides (`_journal.plan` with ``keyed``).
- Local inputs (paths, bytes) are checked and hashed in the feeder (so the
  journal can look them up by content), published through the client's image
  host in their submit task, right before their POST, and taken down once their
  job has ended; an input whose POST never happened has its object taken down
  at once, one whose POST was ambiguous keeps it (the job may still fetch it).
"""

from __future__ import annotations

import os
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc

from . import _options
from ._exceptions import (
    AmbiguousSubmitError,
    AuthenticationError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobsUnfinishedError,
    JournalError,
    JournalLockedError,
    OutputExpiredError,
    PermissionDeniedError,
    RealESRGANError,
    StoreError,
)
from ._hosts import (
    ImageHost,
    inspect_local,
    needs_image_host,
    publish_checked,
    retract_shielded,
)
from ._journal import Journal, JournalState, Resume, plan, replay
from ._journal_sqlite import SQLiteJournal
from ._keyed import Keyed, Keys
from ._keys import check_key
from ._local_images import LocalImage, PublishedImage, identity, redact
from ._models import (
    Job,
    JobState,
    Outcome,
    Resolution,
    UpscaleRequest,
    check_face_enhance,
    check_scale,
    unwrap,
)
from ._resubmit import ResubmitPolicy, resubmit_delay
from ._runbook import Ending, Phase, RunBook
from ._session import Session

#: Errors after which every further call would fail too: they end the run. A
#: journal that cannot be written could no longer keep a rerun from paying twice.
_FATAL = (AuthenticationError, PermissionDeniedError, JournalError)

#: With a journal, sync it every this many inputs pulled, so that its WAL stays
#: short even when a rerun submits nothing (each submit syncs it anyway).
_SYNC_EVERY = 256

#: How long a run waits for a journal that another run of this process still holds
#: (it is finishing a POST) before giving up with `JournalLockedError`.
_OWN_LOCK_WAIT = 10.0

ImageInput = str | UpscaleRequest | os.PathLike[str] | bytes
MakeRequest = Callable[..., UpscaleRequest]
#: ``(index, image) -> key or None``: the idempotency key of each input.
KeyFor = Callable[[int, Any], str | None]
#: Builds the request actually POSTed (a local input is published first).
SentRequest = Callable[[], Awaitable[UpscaleRequest]]


class _Signal:
    """Wake whoever waits for "something changed"; no wake-up is lost."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class UpscaleRun:
    """The async iterator `AsyncRealESRGAN.upscale_many` returns.

    Leaving the loop early stops submission: at once when the run was made in
    the ``async for`` line itself (the dropped run stops itself, on CPython),
    and always with ``async with client.upscale_many(...) as run:`` or
    `aclose()`, which also wait until no POST of the run is on the wire. A
    cancelled consumer stops the run the same way. Nothing paid is dropped:
    outcomes that finished but were not taken are in `unconsumed_outcomes`
    (and the client's `take_unconsumed_outcomes()`), jobs still running in
    `unfinished_request_ids` (and the client's).

    Raises (from the loop, after the outcomes it could yield):
        InsufficientBalanceError: The wallet ran dry (402): nothing more was
            pulled or submitted; inputs already taken got outcomes carrying it.
        AuthenticationError, PermissionDeniedError: The key was refused.
        JobsUnfinishedError: The client was closed under the run.
        Whatever the caller's iterator (or `idempotency_key` function) raised:
            nothing more is pulled, the jobs already paid for are still awaited
            and yielded, then it is re-raised.
        StoreError: The idempotency store failed: nothing more was submitted
            (inputs already taken got outcomes carrying it); paid jobs are
            still awaited and yielded.
        JournalLockedError: Another process holds the journal (nothing was sent).
        JournalMismatchError: An input differs from the journal's at its index;
            nothing from that index on was submitted.
        JournalError: The journal could not be read or written.
        When several of these happen, the first in this order wins: the key
        refused or the journal failed; the client closed; the caller's
        iterator failed; the wallet ran dry; the store failed.
    """

    def __init__(
        self,
        session: Session,
        images: Iterable[ImageInput] | AsyncIterable[ImageInput],
        *,
        make_request: MakeRequest,
        headers: dict[str, str],
        max_connections: int,
        scale: int | None,
        face_enhance: bool | None,
        max_in_flight: int,
        job_timeout: float | None,
        ordered: bool,
        journal: str | os.PathLike[str] | Journal | None = None,
        resubmit_ambiguous: bool = False,
        resubmit: ResubmitPolicy | None = None,
        idempotency_key: KeyFor | None = None,
        keys: Keys | None = None,
        image_host: ImageHost | None = None,
    ) -> None:
        owner = "upscale_many"
        if isinstance(images, str | bytes):
            raise InvalidRequestError(
                "images must be an iterable of URLs or UpscaleRequests, got a single "
                f"{type(images).__name__}; wrap it in a list"
            )
        if not isinstance(images, Iterable | AsyncIterable):
            raise InvalidRequestError(
                f"images must be an iterable or async iterable, got {type(images).__name__}"
            )
        _options.number(owner, "max_in_flight", max_in_flight, ">= 1", lambda v: v >= 1, kind=int)
        _options.number(
            owner, "job_timeout", job_timeout, "> 0 seconds", lambda v: v > 0, optional=True
        )
        if scale is not None:
            check_scale(scale)
        if face_enhance is not None:
            check_face_enhance(face_enhance)
        _options.flag(owner, "ordered", ordered)
        _options.flag(owner, "resubmit_ambiguous", resubmit_ambiguous)
        _options.instance(owner, "resubmit", resubmit, ResubmitPolicy, optional=True)
        if idempotency_key is not None:
            if not callable(idempotency_key):
                raise InvalidRequestError(
                    "upscale_many.idempotency_key must be None or a callable "
                    f"(index, image) -> str | None, got {type(idempotency_key).__name__}"
                )
            if keys is None:
                raise InvalidRequestError(
                    "idempotency_key needs a store: AsyncRealESRGAN(store=SQLiteStore(path)) on "
                    "one machine, or store=RedisStore(url) for a fleet"
                )
        owned: SQLiteJournal | None = None
        if isinstance(journal, str | os.PathLike):
            journal = owned = SQLiteJournal(journal)  # opened by the run, closed at its end
        elif journal is not None and not isinstance(journal, Journal):
            raise InvalidRequestError(
                f"journal must be a path or a Journal, got {type(journal).__name__}"
            )
        self._run = _Run(
            session,
            images,
            make_request=make_request,
            headers=headers,
            max_connections=max_connections,
            scale=scale,
            face_enhance=face_enhance,
            max_in_flight=max_in_flight,
            ordered=ordered,
            job_timeout=job_timeout,
            journal=journal,
            owned_journal=owned,
            resubmit_ambiguous=resubmit_ambiguous,
            resubmit=resubmit or ResubmitPolicy(),
            key_for=idempotency_key,
            keys=keys,
            image_host=image_host,
        )

    @property
    def unfinished_request_ids(self) -> tuple[str, ...]:
        """Jobs this run submitted (and paid for) that have not been seen finished."""
        return self._run.unfinished_request_ids

    @property
    def unconsumed_outcomes(self) -> tuple[Outcome, ...]:
        """Outcomes finished but not taken when the run stopped (empty while it runs)."""
        return self._run.unconsumed_outcomes

    @property
    def journal(self) -> Journal | None:
        """The run's journal (an `SQLiteJournal` when a path was given), or None."""
        return self._run.journal

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
        journal = self._run.journal
        if journal is None:
            raise RuntimeError("this run has no journal; pass journal= to upscale_many")
        index = outcome.index if isinstance(outcome, Outcome) else outcome
        journal.mark_saved(index, os.fspath(path))

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Outcome:
        return await self._run.next_outcome()

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
        await self._run.finish()

    def __del__(self) -> None:
        # A `break` out of `async for ... in client.upscale_many(...)` drops the last
        # reference here (at once on CPython): stop submitting. The `_Run`, which the
        # tasks hold, never holds this object, so this really runs.
        run = getattr(self, "_run", None)
        if run is not None:
            run.drop()


class _Run:
    """The shell of one run; the tasks of the client's task group hold it."""

    def __init__(
        self,
        session: Session,
        images: Iterable[ImageInput] | AsyncIterable[ImageInput],
        *,
        make_request: MakeRequest,
        headers: dict[str, str],
        max_connections: int,
        scale: int | None,
        face_enhance: bool | None,
        max_in_flight: int,
        ordered: bool,
        job_timeout: float | None,
        journal: Journal | None,
        owned_journal: SQLiteJournal | None,
        resubmit_ambiguous: bool,
        resubmit: ResubmitPolicy,
        key_for: KeyFor | None = None,
        keys: Keys | None = None,
        image_host: ImageHost | None = None,
    ) -> None:
        self._session = session
        self._book = RunBook(max_in_flight=max_in_flight, ordered=ordered)
        self._images = images
        self._make_request = make_request
        self._headers = headers
        self._scale = scale
        self._face_enhance = face_enhance
        self._job_timeout = job_timeout
        self.journal = journal
        self._owned_journal = owned_journal
        self._resubmit_ambiguous = resubmit_ambiguous
        self._resubmit = resubmit
        self._earlier: dict[int, tuple[str, ...]] = {}  # index -> its jobs that ended ERROR
        self._key_for = key_for
        self._keys = keys
        self._host = image_host
        self._key_of: dict[int, str] = {}  # index -> its idempotency key, while awaited
        self._locals: dict[int, LocalImage] = {}  # index -> its local image, while awaited
        self._tasks_running = 0  # resubmissions (waiting, or their POST on the wire), store writes
        self._no_task_running = anyio.Event()
        self._no_task_running.set()
        self._stopped = anyio.Event()  # ends the resubmissions' backoff at once
        # Each job awaited: its input's index (until its end is handled), the request
        # of each input with a job, and the ids resumed from a journal. One callback,
        # made once, serves every job (the session hands it the id): a closure per job
        # would cost ~300 bytes per job in flight.
        self._index_of: dict[str, int] = {}
        self._requests: dict[int, UpscaleRequest] = {}
        self._resumed: set[str] = set()
        self._on_end = self._finished
        self._outcome_ready = _Signal()
        self._slot_free = _Signal()
        self._max_connections = max_connections
        # The submitters take turns at pulling (`_submitter`); FIFO, and no trip through
        # the event loop when nobody else is pulling.
        self._pull_turn = anyio.Lock(fast_acquire=True)
        self._submitters = 0
        self._waiting_to_pull = 0  # submitters pulling, or waiting for their turn
        self._pulled_all = False  # no input will be pulled any more
        self._sync_iter: Iterator[ImageInput] | None = None
        self._async_iter: AsyncIterator[ImageInput] | None = None
        self._scope = anyio.CancelScope()  # the feeder's: cancelled by a stop or a fatal error
        self._started = False
        self._feeder_done = anyio.Event()
        self._consumer_done = False
        self._journal_closed = False
        self._close_handle = session.on_close(self._client_closed)

    # What the caller sees -------------------------------------------------------------

    @property
    def unfinished_request_ids(self) -> tuple[str, ...]:
        ledger = self._session.ledger  # a job seen finished by anyone is not unfinished
        owed = (*self._book.pending, *self._book.abandoned)
        return tuple(rid for rid in owed if ledger.is_unfinished(rid))

    @property
    def unconsumed_outcomes(self) -> tuple[Outcome, ...]:
        if self._book.phase is not Phase.STOPPED:
            return ()
        return self._book.unconsumed()

    # The consumer's side ----------------------------------------------------------------

    async def next_outcome(self) -> Outcome:
        book = self._book
        if not self._started:
            self._started = True
            self._session.start_soon(self._feed)
        try:
            while True:
                outcome = book.next_outcome()
                if outcome is not None:
                    self._slot_free.notify()
                    return outcome
                if book.over:
                    await self.finish()
                    error = book.ending_error()
                    if error is not None:
                        raise error
                    raise StopAsyncIteration
                await self._outcome_ready.wait()
        except BaseException:
            self._stop()  # cancelled, or the run ended: stop submitting at once
            raise

    async def finish(self) -> None:
        """Stop, wait until no POST of the run is on the wire, release the journal."""
        self._stop()
        if self._started:
            with anyio.CancelScope(shield=True):
                await self._feeder_done.wait()
                await self._no_task_running.wait()
        await self._close_journal()

    def drop(self) -> None:
        """The caller dropped the run without `finish`: stop, and close what can be closed."""
        self._stop()
        if self._owned_journal is not None and self._may_close_journal():
            self._journal_closed = True
            self._owned_journal.close()

    def _stop(self) -> None:
        book = self._book
        if book.phase is Phase.STOPPED:
            return
        self._consumer_done = True
        for request_id in book.stop():
            self._unwatch(request_id)
        self._scope.cancel()
        self._stopped.set()
        self._session.remove_close_listener(self._close_handle)
        self._session.ledger.park(book.unconsumed())
        self._slot_free.notify()

    # The feeder's side ------------------------------------------------------------------

    async def _feed(self) -> None:
        try:
            with self._scope:  # cancelled by a stop or a fatal error: ends here, quietly
                if self._owned_journal is not None:
                    await _open_journal(self._owned_journal)
                images = self._images
                if isinstance(images, Iterable):
                    self._sync_iter = iter(images)
                else:
                    self._async_iter = aiter(images)
                async with anyio.create_task_group() as tasks:
                    self._start_submitter(tasks)  # more start as inputs are taken
        except Exception as exc:  # noqa: BLE001
            # The journal could not be opened: reported to the consumer, never
            # raised into the client's task group.
            self._fail(Ending.FATAL, exc)
        finally:
            self._book.input_exhausted()
            self._outcome_ready.notify()
            self._feeder_done.set()
            with anyio.CancelScope(shield=True):
                await self._close_journal()

    def _start_submitter(self, tasks: anyio.abc.TaskGroup) -> None:
        self._submitters += 1
        tasks.start_soon(self._submitter, tasks)

    async def _submitter(self, tasks: anyio.abc.TaskGroup) -> None:
        """Pull an input and submit it, again, until no input is left to pull.

        The submitters pull in turn, one at a time, so that inputs are pulled,
        checked and planned in order, as by a single feeder (an input that
        contradicts the journal stops the run before any later one is
        submitted); each then submits what it took, while the next one pulls.
        A submitter that takes an input starts another if none is left waiting
        to pull, up to `max_connections`: a run of one input starts one task.
        """
        while True:
            self._waiting_to_pull += 1
            try:
                async with self._pull_turn:
                    taken = await self._pull_next()
            except Exception as exc:  # noqa: BLE001 - the journal failed: reported, not raised
                self._pulled_all = True
                self._fail(Ending.FATAL, exc)
                return
            finally:
                self._waiting_to_pull -= 1
            if taken is None:
                return
            if not taken:
                continue  # replayed, invalid, or shared: no submit
            if self._waiting_to_pull == 0 and self._submitters < self._max_connections:
                self._start_submitter(tasks)
            await self._submit(*taken)

    async def _pull_next(self) -> tuple[Any, ...] | None:
        """Pull and check the next input, once the book says a slot is free.

        Returns:
            What to submit, as `_submit`'s arguments; ``()`` for an input that
            needs no submit; None once nothing more is pulled (the input ran out,
            failed, or the run stopped or ended).
        """
        book = self._book
        while not self._pulled_all:
            if not book.may_pull():
                if not book.blocked_by_slots():
                    break  # stopped, ended by an error, or the wallet is empty
                await self._slot_free.wait()
                continue
            try:
                if self._sync_iter is not None:
                    item = next(self._sync_iter)
                else:
                    assert self._async_iter is not None
                    item = await anext(self._async_iter)
            except (StopIteration, StopAsyncIteration):
                break
            except Exception as exc:  # noqa: BLE001 - raised once the paid jobs are yielded
                self._fail(Ending.INPUT_FAILED, exc)
                break
            if book.phase is Phase.STOPPED:  # the consumer left while the input was pulled
                break
            index = book.take()
            taken = await self._take(index, item)
            if self.journal is not None and book.taken % _SYNC_EVERY == 0:
                await self.journal.sync()
            return taken
        self._pulled_all = True
        return None

    async def _take(self, index: int, item: ImageInput) -> tuple[Any, ...]:
        """Validate one input; with a journal, submit, watch or replay it as `plan` says.

        In turn (`_pull_next`): an input that contradicts the journal ends the
        run before it, or any later input, is submitted. A local input is
        checked and hashed here (in a worker thread), so that the journal knows
        it by its content.

        Returns:
            `_submit`'s arguments when the input is to be submitted, else ``()``.
        """
        try:
            request, local = await self._request_for(item)
        except InvalidRequestError as exc:
            self._emit(Outcome(index, None, error=exc))
            return ()
        try:
            key = self._key(index, item)
        except InvalidRequestError as exc:
            self._emit(Outcome(index, request, error=exc))
            return ()
        except Exception as exc:  # noqa: BLE001 - the caller's code: raised like its iterator's
            self._fail(Ending.INPUT_FAILED, exc)
            self._emit(Outcome(index, request, error=exc))
            return ()
        if self.journal is not None:
            try:
                entry = self.journal.get(index)
                action = plan(
                    entry,
                    request,
                    resubmit_ambiguous=self._resubmit_ambiguous,
                    resubmit_errors=self._resubmit.enabled,
                    keyed=key is not None,
                )
            except JournalError as exc:
                self._fail(Ending.FATAL, exc)
                return ()
            if entry is not None and action is Resume.REPLAY:
                self._emit(replay(entry))
                return ()
            if entry is not None and entry.request_id is not None and action is Resume.WATCH:
                # Paid for by an earlier run: poll it, never POST it again.
                self._session.ledger.adopt(entry.request_id)
                if key is not None:
                    self._key_of[index] = key  # its end goes to the store too
                if self._book.submitted(index, entry.request_id):
                    self._watch(index, request, entry.request_id, resumed=True)
                return ()
            if entry is not None and entry.request_id and entry.state is JournalState.ERROR:
                # An ERROR entry that the policy resubmits: its job is the first attempt.
                self._earlier[index] = (entry.request_id,)
        if key is not None and not self._book.lead_key(key, index, request):
            self._outcome_ready.notify()  # (a mismatch's outcome may have been emitted)
            return ()  # another input of this run carries the key: its outcome is shared
        return (index, request, key, local)

    async def _request_for(self, item: ImageInput) -> tuple[UpscaleRequest, LocalImage | None]:
        """The request an input stands for (a local one named by its content), checked.

        Raises:
            InvalidRequestError: The input is invalid (a local one: missing,
                unreadable, not an image, or the client has no image host).
        """
        if isinstance(item, UpscaleRequest):
            return self._make_request(item), None
        options = {"scale": self._scale, "face_enhance": self._face_enhance}
        if isinstance(item, os.PathLike | bytes):
            if self._host is None:
                raise needs_image_host(item)
            local = await inspect_local(item)
            return self._make_request(identity(local.digest), **options), local
        return self._make_request(item, **options), None

    def _key(self, index: int, item: ImageInput) -> str | None:
        """The idempotency key of input `index`, if the run derives keys and it has one.

        Raises:
            InvalidRequestError: The derived key is not a valid key.
            Exception: Whatever the caller's function raised.
        """
        if self._key_for is None:
            return None
        derived = self._key_for(index, item)
        return None if derived is None else check_key(derived)

    async def _submit(
        self, index: int, request: UpscaleRequest, key: str | None, local: LocalImage | None
    ) -> None:
        refusal = self._book.submit_refusal()
        if refusal is not None:  # a 402 was seen, or the store failed: nothing more is submitted
            self._emit(Outcome(index, request, error=refusal))
            return
        try:
            found = await self._post_input(index, request, key, local)
        except InsufficientBalanceError as exc:
            self._fail(Ending.WALLET_EMPTY, exc)
            self._emit(Outcome(index, request, error=exc))
            return
        except _FATAL as exc:
            self._fail(Ending.FATAL, exc)
            return
        except OutputExpiredError as exc:  # (a StoreError about this key only)
            self._emit(Outcome(index, request, error=exc))
            return
        except StoreError as exc:  # a keyed submit could be paid twice: submit nothing more
            self._fail(Ending.STORE_FAILED, exc)
            self._emit(Outcome(index, request, error=exc))
            return
        except (RealESRGANError, InvalidRequestError) as exc:  # (preflight refused the input)
            self._emit(Outcome(index, request, error=exc))
            return
        if found.result is not None:  # the key's job finished before: no request at all
            self._emit(self._keyed_result(index, request, found.result))
            return
        request_id = found.job.request_id
        if key is not None:
            self._key_of[index] = key
        if local is not None:
            self._locals[index] = local  # (a resubmission publishes it again)
        if self._book.submitted(index, request_id):
            self._watch(index, request, request_id, resumed=False)

    def _keyed_result(self, index: int, request: UpscaleRequest, state: JobState) -> Outcome:
        """The outcome of an input whose key's job had finished already (recorded)."""
        result: JobState | None = None
        error: BaseException | None = None
        try:
            result = unwrap(state)
        except RealESRGANError as exc:
            error = exc
        journal = self.journal
        if journal is not None and not self._journal_closed:
            try:
                journal.record_finished(index, state)
            except JournalError as exc:
                self._fail(Ending.FATAL, exc)
        return Outcome(
            index, request, result=result, error=error, request_id=state.request_id, resumed=True
        )

    async def _post_input(
        self,
        index: int,
        request: UpscaleRequest,
        key: str | None,
        local: LocalImage | None,
        on_created: Callable[[Job], None] | None = None,
    ) -> Keyed:
        """POST input `index`: through the store if it has a key, after publishing it if it
        is local; its object is then taken down when its job has ended (at once if no job
        was created; never after an ambiguous POST, whose job may still fetch it)."""
        uploads: list[PublishedImage] = []
        created: list[str] = []

        async def sent() -> UpscaleRequest:  # only when a POST will really go
            if local is None:
                return request
            published = await self._publish(local)
            uploads.append(published)
            return self._make_request(
                published.url, scale=request.scale, face_enhance=request.face_enhance
            )

        def booked(job: Job) -> None:  # before any other task runs
            created.append(job.request_id)
            if on_created is not None:
                on_created(job)

        try:
            if key is None:
                found = Keyed(await self._post(index, request, sent, booked))
            else:
                found = await self._post_keyed(index, key, request, sent, booked)
        except AmbiguousSubmitError as exc:
            # Its object stays up: a job may exist and may yet fetch it (its URL expires).
            if not uploads:
                raise
            # Named by content, not by the signed URL (a secret) the gateway was sent.
            raise AmbiguousSubmitError(
                request.image,
                status_code=exc.status_code,
                reason=f"{_ambiguity(exc)}; its input stays published as "
                f"{redact(uploads[0].url)} while the job may fetch it",
            ) from exc.__cause__
        except BaseException:
            if uploads:
                if created:
                    self._retract_when_finished(created[0], uploads[0])
                else:
                    await self._retract(uploads[0])
            raise
        if uploads:
            self._retract_when_finished(found.job.request_id, uploads[0])
        return found

    async def _post(
        self,
        index: int,
        request: UpscaleRequest,
        sent: SentRequest,
        on_created: Callable[[Job], None],
    ) -> Job:
        """POST input `index` (journaled when the run has a journal); a resubmission
        (the input has earlier jobs) is booked as one in the ledger."""
        earlier = self._earlier.get(index)
        ledger = self._session.ledger

        def created(job: Job) -> None:  # before any other task runs, like the ledger's own
            try:
                on_created(job)
            finally:
                if earlier:
                    ledger.record_resubmitted(earlier[-1], job.request_id)

        sending = await sent()
        if self._keys is not None:
            await self._keys.take_submit_token()  # the fleet's budget and 429 pause
        if self.journal is None:
            return await self._session.submit(sending, self._headers, on_created=created)
        return await self._submit_journaled(self.journal, index, request, sending, created)

    async def _post_keyed(
        self,
        index: int,
        key: str,
        request: UpscaleRequest,
        sent: SentRequest,
        on_created: Callable[[Job], None],
    ) -> Keyed:
        """Submit input `index` under `key`: the store decides whether a POST goes.

        The journal, if any, records what the store answered; the store is the
        authority (a rerun asks it wherever the journal is unsure).
        """
        keys = self._keys
        assert keys is not None  # (checked when the run was made)
        journal = self.journal
        recorded: list[str] = []

        def created(job: Job) -> None:  # before any other task runs
            try:
                on_created(job)
            finally:
                if journal is not None:
                    recorded.append(job.request_id)
                    journal.record_submitted(index, job.request_id)

        if journal is not None:
            journal.record_pending(index, request)
        try:
            found = await keys.submit(
                self._session, key, request, self._headers, prepare=sent, on_created=created
            )
        except AmbiguousSubmitError as exc:
            if journal is not None:
                journal.record_ambiguous(index, _ambiguity(exc))
            raise
        except BaseException:
            if recorded:
                self._book.abandon(recorded[0])  # paid, but the journal failed: keep its id
            elif journal is not None:
                journal.record_unsent(index)  # the store holds the key's truth
            raise
        if journal is not None and not recorded:  # another process's job, or a finished one
            journal.record_submitted(index, found.job.request_id)
        return found

    async def _publish(self, local: LocalImage) -> PublishedImage:
        """Publish a checked local input and fetch its URL's first byte: before paying."""
        assert self._host is not None  # (checked in the feeder)
        return await publish_checked(self._host, local)

    async def _retract(self, published: PublishedImage) -> None:
        assert self._host is not None
        await retract_shielded(self._host, published)

    def _retract_when_finished(self, request_id: str, published: PublishedImage) -> None:
        """Take a local input down once its job has ended, whether or not the run still
        awaits it (a stopped run's jobs are still watched while the client is open)."""
        session = self._session

        def finished(_: str, resolution: Resolution) -> None:
            if isinstance(resolution, JobState):
                self._start_task(self._retract, published)  # the run's end waits for it

        if not session.closed:
            session.watch(request_id, finished)

    async def _submit_journaled(
        self,
        journal: Journal,
        index: int,
        request: UpscaleRequest,
        sending: UpscaleRequest,
        on_created: Callable[[Job], None],
    ) -> Job:
        """POST in the journal's order: the input on disk right before the POST, its id at once.

        The journal records `request` (a local input's content name); `sending`
        goes on the wire (its published URL).
        """
        request_id: str | None = None
        recorded_pending = False

        async def record_pending() -> None:  # inside the connection limiter, after any cooldown
            nonlocal recorded_pending
            journal.record_pending(index, request)
            recorded_pending = True
            await journal.sync()  # the POST follows: a power cut must not forget the attempt

        def recorded(job: Job) -> None:  # called by the gateway before any other task runs
            nonlocal request_id
            request_id = job.request_id
            try:
                on_created(job)
            finally:
                journal.record_submitted(index, job.request_id)

        try:
            return await self._session.submit(
                sending, self._headers, on_created=recorded, before_send=record_pending
            )
        except AmbiguousSubmitError as exc:
            journal.record_ambiguous(index, _ambiguity(exc))
            raise
        except BaseException:
            if request_id is None:
                # Cancelled before sending, or refused: the gateway created no job
                # (a POST that may have is AmbiguousSubmitError), so a rerun submits it.
                if recorded_pending:
                    journal.record_unsent(index)
            else:
                self._book.abandon(request_id)  # paid, but the journal failed
            raise

    # Jobs in flight ---------------------------------------------------------------------

    def _watch(
        self, index: int, request: UpscaleRequest, request_id: str, *, resumed: bool
    ) -> None:
        self._index_of[request_id] = index
        self._requests[index] = request
        if resumed:
            self._resumed.add(request_id)
        self._session.watch(request_id, self._on_end, timeout=self._job_timeout)

    def _unwatch(self, request_id: str) -> None:
        """Stop awaiting a job; its end, if it is seen anyway, still becomes an outcome."""
        if request_id in self._index_of:
            self._session.unwatch_callback(request_id, self._on_end)
            self._session.when_seen_finished(request_id, self._seen_late)

    def _seen_late(self, state: JobState) -> None:
        """The end of a job no longer awaited, seen anyway (`_unwatch`)."""
        self._finished(state.request_id, state)

    def _finished(self, request_id: str, resolution: Resolution) -> None:
        index = self._index_of.pop(request_id, None)
        if index is None:
            return  # (its end was handled already)
        request = self._requests.pop(index)  # (a resubmission's `_watch` puts it back)
        resumed = request_id in self._resumed
        self._resumed.discard(request_id)
        local = self._locals.pop(index, None)
        key = self._key_of.pop(index, None)
        if key is not None and isinstance(resolution, JobState) and self._keys is not None:
            self._start_task(self._keys.record_end, key, resolution)  # never raises
        journal_error: JournalError | None = None
        if (
            self.journal is not None
            and isinstance(resolution, JobState)
            and not self._journal_closed
        ):
            # (Seen after the run closed its journal: a rerun polls the job again.)
            try:
                self.journal.record_finished(index, resolution)
            except JournalError as exc:
                journal_error = exc
        result: JobState | None = None
        error: BaseException | None = None
        try:
            result = unwrap(resolution)
        except (AuthenticationError, PermissionDeniedError) as exc:
            self._fail(Ending.FATAL, exc)  # the job's id stays unfinished, hence reachable
            return
        except Exception as exc:  # noqa: BLE001 - any other error is this input's outcome
            error = exc
        outcome = Outcome(
            index,
            request,
            result=result,
            error=error,
            request_id=request_id,
            resumed=resumed,
            earlier_request_ids=self._earlier.get(index, ()),
        )
        # A key's record is its job: an ERROR under a key is reported, not resubmitted.
        if isinstance(resolution, JobState) and journal_error is None and key is None:
            delay = resubmit_delay(
                self._resubmit, resolution.status, len(self._earlier.get(index, ()))
            )
            if delay is not None and self._book.hold_for_resubmit(request_id, outcome):
                self._earlier[index] = (*self._earlier.get(index, ()), request_id)
                self._start_task(self._resubmit_after, index, request, delay, local)
                return
        if self._book.finished(request_id, outcome):
            self._after_emit(outcome)
        if journal_error is not None:
            self._fail(Ending.FATAL, journal_error)

    def _start_task(self, func: Callable[..., Awaitable[None]], *args: object) -> None:
        """Run `func(*args)` in the session's task group; `finish` waits for it."""
        if self._tasks_running == 0:  # (a waiter holds the current event: never replace it)
            self._no_task_running = anyio.Event()
        self._tasks_running += 1

        async def counted() -> None:
            try:
                await func(*args)
            finally:
                self._tasks_running -= 1
                if self._tasks_running == 0:
                    self._no_task_running.set()

        self._session.start_soon(counted)

    async def _resubmit_after(
        self, index: int, request: UpscaleRequest, delay: float, local: LocalImage | None
    ) -> None:
        """Submit held input `index` again after `delay` seconds (a task: never raises).

        A local input is published again (its object went when the job ended).
        """
        book = self._book
        with anyio.move_on_after(delay):
            await self._stopped.wait()  # a stop ends the wait at once
        if not book.may_resubmit(index):
            self._outcome_ready.notify()  # its fallback outcome was emitted
            return
        try:
            job = (await self._post_input(index, request, None, local)).job
        except (InsufficientBalanceError, *_FATAL) as exc:
            book.give_up_resubmit(index)
            self._outcome_ready.notify()
            ending = Ending.WALLET_EMPTY
            if isinstance(exc, _FATAL):
                ending = Ending.FATAL
            self._fail(ending, exc)
            return
        except (RealESRGANError, InvalidRequestError) as exc:
            # (An ambiguous resubmit may have created a job: say so, not the old ERROR.)
            earlier = self._earlier.get(index, ())
            book.give_up_resubmit(
                index, Outcome(index, request, error=exc, earlier_request_ids=earlier)
            )
            self._outcome_ready.notify()
            return
        if local is not None:
            self._locals[index] = local
        if book.resubmitted(index, job.request_id):
            self._watch(index, request, job.request_id, resumed=False)

    def _emit(self, outcome: Outcome) -> None:
        self._book.emit(outcome)
        self._after_emit(outcome)

    def _after_emit(self, outcome: Outcome) -> None:
        if self._book.phase is Phase.STOPPED:
            # Nobody will take it from the run: keep it where the client can too.
            self._session.ledger.park([outcome])
        self._outcome_ready.notify()

    def _fail(self, ending: Ending, error: BaseException) -> None:
        """End the run with `error` (raised to the consumer after what it already has)."""
        for request_id in self._book.fail(ending, error):
            self._unwatch(request_id)
        if ending.stops_awaiting:
            self._scope.cancel()  # submit nothing more, not even inputs already taken
        self._slot_free.notify()
        self._outcome_ready.notify()

    def _client_closed(self, reason: str) -> None:
        ledger = self._session.ledger
        owed = [*self._book.pending, *self._book.abandoned]
        self._fail(
            Ending.CLIENT_CLOSED,
            JobsUnfinishedError([rid for rid in owed if ledger.is_unfinished(rid)], reason),
        )

    # The journal ------------------------------------------------------------------------

    def _may_close_journal(self) -> bool:
        return (
            not self._journal_closed
            and self._consumer_done
            and (not self._started or self._feeder_done.is_set())
        )

    async def _close_journal(self) -> None:
        """Close the run's own journal (off the loop) once feeder and consumer are done."""
        journal = self._owned_journal
        if journal is not None and self._may_close_journal():
            self._journal_closed = True
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(journal.close)


async def _open_journal(journal: SQLiteJournal) -> None:
    """Open `journal` in a worker thread, waiting a while if this process holds it.

    A run left with ``break`` releases its journal only once its last POST has
    returned (its id must be recorded): a rerun started at once in the same
    process waits for that instead of failing.
    """
    deadline = anyio.current_time() + _OWN_LOCK_WAIT
    while True:
        try:
            await anyio.to_thread.run_sync(journal.open)
        except JournalLockedError as exc:
            if exc.pid != os.getpid() or anyio.current_time() > deadline:
                raise
            await anyio.sleep(0.01)
        else:
            return


def _ambiguity(exc: AmbiguousSubmitError) -> str:
    """Why a submit was ambiguous, for the journal (its message says the rest)."""
    cause = exc.__cause__
    if cause is None:
        return "the submit failed after it was sent"
    return f"{type(cause).__name__}: {cause}"
