"""`RealESRGAN`: the synchronous client, a thin shell over `AsyncRealESRGAN`.

How it is put together:

- One core: each method runs the matching `AsyncRealESRGAN` call on an event
  loop of this client's own, in a background thread started with
  `anyio.from_thread.start_blocking_portal` (asyncio by default, or trio). A
  thread whose own event loop is running (a Jupyter cell, a sync view inside
  an async server) can call it: that loop is never touched.
- One host task on that loop holds ``async with AsyncRealESRGAN(...)`` open for
  as long as this client is open (a task group must be left by the task that
  entered it). Each call is a task of its own beside it, so calls from several
  threads run at once.
- The async client's books (unfinished ids, stats, a run's pending ids) are
  read on the loop thread, never while the loop changes them.
- A call interrupted in the calling thread (Ctrl+C) is cancelled on the loop
  and returns only once it has unwound there: a cancelled wait forgets no id.
- `close()` ends every blocked wait and fan-out in other threads with a
  `JobsUnfinishedError` carrying the ids, lets a submit, status call or
  download on the wire finish (a POST cut halfway may pay for a job whose id
  never arrives), stops the runs still open, then closes the async client.
"""

from __future__ import annotations

import contextlib
import enum
import os
import threading
import time
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
)
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_futures
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, overload

import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread
import httpx

from . import _download
from ._client import DEFAULT_TIMEOUT, AsyncRealESRGAN, LocalInput, WebhookMode
from ._events import JobEvent
from ._exceptions import InvalidRequestError, JobsUnfinishedError, JobSystemError
from ._fanout import KeyFor, UpscaleRun
from ._hosts import ImageHost
from ._journal import Journal
from ._models import Job, JobState, Outcome, Status, UpscaleRequest
from ._resubmit import ResubmitPolicy, resubmit_delay
from ._retry import RetryPolicy
from ._scheduler import PollPolicy
from ._stats import Stats
from ._store import Store

T = TypeVar("T")
Backend = Literal["asyncio", "trio"]
ImageInput = str | UpscaleRequest

