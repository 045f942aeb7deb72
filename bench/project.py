"""Projection figures against the local PostgreSQL and Kafka, with baselines measured in the
same run. Each group gets a throw-away PostgreSQL schema and its own topic prefix (topics and
consumer groups are deleted afterwards).

    make bench-project                                  (services up, full run)
    make bench-project BENCH_ARGS="--quick"             (small sizes: a smoke run)
    python bench/project.py --database-url postgresql://... --kafka-bootstrap 127.0.0.1:59092
    python bench/project.py ... --only rebuild --profile

The projection (`players`, below): documents keyed by player, three handlers (PlayerJoined,
PlayerMoved, and one for ItemPickedUp and ItemDropped), tracking Player aggregates only. The
events come from the demo's `World` (2,000 players, 400 items; a tick moves about a third of
the players, some pick up or drop items), stored through `store.append_events`, one tick per
batch, until --events Player events are stored (Item and World events are stored besides).
Every build is checked: one document per player, nothing parked or skipped, and each event
applied once (each document counts the events applied to it). Before reading the global log,
the benchmark waits until its horizon has passed every stored event (an open transaction of
another session on the same PostgreSQL holds it back) and prints how long it waited. Each
figure line ends with the machine's 1-minute load average (ours included).

drain    The Player events are published with `KafkaPublisher` to one topic of --partitions
         partitions (default 4, so that two runners share them evenly), read back from the
         store in log order as the relay would send them. Then:
         (a) a bare kafka-python `KafkaConsumer` (assigned every partition, no group) that
             only `json.loads` every record's value: the baseline;
         (b) ONE runner process (`eventstore project project:DRAIN_ONE --source kafka`);
         (c) TWO runner processes in one consumer group (`project:DRAIN_TWO`).
         The runners' projection is registered with its hand-off marked an hour before the
         records, so they skip the catch-up from the store and every event comes through
         Kafka. A run is timed from the moment every runner holds partitions (the group is
         stable and all partitions are assigned; polled with `describe_groups`) to the moment
         every event is applied (the sum of the projection's checkpoint versions, polled every
         50 ms, equals the number of events); the bare consumer from its `assign()` to its
         last record. Events/s, (b)/(a) and (c)/(b); also the wall time from the processes'
         launch (Python start, catch-up check, group join, rebalances).
         --profile adds an untimed pass: a `ProjectionRunner` in this process whose Kafka
         thread runs under cProfile for --profile-events events; top entries are printed.
latency  An `eventstore relay` process and one runner process (`--source kafka`), then the
         same with the store-tail source (`--source store`, no relay). 20 threads append
         single PlayerMoved events through `EventProducer` (as game services write) at
         --rate events/s in all for --seconds, to 100 players, each append timestamped when
         it returns (committed). A reader thread polls the read model as a reader would
         (`store.list_documents` of all 100 documents, about every millisecond) and notes,
         for every version that appears, the time the poll started: latency = that time
         minus the append's. Resolution: one poll cycle (printed). p50, p99, max, min (a
         negative min: an appending thread noted its commit late, starved of CPU).
rebuild  The projection is first built by `eventstore.consumers.catch_up` (what a new
         projection's first start does), then rebuilt beside that active generation by
         `eventstore.consumers.rebuild` (a new generation, then the switch), each over the whole
         stored log (events/s counted over every event read, of every type). Baseline:
         `store.read_all` paging alone (pages of 1,000, as both read) over the same events,
         measured before and after (after an untimed first pass: the first read of new rows
         also writes their hint bits); ratios are against their mean. --profile also profiles a
         second rebuild.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import psycopg
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from append import Schema
from eventstore import Event, EventProducer, EventStore, open_store
from eventstore.config import Settings
from eventstore.consumers import (
    Applier,
    Documents,
    KafkaSource,
    Projection,
    ProjectionRunner,
    catch_up,
    rebuild,
)
from eventstore.consumers._kafka import group_id
from eventstore.consumers._rebuild import CATCH_UP_BATCH
from eventstore.demo.world import ZONES, World
from eventstore.producer import KafkaPublisher, events_topic

BENCH = Path(__file__).resolve().parent
GROUPS = ("drain", "latency", "rebuild")
BATCH = 500
"""Events per runner batch (the CLI's default --batch-size); the bare consumer polls as many."""
LATENCY_PLAYERS = 100
APPENDERS = 20
POLL_PAUSE = 0.001
PROCESS_TIMEOUT = 900.0


# -- the projection ---------------------------------------------------------------------------


def players(name: str) -> Projection:
    """Where each player is and what it carries: one document per player, three handlers.
    `applied` counts the events applied to the document (the benchmark checks that it sums
    to the events on the topic: each applied once)."""
    projection = Projection(name, aggregate_types=["Player"])

    @projection.on("PlayerJoined")
    def joined(event: Event, documents: Documents) -> None:
        documents.put(
            event.aggregate_id,
            {
                "zone": event.payload["zone"],
                "xy": None,
                "items": [],
                "version": event.version,
                "applied": 1,
            },
        )

    @projection.on("PlayerMoved")
    def moved(event: Event, documents: Documents) -> None:
        def move(doc: dict[str, Any]) -> None:
            doc.update(
                zone=event.payload["to_zone"],
                xy=[event.payload["x"], event.payload["y"]],
                version=event.version,
                applied=doc["applied"] + 1,
            )

        documents.update(event.aggregate_id, move)

    @projection.on("ItemPickedUp", "ItemDropped")
    def carried(event: Event, documents: Documents) -> None:
        def carry(doc: dict[str, Any]) -> None:
            items = set(doc.get("items", []))
            if event.event_type == "ItemPickedUp":
                items.add(event.payload["item_id"])
            else:
                items.discard(event.payload["item_id"])
            doc.update(items=sorted(items), version=event.version, applied=doc["applied"] + 1)

        documents.update(event.aggregate_id, carry)

    return projection


# What the runner processes load (`eventstore project project:NAME`, bench/ on PYTHONPATH).
DRAIN_ONE = players("drain-one")
DRAIN_TWO = players("drain-two")
LIVE = players("live")


# -- sizes, test beds, processes --------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    events: int
    players: int
    partitions: int
    rate: int
    seconds: float
    profile_events: int


@dataclass
class Bed:
    """One group's schema, store and topic prefix."""

    url: str
    kafka: str | None
    schema: Schema
    store: EventStore
    prefix: str
    logs: Path
    groups: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """The environment of this bed's `eventstore` processes."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}
        env |= {
            "EVENTSTORE_DATABASE_URL": self.url,
            "EVENTSTORE_DATABASE_SCHEMA": self.schema.name,
            "EVENTSTORE_TOPIC_PREFIX": self.prefix,
            "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH), env.get("PYTHONPATH")) if p),
        }
        if self.kafka:
            env["EVENTSTORE_KAFKA_BOOTSTRAP_SERVERS"] = self.kafka
        return env

    def applied(self, conn: psycopg.Connection[Any], projection: str) -> int:
        """Events the projection applied: its checkpoints' versions summed (every tracked
        aggregate's history starts at version 1 and all of it is applied in order)."""
        row = conn.execute(
            "SELECT coalesce(sum(version), 0) FROM projection_checkpoints WHERE projection = %s",
            (projection,),
        ).fetchone()
        return int(row[0]) if row else 0


def check_model(store: EventStore, projection: str, players_: int, events: int) -> None:
    """The read model holds every player, no failures, and each event applied once."""
    counts = store.projection_counts(projection)
    applied, after = 0, ""
    while page := store.list_documents(projection, after, 1000):
        applied += sum(int(doc["applied"]) for _, doc in page)
        after = page[-1][0]
    if counts.documents != players_ or counts.parked or counts.skipped or applied != events:
        raise RuntimeError(
            f"projection {projection}: unexpected read model ({counts}; {applied:,} events "
            f"applied to documents, {events:,} expected)"
        )


@contextmanager
def bed(url: str, kafka: str | None) -> Iterator[Bed]:
    with Schema(url) as schema, tempfile.TemporaryDirectory(prefix="bench-project-") as logs:
        store = open_store(url, schema=schema.name)
        made = Bed(url, kafka, schema, store, f"bench_{uuid.uuid4().hex[:8]}", Path(logs))
        try:
            store.migrate()
            yield made
        finally:
            store.close()
            if kafka:
                drop_kafka(kafka, made.prefix, made.groups)


def drop_kafka(kafka: str, prefix: str, groups: list[str]) -> None:
    """Delete the bed's topics and consumer groups (best effort: a broker that is down, as
    the fault tests make it, leaves them behind with a warning)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=kafka, client_id="bench-project")
        try:
            topics = [t for t in admin.list_topics() if t.startswith(prefix + ".")]
            if topics:
                admin.delete_topics(topics)
            if groups:
                admin.delete_groups(groups)
        finally:
            admin.close()
    except KafkaError as error:
        print(f"could not delete the topics of {prefix}: {error!r}", file=sys.stderr)


def eventstore_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "eventstore.cli", *args, "--log-level", "WARNING"]


def runner_command(spec: str, source: str) -> list[str]:
    return eventstore_command("project", spec, "--source", source, "--batch-size", str(BATCH))


@contextmanager
def processes(made: Bed, commands: Sequence[list[str]]) -> Iterator[Callable[[], None]]:
    """Start the commands; yields a check that raises if one of them exited. They get
    SIGTERM (a graceful stop) at the end."""
    started: list[tuple[subprocess.Popen[bytes], list[str], Path, IO[bytes]]] = []
    env = made.env()
    try:
        for command in commands:
            path = made.logs / f"{uuid.uuid4().hex[:8]}.log"
            log: IO[bytes] = path.open("wb")
            child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
            started.append((child, command, path, log))

        def check() -> None:
            for child, command, path, _ in started:
                if child.poll() is not None:
                    tail = path.read_text(errors="replace")[-3000:]
                    shown = " ".join(command[1:])
                    raise RuntimeError(f"{shown} exited with {child.returncode}:\n{tail}")

        yield check
    finally:
        for child, _, _, _ in started:
            child.send_signal(signal.SIGTERM)
        for child, _, _, log in started:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            log.close()


def wait_until(done: Callable[[], bool], what: str, check: Callable[[], None]) -> None:
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while not done():
        check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.05)


def store_world(store: EventStore, player_events: int, players_: int) -> int:
    """Store the demo world's events until `player_events` Player events are stored, one tick
    per `append_events`; returns how many events were stored in all."""
    world = World(f"w{uuid.uuid4().hex[:6]}", players=players_, items=max(1, players_ // 5))
    stored = counted = 0
    batch = world.genesis()
    while batch:
        kept: list[Event] = []
        for event in batch:
            if event.aggregate_type == "Player":
                if counted == player_events:
                    break
                counted += 1
            kept.append(event)
        store.append_events(kept)
        stored += len(kept)
        batch = world.tick() if counted < player_events else []
    return stored


def settle(store: EventStore) -> None:
    """Wait until every stored event is readable from the global log. The horizon is the
    cluster's oldest running transaction: other sessions on the same PostgreSQL (test suites
    run beside this benchmark) can hold it back."""
    started = time.perf_counter()
    while store.log_horizon().events_behind:
        if time.perf_counter() - started > PROCESS_TIMEOUT:
            raise TimeoutError("the global log's horizon did not reach the stored events")
        time.sleep(0.1)
    waited = time.perf_counter() - started
    if waited > 0.5:
        print(f"       (waited {waited:.1f} s for another session's transaction to end)")


def load() -> str:
    """The machine's 1-minute load average (ours included: a runner, PostgreSQL, Kafka)."""
    return f"[load {os.getloadavg()[0]:.1f}]"


