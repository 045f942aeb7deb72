"""The outbox relay against the real PostgreSQL and the real broker, including failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from eventstore import (
    ConcurrencyError,
    Event,
    EventStore,
    MigrationError,
    StoreUnavailableError,
    open_store,
)
from eventstore.producer import EventProducer
from tests.conftest import StoreFactory, drop_schema, unique_name
from tests.contract.test_store_contract import all_events
from tests.helpers import event, wait_for
from tests.kafka_helpers import (
    RelayThread,
    check_delivery,
    free_port,
    read_topics,
    scrape,
    wait_until_drained,
)

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]


@pytest.fixture
def backend() -> str:
    return "postgres"


@pytest.fixture
def prefix() -> str:
    return unique_name("t")


def player_topic(prefix: str) -> str:
    return f"{prefix}.events.player"


class Writer:
    """Publishes `per_aggregate` versions of each aggregate through an EventProducer from
    `threads` threads, pausing `pause` seconds between publishes; records any error."""

    def __init__(
        self,
        store: EventStore,
        aggregates: int,
        per_aggregate: int,
        *,
        threads: int = 4,
        pause: float = 0.0,
    ) -> None:
        self.producer = EventProducer(store)
        self.errors: list[BaseException] = []
        self.published = 0
        self._lock = threading.Lock()
        names = [f"p{i}" for i in range(aggregates)]
        self._threads = [
            threading.Thread(target=self._work, args=(names[t::threads], per_aggregate, pause))
            for t in range(threads)
        ]

    def _work(self, names: list[str], per_aggregate: int, pause: float) -> None:
        try:
            for version in range(1, per_aggregate + 1):
                for name in names:
                    self.producer.publish(event(name, version))
                    with self._lock:
                        self.published += 1
                    if pause:
                        time.sleep(pause)
        except BaseException as error:
            self.errors.append(error)

    def __enter__(self) -> Writer:
        for t in self._threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self._threads:
            t.join()
        self.producer.close()
        assert not self.errors, self.errors[:3]

    def __exit__(self, *exc: object) -> None:
        self.join()


def test_every_committed_event_reaches_kafka_in_version_order(
    store: EventStore, kafka_bootstrap: str, prefix: str
) -> None:
    with RelayThread(store, kafka_bootstrap, prefix, batch_size=100) as relay:
        with Writer(store, aggregates=24, per_aggregate=40):
            pass
        wait_until_drained(store)
    stored = all_events(store)
    received = read_topics(kafka_bootstrap, [player_topic(prefix)], expect=len(stored))
    assert check_delivery(stored, received) == 0, "no failure happened, so no re-send either"
    assert relay.metric("eventstore_relay_published_events_total") == len(stored)
    partitions: dict[str, set[int]] = {}
    for record in received:
        partitions.setdefault(record.key, set()).add(record.partition)
        assert record.headers == {
            "event_type": record.value["event_type"].encode(),
            "event_id": record.value["id"].encode(),
            "aggregate_type": b"Player",
            "schema_version": b"1",
            "content_type": b"application/json",
        }
    assert all(len(p) == 1 for p in partitions.values()), "an aggregate stays on one partition"


def test_an_event_whose_transaction_rolled_back_is_never_published(
    store: EventStore, kafka_bootstrap: str, prefix: str, postgres_url: str, pg_schema: str
) -> None:
    committed = store.append_event(event("kept", 1))
    with pytest.raises(ConcurrencyError):  # a batch that fails as a whole
        store.append_events([event("lost-1", 1), event("kept", 1)])
    with psycopg.connect(postgres_url) as conn:  # an append rolled back by its caller
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        conn.commit()
        e = event("lost-2", 1)
        conn.execute(
            "SELECT append_events(%s::json, '[]')", (json.dumps([{**e.to_dict(), "bucket": 0}]),)
        )
        conn.rollback()
    with RelayThread(store, kafka_bootstrap, prefix):
        wait_until_drained(store)
    received = read_topics(kafka_bootstrap, [player_topic(prefix)], expect=1)
    assert [r.value["position"] for r in received] == [committed]
    check_delivery(all_events(store), received)


def test_an_independent_client_reads_what_we_publish(
    store: EventStore, kafka_bootstrap: str, prefix: str
) -> None:
    """kcat (librdkafka), not our own code, decodes the records."""
    store.append_events([event("a", 1), event("a", 2), event("b", 1, x=1, y=2)])
    with RelayThread(store, kafka_bootstrap, prefix):
        wait_until_drained(store)
    result = subprocess.run(
        [
            "kcat",
            "-C",
            "-b",
            kafka_bootstrap,
            "-t",
            player_topic(prefix),
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k\\t%h\\t%s\\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [line.split("\t") for line in result.stdout.splitlines() if line]
    stored = {e.id: e for e in all_events(store)}
    assert len(lines) == 3
    for key, headers, value in lines:
        document = json.loads(value)
        original = stored[document["id"]]
        assert key == original.aggregate_id
        assert document == original.to_dict()
        assert dict(h.split("=", 1) for h in headers.split(",")) == {
            "event_type": original.event_type,
            "event_id": original.id,
            "aggregate_type": "Player",
            "schema_version": "1",
            "content_type": "application/json",
        }


def relay_process(
    postgres_url: str, schema: str, bootstrap: str, prefix: str, *extra: str
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}
    env.update(
        EVENTSTORE_DATABASE_URL=postgres_url,
        EVENTSTORE_DATABASE_SCHEMA=schema,
        EVENTSTORE_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        EVENTSTORE_TOPIC_PREFIX=prefix,
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eventstore.cli",
            "relay",
            "--batch-size",
            "50",
            "--poll-interval",
            "0.1",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_relay_killed_mid_stream_loses_nothing(
    store: EventStore, kafka_bootstrap: str, prefix: str, postgres_url: str, pg_schema: str
) -> None:
    with Writer(store, aggregates=30, per_aggregate=60, pause=0.002) as writer:
        first = relay_process(postgres_url, pg_schema, kafka_bootstrap, prefix)
        deadline = time.monotonic() + 60
        while writer.published - store.outbox_status().depth < 400:  # mid-stream: some sent
            assert time.monotonic() < deadline and first.poll() is None, first.stdout
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        at_kill = writer.published
        assert at_kill < 30 * 60, "the writers must still be writing at the kill"
        wait_for(lambda: writer.published >= at_kill + 100, "appends with no relay at all")
        second = relay_process(postgres_url, pg_schema, kafka_bootstrap, prefix)
    try:
        wait_until_drained(store)
    finally:
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=30)
    assert second.returncode == 0, output
    assert "relay stopped after publishing" in output
    stored = all_events(store)
    received = read_topics(kafka_bootstrap, [player_topic(prefix)], expect=len(stored))
    duplicates = check_delivery(stored, received)
    print(f"\n{len(stored)} events, {duplicates} re-sent after the SIGKILL")
    assert duplicates <= 50, "at most the batch in flight at the kill is sent twice"


def test_a_broker_outage_of_20_seconds_delays_but_loses_nothing(
    store: EventStore, kafka_bootstrap: str, prefix: str, services_control: str
) -> None:
    with RelayThread(store, kafka_bootstrap, prefix, batch_size=200) as relay:
        with Writer(store, aggregates=10, per_aggregate=120, threads=2, pause=0.02) as writer:
            wait_for(
                lambda: relay.metric("eventstore_relay_published_events_total") > 0, "a first batch"
            )
            subprocess.run([services_control, "stop-kafka"], check=True, timeout=60)
            try:
                during = writer.published
                time.sleep(20)
                assert writer.published > during + 100, "appends must go on while Kafka is down"
                assert store.outbox_status().depth > 0
            finally:
                subprocess.run([services_control, "start-kafka"], check=True, timeout=120)
        wait_until_drained(store, timeout=180)
        assert relay.metric("eventstore_relay_publish_errors_total") > 0, "the outage was felt"
    stored = all_events(store)
    received = read_topics(kafka_bootstrap, [player_topic(prefix)], expect=len(stored))
    duplicates = check_delivery(stored, received)
    print(f"\n{len(stored)} events, {duplicates} re-sent after the outage")


def test_two_relays_one_active_and_the_standby_takes_over(
    store: EventStore, kafka_bootstrap: str, prefix: str
) -> None:
    first = RelayThread(store, kafka_bootstrap, prefix, standby_interval=0.2).start()
    second = RelayThread(store, kafka_bootstrap, prefix, standby_interval=0.2).start()
    try:
        with Writer(store, aggregates=12, per_aggregate=40, pause=0.001):
            for _ in range(60):
                assert first.active + second.active <= 1, "two relays active on one shard"
                time.sleep(0.02)
        wait_until_drained(store)
        active, standby = (first, second) if first.active else (second, first)
        assert active.active and not standby.active
        active.stop()
        started = time.monotonic()
        store.append_event(event("late", 1))
        wait_until_drained(store, timeout=30)
        takeover = time.monotonic() - started
        print(f"\nstandby took over and published in {takeover:.2f}s")
        assert standby.active and takeover < 5
    finally:
        for relay in (first, second):
            if relay._thread.is_alive():
                relay.stop()
    stored = all_events(store)
    received = read_topics(kafka_bootstrap, [player_topic(prefix)], expect=len(stored))
    assert check_delivery(stored, received) == 0


def test_the_relay_creates_its_topics_at_start_and_serves_metrics(
    store: EventStore, kafka_bootstrap: str, prefix: str, postgres_url: str, pg_schema: str
) -> None:
    from urllib.request import urlopen

    from kafka import KafkaAdminClient

    port = 20000 + int(prefix[-4:], 16) % 20000
    relay = relay_process(
        postgres_url,
        pg_schema,
        kafka_bootstrap,
        prefix,
        "--aggregate-type",
        "Player",
        "--aggregate-type",
        "NPCSpawner",
        "--metrics-port",
        str(port),
    )
    try:
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        wanted = {f"{prefix}.events.player", f"{prefix}.events.npc_spawner"}
        deadline = time.monotonic() + 30
        while not wanted <= set(admin.list_topics()):
            assert time.monotonic() < deadline and relay.poll() is None, "topics not created"
            time.sleep(0.2)
        assert len(admin.describe_topics([f"{prefix}.events.player"])[0]["partitions"]) == 3
        admin.close()
        store.append_event(event("p", 1))
        wait_until_drained(store)
        metrics = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert "eventstore_relay_active 1.0" in metrics
        assert "eventstore_relay_published_events_total 1.0" in metrics
        assert (
            "eventstore_outbox_depth" in metrics
            and "eventstore_outbox_oldest_age_seconds" in metrics
        )
        assert "eventstore_log_horizon_lag_seconds" in metrics
        assert "eventstore_log_events_behind" in metrics
    finally:
        relay.send_signal(signal.SIGTERM)
        output, _ = relay.communicate(timeout=30)
    assert relay.returncode == 0, output


# -- failures that retrying cannot heal ---------------------------------------------------


def test_a_relay_on_a_store_without_tables_stops_with_a_migration_error(
    store_factory: StoreFactory, kafka_bootstrap: str, prefix: str
) -> None:
    unmigrated = store_factory(migrate=False, fresh=True)
    relay = RelayThread(unmigrated, kafka_bootstrap, prefix).start()
    error = relay.ended_with(timeout=30)
    assert isinstance(error, MigrationError), error
    assert relay.metric("eventstore_relay_publish_errors_total") == 0
    assert relay.metric("eventstore_relay_active") == 0


class FlakyOutbox:
    """The real store, whose outbox reads fail `failures` times as if the database were
    briefly unreachable."""

    def __init__(self, store: EventStore, failures: int) -> None:
        self._store = store
        self.failures = failures

    def outbox_batch(self, limit: int, *, shard: int = 0, shards: int = 1) -> list[Event]:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailableError("PostgreSQL is unavailable (injected)")
        return self._store.outbox_batch(limit, shard=shard, shards=shards)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_database_errors_are_retried_and_not_counted_as_publish_errors(
    store: EventStore, kafka_bootstrap: str, prefix: str
) -> None:
    store.append_event(event("p", 1))
    flaky = FlakyOutbox(store, failures=3)
    with RelayThread(flaky, kafka_bootstrap, prefix) as relay:
        wait_until_drained(store)
        assert flaky.failures == 0
        assert relay.metric("eventstore_relay_publish_errors_total") == 0
        assert relay.metric("eventstore_relay_published_events_total") == 1


def test_the_relay_command_exits_with_the_error_when_the_tables_are_missing(
    postgres_url: str, kafka_bootstrap: str, prefix: str
) -> None:
    never_created = unique_name("t")
    relay = relay_process(postgres_url, never_created, kafka_bootstrap, prefix)
    try:
        output, _ = relay.communicate(timeout=60)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate()
    assert relay.returncode == 1, output
    assert "error: the event store tables are missing" in output, output
    assert output.count("Traceback") == 0


# -- leases, wake-ups and shards -----------------------------------------------------------


def stop_process(process: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL if it does not end within 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def relay_is_active(port: int) -> bool:
    return "eventstore_relay_active 1.0" in scrape(port)


def test_the_standby_process_takes_over_when_the_active_one_is_killed(
    store: EventStore, kafka_bootstrap: str, prefix: str, postgres_url: str, pg_schema: str
) -> None:
    ports = [free_port(), free_port()]
    relays = [
        relay_process(postgres_url, pg_schema, kafka_bootstrap, prefix, "--metrics-port", str(port))
        for port in ports
    ]
    try:
        store.append_event(event("before", 1))
        wait_until_drained(store, timeout=60)
        wait_for(lambda: sum(map(relay_is_active, ports)) == 1, "exactly one active relay")
        active = 0 if relay_is_active(ports[0]) else 1
        standby = 1 - active
        assert relays[standby].poll() is None, "the standby must be running"
        relays[active].send_signal(signal.SIGKILL)
        relays[active].communicate(timeout=10)
        store.append_event(event("after", 1))
        wait_until_drained(store, timeout=30)  # only the standby can have published it
        assert relay_is_active(ports[standby])
    finally:
        for relay in relays:
            stop_process(relay)
    stored = all_events(store)
    received = read_topics(kafka_bootstrap, [player_topic(prefix)], expect=len(stored))
    assert check_delivery(stored, received) == 0


@pytest.fixture
def long_schema(postgres_url: str) -> Iterator[str]:
    """A schema whose name is 60 characters long (PostgreSQL allows 63)."""
    name = (unique_name("t") + "_" + "x" * 60)[:60]
    yield name
    drop_schema(postgres_url, name)


def test_an_append_wakes_the_relay_at_once_even_for_a_long_schema_name(
    postgres_url: str, long_schema: str, kafka_bootstrap: str, prefix: str
) -> None:
    """With polls 30 s apart, only the append's NOTIFY can bring each event out in time."""
    assert len(long_schema) == 60
    with open_store(postgres_url, schema=long_schema) as store:
        store.migrate()
        with RelayThread(store, kafka_bootstrap, prefix, poll_interval=30) as relay:
            wait_for(lambda: relay.active, "the relay to be active")
            with EventProducer(store) as producer:
                for version in (1, 2, 3):
                    producer.publish(event("p", version))
                    wait_until_drained(store, timeout=10)
        stored = all_events(store)
    received = read_topics(kafka_bootstrap, [player_topic(prefix)], expect=3)
    assert check_delivery(stored, received) == 0


