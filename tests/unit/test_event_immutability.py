"""An event is immutable all the way down, yet its payload reads as plain JSON data."""

from __future__ import annotations

import copy
import json
import operator
import pickle
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventstore import Event
from eventstore.events import MAX_PAYLOAD_BYTES, encode_json, freeze_json


def payload() -> dict[str, Any]:
    return {"zone": "forest", "path": [[1, 2], {"x": 1.5}], "tags": {"pvp": True}, "n": None}


def event(**changes: Any) -> Event:
    data: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "event_type": "PlayerMoved",
        "aggregate_id": "player-1",
        "aggregate_type": "Player",
        "version": 1,
        "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
        "payload": payload(),
        "metadata": {"user": "u", "trace": ["a"]},
    }
    return Event(**data | changes)


def is_frozen_all_the_way_down(value: Any) -> bool:
    if isinstance(value, dict):
        return type(value) is not dict and all(map(is_frozen_all_the_way_down, value.values()))
    if isinstance(value, list):
        return type(value) is not list and all(map(is_frozen_all_the_way_down, value))
    return not isinstance(value, tuple)


def is_plain_all_the_way_down(value: Any) -> bool:
    if isinstance(value, dict):
        return type(value) is dict and all(map(is_plain_all_the_way_down, value.values()))
    if isinstance(value, list):
        return type(value) is list and all(map(is_plain_all_the_way_down, value))
    return True


# Each change is given the payload and the metadata, typed Any: mypy already refuses every
# one of them on a Mapping[str, Any], which is the point, but here they must run.
Change = Callable[[Any, Any], object]