#: How long a blocked caller sleeps between looks at its call. A lock wait with
#: no timeout cannot be interrupted by Ctrl+C on Windows; with one, it can.
_WAKE_EVERY = 0.25


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class RealESRGAN:
    """A synchronous client for the Real-ESRGAN gateway: scripts, notebooks, sync web apps.

    The same calls and guarantees as `AsyncRealESRGAN`, which does the work on
    an event loop of this client's own, in a background thread::

        with RealESRGAN() as client:
            state = client.upscale("https://example.com/cat.jpg", scale=2)
            client.download(state, "cat@2x.png")

    It works from any thread, also one whose event loop is running (a Jupyter
    cell, a sync view inside an async server). It is thread-safe: several
    threads may share one client and call it at once. Ctrl+C during a call
    cancels that call only; the ids of paid jobs stay in
    `unfinished_request_ids`.

    Args:
        api_key: The gateway key; defaults to the ``REAL_ESRGAN_API_KEY``
            environment variable. Never in a repr, log line or exception.
        base_url: The gateway (or an emulator's) origin.
        timeout: Per-request timeout, seconds or an `httpx.Timeout`.
        max_connections: Requests in flight at once, across everything.
        retry: When and how often to retry (see `RetryPolicy`).
        poll: When to check jobs (see `PollPolicy`).
        allow_private_image_hosts: Accept image URLs on loopback or private
            hosts (by default only when `base_url` is itself on one).
        webhook_url: Default callback URL for submits (see
            `AsyncRealESRGAN`). Callbacks reach a `WebhookReceiver` of an
            async client sharing `webhook_secret`, not this client: a `wait`
            here on a job submitted with a webhook relies on the slow
            safety-net poll. Submit with webhooks when another process
            receives them.
        webhook_mode: Default ``X-Webhook-Mode``: ``"terminal"`` or ``"sync"``.
        webhook_confirm: See `AsyncRealESRGAN`.
        webhook_secret: The token put in callback URLs (at least 22 URL-safe
            characters, not hand-made: e.g. ``secrets.token_urlsafe(32)``), to
            share one receiver between processes.
        allow_insecure_webhooks: Accept ``http://`` webhook URLs to loopback hosts.
        max_download_bytes: Largest output `download` accepts.
        on_progress: Called with a `Stats` snapshot each time a job is
            submitted or seen finished. It runs on the client's own thread:
            keep it quick, and call no blocking method of this client in it.
        allow_insecure_http: See `AsyncRealESRGAN`.
        on_event: Called with a `JobEvent` for each change of each job (see
            `AsyncRealESRGAN`); on the client's own thread, like `on_progress`.
        resubmit: Jobs that end ERROR (not charged) are resubmitted: True
            (the default `ResubmitPolicy`), False, or a `ResubmitPolicy`.
        image_host: Where local files and bytes are published (see `AsyncRealESRGAN`).
        store: Where `idempotency_key`s are recorded (see `AsyncRealESRGAN`).
        preflight: Read each input's header from its host before paying for
            it, and refuse one over the pixel limit or not an image (see
            `AsyncRealESRGAN`); off by default.
        backend: The event loop the client runs: ``"asyncio"`` or ``"trio"``.
        backend_options: Passed to that backend's ``run`` (see `anyio.run`),
            e.g. ``{"use_uvloop": True}``.

    There is no ``http_client`` option: an `httpx.AsyncClient` belongs to the
    event loop it is used on, and this one is private to the client.

    Raises:
        InvalidRequestError: No key was given or found, or an option is invalid.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_connections: int = 16,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        allow_private_image_hosts: bool | None = None,
        webhook_url: str | None = None,
        webhook_mode: WebhookMode = "terminal",
        webhook_confirm: bool = True,
        webhook_secret: str | None = None,
        allow_insecure_webhooks: bool = False,
        max_download_bytes: int = _download.DEFAULT_MAX_BYTES,
        on_progress: Callable[[Stats], None] | None = None,
        allow_insecure_http: bool = False,
        on_event: Callable[[JobEvent], None] | None = None,
        resubmit: ResubmitPolicy | bool = True,
        image_host: ImageHost | None = None,
        store: Store | None = None,
        preflight: bool = False,
        backend: Backend = "asyncio",
        backend_options: Mapping[str, Any] | None = None,
    ) -> None:
        # The key leaves this frame's locals before anything can raise (a traceback
        # formatted with locals must not show it): it is only on the call's stack.
        secret = [api_key]
        del api_key
        if backend not in ("asyncio", "trio"):
            raise InvalidRequestError(f"backend must be 'asyncio' or 'trio', got {backend!r}")
        if backend_options is not None and not isinstance(backend_options, Mapping):
            raise InvalidRequestError(
                f"backend_options must be a mapping or None, got {type(backend_options).__name__}"
            )
        # Built here, in the caller's thread: it only validates and stores its options
        # (nothing in it is bound to an event loop before it is opened), so bad options
        # fail at once.
        self._async = AsyncRealESRGAN(
            secret.pop(),
            base_url=base_url,
            timeout=timeout,
            max_connections=max_connections,
            retry=retry,
            poll=poll,
            allow_private_image_hosts=allow_private_image_hosts,
            webhook_url=webhook_url,
            webhook_mode=webhook_mode,
            webhook_confirm=webhook_confirm,
            webhook_secret=webhook_secret,
            allow_insecure_webhooks=allow_insecure_webhooks,
            max_download_bytes=max_download_bytes,
            on_progress=on_progress,
            allow_insecure_http=allow_insecure_http,
            on_event=on_event,
            resubmit=resubmit,
            image_host=image_host,
            store=store,
            preflight=preflight,
        )
        self.base_url = self._async.base_url
        self.resubmit_policy = self._async.resubmit_policy
        self.backend: Backend = backend
        self._backend_options = dict(backend_options or {})
        self._state = _State.UNOPENED
        self._lock = threading.Lock()  # open/close transitions, one at a time
        self._exit_stack = contextlib.ExitStack()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._host: Future[None] | None = None
        self._loop_thread: int | None = None
        # Touched on the loop thread only:
        self._calls: dict[anyio.CancelScope, bool] = {}  # scope -> whether close() cancels it
        self._runs: weakref.WeakSet[UpscaleRun] = weakref.WeakSet()
        self._closing = False
        self._stop: anyio.Event | None = None
        self._idle: anyio.Event | None = None

    def __repr__(self) -> str:
        # Tolerates a half-built client: a traceback formatted with locals reprs `self`.
        state = getattr(self, "_state", _State.UNOPENED)
        return (
            f"<RealESRGAN base_url={str(getattr(self, 'base_url', None))!r} "
            f"backend={getattr(self, 'backend', None)!r} state={state.value}>"
        )

    # Lifecycle ------------------------------------------------------------------

    def open(self) -> Self:
        """Start the client's event loop thread and open the async client on it.

        ``with RealESRGAN() as client:`` calls it; call it yourself where a
        ``with`` does not fit (a notebook), and `close` when done.

        Raises:
            RuntimeError: The client was already opened.
        """
        with self._lock:
            if self._state is not _State.UNOPENED:
                raise RuntimeError(
                    f"this RealESRGAN is {self._state.value}; a client can be opened only once"
                )
            stack = contextlib.ExitStack()
            try:
                portal = stack.enter_context(
                    anyio.from_thread.start_blocking_portal(self.backend, self._backend_options)
                )
                self._host, _ = portal.start_task(self._run_host)
            except BaseException:
                stack.close()
                self._loop_thread = None
                raise
            self._exit_stack = stack
            self._portal = portal
            self._state = _State.OPEN
        return self

    async def _run_host(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with self._async:
            self._stop = anyio.Event()
            self._loop_thread = threading.get_ident()
            task_status.started()
            await self._stop.wait()
            # Leaving `async with` closes the async client, in the task that opened it.

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the client; idempotent, and safe from any thread.

        A `wait`, `upscale` or fan-out loop blocked in another thread ends with
        a `JobsUnfinishedError` carrying the ids still running; a submit,
        status call or download on the wire is let finish first. Jobs still
        running at the provider are not cancelled there: their ids stay in
        `unfinished_request_ids`, which can still be read.
        """
        self._refuse_on_loop_thread("close()")
        with self._lock:
            if self._state is _State.CLOSED:
                return
            if self._state is _State.UNOPENED:
                self._state = _State.CLOSED
                return
            portal, host = self._portal, self._host
            assert portal is not None
            assert host is not None
            self._state = _State.CLOSING  # new calls are refused from here on
            try:
                portal.call(self._shutdown)
                host.result()
            except BaseException as exc:
                # Interrupted (a second Ctrl+C), or closing failed: stop the loop and
                # cancel what still runs on it. The ids stay in the async client's books.
                self._exit_stack.__exit__(type(exc), exc, exc.__traceback__)
                raise
            else:
                self._exit_stack.close()
            finally:
                self._state = _State.CLOSED
                self._portal = None
                self._loop_thread = None  # its ident may be given to a new thread

    async def _shutdown(self) -> None:
        """On the loop: end the waits, let the rest finish, stop the runs, stop the host."""
        self._closing = True
        for scope, ended_by_close in list(self._calls.items()):
            if ended_by_close:
                scope.cancel()
        while self._calls:
            self._idle = anyio.Event()
            await self._idle.wait()
        for run in list(self._runs):
            await run.aclose()  # its journal closed, no POST of it on the wire
        assert self._stop is not None
        self._stop.set()

    def _closed_error(self) -> RuntimeError:
        if self._state is _State.UNOPENED:
            return RuntimeError(
                "this RealESRGAN is not open; use `with RealESRGAN() as client:` "
                "or call client.open()"
            )
        return RuntimeError("this RealESRGAN is closed; create a new client")

    # Running calls on the loop -----------------------------------------------------

    def _refuse_on_loop_thread(self, what: str) -> None:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError(
                f"{what} blocks, and this is the client's own thread (an on_progress "
                "callback?): it would wait for itself"
            )

    def _open_portal(self) -> anyio.from_thread.BlockingPortal:
        self._refuse_on_loop_thread("a call of RealESRGAN")
        portal = self._portal
        if self._state is not _State.OPEN or portal is None:
            raise self._closed_error()
        return portal

    def _call(
        self,
        func: Callable[[], Awaitable[T]],
        *,
        on_close: Callable[[], BaseException] | None = None,
    ) -> T:
        """Run `func()` on the loop and block until it ends; Ctrl+C cancels it there.

        Args:
            func: Makes the awaitable, on the loop thread.
            on_close: For a call that may block for long (a wait): `close()`
                cancels it, and it raises what this returns (on the loop thread).
                Without it, `close()` lets the call finish.
        """
        portal = self._open_portal()
        unwound = threading.Event()
        try:
            future = portal.start_task_soon(self._guarded, func, on_close, unwound)
        except RuntimeError:  # the loop stopped between the check and the call
            raise self._closed_error() from None
        try:
            while not future.done():
                wait_for_futures([future], timeout=_WAKE_EVERY)
            return future.result()
        except BaseException:
            # Interrupted here (Ctrl+C): cancel the call on the loop, and return only
            # once it has unwound there, so the books are settled when the caller looks.
            if future.cancel():
                unwound.wait()
            raise

    async def _guarded(
        self,
        func: Callable[[], Awaitable[T]],
        on_close: Callable[[], BaseException] | None,
        unwound: threading.Event,
    ) -> T:
        try:
            if self._closing:
                raise self._closed_error()
            with anyio.CancelScope() as scope:
                self._calls[scope] = on_close is not None
                try:
                    return await func()
                finally:
                    del self._calls[scope]
                    if not self._calls and self._idle is not None:
                        self._idle.set()
            # The scope swallowed its own cancellation: only `_shutdown` cancels it,
            # and only for calls that have an `on_close`.
            assert on_close is not None
            raise on_close()
        finally:
            unwound.set()

    def _on_loop(self, func: Callable[[], T]) -> T:
        """Run a quick synchronous `func` on the loop thread (the only one that may
        touch the async client's books); raise `RuntimeError` if the client is not open.
        """
        if threading.get_ident() == self._loop_thread:
            return func()  # called back on the loop (on_progress): already there
        portal = self._open_portal()
        try:
            return portal.call(func)
        except RuntimeError:
            if self._state is _State.OPEN:
                raise  # func's own error
            raise self._closed_error() from None

    def _read(self, read: Callable[[], T]) -> T:
        """`read()` on the loop thread while it runs; directly once nothing runs there."""
        if threading.get_ident() == self._loop_thread:
            return read()  # called back on the loop (on_progress), maybe while closing
        if self._state is _State.OPEN:
            try:
                return self._on_loop(read)
            except RuntimeError:
                if self._state is _State.OPEN:
                    raise
        with self._lock:  # closing: wait until the loop has stopped changing the books
            return read()

    # Single jobs ----------------------------------------------------------------

    def make_request(
        self,
        image: ImageInput,
        *,
        scale: int | None = None,
        face_enhance: bool | None = None,
    ) -> UpscaleRequest:
        """Validate an input as `submit` would, without sending anything.

        Raises:
            InvalidRequestError: The input is invalid, or names a private host
                the gateway cannot fetch.
        """
        return self._async.make_request(image, scale=scale, face_enhance=face_enhance)

    def webhook_callback_url(self, webhook_url: str | None = None) -> str:
        """The URL sent as ``X-Webhook-URL``: `webhook_url` plus this client's token.

        See `AsyncRealESRGAN.webhook_callback_url`. Treat the URL as a secret.

        Raises:
            InvalidRequestError: No URL was given or configured, or it is not https.
        """
        return self._async.webhook_callback_url(webhook_url)

    def submit(
        self,
        image: ImageInput | LocalInput,
        *,
        scale: int | None = None,
        face_enhance: bool | None = None,
        webhook_url: str | None = None,
        webhook_mode: WebhookMode | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit one paid job ($0.002) and return it as soon as it is queued.

        Same arguments and errors as `AsyncRealESRGAN.submit`. The job's
        `request_id` is kept in `unfinished_request_ids` until it is seen finished.

        Raises:
            InvalidRequestError: Bad input; nothing was sent.
            AmbiguousSubmitError: Sent, but whether a job exists is unknown.
            APIStatusError: The gateway refused (400/401/402/403/429/5xx before sending).
            APIConnectionError: The gateway could not be reached; nothing was paid.
            RuntimeError: The client is not open.
        """
        client = self._async
        return self._call(
            lambda: client.submit(
                image,
                scale=scale,
                face_enhance=face_enhance,
                webhook_url=webhook_url,
                webhook_mode=webhook_mode,
                idempotency_key=idempotency_key,
            )
        )

    def resubmit(
        self,
        previous: Job | str,
        image: ImageInput | LocalInput,
        *,
        scale: int | None = None,
        face_enhance: bool | None = None,
        webhook_url: str | None = None,
        webhook_mode: WebhookMode | None = None,
    ) -> Job:
        """Submit `image` again as a new paid job replacing `previous`, which ended ERROR.

        Same arguments and errors as `AsyncRealESRGAN.resubmit`: `submit`'s,
        booked as a resubmission (``stats().resubmitted``, a RESUBMITTED event).
        """
        client = self._async
        return self._call(
            lambda: client.resubmit(
                previous,
                image,
                scale=scale,
                face_enhance=face_enhance,
                webhook_url=webhook_url,
                webhook_mode=webhook_mode,
            )
        )

    def status(self, job: Job | str) -> JobState:
        """Fetch a job's current state (one GET, retried on transient failures).

        Raises:
            APIStatusError: The gateway refused the call (401/403/404...).
            RuntimeError: The client is not open.
        """
        client = self._async
        return self._call(lambda: client.status(job))

    def wait(self, job: Job | str, *, timeout: float | None = None) -> JobState:
        """Wait until a job finishes; return its COMPLETED state.

        Waits from several threads share the client's one poll scheduler.

        Raises:
            JobFailedError: The job ended FAILED.
            JobSystemError: The job ended ERROR (not charged; a resubmit may work).
            JobTimeoutError: `timeout` seconds passed; the job still runs.
            JobsUnfinishedError: The client was closed (from another thread)
                during the wait; the job's id is on the error.
            APIStatusError: The gateway refused the status calls (401/403/404).
            RuntimeError: The client is not open.
        """
        client = self._async
        request_id = job.request_id if isinstance(job, Job) else str(job)
        return self._call(
            lambda: client.wait(job, timeout=timeout),
            on_close=lambda: JobsUnfinishedError(
                (request_id,), "the client was closed during the wait"
            ),
        )

    def upscale(
        self,
        image: ImageInput | LocalInput,
        *,
        scale: int | None = None,
        face_enhance: bool | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> JobState:
        """Submit one job and wait for it: `submit` then `wait`. Same errors as both.

        A job that ends ERROR (not charged) is resubmitted as the client's
        `ResubmitPolicy` says, as `AsyncRealESRGAN.upscale` does (not under an
        `idempotency_key`, whose record is the job).
        """
        if idempotency_key is not None:
            client = self._async
            return self._call(
                lambda: client.upscale(
                    image,
                    scale=scale,
                    face_enhance=face_enhance,
                    timeout=timeout,
                    idempotency_key=idempotency_key,
                ),
                on_close=lambda: JobsUnfinishedError(
                    (), "the client was closed during a keyed upscale"
                ),
            )
        job = self.submit(image, scale=scale, face_enhance=face_enhance)
        resubmits = 0
        while True:
            try:
                return self.wait(job, timeout=timeout)
            except JobSystemError:
                delay = resubmit_delay(self.resubmit_policy, Status.ERROR, resubmits)
                if delay is None:
                    raise
                time.sleep(delay)  # (this is the caller's thread, not the loop's)
            except RuntimeError as exc:  # closed between the submit and the wait
                raise JobsUnfinishedError(
                    (job.request_id,), "the client was closed during the wait"
                ) from exc
            resubmits += 1
            job = self.resubmit(job, image, scale=scale, face_enhance=face_enhance)

    def upscale_many(
        self,
        images: Iterable[ImageInput | LocalInput],
        *,
        scale: int | None = None,
        face_enhance: bool | None = None,
        max_in_flight: int = 64,
        job_timeout: float | None = None,
        ordered: bool = False,
        journal: str | os.PathLike[str] | Journal | None = None,
        resubmit_ambiguous: bool = False,
        resubmit: ResubmitPolicy | bool | None = None,
        idempotency_key: KeyFor | None = None,
    ) -> SyncUpscaleRun:
        """Upscale a stream of images; iterate the result for one `Outcome` per input.

        The same fan-out as `AsyncRealESRGAN.upscale_many` (same arguments):
        inputs are pulled lazily, one per free slot, at most `max_in_flight`
        jobs at once, and every input gets exactly one `Outcome`. An iterator
        that is not a collection is pulled in a worker thread, so a slow
        generator (a crawler) never stalls the client's polling.

        Use it as ``with client.upscale_many(...) as run: for outcome in run:``
        so that leaving the loop early stops submitting at once; the ids of
        jobs paid for and unfinished stay in `SyncUpscaleRun.unfinished_request_ids`
        (and the client's).

        Raises:
            InvalidRequestError: An argument is invalid; nothing was sent.
            RuntimeError: The client is not open.
        """
        source: Iterable[ImageInput | LocalInput] | _PulledInThread = images
        if isinstance(images, Iterable) and not isinstance(images, Collection):
            source = _PulledInThread(images)
        client = self._async

        def start() -> UpscaleRun:
            run = client.upscale_many(
                source,
                scale=scale,
                face_enhance=face_enhance,
                max_in_flight=max_in_flight,
                job_timeout=job_timeout,
                ordered=ordered,
                journal=journal,
                resubmit_ambiguous=resubmit_ambiguous,
                resubmit=resubmit,
                idempotency_key=idempotency_key,
            )
            self._runs.add(run)
            return run

        return SyncUpscaleRun(self, self._on_loop(start))

    # Results and bookkeeping ------------------------------------------------------

    @overload
    def download(
        self, state: JobState, dest: None = None, *, max_bytes: int | None = None
    ) -> bytes: ...

    @overload
    def download(
        self, state: JobState, dest: str | os.PathLike[str], *, max_bytes: int | None = None
    ) -> Path: ...

    def download(
        self,
        state: JobState,
        dest: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int | None = None,
    ) -> bytes | Path:
        """Download a COMPLETED job's output image (see `AsyncRealESRGAN.download`).

        Returns:
            The bytes, or the `Path` written.

        Raises:
            DownloadError: No output, an expired or failing URL, a body that is
                not an image, or one larger than `max_bytes`.
            RuntimeError: The client is not open.
        """
        client = self._async
        if dest is None:
            return self._call(lambda: client.download(state, max_bytes=max_bytes))
        return self._call(lambda: client.download(state, dest, max_bytes=max_bytes))

    @property
    def unfinished_request_ids(self) -> tuple[str, ...]:
        """Jobs this client paid for or waited on and has not yet seen finish.

        Readable at any time, also once the client is closed.
        """
        client = self._async
        return self._read(lambda: client.unfinished_request_ids)

    def stats(self) -> Stats:
        """A snapshot of this client's counters."""
        return self._read(self._async.stats)


class SyncUpscaleRun:
    """The iterator `RealESRGAN.upscale_many` returns: ``for outcome in run:``.

    Also a context manager: leaving its ``with`` block (a ``break``, an
    exception, Ctrl+C) stops submitting and returns once no POST of the run is
    on the wire; the ids of jobs submitted and unfinished stay in
    `unfinished_request_ids` and in the client's. One thread at a time takes
    outcomes from it (several threads calling `next` are served in turn).

    Raises (from the loop, after the outcomes it could yield): as `UpscaleRun`,
    and `JobsUnfinishedError` when the client is closed during the run.
    """

    def __init__(self, client: RealESRGAN, run: UpscaleRun) -> None:
        self._client = client
        self._run = run
        self._lock = threading.Lock()
        self._ended = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Outcome:
        with self._lock:
            if self._ended:
                raise StopIteration
            try:
                outcome = self._client._call(self._next, on_close=self._closed_during_run)
            except BaseException:
                self._ended = True  # the run stopped (Ctrl+C, an error, the client closed)
                raise
            if outcome is None:
                self._ended = True
                raise StopIteration
            return outcome

    async def _next(self) -> Outcome | None:
        try:
            return await self._run.__anext__()
        except StopAsyncIteration:
            return None

    def _closed_during_run(self) -> JobsUnfinishedError:
        return JobsUnfinishedError(
            self._run.unfinished_request_ids, "the client was closed during the run"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop pulling and submitting; return once no POST of this run is on the wire.

        Idempotent. Once the client is closed it does nothing: closing the
        client stopped the run.
        """
        self._ended = True
        if self._client._state is not _State.OPEN:
            return
        run = self._run
        with contextlib.suppress(RuntimeError):  # the client closed meanwhile: run stopped
            self._client._call(run.aclose)

    def __del__(self) -> None:
        # `for outcome in client.upscale_many(...): break` drops the run at once (on
        # CPython): stop it on the loop, without blocking whoever dropped it. On the loop
        # thread itself the `UpscaleRun` stops itself as it is dropped.
        client = getattr(self, "_client", None)
        run = getattr(self, "_run", None)
        if client is None or run is None or self._ended:
            return
        portal = client._portal
        if portal is None or threading.get_ident() == client._loop_thread:
            return
        with contextlib.suppress(RuntimeError):  # the loop has stopped: the run stopped with it
            portal.start_task_soon(run.aclose)

    @property
    def unfinished_request_ids(self) -> tuple[str, ...]:
        """Jobs this run submitted (and paid for) that have not been seen finished."""
        run = self._run
        return self._client._read(lambda: run.unfinished_request_ids)

    @property
    def unconsumed_outcomes(self) -> tuple[Outcome, ...]:
        """Outcomes of jobs that finished but were not taken when the run stopped."""
        run = self._run

        def read() -> tuple[Outcome, ...]:
            return run.unconsumed_outcomes

        return self._client._read(read)

    @property
    def journal(self) -> Journal | None:
        """The run's journal (an `SQLiteJournal` when a path was given), or None."""
        return self._run.journal

    def mark_saved(self, outcome: Outcome | int, path: str | os.PathLike[str]) -> None:
        """Record in the journal that `outcome`'s output was saved at `path`.

        See `UpscaleRun.mark_saved`; with ``journal=PATH``, mark each output
        inside the loop (the run closes its journal when the loop ends).

        Raises:
            RuntimeError: The run has no journal, it is closed, or the client is.
            JournalError: The journal has no COMPLETED entry at that index.
        """
        run = self._run
        self._client._on_loop(lambda: run.mark_saved(outcome, path))


class _PulledInThread:
    """A sync iterator seen as an async one, each item pulled in a worker thread.

    A class, not an async generator: the fan-out may stop pulling halfway, and
    an async generator left unfinished is finalised by the event loop later.
    """

    def __init__(self, images: Iterable[ImageInput | LocalInput]) -> None:
        self._iterator = iter(images)

    def __aiter__(self) -> AsyncIterator[ImageInput | LocalInput]:
        return self

    async def __anext__(self) -> ImageInput | LocalInput:
        item = await anyio.to_thread.run_sync(_pull, self._iterator)
        if isinstance(item, _End):
            raise StopAsyncIteration
        return item


class _End:
    """The end of an input iterator (a None input is an input: it gets an outcome)."""


_END = _End()


def _pull(iterator: Iterator[ImageInput | LocalInput]) -> ImageInput | LocalInput | _End:
    # `next` with a default: a StopIteration must not cross into a coroutine.
    return next(iterator, _END)
