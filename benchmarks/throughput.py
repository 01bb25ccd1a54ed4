"""Benchmark 2: the throughput ceiling, the library against bare requests, in one run.

The emulator completes every job instantly (``time_scale=0``, no input fetching, no random
failures), so a job costs exactly one submit POST and, once known to be done, one status GET.
Compared, over the same number of jobs:

- ``bare httpx``: two requests per job with no library logic, at the concurrency that is best
  for httpx on this machine (found by a short sweep first);
- ``library (httpx)``: `upscale_many` with ``max_connections`` set to that same concurrency;
- ``bare aiohttp``: two aiohttp requests per job, at aiohttp's best concurrency;
- ``bare httpx on aiohttp transport``: the bare httpx client again, on the ``httpx-aiohttp``
  transport (what httpx's own layer costs there);
- ``library (httpx on aiohttp transport)``: `upscale_many` with that client as ``http_client``.

The variants run in alternating rounds (A, B, C, D, A, B, ...) so that a slow spell of this
noisy machine falls on all of them alike; each figure is the total over its rounds. Reported:
jobs/s, requests/s (each job's requests), the client's CPU per request, the emulator's CPU
(when it is near a full core, the emulator is the ceiling, not the client), and the ratios.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs
import httpx

from real_esrgan_async import AsyncRealESRGAN, PollPolicy

from . import _bare
from ._common import (
    NA,
    Report,
    Server,
    cpu_seconds,
    emulator_process,
    fmt,
    process_cpu_seconds,
    table,
)

TITLE = "2. Throughput ceiling (instant jobs)"

#: The scheduler's knobs for instant jobs: check as soon as the poller wakes, no budget. The
#: default budget (50 checks/s) and 0.25 s floor are limits by design, not overhead.
INSTANT_POLICY = PollPolicy(
    initial_delay=0.001, min_interval=0.0, max_checks_per_second=None, target_delay=None
)


#: The target of issue 14: the library adds at most ~10% to the transport's own cost per
#: request, i.e. keeps >= 90% of the bare request rate on the same transport.
MIN_RATIO = 0.9


@attrs.frozen
class Setup:
    """The size of one run."""

    jobs: int
    rounds: int
    sweep_jobs: int
    httpx_concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    aiohttp_concurrency: tuple[int, ...] = (4, 16, 64)
    max_in_flight: int = 512
    seed: int = 11


FULL = Setup(jobs=10_000, rounds=5, sweep_jobs=600)
QUICK = Setup(jobs=60, rounds=2, sweep_jobs=20, httpx_concurrency=(2, 4), aiohttp_concurrency=(4,))


@attrs.define
class Totals:
    """Sums over a variant's rounds."""

    jobs: int = 0
    requests: int = 0
    completed: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    server_cpu: float = 0.0
    status_calls: int = 0
    concurrency: int = 0
    available: bool = True
    note: str = ""

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds else math.nan

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else math.nan

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu / self.requests * 1e6 if self.requests else math.nan

    @property
    def server_load(self) -> float:
        return self.server_cpu / self.seconds if self.seconds else math.nan


# -- one batch of jobs, per variant ----------------------------------------------------------
# Each returns (requests made, jobs COMPLETED).

Batch = Callable[[Server, int, int, int], Awaitable[tuple[int, int]]]


async def _bare_batch(
    http: httpx.AsyncClient, server: Server, first: int, count: int, concurrency: int
) -> tuple[int, int]:
    gateway = _bare.BareGateway(http, server, concurrency)
    indices = iter(range(first, first + count))
    completed = 0

    async def worker() -> None:
        nonlocal completed
        for index in indices:
            request_id = await gateway.submit(index)
            for _ in range(1000):  # instant jobs: the first answer is terminal
                body = await gateway.status(request_id)
                if body["status"] in _bare.TERMINAL:
                    completed += body["status"] == "COMPLETED"
                    break

    async with anyio.create_task_group() as tasks:
        for _ in range(concurrency):
            tasks.start_soon(worker)
    return count + gateway.status_calls, completed


