"""The outbox lease on PostgreSQL: a session advisory lock on a connection of its own."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import zlib
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

log = logging.getLogger(__name__)

_CHANNEL_PREFIX = "eventstore_outbox_"
_MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
_DIGEST_CHARS = 16

# A lease must not outlive its holder, nor be trusted by a holder that lost it. A session
# can end without either side seeing it (a host powered off, a network partition): then the
# server keeps the lock and the holder believes it still has it. TCP keepalive probes on
# both ends detect that: after 10 s idle, a probe every 5 s, 3 unanswered (25 s); and
# tcp_user_timeout fails a send the peer does not acknowledge within 30 s. The server side
# (set for this session through `options`) frees the lock so a standby takes over; the client
# side makes `held()` false, so the old holder stops draining.
_KEEPALIVE_IDLE, _KEEPALIVE_INTERVAL, _KEEPALIVE_COUNT, _USER_TIMEOUT_MS = 10, 5, 3, 30_000
_CLIENT_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": _KEEPALIVE_IDLE,
    "keepalives_interval": _KEEPALIVE_INTERVAL,
    "keepalives_count": _KEEPALIVE_COUNT,
    "tcp_user_timeout": _USER_TIMEOUT_MS,
}
_SERVER_KEEPALIVES = (
    f"-c tcp_keepalives_idle={_KEEPALIVE_IDLE} -c tcp_keepalives_interval={_KEEPALIVE_INTERVAL} "
    f"-c tcp_keepalives_count={_KEEPALIVE_COUNT} -c tcp_user_timeout={_USER_TIMEOUT_MS}"
)


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which appends to `schema` wake relays.

    At most 63 bytes whatever the schema's name (`pg_notify` refuses a longer channel, while
    LISTEN silently cuts it, so wake-ups would be lost), and one per schema: a readable start
    of the name, then a hash of the whole name.
    """
    digest = hashlib.sha256(schema.encode()).hexdigest()[:_DIGEST_CHARS]
    room = _MAX_IDENTIFIER_BYTES - len(_CHANNEL_PREFIX) - 1 - _DIGEST_CHARS
    readable = schema.encode()[:room].decode(errors="ignore")  # never half a character
    return f"{_CHANNEL_PREFIX}{readable}_{digest}"


def lease_connection_options(url: str) -> dict[str, Any]:
    """Connection options of a lease's session: `url`'s own, plus TCP keepalives on both
    ends (the server's are added to any `options` the URL gives)."""
    given = conninfo_to_dict(url).get("options")
    server = f"{given} {_SERVER_KEEPALIVES}" if given else _SERVER_KEEPALIVES
    return {**_CLIENT_KEEPALIVES, "options": server}


class PostgresOutboxLease:
    """A session advisory lock on a connection of its own, which also LISTENs for appends.

    If the holder dies, PostgreSQL ends its session and frees the lock, so a standby's next
    `acquire` (it retries twice a second) takes over. A holder that vanished without closing
    its connection is detected by TCP keepalives within about 30 seconds (see above).
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
        self._failing = False  # connecting failed last time (logged once per streak)

    def __repr__(self) -> str:
        shard = f"shard {self.shard}/{self.shards}"
        return f"PostgresOutboxLease({self._where}, schema={self._schema!r}, {shard})"

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=5, **lease_connection_options(self._url)
            )
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
                self._failing = False
                if row is not None and row[0]:
                    return True
            except psycopg.OperationalError as error:
                if not self._failing:
                    log.warning("%r cannot reach PostgreSQL, retrying: %s", self, error)
                self._failing = True
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
