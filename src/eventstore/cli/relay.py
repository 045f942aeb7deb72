"""Commands that talk to Kafka: relay (outbox to Kafka) and topics.

kafka-python loads only when one of these commands runs (imports inside the functions), so
that the other commands start without it.
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from eventstore.cli._app import Context, app, configure_logging, console, errors
from eventstore.errors import ConfigurationError

if TYPE_CHECKING:
    from eventstore.producer import KafkaPublisher

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


def publisher(
    context: Context,
    servers: str | None,
    prefix: str | None,
    partitions: int | None,
    replication_factor: int | None,
) -> KafkaPublisher:
    """The Kafka publisher the flags (or `EVENTSTORE_*`) describe; `ConfigurationError` when
    no Kafka is configured."""
    from eventstore.producer import KafkaPublisher

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
    configure_logging(log_level)
    if shard >= shards:
        raise ConfigurationError(f"--shard must be below --shards ({shards}), not {shard}")
    kafka = publisher(
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
            kafka,
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
            kafka.close()
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
    kafka = publisher(
        context, kafka_bootstrap_servers, topic_prefix, partitions, replication_factor
    )
    try:
        created = kafka.ensure_topics(aggregate_types)
    finally:
        kafka.close()
    for aggregate_type in aggregate_types:
        name = events_topic(kafka.topic_prefix, aggregate_type)
        console.print(f"{name}: {'created' if name in created else 'exists'}")
