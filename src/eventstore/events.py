"""The event: an immutable fact about the game world, and the rules every event must satisfy.

Pure models only: nothing here knows about storage or transport. Building an `Event` that
breaks a rule raises `EventValidationError` naming the field and the rule, with every problem
of the event listed; nothing else escapes from building one, whatever it is given.

An event is immutable all the way down: its `payload` and `metadata` are frozen copies of the
objects it was built from (`eventstore._frozen`), which compare equal to, and encode like, the
plain dicts and lists they copy, and refuse every change with a `TypeError`.

The rules are checked by hand-written code rather than by pydantic's field validators: one
Python pass over a payload checks it, bounds its JSON size and builds its frozen copy, where
pydantic would copy it, our validators walk it, and `json.dumps` encode it to measure it. An
event is built for every append and every message consumed, so this is a hot path. `Event`
stays a pydantic model for everything else (serialisation, JSON schema, pickling, use as a
field of other models), and `model_validate` runs the same rules.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, Self, runtime_checkable

import pydantic
from pydantic import BaseModel, ConfigDict, model_validator

from eventstore._frozen import (
    EMPTY,
    FrozenDict,
    FrozenList,
    freeze,
    frozen_dict,
    frozen_list,
    json_text,
    keep_json_text,
)
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

_FORBIDDEN_ID_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def encode_json(value: Any) -> str:
    """Compact JSON text, as stored and published (no NaN or infinities)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def freeze_json(value: Any) -> Any:
    """The frozen form of JSON data that is already known to be valid (a stored payload, an
    upcaster's result): every dict and list in it (tuples too) replaced by an immutable copy,
    as an event holds them. Checks nothing; fast; returns frozen data as it is."""
    return freeze(value)


_JSON_LIMITS = {"payload": MAX_PAYLOAD_BYTES, "metadata": MAX_METADATA_BYTES}


