"""Replay: aggregate state at any version, time or global position, built by reducers from
the store's events (with snapshots as a cache), and the control-topic worker and client that
serve replays to other processes.

`ReplayWorker` and `ReplayClient` load kafka-python on first use, so importing this package
does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventstore.replay._diff import StateChange, diff
from eventstore.replay._handler import ControlHandler, Outcome
from eventstore.replay._metrics import ReplayMetrics
from eventstore.replay._reducers import Fold, Reducer, check_reducers, state_json
from eventstore.replay._replayer import (
    Replayer,
    ReplayResult,
    ReplayStore,
    Step,
    WorldPage,
)

if TYPE_CHECKING:
    from eventstore.replay._client import ReplayClient
    from eventstore.replay._kafka import ReplayWorker

__all__ = [
    "ControlHandler",
    "Fold",
    "Outcome",
    "Reducer",
    "ReplayClient",
    "ReplayMetrics",
    "ReplayResult",
    "ReplayStore",
    "ReplayWorker",
    "Replayer",
    "StateChange",
    "Step",
    "WorldPage",
    "check_reducers",
    "diff",
    "state_json",
]


def __getattr__(name: str) -> Any:
    if name == "ReplayWorker":
        from eventstore.replay._kafka import ReplayWorker

        globals()[name] = ReplayWorker
        return ReplayWorker
    if name == "ReplayClient":
        from eventstore.replay._client import ReplayClient

        globals()[name] = ReplayClient
        return ReplayClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
