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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from eventstore.errors import EventStoreError
from eventstore.events import Event
from eventstore.producer._metrics import RelayMetrics
from eventstore.store import Outbox, OutboxLease

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
    """Seconds between updates of the outbox depth and age metrics."""
    aggregate_types: tuple[str, ...] = ()
    """Topics to create as soon as the relay is active (others are created before their
    first event is sent)."""


class OutboxRelay:
    """Drains one shard of the outbox to a publisher; run one per shard, plus standbys."""

    def __init__(
        self,
        store: Outbox,
        publisher: Publisher,
        settings: RelaySettings | None = None,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.settings = settings or RelaySettings()
        self.metrics = metrics or RelayMetrics()
        self.published = 0
        self._last_status = 0.0

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set: wait as a standby until this relay holds its shard's
        lease, then drain it; if the lease is lost, go back to waiting."""
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
        backoff = 0.1
        while not stop.is_set():
            try:
                self.publisher.ensure_topics(self.settings.aggregate_types)
                return
            except EventStoreError as error:
                log.warning("creating topics failed, retrying in %.1fs: %s", backoff, error)
                stop.wait(backoff)
                backoff = min(self.settings.max_backoff, backoff * 2)

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
                backoff = 0.0
            except EventStoreError as error:
                self.metrics.publish_errors.inc()
                backoff = min(self.settings.max_backoff, max(0.1, backoff * 2))
                log.warning("publishing failed, retrying in %.1fs: %s", backoff, error)
                stop.wait(backoff)
                continue
            if published == 0:
                lease.wait_for_appends(self.settings.poll_interval)

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
