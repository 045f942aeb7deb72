"""Append throughput of the PostgreSQL store, as ratios of raw psycopg inserts in the same run.

    make bench        (starts the local services, then runs this)
    python bench/append.py --database-url postgresql://eventstore@127.0.0.1:55432/eventstore

Scenarios, ours and its raw counterpart, alternated for `--rounds` rounds (median reported):
  single    1 writer, one event per append          raw: single-row INSERT per transaction
  16w       16 writers, one event per append        raw: the same with 16 connections
  batch100  1 writer, append_events of 100 events   raw: executemany of 100 rows per transaction
                                                    (and COPY of 100 rows, for reference)
Ours runs with everything on: version checks, outbox rows, immutability triggers, the global-
log ordering. Raw inserts into a table of the same columns, twice: bare (primary key only) and
indexed (the unique and secondary indexes of our events table), which separates what indexing
costs from what our layer adds.
Every run uses fresh schemas, dropped afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from eventstore import Event, open_store
from eventstore.config import Settings
from eventstore.events import encode_json
from eventstore.store.postgres import PostgresEventStore

RAW_TABLE = """
CREATE TABLE raw_events (
    position bigserial PRIMARY KEY, id text NOT NULL, aggregate_id text NOT NULL,
    aggregate_type text NOT NULL, event_type text NOT NULL, version bigint NOT NULL,
    schema_version integer NOT NULL, "timestamp" timestamptz NOT NULL, payload jsonb NOT NULL,
    metadata jsonb NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now())
"""
# The same table with the keys and indexes of our events table: what indexing alone costs.
RAW_INDEXES = (
    "CREATE UNIQUE INDEX ON raw_events (id)",
    "CREATE UNIQUE INDEX ON raw_events (aggregate_id, version)",
    "CREATE INDEX ON raw_events (event_type, position)",
    'CREATE INDEX ON raw_events ("timestamp", position)',
)
RAW_INSERT = (
    "INSERT INTO raw_events (id, aggregate_id, aggregate_type, event_type, version, "
    'schema_version, "timestamp", payload, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)'
)
RAW_COPY = (
    "COPY raw_events (id, aggregate_id, aggregate_type, event_type, version, schema_version, "
    '"timestamp", payload, metadata) FROM STDIN'
)


def make_event(aggregate: str, version: int) -> Event:
    return Event(
        id=str(uuid.uuid4()),
        event_type="PlayerMoved",
        aggregate_id=aggregate,
        aggregate_type="Player",
        version=version,
        timestamp=datetime.now(UTC),
        payload={"from_zone": "forest", "to_zone": "harbor", "x": 12.5, "y": -3.25},
        metadata={"session": "bench", "correlation_id": str(version)},
    )


def raw_row(event: Event) -> tuple[Any, ...]:
    return (
        event.id,
        event.aggregate_id,
        event.aggregate_type,
        event.event_type,
        event.version,
        event.schema_version,
        event.timestamp,
        encode_json(event.payload),
        encode_json(event.metadata),
    )


class Schema:
    """A throw-away schema; `connect()` gives connections with it on the search path."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"bench_{uuid.uuid4().hex[:10]}"

    def connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.url, autocommit=True)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.name)))
        return conn

    def __enter__(self) -> Schema:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.name)))
        return self

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(self.name)))


def in_threads(writers: int, work: Callable[[int], int]) -> float:
    """Run `work(worker)` in `writers` threads started together; events per second."""
    barrier = threading.Barrier(writers + 1)
    counts = [0] * writers

    def run(worker: int) -> None:
        barrier.wait()
        counts[worker] = work(worker)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def ours_single(url: str, writers: int, per_writer: int) -> float:
    with Schema(url) as schema:
        store = open_store(url, schema=schema.name, max_connections=writers)
        try:
            store.migrate()

            def work(worker: int) -> int:
                for version in range(1, per_writer + 1):
                    store.append_event(make_event(f"w{worker}", version))
                return per_writer

            return in_threads(writers, work)
        finally:
            store.close()


def create_raw_table(schema: Schema, indexed: bool) -> None:
    with schema.connect() as conn:
        conn.execute(RAW_TABLE)
        for statement in RAW_INDEXES if indexed else ():
            conn.execute(statement)


