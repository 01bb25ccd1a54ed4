"""Webhooks, in process: `parse_webhook`, the client's webhook options and the receiver.

The receiver is mounted in a FastAPI app and called through httpx's ASGI transport; the
gateway is an in-memory fake behind `httpx.MockTransport` that counts status calls per job.
The rules that need no app (token before body, size before body) are checked by calling the
receiver as a raw ASGI app.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from fastapi import FastAPI

from real_esrgan_async import (
    AsyncRealESRGAN,
    InvalidRequestError,
    JobState,
    JobTimeoutError,
    PollPolicy,
    ResponseValidationError,
    RetryPolicy,
    Status,
    WebhookReceiver,
    parse_webhook,
)
from real_esrgan_async._webhooks import MAX_BODY_BYTES

pytestmark = pytest.mark.anyio

BASE = "https://gateway.test"
APP = "https://my-app.test"
HOOK = f"{APP}/hooks"
MEDIA = "https://cdn.test/out.png"
IMAGE = "https://images.test/cat.png"
FAST_RETRY = RetryPolicy(base_delay=0.001, max_delay=0.002, default_cooldown=0.001)
# Jobs here report only by webhook: the safety net is far beyond any test's end, so every
# status call counted is a confirmation.
NO_SAFETY_NET = PollPolicy(safety_net_interval=30.0, jitter=0.0)


def body(request_id: str, status: str, media: str = MEDIA) -> dict[str, Any]:
    """A callback (or status) body as the gateway documents it."""
    done = status in ("COMPLETED", "FAILED", "ERROR")
    return {
        "request_id": request_id,
        "status": status,
        "model_id": "real-esrgan",
        "error": "boom" if status in ("FAILED", "ERROR") else None,
        "output": {"media_url": [media], "media_type": "image/png"}
        if status == "COMPLETED"
        else None,
        "created_at": "2026-03-31T10:00:00.000Z",
        "updated_at": "2026-03-31T10:00:15.000Z",
        "completed_at": "2026-03-31 10:00:15" if done else None,
    }


class FakeGateway:
    """Creates jobs on POST and answers status GETs with the status a test sets."""

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}
        self.status_calls: collections.Counter[str] = collections.Counter()
        self.submits: list[httpx.Request] = []
        self.gate: anyio.Event | None = None  # when set, status answers wait for it
        self.status_code = 200

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            request_id = f"real-esrgan_{len(self.jobs):04d}"
            self.jobs[request_id] = "QUEUED"
            self.submits.append(request)
            return httpx.Response(202, json={"request_id": request_id, "status": "QUEUED"})
        request_id = request.url.path.rpartition("/")[2]
        self.status_calls[request_id] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.status_code != 200:
            return httpx.Response(self.status_code, json={"error": "nope"})
        return httpx.Response(200, json=body(request_id, self.jobs[request_id]))


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


def make_client(fake: FakeGateway, **options: Any) -> AsyncRealESRGAN:
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    options = {"webhook_url": HOOK, "poll": NO_SAFETY_NET, "retry": FAST_RETRY, **options}
    return AsyncRealESRGAN("sk-secret-key", base_url=BASE, http_client=http, **options)


@pytest.fixture
async def client(fake: FakeGateway) -> AsyncIterator[AsyncRealESRGAN]:
    async with make_client(fake) as client:
        yield client


class App:
    """A FastAPI app with the receiver mounted, and a way to POST callbacks to it."""

    def __init__(self, client: AsyncRealESRGAN) -> None:
        self.receiver = WebhookReceiver(client)
        self.app = FastAPI()
        self.app.mount("/hooks", self.receiver)
        self.path = httpx.URL(client.webhook_callback_url()).path
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=APP)

    async def post(self, content: object, *, path: str | None = None) -> httpx.Response:
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        return await self.http.post(path or self.path, content=data)


@pytest.fixture
async def app(client: AsyncRealESRGAN) -> AsyncIterator[App]:
    app = App(client)
    async with app.http:
        yield app


class Waiter:
    """`client.wait(job)` running in the background."""

    def __init__(self) -> None:
        self.results: list[JobState | BaseException] = []
        self.done = anyio.Event()

    async def run(self, client: AsyncRealESRGAN, request_id: str, timeout: float | None) -> None:
        try:
            self.results.append(await client.wait(request_id, timeout=timeout))
        except Exception as exc:  # the test inspects it
            self.results.append(exc)
        self.done.set()


async def start_wait(
    tg: anyio.abc.TaskGroup, client: AsyncRealESRGAN, request_id: str, timeout: float | None = 5
) -> Waiter:
    waiter = Waiter()
    tg.start_soon(waiter.run, client, request_id, timeout)
    await anyio.wait_all_tasks_blocked()  # its wait is registered with the poller
    return waiter


async def settle() -> None:
    """Let the work the receiver handed to the client's task group run to its end."""
    for _ in range(5):
        await anyio.wait_all_tasks_blocked()


