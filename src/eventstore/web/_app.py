"""The HTTP API and the time-travel page: one ASGI app (FastAPI) on the library.

Appends go through an `EventProducer` (validation, group commit, retries of a busy store),
reads through the store's capabilities, state through a `Replayer`, projection status and
retries through the projections' own functions: the app adds transport, not behaviour. The
routes and their JSON are described in docs/http-api.md and served at /openapi.json.

Blocking calls (the store, the producer) run in Starlette's thread pool; the event stream is
a coroutine that reads the global log in pages and waits between them (woken at once by
appends made through this app, every half second otherwise).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response, StreamingResponse

from eventstore._wire import to_document
from eventstore.consumers import Applier, Projection, parked_rows, projection_status, retry_parked
from eventstore.errors import (
    AggregateNotFoundError,
    DuplicateEventError,
    EventStoreError,
    ProjectionError,
)
from eventstore.events import Event, encode_json
from eventstore.producer import EventProducer
from eventstore.replay import Reducer, Replayer
from eventstore.store import AggregateRef, ApiToken, EventStore
from eventstore.versioning import PayloadSchemas
from eventstore.web import _problems
from eventstore.web._auth import AuthError, allows, verify_token
from eventstore.web._limits import BodyLimit
from eventstore.web._metrics import HttpMetrics
from eventstore.web._problems import Problem
from eventstore.web._schemas import COMPONENTS, ok, problem

MAX_PAGE = 1000
MAX_INT = 2**62
"""The largest version or position a query may name (beyond any stored; within bigint)."""
_STATIC = files("eventstore.web") / "static"
_STATIC_FILES = frozenset({"index.html", "app.js", "style.css", "favicon.svg"})
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class ApiOptions:
    """How the app behaves (the `eventstore serve` flags)."""

    anonymous_reads: bool = True
    """Reads without a token (only ever on a loopback address: `serve` refuses otherwise)."""
    max_body_bytes: int = 1 << 20
    max_batch: int = 1000
    cors_origins: Sequence[str] = ()
    retry_after: int = 1
    """Seconds a 503 asks the client to wait before resending."""
    demo_world: str | None = None
    """The demo world's id, when the app serves one (the page's world view)."""
    stream_keepalive: float = 15.0
    producer_timeout: float = 30.0
    producer_retry_timeout: float = 5.0


@dataclass
class _State:
    store: EventStore
    replayer: Replayer
    projections: dict[str, Projection]
    kafka: tuple[str, str] | None
    options: ApiOptions
    schemas: PayloadSchemas | None
    producer: EventProducer | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    appended: asyncio.Condition | None = None
    appends: int = 0


_bearer = HTTPBearer(auto_error=False, description="`eventstore tokens create NAME --scope ...`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _state(request: Request) -> _State:
    state: _State = request.app.state.eventstore
    return state


def _scoped(scope: str) -> Callable[..., Awaitable[ApiToken | None]]:
    # A coroutine: a request without a token (an anonymous read, a refusal) costs no trip
    # to the thread pool; a token is looked up there.
    async def check(request: Request, credentials: Credentials) -> ApiToken | None:
        state = _state(request)
        if credentials is None:
            if scope == "read" and state.options.anonymous_reads:
                return None
            raise AuthError(
                f"this request needs a bearer token with the {scope!r} scope "
                "(Authorization: Bearer <token>); create one with "
                f"`eventstore tokens create NAME --scope {scope}`",
                status=401,
            )
        token = await run_in_threadpool(verify_token, state.store, credentials.credentials)
        if not allows(token, scope):
            raise AuthError(
                f"the token {token.name!r} has the scopes {', '.join(token.scopes)}, and this "
                f"request needs {scope!r}; create a token with that scope",
                status=403,
            )
        return token

    return check


Reader = Annotated[ApiToken | None, Depends(_scoped("read"))]
Appender = Annotated[ApiToken | None, Depends(_scoped("append"))]
Admin = Annotated[ApiToken | None, Depends(_scoped("admin"))]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="at most this many (≤ 1000)")]
AggregateId = Annotated[str, Path(min_length=1, max_length=1000)]


def _json(value: Any, status: int = 200) -> Response:
    return Response(encode_json(value), status_code=status, media_type="application/json")


def _events(events: Sequence[Event]) -> list[dict[str, Any]]:
    return [to_document(e) for e in events]


async def _no_controls(request: Request) -> None:
    """Ids, types and prefixes never hold control characters (the store refuses them, and
    PostgreSQL text cannot hold NUL): a 422 naming each, before any read."""
    problems = [
        {"field": f"{where}.{name}", "rule": "must not hold control characters"}
        for where, items in (
            ("path", request.path_params.items()),
            ("query", request.query_params.multi_items()),
        )
        for name, value in items
        if isinstance(value, str) and any(ord(c) < 32 or ord(c) == 127 for c in value)
    ]
    if problems:
        text = ", ".join(p["field"] for p in problems)
        raise Problem(422, "invalid-request", f"control characters in {text}", errors=problems)


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        value = value.astimezone(UTC) if value.tzinfo is not None else value
    except OverflowError:
        raise Problem(
            422,
            "invalid-query",
            f"{name} is outside the range of UTC times",
            errors=[{"field": f"query.{name}", "rule": "must be a time in years 1 to 9999 UTC"}],
        ) from None
    if value.tzinfo is None:
        raise Problem(
            422,
            "invalid-query",
            f"{name} must carry a time zone (e.g. 2026-11-01T18:00:00Z)",
            errors=[{"field": f"query.{name}", "rule": "must carry a time zone"}],
        )
    return value


# -- what the OpenAPI description says of every route's errors -------------------------------

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: problem(text)
    for status, text in {
        400: "a query that cannot be served",
        401: "no valid bearer token",
        403: "the token lacks the scope",
        404: "unknown aggregate, projection, document or route",
        413: "body or batch too large",
        422: "a field breaks a rule (each field and rule listed)",
        500: "the server failed (a log reference, never a stack trace)",
        503: "retriable: retry after Retry-After seconds",
    }.items()
}


# -- the body of POST /v1/events ------------------------------------------------------------

_APPEND_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/NewEvent"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/NewEvent"}},
                ]
            }
        }
    },
}


def _parse_events(body: bytes, max_batch: int) -> tuple[list[Event], list[int]]:
    """The events of a POST body, and the indexes of those given an `id` but no `timestamp`
    (stamped now here: a resend must then take the stored event's, see `_restamped`)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise Problem(
            422,
            "invalid-json",
            f"the body is not JSON ({error}); send one event object or an array of them",
            errors=[{"field": "body", "rule": "must be JSON"}],
        ) from None
    items = document if isinstance(document, list) else [document]
    if not items:
        raise Problem(
            422,
            "empty-batch",
            "the batch is empty; send at least one event",
            errors=[{"field": "body", "rule": "must hold at least one event"}],
        )
    if len(items) > max_batch:
        raise Problem(
            413,
            "batch-too-large",
            f"the batch holds {len(items)} events and the limit is {max_batch}; "
            "split it (each part is stored atomically)",
        )
    events: list[Event] = []
    stamped: list[int] = []
    problems: list[dict[str, str]] = []
    now = datetime.now(UTC)
    for index, item in enumerate(items):
        where = f"events[{index}]" if isinstance(document, list) else "event"
        if not isinstance(item, dict):
            problems.append({"field": where, "rule": "must be a JSON object"})
            continue
        item = dict(item)
        if item.get("id") is None:
            item["id"] = str(uuid.uuid4())
        elif item.get("timestamp") is None:
            stamped.append(len(events))
        if item.get("timestamp") is None:
            item["timestamp"] = now.isoformat()
        item.pop("position", None)
        item.pop("recorded_at", None)
        try:
            events.append(Event(**item))
        except EventStoreError as error:
            for field_name, rule in getattr(error, "problems", [("event", str(error))]):
                problems.append({"field": f"{where}.{field_name}", "rule": rule})
    if problems:
        text = "; ".join(f"{p['field']}: {p['rule']}" for p in problems)
        raise Problem(422, "invalid-event", f"invalid event: {text}", errors=problems)
    return events, stamped