def rate_of(events: int, seconds: float) -> str:
    return f"{events / seconds:,.0f}/s"


# -- drain ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drain:
    events: int
    """Events applied (or decoded) in the timed window."""
    seconds: float
    """The timed window (see the module's comment)."""
    launched_seconds: float
    """From the consumer's creation or the processes' launch to the last event."""
    total: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def describe(self) -> str:
        return (
            f"{self.rate:,.0f}/s ({self.events:,} events in {self.seconds:.1f} s; "
            f"{self.total / self.launched_seconds:,.0f}/s counted from launch, "
            f"{self.launched_seconds:.1f} s)"
        )


def publish_players(made: Bed, partitions: int) -> tuple[int, float]:
    """Publish every stored Player event, in log order; returns (events, seconds)."""
    assert made.kafka is not None
    publisher = KafkaPublisher(made.kafka, topic_prefix=made.prefix, partitions=partitions)
    sent, position = 0, 0
    started = time.perf_counter()
    try:
        publisher.ensure_topics(["Player"])
        while page := made.store.read_all(position, 2000):
            position = page[-1].position or position
            chunk = [e for e in page if e.aggregate_type == "Player"]
            publisher.publish(chunk)
            sent += len(chunk)
    finally:
        publisher.close()
    return sent, time.perf_counter() - started


