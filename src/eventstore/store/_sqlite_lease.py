"""The outbox lease on SQLite: an exclusive lock on a file beside the database."""

from __future__ import annotations

import fcntl
import os
import time
from typing import Protocol


class _WaitsForAppends(Protocol):
    path: str

    def wait_for_appends(self, timeout: float) -> None: ...


class SqliteOutboxLease:
    """An exclusive lock on a file beside the database (`<file>.relay-<shard>-of-<shards>`);
    the operating system frees it when the holding process ends."""

    def __init__(self, store: _WaitsForAppends, shard: int, shards: int) -> None:
        self.shard = shard
        self.shards = shards
        self._store = store
        self._path = f"{store.path}.relay-{shard}-of-{shards}.lock"
        self._fd: int | None = None

    def acquire(self, timeout: float) -> bool:
        if self._store.path == ":memory:":
            self._fd = -1  # one process owns an in-memory database: nothing to exclude
            return True
        deadline = time.monotonic() + timeout
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.2)
                continue
            self._fd = fd
            return True

    def held(self) -> bool:
        return self._fd is not None

    def wait_for_appends(self, timeout: float) -> None:
        self._store.wait_for_appends(timeout)

    def release(self) -> None:
        if self._fd is not None and self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        self._fd = None
