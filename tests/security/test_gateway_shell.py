"""The gateway shell's cheap paths keep its guarantees (every test on asyncio and trio).

Headers are built once per client, an identity answer is read without a decoder,
and a GET with no deadline enters no cancel scope: none of it may loosen what the
module promises (the key only in the gateway's own header, a bound on every body
whatever it declares, a paid POST shielded).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.abc
import httpx
import pytest
from attack_helpers import raw_server, read_request_head

from real_esrgan_async import (
    AmbiguousSubmitError,
    APIConnectionError,
    Job,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    Status,
    UpscaleRequest,
)
from real_esrgan_async._gateway import (
    KEY_HEADER,
    MAX_ANSWER_BYTES,
    REDACTED,
    USER_AGENT,
    Gateway,
    _Headers,
)
from real_esrgan_async._stats import Counters

pytestmark = [
    pytest.mark.anyio,
    # Stopping a body early is the point of some tests here. httpx's stream generators under
    # the one the gateway closes are left to the garbage collector, which trio reports (a
    # ResourceWarning, silent outside tests) once the test has already passed.
    pytest.mark.filterwarnings("ignore:Async generator .* was garbage collected:ResourceWarning"),
]

KEY = "sk-gateway-shell-key-4d2e"
BASE = "https://gateway.test"
RID = "real-esrgan_019d0000-aaaa-7000-8000-000000000001"
IMAGE = "https://images.example/cat.jpg"
ONE_TRY = RetryPolicy(max_attempts=1, base_delay=0.001, max_delay=0.002)
ACCEPTED = {"request_id": RID, "status": "QUEUED"}
QUEUED = {"request_id": RID, "status": "QUEUED", "error": None, "output": None}
CHUNK = 64 * 1024


def gateway_over(http: httpx.AsyncClient, base_url: str = BASE) -> Gateway:
    return Gateway(
        http,
        base_url=httpx.URL(base_url),
        api_key=KEY,
        limiter=anyio.CapacityLimiter(2),
        retry=ONE_TRY,
        counters=Counters(),
    )


def request() -> UpscaleRequest:
    return UpscaleRequest(IMAGE, scale=2)


class Endless(httpx.AsyncByteStream):
    """64 KiB chunks of spaces, without end; counts what was pulled."""

    def __init__(self, first: bytes = b"") -> None:
        self.first = first
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.pulled += len(self.first)
        yield self.first
        while True:
            self.pulled += CHUNK
            yield b" " * CHUNK


# Headers built once ------------------------------------------------------------------------


async def test_the_gateways_own_headers_win_over_extra_ones_whatever_their_case() -> None:
    """Extra headers go out, but never a second key, user agent or encoding list."""
    seen: list[httpx.Request] = []

    def answer(sent: httpx.Request) -> httpx.Response:
        seen.append(sent)
        return httpx.Response(202 if sent.method == "POST" else 200, json=QUEUED)

    extra = {
        "ocp-apim-subscription-key": "not-the-key",
        "user-agent": "someone-else",
        "ACCEPT-ENCODING": "br",
        "X-Webhook-URL": "https://hooks.example/h",
    }
    transport = httpx.MockTransport(answer)
    async with httpx.AsyncClient(transport=transport, headers={"X-Trace": "t-1"}) as http:
        gateway = gateway_over(http)
        await gateway.submit(request(), extra_headers=extra, on_created=lambda job: None)
        await gateway.status(RID)
        await gateway.submit(request(), extra_headers={}, on_created=lambda job: None)

    for sent in seen:
        assert [KEY] == sent.headers.get_list(KEY_HEADER)
        assert [USER_AGENT] == sent.headers.get_list("User-Agent")
        assert ["gzip, deflate"] == sent.headers.get_list("Accept-Encoding")
        assert "no-cache" == sent.headers["Cache-Control"]
        assert "t-1" == sent.headers["X-Trace"]  # the client's own defaults still go
    # The extra headers of one submit went with it only, not into the shared ones.
    assert ["https://hooks.example/h", None, None] == [
        sent.headers.get("X-Webhook-URL") for sent in seen
    ]


def test_the_headers_repr_hides_the_key() -> None:
    headers = _Headers({KEY_HEADER: KEY, "X-Webhook-URL": "https://hooks.example/h"})
    headers.update(_Headers({"ocp-apim-subscription-key": KEY}))

    assert KEY not in repr(headers)
    assert KEY not in str(headers)
    assert REDACTED in repr(headers)
    assert "https://hooks.example/h" in repr(headers)


# Identity answers, counted chunk by chunk -------------------------------------------------


@pytest.mark.parametrize("declared", [None, "2"])
async def test_an_identity_answer_over_the_bound_is_refused_whatever_it_declares(
    declared: str | None,
) -> None:
    """No Content-Length, or one that lies low: the bound is counted, not believed."""
    body = Endless(b'{"request_id":')
    headers = {} if declared is None else {"Content-Length": declared}

    def answer(sent: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, stream=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        with pytest.raises(ResponseValidationError, match="larger than 1048576 bytes"):
            await gateway_over(http).status(RID)
    assert MAX_ANSWER_BYTES < body.pulled <= MAX_ANSWER_BYTES + 2 * CHUNK


async def test_an_identity_submit_answer_over_the_bound_is_an_ambiguous_submit() -> None:
    def answer(sent: httpx.Request) -> httpx.Response:
        return httpx.Response(202, headers={"Content-Length": "2"}, stream=Endless())

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        with pytest.raises(AmbiguousSubmitError, match="larger than 1048576 bytes"):
            await gateway_over(http).submit(
                request(), extra_headers={}, on_created=lambda job: None
            )


async def test_an_endless_identity_error_answer_is_cut_at_the_bound_and_still_maps() -> None:
    body = Endless(b"overloaded")

    def answer(sent: httpx.Request) -> httpx.Response:
        return httpx.Response(503, stream=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        with pytest.raises(ServerError) as info:
            await gateway_over(http).status(RID)
    assert 503 == info.value.status_code
    assert body.pulled <= MAX_ANSWER_BYTES + 2 * CHUNK


async def test_an_answer_in_many_chunks_is_joined_whole() -> None:
    text = json.dumps(QUEUED).encode()

    class Bytewise(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for index in range(len(text)):
                yield text[index : index + 1]

    def answer(sent: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Bytewise())

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        state = await gateway_over(http).status(RID)
    assert (RID, Status.QUEUED) == (state.request_id, state.status)


# Content-Length that lies, over a real socket ---------------------------------------------


def sending(answer: bytes) -> Callable[[anyio.abc.SocketStream], Awaitable[None]]:
    """A connection handler that sends `answer` raw after the request head, then hangs up."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
        await read_request_head(stream)
        await stream.send(answer)

    return handle


