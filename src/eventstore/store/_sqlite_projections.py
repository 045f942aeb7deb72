"""Read models on SQLite: documents (JSON text), checkpoints, generations and failures.

Every batch runs under BEGIN IMMEDIATE, which admits one writer at a time across threads and
processes: a batch sees and changes the read model alone, so the row locks of the PostgreSQL
backend have nothing to do here, and a switch or a new rebuild is simply the next writer.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any

from eventstore.errors import EventStoreError, FencedError, ProjectionError
from eventstore.store._checks import check_find_value, check_limit, check_text
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
_ACTIVE = "(SELECT active_generation FROM projections WHERE name = :p)"
_FAILURE_WHERE = _FAILURE + " WHERE"


def _counts_query(gen: str) -> str:
    """Counts of a generation's rows (`gen`: a constant of this module)."""
    return " ".join(
        f"(SELECT count(*) FROM {table} WHERE projection = :p AND generation = {gen}{extra})"  # noqa: S608 (constants only)
        for table, extra in (
            ("projection_documents", ""),
            ("projection_checkpoints", " AND version > 0"),
            ("projection_failures", " AND policy = 'park'"),
            ("projection_failures", " AND policy = 'skip'"),
        )
    ).replace(") (", "), (")


_COUNTS = "SELECT " + _counts_query(":g")
_ACTIVE_COUNTS = "SELECT " + _counts_query(_ACTIVE)
_TABLES = (
    "projection_documents",
    "projection_checkpoints",
    "projection_failures",
    "projection_positions",
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _record(row: tuple[Any, ...]) -> ProjectionRecord:
    values = list(row)
    for index in (7, 10, 11):
        values[index] = _time(values[index])
    return ProjectionRecord(*values)


def _failure(row: tuple[Any, ...]) -> ProjectionFailure:
    values = list(row)
    values[8] = _time(values[8])
    return ProjectionFailure(*values)


def _not_registered(name: str) -> ProjectionError:
    return ProjectionError(
        f"projection {name!r} is not registered in this store; start it once "
        "(`eventstore project`, or ProjectionRunner) before using it"
    )


def _probe(field: str, value: Any) -> tuple[str, str, Any]:
    """The JSON path of a top-level field, the JSON type a match must have, and the value to
    compare (SQLite's json_extract returns true as 1: the type test keeps them apart)."""
    path = "$." + json.dumps(field)
    if value is None:
        return path, "null", None
    if isinstance(value, bool):
        return path, "true" if value else "false", int(value)
    if isinstance(value, int):
        return path, "integer", value
    if isinstance(value, float):
        return path, "real", value
    if isinstance(value, str):
        return path, "text", value
    raise ProjectionError(
        f"find() compares a field with a string, number, bool or None, not {value!r}"
    )


_FIND = (
    "SELECT key, doc FROM projection_documents WHERE projection = :p AND generation = {gen} "
    "AND (json_type(doc, :path) = :type OR (:type IN ('integer', 'real') AND "
    "json_type(doc, :path) IN ('integer', 'real'))) "
    "AND (:value IS NULL OR json_extract(doc, :path) = :value) ORDER BY key LIMIT :limit"
)


class SqliteReadModelTransaction:
    backend = "sqlite"

    def __init__(
        self,
        conn: sqlite3.Connection,
        name: str,
        generation: int,
        version: int,
        active: bool,
        translate: Callable[[sqlite3.Error], EventStoreError],
    ) -> None:
        self._conn = conn
        self._translate = translate
        self.projection = name
        self.generation = generation
        self.version = version
        self._active = active
        self._key = {"p": name, "g": generation}

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    def translate(self, error: BaseException) -> EventStoreError | None:
        return self._translate(error) if isinstance(error, sqlite3.Error) else None

    def _run(self, query: str, **params: Any) -> sqlite3.Cursor:
        try:
            return self._conn.execute(query, {**self._key, **params})
        except sqlite3.Error as error:
            raise self._translate(error) from error

    def lock_checkpoints(self, aggregate_ids: Collection[str]) -> dict[str, int]:
        if not aggregate_ids:
            return {}
        rows = self._run(
            "SELECT aggregate_id, version FROM projection_checkpoints WHERE projection = :p "
            "AND generation = :g AND aggregate_id IN (SELECT value FROM json_each(:ids))",
            ids=json.dumps(sorted(set(aggregate_ids))),
        ).fetchall()
        found = {row[0]: int(row[1]) for row in rows}
        return {a: found.get(a, 0) for a in aggregate_ids}

    def save_checkpoints(self, checkpoints: Mapping[str, tuple[int, int]]) -> None:
        self._conn.executemany(
            "INSERT INTO projection_checkpoints (projection, generation, aggregate_id, version, "
            "position) VALUES (?, ?, ?, ?, ?) ON CONFLICT (projection, generation, aggregate_id) "
            "DO UPDATE SET version = excluded.version, position = excluded.position",
            [(self.projection, self.generation, a, v, p) for a, (v, p) in checkpoints.items()],
        )

    def load_documents(self, keys: Collection[str]) -> dict[str, str]:
        if not keys:
            return {}
        rows = self._run(
            "SELECT key, doc FROM projection_documents WHERE projection = :p AND generation = :g "
            "AND key IN (SELECT value FROM json_each(:keys))",
            keys=json.dumps(sorted(set(keys))),
        ).fetchall()
        return {row[0]: row[1] for row in rows}

    def write_documents(
        self, inserts: Mapping[str, str], upserts: Mapping[str, str], deletes: Collection[str]
    ) -> None:
        rows = [(self.projection, self.generation, k, d) for k, d in {**inserts, **upserts}.items()]
        self._conn.executemany(
            "INSERT INTO projection_documents (projection, generation, key, doc) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (projection, generation, key) "
            "DO UPDATE SET doc = excluded.doc",
            rows,
        )
        self._conn.executemany(
            "DELETE FROM projection_documents WHERE projection = ? AND generation = ? AND key = ?",
            [(self.projection, self.generation, k) for k in deletes],
        )

    def find_documents(self, field: str, value: Any, limit: int) -> list[tuple[str, Any]]:
        path, kind, compared = _probe(field, value)
        rows = self._run(
            _FIND.format(gen=":g"),
            path=path,
            type=kind,
            value=compared,
            limit=check_limit(limit),
        ).fetchall()
        return [(row[0], json.loads(row[1])) for row in rows]

    def parked(self, aggregate_ids: Collection[str]) -> dict[str, ProjectionFailure]:
        if not aggregate_ids:
            return {}
        rows = self._run(
            _FAILURE_WHERE  # noqa: S608 (constants only)
            + " projection = :p AND generation = :g AND policy = 'park' "
            "AND aggregate_id IN (SELECT value FROM json_each(:ids))",
            ids=json.dumps(list(aggregate_ids)),
        ).fetchall()
        return {row[0]: _failure(row) for row in rows}

    def record_failure(self, failure: ProjectionFailure) -> None:
        self._run(
            "INSERT INTO projection_failures (projection, generation, aggregate_id, version, "
            "event_id, position, event_type, policy, error_type, message, failed_at, "
            "held_version) VALUES (:p, :g, :a, :v, :id, :pos, :t, :policy, :et, :m, :at, :held) "
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
            at=failure.failed_at.astimezone(UTC).isoformat(timespec="microseconds"),
            held=failure.held_version,
        )

    def hold(self, aggregate_id: str, version: int) -> None:
        self._run(
            "UPDATE projection_failures SET held_version = max(held_version, :v) "
            "WHERE projection = :p AND generation = :g AND aggregate_id = :a AND policy = 'park'",
            a=aggregate_id,
            v=version,
        )

    def clear_parked(self, aggregate_id: str) -> None:
        self._run(
            "DELETE FROM projection_failures WHERE projection = :p AND generation = :g "
            "AND aggregate_id = :a AND policy = 'park'",
            a=aggregate_id,
        )

    def reset_aggregate(self, aggregate_id: str) -> None:
        for table in ("projection_checkpoints", "projection_failures"):
            self._run(
                f"DELETE FROM {table} WHERE projection = :p AND generation = :g "  # noqa: S608 (constant names)
                "AND aggregate_id = :a",
                a=aggregate_id,
            )

    def set_position(self, position: int) -> None:
        self._run(
            "INSERT INTO projection_positions (projection, generation, position) "
            "VALUES (:p, :g, :pos) ON CONFLICT (projection, generation) "
            "DO UPDATE SET position = max(position, excluded.position)",
            pos=position,
        )

    def note(self, *, dead_lettered: int = 0, error: str | None = None) -> None:
        if not dead_lettered and error is None:
            return
        self._run(
            "INSERT INTO projection_stats (projection, dead_lettered, last_error, last_error_at) "
            "VALUES (:p, :n, :e, CASE WHEN :e IS NULL THEN NULL ELSE :now END) "
            "ON CONFLICT (projection) DO UPDATE SET "
            "dead_lettered = dead_lettered + excluded.dead_lettered, "
            "last_error = coalesce(excluded.last_error, last_error), "
            "last_error_at = coalesce(excluded.last_error_at, last_error_at)",
            n=dead_lettered,
            e=error,
            now=_now(),
        )

    def mark_handoff(self, at: datetime) -> None:
        self._run(
            "INSERT INTO projection_stats (projection, handoff_at) VALUES (:p, :at) "
            "ON CONFLICT (projection) DO UPDATE SET handoff_at = excluded.handoff_at",
            at=at.astimezone(UTC).isoformat(timespec="microseconds"),
        )

    def behind(self, generation: int) -> dict[str, int]:
        rows = self._run(
            "SELECT a.aggregate_id, a.version FROM projection_checkpoints a "
            "LEFT JOIN projection_checkpoints b ON b.projection = a.projection "
            "AND b.generation = :g AND b.aggregate_id = a.aggregate_id "
            "WHERE a.projection = :p AND a.generation = :other "
            "AND a.version > coalesce(b.version, 0)",
            other=generation,
        ).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def switch(self) -> int:
        row = self._run(
            "SELECT active_generation FROM projections WHERE name = :p AND building_generation = :g"
        ).fetchone()
        if row is None:
            raise FencedError(
                f"projection {self.projection!r}: generation {self.generation} is no longer the "
                "one being built (another rebuild started); nothing was switched"
            )
        self._run(
            "UPDATE projections SET active_generation = building_generation, "
            "active_version = building_version, building_generation = NULL, "
            "building_version = NULL, updated_at = :now WHERE name = :p",
            now=_now(),
        )
        self._active = True
        return int(row[0])


class SqliteReadModels:
    """The `ReadModels` capability of `SqliteEventStore` (a mixin on its connection)."""

    def _locked(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _translate_error(self, error: sqlite3.Error) -> EventStoreError:
        raise NotImplementedError

    def register_projection(self, name: str, version: int) -> ProjectionRecord:
        check_text(name, "projection name")
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO projections (name, active_generation, active_version, "
                "last_generation, updated_at) VALUES (?, 1, ?, 1, ?) ON CONFLICT (name) DO NOTHING",
                (name, version, _now()),
            )
            row = conn.execute(_RECORD + " WHERE p.name = ?", (name,)).fetchone()
        return _record(row)

    def projection_record(self, name: str) -> ProjectionRecord | None:
        with self._locked() as conn:
            row = conn.execute(_RECORD + " WHERE p.name = ?", (name,)).fetchone()
        return _record(row) if row is not None else None

    def projection_records(self) -> list[ProjectionRecord]:
        with self._locked() as conn:
            rows = conn.execute(_RECORD + " ORDER BY p.name").fetchall()
        return [_record(row) for row in rows]

    @contextmanager
    def projection_transaction(
        self, name: str, generation: int | None = None, *, exclusive: bool = False
    ) -> Iterator[ReadModelTransaction]:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT active_generation, active_version, building_generation, "
                "building_version FROM projections WHERE name = ?",
                (name,),
            ).fetchone()
            if row is None:
                raise _not_registered(name)
            active, active_version, building, building_version = row
            if generation is None or generation == active:
                yield SqliteReadModelTransaction(
                    conn, name, active, active_version, True, self._translate_error
                )
            elif generation == building:
                yield SqliteReadModelTransaction(
                    conn, name, building, building_version, False, self._translate_error
                )
            else:
                raise FencedError(
                    f"projection {name!r}: generation {generation} is neither the active one "
                    f"({active}) nor the one being built ({building}); a newer rebuild or a "
                    "switch replaced it, so this writer stops (nothing of this batch was written)"
                )

    def begin_generation(self, name: str, version: int) -> int:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT building_generation, last_generation FROM projections WHERE name = ?",
                (name,),
            ).fetchone()
            if row is None:
                raise _not_registered(name)
            fenced, last = row
            conn.execute(
                "UPDATE projections SET last_generation = ?, building_generation = ?, "
                "building_version = ?, updated_at = ? WHERE name = ?",
                (last + 1, last + 1, version, _now(), name),
            )
            if fenced is not None:
                self._purge(conn, name, fenced)
        return int(last + 1)

    def drop_generation(self, name: str, generation: int) -> None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT active_generation, building_generation FROM projections WHERE name = ?",
                (name,),
            ).fetchone()
            if row is None or row[0] == generation:
                return
            if row[1] == generation:
                conn.execute(
                    "UPDATE projections SET building_generation = NULL, building_version = NULL "
                    "WHERE name = ?",
                    (name,),
                )
            self._purge(conn, name, generation)

    @staticmethod
    def _purge(conn: sqlite3.Connection, name: str, generation: int) -> None:
        for table in _TABLES:
            conn.execute(
                f"DELETE FROM {table} WHERE projection = ? AND generation = ?",  # noqa: S608 (constant names)
                (name, generation),
            )

    def drop_projection(self, name: str) -> None:
        with self._transaction() as conn:
            for table in (*_TABLES, "projection_stats"):
                conn.execute(f"DELETE FROM {table} WHERE projection = ?", (name,))  # noqa: S608 (constant names)
            conn.execute("DELETE FROM projections WHERE name = ?", (name,))

    def get_document(self, projection: str, key: str) -> Any:
        with self._locked() as conn:
            row = conn.execute(
                "SELECT doc FROM projection_documents WHERE projection = :p "
                "AND generation = (SELECT active_generation FROM projections "
                "WHERE name = :p) AND key = :k",
                {"p": projection, "k": key},
            ).fetchone()
        return json.loads(row[0]) if row is not None else None

    def find_documents(
        self, projection: str, field: str, value: Any, limit: int = 100
    ) -> list[tuple[str, Any]]:
        check_find_value(field, value)
        path, kind, compared = _probe(field, value)
        with self._locked() as conn:
            rows = conn.execute(
                _FIND.format(gen=_ACTIVE),
                {
                    "p": projection,
                    "path": path,
                    "type": kind,
                    "value": compared,
                    "limit": check_limit(limit),
                },
            ).fetchall()
        return [(row[0], json.loads(row[1])) for row in rows]

    def list_documents(
        self, projection: str, after_key: str = "", limit: int = 100
    ) -> list[tuple[str, Any]]:
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT key, doc FROM projection_documents WHERE projection = :p "
                "AND generation = (SELECT active_generation FROM projections "
                "WHERE name = :p) AND key > :after ORDER BY key LIMIT :limit",
                {"p": projection, "after": after_key, "limit": check_limit(limit)},
            ).fetchall()
        return [(row[0], json.loads(row[1])) for row in rows]

    def projection_failures(
        self,
        name: str,
        *,
        policy: str | None = None,
        aggregate_id: str | None = None,
        limit: int = 1000,
    ) -> list[ProjectionFailure]:
        with self._locked() as conn:
            rows = conn.execute(
                _FAILURE_WHERE  # noqa: S608 (constants only)
                + " projection = :p AND generation = (SELECT active_generation FROM projections "
                "WHERE name = :p) "
                "AND (:policy IS NULL OR policy = :policy) AND (:a IS NULL OR aggregate_id = :a) "
                "ORDER BY position, aggregate_id LIMIT :limit",
                {"p": name, "policy": policy, "a": aggregate_id, "limit": check_limit(limit)},
            ).fetchall()
        return [_failure(row) for row in rows]

    def projection_checkpoint(self, name: str, aggregate_id: str) -> int:
        with self._locked() as conn:
            row = conn.execute(
                "SELECT version FROM projection_checkpoints WHERE projection = :p "
                "AND generation = (SELECT active_generation FROM projections "
                "WHERE name = :p) AND aggregate_id = :a",
                {"p": name, "a": aggregate_id},
            ).fetchone()
        return int(row[0]) if row is not None else 0

    def projection_counts(self, name: str, generation: int | None = None) -> ProjectionCounts:
        query = _COUNTS if generation is not None else _ACTIVE_COUNTS
        with self._locked() as conn:
            row = conn.execute(query, {"p": name, "g": generation}).fetchone()
        return ProjectionCounts(*(int(v) for v in row))
