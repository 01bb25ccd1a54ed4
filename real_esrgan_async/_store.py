"""Where idempotency keys live: the `Store` protocol, its errors, and `SQLiteStore`.

A store keeps one opaque string per key (a `KeyRecord`, see `_keys`) plus a
lease its owner holds while its POST is under way, and answers three atomic
operations: `claim` (write if absent), `swap` (compare-and-set) and `renew`.
Two implementations: `SQLiteStore` for the processes of one machine, and
`RedisStore` (`_store_redis`) for a fleet.

Its methods are blocking and are called from worker threads
(`anyio.to_thread.run_sync`), on asyncio and trio alike: one implementation
serves both event loops, and a slow store never blocks the loop.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from ._exceptions import InvalidRequestError, RealESRGANError
from ._options import number

#: The marker every store keeps, so that a store written by another version of
#: this library, or for another gateway, is refused rather than misread.
STORE_FORMAT = "real-esrgan-async/keys/1"
#: How long a claim outlives its process by default (seconds); renewed every third of it.
DEFAULT_LEASE = 30.0


class StoreError(RealESRGANError):
    """The idempotency store cannot be used (unreachable, foreign, or failing).

    Keyed submits stop when it fails: a submit whose key cannot be recorded
    could be paid twice by another process.
    """


class StoreUnavailableError(StoreError):
    """The store could not be reached; the message names it (never its password)."""


class StoreMismatchError(StoreError):
    """The store was written by another version of this library, or for another gateway."""


class OutputExpiredError(StoreError):
    """The key's job finished so long ago that its output URLs have expired.

    Attributes:
        key: The idempotency key.
        request_id: Its job (paid for; its output is gone).
    """

    def __init__(self, key: str, request_id: str | None, age: float) -> None:
        self.key = key
        self.request_id = request_id
        super().__init__(
            f"idempotency key {key!r}: job {request_id} finished {age / 60:.0f} min ago and its "
            "output URLs have expired (about an hour after completion); it was not resubmitted. "
            "Use a new key to pay for a new job"
        )


@runtime_checkable
class Store(Protocol):
    """An idempotency store: keys to records, with leases. Blocking methods, thread-safe.

    Attributes:
        lease: Seconds a claim outlives its process without renewal.
    """

    lease: float

    def open(self, gateway: str) -> None:
        """Connect, and check (or write) the format marker for `gateway`.

        Raises:
            StoreUnavailableError: It cannot be reached.
            StoreMismatchError: It holds another format, or another gateway's keys.
        """

    def close(self) -> None:
        """Release the connection (idempotent)."""

    def claim(self, key: str, record: str, owner: str, lease: float) -> tuple[bool, str, bool]:
        """Write `record` under `key` unless a record exists, and lease it to `owner`.

        Returns:
            (whether this call wrote it, the record now stored, whether a lease is held).
        """

    def get(self, key: str) -> tuple[str | None, bool]:
        """The record under `key` (or None), and whether a lease on it is held."""

    def swap(self, key: str, old: str, new: str | None, *, lapsed_only: bool = False) -> bool:
        """Replace `old` by `new` (None deletes) if `key` still holds `old`; release its lease.

        With `lapsed_only`, only if no lease is held either. Returns whether it swapped.
        """

    def renew(self, key: str, owner: str, lease: float) -> bool:
        """Extend `owner`'s lease on `key` by `lease` seconds; False if it lost the lease."""


def check_marker(found: str | None, expected: dict[str, str], where: str) -> None:
    """Refuse a store whose marker differs from `expected`.

    Raises:
        StoreMismatchError: It does.
    """
    if found is None:
        return
    try:
        marker = json.loads(found)
    except ValueError:
        marker = {"format": found}
    if not isinstance(marker, dict) or marker.get("format") != expected["format"]:
        got = marker.get("format") if isinstance(marker, dict) else found
        raise StoreMismatchError(
            f"{where} holds idempotency keys in format {got!r}; this version reads "
            f"{expected['format']!r}. Use another prefix (or database) for this version"
        )
    if marker.get("gateway") != expected["gateway"]:
        raise StoreMismatchError(
            f"{where} holds idempotency keys of the gateway {marker.get('gateway')!r}, not "
            f"{expected['gateway']!r}: a key names a job at one gateway. Use another prefix"
        )


