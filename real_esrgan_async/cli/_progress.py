"""The live progress bar on stderr, or nothing.

The bar is shown only on a terminal and never with ``--json``. It shows counts
and the estimated cost, never a URL or the key. It is drawn with ``rich`` (the
``cli`` extra), imported only when a bar is drawn; without it the command
simply runs without a bar.
"""

from __future__ import annotations

from typing import Protocol

from real_esrgan_async import Stats

from ._output import Output
from ._report import Category, Report

__all__ = ["NoProgress", "Progress", "RichProgress", "make_progress", "wants_progress"]


class Progress(Protocol):
    """What the batch runner tells the bar."""

    def start(self) -> None:
        """Show the bar."""

    def stop(self) -> None:
        """Remove the bar (the summary follows)."""

    def on_stats(self, stats: Stats) -> None:
        """The client submitted or saw finish a job (its `on_progress` hook)."""

    def on_report(self, report: Report) -> None:
        """An input's fate was recorded."""


class NoProgress:
    """No bar: for ``--json``, pipes, files and CI logs."""

    def start(self) -> None:
        """Do nothing."""

    def stop(self) -> None:
        """Do nothing."""

    def on_stats(self, stats: Stats) -> None:
        """Do nothing."""

    def on_report(self, report: Report) -> None:
        """Do nothing."""


def wants_progress(output: Output, *, json: bool) -> bool:
    """Whether a bar belongs on this run's stderr: a terminal, and no ``--json``."""
    return not json and is_terminal(output)


def is_terminal(output: Output) -> bool:
    """Whether stderr is an interactive terminal."""
    isatty = getattr(output.stderr, "isatty", None)
    return bool(isatty is not None and isatty())


def make_progress(output: Output, *, enabled: bool, total: int | None, label: str) -> Progress:
    """A rich progress bar when `enabled` and rich is installed, else `NoProgress`.

    Args:
        output: The command's streams (the bar draws on its stderr).
        enabled: Whether a bar is wanted (see `wants_progress`).
        total: How many inputs there are, when known.
        label: The bar's description.
    """
    if not enabled:
        return NoProgress()
    try:
        return RichProgress(output, total=total, label=label)
    except ImportError:  # rich is the optional `cli` extra
        return NoProgress()


class RichProgress:
    """A live bar on stderr: inputs done (of how many, when known), jobs in flight, cost.

    Args:
        output: The command's streams; while the bar runs, its notes print above the bar.
        total: How many inputs there are, or None for a stream of unknown length.
        label: The bar's description.

    Raises:
        ImportError: rich is not installed.
    """

    def __init__(self, output: Output, *, total: int | None, label: str) -> None:
        # rich is loaded only when a bar is drawn.
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._output = output
        # The caller checked that stderr is a terminal.
        self._console = Console(file=output.stderr, force_terminal=True, highlight=False)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self._console,
            transient=True,  # the summary replaces it
            # Our own lines go through `_print`; leave sys.stdout/sys.stderr alone.
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._progress.add_task(label, total=total, detail="", start=False)
        self._stats = Stats()
        self._not_ok = 0
        self._done = 0

    def start(self) -> None:
        """Show the bar; stderr notes now print above it."""
        self._progress.start()
        self._progress.start_task(self._task)
        self._output.stderr_sink = self._print

    def stop(self) -> None:
        """Remove the bar."""
        self._output.stderr_sink = None
        self._progress.stop()

    def on_stats(self, stats: Stats) -> None:
        """Take the client's latest counters."""
        self._stats = stats
        self._refresh()

    def on_report(self, report: Report) -> None:
        """Take the number of inputs done and not ok."""
        self._done = report.inputs
        self._not_ok = report.inputs - report.counts[Category.COMPLETED]
        self._refresh()

    def _refresh(self) -> None:
        stats = self._stats
        detail = f"{stats.in_flight} in flight • {self._not_ok} not ok • ${stats.cost_usd:.3f}"
        self._progress.update(self._task, completed=self._done, detail=detail)

    def _print(self, line: str) -> None:
        # Already masked by Output; markup off, so a "[" in a URL prints as itself.
        self._console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
