"""Reading back what the relay published, and checking it against what was stored."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer

from eventstore import Event, EventStore
from eventstore.producer import KafkaPublisher, OutboxRelay, RelayMetrics, RelaySettings
from tests.conftest import unique_name


@dataclass(frozen=True)
class Received:
    topic: str
    partition: int
    key: str
    headers: dict[str, bytes]
    value: dict[str, Any]


def read_topics(
    bootstrap: str, topics: list[str], *, expect: int, timeout: float = 60
) -> list[Received]:
    """Everything on `topics` from the beginning: at least `expect` records, then what
    arrives in the next second (so duplicates past the count are seen too)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=unique_name("reader"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    consumer.subscribe(topics)
    received: list[Received] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            before = len(received)
            for message in consumer:
                received.append(
                    Received(
                        message.topic,
                        message.partition,
                        message.key.decode(),
                        {k: v for k, v in message.headers},
                        json.loads(message.value),
                    )
                )
            if len(received) >= expect and len(received) == before:
                break
    finally:
        consumer.close()
    return received


def check_delivery(stored: list[Event], received: list[Received]) -> int:
    """Every stored event arrived; nothing else did; per aggregate, events arrived in version
    order (counting each event's first arrival); duplicates are re-sends of stored events.
    Returns the number of duplicates."""
    by_id = {e.id: e for e in stored}
    counts = Counter(r.value["id"] for r in received)
    assert set(counts) == set(by_id), (
        f"missing {len(set(by_id) - set(counts))}, unknown {len(set(counts) - set(by_id))}"
    )
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for record in received:
        event = by_id[record.value["id"]]
        assert record.key == event.aggregate_id
        assert record.value == event.to_dict(), "a re-send must be the same stored event"
        if event.id not in seen:
            seen.add(event.id)
            first_seen[event.aggregate_id].append(event.version)
    for aggregate_id, versions in first_seen.items():
        assert versions == list(range(1, len(versions) + 1)), f"{aggregate_id} out of order"
    return sum(counts.values()) - len(counts)


class RelayThread:
    """An OutboxRelay working in a thread of this test, between start() and stop()."""

    def __init__(self, store: EventStore, bootstrap: str, prefix: str, **settings: Any) -> None:
        self.publisher = KafkaPublisher(bootstrap, topic_prefix=prefix, timeout=10)
        self.relay = OutboxRelay(
            store, self.publisher, RelaySettings(poll_interval=0.1, **settings), RelayMetrics()
        )
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)

    def _run(self) -> None:
        try:
            self.relay.run(self._stop)
        except BaseException as error:
            self._errors.append(error)

    def metric(self, name: str) -> float:
        return self.relay.metrics.registry.get_sample_value(name) or 0.0

    @property
    def active(self) -> bool:
        return self.metric("eventstore_relay_active") == 1.0

    def start(self) -> RelayThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.publisher.close()
        assert not self._thread.is_alive(), "the relay did not stop"
        assert not self._errors, self._errors

    def __enter__(self) -> RelayThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until_drained(store: EventStore, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while store.outbox_status().depth:
        assert time.monotonic() < deadline, f"outbox still holds {store.outbox_status().depth}"
        time.sleep(0.1)