def marker_for(gateway: str) -> dict[str, str]:
    """The marker of a store for `gateway`."""
    return {"format": STORE_FORMAT, "gateway": gateway}


class SQLiteStore:
    """An idempotency store in one SQLite file, for the processes of one machine.

    Leases are measured on this machine's wall clock; every write is a
    transaction (``BEGIN IMMEDIATE``), durable before it returns.

    Args:
        path: The database file (created if missing).
        lease: Seconds a claim outlives its process: a key whose claimant died
            mid-POST turns AMBIGUOUS this long after its last renewal.
    """

    def __init__(self, path: str | os.PathLike[str], *, lease: float = DEFAULT_LEASE) -> None:
        if not isinstance(path, str | os.PathLike):
            raise InvalidRequestError(f"SQLiteStore.path must be a str or a path, got {path!r}")
        number("SQLiteStore", "lease", lease, ">= 0.1", lambda v: v >= 0.1)
        self.path = Path(path)
        self.lease = lease
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def open(self, gateway: str) -> None:
        """Open the file and check its marker (see `Store.open`)."""
        try:
            db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                "lease_owner TEXT, lease_until REAL)"
            )
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"cannot open the store {self.path}: {exc}") from exc
        expected = marker_for(gateway)
        with _transaction(db):
            row = db.execute("SELECT value FROM meta WHERE name = 'marker'").fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO meta VALUES ('marker', ?)", (json.dumps(expected, sort_keys=True),)
                )
        try:
            check_marker(None if row is None else row[0], expected, f"the store {self.path}")
        except StoreMismatchError:
            db.close()
            raise
        self._db = db

    def close(self) -> None:
        """Close the file (idempotent)."""
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("this SQLiteStore is not open")
        return self._db

    def claim(self, key: str, record: str, owner: str, lease: float) -> tuple[bool, str, bool]:
        """See `Store.claim`."""
        db = self._conn()
        with self._lock, _transaction(db):
            now = time.time()
            row = db.execute("SELECT value, lease_until FROM keys WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return False, row[0], row[1] is not None and row[1] > now
            db.execute("INSERT INTO keys VALUES (?, ?, ?, ?)", (key, record, owner, now + lease))
            return True, record, True

    def get(self, key: str) -> tuple[str | None, bool]:
        """See `Store.get`."""
        db = self._conn()
        with self._lock:
            row = db.execute("SELECT value, lease_until FROM keys WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None, False
        return row[0], row[1] is not None and row[1] > time.time()

    def swap(self, key: str, old: str, new: str | None, *, lapsed_only: bool = False) -> bool:
        """See `Store.swap`."""
        db = self._conn()
        with self._lock, _transaction(db):
            row = db.execute("SELECT value, lease_until FROM keys WHERE key = ?", (key,)).fetchone()
            if row is None or row[0] != old:
                return False
            if lapsed_only and row[1] is not None and row[1] > time.time():
                return False
            if new is None:
                db.execute("DELETE FROM keys WHERE key = ?", (key,))
            else:
                db.execute(
                    "UPDATE keys SET value = ?, lease_owner = NULL, lease_until = NULL "
                    "WHERE key = ?",
                    (new, key),
                )
            return True

    def renew(self, key: str, owner: str, lease: float) -> bool:
        """See `Store.renew`."""
        db = self._conn()
        with self._lock, _transaction(db):
            cursor = db.execute(
                "UPDATE keys SET lease_until = ? WHERE key = ? AND lease_owner = ?",
                (time.time() + lease, key, owner),
            )
            return cursor.rowcount == 1


class _transaction:  # noqa: N801 (used as a statement: `with _transaction(db):`)
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on an error), in autocommit mode."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