# parse_webhook ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "str", "dict"])
def test_parse_webhook_reads_the_documented_body_raw_or_decoded(kind: str) -> None:
    data = body("real-esrgan_1", "COMPLETED")
    raw = json.dumps(data)
    forms: dict[str, bytes | str | dict[str, Any]] = {"bytes": raw.encode(), "str": raw}
    given = forms.get(kind, data)
    state = parse_webhook(given)

    assert JobState.from_json(data) == state
    assert (Status.COMPLETED, MEDIA) == (state.status, state.media_url)


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        (b"not json", "the callback body is not JSON"),
        (b"\xff\xfe", "the callback body is not JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        ({"status": "COMPLETED"}, "field 'request_id' must be a non-empty string, got missing"),
        ({"request_id": "r", "status": "DONE"}, "field 'status' is 'DONE'"),
        ({"request_id": "r", "status": "COMPLETED", "output": []}, "field 'output' must be"),
        ({"request_id": "r" * 257, "status": "QUEUED"}, "at most 256 printable characters"),
        ({"request_id": " r", "status": "QUEUED"}, "no surrounding spaces"),
        ({"request_id": "r\n", "status": "QUEUED"}, "printable"),
        (b" " * (MAX_BODY_BYTES + 1), f"at most {MAX_BODY_BYTES} are accepted"),
    ],
)
def test_parse_webhook_refuses_what_is_not_the_documented_shape(given: Any, fragment: str) -> None:
    with pytest.raises(ResponseValidationError) as info:
        parse_webhook(given)

    assert fragment in str(info.value)


def test_parse_webhook_takes_a_smaller_limit() -> None:
    with pytest.raises(ResponseValidationError, match="at most 10 are accepted"):
        parse_webhook(json.dumps(body("r", "QUEUED")), max_bytes=10)


# The client's webhook options ------------------------------------------------------------


def test_the_callback_url_is_the_webhook_url_plus_an_unguessable_per_client_token(
    fake: FakeGateway,
) -> None:
    one, two = make_client(fake), make_client(fake)
    url = httpx.URL(one.webhook_callback_url())
    token = url.path.rpartition("/")[2]

    assert ("https", "my-app.test") == (url.scheme, url.host)
    assert f"/hooks/{token}" == url.path
    assert len(token) >= 43  # 256 bits in base64
    assert one.webhook_callback_url() != two.webhook_callback_url()
    assert "sk-secret-key" not in str(url)
    assert token not in repr(one)


def test_a_per_call_url_gets_the_token_too_and_keeps_its_query(fake: FakeGateway) -> None:
    client = make_client(fake)
    token = httpx.URL(client.webhook_callback_url()).path.rpartition("/")[2]

    assert f"https://other.test/cb/{token}?app=1" == client.webhook_callback_url(
        "https://other.test/cb/?app=1"
    )


