"""The one batch runner behind ``upscale``, ``batch`` and ``demo``: inputs in, PNGs out.

**Inputs.** URLs come from the command line, or are read lazily from a file or
stdin: one URL per line; blank lines and lines starting with ``#`` are skipped,
and so is a trailing comment after whitespace (a URL never contains a space).
The file is read a few lines at a time in a worker thread, and only as fast as
the fan-out pulls: a file of a million lines is streamed, and a slow producer
piping into ``-`` never blocks the event loop.

**Names.** Each output is saved as ``<index>-<stem>.png``: ``index`` is the
input's position among the URLs read (from 0, four digits at least, comments
and blank lines not counted) and ``stem`` the input file's name without its
extension, made safe for any file system. So the names are collision-free
within a run, stable across reruns, and readable (``0003-cat.png`` is the
upscaled ``https://example.com/img/cat.jpg``). The output is always a PNG.

**The run.** It is built on `AsyncRealESRGAN.upscale_many`: inputs are pulled
lazily, at most ``--concurrency`` jobs are in flight, and each COMPLETED output
is saved as soon as its outcome arrives. Downloads run concurrently in a task
group of their own, at most `MAX_DOWNLOADS` at once; when they are all busy the
loop waits, so a slow disk slows submission instead of piling up finished jobs.
Each input's latency is measured by wrapping the input iterator: the clock
starts when the fan-out pulls the input and stops when its outcome arrives.

With a journal (``batch``'s default), the run opens it for as long as the
downloads last and marks each saved output in it; a rerun skips the outputs
saved and still on disk, and downloads the ones that were not.

**Execution.** `execute_batch` runs it all from synchronous code: the client,
the event loop, Ctrl+C (turned into a cancellation), and the summary.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import stat
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Self, TextIO

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from real_esrgan_async import (
    AsyncRealESRGAN,
    DownloadError,
    ImageHost,
    InvalidRequestError,
    JournalError,
    Outcome,
    OutputExpiredError,
    RealESRGANError,
    SQLiteJournal,
    Stats,
    Store,
    StoreError,
    UpscaleRun,
)

from ._keyed import KeyedRun
from ._local import Publisher
from ._output import Output, one_line
from ._parser import ExitCode
from ._progress import Progress, make_progress, wants_progress
from ._report import (
    Category,
    Entry,
    GatewayUnreachableError,
    Report,
    classify,
    describe,
    json_document,
    print_stop,
    print_summary,
    unreached,
)

__all__ = [
    "BATCH_ENCODING",
    "MAX_DOWNLOADS",
    "ArgumentInputs",
    "BatchOptions",
    "GatewayAccess",
    "Input",
    "InputError",
    "LineInputs",
    "count_inputs",
    "execute_batch",
    "make_client",
    "output_name",
    "run_batch",
    "url_in_line",
]

# --- inputs

#: How a batch file (and stdin) is decoded: UTF-8, a leading byte order mark skipped.
BATCH_ENCODING = "utf-8-sig"
# Lines read per trip to the worker thread, for a regular file. A pipe or a
# terminal is read one line per trip, so that each URL starts as soon as it arrives.
_FILE_CHUNK = 256
_TRAILING_COMMENT = re.compile(r"\s+#.*$")


@attrs.frozen
class Input:
    """One URL to upscale.

    Attributes:
        line: Where it came from: its line number in the batch file, or its
            position among the command-line URLs (both from 1).
        url: The URL, as given.
    """

    line: int
    url: str


class InputError(Exception):
    """The batch file could not be read (it is gone, unreadable, or not UTF-8 text)."""


class ArgumentInputs:
    """URLs given on the command line, as an async iterator of `Input`.

    Args:
        urls: The URLs, in order.
    """

    def __init__(self, urls: Iterable[str]) -> None:
        self._inputs = iter([Input(n, url) for n, url in enumerate(urls, start=1)])

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Input:
        try:
            return next(self._inputs)
        except StopIteration:
            raise StopAsyncIteration from None


class LineInputs:
    """URLs read lazily from a text stream, one per line, as an async iterator of `Input`.

    The stream is not closed here: whoever opened it closes it.

    Args:
        stream: An open text stream (a file, or stdin).
        name: How to name the stream in error messages (``urls.txt``, ``<stdin>``).
    """

    def __init__(self, stream: TextIO, name: str) -> None:
        self._stream = stream
        self.name = name
        self._chunk = _FILE_CHUNK if _is_regular_file(stream) else 1
        self._buffer: collections.deque[str] = collections.deque()
        self._eof = False
        #: The number of the last line handed out (or skipped): reading stopped there.
        self.last_line = 0

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Input:
        while True:
            if not self._buffer:
                if self._eof:
                    raise StopAsyncIteration
                # abandon_on_cancel: a Ctrl+C must not wait for a pipe that sends nothing.
                lines = await anyio.to_thread.run_sync(self._read_chunk, abandon_on_cancel=True)
                self._eof = len(lines) < self._chunk
                self._buffer.extend(lines)
                continue
            raw = self._buffer.popleft()
            self.last_line += 1
            url = url_in_line(raw)
            if url is not None:
                return Input(self.last_line, url)

    def _read_chunk(self) -> list[str]:
        """Read up to one chunk of lines (in a worker thread)."""
        lines: list[str] = []
        try:
            while len(lines) < self._chunk:
                line = self._stream.readline()
                if not line:
                    break
                lines.append(line)
        except UnicodeDecodeError as exc:
            # The decoder works on blocks, so the bad byte may be a few lines further on.
            where = self.last_line + len(lines) + 1
            raise InputError(f"{self.name} is not UTF-8 text (near line {where})") from exc
        except OSError as exc:
            raise InputError(f"reading {self.name} failed: {exc.strerror or exc}") from exc
        return lines


def url_in_line(line: str) -> str | None:
    """The URL on one line of a batch file, or None for a blank line or a comment."""
    text = _TRAILING_COMMENT.sub("", line.strip())
    return text if text and not text.startswith("#") else None


def count_inputs(path: Path) -> int | None:
    """How many URLs the batch file at `path` lists (for the progress bar's total).

    The file is read once through before the run, which then streams it again.

    Returns:
        The count, or None when `path` is not a regular file (a pipe such as
        ``<(cmd)`` can be read only once) or cannot be read: the bar then shows
        no total, and the run reports the file's problem itself.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, encoding=BATCH_ENCODING, errors="replace") as stream:
            return sum(url_in_line(line) is not None for line in stream)
    except OSError:
        return None


def _is_regular_file(stream: TextIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError):  # io.UnsupportedOperation is both; no descriptor at all
        return False


# --- names of the outputs

_UNSAFE = re.compile(r"[^\w.-]+")
_MAX_STEM = 60


def output_name(index: int, url: str) -> str:
    """The file name for the output of input `index`, read from `url`.

    Args:
        index: The input's position, from 0.
        url: The input URL.

    Returns:
        ``<index>-<stem>.png``, e.g. ``0003-cat.png``; the stem is ``image``
        when the URL names no file.
    """
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:  # a malformed URL still gets a name (it is rejected anyway)
        path = ""
    stem = PurePosixPath(urllib.parse.unquote(path)).stem
    stem = _UNSAFE.sub("_", stem).strip("._-")[:_MAX_STEM] or "image"
    return f"{index:04d}-{stem}.png"


# --- the run

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
        preflight: Read each input's header from its host before paying for
            its job, and refuse (unpaid) one over the model's pixel limit or
            not an image.
        keyed: Submit each input under its idempotency key (``--store``; see
            `_keyed`) instead of through a journal.
    """

    scale: int
    face_enhance: bool
    out_dir: Path
    concurrency: int
    job_timeout: float | None = None
    journal: Path | None = None
    resubmit_ambiguous: bool = False
    preflight: bool = True
    keyed: bool = False


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

    def __init__(self, inputs: AsyncIterator[Input], publisher: Publisher | None = None) -> None:
        self._inputs = inputs
        #: Publishes the local files among the inputs (``--image-host``).
        self.publisher = publisher
        self._next_index = 0
        #: Pulled inputs whose outcome has not arrived yet.
        self.taken: dict[int, _Taken] = {}

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        item = await anext(self._inputs)
        url = item.url
        if self.publisher is not None:
            url = await self.publisher.url_for(self._next_index, item.url)
        self.taken[self._next_index] = _Taken(item, anyio.current_time())
        self._next_index += 1
        return url


async def run_batch(
    client: AsyncRealESRGAN,
    inputs: AsyncIterator[Input],
    options: BatchOptions,
    *,
    report: Report,
    progress: Progress,
    output: Output,
    publisher: Publisher | None = None,
) -> None:
    """Upscale every input, save the outputs, and record everything in `report`.

    Returns normally when the run ends, also when the gateway refused the key or
    the wallet or could not be reached, or the batch file became unreadable: that
    is `report.stop_error`. Whatever happens, including a cancellation (Ctrl+C),
    `report` ends up holding every input taken, the stats and the ids of the jobs
    left unfinished (see `_Runner.record_paid_ids_at_stop`).

    Args:
        client: An open client.
        inputs: The URLs, pulled lazily.
        options: Scale, output directory, concurrency.
        report: Filled in as outcomes arrive.
        progress: Told about every change.
        output: Where each input that is not saved gets a line on stderr.
        publisher: Publishes the local files among the inputs, if any.
    """
    runner = _Runner(client, options, report, progress, output)
    timed = _TimedInputs(inputs, publisher)
    started = anyio.current_time()
    try:
        # The journal outlives the downloads: each one marks its output saved.
        async with _opened(options.journal) as journal, anyio.create_task_group() as downloads:
            runner.journal = journal
            try:
                await runner.consume(timed, downloads)
            except (RealESRGANError, InputError, GatewayUnreachableError) as exc:
                # Raised by the loop after the outcomes it could yield; downloads
                # already started still finish (they were paid for).
                report.stop_error = exc
    except JournalError as exc:  # it could not be opened: locked, or not a journal
        report.stop_error = exc
    finally:
        runner.record_paid_ids_at_stop(timed)
        if publisher is not None:
            await publisher.aclose()
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
        #: The fan-out, once started.
        self.run: UpscaleRun | KeyedRun | None = None
        # Outputs are marked saved by absolute path: a rerun from another directory finds them.
        self._saved_dir = Path(os.path.abspath(options.out_dir))

    async def consume(self, timed: _TimedInputs, downloads: anyio.abc.TaskGroup) -> None:
        options = self._options
        run: UpscaleRun | KeyedRun
        if options.keyed:
            # Once upscale_many takes `idempotency_key=(index, image) -> key`, this is the
            # call below plus `idempotency_key=lambda _, url: idempotency_key(url, ...)`.
            run = KeyedRun(
                self._client,
                timed,
                scale=options.scale,
                face_enhance=options.face_enhance,
                max_in_flight=options.concurrency,
                job_timeout=options.job_timeout,
            )
        else:
            run = self._client.upscale_many(
                timed,
                scale=options.scale,
                face_enhance=options.face_enhance,
                max_in_flight=options.concurrency,
                job_timeout=options.job_timeout,
                journal=self.journal,
                resubmit_ambiguous=options.resubmit_ambiguous,
            )
        self.run = run
        async with run:
            async for outcome in run:
                taken = timed.taken.pop(outcome.index)
                if timed.publisher is not None:
                    timed.publisher.finished(outcome)
                latency = None
                # A job has a latency worth counting, unless an earlier run started it.
                if outcome.request_id is not None and not outcome.resumed:
                    latency = anyio.current_time() - taken.at
                if outcome.saved_to is not None and await anyio.Path(outcome.saved_to).is_file():
                    self.record(_skipped(outcome, taken.input))
                elif isinstance(outcome.error, OutputExpiredError) and await self._saved_before(
                    outcome, taken.input
                ):
                    pass  # recorded as saved by an earlier run
                elif outcome.ok:
                    await self._download_slots.acquire()
                    downloads.start_soon(self._save, outcome, taken.input, latency)
                else:
                    self.record(_failure(outcome, taken.input, latency))
                    if unreached(outcome):
                        # Every further submit would fail alike (the client has already
                        # retried this one): stop now rather than reject every input.
                        raise GatewayUnreachableError(str(self._client.base_url), outcome.error)

    async def _saved_before(self, outcome: Outcome, item: Input) -> bool:
        """With ``--store``: a key whose job finished over an hour ago (its output URLs are
        gone) and whose output is on disk under its name was saved by an earlier run."""
        dest = self._options.out_dir / output_name(outcome.index, item.url)
        if not await anyio.Path(dest).is_file():
            return False
        saved = Entry(
            index=outcome.index,
            line=item.line,
            url=item.url,
            category=Category.COMPLETED,
            request_id=outcome.request_id,
            output=dest,
            resumed=True,
            skipped=True,
        )
        self.record(saved)
        return True

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

    def record_paid_ids_at_stop(self, timed: _TimedInputs) -> None:
        """Account for the run's end, however it came (done, Ctrl+C, a stop, --timeout).

        The one place where a stopped run's paid ids reach the report, and so the
        summary, the stop message and ``--json``: the jobs paid for and not seen
        finished (the run's and the client's, as the client also tracks jobs whose
        outcome the run did not deliver); and each input pulled whose outcome
        never came, as unfinished.
        """
        reason = (
            "interrupted"
            if self._report.stop_error is None
            else type(self._report.stop_error).__name__
        )
        # Outcomes that finished but were never handed to the loop: each is a paid job
        # (or an input's final answer) that must not vanish from the report.
        unconsumed = {o.index: o for o in self._client.take_unconsumed_outcomes()}
        if self.run is not None:
            unconsumed.update((o.index, o) for o in self.run.unconsumed_outcomes)
        for index, outcome in sorted(unconsumed.items()):
            taken = timed.taken.pop(index, None)
            if taken is None:
                continue
            if outcome.ok:
                entry = Entry(
                    index=index,
                    line=taken.input.line,
                    url=taken.input.url,
                    category=Category.NOT_SAVED,
                    request_id=outcome.request_id,
                    error_type=reason,
                    error_message=f"job {outcome.request_id} finished, but the run stopped "
                    "before its output was saved; its URL stays valid for about an hour "
                    "(see `real-esrgan status`)",
                    resumed=outcome.resumed,
                )
            else:
                entry = _failure(outcome, taken.input, None)
            self.record(entry, quiet=True)
        for index, taken in sorted(timed.taken.items()):
            self.record(
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
        run_ids = () if self.run is None else self.run.unfinished_request_ids
        # dict.fromkeys: both orders kept, each id once.
        ids = dict.fromkeys((*run_ids, *self._client.unfinished_request_ids))
        self._report.unfinished_request_ids = tuple(ids)

    def record(self, entry: Entry, *, quiet: bool = False) -> None:
        """Add `entry` to the report; give a line on stderr to each input not saved."""
        self._report.add(entry)
        self._progress.on_report(self._report)
        if not entry.ok and not quiet:
            self._output.note(f"{self._where(entry)} {entry.url}: {describe(entry)}")

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


# --- execution from synchronous code


@attrs.frozen(repr=False)
class GatewayAccess:
    """Which gateway to use, and with which key (kept out of any repr).

    Attributes:
        api_key: The key.
        base_url: The gateway's origin.
    """

    api_key: str
    base_url: str

    def __repr__(self) -> str:
        return f"GatewayAccess(base_url={self.base_url!r})"


def make_client(
    gateway: GatewayAccess,
    *,
    on_progress: Callable[[Stats], None] | None = None,
    preflight: bool = False,
    store: Store | None = None,
) -> AsyncRealESRGAN:
    """A client for `gateway`.

    Args:
        gateway: Where to send the jobs, and the key.
        on_progress: Called with the client's stats on each change.
        preflight: Read each input's header before paying for its job.
        store: Where idempotency keys are recorded (``--store``).

    Raises:
        InvalidRequestError: The base URL is malformed.
    """
    return AsyncRealESRGAN(
        gateway.api_key,
        base_url=gateway.base_url,
        on_progress=on_progress,
        preflight=preflight,
        store=store,
    )


def execute_batch(
    output: Output,
    gateway: GatewayAccess,
    inputs: AsyncIterator[Input],
    options: BatchOptions,
    *,
    backend: str,
    json: bool,
    total: int | None,
    emulated: bool = False,
    image_host: ImageHost | None = None,
    store: Store | None = None,
) -> ExitCode:
    """Run a batch to its end, print its summary and say how the command should exit.

    Args:
        output: The command's streams.
        gateway: Where to send the jobs.
        inputs: The URLs; a `LineInputs` makes errors name the file and line.
        options: Scale, output directory, concurrency, timeout.
        backend: ``"asyncio"`` or ``"trio"``.
        json: Print the JSON document instead of the human summary.
        total: How many inputs there are, when known (for the progress bar).
        emulated: The gateway is the embedded emulator (nothing is charged).
        image_host: Publishes the local files among the inputs.
        store: Where the idempotency keys of a keyed batch are recorded.

    Returns:
        The exit status (see `ExitCode`).
    """
    try:
        options.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        output.error(f"cannot create the output directory {options.out_dir}: {exc.strerror}")
        return ExitCode.USAGE
    report = Report(out_dir=options.out_dir, keep_entries=json, emulated=emulated)
    source = inputs if isinstance(inputs, LineInputs) else None
    report.source_name = None if source is None else source.name
    report.journal = options.journal
    progress = make_progress(
        output, enabled=wants_progress(output, json=json), total=total, label="upscaling"
    )
    try:
        client = make_client(
            gateway, on_progress=progress.on_stats, preflight=options.preflight, store=store
        )
    except InvalidRequestError as exc:  # a malformed --base-url
        output.error(str(exc))
        return ExitCode.USAGE

    refused: list[StoreError] = []

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(client)
            except StoreError as exc:  # unreachable, or another version's: nothing was sent
                refused.append(exc)
                return
            progress.start()
            try:
                async with anyio.create_task_group() as run_scope:
                    run_scope.start_soon(_cancel_on_ctrl_c, run_scope.cancel_scope, report)
                    await run_batch(
                        client,
                        inputs,
                        options,
                        report=report,
                        progress=progress,
                        output=output,
                        publisher=None if image_host is None else Publisher(image_host),
                    )
                    run_scope.cancel_scope.cancel()  # done: stop listening for Ctrl+C
            finally:
                progress.stop()

    try:
        anyio.run(main, backend=backend)
    except* KeyboardInterrupt:
        # Bare from asyncio; on trio it may come out of a task group, in a group.
        # The run has already unwound: submission stopped, and the report holds
        # the ids of the jobs paid for and still running.
        report.interrupted = True
    if refused:
        output.error(str(refused[0]))  # names the store, never its password
        return ExitCode.USAGE
    if source is not None:
        report.last_line = source.last_line
    if json:
        output.document(json_document(report))
    else:
        print_summary(report, output)
    print_stop(report, output)
    return report.exit_code()


async def _cancel_on_ctrl_c(scope: anyio.CancelScope, report: Report) -> None:
    """Turn the first Ctrl+C into a cancellation of the run.

    A KeyboardInterrupt can be raised in the middle of any unprotected code (on
    trio, even between a paid POST's answer and the recording of its id); a
    cancellation unwinds through the library's shields instead, so every paid id
    is kept. A second Ctrl+C, once this receiver is gone, interrupts as usual.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach only the main thread: Ctrl+C stays a KeyboardInterrupt there
    with anyio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            report.interrupted = True
            scope.cancel()
            return
