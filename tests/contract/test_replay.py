"""Replay (DESIGN section 7) on every backend: the Replayer's state at any version, time or
global position against a reference fold written here, snapshots as a cache that never
changes a result, the history's diffs, consistent cuts of the world, and the store
capabilities replay stands on (aggregate paging, many aggregates' events, snapshots, the
record of control requests)."""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from eventstore import Event, EventStore, open_store
from eventstore.errors import (
    AggregateNotFoundError,
    InvalidQueryError,
    ReplayError,
)
from eventstore.replay import Reducer, Replayer, ReplayResult, StateChange, _replayer, state_json
from eventstore.store import AggregateRef, Claim
from eventstore.store.postgres import PostgresEventStore
from eventstore.store.sqlite import SqliteEventStore
from eventstore.versioning import Upcasters
from tests.conftest import StoreFactory, unique_name
from tests.helpers import T0, event, wait_for

US = timedelta(microseconds=1)
SECOND = timedelta(seconds=1)

# -- the reducers under test, and their reference -----------------------------------------

THING_INITIAL: dict[str, Any] = {"total": 0, "name": None, "tags": {}, "seen": [], "other": 0}
THING_TYPES = ("Added", "Renamed", "Tagged", "Noted", "Poked")


def thing_reducer(*, version: int = 1, snapshot_every: int = 2, factor: int = 1) -> Reducer:
    """Things: `Added` changes the state in place, `Renamed` and `Tagged` return new
    states, any other type goes to the `apply` fallback. `factor` changes the fold's meaning
    (what a new reducer version would do)."""
    reducer = Reducer(
        "Thing", version=version, initial=THING_INITIAL, snapshot_every=snapshot_every
    )

    @reducer.on("Added")
    def _added(state: Any, e: Event) -> Any:
        state["total"] += e.payload["n"] * factor
        state["seen"].append(e.version)
        return state

    @reducer.on("Renamed")
    def _renamed(state: Any, e: Event) -> Any:
        return {**state, "name": e.payload["name"]}

    @reducer.on("Tagged")
    def _tagged(state: Any, e: Event) -> Any:
        return {**state, "tags": {**state["tags"], e.payload["tag"]: e.version}}

    def _other(state: Any, e: Event) -> Any:
        state["other"] += 1
        return state

    reducer.apply = _other
    return reducer


def gadget_reducer() -> Reducer:
    """Gadgets (a second type, for the world): the number of events and the last type."""
    reducer = Reducer("Gadget", initial={"events": 0, "last": None}, snapshot_every=3)

    def _any(state: Any, e: Event) -> Any:
        return {"events": state["events"] + 1, "last": e.event_type}

    reducer.apply = _any
    return reducer


def reference(events: Sequence[Event], factor: int = 1) -> dict[str, Any]:
    """A Thing's state after `events`, folded by a plain loop (not by a Reducer)."""
    state: dict[str, Any] = json.loads(json.dumps(THING_INITIAL))
    for e in events:
        if e.event_type == "Added":
            state["total"] += e.payload["n"] * factor
            state["seen"] = [*state["seen"], e.version]
        elif e.event_type == "Renamed":
            state["name"] = e.payload["name"]
        elif e.event_type == "Tagged":
            state["tags"] = {**state["tags"], e.payload["tag"]: e.version}
        else:
            state["other"] += 1
    return state


def thing(aggregate_id: str, version: int, event_type: str, at: datetime, **payload: Any) -> Event:
    if event_type == "Added":
        payload.setdefault("n", version)
    elif event_type == "Renamed":
        payload.setdefault("name", f"name-{version}")
    elif event_type == "Tagged":
        payload.setdefault("tag", f"t{version % 3}")
    return event(
        aggregate_id, version, event_type=event_type, aggregate_type="Thing", at=at, **payload
    )


def things(aggregate_id: str, offsets: Sequence[float], start: int = 1) -> list[Event]:
    """A Thing's events with game times T0 + offsets (seconds), cycling through the types."""
    return [
        thing(aggregate_id, v, THING_TYPES[(v - 1) % len(THING_TYPES)], T0 + offset * SECOND)
        for v, offset in enumerate(offsets, start=start)
    ]


@dataclass(frozen=True)
class Expected:
    state: Any
    version: int
    timestamp: datetime | None
    position: int | None
    held_back: int = 0


def expected_after(prefix: Sequence[Event], held_back: int = 0, factor: int = 1) -> Expected:
    last = prefix[-1] if prefix else None
    return Expected(
        reference(prefix, factor),
        last.version if last else 0,
        last.timestamp if last else None,
        last.position if last else None,
        held_back,
    )


def expected_at(events: Sequence[Event], at: datetime) -> Expected:
    """The documented `at` rule, independently: the longest prefix whose events are all
    stamped at or before `at`; held back: the later events stamped at or before it."""
    for index, e in enumerate(events):
        if e.timestamp > at:
            later = sum(1 for x in events[index + 1 :] if x.timestamp <= at)
            return expected_after(events[:index], later)
    return expected_after(events)


def expected_at_position(events: Sequence[Event], position: int) -> Expected:
    return expected_after([e for e in events if (e.position or 0) <= position])


def check(result: ReplayResult, expected: Expected, *, what: str, timestamp: bool = True) -> None:
    assert result.state == expected.state, what
    assert (result.version, result.position, result.held_back) == (
        expected.version,
        expected.position,
        expected.held_back,
    ), what
    if timestamp:
        assert result.timestamp == expected.timestamp, what


def stored(store: EventStore, aggregate_id: str) -> list[Event]:
    return list(store.get_events_by_aggregate(aggregate_id))


def readable(store: EventStore) -> None:
    """Until every stored event lies below the log's horizon (on PostgreSQL a transaction
    anywhere in the cluster, such as another test's, holds it back; cuts stop there)."""
    wait_for(lambda: store.log_horizon().events_behind == 0, "the log's horizon")


def log(store: EventStore) -> list[Event]:
    found: list[Event] = []
    after = 0
    while page := store.read_all(after, 1000):
        found += page
        after = page[-1].position or 0
    return found


# -- random histories (hypothesis) --------------------------------------------------------


@dataclass(frozen=True)
class Game:
    """Several Things' histories, appended interleaved in batches."""

    histories: list[list[tuple[str, int]]]
    """Per aggregate, (event type, game-time offset in microseconds) per version."""
    order: list[int]
    """Which aggregate's next event is appended next."""
    cuts: list[bool]
    """After which appended event a batch ends."""