async def bare_httpx(server: Server, first: int, count: int, concurrency: int) -> tuple[int, int]:
    """Two bare httpx requests per job, ``concurrency`` workers on one pool of that size."""
    async with _bare.http_client(concurrency) as http:
        return await _bare_batch(http, server, first, count, concurrency)


async def bare_aiohttp(server: Server, first: int, count: int, concurrency: int) -> tuple[int, int]:
    """Two bare aiohttp requests per job, ``concurrency`` workers."""
    import aiohttp  # noqa: PLC0415 - optional: asyncio-only extra

    headers = server.headers()
    submit_url = server.base_url + "/real-esrgan/v1/real-esrgan/generate"
    status_prefix = server.base_url + "/v2/requests/status/"
    indices = iter(range(first, first + count))
    counts = [0, 0]  # requests, completed

    async def worker(session: aiohttp.ClientSession) -> None:
        for index in indices:
            body = {"image": server.image_url(index), "scale": 2}
            async with session.post(submit_url, headers=headers, json=body) as response:
                response.raise_for_status()
                request_id = (await response.json())["request_id"]
            counts[0] += 1
            for _ in range(1000):
                async with session.get(status_prefix + request_id, headers=headers) as response:
                    response.raise_for_status()
                    state = await response.json()
                counts[0] += 1
                if state["status"] in _bare.TERMINAL:
                    counts[1] += state["status"] == "COMPLETED"
                    break

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        anyio.create_task_group() as tasks,
    ):
        for _ in range(concurrency):
            tasks.start_soon(worker, session)
    return counts[0], counts[1]


async def _library_batch(
    server: Server,
    first: int,
    count: int,
    concurrency: int,
    http: httpx.AsyncClient | None,
    max_in_flight: int,
) -> tuple[int, int]:
    completed = 0
    async with AsyncRealESRGAN(
        server.api_key,
        base_url=server.base_url,
        max_connections=concurrency,
        poll=INSTANT_POLICY,
        http_client=http,
    ) as client:
        urls = (server.image_url(i) for i in range(first, first + count))
        async with client.upscale_many(urls, scale=2, max_in_flight=max_in_flight) as run:
            async for outcome in run:
                completed += outcome.ok
        stats = client.stats()
    return stats.submitted + stats.status_calls, completed


def library_httpx(max_in_flight: int) -> Batch:
    """`upscale_many` on the library's own httpx client."""

    async def batch(server: Server, first: int, count: int, concurrency: int) -> tuple[int, int]:
        return await _library_batch(server, first, count, concurrency, None, max_in_flight)

    return batch


