"""Projections fed by Kafka, against the real broker and PostgreSQL: what the topic cannot be
trusted with (garbage, re-sends, missing records, a hand-off while the log's horizon is held)
and the runner as an operator runs it (SIGTERM, status)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from kafka import KafkaProducer

from eventstore import EventStore, open_store
from eventstore._topics import dlq_topic, events_topic
from eventstore.consumers import KafkaSource, Projection, ProjectionRunner
from eventstore.producer import KafkaPublisher
from tests.conftest import unique_name
from tests.contract.test_projections import Observed, Running, counting, game, model, reference
from tests.helpers import event, wait_for
from tests.kafka_helpers import RelayThread, free_port, kcat, scrape

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pg_store(postgres_url: str, pg_schema: str) -> Iterator[EventStore]:
    store = open_store(postgres_url, schema=pg_schema)
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def prefix() -> str:
    return unique_name("projk")


def source(bootstrap: str, prefix: str) -> KafkaSource:
    return KafkaSource(bootstrap, topic_prefix=prefix, session_timeout=6)


def skip_catch_up(store: EventStore, projection: Projection) -> None:
    """Register the projection as caught up long ago: everything must come from Kafka."""
    store.register_projection(projection.name, projection.version)
    with store.projection_transaction(projection.name) as tx:
        tx.mark_handoff(datetime.now(UTC) - timedelta(days=1))


def test_garbage_on_the_topic_is_dead_lettered_and_the_runner_goes_on(
    pg_store: EventStore, kafka_bootstrap: str, prefix: str
) -> None:
    projection, _ = counting()
    history = game(4, 3)
    pg_store.append_events(history[:6])
    topic = events_topic(prefix, "Player")
    with RelayThread(pg_store, kafka_bootstrap, prefix) as relay:
        wait_for(lambda: pg_store.outbox_status().depth == 0, "the first events published")
        running = Running(
            ProjectionRunner(
                pg_store, [projection], source=source(kafka_bootstrap, prefix), observer=Observed()
            )
        )
        garbage = [
            b"\xff\xfe not even text",
            b"not json",
            b'{"id": "x", "event_type": "PlayerMoved"}',
            b"[1, 2, 3]",
            json.dumps({**history[0].to_dict(), "version": 0}).encode(),
        ]
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        for value in garbage:
            producer.send(topic, key=b"p-0", value=value)
        producer.flush()
        producer.close()
        pg_store.append_events(history[6:])
        wait_for(lambda: model(pg_store) == reference(history), "the model, garbage and all")
        running.stop()
        del relay
    assert running.error is None
    letters = kcat(kafka_bootstrap, dlq_topic(prefix, "counts"), len(garbage))
    assert [value for _, _, value in letters] == garbage
    for key, headers, _ in letters:
        assert key == "p-0"
        assert headers["policy"] == "undecodable"
        assert headers["projection"] == "counts"
        assert headers["source_topic"] == topic
        assert headers["error_message"]
    assert pg_store.projection_record("counts").dead_lettered == len(garbage)  # type: ignore[union-attr]


def test_resent_records_change_nothing_and_missing_ones_are_filled_from_the_store(
    pg_store: EventStore, kafka_bootstrap: str, prefix: str
) -> None:
    projection, _ = counting()
    history = game(5, 6)
    pg_store.append_events(history)
    # Per aggregate, so that another test's open transaction (the log's horizon) cannot hide
    # any of them; in position order, as the relay would publish them.
    stored = sorted(
        (e for n in range(5) for e in pg_store.get_events_by_aggregate(f"p-{n}")),
        key=lambda e: e.position or 0,
    )
    missing = [e for e in stored if e.aggregate_id == "p-0" and 2 <= e.version <= 4]
    on_topic = [e for e in stored if e not in missing]
    skip_catch_up(pg_store, projection)
    publisher = KafkaPublisher(kafka_bootstrap, topic_prefix=prefix, timeout=10)
    publisher.publish(on_topic)
    publisher.publish(on_topic)  # a relay's re-send after a crash: every record twice
    publisher.close()
    observed = Observed()
    running = Running(
        ProjectionRunner(
            pg_store, [projection], source=source(kafka_bootstrap, prefix), observer=observed
        )
    )
    wait_for(lambda: model(pg_store) == reference(history), "the model")
    running.stop()
    assert observed.applied == len(history)
    # Every re-sent record skipped; a redelivery (offsets are committed without waiting, and
    # a rebalance can come first) only adds more skipped ones.
    assert observed.duplicates >= len(on_topic)


def test_a_new_projection_misses_nothing_while_a_transaction_holds_the_horizon(
    pg_store: EventStore, postgres_url: str, kafka_bootstrap: str, prefix: str
) -> None:
    """Events committed behind an open transaction are not in the global log yet, so the
    catch-up cannot read them; they reach the projection through Kafka after the hand-off."""
    before = game(3, 2)
    pg_store.append_events(before)
    holder = psycopg.connect(postgres_url)
    try:
        holder.execute("SELECT pg_current_xact_id()")  # holds the horizon from here on
        behind = [
            event("late-1", 1, event_type="PlayerJoined", zone="z9"),
            event("late-1", 2, zone="z9"),
        ]
        pg_store.append_events(behind)
        with RelayThread(pg_store, kafka_bootstrap, prefix):
            wait_for(lambda: pg_store.outbox_status().depth == 0, "everything published")
            assert pg_store.log_horizon().events_behind >= 2
            # The events were published longer ago than the hand-off margin: only the
            # horizon's lag, measured as the catch-up ends, moves the hand-off back to them.
            margin = timedelta(seconds=1)
            wait_for(
                lambda: pg_store.log_horizon().lag_seconds > 3 * margin.total_seconds(),
                "the events behind the horizon to age past the margin",
            )
            projection, _ = counting()
            running = Running(
                ProjectionRunner(
                    pg_store,
                    [projection],
                    source=source(kafka_bootstrap, prefix),
                    handoff_margin=margin,
                )
            )
            wait_for(
                lambda: model(pg_store) == reference(before + behind),
                "the events behind the horizon, through Kafka",
            )
            assert pg_store.log_horizon().events_behind >= 2  # still held
            running.stop()
    finally:
        holder.rollback()
        holder.close()
    assert pg_store.get_document("counts", "late-1")["applied"] == 2


def test_sigterm_finishes_the_batch_leaves_the_group_and_exits_zero(
    pg_store: EventStore, postgres_url: str, pg_schema: str, kafka_bootstrap: str, prefix: str
) -> None:
    history = game(10, 5)
    pg_store.append_events(history)
    env = {
        **os.environ,
        "EVENTSTORE_DATABASE_URL": postgres_url,
        "EVENTSTORE_DATABASE_SCHEMA": pg_schema,
        "EVENTSTORE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "EVENTSTORE_TOPIC_PREFIX": prefix,
        "PYTHONPATH": str(ROOT),
    }
    port = free_port()
    with RelayThread(pg_store, kafka_bootstrap, prefix):
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "eventstore.cli",
                "project",
                "tests.integration.projection_defs:PROJECTIONS",
                "--log-level",
                "WARNING",
                "--metrics-port",
                str(port),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            players = {f"p-{n}" for n in range(10)}

            def complete() -> bool:
                docs = dict(model(pg_store, "applied"))
                return set(docs) == players and all(
                    d["versions"] == [1, 2, 3, 5] for d in docs.values()
                )

            wait_for(complete, "the projection process to apply everything", timeout=90)

            def handed_off() -> bool:
                record = pg_store.projection_record("applied")
                return record is not None and record.handoff_at is not None

            # Appended after the catch-up ended, the next events come through Kafka (and
            # are counted by the runner's metrics, which count the live source's batches).
            wait_for(handed_off, "the catch-up to hand over to Kafka")
            more = game(10, 2, start=6)
            pg_store.append_events(more)
            wait_for(
                lambda: all(
                    d["versions"][-1] == 7 for d in dict(model(pg_store, "applied")).values()
                ),
                "live events",
            )
            # The live events (versions 6 and 7 of 10 players) are counted by the metrics.
            applied = 'eventstore_projection_events_applied_total{projection="applied"}'
            wait_for(lambda: _sample(scrape(port), applied) >= 20, "the applied-events metric")
            # The lag per partition is reported every 2 s, once a fetch told the high mark.
            wait_for(
                lambda: 'eventstore_projection_lag_events{partition="' in scrape(port),
                "the lag per partition",
            )
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "projections stopped: applied" in err
    status = subprocess.run(
        [sys.executable, "-m", "eventstore.cli", "projections", "status", "applied", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    (entry,) = json.loads(status.stdout)
    assert entry["lag_events"] == 0 and entry["parked"] == 0
    assert entry["partitions"] and set(entry["partitions"].values()) == {0}


def _sample(metrics: str, name: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
