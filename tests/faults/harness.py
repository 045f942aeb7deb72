"""What the fault tests drive and check: a paced writer, `eventstore project` processes, and
the final check that the read model is what applying each stored event once gives."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg

from eventstore import Event, EventStore
from eventstore.errors import EventStoreError
from eventstore.producer import KafkaPublisher
from tests.faults.counting import AGGREGATE_TYPE, NAME, ZONES, zone_key
from tests.kafka_helpers import free_port, scrape

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 6


@dataclass(frozen=True)
class Tally:
    """Which of the tally projections runners run: where its code is, and its name."""

    spec: str
    name: str


TALLY = Tally("tests.faults.counting:PROJECTIONS", NAME)
"""Zones' documents locked in the order events come (they may deadlock)."""
TALLY_BY_KEY = Tally("tests.faults.counting:BY_KEY", f"{NAME}-by-key")
"""Zones' documents locked in key order (they never deadlock)."""

# -- events in ----------------------------------------------------------------------------------


def players(count: int) -> list[str]:
    return [f"p-{number:04d}" for number in range(count)]


def player_event(player: str, version: int) -> Event:
    """Version `version` of `player`, in a zone that changes with the version."""
    number = int(player.rpartition("-")[2])
    return Event.new(
        aggregate_type=AGGREGATE_TYPE,
        aggregate_id=player,
        event_type="PlayerJoined" if version == 1 else "PlayerMoved",
        version=version,
        payload={"zone": f"z{(number + version) % ZONES}"},
    )


def create_event_topic(bootstrap: str, prefix: str) -> None:
    """The Player topic with PARTITIONS partitions, before the relay would create it."""
    from kafka import KafkaAdminClient

    publisher = KafkaPublisher(bootstrap, topic_prefix=prefix, partitions=PARTITIONS)
    try:
        assert publisher.ensure_topics([AGGREGATE_TYPE]) == [f"{prefix}.events.player"]
    finally:
        publisher.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_topics([f"{prefix}.events.player"])
    finally:
        admin.close()
    assert len(described[0]["partitions"]) == PARTITIONS


