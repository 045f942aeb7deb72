from __future__ import annotations

from pathlib import Path

import pytest

from eventstore import ConfigurationError, open_store
from eventstore.store import sqlite_path
from eventstore.store.sqlite import SqliteEventStore


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///events.db", "events.db"),
        ("sqlite:///data/game%20world.db", "data/game world.db"),
        ("sqlite:////var/lib/events.db", "/var/lib/events.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_urls_name_files(url: str, path: str) -> None:
    assert sqlite_path(url) == path


def test_no_url_is_the_embedded_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store(None) as store:
        assert isinstance(store, SqliteEventStore)
        store.migrate()
    assert (tmp_path / "eventstore.db").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost", "unsupported store URL"),
        ("sqlite:///", "names no file"),
        ("sqlite://host/file.db", "host part"),
    ],
)
def test_bad_urls_say_what_to_write(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_store(url)


def test_a_password_never_appears_in_errors() -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_store("mysql://admin:s3cret@db/game")
    assert "s3cret" not in str(caught.value)


def test_sqlite_has_no_schemas() -> None:
    with pytest.raises(ConfigurationError, match="no schemas"):
        open_store("sqlite:///:memory:", schema="x")


def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from eventstore import MigrationError

    path = tmp_path / "events.db"
    with open_store(f"sqlite:///{path}") as store:
        store.migrate()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO migrations VALUES (99, '0099_future.sql', 'later')")
    with open_store(f"sqlite:///{path}") as store, pytest.raises(MigrationError, match="upgrade"):
        store.migrate()
