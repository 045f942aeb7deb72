"""The relay's Prometheus metrics (each relay has its own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class RelayMetrics:
    """Outbox depth and age, events published, publish errors, whether this relay is the
    active one for its shard, and how far readers of the global log lag (its read horizon)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.outbox_depth = Gauge(
            "eventstore_outbox_depth", "Events stored but not yet published", registry=self.registry
        )
        self.outbox_oldest_age = Gauge(
            "eventstore_outbox_oldest_age_seconds",
            "Age of the oldest event not yet published (0 when none)",
            registry=self.registry,
        )
        self.published = Counter(
            "eventstore_relay_published_events",
            "Events acknowledged by Kafka",
            registry=self.registry,
        )
        self.publish_errors = Counter(
            "eventstore_relay_publish_errors",
            "Batches Kafka did not acknowledge (other failures are not counted here)",
            registry=self.registry,
        )
        self.log_horizon_lag = Gauge(
            "eventstore_log_horizon_lag_seconds",
            "Age of the oldest stored event that readers of the global log cannot read yet "
            "(an open transaction holds the horizon back; 0 when none)",
            registry=self.registry,
        )
        self.log_events_behind = Gauge(
            "eventstore_log_events_behind",
            "Stored events at or above the global log's read horizon (not yet readable)",
            registry=self.registry,
        )
        self.active = Gauge(
            "eventstore_relay_active",
            "1 while this relay holds its shard's lease",
            registry=self.registry,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose the metrics at http://host:port/metrics (a daemon thread)."""
        start_http_server(port, addr=host, registry=self.registry)
