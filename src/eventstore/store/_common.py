"""What every backend shares: argument checks, batch checks, migration files."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar

from eventstore.errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventStoreError,
    EventValidationError,
    InvalidQueryError,
    MigrationError,
)
from eventstore.events import Event
from eventstore.store._protocol import MAX_READ_LIMIT

MAX_BATCH_SIZE = 10_000
"""Largest number of events in one `append_events` call."""
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

OUTBOX_BUCKETS = 256
"""Outbox rows carry crc32(aggregate_id) mod this; a relay shard owns bucket mod shards."""

_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql\Z")


@dataclass(frozen=True)
class Migration:
    """One versioned SQL migration shipped in `store/migrations/<backend>/`."""

    version: int
    name: str
    sql: str


def load_migrations(backend: str) -> list[Migration]:
    """The backend's migrations in version order."""
    folder = resources.files("eventstore.store") / "migrations" / backend
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{backend} migrations are not numbered 1..n: {versions}")
    return found


def pending_migrations(backend: str, applied: set[int], where: str) -> list[Migration]:
    """The backend's migrations not applied yet, in order; `MigrationError` when the schema
    is newer than this code knows (a downgrade)."""
    migrations = load_migrations(backend)
    newest = migrations[-1].version
    if applied and max(applied) > newest:
        raise MigrationError(
            f"{where} is at migration {max(applied)}, newer than this code knows ({newest}); "
            "upgrade the eventstore package"
        )
    return [m for m in migrations if m.version not in applied]


def check_batch(events: Sequence[Event]) -> None:
    """Reject a batch that cannot be stored whatever the store holds.

    Versions of one aggregate must be consecutive in batch order; ids must be unique; an
    aggregate keeps one type. Raised before any I/O, so nothing of the batch is written.
    """
    if len(events) > MAX_BATCH_SIZE:
        raise EventValidationError(
            "events", f"a batch holds at most {MAX_BATCH_SIZE} events, not {len(events)}"
        )
    seen_ids: set[str] = set()
    last: dict[str, Event] = {}
    for index, event in enumerate(events):
        if not isinstance(event, Event):
            raise EventValidationError(
                f"events[{index}]", f"must be an Event, not {type(event).__name__}"
            )
        if event.id in seen_ids:
            raise EventValidationError(
                f"events[{index}].id", f"{event.id!r} appears twice in the batch"
            )
        seen_ids.add(event.id)
        previous = last.get(event.aggregate_id)
        if previous is not None:
            if event.aggregate_type != previous.aggregate_type:
                raise EventValidationError(
                    f"events[{index}].aggregate_type",
                    f"aggregate {event.aggregate_id!r} is a {previous.aggregate_type} earlier "
                    f"in the batch, not a {event.aggregate_type}",
                )
            if event.version != previous.version + 1:
                raise EventValidationError(
                    f"events[{index}].version",
                    f"versions of aggregate {event.aggregate_id!r} must be consecutive in the "
                    f"batch: {previous.version} is followed by {event.version}",
                )
        last[event.aggregate_id] = event


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_READ_LIMIT:
        raise InvalidQueryError(
            f"limit must be an integer from 1 to {MAX_READ_LIMIT}, not {limit!r}"
        )
    return limit


def check_position(after_position: int) -> int:
    if (
        isinstance(after_position, bool)
        or not isinstance(after_position, int)
        or after_position < 0
    ):
        raise InvalidQueryError(f"after_position must be an integer >= 0, not {after_position!r}")
    return after_position


def check_version(from_version: int) -> int:
    if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
        raise InvalidQueryError(f"from_version must be an integer >= 1, not {from_version!r}")
    return from_version


def check_time(value: datetime | None, name: str) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidQueryError(f"{name} must be timezone-aware, not naive ({value.isoformat()})")
    return value


def check_text(value: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidQueryError(f"{name} must be a non-empty string, not {value!r}")
    return value


def resolve_retry(events: Sequence[Event], stored: dict[str, Event]) -> list[int] | None:
    """Decide an append whose event ids may already be stored (`stored`: id -> stored event).

    None when none of the batch is stored (the append proceeds, or its conflict stands); the
    stored positions when all of it is stored unchanged (an idempotent retry);
    `DuplicateEventError` when an id is stored with other content, or only part of the batch is.
    """
    if not stored:
        return None
    for event in events:
        found = stored.get(event.id)
        if found is not None and not found.same_content(event):
            raise DuplicateEventError(event.id)
    if any(e.id not in stored for e in events):
        raise DuplicateEventError(
            next(e.id for e in events if e.id in stored),
            "is already stored but other events of this batch are not; a batch is stored "
            "whole, so resend the original batch unchanged",
        )
    return [stored[e.id].position or 0 for e in events]


def first_of_each(events: Sequence[Event]) -> dict[str, Event]:
    """Each aggregate's first event in the batch, in batch order."""
    first: dict[str, Event] = {}
    for event in events:
        first.setdefault(event.aggregate_id, event)
    return first


def explain_conflict(
    events: Sequence[Event], latest: Mapping[str, tuple[int, str]]
) -> EventStoreError | None:
    """The error of the first aggregate whose batch does not follow its stored history
    (`latest`: aggregate id -> (current version, type)), or None when every one does."""
    for aggregate_id, event in first_of_each(events).items():
        current, stored_type = latest.get(aggregate_id, (0, event.aggregate_type))
        if stored_type != event.aggregate_type:
            return EventValidationError(
                "aggregate_type",
                f"aggregate {aggregate_id!r} is stored as a {stored_type}, "
                f"not a {event.aggregate_type}",
            )
        if event.version != current + 1:
            return ConcurrencyError(
                aggregate_id, expected_version=current + 1, actual_version=event.version
            )
    return None


Query = TypeVar("Query")


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


def outbox_bucket(aggregate_id: str) -> int:
    """The outbox bucket of an aggregate: stable across processes, versions and machines."""
    return zlib.crc32(aggregate_id.encode()) % OUTBOX_BUCKETS


def check_shard(shard: int, shards: int) -> None:
    if not 1 <= shards <= OUTBOX_BUCKETS or not 0 <= shard < shards:
        raise InvalidQueryError(
            f"shard must be in 0..shards-1 and shards in 1..{OUTBOX_BUCKETS}, "
            f"not shard {shard} of {shards}"
        )
