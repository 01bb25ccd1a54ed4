"""What a batch run did, and how the commands print it: for people and as JSON.

The report is filled in as outcomes arrive and is complete at every moment, so
a run stopped by Ctrl+C or by the gateway can still be summarised, with the ids
of the jobs it paid for. At the end it is printed as a few lines for people, or
as one JSON document for scripts.

Latency is measured per input, from the moment the fan-out pulled it from the
input stream to the moment its outcome arrived (the output's download is not
included), and only for inputs that became jobs: a URL rejected before sending
would pull the percentiles towards zero.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from real_esrgan_async import (
    AmbiguousSubmitError,
    APIConnectionError,
    AuthenticationError,
    InsufficientBalanceError,
    JobFailedError,
    JobState,
    JournalLockedError,
    JournalMismatchError,
    Outcome,
    PermissionDeniedError,
    Stats,
)
from real_esrgan_async._client import API_KEY_ENV

from ._output import Output, one_line, shorten
from ._parser import BASE_URL_ENV, ExitCode

__all__ = [
    "JOURNAL_MISUSE",
    "REFUSALS",
    "Category",
    "Entry",
    "GatewayUnreachableError",
    "Report",
    "classify",
    "describe",
    "failure_hint",
    "json_document",
    "percentile",
    "print_state",
    "print_stop",
    "print_summary",
    "state_json",
    "unreached",
]

#: Errors that stop a whole run: every further call would be refused too.
REFUSALS = (AuthenticationError, PermissionDeniedError, InsufficientBalanceError)
#: A journal of another batch, or one in use: the command was used wrongly.
JOURNAL_MISUSE = (JournalLockedError, JournalMismatchError)


class GatewayUnreachableError(Exception):
    """No connection to the gateway could be made (after the client's retries): the run stops.

    Args:
        base_url: The gateway's origin, as the command was told.
        cause: The library's error, for its details.
    """

    def __init__(self, base_url: str, cause: BaseException | None) -> None:
        detail = "" if cause is None else f" ({one_line(str(cause))})"
        super().__init__(f"cannot reach the gateway at {base_url}{detail}")
        self.base_url = base_url


def unreached(outcome: Outcome) -> bool:
    """Whether `outcome` says that the gateway could not be reached: no job, no connection.

    A submit that failed *after* it was sent is an `AmbiguousSubmitError`, not this.
    """
    return outcome.request_id is None and isinstance(outcome.error, APIConnectionError)


class Category(enum.StrEnum):
    """What became of one input."""

    #: The job COMPLETED and its output was saved.
    COMPLETED = "completed"
    #: The job ended FAILED (bad input image; charged).
    FAILED = "failed"
    #: The job ended ERROR (not charged), timed out, could not be checked, or its
    #: submit failed after it was sent (a job may exist).
    ERRORED = "errored"
    #: No job was created: the input was refused before anything was paid.
    REJECTED = "rejected"
    #: The job COMPLETED but its output could not be saved (see the request id).
    NOT_SAVED = "not_saved"
    #: The run stopped before this input's outcome arrived.
    UNFINISHED = "unfinished"


@attrs.frozen(kw_only=True)
class Entry:
    """The fate of one input.

    Attributes:
        index: Position among the inputs read, from 0 (comments and blank lines not counted).
        line: Line of the batch file, or position on the command line, from 1.
        url: The input URL as given.
        category: What became of it.
        request_id: The job's id, once one was created (and paid for).
        output: Where the output was saved.
        error_type: The class name of the error, if any.
        error_message: The error, in one line.
        latency: Seconds from reading the input to its outcome, for inputs that became jobs
            in this run.
        resumed: An earlier run (per the journal) submitted it.
        skipped: An earlier run saved its output, still on disk: it was not downloaded again.
    """

    index: int
    line: int
    url: str
    category: Category
    request_id: str | None = None
    output: Path | None = None
    error_type: str | None = None
    error_message: str | None = None
    latency: float | None = None
    resumed: bool = False
    skipped: bool = False

    @property
    def ok(self) -> bool:
        """True when the input was upscaled and saved."""
        return self.category is Category.COMPLETED


def classify(outcome: Outcome) -> Category:
    """The category of an outcome that is not a success (downloads are judged elsewhere)."""
    if outcome.request_id is None:
        # No id: either refused before sending, or sent with an unknown fate.
        if isinstance(outcome.error, AmbiguousSubmitError):
            return Category.ERRORED
        return Category.REJECTED
    if isinstance(outcome.error, JobFailedError):
        return Category.FAILED
    return Category.ERRORED


#: What the model's verbatim failure messages mean, for people (see the domain notes).
_FAILURE_HINTS = (
    ("'NoneType' object has no attribute 'shape'", "could not decode the input image"),
    (
        "greater than the max size that fits in GPU memory",
        "the input image has too many pixels for the model (at most 2,096,704, such as "
        "1448x1448): resize it",
    ),
)


def failure_hint(message: str | None) -> str | None:
    """What a known failure message from the model means, in plain words, or None."""
    if message is not None:
        for known, hint in _FAILURE_HINTS:
            if known in message:
                return hint
    return None


def describe(entry: Entry) -> str:
    """An input's fate in a few words, for its line on stderr (a long error shortened)."""
    what = entry.category.value.replace("_", " ")
    if not entry.error_message:
        return what
    hint = failure_hint(entry.error_message)
    message = shorten(entry.error_message, in_json=True)
    return f"{what}: {hint} ({message})" if hint else f"{what}: {message}"


class Report:
    """Everything a batch run did; the summary and the ``--json`` document are read from it.

    Args:
        out_dir: Where outputs are saved.
        keep_entries: Keep one `Entry` per input (for ``--json``). Without it
            only counts and latencies are kept, so a run of millions stays small.
        emulated: The run went to the embedded emulator (nothing was charged).
    """

    def __init__(self, *, out_dir: Path, keep_entries: bool, emulated: bool = False) -> None:
        self.out_dir = out_dir
        self.keep_entries = keep_entries
        self.emulated = emulated
        self.counts: dict[Category, int] = dict.fromkeys(Category, 0)
        self.entries: list[Entry] = []
        self.latencies: list[float] = []
        #: Inputs an earlier run submitted (per the journal); those it had saved.
        self.resumed = 0
        self.skipped = 0
        #: Inputs whose submit may or may not have created a job.
        self.ambiguous = 0
        #: What stopped the run early (a refusal, an unreadable batch file), if anything.
        self.stop_error: BaseException | None = None
        self.interrupted = False
        #: Jobs paid for and not seen finished, when the run ended.
        self.unfinished_request_ids: tuple[str, ...] = ()
        self.stats = Stats()
        self.wall_time = 0.0
        #: For a batch file: the last line read (reading stopped there).
        self.last_line: int | None = None
        self.source_name: str | None = None
        #: The batch's journal, if one is kept (a rerun of the same command resumes from it).
        self.journal: Path | None = None

    def add(self, entry: Entry) -> None:
        """Record the fate of one input."""
        self.counts[entry.category] += 1
        self.resumed += entry.resumed
        self.skipped += entry.skipped
        self.ambiguous += entry.error_type == "AmbiguousSubmitError"
        if entry.latency is not None:
            self.latencies.append(entry.latency)
        if self.keep_entries:
            self.entries.append(entry)

    @property
    def inputs(self) -> int:
        """Inputs read so far."""
        return sum(self.counts.values())

    @property
    def refused(self) -> bool:
        """True when the gateway refused the key or the wallet and the run stopped."""
        return isinstance(self.stop_error, REFUSALS)

    def exit_code(self) -> ExitCode:
        """The command's exit status for this run."""
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.refused:
            return ExitCode.REFUSED
        if isinstance(self.stop_error, JOURNAL_MISUSE):
            return ExitCode.USAGE
        if isinstance(self.stop_error, GatewayUnreachableError):
            return ExitCode.UNREACHABLE
        if self.stop_error is not None or self.counts[Category.COMPLETED] != self.inputs:
            return ExitCode.INCOMPLETE
        return ExitCode.OK


# --- the end of a run, for people and for scripts


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
    if report.journal is not None and report.exit_code() is ExitCode.OK:
        # The journal is closed (and unlocked) by now; it has nothing left to resume.
        output.result(
            f"  every input is saved: the journal {report.journal} has nothing left to resume"
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
    if (stopped or ids) and not isinstance(report.stop_error, JOURNAL_MISUSE):
        _print_rerun(report, output)


def _print_rerun(report: Report, output: Output) -> None:
    """What rerunning the same command does after a stop: resume, or start over."""
    if report.journal is not None:
        output.note(
            f"rerun the same command to resume: the journal {report.journal} keeps every "
            "paid job (polled again, never paid twice) and skips the outputs already saved"
        )
    else:
        output.note(
            "no journal was kept (upscale, stdin, or --no-journal): rerunning the command "
            "submits every input again"
        )


_HINTS: dict[type[BaseException], str] = {
    AuthenticationError: f"check the key: --api-key or the {API_KEY_ENV} variable",
    PermissionDeniedError: "this key may not use the Real-ESRGAN model; check its permissions",
    InsufficientBalanceError: "top up the wallet, then rerun the inputs that were not "
    "submitted (--json lists them as rejected or unfinished)",
    JournalLockedError: "another real-esrgan is running this batch: wait for it, or stop it",
    GatewayUnreachableError: f"check --base-url (or ${BASE_URL_ENV}) and the network; "
    "the inputs not submitted cost nothing",
    JournalMismatchError: "for a new list, pass --journal PATH (or --no-journal, or another "
    "--out); to resume, pass the same list as before",
}


def _entry_json(entry: Entry) -> dict[str, Any]:
    error = None
    if entry.error_type is not None:
        error = {
            "type": entry.error_type,
            "message": entry.error_message,
            "hint": failure_hint(entry.error_message),
        }
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
        "journal": None if report.journal is None else str(report.journal),
        "exit_code": int(report.exit_code()),
        "interrupted": report.interrupted,
        "stopped_by": None
        if stop is None
        else {"type": type(stop).__name__, "message": one_line(str(stop))},
        "unfinished_request_ids": list(report.unfinished_request_ids),
    }
    results = [_entry_json(entry) for entry in sorted(report.entries, key=lambda e: e.index)]
    return json.dumps({"summary": summary, "results": results}, indent=2)


# --- one job's state (`real-esrgan status`)


def state_json(state: JobState) -> dict[str, Any]:
    """A job state as JSON-ready data (timestamps in ISO 8601, UTC), its outputs flattened.

    Built on `JobState.to_json`, the library's one serialiser of a state.
    """
    document: dict[str, Any] = {}
    for field, value in state.to_json().items():
        if field == "output":
            document["media_urls"] = list(value["media_url"]) if value else []
            document["media_type"] = value["media_type"] if value else None
        else:
            document[field] = value
    return document


def print_state(document: dict[str, Any], output: Output) -> None:
    for field, value in document.items():
        if field == "media_urls":
            for url in value or ["-"]:
                output.result(f"{'media_url':<13} {url}")
        elif field == "error" and value is not None:
            output.result(f"{field:<13} {shorten(value, in_json=True)}")
            hint = failure_hint(value)
            if hint is not None:
                output.result(f"{'hint':<13} {hint}")
        else:
            output.result(f"{field:<13} {'-' if value is None else value}")
