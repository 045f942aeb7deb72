"""Dead letters: events a projection parked or skipped, and messages it could not decode.

The store's `projection_failures` table is the record a retry works from; the dead-letter
topic `<prefix>.dlq.<projection>` (keyed by aggregate id, so each aggregate's letters keep
their order) is for people and tools. Letters are sent, and acknowledged, before the batch
that produced them commits: a crash in between sends them again (at least once), never zero
times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from eventstore._wire import to_message
from eventstore.events import Event


@dataclass(frozen=True)
class DeadLetter:
    """One record for the dead-letter topic."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def _headers(**values: object) -> list[tuple[str, bytes]]:
    return [(name, str(value).encode()) for name, value in values.items() if value is not None]


def event_letter(
    projection: str, event: Event, *, policy: str, error_type: str, message: str
) -> DeadLetter:
    """A parked or skipped event, as stored, with what went wrong in its headers."""
    record = to_message(event)
    return DeadLetter(
        key=record.key,
        value=record.value,
        headers=record.headers
        + _headers(
            projection=projection,
            policy=policy,
            error_type=error_type,
            error_message=message[:1000],
            aggregate_id=event.aggregate_id,
            version=event.version,
            position=event.position,
            failed_at=datetime.now(UTC).isoformat(),
        ),
    )


def undecodable_letter(
    projection: str,
    key: bytes | None,
    value: bytes | None,
    *,
    error: str,
    topic: str,
    partition: int,
    offset: int,
) -> DeadLetter:
    """A message that is not an event (not JSON, fields missing, an unknown envelope)."""
    return DeadLetter(
        key=key,
        value=value or b"",
        headers=_headers(
            projection=projection,
            policy="undecodable",
            error_type="UndecodableMessage",
            error_message=error[:1000],
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            failed_at=datetime.now(UTC).isoformat(),
        ),
    )


class DeadLetterSink(Protocol):
    def send(self, projection: str, letters: Sequence[DeadLetter]) -> None:
        """Publish the letters and return once they are acknowledged (a retriable
        `PublishError` otherwise)."""
        ...


class NoDeadLetterTopic:
    """Without Kafka (the embedded default): the store's failure records are the only record."""

    def send(self, projection: str, letters: Sequence[DeadLetter]) -> None:
        return None
