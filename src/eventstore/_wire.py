"""What an event looks like on Kafka (DESIGN section 5)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple

from eventstore.events import Event, encode_json

CONTENT_TYPE = b"application/json"


class Message(NamedTuple):
    """One Kafka record: key = aggregate id, value = the stored event as JSON, headers."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def _utc_text(value: datetime | None) -> str | None:
    # As pydantic writes an aware UTC datetime in JSON mode (Event.to_dict): ...Z
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def to_document(event: Event) -> dict[str, Any]:
    """`event.to_dict()`, built directly (the relay's hot path)."""
    return {
        "id": event.id,
        "event_type": event.event_type,
        "aggregate_id": event.aggregate_id,
        "aggregate_type": event.aggregate_type,
        "version": event.version,
        "timestamp": _utc_text(event.timestamp),
        "payload": event.payload,
        "metadata": event.metadata,
        "schema_version": event.schema_version,
        "position": event.position,
        "recorded_at": _utc_text(event.recorded_at),
    }


def to_message(event: Event) -> Message:
    """The record of a stored event (its position included)."""
    value = encode_json(to_document(event))
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
