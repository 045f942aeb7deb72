"""The producer's publish requests: their answers, and how queued requests form groups.

A group is what one committer appends in one store transaction. The rules that keep each
caller's guarantees while requests share transactions are here, next to the code:
- Each request is atomic on its own: it joins a group whole or waits for a later one.
- Each aggregate's requests commit in arrival order: a request that cannot join a group (its
  versions do not follow the group's, its id is already in it, its aggregate is in another
  committer's transaction) blocks every later request touching one of its aggregates.
- A group holds at most `max_batch` events (a lone request larger than that goes alone).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from eventstore.errors import OutcomeUnknownError
from eventstore.events import Event


class Outcome:
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

    def result(self, timeout: float, events: int) -> list[int]:
        """The positions, or the request's error; `OutcomeUnknownError` after `timeout`
        seconds without an answer (`events`: how many the request holds, for the message)."""
        if not self._done.acquire(timeout=timeout):
            raise OutcomeUnknownError(
                f"no answer from the event store within {timeout:g}s: the {events} event(s) "
                "may or may not be stored (a transaction in progress can still commit them); "
                "resending the same events (same ids) is safe: an exact resend returns the "
                "positions of those already stored"
            )
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


@dataclass(eq=False)
class Request:
    """One call of `publish_many`: its events, when it was queued, and its answer."""

    events: list[Event]
    queued_at: float = field(default_factory=time.monotonic)
    outcome: Outcome = field(default_factory=Outcome)

    def fail(self, error: BaseException) -> None:
        if not self.outcome.done():
            self.outcome.set_exception(error)


class RequestQueue:
    """Requests waiting for a committer, in arrival order, and the aggregates in a
    committer's transaction now. Not thread-safe: the producer holds its lock around calls."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self._waiting: deque[Request] = deque()
        self._events = 0  # events in `_waiting`
        self._in_flight: set[str] = set()

    def __len__(self) -> int:
        return len(self._waiting)

    def put(self, request: Request) -> None:
        self._waiting.append(request)
        self._events += len(request.events)

    def linger_left(self, linger: float) -> float:
        """Seconds the next group may still wait for more requests: its linger runs from its
        first request's arrival, and ends early once `max_batch` events are queued."""
        if linger <= 0 or not self._waiting or self._events >= self.max_batch:
            return 0.0
        return self._waiting[0].queued_at + linger - time.monotonic()

    def take_group(self) -> list[Request]:
        """Take the requests that can share one atomic append, in arrival order (see the
        module's rules); their aggregates are in flight until `release`. On an exception the
        queue is left as it was."""
        group: list[Request] = []
        kept: deque[Request] = deque()
        last: dict[str, Event] = {}
        ids: set[str] = set()
        blocked = set(self._in_flight)  # another committer's: wait for it to finish
        size = 0
        for request in self._waiting:
            fits = size < self.max_batch and (
                not group or size + len(request.events) <= self.max_batch
            )
            if not (fits and _fits(request.events, last, ids, blocked)):
                blocked.update(e.aggregate_id for e in request.events)
                kept.append(request)
                continue
            group.append(request)
            size += len(request.events)
            for event in request.events:
                last[event.aggregate_id] = event
                ids.add(event.id)
        # Nothing above changed the queue: a failure there loses no request.
        self._waiting = kept
        self._events -= size
        self._in_flight.update(last)
        return group

    def release(self, group: list[Request]) -> None:
        """The group's transaction is over: its aggregates may join groups again."""
        for request in group:
            self._in_flight.difference_update(e.aggregate_id for e in request.events)

    def take_all(self) -> list[Request]:
        """Empty the queue (to fail what is in it when grouping itself failed)."""
        taken = list(self._waiting)
        self._waiting.clear()
        self._events = 0
        return taken


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
