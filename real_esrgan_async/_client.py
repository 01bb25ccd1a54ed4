"""`AsyncRealESRGAN`: the client users hold."""

from __future__ import annotations

import enum
import os
from collections.abc import AsyncIterable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, overload

import anyio
import anyio.abc
import httpx

from . import _download
from ._exceptions import AmbiguousSubmitError, InvalidRequestError
from ._fanout import UpscaleRun
from ._gateway import Gateway
from ._journal import Journal
from ._models import Job, JobState, Status, UpscaleRequest
from ._poller import Poller, Resolution, unwrap
from ._retry import RetryPolicy
from ._scheduler import PollPolicy
from ._stats import Counters, Stats
from ._urls import check_image_url, is_private_host, same_origin
from ._webhooks import check_secret, check_webhook_url, new_token, url_with_token

DEFAULT_BASE_URL = "https://gateway.pixazo.ai"
API_KEY_ENV = "REAL_ESRGAN_API_KEY"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
WebhookMode = Literal["terminal", "sync"]
ImageInput = str | UpscaleRequest


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class AsyncRealESRGAN:
    """An async client for the Real-ESRGAN gateway, on asyncio or trio.

    Use it as an async context manager; it owns a task group (the poller and
    fan-out runs) for as long as it is open::

        async with AsyncRealESRGAN() as client:
            state = await client.upscale("https://example.com/cat.jpg", scale=2)
            png = await client.download(state)

    Args:
        api_key: The gateway key; defaults to the ``REAL_ESRGAN_API_KEY``
            environment variable. It is sent only to `base_url`'s origin and
            never appears in a repr, log line or exception.
        base_url: The gateway (or an emulator's) origin.
        timeout: Per-request timeout, seconds or an `httpx.Timeout`.
        http_client: An `httpx.AsyncClient` to use; the caller keeps it and
            closes it (this client never does).
        max_connections: Requests in flight at once, across everything the
            client does. The client's own connection pool is sized to it, so
            requests never queue inside httpx (which gets slow when they do).
        retry: When and how often to retry (see `RetryPolicy`).
        poll: When to check jobs (see `PollPolicy`).
        allow_private_image_hosts: Accept image URLs on loopback or private
            hosts. By default only when `base_url` is itself on such a host
            (an emulator), since the real gateway cannot fetch them.
        webhook_url: Default callback URL for submits: the public https URL
            where a `WebhookReceiver` for this client is mounted. The client
            appends its secret token as a last path segment (see
            `webhook_callback_url`). Jobs with a webhook are polled only as a
            slow safety net (`PollPolicy.safety_net_interval`).
        webhook_mode: Default ``X-Webhook-Mode``: ``"terminal"`` or ``"sync"``.
        webhook_confirm: Confirm each terminal callback with one status call
            before it resolves a wait (callbacks are unsigned). Turn it off
            only when no one else can reach the receiver: then a job costs no
            status call at all.
        webhook_secret: The token put in callback URLs, for several processes
            that share one URL (at least 22 URL-safe characters); by default
            each client draws its own with `secrets`.
        allow_insecure_webhooks: Accept ``http://`` webhook URLs to loopback
            hosts, for tests against the emulator (the real gateway rejects
            them); other ``http://`` URLs are refused regardless.
        max_download_bytes: Largest output `download` accepts.
        on_progress: Called with a `Stats` snapshot each time a job is
            submitted or seen finished (keep it quick: it runs in the loop).

    Raises:
        InvalidRequestError: No key was given or found, or an option is invalid.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
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
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key:
            raise InvalidRequestError(
                f"no API key: pass api_key=... or set the {API_KEY_ENV} environment variable"
            )
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise InvalidRequestError(f"max_connections must be an int, got {max_connections!r}")
        if max_connections < 1:
            raise InvalidRequestError(f"max_connections must be >= 1, got {max_connections}")
        check_image_url(base_url, field="base_url")
        self.base_url = httpx.URL(base_url)
        if allow_private_image_hosts is None:
            allow_private_image_hosts = is_private_host(base_url)
        self.allow_private_image_hosts = allow_private_image_hosts
        self.allow_insecure_webhooks = allow_insecure_webhooks
        self.webhook_url = self._check_webhook(webhook_url, webhook_mode)
        self.webhook_mode = webhook_mode
        self.webhook_confirm = webhook_confirm
        # Never derived from the API key: the callback URL is seen by the provider and
        # by every proxy and log on its way.
        self._webhook_token = (
            new_token() if webhook_secret is None else check_secret(webhook_secret)
        )
        self._webhooked: set[str] = set()  # unfinished jobs submitted with a webhook
        self.max_connections = max_connections
        self.max_download_bytes = max_download_bytes
        self._api_key = key
        self._timeout = timeout
        self._own_http = http_client is None
        self._http = http_client
        self._retry = retry or RetryPolicy()
        self._poll_policy = poll or PollPolicy()
        self._on_progress = on_progress
        self._counters = Counters()
        self._unfinished: dict[str, None] = {}
        self._state = _State.UNOPENED
        self._task_group: anyio.abc.TaskGroup | None = None
        self._gateway: Gateway | None = None
        self._poller: Poller | None = None

    def __repr__(self) -> str:
        return f"<AsyncRealESRGAN base_url={str(self.base_url)!r} state={self._state.value}>"

    # Lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise RuntimeError(
                f"this AsyncRealESRGAN is {self._state.value}; a client can be opened only once"
            )
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self._timeout,
                limits=httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=self.max_connections,
                ),
            )
        self._gateway = Gateway(
            self._http,
            base_url=self.base_url,
            api_key=self._api_key,
            limiter=anyio.CapacityLimiter(self.max_connections),
            retry=self._retry,
            counters=self._counters,
        )
        self._poller = Poller(self._gateway, self._poll_policy, on_terminal=self._finished)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._poller.run, task_group)
        self._state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop polling and close the HTTP client (if this client made it). Idempotent.

        Jobs still running at the provider are not cancelled there: their ids
        stay in `unfinished_request_ids`.
        """
        if self._state is _State.CLOSED:
            return
        was_open = self._state is _State.OPEN
        self._state = _State.CLOSED
        task_group, self._task_group = self._task_group, None
        try:
            if was_open and task_group is not None:
                task_group.cancel_scope.cancel()
                await task_group.__aexit__(None, None, None)
        finally:
            # Even when the closing task is itself cancelled (Ctrl-C on asyncio cancels
            # it natively), the connections must not leak.
            if self._own_http and self._http is not None:
                with anyio.CancelScope(shield=True):
                    await self._http.aclose()

    def _open(self) -> tuple[Gateway, Poller, anyio.abc.TaskGroup]:
        if self._state is _State.OPEN:
            assert self._gateway is not None
            assert self._poller is not None
            assert self._task_group is not None
            return self._gateway, self._poller, self._task_group
        if self._state is _State.CLOSED:
            raise RuntimeError("this AsyncRealESRGAN is closed; create a new client")
        raise RuntimeError(
            "this AsyncRealESRGAN is not open; use it as `async with AsyncRealESRGAN() as client:`"
        )

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
        if isinstance(image, UpscaleRequest):
            if scale is not None or face_enhance is not None:
                raise InvalidRequestError(
                    "pass scale/face_enhance either in the UpscaleRequest or as arguments, not both"
                )
            request = image
        elif isinstance(image, str):
            request = UpscaleRequest(
                image,
                scale=4 if scale is None else scale,
                face_enhance=False if face_enhance is None else face_enhance,
            )
        else:
            raise InvalidRequestError(
                f"image must be a URL str or an UpscaleRequest, got {type(image).__name__}"
            )
        if not self.allow_private_image_hosts and is_private_host(request.image):
            raise InvalidRequestError(
                f"image {request.image[:80]!r} is on a loopback or private host, which the "
                "gateway cannot fetch; pass allow_private_image_hosts=True if yours can"
            )
        return request

    async def submit(
        self,
        image: ImageInput,
        *,
        scale: int | None = None,
        face_enhance: bool | None = None,
        webhook_url: str | None = None,
        webhook_mode: WebhookMode | None = None,
    ) -> Job:
        """Submit one paid job ($0.002) and return it as soon as it is queued.

        Args:
            image: The input URL, or an `UpscaleRequest`.
            scale: 1, 2, 3 or 4 (default 4), when `image` is a URL.
            face_enhance: Apply face enhancement (default False), when `image` is a URL.
            webhook_url: Ask the gateway to POST the result there (https only);
                defaults to the client's `webhook_url`.
            webhook_mode: ``"terminal"`` (one callback) or ``"sync"`` (every cycle).

        Returns:
            The queued `Job`; its `request_id` is also kept in
            `unfinished_request_ids` until the client sees it finish.

        Raises:
            InvalidRequestError: Bad input; nothing was sent.
            AmbiguousSubmitError: Sent, but whether a job exists is unknown.
            APIStatusError: The gateway refused (400/401/402/403/429/5xx before sending).
            APIConnectionError: The gateway could not be reached; nothing was paid.
        """
        gateway, _, _ = self._open()
        request = self.make_request(image, scale=scale, face_enhance=face_enhance)
        headers = self._webhook_headers(webhook_url, webhook_mode)
        return await self._submit(gateway, request, headers)

    async def _submit(
        self,
        gateway: Gateway,
        request: UpscaleRequest,
        headers: dict[str, str],
        *,
        on_created: Callable[[Job], None] | None = None,
    ) -> Job:
        """Submit, keeping the books; `on_created` runs (before any checkpoint) with the job."""
        webhook = "X-Webhook-URL" in headers

        def created(job: Job) -> None:
            try:
                if on_created is not None:
                    on_created(job)
            finally:
                self._created(job, webhook=webhook)  # whatever happens, the paid id is kept

        try:
            return await gateway.submit(request, extra_headers=headers, on_created=created)
        except AmbiguousSubmitError:
            self._counters.ambiguous_submits += 1
            raise

    def _webhook_headers(self, url: str | None, mode: WebhookMode | None) -> dict[str, str]:
        if mode is not None:
            _check_mode(mode)
        url = self._check_webhook(url, mode or "terminal") if url is not None else self.webhook_url
        if url is None:
            return {}
        return {
            "X-Webhook-URL": url_with_token(url, self._webhook_token),
            "X-Webhook-Mode": mode or self.webhook_mode,
        }

    def _check_webhook(self, url: str | None, mode: str) -> str | None:
        _check_mode(mode)
        if url is None:
            return None
        return check_webhook_url(url, allow_insecure=self.allow_insecure_webhooks)

    def webhook_callback_url(self, webhook_url: str | None = None) -> str:
        """The URL sent as ``X-Webhook-URL``: `webhook_url` plus this client's token.

        The token is the URL's last path segment; the `WebhookReceiver` of
        this client accepts only callbacks that carry it. With another
        framework, route ``<webhook_url>/{token}`` and check it with
        `WebhookReceiver.check_token`. Treat the URL as a secret.

        Args:
            webhook_url: The receiver's public URL; defaults to the client's.

        Raises:
            InvalidRequestError: No URL was given or configured, or it is not https.
        """
        url = webhook_url if webhook_url is not None else self.webhook_url
        if url is None:
            raise InvalidRequestError("no webhook_url: pass one, or configure the client's")
        url = check_webhook_url(url, allow_insecure=self.allow_insecure_webhooks)
        return url_with_token(url, self._webhook_token)

    def _created(self, job: Job, *, webhook: bool = False) -> None:
        self._counters.submitted += 1
        self._unfinished[job.request_id] = None
        if webhook:
            self._webhooked.add(job.request_id)
        self._progress()

    def _finished(self, state: JobState) -> None:
        self._webhooked.discard(state.request_id)
        if state.request_id not in self._unfinished:
            return  # not a job in flight here, or already counted
        del self._unfinished[state.request_id]
        if state.status is Status.COMPLETED:
            self._counters.completed += 1
        elif state.status is Status.FAILED:
            self._counters.failed += 1
        else:
            self._counters.errored += 1
        self._progress()

    def _progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.stats())

    async def status(self, job: Job | str) -> JobState:
        """Fetch a job's current state (one GET, retried on transient failures).

        A terminal state seen here also resolves any `wait` on the job.
        """
        gateway, poller, _ = self._open()
        url = None
        if isinstance(job, Job) and job.polling_url and same_origin(job.polling_url, self.base_url):
            url = job.polling_url  # followed only on the gateway's origin: the key goes with it
        state = await gateway.status(_request_id(job), url=url)
        poller.observe(state)
        return state

    async def wait(self, job: Job | str, *, timeout: float | None = None) -> JobState:
        """Wait until a job finishes; return its COMPLETED state.

        All waits share one poll scheduler: two waits on one job cost no more
        status calls than one.

        Raises:
            JobFailedError: The job ended FAILED.
            JobSystemError: The job ended ERROR (not charged; a resubmit may work).
            JobTimeoutError: `timeout` seconds passed; the job still runs and
                can be waited on again (its id is on the error).
            APIStatusError: The gateway refused the status calls (401/403/404).
        """
        _, poller, _ = self._open()
        request_id = _request_id(job)
        if timeout is not None and not timeout > 0:
            raise InvalidRequestError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        self._unfinished.setdefault(request_id, None)
        done = anyio.Event()
        outcome: list[Resolution] = []

        def resolved(resolution: Resolution) -> None:
            outcome.append(resolution)
            done.set()

        # A job that reports by webhook is polled only as a safety net.
        safety_net = request_id in self._webhooked
        token = poller.watch(request_id, resolved, timeout=timeout, safety_net=safety_net)
        try:
            await done.wait()
        finally:
            poller.unwatch(token)
        return unwrap(outcome[0])

    async def upscale(
        self,
        image: ImageInput,
        *,
        scale: int | None = None,
        face_enhance: bool | None = None,
        timeout: float | None = None,
    ) -> JobState:
        """Submit one job and wait for it: `submit` then `wait`. Same errors as both."""
        job = await self.submit(image, scale=scale, face_enhance=face_enhance)
        return await self.wait(job, timeout=timeout)

    def upscale_many(
        self,
        images: Iterable[ImageInput] | AsyncIterable[ImageInput],
        *,
        scale: int | None = None,
        face_enhance: bool | None = None,
        max_in_flight: int = 64,
        job_timeout: float | None = None,
        ordered: bool = False,
        journal: str | os.PathLike[str] | Journal | None = None,
        resubmit_ambiguous: bool = False,
    ) -> UpscaleRun:
        """Upscale a stream of images; yield one `Outcome` per input as each finishes.

        Inputs are pulled lazily, one per free slot; at most `max_in_flight`
        jobs are submitted and unfinished at any moment. Every input gets
        exactly one `Outcome`: a rejected input, a failed job or an ambiguous
        submit is an outcome with its `error`, never an exception that ends
        the stream.

        Args:
            images: An iterable or async iterable of URLs or `UpscaleRequest`s.
            scale: Scale for URL inputs (default 4).
            face_enhance: Face enhancement for URL inputs (default False).
            max_in_flight: Jobs submitted and not yet consumed, at most.
            job_timeout: Seconds to wait for each job; then its outcome
                carries a `JobTimeoutError` with its id.
            ordered: Yield in input order instead of completion order.
            journal: A path (an `SQLiteJournal`, opened and closed by the run)
                or an open `Journal`. Each input is recorded before its POST,
                its `request_id` as soon as the gateway returns it, and its end.
                A rerun with the same inputs and journal resumes: ids in flight
                are polled and never resubmitted, finished inputs are yielded
                again with ``resumed=True`` (and `Outcome.saved_to`, see
                `UpscaleRun.mark_saved`), the rest are submitted.
            resubmit_ambiguous: Submit again the inputs whose earlier submit
                may or may not have created a job (by default they are yielded
                with an `AmbiguousSubmitError`, since a resubmit may pay twice).

        Returns:
            An `UpscaleRun`: iterate it with ``async for``.

        Raises (from the loop):
            JournalLockedError: Another process holds the journal.
            JournalMismatchError: An input differs from the one the journal
                recorded at its index; nothing from there on was submitted.
            JournalError: The journal could not be read or written.
        """
        _, _, task_group = self._open()
        return UpscaleRun(
            self,
            task_group,
            images,
            scale=scale,
            face_enhance=face_enhance,
            max_in_flight=max_in_flight,
            job_timeout=job_timeout,
            ordered=ordered,
            journal=journal,
            resubmit_ambiguous=resubmit_ambiguous,
        )

    # Results and bookkeeping ------------------------------------------------------

    @overload
    async def download(
        self, state: JobState, dest: None = None, *, max_bytes: int | None = None
    ) -> bytes: ...

    @overload
    async def download(
        self, state: JobState, dest: str | os.PathLike[str], *, max_bytes: int | None = None
    ) -> Path: ...

    async def download(
        self,
        state: JobState,
        dest: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int | None = None,
    ) -> bytes | Path:
        """Download a COMPLETED job's output image.

        The API key is never sent to the media host. Output URLs expire (about
        an hour on comparable hosts): download promptly.

        Args:
            state: A COMPLETED `JobState`.
            dest: None to return the bytes; a file path to stream into (written
                to a temporary file beside it, then renamed, so a crash never
                leaves a partial file under the final name); or an existing
                directory, to write ``<request_id>.png`` in it.
            max_bytes: Refuse larger outputs (default: the client's `max_download_bytes`).

        Returns:
            The bytes, or the `Path` written.

        Raises:
            DownloadError: No output, an expired or failing URL, a body that is
                not an image, or one larger than `max_bytes`.
        """
        gateway, _, _ = self._open()
        return await _download.download(
            gateway,
            state,
            None if dest is None else Path(dest),
            max_bytes=self.max_download_bytes if max_bytes is None else max_bytes,
        )

    @property
    def unfinished_request_ids(self) -> tuple[str, ...]:
        """Jobs this client paid for or waited on and has not yet seen finish."""
        return tuple(self._unfinished)

    def stats(self) -> Stats:
        """A snapshot of this client's counters."""
        return self._counters.snapshot(in_flight=len(self._unfinished))


def _request_id(job: Job | str) -> str:
    if isinstance(job, Job):
        return job.request_id
    if isinstance(job, str) and job.strip():
        return job
    raise InvalidRequestError(f"expected a Job or a request_id str, got {job!r}")


def _check_mode(mode: str) -> None:
    if mode not in ("terminal", "sync"):
        raise InvalidRequestError(f"webhook_mode must be 'terminal' or 'sync', got {mode!r}")
