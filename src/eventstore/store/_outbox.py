"""Outbox buckets: how the outbox is split among relay shards (the same on every backend)."""

from __future__ import annotations

import zlib

OUTBOX_BUCKETS = 256
"""Outbox rows carry crc32(aggregate_id) mod this; a relay shard owns bucket mod shards."""


def outbox_bucket(aggregate_id: str) -> int:
    """The outbox bucket of an aggregate: stable across processes, versions and machines."""
    return zlib.crc32(aggregate_id.encode()) % OUTBOX_BUCKETS
