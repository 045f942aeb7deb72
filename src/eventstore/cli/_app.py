"""What every command group shares: the Typer app, the global options, the consoles and the
one place where errors become an `error:` line and an exit code."""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from eventstore.config import Settings
from eventstore.errors import ConfigurationError, EventStoreError
from eventstore.store import DEFAULT_SQLITE_PATH, EventStore, open_store

app = typer.Typer(
    name="eventstore",
    help="The game platform's event store: append, query and tail events; run the demo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
"""Results, on stdout."""
errors = Console(stderr=True)
"""Errors and side notes, on stderr (so that stdout stays a clean result)."""


@dataclass
class Context:
    """The global options, resolved (flag first, then `EVENTSTORE_*`), for every command."""

    database_url: str | None
    schema: str | None
    settings: Settings

    def open(self) -> EventStore:
        return open_store(self.database_url, schema=self.schema)

    def kafka(self, servers: str | None, prefix: str | None) -> tuple[str, str] | None:
        """Kafka's servers and topic prefix, from the flags or the settings (None: no Kafka)."""
        found = servers or self.settings.kafka_bootstrap_servers
        return (found, prefix or self.settings.topic_prefix) if found else None

    def describe(self) -> str:
        if self.database_url is None:
            return f"embedded SQLite file {DEFAULT_SQLITE_PATH}"
        # host:port/path only: never a user, a password or a query string (?password=...).
        parts = urlsplit(self.database_url)
        host = parts.netloc.rpartition("@")[2]
        return f"{host}{parts.path}" if host else f"{parts.scheme}:{parts.path}"


@app.callback()
def _options(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="postgresql://user@host:port/db or sqlite:///file.db "
            "[env EVENTSTORE_DATABASE_URL; unset: embedded SQLite file]",
            show_default=False,
        ),
    ] = None,
    schema: Annotated[
        str | None,
        typer.Option(help="PostgreSQL schema of the store [env EVENTSTORE_DATABASE_SCHEMA]"),
    ] = None,
) -> None:
    settings = Settings()
    ctx.obj = Context(
        database_url or settings.database_url, schema or settings.database_schema, settings
    )


def load_code(spec: str, what: str, example: str) -> Any:
    """The object a `module:attribute` spec names (projections, reducers: code the user
    points a command at)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"{spec!r} does not name {what}: use module:attribute, e.g. {example}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"cannot import {module_name!r} ({error}); is it on PYTHONPATH?"
        ) from None
    value = getattr(module, attribute, None)
    if value is None:
        raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}")
    return value


def configure_logging(level: str) -> None:
    """Structured-ish log lines on stderr for long-running commands; kafka-python's chatter
    only from WARNING up."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
    )
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))


def progress(*extra: ProgressColumn) -> Progress:
    """The progress bar of long operations: description, bar, done/total, `extra` columns,
    elapsed time."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        console=console,
    )


def main() -> None:
    """Console entry point: run the CLI, turning our errors into one clear line (exit 2 for a
    configuration the user must fix, 1 for everything else)."""
    try:
        app()
    except (EventStoreError, OSError) as error:
        errors.print(f"[red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        code = 2 if isinstance(error, ConfigurationError) else 1
        raise SystemExit(code) from None