def bare_consumer(kafka: str, topic: str, expected: int) -> Drain:
    created = time.perf_counter()
    consumer = KafkaConsumer(
        bootstrap_servers=kafka, enable_auto_commit=False, client_id="bench-bare"
    )
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        started = time.perf_counter()
        decoded = 0
        while decoded < expected:
            for records in consumer.poll(timeout_ms=500, max_records=BATCH).values():
                for record in records:
                    json.loads(record.value)
                    decoded += 1
            if time.perf_counter() - started > PROCESS_TIMEOUT:
                raise TimeoutError(f"the bare consumer decoded {decoded} of {expected} records")
        ended = time.perf_counter()
    finally:
        consumer.close()
    return Drain(decoded, ended - started, ended - created, decoded)


def holding(admin: KafkaAdminClient, group: str, members: int, partitions: int) -> bool:
    """Whether the group is stable with `members` members that hold every partition, each
    member some."""
    found = admin.describe_groups([group]).get(group) or {}
    if found.get("group_state") != "Stable" or len(found.get("members", [])) != members:
        return False
    held = []
    for member in found["members"]:
        assignment = member.get("member_assignment")
        if not isinstance(assignment, dict):
            return False
        held.append(sum(len(t["partitions"]) for t in assignment["assigned_partitions"]))
    return min(held) > 0 and sum(held) == partitions


