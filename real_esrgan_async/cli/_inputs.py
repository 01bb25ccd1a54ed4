"""The command's inputs: URLs from the command line, or read lazily from a file or stdin.

A batch file holds one URL per line. Blank lines and lines starting with ``#``
are skipped, and so is a trailing comment after whitespace (a URL never
contains a space). The file is read a few lines at a time in a worker thread,
and only as fast as the fan-out pulls: a file of a million lines is streamed,
and a slow producer piping into ``-`` never blocks the event loop.
"""

from __future__ import annotations

import collections
import os
import re
import stat
from collections.abc import Iterable
from typing import Self, TextIO

import anyio
import anyio.to_thread
import attrs

__all__ = ["ArgumentInputs", "Input", "InputError", "LineInputs"]

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
            text = _TRAILING_COMMENT.sub("", raw.strip())
            if text and not text.startswith("#"):
                return Input(self.last_line, text)

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


def _is_regular_file(stream: TextIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError):  # io.UnsupportedOperation is both; no descriptor at all
        return False
