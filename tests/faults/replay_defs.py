"""What the replay worker tests share: reducers for `eventstore replay-worker` processes (the
demo's, and a `Gate` aggregate whose replay a test can hold in a worker's hands), the worker
process itself, and what the tests look at in Kafka (the group's members, its committed
offsets, every record of a topic).

The gate: when a worker's environment names a directory in `GATE_ENV`, folding a `Held` event
writes `in-hand.<pid>` there (so the test knows which worker process has the request in hand)
and waits until the test creates `release` in it. Without the variable (the test's own
`Replayer`) `Held` folds at once; the state is the same either way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventstore.demo.reducers import ALL as DEMO
from eventstore.events import Event
from eventstore.replay import Reducer

if TYPE_CHECKING:
    from eventstore.replay._client import ReplayClient

ROOT = Path(__file__).resolve().parents[2]
GATE_ENV = "EVENTSTORE_TEST_REPLAY_GATE"
GATE_TYPE = "Gate"
HOLD_LIMIT = 120.0
"""Seconds a held replay waits for `release` before it fails (a test that forgot it)."""

# -- reducers ---------------------------------------------------------------------------------

GATE = Reducer(GATE_TYPE, version=1, initial={"held": 0}, snapshot_every=0)


def in_hand(directory: Path, pid: int) -> Path:
    """The file a worker process writes when it has a gated request in hand."""
    return directory / f"in-hand.{pid}"


def release(directory: Path) -> Path:
    """The file that lets every held replay go on."""
    return directory / "release"


def gate_event(aggregate_id: str, version: int = 1) -> Event:
    return Event.new(
        aggregate_type=GATE_TYPE,
        aggregate_id=aggregate_id,
        event_type="Held",
        version=version,
        payload={"note": f"held {version}"},
    )


@GATE.on("Held")
def _held(state: dict[str, Any], event: Event) -> dict[str, Any]:
    gate = os.environ.get(GATE_ENV)
    if gate:
        _hold(Path(gate))
    return {"held": state["held"] + 1, "note": event.payload["note"]}


def _hold(directory: Path) -> None:
    in_hand(directory, os.getpid()).touch()
    deadline = time.monotonic() + HOLD_LIMIT
    while not release(directory).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"held for {HOLD_LIMIT:g} s and never released")
        time.sleep(0.01)


REDUCERS = [*DEMO, GATE]
"""The demo's reducers and the gate (`--reducers tests.faults.replay_defs:REDUCERS`)."""
REDUCERS_SPEC = "tests.faults.replay_defs:REDUCERS"

