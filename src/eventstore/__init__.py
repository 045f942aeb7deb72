"""The event store of the game platform: immutable events on PostgreSQL (or embedded SQLite).

Importing it stays light: `KafkaPublisher` (and with it kafka-python) loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventstore.consumers import StoreTail
from eventstore.errors import (
    ConcurrencyError,
    ConfigurationError,
    DuplicateEventError,
    EventStoreError,
    EventValidationError,
    ImmutableEventError,
    InvalidQueryError,
    MigrationError,
    OutcomeUnknownError,
    PublishError,
    StoreBusyError,
    StoreUnavailableError,
    UpcastError,
)
from eventstore.events import Command, Event, new_event
from eventstore.producer import (
    Change,
    EventProducer,
    OutboxRelay,
    RelaySettings,
)
from eventstore.store import AggregateStore, EventLog, EventStore, Outbox, open_store
from eventstore.versioning import PayloadSchemas, Upcasters

if TYPE_CHECKING:
    from eventstore.producer import KafkaPublisher

__all__ = [
    "AggregateStore",
    "Change",
    "Command",
    "ConcurrencyError",
    "ConfigurationError",
    "DuplicateEventError",
    "Event",
    "EventLog",
    "EventProducer",
    "EventStore",
    "EventStoreError",
    "EventValidationError",
    "ImmutableEventError",
    "InvalidQueryError",
    "KafkaPublisher",
    "MigrationError",
    "Outbox",
    "OutboxRelay",
    "OutcomeUnknownError",
    "PayloadSchemas",
    "PublishError",
    "RelaySettings",
    "StoreBusyError",
    "StoreTail",
    "StoreUnavailableError",
    "UpcastError",
    "Upcasters",
    "new_event",
    "open_store",
]


def __getattr__(name: str) -> Any:
    if name == "KafkaPublisher":
        from eventstore.producer import KafkaPublisher

        globals()[name] = KafkaPublisher
        return KafkaPublisher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
