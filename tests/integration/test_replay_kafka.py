"""The replay worker and client on the real broker and PostgreSQL (DESIGN section 7): a reply
is what `Replayer.replay_to` gives; garbage on the control topic is dead-lettered or answered
with an error, and never stops the worker; a rebuild delivered twice runs once; SIGTERM lets
the request in hand reply and commit; the metrics count what happened; and the CLI asks a
worker what it would compute itself.

Each test has its own schema and topic prefix (hence its own topics and group). Workers run
in a thread of the test (`WorkerThread`) or as `eventstore replay-worker` processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from eventstore import Event, EventStore, open_store
from eventstore._topics import control_dlq_topic, control_topic, results_topic
from eventstore.demo.projections import ALL as DEMO_PROJECTIONS
from eventstore.demo.projections import player_positions
from eventstore.demo.world import World
from eventstore.errors import RequestError, RequestTimeoutError
from eventstore.replay import ControlHandler, Replayer, ReplayWorker
from eventstore.replay._client import ReplayClient
from eventstore.replay._kafka import worker_group
from tests.conftest import unique_name
from tests.faults.replay_defs import (
    REDUCERS,
    REDUCERS_SPEC,
    ROOT,
    WorkerProcess,
    Workers,
    comparable,
    gate_event,
    in_hand,
    ping_workers,
    read_all,
    release,
    replies,
    unconsumed,
)
from tests.helpers import wait_for
from tests.kafka_helpers import free_port, scrape

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

TIMEOUT = 30.0
"""Seconds a client waits for a reply (a worker joining its group takes a few)."""


def plain(value: Any) -> Any:
    """`value` as it comes back from JSON."""
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class Demo:
    """A demo world appended to the store: its aggregates and their stored events."""

    world_id: str
    players: list[str]
    items: list[str]
    events: dict[str, list[Event]]

    @property
    def aggregates(self) -> list[str]:
        return [self.world_id, *self.players, *self.items]

    def busiest_player(self) -> str:
        return max(self.players, key=lambda p: (len(self.events[p]), p))


class WorkerThread:
    """A `ReplayWorker` (the test reducers, the demo's projections) in a thread of this
    test, on a store of its own, between construction and `stop()`."""

    def __init__(self, store: EventStore, bootstrap: str, prefix: str, name: str) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.prefix = prefix
        handler = ControlHandler(
            store, Replayer(store, REDUCERS), projections=DEMO_PROJECTIONS, worker_id=name
        )
        self.worker = ReplayWorker(
            handler, bootstrap_servers=bootstrap, topic_prefix=prefix, session_timeout=6
        )
        self._stop = threading.Event()
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name=f"worker-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(self._stop)
        except BaseException as error:
            self.errors.append(error)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.errors

    def metric(self, name: str, **labels: str) -> float:
        return self.worker.metrics.registry.get_sample_value(name, labels) or 0.0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), f"worker {self.name} did not stop"
        assert not self.errors, self.errors


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    return unique_name("replay")


@pytest.fixture
def pg_store(postgres_url: str, pg_schema: str) -> Iterator[EventStore]:
    store = open_store(postgres_url, schema=pg_schema)
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def demo(pg_store: EventStore) -> Demo:
    world = World("w", players=8, items=4, seed=3)
    pg_store.append_events(world.genesis())
    for _ in range(25):
        pg_store.append_events(world.tick())
    players = [p.id for p in world.players]
    items = [i.id for i in world.items]
    events = {a: list(pg_store.get_events_by_aggregate(a)) for a in ["w", *players, *items]}
    return Demo("w", players, items, events)


@pytest.fixture
def replayer(pg_store: EventStore) -> Replayer:
    return Replayer(pg_store, REDUCERS)


@pytest.fixture
def worker(
    postgres_url: str, pg_schema: str, pg_store: EventStore, kafka_bootstrap: str, prefix: str
) -> Iterator[WorkerThread]:
    store = open_store(postgres_url, schema=pg_schema)
    running = WorkerThread(store, kafka_bootstrap, prefix, "in-test")
    try:
        yield running
        running.stop()
    finally:
        store.close()


@pytest.fixture
def client(kafka_bootstrap: str, prefix: str) -> Iterator[ReplayClient]:
    with ReplayClient(kafka_bootstrap, topic_prefix=prefix, timeout=TIMEOUT) as replay_client:
        yield replay_client


@pytest.fixture
def workers(
    postgres_url: str, pg_schema: str, kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> Iterator[Workers]:
    """`eventstore replay-worker` processes on this test's schema and topics."""
    started = Workers(
        url=postgres_url, schema=pg_schema, bootstrap=kafka_bootstrap, prefix=prefix, logs=tmp_path
    )
    yield started
    started.stop_all()


def counts(worker: WorkerThread, name: str, value: float, **labels: str) -> Callable[[], bool]:
    """Whether the worker's metric has reached `value` (for `wait_for`)."""
    return lambda: worker.metric(name, **labels) == value


def answers(client: ReplayClient, worker: WorkerThread | WorkerProcess) -> None:
    """The worker is running and answers a ping."""
    if isinstance(worker, WorkerThread):
        assert worker.alive, worker.errors
    else:
        assert worker.alive()
    assert ping_workers(client, worker.bootstrap, worker.prefix)["pong"] is True


# -- replies are what replay_to gives ---------------------------------------------------------


def drifting(
    aggregate_id: str, version: int, at: datetime, event_type: str = "PlayerMoved"
) -> Event:
    payload: dict[str, Any] = (
        {"name": "drifter", "zone": "spawn"}
        if event_type == "PlayerJoined"
        else {"from_zone": "spawn", "to_zone": f"z{version}", "x": 1.5, "y": -2.0}
    )
    return Event.new(
        aggregate_type="Player",
        aggregate_id=aggregate_id,
        event_type=event_type,
        version=version,
        payload=payload,
        timestamp=at,
    )


def test_a_replay_through_kafka_is_what_replay_to_gives(
    demo: Demo,
    pg_store: EventStore,
    replayer: Replayer,
    worker: WorkerThread,
    client: ReplayClient,
) -> None:
    answers(client, worker)
    player = demo.busiest_player()
    events = demo.events[player]
    middle = events[len(events) // 2]
    assert middle.position is not None and len(events) >= 5
    # A player whose game clock went backwards: `at` stops before the first event stamped
    # later, and counts the earlier-stamped events it holds back.
    start = events[0].timestamp
    pg_store.append_events(
        [
            drifting("w-drifter", 1, start + timedelta(seconds=10), "PlayerJoined"),
            drifting("w-drifter", 2, start + timedelta(seconds=30)),
            drifting("w-drifter", 3, start + timedelta(seconds=20)),
            drifting("w-drifter", 4, start + timedelta(seconds=40)),
        ]
    )
    targets: list[tuple[str, dict[str, Any]]] = [(a, {}) for a in demo.aggregates]
    targets += [("w-drifter", {"at": start + timedelta(seconds=s)}) for s in (5, 25, 35, 45)]
    targets += [
        (player, {"version": 0}),
        (player, {"version": middle.version}),
        (player, {"at": middle.timestamp}),
        (player, {"at": middle.timestamp - timedelta(milliseconds=500)}),
        (player, {"at": events[0].timestamp - timedelta(days=1)}),
        (player, {"position": middle.position}),
        (player, {"position": middle.position - 1}),
        (demo.items[0], {"position": middle.position}),
        (demo.world_id, {"version": 1}),
    ]
    for aggregate_id, target in targets:
        got = client.replay(aggregate_id, **target)
        want = plain(replayer.replay_to(aggregate_id, **target).to_dict())
        assert comparable(got) == comparable(want), (aggregate_id, target)
    held = client.replay("w-drifter", at=start + timedelta(seconds=25))
    assert (held["version"], held["held_back"], held["target"]) == (1, 1, "at")

    steps = plain([s.to_dict() for s in replayer.history(player, to_version=middle.version)])
    got = client.replay(player, version=middle.version, history=True)
    assert comparable({k: v for k, v in got.items() if not k.startswith("history")}) == (
        comparable(plain(replayer.replay_to(player, version=middle.version).to_dict()))
    )
    assert got["history"] == steps and got["history_next"] is None
    # A page of the history: two steps from version 2, and where the next page starts.
    page = client.request(
        {
            "kind": "replay",
            "aggregate_id": player,
            "history": True,
            "history_from": 2,
            "history_limit": 2,
        }
    )
    assert page["history"] == plain([s.to_dict() for s in replayer.history(player)])[1:3]
    assert page["history_next"] == 4


# -- garbage on the control topic -------------------------------------------------------------

GARBAGE: list[tuple[bytes | None, str]] = [
    (b"\x80\x81\xfe not UTF-8", "invalid_request: the value is not JSON"),
    (b"{not json", "invalid_request: the value is not JSON"),
    (b"[1, 2, 3]", "a request is a JSON object, not a list"),
    (b'"a string"', "a request is a JSON object, not a str"),
    (b'{"kind": "replay", "aggregate_id": "w-player-0"}', "request_id: Field required"),
    (b'{"kind": "ping", "request_id": 42}', "request_id: Input should be a valid string"),
    (b'{"kind": "explode", "request_id": ""}', "unknown_kind"),
    (None, "invalid_request: the record has no value"),
]
"""Records without a readable request id, and what the dead letter's `error` header says."""


def test_records_without_a_request_id_are_dead_lettered_and_the_worker_goes_on(
    demo: Demo, worker: WorkerThread, client: ReplayClient, kafka_bootstrap: str, prefix: str
) -> None:
    answers(client, worker)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        for number, (value, _) in enumerate(GARBAGE, start=1):
            producer.send(control_topic(prefix), key=b"garbage", value=value).get(timeout=10)
            wait_for(
                counts(worker, "eventstore_replay_dead_lettered_total", number),
                f"garbage record {number} dead-lettered",
            )
            answers(client, worker)
    finally:
        producer.close()
    letters = read_all(kafka_bootstrap, control_dlq_topic(prefix))
    assert [value for _, _, value in letters] == [value or b"" for value, _ in GARBAGE]
    offsets = []
    for (key, headers, _), (_, error) in zip(letters, GARBAGE, strict=True):
        assert key == "garbage"
        assert error in headers["error"], headers
        assert headers["source_topic"] == control_topic(prefix)
        assert headers["worker"] == worker.name
        assert datetime.fromisoformat(headers["failed_at"]).tzinfo is not None
        offsets.append((int(headers["source_partition"]), int(headers["source_offset"])))
    assert len({p for p, _ in offsets}) == 1 and offsets == sorted(offsets)
    # No reply went out for any of them: only the pings were answered.
    answered = replies(kafka_bootstrap, results_topic(prefix))
    assert {r["kind"] for rs in answered.values() for r in rs} == {"ping"}
    assert len(answered) == len(GARBAGE) + 1
    assert worker.metric("eventstore_replay_errors_total", code="invalid_request") == 0


def test_invalid_requests_with_a_request_id_get_error_replies_and_the_worker_goes_on(
    demo: Demo, worker: WorkerThread, client: ReplayClient, kafka_bootstrap: str, prefix: str
) -> None:
    player = demo.players[0]
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"kind": "explode"}, "unknown_kind", "unknown kind 'explode'"),
        ({"aggregate_id": player}, "unknown_kind", "unknown kind None"),
        ({"kind": "replay"}, "invalid_request", "aggregate_id: Field required"),
        (
            {"kind": "replay", "aggregate_id": player, "version": 2, "position": 5},
            "invalid_request",
            "give one of at, version and position, not version and position",
        ),
        (
            {"kind": "replay", "aggregate_id": player, "at": "2026-11-01T18:00:00"},
            "invalid_request",
            "at: ",
        ),
        ({"kind": "replay", "aggregate_id": player, "version": -1}, "invalid_request", "version"),
        ({"kind": "ping", "surprise": 1}, "invalid_request", "surprise"),
        ({"kind": "replay", "aggregate_id": "nobody-here"}, "not_found", "'nobody-here'"),
        (
            {"kind": "replay", "aggregate_id": player, "version": 10_000},
            "invalid_request",
            "not 10000",
        ),
        (
            {"kind": "replay", "aggregate_id": player, "deadline": past},
            "expired",
            f"the deadline {datetime.fromisoformat(past).isoformat()} passed",
        ),
        ({"kind": "rebuild", "projection": "no-such"}, "unknown_projection", "'no-such'"),
    ]
    answers(client, worker)
    for request, code, fragment in cases:
        request_id = f"bad-{uuid.uuid4()}"
        reply = client.send({**request, "request_id": request_id})
        assert reply["request_id"] == request_id
        assert reply["ok"] is False and reply["worker"] == worker.name, reply
        assert reply["kind"] == request.get("kind")
        assert reply["error"]["code"] == code, reply
        assert fragment in reply["error"]["message"], reply
        assert reply["error"]["retriable"] is False
        answers(client, worker)
    with pytest.raises(RequestError) as refused:
        client.replay("nobody-here")
    assert refused.value.code == "not_found"
    # Counted once the reply is acknowledged, which may be after the client has it.
    wait_for(
        counts(worker, "eventstore_replay_errors_total", 2, code="not_found"),
        "the last error counted",
    )
    for code, count in Counter(code for _, code, _ in cases).items():
        assert worker.metric("eventstore_replay_errors_total", code=code) == count + (
            code == "not_found"
        ), code
    assert worker.metric("eventstore_replay_dead_lettered_total") == 0
    assert read_all(kafka_bootstrap, control_dlq_topic(prefix)) == []
    answered = replies(kafka_bootstrap, results_topic(prefix))
    assert all(len(copies) == 1 for copies in answered.values())


