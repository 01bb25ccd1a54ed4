"""The progress bar, drawn with rich (imported only when a bar is shown)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from real_esrgan_async import Stats

from ._output import Output
from ._report import Category, Report

__all__ = ["RichProgress"]


class RichProgress:
    """A live bar on stderr: inputs done (of how many, when known), jobs in flight, cost.

    Args:
        output: The command's streams; while the bar runs, its notes print above the bar.
        total: How many inputs there are, or None for a stream of unknown length.
        label: The bar's description.
    """

    def __init__(self, output: Output, *, total: int | None, label: str) -> None:
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
