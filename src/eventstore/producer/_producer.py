"""EventProducer: validate events, then store them (and their outbox rows) with group commit.

Publishing to Kafka is not done here: the store writes every event's outbox row in the same
transaction as the event, and the `OutboxRelay` publishes from the outbox after commit. So a
process that dies between "stored" and "published" loses nothing, and nothing is published
that was not stored.

What each caller is guaranteed, however its request was grouped with others:
- One answer of its own, within `timeout` seconds: its positions, its own error, or
  `OutcomeUnknownError` (then resending the same events is safe: appends are idempotent by id).
  No failure in the committer strands a caller: every path out of a group answers each request.
- An error is its own: a version conflict fails only the request it names and the rest of the
  group is appended again without it; any other error that is not retriable makes the group
  go one request per transaction, so each caller gets the answer of its own events.
- A retriable error (the database down or busy) is retried, the whole group, with capped
  exponential backoff for up to `retry_timeout` seconds; then each caller gets that error.
  Retrying is safe because an append that did commit returns its positions when resent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from eventstore._closing import Closing
from eventstore.errors import ConcurrencyError, ConfigurationError, EventStoreError
from eventstore.events import Event
from eventstore.producer._requests import Request, RequestQueue
from eventstore.store import EventStore, as_batch, validate_batch
from eventstore.versioning import PayloadSchemas

log = logging.getLogger(__name__)

_FIRST_PAUSE = 0.05
_LONGEST_PAUSE = 2.0


class Change(NamedTuple):
    """An event to be, as a decision returns it: the producer fills ids, versions and time."""

    event_type: str
    payload: Mapping[str, Any]
    schema_version: int = 1
    metadata: Mapping[str, Any] | None = None


class _Backoff:
    """Pauses between retries of one group: doubling from 50 ms up to 2 s, for at most
    `limit` seconds counted from the first failure."""

    def __init__(self, limit: float) -> None:
        self._limit = limit
        self._deadline: float | None = None
        self._pause = _FIRST_PAUSE

    def next_pause(self) -> float | None:
        """How long to wait before the next attempt; None when the time is up."""
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self._limit
        left = self._deadline - now
        if left <= 0:
            return None
        pause = min(self._pause, left)
        self._pause = min(_LONGEST_PAUSE, self._pause * 2)
        return pause


class EventProducer(Closing):
    """Publishes events: validates them, then stores them through the store's atomic append.

    Group commit: concurrent callers of `publish` / `publish_many` (from any number of threads)
    are gathered into shared store transactions by `committers` committer threads: a group is
    what was queued while the committers were busy, up to `max_batch` events. With `linger` >
    0 a group also waits for more requests, up to `linger` seconds after its first request
    arrived (it goes earlier once `max_batch` events are queued). Several committers keep
    several transactions in flight, so PostgreSQL can flush their commits together. An
    aggregate is in at most one committer's transaction at a time, so each aggregate's
    requests commit in arrival order. (One committer is the default: measured on 2 cores,
    more committers cost more in thread hand-offs than they win in overlapping commits.)

    Each call of `publish_many` is atomic on its own (all its events or none), and gets its
    own answer (see the module's guarantees). `timeout` bounds how long a caller waits;
    `retry_timeout` how long a group is retried after retriable errors (keep it below
    `timeout`, so that callers hear the error rather than an unknown outcome).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        schemas: PayloadSchemas | None = None,
        max_batch: int = 1000,
        linger: float = 0.0,
        committers: int = 1,
        timeout: float = 60.0,
        retry_timeout: float = 30.0,
    ) -> None:
        if max_batch < 1 or committers < 1:
            raise ConfigurationError(
                f"max_batch and committers must be at least 1, not {max_batch}, {committers}"
            )
        if not (0 <= linger <= _LONGEST and 0 <= retry_timeout <= _LONGEST):
            raise ConfigurationError(
                f"linger and retry_timeout must be from 0 to {_LONGEST:g} seconds, not "
                f"{linger}, {retry_timeout}"
            )
        _check_timeout(timeout)
        self.store = store
        self.schemas = schemas or PayloadSchemas()
        self.max_batch = max_batch
        self.linger = linger
        self.timeout = timeout
        self.retry_timeout = retry_timeout
        self._requests = RequestQueue(max_batch)
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

    def publish(self, event: Event, *, timeout: float | None = None) -> int:
        """Validate and store one event; returns its position (see `publish_many`)."""
        return self.publish_many([event], timeout=timeout)[0]

    def publish_many(self, events: Sequence[Event], *, timeout: float | None = None) -> list[int]:
        """Validate and store events atomically; returns their positions.

        Raises `EventValidationError` (payload schema, batch rules) before anything is
        stored, `ConcurrencyError` when a version is taken, `DuplicateEventError` for an id
        reused with other content; an exact resend returns the stored positions. A retriable
        error (`StoreUnavailableError`, `StoreBusyError`) is raised once the producer's
        retries ran out; `OutcomeUnknownError` when no answer came within `timeout` seconds
        (default: the producer's), after which resending the same events is safe.
        """
        events = as_batch(events)
        if not events:
            return []
        validate_batch(events)
        for event in events:
            self.schemas.check(event)
        if timeout is not None:
            _check_timeout(timeout)  # before queueing: a refused call must store nothing
        request = Request(events)
        with self._ready:
            if self._closed:
                raise EventStoreError("the producer is closed; create a new EventProducer")
            self._requests.put(request)
            self._ready.notify()
        return request.outcome.result(self.timeout if timeout is None else timeout, len(events))

    @property
    def queued(self) -> int:
        """Requests waiting for a committer (not yet in a transaction)."""
        with self._ready:
            return len(self._requests)

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
        # Every exception is caught inside the loop: a committer that died would leave the
        # callers of every later request waiting for an answer nobody gives.
        while True:
            try:
                group = self._next_group()
            except BaseException as error:
                self._fail_queued(error)
                continue
            if group is None:
                return
            try:
                self._commit(group)
            except BaseException as error:
                log.exception("group commit failed unexpectedly")
                for request in group:
                    request.fail(error)
            finally:
                with self._ready:
                    self._requests.release(group)
                    self._ready.notify_all()

    def _next_group(self) -> list[Request] | None:
        """Wait for the next group (see `linger`); None once closed with nothing queued."""
        with self._ready:
            while True:
                if not self._requests:
                    if self._closed:
                        return None
                    self._ready.wait()
                    continue
                left = 0.0 if self._closed else self._requests.linger_left(self.linger)
                if left > 0:
                    self._ready.wait(left)
                    continue
                group = self._requests.take_group()
                if group:
                    return group
                self._ready.wait()  # all blocked behind groups in flight: wait for one to end

    def _fail_queued(self, error: BaseException) -> None:
        """Grouping itself failed (a bug): answer every queued caller rather than strand it."""
        log.exception("grouping queued requests failed; failing them")
        with self._ready:
            queued = self._requests.take_all()
        failure = EventStoreError(
            f"the producer failed to group requests ({error!r}); none of them was stored: "
            "send them again"
        )
        failure.__cause__ = error
        for request in queued:
            request.fail(failure)

    def _commit(self, group: list[Request]) -> None:
        backoff = _Backoff(self.retry_timeout)
        pending = list(group)
        while pending:
            try:
                positions = self._append([e for r in pending for e in r.events], backoff)
            except ConcurrencyError as error:
                culprit = _culprit(pending, error)
                if culprit is not None:
                    culprit.fail(error)
                    pending.remove(culprit)  # the others may well commit without it
                    continue
                self._answer_each(pending, error, backoff)
                return
            except Exception as error:
                self._answer_each(pending, error, backoff)
                return
            start = 0
            for request in pending:
                request.outcome.set_result(positions[start : start + len(request.events)])
                start += len(request.events)
            self._appended.set()
            return

    def _append(self, events: list[Event], backoff: _Backoff) -> list[int]:
        """Append, retrying retriable errors until `backoff` runs out."""
        while True:
            try:
                return self.store.append_events(events)
            except EventStoreError as error:
                pause = backoff.next_pause() if error.retriable else None
                if pause is None:
                    raise
                log.warning("appending %d events failed, retrying: %s", len(events), error)
                time.sleep(pause)

    def _answer_each(self, pending: list[Request], error: Exception, backoff: _Backoff) -> None:
        """A group failed with `error` (not a version conflict): give each request its own
        answer. A retriable error is everyone's (its retries ran out); any other may be about
        one request only, so each request is tried in a transaction of its own."""
        if len(pending) == 1 or (isinstance(error, EventStoreError) and error.retriable):
            for request in pending:
                request.fail(error)
            return
        log.info("a group of %d requests failed (%s); appending each alone", len(pending), error)
        for request in pending:
            try:
                request.outcome.set_result(self._append(request.events, backoff))
            except Exception as own:
                request.fail(own)
            else:
                self._appended.set()

    def _notify_loop(self) -> None:
        while True:
            self._appended.wait()
            self._appended.clear()
            if self._closed and not any(t.is_alive() for t in self._committers):
                return
            try:
                self.store.notify_appended()
            except Exception as error:  # the relay's polling picks the events up anyway
                log.warning("could not wake the outbox relay: %s", error)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Finish what is queued, then stop the committers (the store stays open)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._committers:
            thread.join()
        self._appended.set()
        self._notifier.join()


_LONGEST = 86_400.0
"""The longest wait the producer accepts (a day): beyond it a lock's timeout overflows."""


def _check_timeout(timeout: float) -> None:
    if not 0 < timeout <= _LONGEST:  # also refuses NaN
        raise ConfigurationError(
            f"timeout must be more than 0 and at most {_LONGEST:g} seconds, not {timeout}"
        )


def _culprit(pending: list[Request], error: ConcurrencyError) -> Request | None:
    """The first request touching the aggregate a conflict names (the earliest of its
    requests in the group is the one whose version was taken); None if none does."""
    for request in pending:
        if any(e.aggregate_id == error.aggregate_id for e in request.events):
            return request
    return None
