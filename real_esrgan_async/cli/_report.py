"""What a batch run did, filled in as outcomes arrive.

The report is complete at every moment, so a run stopped by Ctrl+C or by the
gateway can still be summarised, with the ids of the jobs it paid for.
"""

from __future__ import annotations

import enum
from pathlib import Path

import attrs

from real_esrgan_async import (
    AmbiguousSubmitError,
    AuthenticationError,
    InsufficientBalanceError,
    JobFailedError,
    JournalLockedError,
    JournalMismatchError,
    Outcome,
    PermissionDeniedError,
    Stats,
)

from ._exitcodes import ExitCode

__all__ = ["Category", "Entry", "Report", "classify"]

#: Errors that stop a whole run: every further call would be refused too.
REFUSALS = (AuthenticationError, PermissionDeniedError, InsufficientBalanceError)
#: A journal of another batch, or one in use: the command was used wrongly.
JOURNAL_MISUSE = (JournalLockedError, JournalMismatchError)


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
        if self.stop_error is not None or self.counts[Category.COMPLETED] != self.inputs:
            return ExitCode.INCOMPLETE
        return ExitCode.OK
