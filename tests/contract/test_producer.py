"""EventProducer on every store backend: validation, group commit, one answer per caller.

Groups are formed deterministically where a test depends on them: the committer is held
inside one append (`SpyStore.hold`) while the test queues the requests it wants grouped, so
they all wait in the queue and go in the committer's next transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from pydantic import BaseModel

from eventstore import (
    ConcurrencyError,
    DuplicateEventError,
    Event,
    EventStore,
    EventStoreError,
    EventValidationError,
    MigrationError,
    StoreUnavailableError,
)
from eventstore.errors import ConfigurationError, ImmutableEventError, StoreBusyError
from eventstore.producer import Change, EventProducer, OutcomeUnknownError
from eventstore.versioning import PayloadSchemas
from tests.contract.test_store_contract import all_events
from tests.helpers import event, history, wait_for

# Tests of the producer's own timing run on one backend: the store's part is the same.
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


class SpyStore:
    """The real store, recording the events of each append transaction. `hold()` makes the
    next append wait until `let_go()`; `fail_next(...)` makes the next appends raise those
    errors; `refuse(aggregate_id, error)` makes every append touching it raise `error`."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self.calls: list[list[Event]] = []
        self.holding = threading.Event()
        self._release = threading.Event()
        self._hold_next = False
        self._failures: list[EventStoreError] = []
        self._lost_answers: list[EventStoreError] = []
        self._refused: dict[str, EventStoreError] = {}

    def append_events(self, events: Sequence[Event]) -> list[int]:
        self.calls.append(list(events))
        if self._failures:
            raise self._failures.pop(0)
        if self._lost_answers:  # the append commits, and then its answer is lost
            self._store.append_events(events)
            raise self._lost_answers.pop(0)
        refused = [self._refused[e.aggregate_id] for e in events if e.aggregate_id in self._refused]
        if refused:
            raise refused[0]
        if self._hold_next:
            self._hold_next = False
            self.holding.set()
            assert self._release.wait(30), "the test never let the held append go"
        return self._store.append_events(events)

    def hold(self) -> None:
        self._release.clear()
        self.holding.clear()
        self._hold_next = True

    def let_go(self) -> None:
        self._release.set()

    def fail_next(self, *errors: EventStoreError) -> None:
        self._failures.extend(errors)

    def lose_next_answer(self, error: EventStoreError) -> None:
        """The next append commits, then raises `error` (a connection lost after COMMIT)."""
        self._lost_answers.append(error)

    def refuse(self, aggregate_id: str, error: EventStoreError) -> None:
        self._refused[aggregate_id] = error

    def aggregates(self, call: int) -> list[str]:
        """The aggregates of the events of one append, in order."""
        return [e.aggregate_id for e in self.calls[call]]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class Call:
    """Runs `fn(*args)` in a thread of its own; `outcome()` is its result or its exception."""

    def __init__(self, fn: Callable[..., object], *args: object) -> None:
        self._outcome: object = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., object], args: tuple[object, ...]) -> None:
        try:
            self._outcome = fn(*args)
        except BaseException as error:
            self._outcome = error

    def outcome(self, timeout: float = 30) -> object:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the call did not return within {timeout}s"
        return self._outcome


def publish_in_one_group(
    producer: EventProducer, spy: SpyStore, batches: dict[str, list[Event]]
) -> dict[str, object]:
    """Publish each batch from a thread of its own, in order, while the committer is held
    inside another append; all of them wait in the queue, so they form the committer's next
    group (`spy.calls[1]`, after the held append). Returns each answer (positions or error)."""
    spy.hold()
    warm_up = Call(producer.publish, event("warm-up", 1))
    wait_for(spy.holding.is_set, "the committer to enter its append")
    calls: dict[str, Call] = {}
    for name, events in batches.items():
        calls[name] = Call(producer.publish_many, events)
        wait_for(lambda: producer.queued == len(calls), f"{name} to be queued")
    spy.let_go()
    assert isinstance(warm_up.outcome(), int)
    return {name: call.outcome() for name, call in calls.items()}


