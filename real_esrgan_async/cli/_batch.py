"""The one batch runner behind ``upscale``, ``batch`` and ``demo``.

It is built on `AsyncRealESRGAN.upscale_many`: inputs are pulled lazily, at
most ``--concurrency`` jobs are in flight, and each COMPLETED output is saved as
soon as its outcome arrives. Downloads run concurrently in a task group of
their own, at most `MAX_DOWNLOADS` at once; when they are all busy the loop
waits, so a slow disk slows submission instead of piling up finished jobs.

Each input's latency is measured by wrapping the input iterator: the clock
starts when the fan-out pulls the input and stops when its outcome arrives.

With a journal (``batch``'s default), the run opens it for as long as the
downloads last and marks each saved output in it; a rerun skips the outputs
saved and still on disk, and downloads the ones that were not.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Self

import anyio
import anyio.abc
import attrs

from real_esrgan_async import (
    AsyncRealESRGAN,
    DownloadError,
    JournalError,
    Outcome,
    RealESRGANError,
    SQLiteJournal,
)

from ._inputs import Input, InputError
from ._naming import output_name
from ._output import Output, one_line
from ._progress import Progress
from ._report import Category, Entry, Report, classify

__all__ = ["MAX_DOWNLOADS", "BatchOptions", "run_batch"]

#: Outputs downloaded at once, at most (HTTP is also bounded by the client's pool).
MAX_DOWNLOADS = 8


@attrs.frozen(kw_only=True)
class BatchOptions:
    """What to ask of each job, and where to put the results.

    Attributes:
        scale: Upscaling factor, 1 to 4.
        face_enhance: Apply face enhancement.
        out_dir: Existing directory for the outputs.
        concurrency: Jobs in flight at once, at most.
        job_timeout: Seconds to wait on each job, or None to wait as long as it takes.
        journal: The batch's journal, to resume it after a crash; None for none.
        resubmit_ambiguous: Submit again the inputs the journal says may or may
            not have been submitted.
    """

    scale: int
    face_enhance: bool
    out_dir: Path
    concurrency: int
    job_timeout: float | None = None
    journal: Path | None = None
    resubmit_ambiguous: bool = False


@attrs.frozen
class _Taken:
    """An input the fan-out pulled, and when."""

    input: Input
    at: float


class _TimedInputs:
    """The inputs as `upscale_many` sees them (URLs), remembering when each was pulled.

    The fan-out numbers inputs in the order it pulls them, so the n-th URL handed
    out here is the outcome with ``index == n``.
    """

    def __init__(self, inputs: AsyncIterator[Input]) -> None:
        self._inputs = inputs
        self._next_index = 0
        #: Pulled inputs whose outcome has not arrived yet.
        self.taken: dict[int, _Taken] = {}

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        item = await anext(self._inputs)
        self.taken[self._next_index] = _Taken(item, anyio.current_time())
        self._next_index += 1
        return item.url


async def run_batch(
    client: AsyncRealESRGAN,
    inputs: AsyncIterator[Input],
    options: BatchOptions,
    *,
    report: Report,
    progress: Progress,
    output: Output,
) -> None:
    """Upscale every input, save the outputs, and record everything in `report`.

    Returns normally when the run ends, also when the gateway refused the key or
    the wallet, or the batch file became unreadable: that is `report.stop_error`.
    Whatever happens, including a cancellation (Ctrl+C), `report` ends up
    holding every input taken, the stats and the ids of the jobs left unfinished.

    Args:
        client: An open client.
        inputs: The URLs, pulled lazily.
        options: Scale, output directory, concurrency.
        report: Filled in as outcomes arrive.
        progress: Told about every change.
        output: Where each input that is not saved gets a line on stderr.
    """
    runner = _Runner(client, options, report, progress, output)
    timed = _TimedInputs(inputs)
    started = anyio.current_time()
    try:
        # The journal outlives the downloads: each one marks its output saved.
        async with _opened(options.journal) as journal, anyio.create_task_group() as downloads:
            runner.journal = journal
            try:
                await runner.consume(timed, downloads)
            except (RealESRGANError, InputError) as exc:
                # Raised by the loop after the outcomes it could yield; downloads
                # already started still finish (they were paid for).
                report.stop_error = exc
    except JournalError as exc:  # it could not be opened: locked, or not a journal
        report.stop_error = exc
    finally:
        # Inputs pulled whose outcome never came: the run stopped first.
        reason = "interrupted" if report.stop_error is None else type(report.stop_error).__name__
        for index, taken in sorted(timed.taken.items()):
            runner.record(
                Entry(
                    index=index,
                    line=taken.input.line,
                    url=taken.input.url,
                    category=Category.UNFINISHED,
                    error_type=reason,
                    error_message="the run stopped before this input's outcome arrived",
                ),
                quiet=True,
            )
        report.unfinished_request_ids = client.unfinished_request_ids
        report.stats = client.stats()
        report.wall_time = anyio.current_time() - started


@contextlib.asynccontextmanager
async def _opened(path: Path | None) -> AsyncIterator[SQLiteJournal | None]:
    if path is None:
        yield None
        return
    async with SQLiteJournal(path) as journal:
        yield journal


class _Runner:
    """The loop over outcomes, the download tasks and the bookkeeping they share."""

    def __init__(
        self,
        client: AsyncRealESRGAN,
        options: BatchOptions,
        report: Report,
        progress: Progress,
        output: Output,
    ) -> None:
        self._client = client
        self._options = options
        self._report = report
        self._progress = progress
        self._output = output
        self._download_slots = anyio.Semaphore(min(options.concurrency, MAX_DOWNLOADS))
        self.journal: SQLiteJournal | None = None
        # Outputs are marked saved by absolute path: a rerun from another directory finds them.
        self._saved_dir = Path(os.path.abspath(options.out_dir))

    async def consume(self, timed: _TimedInputs, downloads: anyio.abc.TaskGroup) -> None:
        options = self._options
        run = self._client.upscale_many(
            timed,
            scale=options.scale,
            face_enhance=options.face_enhance,
            max_in_flight=options.concurrency,
            job_timeout=options.job_timeout,
            journal=self.journal,
            resubmit_ambiguous=options.resubmit_ambiguous,
        )
        async with run:
            async for outcome in run:
                taken = timed.taken.pop(outcome.index)
                latency = None
                # A job has a latency worth counting, unless an earlier run started it.
                if outcome.request_id is not None and not outcome.resumed:
                    latency = anyio.current_time() - taken.at
                if outcome.saved_to is not None and await anyio.Path(outcome.saved_to).is_file():
                    self.record(_skipped(outcome, taken.input))
                elif outcome.ok:
                    await self._download_slots.acquire()
                    downloads.start_soon(self._save, outcome, taken.input, latency)
                else:
                    self.record(_failure(outcome, taken.input, latency))

    async def _save(self, outcome: Outcome, item: Input, latency: float | None) -> None:
        state = outcome.result
        assert state is not None  # outcome.ok
        # What is recorded if the download never ends (Ctrl+C): the job was paid for,
        # so the entry says how to get its output.
        interrupted = Entry(
            index=outcome.index,
            line=item.line,
            url=item.url,
            category=Category.NOT_SAVED,
            request_id=outcome.request_id,
            error_type="Interrupted",
            error_message=f"stopped before the output of job {outcome.request_id} was saved; "
            "its URL stays valid for about an hour (see `real-esrgan status`)",
            latency=latency,
            resumed=outcome.resumed,
        )
        entry = interrupted
        try:
            dest = self._options.out_dir / output_name(outcome.index, item.url)
            saved = await self._client.download(state, dest)
            assert isinstance(saved, Path)  # a destination was given
            if self.journal is not None:
                self.journal.mark_saved(outcome.index, self._saved_dir / saved.name)
            entry = attrs.evolve(
                interrupted,
                category=Category.COMPLETED,
                output=saved,
                error_type=None,
                error_message=None,
            )
        except (DownloadError, OSError, JournalError) as exc:
            entry = attrs.evolve(
                interrupted, error_type=type(exc).__name__, error_message=one_line(str(exc))
            )
        finally:
            self._download_slots.release()
            self.record(entry)

    def record(self, entry: Entry, *, quiet: bool = False) -> None:
        """Add `entry` to the report; give a line on stderr to each input not saved."""
        self._report.add(entry)
        self._progress.on_report(self._report)
        if not entry.ok and not quiet:
            self._output.note(f"{self._where(entry)} {entry.url}: {_describe(entry)}")

    def _where(self, entry: Entry) -> str:
        source = self._report.source_name
        return f"{source}:{entry.line}:" if source is not None else f"#{entry.index}"


def _skipped(outcome: Outcome, item: Input) -> Entry:
    """An output an earlier run saved (the journal says so, and the file is there)."""
    assert outcome.saved_to is not None
    return Entry(
        index=outcome.index,
        line=item.line,
        url=item.url,
        category=Category.COMPLETED,
        request_id=outcome.request_id,
        output=Path(outcome.saved_to),
        resumed=True,
        skipped=True,
    )


def _failure(outcome: Outcome, item: Input, latency: float | None) -> Entry:
    error = outcome.error
    return Entry(
        index=outcome.index,
        line=item.line,
        url=item.url,
        category=classify(outcome),
        request_id=outcome.request_id,
        error_type=None if error is None else type(error).__name__,
        error_message=None if error is None else one_line(str(error)),
        latency=latency,
        resumed=outcome.resumed,
    )


def _describe(entry: Entry) -> str:
    what = entry.category.value.replace("_", " ")
    return f"{what}: {entry.error_message}" if entry.error_message else what
