"""Attack: the journal's files on a shared machine, planted symlinks, and lock races.

The journal holds input URLs (signed ones included): it and its lock are
created 0600 and never through a symlink, and the lock file is gone after close
without ever letting two holders in.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from real_esrgan_async import (
    JournalError,
    JournalLockedError,
    SQLiteJournal,
    UpscaleRequest,
    _journal_lock,
)

REQUEST = UpscaleRequest("https://images.example/cat.jpg?X-Amz-Signature=abc")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_journal_its_wal_and_its_lock_are_private(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask, under which SQLite's default is 0644
    try:
        with SQLiteJournal(tmp_path / "batch.journal") as journal:
            journal.record_pending(0, REQUEST)
            files = sorted(p.name for p in tmp_path.iterdir())
            modes = {name: mode(tmp_path / name) for name in files}
    finally:
        os.umask(previous)

    assert [
        "batch.journal",
        "batch.journal-shm",
        "batch.journal-wal",
        "batch.journal.lock",
    ] == files
    assert dict.fromkeys(files, 0o600) == modes


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    """Today's victim: opening the journal truncated the link's target to write a pid."""
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me")
    (tmp_path / "batch.journal.lock").symlink_to(victim)

    with pytest.raises(JournalError, match="is a symbolic link, which is never followed"):
        SQLiteJournal(tmp_path / "batch.journal").open()

    assert "do not truncate me" == victim.read_text()


def test_a_symlinked_journal_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "precious.db"
    victim.write_bytes(b"not a journal")
    (tmp_path / "batch.journal").symlink_to(victim)

    with pytest.raises(JournalError, match="is a symbolic link, which is never followed"):
        SQLiteJournal(tmp_path / "batch.journal").open()

    assert b"not a journal" == victim.read_bytes()
    assert not (tmp_path / "batch.journal.lock").exists()  # released on the way out


def test_closing_removes_the_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    with SQLiteJournal(path):
        assert (tmp_path / "batch.journal.lock").exists()
    assert not (tmp_path / "batch.journal.lock").exists()
    with SQLiteJournal(path):  # and a rerun still opens it
        pass


def test_a_second_opener_is_still_locked_out(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    with SQLiteJournal(path), pytest.raises(JournalLockedError) as info:
        SQLiteJournal(path).open()
    assert os.getpid() == info.value.pid


def test_a_lock_taken_on_a_file_deleted_meanwhile_is_retaken_on_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race that deleting the lock file opens, played out by hand.

    Between our open and our lock, the holder releases (deleting the file) and a
    third process creates a new one: the lock we get is on a file no one else
    will ever open. Holding it would make two holders; we must notice and retry.
    """
    lock_path = tmp_path / "batch.journal.lock"
    real_lock = _journal_lock._lock
    calls: list[int] = []

    def racing_lock(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            os.unlink(lock_path)  # the holder's release
            lock_path.write_text("")  # a newcomer's fresh lock file
        real_lock(fd)

    monkeypatch.setattr(_journal_lock, "_lock", racing_lock)
    lock = _journal_lock.FileLock(lock_path, journal=tmp_path / "batch.journal")
    lock.acquire()
    try:
        held = os.fstat(lock._fd)  # type: ignore[arg-type]
        at_path = os.stat(lock_path)
        assert 2 == len(calls)
        assert (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)
        assert str(os.getpid()) == lock_path.read_text()
    finally:
        lock.release()
