"""Attack: a gateway answer that is too big, too deep, or too slow to ever end.

Each answer is read with a cap on its decoded size, parsed without recursion
crashes, cut when it is an error text, and every attempt has a total deadline.
"""

from __future__ import annotations

import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import httpx
import pytest
from attack_helpers import (
    FAST_POLL,
    IMAGE,
    KEY,
    ONE_TRY,
    RID,
    client_over,
    raw_server,
    read_request_head,
    status_body,
)

from real_esrgan_async import (
    AmbiguousSubmitError,
    APITimeoutError,
    AsyncRealESRGAN,
    BadRequestError,
    InsufficientBalanceError,
    ResponseValidationError,
)
from real_esrgan_async._gateway import MAX_ANSWER_BYTES, MAX_ERROR_TEXT

pytestmark = [
    pytest.mark.anyio,
    # Stopping a body early is the point here. httpx's stream generators under the one the
    # client closes are left to the garbage collector, which trio reports (a ResourceWarning,
    # silent outside tests) once the test has already passed.
    pytest.mark.filterwarnings("ignore:Async generator .* was garbage collected:ResourceWarning"),
]

GIB = 1024**3


class GzipBomb(httpx.AsyncByteStream):
    """1.2 GiB of JSON-ish whitespace, gzip-compressed on the fly (about 1.2 MB on the wire).

    It compresses only what is pulled, and counts it: a reader that stops at
    its cap pulls a few KiB, one that inflates everything pulls it all.
    """

    def __init__(self, inflated: int = int(1.2 * GIB)) -> None:
        self.inflated = inflated
        self.pulled = 0  # compressed bytes handed out

    async def __aiter__(self) -> AsyncIterator[bytes]:
        packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        piece = b" " * (1024 * 1024)
        for _ in range(self.inflated // len(piece)):
            out = packer.compress(piece)
            if out:
                self.pulled += len(out)
                yield out
        tail = packer.flush()
        self.pulled += len(tail)
        yield tail


async def test_a_gzip_bomb_status_answer_never_reaches_memory() -> None:
    """1.2 MB that inflates to 1.2 GiB: refused after 1 MiB, never held whole."""
    bomb = GzipBomb()

    async def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=bomb)

    client, http = client_over(gateway)
    tracemalloc.start()
    try:
        async with http, client:
            with pytest.raises(ResponseValidationError) as info:
                await client.status(RID)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert f"larger than {MAX_ANSWER_BYTES} bytes (decoded)" in str(info.value)
    assert RID == info.value.request_id
    # httpx's own decoder would inflate each 64 KiB chunk whole (64 MiB), then join them all.
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes"
    assert bomb.pulled < 64 * 1024, f"pulled {bomb.pulled} compressed bytes"


async def test_a_gzip_bomb_submit_answer_is_an_ambiguous_submit() -> None:
    """The POST was sent and answered: a job may exist, so the submit is ambiguous."""

    async def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, headers={"Content-Encoding": "gzip"}, stream=GzipBomb())

    client, http = client_over(gateway)
    async with http, client:
        with pytest.raises(AmbiguousSubmitError, match="larger than 1048576 bytes"):
            await client.submit(IMAGE)


async def test_an_answer_declaring_a_huge_length_is_refused_before_reading() -> None:
    pulled: list[bytes] = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            pulled.append(b"x")
            yield b"{}"

    async def gateway(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Length": str(10 * GIB)}
        return httpx.Response(200, headers=headers, stream=Body())

    client, http = client_over(gateway)
    async with http, client:
        with pytest.raises(ResponseValidationError, match=f"{10 * GIB} bytes long"):
            await client.status(RID)
    assert [] == pulled


async def test_an_answer_in_an_encoding_not_asked_for_is_refused() -> None:
    """Only gzip and deflate are decoded with a bound; brotli or zstd are never asked for."""
    asked: list[str] = []

    async def gateway(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers["Accept-Encoding"])
        return httpx.Response(200, headers={"Content-Encoding": "br"}, stream=GzipBomb(1024))

    client, http = client_over(gateway)
    async with http, client:
        with pytest.raises(ResponseValidationError, match="encoded as 'br', which was not asked"):
            await client.status(RID)
    assert ["gzip, deflate"] == asked


async def test_a_deflate_answer_still_parses() -> None:
    """Bounded decoding still reads what a well-behaved gateway compresses."""
    body = zlib.compress(json.dumps(status_body("QUEUED")).encode())

    async def gateway(request: httpx.Request) -> httpx.Response:
        stream = httpx.ByteStream(body)
        return httpx.Response(200, headers={"Content-Encoding": "deflate"}, stream=stream)

    client, http = client_over(gateway)
    async with http, client:
        state = await client.status(RID)
    assert RID == state.request_id


async def test_a_deeply_nested_answer_is_a_validation_error_not_a_crash() -> None:
    """500,000 "[" crash json's recursive parser with RecursionError."""

    async def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"[" * 500_000)

    client, http = client_over(gateway)
    async with http, client:
        with pytest.raises(ResponseValidationError, match="not JSON"):
            await client.status(RID)


