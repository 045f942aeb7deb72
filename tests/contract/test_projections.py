"""The projection contract: the same projections on both backends (SQLite, PostgreSQL) and
both sources (the store's tail, Kafka through the outbox relay) build the same read model,
applying each event exactly once, parking poison events in order, and rebuilding by
generations."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from eventstore import EventStore
from eventstore.consumers import (
    Applier,
    BatchResult,
    Documents,
    Projection,
    ProjectionRunner,
    Projector,
    Source,
    StoreTailSource,
    rebuild,
    rebuild_aggregate,
    retry_parked,
)
from eventstore.errors import (
    EventStoreError,
    FencedError,
    HandlerError,
    InvalidQueryError,
    ProjectionError,
)
from eventstore.events import Event
from eventstore.versioning import Upcasters
from tests.conftest import StoreFactory, unique_name
from tests.helpers import event, wait_for


def counting(name: str = "counts", **options: Any) -> tuple[Projection, dict[str, Any]]:
    """A projection that counts what it applied per aggregate (`applied` must end equal to
    the aggregate's version: once per event) and sums payloads per zone (a document many
    aggregates change). `controls["fail"]`: (aggregate, version) pairs whose handler raises."""
    controls: dict[str, Any] = {"fail": set()}
    projection = Projection(name, **options)

    @projection.on("PlayerMoved", "PlayerJoined")
    def handle(e: Event, documents: Documents) -> None:
        if (e.aggregate_id, e.version) in controls["fail"]:
            documents.put("poisoned-write", {"must": "never be stored"})
            raise RuntimeError(f"cannot handle {e.aggregate_id} v{e.version}")
        doc = documents.get(e.aggregate_id) or {"applied": 0, "versions": []}
        doc["applied"] += 1
        doc["last"] = e.version
        doc["zone"] = e.payload.get("zone", "none")
        documents.put(e.aggregate_id, doc)
        documents.update(f"zone-{doc['zone']}", lambda z: {"sum": z.get("sum", 0) + e.version})

    return projection, controls


def reference(events: list[Event], skip: set[tuple[str, int]] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    """What `counting` must hold after these events (the skipped ones left out)."""
    docs: dict[str, Any] = {}
    for e in events:
        if e.event_type not in ("PlayerMoved", "PlayerJoined"):
            continue
        if (e.aggregate_id, e.version) in skip:
            continue
        doc = docs.setdefault(e.aggregate_id, {"applied": 0, "versions": []})
        doc["applied"] += 1
        doc["last"] = e.version
        doc["zone"] = e.payload.get("zone", "none")
        zone = docs.setdefault(f"zone-{doc['zone']}", {"sum": 0})
        zone["sum"] += e.version
    return docs


def model(store: EventStore, name: str = "counts") -> dict[str, Any]:
    found: dict[str, Any] = {}
    after = ""
    while page := store.list_documents(name, after, 1000):
        found.update(page)
        after = page[-1][0]
    return found


def game(aggregates: int, versions: int, start: int = 1, zones: int = 3) -> list[Event]:
    """Interleaved histories: version by version across the aggregates, some of another type
    the projection ignores."""
    events = []
    for version in range(start, start + versions):
        for number in range(aggregates):
            event_type = "PlayerJoined" if version == 1 else "PlayerMoved"
            if version % 4 == 0:
                event_type = "PlayerWaved"  # not handled: applied as nothing, checkpointed
            events.append(
                event(f"p-{number}", version, event_type=event_type, zone=f"z{version % zones}")
            )
    return events


class Observed:
    """Counts what the live source delivered (the catch-up is not counted)."""

    def __init__(self) -> None:
        self.applied = 0
        self.duplicates = 0

    def batch(self, projection: str, result: BatchResult, events: int) -> None:
        self.applied += result.applied
        self.duplicates += result.duplicates

    def retrying(self, projection: str, error: EventStoreError) -> None:
        return None

    def lag(self, projection: str, partition: str, events: float, seconds: float | None) -> None:
        return None

    def rebuild_progress(self, projection: str, fraction: float) -> None:
        return None


class Running:
    """A runner in a thread, until stop()."""

    def __init__(self, runner: ProjectionRunner) -> None:
        self.runner = runner
        self.observed = runner.observer
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run(self.stopping)
        except BaseException as error:
            self.error = error

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the runner did not stop"


class Harness:
    """One source kind on one store: `start(projections)` runs them live."""

    def __init__(self, store: EventStore, kind: str, request: pytest.FixtureRequest) -> None:
        self.store = store
        self.kind = kind
        self.running: list[Running] = []
        self.relay: Any = None
        if kind == "kafka":
            from tests.kafka_helpers import RelayThread

            self.bootstrap = request.getfixturevalue("kafka_bootstrap")
            self.prefix = unique_name("proj")
            self.relay = RelayThread(store, self.bootstrap, self.prefix).start()

    def source(self) -> Source:
        if self.kind == "store":
            return StoreTailSource(poll_interval=0.05)
        from eventstore.consumers import KafkaSource

        return KafkaSource(self.bootstrap, topic_prefix=self.prefix, session_timeout=6)

    def start(self, projections: list[Projection], **options: Any) -> Running:
        """Start a runner and wait until it has caught up and follows its source."""
        runner = ProjectionRunner(
            self.store, projections, source=self.source(), observer=Observed(), **options
        )
        running = Running(runner)
        self.running.append(running)

        def following() -> bool:
            if running.error is not None:
                return True
            records = [self.store.projection_record(p.name) for p in projections]
            return all(r is not None and r.handoff_at is not None for r in records)

        wait_for(following, "the runner to catch up")
        return running

    def close(self) -> None:
        for running in self.running:
            running.stop()
        if self.relay is not None:
            self.relay.stop()
        errors = [r.error for r in self.running if r.error is not None]
        expected = [e for e in errors if isinstance(e, HandlerError)]  # the stop policy's
        assert errors == expected, errors


@pytest.fixture(params=["store", "kafka"])
def source_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def harness(
    store: EventStore, source_kind: str, request: pytest.FixtureRequest
) -> Iterator[Harness]:
    made = Harness(store, source_kind, request)
    yield made
    made.close()


def settled(store: EventStore, expected: dict[str, Any], name: str = "counts") -> None:
    wait_for(lambda: model(store, name) == expected, f"the read model of {name}", timeout=60)


# -- exactly once, live -------------------------------------------------------------------


def test_each_event_is_applied_exactly_once_from_catch_up_through_live(harness: Harness) -> None:
    store = harness.store
    history = game(12, 6)
    store.append_events(history[:40])  # before the runner: its catch-up reads these
    projection, _ = counting()
    running = harness.start([projection], batch_size=17)
    store.append_events(history[40:])
    settled(store, reference(history))
    more = game(12, 5, start=7)
    for start in range(0, len(more), 10):
        store.append_events(more[start : start + 10])
    everything = history + more
    settled(store, reference(everything))
    # Everything appended after the catch-up came through the live source (and on
    # PostgreSQL, what another test's open transaction hid from the catch-up, too).
    assert isinstance(running.observed, Observed)
    assert len(everything) - 40 <= running.observed.applied <= len(everything)
    for number in range(12):
        doc = store.get_document("counts", f"p-{number}")
        assert doc["applied"] == sum(
            1
            for e in everything
            if e.aggregate_id == f"p-{number}" and e.event_type != "PlayerWaved"
        )
        assert store.projection_checkpoint("counts", f"p-{number}") == 11
    running.stop()
    assert running.error is None


def test_a_stopped_runner_resumes_where_it_committed(harness: Harness) -> None:
    store = harness.store
    first = game(5, 4)
    store.append_events(first)
    projection, _ = counting()
    first_run = harness.start([projection])
    settled(store, reference(first))
    first_run.stop()
    later = game(5, 4, start=5)
    store.append_events(later)
    running = harness.start([projection])
    settled(store, reference(first + later))
    running.stop()


def test_handlers_see_events_upcast_on_every_path(
    store_factory: StoreFactory, source_kind: str, request: pytest.FixtureRequest
) -> None:
    """Catch-up, the live source (Kafka carries events as stored) and gap filling all go
    through the one read path: handlers only ever see the current schema."""
    upcasters = Upcasters()

    @upcasters.register("PlayerMoved", from_version=1)
    def _to_v2(payload: dict[str, Any]) -> dict[str, Any]:
        return {"position": [payload["x"], payload["y"]]}

    writer = store_factory()
    store = store_factory(upcasters)
    seen = Projection("seen")

    @seen.on("PlayerMoved")
    def handle(e: Event, documents: Documents) -> None:
        doc = documents.get(e.aggregate_id) or {"schemas": [], "positions": []}
        doc["schemas"].append(e.schema_version)
        doc["positions"].append(e.payload["position"])
        documents.put(e.aggregate_id, doc)

    writer.append_events([event("p-1", 1, x=1, y=1), event("p-2", 1, x=2, y=2)])
    harness = Harness(store, source_kind, request)
    try:
        harness.start([seen])
        writer.append_events([event("p-1", 2, x=3, y=3), event("p-2", 2, x=4, y=4)])
        wait_for(
            lambda: len((store.get_document("seen", "p-2") or {}).get("schemas", [])) == 2,
            "the live events",
        )
    finally:
        harness.close()
    assert store.get_document("seen", "p-1") == {"schemas": [2, 2], "positions": [[1, 1], [3, 3]]}
    assert store.get_document("seen", "p-2") == {"schemas": [2, 2], "positions": [[2, 2], [4, 4]]}


UPSERT_MOVES = (
    "INSERT INTO moves_by_player (generation, player, moves) VALUES (%s, %s, 1) "
    "ON CONFLICT (generation, player) DO UPDATE SET moves = moves_by_player.moves + 1"
)
UPSERT_MOVES_SQLITE = UPSERT_MOVES.replace("%s", "?")


def readable(store: EventStore) -> None:
    """Wait until every stored event is readable in the global log (on PostgreSQL a
    transaction anywhere in the cluster, such as another test's, holds the horizon back)."""
    wait_for(lambda: store.log_horizon().events_behind == 0, "the log's horizon")


def test_a_projection_with_tables_of_its_own(store: EventStore) -> None:
    """Its migrations run before the first batch; its handler writes through the batch's
    connection, in the batch's transaction (keyed by generation, so a rebuild does not mix
    with the live generation)."""
    create = (
        "CREATE TABLE IF NOT EXISTS moves_by_player "
        "(generation INTEGER, player TEXT, moves INTEGER, PRIMARY KEY (generation, player))"
    )
    own = Projection("own-tables", migrations={"postgres": [create], "sqlite": [create]})

    @own.on("PlayerMoved")
    def handle(e: Event, documents: Documents) -> None:
        upsert = UPSERT_MOVES if documents.backend == "postgres" else UPSERT_MOVES_SQLITE
        documents.connection.execute(upsert, (documents.generation, e.aggregate_id))

    store.append_events([event("p-1", v) for v in range(1, 4)])
    readable(store)
    StoreTailSource().catch_up(ProjectionRunner(store, [own]))
    with store.projection_transaction("own-tables") as tx:
        rows = tx.connection.execute("SELECT generation, player, moves FROM moves_by_player")
        assert [tuple(row) for row in rows.fetchall()] == [(1, "p-1", 3)]


# -- poison ---------------------------------------------------------------------------------


def test_a_parked_aggregate_waits_in_order_while_others_flow_and_retry_completes_it(
    harness: Harness,
) -> None:
    store = harness.store
    projection, controls = counting()
    controls["fail"] = {("p-2", 5)}
    history = game(6, 9)
    running = harness.start([projection])
    for start in range(0, len(history), 12):
        store.append_events(history[start : start + 12])
    held = [e for e in history if e.aggregate_id == "p-2" and e.version >= 5]
    expected = reference([e for e in history if not (e.aggregate_id == "p-2" and e.version >= 5)])
    settled(store, expected)
    wait_for(
        lambda: (
            [(f.version, f.held_version) for f in store.projection_failures("counts")] == [(5, 9)]
        ),
        "p-2 parked at version 5 with versions up to 9 waiting",
    )
    failure = store.projection_failures("counts", policy="park")[0]
    assert failure.aggregate_id == "p-2"
    assert failure.error_type == "RuntimeError"
    assert "cannot handle p-2 v5" in failure.message
    assert store.get_document("counts", "poisoned-write") is None
    assert store.projection_checkpoint("counts", "p-2") == 4
    if harness.kind == "kafka":
        letters = read_dead_letters(harness, "counts", len(held))
        assert [(key, headers["version"], headers["policy"]) for key, headers in letters] == [
            ("p-2", str(e.version), "park" if e.version == 5 else "held") for e in held
        ]
        assert letters[0][1]["error_type"] == "RuntimeError"
        assert letters[0][1]["projection"] == "counts"
        assert letters[0][1]["event_id"] == held[0].id
    # The handler is fixed, but until a retry the aggregate keeps waiting: a later event
    # of it is held too, not applied (nor the parked one re-tried behind the operator's back).
    controls["fail"] = set()
    later = event("p-2", 10, zone="z1")
    store.append_events([later])
    wait_for(
        lambda: [f.held_version for f in store.projection_failures("counts")] == [10],
        "version 10 held behind the parked one",
    )
    assert store.projection_checkpoint("counts", "p-2") == 4
    # A retry applies the waiting events from the store, in order.
    results = retry_parked(store, projection, Applier(store, projection))
    assert [(a, r.applied, r.parked) for a, r in results] == [("p-2", len(held) + 1, [])]
    history.append(later)
    settled(store, reference(history))
    assert store.projection_failures("counts") == []
    running.stop()


def test_skip_records_the_event_and_moves_on(harness: Harness) -> None:
    store = harness.store
    projection, controls = counting(on_error="skip")
    controls["fail"] = {("p-1", 3)}
    history = game(4, 6)
    running = harness.start([projection])
    store.append_events(history)
    settled(store, reference(history, skip={("p-1", 3)}))
    skipped = store.projection_failures("counts", policy="skip")
    assert [(f.aggregate_id, f.version) for f in skipped] == [("p-1", 3)]
    assert store.projection_counts("counts").parked == 0
    running.stop()


def test_stop_policy_stops_the_runner_with_the_error(harness: Harness) -> None:
    store = harness.store
    projection, controls = counting(on_error="stop")
    controls["fail"] = {("p-0", 2)}
    store.append_events(game(3, 3))
    running = harness.start([projection])
    running.thread.join(timeout=60)
    assert isinstance(running.error, HandlerError)
    assert "p-0" in str(running.error) and "eventstore projections retry counts" in str(
        running.error
    )
    # Nothing of the batch that held the failing event was committed.
    assert store.projection_checkpoint("counts", "p-0") == 0
    assert store.projection_failures("counts") == []
    assert "RuntimeError" in (store.projection_record("counts").last_error or "")  # type: ignore[union-attr]


def read_dead_letters(
    harness: Harness, projection: str, count: int
) -> list[tuple[str, dict[str, str]]]:
    """The projection's dead letters as kcat (librdkafka, an independent client) reads them."""
    from eventstore._topics import dlq_topic
    from tests.kafka_helpers import kcat

    letters = kcat(harness.bootstrap, dlq_topic(harness.prefix, projection), count)
    return [(key, headers) for key, headers, _ in letters]


# -- rebuild --------------------------------------------------------------------------------


def test_rebuild_builds_a_new_generation_while_live_events_flow(harness: Harness) -> None:
    store = harness.store
    projection, _ = counting()
    history = game(8, 5)
    store.append_events(history)
    running = harness.start([projection])
    settled(store, reference(history))
    more = game(8, 5, start=6)
    appended: list[Event] = []

    def append_more() -> None:
        for start in range(0, len(more), 8):
            store.append_events(more[start : start + 8])
            appended.extend(more[start : start + 8])

    writer = threading.Thread(target=append_more)
    writer.start()
    generation = rebuild(store, projection, Applier(store, projection))
    writer.join()
    assert generation == 2
    settled(store, reference(history + more))
    record = store.projection_record("counts")
    assert record is not None and record.active_generation == 2
    assert record.building_generation is None
    assert store.projection_counts("counts", generation=1).documents == 0
    running.stop()


def test_a_version_raised_in_code_is_rebuilt_at_start(harness: Harness) -> None:
    store = harness.store
    history = game(4, 4)
    store.append_events(history)
    old, _ = counting()
    first_run = harness.start([old])
    settled(store, reference(history))
    first_run.stop()
    new = Projection("counts", version=2)

    @new.on("PlayerMoved", "PlayerJoined")
    def handle(e: Event, documents: Documents) -> None:
        documents.update(e.aggregate_id, lambda d: {"seen": d.get("seen", 0) + 1})

    running = harness.start([new])
    wait_for(
        lambda: store.projection_record("counts").active_version == 2,  # type: ignore[union-attr]
        "version 2 active",
    )
    seen = {key: doc for key, doc in model(store).items()}
    assert seen == {
        f"p-{n}": {"seen": 3} for n in range(4)
    }  # versions 1, 2, 3 handled; 4 is a PlayerWaved
    running.stop()


# -- the applier, on each backend -----------------------------------------------------------


@pytest.fixture
def counts(store: EventStore) -> tuple[Projection, dict[str, Any], Applier]:
    projection, controls = counting()
    store.register_projection("counts", 1)
    return projection, controls, Applier(store, projection)


def test_gaps_are_filled_from_the_store_and_resends_change_nothing(
    store: EventStore, counts: tuple[Projection, dict[str, Any], Applier]
) -> None:
    _, _, applier = counts
    history = [event("p-1", v, zone="z") for v in range(1, 8)]
    store.append_events(history)
    result = applier.apply([history[0], history[4]])  # versions 2..4 never arrived
    assert (result.applied, result.filled) == (5, 3)
    assert store.get_document("counts", "p-1")["applied"] == 5
    again = applier.apply(history)  # a relay's re-send of everything
    assert (again.applied, again.duplicates) == (2, 5)
    assert model(store) == reference(history)


def test_a_handler_failure_leaves_none_of_its_writes(
    store: EventStore, counts: tuple[Projection, dict[str, Any], Applier]
) -> None:
    _, controls, applier = counts
    controls["fail"] = {("p-1", 2)}
    history = [event("p-1", v, zone="z") for v in range(1, 4)] + [event("p-2", 1, zone="z")]
    store.append_events(history)
    result = applier.apply(history)
    assert [f.version for f in result.parked] == [2]
    assert result.held == 1
    assert store.get_document("counts", "poisoned-write") is None
    assert model(store) == reference([history[0], history[3]])
    # Even once the handler works, a re-send of the parked event waits for a retry.
    controls["fail"] = set()
    again = applier.apply([history[1]])
    assert (again.applied, again.duplicates) == (0, 1)
    assert store.projection_checkpoint("counts", "p-1") == 1


def test_a_document_that_is_not_json_parks_with_a_clear_message(store: EventStore) -> None:
    projection = Projection("bad-docs")

    @projection.on("PlayerMoved")
    def handle(e: Event, documents: Documents) -> None:
        documents.put(e.aggregate_id, {"when": e.timestamp})  # a datetime: not JSON

    store.register_projection("bad-docs", 1)
    store.append_event(event("p-1", 1))
    result = Applier(store, projection).apply([event("p-1", 1)])
    assert result.parked[0].error_type == "ProjectionError"
    assert "bad-docs" in result.parked[0].message and "not JSON" in result.parked[0].message
    assert store.projection_counts("bad-docs").documents == 0


def test_documents_get_put_update_delete_find(store: EventStore) -> None:
    projection = Projection("docs")

    @projection.on("PlayerMoved")
    def handle(e: Event, documents: Documents) -> None:
        documents.put("a", {"zone": "forest", "level": 3, "alive": True, "tag": None})
        documents.put("b", {"zone": "marsh", "level": 3.0, "alive": False})
        documents.put("c", {"zone": "forest", "level": "3", "alive": 1})
        assert documents.update("a", {"level": 4})["level"] == 4
        assert [k for k, _ in documents.find("zone", "forest")] == ["a", "c"]
        documents.put("gone", {"x": 1})
        documents.delete("gone")

    store.register_projection("docs", 1)
    store.append_event(event("p-1", 1))
    Applier(store, projection).apply([event("p-1", 1)])
    assert store.get_document("docs", "a") == {
        "zone": "forest",
        "level": 4,
        "alive": True,
        "tag": None,
    }
    assert store.get_document("docs", "gone") is None
    assert [k for k, _ in store.find_documents("docs", "level", 3)] == ["b"]
    assert [k for k, _ in store.find_documents("docs", "level", "3")] == ["c"]
    assert [k for k, _ in store.find_documents("docs", "alive", True)] == ["a"]
    assert [k for k, _ in store.find_documents("docs", "alive", 1)] == ["c"]
    assert [k for k, _ in store.find_documents("docs", "tag", None)] == ["a"]
    assert [k for k, _ in store.list_documents("docs", "a", 10)] == ["b", "c"]


def test_a_newer_rebuild_fences_out_an_older_one(
    store: EventStore, counts: tuple[Projection, dict[str, Any], Applier]
) -> None:
    projection, _, applier = counts
    history = game(3, 3)
    store.append_events(history)
    older = store.begin_generation("counts", 1)
    applier.apply(history[:3], generation=older)
    newer = store.begin_generation("counts", 1)
    with pytest.raises(FencedError, match="neither the active one"):
        applier.apply(history[3:], generation=older)
    assert store.projection_counts("counts", generation=older).documents == 0
    assert newer == older + 1
    readable(store)
    assert rebuild(store, projection, applier) == newer + 1
    assert model(store) == reference(history)


def test_rebuild_catches_up_what_only_the_live_generation_applied(
    store: EventStore, counts: tuple[Projection, dict[str, Any], Applier]
) -> None:
    """The switch brings every aggregate the live generation holds up to it, even one the
    global log did not show the rebuild (here: applied live after the rebuild's log read)."""
    projection, _, applier = counts
    history = game(4, 3)
    store.append_events(history)
    applier.apply(history)
    late = [event("p-9", 1, event_type="PlayerJoined", zone="z1")]
    original_catch_up = store.read_all

    def hide_late(after_position: int = 0, limit: int = 1000) -> list[Event]:
        return [e for e in original_catch_up(after_position, limit) if e.aggregate_id != "p-9"]

    store.append_events(late)
    applier.apply(late)  # the live generation has it
    readable(store)
    store.read_all = hide_late  # type: ignore[method-assign]
    try:
        rebuild(store, projection, applier)
    finally:
        del store.read_all
    assert model(store) == reference(history + late)


def test_one_aggregate_rebuilt_alone(
    store: EventStore, counts: tuple[Projection, dict[str, Any], Applier]
) -> None:
    projection, _, applier = counts
    history = [event("p-1", v, zone="z") for v in range(1, 4)]
    store.append_events(history)
    applier.apply(history)
    with pytest.raises(ProjectionError, match="has no reset"):
        rebuild_aggregate(store, projection, applier, "p-1")
    projection.reset = lambda aggregate, documents: documents.delete(aggregate)
    result = rebuild_aggregate(store, projection, applier, "p-1")
    assert result.applied == 3
    assert store.get_document("counts", "p-1")["applied"] == 3
    with pytest.raises(ProjectionError, match="no events"):
        rebuild_aggregate(store, projection, applier, "nobody")


# -- definitions and bad input --------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "Has Space", "UPPER", "x" * 101, "-lead", "a.b", 7])
def test_invalid_projection_names_are_refused(name: Any) -> None:
    with pytest.raises(ProjectionError, match="projection name"):
        Projection(name)


def test_definitions_are_checked_before_anything_is_written(store: EventStore) -> None:
    with pytest.raises(ProjectionError, match="two projections are named 'twin'"):
        ProjectionRunner(store, [Projection("twin"), Projection("twin")])
    with pytest.raises(ProjectionError, match="on_error"):
        Projection("p", on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ProjectionError, match="not an event type name"):
        Projection("p", {"Player Moved": lambda e, d: None})
    with pytest.raises(ProjectionError, match="two handlers for PlayerMoved"):
        p = Projection("p")
        p.add("PlayerMoved", lambda e, d: None)
        p.add("PlayerMoved", lambda e, d: None)
    assert store.projection_records() == []


def test_a_handler_for_an_unknown_event_type_is_warned_about(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.append_event(event("p-1", 1))
    projection = Projection("typo", {"PlayerMovd": lambda e, d: None})
    with caplog.at_level(logging.WARNING):
        StoreTailSource().catch_up(ProjectionRunner(store, [projection]))
    assert "handles PlayerMovd, but no event of that type is stored" in caplog.text


def test_an_older_code_version_refuses_to_run(store: EventStore) -> None:
    store.register_projection("counts", 3)
    old, _ = counting()
    with pytest.raises(ProjectionError, match="built by version 3, newer than this code"):
        StoreTailSource().catch_up(ProjectionRunner(store, [old]))


def test_the_one_line_form(store: EventStore) -> None:
    store.append_events([event("p-1", 1, zone="a"), event("p-1", 2, zone="b")])

    def handle_moved(e: Event, documents: Documents) -> None:
        documents.put(e.aggregate_id, {"zone": e.payload["zone"]})

    readable(store)
    projector = Projector(store)
    projector.project("player-positions", handle_moved, event_types=["PlayerMoved"])
    projector.catch_up()
    assert projector.get("player-positions", "p-1") == {"zone": "b"}


def test_gap_filling_reads_upcast_events(store_factory: StoreFactory) -> None:
    upcasters = Upcasters()

    @upcasters.register("PlayerMoved", from_version=1)
    def _to_v2(payload: dict[str, Any]) -> dict[str, Any]:
        return {"position": [payload["x"], payload["y"]]}

    store = store_factory(upcasters)
    seen = Projection("seen")

    @seen.on("PlayerMoved")
    def handle(e: Event, documents: Documents) -> None:
        documents.update(
            e.aggregate_id, lambda d: {"at": [*d.get("at", []), e.payload["position"]]}
        )

    history = [event("p-1", v, x=v, y=v) for v in (1, 2, 3)]
    store.append_events(history)
    store.register_projection("seen", 1)
    live = [upcasters.upcast(history[0]), upcasters.upcast(history[2])]  # v2 never arrived
    assert Applier(store, seen).apply(live).filled == 1
    assert store.get_document("seen", "p-1") == {"at": [[1, 1], [2, 2], [3, 3]]}


def test_a_record_the_store_does_not_have_is_dead_lettered_not_applied(
    store: EventStore, counts: tuple[Projection, dict[str, Any], Applier]
) -> None:
    _, _, applier = counts
    stranger = event("stranger", 3, zone="z")  # versions 1 and 2 are nowhere
    letters: list[Any] = []

    class Sink:
        def send(self, projection: str, sent: Any) -> None:
            letters.extend(sent)

    applier.dead_letters = Sink()
    result = applier.apply([stranger])
    assert result.applied == 0 and store.get_document("counts", "stranger") is None
    assert [dict(h)["error_type"].decode() for h in (letter.headers for letter in letters)] == [
        "NotInStore"
    ]


def test_a_document_holding_nul_parks_on_every_backend(store: EventStore) -> None:
    projection = Projection("nul")

    @projection.on("PlayerMoved")
    def handle(e: Event, documents: Documents) -> None:
        documents.put(e.aggregate_id, {"name": "a\x00b"})

    store.register_projection("nul", 1)
    store.append_event(event("p-1", 1))
    result = Applier(store, projection).apply([event("p-1", 1)])
    assert "NUL" in result.parked[0].message


def test_find_compares_scalars_only(store: EventStore) -> None:
    store.register_projection("docs", 1)
    for value in (["a"], {"k": 1}):
        with pytest.raises(InvalidQueryError, match="string, number, bool or None"):
            store.find_documents("docs", "tags", value)


def test_a_handler_with_the_wrong_arity_is_refused_at_definition() -> None:
    with pytest.raises(ProjectionError, match=r"two arguments, \(event, documents\)"):
        Projection("p", {"PlayerMoved": lambda e: None})  # type: ignore[dict-item,misc]
