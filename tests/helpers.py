"""Builders shared by tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from eventstore import Event

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def event(
    aggregate_id: str = "player-1",
    version: int = 1,
    *,
    event_type: str = "PlayerMoved",
    aggregate_type: str = "Player",
    at: datetime | None = None,
    **payload: Any,
) -> Event:
    return Event.new(
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        event_type=event_type,
        version=version,
        payload=payload or {"x": version, "y": -version},
        metadata={"session": "s-1", "correlation_id": "c-1"},
        timestamp=at or T0 + timedelta(seconds=version),
    )


def history(aggregate_id: str, count: int, start: int = 1, **kwargs: Any) -> list[Event]:
    return [event(aggregate_id, v, **kwargs) for v in range(start, start + count)]
