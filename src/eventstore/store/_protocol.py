"""The store contract, as a ladder of capabilities (each reader asks only for what it needs).

`AggregateStore` appends and reads one aggregate's stream; `EventLog` adds the global log and
the cross-aggregate queries; `EventStore` adds the lifecycle. Every backend implements
`EventStore` and passes the one contract suite in `tests/contract/`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import Any, NamedTuple, Protocol, Self, runtime_checkable

from eventstore.errors import EventStoreError
from eventstore.events import Event
from eventstore.versioning import Upcasters

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
        *,
        after_position: int = 0,
    ) -> Iterator[Event]:
        """Events of one type with timestamp in [from, to), ordered by position, read in pages;
        only those after `after_position` (to continue a page; not a tail of the log: on
        PostgreSQL an event can commit later below a position already returned)."""
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


class ProjectionRecord(NamedTuple):
    """A projection as the store knows it: which generation of its read model readers see,
    and which one a rebuild is building."""

    name: str
    active_generation: int
    active_version: int
    """The projection's version (in code) that built the active generation."""
    active_position: int
    """How far the active generation has read the global log (store-tail source, catch-up)."""
    building_generation: int | None
    building_version: int | None
    building_position: int
    handoff_at: datetime | None
    """When the first catch-up from the global log ended (the Kafka source starts its
    partitions a margin before it)."""
    dead_lettered: int
    last_error: str | None
    last_error_at: datetime | None
    updated_at: datetime


class ProjectionFailure(NamedTuple):
    """An event a projection's handler failed on: parked (it and every later event of its
    aggregate wait) or skipped (recorded, passed)."""

    aggregate_id: str
    version: int
    event_id: str
    position: int
    event_type: str
    policy: str
    """`park` or `skip`."""
    error_type: str
    message: str
    failed_at: datetime
    held_version: int
    """Parked: the latest version of the aggregate seen waiting behind it."""


class ProjectionCounts(NamedTuple):
    documents: int
    checkpoints: int
    parked: int
    skipped: int


class ReadModelTransaction(Protocol):
    """One transaction on one generation of a projection's read model: documents,
    per-aggregate checkpoints and failures change together, or not at all.

    The projection's row is locked for the transaction (shared by runners, exclusive for a
    switch), so a generation cannot be switched or dropped while a batch writes to it.
    """

    projection: str
    generation: int
    version: int
    """The projection version this generation was built by."""
    backend: str
    """`postgres` or `sqlite`: which SQL `connection` speaks."""

    @property
    def connection(self) -> Any:
        """The transaction's database connection (psycopg or sqlite3), for projections with
        tables of their own."""
        ...

    def translate(self, error: BaseException) -> EventStoreError | None:
        """The package's error for a database driver's error raised in this transaction (by
        SQL a handler ran on `connection`); None for anything else."""
        ...

    def lock_checkpoints(self, aggregate_ids: Collection[str]) -> dict[str, int]:
        """Each aggregate's last applied version (0 when none), locked until the end of the
        transaction: a concurrent batch on the same aggregate waits, then sees what this one
        wrote."""
        ...

    def save_checkpoints(self, checkpoints: Mapping[str, tuple[int, int]]) -> None:
        """Set aggregates' (last applied version, its position)."""
        ...

    def load_documents(self, keys: Collection[str]) -> dict[str, str]:
        """The documents stored under `keys`, as JSON text (absent keys left out), locked
        like checkpoints."""
        ...

    def write_documents(
        self,
        inserts: Mapping[str, str],
        upserts: Mapping[str, str],
        deletes: Collection[str],
    ) -> None:
        """Write JSON texts: `inserts` were seen absent in this transaction (one created
        concurrently makes the transaction fail, retriably), `upserts` overwrite."""
        ...

    def find_documents(self, field: str, value: Any, limit: int) -> list[tuple[str, Any]]:
        """Documents whose top-level `field` equals `value`, by key."""
        ...

    def parked(self, aggregate_ids: Collection[str]) -> dict[str, ProjectionFailure]:
        """The parked failure of each of these aggregates that has one."""
        ...

    def record_failure(self, failure: ProjectionFailure) -> None: ...

    def hold(self, aggregate_id: str, version: int) -> None:
        """Note that `version` of a parked aggregate arrived and waits."""
        ...

    def clear_parked(self, aggregate_id: str) -> None: ...

    def reset_aggregate(self, aggregate_id: str) -> None:
        """Forget the aggregate's checkpoint and failures in this generation."""
        ...

    def set_position(self, position: int) -> None:
        """How far this generation has read the global log."""
        ...

    def note(self, *, dead_lettered: int = 0, error: str | None = None) -> None:
        """Count dead-lettered events and remember the last error."""
        ...

    def mark_handoff(self, at: datetime) -> None: ...

    def behind(self, generation: int) -> dict[str, int]:
        """Aggregates whose checkpoint in `generation` is ahead of this transaction's
        generation, with that checkpoint (a rebuild catches them up before it switches)."""
        ...

    def switch(self) -> int:
        """Make this (building) generation the active one and drop the one it replaces; only
        in an exclusive transaction. Returns the dropped generation."""
        ...


