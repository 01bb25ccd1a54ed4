"""Webhooks end to end: the emulator, in its thread, POSTs callbacks over loopback to an app
served on a real socket, in the test's own event loop (asyncio or trio) where the client waits.

The app is served by a small HTTP/1.1 server on h11 and anyio (uvicorn runs only on asyncio, and
the receiver must live in the client's event loop). Status calls are counted per job by the
emulator and asserted: about one per job with confirmation, none without, and one more for a
job whose callback was lost (the safety net's check).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import anyio
import anyio.abc
import h11
import httpx
import pytest
from fastapi import FastAPI, HTTPException
from starlette.applications import Starlette
from starlette.routing import Mount

from real_esrgan_async import (
    AsyncRealESRGAN,
    JobError,
    JobState,
    JobTimeoutError,
    Outcome,
    PollPolicy,
    RetryPolicy,
    Status,
    WebhookReceiver,
)
from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator

pytestmark = pytest.mark.anyio

JOBS = 12
# Callbacks cross a real network, whose delay does not shrink with the emulator's time_scale:
# the first safety-net check waits for the interval, not for a (scaled) learned quantile.
NO_EARLY_CHECK = 1000.0
FAST_RETRY = RetryPolicy(base_delay=0.001, max_delay=0.01, default_cooldown=0.01)


def config(**overrides: Any) -> EmulatorConfig:
    """A fast emulator. Inputs are not fetched unless asked: job times then follow the scaled
    model alone, not the machine's load, so the counts asserted do not depend on it. Jobs take
    30 ms or more: a callback that came before the client had read the submit's answer would
    be about an id it does not know yet (ignored, then found by the safety net)."""
    options: dict[str, Any] = {
        "time_scale": 0.01,
        "fetch_inputs": False,
        "seed": 7,
        "error_rate": 0.0,
        "cold_start_rate": 0.0,
        "allow_http_webhooks": True,
        "webhook_retry_delay": 0.01,
    }
    return EmulatorConfig(**(options | overrides))


# A small ASGI server over a real socket ------------------------------------------------


class Server:
    """Serves `app` (set it before requests come) on 127.0.0.1 with h11, one task per
    connection, keep-alive included."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.app: Any = None

    async def connection(self, stream: anyio.abc.ByteStream) -> None:
        conn = h11.Connection(h11.SERVER)
        with contextlib.suppress(anyio.BrokenResourceError, h11.ProtocolError):
            async with stream:
                while await self._exchange(conn, stream):
                    conn.start_next_cycle()

    async def _exchange(self, conn: h11.Connection, stream: anyio.abc.ByteStream) -> bool:
        """Serve one request; True when the connection can carry another."""

        async def next_event() -> Any:
            while (event := conn.next_event()) is h11.NEED_DATA:
                try:
                    conn.receive_data(await stream.receive())
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    conn.receive_data(b"")
            return event

        request = await next_event()
        if not isinstance(request, h11.Request):
            return False
        answered = anyio.Event()

        async def receive() -> dict[str, Any]:
            if conn.their_state is h11.SEND_BODY:
                event = await next_event()
                if isinstance(event, h11.Data):
                    return {"type": "http.request", "body": bytes(event.data), "more_body": True}
                if isinstance(event, h11.EndOfMessage):
                    return {"type": "http.request", "body": b"", "more_body": False}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                response = h11.Response(
                    status_code=message["status"], headers=list(message.get("headers", []))
                )
                await stream.send(conn.send(response))
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    await stream.send(conn.send(h11.Data(data=message["body"])))
                if not message.get("more_body", False):
                    await stream.send(conn.send(h11.EndOfMessage()))
                    answered.set()

        path, _, query = request.target.partition(b"?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method.decode(),
            "scheme": "http",
            "path": unquote(path.decode()),
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": list(request.headers),
            "server": None,
            "client": None,
        }
        await self.app(scope, receive, send)
        # Drain what the app left unread (a refused body), so that the caller reads our
        # answer rather than a connection reset.
        while conn.their_state is h11.SEND_BODY:
            if not isinstance(await next_event(), h11.Data | h11.EndOfMessage):
                return False
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Server]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server = Server(f"http://127.0.0.1:{port}")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.connection)
        yield server
        tg.cancel_scope.cancel()


