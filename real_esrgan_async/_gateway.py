"""The thin I/O shell around the gateway's two endpoints.

It sends one request at a time under the client's HTTP limiter, converts
transport failures and error statuses into this library's exceptions at the
boundary, and asks the pure `_retry` module whether to try again. The API key
is attached here, per request, and only to requests for the gateway's origin.

What a hostile or broken gateway can do is bounded here:

- redirects are never followed, whatever the `httpx.AsyncClient` was told,
  so the key never leaves the configured origin;
- an answer is read up to `MAX_ANSWER_BYTES` *decoded* bytes, decompressing
  with a bound on the output, so a gzip bomb never reaches memory;
- every attempt has a total deadline, so a server trickling bytes cannot hold
  a call past its timeout (the paid POST keeps its shield, and a POST that
  overruns it becomes an `AmbiguousSubmitError`);
- no exception carries the key: not in its message (an answer echoing the key
  is redacted before it is parsed), its cause (httpx's errors are replaced by
  copies without the request, whose headers hold the key, or the traceback,
  whose frames' locals may), or the locals of this module's frames (the
  headers are a mapping whose repr hides the key).
"""

from __future__ import annotations

import json as jsonlib
import logging
import math
import random
import sys
import time
import zlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, NoReturn, TypeVar, cast
from urllib.parse import quote

import anyio
import attrs
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