@st.composite
def games(draw: st.DrawFn) -> Game:
    # Offsets are whole seconds give or take a microsecond: ties, near ties and a clock that
    # goes back and forth, so the `at` boundaries are exercised.
    offset = st.builds(lambda s, u: s * 1_000_000 + u, st.integers(0, 8), st.integers(-1, 1))
    histories = draw(
        st.lists(
            st.lists(st.tuples(st.sampled_from(THING_TYPES), offset), min_size=1, max_size=6),
            min_size=1,
            max_size=3,
        )
    )
    slots = [i for i, h in enumerate(histories) for _ in h]
    order = draw(st.permutations(slots))
    cuts = draw(st.lists(st.booleans(), min_size=len(slots), max_size=len(slots)))
    return Game(histories, order, cuts)


def play(store: EventStore, game: Game) -> list[list[Event]]:
    """Append the game (ids unique to it) and return each aggregate's stored events."""
    prefix = unique_name("thing")
    ids = [f"{prefix}-{i}" for i in range(len(game.histories))]
    versions = [0] * len(ids)
    batch: list[Event] = []
    for slot, cut in zip(game.order, game.cuts, strict=True):
        versions[slot] += 1
        event_type, micros = game.histories[slot][versions[slot] - 1]
        n = micros % 7 - 3
        batch.append(
            thing(ids[slot], versions[slot], event_type, T0 + micros * US, n=n, name=f"n{n}")
        )
        if cut:
            store.append_events(batch)
            batch = []
    store.append_events(batch)
    return [stored(store, i) for i in ids]


def taking_turns(store: EventStore, histories: list[list[Event]]) -> Iterator[Replayer]:
    """A replayer with snapshots (every 2 events) and one without, taking turns. Every
    snapshot is made first, so that replays to earlier targets must pass over later ones."""
    cached = Replayer(store, [thing_reducer()])
    for events in histories:
        cached.replay_to(events[0].aggregate_id)
    return itertools.cycle([cached, Replayer(store, [thing_reducer()], snapshots=False)])


HYPOTHESIS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HYPOTHESIS
@given(game=games())
def test_replay_to_every_version_equals_the_reference_fold(store: EventStore, game: Game) -> None:
    histories = play(store, game)
    replayers = taking_turns(store, histories)
    for events in histories:
        aggregate_id = events[0].aggregate_id
        for version in range(len(events) + 1):
            found = next(replayers).replay_to(aggregate_id, version=version)
            check(found, expected_after(events[:version]), what=f"v{version}")
        latest = next(replayers).replay_to(aggregate_id)
        check(latest, expected_after(events), what="latest")
        assert latest.target == "latest"


@HYPOTHESIS
@given(game=games())
def test_replay_at_times_on_and_around_each_event_follows_the_at_rule(
    store: EventStore, game: Game
) -> None:
    histories = play(store, game)
    replayers = taking_turns(store, histories)
    for events in histories:
        aggregate_id = events[0].aggregate_id
        times = {e.timestamp + d for e in events for d in (-US, 0 * US, US)}
        times |= {T0 - SECOND, T0 + 60 * SECOND}
        for number, at in enumerate(sorted(times)):
            # The same instant in another zone is the same target (snapshots are found by
            # their latest game time, compared in UTC).
            shown = at.astimezone(timezone(timedelta(hours=-5, minutes=-30))) if number % 2 else at
            found = next(replayers).replay_to(aggregate_id, at=shown)
            check(found, expected_at(events, at), what=f"at {at.isoformat()}")
            assert found.target == "at"


@HYPOTHESIS
@given(game=games())
def test_replay_at_positions_across_interleaved_aggregates_equals_the_reference(
    store: EventStore, game: Game
) -> None:
    histories = play(store, game)
    readable(store)
    replayers = taking_turns(store, histories)
    positions = sorted({e.position or 0 for events in histories for e in events})
    # Every position of the game's log, the ones just after (between two on PostgreSQL,
    # the next event's on SQLite), one before it all and one beyond.
    targets = sorted({0, positions[0] - 1, *positions, *(p + 1 for p in positions)})
    for events in histories:
        for position in targets:
            found = next(replayers).replay_to(events[0].aggregate_id, position=position)
            check(found, expected_at_position(events, position), what=f"position {position}")


# -- snapshots ----------------------------------------------------------------------------

# A clock that goes back and forth, so snapshots' latest game times matter for `at`.
OFFSETS = [3, 1, 4, 1.5, 9, 2, 6, 5, 3.5]


def targets(events: Sequence[Event]) -> Iterator[dict[str, Any]]:
    """Every version, times on and around each event, every position and the ones after."""
    for version in range(len(events) + 1):
        yield {"version": version}
    for e in events:
        for d in (-US, 0 * US, US):
            yield {"at": e.timestamp + d}
        assert e.position is not None
        yield {"position": e.position}
        yield {"position": e.position + 1}
    yield {"position": 0}
    yield {}


def outcomes(replayer: Replayer, aggregate_id: str, events: Sequence[Event]) -> list[Any]:
    """What replays to every target give (leaving out how they got there)."""
    found = []
    for target in targets(events):
        r = replayer.replay_to(aggregate_id, **target)
        found.append((target, r.state, r.version, r.position, r.held_back, r.target))
    return found


def test_snapshots_change_no_result_for_any_target(store: EventStore) -> None:
    events = [*things("t-1", OFFSETS)]
    store.append_events(events)
    events = stored(store, "t-1")
    readable(store)
    cached = Replayer(store, [thing_reducer(snapshot_every=2)])
    plain = Replayer(store, [thing_reducer(snapshot_every=2)], snapshots=False)
    # Twice with snapshots: once writing them on the way, once starting from them.
    first = outcomes(cached, "t-1", events)
    assert store.snapshot_count("t-1") > 0
    assert outcomes(cached, "t-1", events) == first == outcomes(plain, "t-1", events)
    for target in targets(events):
        with_snapshots = cached.replay_to("t-1", **target)
        without = plain.replay_to("t-1", **target)
        assert with_snapshots.timestamp == without.timestamp, target


def test_snapshots_are_written_every_n_events_and_used(store: EventStore) -> None:
    store.append_events(things("t-1", OFFSETS))
    cached = Replayer(store, [thing_reducer(snapshot_every=2)])
    plain = Replayer(store, [thing_reducer(snapshot_every=2)], snapshots=False)
    first = cached.replay_to("t-1")
    assert (first.snapshot_version, first.events_applied) == (None, 9)
    assert store.snapshot_count("t-1") == 4  # after versions 2, 4, 6, 8
    again = cached.replay_to("t-1")
    assert (again.snapshot_version, again.events_applied) == (8, 1)
    assert again.state == first.state == plain.replay_to("t-1").state
    assert plain.replay_to("t-1").events_applied == 9
    middle = cached.replay_to("t-1", version=5)
    assert (middle.snapshot_version, middle.events_applied) == (4, 1)
    # Without snapshots nothing is written.
    store.delete_snapshots()
    plain.replay_to("t-1")
    assert store.snapshot_count() == 0


