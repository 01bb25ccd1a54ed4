"""Status checks shared by the fleet: the pure decisions, both stores, and whole clients.

The end-to-end tests count the emulator's own status calls for one keyed job
that several clients (each one process's view: its own store object, poller and
connections) wait on at once, on a real Valkey server and on one SQLite file.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from valkey_server import start_server

from real_esrgan_async import (
    AsyncRealESRGAN,
    JobState,
    PollPolicy,
    RedisStore,
    RetryPolicy,
    SQLiteStore,
    Status,
    Store,
)
from real_esrgan_async._checks import SharedChecks
from real_esrgan_async._keys import (
    CHECK_LEASE,
    CHECK_LOOKS,
    CheckStep,
    answer_is_fresh,
    look_again_in,
    plan_check,
)
from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator

GATEWAY = "http://127.0.0.1:8000"
CLIENTS = 4
#: Checks every 50 ms, no jitter: a job is checked on a fixed beat, so that one client's
#: count is a fair yardstick for four.
BEAT = PollPolicy(
    target_delay=None,
    initial_delay=0.05,
    min_interval=0.05,
    max_interval=0.05,
    backoff=1.0,
    jitter=0.0,
    max_checks_per_second=None,
)
FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)
#: Jobs of about a second (16 s median x 0.05): some twenty checks each on the beat.
CONFIG = EmulatorConfig(time_scale=0.15, seed=11, error_rate=0.0, cold_start_rate=0.0)


# The pure decisions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "terminal", "leased", "expected"),
    [
        (None, False, False, CheckStep.CALL),  # nothing relayed, nobody checking: claim it
        (None, False, True, CheckStep.WAIT),  # another worker's call is on the wire
        (0.01, False, True, CheckStep.SHARE),  # fresh: used even while another checks
        (0.2, False, False, CheckStep.CALL),  # stale (max_age 0.1): call
        (0.2, False, True, CheckStep.WAIT),  # stale, and a fresher one is coming
        (3600.0, True, False, CheckStep.SHARE),  # a terminal answer never goes stale
        (-1.0, False, False, CheckStep.SHARE),  # a clock that stepped back: fresh
    ],
)
def test_plan_check_shares_fresh_answers_claims_free_checks_and_waits_for_others(
    age: float | None, terminal: bool, leased: bool, expected: CheckStep
) -> None:
    assert expected == plan_check(age=age, terminal=terminal, leased=leased, max_age=0.1)


def test_a_running_answer_is_fresh_only_below_the_askers_min_interval() -> None:
    fresh = [answer_is_fresh(age=a, terminal=False, max_age=0.25) for a in (0.0, 0.249, 0.25)]
    assert [True, True, False] == fresh
    assert answer_is_fresh(age=0.0, terminal=False, max_age=0.0) is False  # min_interval 0


def test_waiting_for_another_workers_answer_grows_then_ends_at_the_lease() -> None:
    assert [0.005, 0.01, 0.02, 0.05, 0.1, 0.1] == [look_again_in(n, 0.0) for n in range(6)]
    assert 0.05 == pytest.approx(look_again_in(9, CHECK_LEASE - 0.05))  # never past the lease
    assert look_again_in(9, CHECK_LEASE) is None  # then: call yourself
    assert look_again_in(0, 0.5, lease=0.5) is None


@given(
    st.lists(st.floats(min_value=0.0, max_value=0.2), max_size=200),
    st.floats(min_value=0.1, max_value=5.0),
)
def test_a_waiter_never_waits_past_the_lease(overheads: list[float], lease: float) -> None:
    """Whatever each look at the store costs, the sleeps and looks end by the lease."""
    waited, looks = 0.0, 0
    for overhead in [*overheads, *[0.0] * 1000]:
        delay = look_again_in(looks, waited, lease=lease)
        if delay is None:
            break
        assert 0 < delay <= CHECK_LOOKS[-1]
        waited += delay
        looks += 1
        assert waited <= lease + 1e-9
        waited += overhead
    assert look_again_in(looks, waited, lease=lease) is None


# Both stores -----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened: Store = SQLiteStore(tmp_path / "keys.db")
    else:
        url = request.getfixturevalue("redis_url")
        opened = RedisStore(url, prefix=request.getfixturevalue("prefix"))
    opened.open(GATEWAY)
    yield opened
    opened.close()


RUNNING = '{"request_id":"r1","status":"PROCESSING"}'
DONE = '{"request_id":"r1","status":"COMPLETED"}'


def test_one_worker_claims_the_check_and_the_others_wait_then_share_its_answer(
    store: Store,
) -> None:
    first = store.claim_check("r1", "a", 1.0)
    waiting = store.claim_check("r1", "b", 1.0)
    store.share_check("r1", "a", RUNNING, terminal=False)
    shared = store.claim_check("r1", "b", 1.0)
    other_job = store.claim_check("r2", "b", 1.0)
    assert (CheckStep.CALL, None) == first
    assert (CheckStep.WAIT, None) == waiting
    assert (CheckStep.SHARE, RUNNING) == shared
    assert (CheckStep.CALL, None) == other_job


def test_a_stale_running_answer_is_checked_again_but_a_terminal_one_is_not(store: Store) -> None:
    store.claim_check("r1", "a", 1.0)
    store.share_check("r1", "a", RUNNING, terminal=False)
    stale = store.claim_check("r1", "b", 0.0)  # max_age 0: never fresh
    store.share_check("r1", "b", DONE, terminal=True)
    finished = store.claim_check("r1", "c", 0.0)
    assert ((CheckStep.CALL, None), (CheckStep.SHARE, DONE)) == (stale, finished)


def test_a_released_claim_lets_the_next_worker_call(store: Store) -> None:
    """The claimant's call failed: it releases, and the next one claims at once."""
    store.claim_check("r1", "a", 1.0)
    store.release_check("r1", "b")  # not b's claim: nothing happens
    still = store.claim_check("r1", "c", 1.0)
    store.release_check("r1", "a")
    assert (CheckStep.WAIT, (CheckStep.CALL, None)) == (still[0], store.claim_check("r1", "c", 1.0))


