"""Consumers: projections (read models built from events) and the sources that feed them.

`Projection` defines one; `ProjectionRunner` runs projections from the store's tail (the
embedded default) or from Kafka (`KafkaSource`, loaded on first use so that importing this
package does not import kafka-python); `Projector` is the one-line form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventstore.consumers._apply import Applier, BatchResult, ProjectionStore
from eventstore.consumers._dlq import DeadLetter, DeadLetterSink, NoDeadLetterTopic
from eventstore.consumers._documents import Documents
from eventstore.consumers._projection import (
    ANY_EVENT,
    ErrorPolicy,
    Handler,
    Projection,
    check_projection_name,
    check_projections,
)
from eventstore.consumers._rebuild import catch_up, rebuild, rebuild_aggregate, retry_parked
from eventstore.consumers._runner import (
    ProjectionRunner,
    Projector,
    RunnerObserver,
    Source,
    StoreTailSource,
)
from eventstore.consumers._status import parked_rows, projection_status
from eventstore.consumers._tail import StoreTail

if TYPE_CHECKING:
    from eventstore.consumers._kafka import KafkaDeadLetters, KafkaSource

__all__ = [
    "ANY_EVENT",
    "Applier",
    "BatchResult",
    "DeadLetter",
    "DeadLetterSink",
    "Documents",
    "ErrorPolicy",
    "Handler",
    "KafkaDeadLetters",
    "KafkaSource",
    "NoDeadLetterTopic",
    "Projection",
    "ProjectionRunner",
    "ProjectionStore",
    "Projector",
    "RunnerObserver",
    "Source",
    "StoreTail",
    "StoreTailSource",
    "catch_up",
    "check_projection_name",
    "check_projections",
    "parked_rows",
    "projection_status",
    "rebuild",
    "rebuild_aggregate",
    "retry_parked",
]


def __getattr__(name: str) -> Any:
    if name in ("KafkaSource", "KafkaDeadLetters"):
        from eventstore.consumers import _kafka

        value = getattr(_kafka, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
