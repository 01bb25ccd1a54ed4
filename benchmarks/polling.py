"""Benchmark 1: status calls per job and detection delay, side by side in one run.

First on the calibrated timing model with a simulated clock (`polling_model`: the real
scheduler, every schedule side by side, the best schedules found, a Pareto chart), then
against the emulator over loopback sockets:

The emulator follows the domain notes' timing model (queue wait, processing, 3% cold starts,
1.5% transient ERRORs), time-compressed by ``time_scale``. Jobs arrive at a steady pace (a
crawler feeding a fan-out), the same pace and the same seeded job durations for every variant:

- ``library``: `upscale_many` with the default `PollPolicy`, every duration scaled;
- ``fixed 5 s``: the provider's advice, one task per job polling every 5 s (scaled);
- ``exp. backoff``: one task per job, first poll after 5 s, then x1.5, capped at 45 s (the
  defaults Google's client generators use for long-running operations);
- ``webhooks``: the library with a `WebhookReceiver` served on loopback (callbacks confirmed by
  one status call, the library's default; and unconfirmed), when the library has one.

Reported: status calls per finished job (counted by the emulator) and the delay from a job's
completion (``completed_at`` in its status body, the emulator's clock) to the moment the caller
has the outcome, in unscaled seconds.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import math
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import attrs

import real_esrgan_async
from real_esrgan_async import AsyncRealESRGAN

from . import _bare, polling_model
from ._common import (
    NA,
    RESULTS_PATH,
    Report,
    Server,
    cpu_seconds,
    emulator_processes,
    fmt,
    now,
    parse_timestamp,
    percentile,
    process_cpu_seconds,
    scaled_policy,
    table,
)
from ._serve import loopback_listener, serving

TITLE = "1. Status calls per job and detection delay"


@attrs.frozen
class Setup:
    """The size of one run."""

    jobs: int
    time_scale: float
    arrival_rate: float  # jobs per unscaled second
    # The same for every variant. Not the library's default of 16: with httpx on this kind of
    # machine, each request costs ~40 µs more per idle pooled connection (httpcore checks every
    # idle connection's socket on each request), which at 16 saturates the client's core and
    # inflates every variant's delays alike (see benchmark 2's concurrency sweep).
    max_connections: int = 4
    seed: int = 20260522
    # The smoke run turns cold starts off: one 90 s cold start would be most of its time.
    cold_start_rate: float = 0.03


FULL = Setup(jobs=1000, time_scale=0.1, arrival_rate=10.0)
QUICK = Setup(jobs=40, time_scale=0.05, arrival_rate=40.0, cold_start_rate=0.0)


@attrs.define
class Measured:
    """What one variant did."""

    name: str
    available: bool = True
    note: str = ""
    outcomes: int = 0  # jobs whose outcome reached the caller
    completed: int = 0  # of which COMPLETED
    delays: list[float] = attrs.Factory(list)  # unscaled seconds, COMPLETED jobs
    durations: list[float] = attrs.Factory(list)  # created -> completed, unscaled seconds
    cpu: float = 0.0
    server_cpu: float = 0.0
    wall: float = 0.0
    server: dict[str, Any] = attrs.Factory(dict)  # the emulator's counters at the end

    @property
    def created(self) -> int:
        return int(self.server.get("jobs_created", 0))

    @property
    def finished(self) -> int:
        s = self.server
        return int(s.get("jobs_completed", 0) + s.get("jobs_failed", 0) + s.get("jobs_errored", 0))

    @property
    def status_calls(self) -> int:
        return int(self.server.get("status_calls", 0))

    @property
    def calls_per_job(self) -> float:
        return self.status_calls / self.finished if self.finished else math.nan


def _record_state(
    measured: Measured, scale: float, completed_at: str | None, created_at: str | None, seen: float
) -> None:
    if completed_at is None:
        return
    done = parse_timestamp(completed_at)
    measured.delays.append(max(0.0, seen - done) / scale)
    if created_at is not None:
        measured.durations.append((done - parse_timestamp(created_at)) / scale)


async def _paced_urls(server: Server, setup: Setup) -> AsyncIterator[str]:
    interval = setup.time_scale / setup.arrival_rate
    start = anyio.current_time()
    for index in range(setup.jobs):
        delay = start + index * interval - anyio.current_time()
        if delay > 0:
            await anyio.sleep(delay)
        yield server.image_url(index)


# -- the library ----------------------------------------------------------------------------


def _scaled(setup: Setup) -> tuple[Any, list[str]]:
    """The default policy on the emulator's compressed clock (its target and priors too)."""
    return scaled_policy(setup.time_scale)


