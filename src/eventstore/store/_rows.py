"""Event rows: the column list, decoding a row into an Event (once, for both backends), and
keyset paging of long reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from eventstore._frozen import loads_frozen
from eventstore.events import Event

PAGE_SIZE = 500
"""Rows fetched per round trip by the streaming reads."""

EVENT_COLUMNS = (
    "position",
    "id",
    "event_type",
    "aggregate_id",
    "aggregate_type",
    "version",
    "timestamp",
    "payload",
    "metadata",
    "schema_version",
    "recorded_at",
)
"""The columns of a whole event row, in the order the backends' row readers take them."""


Query = TypeVar("Query")


def time_text(value: datetime) -> str:
    """Fixed-width UTC text, so that SQLite's text order is time order."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def paged(
    fetch: Callable[[Query, dict[str, Any]], list[Event]],
    query: Query,
    params: dict[str, Any],
    after: int,
    key: Callable[[Event], int],
) -> Iterator[Event]:
    """Stream a keyset-paginated query: each page is its own short query (`after` is the key
    of the last row seen), so an abandoned iterator holds no connection and memory stays
    bounded by one page."""
    while True:
        page = fetch(query, {**params, "after": after, "limit": PAGE_SIZE})
        yield from page
        if len(page) < PAGE_SIZE:
            return
        after = key(page[-1])


def event_from_row(row: Sequence[Any]) -> Event:
    """The event of a row whose columns are `EVENT_COLUMNS`, as either backend returns it
    (SQLite: times as ISO 8601 text and JSON as text; PostgreSQL: datetimes in the session's
    zone and decoded JSON). Rows come from our own table, written only after validation, so
    the rules are not run again (`Event.from_store` freezes the JSON and normalises times to
    UTC)."""
    timestamp, payload, metadata, recorded_at = row[6], row[7], row[8], row[10]
    if isinstance(timestamp, str):
        timestamp = datetime.fromisoformat(timestamp)
        recorded_at = datetime.fromisoformat(recorded_at)
    if isinstance(payload, str):  # JSON text (SQLite; PostgreSQL selects it as text)
        payload = loads_frozen(payload)
        metadata = loads_frozen(metadata)
    return Event.from_store(
        position=row[0],
        id=row[1],
        event_type=row[2],
        aggregate_id=row[3],
        aggregate_type=row[4],
        version=row[5],
        timestamp=timestamp,
        payload=payload,
        metadata=metadata,
        schema_version=row[9],
        recorded_at=recorded_at,
    )