def schemas(strict: bool = False) -> PayloadSchemas:
    registry = PayloadSchemas(strict=strict)

    @registry.register("PlayerMoved", version=1)
    class PlayerMoved(BaseModel):
        x: int
        y: int

    return registry


# -- storing and grouping -------------------------------------------------------------------


def test_published_events_are_stored_and_queued_for_kafka(store: EventStore) -> None:
    with EventProducer(store, schemas=schemas()) as producer:
        first = producer.publish(event("p", 1))
        rest = producer.publish_many([event("p", 2), event("q", 1)])
    assert [e.position for e in all_events(store)] == [first, *rest]
    assert [e.position for e in store.outbox_batch(10)] == [first, *rest]


def test_32_threads_share_transactions_and_each_gets_its_own_answer(store: EventStore) -> None:
    spy = SpyStore(store)
    producer = EventProducer(spy, max_batch=200)
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
    assert len(spy.calls) < len(outcomes), "concurrent publishes must share transactions"
    assert max(len(c) for c in spy.calls) > 1


def test_a_conflicting_request_fails_alone_and_its_group_commits(store: EventStore) -> None:
    store.append_event(event("taken", 1))
    spy = SpyStore(store)
    with EventProducer(spy) as producer:
        answers = publish_in_one_group(
            producer,
            spy,
            {"ok-1": [event("a", 1)], "conflict": [event("taken", 1)], "ok-2": [event("b", 1)]},
        )
    assert isinstance(answers["conflict"], ConcurrencyError)
    assert answers["conflict"].aggregate_id == "taken"
    assert isinstance(answers["ok-1"], list) and isinstance(answers["ok-2"], list)
    # The three went as one transaction, which failed on the conflict; the other two then
    # went together, without it.
    assert [spy.aggregates(c) for c in (1, 2)] == [["a", "taken", "b"], ["a", "b"]]
    assert len(spy.calls) == 3
    assert {e.aggregate_id for e in all_events(store)} == {"warm-up", "taken", "a", "b"}


def test_resends_in_a_group_get_their_stored_positions(store: EventStore) -> None:
    sent = event("p", 1)
    [position] = store.append_events([sent])
    spy = SpyStore(store)
    changed = event("r", 1)
    store.append_event(changed)
    with EventProducer(spy) as producer:
        answers = publish_in_one_group(
            producer,
            spy,
            {
                "resend": [sent],
                "new": [event("q", 1)],
                "changed": [changed.model_copy(update={"payload": {"x": 9, "y": 9}})],
            },
        )
    assert spy.aggregates(1) == ["p", "q", "r"], "the three were grouped"
    assert answers["resend"] == [position]
    assert isinstance(answers["new"], list)
    assert isinstance(answers["changed"], DuplicateEventError)
    assert [e.aggregate_id for e in all_events(store)] == ["p", "r", "warm-up", "q"]


def test_a_group_retried_after_its_commit_was_lost_gets_the_stored_positions(
    store: EventStore,
) -> None:
    """The connection drops after COMMIT: the producer cannot know, retries the group, and the
    retry is an idempotent resend: each caller gets the positions stored the first time."""
    spy = SpyStore(store)
    with EventProducer(spy) as producer:
        spy.hold()
        warm_up = Call(producer.publish, event("warm-up", 1))
        wait_for(spy.holding.is_set, "the committer to enter its append")
        spy.lose_next_answer(StoreUnavailableError("the connection was lost after COMMIT"))
        calls = [Call(producer.publish, event(name, 1)) for name in ("a", "b")]
        wait_for(lambda: producer.queued == 2, "both requests to be queued")
        spy.let_go()
        answers = [warm_up.outcome(), *(call.outcome() for call in calls)]
    assert all(isinstance(a, int) for a in answers), answers
    assert [spy.aggregates(c) for c in (1, 2)] == [["a", "b"]] * 2, "retried as a group"
    stored = all_events(store)
    assert len(stored) == 3, "written once"
    assert answers[1:] == [e.position for e in stored if e.aggregate_id in ("a", "b")]


