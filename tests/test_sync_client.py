"""`RealESRGAN`, the synchronous client: the async core's calls and guarantees, blocking.

Against the emulator over loopback (real HTTP, real images) and against the
scripted fake gateway (jobs that never finish, to stop runs and waits halfway).
"""

from __future__ import annotations

import inspect
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
import respx
from fake_gateway import BASE, FAST_POLL, FAST_RETRY, SUBMIT, FakeGateway

from real_esrgan_async import (
    AsyncRealESRGAN,
    InvalidRequestError,
    JobsUnfinishedError,
    PollPolicy,
    RealESRGAN,
    SQLiteJournal,
    Stats,
    Status,
    SyncUpscaleRun,
)
from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator

#: Checks fit for the emulator at time_scale=0.001 (a 16 s job takes 16 ms).
EMULATOR_POLL = PollPolicy(initial_delay=0.01, min_interval=0.005, max_interval=0.05, jitter=0.0)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def gateway() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(time_scale=0.001, seed=1, error_rate=0.0)) as gateway:
        yield gateway


def emulator_client(gateway: RunningEmulator, **options: object) -> RealESRGAN:
    return RealESRGAN(
        gateway.api_key,
        base_url=gateway.base_url,
        poll=EMULATOR_POLL,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture(params=["asyncio", "trio"])
def sync_client(fake: FakeGateway, request: pytest.FixtureRequest) -> Iterator[RealESRGAN]:
    """An open sync client on the fake gateway, its own loop on asyncio, then on trio
    (closed before the fake is unmounted)."""
    with RealESRGAN(
        "key",
        base_url=BASE,
        retry=FAST_RETRY,
        poll=FAST_POLL,
        max_connections=8,
        backend=request.param,
    ) as client:
        yield client


def until(condition: Callable[[], bool], what: str) -> None:
    """Block until `condition()` holds; the deadline only keeps a broken test from hanging."""
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.002)


def images(kind: str, count: int, start: int = 0) -> list[str]:
    return [f"https://img.test/{kind}/{i}.png" for i in range(start, start + count)]


def ids_of_kind(fake: FakeGateway, kind: str) -> set[str]:
    return {request_id for request_id, job in fake.jobs.items() if job["kind"] == kind}


# The calls --------------------------------------------------------------------------


def test_upscale_returns_the_completed_state_and_download_its_image(
    gateway: RunningEmulator, tmp_path: Path
) -> None:
    with emulator_client(gateway) as client:
        state = client.upscale(gateway.sample_url("photo.jpg"), scale=2)
        data = client.download(state)
        written = client.download(state, tmp_path / "photo@2x.png")
    assert Status.COMPLETED == state.status
    assert PNG_MAGIC == data[:8]
    assert tmp_path / "photo@2x.png" == written
    assert data == written.read_bytes()
    assert 1 == gateway.emulator.stats().jobs_created


def test_submit_wait_and_status_follow_one_job_and_keep_the_books(
    gateway: RunningEmulator,
) -> None:
    with emulator_client(gateway) as client:
        job = client.submit(gateway.sample_url("tiny.png"), scale=2)
        assert [job.request_id] == list(client.unfinished_request_ids)
        state = client.wait(job.request_id, timeout=30)
        assert 0 == len(client.unfinished_request_ids)
        stats = client.stats()
        seen = client.status(job)
    assert (job.request_id, Status.COMPLETED) == (state.request_id, state.status)
    assert (job.request_id, Status.COMPLETED) == (seen.request_id, seen.status)
    assert (1, 1, 0) == (stats.submitted, stats.completed, stats.in_flight)


def test_waiting_again_on_a_finished_job_counts_it_once(gateway: RunningEmulator) -> None:
    with emulator_client(gateway) as client:
        job = client.submit(gateway.sample_url("tiny.png"))
        client.wait(job)
        client.wait(job)
        stats = client.stats()
    assert (1, 1) == (stats.submitted, stats.completed)


def test_make_request_validates_without_sending_anything(gateway: RunningEmulator) -> None:
    client = emulator_client(gateway)  # not even opened: validation needs no loop
    request = client.make_request(gateway.sample_url("tiny.png"), scale=3)
    assert 3 == request.scale
    with pytest.raises(InvalidRequestError, match="scale"):
        client.make_request(gateway.sample_url("tiny.png"), scale=5)
    assert 0 == gateway.emulator.stats().submits_received


def test_upscale_many_yields_one_outcome_per_input_in_order_when_asked(
    gateway: RunningEmulator,
) -> None:
    inputs = [*gateway.sample_urls()[:4], "not a url"]
    with emulator_client(gateway) as client, client.upscale_many(inputs, ordered=True) as run:
        outcomes = list(run)
    assert [0, 1, 2, 3, 4] == [outcome.index for outcome in outcomes]
    assert [True, True, True, True, False] == [outcome.ok for outcome in outcomes]
    assert isinstance(outcomes[4].error, InvalidRequestError)
    assert 4 == gateway.emulator.stats().jobs_created