def mark_handoff(store: EventStore, projection: Projection, at: datetime) -> None:
    """Register the projection as if its catch-up had ended at `at`: runners then skip the
    catch-up and start partitions the group never committed at `at`."""
    store.register_projection(projection.name, projection.version)
    with store.projection_transaction(projection.name) as tx:
        tx.mark_handoff(at)


def runner_drain(
    made: Bed, projection: Projection, runners: int, expected: int, sizes: Sizes, at: datetime
) -> Drain:
    assert made.kafka is not None
    mark_handoff(made.store, projection, at)
    group = group_id(made.prefix, projection.name)
    made.groups.append(group)
    admin = KafkaAdminClient(bootstrap_servers=made.kafka, client_id="bench-project-watch")
    command = runner_command(f"project:{projection.name.upper().replace('-', '_')}", "kafka")
    try:
        with made.schema.connect() as conn:
            launched = time.perf_counter()
            with processes(made, [command] * runners) as check:
                ready: tuple[float, int] | None = None
                deadline = launched + PROCESS_TIMEOUT
                while True:
                    if ready is None and holding(admin, group, runners, sizes.partitions):
                        ready = (time.perf_counter(), made.applied(conn, projection.name))
                    if made.applied(conn, projection.name) >= expected:
                        ended = time.perf_counter()
                        break
                    check()
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"{runners} runner(s) did not drain the topic")
                    time.sleep(0.05)
    finally:
        admin.close()
    check_model(made.store, projection.name, sizes.players, expected)
    started, before = ready if ready is not None else (launched, 0)
    return Drain(expected - before, ended - started, ended - launched, expected)


