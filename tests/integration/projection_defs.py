"""A projection for tests that run `eventstore project` as a process: it keeps, per player,
every version it applied (so a test sees any event applied twice or never)."""

from __future__ import annotations

from eventstore.consumers import Documents, Projection
from eventstore.events import Event

applied = Projection("applied", aggregate_types=["Player"])


@applied.on("PlayerMoved", "PlayerJoined")
def _record(event: Event, documents: Documents) -> None:
    doc = documents.get(event.aggregate_id) or {"versions": []}
    doc["versions"].append(event.version)
    documents.put(event.aggregate_id, doc)


PROJECTIONS = [applied]
