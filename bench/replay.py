"""Replay figures against the local PostgreSQL (and SQLite, and Kafka for the control topic),
with baselines measured in the same run. Every group gets throw-away PostgreSQL schemas (ours
and the peer's) or SQLite files in a temporary directory; the control group gets its own topic
prefix (its topics and consumer group are deleted afterwards).

    make bench-replay                                    (services up, .[dev,bench], full run)
    make bench-replay BENCH_ARGS="--quick"               (small sizes, 1 round: a smoke run)
    python bench/replay.py --database-url postgresql://... --kafka-bootstrap 127.0.0.1:59092
    python bench/replay.py ... --only get,world --profile

The aggregate (groups get, snapshots and control): a player that joins (version 1) and then
moves (every later version: a zone, x and y). Our side folds it with `REDUCERS` below (zone,
x, y and a moves counter, changed in place); the peer's side is an `eventsourcing` Aggregate
whose `@event("Moved")` method makes the same change to its attributes. Histories are
appended with `append_events` in batches of at most 1,000 events, versions consecutive from 1.

get        Load one aggregate of --events (1,000) events and fold it, --gets times per round,
           the contenders taking turns call by call (a burst of load from elsewhere on the
           machine falls on all of them): ours
           `Replayer(store, REDUCERS, snapshots=False).replay_to(id)`, the
           peer's `Application.repository.get(id)` (eventsourcing's POSTGRES persistence
           module, its tables in a schema of its own, no snapshotting, no aggregate cache).
           Gets/s; ours / peer on PostgreSQL (aim >= 2x); the same on SQLite (each its own
           file), for information. Floor, for where the time goes: psycopg alone fetching the
           same 1,000 rows (our columns; JSON decoded by psycopg, and JSON left as text), no
           Event built. Every side is checked to reach the same state; one untimed get each
           first.
snapshots  One aggregate of --snapshot-events (10,000) events, reducer snapshots every 100:
           one replay with snapshots (untimed) stores them, then `replay_to` the latest version
           with `snapshots=True` (it starts from the snapshot at the head) against
           `snapshots=False` (it folds every event), --repeat each per round, taking turns.
           Aim: >= 10x faster with them. Also, for information, to the version just below
           the head (99 events folded after the snapshot below it). PostgreSQL, and SQLite for
           information.
control    An `eventstore replay-worker` process (this module's REDUCERS, its own topic
           prefix; the worker's replayer keeps snapshots on, as shipped) answering replay
           requests for --control-players players of 250 events each. The client waits for
           a ping answer (a worker silent for 30 s is started again, and the restart is
           printed: see RESULTS.md), replays every player once (untimed: snapshots and look-ups
           warm), then sends --requests replay requests paced at --rate/s (open loop: each is
           sent on schedule from a pool of threads, whatever the ones before it are doing).
           Latency: `ReplayClient.send` call to reply in hand; p50 and p99 (aims < 20 ms and
           < 100 ms), split at the worker's `answered_at` (same machine clock) into request
           leg + replay and reply leg. Baseline: the same requests' `replay_to` run directly
           in this process on the same store. Then --burst requests sent at once: the
           worker's capacity (requests answered per second), against the paced rate.
world      The demo's world (`World(..., players=300, items=120)`, 60 ticks, one
           `append_events` per tick) and its reducers (`eventstore.demo.reducers.ALL`, with
           snapshots as `eventstore world` runs them): `world_at(head, aggregate_type="Player",
           limit=1000)` against listing the same players and replaying each with
           `replay_to(id, position=cut)`; and `iter_world` over every type against the same
           one by one. Seconds (3 calls of each per round, taking turns); one by one / world_at.
           Aim: world_at well under a second for 300 players. PostgreSQL and SQLite. Results
           are checked equal; one untimed pass of each first.

--profile adds cProfile top entries (this process) of our get and of world_at on PostgreSQL.
Each group's first line ends with the machine's 1-minute load average.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))

from append import Schema, remove_sqlite, verdict
from eventstore import Event, EventStore, open_store
from eventstore.config import Settings
from eventstore.demo.reducers import ALL as DEMO_REDUCERS
from eventstore.demo.world import ZONES, World
from eventstore.errors import RequestTimeoutError
from eventstore.replay import Reducer, Replayer, ReplayResult
from eventstore.replay._kafka import worker_group
from eventstore.store import AggregateRef
from project import drop_kafka, load, print_profile, settle

BENCH = Path(__file__).resolve().parent
GROUPS = ("get", "snapshots", "control", "world")
BATCH = 1000
"""Most events per `append_events`."""
CONTROL_EVENTS = 250
"""Events of each player the control group replays (a snapshot at 200, 50 events after it)."""
SENDERS = 200
"""Threads sending control requests (enough that none waits for a free one: the latest send
is printed against its schedule)."""
WORKER_STARTS = 5
WORKER_PATIENCE = 30.0
"""Seconds a new worker gets to answer a ping (it joins its group in 1-3 s here)."""


# -- the aggregate and its reducer ------------------------------------------------------------

State = dict[str, Any]

PLAYER = Reducer(
    "Player",
    version=1,
    initial={"name": None, "zone": None, "x": 0.0, "y": 0.0, "moves": 0},
    snapshot_every=100,
)


@PLAYER.on("PlayerJoined")
def _joined(state: State, event: Event) -> State:
    state.update(name=event.payload["name"], zone=event.payload["zone"])
    return state


@PLAYER.on("PlayerMoved")
def _moved(state: State, event: Event) -> State:
    p = event.payload
    state.update(zone=p["zone"], x=p["x"], y=p["y"], moves=state["moves"] + 1)
    return state


REDUCERS = [PLAYER]
"""What the control group's worker process loads (`--reducers replay:REDUCERS`)."""


