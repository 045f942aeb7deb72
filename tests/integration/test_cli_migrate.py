"""`eventstore migrate --app-role` on the real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from eventstore.cli import app
from tests.conftest import unique_name
from tests.unit.test_cli import run

pytestmark = pytest.mark.postgres


def test_migrate_grants_the_app_role_its_rights(
    postgres_url: str, pg_schema: str, app_role: str
) -> None:
    result = CliRunner().invoke(
        app,
        ["--database-url", postgres_url, "--schema", pg_schema, "migrate", "--app-role", app_role],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"granted {app_role}: append, read and drain the outbox"
    assert "applied 0001_initial.sql" in result.stdout
    with psycopg.connect(postgres_url) as conn:
        granted = conn.execute(
            "SELECT has_schema_privilege(%(role)s, %(schema)s, 'USAGE'), "
            "has_table_privilege(%(role)s, format('%%I.events', %(schema)s), 'SELECT')",
            {"role": app_role, "schema": pg_schema},
        ).fetchone()
    assert granted == (True, True)


def test_an_unknown_app_role_is_one_error_line(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    missing = unique_name("nobody")
    args = ["--database-url", postgres_url, "--schema", pg_schema, "migrate", "--app-role"]
    result = run(tmp_path, *args, missing)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: role '{missing}' does not exist")
