"""Webhook callbacks: an ASGI receiver to mount in an app, and a parser for other frameworks.

A callback is a hint, never the truth:

- Callbacks are unsigned. A random per-client token, the last path segment of the
  callback URL, turns forgeries away cheaply (a constant-time compare, before the
  body is read). And by default a terminal callback resolves nothing by itself: it
  triggers one authenticated status call, whose answer does.
- They can be duplicated, reordered or lost. The poller ignores news about ids that
  nobody waits on and a terminal state ends the wait, so a duplicate or a late
  earlier state changes nothing; jobs with a webhook stay on the scheduler's slow
  safety net, which catches a lost callback.
- They reach whichever process serves the URL. A callback about an id this client
  does not wait on is answered 200 and ignored, and costs no status call, so a
  forger cannot make the client spend calls.
- The gateway may stop calling a slow or failing receiver, so the receiver answers
  first and works afterwards; the work (a status call) runs in the client's task
  group, never in the request's task.
- Whoever holds the token can still send anything, so nothing a request can do
  is unbounded: a body is capped in size (413), in nesting depth (400) and in
  the time it takes to arrive (408); the session acts on signs of life for one
  job at most once per `HEARTBEAT_MIN_GAP` (the rest cost nothing) and caps
  the status calls that terminal callbacks may cost one job.
- The token sits in the URL path, which access logs print: `WebhookTokenFilter`
  redacts it.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from types import MappingProxyType
from typing import Any, Protocol

import anyio

from . import _options
from ._exceptions import ResponseValidationError
from ._models import JobState
from ._session import Session, WebhookSettings

logger = logging.getLogger("real_esrgan_async")

#: Largest callback body accepted. The documented body is well under 2 KiB.
MAX_BODY_BYTES = 64 * 1024
#: Deepest nesting of arrays and objects accepted in a callback body. The documented
#: body nests 3 deep; a body of 64 KiB of ``[`` would make the JSON parser recurse
#: until a `RecursionError` (a 500) without this bound.
MAX_JSON_DEPTH = 32
#: Longest time, in seconds, that a callback's body may take to arrive, by default.
#: The gateway sends its 2 KiB at once; a client trickling bytes would otherwise
#: hold a connection (and a task) for as long as it likes.
BODY_TIMEOUT = 10.0
_COUNTS = (
    "accepted",
    "ignored",
    "confirmations",
    "coalesced",
    "unconfirmed",
    "forbidden",
    "too_large",
    "too_slow",
    "malformed",
    "throttled",
    "unavailable",
)

# ASGI's types, spelled out so that the library does not depend on Starlette.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# A JSON string (escapes included), to skip when counting brackets: a bracket in a
# string does not nest. Unrolled and possessive: linear time, no backtracking.
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_INNERMOST_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


class _TooLarge:
    """What `WebhookReceiver._receive_body` returns for a body over the limit."""


# Parsing -----------------------------------------------------------------------------


def parse_webhook(
    body: bytes | str | Mapping[str, Any], *, max_bytes: int = MAX_BODY_BYTES
) -> JobState:
    """Parse a callback body (the gateway's status JSON) into a `JobState`.

    For apps on a framework other than ASGI: check the token in the URL with
    `WebhookReceiver.check_token`, parse the body with this, answer 200, then
    hand the state to `WebhookReceiver.accept`. The state comes from an
    unsigned request: never use it as a result without confirmation.

    Args:
        body: The raw body, or the JSON object your framework already decoded.
        max_bytes: Refuse a raw body longer than this.

    Returns:
        The state the callback describes.

    Raises:
        ResponseValidationError: The body is too long, not JSON, or not in the
            documented shape; the message names the field.
    """
    if isinstance(body, str | bytes):
        if len(body) > max_bytes:
            raise ResponseValidationError(
                f"the callback body is {len(body)} bytes long; at most {max_bytes} are accepted"
            )
        raw = body.encode("utf-8", "replace") if isinstance(body, str) else body
        if _too_deep(raw):
            raise ResponseValidationError(
                f"the callback body nests arrays and objects more than {MAX_JSON_DEPTH} deep "
                "(or its brackets do not match)"
            )
        try:
            body = json.loads(body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
            raise ResponseValidationError(f"the callback body is not JSON: {exc}") from None
    # from_json refuses an id that is too long, unprintable, padded or path-like
    # (`check_identifier`), as it does for every id the gateway returns.
    return JobState.from_json(body)


def _too_deep(raw: bytes) -> bool:
    """Whether `raw` nests brackets deeper than `MAX_JSON_DEPTH` (or its brackets do not match).

    A scan before parsing, so that the parser never recurses that far. A
    normal body has a handful of brackets and costs two counts; others lose
    their strings (a bracket in a string does not nest) and everything but
    brackets, then their innermost pairs, one level a pass, all in C.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    for _ in range(MAX_JSON_DEPTH):
        # All the innermost pairs at once: exactly one level a pass, whatever the kinds.
        shorter = _INNERMOST_PAIR.sub(b"", brackets)
        if len(shorter) == len(brackets):  # empty, or nothing left to pair
            break
        brackets = shorter
    return bool(brackets)


# The receiver ------------------------------------------------------------------------


class SessionOwner(Protocol):
    """What the receiver needs of a client (`AsyncRealESRGAN` is one)."""

    @property
    def webhooks(self) -> WebhookSettings:
        """The client's webhook settings, its token among them."""
        ...

    def session(self) -> Session:
        """The open session; raises `RuntimeError` when the client is not open."""
        ...


class WebhookReceiver:
    """An ASGI app that takes the gateway's callbacks for one client.

    Mount it in FastAPI or Starlette, at the path of the client's
    ``webhook_url``; the client appends its token to that URL, so the
    gateway calls ``<webhook_url>/<token>``::

        client = AsyncRealESRGAN(webhook_url="https://my-app.example/hooks/real-esrgan")
        app.mount("/hooks/real-esrgan", WebhookReceiver(client))

    Each callback is answered at once: 200 when it is well formed (also when
    it is about a job nobody here waits on, which is then ignored), 403 for a
    wrong token, 413 for a body over `max_body_bytes`, 408 for a body that
    took longer than `body_timeout` to arrive, 400 for a body not in the
    documented shape (or nested deeper than `MAX_JSON_DEPTH`), 405 for a
    method other than POST, 503 while the client is not open. Only after
    answering does it act, and only for jobs this client waits on or has not
    seen finish:

    - a terminal callback triggers one status call (at most one in flight per
      job: duplicates are coalesced) whose answer resolves the waiters; with
      the client's ``webhook_confirm=False`` the callback resolves them itself;
      if that call says the job still runs (the gateway lagging its own
      callback), the job is checked again soon, a few times, not left to the
      safety net;
    - a terminal callback that arrives before the submit's answer was read is
      kept, and acted on as soon as the submit returns its id;
    - a non-terminal (sync mode) callback is a sign of life: it puts the
      safety-net check later and never replaces a terminal state; one a job
      per the session's `HEARTBEAT_MIN_GAP` is acted on, the rest are dropped (``throttled``).

    Serve it in the event loop the client runs in (an app whose lifespan
    opens the client does). Several worker processes behind one URL each
    see callbacks about the others' jobs: give them one ``webhook_secret``
    (those are answered 200) and one `RedisStore`, which relays each such
    callback to the worker that waits on the job. Without a shared store,
    each worker's safety net finds its own jobs whose callback went elsewhere.

    Args:
        client: The client whose jobs the callbacks are about. It may be
            opened later (e.g. in the app's lifespan).
        max_body_bytes: Largest body read; a longer one is refused unread.
        body_timeout: Seconds a body may take to arrive, from the moment its
            token was checked; a slower one is answered 408 and the
            connection closed, so that a client trickling bytes cannot pin
            it. Bound the time headers may take in your server too.

    Raises:
        InvalidRequestError: `max_body_bytes` is not a positive int, or
            `body_timeout` not a positive number.
    """

    def __init__(
        self,
        client: SessionOwner,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        _options.number(
            "WebhookReceiver", "max_body_bytes", max_body_bytes, ">= 1", lambda v: v >= 1, kind=int
        )
        _options.number("WebhookReceiver", "body_timeout", body_timeout, "> 0", lambda v: v > 0)
        self._client = client
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self._counts = dict.fromkeys(_COUNTS, 0)

    def __repr__(self) -> str:
        return f"<WebhookReceiver for {self._client!r}>"

    @property
    def counts(self) -> Mapping[str, int]:
        """What the receiver did so far (a live, read-only view).

        ``accepted``: callbacks answered 200, of which ``ignored`` were about
        no job of this client; ``confirmations``: status calls made,
        ``coalesced``: duplicates that found one in flight, ``unconfirmed``:
        confirmations that found the job not finished (a forgery, or the
        gateway lagging its own callback), ``throttled``: signs of life
        dropped, within `HEARTBEAT_MIN_GAP` of the last one acted on for
        their job. Refused: ``forbidden`` (token), ``too_large``,
        ``too_slow`` (408), ``malformed``, ``unavailable`` (client not open).
        """
        return MappingProxyType(self._counts)

    def check_token(self, token: str | None) -> bool:
        """Whether `token` (the last path segment of a callback's URL) is this client's.

        Compared in constant time, so that timing does not reveal the token.
        """
        if token is None:
            return False
        expected = self._client.webhooks.token.encode()
        return hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected)

    def accept(self, state: JobState) -> None:
        """Act on a parsed callback, after answering it; returns at once.

        The status call that confirms a terminal state runs in the client's
        task group. For apps that check the token and parse the body themselves.

        Raises:
            RuntimeError: The client is not open.
        """
        self._client.session().accept_callback(state, self._counts)

    # ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection: a callback, or the lifespan when served alone."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["method"] != "POST":
            await _respond(send, 405, b"method not allowed", [(b"allow", b"POST")])
            return
        path: str = scope["path"]  # already percent-decoded by the server
        if not self.check_token(path.rstrip("/").rpartition("/")[2] or None):
            self._counts["forbidden"] += 1
            logger.info("refused a callback: wrong or missing token")
            await _respond(send, 403, b"forbidden")
            return
        try:
            session = self._client.session()
        except RuntimeError:
            # Starting up or shutting down: the gateway delivers again later.
            self._counts["unavailable"] += 1
            await _respond(send, 503, b"not ready", [(b"retry-after", b"1")])
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        try:
            state = parse_webhook(body, max_bytes=self.max_body_bytes)
        except ResponseValidationError as exc:
            self._counts["malformed"] += 1
            logger.warning("refused a malformed callback: %s", exc)
            await _respond(send, 400, str(exc).encode())
            return
        self._counts["accepted"] += 1
        await _respond(send, 200, b"")
        # Answered: now act, unless the client closed meanwhile.
        if session.closed:
            self._counts["ignored"] += 1
            return
        session.accept_callback(state, self._counts)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once a refusal was sent (or the caller left)."""
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                if not value.isdigit():
                    self._counts["malformed"] += 1
                    await _respond(send, 400, b"bad content-length")
                    return None
                if int(value) > limit:
                    await self._too_large(send)
                    return None
        # The deadline covers the receiving only: a refusal is never cut in half.
        with anyio.move_on_after(self.body_timeout) as deadline:
            body = await self._receive_body(receive)
        if deadline.cancelled_caught:
            self._counts["too_slow"] += 1
            logger.info("refused a callback whose body took over %s s to arrive", self.body_timeout)
            # The rest of the body is never read: the connection cannot carry another request.
            await _respond(send, 408, b"body too slow", [(b"connection", b"close")])
            return None
        if isinstance(body, _TooLarge):
            await self._too_large(send)
            return None
        return body

    async def _receive_body(self, receive: Receive) -> bytes | _TooLarge | None:
        """The body; `_TooLarge` as soon as it passes the limit; None if the caller left."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:  # chunked, or a lying Content-Length: stop reading
                return _TooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        self._counts["too_large"] += 1
        await _respond(send, 413, b"body too large")


# Logs ---------------------------------------------------------------------------------


class WebhookSettingsOwner(Protocol):
    """A client whose webhook token is known (`AsyncRealESRGAN` is one)."""

    @property
    def webhooks(self) -> WebhookSettings:
        """The client's webhook settings, its token among them."""
        ...


class WebhookTokenFilter(logging.Filter):
    """A logging filter that replaces a client's webhook token with ``***``.

    The token is the last path segment of every callback URL, and servers'
    access logs print paths: uvicorn's default one writes
    ``"POST /hooks/real-esrgan/<token> HTTP/1.1" 200``, and anyone who reads
    the log can then send callbacks. Add the filter to the logger that prints
    them, before the server starts::

        logging.getLogger("uvicorn.access").addFilter(WebhookTokenFilter(client))

    It rewrites the record's message and every str among its arguments (a
    tuple, as uvicorn's, or a mapping), so that every handler and formatter
    sees the redacted text; it never drops a record.

    Args:
        client: The client whose token to redact.
    """

    def __init__(self, client: WebhookSettingsOwner) -> None:
        super().__init__()
        self._token = client.webhooks.token

    def __repr__(self) -> str:
        return "<WebhookTokenFilter>"

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the token from `record` in place; always True (keep the record)."""
        record.msg = self._redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(self._redact(arg) for arg in args)
        elif isinstance(args, Mapping):
            record.args = {key: self._redact(value) for key, value in args.items()}
        return True

    def _redact(self, value: object) -> object:
        if isinstance(value, str) and self._token in value:
            return value.replace(self._token, "***")
        return value


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    # Served on its own (not mounted), the server speaks the lifespan protocol to it.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
