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
