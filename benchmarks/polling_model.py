"""Benchmark 1a: polling schedules side by side on the calibrated timing model, simulated clock.

No emulator and no sockets: the real `PollScheduler` is driven with a simulated clock, each job
timed by the domain notes' calibrated model (inputs of 0.3-2 MP spread log-uniformly; queue wait
lognormal around 1.5 s with 3% cold starts of 20-90 s; processing 2.7 s + 12.8 s per input MP +
0.09 s per output MP at 4x, with 10% noise: median ~16 s, p95 ~33 s). Each status answer says
what the gateway would (QUEUED, or PROCESSING with its start in ``updated_at``, or the finished
job with its timestamps). Every variant sees the same jobs.

Variants: the library at its default target and at two other targets, with the input's size
given (a future preflight), its previous default (``target_delay=None``); fixed 5 s and 10 s
polling (the provider's advice), per-job exponential backoff (5 s x1.5 <= 45 s), the fixed
intervals other clients use (0.1, 0.5, 1 s); the oracle (one call, at completion); and, for each
target, the best schedules found for it: the library's planner with the share each check may miss
tuned by bisection on these very jobs (status-aware), and a status-blind schedule planned from
the true durations (clairvoyant), tuned the same way.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from real_esrgan_async import PollPolicy
from real_esrgan_async._scheduler import PollScheduler, nominal_processing

from ._common import fmt, percentile, table

Job = tuple[float, float, float, float]  # (submitted, queue wait, processing, megapixels)


@attrs.frozen
class ModelSetup:
    """The size of one run."""

    jobs: int
    seeds: tuple[int, ...]
    arrival_rate: float = 2.0  # jobs per second (a steady crawler)
    batch: int = 500  # the batch scenario: this many jobs submitted at batch_rate
    batch_rate: float = 10.0


FULL_MODEL = ModelSetup(jobs=6000, seeds=(1, 2, 3))
QUICK_MODEL = ModelSetup(jobs=300, seeds=(1,), batch=100)

TARGETS = {2.0: "interactive", 5.0: "default", 20.0: "frugal"}
DEFAULT = PollPolicy().target_delay
DEFAULT_ROW = f"library, target_delay={DEFAULT:g} s (default)"
SIZED_ROW = f"library, target_delay={DEFAULT:g} s, input sizes given"
FRUGAL_ROW = "library, target_delay=20 s (frugal)"


def calibrated_jobs(n: int, seed: int, rate: float) -> list[Job]:
    """Jobs timed as the domain notes' calibrated model says, arriving at ``rate`` per second."""
    r = random.Random(seed)
    jobs: list[Job] = []
    t = 0.0
    for _ in range(n):
        t += r.expovariate(rate)
        megapixels = 0.3 * (2 / 0.3) ** r.random()
        wait = r.lognormvariate(math.log(1.5), 0.6)
        if r.random() < 0.03:
            wait += r.uniform(20.0, 90.0)
        run = nominal_processing(megapixels) * r.lognormvariate(0.0, 0.1)
        jobs.append((t, wait, run, megapixels))
    return jobs


@attrs.define
class Outcome:
    """Per job: status calls and detection delay (seconds after it finished)."""

    calls: list[int] = attrs.Factory(list)
    delays: list[float] = attrs.Factory(list)

    def extend(self, other: Outcome) -> None:
        self.calls += other.calls
        self.delays += other.delays

    @property
    def calls_per_job(self) -> float:
        return sum(self.calls) / len(self.calls) if self.calls else math.nan

    def delay(self, q: float) -> float:
        return percentile(self.delays, q)


class _FixedShare(PollScheduler):
    """The library's planner with the share each check may miss fixed (for the search)."""

    share = 0.01

    @property
    def miss_share(self) -> float:
        return self.share


