"""One process at a time per journal: an OS lock on a sibling ``.lock`` file.

The OS releases the lock when its holder dies, SIGKILL included, so a crash
never leaves a journal locked. The holder writes its pid in the file, for the
error the next process gets.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from ._exceptions import JournalError, JournalLockedError

#: What a lock held by someone else fails with (Windows says EACCES).
_HELD = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)


class FileLock:
    """An exclusive, non-blocking lock held until `release` (or the process's death)."""

    def __init__(self, path: Path, *, journal: Path) -> None:
        self._path = path
        self._journal = journal
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            JournalLockedError: Someone holds it; names the holder's pid if known.
            JournalError: The lock file cannot be created or locked.
        """
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(
                f"cannot open journal {self._journal}: its lock file {self._path}: "
                f"{exc.strerror or exc}"
            ) from exc
        try:
            _lock(fd)
        except OSError as exc:
            pid = _read_pid(fd)
            os.close(fd)
            if exc.errno in _HELD:
                raise JournalLockedError(str(self._journal), pid) from None
            raise JournalError(f"cannot lock journal {self._journal}: {exc}") from exc
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        """Let go (idempotent). The file stays: deleting it would race with a new holder."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> None:
        # A byte far past the pid, so that reading the pid is never blocked by the lock.
        os.lseek(fd, 1 << 20, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
