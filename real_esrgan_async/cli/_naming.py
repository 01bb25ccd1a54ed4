"""Names of the saved outputs: ``<index>-<stem>.png``.

``index`` is the input's position among the URLs read (from 0, four digits at
least, comments and blank lines not counted) and ``stem`` the input file's name
without its extension, made safe for any file system. So the names are:

- collision-free within a run, even when two URLs end in the same file name;
- stable: the same input list gives the same names (a rerun replaces them);
- readable: ``0003-cat.png`` is the upscaled ``https://example.com/img/cat.jpg``.

The output is always a PNG, whatever the input's format.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import PurePosixPath

__all__ = ["output_name"]

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
