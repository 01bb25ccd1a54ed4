"""The client's wire behaviour, error mapping and retry rules, against respx mocks.

Each retry rule is shown by counting the requests that reached the (mocked) gateway.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import respx

from real_esrgan_async import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncRealESRGAN,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    InsufficientBalanceError,
    InvalidRequestError,
    Job,
    JobFailedError,
    JobState,
    JobSystemError,
    JobTimeoutError,
    NotFoundError,
    PermissionDeniedError,
    PollPolicy,
    RateLimitError,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    Status,
    __version__,
)

pytestmark = pytest.mark.anyio

BASE = "https://gateway.test"
SUBMIT = f"{BASE}/real-esrgan/v1/real-esrgan/generate"
KEY = "sk-very-secret-key-123"
RID = "real-esrgan_019d0000-aaaa-7000-8000-000000000001"
STATUS = f"{BASE}/v2/requests/status/{RID}"
IMAGE = "https://images.example/cat.jpg"
MEDIA = "https://cdn.example/v1/out.png"
FAST_RETRY = RetryPolicy(base_delay=0.001, max_delay=0.005, default_cooldown=0.001)
FAST_POLL = PollPolicy(initial_delay=0.01, min_interval=0.01, max_interval=0.05, jitter=0.0)


def accepted(request_id: str = RID) -> httpx.Response:
    return httpx.Response(
        202,
        json={
            "request_id": request_id,
            "status": "QUEUED",
            "polling_url": f"{BASE}/v2/requests/status/{request_id}",
        },
    )


def state(status: str, request_id: str = RID, error: str | None = None) -> httpx.Response:
    output = {"media_url": [MEDIA], "media_type": "image/png"} if status == "COMPLETED" else None
    return httpx.Response(
        200,
        json={
            "request_id": request_id,
            "status": status,
            "model_id": "real-esrgan",
            "error": error,
            "output": output,
            "created_at": "2026-03-31T10:00:00.000Z",
            "updated_at": "2026-03-31 10:00:15",
            "completed_at": None,
        },
    )


@pytest.fixture
def gateway() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
async def client() -> AsyncIterator[AsyncRealESRGAN]:
    async with AsyncRealESRGAN(KEY, base_url=BASE, retry=FAST_RETRY, poll=FAST_POLL) as client:
        yield client


# Construction and lifecycle -------------------------------------------------------


def test_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REAL_ESRGAN_API_KEY", KEY)
    assert "state=unopened" in repr(AsyncRealESRGAN())


def test_no_key_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REAL_ESRGAN_API_KEY", raising=False)
    with pytest.raises(InvalidRequestError, match="set the REAL_ESRGAN_API_KEY environment"):
        AsyncRealESRGAN()


async def test_use_before_open_or_after_close_raises_runtime_error() -> None:
    client = AsyncRealESRGAN(KEY, base_url=BASE)
    with pytest.raises(RuntimeError, match="not open; use it as `async with"):
        await client.submit(IMAGE)
    async with client:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await client.status(RID)
    await client.aclose()  # idempotent
    await client.aclose()


async def test_a_caller_supplied_http_client_is_used_and_not_closed(
    gateway: respx.MockRouter,
) -> None:
    route = gateway.post(SUBMIT).mock(return_value=accepted())
    async with httpx.AsyncClient() as http:
        async with AsyncRealESRGAN(KEY, base_url=BASE, http_client=http) as client:
            await client.submit(IMAGE)
        assert not http.is_closed
    assert 1 == route.call_count


# Wire details ----------------------------------------------------------------------


async def test_submit_sends_the_documented_request(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    route = gateway.post(SUBMIT).mock(return_value=accepted())
    job = await client.submit(IMAGE, scale=2, face_enhance=True)
    assert Job(RID, Status.QUEUED, f"{BASE}/v2/requests/status/{RID}") == job
    sent = route.calls.last.request
    assert KEY == sent.headers["Ocp-Apim-Subscription-Key"]
    assert "application/json" == sent.headers["Content-Type"]
    assert "no-cache" == sent.headers["Cache-Control"]
    assert sent.headers["User-Agent"].startswith(f"real-esrgan-async/{__version__} ")
    assert {"image": IMAGE, "scale": 2, "face_enhance": True} == json.loads(sent.content)
    assert (RID,) == client.unfinished_request_ids


async def test_status_gets_the_universal_status_path(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    route = gateway.get(STATUS).mock(return_value=state("PROCESSING"))
    result = await client.status(RID)
    assert Status.PROCESSING == result.status
    assert KEY == route.calls.last.request.headers["Ocp-Apim-Subscription-Key"]


async def test_a_foreign_polling_url_is_not_followed(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    """The key travels only to base_url's origin, whatever the gateway says."""
    foreign = gateway.get(url__startswith="https://evil.example").mock(return_value=state("QUEUED"))
    ours = gateway.get(STATUS).mock(return_value=state("QUEUED"))
    job = Job(RID, Status.QUEUED, f"https://evil.example/v2/requests/status/{RID}")
    await client.status(job)
    assert (0, 1) == (foreign.call_count, ours.call_count)


