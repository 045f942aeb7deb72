"""The PostgreSQL backend: psycopg 3 with a connection pool.

Every append is one call of the `append_events()` SQL function (see the migration for the
ordering argument behind `read_all`), run as a single autocommit statement: one round trip, one
transaction. psycopg errors are translated into the package's errors in `_translate`, the one
place that knows about SQLSTATEs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from eventstore._closing import Closing
from eventstore.errors import (
    ConcurrencyError,
    ConfigurationError,
    EventStoreError,
    EventValidationError,
    ImmutableEventError,
    MigrationError,
    StoreBusyError,
    StoreUnavailableError,
)
from eventstore.events import Event, encode_json
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
from eventstore.store._outbox import OUTBOX_BUCKETS, outbox_bucket
from eventstore.store._pg_lease import PostgresOutboxLease, notify_channel
from eventstore.store._pg_projections import PostgresReadModels
from eventstore.store._pg_replay import PostgresReplay
from eventstore.store._pg_sql import HORIZON, event_columns
from eventstore.store._pg_web import PostgresWeb
from eventstore.store._protocol import HorizonHolder, LogHorizon, OutboxStatus
from eventstore.store._rows import event_from_row, paged
from eventstore.versioning import Upcasters

DEFAULT_SCHEMA = "eventstore"
MIN_SERVER_VERSION = 130000  # xid8 and pg_current_xact_id() arrived in PostgreSQL 13
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_MIGRATION_LOCK = 7262298810127732

# SQLSTATEs raised by our own SQL (see the migration).
_VERSION_CONFLICT = "ES409"
_IMMUTABLE = "ES405"
_COUNTER_BEHIND = "ES412"
_UNIQUE_KEYS = ("events_id_key", "events_aggregate_id_version_key")
# Two projection batches created the same document or checkpoint at once: one lost, and runs
# again (it then sees the row, locked, and what the winner wrote).
_READ_MODEL_KEYS = ("projection_documents_pkey", "projection_checkpoints_pkey")
# Deadlock (two batches inserting the same new aggregates in different orders wait on each
# other's unique keys) and serialization failure: the transaction was rolled back whole, and
# running it again is safe.
_TRANSIENT = ("40P01", "40001")
_INSUFFICIENT_PRIVILEGE = ("42501",)
# Lock timeout and statement timeout (or a cancel): the server is up, the moment was bad.
_TIMED_OUT = ("55P03", "57014")
_BATCH_TOO_LARGE = "ES413"
_NOT_ALONE = "ES400"

_COLUMNS = event_columns()
_APPEND = sql.SQL("SELECT append_events(%s::json, %s::json)")
_LATEST = sql.SQL(
    "SELECT DISTINCT ON (aggregate_id) aggregate_id, version, aggregate_type FROM events "
    "WHERE aggregate_id = ANY(%s::text[]) ORDER BY aggregate_id, version DESC"
)
_APPEND_ATTEMPTS = 3
_BY_AGGREGATE = sql.SQL(
    "SELECT {cols} FROM events WHERE aggregate_id = %(key)s AND version > %(after)s "
    "ORDER BY version LIMIT %(limit)s"
).format(cols=_COLUMNS)
_BY_TYPE = sql.SQL(
    "SELECT {cols} FROM events WHERE event_type = %(key)s AND position > %(after)s "
    "AND \"timestamp\" >= coalesce(%(start)s::timestamptz, '-infinity') "
    "AND \"timestamp\" < coalesce(%(end)s::timestamptz, 'infinity') "
    "ORDER BY position LIMIT %(limit)s"
).format(cols=_COLUMNS)
_ALL_BY_TIME = sql.SQL(
    "SELECT {cols} FROM events "
    "WHERE \"timestamp\" >= coalesce(%(start)s::timestamptz, '-infinity') "
    'ORDER BY "timestamp", position LIMIT %(limit)s'
).format(cols=_COLUMNS)
# The horizon (see _pg_sql.py): readers of the global log stop below it.
_READ_ALL = sql.SQL(
    "SELECT {cols} FROM events WHERE position > %(after)s AND position < {horizon} "
    "ORDER BY position LIMIT %(limit)s"
).format(cols=_COLUMNS, horizon=sql.SQL(HORIZON))
_HORIZON_STATUS = sql.SQL(
    "WITH s AS (SELECT pg_current_snapshot() AS snap, "
    "(SELECT base FROM position_base) AS base, "
    "(SELECT coalesce(max(position), 0) FROM events) AS head), "
    "h AS (SELECT ((pg_snapshot_xmin(snap)::text::bigint + base) << 16) AS horizon, head, "
    "pg_snapshot_xmin(snap)::text::bigint %% 4294967296 AS xmin32, "
    # The same test as append_events(): a stored position above anything this cluster's
    # transactions can reach means a restore from a logical dump, not a slow transaction.
    "head >= ((pg_snapshot_xmax(snap)::text::bigint + base) << 16) AS restored FROM s) "
    "SELECT h.horizon, h.head, "
    "(SELECT count(*) FROM (SELECT FROM events WHERE position >= h.horizon LIMIT %(cap)s) c), "
    "(SELECT extract(epoch FROM clock_timestamp() - recorded_at)::float8 FROM events "
    " WHERE position >= h.horizon ORDER BY position LIMIT 1), "
    "h.xmin32, h.restored FROM h"
)
_HORIZON_HOLDER = sql.SQL(
    "SELECT pid, datname, usename, state, xact_start, query_start, left(query, 200) "
    "FROM pg_stat_activity WHERE backend_xid::text::bigint = %s LIMIT 1"
)
_BEHIND_CAP = 10_000  # counted exactly up to here; cheap even while a backlog grows
# What an application role needs (see grant_app_role): no INSERT, UPDATE or DELETE on events.
_APP_ROLE_GRANTS = [
    sql.SQL("GRANT USAGE ON SCHEMA {schema} TO {role}"),
    sql.SQL("GRANT SELECT ON events, position_base, migrations, outbox TO {role}"),
    sql.SQL("GRANT DELETE ON outbox TO {role}"),
    sql.SQL("GRANT EXECUTE ON FUNCTION append_events(json, json) TO {role}"),
    # Projection runners keep their read models and checkpoints in the store's database.
    sql.SQL(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON projections, projection_checkpoints, "
        "projection_documents, projection_failures, projection_positions, projection_stats "
        "TO {role}"
    ),
    # Replay keeps snapshots, and the worker the requests it must not run twice.
    sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON snapshots, control_requests TO {role}"),
    # The HTTP API checks tokens, and cannot make any: `eventstore tokens` creates and
    # revokes them as the owner (a compromised server cannot mint itself an admin token).
    sql.SQL("GRANT SELECT ON api_tokens TO {role}"),
]
_OUTBOX_COLUMNS = event_columns("e")
_OUTBOX_BATCH = sql.SQL(
    "SELECT {cols} FROM outbox o JOIN events e ON e.position = o.position "
    "ORDER BY o.position LIMIT %(limit)s"
).format(cols=_OUTBOX_COLUMNS)
# One shard of several. Its oldest row is found with one probe of the (bucket, position)
# index per bucket of the shard; the batch is then read in position order from there,
# keeping the shard's rows. So an idle relay never scans the other shards' backlog (it finds
# no first row and stops), and a busy one reads from its own first row on, never sorting its
# whole backlog (a merge of per-bucket scans, tried first, made the planner sort it all).
# What it still reads beyond the batch are the other shards' rows interleaved with its own
# (about shards - 1 per row of a balanced outbox).
_SHARD_BATCH = sql.SQL(
    "SELECT {cols} FROM outbox o JOIN events e ON e.position = o.position "
    "WHERE o.position >= (SELECT min(f.position) FROM unnest(%(buckets)s::int[]) b(bucket), "
    "LATERAL (SELECT position FROM outbox WHERE bucket = b.bucket ORDER BY position LIMIT 1) f) "
    "AND o.bucket %% %(shards)s = %(shard)s ORDER BY o.position LIMIT %(limit)s"
).format(cols=_OUTBOX_COLUMNS)
# The outbox's depth, counted exactly up to this many rows; above it, the planner's estimate
# (counting a large backlog every second, in every relay, would itself slow the drain).
_EXACT_DEPTH = 10_000
_OUTBOX_STATUS = sql.SQL(
    "SELECT (SELECT count(*) FROM (SELECT FROM outbox LIMIT %(cap)s) c), "
    "(SELECT enqueued_at FROM outbox ORDER BY position LIMIT 1), "
    "(SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'outbox'::regclass)"
)
_BY_IDS = sql.SQL("SELECT {cols} FROM events WHERE id = ANY(%s::text[])").format(cols=_COLUMNS)


def _describe_url(url: str) -> str:
    """`host:port/dbname` of a connection URL, without credentials, for messages; raises
    ConfigurationError for a URL libpq cannot parse or a port that is not a number."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        raise ConfigurationError(f"invalid PostgreSQL URL: {error}") from None
    port = str(parts.get("port") or "5432")
    for each in port.split(","):
        if not each.isdigit():
            raise ConfigurationError(f"invalid PostgreSQL URL: port {each!r} is not a number")
    return f"{parts.get('host', 'localhost')}:{port}/{parts.get('dbname', '')}"


