"""The embedded backend: one SQLite file in WAL mode, for running with no servers at all.

Appends run under `BEGIN IMMEDIATE`, which admits one writer at a time (across threads and
processes). Positions are therefore handed out in commit order, and a catch-up reader of the
global log can never skip an event. sqlite3 errors are translated in `_translate`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventstore._closing import Closing
from eventstore.errors import (
    EventStoreError,
    ImmutableEventError,
    MigrationError,
    StoreBusyError,
    StoreUnavailableError,
)
from eventstore.events import Event
from eventstore.store._checks import (
    as_batch,
    check_batch,
    check_limit,
    check_position,
    check_shard,
    check_text,
    check_time,
    check_version,
)
from eventstore.store._conflicts import explain_conflict, first_of_each, resolve_retry
from eventstore.store._migrations import pending_migrations
from eventstore.store._outbox import outbox_bucket
from eventstore.store._protocol import LogHorizon, OutboxStatus
from eventstore.store._rows import EVENT_COLUMNS, event_from_row, paged
from eventstore.store._rows import time_text as _time_text
from eventstore.store._sqlite_lease import SqliteOutboxLease
from eventstore.store._sqlite_projections import SqliteReadModels
from eventstore.store._sqlite_replay import SqliteReplay
from eventstore.store._sqlite_web import SqliteWeb
from eventstore.versioning import Upcasters

_COLUMNS = ", ".join(EVENT_COLUMNS)


def _select(condition: str) -> str:
    """A query of whole event rows. Only the constants below are passed: values are bound."""
    return f"SELECT {_COLUMNS} FROM events {condition}"  # noqa: S608 (constant text only)


_BY_AGGREGATE = _select(
    "WHERE aggregate_id = :key AND version > :after ORDER BY version LIMIT :limit"
)
_BY_TYPE = _select(
    "WHERE event_type = :key AND position > :after "
    "AND (:start IS NULL OR timestamp >= :start) AND (:end IS NULL OR timestamp < :end) "
    "ORDER BY position LIMIT :limit"
)
_ALL_BY_TIME = _select(
    "WHERE (:start IS NULL OR timestamp >= :start) ORDER BY timestamp, position LIMIT :limit"
)
_READ_ALL = _select("WHERE position > :after ORDER BY position LIMIT :limit")
_BY_IDS = _select("WHERE id IN (SELECT value FROM json_each(?))")
_OUTBOX_BATCH = (
    "SELECT " + ", ".join(f"e.{name}" for name in EVENT_COLUMNS) + " "
    "FROM outbox o JOIN events e ON e.position = o.position "
    "WHERE o.bucket % :shards = :shard ORDER BY o.position LIMIT :limit"
)
# Each aggregate's latest event, one index probe per aggregate (to explain a conflict).
_LATEST = (
    "SELECT j.value, e.version, e.aggregate_type FROM json_each(?) j JOIN events e "
    "ON e.position = (SELECT position FROM events WHERE aggregate_id = j.value "
    "ORDER BY version DESC LIMIT 1)"
)
_APPEND_ATTEMPTS = 3
_PREDECESSOR = "SELECT aggregate_type FROM events WHERE aggregate_id = ? AND version = ?"
_INSERT_EVENT = (
    "INSERT INTO events (position, id, aggregate_id, aggregate_type, event_type, version, "
    "schema_version, timestamp, payload, metadata, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _translate(error: sqlite3.Error, where: str) -> EventStoreError:
    """The one mapping from sqlite3 errors to ours."""
    text = str(error)
    if "no such table" in text:
        return MigrationError(
            f"the event store tables are missing in {where} ({text}); "
            "run `eventstore migrate` (or store.migrate())"
        )
    if "immutable" in text:
        return ImmutableEventError(f"SQLite refused the change: {text}")
    code = getattr(error, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in text:
        # Another connection held the write lock past the busy timeout: nothing was written.
        return StoreBusyError(
            f"SQLite database {where} stayed locked by another writer ({text}); retry, or "
            "open the store with a longer busy_timeout"
        )
    # Anything else (a full disk, a read-only or corrupt file, ...) does not go away by
    # itself: not retriable.
    return EventStoreError(f"SQLite error in {where}: {text}; check the file and its disk")


class _Rejected(Exception):
    """An append that does not follow the stored history; rolls its transaction back."""


class SqliteEventStore(SqliteReadModels, SqliteReplay, SqliteWeb, Closing):
    """The event store in one SQLite file (or `":memory:"`), same contract as PostgreSQL.

    Thread-safe: one connection guarded by a lock. Several processes may share the file;
    SQLite serialises their writes.
    """

    def __init__(
        self, path: str | Path, *, upcasters: Upcasters | None = None, busy_timeout: float = 30.0
    ) -> None:
        self.path = str(path)
        self._upcasters = upcasters or Upcasters()
        self._lock = threading.RLock()
        self._appended = threading.Condition()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk when append returns (an event store loses nothing).
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
        except (sqlite3.Error, OSError) as error:
            raise StoreUnavailableError(
                f"cannot open SQLite database {self.path}: {error}"
            ) from None

    @property
    def upcasters(self) -> Upcasters:
        return self._upcasters

    def _translate_error(self, error: sqlite3.Error) -> EventStoreError:
        return _translate(error, self.path)

    def __repr__(self) -> str:
        return f"SqliteEventStore({self.path!r})"

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as error:
                raise _translate(error, self.path) from error

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: IMMEDIATE takes the write lock up front, so reads inside it
        see the state that the writes will change."""
        with self._locked() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        applied_now: list[str] = []
        with self._transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM migrations")}
            for migration in pending_migrations("sqlite", applied, self.path):
                # executescript() would commit our transaction: run statement by statement.
                for statement in _split_statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, _time_text(datetime.now(UTC))),
                )
                applied_now.append(migration.name)
        return applied_now

    # -- appends ----------------------------------------------------------------------------

    def append_event(self, event: Event) -> int:
        return self.append_events([event])[0]

    def append_events(self, events: Sequence[Event]) -> list[int]:
        events = as_batch(events)
        if not events:
            return []
        check_batch(events)
        # The common case costs no look-up beyond one index probe per aggregate continuing its
        # history: insert, and let the unique keys catch a version taken or an id reused.
        # Only when that fails (rolled back whole) is the batch compared with what is stored,
        # to tell an idempotent retry from a duplicate id or a version conflict. Another
        # process may commit between the two (the predecessor that was missing): then nothing
        # explains the refusal any more, and the append runs again.
        for _ in range(_APPEND_ATTEMPTS):
            try:
                with self._transaction() as conn:
                    return self._insert(conn, events)
            except _Rejected:
                stored, problem = self._explain(events)
                if stored is not None:
                    return stored
                if problem is not None:
                    raise problem from None
        raise StoreBusyError(
            f"appending to {self.path} kept being refused by concurrent appends "
            f"({_APPEND_ATTEMPTS} attempts) that later looked fine; retry it"
        )

    def _explain(self, events: list[Event]) -> tuple[list[int] | None, EventStoreError | None]:
        """Why an append was refused: its positions when it was stored already (a retry), or
        the error to raise (a duplicate id, a version conflict), or neither."""
        with self._locked() as conn:
            ids = json.dumps([e.id for e in events])
            rows = conn.execute(_BY_IDS, (ids,)).fetchall()
            stored = resolve_retry(events, {row[1]: event_from_row(row) for row in rows})
            if stored is not None:
                return stored, None
            latest = json.dumps(list(first_of_each(events)))
            found = conn.execute(_LATEST, (latest,)).fetchall()
        return None, explain_conflict(events, {row[0]: (row[1], row[2]) for row in found})

    def _insert(self, conn: sqlite3.Connection, events: list[Event]) -> list[int]:
        """Write the batch in the open write transaction; `_Rejected` when an aggregate's
        first event of the batch does not follow a stored event of the same type."""
        for event in first_of_each(events).values():
            if event.version > 1:
                row = conn.execute(_PREDECESSOR, (event.aggregate_id, event.version - 1)).fetchone()
                if row is None or row[0] != event.aggregate_type:
                    raise _Rejected
        first = conn.execute("SELECT coalesce(max(position), 0) + 1 FROM events").fetchone()[0]
        now = _time_text(datetime.now(UTC))
        positions = list(range(first, first + len(events)))
        rows = [
            (
                position,
                e.id,
                e.aggregate_id,
                e.aggregate_type,
                e.event_type,
                e.version,
                e.schema_version,
                _time_text(e.timestamp),
                e.payload_json(),
                e.metadata_json(),
                now,
            )
            for position, e in zip(positions, events, strict=True)
        ]
        try:
            conn.executemany(_INSERT_EVENT, rows)
        except sqlite3.IntegrityError as error:  # a version taken, an id reused
            raise _Rejected(str(error)) from error
        conn.executemany(
            "INSERT INTO outbox (position, bucket, enqueued_at) VALUES (?, ?, ?)",
            [
                (p, outbox_bucket(e.aggregate_id), now)
                for p, e in zip(positions, events, strict=True)
            ],
        )
        return positions

    # -- reads ------------------------------------------------------------------------------

    def _fetch(self, query: str, params: dict[str, Any]) -> list[Event]:
        with self._locked() as conn:
            rows = conn.execute(query, params).fetchall()
        upcast = self._upcasters.upcast
        return [upcast(event_from_row(row)) for row in rows]

    def get_events_by_aggregate(self, aggregate_id: str, from_version: int = 1) -> Iterator[Event]:
        check_text(aggregate_id, "aggregate_id")
        check_version(from_version)
        return paged(
            self._fetch, _BY_AGGREGATE, {"key": aggregate_id}, from_version - 1, lambda e: e.version
        )

    def get_events_by_type(
        self,
        event_type: str,
        from_timestamp: datetime | None = None,
        to_timestamp: datetime | None = None,
        *,
        after_position: int = 0,
    ) -> Iterator[Event]:
        check_text(event_type, "event_type")
        start = check_time(from_timestamp, "from_timestamp")
        end = check_time(to_timestamp, "to_timestamp")
        params = {
            "key": event_type,
            "start": _time_text(start) if start else None,
            "end": _time_text(end) if end else None,
        }
        return paged(
            self._fetch, _BY_TYPE, params, check_position(after_position), lambda e: e.position or 0
        )

    def get_all_events(
        self, from_timestamp: datetime | None = None, limit: int = 100
    ) -> list[Event]:
        start = check_time(from_timestamp, "from_timestamp")
        params = {"start": _time_text(start) if start else None, "limit": check_limit(limit)}
        return self._fetch(_ALL_BY_TIME, params)

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Event]:
        params = {"after": check_position(after_position), "limit": check_limit(limit)}
        return self._fetch(_READ_ALL, params)

    def log_horizon(self) -> LogHorizon:
        # One writer at a time, positions in commit order: readers never wait for anything.
        with self._locked() as conn:
            head = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
        return LogHorizon(
            horizon=head + 1, head=head, events_behind=0, lag_seconds=0.0, holder=None
        )

    # -- outbox ---------------------------------------------------------------------------

    def outbox_batch(self, limit: int, *, shard: int = 0, shards: int = 1) -> list[Event]:
        check_shard(shard, shards)
        params = {"limit": check_limit(limit), "shard": shard, "shards": shards}
        with self._locked() as conn:
            rows = conn.execute(_OUTBOX_BATCH, params).fetchall()
        return [event_from_row(row) for row in rows]

    def outbox_remove(self, positions: Sequence[int]) -> None:
        if positions:
            with self._transaction() as conn:
                conn.execute(
                    "DELETE FROM outbox WHERE position IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(positions)),),
                )

    def outbox_status(self) -> OutboxStatus:
        with self._locked() as conn:
            depth, oldest = conn.execute("SELECT count(*), min(enqueued_at) FROM outbox").fetchone()
        return OutboxStatus(depth, datetime.fromisoformat(oldest) if oldest else None)

    def outbox_lease(self, *, shard: int = 0, shards: int = 1) -> SqliteOutboxLease:
        check_shard(shard, shards)
        return SqliteOutboxLease(self, shard, shards)

    def notify_appended(self) -> None:
        with self._appended:
            self._appended.notify_all()

    def wait_for_appends(self, timeout: float) -> None:
        """Sleep until an append of this process is notified, or `timeout` seconds pass."""
        with self._appended:
            self._appended.wait(timeout)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _split_statements(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN ... END;) whole."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
