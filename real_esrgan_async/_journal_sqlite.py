"""`SQLiteJournal`: the embedded journal, one SQLite file in WAL mode beside a lock file.

Where the time goes, and why it is split this way (measured on a 2-core VM):

- The per-job records are tiny autocommit writes on the event loop's thread:
  20-40 µs each alone, 50-150 µs amid a busy fan-out, with ``synchronous=NORMAL``
  and automatic checkpoints off, so that no commit waits for the disk. That is
  cheaper than handing each to a worker thread (the hop alone costs ~100 µs),
  and it is what makes a ``request_id`` durable against SIGKILL the moment the
  gateway returns it.
- What must survive a power cut (an input about to be POSTed) is made durable
  by `sync`: a PASSIVE checkpoint on a second connection, in a worker thread,
  which fsyncs the WAL and the database. Concurrent callers share one
  checkpoint (a group commit), and the loop never waits for the disk.
- Opening (the lock, the schema, turning PENDING into AMBIGUOUS) and closing
  are blocking: `open_async`/``async with`` run them in a worker thread.

The schema (``PRAGMA user_version`` 1, ``application_id`` 'RESG')::

    inputs(idx INTEGER PRIMARY KEY, image, scale, face_enhance, state,
           request_id, result, saved_to, error, updated_at)

``idx`` is the rowid, so a lookup is a B-tree search, never a scan; a partial
index holds the few PENDING entries, which opening turns AMBIGUOUS.

The journal holds the input URLs (signed ones included) and the job ids: it is
created 0600 (SQLite gives its ``-wal`` and ``-shm`` files the same mode), and
never through a symbolic link. Its lock file is deleted on close.
"""

from __future__ import annotations

import enum
import errno
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread

from ._exceptions import JournalError
from ._journal import (
    FINISHED_STATES,
    JournalEntry,
    JournalState,
    state_from_json,
    state_to_json,
)
from ._journal_lock import FileLock
from ._models import JobState, UpscaleRequest

