"""The demo world's reducers: players, items and the world (its zones), for replay.

They fold the same events as `world.player_state` and `world.item_state`, one event at a
time, so that any moment of the game can be rebuilt (`eventstore replay`).
"""

from __future__ import annotations

from typing import Any

from eventstore.events import Event
from eventstore.replay import Reducer

State = dict[str, Any]

PLAYERS = Reducer(
    "Player",
    version=1,
    initial={"name": None, "zone": None, "inventory": [], "moves": 0, "version": 0},
    snapshot_every=100,
)
ITEMS = Reducer(
    "Item", version=1, initial={"kind": None, "zone": None, "holder": None, "version": 0}
)
WORLDS = Reducer("World", version=1, initial={"name": None, "zones": [], "version": 0})


def _versioned(state: State, event: Event, **changes: Any) -> State:
    return {**state, **changes, "version": event.version}


@PLAYERS.on("PlayerJoined")
def _joined(state: State, event: Event) -> State:
    return _versioned(state, event, name=event.payload["name"], zone=event.payload["zone"])


@PLAYERS.on("PlayerMoved")
def _moved(state: State, event: Event) -> State:
    p = event.payload
    return _versioned(
        state, event, zone=p["to_zone"], moves=state["moves"] + 1, last_xy=[p["x"], p["y"]]
    )


@PLAYERS.on("ItemPickedUp")
def _picked_up(state: State, event: Event) -> State:
    inventory = sorted([*state["inventory"], event.payload["item_id"]])
    return _versioned(state, event, inventory=inventory)


@PLAYERS.on("ItemDropped")
def _dropped(state: State, event: Event) -> State:
    inventory = [i for i in state["inventory"] if i != event.payload["item_id"]]
    return _versioned(state, event, inventory=inventory)


@ITEMS.on("ItemSpawned")
def _spawned(state: State, event: Event) -> State:
    return _versioned(state, event, kind=event.payload["kind"], zone=event.payload["zone"])


@ITEMS.on("ItemTaken")
def _taken(state: State, event: Event) -> State:
    return _versioned(state, event, zone=None, holder=event.payload["by"])


@ITEMS.on("ItemLeft")
def _left(state: State, event: Event) -> State:
    return _versioned(state, event, zone=event.payload["zone"], holder=None)


@WORLDS.on("WorldCreated")
def _created(state: State, event: Event) -> State:
    return _versioned(state, event, name=event.payload["name"], zones=list(event.payload["zones"]))


def _other(state: State, event: Event) -> State:
    return _versioned(state, event)


# Events a reducer has no handler for still count as a version of the state.
PLAYERS.apply = ITEMS.apply = WORLDS.apply = _other

ALL = [PLAYERS, ITEMS, WORLDS]
"""Every demo reducer (`eventstore replay --reducers eventstore.demo.reducers:ALL`)."""
