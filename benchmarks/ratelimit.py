"""Benchmark 4: a throttled run: the submission rate achieved, the 429s received, nothing lost.

The emulator allows ``rate_limit`` job creations in any sliding ``window`` (the domain notes'
600 a minute, compressed) and answers 429 with a ``Retry-After`` in whole seconds beyond that.
Jobs are short (timing model at a small ``time_scale``). Side by side:

- ``library``: `upscale_many` with the defaults (one cooldown shared by every request);
- ``naive retry``: bare httpx, a task per job that on a 429 sleeps that response's
  ``Retry-After`` and tries again (no shared state), then polls every 5 s (scaled).

The first window's burst of ``rate_limit`` creations is free; after it, at most ``rate_limit``
per ``window``. So the achieved rate is (jobs - rate_limit) / (last creation - first creation),
from the ``created_at`` of every job as the emulator recorded it, and the ideal is
rate_limit / window.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import attrs
import httpx

from real_esrgan_async import AsyncRealESRGAN

from . import _bare
from ._common import (
    NA,
    Report,
    Server,
    cpu_seconds,
    emulator_processes,
    fmt,
    now,
    parse_timestamp,
    scaled_policy,
    table,
)

TITLE = "4. Rate-limited run"


@attrs.frozen
class Setup:
    """The size of one run."""

    jobs: int
    rate_limit: int
    window: float  # real seconds
    time_scale: float = 0.01
    max_connections: int = 16
    seed: int = 44
    time_limit: float = 120.0


# The domain notes' 600 creations a minute (10/s), over a 5 s window: the window is compressed,
# but not to the point where the whole-second rounding of Retry-After dominates.
FULL = Setup(jobs=200, rate_limit=50, window=5.0)
QUICK = Setup(jobs=14, rate_limit=6, window=1.0, time_limit=30.0)


@attrs.define
class Measured:
    """What one variant did."""

    name: str
    created: list[float] = attrs.Factory(list)  # epoch seconds, per job seen finished
    request_ids: set[str] = attrs.Factory(set)
    outcomes: int = 0
    errors: dict[str, int] = attrs.Factory(dict)
    client_429: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    server: dict[str, Any] = attrs.Factory(dict)


async def library(server: Server, setup: Setup, measured: Measured) -> None:
    """`upscale_many` with the library's defaults (shared 429 cooldown, Retry-After)."""
    policy, _ = scaled_policy(setup.time_scale)
    async with AsyncRealESRGAN(
        server.api_key,
        base_url=server.base_url,
        poll=policy,
        max_connections=setup.max_connections,
    ) as client:
        urls = [server.image_url(i) for i in range(setup.jobs)]
        async with client.upscale_many(urls, scale=2, max_in_flight=setup.jobs) as run:
            async for outcome in run:
                measured.outcomes += 1
                if outcome.request_id is not None:
                    measured.request_ids.add(outcome.request_id)
                if outcome.ok:
                    assert outcome.result is not None
                    assert outcome.result.created_at is not None
                    measured.created.append(outcome.result.created_at.timestamp())
                else:
                    name = type(outcome.error).__name__
                    measured.errors[name] = measured.errors.get(name, 0) + 1
        measured.client_429 = client.stats().rate_limited


async def naive_retry(server: Server, setup: Setup, measured: Measured) -> None:
    """A task per job; a 429 makes that task alone sleep its Retry-After, then try again."""
    async with _bare.http_client(setup.max_connections) as http:
        gateway = _bare.BareGateway(http, server, setup.max_connections)

        async def job(index: int) -> None:
            for _ in range(1000):  # bounded: a job gives up after 1000 refusals
                try:
                    request_id = await gateway.submit(index)
                    break
                except httpx.HTTPStatusError as exc:
                    if exc.response.status_code != 429:
                        raise
                    measured.client_429 += 1
                    await anyio.sleep(float(exc.response.headers.get("Retry-After", "1")))
            else:
                return
            measured.request_ids.add(request_id)
            body = await _bare.poll_until_terminal(
                gateway, request_id, _bare.fixed_delays(5.0 * setup.time_scale), max_polls=10_000
            )
            if body is not None:
                measured.outcomes += 1
                measured.created.append(parse_timestamp(body["created_at"]))

        async with anyio.create_task_group() as tasks:
            for index in range(setup.jobs):
                tasks.start_soon(job, index)


