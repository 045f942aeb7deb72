"""A small game world: players move between zones and pick up and drop items.

`simulate` yields the world's events tick by tick, each tick a batch that only a valid game
could produce (an item is picked up only where it lies, dropped only by its holder). The
reducers fold stored events back into state, so the demo can show that state is derived from
the events alone. Used by `eventstore demo` and the benchmarks.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from eventstore.events import Event

ZONES = ("spawn", "forest", "harbor", "mines", "castle", "marsh")
ITEM_KINDS = ("sword", "potion", "shield", "lantern", "map", "key")


@dataclass
class _Player:
    id: str
    zone: str
    version: int = 0
    items: set[str] = field(default_factory=set)


@dataclass
class _Item:
    id: str
    zone: str | None
    holder: str | None = None
    version: int = 0


class World:
    """The simulated world of one demo run; aggregate ids are prefixed by the world id."""

    def __init__(self, world_id: str, *, players: int, items: int, seed: int = 7) -> None:
        self.world_id = world_id
        self._random = random.Random(seed)
        self._ids = random.Random(world_id)  # event ids: one run's, whatever the seed
        self._clock = datetime(2026, 11, 1, 18, 0, tzinfo=UTC)
        self._version = 0
        self.players = [
            _Player(f"{world_id}-player-{i}", self._random.choice(ZONES)) for i in range(players)
        ]
        self.items = [
            _Item(f"{world_id}-item-{i}", self._random.choice(ZONES)) for i in range(items)
        ]
        self._items_by_id = {item.id: item for item in self.items}

    def _event(
        self,
        aggregate: _Player | _Item | None,
        event_type: str,
        cause: Event | None = None,
        **payload: Any,
    ) -> Event:
        """The next event of `aggregate` (None: the world). Events of one action share a
        correlation id (the first one's id); each later one names the first as its cause."""
        if aggregate is None:
            self._version += 1
            version, aggregate_id, aggregate_type = self._version, self.world_id, "World"
        else:
            aggregate.version += 1
            version, aggregate_id = aggregate.version, aggregate.id
            aggregate_type = "Player" if isinstance(aggregate, _Player) else "Item"
        event_id = str(uuid.UUID(int=self._ids.getrandbits(128), version=4))
        metadata = {"world": self.world_id, "source": "demo", "correlation_id": event_id}
        if cause is not None:
            metadata["correlation_id"] = cause.metadata["correlation_id"]
            metadata["causation_id"] = cause.id
        return Event(
            id=event_id,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            event_type=event_type,
            version=version,
            payload=payload,
            metadata=metadata,
            timestamp=self._clock,
        )

    def genesis(self) -> list[Event]:
        """The world, its players and its items coming into being (one batch)."""
        created = self._event(None, "WorldCreated", name=self.world_id, zones=list(ZONES))
        events = [created]
        for number, player in enumerate(self.players):
            events.append(
                self._event(player, "PlayerJoined", created, name=f"hero{number}", zone=player.zone)
            )
        for item in self.items:
            kind = self._random.choice(ITEM_KINDS)
            events.append(self._event(item, "ItemSpawned", created, kind=kind, zone=item.zone))
        return events

    def tick(self) -> list[Event]:
        """One tick of play: about a third of the players act."""
        self._clock += timedelta(seconds=1)
        events: list[Event] = []
        for player in self._random.sample(self.players, k=max(1, len(self.players) // 3)):
            events.extend(self._act(player))
        return events

    def _act(self, player: _Player) -> Iterator[Event]:
        roll = self._random.random()
        here = [i for i in self.items if i.zone == player.zone and i.holder is None]
        if roll < 0.25 and here:
            item = self._random.choice(here)
            item.zone, item.holder = None, player.id
            player.items.add(item.id)
            picked = self._event(player, "ItemPickedUp", item_id=item.id, zone=player.zone)
            yield picked
            yield self._event(item, "ItemTaken", picked, by=player.id)
        elif roll < 0.35 and player.items:
            item = self._items_by_id[self._random.choice(sorted(player.items))]
            item.zone, item.holder = player.zone, None
            player.items.discard(item.id)
            dropped = self._event(player, "ItemDropped", item_id=item.id, zone=player.zone)
            yield dropped
            yield self._event(item, "ItemLeft", dropped, zone=player.zone)
        else:
            target = self._random.choice([z for z in ZONES if z != player.zone])
            yield self._event(
                player,
                "PlayerMoved",
                from_zone=player.zone,
                to_zone=target,
                x=round(self._random.uniform(-500, 500), 2),
                y=round(self._random.uniform(-500, 500), 2),
            )
            player.zone = target

    def expected_player_state(self, player_id: str) -> dict[str, Any]:
        """What the simulation believes, to check what the events rebuild."""
        player = next(p for p in self.players if p.id == player_id)
        return {"zone": player.zone, "inventory": sorted(player.items), "version": player.version}


def player_state(events: Iterable[Event]) -> dict[str, Any]:
    """Fold a player's events into its current state."""
    state: dict[str, Any] = {"name": None, "zone": None, "inventory": [], "moves": 0, "version": 0}
    for event in events:
        p = event.payload
        if event.event_type == "PlayerJoined":
            state.update(name=p["name"], zone=p["zone"])
        elif event.event_type == "PlayerMoved":
            state.update(zone=p["to_zone"], moves=state["moves"] + 1, last_xy=[p["x"], p["y"]])
        elif event.event_type == "ItemPickedUp":
            state["inventory"] = sorted([*state["inventory"], p["item_id"]])
        elif event.event_type == "ItemDropped":
            state["inventory"] = [i for i in state["inventory"] if i != p["item_id"]]
        state["version"] = event.version
    return state


def item_state(events: Iterable[Event]) -> dict[str, Any]:
    """Fold an item's events into where it lies (or who carries it)."""
    state: dict[str, Any] = {"kind": None, "zone": None, "holder": None, "version": 0}
    for event in events:
        p = event.payload
        if event.event_type == "ItemSpawned":
            state.update(kind=p["kind"], zone=p["zone"])
        elif event.event_type == "ItemTaken":
            state.update(zone=None, holder=p["by"])
        elif event.event_type == "ItemLeft":
            state.update(zone=p["zone"], holder=None)
        state["version"] = event.version
    return state
