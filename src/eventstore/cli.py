"""`eventstore`: the command line of the event store.

Options come from flags first, then from `EVENTSTORE_*` environment variables (read through
`Settings`, here at the entry point only). Every failure the user can fix prints one line
starting with `error:` and exits non-zero; no traceback.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eventstore.config import Settings
from eventstore.consumers import StoreTail
from eventstore.errors import ConfigurationError, EventStoreError, EventValidationError
from eventstore.events import Event
from eventstore.producer import EventProducer
from eventstore.producer._kafka import KafkaPublisher
from eventstore.store import DEFAULT_SQLITE_PATH, EventStore, open_store

app = typer.Typer(
    name="eventstore",
    help="The game platform's event store: append, query and tail events; run the demo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)


@dataclass
class Context:
    database_url: str | None
    schema: str | None
    settings: Settings

    def open(self) -> EventStore:
        return open_store(self.database_url, schema=self.schema)

    def describe(self) -> str:
        if self.database_url is None:
            return f"embedded SQLite file {DEFAULT_SQLITE_PATH}"
        return self.database_url.split("@")[-1]


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
) -> None:
    """Create or update the store's tables (safe to run any number of times)."""
    from eventstore.store.postgres import PostgresEventStore

    context: Context = ctx.obj
    with context.open() as store:
        applied = store.migrate()
        if rebase_positions:
            if not isinstance(store, PostgresEventStore):
                raise ConfigurationError("--rebase-positions applies to PostgreSQL stores only")
            console.print(f"positions rebased: base is now {store.rebase_positions()}")
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


def _take(events: Iterator[Event] | list[Event], limit: int) -> Iterator[Event]:
    for count, event in enumerate(events):
        if count >= limit:
            return
        yield event


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


@app.command()
def demo(
    ctx: typer.Context,
    players: Annotated[int, typer.Option(min=1, max=100_000, help="players in the world")] = 300,
    items: Annotated[int, typer.Option(min=0, max=100_000, help="items in the world")] = 120,
    ticks: Annotated[int, typer.Option(min=1, max=100_000, help="ticks of play")] = 60,
    seed: Annotated[int, typer.Option(help="random seed of the simulation")] = 7,
) -> None:
    """Run a small game world on the store (the embedded SQLite file unless configured)."""
    from eventstore.demo.world import World, player_state

    context: Context = ctx.obj
    world = World(f"world-{uuid.uuid4().hex[:6]}", players=players, items=items, seed=seed)
    by_type: Counter[str] = Counter()
    started = time.perf_counter()
    with context.open() as store, EventProducer(store) as producer:
        applied = store.migrate()
        console.print(
            f"[bold]{world.world_id}[/]: {players} players, {items} items, {ticks} ticks "
            f"on {context.describe()}" + (" (schema created)" if applied else "")
        )
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[events]} events"),
            TimeElapsedColumn(),
            console=console,
        )
        with progress:
            task = progress.add_task("playing", total=ticks + 1, events=0)
            appended = 0
            for tick in range(ticks + 1):
                batch = world.genesis() if tick == 0 else world.tick()
                appended += len(producer.publish_many(batch))
                by_type.update(e.event_type for e in batch)
                progress.update(task, advance=1, events=appended)
        elapsed = time.perf_counter() - started

        summary = Table("event type", "stored", title="What the world stored", box=None)
        for event_type, count in sorted(by_type.items()):
            summary.add_row(event_type, str(count))
        summary.add_row("[bold]total", f"[bold]{appended}")
        console.print(summary)
        console.print(f"{appended} events in {elapsed:.2f} s ({appended / elapsed:,.0f} events/s)")

        state = Table(
            "player",
            "version",
            "zone",
            "moves",
            "inventory",
            title="Current state of a few players, rebuilt from their events",
            box=None,
        )
        for player in world.players[:5]:
            rebuilt = player_state(store.get_events_by_aggregate(player.id))
            expected = world.expected_player_state(player.id)
            if {k: rebuilt[k] for k in expected} != expected:
                raise EventStoreError(f"rebuilt state of {player.id} differs from the simulation")
            inventory = ", ".join(i.rsplit("-", 1)[-1] for i in rebuilt["inventory"]) or "-"
            state.add_row(
                f"{rebuilt['name']} ({player.id})",
                str(rebuilt["version"]),
                rebuilt["zone"],
                str(rebuilt["moves"]),
                f"items {inventory}",
            )
        console.print(state)
    console.print(
        f"Explore it: [cyan]eventstore events --aggregate {world.players[0].id}[/], "
        f"[cyan]eventstore events --type ItemPickedUp --limit 10[/], [cyan]eventstore tail[/]"
    )


