"""The HTTP API's security promises (docs/http-api.md), against the real app on real stores.

Tokens: a write needs a live token with the scope, a read needs one unless anonymous reads
are on; a missing or bad token is a 401 (with `WWW-Authenticate: Bearer`) that does not tell
an unknown token id from a wrong secret, a token without the scope a 403; the store keeps
only the secret's digest. These run on both backends (the tokens live in the store); the rest
on the embedded SQLite store in tmp_path. Bodies: over the limit by Content-Length or by
counting a chunked body, or a batch over the limit, is a 413 and stores nothing. Static
files: only the fixed set, whatever the path says. CORS: off unless configured, then only for
the configured origin. Errors: never a stack trace. Binding: `check_bind` and `eventstore
serve` refuse to serve beyond loopback without authentication on every route.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pydantic
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from starlette.types import ASGIApp, Message

from eventstore import Event, EventStore, open_store
from eventstore.demo import projections as demo_projections
from eventstore.demo import reducers as demo_reducers
from eventstore.errors import ConfigurationError
from eventstore.replay import Reducer
from eventstore.versioning import PayloadSchemas
from eventstore.web import ApiOptions, create_app, issue_token
from eventstore.web._server import check_bind, is_loopback
from tests.helpers import event, history

PROBLEM = "application/problem+json"
STATIC_DIR = files("eventstore.web") / "static"
LEAK_MARKERS = ("[build-system]", "def create_app", "root:x:0:0", "from __future__")
"""Text of files outside the static set (pyproject.toml, _app.py, /etc/passwd, any module):
no answer from /static may contain it."""


Positions = Callable[[], list[int]]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _new_event(aggregate_id: str = "player-1", version: int = 1) -> dict[str, Any]:
    """An event as a game service posts it (id and timestamp filled by the server)."""
    return {
        "event_type": "PlayerJoined",
        "aggregate_id": aggregate_id,
        "aggregate_type": "Player",
        "version": version,
        "payload": {"name": "ada", "zone": "dock"},
    }


def _log(store: EventStore) -> list[Event]:
    """The global log of an embedded store (SQLite has no horizon: all of it)."""
    return store.read_all(0, 10_000)


def _assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.headers
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status, problem
    return problem


def _assert_unauthorized(response: httpx.Response) -> dict[str, Any]:
    problem = _assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer"), response.headers
    return problem


@contextmanager
def serving(store: EventStore, **options: Any) -> Iterator[TestClient]:
    """The app on `store` with these `ApiOptions`, its lifespan running; server errors come
    back as the response a real server sends, not as exceptions."""
    app = create_app(
        store,
        reducers=options.pop("reducers", demo_reducers.ALL),
        projections=options.pop("projections", demo_projections.ALL),
        schemas=options.pop("schemas", None),
        options=ApiOptions(**options),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def stored(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Positions:
    """The positions in this test's events table, read with the driver. (On PostgreSQL the
    global log ends at a horizon that any transaction of the shared cluster holds back.)"""
    if backend == "sqlite":

        def sqlite_positions() -> list[int]:
            with sqlite3.connect(tmp_path / "events.db") as conn:
                return [p for (p,) in conn.execute("SELECT position FROM events ORDER BY 1")]

        return sqlite_positions
    url: str = request.getfixturevalue("postgres_url")
    query = sql.SQL("SELECT position FROM {}.events ORDER BY 1").format(
        sql.Identifier(request.getfixturevalue("pg_schema"))
    )

    def pg_positions() -> list[int]:
        with psycopg.connect(url) as conn:
            return [p for (p,) in conn.execute(query)]

    return pg_positions


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[EventStore]:
    """The embedded store, in this test's own file."""
    store = open_store(f"sqlite:///{tmp_path / 'events.db'}")
    store.migrate()
    yield store
    store.close()


# -- tokens (both backends) -------------------------------------------------------------------


def test_append_without_a_token_is_401_with_a_bearer_challenge(
    store: EventStore, stored: Positions
) -> None:
    with serving(store) as client:
        response = client.post("/v1/events", json=_new_event())
    _assert_unauthorized(response)
    assert stored() == []