# -- a rebuild delivered twice runs once -----------------------------------------------------------


def test_a_rebuild_sent_twice_with_one_request_id_runs_once(
    demo: Demo,
    pg_store: EventStore,
    replayer: Replayer,
    worker: WorkerThread,
    client: ReplayClient,
    kafka_bootstrap: str,
    prefix: str,
) -> None:
    answers(client, worker)
    name = player_positions.name
    before = pg_store.register_projection(name, player_positions.version).active_generation
    request = {"kind": "rebuild", "projection": name, "request_id": f"rebuild-{uuid.uuid4()}"}
    first = client.send(request, timeout=60)
    second = client.send(request, timeout=60)
    assert first["ok"] and second["ok"], (first, second)
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert second["result"] == first["result"]
    record = pg_store.projection_record(name)
    assert record is not None and record.active_generation == before + 1
    assert first["result"] == {
        "projection": name,
        "generation": before + 1,
        "documents": len(demo.players),
        "parked": 0,
    }
    for player in demo.players:
        state = replayer.replay_to(player).state
        document = pg_store.get_document(name, player)
        assert (document["zone"], document["moves"]) == (state["zone"], state["moves"])
    assert len(replies(kafka_bootstrap, results_topic(prefix))[request["request_id"]]) == 2
    # A new request id is a new rebuild.
    third = client.rebuild(name, timeout=60)
    assert third["generation"] == before + 2