class _Broken(Exception):
    """A field breaks a rule; `rule` says which, as the message shown for that field."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


class _Unfit(Exception):
    """A JSON value breaks a rule at `keys`, which are collected innermost first as the walk
    unwinds (so the happy path never builds a path)."""

    def __init__(self, message: str, keys: list[str | int] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.keys: list[str | int] = keys if keys is not None else []


def _path(keys: list[str | int]) -> str:
    """`keys` (outermost first) as a JSONPath: $.name, $[3], or $["odd key"]."""
    parts = ["$"]
    for key in keys:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif key.isascii() and key.isidentifier():
            parts.append(f".{key}")
        else:
            parts.append(f"[{json.dumps(key)}]")
    return "".join(parts)


# --- The JSON walk: check, bound the size, freeze; one pass --------------------------------

# Every scalar's JSON text is at most this long: a float's repr (-2.2250738585072014e-308 is
# 24 characters), true/false/null, and an int of fewer than 20 digits. Longer ints are
# measured exactly.
_SCALAR_BOUND = 24
_SMALL_INT = 10**19


def _text_problem(text: str) -> str | None:
    """What makes `text` unstorable, if anything: PostgreSQL's jsonb refuses NUL, and UTF-8
    (so either database) refuses lone surrogates."""
    if "\x00" in text:
        return "a NUL character (\\u0000), which PostgreSQL cannot store,"
    if not text.isascii() and _SURROGATE.search(text):
        return "a lone surrogate (\\ud800-\\udfff), which is not valid Unicode,"
    return None


def _scalar_bound(item: Any, kind: type) -> int:
    """An upper bound of the JSON size of `item`, a str, int, float, bool or None (of exact
    type `kind`), after checking it. Raises _Unfit."""
    if kind is str:
        problem = _text_problem(item)
        if problem is not None:
            raise _Unfit(f"holds a string with {problem}")
        # At most 6 bytes per character: an escape (\u001f) is 6, UTF-8 at most 4.
        return 6 * len(item) + 2
    if kind is float:
        if not math.isfinite(item):
            raise _Unfit(f"holds a non-finite number ({item})")
    elif kind is int and not -_SMALL_INT < item < _SMALL_INT:
        try:
            return len(int.__repr__(item))
        except ValueError:  # over sys.get_int_max_str_digits(): json cannot write or read it
            raise _Unfit("holds an integer too long to write as JSON") from None
    return _SCALAR_BOUND


_SCALARS = frozenset({str, int, float, bool, type(None)})
_isfinite = math.isfinite


# _object and _array inline the common scalars (ASCII text without NUL, ints of fewer than 20
# digits, finite floats, true/false/null): a function call per value would cost as much as
# the rest of the walk. _scalar_bound and _nested handle everything else.


def _object(node: dict[Any, Any], depth: int) -> tuple[FrozenDict, int]:
    """`node` (an exact dict) checked and frozen, with an upper bound of its compact JSON
    size in bytes. Raises _Unfit."""
    if depth > MAX_JSON_DEPTH:
        raise _Unfit(f"nests deeper than {MAX_JSON_DEPTH} levels")
    bound = 2 + 2 * len(node)  # braces, and a colon and a comma per member
    child: Any
    frozen_children: dict[str, Any] | None = None
    for key, item in node.items():
        if type(key) is not str:
            return _object(_with_text_keys(node), depth)
        if "\x00" in key or not key.isascii():
            problem = _text_problem(key)
            if problem is not None:
                raise _Unfit(f"has a key with {problem}", [key])
        bound += 6 * len(key) + 2
        kind = type(item)
        if kind is str:
            if "\x00" not in item and item.isascii():
                bound += 6 * len(item) + 2
                continue
        elif kind is int:
            if -_SMALL_INT < item < _SMALL_INT:
                bound += _SCALAR_BOUND
                continue
        elif kind is float:
            if _isfinite(item):
                bound += _SCALAR_BOUND
                continue
        elif kind is bool or item is None:
            bound += _SCALAR_BOUND
            continue
        try:
            if kind is list:
                child, size = _array(item, depth + 1)
            elif kind is dict:
                child, size = _object(item, depth + 1)
            elif kind in _SCALARS:
                bound += _scalar_bound(item, kind)
                continue
            else:
                child, size = _nested(item, depth + 1)
        except _Unfit as unfit:
            unfit.keys.append(key)
            raise
        bound += size
        if frozen_children is None:
            frozen_children = {}
        frozen_children[key] = child
    if frozen_children is not None:
        node = {**node, **frozen_children}  # same key order, frozen values
    return frozen_dict(node), bound


def _array(node: list[Any] | tuple[Any, ...], depth: int) -> tuple[FrozenList, int]:
    """`node` checked and frozen, with an upper bound of its JSON size. Raises _Unfit."""
    if depth > MAX_JSON_DEPTH:
        raise _Unfit(f"nests deeper than {MAX_JSON_DEPTH} levels")
    bound = 2 + len(node)  # brackets and commas
    child: Any
    items: list[Any] | None = None
    for index, item in enumerate(node):
        kind = type(item)
        if kind is str:
            if "\x00" not in item and item.isascii():
                bound += 6 * len(item) + 2
                continue
        elif kind is int:
            if -_SMALL_INT < item < _SMALL_INT:
                bound += _SCALAR_BOUND
                continue
        elif kind is float:
            if _isfinite(item):
                bound += _SCALAR_BOUND
                continue
        elif kind is bool or item is None:
            bound += _SCALAR_BOUND
            continue
        try:
            if kind is list:
                child, size = _array(item, depth + 1)
            elif kind is dict:
                child, size = _object(item, depth + 1)
            elif kind in _SCALARS:
                bound += _scalar_bound(item, kind)
                continue
            else:
                child, size = _nested(item, depth + 1)
        except _Unfit as unfit:
            unfit.keys.append(index)
            raise
        bound += size
        if items is None:
            items = list(node)
        items[index] = child
    return frozen_list(node if items is None else items), bound


def _nested(item: Any, depth: int) -> tuple[Any, int]:
    """A value that is not a scalar of an exact JSON type: a container (frozen), a subclass of
    a JSON type (as its plain value: an IntEnum as its int, a str subclass as its str), or
    anything else (refused)."""
    kind = type(item)
    if kind is dict:
        return _object(item, depth)
    if kind is list or kind is tuple:
        return _array(item, depth)
    if isinstance(item, dict):
        return _object(dict(item), depth)
    if isinstance(item, list | tuple):
        return _array(item, depth)
    # The base class's own conversion: str(item) would call a subclass's __str__ (which for
    # a `str, Enum` member gives "Colour.RED", not its value). bool cannot be subclassed.
    if isinstance(item, str):
        plain: Any = str.__str__(item)
    elif isinstance(item, int):
        plain = int.__index__(item)
    elif isinstance(item, float):
        plain = float.__float__(item)
    else:
        raise _Unfit(f"holds a {kind.__name__}, which is not JSON,")
    return plain, _scalar_bound(plain, type(plain))


def _with_text_keys(node: dict[Any, Any]) -> dict[str, Any]:
    """`node` with str-subclass keys made plain str; refuses keys of any other type (which
    json.dumps would quietly turn into strings)."""
    plain: dict[str, Any] = {}
    for key, item in node.items():
        if not isinstance(key, str):
            raise _Unfit(f"has a non-string key {_shown(key)}")
        text = str.__str__(key)
        if text in plain:
            raise _Unfit(f"has two keys that are both {text!r}", [text])
        plain[text] = item
    return plain


def _shown(value: Any) -> str:
    """`value` for a message: its repr, shortened (and never failing, as for a huge int)."""
    try:
        text = repr(value)
    except Exception:
        return f"of type {type(value).__name__}"
    return text if len(text) <= 40 else f"{text[:37]}..."


def _checked_json(name: str, value: Any) -> FrozenDict:
    """A `payload` or `metadata` value for `model_copy`: checked and frozen, or refused."""
    try:
        return _json_object(value, _JSON_LIMITS[name])
    except _Broken as broken:
        raise EventValidationError(name, broken.rule) from None


def _json_object(value: Any, limit: int) -> FrozenDict:
    """`value`, a JSON object of at most `limit` bytes as compact UTF-8 JSON, frozen."""
    if type(value) is not dict:
        if not isinstance(value, dict):
            raise _Broken(f"must be a JSON object, not {type(value).__name__}")
        value = dict(value)
    try:
        frozen, bound = _object(value, 0)
    except _Unfit as unfit:
        unfit.keys.reverse()
        raise _Broken(f"{unfit.message} at {_path(unfit.keys)}") from None
    if bound > limit:
        # Only a large value pays for encoding at validation; its text is kept for the store.
        text = encode_json(frozen)
        size = len(text) if text.isascii() else len(text.encode())
        if size > limit:
            raise _Broken(f"is {size} bytes as JSON, over the limit of {limit} bytes")
        keep_json_text(frozen, text)
    return frozen


# --- The other fields ---------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, str):
        return str.__str__(value)  # a plain str, also from a str subclass (a StrEnum)
    raise _Broken(f"must be a string, not {type(value).__name__}")


def _identifier_text(value: Any, what: str) -> str:
    text: str = value if type(value) is str else _text(value)
    if not text.strip():
        raise _Broken(f"must be a non-empty {what}")
    if len(text) > MAX_ID_LENGTH:
        raise _Broken(f"is {len(text)} characters long, over the limit of {MAX_ID_LENGTH}")
    # For ASCII text, isprintable() means exactly "no character in \x00-\x1f or \x7f".
    if text.isascii():
        has_control = not text.isprintable()
    else:
        has_control = _FORBIDDEN_ID_CHARS.search(text) is not None
    if has_control:
        raise _Broken("must not contain control characters")
    return text


def _event_id(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        value = str(value)
    return _identifier_text(value, "id")


def _aggregate_id(value: Any) -> str:
    return _identifier_text(value, "aggregate id")


def _type_name(value: Any) -> str:
    name: str = value if type(value) is str else _text(value)
    if not name:
        raise _Broken("must be a non-empty name")
    if len(name) > MAX_TYPE_NAME_LENGTH:
        raise _Broken(f"is {len(name)} characters long, over the limit of {MAX_TYPE_NAME_LENGTH}")
    # For ASCII text, isidentifier() is exactly [A-Za-z_][A-Za-z0-9_]*.
    if not (name.isascii() and name.isidentifier()):
        raise _Broken(
            f"{name!r} is not an identifier (letters, digits and '_', not starting with a digit)"
        )
    return name


def _integer(value: Any) -> int:
    if type(value) is int:
        number: int = value
        return number
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Broken(f"must be an integer, not {type(value).__name__}")
    return int.__index__(value)  # the plain int of an IntEnum


def _version(value: Any) -> int:
    number = _integer(value)
    if number < 1:
        raise _Broken(f"must be at least 1, not {number}")
    if number > 2**62:
        raise _Broken(f"must be below 2**62, not {number}")
    return number


def _position(value: Any) -> int | None:
    return None if value is None else _integer(value)


def _utc(value: Any) -> datetime:
    """An aware datetime (or ISO 8601 text with an offset) as a plain datetime in UTC."""
    moment: datetime = value if type(value) is datetime else _plain_datetime(value)
    zone = moment.tzinfo
    if zone is UTC:
        return moment
    if zone is None or moment.utcoffset() is None:
        raise _Broken("must be timezone-aware (a naive datetime has no defined instant)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise _Broken(f"{moment.isoformat()} falls outside the years 1-9999 in UTC") from None


def _plain_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise _Broken(f"must be an ISO 8601 date and time, not {value[:40]!r}") from None
    if isinstance(value, datetime):  # a subclass (pandas, pendulum): keep the plain instant
        return datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            value.tzinfo,
            fold=value.fold,
        )
    raise _Broken(f"must be a timezone-aware datetime or ISO 8601 text, not {type(value).__name__}")


def _optional_utc(value: Any) -> datetime | None:
    return None if value is None else _utc(value)


def _payload(value: Any) -> FrozenDict:
    return _json_object(value, MAX_PAYLOAD_BYTES)


def _metadata(value: Any) -> FrozenDict:
    if isinstance(value, FrozenDict) and not value:  # EMPTY, Event.new's default: no walk
        return EMPTY
    return _json_object(value, MAX_METADATA_BYTES)


_ABSENT: Any = object()

# Each field, in the model's order, with its check and its default (_ABSENT: required).
_FIELDS: tuple[tuple[str, Callable[[Any], Any], Any], ...] = (
    ("id", _event_id, _ABSENT),
    ("event_type", _type_name, _ABSENT),
    ("aggregate_id", _aggregate_id, _ABSENT),
    ("aggregate_type", _type_name, _ABSENT),
    ("version", _version, _ABSENT),
    ("timestamp", _utc, _ABSENT),
    ("payload", _payload, _ABSENT),
    ("metadata", _metadata, EMPTY),
    ("schema_version", _version, 1),
    ("position", _position, None),
    ("recorded_at", _optional_utc, None),
)
_FIELD_NAMES = frozenset(name for name, _, _ in _FIELDS)


def _validated(data: Mapping[Any, Any]) -> dict[str, Any]:
    """The fields of an event built from `data`, checked and normalised, in the model's
    order. Raises EventValidationError listing every problem."""
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    given = 0
    for name, check, default in _FIELDS:
        value = data.get(name, _ABSENT)
        if value is _ABSENT:
            if default is _ABSENT:
                problems.append((name, "is required"))
            else:
                values[name] = default
            continue
        given += 1
        try:
            values[name] = check(value)
        except _Broken as broken:
            problems.append((name, broken.rule))
        except MemoryError:
            raise
        except Exception as error:  # a value whose own methods fail (a tzinfo, a dict subclass)
            problems.append((name, f"cannot be checked ({type(error).__name__}: {error})"))
    if given < len(data):
        problems.extend(
            (str(key), "is not a field of an event (unknown fields are rejected)")
            for key in data
            if key not in _FIELD_NAMES
        )
    if problems:
        first_field, first_rule = problems[0]
        raise EventValidationError(first_field, first_rule, problems=problems)
    return values


def _time_ordered_uuid() -> str:
    """A new event id: an RFC 9562 version 7 UUID, 48 bits of Unix time in milliseconds then
    74 random bits (from os.urandom, as uuid4's). Ids made later sort later, so consecutive
    appends write to the same end of the unique index on ids instead of a random page each:
    about half the WAL on SQLite and far fewer full-page writes on PostgreSQL (see
    bench/RESULTS.md). Unique as uuid4's are; the time it shows is already the event's."""
    stamp = f"{time.time_ns() // 1_000_000:012x}"
    digits = os.urandom(10).hex()
    return (
        f"{stamp[:8]}-{stamp[8:12]}-7{digits[:3]}-{_VARIANT[digits[3]]}{digits[4:7]}-{digits[7:19]}"
    )


# The RFC 4122 variant (binary 10xx) in the 17th hex digit, keeping its two low random bits.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


# --- Comparing content as canonical JSON -------------------------------------------------


def _same_json(left: Any, right: Any) -> bool:
    """Whether two JSON values have the same canonical JSON text (sorted keys, compact), as
    PostgreSQL's jsonb keeps them: key order aside, `1`, `1.0` and `true` all differ. Compared
    member by member rather than by encoding both: a mismatch stops at once, and nothing is
    formatted or sorted."""
    if left is right:
        return True
    if isinstance(left, dict):
        if not isinstance(right, dict) or len(left) != len(right):
            return False
        for key, item in left.items():
            if key not in right or not _same_json(item, right[key]):
                return False
        return True
    if isinstance(left, list):
        if not isinstance(right, list) or len(left) != len(right):
            return False
        return all(map(_same_json, left, right))
    if type(left) is not type(right):
        left, right = _as_jsonb_number(left), _as_jsonb_number(right)
    return type(left) is type(right) and left == right


def _as_jsonb_number(value: Any) -> Any:
    """`value` as PostgreSQL's jsonb gives it back to json.loads: jsonb writes numbers without
    an exponent, so a float Python writes as 1e+16 comes back as the int 10000000000000000.
    (Its other difference, no negative zero, needs nothing: -0.0 == 0.0.)"""
    if type(value) is float:
        text = repr(value)
        if "e+" in text:
            return int(Decimal(text))
    return value


def _identity(event: Event) -> tuple[Any, ...]:
    """The fields of an event that same_content compares as they are."""
    return (
        event.id,
        event.event_type,
        event.aggregate_id,
        event.aggregate_type,
        event.version,
        event.schema_version,
        event.timestamp,
    )


# --- The model -----------------------------------------------------------------------------

_set = object.__setattr__


def _install(event: BaseModel, values: dict[str, Any], fields_set: set[str]) -> None:
    """Give `event` its state, as BaseModel.model_construct does (for a model with neither
    extra fields nor private attributes): the checks have already run."""
    _set(event, "__dict__", values)
    _set(event, "__pydantic_fields_set__", fields_set)
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)


def translate_validation_error(error: pydantic.ValidationError) -> EventValidationError:
    """Turn pydantic's error into ours, keeping every problem and naming each field (an
    `EventValidationError` that pydantic wrapped is returned as it was)."""
    problems: list[tuple[str, str]] = []
    for item in error.errors(include_url=False):
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, EventValidationError) and not item["loc"]:
            return cause
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
    Timestamps must be timezone-aware (datetimes, or ISO 8601 text with an offset) and are
    normalised to UTC.

    `payload` and `metadata` are deeply frozen copies of the given objects: they compare
    equal to plain dicts and lists and encode with `json.dumps` as those would, but refuse
    every change (`TypeError`). `dict(event.payload)`, `{**event.payload}`, `model_dump()`
    and `to_dict()` give plain, mutable data.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    event_type: str
    aggregate_id: str
    aggregate_type: str
    version: int
    timestamp: datetime
    payload: Mapping[str, Any]
    metadata: Mapping[str, Any] = pydantic.Field(default_factory=lambda: EMPTY)
    schema_version: int = 1
    position: int | None = None
    recorded_at: datetime | None = None

    def __init__(self, **data: Any) -> None:
        """Build an event from its fields, checking every rule; raises EventValidationError
        listing every problem (and nothing else, whatever the values)."""
        _install(self, _validated(data), set(data))

    @model_validator(mode="wrap")
    @classmethod
    def _checked(cls, data: Any, handler: pydantic.ValidatorFunctionWrapHandler) -> Any:
        # pydantic's own entry points (model_validate, model_validate_json, an Event as a
        # field of another model) run the same rules as Event(...), and not pydantic's.
        if isinstance(data, cls):
            return data
        return cls._built(data)

    @classmethod
    def _built(cls, data: Any) -> Self:
        if type(data) is not dict and not isinstance(data, Mapping):
            raise EventValidationError("event", f"must be a JSON object, not {type(data).__name__}")
        event = cls.__new__(cls)
        _install(event, _validated(data), set(data))
        return event

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """As pydantic's, with the rules of `Event(...)`; raises EventValidationError."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except pydantic.ValidationError as error:
            raise translate_validation_error(error) from None

    @classmethod
    def model_validate_json(cls, json_data: Any, *args: Any, **kwargs: Any) -> Self:
        """As pydantic's, with the rules of `Event(...)`; raises EventValidationError."""
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except pydantic.ValidationError as error:
            raise translate_validation_error(error) from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build an event from a decoded JSON object (as `to_dict` writes it), checking every
        rule; raises EventValidationError."""
        return cls._built(data)

    @classmethod
    def from_store(
        cls,
        *,
        position: int,
        id: str,
        event_type: str,
        aggregate_id: str,
        aggregate_type: str,
        version: int,
        timestamp: datetime,
        payload: Mapping[str, Any],
        metadata: Mapping[str, Any],
        schema_version: int,
        recorded_at: datetime,
    ) -> Self:
        """An event read back from the store. Trusts the values (they were checked before they
        were stored), so no rule runs: it only freezes `payload` and `metadata` (decoded JSON,
        not text) and normalises both (aware) datetimes to UTC, whatever zone the database
        driver used."""
        event = cls.__new__(cls)
        values = {
            "id": id,
            "event_type": event_type,
            "aggregate_id": aggregate_id,
            "aggregate_type": aggregate_type,
            "version": version,
            "timestamp": timestamp if timestamp.tzinfo is UTC else timestamp.astimezone(UTC),
            "payload": freeze(payload),
            "metadata": freeze(metadata),
            "schema_version": schema_version,
            "position": position,
            "recorded_at": (
                recorded_at if recorded_at.tzinfo is UTC else recorded_at.astimezone(UTC)
            ),
        }
        _install(event, values, set(_FIELD_NAMES))
        return event

    @classmethod
    # The pydantic mypy plugin types model_construct with each field as a keyword argument;
    # this takes the same arguments, untyped as pydantic's own.
    def model_construct(  # type: ignore[override]
        cls, _fields_set: set[str] | None = None, **values: Any
    ) -> Self:
        """As pydantic's (no rule runs), except that `payload` and `metadata` are frozen, so
        that no event holds mutable data. Prefer `from_store` for stored rows."""
        event = super().model_construct(_fields_set, **values)
        for name in ("payload", "metadata"):
            if name in event.__dict__:
                event.__dict__[name] = freeze(event.__dict__[name])
        return event

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with the fields in `update` replaced. A new `payload` or `metadata` is
        checked by the same rules as at construction (a JSON object within its size limit,
        no NUL, finite numbers, ...) and frozen, so that no copy can carry what `Event(...)`
        would refuse; other fields are taken as given, as in pydantic's (a store-assigned
        position). A name that is not a field raises EventValidationError."""
        if update:
            unknown = [name for name in update if name not in _FIELD_NAMES]
            if unknown:
                raise EventValidationError(
                    str(unknown[0]), "is not a field of an event (model_copy cannot add one)"
                )
            if "payload" in update or "metadata" in update:
                update = {
                    name: _checked_json(name, value) if name in _JSON_LIMITS else value
                    for name, value in update.items()
                }
        return super().model_copy(update=update, deep=deep)

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict of plain, mutable values (timestamps as ISO 8601
        strings)."""
        return self.model_dump(mode="json")

    def payload_json(self) -> str:
        """The payload as compact JSON text (`encode_json(event.payload)`), computed at most
        once per payload (and not at all for a large payload, whose size check made it)."""
        return _json_text(self.payload)

    def metadata_json(self) -> str:
        """The metadata as compact JSON text, computed at most once (see `payload_json`)."""
        return _json_text(self.metadata)

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
        return cls._built(
            {
                "id": _time_ordered_uuid(),
                "event_type": event_type,
                "aggregate_id": aggregate_id,
                "aggregate_type": aggregate_type,
                "version": version,
                "timestamp": timestamp if timestamp is not None else datetime.now(UTC),
                "payload": _as_dict(payload),
                "metadata": EMPTY if metadata is None else _as_dict(metadata),
                "schema_version": schema_version,
            }
        )

    def same_content(self, other: Event) -> bool:
        """Whether two events describe the same fact, as an idempotent retry must: every field
        but the store-assigned `position` and `recorded_at` equal, payload and metadata
        compared as canonical JSON (key order aside, `1`, `1.0` and `true` differ)."""
        if _identity(self) != _identity(other):
            return False
        return _same_json(self.payload, other.payload) and _same_json(self.metadata, other.metadata)


def _as_dict(value: Any) -> Any:
    # Event.new takes any Mapping; anything else goes on to be refused by the payload rule.
    if type(value) is not dict and isinstance(value, Mapping) and not isinstance(value, dict):
        return dict(value)
    return value


def _json_text(value: Mapping[str, Any]) -> str:
    if type(value) is FrozenDict:
        return json_text(value, encode_json)
    return encode_json(value)


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
