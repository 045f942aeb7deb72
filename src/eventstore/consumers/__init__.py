"""Consumers: sources of events to build read models from."""

from eventstore.consumers._tail import StoreTail

__all__ = ["StoreTail"]