@runtime_checkable
class ReadModels(Protocol):
    """Read models of projections and their bookkeeping (checkpoints, generations, failures),
    in the store's own database."""

    @property
    def upcasters(self) -> Upcasters:
        """The upcasters every read path applies (decoding a Kafka record uses them too)."""
        ...

    def register_projection(self, name: str, version: int) -> ProjectionRecord:
        """The projection's record, created (generation 1, built by `version`) if absent."""
        ...

    def projection_record(self, name: str) -> ProjectionRecord | None: ...

    def projection_records(self) -> list[ProjectionRecord]: ...

    def projection_transaction(
        self, name: str, generation: int | None = None, *, exclusive: bool = False
    ) -> AbstractContextManager[ReadModelTransaction]:
        """A transaction on the active generation (or on `generation`, which must be the
        active or the building one, else `FencedError`)."""
        ...

    def begin_generation(self, name: str, version: int) -> int:
        """Start building a new generation (a rebuild); a rebuild in progress is fenced out."""
        ...

    def drop_generation(self, name: str, generation: int) -> None:
        """Remove a generation that is not the active one (the one a switch replaced, or a
        building one: its rebuild is then fenced out)."""
        ...

    def drop_projection(self, name: str) -> None:
        """Remove the projection, its documents, checkpoints and failures."""
        ...

    def get_document(self, projection: str, key: str) -> Any:
        """A document of the active generation (None when absent)."""
        ...

    def find_documents(
        self, projection: str, field: str, value: Any, limit: int = 100
    ) -> list[tuple[str, Any]]:
        """Documents of the active generation whose top-level `field` equals `value`."""
        ...

    def list_documents(
        self, projection: str, after_key: str = "", limit: int = 100
    ) -> list[tuple[str, Any]]:
        """Documents of the active generation by key, after `after_key` (a page)."""
        ...

    def projection_failures(
        self,
        name: str,
        *,
        policy: str | None = None,
        aggregate_id: str | None = None,
        limit: int = 1000,
    ) -> list[ProjectionFailure]:
        """Failures recorded in the active generation, oldest first."""
        ...

    def projection_checkpoint(self, name: str, aggregate_id: str) -> int:
        """The aggregate's last applied version in the active generation (0 when none)."""
        ...

    def projection_counts(self, name: str, generation: int | None = None) -> ProjectionCounts: ...

    def wait_for_appends(self, timeout: float) -> None:
        """Sleep until an append is notified (`notify_appended`) or `timeout` passes."""
        ...


class AggregateRef(NamedTuple):
    """An aggregate, as a key for paging through many of them."""

    aggregate_type: str
    aggregate_id: str