async def test_an_error_answer_text_is_cut() -> None:
    """A 400 whose message is 1 MB becomes an error of bounded size, still a 400."""

    async def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "Bad", "message": "m" * 1_000_000})

    client, http = client_over(gateway)
    async with http, client:
        with pytest.raises(BadRequestError) as info:
            await client.submit(IMAGE)
    assert info.value.message is not None
    assert MAX_ERROR_TEXT + len("… (cut)") == len(info.value.message)
    assert len(str(info.value)) < 2 * MAX_ERROR_TEXT


async def test_a_huge_error_answer_is_read_only_to_the_cap_and_still_maps() -> None:
    """A 402 with 1.2 GiB of gzip is cut at the cap: the refusal (nothing paid) still shows."""
    bomb = GzipBomb()

    async def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, headers={"Content-Encoding": "gzip"}, stream=bomb)

    client, http = client_over(gateway)
    async with http, client:
        with pytest.raises(InsufficientBalanceError) as info:
            await client.submit(IMAGE)
    assert 402 == info.value.status_code
    assert bomb.pulled < 64 * 1024


# A server trickling one byte every half second ------------------------------------------


def over(base: str, http: httpx.AsyncClient) -> AsyncRealESRGAN:
    """A client of the loopback server at `base`, through `http` (timeout=1.0: a 1 s deadline)."""
    return AsyncRealESRGAN(KEY, base_url=base, http_client=http, retry=ONE_TRY, poll=FAST_POLL)


async def trickle(stream: anyio.abc.SocketStream) -> None:
    """Answer 200 with a body that never ends, one byte every 0.5 s (no read ever idles 1 s)."""
    await read_request_head(stream)
    await stream.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    await stream.send(b"Content-Length: 100000\r\n\r\n")
    while True:
        await stream.send(b" ")
        await anyio.sleep(0.5)


async def test_a_trickling_status_answer_cannot_hold_a_call_past_its_timeout() -> None:
    """httpx's read timeout restarts with every byte; the attempt's total deadline does not."""
    async with (
        raw_server(trickle) as base,
        httpx.AsyncClient(timeout=1.0) as real,
        over(base, real) as client,
    ):
        # Far above the 1 s deadline: this bound only turns a hang into a failure.
        with anyio.fail_after(30), pytest.raises(APITimeoutError, match="deadline of 1 s"):
            await client.status(RID)


async def test_a_trickling_submit_answer_ends_as_ambiguous_within_its_deadline() -> None:
    """The paid POST is shielded from cancellation, but not from its own deadline."""
    async with (
        raw_server(trickle) as base,
        httpx.AsyncClient(timeout=1.0) as real,
        over(base, real) as client,
    ):
        with anyio.fail_after(30), pytest.raises(AmbiguousSubmitError, match="deadline"):
            await client.submit(IMAGE)


async def test_a_cancelled_trickling_submit_still_ends_at_its_deadline() -> None:
    """A caller's cancel waits for the shielded POST; the deadline bounds that wait."""
    errors: list[BaseException] = []
    async with (
        raw_server(trickle) as base,
        httpx.AsyncClient(timeout=1.0) as real,
        over(base, real) as client,
    ):
        with anyio.fail_after(30), anyio.move_on_after(0.1):
            try:
                await client.submit(IMAGE)
            except AmbiguousSubmitError as exc:
                errors.append(exc)
    assert [AmbiguousSubmitError] == [type(e) for e in errors]
