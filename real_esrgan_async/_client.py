"""`AsyncRealESRGAN`: the client users hold.

It validates what it is given, owns the lifecycle (unopened, open, closed) and
the `Ledger` of what it paid for; everything that exists only while it is open
lives in its `Session` (`_session`), which its methods, the fan-out and the
webhook receiver use through named methods.
"""

from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import AsyncIterable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, overload

import anyio
import anyio.abc
import httpx

from . import _download, _options
from ._checks import share_checks
from ._events import JobEvent
from ._exceptions import (
    AmbiguousSubmitError,
    InvalidRequestError,
    JobsUnfinishedError,
    JobSystemError,
)
from ._fanout import KeyFor, UpscaleRun
from ._gateway import ApiKey, Gateway
from ._hosts import (
    ImageHost,
    inspect_local,
    needs_image_host,
    publish_checked,
    retract_shielded,
)
from ._journal import Journal
from ._keyed import Keys
from ._ledger import Ledger
from ._local_images import PublishedImage, describe, redact
from ._models import Job, JobState, Outcome, Resolution, Status, UpscaleRequest, unwrap
from ._preflight import Preflight
from ._resubmit import ResubmitPolicy, as_policy, resubmit_delay
from ._retry import RetryPolicy
from ._scheduler import PollPolicy
from ._session import Session, WebhookSettings
from ._stats import Stats
from ._store import Store
from ._urls import check_base_url, is_private_host, same_origin
from ._webhook_urls import check_secret, check_webhook_url, new_token, url_with_token

DEFAULT_BASE_URL = "https://gateway.pixazo.ai"
API_KEY_ENV = "REAL_ESRGAN_API_KEY"
BASE_URL_ENV = "REAL_ESRGAN_BASE_URL"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
WebhookMode = Literal["terminal", "sync"]
WEBHOOK_MODES = ("terminal", "sync")
ImageInput = str | UpscaleRequest
#: A local input, published through the client's `image_host` before the job is paid for.
LocalInput = os.PathLike[str] | bytes
_CLOSED_REASON = "the client was closed"

