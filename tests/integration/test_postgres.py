"""PostgreSQL-specific guarantees, against the real server."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import psycopg
import pytest
from psycopg import sql

from eventstore import (
    ConcurrencyError,
    ConfigurationError,
    Event,
    EventStore,
    MigrationError,
    StoreUnavailableError,
    open_store,
)
from eventstore.store._outbox import outbox_bucket
from eventstore.store.postgres import PostgresEventStore
from tests.conftest import StoreFactory
from tests.contract.test_store_contract import all_events, tail_log
from tests.helpers import event, history

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend() -> str:
    return "postgres"


def raw(
    url: str, schema: str, *, autocommit: bool = True
) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(url, autocommit=autocommit)
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    if not autocommit:
        conn.commit()
    return conn


def call_append(conn: psycopg.Connection[tuple[object, ...]], e: Event) -> None:
    """append_events() called as SQL, bypassing the store (a new aggregate's first event)."""
    conn.execute(
        "SELECT append_events(%s::json, '[]')", (json.dumps([{**e.to_dict(), "bucket": 0}]),)
    )


def test_a_tailing_reader_misses_nothing_from_8_writers_of_2000_events(
    store_factory: StoreFactory,
) -> None:
    tail_log(store_factory, writers=8, per_writer=2000)


def test_read_all_does_not_pass_a_transaction_still_in_flight(
    store: EventStore, postgres_url: str, pg_schema: str
) -> None:
    """The mechanism itself, made deterministic: transaction A reserves position n and stays
    open; B appends n+1 and commits. A reader that returned n+1 now would skip n for ever."""
    store.append_event(event("before", 1))
    with raw(postgres_url, pg_schema, autocommit=False) as in_flight:
        e = event("slow", 1)
        call_append(in_flight, e)
        later = store.append_event(event("fast", 1))
        visible = [x.aggregate_id for x in store.read_all(0, 100)]
        assert visible == ["before"], "read_all passed an in-flight transaction"
        in_flight.commit()
    got = store.read_all(0, 100)
    assert [x.aggregate_id for x in got] == ["before", "slow", "fast"]
    assert got[-1].position == later


def test_postgres_itself_rejects_changing_or_removing_events(
    store: EventStore, postgres_url: str, pg_schema: str
) -> None:
    store.append_events(history("p", 2))
    with raw(postgres_url, pg_schema) as conn:
        for statement in (
            "UPDATE events SET payload = '{}' WHERE version = 1",
            "DELETE FROM events WHERE version = 2",
            "TRUNCATE events CASCADE",
        ):
            with pytest.raises(psycopg.Error, match="immutable") as caught:
                conn.execute(statement)
            assert caught.value.sqlstate == "ES405"
    assert [e.version for e in store.get_events_by_aggregate("p")] == [1, 2]


def test_every_append_writes_its_outbox_rows_in_the_same_transaction(
    store: EventStore, postgres_url: str, pg_schema: str
) -> None:
    positions = store.append_events([event("p", 1), event("w", 1, aggregate_type="World")])
    with pytest.raises(ConcurrencyError):
        store.append_events([event("q", 1), event("p", 1)])
    with raw(postgres_url, pg_schema) as conn:
        rows = conn.execute("SELECT position, bucket FROM outbox ORDER BY position").fetchall()
    assert rows == [(positions[0], outbox_bucket("p")), (positions[1], outbox_bucket("w"))]
    assert [e.aggregate_id for e in store.outbox_batch(10)] == ["p", "w"]


def test_sixteen_racing_writers_each_get_their_own_conflict(store_factory: StoreFactory) -> None:
    store = store_factory(max_connections=16)
    writers = 16
    barrier = threading.Barrier(writers)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def race() -> None:
        barrier.wait()
        try:
            store.append_event(event("hot", 1))
            result = "won"
        except ConcurrencyError as error:
            assert (error.expected_version, error.actual_version) == (2, 1)
            result = "conflict"
        with lock:
            outcomes[result] += 1

    threads = [threading.Thread(target=race) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == {"won": 1, "conflict": writers - 1}
    # A failed append must not leave the position lock held: appends still go through.
    store.append_event(event("hot", 2))
    assert len(all_events(store)) == 2


def test_a_retry_racing_its_original_still_stores_once(store_factory: StoreFactory) -> None:
    store = store_factory(max_connections=8)
    batch = history("p", 3)
    results: list[list[int]] = []
    barrier = threading.Barrier(6)

    def send() -> None:
        barrier.wait()
        results.append(store.append_events(batch))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and all(r == results[0] for r in results)
    assert len(all_events(store)) == 3


def test_an_unreachable_server_is_one_clear_error() -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:1/game.*unavailable"):
        open_store("postgresql://nobody@127.0.0.1:1/game")
    assert time.monotonic() - started < 15


def test_a_malformed_url_or_schema_is_a_configuration_error(postgres_url: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid PostgreSQL URL"):
        open_store("postgresql://host:notaport/db")
    with pytest.raises(ConfigurationError, match="not a valid name"):
        open_store(postgres_url, schema="Robert'); DROP TABLE events;--")
    with pytest.raises(ConfigurationError, match="unsupported store URL"):
        open_store("mysql://127.0.0.1/game")


def test_a_restored_database_is_refused_until_its_positions_are_rebased(
    store: EventStore, postgres_url: str, pg_schema: str
) -> None:
    """A logical dump restored into a new cluster restarts the transaction counter; appends
    must then refuse rather than hand out positions below those already read."""
    assert isinstance(store, PostgresEventStore)
    before = store.append_events(history("p", 3))
    with raw(postgres_url, pg_schema) as conn:  # the same effect as a younger cluster
        conn.execute("UPDATE position_base SET base = base - 1000000")
    with pytest.raises(MigrationError, match="rebase-positions"):
        store.append_event(event("p", 4))
    assert [e.position for e in store.get_events_by_aggregate("p")] == before
    # Above the horizon until the rebase: readers wait for them rather than pass them by.
    assert all_events(store) == []
    store.rebase_positions()
    assert [e.position for e in all_events(store)] == before
    after = store.append_event(event("p", 4))
    assert after > before[-1]
    assert [e.position for e in all_events(store)] == [*before, after]
    assert store.rebase_positions() == store.rebase_positions()  # a no-op when healthy


def test_appends_refuse_to_join_a_transaction_that_already_wrote(
    store: EventStore, postgres_url: str, pg_schema: str
) -> None:
    """Positions come from the append's own transaction id; inside a transaction that got its
    id earlier, an aggregate's positions could fall out of version order."""
    e = event("p", 1)
    with raw(postgres_url, pg_schema, autocommit=False) as conn:
        conn.execute("CREATE TEMP TABLE scratch (x int)")
        conn.execute("INSERT INTO scratch VALUES (1)")
        with pytest.raises(psycopg.Error, match="transaction of its own") as caught:
            call_append(conn, e)
        assert caught.value.sqlstate == "ES400"
    assert all_events(store) == []
