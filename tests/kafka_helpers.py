"""Reading back what the relay published, and checking it against what was stored."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

from kafka import KafkaConsumer

from eventstore import Event, EventStore
from eventstore.producer import KafkaPublisher, OutboxRelay, RelayMetrics, RelaySettings
from eventstore.store import Outbox
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


class RecordingPublisher:
    """The real KafkaPublisher, remembering which events the broker acknowledged."""

    def __init__(self, publisher: KafkaPublisher) -> None:
        self._publisher = publisher
        self.acknowledged: list[Event] = []

    def publish(self, events: Sequence[Event]) -> None:
        self._publisher.publish(events)
        self.acknowledged.extend(events)

    def ensure_topics(self, aggregate_types: Iterable[str]) -> list[str]:
        return self._publisher.ensure_topics(aggregate_types)

    def close(self) -> None:
        self._publisher.close()


class RelayThread:
    """An OutboxRelay working in a thread of this test, between start() and stop()
    (settings: RelaySettings fields; the poll interval defaults to 0.1 s here)."""

    def __init__(self, store: Outbox, bootstrap: str, prefix: str, **settings: Any) -> None:
        self.publisher = RecordingPublisher(
            KafkaPublisher(bootstrap, topic_prefix=prefix, timeout=10)
        )
        options: dict[str, Any] = {"poll_interval": 0.1, **settings}
        self.relay = OutboxRelay(store, self.publisher, RelaySettings(**options), RelayMetrics())
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

    def ended_with(self, timeout: float) -> BaseException | None:
        """Wait up to `timeout` seconds for the relay to end on its own (its `run()` raised
        or returned); its error, if any. Fails if it is still running."""
        self._thread.join(timeout)
        running = self._thread.is_alive()
        if running:
            self._stop.set()
            self._thread.join(timeout=30)
        self.publisher.close()
        assert not running, f"the relay was still running after {timeout}s"
        return self._errors[0] if self._errors else None

    def __enter__(self) -> RelayThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a child process's metrics server)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> str:
    """The Prometheus text a metrics server on 127.0.0.1 serves ('' while it is not up)."""
    try:
        with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except (URLError, ConnectionError):
        return ""


def wait_until_drained(store: EventStore, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while store.outbox_status().depth:
        assert time.monotonic() < deadline, f"outbox still holds {store.outbox_status().depth}"
        time.sleep(0.1)


def kcat(bootstrap: str, topic: str, count: int) -> list[tuple[str, dict[str, str], bytes]]:
    """Records of a topic as kcat (librdkafka, an independent client) reads them: key,
    headers, value (kcat's JSON envelope, so header values may hold anything)."""
    result = subprocess.run(
        [
            "kcat",
            "-C",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-o",
            "beginning",
            "-c",
            str(count),
            "-q",
            "-J",
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    found = []
    for line in result.stdout.splitlines():
        if line.strip():
            record = json.loads(line.decode("utf-8", "surrogateescape"))
            pairs = record.get("headers") or []
            headers = dict(zip(pairs[::2], pairs[1::2], strict=True))
            value = record["payload"]
            found.append((record["key"], headers, (value or "").encode("utf-8", "surrogateescape")))
    return found
