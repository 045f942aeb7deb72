"""The event store of the game platform: immutable events on PostgreSQL (or embedded SQLite)."""

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
from eventstore.store import AggregateStore, EventLog, EventStore, open_store
from eventstore.versioning import Upcasters

__all__ = [
    "AggregateStore",
    "Command",
    "ConcurrencyError",
    "ConfigurationError",
    "DuplicateEventError",
    "Event",
    "EventLog",
    "EventStore",
    "EventStoreError",
    "EventValidationError",
    "InvalidQueryError",
    "MigrationError",
    "StoreUnavailableError",
    "Upcasters",
    "new_event",
    "open_store",
]
