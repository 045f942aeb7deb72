"""The Replayer: an aggregate's state at any version, time or global position; its history
step by step with what each event changed; the world as of one global position.

What `at` means. Game timestamps need not grow with versions (clients' clocks drift, events
are reported late), but state only ever exists as a fold of a prefix of the history, in
version order: skipping an event to honour a timestamp would show a state that never
existed. So the state *at* a time T is the state after the longest prefix of the history
whose events all happened at or before T, that is, just before the first event stamped
after T. It is monotonic (a later T never reaches an earlier version), and no effect of an
event stamped after T is ever shown. An event stamped at or before T that comes after one
stamped later is left out with it; `ReplayResult.held_back` counts such events, so a
designer can see that the aggregate's clock went backwards there.

Snapshots (a cache, see `Reducer.snapshot_every`): each stores the state after a version,
that version's position, the latest game time in the prefix, the reducer's version and the
upcasters' fingerprint, with a digest over all of them. A replay starts from the nearest
snapshot at or below its target made by the same reducer version and fingerprint (for `at`,
one whose prefix is wholly at or before T), verifies its digest (a damaged one is ignored
with a warning and the next lower is tried), and on its way stores the snapshots it passes
and did not find. Deleting every snapshot changes no result.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Protocol

from eventstore.errors import (
    AggregateNotFoundError,
    EventStoreError,
    InvalidQueryError,
    ReplayError,
)
from eventstore.events import Event
from eventstore.replay._diff import StateChange, diff
from eventstore.replay._reducers import Reducer, check_reducers
from eventstore.store import (
    MAX_READ_LIMIT,
    AggregateReads,
    AggregateRef,
    LogMonitor,
    Snapshot,
    Snapshots,
)
from eventstore.versioning import Upcasters

log = logging.getLogger(__name__)

PAGE = 2_000
"""Events read per round trip replaying one aggregate."""
MANY_PAGE = 10_000
"""Events read per round trip replaying a page of the world."""
HELD_WINDOW = 1_000
"""How far after the stop of an `at` replay `held_back` looks."""
_TYPE_CACHE = 100_000


class ReplayStore(AggregateReads, Snapshots, LogMonitor, Protocol):
    """What the replayer needs of a store."""

    @property
    def upcasters(self) -> Upcasters: ...


def _utc(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ReplayResult:
    """An aggregate's state at a point of its history."""

    aggregate_id: str
    aggregate_type: str
    state: Any
    version: int
    """The version reached (0: before its first event)."""
    timestamp: datetime | None
    """Game time of the event at `version` (None at version 0)."""
    position: int | None
    """Global position of the event at `version`."""
    events_applied: int
    """Events folded by this replay (after the snapshot it started from)."""
    snapshot_version: int | None
    """The version of the snapshot it started from (None: from the first event)."""
    target: str
    """`latest`, `version`, `at` or `position`."""
    held_back: int = 0
    """With `at`: events stamped at or before it that come after the first one stamped
    later (among the 1,000 events after it; see the module's notes on `at`)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "aggregate_id": self.aggregate_id,
            "aggregate_type": self.aggregate_type,
            "state": self.state,
            "version": self.version,
            "timestamp": _utc(self.timestamp),
            "position": self.position,
            "events_applied": self.events_applied,
            "snapshot_version": self.snapshot_version,
            "target": self.target,
            "held_back": self.held_back,
        }


@dataclass(frozen=True)
class Step:
    """One step of an aggregate's history: the event, the state after it, what it changed."""

    event: Event
    state: Any
    changes: list[StateChange]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.event.version,
            "event": self.event.to_dict(),
            "state": self.state,
            "changes": [c.to_dict() for c in self.changes],
        }


@dataclass(frozen=True)
class WorldPage:
    """A page of the world as of one global position: the state of each aggregate that
    existed there, by (type, id)."""

    position: int
    """The cut: every state is as of this position (pass it for the next pages)."""
    aggregates: list[ReplayResult]
    next_after: AggregateRef | None
    """Pass as `after` for the next page; None on the last page."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "aggregates": [a.to_dict() for a in self.aggregates],
            "next_after": list(self.next_after) if self.next_after else None,
        }


@dataclass
class _Fold:
    """One aggregate's fold in progress."""

    reducer: Reducer
    aggregate_id: str
    state: Any
    version: int = 0
    position: int | None = None
    timestamp: datetime | None = None
    max_timestamp: datetime | None = None
    applied: int = 0
    snapshot_version: int | None = None
    last: Event | None = None
    snapshots: list[tuple[int, int, datetime, datetime, str]] = field(default_factory=list)


