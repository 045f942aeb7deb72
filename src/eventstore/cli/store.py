"""Commands on the store itself: migrate, append, events, tail."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from eventstore.cli._app import Context, app, console, errors
from eventstore.consumers import StoreTail
from eventstore.errors import ConfigurationError, EventValidationError
from eventstore.events import Event


@app.command()
def migrate(
    ctx: typer.Context,
    rebase_positions: Annotated[
        bool,
        typer.Option(
            "--rebase-positions",
            help="PostgreSQL restored from a logical dump: make new positions exceed the "
            "stored ones again (stop every writer first)",
        ),
    ] = False,
    app_role: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL: grant this existing role what the application needs (append "
            "through the append function, read, drain the outbox), and nothing more",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create or update the store's tables (safe to run any number of times)."""
    from eventstore.store.postgres import PostgresEventStore

    context: Context = ctx.obj
    with context.open() as store:
        # Refuse a PostgreSQL-only option before changing anything.
        if not isinstance(store, PostgresEventStore):
            if rebase_positions:
                raise ConfigurationError("--rebase-positions applies to PostgreSQL stores only")
            if app_role is not None:
                raise ConfigurationError("--app-role applies to PostgreSQL stores only")
        applied = store.migrate()
        if isinstance(store, PostgresEventStore):
            if rebase_positions:
                console.print(f"positions rebased: base is now {store.rebase_positions()}")
            if app_role is not None:
                store.grant_app_role(app_role)
                console.print(
                    f"granted {app_role}: append, read and drain the outbox",
                    markup=False,
                    highlight=False,
                )
    if applied:
        console.print(f"migrated {context.describe()}: applied {', '.join(applied)}")
    else:
        console.print(f"{context.describe()} is up to date")


def _read_events(source: TextIO, name: str) -> list[Event]:
    """Parse and validate every line before anything is stored; errors name the line."""
    events: list[Event] = []
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            data: Any = json.loads(line)
        except json.JSONDecodeError as error:
            raise EventValidationError(
                f"{name}:{number}", f"not valid JSON ({error.msg})"
            ) from None
        if isinstance(data, dict):
            data.setdefault("id", str(uuid.uuid4()))
            data.setdefault("timestamp", datetime.now().astimezone().isoformat())
        try:
            events.append(Event.from_dict(data))
        except EventValidationError as error:
            raise EventValidationError(f"{name}:{number}: {error.field}", error.rule) from None
    return events


@app.command()
def append(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="JSON lines file of events, or - for stdin")] = "-",
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="events per atomic append")
    ] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="print positions as JSON")] = False,
) -> None:
    """Append events from JSON lines (one event object per line; `id` and `timestamp` are
    filled when missing).

    Every line is validated before anything is stored. Each batch is atomic; resending a file
    is safe, since events already stored unchanged are skipped, so after a conflict fix the
    input and run the same command again.
    """
    context: Context = ctx.obj
    if file == "-":
        events = _read_events(sys.stdin, "stdin")
    else:
        path = Path(file)
        if not path.is_file():
            raise ConfigurationError(f"no such file: {file}")
        with path.open(encoding="utf-8") as handle:
            events = _read_events(handle, path.name)
    positions: list[int] = []
    with context.open() as store:
        for start in range(0, len(events), batch_size):
            positions.extend(store.append_events(events[start : start + batch_size]))
    if as_json:
        console.print_json(json.dumps({"appended": len(positions), "positions": positions}))
    else:
        span = f" (positions {positions[0]}..{positions[-1]})" if positions else ""
        console.print(f"appended {len(positions)} events to {context.describe()}{span}")


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(f"{option} {value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.astimezone()


def _print_events(events: Iterator[Event] | list[Event], as_json: bool) -> int:
    """One line per event (`--json`: one JSON object per line), like `git log --oneline`."""
    count = 0
    width = console.width if sys.stdout.isatty() else None  # cut long lines only on a terminal
    for event in events:
        if as_json:
            line = json.dumps(event.to_dict(), ensure_ascii=False)
        else:
            when = event.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            head = (
                f"{event.position:>8}  {when}  {event.aggregate_type}/{event.aggregate_id} "
                f"v{event.version}  {event.event_type}  "
            )
            payload = json.dumps(event.payload, ensure_ascii=False)
            room = None if width is None else max(20, width - len(head))
            if room is not None and len(payload) > room:
                payload = payload[: room - 3] + "..."
            line = head + payload
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        count += 1
    return count


def _take(events: Iterator[Event] | list[Event], limit: int) -> Iterator[Event]:
    for count, event in enumerate(events):
        if count >= limit:
            return
        yield event


@app.command()
def events(
    ctx: typer.Context,
    aggregate: Annotated[str | None, typer.Option(help="one aggregate's history")] = None,
    from_version: Annotated[int, typer.Option(min=1, help="with --aggregate: first version")] = 1,
    event_type: Annotated[str | None, typer.Option("--type", help="events of one type")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time, inclusive")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time, exclusive (with --type)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="most events shown")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, one event each")] = False,
) -> None:
    """Query events: by aggregate, by type within a time range, or all from a time."""
    context: Context = ctx.obj
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    with context.open() as store:
        if aggregate is not None:
            found: Iterator[Event] | list[Event] = store.get_events_by_aggregate(
                aggregate, from_version
            )
        elif event_type is not None:
            found = store.get_events_by_type(event_type, start, end)
        else:
            found = store.get_all_events(start, limit)
        shown = _print_events(_take(found, limit), as_json)
    if not as_json:
        errors.print(f"{shown} events")


@app.command()
def tail(
    ctx: typer.Context,
    after: Annotated[int, typer.Option(min=0, help="start after this global position")] = 0,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep waiting for new events")
    ] = False,
    poll: Annotated[
        float, typer.Option(min=0.05, help="seconds between polls with --follow")
    ] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, one event each")] = False,
) -> None:
    """Print the global log in position order, from a position on (like `tail -f`)."""
    context: Context = ctx.obj
    with context.open() as store:
        log_tail = StoreTail(store, after=after, batch_size=1000, poll_interval=poll)
        try:
            _print_events(
                log_tail.follow(threading.Event()) if follow else log_tail.drain(), as_json
            )
        except KeyboardInterrupt:
            return
