"""The HTTP API's store capabilities on SQLite: `ApiTokens` and `Correlations`."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from eventstore.events import Event
from eventstore.store._checks import check_limit
from eventstore.store._protocol import ApiToken
from eventstore.store._rows import EVENT_COLUMNS, event_from_row, time_text
from eventstore.store._web_common import INSERT_TOKEN, name_taken, scopes_text
from eventstore.versioning import Upcasters

_INSERT = INSERT_TOKEN.format(
    token_id=":token_id", name=":name", scopes=":scopes", digest=":digest", now=":now"
)
_TOKEN_COLUMNS = "token_id, name, scopes, digest, created_at, revoked_at"
# The same expression as the index (migrations/sqlite/0005_web.sql), so that it is used.
_BY_CORRELATION = (
    f"SELECT {', '.join(EVENT_COLUMNS)} FROM events "  # noqa: S608
    "WHERE json_extract(metadata, '$.correlation_id') IS NOT NULL "
    "AND json_extract(metadata, '$.correlation_id') = :id ORDER BY position LIMIT :limit"
)


def _token(row: tuple[Any, ...]) -> ApiToken:
    token_id, name, scopes, digest, created_at, revoked_at = row
    return ApiToken(
        token_id,
        name,
        tuple(scopes.split()),
        digest,
        datetime.fromisoformat(created_at),
        None if revoked_at is None else datetime.fromisoformat(revoked_at),
    )


class SqliteWeb:
    """The `ApiTokens` and `Correlations` capabilities of `SqliteEventStore` (a mixin)."""

    _upcasters: Upcasters

    def _locked(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def create_token(self, token_id: str, name: str, scopes: Sequence[str], digest: str) -> None:
        params = {"token_id": token_id, "name": name, "scopes": scopes_text(scopes)}
        params.update(digest=digest, now=time_text(datetime.now(UTC)))
        with self._transaction() as conn:
            if conn.execute(_INSERT, params).rowcount == 0:
                raise name_taken(name)

    def find_token(self, token_id: str) -> ApiToken | None:
        with self._locked() as conn:
            row = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_id = ?",  # noqa: S608
                (token_id,),
            ).fetchone()
        return None if row is None else _token(row)

    def list_tokens(self, *, revoked: bool = False) -> list[ApiToken]:
        with self._locked() as conn:
            rows = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM api_tokens "  # noqa: S608
                "WHERE :all OR revoked_at IS NULL ORDER BY name, created_at",
                {"all": revoked},
            ).fetchall()
        return [_token(row) for row in rows]

    def revoke_token(self, name: str) -> int:
        with self._transaction() as conn:
            return conn.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time_text(datetime.now(UTC)), name),
            ).rowcount

    def get_events_by_correlation(self, correlation_id: str, limit: int = 1000) -> list[Event]:
        params = {"id": correlation_id, "limit": check_limit(limit)}
        with self._locked() as conn:
            rows = conn.execute(_BY_CORRELATION, params).fetchall()
        upcast = self._upcasters.upcast
        return [upcast(event_from_row(row)) for row in rows]