@sqlite_only
def test_linger_keeps_a_group_open_for_requests_that_come_later(store: EventStore) -> None:
    spy = SpyStore(store)
    with EventProducer(spy, linger=3.0) as producer:
        calls: list[Call] = []
        for name in ("a", "b", "c"):
            calls.append(Call(producer.publish, event(name, 1)))
            wait_for(lambda: producer.queued == len(calls), f"{name} to be queued")
            # The spacing is what this test is about (requests that arrive while a group
            # lingers), not a synchronisation: each request waits to be queued above.
            time.sleep(0.05)
        assert all(isinstance(call.outcome(), int) for call in calls)
    assert [len(c) for c in spy.calls] == [3], "three requests within the linger: one group"


@sqlite_only
def test_linger_runs_from_a_groups_first_request(store: EventStore) -> None:
    """Requests that keep coming do not hold a group open past its first request's linger:
    10 requests 0.2 s apart, with linger 0.5 s, cannot all be in one group."""
    spy = SpyStore(store)
    with EventProducer(spy, linger=0.5) as producer:
        calls = []
        for n in range(10):
            calls.append(Call(producer.publish, event(f"p{n}", 1)))
            time.sleep(0.2)  # the arrival rate under test
        assert all(isinstance(call.outcome(), int) for call in calls)
    assert len(spy.calls) >= 2 and sum(len(c) for c in spy.calls) == 10


@sqlite_only
def test_a_group_goes_without_waiting_once_max_batch_events_are_queued(
    store: EventStore,
) -> None:
    spy = SpyStore(store)
    with EventProducer(spy, linger=600, max_batch=4) as producer:
        first = Call(producer.publish_many, history("a", 2))
        wait_for(lambda: producer.queued == 1, "the first request to be queued")
        second = Call(producer.publish_many, history("b", 2))
        # Two requests, four events: the batch is full, the linger of 600 s is cut short.
        assert isinstance(first.outcome(timeout=20), list)
        assert isinstance(second.outcome(timeout=20), list)
    assert [len(c) for c in spy.calls] == [4]


def test_a_group_holds_at_most_max_batch_events(store: EventStore) -> None:
    spy = SpyStore(store)
    with EventProducer(spy, max_batch=5) as producer:
        answers = publish_in_one_group(
            producer, spy, {name: history(name, 2) for name in ("a", "b", "c", "d")}
        )
    assert all(isinstance(a, list) for a in answers.values())
    assert [len(c) for c in spy.calls[1:]] == [4, 4], "5 events: two requests of 2 per group"


# -- failures -------------------------------------------------------------------------------


def test_a_failure_while_grouping_answers_the_callers_and_the_producer_goes_on(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = EventProducer(store)
    failures = [RuntimeError("a bug in grouping")]
    take_group = producer._requests.take_group

    def broken() -> Any:
        if failures:
            raise failures.pop()
        return take_group()

    monkeypatch.setattr(producer._requests, "take_group", broken)
    answer = Call(producer.publish, event("p", 1)).outcome()
    assert isinstance(answer, EventStoreError) and "send them again" in str(answer)
    assert isinstance(answer.__cause__, RuntimeError)
    assert all_events(store) == []
    position = producer.publish(event("p", 1))  # the committer is still serving
    producer.close()
    assert [e.position for e in all_events(store)] == [position]


def test_a_caller_waits_at_most_its_timeout_then_hears_the_outcome_is_unknown(
    store: EventStore,
) -> None:
    spy = SpyStore(store)
    sent = event("p", 1)
    spy.hold()
    producer = EventProducer(spy, timeout=0.5)
    with pytest.raises(OutcomeUnknownError) as caught:
        producer.publish(sent)
    assert caught.value.retriable and "resending the same events" in str(caught.value)
    spy.let_go()  # the transaction goes on and commits after all
    producer.close()
    [stored] = all_events(store)
    with EventProducer(store) as again:
        assert again.publish(sent) == stored.position, "the resend is safe"
    assert len(all_events(store)) == 1


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), 10**9])
def test_a_timeout_that_cannot_be_waited_is_refused_before_anything_is_stored(
    store: EventStore, timeout: float
) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        EventProducer(store, timeout=timeout)
    with EventProducer(store) as producer:
        with pytest.raises(ConfigurationError, match="timeout"):
            producer.publish(event("p", 1), timeout=timeout)
        assert all_events(store) == []
        assert producer.publish(event("p", 1)) > 0  # and the producer goes on


