"""The Kafka publisher's durability settings, as the real client and broker hold them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from eventstore.errors import ConfigurationError
from eventstore.producer import KafkaPublisher
from eventstore.producer._kafka import new_topic
from tests.conftest import unique_name
from tests.helpers import event

pytestmark = pytest.mark.kafka


@pytest.fixture
def created() -> list[str]:
    """Topics a test created, deleted after it."""
    return []


@pytest.fixture
def admin(kafka_bootstrap: str, created: list[str]) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    yield client
    if created:
        client.delete_topics(created)
    client.close()


def overrides(admin: KafkaAdminClient, topic: str) -> dict[str, Any]:
    """The configs set on the topic itself (not the broker's defaults)."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource], config_filter="modified")
    return {
        name: entry["value"]
        for name, entry in configs["topic"][topic].items()
        if entry["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    }


def test_the_producer_is_idempotent_and_waits_for_every_in_sync_replica(
    kafka_bootstrap: str,
) -> None:
    publisher = KafkaPublisher(kafka_bootstrap, topic_prefix=unique_name("t"))
    try:
        config = publisher._get_producer().config
    finally:
        publisher.close()
    assert config["acks"] == -1, "acks=all"
    assert config["enable_idempotence"] is True
    assert config["max_in_flight_requests_per_connection"] == 1, "one request in flight"


def test_a_topic_created_with_one_replica_has_no_min_insync_override(
    kafka_bootstrap: str, admin: KafkaAdminClient, created: list[str]
) -> None:
    prefix = unique_name("t")
    publisher = KafkaPublisher(kafka_bootstrap, topic_prefix=prefix, replication_factor=1)
    try:
        [topic] = publisher.ensure_topics(["Player"])
    finally:
        publisher.close()
    created.append(topic)
    assert "min.insync.replicas" not in overrides(admin, topic)


def test_the_broker_accepts_the_configs_we_set_for_three_replicas(
    admin: KafkaAdminClient, created: list[str]
) -> None:
    """One broker cannot hold 3 replicas; the configs built for 3 are checked on a topic of 1
    (a misspelt name or a bad value would be refused)."""
    wanted = new_topic(unique_name("t") + ".events.player", 1, 3)
    topic = new_topic(wanted.name, 1, 1)
    topic.topic_configs = wanted.topic_configs
    admin.create_topics([topic])
    created.append(topic.name)
    assert overrides(admin, topic.name) == {"min.insync.replicas": "2"}


def test_a_replication_factor_the_cluster_cannot_hold_is_a_configuration_error(
    kafka_bootstrap: str,
) -> None:
    """Not a retriable publish error: a relay must stop on it, not retry it forever."""
    publisher = KafkaPublisher(kafka_bootstrap, topic_prefix=unique_name("t"), replication_factor=3)
    try:
        with pytest.raises(ConfigurationError) as caught:
            publisher.ensure_topics(["Player"])
    finally:
        publisher.close()
    assert not caught.value.retriable
    assert "replication factor 3" in str(caught.value)


def test_an_event_larger_than_the_topic_accepts_stops_the_publisher_with_what_to_do(
    kafka_bootstrap: str, admin: KafkaAdminClient, created: list[str]
) -> None:
    """Sending it again would be refused again: not a retriable publish error."""
    prefix = unique_name("t")
    topic = NewTopic(f"{prefix}.events.player", 1, 1, topic_configs={"max.message.bytes": "1024"})
    admin.create_topics([topic])
    created.append(topic.name)
    publisher = KafkaPublisher(kafka_bootstrap, topic_prefix=prefix, timeout=10)
    try:
        with pytest.raises(ConfigurationError, match=r"max\.message\.bytes") as caught:
            publisher.publish([event("p", 1, blob="x" * 4000)])
    finally:
        publisher.close()
    assert not caught.value.retriable
