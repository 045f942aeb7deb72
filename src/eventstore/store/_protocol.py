"""The store contract, as a ladder of capabilities (each reader asks only for what it needs).

`AggregateStore` appends and reads one aggregate's stream; `EventLog` adds the global log and
the cross-aggregate queries; `EventStore` adds the lifecycle. Every backend implements
`EventStore` and passes the one contract suite in `tests/contract/`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import NamedTuple, Protocol, Self, runtime_checkable

from eventstore.events import Event

MAX_READ_LIMIT = 10_000
"""Largest `limit` a bounded read accepts: no read loads an unbounded result into memory."""


@runtime_checkable
class AggregateStore(Protocol):
    """Append events to aggregates and read one aggregate's history."""

    def append_event(self, event: Event) -> int:
        """Store one event and return its global position.

        The event's version must be the aggregate's current version + 1, else
        `ConcurrencyError`. Appending an event whose id is already stored with identical
        content writes nothing and returns the stored position; with different content it
        raises `DuplicateEventError`.
        """
        ...

    def append_events(self, events: Sequence[Event]) -> list[int]:
        """Store a batch atomically (all or none) and return the positions in batch order.

        Versions of one aggregate must be consecutive within the batch and start at its
        current version + 1. The batch is idempotent as a whole: resending a batch that is
        entirely stored returns its positions.
        """
        ...

    def get_events_by_aggregate(self, aggregate_id: str, from_version: int = 1) -> Iterator[Event]:
        """The aggregate's events with version >= `from_version`, ascending, read in pages."""
        ...


@runtime_checkable
class EventLog(Protocol):
    """The global, ordered log of every event, and queries across aggregates."""

    def get_events_by_type(
        self,
        event_type: str,
        from_timestamp: datetime | None = None,
        to_timestamp: datetime | None = None,
    ) -> Iterator[Event]:
        """Events of one type with timestamp in [from, to), ordered by position, read in pages."""
        ...

    def get_all_events(
        self, from_timestamp: datetime | None = None, limit: int = 100
    ) -> list[Event]:
        """At most `limit` events with timestamp >= `from_timestamp`, by (timestamp, position)."""
        ...

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Event]:
        """The next at most `limit` events of the global log after `after_position`.

        A catch-up reader that passes the last position it saw never misses an event: an
        event that commits later never carries a position below one already returned.
        """
        ...


class HorizonHolder(NamedTuple):
    """The open transaction that holds the global log's horizon back (PostgreSQL only)."""

    pid: int
    """Its server process: `SELECT pg_terminate_backend(pid)` ends it."""
    database: str | None
    user: str | None
    state: str | None
    """`active`, `idle in transaction`, ... as pg_stat_activity says."""
    transaction_start: datetime | None
    query_start: datetime | None
    query: str | None
    """Its last statement, cut to 200 characters (hidden from roles that may not see it)."""


class LogHorizon(NamedTuple):
    """How far readers of the global log (`read_all`) lag behind what is stored.

    On PostgreSQL a reader stops below the oldest transaction still running anywhere in the
    cluster (so that it never skips an event that commits later); a long transaction holds
    every reader back until it ends. On SQLite the horizon is always the head.
    """

    horizon: int
    """Readers are returned positions below this bound."""
    head: int
    """The highest stored position (0 when the log is empty)."""
    events_behind: int
    """Stored events at or above the horizon: committed, but not yet readable (counted up
    to 10,000, so that watching a growing backlog stays cheap: 10,000 means at least)."""
    lag_seconds: float
    """How stale readers are: the age of the oldest event they cannot read yet (0 if none)."""
    holder: HorizonHolder | None
    """The transaction holding it back, when one does."""
    needs_rebase: bool = False
    """Stored positions lie above what this cluster's transactions can reach: the database
    was restored from a logical dump, and `eventstore migrate --rebase-positions` (with every
    writer stopped) makes them readable."""


class OutboxStatus(NamedTuple):
    """How much is waiting to be published."""

    depth: int
    """Events in the outbox."""
    oldest_enqueued_at: datetime | None
    """When the oldest of them was stored (None when the outbox is empty)."""
    estimated: bool = False
    """True when `depth` is the database's estimate (a backlog too large to count cheaply)."""


@runtime_checkable
class OutboxLease(Protocol):
    """The right to drain one shard of the outbox: at most one holder at a time, released
    when the holder releases it or dies (its connection or process ends)."""

    shard: int
    shards: int

    def acquire(self, timeout: float) -> bool:
        """Try for up to `timeout` seconds; True when held (a standby keeps calling this)."""
        ...

    def held(self) -> bool:
        """Whether the lease is still held (false once its connection is lost)."""
        ...

    def wait_for_appends(self, timeout: float) -> None:
        """Sleep until `notify_appended` is called or `timeout` seconds pass."""
        ...

    def release(self) -> None: ...


@runtime_checkable
class Outbox(Protocol):
    """The transactional outbox: every append also queues its events here, in the same
    transaction; a relay publishes them and then removes them."""

    def outbox_batch(self, limit: int, *, shard: int = 0, shards: int = 1) -> list[Event]:
        """The oldest at most `limit` queued events of a shard, in position order (so each
        aggregate's in version order), as stored (not upcast)."""
        ...

    def outbox_remove(self, positions: Sequence[int]) -> None:
        """Remove published events from the outbox."""
        ...

    def outbox_status(self) -> OutboxStatus: ...

    def outbox_lease(self, *, shard: int = 0, shards: int = 1) -> OutboxLease:
        """A lease on one shard of `shards` (a relay holds it while it drains the shard)."""
        ...

    def notify_appended(self) -> None:
        """Wake relays waiting in `wait_for_appends` (call once per append or group, after
        it committed; never inside the appending transaction)."""
        ...


@runtime_checkable
class LogMonitor(Protocol):
    """What operators watch: how far readers of the global log lag, and why."""

    def log_horizon(self) -> LogHorizon:
        """The global log's read horizon now (cheap: index lookups and pg_stat_activity)."""
        ...


@runtime_checkable
class EventStore(AggregateStore, EventLog, Outbox, LogMonitor, Protocol):
    """A complete store: all capabilities, plus schema management and closing."""

    def migrate(self) -> list[str]:
        """Bring the schema up to date (idempotent); return the names of migrations applied."""
        ...

    def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
