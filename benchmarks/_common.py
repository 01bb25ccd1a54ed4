"""Shared helpers of the benchmarks: the emulator in its own process, clocks, stats, tables.

Every benchmark talks to the emulator over loopback sockets, and the emulator runs in a
*separate process* (started with the ``spawn`` method), so client and server never share a GIL:
what the client measures is the client. The server process is always stopped at the end, and
every wait here is bounded in time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import resource
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx

import real_esrgan_async
from real_esrgan_async import PollPolicy

#: A table cell with no value (an en dash).
NA = "\N{EN DASH}"

#: Where the dated sections of every full run are appended.
RESULTS_PATH = Path(__file__).with_name("RESULTS.md")

STATS_PATH = "/_emulator/stats"
SUBMIT_PATH = "/real-esrgan/v1/real-esrgan/generate"
STATUS_PATH = "/v2/requests/status/"
_STARTUP_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


# -- the emulator in another process -------------------------------------------------------


@attrs.frozen
class Server:
    """A running emulator process: where it listens and how to reach it."""

    base_url: str
    api_key: str
    pid: int

    def headers(self) -> dict[str, str]:
        """The documented submit/status headers."""
        return {
            "Ocp-Apim-Subscription-Key": self.api_key,
            "Content-Type": "application/json",
            "Cache-Control": "no-cache",
        }

    def image_url(self, index: int) -> str:
        """A distinct input URL per job (never fetched when ``fetch_inputs`` is off)."""
        return f"{self.base_url}/samples/photo.jpg?n={index}"

    def stats(self) -> dict[str, Any]:
        """``GET /_emulator/stats``: the emulator's counters (no key needed)."""
        with httpx.Client(trust_env=False, timeout=30) as client:
            response = client.get(self.base_url + STATS_PATH)
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data


#: The server process: serve until its standard input closes (the parent ended it or died).
_SERVER_CODE = """
import json, sys
from real_esrgan_async.testing import EmulatorConfig, running_emulator
with running_emulator(EmulatorConfig(**json.loads(sys.argv[1])), host="127.0.0.1", port=0) as g:
    print(g.base_url, g.api_key, flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def emulator_processes(*configs: Mapping[str, Any]) -> Iterator[list[Server]]:
    """Run one emulator process per config, all started at once (their startups overlap).

    Each runs ``running_emulator(EmulatorConfig(**config))`` on 127.0.0.1 with a free port, in
    its own process. All are stopped (and, if need be, terminated) when the block ends.

    Yields:
        One `Server` per config, in order: base URL, key and pid.
    """
    processes: list[subprocess.Popen[str]] = []
    try:
        for config in configs:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", _SERVER_CODE, json.dumps(dict(config))],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        servers = []
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        for process in processes:
            assert process.stdout is not None
            ready, _, _ = select.select(
                [process.stdout], [], [], max(0.0, deadline - time.monotonic())
            )
            line = process.stdout.readline() if ready else ""
            if not line:
                raise RuntimeError(f"an emulator process did not start within {_STARTUP_TIMEOUT} s")
            base_url, api_key = line.split()
            servers.append(Server(base_url=base_url, api_key=api_key, pid=process.pid))
        yield servers
    finally:
        for process in processes:
            assert process.stdin is not None
            with contextlib.suppress(OSError):
                process.stdin.close()  # the server stops when its standard input ends
        for process in processes:
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.terminate()  # only a process started here, by its own handle
                process.wait(_STOP_TIMEOUT)
            if process.stdout is not None:
                process.stdout.close()


@contextlib.contextmanager
def emulator_process(**config: Any) -> Iterator[Server]:
    """One emulator in its own process (see `emulator_processes`)."""
    with emulator_processes(config) as (server,):
        yield server


# -- measurements ---------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process (Linux ``/proc``; NaN where unavailable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return math.nan
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def mean(values: Sequence[float]) -> float:
    """The mean; NaN for no values."""
    return statistics.fmean(values) if values else math.nan


def parse_timestamp(text: str) -> float:
    """A status body's timestamp (ISO with ``Z`` or the space form, UTC) as epoch seconds."""
    text = text.strip().replace(" ", "T").removesuffix("Z")
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


# -- reporting ------------------------------------------------------------------------------


