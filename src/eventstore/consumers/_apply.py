"""Applying a batch of events to a projection's read model, exactly once per event.

Each batch is one transaction of the store that writes the documents, the per-aggregate
checkpoints (the last version applied) and any failure records together. For every event:

- its version <= the aggregate's checkpoint: applied already (a re-send, a redelivery after
  a rebalance or a crash before the offsets were committed): skipped;
- its version > checkpoint + 1: the versions in between never reached this runner (a record
  deleted from the topic, a consumer started past it, the global log's catch-up handing over
  to Kafka): they are read from the store and applied first, in the same transaction;
- otherwise the handler runs.

The checkpoint rows are locked for the transaction (see the backends), so two runners that
both hold one aggregate's events (a partition handed over mid-batch) apply each version once:
the second waits for the first, then skips what it wrote. Sources and offsets are only hints
of what to look at; the checkpoints decide what is applied.

A handler that raises is the projection's policy's business: `park` holds the event and every
later version of its aggregate (recorded in the store, sent to the dead-letter topic, other
aggregates go on), `skip` records and passes it, `stop` raises. Either way the batch runs
again without the failed handler's partial writes: the transaction is rolled back and
replayed with the decision made, so a handler never leaves half an event behind. A handler
error that says retrying may help (`retriable`, such as the database being down) is not the
event's fault: it propagates, nothing is committed, and the runner backs off and retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from eventstore.consumers._dlq import DeadLetter, DeadLetterSink, NoDeadLetterTopic, event_letter
from eventstore.consumers._documents import Documents
from eventstore.consumers._projection import Projection
from eventstore.errors import EventStoreError, HandlerError, ProjectionError
from eventstore.events import Event
from eventstore.store import (
    AggregateStore,
    EventLog,
    LogMonitor,
    ProjectionFailure,
    ReadModels,
    ReadModelTransaction,
)

log = logging.getLogger(__name__)


class ProjectionStore(AggregateStore, EventLog, LogMonitor, ReadModels, Protocol):
    """What projections need of a store: one aggregate's history (to fill gaps), the global
    log (to catch up and rebuild), its horizon (lag) and read models."""


Extra = Callable[[ReadModelTransaction], Sequence[Event]]
"""Events to apply that only the batch's transaction can find (a rebuild's last catch-up)."""
Finish = Callable[[ReadModelTransaction], None]


@dataclass
class BatchResult:
    """What one batch did."""

    applied: int = 0
    """Events whose checkpoint advanced (handled, or of a type the projection ignores)."""
    duplicates: int = 0
    filled: int = 0
    """Events read from the store to fill gaps."""
    parked: list[ProjectionFailure] = field(default_factory=list)
    skipped: list[ProjectionFailure] = field(default_factory=list)
    held: int = 0
    """Events waiting behind a parked event of their aggregate."""
    dead_lettered: int = 0
    handler_errors: int = 0
    generation: int = 0


class _Poisoned(Exception):
    def __init__(self, error: HandlerError) -> None:
        self.error = error


class Applier:
    """Applies batches of one projection to its read model (see the module's comment)."""

    def __init__(
        self,
        store: ProjectionStore,
        projection: Projection,
        *,
        dead_letters: DeadLetterSink | None = None,
    ) -> None:
        self.store = store
        self.projection = projection
        self.dead_letters = dead_letters or NoDeadLetterTopic()

    def apply(
        self,
        events: Sequence[Event],
        *,
        generation: int | None = None,
        position: int | None = None,
        undecodable: Sequence[DeadLetter] = (),
        retry: Collection[str] = (),
        reset: Collection[str] = (),
        exclusive: bool = False,
        extra: Extra | None = None,
        finish: Finish | None = None,
    ) -> BatchResult:
        """Apply `events` (decoded and upcast, in each aggregate's version order) in one
        transaction on `generation` (default: the active one).

        `position`: how far the source read the global log (the store tail and rebuilds
        record it). `retry`: parked aggregates to release (their events must be among
        `events`). `reset`: aggregates to forget first (checkpoint, failures, and their
        documents through the projection's `reset`). `exclusive`, `extra`, `finish`: a
        rebuild's switch (the row locked FOR UPDATE, events found inside the transaction,
        then the switch itself).
        """
        decisions: dict[tuple[str, int], HandlerError] = {}
        plan = _Plan(events, generation, position, undecodable, retry, reset, exclusive, extra)
        while True:
            try:
                return self._attempt(plan, decisions, finish)
            except _Poisoned as poisoned:
                error = poisoned.error
                if self.projection.on_error == "stop":
                    self._note_stop(error, generation)
                    raise error from None
                log.warning("%s (%s)", error, self.projection.on_error)
                decisions[(error.aggregate_id, error.version)] = error

    def _note_stop(self, error: HandlerError, generation: int | None) -> None:
        try:
            with self.store.projection_transaction(self.projection.name, generation) as tx:
                tx.note(error=str(error))
        except EventStoreError:
            log.exception("could not record the error of projection %s", self.projection.name)

    def _attempt(
        self,
        plan: _Plan,
        decisions: dict[tuple[str, int], HandlerError],
        finish: Finish | None,
    ) -> BatchResult:
        projection = self.projection
        generation, position = plan.generation, plan.position
        with self.store.projection_transaction(
            projection.name, generation, exclusive=plan.exclusive
        ) as tx:
            events = [*plan.events, *(plan.extra(tx) if plan.extra else ())]
            tracked = [e for e in events if projection.tracks(e)]
            aggregates = list(dict.fromkeys(e.aggregate_id for e in tracked))
            if generation is None and tx.version != projection.version:
                raise ProjectionError(
                    f"projection {projection.name!r}: the active read model was built by "
                    f"version {tx.version}, this code is version {projection.version}; run the "
                    "code of that version, or rebuild (`eventstore projections rebuild "
                    f"{projection.name}`)"
                )
            batch = _Batch(self, tx, decisions)
            for aggregate in plan.reset:
                tx.reset_aggregate(aggregate)
                if projection.reset is not None:
                    projection.reset(aggregate, batch.documents)
                else:
                    batch.documents.delete(aggregate)
            batch.checkpoints = tx.lock_checkpoints(aggregates)
            batch.parked = tx.parked(aggregates)
            for aggregate in plan.retry:
                if batch.parked.pop(aggregate, None) is not None:
                    tx.clear_parked(aggregate)
            batch.documents.prefetch(aggregates)
            for event in tracked:
                batch.step(event)
            batch.documents.flush()
            tx.save_checkpoints(batch.changed)
            if position is not None:
                tx.set_position(position)
            letters = [*plan.undecodable, *batch.letters]
            if letters:
                self.dead_letters.send(projection.name, letters)
            failures = batch.result.parked + batch.result.skipped
            tx.note(
                dead_lettered=len(letters),
                error=_describe(failures[-1]) if failures else None,
            )
            if finish is not None:
                finish(tx)
            batch.result.dead_lettered = len(letters)
            batch.result.generation = tx.generation
            return batch.result


@dataclass(frozen=True)
class _Plan:
    events: Sequence[Event]
    generation: int | None
    position: int | None
    undecodable: Sequence[DeadLetter]
    retry: Collection[str]
    reset: Collection[str]
    exclusive: bool
    extra: Extra | None


def _describe(failure: ProjectionFailure) -> str:
    return (
        f"{failure.policy} {failure.aggregate_id} v{failure.version}: "
        f"{failure.error_type}: {failure.message}"
    )


class _Batch:
    """The state of one attempt at a batch."""

    def __init__(
        self,
        applier: Applier,
        tx: ReadModelTransaction,
        decisions: dict[tuple[str, int], HandlerError],
    ) -> None:
        self.applier = applier
        self.projection = applier.projection
        self.tx = tx
        self.decisions = decisions
        self.documents = Documents(tx)
        self.checkpoints: dict[str, int] = {}
        self.parked: dict[str, ProjectionFailure] = {}
        self.changed: dict[str, tuple[int, int]] = {}
        self.letters: list[DeadLetter] = []
        self.result = BatchResult()

    def step(self, event: Event) -> None:
        aggregate = event.aggregate_id
        if aggregate in self.parked:
            self._hold(event)
            return
        checkpoint = self.checkpoints.get(aggregate, 0)
        if event.version <= checkpoint:
            self.result.duplicates += 1
            return
        if event.version > checkpoint + 1:
            self._fill(aggregate, checkpoint, event.version)
            if aggregate in self.parked:
                self._hold(event)
                return
            if self.checkpoints.get(aggregate, 0) != event.version - 1:
                # The store lacks the versions before this one: the record did not come from
                # this store (another database's relay, a hand-made record). Not applied.
                self.letters.append(
                    event_letter(
                        self.projection.name,
                        event,
                        policy="unknown",
                        error_type="NotInStore",
                        message=f"the store has no version {event.version - 1} of aggregate "
                        f"{aggregate!r}: this record does not come from this store",
                    )
                )
                return
        self._apply(event)

    def _fill(self, aggregate: str, checkpoint: int, before: int) -> None:
        missing: Iterable[Event] = self.applier.store.get_events_by_aggregate(
            aggregate, checkpoint + 1
        )
        for event in missing:
            if event.version >= before or aggregate in self.parked:
                break
            self.result.filled += 1
            self._apply(event)

    def _apply(self, event: Event) -> None:
        key = (event.aggregate_id, event.version)
        decided = self.decisions.get(key)
        if decided is None:
            handler = self.projection.handler_for(event.event_type)
            if handler is not None:
                try:
                    handler(event, self.documents)
                except EventStoreError as error:
                    if error.retriable:
                        raise
                    raise _Poisoned(self._error(event, error)) from error
                except Exception as error:
                    # SQL the handler ran itself: a deadlock or a lost connection is the
                    # database's moment, not the event's fault.
                    translated = self.tx.translate(error)
                    if translated is not None and translated.retriable:
                        raise translated from error
                    raise _Poisoned(self._error(event, error)) from error
        else:
            self.result.handler_errors += 1
            failure = ProjectionFailure(
                aggregate_id=event.aggregate_id,
                version=event.version,
                event_id=event.id,
                position=event.position or 0,
                event_type=event.event_type,
                policy=self.projection.on_error,
                error_type=decided.error_type,
                message=decided.error_message,
                failed_at=datetime.now(UTC),
                held_version=event.version,
            )
            self.tx.record_failure(failure)
            self.letters.append(
                event_letter(
                    self.projection.name,
                    event,
                    policy=failure.policy,
                    error_type=failure.error_type,
                    message=failure.message,
                )
            )
            if failure.policy == "park":
                self.parked[event.aggregate_id] = failure
                self.result.parked.append(failure)
                return
            self.result.skipped.append(failure)
        self.checkpoints[event.aggregate_id] = event.version
        self.changed[event.aggregate_id] = (event.version, event.position or 0)
        self.result.applied += 1

    def _hold(self, event: Event) -> None:
        """An event behind a parked one of its aggregate: it waits (and is dead-lettered
        once, in order, so the topic shows everything that waits)."""
        failure = self.parked[event.aggregate_id]
        if event.version <= failure.held_version:
            self.result.duplicates += 1
            return
        self.tx.hold(event.aggregate_id, event.version)
        self.parked[event.aggregate_id] = failure._replace(held_version=event.version)
        self.result.held += 1
        self.letters.append(
            event_letter(
                self.projection.name,
                event,
                policy="held",
                error_type="ParkedAggregate",
                message=f"waits behind version {failure.version}, parked: {failure.message}",
            )
        )

    def _error(self, event: Event, error: BaseException) -> HandlerError:
        return HandlerError(
            self.projection.name, event.id, event.aggregate_id, event.version, error
        )