def _parts(token: str) -> tuple[str, str]:
    """(id, secret) of `est_<id>_<secret>` (the secret may hold "_" too)."""
    _, token_id, secret = token.split("_", 2)
    return token_id, secret


def _wrong_secret(token: str) -> str:
    token_id, secret = _parts(token)
    return f"est_{token_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"


BAD_TOKENS: dict[str, Callable[[str], str]] = {
    "malformed": lambda _: "not-a-token",
    "truncated": lambda token: token[:-1],
    "wrong secret": _wrong_secret,
    "unknown id": lambda token: "est_0123456789abcdef_" + _parts(token)[1],
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_a_bad_token_is_401(store: EventStore, stored: Positions, kind: str) -> None:
    token = issue_token(store, "writer", ["append", "read"])
    with serving(store, anonymous_reads=False) as client:
        headers = _bearer(BAD_TOKENS[kind](token))
        appended = client.post("/v1/events", json=_new_event(), headers=headers)
        read = client.get("/v1/info", headers=headers)
    _assert_unauthorized(appended)
    _assert_unauthorized(read)
    assert stored() == []


def test_a_revoked_token_is_401(store: EventStore, stored: Positions) -> None:
    token = issue_token(store, "writer", ["append", "read"])
    with serving(store, anonymous_reads=False) as client:
        before = client.post("/v1/events", json=_new_event(version=1), headers=_bearer(token))
        assert before.status_code == 200, before.text
        assert store.revoke_token("writer") == 1
        appended = client.post("/v1/events", json=_new_event(version=2), headers=_bearer(token))
        read = client.get("/v1/info", headers=_bearer(token))
    _assert_unauthorized(appended)
    _assert_unauthorized(read)
    assert stored() == before.json()["positions"]


def test_an_unknown_id_and_a_wrong_secret_are_refused_alike(store: EventStore) -> None:
    """Nothing in the answer (status, headers, body) tells whether the id exists: the
    secret's digest is compared with a dummy for an unknown id, so the work is the same
    too."""
    token = issue_token(store, "writer", ["append"])
    answers = []
    with serving(store) as client:
        for kind in ("wrong secret", "unknown id", "malformed"):
            response = client.post(
                "/v1/events", json=_new_event(), headers=_bearer(BAD_TOKENS[kind](token))
            )
            _assert_unauthorized(response)
            answers.append((response.status_code, dict(response.headers), response.content))
    assert answers[0] == answers[1] == answers[2]


def test_a_read_token_cannot_append_nor_retry(store: EventStore, stored: Positions) -> None:
    token = issue_token(store, "reader", ["read"])
    with serving(store, anonymous_reads=False) as client:
        assert client.get("/v1/info", headers=_bearer(token)).status_code == 200
        appended = client.post("/v1/events", json=_new_event(), headers=_bearer(token))
        retried = client.post(
            "/v1/projections/player-positions/retry", json={}, headers=_bearer(token)
        )
    assert "WWW-Authenticate" not in appended.headers
    assert "append" in _assert_problem(appended, 403)["detail"]
    assert "admin" in _assert_problem(retried, 403)["detail"]
    assert stored() == []


def test_an_append_token_appends_but_neither_reads_nor_retries(
    store: EventStore, stored: Positions
) -> None:
    token = issue_token(store, "writer", ["append"])
    with serving(store, anonymous_reads=False) as client:
        appended = client.post("/v1/events", json=_new_event(), headers=_bearer(token))
        read = client.get("/v1/log", headers=_bearer(token))
        retried = client.post(
            "/v1/projections/player-positions/retry", json={}, headers=_bearer(token)
        )
    assert appended.status_code == 200, appended.text
    assert appended.json()["positions"] == stored()
    _assert_problem(read, 403)
    _assert_problem(retried, 403)


def test_admin_implies_read_and_append(store: EventStore, stored: Positions) -> None:
    token = issue_token(store, "operator", ["admin"])
    with serving(store, anonymous_reads=False) as client:
        appended = client.post("/v1/events", json=_new_event(), headers=_bearer(token))
        read = client.get("/v1/log", headers=_bearer(token))
        retried = client.post(
            "/v1/projections/player-positions/retry", json={}, headers=_bearer(token)
        )
    assert appended.status_code == 200, appended.text
    assert read.status_code == 200, read.text
    assert appended.json()["positions"] == stored()
    # Past the token check: nothing of that projection is parked (it never ran here).
    assert retried.status_code == 200, retried.text
    assert retried.json() == {"results": []}


@pytest.fixture
def token_rows(
    store: EventStore, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[], list[tuple[Any, ...]]]:
    """Every row of this test's api_tokens table, read with the driver, not the store."""
    if backend == "sqlite":

        def rows() -> list[tuple[Any, ...]]:
            with sqlite3.connect(tmp_path / "events.db") as conn:
                return conn.execute("SELECT * FROM api_tokens").fetchall()

        return rows
    url: str = request.getfixturevalue("postgres_url")
    schema: str = request.getfixturevalue("pg_schema")

    def pg_rows() -> list[tuple[Any, ...]]:
        query = sql.SQL("SELECT * FROM {}.api_tokens").format(sql.Identifier(schema))
        with psycopg.connect(url) as conn:
            return conn.execute(query).fetchall()

    return pg_rows


def test_the_store_keeps_only_the_secrets_digest(
    store: EventStore, token_rows: Callable[[], list[tuple[Any, ...]]], tmp_path: Path
) -> None:
    token = issue_token(store, "writer", ["append"])
    secret = _parts(token)[1]
    rows = token_rows()
    assert len(rows) == 1
    cells = [str(cell) for cell in rows[0]]
    assert not [c for c in cells if secret in c], cells
    digests = [c for c in cells if re.fullmatch(r"[0-9a-f]{64}", c)]
    assert digests == [hashlib.sha256(secret.encode()).hexdigest()], cells
    # Not anywhere in the embedded store's files either (the journal included).
    for path in tmp_path.glob("events.db*"):
        assert secret.encode() not in path.read_bytes(), path


# -- anonymous reads --------------------------------------------------------------------------

PATH_VALUES = {
    "aggregate_id": "player-1",
    "correlation_id": "c-1",
    "name": "player-positions",
    "key": "player-1",
}


def _reads(client: TestClient) -> list[str]:
    """Every GET route the app describes, with its path filled in."""
    paths = client.get("/openapi.json").json()["paths"]
    return [path.format(**PATH_VALUES) for path, ops in paths.items() if "get" in ops]


def test_without_anonymous_reads_every_read_needs_a_token(sqlite_store: EventStore) -> None:
    sqlite_store.append_events(history("player-1", 2))
    token = issue_token(sqlite_store, "reader", ["read"])
    with serving(sqlite_store, anonymous_reads=False) as client:
        reads = [path for path in _reads(client) if path != "/v1/health"]
        assert "/metrics" in reads and "/v1/log/stream" in reads
        for path in reads:
            with client.stream("GET", path) as anonymous:
                assert anonymous.status_code == 401, (path, anonymous.status_code)
                anonymous.read()
                _assert_unauthorized(anonymous)
            with client.stream("GET", path, headers=_bearer(token)) as allowed:
                assert allowed.status_code not in (401, 403), (path, allowed.status_code)
        for open_path in ("/v1/health", "/", "/static/app.js", "/openapi.json"):
            assert client.get(open_path).status_code == 200, open_path


def test_anonymous_reads_stop_at_reads(sqlite_store: EventStore) -> None:
    with serving(sqlite_store) as client:
        assert client.get("/v1/log").status_code == 200
        _assert_unauthorized(client.post("/v1/events", json=_new_event()))
        _assert_unauthorized(client.post("/v1/projections/player-positions/retry", json={}))


# -- request bodies ---------------------------------------------------------------------------

LIMIT = 2048


def _oversize_batch() -> bytes:
    """A valid batch of events, larger than LIMIT: storable, were the limit not enforced."""
    body = json.dumps([_new_event(f"player-{i}") for i in range(40)]).encode()
    assert len(body) > 2 * LIMIT
    return body


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_read(
    sqlite_store: EventStore,
) -> None:
    token = issue_token(sqlite_store, "writer", ["append"])
    body = _oversize_batch()
    pulled: list[bytes] = []

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 512):
            pulled.append(body[start : start + 512])
            yield pulled[-1]

    with serving(sqlite_store, max_body_bytes=LIMIT) as client:
        headers = {
            **_bearer(token),
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        }
        response = client.post("/v1/events", content=chunks(), headers=headers)
    assert "body-too-large" in _assert_problem(response, 413)["type"]
    assert pulled == [], "the body was read before the declared length was refused"
    assert _log(sqlite_store) == []


