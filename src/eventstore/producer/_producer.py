"""EventProducer: validate events, then store them (and their outbox rows) with group commit.

Publishing to Kafka is not done here: the store writes every event's outbox row in the same
transaction as the event, and the `OutboxRelay` publishes from the outbox after commit. So a
process that dies between "stored" and "published" loses nothing, and nothing is published
that was not stored.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from eventstore._closing import Closing
from eventstore.errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventStoreError,
    EventValidationError,
)
from eventstore.events import Event
from eventstore.store import EventStore, validate_batch
from eventstore.versioning import PayloadSchemas

log = logging.getLogger(__name__)


class Change(NamedTuple):
    """An event to be, as a decision returns it: the producer fills ids, versions and time."""

    event_type: str
    payload: Mapping[str, Any]
    schema_version: int = 1
    metadata: Mapping[str, Any] | None = None


class _Outcome:
    """A request's answer, handed from the committer to the waiting caller. A bare lock is
    the cheapest hand-off between threads in CPython (a Future costs a condition variable)."""

    __slots__ = ("_done", "_error", "_result")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._result: list[int] | None = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._result is not None or self._error is not None

    def set_result(self, result: list[int]) -> None:
        self._result = result
        self._done.release()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._done.release()

    def result(self) -> list[int]:
        self._done.acquire()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


@dataclass
class _Request:
    events: list[Event]
    future: _Outcome = field(default_factory=_Outcome)


class EventProducer(Closing):
    """Publishes events: validates them, then stores them through the store's atomic append.

    Group commit: concurrent callers of `publish` / `publish_many` (from any number of threads)
    are gathered into shared store transactions by `committers` committer threads: each takes
    what was queued while it was busy, up to `max_batch` events (waiting up to `linger`
    seconds for more when `linger` > 0). Several committers keep several transactions in
    flight, so PostgreSQL can flush their commits together. An aggregate is in at most one
    committer's transaction at a time, so each aggregate's requests commit in arrival order.
    (One committer is the default: measured on 2 cores, more committers cost more in thread
    hand-offs than they win in overlapping commits.)
    Each caller still gets its own result or its own error: a request that conflicts is
    failed alone and the rest of its group is committed.

    Each call of `publish_many` is atomic on its own (all its events or none).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        schemas: PayloadSchemas | None = None,
        max_batch: int = 1000,
        linger: float = 0.0,
        committers: int = 1,
    ) -> None:
        if max_batch < 1 or committers < 1:
            raise ValueError(
                f"max_batch and committers must be at least 1, not {max_batch}, {committers}"
            )
        self.store = store
        self.schemas = schemas or PayloadSchemas()
        self.max_batch = max_batch
        self.linger = linger
        self._queue: deque[_Request] = deque()
        self._in_flight: set[str] = set()  # aggregates in a committer's transaction now
        self._ready = threading.Condition()
        self._closed = False
        self._committers = [
            threading.Thread(target=self._run, name=f"eventstore-commit-{n}", daemon=True)
            for n in range(committers)
        ]
        for thread in self._committers:
            thread.start()
        # Waking the relay is a round trip of its own: a notifier thread does it, once for
        # however many groups committed since its last wake-up, off the committers' path.
        self._appended = threading.Event()
        self._notifier = threading.Thread(
            target=self._notify_loop, name="eventstore-notify", daemon=True
        )
        self._notifier.start()

    # -- publishing ---------------------------------------------------------------------------

    def publish(self, event: Event) -> int:
        """Validate and store one event; returns its position (see `publish_many`)."""
        return self.publish_many([event])[0]

    def publish_many(self, events: Sequence[Event]) -> list[int]:
        """Validate and store events atomically; returns their positions.

        Raises `EventValidationError` (payload schema, batch rules) before anything is
        stored, `ConcurrencyError` when a version is taken, `DuplicateEventError` for an id
        reused with other content; an exact resend returns the stored positions.
        """
        events = list(events)
        if not events:
            return []
        validate_batch(events)
        for event in events:
            self.schemas.check(event)
        request = _Request(events)
        with self._ready:
            if self._closed:
                raise EventStoreError("the producer is closed; create a new EventProducer")
            self._queue.append(request)
            self._ready.notify()
        return request.future.result()

    def update(
        self,
        aggregate_type: str,
        aggregate_id: str,
        decide: Callable[[list[Event]], Sequence[Change]],
        *,
        attempts: int = 3,
    ) -> list[int]:
        """The common loop: load the aggregate's history, `decide` what happens, append the
        changes with the next versions; on `ConcurrencyError`, reload and decide again, up to
        `attempts` times (then the last conflict is raised)."""
        for attempt in range(1, attempts + 1):
            history = list(self.store.get_events_by_aggregate(aggregate_id))
            version = history[-1].version if history else 0
            changes = decide(history)
            events = [
                Event.new(
                    aggregate_type=aggregate_type,
                    aggregate_id=aggregate_id,
                    event_type=change.event_type,
                    version=version + offset,
                    payload=change.payload,
                    metadata=change.metadata,
                    schema_version=change.schema_version,
                )
                for offset, change in enumerate(changes, start=1)
            ]
            try:
                return self.publish_many(events)
            except ConcurrencyError:
                if attempt == attempts:
                    raise
                log.debug(
                    "conflict on %s (attempt %d of %d), retrying", aggregate_id, attempt, attempts
                )
        raise AssertionError("unreachable")

    # -- the committer ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._ready:
                while True:
                    if self._queue and self.linger > 0 and len(self._queue) < self.max_batch:
                        self._ready.wait(self.linger)
                    group = self._take_group() if self._queue else []
                    if group:
                        break
                    if self._closed and not self._queue:
                        return
                    self._ready.wait()
            try:
                self._commit(group)
            except BaseException as error:  # a bug here must fail callers, not strand them
                log.exception("group commit failed unexpectedly")
                _fail(group, error)
            finally:
                with self._ready:
                    for request in group:
                        self._in_flight.difference_update(e.aggregate_id for e in request.events)
                    self._ready.notify_all()

    def _take_group(self) -> list[_Request]:
        """Requests that can share one atomic append, in arrival order.

        A request joins unless it would break the batch rules (an aggregate's versions must
        follow each other, an id may appear once); then it, and every later request touching
        one of its aggregates, waits for the next group, so each aggregate's requests keep
        their order.
        """
        group: list[_Request] = []
        kept: deque[_Request] = deque()
        last: dict[str, Event] = {}
        ids: set[str] = set()
        blocked = set(self._in_flight)  # another committer's: wait for it to finish
        size = 0
        while self._queue:
            request = self._queue.popleft()
            aggregates = {e.aggregate_id for e in request.events}
            fits = (not group or size + len(request.events) <= self.max_batch) and _fits(
                request.events, last, ids, blocked
            )
            if not fits:
                blocked |= aggregates
                kept.append(request)
                continue
            group.append(request)
            size += len(request.events)
            for event in request.events:
                last[event.aggregate_id] = event
                ids.add(event.id)
        self._queue.extendleft(reversed(kept))
        for request in group:
            self._in_flight.update(e.aggregate_id for e in request.events)
        return group

    def _commit(self, group: list[_Request]) -> None:
        pending = list(group)
        committed = False
        while pending:
            events = [e for r in pending for e in r.events]
            try:
                positions = self.store.append_events(events)
            except ConcurrencyError as error:
                culprit = next(
                    (
                        r
                        for r in pending
                        if any(e.aggregate_id == error.aggregate_id for e in r.events)
                    ),
                    pending[0],
                )
                culprit.future.set_exception(error)
                pending.remove(culprit)  # the others may well commit without it
                continue
            except (DuplicateEventError, EventValidationError):
                # Which request is at fault is not said precisely enough: give each its own
                # transaction, so each gets its own answer.
                committed |= self._commit_one_by_one(pending)
                break
            except BaseException as error:
                _fail(pending, error)
                break
            start = 0
            for request in pending:
                request.future.set_result(positions[start : start + len(request.events)])
                start += len(request.events)
            committed = True
            break
        if committed:
            self._notify()

    def _commit_one_by_one(self, requests: list[_Request]) -> bool:
        committed = False
        for request in requests:
            try:
                request.future.set_result(self.store.append_events(request.events))
                committed = True
            except BaseException as error:
                request.future.set_exception(error)
        return committed

    def _notify(self) -> None:
        self._appended.set()

    def _notify_loop(self) -> None:
        while True:
            self._appended.wait()
            self._appended.clear()
            if self._closed and not any(t.is_alive() for t in self._committers):
                return
            try:
                self.store.notify_appended()
            except EventStoreError as error:  # the relay's polling picks the events up anyway
                log.warning("could not wake the outbox relay: %s", error)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Finish what is queued, then stop the committer (the store stays open)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._committers:
            thread.join()
        self._appended.set()
        self._notifier.join()


def _fits(events: list[Event], last: dict[str, Event], ids: set[str], blocked: set[str]) -> bool:
    """Whether a request's events can follow the group's so far in one batch. The request
    passed the batch rules on its own, so only its first event of each aggregate is checked."""
    if any(e.aggregate_id in blocked or e.id in ids for e in events):
        return False
    checked: set[str] = set()
    for event in events:
        if event.aggregate_id not in checked:
            checked.add(event.aggregate_id)
            if not _follows(last.get(event.aggregate_id), event):
                return False
    return True


def _follows(previous: Event | None, event: Event) -> bool:
    """Whether `event` may come after `previous` (of the same aggregate) in one batch."""
    if previous is None:
        return True
    return event.version == previous.version + 1 and event.aggregate_type == previous.aggregate_type


def _fail(requests: list[_Request], error: BaseException) -> None:
    for request in requests:
        if not request.future.done():
            request.future.set_exception(error)
