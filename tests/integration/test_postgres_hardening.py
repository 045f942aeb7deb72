"""PostgreSQL: the defects found by review, each proven fixed against the real server."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, timedelta

import psycopg
import pytest
from psycopg import sql

from eventstore import (
    ConcurrencyError,
    ConfigurationError,
    Event,
    EventStore,
    StoreUnavailableError,
    open_store,
)
from eventstore.errors import StoreBusyError
from eventstore.replay import Reducer, Replayer
from eventstore.store import Claim
from eventstore.store.postgres import PostgresEventStore
from tests.conftest import StoreFactory, unique_name
from tests.contract.test_store_contract import all_events
from tests.helpers import event, history, url_with, wait_for
from tests.integration.test_postgres import raw

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend() -> str:
    return "postgres"


def settled_events(store: EventStore, timeout: float = 30.0) -> list[Event]:
    """The whole log once no transaction anywhere in the cluster holds its horizon back
    (other sessions' transactions make readers wait, by design)."""
    wait_for(lambda: store.log_horizon().events_behind == 0, "the horizon to pass", timeout)
    return all_events(store)


# -- time zones ---------------------------------------------------------------------------


@pytest.fixture
def database_in_kolkata(postgres_url: str) -> Iterator[str]:
    """A database of its own whose sessions default to a time zone 5:30 east of UTC."""
    name = unique_name("tz")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET TimeZone = 'Asia/Kolkata'").format(sql.Identifier(name))
        )
    yield url_with(postgres_url, dbname=name)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_timestamps_come_back_in_utc_whatever_the_server_zone(database_in_kolkata: str) -> None:
    with psycopg.connect(database_in_kolkata) as conn:
        assert conn.execute("SHOW TimeZone").fetchone() == ("Asia/Kolkata",)
    with open_store(database_in_kolkata) as store:
        store.migrate()
        written = event("p", 1)
        store.append_event(written)
        for read in (next(store.get_events_by_aggregate("p")), store.read_all(0, 10)[0]):
            assert read.timestamp == written.timestamp
            assert read.timestamp.utcoffset() == timedelta(0)
            assert read.recorded_at is not None and read.recorded_at.tzinfo == UTC
            assert read.to_dict()["timestamp"].endswith("Z")


# -- errors that say whether to retry ------------------------------------------------------


def _deadlocks(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_deadlock_between_two_batches_is_resolved_as_a_conflict(
    store_factory: StoreFactory, postgres_url: str
) -> None:
    """Two batches creating the same 300 aggregates in opposite orders wait on each other's
    unique keys: PostgreSQL aborts one (40P01). The store runs it again, finds the other's
    events, and says so with a ConcurrencyError, not a bare driver error."""
    store = store_factory()
    before = _deadlocks(postgres_url)
    for round_ in range(4):
        names = [f"r{round_}-a{n}" for n in range(300)]
        batches = [[event(n, 1) for n in names], [event(n, 1) for n in reversed(names)]]
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def send(batch: list[Event], barrier: threading.Barrier, outcomes: list[str]) -> None:
            barrier.wait()
            try:
                store.append_events(batch)
                outcomes.append("stored")
            except ConcurrencyError:
                outcomes.append("conflict")
            except Exception as error:
                outcomes.append(repr(error))

        threads = [threading.Thread(target=send, args=(b, barrier, outcomes)) for b in batches]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["conflict", "stored"]
        # Atomic: the loser (rolled back by the deadlock, or refused) left nothing behind.
        stored = {e.id for e in all_events(store) if e.aggregate_id.startswith(f"r{round_}-")}
        assert stored in ({e.id for e in batches[0]}, {e.id for e in batches[1]})
    # The scenario really happened (statistics reach pg_stat_database within a second or so).
    deadline = time.monotonic() + 20
    while _deadlocks(postgres_url) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _deadlocks(postgres_url) > before, "no deadlock occurred: the test proved nothing"


def test_an_exhausted_pool_says_busy_not_down(postgres_url: str, pg_schema: str) -> None:
    with PostgresEventStore(
        postgres_url, schema=pg_schema, max_connections=1, connect_timeout=1
    ) as store:
        store.migrate()
        # The only connection, held by someone else.
        with store._pool.connection(), pytest.raises(StoreBusyError, match="max_conn") as caught:
            store.read_all(0, 10)
    assert caught.value.retriable
    assert not isinstance(caught.value, StoreUnavailableError)
    assert "services" not in str(caught.value)


def test_giving_up_after_repeated_races_reports_the_true_current_version(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The give-up path (every attempt lost to a predecessor still committing, simulated by
    an explanation that never finds the conflict) must carry the aggregate's real version."""
    store.append_events(history("p", 3))
    monkeypatch.setattr(store, "_explain_conflict", lambda events: None)
    with pytest.raises(ConcurrencyError) as caught:
        store.append_event(event("p", 2))
    assert caught.value.current_version == 3
    assert caught.value.expected_version == 4
    assert caught.value.actual_version == 2
    assert not caught.value.retriable


# -- the SQL function cannot be misused -----------------------------------------------------


def test_append_events_ignores_the_callers_search_path(
    store: EventStore, postgres_url: str, pg_schema: str
) -> None:
    """A caller whose search_path finds look-alike tables first must not redirect appends."""
    decoy = unique_name("decoy")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(decoy)))
        for table in ("events", "outbox", "position_base"):
            conn.execute(
                sql.SQL("CREATE TABLE {}.{} (LIKE {}.{} INCLUDING ALL)").format(
                    sql.Identifier(decoy),
                    sql.Identifier(table),
                    sql.Identifier(pg_schema),
                    sql.Identifier(table),
                )
            )
        conn.execute(
            sql.SQL("INSERT INTO {}.position_base DEFAULT VALUES").format(sql.Identifier(decoy))
        )
        conn.execute(
            sql.SQL("SET search_path TO {}, {}").format(
                sql.Identifier(decoy), sql.Identifier(pg_schema)
            )
        )
        e = event("p", 1)
        conn.execute(
            "SELECT append_events(%s::json, '[]')", (json.dumps([{**e.to_dict(), "bucket": 0}]),)
        )
        decoy_rows = conn.execute("SELECT count(*) FROM events").fetchone()
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(decoy)))
    assert decoy_rows == (0,)
    assert [x.id for x in settled_events(store)] == [e.id]


