"""Argument and batch checks shared by every backend, raised before any I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from eventstore.errors import EventValidationError, InvalidQueryError
from eventstore.events import Event
from eventstore.store._outbox import OUTBOX_BUCKETS
from eventstore.store._protocol import MAX_READ_LIMIT, AggregateRef

MAX_BATCH_SIZE = 10_000
"""Largest number of events in one `append_events` call."""


def as_batch(events: Iterable[Event]) -> list[Event]:
    """The events of an append as a list; `EventValidationError` for anything else (a
    string, a mapping, None), so that a wrong argument never surfaces as a TypeError."""
    if isinstance(events, str | bytes | Mapping) or not isinstance(events, Iterable):
        raise EventValidationError(
            "events", f"must be a list of Event objects, not {type(events).__name__}"
        )
    return list(events)


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


def check_shard(shard: int, shards: int) -> None:
    if not 1 <= shards <= OUTBOX_BUCKETS or not 0 <= shard < shards:
        raise InvalidQueryError(
            f"shard must be in 0..shards-1 and shards in 1..{OUTBOX_BUCKETS}, "
            f"not shard {shard} of {shards}"
        )


def check_find_value(field: object, value: object, where: str = "") -> None:
    """A find by field compares one top-level field with a scalar, the same way on every
    backend (PostgreSQL's containment would match lists and objects partly)."""
    if not isinstance(field, str) or not field:
        raise InvalidQueryError(f"{where}find() needs a field name, not {field!r}")
    if value is not None and not isinstance(value, str | int | float | bool):
        raise InvalidQueryError(
            f"{where}find() compares {field!r} with a string, number, bool or None, "
            f"not {type(value).__name__}"
        )


def check_after(aggregate_type: str, after: AggregateRef | None) -> str:
    """A page of one type's aggregates continues after an aggregate of that type."""
    check_text(aggregate_type, "aggregate_type")
    if after is not None and after.aggregate_type != aggregate_type:
        raise InvalidQueryError(
            f"after={after!r} is not of aggregate type {aggregate_type!r}: a page continues "
            "after the last aggregate of the previous page"
        )
    return aggregate_type


def prefix_range(prefix: str | None) -> tuple[str, str | None]:
    """The ids starting with `prefix` as a range [low, high) in code-point order (high None:
    no upper bound)."""
    if not prefix:
        return "", None
    if not isinstance(prefix, str):
        raise InvalidQueryError(f"id_prefix must be a string, not {prefix!r}")
    # The least string above every extension of the prefix: its last character raised by one
    # (the surrogates, which no string we store holds, are skipped); a last character that
    # cannot be raised is dropped, and the one before it raised instead.
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return prefix, None
    last = ord(stem[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:
        last = 0xE000
    return prefix, stem[:-1] + chr(last)