class ProfiledKafkaSource(KafkaSource):
    """The Kafka source with each projection's consuming thread under cProfile (cProfile
    only sees the thread that enables it)."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.profile = cProfile.Profile()

    def _run_one(self, runner: ProjectionRunner, projection: Projection, stop: Any) -> None:
        self.profile.enable()
        try:
            super()._run_one(runner, projection, stop)
        finally:
            self.profile.disable()


def profiled_drain(made: Bed, at: datetime, events: int) -> cProfile.Profile:
    """A runner in this process, its Kafka thread profiled, until `events` are applied."""
    assert made.kafka is not None
    projection = players("drain-profiled")
    mark_handoff(made.store, projection, at)
    made.groups.append(group_id(made.prefix, projection.name))
    source = ProfiledKafkaSource(made.kafka, topic_prefix=made.prefix)
    runner = ProjectionRunner(made.store, [projection], source=source, batch_size=BATCH)
    stop = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(stop)
        except BaseException as error:
            failed.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def check() -> None:
        if failed:
            raise failed[0]

    try:
        with made.schema.connect() as conn:
            wait_until(lambda: made.applied(conn, projection.name) >= events, "profile", check)
    finally:
        stop.set()
        thread.join(timeout=60)
    return source.profile


def drain(url: str, kafka: str, sizes: Sizes, profile: bool) -> None:
    with bed(url, kafka) as made:
        started = time.perf_counter()
        stored = store_world(made.store, sizes.events, sizes.players)
        print(
            f"drain: stored {stored:,} events ({sizes.events:,} of Players, {sizes.players:,} "
            f"players) in {time.perf_counter() - started:.1f} s"
        )
        at = datetime.now(UTC) - timedelta(hours=1)
        settle(made.store)
        sent, seconds = publish_players(made, sizes.partitions)
        if sent != sizes.events:
            raise RuntimeError(f"published {sent:,} events, expected {sizes.events:,}")
        print(
            f"       published the {sent:,} Player events to {sizes.partitions} partitions "
            f"at {rate_of(sent, seconds)}"
        )
        topic = events_topic(made.prefix, "Player")
        bare = bare_consumer(kafka, topic, sent)
        print(f"(a) bare KafkaConsumer, json.loads of every record: {bare.describe()} {load()}")
        one = runner_drain(made, DRAIN_ONE, 1, sent, sizes, at)
        print(
            f"(b) one runner process: {one.describe()}; (b)/(a) {one.rate / bare.rate:.2f}x "
            f"(aim >= 0.5x and >= 10,000/s) {load()}"
        )
        two = runner_drain(made, DRAIN_TWO, 2, sent, sizes, at)
        print(
            f"(c) two runner processes, one group: {two.describe()}; "
            f"(c)/(b) {two.rate / one.rate:.2f}x {load()}"
        )
        if profile:
            stats = profiled_drain(made, at, min(sizes.profile_events, sent))
            print_profile(
                f"cProfile of a runner's Kafka thread ({min(sizes.profile_events, sent):,} "
                "events, in this process)",
                stats,
            )


# -- latency ----------------------------------------------------------------------------------


@dataclass
class Watch:
    """Polls the read model as a reader would; notes when each (player, version) appeared."""

    store: EventStore
    projection: str
    seen: dict[str, int] = field(default_factory=dict)
    visible: dict[tuple[str, int], float] = field(default_factory=dict)
    polls: int = 0
    polling: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def poll(self) -> None:
        started = time.perf_counter()
        page = self.store.list_documents(self.projection, "", 1000)
        for key, doc in page:
            version = int(doc["version"])
            for reached in range(self.seen.get(key, 0) + 1, version + 1):
                self.visible[(key, reached)] = started
            self.seen[key] = max(version, self.seen.get(key, 0))
        self.polls += 1

    def run(self) -> None:
        began = time.perf_counter()
        while not self.stop.is_set():
            self.poll()
            time.sleep(POLL_PAUSE)
        self.polling = time.perf_counter() - began

    def at_least(self, keys: Sequence[str], version: int) -> bool:
        return all(self.seen.get(k, 0) >= version for k in keys)


@dataclass(frozen=True)
class Latency:
    samples: list[float]
    expected: int
    appended_rate: float
    poll_cycle: float

    def describe(self) -> str:
        ms = sorted(s * 1000 for s in self.samples)
        p50 = ms[len(ms) // 2]
        p99 = ms[max(0, int(len(ms) * 0.99) - 1)]
        return (
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms, min {ms[0]:.1f} ms "
            f"({len(ms):,} of {self.expected:,} events seen; appended at "
            f"{self.appended_rate:,.0f}/s; poll cycle {self.poll_cycle * 1000:.1f} ms)"
        )


def moved(player: str, version: int) -> Event:
    x = float(version % 500)
    return Event.new(
        aggregate_type="Player",
        aggregate_id=player,
        event_type="PlayerMoved",
        version=version,
        payload={
            "from_zone": ZONES[version % 6],
            "to_zone": ZONES[(version + 1) % 6],
            "x": x,
            "y": -x,
        },
        metadata={"source": "bench"},
    )


def append_paced(
    producer: EventProducer, mine: list[str], rate: float, count: int, start_version: int
) -> dict[tuple[str, int], float]:
    """Append `count` events round-robin over `mine` at `rate`/s; commit times by key."""
    committed: dict[tuple[str, int], float] = {}
    interval = 1.0 / rate
    started = time.perf_counter()
    for n in range(count):
        pause = started + n * interval - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        player = mine[n % len(mine)]
        version = start_version + n // len(mine)
        producer.publish(moved(player, version))
        committed[(player, version)] = time.perf_counter()
    return committed


def latency(url: str, kafka: str, sizes: Sizes, source: str) -> Latency:
    with bed(url, kafka) as made:
        store = made.store
        keys = [f"lat-{n:03d}" for n in range(LATENCY_PLAYERS)]
        store.append_events(
            [
                Event.new(
                    aggregate_type="Player",
                    aggregate_id=key,
                    event_type="PlayerJoined",
                    version=1,
                    payload={"name": key, "zone": ZONES[0]},
                )
                for key in keys
            ]
        )
        commands = [runner_command("project:LIVE", source)]
        if source == "kafka":
            publisher = KafkaPublisher(kafka, topic_prefix=made.prefix, partitions=sizes.partitions)
            publisher.ensure_topics(["Player"])
            publisher.close()
            made.groups.append(group_id(made.prefix, LIVE.name))
            commands.append(eventstore_command("relay"))
        watch = Watch(store, LIVE.name)
        poller = threading.Thread(target=watch.run, daemon=True)
        with processes(made, commands) as check, EventProducer(store) as producer:
            poller.start()
            try:
                wait_until(lambda: watch.at_least(keys, 1), "the runner's catch-up", check)
                for key in keys:  # warm-up, untimed: the live path is up end to end
                    producer.publish(moved(key, 2))
                wait_until(lambda: watch.at_least(keys, 2), "the warm-up events", check)
                total = int(sizes.rate * sizes.seconds)
                committed: dict[tuple[str, int], float] = {}
                threads = []
                began = time.perf_counter()
                for n in range(APPENDERS):

                    def work(mine: list[str] = keys[n::APPENDERS]) -> None:
                        committed.update(
                            append_paced(
                                producer, mine, sizes.rate / APPENDERS, total // APPENDERS, 3
                            )
                        )

                    threads.append(threading.Thread(target=work))
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                appended = len(committed) / (time.perf_counter() - began)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not all(
                    k in watch.visible for k in committed
                ):
                    time.sleep(0.05)
            finally:
                watch.stop.set()
                poller.join()
        samples = [watch.visible[k] - t for k, t in committed.items() if k in watch.visible]
        return Latency(samples, total, appended, watch.polling / max(1, watch.polls))


# -- rebuild ----------------------------------------------------------------------------------


def read_everything(store: EventStore) -> tuple[int, float]:
    """Page through the whole log as a rebuild does; (events, seconds)."""
    settle(store)
    started = time.perf_counter()
    position, events = 0, 0
    while page := store.read_all(position, CATCH_UP_BATCH):
        position = page[-1].position or position
        events += len(page)
    return events, time.perf_counter() - started


def rebuild_group(url: str, sizes: Sizes, profile: bool) -> None:
    with bed(url, None) as made:
        store = made.store
        stored = store_world(store, sizes.events, sizes.players)
        read_everything(store)  # untimed: the first read of new rows also sets their hint bits
        before, before_s = read_everything(store)
        projection = players("rebuilt")
        store.register_projection(projection.name, projection.version)
        applier = Applier(store, projection)
        settle(store)
        started = time.perf_counter()
        catch_up(applier, generation=None, after=0)
        first = time.perf_counter() - started
        check_model(store, projection.name, sizes.players, sizes.events)
        settle(store)
        started = time.perf_counter()
        rebuild(store, projection, applier)
        seconds = time.perf_counter() - started
        check_model(store, projection.name, sizes.players, sizes.events)
        after, after_s = read_everything(store)
        assert before == after == stored, (before, after, stored)
        paging = statistics.mean([before / before_s, after / after_s])
        print(
            f"rebuild: {stored:,} stored events ({sizes.events:,} of Players); read_all paging "
            f"alone {rate_of(before, before_s)} before and {rate_of(after, after_s)} after "
            f"{load()}"
        )
        print(
            f"    first catch-up of the new projection (`catch_up`): {rate_of(stored, first)} "
            f"({first:.1f} s), ratio {stored / first / paging:.2f}x"
        )
        print(
            f"    rebuild beside that active generation (`rebuild`): {rate_of(stored, seconds)} "
            f"({seconds:.1f} s), ratio {stored / seconds / paging:.2f}x (aim >= 0.5x) {load()}"
        )
        if profile:
            stats = cProfile.Profile()
            stats.runcall(rebuild, store, projection, applier)
            print_profile("cProfile of a second rebuild (in this process)", stats)


# -- profiles ---------------------------------------------------------------------------------


def where(key: tuple[str, int, str]) -> str:
    path, line, name = key
    for marker in ("site-packages/", "src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path}:{line})" if line else name


def print_profile(title: str, profile: cProfile.Profile, top: int = 15) -> None:
    stats = pstats.Stats(profile)
    entries: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(e[2] for e in entries.values()) or 1.0
    print(f"    {title}: {total:.1f} s in all")
    print("    own time:")
    for key, (_, calls, own, _, _) in sorted(entries.items(), key=lambda i: -i[1][2])[:top]:
        print(f"      {own:7.2f} s {own / total:5.1%} {calls:>9,} calls  {where(key)}")
    print("    cumulative (eventstore and kafka functions):")
    ours = [
        (key, e)
        for key, e in entries.items()
        if "eventstore/" in key[0] or "kafka/" in key[0] or "psycopg/" in key[0]
    ]
    for key, (_, calls, _, cum, _) in sorted(ours, key=lambda i: -i[1][3])[:top]:
        print(f"      {cum:7.2f} s {cum / total:5.1%} {calls:>9,} calls  {where(key)}")


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    settings = Settings()
    parser.add_argument("--database-url", default=settings.database_url)
    parser.add_argument("--kafka-bootstrap", default=settings.kafka_bootstrap_servers)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"groups of {', '.join(GROUPS)}")
    parser.add_argument("--events", type=int, help="Player events (default 200,000; quick 20,000)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, help="latency run (default 10; quick 3)")
    parser.add_argument("--profile", action="store_true", help="also profile (drain, rebuild)")
    parser.add_argument("--profile-events", type=int, default=50_000)
    args = parser.parse_args()
    only = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(only) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    if not args.database_url or not args.database_url.startswith("postgres"):
        parser.error("give --database-url postgresql://...")
    if {"drain", "latency"} & set(only) and not args.kafka_bootstrap:
        parser.error("give --kafka-bootstrap host:port (or --only rebuild)")
    quick = args.quick
    sizes = Sizes(
        events=args.events or (20_000 if quick else 200_000),
        players=500 if quick else 2_000,
        partitions=args.partitions,
        rate=args.rate,
        seconds=args.seconds or (3.0 if quick else 10.0),
        profile_events=min(args.profile_events, 10_000) if quick else args.profile_events,
    )
    url, kafka = args.database_url, args.kafka_bootstrap
    print(f"bench/project.py {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores")
    if "drain" in only:
        drain(url, kafka, sizes, args.profile)
    if "latency" in only:
        for source in ("kafka", "store"):
            found = latency(url, kafka, sizes, source)
            through = "relay + Kafka runner" if source == "kafka" else "store-tail runner"
            aim = " (aim p50 < 25 ms, p99 < 100 ms)" if source == "kafka" else ""
            print(f"latency, append commit to visible in the read model, {through}:")
            print(f"    {found.describe()}{aim} {load()}")
    if "rebuild" in only:
        rebuild_group(url, sizes, args.profile)


if __name__ == "__main__":
    main()