def _translate(error: psycopg.Error, where: str) -> EventStoreError:
    """The one mapping from psycopg errors to ours."""
    state = error.sqlstate or ""
    text = " ".join(str(error).split())  # one line: libpq messages carry newlines
    if isinstance(error, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedFunction):
        return MigrationError(
            f"the event store tables are missing or out of date in {where} "
            f"({error.diag.message_primary}); run `eventstore migrate` (or store.migrate())"
        )
    if isinstance(error, psycopg.errors.UniqueViolation) and (
        error.diag.constraint_name in _READ_MODEL_KEYS
    ):
        return StoreBusyError(
            f"a concurrent projection batch at {where} created the same read-model row "
            f"({error.diag.constraint_name}); retry the batch (nothing of it was written)"
        )
    if state in _TRANSIENT:
        return StoreBusyError(
            f"PostgreSQL at {where} aborted the operation ({text}); it kept colliding with "
            "concurrent transactions: retry it (nothing of it was stored)"
        )
    if state in _TIMED_OUT:
        return StoreBusyError(
            f"PostgreSQL at {where} cancelled the statement ({text}): a lock or statement "
            "timeout ran out while other transactions held what it needed; retry it"
        )
    if state == _BATCH_TOO_LARGE:
        return EventValidationError("events", str(error.diag.message_primary))
    if state == _NOT_ALONE:
        return EventStoreError(
            f"{error.diag.message_primary} at {where}; {error.diag.message_hint}"
        )
    if state in _INSUFFICIENT_PRIVILEGE and "append_events" in text:
        return ConfigurationError(
            f"PostgreSQL at {where} refused: {text}; this role may not append: as the owner "
            "of the schema, run `eventstore migrate --app-role <this role>`"
        )
    if state in _INSUFFICIENT_PRIVILEGE:
        return ConfigurationError(
            f"PostgreSQL at {where} refused: {text}; this role may not do that (an application "
            "role can only append and read: run migrations and administration as the owner)"
        )
    if isinstance(error, psycopg.OperationalError | psycopg_pool.PoolTimeout) or state.startswith(
        ("08", "57P")
    ):
        return StoreUnavailableError(
            f"PostgreSQL at {where} is unavailable: {text}; check that the server runs and "
            "EVENTSTORE_DATABASE_URL is right (scripts/services.sh start starts a local one)"
        )
    if state == _COUNTER_BEHIND:
        return MigrationError(f"{error.diag.message_primary} in {where}; {error.diag.message_hint}")
    if state == _IMMUTABLE:
        return ImmutableEventError(
            f"PostgreSQL refused the change: {error.diag.message_primary}; "
            "append a new event that corrects the earlier one instead"
        )
    return EventStoreError(f"PostgreSQL error at {where} [{state}]: {text}")


