"""The event's validation rules: every rejection names the field and the rule."""

from __future__ import annotations

import enum
import json
import math
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import Command, Event, EventValidationError, new_event
from eventstore.events import (
    MAX_ID_LENGTH,
    MAX_METADATA_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_TYPE_NAME_LENGTH,
    encode_json,
)


def fields(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "event_type": "PlayerMoved",
        "aggregate_id": "player-1",
        "aggregate_type": "Player",
        "version": 1,
        "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
        "payload": {"x": 1},
        "metadata": {"user": "u"},
    }
    base.update(changes)
    return base


def rejected(field: str, **changes: Any) -> EventValidationError:
    with pytest.raises(EventValidationError) as caught:
        Event(**fields(**changes))
    assert caught.value.field == field
    assert field in str(caught.value)
    return caught.value


def test_a_valid_event_is_built_and_frozen() -> None:
    event = Event(**fields())
    assert event.schema_version == 1 and event.position is None
    with pytest.raises(ValueError, match="frozen"):
        event.version = 2  # type: ignore[misc]


def test_the_helper_fills_id_and_timestamp() -> None:
    event = new_event("Player", "p", "PlayerJoined", 1, {"name": "a"})
    assert uuid.UUID(event.id)
    assert abs(datetime.now(UTC) - event.timestamp) < timedelta(seconds=5)
    assert (
        Event.new(
            aggregate_type="Player", aggregate_id="p", event_type="X", version=1, payload={}
        ).id
        != event.id
    )


def test_timestamps_are_normalised_to_utc() -> None:
    event = Event(**fields(timestamp=datetime(2026, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))))
    assert event.timestamp == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert event.timestamp.utcoffset() == timedelta(0)


def test_the_json_form_round_trips() -> None:
    event = Event(**fields(payload={"nested": {"list": [1, 2.5, None, "x"]}}))
    assert Event.from_dict(event.to_dict()) == event


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("id", "", "non-empty"),
        ("id", "x" * (MAX_ID_LENGTH + 1), "over the limit"),
        ("id", "a\nb", "control characters"),
        ("aggregate_id", "   ", "non-empty"),
        ("event_type", "Player Moved", "not an identifier"),
        ("event_type", "9Lives", "not an identifier"),
        ("aggregate_type", "", "non-empty"),
        ("aggregate_type", "A" * (MAX_TYPE_NAME_LENGTH + 1), "over the limit"),
        ("version", 0, "at least 1"),
        ("version", -3, "at least 1"),
        ("version", True, "integer"),
        ("version", "2", "integer"),
        ("schema_version", 0, "at least 1"),
        ("timestamp", datetime(2026, 1, 1), "timezone-aware"),
        ("timestamp", "2026-01-01T00:00:00", "timezone-aware"),
        ("payload", [1, 2], "JSON object"),
        ("payload", "text", "JSON object"),
        ("payload", {"x": math.inf}, "non-finite"),
        ("payload", {"x": [1, math.nan]}, "non-finite"),
        ("payload", {1: "x"}, "non-string key"),
        ("payload", {"x": {1, 2}}, "not JSON"),
        ("payload", {"x": object()}, "not JSON"),
        ("payload", {"blob": "x" * MAX_PAYLOAD_BYTES}, "over the limit"),
        ("metadata", "user=1", "JSON object"),
        ("metadata", {"t": datetime(2026, 1, 1, tzinfo=UTC)}, "not JSON"),
        # Rules added with the frozen payload:
        ("payload", {"x": "a\x00b"}, "NUL"),
        ("payload", {"a\x00": 1}, "NUL"),
        ("payload", {"x": [{"y": ["\x00"]}]}, "NUL"),
        ("metadata", {"user": "\x00"}, "NUL"),
        ("metadata", {"\x00": "u"}, "NUL"),
        ("payload", {"x": "\ud800"}, "lone surrogate"),
        ("metadata", {"\udfff": 1}, "lone surrogate"),
        ("payload", {"x": 10**5000}, "integer too long"),
        ("payload", {"x": Decimal("1.5")}, "not JSON"),
        ("payload", {"x": b"bytes"}, "not JSON"),
        ("payload", {None: 1}, "non-string key"),
        ("payload", {(1, 2): 1}, "non-string key"),
        ("metadata", {"m": math.nan}, "non-finite"),
        ("metadata", {"blob": "x" * MAX_METADATA_BYTES}, "over the limit"),
        ("timestamp", datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), "years 1-9999"),
        ("timestamp", datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))), "years 1-9999"),
        ("timestamp", 1767225600, "not int"),
        ("timestamp", "yesterday", "ISO 8601"),
        ("timestamp", None, "not NoneType"),
        ("recorded_at", datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), "years 1-9999"),
        ("recorded_at", "2026-01-01T00:00:00", "timezone-aware"),
        ("id", b"abc", "string"),
        ("id", 7, "string"),
        ("event_type", None, "string"),
        ("version", 1.0, "integer"),
        ("version", 2**62 + 1, "below 2**62"),
        ("position", True, "integer"),
        ("position", "3", "integer"),
    ],
)
def test_each_rule_names_its_field(field: str, value: Any, rule: str) -> None:
    error = rejected(field, **{field: value})
    assert rule in error.rule


