"""Catching up from the global log, rebuilding a read model by generations, and retrying
parked aggregates: everything that reads the store's history rather than a live source."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from eventstore.consumers._apply import Applier, BatchResult, ProjectionStore
from eventstore.consumers._projection import Projection
from eventstore.consumers._retry import retrying
from eventstore.errors import EventStoreError, ProjectionError
from eventstore.events import Event
from eventstore.store import LogHorizon, ReadModelTransaction

log = logging.getLogger(__name__)
T = TypeVar("T")

Progress = Callable[[int, int, int], None]
"""`progress(events_done, span_done, span_total)`: called after every batch; the spans are
of positions (not dense on PostgreSQL: a share of the log, not a count of events)."""

CATCH_UP_BATCH = 1000
_SMALL_ENOUGH = 500  # aggregates behind the live generation: few enough to finish under lock
_ROUNDS = 5


@dataclass
class CatchUpResult:
    events: int = 0
    position: int = 0
    parked: int = 0
    skipped: int = 0
    unread_since: datetime | None = None
    """When the catch-up ended, every stored event it did not read lay behind the log's
    horizon, and none of those was recorded before this moment (None: none was unread)."""


def catch_up(
    applier: Applier,
    *,
    generation: int | None,
    after: int,
    batch_size: int = CATCH_UP_BATCH,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> CatchUpResult:
    """Apply the global log from `after` up to its readable end, batch by batch, recording the
    position reached in each batch's transaction (a restart resumes there).

    The end is confirmed by a read that comes after a measure of the horizon: what that read
    did not return was behind a horizon at least as far as the one measured, so the age the
    measure gives (`unread_since`) bounds every event the catch-up left to the live source.
    Measured after the last read instead, a transaction that ended in between would make it
    look as if nothing had been left behind."""
    store = applier.store
    name = applier.projection.name
    head = _head(store, stop, name)
    result = CatchUpResult(position=after)
    first: int | None = None
    measured: LogHorizon | None = None
    measured_at = datetime.now(UTC)

    def read(after_position: int) -> list[Event] | None:
        return retrying(
            partial(store.read_all, after_position, batch_size),
            stop,
            what=f"{name}: reading the log",
        )

    # The next page is read while this one is applied (one page ahead, in a thread).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"catch-up-{name}") as reader:
        pending = reader.submit(read, result.position)
        while stop is None or not stop.is_set():
            page = pending.result()
            if page is None:
                break
            if not page:
                if measured is not None:
                    if measured.events_behind:
                        result.unread_since = measured_at - timedelta(seconds=measured.lag_seconds)
                    break
                measured_at = datetime.now(UTC)
                measured = retrying(store.log_horizon, stop, what=f"{name}: reading the horizon")
                pending = reader.submit(read, result.position)
                continue
            measured = None
            position = page[-1].position or result.position
            pending = reader.submit(read, position)
            done = retrying(
                partial(applier.apply, page, generation=generation, position=position),
                stop,
                what=f"projection {name}",
            )
            if done is None:
                break
            _count(result, done, len(page))
            result.position = position
            if first is None:
                first = (page[0].position or position) - 1
            if position > head:
                head = _head(store, stop, name)
            if progress is not None:
                progress(result.events, position - first, max(head, position) - first)
    return result


def _head(store: ProjectionStore, stop: threading.Event | None, name: str) -> int:
    horizon = retrying(store.log_horizon, stop, what=f"{name}: reading the log's head")
    return horizon.head if horizon is not None else 0


def _count(result: CatchUpResult, done: BatchResult, events: int) -> None:
    result.events += events
    result.parked += len(done.parked)
    result.skipped += len(done.skipped)


def _events_up_to(
    store: ProjectionStore, targets: dict[str, int], since: dict[str, int]
) -> list[Event]:
    """Each aggregate's events after `since` up to its target version, from the store."""
    found: list[Event] = []
    for aggregate, target in sorted(targets.items()):
        for event in store.get_events_by_aggregate(aggregate, since.get(aggregate, 0) + 1):
            if event.version > target:
                break
            found.append(event)
    return found


