"""`eventstore status`: what an operator checks first. Can readers of the global log see up
to its head, and if not, which transaction holds them back? Is the outbox draining?"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.text import Text

from eventstore.cli._app import Context, app, console
from eventstore.store import EventStore, HorizonHolder, LogHorizon, OutboxStatus

EXIT_LAGGING = 3
"""Exit code when `--max-lag` is exceeded (1 and 2 stay the errors of every command)."""
_QUERY_SHOWN = 80
"""Characters of the holder's query in the human output (JSON has what the store gives)."""


@dataclass(frozen=True)
class StoreStatus:
    """One look at a store. Ages are measured against `checked_at`, this machine's clock
    (the horizon lag is measured by the database itself)."""

    backend: str
    location: str
    """Where the store is, without credentials: host:port/db, or the SQLite file."""
    schema: str | None
    horizon: LogHorizon
    outbox: OutboxStatus
    checked_at: datetime

    def transaction_age(self) -> float | None:
        """Seconds the transaction holding the horizon back has been open."""
        holder = self.horizon.holder
        if holder is None or holder.transaction_start is None:
            return None
        return self._age(holder.transaction_start)

    def outbox_age(self) -> float | None:
        """Seconds the oldest outbox entry has waited (None when the outbox is empty)."""
        oldest = self.outbox.oldest_enqueued_at
        return None if oldest is None else self._age(oldest)

    def _age(self, since: datetime) -> float:
        return max(0.0, (self.checked_at - since).total_seconds())

    def exceeded(self, max_lag: float | None) -> list[str]:
        """The measures above `max_lag` seconds, as paths into the `--json` object."""
        if max_lag is None:
            return []
        found = []
        if self.horizon.lag_seconds > max_lag:
            found.append("log.lag_seconds")
        outbox_age = self.outbox_age()
        if outbox_age is not None and outbox_age > max_lag:
            found.append("outbox.oldest_age_seconds")
        return found


def read_status(context: Context, store: EventStore) -> StoreStatus:
    """Look at `store` now (two cheap reads, no locks taken)."""
    horizon = store.log_horizon()
    outbox = store.outbox_status()
    backend, location, schema = _where(context, store)
    return StoreStatus(backend, location, schema, horizon, outbox, datetime.now(UTC))


def _where(context: Context, store: EventStore) -> tuple[str, str, str | None]:
    from eventstore.store.postgres import PostgresEventStore
    from eventstore.store.sqlite import SqliteEventStore

    if isinstance(store, PostgresEventStore):
        # host:port/db only: user and password sit before '@', libpq options in the query.
        parts = urlsplit(context.database_url or "")
        return "postgresql", parts.netloc.rpartition("@")[2] + parts.path, store.schema
    if isinstance(store, SqliteEventStore):
        path = store.path if store.path == ":memory:" else str(Path(store.path).resolve())
        return "sqlite", path, None
    return type(store).__name__, context.describe(), None


# -- JSON ---------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def to_json(status: StoreStatus, max_lag: float | None) -> dict[str, Any]:
    """The `--json` object: every key always present (null when unknown or not applicable)."""
    horizon, outbox, holder = status.horizon, status.outbox, status.horizon.holder
    exceeded = status.exceeded(max_lag)
    return {
        "store": {
            "backend": status.backend,
            "location": status.location,
            "schema": status.schema,
        },
        "checked_at": _iso(status.checked_at),
        "log": {
            "head": horizon.head,
            "horizon": horizon.horizon,
            "events_behind": horizon.events_behind,
            "lag_seconds": _rounded(horizon.lag_seconds),
            "needs_rebase": horizon.needs_rebase,
            "holder": None
            if holder is None
            else {
                "pid": holder.pid,
                "database": holder.database,
                "user": holder.user,
                "state": holder.state,
                "transaction_start": _iso(holder.transaction_start),
                "transaction_age_seconds": _rounded(status.transaction_age()),
                "query_start": _iso(holder.query_start),
                "query": holder.query,
            },
        },
        "outbox": {
            "depth": outbox.depth,
            "depth_estimated": outbox.estimated,
            "oldest_enqueued_at": _iso(outbox.oldest_enqueued_at),
            "oldest_age_seconds": _rounded(status.outbox_age()),
        },
        "max_lag_seconds": max_lag,
        "exceeded": exceeded,
        "healthy": not exceeded,
    }


