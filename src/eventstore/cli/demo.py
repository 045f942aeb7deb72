"""`eventstore demo`: a small game world played on the store, then rebuilt from its events."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Annotated

import typer
from rich.progress import TextColumn
from rich.table import Table

from eventstore.cli._app import Context, app, console, progress
from eventstore.errors import EventStoreError


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
            for tick in range(ticks + 1):
                batch = world.genesis() if tick == 0 else world.tick()
                appended += len(producer.publish_many(batch))
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
    console.print(
        f"Explore it: [cyan]eventstore events --aggregate {world.players[0].id}[/], "
        f"[cyan]eventstore events --type ItemPickedUp --limit 10[/], [cyan]eventstore tail[/]"
    )