# -- results ----------------------------------------------------------------------------------


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A replay result without what depends on the snapshot cache (which snapshot it started
    from, hence how many events it folded), after checking that those two add up."""
    found = dict(result)
    applied, snapshot = found.pop("events_applied"), found.pop("snapshot_version")
    assert applied + (snapshot or 0) == found["version"], result
    return found


# -- worker processes -------------------------------------------------------------------------


class WorkerProcess:
    """`eventstore replay-worker` in a process of its own (the CLI's defaults: a 10 s session
    timeout), with the test reducers, the gate in `gate` when given, Prometheus metrics on
    `metrics_port` when given, and its output in `logs/<name>.log`."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        schema: str,
        bootstrap: str,
        prefix: str,
        logs: Path,
        gate: Path | None = None,
        metrics_port: int | None = None,
        partitions: int | None = None,
    ) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.log_path = logs / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        if gate is not None:
            env[GATE_ENV] = str(gate)
        command = [
            sys.executable,
            "-m",
            "eventstore.cli",
            "--database-url",
            url,
            "--schema",
            schema,
            "replay-worker",
            "--kafka-bootstrap-servers",
            bootstrap,
            "--topic-prefix",
            prefix,
            "--reducers",
            REDUCERS_SPEC,
            "--worker-id",
            name,
            "--log-level",
            "WARNING",
        ]
        if metrics_port is not None:
            command += ["--metrics-port", str(metrics_port)]
        if partitions is not None:
            command += ["--partitions", str(partitions)]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def client_id(self) -> str:
        """Its Kafka client id (as the group lists its members)."""
        return f"eventstore-replay-{self.name}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log(self, lines: int = 30) -> str:
        tail = "\n".join(self.output().splitlines()[-lines:])
        return f"--- {self.name} (last {lines} lines) ---\n{tail}"

    def alive(self) -> bool:
        """True, or fails the test with how it ended."""
        code = self.process.poll()
        if code is None:
            return True
        raise AssertionError(f"{self.name} exited {code}\n{self.log()}")

    def signal_delivered(self, sig: signal.Signals) -> bool:
        """Whether `sig`, sent to the process, is no longer pending: its handler has run in C
        (Python runs the Python handler at its next check, before any further bytecode of
        the main thread's loop)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        pending = 0
        for line in status.splitlines():
            if line.startswith(("SigPnd:", "ShdPnd:")):
                pending |= int(line.split()[1], 16)
        return not pending & (1 << (sig - 1))

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.name} did not stop on SIGTERM\n{self.log()}") from None

    def ensure_stopped(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Workers:
    """Starts `WorkerProcess`es on one test's schema and topics, and stops (SIGTERM, then
    SIGKILL) those still running when the test ends, however it ends."""

    def __init__(self, *, url: str, schema: str, bootstrap: str, prefix: str, logs: Path) -> None:
        self._where: dict[str, Any] = {
            "url": url,
            "schema": schema,
            "bootstrap": bootstrap,
            "prefix": prefix,
            "logs": logs,
        }
        self.started: list[WorkerProcess] = []

    def start(
        self,
        name: str,
        *,
        gate: Path | None = None,
        metrics_port: int | None = None,
        partitions: int | None = None,
    ) -> WorkerProcess:
        worker = WorkerProcess(
            name, gate=gate, metrics_port=metrics_port, partitions=partitions, **self._where
        )
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.ensure_stopped()


# -- Kafka, as the tests look at it -------------------------------------------------------------


def describe_group(bootstrap: str, group: str) -> tuple[str, dict[str, list[int]]]:
    """The group's state and its members (by client id) with the partitions each holds."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_groups([group])[group]
    finally:
        admin.close()
    members: dict[str, list[int]] = {}
    for member in described.get("members") or []:
        assignment = member.get("member_assignment") or {}
        partitions = [
            p for topic in assignment.get("assigned_partitions") or [] for p in topic["partitions"]
        ]
        members[member["client_id"]] = sorted(partitions)
    return str(described.get("group_state")), members


def group_members(bootstrap: str, group: str) -> dict[str, list[int]]:
    """The group's members (by client id) and the partitions each holds, once the group is
    stable ({} while it rebalances)."""
    state, members = describe_group(bootstrap, group)
    return members if state == "Stable" else {}


def ping_workers(
    client: ReplayClient, bootstrap: str, prefix: str, timeout: float = 30.0
) -> dict[str, Any]:
    """A ping through `client` (a ReplayClient); on a timeout, the failure says what the
    workers' group looks like (a worker that never took up its partitions leaves the group
    empty, or holding none)."""
    from eventstore.errors import RequestTimeoutError
    from eventstore.replay._kafka import worker_group

    try:
        reply: dict[str, Any] = client.ping(timeout=timeout)
    except RequestTimeoutError as error:
        group = worker_group(prefix)
        state, members = describe_group(bootstrap, group)
        raise AssertionError(f"{error}\ngroup {group}: {state}, members {members}") from None
    return reply


def unconsumed(bootstrap: str, group: str, topic: str) -> int:
    """How many records of `topic` lie beyond the group's committed offsets."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions)
        committed = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        consumer.close()
        admin.close()
    return sum(end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items())


def read_all(bootstrap: str, topic: str) -> list[tuple[str | None, dict[str, str], bytes | None]]:
    """Every record of `topic` now, as kcat (librdkafka, an independent client) reads it:
    key, headers and value (None for a null one)."""
    result = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-J"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    found: list[tuple[str | None, dict[str, str], bytes | None]] = []
    for line in result.stdout.splitlines():
        if line.strip():
            record = json.loads(line.decode("utf-8", "surrogateescape"))
            pairs = record.get("headers") or []
            headers = dict(zip(pairs[::2], pairs[1::2], strict=True))
            payload = record["payload"]
            value = None if payload is None else payload.encode("utf-8", "surrogateescape")
            found.append((record["key"], headers, value))
    return found


def replies(bootstrap: str, topic: str) -> dict[str, list[dict[str, Any]]]:
    """Every reply on the results topic now, by request id (the record's key)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for key, _, value in read_all(bootstrap, topic):
        assert key is not None and value is not None, (key, value)
        document = json.loads(value)
        assert document["request_id"] == key, document
        found.setdefault(key, []).append(document)
    return found
