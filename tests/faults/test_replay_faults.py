"""Replay workers under faults, against the real broker and PostgreSQL (DESIGN section 7):
four clients send 200 replay requests to two `eventstore replay-worker` processes in one
group, and the worker holding a request is SIGKILLed. Whatever happens, every request is
answered, each reply reaches the client that sent it with what `Replayer.replay_to` gives,
and the request the killed worker had in hand is answered by the other one.

Replies come at least once (a request whose reply was sent but not committed may be answered
again); the clients match them by request id, so a second copy changes nothing a caller sees.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from eventstore import EventStore, open_store
from eventstore._topics import control_topic, results_topic
from eventstore.demo.world import World
from eventstore.replay import Replayer
from eventstore.replay._client import ReplayClient
from eventstore.replay._kafka import ensure_control_topics, worker_group
from tests.conftest import unique_name
from tests.faults.harness import wait_until
from tests.faults.replay_defs import (
    REDUCERS,
    WorkerProcess,
    Workers,
    comparable,
    gate_event,
    group_members,
    in_hand,
    ping_workers,
    release,
    replies,
    unconsumed,
)

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

CLIENTS = 4
REQUESTS = 200
SENDERS = 3
"""Threads per client, sharing its ReplayClient (a client is thread-safe)."""
PARTITIONS = 4
"""Of the control topic: two for each worker."""
TIMEOUT = 60.0
"""Seconds a client waits for a reply: the killed worker's partitions wait for the group's
session timeout (10 s, the CLI's default) and a rebalance before the other worker takes
them, and then for the backlog queued on them."""
GATED_AT = 20
"""Client 0's request number GATED_AT is the one held in a worker's hands."""


@dataclass(frozen=True)
class Ask:
    """A request one client sends, and the reply's result it must get."""

    client: int
    request: dict[str, Any]
    expected: dict[str, Any]

    @property
    def request_id(self) -> str:
        return str(self.request["request_id"])


@dataclass
class Got:
    """What a client got for one request."""

    ask: Ask
    reply: dict[str, Any] | None = None
    error: BaseException | None = None
    at: float = field(default_factory=time.monotonic)


@pytest.fixture
def prefix() -> str:
    return unique_name("rf")


@pytest.fixture
def workers(
    postgres_url: str, pg_schema: str, kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> Iterator[Workers]:
    """`eventstore replay-worker` processes on this test's schema and topics, stopped at the
    end of the test however it ends."""
    started = Workers(
        url=postgres_url, schema=pg_schema, bootstrap=kafka_bootstrap, prefix=prefix, logs=tmp_path
    )
    yield started
    started.stop_all()


@pytest.fixture
def pg_store(postgres_url: str, pg_schema: str) -> Iterator[EventStore]:
    store = open_store(postgres_url, schema=pg_schema)
    store.migrate()
    yield store
    store.close()


def world(store: EventStore) -> list[str]:
    """A demo world of 30 players and 15 items over 40 ticks, and a gated aggregate; the
    demo aggregates' ids."""
    demo = World("f", players=30, items=15, seed=5)
    store.append_events(demo.genesis())
    for _ in range(40):
        store.append_events(demo.tick())
    store.append_events([gate_event("gate-1")])
    return ["f", *(p.id for p in demo.players), *(i.id for i in demo.items)]


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def asks(store: EventStore, aggregates: list[str]) -> list[list[Ask]]:
    """REQUESTS replay requests (latest, to a version, a time or a position, with history)
    shared among the clients, each with the result replay_to gives; client 0's GATED_AT-th
    is the gated aggregate's."""
    replayer = Replayer(store, REDUCERS)
    chosen = random.Random(7)
    events = {a: list(store.get_events_by_aggregate(a)) for a in aggregates}
    per_client: list[list[Ask]] = [[] for _ in range(CLIENTS)]
    for number in range(REQUESTS):
        client = number % CLIENTS
        target: dict[str, Any]
        if client == 0 and len(per_client[0]) == GATED_AT:
            aggregate, target, history = "gate-1", {}, False
        else:
            aggregate = chosen.choice(aggregates)
            stored = events[aggregate]
            event = chosen.choice(stored)
            roll = chosen.random()
            history = roll >= 0.9
            if roll < 0.3:
                target = {}
            elif roll < 0.55 or history:
                target = {"version": chosen.randint(0, len(stored))}
            elif roll < 0.7:
                target = {"at": event.timestamp + timedelta(milliseconds=chosen.choice([-1, 0]))}
            else:
                target = {"position": event.position}
        found = replayer.replay_to(aggregate, **target).to_dict()
        if history:
            steps = [s.to_dict() for s in replayer.history(aggregate, to_version=found["version"])]
            assert len(steps) <= 100, "one page of history (the default history_limit)"
            found.update(history=steps, history_next=None)
        request: dict[str, Any] = {
            "kind": "replay",
            "aggregate_id": aggregate,
            "request_id": f"c{client}-{number}-{uuid.uuid4()}",
            **{k: v.isoformat() if k == "at" else v for k, v in target.items()},
        }
        if history:
            request["history"] = True
        per_client[client].append(Ask(client, request, comparable(_plain(found))))
    return per_client


class Client:
    """One client: its own ReplayClient, SENDERS threads sending its requests in turn."""

    def __init__(self, number: int, bootstrap: str, prefix: str, asks: list[Ask]) -> None:
        self.number = number
        self.replay = ReplayClient(bootstrap, topic_prefix=prefix, timeout=TIMEOUT)
        self.got: list[Got] = []
        self._queue = list(asks)
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._send, name=f"client-{number}-{n}", daemon=True)
            for n in range(SENDERS)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _send(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    return
                ask = self._queue.pop(0)
            try:
                got = Got(ask, reply=self.replay.send(ask.request))
            except Exception as error:
                got = Got(ask, error=error)
            with self._lock:
                self.got.append(got)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), f"client {self.number} hangs"

    def close(self) -> None:
        self.replay.close()


@pytest.mark.timeout(300)
def test_every_request_answered_to_its_sender_with_the_worker_holding_one_killed(
    pg_store: EventStore, kafka_bootstrap: str, prefix: str, workers: Workers, tmp_path: Path
) -> None:
    began = time.monotonic()
    work = asks(pg_store, world(pg_store))
    gated = work[0][GATED_AT]
    assert gated.request["aggregate_id"] == "gate-1"
    ensure_control_topics(kafka_bootstrap, prefix, partitions=PARTITIONS)
    gate = tmp_path / "gate"
    gate.mkdir()
    pair = [workers.start(f"worker-{n}", gate=gate, partitions=PARTITIONS) for n in (1, 2)]
    clients: list[Client] = []
    group = worker_group(prefix)
    try:
        with ReplayClient(kafka_bootstrap, topic_prefix=prefix, timeout=TIMEOUT) as probe:
            ping_workers(probe, kafka_bootstrap, prefix)

        def both_serving() -> bool:
            members = group_members(kafka_bootstrap, group)
            held = [len(members.get(w.client_id, [])) for w in pair]
            return all(w.alive() for w in pair) and min(held) >= 1 and sum(held) == PARTITIONS

        wait_until(both_serving, "both workers in the group, every partition held", timeout=120)
        clients = [Client(n, kafka_bootstrap, prefix, work[n]) for n in range(CLIENTS)]
        for client in clients:
            client.start()

        def holder() -> WorkerProcess | None:
            return next((w for w in pair if in_hand(gate, w.pid).exists()), None)

        wait_until(
            lambda: all(w.alive() for w in pair) and holder() is not None,
            "a worker with the gated request in hand",
            timeout=TIMEOUT,
            interval=0.01,
        )
        victim = holder()
        assert victim is not None
        survivor = next(w for w in pair if w is not victim)
        before = [g for c in clients for g in list(c.got)]
        victim.kill()
        killed_at = time.monotonic()
        release(gate).touch()
        for client in clients:
            client.join(timeout=TIMEOUT * 2)
    finally:
        for client in clients:
            client.close()
    assert survivor.stop() == 0, survivor.log()  # SIGTERM: it leaves the group, exits 0
    assert victim.process.returncode == -9

    got = [g for c in clients for g in c.got]
    failed = [f"{g.ask.request_id}: {g.error!r}" for g in got if g.error is not None]
    assert not failed, f"{len(failed)} requests unanswered:\n" + "\n".join(failed[:10])
    assert len(got) == REQUESTS
    assert sorted(g.ask.request_id for g in got) == sorted(a.request_id for w in work for a in w)
    for client in clients:
        for g in client.got:
            assert g.ask.client == client.number
            assert g.reply is not None
            # The reply the client handed back is its own request's, nobody else's.
            assert g.reply["request_id"] == g.ask.request_id, (client.number, g.reply)
            assert g.reply["kind"] == "replay" and g.reply["ok"], g.reply
            assert comparable(g.reply["result"]) == g.ask.expected, g.ask.request
    # Mid-run: both workers had answered requests, and many were still to come.
    assert {g.reply["worker"] for g in before if g.reply} == {"worker-1", "worker-2"}
    assert len(before) < REQUESTS - 20
    assert any(g.at > killed_at for g in got)
    # The request in the killed worker's hands: answered by the other one, never by it.
    held = next(g for g in got if g.ask is gated)
    assert held.reply is not None and held.reply["worker"] == survivor.name
    assert in_hand(gate, survivor.pid).exists()
    on_topic = replies(kafka_bootstrap, results_topic(prefix))
    assert {r["worker"] for r in on_topic[gated.request_id]} == {survivor.name}
    assert set(on_topic) >= {g.ask.request_id for g in got}
    assert unconsumed(kafka_bootstrap, group, control_topic(prefix)) == 0
    copies = Counter(len(v) for v in on_topic.values())
    print(
        f"\n{REQUESTS} requests from {CLIENTS} clients in {time.monotonic() - began:.0f}s; "
        f"answered after the kill: {sum(g.at > killed_at for g in got)}; "
        f"replies per request on the topic: {dict(copies)}"
    )
