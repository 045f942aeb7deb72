"""In-process delivery: the store's global log as a stream, for when no Kafka is configured.

The store guarantees that `read_all` never lets a reader skip an event, so a tail that
resumes after the last position it returned sees every committed event exactly once, in
position order (each aggregate's in version order), with no broker in between.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from eventstore.events import Event
from eventstore.store import EventLog


class StoreTail:
    """Reads the global log from `after` on; `position` is the last position returned."""

    def __init__(
        self, store: EventLog, *, after: int = 0, batch_size: int = 500, poll_interval: float = 0.2
    ) -> None:
        self.store = store
        self.position = after
        self.batch_size = batch_size
        self.poll_interval = poll_interval

    def poll(self) -> list[Event]:
        """The next events, at most `batch_size` (empty when caught up)."""
        page = self.store.read_all(self.position, self.batch_size)
        if page:
            self.position = page[-1].position or self.position
        return page

    def drain(self) -> Iterator[Event]:
        """Every event from here to the end of the log as it is now."""
        while page := self.poll():
            yield from page

    def follow(self, stop: threading.Event) -> Iterator[Event]:
        """Every event from here on, waiting for new ones, until `stop` is set."""
        while not stop.is_set():
            page = self.poll()
            if page:
                yield from page
            else:
                stop.wait(self.poll_interval)
