"""The poller's I/O loop: what it tells the scheduler, over an `httpx.MockTransport` gateway."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest

from real_esrgan_async import JobTimeoutError, PollPolicy, RetryPolicy
from real_esrgan_async._gateway import Gateway
from real_esrgan_async._models import JobState, Status
from real_esrgan_async._poller import Poller, Resolution, _queue_wait, _queued
from real_esrgan_async._stats import Counters

CREATED = datetime(2026, 5, 22, 13, 0, 0, tzinfo=UTC)


def state(status: Status, *, updated_after: float | None = None) -> JobState:
    updated = None if updated_after is None else CREATED + timedelta(seconds=updated_after)
    return JobState("r1", status, created_at=CREATED, updated_at=updated)


# -- what a status answer tells the scheduler (no I/O) ---------------------------------------


def test_a_processing_answer_tells_its_queue_wait_from_updated_at_minus_created_at() -> None:
    assert (False, 2.5) == (
        _queued(state(Status.PROCESSING, updated_after=2.5)),
        _queue_wait(state(Status.PROCESSING, updated_after=2.5)),
    )


def test_a_queued_answer_says_queued_and_tells_no_queue_wait() -> None:
    assert (True, None) == (
        _queued(state(Status.QUEUED, updated_after=0.0)),
        _queue_wait(state(Status.QUEUED, updated_after=0.0)),
    )


def test_no_queue_wait_without_updated_at_or_when_it_precedes_creation() -> None:
    assert (None, None) == (
        _queue_wait(state(Status.PROCESSING)),
        _queue_wait(state(Status.PROCESSING, updated_after=-1.0)),
    )


def test_a_terminal_answer_is_neither_queued_nor_processing() -> None:
    assert (None, None) == (
        _queued(state(Status.COMPLETED, updated_after=9.0)),
        _queue_wait(state(Status.COMPLETED, updated_after=9.0)),
    )


# -- the loop against a scripted gateway ------------------------------------------------------

Answer = Callable[[int], httpx.Response]


def body(status: str) -> dict[str, object]:
    done = status in ("COMPLETED", "FAILED", "ERROR")
    return {
        "request_id": "r1",
        "status": status,
        "created_at": "2026-05-22T13:00:00.000Z",
        "updated_at": "2026-05-22T13:00:02.000Z",
        "completed_at": "2026-05-22T13:00:09.000Z" if done else None,
        "output": {"media_url": ["https://cdn.test/o.png"], "media_type": "image/png"}
        if status == "COMPLETED"
        else None,
    }


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[list[str], Callable[[Answer, PollPolicy], Poller]]]:
    """Make pollers whose status GETs are answered by `answer(n)` (n counts from 0)."""
    calls: list[str] = []
    clients: list[httpx.AsyncClient] = []

    def make(answer: Answer, policy: PollPolicy) -> Poller:
        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(request.url.path)
            return answer(len(calls) - 1)

        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        clients.append(http)
        gateway = Gateway(
            http,
            base_url=httpx.URL("https://gateway.test"),
            api_key="test-key",
            limiter=anyio.CapacityLimiter(4),
            retry=RetryPolicy(base_delay=0.001, max_delay=0.002, default_cooldown=0.001),
            counters=Counters(),
        )
        return Poller(gateway, policy, on_terminal=lambda _: None)

    yield calls, make
    for http in clients:
        await http.aclose()


async def wait_for(poller: Poller, request_id: str, **options: object) -> Resolution:
    resolved: list[Resolution] = []
    done = anyio.Event()

    def callback(about: str, resolution: Resolution) -> None:
        assert about == request_id  # the callback is told which job ended
        resolved.append(resolution)
        done.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(poller.run, tasks)
        poller.watch(request_id, callback, **options)  # type: ignore[arg-type]
        with anyio.fail_after(20):
            await done.wait()
        tasks.cancel_scope.cancel()
    return resolved[0]


@pytest.mark.anyio
async def test_a_rate_limited_check_halves_the_budget_and_the_job_is_still_seen_finished(
    scripted: tuple[list[str], Callable[[Answer, PollPolicy], Poller]],
) -> None:
    calls, make = scripted

    def answer(n: int) -> httpx.Response:
        if n == 0:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"error": "slow down"})
        return httpx.Response(200, json=body("COMPLETED"))

    policy = PollPolicy(
        target_delay=0.05, max_first_check=0.01, min_interval=0.0, initial_delay=0.01
    )
    poller = make(answer, policy)

    resolution = await wait_for(poller, "r1")

    assert isinstance(resolution, JobState)
    assert Status.COMPLETED is resolution.status
    assert 2 == len(calls)
    assert 25.0 == poller.scheduler.checks_per_second  # 50 halved by the 429


@pytest.mark.anyio
async def test_expect_finish_rechecks_a_safety_net_job_soon_instead_of_after_the_interval(
    scripted: tuple[list[str], Callable[[Answer, PollPolicy], Poller]],
) -> None:
    """A terminal callback not yet confirmed: found at the first re-check (0.5 s), not after
    the safety net's 600 s (the test would time out after 20 s)."""
    calls, make = scripted
    poller = make(
        lambda n: httpx.Response(200, json=body("COMPLETED")),
        PollPolicy(safety_net_interval=600.0, max_first_check=600.0),
    )
    resolved: list[Resolution] = []
    done = anyio.Event()

    def callback(about: str, resolution: Resolution) -> None:
        assert about == "r1"
        resolved.append(resolution)
        done.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(poller.run, tasks)
        poller.watch("r1", callback, safety_net=True)
        poller.observe(JobState("r1", Status.PROCESSING))  # the confirming check lagged
        poller.expect_finish("r1")
        with anyio.fail_after(20):
            await done.wait()
        tasks.cancel_scope.cancel()

    assert 1 == len(calls)
    assert isinstance(resolved[0], JobState)
    assert Status.COMPLETED is resolved[0].status