def test_a_replay_that_ends_on_a_snapshot_reports_its_events_time(store: EventStore) -> None:
    store.append_events(things("t-1", OFFSETS))
    events = stored(store, "t-1")
    cached = Replayer(store, [thing_reducer(snapshot_every=2)])
    cached.replay_to("t-1")
    found = cached.replay_to("t-1", version=4)
    assert found.snapshot_version == 4
    assert found.timestamp == events[3].timestamp


def test_a_snapshot_of_an_older_reducer_version_is_ignored(store: EventStore) -> None:
    store.append_events(things("t-1", OFFSETS))
    events = stored(store, "t-1")
    old = Replayer(store, [thing_reducer(version=1, snapshot_every=2)])
    assert old.replay_to("t-1").state == reference(events)
    assert old.replay_to("t-1").snapshot_version == 8
    new = Replayer(store, [thing_reducer(version=2, snapshot_every=2, factor=10)])
    for target in targets(events):
        found = new.replay_to("t-1", **target)
        assert found.snapshot_version is None or found.snapshot_version <= found.version
        reached = events[: found.version]
        assert found.state == reference(reached, factor=10), target
    # The new version's own snapshots replaced the old ones, and are used.
    latest = new.replay_to("t-1")
    assert (latest.snapshot_version, latest.state) == (8, reference(events, factor=10))
    assert old.replay_to("t-1").snapshot_version is None  # and the old code ignores them


def test_a_snapshot_made_under_other_upcasters_is_ignored(store_factory: StoreFactory) -> None:
    plain_store = store_factory()
    plain_store.append_events(things("t-1", OFFSETS))
    plain = Replayer(plain_store, [thing_reducer(snapshot_every=2)])
    plain.replay_to("t-1")
    assert plain.replay_to("t-1").snapshot_version == 8

    upcasters = Upcasters()

    @upcasters.register("Added", from_version=1)
    def _tenfold(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "n": payload["n"] * 10}

    upcasting_store = store_factory(upcasters)
    upcast = stored(upcasting_store, "t-1")
    assert upcast != stored(plain_store, "t-1")
    replayer = Replayer(upcasting_store, [thing_reducer(snapshot_every=2)])
    assert replayer.fingerprint != plain.fingerprint
    first = replayer.replay_to("t-1")
    assert (first.snapshot_version, first.state) == (None, reference(upcast))
    assert replayer.replay_to("t-1", version=5).state == reference(upcast[:5])
    again = replayer.replay_to("t-1")
    assert (again.snapshot_version, again.state) == (8, reference(upcast))


def run_sql(
    store: EventStore,
    request: pytest.FixtureRequest,
    postgres: sql.SQL,
    sqlite: str,
    params: Sequence[Any],
) -> None:
    """Change the store's tables behind its back (on PostgreSQL in the test's schema)."""
    if isinstance(store, PostgresEventStore):
        url = request.getfixturevalue("postgres_url")
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(store.schema)))
            pg.execute(postgres, params)
    else:
        assert isinstance(store, SqliteEventStore)
        with closing(sqlite3.connect(store.path)) as conn, conn:
            conn.execute(sqlite, params)


DAMAGE = {
    # (PostgreSQL, SQLite) statements: valid JSON of another state, or another digest.
    "state": (
        sql.SQL("UPDATE snapshots SET state = %s WHERE aggregate_id = %s AND version = %s"),
        "UPDATE snapshots SET state = ? WHERE aggregate_id = ? AND version = ?",
    ),
    "digest": (
        sql.SQL("UPDATE snapshots SET digest = %s WHERE aggregate_id = %s AND version = %s"),
        "UPDATE snapshots SET digest = ? WHERE aggregate_id = ? AND version = ?",
    ),
}


def test_a_damaged_snapshot_is_ignored_with_a_warning_and_replaced(
    store: EventStore, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    store.append_events([*things("t-state", OFFSETS), *things("t-digest", OFFSETS)])
    replayer = Replayer(store, [thing_reducer(snapshot_every=2)])
    for column in DAMAGE:  # valid JSON of another state, or another digest
        aggregate_id = f"t-{column}"
        events = stored(store, aggregate_id)
        replayer.replay_to(aggregate_id)
        good = reference(events[:4])
        value = state_json({**good, "total": 10_000}) if column == "state" else "0" * 64
        run_sql(store, request, *DAMAGE[column], (value, aggregate_id, 4))

        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="eventstore.replay"):
            found = replayer.replay_to(aggregate_id, version=5)
        assert found.state == reference(events[:5]), column
        assert found.snapshot_version == 2, column  # the next lower one
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(f"{aggregate_id} v4 is damaged" in w for w in warnings), warnings

        # That replay passed version 4 and stored a good snapshot there.
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="eventstore.replay"):
            again = replayer.replay_to(aggregate_id, version=5)
        assert (again.snapshot_version, again.events_applied) == (4, 1), column
        assert again.state == reference(events[:5]), column
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        [snapshot] = store.load_snapshots(
            [aggregate_id], reducer_version=1, fingerprint=replayer.fingerprint, max_version=4
        ).values()
        assert json.loads(snapshot.state) == good


def test_a_damaged_snapshot_is_ignored_for_every_target(
    store: EventStore, request: pytest.FixtureRequest
) -> None:
    store.append_events(things("t-1", OFFSETS))
    events = stored(store, "t-1")
    readable(store)
    plain = outcomes(Replayer(store, [thing_reducer()], snapshots=False), "t-1", events)
    replayer = Replayer(store, [thing_reducer(snapshot_every=2)])
    replayer.replay_to("t-1")
    for version in (2, 4, 6, 8):
        bad = state_json({**reference(events[:version]), "name": "forged"})
        run_sql(store, request, *DAMAGE["state"], (bad, "t-1", version))
    assert outcomes(replayer, "t-1", events) == plain


def test_deleting_snapshots_changes_no_result(store: EventStore) -> None:
    store.append_events([*things("t-1", OFFSETS), *things("t-2", OFFSETS[:5])])
    store.append_events([event("g-1", v, aggregate_type="Gadget") for v in range(1, 8)])
    replayer = Replayer(store, [thing_reducer(snapshot_every=2), gadget_reducer()])
    readable(store)
    before = {i: outcomes(replayer, i, stored(store, i)) for i in ("t-1", "t-2", "g-1")}
    world = replayer.world_at(store.log_horizon().head)
    assert store.snapshot_count("t-1") == 4 and store.snapshot_count("t-2") == 2
    assert store.snapshot_count("g-1") == 2

    assert store.delete_snapshots(aggregate_id="t-2") == 2
    assert store.snapshot_count("t-2") == 0 and store.snapshot_count("t-1") == 4
    assert store.delete_snapshots(aggregate_type="Gadget") == 2
    assert store.snapshot_count() == 4
    assert store.delete_snapshots() == 4
    assert store.snapshot_count() == 0

    after = {i: outcomes(replayer, i, stored(store, i)) for i in ("t-1", "t-2", "g-1")}
    assert after == before
    store.delete_snapshots()
    again = replayer.world_at(world.position)
    assert [(a.aggregate_id, a.state, a.version, a.position) for a in again.aggregates] == [
        (a.aggregate_id, a.state, a.version, a.position) for a in world.aggregates
    ]


