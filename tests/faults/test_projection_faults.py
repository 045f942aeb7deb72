"""Projections under faults, against the real PostgreSQL and the real broker: runner
processes killed mid-batch, runners joining under load or starting together on a backlog,
the broker stopped and the database restarted while events flow. Whatever happens, each event
changes the read model exactly once (DESIGN section 6): every player's list of applied
versions ends as [1..N], the zone totals equal what the store's events add up to, and nothing
was parked or skipped.

The runners are `eventstore project tests.faults.counting:PROJECTIONS --source kafka`
processes; events go in through the store in batches and out through an outbox relay in this
process. Each test has its own schema and topic prefix, hence its own topics and group.

The broker and database tests stop shared services (through scripts/services.sh): other
tests running at the same moment see the outage too. The database test is the last one.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from eventstore import EventStore
from eventstore.consumers import ProjectionRunner, StoreTailSource
from eventstore.store import ProjectionFailure
from tests.conftest import unique_name
from tests.contract.test_store_contract import all_events
from tests.faults.counting import NAME, PROJECTIONS
from tests.faults.harness import (
    TALLY,
    TALLY_BY_KEY,
    Launch,
    RunnerProcess,
    Tally,
    Writer,
    assert_exactly_once,
    behind,
    caught_up,
    create_event_topic,
    drained,
    player_event,
    players,
    settle,
    stop_all,
    totals,
    wait_until,
)
from tests.kafka_helpers import RelayThread

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]


@pytest.fixture
def backend() -> str:
    return "postgres"


@pytest.fixture
def prefix() -> str:
    return unique_name("f")


@pytest.fixture
def launch(
    postgres_url: str, pg_schema: str, kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> Iterator[Launch]:
    """Starts runner processes on this test's schema and topics (`launch(number)`); any still
    running after the test is stopped (the tests stop theirs and check how they exited)."""
    started: list[RunnerProcess] = []

    def start(number: int, tally: Tally = TALLY) -> RunnerProcess:
        runner = RunnerProcess(
            number,
            tally,
            url=postgres_url,
            schema=pg_schema,
            bootstrap=kafka_bootstrap,
            prefix=prefix,
            logs=tmp_path,
        )
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.ensure_stopped()


# -- the final check has teeth ----------------------------------------------------------------


def test_the_final_check_sees_a_duplicate_a_gap_a_wrong_total_and_a_parked_event(
    store: EventStore,
) -> None:
    """The check the fault tests end with, on a model built correctly, then changed in the
    database the way a broken guarantee would leave it: each change fails the check."""
    names = players(4)
    store.append_events([player_event(n, v) for v in range(1, 6) for n in names])
    # The catch-up reads the global log, up to its horizon: wait until the events are in it.
    wait_until(lambda: len(all_events(store)) == 20, "the events in the global log", timeout=60)
    StoreTailSource().catch_up(ProjectionRunner(store, PROJECTIONS))
    assert_exactly_once(store, names)

    def corrupt(key: str, change: Callable[[Any], Any]) -> None:
        document = change(store.get_document(NAME, key))
        with store.projection_transaction(NAME) as tx:
            if document is None:
                tx.write_documents({}, {}, [key])
            else:
                tx.write_documents({}, {key: json.dumps(document)}, [])

    def problems() -> str:
        with pytest.raises(AssertionError) as failed:
            assert_exactly_once(store, names)
        return str(failed.value)

    corrupt("p-0002", lambda d: {"versions": [*d["versions"], 5]})  # applied twice
    assert "p-0002: 6 versions applied for 5 stored; twice: [5], never: []" in problems()
    corrupt("p-0002", lambda d: {"versions": [1, 2, 4, 5]})  # never applied
    assert "p-0002: 4 versions applied for 5 stored; twice: [], never: [3]" in problems()
    corrupt("p-0002", lambda d: {"versions": [1, 2, 3, 4, 5]})
    assert_exactly_once(store, names)
    corrupt("zone-z1", lambda d: {**d, "sum": d["sum"] + 3})
    assert "zone-z1: " in problems()
    corrupt("zone-z1", lambda d: {**d, "sum": d["sum"] - 3})
    corrupt("zone-z9", lambda d: {"sum": 1, "events": 1})
    assert "zone-z9: a document no event explains" in problems()
    corrupt("zone-z9", lambda d: None)
    assert_exactly_once(store, names)
    parked = next(iter(store.get_events_by_aggregate("p-0003", 5)))
    with store.projection_transaction(NAME) as tx:
        tx.record_failure(
            ProjectionFailure(
                aggregate_id=parked.aggregate_id,
                version=parked.version,
                event_id=parked.id,
                position=parked.position or 0,
                event_type=parked.event_type,
                policy="park",
                error_type="DeadlockDetected",
                message="deadlock detected",
                failed_at=datetime.now(UTC),
                held_version=parked.version,
            )
        )
    assert "1 events parked or skipped ({'park DeadlockDetected': 1})" in problems()


# -- several runners ------------------------------------------------------------------------


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "tally", [TALLY_BY_KEY, TALLY], ids=["zones-locked-by-key", "zones-locked-as-events-come"]
)
def test_each_event_once_with_a_runner_killed_mid_batch_and_one_joining_under_load(
    store: EventStore,
    postgres_url: str,
    kafka_bootstrap: str,
    prefix: str,
    launch: Launch,
    tally: Tally,
) -> None:
    """Three runner processes in one group on a 6-partition topic (the first catches up a
    backlog from the global log, two join it); 30,000+ events over 300 players appended in
    batches while they run; one runner SIGKILLed inside a batch's transaction (its partitions
    go to the others after the session timeout and are redelivered from the last committed
    offsets); a fourth joins while events flow (a cooperative rebalance under load).

    Run with each lock order of the zones' documents: by key (batches of several runners
    wait for each other, never deadlock), and as events come (they deadlock at times: the
    loser must be retried like any other batch, DESIGN section 6)."""
    names = players(300)
    began = time.monotonic()
    create_event_topic(kafka_bootstrap, prefix)
    store.append_events([player_event(n, v) for v in range(1, 6) for n in names])
    relay = RelayThread(store, kafka_bootstrap, prefix, batch_size=500).start()
    writer = Writer(store, names, first_round=6, min_rounds=105)
    try:
        first = [launch(1, tally)]
        wait_until(
            lambda: first[0].alive() and caught_up(store, tally.name), "the catch-up", timeout=120
        )
        first += [launch(2, tally), launch(3, tally)]
        writer.start()
        wait_until(
            lambda: all(r.alive() and r.batches > 0 for r in first),
            "each of the three runners to commit a batch from Kafka",
            timeout=120,
        )
        victim = first[1]
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            wait_until(
                lambda: victim.alive() and victim.in_transaction(conn),
                f"{victim.name} inside a batch",
                timeout=60,
                interval=0.001,
            )
            victim.kill()
        assert writer.writing, "events must still be appended when the runner is killed"
        killed_at = writer.appended
        wait_until(lambda: writer.appended >= killed_at + 3000, "3,000 more appends", timeout=120)
        joining = launch(4, tally)
        writer.stop_after(30)
        wait_until(
            lambda: joining.alive() and joining.batches > 0,
            "the fourth runner to be assigned partitions and commit a batch",
            timeout=120,
        )
        assert writer.writing or behind(store, tally.name, names), "the fourth joined under no load"
        writer.join()
        drained(store, timeout=120)
        survivors = [r for r in [*first, joining] if r is not victim]
        settle(store, survivors, names, timeout=300)
        seen = totals(survivors)
    finally:
        writer.abort()
        relay.stop()
    stop_all(survivors)
    events = assert_exactly_once(store, names, tally.name)
    assert len(events) >= 30_000 and len({e.aggregate_id for e in events}) == 300
    print(
        f"\n{len(events)} events, {len(names)} players, {time.monotonic() - began:.0f}s; "
        f"live, summed over the survivors: {seen}"
    )


@pytest.mark.timeout(600)
def test_runners_started_together_on_a_backlog_all_catch_up_and_keep_running(
    store: EventStore, kafka_bootstrap: str, prefix: str, launch: Launch
) -> None:
    """A first deployment with three replicas on a store that already holds events: all three
    catch up from the global log at once, on the same players and zones. Contention between
    their batches is retried (never fatal, never parked): all keep running, each event once."""
    names = players(300)
    create_event_topic(kafka_bootstrap, prefix)
    store.append_events([player_event(n, v) for v in range(1, 11) for n in names])
    relay = RelayThread(store, kafka_bootstrap, prefix, batch_size=500).start()
    try:
        started = [launch(n) for n in (1, 2, 3)]
        wait_until(
            lambda: all(r.alive() and "tally: caught up" in r.output() for r in started),
            "all three runners to finish their catch-up",
            timeout=300,
            interval=0.5,
        )
        drained(store, timeout=120)
        settle(store, started, names, timeout=300)
    finally:
        relay.stop()
    stop_all(started)
    assert_exactly_once(store, names)


# -- the broker stopped while a runner consumes -----------------------------------------------


@pytest.mark.timeout(600)
def test_each_event_once_across_a_broker_outage(
    store: EventStore, kafka_bootstrap: str, prefix: str, services_control: str, launch: Launch
) -> None:
    """The broker is stopped for longer than the session timeout while a runner consumes and
    events are appended (the relay keeps them in the outbox), then started again: the runner
    rejoins, resumes from its committed offsets, and nothing is lost or applied twice."""
    create_event_topic(kafka_bootstrap, prefix)
    relay = RelayThread(store, kafka_bootstrap, prefix, batch_size=500).start()
    names = players(100)
    # max_rounds: kafka-python's reconnection back-off grows to 30 s, so the runner may take
    # that long to resume after the broker is back; the writer must outlast it.
    writer = Writer(store, names, first_round=1, min_rounds=60, pause=0.1, max_rounds=3000)
    writer.start()
    runner = launch(1)
    try:
        wait_until(lambda: runner.alive() and runner.batches > 2, "live batches", timeout=120)
        subprocess.run([services_control, "stop-kafka"], check=True, timeout=120)
        try:
            down_at, appended = time.monotonic(), writer.appended
            wait_until(
                lambda: (
                    runner.alive()
                    and time.monotonic() - down_at > 15
                    and writer.appended > appended + 1000
                ),
                "15 s of outage with appends going on",
                timeout=120,
            )
        finally:
            subprocess.run([services_control, "start-kafka"], check=True, timeout=180)
        resumed = runner.batches
        wait_until(
            lambda: runner.alive() and runner.batches > resumed + 2,
            "live batches after the outage",
            timeout=180,
        )
        writer.stop_after(10)
        writer.join()
        drained(store, timeout=180)
        settle(store, [runner], names, timeout=300)
    finally:
        writer.abort()
        relay.stop()
    stop_all([runner])
    events = assert_exactly_once(store, names)
    print(f"\n{len(events)} events across the broker outage")


# -- PostgreSQL restarted while a runner consumes (last: it cuts every session) -------------


def restart_postgres(script: str) -> None:
    """Stop and start the tests' PostgreSQL cluster with the script's own functions, called
    as its `stop` and `start` commands call them (it has commands for the broker alone, none
    for PostgreSQL alone, and `stop` would stop the broker too)."""
    for step in ("stop_postgres", "start_postgres"):
        subprocess.run(
            ["bash", "-c", f'source "$0" env >/dev/null && choose_pg_home && {step}', script],
            check=True,
            timeout=180,
        )


@pytest.mark.timeout(600)
def test_each_event_once_across_a_postgres_restart(
    store: EventStore,
    postgres_url: str,
    kafka_bootstrap: str,
    prefix: str,
    services_control: str,
    launch: Launch,
) -> None:
    """The database is restarted (a fast shutdown cuts every session) while the runner is
    inside a batch: the batch is rolled back, the runner backs off and retries on new
    connections, and the read model ends exact."""
    create_event_topic(kafka_bootstrap, prefix)
    relay = RelayThread(store, kafka_bootstrap, prefix, batch_size=500).start()
    names = players(100)
    writer = Writer(store, names, first_round=1, min_rounds=60, pause=0.1).start()
    runner = launch(1)
    try:
        wait_until(lambda: runner.alive() and runner.batches > 2, "live batches", timeout=120)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            wait_until(
                lambda: runner.alive() and runner.in_transaction(conn),
                "the runner inside a batch",
                timeout=60,
                interval=0.001,
            )
        restart_postgres(services_control)
        resumed = runner.batches
        wait_until(
            lambda: runner.alive() and runner.batches > resumed + 2,
            "live batches after the restart",
            timeout=180,
        )
        writer.stop_after(10)
        writer.join()
        drained(store, timeout=180, outage=True)
        settle(store, [runner], names, timeout=300, outage=True)
        retried = runner.metric("eventstore_projection_retries")
    finally:
        writer.abort()
        relay.stop()
    stop_all([runner])
    assert retried > 0, "the runner must have felt the restart, and retried"
    assert writer.retried > 0, "appends must have failed while the database was down"
    events = assert_exactly_once(store, names)
    print(f"\n{len(events)} events across the restart; the runner retried {retried:.0f} batches")
