"""Backup and restore: a logical dump restored into a fresh cluster loses no history.

A fresh cluster's transaction counter starts low, while the restored rows carry positions
(and writer transaction ids) of the cluster they were dumped from. Readers of the global log
must return every restored event once `migrate --rebase-positions` has run, and new events
must follow them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from eventstore import EventStore, MigrationError, open_store
from eventstore.store.postgres import PostgresEventStore
from tests.conftest import unique_name
from tests.contract.test_store_contract import all_events
from tests.helpers import event, history, url_with

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend() -> str:
    return "postgres"


def _current_xid(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def target_database(restore_target_url: str) -> Iterator[str]:
    """A new database in the second cluster, dropped afterwards."""
    name = unique_name("restored")
    with psycopg.connect(restore_target_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield url_with(restore_target_url, dbname=name)
    with psycopg.connect(restore_target_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_dump_restored_into_a_fresh_cluster_keeps_every_event_readable(
    store: EventStore,
    postgres_url: str,
    pg_schema: str,
    target_database: str,
    pg_bindir: str,
    tmp_path: Path,
) -> None:
    # The source cluster must be ahead of the target's transaction counter, as a production
    # cluster is ahead of a freshly made one: spend transaction ids until it is.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        while _current_xid(postgres_url) <= _current_xid(target_database) + 1000:
            for _ in range(500):
                conn.execute("SELECT pg_current_xact_id()")
    written = [p for n in range(3) for p in store.append_events(history(f"p{n}", 5))]

    dump = tmp_path / "events.dump"
    subprocess.run(
        [f"{pg_bindir}/pg_dump", "-Fc", "-n", pg_schema, "-f", str(dump), postgres_url],
        check=True,
    )
    subprocess.run(
        [
            f"{pg_bindir}/pg_restore",
            "--no-owner",
            "--no-privileges",
            "-d",
            target_database,
            str(dump),
        ],
        check=True,
    )

    with open_store(target_database, schema=pg_schema) as restored:
        assert isinstance(restored, PostgresEventStore)
        assert restored.migrate() == []  # the dump carries the schema's migrations
        with pytest.raises(MigrationError, match="rebase-positions"):
            restored.append_event(event("p0", 6))
        # Operators see it too, and are told what to do (`eventstore status`).
        assert restored.log_horizon().needs_rebase
        assert restored.log_horizon().events_behind == len(written)
        restored.rebase_positions()
        assert not restored.log_horizon().needs_rebase
        assert [e.position for e in all_events(restored)] == written
        new = restored.append_events([event("p0", 6), event("q", 1)])
        assert min(new) > max(written)
        log = all_events(restored)
        assert [e.position for e in log] == [*written, *new]
        assert [e.version for e in log if e.aggregate_id == "p0"] == [1, 2, 3, 4, 5, 6]