def move(version: int) -> tuple[str, float, float]:
    """The move of a version (the same on both sides)."""
    return ZONES[version % len(ZONES)], float(version % 500), -float(version % 300)


def history(aggregate_id: str, events: int) -> Iterator[Event]:
    yield Event.new(
        aggregate_type="Player",
        aggregate_id=aggregate_id,
        event_type="PlayerJoined",
        version=1,
        payload={"name": aggregate_id, "zone": ZONES[0]},
        metadata={"source": "bench"},
    )
    for version in range(2, events + 1):
        zone, x, y = move(version)
        yield Event.new(
            aggregate_type="Player",
            aggregate_id=aggregate_id,
            event_type="PlayerMoved",
            version=version,
            payload={"zone": zone, "x": x, "y": y},
            metadata={"source": "bench"},
        )


def append_histories(store: EventStore, aggregate_ids: Sequence[str], events: int) -> None:
    """Each aggregate's history, in batches of at most BATCH events."""
    batch: list[Event] = []
    for aggregate_id in aggregate_ids:
        for event in history(aggregate_id, events):
            batch.append(event)
            if len(batch) == BATCH:
                store.append_events(batch)
                batch = []
    if batch:
        store.append_events(batch)


def expected_state(aggregate_id: str, events: int) -> State:
    zone, x, y = move(events) if events > 1 else (ZONES[0], 0.0, 0.0)
    return {"name": aggregate_id, "zone": zone, "x": x, "y": y, "moves": events - 1}


# -- the peer ---------------------------------------------------------------------------------


@cache
def peer_classes() -> tuple[Any, Any]:
    """The peer's Aggregate and Application (eventsourcing is the `bench` extra: imported
    here, not at the top, so that the other groups and the worker do without it). Its event
    topics are registered when first stored, so classes defined in a function resolve."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class PeerPlayer(Aggregate):  # type: ignore[misc, unused-ignore]
        @event("Joined")  # type: ignore[untyped-decorator, unused-ignore]
        def __init__(self, name: str, zone: str) -> None:
            self.name = name
            self.zone = zone
            self.x = 0.0
            self.y = 0.0
            self.moves = 0

        @event("Moved")  # type: ignore[untyped-decorator, unused-ignore]
        def move(self, zone: str, x: float, y: float) -> None:
            self.zone = zone
            self.x = x
            self.y = y
            self.moves += 1

    class PeerGame(Application):  # type: ignore[misc, type-arg, unused-ignore]
        pass

    return PeerPlayer, PeerGame


@dataclass
class Peer:
    """One peer application holding one player of `events` events."""

    app: Any
    player_id: uuid.UUID

    def get(self) -> State:
        player = self.app.repository.get(self.player_id)
        return {
            "name": player.name,
            "zone": player.zone,
            "x": player.x,
            "y": player.y,
            "moves": player.moves,
        }


def peer_env_postgres(url: str, schema: str) -> dict[str, str]:
    params = conninfo_to_dict(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(params.get("dbname", "")),
        "POSTGRES_HOST": str(params.get("host", "localhost")),
        "POSTGRES_PORT": str(params.get("port", "5432")),
        "POSTGRES_USER": str(params.get("user", "")),
        "POSTGRES_PASSWORD": str(params.get("password", "")),
        "POSTGRES_SCHEMA": schema,
        "CREATE_TABLE": "y",
    }


@contextmanager
def peer_app(env: dict[str, str], aggregate_id: str, events: int) -> Iterator[Peer]:
    """The peer's application with one player of `events` events (saved 1,000 at a time)."""
    player_class, game_class = peer_classes()
    app = game_class(env=env)
    try:
        player = player_class(name=aggregate_id, zone=ZONES[0])
        for version in range(2, events + 1):
            player.move(*move(version))
            if version % BATCH == 0:
                app.save(player)
        app.save(player)
        yield Peer(app, player.id)
    finally:
        app.close()


