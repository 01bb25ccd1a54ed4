"""The end of a batch run, for people (a few lines) and for scripts (one JSON document).

Latency is measured per input, from the moment the fan-out pulled it from the
input stream to the moment its outcome arrived (the output's download is not
included), and only for inputs that became jobs: a URL rejected before sending
would pull the percentiles towards zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from real_esrgan_async import (
    AuthenticationError,
    InsufficientBalanceError,
    JournalLockedError,
    JournalMismatchError,
    PermissionDeniedError,
)

from ._output import Output, one_line
from ._report import Category, Entry, Report

__all__ = ["json_document", "percentile", "print_stop", "print_summary"]


def percentile(values: Sequence[float], p: float) -> float | None:
    """The `p`-th percentile of `values` (nearest rank), or None when there are none.

    Args:
        values: The samples, in any order.
        p: The percentile, in (0, 100].
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def print_summary(report: Report, output: Output) -> None:
    """Print the human summary on stdout."""
    counts = report.counts
    stats = report.stats
    saved = counts[Category.COMPLETED]
    output.result(
        f"{saved} of {report.inputs} input{'' if report.inputs == 1 else 's'} upscaled "
        f"and saved to {report.out_dir}/ in {report.wall_time:.1f} s"
    )
    parts = [
        f"completed {saved}",
        f"failed {counts[Category.FAILED]}",
        f"errored {counts[Category.ERRORED]}",
        f"rejected {counts[Category.REJECTED]}",
        f"not saved {counts[Category.NOT_SAVED]}",
    ]
    if counts[Category.UNFINISHED]:
        parts.append(f"unfinished {counts[Category.UNFINISHED]}")
    output.result("  " + ", ".join(parts))
    if report.resumed:
        output.result(
            f"  resumed from the journal: {report.resumed} input"
            f"{'' if report.resumed == 1 else 's'} submitted by an earlier run, "
            f"{report.skipped} already saved (not downloaded again)"
        )
    cost = f"estimated cost ${stats.cost_usd:.3f} for {stats.submitted} job"
    cost += "" if stats.submitted == 1 else "s"
    if report.emulated:
        cost += " (emulated: nothing was charged)"
    output.result(f"  {cost}, {stats.status_calls_per_job:.2f} status calls per job")
    output.result(
        f"  latency per job: p50 {_seconds(percentile(report.latencies, 50))}, "
        f"p95 {_seconds(percentile(report.latencies, 95))}"
    )


def print_stop(report: Report, output: Output) -> None:
    """On stderr: what stopped the run, where reading stopped, and the jobs left running.

    Printed whenever a paid job is left unfinished, so that no paid job is lost.
    """
    stopped = report.interrupted or report.stop_error is not None
    if report.interrupted:
        output.error("interrupted: nothing more was submitted")
    elif report.stop_error is not None:
        output.error(f"the run stopped: {report.stop_error}")
        hint = _HINTS.get(type(report.stop_error))
        if hint is not None:
            output.note(hint)
    if stopped and report.last_line is not None:
        output.note(
            f"{report.source_name} was read up to line {report.last_line}; "
            "the lines after it were not read"
        )
    ids = report.unfinished_request_ids
    if ids:
        output.note(
            f"{len(ids)} paid job{'' if len(ids) == 1 else 's'} not seen finished "
            f"(check with `real-esrgan status REQUEST_ID`):"
        )
        for request_id in ids:
            output.note(f"  {request_id}")
    elif stopped:
        output.note("no paid job was left unfinished")
    if report.ambiguous:
        output.note(
            f"{report.ambiguous} submit{'' if report.ambiguous == 1 else 's'} may or may not "
            "have created a job: check the provider's dashboard, then rerun with "
            "--resubmit-ambiguous to submit them again (each may be paid for twice)"
        )


_HINTS: dict[type[BaseException], str] = {
    AuthenticationError: "check the key: --api-key or the REAL_ESRGAN_API_KEY variable",
    PermissionDeniedError: "this key may not use the Real-ESRGAN model; check its permissions",
    InsufficientBalanceError: "top up the wallet, then rerun the inputs that were not "
    "submitted (--json lists them as rejected or unfinished)",
    JournalLockedError: "another real-esrgan is running this batch: wait for it, or stop it",
    JournalMismatchError: "for a new list, pass --journal PATH (or --no-journal, or another "
    "--out); to resume, pass the same list as before",
}


def _entry_json(entry: Entry) -> dict[str, Any]:
    error = None
    if entry.error_type is not None:
        error = {"type": entry.error_type, "message": entry.error_message}
    return {
        "index": entry.index,
        "line": entry.line,
        "url": entry.url,
        "ok": entry.ok,
        "status": entry.category.value,
        "request_id": entry.request_id,
        "output": None if entry.output is None else str(entry.output),
        "error": error,
        "latency_s": None if entry.latency is None else round(entry.latency, 3),
        "resumed": entry.resumed,
        "skipped": entry.skipped,
    }


def json_document(report: Report) -> str:
    """The ``--json`` document: a summary and one entry per input, in input order."""
    stats = report.stats
    stop = report.stop_error
    p50 = percentile(report.latencies, 50)
    p95 = percentile(report.latencies, 95)
    summary: dict[str, Any] = {
        "inputs": report.inputs,
        **{category.value: count for category, count in report.counts.items()},
        "resumed": report.resumed,
        "skipped": report.skipped,
        "jobs_submitted": stats.submitted,
        "cost_usd": stats.cost_usd,
        "emulated": report.emulated,
        "status_calls": stats.status_calls,
        "status_calls_per_job": round(stats.status_calls_per_job, 3),
        "latency_p50_s": None if p50 is None else round(p50, 3),
        "latency_p95_s": None if p95 is None else round(p95, 3),
        "wall_time_s": round(report.wall_time, 3),
        "out_dir": str(report.out_dir),
        "exit_code": int(report.exit_code()),
        "interrupted": report.interrupted,
        "stopped_by": None
        if stop is None
        else {"type": type(stop).__name__, "message": one_line(str(stop))},
        "unfinished_request_ids": list(report.unfinished_request_ids),
    }
    results = [_entry_json(entry) for entry in sorted(report.entries, key=lambda e: e.index)]
    return json.dumps({"summary": summary, "results": results}, indent=2)