def test_watch_refuses_a_size_that_is_not_a_positive_number() -> None:
    async def main() -> None:
        async with httpx.AsyncClient() as http:
            gateway = Gateway(
                http,
                base_url=httpx.URL("https://gateway.test"),
                api_key="test-key",
                limiter=anyio.CapacityLimiter(1),
                retry=RetryPolicy(),
                counters=Counters(),
            )
            poller = Poller(gateway, PollPolicy(), on_terminal=lambda _: None)
            with pytest.raises(ValueError, match="megapixels must be None or a finite number > 0"):
                poller.watch("r1", lambda _, __: None, megapixels=0.0)
            assert not poller.tracks("r1")

    anyio.run(main)


def test_bodies_are_valid_json_states() -> None:
    """The scripted bodies parse as the gateway's answers do."""
    parsed = JobState.from_json(json.loads(json.dumps(body("PROCESSING"))))
    assert (Status.PROCESSING, 2.0) == (parsed.status, _queue_wait(parsed))


@pytest.mark.anyio
async def test_unwatch_callback_forgets_only_the_waits_made_with_that_callback(
    scripted: tuple[list[str], Callable[[Answer, PollPolicy], Poller]],
) -> None:
    """One callback can serve many jobs (a fan-out): it leaves one job's wait by id."""
    _, make = scripted
    poller = make(
        lambda _: httpx.Response(200, json=body("COMPLETED")),
        PollPolicy(target_delay=0.05, max_first_check=0.01, min_interval=0.0, initial_delay=0.01),
    )
    shared: list[str] = []
    other: list[str] = []
    done = anyio.Event()

    def left(about: str, _: Resolution) -> None:
        shared.append(about)

    def stayed(about: str, _: Resolution) -> None:
        other.append(about)
        done.set()

    async with anyio.create_task_group() as tasks:
        poller.watch("r1", left)
        poller.watch("r1", stayed)
        poller.unwatch_callback("r1", left)
        poller.unwatch_callback("r2", left)  # an id nobody waits on: nothing happens
        assert poller.tracks("r1")
        tasks.start_soon(poller.run, tasks)
        with anyio.fail_after(20):
            await done.wait()
        tasks.cancel_scope.cancel()
    assert [] == shared
    assert ["r1"] == other


# -- checkers under load: checks and timeouts never wait behind a slow check ------------------


def held_gateway(
    held: str, release: anyio.Event, calls: list[str], arrived: anyio.Event | None = None
) -> Poller:
    """A poller whose status GET for `held` sets `arrived`, then waits for `release`;
    every job is COMPLETED."""

    async def handler(request: httpx.Request) -> httpx.Response:
        request_id = request.url.path.rsplit("/", 1)[-1]
        calls.append(request_id)
        if request_id == held:
            if arrived is not None:
                arrived.set()
            await release.wait()
        answer = {**body("COMPLETED"), "request_id": request_id}
        return httpx.Response(200, json=answer)

    gateway = Gateway(
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        base_url=httpx.URL("https://gateway.test"),
        api_key="test-key",
        limiter=anyio.CapacityLimiter(4),
        retry=RetryPolicy(base_delay=0.001, max_delay=0.002, default_cooldown=0.001),
        counters=Counters(),
    )
    policy = PollPolicy(
        initial_delay=0.001, min_interval=0.0, max_checks_per_second=None, target_delay=None
    )
    return Poller(gateway, policy, on_terminal=lambda _: None)


@pytest.mark.anyio
async def test_a_check_due_while_another_is_held_up_goes_out_on_its_own_checker() -> None:
    """The loop is not woken for each new job while a checker runs (the checker hands out
    what falls due as its check ends); a check due while that check hangs still goes out
    at the loop's next pass, on a checker of its own."""
    calls: list[str] = []
    release = anyio.Event()
    arrived = anyio.Event()
    poller = held_gateway("slow", release, calls, arrived)
    seen: dict[str, Resolution] = {}
    done = {"slow": anyio.Event(), "fast": anyio.Event()}

    def callback(about: str, resolution: Resolution) -> None:
        seen[about] = resolution
        done[about].set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(poller.run, tasks)
        poller.watch("slow", callback)
        with anyio.fail_after(10):
            await arrived.wait()
            poller.watch("fast", callback)  # a checker is out: the loop is not woken now
            await done["fast"].wait()  # ... yet the check goes out while "slow" still hangs
        assert "slow" not in seen
        release.set()
        with anyio.fail_after(10):
            await done["slow"].wait()
        tasks.cancel_scope.cancel()
    assert ["slow", "fast"] == calls
    assert all(isinstance(resolution, JobState) for resolution in seen.values())


@pytest.mark.anyio
async def test_a_timeout_ends_its_wait_while_a_check_is_held_up() -> None:
    calls: list[str] = []
    release = anyio.Event()
    poller = held_gateway("slow", release, calls)
    ended = anyio.Event()
    resolutions: list[Resolution] = []

    def callback(_: str, resolution: Resolution) -> None:
        resolutions.append(resolution)
        ended.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(poller.run, tasks)
        poller.watch("slow", callback, timeout=0.2)
        with anyio.fail_after(10):
            await ended.wait()  # the check is still held: the deadline ended the wait
        assert not release.is_set()
        release.set()
        tasks.cancel_scope.cancel()
    assert 1 == len(resolutions)
    assert isinstance(resolutions[0], JobTimeoutError)
