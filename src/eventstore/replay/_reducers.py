"""Reducers: how an aggregate type's events fold into its state."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from eventstore._frozen import FrozenDict, FrozenList
from eventstore.errors import ConfigurationError, ReplayError
from eventstore.events import Event

Fold = Callable[[Any, Event], Any]
"""`(state, event) -> new state`. It may change `state` in place and return it."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def state_json(state: Any) -> str:
    """The state as compact JSON text, or ValueError when it is not exactly JSON.

    Exactly: it must come back equal from the text, or a replay from a snapshot (which is
    that text) would differ from a replay from the events. So keys must be strings (json
    turns 1 into "1"), sequences lists (a tuple comes back a list), numbers finite.
    """
    try:
        text = json.dumps(state, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise ValueError(str(error)) from None
    if json.loads(text) != state:
        raise ValueError(
            "it does not come back the same from JSON (keys must be strings, sequences "
            "lists, no sets or tuples)"
        )
    if _holds_frozen(state):
        # An event's payload is immutable: a state holding a part of it would fail to
        # change in place where the same state read back from a snapshot would not.
        raise ValueError(
            "it holds an immutable part of an event's payload; copy it into the state, e.g. "
            'list(event.payload["items"]) or dict(event.payload["stats"])'
        )
    return text


def _holds_frozen(value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        return any(_holds_frozen(item) for item in value.values())
    if kind is list:
        return any(_holds_frozen(item) for item in value)
    return kind is FrozenDict or kind is FrozenList


class Reducer:
    """How one aggregate type's events fold into its state.

    ::

        players = Reducer("Player", version=1, initial={"zone": None, "items": []})

        @players.on("PlayerMoved")
        def _moved(state, event):
            return {**state, "zone": event.payload["to_zone"]}

    Handlers run per event type; an event whose type has none goes to `apply` when one is
    given (it sees every such event), and otherwise leaves the state as it is. Events reach
    them upcast to their current schema version. State must be JSON (objects with string
    keys, lists, strings, finite numbers, booleans, null): it is checked, and snapshots store
    it as JSON. A handler must return the new state (None is refused: it is almost always a
    forgotten `return`).

    `version` is the reducer's own: raise it whenever the fold changes meaning, so that
    snapshots made by the older code are not used. `snapshot_every` events of an aggregate,
    replays store a snapshot (0: never).
    """

    def __init__(
        self,
        aggregate_type: str,
        apply: Fold | None = None,
        *,
        version: int = 1,
        initial: Any = None,
        snapshot_every: int = 100,
    ) -> None:
        if not isinstance(aggregate_type, str) or not _IDENTIFIER.match(aggregate_type):
            raise ConfigurationError(
                f"a reducer's aggregate type must be an identifier like 'Player', not "
                f"{aggregate_type!r}"
            )
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigurationError(
                f"reducer {aggregate_type}: version must be an integer >= 1, not {version!r}"
            )
        if (
            isinstance(snapshot_every, bool)
            or not isinstance(snapshot_every, int)
            or (snapshot_every < 0)
        ):
            raise ConfigurationError(
                f"reducer {aggregate_type}: snapshot_every must be an integer >= 0 (0: no "
                f"snapshots), not {snapshot_every!r}"
            )
        if apply is not None and not callable(apply):
            raise ConfigurationError(f"reducer {aggregate_type}: apply must be a function")
        try:
            self._initial = state_json(initial)
        except ValueError as error:
            raise ConfigurationError(
                f"reducer {aggregate_type}: the initial state is not JSON ({error})"
            ) from None
        self.aggregate_type = aggregate_type
        self.version = version
        self.snapshot_every = snapshot_every
        self.apply = apply
        self.handlers: dict[str, Fold] = {}

    def __repr__(self) -> str:
        return f"Reducer({self.aggregate_type!r}, version={self.version})"

    def on(self, *event_types: str) -> Callable[[Fold], Fold]:
        """Register the decorated `(state, event) -> state` for these event types."""
        if not event_types:
            raise ConfigurationError(f"reducer {self.aggregate_type}: on() needs event types")

        def register(fold: Fold) -> Fold:
            for event_type in event_types:
                if event_type in self.handlers:
                    raise ConfigurationError(
                        f"reducer {self.aggregate_type}: {event_type} already has a handler"
                    )
                self.handlers[event_type] = fold
            return fold

        return register

    def initial(self) -> Any:
        """A fresh copy of the initial state (handlers may change it in place)."""
        return json.loads(self._initial)

    def fold(self, state: Any, event: Event) -> Any:
        """The state after `event` (ReplayError, naming the event, when the handler raises
        or returns None)."""
        handler = self.handlers.get(event.event_type, self.apply)
        if handler is None:
            return state
        try:
            new = handler(state, event)
        except Exception as error:
            raise ReplayError(
                f"reducer {self.aggregate_type} failed on {event.event_type} "
                f"{event.aggregate_id} v{event.version} (event {event.id}): {error!r}"
            ) from error
        if new is None:
            raise ReplayError(
                f"reducer {self.aggregate_type} returned None on {event.event_type} "
                f"{event.aggregate_id} v{event.version} (event {event.id}); return the new "
                "state"
            )
        return new

    def check(self, state: Any, event: Event | None) -> str:
        """The state's JSON text; ReplayError naming the aggregate type and the event after
        which it stopped being JSON."""
        try:
            return state_json(state)
        except ValueError as error:
            where = (
                f" after {event.event_type} {event.aggregate_id} v{event.version} "
                f"(event {event.id})"
                if event is not None
                else ""
            )
            raise ReplayError(
                f"reducer {self.aggregate_type} produced state that is not JSON{where}: "
                f"{error}; keep state to dicts with string keys, lists, strings, numbers, "
                "booleans and None"
            ) from None


def check_reducers(reducers: Iterable[Reducer]) -> dict[str, Reducer]:
    """The reducers by aggregate type (one each)."""
    found: dict[str, Reducer] = {}
    for reducer in reducers:
        if not isinstance(reducer, Reducer):
            raise ConfigurationError(f"{reducer!r} is not a Reducer")
        if reducer.aggregate_type in found:
            raise ConfigurationError(
                f"two reducers for aggregate type {reducer.aggregate_type!r}: keep one"
            )
        found[reducer.aggregate_type] = reducer
    return found
