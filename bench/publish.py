"""Producer and relay figures against the local PostgreSQL and Kafka, with raw baselines run
in the same process.

    make bench-publish
    python bench/publish.py --database-url postgresql://... --kafka 127.0.0.1:59092

(a) 16 threads each publishing single events through EventProducer (group commit), events/s,
    as a ratio of raw single-row inserts from 16 writers (bench/append.py's baseline).
(b) The relay draining a backlog of --backlog events (default 200,000) to Kafka, events/s,
    next to the store's batched append rate (batches of 100) measured in the same run.
(c) Latency from append commit to broker acknowledgement at a steady --rate events/s
    (default 1,000) for --seconds: p50, p99 and max.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).parent))

from append import Schema, in_threads, make_event, ours_batches, raw_single
from eventstore import Event, EventStore, open_store
from eventstore.config import Settings
from eventstore.producer import (
    EventProducer,
    KafkaPublisher,
    OutboxRelay,
    RelayMetrics,
    RelaySettings,
)


def producer_16_threads(url: str, per_writer: int) -> float:
    with Schema(url) as schema:
        store = open_store(url, schema=schema.name)
        try:
            store.migrate()
            with EventProducer(store) as producer:

                def work(worker: int) -> int:
                    for version in range(1, per_writer + 1):
                        producer.publish(make_event(f"w{worker}", version))
                    return per_writer

                return in_threads(16, work)
        finally:
            store.close()


@contextmanager
def backlog(url: str, kafka: str, events: int) -> Iterator[tuple[EventStore, KafkaPublisher, str]]:
    """A throw-away schema holding `events` stored, unpublished events, and a publisher with
    a fresh topic prefix (its Player topic created); yields (store, publisher, schema)."""
    with Schema(url) as schema:
        store = open_store(url, schema=schema.name)
        publisher = KafkaPublisher(
            kafka, topic_prefix=f"bench_{uuid.uuid4().hex[:8]}", partitions=3
        )
        try:
            store.migrate()
            for start in range(0, events, 1000):
                size = min(1000, events - start)
                store.append_events([make_event(f"a{i}", start // 1000 + 1) for i in range(size)])
            publisher.ensure_topics(["Player"])
            yield store, publisher, schema.name
        finally:
            publisher.close()
            store.close()


def relay_drain(url: str, kafka: str, events: int, batch_size: int) -> float:
    """One OutboxRelay in this process draining the backlog."""
    with backlog(url, kafka, events) as (store, publisher, _):
        relay = OutboxRelay(store, publisher, RelaySettings(batch_size=batch_size), RelayMetrics())
        started = time.perf_counter()
        while relay.drain_once():
            pass
        return relay.published / (time.perf_counter() - started)


def relay_processes(url: str, kafka: str, events: int, processes: int, batch_size: int) -> float:
    """`processes` relays (`eventstore relay --shard k --shards N`) draining one backlog;
    timed from the first drop of the outbox depth, so process start-up is not counted."""
    with backlog(url, kafka, events) as (_store, publisher, schema):
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}
        env |= {
            "EVENTSTORE_DATABASE_URL": url,
            "EVENTSTORE_DATABASE_SCHEMA": schema,
            "EVENTSTORE_KAFKA_BOOTSTRAP_SERVERS": kafka,
            "EVENTSTORE_TOPIC_PREFIX": publisher.topic_prefix,
        }
        command = [sys.executable, "-m", "eventstore.cli", "relay", "--shards", str(processes)]
        command += ["--batch-size", str(batch_size), "--poll-interval", "0.1"]
        relays = [
            subprocess.Popen([*command, "--shard", str(k)], env=env, stderr=subprocess.DEVNULL)
            for k in range(processes)
        ]
        # Counted exactly: the store's outbox_status() estimates a depth above 10,000.
        with psycopg.connect(url, autocommit=True) as conn:
            count = sql.SQL("SELECT count(*) FROM {}.outbox").format(sql.Identifier(schema))

            def depth() -> int:
                row = conn.execute(count).fetchone()
                return int(row[0]) if row else 0

            try:
                while depth() == events:
                    time.sleep(0.02)
                started, depth_at_start = time.perf_counter(), depth()
                while depth():
                    time.sleep(0.05)
                return depth_at_start / (time.perf_counter() - started)
            finally:
                for relay in relays:
                    relay.send_signal(signal.SIGTERM)
                    relay.wait(timeout=60)


class TimedPublisher(KafkaPublisher):
    """The real publisher, noting when each event's acknowledgement came back."""

    acked: dict[int, float]

    def publish(self, events: Sequence[Event]) -> None:
        super().publish(events)
        now = time.perf_counter()
        for event in events:
            if event.position is not None:
                self.acked[event.position] = now