def test_deep_nesting_is_rejected() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["a"] = {}
        node = node["a"]
    assert "deeper" in rejected("payload", payload=deep).rule


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(EventValidationError, match="colour"):
        Event(**fields(colour="red"))


def test_every_problem_is_reported() -> None:
    with pytest.raises(EventValidationError) as caught:
        Event(**fields(version=0, payload=[]))
    assert {f for f, _ in caught.value.problems} == {"version", "payload"}


def test_validation_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        Event(**fields(version=0))


# Storable text: UTF-8 has no lone surrogates, and PostgreSQL cannot store NUL.
storable = st.characters(codec="utf-8", exclude_characters="\x00")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(storable, max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(storable, max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(payload=st.dictionaries(st.text(storable, max_size=10), json_values, max_size=6))
def test_any_json_object_is_a_valid_payload(payload: dict[str, Any]) -> None:
    assert Event(**fields(payload=payload)).payload == payload


@given(name=st.text(min_size=1, max_size=30))
def test_type_names_are_accepted_exactly_when_they_are_identifiers(name: str) -> None:
    is_identifier = name.isascii() and name.isidentifier()
    try:
        Event(**fields(event_type=name))
    except EventValidationError as error:
        assert not is_identifier
        assert error.field == "event_type"
    else:
        assert is_identifier


@given(version=st.integers(max_value=0))
def test_no_version_below_one_is_accepted(version: int) -> None:
    rejected("version", version=version)


@given(value=st.sampled_from([math.inf, -math.inf, math.nan, -math.nan]))
def test_no_non_finite_number_is_accepted_anywhere(value: float) -> None:
    rejected("payload", payload={"deep": [{"x": value}]})
    rejected("metadata", metadata={"m": value})


@given(offset=st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_any_offset_lands_on_the_same_instant_in_utc(offset: int) -> None:
    zone = timezone(timedelta(minutes=offset))
    moment = datetime(2026, 6, 1, 12, tzinfo=UTC)
    event = Event(**fields(timestamp=moment.astimezone(zone)))
    assert event.timestamp == moment and event.timestamp.tzinfo == UTC


def test_commands_are_recognised_by_shape() -> None:
    class MovePlayer:
        aggregate_id = "player-1"
        command_type = "MovePlayer"

    assert isinstance(MovePlayer(), Command)


def test_the_wire_document_is_the_events_json_form() -> None:
    from eventstore._wire import to_document

    for moment in (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, 2, 3, 45, tzinfo=UTC)):
        event = Event(**fields(timestamp=moment)).model_copy(
            update={"position": 7, "recorded_at": moment}
        )
        assert to_document(event) == event.to_dict()


# --- Every failure is an EventValidationError --------------------------------------------


def test_iso_text_with_an_offset_is_a_timestamp() -> None:
    for text in ("2026-01-01T00:00:00Z", "2026-01-01T02:00:00+02:00", "2026-01-01 00:00:00.5Z"):
        event = Event(**fields(timestamp=text, recorded_at=text))
        assert event.timestamp.replace(microsecond=0) == datetime(2026, 1, 1, tzinfo=UTC)
        assert event.timestamp.tzinfo is UTC and event.recorded_at == event.timestamp


def test_garbage_given_to_from_dict_or_new_is_a_validation_error() -> None:
    with pytest.raises(EventValidationError, match="not a field"):
        Event.from_dict({1: "x", **fields()})  # type: ignore[dict-item]
    with pytest.raises(EventValidationError, match="JSON object"):
        Event.from_dict([("id", "x")])  # type: ignore[arg-type]
    with pytest.raises(EventValidationError) as caught:
        Event.from_dict({})
    assert {"id", "payload", "timestamp"} <= {f for f, _ in caught.value.problems}
    with pytest.raises(EventValidationError, match="JSON object"):
        new_event("Player", "p", "PlayerJoined", 1, [("name", "a")])  # type: ignore[arg-type]
    with pytest.raises(EventValidationError, match="JSON object"):
        new_event("Player", "p", "PlayerJoined", 1, {}, metadata=[1])


def test_pydantic_entry_points_run_the_same_rules() -> None:
    with pytest.raises(EventValidationError) as caught:
        Event.model_validate(fields(version=0, payload={"x": "\x00"}))
    assert {f for f, _ in caught.value.problems} == {"version", "payload"}
    with pytest.raises(EventValidationError):
        Event.model_validate_json("{not json")
    event = Event(**fields())
    assert Event.model_validate_json(json.dumps(event.to_dict())) == event


def test_subclasses_of_json_types_are_stored_as_the_plain_values() -> None:
    class Colour(str, enum.Enum):  # noqa: UP042 (str() of this kind gives "Colour.RED")
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    event = Event(**fields(payload={Colour.RED: [Level.HIGH, Colour.RED, (1, 2.5)]}))
    assert event.payload == {"red": [3, "red", [1, 2.5]]}
    key, [level, colour, _] = next(iter(event.payload.items()))
    assert (type(key), type(level), type(colour)) == (str, int, str)
    assert Event(**fields(version=Level.HIGH)).version.__class__ is int


def test_new_ids_are_time_ordered_version_7_uuids() -> None:
    ids = [new_event("Player", "p", "PlayerJoined", 1, {}).id for _ in range(200)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)
        assert abs((parsed.int >> 80) - time.time() * 1000) < 60_000  # its time: now, in ms
    # Ids of later milliseconds sort after earlier ones (within one, at random).
    first = new_event("Player", "p", "PlayerJoined", 1, {}).id
    started = time.monotonic_ns()
    while time.monotonic_ns() - started < 2_000_000:  # two milliseconds later
        pass
    assert new_event("Player", "p", "PlayerJoined", 1, {}).id > first


@pytest.mark.parametrize(("char", "width"), [("x", 1), ("é", 2), ("😀", 4), ("\n", 2), ("\x01", 6)])
def test_the_size_limit_is_exact_in_compact_utf8_json(char: str, width: int) -> None:
    room = (MAX_PAYLOAD_BYTES - len('{"b":""}')) // width
    at_limit = Event(**fields(payload={"b": char * room}))
    assert len(encode_json(at_limit.payload).encode()) <= MAX_PAYLOAD_BYTES
    assert "over the limit" in rejected("payload", payload={"b": char * (room + 1)}).rule


def test_a_problem_in_payload_does_not_hide_the_others() -> None:
    with pytest.raises(EventValidationError) as caught:
        Event(**fields(id="", payload={"x": "\x00"}, metadata={"y": math.inf}, colour=1))
    assert [f for f, _ in caught.value.problems] == ["id", "payload", "metadata", "colour"]
    assert "$.x" in caught.value.problems[1][1] and "$.y" in caught.value.problems[2][1]


def _nest(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


# Values of every kind a caller might pass by mistake, JSON or not.
anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([18, 19, 20, 4299, 4300, 5000]).map(lambda digits: -(10**digits))
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["\x00", "a\ud800", "\udfff", "Z"])
    | st.decimals(allow_nan=True)
    | st.binary(max_size=4)
    | st.datetimes()
    | st.sets(st.integers(), max_size=2)
    | st.integers(min_value=0, max_value=40).map(_nest),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=6) | st.integers() | st.none(), children, max_size=4)
    ),
    max_leaves=12,
)
zones = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
aware = st.datetimes(timezones=zones)
moments = (
    aware
    | aware.map(datetime.isoformat)
    | st.datetimes()
    | st.just(datetime.min.replace(tzinfo=timezone(timedelta(hours=5))))
)
json_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=5) | st.dictionaries(
    st.text(max_size=6) | st.none(), anything, max_size=5
)
# Plausible values of each field: more often valid than not.
plausible: dict[str, st.SearchStrategy[Any]] = {
    "id": st.uuids().map(str) | st.uuids() | st.text(max_size=140),
    "event_type": st.from_regex(r"[A-Za-z_]\w{0,12}", fullmatch=True) | st.text(max_size=6),
    "aggregate_id": st.from_regex(r"[\w-]{1,12}", fullmatch=True) | st.text(max_size=12),
    "aggregate_type": st.sampled_from(["Player", "NPC", "World", "9x"]),
    "version": st.integers(min_value=1, max_value=2**63) | st.integers(max_value=1),
    "timestamp": aware | moments,
    "payload": json_objects,
    "metadata": json_objects,
    "schema_version": st.integers(min_value=0, max_value=3),
    "position": st.none() | st.integers(),
    "recorded_at": st.none() | aware | moments,
}
required = ("id", "event_type", "aggregate_id", "aggregate_type", "version", "timestamp", "payload")


