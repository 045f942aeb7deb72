"""SQLite: the embedded default's own guarantees (immutability, several processes on one
file, a locked file is a retriable error)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from eventstore import ConcurrencyError, EventStore, open_store
from eventstore.errors import ImmutableEventError, StoreBusyError
from eventstore.store.sqlite import SqliteEventStore
from tests.helpers import event, history


@pytest.fixture
def backend() -> str:
    return "sqlite"


def test_sqlite_itself_rejects_changing_or_removing_events(
    store: EventStore, tmp_path: Path
) -> None:
    store.append_events(history("p", 2))
    conn = sqlite3.connect(tmp_path / "events.db")
    for statement in (
        "UPDATE events SET payload = '{}' WHERE version = 1",
        "DELETE FROM events WHERE version = 2",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            conn.execute(statement)
    conn.close()
    assert [e.version for e in store.get_events_by_aggregate("p")] == [1, 2]


def test_a_refused_change_is_an_immutable_event_error(store: EventStore) -> None:
    assert isinstance(store, SqliteEventStore)
    store.append_event(event("p", 1))
    with pytest.raises(ImmutableEventError, match="immutable"), store._locked() as conn:
        conn.execute("DELETE FROM events")


def _append_as_many_as_possible(path: str, aggregate: str, attempts: int) -> int:
    """One process: keep appending the aggregate's next version; count the versions won."""
    won = 0
    with open_store(f"sqlite:///{path}") as store:
        for _ in range(attempts):
            current = sum(1 for _ in store.get_events_by_aggregate(aggregate))
            try:
                store.append_event(event(aggregate, current + 1))
                won += 1
            except ConcurrencyError:
                pass
    return won


def test_several_processes_on_one_file_win_each_version_once(
    store: EventStore, tmp_path: Path
) -> None:
    path = str(tmp_path / "events.db")
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        won = pool.starmap(_append_as_many_as_possible, [(path, "shared", 40)] * 4)
    versions = [e.version for e in store.get_events_by_aggregate("shared")]
    assert versions == list(range(1, sum(won) + 1))
    assert len({e.id for e in store.get_events_by_aggregate("shared")}) == sum(won)
    assert sum(won) > 0


def test_a_file_locked_by_another_writer_is_a_retriable_busy_error(
    store: EventStore, tmp_path: Path
) -> None:
    holder = sqlite3.connect(tmp_path / "events.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with SqliteEventStore(tmp_path / "events.db", busy_timeout=0.2) as impatient:
            with pytest.raises(StoreBusyError, match="locked") as caught:
                impatient.append_event(event("p", 1))
            assert caught.value.retriable
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.append_event(event("p", 1))  # and once the lock is gone, the same append succeeds
