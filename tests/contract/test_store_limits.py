"""Limits and guarantees of the contract that every backend must hold (and that had no test)."""

from __future__ import annotations

import pytest

from eventstore import Event, EventStore, EventValidationError
from eventstore.events import MAX_METADATA_BYTES
from eventstore.store._checks import MAX_BATCH_SIZE
from tests.contract.test_store_contract import all_events
from tests.helpers import T0, event


def test_a_batch_of_the_maximum_size_is_stored_and_one_more_is_refused_whole(
    store: EventStore,
) -> None:
    batch = [event(f"a{n}", 1) for n in range(MAX_BATCH_SIZE + 1)]
    with pytest.raises(EventValidationError, match=f"at most {MAX_BATCH_SIZE} events"):
        store.append_events(batch)
    assert all_events(store) == []
    positions = store.append_events(batch[:MAX_BATCH_SIZE])
    assert len(positions) == MAX_BATCH_SIZE == len(set(positions))


def test_metadata_over_its_size_limit_is_refused() -> None:
    fields = {
        "id": "e-1",
        "event_type": "PlayerMoved",
        "aggregate_id": "p",
        "aggregate_type": "Player",
        "version": 1,
        "timestamp": T0,
        "payload": {},
    }
    filler = "x" * (MAX_METADATA_BYTES - len('{"note":""}'))
    Event(**fields, metadata={"note": filler})  # exactly at the limit: accepted
    with pytest.raises(EventValidationError, match="metadata") as caught:
        Event(**fields, metadata={"note": filler + "x"})
    assert "over the limit" in str(caught.value)


@pytest.mark.parametrize("wrong", [None, "abc", {"id": "x"}, 42, [None], [{"id": "x"}]])
def test_an_append_of_something_else_than_events_is_a_validation_error(
    store: EventStore, wrong: object
) -> None:
    with pytest.raises(EventValidationError, match="events"):
        store.append_events(wrong)  # type: ignore[arg-type]
    assert all_events(store) == []
