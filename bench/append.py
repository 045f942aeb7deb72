"""Append throughput of our store, as ratios of baselines measured in the same run: raw psycopg
inserts, the `eventsourcing` library's own recorders, and what building an Event costs.

    make bench                                   (services up, .[dev,bench] installed, full run)
    make bench BENCH_ARGS=--quick                (small sizes, 1 round: a smoke run)
    python bench/append.py --database-url postgresql://eventstore@127.0.0.1:55432/eventstore
    python bench/append.py --quick --only event,peer-sqlite        (needs no PostgreSQL)

Groups (`--only`, all by default). Ours and its baselines alternate within each of `--rounds`
rounds, and the medians are reported; every measurement gets a fresh PostgreSQL schema or SQLite
file, removed afterwards.

event          µs to build and validate one typical game event (a 6-key payload holding a
               small nested list, 2-key metadata): `Event.new(...)`, and `Event(**fields)` with
               explicit fields, next to `json.dumps` of the same event's dict (`to_dict()`) and
               of its payload. timeit in CPU time, best of `--repeat` interleaved rounds.
raw            our PostgreSQL store against raw psycopg inserts into a table of the same columns,
               bare (primary key only) and indexed (the keys of our events table):
                 single     1 writer, one event per append      raw: single-row INSERT
                 16 writers 16 writers, one event per append    raw: the same, 16 connections
                 batch100   1 writer, append_events of 100      raw: executemany of 100 rows
                                                                (and COPY, for reference)
               Both sides build the same Event per row inside the timed loop.
peer-postgres  our PostgreSQL store against eventsourcing's PostgresApplicationRecorder (its
               tables in a schema of their own).
peer-sqlite    our embedded SQLite store against eventsourcing's SQLiteApplicationRecorder, each
               on a file of its own in a temporary directory (`--sqlite-dir`).
               Both peer groups run two workloads: (a) 1 writer appending single events, and
               (b) 4 threads each appending batches of 25 events (one event per aggregate, each
               thread its own 25 aggregates). Ours is measured three times: end to end
               (`Event.new` built and validated inside the timed loop, then appended), store
               only (the same events built beforehand), and via EventProducer (built inside
               the loop and published through the producer, which is how game services write:
               concurrent callers share transactions). The peer is measured with its own object
               construction inside the timed loop: a dict of the same fields as our event's
               `to_dict()`, `json.dumps(...).encode()` of it as the state, and the
               `StoredEvent(originator_id=UUID, originator_version, topic, state)`. So both
               sides store the same JSON per event (the sizes are printed; the peer's timestamp
               is written +00:00 rather than Z). Untimed warm-up first, on both sides: one
               event on PostgreSQL (and every pool connection opened); 10,000 events on SQLite,
               so that each WAL file has grown and been checkpointed once, as in a long-running
               store (see SQLITE_WARM_UP).

What each side does per append. Ours, everything on: validation, the idempotency lookup by id,
the version check, the outbox row, the immutability triggers and the global-log ordering. The
peer: one row per event keyed by (originator_id, originator_version), whose primary key is its
only version check; no outbox. Its PostgreSQL recorder takes `LOCK TABLE ... IN EXCLUSIVE MODE`
to order its notification ids (so its writers are serialised) and sends a NOTIFY.

Durability: PostgreSQL with the server's defaults for both (fsync, synchronous_commit on). SQLite:
ours sets WAL and synchronous=FULL (the WAL is fsynced at every commit); the peer sets WAL and
leaves synchronous at the SQLite build's default, which the script reads from the peer's own
connection and prints (FULL with Python's usual builds, so both survive power loss).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import timeit
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from eventstore import Event, EventProducer, EventStore, open_store
from eventstore.config import Settings
from eventstore.events import encode_json
from eventstore.store.postgres import PostgresEventStore

if TYPE_CHECKING:  # the peer is an optional dependency (the `bench` extra): imported lazily
    from eventsourcing.persistence import ApplicationRecorder, StoredEvent

GROUPS = ("event", "raw", "peer-postgres", "peer-sqlite")

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

# A typical game event: six payload keys, one a small nested list; two metadata keys.
PAYLOAD: dict[str, Any] = {
    "from_zone": "forest",
    "to_zone": "harbor",
    "x": 12.5,
    "y": -3.25,
    "speed": 4.2,
    "path": [[12.0, -3.0], [12.25, -3.1], [12.5, -3.25]],
}


def metadata(version: int) -> dict[str, Any]:
    return {"session": "bench", "correlation_id": str(version)}


def make_event(aggregate: str, version: int) -> Event:
    """The benchmark's event, built and validated as an application would."""
    return Event.new(
        aggregate_type="Player",
        aggregate_id=aggregate,
        event_type="PlayerMoved",
        version=version,
        payload=PAYLOAD,
        metadata=metadata(version),
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


def verdict(ratio: float, aim: float, *, at_most: bool = False) -> str:
    met = ratio <= aim if at_most else ratio >= aim
    return f"{'≤' if at_most else '≥'} {aim:g}x: {'met' if met else '**not met**'}"


# -- event: what building and validating one Event costs ------------------------------------


def best_of(functions: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """timeit, interleaved: in each of `repeat` rounds, each function runs a loop of about
    0.05 s; its best round, in µs per call. Timed in CPU time of this thread, so that other
    processes on the machine do not inflate it (they still share its caches)."""
    timers = {name: timeit.Timer(f, timer=time.thread_time) for name, f in functions.items()}
    numbers = {name: max(1, t.autorange()[0] // 4) for name, t in timers.items()}
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeat):
        for name, t in timers.items():
            best[name] = min(best[name], t.timeit(numbers[name]) / numbers[name] * 1e6)
    return best


def event_costs(repeat: int) -> dict[str, float]:
    fields: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "event_type": "PlayerMoved",
        "aggregate_id": "player-7",
        "aggregate_type": "Player",
        "version": 7,
        "timestamp": datetime.now(UTC),
        "payload": PAYLOAD,
        "metadata": metadata(7),
    }
    as_dict = Event(**fields).to_dict()
    payload = as_dict["payload"]
    return best_of(
        {
            "Event.new(...)": lambda: make_event("player-7", 7),
            "Event(**fields)": lambda: Event(**fields),
            "json.dumps(event.to_dict())": lambda: json.dumps(as_dict),
            "json.dumps(event.payload)": lambda: json.dumps(payload),
            "str(uuid4()) + datetime.now(UTC), inside Event.new": lambda: (
                str(uuid.uuid4()),
                datetime.now(UTC),
            ),
        },
        repeat,
    )


def report_event_costs(costs: dict[str, float], repeat: int) -> None:
    dumps = costs["json.dumps(event.to_dict())"]
    print(f"\n### Cost of an Event (µs of CPU per call, best of {repeat} interleaved rounds)\n")
    print("| measure | µs | / json.dumps(event.to_dict()) | aim |")
    print("|---|---:|---:|---|")
    for name, us in costs.items():
        ratio = us / dumps
        aim = verdict(ratio, 3, at_most=True) if name.startswith("Event") else ""
        print(f"| {name} | {us:.2f} | {ratio:.2f}x | {aim} |")


# -- raw: our PostgreSQL store against raw psycopg inserts ----------------------------------


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


RAW_AIMS = {"single": 0.85, "16 writers": 0.75, "batch of 100": 1.0}


def run_raw(url: str, args: argparse.Namespace) -> None:
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

    print("\n### Our PostgreSQL store against raw psycopg (events/s)\n")
    print(
        "| scenario | ours (events/s) | raw baseline | raw bare (events/s) | ours / bare "
        "| raw indexed (events/s) | ours / indexed | aim (of bare) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---|")
    for name, (_, _, label) in scenarios.items():
        ours_m, bare_m, indexed_m = (
            statistics.median(rates[name][k]) for k in ("ours", "bare", "indexed")
        )
        aim = verdict(ours_m / bare_m, RAW_AIMS[name]) if name in RAW_AIMS else ""
        print(
            f"| {name} | {ours_m:,.0f} | {label} | {bare_m:,.0f} | {ours_m / bare_m:.2f}x "
            f"| {indexed_m:,.0f} | {ours_m / indexed_m:.2f}x | {aim} |"
        )
    print(
        f"\nmedians of {args.rounds} rounds; "
        "bare: primary key only; indexed: the keys of our events table"
    )


# -- peer: the eventsourcing library's recorders on the same workloads ----------------------


@dataclass(frozen=True)
class Workload:
    """`writers` threads, each making `appends` appends of `batch` events, one per aggregate
    (each thread its own aggregates)."""

    label: str
    writers: int
    appends: int
    batch: int

    @property
    def per_writer(self) -> int:
        return self.appends * self.batch


def aggregate(worker: int, index: int) -> str:
    return f"w{worker}-a{index}"


def warm_up_chunks(events: int) -> list[range]:
    """Batches of at most 5,000 events (each side commits them untimed before timing)."""
    return [range(start, min(start + 5000, events)) for start in range(0, events, 5000)]


def run_ours(
    store: EventStore,
    load: Workload,
    *,
    prebuilt: bool,
    warm_up: int,
    producer: EventProducer | None = None,
) -> float:
    """Events/s of our store; the events built inside the timed loop unless `prebuilt`.
    `warm_up` events are appended first, untimed. With `producer`, the events go through it
    (validation, group commit) instead of straight to the store."""

    def batch(worker: int, append: int) -> list[Event]:
        return [make_event(aggregate(worker, i), append + 1) for i in range(load.batch)]

    def append(events: list[Event]) -> None:
        if producer is not None:
            producer.publish_many(events)
        elif len(events) == 1:
            store.append_event(events[0])
        else:
            store.append_events(events)

    for chunk in warm_up_chunks(warm_up):
        store.append_events([make_event(f"warm-up-{i}", 1) for i in chunk])
    if prebuilt:
        built = [[batch(w, n) for n in range(load.appends)] for w in range(load.writers)]

        def work(worker: int) -> int:
            for events in built[worker]:
                append(events)
            return load.per_writer

    else:

        def work(worker: int) -> int:
            for n in range(load.appends):
                append(batch(worker, n))
            return load.per_writer

    return in_threads(load.writers, work)


def peer_state_template() -> dict[str, Any]:
    """Our event's dict (`to_dict()`): the peer's state is `json.dumps` of one like it."""
    return make_event("template", 1).to_dict()


def peer_state(template: dict[str, Any], aggregate_id: str, version: int) -> bytes:
    """What the peer stores for one event: JSON of the fields of our event's `to_dict()`."""
    fields = {
        **template,
        "id": str(uuid.uuid4()),
        "aggregate_id": aggregate_id,
        "version": version,
        "timestamp": datetime.now(UTC).isoformat(),
        "metadata": metadata(version),
    }
    return json.dumps(fields).encode()


def run_peer(recorder: ApplicationRecorder, load: Workload, *, warm_up: int) -> float:
    """Events/s of a peer recorder, its StoredEvents built inside the timed loop.
    `warm_up` events are inserted first, untimed."""
    from eventsourcing.persistence import StoredEvent

    template = peer_state_template()

    def stored(originator: uuid.UUID, aggregate_id: str, version: int) -> StoredEvent:
        state = peer_state(template, aggregate_id, version)
        return StoredEvent(
            originator_id=originator, originator_version=version, topic="PlayerMoved", state=state
        )

    originators = [[uuid.uuid4() for _ in range(load.batch)] for _ in range(load.writers)]
    for chunk in warm_up_chunks(warm_up):
        recorder.insert_events([stored(uuid.uuid4(), f"warm-up-{i}", 1) for i in chunk])

    def work(worker: int) -> int:
        ids = originators[worker]
        for n in range(load.appends):
            recorder.insert_events(
                [stored(ids[i], aggregate(worker, i), n + 1) for i in range(load.batch)]
            )
        return load.per_writer

    return in_threads(load.writers, work)


@contextmanager
def our_postgres(url: str, writers: int) -> Iterator[EventStore]:
    with Schema(url) as schema:
        # All connections opened up front, as the peer's pool does: no growth while timed.
        store = PostgresEventStore(
            url, schema=schema.name, min_connections=writers, max_connections=writers
        )
        try:
            store.migrate()
            yield store
        finally:
            store.close()


@contextmanager
def peer_postgres(url: str, writers: int) -> Iterator[ApplicationRecorder]:
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    params = conninfo_to_dict(url)
    with Schema(url) as schema:
        datastore = PostgresDatastore(
            dbname=str(params.get("dbname", "")),
            host=str(params.get("host", "localhost")),
            port=str(params.get("port", "5432")),
            user=str(params.get("user", "")),
            password=str(params.get("password", "")),
            schema=schema.name,
            pool_size=writers,
        )
        try:
            # Its pool's connections opened up front, as ours are. (Its `pool_open_timeout`
            # would do it too, but then every append waits on the pool: concurrent ones trip
            # an assertion of psycopg_pool's.)
            datastore.pool.open(wait=True, timeout=30)
            recorder = PostgresApplicationRecorder(datastore)
            recorder.create_table()
            yield recorder
        finally:
            datastore.close()


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextmanager
def our_sqlite(directory: str) -> Iterator[EventStore]:
    path = Path(directory) / f"ours-{uuid.uuid4().hex[:8]}.db"
    store = open_store(f"sqlite:///{path}")
    try:
        store.migrate()
        yield store
    finally:
        store.close()
        remove_sqlite(path)


@contextmanager
def peer_sqlite(directory: str) -> Iterator[ApplicationRecorder]:
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

    path = Path(directory) / f"peer-{uuid.uuid4().hex[:8]}.db"
    datastore = SQLiteDatastore(str(path))
    try:
        recorder = SQLiteApplicationRecorder(datastore)
        recorder.create_table()
        yield recorder
    finally:
        datastore.close()
        remove_sqlite(path)


def peer_sqlite_settings(directory: str) -> str:
    """journal_mode and synchronous as the peer's SQLite recorder runs them."""
    from eventsourcing.sqlite import SQLiteDatastore

    path = Path(directory) / f"peer-{uuid.uuid4().hex[:8]}.db"
    datastore = SQLiteDatastore(str(path))
    try:
        with datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA journal_mode")
            journal = str(cursor.fetchone()[0])
            cursor.execute("PRAGMA synchronous")
            synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[cursor.fetchone()[0]]
        return f"journal_mode={journal}, synchronous={synchronous}"
    finally:
        datastore.close()
        remove_sqlite(path)


# Enough to fill SQLite's WAL past its autocheckpoint (1,000 pages) on both sides: the timed
# commits then rewrite a WAL file that has already grown, as in a long-running store. (While
# the file still grows, every fsync also flushes its new size: 2.6 ms instead of 0.4 ms per
# commit on this machine's disk, which would favour whichever side checkpoints first.)
SQLITE_WARM_UP = 10_000

OursFactory = Callable[[int], AbstractContextManager[EventStore]]
PeerFactory = Callable[[int], AbstractContextManager["ApplicationRecorder"]]

PEER_AIMS = {
    ("postgres", "4 threads x batches of 25"): 1.5,
    ("sqlite", "1 writer, single events"): 1.0,
    ("sqlite", "4 threads x batches of 25"): 1.0,
}


def run_peer_group(
    backend: str,
    ours: OursFactory,
    peer: PeerFactory,
    loads: list[Workload],
    *,
    rounds: int,
    warm_up: int,
) -> list[tuple[str, Workload, dict[str, float]]]:
    """Alternate peer, ours end to end and ours store only; medians of `rounds`."""
    rates: dict[str, dict[str, list[float]]] = {
        load.label: {"peer": [], "ours": [], "store only": [], "producer": []} for load in loads
    }
    for round_number in range(1, rounds + 1):
        for load in loads:
            with peer(load.writers) as recorder:
                peer_rate = run_peer(recorder, load, warm_up=warm_up)
            with ours(load.writers) as store:
                ours_rate = run_ours(store, load, prebuilt=False, warm_up=warm_up)
            with ours(load.writers) as store:
                store_rate = run_ours(store, load, prebuilt=True, warm_up=warm_up)
            with ours(load.writers) as store, EventProducer(store) as producer:
                producer_rate = run_ours(
                    store, load, prebuilt=False, warm_up=warm_up, producer=producer
                )
            measured = {
                "peer": peer_rate,
                "ours": ours_rate,
                "store only": store_rate,
                "producer": producer_rate,
            }
            for kind, rate in measured.items():
                rates[load.label][kind].append(rate)
            print(
                f"round {round_number} {backend:8} {load.label:26} ours {ours_rate:8,.0f}/s  "
                f"store only {store_rate:8,.0f}/s  producer {producer_rate:8,.0f}/s  "
                f"peer {peer_rate:8,.0f}/s"
            )
    return [
        (backend, load, {k: statistics.median(v) for k, v in rates[load.label].items()})
        for load in loads
    ]


def report_peer(results: list[tuple[str, Workload, dict[str, float]]], rounds: int) -> None:
    print("\n### Our store against eventsourcing's recorders (events/s)\n")
    print(
        "| backend | workload | ours end to end | ours store only | ours via EventProducer "
        "| eventsourcing | end to end / peer | store only / peer | via producer / peer "
        "| aim (end to end) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for backend, load, m in results:
        ratio = m["ours"] / m["peer"]
        aim = PEER_AIMS.get((backend, load.label))
        print(
            f"| {backend} | {load.label} | {m['ours']:,.0f} | {m['store only']:,.0f} "
            f"| {m['producer']:,.0f} | {m['peer']:,.0f} | {ratio:.2f}x "
            f"| {m['store only'] / m['peer']:.2f}x | {m['producer'] / m['peer']:.2f}x "
            f"| {verdict(ratio, aim) if aim else ''} |"
        )
    print(f"\nmedians of {rounds} rounds")


# -- entry point ----------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL URL [env EVENTSTORE_DATABASE_URL]"
    )
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated groups to run, of: {', '.join(GROUPS)} (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and 1 round: a smoke run, not figures"
    )
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (quick: 1)")
    parser.add_argument("--repeat", type=int, default=None, help="event: best of (default 20)")
    parser.add_argument("--single-events", type=int, default=None, help="raw: 1 writer")
    parser.add_argument("--events-per-writer", type=int, default=None, help="raw: 16 writers")
    parser.add_argument("--batches", type=int, default=None, help="raw: batches of 100")
    parser.add_argument("--peer-single", type=int, default=None, help="peer (a): events")
    parser.add_argument("--peer-batches", type=int, default=None, help="peer (b): per thread")
    parser.add_argument("--sqlite-dir", default=None, help="where the SQLite files go")
    args = parser.parse_args()
    full = {
        "rounds": 3,
        "repeat": 20,
        "single_events": 3000,
        "events_per_writer": 600,
        "batches": 300,
        "peer_single": 2000,
        "peer_batches": 100,
    }
    quick = {
        "rounds": 1,
        "repeat": 8,
        "single_events": 300,
        "events_per_writer": 40,
        "batches": 20,
        "peer_single": 300,
        "peer_batches": 10,
    }
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}: choose from {', '.join(GROUPS)}")
    if {"raw", "peer-postgres"} & set(args.groups):
        args.database_url = args.database_url or Settings().database_url
        if not args.database_url or not args.database_url.startswith("postgres"):
            parser.error("give --database-url postgresql://... (or set EVENTSTORE_DATABASE_URL)")
    if {"peer-postgres", "peer-sqlite"} & set(args.groups) and find_spec("eventsourcing") is None:
        parser.error("the peer groups need the bench extra: pip install -e '.[dev,bench]'")
    return args


def peer_workloads(args: argparse.Namespace) -> list[Workload]:
    return [
        Workload("1 writer, single events", 1, args.peer_single, 1),
        Workload("4 threads x batches of 25", 4, args.peer_batches, 25),
    ]


def main() -> None:
    args = parse_args()
    print(f"{'quick run: small sizes, not figures; ' if args.quick else ''}groups: {args.groups}")
    if "event" in args.groups:
        report_event_costs(event_costs(args.repeat), args.repeat)
    if {"raw", "peer-postgres"} & set(args.groups):
        probe = open_store(args.database_url, schema="bench_probe")
        assert isinstance(probe, PostgresEventStore)
        probe.close()
    if "raw" in args.groups:
        print()
        run_raw(args.database_url, args)
    results: list[tuple[str, Workload, dict[str, float]]] = []
    loads = peer_workloads(args)
    if "peer-postgres" in args.groups:
        print()
        url = args.database_url
        results += run_peer_group(
            "postgres",
            lambda writers: our_postgres(url, writers),
            lambda writers: peer_postgres(url, writers),
            loads,
            rounds=args.rounds,
            warm_up=1,
        )
    if "peer-sqlite" in args.groups:
        print()
        with tempfile.TemporaryDirectory(dir=args.sqlite_dir, prefix="bench-sqlite-") as folder:
            print(
                f"SQLite files in {folder}; the peer's recorder runs with its defaults: "
                f"{peer_sqlite_settings(folder)} (ours: journal_mode=wal, synchronous=FULL)"
            )
            results += run_peer_group(
                "sqlite",
                lambda _: our_sqlite(folder),
                lambda _: peer_sqlite(folder),
                loads,
                rounds=args.rounds,
                warm_up=SQLITE_WARM_UP,
            )
    if results:
        event = make_event(aggregate(0, 0), 1)
        state = peer_state(event.to_dict(), event.aggregate_id, 1)
        print(
            f"\nJSON per event: json.dumps(event.to_dict()) {len(json.dumps(event.to_dict()))} "
            f"bytes; the peer's state {len(state)} bytes (same keys; timestamp as isoformat())"
        )
        report_peer(results, args.rounds)


if __name__ == "__main__":
    main()
