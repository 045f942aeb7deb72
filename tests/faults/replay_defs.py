"""Reducers for tests that run `eventstore replay-worker` as a process: the demo's, and a
`Gate` aggregate whose replay a test can hold in the worker's hands.

When the worker's environment names a directory in `GATE_ENV`, folding a `Held` event
writes `in-hand.<pid>` there (the test then knows which worker process has the request in
hand) and waits until the test creates `release` in it. Without the variable (the test's own
`Replayer`), `Held` folds at once: the state is the same either way.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from eventstore.demo.reducers import ALL as DEMO
from eventstore.events import Event
from eventstore.replay import Reducer

GATE_ENV = "EVENTSTORE_TEST_REPLAY_GATE"
GATE_TYPE = "Gate"
HOLD_LIMIT = 120.0
"""Seconds a held replay waits for `release` before it fails (a test that forgot it)."""

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
