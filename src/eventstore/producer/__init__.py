"""Producers: validate and store events (group commit), and relay the outbox to Kafka.

`KafkaPublisher` (kafka-python) and `RelayMetrics` (prometheus_client) load on first use, so
that importing the package, or storing events through `EventProducer`, needs neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from eventstore._topics import events_topic, snake_case
from eventstore._wire import Message, from_message, to_message
from eventstore.errors import OutcomeUnknownError, PublishError
from eventstore.producer._producer import Change, EventProducer
from eventstore.producer._relay import OutboxRelay, Publisher, RelaySettings

if TYPE_CHECKING:
    from eventstore.producer._kafka import KafkaPublisher
    from eventstore.producer._metrics import RelayMetrics

_LAZY = {
    "KafkaPublisher": "eventstore.producer._kafka",
    "RelayMetrics": "eventstore.producer._metrics",
}

__all__ = [
    "Change",
    "EventProducer",
    "KafkaPublisher",
    "Message",
    "OutboxRelay",
    "OutcomeUnknownError",
    "PublishError",
    "Publisher",
    "RelayMetrics",
    "RelaySettings",
    "events_topic",
    "from_message",
    "snake_case",
    "to_message",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups find it directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
