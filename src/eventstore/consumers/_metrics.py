"""A projection runner's Prometheus metrics (each runner has its own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from eventstore.consumers._apply import BatchResult
from eventstore.errors import EventStoreError


class ProjectionMetrics:
    """Events applied, batches, handler errors, parked and dead-lettered events, lag per
    projection and partition, retried failures and rebuild progress."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["projection"]
        self.applied = Counter(
            "eventstore_projection_events_applied",
            "Events whose checkpoint advanced (handled or ignored by type)",
            labels,
            registry=self.registry,
        )
        self.duplicates = Counter(
            "eventstore_projection_events_duplicate",
            "Events skipped because their version was applied already (re-sends, redeliveries)",
            labels,
            registry=self.registry,
        )
        self.filled = Counter(
            "eventstore_projection_events_filled",
            "Events read from the store to fill a gap in what the source delivered",
            labels,
            registry=self.registry,
        )
        self.batches = Counter(
            "eventstore_projection_batches", "Batches committed", labels, registry=self.registry
        )
        self.handler_errors = Counter(
            "eventstore_projection_handler_errors",
            "Events a handler failed on (parked or skipped)",
            labels,
            registry=self.registry,
        )
        self.parked = Counter(
            "eventstore_projection_parked",
            "Aggregates parked (each waits for `eventstore projections retry`)",
            labels,
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "eventstore_projection_dead_lettered",
            "Records sent to the projection's dead-letter topic",
            labels,
            registry=self.registry,
        )
        self.retries = Counter(
            "eventstore_projection_retries",
            "Batches retried after a retriable failure (database or broker down)",
            labels,
            registry=self.registry,
        )
        self.lag_events = Gauge(
            "eventstore_projection_lag_events",
            "Events not yet applied: per Kafka partition, or against the log's head (store tail)",
            ["projection", "partition"],
            registry=self.registry,
        )
        self.rebuild = Gauge(
            "eventstore_projection_rebuild_progress",
            "Fraction of the global log a rebuild or catch-up has read (1 when done)",
            labels,
            registry=self.registry,
        )

    def batch(self, projection: str, result: BatchResult, events: int) -> None:
        self.batches.labels(projection).inc()
        self.applied.labels(projection).inc(result.applied)
        self.duplicates.labels(projection).inc(result.duplicates)
        self.filled.labels(projection).inc(result.filled)
        self.handler_errors.labels(projection).inc(result.handler_errors)
        self.parked.labels(projection).inc(len(result.parked))
        self.dead_lettered.labels(projection).inc(result.dead_lettered)

    def retrying(self, projection: str, error: EventStoreError) -> None:
        self.retries.labels(projection).inc()

    def lag(self, projection: str, partition: str, events: float, seconds: float | None) -> None:
        self.lag_events.labels(projection, partition).set(events)

    def rebuild_progress(self, projection: str, fraction: float) -> None:
        self.rebuild.labels(projection).set(fraction)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose the metrics at http://host:port/metrics (a daemon thread)."""
        start_http_server(port, addr=host, registry=self.registry)
