"""One process at a time per journal: an OS lock on a sibling ``.lock`` file.

The OS releases the lock when its holder dies, SIGKILL included, so a crash
never leaves a journal locked. The holder writes its pid in the file, for the
error the next process gets.

The file is created 0600 and never through a symlink (a planted link would
otherwise have its target truncated). The holder deletes it on release, while
still holding the lock; so a taker, once it holds the lock, checks that the
file it locked is still the one at the path (not one deleted meanwhile) and
tries again if not: two processes can never both believe they hold it.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from ._exceptions import JournalError, JournalLockedError

#: What a lock held by someone else fails with (Windows says EACCES).
_HELD = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)
#: Tries before giving up when the lock file keeps being replaced under us.
_ATTEMPTS = 20
#: Open flags: never through a symlink, never inherited by a child process.
_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


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
            JournalError: The lock file cannot be created or locked, or is a symlink.
        """
        for _ in range(_ATTEMPTS):
            fd = self._open()
            try:
                _lock(fd)
            except OSError as exc:
                pid = _read_pid(fd)
                os.close(fd)
                if exc.errno in _HELD:
                    raise JournalLockedError(str(self._journal), pid) from None
                raise JournalError(f"cannot lock journal {self._journal}: {exc}") from exc
            if _is_at(fd, self._path):
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, str(os.getpid()).encode())
                self._fd = fd
                return
            # The holder released and deleted this file between our open and our lock:
            # it is no longer the lock; the one now at the path is.
            os.close(fd)
        raise JournalError(
            f"cannot lock journal {self._journal}: its lock file {self._path} kept being "
            "replaced while it was being taken"
        )

    def _open(self) -> int:
        try:
            return os.open(self._path, _FLAGS, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise JournalError(
                    f"cannot open journal {self._journal}: its lock file {self._path} is a "
                    "symbolic link, which is never followed; remove it"
                ) from None
            raise JournalError(
                f"cannot open journal {self._journal}: its lock file {self._path}: "
                f"{exc.strerror or exc}"
            ) from exc

    def release(self) -> None:
        """Let go and delete the lock file (idempotent).

        The file is deleted while the lock is still held, so that no one can
        take the lock on a file that is about to disappear without noticing
        (see `acquire`).
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if sys.platform != "win32" and _is_at(fd, self._path):
                os.unlink(self._path)
        except OSError:
            pass  # a lock file left behind is harmless: the next holder reuses it
        finally:
            os.close(fd)  # closing the descriptor releases the lock


def _is_at(fd: int, path: Path) -> bool:
    """Whether `fd` is the file now at `path` (not one deleted or replaced since)."""
    try:
        at_path = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


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