def test_a_shared_secret_is_the_token_of_every_client_that_has_it(fake: FakeGateway) -> None:
    secret = "Xq7-pL2vN9_tR4mK8sW3yB6c"  # strong: mixed kinds, no repeats
    one, two = make_client(fake, webhook_secret=secret), make_client(fake, webhook_secret=secret)

    assert f"{HOOK}/{secret}" == one.webhook_callback_url() == two.webhook_callback_url()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"webhook_url": "http://my-app.test/hooks"}, "allowed with allow_insecure_webhooks=True"),
        (
            {"webhook_url": "http://my-app.test/hooks", "allow_insecure_webhooks": True},
            "only loopback hosts may use http://",
        ),
        ({"webhook_url": "http://127.0.0.1:9/hooks"}, "must be an https:// URL"),
        ({"webhook_url": "ftp://my-app.test/hooks"}, "http:// or https://"),
        ({"webhook_secret": "short"}, "at least 22 URL-safe characters"),
        ({"webhook_secret": "a/b" * 10}, "at least 22 URL-safe characters"),
        ({"webhook_mode": "always"}, "'terminal' or 'sync'"),
    ],
)
def test_bad_webhook_options_are_refused_when_the_client_is_made(
    fake: FakeGateway, options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        make_client(fake, **options)

    assert fragment in str(info.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_http_to_loopback_is_allowed_only_with_the_explicit_opt_in(
    fake: FakeGateway, host: str
) -> None:
    client = make_client(
        fake, webhook_url=f"http://{host}:8000/hooks", allow_insecure_webhooks=True
    )

    assert client.webhook_callback_url().startswith(f"http://{host}:8000/hooks/")


def test_without_a_webhook_url_there_is_no_callback_url(fake: FakeGateway) -> None:
    with pytest.raises(InvalidRequestError, match="no webhook_url"):
        make_client(fake, webhook_url=None).webhook_callback_url()


async def test_submit_sends_the_tokened_url_and_the_mode_and_a_bad_one_costs_nothing(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    await client.submit(IMAGE)
    await client.submit(IMAGE, webhook_url="https://other.test/cb", webhook_mode="sync")
    with pytest.raises(InvalidRequestError, match="https://"):
        await client.submit(IMAGE, webhook_url="http://other.test/cb")

    first, second = (request.headers for request in fake.submits)
    assert (client.webhook_callback_url(), "terminal") == (
        first["X-Webhook-URL"],
        first["X-Webhook-Mode"],
    )
    assert (client.webhook_callback_url("https://other.test/cb"), "sync") == (
        second["X-Webhook-URL"],
        second["X-Webhook-Mode"],
    )
    assert 2 == len(fake.submits)


# The receiver: refusals ------------------------------------------------------------------


async def asgi_call(
    receiver: WebhookReceiver,
    path: str,
    *,
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: list[bytes] | None = None,
) -> tuple[int, bytes, int]:
    """Call the receiver as a server would; return the status, the body and how many body
    chunks it asked for."""
    pending = list(chunks if chunks is not None else [b"{}"])
    asked = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        chunk = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}
    await receiver(scope, receive, send)
    assert ["http.response.start", "http.response.body"] == [m["type"] for m in sent]
    return sent[0]["status"], sent[1]["body"], asked


async def test_a_wrong_or_missing_token_is_refused_before_the_body_is_read(
    client: AsyncRealESRGAN,
) -> None:
    receiver = WebhookReceiver(client)
    good = httpx.URL(client.webhook_callback_url()).path

    for path in ["/hooks/" + "x" * 43, "/hooks/", "/hooks", good + "x", good[:-1], "/"]:
        assert (403, b"forbidden", 0) == await asgi_call(receiver, path)
    assert 6 == receiver.counts["forbidden"]


async def test_an_oversized_body_is_refused_unread_or_as_soon_as_it_passes_the_limit(
    client: AsyncRealESRGAN,
) -> None:
    receiver = WebhookReceiver(client, max_body_bytes=100)
    path = httpx.URL(client.webhook_callback_url()).path

    declared = [(b"content-length", b"101")]
    assert (413, b"body too large", 0) == await asgi_call(receiver, path, headers=declared)
    # No Content-Length (chunked): read until the limit is passed, not to the end.
    chunks = [b"x" * 60] * 100
    assert (413, b"body too large", 2) == await asgi_call(receiver, path, chunks=chunks)
    bad = [(b"content-length", b"-1")]
    assert 400 == (await asgi_call(receiver, path, headers=bad))[0]
    assert (2, 0) == (receiver.counts["too_large"], receiver.counts["accepted"])


async def test_only_post_is_allowed(client: AsyncRealESRGAN) -> None:
    receiver = WebhookReceiver(client)
    path = httpx.URL(client.webhook_callback_url()).path

    assert (405, b"method not allowed", 0) == await asgi_call(receiver, path, method="GET")


async def test_a_body_not_in_the_documented_shape_is_a_400_naming_the_problem(
    app: App, fake: FakeGateway
) -> None:
    not_json = await app.post(b"{oops")
    shape = await app.post({"request_id": "r", "status": "DONE"})

    assert (400, 400) == (not_json.status_code, shape.status_code)
    assert "not JSON" in not_json.text
    assert "field 'status' is 'DONE'" in shape.text
    assert (2, 0) == (app.receiver.counts["malformed"], sum(fake.status_calls.values()))


async def test_the_receiver_answers_503_while_its_client_is_not_open(fake: FakeGateway) -> None:
    client = make_client(fake)
    app = App(client)
    async with app.http:
        before = await app.post(body("real-esrgan_0000", "COMPLETED"))
        async with client:
            pass
        after = await app.post(body("real-esrgan_0000", "COMPLETED"))

    assert (503, 503) == (before.status_code, after.status_code)
    assert "1" == before.headers["Retry-After"]


def test_max_body_bytes_must_be_a_positive_int(fake: FakeGateway) -> None:
    client = make_client(fake)
    with pytest.raises(InvalidRequestError, match=r"max_body_bytes must be an int >= 1"):
        WebhookReceiver(client, max_body_bytes=0)
    with pytest.raises(InvalidRequestError, match="must be an int"):
        WebhookReceiver(client, max_body_bytes=1.5)  # type: ignore[arg-type]


# The receiver: what a callback does -------------------------------------------------------


async def test_a_terminal_callback_is_answered_before_its_one_confirming_status_call(
    app: App, fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    job = await client.submit(IMAGE)
    fake.jobs[job.request_id] = "COMPLETED"
    fake.gate = anyio.Event()  # the confirmation hangs until released
    async with anyio.create_task_group() as tg:
        waiter = await start_wait(tg, client, job.request_id)

        response = await app.post(body(job.request_id, "COMPLETED"))
        await settle()
        assert (200, 1, []) == (response.status_code, fake.status_calls[job.request_id], [])
        assert [] == waiter.results  # answered; the confirmation is still out

        fake.gate.set()
        await waiter.done.wait()

    [state] = waiter.results
    assert isinstance(state, JobState)
    assert (Status.COMPLETED, MEDIA) == (state.status, state.media_url)
    assert (1, 1) == (client.stats().status_calls, client.stats().completed)
    assert () == client.unfinished_request_ids


async def test_duplicates_cost_one_status_call_and_resolve_the_waiter_once(
    app: App, fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    job = await client.submit(IMAGE)
    fake.jobs[job.request_id] = "COMPLETED"
    fake.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        waiter = await start_wait(tg, client, job.request_id)
        for _ in range(3):  # duplicates while the confirmation is out: coalesced
            assert 200 == (await app.post(body(job.request_id, "COMPLETED"))).status_code
        fake.gate.set()
        await waiter.done.wait()
    for _ in range(2):  # duplicates after it: about a job nobody waits on
        assert 200 == (await app.post(body(job.request_id, "COMPLETED"))).status_code
    await settle()

    assert 1 == len(waiter.results)
    assert 1 == fake.status_calls[job.request_id]
    counts = app.receiver.counts
    assert (5, 1, 2, 2) == (
        counts["accepted"],
        counts["confirmations"],
        counts["coalesced"],
        counts["ignored"],
    )
    assert 1 == client.stats().completed


async def test_a_terminal_state_is_never_replaced_by_an_earlier_one(
    app: App, fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    job = await client.submit(IMAGE)
    fake.jobs[job.request_id] = "COMPLETED"
    async with anyio.create_task_group() as tg:
        waiter = await start_wait(tg, client, job.request_id)
        await app.post(body(job.request_id, "COMPLETED"))
        await waiter.done.wait()
        await app.post(body(job.request_id, "PROCESSING"))  # a sync-mode callback, late
        await app.post(body(job.request_id, "QUEUED"))
        await settle()

    [state] = waiter.results
    assert isinstance(state, JobState)
    assert Status.COMPLETED == state.status
    assert (1, 1, ()) == (
        fake.status_calls[job.request_id],
        client.stats().completed,
        client.unfinished_request_ids,
    )


async def test_non_terminal_callbacks_resolve_nothing_and_cost_nothing(
    app: App, fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    job = await client.submit(IMAGE)
    async with anyio.create_task_group() as tg:
        waiter = await start_wait(tg, client, job.request_id, timeout=0.2)
        for status in ("QUEUED", "PROCESSING", "PROCESSING"):
            assert 200 == (await app.post(body(job.request_id, status))).status_code
        await waiter.done.wait()

    [error] = waiter.results
    assert isinstance(error, JobTimeoutError)
    assert job.request_id == error.request_id
    assert 0 == sum(fake.status_calls.values())


async def test_a_forged_terminal_callback_with_the_right_token_resolves_nothing(
    app: App, fake: FakeGateway, client: AsyncRealESRGAN, caplog: pytest.LogCaptureFixture
) -> None:
    """The confirming status call says PROCESSING: the forgery's result is never seen."""
    job = await client.submit(IMAGE)
    fake.jobs[job.request_id] = "PROCESSING"
    async with anyio.create_task_group() as tg:
        waiter = await start_wait(tg, client, job.request_id)
        with caplog.at_level(logging.WARNING, logger="real_esrgan_async"):
            forged = body(job.request_id, "COMPLETED", media="https://evil.test/x.png")
            assert 200 == (await app.post(forged)).status_code
            await settle()
        assert [] == waiter.results
        assert 1 == app.receiver.counts["unconfirmed"]
        assert "the gateway says PROCESSING (a forgery?)" in caplog.text

        fake.jobs[job.request_id] = "COMPLETED"  # then the real callback
        await app.post(body(job.request_id, "COMPLETED"))
        await waiter.done.wait()

    [state] = waiter.results
    assert isinstance(state, JobState)
    assert MEDIA == state.media_url
    assert 2 == fake.status_calls[job.request_id]


async def test_a_callback_about_an_unknown_job_is_answered_and_ignored_at_no_cost(
    app: App, fake: FakeGateway
) -> None:
    for status in ("COMPLETED", "FAILED", "PROCESSING"):
        response = await app.post(body("real-esrgan_not-ours", status))
        assert 200 == response.status_code
    await settle()

    assert (3, 0) == (app.receiver.counts["ignored"], sum(fake.status_calls.values()))


async def test_a_submitted_job_nobody_waits_on_yet_is_confirmed_and_counted_finished(
    app: App, fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    job = await client.submit(IMAGE)
    fake.jobs[job.request_id] = "FAILED"
    await app.post(body(job.request_id, "FAILED"))
    await settle()

    assert (1, 1, ()) == (
        fake.status_calls[job.request_id],
        client.stats().failed,
        client.unfinished_request_ids,
    )


async def test_without_confirmation_the_callback_itself_resolves_at_no_status_call(
    fake: FakeGateway,
) -> None:
    async with make_client(fake, webhook_confirm=False) as client:
        app = App(client)
        job = await client.submit(IMAGE)
        async with app.http, anyio.create_task_group() as tg:
            waiter = await start_wait(tg, client, job.request_id)
            await app.post(body(job.request_id, "COMPLETED", media="https://cdn.test/hook.png"))
            await waiter.done.wait()
            await app.post(body(job.request_id, "COMPLETED"))  # a duplicate
            await app.post(body(job.request_id, "PROCESSING"))  # an earlier state
            await settle()

    [state] = waiter.results
    assert isinstance(state, JobState)
    assert "https://cdn.test/hook.png" == state.media_url
    assert (0, 1, 2) == (
        sum(fake.status_calls.values()),
        client.stats().completed,
        app.receiver.counts["ignored"],
    )


async def test_a_failed_confirmation_is_logged_and_leaves_the_job_to_the_safety_net(
    app: App, fake: FakeGateway, client: AsyncRealESRGAN, caplog: pytest.LogCaptureFixture
) -> None:
    job = await client.submit(IMAGE)
    fake.status_code = 404
    async with anyio.create_task_group() as tg:
        waiter = await start_wait(tg, client, job.request_id, timeout=0.2)
        with caplog.at_level(logging.WARNING, logger="real_esrgan_async"):
            await app.post(body(job.request_id, "COMPLETED"))
            await settle()
        await waiter.done.wait()

    assert f"could not confirm the callback about {job.request_id}" in caplog.text
    [error] = waiter.results
    assert isinstance(error, JobTimeoutError)  # the client itself carried on


async def test_other_frameworks_check_the_token_parse_and_accept_by_hand(
    fake: FakeGateway, client: AsyncRealESRGAN
) -> None:
    receiver = WebhookReceiver(client)
    token = httpx.URL(client.webhook_callback_url()).path.rpartition("/")[2]
    job = await client.submit(IMAGE)
    fake.jobs[job.request_id] = "COMPLETED"

    assert (True, False, False) == (
        receiver.check_token(token),
        receiver.check_token(token[:-1] + "é"),
        receiver.check_token(None),
    )
    async with anyio.create_task_group() as tg:
        waiter = await start_wait(tg, client, job.request_id)
        receiver.accept(parse_webhook(json.dumps(body(job.request_id, "COMPLETED"))))
        await waiter.done.wait()

    assert 1 == fake.status_calls[job.request_id]


async def test_accept_needs_an_open_client(fake: FakeGateway) -> None:
    receiver = WebhookReceiver(make_client(fake))

    with pytest.raises(RuntimeError, match="not open"):
        receiver.accept(JobState("real-esrgan_1", Status.COMPLETED))


async def test_served_alone_the_receiver_completes_the_lifespan_and_refuses_websockets(
    client: AsyncRealESRGAN,
) -> None:
    receiver = WebhookReceiver(client)
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[Any] = []

    async def receive() -> Any:
        return next(incoming)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await receiver({"type": "lifespan"}, receive, send)
    await receiver({"type": "websocket", "path": "/"}, receive, send)

    assert ["lifespan.startup.complete", "lifespan.shutdown.complete", "websocket.close"] == sent
