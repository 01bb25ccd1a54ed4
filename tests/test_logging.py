"""What the `real_esrgan_async` logger says: per job at DEBUG, what an operator needs above.

Never the API key.
"""

from __future__ import annotations

import logging

import pytest
from fake_gateway import BASE, FAST_POLL, FAST_RETRY, FakeGateway

from real_esrgan_async import AsyncRealESRGAN, JobState, PollPolicy, ResubmitPolicy, Status
from real_esrgan_async._ledger import Ledger
from real_esrgan_async.testing import EmulatorConfig, running_emulator

KEY = "sk-test-secret-key-123456"
LOST_CALLBACK = "callback never came"


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "real_esrgan_async" and r.levelno == level
    ]


@pytest.mark.anyio
async def test_each_job_is_logged_at_debug_submitted_resubmitted_and_finished(
    fake: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="real_esrgan_async")
    policy = ResubmitPolicy(max_resubmits=1, backoff=0.0, max_backoff=0.0)
    async with AsyncRealESRGAN(
        KEY, base_url=BASE, retry=FAST_RETRY, poll=FAST_POLL, resubmit=policy
    ) as client:
        images = ["https://img.test/ok/1.png", "https://img.test/error/2.png"]
        outcomes = [o async for o in client.upscale_many(images)]
    debug = messages(caplog, logging.DEBUG)
    by_index = {o.index: o for o in outcomes}
    ok_id, error_ids = by_index[0].request_id, (*by_index[1].earlier_request_ids,)
    assert f"submitted {ok_id}" in debug
    assert f"{ok_id} finished COMPLETED" in debug
    assert f"{error_ids[0]} finished ERROR: CUDA out of memory" in debug
    assert f"resubmitted {error_ids[0]} (ended ERROR) as {by_index[1].request_id}" in debug


@pytest.mark.anyio
async def test_ambiguous_submits_and_429_pauses_are_told_to_the_operator(
    fake: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="real_esrgan_async")
    async with AsyncRealESRGAN(KEY, base_url=BASE, retry=FAST_RETRY, poll=FAST_POLL) as client:
        images = ["https://img.test/ambiguous/1.png", "https://img.test/throttled/2.png"]
        outcomes = [o async for o in client.upscale_many(images)]
    assert 2 == len(outcomes)
    warnings = messages(caplog, logging.WARNING)
    assert 1 == sum("a submit failed after it was sent" in m for m in warnings)
    assert 1 == sum(m.startswith("429 from the gateway") for m in messages(caplog, logging.INFO))


def test_a_lost_callback_is_warned_about_once_with_its_likely_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = Ledger()
    for request_id in ("a", "b", "c"):
        ledger.record_submitted(request_id, webhook=True)
    ledger.record_callback("c")
    for request_id in ("a", "b", "c"):
        ledger.record_terminal(JobState(request_id, Status.COMPLETED))
    warnings = messages(caplog, logging.WARNING)
    assert 1 == len(warnings)
    assert "job a reports by webhook" in warnings[0]
    assert "Is webhook_url right and reachable" in warnings[0]


def test_a_job_whose_callback_came_is_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger()
    ledger.record_submitted("a", webhook=True)
    ledger.record_callback("a")
    ledger.record_terminal(JobState("a", Status.COMPLETED))
    ledger.record_submitted("b", webhook=False)  # polled: no callback expected
    ledger.record_terminal(JobState("b", Status.COMPLETED))
    assert [] == messages(caplog, logging.WARNING)


@pytest.mark.anyio
async def test_jobs_whose_callbacks_are_lost_warn_once_and_never_show_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    config = EmulatorConfig(
        time_scale=0.001,
        seed=1,
        fetch_inputs=False,
        error_rate=0.0,
        allow_http_webhooks=True,
        webhook_loss_rate=1.0,  # as if webhook_url pointed nowhere
        api_keys=frozenset({KEY}),
    )
    with running_emulator(config) as emulator:
        poll = PollPolicy(initial_delay=0.01, min_interval=0.01, safety_net_interval=0.05)
        async with AsyncRealESRGAN(
            KEY,
            base_url=emulator.base_url,
            poll=poll,
            webhook_url="http://127.0.0.1:9/hooks",
            allow_insecure_webhooks=True,
        ) as client:
            images = [f"{emulator.base_url}/samples/cat.png?n={n}" for n in range(3)]
            outcomes = [o async for o in client.upscale_many(images)]
    assert [True, True, True] == [o.ok for o in outcomes]
    assert 1 == sum(LOST_CALLBACK in m for m in messages(caplog, logging.WARNING))
    everything = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert KEY not in everything
    assert client.webhooks.token not in everything  # the callback URL's secret too
