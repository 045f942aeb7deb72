"""The real broker answers as the design needs: keyed messages keep their order per key."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from tests.conftest import unique_name

pytestmark = pytest.mark.kafka


def test_keyed_messages_keep_their_order_per_key_across_3_partitions(kafka_bootstrap: str) -> None:
    topic = unique_name("smoke.events.player").replace("_", "-")
    group = unique_name("smoke-group")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="smoke-admin")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        keys = [f"player-{i}" for i in range(12)]
        per_key = 50
        producer = KafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
        )
        for version in range(1, per_key + 1):
            for key in keys:
                producer.send(
                    topic,
                    key=key.encode(),
                    value=json.dumps({"aggregate_id": key, "version": version}).encode(),
                    headers=[("event_type", b"PlayerMoved")],
                )
        producer.flush(timeout=30)
        producer.close()

        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=1000,
        )
        seen: dict[str, list[int]] = defaultdict(list)
        partitions_of: dict[str, set[int]] = defaultdict(set)
        deadline = time.monotonic() + 60
        total = len(keys) * per_key
        while sum(map(len, seen.values())) < total and time.monotonic() < deadline:
            for message in consumer:
                value = json.loads(message.value)
                assert message.key.decode() == value["aggregate_id"]
                assert dict(message.headers)["event_type"] == b"PlayerMoved"
                seen[value["aggregate_id"]].append(value["version"])
                partitions_of[value["aggregate_id"]].add(message.partition)
        consumer.commit()
        consumer.close()

        assert sorted(seen) == sorted(keys)
        for key in keys:
            assert seen[key] == list(range(1, per_key + 1)), f"order broken for {key}"
            assert len(partitions_of[key]) == 1, "one key must stay on one partition"
        used = set().union(*partitions_of.values())
        assert len(used) > 1, "12 keys should spread over more than one of 3 partitions"
    finally:
        admin.delete_topics([topic])
        admin.close()