VARIANTS = {"library": library, "naive retry (task per job)": naive_retry}


async def _bounded(function: Any, server: Server, setup: Setup, measured: Measured) -> None:
    with anyio.move_on_after(setup.time_limit):
        await function(server, setup, measured)


def run(quick: bool = False) -> Report:
    """Run both variants against a throttling emulator; build the table."""
    setup = QUICK if quick else FULL
    rows: list[Measured] = []
    config = {
        "time_scale": setup.time_scale,
        "seed": setup.seed,
        "fetch_inputs": False,
        "error_rate": 0.0,
        "cold_start_rate": 0.0,
        "rate_limit": setup.rate_limit,
        "rate_limit_window": setup.window,
    }
    with emulator_processes(*[config] * len(VARIANTS)) as servers:
        for (name, function), server in zip(VARIANTS.items(), servers, strict=True):
            measured = Measured(name)
            start, cpu = now(), cpu_seconds()
            anyio.run(_bounded, function, server, setup, measured, backend="asyncio")
            measured.wall, measured.cpu = now() - start, cpu_seconds() - cpu
            measured.server = server.stats()
            rows.append(measured)
            print(f"  [4.] {name}: done in {measured.wall:.1f} s", flush=True)
    return _report(setup, rows)


def _achieved(setup: Setup, created: list[float]) -> float:
    if len(created) <= setup.rate_limit:
        return math.nan
    span = max(created) - min(created)
    return (len(created) - setup.rate_limit) / span if span > 0 else math.nan


def _report(setup: Setup, rows: list[Measured]) -> Report:
    allowed = setup.rate_limit / setup.window
    headers = [
        "variant",
        "jobs",
        "created",
        "outcomes",
        "lost",
        "paid twice",
        "429s received",
        "achieved submits/s",
        "fraction of allowed",
        "wall s",
    ]
    body = []
    figures: dict[str, Any] = {
        "setup": attrs.asdict(setup),
        "allowed_rate": allowed,
        "variants": {},
    }
    for r in rows:
        achieved = _achieved(setup, r.created)
        created = int(r.server.get("jobs_created", 0))
        lost = setup.jobs - len(r.created)
        twice = created - len(r.request_ids)
        body.append(
            [
                r.name,
                fmt(setup.jobs),
                fmt(created),
                fmt(r.outcomes),
                fmt(lost),
                fmt(twice),
                fmt(int(r.server.get("rate_limited", 0))),
                fmt(achieved, 1),
                f"{achieved / allowed:.0%}" if not math.isnan(achieved) else NA,
                fmt(r.wall, 1),
            ]
        )
        figures["variants"][r.name] = {
            "jobs": setup.jobs,
            "created": created,
            "outcomes": r.outcomes,
            "completed": len(r.created),
            "lost": lost,
            "paid_twice": twice,
            "rate_limited_server": int(r.server.get("rate_limited", 0)),
            "rate_limited_client": r.client_429,
            "achieved_rate": achieved,
            "fraction_of_allowed": achieved / allowed,
            "errors": r.errors,
            "wall_s": r.wall,
            "client_cpu_s": r.cpu,
        }
    lib = figures["variants"]["library"]
    notes = [
        f"{setup.jobs} jobs; the emulator allows {setup.rate_limit} creations per "
        f"{setup.window:g} s sliding window ({allowed:g}/s) and answers 429 with a whole-second "
        "Retry-After. Achieved rate: (jobs - one window's burst) / (last creation - first), "
        "from the emulator's `created_at`.",
        "lost: jobs without a COMPLETED outcome; paid twice: jobs the emulator created beyond "
        "one per request_id the caller holds. 429s: counted by the emulator.",
    ]
    notes += [f"{r.name}: errors {r.errors}" for r in rows if r.errors]
    targets: list[tuple[str, bool | None, str]] = [
        (
            ">= 90% of the allowed rate under throttling with zero lost jobs",
            lib["fraction_of_allowed"] >= 0.9 and lib["lost"] == 0 and lib["paid_twice"] == 0,
            f"library {lib['fraction_of_allowed']:.0%} of {allowed:g}/s, "
            f"{lib['rate_limited_server']} 429s, {lib['lost']} lost, "
            f"{lib['paid_twice']} paid twice",
        )
    ]
    text = table(headers, body) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    return Report(TITLE, text, figures, targets)