def aiohttp_transport_client(concurrency: int) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` on the ``httpx-aiohttp`` transport (asyncio only)."""
    from httpx_aiohttp import AiohttpTransport  # noqa: PLC0415 - optional: asyncio-only extra

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits, trust_env=False), timeout=60.0
    )


async def bare_httpx_aiohttp(
    server: Server, first: int, count: int, concurrency: int
) -> tuple[int, int]:
    """Bare httpx requests (no library logic) on the aiohttp transport: the library's ceiling
    there, since the library speaks through an `httpx.AsyncClient` whatever its transport."""
    async with aiohttp_transport_client(concurrency) as http:
        return await _bare_batch(http, server, first, count, concurrency)


def library_aiohttp(max_in_flight: int) -> Batch:
    """`upscale_many` with ``http_client=`` an httpx client on the aiohttp transport."""

    async def batch(server: Server, first: int, count: int, concurrency: int) -> tuple[int, int]:
        async with aiohttp_transport_client(concurrency) as http:
            return await _library_batch(server, first, count, concurrency, http, max_in_flight)

    return batch


def _aiohttp_gap() -> str | None:
    for module in ("aiohttp", "httpx_aiohttp"):
        if importlib.util.find_spec(module) is None:
            return f"not installed ({module}): pip install httpx-aiohttp"
    return None


# -- running --------------------------------------------------------------------------------


class _Jobs:
    """Hands out distinct input indices, so that no two batches share an image URL."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, count: int) -> int:
        first, self.next = self.next, self.next + count
        return first


def _measure(
    server: Server, batch: Batch, jobs: _Jobs, count: int, concurrency: int, totals: Totals
) -> None:
    first = jobs.take(count)
    server_cpu, cpu, start = process_cpu_seconds(server.pid), cpu_seconds(), time.perf_counter()
    requests, completed = anyio.run(batch, server, first, count, concurrency, backend="asyncio")
    totals.seconds += time.perf_counter() - start
    totals.cpu += cpu_seconds() - cpu
    totals.server_cpu += process_cpu_seconds(server.pid) - server_cpu
    totals.jobs += count
    totals.requests += requests
    totals.completed += completed
    totals.concurrency = concurrency


def _sweep(
    server: Server, batch: Batch, jobs: _Jobs, setup: Setup, options: tuple[int, ...]
) -> tuple[int, dict[int, float]]:
    """The concurrency with the most requests/s, and each one's rate."""
    warm = max(4, setup.sweep_jobs // 10)
    anyio.run(batch, server, jobs.take(warm), warm, options[0], backend="asyncio")
    rates: dict[int, float] = {}
    for concurrency in options:
        totals = Totals()
        _measure(server, batch, jobs, setup.sweep_jobs, concurrency, totals)
        rates[concurrency] = totals.requests_per_s
    return max(rates, key=lambda c: rates[c]), rates


def run(quick: bool = False) -> Report:
    """Sweep, then run the variants in alternating rounds; build the table."""
    setup = QUICK if quick else FULL
    aiohttp_gap = _aiohttp_gap()
    jobs = _Jobs()
    with emulator_process(
        time_scale=0.0, seed=setup.seed, fetch_inputs=False, error_rate=0.0, cold_start_rate=0.0
    ) as server:
        best_httpx, httpx_rates = _sweep(server, bare_httpx, jobs, setup, setup.httpx_concurrency)
        best_aiohttp, aiohttp_rates = 0, dict[int, float]()
        if aiohttp_gap is None:
            best_aiohttp, aiohttp_rates = _sweep(
                server, bare_aiohttp, jobs, setup, setup.aiohttp_concurrency
            )
        print(
            f"  [2.] sweep: httpx {httpx_rates} -> {best_httpx}; "
            f"aiohttp {aiohttp_rates} -> {best_aiohttp}",
            flush=True,
        )
        variants: list[tuple[str, Batch, int, str | None]] = [
            ("bare httpx", bare_httpx, best_httpx, None),
            ("library (httpx)", library_httpx(setup.max_in_flight), best_httpx, None),
            ("bare aiohttp", bare_aiohttp, best_aiohttp, aiohttp_gap),
            ("bare httpx on aiohttp transport", bare_httpx_aiohttp, best_aiohttp, aiohttp_gap),
            (
                "library (httpx on aiohttp transport)",
                library_aiohttp(setup.max_in_flight),
                best_aiohttp,
                aiohttp_gap,
            ),
        ]
        totals = {
            name: Totals(available=gap is None, note=gap or "") for name, _, _, gap in variants
        }
        per_round = setup.jobs // setup.rounds
        # A warm-up batch per variant (imports, first connections), not counted.
        for _, batch, concurrency, gap in variants:
            if gap is None:
                anyio.run(batch, server, jobs.take(20), 20, concurrency, backend="asyncio")
        for round_ in range(setup.rounds):
            for name, batch, concurrency, gap in variants:
                if gap is None:
                    _measure(server, batch, jobs, per_round, concurrency, totals[name])
            print(f"  [2.] round {round_ + 1}/{setup.rounds} done", flush=True)
        emulator = server.stats()
    return _report(setup, totals, httpx_rates, aiohttp_rates, emulator)


def _report(
    setup: Setup,
    totals: dict[str, Totals],
    httpx_rates: dict[int, float],
    aiohttp_rates: dict[int, float],
    emulator: dict[str, Any],
) -> Report:
    bare = totals["bare httpx"]
    bare_aio = totals["bare aiohttp"]
    bare_hx_aio = totals["bare httpx on aiohttp transport"]
    headers = [
        "variant",
        "concurrency",
        "jobs",
        "completed",
        "requests",
        "jobs/s",
        "requests/s",
        "client CPU µs/request",
        "emulator CPU load",
        "vs bare httpx",
        "vs bare aiohttp",
        "vs bare httpx on aiohttp",
    ]
    rows = []
    figures: dict[str, Any] = {
        "setup": attrs.asdict(setup),
        "sweep_httpx": httpx_rates,
        "sweep_aiohttp": aiohttp_rates,
        "variants": {},
        "emulator_jobs_created": emulator.get("jobs_created"),
        "emulator_status_calls": emulator.get("status_calls"),
    }
    for name, t in totals.items():
        if not t.available:
            rows.append([name, *[NA] * 11])
            figures["variants"][name] = {"available": False, "note": t.note}
            continue
        vs_bare = t.requests_per_s / bare.requests_per_s
        vs_aio = t.requests_per_s / bare_aio.requests_per_s if bare_aio.available else math.nan
        vs_hx_aio = (
            t.requests_per_s / bare_hx_aio.requests_per_s if bare_hx_aio.available else math.nan
        )
        rows.append(
            [
                name,
                str(t.concurrency),
                fmt(t.jobs),
                fmt(t.completed),
                fmt(t.requests),
                fmt(t.jobs_per_s, 0),
                fmt(t.requests_per_s, 0),
                fmt(t.cpu_us_per_request, 0),
                f"{t.server_load:.0%}",
                fmt(vs_bare) + "x",
                fmt(vs_aio) + "x",
                fmt(vs_hx_aio) + "x",
            ]
        )
        figures["variants"][name] = {
            "available": True,
            "concurrency": t.concurrency,
            "jobs": t.jobs,
            "completed": t.completed,
            "lost": t.jobs - t.completed,
            "requests": t.requests,
            "jobs_per_s": t.jobs_per_s,
            "requests_per_s": t.requests_per_s,
            "cpu_us_per_request": t.cpu_us_per_request,
            "emulator_load": t.server_load,
            "vs_bare_httpx": vs_bare,
            "vs_bare_aiohttp": vs_aio,
            "vs_bare_httpx_on_aiohttp": vs_hx_aio,
        }
    lib = figures["variants"]["library (httpx)"]
    sweep = ", ".join(f"{c}: {r:,.0f}" for c, r in httpx_rates.items())
    sweep_aio = ", ".join(f"{c}: {r:,.0f}" for c, r in aiohttp_rates.items())
    notes = [
        f"{setup.jobs:,} instant jobs per variant, in {setup.rounds} alternating rounds; "
        "requests/s counts each job's submit and status requests.",
        f"Concurrency sweep, bare requests/s ({setup.sweep_jobs} jobs each): httpx {sweep}; "
        f"aiohttp {sweep_aio or 'not run'}. The library gets the winning concurrency as "
        f"`max_connections` (max_in_flight={setup.max_in_flight}).",
        "Library poll policy for instant jobs: `PollPolicy(initial_delay=0.001, "
        "min_interval=0, max_checks_per_second=None)`; with the defaults the ceiling is the "
        "status budget (50 checks/s) and the 0.25 s floor between a submit and its first check, "
        "by design.",
        "Emulator CPU load: the emulator process's CPU time over the variant's wall time; near "
        "100% means the emulator, not the client, set the pace.",
    ]
    targets: list[tuple[str, bool | None, str]] = [
        (
            f">= {MIN_RATIO:.0%} of the bare-httpx request rate",
            lib["vs_bare_httpx"] >= MIN_RATIO,
            f"library (httpx) {lib['requests_per_s']:,.0f} req/s = "
            f"{lib['vs_bare_httpx']:.0%} of bare httpx {bare.requests_per_s:,.0f} req/s",
        )
    ]
    aio = figures["variants"].get("library (httpx on aiohttp transport)", {})
    if aio.get("available"):
        targets.append(
            (
                f">= {MIN_RATIO:.0%} of bare httpx on the same aiohttp transport",
                aio["vs_bare_httpx_on_aiohttp"] >= MIN_RATIO,
                f"{aio['requests_per_s']:,.0f} req/s = "
                f"{aio['vs_bare_httpx_on_aiohttp']:.0%} of bare httpx on the same transport "
                f"({aio['vs_bare_httpx']:.2f}x bare httpx, {aio['vs_bare_aiohttp']:.0%} of bare "
                "aiohttp)",
            )
        )
    text = table(headers, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    return Report(TITLE, text, figures, targets)
