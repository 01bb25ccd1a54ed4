"""The ASGI app: the gateway's endpoints, the emulator's own endpoints, and its lifespan.

Endpoints (paths as the gateway's, so only the host of a URL changes):

- ``POST /real-esrgan/v1/real-esrgan/generate``: submit (key required);
- ``GET /v2/requests/status/{request_id}``: status (key required);
- ``GET /media/{request_id}/output.png``: outputs (no key; expire after ``media_ttl``);
- ``GET /samples/``: the index of the samples, as JSON (no key);
- ``GET /samples/{name}``: sample inputs (no key);
- ``GET /_emulator/stats``: the counters as JSON (no key).

Every request must name the loopback address and port the emulator serves in its ``Host``
header, or it gets 421 Misdirected Request (``_HostGuard``): a web page that re-points its own
name at 127.0.0.1 (DNS rebinding) cannot reach the emulator, because its requests carry its name.

The lifespan owns what outlives a request: the HTTP client that downloads inputs and POSTs
webhooks, the webhook loop, and the input-processing tasks. All of it is anyio, so the app runs
under any ASGI server on asyncio or trio.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator

import anyio
import attrs
import httpx
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ._core import Core
from ._faults import DroppedResponse
from ._fetch import fetch_input
from ._hosts import host_header_allowed
from ._images import MAX_INPUT_PIXELS, UnprocessableInputError, Upscaled, upscale
from ._jobs import EmulatedJob, status_body
from ._ratelimit import retry_after_header
from ._samples import load_sample, media_type_of, sample_index
from ._state import InsufficientBalance, RateLimited
from ._validation import (
    SubmitRejectedError,
    image_of,
    megapixels_hint,
    parse_callback_target,
    parse_submit_body,
)
from ._webhooks import WebhookDispatcher

__all__ = ["SUBMIT_PATH", "build_app"]

_logger = logging.getLogger(__name__)

SUBMIT_PATH = "/real-esrgan/v1/real-esrgan/generate"
STATUS_PATH = "/v2/requests/status"
API_KEY_HEADER = "ocp-apim-subscription-key"
# Requests to these prefixes are the emulator's own plumbing, not traffic a client sends the
# gateway, so they stay out of the concurrency counters.
_UNCOUNTED_PREFIXES = ("/samples/", "/_emulator/")

_ERROR_COUNTERS = {
    400: "bad_requests",
    401: "unauthorized",
    402: "insufficient_balance",
    404: "not_found",
    429: "rate_limited",
}


@attrs.frozen
class _Runtime:
    task_group: TaskGroup
    client: httpx.AsyncClient
    dispatcher: WebhookDispatcher
    work_limiter: anyio.CapacityLimiter


class _Api:
    """Request handlers over one ``Core``."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.runtime: _Runtime | None = None

    # -- helpers -------------------------------------------------------------------------

    def _error(
        self, status: int, error: str, message: str, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        with self.core.locked() as state:
            counters = state.counters
            if status >= 500:
                counters.server_errors += 1
            else:
                name = _ERROR_COUNTERS[status]
                setattr(counters, name, getattr(counters, name) + 1)
        return JSONResponse({"error": error, "message": message}, status, headers=headers)

    def _authorized(self, request: Request) -> bool:
        return request.headers.get(API_KEY_HEADER) in self.core.config.api_keys

    def _unauthorized(self) -> JSONResponse:
        return self._error(
            401,
            "Unauthorized",
            "Access denied due to missing or invalid subscription key. Make sure to provide a "
            "valid key for an active subscription.",
        )

    async def _latency(self) -> None:
        config = self.core.config
        delay = config.latency
        if config.latency_jitter > 0:
            delay += self.core.uniform(0.0, config.latency_jitter)
        if delay > 0:
            await anyio.sleep(delay)

    @staticmethod
    def _base_url(request: Request) -> str:
        # Built from the request's own Host header: right whatever port or name was used.
        return str(request.base_url).rstrip("/")

    # -- gateway endpoints ---------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        """``POST /real-esrgan/v1/real-esrgan/generate``.

        Checks in the gateway's layering: the API-management front door first (key), then the
        queue system (model, body, webhook headers, rate limit, wallet). A drop before creation
        happens once the request is valid, so the client cannot tell it from a drop after.
        """
        await self._latency()
        raw = await request.body()
        image = image_of(raw)
        with self.core.locked() as state:
            state.counters.submits_received += 1
            if image is not None:
                state.counters.submits_by_image[image] += 1
        if not self._authorized(request):
            return self._unauthorized()
        config = self.core.config
        if not config.model_enabled:
            return self._error(
                400, "Model not found", "Model 'real-esrgan' not found or is disabled"
            )
        try:
            body = parse_submit_body(raw)
            webhook = parse_callback_target(
                request.headers, allow_http_loopback=config.allow_http_webhooks
            )
            # Only an emulator that does not look at the input needs to be told its size.
            megapixels = (
                None
                if config.fetch_inputs
                else megapixels_hint(body.image, limit=MAX_INPUT_PIXELS / 1e6)
            )
        except SubmitRejectedError as exc:
            return self._error(400, "Bad Request", str(exc))
        runtime = self.runtime
        if runtime is None and (config.fetch_inputs or webhook is not None):
            return self._error(
                500,
                "Internal Server Error",
                "The emulator's background tasks are not running: serve Emulator.app with the "
                "ASGI lifespan enabled (or use running_emulator()).",
            )
        if self.core.roll(config.drop_before_create_rate):
            with self.core.locked() as state:
                state.counters.dropped_before_create += 1
            return DroppedResponse()

        base_url = self._base_url(request)
        now = self.core.now()
        with self.core.locked() as state:
            created = state.try_create(
                now,
                now + self.core.wall_offset,
                body,
                base_url=base_url,
                webhook=webhook,
                megapixels=megapixels,
            )
        if isinstance(created, RateLimited):
            seconds = retry_after_header(created.retry_after)
            return self._error(
                429,
                "Too Many Requests",
                f"Rate limit exceeded, resets in ~{seconds}s",
                headers={"Retry-After": str(seconds)},
            )
        if isinstance(created, InsufficientBalance):
            return self._error(
                402, "Insufficient Balance", "Your wallet does not have enough balance."
            )
        self._start(created, runtime)

        if self.core.roll(config.drop_after_create_rate):
            with self.core.locked() as state:
                state.counters.dropped_after_create += 1
            return DroppedResponse()
        return JSONResponse(
            {
                "request_id": created.request_id,
                "status": "QUEUED",
                "polling_url": f"{base_url}{STATUS_PATH}/{created.request_id}",
            },
            202,
        )

    def _start(self, job: EmulatedJob, runtime: _Runtime | None) -> None:
        """Set a new job's background work going: its input processing and its webhooks."""
        if runtime is None:
            return  # fetch_inputs is off and there is no webhook: nothing runs in background
        if job.webhook_mode == "sync":
            runtime.dispatcher.schedule_cycles(job.request_id, job.created_at)
        if self.core.config.fetch_inputs:
            runtime.task_group.start_soon(self._process, job, runtime)
        elif job.webhook_url is not None:
            assert job.end_at is not None
            runtime.dispatcher.schedule_terminal(job.request_id, job.end_at)

    async def _process(self, job: EmulatedJob, runtime: _Runtime) -> None:
        """Download and upscale a job's input, then record its outcome."""
        result: Upscaled | str
        async with runtime.work_limiter:
            try:
                data = await fetch_input(
                    runtime.client,
                    job.image,
                    max_bytes=self.core.config.max_input_bytes,
                    allow_remote_hosts=self.core.config.allow_remote_hosts,
                )
                # Pillow holds the GIL only in short stretches; in a thread it never blocks
                # the event loop that serves other requests.
                result = await anyio.to_thread.run_sync(
                    functools.partial(upscale, data, job.scale, face_enhance=job.face_enhance)
                )
            except UnprocessableInputError as exc:
                result = exc.message
            except Exception as exc:  # one bad input must not stop the server
                _logger.exception("processing %s failed unexpectedly", job.request_id)
                result = f"Internal error while processing the input: {type(exc).__name__}"
        with self.core.locked() as state:
            end_at = state.finish(job, self.core.now(), result)
        if end_at is not None and job.webhook_url is not None:
            runtime.dispatcher.schedule_terminal(job.request_id, end_at)

    async def status(self, request: Request) -> Response:
        """``GET /v2/requests/status/{request_id}``."""
        await self._latency()
        request_id: str = request.path_params["request_id"]
        with self.core.locked() as state:
            state.counters.status_calls += 1
            state.counters.status_calls_by_request_id[request_id] += 1
        if not self._authorized(request):
            return self._unauthorized()
        if self.core.roll(self.core.config.status_error_rate):
            return self._error(
                500, "Internal Server Error", "An unexpected error occurred. Please try again."
            )
        now = self.core.now()
        with self.core.locked() as state:
            state.advance(now)
            job = state.jobs.get(request_id)
            body = (
                None
                if job is None
                else status_body(
                    job,
                    now,
                    base_url=self._base_url(request),
                    wall_offset=self.core.wall_offset,
                    timestamp_format=self.core.config.timestamp_format,
                )
            )
        if body is None:
            return self._error(404, "Not Found", f"Request '{request_id}' not found")
        return JSONResponse(body)

    # -- emulator endpoints --------------------------------------------------------------

    async def media(self, request: Request) -> Response:
        """``GET /media/{request_id}/output.png``: a COMPLETED job's output, until it expires."""
        request_id: str = request.path_params["request_id"]
        with self.core.locked() as state:
            png = state.media(request_id, self.core.now())
            if png is not None:
                state.counters.media_downloads += 1
        if png is None:
            return self._error(
                404, "Not Found", f"No media for '{request_id}': it does not exist or has expired"
            )
        return Response(png, media_type="image/png")

    async def samples(self, request: Request) -> Response:
        """``GET /samples/``: what the emulator serves, for a person or a script looking."""
        return JSONResponse(sample_index(self._base_url(request)))

    async def sample(self, request: Request) -> Response:
        """``GET /samples/{name}``."""
        name: str = request.path_params["name"]
        data = await anyio.to_thread.run_sync(load_sample, name)
        if data is None:
            return JSONResponse(
                {"error": "Not Found", "message": f"There is no sample named {name!r}"}, 404
            )
        return Response(data, media_type=media_type_of(name))

    async def stats(self, request: Request) -> Response:
        """``GET /_emulator/stats``: the counters, for benchmarks in another process."""
        with self.core.locked() as state:
            snapshot = state.snapshot(self.core.now())
        return JSONResponse(snapshot.to_json())

    # -- lifespan ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Run the background machinery while the app is served."""
        if self.runtime is not None:
            raise RuntimeError("this Emulator is already being served; create one per server")
        # trust_env=False: a proxy configured for the host must not intercept loopback traffic.
        # Redirects are followed by hand (``_hosts.open_checked``) so that every hop's host is
        # checked before it is contacted.
        async with (
            httpx.AsyncClient(
                trust_env=False, follow_redirects=False, timeout=self.core.config.fetch_timeout
            ) as client,
            anyio.create_task_group() as task_group,
        ):
            dispatcher = WebhookDispatcher(self.core.config, self.core, client, self.core.now)
            self.runtime = _Runtime(
                task_group=task_group,
                client=client,
                dispatcher=dispatcher,
                work_limiter=anyio.CapacityLimiter(self.core.config.processing_concurrency),
            )
            task_group.start_soon(dispatcher.run, task_group)
            try:
                yield
            finally:
                self.runtime = None
                task_group.cancel_scope.cancel()


class _ConcurrencyCounter:
    """ASGI middleware counting the API requests in flight (and their peak)."""

    def __init__(self, app: ASGIApp, core: Core) -> None:
        self._app = app
        self._core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(_UNCOUNTED_PREFIXES):
            await self._app(scope, receive, send)
            return
        with self._core.locked() as state:
            # Keep the counters object: a reset() during the request must not make the new
            # counters go negative when it ends.
            counters = state.counters
            counters.request_started()
        try:
            await self._app(scope, receive, send)
        finally:
            with self._core.locked():
                counters.request_finished()


class _HostGuard:
    """ASGI middleware answering 421 to requests whose ``Host`` is not the served loopback
    address and port (see ``_hosts.host_header_allowed``)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        host = None
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")
                break
        server = scope.get("server")
        port = server[1] if server is not None and server[1] is not None else None
        if host_header_allowed(host, port):
            await self._app(scope, receive, send)
            return
        served = (
            "127.0.0.1, localhost or [::1]"
            if port is None
            else f"127.0.0.1:{port}, localhost:{port} or [::1]:{port}"
        )
        got = "none" if host is None else repr(host[:100])
        response = JSONResponse(
            {
                "error": "Misdirected Request",
                "message": (
                    "The emulator answers only requests addressed to the loopback address and "
                    f"port it serves (Host {served}); got {got}"
                ),
            },
            421,
        )
        await response(scope, receive, send)


def build_app(core: Core) -> ASGIApp:
    """The emulator's ASGI app over ``core``."""
    api = _Api(core)
    routes = [
        Route(SUBMIT_PATH, api.submit, methods=["POST"]),
        Route(STATUS_PATH + "/{request_id}", api.status, methods=["GET"]),
        Route("/media/{request_id}/output.png", api.media, methods=["GET"]),
        Route("/samples/", api.samples, methods=["GET"]),
        Route("/samples/{name}", api.sample, methods=["GET"]),
        Route("/_emulator/stats", api.stats, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=api.lifespan)
    return _HostGuard(_ConcurrencyCounter(app, core))
