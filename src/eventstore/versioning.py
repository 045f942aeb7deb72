"""Payload schema versions and upcasters.

An upcaster migrates a payload of one event type from schema version N to N + 1. Stores apply
them on every read, so readers only ever see each event type at its newest schema version while
the stored rows stay as they were written (events are immutable).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventstore.errors import EventStoreError
from eventstore.events import Event

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class UpcastError(EventStoreError):
    """An upcaster failed or its chain has a hole; the message names the event and the step."""


class Upcasters:
    """A registry of upcasters: `(event_type, from_version) -> function(payload) -> payload`.

    Register with the decorator::

        upcasters = Upcasters()

        @upcasters.register("PlayerMoved", from_version=1)
        def _add_zone(payload):
            return {**payload, "zone": "unknown"}
    """

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}
        self._current: dict[str, int] = {}

    def register(self, event_type: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register the upcaster from `from_version` to `from_version + 1` of `event_type`."""
        if from_version < 1:
            raise ValueError(f"from_version must be at least 1, not {from_version}")
        if (event_type, from_version) in self._steps:
            raise ValueError(f"an upcaster for {event_type} v{from_version} is already registered")

        def decorate(function: Upcaster) -> Upcaster:
            self._steps[(event_type, from_version)] = function
            self._current[event_type] = max(self._current.get(event_type, 1), from_version + 1)
            return function

        return decorate

    def current_version(self, event_type: str) -> int:
        """The newest schema version of `event_type` (1 when it has no upcasters)."""
        return self._current.get(event_type, 1)

    def upcast(self, event: Event) -> Event:
        """`event` with its payload migrated to the newest schema version of its type."""
        target = self._current.get(event.event_type)
        if target is None or event.schema_version >= target:
            return event
        payload = event.payload
        version = event.schema_version
        while version < target:
            step = self._steps.get((event.event_type, version))
            if step is None:
                raise UpcastError(
                    f"no upcaster from {event.event_type} v{version} to v{version + 1} "
                    f"(event {event.id}); register one with Upcasters.register"
                )
            try:
                payload = step(dict(payload))
            except Exception as error:
                raise UpcastError(
                    f"upcasting {event.event_type} v{version} -> v{version + 1} failed for "
                    f"event {event.id}: {error!r}"
                ) from error
            version += 1
        return event.model_copy(update={"payload": payload, "schema_version": version})
