"""Where idempotency keys live: the `Store` protocol, its errors, and `SQLiteStore`.

A store keeps one opaque string per key (a `KeyRecord`, see `_keys`) plus a
lease its owner holds while its POST is under way, and answers three atomic
operations: `claim` (write if absent), `swap` (compare-and-set) and `renew`.
It also lets the workers share status checks (`claim_check`, `share_check`,
`release_check`: a short per-job claim to check, and the answer the checker
relays to the others; the decisions are `_keys.plan_check`). Two
implementations: `SQLiteStore` for the processes of one machine, and
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

from ._exceptions import InvalidRequestError, StoreMismatchError, StoreUnavailableError
from ._keys import CHECK_ANSWER_TTL, CHECK_LEASE, CheckStep, plan_check
from ._options import flag, number

#: The marker every store keeps, so that a store written by another version of
#: this library, or for another gateway, is refused rather than misread.
STORE_FORMAT = "real-esrgan-async/keys/1"
#: How long a claim outlives its process by default (seconds); renewed every third of it.
DEFAULT_LEASE = 30.0


@runtime_checkable
class Store(Protocol):
    """An idempotency store: keys to records, with leases. Blocking methods, thread-safe.

    Attributes:
        lease: Seconds a claim outlives its process without renewal.
        coalesce_checks: Whether the workers share status checks through it.
    """

    lease: float
    coalesce_checks: bool

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

    def claim_check(
        self, request_id: str, owner: str, max_age: float, lease: float = CHECK_LEASE
    ) -> tuple[CheckStep, str | None]:
        """Decide, in one atomic step, what `owner` does about its due check of `request_id`.

        The decision is `_keys.plan_check` over the job's relayed answer and
        claim; on CALL, the claim is taken for `owner` for `lease` seconds.

        Returns:
            The step, and on SHARE the relayed answer (a status JSON).
        """

    def share_check(self, request_id: str, owner: str, answer: str, *, terminal: bool) -> None:
        """Relay `answer` (a status JSON, read just now) to the others; end `owner`'s claim."""

    def release_check(self, request_id: str, owner: str) -> None:
        """End `owner`'s claim to check `request_id` without an answer (its call failed)."""


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
        coalesce_checks: Share status checks between the processes: when several
            wait on one job, one status call serves them all, at the cost of two
            local transactions per status read (not synced to disk: they hold no
            paid id).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lease: float = DEFAULT_LEASE,
        coalesce_checks: bool = True,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise InvalidRequestError(f"SQLiteStore.path must be a str or a path, got {path!r}")
        number("SQLiteStore", "lease", lease, ">= 0.1", lambda v: v >= 0.1)
        flag("SQLiteStore", "coalesce_checks", coalesce_checks)
        self.path = Path(path)
        self.lease = lease
        self.coalesce_checks = coalesce_checks
        self._db: sqlite3.Connection | None = None
        self._checks_db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._checks_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def open(self, gateway: str) -> None:
        """Open the file and check its marker (see `Store.open`)."""
        # Two processes creating one file at once: switching it to WAL takes a lock that
        # SQLite's busy timeout does not wait for, so the loser tries again a few times.
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                db = _connect(self.path)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == _OPEN_ATTEMPTS - 1:
                    raise StoreUnavailableError(
                        f"cannot open the store {self.path}: {exc}"
                    ) from exc
                time.sleep(0.05 * (attempt + 1))
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
            checks_db = _connect(self.path, synchronous="NORMAL") if self.coalesce_checks else None
        except StoreMismatchError:
            db.close()
            raise
        except sqlite3.Error as exc:
            db.close()
            raise StoreUnavailableError(f"cannot open the store {self.path}: {exc}") from exc
        self._db = db
        self._checks_db = checks_db

    def close(self) -> None:
        """Close the file (idempotent)."""
        db, self._db = self._db, None
        checks_db, self._checks_db = self._checks_db, None
        if db is not None:
            db.close()
        if checks_db is not None:
            checks_db.close()

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

    # Shared status checks: a connection of their own that does not sync each commit to
    # disk (WAL with synchronous=NORMAL stays consistent; a lost answer costs one call).

    def _checks(self) -> sqlite3.Connection:
        if self._checks_db is None:
            raise RuntimeError("this SQLiteStore is not open, or shares no status checks")
        return self._checks_db

    def claim_check(
        self, request_id: str, owner: str, max_age: float, lease: float = CHECK_LEASE
    ) -> tuple[CheckStep, str | None]:
        """See `Store.claim_check`."""
        db = self._checks()
        try:
            with self._checks_lock, _transaction(db):
                now = time.time()
                row = db.execute(
                    "SELECT answer, read_at, terminal, lease_until FROM checks WHERE id = ?",
                    (request_id,),
                ).fetchone()
                answer, read_at, terminal, lease_until = row or (None, None, 0, None)
                step = plan_check(
                    age=None if read_at is None else now - read_at,
                    terminal=bool(terminal),
                    leased=lease_until is not None and lease_until > now,
                    max_age=max_age,
                )
                if step is CheckStep.CALL:
                    db.execute(
                        "INSERT INTO checks (id, owner, lease_until) VALUES (?, ?, ?) "
                        "ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, "
                        "lease_until = excluded.lease_until",
                        (request_id, owner, now + lease),
                    )
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"the store {self.path} failed: {exc}") from exc
        return step, answer if step is CheckStep.SHARE else None

    def share_check(self, request_id: str, owner: str, answer: str, *, terminal: bool) -> None:
        """See `Store.share_check`."""
        db = self._checks()
        try:
            with self._checks_lock, _transaction(db):
                now = time.time()
                db.execute(
                    "INSERT INTO checks (id, answer, read_at, terminal) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET answer = excluded.answer, "
                    "read_at = excluded.read_at, terminal = excluded.terminal, "
                    "owner = CASE WHEN owner = ? THEN NULL ELSE owner END, "
                    "lease_until = CASE WHEN owner = ? THEN NULL ELSE lease_until END",
                    (request_id, answer, now, int(terminal), owner, owner),
                )
                # Answers live as long as in Redis; the old ones go as new ones come.
                db.execute(
                    "DELETE FROM checks WHERE coalesce(read_at, 0) < ? "
                    "AND coalesce(lease_until, 0) < ?",
                    (now - CHECK_ANSWER_TTL, now),
                )
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"the store {self.path} failed: {exc}") from exc

    def release_check(self, request_id: str, owner: str) -> None:
        """See `Store.release_check`."""
        db = self._checks()
        try:
            with self._checks_lock, _transaction(db):
                db.execute(
                    "UPDATE checks SET owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?",
                    (request_id, owner),
                )
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"the store {self.path} failed: {exc}") from exc


class _transaction:  # noqa: N801 (used as a statement: `with _transaction(db):`)
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on an error), in autocommit mode."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


#: How often opening retries a file another process is creating at the same moment.
_OPEN_ATTEMPTS = 10


def _connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection to the store's file in WAL mode, its tables created."""
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
            "lease_owner TEXT, lease_until REAL)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS checks (id TEXT PRIMARY KEY, owner TEXT, "
            "lease_until REAL, answer TEXT, read_at REAL, terminal INTEGER NOT NULL DEFAULT 0)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS checks_read_at ON checks (coalesce(read_at, 0))")
    except BaseException:
        db.close()
        raise
    return db
