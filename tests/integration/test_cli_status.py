"""`eventstore status` on the real PostgreSQL: it names the transaction that holds the log's
read horizon back, and `--max-lag` turns that into an exit code for monitoring checks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner, Result

from eventstore import EventStore, open_store
from eventstore.cli import app
from tests.helpers import history

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(postgres_url: str, pg_schema: str) -> Iterator[EventStore]:
    with open_store(postgres_url, schema=pg_schema) as store:
        store.migrate()
        yield store


def status(url: str, schema: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["--database-url", url, "--schema", schema, "status", *args])


def report(result: Result) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_status_names_the_transaction_holding_the_horizon_until_it_ends(
    postgres_url: str, pg_schema: str, store: EventStore
) -> None:
    with psycopg.connect(postgres_url) as holder:
        holder.execute("SELECT pg_current_xact_id()")  # begins, and takes a transaction id
        pid = holder.info.backend_pid
        positions = store.append_events(history("p1", 3))

        held = status(postgres_url, pg_schema, "--json", "--max-lag", "0")
        assert held.exit_code == 3, held.output
        log = report(held)["log"]
        assert log["events_behind"] >= 3
        assert log["horizon"] <= positions[0] and log["head"] >= positions[-1]
        assert log["lag_seconds"] >= 0
        assert log["holder"]["pid"] == pid
        assert log["holder"]["state"] == "idle in transaction"
        assert log["holder"]["query"] == "SELECT pg_current_xact_id()"
        assert log["holder"]["transaction_age_seconds"] >= 0
        exceeded = set(report(held)["exceeded"])
        assert "outbox.oldest_age_seconds" in exceeded  # the outbox waits: its age is > 0
        assert ("log.lag_seconds" in exceeded) == (log["lag_seconds"] > 0)

        human = status(postgres_url, pg_schema)
        assert human.exit_code == 0, human.output
        assert re.search(rf"^held back by +pid {pid}  ", human.stdout, re.MULTILINE)
        assert f"SELECT pg_terminate_backend({pid})" in human.stdout
        assert "idle_in_transaction_session_timeout" in human.stdout
        holder.rollback()

    # The relay's part, so that only the log is left to judge.
    store.outbox_remove([e.position or 0 for e in store.outbox_batch(1000)])
    ended = status(postgres_url, pg_schema, "--json", "--max-lag", "0")
    assert ended.exit_code == 0, ended.output
    after = report(ended)
    assert after["log"]["events_behind"] == 0 and after["log"]["holder"] is None
    assert after["log"]["horizon"] > positions[-1]
    assert after["outbox"]["depth"] == 0
    assert after["exceeded"] == [] and after["healthy"] is True
    assert after["store"] == {
        "backend": "postgresql",
        "location": postgres_url.rpartition("@")[2],
        "schema": pg_schema,
    }
