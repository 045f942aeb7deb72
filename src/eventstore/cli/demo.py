"""`eventstore demo`: a small game world played on the store, then rebuilt from its events."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import TextColumn
from rich.table import Table

from eventstore.cli._app import Context, app, console, progress
from eventstore.errors import EventStoreError

if TYPE_CHECKING:
    from eventstore.demo.world import World
    from eventstore.store import EventStore


@app.command()
def demo(
    ctx: typer.Context,
    players: Annotated[int, typer.Option(min=1, max=100_000, help="players in the world")] = 300,
    items: Annotated[int, typer.Option(min=0, max=100_000, help="items in the world")] = 120,
    ticks: Annotated[int, typer.Option(min=1, max=100_000, help="ticks of play")] = 60,
    seed: Annotated[int, typer.Option(help="random seed of the simulation")] = 7,
    serve: Annotated[
        bool, typer.Option("--serve", help="then serve the time-travel page on loopback")
    ] = False,
    port: Annotated[int, typer.Option(min=0, max=65535, help="with --serve; 0: any")] = 8080,
) -> None:
    """Run a small game world on the store (the embedded SQLite file unless configured)."""
    from eventstore.demo.world import World, player_state
    from eventstore.producer import EventProducer

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
        with progress(TextColumn("{task.fields[events]} events")) as bar:
            task = bar.add_task("playing", total=ticks + 1, events=0)
            appended = 0
            ends: list[int] = []  # the global position each tick ended at
            for tick in range(ticks + 1):
                batch = world.genesis() if tick == 0 else world.tick()
                positions = producer.publish_many(batch)
                appended += len(positions)
                ends.append(max(positions))
                by_type.update(e.event_type for e in batch)
                bar.update(task, advance=1, events=appended)
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
        _projections(store, world)
        _replay(store, world, ends[len(ends) // 2])
        if serve:
            _serve(context, store, world, port)
            return
    console.print(
        f"Explore it: [cyan]eventstore events --aggregate {world.players[0].id}[/], "
        f"[cyan]eventstore events --type ItemPickedUp --limit 10[/], [cyan]eventstore tail[/], "
        "[cyan]eventstore projections status[/], "
        f"[cyan]eventstore projections show zone-population --find world={world.world_id}[/], "
        f"[cyan]eventstore replay {world.players[0].id} --history[/], "
        f"[cyan]eventstore world --type Player --prefix {world.world_id}- --limit 10[/]"
    )


def _projections(store: EventStore, world: World) -> None:
    """Build the demo's projections from the store's global log (the embedded default's
    source), show them, and check them against state recomputed from the events."""
    from eventstore.cli.projections import progress_bar
    from eventstore.consumers import ProjectionRunner, StoreTailSource
    from eventstore.demo.projections import ALL
    from eventstore.demo.world import ZONES, item_state, player_state

    source = StoreTailSource()
    started = time.perf_counter()
    source.catch_up(ProjectionRunner(store, ALL, source=source, progress=progress_bar))
    elapsed = time.perf_counter() - started
    players = {p.id: player_state(store.get_events_by_aggregate(p.id)) for p in world.players}
    population = Counter(state["zone"] for state in players.values())
    for player_id, expected in players.items():
        doc = store.get_document("player-positions", player_id)
        if doc is None or (doc["zone"], doc["moves"]) != (expected["zone"], expected["moves"]):
            raise EventStoreError(f"player-positions of {player_id} differs from its events")
    table = Table(
        "zone",
        "players",
        "items lying there",
        title=f"Projections (read models), built from the global log in {elapsed:.2f} s",
        box=None,
    )
    lying: Counter[str] = Counter()
    for item in world.items:
        expected = item_state(store.get_events_by_aggregate(item.id))
        doc = store.get_document("item-locations", item.id)
        if doc is None or (doc["zone"], doc["holder"]) != (expected["zone"], expected["holder"]):
            raise EventStoreError(f"item-locations of {item.id} differs from its events")
        if expected["zone"]:
            lying[expected["zone"]] += 1
    for zone in ZONES:
        doc = store.get_document("zone-population", f"{world.world_id}/{zone}") or {"players": 0}
        if doc["players"] != population[zone]:
            raise EventStoreError(f"zone-population of {zone} differs from the players' events")
        table.add_row(zone, str(doc["players"]), str(lying[zone]))
    console.print(table)
    console.print(
        f"[green]checked[/]: {len(players)} player positions, {len(ZONES)} zone populations "
        f"and {len(world.items)} item locations equal the state recomputed from the store"
    )


def _replay(store: EventStore, world: World, past: int) -> None:
    """Time travel: one player at three moments of the game, and the whole world as it was at
    a past global position, each rebuilt by the demo's reducers and checked against a fold of
    the stored events."""
    from eventstore.demo.reducers import ALL
    from eventstore.demo.world import ZONES, player_state
    from eventstore.replay import Replayer

    replayer = Replayer(store, ALL)
    player = world.players[0]
    history = list(store.get_events_by_aggregate(player.id))
    start, end = history[0].timestamp, history[-1].timestamp
    moments = Table(
        "game time",
        "version",
        "zone",
        "moves",
        "inventory",
        title=f"{player.id} at three moments of the game (eventstore replay --at)",
        box=None,
    )
    for share in (0.1, 0.5, 1.0):
        at = start + (end - start) * share
        found = replayer.replay_to(player.id, at=at)
        expected = player_state(e for e in history if e.version <= found.version)
        if found.state != expected:
            raise EventStoreError(f"replay of {player.id} at {at} differs from its events")
        inventory = ", ".join(i.rsplit("-", 1)[-1] for i in found.state["inventory"]) or "-"
        moments.add_row(
            at.strftime("%H:%M:%S"),
            str(found.version),
            found.state["zone"],
            str(found.state["moves"]),
            f"items {inventory}",
        )
    console.print(moments)

    # The world halfway through the game (`past`: where the middle tick ended), a consistent
    # cut at one global position.
    started = time.perf_counter()
    players = list(
        replayer.iter_world(past, aggregate_type="Player", id_prefix=f"{world.world_id}-")
    )
    elapsed = time.perf_counter() - started
    then = Counter(p.state["zone"] for p in players if p.version)
    now = Counter(player_state(store.get_events_by_aggregate(p.id))["zone"] for p in world.players)
    for found in players[:: max(1, len(players) // 20)]:  # a sample, checked against a fold
        events = store.get_events_by_aggregate(found.aggregate_id)
        if found.state != player_state(e for e in events if (e.position or 0) <= past):
            raise EventStoreError(f"world_at differs for {found.aggregate_id}")
    table = Table(
        "zone",
        "players then",
        "players now",
        title=(
            f"The world halfway through, at position {past}: {len(players)} players rebuilt "
            f"in {elapsed:.2f} s (eventstore world --position {past})"
        ),
        box=None,
    )
    for zone in ZONES:
        table.add_row(zone, str(then[zone]), str(now[zone]))
    console.print(table)


def _serve(context: Context, store: EventStore, world: World, port: int) -> None:
    """Serve the time-travel page on the demo world (loopback only), with an admin token
    for the page's retry buttons."""
    from eventstore.cli.web import serve_app
    from eventstore.web import issue_token

    name = f"demo-{world.world_id}"
    token = issue_token(store, name, ["admin"])
    console.print(
        f"An admin token for the page's retry buttons (shown once, revoked when the demo "
        f"stops): [bold]{token}[/]",
        soft_wrap=True,
    )
    try:
        serve_app(
            context,
            store,
            host="127.0.0.1",
            port=port,
            projections="eventstore.demo.projections:ALL",
            demo_world=world.world_id,
        )
    finally:
        store.revoke_token(name)