APPLICATION_ID = 0x52455347  # b"RESG"
SCHEMA_VERSION = 1
#: What a PENDING entry found on opening becomes: its process died mid-submit.
DIED_IN_FLIGHT = "the process stopped while the submit was in flight"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inputs (
    idx          INTEGER PRIMARY KEY,
    image        TEXT    NOT NULL,
    scale        INTEGER NOT NULL,
    face_enhance INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    request_id   TEXT,
    result       TEXT,
    saved_to     TEXT,
    error        TEXT,
    updated_at   REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS inputs_pending ON inputs(idx) WHERE state = 'pending';
"""
_COLUMNS = "idx, image, scale, face_enhance, state, request_id, result, saved_to, error"


class _Life(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class SQLiteJournal:
    """A journal in one SQLite file: after SIGKILL or a power cut, nothing paid is lost or repaid.

    One process at a time: opening takes an OS lock on ``<path>.lock``, which
    the OS releases if the process dies.

    Example::

        async with SQLiteJournal("batch.journal") as journal:
            async with client.upscale_many(urls, journal=journal) as run:
                async for outcome in run:
                    if outcome.ok and outcome.saved_to is None:
                        path = await client.download(outcome.result, f"out/{outcome.index}.png")
                        run.mark_saved(outcome, path)

    Args:
        path: The journal file; created if missing (its directory must exist).

    Raises (from `open`):
        JournalLockedError: Another process, or another open journal here, holds it.
        JournalError: The file is not a journal, or is unreadable.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = FileLock(self.path.with_name(self.path.name + ".lock"), journal=self.path)
        self._life = _Life.UNOPENED
        self._db: sqlite3.Connection | None = None  # the loop's connection: small writes
        self._checkpointer: sqlite3.Connection | None = None  # worker threads: sync()
        self._guard = threading.Lock()  # open/close against a checkpoint in a worker thread
        self._writes = 0
        self._synced = 0
        self._syncing: anyio.Event | None = None
        # Beyond the highest index recorded there is nothing to look up: a fresh
        # batch costs no read per input.
        self._max_index = -1

    def __repr__(self) -> str:
        return f"<SQLiteJournal {str(self.path)!r} {self._life.value}>"

    # Lifecycle ------------------------------------------------------------------

    def open(self) -> Self:
        """Lock and open the journal (blocking); turn PENDING entries into AMBIGUOUS ones.

        Returns:
            The journal itself.
        """
        with self._guard:
            if self._life is not _Life.UNOPENED:
                raise RuntimeError(f"{self!r} can be opened only once")
            self._lock.acquire()
            try:
                self._create_private()
                self._db = self._connect()
                self._prepare(self._db)
                self._checkpointer = self._connect()
            except BaseException:
                self._close_all()
                raise
            self._life = _Life.OPEN
        return self

    def close(self) -> None:
        """Close and unlock (blocking, idempotent); waits for a running `sync`."""
        with self._guard:
            if self._life is _Life.OPEN:
                self._close_all()
            self._life = _Life.CLOSED

    async def open_async(self) -> Self:
        """`open` in a worker thread."""
        return await anyio.to_thread.run_sync(self.open)

    async def __aenter__(self) -> Self:
        return await self.open_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._life is _Life.CLOSED

    def _create_private(self) -> None:
        """Create the file 0600 if missing; refuse a symlink or anything but a regular file.

        SQLite would create it with the umask's mode (often world-readable) and
        follow a symlink planted at the path.
        """
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise JournalError(
                    f"journal {self.path} is a symbolic link, which is never followed; "
                    "give the real path"
                ) from None
            raise JournalError(f"cannot open journal {self.path}: {exc.strerror or exc}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise JournalError(f"journal {self.path} is not a regular file")
        finally:
            os.close(fd)

    def _connect(self) -> sqlite3.Connection:
        try:
            # Autocommit (isolation_level=None): each record is its own transaction.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path} is not a journal: {exc}") from exc
        if tables and (app_id, version) != (APPLICATION_ID, SCHEMA_VERSION):
            raise JournalError(
                f"{self.path} is not a journal of this library (or of another version of it); "
                "choose another path"
            )
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise JournalError(f"journal {self.path} cannot use WAL mode (got {mode!r})")
        # NORMAL: a commit survives the process being killed, without an fsync; what
        # must survive a power cut is checkpointed by sync(), off the loop.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")  # never a checkpoint on the loop's thread
        db.execute("PRAGMA journal_size_limit=4194304")
        db.executescript(
            f"BEGIN; {_SCHEMA} PRAGMA application_id={APPLICATION_ID}; "
            f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
        )
        # We hold the lock: whoever left an entry PENDING is dead, maybe mid-POST.
        db.execute(
            "UPDATE inputs SET state = 'ambiguous', error = ?, updated_at = ? "
            "WHERE state = 'pending'",
            (DIED_IN_FLIGHT, time.time()),
        )
        self._max_index = db.execute("SELECT coalesce(max(idx), -1) FROM inputs").fetchone()[0]

    def _close_all(self) -> None:
        for db in (self._checkpointer, self._db):
            if db is not None:
                db.close()  # the last one checkpoints the WAL into the database
        self._db = self._checkpointer = None
        self._lock.release()

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            state = "closed" if self._life is _Life.CLOSED else "not open"
            raise RuntimeError(f"journal {self.path} is {state}")
        return self._db

    # The protocol ---------------------------------------------------------------

    def get(self, index: int) -> JournalEntry | None:
        """The entry of input `index`, or None if it was never submitted."""
        if index > self._max_index:
            self._open_db()  # still refuse use outside open
            return None
        rows = self._query(f"SELECT {_COLUMNS} FROM inputs WHERE idx = ?", (index,))  # noqa: S608
        return _entry(rows[0]) if rows else None

    def record_pending(self, index: int, request: UpscaleRequest) -> None:
        """Input `index` is about to be submitted; an AMBIGUOUS entry keeps its `error`
        (an ERROR entry is resubmitted: its next `record_submitted` replaces the id)."""
        self._write(
            "INSERT INTO inputs (idx, image, scale, face_enhance, state, updated_at) "
            "VALUES (?, ?, ?, ?, 'pending', ?) "
            "ON CONFLICT (idx) DO UPDATE SET state = 'pending', result = NULL, "
            "updated_at = excluded.updated_at WHERE state IN ('ambiguous', 'error')",
            (index, request.image, request.scale, int(request.face_enhance), time.time()),
            expect=f"input {index} to be new or AMBIGUOUS (or ERROR, to resubmit it)",
        )
        self._max_index = max(self._max_index, index)

    async def sync(self) -> None:
        """Return once every record so far would survive a power cut (a group commit)."""
        target = self._writes
        while self._synced < target:
            if self._syncing is not None:
                await self._syncing.wait()  # a checkpoint that may have started before our write
                continue
            done = self._syncing = anyio.Event()
            upto = self._writes
            try:
                await anyio.to_thread.run_sync(self._checkpoint)
                self._synced = max(self._synced, upto)
            finally:
                self._syncing = None
                done.set()

    def _checkpoint(self) -> None:
        with self._guard:
            if self._checkpointer is None:
                raise RuntimeError(f"journal {self.path} is closed")
            try:
                # PASSIVE: copies the WAL into the database with an fsync of each, and
                # never blocks the loop's connection, which may write meanwhile.
                self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                raise JournalError(f"cannot sync journal {self.path}: {exc}") from exc

    def record_submitted(self, index: int, request_id: str) -> None:
        """The gateway created job `request_id` for input `index`."""
        self._write(
            "UPDATE inputs SET state = 'submitted', request_id = ?, updated_at = ? "
            "WHERE idx = ? AND state IN ('pending', 'ambiguous')",
            (request_id, time.time(), index),
            expect=f"input {index} to be pending",
        )

    def record_unsent(self, index: int) -> None:
        """The POST created nothing: forget the attempt (an earlier ambiguity stays)."""
        self._write(
            "DELETE FROM inputs WHERE idx = ? AND state = 'pending' AND error IS NULL", (index,)
        )
        self._write(
            "UPDATE inputs SET state = 'ambiguous', updated_at = ? "
            "WHERE idx = ? AND state = 'pending'",
            (time.time(), index),
        )

    def record_ambiguous(self, index: int, reason: str) -> None:
        """The POST may or may not have created a job."""
        self._write(
            "UPDATE inputs SET state = 'ambiguous', error = ?, updated_at = ? WHERE idx = ?",
            (reason, time.time(), index),
            expect=f"input {index} to be recorded",
        )

    def record_finished(self, index: int, state: JobState) -> None:
        """The job of input `index` reached terminal `state`."""
        self._write(
            "UPDATE inputs SET state = ?, result = ?, updated_at = ? WHERE idx = ?",
            (FINISHED_STATES[state.status].value, state_to_json(state), time.time(), index),
            expect=f"input {index} to be recorded",
        )

    def mark_saved(self, index: int, path: str | os.PathLike[str]) -> None:
        """The caller saved the COMPLETED output of input `index` at `path`."""
        self._write(
            "UPDATE inputs SET saved_to = ?, updated_at = ? WHERE idx = ? AND state = 'completed'",
            (os.fspath(path), time.time(), index),
            expect=f"input {index} to be COMPLETED",
        )

    # For people ----------------------------------------------------------------

    def resolve_ambiguous(self, index: int, request_id: str) -> None:
        """Attach the job you found (on the provider's dashboard) to an AMBIGUOUS input.

        The next run polls `request_id` instead of reporting the input ambiguous.
        """
        self._write(
            "UPDATE inputs SET state = 'submitted', request_id = ?, updated_at = ? "
            "WHERE idx = ? AND state = 'ambiguous'",
            (request_id, time.time(), index),
            expect=f"input {index} to be AMBIGUOUS",
        )

    def entries(self, *states: JournalState) -> list[JournalEntry]:
        """Every entry in index order, or those in `states` (blocking: a full read)."""
        where = ""
        if states:
            where = f" WHERE state IN ({', '.join('?' * len(states))})"
        # Only constants and placeholders are interpolated; the values are bound.
        rows = self._query(f"SELECT {_COLUMNS} FROM inputs{where} ORDER BY idx", states)  # noqa: S608
        return [_entry(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Entries per state, and ``"saved"``: how many COMPLETED outputs were saved."""
        counts = {state.value: 0 for state in JournalState}
        for state, count in self._query("SELECT state, count(*) FROM inputs GROUP BY state"):
            counts[state] = count
        [(saved,)] = self._query("SELECT count(*) FROM inputs WHERE saved_to IS NOT NULL")
        counts["saved"] = saved
        return counts

    # Plumbing ------------------------------------------------------------------

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        try:
            return self._open_db().execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc

    def _write(self, sql: str, args: tuple[Any, ...], *, expect: str | None = None) -> None:
        try:
            changed = self._open_db().execute(sql, args).rowcount
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write journal {self.path}: {exc}") from exc
        self._writes += 1
        if expect is not None and changed != 1:
            raise JournalError(f"journal {self.path} does not have {expect}")


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    index, image, scale, face_enhance, state, request_id, result, saved_to, error = row
    return JournalEntry(
        index,
        UpscaleRequest(image, scale=scale, face_enhance=bool(face_enhance)),
        JournalState(state),
        request_id=request_id,
        result=None if result is None else state_from_json(result),
        saved_to=saved_to,
        error=error,
    )
