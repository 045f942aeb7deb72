"""Publishing stored events to Kafka: topics created by us, an idempotent producer, acks=all."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import (
    KafkaError,
    TopicAlreadyExistsError,
)

from eventstore._kafka_refusals import REFUSED_RECORDS, REFUSED_TOPIC
from eventstore._topics import check_prefix, events_topic, topic_configs
from eventstore._wire import to_message
from eventstore.errors import ConfigurationError, PublishError
from eventstore.events import Event

log = logging.getLogger(__name__)


def new_topic(name: str, partitions: int, replication_factor: int) -> NewTopic:
    """An event topic as we create it (its configs: `topic_configs`)."""
    return NewTopic(
        name, partitions, replication_factor, topic_configs=topic_configs(replication_factor)
    )


class KafkaPublisher:
    """Sends batches of stored events and returns only once the broker acknowledged all of
    them (acks=all, idempotent producer, one request in flight per connection, so a
    partition never sees a later event of an aggregate before an earlier one).

    Topics it creates with a replication factor of 3 or more require a majority of replicas
    in sync (`topic_configs`), so an acknowledged event survives the loss of a broker; with
    fewer replicas it warns that this is for development only.

    After any failure the producer is discarded and a fresh one is made for the retry; the
    retry may re-send events that did reach the broker (same event id, same order), which
    consumers skip by version.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str,
        partitions: int = 3,
        replication_factor: int = 1,
        client_id: str = "eventstore-relay",
        timeout: float = 30.0,
    ) -> None:
        self.topic_prefix = check_prefix(topic_prefix)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.timeout = timeout
        self._common: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers.split(","),
            "client_id": client_id,
            "request_timeout_ms": int(min(timeout, 30) * 1000),
        }
        self._producer: KafkaProducer | None = None
        self._topics: dict[str, str] = {}  # aggregate type -> its topic, known to exist
        if replication_factor < 3:
            log.warning(
                "topics are created with replication factor %d: an acknowledged event can be "
                "lost with a broker; this is for development (use 3 or more in production)",
                replication_factor,
            )

    def _get_producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                **self._common,
                acks="all",
                enable_idempotence=True,
                max_in_flight_requests_per_connection=1,
                linger_ms=5,
                batch_size=512 * 1024,
                max_request_size=4 * 1024 * 1024,
                max_block_ms=int(self.timeout * 1000),
                delivery_timeout_ms=int(self.timeout * 1000) + 1000,
            )
        return self._producer

    def ensure_topics(self, aggregate_types: Iterable[str]) -> list[str]:
        """Create the topics of these aggregate types that do not exist yet (with the
        configured partitions and replication); return the names created."""
        new_types = {t for t in aggregate_types if t not in self._topics}
        if not new_types:
            return []
        names = {t: events_topic(self.topic_prefix, t) for t in new_types}
        wanted = set(names.values())
        try:
            admin = KafkaAdminClient(**self._common)
        except KafkaError as error:
            raise PublishError(f"cannot reach Kafka to create topics: {error}") from error
        try:
            missing = sorted(wanted - set(admin.list_topics()))
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):  # another relay was first
                    admin.create_topics(
                        self.new_topics(missing), timeout_ms=int(self.timeout * 1000)
                    )
                log.info("created topics %s", ", ".join(missing))
        except REFUSED_TOPIC as error:
            raise ConfigurationError(
                f"Kafka refused to create topics {sorted(wanted)} with {self.partitions} "
                f"partitions and replication factor {self.replication_factor} "
                f"({getattr(error, 'description', error)}); check these settings against the "
                "cluster (the replication factor cannot exceed the number of brokers)"
            ) from error
        except KafkaError as error:
            raise PublishError(f"creating topics {sorted(wanted)} failed: {error}") from error
        finally:
            admin.close()
        self._topics.update(names)
        return missing

    def new_topics(self, names: Iterable[str]) -> list[NewTopic]:
        """The topics `ensure_topics` creates, as sent to the broker."""
        return [new_topic(name, self.partitions, self.replication_factor) for name in names]

    def publish(self, events: Sequence[Event]) -> None:
        """Send `events` in order and wait for the broker's acknowledgement of every one."""
        if not events:
            return
        self.ensure_topics({e.aggregate_type for e in events})
        try:
            producer = self._get_producer()
            futures = []
            for event in events:
                message = to_message(event)
                futures.append(
                    producer.send(
                        self._topics[event.aggregate_type],
                        key=message.key,
                        value=message.value,
                        headers=message.headers,
                    )
                )
            producer.flush(timeout=self.timeout)
            for future in futures:
                future.get(timeout=self.timeout)
        except REFUSED_RECORDS as error:
            # Sending the same batch again would be refused again: stop, and say what to do.
            self._discard()
            raise ConfigurationError(
                f"Kafka refused the batch for good ({error!r}): grant this client write "
                "access to the event topics, or raise the topics' max.message.bytes (and the "
                "broker's message.max.bytes) above the largest event"
            ) from error
        except KafkaError as error:
            self._discard()
            raise PublishError(f"Kafka did not acknowledge the batch: {error!r}") from error

    def _discard(self) -> None:
        if self._producer is not None:
            _close(self._producer, 0)
        self._producer = None

    def close(self) -> None:
        if self._producer is not None:
            _close(self._producer, self.timeout)
        self._producer = None


def _close(producer: KafkaProducer, timeout: float) -> None:
    """Close a producer, abandoning what it could not deliver within `timeout` (the relay
    re-sends those events from the outbox with a fresh producer).

    kafka-python's close() flushes first and gives up, leaving the producer open and its
    sender retrying in the background, when records are still pending (a broker that is
    down). It has no public abort, so its sender is force-closed directly here.
    """
    try:
        producer.close(timeout=timeout)
    except KafkaError:
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()
        with contextlib.suppress(KafkaError):
            producer.close(timeout=0)