async def test_a_same_origin_polling_url_is_followed(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    route = gateway.get(f"{BASE}/v2/requests/status/other-path").mock(return_value=state("QUEUED"))
    await client.status(Job(RID, Status.QUEUED, f"{BASE}/v2/requests/status/other-path"))
    assert 1 == route.call_count


# Validation before payment -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"image": "ftp://x/y.png"}, "http:// or https://"),
        ({"image": IMAGE, "scale": 5}, "scale must be one of (1, 2, 3, 4); got 5"),
        ({"image": IMAGE, "scale": True}, "got bool True"),
        ({"image": IMAGE, "face_enhance": "no"}, "face_enhance must be a bool"),
        ({"image": "http://127.0.0.1/cat.png"}, "loopback or private host"),
        ({"image": "http://10.1.2.3/cat.png"}, "loopback or private host"),
        ({"image": IMAGE, "webhook_url": "http://hooks.example/x"}, "must be an https:// URL"),
        ({"image": IMAGE, "webhook_url": "https://h.example", "webhook_mode": "x"}, "'terminal'"),
    ],
)
async def test_bad_input_is_refused_before_any_request(
    gateway: respx.MockRouter, client: AsyncRealESRGAN, kwargs: dict[str, object], fragment: str
) -> None:
    route = gateway.post(SUBMIT).mock(return_value=accepted())
    with pytest.raises(InvalidRequestError) as info:
        await client.submit(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert 0 == route.call_count


def test_private_hosts_are_allowed_when_the_gateway_itself_is_local() -> None:
    """An emulator on loopback can fetch loopback images; the real gateway cannot."""
    assert AsyncRealESRGAN(KEY, base_url="http://127.0.0.1:8000").allow_private_image_hosts
    assert not AsyncRealESRGAN(KEY, base_url=BASE).allow_private_image_hosts


# Error mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "body", "error_type"),
    [
        (400, {"error": "Bad Request", "message": "scale"}, BadRequestError),
        (401, {"error": "Unauthorized", "message": "bad key"}, AuthenticationError),
        (
            402,
            {
                "error": "Insufficient Balance",
                "message": "Your wallet does not have enough balance.",
            },
            InsufficientBalanceError,
        ),
        (403, {"error": "Forbidden", "message": "no"}, PermissionDeniedError),
        (418, {"error": "Teapot"}, APIStatusError),
    ],
)
async def test_each_refusal_maps_to_its_error_and_is_sent_once(
    gateway: respx.MockRouter,
    client: AsyncRealESRGAN,
    code: int,
    body: dict[str, str],
    error_type: type[APIStatusError],
) -> None:
    route = gateway.post(SUBMIT).mock(return_value=httpx.Response(code, json=body))
    with pytest.raises(APIStatusError) as info:
        await client.submit(IMAGE)
    assert error_type is type(info.value)
    assert (code, body["error"], body.get("message")) == (
        info.value.status_code,
        info.value.error,
        info.value.message,
    )
    assert 1 == route.call_count