def test_the_batch_limit_holds_for_callers_of_the_sql_function(
    store: EventStore, postgres_url: str, pg_schema: str
) -> None:
    """Positions leave 16 bits to a batch: more than 10,000 events would run into the next
    transaction's positions. The function refuses, whoever calls it."""
    batch = [{**event(f"a{n}", 1).to_dict(), "bucket": 0} for n in range(10_001)]
    with (
        raw(postgres_url, pg_schema) as conn,
        pytest.raises(psycopg.Error, match="10000") as caught,
    ):
        conn.execute("SELECT append_events(%s::json, '[]')", (json.dumps(batch),))
    assert caught.value.sqlstate == "ES413"
    assert all_events(store) == []


# -- role separation -----------------------------------------------------------------------


def test_an_application_role_appends_and_reads_but_cannot_change_history(
    store: EventStore, postgres_url: str, pg_schema: str, app_role: str
) -> None:
    assert isinstance(store, PostgresEventStore)
    store.append_events(history("p", 2))
    with pytest.raises(ConfigurationError, match="does not exist"):
        store.grant_app_role(unique_name("nobody"))
    store.grant_app_role(app_role)
    store.grant_app_role(app_role)  # idempotent
    app_url = url_with(postgres_url, user=app_role)
    with open_store(app_url, schema=pg_schema) as app:
        app.append_event(event("p", 3))
        assert [e.version for e in app.get_events_by_aggregate("p")] == [1, 2, 3]
        app.outbox_remove([e.position or 0 for e in app.outbox_batch(1)])
        # Replay's tables: snapshots written and read, control requests recorded.
        folds = Reducer("Player", initial=0, snapshot_every=2, apply=lambda n, _e: n + 1)
        assert Replayer(app, [folds]).replay_to("p").state == 3
        assert app.snapshot_count("p") == 1
        assert Replayer(app, [folds]).replay_to("p").snapshot_version == 2
        assert app.claim_request("r-1", "rebuild", "w", 60.0) == Claim(None, None)
        assert app.finish_request("r-1", "w", "{}")
        with pytest.raises(ConfigurationError, match="may not"):
            app.migrate()
    with psycopg.connect(app_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        for statement in (
            "UPDATE events SET payload = '{}'",
            "DELETE FROM events",
            "INSERT INTO events SELECT * FROM events LIMIT 1",
            "ALTER TABLE events DISABLE TRIGGER ALL",
            "UPDATE position_base SET base = 0",
        ):
            with pytest.raises(psycopg.Error) as caught:
                conn.execute(statement)
            assert caught.value.sqlstate in ("42501", "42809"), statement
    assert [e.version for e in store.get_events_by_aggregate("p")] == [1, 2, 3]


# -- the outbox ------------------------------------------------------------------------------


def test_a_large_outbox_is_counted_cheaply_and_says_so(store: EventStore) -> None:
    store.append_events([event(f"a{n}", 1) for n in range(10_000)])
    small = store.outbox_status()
    assert (small.depth, small.estimated) == (10_000, False)
    store.append_events([event("b", 1), event("c", 1)])
    large = store.outbox_status()
    assert large.estimated and large.depth >= 10_001
    assert large.oldest_enqueued_at is not None


def test_a_shard_reads_only_its_buckets_in_position_order(store: EventStore) -> None:
    from eventstore.store._outbox import outbox_bucket

    store.append_events([event(f"a{n}", v) for n in range(40) for v in (1, 2)])
    seen: Counter[int] = Counter()
    for shard in range(3):
        batch = store.outbox_batch(1000, shard=shard, shards=3)
        positions = [e.position or 0 for e in batch]
        assert positions == sorted(positions)
        assert {outbox_bucket(e.aggregate_id) % 3 for e in batch} <= {shard}
        seen.update(positions)
    assert len(seen) == 80 and set(seen.values()) == {1}
    first_two = store.outbox_batch(2, shard=1, shards=3)
    assert first_two == store.outbox_batch(1000, shard=1, shards=3)[:2]


def test_a_shard_drained_in_small_batches_gets_each_of_its_events_once_in_order(
    store: EventStore,
) -> None:
    """Appends in many transactions (positions far apart), a shard's relay draining a few at
    a time while another shard's rows stay: each batch is the oldest of the shard's rows."""
    from eventstore.store._outbox import outbox_bucket

    for version in (1, 2, 3):
        for n in range(30):
            store.append_event(event(f"a{n}", version))
    mine = [e for e in store.outbox_batch(1000) if outbox_bucket(e.aggregate_id) % 2 == 1]
    drained: list[Event] = []
    while batch := store.outbox_batch(7, shard=1, shards=2):
        assert batch == [e for e in mine if e not in drained][:7], "the oldest of the shard"
        drained.extend(batch)
        store.outbox_remove([e.position or 0 for e in batch])
    assert drained == mine
    others = store.outbox_batch(1000, shard=0, shards=2)
    assert len(others) == 90 - len(mine) > 0


def test_an_append_never_passes_a_predecessor_still_committing(
    store: EventStore, postgres_url: str, pg_schema: str
) -> None:
    """Version 2 needs version 1 committed: while it is in flight, appending 2 is a conflict
    (not a gap), and once it commits, 2 is stored after it in the log."""
    from tests.integration.test_postgres import call_append

    first = event("p", 1)
    with raw(postgres_url, pg_schema, autocommit=False) as in_flight:
        call_append(in_flight, first)
        with pytest.raises(ConcurrencyError) as caught:
            store.append_event(event("p", 2))
        assert caught.value.current_version == 0
        in_flight.commit()
    second = store.append_event(event("p", 2))
    log = [e for e in settled_events(store) if e.aggregate_id == "p"]
    assert [e.version for e in log] == [1, 2]
    assert (log[0].position or 0) < second == log[1].position


def test_roles_that_could_append_before_the_upgrade_still_can(
    postgres_url: str, pg_schema: str, app_role: str
) -> None:
    """0001 let any role with INSERT on events append; 0002 makes the function the only way
    in, and must not lock those roles out."""
    from eventstore.store._migrations import load_migrations

    first = load_migrations("postgres")[0]
    with psycopg.connect(postgres_url, autocommit=True) as conn, conn.transaction():
        schema = sql.Identifier(pg_schema)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema))
        conn.execute(
            "CREATE TABLE migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(first.sql.encode())
        conn.execute("INSERT INTO migrations (version, name) VALUES (1, %s)", (first.name,))
        role = sql.Identifier(app_role)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT ON events, outbox, position_base TO {}").format(role)
        )
    with open_store(postgres_url, schema=pg_schema) as owner:
        assert owner.migrate()[0].startswith("0002")
    with open_store(url_with(postgres_url, user=app_role), schema=pg_schema) as app:
        app.append_events(history("p", 2))
        assert [e.version for e in app.get_events_by_aggregate("p")] == [1, 2]