@st.composite
def events_data(draw: st.DrawFn) -> dict[str, Any]:
    """Plausible fields, some of them replaced by anything at all, dropped, or added."""
    data = {name: draw(plausible[name]) for name in required}
    data |= draw(st.fixed_dictionaries({}, optional={k: plausible[k] for k in plausible}))
    for name in draw(st.lists(st.sampled_from([*plausible, "colour"]), max_size=2)):
        data[name] = draw(anything)
    for name in draw(st.lists(st.sampled_from(required), max_size=1)):
        del data[name]
    return data


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=events_data(), build=st.sampled_from([lambda d: Event(**d), Event.from_dict]))
def test_building_an_event_raises_nothing_but_validation_errors(
    data: dict[str, Any], build: Callable[[dict[str, Any]], Event]
) -> None:
    try:
        event = build(data)
    except EventValidationError as error:
        assert error.problems and all(field and rule for field, rule in error.problems)
        return
    assert len(encode_json(event.payload).encode()) <= MAX_PAYLOAD_BYTES
    assert len(encode_json(event.metadata).encode()) <= MAX_METADATA_BYTES
    assert json.loads(encode_json(event.payload)) == event.payload
    assert event.timestamp.tzinfo is UTC
    assert Event.from_dict(event.to_dict()) == event


