"""`submit`/`upscale` with an `idempotency_key`, against the emulator and a real store.

Each client stands for one process: two clients on one store share nothing
but the store, as two workers would.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from keyed_helpers import client_for, paid

from real_esrgan_async import (
    AmbiguousSubmitError,
    AsyncRealESRGAN,
    InvalidRequestError,
    JournalState,
    RedisStore,
    SQLiteStore,
    Store,
    StoreUnavailableError,
    UpscaleRequest,
)
from real_esrgan_async._keys import KeyRecord
from real_esrgan_async.testing import RunningEmulator

pytestmark = pytest.mark.anyio


async def test_one_key_from_two_processes_pays_once(
    emulator: RunningEmulator, make_store: object
) -> None:
    """Two workers upscale under one key at the same time: one job, one result for both."""
    sample = emulator.sample_urls()[0]
    results = {}

    async def worker(name: str) -> None:
        async with client_for(emulator, make_store()) as client:  # type: ignore[operator]
            results[name] = await client.upscale(sample, scale=2, idempotency_key="item-1")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(worker, "a")
        tasks.start_soon(worker, "b")
    assert 1 == paid(emulator)
    assert results["a"] == results["b"]


async def test_a_finished_key_is_answered_from_the_store(
    emulator: RunningEmulator, make_store: object
) -> None:
    """After a restart, a finished key returns its result without a POST or a status call."""
    sample = emulator.sample_urls()[0]
    async with client_for(emulator, make_store()) as first:  # type: ignore[operator]
        before = await first.upscale(sample, scale=2, idempotency_key="item-2")
    async with client_for(emulator, make_store()) as second:  # type: ignore[operator]
        after = await second.upscale(sample, scale=2, idempotency_key="item-2")
        calls = second.stats().status_calls
    assert (1, 0, before) == (paid(emulator), calls, after)


async def test_submit_under_a_submitted_key_returns_the_same_job(
    emulator: RunningEmulator, make_store: object
) -> None:
    sample = emulator.sample_urls()[0]
    async with client_for(emulator, make_store()) as one, client_for(emulator, make_store()) as two:  # type: ignore[operator]
        job = await one.submit(sample, idempotency_key="item-3")
        again = await two.submit(sample, idempotency_key="item-3")
        state = await two.wait(again)
    assert (1, job.request_id, job.request_id) == (
        paid(emulator),
        again.request_id,
        state.request_id,
    )


async def test_a_key_whose_owner_died_mid_post_is_ambiguous_never_resubmitted(
    emulator: RunningEmulator, make_store: object
) -> None:
    """A PENDING key whose lease lapsed (its process died mid-POST): AmbiguousSubmitError."""
    sample = emulator.sample_urls()[0]
    store: Store = make_store()  # type: ignore[operator]
    store.open(str(AsyncRealESRGAN("k", base_url=emulator.base_url).base_url))
    dead = KeyRecord(
        key="item-4",
        request=UpscaleRequest(sample, scale=4),
        state=JournalState.PENDING,
        owner="a-process-that-died",
    )
    store.claim("item-4", dead.dumps(), dead.owner, 0.1)
    store.close()
    async with client_for(emulator, make_store()) as client:  # type: ignore[operator]
        with pytest.raises(AmbiguousSubmitError, match="item-4"):
            await client.upscale(sample, idempotency_key="item-4")
        with pytest.raises(AmbiguousSubmitError, match="item-4"):
            await client.submit(sample, idempotency_key="item-4")
    assert 0 == paid(emulator)


async def test_a_key_without_a_store_is_refused_before_sending(emulator: RunningEmulator) -> None:
    sample = emulator.sample_urls()[0]
    async with client_for(emulator, None) as client:
        with pytest.raises(InvalidRequestError, match="idempotency_key needs a store"):
            await client.upscale(sample, idempotency_key="item-5")
    assert 0 == paid(emulator)


async def test_an_unreachable_redis_fails_the_open_naming_its_url(
    emulator: RunningEmulator,
) -> None:
    from valkey_server import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    client = client_for(emulator, RedisStore(url, socket_timeout=1.0))
    with pytest.raises(StoreUnavailableError, match=url):
        async with client:
            pass  # pragma: no cover - never reached


async def test_redis_lost_mid_run_stops_submits_but_keeps_paid_jobs(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    """The server dies mid-run: a job already paid is still waited on to the end, and every
    later submit, keyed or not, stops with StoreError before anything is sent."""
    from valkey_server import start_server

    server = start_server(tmp_path)
    sample = emulator.sample_urls()[0]
    try:
        async with client_for(emulator, RedisStore(server.url, socket_timeout=1.0)) as client:
            job = await client.submit(sample, idempotency_key="before")
            server.stop()
            state = await client.wait(job)
            with pytest.raises(StoreUnavailableError, match=server.url):
                await client.submit(sample, idempotency_key="after")
            with pytest.raises(StoreUnavailableError, match=server.url):
                await client.submit(sample)
    finally:
        server.stop()
    assert (job.request_id, 1) == (state.request_id, paid(emulator))


@pytest.mark.parametrize("key", ["", "k" * 513, 7])
async def test_a_malformed_key_is_refused_before_sending(
    emulator: RunningEmulator, tmp_path: Path, key: object
) -> None:
    sample = emulator.sample_urls()[0]
    async with client_for(emulator, SQLiteStore(tmp_path / "keys.db")) as client:
        with pytest.raises(InvalidRequestError, match="non-empty str of at most 512"):
            await client.submit(sample, idempotency_key=key)  # type: ignore[arg-type]
    assert 0 == paid(emulator)


def test_a_store_that_is_not_a_store_is_refused_in_the_constructor() -> None:
    with pytest.raises(
        InvalidRequestError, match=r"AsyncRealESRGAN\.store must be None or a Store"
    ):
        AsyncRealESRGAN("key", store="redis://127.0.0.1:6379/0")  # type: ignore[arg-type]
