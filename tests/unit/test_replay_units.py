"""Replay's parts that need no database server: diffs of states, state as JSON, reducer
arguments, control requests, and the control handler on an embedded (SQLite) store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eventstore import EventStore, open_store
from eventstore.demo import projections as demo_projections
from eventstore.demo import reducers as demo_reducers
from eventstore.demo.world import World, player_state
from eventstore.errors import ConfigurationError, ReplayError
from eventstore.replay import (
    ControlHandler,
    Outcome,
    Reducer,
    Replayer,
    StateChange,
    check_reducers,
    diff,
    state_json,
)
from eventstore.replay._requests import (
    EXPIRED,
    INVALID_REQUEST,
    NOT_FOUND,
    UNKNOWN_KIND,
    UNKNOWN_PROJECTION,
    Malformed,
    PingRequest,
    RebuildRequest,
    ReplayRequest,
    parse_request,
)
from tests.helpers import T0, event

# -- diff ---------------------------------------------------------------------------------


def changes(before: Any, after: Any) -> list[dict[str, Any]]:
    return [c.to_dict() for c in diff(before, after)]


def test_equal_states_differ_in_nothing() -> None:
    state = {"a": [1, {"b": None}], "c": "x", "d": 1.5}
    assert diff(state, json.loads(json.dumps(state))) == []
    assert diff([], []) == [] and diff(None, None) == []


def test_nested_objects_differ_key_by_key() -> None:
    before = {"a": {"b": 1, "c": 2}, "d": 1, "e": {"f": {"g": "x"}}}
    after = {"a": {"b": 1, "c": 3, "new": [1]}, "e": {"f": {"g": "y"}}}
    assert changes(before, after) == [
        {"op": "change", "path": "/a/c", "old": 2, "new": 3},
        {"op": "add", "path": "/a/new", "new": [1]},
        {"op": "remove", "path": "/d", "old": 1},
        {"op": "change", "path": "/e/f/g", "old": "x", "new": "y"},
    ]


def test_a_growing_array_adds_its_tail() -> None:
    assert changes([1], [1, 2, {"x": 3}]) == [
        {"op": "add", "path": "/1", "new": 2},
        {"op": "add", "path": "/2", "new": {"x": 3}},
    ]
    assert changes({"l": []}, {"l": ["a"]}) == [{"op": "add", "path": "/l/0", "new": "a"}]


def test_a_shrinking_array_removes_its_tail_last_first() -> None:
    assert changes([1, 2, 3], [1]) == [
        {"op": "remove", "path": "/2", "old": 3},
        {"op": "remove", "path": "/1", "old": 2},
    ]
    assert changes({"l": [[0, 1], 2]}, {"l": [[9]]}) == [
        {"op": "change", "path": "/l/0/0", "old": 0, "new": 9},
        {"op": "remove", "path": "/l/0/1", "old": 1},
        {"op": "remove", "path": "/l/1", "old": 2},
    ]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (1, True),
        (True, 1),
        (0, False),
        (1, 1.0),
        ("1", 1),
        (None, {}),
        ({}, []),
        ({"a": 1}, [1]),
        ([1], "1"),
        (None, False),
    ],
)
def test_a_change_of_type_is_a_change_even_between_equal_python_values(
    before: Any, after: Any
) -> None:
    assert changes(before, after) == [{"op": "change", "path": "", "old": before, "new": after}]
    nested = changes({"k": [before]}, {"k": [after]})
    assert nested == [{"op": "change", "path": "/k/0", "old": before, "new": after}]


def test_keys_are_escaped_as_json_pointer_tokens() -> None:
    before = {"a/b": 1, "m~n": 1, "~1": 1, "/": {"~/": [0]}, "": 1}
    after = {"a/b": 2, "m~n": 2, "~1": 2, "/": {"~/": [0, 5]}, "": 2}
    assert [c.path for c in diff(before, after)] == ["/a~1b", "/m~0n", "/~01", "/~1/~0~1/1", "/"]


def test_a_diff_can_be_rooted_at_a_path() -> None:
    assert diff({"x": 1}, {"x": 2}, "/state") == [StateChange("change", "/state/x", 1, 2)]


def test_a_change_shows_old_and_new_only_where_they_exist() -> None:
    assert StateChange("add", "/a", new=1).to_dict() == {"op": "add", "path": "/a", "new": 1}
    assert StateChange("remove", "/a", old=1).to_dict() == {"op": "remove", "path": "/a", "old": 1}
    assert StateChange("change", "/a", None, None).to_dict() == {
        "op": "change",
        "path": "/a",
        "old": None,
        "new": None,
    }


# -- state as JSON ------------------------------------------------------------------------


def test_state_json_is_compact_and_keeps_text_as_it_is() -> None:
    assert state_json({"b": [1, 2.5, None, True], "a": "é"}) == '{"b":[1,2.5,null,true],"a":"é"}'
    assert state_json(None) == "null"
    # An event's frozen payload is refused: folded on, it would behave otherwise than the
    # same state read back from a snapshot (it cannot change in place); a copy is fine.
    with pytest.raises(ValueError, match="immutable part of an event's payload"):
        state_json({"items": event("p", 1, x=[1]).payload["x"]})
    assert state_json(dict(event("p", 1, x=1).payload)) == '{"x":1}'


@pytest.mark.parametrize(
    "state",
    [
        {1, 2},
        (1, 2),
        {"a": [(1,)]},
        {1: "one"},
        {"a": {2: None}},
        float("nan"),
        {"x": float("inf")},
        {"when": T0},
        object(),
    ],
    ids=["set", "tuple", "nested-tuple", "int-key", "nested-int-key", "nan", "inf", "dt", "obj"],
)
def test_state_that_is_not_exactly_json_is_refused(state: Any) -> None:
    with pytest.raises(ValueError):
        state_json(state)


# -- reducers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"aggregate_type": "player-1"}, "must be an identifier"),
        ({"aggregate_type": ""}, "must be an identifier"),
        ({"aggregate_type": "1Player"}, "must be an identifier"),
        ({"aggregate_type": 5}, "must be an identifier"),
        ({"version": 0}, "version must be an integer >= 1"),
        ({"version": True}, "version must be an integer >= 1"),
        ({"version": "2"}, "version must be an integer >= 1"),
        ({"version": 1.0}, "version must be an integer >= 1"),
        ({"snapshot_every": -1}, "snapshot_every must be an integer >= 0"),
        ({"snapshot_every": True}, "snapshot_every must be an integer >= 0"),
        ({"snapshot_every": 2.0}, "snapshot_every must be an integer >= 0"),
        ({"apply": "fold"}, "apply must be a function"),
        ({"initial": {1: "x"}}, "the initial state is not JSON"),
        ({"initial": {"s": {1}}}, "the initial state is not JSON"),
        ({"initial": (1, 2)}, "the initial state is not JSON"),
        ({"initial": float("nan")}, "the initial state is not JSON"),
    ],
)
def test_reducer_arguments_are_checked(arguments: dict[str, Any], message: str) -> None:
    options: dict[str, Any] = {"aggregate_type": "Player", **arguments}
    with pytest.raises(ConfigurationError, match=message):
        Reducer(**options)


def test_a_reducer_refuses_a_second_handler_and_an_empty_on() -> None:
    reducer = Reducer("Player")
    reducer.on("PlayerMoved")(lambda state, e: state)
    with pytest.raises(ConfigurationError, match="PlayerMoved already has a handler"):
        reducer.on("PlayerJoined", "PlayerMoved")(lambda state, e: state)
    with pytest.raises(ConfigurationError, match="needs event types"):
        reducer.on()


def test_reducers_are_one_per_aggregate_type() -> None:
    players, items = Reducer("Player"), Reducer("Item")
    assert check_reducers([players, items]) == {"Player": players, "Item": items}
    with pytest.raises(ConfigurationError, match="two reducers for aggregate type 'Player'"):
        check_reducers([players, Reducer("Player", version=2)])
    with pytest.raises(ConfigurationError, match="is not a Reducer"):
        check_reducers([players, "Item"])  # type: ignore[list-item]


def test_each_fold_starts_from_a_fresh_initial_state() -> None:
    reducer = Reducer("Player", initial={"items": [], "zone": None})
    first = reducer.initial()
    first["items"].append("sword")
    assert reducer.initial() == {"items": [], "zone": None}


def test_events_without_a_handler_go_to_apply_or_change_nothing() -> None:
    seen: list[str] = []
    reducer = Reducer("Player", initial={"n": 0})

    @reducer.on("PlayerMoved")
    def _moved(state: Any, e: Any) -> Any:
        return {"n": state["n"] + 1}

    state = {"n": 0}
    assert reducer.fold(state, event("p", 1, event_type="PlayerWaved")) is state

    def _other(state: Any, e: Any) -> Any:
        seen.append(e.event_type)
        return state

    reducer.apply = _other
    assert reducer.fold({"n": 0}, event("p", 1)) == {"n": 1}
    reducer.fold(state, event("p", 2, event_type="PlayerWaved"))
    assert seen == ["PlayerWaved"]


def test_a_failing_handler_is_named_with_its_event() -> None:
    reducer = Reducer("Player")
    e = event("p-7", 3)

    @reducer.on("PlayerMoved")
    def _moved(state: Any, e: Any) -> Any:
        raise KeyError("to_zone")

    with pytest.raises(ReplayError, match=f"failed on PlayerMoved p-7 v3 \\(event {e.id}\\)"):
        reducer.fold({}, e)
    reducer.handlers["PlayerMoved"] = lambda state, e: None
    with pytest.raises(ReplayError, match=f"returned None on PlayerMoved p-7 v3 \\(event {e.id}"):
        reducer.fold({}, e)
    with pytest.raises(ReplayError, match=f"not JSON after PlayerMoved p-7 v3 \\(event {e.id}"):
        reducer.check({"s": {1}}, e)
    with pytest.raises(ReplayError, match="reducer Player produced state that is not JSON: "):
        reducer.check((1,), None)


# -- control requests ---------------------------------------------------------------------


def raw(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("value", "code", "request_id", "kind", "says"),
    [
        (None, INVALID_REQUEST, None, None, "no value"),
        (b"\xff\xfe\x00\x81garbage", INVALID_REQUEST, None, None, "not JSON"),
        (b"\x80\x81\x82", INVALID_REQUEST, None, None, "not JSON"),
        (b'{"kind": "ping", ', INVALID_REQUEST, None, None, "not JSON"),
        (b'[{"kind": "ping", "request_id": "r-1"}]', INVALID_REQUEST, None, None, "not a list"),
        (b'"ping"', INVALID_REQUEST, None, None, "not a str"),
        (raw(kind="explode", request_id="r-1"), UNKNOWN_KIND, "r-1", "explode", "'explode'"),
        (raw(request_id="r-1"), UNKNOWN_KIND, "r-1", None, "unknown kind None"),
        (raw(kind=["ping"], request_id="r-1"), UNKNOWN_KIND, "r-1", None, "unknown kind"),
        (raw(kind="replay", request_id="r-2"), INVALID_REQUEST, "r-2", "replay", "aggregate_id"),
        (raw(kind="rebuild", request_id="r-2"), INVALID_REQUEST, "r-2", "rebuild", "projection"),
        (raw(kind="ping"), INVALID_REQUEST, None, "ping", "request_id"),
        (raw(kind="ping", request_id=5), INVALID_REQUEST, None, "ping", "request_id"),
        (raw(kind="ping", request_id=""), INVALID_REQUEST, None, "ping", "request_id"),
        (raw(kind="ping", request_id="r" * 201), INVALID_REQUEST, None, "ping", "request_id"),
        (
            raw(kind="replay", request_id="r-3", aggregate_id="p", version=1, position=2),
            INVALID_REQUEST,
            "r-3",
            "replay",
            "give one of at, version and position, not version and position",
        ),
        (
            raw(kind="ping", request_id="r-4", deadline="2026-01-01T12:00:00"),
            INVALID_REQUEST,
            "r-4",
            "ping",
            "deadline: Input should have timezone info",
        ),
        (
            raw(kind="replay", request_id="r-5", aggregate_id="p", at="2026-01-01T12:00:00"),
            INVALID_REQUEST,
            "r-5",
            "replay",
            "at: Input should have timezone info",
        ),
        (
            raw(kind="replay", request_id="r-6", aggregate_id="p", version=-1),
            INVALID_REQUEST,
            "r-6",
            "replay",
            "version",
        ),
        (raw(kind="ping", request_id="r-7", extra=1), INVALID_REQUEST, "r-7", "ping", "extra"),
    ],
)
def test_a_malformed_request_says_what_is_wrong_and_keeps_its_id_when_readable(
    value: bytes | None, code: str, request_id: str | None, kind: str | None, says: str
) -> None:
    with pytest.raises(Malformed) as raised:
        parse_request(value)
    problem = raised.value
    assert (problem.code, problem.request_id, problem.kind) == (code, request_id, kind)
    assert says in problem.message


def test_valid_requests_are_parsed_by_kind() -> None:
    replay = parse_request(
        raw(kind="replay", request_id="r-1", aggregate_id="p", at="2026-01-01T13:00:00+01:00")
    )
    assert isinstance(replay, ReplayRequest)
    assert replay.at == T0 and replay.version is None and not replay.history
    rebuild = parse_request(raw(kind="rebuild", request_id="r-2", projection="x"))
    assert isinstance(rebuild, RebuildRequest) and rebuild.aggregate_id is None
    ping = parse_request(raw(kind="ping", request_id="r-3", deadline="2026-01-01T12:00:00Z"))
    assert isinstance(ping, PingRequest)
    assert ping.expired(T0 + timedelta(microseconds=1)) and not ping.expired(T0)


# -- the control handler on an embedded store ---------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with open_store(f"sqlite:///{tmp_path / 'events.db'}") as opened:
        opened.migrate()
        yield opened


@pytest.fixture
def world(store: EventStore) -> World:
    game = World("w", players=4, items=4, seed=3)
    store.append_events(game.genesis())
    for _ in range(12):
        store.append_events(game.tick())
    return game


@pytest.fixture
def handler(store: EventStore) -> ControlHandler:
    return ControlHandler(
        store,
        Replayer(store, demo_reducers.ALL),
        projections=demo_projections.ALL,
        worker_id="worker-1",
    )


def answer(handler: ControlHandler, **request: Any) -> dict[str, Any]:
    outcome = handler.handle(raw(**request))
    assert outcome.reply is not None and outcome.problem is None
    assert outcome.request_id == outcome.reply["request_id"] == request["request_id"]
    assert outcome.reply["worker"] == "worker-1"
    reply: dict[str, Any] = json.loads(json.dumps(outcome.reply))  # it travels as JSON
    return reply


def failed(reply: dict[str, Any], code: str) -> str:
    assert reply["ok"] is False and "result" not in reply
    assert reply["error"]["code"] == code and reply["error"]["retriable"] is False
    message: str = reply["error"]["message"]
    return message


def test_a_ping_is_answered(handler: ControlHandler) -> None:
    reply = answer(handler, kind="ping", request_id="ping-1")
    assert reply["ok"] is True and reply["kind"] == "ping" and reply["duplicate"] is False
    assert reply["result"] == {"pong": True, "worker": "worker-1"}
    assert datetime.fromisoformat(reply["answered_at"]).tzinfo is not None


def test_a_replay_is_answered_with_the_state_and_its_history(
    handler: ControlHandler, store: EventStore, world: World
) -> None:
    player = world.players[0].id
    events = list(store.get_events_by_aggregate(player))
    assert len(events) >= 3
    latest = answer(handler, kind="replay", request_id="r-1", aggregate_id=player)
    assert latest["ok"] is True and latest["kind"] == "replay"
    assert latest["result"]["state"] == player_state(events)
    assert latest["result"]["version"] == len(events)

    reply = answer(
        handler,
        kind="replay",
        request_id="r-2",
        aggregate_id=player,
        version=3,
        history=True,
        history_limit=2,
    )
    result = reply["result"]
    assert (result["state"], result["version"]) == (player_state(events[:3]), 3)
    assert [step["version"] for step in result["history"]] == [1, 2]
    assert result["history"][1]["state"] == player_state(events[:2])
    assert result["history_next"] == 3

    at = events[1].timestamp.isoformat()
    timed = answer(handler, kind="replay", request_id="r-3", aggregate_id=player, at=at)
    assert timed["result"]["target"] == "at"
    stamped = events[1].timestamp
    assert timed["result"]["version"] == max(e.version for e in events if e.timestamp <= stamped)


def test_a_replay_of_an_unknown_aggregate_is_not_found(
    handler: ControlHandler, world: World
) -> None:
    reply = answer(handler, kind="replay", request_id="r-9", aggregate_id="nobody")
    assert "'nobody'" in failed(reply, NOT_FOUND)


def test_a_replay_beyond_the_latest_version_is_an_invalid_request(
    handler: ControlHandler, world: World
) -> None:
    player = world.players[0].id
    reply = answer(handler, kind="replay", request_id="r-8", aggregate_id=player, version=10**6)
    assert "ask for a version from 0 to" in failed(reply, INVALID_REQUEST)


def test_a_request_past_its_deadline_is_answered_expired(handler: ControlHandler) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    reply = answer(handler, kind="ping", request_id="late-1", deadline=past)
    assert "deadline" in failed(reply, EXPIRED)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert answer(handler, kind="ping", request_id="late-2", deadline=future)["ok"] is True


def test_an_invalid_request_with_an_id_gets_an_error_reply(handler: ControlHandler) -> None:
    two = answer(
        handler, kind="replay", request_id="bad-1", aggregate_id="p", version=1, position=1
    )
    assert "give one of" in failed(two, INVALID_REQUEST)
    assert two["kind"] == "replay"
    unknown = answer(handler, kind="explode", request_id="bad-2")
    assert "unknown kind" in failed(unknown, UNKNOWN_KIND)


@pytest.mark.parametrize(
    "value",
    [None, b"\xff\x00garbage", b"{", b"[]", raw(kind="ping"), raw(kind="replay", request_id=7)],
)
def test_a_record_without_a_readable_id_is_a_problem_not_a_reply(
    handler: ControlHandler, value: bytes | None
) -> None:
    outcome = handler.handle(value)
    assert isinstance(outcome, Outcome)
    assert (outcome.request_id, outcome.reply, outcome.code) == (None, None, None)
    assert outcome.problem is not None and outcome.problem.startswith(f"{INVALID_REQUEST}: ")


def test_a_rebuild_delivered_twice_runs_once(
    handler: ControlHandler, store: EventStore, world: World
) -> None:
    name = demo_projections.player_positions.name
    request = {"kind": "rebuild", "request_id": "rb-1", "projection": name}
    first = answer(handler, **request)
    assert first["ok"] is True and first["duplicate"] is False
    generation = first["result"]["generation"]
    record = store.projection_record(name)
    assert record is not None and record.active_generation == generation
    assert first["result"]["documents"] == len(world.players)
    player = world.players[0]
    document = store.get_document(name, player.id)
    assert document["zone"] == world.expected_player_state(player.id)["zone"]

    again = answer(handler, **request)
    assert again["duplicate"] is True and again["result"] == first["result"]
    record = store.projection_record(name)
    assert record is not None and record.active_generation == generation  # not run again

    other = answer(handler, **{**request, "request_id": "rb-2"})
    assert other["duplicate"] is False and other["result"]["generation"] > generation


def test_a_rebuild_of_an_unknown_projection_names_the_known_ones(handler: ControlHandler) -> None:
    reply = answer(handler, kind="rebuild", request_id="rb-9", projection="nope")
    message = failed(reply, UNKNOWN_PROJECTION)
    assert "'nope'" in message and "player-positions" in message