@runtime_checkable
class AggregateReads(Protocol):
    """Which aggregates exist, and many aggregates' events in one read (what rebuilding
    aggregate state needs beyond one stream: the world as of a global position)."""

    def list_aggregates(
        self,
        aggregate_type: str | None = None,
        *,
        after: AggregateRef | None = None,
        id_prefix: str | None = None,
        max_position: int | None = None,
        limit: int = 100,
    ) -> list[AggregateRef]:
        """At most `limit` aggregates (of one type, or of all) ordered by (type, id) in
        code-point order, after `after` (a page), whose id starts with `id_prefix` and whose
        first event is at or below `max_position`, when given."""
        ...

    def read_aggregates(
        self,
        after_versions: Mapping[str, int],
        *,
        max_version: int | None = None,
        max_position: int | None = None,
        per_aggregate: int | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        """At most `limit` events of these aggregates, ordered by (aggregate id, version) in
        code-point order: each aggregate's versions above its `after_versions` value (at most
        `per_aggregate` of them), up to `max_version` and at or below `max_position` when
        given. With `max_position`, events the log's horizon
        does not yet make final (see `read_all`) are left out too, so that the result never
        changes once returned. Upcast, like every read."""
        ...


class Snapshot(NamedTuple):
    """A cached state of an aggregate after `version` (replay's snapshots: never events).

    `state` is the JSON text as its writer produced it; `digest` lets a reader tell a
    damaged row from a good one (the store does not interpret either).
    """

    aggregate_id: str
    aggregate_type: str
    version: int
    position: int
    """Global position of the event at `version`."""
    timestamp: datetime
    """Game time of the event at `version`."""
    max_timestamp: datetime
    """The latest game time among events 1..version (they need not be in time order)."""
    reducer_version: int
    fingerprint: str
    """Of the upcasters that shaped the events the state was folded from."""
    state: str
    digest: str
    created_at: datetime | None = None


@runtime_checkable
class Snapshots(Protocol):
    """A cache of aggregate states. Deleting any of it changes no result, only speed."""

    def load_snapshots(
        self,
        aggregate_ids: Collection[str],
        *,
        reducer_version: int,
        fingerprint: str,
        max_version: int | None = None,
        max_position: int | None = None,
        max_timestamp: datetime | None = None,
    ) -> dict[str, Snapshot]:
        """For each aggregate, its snapshot of the highest version made by this reducer
        version and upcaster fingerprint, within the bounds given (others are not returned)."""
        ...

    def save_snapshots(self, snapshots: Sequence[Snapshot]) -> None:
        """Store snapshots, replacing any of the same aggregate and version."""
        ...

    def delete_snapshots(
        self, *, aggregate_id: str | None = None, aggregate_type: str | None = None
    ) -> int:
        """Remove snapshots (of one aggregate, of one type, or all); returns how many."""
        ...

    def snapshot_count(self, aggregate_id: str | None = None) -> int:
        """How many snapshots are stored (of one aggregate, or in all)."""
        ...


class Claim(NamedTuple):
    """What claiming a control request found."""

    reply: str | None
    """The stored reply (JSON text) when the request already finished: answer with it."""
    holder: str | None
    """Another worker that claimed it within the claim timeout and has not finished: it is
    being run. Both None: the caller holds the claim now and runs it."""
    claimed_at: datetime | None = None


@runtime_checkable
class ControlRequests(Protocol):
    """What control requests with lasting effects have been run: a request delivered twice
    (Kafka delivers at least once) is answered again from here, not run again."""

    def claim_request(self, request_id: str, kind: str, owner: str, timeout: float) -> Claim:
        """Claim `request_id` for `owner`, unless it finished (its reply is returned) or
        another owner claimed it less than `timeout` seconds ago (that owner is returned).
        A claim older than that, never finished, is taken over: its worker died."""
        ...

    def finish_request(self, request_id: str, owner: str, reply: str) -> bool:
        """Store the reply of a request `owner` still holds the claim of; False (nothing
        stored) when the claim was taken over meanwhile or a reply is already stored."""
        ...


class ApiToken(NamedTuple):
    """A bearer token of the HTTP API as the store keeps it: never the secret, only its
    SHA-256 digest (the secret is 256 random bits, so a fast hash is enough)."""

    token_id: str
    name: str
    scopes: tuple[str, ...]
    digest: str
    created_at: datetime
    revoked_at: datetime | None


@runtime_checkable
class ApiTokens(Protocol):
    """The HTTP API's bearer tokens (`eventstore tokens`)."""

    def create_token(self, token_id: str, name: str, scopes: Sequence[str], digest: str) -> None:
        """Keep a new token; `InvalidQueryError` when a live token already has this name."""
        ...

    def find_token(self, token_id: str) -> ApiToken | None:
        """The token with this id, revoked or not (None when there is none)."""
        ...

    def list_tokens(self, *, revoked: bool = False) -> list[ApiToken]:
        """Live tokens by name (and the revoked ones too when `revoked`)."""
        ...

    def revoke_token(self, name: str) -> int:
        """Revoke the live token of this name; how many were revoked (0 or 1)."""
        ...


@runtime_checkable
class Correlations(Protocol):
    """Events linked by their metadata: the ones of one correlation id (what a command,
    a request or a game action caused), for following causes and effects."""

    def get_events_by_correlation(self, correlation_id: str, limit: int = 1000) -> list[Event]:
        """At most `limit` events whose `metadata.correlation_id` is `correlation_id`, by
        position (an index lookup on both backends); upcast, like every read."""
        ...


@runtime_checkable
class EventStore(
    AggregateStore,
    EventLog,
    Outbox,
    LogMonitor,
    ReadModels,
    AggregateReads,
    Snapshots,
    ControlRequests,
    ApiTokens,
    Correlations,
    Protocol,
):
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
