"""EventProducer on every store backend: validation, group commit, one answer per caller."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import BaseModel

from eventstore import (
    ConcurrencyError,
    DuplicateEventError,
    Event,
    EventStore,
    EventValidationError,
)
from eventstore.producer import Change, EventProducer
from eventstore.versioning import PayloadSchemas
from tests.contract.test_store_contract import all_events
from tests.helpers import event, history


class CountingStore:
    """The real store, counting its append transactions (to see groups form)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self.appends = 0
        self.events_per_append: list[int] = []

    def append_events(self, events: Sequence[Event]) -> list[int]:
        self.appends += 1
        self.events_per_append.append(len(events))
        return self._store.append_events(events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def schemas(strict: bool = False) -> PayloadSchemas:
    registry = PayloadSchemas(strict=strict)

    @registry.register("PlayerMoved", version=1)
    class PlayerMoved(BaseModel):
        x: int
        y: int

    return registry


def test_published_events_are_stored_and_queued_for_kafka(store: EventStore) -> None:
    with EventProducer(store, schemas=schemas()) as producer:
        first = producer.publish(event("p", 1))
        rest = producer.publish_many([event("p", 2), event("q", 1)])
    assert [e.position for e in all_events(store)] == [first, *rest]
    assert [e.position for e in store.outbox_batch(10)] == [first, *rest]


def test_32_threads_share_transactions_and_each_gets_its_own_answer(store: EventStore) -> None:
    counting = CountingStore(store)
    producer = EventProducer(counting, max_batch=200)
    threads_count, per_thread = 32, 15
    results: dict[int, list[object]] = {}
    barrier = threading.Barrier(threads_count)

    def work(worker: int) -> None:
        outcomes: list[object] = []
        barrier.wait()
        for version in range(1, per_thread + 1):
            try:
                outcomes.append(producer.publish(event(f"own-{worker}", version)))
            except Exception as error:  # recorded and checked below
                outcomes.append(error)
            if worker % 4 == 0:
                # Every fourth thread also tries to take a version another thread owns.
                try:
                    outcomes.append(producer.publish(event(f"own-{worker + 1}", version)))
                except Exception as error:
                    outcomes.append(error)
        results[worker] = outcomes

    threads = [threading.Thread(target=work, args=(w,)) for w in range(threads_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    producer.close()

    stored = all_events(store)
    by_aggregate: dict[str, list[int]] = {}
    for e in stored:
        by_aggregate.setdefault(e.aggregate_id, []).append(e.version)
    # Every aggregate has exactly versions 1..15, each stored once, whoever won them.
    assert sorted(by_aggregate) == sorted(f"own-{w}" for w in range(threads_count))
    assert all(v == list(range(1, per_thread + 1)) for v in by_aggregate.values())
    outcomes = [o for w in results.values() for o in w]
    wins = [o for o in outcomes if isinstance(o, int)]
    conflicts = [o for o in outcomes if isinstance(o, ConcurrencyError)]
    assert len(wins) == len(stored) == len(set(wins))
    assert len(wins) + len(conflicts) == len(outcomes), "every caller gets a position or a conflict"
    assert counting.appends < len(outcomes), "concurrent publishes must share transactions"
    assert max(counting.events_per_append) > 1


def test_a_conflicting_request_fails_alone_and_its_group_commits(store: EventStore) -> None:
    store.append_event(event("taken", 1))
    counting = CountingStore(store)
    producer = EventProducer(counting, linger=0.3, committers=1)
    answers: dict[str, object] = {}

    def send(name: str, e: Event) -> None:
        try:
            answers[name] = producer.publish(e)
        except Exception as error:
            answers[name] = error

    threads = [
        threading.Thread(target=send, args=("ok-1", event("a", 1))),
        threading.Thread(target=send, args=("conflict", event("taken", 1))),
        threading.Thread(target=send, args=("ok-2", event("b", 1))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    producer.close()
    assert isinstance(answers["conflict"], ConcurrencyError)
    assert isinstance(answers["ok-1"], int) and isinstance(answers["ok-2"], int)
    assert {e.aggregate_id for e in all_events(store)} == {"taken", "a", "b"}


def test_resends_in_a_group_get_their_stored_positions(store: EventStore) -> None:
    producer = EventProducer(store)
    sent = event("p", 1)
    position = producer.publish(sent)
    assert producer.publish(sent) == position
    with pytest.raises(DuplicateEventError):
        producer.publish(sent.model_copy(update={"payload": {"x": 9, "y": 9}}))
    producer.close()
    assert len(all_events(store)) == 1


@pytest.mark.parametrize(
    ("bad", "field", "rule"),
    [
        (event("p", 1, x="north", y=2), "payload.x", "PlayerMoved v1"),
        (event("p", 1, event_type="PlayerTeleported"), "event_type", "strict mode"),
        (event("p", 1).model_copy(update={"schema_version": 2}), "schema_version", "registered: 1"),
    ],
)
def test_bad_payloads_are_refused_before_anything_is_stored(
    store: EventStore, bad: Event, field: str, rule: str
) -> None:
    with (
        EventProducer(store, schemas=schemas(strict=True)) as producer,
        pytest.raises(EventValidationError) as caught,
    ):
        producer.publish_many([event("ok", 1), bad])
    assert caught.value.field == field and rule in caught.value.rule
    assert all_events(store) == [] and store.outbox_batch(10) == []


def test_update_reloads_and_decides_again_after_a_conflict(store: EventStore) -> None:
    store.append_events(history("p", 2))
    calls: list[int] = []

    def decide(events: list[Event]) -> list[Change]:
        calls.append(len(events))
        if len(calls) == 1:  # someone else appends while we decide
            store.append_event(event("p", 3))
        return [Change("PlayerMoved", {"x": len(events), "y": 0})]

    with EventProducer(store) as producer:
        [position] = producer.update("Player", "p", decide)
    assert calls == [2, 3]
    last = list(store.get_events_by_aggregate("p"))[-1]
    assert (last.version, last.payload, last.position) == (4, {"x": 3, "y": 0}, position)


def test_update_gives_up_after_its_attempts(store: EventStore) -> None:
    def always_late(events: list[Event]) -> list[Change]:
        store.append_event(event("p", len(events) + 1))
        return [Change("PlayerMoved", {"x": 0, "y": 0})]

    with EventProducer(store) as producer, pytest.raises(ConcurrencyError):
        producer.update("Player", "p", always_late, attempts=2)


def test_an_oversize_payload_is_refused_before_it_reaches_the_producer(store: EventStore) -> None:
    from eventstore.events import MAX_PAYLOAD_BYTES

    with pytest.raises(EventValidationError) as caught:
        Event.new(
            aggregate_type="Player",
            aggregate_id="p",
            event_type="PlayerMoved",
            version=1,
            payload={"blob": "x" * MAX_PAYLOAD_BYTES},
        )
    assert caught.value.field == "payload" and "over the limit" in caught.value.rule
    assert all_events(store) == [] and store.outbox_batch(10) == []