def test_a_generator_is_pulled_lazily_and_off_the_clients_loop(fake: FakeGateway) -> None:
    pulls: list[int] = []  # the thread of each pull
    consumed = 0
    pulled_when_consumed: list[tuple[int, int]] = []

    def crawl() -> Iterator[str]:
        for url in images("ok", 12):
            pulls.append(threading.get_ident())
            yield url

    with RealESRGAN("key", base_url=BASE, retry=FAST_RETRY, poll=FAST_POLL) as client:
        with client.upscale_many(crawl(), max_in_flight=3) as run:
            for _ in run:
                pulled_when_consumed.append((consumed, len(pulls)))
                consumed += 1
        loop_thread = client._loop_thread
    assert 12 == consumed
    # Never more than max_in_flight inputs ahead of the consumer (plus one: the slot of
    # the outcome being handed over is freed as it is handed over).
    assert all(pulled <= taken + 1 + 3 for taken, pulled in pulled_when_consumed)
    # A slow generator would stall polling on the loop; it is pulled in worker threads.
    assert set() == {threading.get_ident(), loop_thread} & set(pulls)


def test_on_progress_runs_on_the_clients_thread_and_may_read_the_client(
    gateway: RunningEmulator,
) -> None:
    seen: list[tuple[int, tuple[str, ...]]] = []
    holder: list[RealESRGAN] = []

    def progress(stats: Stats) -> None:
        seen.append((stats.submitted, holder[0].unfinished_request_ids))

    with emulator_client(gateway, on_progress=progress) as client:
        holder.append(client)
        state = client.upscale(gateway.sample_url("tiny.png"))
    assert [(1, (state.request_id,)), (1, ())] == seen


def test_a_journal_run_marks_saved_outputs_and_a_rerun_replays_them(
    gateway: RunningEmulator, tmp_path: Path
) -> None:
    inputs = gateway.sample_urls()[:3]
    journal = tmp_path / "batch.journal"
    with emulator_client(gateway) as client:
        with client.upscale_many(inputs, journal=journal) as run:
            assert isinstance(run.journal, SQLiteJournal)
            for outcome in run:
                assert outcome.result is not None
                path = client.download(outcome.result, tmp_path / f"{outcome.index}.png")
                run.mark_saved(outcome, path)
        with client.upscale_many(inputs, journal=journal) as rerun:
            replayed = sorted((o.index, o.resumed, o.saved_to) for o in rerun)
    expected = [(i, True, str(tmp_path / f"{i}.png")) for i in range(3)]
    assert expected == replayed
    assert 3 == gateway.emulator.stats().jobs_created


def test_mark_saved_without_a_journal_says_so(sync_client: RealESRGAN) -> None:
    with sync_client.upscale_many(images("ok", 1)) as run:
        outcome = next(run)
        with pytest.raises(RuntimeError, match="no journal"):
            run.mark_saved(outcome, "out.png")


def test_several_threads_share_one_client(gateway: RunningEmulator) -> None:
    results: list[Status] = []
    with emulator_client(gateway) as client:

        def one() -> None:
            results.append(client.upscale(gateway.sample_url("tiny.png"), scale=2).status)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = client.stats()
    assert [Status.COMPLETED] * 4 == results
    assert (4, 4) == (stats.submitted, stats.completed)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_client_runs_its_loop_on_either_backend(gateway: RunningEmulator, backend: str) -> None:
    with emulator_client(gateway, backend=backend) as client:
        state = client.upscale(gateway.sample_url("tiny.png"))
    assert Status.COMPLETED == state.status


# Inside a running event loop ---------------------------------------------------------


@pytest.mark.anyio
async def test_a_worker_thread_of_a_running_loop_uses_the_sync_client(
    gateway: RunningEmulator,
) -> None:
    """A sync view in an async server: the loop runs, a worker thread calls the client."""

    def view() -> tuple[Status, int]:
        with emulator_client(gateway) as client:
            state = client.upscale(gateway.sample_url("tiny.png"), scale=2)
            outcomes = list(client.upscale_many(gateway.sample_urls()[:3]))
        return state.status, sum(outcome.ok for outcome in outcomes)

    assert (Status.COMPLETED, 3) == await anyio.to_thread.run_sync(view)


@pytest.mark.anyio
async def test_a_coroutine_may_call_it_directly_as_a_notebook_cell_does(
    gateway: RunningEmulator,
) -> None:
    """A Jupyter cell runs inside the kernel's running loop: the client uses a loop of its own."""
    with emulator_client(gateway) as client:
        state = client.upscale(gateway.sample_url("tiny.png"))
    assert Status.COMPLETED == state.status