def _behind(
    store: ProjectionStore, name: str, generation: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Aggregates the active generation holds further than `generation` (with their
    checkpoints there), and `generation`'s checkpoints of them."""
    with store.projection_transaction(name, generation) as tx:
        active = store.projection_record(name)
        assert active is not None
        behind = tx.behind(active.active_generation)
        since = tx.lock_checkpoints(list(behind)) if behind else {}
    return behind, since


def _retry(call: Callable[[], T], stop: threading.Event | None, name: str) -> T:
    done = retrying(call, stop, what=f"rebuild {name}")
    if done is None:
        raise ProjectionError(f"projection {name!r}: rebuild interrupted; nothing switched")
    return done


def rebuild(
    store: ProjectionStore,
    projection: Projection,
    applier: Applier,
    *,
    batch_size: int = CATCH_UP_BATCH,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Build a new generation of the read model from the store while the active one keeps
    serving readers and live runners, then switch readers to it in one transaction and drop
    the old one. Returns the new generation.

    The hand-over: the new generation first reads the global log up to its readable end.
    Live runners meanwhile go on changing the active generation, and some of what they
    applied may lie beyond the log's horizon (a long transaction holds it back). So before
    switching, every aggregate whose checkpoint in the active generation is ahead of the new
    one is caught up from its own history (which the horizon never hides), first outside any
    lock while many are behind, then inside the switch's transaction, which holds the
    projection's row FOR UPDATE: live batches wait, and none can advance the old generation
    between the last check and the switch. After the switch, live runners apply to the new
    generation, whose checkpoints skip what it already holds and fill what it lacks.

    A second rebuild fences the first out (its next batch raises `FencedError`), and a switch
    only happens if this generation is still the one being built.
    """
    name = projection.name
    generation = retrying(
        lambda: store.begin_generation(name, projection.version), stop, what=f"rebuild {name}"
    )
    if generation is None:
        raise ProjectionError(f"projection {name!r}: rebuild interrupted; nothing switched")
    log.info("projection %s: building generation %d", name, generation)
    try:
        reached = catch_up(
            applier,
            generation=generation,
            after=0,
            batch_size=batch_size,
            progress=progress,
            stop=stop,
        )
        if stop is not None and stop.is_set():
            raise ProjectionError(f"projection {name!r}: rebuild interrupted; nothing switched")
        # A few rounds outside the lock while many aggregates are behind (aggregates parked in
        # the new generation stay behind: the rounds are bounded, the switch copes with them).
        for _ in range(_ROUNDS):
            behind, since = _retry(lambda: _behind(store, name, generation), stop, name)
            if len(behind) <= _SMALL_ENOUGH:
                break
            events = _retry(partial(_events_up_to, store, behind, since), stop, name)
            _retry(partial(applier.apply, events, generation=generation), stop, name)
        catch_up(
            applier, generation=generation, after=reached.position, batch_size=batch_size, stop=stop
        )

        def last_catch_up(tx: ReadModelTransaction) -> list[Event]:
            record = store.projection_record(name)
            assert record is not None
            behind = tx.behind(record.active_generation)
            since = tx.lock_checkpoints(list(behind)) if behind else {}
            return _events_up_to(store, behind, since)

        dropped: list[int] = []
        _retry(
            lambda: applier.apply(
                [],
                generation=generation,
                exclusive=True,
                extra=last_catch_up,
                finish=lambda tx: dropped.append(tx.switch()),
            ),
            stop,
            name,
        )
    except BaseException:
        with contextlib.suppress(EventStoreError):  # an abandoned generation is fenced anyway
            store.drop_generation(name, generation)
        raise
    if dropped:
        retrying(lambda: store.drop_generation(name, dropped[0]), stop, what=f"rebuild {name}")
    log.info("projection %s: generation %d is active", name, generation)
    return generation


def _history_after_lock(
    store: ProjectionStore, aggregate_id: str, *, from_start: bool
) -> Callable[[ReadModelTransaction], list[Event]]:
    """Reads an aggregate's events inside the batch's transaction, once its checkpoint row is
    locked: a live batch of the same aggregate then waits for this one, so no version can be
    applied between the read and the commit (read before the transaction, a version applied
    live meanwhile would be lost, or reset away)."""

    def read(tx: ReadModelTransaction) -> list[Event]:
        checkpoint = tx.lock_checkpoints([aggregate_id]).get(aggregate_id, 0)
        start = 1 if from_start else checkpoint + 1
        return list(store.get_events_by_aggregate(aggregate_id, start))

    return read


def rebuild_aggregate(
    store: ProjectionStore, projection: Projection, applier: Applier, aggregate_id: str
) -> BatchResult:
    """Re-apply one aggregate's whole history to the active generation, in one transaction:
    its checkpoint and failures are forgotten and its documents reset first by the
    projection's `reset` (a projection without one refuses: only it knows which documents
    one aggregate changed)."""
    if projection.reset is None:
        raise ProjectionError(
            f"projection {projection.name!r} has no reset: it cannot rebuild one aggregate "
            "alone (its documents may mix many); give Projection(reset=...) that undoes one "
            f"aggregate's effects, or rebuild it whole: eventstore projections rebuild "
            f"{projection.name}"
        )
    if next(iter(store.get_events_by_aggregate(aggregate_id)), None) is None:
        raise ProjectionError(f"aggregate {aggregate_id!r} has no events in the store")
    return applier.apply(
        [], reset=[aggregate_id], extra=_history_after_lock(store, aggregate_id, from_start=True)
    )


def retry_parked(
    store: ProjectionStore,
    projection: Projection,
    applier: Applier,
    aggregate_id: str | None = None,
) -> list[tuple[str, BatchResult]]:
    """Re-apply parked aggregates from the store (after the handler was fixed): each one's
    events from its checkpoint on, read and applied in one transaction per aggregate. One
    that fails again is parked again at the version that failed."""
    results: list[tuple[str, BatchResult]] = []
    while True:
        parked = store.projection_failures(
            projection.name, policy="park", aggregate_id=aggregate_id, limit=1000
        )
        parked = [f for f in parked if f.aggregate_id not in dict(results)]
        if not parked:
            break
        for failure in parked:
            read = _history_after_lock(store, failure.aggregate_id, from_start=False)
            results.append(
                (failure.aggregate_id, applier.apply([], retry=[failure.aggregate_id], extra=read))
            )
    if aggregate_id is not None and not results:
        raise ProjectionError(
            f"aggregate {aggregate_id!r} is not parked in projection {projection.name!r}; "
            f"`eventstore projections parked {projection.name}` lists those that are"
        )
    return results
