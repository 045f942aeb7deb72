"""The CLI as a package: one module per command group on one app, `python -m eventstore.cli`,
and PostgreSQL-only options refused on the embedded store."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eventstore.cli import app
from tests.unit.test_cli import run

COMMANDS = [
    "migrate",
    "append",
    "events",
    "tail",
    "status",
    "demo",
    "relay",
    "project",
    "replay",
    "world",
    "replay-worker",
    "serve",
    "topics",
    "projections",
    "snapshots",
    "tokens",
]


def test_every_command_group_registers_on_the_one_app_in_order() -> None:
    listed = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout
    commands = listed[listed.index("Commands") :]
    assert re.findall(r"^│ ([a-z-]+) ", commands, re.MULTILINE) == COMMANDS


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    result = run(tmp_path, "--help")
    assert result.returncode == 0 and "migrate" in result.stdout


def test_importing_the_cli_does_not_load_kafka_or_the_web_stack() -> None:
    """kafka-python loads only when `relay` or `topics` runs, FastAPI and uvicorn only when
    `serve` does."""
    code = (
        "import sys, eventstore.cli; "
        "found = [m for m in ('kafka', 'fastapi', 'uvicorn') if m in sys.modules]; "
        "sys.exit(f'loaded: {found}' if found else 0)"
    )
    found = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True)
    assert found.returncode == 0, found.stderr


@pytest.mark.parametrize("option", [["--app-role", "app"], ["--rebase-positions"]])
def test_postgres_only_migrate_options_are_refused_before_migrating(
    tmp_path: Path, option: list[str]
) -> None:
    result = run(tmp_path, "migrate", *option)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {option[0]} applies to PostgreSQL stores only"
    assert "run `eventstore migrate`" in run(tmp_path, "events").stderr