KafkaOption = Annotated[
    str | None,
    typer.Option(
        help="host:port[,host:port] [env EVENTSTORE_KAFKA_BOOTSTRAP_SERVERS]", show_default=False
    ),
]
PrefixOption = Annotated[
    str | None,
    typer.Option(help="prefix of topic names [env EVENTSTORE_TOPIC_PREFIX; default game]"),
]
PartitionsOption = Annotated[
    int | None,
    typer.Option(
        min=1, help="partitions of created topics [env EVENTSTORE_TOPIC_PARTITIONS; default 3]"
    ),
]
ReplicationOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="replication of created topics [env EVENTSTORE_TOPIC_REPLICATION_FACTOR; default 1]",
    ),
]


def _publisher(
    context: Context,
    servers: str | None,
    prefix: str | None,
    partitions: int | None,
    replication_factor: int | None,
) -> KafkaPublisher:
    settings = context.settings
    servers = servers or settings.kafka_bootstrap_servers
    if not servers:
        raise ConfigurationError(
            "no Kafka configured: pass --kafka-bootstrap-servers or set "
            "EVENTSTORE_KAFKA_BOOTSTRAP_SERVERS (on the embedded default, consumers read the "
            "store's global log and need no relay)"
        )
    return KafkaPublisher(
        servers,
        topic_prefix=prefix or settings.topic_prefix,
        partitions=partitions or settings.topic_partitions,
        replication_factor=replication_factor or settings.topic_replication_factor,
    )


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
    )
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))


@app.command()
def relay(
    ctx: typer.Context,
    kafka_bootstrap_servers: KafkaOption = None,
    topic_prefix: PrefixOption = None,
    shard: Annotated[int, typer.Option(min=0, help="the outbox shard this relay drains")] = 0,
    shards: Annotated[
        int, typer.Option(min=1, max=256, help="how many shards the outbox is split in")
    ] = 1,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="events per Kafka batch")
    ] = 1000,
    poll_interval: Annotated[
        float, typer.Option(min=0.01, help="seconds between polls when idle")
    ] = 0.5,
    partitions: PartitionsOption = None,
    replication_factor: ReplicationOption = None,
    aggregate_type: Annotated[
        list[str] | None,
        typer.Option(help="create this aggregate type's topic at start (repeatable)"),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus metrics on this port")
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="address the metrics server binds")
    ] = "127.0.0.1",
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Publish the outbox to Kafka until stopped (SIGTERM or Ctrl-C finish the batch in hand).

    One relay per shard is active at a time; start more as hot standbys (they take over within
    seconds when the active one dies)."""
    from eventstore.producer import OutboxRelay, RelayMetrics, RelaySettings

    context: Context = ctx.obj
    _configure_logging(log_level)
    if shard >= shards:
        raise ConfigurationError(f"--shard must be below --shards ({shards}), not {shard}")
    publisher = _publisher(
        context, kafka_bootstrap_servers, topic_prefix, partitions, replication_factor
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    metrics = RelayMetrics()
    if metrics_port is not None:
        metrics.serve(metrics_port, metrics_host)
    with context.open() as store:
        worker = OutboxRelay(
            store,
            publisher,
            RelaySettings(
                shard=shard,
                shards=shards,
                batch_size=batch_size,
                poll_interval=poll_interval,
                aggregate_types=tuple(aggregate_type or ()),
            ),
            metrics,
        )
        try:
            worker.run(stop)
        finally:
            publisher.close()
    errors.print(f"relay stopped after publishing {worker.published} events")


topics_app = typer.Typer(help="Kafka topics of the event store.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


@topics_app.command("create")
def topics_create(
    ctx: typer.Context,
    aggregate_types: Annotated[
        list[str], typer.Argument(help="aggregate types, e.g. Player World")
    ],
    kafka_bootstrap_servers: KafkaOption = None,
    topic_prefix: PrefixOption = None,
    partitions: PartitionsOption = None,
    replication_factor: ReplicationOption = None,
) -> None:
    """Create the event topics of these aggregate types (existing ones are left as they are)."""
    from eventstore.producer import events_topic

    context: Context = ctx.obj
    publisher = _publisher(
        context, kafka_bootstrap_servers, topic_prefix, partitions, replication_factor
    )
    try:
        created = publisher.ensure_topics(aggregate_types)
    finally:
        publisher.close()
    for aggregate_type in aggregate_types:
        name = events_topic(publisher.topic_prefix, aggregate_type)
        console.print(f"{name}: {'created' if name in created else 'exists'}")


def main() -> None:
    """Console entry point: run the CLI, turning our errors into one clear line."""
    try:
        app()
    except (EventStoreError, OSError) as error:
        errors.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        code = 2 if isinstance(error, ConfigurationError) else 1
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
