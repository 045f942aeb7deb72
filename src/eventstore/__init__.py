"""The event store of the game platform: immutable events on PostgreSQL (or embedded SQLite)."""

from eventstore.consumers import StoreTail
from eventstore.errors import (
    ConcurrencyError,
    ConfigurationError,
    DuplicateEventError,
    EventStoreError,
    EventValidationError,
    InvalidQueryError,
    MigrationError,
    StoreUnavailableError,
)
from eventstore.events import Command, Event, new_event
from eventstore.producer import (
    Change,
    EventProducer,
    KafkaPublisher,
    OutboxRelay,
    RelaySettings,
)
from eventstore.store import AggregateStore, EventLog, EventStore, Outbox, open_store
from eventstore.versioning import PayloadSchemas, Upcasters

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
    "InvalidQueryError",
    "KafkaPublisher",
    "MigrationError",
    "Outbox",
    "OutboxRelay",
    "PayloadSchemas",
    "RelaySettings",
    "StoreTail",
    "StoreUnavailableError",
    "Upcasters",
    "new_event",
    "open_store",
]