def simulate(
    policy: PollPolicy,
    jobs: list[Job],
    *,
    sizes: bool = False,
    seed: int = 0,
    share: float | None = None,
) -> Outcome:
    """Drive a real `PollScheduler` through ``jobs`` with a simulated clock."""
    rng = random.Random(seed).random
    if share is None:
        s = PollScheduler(policy, rng=rng)
    else:
        s = _FixedShare(policy, rng=rng)
        s.share = share
    calls = [0] * len(jobs)
    found = [math.nan] * len(jobs)
    now, k = 0.0, 0
    while k < len(jobs) or s.in_flight:
        wakeup = s.next_wakeup(now)
        now = min(jobs[k][0] if k < len(jobs) else math.inf, math.inf if wakeup is None else wakeup)
        while k < len(jobs) and jobs[k][0] <= now:
            megapixels = jobs[k][3] if sizes else None
            s.add_waiter(str(k), now=now, submitted_at=jobs[k][0], megapixels=megapixels)
            k += 1
        for request_id in s.due(now):
            i = int(request_id)
            submitted, wait, run, _ = jobs[i]
            calls[i] += 1
            if now >= submitted + wait + run:
                if s.on_state(request_id, terminal=True, now=now, duration=wait + run):
                    found[i] = now
            elif now < submitted + wait:
                s.on_state(request_id, terminal=False, now=now, queued=True)
            else:
                s.on_state(request_id, terminal=False, now=now, queued=False, queue_wait=wait)
    return Outcome(calls, [found[i] - sum(job[:3]) for i, job in enumerate(jobs)])


def per_job(jobs: list[Job], offsets: Callable[[], Iterator[float]]) -> Outcome:
    """A schedule of offsets after submission, the same for every job (one task per job)."""
    out = Outcome()
    for _, wait, run, _ in jobs:
        duration = wait + run
        for n, offset in enumerate(offsets(), start=1):
            if offset >= duration:
                out.calls.append(n)
                out.delays.append(offset - duration)
                break
    return out


def fixed(interval: float) -> Callable[[], Iterator[float]]:
    def offsets() -> Iterator[float]:
        n = 1
        while True:
            yield n * interval
            n += 1

    return offsets


def backoff(first: float, factor: float, cap: float) -> Callable[[], Iterator[float]]:
    def offsets() -> Iterator[float]:
        t, gap = 0.0, first
        while True:
            t += gap
            yield t
            gap = min(gap * factor, cap)

    return offsets


def clairvoyant(durations: list[float], delay: float, share: float) -> list[float]:
    """A status-blind schedule planned from the true durations (sorted), as the library plans."""
    checks: list[float] = []
    alive = 0.0
    while True:
        start = bisect_right(durations, alive)
        left = len(durations) - start
        if left <= 0:
            return checks
        check = durations[start + min(left - 1, int(share * left))] + delay
        checks.append(check)
        alive = check


def blind(jobs: list[Job], checks: list[float]) -> Outcome:
    out = Outcome()
    for _, wait, run, _ in jobs:
        n = bisect_left(checks, wait + run)
        out.calls.append(n + 1)
        out.delays.append(checks[n] - wait - run)
    return out


def tune(evaluate: Callable[[float], Outcome], target: float) -> tuple[float, Outcome]:
    """The largest share whose p95 delay stays within ``target`` (bisection on a log scale)."""
    low, high = math.log(1e-4), math.log(0.6)
    best: Outcome | None = None
    share = math.exp(low)
    for _ in range(9):
        mid = (low + high) / 2
        outcome = evaluate(math.exp(mid))
        if outcome.delay(95) <= target:
            low, best, share = mid, outcome, math.exp(mid)
        else:
            high = mid
    return share, best if best is not None else evaluate(share)


@attrs.define
class Row:
    name: str
    outcome: Outcome
    kind: str  # "library", "peer", "best", "oracle"
    target: float | None = None


