"""The projection runner: prepares each projection (registers it, rebuilds it when its
version was raised in code, catches a new one up from the global log), then feeds it from a
source (the store's tail, or Kafka) batch by batch, backing off on retriable failures."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from eventstore.consumers._apply import Applier, BatchResult, ProjectionStore
from eventstore.consumers._dlq import DeadLetter, DeadLetterSink
from eventstore.consumers._projection import Handler, Projection, check_projections
from eventstore.consumers._rebuild import Progress, catch_up, rebuild
from eventstore.consumers._retry import retrying
from eventstore.errors import EventStoreError, FencedError, ProjectionError
from eventstore.events import Event

log = logging.getLogger(__name__)

STALLED_REBUILD = 120.0
"""Seconds without progress after which a rebuild another process started counts as dead."""
HANDOFF_MARGIN = timedelta(minutes=5)
"""How far before the first catch-up a Kafka source starts partitions it has no offsets for
(clock differences between the database, the relay and the broker; see `mark_handoff`)."""


class RunnerObserver(Protocol):
    """What a runner reports (metrics implement it; every method is optional to act on)."""

    def batch(self, projection: str, result: BatchResult, events: int) -> None: ...

    def retrying(self, projection: str, error: EventStoreError) -> None: ...

    def lag(
        self, projection: str, partition: str, events: float, seconds: float | None
    ) -> None: ...

    def rebuild_progress(self, projection: str, fraction: float) -> None: ...


class _Silent:
    def batch(self, projection: str, result: BatchResult, events: int) -> None:
        return None

    def retrying(self, projection: str, error: EventStoreError) -> None:
        return None

    def lag(self, projection: str, partition: str, events: float, seconds: float | None) -> None:
        return None

    def rebuild_progress(self, projection: str, fraction: float) -> None:
        return None


class Source(Protocol):
    """Where live events come from."""

    name: str

    def dead_letters(self) -> DeadLetterSink | None:
        """Where this source sends dead letters (None: the store's records only)."""
        ...

    def run(self, runner: ProjectionRunner, stop: threading.Event) -> None:
        """Feed the runner's projections until `stop` is set; return after the batch in
        hand is committed."""
        ...


ProgressFactory = Callable[[str, str], Any]
"""`factory(projection, what)` -> a context manager yielding a `Progress` callback."""


@contextmanager
def _no_progress(projection: str, what: str) -> Iterator[Progress | None]:
    yield None


@dataclass
class ProjectionRunner:
    """Runs projections on one store from one source (default: the store's tail).

    `run(stop)` blocks until `stop` is set (SIGTERM in `eventstore project`): the batch in
    hand is finished and committed first. Errors that retrying can fix (the database or the
    broker down) are retried with a growing pause, never committed half and never
    dead-lettered; any other error stops the runner (raised from `run`).
    """

    store: ProjectionStore
    projections: Sequence[Projection]
    source: Source | None = None
    batch_size: int = 500
    observer: RunnerObserver = field(default_factory=_Silent)
    progress: ProgressFactory = _no_progress
    handoff_margin: timedelta = HANDOFF_MARGIN
    appliers: dict[str, Applier] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.projections = check_projections(self.projections)
        if self.source is None:
            self.source = StoreTailSource()
        if not 1 <= self.batch_size <= 10_000:
            raise ProjectionError("batch_size must be between 1 and 10,000")
        sink = self.source.dead_letters()
        for projection in self.projections:
            self.appliers[projection.name] = Applier(self.store, projection, dead_letters=sink)

    # -- preparing --------------------------------------------------------------------------

    def prepare(self, stop: threading.Event | None = None) -> None:
        """Register each projection, run its own migrations, rebuild it when its version was
        raised in code, and catch a new one up from the global log."""
        for projection in self.projections:
            self._prepare(projection, stop)

    def _prepare(self, projection: Projection, stop: threading.Event | None) -> None:
        store, name = self.store, projection.name
        record = store.register_projection(name, projection.version)
        self._migrate(projection)
        self._warn_unknown_types(projection)
        applier = self.appliers[name]
        if record.active_version > projection.version:
            raise ProjectionError(
                f"projection {name!r}: its read model was built by version "
                f"{record.active_version}, newer than this code ({projection.version}); run "
                "the newer code (or lower its version and rebuild)"
            )
        if record.active_version < projection.version:
            log.info(
                "projection %s: version %d in code, %d in the store: rebuilding",
                name,
                projection.version,
                record.active_version,
            )
            try:
                with self._progress(name, "rebuilding") as progress:
                    rebuild(store, projection, applier, progress=progress, stop=stop)
            except FencedError:
                # Another process of the new code started its own rebuild after ours: let
                # it finish rather than fence it in turn.
                log.info("projection %s: another process is rebuilding it; waiting", name)
                self._wait_for_version(projection, stop)
            except ProjectionError:
                if stop is not None and stop.is_set():
                    return  # stopped mid-rebuild: the next start rebuilds again
                raise
            record = store.projection_record(name) or record
        if record.handoff_at is None:
            started = datetime.now(UTC)
            with self._progress(name, "catching up") as progress:
                reached = catch_up(
                    applier,
                    generation=None,
                    after=record.active_position,
                    progress=progress,
                    stop=stop,
                )
            if stop is not None and stop.is_set():
                return
            self._mark_handoff(name, started, reached.unread_since)
            log.info("projection %s: caught up (%d events)", name, reached.events)

    def _wait_for_version(self, projection: Projection, stop: threading.Event | None) -> None:
        """Wait for another process's rebuild to switch; take over (rebuild ourselves) when
        it stopped making progress for `STALLED_REBUILD` seconds (its process died)."""
        waiting = stop or threading.Event()
        seen: tuple[int | None, int] | None = None
        since = time.monotonic()
        while not waiting.is_set():
            record = self.store.projection_record(projection.name)
            if record is None or record.active_version >= projection.version:
                return
            progress = (record.building_generation, record.building_position)
            if progress != seen:
                seen, since = progress, time.monotonic()
            if record.building_generation is None or time.monotonic() - since > STALLED_REBUILD:
                self._prepare(projection, stop)  # that rebuild failed or died: ours again
                return
            waiting.wait(1.0)

    @contextmanager
    def _progress(self, name: str, what: str) -> Iterator[Progress]:
        """The progress callback of a catch-up or rebuild: the caller's bar (if any) and the
        observer's rebuild-progress gauge."""
        with self.progress(name, what) as shown:

            def report(events: int, done: int, total: int) -> None:
                if shown is not None:
                    shown(events, done, total)
                self.observer.rebuild_progress(name, done / total if total else 1.0)

            yield report
        self.observer.rebuild_progress(name, 1.0)

    def _mark_handoff(self, name: str, started: datetime, unread_since: datetime | None) -> None:
        """Record where a Kafka source starts partitions the group has no offsets for.

        The catch-up read every event below the log's horizon; each event it left behind the
        horizon was recorded no earlier than `unread_since` (see `catch_up`), and reached
        Kafka after it committed, so after that. The hand-over time is therefore the earlier
        of the catch-up's start and `unread_since`, less `handoff_margin` for clocks (the
        database's, the relay's and the broker's). Kafka records at or after it include every
        event the catch-up could not read; those before it were read, and are skipped by
        their versions if they come again.
        """
        at = min(started, unread_since or started) - self.handoff_margin
        with self.store.projection_transaction(name) as tx:
            tx.mark_handoff(at)

    def _migrate(self, projection: Projection) -> None:
        if not projection.migrations:
            return
        with self.store.projection_transaction(projection.name, exclusive=True) as tx:
            statements = projection.migrations.get(tx.backend, [])
            if not statements:
                raise ProjectionError(
                    f"projection {projection.name!r} has migrations, none for {tx.backend}; "
                    f"give migrations={{'{tx.backend}': [...]}}"
                )
            for statement in statements:
                tx.connection.execute(statement)

    def _warn_unknown_types(self, projection: Projection) -> None:
        """A handler whose event type is stored nowhere is probably misspelt: say so."""
        for event_type in projection.event_types:
            if next(iter(self.store.get_events_by_type(event_type)), None) is None:
                log.warning(
                    "projection %s handles %s, but no event of that type is stored yet "
                    "(is it spelt right?)",
                    projection.name,
                    event_type,
                )

    # -- running ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Prepare, then apply live events until `stop` is set."""
        self.prepare(stop)
        if not stop.is_set():
            assert self.source is not None
            self.source.run(self, stop)

    def apply(
        self,
        projection: Projection,
        events: Sequence[Event],
        stop: threading.Event,
        *,
        position: int | None = None,
        undecodable: Sequence[DeadLetter] = (),
    ) -> BatchResult | None:
        """Apply one batch, retrying retriable failures with a growing pause until it commits
        (None when `stop` was set before it could)."""
        applier = self.appliers[projection.name]
        result = retrying(
            lambda: applier.apply(events, position=position, undecodable=undecodable),
            stop,
            what=f"projection {projection.name}",
            on_retry=lambda error: self.observer.retrying(projection.name, error),
        )
        if result is not None:
            self.observer.batch(projection.name, result, len(events))
        return result


class StoreTailSource:
    """The store's global log as the live source (the embedded default; also PostgreSQL
    without Kafka). Each projection resumes from the position its active generation recorded
    in its last batch; an idle runner sleeps until an append is notified (PostgreSQL
    LISTEN/NOTIFY, or in-process on SQLite) or `poll_interval` passes."""

    name = "store"

    def __init__(self, poll_interval: float = 0.5) -> None:
        self.poll_interval = poll_interval

    def dead_letters(self) -> DeadLetterSink | None:
        return None

    def run(self, runner: ProjectionRunner, stop: threading.Event) -> None:
        store = runner.store
        positions: dict[str, tuple[int, int]] = {}  # name -> (generation, position)
        last_lag = 0.0
        while not stop.is_set():
            busy = False
            for projection in runner.projections:
                generation, position = positions.get(projection.name, (0, -1))
                if position < 0:
                    record = store.projection_record(projection.name)
                    assert record is not None
                    generation, position = record.active_generation, record.active_position
                page = _read(store, position, runner.batch_size, stop)
                if not page:
                    positions[projection.name] = (generation, position)
                    continue
                reached = page[-1].position or position
                result = runner.apply(projection, page, stop, position=reached)
                if result is None:
                    return
                busy = True
                if result.generation != generation:  # a rebuild switched: resume from its own
                    positions.pop(projection.name, None)
                else:
                    positions[projection.name] = (generation, reached)
            if time.monotonic() - last_lag > 2.0:
                last_lag = time.monotonic()
                _report_tail_lag(runner, positions)
            if not busy:
                store.wait_for_appends(self.poll_interval)

    def catch_up(self, runner: ProjectionRunner) -> None:
        """Apply everything readable now, then return (tests and the demo)."""
        stop = threading.Event()
        runner.prepare(stop)
        for projection in runner.projections:
            record = runner.store.projection_record(projection.name)
            assert record is not None
            position = record.active_position
            while page := runner.store.read_all(position, runner.batch_size):
                position = page[-1].position or position
                runner.apply(projection, page, stop, position=position)


def _read(store: ProjectionStore, after: int, limit: int, stop: threading.Event) -> list[Event]:
    page = retrying(lambda: store.read_all(after, limit), stop, what="reading the global log")
    return page or []


_LAG_COUNT_CAP = 1000


def _report_tail_lag(runner: ProjectionRunner, positions: dict[str, tuple[int, int]]) -> None:
    """Events readable but not applied yet, per projection (counted up to 1,000: positions
    are not dense on PostgreSQL, so a difference of positions is no count)."""
    for name, (_, position) in positions.items():
        try:
            behind = runner.store.read_all(position, _LAG_COUNT_CAP)
        except EventStoreError:
            return
        age = None
        if behind and behind[0].recorded_at is not None:
            age = max(0.0, (datetime.now(UTC) - behind[0].recorded_at).total_seconds())
        runner.observer.lag(name, "log", len(behind), age)


class Projector:
    """The one-line form: `Projector(store).project("player-positions", handle_moved)`.

    `project(name, handler)` registers a projection whose handler receives every event (or
    only `event_types`) and returns it; `catch_up()` applies everything stored so far;
    `run(stop)` keeps following the store until `stop` is set; `documents(name)` reads.
    """

    def __init__(self, store: ProjectionStore, **runner_options: Any) -> None:
        self.store = store
        self.projections: list[Projection] = []
        self._options = runner_options

    def project(
        self,
        name: str,
        handler: Handler,
        *,
        event_types: Sequence[str] | None = None,
        **options: Any,
    ) -> Projection:
        projection = Projection(name, **options)
        for event_type in event_types or ["*"]:
            projection.add(event_type, handler)
        check_projections([*self.projections, projection])
        self.projections.append(projection)
        return projection

    def runner(self) -> ProjectionRunner:
        return ProjectionRunner(self.store, self.projections, **self._options)

    def catch_up(self) -> None:
        runner = self.runner()
        source = runner.source
        if not isinstance(source, StoreTailSource):
            raise ProjectionError("catch_up() reads the store; use run() with a Kafka source")
        source.catch_up(runner)

    def run(self, stop: threading.Event) -> None:
        self.runner().run(stop)

    def get(self, name: str, key: str) -> Any:
        """A document of a projection's active read model."""
        return self.store.get_document(name, key)
