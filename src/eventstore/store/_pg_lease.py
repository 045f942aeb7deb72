"""The outbox lease on PostgreSQL: a session advisory lock on a connection of its own."""

from __future__ import annotations

import contextlib
import time
import zlib
from typing import Any

import psycopg
from psycopg import sql


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which appends to `schema` wake relays."""
    return f"eventstore_outbox_{schema}"


class PostgresOutboxLease:
    """A session advisory lock on a connection of its own, which also LISTENs for appends.

    If the holder dies, PostgreSQL ends its session and frees the lock, so a standby's next
    `acquire` (it retries twice a second) takes over.
    """

    def __init__(self, url: str, schema: str, shard: int, shards: int, *, where: str) -> None:
        self.shard = shard
        self.shards = shards
        self._url = url
        self._where = where
        self._schema = schema
        # Two int4 keys: the schema, and which shard of how many.
        self._key = (zlib.crc32(schema.encode()) - 2**31, shards * 1000 + shard)
        self._conn: psycopg.Connection[Any] | None = None

    def __repr__(self) -> str:
        shard = f"shard {self.shard}/{self.shards}"
        return f"PostgresOutboxLease({self._where}, schema={self._schema!r}, {shard})"

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5)
            self._conn.execute(
                sql.SQL("LISTEN {}").format(sql.Identifier(notify_channel(self._schema)))
            )
        return self._conn

    def acquire(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                row = (
                    self._connect()
                    .execute("SELECT pg_try_advisory_lock(%s, %s)", self._key)
                    .fetchone()
                )
                if row is not None and row[0]:
                    return True
            except psycopg.OperationalError:
                self._drop()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.5, remaining))

    def held(self) -> bool:
        if self._conn is None or self._conn.closed:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            self._drop()
            return False
        return True

    def wait_for_appends(self, timeout: float) -> None:
        try:
            for _ in self._connect().notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error:
            self._drop()
            time.sleep(timeout)

    def release(self) -> None:
        if self._conn is not None and not self._conn.closed:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", self._key)
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
