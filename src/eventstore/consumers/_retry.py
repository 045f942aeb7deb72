"""Backing off on retriable failures (the database or the broker down or busy): the one loop
every runner path uses, so that none of them gives up on what time would fix."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from eventstore.errors import EventStoreError

log = logging.getLogger(__name__)

T = TypeVar("T")
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0


def retrying(
    call: Callable[[], T],
    stop: threading.Event | None,
    *,
    what: str,
    on_retry: Callable[[EventStoreError], None] | None = None,
) -> T | None:
    """`call()`, repeated with a growing pause (0.2 s doubling up to 5 s) while it raises a
    retriable error; any other error propagates. None when `stop` is set before it succeeds
    (nothing of the failed attempts was committed)."""
    pause = BACKOFF_FIRST
    waiting = stop or threading.Event()
    while not waiting.is_set():
        try:
            return call()
        except EventStoreError as error:
            if not error.retriable:
                raise
            if on_retry is not None:
                on_retry(error)
            log.warning("%s: %s; retrying in %.1f s", what, error, pause)
            waiting.wait(pause)
            pause = min(pause * 2, BACKOFF_MAX)
    return None