def _wire(event: Event) -> dict[str, Any]:
    """An event as one element of append_events()'s JSON argument."""
    return {
        "id": event.id,
        "aggregate_id": event.aggregate_id,
        "aggregate_type": event.aggregate_type,
        "event_type": event.event_type,
        "version": event.version,
        "schema_version": event.schema_version,
        "timestamp": event.timestamp.isoformat(),
        "payload": event.payload,
        "metadata": event.metadata,
        "bucket": outbox_bucket(event.aggregate_id),
    }


def _follows(events: Sequence[Event]) -> list[dict[str, Any]]:
    """The aggregates that continue a stored history, each with its first version in the
    batch: append_events() checks that the previous version is stored."""
    return [
        {"aggregate_id": e.aggregate_id, "aggregate_type": e.aggregate_type, "version": e.version}
        for e in first_of_each(events).values()
        if e.version > 1
    ]


class PostgresEventStore(PostgresReadModels, PostgresReplay, PostgresWeb, Closing):
    """The event store on PostgreSQL (13 or newer), in its own schema of the database.

    Thread-safe: operations borrow connections from a pool. Create with `open_store(url)` or
    directly; call `migrate()` once per database (idempotent) before use.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        upcasters: Upcasters | None = None,
        min_connections: int = 1,
        max_connections: int = 20,
        connect_timeout: float = 10.0,
    ) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ConfigurationError(
                f"schema {schema!r} is not a valid name: use lower-case letters, digits and '_'"
            )
        self._where = _describe_url(url)
        self._url = url
        self.schema = schema
        self._upcasters = upcasters or Upcasters()
        self._check_server(url, connect_timeout)
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=min_connections,
            max_size=max_connections,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
            configure=self._configure,
            timeout=connect_timeout,
            name=f"eventstore-{schema}",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except psycopg_pool.PoolTimeout as error:
            self._pool.close()
            raise _translate(error, self._where) from None

    def _check_server(self, url: str, timeout: float) -> None:
        try:
            with psycopg.connect(url, connect_timeout=max(1, int(timeout))) as conn:
                version = conn.info.server_version
        except psycopg.ProgrammingError as error:
            raise ConfigurationError(f"invalid PostgreSQL URL: {error}") from None
        except psycopg.Error as error:
            raise _translate(error, self._where) from None
        if version < MIN_SERVER_VERSION:
            raise ConfigurationError(
                f"PostgreSQL at {self._where} is version {version}; "
                "the event store needs 13 or newer"
            )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # UTC on every connection: timestamptz values come back in the session's TimeZone,
        # which the server, the database or the role may set to anything.
        conn.execute(
            sql.SQL("SET search_path TO {}; SET TimeZone TO 'UTC'").format(
                sql.Identifier(self.schema)
            )
        )

    @property
    def upcasters(self) -> Upcasters:
        return self._upcasters

    def _translate_error(self, error: psycopg.Error) -> EventStoreError:
        return _translate(error, self._where)

    def __repr__(self) -> str:
        return f"PostgresEventStore({self._where}, schema={self.schema!r})"

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolClosed:
            raise EventStoreError(
                f"this store ({self._where}) is closed; open a new one with open_store()"
            ) from None
        except psycopg_pool.PoolTimeout as error:
            raise self._pool_timeout(error) from error
        except psycopg.Error as error:
            raise _translate(error, self._where) from error

    def _pool_timeout(self, error: psycopg_pool.PoolTimeout) -> EventStoreError:
        """No connection within the timeout: every one is busy, or none can be made. The pool
        counts connections it is still trying to make as its own, so a full pool is only
        called busy when the server accepts a new connection now."""
        stats = self._pool.get_stats()
        size, available = stats.get("pool_size", 0), stats.get("pool_available", 0)
        if size >= self._pool.max_size and available == 0 and self._server_answers():
            return StoreBusyError(
                f"all {size} connections to PostgreSQL at {self._where} stayed in use for "
                f"{self._pool.timeout:g} s; retry, lower the number of concurrent callers, or "
                "open the store with a larger max_connections"
            )
        return _translate(error, self._where)

    def _server_answers(self) -> bool:
        try:
            with psycopg.connect(self._url, connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        applied_now: list[str] = []
        with self._connection() as conn, conn.transaction():
            # One migrator at a time per database: a second one waits, then finds it done.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            schema = sql.Identifier(self.schema)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM migrations")}
            where = f"schema {self.schema!r} of {self._where}"
            for migration in pending_migrations("postgres", applied, where):
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
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
        document = encode_json([_wire(e) for e in events])
        follows = encode_json(_follows(events))
        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            with self._connection() as conn:
                try:
                    return [row[0] for row in conn.execute(_APPEND, (document, follows))]
                except psycopg.Error as error:
                    # A deadlock rolled the whole batch back: it may have collided with a
                    # batch of the same aggregates, so look for a conflict as below; if
                    # there is none, run it again, and say so when it keeps happening.
                    if error.sqlstate in _TRANSIENT and attempt == _APPEND_ATTEMPTS:
                        raise
                    if not (self._is_conflict(error) or error.sqlstate in _TRANSIENT):
                        raise
            # A conflict may be the retry of a batch already stored: then it succeeds.
            stored = self._stored_positions(events)
            if stored is not None:
                return stored
            problem = self._explain_conflict(events)
            if problem is not None:
                raise problem
            # Nothing conflicts any more: a predecessor was still committing. Try again.
        # Every attempt lost a race to a predecessor still committing: give up with the
        # aggregate's true current version, as a conflict explained above would carry.
        head = events[0]
        current = self._current_version(head.aggregate_id)
        raise ConcurrencyError(
            head.aggregate_id,
            expected_version=current + 1,
            actual_version=head.version,
            message=f"appending to aggregate {head.aggregate_id!r} kept conflicting with "
            f"concurrent appends ({_APPEND_ATTEMPTS} attempts; it is now at version "
            f"{current}); reload the aggregate and retry",
        )

    def _current_version(self, aggregate_id: str) -> int:
        with self._connection() as conn:
            rows = conn.execute(_LATEST, ([aggregate_id],)).fetchall()
        return int(rows[0][1]) if rows else 0

    @staticmethod
    def _is_conflict(error: psycopg.Error) -> bool:
        if error.sqlstate == _VERSION_CONFLICT:
            return True
        return isinstance(error, psycopg.errors.UniqueViolation) and (
            error.diag.constraint_name in _UNIQUE_KEYS
        )

    def _explain_conflict(self, events: Sequence[Event]) -> EventStoreError | None:
        with self._connection() as conn:
            rows = conn.execute(_LATEST, (list(first_of_each(events)),)).fetchall()
        return explain_conflict(events, {row[0]: (row[1], row[2]) for row in rows})

    def rebase_positions(self) -> int:
        """Make new positions exceed the stored ones again after a restore from a logical dump
        (which restarts PostgreSQL's transaction counter). Run with every writer stopped.
        Returns the base now in force."""
        with self._connection() as conn, conn.transaction():
            conn.execute("LOCK TABLE events, position_base IN EXCLUSIVE MODE")
            row = conn.execute(
                "SELECT coalesce(max(position), 0) >> 16, pg_current_xact_id()::text::bigint, "
                "base FROM events, position_base GROUP BY base"
            ).fetchone()
            assert row is not None
            stored_high, xid, base = row
            if xid + base <= stored_high:
                base = stored_high + 1 - xid
                conn.execute("UPDATE position_base SET base = %s", (base,))
            return int(base)

    def grant_app_role(self, role: str) -> None:
        """Let `role` (an existing role) use the store as an application, and nothing more:
        append through `append_events()` (which runs with the owner's rights), read, and
        drain the outbox (a relay removes what it published). It cannot insert, change or
        remove events itself, nor disable the immutability triggers (only the owner can).
        Run as the owner, after `migrate()`; idempotent."""
        check_text(role, "role")
        with self._connection() as conn, conn.transaction():
            if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                raise ConfigurationError(
                    f"role {role!r} does not exist in {self._where}; create it first "
                    f"(CREATE ROLE {role} LOGIN PASSWORD '...') and run this again"
                )
            names = {"role": sql.Identifier(role), "schema": sql.Identifier(self.schema)}
            for statement in _APP_ROLE_GRANTS:
                conn.execute(statement.format(**names))

    def _stored_positions(self, events: Sequence[Event]) -> list[int] | None:
        with self._connection() as conn:
            rows = conn.execute(_BY_IDS, ([e.id for e in events],)).fetchall()
        return resolve_retry(events, {row[1]: event_from_row(row) for row in rows})

    # -- reads ------------------------------------------------------------------------------

    def _fetch(self, query: sql.Composed, params: dict[str, Any]) -> list[Event]:
        with self._connection() as conn:
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
        params = {
            "key": event_type,
            "start": check_time(from_timestamp, "from_timestamp"),
            "end": check_time(to_timestamp, "to_timestamp"),
        }
        return paged(
            self._fetch, _BY_TYPE, params, check_position(after_position), lambda e: e.position or 0
        )

    def get_all_events(
        self, from_timestamp: datetime | None = None, limit: int = 100
    ) -> list[Event]:
        start = check_time(from_timestamp, "from_timestamp")
        return self._fetch(_ALL_BY_TIME, {"start": start, "limit": check_limit(limit)})

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Event]:
        params = {"after": check_position(after_position), "limit": check_limit(limit)}
        return self._fetch(_READ_ALL, params)

    def log_horizon(self) -> LogHorizon:
        with self._connection() as conn:
            row = conn.execute(_HORIZON_STATUS, {"cap": _BEHIND_CAP}).fetchone()
            assert row is not None
            horizon, head, behind, lag, xmin, restored = row
            found = conn.execute(_HORIZON_HOLDER, (xmin,)).fetchone()
        holder = HorizonHolder(*found) if found is not None else None
        return LogHorizon(
            int(horizon), int(head), int(behind), float(lag or 0.0), holder, bool(restored)
        )

    # -- outbox ---------------------------------------------------------------------------

    def outbox_batch(self, limit: int, *, shard: int = 0, shards: int = 1) -> list[Event]:
        check_shard(shard, shards)
        params: dict[str, Any] = {"limit": check_limit(limit), "shard": shard, "shards": shards}
        if shards == 1:
            query = _OUTBOX_BATCH
        else:
            query = _SHARD_BATCH
            params["buckets"] = list(range(shard, OUTBOX_BUCKETS, shards))
        with self._connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [event_from_row(row) for row in rows]

    def outbox_remove(self, positions: Sequence[int]) -> None:
        if positions:
            with self._connection() as conn:
                conn.execute("DELETE FROM outbox WHERE position = ANY(%s)", (list(positions),))

    def outbox_status(self) -> OutboxStatus:
        with self._connection() as conn:
            row = conn.execute(_OUTBOX_STATUS, {"cap": _EXACT_DEPTH + 1}).fetchone()
        assert row is not None
        counted, oldest, estimate = row
        if counted <= _EXACT_DEPTH:
            return OutboxStatus(int(counted), oldest)
        return OutboxStatus(max(int(estimate or 0), counted), oldest, estimated=True)

    def outbox_lease(self, *, shard: int = 0, shards: int = 1) -> PostgresOutboxLease:
        check_shard(shard, shards)
        return PostgresOutboxLease(self._url, self.schema, shard, shards, where=self._where)

    def notify_appended(self) -> None:
        # Its own tiny transaction, after the append committed: a NOTIFY inside the appending
        # transaction would serialise every commit of the cluster on the notify queue lock.
        with self._connection() as conn:
            conn.execute("SELECT pg_notify(%s, '')", (notify_channel(self.schema),))

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self._close_listener()
        self._pool.close()
