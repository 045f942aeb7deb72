"""The projections the fault tests run in `eventstore project` processes.

`tally` (`tests.faults.counting:PROJECTIONS`) keeps, per player, the list of versions its
handler ran for (exactly once per event means the list ends as [1, 2, ..., N]: a duplicate or
a gap shows in it), and per zone the sum of those versions and a count of events: documents
that every runner changes, so concurrent runners contend on the same rows. Like the demo's
`zone-population`, its handler locks a zone's document when it first reads it in a batch, in
the order events come, so two runners' batches may lock two zones in opposite orders.

`tally-by-key` (`tests.faults.counting:BY_KEY`) is the same read model, whose handler first
locks every zone's document in key order, as every batch locks checkpoints and players'
documents: batches of several runners wait for each other but never deadlock. Running both
under the same faults tells a deadlock's effects apart from everything else.
"""

from __future__ import annotations

from typing import Any

from eventstore.consumers import Documents, Projection
from eventstore.events import Event

NAME = "tally"
AGGREGATE_TYPE = "Player"
ZONES = 5


def zone_key(zone: str) -> str:
    return f"zone-{zone}"


def tally(name: str, *, zones_in_key_order: bool) -> Projection:
    projection = Projection(name, aggregate_types=[AGGREGATE_TYPE])
    every_zone = sorted(zone_key(f"z{n}") for n in range(ZONES))

    @projection.on("PlayerJoined", "PlayerMoved")
    def record(event: Event, documents: Documents) -> None:
        if zones_in_key_order:
            documents.prefetch(every_zone)  # locks them, in this order, once per batch
        player = documents.get(event.aggregate_id) or {"versions": []}
        player["versions"].append(event.version)
        documents.put(event.aggregate_id, player)

        def add(zone: dict[str, Any]) -> dict[str, Any]:
            return {
                "sum": zone.get("sum", 0) + event.version,
                "events": zone.get("events", 0) + 1,
            }

        documents.update(zone_key(event.payload["zone"]), add)

    return projection


PROJECTIONS = [tally(NAME, zones_in_key_order=False)]
BY_KEY = [tally(f"{NAME}-by-key", zones_in_key_order=True)]
