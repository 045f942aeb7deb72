"""Deciding an append that did not go through: an idempotent retry, a duplicate id, or a
version conflict (the same rules on every backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eventstore.errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventStoreError,
    EventValidationError,
)
from eventstore.events import Event


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