# Lifecycle ----------------------------------------------------------------------------


def test_a_client_is_used_open_and_closing_it_twice_is_harmless(fake: FakeGateway) -> None:
    client = RealESRGAN("key", base_url=BASE, poll=FAST_POLL)
    with pytest.raises(RuntimeError, match="not open"):
        client.submit("https://img.test/ok/0.png")
    with client:
        assert "state=open" in repr(client)
        with pytest.raises(RuntimeError, match="only once"):
            client.open()
    client.close()
    assert "state=closed" in repr(client)
    with pytest.raises(RuntimeError, match="closed"):
        client.status("real-esrgan_00000000")
    with pytest.raises(RuntimeError, match="closed"):
        client.upscale_many(images("ok", 1))
    assert () == client.unfinished_request_ids  # the books stay readable


def test_a_client_never_opened_closes_quietly() -> None:
    client = RealESRGAN("key")
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.open()


def test_the_key_is_not_in_the_repr() -> None:
    assert "sekrit" not in repr(RealESRGAN("sekrit-key-123"))


def test_bad_options_fail_in_the_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REAL_ESRGAN_API_KEY", raising=False)
    with pytest.raises(InvalidRequestError, match="no API key"):
        RealESRGAN()
    with pytest.raises(InvalidRequestError, match="backend must be 'asyncio' or 'trio'"):
        RealESRGAN("key", backend="curio")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="max_connections"):
        RealESRGAN("key", max_connections=0)


def test_the_constructor_takes_the_async_clients_options() -> None:
    """The same options, with the same defaults; an `httpx.AsyncClient` belongs to one loop,
    so the sync client makes its own, on its own loop."""
    sync = inspect.signature(RealESRGAN).parameters
    async_ = inspect.signature(AsyncRealESRGAN).parameters
    expected = {name: p.default for name, p in async_.items() if name != "http_client"}
    expected |= {"backend": "asyncio", "backend_options": None}
    assert expected == {name: p.default for name, p in sync.items()}


# No paid id is lost ---------------------------------------------------------------------


def test_a_break_leaves_the_paid_unfinished_ids_on_the_run_and_the_client(
    fake: FakeGateway, sync_client: RealESRGAN
) -> None:
    fake.checks_to_finish = 3
    inputs = [*images("stuck", 5), *images("ok", 1, start=5)]
    with sync_client.upscale_many(inputs, max_in_flight=6) as run:
        for outcome in run:
            first = outcome
            break
    stuck = ids_of_kind(fake, "stuck")
    assert 5 == first.index
    assert 6 == sum(fake.posts_per_image.values())  # a POST per input, each made a job
    assert stuck == set(run.unfinished_request_ids)
    assert stuck == set(sync_client.unfinished_request_ids)


def test_a_run_dropped_by_a_break_stops_and_keeps_its_ids(fake: FakeGateway) -> None:
    fake.checks_to_finish = 3
    client = RealESRGAN("key", base_url=BASE, retry=FAST_RETRY, poll=FAST_POLL)
    with client:
        for _ in client.upscale_many([*images("stuck", 4), *images("ok", 1, start=4)]):
            break
    # Closing waited for the dropped run to stop: every job it paid for is accounted for.
    assert ids_of_kind(fake, "stuck") == set(client.unfinished_request_ids)
    assert len(fake.jobs) == sum(fake.posts_per_image.values())


def test_closing_the_client_ends_a_wait_blocked_in_another_thread(
    fake: FakeGateway, sync_client: RealESRGAN
) -> None:
    job = sync_client.submit("https://img.test/stuck/0.png")
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            sync_client.wait(job)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    until(lambda: fake.status_calls >= 2, "the wait polls")
    sync_client.close()
    thread.join()
    assert [JobsUnfinishedError] == [type(error) for error in errors]
    assert isinstance(errors[0], JobsUnfinishedError)
    assert (job.request_id,) == errors[0].request_ids
    assert (job.request_id,) == sync_client.unfinished_request_ids


def test_closing_the_client_ends_a_fan_out_blocked_in_another_thread(
    fake: FakeGateway, sync_client: RealESRGAN
) -> None:
    run = sync_client.upscale_many(images("stuck", 3))
    errors: list[BaseException] = []

    def consumer() -> None:
        try:
            list(run)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=consumer)
    thread.start()
    until(lambda: len(fake.jobs) == 3 and fake.status_calls >= 3, "the run polls its jobs")
    sync_client.close()
    thread.join()
    stuck = ids_of_kind(fake, "stuck")
    assert [JobsUnfinishedError] == [type(error) for error in errors]
    assert isinstance(errors[0], JobsUnfinishedError)
    assert stuck == set(errors[0].request_ids)
    assert stuck == set(run.unfinished_request_ids)
    assert stuck == set(sync_client.unfinished_request_ids)


