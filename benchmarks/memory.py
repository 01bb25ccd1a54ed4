"""Benchmark 3: memory and CPU with 100,000 jobs in flight at once, against a task per job.

Each variant runs in a fresh child process (so that one variant's freed memory does not hide
the next one's), against a fresh emulator with the same seed:

- ``library``: `upscale_many` over 100,000 URLs with ``max_in_flight=100_000``: every job is
  submitted as fast as the client can, and waits in the one poll scheduler;
- ``task per job``: the minimal honest baseline, one asyncio task per job that submits, then
  sleeps and polls every 5 s (scaled);
- ``library at N``: the library again with 1,000 and 10,000 jobs, so that the CPU per job
  (and the memory per job) can be compared from 1,000 to 100,000 in flight.

The jobs follow the timing model without cold starts, slowed down (``time_scale`` 200) so
that none finishes, and no status call of either variant falls, before the run ends
``horizon`` seconds after the last submission: both variants do the same work (100,000
submits, then holding 100,000 jobs), which makes their CPU comparable. The cost of a status
call is benchmark 2's. Jobs still running at the end are not lost (their ids are known) but
are not waited for. Measured in the child: resident memory (RSS) sampled every 20 ms next to
the number of jobs in flight; per in-flight job = (RSS at the peak of jobs in flight - RSS
before the run) / that peak; client CPU time (user + system) from after a warm-up until all
are submitted, and then while holding.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import attrs

from real_esrgan_async import AsyncRealESRGAN

from . import _bare
from ._common import (
    Report,
    Server,
    cpu_seconds,
    emulator_processes,
    fmt,
    now,
    rss_bytes,
    scaled_policy,
    table,
)
from .throughput import INSTANT_POLICY

TITLE = "3. Memory and CPU at scale"
_REPO = Path(__file__).resolve().parents[1]
SAMPLE_EVERY = 0.02


@attrs.frozen
class Setup:
    """The size of one run."""

    jobs: int
    time_scale: float
    horizon: float  # real seconds after the last submission
    max_connections: int = 4  # as in benchmark 1: submitting many jobs goes faster
    seed: int = 33
    child_timeout: float = 300.0
    #: Smaller runs of the library alone: is the CPU per job flat up to `jobs`?
    scaling: tuple[int, ...] = ()


FULL = Setup(
    jobs=100_000, time_scale=200.0, horizon=10.0, child_timeout=1200.0, scaling=(1_000, 10_000)
)
QUICK = Setup(jobs=100, time_scale=10.0, horizon=0.3, child_timeout=60.0, scaling=(30,))

#: The memory target of issue 14: at most 1 KB per in-flight job at 100,000 in flight.
MAX_BYTES_PER_JOB = 1024
#: "Flat" CPU per job: submitting at the largest size costs at most this much more per job
#: than at the smallest.
MAX_CPU_GROWTH = 1.2


@attrs.define
class Probe:
    """What the child measures."""

    peak_in_flight: int = 0
    rss_base: int = 0
    rss_at_peak: int = 0
    traced_base: int = 0
    traced_at_peak: int = 0
    submitted: int = 0
    finished: int = 0
    status_calls: int = 0
    cpu: float = 0.0
    cpu_submitted: float = 0.0  # CPU from the start until every job was submitted
    submit_seconds: float = 0.0
    wall: float = 0.0

    def sample(self, in_flight: int, tracing: bool) -> None:
        rss = rss_bytes()
        if in_flight > self.peak_in_flight or (
            in_flight == self.peak_in_flight and rss > self.rss_at_peak
        ):
            self.peak_in_flight = in_flight
            self.rss_at_peak = rss
            if tracing:
                self.traced_at_peak = tracemalloc.get_traced_memory()[0]


# -- the child: one variant -----------------------------------------------------------------


def _baseline_state(probe: Probe, tracing: bool) -> float:
    gc.collect()
    probe.rss_base = rss_bytes()
    if tracing:
        tracemalloc.start()
        probe.traced_base = tracemalloc.get_traced_memory()[0]
    return cpu_seconds()


async def _sampler(probe: Probe, in_flight: Any, tracing: bool) -> None:
    while True:
        probe.sample(in_flight(), tracing)
        await anyio.sleep(SAMPLE_EVERY)


async def library_child(config: dict[str, Any], probe: Probe) -> None:
    """`upscale_many` with every job in flight at once."""
    setup = attrs.evolve(Setup(**config["setup"]), jobs=config["jobs"])
    server = Server(**config["server"])
    warm = Server(**config["warm"])
    tracing = config["tracemalloc"]
    # Warm-up against an instant emulator: imports, first use of every code path.
    async with AsyncRealESRGAN(
        warm.api_key,
        base_url=warm.base_url,
        poll=INSTANT_POLICY,
        max_connections=setup.max_connections,
    ) as client:
        async for _ in client.upscale_many([warm.image_url(i) for i in range(50)], scale=2):
            pass
    policy, _ = scaled_policy(setup.time_scale)
    client = AsyncRealESRGAN(
        server.api_key,
        base_url=server.base_url,
        poll=policy,
        max_connections=setup.max_connections,
    )
    urls = [server.image_url(i) for i in range(setup.jobs)]
    cpu = _baseline_state(probe, tracing)
    start = now()
    async with client, anyio.create_task_group() as tasks:
        tasks.start_soon(_sampler, probe, lambda: client.stats().in_flight, tracing)
        with anyio.CancelScope() as scope:
            tasks.start_soon(
                _stop_after_submitted, probe, scope, setup, start, lambda: client.stats().submitted
            )
            async with client.upscale_many(urls, scale=2, max_in_flight=setup.jobs) as run:
                async for _ in run:
                    probe.finished += 1
        stats = client.stats()
        probe.submitted, probe.status_calls = stats.submitted, stats.status_calls
        tasks.cancel_scope.cancel()
    probe.cpu, probe.wall = cpu_seconds() - cpu, now() - start
    probe.cpu_submitted = probe.cpu_submitted - cpu if probe.cpu_submitted else math.nan


async def _stop_after_submitted(
    probe: Probe, scope: anyio.CancelScope, setup: Setup, start: float, submitted: Any
) -> None:
    """Once every job is submitted, give the run ``horizon`` more seconds."""
    # A counter, not an event: neither variant announces "all submitted", and the sampler
    # wakes at this pace anyway.
    while submitted() < setup.jobs:  # noqa: ASYNC110
        await anyio.sleep(SAMPLE_EVERY)
    probe.submit_seconds = now() - start
    probe.cpu_submitted = cpu_seconds()
    scope.deadline = anyio.current_time() + setup.horizon


async def tasks_child(config: dict[str, Any], probe: Probe) -> None:
    """One task per job: submit, then sleep 5 s (scaled) and poll, until terminal."""
    setup = attrs.evolve(Setup(**config["setup"]), jobs=config["jobs"])
    server = Server(**config["server"])
    warm = Server(**config["warm"])
    tracing = config["tracemalloc"]
    counts = {"submitted": 0, "in_flight": 0}

    def submitted(_: str) -> None:
        counts["submitted"] += 1
        counts["in_flight"] += 1

    def done(index: int, request_id: str, body: dict[str, Any] | None, seen: float) -> None:
        counts["in_flight"] -= 1
        probe.finished += body is not None

    async def fleet(gateway: _bare.BareGateway, jobs: int, interval: float) -> None:
        async with anyio.create_task_group() as jobs_group:
            for index in range(jobs):
                jobs_group.start_soon(
                    functools.partial(
                        _bare.task_per_job,
                        gateway,
                        index,
                        _bare.fixed_delays(interval),
                        max_polls=10_000,
                        on_submitted=submitted,
                        on_done=done,
                    )
                )

    async with _bare.http_client(setup.max_connections) as http:
        await fleet(_bare.BareGateway(http, warm, setup.max_connections), 50, 0.001)
    counts.update(submitted=0, in_flight=0)
    probe.finished = 0
    cpu = _baseline_state(probe, tracing)
    start = now()
    async with _bare.http_client(setup.max_connections) as http:
        gateway = _bare.BareGateway(http, server, setup.max_connections)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_sampler, probe, lambda: counts["in_flight"], tracing)
            with anyio.CancelScope() as scope:
                tasks.start_soon(
                    _stop_after_submitted, probe, scope, setup, start, lambda: counts["submitted"]
                )
                await fleet(gateway, setup.jobs, 5.0 * setup.time_scale)
            tasks.cancel_scope.cancel()
        probe.submitted, probe.status_calls = counts["submitted"], gateway.status_calls
    probe.cpu, probe.wall = cpu_seconds() - cpu, now() - start
    probe.cpu_submitted = probe.cpu_submitted - cpu if probe.cpu_submitted else math.nan


CHILDREN = {"library": library_child, "task per job": tasks_child}


def _child(config_json: str) -> None:
    config = json.loads(config_json)
    config["setup"]["scaling"] = tuple(config["setup"]["scaling"])
    probe = Probe()
    anyio.run(CHILDREN[config["child"]], config, probe, backend="asyncio")
    if tracemalloc.is_tracing():
        tracemalloc.stop()
    print(json.dumps(attrs.asdict(probe)), flush=True)


# -- the parent -----------------------------------------------------------------------------


def _run_child(
    variant: str, child: str, jobs: int, setup: Setup, server: Server, warm: Server, tracing: bool
) -> dict[str, Any]:
    config = {
        "child": child,
        "jobs": jobs,
        "setup": attrs.asdict(setup),
        "server": attrs.asdict(server),
        "warm": attrs.asdict(warm),
        "tracemalloc": tracing,
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", "--child", json.dumps(config)],
        cwd=_REPO,
        capture_output=True,
        text=True,
        timeout=setup.child_timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {variant!r} child failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["emulator"] = server.stats()
    result["jobs"] = jobs
    return result


def run(quick: bool = False, *, tracing: bool = False) -> Report:
    """Run both variants (each in its own process) and build the table."""
    setup = QUICK if quick else FULL
    results: dict[str, dict[str, Any]] = {}
    warm_config = {
        "time_scale": 0.0,
        "seed": 1,
        "fetch_inputs": False,
        "error_rate": 0.0,
        "cold_start_rate": 0.0,
    }
    # A fresh emulator per variant, with the same seed: the same job durations.
    config = {
        "time_scale": setup.time_scale,
        "seed": setup.seed,
        "fetch_inputs": False,
        "cold_start_rate": 0.0,
    }
    runs = [(name, name, setup.jobs) for name in CHILDREN] + [
        (f"library at {jobs:,}", "library", jobs) for jobs in setup.scaling
    ]
    with emulator_processes(warm_config, *[config] * len(runs)) as (warm, *servers):
        for (variant, child, jobs), server in zip(runs, servers, strict=True):
            results[variant] = _run_child(variant, child, jobs, setup, server, warm, tracing)
            print(f"  [3.] {variant}: done in {results[variant]['wall']:.1f} s", flush=True)
    return _report(setup, results, tracing)


def _per_job(result: dict[str, Any], key: str) -> float:
    peak = result["peak_in_flight"]
    return (result[f"{key}_at_peak"] - result[f"{key}_base"]) / peak if peak else math.nan


def _holding_us(result: dict[str, Any], jobs: int) -> float:
    """CPU per in-flight job per second of holding, in microseconds."""
    seconds = result["wall"] - result["submit_seconds"]
    cpu = result["cpu"] - result["cpu_submitted"]
    return cpu / (jobs * seconds) * 1e6 if seconds > 0 else math.nan


def _report(setup: Setup, results: dict[str, dict[str, Any]], tracing: bool) -> Report:
    base = results["task per job"]
    headers = [
        "variant",
        "jobs",
        "submitted",
        "peak in flight",
        "RSS before MB",
        "RSS at peak MB",
        "bytes/in-flight job",
        "CPU ms/job to submit",
        "CPU µs/job/s holding",
        "status calls",
        "memory vs task per job",
        "submit CPU vs task per job",
    ]
    if tracing:
        headers.insert(7, "traced bytes/job")
    rows = []
    figures: dict[str, Any] = {"setup": attrs.asdict(setup), "variants": {}, "scaling": {}}
    base_mem = _per_job(base, "rss")
    base_submit = base["cpu_submitted"] / base["jobs"]
    for name, r in results.items():
        jobs = r["jobs"]
        per_job = _per_job(r, "rss")
        submit_ms = r["cpu_submitted"] / jobs * 1000
        holding = _holding_us(r, jobs)
        emulator = r["emulator"]
        row = [
            name,
            fmt(jobs),
            fmt(r["submitted"]),
            fmt(r["peak_in_flight"]),
            fmt(r["rss_base"] / 1e6, 1),
            fmt(r["rss_at_peak"] / 1e6, 1),
            fmt(per_job, 0),
            fmt(submit_ms, 2),
            fmt(holding, 2),
            fmt(emulator["status_calls"]),
            fmt(per_job / base_mem) + "x",
            fmt(r["cpu_submitted"] / jobs / base_submit) + "x",
        ]
        if tracing:
            row.insert(7, fmt(_per_job(r, "traced"), 0))
        rows.append(row)
        # The smaller library runs go apart: the variants are the two compared at `jobs`.
        group = "variants" if name in CHILDREN else "scaling"
        figures[group][name] = {
            **{k: v for k, v in r.items() if k != "emulator"},
            "bytes_per_in_flight_job": per_job,
            "traced_bytes_per_job": _per_job(r, "traced") if tracing else None,
            "cpu_ms_per_job_to_submit": submit_ms,
            "cpu_us_per_job_second_holding": holding,
            "emulator_jobs_created": emulator["jobs_created"],
            "emulator_status_calls": emulator["status_calls"],
            "lost": jobs - r["submitted"],
        }
    lib = figures["variants"]["library"]
    notes = [
        f"{setup.jobs:,} jobs, time_scale {setup.time_scale:g} without cold starts, every run "
        f"on {setup.max_connections} connections. Submitting took "
        f"{lib['submit_seconds']:.1f} s for the library, {base['submit_seconds']:.1f} s for the "
        f"baseline; each run then held its jobs {setup.horizon:g} s and stopped. Jobs still "
        "running then are known by id, not lost.",
        "Policies: the library's default `PollPolicy` and the baseline's 5 s, both scaled: "
        "neither makes a status call before the end, so both do the same work. The cost of a "
        "status call is benchmark 2's.",
        "CPU: the client process's user + system time after a warm-up: until every job was "
        "submitted (per job), then while holding them (per job and second).",
    ]
    if figures["scaling"]:
        notes.append(
            "`library at N`: the same library run with N jobs, to compare the CPU per job to "
            "submit (and the memory per job) across sizes. At small N the RSS per job is "
            "coarse (memory grows by whole pages and arenas)."
        )
    targets: list[tuple[str, bool | None, str]] = [
        (
            f"<= {MAX_BYTES_PER_JOB:,} B of memory per in-flight job at {setup.jobs:,}",
            lib["bytes_per_in_flight_job"] <= MAX_BYTES_PER_JOB,
            f"library {lib['bytes_per_in_flight_job']:,.0f} B (RSS delta at the peak of "
            f"{lib['peak_in_flight']:,} jobs in flight)",
        )
    ]
    if figures["scaling"]:
        smallest = min(figures["scaling"].values(), key=lambda v: v["jobs"])
        growth = lib["cpu_ms_per_job_to_submit"] / smallest["cpu_ms_per_job_to_submit"]
        targets.append(
            (
                f"CPU per job flat from {smallest['jobs']:,} to {setup.jobs:,} jobs "
                f"(at most {MAX_CPU_GROWTH:g}x)",
                growth <= MAX_CPU_GROWTH,
                f"{smallest['cpu_ms_per_job_to_submit']:.2f} ms/job to submit at "
                f"{smallest['jobs']:,}, {lib['cpu_ms_per_job_to_submit']:.2f} at "
                f"{setup.jobs:,} ({growth:.2f}x)",
            )
        )
    text = table(headers, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    return Report(TITLE, text, figures, targets)


def main() -> None:
    """``python -m benchmarks.memory --child CONFIG``: one variant, in this process."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", required=True, help="the variant's JSON config")
    _child(parser.parse_args().child)


if __name__ == "__main__":
    main()