# --- Idempotent retries compare canonical JSON -------------------------------------------


def test_same_content_tells_json_types_apart() -> None:
    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        event_id = str(uuid.uuid4())
        return Event(**fields(id=event_id, payload=a)).same_content(
            Event(**fields(id=event_id, payload=b))
        )

    assert not same({"on": 1}, {"on": True})
    assert not same({"n": 1}, {"n": 1.0})
    assert not same({"n": [0]}, {"n": [False]})
    assert not same({"n": {"a": 1}}, {"n": {"a": 2}})
    assert same({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"d": 3, "c": 2}, "a": 1})
    # As PostgreSQL's jsonb gives numbers back (no exponent, no negative zero):
    assert same({"n": 1e16}, {"n": 10**16})
    assert same({"n": [-0.0]}, {"n": [0.0]})
    assert not same({"n": 1e16}, {"n": 10**16 + 1})
    assert not same({"n": "1e+16"}, {"n": "10000000000000000"})


def test_same_content_ignores_only_what_the_store_assigns() -> None:
    event = Event(**fields())
    stored = event.model_copy(update={"position": 9, "recorded_at": datetime.now(UTC)})
    assert event.same_content(stored) and stored.same_content(event)
    for change in (
        {"version": 2},
        {"event_type": "PlayerLeft"},
        {"aggregate_id": "player-2"},
        {"schema_version": 2},
        {"timestamp": datetime(2026, 1, 2, tzinfo=UTC)},
        {"metadata": {"user": "v"}},
        {"metadata": {"user": "u", "extra": None}},
    ):
        assert not event.same_content(event.model_copy(update=change)), change


def canonical(value: Any) -> str:
    """The spec: canonical JSON text of `value` as PostgreSQL's jsonb returns it (numbers
    written without an exponent, no negative zero)."""

    def as_jsonb(item: Any) -> Any:
        if isinstance(item, float):
            return int(Decimal(repr(item))) if "e+" in repr(item) else item + 0.0
        if isinstance(item, dict):
            return {key: as_jsonb(member) for key, member in item.items()}
        if isinstance(item, list):
            return [as_jsonb(member) for member in item]
        return item

    return json.dumps(as_jsonb(value), sort_keys=True, separators=(",", ":"))


def reordered(value: Any, to_float: bool) -> Any:
    """`value` with every object's keys in reverse order, and ints made floats if asked."""
    if isinstance(value, dict):
        return {key: reordered(value[key], to_float) for key in reversed(value)}
    if isinstance(value, list):
        return [reordered(item, to_float) for item in value]
    if to_float and type(value) is int and abs(value) < 2**53:
        return float(value)
    return value


@given(
    left=st.dictionaries(st.text(storable, max_size=4), json_values, max_size=4),
    right=st.dictionaries(st.text(storable, max_size=4), json_values, max_size=4),
    relation=st.sampled_from(["independent", "reordered", "floats"]),
)
def test_same_content_is_equality_of_canonical_json(
    left: dict[str, Any], right: dict[str, Any], relation: str
) -> None:
    if relation != "independent":
        right = reordered(left, to_float=relation == "floats")
    event_id = str(uuid.uuid4())
    same = Event(**fields(id=event_id, payload=left)).same_content(
        Event(**fields(id=event_id, payload=right))
    )
    assert same == (canonical(left) == canonical(right))
