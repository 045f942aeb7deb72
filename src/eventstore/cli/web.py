"""`eventstore serve` (the HTTP API and the time-travel page) and `eventstore tokens`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from eventstore.cli._app import Context, app, configure_logging, console, load_code
from eventstore.cli.projections import load_projections
from eventstore.cli.relay import KafkaOption, PrefixOption
from eventstore.cli.replay import DEFAULT_REDUCERS, JsonOption, ReducersOption, load_reducers
from eventstore.errors import ConfigurationError

if TYPE_CHECKING:
    from eventstore.store import EventStore
    from eventstore.versioning import PayloadSchemas

HostOption = Annotated[
    str, typer.Option("--host", help="address to bind (beyond loopback needs tokens)")
]
PortOption = Annotated[int, typer.Option("--port", min=0, max=65535, help="0: any free port")]


def serve_app(
    context: Context,
    store: EventStore,
    *,
    host: str,
    port: int,
    reducers: str = DEFAULT_REDUCERS,
    projections: str | None = None,
    schemas: str | None = None,
    anonymous_reads: bool | None = None,
    max_body: int = 1 << 20,
    max_batch: int = 1000,
    cors_origins: list[str] | None = None,
    kafka: tuple[str, str] | None = None,
    demo_world: str | None = None,
    drain: float = 30.0,
    log_level: str = "warning",
) -> None:
    """Serve `store` until SIGTERM; shared by `serve` and `demo --serve`."""
    from eventstore.web import ApiOptions, create_app
    from eventstore.web._server import check_bind, is_loopback, run

    anonymous = is_loopback(host) if anonymous_reads is None else anonymous_reads
    check_bind(host, anonymous_reads=anonymous, tokens=store)
    payload_schemas: PayloadSchemas | None = None
    if schemas:
        payload_schemas = load_code(schemas, "payload schemas", "game.events:SCHEMAS")
    options = ApiOptions(
        anonymous_reads=anonymous,
        max_body_bytes=max_body,
        max_batch=max_batch,
        cors_origins=tuple(cors_origins or ()),
        demo_world=demo_world,
    )
    application = create_app(
        store,
        reducers=load_reducers(reducers),
        projections=load_projections([projections]) if projections else (),
        schemas=payload_schemas,
        kafka=kafka,
        options=options,
    )

    def ready(url: str) -> None:
        reads = "reads open on loopback" if anonymous else "every request needs a token"
        console.print(
            f"serving {context.describe()} at [bold cyan]{url}[/] "
            f"(API under {url}v1, OpenAPI at {url}openapi.json; {reads}); Ctrl-C stops"
        )

    run(application, host, port, ready=ready, drain=drain, log_level=log_level)


@app.command()
def serve(
    ctx: typer.Context,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8080,
    reducers: ReducersOption = DEFAULT_REDUCERS,
    projections: Annotated[
        str | None,
        typer.Option(help="projections' code (module:attribute), for retrying parked ones"),
    ] = None,
    schemas: Annotated[
        str | None,
        typer.Option(help="payload schemas (module:attribute, a PayloadSchemas) for appends"),
    ] = None,
    anonymous_reads: Annotated[
        bool | None,
        typer.Option(
            "--anonymous-reads/--no-anonymous-reads",
            help="reads without a token (default: only on loopback; refused beyond it)",
        ),
    ] = None,
    max_body: Annotated[int, typer.Option(min=1024, help="largest request body, bytes")] = 1 << 20,
    max_batch: Annotated[int, typer.Option(min=1, help="most events in one POST")] = 1000,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="allow this browser origin (repeat; default none)")
    ] = None,
    kafka_bootstrap_servers: KafkaOption = None,
    topic_prefix: PrefixOption = None,
    drain: Annotated[float, typer.Option(min=0, help="seconds SIGTERM waits for requests")] = 30,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ...")] = "INFO",
) -> None:
    """Serve the HTTP API and the time-travel page (at /) until SIGTERM."""
    context: Context = ctx.obj
    configure_logging(log_level)
    kafka = context.kafka(kafka_bootstrap_servers, topic_prefix)
    with context.open() as store:
        store.migrate()
        serve_app(
            context,
            store,
            host=host,
            port=port,
            reducers=reducers,
            projections=projections,
            schemas=schemas,
            anonymous_reads=anonymous_reads,
            max_body=max_body,
            max_batch=max_batch,
            cors_origins=cors_origin,
            kafka=kafka,
            drain=drain,
            log_level=log_level.lower(),
        )


tokens_app = typer.Typer(
    help="Bearer tokens of the HTTP API: create (shown once), list, revoke.",
    no_args_is_help=True,
)
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="who or what the token is for")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", "-s", help="read, append or admin (repeat for several)"),
    ],
    as_json: JsonOption = False,
) -> None:
    """Create a token; it is printed once and only its digest is stored."""
    from eventstore.web import issue_token

    context: Context = ctx.obj
    with context.open() as store:
        store.migrate()
        token = issue_token(store, name, scope)
    if as_json:
        console.print_json(json.dumps({"name": name, "scopes": sorted(set(scope)), "token": token}))
        return
    console.print(f"token {escape(name)!s} ({', '.join(sorted(set(scope)))}):")
    console.print(token, highlight=False, soft_wrap=True)
    console.print("[dim]shown once: only its digest is stored[/]")


@tokens_app.command("list")
def tokens_list(
    ctx: typer.Context,
    revoked: Annotated[bool, typer.Option(help="include revoked tokens")] = False,
    as_json: JsonOption = False,
) -> None:
    """Tokens by name, with their scopes (never the secrets, which are not stored)."""
    context: Context = ctx.obj
    with context.open() as store:
        found = store.list_tokens(revoked=revoked)
    rows: list[dict[str, Any]] = [
        {
            "name": t.name,
            "id": t.token_id,
            "scopes": list(t.scopes),
            "created_at": t.created_at.isoformat(),
            "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
        }
        for t in found
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print("no tokens (create one: eventstore tokens create NAME --scope read)")
        return
    table = Table("name", "id", "scopes", "created", "revoked", box=None)
    for row in rows:
        table.add_row(
            escape(row["name"]),
            row["id"],
            " ".join(row["scopes"]),
            row["created_at"][:19],
            (row["revoked_at"] or "-")[:19],
        )
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="the token's name")]
) -> None:
    """Revoke a token: requests carrying it are refused from now on."""
    context: Context = ctx.obj
    with context.open() as store:
        if not store.revoke_token(name):
            raise ConfigurationError(
                f"no live token named {name!r}; `eventstore tokens list` shows them"
            )
    console.print(f"revoked {escape(name)}")
