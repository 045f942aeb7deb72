"""What the HTTP API's capabilities share between backends (`_pg_web.py`, `_sqlite_web.py`)."""

from __future__ import annotations

from collections.abc import Sequence

from eventstore.errors import InvalidQueryError

# One INSERT for both backends: a name is unique among live tokens (a partial index).
INSERT_TOKEN = (
    "INSERT INTO api_tokens (token_id, name, scopes, digest, created_at) "
    "VALUES ({token_id}, {name}, {scopes}, {digest}, {now}) "
    "ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING"
)


def scopes_text(scopes: Sequence[str]) -> str:
    if not scopes or any(not s or " " in s for s in scopes):
        raise InvalidQueryError(f"token scopes must be non-empty words, got {list(scopes)!r}")
    return " ".join(sorted(set(scopes)))


def name_taken(name: str) -> InvalidQueryError:
    return InvalidQueryError(
        f"a live token named {name!r} already exists; revoke it first "
        f"(`eventstore tokens revoke {name}`) or choose another name"
    )