def test_snapshots_never_reach_the_outbox_or_the_global_log(store: EventStore) -> None:
    store.append_events(things("t-1", OFFSETS))
    readable(store)
    depth, everything = store.outbox_status().depth, log(store)
    replayer = Replayer(store, [thing_reducer(snapshot_every=1)])
    outcomes(replayer, "t-1", everything)
    replayer.world_at(everything[-1].position or 0)
    list(replayer.history("t-1"))
    assert store.snapshot_count() == 9
    assert store.outbox_status().depth == depth == 9
    assert [(e.id, e.position) for e in log(store)] == [(e.id, e.position) for e in everything]


# -- what `at` means when the game's clock goes backwards ---------------------------------


def test_at_stops_before_the_first_later_event_and_counts_what_it_holds_back(
    store: EventStore,
) -> None:
    # Versions 1..6 stamped at 10, 20, 15, 30, 25, 40 seconds.
    store.append_events(things("t-1", [10, 20, 15, 30, 25, 40]))
    events = stored(store, "t-1")
    replayer = Replayer(store, [thing_reducer(snapshot_every=2)])
    cases = {5: (0, 0), 12: (1, 0), 17: (1, 1), 22: (3, 0), 27: (3, 1), 30: (5, 0), 45: (6, 0)}
    for seconds, (version, held_back) in cases.items():
        found = replayer.replay_to("t-1", at=T0 + seconds * SECOND)
        assert (found.version, found.held_back) == (version, held_back), seconds
        assert found.state == reference(events[:version])
    # The time reported is the reached event's own (v3 at 15 s, though v2 is later).
    assert (
        Replayer(store, [thing_reducer()], snapshots=False)
        .replay_to("t-1", at=T0 + 22 * SECOND)
        .timestamp
        == T0 + 15 * SECOND
    )


def test_at_is_monotonic_in_time(store: EventStore) -> None:
    store.append_events(things("t-1", [10, 20, 15, 30, 25, 40, 5, 41]))
    events = stored(store, "t-1")
    replayer = Replayer(store, [thing_reducer(snapshot_every=3)])
    times = sorted({e.timestamp + d for e in events for d in (-US, 0 * US, US)})
    versions = [replayer.replay_to("t-1", at=at).version for at in times]
    assert versions == sorted(versions)
    assert versions[0] == 0 and versions[-1] == len(events)
    # No effect of an event stamped after `at` is ever shown.
    for at, version in zip(times, versions, strict=True):
        assert all(e.timestamp <= at for e in events[:version])


# -- errors -------------------------------------------------------------------------------


def test_an_unknown_aggregate_is_not_found(store: EventStore) -> None:
    store.append_event(thing("t-1", 1, "Added", T0))
    replayer = Replayer(store, [thing_reducer()])
    with pytest.raises(AggregateNotFoundError, match="'t-404'"):
        replayer.replay_to("t-404")
    with pytest.raises(AggregateNotFoundError, match="'t-404'"):
        list(replayer.history("t-404"))


def test_a_version_beyond_the_latest_names_the_range(store: EventStore) -> None:
    store.append_events(things("t-1", [1, 2, 3]))
    replayer = Replayer(store, [thing_reducer()])
    assert replayer.replay_to("t-1", version=3).version == 3
    with pytest.raises(InvalidQueryError, match=r"has 3 versions, not 4.*from 0 to 3"):
        replayer.replay_to("t-1", version=4)
    with pytest.raises(InvalidQueryError, match="from 0 to 3"):
        Replayer(store, [thing_reducer()], snapshots=False).replay_to("t-1", version=99)


INVALID_TARGETS: list[tuple[dict[str, Any], str]] = [
    ({"version": 1, "position": 1}, "give one of at, version and position, not version and"),
    ({"at": T0, "version": 1}, "not at and version"),
    ({"at": T0, "version": 1, "position": 1}, "not at and version and position"),
    ({"at": T0.replace(tzinfo=None)}, "at must be a timezone-aware datetime"),
    ({"version": -1}, "version must be an integer >= 0"),
    ({"version": True}, "version must be an integer >= 0"),
    ({"position": -1}, "position must be an integer >= 0"),
]


def test_an_invalid_target_is_refused(store: EventStore) -> None:
    store.append_event(thing("t-1", 1, "Added", T0))
    replayer = Replayer(store, [thing_reducer()])
    for target, message in INVALID_TARGETS:
        with pytest.raises(InvalidQueryError, match=message):
            replayer.replay_to("t-1", **target)
    with pytest.raises(InvalidQueryError, match="non-empty string"):
        replayer.replay_to("")


def test_an_aggregate_type_without_a_reducer_is_named(store: EventStore) -> None:
    store.append_event(event("o-1", 1, aggregate_type="Orphan"))
    replayer = Replayer(store, [thing_reducer()])
    with pytest.raises(ReplayError, match="no reducer for aggregate type 'Orphan'"):
        replayer.replay_to("o-1")
    with pytest.raises(ReplayError, match="'Orphan'"):
        replayer.world_at(10, aggregate_type="Orphan")


def failing_reducer(fail: Callable[[Event], Any]) -> Reducer:
    reducer = thing_reducer(snapshot_every=0)
    previous = reducer.handlers["Added"]

    def handler(state: Any, e: Event) -> Any:
        if e.version == 3:
            return fail(e)
        return previous(state, e)

    reducer.handlers["Added"] = handler
    return reducer


def test_a_reducer_that_raises_is_named_with_the_event(store: EventStore) -> None:
    store.append_events([thing("t-1", v, "Added", T0 + v * SECOND) for v in range(1, 6)])
    third = stored(store, "t-1")[2]

    def explode(e: Event) -> Any:
        raise KeyError("boom")

    replayer = Replayer(store, [failing_reducer(explode)])
    assert replayer.replay_to("t-1", version=2).state["total"] == 3
    with pytest.raises(ReplayError, match=f"Added t-1 v3 \\(event {third.id}\\).*boom") as raised:
        replayer.replay_to("t-1")
    assert isinstance(raised.value.__cause__, KeyError)
    with pytest.raises(ReplayError, match=third.id):
        list(replayer.history("t-1"))


