"""`eventstore status` on the embedded store: the human view, `--json`, `--max-lag`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from eventstore import EventStore, open_store
from eventstore.cli import app
from tests.helpers import history
from tests.unit.test_cli import run


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
def store(database: Path) -> Iterator[EventStore]:
    with open_store(f"sqlite:///{database}") as store:
        store.migrate()
        yield store


def status(database: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["--database-url", f"sqlite:///{database}", "status", *args])


def rows(output: str) -> dict[str, str]:
    """The aligned `label  value` lines of the human view, by label."""
    found = {}
    for line in output.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if len(parts) == 2:
            found[parts[0]] = parts[1]
    return found


def drain(store: EventStore) -> None:
    """What a relay does once Kafka acknowledged the events."""
    store.outbox_remove([e.position or 0 for e in store.outbox_batch(1000)])


def test_the_human_view_shows_the_log_and_the_outbox(database: Path, store: EventStore) -> None:
    store.append_events(history("p1", 3))
    result = status(database)
    assert result.exit_code == 0, result.output
    shown = rows(result.stdout)
    assert shown["store"] == f"sqlite  {database.resolve()}"
    assert shown["log head"] == "3"
    assert shown["read horizon"] == "4"
    assert shown["events behind"] == "0"
    assert shown["horizon lag"] == "0.0 s"
    assert shown["outbox"].startswith("3 events, oldest ")
    assert "held back by" not in shown  # one writer at a time: nothing ever holds SQLite back
    assert "hint:" not in result.stdout and "lagging" not in result.stdout


def test_json_is_one_object_with_every_key(database: Path, store: EventStore) -> None:
    store.append_events(history("p1", 2))
    result = status(database, "--json")
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["store"] == {
        "backend": "sqlite",
        "location": str(database.resolve()),
        "schema": None,
    }
    assert report["log"] == {
        "head": 2,
        "horizon": 3,
        "events_behind": 0,
        "lag_seconds": 0.0,
        "needs_rebase": False,
        "holder": None,
    }
    outbox = report["outbox"]
    assert outbox["depth"] == 2 and outbox["depth_estimated"] is False
    assert isinstance(outbox["oldest_age_seconds"], float) and outbox["oldest_age_seconds"] >= 0
    for when in (report["checked_at"], outbox["oldest_enqueued_at"]):
        assert when.endswith("Z") and datetime.fromisoformat(when).utcoffset() == timedelta(0)
    assert report["max_lag_seconds"] is None
    assert report["exceeded"] == [] and report["healthy"] is True


def test_max_lag_fails_while_the_outbox_waits_and_passes_once_drained(
    database: Path, store: EventStore
) -> None:
    store.append_events(history("p1", 2))
    assert status(database, "--max-lag", "3600").exit_code == 0

    waiting = status(database, "--max-lag", "0", "--json")
    assert waiting.exit_code == 3
    report = json.loads(waiting.stdout)
    assert report["exceeded"] == ["outbox.oldest_age_seconds"] and report["healthy"] is False
    assert report["max_lag_seconds"] == 0
    human = status(database, "--max-lag", "0")
    assert human.exit_code == 3
    assert human.stdout.splitlines()[-1].startswith("lagging: oldest outbox entry ")

    drain(store)
    drained = status(database, "--max-lag", "0", "--json")
    assert drained.exit_code == 0, drained.output
    report = json.loads(drained.stdout)
    assert report["outbox"]["depth"] == 0 and report["outbox"]["oldest_age_seconds"] is None
    assert report["exceeded"] == [] and report["healthy"] is True
    assert status(database, "--max-lag", "0").stdout.splitlines()[-1] == "ok: within --max-lag 0 s"


def test_a_store_not_migrated_is_one_error_line(tmp_path: Path) -> None:
    result = run(tmp_path, "status")
    assert result.returncode == 1
    assert result.stderr.startswith("error: the event store tables are missing")
    assert "run `eventstore migrate`" in result.stderr and len(result.stderr.splitlines()) == 1


def test_the_help_documents_the_exit_codes() -> None:
    shown = CliRunner().invoke(app, ["status", "--help"], env={"COLUMNS": "200"}).stdout
    assert "Exit codes:" in shown
    for code in ("0 healthy", "1 the store cannot be read", "2 a configuration error", "3 the "):
        assert code in shown