# The scene: emulator, app with the receiver, client ----------------------------------------


class Scene:
    def __init__(self, gateway: RunningEmulator, client: AsyncRealESRGAN, server: Server) -> None:
        self.gateway = gateway
        self.client = client
        self.server = server
        self.receiver = WebhookReceiver(client)

    def calls_per_job(self) -> dict[str, int]:
        """Status calls the emulator received, for each job it created."""
        stats = self.gateway.emulator.stats()
        calls = stats.status_calls_by_request_id
        return {rid: calls.get(rid, 0) for rid in self.gateway.emulator.request_ids()}

    async def upscale_all(self, count: int = JOBS) -> list[Outcome]:
        images = [self.gateway.sample_url("tiny.png")] * count
        with anyio.fail_after(20):
            async with self.client.upscale_many(images, job_timeout=15) as run:
                return [outcome async for outcome in run]


@contextlib.asynccontextmanager
async def scene(
    emulator: EmulatorConfig,
    *,
    safety_net_interval: float = 5.0,
    framework: str = "starlette",
    **options: Any,
) -> AsyncIterator[Scene]:
    """The emulator delivering to an app, on a real socket, with the receiver mounted at
    /hooks; a client whose jobs report there."""
    poll = PollPolicy(safety_net_interval=safety_net_interval, safety_net_factor=NO_EARLY_CHECK)
    with running_emulator(emulator) as gateway:
        async with serving() as server:
            client = AsyncRealESRGAN(
                gateway.api_key,
                base_url=gateway.base_url,
                webhook_url=f"{server.url}/hooks",
                allow_insecure_webhooks=True,
                poll=poll,
                retry=FAST_RETRY,
                **options,
            )
            async with client:
                the_scene = Scene(gateway, client, server)
                if framework == "fastapi":
                    app = FastAPI()
                    app.mount("/hooks", the_scene.receiver)
                    server.app = app
                else:
                    server.app = Starlette(routes=[Mount("/hooks", app=the_scene.receiver)])
                yield the_scene


def all_completed(outcomes: list[Outcome]) -> None:
    assert list(range(len(outcomes))) == sorted(o.index for o in outcomes)
    assert all(o.ok for o in outcomes), [repr(o.error) for o in outcomes if not o.ok]


# Terminal and sync modes -------------------------------------------------------------------


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
async def test_terminal_mode_with_confirmation_costs_one_status_call_per_job(
    framework: str,
) -> None:
    async with scene(config(), framework=framework) as s:
        outcomes = await s.upscale_all()
        per_job = s.calls_per_job()
        stats = s.client.stats()

    all_completed(outcomes)
    assert [1] * JOBS == list(per_job.values())  # the confirmation, nothing else
    assert (JOBS, JOBS, 1.0) == (stats.completed, stats.status_calls, stats.status_calls_per_job)
    assert (JOBS, JOBS) == (s.receiver.counts["accepted"], s.receiver.counts["confirmations"])


async def test_terminal_mode_without_confirmation_costs_no_status_call_at_all() -> None:
    async with scene(config(), webhook_confirm=False) as s:
        outcomes = await s.upscale_all()
        per_job = s.calls_per_job()

    all_completed(outcomes)
    assert [0] * JOBS == list(per_job.values())
    assert 0 == s.client.stats().status_calls


