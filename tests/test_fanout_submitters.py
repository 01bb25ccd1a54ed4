"""The fan-out's submitters: at most ``max_connections`` inputs taken and POSTed at once,
pulled in turn (never two pulls of the caller's iterator at once), each submitted by the
task that pulled it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from fake_gateway import BASE, FAST_POLL, FAST_RETRY, FakeGateway

from real_esrgan_async import AsyncRealESRGAN

pytestmark = pytest.mark.anyio


class HeldPosts:
    """A gateway whose POSTs wait for `release`; counts the POSTs on the wire at once."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.on_the_wire = 0
        self.most_on_the_wire = 0
        self.posted: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.on_the_wire += 1
            self.most_on_the_wire = max(self.most_on_the_wire, self.on_the_wire)
            image = json.loads(request.content)["image"]
            self.posted.append(image)
            request_id = f"r{len(self.posted)}-{image.rsplit('/', 1)[-1]}"
            try:
                await self.release.wait()
            finally:
                self.on_the_wire -= 1
            return httpx.Response(202, json={"request_id": request_id, "status": "QUEUED"})
        request_id = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, json=FakeGateway.body(request_id, "COMPLETED"))


def client_on(gateway: HeldPosts, max_connections: int) -> AsyncRealESRGAN:
    http = httpx.AsyncClient(transport=httpx.MockTransport(gateway))
    return AsyncRealESRGAN(
        "key",
        base_url=BASE,
        retry=FAST_RETRY,
        poll=FAST_POLL,
        max_connections=max_connections,
        http_client=http,
    )


async def test_at_most_max_connections_inputs_are_taken_and_on_the_wire_at_once() -> None:
    gateway = HeldPosts()
    pulled: list[int] = []

    def images() -> object:
        for n in range(20):
            pulled.append(n)
            yield f"https://img.test/{n}.png"

    async with client_on(gateway, max_connections=3) as client:
        run = client.upscale_many(images(), max_in_flight=10)  # type: ignore[arg-type]
        outcomes = []
        async with anyio.create_task_group() as tasks:

            async def consume() -> None:
                outcomes.extend([outcome async for outcome in run])

            tasks.start_soon(consume)
            with anyio.fail_after(10):
                await anyio.wait_all_tasks_blocked()  # all it could take is taken
            # Three submitters, each holding the input it pulled: no fourth is pulled.
            assert [0, 1, 2] == pulled
            assert 3 == gateway.on_the_wire
            gateway.release.set()
    assert 3 == gateway.most_on_the_wire
    assert list(range(20)) == pulled
    assert list(range(20)) == sorted(outcome.index for outcome in outcomes)
    assert all(outcome.ok for outcome in outcomes)
    # Taken in order, each POSTed once.
    assert sorted(gateway.posted) == sorted(f"https://img.test/{n}.png" for n in range(20))
    assert len(set(gateway.posted)) == 20


async def test_an_async_iterator_is_pulled_by_one_submitter_at_a_time() -> None:
    """Pulling awaits inside the caller's async generator: a second pull while the first
    is suspended would raise RuntimeError ("already running") or interleave."""
    gateway = HeldPosts()
    gateway.release.set()
    inside = 0
    most_inside = 0

    async def images() -> AsyncIterator[str]:
        nonlocal inside, most_inside
        for n in range(30):
            inside += 1
            most_inside = max(most_inside, inside)
            await anyio.sleep(0.001)  # suspended mid-pull: the other submitters wait
            inside -= 1
            yield f"https://img.test/{n}.png"

    async with client_on(gateway, max_connections=4) as client:
        with anyio.fail_after(20):
            outcomes = [o async for o in client.upscale_many(images(), max_in_flight=8)]
    assert 1 == most_inside
    assert list(range(30)) == sorted(outcome.index for outcome in outcomes)
    assert all(outcome.ok for outcome in outcomes), outcomes
    assert 30 == len(set(gateway.posted))


async def test_one_input_is_submitted_once_and_the_run_ends() -> None:
    gateway = HeldPosts()
    gateway.release.set()
    async with client_on(gateway, max_connections=16) as client:
        with anyio.fail_after(10):
            outcomes = [o async for o in client.upscale_many(["https://img.test/0.png"])]
    assert [0] == [outcome.index for outcome in outcomes]
    assert ["https://img.test/0.png"] == gateway.posted
    assert "r1-0.png" == outcomes[0].request_id