def test_the_claim_of_a_dead_checker_lapses(store: Store) -> None:
    store.claim_check("r1", "dead", 1.0, lease=0.2)
    held = store.claim_check("r1", "b", 1.0)
    time.sleep(0.3)
    assert (CheckStep.WAIT, (CheckStep.CALL, None)) == (held[0], store.claim_check("r1", "b", 1.0))


def test_the_knob_is_checked_and_defaults_to_sharing(tmp_path: Path) -> None:
    assert SQLiteStore(tmp_path / "k.db").coalesce_checks is True
    assert RedisStore("redis://127.0.0.1:1/0").coalesce_checks is True
    with pytest.raises(TypeError, match="coalesce_checks"):
        RedisStore("redis://127.0.0.1:1/0", coalesce_checks="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="coalesce_checks"):
        SQLiteStore(tmp_path / "k.db", coalesce_checks=1)  # type: ignore[arg-type]


# Whole clients ---------------------------------------------------------------------

StoreFactory = Callable[[str, bool], Store]


@pytest.fixture(params=["redis", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """`make_store(place, share)`: a store in `place` (each call: one process's view of it),
    sharing status checks if `share`."""
    if request.param == "sqlite":
        return lambda place, share: SQLiteStore(tmp_path / f"{place}.db", coalesce_checks=share)
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("prefix")
    return lambda place, share: RedisStore(url, prefix=f"{prefix}-{place}", coalesce_checks=share)


def client_for(gateway: RunningEmulator, store: Store) -> AsyncRealESRGAN:
    return AsyncRealESRGAN(
        gateway.api_key, base_url=gateway.base_url, retry=FAST_RETRY, poll=BEAT, store=store
    )


async def calls_for_one_keyed_job(clients: int, make: Callable[[], Store]) -> tuple[int, int]:
    """`clients` clients upscale one input under one key at once, each with its own store
    object; returns (status calls the emulator got for the job, jobs it created)."""
    with running_emulator(CONFIG) as gateway:
        sample = gateway.sample_urls()[0]
        states: list[JobState] = []

        async def worker() -> None:
            async with client_for(gateway, make()) as client:
                states.append(await client.upscale(sample, scale=2, idempotency_key="item"))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                for _ in range(clients):
                    tasks.start_soon(worker)
        stats = gateway.emulator.stats()
    assert [Status.COMPLETED] * clients == [s.status for s in states]
    assert 1 == len({s.request_id for s in states})
    return stats.status_calls_by_request_id[states[0].request_id], stats.jobs_created


@pytest.mark.anyio
async def test_four_workers_on_one_job_make_the_status_calls_of_one(
    make_store: StoreFactory,
) -> None:
    """Four workers wait on one keyed job: with shared checks the emulator counts about the
    status calls one worker alone makes; without, about four times as many."""
    alone, _ = await calls_for_one_keyed_job(1, lambda: make_store("alone", True))
    shared, paid = await calls_for_one_keyed_job(CLIENTS, lambda: make_store("shared", True))
    unshared, _ = await calls_for_one_keyed_job(CLIENTS, lambda: make_store("unshared", False))
    assert 1 == paid
    assert shared <= alone * 1.5 + 2, (alone, shared, unshared)
    assert unshared >= alone * 2.5, (alone, shared, unshared)


@pytest.mark.anyio
async def test_a_dead_checker_does_not_stall_the_others(make_store: StoreFactory) -> None:
    """A worker claimed the job's check and died: the claim lapses and the job still ends."""
    with running_emulator(CONFIG) as gateway:
        sample = gateway.sample_urls()[0]
        async with client_for(gateway, make_store("s", True)) as client:
            job = await client.submit(sample, scale=2, idempotency_key="item")
            dead = make_store("s", True)
            dead.open(str(client.base_url))
            try:
                assert CheckStep.CALL == dead.claim_check(job.request_id, "dead", 0.0, 0.5)[0]
            finally:
                dead.close()
            with anyio.fail_after(30):
                state = await client.wait(job)
    assert Status.COMPLETED == state.status


@pytest.mark.anyio
async def test_redis_stopped_mid_run_every_wait_still_ends_by_calling_the_gateway(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Four workers wait on one keyed job with shared checks; the Redis server stops while
    they wait (each has its job: a keyed submit with the store gone would rightly stop). Each
    then checks the gateway itself: every wait ends with the job's result."""
    server = start_server(tmp_path)
    states: list[JobState] = []
    try:
        with running_emulator(CONFIG) as gateway:
            sample = gateway.sample_urls()[0]
            waiting = anyio.Event()
            calls_before = collections.Counter[str]()
            submitted: list[str] = []

            async def worker() -> None:
                async with client_for(gateway, RedisStore(server.url, prefix="p")) as client:
                    job = await client.submit(sample, scale=2, idempotency_key="item")
                    submitted.append(job.request_id)
                    states.append(await client.wait(job))

            async def stop_redis_once_checked() -> None:
                # The emulator runs in its own thread: polling it is what a test can do.
                while (  # noqa: ASYNC110
                    len(submitted) < CLIENTS or not gateway.emulator.stats().status_calls
                ):
                    await anyio.sleep(0.01)
                calls_before.update(gateway.emulator.stats().status_calls_by_request_id)
                await anyio.to_thread.run_sync(server.stop)
                waiting.set()

            with anyio.fail_after(60), caplog.at_level(logging.WARNING, "real_esrgan_async"):
                async with anyio.create_task_group() as tasks:
                    for _ in range(CLIENTS):
                        tasks.start_soon(worker)
                    tasks.start_soon(stop_redis_once_checked)
            calls_after = gateway.emulator.stats().status_calls_by_request_id
    finally:
        server.stop()
    assert waiting.is_set()
    assert [Status.COMPLETED] * CLIENTS == [s.status for s in states]
    (request_id,) = {s.request_id for s in states}
    assert calls_after[request_id] > calls_before[request_id]  # checked without the store
    assert any("status checks are not shared" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_a_failing_call_releases_the_claim_and_its_error_reaches_the_poller(
    store: Store,
) -> None:
    """The claimant's call fails: the error propagates unchanged, and the next worker claims."""
    checks = SharedChecks(store)

    async def failing(request_id: str) -> JobState:
        raise ConnectionError(request_id)

    async def answering(request_id: str) -> JobState:
        return JobState(request_id, Status.PROCESSING)

    with pytest.raises(ConnectionError):
        await checks.status("r1", failing, max_age=1.0)
    other = SharedChecks(store)
    first = await other.status("r1", answering, max_age=1.0)
    second = await checks.status("r1", failing, max_age=1.0)  # shared: `failing` not called
    assert (Status.PROCESSING, Status.PROCESSING) == (first.status, second.status)
    assert ({"called": 1}, {"called": 1, "shared": 1}) == (dict(other.counts), dict(checks.counts))


@pytest.mark.anyio
async def test_a_waiter_takes_the_answer_its_wait_brought_however_long_the_call_took(
    store: Store,
) -> None:
    """Another worker's call is on the wire for 50 ms, longer than the waiter's `max_age`:
    the answer it brings was read after the waiter's check came due, so it serves."""
    assert CheckStep.CALL == store.claim_check("r1", "a", 1.0)[0]
    checks = SharedChecks(store)
    got: list[JobState] = []

    async def must_not_call(request_id: str) -> JobState:
        raise AssertionError(request_id)

    async def waiter() -> None:
        got.append(await checks.status("r1", must_not_call, max_age=0.001))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(waiter)
        await anyio.sleep(0.05)
        await anyio.to_thread.run_sync(
            lambda: store.share_check("r1", "a", RUNNING, terminal=False)
        )
    assert [Status.PROCESSING] == [s.status for s in got]
    assert {"waited": 1, "shared": 1} == dict(checks.counts)


def test_sqlite_forgets_answers_older_than_their_lifetime(tmp_path: Path) -> None:
    """Old answers are pruned as new ones come (Redis lets them expire): even a terminal one."""
    store = SQLiteStore(tmp_path / "keys.db")
    store.open(GATEWAY)
    try:
        store.share_check("r1", "a", DONE, terminal=True)
        with sqlite3.connect(tmp_path / "keys.db") as raw:
            raw.execute("UPDATE checks SET read_at = read_at - ? WHERE id = 'r1'", (601.0,))
        store.share_check("r2", "a", RUNNING, terminal=False)
        assert (CheckStep.CALL, None) == store.claim_check("r1", "b", 1.0)
        assert (CheckStep.SHARE, RUNNING) == store.claim_check("r2", "b", 1.0)
    finally:
        store.close()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "relayed", ["not json", '{"request_id":"r9","status":"COMPLETED"}', '{"status":"NOPE"}']
)
async def test_an_answer_that_is_not_this_jobs_state_is_not_used(
    store: Store, relayed: str
) -> None:
    """Unreadable, about another job, or not a state: the worker calls the gateway itself."""
    store.share_check("r1", "a", relayed, terminal=True)
    checks = SharedChecks(store)

    async def answering(request_id: str) -> JobState:
        return JobState(request_id, Status.PROCESSING)

    state = await checks.status("r1", answering, max_age=1.0)
    assert (Status.PROCESSING, {"called": 1}) == (state.status, dict(checks.counts))


@pytest.mark.anyio
async def test_a_worker_waits_no_longer_than_its_lease_for_another_workers_call(
    store: Store,
) -> None:
    """Another worker holds the claim (for 30 s) and never answers: after its own lease
    (here 0.1 s) the worker calls the gateway itself, without taking the claim."""
    store.claim_check("r1", "slow", 1.0, 30.0)
    checks = SharedChecks(store, lease=0.1)

    async def answering(request_id: str) -> JobState:
        return JobState(request_id, Status.QUEUED)

    state = await checks.status("r1", answering, max_age=1.0)
    assert (Status.QUEUED, {"called": 1, "waited": 1}) == (state.status, dict(checks.counts))
    assert CheckStep.WAIT == store.claim_check("r1", "other", 1.0)[0]  # still the slow one's
