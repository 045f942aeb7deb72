"""`eventstore project` (run projections) and `eventstore projections ...` (list, status,
parked, retry, rebuild, show).

Projections are code: commands that apply events name them as `module:attribute` (a
Projection, or a list of them), by default the demo's (`eventstore.demo.projections:ALL`).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from eventstore.cli._app import Context, app, configure_logging, console, errors, load_code
from eventstore.cli.relay import KafkaOption, PartitionsOption, PrefixOption, ReplicationOption
from eventstore.consumers._status import parked_rows, projection_status
from eventstore.errors import ConfigurationError, ProjectionError

if TYPE_CHECKING:
    from eventstore.consumers import Projection
    from eventstore.consumers._rebuild import Progress as ProgressCallback

DEFAULT_SPEC = "eventstore.demo.projections:ALL"

SpecOption = Annotated[
    str,
    typer.Option(
        "--projections",
        help="where the projections' code is: module:attribute (a Projection or a list)",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON (for scripts)")]


def load_projections(specs: list[str]) -> list[Projection]:
    """The projections `module:attribute` specs name, checked (names unique)."""
    from eventstore.consumers import Projection, check_projections

    found: list[Projection] = []
    for spec in specs:
        value = load_code(spec, "projections", DEFAULT_SPEC)
        found.extend([value] if isinstance(value, Projection) else list(value))
    return check_projections(found)


def _one(specs: list[str], name: str) -> Projection:
    for projection in load_projections(specs):
        if projection.name == name:
            return projection
    raise ProjectionError(
        f"no projection named {name!r} in {', '.join(specs)}; pass --projections module:attr"
    )


def progress_bar(projection: str, what: str) -> Any:
    """A progress bar for a catch-up or rebuild: events applied, rate, share of the log, ETA."""

    @contextmanager
    def bar() -> Iterator[ProgressCallback]:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[events]:,} events, {task.fields[rate]:,.0f}/s"),
            TimeRemainingColumn(),
            console=console,
        ) as shown:
            task = shown.add_task(f"{projection}: {what}", total=None, events=0, rate=0.0)
            began = time.perf_counter()

            def report(events: int, done: int, total: int) -> None:
                elapsed = max(time.perf_counter() - began, 1e-6)
                shown.update(
                    task,
                    completed=done,
                    total=max(1, total),
                    events=events,
                    rate=events / elapsed,
                )

            yield report

    return bar()


def _source(
    context: Context,
    source: str | None,
    servers: str | None,
    prefix: str | None,
    instance_id: str | None,
    partitions: int | None,
    replication_factor: int | None,
) -> Any:
    from eventstore.consumers import StoreTailSource

    settings = context.settings
    servers = servers or settings.kafka_bootstrap_servers
    chosen = source or ("kafka" if servers else "store")
    if chosen == "store":
        return StoreTailSource()
    if chosen != "kafka":
        raise ConfigurationError(f"--source is store or kafka, not {chosen!r}")
    from eventstore.consumers import KafkaSource

    return KafkaSource(
        servers or "",
        topic_prefix=prefix or settings.topic_prefix,
        instance_id=instance_id,
        partitions=partitions or settings.topic_partitions,
        replication_factor=replication_factor or settings.topic_replication_factor,
    )


def _dead_letters(context: Context) -> Any:
    """Kafka's dead-letter topics when Kafka is configured (else the store's records only)."""
    settings = context.settings
    if not settings.kafka_bootstrap_servers:
        return None
    from eventstore.consumers import KafkaDeadLetters

    return KafkaDeadLetters(
        settings.kafka_bootstrap_servers,
        topic_prefix=settings.topic_prefix,
        partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
    )


@app.command()
def project(
    ctx: typer.Context,
    specs: Annotated[
        list[str] | None,
        typer.Argument(help=f"projections as module:attribute [default {DEFAULT_SPEC}]"),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(help="store (the global log) or kafka [default: kafka when configured]"),
    ] = None,
    kafka_bootstrap_servers: KafkaOption = None,
    topic_prefix: PrefixOption = None,
    instance_id: Annotated[
        str | None,
        typer.Option(help="static group membership: a stable id per process (e.g. its host)"),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="events per batch")] = 500,
    partitions: PartitionsOption = None,
    replication_factor: ReplicationOption = None,
    once: Annotated[
        bool, typer.Option(help="store source: apply what is stored now, then exit")
    ] = False,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus metrics on this port")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="address the metrics server binds")] = (
        "127.0.0.1"
    ),
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Run projections until stopped (SIGTERM or Ctrl-C finish and commit the batch in hand,
    leave the consumer group and exit 0).

    A new projection (or a new version of one) first catches up from the store's global log,
    with a progress bar, then follows the source."""
    from eventstore.consumers import ProjectionRunner, StoreTailSource
    from eventstore.consumers._metrics import ProjectionMetrics

    context: Context = ctx.obj
    configure_logging(log_level)
    projections = load_projections(specs or [DEFAULT_SPEC])
    feed = _source(
        context,
        source,
        kafka_bootstrap_servers,
        topic_prefix,
        instance_id,
        partitions,
        replication_factor,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    metrics = ProjectionMetrics()
    if metrics_port is not None:
        metrics.serve(metrics_port, metrics_host)
    names = ", ".join(p.name for p in projections)
    with context.open() as store:
        store.migrate()
        runner = ProjectionRunner(
            store,
            projections,
            source=feed,
            batch_size=batch_size,
            observer=metrics,
            progress=progress_bar,
        )
        errors.print(f"projecting {names} from {feed.name} on {context.describe()}")
        if once:
            if not isinstance(feed, StoreTailSource):
                raise ConfigurationError("--once reads the store: use it with --source store")
            feed.catch_up(runner)
        else:
            runner.run(stop)
    errors.print(f"projections stopped: {names}")


projections_app = typer.Typer(
    help="Projections (read models): status, parked aggregates, retry, rebuild.",
    no_args_is_help=True,
)
app.add_typer(projections_app, name="projections")


@projections_app.command("list")
def projections_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The projections this store holds read models of."""
    context: Context = ctx.obj
    with context.open() as store:
        records = store.projection_records()
    if as_json:
        console.print_json(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "generation": r.active_generation,
                        "version": r.active_version,
                        "rebuilding": r.building_generation,
                    }
                    for r in records
                ]
            )
        )
        return
    table = Table("projection", "generation", "version", "rebuilding", box=None)
    for r in records:
        table.add_row(
            r.name,
            str(r.active_generation),
            str(r.active_version),
            str(r.building_generation or "-"),
        )
    console.print(table if records else "no projections yet (start one: eventstore project)")


@projections_app.command("status")
def projections_status(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="one projection (default: all)")] = None,
    as_json: JsonOption = False,
    kafka_bootstrap_servers: KafkaOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Generation, lag (per partition on Kafka; against the log's head otherwise), parked
    aggregates, dead letters and the last error of each projection."""
    context: Context = ctx.obj
    kafka = context.kafka(kafka_bootstrap_servers, topic_prefix)
    with context.open() as store:
        found = projection_status(store, kafka, name)
    if as_json:
        console.print_json(json.dumps(found))
        return
    if not found:
        console.print("no projections yet (start one: eventstore project)")
        return
    table = Table(
        "projection",
        "gen",
        "lag (events)",
        "lag (s)",
        "documents",
        "parked",
        "skipped",
        "dead letters",
        "last error",
        box=None,
    )
    for entry in found:
        gen = str(entry["generation"]) + (
            f" (building {entry['rebuilding']})" if entry["rebuilding"] else ""
        )
        lag_s = "-" if entry["lag_seconds"] is None else f"{entry['lag_seconds']:.1f}"
        table.add_row(
            entry["name"],
            gen,
            f"{entry['lag_events']:,}",
            lag_s,
            f"{entry['documents']:,}",
            str(entry["parked"]),
            str(entry["skipped"]),
            str(entry["dead_lettered"]),
            escape(entry["last_error"] or "-")[:80],
        )
    console.print(table)
    for entry in found:
        if entry.get("partitions_error"):
            console.print(f"  {entry['name']}: {escape(entry['partitions_error'])}")
        for partition, lag in sorted((entry.get("partitions") or {}).items()):
            console.print(f"  {entry['name']} {partition}: {lag:,} behind")


@projections_app.command("parked")
def projections_parked(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the projection")],
    as_json: JsonOption = False,
) -> None:
    """Parked aggregates of a projection, with the event and the error that parked each."""
    context: Context = ctx.obj
    with context.open() as store:
        if store.projection_record(name) is None:
            raise ProjectionError(f"no projection named {name!r} in this store")
        parked = store.projection_failures(name, policy="park")
    rows = parked_rows(parked)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print(f"{name}: nothing parked")
        return
    table = Table("aggregate", "version", "waiting up to", "event", "error", box=None)
    for row in rows:
        table.add_row(
            row["aggregate_id"],
            str(row["version"]),
            str(row["waiting_up_to"]),
            row["event_type"],
            escape(f"{row['error_type']}: {row['message']}")[:100],
        )
    console.print(table)
    console.print(f"after fixing the handler: eventstore projections retry {name}")


@projections_app.command("retry")
def projections_retry(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the projection")],
    aggregate: Annotated[str | None, typer.Option(help="only this parked aggregate")] = None,
    spec: SpecOption = DEFAULT_SPEC,
) -> None:
    """Re-apply parked aggregates from the store (after fixing the handler)."""
    from eventstore.consumers import Applier, retry_parked

    context: Context = ctx.obj
    projection = _one([spec], name)
    with context.open() as store:
        store.migrate()
        applier = Applier(store, projection, dead_letters=_dead_letters(context))
        results = retry_parked(store, projection, applier, aggregate)
    still = 0
    for aggregate_id, result in results:
        if result.parked:
            still += 1
            failure = result.parked[0]
            console.print(
                f"{aggregate_id}: parked again at version {failure.version}: "
                f"{escape(failure.error_type)}: {escape(failure.message)}"
            )
        else:
            console.print(f"{aggregate_id}: {result.applied} events applied")
    if not results:
        console.print(f"{name}: nothing parked")
    if still:
        raise typer.Exit(1)


@projections_app.command("rebuild")
def projections_rebuild(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the projection")],
    aggregate: Annotated[
        str | None, typer.Option(help="re-apply only this aggregate, in place")
    ] = None,
    spec: SpecOption = DEFAULT_SPEC,
) -> None:
    """Build a new generation of the read model from the store while the current one keeps
    serving, then switch readers to it in one transaction and drop the old one."""
    from eventstore.consumers import Applier, rebuild, rebuild_aggregate

    context: Context = ctx.obj
    configure_logging("WARNING")
    projection = _one([spec], name)
    with context.open() as store:
        store.migrate()
        record = store.projection_record(name) or store.register_projection(
            name, projection.version
        )
        if projection.version < record.active_version:
            raise ProjectionError(
                f"projection {name!r}: the store serves version {record.active_version}, this "
                f"code is version {projection.version}; rebuilding with older code would stop "
                "every runner of the newer one: use the newer code"
            )
        applier = Applier(store, projection, dead_letters=_dead_letters(context))
        if aggregate is not None:
            result = rebuild_aggregate(store, projection, applier, aggregate)
            console.print(f"{name}: {aggregate} rebuilt ({result.applied} events)")
            return
        with progress_bar(name, "rebuilding") as report:
            generation = rebuild(store, projection, applier, progress=report)
        counts = store.projection_counts(name)
    console.print(
        f"{name}: generation {generation} is active ({counts.documents:,} documents, "
        f"{counts.parked} parked)"
    )


@projections_app.command("show")
def projections_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the projection")],
    key: Annotated[str | None, typer.Option(help="one document by key")] = None,
    find: Annotated[
        str | None, typer.Option(help="documents whose field equals a value: FIELD=JSON")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
) -> None:
    """Documents of a projection's read model, as JSON lines."""
    context: Context = ctx.obj
    with context.open() as store:
        if key is not None:
            doc = store.get_document(name, key)
            if doc is None:
                raise ProjectionError(f"{name} has no document {key!r}")
            rows = [(key, doc)]
        elif find is not None:
            field, sep, raw = find.partition("=")
            if not sep:
                raise ConfigurationError('--find takes FIELD=VALUE, e.g. zone="forest"')
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            rows = store.find_documents(name, field, value, limit)
        else:
            rows = store.list_documents(name, "", limit)
    for doc_key, doc in rows:
        console.print_json(json.dumps({"key": doc_key, "document": doc}), indent=None)
