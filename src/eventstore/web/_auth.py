"""Bearer tokens of the HTTP API: issued once, kept as a digest, checked in constant time.

A token reads `est_<id>_<secret>`. The id is public (it finds the row); the secret is 256
random bits of which the store keeps only the SHA-256 digest, so a stolen database dump
does not let anyone in. The digest of the secret presented is compared with the stored one
by `hmac.compare_digest`, whose time does not depend on where they differ; a token whose id
is unknown is compared with a dummy digest, so that both paths cost the same.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

from eventstore.errors import EventStoreError, InvalidQueryError
from eventstore.store import ApiToken, ApiTokens

SCOPES = ("read", "append", "admin")
"""`read`: every query; `append`: POST /v1/events; `admin`: retrying projections (and
everything else: admin implies read and append)."""

_FORMAT = re.compile(r"est_([0-9a-f]{16})_([A-Za-z0-9_-]{43})\Z")
_DUMMY = hashlib.sha256(b"no such token").hexdigest()


class AuthError(EventStoreError):
    """A request without a valid token (401) or whose token lacks the scope (403)."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> list[str]:
    found = sorted(set(scopes))
    unknown = [s for s in found if s not in SCOPES]
    if not found or unknown:
        raise InvalidQueryError(
            f"unknown token scope(s) {unknown!r}: use one or more of {', '.join(SCOPES)}"
            if unknown
            else f"a token needs at least one scope: {', '.join(SCOPES)}"
        )
    return found


def issue_token(store: ApiTokens, name: str, scopes: Iterable[str]) -> str:
    """Create a token and return it: the only time its secret exists outside the caller."""
    if not name or len(name) > 200 or not name.isprintable():
        raise InvalidQueryError("a token name must be 1 to 200 printable characters")
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    store.create_token(token_id, name, check_scopes(scopes), _digest(secret))
    return f"est_{token_id}_{secret}"


def verify_token(store: ApiTokens, token: str) -> ApiToken:
    """The live token `token` is, or AuthError (401) saying why not, without saying whether
    the id exists."""
    match = _FORMAT.match(token)
    record = store.find_token(match.group(1)) if match else None
    presented = _digest(match.group(2)) if match else _DUMMY
    valid = hmac.compare_digest(presented, record.digest if record is not None else _DUMMY)
    if record is None or not valid:
        raise AuthError(
            "the bearer token is not valid; create one with `eventstore tokens create`",
            status=401,
        )
    if record.revoked_at is not None:
        raise AuthError(f"the token {record.name!r} was revoked; ask for a new one", status=401)
    return record


def allows(token: ApiToken, scope: str) -> bool:
    return scope in token.scopes or "admin" in token.scopes
