"""Projections on PostgreSQL where concurrency is the point: two batches holding the same
aggregate at once (a partition handed over mid-batch), and readers during a rebuild."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import psycopg
import pytest

from eventstore import EventStore, open_store
from eventstore.consumers import (
    Applier,
    Documents,
    Projection,
    ProjectionRunner,
    StoreTailSource,
    rebuild,
)
from eventstore.events import Event
from tests.contract.test_projections import Running, counting, game, model, reference
from tests.helpers import event, wait_for


@pytest.fixture
def pg_store(postgres_url: str, pg_schema: str) -> Iterator[EventStore]:
    store = open_store(postgres_url, schema=pg_schema)
    store.migrate()
    yield store
    store.close()


def waiting_on(url: str, pid: int) -> int:
    """Sessions waiting for a lock that the session `pid` holds."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            (pid,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_two_batches_holding_one_aggregate_apply_it_once(
    pg_store: EventStore, postgres_url: str, pg_schema: str
) -> None:
    """The first batch holds the aggregate's checkpoint row until it commits: the second
    (another runner that got the partition in a rebalance) waits for it, then skips what it
    applied. Without the lock both would apply the event."""
    applied: list[str] = []
    first_inside = threading.Event()
    projection = Projection("once")

    @projection.on("PlayerMoved")
    def handle(e: Event, documents: Documents) -> None:
        me = threading.current_thread().name
        applied.append(me)
        if e.version == 1:
            return
        documents.update(e.aggregate_id, lambda d: {"applied": d.get("applied", 0) + 1})
        if me == "first":
            first_inside.set()
            # Hold the transaction open until the second batch waits on our row lock (with
            # the lock gone, it never does: then both apply and the test fails).
            pid = documents.connection.info.backend_pid
            with contextlib.suppress(AssertionError):
                wait_for(lambda: waiting_on(postgres_url, pid) > 0, "the second batch", 10)

    pg_store.register_projection("once", 1)
    earlier, moved = event("p-1", 1), event("p-1", 2)
    pg_store.append_events([earlier, moved])
    applier = Applier(pg_store, projection)
    applier.apply([earlier])  # the checkpoint row exists: only its lock can serialise
    applied.clear()
    first = threading.Thread(target=applier.apply, args=([moved],), name="first")
    second = threading.Thread(target=applier.apply, args=([moved],), name="second")
    first.start()
    assert first_inside.wait(10)
    second.start()
    first.join(30)
    second.join(30)
    assert applied == ["first"]
    assert pg_store.get_document("once", "p-1") == {"applied": 1}
    assert pg_store.projection_checkpoint("once", "p-1") == 2


def test_readers_see_one_whole_generation_throughout_a_rebuild_under_load(
    pg_store: EventStore,
) -> None:
    projection, _ = counting()
    history = game(40, 4)
    pg_store.append_events(history)
    running = Running(
        ProjectionRunner(pg_store, [projection], source=StoreTailSource(poll_interval=0.05))
    )
    wait_for(lambda: model(pg_store) == reference(history), "the first generation")
    keys = set(model(pg_store))
    more = game(40, 6, start=5)
    stop = threading.Event()
    samples: list[int] = []
    bad: list[str] = []

    def write() -> None:
        for start in range(0, len(more), 20):
            pg_store.append_events(more[start : start + 20])

    def read() -> None:
        floor: dict[str, int] = {}
        while not stop.is_set():
            page = dict(pg_store.list_documents("counts", "", 1000))
            samples.append(len(page))
            if set(page) != keys:
                bad.append(f"documents {sorted(set(page) ^ keys)[:5]} differ")
            for key, doc in page.items():
                now = doc.get("applied", doc.get("sum", 0))
                if now < floor.get(key, 0):
                    bad.append(f"{key} went back from {floor[key]} to {now}")
                floor[key] = max(now, floor.get(key, 0))

    readers = [threading.Thread(target=read) for _ in range(2)]
    writer = threading.Thread(target=write)
    for thread in [*readers, writer]:
        thread.start()
    try:
        generation = rebuild(pg_store, projection, Applier(pg_store, projection), batch_size=50)
        writer.join()
        wait_for(lambda: model(pg_store) == reference(history + more), "the model after all")
    finally:
        stop.set()
        for thread in [*readers, writer]:
            thread.join()
        running.stop()
    assert generation == 2 and running.error is None
    assert samples and not bad, bad[:5]