async def _library(server: Server, setup: Setup, measured: Measured, **client_options: Any) -> None:
    policy, unknown = _scaled(setup)
    if unknown:
        measured.note = f"PollPolicy knobs left unscaled: {', '.join(unknown)}"
    async with AsyncRealESRGAN(
        server.api_key,
        base_url=server.base_url,
        poll=policy,
        max_connections=setup.max_connections,
        **client_options,
    ) as client:
        run = client.upscale_many(_paced_urls(server, setup), scale=2, max_in_flight=setup.jobs)
        async with run:
            async for outcome in run:
                seen = now()
                measured.outcomes += 1
                if outcome.ok:
                    assert outcome.result is not None
                    measured.completed += 1
                    result = outcome.result
                    _record_state(
                        measured,
                        setup.time_scale,
                        _iso(result.completed_at),
                        _iso(result.created_at),
                        seen,
                    )


def _iso(moment: Any) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "")


async def library(server: Server, setup: Setup, measured: Measured) -> None:
    """`upscale_many` with the default poll scheduler."""
    await _library(server, setup, measured)


def _webhooks_available() -> str | None:
    """None when the library can take webhooks over loopback http; else why not."""
    if not hasattr(real_esrgan_async, "WebhookReceiver"):
        return "real_esrgan_async.WebhookReceiver does not exist yet"
    params = inspect.signature(AsyncRealESRGAN).parameters
    for name in ("allow_insecure_webhooks", "webhook_confirm"):
        if name not in params:
            return f"AsyncRealESRGAN has no {name}= option yet"
    if importlib.util.find_spec("uvicorn") is None:
        return "uvicorn (the emulator extra) is needed to serve the receiver"
    return None


async def _webhooks(server: Server, setup: Setup, measured: Measured, *, confirm: bool) -> None:
    listener, base = loopback_listener()
    policy, unknown = _scaled(setup)
    if unknown:
        measured.note = f"PollPolicy knobs left unscaled: {', '.join(unknown)}"
    client = AsyncRealESRGAN(
        server.api_key,
        base_url=server.base_url,
        poll=policy,
        max_connections=setup.max_connections,
        webhook_url=f"{base}/hooks",
        allow_insecure_webhooks=True,
        webhook_confirm=confirm,
    )
    async with (
        serving(real_esrgan_async.WebhookReceiver(client), listener),
        client,
        client.upscale_many(_paced_urls(server, setup), scale=2, max_in_flight=setup.jobs) as run,
    ):
        async for outcome in run:
            seen = now()
            measured.outcomes += 1
            if outcome.ok:
                assert outcome.result is not None
                measured.completed += 1
                _record_state(
                    measured,
                    setup.time_scale,
                    _iso(outcome.result.completed_at),
                    _iso(outcome.result.created_at),
                    seen,
                )


async def webhooks_confirmed(server: Server, setup: Setup, measured: Measured) -> None:
    """The library's webhooks as shipped: each callback confirmed by one status call."""
    await _webhooks(server, setup, measured, confirm=True)


async def webhooks_unconfirmed(server: Server, setup: Setup, measured: Measured) -> None:
    """The library's webhooks with ``webhook_confirm=False`` (a receiver no one else reaches)."""
    await _webhooks(server, setup, measured, confirm=False)


# -- the baselines: one task per job --------------------------------------------------------


async def _one_task_per_job(
    server: Server,
    setup: Setup,
    measured: Measured,
    delays: Callable[[], Any],
) -> None:
    def done(index: int, request_id: str, body: dict[str, Any] | None, seen: float) -> None:
        if body is None:
            return
        measured.outcomes += 1
        if body["status"] == "COMPLETED":
            measured.completed += 1
            _record_state(
                measured, setup.time_scale, body.get("completed_at"), body.get("created_at"), seen
            )

    interval = setup.time_scale / setup.arrival_rate
    async with _bare.http_client(setup.max_connections) as http:
        gateway = _bare.BareGateway(http, server, setup.max_connections)
        async with anyio.create_task_group() as tasks:
            start = anyio.current_time()
            for index in range(setup.jobs):
                delay = start + index * interval - anyio.current_time()
                if delay > 0:
                    await anyio.sleep(delay)
                tasks.start_soon(
                    functools.partial(
                        _bare.task_per_job,
                        gateway,
                        index,
                        delays(),
                        max_polls=10_000,
                        on_submitted=_ignore,
                        on_done=done,
                    )
                )


