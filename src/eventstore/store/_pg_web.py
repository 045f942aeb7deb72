"""The HTTP API's store capabilities on PostgreSQL: `ApiTokens` and `Correlations`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg import sql

from eventstore.events import Event
from eventstore.store._checks import check_limit
from eventstore.store._pg_sql import event_columns
from eventstore.store._protocol import ApiToken
from eventstore.store._rows import event_from_row
from eventstore.store._web_common import INSERT_TOKEN, name_taken, scopes_text
from eventstore.versioning import Upcasters

_INSERT = INSERT_TOKEN.format(
    token_id="%(token_id)s",
    name="%(name)s",
    scopes="%(scopes)s",
    digest="%(digest)s",
    now="now()",
)
_TOKEN_COLUMNS = "token_id, name, scopes, digest, created_at, revoked_at"
_BY_CORRELATION = sql.SQL(
    "SELECT {columns} FROM events WHERE metadata ? 'correlation_id' "
    "AND metadata ->> 'correlation_id' = %(id)s "
    # ->> gives a number's or a boolean's text too: only a string id is one (as on SQLite)
    "AND jsonb_typeof(metadata -> 'correlation_id') = 'string' "
    "ORDER BY position LIMIT %(limit)s"
).format(columns=event_columns())


def _token(row: tuple[Any, ...]) -> ApiToken:
    token_id, name, scopes, digest, created_at, revoked_at = row
    return ApiToken(token_id, name, tuple(scopes.split()), digest, created_at, revoked_at)


class PostgresWeb:
    """The `ApiTokens` and `Correlations` capabilities of `PostgresEventStore` (a mixin: it
    borrows the store's pooled connections)."""

    _upcasters: Upcasters

    def _connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        raise NotImplementedError

    def create_token(self, token_id: str, name: str, scopes: Sequence[str], digest: str) -> None:
        params = {"token_id": token_id, "name": name, "scopes": scopes_text(scopes)}
        params["digest"] = digest
        with self._connection() as conn:
            if conn.execute(_INSERT, params).rowcount == 0:
                raise name_taken(name)

    def find_token(self, token_id: str) -> ApiToken | None:
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_id = %s",  # noqa: S608
                (token_id,),
            ).fetchone()
        return None if row is None else _token(row)

    def list_tokens(self, *, revoked: bool = False) -> list[ApiToken]:
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM api_tokens "  # noqa: S608
                "WHERE %(all)s OR revoked_at IS NULL ORDER BY name, created_at",
                {"all": revoked},
            ).fetchall()
        return [_token(row) for row in rows]

    def revoke_token(self, name: str) -> int:
        with self._connection() as conn:
            return conn.execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL",
                (name,),
            ).rowcount

    def get_events_by_correlation(self, correlation_id: str, limit: int = 1000) -> list[Event]:
        params = {"id": correlation_id, "limit": check_limit(limit)}
        with self._connection() as conn:
            rows = conn.execute(_BY_CORRELATION, params).fetchall()
        upcast = self._upcasters.upcast
        return [upcast(event_from_row(row)) for row in rows]
