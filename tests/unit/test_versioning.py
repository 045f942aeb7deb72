from __future__ import annotations

from typing import Any

import pytest

from eventstore import Event
from eventstore.versioning import UpcastError, Upcasters
from tests.helpers import event


def test_events_are_upcast_step_by_step_to_the_newest_version() -> None:
    upcasters = Upcasters()

    @upcasters.register("PlayerMoved", from_version=1)
    def _v2(payload: dict[str, Any]) -> dict[str, Any]:
        return {"pos": [payload["x"], payload["y"]]}

    @upcasters.register("PlayerMoved", from_version=2)
    def _v3(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "zone": "spawn"}

    old = event("p", 1, x=1, y=2)
    new = upcasters.upcast(old)
    assert (new.schema_version, new.payload) == (3, {"pos": [1, 2], "zone": "spawn"})
    assert old.payload == {"x": 1, "y": 2}  # the original is untouched
    assert upcasters.current_version("PlayerMoved") == 3
    assert upcasters.current_version("Other") == 1
    assert upcasters.upcast(event("p", 1, event_type="Other")).schema_version == 1


def test_a_failing_or_missing_step_names_the_event_and_the_step() -> None:
    upcasters = Upcasters()

    @upcasters.register("PlayerMoved", from_version=2)
    def _v3(payload: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("zone")

    with pytest.raises(UpcastError, match="no upcaster from PlayerMoved v1 to v2"):
        upcasters.upcast(event("p", 1))
    with pytest.raises(UpcastError, match="v2 -> v3 failed"):
        upcasters.upcast(event("p", 1).model_copy(update={"schema_version": 2}))


def test_registering_twice_or_below_one_is_refused() -> None:
    upcasters = Upcasters()
    upcasters.register("A", from_version=1)(lambda p: p)
    with pytest.raises(ValueError, match="already registered"):
        upcasters.register("A", from_version=1)
    with pytest.raises(ValueError, match="at least 1"):
        upcasters.register("A", from_version=0)


def test_an_upcaster_may_change_nested_data_of_the_payload_it_is_given() -> None:
    """Stored events are immutable; an upcaster still gets plain data of its own."""
    upcasters = Upcasters()

    @upcasters.register("Looted", from_version=1)
    def _add_rarity(payload: dict[str, Any]) -> dict[str, Any]:
        for item in payload["items"]:
            item["rarity"] = "common"
        payload["items"].append({"name": "coin", "rarity": "common"})
        return payload

    stored = Event.new(
        aggregate_type="Player",
        aggregate_id="p",
        event_type="Looted",
        version=1,
        payload={"items": [{"name": "sword"}]},
    )
    upcast = upcasters.upcast(stored)
    assert upcast.payload == {
        "items": [{"name": "sword", "rarity": "common"}, {"name": "coin", "rarity": "common"}]
    }
    assert upcast.schema_version == 2
    assert stored.payload == {"items": [{"name": "sword"}]}
    with pytest.raises(TypeError, match="immutable"):
        upcast.payload["items"].append({})