def _ignore(_: str) -> None:
    pass


async def fixed_5s(server: Server, setup: Setup, measured: Measured) -> None:
    """The provider's advice: every job polled every 5 s by its own task."""
    await _one_task_per_job(
        server, setup, measured, lambda: _bare.fixed_delays(5.0 * setup.time_scale)
    )


async def exp_backoff(server: Server, setup: Setup, measured: Measured) -> None:
    """Per-job exponential backoff: 5 s, x1.5, capped at 45 s (Google's LRO defaults)."""
    s = setup.time_scale
    await _one_task_per_job(
        server, setup, measured, lambda: _bare.backoff_delays(5.0 * s, 1.5, 45.0 * s)
    )


Variant = Callable[[Server, Setup, Measured], Awaitable[None]]


#: (row name, function, why it cannot run or None)
def variants() -> list[tuple[str, Variant, str | None]]:
    """Every variant of the table, in order."""
    webhook_gap = _webhooks_available()
    return [
        ("library (PollPolicy defaults)", library, None),
        ("fixed 5 s, task per job (provider)", fixed_5s, None),
        ("exp. backoff 5 s x1.5 <= 45 s, task per job", exp_backoff, None),
        ("library + webhooks (confirmed)", webhooks_confirmed, webhook_gap),
        ("library + webhooks (webhook_confirm=False)", webhooks_unconfirmed, webhook_gap),
    ]


def _emulator_config(setup: Setup) -> dict[str, Any]:
    # Every variant gets a fresh emulator with the same seed: the same job durations.
    return {
        "time_scale": setup.time_scale,
        "seed": setup.seed,
        "fetch_inputs": False,
        "cold_start_rate": setup.cold_start_rate,
        "allow_http_webhooks": True,
    }


def _run_variant(name: str, function: Variant, setup: Setup, server: Server) -> Measured:
    measured = Measured(name)
    # Long enough for the slowest policy to see the slowest job, never unbounded.
    limit = 30 + setup.jobs / setup.arrival_rate * setup.time_scale * 3 + 400 * setup.time_scale
    wall, cpu, server_cpu = now(), cpu_seconds(), process_cpu_seconds(server.pid)
    anyio.run(_bounded, function, server, setup, measured, limit, backend="asyncio")
    measured.wall, measured.cpu = now() - wall, cpu_seconds() - cpu
    measured.server_cpu = process_cpu_seconds(server.pid) - server_cpu
    measured.server = server.stats()
    return measured


async def _bounded(
    function: Variant, server: Server, setup: Setup, measured: Measured, limit: float
) -> None:
    with anyio.move_on_after(limit) as scope:
        await function(server, setup, measured)
    if scope.cancelled_caught:
        measured.note = (measured.note + f"; stopped after {limit:.0f} s").lstrip("; ")


def run(quick: bool = False) -> Report:
    """Run the simulated comparison, then every emulator variant; build the tables."""
    chart = (
        Path(tempfile.mkdtemp(prefix="polling-")) if quick else RESULTS_PATH.parent
    ) / "polling_pareto.png"
    model_setup = polling_model.QUICK_MODEL if quick else polling_model.FULL_MODEL
    model_text, model_figures, model_targets = polling_model.report(model_setup, chart)
    print("  [1.] the calibrated model, simulated: done", flush=True)
    setup = QUICK if quick else FULL
    table_variants = variants()
    runnable = [(name, function) for name, function, gap in table_variants if gap is None]
    measured: dict[str, Measured] = {}
    with emulator_processes(*[_emulator_config(setup)] * len(runnable)) as servers:
        for (name, function), server in zip(runnable, servers, strict=True):
            measured[name] = _run_variant(name, function, setup, server)
            print(f"  [1.] {name}: done in {measured[name].wall:.1f} s", flush=True)
    rows = [
        measured[name]
        if gap is None
        else Measured(name, available=False, note=f"not yet available: {gap}")
        for name, _, gap in table_variants
    ]
    report = _report(setup, rows)
    text = (
        "**On the calibrated model (simulated clock)**\n\n"
        + model_text
        + "\n\n**Against the emulator (loopback sockets)**\n\n"
        + report.text
    )
    figures = {**report.figures, "model": model_figures}
    return Report(TITLE, text, figures, model_targets + report.targets)


