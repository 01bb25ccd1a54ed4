"""Smoke test of the benchmarks: each runs in ``--quick`` mode and produces its table.

Sanity only (no job lost, the counts add up), never speed: benchmarks are not timed tests.
Each runs as ``python -m benchmarks --quick --only NAME``, the way a person runs it, in its own
process (it starts emulator processes of its own and stops them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

TITLES = {
    "polling": "### 1. Status calls per job and detection delay",
    "throughput": "### 2. Throughput ceiling (instant jobs)",
    "memory": "### 3. Memory and CPU at scale",
    "ratelimit": "### 4. Rate-limited run",
    "fleet": "### Fleet: four workers on one store vs four independent clients",
}


def run_quick(name: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """Run one benchmark in --quick mode; return its output and its figures."""
    figures = tmp_path / "figures.json"
    results = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--only",
            name,
            "--json",
            str(figures),
            "--results",
            str(results),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert 0 == done.returncode, done.stderr[-3000:]
    assert TITLES[name] in done.stdout
    assert TITLES[name] in results.read_text(encoding="utf-8")
    data = json.loads(figures.read_text(encoding="utf-8"))
    (section,) = data["benchmarks"].values()
    return done.stdout, section


@pytest.mark.timeout(180)
def test_polling_quick_loses_no_job(tmp_path: Path) -> None:
    """Every variant that can run sees every job finish and hands every outcome over."""
    output, figures = run_quick("polling", tmp_path)
    jobs = figures["setup"]["jobs"]
    ran = {name: v for name, v in figures["variants"].items() if v["available"]}
    assert {"library (PollPolicy defaults)", "fixed 5 s, task per job (provider)"} <= set(ran)
    for name, variant in ran.items():
        assert jobs == variant["created"], name
        assert jobs == variant["finished"], name
        assert jobs == variant["outcomes"], name
        assert 0 == variant["lost"], name
        assert variant["completed"] <= variant["outcomes"], name
    # Polling variants make at least one status call per finished job.
    for name in ("library (PollPolicy defaults)", "fixed 5 s, task per job (provider)"):
        assert ran[name]["status_calls"] >= jobs
    assert "status calls per completed job" in output
    # The simulated comparison: every schedule saw every job, the oracle costs one call each
    # with no delay, and the Pareto chart is a PNG.
    model = figures["model"]
    simulated = model["setup"]["jobs"] * len(model["setup"]["seeds"])
    for name, row in model["rows"].items():
        if row["kind"] != "best":
            assert simulated == row["jobs"], name
        assert row["calls_per_job"] >= 1.0, name
    oracle = model["rows"]["oracle (one call at completion)"]
    assert (1.0, 0.0) == (oracle["calls_per_job"], oracle["delay_p95"])
    assert Path(model["chart"]).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.timeout(180)
def test_throughput_quick_completes_every_job(tmp_path: Path) -> None:
    """Each variant completes all its jobs with one submit and at least one status call each."""
    _, figures = run_quick("throughput", tmp_path)
    jobs = figures["setup"]["jobs"] // figures["setup"]["rounds"] * figures["setup"]["rounds"]
    ran = {name: v for name, v in figures["variants"].items() if v["available"]}
    assert {"bare httpx", "library (httpx)"} <= set(ran)
    for name, variant in ran.items():
        assert jobs == variant["jobs"], name
        assert jobs == variant["completed"], name
        assert 0 == variant["lost"], name
        assert variant["requests"] >= 2 * jobs, name


@pytest.mark.timeout(180)
def test_memory_quick_holds_every_job(tmp_path: Path) -> None:
    """Both variants submit every job and see all of them in flight at once (or nearly)."""
    _, figures = run_quick("memory", tmp_path)
    jobs = figures["setup"]["jobs"]
    assert {"library", "task per job"} == set(figures["variants"])
    for name, variant in figures["variants"].items():
        assert jobs == variant["submitted"], name
        assert jobs == variant["emulator_jobs_created"], name
        assert 0 == variant["lost"], name
        assert 0 < variant["peak_in_flight"] <= jobs, name
        assert variant["finished"] <= jobs, name
        assert variant["rss_at_peak"] > 0, name


@pytest.mark.timeout(180)
def test_ratelimit_quick_is_throttled_and_loses_nothing(tmp_path: Path) -> None:
    """The emulator refuses some submits (429), yet every job is created once and completes."""
    _, figures = run_quick("ratelimit", tmp_path)
    jobs = figures["setup"]["jobs"]
    for name, variant in figures["variants"].items():
        assert jobs == variant["created"], name
        assert jobs == variant["completed"], name
        assert 0 == variant["lost"], name
        assert 0 == variant["paid_twice"], name
        assert variant["rate_limited_server"] > 0, name


@pytest.mark.timeout(180)
def test_fleet_quick_pays_once_per_key_and_shares_the_rate_limit(tmp_path: Path) -> None:
    """On one store, four workers pay exactly once per distinct key and meet fewer 429s; with
    shared status checks too; every webhook job reaches its caller, behind one URL too."""
    output, _ = run_quick("fleet", tmp_path)
    assert "[met] paid jobs == distinct keys on one store" in output
    assert "[met] shared checks: paid jobs == distinct keys, no errors" in output
    assert "[met] every webhook job's outcome reached its caller" in output