def test_each_shard_is_published_by_its_own_relay_only(
    store: EventStore, kafka_bootstrap: str, prefix: str
) -> None:
    relays = [RelayThread(store, kafka_bootstrap, prefix, shard=n, shards=2) for n in (0, 1)]
    for relay in relays:
        relay.start()
    try:
        wait_for(lambda: all(r.active for r in relays), "both shards to have an active relay")
        with Writer(store, aggregates=40, per_aggregate=5):
            pass
        wait_until_drained(store)
    finally:
        for relay in relays:
            relay.stop()
    stored = all_events(store)
    for shard, relay in enumerate(relays):
        # The shard of an aggregate, as the design defines it (not as the code computes it).
        mine = {e.id for e in stored if zlib.crc32(e.aggregate_id.encode()) % 256 % 2 == shard}
        sent = Counter(e.id for e in relay.publisher.acknowledged)
        assert set(sent) == mine, f"shard {shard} published events of the other shard"
        assert set(sent.values()) == {1}
    assert len(relays[0].publisher.acknowledged) + len(relays[1].publisher.acknowledged) == 200
    received = read_topics(kafka_bootstrap, [player_topic(prefix)], expect=len(stored))
    assert check_delivery(stored, received) == 0


# -- metrics ------------------------------------------------------------------------------


def test_the_relay_exports_how_far_readers_of_the_global_log_lag(
    store: EventStore, kafka_bootstrap: str, prefix: str, postgres_url: str
) -> None:
    with RelayThread(store, kafka_bootstrap, prefix, status_interval=0.05) as relay:
        wait_for(lambda: relay.active, "the relay to be active")
        with psycopg.connect(postgres_url) as holder:
            # An open transaction with an id holds the horizon of every reader back.
            holder.execute("SELECT pg_current_xact_id()")
            store.append_event(event("p", 1))
            wait_for(lambda: relay.metric("eventstore_log_events_behind") >= 1, "events behind")
            wait_for(lambda: relay.metric("eventstore_log_horizon_lag_seconds") > 0, "the lag")
            holder.rollback()
        wait_for(lambda: relay.metric("eventstore_log_events_behind") == 0, "the log caught up")
        assert relay.metric("eventstore_log_horizon_lag_seconds") == 0
