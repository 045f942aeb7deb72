"""Control requests and their replies, as they travel on Kafka (JSON).

A request is an object discriminated by `kind`:

- `{"kind": "replay", "request_id": "...", "aggregate_id": "player-1", "version": 12}`
  (at most one of `at` (ISO 8601 with a zone), `version`, `position`; `history: true` adds
  the steps, `history_from` and `history_limit` page them);
- `{"kind": "rebuild", "request_id": "...", "projection": "player-positions"}` (optionally
  `aggregate_id` to rebuild one aggregate in place);
- `{"kind": "ping", "request_id": "..."}`.

Any of them may carry a `deadline` (ISO 8601 with a zone): a worker that picks it up later
answers `expired` instead of running it. A reply is
`{"request_id", "kind", "ok": true, "result": {...}}` or
`{"request_id", "kind", "ok": false, "error": {"code", "message", "retriable"}}`, plus the
answering `worker`, `answered_at`, and `duplicate` (a rebuild answered from its record).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

MAX_ID = 200
HISTORY_LIMIT = 1000

# Reply error codes (what each means for the sender is in the message that comes with it).
INVALID_REQUEST = "invalid_request"
UNKNOWN_KIND = "unknown_kind"
EXPIRED = "expired"
NOT_FOUND = "not_found"
REPLAY_FAILED = "replay_failed"
UNKNOWN_PROJECTION = "unknown_projection"
REBUILD_FAILED = "rebuild_failed"
UNAVAILABLE = "unavailable"
IN_PROGRESS = "in_progress"
TOO_LARGE = "too_large"
INTERNAL = "internal"
RETRIABLE_CODES = frozenset({UNAVAILABLE, IN_PROGRESS})


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(min_length=1, max_length=MAX_ID)
    deadline: AwareDatetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.deadline is not None and (now or datetime.now(UTC)) > self.deadline


class ReplayRequest(_Request):
    kind: Literal["replay"] = "replay"
    aggregate_id: str = Field(min_length=1, max_length=MAX_ID)
    at: AwareDatetime | None = None
    version: int | None = Field(default=None, ge=0)
    position: int | None = Field(default=None, ge=0)
    history: bool = False
    history_from: int = Field(default=1, ge=1)
    history_limit: int = Field(default=100, ge=1, le=HISTORY_LIMIT)

    @model_validator(mode="after")
    def _one_target(self) -> ReplayRequest:
        given = [n for n in ("at", "version", "position") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of at, version and position, not {' and '.join(given)}")
        return self


class RebuildRequest(_Request):
    kind: Literal["rebuild"] = "rebuild"
    projection: str = Field(min_length=1, max_length=MAX_ID)
    aggregate_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID)


class PingRequest(_Request):
    kind: Literal["ping"] = "ping"


ControlRequest = Annotated[
    ReplayRequest | RebuildRequest | PingRequest, Field(discriminator="kind")
]
KINDS = ("replay", "rebuild", "ping")
_ADAPTER: TypeAdapter[ReplayRequest | RebuildRequest | PingRequest] = TypeAdapter(ControlRequest)


class Malformed(Exception):
    """A record that is not a valid request. `request_id` is set when one could be read (the
    sender then gets an error reply), else the record goes to the dead-letter topic."""

    def __init__(self, code: str, message: str, request_id: str | None, kind: str | None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.kind = kind


def parse_request(value: bytes | None) -> ReplayRequest | RebuildRequest | PingRequest:
    """The request in a record's value; `Malformed` saying what is wrong."""
    if value is None:
        raise Malformed(INVALID_REQUEST, "the record has no value", None, None)
    try:
        data = json.loads(value)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise Malformed(INVALID_REQUEST, f"the value is not JSON: {error!r}", None, None) from None
    if not isinstance(data, dict):
        raise Malformed(
            INVALID_REQUEST,
            f"a request is a JSON object, not a {type(data).__name__}",
            None,
            None,
        )
    raw_id = data.get("request_id")
    request_id = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_ID else None
    kind = data.get("kind")
    if kind not in KINDS:
        raise Malformed(
            UNKNOWN_KIND,
            f"unknown kind {kind!r}: a request's kind is one of {', '.join(KINDS)}",
            request_id,
            kind if isinstance(kind, str) else None,
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'][1:]) or 'request'}: {item['msg']}"
            for item in error.errors(include_url=False)
        )
        raise Malformed(
            INVALID_REQUEST, f"invalid {kind} request: {problems}", request_id, kind
        ) from None


def reply_document(
    request_id: str,
    kind: str | None,
    *,
    worker: str,
    result: Any = None,
    error: tuple[str, str] | None = None,
    duplicate: bool = False,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "request_id": request_id,
        "kind": kind,
        "ok": error is None,
        "worker": worker,
        "answered_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "duplicate": duplicate,
    }
    if error is None:
        document["result"] = result
    else:
        code, message = error
        document["error"] = {
            "code": code,
            "message": message,
            "retriable": code in RETRIABLE_CODES,
        }
    return document
