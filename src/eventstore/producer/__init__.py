"""Producers: validate and store events (group commit), and relay the outbox to Kafka."""

from eventstore.errors import PublishError
from eventstore.producer._kafka import KafkaPublisher
from eventstore.producer._metrics import RelayMetrics
from eventstore.producer._producer import Change, EventProducer
from eventstore.producer._relay import OutboxRelay, Publisher, RelaySettings
from eventstore.producer._topics import events_topic, snake_case
from eventstore.producer._wire import Message, from_message, to_message

__all__ = [
    "Change",
    "EventProducer",
    "KafkaPublisher",
    "Message",
    "OutboxRelay",
    "PublishError",
    "Publisher",
    "RelayMetrics",
    "RelaySettings",
    "events_topic",
    "from_message",
    "snake_case",
    "to_message",
]
