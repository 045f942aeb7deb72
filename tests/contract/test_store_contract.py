"""The store contract (DESIGN section 4), run against every backend through `store`."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest

from eventstore import (
    ConcurrencyError,
    DuplicateEventError,
    Event,
    EventStore,
    EventValidationError,
    InvalidQueryError,
    MigrationError,
)
from eventstore.store import MAX_READ_LIMIT
from eventstore.store._migrations import load_migrations
from eventstore.store._rows import PAGE_SIZE
from eventstore.versioning import Upcasters
from tests.conftest import StoreFactory
from tests.helpers import T0, event, history


def all_events(store: EventStore) -> list[Event]:
    out: list[Event] = []
    after = 0
    while page := store.read_all(after, 1000):
        out.extend(page)
        after = page[-1].position or 0
    return out


# -- appending ----------------------------------------------------------------------------


def test_an_appended_event_reads_back_with_every_field(store: EventStore) -> None:
    sent = Event(
        id="0b7c4a52-5d0c-4d8e-9a39-3f2f6a1c0001",
        event_type="ItemPickedUp",
        aggregate_id="player-é-1",
        aggregate_type="Player",
        version=1,
        timestamp=datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=timezone(timedelta(hours=2))),
        payload={
            "item": "sword",
            "stats": {"dmg": 12.5, "tags": ["rare", None, True]},
            "n": 10**15,
        },
        metadata={"user": "u-1", "correlation_id": "c-9", "causation_id": None},
        schema_version=1,
    )
    position = store.append_event(sent)
    [got] = list(store.get_events_by_aggregate("player-é-1"))
    assert got.position == position >= 1
    assert got.same_content(sent)
    assert got.timestamp == datetime(2026, 3, 4, 3, 6, 7, 891011, tzinfo=UTC)
    assert got.timestamp.utcoffset() == timedelta(0)
    assert got.recorded_at is not None and got.recorded_at.tzinfo is not None


def test_positions_increase_and_follow_batch_order(store: EventStore) -> None:
    first = store.append_events([event("a", 1), event("b", 1), event("a", 2)])
    second = store.append_event(event("b", 2))
    assert first == sorted(first) and len(set(first)) == 3
    assert second > first[-1]
    assert [e.position for e in all_events(store)] == [*first, second]


def test_an_empty_batch_stores_nothing(store: EventStore) -> None:
    assert store.append_events([]) == []
    assert store.read_all(0, 10) == []


@pytest.mark.parametrize(("stored", "version"), [(0, 2), (0, 0 + 3), (2, 2), (2, 1), (2, 4)])
def test_a_version_other_than_current_plus_one_is_a_conflict(
    store: EventStore, stored: int, version: int
) -> None:
    if stored:
        store.append_events(history("p", stored))
    with pytest.raises(ConcurrencyError) as caught:
        store.append_event(event("p", version))
    assert caught.value.aggregate_id == "p"
    assert caught.value.expected_version == stored + 1
    assert caught.value.actual_version == version
    assert caught.value.current_version == stored
    assert len(all_events(store)) == stored


def test_a_failing_batch_stores_nothing(store: EventStore) -> None:
    store.append_events(history("p", 2))
    batch = [event("q", 1), event("q", 2), event("p", 2)]  # p is at 2: its event conflicts
    with pytest.raises(ConcurrencyError):
        store.append_events(batch)
    assert [e.aggregate_id for e in all_events(store)] == ["p", "p"]
    # q was not created either: its history can still start at version 1.
    store.append_event(event("q", 1))


def test_a_batch_with_gaps_or_twice_the_same_id_is_rejected_before_storing(
    store: EventStore,
) -> None:
    with pytest.raises(EventValidationError, match="consecutive"):
        store.append_events([event("p", 1), event("p", 3)])
    one = event("p", 1)
    with pytest.raises(EventValidationError, match="twice"):
        store.append_events([one, one.model_copy(update={"aggregate_id": "q"})])
    with pytest.raises(EventValidationError, match="aggregate_type"):
        store.append_events([event("p", 1), event("p", 2, aggregate_type="World")])
    assert all_events(store) == []


def test_an_aggregate_keeps_its_type(store: EventStore) -> None:
    store.append_event(event("p", 1))
    with pytest.raises(EventValidationError) as caught:
        store.append_event(event("p", 2, aggregate_type="World"))
    assert caught.value.field == "aggregate_type"
    with pytest.raises(EventValidationError):
        store.append_event(event("p", 1, aggregate_type="World"))


def test_resending_a_stored_event_returns_its_position_and_writes_nothing(
    store: EventStore,
) -> None:
    e1, e2 = history("p", 2)
    positions = store.append_events([e1, e2])
    assert store.append_event(e1) == positions[0]
    assert store.append_events([e1, e2]) == positions
    store.append_event(event("p", 3))
    assert store.append_event(e2) == positions[1]  # still idempotent after later appends
    assert len(all_events(store)) == 3


def test_an_id_stored_with_other_content_is_a_duplicate(store: EventStore) -> None:
    e1 = event("p", 1)
    store.append_event(e1)
    changed = e1.model_copy(update={"payload": {"x": 99}})
    with pytest.raises(DuplicateEventError) as caught:
        store.append_event(changed)
    assert caught.value.event_id == e1.id
    reused = e1.model_copy(update={"version": 2})  # a new fact must not reuse an id
    with pytest.raises(DuplicateEventError):
        store.append_event(reused)
    with pytest.raises(DuplicateEventError, match="other events of this batch"):
        store.append_events([e1, event("p", 2)])
    assert len(all_events(store)) == 1


# -- reading ------------------------------------------------------------------------------


def test_events_by_aggregate_ascend_from_a_version_across_pages(store: EventStore) -> None:
    count = PAGE_SIZE * 2 + 7
    store.append_events(history("long", count))
    store.append_events(history("other", 3))
    versions = [e.version for e in store.get_events_by_aggregate("long")]
    assert versions == list(range(1, count + 1))
    assert [e.version for e in store.get_events_by_aggregate("long", from_version=count - 1)] == [
        count - 1,
        count,
    ]
    assert list(store.get_events_by_aggregate("nobody")) == []


def test_events_by_type_are_in_the_half_open_range_ordered_by_position(store: EventStore) -> None:
    times = [T0 + timedelta(minutes=m) for m in (5, 1, 3, 2, 4)]  # out of time order
    for i, at in enumerate(times):
        store.append_event(event(f"p{i}", 1, at=at))
    store.append_event(event("w", 1, event_type="WorldCreated", aggregate_type="World", at=T0))
    got = list(
        store.get_events_by_type(
            "PlayerMoved", T0 + timedelta(minutes=2), T0 + timedelta(minutes=5)
        )
    )
    assert [e.timestamp for e in got] == [T0 + timedelta(minutes=m) for m in (3, 2, 4)]
    assert [e.position for e in got] == sorted(e.position or 0 for e in got)
    assert len(list(store.get_events_by_type("PlayerMoved"))) == 5
    assert [e.aggregate_id for e in store.get_events_by_type("WorldCreated")] == ["w"]


def test_events_by_type_page_through_long_results(store: EventStore) -> None:
    store.append_events([event(f"p{i}", 1) for i in range(PAGE_SIZE + 3)])
    assert len(list(store.get_events_by_type("PlayerMoved"))) == PAGE_SIZE + 3


def test_all_events_are_ordered_by_time_then_position_and_limited(store: EventStore) -> None:
    for i, minute in enumerate((3, 1, 2, 1, 0)):
        store.append_event(event(f"p{i}", 1, at=T0 + timedelta(minutes=minute)))
    got = store.get_all_events(T0 + timedelta(minutes=1), limit=3)
    assert [(e.aggregate_id, e.timestamp.minute) for e in got] == [("p1", 1), ("p3", 1), ("p2", 2)]
    assert len(store.get_all_events(limit=100)) == 5


def test_read_all_resumes_after_a_position(store: EventStore) -> None:
    positions = store.append_events([event(f"p{i}", 1) for i in range(25)])
    assert [e.position for e in store.read_all(0, 10)] == positions[:10]
    assert [e.position for e in store.read_all(positions[9], 10)] == positions[10:20]
    assert [e.position for e in store.read_all(positions[-1], 10)] == []


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.read_all(-1, 10),
        lambda s: s.read_all(0, 0),
        lambda s: s.read_all(0, MAX_READ_LIMIT + 1),
        lambda s: s.get_all_events(datetime(2026, 1, 1), 10),
        lambda s: list(s.get_events_by_type("PlayerMoved", datetime(2026, 1, 1))),
        lambda s: list(s.get_events_by_aggregate("p", 0)),
        lambda s: list(s.get_events_by_aggregate("", 1)),
    ],
)
def test_bad_read_arguments_are_refused_clearly(store: EventStore, call: object) -> None:
    with pytest.raises(InvalidQueryError):
        call(store)  # type: ignore[operator]


def test_reads_return_events_upcast_to_the_current_schema(store_factory: StoreFactory) -> None:
    upcasters = Upcasters()

    @upcasters.register("PlayerMoved", from_version=1)
    def _to_v2(payload: dict[str, object]) -> dict[str, object]:
        return {"position": [payload["x"], payload["y"]]}

    @upcasters.register("PlayerMoved", from_version=2)
    def _to_v3(payload: dict[str, object]) -> dict[str, object]:
        return {**payload, "zone": "spawn"}

    writer = store_factory()
    writer.append_event(event("p", 1, x=1, y=2))
    reader = store_factory(upcasters)
    for got in (
        next(iter(reader.get_events_by_aggregate("p"))),
        reader.read_all(0, 1)[0],
        reader.get_all_events(None, 1)[0],
        next(iter(reader.get_events_by_type("PlayerMoved"))),
    ):
        assert got.schema_version == 3
        assert got.payload == {"position": [1, 2], "zone": "spawn"}
    # The stored row is unchanged: a reader without upcasters sees version 1.
    assert writer.read_all(0, 1)[0].payload == {"x": 1, "y": 2}


# -- schema -------------------------------------------------------------------------------


def test_migrate_is_idempotent(store_factory: StoreFactory, store: EventStore) -> None:
    assert store.migrate() == []
    assert store_factory().migrate() == []


# -- concurrency --------------------------------------------------------------------------


def test_racing_writers_win_each_version_exactly_once(store_factory: StoreFactory) -> None:
    writers, versions = 8, 15
    store = store_factory()
    wins: Counter[int] = Counter()
    conflicts: list[ConcurrencyError] = []
    lock = threading.Lock()
    barrier = threading.Barrier(writers)

    def race(worker: int) -> None:
        barrier.wait()
        for version in range(1, versions + 1):
            try:
                store.append_event(event("contested", version, worker=worker))
            except ConcurrencyError as error:
                with lock:
                    conflicts.append(error)
                continue
            with lock:
                wins[version] += 1

    threads = [threading.Thread(target=race, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins == Counter(dict.fromkeys(range(1, versions + 1), 1))
    assert len(conflicts) == writers * versions - versions
    assert all(c.expected_version == c.current_version + 1 for c in conflicts)
    assert all(c.expected_version != c.actual_version for c in conflicts)
    assert [e.version for e in store.get_events_by_aggregate("contested")] == list(
        range(1, versions + 1)
    )
    # In the global log too, an aggregate's events come in version order.
    assert [e.version for e in all_events(store)] == list(range(1, versions + 1))


def test_a_tailing_reader_sees_every_event_of_concurrent_writers_once(
    store_factory: StoreFactory, backend: str
) -> None:
    # The full-size run (8 writers x 2,000 events) is in tests/integration for PostgreSQL.
    writers, per_writer = 4, 150
    tail_log(store_factory, writers, per_writer)


def tail_log(store_factory: StoreFactory, writers: int, per_writer: int) -> None:
    """Writers append (singly and in small batches) while a reader tails `read_all` with
    small pages; the reader must see every event exactly once, in increasing positions."""
    store = store_factory()
    reader_store = store_factory()
    total = writers * per_writer
    done = threading.Event()
    errors: list[BaseException] = []
    seen: list[int] = []
    seen_ids: list[str] = []

    def write(worker: int) -> None:
        try:
            version = 1
            while version <= per_writer:
                size = 1 if version % 3 else min(5, per_writer - version + 1)
                batch = history(f"w{worker}", size, start=version)
                store.append_events(batch)
                version += size
        except BaseException as error:
            errors.append(error)

    def tail() -> None:
        after = 0
        try:
            while True:
                finished = done.is_set()
                page = reader_store.read_all(after, 37)
                for e in page:
                    seen.append(e.position or 0)
                    seen_ids.append(e.id)
                if page:
                    after = page[-1].position or 0
                elif finished:
                    return
        except BaseException as error:
            errors.append(error)

    reader = threading.Thread(target=tail)
    reader.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    assert errors == []
    assert all(a < b for a, b in itertools.pairwise(seen)), "positions must increase"
    stored = all_events(store)
    assert len(stored) == total
    assert sorted(seen_ids) == sorted(e.id for e in stored), "the tail missed or repeated events"
    for worker in range(writers):
        versions = [e.version for e in stored if e.aggregate_id == f"w{worker}"]
        assert versions == list(range(1, per_writer + 1)), "the log must keep version order"


def test_an_unmigrated_store_says_to_migrate(store_factory: StoreFactory, backend: str) -> None:
    store = store_factory(migrate=False, fresh=True)
    with pytest.raises(MigrationError, match="eventstore migrate"):
        store.append_event(event("p", 1))
    with pytest.raises(MigrationError, match="eventstore migrate"):
        store.read_all(0, 10)
    assert store.migrate() == [m.name for m in load_migrations(backend)]
    assert store.append_event(event("p", 1)) >= 1
