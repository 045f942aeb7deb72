"""Builders shared by tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from eventstore import Event

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def event(
    aggregate_id: str = "player-1",
    version: int = 1,
    *,
    event_type: str = "PlayerMoved",
    aggregate_type: str = "Player",
    at: datetime | None = None,
    **payload: Any,
) -> Event:
    return Event.new(
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        event_type=event_type,
        version=version,
        payload=payload or {"x": version, "y": -version},
        metadata={"session": "s-1", "correlation_id": "c-1"},
        timestamp=at or T0 + timedelta(seconds=version),
    )


def history(aggregate_id: str, count: int, start: int = 1, **kwargs: Any) -> list[Event]:
    return [event(aggregate_id, v, **kwargs) for v in range(start, start + count)]


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds, naming `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.005)


def url_with(url: str, *, dbname: str | None = None, user: str | None = None) -> str:
    """A PostgreSQL URL with another database or user (the tests' server trusts loopback)."""
    parts = urlsplit(url)
    netloc = parts.netloc if user is None else f"{user}@{parts.netloc.rpartition('@')[2]}"
    path = parts.path if dbname is None else f"/{dbname}"
    return urlunsplit(parts._replace(netloc=netloc, path=path))
