"""The event's validation rules: every rejection names the field and the rule."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventstore import Command, Event, EventValidationError, new_event
from eventstore.events import MAX_ID_LENGTH, MAX_PAYLOAD_BYTES, MAX_TYPE_NAME_LENGTH


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


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(payload=st.dictionaries(st.text(max_size=10), json_values, max_size=6))
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
    from eventstore.producer._wire import to_document

    for moment in (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, 2, 3, 45, tzinfo=UTC)):
        event = Event(**fields(timestamp=moment)).model_copy(
            update={"position": 7, "recorded_at": moment}
        )
        assert to_document(event) == event.to_dict()