class Writer:
    """Appends rounds of events through the store from a thread (round v: version v of every
    player, in batches), pausing between batches, until told where to stop (`stop_after`)
    and at least `min_rounds` rounds are stored. Retries what the store calls retriable (the
    database restarting): an append is atomic and idempotent by event id, so retrying one
    that did commit stores nothing twice."""

    def __init__(
        self,
        store: EventStore,
        names: Sequence[str],
        *,
        first_round: int,
        min_rounds: int,
        batch: int = 100,
        pause: float = 0.05,
        max_rounds: int = 600,
    ) -> None:
        self.store = store
        self.names = list(names)
        self.round = first_round - 1
        self.appended = 0
        self.retried = 0
        self.min_rounds = min_rounds
        self.batch = batch
        self.pause = pause
        self.max_rounds = max_rounds
        self.errors: list[BaseException] = []
        self._last: int | None = None
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    @property
    def writing(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._abort.is_set():
                if self._last is not None and self.round >= self._last:
                    return
                version = self.round + 1
                assert version <= self.max_rounds, "the test never told the writer to stop"
                events = [player_event(name, version) for name in self.names]
                for start in range(0, len(events), self.batch):
                    self._append(events[start : start + self.batch])
                    self._abort.wait(self.pause)
                self.round = version
        except BaseException as error:
            self.errors.append(error)

    def _append(self, events: list[Event]) -> None:
        pause = 0.1
        while True:
            try:
                self.store.append_events(events)
            except EventStoreError as error:
                if not error.retriable or self._abort.is_set():
                    raise
                self.retried += 1
                self._abort.wait(pause)
                pause = min(pause * 2, 2.0)
                continue
            self.appended += len(events)
            return

    def stop_after(self, rounds: int) -> None:
        """Stop once `rounds` more rounds (and at least `min_rounds` in all) are stored."""
        self._last = max(self.min_rounds, self.round + rounds)

    def join(self, timeout: float = 300) -> None:
        """Wait until the writer stopped (after `stop_after`); fail on its error."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the writer did not stop"
        assert not self.errors, self.errors

    def abort(self) -> None:
        self._abort.set()
        self._thread.join(timeout=60)


# -- runner processes -------------------------------------------------------------------------


class RunnerProcess:
    """`eventstore project <a tally's spec> --source kafka` in a process of its own, with the
    CLI's defaults (10 s session timeout, batches of 500), static membership
    (`--instance-id`), Prometheus metrics on a free port, and its database sessions named after
    it (PGAPPNAME), so that the test can see when it is inside a batch's transaction."""

    def __init__(
        self,
        number: int,
        tally: Tally,
        *,
        url: str,
        schema: str,
        bootstrap: str,
        prefix: str,
        logs: Path,
    ) -> None:
        self.tally = tally
        self.name = f"{prefix}-runner-{number}"
        self.port = free_port()
        self.log_path = logs / f"runner-{number}.log"
        self.killed = False
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}
        env.update(
            EVENTSTORE_DATABASE_URL=url,
            EVENTSTORE_DATABASE_SCHEMA=schema,
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
            PGAPPNAME=self.name,
        )
        command = [
            sys.executable,
            "-m",
            "eventstore.cli",
            "project",
            tally.spec,
            "--source",
            "kafka",
            "--kafka-bootstrap-servers",
            bootstrap,
            "--topic-prefix",
            prefix,
            "--instance-id",
            self.name,
            "--metrics-port",
            str(self.port),
        ]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log(self, lines: int = 40) -> str:
        tail = "\n".join(self.output().splitlines()[-lines:])
        return f"--- {self.name} (last {lines} lines) ---\n{tail}"

    def metric(self, name: str) -> float:
        """A counter of its projection (0 until the metrics server answers)."""
        found = re.search(
            rf'^{name}(?:_total)?\{{projection="{self.tally.name}"\}} (\S+)$',
            scrape(self.port),
            re.M,
        )
        return float(found.group(1)) if found else 0.0

    @property
    def batches(self) -> float:
        """Live batches committed (the catch-up from the global log is not counted)."""
        return self.metric("eventstore_projection_batches")

    def alive(self) -> bool:
        """True, or fails the test with how it ended."""
        code = self.process.poll()
        if code is None:
            return True
        lines = self.output().splitlines()
        ours = [line.strip() for line in lines if "/src/eventstore/" in line]
        raise AssertionError(
            f"{self.name} exited {code}\n{self.log(15)}\n--- its last frames in eventstore ---\n"
            + "\n".join(ours[-8:])
        )

    def in_transaction(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether one of its sessions is inside an explicit transaction (a batch) now."""
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND xact_start IS NOT NULL AND (state = 'idle in transaction' "
            "OR (state = 'active' AND query_start > xact_start))",
            (self.name,),
        ).fetchone()
        return bool(row and row[0])

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.killed = True

    def ensure_stopped(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Launch(Protocol):
    """Starts runner process `number` (of `tally`) on the test's schema and topics."""

    def __call__(self, number: int, tally: Tally = TALLY) -> RunnerProcess: ...


def stop_all(runners: Sequence[RunnerProcess]) -> None:
    """SIGTERM every runner at once: each must finish its batch, leave the group, say so and
    exit 0."""
    for runner in runners:
        if runner.process.poll() is None:
            runner.process.send_signal(signal.SIGTERM)
    for runner in runners:
        try:
            code = runner.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            runner.process.kill()
            runner.process.wait()
            raise AssertionError(f"{runner.name} did not stop on SIGTERM\n{runner.log()}") from None
        assert code == 0, f"{runner.name} exited {code}\n{runner.log()}"
        stopped = f"projections stopped: {runner.tally.name}"
        assert stopped in runner.output(), runner.log()


def totals(runners: Sequence[RunnerProcess]) -> dict[str, float]:
    """Live events applied, skipped as duplicates, filled from the store, and batches retried,
    summed over the runners."""
    names = {
        "applied": "eventstore_projection_events_applied",
        "duplicates": "eventstore_projection_events_duplicate",
        "filled": "eventstore_projection_events_filled",
        "retried": "eventstore_projection_retries",
    }
    return {key: sum(r.metric(name) for r in runners) for key, name in names.items()}


# -- waiting ------------------------------------------------------------------------------------


def wait_until(
    condition: Callable[[], object],
    what: str,
    timeout: float,
    interval: float = 0.25,
    *,
    outage: bool = False,
) -> None:
    """Poll `condition` every `interval` seconds; fail after `timeout`, naming `what`.
    `outage`: a retriable store error (a pooled connection that a database restart cut)
    counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except EventStoreError as error:
            if not (outage and error.retriable):
                raise
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(interval)


def drained(store: EventStore, timeout: float, *, outage: bool = False) -> None:
    """Wait until the relay has published everything appended."""
    wait_until(
        lambda: store.outbox_status().depth == 0, "the outbox to drain", timeout, outage=outage
    )


def caught_up(store: EventStore, name: str = NAME) -> bool:
    """Whether a runner has caught projection `name` up from the global log (its hand-off to
    Kafka is recorded)."""
    record = store.projection_record(name)
    return record is not None and record.handoff_at is not None


# -- the read model out -------------------------------------------------------------------------


def stored_events(store: EventStore, names: Sequence[str]) -> list[Event]:
    """The stored events of these players, read per aggregate: unlike the global log, those
    reads never wait for the horizon (which other sessions' open transactions hold back)."""
    return [event for name in names for event in store.get_events_by_aggregate(name)]


def read_model(store: EventStore, name: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    after = ""
    while page := store.list_documents(name, after, 1000):
        found.update(page)
        after = page[-1][0]
    return found


def reference(events: Sequence[Event]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """From the store's events: each player's last version, and what each zone's document
    must hold."""
    last: dict[str, int] = {}
    zones: dict[str, dict[str, int]] = {}
    for event in events:
        last[event.aggregate_id] = max(last.get(event.aggregate_id, 0), event.version)
        zone = zones.setdefault(zone_key(event.payload["zone"]), {"sum": 0, "events": 0})
        zone["sum"] += event.version
        zone["events"] += 1
    return last, zones


def behind(store: EventStore, name: str, names: Sequence[str]) -> int:
    """How many of these players the read model has not applied up to their last version."""
    last, _ = reference(stored_events(store, names))
    found = read_model(store, name)
    return sum(
        1
        for player, version in last.items()
        if (found.get(player) or {"versions": [0]})["versions"][-1] != version
    )


def settled(store: EventStore, name: str, names: Sequence[str]) -> bool:
    """Every stored player applied up to its last version, or an event parked or skipped
    (the final check then says which)."""
    return bool(store.projection_failures(name, limit=1)) or behind(store, name, names) == 0


def settle(
    store: EventStore,
    runners: Sequence[RunnerProcess],
    names: Sequence[str],
    timeout: float,
    *,
    outage: bool = False,
) -> None:
    """Wait until the runners (of one projection), all still running, have applied every
    stored event (or one was parked or skipped); on a timeout, fail with what the read model
    lacks."""
    name = runners[0].tally.name
    try:
        wait_until(
            lambda: all(r.alive() for r in runners) and settled(store, name, names),
            "every player's last version applied",
            timeout,
            interval=0.5,
            outage=outage,
        )
    except AssertionError as timed_out:
        problems = model_problems(store, stored_events(store, names), name)
        logs = "\n".join(r.log(10) for r in runners)
        raise AssertionError(
            f"{timed_out}; {len(problems)} problems:\n" + "\n".join(problems[:15]) + "\n" + logs
        ) from None


def model_problems(store: EventStore, events: Sequence[Event], name: str) -> list[str]:
    """Everything in which the read model of projection `name` differs from applying each of
    `events` once."""
    last, zones = reference(events)
    found = read_model(store, name)
    problems: list[str] = []
    failures = store.projection_failures(name)
    if failures:
        kinds = Counter(f"{f.policy} {f.error_type}" for f in failures)
        first = failures[0]
        problems.append(
            f"{len(failures)} events parked or skipped ({dict(kinds)}), first: "
            f"{first.aggregate_id} v{first.version}: {first.error_type}: {first.message[:200]} "
            "(the test stops waiting at the first one: other players may lack versions too)"
        )
    for player, version in sorted(last.items()):
        document = found.pop(player, None)
        applied = document["versions"] if document else []
        if applied != list(range(1, version + 1)):
            twice = sorted(v for v, n in Counter(applied).items() if n > 1)
            never = sorted(set(range(1, version + 1)) - set(applied))
            problems.append(
                f"{player}: {len(applied)} versions applied for {version} stored; "
                f"twice: {twice[:10]}, never: {never[:10]}"
                + ("" if twice or never else f", out of order: {applied[:20]}")
            )
        checkpoint = store.projection_checkpoint(name, player)
        if checkpoint != version:
            problems.append(f"{player}: checkpoint {checkpoint}, stored version {version}")
    for key, expected in sorted(zones.items()):
        document = found.pop(key, None)
        if document != expected:
            problems.append(f"{key}: {document} in the read model, {expected} from the store")
    problems.extend(f"{key}: a document no event explains" for key in sorted(found))
    return problems


def assert_exactly_once(store: EventStore, names: Sequence[str], name: str = NAME) -> list[Event]:
    """The final check: the read model of projection `name` is what applying each stored
    event of these players once gives (every player's versions exactly [1..N], checkpoints
    at N, zone totals as the store's events add up, no document unexplained, nothing parked
    or skipped). Returns the stored events."""
    events = stored_events(store, names)
    problems = model_problems(store, events, name)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:25])
    return events
