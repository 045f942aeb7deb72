"""Replay's store capabilities on PostgreSQL: many aggregates' events at once, the
aggregates index, snapshots and the record of control requests."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from eventstore.events import Event
from eventstore.store._checks import check_after, check_limit, check_time, prefix_range
from eventstore.store._pg_sql import HORIZON, event_columns
from eventstore.store._protocol import AggregateRef, Claim, Snapshot
from eventstore.store._rows import event_from_row
from eventstore.versioning import Upcasters

_MAX = 2**63 - 1
_NO_CAP = 2**62  # added to a version, stays within bigint
_COLUMNS = event_columns("e")
# A position bound is also held below the log's horizon (_pg_sql.py): a cut at position
# P must not change afterwards, and an event committing later with a position below P would.
_ONE = sql.SQL(
    "SELECT {cols} FROM events e WHERE e.aggregate_id = %(id)s AND e.version > %(after)s "
    "AND e.version <= %(max_version)s AND e.version <= %(after)s + %(each)s {bound} "
    "ORDER BY e.version LIMIT %(limit)s"
)
_MANY = sql.SQL(
    "SELECT {cols} FROM unnest(%(ids)s::text[], %(afters)s::bigint[]) AS t(id, after) "
    "CROSS JOIN LATERAL (SELECT * FROM events e WHERE e.aggregate_id = t.id "
    "AND e.version > t.after AND e.version <= %(max_version)s "
    "AND e.version <= t.after + %(each)s {bound} "
    'ORDER BY e.version) e ORDER BY e.aggregate_id COLLATE "C", e.version LIMIT %(limit)s'
)
_BOUND = sql.SQL("AND e.position <= %(max_position)s AND e.position < {horizon}").format(
    horizon=sql.SQL(HORIZON)
)
_QUERIES = {
    (many, bounded): (_MANY if many else _ONE).format(
        cols=_COLUMNS, bound=_BOUND if bounded else sql.SQL("")
    )
    for many in (False, True)
    for bounded in (False, True)
}
# Both use the partial index of first events (0004_replay.sql).
_TYPE = 'aggregate_type COLLATE "C"'
_ID = 'aggregate_id COLLATE "C"'
_IN_RANGE = (
    f"AND {_ID} >= %(low)s AND (%(high)s::text IS NULL OR {_ID} < %(high)s) "
    f"AND position <= %(max_position)s AND (%(unbounded)s OR position < {HORIZON}) "
    f"ORDER BY {_TYPE}, {_ID} LIMIT %(limit)s"
)
_AGGREGATES_OF_TYPE = (
    "SELECT aggregate_type, aggregate_id FROM events WHERE version = 1 "  # noqa: S608
    f"AND {_TYPE} = %(type)s AND {_ID} > %(after_id)s " + _IN_RANGE
)
_AGGREGATES = (
    "SELECT aggregate_type, aggregate_id FROM events WHERE version = 1 "  # noqa: S608
    f"AND ({_TYPE}, {_ID}) > (%(after_type)s, %(after_id)s) " + _IN_RANGE
)
_SNAPSHOT_COLUMNS = (
    'aggregate_id, aggregate_type, version, position, "timestamp", max_timestamp, reducer_version, '
    "fingerprint, state, digest, created_at"
)
_LOAD_SNAPSHOTS = (
    f"SELECT DISTINCT ON (aggregate_id) {_SNAPSHOT_COLUMNS} FROM snapshots "  # noqa: S608
    "WHERE aggregate_id = ANY(%(ids)s::text[]) AND reducer_version = %(reducer_version)s "
    "AND fingerprint = %(fingerprint)s AND version <= %(max_version)s "
    "AND position <= %(max_position)s "
    "AND max_timestamp <= coalesce(%(max_timestamp)s::timestamptz, 'infinity') "
    "ORDER BY aggregate_id, version DESC"
)
_SAVE_SNAPSHOT = (
    'INSERT INTO snapshots (aggregate_id, aggregate_type, version, position, "timestamp", '
    "max_timestamp, reducer_version, fingerprint, state, digest) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (aggregate_id, version) DO UPDATE SET aggregate_type = excluded.aggregate_type, "
    'position = excluded.position, "timestamp" = excluded."timestamp", '
    "max_timestamp = excluded.max_timestamp, "
    "reducer_version = excluded.reducer_version, fingerprint = excluded.fingerprint, "
    "state = excluded.state, digest = excluded.digest, created_at = now()"
)
# Claimed now when new, or when unfinished and either ours or older than the timeout; else
# no row comes back and the existing one says why.
_CLAIM = (
    "INSERT INTO control_requests (request_id, kind, claimed_by) "
    "VALUES (%(id)s, %(kind)s, %(owner)s) "
    "ON CONFLICT (request_id) DO UPDATE SET claimed_by = excluded.claimed_by, "
    "claimed_at = now() WHERE control_requests.reply IS NULL "
    "AND (control_requests.claimed_by = excluded.claimed_by "
    "OR control_requests.claimed_at < now() - make_interval(secs => %(timeout)s)) "
    "RETURNING request_id"
)


def _bounds(max_version: int | None, max_position: int | None) -> dict[str, int]:
    return {
        "max_version": _MAX if max_version is None else max_version,
        "max_position": _MAX if max_position is None else max_position,
    }


class PostgresReplay:
    """The `AggregateReads`, `Snapshots` and `ControlRequests` capabilities of
    `PostgresEventStore` (a mixin: it borrows the store's pooled connections)."""

    _upcasters: Upcasters

    def _connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        raise NotImplementedError

    # -- reads ------------------------------------------------------------------------------

    def list_aggregates(
        self,
        aggregate_type: str | None = None,
        *,
        after: AggregateRef | None = None,
        id_prefix: str | None = None,
        max_position: int | None = None,
        limit: int = 100,
    ) -> list[AggregateRef]:
        low, high = prefix_range(id_prefix)
        params: dict[str, Any] = {
            "limit": check_limit(limit),
            "low": low,
            "high": high,
            "max_position": _MAX if max_position is None else max_position,
            "unbounded": max_position is None,
            "after_type": after.aggregate_type if after else "",
            "after_id": after.aggregate_id if after else "",
        }
        if aggregate_type is not None:
            params["type"] = check_after(aggregate_type, after)
        query = _AGGREGATES if aggregate_type is None else _AGGREGATES_OF_TYPE
        with self._connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [AggregateRef(*row) for row in rows]

    def read_aggregates(
        self,
        after_versions: Mapping[str, int],
        *,
        max_version: int | None = None,
        max_position: int | None = None,
        per_aggregate: int | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        if not after_versions:
            return []
        params: dict[str, Any] = {"limit": check_limit(limit)}
        params.update(_bounds(max_version, max_position))
        # A bound on version (so an index range): no more than `each` after each `after`.
        params["each"] = _NO_CAP if per_aggregate is None else check_limit(per_aggregate)
        many = len(after_versions) > 1
        if many:
            params["ids"] = list(after_versions)
            params["afters"] = list(after_versions.values())
        else:
            [(params["id"], params["after"])] = after_versions.items()
        query = _QUERIES[(many, max_position is not None)]
        with self._connection() as conn:
            rows = conn.execute(query, params).fetchall()
        upcast = self._upcasters.upcast
        return [upcast(event_from_row(row)) for row in rows]

    # -- snapshots --------------------------------------------------------------------------

    def load_snapshots(
        self,
        aggregate_ids: Collection[str],
        *,
        reducer_version: int,
        fingerprint: str,
        max_version: int | None = None,
        max_position: int | None = None,
        max_timestamp: datetime | None = None,
    ) -> dict[str, Snapshot]:
        if not aggregate_ids:
            return {}
        params: dict[str, Any] = {
            "ids": list(aggregate_ids),
            "reducer_version": reducer_version,
            "fingerprint": fingerprint,
            "max_timestamp": check_time(max_timestamp, "max_timestamp"),
        }
        params.update(_bounds(max_version, max_position))
        with self._connection() as conn:
            rows = conn.execute(_LOAD_SNAPSHOTS, params).fetchall()
        return {row[0]: Snapshot(*row) for row in rows}

    def save_snapshots(self, snapshots: Sequence[Snapshot]) -> None:
        if not snapshots:
            return
        rows = [
            (
                s.aggregate_id,
                s.aggregate_type,
                s.version,
                s.position,
                s.timestamp,
                s.max_timestamp,
                s.reducer_version,
                s.fingerprint,
                s.state,
                s.digest,
            )
            for s in snapshots
        ]
        with self._connection() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(_SAVE_SNAPSHOT, rows)

    def delete_snapshots(
        self, *, aggregate_id: str | None = None, aggregate_type: str | None = None
    ) -> int:
        with self._connection() as conn:
            cursor = conn.execute(
                "DELETE FROM snapshots WHERE (%(id)s::text IS NULL OR aggregate_id = %(id)s) "
                "AND (%(type)s::text IS NULL OR aggregate_type = %(type)s)",
                {"id": aggregate_id, "type": aggregate_type},
            )
            return cursor.rowcount

    def snapshot_count(self, aggregate_id: str | None = None) -> int:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM snapshots "
                "WHERE %(id)s::text IS NULL OR aggregate_id = %(id)s",
                {"id": aggregate_id},
            ).fetchone()
        assert row is not None
        return int(row[0])

    # -- control requests -------------------------------------------------------------------

    def claim_request(self, request_id: str, kind: str, owner: str, timeout: float) -> Claim:
        params = {"id": request_id, "kind": kind, "owner": owner, "timeout": timeout}
        with self._connection() as conn, conn.transaction():
            if conn.execute(_CLAIM, params).fetchone() is not None:
                return Claim(None, None)
            row = conn.execute(
                "SELECT reply, claimed_by, claimed_at FROM control_requests WHERE request_id = %s",
                (request_id,),
            ).fetchone()
        assert row is not None
        reply, holder, claimed_at = row
        return Claim(reply, None if reply is not None else holder, claimed_at)

    def finish_request(self, request_id: str, owner: str, reply: str) -> bool:
        with self._connection() as conn:
            cursor = conn.execute(
                "UPDATE control_requests SET reply = %s, finished_at = now() "
                "WHERE request_id = %s AND claimed_by = %s AND reply IS NULL",
                (reply, request_id, owner),
            )
            return cursor.rowcount == 1