# -- SIGTERM with a request in hand ---------------------------------------------------------------


def test_sigterm_with_a_request_in_hand_replies_commits_and_exits_zero(
    demo: Demo,
    pg_store: EventStore,
    postgres_url: str,
    pg_schema: str,
    replayer: Replayer,
    client: ReplayClient,
    kafka_bootstrap: str,
    prefix: str,
    workers: Workers,
    tmp_path: Path,
) -> None:
    pg_store.append_events([gate_event("gate-1")])
    gate = tmp_path / "gate"
    gate.mkdir()
    port = free_port()
    first = workers.start("first", gate=gate, metrics_port=port)
    answers(client, first)
    request_id = f"held-{uuid.uuid4()}"
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(
            client.send, {"kind": "replay", "aggregate_id": "gate-1", "request_id": request_id}
        )
        wait_for(lambda: first.alive() and in_hand(gate, first.pid).exists(), "the request in hand")
        wait_for(
            lambda: "eventstore_replay_in_progress 1.0" in scrape(port), "the in-progress gauge"
        )
        first.process.send_signal(signal.SIGTERM)
        wait_for(lambda: first.signal_delivered(signal.SIGTERM), "SIGTERM delivered")
        release(gate).touch()
        try:
            answered = reply.result()
        except RequestTimeoutError:
            raise AssertionError(
                f"no reply after SIGTERM (the worker exited {first.process.poll()})\n{first.log()}"
            ) from None
    assert answered["ok"] and answered["worker"] == "first", answered
    assert comparable(answered["result"]) == comparable(
        plain(replayer.replay_to("gate-1").to_dict())
    )
    assert first.stop() == 0, first.log()
    assert "replay worker first stopped after 2 replies" in first.output(), first.log()
    group = worker_group(prefix)
    assert unconsumed(kafka_bootstrap, group, control_topic(prefix)) == 0
    # A new worker in the group starts from the committed offsets: it answers the next
    # request, and not the one answered before the stop.
    store = open_store(postgres_url, schema=pg_schema)
    second = WorkerThread(store, kafka_bootstrap, prefix, "second")
    try:
        assert ping_workers(client, kafka_bootstrap, prefix)["worker"] == "second"
        wait_for(
            lambda: unconsumed(kafka_bootstrap, group, control_topic(prefix)) == 0,
            "every control record consumed",
        )
        assert second.worker.answered == 1
        second.stop()
    finally:
        store.close()
    copies = replies(kafka_bootstrap, results_topic(prefix))[request_id]
    assert [c["worker"] for c in copies] == ["first"]


