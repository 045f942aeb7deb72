"""`eventstore replay` (an aggregate's state at any point, its history), `eventstore world`
(every aggregate as of one global position), `eventstore replay-worker` (answer control
requests from Kafka) and `eventstore snapshots` (the replay cache).

Reducers are code: commands name them as `module:attribute` (a Reducer or a list of them),
by default the demo's (`eventstore.demo.reducers:ALL`).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from eventstore.cli._app import Context, app, configure_logging, console, errors, load_code
from eventstore.cli.projections import DEFAULT_SPEC as DEFAULT_PROJECTIONS
from eventstore.cli.projections import load_projections
from eventstore.cli.relay import KafkaOption, PartitionsOption, PrefixOption, ReplicationOption
from eventstore.cli.store import _parse_time
from eventstore.errors import ConfigurationError

if TYPE_CHECKING:
    from eventstore.replay import Reducer, Replayer
    from eventstore.store import EventStore

DEFAULT_REDUCERS = "eventstore.demo.reducers:ALL"

ReducersOption = Annotated[
    str,
    typer.Option(
        "--reducers", help="where the reducers' code is: module:attribute (a Reducer or a list)"
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON (for scripts)")]


def load_reducers(spec: str) -> list[Reducer]:
    """The reducers a `module:attribute` spec names."""
    from eventstore.replay import Reducer, check_reducers

    value = load_code(spec, "reducers", DEFAULT_REDUCERS)
    reducers = [value] if isinstance(value, Reducer) else list(value)
    return list(check_reducers(reducers).values())


def _replayer(store: EventStore, spec: str, snapshots: bool = True) -> Replayer:
    from eventstore.replay import Replayer

    return Replayer(store, load_reducers(spec), snapshots=snapshots)


def _kafka(context: Context, servers: str | None, prefix: str | None) -> tuple[str, str]:
    settings = context.settings
    found = servers or settings.kafka_bootstrap_servers
    if not found:
        raise ConfigurationError(
            "the control topic needs Kafka: pass --kafka-bootstrap-servers or set "
            "EVENTSTORE_KAFKA_BOOTSTRAP_SERVERS (without Kafka, replay directly: drop "
            "--via-kafka)"
        )
    return found, prefix or settings.topic_prefix


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return
    where = f"version {result['version']}"
    if result.get("timestamp"):
        where += f", game time {result['timestamp']}, position {result['position']}"
    origin = (
        f"from the snapshot at v{result['snapshot_version']}"
        if result.get("snapshot_version")
        else "from the first event"
    )
    console.print(
        f"[bold]{escape(result['aggregate_type'])} {escape(result['aggregate_id'])}[/] at "
        f"{where} ({result['events_applied']} events applied {origin})"
    )
    if result.get("held_back"):
        console.print(
            f"[yellow]note[/]: {result['held_back']} later events are stamped before the time "
            "asked for (this aggregate's game clock went backwards); they are not included"
        )
    history = result.get("history")
    if history is not None:
        table = Table("version", "event", "game time", "what changed", box=None)
        for step in history:
            event = step["event"]
            changes = "\n".join(_change(c) for c in step["changes"]) or "(nothing)"
            table.add_row(
                str(step["version"]), event["event_type"], event["timestamp"], escape(changes)
            )
        console.print(table)
        if result.get("history_next"):
            console.print(f"more history from version {result['history_next']}")
    console.print_json(json.dumps(result["state"], ensure_ascii=False))


def _change(change: dict[str, Any]) -> str:
    path = change["path"] or "(state)"
    if change["op"] == "add":
        return f"+ {path} = {json.dumps(change['new'])}"
    if change["op"] == "remove":
        return f"- {path} (was {json.dumps(change['old'])})"
    return f"~ {path}: {json.dumps(change['old'])} -> {json.dumps(change['new'])}"


@app.command()
def replay(
    ctx: typer.Context,
    aggregate_id: Annotated[str, typer.Argument(help="the aggregate to rebuild")],
    at: Annotated[
        str | None, typer.Option(help="game time, ISO 8601 (state before the first later event)")
    ] = None,
    version: Annotated[int | None, typer.Option(min=0, help="state after this version")] = None,
    position: Annotated[
        int | None, typer.Option(min=0, help="state as of this global position")
    ] = None,
    history: Annotated[
        bool, typer.Option("--history", help="also show each event and what it changed")
    ] = False,
    history_from: Annotated[int, typer.Option(min=1, help="first version of --history")] = 1,
    history_limit: Annotated[
        int, typer.Option(min=1, max=1000, help="most steps of --history shown")
    ] = 100,
    as_json: JsonOption = False,
    via_kafka: Annotated[
        bool, typer.Option("--via-kafka", help="ask a replay worker through the control topic")
    ] = False,
    reducers: ReducersOption = DEFAULT_REDUCERS,
    no_snapshots: Annotated[
        bool, typer.Option("--no-snapshots", help="fold every event (ignore the snapshot cache)")
    ] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="--via-kafka: seconds to wait")] = 30.0,
    kafka_bootstrap_servers: KafkaOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """An aggregate's state at a version, a game time or a global position (default: now),
    rebuilt from its events; `--history` shows what each event changed."""
    context: Context = ctx.obj
    when = _parse_time(at, "--at")
    if sum(x is not None for x in (at, version, position)) > 1:
        raise ConfigurationError("give one of --at, --version and --position")
    if via_kafka:
        from eventstore.replay import ReplayClient

        servers, prefix = _kafka(context, kafka_bootstrap_servers, topic_prefix)
        request: dict[str, Any] = {"kind": "replay", "aggregate_id": aggregate_id}
        for name, value in (("at", when), ("version", version), ("position", position)):
            if value is not None:
                request[name] = value.isoformat() if name == "at" else value  # type: ignore[union-attr]
        if history:
            request.update(history=True, history_from=history_from, history_limit=history_limit)
        with ReplayClient(servers, topic_prefix=prefix, timeout=timeout) as client:
            result = client.request(request)
        _print_result(result, as_json)
        return
    with context.open() as store:
        store.migrate()
        document = _replayer(store, reducers, snapshots=not no_snapshots).replay_document(
            aggregate_id,
            at=when,
            version=version,
            position=position,
            history=history,
            history_from=history_from,
            history_limit=history_limit,
        )
    _print_result(document, as_json)


@app.command()
def world(
    ctx: typer.Context,
    position: Annotated[
        int | None, typer.Option(min=0, help="the global position of the cut [default: now]")
    ] = None,
    aggregate_type: Annotated[
        str | None, typer.Option("--type", help="one aggregate type [default: every reducer's]")
    ] = None,
    prefix: Annotated[
        str | None, typer.Option(help="only aggregates whose id starts with this (one world's)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="most aggregates shown")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, one aggregate each")] = False,
    reducers: ReducersOption = DEFAULT_REDUCERS,
) -> None:
    """Every aggregate's state as of one global position (a consistent cut)."""
    from itertools import islice

    context: Context = ctx.obj
    with context.open() as store:
        store.migrate()
        replayer = _replayer(store, reducers)
        cut = replayer.cut(position if position is not None else store.log_horizon().head)
        shown = list(
            islice(
                replayer.iter_world(
                    cut, aggregate_type=aggregate_type, id_prefix=prefix, page=min(limit, 500)
                ),
                limit,
            )
        )
    if as_json:
        for found in shown:
            sys.stdout.write(json.dumps(found.to_dict(), ensure_ascii=False) + "\n")
        return
    table = Table("type", "aggregate", "version", "state", title=f"The world at position {cut}")
    for found in shown:
        table.add_row(
            found.aggregate_type,
            escape(found.aggregate_id),
            str(found.version),
            escape(json.dumps(found.state, ensure_ascii=False)),
        )
    console.print(table)


