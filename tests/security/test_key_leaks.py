"""Attack: find the API key anywhere an exception lets a logger or a debugger reach.

Every failure a caller can meet is provoked, then the whole exception chain is
formatted the way error trackers do (each frame's locals included, causes,
contexts and the httpx request of a transport error), and searched for the key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import httpx
import pytest
from attack_helpers import (
    BASE,
    FAST_POLL,
    IMAGE,
    KEY,
    ONE_TRY,
    RID,
    Handler,
    client_over,
    everything_reachable,
    raw_server,
    read_request_head,
)

from real_esrgan_async import APIError, AsyncRealESRGAN, InvalidRequestError

pytestmark = pytest.mark.anyio

Call = Callable[[AsyncRealESRGAN], Awaitable[object]]
CALLS: dict[str, Call] = {
    "submit": lambda client: client.submit(IMAGE),
    "status": lambda client: client.status(RID),
    "wait": lambda client: client.wait(RID),
}


async def failure_of(handler: Handler, call: str) -> BaseException:
    client, http = client_over(handler, http_options={"timeout": 0.3})
    async with http, client:
        with anyio.fail_after(30):
            try:
                await CALLS[call](client)
            except Exception as exc:
                return exc
    raise AssertionError(f"{call} did not fail")


async def refuse_connection(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


async def break_mid_answer(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadError("connection reset by peer", request=request)


async def echo_the_key_as_an_error(request: httpx.Request) -> httpx.Response:
    key = request.headers["Ocp-Apim-Subscription-Key"]
    return httpx.Response(401, json={"error": key, "message": f"key {key} is not valid"})


async def echo_the_key_as_a_success(request: httpx.Request) -> httpx.Response:
    key = request.headers["Ocp-Apim-Subscription-Key"]
    return httpx.Response(202 if request.method == "POST" else 200, text=f"<html>{key}</html>")


async def echo_the_key_in_a_failed_job(request: httpx.Request) -> httpx.Response:
    key = request.headers["Ocp-Apim-Subscription-Key"]
    return httpx.Response(
        200, json={"request_id": RID, "status": "FAILED", "error": f"bad key {key}"}
    )


async def never_answer(request: httpx.Request) -> httpx.Response:
    await anyio.sleep(3600)
    raise AssertionError("unreachable")


SCENARIOS: dict[str, Handler] = {
    "connect error": refuse_connection,
    "read error": break_mid_answer,
    "error body echoing the key": echo_the_key_as_an_error,
    "2xx non-JSON body echoing the key": echo_the_key_as_a_success,
    "deadline": never_answer,
}
# A wait retries transient failures for as long as it waits: only refusals end it.
CASES = [
    (scenario, call)
    for scenario in sorted(SCENARIOS)
    for call in sorted(CALLS)
    if call != "wait" or "echoing" in scenario
]


@pytest.mark.parametrize(("scenario", "call"), CASES)
async def test_no_exception_chain_reaches_the_key(scenario: str, call: str) -> None:
    exc = await failure_of(SCENARIOS[scenario], call)

    reachable = everything_reachable(exc)
    assert KEY not in reachable
    assert len(reachable) > 200  # the chain was formatted, locals and all


async def test_a_failed_job_echoing_the_key_does_not_carry_it() -> None:
    exc = await failure_of(echo_the_key_in_a_failed_job, "wait")

    assert "bad key <redacted>" == getattr(exc, "error", None)
    assert KEY not in everything_reachable(exc)


async def hang_up(stream: anyio.abc.SocketStream) -> None:
    """Read the request, then close without a word: httpcore's frames hold the headers."""
    await read_request_head(stream)


@pytest.mark.parametrize("call", ["status", "submit"])
async def test_a_real_transport_failure_does_not_carry_the_key(call: str) -> None:
    """Over a real socket the error unwinds through httpcore and h11 frames, headers in hand."""
    async with raw_server(hang_up) as base, httpx.AsyncClient(timeout=5) as http:
        client = AsyncRealESRGAN(
            KEY, base_url=base, http_client=http, retry=ONE_TRY, poll=FAST_POLL
        )
        async with client:
            with anyio.fail_after(30), pytest.raises(APIError) as info:
                await CALLS[call](client)

    assert KEY not in everything_reachable(info.value)


BAD_KEYS = ["sk-leaky-key-1234\n", "sk-leaky key-1234", "sk-leaky-key-1234\x00"]


async def opening_with_bad_key(which: int) -> BaseException:
    """Open a client with BAD_KEYS[which]; no frame on the way holds the key in a local."""

    async def gateway(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be sent")

    async with httpx.AsyncClient(transport=httpx.MockTransport(gateway)) as http:
        try:
            async with AsyncRealESRGAN(BAD_KEYS[which], base_url=BASE, http_client=http):
                pass
        except InvalidRequestError as exc:
            return exc
    raise AssertionError("the key was accepted")


@pytest.mark.parametrize("which", range(len(BAD_KEYS)))
async def test_a_key_the_http_layer_would_quote_is_refused_without_showing_it(which: int) -> None:
    """h11 refuses such a header with an error quoting its value: refuse it first, silently."""
    exc = await opening_with_bad_key(which)

    assert "it is not shown here" in str(exc)
    assert "sk-leaky" not in everything_reachable(exc)
