"""The HTTP API's store capabilities on every backend: `ApiTokens` (bearer tokens kept as
digests, a name unique among live tokens) and `Correlations` (the events of one correlation
id, by position, upcast like every read)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventstore import Event, EventStore
from eventstore.errors import InvalidQueryError
from eventstore.store import ApiToken, ApiTokens, Correlations
from eventstore.versioning import Upcasters
from tests.conftest import StoreFactory
from tests.helpers import T0

# -- tokens ---------------------------------------------------------------------------------


def new_id() -> str:
    return secrets.token_hex(8)


def digest_of(text: str) -> str:
    return f"digest-of-{text}"


def names(tokens: list[ApiToken]) -> list[str]:
    return [t.name for t in tokens]


def test_the_store_has_both_capabilities(store: EventStore) -> None:
    assert isinstance(store, ApiTokens)
    assert isinstance(store, Correlations)


def test_a_token_is_created_found_listed_and_revoked(store: EventStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    token_id = new_id()
    store.create_token(token_id, "ci-deploy", ["read", "append"], digest_of("s1"))

    found = store.find_token(token_id)
    assert found is not None
    assert (found.token_id, found.name, found.scopes, found.digest) == (
        token_id,
        "ci-deploy",
        ("append", "read"),
        digest_of("s1"),
    )
    assert found.revoked_at is None
    assert found.created_at.tzinfo is not None
    assert before <= found.created_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert store.list_tokens() == [found]

    assert store.revoke_token("ci-deploy") == 1
    assert store.revoke_token("ci-deploy") == 0, "a revoked token is not revoked again"
    revoked = store.find_token(token_id)
    assert revoked is not None, "a revoked token is still found (so that it is refused)"
    assert revoked.revoked_at is not None and revoked.revoked_at >= found.created_at
    assert revoked._replace(revoked_at=None) == found


def test_an_unknown_token_id_or_name_finds_nothing(store: EventStore) -> None:
    store.create_token(new_id(), "known", ["read"], digest_of("x"))
    assert store.find_token(new_id()) is None
    assert store.find_token("") is None
    assert store.revoke_token("unknown") == 0
    assert names(store.list_tokens()) == ["known"]


def test_revoked_tokens_are_listed_only_when_asked(store: EventStore) -> None:
    for name in ("bravo", "alpha", "charlie"):
        store.create_token(new_id(), name, ["read"], digest_of(name))
    assert names(store.list_tokens()) == ["alpha", "bravo", "charlie"]
    store.revoke_token("bravo")
    assert names(store.list_tokens()) == ["alpha", "charlie"]
    assert names(store.list_tokens(revoked=False)) == ["alpha", "charlie"]
    listed = store.list_tokens(revoked=True)
    assert names(listed) == ["alpha", "bravo", "charlie"]
    assert [t.revoked_at is not None for t in listed] == [False, True, False]


def test_a_live_name_is_unique_and_reusable_after_revoke(store: EventStore) -> None:
    first, second, third = new_id(), new_id(), new_id()
    store.create_token(first, "game-server", ["append"], digest_of("1"))
    with pytest.raises(InvalidQueryError, match="game-server"):
        store.create_token(second, "game-server", ["read"], digest_of("2"))
    assert store.find_token(second) is None, "the refused token must not be stored"
    assert [t.token_id for t in store.list_tokens(revoked=True)] == [first]

    assert store.revoke_token("game-server") == 1
    store.create_token(third, "game-server", ["read"], digest_of("3"))
    live = store.list_tokens()
    assert [(t.token_id, t.scopes) for t in live] == [(third, ("read",))]
    every = store.list_tokens(revoked=True)
    assert sorted(t.token_id for t in every) == sorted([first, third])
    # Revoking by name revokes the live one only; the old one keeps its revocation time.
    old = store.find_token(first)
    assert old is not None and old.revoked_at is not None
    assert store.revoke_token("game-server") == 1
    again = store.find_token(first)
    assert again is not None and again.revoked_at == old.revoked_at
    assert store.list_tokens() == []


def test_the_same_token_id_cannot_be_stored_twice(store: EventStore) -> None:
    token_id = new_id()
    store.create_token(token_id, "one", ["read"], digest_of("1"))
    with pytest.raises(Exception):  # noqa: B017 - the primary key; any error, nothing written
        store.create_token(token_id, "two", ["admin"], digest_of("2"))
    found = store.find_token(token_id)
    assert found is not None and (found.name, found.scopes) == ("one", ("read",))


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (["read", "append", "admin"], ("admin", "append", "read")),
        (["read", "read", "append"], ("append", "read")),
        (("append",), ("append",)),
    ],
)
def test_scopes_are_stored_sorted_without_duplicates(
    store: EventStore, given: list[str], kept: tuple[str, ...]
) -> None:
    token_id = new_id()
    store.create_token(token_id, "scoped", given, digest_of("s"))
    found = store.find_token(token_id)
    assert found is not None and found.scopes == kept
    assert store.list_tokens()[0].scopes == kept


@pytest.mark.parametrize("scopes", [[], ["read write"], [""]])
def test_scopes_that_are_not_words_are_refused(store: EventStore, scopes: list[str]) -> None:
    with pytest.raises(InvalidQueryError):
        store.create_token(new_id(), "bad", scopes, digest_of("s"))
    assert store.list_tokens(revoked=True) == []


def test_names_are_kept_exactly(store: EventStore) -> None:
    odd = ['o\'brien "ops"; --', "Ärger ✓", "a%_b", "back\\slash"]
    for name in odd:
        store.create_token(new_id(), name, ["read"], digest_of(name))
    assert sorted(names(store.list_tokens())) == sorted(odd)
    assert store.revoke_token("a%_b") == 1
    assert store.revoke_token("a__b") == 0, "a name is matched exactly, not as a pattern"
    assert sorted(names(store.list_tokens())) == sorted(n for n in odd if n != "a%_b")


def test_tokens_are_seen_by_another_store_on_the_same_data(store_factory: StoreFactory) -> None:
    writer = store_factory()
    token_id = new_id()
    writer.create_token(token_id, "shared", ["read"], digest_of("shared"))
    reader = store_factory()
    assert reader.find_token(token_id) == writer.find_token(token_id)
    writer.revoke_token("shared")
    seen = reader.find_token(token_id)
    assert seen is not None and seen.revoked_at is not None


# -- correlations ---------------------------------------------------------------------------


def stamped(
    aggregate_id: str,
    version: int,
    correlation: Any = None,
    *,
    metadata: dict[str, Any] | None = None,
    event_type: str = "PlayerMoved",
    **payload: Any,
) -> Event:
    meta = dict(metadata or {})
    if correlation is not None:
        meta["correlation_id"] = correlation
    return Event.new(
        aggregate_type="Player",
        aggregate_id=aggregate_id,
        event_type=event_type,
        version=version,
        payload=payload or {"x": version, "y": -version},
        metadata=meta,
        timestamp=T0 + timedelta(seconds=version),
    )


def log(store: EventStore) -> list[Event]:
    found: list[Event] = []
    after = 0
    while page := store.read_all(after, 1000):
        found += page
        after = page[-1].position or after
    return found


def test_events_of_a_correlation_id_come_by_position(store: EventStore) -> None:
    # Three requests interleaved across aggregates and batches; some events carry no id.
    store.append_events([stamped("p1", 1, "req-a"), stamped("p2", 1, "req-b")])
    store.append_events([stamped("p3", 1), stamped("p1", 2, "req-b")])
    store.append_events([stamped("p2", 2, "req-a", metadata={"causation_id": "x"})])
    store.append_event(stamped("p3", 2, "req-c"))
    store.append_events([stamped("p1", 3, "req-a"), stamped("p3", 3, "req-a")])
    everything = log(store)
    for correlation in ("req-a", "req-b", "req-c"):
        expected = [e for e in everything if e.metadata.get("correlation_id") == correlation]
        found = store.get_events_by_correlation(correlation)
        assert found == expected, correlation
        positions = [e.position or 0 for e in found]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert [(e.aggregate_id, e.version) for e in store.get_events_by_correlation("req-a")] == [
        ("p1", 1),
        ("p2", 2),
        ("p1", 3),
        ("p3", 3),
    ]
    assert store.get_events_by_correlation("req-z") == []


def test_the_limit_keeps_the_first_events(store: EventStore) -> None:
    store.append_events([stamped("p", v, "many") for v in range(1, 8)])
    everything = store.get_events_by_correlation("many")
    assert [e.version for e in everything] == list(range(1, 8))
    assert store.get_events_by_correlation("many", limit=3) == everything[:3]
    assert store.get_events_by_correlation("many", limit=1) == everything[:1]
    assert store.get_events_by_correlation("many", limit=1000) == everything


@pytest.mark.parametrize("limit", [0, -1, 10_001, True, 2.5])
def test_a_bad_limit_is_refused(store: EventStore, limit: Any) -> None:
    with pytest.raises(InvalidQueryError):
        store.get_events_by_correlation("any", limit=limit)


def test_events_without_a_correlation_id_are_never_returned(store: EventStore) -> None:
    store.append_events(
        [
            stamped("p", 1),  # no metadata at all
            stamped("p", 2, metadata={"causation_id": "c"}),
            stamped("p", 3, metadata={"correlation": "c", "Correlation_Id": "c"}),
            stamped("p", 4, correlation_id="c"),  # in the payload, not the metadata
            stamped("p", 5, metadata={"correlation_id": None}),
            stamped("p", 6, "c"),
        ]
    )
    assert [e.version for e in store.get_events_by_correlation("c")] == [6]
    for text in ("", "None", "null", "NULL"):
        assert store.get_events_by_correlation(text) == [], repr(text)


def test_only_a_string_correlation_id_equal_to_the_one_asked_is_found(store: EventStore) -> None:
    """`metadata.correlation_id` IS the id asked for: a number, a boolean or an object whose
    text reads the same is another value (and both backends must agree)."""
    store.append_events(
        [
            stamped("p", 1, 5),
            stamped("p", 2, True),
            stamped("p", 3, {"a": 1}),
            stamped("p", 4, "5"),
            stamped("p", 5, "true"),
        ]
    )
    found = {
        text: [e.version for e in store.get_events_by_correlation(text)]
        for text in ("5", "true", '{"a": 1}')
    }
    assert found == {"5": [4], "true": [5], '{"a": 1}': []}, (
        f"{type(store).__name__} matched non-string correlation ids by their text: {found} "
        "(only the events whose correlation_id is that string may come back; SQLite's "
        "json_extract keeps the JSON type, PostgreSQL's ->> turns 5 into '5')"
    )


ODD_IDS = [
    "c/1 ?#&=",
    "100%_done",
    "o'brien\"; DROP TABLE events; --",
    "Ärger ✓ 🎲",
    "back\\slash",
    " padded ",
    "line\nbreak",
    "x" * 1000,
]


def test_correlation_ids_with_odd_characters_are_matched_exactly(store: EventStore) -> None:
    store.append_events([stamped("p", v, text) for v, text in enumerate(ODD_IDS, start=1)])
    # Near misses that a pattern match (LIKE), trimming or case folding would confuse.
    store.append_events(
        [
            stamped("q", 1, "100X_done"),
            stamped("q", 2, "100%Xdone"),
            stamped("q", 3, "padded"),
            stamped("q", 4, "ärger ✓ 🎲"),
            stamped("q", 5, "x" * 999),
        ]
    )
    for version, text in enumerate(ODD_IDS, start=1):
        found = store.get_events_by_correlation(text)
        assert [(e.aggregate_id, e.version) for e in found] == [("p", version)], repr(text)
    assert store.get_events_by_correlation("%") == []
    assert store.get_events_by_correlation("_") == []


def test_events_by_correlation_are_upcast_like_every_read(store_factory: StoreFactory) -> None:
    upcasters = Upcasters()

    @upcasters.register("PlayerMoved", from_version=1)
    def _to_v2(payload: dict[str, Any]) -> dict[str, Any]:
        return {"position": [payload["x"], payload["y"]]}

    writer = store_factory()
    writer.append_events([stamped("p", 1, "up"), stamped("p", 2, "up", event_type="Other")])
    reader = store_factory(upcasters)
    found = reader.get_events_by_correlation("up")
    assert [(e.event_type, e.schema_version, dict(e.payload)) for e in found] == [
        ("PlayerMoved", 2, {"position": [1, -1]}),
        ("Other", 1, {"x": 2, "y": -2}),
    ]
    assert found[0] == reader.read_all(0, 1)[0], "the same event as the global log gives"
    assert writer.get_events_by_correlation("up")[0].payload == {"x": 1, "y": -1}
