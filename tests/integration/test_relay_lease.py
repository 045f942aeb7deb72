"""The relay's lease on PostgreSQL: a session that cannot outlive a vanished peer unnoticed.

A vanished peer (a powered-off host, a partition) cannot be simulated here without dropping
packets (root and a firewall); these tests check that both ends of the real session carry
the TCP settings that detect one, as the kernel and the server apply them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from eventstore import open_store
from eventstore.store._pg_lease import PostgresOutboxLease

pytestmark = pytest.mark.postgres


@pytest.fixture
def lease(postgres_url: str, pg_schema: str) -> Iterator[PostgresOutboxLease]:
    with open_store(postgres_url, schema=pg_schema) as store:
        lease = store.outbox_lease()
        assert isinstance(lease, PostgresOutboxLease)
        assert lease.acquire(timeout=10)
        yield lease
        lease.release()


def test_the_server_end_of_the_lease_session_sends_tcp_keepalives(
    lease: PostgresOutboxLease,
) -> None:
    """Keepalives on the server's end: a holder gone without closing its connection is
    found out within 25-30 s, and its session (with the lock) ends."""
    conn = lease._conn
    assert conn is not None
    shown = {
        name: conn.execute(f"SHOW {name}").fetchone()
        for name in (
            "tcp_keepalives_idle",
            "tcp_keepalives_interval",
            "tcp_keepalives_count",
            "tcp_user_timeout",
        )
    }
    assert {name: row[0] if row else None for name, row in shown.items()} == {
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "30000",
    }


def test_the_holder_end_of_the_lease_session_sends_tcp_keepalives(
    lease: PostgresOutboxLease,
) -> None:
    """Keepalives on the holder's end, as the kernel applies them to the socket: a server
    or network gone silent makes `held()` false within about 30 s."""
    conn = lease._conn
    assert conn is not None
    with socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000