def test_a_reducer_that_returns_none_is_named_with_the_event(store: EventStore) -> None:
    store.append_events([thing("t-1", v, "Added", T0 + v * SECOND) for v in range(1, 6)])
    third = stored(store, "t-1")[2]
    replayer = Replayer(store, [failing_reducer(lambda e: None)])
    with pytest.raises(ReplayError, match=f"returned None on Added t-1 v3 \\(event {third.id}\\)"):
        replayer.replay_to("t-1")
    readable(store)
    with pytest.raises(ReplayError, match="returned None"):
        replayer.world_at(store.log_horizon().head)


NOT_JSON: dict[str, Any] = {"set": {1, 2}, "tuple": (1, 2), "int key": {1: "one"}}


def spoiling_reducer(value: Any, at_version: int, snapshot_every: int) -> Reducer:
    """A reducer whose state stops being JSON at `at_version` (and stays so)."""
    reducer = Reducer("Thing", initial={"n": 0}, snapshot_every=snapshot_every)

    def fold(state: Any, e: Event) -> Any:
        new = {**state, "n": state["n"] + 1}
        if e.version == at_version:
            new["bad"] = value
        return new

    reducer.apply = fold
    return reducer


def assert_names_the_event(store: EventStore, reducer: Reducer, spoiled: Event) -> None:
    replayer = Replayer(store, [reducer])
    named = f"not JSON after Added t-1 v{spoiled.version} \\(event {spoiled.id}\\)"
    assert replayer.replay_to("t-1", version=spoiled.version - 1).state == {
        "n": spoiled.version - 1
    }
    with pytest.raises(ReplayError, match=named):
        replayer.replay_to("t-1")
    with pytest.raises(ReplayError, match=named):
        replayer.replay_to("t-1", version=spoiled.version)
    with pytest.raises(ReplayError, match=named):
        list(replayer.history("t-1"))
    readable(store)
    with pytest.raises(ReplayError, match=named):
        replayer.world_at(store.log_horizon().head)


def test_state_that_is_not_json_is_named_at_the_event_that_made_it(store: EventStore) -> None:
    store.append_events([thing("t-1", v, "Added", T0 + v * SECOND) for v in range(1, 6)])
    spoiled = stored(store, "t-1")[1]
    for value in NOT_JSON.values():
        for snapshot_every in (0, 1, 2):  # 1, 2: the version that spoils it is snapshotted
            assert_names_the_event(store, spoiling_reducer(value, 2, snapshot_every), spoiled)


def test_state_that_is_not_json_is_named_at_its_event_before_a_snapshot_version(
    store: EventStore,
) -> None:
    store.append_events([thing("t-1", v, "Added", T0 + v * SECOND) for v in range(1, 6)])
    spoiled = stored(store, "t-1")[1]
    # Spoiled at version 2, snapshots every 3: the check at version 3 must not name v3.
    assert_names_the_event(store, spoiling_reducer({1, 2}, 2, 3), spoiled)


# -- history ------------------------------------------------------------------------------


def _parent(document: Any, path: str) -> tuple[Any, str | int]:
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
    for token in tokens[:-1]:
        document = document[int(token)] if isinstance(document, list) else document[token]
    last = tokens[-1]
    return document, int(last) if isinstance(document, list) else last


def patched(state: Any, changes: Sequence[StateChange]) -> Any:
    """`state` with the changes applied in order, as JSON Pointer operations (RFC 6901)."""
    state = json.loads(json.dumps(state))
    for change in changes:
        if change.path == "":
            assert change.op == "change"
            state = json.loads(json.dumps(change.new))
            continue
        parent, key = _parent(state, change.path)
        if change.op == "remove":
            assert parent[key] == change.old
            del parent[key]
        elif change.op == "add":
            if isinstance(parent, list):
                assert isinstance(key, int) and key <= len(parent)
                parent.insert(key, change.new)
            else:
                assert key not in parent
                parent[key] = change.new
        else:
            assert parent[key] == change.old
            parent[key] = change.new
    return state


def same_json(left: Any, right: Any) -> bool:
    """Equal as JSON text (so `true` and `1` differ)."""
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


def test_each_steps_changes_turn_the_previous_state_into_the_next(store: EventStore) -> None:
    offsets = [float(v) for v in range(1, 16)]
    store.append_events(things("t-1", offsets))
    events = stored(store, "t-1")
    replayer = Replayer(store, [thing_reducer()])
    steps = list(replayer.history("t-1"))
    assert [s.event.version for s in steps] == list(range(1, 16))
    before: Any = thing_reducer().initial()
    for step in steps:
        assert step.state == reference(events[: step.event.version])
        assert same_json(patched(before, step.changes), step.state), step.event.version
        assert step.changes  # every Thing event changes something
        assert step.event.id == events[step.event.version - 1].id
        before = step.state


def test_history_changes_cover_removals_type_changes_and_escaped_keys(
    store: EventStore,
) -> None:
    """A reducer whose states shrink, change type and use keys with `/` and `~`."""
    shapes: list[Any] = [
        {"a/b": [1, 2, 3], "m~n": {"x": True}},
        {"a/b": [1], "m~n": {"x": 1, "y": None}},
        {"a/b": "now a string", "m~n": {}},
        [0, {"k": "v"}],
        [0, {"k": "w", "l": [1]}, 2],
        7,
        {"z": False},
    ]
    reducer = Reducer("Shape", initial={})
    reducer.apply = lambda state, e: json.loads(json.dumps(shapes[e.version - 1]))
    store.append_events(
        [event("s-1", v, aggregate_type="Shape") for v in range(1, len(shapes) + 1)]
    )
    before: Any = {}
    for step in Replayer(store, [reducer]).history("s-1"):
        assert same_json(step.state, shapes[step.event.version - 1])
        assert same_json(patched(before, step.changes), step.state), step.changes
        before = step.state
    first = next(Replayer(store, [reducer]).history("s-1"))
    assert {c.path for c in first.changes} == {"/a~1b", "/m~0n"}


def test_history_pages_by_from_and_to_version(store: EventStore) -> None:
    store.append_events(things("t-1", [float(v) for v in range(1, 11)]))
    replayer = Replayer(store, [thing_reducer(snapshot_every=3)])

    def shown(from_version: int = 1, to_version: int | None = None) -> list[Any]:
        return [
            (s.event.version, s.state, [c.to_dict() for c in s.changes])
            for s in replayer.history("t-1", from_version=from_version, to_version=to_version)
        ]

    whole = shown()
    assert len(whole) == 10
    assert shown(1, 3) + shown(4, 7) + shown(8) == whole
    assert shown(5, 5) == whole[4:5]
    assert shown(10) == whole[9:]
    assert shown(4, 3) == []
    with pytest.raises(InvalidQueryError):
        shown(0)
    with pytest.raises(InvalidQueryError, match="from 0 to 10"):
        shown(12)


