"""What operators and the HTTP API are told about projections: status (generation, lag,
parked, dead letters) and parked aggregates, as plain JSON-ready dicts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from eventstore.consumers._apply import ProjectionStore
from eventstore.errors import ProjectionError
from eventstore.store import ProjectionFailure


def _tail_lag(store: ProjectionStore, position: int) -> tuple[int, float]:
    """Events stored after `position` (counted up to 10,000) and the age of the first."""
    behind = store.read_all(position, 10_000)
    if not behind:
        return 0, 0.0
    first = behind[0].recorded_at
    age = (datetime.now(UTC) - first).total_seconds() if first else 0.0
    return len(behind), max(0.0, age)


def projection_status(
    store: ProjectionStore, kafka: tuple[str, str] | None, name: str | None
) -> list[dict[str, Any]]:
    records = store.projection_records()
    if name is not None:
        records = [r for r in records if r.name == name]
        if not records:
            raise ProjectionError(
                f"no projection named {name!r} in this store; `eventstore projections list`"
            )
    found: list[dict[str, Any]] = []
    for record in records:
        counts = store.projection_counts(record.name)
        entry: dict[str, Any] = {
            "name": record.name,
            "generation": record.active_generation,
            "version": record.active_version,
            "rebuilding": record.building_generation,
            "position": record.active_position,
            "documents": counts.documents,
            "aggregates": counts.checkpoints,
            "parked": counts.parked,
            "skipped": counts.skipped,
            "dead_lettered": record.dead_lettered,
            "last_error": record.last_error,
            "last_error_at": record.last_error_at.isoformat() if record.last_error_at else None,
        }
        if kafka is not None:
            from eventstore.consumers._kafka import group_lag

            try:
                entry["partitions"] = group_lag(kafka[0], kafka[1], record.name)
            except Exception as error:  # kafka-python's errors: the broker is unreachable
                entry["partitions"] = None
                entry["partitions_error"] = (
                    f"Kafka did not answer ({type(error).__name__}: {error}); the lag shown "
                    "is against the store's global log"
                )
            else:
                entry["lag_events"] = sum(entry["partitions"].values())
                entry["lag_seconds"] = None
        if "lag_events" not in entry:
            # Without Kafka's figures (none configured, or no answer): what the store knows,
            # the lag against the log's head. Not read when Kafka answered: it would be thrown
            # away (up to 10,000 events per projection).
            events_behind, seconds_behind = _tail_lag(store, record.active_position)
            entry["lag_events"] = events_behind
            entry["lag_seconds"] = round(seconds_behind, 3)
        found.append(entry)
    return found


def parked_rows(parked: Sequence[ProjectionFailure]) -> list[dict[str, Any]]:
    """Parked aggregates, each with the event and the error that parked it."""
    return [
        {
            "aggregate_id": f.aggregate_id,
            "version": f.version,
            "waiting_up_to": f.held_version,
            "event_id": f.event_id,
            "event_type": f.event_type,
            "error_type": f.error_type,
            "message": f.message,
            "failed_at": f.failed_at.isoformat(),
        }
        for f in parked
    ]