def test_a_retriable_error_is_retried_for_the_whole_group(store: EventStore) -> None:
    spy = SpyStore(store)
    busy = StoreBusyError("serialization failures kept recurring")
    down = StoreUnavailableError("the connection was lost")
    with EventProducer(spy) as producer:
        spy.hold()
        warm_up = Call(producer.publish, event("warm-up", 1))
        wait_for(spy.holding.is_set, "the committer to enter its append")
        spy.fail_next(busy, down)  # the next two appends: the group's
        calls = [Call(producer.publish, event(name, 1)) for name in ("a", "b")]
        wait_for(lambda: producer.queued == 2, "both requests to be queued")
        spy.let_go()
        answers = [warm_up.outcome(), *(call.outcome() for call in calls)]
    assert all(isinstance(a, int) for a in answers), answers
    assert [spy.aggregates(c) for c in range(1, 4)] == [["a", "b"]] * 3, "retried as a group"
    assert len(all_events(store)) == 3


@sqlite_only
def test_retriable_errors_fail_the_callers_once_the_retry_timeout_is_over(
    store: EventStore,
) -> None:
    spy = SpyStore(store)
    spy.refuse("p", StoreUnavailableError("the database is down"))
    with (
        EventProducer(spy, retry_timeout=0.5) as producer,
        pytest.raises(StoreUnavailableError),
    ):
        producer.publish(event("p", 1))
    assert len(spy.calls) > 2, "retried before giving up"
    assert all_events(store) == []


def test_an_error_that_is_not_retriable_is_never_retried(store: EventStore) -> None:
    spy = SpyStore(store)
    spy.fail_next(MigrationError("the event store tables are missing"))
    with EventProducer(spy) as producer, pytest.raises(MigrationError):
        producer.publish(event("p", 1))
    assert len(spy.calls) == 1


def test_an_error_that_is_not_retriable_fails_only_the_requests_it_concerns(
    store: EventStore,
) -> None:
    spy = SpyStore(store)
    refused = ImmutableEventError("refused by a trigger")
    spy.refuse("poison", refused)
    with EventProducer(spy) as producer:
        answers = publish_in_one_group(
            producer,
            spy,
            {"a": [event("a", 1)], "poison": [event("poison", 1)], "b": [event("b", 1)]},
        )
    assert answers["poison"] is refused
    assert isinstance(answers["a"], list) and isinstance(answers["b"], list)
    # The group failed as a whole, then each request went alone.
    assert [spy.aggregates(c) for c in range(1, 5)] == [
        ["a", "poison", "b"],
        ["a"],
        ["poison"],
        ["b"],
    ]
    assert {e.aggregate_id for e in all_events(store)} == {"warm-up", "a", "b"}


# -- validation and the update loop ---------------------------------------------------------


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
    spy = SpyStore(store)
    with (
        EventProducer(spy, schemas=schemas(strict=True)) as producer,
        pytest.raises(EventValidationError) as caught,
    ):
        producer.publish_many([event("ok", 1), bad])
    assert caught.value.field == field and rule in caught.value.rule
    assert spy.calls == [], "refused before reaching the store"
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
    assert [e.version for e in store.get_events_by_aggregate("p")] == [1, 2]
