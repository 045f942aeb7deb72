"""How the Kafka publisher sets up topics: durability by replication factor (DESIGN section 5)."""

from __future__ import annotations

import logging

import pytest

from eventstore.producer import KafkaPublisher
from eventstore.producer._kafka import new_topic


@pytest.mark.parametrize(("replicas", "in_sync"), [(3, "2"), (4, "3"), (5, "3")])
def test_a_topic_with_3_or_more_replicas_needs_a_majority_in_sync(
    replicas: int, in_sync: str
) -> None:
    topic = new_topic("game.events.player", 6, replicas)
    assert (topic.name, topic.num_partitions, topic.replication_factor) == (
        "game.events.player",
        6,
        replicas,
    )
    assert topic.topic_configs == {"min.insync.replicas": in_sync}


def test_the_publisher_creates_its_topics_with_those_configs() -> None:
    publisher = KafkaPublisher("127.0.0.1:9", topic_prefix="t", partitions=6, replication_factor=3)
    [topic] = publisher.new_topics(["t.events.player"])
    assert (topic.num_partitions, topic.replication_factor) == (6, 3)
    assert topic.topic_configs == {"min.insync.replicas": "2"}


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_topic_with_fewer_replicas_gets_no_override(replicas: int) -> None:
    assert not new_topic("game.events.player", 3, replicas).topic_configs


@pytest.mark.parametrize("replicas", [1, 2])
def test_fewer_than_3_replicas_warn_once_that_it_is_for_development(
    replicas: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="eventstore.producer"):
        publisher = KafkaPublisher("127.0.0.1:9", topic_prefix="t", replication_factor=replicas)
        publisher.close()
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "can be lost with a broker" in record.message and "development" in record.message


def test_3_replicas_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="eventstore.producer"):
        KafkaPublisher("127.0.0.1:9", topic_prefix="t", replication_factor=3).close()
    assert caplog.records == []
