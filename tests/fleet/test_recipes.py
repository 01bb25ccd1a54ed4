"""The README's fleet recipes, run as written by real processes against the emulator and Valkey.

- FastAPI under ``uvicorn --workers 4``: callbacks that reach another worker than the one
  waiting still end the request, with one status call per job and no polling.
- A crawler on several machines (three processes, asyncio and trio): one job per distinct image.
- An arq task keyed by item: the worker is SIGKILLed after its POSTs, arq redelivers the tasks
  to another worker, and the emulator counts one paid job per item.

Each test takes the README's ```python block verbatim and adds only what the prose says is the
user's to provide (environment, the emulator's http:// webhooks, test-only instrumentation).
Each uses a database of the session's Valkey server of its own, flushed first (a store is bound
to one gateway, and each test has its own emulator).
"""

from __future__ import annotations

import collections
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import redis
from valkey_server import free_port

from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator

README = (Path(__file__).parent.parent.parent / "README.md").read_text(encoding="utf-8")


def python_block(heading: str) -> str:
    """The first ```python block after the heading `heading` (a ## or ### line)."""
    section = README.split(f"\n{heading}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, heading
    return match.group(1)


def database(redis_url: str, number: int) -> str:
    """Database `number` of the session's server, emptied."""
    url = redis_url.rsplit("/", 1)[0] + f"/{number}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


def environment(gateway: RunningEmulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REAL_ESRGAN_")}
    env.update(REAL_ESRGAN_API_KEY=gateway.api_key, REAL_ESRGAN_BASE_URL=gateway.base_url)
    env.update(extra)
    return env


# FastAPI under uvicorn --workers 4 ---------------------------------------------------------------

#: Appended to the recipe in the test's copy. The emulator posts callbacks over http:// to
#: loopback (accepted only when asked), and the safety net is pushed ten minutes away so
#: that a request can end in time only through a callback. A pure ASGI wrapper records which
#: worker (pid) answered each /upscale (its job id) and received each callback (its job id).
UVICORN_TEST_ADDITIONS = """

import functools as _functools

from real_esrgan_async import PollPolicy as _PollPolicy

AsyncRealESRGAN = _functools.partial(  # type: ignore[misc]
    AsyncRealESRGAN,
    allow_insecure_webhooks=True,
    poll=_PollPolicy(safety_net_interval=600.0, safety_net_factor=1000.0),
)


def _record(kind, body):
    match = _re.search(rb'"request_id"\\s*:\\s*"([^"]+)"', body)
    if match:
        line = f"{kind} {_os.getpid()} {match.group(1).decode()}\\n"
        with open(_os.environ["RECORD_PATH"], "a") as file:
            file.write(line)


class _Recorder:
    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(("/upscale", "/hooks/")):
            return await self.inner(scope, receive, send)
        received, sent = [], []

        async def receiving():
            message = await receive()
            received.append(message.get("body", b""))
            return message

        async def sending(message):
            sent.append(message.get("body", b""))
            await send(message)

        await self.inner(scope, receiving, sending)
        if path.startswith("/hooks/"):
            _record("hook", b"".join(received))
        else:
            _record("upscale", b"".join(sent))


import os as _os
import re as _re

app = _Recorder(app)  # type: ignore[assignment]
"""


@pytest.fixture
def uvicorn_app(tmp_path: Path) -> Path:
    path = tmp_path / "fleet_app.py"
    block = python_block("### Several workers behind one URL (`uvicorn --workers 4`)")
    path.write_text(block + UVICORN_TEST_ADDITIONS, encoding="utf-8")
    return path


@pytest.fixture
def serving_uvicorn() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.send_signal(signal.SIGINT)  # uvicorn's supervisor stops its workers
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the supervisor and its workers
            process.wait()


def crossings(record: Path) -> tuple[int, int]:
    """(callbacks received by another worker than the one waiting, callbacks matched)."""
    answered: dict[str, str] = {}
    hooks: dict[str, set[str]] = collections.defaultdict(set)
    for line in record.read_text().splitlines() if record.exists() else []:
        kind, pid, request_id = line.split()
        if kind == "upscale":
            answered[request_id] = pid
        else:
            hooks[request_id].add(pid)
    crossed = sum(1 for rid, pids in hooks.items() if rid in answered and answered[rid] not in pids)
    return crossed, sum(1 for rid in hooks if rid in answered)


@pytest.mark.timeout(180)
def test_uvicorn_with_four_workers_resolves_requests_whose_callback_reached_another_worker(
    redis_url: str,
    tmp_path: Path,
    uvicorn_app: Path,
    serving_uvicorn: list[subprocess.Popen[bytes]],
) -> None:
    store_url = database(redis_url, 1)
    port = free_port()
    record = tmp_path / "record.txt"
    config = EmulatorConfig(time_scale=0.01, seed=15, error_rate=0.0, allow_http_webhooks=True)
    with running_emulator(config) as gateway:
        env = environment(
            gateway,
            PUBLIC_URL=f"http://127.0.0.1:{port}",
            REDIS_URL=store_url,
            WEBHOOK_SECRET=secrets.token_urlsafe(32),
            RECORD_PATH=str(record),
        )
        command = [
            sys.executable, "-m", "uvicorn", "fleet_app:app", "--workers", "4",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        ]  # fmt: skip
        serving_uvicorn.append(
            subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True)
        )
        # Up once all four workers' clients listen for relayed callbacks.
        probe = redis.Redis.from_url(store_url)
        deadline = time.monotonic() + 60
        while (
            dict(probe.pubsub_numsub("real-esrgan-async:callbacks")).get(
                b"real-esrgan-async:callbacks", 0
            )
            < 4
        ):
            assert serving_uvicorn[0].poll() is None, "uvicorn stopped"
            assert time.monotonic() < deadline, "the four workers did not start"
            time.sleep(0.05)
        probe.close()

        async def one(n: int) -> httpx.Response:
            # A connection per request, so that the requests spread over the workers.
            async with httpx.AsyncClient(base_url=env["PUBLIC_URL"], timeout=60) as user:
                image = gateway.sample_url("tiny.png") + f"?n={n}"
                return await user.post("/upscale", params={"image": image})

        async def round_of(start: int, size: int) -> list[httpx.Response]:
            answers: list[httpx.Response] = []

            async def keep(n: int) -> None:
                answers.append(await one(n))

            async with anyio.create_task_group() as group:
                for n in range(start, start + size):
                    group.start_soon(keep, n)
            return answers

        answers: list[httpx.Response] = []
        for attempt in range(5):  # until some callback has reached another worker
            answers += anyio.run(round_of, attempt * 8, 8)
            if crossings(record)[0] >= 1:
                break
        stats = gateway.emulator.stats()

    assert all(200 == answer.status_code for answer in answers), [a.text for a in answers]
    ids = {answer.json()["request_id"] for answer in answers}
    assert len(answers) == len(ids) == stats.jobs_created
    crossed, matched = crossings(record)
    assert crossed >= 1  # some request ended through a callback another worker received
    assert len(ids) == matched  # every job's callback was recorded
    # No polling (the safety net is ten minutes away): one confirming status call per job.
    assert stats.jobs_created == stats.status_calls


# A crawler on several machines --------------------------------------------------------------------

CRAWLER_DRIVER = """
import sys
from pathlib import Path

import anyio

from crawler import crawl

urls_path, out, redis_url, backend = sys.argv[1:]


async def image_urls():
    for line in Path(urls_path).read_text().split():
        yield line


anyio.run(crawl, image_urls(), Path(out), redis_url, 4, backend=backend)
"""


@pytest.mark.timeout(120)
def test_three_crawlers_with_overlapping_pages_pay_once_per_image(
    redis_url: str, tmp_path: Path
) -> None:
    store_url = database(redis_url, 2)
    (tmp_path / "crawler.py").write_text(
        python_block("### Recipe: a crawler on several machines"), encoding="utf-8"
    )
    (tmp_path / "driver.py").write_text(CRAWLER_DRIVER, encoding="utf-8")
    with running_emulator(EmulatorConfig(time_scale=0.01, seed=16, error_rate=0.0)) as gateway:
        base = gateway.sample_url("tiny.png")
        images = [f"{base}?img={n}" for n in range(15)]
        shares = [images[0:7], images[4:12], [*images[10:15], images[0], images[5]]]
        crawlers = []
        for n, (share, backend) in enumerate(
            zip(shares, ["asyncio", "trio", "asyncio"], strict=True)
        ):
            (tmp_path / f"urls-{n}.txt").write_text("\n".join(share), encoding="utf-8")
            (tmp_path / f"out-{n}").mkdir()
            crawlers.append(
                subprocess.Popen(
                    [sys.executable, "driver.py", f"urls-{n}.txt", f"out-{n}", store_url, backend],
                    cwd=tmp_path,
                    env=environment(gateway),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        results = [crawler.communicate(timeout=100) for crawler in crawlers]
        paid = gateway.emulator.stats().jobs_created
        jobs_per_image = collections.Counter(
            job.image
            for rid in gateway.emulator.request_ids()
            if (job := gateway.emulator.job(rid))
        )

    for crawler, (out, err) in zip(crawlers, results, strict=True):
        assert 0 == crawler.returncode, err.decode()[-2000:]
        assert b"" == out  # no image failed
    assert len(images) == paid  # 20 images crawled, 15 distinct: 15 jobs
    assert set(images) == set(jobs_per_image)
    assert 1 == max(jobs_per_image.values())
    for n, share in enumerate(shares):
        assert len(share) == len(list((tmp_path / f"out-{n}").iterdir()))  # each saved its own


# An arq task keyed by item ----------------------------------------------------------------------

ARQ_WORKER = """
import sys

from arq.worker import run_worker

import tasks

burst = sys.argv[1] == "burst"
# job_timeout: short, so that arq redelivers a dead worker's tasks 15 s after (timeout + 10 s).
run_worker(tasks.WorkerSettings, burst=burst, job_timeout=5, poll_delay=0.05)
"""

#: Appended to the recipe's copy: the emulator runs jobs 12 times faster than the gateway, so
#: the client checks that much more often too (as the README's testing section says).
FAST_POLLING = """

import functools as _functools

from real_esrgan_async import PollPolicy as _PollPolicy

AsyncRealESRGAN = _functools.partial(  # type: ignore[misc]
    AsyncRealESRGAN, poll=_PollPolicy(initial_delay=0.05, min_interval=0.02, max_interval=0.2)
)
"""

ITEMS = [f"item-{n}" for n in range(6)]


async def enqueue(store_url: str, image: str) -> list[str]:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(store_url))
    job_ids = []
    try:
        # Every item once, and two of them delivered twice (a producer's retry).
        for n, item in enumerate([*ITEMS, ITEMS[1], ITEMS[4]]):
            job = await pool.enqueue_job(
                "upscale_item", item, f"{image}?item={item}", _job_id=f"d{n}"
            )
            assert job is not None
            job_ids.append(job.job_id)
    finally:
        await pool.aclose()
    return job_ids


async def results(store_url: str, job_ids: list[str]) -> list[tuple[bool, object, int]]:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.jobs import Job

    pool = await create_pool(RedisSettings.from_dsn(store_url))
    try:
        found = []
        for job_id in job_ids:
            info = await Job(job_id, pool).result_info()
            assert info is not None, job_id
            found.append((info.success, info.result, info.job_try))
        return found
    finally:
        await pool.aclose()


def recorded_ids(store_url: str) -> dict[str, str | None]:
    """Each item key's job id as the store records it."""
    client = redis.Redis.from_url(store_url, decode_responses=True)
    try:
        return {
            key.rsplit(":", 1)[1]: json.loads(client.get(key) or "{}").get("request_id")
            for key in client.scan_iter("real-esrgan-async:key:item:*")
        }
    finally:
        client.close()


@pytest.mark.timeout(180)
def test_an_arq_task_redelivered_after_its_worker_died_pays_nothing_more(
    redis_url: str, tmp_path: Path
) -> None:
    store_url = database(redis_url, 3)
    (tmp_path / "tasks.py").write_text(
        python_block("### Recipe: a task queue that redelivers (arq)") + FAST_POLLING,
        encoding="utf-8",
    )
    (tmp_path / "worker.py").write_text(ARQ_WORKER, encoding="utf-8")
    # Jobs of about a second: the first worker is killed while it waits on them.
    config = EmulatorConfig(time_scale=0.08, seed=17, error_rate=0.0, cold_start_rate=0.0)
    with running_emulator(config) as gateway:
        env = environment(gateway, REDIS_URL=store_url)
        job_ids = anyio.run(enqueue, store_url, gateway.sample_url("tiny.png"))

        def worker(mode: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "worker.py", mode], cwd=tmp_path, env=env, stderr=subprocess.PIPE
            )

        first = worker("serve")
        # Killed once every item's POST returned and its id is recorded: after the payment,
        # before the tasks are acknowledged.
        deadline = time.monotonic() + 60
        while len([rid for rid in recorded_ids(store_url).values() if rid]) < len(ITEMS):
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first worker never submitted every item"
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.communicate()
        paid_before_redelivery = gateway.emulator.stats().jobs_created

        second = worker("burst")  # runs the queue to its end, redeliveries included
        _, err = second.communicate(timeout=120)
        assert 0 == second.returncode, err.decode()[-2000:]
        outcomes = anyio.run(results, store_url, job_ids)
        paid = gateway.emulator.stats().jobs_created
        media_by_item = {
            gateway.emulator.job(rid).image.rsplit("=", 1)[1]: rid  # type: ignore[union-attr]
            for rid in gateway.emulator.request_ids()
        }

    assert len(ITEMS) == paid_before_redelivery
    assert len(ITEMS) == paid  # paid jobs == distinct keys, redeliveries and duplicates free
    assert set(ITEMS) == set(media_by_item)
    assert all(success for success, _, _ in outcomes), outcomes
    assert any(tries >= 2 for _, _, tries in outcomes)  # some task really was redelivered
    by_item = collections.defaultdict(set)
    for item, (_, media_url, _) in zip([*ITEMS, ITEMS[1], ITEMS[4]], outcomes, strict=True):
        by_item[item].add(media_url)
    assert all(1 == len(urls) for urls in by_item.values())  # a duplicate got the same output
