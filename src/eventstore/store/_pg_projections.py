"""Read models on PostgreSQL: documents (jsonb), checkpoints, generations and failures.

Concurrency (several runner processes of one projection, a rebuild beside them):
- Every batch transaction locks the projection's row FOR SHARE and checks that its generation
  is still the active or the building one; a switch or a new rebuild takes the row FOR
  UPDATE, so it waits for batches in flight and every later batch sees the change (fencing).
- A batch locks the checkpoint rows of its aggregates (FOR UPDATE, in key order, created at
  version 0 first when missing). Two runners that both hold an aggregate's events (a
  rebalance hands a partition over while its old owner still finishes a batch) are thereby
  serialised: the second waits, then reads the version the first wrote, and skips.
- Documents read in a batch are locked the same way; one seen absent is inserted without ON
  CONFLICT, so a concurrent creation of the same key fails the transaction (retriably)
  instead of overwriting it. A deadlock between batches is retried like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from eventstore.errors import EventStoreError, FencedError, ProjectionError
from eventstore.events import encode_json
from eventstore.store._checks import check_find_value, check_limit, check_text
from eventstore.store._pg_lease import notify_channel
from eventstore.store._protocol import (
    ProjectionCounts,
    ProjectionFailure,
    ProjectionRecord,
    ReadModelTransaction,
)

_RECORD = (
    "SELECT p.name, p.active_generation, p.active_version, coalesce(a.position, 0), "
    "p.building_generation, p.building_version, coalesce(b.position, 0), s.handoff_at, "
    "coalesce(s.dead_lettered, 0), s.last_error, s.last_error_at, p.updated_at "
    "FROM projections p "
    "LEFT JOIN projection_positions a ON a.projection = p.name "
    "AND a.generation = p.active_generation "
    "LEFT JOIN projection_positions b ON b.projection = p.name "
    "AND b.generation = p.building_generation "
    "LEFT JOIN projection_stats s ON s.projection = p.name"
)
_FAILURE = (
    "SELECT aggregate_id, version, event_id, position, event_type, policy, error_type, "
    "message, failed_at, held_version FROM projection_failures"
)
_ACTIVE = "(SELECT active_generation FROM projections WHERE name = %(p)s)"
_FAILURE_WHERE = _FAILURE + " WHERE"
_GENERATION_TABLES = (
    "projection_documents",
    "projection_checkpoints",
    "projection_failures",
    "projection_positions",
)
_FENCE_SHARED = (
    "SELECT active_generation, active_version, building_generation, building_version "
    "FROM projections WHERE name = %s FOR SHARE"
)
_FENCE_EXCLUSIVE = _FENCE_SHARED.replace("FOR SHARE", "FOR UPDATE")


def _counts_query(gen: str) -> str:
    """Counts of a generation's rows (`gen`: a constant of this module)."""
    return " ".join(
        f"(SELECT count(*) FROM {table} WHERE projection = %(p)s AND generation = {gen}{extra})"  # noqa: S608 (constants only)
        for table, extra in (
            ("projection_documents", ""),
            ("projection_checkpoints", " AND version > 0"),
            ("projection_failures", " AND policy = 'park'"),
            ("projection_failures", " AND policy = 'skip'"),
        )
    ).replace(") (", "), (")


_COUNTS = "SELECT " + _counts_query("%(g)s")
_ACTIVE_COUNTS = "SELECT " + _counts_query(_ACTIVE)


def _not_registered(name: str) -> ProjectionError:
    return ProjectionError(
        f"projection {name!r} is not registered in this store; start it once "
        "(`eventstore project`, or ProjectionRunner) before using it"
    )


