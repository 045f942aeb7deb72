"""The replay worker's Prometheus metrics (its own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 120.0)


class ReplayMetrics:
    """Requests by kind and outcome, their latency, error replies by code, dead letters."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "eventstore_replay_requests",
            "Control requests answered, by kind and outcome (ok or error)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "eventstore_replay_latency_seconds",
            "From picking a request up to its reply acknowledged by the broker",
            ["kind"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.queued = Histogram(
            "eventstore_replay_queue_seconds",
            "From a request's send (its record's timestamp) to a worker picking it up",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "eventstore_replay_errors",
            "Error replies, by code",
            ["code"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "eventstore_replay_dead_lettered",
            "Control records without a readable request id, sent to the dead-letter topic",
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "eventstore_replay_in_progress",
            "Requests being run now",
            registry=self.registry,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve /metrics on `host:port` (a background thread)."""
        start_http_server(port, addr=host, registry=self.registry)
