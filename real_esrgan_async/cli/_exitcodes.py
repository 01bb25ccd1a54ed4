"""The command's exit codes, one meaning each, so that scripts can branch on them."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What the exit status of ``real-esrgan`` means."""

    #: Every input was upscaled and saved (or the command did what it was asked).
    OK = 0
    #: At least one input failed, errored, was rejected or could not be saved.
    INCOMPLETE = 1
    #: A usage error: a bad option, a missing API key, an unreadable batch file.
    USAGE = 2
    #: The gateway refused the key or the wallet (401, 402, 403): the run stopped.
    REFUSED = 3
    #: Stopped by Ctrl+C (128 + SIGINT, as shells report it).
    INTERRUPTED = 130
