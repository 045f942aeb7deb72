"""The store: its contract (`EventStore`), its backends, and `open_store` to pick one by URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from eventstore.errors import ConfigurationError
from eventstore.store._checks import as_batch, check_find_value
from eventstore.store._checks import check_batch as validate_batch
from eventstore.store._protocol import (
    MAX_READ_LIMIT,
    AggregateReads,
    AggregateRef,
    AggregateStore,
    ApiToken,
    ApiTokens,
    Claim,
    ControlRequests,
    Correlations,
    EventLog,
    EventStore,
    HorizonHolder,
    LogHorizon,
    LogMonitor,
    Outbox,
    OutboxLease,
    OutboxStatus,
    ProjectionCounts,
    ProjectionFailure,
    ProjectionRecord,
    ReadModels,
    ReadModelTransaction,
    Snapshot,
    Snapshots,
)
from eventstore.versioning import Upcasters

DEFAULT_SQLITE_PATH = "eventstore.db"
"""The embedded default: a SQLite file in the working directory."""

__all__ = [
    "DEFAULT_SQLITE_PATH",
    "MAX_READ_LIMIT",
    "AggregateReads",
    "AggregateRef",
    "AggregateStore",
    "ApiToken",
    "ApiTokens",
    "Claim",
    "ControlRequests",
    "Correlations",
    "EventLog",
    "EventStore",
    "HorizonHolder",
    "LogHorizon",
    "LogMonitor",
    "Outbox",
    "OutboxLease",
    "OutboxStatus",
    "ProjectionCounts",
    "ProjectionFailure",
    "ProjectionRecord",
    "ReadModelTransaction",
    "ReadModels",
    "Snapshot",
    "Snapshots",
    "as_batch",
    "check_find_value",
    "open_store",
    "sqlite_path",
    "validate_batch",
]


def sqlite_path(url: str) -> str:
    """The file path of a `sqlite:///relative.db`, `sqlite:////absolute.db` or
    `sqlite:///:memory:` URL."""
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigurationError(
            f"SQLite URL {url!r} has a host part; use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = unquote(parts.path)[1:] if parts.path.startswith("/") else unquote(parts.path)
    if not path:
        raise ConfigurationError(f"SQLite URL {url!r} names no file; e.g. sqlite:///events.db")
    return path


def open_store(
    url: str | None = None,
    *,
    schema: str | None = None,
    upcasters: Upcasters | None = None,
    max_connections: int = 20,
) -> EventStore:
    """Open the store a URL names: `postgresql://...`, `sqlite:///path`, or None for the
    embedded default (a SQLite file, `eventstore.db`, in the working directory).

    `schema` chooses the PostgreSQL schema (default `eventstore`); SQLite has none. The store
    is not migrated here: call `store.migrate()` (idempotent) or run `eventstore migrate`.
    """
    if url is None:
        url = f"sqlite:///{DEFAULT_SQLITE_PATH}"
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        from eventstore.store.postgres import DEFAULT_SCHEMA, PostgresEventStore

        dsn = url if "+" not in scheme else "postgresql" + url[len(scheme) :]
        return PostgresEventStore(
            dsn,
            schema=schema or DEFAULT_SCHEMA,
            upcasters=upcasters,
            max_connections=max_connections,
        )
    if scheme == "sqlite":
        if schema is not None:
            raise ConfigurationError("a SQLite store has no schemas; drop the schema argument")
        from eventstore.store.sqlite import SqliteEventStore

        path = sqlite_path(url)
        if path != ":memory:":
            path = str(Path(path))
        return SqliteEventStore(path, upcasters=upcasters)
    shown = url.split("@")[-1] if "@" in url else url
    raise ConfigurationError(
        f"unsupported store URL {shown!r}: use postgresql://user@host:port/dbname, "
        "sqlite:///path/to/file.db, or leave it unset for the embedded default"
    )