# -- metrics ----------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a Prometheus text page, by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_errors_dead_letters_and_latency(
    demo: Demo, client: ReplayClient, kafka_bootstrap: str, prefix: str, workers: Workers
) -> None:
    port = free_port()
    running = workers.start("metered", metrics_port=port)
    answers(client, running)
    player = demo.busiest_player()
    for target in ({}, {"version": 1}, {"position": demo.events[player][1].position}):
        client.replay(player, **target)
    for request in (
        {"kind": "replay", "aggregate_id": "nobody-here"},
        {"kind": "replay", "aggregate_id": player, "version": 1, "position": 1},
    ):
        assert client.send(request)["ok"] is False
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(control_topic(prefix), value=b"not json").get(timeout=10)
    producer.close()
    expected = {
        ("eventstore_replay_requests_total", (("kind", "ping"), ("outcome", "ok"))): 1.0,
        ("eventstore_replay_requests_total", (("kind", "replay"), ("outcome", "ok"))): 3.0,
        ("eventstore_replay_requests_total", (("kind", "replay"), ("outcome", "error"))): 2.0,
        ("eventstore_replay_errors_total", (("code", "not_found"),)): 1.0,
        ("eventstore_replay_errors_total", (("code", "invalid_request"),)): 1.0,
        ("eventstore_replay_dead_lettered_total", ()): 1.0,
        ("eventstore_replay_latency_seconds_count", (("kind", "ping"),)): 1.0,
        ("eventstore_replay_latency_seconds_count", (("kind", "replay"),)): 5.0,
        ("eventstore_replay_latency_seconds_count", (("kind", "invalid"),)): 1.0,
        ("eventstore_replay_latency_seconds_bucket", (("kind", "replay"), ("le", "+Inf"))): 5.0,
        ("eventstore_replay_queue_seconds_count", ()): 7.0,
        ("eventstore_replay_in_progress", ()): 0.0,
    }

    def counted() -> dict[Any, float]:
        found = samples(scrape(port))
        return {key: found.get(key, -1.0) for key in expected}

    try:
        wait_for(lambda: counted() == expected, "the metrics of 7 records")
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}: {counted()}") from None
    found = samples(scrape(port))
    assert found["eventstore_replay_latency_seconds_sum", (("kind", "replay"),)] > 0
    assert running.stop() == 0, running.log()


