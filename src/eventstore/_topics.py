"""Topic names: `<prefix>.events.<aggregate type in snake_case>`."""

from __future__ import annotations

import re

from eventstore.errors import ConfigurationError

_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")
_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
MAX_TOPIC_LENGTH = 249


def snake_case(name: str) -> str:
    """`PlayerInventory` -> `player_inventory`, `NPCSpawner` -> `npc_spawner`."""
    return _WORD_BOUNDARY.sub("_", name).lower()


def check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix) or len(prefix) > 100:
        raise ConfigurationError(
            f"topic prefix {prefix!r} is not valid: use letters, digits, '_', '-' and dots "
            "between words, at most 100 characters"
        )
    return prefix


def events_topic(prefix: str, aggregate_type: str) -> str:
    """The topic of one aggregate type's events."""
    name = f"{check_prefix(prefix)}.events.{snake_case(aggregate_type)}"
    if len(name) > MAX_TOPIC_LENGTH:
        raise ConfigurationError(f"topic name {name!r} is longer than Kafka allows (249)")
    return name


def topic_configs(replication_factor: int) -> dict[str, str]:
    """The topic configs we set on an event topic with this replication factor.

    With acks=all the broker acknowledges once every in-sync replica has the event, and
    `min.insync.replicas` is how few of them it accepts: we ask for a majority of the
    replicas (2 of 3, 3 of 5). Then an acknowledged event is on at least two brokers and
    survives the loss of any one of them (of a minority, in general), while writes go on with
    a minority down. Below 3 replicas there is no such setting that keeps both: 1 (or 2 with 1
    in sync) loses acknowledged events with a broker, and is for development.
    """
    if replication_factor >= 3:
        return {"min.insync.replicas": str(replication_factor // 2 + 1)}
    return {}


def dlq_topic(prefix: str, projection: str) -> str:
    """The dead-letter topic of one projection: `<prefix>.dlq.<projection>`."""
    name = f"{check_prefix(prefix)}.dlq.{projection}"
    if len(name) > MAX_TOPIC_LENGTH:
        raise ConfigurationError(f"topic name {name!r} is longer than Kafka allows (249)")
    return name


def events_topic_pattern(prefix: str) -> str:
    """A regular expression matching every event topic under `prefix`."""
    return "^" + re.escape(check_prefix(prefix)) + r"\.events\..+"


def control_topic(prefix: str) -> str:
    """Where control requests (replay, rebuild, ping) are sent: `<prefix>.control`."""
    return f"{check_prefix(prefix)}.control"


def results_topic(prefix: str) -> str:
    """Where the replay worker answers, keyed by request id: `<prefix>.replay.results`."""
    return f"{check_prefix(prefix)}.replay.results"


def control_dlq_topic(prefix: str) -> str:
    """Where control records without a readable request id go: `<prefix>.dlq.control`."""
    return dlq_topic(prefix, "control")
