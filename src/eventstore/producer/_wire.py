"""What an event looks like on Kafka (DESIGN section 5)."""

from __future__ import annotations

import json
from typing import NamedTuple

from eventstore.events import Event

CONTENT_TYPE = b"application/json"


class Message(NamedTuple):
    """One Kafka record: key = aggregate id, value = the stored event as JSON, headers."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def to_message(event: Event) -> Message:
    """The record of a stored event (its position included)."""
    value = json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)
    return Message(
        key=event.aggregate_id.encode(),
        value=value.encode(),
        headers=[
            ("event_type", event.event_type.encode()),
            ("event_id", event.id.encode()),
            ("aggregate_type", event.aggregate_type.encode()),
            ("schema_version", str(event.schema_version).encode()),
            ("content_type", CONTENT_TYPE),
        ],
    )


def from_message(value: bytes) -> Event:
    """Decode a record's value (raises `EventValidationError` on anything malformed)."""
    return Event.from_dict(json.loads(value))
