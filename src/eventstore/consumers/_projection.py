"""What a projection is: a name, a version, handlers per event type, an error policy and its
read model (JSON documents by key, or tables of its own through the transaction's
connection)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from eventstore.errors import ProjectionError
from eventstore.events import Event

if TYPE_CHECKING:
    from eventstore.consumers._documents import Documents

Handler = Callable[[Event, "Documents"], None]
"""`handler(event, documents)`: change the read model for one event (upcast already)."""
ResetHook = Callable[[str, "Documents"], None]
"""`reset(aggregate_id, documents)`: undo one aggregate's effects before it is rebuilt alone."""
ErrorPolicy = Literal["park", "skip", "stop"]

ANY_EVENT = "*"
"""The event type of a handler that receives every event."""
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}\Z")
_EVENT_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_POLICIES = ("park", "skip", "stop")


def check_projection_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProjectionError(
            f"projection name {name!r} is not valid: use 1-100 lower-case letters, digits, "
            "'-' and '_', starting with a letter or digit (it names a Kafka consumer group and "
            "a dead-letter topic)"
        )
    return name


class Projection:
    """A read model built from events.

    ```python
    positions = Projection("player-positions", version=1, on_error="park")

    @positions.on("PlayerMoved")
    def moved(event, documents):
        documents.put(event.aggregate_id, {"zone": event.payload["to_zone"]})
    ```

    `version`: raise it when the handlers change what they write; runners then rebuild the
    read model (a new generation beside the current one) before serving the new version.
    `on_error`: what a handler's exception does: `park` (default) holds the event and every
    later event of its aggregate until `eventstore projections retry`; `skip` records it and
    goes on; `stop` stops the runner. `aggregate_types` limits which aggregates the projection
    tracks (default: all). `reset(aggregate_id, documents)` undoes one aggregate's effects
    before a rebuild of that aggregate alone (default: delete the document keyed by its id).
    `migrations` (per backend, `postgres` / `sqlite`): SQL for tables of its own, run in order
    each time a runner starts, before its first batch: write them idempotent (`CREATE TABLE
    IF NOT EXISTS ...`).
    """

    def __init__(
        self,
        name: str,
        handlers: Mapping[str, Handler] | None = None,
        *,
        version: int = 1,
        on_error: ErrorPolicy = "park",
        aggregate_types: Iterable[str] | None = None,
        reset: ResetHook | None = None,
        migrations: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.name = check_projection_name(name)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ProjectionError(f"projection {name!r}: version must be an integer >= 1")
        if on_error not in _POLICIES:
            raise ProjectionError(
                f"projection {name!r}: on_error must be one of park, skip, stop, not {on_error!r}"
            )
        self.version = version
        self.on_error: ErrorPolicy = on_error
        self.aggregate_types = frozenset(aggregate_types) if aggregate_types else None
        self.reset = reset
        self.migrations = {k: list(v) for k, v in (migrations or {}).items()}
        self.handlers: dict[str, Handler] = {}
        for event_type, handler in (handlers or {}).items():
            self.add(event_type, handler)

    def __repr__(self) -> str:
        return f"Projection({self.name!r}, version={self.version}, on_error={self.on_error!r})"

    def add(self, event_type: str, handler: Handler) -> None:
        if event_type != ANY_EVENT and not (
            isinstance(event_type, str) and _EVENT_TYPE.match(event_type)
        ):
            raise ProjectionError(
                f"projection {self.name!r}: {event_type!r} is not an event type name "
                f"(an identifier such as PlayerMoved, or {ANY_EVENT!r} for every event)"
            )
        if not callable(handler):
            raise ProjectionError(
                f"projection {self.name!r}: the handler of {event_type} is not callable"
            )
        try:
            inspect.signature(handler).bind(None, None)
        except TypeError:
            raise ProjectionError(
                f"projection {self.name!r}: the handler of {event_type} must take two "
                "arguments, (event, documents)"
            ) from None
        except ValueError:  # no signature to inspect (some builtins): trust it
            pass
        if event_type in self.handlers:
            raise ProjectionError(
                f"projection {self.name!r} has two handlers for {event_type}; keep one"
            )
        self.handlers[event_type] = handler

    def on(self, *event_types: str) -> Callable[[Handler], Handler]:
        """Decorator: register the function as the handler of these event types."""

        def register(handler: Handler) -> Handler:
            for event_type in event_types or (ANY_EVENT,):
                self.add(event_type, handler)
            return handler

        return register

    def handler_for(self, event_type: str) -> Handler | None:
        return self.handlers.get(event_type) or self.handlers.get(ANY_EVENT)

    def tracks(self, event: Event) -> bool:
        """Whether the projection keeps a checkpoint for this event's aggregate."""
        return self.aggregate_types is None or event.aggregate_type in self.aggregate_types

    @property
    def event_types(self) -> list[str]:
        return sorted(t for t in self.handlers if t != ANY_EVENT)


def check_projections(projections: Sequence[Projection]) -> list[Projection]:
    """A runner's projections: at least one, each a Projection, names unique."""
    found = list(projections)
    if not found:
        raise ProjectionError("no projection given: pass at least one Projection")
    seen: set[str] = set()
    for projection in found:
        if not isinstance(projection, Projection):
            raise ProjectionError(f"{projection!r} is not a Projection")
        if projection.name in seen:
            raise ProjectionError(
                f"two projections are named {projection.name!r}; each needs its own name "
                "(it names its read model, consumer group and dead-letter topic)"
            )
        seen.add(projection.name)
    return found