def test_history_reads_in_pages(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.append_events(things("t-1", [float(v) for v in range(1, 12)]))
    replayer = Replayer(store, [thing_reducer(snapshot_every=0)])
    whole = [(s.event.version, s.state) for s in replayer.history("t-1")]
    latest = replayer.replay_to("t-1")
    monkeypatch.setattr(_replayer, "PAGE", 3)
    assert [(s.event.version, s.state) for s in replayer.history("t-1")] == whole
    assert [(s.event.version, s.state) for s in replayer.history("t-1", from_version=4)] == whole[
        3:
    ]
    assert replayer.replay_to("t-1").state == latest.state
    assert replayer.replay_to("t-1", at=T0 + 100 * SECOND).version == 11


def test_changing_a_yielded_state_changes_no_later_step(store: EventStore) -> None:
    store.append_events(things("t-1", [float(v) for v in range(1, 9)]))
    replayer = Replayer(store, [thing_reducer()])
    clean = [(s.state, [c.to_dict() for c in s.changes]) for s in replayer.history("t-1")]
    seen = []
    for step in replayer.history("t-1"):
        seen.append((json.loads(json.dumps(step.state)), [c.to_dict() for c in step.changes]))
        step.state["seen"].append(-1)
        step.state["tags"]["forged"] = 0
        step.state["total"] = -1_000
    assert seen == clean
    assert replayer.replay_to("t-1").state == clean[-1][0]


# -- the world as of one position ---------------------------------------------------------


def populate(store: EventStore) -> list[Event]:
    """Things and Gadgets appended interleaved in several batches, and an Orphan (a type no
    reducer folds). Returns the log."""
    for round_ in range(4):
        batch = []
        for number in range(round_ + 2):  # later rounds bring new aggregates
            version = round_ + 1 - (number > 1) * (number - 1)
            if version < 1:
                continue
            at = T0 + (round_ * 7 % 5) * SECOND
            batch.append(thing(f"t-{number}", version, THING_TYPES[version % 5], at))
            if number % 2 == 0:
                batch.append(event(f"g-{number}", version, aggregate_type="Gadget", at=at))
        store.append_events(batch)
        store.append_event(event(f"o-{round_}", 1, aggregate_type="Orphan"))
    readable(store)
    return log(store)


def world_replayer(store: EventStore) -> Replayer:
    return Replayer(store, [thing_reducer(snapshot_every=2), gadget_reducer()])


def whole_world(replayer: Replayer, position: int, **options: Any) -> list[ReplayResult]:
    found: list[ReplayResult] = []
    after: AggregateRef | None = None
    while True:
        page = replayer.world_at(position, after=after, **options)
        found += page.aggregates
        if page.next_after is None:
            return found
        assert page.next_after == AggregateRef(found[-1].aggregate_type, found[-1].aggregate_id)
        after, position = page.next_after, page.position


def test_the_world_at_each_position_equals_each_aggregates_replay_there(
    store: EventStore,
) -> None:
    everything = populate(store)
    replayer = world_replayer(store)
    plain = Replayer(store, [thing_reducer(), gadget_reducer()], snapshots=False)
    for position in [0] + [e.position or 0 for e in everything]:
        world = replayer.world_at(position, limit=1000)
        assert world.position == position and world.next_after is None
        alive = sorted(
            {
                (e.aggregate_type, e.aggregate_id)
                for e in everything
                if (e.position or 0) <= position and e.aggregate_type != "Orphan"
            }
        )
        assert [(a.aggregate_type, a.aggregate_id) for a in world.aggregates] == alive
        for found in world.aggregates:
            alone = plain.replay_to(found.aggregate_id, position=position)
            assert (found.state, found.version, found.position) == (
                alone.state,
                alone.version,
                alone.position,
            )
            assert found.timestamp == alone.timestamp
            assert found.target == "position"


def test_the_world_pages_visit_each_aggregate_once_in_type_and_id_order(
    store: EventStore,
) -> None:
    everything = populate(store)
    replayer = world_replayer(store)
    head = everything[-1].position or 0
    once = [(a.aggregate_type, a.aggregate_id) for a in replayer.world_at(head).aggregates]
    assert once == sorted(once) and len(once) == 8
    assert {t for t, _ in once} == {"Gadget", "Thing"}  # every type with a reducer, no Orphan
    for limit in (1, 2, 3, 5, 8):
        paged = whole_world(replayer, head, limit=limit)
        assert [(a.aggregate_type, a.aggregate_id) for a in paged] == once, limit
    things_only = whole_world(replayer, head, aggregate_type="Thing", limit=2)
    assert [a.aggregate_id for a in things_only] == [i for t, i in once if t == "Thing"]
    assert [a.aggregate_id for a in replayer.iter_world(head, page=3)] == [i for _, i in once]


def test_the_world_leaves_out_aggregates_created_after_the_cut(store: EventStore) -> None:
    store.append_events(things("t-1", [1, 2]))
    store.append_events([event("g-1", 1, aggregate_type="Gadget")])
    readable(store)
    cut = store.log_horizon().head
    store.append_events(things("t-2", [3]))
    store.append_events([*things("t-1", [4], start=3), event("g-1", 2, aggregate_type="Gadget")])
    readable(store)
    replayer = world_replayer(store)
    world = replayer.world_at(cut)
    assert [(a.aggregate_id, a.version) for a in world.aggregates] == [("g-1", 1), ("t-1", 2)]
    assert replayer.world_at(cut, aggregate_type="Thing").aggregates[0].version == 2
    later = replayer.world_at(store.log_horizon().head)
    assert [(a.aggregate_id, a.version) for a in later.aggregates] == [
        ("g-1", 2),
        ("t-1", 3),
        ("t-2", 1),
    ]


def test_the_world_reads_many_aggregates_in_pages(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = populate(store)
    head = everything[-1].position or 0
    expected = [
        (a.aggregate_id, a.state, a.version)
        for a in world_replayer(store).world_at(head).aggregates
    ]
    for size in (1, 2, 3, 5):
        monkeypatch.setattr(_replayer, "MANY_PAGE", size)
        store.delete_snapshots()
        for replayer in (world_replayer(store), world_replayer(store)):  # without, then with
            found = replayer.world_at(head).aggregates
            assert [(a.aggregate_id, a.state, a.version) for a in found] == expected, size


@pytest.mark.postgres
def test_a_cut_stays_below_a_transaction_holding_the_horizon(
    postgres_url: str, pg_schema: str
) -> None:
    """PostgreSQL only: SQLite serialises writers, so nothing holds its horizon back."""
    with open_store(postgres_url, schema=pg_schema) as store:
        store.migrate()
        cut_below_a_running_transaction(store, postgres_url)


def cut_below_a_running_transaction(store: EventStore, postgres_url: str) -> None:
    store.append_events([*things("t-1", [1, 2]), event("g-1", 1, aggregate_type="Gadget")])
    readable(store)
    replayer = world_replayer(store)
    before = replayer.world_at(store.log_horizon().head).aggregates
    with psycopg.connect(postgres_url) as holder:
        holder.execute("SELECT pg_current_xact_id()")  # BEGIN, with a transaction id
        late = store.append_events(
            [
                *things("t-1", [3], start=3),
                *things("t-2", [4]),
                event("g-1", 2, aggregate_type="Gadget"),
            ]
        )
        head = store.log_horizon().head
        assert head == max(late)
        cut = replayer.cut(head)
        assert cut < min(late)
        world = replayer.world_at(head)
        assert world.position == cut
        assert [(a.aggregate_id, a.state, a.version) for a in world.aggregates] == [
            (a.aggregate_id, a.state, a.version) for a in before
        ]
        # Each replay bounded by position is held below the horizon too.
        assert replayer.replay_to("t-1", position=head).version == 2
        assert replayer.replay_to("t-2", position=head).version == 0
        holder.commit()
    readable(store)
    after = replayer.world_at(store.log_horizon().head)
    assert [(a.aggregate_id, a.version) for a in after.aggregates] == [
        ("g-1", 2),
        ("t-1", 3),
        ("t-2", 1),
    ]


def test_held_back_does_not_depend_on_where_a_read_began(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`held_back` counts the same window after the stop whether the replay read from the
    first event or from a snapshot (pages of 3 events, so the stop falls inside a page)."""
    monkeypatch.setattr(_replayer, "PAGE", 3)
    store.append_events(things("t-1", [1, 2, 3, 4, 5, 100, 2, 3, 4, 5, 6, 7]))
    at = T0 + 5.5 * SECOND
    plain = Replayer(store, [thing_reducer(snapshot_every=4)], snapshots=False)
    cached = Replayer(store, [thing_reducer(snapshot_every=4)])
    cached.replay_to("t-1")  # stores the snapshots at v4 and v8
    from_snapshot = cached.replay_to("t-1", at=at)
    assert from_snapshot.snapshot_version == 4
    from_start = plain.replay_to("t-1", at=at)
    assert (from_start.version, from_start.held_back) == (5, 4)  # v7..v10 stamped before
    assert (from_snapshot.version, from_snapshot.held_back) == (5, 4)


@pytest.mark.postgres
def test_a_position_replay_ignores_snapshots_beyond_a_held_horizon(
    postgres_url: str, pg_schema: str
) -> None:
    """Snapshots written by a replay to the latest version may lie above the log's horizon;
    a replay to a position must not start from them while the cut is held below it, or its
    answer would depend on whether snapshots exist."""
    with open_store(postgres_url, schema=pg_schema) as store:
        store.migrate()
        store.append_events(things("t-1", [1, 2]))
        readable(store)
        cached = Replayer(store, [thing_reducer(snapshot_every=2)])
        plain = Replayer(store, [thing_reducer(snapshot_every=2)], snapshots=False)
        with psycopg.connect(postgres_url) as holder:
            holder.execute("SELECT pg_current_xact_id()")  # BEGIN, with a transaction id
            late = store.append_events(things("t-1", [3, 4, 5, 6], start=3))
            assert cached.replay_to("t-1").snapshot_version is None  # writes v4 and v6 ...
            assert store.snapshot_count("t-1") >= 2  # ... above the horizon
            with_snapshots = cached.replay_to("t-1", position=max(late))
            without = plain.replay_to("t-1", position=max(late))
            assert (with_snapshots.state, with_snapshots.version) == (
                without.state,
                without.version,
            )
            assert without.version == 2
            holder.commit()


def test_world_arguments_are_checked(store: EventStore) -> None:
    replayer = world_replayer(store)
    for limit in (0, 1001, True):
        with pytest.raises(InvalidQueryError, match="limit"):
            replayer.world_at(1, limit=limit)
    with pytest.raises(InvalidQueryError, match="position"):
        replayer.world_at(-1)
    assert replayer.world_at(0).aggregates == []


# -- the store capabilities replay stands on ----------------------------------------------

# Ids whose code-point order differs from a case-insensitive or locale order.
IDS = ["b", "B", "a", "_x", "é", "Z", "a-10", "a-2", "ä"]


def test_list_aggregates_pages_by_type_and_id_and_respects_max_position(
    store: EventStore,
) -> None:
    positions = {}
    for number, aggregate_id in enumerate(IDS):
        aggregate_type = ("Thing", "Gadget", "Orphan")[number % 3]
        e = event(aggregate_id, 1, aggregate_type=aggregate_type)
        positions[(aggregate_type, aggregate_id)] = store.append_event(e)
        store.append_event(event(aggregate_id, 2, aggregate_type=aggregate_type))
    everything = sorted(positions)
    assert store.list_aggregates(limit=100) == [AggregateRef(*r) for r in everything]
    paged: list[AggregateRef] = []
    after: AggregateRef | None = None
    while page := store.list_aggregates(after=after, limit=2):
        assert len(page) <= 2
        paged += page
        after = page[-1]
    assert paged == [AggregateRef(*r) for r in everything]

    gadgets = [AggregateRef(*r) for r in everything if r[0] == "Gadget"]
    assert store.list_aggregates("Gadget") == gadgets
    assert store.list_aggregates("Gadget", after=gadgets[0], limit=1) == gadgets[1:2]
    assert store.list_aggregates("Nothing") == []

    cut = sorted(positions.values())[4]
    assert store.list_aggregates(max_position=cut) == [
        AggregateRef(*r) for r in everything if positions[r] <= cut
    ]
    assert store.list_aggregates("Thing", max_position=0) == []

    with pytest.raises(InvalidQueryError, match="not of aggregate type 'Gadget'"):
        store.list_aggregates("Gadget", after=AggregateRef("Thing", "a"))
    for limit in (0, 10_001):
        with pytest.raises(InvalidQueryError, match="limit"):
            store.list_aggregates(limit=limit)


def test_aggregates_are_listed_and_replayed_by_id_prefix(store: EventStore) -> None:
    ids = ["w1", "w1-a", "w1-b", "w10-a", "w2-a", "w0-z", "v1-a", "W1-a", "w1-\u00e9"]
    for number, aggregate_id in enumerate(ids):
        if number % 2:
            store.append_events([event(aggregate_id, 1, aggregate_type="Gadget")])
        else:
            store.append_events(things(aggregate_id, [1, 2]))
    readable(store)

    def listed(prefix: str, aggregate_type: str | None = None, limit: int = 100) -> list[str]:
        found: list[str] = []
        after: AggregateRef | None = None
        while page := store.list_aggregates(
            aggregate_type, after=after, id_prefix=prefix, limit=limit
        ):
            found += [ref.aggregate_id for ref in page]
            after = page[-1]
        return found

    # Gadgets are the odd ones; by (type, id) in code-point order, page after page.
    assert listed("w1-", "Thing") == ["w1-b", "w1-\u00e9"]
    assert listed("w1-", "Gadget") == ["w1-a"]
    assert listed("w1-") == ["w1-a", "w1-b", "w1-\u00e9"]
    assert listed("w1", limit=1) == ["w1-a", "w10-a", "w1", "w1-b", "w1-\u00e9"]
    assert listed("", limit=2) == [r.aggregate_id for r in store.list_aggregates()]
    assert listed("nothing") == []
    with pytest.raises(InvalidQueryError, match="id_prefix"):
        store.list_aggregates(id_prefix=5)  # type: ignore[arg-type]

    replayer = world_replayer(store)
    head = store.log_horizon().head
    world = replayer.world_at(head, id_prefix="w1", limit=2)
    assert [a.aggregate_id for a in world.aggregates] == ["w1-a", "w10-a"]
    paged = [a.aggregate_id for a in replayer.iter_world(head, id_prefix="w1", page=2)]
    assert paged == ["w1-a", "w10-a", "w1", "w1-b", "w1-\u00e9"]


def test_a_prefix_ending_in_the_last_code_point_lists_only_its_ids(store: EventStore) -> None:
    top = "\U0010ffff"
    for aggregate_id in ["w", f"w{top}", f"w{top}a", "x", top]:
        store.append_event(event(aggregate_id, 1))
    assert [r.aggregate_id for r in store.list_aggregates(id_prefix=f"w{top}")] == [
        f"w{top}",
        f"w{top}a",
    ]


def test_a_prefix_ending_below_the_surrogates_lists_its_ids(store: EventStore) -> None:
    for aggregate_id in ["a\ud7ff", "a\ud7ffb", "a\ue000"]:
        store.append_event(event(aggregate_id, 1))
    assert [r.aggregate_id for r in store.list_aggregates(id_prefix="a\ud7ff")] == [
        "a\ud7ff",
        "a\ud7ffb",
    ]


def test_read_aggregates_orders_by_id_in_code_points_then_version(store: EventStore) -> None:
    for version in range(1, 4):
        store.append_events([event(i, version) for i in reversed(IDS)])
    readable(store)
    found = store.read_aggregates(dict.fromkeys(IDS, 0))
    assert [(e.aggregate_id, e.version) for e in found] == [
        (i, v) for i in sorted(IDS) for v in range(1, 4)
    ]
    # Each from its own version on, up to a version, a position, a limit.
    afters = {"b": 2, "B": 0, "é": 3, "a-2": 1}
    assert [(e.aggregate_id, e.version) for e in store.read_aggregates(afters)] == [
        ("B", 1), ("B", 2), ("B", 3), ("a-2", 2), ("a-2", 3), ("b", 3),
    ]  # fmt: skip
    capped = store.read_aggregates(afters, max_version=2)
    assert [(e.aggregate_id, e.version) for e in capped] == [("B", 1), ("B", 2), ("a-2", 2)]
    second_round = max(e.position or 0 for e in found if e.version == 2)
    bounded = store.read_aggregates(afters, max_position=second_round)
    assert [(e.aggregate_id, e.version) for e in bounded] == [("B", 1), ("B", 2), ("a-2", 2)]
    assert [(e.aggregate_id, e.version) for e in store.read_aggregates(afters, limit=4)] == [
        ("B", 1), ("B", 2), ("B", 3), ("a-2", 2),
    ]  # fmt: skip
    one = store.read_aggregates({"é": 1}, max_version=2)
    assert [(e.aggregate_id, e.version) for e in one] == [("é", 2)]
    assert store.read_aggregates({"é": 1}, max_position=0) == []
    assert store.read_aggregates({}) == []
    assert store.read_aggregates({"nobody": 0}) == []
    for limit in (0, 10_001):
        with pytest.raises(InvalidQueryError, match="limit"):
            store.read_aggregates({"b": 0}, limit=limit)


def test_read_aggregates_returns_events_upcast(store_factory: StoreFactory) -> None:
    store_factory().append_events(things("t-1", [1, 2, 3]))
    upcasters = Upcasters()

    @upcasters.register("Added", from_version=1)
    def _negate(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "n": -payload["n"]}

    store = store_factory(upcasters)
    found = store.read_aggregates({"t-1": 0, "t-0": 0})
    assert [e.payload.get("n") for e in found if e.event_type == "Added"] == [-1]
    assert [e.schema_version for e in found if e.event_type == "Added"] == [2]
    assert found == store.read_aggregates({"t-1": 0})


def test_a_request_is_claimed_once_and_answered_from_its_record(store: EventStore) -> None:
    hour = 3600.0
    assert store.claim_request("r-1", "rebuild", "w-a", hour) == Claim(None, None)
    # Another worker while the claim is fresh: told who runs it, not given the claim.
    busy = store.claim_request("r-1", "rebuild", "w-b", hour)
    assert (busy.reply, busy.holder) == (None, "w-a") and busy.claimed_at is not None
    assert store.claim_request("r-1", "rebuild", "w-a", hour) == Claim(None, None)  # its own again
    # Only the claimer stores the reply, once.
    assert store.finish_request("r-1", "w-b", '{"ok": false}') is False
    assert store.finish_request("r-1", "w-a", '{"ok": true}') is True
    assert store.finish_request("r-1", "w-a", '{"ok": false}') is False
    assert store.claim_request("r-1", "rebuild", "w-b", hour).reply == '{"ok": true}'
    assert store.claim_request("r-1", "rebuild", "w-b", 0.0).reply == '{"ok": true}'


def test_a_claim_never_finished_is_taken_over_after_the_timeout(store: EventStore) -> None:
    assert store.claim_request("r-2", "rebuild", "w-dead", 3600.0) == Claim(None, None)
    assert store.claim_request("r-2", "rebuild", "w-b", 0.0) == Claim(None, None)  # stale: taken
    assert store.finish_request("r-2", "w-dead", '{"ok": true}') is False  # no longer its own
    assert store.claim_request("r-2", "rebuild", "w-dead", 3600.0).holder == "w-b"
    assert store.finish_request("r-2", "w-b", '{"ok": false}') is True
    assert store.claim_request("r-2", "rebuild", "w-c", 3600.0).reply == '{"ok": false}'