def test_closing_lets_a_submit_on_the_wire_finish_and_keeps_its_id() -> None:
    """Cutting a POST halfway could pay for a job whose id never arrives: close waits."""
    on_the_wire = threading.Event()
    answer = threading.Event()
    with respx.mock(assert_all_called=False) as router:
        fake = FakeGateway(router)

        async def slow_submit(request: httpx.Request) -> httpx.Response:
            on_the_wire.set()
            # Polled, not awaited in a worker thread: a cancellation must be able to land here.
            while not answer.is_set():  # noqa: ASYNC110 - set from another thread
                await anyio.sleep(0.001)
            return fake._submit(request)

        router.post(SUBMIT).mock(side_effect=slow_submit)
        client = RealESRGAN("key", base_url=BASE, retry=FAST_RETRY, poll=FAST_POLL).open()
        results: list[object] = []

        def submitter() -> None:
            try:
                results.append(client.submit("https://img.test/stuck/0.png").request_id)
            except BaseException as exc:
                results.append(exc)

        threads = [threading.Thread(target=submitter), threading.Thread(target=client.close)]
        threads[0].start()
        until(on_the_wire.is_set, "the submit is on the wire")
        threads[1].start()
        # Answer only once close() has ended what it ends (on the client's loop).
        until(lambda: client._closing, "close() runs on the client's loop")
        answer.set()
        for thread in threads:
            thread.join()
    assert list(fake.jobs) == results
    assert tuple(fake.jobs) == client.unfinished_request_ids


def test_the_webhook_callback_url_carries_the_clients_token() -> None:
    secret = "Xq7-pL2vN9_tR4mK8sW3yB"
    client = RealESRGAN("key", webhook_url="https://app.example/hooks", webhook_secret=secret)
    assert f"https://app.example/hooks/{secret}" == client.webhook_callback_url()
    assert f"https://other.example/h/{secret}" == client.webhook_callback_url(
        "https://other.example/h"
    )


needs_pthread_kill = pytest.mark.skipif(
    not hasattr(signal, "pthread_kill"), reason="Ctrl+C is simulated with pthread_kill"
)


def ctrl_c_once(condition: Callable[[], bool]) -> threading.Thread:
    """Send SIGINT (Ctrl+C) to the main thread once `condition()` holds."""
    main = threading.main_thread().ident
    assert main == threading.get_ident(), "the test must run in the main thread"

    def interrupt() -> None:
        until(condition, "the call blocks")
        signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=interrupt)
    thread.start()
    return thread


@needs_pthread_kill
def test_ctrl_c_during_a_wait_cancels_it_and_keeps_the_id(
    fake: FakeGateway, sync_client: RealESRGAN
) -> None:
    fake.checks_to_finish = 10**9
    job = sync_client.submit("https://img.test/ok/0.png")
    interrupter = ctrl_c_once(lambda: fake.status_calls >= 2)
    with pytest.raises(KeyboardInterrupt):
        sync_client.wait(job)
    interrupter.join()
    assert (job.request_id,) == sync_client.unfinished_request_ids
    # The wait was cancelled on the client's loop, not left polling there: at most a
    # status call already on the wire lands, in ten times the longest poll interval.
    checks = int(fake.jobs[job.request_id]["checks"])  # type: ignore[call-overload]
    time.sleep(10 * FAST_POLL.max_interval)
    assert int(fake.jobs[job.request_id]["checks"]) <= checks + 1  # type: ignore[call-overload]
    # The client is still sound: the job can be waited on again.
    fake.checks_to_finish = 0
    assert Status.COMPLETED == sync_client.wait(job).status
    assert 0 == len(sync_client.unfinished_request_ids)


@needs_pthread_kill
def test_ctrl_c_during_a_fan_out_stops_it_and_keeps_the_ids(
    fake: FakeGateway, sync_client: RealESRGAN
) -> None:
    with pytest.raises(KeyboardInterrupt), sync_client.upscale_many(images("stuck", 3)) as run:
        interrupter = ctrl_c_once(lambda: len(fake.jobs) == 3 and fake.status_calls >= 3)
        for _ in run:
            pass
    interrupter.join()
    posts = sum(fake.posts_per_image.values())
    stuck = ids_of_kind(fake, "stuck")
    assert (3, 3) == (posts, len(stuck))
    assert stuck == set(run.unfinished_request_ids)
    assert stuck == set(sync_client.unfinished_request_ids)
    assert [] == list(run)  # a stopped run stays stopped


def test_the_iterator_is_the_documented_type(sync_client: RealESRGAN) -> None:
    run = sync_client.upscale_many([])
    assert isinstance(run, SyncUpscaleRun)
    assert [] == list(run)
    assert [] == list(run)  # an ended iterator stays ended
    run.close()
    run.close()
