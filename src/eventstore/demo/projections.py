"""The demo world's projections: where each player is, how many players each zone holds, and
where each item lies (or who carries it).

`eventstore project` runs `ALL` by default; `eventstore demo` builds them on the embedded
store and checks them against state recomputed from the events.
"""

from __future__ import annotations

from typing import Any

from eventstore.consumers import Documents, Projection
from eventstore.events import Event


def _own_document(aggregate_id: str, documents: Documents) -> None:
    """Undo one aggregate's effects: its document is keyed by its id (`--aggregate` rebuilds)."""
    documents.delete(aggregate_id)


player_positions = Projection("player-positions", aggregate_types=["Player"], reset=_own_document)
zone_population = Projection("zone-population", aggregate_types=["Player"])
item_locations = Projection("item-locations", aggregate_types=["Item"], reset=_own_document)


def _world(event: Event) -> str:
    return str(event.metadata.get("world", "-"))


@player_positions.on("PlayerJoined")
def _joined(event: Event, documents: Documents) -> None:
    documents.put(
        event.aggregate_id,
        {
            "world": _world(event),
            "name": event.payload["name"],
            "zone": event.payload["zone"],
            "xy": None,
            "moves": 0,
            "version": event.version,
        },
    )


@player_positions.on("PlayerMoved")
def _moved(event: Event, documents: Documents) -> None:
    def move(doc: dict[str, Any]) -> None:
        doc.update(
            zone=event.payload["to_zone"],
            xy=[event.payload["x"], event.payload["y"]],
            moves=doc.get("moves", 0) + 1,
            version=event.version,
        )

    documents.update(event.aggregate_id, move)


def _zone_key(world: str, zone: str) -> str:
    return f"{world}/{zone}"


def _count(documents: Documents, world: str, zone: str, change: int) -> None:
    def apply(doc: dict[str, Any]) -> None:
        doc.update(world=world, zone=zone, players=doc.get("players", 0) + change)

    documents.update(_zone_key(world, zone), apply)


@zone_population.on("PlayerJoined")
def _arrive(event: Event, documents: Documents) -> None:
    _count(documents, _world(event), event.payload["zone"], +1)


@zone_population.on("PlayerMoved")
def _travel(event: Event, documents: Documents) -> None:
    _count(documents, _world(event), event.payload["from_zone"], -1)
    _count(documents, _world(event), event.payload["to_zone"], +1)


@item_locations.on("ItemSpawned")
def _spawned(event: Event, documents: Documents) -> None:
    documents.put(
        event.aggregate_id,
        {
            "world": _world(event),
            "kind": event.payload["kind"],
            "zone": event.payload["zone"],
            "holder": None,
        },
    )


@item_locations.on("ItemTaken")
def _taken(event: Event, documents: Documents) -> None:
    documents.update(event.aggregate_id, {"zone": None, "holder": event.payload["by"]})


@item_locations.on("ItemLeft")
def _left(event: Event, documents: Documents) -> None:
    documents.update(event.aggregate_id, {"zone": event.payload["zone"], "holder": None})


ALL = [player_positions, zone_population, item_locations]
"""The demo's projections (`eventstore project eventstore.demo.projections:ALL`)."""