@app.command("replay-worker")
def replay_worker(
    ctx: typer.Context,
    kafka_bootstrap_servers: KafkaOption = None,
    topic_prefix: PrefixOption = None,
    partitions: PartitionsOption = None,
    replication_factor: ReplicationOption = None,
    reducers: ReducersOption = DEFAULT_REDUCERS,
    projections: Annotated[
        list[str] | None,
        typer.Option(
            "--projections",
            help=f"projections rebuild requests may name: module:attribute "
            f"[default {DEFAULT_PROJECTIONS}]",
        ),
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option(help="this worker's name in replies [default host-pid]")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus metrics on this port")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="address the metrics server binds")] = (
        "127.0.0.1"
    ),
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Answer replay, rebuild and ping requests from the control topic until stopped
    (SIGTERM or Ctrl-C finish the request in hand, leave the group and exit 0)."""
    from eventstore.consumers import KafkaDeadLetters
    from eventstore.replay import ControlHandler, ReplayMetrics, ReplayWorker
    from eventstore.replay._kafka import default_worker_id

    context: Context = ctx.obj
    configure_logging(log_level)
    servers, prefix = _kafka(context, kafka_bootstrap_servers, topic_prefix)
    settings = context.settings
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    metrics = ReplayMetrics()
    if metrics_port is not None:
        metrics.serve(metrics_port, metrics_host)
    name = worker_id or default_worker_id()
    with context.open() as store:
        store.migrate()
        handler = ControlHandler(
            store,
            _replayer(store, reducers),
            projections=load_projections(projections or [DEFAULT_PROJECTIONS]),
            dead_letters=KafkaDeadLetters(
                servers,
                topic_prefix=prefix,
                partitions=partitions or settings.topic_partitions,
                replication_factor=replication_factor or settings.topic_replication_factor,
            ),
            worker_id=name,
            stop=stop,
        )
        worker = ReplayWorker(
            handler,
            bootstrap_servers=servers,
            topic_prefix=prefix,
            partitions=partitions or settings.topic_partitions,
            replication_factor=replication_factor or settings.topic_replication_factor,
            metrics=metrics,
        )
        errors.print(f"replay worker {name} answering {worker.control} on {context.describe()}")
        worker.run(stop)
    errors.print(f"replay worker {name} stopped after {worker.answered} replies")


snapshots_app = typer.Typer(
    help="The replay snapshot cache (deleting it changes no result, only speed).",
    no_args_is_help=True,
)
app.add_typer(snapshots_app, name="snapshots")


@snapshots_app.command("count")
def snapshots_count(
    ctx: typer.Context,
    aggregate: Annotated[str | None, typer.Option(help="one aggregate's")] = None,
) -> None:
    """How many snapshots are stored."""
    context: Context = ctx.obj
    with context.open() as store:
        store.migrate()
        console.print(str(store.snapshot_count(aggregate)))


@snapshots_app.command("delete")
def snapshots_delete(
    ctx: typer.Context,
    aggregate: Annotated[str | None, typer.Option(help="only this aggregate's")] = None,
    aggregate_type: Annotated[str | None, typer.Option("--type", help="only this type's")] = None,
) -> None:
    """Delete snapshots (all of them by default); replays rebuild them as they pass."""
    context: Context = ctx.obj
    with context.open() as store:
        store.migrate()
        deleted = store.delete_snapshots(aggregate_id=aggregate, aggregate_type=aggregate_type)
    console.print(f"deleted {deleted} snapshots")