def _append(
    store: EventStore, producer: EventProducer, body: bytes, options: ApiOptions
) -> list[int]:
    events, stamped = _parse_events(body, options.max_batch)
    try:
        return producer.publish_many(events)
    except DuplicateEventError:
        if not stamped:
            raise
        # A resend of events this server stamped differs from the stored ones by the clock
        # only: take the stored timestamps and resend (identical now: the stored positions).
        return producer.publish_many(_restamped(store, events, stamped))


def _restamped(store: EventStore, events: list[Event], stamped: list[int]) -> list[Event]:
    """Events the server stamped, whose id is already stored at their aggregate and version,
    take the stored timestamp: a resend of the same body is then identical (200, the stored
    positions) instead of a conflict on the server's clock."""
    for index in stamped:
        event = events[index]
        stored = store.read_aggregates({event.aggregate_id: event.version - 1}, limit=1)
        if stored and stored[0].id == event.id and stored[0].version == event.version:
            fields = event.to_dict()
            fields.pop("position"), fields.pop("recorded_at")
            fields["timestamp"] = stored[0].timestamp
            events[index] = Event(**fields)
    return events


# -- the app ------------------------------------------------------------------------------------


def create_app(
    store: EventStore,
    *,
    reducers: Sequence[Reducer] = (),
    projections: Sequence[Projection] = (),
    schemas: PayloadSchemas | None = None,
    kafka: tuple[str, str] | None = None,
    options: ApiOptions | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The API on `store` (which the caller opens, migrates and closes). The app starts an
    `EventProducer` when it starts and closes it when it stops."""
    options = options or ApiOptions()
    state = _State(
        store=store,
        replayer=Replayer(store, reducers),
        projections={p.name: p for p in projections},
        kafka=kafka,
        options=options,
        schemas=schemas,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.appended = asyncio.Condition()
        # Retries of an unavailable store end well before the request's timeout, so that a
        # POST during an outage gets a 503 (retry) rather than "outcome unknown".
        state.producer = EventProducer(
            store,
            schemas=schemas,
            timeout=options.producer_timeout,
            retry_timeout=options.producer_retry_timeout,
        )
        try:
            yield
        finally:
            state.stopping.set()
            producer, state.producer = state.producer, None
            await run_in_threadpool(producer.close)

    app = FastAPI(
        title="eventstore",
        version="1",
        summary="The game platform's event store over HTTP",
        description="Errors are problem details (RFC 9457). See docs/http-api.md.",
        docs_url=None,  # Swagger UI would load its assets from a CDN: no network at run time
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Depends(_no_controls)],
        responses=_PROBLEMS,
    )
    app.state.eventstore = state
    metrics = HttpMetrics(registry)
    app.state.metrics = metrics
    _problems.install(app, options.retry_after)
    _routes(app, state, metrics)
    _page(app)
    # Outermost first: the body limit sees every request, metrics count every answer.
    app.add_middleware(BodyLimit, max_bytes=options.max_body_bytes)
    if options.cors_origins:
        app.add_middleware(
            _Cors,
            allow_origins=list(options.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["Retry-After"],
        )
    app.add_middleware(metrics.middleware)
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:  # built once: the body's schema is not a model's
            schema = original()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(COMPONENTS)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _routes(app: FastAPI, state: _State, metrics: HttpMetrics) -> None:
    store = state.store
    replayer = state.replayer

    @app.get("/v1/health", tags=["operating"], responses=ok("health"))
    def health() -> dict[str, str]:
        """Liveness: the app answers (no token needed)."""
        return {"status": "ok", "backend": _backend(store)}

    @app.get("/v1/info", tags=["operating"], responses=ok("info"))
    def info(_: Reader) -> dict[str, Any]:
        """What this server serves: the backend, the reducers and projections it has code
        for, whether reads need a token, the demo world."""
        return {
            "backend": _backend(store),
            "reducers": sorted(replayer.reducers),
            "projections": sorted(state.projections),
            "anonymous_reads": state.options.anonymous_reads,
            "demo_world": state.options.demo_world,
        }

    @app.get(
        "/metrics",
        tags=["operating"],
        response_class=Response,
        responses={200: {"description": "Prometheus text", "content": {"text/plain": {}}}},
    )
    def prometheus(_: Reader) -> Response:
        """Prometheus metrics of this server (requests by route and status, latency)."""
        return metrics.exposition()

    # -- appending --------------------------------------------------------------------------

    @app.post(
        "/v1/events",
        tags=["events"],
        openapi_extra={"requestBody": _APPEND_BODY},
        responses={
            **ok("append", "stored (or already stored: an identical resend)"),
            409: problem("version conflict, or an id reused with other content"),
            413: problem("body or batch too large"),
            415: problem("the body is not application/json"),
            422: problem("an event breaks a rule (each field and rule listed)"),
            503: problem("retriable: resend the same events after Retry-After"),
        },
    )
    async def append(request: Request, _: Appender) -> Response:
        """Append one event or a batch (stored whole or not at all), through the producer.

        Idempotent by event id: resending identical events returns the positions stored the
        first time. Give each event its own `id` so that a retry is recognised."""
        content_type = request.headers.get("content-type", "application/json")
        if not content_type.startswith("application/json"):
            raise Problem(415, "unsupported-media-type", "send the events as application/json")
        body = await request.body()
        producer = state.producer
        if producer is None:
            raise Problem(
                503,
                "stopping",
                "the server is stopping; resend the same events to another or after a restart",
                retriable=True,
            )
        # One trip to the thread pool: parsing (up to a MiB), then the producer's commit.
        positions = await run_in_threadpool(_append, store, producer, body, state.options)
        condition = state.appended
        if condition is not None:
            async with condition:
                state.appends += 1
                condition.notify_all()
        return _json({"positions": positions})

    # -- reading events ---------------------------------------------------------------------

    @app.get(
        "/v1/aggregates/{aggregate_id:path}/events",
        tags=["events"],
        responses=ok("aggregate_events"),
    )
    def aggregate_events(
        _: Reader,
        aggregate_id: AggregateId,
        from_version: Annotated[int, Query(ge=1, le=MAX_INT)] = 1,
        limit: Limit = 100,
    ) -> Response:
        """An aggregate's events from `from_version` on (a page; `next_version` continues)."""
        found = store.read_aggregates({aggregate_id: from_version - 1}, limit=limit + 1)
        if not found and from_version == 1:
            raise AggregateNotFoundError(f"no events of aggregate {aggregate_id!r}; check the id")
        page = found[:limit]
        more = len(found) > limit
        return _json(
            {
                "aggregate_id": aggregate_id,
                "events": _events(page),
                "next_version": page[-1].version + 1 if more else None,
            }
        )

    @app.get("/v1/aggregates", tags=["events"], responses=ok("aggregates"))
    def aggregates(
        _: Reader,
        type: Annotated[str | None, Query(min_length=1, description="aggregate type")] = None,
        prefix: Annotated[str | None, Query(min_length=1, description="id prefix")] = None,
        after_type: Annotated[str | None, Query(description="the page after this")] = None,
        after: Annotated[str | None, Query(description="the page after this id")] = None,
        limit: Limit = 50,
    ) -> Response:
        """Aggregates by (type, id), of one type or all, whose id starts with `prefix`."""
        ref = None
        if after is not None:
            ref = AggregateRef(after_type or type or "", after)
        found = store.list_aggregates(type, after=ref, id_prefix=prefix, limit=limit + 1)
        page = found[:limit]
        return _json(
            {
                "aggregates": [
                    {"aggregate_type": a.aggregate_type, "aggregate_id": a.aggregate_id}
                    for a in page
                ],
                "next_after": (
                    {
                        "aggregate_type": page[-1].aggregate_type,
                        "aggregate_id": page[-1].aggregate_id,
                    }
                    if len(found) > limit
                    else None
                ),
            }
        )

    @app.get("/v1/events", tags=["events"], responses=ok("events_by_type"))
    def events_by_type(
        _: Reader,
        type: Annotated[str, Query(min_length=1, description="event type")],
        from_: Annotated[datetime | None, Query(alias="from")] = None,
        to: Annotated[datetime | None, Query()] = None,
        after_position: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
        limit: Limit = 100,
    ) -> Response:
        """Events of one type with game time in [from, to), by position (a page)."""
        start, end = _aware(from_, "from"), _aware(to, "to")
        page: list[Event] = []
        more = False
        for event in store.get_events_by_type(type, start, end, after_position=after_position):
            if len(page) == limit:
                more = True
                break
            page.append(event)
        return _json(
            {
                "events": _events(page),
                "next_after_position": page[-1].position if more else None,
            }
        )

    @app.get(
        "/v1/correlations/{correlation_id:path}/events", tags=["events"], responses=ok("correlated")
    )
    def correlated(
        _: Reader,
        correlation_id: Annotated[str, Path(min_length=1, max_length=1000)],
        limit: Limit = MAX_PAGE,
    ) -> Response:
        """Every event whose `metadata.correlation_id` is this id, by position."""
        return _json({"events": _events(store.get_events_by_correlation(correlation_id, limit))})

    @app.get("/v1/log", tags=["events"], responses=ok("log"))
    def log_page(
        _: Reader,
        after: Annotated[int, Query(ge=0, le=MAX_INT, description="the last position seen")] = 0,
        limit: Limit = MAX_PAGE,
    ) -> Response:
        """The global log after `after` (a page; pass `next_after` for the next one)."""
        page = store.read_all(after, limit)
        return _json({"events": _events(page), "next_after": page[-1].position if page else after})

    @app.get(
        "/v1/log/stream",
        tags=["events"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def log_stream(
        request: Request,
        _: Reader,
        after: Annotated[int, Query(ge=0, le=MAX_INT, description="the last position seen")] = 0,
        last_event_id: Annotated[
            str | None, Header(description="set by EventSource on reconnection; wins")
        ] = None,
    ) -> StreamingResponse:
        """The global log as server-sent events (id = position), from `after` or from the
        `Last-Event-ID` header: a client that reconnects with the last id it saw misses
        nothing and sees nothing twice (the log is read below its horizon)."""
        start = after
        if last_event_id is not None:
            try:
                start = int(last_event_id)
            except ValueError:
                raise Problem(
                    422,
                    "invalid-last-event-id",
                    "Last-Event-ID must be a position (the id of the last event received)",
                    errors=[{"field": "Last-Event-ID", "rule": "must be an integer >= 0"}],
                ) from None
            if not 0 <= start <= MAX_INT:
                raise Problem(
                    422,
                    "invalid-last-event-id",
                    "Last-Event-ID must be a position >= 0 (the id of the last event received)",
                    errors=[{"field": "Last-Event-ID", "rule": "must be an integer >= 0"}],
                )
        return StreamingResponse(
            _stream(request, state, start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- state and time travel ---------------------------------------------------------------

    @app.get(
        "/v1/aggregates/{aggregate_id:path}/state", tags=["time travel"], responses=ok("state")
    )
    def aggregate_state(
        _: Reader,
        aggregate_id: AggregateId,
        version: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
        at: Annotated[datetime | None, Query(description="game time, with a zone")] = None,
        position: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
        history: bool = False,
        history_from: Annotated[int, Query(ge=1, le=MAX_INT)] = 1,
        history_limit: Limit = 100,
    ) -> Response:
        """The aggregate's state at a version, a game time or a global position (at most one;
        none: the latest), with a page of its history (each event, the state after it and
        what it changed) when `history` is true."""
        if sum(t is not None for t in (version, at, position)) > 1:
            raise Problem(400, "one-target", "give at most one of version, at and position")
        at = _aware(at, "at")
        _has_reducer(replayer, replayer.aggregate_type(aggregate_id))
        return _json(
            replayer.replay_document(
                aggregate_id,
                at=at,
                version=version,
                position=position,
                history=history,
                history_from=history_from,
                history_limit=history_limit,
            )
        )

    # After the routes below an aggregate's path: an id may hold '/' (`{...:path}`).
    @app.get("/v1/aggregates/{aggregate_id:path}", tags=["events"], responses=ok("aggregate"))
    def aggregate(_: Reader, aggregate_id: AggregateId) -> Response:
        """An aggregate's type, latest version and first and last game times."""
        first = store.read_aggregates({aggregate_id: 0}, limit=1)
        if not first:
            raise AggregateNotFoundError(
                f"no events of aggregate {aggregate_id!r}; check the id "
                "(GET /v1/aggregates?type=... lists them)"
            )
        last = _last_event(store, aggregate_id, first[0])
        return _json(
            {
                "aggregate_id": aggregate_id,
                "aggregate_type": first[0].aggregate_type,
                "version": last.version,
                "first_timestamp": to_document(first[0])["timestamp"],
                "last_timestamp": to_document(last)["timestamp"],
                "last_position": last.position,
            }
        )

    @app.get("/v1/world", tags=["time travel"], responses=ok("world"))
    def world(
        _: Reader,
        position: Annotated[
            int | None, Query(ge=0, le=MAX_INT, description="default: the latest")
        ] = None,
        type: Annotated[str | None, Query(min_length=1)] = None,
        prefix: Annotated[str | None, Query(min_length=1)] = None,
        after_type: Annotated[str | None, Query()] = None,
        after: Annotated[str | None, Query()] = None,
        limit: Limit = 100,
    ) -> Response:
        """A page of the world as of one global position (a consistent cut): the state of
        each aggregate that existed there. Pass the returned `position` for the next pages."""
        if type is not None:
            _has_reducer(replayer, type)
        if position is None:
            horizon = store.log_horizon()
            position = max(0, min(horizon.head, horizon.horizon - 1))
        ref = None
        if after is not None:
            ref = AggregateRef(after_type or type or "", after)
        page = replayer.world_at(
            position, aggregate_type=type, after=ref, id_prefix=prefix, limit=limit
        )
        return _json(page.to_dict())

    # -- projections ---------------------------------------------------------------------------

    @app.get("/v1/projections", tags=["projections"], responses=ok("projections"))
    def projections(_: Reader) -> Response:
        """Every projection: generation, lag, documents, parked, dead letters, last error."""
        return _json(projection_status(store, state.kafka, None))

    @app.get("/v1/projections/{name}", tags=["projections"], responses=ok("projection"))
    def projection(_: Reader, name: str) -> Response:
        """One projection's status and its parked aggregates."""
        entry = _known(lambda: projection_status(store, state.kafka, name))[0]
        entry["parked_aggregates"] = parked_rows(
            store.projection_failures(name, policy="park", limit=MAX_PAGE)
        )
        entry["retry_available"] = name in state.projections
        return _json(entry)

    @app.get("/v1/projections/{name}/documents", tags=["projections"], responses=ok("documents"))
    def documents(_: Reader, name: str, after: str = "", limit: Limit = 100) -> Response:
        """A page of the projection's documents by key."""
        _exists(store, name)
        found = store.list_documents(name, after, limit + 1)
        page = found[:limit]
        return _json(
            {
                "documents": [{"key": k, "document": d} for k, d in page],
                "next_after": page[-1][0] if len(found) > limit else None,
            }
        )

    @app.get(
        "/v1/projections/{name}/documents/{key}", tags=["projections"], responses=ok("document")
    )
    def document(_: Reader, name: str, key: str) -> Response:
        """One document of the projection's active read model."""
        _exists(store, name)
        found = store.get_document(name, key)
        if found is None:
            raise Problem(404, "document-not-found", f"projection {name!r} has no document {key!r}")
        return _json({"key": key, "document": found})

    @app.post(
        "/v1/projections/{name}/retry",
        tags=["projections"],
        responses={**ok("retry"), 409: problem("this server lacks the projection's code")},
    )
    def retry(
        _: Admin,
        name: str,
        body: Annotated[dict[str, str | None] | None, Body()] = None,
    ) -> Response:
        """Re-apply parked aggregates (all, or `aggregate_id`) from the store, after the
        handler was fixed. Needs the projection's code (`serve --projections`)."""
        aggregate_id = (body or {}).get("aggregate_id")
        projection = state.projections.get(name)
        if projection is None:
            _exists(store, name)
            raise Problem(
                409,
                "projection-code-missing",
                f"this server does not have projection {name!r}'s code, so it cannot apply "
                "events with it; start `eventstore serve --projections module:attr`",
            )
        applier = Applier(store, projection)
        try:
            results = retry_parked(store, projection, applier, aggregate_id)
        except ProjectionError as error:
            raise Problem(404, "not-parked", str(error)) from None
        return _json(
            {
                "results": [
                    {
                        "aggregate_id": found_id,
                        "applied": result.applied,
                        "parked_again": bool(result.parked),
                        "error": (
                            f"{result.parked[0].error_type}: {result.parked[0].message}"
                            if result.parked
                            else None
                        ),
                    }
                    for found_id, result in results
                ]
            }
        )


class _Cors(CORSMiddleware):
    """Starlette's CORS, answering a refused preflight with a problem document."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        return _problems.problem_response(
            400,
            "cors-refused",
            f"this origin or request is not allowed here ({bytes(response.body).decode()}); "
            "the server allows the origins given by `eventstore serve --cors-origin`",
        )


def _has_reducer(replayer: Replayer, aggregate_type: str) -> None:
    if aggregate_type not in replayer.reducers:
        known = ", ".join(sorted(replayer.reducers)) or "none"
        raise Problem(
            422,
            "no-reducer",
            f"this server has no reducer for aggregate type {aggregate_type!r} (it has: "
            f"{known}); start `eventstore serve --reducers module:attr` with one",
            errors=[{"field": "aggregate_type", "rule": f"must be one of: {known}"}],
        )


def _exists(store: EventStore, name: str) -> None:
    if store.projection_record(name) is None:
        raise Problem(
            404,
            "projection-not-found",
            f"no projection named {name!r} in this store; GET /v1/projections lists them",
        )


def _known(status: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    try:
        return status()
    except ProjectionError as error:
        raise Problem(404, "projection-not-found", str(error)) from None


def _backend(store: EventStore) -> str:
    return "sqlite" if type(store).__name__.lower().startswith("sqlite") else "postgresql"


def _last_event(store: EventStore, aggregate_id: str, first: Event) -> Event:
    """The aggregate's latest event in O(log n) reads of one event (versions are
    contiguous from 1): grow a bound until past the end, then halve."""
    last, low, step = first, first.version, 1
    while True:
        probe = store.read_aggregates({aggregate_id: low + step - 1}, limit=1)
        if not probe:
            break
        last, low, step = probe[0], probe[0].version, step * 2
    high = low + step  # no event at `high`
    while high - low > 1:
        middle = (low + high) // 2
        probe = store.read_aggregates({aggregate_id: middle - 1}, limit=1)
        if probe:
            last, low = probe[0], probe[0].version
        else:
            high = middle
    return last


async def _stream(request: Request, state: _State, after: int) -> AsyncIterator[bytes]:
    """Server-sent events: the global log after `after`, then what is appended, until the
    client leaves or the server stops."""
    options = state.options
    beat = time.monotonic()
    yield b": connected\n\n"
    while not state.stopping.is_set():
        seen = state.appends
        page = await run_in_threadpool(state.store.read_all, after, 500)
        if page:
            chunk = "".join(
                f"id: {e.position}\nevent: event\ndata: {encode_json(to_document(e))}\n\n"
                for e in page
            )
            after = page[-1].position or after
            beat = time.monotonic()
            yield chunk.encode()
            continue
        if await request.is_disconnected():
            return
        if time.monotonic() - beat >= options.stream_keepalive:
            beat = time.monotonic()
            yield b": keep-alive\n\n"
        condition = state.appended
        if condition is None:
            await asyncio.sleep(0.5)
            continue
        async with condition:
            with suppress(TimeoutError):
                await asyncio.wait_for(condition.wait_for(_changed(state, seen)), timeout=0.5)


def _changed(state: _State, seen: int) -> Callable[[], bool]:
    return lambda: state.appends != seen


def _page(app: FastAPI) -> None:
    """The time-travel page: fixed files shipped in the package, looked up by name in a fixed
    set (a request path never becomes a file path)."""

    def serve(name: str) -> Response:
        if name not in _STATIC_FILES:
            raise Problem(404, "not-found", f"no static file {name!r}")
        resource = _STATIC / name
        if not resource.is_file():
            raise Problem(404, "not-found", f"no static file {name!r}")
        suffix = name[name.rfind(".") :]
        return Response(
            resource.read_bytes(),
            media_type=_STATIC_TYPES[suffix],
            headers={
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": (
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
                ),
                "X-Frame-Options": "DENY",
            },
        )

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index() -> Response:
        return serve("index.html")

    @app.api_route("/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    def static(name: str) -> Response:
        return serve(name)