async def test_model_not_found_is_recognisable(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    body = {"error": "Model not found", "message": "Model 'real-esrgan' not found or is disabled"}
    gateway.post(SUBMIT).mock(return_value=httpx.Response(400, json=body))
    with pytest.raises(BadRequestError) as info:
        await client.submit(IMAGE)
    assert info.value.is_model_not_found


async def test_a_non_json_error_body_still_maps(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    gateway.get(STATUS).mock(return_value=httpx.Response(403, text="<html>denied</html>"))
    with pytest.raises(PermissionDeniedError) as info:
        await client.status(RID)
    assert ("<html>denied</html>", RID) == (info.value.message, info.value.request_id)


async def test_an_unknown_status_in_an_answer_names_the_field(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    gateway.get(STATUS).mock(
        return_value=httpx.Response(200, json={"request_id": RID, "status": "X"})
    )
    with pytest.raises(ResponseValidationError, match="field 'status' is 'X'"):
        await client.status(RID)


# Retry rules, counted ----------------------------------------------------------------


async def test_a_submit_that_times_out_after_sending_is_sent_exactly_once(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    route = gateway.post(SUBMIT).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(AmbiguousSubmitError) as info:
        await client.submit(IMAGE)
    assert 1 == route.call_count
    assert (IMAGE, None) == (info.value.image, info.value.status_code)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert 1 == client.stats().ambiguous_submits


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, json={"error": "Internal Server Error"}),
        httpx.Response(503, text="unavailable"),
        httpx.RemoteProtocolError("peer closed"),
        httpx.ReadError("reset"),
    ],
)
async def test_an_ambiguous_submit_failure_is_never_retried(
    gateway: respx.MockRouter, client: AsyncRealESRGAN, failure: object
) -> None:
    kwargs = (
        {"return_value": failure}
        if isinstance(failure, httpx.Response)
        else {"side_effect": failure}
    )
    route = gateway.post(SUBMIT).mock(**kwargs)
    with pytest.raises(AmbiguousSubmitError, match="a job may exist"):
        await client.submit(IMAGE)
    assert 1 == route.call_count


async def test_a_submit_that_never_connected_is_retried(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    route = gateway.post(SUBMIT).mock(
        side_effect=[httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), accepted()]
    )
    job = await client.submit(IMAGE)
    assert (RID, 3, 2) == (job.request_id, route.call_count, client.stats().retries)


async def test_a_submit_that_never_connects_gives_up_with_a_connection_error(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    route = gateway.post(SUBMIT).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(APIConnectionError, match=r"request to gateway\.test failed: ConnectError"):
        await client.submit(IMAGE)
    assert FAST_RETRY.max_attempts == route.call_count


async def test_a_rate_limited_submit_waits_retry_after_and_is_retried(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    limited = httpx.Response(
        429,
        headers={"Retry-After": "0.05"},
        json={"error": "Too Many Requests", "message": "resets in ~1s"},
    )
    route = gateway.post(SUBMIT).mock(side_effect=[limited, accepted()])
    job = await client.submit(IMAGE)
    assert RID == job.request_id
    assert 2 == route.call_count
    assert (1, 1) == (client.stats().rate_limited, client.stats().retries)


async def test_a_429_pauses_every_request_of_the_client(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    """One shared cooldown: a 429 on a status call holds back the next submit too."""
    limited = httpx.Response(429, headers={"Retry-After": "0.2"}, json={"error": "Too Many"})
    gateway.get(STATUS).mock(side_effect=[limited, state("QUEUED")])
    times: list[float] = []

    def submitted(request: httpx.Request) -> httpx.Response:
        times.append(anyio.current_time())
        return accepted()

    gateway.post(SUBMIT).mock(side_effect=submitted)
    start = anyio.current_time()
    await client.status(RID)
    await client.submit(IMAGE)
    assert times[0] - start >= 0.19


async def test_rate_limit_errors_carry_retry_after_when_retries_run_out(
    gateway: respx.MockRouter,
) -> None:
    limited = httpx.Response(429, headers={"Retry-After": "0"}, json={"error": "Too Many"})
    route = gateway.get(STATUS).mock(return_value=limited)
    policy = RetryPolicy(max_rate_limited=2, base_delay=0.001)
    async with AsyncRealESRGAN(KEY, base_url=BASE, retry=policy) as client:
        with pytest.raises(RateLimitError) as info:
            await client.status(RID)
    assert (2, 0.0, RID) == (route.call_count, info.value.retry_after, info.value.request_id)


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(502, text="bad gateway"),
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("closed"),
    ],
)
async def test_status_calls_are_retried_on_transient_failures(
    gateway: respx.MockRouter, client: AsyncRealESRGAN, failure: object
) -> None:
    route = gateway.get(STATUS).mock(side_effect=[failure, failure, state("COMPLETED")])
    result = await client.status(RID)
    assert (Status.COMPLETED, 3) == (result.status, route.call_count)


async def test_status_calls_give_up_after_max_attempts(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    route = gateway.get(STATUS).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(APITimeoutError):
        await client.status(RID)
    assert FAST_RETRY.max_attempts == route.call_count
    route = gateway.get(STATUS).mock(return_value=httpx.Response(500, json={"error": "x"}))
    with pytest.raises(ServerError):
        await client.status(RID)


@pytest.mark.parametrize("code", [400, 401, 402, 403, 404])
async def test_status_refusals_are_never_retried(
    gateway: respx.MockRouter, client: AsyncRealESRGAN, code: int
) -> None:
    route = gateway.get(STATUS).mock(return_value=httpx.Response(code, json={"error": "no"}))
    with pytest.raises(APIStatusError):
        await client.status(RID)
    assert 1 == route.call_count


# The key stays secret ---------------------------------------------------------------


async def test_the_key_is_in_no_repr_message_or_log(
    gateway: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway.post(SUBMIT).mock(side_effect=[httpx.ConnectError("x"), httpx.ReadTimeout("y")])
    gateway.get(STATUS).mock(return_value=httpx.Response(401, json={"error": "Unauthorized"}))
    errors: list[BaseException] = []
    async with AsyncRealESRGAN(KEY, base_url=BASE, retry=FAST_RETRY) as client:
        for call in (client.submit(IMAGE), client.status(RID)):
            try:
                await call
            except Exception as exc:
                errors.append(exc)
        texts = [repr(client), str(client.stats())]
    texts += [f"{e!r} {e} {e.__cause__!r}" for e in errors]
    texts += [record.getMessage() for record in caplog.records]
    assert 2 == len(errors)
    assert [] == [text for text in texts if KEY in text]


# Waiting -----------------------------------------------------------------------------


async def test_wait_polls_until_completed(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    route = gateway.get(STATUS).mock(
        side_effect=[state("QUEUED"), state("PROCESSING"), state("COMPLETED")]
    )
    result = await client.wait(RID)
    assert (Status.COMPLETED, MEDIA, 3) == (result.status, result.media_url, route.call_count)
    assert () == client.unfinished_request_ids
    assert 1 == client.stats().completed


@pytest.mark.parametrize(
    ("status", "error_type", "charged"),
    [("FAILED", JobFailedError, True), ("ERROR", JobSystemError, False)],
)
async def test_wait_raises_job_errors_with_the_request_id(
    gateway: respx.MockRouter,
    client: AsyncRealESRGAN,
    status: str,
    error_type: type[JobFailedError | JobSystemError],
    charged: bool,
) -> None:
    gateway.get(STATUS).mock(return_value=state(status, error="CUDA out of memory"))
    with pytest.raises(error_type) as info:
        await client.wait(RID)
    assert (RID, Status(status), "CUDA out of memory", charged) == (
        info.value.request_id,
        info.value.status,
        info.value.error,
        info.value.charged,
    )


async def test_two_waits_on_one_job_share_its_status_calls(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    route = gateway.get(STATUS).mock(side_effect=[state("QUEUED"), state("COMPLETED")])
    results = []

    async def waiter() -> None:
        results.append(await client.wait(RID))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        tg.start_soon(waiter)
    assert (2, 2) == (len(results), route.call_count)


async def test_wait_timeout_carries_the_request_id_and_the_job_can_be_waited_again(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    gateway.get(STATUS).mock(return_value=state("PROCESSING"))
    with pytest.raises(JobTimeoutError) as info:
        await client.wait(RID, timeout=0.05)
    assert RID == info.value.request_id
    assert (RID,) == client.unfinished_request_ids
    gateway.get(STATUS).mock(return_value=state("COMPLETED"))
    assert Status.COMPLETED == (await client.wait(RID, timeout=5)).status


async def test_a_status_call_resolves_a_waiter(
    gateway: respx.MockRouter,
) -> None:
    """A state learned outside the poller (here the user's own call) resolves waits."""
    slow = PollPolicy(initial_delay=30.0, jitter=0.0)
    gateway.get(STATUS).mock(return_value=state("COMPLETED"))
    async with AsyncRealESRGAN(KEY, base_url=BASE, poll=slow) as client:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.wait, RID)
                await anyio.sleep(0.01)
                await client.status(RID)


async def test_wait_on_an_unknown_id_raises_not_found_with_the_id(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    gateway.get(STATUS).mock(return_value=httpx.Response(404, json={"error": "Not Found"}))
    with pytest.raises(NotFoundError) as info:
        await client.wait(RID)
    assert RID == info.value.request_id


async def test_upscale_submits_then_waits(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    gateway.post(SUBMIT).mock(return_value=accepted())
    gateway.get(STATUS).mock(return_value=state("COMPLETED"))
    result = await client.upscale(IMAGE, scale=3)
    assert (RID, Status.COMPLETED) == (result.request_id, result.status)
    assert (1, 1, 0.002) == (
        client.stats().submitted,
        client.stats().completed,
        client.stats().cost_usd,
    )


# Downloads -----------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 100


async def completed(client: AsyncRealESRGAN, gateway: respx.MockRouter) -> JobState:
    gateway.get(STATUS).mock(return_value=state("COMPLETED"))
    return await client.status(RID)


async def test_download_returns_bytes_and_never_sends_the_key(
    gateway: respx.MockRouter, client: AsyncRealESRGAN
) -> None:
    media = gateway.get(MEDIA).mock(
        return_value=httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})
    )
    assert PNG == await client.download(await completed(client, gateway))
    assert "Ocp-Apim-Subscription-Key" not in media.calls.last.request.headers


async def test_download_to_a_file_is_atomic(
    gateway: respx.MockRouter, client: AsyncRealESRGAN, tmp_path: Path
) -> None:
    gateway.get(MEDIA).mock(
        return_value=httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})
    )
    result = await completed(client, gateway)
    written = await client.download(result, tmp_path / "out.png")
    assert (tmp_path / "out.png", PNG) == (written, (tmp_path / "out.png").read_bytes())
    into_dir = await client.download(result, tmp_path)
    assert tmp_path / f"{RID}.png" == into_dir
    assert sorted(["out.png", f"{RID}.png"]) == sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        (
            httpx.Response(200, content=b"<html>", headers={"Content-Type": "text/html"}),
            "expected an image, got Content-Type 'text/html'",
        ),
        (
            httpx.Response(200, content=PNG * 20, headers={"Content-Type": "image/png"}),
            "over the limit of 1000",
        ),
        (httpx.Response(404), "expired or is wrong"),
    ],
)
async def test_download_refuses_junk_and_leaves_no_partial_file(
    gateway: respx.MockRouter,
    client: AsyncRealESRGAN,
    tmp_path: Path,
    response: httpx.Response,
    fragment: str,
) -> None:
    gateway.get(MEDIA).mock(return_value=response)
    result = await completed(client, gateway)
    with pytest.raises(DownloadError) as info:
        await client.download(result, tmp_path / "out.png", max_bytes=1000)
    assert fragment in str(info.value)
    assert (RID, MEDIA) == (info.value.request_id, info.value.url)
    assert [] == list(tmp_path.iterdir())


async def test_download_of_an_unfinished_job_is_refused(client: AsyncRealESRGAN) -> None:
    with pytest.raises(DownloadError, match="has no output to download"):
        await client.download(JobState(RID, Status.PROCESSING))


def test_a_natively_cancelled_close_still_closes_the_connections() -> None:
    """asyncio's Ctrl-C cancels the task itself: aclose must not leak the sockets then."""
    import asyncio
    import contextlib

    clients: list[AsyncRealESRGAN] = []

    async def body() -> None:
        async with AsyncRealESRGAN(KEY, base_url=BASE) as client:
            clients.append(client)
            await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.ensure_future(body())
        await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert clients[0]._http is not None
    assert clients[0]._http.is_closed
