"""The event store of the game platform: immutable events on PostgreSQL (or embedded SQLite).

Importing it stays light: `KafkaPublisher` (and with it kafka-python) loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventstore.consumers import StoreTail
from eventstore.errors import (
    AggregateNotFoundError,
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
    ReplayError,
    RequestError,
    RequestTimeoutError,
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
    from eventstore.replay import Reducer, ReplayClient, Replayer, ReplayResult, ReplayWorker

# Loaded on first use, so that `import eventstore` stays light.
_REPLAY = ("Reducer", "ReplayClient", "Replayer", "ReplayResult", "ReplayWorker")

__all__ = [
    "AggregateNotFoundError",
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
    "Reducer",
    "RelaySettings",
    "ReplayClient",
    "ReplayError",
    "ReplayResult",
    "ReplayWorker",
    "Replayer",
    "RequestError",
    "RequestTimeoutError",
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
    if name in _REPLAY:
        from eventstore import replay

        value = getattr(replay, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