# -- test beds --------------------------------------------------------------------------------


@contextmanager
def postgres_store(url: str) -> Iterator[tuple[EventStore, Schema]]:
    with Schema(url) as schema:
        store = open_store(url, schema=schema.name)
        try:
            store.migrate()
            yield store, schema
        finally:
            store.close()


@contextmanager
def sqlite_store(directory: str) -> Iterator[EventStore]:
    path = Path(directory) / f"ours-{uuid.uuid4().hex[:8]}.db"
    store = open_store(f"sqlite:///{path}")
    try:
        store.migrate()
        yield store
    finally:
        store.close()
        remove_sqlite(path)


def seconds_of(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def interleaved(contenders: Mapping[str, Callable[[], object]], calls: int) -> dict[str, float]:
    """Seconds each contender spends on `calls` calls, the contenders taking turns call by
    call (so that a burst of load from elsewhere on the machine falls on all of them)."""
    spent = dict.fromkeys(contenders, 0.0)
    for _ in range(calls):
        for name, call in contenders.items():
            spent[name] += seconds_of(call)
    return spent


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def under(value: float, aim: float, unit: str) -> str:
    return f"< {aim:g} {unit}: {'met' if value < aim else '**not met**'}"


# -- get: one aggregate of 1,000 events, ours against the peer --------------------------------

FLOOR_QUERY = (
    "SELECT position, id, event_type, aggregate_id, aggregate_type, version, timestamp, "
    "payload, metadata, schema_version, recorded_at FROM events WHERE aggregate_id = %s "
    "ORDER BY version"
)


FLOOR_TEXT_QUERY = FLOOR_QUERY.replace("payload, metadata", "payload::text, metadata::text")


def floor_fetch(
    conn: psycopg.Connection[Any], aggregate_id: str, events: int, query: str
) -> Callable[[], object]:
    def fetch() -> object:
        rows = conn.execute(query, (aggregate_id,)).fetchall()
        assert len(rows) == events
        return rows

    return fetch


def get_group(url: str, directory: str, sizes: Sizes, profile: bool) -> None:
    events, player = sizes.events, "bench-player"
    expected = expected_state(player, events)
    with ExitStack() as beds:
        ours_pg, schema = beds.enter_context(postgres_store(url))
        ours_lite = beds.enter_context(sqlite_store(directory))
        peer_schema = beds.enter_context(Schema(url))
        for store in (ours_pg, ours_lite):
            append_histories(store, [player], events)
        peer_pg = beds.enter_context(
            peer_app(peer_env_postgres(url, peer_schema.name), player, events)
        )
        peer_path = Path(directory) / f"peer-{uuid.uuid4().hex[:8]}.db"
        beds.callback(remove_sqlite, peer_path)
        peer_lite = beds.enter_context(
            peer_app(
                {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(peer_path)},
                player,
                events,
            )
        )
        conn = beds.enter_context(schema.connect())
        replayers = {
            store: Replayer(store, REDUCERS, snapshots=False) for store in (ours_pg, ours_lite)
        }

        def ours(store: EventStore) -> Callable[[], object]:
            def get() -> object:
                found = replayers[store].replay_to(player)
                assert found.state == expected and found.events_applied == events, found
                return found

            return get

        def peer(side: Peer) -> Callable[[], object]:
            def get() -> object:
                state = side.get()
                assert state == expected, state
                return state

            return get

        contenders: dict[str, Callable[[], object]] = {
            "peer postgres": peer(peer_pg),
            "ours postgres": ours(ours_pg),
            "floor postgres": floor_fetch(conn, player, events, FLOOR_QUERY),
            "floor text postgres": floor_fetch(conn, player, events, FLOOR_TEXT_QUERY),
            "peer sqlite": peer(peer_lite),
            "ours sqlite": ours(ours_lite),
        }
        for call in contenders.values():
            call()  # untimed: connections, prepared statements, caches of both sides
        print(
            f"get: one aggregate of {events:,} events, {sizes.gets} gets per round, "
            f"{sizes.rounds} rounds {load()}"
        )
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        for round_number in range(1, sizes.rounds + 1):
            for name, spent in interleaved(contenders, sizes.gets).items():
                rates[name].append(sizes.gets / spent)
            print(
                f"    round {round_number}: "
                + ", ".join(f"{name} {r[-1]:,.1f}/s" for name, r in rates.items())
            )
        median = {name: statistics.median(r) for name, r in rates.items()}
        report_get(median, events)
        if profile:
            stats = cProfile.Profile()
            stats.runcall(interleaved, {"ours": ours(ours_pg)}, 20)
            print_profile(f"cProfile of 20 of our gets on PostgreSQL ({events:,} events)", stats)
            stats = cProfile.Profile()
            stats.runcall(interleaved, {"peer": peer(peer_pg)}, 20)
            print_profile("cProfile of 20 of the peer's gets on PostgreSQL", stats)


def report_get(median: dict[str, float], events: int) -> None:
    print(f"\n### Get one aggregate of {events:,} events (gets/s, medians)\n")
    print("| backend | ours | eventsourcing | ours / peer | ms per get (ours, peer) | aim |")
    print("|---|---:|---:|---:|---|---|")
    for backend in ("postgres", "sqlite"):
        ours, peer = median[f"ours {backend}"], median[f"peer {backend}"]
        aim = verdict(ours / peer, 2) if backend == "postgres" else "(for information)"
        print(
            f"| {backend} | {ours:,.1f} | {peer:,.1f} | {ours / peer:.2f}x "
            f"| {1000 / ours:.1f}, {1000 / peer:.1f} | {aim} |"
        )
    floor, text = median["floor postgres"], median["floor text postgres"]
    print(
        f"\nfloor: psycopg fetching the same {events:,} rows, no Event built: {floor:,.1f}/s "
        f"({1000 / floor:.1f} ms) with payload and metadata decoded by psycopg's JSON loader, "
        f"{text:,.1f}/s ({1000 / text:.1f} ms) with them as text, not decoded; ours is "
        f"{median['ours postgres'] / floor:.2f}x of the first"
    )


# -- snapshots: 10,000 events with and without ------------------------------------------------


def snapshots_group(url: str, directory: str, sizes: Sizes) -> None:
    events, player = sizes.snapshot_events, "bench-long"
    expected = expected_state(player, events)
    print(
        f"snapshots: one aggregate of {events:,} events, snapshots every "
        f"{PLAYER.snapshot_every}, {sizes.repeat} replays each per round, {sizes.rounds} rounds "
        f"{load()}"
    )
    rows: list[tuple[str, dict[str, float]]] = []
    with ExitStack() as beds:
        ours_pg, _ = beds.enter_context(postgres_store(url))
        ours_lite = beds.enter_context(sqlite_store(directory))
        for backend, store in (("postgres", ours_pg), ("sqlite", ours_lite)):
            append_histories(store, [player], events)
            with_them = Replayer(store, REDUCERS, snapshots=True)
            without = Replayer(store, REDUCERS, snapshots=False)
            warm = with_them.replay_to(player)  # untimed: stores the snapshots
            assert warm.state == expected and warm.snapshot_version is None, warm
            stored = store.snapshot_count(player)
            below = events - 1

            def replay(
                replayer: Replayer, applied: int, version: int | None = None
            ) -> Callable[[], object]:
                def run() -> object:
                    found = replayer.replay_to(player, version=version)
                    assert found.events_applied == applied, found
                    return found

                return run

            below_applied = below % PLAYER.snapshot_every or PLAYER.snapshot_every
            contenders = {
                "latest, with snapshots": replay(with_them, 0),
                "latest, without": replay(without, events),
                "head - 1, with snapshots": replay(with_them, below_applied, below),
                "head - 1, without": replay(without, below, below),
            }
            for call in contenders.values():
                call()
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(sizes.rounds):
                for name, spent in interleaved(contenders, sizes.repeat).items():
                    times[name].append(spent / sizes.repeat)
            median = {name: statistics.median(t) for name, t in times.items()}
            print(
                f"    {backend}: {stored} snapshots stored by the first replay; "
                + ", ".join(f"{name} {s * 1000:.2f} ms" for name, s in median.items())
            )
            rows.append((backend, median))
    print(f"\n### Replay to latest of {events:,} events, snapshots every 100 (ms, medians)\n")
    print("| backend | target | with snapshots | without | without / with | aim |")
    print("|---|---|---:|---:|---:|---|")
    for backend, m in rows:
        for target, label in (("latest", "latest"), ("head - 1", f"v{events - 1:,}")):
            with_ms = m[f"{target}, with snapshots"] * 1000
            without_ms = m[f"{target}, without"] * 1000
            ratio = without_ms / with_ms
            aim = (
                verdict(ratio, 10)
                if backend == "postgres" and target == "latest"
                else "(for information)"
            )
            print(
                f"| {backend} | {label} | {with_ms:.2f} | {without_ms:.2f} | {ratio:.1f}x | {aim} |"
            )


# -- control: round trips through the control topic and a worker process ----------------------


@dataclass(frozen=True)
class Trip:
    scheduled: float
    sent: float
    """perf_counter at the `send` call."""
    seconds: float
    """`send` call to reply in hand."""
    request_leg: float
    """Wall clock: send call to the worker's `answered_at` (includes the replay)."""
    reply_leg: float
    """Wall clock: `answered_at` to reply in hand."""


@contextmanager
def worker_process(
    url: str, schema: str, kafka: str, prefix: str, logs: Path
) -> Iterator[Callable[[], None]]:
    """An `eventstore replay-worker` process; yields a check that raises if it exited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH), env.get("PYTHONPATH")) if p)
    command = [
        sys.executable,
        "-m",
        "eventstore.cli",
        "--database-url",
        url,
        "--schema",
        schema,
        "replay-worker",
        "--kafka-bootstrap-servers",
        kafka,
        "--topic-prefix",
        prefix,
        "--reducers",
        "replay:REDUCERS",
        "--log-level",
        "WARNING",
    ]
    path = logs / "replay-worker.log"
    with path.open("wb") as log:
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)

        def check() -> None:
            if child.poll() is not None:
                tail = path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the replay worker exited with {child.returncode}:\n{tail}")

        try:
            yield check
        finally:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


@contextmanager
def open_client(kafka: str, prefix: str) -> Iterator[Any]:
    """A ReplayClient on new topics (retried while their partitions are not known yet)."""
    from eventstore.errors import PublishError
    from eventstore.replay import ReplayClient

    for attempt in range(20):
        try:
            client = ReplayClient(kafka, topic_prefix=prefix, timeout=30)
            break
        except PublishError:
            if attempt == 19:
                raise
            time.sleep(0.5)
    with client:
        yield client


def wait_for_worker(client: Any, check: Callable[[], None], patience: float) -> float | None:
    """Ping until the worker answers; seconds it took, or None after `patience` seconds."""
    started = time.perf_counter()
    while time.perf_counter() - started < patience:
        check()
        try:
            client.ping(timeout=5)
            return time.perf_counter() - started
        except RequestTimeoutError:
            continue
    return None


@contextmanager
def ready_worker(
    url: str, schema: str, kafka: str, prefix: str, logs: Path, client: Any
) -> Iterator[tuple[Callable[[], None], int, float]]:
    """A worker process that answered a ping: (its check, starts it took, seconds to the
    ping's answer). A worker that does not answer within WORKER_PATIENCE is stopped and
    started again: kafka-python can leave a fresh worker with no partitions (RESULTS.md)."""
    for start in range(1, WORKER_STARTS + 1):
        with worker_process(url, schema, kafka, prefix, logs) as check:
            ready = wait_for_worker(client, check, WORKER_PATIENCE)
            if ready is None:
                print(
                    f"    worker start {start}: no answer to pings within "
                    f"{WORKER_PATIENCE:g} s; starting it again"
                )
                continue
            yield check, start, ready
            return
    raise RuntimeError(f"no replay worker answered in {WORKER_STARTS} starts")


def paced(client: Any, players: Sequence[str], rate: float, requests: int) -> list[Trip]:
    """`requests` replay requests at `rate`/s, each sent on schedule from a thread pool."""
    trips: list[Trip] = []
    lock = threading.Lock()

    def one(n: int, scheduled: float) -> None:
        player = players[n % len(players)]
        wall, sent = time.time(), time.perf_counter()
        reply = client.send({"kind": "replay", "aggregate_id": player})
        done, wall_done = time.perf_counter(), time.time()
        if not reply.get("ok") or reply["result"]["version"] != CONTROL_EVENTS:
            raise RuntimeError(f"unexpected reply {reply}")
        answered = datetime.fromisoformat(reply["answered_at"]).timestamp()
        trip = Trip(scheduled, sent, done - sent, answered - wall, wall_done - answered)
        with lock:
            trips.append(trip)

    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        futures = []
        started = time.perf_counter()
        for n in range(requests):
            scheduled = started + (n / rate if math.isfinite(rate) else 0.0)
            pause = scheduled - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            futures.append(pool.submit(one, n, scheduled))
        for future in futures:
            future.result()
    return trips


def control_group(url: str, kafka: str, sizes: Sizes) -> None:
    players = [f"ctl-{n:03d}" for n in range(sizes.control_players)]
    prefix = f"bench_{uuid.uuid4().hex[:8]}"
    with (
        postgres_store(url) as (store, schema),
        tempfile.TemporaryDirectory(prefix="bench-replay-") as logs,
    ):
        try:
            append_histories(store, players, CONTROL_EVENTS)
            # The client first: it creates the topics and waits for their partitions.
            with (
                open_client(kafka, prefix) as client,
                ready_worker(url, schema.name, kafka, prefix, Path(logs), client) as (
                    check,
                    starts,
                    ready,
                ),
            ):
                for player in players:  # untimed: each player's snapshots and type look-up
                    client.replay(player)
                print(
                    f"control: worker answered a ping {ready:.1f} s after its start "
                    f"({starts} start{'s' if starts > 1 else ''}); {len(players)} players of "
                    f"{CONTROL_EVENTS} events replayed once; {sizes.requests} requests at "
                    f"{sizes.rate}/s {load()}"
                )
                trips = paced(client, players, sizes.rate, sizes.requests)
                # How many requests a second the worker answers at most: all sent at once.
                burst = paced(client, players, math.inf, sizes.burst)
                check()
            direct = direct_replays(store, players, sizes.requests)
        finally:
            drop_kafka(kafka, prefix, [worker_group(prefix)])
    report_control(trips, direct, burst, sizes)


def direct_replays(store: EventStore, players: Sequence[str], requests: int) -> list[float]:
    """The baseline: the same replays, one after another, in this process (snapshots on, as
    the worker runs them; warmed by one pass)."""
    replayer = Replayer(store, REDUCERS)
    for player in players:
        replayer.replay_to(player)
    times = []
    for n in range(requests):
        player = players[n % len(players)]
        started = time.perf_counter()
        replayer.replay_to(player)
        times.append(time.perf_counter() - started)
    return times


def report_control(trips: list[Trip], direct: list[float], burst: list[Trip], sizes: Sizes) -> None:
    ms = [t.seconds * 1000 for t in trips]
    lag = max(t.sent - t.scheduled for t in trips) * 1000
    span = max(t.sent for t in trips) - min(t.sent for t in trips)
    p50, p99 = percentile(ms, 0.5), percentile(ms, 0.99)
    request_leg = [t.request_leg * 1000 for t in trips]
    reply_leg = [t.reply_leg * 1000 for t in trips]
    direct_ms = [s * 1000 for s in direct]
    print(f"\n### Control-topic round trip at {sizes.rate}/s ({len(trips)} requests, ms)\n")
    print("| measure | p50 | p99 | max | min | aim |")
    print("|---|---:|---:|---:|---:|---|")
    print(
        f"| `ReplayClient.send` to reply in hand | {p50:.1f} | {p99:.1f} | {max(ms):.1f} "
        f"| {min(ms):.1f} | p50 {under(p50, 20, 'ms')}; p99 {under(p99, 100, 'ms')} |"
    )
    for label, values in (
        ("send to the worker's `answered_at` (request leg + replay)", request_leg),
        ("`answered_at` to reply in hand (reply leg)", reply_leg),
        ("baseline: `replay_to` in this process, same requests", direct_ms),
    ):
        print(
            f"| {label} | {percentile(values, 0.5):.1f} | {percentile(values, 0.99):.1f} "
            f"| {max(values):.1f} | {min(values):.1f} | |"
        )
    in_order = [t.seconds * 1000 for t in sorted(trips, key=lambda t: t.sent)]
    tenth = max(1, len(in_order) // 10)
    first, last = percentile(in_order[:tenth], 0.5), percentile(in_order[-tenth:], 0.5)
    growing = " (a backlog grew: the worker answers more slowly than requests come)"
    print(
        f"\nsent over {span:.1f} s ({(len(trips) - 1) / span:.1f}/s); latest send "
        f"{lag:.1f} ms behind its schedule; round trip p50 / direct replay p50 "
        f"{p50 / percentile(direct_ms, 0.5):.1f}x; p50 of the first tenth of the requests "
        f"{first:.1f} ms, of the last tenth {last:.1f} ms{growing if last > 2 * first else ''}"
    )
    began = min(t.sent for t in burst)
    ended = max(t.sent + t.seconds for t in burst)
    print(
        f"capacity: {len(burst)} requests sent at once were all answered in "
        f"{ended - began:.1f} s: {len(burst) / (ended - began):.1f} requests/s (paced rate "
        f"{sizes.rate}/s)"
    )


# -- world: world_at against one replay per aggregate -----------------------------------------


def store_demo_world(store: EventStore, sizes: Sizes) -> int:
    world = World(f"w{uuid.uuid4().hex[:6]}", players=sizes.world_players, items=sizes.world_items)
    stored = 0
    for tick in range(sizes.ticks + 1):
        batch = world.genesis() if tick == 0 else world.tick()
        for start in range(0, len(batch), BATCH):
            store.append_events(batch[start : start + BATCH])
        stored += len(batch)
    return stored


def one_by_one(
    replayer: Replayer, store: EventStore, cut: int, aggregate_type: str | None
) -> list[ReplayResult]:
    """What world_at saves a caller: list the aggregates, then replay each to the cut."""
    results = []
    after: AggregateRef | None = None
    while page := store.list_aggregates(aggregate_type, after=after, max_position=cut, limit=1000):
        results += [replayer.replay_to(ref.aggregate_id, position=cut) for ref in page]
        after = page[-1]
    return results


def world_group(url: str, directory: str, sizes: Sizes, profile: bool) -> None:
    print(
        f"world: the demo world, {sizes.world_players} players, {sizes.world_items} items, "
        f"{sizes.ticks} ticks; {sizes.rounds} rounds {load()}"
    )
    rows: list[tuple[str, int, dict[str, float], dict[str, int]]] = []
    with ExitStack() as beds:
        ours_pg, _ = beds.enter_context(postgres_store(url))
        ours_lite = beds.enter_context(sqlite_store(directory))
        for backend, store in (("postgres", ours_pg), ("sqlite", ours_lite)):
            stored = store_demo_world(store, sizes)
            settle(store)
            replayer = Replayer(store, DEMO_REDUCERS)
            cut = replayer.cut(store.log_horizon().head)
            contenders = world_contenders(replayer, store, cut)
            counts = check_world(contenders)
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(sizes.rounds):
                for name, spent in interleaved(contenders, sizes.world_repeat).items():
                    times[name].append(spent / sizes.world_repeat)
            median = {name: statistics.median(t) for name, t in times.items()}
            print(
                f"    {backend}: {stored:,} events, cut at {cut:,}; "
                + ", ".join(f"{name} {s * 1000:.1f} ms" for name, s in median.items())
            )
            rows.append((backend, stored, median, counts))
            if profile and backend == "postgres":
                stats = cProfile.Profile()
                stats.runcall(contenders["world_at Player"])
                print_profile("cProfile of world_at, Player, on PostgreSQL", stats)
    report_world(rows, sizes)


def world_contenders(
    replayer: Replayer, store: EventStore, cut: int
) -> dict[str, Callable[[], list[ReplayResult]]]:
    def world_at() -> list[ReplayResult]:
        return replayer.world_at(cut, aggregate_type="Player", limit=1000).aggregates

    def iter_world() -> list[ReplayResult]:
        return list(replayer.iter_world(cut))

    return {
        "world_at Player": world_at,
        "one by one Player": lambda: one_by_one(replayer, store, cut, "Player"),
        "iter_world all": iter_world,
        "one by one all": lambda: one_by_one(replayer, store, cut, None),
    }


def check_world(contenders: dict[str, Callable[[], list[ReplayResult]]]) -> dict[str, int]:
    """One untimed pass of each; world_at and one by one must agree. Aggregates by kind."""
    found = {name: call() for name, call in contenders.items()}

    def states(results: list[ReplayResult]) -> dict[str, tuple[int, Any]]:
        return {r.aggregate_id: (r.version, r.state) for r in results}

    for kind in ("Player", "all"):
        batch = states(found[f"world_at {kind}" if kind == "Player" else "iter_world all"])
        single = states(found[f"one by one {kind}"])
        if batch != single:
            raise RuntimeError(f"world_at and one by one differ ({kind})")
    return {"Player": len(found["world_at Player"]), "all": len(found["iter_world all"])}


def report_world(
    rows: list[tuple[str, int, dict[str, float], dict[str, int]]], sizes: Sizes
) -> None:
    print(
        f"\n### The demo world at its head ({sizes.world_players} players, {sizes.ticks} ticks;"
        " seconds, medians)\n"
    )
    print(
        "| backend | events | aggregates | world_at / iter_world | one by one "
        "| one by one / world_at | aim |"
    )
    print("|---|---:|---|---:|---:|---:|---|")
    for backend, stored, m, counts in rows:
        for kind, batch in (("Player", "world_at Player"), ("all", "iter_world all")):
            batched, single = m[batch], m[f"one by one {kind}"]
            label = f"{counts[kind]} {'players' if kind == 'Player' else 'of every type'}"
            aim = under(batched, 1, "s") if kind == "Player" else "(for information)"
            print(
                f"| {backend} | {stored:,} | {label} | {batched:.3f} | {single:.3f} "
                f"| {single / batched:.1f}x | {aim} |"
            )


# -- main -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    rounds: int
    events: int
    gets: int
    snapshot_events: int
    repeat: int
    control_players: int
    requests: int
    rate: int
    burst: int
    world_players: int
    world_items: int
    world_repeat: int
    ticks: int


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    settings = Settings()
    parser.add_argument("--database-url", default=settings.database_url)
    parser.add_argument("--kafka-bootstrap", default=settings.kafka_bootstrap_servers)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round: a smoke run")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"groups of {', '.join(GROUPS)}")
    parser.add_argument("--rounds", type=int, help="default 3 (quick 1)")
    parser.add_argument("--events", type=int, default=1000, help="get: events of the aggregate")
    parser.add_argument("--gets", type=int, help="get: gets per round (default 20; quick 3)")
    parser.add_argument("--snapshot-events", type=int, help="default 10,000 (quick 2,000)")
    parser.add_argument("--repeat", type=int, help="snapshots: replays per round (default 10)")
    parser.add_argument("--control-players", type=int, help="default 100 (quick 20)")
    parser.add_argument("--requests", type=int, help="control: default 500 (quick 100)")
    parser.add_argument("--rate", type=int, default=50, help="control: requests/s")
    parser.add_argument("--burst", type=int, help="control: sent at once (default 200; quick 50)")
    parser.add_argument("--profile", action="store_true", help="also profile (get, world)")
    parser.add_argument("--sqlite-dir", default=None, help="where the SQLite files go")
    args = parser.parse_args()
    only = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(only) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    if not args.database_url or not args.database_url.startswith("postgres"):
        parser.error("give --database-url postgresql://...")
    if "control" in only and not args.kafka_bootstrap:
        parser.error("give --kafka-bootstrap host:port (or leave out the control group)")
    if "get" in only and find_spec("eventsourcing") is None:
        parser.error("the get group needs the bench extra: pip install -e '.[dev,bench]'")
    quick = args.quick
    sizes = Sizes(
        rounds=args.rounds or (1 if quick else 3),
        events=args.events,
        gets=args.gets or (3 if quick else 20),
        snapshot_events=args.snapshot_events or (2_000 if quick else 10_000),
        repeat=args.repeat or (3 if quick else 10),
        control_players=args.control_players or (20 if quick else 100),
        requests=args.requests or (100 if quick else 500),
        rate=args.rate,
        burst=args.burst or (50 if quick else 200),
        world_players=300,
        world_items=120,
        world_repeat=1 if quick else 3,
        ticks=60,
    )
    url = args.database_url
    print(
        f"bench/replay.py {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores"
        f"{'; quick run: small sizes, not figures' if quick else ''}"
    )
    with tempfile.TemporaryDirectory(dir=args.sqlite_dir, prefix="bench-replay-") as directory:
        if "get" in only:
            get_group(url, directory, sizes, args.profile)
        if "snapshots" in only:
            print()
            snapshots_group(url, directory, sizes)
        if "control" in only:
            print()
            control_group(url, args.kafka_bootstrap, sizes)
        if "world" in only:
            print()
            world_group(url, directory, sizes, args.profile)


if __name__ == "__main__":
    main()