def _digest(
    aggregate_id: str,
    version: int,
    position: int,
    timestamp: datetime,
    max_timestamp: datetime,
    reducer_version: int,
    fingerprint: str,
    state: str,
) -> str:
    text = "\n".join(
        [
            aggregate_id,
            str(version),
            str(position),
            timestamp.astimezone(UTC).isoformat(timespec="microseconds"),
            max_timestamp.astimezone(UTC).isoformat(timespec="microseconds"),
            str(reducer_version),
            fingerprint,
            state,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()


class Replayer:
    """Rebuilds aggregate state from the store's events with the registered reducers.

    `snapshots=False` neither reads nor writes snapshots (results are the same, only slower
    on long histories). Thread-safe as far as the store is.
    """

    def __init__(
        self,
        store: ReplayStore,
        reducers: Iterable[Reducer],
        *,
        snapshots: bool = True,
    ) -> None:
        self.store = store
        self.reducers = check_reducers(reducers)
        self.snapshots = snapshots
        self.fingerprint = store.upcasters.fingerprint()
        self._types: dict[str, str] = {}

    # -- lookups ----------------------------------------------------------------------------

    def reducer_for(self, aggregate_type: str) -> Reducer:
        reducer = self.reducers.get(aggregate_type)
        if reducer is None:
            known = ", ".join(sorted(self.reducers)) or "none"
            raise ReplayError(
                f"no reducer for aggregate type {aggregate_type!r} (reducers: {known}); "
                "register a Reducer for it"
            )
        return reducer

    def aggregate_type(self, aggregate_id: str) -> str:
        """The aggregate's type (AggregateNotFoundError when it has no events)."""
        if not isinstance(aggregate_id, str) or not aggregate_id:
            raise InvalidQueryError(
                f"aggregate_id must be a non-empty string, not {aggregate_id!r}"
            )
        found = self._types.get(aggregate_id)
        if found is None:
            first = self.store.read_aggregates({aggregate_id: 0}, max_version=1, limit=1)
            if not first:
                raise AggregateNotFoundError(
                    f"no events of aggregate {aggregate_id!r} are stored; check the id "
                    "(e.g. `eventstore events --aggregate ID`)"
                )
            found = first[0].aggregate_type
            if len(self._types) >= _TYPE_CACHE:
                self._types.clear()
            self._types[aggregate_id] = found
        return found

    # -- snapshots --------------------------------------------------------------------------

    def _verified(self, snapshot: Snapshot) -> Any | None:
        """The snapshot's state, or None (with a warning) when the row is damaged."""
        try:
            expected = _digest(
                snapshot.aggregate_id,
                snapshot.version,
                snapshot.position,
                snapshot.timestamp,
                snapshot.max_timestamp,
                snapshot.reducer_version,
                snapshot.fingerprint,
                snapshot.state,
            )
            if expected == snapshot.digest:
                return json.loads(snapshot.state)
        except (TypeError, ValueError, AttributeError):  # a column of the wrong type
            pass
        log.warning(
            "snapshot of %s v%d is damaged (its digest does not match); ignored, and "
            "replaced on the next replay past it",
            snapshot.aggregate_id,
            snapshot.version,
        )
        return None

    def _start(
        self,
        reducer: Reducer,
        aggregate_ids: Sequence[str],
        *,
        max_version: int | None = None,
        max_position: int | None = None,
        max_timestamp: datetime | None = None,
    ) -> dict[str, _Fold]:
        """A fold per aggregate, from its nearest usable snapshot."""
        folds = {i: _Fold(reducer, i, reducer.initial()) for i in aggregate_ids}
        if not (self.snapshots and reducer.snapshot_every):
            return folds

        def load(ids: Sequence[str], ceiling: int | None) -> dict[str, Snapshot]:
            return self.store.load_snapshots(
                ids,
                reducer_version=reducer.version,
                fingerprint=self.fingerprint,
                max_version=ceiling,
                max_position=max_position,
                max_timestamp=max_timestamp,
            )

        found = load(aggregate_ids, max_version)
        for aggregate_id, snapshot in found.items():
            state = self._verified(snapshot)
            # A damaged one: try the next lower ones (a few; then from the first event).
            for _ in range(3):
                if state is not None or snapshot.version <= 1:
                    break
                lower = load([aggregate_id], snapshot.version - 1).get(aggregate_id)
                if lower is None:
                    break
                snapshot, state = lower, self._verified(lower)
            if state is None:
                continue
            fold = folds[aggregate_id]
            fold.state = state
            fold.version = snapshot.version
            fold.position = snapshot.position
            fold.timestamp = snapshot.timestamp
            fold.max_timestamp = snapshot.max_timestamp
            fold.snapshot_version = snapshot.version
        return folds

    def _save(self, folds: Collection[_Fold]) -> None:
        """Store the snapshots the folds passed since the last save."""
        rows = [
            Snapshot(
                aggregate_id=fold.aggregate_id,
                aggregate_type=fold.reducer.aggregate_type,
                version=version,
                position=position,
                timestamp=timestamp,
                max_timestamp=max_timestamp,
                reducer_version=fold.reducer.version,
                fingerprint=self.fingerprint,
                state=text,
                digest=_digest(
                    fold.aggregate_id,
                    version,
                    position,
                    timestamp,
                    max_timestamp,
                    fold.reducer.version,
                    self.fingerprint,
                    text,
                ),
            )
            for fold in folds
            for version, position, timestamp, max_timestamp, text in fold.snapshots
        ]
        for fold in folds:
            fold.snapshots.clear()
        if not rows:
            return
        try:
            self.store.save_snapshots(rows)
        except EventStoreError as error:  # a cache: a failed write costs speed, not results
            log.warning(
                "could not store %d snapshots (%s); replays go on without", len(rows), error
            )

    # -- folding ----------------------------------------------------------------------------

    def _apply(self, fold: _Fold, event: Event, *, check: bool) -> None:
        reducer = fold.reducer
        fold.state = reducer.fold(fold.state, event)
        fold.version = event.version
        fold.position = event.position
        fold.timestamp = event.timestamp
        if fold.max_timestamp is None or event.timestamp > fold.max_timestamp:
            fold.max_timestamp = event.timestamp
        fold.applied += 1
        fold.last = event
        every = reducer.snapshot_every
        snapshot_due = self.snapshots and every and event.version % every == 0
        if check:
            text = reducer.check(fold.state, event)
        elif snapshot_due:
            try:
                text = reducer.check(fold.state, event)
            except ReplayError:
                # It may have stopped being JSON at an earlier event: the caller folds again,
                # checking every step, to name that one.
                raise _NotJson from None
        if snapshot_due:
            assert event.position is not None and fold.max_timestamp is not None
            fold.snapshots.append(
                (event.version, event.position, event.timestamp, fold.max_timestamp, text)
            )

    def _finish(self, fold: _Fold, target: str, held_back: int = 0) -> ReplayResult:
        try:
            fold.reducer.check(fold.state, None)
        except ReplayError:
            raise _NotJson from None
        return ReplayResult(
            aggregate_id=fold.aggregate_id,
            aggregate_type=fold.reducer.aggregate_type,
            state=fold.state,
            version=fold.version,
            timestamp=fold.timestamp,
            position=fold.position,
            events_applied=fold.applied,
            snapshot_version=fold.snapshot_version,
            target=target,
            held_back=held_back,
        )

    # -- one aggregate ----------------------------------------------------------------------

    def replay_to(
        self,
        aggregate_id: str,
        *,
        at: datetime | None = None,
        version: int | None = None,
        position: int | None = None,
    ) -> ReplayResult:
        """The aggregate's state at a version, a game time (`at`, see the module's notes) or
        a global position (its events at or below it); with none of them, its latest state.

        A version beyond the aggregate's latest is an error (InvalidQueryError); a time or a
        position before its first event gives version 0 and the reducer's initial state.
        """
        target = _target(at=at, version=version, position=position)
        reducer = self.reducer_for(self.aggregate_type(aggregate_id))
        if position is not None:
            # Held below the log's horizon, for snapshots and events alike: the answer never
            # changes once given, and is the same with or without snapshots.
            position = self.cut(position)
        try:
            return self._replay(reducer, aggregate_id, target, at, version, position, check=False)
        except _NotJson:
            # The state reached is not JSON: fold again, checking every step, to name the
            # event after which it stopped being JSON (slow, and only on this error).
            return self._replay(reducer, aggregate_id, target, at, version, position, check=True)

    def _replay(
        self,
        reducer: Reducer,
        aggregate_id: str,
        target: str,
        at: datetime | None,
        version: int | None,
        position: int | None,
        *,
        check: bool,
    ) -> ReplayResult:
        fold = self._start(
            reducer,
            [aggregate_id],
            max_version=version,
            max_position=position,
            max_timestamp=at,
        )[aggregate_id]
        held_back = 0
        after = fold.version
        while version is None or after < version:
            page = self.store.read_aggregates(
                {aggregate_id: after}, max_version=version, max_position=position, limit=PAGE
            )
            for index, event in enumerate(page):
                if at is not None and event.timestamp > at:
                    held_back = self._held_back(aggregate_id, page, index, at)
                    break
                self._apply(fold, event, check=check)
            else:
                if len(page) == PAGE:
                    after = page[-1].version
                    self._save([fold])  # as it goes: memory stays bounded by a page
                    continue
            break
        if version is not None and fold.version < version:
            raise InvalidQueryError(
                f"aggregate {aggregate_id!r} has {fold.version} versions, not {version}; ask "
                f"for a version from 0 to {fold.version}"
            )
        result = self._finish(fold, target, held_back)
        self._save([fold])
        return result

    def replay_document(
        self,
        aggregate_id: str,
        *,
        at: datetime | None = None,
        version: int | None = None,
        position: int | None = None,
        history: bool = False,
        history_from: int = 1,
        history_limit: int = 100,
    ) -> dict[str, Any]:
        """`replay_to(...).to_dict()`, with a page of its history when asked: at most
        `history_limit` steps from `history_from` up to the version reached, and
        `history_next`, the version the next page starts at (None on the last page). What
        the CLI prints and the replay worker replies."""
        found = self.replay_to(aggregate_id, at=at, version=version, position=position)
        document = found.to_dict()
        if history:
            steps = list(
                islice(
                    self.history(aggregate_id, from_version=history_from, to_version=found.version),
                    history_limit,
                )
            )
            last = steps[-1].event.version if steps else found.version
            document["history"] = [step.to_dict() for step in steps]
            document["history_next"] = last + 1 if steps and last < found.version else None
        return document

    def _held_back(self, aggregate_id: str, page: list[Event], stop: int, at: datetime) -> int:
        """Of the HELD_WINDOW events after the first one stamped after `at` (at `stop` in
        `page`), how many are stamped at or before it (the same whatever page the read began
        at: with or without a snapshot)."""
        following = page[stop + 1 : stop + 1 + HELD_WINDOW]
        if len(following) < HELD_WINDOW and len(page) == PAGE:
            following += self.store.read_aggregates(
                {aggregate_id: page[-1].version}, limit=HELD_WINDOW - len(following)
            )
        return sum(1 for event in following if event.timestamp <= at)

    def history(
        self, aggregate_id: str, *, from_version: int = 1, to_version: int | None = None
    ) -> Iterator[Step]:
        """Each step of the aggregate's history from `from_version` on: the event (upcast),
        the state after it (a copy of its own) and what the event changed."""
        if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
            raise InvalidQueryError(f"from_version must be an integer >= 1, not {from_version!r}")
        reducer = self.reducer_for(self.aggregate_type(aggregate_id))
        if from_version > 1:
            start = self.replay_to(aggregate_id, version=from_version - 1)
            state, after = start.state, start.version
        else:
            state, after = reducer.initial(), 0
        before = json.loads(reducer.check(state, None))
        while to_version is None or after < to_version:
            page = self.store.read_aggregates(
                {aggregate_id: after}, max_version=to_version, limit=PAGE
            )
            for event in page:
                state = reducer.fold(state, event)
                text = reducer.check(state, event)
                now = json.loads(text)
                # The step's state is a copy of its own: what the caller does with it
                # changes neither the fold nor the next diff.
                yield Step(event, json.loads(text), diff(before, now))
                before = now
            if len(page) < PAGE:
                return
            after = page[-1].version

    # -- the world --------------------------------------------------------------------------

    def cut(self, position: int) -> int:
        """The position a consistent cut at `position` is taken at: `position`, or the last
        one the log's horizon makes final when `position` lies beyond it (see `read_all`)."""
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise InvalidQueryError(f"position must be an integer >= 0, not {position!r}")
        return min(position, self.store.log_horizon().horizon - 1)

    def world_at(
        self,
        position: int,
        *,
        aggregate_type: str | None = None,
        after: AggregateRef | None = None,
        id_prefix: str | None = None,
        limit: int = 100,
    ) -> WorldPage:
        """A page of the world as of one global position: each aggregate (of one type, or
        of every type with a reducer; with `id_prefix`, only ids starting with it, e.g. one
        world's) that existed there, with its state after its events at or below the cut.
        Aggregates come by (type, id) in code-point order. Every state of every page is of
        the same cut: pass `page.position` and `page.next_after` for the next page."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidQueryError(f"limit must be an integer from 1 to 1000, not {limit!r}")
        cut = self.cut(position)
        types = [aggregate_type] if aggregate_type is not None else sorted(self.reducers)
        for name in types:
            self.reducer_for(name)
        refs: list[AggregateRef] = []
        for name in types:
            if after is not None and name < after.aggregate_type:
                continue
            page_after = after if after is not None and after.aggregate_type == name else None
            refs += self.store.list_aggregates(
                name,
                after=page_after,
                id_prefix=id_prefix,
                max_position=cut,
                limit=limit - len(refs),
            )
            if len(refs) >= limit:
                break
        results = self._world(refs, cut)
        return WorldPage(cut, results, refs[-1] if len(refs) >= limit else None)

    def iter_world(
        self,
        position: int,
        *,
        aggregate_type: str | None = None,
        id_prefix: str | None = None,
        page: int = 500,
    ) -> Iterator[ReplayResult]:
        """Every aggregate's state as of one cut, page after page (see `world_at`)."""
        cut = self.cut(position)
        after: AggregateRef | None = None
        while True:
            found = self.world_at(
                cut, aggregate_type=aggregate_type, after=after, id_prefix=id_prefix, limit=page
            )
            yield from found.aggregates
            if found.next_after is None:
                return
            after = found.next_after

    def _world(self, refs: Sequence[AggregateRef], cut: int) -> list[ReplayResult]:
        folds: dict[str, _Fold] = {}
        by_type: dict[str, list[str]] = {}
        for ref in refs:
            by_type.setdefault(ref.aggregate_type, []).append(ref.aggregate_id)
        for name, ids in by_type.items():
            folds.update(self._start(self.reducer_for(name), ids, max_position=cut))
        # Events come ordered by aggregate id (code point order on both backends); a full
        # page ends inside the last aggregate it holds, so the next read goes on from there
        # and from the aggregates after it.
        # Each read takes at most `each` events of every aggregate still to read (versions are
        # contiguous: the ones after its last, up to `each` more), so that every event is read
        # once; an aggregate that got fewer is done.
        remaining = {i: f.version for i, f in folds.items()}
        while remaining:
            each = max(1, MANY_PAGE // len(remaining))
            page = self.store.read_aggregates(
                remaining,
                max_position=cut,
                per_aggregate=each,
                limit=min(MAX_READ_LIMIT, each * len(remaining)),  # never the one to cut
            )
            got: dict[str, int] = {}
            for event in page:
                try:
                    self._apply(folds[event.aggregate_id], event, check=False)
                except _NotJson:
                    self.replay_to(event.aggregate_id, position=cut)  # raises, naming the event
                    raise
                got[event.aggregate_id] = got.get(event.aggregate_id, 0) + 1
            remaining = {i: folds[i].version for i, n in got.items() if n >= each}
            self._save(folds.values())
        results = []
        for ref in refs:
            try:
                results.append(self._finish(folds[ref.aggregate_id], "position"))
            except _NotJson:
                self.replay_to(ref.aggregate_id, position=cut)  # raises, naming the event
                raise
        return results


class _NotJson(Exception):
    """The state a fold reached is not JSON (the replay is run again to name the event)."""


def _target(*, at: datetime | None, version: int | None, position: int | None) -> str:
    named = (("at", at), ("version", version), ("position", position))
    given = [name for name, value in named if value is not None]
    if len(given) > 1:
        raise InvalidQueryError(f"give one of at, version and position, not {' and '.join(given)}")
    if at is not None and (not isinstance(at, datetime) or at.utcoffset() is None):
        raise InvalidQueryError(f"at must be a timezone-aware datetime, not {at!r}")
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 0
    ):
        raise InvalidQueryError(f"version must be an integer >= 0, not {version!r}")
    if position is not None and (
        isinstance(position, bool) or not isinstance(position, int) or position < 0
    ):
        raise InvalidQueryError(f"position must be an integer >= 0, not {position!r}")
    return given[0] if given else "latest"