def latency(url: str, kafka: str, rate: int, seconds: float) -> list[float]:
    with Schema(url) as schema:
        store = open_store(url, schema=schema.name)
        publisher = TimedPublisher(kafka, topic_prefix=f"bench_{uuid.uuid4().hex[:8]}")
        publisher.acked = {}
        committed: dict[int, float] = {}
        try:
            store.migrate()
            publisher.ensure_topics(["Player"])
            relay = OutboxRelay(store, publisher, RelaySettings(poll_interval=0.5), RelayMetrics())
            stop = threading.Event()
            relay_thread = threading.Thread(target=relay.run, args=(stop,))
            relay_thread.start()
            time.sleep(1.0)  # the relay holds its lease and listens
            producer = EventProducer(store)
            total = int(rate * seconds)
            interval = 1.0 / rate
            started = time.perf_counter()
            for n in range(total):
                due = started + n * interval
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                position = producer.publish(make_event(f"p{n % 200}", n // 200 + 1))
                committed[position] = time.perf_counter()
            deadline = time.monotonic() + 30
            while len(publisher.acked) < total and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            relay_thread.join()
            producer.close()
            return [publisher.acked[p] - committed[p] for p in committed if p in publisher.acked]
        finally:
            publisher.close()
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    settings = Settings()
    parser.add_argument("--database-url", default=settings.database_url)
    parser.add_argument("--kafka", default=settings.kafka_bootstrap_servers)
    parser.add_argument("--events-per-writer", type=int, default=600)
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--relay-batch", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if not args.database_url or not args.kafka:
        parser.error("give --database-url postgresql://... and --kafka host:port")
    url, kafka = args.database_url, args.kafka

    raw_rate = raw_single(url, 16, args.events_per_writer)
    producer_rate = producer_16_threads(url, args.events_per_writer)
    raw_rate_after = raw_single(url, 16, args.events_per_writer)
    raw_median = statistics.median([raw_rate, raw_rate_after])
    print(
        f"(a) producer, 16 threads: {producer_rate:,.0f}/s; raw 16 writers {raw_rate:,.0f}/s "
        f"and {raw_rate_after:,.0f}/s (before and after); ratio {producer_rate / raw_median:.2f}x"
    )

    batched = ours_batches(url, 300, 100)
    drained = relay_drain(url, kafka, args.backlog, args.relay_batch)
    print(
        f"(b) one relay (in this process) drained {args.backlog:,} events at {drained:,.0f}/s; "
        f"the store's batched append (100 per batch) ran at {batched:,.0f}/s; "
        f"ratio {drained / batched:.2f}x"
    )
    for processes in (1, 2):
        rate = relay_processes(url, kafka, args.backlog, processes, args.relay_batch)
        print(
            f"    {processes} relay process(es), sharded: {rate:,.0f}/s; "
            f"ratio {rate / batched:.2f}x"
        )

    samples = sorted(latency(url, kafka, args.rate, args.seconds))
    expected = int(args.rate * args.seconds)
    p50 = samples[len(samples) // 2] * 1000
    p99 = samples[int(len(samples) * 0.99) - 1] * 1000
    print(
        f"(c) commit to broker ack at {args.rate}/s for {args.seconds:.0f}s: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {samples[-1] * 1000:.1f} ms "
        f"({len(samples)} of {expected} events measured)"
    )


if __name__ == "__main__":
    main()