def _over_seeds(setup: ModelSetup, run: Callable[[list[Job], int], Outcome]) -> Outcome:
    total = Outcome()
    for seed in setup.seeds:
        total.extend(run(calibrated_jobs(setup.jobs, seed, setup.arrival_rate), seed))
    return total


def measure(setup: ModelSetup) -> tuple[list[Row], dict[str, Any]]:
    """Every variant over every seed; the best schedules found per target; the batch case."""
    rows: list[Row] = []

    def library(policy: PollPolicy, *, sizes: bool = False) -> Outcome:
        return _over_seeds(setup, lambda jobs, seed: simulate(policy, jobs, sizes=sizes, seed=seed))

    for target, label in TARGETS.items():
        rows.append(
            Row(
                f"library, target_delay={target:g} s ({label})",
                library(PollPolicy(target_delay=target)),
                "library",
                target,
            )
        )
    rows.append(Row(SIZED_ROW, library(PollPolicy(), sizes=True), "library", DEFAULT))
    rows.append(
        Row(
            "library, previous default (target_delay=None)",
            library(PollPolicy(target_delay=None)),
            "library",
        )
    )
    peers = [
        ("fixed 5 s (the provider's advice)", fixed(5.0)),
        ("fixed 10 s", fixed(10.0)),
        ("exp. backoff 5 s x1.5 <= 45 s", backoff(5.0, 1.5, 45.0)),
        ("fixed 1 s (peers)", fixed(1.0)),
        ("fixed 0.5 s (peers)", fixed(0.5)),
        ("fixed 0.1 s (peers)", fixed(0.1)),
    ]
    for name, offsets in peers:
        rows.append(
            Row(name, _over_seeds(setup, lambda jobs, _, o=offsets: per_job(jobs, o)), "peer")
        )
    oracle = _over_seeds(setup, lambda jobs, _: Outcome([1] * len(jobs), [0.0] * len(jobs)))
    rows.append(Row("oracle (one call at completion)", oracle, "oracle"))

    # The best schedules found for each target, tuned on the jobs of the first seed.
    search = calibrated_jobs(setup.jobs, setup.seeds[0], setup.arrival_rate)
    durations = sorted(wait + run for _, wait, run, _ in search)
    best: dict[str, dict[str, float]] = {}
    for target, sizes in [*((t, False) for t in TARGETS), (DEFAULT, True)]:
        assert target is not None
        policy = PollPolicy(target_delay=target)
        aware_share, aware = tune(
            lambda share, p=policy, z=sizes: simulate(p, search, sizes=z, share=share), target
        )
        suffix = ", sizes given" if sizes else ""
        rows.append(
            Row(f"best found: planner, fixed share, {target:g} s{suffix}", aware, "best", target)
        )
        entry = {"aware_calls": aware.calls_per_job, "aware_share": aware_share}
        if not sizes:
            blind_share, blinded = tune(
                lambda share, t=target: blind(search, clairvoyant(durations, t, share)), target
            )
            rows.append(
                Row(f"best found: status-blind, clairvoyant, {target:g} s", blinded, "best", target)
            )
            entry |= {"blind_calls": blinded.calls_per_job, "blind_share": blind_share}
        best[f"{target:g}{suffix}"] = entry

    batch_jobs = calibrated_jobs(setup.batch, setup.seeds[0], setup.batch_rate)
    batch = {
        name: simulate(policy, batch_jobs, seed=setup.seeds[0])
        for name, policy in (("default", PollPolicy()), ("previous", PollPolicy(target_delay=None)))
    }
    extra = {
        "best": best,
        "batch": {
            name: {
                "calls_per_job": o.calls_per_job,
                "first_100_calls_per_job": sum(o.calls[:100]) / min(100, len(o.calls)),
                "delay_p95": o.delay(95),
            }
            for name, o in batch.items()
        },
    }
    return rows, extra