def test_a_chunked_body_over_the_limit_is_413_and_stores_nothing(
    sqlite_store: EventStore,
) -> None:
    token = issue_token(sqlite_store, "writer", ["append"])
    body = _oversize_batch()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    with serving(sqlite_store, max_body_bytes=LIMIT) as client:
        headers = {**_bearer(token), "Content-Type": "application/json"}
        response = client.post("/v1/events", content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "body-too-large" in _assert_problem(response, 413)["type"]
    assert _log(sqlite_store) == []


async def _post_chunked(app: ASGIApp, token: str, body: bytes, chunk: int) -> tuple[int, int]:
    """POST /v1/events as an ASGI server streams a chunked body: one message per chunk,
    each handed over only when the app asks for it. (status, bytes handed over)."""
    handed = 0
    status = 0

    async def receive() -> Message:
        nonlocal handed
        part = body[handed : handed + chunk]
        handed += len(part)
        return {"type": "http.request", "body": part, "more_body": handed < len(body)}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    headers = [
        (b"host", b"testserver"),
        (b"content-type", b"application/json"),
        (b"transfer-encoding", b"chunked"),
        (b"authorization", f"Bearer {token}".encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/events",
        "raw_path": b"/v1/events",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return status, handed


def test_a_chunked_body_is_not_read_past_the_limit(sqlite_store: EventStore) -> None:
    """Starlette's TestClient hands a body over in one piece, so this drives the app as a
    server does, chunk by chunk, in the running app's event loop."""
    token = issue_token(sqlite_store, "writer", ["append"])
    body = _oversize_batch()
    with serving(sqlite_store, max_body_bytes=LIMIT) as client:
        assert client.portal is not None
        status, handed = client.portal.call(_post_chunked, client.app, token, body, 256)
    assert status == 413
    assert handed <= LIMIT + 256, f"read {handed} bytes of a body over the {LIMIT}-byte limit"
    assert _log(sqlite_store) == []


def test_a_batch_over_the_limit_is_413_and_stores_nothing(sqlite_store: EventStore) -> None:
    token = issue_token(sqlite_store, "writer", ["append"])
    with serving(sqlite_store, max_batch=3) as client:
        batch = [_new_event("player-1", v) for v in range(1, 5)]
        refused = client.post("/v1/events", json=batch, headers=_bearer(token))
        assert "batch-too-large" in _assert_problem(refused, 413)["type"]
        assert _log(sqlite_store) == []
        accepted = client.post("/v1/events", json=batch[:3], headers=_bearer(token))
    assert accepted.status_code == 200, accepted.text
    assert len(_log(sqlite_store)) == 3


# -- static files -----------------------------------------------------------------------------

TRAVERSALS = [
    b"/static/../../pyproject.toml",
    b"/static/%2e%2e/%2e%2e/pyproject.toml",
    b"/static/%2E%2E%2F%2E%2E%2Fpyproject.toml",
    b"/static/..%2f..%2fpyproject.toml",
    b"/static/..%2f_app.py",
    b"/static/..%2F..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    b"/static/..%5c_app.py",
    b"/static/_app.py",
    b"/static/__init__.py",
    b"/static/../_app.py",
    b"/static/index.html/../../_app.py",
    b"/static/index.html%2f..%2f..%2f_app.py",
    b"/static//etc/passwd",
    b"/static/%2fetc%2fpasswd",
    b"/static/" + quote(str(Path(__file__).resolve().parents[2] / "pyproject.toml"), "").encode(),
    b"/static/" + str(files("eventstore.web") / "_app.py").encode(),
    b"/static/.",
    b"/static/%2e",
    b"/static/index.html%00.js",
    b"/static/index.html%20",
    b"/static/INDEX.HTML",
]


@pytest.mark.parametrize("raw_path", TRAVERSALS, ids=[p.decode() for p in TRAVERSALS])
def test_static_paths_outside_the_set_are_404(sqlite_store: EventStore, raw_path: bytes) -> None:
    """Sent as written (httpx would resolve dot segments before they left); the app is
    watched to see the path it was given."""
    app = create_app(sqlite_store)
    seen: list[str] = []

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
        await app(scope, receive, send)

    with TestClient(watched, raise_server_exceptions=False) as client:
        response = client.get(httpx.URL("http://testserver").copy_with(raw_path=raw_path))
    assert seen, "the request did not reach the app"
    # A control character may be refused as a malformed name (422) rather than not found.
    allowed = {404, 422} if b"%00" in raw_path else {404}
    assert response.status_code in allowed, response.text
    _assert_problem(response, response.status_code)
    assert not [m for m in LEAK_MARKERS if m in response.text], response.text[:300]


def test_the_static_set_is_served_as_shipped(sqlite_store: EventStore) -> None:
    shipped = [item.name for item in STATIC_DIR.iterdir() if item.is_file()]
    assert {"index.html", "app.js", "style.css"} <= set(shipped)
    with serving(sqlite_store) as client:
        for name in shipped:
            response = client.get(f"/static/{name}")
            assert response.status_code == 200, name
            assert response.content == (STATIC_DIR / name).read_bytes(), name
            assert response.headers["x-content-type-options"] == "nosniff"
        assert client.get("/").content == (STATIC_DIR / "index.html").read_bytes()


# -- CORS -------------------------------------------------------------------------------------

ALLOWED = "https://game.example"
OTHER = "https://evil.example"


def _preflight(client: TestClient, origin: str) -> httpx.Response:
    response: httpx.Response = client.options(
        "/v1/events",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    return response


def _cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def test_no_cors_headers_unless_configured(sqlite_store: EventStore) -> None:
    with serving(sqlite_store) as client:
        preflight = _preflight(client, ALLOWED)
        read = client.get("/v1/log", headers={"Origin": ALLOWED})
    assert preflight.status_code in (404, 405), preflight.text
    assert _cors_headers(preflight) == {}
    assert read.status_code == 200
    assert _cors_headers(read) == {}


def test_cors_allows_only_the_configured_origin(sqlite_store: EventStore) -> None:
    with serving(sqlite_store, cors_origins=[ALLOWED]) as client:
        allowed = _preflight(client, ALLOWED)
        refused = _preflight(client, OTHER)
        read_allowed = client.get("/v1/log", headers={"Origin": ALLOWED})
        read_other = client.get("/v1/log", headers={"Origin": OTHER})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert refused.status_code >= 400
    assert "access-control-allow-origin" not in refused.headers
    assert read_allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-origin" not in read_other.headers
    assert "*" not in " ".join(_cors_headers(allowed).values())


def test_a_refused_preflight_is_a_problem_document(sqlite_store: EventStore) -> None:
    """docs/http-api.md: every error is application/problem+json."""
    with serving(sqlite_store, cors_origins=[ALLOWED]) as client:
        refused = _preflight(client, OTHER)
    assert refused.headers["content-type"] == PROBLEM, (
        f"a preflight from another origin is answered {refused.status_code} "
        f"{refused.headers['content-type']} {refused.text!r} (Starlette's CORSMiddleware), "
        "not a problem document"
    )


# -- no stack trace ---------------------------------------------------------------------------

SOURCE = str(Path(__file__).resolve().parents[2])


def _assert_no_trace(response: httpx.Response) -> None:
    text = response.text
    for leak in ("Traceback", 'File "', SOURCE, "site-packages", __name__):
        assert leak not in text, f"{leak!r} in the answer: {text}"


def test_a_server_error_is_a_bare_500_whose_reference_is_logged(
    sqlite_store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the operator's code that is not an error of ours (here a payload model whose
    validator raises RuntimeError) becomes a 500 naming a log entry, not the exception."""
    schemas = PayloadSchemas()

    @schemas.register("PlayerJoined")
    class Joined(pydantic.BaseModel):
        name: str

        @pydantic.field_validator("name")
        @classmethod
        def _broken(cls, value: str) -> str:
            raise RuntimeError(f"validator bug, see {__file__}")

    token = issue_token(sqlite_store, "writer", ["append"])
    with (
        caplog.at_level(logging.ERROR, logger="eventstore.web"),
        serving(sqlite_store, schemas=schemas) as client,
    ):
        response = client.post("/v1/events", json=_new_event(), headers=_bearer(token))
    problem = _assert_problem(response, 500)
    _assert_no_trace(response)
    assert "RuntimeError" not in response.text and "validator bug" not in response.text
    reference = re.search(r"log reference ([0-9a-f]{12})", problem["detail"])
    assert reference, problem
    logged = [r for r in caplog.records if reference.group(1) in r.getMessage()]
    assert logged and logged[0].exc_info, "the reference names no logged exception"
    assert _log(sqlite_store) == []


def test_a_failing_reducer_is_a_problem_without_a_trace(sqlite_store: EventStore) -> None:
    """A reducer that raises (not an error of ours) while replaying."""
    broken = Reducer("Player", initial={})

    @broken.on("PlayerMoved")
    def _moved(state: dict[str, Any], moved: Event) -> dict[str, Any]:
        return {**state, "speed": moved.payload["x"] / 0}

    sqlite_store.append_events([event("player-1", 1)])
    with serving(sqlite_store, reducers=[broken]) as client:
        state = client.get("/v1/aggregates/player-1/state")
        steps = client.get("/v1/aggregates/player-1/state", params={"history": "true"})
        world = client.get("/v1/world")
    for response in (state, steps, world):
        assert response.status_code >= 400, response.text
        assert response.headers["content-type"] == PROBLEM
        _assert_no_trace(response)


# -- binding ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("192.168.1.20", False),
        ("game.example", False),
        ("localhost.evil.example", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_check_bind_refuses_to_serve_beyond_loopback_without_auth(
    sqlite_store: EventStore,
) -> None:
    with pytest.raises(ConfigurationError, match="anonymous reads"):
        check_bind("0.0.0.0", anonymous_reads=True, tokens=sqlite_store)
    with pytest.raises(ConfigurationError, match="no token"):
        check_bind("0.0.0.0", anonymous_reads=False, tokens=sqlite_store)
    issue_token(sqlite_store, "gone", ["read"])
    sqlite_store.revoke_token("gone")
    with pytest.raises(ConfigurationError, match="no token"):
        check_bind("10.0.0.1", anonymous_reads=False, tokens=sqlite_store)
    issue_token(sqlite_store, "reader", ["read"])
    check_bind("0.0.0.0", anonymous_reads=False, tokens=sqlite_store)
    with pytest.raises(ConfigurationError, match="anonymous reads"):
        check_bind("0.0.0.0", anonymous_reads=True, tokens=sqlite_store)
    for loopback in ("127.0.0.1", "::1", "localhost"):
        check_bind(loopback, anonymous_reads=True, tokens=sqlite_store)


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).parent / "eventstore"
    database = f"sqlite:///{tmp_path / 'served.db'}"
    return subprocess.run(
        [str(command), "--database-url", database, "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [("--host", "0.0.0.0"), ("--host", "0.0.0.0", "--no-anonymous-reads")],
    ids=["anonymous-reads", "no-token"],
)
def test_serve_beyond_loopback_without_auth_exits_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = _serve(tmp_path, *args)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    assert "serving" not in done.stdout
