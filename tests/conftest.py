"""Fixtures shared by every test: real services, and a fresh store per test on each backend.

Service addresses come from the environment first (`EVENTSTORE_TEST_DATABASE_URL`,
`EVENTSTORE_TEST_KAFKA_BOOTSTRAP`, exported by `scripts/services.sh env`), then from
testcontainers when a Docker engine answers. Otherwise a test that needs the service fails
when `CI` is set and is skipped locally, both with a message naming the command to run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
from psycopg import sql

from eventstore import EventStore, open_store
from eventstore.versioning import Upcasters

START_HINT = (
    "run `make test` (or `scripts/services.sh start` and export what "
    "`scripts/services.sh env` prints)"
)


def _unavailable(what: str) -> NoReturn:
    message = f"{what} is not available: {START_HINT}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get("EVENTSTORE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if not _docker_answers():
        _unavailable("PostgreSQL (EVENTSTORE_TEST_DATABASE_URL unset, no Docker engine)")
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    servers = os.environ.get("EVENTSTORE_TEST_KAFKA_BOOTSTRAP")
    if servers:
        yield servers
        return
    if not _docker_answers():
        _unavailable("Kafka (EVENTSTORE_TEST_KAFKA_BOOTSTRAP unset, no Docker engine)")
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as container:
        yield container.get_bootstrap_server()


@pytest.fixture(scope="session")
def restore_target_url() -> Iterator[str]:
    """A second, separate PostgreSQL cluster that the restore tests restore dumps into."""
    url = os.environ.get("EVENTSTORE_TEST_RESTORE_DATABASE_URL")
    if url:
        yield url
        return
    if not _docker_answers():
        _unavailable("a second PostgreSQL (EVENTSTORE_TEST_RESTORE_DATABASE_URL unset)")
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
def pg_bindir() -> str:
    """Where pg_dump and pg_restore are (of the server's major version)."""
    path = os.environ.get("EVENTSTORE_TEST_PG_BINDIR")
    if path and (Path(path) / "pg_dump").exists():
        return path
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_dump"),
        key=lambda dump: [int(p) for p in dump.parent.parent.name.split(".") if p.isdigit()],
    )
    if not found:
        _unavailable("pg_dump (EVENTSTORE_TEST_PG_BINDIR unset)")
    return str(found[-1].parent)


@pytest.fixture(scope="session")
def services_control() -> str:
    """scripts/services.sh, which stops and starts the shared broker and database (the fault
    tests use it; `scripts/services.sh env` exports it)."""
    script = os.environ.get("EVENTSTORE_TEST_KAFKA_CONTROL")
    if not script:
        _unavailable("control of the services (EVENTSTORE_TEST_KAFKA_CONTROL unset)")
    return script


def unique_name(prefix: str) -> str:
    """A name no other test uses (schemas, topics, consumer groups)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A schema of its own for this test, dropped afterwards."""
    schema = unique_name("t")
    yield schema
    drop_schema(postgres_url, schema)


@pytest.fixture
def app_role(postgres_url: str) -> Iterator[str]:
    """A login role of its own for this test (roles belong to the cluster), dropped after."""
    role = unique_name("app")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    yield role
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


StoreFactory = Callable[..., EventStore]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_factory(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[StoreFactory]:
    """Opens stores on this test's backend, all on the same data (`fresh=True`: on new, empty
    data), migrated unless `migrate=False`; closes them after the test."""
    opened: list[EventStore] = []
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
        schema = request.getfixturevalue("pg_schema")

        def make(upcasters: Upcasters | None, fresh: bool, **options: Any) -> EventStore:
            name = f"{schema}_fresh" if fresh else schema
            if fresh:
                request.addfinalizer(lambda: drop_schema(url, name))
            return open_store(url, schema=name, upcasters=upcasters, **options)
    else:

        def make(upcasters: Upcasters | None, fresh: bool, **options: Any) -> EventStore:
            path = tmp_path / ("fresh.db" if fresh else "events.db")
            return open_store(f"sqlite:///{path}", upcasters=upcasters, **options)

    def make_migrated(
        upcasters: Upcasters | None = None,
        *,
        migrate: bool = True,
        fresh: bool = False,
        **options: Any,
    ) -> EventStore:
        store = make(upcasters, fresh, **options)
        opened.append(store)
        if migrate:
            store.migrate()
        return store

    yield make_migrated
    for store in opened:
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> EventStore:
    return store_factory()
