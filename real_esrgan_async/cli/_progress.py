"""The live progress bar on stderr, or nothing.

The bar is shown only on a terminal and never with ``--json``. It shows counts
and the estimated cost, never a URL or the key. It needs ``rich`` (the ``cli``
extra); without it the command simply runs without a bar.
"""

from __future__ import annotations

from typing import Protocol

from real_esrgan_async import Stats

from ._output import Output
from ._report import Report

__all__ = ["NoProgress", "Progress", "make_progress", "wants_progress"]


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
        total: How many inputs there are, when known (not for a streamed file).
        label: The bar's description.
    """
    if not enabled:
        return NoProgress()
    try:
        # rich is the optional `cli` extra, and is loaded only when a bar is drawn.
        from ._richbar import RichProgress  # noqa: PLC0415
    except ImportError:
        return NoProgress()
    return RichProgress(output, total=total, label=label)