def _report(setup: Setup, rows: list[Measured]) -> Report:
    reference = next((r for r in rows if r.name.startswith("fixed")), None)
    ref_calls = reference.calls_per_job if reference else math.nan
    ref_p95 = percentile(reference.delays, 95) if reference else math.nan
    headers = [
        "variant",
        "jobs",
        "finished",
        "lost",
        "status calls",
        "calls/job",
        "delay p50 s",
        "p95 s",
        "p99 s",
        "calls vs fixed",
        "p95 vs fixed",
        "client CPU s",
    ]
    body = []
    figures: dict[str, Any] = {"setup": attrs.asdict(setup), "variants": {}}
    for r in rows:
        if not r.available:
            body.append([r.name, *[NA] * 11])
            figures["variants"][r.name] = {"available": False, "note": r.note}
            continue
        p50, p95, p99 = (percentile(r.delays, q) for q in (50, 95, 99))
        lost = setup.jobs - r.outcomes
        body.append(
            [
                r.name,
                fmt(r.created),
                fmt(r.finished),
                fmt(lost),
                fmt(r.status_calls),
                fmt(r.calls_per_job),
                fmt(p50),
                fmt(p95),
                fmt(p99),
                fmt(r.calls_per_job / ref_calls) + "x",
                fmt(p95 / ref_p95) + "x",
                fmt(r.cpu, 1),
            ]
        )
        figures["variants"][r.name] = {
            "available": True,
            "jobs": setup.jobs,
            "created": r.created,
            "finished": r.finished,
            "outcomes": r.outcomes,
            "completed": r.completed,
            "lost": lost,
            "status_calls": r.status_calls,
            "calls_per_job": r.calls_per_job,
            "delay_p50": p50,
            "delay_p95": p95,
            "delay_p99": p99,
            "client_cpu_s": r.cpu,
            "wall_s": r.wall,
            "note": r.note,
        }
    durations = next((r.durations for r in rows if r.durations), [])
    notes = [
        f"{setup.jobs:,} jobs arriving at {setup.arrival_rate:g} per (unscaled) second, "
        f"time_scale {setup.time_scale:g}: every duration of the emulator and of every policy "
        f"is multiplied by it; delays above are divided back (unscaled seconds). "
        f"Job durations (created to completed, unscaled): median "
        f"{fmt(percentile(durations, 50), 1)} s, p95 {fmt(percentile(durations, 95), 1)} s, "
        f"p99 {fmt(percentile(durations, 99), 1)} s. Every variant: {setup.max_connections} "
        "connections, a fresh emulator with the same seed (the same job durations).",
        "status calls: counted by the emulator; calls/job: per finished job (COMPLETED, FAILED "
        "or ERROR). Delay: from the job's `completed_at` to the moment the caller holds the "
        "outcome. lost: jobs whose outcome never reached the caller.",
        "Jobs are timed by the calibrated model without fetching inputs: each job's nominal "
        "input size is drawn log-uniform in 0.3-2 MP (`EmulatorConfig.nominal_megapixels`), "
        "so the durations match the simulated table above (median ~16 s). The library's "
        "timing priors are the calibrated model's too, multiplied by time_scale.",
        f"Time compression also multiplies the client's own lag: a 10 ms stall of the client's "
        f"event loop reads as {0.01 / setup.time_scale:g} s of delay here, so this table is "
        "pessimistic on a loaded machine (the simulated table has no such lag).",
    ]
    notes += [f"{r.name}: {r.note}" for r in rows if r.note]
    library_row = figures["variants"].get(rows[0].name, {})
    targets: list[tuple[str, bool | None, str]] = []
    if library_row.get("available"):
        calls = library_row["calls_per_job"]
        p95 = library_row["delay_p95"]
        target = real_esrgan_async.PollPolicy().target_delay or math.inf
        targets.append(
            (
                "emulator: status calls per completed job fewer than fixed 5 s polling's",
                calls < ref_calls,
                f"library {calls:.2f} vs fixed 5 s {ref_calls:.2f}",
            )
        )
        targets.append(
            (
                f"emulator: p95 detection delay within the default target ({target:g} s)",
                p95 <= target,
                f"library {p95:.2f} s",
            )
        )
    text = table(headers, body) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    return Report(TITLE, text, figures, targets)