def _best_for(rows: list[Row], row: Row) -> Row | None:
    """The cheapest best-found schedule of the same target (and sizes) as ``row``."""
    sized = "sizes given" in row.name
    candidates = [
        r
        for r in rows
        if r.kind == "best" and r.target == row.target and ("sizes given" in r.name) == sized
    ]
    return min(candidates, key=lambda r: r.outcome.calls_per_job, default=None)


def report(setup: ModelSetup, chart: Path | None) -> tuple[str, dict[str, Any], list[Any]]:
    """The table, the figures, the targets; draws the chart when a path is given."""
    rows, extra = measure(setup)
    headers = ["schedule", "calls/job", "delay p50 s", "p95 s", "p99 s", "vs best found"]
    body = []
    figures: dict[str, Any] = {"setup": attrs.asdict(setup), "rows": {}, **extra}
    for row in rows:
        o = row.outcome
        best = _best_for(rows, row) if row.kind == "library" and row.target else None
        ratio = o.calls_per_job / best.outcome.calls_per_job if best else math.nan
        body.append(
            [
                row.name,
                fmt(o.calls_per_job),
                fmt(o.delay(50)),
                fmt(o.delay(95)),
                fmt(o.delay(99)),
                "" if best is None else fmt(ratio) + "x",
            ]
        )
        figures["rows"][row.name] = {
            "kind": row.kind,
            "target": row.target,
            "jobs": len(o.calls),
            "calls_per_job": o.calls_per_job,
            "delay_p50": o.delay(50),
            "delay_p95": o.delay(95),
            "delay_p99": o.delay(99),
            "vs_best": ratio,
        }
    by_name = figures["rows"]
    targets: list[tuple[str, bool | None, str]] = []
    default, sized, frugal = by_name[DEFAULT_ROW], by_name[SIZED_ROW], by_name[FRUGAL_ROW]
    targets.append(
        (
            "default: p95 delay <= 5 s with <= 2.9 calls/job (no sizes)",
            default["delay_p95"] <= 5.0 and default["calls_per_job"] <= 2.9,
            f"{default['calls_per_job']:.2f} calls/job, p95 {default['delay_p95']:.2f} s",
        )
    )
    targets.append(
        (
            "default with input sizes: p95 <= 5 s with <= 1.6 calls/job",
            sized["delay_p95"] <= 5.0 and sized["calls_per_job"] <= 1.6,
            f"{sized['calls_per_job']:.2f} calls/job, p95 {sized['delay_p95']:.2f} s",
        )
    )
    targets.append(
        (
            "frugal target (20 s): <= 1.35 calls/job",
            frugal["calls_per_job"] <= 1.35,
            f"{frugal['calls_per_job']:.2f} calls/job, p95 {frugal['delay_p95']:.2f} s",
        )
    )
    for name, row in by_name.items():
        if row["kind"] == "library" and not math.isnan(row["vs_best"]):
            targets.append(
                (
                    f"{name}: within 5% of the best schedule found for its target",
                    row["vs_best"] <= 1.05,
                    f"{row['vs_best']:.3f}x the calls of the best found",
                )
            )
    batch = extra["batch"]
    notes = [
        f"{setup.jobs:,} jobs x {len(setup.seeds)} seed(s), arriving at "
        f"{setup.arrival_rate:g}/s, timed by the calibrated model; a simulated clock drives the "
        "real `PollScheduler` (status answers carry QUEUED/PROCESSING and `updated_at`); "
        "per-job baselines are computed exactly on the same jobs. Delay: from the job's end to "
        "the status call that sees it.",
        "best found: the library's planner with the share each check may miss fixed and tuned "
        "by bisection on these jobs to the target (status-aware), and a status-blind schedule "
        "planned from the true durations (clairvoyant), tuned the same way; vs best found: "
        "calls/job over the cheaper of the two.",
        f"A batch of {setup.batch} jobs submitted at {setup.batch_rate:g}/s: default "
        f"{batch['default']['calls_per_job']:.2f} calls/job ("
        f"{batch['default']['first_100_calls_per_job']:.2f} in its first 100, p95 "
        f"{batch['default']['delay_p95']:.2f} s); previous default "
        f"{batch['previous']['calls_per_job']:.2f} ("
        f"{batch['previous']['first_100_calls_per_job']:.2f} in its first 100, p95 "
        f"{batch['previous']['delay_p95']:.2f} s).",
    ]
    if chart is not None:
        try:
            draw_pareto(rows, chart)
        except ImportError:
            notes.append("No chart: Pillow (the emulator extra) is not installed.")
        else:
            figures["chart"] = str(chart)
            notes.append(f"Pareto chart (calls/job vs p95 delay): `{chart.name}`.")
    text = table(headers, body) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    return text, figures, targets


