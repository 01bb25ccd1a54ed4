"""Webhook races: a callback that beats the submit's answer; a gateway lagging its own callback.

Both used to fall through to the slow safety net (60 s by default); here the safety net is ten
minutes away, so a wait that ends within seconds proves the callback itself was acted on.
"""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from real_esrgan_async import (
    AsyncRealESRGAN,
    JobState,
    PollPolicy,
    Status,
    WebhookReceiver,
    parse_webhook,
)

pytestmark = pytest.mark.anyio

BASE = "https://gateway.test"
RID = "real-esrgan_race-0001"
IMAGE = "https://img.test/cat.png"
#: Polling would take minutes: only the callback path can end a wait quickly.
SLOW_NET = PollPolicy(safety_net_interval=600.0, max_first_check=600.0, target_delay=None)


def status_body(status: str) -> dict[str, object]:
    done = status == "COMPLETED"
    return {
        "request_id": RID,
        "status": status,
        "output": {"media_url": ["https://cdn.test/out.png"], "media_type": "image/png"}
        if done
        else None,
        "created_at": "2026-12-01T10:00:00Z",
    }


class Gateway:
    """A scripted gateway: what its status endpoint says, one answer after another."""

    def __init__(self, statuses: list[str]) -> None:
        self.statuses = statuses
        self.status_calls = 0
        self.on_submit: list[object] = []  # callables run before the 202 is sent

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            for hook in self.on_submit:
                hook()  # type: ignore[operator]
            return httpx.Response(202, json={"request_id": RID, "status": "QUEUED"})
        self.status_calls += 1
        status = self.statuses[min(self.status_calls, len(self.statuses)) - 1]
        return httpx.Response(200, json=status_body(status))


def new_client(gateway: Gateway) -> AsyncRealESRGAN:
    http = httpx.AsyncClient(transport=httpx.MockTransport(gateway.handle))
    return AsyncRealESRGAN(
        "key",
        base_url=BASE,
        http_client=http,
        webhook_url="https://app.example/hooks",
        poll=SLOW_NET,
    )


async def test_a_callback_that_beats_the_submits_answer_is_kept_and_applied_at_once() -> None:
    gateway = Gateway(["COMPLETED"])
    client = new_client(gateway)
    receiver = WebhookReceiver(client)
    callback = parse_webhook(json.dumps(status_body("COMPLETED")))
    # The gateway calls back before the client has read its 202: the id is unknown yet.
    gateway.on_submit.append(lambda: receiver.accept(callback))
    async with client:
        job = await client.submit(IMAGE)
        with anyio.fail_after(5):
            state = await client.wait(job)
    assert (RID, Status.COMPLETED) == (state.request_id, state.status)
    assert 1 == gateway.status_calls  # the one confirmation
    assert (0, 1) == (receiver.counts["ignored"], receiver.counts["confirmations"])


async def test_a_confirmation_that_finds_the_job_still_running_is_retried_soon() -> None:
    """The gateway lags its own callback: its status says PROCESSING a moment longer."""
    gateway = Gateway(["PROCESSING", "COMPLETED"])
    client = new_client(gateway)
    receiver = WebhookReceiver(client)
    results: list[JobState] = []
    async with client:
        job = await client.submit(IMAGE)
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                results.append(await client.wait(job))

            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            receiver.accept(parse_webhook(json.dumps(status_body("COMPLETED"))))
            with anyio.fail_after(10):  # the safety net is 600 s away
                while not results:  # noqa: ASYNC110 - the waiter appends, no event to share
                    await anyio.sleep(0.01)
    [state] = results
    assert Status.COMPLETED is state.status
    assert 1 == receiver.counts["unconfirmed"]
    assert 2 <= gateway.status_calls <= 6  # the confirmation, then a few quick re-checks
