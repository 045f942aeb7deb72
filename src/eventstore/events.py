"""The event: an immutable fact about the game world, and the rules every event must satisfy.

Pure models only: nothing here knows about storage or transport. Building an `Event` that
breaks a rule raises `EventValidationError` naming the field and the rule.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, Self, runtime_checkable

import pydantic
from pydantic import BaseModel, ConfigDict, field_validator

from eventstore.errors import EventValidationError

MAX_ID_LENGTH = 128
"""Longest event id or aggregate id, in characters."""
MAX_TYPE_NAME_LENGTH = 100
"""Longest event type or aggregate type name, in characters."""
MAX_PAYLOAD_BYTES = 256 * 1024
"""Largest payload, measured as compact UTF-8 JSON."""
MAX_METADATA_BYTES = 16 * 1024
"""Largest metadata object, measured as compact UTF-8 JSON."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of objects and arrays in a payload or metadata."""

_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FORBIDDEN_ID_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def encode_json(value: Any) -> str:
    """Compact JSON text, as stored and published (no NaN or infinities)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _path(keys: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys)


def _check_json(value: Any) -> None:
    """Raise ValueError unless `value` is plain JSON: finite numbers, string keys, bounded
    depth. Iterative, and builds the path of a value only to report it."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        node, keys = stack.pop()
        if len(keys) > MAX_JSON_DEPTH:
            raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels at {_path(keys)}")
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, list | tuple):
            items = enumerate(node)
        else:
            continue
        in_object = isinstance(node, dict)
        for key, item in items:
            if in_object and not isinstance(key, str):
                raise ValueError(f"has a non-string key {key!r} at {_path(keys)}")
            if isinstance(item, dict | list | tuple):
                stack.append((item, (*keys, key)))
            elif isinstance(item, float):
                if not math.isfinite(item):
                    raise ValueError(f"holds a non-finite number ({item}) at {_path((*keys, key))}")
            elif not (item is None or isinstance(item, str | int)):  # bool is an int
                raise ValueError(
                    f"holds a {type(item).__name__}, which is not JSON, at {_path((*keys, key))}"
                )


def _check_json_object(value: Any, limit: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, not {type(value).__name__}")
    _check_json(value)
    size = len(encode_json(value).encode())
    if size > limit:
        raise ValueError(f"is {size} bytes as JSON, over the limit of {limit} bytes")
    return value


def _check_id(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"must be a non-empty {what}")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"is {len(value)} characters long, over the limit of {MAX_ID_LENGTH}")
    if _FORBIDDEN_ID_CHARS.search(value):
        raise ValueError("must not contain control characters")
    return value


def _check_type_name(value: str) -> str:
    if not value:
        raise ValueError("must be a non-empty name")
    if len(value) > MAX_TYPE_NAME_LENGTH:
        raise ValueError(
            f"is {len(value)} characters long, over the limit of {MAX_TYPE_NAME_LENGTH}"
        )
    if not _TYPE_NAME.match(value):
        raise ValueError(
            f"{value!r} is not an identifier (letters, digits and '_', not starting with a digit)"
        )
    return value


def translate_validation_error(error: pydantic.ValidationError) -> EventValidationError:
    """Turn pydantic's error into ours, keeping every problem and naming each field."""
    problems: list[tuple[str, str]] = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "event"
        message = item["msg"].removeprefix("Value error, ")
        problems.append((field, message))
    first_field, first_rule = problems[0]
    return EventValidationError(first_field, first_rule, problems=problems)


class Event(BaseModel):
    """One immutable event.

    Built with explicit fields, as in `Event(id=..., event_type="PlayerMoved", ...)`, or with
    `Event.new(...)`, which fills `id` (a random UUID) and `timestamp` (now). `position` and
    `recorded_at` are set by the store when the event is stored and ignored on append.
    Timestamps must be timezone-aware and are normalised to UTC.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    id: str
    event_type: str
    aggregate_id: str
    aggregate_type: str
    version: int
    timestamp: datetime
    payload: dict[str, Any]
    metadata: dict[str, Any] = pydantic.Field(default_factory=dict)
    schema_version: int = 1
    position: int | None = None
    recorded_at: datetime | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as error:
            raise translate_validation_error(error) from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build an event from a decoded JSON object (as `to_dict` writes it)."""
        if not isinstance(data, Mapping):
            raise EventValidationError("event", f"must be a JSON object, not {type(data).__name__}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict (timestamps as ISO 8601 strings)."""
        return self.model_dump(mode="json")

    @classmethod
    def new(
        cls,
        *,
        aggregate_type: str,
        aggregate_id: str,
        event_type: str,
        version: int,
        payload: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        schema_version: int = 1,
        timestamp: datetime | None = None,
    ) -> Self:
        """A new event with a fresh random id, timestamped now unless `timestamp` is given."""
        return cls(
            id=str(uuid.uuid4()),
            event_type=event_type,
            aggregate_id=aggregate_id,
            aggregate_type=aggregate_type,
            version=version,
            timestamp=timestamp if timestamp is not None else datetime.now(UTC),
            payload=dict(payload),
            metadata=dict(metadata or {}),
            schema_version=schema_version,
        )

    def same_content(self, other: Event) -> bool:
        """Whether two events describe the same fact (ignoring store-assigned fields)."""
        return self.model_dump(exclude={"position", "recorded_at"}) == other.model_dump(
            exclude={"position", "recorded_at"}
        )

    @field_validator("id", mode="before")
    @classmethod
    def _id_is_text(cls, value: Any) -> Any:
        if isinstance(value, uuid.UUID):
            return str(value)
        return value

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return _check_id(value, "id")

    @field_validator("aggregate_id")
    @classmethod
    def _valid_aggregate_id(cls, value: str) -> str:
        return _check_id(value, "aggregate id")

    @field_validator("event_type", "aggregate_type")
    @classmethod
    def _valid_type_name(cls, value: str) -> str:
        return _check_type_name(value)

    @field_validator("version", "schema_version", mode="before")
    @classmethod
    def _integer(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, not {type(value).__name__}")
        return value

    @field_validator("version", "schema_version")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, not {value}")
        if value > 2**62:
            raise ValueError(f"must be below 2**62, not {value}")
        return value

    @field_validator("timestamp", "recorded_at")
    @classmethod
    def _aware_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must be timezone-aware (a naive datetime has no defined instant)")
        return value.astimezone(UTC)

    @field_validator("payload", mode="before")
    @classmethod
    def _valid_payload(cls, value: Any) -> Any:
        return _check_json_object(value, MAX_PAYLOAD_BYTES)

    @field_validator("metadata", mode="before")
    @classmethod
    def _valid_metadata(cls, value: Any) -> Any:
        return _check_json_object(value, MAX_METADATA_BYTES)


@runtime_checkable
class Command(Protocol):
    """A request to change one aggregate; a handler decides which events (if any) it causes."""

    @property
    def aggregate_id(self) -> str: ...

    @property
    def command_type(self) -> str: ...


def new_event(
    aggregate_type: str,
    aggregate_id: str,
    event_type: str,
    version: int,
    payload: Mapping[str, Any],
    **extra: Any,
) -> Event:
    """Shorthand for `Event.new(...)` with the identifying fields given positionally."""
    return Event.new(
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        event_type=event_type,
        version=version,
        payload=payload,
        **extra,
    )
