"""Prometheus metrics of the HTTP API: requests by route template and status, latency, and
requests in flight (a pure ASGI middleware: no task or buffering per request)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "eventstore_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "eventstore_http_request_seconds",
            "Time to the response's start, by route template",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.in_flight = Gauge(
            "eventstore_http_in_flight", "Requests being served", registry=self.registry
        )
        metrics = self

        class Middleware:
            def __init__(self, app: ASGIApp) -> None:
                self.app = app

            async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
                if scope["type"] != "http":
                    await self.app(scope, receive, send)
                    return
                started = time.perf_counter()
                status = 500
                # A label per method a client makes up would grow the series without bound.
                method = scope["method"] if scope["method"] in _METHODS else "other"

                async def sending(message: Message) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = message["status"]
                        route = _route(scope)
                        metrics.seconds.labels(method, route).observe(time.perf_counter() - started)
                    await send(message)

                metrics.in_flight.inc()
                try:
                    await self.app(scope, receive, sending)
                finally:
                    metrics.in_flight.dec()
                    metrics.requests.labels(method, _route(scope), str(status)).inc()

        self.middleware = Middleware

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def _route(scope: Scope) -> str:
    """The route template (/v1/aggregates/{aggregate_id}/state), never the raw path: ids
    would make a label per aggregate."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path.replace(":path}", "}")
    app = scope.get("app")
    router = getattr(app, "router", None)
    for candidate in getattr(router, "routes", ()):
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return str(getattr(candidate, "path", "other")).replace(":path}", "}")
    return "unmatched"