#: Largest gateway answer read, after decompression: a status or submit body is under 2 KiB.
MAX_ANSWER_BYTES = 1024 * 1024
#: Longest gateway text (an error's ``error``/``message``, a body quoted in a message) kept.
MAX_ERROR_TEXT = 500
KEY_HEADER = "Ocp-Apim-Subscription-Key"
REDACTED = "<redacted>"
#: `Cooldown.until` before any 429.
_NEVER = -math.inf
_REDACTED_BYTES = REDACTED.encode()

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
        api_key: str | ApiKey,
        limiter: anyio.CapacityLimiter,
        retry: RetryPolicy,
        counters: Counters,
        rng: Callable[[], float] = random.random,
        deadline: float | None = None,
    ) -> None:
        """See the class docstring.

        Args:
            deadline: Seconds one attempt may take in all, connecting and reading
                included; by default the longest of `http`'s timeouts (so a client
                built with ``timeout=30`` gives each attempt 30 s). None with a
                client that has no timeouts: no deadline.
        """
        self.http = http
        self.base_url = base_url
        # Joined and parsed once: httpx's URL parsing costs more per request than the rest
        # of the library's bookkeeping (measured in benchmarks/throughput.py), and an
        # `httpx.URL` handed to httpx is not parsed again.
        self._submit_url = base_url.join(SUBMIT_PATH)
        self._status_prefix = str(base_url.join(STATUS_PATH))
        self.limiter = limiter
        self.retry = retry
        self.cooldown = Cooldown(retry)
        self.counters = counters
        secret = api_key if isinstance(api_key, ApiKey) else ApiKey.unchecked(api_key)
        # Gone from this frame's locals before anything can fail: a traceback formatted
        # with its locals must not show the key.
        del api_key
        secret.check()
        self._secret = secret
        # Built once: httpx copies a `Headers` as it is, where a dict's every name and value
        # would be normalised and encoded again on each request.
        self._base_headers = _Headers(
            {
                KEY_HEADER: secret.value,
                "Cache-Control": "no-cache",
                "User-Agent": USER_AGENT,
                # Only what `_read_answer` decodes with a bound (never brotli or zstd).
                "Accept-Encoding": "gzip, deflate",
            }
        )
        self._key_bytes = secret.value.encode("ascii")  # printable ASCII: `check` said so
        self.rng = rng
        self.deadline = _longest(http.timeout) if deadline is None else deadline
        #: Folders whose stale temporary downloads were swept (once per folder and client).
        self.swept_folders: set[str] = set()

    def __repr__(self) -> str:
        return f"<Gateway {str(self.base_url)!r}>"

    def status_url(self, request_id: str) -> str:
        """The status URL of `request_id`, always on the configured gateway's origin."""
        if not isinstance(request_id, str) or not request_id.strip():
            raise InvalidRequestError(f"request_id must be a non-empty str, got {request_id!r}")
        if request_id in (".", ".."):
            # Quoting leaves dots alone, and URL normalisation would climb a level.
            raise InvalidRequestError(f"request_id {request_id!r} is not a job id")
        return self._status_prefix + quote(request_id, safe="")

    def _headers(self, extra: Mapping[str, str] | None = None) -> _Headers:
        """The request headers: `extra`, then the gateway's own (which win over `extra`)."""
        if not extra:
            return self._base_headers
        headers = _Headers(extra)
        headers.update(self._base_headers)
        return headers

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the API key replaced (a gateway may echo it)."""
        return text.replace(self._secret.value, REDACTED)

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
        headers = self._headers(extra_headers)
        body = request.to_json()

        def created(response: Answer) -> Job:
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

        def parsed(response: Answer) -> JobState:
            self.counters.status_calls += 1
            try:
                state = JobState.from_json(_json_body(response))
            except ResponseValidationError as exc:
                raise ResponseValidationError(str(exc), request_id=request_id) from None
            if state.request_id != request_id:
                # Fed to the poller, a state about another job would resolve the wrong waits.
                raise ResponseValidationError(
                    f"the status answer is about request_id {state.request_id!r}, not the one "
                    "asked for",
                    request_id=request_id,
                )
            return state

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
        url: httpx.URL | str,
        *,
        headers: _Headers,
        on_response: Callable[[Answer], T],
        json: Any = None,
        request_id: str | None = None,
        image: str | None = None,
        retry: bool = True,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> T:
        failures = 0
        rate_limited = 0
        paid = operation is Operation.SUBMIT
        while True:
            await self._wait_for_cooldown()
            error: APIError
            cause: BaseException | None
            try:
                async with self.limiter:
                    if before_send is not None:
                        await before_send()
                    sent_at = anyio.current_time()
                    with self._attempt_scope(paid, sent_at) as scope:
                        response = await self._send(method, url, headers, json)
                        if response.is_success:
                            self.cooldown.on_success()
                            return on_response(response)
            except httpx.TransportError as exc:
                failure, error = _transport_failure(exc, url, self.redact)
                cause = _detached(exc, self.redact)
            except _UnreadableAnswerError as exc:
                _unreadable(exc, image=image if paid else None, request_id=request_id)
            else:
                if scope.cancelled_caught:
                    # The deadline passed: as a timeout, sent or not (a POST is ambiguous).
                    failure, cause = Failure.NO_ANSWER, None
                    error = APITimeoutError(
                        f"request to {httpx.URL(url).host} took longer than its deadline of "
                        f"{self.deadline:g} s"
                    )
                else:
                    failure, error = self._refused(response, request_id, paid, sent_at)
                    cause = error
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
                code = None if cause is not error else response.status_code
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

    def _refused(
        self, response: Answer, request_id: str | None, paid: bool, sent_at: float
    ) -> tuple[Failure, APIStatusError]:
        """What an error answer means: the failure to decide on, and the error to raise."""
        error = error_from_response(response, request_id=request_id)
        failure = _status_failure(response.status_code)
        if response.is_redirect and paid:
            # A 303 after a POST can mean "created, see there": a job may exist.
            failure = Failure.NO_ANSWER
        if isinstance(error, RateLimitError):
            self._rate_limited(error.retry_after, sent_at)
        return failure, error

    async def _send(
        self, method: str, url: httpx.URL | str, headers: _Headers, json: Any
    ) -> Answer:
        """One request, its answer read within bounds; redirects never followed.

        `follow_redirects=False` is explicit: a caller's client may have been
        built with ``follow_redirects=True``, and httpx strips only
        ``Authorization`` on a cross-origin hop, never this key's header.
        """
        # What `http.stream` does, without its context-manager generator.
        request = self.http.build_request(method, url, headers=headers, json=json)
        response = await self.http.send(request, stream=True, follow_redirects=False)
        try:
            body = await _read_answer(response, limit=MAX_ANSWER_BYTES)
        finally:
            await response.aclose()
        return Answer(response.status_code, response.headers, self._redact_bytes(body))

    def _redact_bytes(self, body: bytes) -> bytes:
        key = self._key_bytes
        return body.replace(key, _REDACTED_BYTES) if key in body else body

    def _rate_limited(self, retry_after: float | None, sent_at: float) -> None:
        """Count a 429 and pause every request; log each new pause (not each 429 of a burst)."""
        self.counters.rate_limited += 1
        paused_until = self.cooldown.until
        now = anyio.current_time()
        until = self.cooldown.on_rate_limited(now, retry_after, sent_at=sent_at)
        if until > paused_until:
            logger.info("429 from the gateway: all requests pause %.1f s", until - now)

    def _attempt_scope(self, paid: bool, sent_at: float) -> anyio.CancelScope | _Unbounded:
        """The scope of one attempt sent at `sent_at`: its total deadline, and a paid POST's shield.

        Once a paid POST is on the wire, cancelling it would lose the request_id of
        a job that may exist: it is shielded, and the deadline (not the caller) bounds
        it; the id is handed over before the next checkpoint. A GET with no deadline
        has nothing to bound and nothing to shield: it enters no scope at all.
        """
        if self.deadline is None:
            return anyio.CancelScope(shield=True) if paid else _UNBOUNDED
        return anyio.CancelScope(shield=paid, deadline=sent_at + self.deadline)

    async def _wait_for_cooldown(self) -> None:
        if self.cooldown.until == _NEVER:
            return  # no 429 yet: no clock to read
        # Re-read after each sleep: another request may have met a later 429 meanwhile.
        while (remaining := self.cooldown.remaining(anyio.current_time())) > 0:  # noqa: ASYNC110
            await anyio.sleep(remaining)


class _Unbounded:
    """The scope of an attempt with no deadline and no shield: entering it costs nothing."""

    __slots__ = ()

    #: Never true: nothing in here cancels.
    cancelled_caught = False

    def __enter__(self) -> _Unbounded:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


_UNBOUNDED = _Unbounded()


class ApiKey:
    """The API key, checked, in an object whose repr never shows it.

    Tracebacks formatted with their locals (error trackers do) print each
    local's repr: hold the key in one of these, and drop the plain string from
    the frame (``del``) before anything can fail.

    A key with a space or a control character would be refused by the HTTP
    layer with an error that quotes the header, key included; it is refused
    here instead, with a message that does not show it.

    Raises:
        InvalidRequestError: The key is not a non-empty run of printable ASCII
            characters without spaces.
    """

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value
        del value  # out of this frame's locals before the check can raise; callers drop theirs
        self.check()

    @classmethod
    def unchecked(cls, value: str) -> ApiKey:
        """Wrap `value` without checking it: delete your own copy, then call `check`."""
        key = cls.__new__(cls)
        key.value = value
        return key

    def __repr__(self) -> str:
        return REDACTED

    def check(self) -> None:
        """Raise `InvalidRequestError` (without showing the key) unless it can be sent."""
        if not isinstance(self.value, str) or not self.value:
            raise InvalidRequestError("the API key must be a non-empty str")
        if not all("!" <= char <= "~" for char in self.value):
            raise InvalidRequestError(
                "the API key must be printable ASCII with no spaces or control characters "
                "(check for a stray newline or quote where it was pasted); it is not shown here"
            )


class _Headers(httpx.Headers):
    """Request headers whose repr hides the key: a traceback with locals cannot leak it.

    An `httpx.Headers`, so that httpx merges it with the client's own by copying
    its list, without normalising and encoding every name and value again.
    """

    def __repr__(self) -> str:
        key = KEY_HEADER.lower()
        return repr({k: REDACTED if k == key else v for k, v in self.items()})


@attrs.frozen(repr=False)
class Answer:
    """A gateway answer, read whole (within `MAX_ANSWER_BYTES`) and with the key redacted."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    def __repr__(self) -> str:
        return f"<Answer {self.status_code}, {len(self.content)} bytes>"

    @property
    def is_success(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status_code < 300

    @property
    def is_redirect(self) -> bool:
        """A 3xx status: never followed."""
        return 300 <= self.status_code < 400

    @property
    def text(self) -> str:
        """The body as text (undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    def json(self) -> object:
        """The body as JSON.

        Raises:
            ValueError: Not JSON, or nested too deeply to parse.
        """
        try:
            return jsonlib.loads(self.content)
        except RecursionError:
            # A body of 500,000 "[" is valid JSON's prefix and crashes the parser's stack.
            raise ValueError("nested too deeply") from None


async def _read_answer(response: httpx.Response, *, limit: int) -> bytes:
    """Read `response`'s body, decoded, up to `limit` bytes.

    A success body over the limit, or in an encoding that was not asked for,
    raises; an error body is only cut (its status says enough).

    httpx's own decoders inflate each network chunk whole (a 64 KiB gzip chunk
    of zeros is 64 MiB), so the body is decompressed here with a bound on the
    output instead.

    Raises:
        _UnreadableAnswerError: A success body over `limit`, or in an encoding not asked for.
    """
    strict = response.is_success
    if response.is_stream_consumed:
        # A transport that built the answer in memory (httpx.MockTransport with
        # `content=`/`json=`) hands it over already read: there is nothing left to bound.
        if strict and len(response.content) > limit:
            raise _UnreadableAnswerError(_too_large(limit))
        return response.content[:limit]
    declared = response.headers.get("Content-Length", "")
    if strict and declared.isdigit() and int(declared) > limit:
        raise _UnreadableAnswerError(
            f"the gateway's answer is {declared} bytes long; at most {limit} are read"
        )
    encoding = response.headers.get("Content-Encoding")
    decoder: _Decoder | None = None
    if encoding is not None:
        try:
            decoder = _Decoder(encoding)
        except ValueError as exc:
            if strict:
                raise _UnreadableAnswerError(f"the gateway's answer {exc}") from None
            return b""
    return await _read_bounded(response, decoder, limit=limit, strict=strict)


async def _read_bounded(
    response: httpx.Response, decoder: _Decoder | None, *, limit: int, strict: bool
) -> bytes:
    """`_read_answer`'s loop: the body's chunks, decoded by `decoder` (None: identity).

    The bound is counted here, chunk by chunk, whatever the answer declared: a
    `Content-Length` is only as true as the transport that enforces it.
    """
    parts: list[bytes] = []
    size = 0
    # httpx annotates it an iterator; it is an async generator, closed here at once under trio.
    chunks = cast("AsyncGenerator[bytes, None]", response.aiter_raw())
    try:
        async for raw in chunks:
            if decoder is not None:
                try:
                    raw = decoder.feed(raw, limit + 1 - size)  # noqa: PLW2901 - decoded in place
                except _UnreadableAnswerError:
                    if strict:
                        raise
                    break
            parts.append(raw)
            size += len(raw)
            if size > limit:
                if strict:
                    raise _UnreadableAnswerError(_too_large(limit))
                break
    finally:
        await chunks.aclose()
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    return body[:limit]


def _too_large(limit: int) -> str:
    return f"the gateway's answer is larger than {limit} bytes (decoded); refused"


class _Decoder:
    """Content decoding with a bound on the output of every step (a decompression bomb stops)."""

    def __init__(self, encoding: str) -> None:
        name = encoding.strip().lower()
        self._zlib: Any = None
        if name in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif name == "deflate":
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS)
        elif name not in ("identity", ""):
            raise ValueError(f"is encoded as {encoding[:40]!r}, which was not asked for")
        self._first = name == "deflate"

    def feed(self, data: bytes, room: int) -> bytes:
        """Decode `data`, returning at most `room` bytes (more input is then ignored).

        Raises:
            _UnreadableAnswerError: The data is not in the declared encoding.
        """
        if self._zlib is None:
            return data[:room]
        try:
            return bytes(self._zlib.decompress(data, max(room, 1)))
        except zlib.error as exc:
            if self._first:
                # "deflate" is often sent raw, without the zlib wrapper (httpx does the same).
                self._first = False
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.feed(data, room)
            raise _UnreadableAnswerError(
                f"the gateway's answer is not valid compressed data: {exc}"
            ) from None
        finally:
            self._first = False


class _UnreadableAnswerError(Exception):
    """An answer that could not be read within bounds (too large, or in an unasked encoding)."""


def _unreadable(
    exc: _UnreadableAnswerError, *, image: str | None, request_id: str | None
) -> NoReturn:
    """An answer came but could not be read within bounds: nothing to retry.

    For a paid POST (`image` given) a job may exist, so the submit is ambiguous.
    """
    if image is not None:
        raise AmbiguousSubmitError(image, reason=str(exc)) from None
    raise ResponseValidationError(str(exc), request_id=request_id) from None


def _raise(error: Exception, cause: BaseException | None) -> NoReturn:
    if error is cause:
        raise error
    raise error from cause


def _detached(exc: httpx.TransportError, redact: Callable[[str], str]) -> BaseException:
    """A copy of `exc` fit to be a cause: no request (its headers hold the key), no traceback.

    The frames of httpcore and h11 that a transport error unwinds through hold
    the request headers in their locals; a copy made here has no frames.
    """
    text = redact(str(exc))
    try:
        copy: BaseException = type(exc)(text)
    except Exception:  # noqa: BLE001 - an httpx subclass with another constructor
        copy = httpx.TransportError(text)
    return copy


def _longest(timeout: httpx.Timeout) -> float | None:
    values = [t for t in (timeout.connect, timeout.read, timeout.write, timeout.pool) if t]
    return max(values) if values else None


def _json_body(response: Answer) -> object:
    try:
        return response.json()
    except ValueError:
        raise ResponseValidationError(
            f"the gateway answered {response.status_code} with a body that is not JSON: "
            f"{response.text[:200]!r}"
        ) from None


def _status_failure(status_code: int) -> Failure:
    if status_code == 429:
        return Failure.RATE_LIMITED
    if status_code >= 500:
        return Failure.SERVER_ERROR
    return Failure.CLIENT_ERROR


def _transport_failure(
    exc: httpx.TransportError, url: httpx.URL | str, redact: Callable[[str], str]
) -> tuple[Failure, APIConnectionError]:
    where = f"{httpx.URL(url).host}"
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        # No connection was made: the gateway cannot have seen the request.
        failure = Failure.NOT_SENT
    else:
        failure = Failure.NO_ANSWER
    if isinstance(exc, httpx.TimeoutException):
        return failure, APITimeoutError(f"request to {where} timed out ({type(exc).__name__})")
    return failure, APIConnectionError(
        f"request to {where} failed: {type(exc).__name__}: {redact(str(exc))}"
    )


def error_from_response(response: Answer, *, request_id: str | None) -> APIStatusError:
    """The exception for an error answer, with the body's ``error`` and ``message`` (cut)."""
    error: str | None = None
    message: str | None = None
    code = response.status_code
    if response.is_redirect:
        return APIStatusError(
            code,
            error="redirect not followed",
            message=(
                f"the gateway redirected to {_origin(response.headers.get('Location'))}; "
                "requests carrying the API key never follow a redirect. Set base_url to the "
                "gateway's final address"
            ),
            request_id=request_id,
        )
    try:
        body = response.json()
    except ValueError:
        message = response.text[:200] or None
    else:
        if isinstance(body, dict):
            error = _text(body.get("error"))
            message = _text(body.get("message"))
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


def _origin(location: str | None) -> str:
    """Where a redirect points, as an origin only (a query string may hold a signature)."""
    if not location:
        return "no Location"
    try:
        url = httpx.URL(location)
    except httpx.InvalidURL:
        return "an invalid Location"
    if not url.host:
        return "a path on the same host"
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"[:200]


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else jsonlib.dumps(value)
    return text if len(text) <= MAX_ERROR_TEXT else f"{text[:MAX_ERROR_TEXT]}… (cut)"