@pytest.mark.parametrize("confirm", [True, False])
async def test_sync_mode_callbacks_are_heartbeats_and_only_the_terminal_one_resolves(
    confirm: bool,
) -> None:
    async with scene(config(), webhook_mode="sync", webhook_confirm=confirm) as s:
        outcomes = await s.upscale_all(6)
        per_job = s.calls_per_job()

    all_completed(outcomes)
    assert [int(confirm)] * 6 == list(per_job.values())
    assert s.receiver.counts["accepted"] > 6  # cycles came before the terminal callbacks


async def test_wait_resolves_from_the_callback_over_the_socket() -> None:
    async with scene(config(fetch_inputs=True)) as s:
        job = await s.client.submit(s.gateway.sample_url("photo.jpg"), scale=2)
        with anyio.fail_after(10):
            state = await s.client.wait(job)
        calls = s.calls_per_job()[job.request_id]
        truth = s.gateway.emulator.job(job.request_id)

    assert (Status.COMPLETED, 1) == (state.status, calls)
    assert truth is not None
    assert Status.COMPLETED == truth.status
    assert state.media_url is not None


# Duplicates and losses --------------------------------------------------------------------


async def test_duplicated_callbacks_resolve_each_job_once_at_one_status_call() -> None:
    async with scene(config(webhook_duplicate_rate=1.0)) as s:
        outcomes = await s.upscale_all()
        with anyio.fail_after(5):  # the duplicates come 10-100 ms after the originals
            # The emulator counts in its own thread: there is no event to wait on.
            while s.gateway.emulator.stats().webhooks_delivered < 2 * JOBS:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        await anyio.sleep(0.05)
        per_job = s.calls_per_job()
        counts = dict(s.receiver.counts)

    all_completed(outcomes)
    assert JOBS == len(outcomes)
    assert [1] * JOBS == list(per_job.values())
    assert (2 * JOBS, JOBS) == (counts["accepted"], counts["confirmations"])
    assert JOBS == counts["coalesced"] + counts["ignored"]


async def test_lost_callbacks_are_caught_by_the_safety_net_at_one_check_each() -> None:
    async with scene(config(webhook_loss_rate=1.0), safety_net_interval=0.5) as s:
        with anyio.fail_after(5):
            outcomes = await s.upscale_all()
        per_job = s.calls_per_job()

    all_completed(outcomes)
    assert [1] * JOBS == list(per_job.values())  # the safety net's one late check
    assert 0 == s.receiver.counts["accepted"]


@pytest.mark.parametrize("confirm", [True, False])
async def test_with_half_the_callbacks_lost_each_job_costs_about_one_status_call(
    confirm: bool,
) -> None:
    """With confirmation a job costs its confirmation or, when its callback was lost, the
    safety net's check; without, only the jobs whose callback was lost cost a call."""
    async with scene(
        config(webhook_loss_rate=0.5, seed=3), safety_net_interval=1.0, webhook_confirm=confirm
    ) as s:
        outcomes = await s.upscale_all()
        calls = list(s.calls_per_job().values())
        lost = s.gateway.emulator.stats().webhooks_lost

    all_completed(outcomes)
    assert 0 < lost < JOBS
    # One more call only for a callback that lands while its job's safety-net check is out,
    # which takes a loaded machine (a second away): a little slack keeps this test honest
    # rather than flaky there.
    if confirm:
        assert set(calls) <= {1, 2}
        assert JOBS <= sum(calls) <= JOBS + 2
    else:
        assert set(calls) <= {0, 1}
        assert lost <= sum(calls) <= lost + 2


# Forgeries and abuse over the socket ------------------------------------------------------