class PgReadModelTransaction:
    backend = "postgres"

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        generation: int,
        version: int,
        active: bool,
        translate: Callable[[psycopg.Error], EventStoreError],
    ) -> None:
        self._conn = conn
        self._translate = translate
        self.projection = name
        self.generation = generation
        self.version = version
        self._active = active
        self._key = {"p": name, "g": generation}

    @property
    def connection(self) -> psycopg.Connection[Any]:
        return self._conn

    def translate(self, error: BaseException) -> EventStoreError | None:
        return self._translate(error) if isinstance(error, psycopg.Error) else None

    def _run(
        self, query: str, *, prepare: bool | None = None, **params: Any
    ) -> psycopg.Cursor[Any]:
        # Translated here, not only when the transaction ends: a handler calls this through
        # Documents, and the runner must see a deadlock or a lost connection as retriable,
        # not as the event's fault.
        try:
            return self._conn.execute(query, {**self._key, **params}, prepare=prepare)
        except psycopg.Error as error:
            raise self._translate(error) from error

    def _lookup(self, query: str, **params: Any) -> psycopg.Cursor[Any]:
        """A look-up of many keys (`= ANY(array)`), planned for its values every time: once
        psycopg prepares a statement, PostgreSQL may switch to a generic plan that scans the
        whole generation (no statistics yet on a new one) and compares each row with every
        key: 10 times slower at 2,000 aggregates, and growing with them."""
        return self._run(query, prepare=False, **params)

    def lock_checkpoints(self, aggregate_ids: Collection[str]) -> dict[str, int]:
        ids = sorted(set(aggregate_ids))
        if not ids:
            return {}
        self._run(
            "INSERT INTO projection_checkpoints (projection, generation, aggregate_id, version, "
            "position) SELECT %(p)s, %(g)s, a, 0, 0 FROM unnest(%(ids)b::text[]) a "
            "ON CONFLICT DO NOTHING",
            ids=ids,
        )
        rows = self._lookup(
            "SELECT aggregate_id, version FROM projection_checkpoints WHERE projection = %(p)s "
            "AND generation = %(g)s AND aggregate_id = ANY(%(ids)b::text[]) "
            "ORDER BY aggregate_id FOR UPDATE",
            ids=ids,
        ).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def save_checkpoints(self, checkpoints: Mapping[str, tuple[int, int]]) -> None:
        if not checkpoints:
            return
        ids = list(checkpoints)
        self._run(
            "INSERT INTO projection_checkpoints AS c (projection, generation, aggregate_id, "
            "version, position) SELECT %(p)s, %(g)s, a, v, pos "
            "FROM unnest(%(ids)b::text[], %(vs)b::int[], %(ps)b::bigint[]) AS x(a, v, pos) "
            "ON CONFLICT (projection, generation, aggregate_id) DO UPDATE "
            "SET version = excluded.version, position = excluded.position",
            ids=ids,
            vs=[checkpoints[i][0] for i in ids],
            ps=[checkpoints[i][1] for i in ids],
        )

    def load_documents(self, keys: Collection[str]) -> dict[str, str]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        rows = self._lookup(
            "SELECT key, doc::text FROM projection_documents WHERE projection = %(p)s "
            "AND generation = %(g)s AND key = ANY(%(keys)b::text[]) ORDER BY key FOR UPDATE",
            keys=wanted,
        ).fetchall()
        return {row[0]: row[1] for row in rows}

    def write_documents(
        self, inserts: Mapping[str, str], upserts: Mapping[str, str], deletes: Collection[str]
    ) -> None:
        for texts, tail in ((inserts, ""), (upserts, _UPSERT)):
            if texts:
                keys = sorted(texts)
                self._run(
                    "INSERT INTO projection_documents (projection, generation, key, doc) "
                    "SELECT %(p)s, %(g)s, k, d::jsonb "
                    "FROM unnest(%(keys)b::text[], %(docs)b::text[]) AS x(k, d)" + tail,
                    keys=keys,
                    docs=[texts[k] for k in keys],
                )
        if deletes:
            self._run(
                "DELETE FROM projection_documents WHERE projection = %(p)s AND generation = %(g)s "
                "AND key = ANY(%(keys)b::text[])",
                keys=sorted(deletes),
            )

    def find_documents(self, field: str, value: Any, limit: int) -> list[tuple[str, Any]]:
        rows = self._run(
            "SELECT key, doc FROM projection_documents WHERE projection = %(p)s "
            "AND generation = %(g)s AND doc @> %(probe)s::jsonb ORDER BY key LIMIT %(limit)s",
            probe=encode_json({field: value}),
            limit=check_limit(limit),
        ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def parked(self, aggregate_ids: Collection[str]) -> dict[str, ProjectionFailure]:
        if not aggregate_ids:
            return {}
        rows = self._lookup(
            _FAILURE_WHERE + " projection = %(p)s AND generation = %(g)s AND policy = 'park' "
            "AND aggregate_id = ANY(%(ids)b::text[])",
            ids=list(aggregate_ids),
        ).fetchall()
        return {row[0]: ProjectionFailure(*row) for row in rows}

    def record_failure(self, failure: ProjectionFailure) -> None:
        self._run(
            "INSERT INTO projection_failures (projection, generation, aggregate_id, version, "
            "event_id, position, event_type, policy, error_type, message, failed_at, "
            "held_version) VALUES (%(p)s, %(g)s, %(a)s, %(v)s, %(id)s, %(pos)s, %(t)s, "
            "%(policy)s, %(et)s, %(m)s, %(at)s, %(held)s) "
            "ON CONFLICT (projection, generation, aggregate_id, version) DO UPDATE SET "
            "policy = excluded.policy, error_type = excluded.error_type, "
            "message = excluded.message, failed_at = excluded.failed_at",
            a=failure.aggregate_id,
            v=failure.version,
            id=failure.event_id,
            pos=failure.position,
            t=failure.event_type,
            policy=failure.policy,
            et=failure.error_type,
            m=failure.message,
            at=failure.failed_at,
            held=failure.held_version,
        )

    def hold(self, aggregate_id: str, version: int) -> None:
        self._run(
            "UPDATE projection_failures SET held_version = greatest(held_version, %(v)s) "
            "WHERE projection = %(p)s AND generation = %(g)s AND aggregate_id = %(a)s "
            "AND policy = 'park'",
            a=aggregate_id,
            v=version,
        )

    def clear_parked(self, aggregate_id: str) -> None:
        self._run(
            "DELETE FROM projection_failures WHERE projection = %(p)s AND generation = %(g)s "
            "AND aggregate_id = %(a)s AND policy = 'park'",
            a=aggregate_id,
        )

    def reset_aggregate(self, aggregate_id: str) -> None:
        for table in ("projection_checkpoints", "projection_failures"):
            self._run(
                f"DELETE FROM {table} WHERE projection = %(p)s AND generation = %(g)s "  # noqa: S608 (constant names)
                "AND aggregate_id = %(a)s",
                a=aggregate_id,
            )

    def set_position(self, position: int) -> None:
        self._run(
            "INSERT INTO projection_positions AS t (projection, generation, position) "
            "VALUES (%(p)s, %(g)s, %(pos)s) ON CONFLICT (projection, generation) "
            "DO UPDATE SET position = greatest(t.position, excluded.position)",
            pos=position,
        )

    def note(self, *, dead_lettered: int = 0, error: str | None = None) -> None:
        if not dead_lettered and error is None:
            return
        self._run(
            "INSERT INTO projection_stats AS s (projection, dead_lettered, last_error, "
            "last_error_at) VALUES (%(p)s, %(n)s, %(e)s, "
            "CASE WHEN %(e)s::text IS NULL THEN NULL ELSE now() END) "
            "ON CONFLICT (projection) DO UPDATE SET "
            "dead_lettered = s.dead_lettered + excluded.dead_lettered, "
            "last_error = coalesce(excluded.last_error, s.last_error), "
            "last_error_at = coalesce(excluded.last_error_at, s.last_error_at)",
            n=dead_lettered,
            e=error,
        )

    def mark_handoff(self, at: datetime) -> None:
        self._run(
            "INSERT INTO projection_stats AS s (projection, handoff_at) VALUES (%(p)s, %(at)s) "
            "ON CONFLICT (projection) DO UPDATE SET handoff_at = excluded.handoff_at",
            at=at,
        )

    def behind(self, generation: int) -> dict[str, int]:
        # One primary-key probe per aggregate of the other generation (a join was planned as
        # a nested loop over the whole generation per row while statistics were missing).
        rows = self._lookup(
            "SELECT a.aggregate_id, a.version FROM projection_checkpoints a "
            "WHERE a.projection = %(p)s AND a.generation = %(other)s AND a.version > coalesce("
            "(SELECT b.version FROM projection_checkpoints b WHERE b.projection = %(p)s "
            "AND b.generation = %(g)s AND b.aggregate_id = a.aggregate_id), 0)",
            other=generation,
        ).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def switch(self) -> int:
        row = self._run(
            "UPDATE projections AS n SET active_generation = o.building_generation, "
            "active_version = o.building_version, building_generation = NULL, "
            "building_version = NULL, updated_at = now() "
            "FROM projections o WHERE n.name = %(p)s AND o.name = n.name "
            "AND o.building_generation = %(g)s RETURNING o.active_generation"
        ).fetchone()
        if row is None:
            raise FencedError(
                f"projection {self.projection!r}: generation {self.generation} is no longer the "
                "one being built (another rebuild started); nothing was switched"
            )
        self._active = True
        return int(row[0])


_UPSERT = " ON CONFLICT (projection, generation, key) DO UPDATE SET doc = excluded.doc"


class PostgresReadModels:
    """The `ReadModels` capability of `PostgresEventStore` (a mixin: it borrows the store's
    pooled connections)."""

    schema: str
    _url: str
    _listener: psycopg.Connection[Any] | None = None

    def _connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        raise NotImplementedError

    def _translate_error(self, error: psycopg.Error) -> EventStoreError:
        raise NotImplementedError

    def register_projection(self, name: str, version: int) -> ProjectionRecord:
        check_text(name, "projection name")
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO projections (name, active_generation, active_version, "
                "last_generation) VALUES (%s, 1, %s, 1) ON CONFLICT (name) DO NOTHING",
                (name, version),
            )
            row = conn.execute(_RECORD + " WHERE p.name = %s", (name,)).fetchone()
        assert row is not None
        return ProjectionRecord(*row)

    def projection_record(self, name: str) -> ProjectionRecord | None:
        with self._connection() as conn:
            row = conn.execute(_RECORD + " WHERE p.name = %s", (name,)).fetchone()
        return ProjectionRecord(*row) if row is not None else None

    def projection_records(self) -> list[ProjectionRecord]:
        with self._connection() as conn:
            rows = conn.execute(_RECORD + " ORDER BY p.name").fetchall()
        return [ProjectionRecord(*row) for row in rows]

    @contextmanager
    def projection_transaction(
        self, name: str, generation: int | None = None, *, exclusive: bool = False
    ) -> Iterator[ReadModelTransaction]:
        query = _FENCE_EXCLUSIVE if exclusive else _FENCE_SHARED
        with self._connection() as conn, conn.transaction():
            row = conn.execute(query, (name,)).fetchone()
            if row is None:
                raise _not_registered(name)
            active, active_version, building, building_version = row
            if generation is None or generation == active:
                yield PgReadModelTransaction(
                    conn, name, active, active_version, True, self._translate_error
                )
            elif generation == building:
                yield PgReadModelTransaction(
                    conn, name, building, building_version, False, self._translate_error
                )
            else:
                raise FencedError(
                    f"projection {name!r}: generation {generation} is neither the active one "
                    f"({active}) nor the one being built ({building}); a newer rebuild or a "
                    "switch replaced it, so this writer stops (nothing of this batch was written)"
                )

    def begin_generation(self, name: str, version: int) -> int:
        with self._connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT building_generation FROM projections WHERE name = %s FOR UPDATE", (name,)
            ).fetchone()
            if row is None:
                raise _not_registered(name)
            fenced = row[0]
            new = conn.execute(
                "UPDATE projections SET last_generation = last_generation + 1, "
                "building_generation = last_generation + 1, building_version = %s, "
                "updated_at = now() WHERE name = %s "
                "RETURNING building_generation",
                (version, name),
            ).fetchone()
        assert new is not None
        if fenced is not None:
            self.drop_generation(name, fenced)
        return int(new[0])

    def drop_generation(self, name: str, generation: int) -> None:
        """Remove a generation's rows, unless it is the active one; a building one is
        abandoned (its rebuild is fenced out)."""
        with self._connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT active_generation, building_generation FROM projections "
                "WHERE name = %s FOR UPDATE",
                (name,),
            ).fetchone()
            if row is None or row[0] == generation:
                return
            if row[1] == generation:
                conn.execute(
                    "UPDATE projections SET building_generation = NULL, building_version = NULL "
                    "WHERE name = %s",
                    (name,),
                )
        self._purge(name, generation)

    def _purge(self, name: str, generation: int) -> None:
        with self._connection() as conn, conn.transaction():
            for table in _GENERATION_TABLES:
                conn.execute(
                    f"DELETE FROM {table} WHERE projection = %s AND generation = %s",  # noqa: S608 (constant names)
                    (name, generation),
                )

    def drop_projection(self, name: str) -> None:
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT FROM projections WHERE name = %s FOR UPDATE", (name,))
            for table in (*_GENERATION_TABLES, "projection_stats"):
                conn.execute(
                    f"DELETE FROM {table} WHERE projection = %s",  # noqa: S608 (constant names)
                    (name,),
                )
            conn.execute("DELETE FROM projections WHERE name = %s", (name,))

    def get_document(self, projection: str, key: str) -> Any:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT doc FROM projection_documents WHERE projection = %(p)s "
                "AND generation = (SELECT active_generation FROM projections "
                "WHERE name = %(p)s) AND key = %(k)s",
                {"p": projection, "k": key},
            ).fetchone()
        return row[0] if row is not None else None

    def find_documents(
        self, projection: str, field: str, value: Any, limit: int = 100
    ) -> list[tuple[str, Any]]:
        check_find_value(field, value)
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT key, doc FROM projection_documents WHERE projection = %(p)s "
                "AND generation = (SELECT active_generation FROM projections "
                "WHERE name = %(p)s) AND doc @> %(probe)s::jsonb "
                "ORDER BY key LIMIT %(limit)s",
                {
                    "p": projection,
                    "probe": encode_json({field: value}),
                    "limit": check_limit(limit),
                },
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def list_documents(
        self, projection: str, after_key: str = "", limit: int = 100
    ) -> list[tuple[str, Any]]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT key, doc FROM projection_documents WHERE projection = %(p)s "
                "AND generation = (SELECT active_generation FROM projections "
                "WHERE name = %(p)s) AND key > %(after)s ORDER BY key LIMIT %(limit)s",
                {"p": projection, "after": after_key, "limit": check_limit(limit)},
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def projection_failures(
        self,
        name: str,
        *,
        policy: str | None = None,
        aggregate_id: str | None = None,
        limit: int = 1000,
    ) -> list[ProjectionFailure]:
        with self._connection() as conn:
            rows = conn.execute(
                _FAILURE_WHERE  # noqa: S608 (constants only)
                + " projection = %(p)s AND generation = (SELECT active_generation FROM projections "
                "WHERE name = %(p)s) "
                "AND (%(policy)s::text IS NULL OR policy = %(policy)s) "
                "AND (%(a)s::text IS NULL OR aggregate_id = %(a)s) "
                "ORDER BY position, aggregate_id LIMIT %(limit)s",
                {"p": name, "policy": policy, "a": aggregate_id, "limit": check_limit(limit)},
            ).fetchall()
        return [ProjectionFailure(*row) for row in rows]

    def projection_checkpoint(self, name: str, aggregate_id: str) -> int:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT version FROM projection_checkpoints WHERE projection = %(p)s "
                "AND generation = (SELECT active_generation FROM projections "
                "WHERE name = %(p)s) AND aggregate_id = %(a)s",
                {"p": name, "a": aggregate_id},
            ).fetchone()
        return int(row[0]) if row is not None else 0

    def projection_counts(self, name: str, generation: int | None = None) -> ProjectionCounts:
        query = _COUNTS if generation is not None else _ACTIVE_COUNTS
        with self._connection() as conn:
            row = conn.execute(query, {"p": name, "g": generation}).fetchone()
        assert row is not None
        return ProjectionCounts(*(int(v) for v in row))

    def wait_for_appends(self, timeout: float) -> None:
        """Sleep until a NOTIFY of an append to this schema arrives, or `timeout` passes (a
        listening connection of its own, opened on first use)."""
        listener = self._listener
        try:
            if listener is None or listener.closed:
                listener = psycopg.connect(self._url, autocommit=True)
                listener.execute(
                    sql.SQL("LISTEN {}").format(sql.Identifier(notify_channel(self.schema)))
                )
                self._listener = listener
            for _ in listener.notifies(timeout=timeout, stop_after=1):
                break
        except psycopg.Error:
            # The store's other calls report an unreachable server; waiting just ends early.
            self._listener = None

    def _close_listener(self) -> None:
        listener = self._listener
        if listener is not None:
            listener.close()
