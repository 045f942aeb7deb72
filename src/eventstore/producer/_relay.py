"""OutboxRelay: publish every committed event to Kafka, at least once, in order per aggregate.

The guarantee, and where each part of it comes from:
- Only committed events are published: the relay reads the outbox, whose rows are written in
  the appending transaction, so a rolled-back append leaves nothing to read.
- Every committed event is published: a row is removed only after the broker acknowledged
  its event (acks=all). A relay that dies, or a broker that is down, leaves the rows in place,
  and the next attempt (this relay's retry, or the standby that takes over) sends them again.
- In version order per aggregate: an aggregate's events are in the outbox in position order,
  which follows their versions (the store guarantees it). One relay at a time drains a shard
  (a lease), an aggregate always falls in the same shard, and the publisher keeps one request
  in flight per connection, so a partition receives them in order.
- Duplicates: a retry re-sends the whole batch, so an event may reach Kafka twice, always as
  the same event id at the same place in its aggregate's order. Consumers skip it by version.

Failures: only a retriable error (the broker or the database down or busy) is retried, with
capped exponential backoff, for as long as it lasts; nothing is removed from the outbox until
a retry succeeds. Any other error (tables missing, a wrong role, a bug) cannot heal by
waiting: the relay logs it once and `run()` raises it, so the process stops with the error
instead of looking alive while publishing nothing (a standby, if any, takes over the shard).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from eventstore.errors import EventStoreError, PublishError
from eventstore.events import Event
from eventstore.store import LogMonitor, Outbox, OutboxLease

if TYPE_CHECKING:  # prometheus_client loads only when a relay makes its metrics
    from eventstore.producer._metrics import RelayMetrics

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Where the relay sends events (KafkaPublisher in production)."""

    def publish(self, events: Sequence[Event]) -> None:
        """Return only when every event is acknowledged; raise otherwise."""
        ...

    def ensure_topics(self, aggregate_types: Iterable[str]) -> list[str]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RelaySettings:
    """How a relay works its shard."""

    shard: int = 0
    shards: int = 1
    batch_size: int = 1000
    poll_interval: float = 0.5
    """Seconds between polls when no append wakes the relay (the fallback)."""
    standby_interval: float = 1.0
    """Seconds between a standby's attempts to take the lease."""
    max_backoff: float = 5.0
    """Longest pause between retries after the broker or database failed."""
    status_interval: float = 1.0
    """Seconds between updates of the outbox and log horizon metrics."""
    aggregate_types: tuple[str, ...] = ()
    """Topics to create as soon as the relay is active (others are created before their
    first event is sent)."""


class OutboxRelay:
    """Drains one shard of the outbox to a publisher; run one per shard, plus standbys.

    When the store is also a `LogMonitor`, the relay (a long-running process) exports the
    global log's read horizon with the outbox status.
    """

    def __init__(
        self,
        store: Outbox,
        publisher: Publisher,
        settings: RelaySettings | None = None,
        metrics: RelayMetrics | None = None,
    ) -> None:
        if metrics is None:
            from eventstore.producer._metrics import RelayMetrics

            metrics = RelayMetrics()
        self.store = store
        self.publisher = publisher
        self.settings = settings or RelaySettings()
        self.metrics = metrics
        self.published = 0
        self._monitor: LogMonitor | None = store if isinstance(store, LogMonitor) else None
        self._last_status = 0.0

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set: wait as a standby until this relay holds its shard's
        lease, then drain it; if the lease is lost, go back to waiting. Raises the first
        error that is not retriable (e.g. `MigrationError`), after releasing the lease."""
        s = self.settings
        lease = self.store.outbox_lease(shard=s.shard, shards=s.shards)
        log.info(
            "relay for shard %d/%d starting (standby until it holds the lease)", s.shard, s.shards
        )
        try:
            while not stop.is_set():
                if not lease.acquire(timeout=s.standby_interval):
                    continue
                log.info("relay for shard %d/%d is active", s.shard, s.shards)
                self.metrics.active.set(1)
                try:
                    if s.aggregate_types:
                        self._create_topics(stop)
                    self._drain(lease, stop)
                finally:
                    self.metrics.active.set(0)
                    lease.release()
                    log.info("relay for shard %d/%d released its lease", s.shard, s.shards)
        finally:
            lease.release()

    def _create_topics(self, stop: threading.Event) -> None:
        backoff = 0.0
        while not stop.is_set():
            try:
                self.publisher.ensure_topics(self.settings.aggregate_types)
                return
            except EventStoreError as error:
                backoff = self._after_failure(error, backoff, "creating topics")
                stop.wait(backoff)

    def _drain(self, lease: OutboxLease, stop: threading.Event) -> None:
        backoff = 0.0
        while not stop.is_set():
            if not lease.held():
                log.warning(
                    "lost the lease of shard %d (database connection ended)", self.settings.shard
                )
                return
            try:
                published = self.drain_once()
            except EventStoreError as error:
                backoff = self._after_failure(error, backoff, "publishing")
                if isinstance(error, PublishError):  # not the database's failures
                    self.metrics.publish_errors.inc()
                stop.wait(backoff)
                continue
            backoff = 0.0
            if published == 0:
                lease.wait_for_appends(self.settings.poll_interval)

    def _after_failure(self, error: EventStoreError, backoff: float, doing: str) -> float:
        """The pause before retrying after `error`; raises `error` when it is not retriable."""
        s = self.settings
        if not error.retriable:
            log.error(
                "relay for shard %d/%d stops: %s failed and retrying cannot help: %s",
                s.shard,
                s.shards,
                doing,
                error,
            )
            raise error
        backoff = min(s.max_backoff, max(0.1, backoff * 2))
        log.warning("%s failed, retrying in %.1fs: %s", doing, backoff, error)
        return backoff

    def drain_once(self) -> int:
        """Publish the shard's oldest batch and remove it from the outbox; return its size.
        Raises (and removes nothing) when the publisher or the database fails."""
        s = self.settings
        self._update_status()
        batch = self.store.outbox_batch(s.batch_size, shard=s.shard, shards=s.shards)
        if not batch:
            return 0
        self.publisher.publish(batch)
        self.store.outbox_remove([e.position for e in batch if e.position is not None])
        self.published += len(batch)
        self.metrics.published.inc(len(batch))
        return len(batch)

    def _update_status(self) -> None:
        now = time.monotonic()
        if now - self._last_status < self.settings.status_interval:
            return
        self._last_status = now
        status = self.store.outbox_status()
        self.metrics.outbox_depth.set(status.depth)
        oldest = status.oldest_enqueued_at
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        self.metrics.outbox_oldest_age.set(max(0.0, age))
        if self._monitor is not None:
            # Monitoring only: a failure here must never stop the relay from publishing.
            try:
                horizon = self._monitor.log_horizon()
            except EventStoreError as error:
                log.warning("could not read the global log's horizon: %s", error)
                return
            self.metrics.log_horizon_lag.set(horizon.lag_seconds)
            self.metrics.log_events_behind.set(horizon.events_behind)