# -- the chart ------------------------------------------------------------------------------

_COLOURS = {
    "library": (31, 119, 180),
    "peer": (214, 39, 40),
    "best": (44, 160, 44),
    "oracle": (0, 0, 0),
}


def draw_pareto(rows: list[Row], path: Path) -> None:
    """Calls/job (log) against p95 delay (log), one labelled point per schedule, as a PNG."""
    from PIL import Image, ImageDraw  # noqa: PLC0415 - optional: the emulator extra

    width, height, margin = 1100, 720, 80
    x_range, y_range = (0.05, 100.0), (0.8, 400.0)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def at(p95: float, calls: float) -> tuple[float, float]:
        p95 = min(max(p95, x_range[0]), x_range[1])
        fx = math.log(p95 / x_range[0]) / math.log(x_range[1] / x_range[0])
        fy = math.log(calls / y_range[0]) / math.log(y_range[1] / y_range[0])
        return margin + fx * (width - 2 * margin), height - margin - fy * (height - 2 * margin)

    left, top = margin, margin
    right, bottom = width - margin, height - margin
    draw.rectangle((left, top, right, bottom), outline="black")
    for tick in (0.1, 0.5, 1, 2, 5, 10, 20, 50, 100):
        x, _ = at(tick, 1.0)
        draw.line((x, bottom, x, bottom + 5), fill="black")
        draw.line((x, top, x, bottom), fill=(235, 235, 235))
        draw.text((x - 8, bottom + 8), f"{tick:g}", fill="black")
    for tick in (1, 1.5, 2, 3, 5, 10, 20, 50, 100, 200):
        _, y = at(1.0, tick)
        draw.line((left - 5, y, left, y), fill="black")
        draw.line((left, y, right, y), fill=(235, 235, 235))
        draw.text((left - 40, y - 6), f"{tick:g}", fill="black")
    draw.text(
        (width / 2 - 150, height - 35), "p95 detection delay, s (log; oracle at 0)", fill="black"
    )
    draw.text((10, 20), "status calls per job (log)", fill="black")
    draw.text(
        (width / 2 - 220, 20),
        "Polling schedules on the calibrated model: lower left is better",
        fill="black",
    )
    # The best found first: hollow rings under the library's filled points.
    for n, row in enumerate(sorted(rows, key=lambda r: r.kind != "best")):
        o = row.outcome
        x, y = at(o.delay(95), o.calls_per_job)
        colour = _COLOURS[row.kind]
        r = 5
        if row.kind == "best":
            draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=2)
        else:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        if row.kind == "best":  # hollow green: the legend says it; labels would overlap
            continue
        label = row.name.replace("library, ", "").replace(" (peers)", "")
        draw.text((x + 8, y - 14 if n % 2 else y + 2), label[:48], fill=colour)
    for k, (kind, colour) in enumerate(_COLOURS.items()):
        draw.ellipse((right - 150, top + 12 + k * 18, right - 140, top + 22 + k * 18), fill=colour)
        name = "best found (hollow)" if kind == "best" else kind
        draw.text((right - 132, top + 10 + k * 18), name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
