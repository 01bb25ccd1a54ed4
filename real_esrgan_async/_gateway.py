"""The thin I/O shell around the gateway's two endpoints.

It sends one request at a time under the client's HTTP limiter, converts
transport failures and error statuses into this library's exceptions at the
boundary, and asks the pure `_retry` module whether to try again. The API key
is attached here, per request, and only to requests for the gateway's origin.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import anyio
import httpx

from ._cooldown import Cooldown
from ._exceptions import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InsufficientBalanceError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
)
from ._models import Job, JobState, UpscaleRequest
from ._retry import Decision, Failure, Operation, RetryPolicy, decide, parse_retry_after
from ._stats import Counters
from ._version import __version__

logger = logging.getLogger("real_esrgan_async")

SUBMIT_PATH = "/real-esrgan/v1/real-esrgan/generate"
STATUS_PATH = "/v2/requests/status/"
USER_AGENT = (
    f"real-esrgan-async/{__version__} httpx/{httpx.__version__} "
    f"python/{sys.version_info.major}.{sys.version_info.minor}"
)

T = TypeVar("T")

_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientBalanceError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


class Gateway:
    """Sends the gateway's requests, with retries, the 429 cooldown and error mapping."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: httpx.URL,
        api_key: str,
        limiter: anyio.CapacityLimiter,
        retry: RetryPolicy,
        counters: Counters,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.http = http
        self.base_url = base_url
        # Joined once: httpx's URL parsing costs more per request than the rest of the
        # library's bookkeeping (measured in benchmarks/throughput.py).
        self._submit_url = str(base_url.join(SUBMIT_PATH))
        self._status_prefix = str(base_url.join(STATUS_PATH))
        self.limiter = limiter
        self.retry = retry
        self.cooldown = Cooldown(retry)
        self.counters = counters
        self._api_key = api_key
        self.rng = rng

    def status_url(self, request_id: str) -> str:
        """The status URL of `request_id`, always on the configured gateway's origin."""
        if not isinstance(request_id, str) or not request_id.strip():
            raise InvalidRequestError(f"request_id must be a non-empty str, got {request_id!r}")
        return self._status_prefix + quote(request_id, safe="")

    def _headers(self) -> dict[str, str]:
        return {
            "Ocp-Apim-Subscription-Key": self._api_key,
            "Cache-Control": "no-cache",
            "User-Agent": USER_AGENT,
        }

    async def submit(
        self,
        request: UpscaleRequest,
        *,
        extra_headers: dict[str, str],
        on_created: Callable[[Job], None],
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Job:
        """POST one paid submit; retried only where no job can have been created.

        `on_created` is called synchronously as soon as the job's id is known,
        before any checkpoint, so that cancellation cannot lose a paid job.
        `before_send` is awaited before each attempt goes on the wire, once the
        cooldown is over and a connection slot is held (a journal records the
        attempt there, so that the window in which a crash leaves the input
        ambiguous is the POST itself, not the queue before it).

        Raises:
            AmbiguousSubmitError: The request was sent but its fate is unknown.
            APIStatusError: The gateway refused the job (nothing was paid).
            APIConnectionError: No connection could be made (nothing was paid).
        """
        url = self._submit_url
        headers = self._headers() | extra_headers
        body = request.to_json()

        def created(response: httpx.Response) -> Job:
            try:
                job = Job.from_json(_json_body(response))
            except ResponseValidationError as exc:
                raise AmbiguousSubmitError(
                    request.image,
                    status_code=response.status_code,
                    reason=f"the answer had no usable request_id: {exc}",
                ) from exc
            on_created(job)
            return job

        return await self._call(
            Operation.SUBMIT,
            "POST",
            url,
            headers=headers,
            json=body,
            image=request.image,
            on_response=created,
            before_send=before_send,
        )

    async def status(
        self, request_id: str, *, url: str | None = None, retry: bool = True
    ) -> JobState:
        """GET the status of one job.

        Args:
            request_id: The job.
            url: The status URL, when known to be on the gateway's origin.
            retry: Retry transient failures (the poller passes False: its
                scheduler decides when to look again).
        """
        url = url or self.status_url(request_id)

        def parsed(response: httpx.Response) -> JobState:
            self.counters.status_calls += 1
            return JobState.from_json(_json_body(response))

        return await self._call(
            Operation.READ,
            "GET",
            url,
            headers=self._headers(),
            request_id=request_id,
            on_response=parsed,
            retry=retry,
        )

    async def _call(
        self,
        operation: Operation,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        on_response: Callable[[httpx.Response], T],
        json: Any = None,
        request_id: str | None = None,
        image: str | None = None,
        retry: bool = True,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> T:
        before_send = before_send or _nothing
        failures = 0
        rate_limited = 0
        while True:
            await self._wait_for_cooldown()
            try:
                async with self.limiter:
                    await before_send()
                    sent_at = anyio.current_time()
                    if operation is Operation.SUBMIT:
                        # Once a paid POST is on the wire, cancelling it would lose the
                        # request_id of a job that may exist: let it finish (bounded by
                        # the timeout) and hand the id over before the next checkpoint.
                        with anyio.CancelScope(shield=True):
                            response = await self.http.request(
                                method, url, headers=headers, json=json
                            )
                            if response.is_success:
                                self.cooldown.on_success()
                                return on_response(response)
                    else:
                        response = await self.http.request(method, url, headers=headers, json=json)
                        if response.is_success:
                            self.cooldown.on_success()
                            return on_response(response)
            except httpx.TransportError as exc:
                error: APIError
                failure, error = _transport_failure(exc, url)
                cause: BaseException = exc
            else:
                error = error_from_response(response, request_id=request_id)
                failure = _status_failure(response.status_code)
                cause = error
                if isinstance(error, RateLimitError):
                    self._rate_limited(error.retry_after, sent_at)
            if failure is Failure.RATE_LIMITED:
                rate_limited += 1
            else:
                failures += 1
            decision = (
                decide(
                    self.retry,
                    operation,
                    failure,
                    attempt=failures,
                    rate_limited=rate_limited,
                    rng=self.rng(),
                )
                if retry
                else Decision(retry=False)
            )
            if decision.ambiguous:
                assert image is not None
                code = None if isinstance(cause, httpx.TransportError) else response.status_code
                raise AmbiguousSubmitError(image, status_code=code, reason=str(error)) from cause
            if not decision.retry:
                _raise(error, cause)
            self.counters.retries += 1
            logger.info(
                "retrying %s %s after %s (attempt %d, in %.2f s)",
                method,
                httpx.URL(url).path,
                failure.value,
                failures + rate_limited + 1,
                decision.delay,
            )
            await anyio.sleep(decision.delay)

    def _rate_limited(self, retry_after: float | None, sent_at: float) -> None:
        """Count a 429 and pause every request; log each new pause (not each 429 of a burst)."""
        self.counters.rate_limited += 1
        paused_until = self.cooldown.until
        now = anyio.current_time()
        until = self.cooldown.on_rate_limited(now, retry_after, sent_at=sent_at)
        if until > paused_until:
            logger.info("429 from the gateway: all requests pause %.1f s", until - now)

    async def _wait_for_cooldown(self) -> None:
        # Re-read after each sleep: another request may have met a later 429 meanwhile.
        while (remaining := self.cooldown.remaining(anyio.current_time())) > 0:  # noqa: ASYNC110
            await anyio.sleep(remaining)


async def _nothing() -> None:
    """The default `before_send`: nothing to do before a request goes out."""


def _raise(error: Exception, cause: BaseException) -> NoReturn:
    if error is cause:
        raise error
    raise error from cause


def _json_body(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError as exc:
        raise ResponseValidationError(
            f"the gateway answered {response.status_code} with a body that is not JSON: "
            f"{response.text[:200]!r}"
        ) from exc


def _status_failure(status_code: int) -> Failure:
    if status_code == 429:
        return Failure.RATE_LIMITED
    if status_code >= 500:
        return Failure.SERVER_ERROR
    return Failure.CLIENT_ERROR


def _transport_failure(exc: httpx.TransportError, url: str) -> tuple[Failure, APIConnectionError]:
    where = f"{httpx.URL(url).host}"
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        # No connection was made: the gateway cannot have seen the request.
        failure = Failure.NOT_SENT
    else:
        failure = Failure.NO_ANSWER
    if isinstance(exc, httpx.TimeoutException):
        return failure, APITimeoutError(f"request to {where} timed out ({type(exc).__name__})")
    return failure, APIConnectionError(f"request to {where} failed: {type(exc).__name__}: {exc}")


def error_from_response(response: httpx.Response, *, request_id: str | None) -> APIStatusError:
    """The exception for an error answer, with the body's ``error`` and ``message``."""
    error: str | None = None
    message: str | None = None
    try:
        body = response.json()
    except ValueError:
        message = response.text[:200] or None
    else:
        if isinstance(body, dict):
            error = _text(body.get("error"))
            message = _text(body.get("message"))
    code = response.status_code
    if code == 429:
        return RateLimitError(
            code,
            error=error,
            message=message,
            request_id=request_id,
            retry_after=parse_retry_after(response.headers.get("Retry-After"), now=time.time()),
        )
    cls = _STATUS_ERRORS.get(code, ServerError if code >= 500 else APIStatusError)
    return cls(code, error=error, message=message, request_id=request_id)


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)