logger = logging.getLogger("real_esrgan_async")


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
        base_url: The gateway (or an emulator's) origin; defaults to the
            ``REAL_ESRGAN_BASE_URL`` environment variable, then the hosted gateway.
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
        allow_insecure_http: Accept an ``http://`` `base_url` to a host other
            than loopback (the key would cross the network in clear text): only
            for a network you trust.
        on_event: Called with a `JobEvent` for each change of each job of this
            client: submitted, resubmitted, a new status seen (QUEUED,
            PROCESSING), finished. For a per-job progress display; keep it
            quick too.
        resubmit: What to do with jobs that end ERROR (a system error the
            gateway does not charge for): True (the default `ResubmitPolicy`:
            up to 2 resubmissions, after 1 s then 2 s), False (never), or a
            `ResubmitPolicy`. Used by `upscale` and `upscale_many`; FAILED
            jobs (charged: the input is bad) are never resubmitted.
        image_host: Where local files and bytes are published so the gateway
            can fetch them (e.g. an `S3ImageHost`); without one, `submit` and
            `upscale` take URLs only.
        store: Where `idempotency_key`s are recorded, shared by every process
            that uses the same store: a `SQLiteStore` (one machine) or a
            `RedisStore` (a fleet; it may also hold a fleet-wide submit budget
            and shares each 429's pause with every worker). Opened with the
            client and closed with it.
        preflight: Before each paid POST, read the input's first 64 KiB from
            its own host (a ranged GET without the key) and refuse, with an
            `InvalidRequestError` and nothing paid, an input over the model's
            2,096,704-pixel limit or one that is not a decodable image; the
            size learned lets the poll schedule fit the job. Off by default
            (see the README's "Preflight" section: it fetches caller-given URLs
            from this process's network).

    Raises:
        InvalidRequestError: No key was given or found, or an option is invalid
            (the message says which, and what is allowed).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
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
        allow_insecure_http: bool = False,
        on_event: Callable[[JobEvent], None] | None = None,
        resubmit: ResubmitPolicy | bool = True,
        image_host: ImageHost | None = None,
        store: Store | None = None,
        preflight: bool = False,
    ) -> None:
        owner = "AsyncRealESRGAN"
        # The key leaves this frame's locals before anything can raise: a traceback
        # formatted with its locals (error trackers do) must not show it.
        pending = [api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")]
        del api_key
        key = _api_key(pending.pop())  # (held only on the call's stack meanwhile)
        _options.flags(
            owner,
            allow_insecure_http=allow_insecure_http,
            webhook_confirm=webhook_confirm,
            allow_insecure_webhooks=allow_insecure_webhooks,
            preflight=preflight,
        )
        base_url = check_base_url(
            base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL,
            allow_insecure=allow_insecure_http,
        )
        if not isinstance(timeout, httpx.Timeout):
            _options.number(owner, "timeout", timeout, "> 0 or an httpx.Timeout", lambda v: v > 0)
        _options.instance(owner, "http_client", http_client, httpx.AsyncClient, optional=True)
        _options.number(
            owner, "max_connections", max_connections, ">= 1", lambda v: v >= 1, kind=int
        )
        _options.instance(owner, "retry", retry, RetryPolicy, optional=True)
        _options.instance(owner, "poll", poll, PollPolicy, optional=True)
        if allow_private_image_hosts is not None:
            _options.flag(owner, "allow_private_image_hosts", allow_private_image_hosts)
        _options.choice(owner, "webhook_mode", webhook_mode, WEBHOOK_MODES)
        _options.number(
            owner, "max_download_bytes", max_download_bytes, ">= 1", lambda v: v >= 1, kind=int
        )
        _options.callables_or_none(owner, on_progress=on_progress, on_event=on_event)
        self.resubmit_policy = as_policy(owner, resubmit)
        _options.instance(owner, "image_host", image_host, ImageHost, optional=True)
        self.image_host = image_host
        _options.instance(owner, "store", store, Store, optional=True)

        self.base_url = httpx.URL(base_url)
        if allow_private_image_hosts is None:
            allow_private_image_hosts = is_private_host(base_url)
        self.allow_private_image_hosts = allow_private_image_hosts
        self.allow_insecure_webhooks = allow_insecure_webhooks
        if webhook_url is not None:
            webhook_url = check_webhook_url(webhook_url, allow_insecure=allow_insecure_webhooks)
        self.webhook_url = webhook_url
        self.webhook_mode = webhook_mode
        self.webhook_confirm = webhook_confirm
        self.max_connections = max_connections
        self.max_download_bytes = max_download_bytes
        self.preflight = preflight
        # Never derived from the API key: the callback URL is seen by the provider and
        # by every proxy and log on its way.
        self._webhooks = WebhookSettings(
            url=webhook_url,
            mode=webhook_mode,
            confirm=webhook_confirm,
            token=new_token() if webhook_secret is None else check_secret(webhook_secret),
        )
        self._api_key = key
        self._timeout = timeout
        self._own_http = http_client is None
        self._http = http_client
        self._http_closed = False
        self._retry = retry or RetryPolicy()
        self._poll_policy = poll or PollPolicy()
        self._ledger = Ledger(on_progress=on_progress, on_event=on_event, clock=time.time)
        self._state = _State.UNOPENED
        self._task_group: anyio.abc.TaskGroup | None = None
        self._session: Session | None = None
        self._keys = None if store is None else Keys(store)

    def __repr__(self) -> str:
        # Tolerates a half-built client: a traceback formatted with locals reprs `self`.
        base_url = getattr(self, "base_url", None)
        state = getattr(self, "_state", _State.UNOPENED)
        return f"<AsyncRealESRGAN base_url={str(base_url)!r} state={state.value}>"

    # Lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise RuntimeError(
                f"this AsyncRealESRGAN is {self._state.value}; a client can be opened only once"
            )
        if self._keys is not None:
            await self._keys.open(str(self.base_url))  # refused before anything is started
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self._timeout,
                limits=httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=self.max_connections,
                ),
            )
        gateway = Gateway(
            self._http,
            base_url=self.base_url,
            api_key=self._api_key,
            limiter=anyio.CapacityLimiter(self.max_connections),
            retry=self._retry,
            counters=self._ledger.counters,
        )
        session = Session(
            gateway=gateway,
            poll_policy=self._poll_policy,
            ledger=self._ledger,
            webhooks=self._webhooks,
            preflight=Preflight() if self.preflight else None,
        )
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        try:
            await session.start(task_group)
            if self._keys is not None:
                session.start_soon(self._keys.share_cooldown, session)
                self._keys.relay_callbacks(session)
                share_checks(session.poller, self._keys.store)  # one status call per job
        except BaseException as exc:
            await task_group.__aexit__(type(exc), exc, exc.__traceback__)
            if self._keys is not None:
                await self._keys.close()
            raise
        self._task_group = task_group
        self._session = session
        self._state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.aclose()
        finally:
            task_group, self._task_group = self._task_group, None
            if task_group is not None:
                await task_group.__aexit__(None, None, None)  # its work has ended

    async def aclose(self) -> None:
        """Close the client: end every wait at once, stop polling, close the HTTP client.

        Idempotent, and callable from any task (an app's shutdown hook, say).
        Every wait, `upscale` and fan-out still running ends at once with a
        `JobsUnfinishedError` naming its jobs; a paid POST on the wire is let
        finish first, so its id is kept. Jobs still running at the provider are
        not cancelled there: their ids stay in `unfinished_request_ids`. The
        HTTP client is closed only if this client made it. The client's task
        group is left when its ``async with`` block ends.
        """
        if self._state is _State.OPEN:
            assert self._session is not None
            self._session.close(_CLOSED_REASON)
        self._state = _State.CLOSED
        try:
            if self._session is not None:
                with anyio.CancelScope(shield=True):
                    await self._session.wait_closed()
        finally:
            try:
                await self._close_http()
            finally:
                if self._keys is not None:
                    await self._keys.close()

    async def _close_http(self) -> None:
        if self._own_http and self._http is not None and not self._http_closed:
            self._http_closed = True
            # Even when the closing task is itself cancelled (Ctrl-C on asyncio cancels
            # it natively), the connections must not leak.
            with anyio.CancelScope(shield=True):
                await self._http.aclose()

    def session(self) -> Session:
        """The open session: what collaborators such as `WebhookReceiver` use.

        Raises:
            RuntimeError: The client is not open (yet, or any more).
        """
        if self._state is _State.OPEN:
            assert self._session is not None
            return self._session
        if self._state is _State.CLOSED:
            raise RuntimeError("this AsyncRealESRGAN is closed; create a new client")
        raise RuntimeError(
            "this AsyncRealESRGAN is not open; use it as `async with AsyncRealESRGAN() as client:`"
        )

    @property
    def webhooks(self) -> WebhookSettings:
        """The webhook settings: default URL and mode, confirmation, the secret token."""
        return self._webhooks

    # Single jobs ----------------------------------------------------------------

    def make_request(
        self,
        image: ImageInput | LocalInput,
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
        elif isinstance(image, os.PathLike | bytes):
            raise InvalidRequestError(
                f"image {describe(image)} is local: submit and upscale publish it through the "
                "client's image_host first; make_request takes URLs"
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
        image: ImageInput | LocalInput,
        *,
        scale: int | None = None,
        face_enhance: bool | None = None,
        webhook_url: str | None = None,
        webhook_mode: WebhookMode | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit one paid job ($0.002) and return it as soon as it is queued.

        Args:
            image: The input URL, an `UpscaleRequest`, or (with an `image_host`)
                a local file's path or the image's bytes: checked, published
                and fetched once here before the job is paid for, and taken
                down by the host once the job has ended.
            scale: 1, 2, 3 or 4 (default 4), when `image` is a URL.
            face_enhance: Apply face enhancement (default False), when `image` is a URL.
            webhook_url: Ask the gateway to POST the result there (https only);
                defaults to the client's `webhook_url`.
            webhook_mode: ``"terminal"`` (one callback) or ``"sync"`` (every cycle).
            idempotency_key: Pay for at most one job under this key across
                every process sharing the client's `store`, and across restarts:
                if the key already names a job, nothing is sent and that job
                is returned (`wait` on it).

        Returns:
            The queued `Job`; its `request_id` is also kept in
            `unfinished_request_ids` until the client sees it finish.

        Raises:
            InvalidRequestError: Bad input (a missing, unreadable or non-image
                file; a local input with no `image_host`); nothing was sent.
            ImageHostError: The local input could not be published, or its URL
                not fetched; nothing was paid.
            AmbiguousSubmitError: Sent, but whether a job exists is unknown.
            InvalidRequestError: Bad input (or a key without a store); nothing was sent.
            IdempotencyKeyMismatchError: The key was used with another request.
            AmbiguousSubmitError: This submit, or the key's earlier one, was
                sent but whether it created a job is unknown (never resubmitted).
            OutputExpiredError: The key's job finished long ago; its output expired.
            StoreError: The store failed; nothing was sent.
            APIStatusError: The gateway refused (400/401/402/403/429/5xx before sending).
            APIConnectionError: The gateway could not be reached; nothing was paid.
        """
        return await self._submit(
            image,
            scale=scale,
            face_enhance=face_enhance,
            webhook_url=webhook_url,
            webhook_mode=webhook_mode,
            idempotency_key=idempotency_key,
        )

    async def _submit(
        self,
        image: ImageInput | LocalInput,
        *,
        scale: int | None,
        face_enhance: bool | None,
        webhook_url: str | None,
        webhook_mode: WebhookMode | None,
        on_created: Callable[[Job], None] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """`submit`, with a hook run (before any checkpoint) on the new job."""
        session = self.session()
        if not isinstance(image, os.PathLike | bytes):
            request = self.make_request(image, scale=scale, face_enhance=face_enhance)
            headers = self._webhook_headers(webhook_url, webhook_mode)
            if idempotency_key is not None:
                keyed = self._keyed(idempotency_key)
                return (await keyed.submit(session, idempotency_key, request, headers)).job
            if self._keys is not None:
                await self._keys.take_submit_token()  # the fleet's budget and 429 pause
            return await session.submit(request, headers, on_created=on_created)
        if idempotency_key is not None:
            raise InvalidRequestError(
                "idempotency_key applies to URL inputs: a local file is published under a new "
                "signed URL each time, so its key could never match; pass the file's URL instead"
            )
        if self._keys is not None:
            await self._keys.take_submit_token()
        headers = self._webhook_headers(webhook_url, webhook_mode)
        published = await self._publish(image)
        try:
            request = self.make_request(published.url, scale=scale, face_enhance=face_enhance)
            job = await session.submit(request, headers, on_created=on_created)
        except AmbiguousSubmitError as exc:
            # A job may exist and may yet fetch the image: leave it up (its URL expires).
            # The signed URL is a credential: the error names the object without it.
            raise exc.naming(redact(published.url)) from None
        except BaseException:
            await self._retract(published)
            raise
        self._retract_when_finished(session, job.request_id, published)
        return job

    async def _publish(self, image: LocalInput) -> PublishedImage:
        """Check a local input, publish it, and fetch its URL's first byte: all before paying."""
        host = self.image_host
        if host is None:
            raise needs_image_host(image)
        return await publish_checked(host, await inspect_local(image))

    async def _retract(self, published: PublishedImage) -> None:
        assert self.image_host is not None
        await retract_shielded(self.image_host, published)

    def _retract_when_finished(
        self, session: Session, request_id: str, published: PublishedImage
    ) -> None:
        """Take the input down once its job has ended (not when a wait merely stopped)."""

        def finished(_: str, resolution: Resolution) -> None:
            if isinstance(resolution, JobState):
                session.start_soon(self._retract, published)

        session.watch(request_id, finished)

    async def resubmit(
        self,
        previous: Job | str,
        image: ImageInput | LocalInput,
        *,
        scale: int | None = None,
        face_enhance: bool | None = None,
        webhook_url: str | None = None,
        webhook_mode: WebhookMode | None = None,
    ) -> Job:
        """Submit `image` again, as a new paid job replacing `previous`, which ended ERROR.

        Like `submit`, and booked as a resubmission: counted in
        ``stats().resubmitted``, reported as a RESUBMITTED `JobEvent` naming
        `previous`. `upscale` and `upscale_many` do this themselves, as the
        client's `ResubmitPolicy` says; this is for a job you submitted and
        waited on yourself. Resubmit only what ended ERROR: a FAILED job is
        charged and fails again.

        Raises:
            The errors of `submit`.
        """
        previous_id = _request_id(previous)
        ledger = self._ledger

        def booked(job: Job) -> None:
            ledger.record_resubmitted(previous_id, job.request_id)

        return await self._submit(
            image,
            scale=scale,
            face_enhance=face_enhance,
            webhook_url=webhook_url,
            webhook_mode=webhook_mode,
            on_created=booked,
        )

    def _keyed(self, key: str | None) -> Keys:
        if key is not None and (not isinstance(key, str) or not key or len(key) > 512):
            shown = repr(key)[:80]
            raise InvalidRequestError(
                f"idempotency_key must be a non-empty str of at most 512 characters, got {shown}"
            )
        if self._keys is None:
            raise InvalidRequestError(
                "idempotency_key needs a store: AsyncRealESRGAN(store=SQLiteStore(path)) on one "
                "machine, or store=RedisStore(url) for a fleet"
            )
        return self._keys

    def _webhook_headers(self, url: str | None, mode: str | None) -> dict[str, str]:
        if mode is not None:
            _options.choice("submit", "webhook_mode", mode, WEBHOOK_MODES)
        if url is not None:
            url = check_webhook_url(url, allow_insecure=self.allow_insecure_webhooks)
        return self._webhooks.headers(url, mode)

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
        return url_with_token(url, self._webhooks.token)

    async def status(self, job: Job | str) -> JobState:
        """Fetch a job's current state (one GET, retried on transient failures).

        A terminal state seen here also resolves any `wait` on the job.
        """
        session = self.session()
        url = None
        if isinstance(job, Job) and job.polling_url and same_origin(job.polling_url, self.base_url):
            url = job.polling_url  # followed only on the gateway's origin: the key goes with it
        return await session.status(_request_id(job), url=url)

    async def wait(self, job: Job | str, *, timeout: float | None = None) -> JobState:
        """Wait until a job finishes; return its COMPLETED state.

        All waits share one poll scheduler: two waits on one job cost no more
        status calls than one.

        Raises:
            JobFailedError: The job ended FAILED.
            JobSystemError: The job ended ERROR (not charged; a resubmit may work).
            JobTimeoutError: `timeout` seconds passed; the job still runs and
                can be waited on again (its id is on the error).
            JobsUnfinishedError: The client was closed meanwhile (its id is on the error).
            APIStatusError: The gateway refused the status calls (401/403/404).
        """
        session = self.session()
        request_id = _request_id(job)
        if timeout is not None:
            _options.number("wait", "timeout", timeout, "> 0 or None", lambda v: v > 0)
        done = anyio.Event()
        outcome: list[Resolution] = []

        def resolved(_: str, resolution: Resolution) -> None:
            outcome.append(resolution)
            done.set()

        token = session.watch(request_id, resolved, timeout=timeout)
        try:
            await done.wait()
        finally:
            session.unwatch(token)
        if self._keys is not None and isinstance(outcome[0], JobState):
            await self._keys.finished(outcome[0])
        return unwrap(outcome[0])

    async def upscale(
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
        `ResubmitPolicy` says (`timeout` applies to each attempt); the error is
        raised once the policy gives up.
        With an `idempotency_key` whose job already finished, its recorded
        result is returned (or its error raised) without any request.

        Raises:
            JobsUnfinishedError: The client was closed after the job was paid
                for; its id is on the error.
        """
        if idempotency_key is not None:
            # The key's record is the job: an ERROR under a key is reported, not
            # resubmitted under the same key (resubmit it with a new key).
            session = self.session()
            request = self.make_request(image, scale=scale, face_enhance=face_enhance)
            keys = self._keyed(idempotency_key)
            found = await keys.submit(
                session, idempotency_key, request, self._webhook_headers(None, None)
            )
            if found.result is not None:
                return unwrap(found.result)
            if self._state is not _State.OPEN:  # closed while the POST was on the wire
                raise JobsUnfinishedError((found.job.request_id,), _CLOSED_REASON)
            return await self.wait(found.job, timeout=timeout)
        job = await self.submit(image, scale=scale, face_enhance=face_enhance)
        resubmits = 0
        while True:
            if self._state is not _State.OPEN:  # closed while the POST was on the wire
                raise JobsUnfinishedError((job.request_id,), _CLOSED_REASON)
            try:
                return await self.wait(job, timeout=timeout)
            except JobSystemError:
                delay = resubmit_delay(self.resubmit_policy, Status.ERROR, resubmits)
                if delay is None:
                    raise
                await anyio.sleep(delay)
                if self._state is not _State.OPEN:  # closed meanwhile: nothing is owed
                    raise
            resubmits += 1
            job = await self.resubmit(job, image, scale=scale, face_enhance=face_enhance)

    def upscale_many(
        self,
        images: Iterable[ImageInput | LocalInput] | AsyncIterable[ImageInput | LocalInput],
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
    ) -> UpscaleRun:
        """Upscale a stream of images; yield one `Outcome` per input as each finishes.

        Inputs are pulled lazily, one per free slot; at most `max_in_flight`
        jobs are submitted and unfinished at any moment. Every input gets
        exactly one `Outcome`: a rejected input, a failed job or an ambiguous
        submit is an outcome with its `error`, never an exception that ends
        the stream.

        Args:
            images: An iterable or async iterable of URLs, `UpscaleRequest`s,
                and (with an `image_host`) local files' paths or images' bytes.
                A local input is checked and hashed as it is pulled (a bad one
                gets an outcome with an `InvalidRequestError` naming it, and
                nothing is paid), published right before its POST, and taken
                down once its job has ended; its outcome's `request` names it
                by content (``https://local.invalid/sha256/<hex>``), never by
                its signed URL.
            scale: Scale for URL and local inputs (default 4).
            face_enhance: Face enhancement for URL and local inputs (default False).
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
            resubmit: Jobs that end ERROR (not charged) are submitted again
                as this says (True, False or a `ResubmitPolicy`; default: the
                client's). The outcome then carries the last job's id and the
                earlier ones in `Outcome.earlier_request_ids`. With a journal, a
                rerun that resubmits also resubmits the inputs the journal
                recorded as ERROR.
            idempotency_key: ``(index, image) -> str | None``: the key of each
                input (None: no key), e.g. ``lambda index, url: url``. An input
                with a key is submitted only if the client's `store` has no job
                under it, across every process sharing the store and across
                restarts; inputs of one run with the same key share one job
                and its outcome. A key's job that ended ERROR is not
                resubmitted. With a journal too, the store decides wherever
                the journal is unsure. Needs a `store`.

        Returns:
            An `UpscaleRun`: iterate it with ``async for``.

        Raises:
            InvalidRequestError: An argument is invalid (an `idempotency_key`
                without a `store`); nothing was sent.

        Raises (from the loop):
            JournalLockedError: Another process holds the journal.
            JournalMismatchError: An input differs from the one the journal
                recorded at its index; nothing from there on was submitted.
            JournalError: The journal could not be read or written.
        """
        return UpscaleRun(
            self.session(),
            images,
            make_request=self.make_request,
            headers=self._webhook_headers(None, None),
            max_connections=self.max_connections,
            scale=scale,
            face_enhance=face_enhance,
            max_in_flight=max_in_flight,
            job_timeout=job_timeout,
            ordered=ordered,
            journal=journal,
            resubmit_ambiguous=resubmit_ambiguous,
            resubmit=self.resubmit_policy
            if resubmit is None
            else as_policy("upscale_many", resubmit),
            idempotency_key=idempotency_key,
            keys=self._keys,
            image_host=self.image_host,
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
        session = self.session()
        return await _download.download(
            session.gateway,
            state,
            None if dest is None else Path(dest),
            max_bytes=self.max_download_bytes if max_bytes is None else max_bytes,
        )

    @property
    def unfinished_request_ids(self) -> tuple[str, ...]:
        """Jobs this client paid for or waited on and has not yet seen finish."""
        return self._ledger.unfinished_request_ids

    def take_unconsumed_outcomes(self) -> tuple[Outcome, ...]:
        """Outcomes that stopped fan-out runs finished but never handed over; then forget them.

        A run stopped by ``break``, a cancellation or ``aclose()`` keeps the
        outcomes its consumer did not take in `UpscaleRun.unconsumed_outcomes`;
        they are also kept here, for a run the caller no longer holds (a plain
        ``async for`` that was left). Each is a finished, paid job.
        """
        return self._ledger.take_parked()

    def stats(self) -> Stats:
        """A snapshot of this client's counters."""
        return self._ledger.stats()


def _api_key(raw: object) -> ApiKey:
    """The key, checked and held where no repr shows it."""
    if not isinstance(raw, str):
        raise InvalidRequestError(
            f"AsyncRealESRGAN.api_key must be a str, got {type(raw).__name__}"
        )
    key = ApiKey.unchecked(raw)
    del raw
    if not key.value:
        raise InvalidRequestError(
            f"no API key: pass api_key=... or set the {API_KEY_ENV} environment variable"
        )
    key.check()
    return key


def _request_id(job: Job | str) -> str:
    if isinstance(job, Job):
        return job.request_id
    if isinstance(job, str) and job.strip():
        return job
    raise InvalidRequestError(f"expected a Job or a request_id str, got {job!r}")