# -- the CLI -----------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "eventstore.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_via_kafka_prints_what_it_prints_replaying_directly(
    demo: Demo,
    postgres_url: str,
    pg_schema: str,
    worker: WorkerThread,
    client: ReplayClient,
    kafka_bootstrap: str,
    prefix: str,
) -> None:
    answers(client, worker)
    player = demo.busiest_player()
    at = demo.events[demo.items[0]][0].timestamp + timedelta(seconds=9.5)
    asks = [
        [player],
        [player, "--version", "2", "--history"],
        [demo.items[0], "--at", at.isoformat()],
    ]
    kafka = ["--via-kafka", "--kafka-bootstrap-servers", kafka_bootstrap, "--topic-prefix", prefix]
    store = ["--database-url", postgres_url, "--schema", pg_schema]
    for ask in asks:
        direct = cli(*store, "replay", *ask, "--json", "--reducers", REDUCERS_SPEC)
        assert direct.returncode == 0, direct.stderr
        via = cli("replay", *ask, "--json", *kafka, "--timeout", str(TIMEOUT))
        assert via.returncode == 0, via.stderr
        here, there = json.loads(direct.stdout), json.loads(via.stdout)
        assert comparable(there) == comparable(here), ask
        assert ("history" in there) == ("--history" in ask)
    missing = cli("replay", "nobody-here", "--json", *kafka)
    assert missing.returncode == 1 and not missing.stdout
    assert "not_found" in missing.stderr and "nobody-here" in missing.stderr