# -- for people ---------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _when(value: datetime | None) -> str:
    return "?" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _one_line(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _holder_rows(holder: HorizonHolder, age: float | None) -> list[tuple[str, str]]:
    who = "@".join(part for part in (holder.user, holder.database) if part)
    since = f"since {_when(holder.transaction_start)}"
    query = _one_line(holder.query, _QUERY_SHOWN)
    return [
        ("held back by", f"pid {holder.pid}  {who}  {holder.state or '?'}"),
        ("  open for", f"{_duration(age)} ({since})" if age is not None else since),
        ("  last query", f"{query}  (started {_when(holder.query_start)})"),
    ]


def _outbox_row(status: StoreStatus) -> tuple[str, str]:
    outbox, age = status.outbox, status.outbox_age()
    depth = f"~{outbox.depth}" if outbox.estimated else str(outbox.depth)
    text = f"{depth} event{'' if outbox.depth == 1 else 's'}"
    if age is not None:
        text += f", oldest {_duration(age)} old (since {_when(outbox.oldest_enqueued_at)})"
    return ("outbox", text)


def _hint(status: StoreStatus) -> str | None:
    holder = status.horizon.holder
    if status.horizon.needs_rebase:
        return (
            "hint: stored positions lie above this cluster's transaction counter: the "
            "database was restored from a logical dump. Stop every writer and run "
            "`eventstore migrate --rebase-positions`; readers wait for the restored events "
            "until then, and appends are refused"
        )
    if holder is not None:
        return (
            f"hint: readers of the log lag (they never skip) while pid {holder.pid} keeps its "
            f"transaction open: end it with SELECT pg_terminate_backend({holder.pid}), or set "
            "idle_in_transaction_session_timeout so that idle ones end by themselves"
        )
    if status.horizon.events_behind:
        return (
            "hint: no session holds the horizon now: the holder just ended (look again), or a "
            "prepared transaction holds it (see pg_prepared_xacts)"
        )
    return None


def render(status: StoreStatus, max_lag: float | None) -> None:
    """The human view: an aligned list of what matters, a hint when something holds the log
    back, and the verdict of `--max-lag` when one was asked for."""
    horizon = status.horizon
    store = f"{status.backend}  {status.location}"
    rows = [
        ("store", store + (f"  schema {status.schema}" if status.schema else "")),
        ("log head", str(horizon.head)),
        ("read horizon", str(horizon.horizon)),
        ("events behind", str(horizon.events_behind)),
        ("horizon lag", _duration(horizon.lag_seconds)),
    ]
    if horizon.holder is not None:
        rows += _holder_rows(horizon.holder, status.transaction_age())
    rows.append(_outbox_row(status))
    width = max(len(label) for label, _ in rows)
    # Text, not markup: a query or a path may hold brackets.
    for label, value in rows:
        console.print(Text.assemble((label.ljust(width), "bold"), "  ", value), soft_wrap=True)
    hint = _hint(status)
    if hint is not None:
        console.print(Text(hint), soft_wrap=True)
    if max_lag is not None:
        console.print(Text(_verdict(status, max_lag)), soft_wrap=True)


def _verdict(status: StoreStatus, max_lag: float) -> str:
    limit = f"--max-lag {max_lag:g} s"
    exceeded = status.exceeded(max_lag)
    if not exceeded:
        return f"ok: within {limit}"
    found = []
    if "log.lag_seconds" in exceeded:
        found.append(f"horizon lag {_duration(status.horizon.lag_seconds)}")
    outbox_age = status.outbox_age()
    if "outbox.oldest_age_seconds" in exceeded and outbox_age is not None:
        found.append(f"oldest outbox entry {_duration(outbox_age)}")
    return f"lagging: {' and '.join(found)} over {limit}"


_HELP = (
    "Show the log's head and read horizon, the transaction holding the horizon back, and the "
    "outbox backlog.\n\n"
    "Readers of the global log stop at the horizon: while a transaction stays open they lag, "
    "they never skip an event.\n\n"
    "Exit codes:\n"
    "0 healthy (without --max-lag: the store could be read);\n"
    "1 the store cannot be read (unavailable, not migrated);\n"
    "2 a configuration error;\n"
    f"{EXIT_LAGGING} the horizon lag or the oldest outbox entry is over --max-lag."
)


@app.command(help=_HELP)
def status(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object (snake_case keys, UTC times)")
    ] = False,
    max_lag: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="SECONDS",
            help=f"exit {EXIT_LAGGING} when the horizon lag or the age of the oldest outbox "
            "entry exceeds this",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show how far readers of the global log lag, why, and the outbox backlog."""
    context: Context = ctx.obj
    with context.open() as store:
        found = read_status(context, store)
    if as_json:
        sys.stdout.write(json.dumps(to_json(found, max_lag)) + "\n")
    else:
        render(found, max_lag)
    if found.exceeded(max_lag):
        raise typer.Exit(EXIT_LAGGING)