CHANGES: dict[str, Change] = {
    "set an item": lambda p, m: operator.setitem(p, "zone", "harbor"),
    "add an item": lambda p, m: operator.setitem(p, "new", 1),
    "delete an item": lambda p, m: operator.delitem(p, "zone"),
    "update": lambda p, m: p.update(zone="harbor"),
    "pop": lambda p, m: p.pop("zone"),
    "popitem": lambda p, m: p.popitem(),
    "setdefault": lambda p, m: p.setdefault("new", 1),
    "clear": lambda p, m: p.clear(),
    "|=": lambda p, m: p.__ior__({"new": 1}),
    "re-run __init__": lambda p, m: p.__init__({"new": 1}),
    "set a nested item": lambda p, m: operator.setitem(p["tags"], "pvp", False),
    "metadata item": lambda p, m: operator.setitem(m, "user", "v"),
    "append": lambda p, m: p["path"].append(3),
    "extend": lambda p, m: p["path"].extend([3]),
    "insert": lambda p, m: p["path"].insert(0, 3),
    "list pop": lambda p, m: p["path"].pop(),
    "remove": lambda p, m: p["path"].remove([1, 2]),
    "list clear": lambda p, m: p["path"].clear(),
    "sort": lambda p, m: p["path"][0].sort(),
    "reverse": lambda p, m: p["path"].reverse(),
    "set a list item": lambda p, m: operator.setitem(p["path"], 0, 3),
    "set a slice": lambda p, m: operator.setitem(p["path"], slice(0, 1), []),
    "delete a list item": lambda p, m: operator.delitem(p["path"], 0),
    "+=": lambda p, m: p["path"].__iadd__([3]),
    "*=": lambda p, m: p["path"].__imul__(2),
    "a list in a list": lambda p, m: p["path"][0].append(3),
    "a dict in a list": lambda p, m: operator.setitem(p["path"][1], "x", 0),
    "metadata list": lambda p, m: m["trace"].append("b"),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_no_part_of_payload_or_metadata_can_be_changed(change: Change) -> None:
    subject = event()
    before = subject.to_dict()
    with pytest.raises(TypeError, match="events are immutable") as caught:
        change(subject.payload, subject.metadata)
    assert "build a new event" in str(caught.value) and "dict(event.payload)" in str(caught.value)
    assert subject.to_dict() == before


def test_augmented_assignment_on_the_payload_is_refused() -> None:
    subject = event()
    frozen: Any = subject.payload
    with pytest.raises(TypeError, match="immutable"):
        frozen["path"] += [3]
    with pytest.raises(TypeError, match="immutable"):
        frozen["zone"] += "-east"
    assert subject.payload == payload()


def test_the_callers_objects_are_copied_not_shared() -> None:
    given_payload = payload()
    subject = event(payload=given_payload)
    given_payload["zone"] = "harbor"
    given_payload["path"][0].append(3)
    given_payload["tags"]["pvp"] = False
    assert subject.payload == payload()


def test_a_frozen_payload_reads_as_plain_json() -> None:
    subject = event()
    plain = payload()
    assert subject.payload == plain and plain == subject.payload
    assert subject.payload["path"] == [[1, 2], {"x": 1.5}]
    assert isinstance(subject.payload, dict) and isinstance(subject.payload["path"], list)
    for options in ({}, {"separators": (",", ":")}, {"sort_keys": True, "ensure_ascii": False}):
        assert json.dumps(subject.payload, **options) == json.dumps(plain, **options)
    assert json.loads(subject.payload_json()) == plain
    assert subject.payload_json() == encode_json(plain)


def test_copies_made_by_the_caller_are_plain_and_mutable() -> None:
    subject = event()
    frozen: Any = subject.payload
    for copied in (dict(frozen), {**frozen}, frozen.copy()):
        assert type(copied) is dict
        copied["zone"] = "harbor"
    assert type(list(subject.payload["path"])) is list
    assert type(subject.payload["path"][:]) is list
    assert type(frozen | {"x": 1}) is dict
    assert subject.payload["zone"] == "forest"


@pytest.mark.parametrize(
    "dump",
    [Event.model_dump, lambda e: e.model_dump(mode="json"), Event.to_dict],
    ids=["model_dump", "model_dump-json", "to_dict"],
)
def test_dumps_are_plain_mutable_data(dump: Callable[[Event], dict[str, Any]]) -> None:
    subject = event()
    dumped = dump(subject)
    assert is_plain_all_the_way_down(dumped)
    dumped["payload"]["path"][0].append(3)
    dumped["metadata"]["user"] = "v"
    assert subject.payload == payload() and subject.metadata["user"] == "u"


def test_pickle_and_deepcopy_keep_an_equal_frozen_event() -> None:
    subject = event()
    for twin in (pickle.loads(pickle.dumps(subject)), copy.deepcopy(subject), copy.copy(subject)):
        assert twin == subject
        assert is_frozen_all_the_way_down(twin.payload)
        assert is_frozen_all_the_way_down(twin.metadata)
    assert pickle.loads(pickle.dumps(subject.payload)) == payload()


def test_model_copy_freezes_a_new_payload() -> None:
    subject = event()
    given_payload: dict[str, Any] = {"pos": [1, 2], "zone": {"name": "spawn"}}
    copied = subject.model_copy(update={"payload": given_payload, "schema_version": 2})
    given_payload["pos"].append(3)
    assert copied.payload == {"pos": [1, 2], "zone": {"name": "spawn"}}
    assert is_frozen_all_the_way_down(copied.payload)
    assert copied.schema_version == 2 and subject.schema_version == 1
    assert subject.model_copy(update={"position": 4}).payload is subject.payload
    with pytest.raises(ValueError, match="not a field"):
        subject.model_copy(update={"paylaod": {}})


def test_model_construct_freezes_too() -> None:
    values: dict[str, Any] = {"payload": {"a": [1]}, "metadata": {"b": {}}}
    built = Event.model_construct(**values)
    assert is_frozen_all_the_way_down(built.payload) and is_frozen_all_the_way_down(built.metadata)


def test_from_store_trusts_the_row_but_freezes_and_normalises_it() -> None:
    five_hours = timezone(timedelta(hours=5))
    stored = Event.from_store(
        position=42,
        id="e-1",
        event_type="not an identifier",  # trusted: no rule runs
        aggregate_id="player-1",
        aggregate_type="Player",
        version=3,
        timestamp=datetime(2026, 1, 1, 5, tzinfo=five_hours),
        payload={"path": [[1, 2]], "zone": "spawn"},
        metadata={},
        schema_version=1,
        recorded_at=datetime(2026, 1, 1, 6, 30, tzinfo=five_hours),
    )
    assert stored.timestamp == datetime(2026, 1, 1, tzinfo=UTC) and stored.timestamp.tzinfo is UTC
    assert stored.recorded_at == datetime(2026, 1, 1, 1, 30, tzinfo=UTC)
    assert stored.recorded_at.tzinfo is UTC
    assert (stored.position, stored.event_type) == (42, "not an identifier")
    assert is_frozen_all_the_way_down(stored.payload) and stored.payload["path"] == [[1, 2]]
    assert stored.payload_json() == '{"path":[[1,2]],"zone":"spawn"}'
    assert stored.model_fields_set == set(Event.model_fields)


def test_freeze_json_freezes_without_checking() -> None:
    data: dict[str, Any] = {"a": [1, (2, 3), {"b": [None]}], "c": "text"}
    frozen = freeze_json(data)
    assert frozen == {"a": [1, [2, 3], {"b": [None]}], "c": "text"}
    assert is_frozen_all_the_way_down(frozen)
    data["a"].append(4)
    assert frozen["a"] == [1, [2, 3], {"b": [None]}]
    assert freeze_json(frozen) is frozen
    assert freeze_json([1, {"x": []}]) == [1, {"x": []}]
    assert freeze_json("text") == "text" and freeze_json(None) is None
    assert freeze_json({"nan": float("inf")})["nan"] == float("inf")  # no rules: trusted data


def test_a_large_payload_keeps_the_json_its_size_check_encoded() -> None:
    blob = "é" * (MAX_PAYLOAD_BYTES // 2 - 10)
    subject = event(payload={"blob": blob})
    text = subject.payload_json()
    assert text == encode_json({"blob": blob}) and subject.payload_json() is text


def test_the_frozen_types_cannot_be_built_or_thawed_directly() -> None:
    subject = event()
    with pytest.raises(TypeError, match="immutable"):
        cast(Any, type(subject.payload))({"a": 1})
    with pytest.raises(TypeError):
        subject.payload.__class__ = dict
    with pytest.raises(TypeError):
        subject.payload["path"].__class__ = list


def test_event_state_is_what_pydantic_itself_builds() -> None:
    # Event(...) sets its state as BaseModel.model_construct does; if pydantic ever adds to
    # that state, this fails before anything subtler does.
    subject = event()
    fields_set = set(subject.model_fields_set)
    constructed = Event.model_construct(_fields_set=fields_set, **subject.__dict__)
    assert subject == constructed
    for name in ("__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"):
        assert getattr(subject, name) == getattr(constructed, name), name


json_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=15,
)


@given(value=st.dictionaries(st.text(max_size=5), json_data, max_size=4))
def test_any_json_payload_is_frozen_equal_and_encoded_alike(value: dict[str, Any]) -> None:
    value = json.loads(json.dumps(value).replace("\\u0000", ""))  # NUL is refused
    subject = event(payload=value)
    assert subject.payload == value and is_frozen_all_the_way_down(subject.payload)
    assert json.dumps(subject.payload) == json.dumps(value)
    assert subject.to_dict()["payload"] == value
    assert Event.from_dict(subject.to_dict()) == subject