def raw_answer(status: str, declared: int, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {declared}"
    return head.encode() + b"\r\n\r\n" + body


async def test_a_body_longer_than_its_content_length_is_read_only_to_it() -> None:
    """The transport stops at the declared length: what follows is never read as the body."""
    text = json.dumps(QUEUED).encode()
    answer = raw_answer("200 OK", len(text), text + b" " * (2 * MAX_ANSWER_BYTES))
    async with raw_server(sending(answer)) as base, httpx.AsyncClient(timeout=10) as http:
        state = await gateway_over(http, base).status(RID)
    assert RID == state.request_id


async def test_a_body_shorter_than_its_content_length_is_a_connection_error() -> None:
    """A GET whose answer stops short fails as a transport error, not as a cut JSON body."""
    answer = raw_answer("200 OK", 1000, json.dumps(QUEUED).encode())
    async with raw_server(sending(answer)) as base, httpx.AsyncClient(timeout=10) as http:
        with pytest.raises(APIConnectionError):
            await gateway_over(http, base).status(RID)


async def test_a_submit_answer_shorter_than_its_content_length_is_ambiguous() -> None:
    """The POST was sent and an answer began: a job may exist."""
    answer = raw_answer("202 Accepted", 1000, json.dumps(ACCEPTED).encode())
    async with raw_server(sending(answer)) as base, httpx.AsyncClient(timeout=10) as http:
        with pytest.raises(AmbiguousSubmitError):
            await gateway_over(http, base).submit(
                request(), extra_headers={}, on_created=lambda job: None
            )


# No deadline: no scope for a GET, the shield kept for a POST ------------------------------


async def test_without_a_deadline_a_get_is_still_cancelled_by_its_caller() -> None:
    async def never_answer(stream: anyio.abc.SocketStream) -> None:
        await read_request_head(stream)
        await anyio.sleep_forever()

    async with (
        raw_server(never_answer) as base,
        httpx.AsyncClient(timeout=None) as http,
    ):
        gateway = gateway_over(http, base)
        assert gateway.deadline is None
        with anyio.fail_after(30), anyio.move_on_after(0.1) as waited:
            await gateway.status(RID)
    assert waited.cancelled_caught


async def test_without_a_deadline_a_paid_post_is_still_shielded() -> None:
    """Cancelled while on the wire, the POST still ends and hands its job over."""
    body = json.dumps(ACCEPTED).encode()

    async def answer_late(stream: anyio.abc.SocketStream) -> None:
        await read_request_head(stream)
        await anyio.sleep(0.3)
        await stream.send(raw_answer("202 Accepted", len(body), body))

    created: list[Job] = []
    async with (
        raw_server(answer_late) as base,
        httpx.AsyncClient(timeout=None) as http,
    ):
        gateway = gateway_over(http, base)
        assert gateway.deadline is None
        with anyio.fail_after(30), anyio.move_on_after(0.05):
            await gateway.submit(request(), extra_headers={}, on_created=created.append)
    assert [RID] == [job.request_id for job in created]
