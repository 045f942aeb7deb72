"""Property-based fuzzing of the HTTP API from its own OpenAPI description (schemathesis).

Every operation /openapi.json lists is called with generated requests, valid and invalid,
against the real app on a real store (SQLite in tmp_path, PostgreSQL in a schema of its own)
that holds a small game and the demo projections' documents. Reads need a token here
(`anonymous_reads=False`), and schemathesis sends an admin token with every call except the
ones it generates without one on purpose (those must be refused with a 401). Two properties
are checked apart, so that a gap in the description does not hide a crash, nor the reverse:

- what docs/http-api.md promises whatever the description says: no 5xx but a 503 with
  `Retry-After`; every error a problem document, without a stack trace; a 401 only for a
  request without the token; nothing stored by a rejected append (the events table holds
  as many rows after it as before);
- the description itself: each answer's status, content type, headers and body are ones
  /openapi.json declares for the operation, and requests it calls invalid are refused.

Then what random generation from the description rarely reaches: batches that could mostly
be stored, with a conflict or a broken rule somewhere (stored whole or not at all), and
integers beyond 64 bits in every integer parameter; and, without a server, the list of what
the description leaves out of docs/http-api.md.

Requests go through Starlette's TestClient, entered once per test, so that the app's
lifespan (its producer) starts and stops with the test; the event stream is read up to its
first message and then closed.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from schemathesis import Case
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from eventstore import Event, EventStore, open_store
from eventstore.consumers import ProjectionRunner, StoreTailSource
from eventstore.demo import projections as demo_projections
from eventstore.demo import reducers as demo_reducers
from eventstore.events import MAX_ID_LENGTH, MAX_TYPE_NAME_LENGTH
from eventstore.web import ApiOptions, create_app
from tests.helpers import T0

FUZZ = settings(
    max_examples=50,
    deadline=None,
    database=None,
    # The store and the client are the test's, kept across examples on purpose.
    suppress_health_check=list(HealthCheck),
)
SPEC_CHECKS: list[CheckFunction] = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
PROBLEM = "application/problem+json"
WORLD = "world-1-"

# The admin token every call carries. Its secret is fixed so that schemathesis, configured
# before any test runs, can send it; each test's store keeps only its digest, as
# `issue_token` would.
TOKEN_ID = "f022f022f022f022"
TOKEN_SECRET = "fuzzsecret" * 4 + "abc"  # 43 URL-safe characters, as issue_token makes
TOKEN = f"est_{TOKEN_ID}_{TOKEN_SECRET}"


def _description() -> dict[str, Any]:
    """The OpenAPI description the app serves; it does not depend on the store's content
    (the `client` fixture checks that each test's app serves this very one)."""
    with tempfile.TemporaryDirectory() as directory:
        store = open_store(f"sqlite:///{directory}/description.db")
        try:
            return create_app(store, reducers=demo_reducers.ALL).openapi()
        finally:
            store.close()


DESCRIPTION = _description()
schema = schemathesis.openapi.from_dict(
    DESCRIPTION,
    config=schemathesis.Config.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": TOKEN}}}}),
)


def _seed(store: EventStore) -> None:
    """A small game under one correlation id: a world, an item, two players who join, move
    and pick the item up, and a third whose move lacks `from_zone`, so that the demo
    projections, caught up, hold documents and one parked aggregate."""

    def new(
        aggregate_type: str, aggregate_id: str, version: int, event_type: str, /, **payload: Any
    ) -> Event:
        return Event.new(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            event_type=event_type,
            version=version,
            payload=payload,
            metadata={"correlation_id": "match-1", "world": "world-1"},
            timestamp=T0 + timedelta(seconds=version),
        )

    store.append_events(
        [
            new("World", "world-1", 1, "WorldCreated", name="Isles", zones=["dock", "hill"]),
            new("Item", f"{WORLD}sword", 1, "ItemSpawned", kind="sword", zone="dock"),
        ]
    )
    for name in ("ada", "bob"):
        player = WORLD + name
        store.append_events(
            [
                new("Player", player, 1, "PlayerJoined", name=name, zone="dock"),
                new("Player", player, 2, "PlayerMoved", from_zone="dock", to_zone="hill", x=3, y=4),
                new("Player", player, 3, "PlayerMoved", from_zone="hill", to_zone="dock", x=0, y=1),
            ]
        )
    store.append_events(
        [
            new("Player", f"{WORLD}ada", 4, "ItemPickedUp", item_id=f"{WORLD}sword"),
            new("Player", f"{WORLD}carl", 1, "PlayerJoined", name="carl", zone="dock"),
            new("Player", f"{WORLD}carl", 2, "PlayerMoved", to_zone="hill", x=1, y=1),
        ]
    )
    StoreTailSource().catch_up(ProjectionRunner(store, demo_projections.ALL))


@pytest.fixture
def client(store: EventStore) -> Iterator[TestClient]:
    """The app on this test's seeded store, with the admin token; reads need a token."""
    _seed(store)
    digest = hashlib.sha256(TOKEN_SECRET.encode()).hexdigest()
    store.create_token(TOKEN_ID, "fuzzer", ["admin"], digest)
    app = create_app(
        store,
        reducers=demo_reducers.ALL,
        projections=demo_projections.ALL,
        # A healthy event stream sends a keep-alive soon after the log's end (one that ends
        # instead failed).
        options=ApiOptions(anonymous_reads=False, stream_keepalive=0.1),
    )
    # Server errors come back as the 500 a real server sends, not as exceptions.
    with TestClient(app, raise_server_exceptions=False) as test_client:
        served = test_client.get("/openapi.json")
        assert served.json() == DESCRIPTION, (
            "the app serves another description than the fuzzed one"
        )
        yield test_client


Rows = Callable[[str], list[tuple[Any, ...]]]


@pytest.fixture
def rows(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Rows:
    """Runs a query on this test's tables with the driver, not the store. (On PostgreSQL the
    global log ends at a horizon that any transaction of the shared cluster holds back, so
    two reads of the log could differ by what had committed earlier.)"""
    if backend == "sqlite":

        def sqlite_rows(query: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(tmp_path / "events.db") as conn:
                return conn.execute(query).fetchall()

        return sqlite_rows
    url: str = request.getfixturevalue("postgres_url")
    schema: str = request.getfixturevalue("pg_schema")

    def pg_rows(query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            return conn.execute(query).fetchall()

    return pg_rows


def _stored(rows: Rows) -> int:
    """How many events the store holds."""
    return int(rows("SELECT count(*) FROM events")[0][0])


def _send(client: TestClient, case: Case[Any]) -> httpx.Response:
    """Send `case` as schemathesis prepared it (headers, query, body) through the test
    client; an event stream is read up to its first message, then closed."""
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url))
    body: dict[str, Any] = {}
    if "json" in kwargs:
        body["json"] = kwargs["json"]
    elif "data" in kwargs:
        body["content"] = kwargs["data"]
    request = client.build_request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params"),
        headers=kwargs.get("headers"),
        **body,
    )
    response: httpx.Response = client.send(request, stream=True)
    streamed = response.headers.get("content-type", "").startswith("text/event-stream")
    try:
        first = next(response.iter_bytes(), b"") if streamed else response.read()
    finally:
        response.close()
    if not streamed:
        return response
    cut = httpx.Response(
        response.status_code, headers=response.headers, content=first, request=request
    )
    cut.elapsed = response.elapsed
    return cut


def _check_problem(response: httpx.Response) -> None:
    """Docs/http-api.md on errors: problem documents, never a stack trace, 503 with
    Retry-After, 422 listing fields and rules, 401 with WWW-Authenticate and only when the
    request did not carry the (valid) admin token."""
    status = response.status_code
    assert status < 500 or status == 503, f"server error {status}: {response.text[:2000]}"
    authorization = response.request.headers.get("authorization")
    if status == 401:
        assert authorization != f"Bearer {TOKEN}", f"the admin token was refused: {response.text}"
        assert response.headers.get("www-authenticate", "").startswith("Bearer"), response.headers
    if status < 400:
        return
    assert response.headers.get("content-type") == PROBLEM, (
        status,
        response.headers,
        response.text,
    )
    problem = response.json()
    assert problem["status"] == status, problem
    assert problem["type"].startswith("https://eventstore.dev/problems/"), problem
    assert isinstance(problem["title"], str), problem
    assert isinstance(problem["detail"], str), problem
    assert isinstance(problem["retriable"], bool), problem
    assert "Traceback" not in response.text, problem
    assert 'File "' not in response.text, problem
    if status == 503:
        assert response.headers.get("retry-after", "").isdigit(), response.headers
    if status == 422:
        assert isinstance(problem.get("errors"), list) and problem["errors"], (
            "a 422 without `errors`, which docs/http-api.md promises on every 422 (each field "
            f"and rule listed): {problem}"
        )


@schema.parametrize()
@FUZZ
def test_fuzz_behaviour(case: Case[Any], client: TestClient, rows: Rows) -> None:
    """No 5xx but a 503, errors as problem documents, and a rejected append stores
    nothing."""
    appending = case.method.upper() == "POST" and case.path == "/v1/events"
    before = _stored(rows) if appending else 0
    response = _send(client, case)
    case.validate_response(response, checks=[not_a_server_error])
    _check_problem(response)
    if appending and response.status_code != 200:
        assert _stored(rows) == before, (
            f"a rejected append ({response.status_code} {response.text[:500]}) stored events"
        )


@pytest.mark.parametrize("backend", ["sqlite"])  # the description is the same on both
@schema.parametrize()
@FUZZ
def test_fuzz_matches_description(case: Case[Any], client: TestClient) -> None:
    """Each answer is one /openapi.json declares: status, content type, headers, body; and
    what it calls invalid is refused."""
    response = _send(client, case)
    case.validate_response(response, checks=SPEC_CHECKS)


# -- batches: whole or not at all --------------------------------------------------------------

# The description's NewEvent admits events that the app refuses (see
# test_description_declares_every_answer), so the fuzzing above seldom stores anything; these
# batches mostly could be stored, and some break one rule somewhere in the middle.
_FLAWS: dict[str, dict[str, Any]] = {
    "type not an identifier": {"event_type": "0Moved"},
    "version 0": {"version": 0},
    "payload not an object": {"payload": [1]},
    "naive timestamp": {"timestamp": "2026-01-01T12:00:00"},
    "unknown field": {"colour": "red"},
}
_batches = st.fixed_dictionaries(
    {
        "events": st.lists(
            st.tuples(
                st.sampled_from([f"{WORLD}ada", f"{WORLD}zed", "crate-9"]),
                # the next version mostly; else a gap, or one already taken
                st.sampled_from([1, 1, 1, 2, 0]),
            ),
            min_size=1,
            max_size=6,
        ),
        # at most one event breaks a rule, at any place
        "flaw": st.none() | st.tuples(st.integers(0, 5), st.sampled_from(sorted(_FLAWS))),
    }
)


@FUZZ
@given(batch=_batches)
def test_a_batch_is_stored_whole_or_not_at_all(
    client: TestClient, rows: Rows, batch: dict[str, Any]
) -> None:
    """A 200 stored every event of the batch, anything else none: conflicts with what is
    stored or within the batch, gaps, and a broken rule at any place in it."""
    versions: dict[str, int] = dict(
        rows("SELECT aggregate_id, max(version) FROM events GROUP BY aggregate_id")
    )
    body: list[dict[str, Any]] = []
    for aggregate_id, step in batch["events"]:
        versions[aggregate_id] = versions.get(aggregate_id, 0) + step
        body.append(
            {
                "event_type": "PlayerMoved",
                "aggregate_id": aggregate_id,
                "aggregate_type": "Player",
                "version": versions[aggregate_id],
                "payload": {"from_zone": "dock", "to_zone": "hill", "x": 1, "y": 2},
            }
        )
    if batch["flaw"] is not None:
        place, flaw = batch["flaw"]
        body[place % len(body)].update(_FLAWS[flaw])
    before = _stored(rows)
    response = client.post("/v1/events", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    _check_problem(response)
    expected = before + len(body) if response.status_code == 200 else before
    assert _stored(rows) == expected, f"{response.status_code} {response.text[:300]} for {body}"


# -- what the description declares ------------------------------------------------------------

# Answers docs/http-api.md gives to some routes only, beyond 200, 401/403 (a token needed),
# 422 (an argument or a body) and 503 (any route reaching the store).
ROUTE_ANSWERS = {
    "POST /v1/events": {"409", "413", "415"},
    "GET /v1/aggregates/{aggregate_id}": {"404"},
    "GET /v1/aggregates/{aggregate_id}/state": {"400", "404"},
    "GET /v1/projections/{name}": {"404"},
    "GET /v1/projections/{name}/documents": {"404"},
    "GET /v1/projections/{name}/documents/{key}": {"404"},
    "POST /v1/projections/{name}/retry": {"404", "409"},
}
IDENTIFIER = "^[A-Za-z_][A-Za-z0-9_]*$"
TEXT_BODIES = {"GET /metrics": "text/plain", "GET /v1/log/stream": "text/event-stream"}


def _gaps(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    """What the description of one operation leaves out of what docs/http-api.md says it
    answers."""
    label = f"{method.upper()} {path}"
    declared: dict[str, Any] = operation.get("responses", {})
    expected = {"200"} | ROUTE_ANSWERS.get(label, set())
    if operation.get("security"):
        expected |= {"401", "403"}
    if operation.get("parameters") or operation.get("requestBody"):
        expected.add("422")
    if path != "/v1/health":
        expected.add("503")
    gaps = [f"no {status} response" for status in sorted(expected - set(declared))]
    for status, response in sorted(declared.items()):
        content = response.get("content", {})
        if status.startswith(("4", "5")) and not content.get(PROBLEM, {}).get("schema"):
            gaps.append(f"{status} is not declared as {PROBLEM} with a schema ({sorted(content)})")
    ok = declared.get("200", {}).get("content", {})
    if label in TEXT_BODIES:
        if not any(media.startswith(TEXT_BODIES[label]) for media in ok):
            gaps.append(f"200 does not declare {TEXT_BODIES[label]} ({sorted(ok)})")
    elif not ok.get("application/json", {}).get("schema"):
        gaps.append("200 has no body schema (`{}`)")
    return [f"{label}: {gap}" for gap in gaps]


def _new_event_gaps(properties: dict[str, Any]) -> list[str]:
    """Rules of `Event` (eventstore.events) that NewEvent does not state: a client built
    from the description sends events that are refused."""
    rules: dict[str, dict[str, object]] = {
        "event_type": {"pattern": IDENTIFIER, "maxLength": MAX_TYPE_NAME_LENGTH},
        "aggregate_type": {"pattern": IDENTIFIER, "maxLength": MAX_TYPE_NAME_LENGTH},
        "aggregate_id": {"maxLength": MAX_ID_LENGTH},
        "version": {"maximum": 2**62 - 1},
    }
    return [
        f"NewEvent.{name}: no {keyword} {value!r}, which the app holds events to"
        for name, wanted in rules.items()
        for keyword, value in wanted.items()
        if keyword not in properties.get(name, {})
    ]


def test_description_declares_every_answer() -> None:
    """Each operation of /openapi.json declares the answers docs/http-api.md gives it, each
    error as a problem document, and each body's schema: what clients are generated from,
    and what the fuzzing above can hold the app to."""
    gaps = [
        gap
        for path, operations in DESCRIPTION["paths"].items()
        for method, operation in operations.items()
        for gap in _gaps(path, method, operation)
    ]
    schemas = DESCRIPTION.get("components", {}).get("schemas", {})
    if "Problem" not in schemas:
        gaps.insert(0, "components.schemas has no Problem (the problem document) to refer to")
    gaps += _new_event_gaps(schemas.get("NewEvent", {}).get("properties", {}))
    assert not gaps, f"{len(gaps)} gaps in /openapi.json:\n" + "\n".join(gaps)


# -- integers beyond 64 bits ------------------------------------------------------------------

PATH_VALUES = {
    "aggregate_id": f"{WORLD}ada",
    "correlation_id": "match-1",
    "name": "player-positions",
    "key": f"{WORLD}ada",
}


def _integer_parameters() -> list[tuple[str, str, str]]:
    """(method, path, name) of every integer query parameter the description declares."""
    found = []
    for path, operations in DESCRIPTION["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                declared = parameter["schema"]
                types = {declared.get("type")} | {s.get("type") for s in declared.get("anyOf", [])}
                if parameter["in"] == "query" and "integer" in types:
                    found.append((method.upper(), path, parameter["name"]))
    return found


def test_integers_beyond_64_bits(client: TestClient) -> None:
    """A query integer no database column holds (the description bounds few of them) is
    refused with a 4xx problem or served, never a 5xx: each integer query parameter of each
    operation, one at a time."""
    failures = []
    for method, path, name in _integer_parameters():
        for value in (2**63, 2**64, -(2**63) - 1):
            url = path.format(**PATH_VALUES)
            request = client.build_request(
                method, url, params={name: str(value)}, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            response = client.send(request, stream=True)
            try:
                if response.headers.get("content-type", "").startswith("text/event-stream"):
                    chunks = response.iter_bytes()  # the log is read after the first message
                    next(chunks)
                    if not next(chunks, b""):
                        failures.append(f"{method} {url}?{name}={value}: the stream ended")
                else:
                    response.read()
            finally:
                response.close()
            try:
                _check_problem(response)
            except AssertionError as error:
                failures.append(f"{method} {url}?{name}={value}: {error}")
    assert not failures, "\n".join(failures)