async def test_forged_and_oversized_callbacks_are_refused_or_resolve_nothing() -> None:
    """A slower emulator keeps the job running while the forgeries arrive."""
    async with scene(config(time_scale=0.2)) as s, httpx.AsyncClient() as attacker:
        job = await s.client.submit(s.gateway.sample_url("tiny.png"))
        good_url = s.client.webhook_callback_url()
        forged = {
            "request_id": job.request_id,
            "status": "COMPLETED",
            "output": {"media_url": ["https://evil.test/x.png"], "media_type": "image/png"},
        }
        async with anyio.create_task_group() as tg:
            results: list[JobState] = []

            async def wait() -> None:
                with anyio.fail_after(15):
                    results.append(await s.client.wait(job))

            tg.start_soon(wait)
            wrong_token = await attacker.post(f"{s.server.url}/hooks/{'A' * 43}", json=forged)
            no_token = await attacker.post(f"{s.server.url}/hooks/", json=forged)
            oversized = await attacker.post(good_url, content=b"x" * (64 * 1024 + 1))
            unknown = await attacker.post(good_url, json=forged | {"request_id": "real-esrgan_x"})
            right_token = await attacker.post(good_url, json=forged)
            with anyio.fail_after(5):
                # The confirmation waits on the emulator's thread: no event to wait on here.
                while s.receiver.counts["unconfirmed"] < 1:  # noqa: ASYNC110
                    await anyio.sleep(0.005)
            assert [] == results  # the confirmation saw the job still running
            truth = s.gateway.emulator.job(job.request_id)
            assert truth is not None
            assert truth.status in ("QUEUED", "PROCESSING")
        per_job = s.calls_per_job()

    codes = [r.status_code for r in (wrong_token, no_token, oversized, unknown, right_token)]
    assert [403, 403, 413, 200, 200] == codes
    [state] = results
    assert state.media_url is not None
    assert "evil" not in state.media_url  # the real callback resolved it
    # The forgery's confirmation, a few bounded re-checks (a real gateway may lag its own
    # callback by a moment), then the real callback's, which finds the job finished.
    assert 2 <= per_job[job.request_id] <= 2 + 5  # at most five re-checks (expect_finish)
    assert [job.request_id] == list(per_job)
    counts = s.receiver.counts
    assert (2, 1, 1) == (counts["forbidden"], counts["too_large"], counts["ignored"])


# The README recipe ---------------------------------------------------------------------------


def recipe_app(base_url: str, api_key: str, public_url: str) -> FastAPI:
    """The README's "FastAPI with webhooks" recipe, pointed at the emulator."""
    from contextlib import asynccontextmanager

    client = AsyncRealESRGAN(
        api_key,
        base_url=base_url,
        webhook_url=f"{public_url}/hooks/real-esrgan",
        allow_insecure_webhooks=True,  # http to loopback: tests only
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with client:
            yield

    app = FastAPI(lifespan=lifespan)
    app.mount("/hooks/real-esrgan", WebhookReceiver(client))

    @app.post("/upscale")
    async def upscale(image: str, scale: int = 2) -> dict[str, str | None]:
        try:
            state = await client.upscale(image, scale=scale, timeout=300)
        except (JobError, JobTimeoutError) as exc:
            raise HTTPException(502, f"job {exc.request_id}: {exc}") from exc
        return {"request_id": state.request_id, "media_url": state.media_url}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {"status_calls": client.stats().status_calls}

    return app


async def test_the_readme_recipe_upscales_through_the_app_at_one_status_call_per_job() -> None:
    with running_emulator(config(fetch_inputs=True)) as gateway:
        async with serving() as server, httpx.AsyncClient(base_url=server.url) as user:
            app = recipe_app(gateway.base_url, gateway.api_key, server.url)
            server.app = app
            async with app.router.lifespan_context(app):
                with anyio.fail_after(10):
                    response = await user.post(
                        "/upscale", params={"image": gateway.sample_url("tiny.png")}
                    )
                    failed = await user.post(
                        "/upscale", params={"image": gateway.sample_url("corrupt.png")}
                    )
                stats = (await user.get("/stats")).json()
        calls = gateway.emulator.stats().status_calls

    assert 200 == response.status_code, response.text
    assert response.json()["media_url"].startswith(gateway.base_url)
    assert 502 == failed.status_code
    assert "ended FAILED" in failed.json()["detail"]
    assert ({"status_calls": 2}, 2) == (stats, calls)  # one confirmation per job