def fmt(value: float | int | None, digits: int = 2) -> str:
    """A table cell: integers as they are, floats rounded, NaN/None as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, padded so that it reads in a terminal too."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


@attrs.define
class Report:
    """What one benchmark prints and appends to RESULTS.md, and its figures as data."""

    title: str
    text: str  # the table(s) and their notes, Markdown
    figures: dict[str, Any]  # machine-readable: for the smoke test and --json
    targets: list[tuple[str, bool | None, str]] = attrs.Factory(list)  # (target, met?, detail)

    def markdown(self) -> str:
        """The section of this benchmark."""
        lines = [f"### {self.title}", "", self.text.rstrip(), ""]
        if self.targets:
            lines += ["Targets:", ""]
            for name, met, detail in self.targets:
                mark = "not measured" if met is None else ("met" if met else "NOT met")
                lines.append(f"- {name}: **{mark}** ({detail})")
            lines.append("")
        return "\n".join(lines)


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_details() -> dict[str, str]:
    """CPU model, cores, OS, Python and the versions of the libraries that matter here."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "real-esrgan-async": real_esrgan_async.__version__,
        "httpx": _version("httpx"),
        "httpcore": _version("httpcore"),
        "anyio": _version("anyio"),
        "aiohttp": _version("aiohttp"),
        "httpx-aiohttp": _version("httpx-aiohttp"),
        "uvicorn (emulator)": _version("uvicorn"),
    }


def machine_markdown(details: Mapping[str, str]) -> str:
    """The machine details as one Markdown line."""
    return "Machine: " + "; ".join(f"{key} {value}" for key, value in details.items()) + "."


def append_results(
    path: Path,
    sections: Sequence[Report],
    *,
    details: Mapping[str, str],
    command: str,
    elapsed: float,
) -> None:
    """Append one dated section with every benchmark's tables to ``path``."""
    header = (
        ""
        if path.exists()
        else (
            "# Benchmark results\n\nEach section is one run of `python -m benchmarks`, appended by "
            "the run itself. Every comparison is a ratio measured within the same run.\n\n"
        )
    )
    parts = [
        f"## {details['date']}",
        "",
        machine_markdown(details),
        "",
        f"Command: `{command}` (whole run {elapsed:.0f} s).",
        "",
        *(report.markdown() for report in sections),
    ]
    with path.open("a", encoding="utf-8") as out:
        out.write(header + "\n".join(parts) + "\n")


def dump_json(path: Path, sections: Sequence[Report], details: Mapping[str, str]) -> None:
    """The figures of every benchmark as JSON (for the smoke test)."""
    data = {"machine": dict(details), "benchmarks": {r.title: r.figures for r in sections}}
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


# -- policies -------------------------------------------------------------------------------

#: `PollPolicy` knobs that are durations (multiplied by the time scale), rates (divided by it)
#: and plain numbers (kept). A knob in none of these is reported, never silently left unscaled.
TIME_KNOBS = frozenset(
    {
        "initial_delay",
        "min_interval",
        "max_interval",
        "max_first_check",
        "safety_net_interval",
        "target_delay",
        "prior_scale",  # multiplies the priors' durations
    }
)
RATE_KNOBS = frozenset({"max_checks_per_second"})
#: Rates of change of a rate (checks/s per second): divided by the scale squared.
ACCELERATION_KNOBS = frozenset({"budget_increase"})
UNITLESS_KNOBS = frozenset(
    {
        "target_quantile",
        "backoff",
        "jitter",
        "first_check_quantile",
        "second_check_quantile",
        "min_samples",
        "learn_window",
        "burst",
        "safety_net_factor",
    }
)


def scaled_policy(scale: float, **overrides: Any) -> tuple[PollPolicy, list[str]]:
    """The library's default `PollPolicy` with every duration multiplied by ``scale``.

    Returns:
        The policy, and the names of knobs this module does not know how to scale (left as
        they are; the benchmark reports them).
    """
    base = PollPolicy()
    changes: dict[str, Any] = {}
    unknown: list[str] = []
    for field in attrs.fields(PollPolicy):
        value = getattr(base, field.name)
        if field.name in TIME_KNOBS:
            changes[field.name] = None if value is None else value * scale
        elif field.name in RATE_KNOBS:
            changes[field.name] = None if value is None else value / scale
        elif field.name in ACCELERATION_KNOBS:
            changes[field.name] = None if value is None else value / (scale * scale)
        elif field.name not in UNITLESS_KNOBS:
            unknown.append(field.name)
    changes.update(overrides)
    return attrs.evolve(base, **changes), unknown


def now() -> float:
    """Wall-clock seconds since the epoch: the clock the emulator's timestamps are on."""
    return time.time()
