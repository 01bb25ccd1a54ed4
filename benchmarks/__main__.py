"""``python -m benchmarks``: run every benchmark, print the tables, append them to RESULTS.md.

Usage::

    python -m benchmarks                 # the full run (< 10 minutes on 2 cores)
    python -m benchmarks --quick         # tiny sizes, seconds: the smoke test; writes nothing
    python -m benchmarks --only polling,ratelimit
    python -m benchmarks --quick --results /tmp/RESULTS.md --json /tmp/figures.json
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import fleet, memory, polling, ratelimit, throughput
from ._common import RESULTS_PATH, Report, append_results, dump_json, machine_details

BENCHMARKS: dict[str, Callable[[bool], Report]] = {
    "polling": polling.run,
    "throughput": throughput.run,
    "memory": memory.run,
    "ratelimit": ratelimit.run,
    "fleet": fleet.run,
}


def _load() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as loadavg:
            return " ".join(loadavg.read().split()[:3])
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (a smoke test); writes no results unless --results",
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help=f"Markdown file to append to (default: {RESULTS_PATH} for a full "
        "run, none for --quick)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="memory benchmark: also trace Python allocations (slower)",
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    results = args.results if args.results is not None else (None if args.quick else RESULTS_PATH)
    details = machine_details()
    details["load average at start"] = _load()
    command = "python -m benchmarks" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    print(f"{command}: {', '.join(names)}", flush=True)
    start = time.perf_counter()
    reports: list[Report] = []
    for name in names:
        began = time.perf_counter()
        print(f"\n== {name} ==", flush=True)
        if name == "memory":
            report = memory.run(args.quick, tracing=args.tracemalloc)
        else:
            report = BENCHMARKS[name](args.quick)
        reports.append(report)
        print(report.markdown(), flush=True)
        print(f"({name}: {time.perf_counter() - began:.0f} s)", flush=True)
    elapsed = time.perf_counter() - start
    details["load average at end"] = _load()
    if results is not None:
        append_results(results, reports, details=details, command=command, elapsed=elapsed)
        print(f"\nAppended to {results}")
    if args.json is not None:
        dump_json(args.json, reports, details)
    print(f"\nTargets ({elapsed:.0f} s in all):")
    for report in reports:
        for target, met, detail in report.targets:
            mark = "n/a" if met is None else ("met" if met else "NOT met")
            print(f"  [{mark}] {target}: {detail}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