def raw_single(url: str, writers: int, per_writer: int, *, indexed: bool = False) -> float:
    with Schema(url) as schema:
        create_raw_table(schema, indexed)
        conns = [schema.connect() for _ in range(writers)]
        try:

            def work(worker: int) -> int:
                conn = conns[worker]
                for version in range(1, per_writer + 1):
                    conn.execute(RAW_INSERT, raw_row(make_event(f"w{worker}", version)))
                return per_writer

            return in_threads(writers, work)
        finally:
            for conn in conns:
                conn.close()


def ours_batches(url: str, batches: int, size: int) -> float:
    with Schema(url) as schema:
        store = open_store(url, schema=schema.name)
        try:
            store.migrate()

            def work(_: int) -> int:
                for b in range(batches):
                    store.append_events([make_event(f"a{i}", b + 1) for i in range(size)])
                return batches * size

            return in_threads(1, work)
        finally:
            store.close()


def raw_batches(url: str, batches: int, size: int, *, copy: bool, indexed: bool = False) -> float:
    with Schema(url) as schema, schema.connect() as conn:
        create_raw_table(schema, indexed)

        def work(_: int) -> int:
            for b in range(batches):
                rows = [raw_row(make_event(f"a{i}", b + 1)) for i in range(size)]
                with conn.transaction(), conn.cursor() as cur:
                    if copy:
                        with cur.copy(RAW_COPY) as stream:
                            for row in rows:
                                stream.write_row(row)
                    else:
                        cur.executemany(RAW_INSERT, rows)
            return batches * size

        return in_threads(1, work)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL URL [env EVENTSTORE_DATABASE_URL]"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single-events", type=int, default=3000, help="events, 1 writer")
    parser.add_argument("--events-per-writer", type=int, default=600, help="events per writer, 16w")
    parser.add_argument("--batches", type=int, default=300, help="batches of 100")
    args = parser.parse_args()
    url = args.database_url or Settings().database_url
    if not url or not url.startswith("postgres"):
        parser.error("give --database-url postgresql://... (or set EVENTSTORE_DATABASE_URL)")
    probe = open_store(url, schema="bench_probe")
    assert isinstance(probe, PostgresEventStore)
    probe.close()

    scenarios: dict[str, tuple[Callable[[], float], Callable[[bool], float], str]] = {
        "single": (
            lambda: ours_single(url, 1, args.single_events),
            lambda indexed: raw_single(url, 1, args.single_events, indexed=indexed),
            "single-row INSERT per transaction, 1 writer",
        ),
        "16 writers": (
            lambda: ours_single(url, 16, args.events_per_writer),
            lambda indexed: raw_single(url, 16, args.events_per_writer, indexed=indexed),
            "single-row INSERT per transaction, 16 writers",
        ),
        "batch of 100": (
            lambda: ours_batches(url, args.batches, 100),
            lambda indexed: raw_batches(url, args.batches, 100, copy=False, indexed=indexed),
            "executemany of 100 rows per transaction",
        ),
        "batch of 100 (vs COPY)": (
            lambda: ours_batches(url, args.batches, 100),
            lambda indexed: raw_batches(url, args.batches, 100, copy=True, indexed=indexed),
            "COPY of 100 rows per transaction",
        ),
    }
    rates: dict[str, dict[str, list[float]]] = {
        name: {"ours": [], "bare": [], "indexed": []} for name in scenarios
    }
    for round_number in range(1, args.rounds + 1):
        for name, (ours, raw, _) in scenarios.items():
            measured = {"bare": raw(False), "ours": ours(), "indexed": raw(True)}
            for kind, rate in measured.items():
                rates[name][kind].append(rate)
            print(
                f"round {round_number} {name:24} ours {measured['ours']:9,.0f}/s  "
                f"raw bare {measured['bare']:9,.0f}/s  raw indexed {measured['indexed']:9,.0f}/s"
            )

    print()
    print(
        "| scenario | ours (events/s) | raw baseline | raw bare (events/s) | ours / bare "
        "| raw indexed (events/s) | ours / indexed |"
    )
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, (_, _, label) in scenarios.items():
        ours_m, bare_m, indexed_m = (
            statistics.median(rates[name][k]) for k in ("ours", "bare", "indexed")
        )
        print(
            f"| {name} | {ours_m:,.0f} | {label} | {bare_m:,.0f} | {ours_m / bare_m:.2f}x "
            f"| {indexed_m:,.0f} | {ours_m / indexed_m:.2f}x |"
        )
    print(
        f"\nmedians of {args.rounds} rounds; "
        "bare: primary key only; indexed: the keys of our events table"
    )


if __name__ == "__main__":
    main()
