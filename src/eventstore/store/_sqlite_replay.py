"""Replay's store capabilities on SQLite (see `_pg_replay.py`; SQLite has no horizon to
respect: its writers are serialised, so a stored position is final once read)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from eventstore.events import Event
from eventstore.store._checks import check_after, check_limit, check_time, prefix_range
from eventstore.store._protocol import AggregateRef, Claim, Snapshot
from eventstore.store._rows import EVENT_COLUMNS, event_from_row, time_text
from eventstore.versioning import Upcasters

_MAX = 2**63 - 1
_NO_CAP = 2**62  # added to a version, stays within bigint
_COLUMNS = ", ".join(f"e.{name}" for name in EVENT_COLUMNS)
_ONE = (
    f"SELECT {_COLUMNS} FROM events e WHERE e.aggregate_id = :id AND e.version > :after "  # noqa: S608
    "AND e.version <= :max_version AND e.position <= :max_position "
    "AND e.version <= :after + :each ORDER BY e.version LIMIT :limit"
)
_MANY = (
    f"SELECT {_COLUMNS} FROM json_each(:pairs) j JOIN events e "  # noqa: S608
    "ON e.aggregate_id = json_extract(j.value, '$[0]') "
    "AND e.version > json_extract(j.value, '$[1]') "
    "AND e.version <= json_extract(j.value, '$[1]') + :each "
    "WHERE e.version <= :max_version AND e.position <= :max_position "
    "ORDER BY e.aggregate_id, e.version LIMIT :limit"
)
_IN_RANGE = (
    "AND aggregate_id >= :low AND (:high IS NULL OR aggregate_id < :high) "
    "AND position <= :max_position ORDER BY aggregate_type, aggregate_id LIMIT :limit"
)
_AGGREGATES_OF_TYPE = (
    "SELECT aggregate_type, aggregate_id FROM events WHERE version = 1 "  # noqa: S608
    "AND aggregate_type = :type AND aggregate_id > :after_id " + _IN_RANGE
)
_AGGREGATES = (
    "SELECT aggregate_type, aggregate_id FROM events WHERE version = 1 "  # noqa: S608
    "AND (aggregate_type, aggregate_id) > (:after_type, :after_id) " + _IN_RANGE
)
_SNAPSHOT_COLUMNS = (
    "aggregate_id, aggregate_type, version, position, timestamp, max_timestamp, reducer_version, "
    "fingerprint, state, digest, created_at"
)
_LOAD_SNAPSHOTS = (
    f"SELECT {_SNAPSHOT_COLUMNS} FROM (SELECT *, row_number() OVER "  # noqa: S608
    "(PARTITION BY aggregate_id ORDER BY version DESC) AS rank FROM snapshots "
    "WHERE aggregate_id IN (SELECT value FROM json_each(:ids)) "
    "AND reducer_version = :reducer_version AND fingerprint = :fingerprint "
    "AND version <= :max_version AND position <= :max_position "
    "AND (:max_timestamp IS NULL OR max_timestamp <= :max_timestamp)) WHERE rank = 1"
)
_SAVE_SNAPSHOT = (
    "INSERT OR REPLACE INTO snapshots (aggregate_id, aggregate_type, version, position, "
    "timestamp, max_timestamp, reducer_version, fingerprint, state, digest, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


_DAMAGED = datetime.min.replace(tzinfo=UTC)


def _bounds(max_version: int | None, max_position: int | None) -> dict[str, int]:
    return {
        "max_version": _MAX if max_version is None else max_version,
        "max_position": _MAX if max_position is None else max_position,
    }


class SqliteReplay:
    """The `AggregateReads`, `Snapshots` and `ControlRequests` capabilities of
    `SqliteEventStore` (a mixin on its connection)."""

    _upcasters: Upcasters

    def _locked(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

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
            "after_type": after.aggregate_type if after else "",
            "after_id": after.aggregate_id if after else "",
        }
        if aggregate_type is not None:
            params["type"] = check_after(aggregate_type, after)
            del params["after_type"]
        query = _AGGREGATES if aggregate_type is None else _AGGREGATES_OF_TYPE
        with self._locked() as conn:
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
        if len(after_versions) > 1:
            params["pairs"] = json.dumps(list(after_versions.items()))
            query = _MANY
        else:
            [(params["id"], params["after"])] = after_versions.items()
            query = _ONE
        with self._locked() as conn:
            rows = conn.execute(query, params).fetchall()
        upcast = self._upcasters.upcast
        return [upcast(event_from_row(row)) for row in rows]

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
        check_time(max_timestamp, "max_timestamp")
        params: dict[str, Any] = {
            "ids": json.dumps(list(aggregate_ids)),
            "reducer_version": reducer_version,
            "fingerprint": fingerprint,
            "max_timestamp": None if max_timestamp is None else time_text(max_timestamp),
        }
        params.update(_bounds(max_version, max_position))
        with self._locked() as conn:
            rows = conn.execute(_LOAD_SNAPSHOTS, params).fetchall()
        found: dict[str, Snapshot] = {}
        for row in rows:
            values = list(row)
            for index in (4, 5, 10):  # timestamp, max_timestamp, created_at
                try:
                    values[index] = datetime.fromisoformat(values[index])
                except (TypeError, ValueError):  # a damaged row: its digest cannot match
                    values[index], values[8] = _DAMAGED, ""
            found[row[0]] = Snapshot(*values)
        return found

    def save_snapshots(self, snapshots: Sequence[Snapshot]) -> None:
        if not snapshots:
            return
        now = time_text(datetime.now(UTC))
        rows = [
            (
                s.aggregate_id,
                s.aggregate_type,
                s.version,
                s.position,
                time_text(s.timestamp),
                time_text(s.max_timestamp),
                s.reducer_version,
                s.fingerprint,
                s.state,
                s.digest,
                now,
            )
            for s in snapshots
        ]
        with self._transaction() as conn:
            conn.executemany(_SAVE_SNAPSHOT, rows)

    def delete_snapshots(
        self, *, aggregate_id: str | None = None, aggregate_type: str | None = None
    ) -> int:
        with self._transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM snapshots WHERE (:id IS NULL OR aggregate_id = :id) "
                "AND (:type IS NULL OR aggregate_type = :type)",
                {"id": aggregate_id, "type": aggregate_type},
            )
            return cursor.rowcount

    def snapshot_count(self, aggregate_id: str | None = None) -> int:
        with self._locked() as conn:
            row = conn.execute(
                "SELECT count(*) FROM snapshots WHERE :id IS NULL OR aggregate_id = :id",
                {"id": aggregate_id},
            ).fetchone()
        return int(row[0])

    def claim_request(self, request_id: str, kind: str, owner: str, timeout: float) -> Claim:
        now = datetime.now(UTC)
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT reply, claimed_by, claimed_at FROM control_requests WHERE request_id = ?",
                (request_id,),
            ).fetchone()
            if row is not None:
                reply, holder, claimed_text = row
                claimed_at = datetime.fromisoformat(claimed_text)
                if reply is not None:
                    return Claim(reply, None, claimed_at)
                if holder != owner and (now - claimed_at).total_seconds() < timeout:
                    return Claim(None, holder, claimed_at)
            conn.execute(
                "INSERT INTO control_requests (request_id, kind, claimed_by, claimed_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET "
                "claimed_by = excluded.claimed_by, claimed_at = excluded.claimed_at",
                (request_id, kind, owner, time_text(now)),
            )
        return Claim(None, None)

    def finish_request(self, request_id: str, owner: str, reply: str) -> bool:
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE control_requests SET reply = ?, finished_at = ? "
                "WHERE request_id = ? AND claimed_by = ? AND reply IS NULL",
                (reply, time_text(datetime.now(UTC)), request_id, owner),
            )
            return cursor.rowcount == 1
