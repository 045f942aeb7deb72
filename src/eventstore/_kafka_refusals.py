"""What Kafka refuses whatever the moment: asking again cannot help, so these are errors of
configuration (or of the record), never outages to back off from. Shared by the runners
that talk to Kafka."""

from __future__ import annotations

from kafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    InvalidConfigurationError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
)

REFUSED_TOPIC = (
    InvalidConfigurationError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidTopicError,
    PolicyViolationError,
)
"""A topic refused as asked (more replicas than brokers, a bad config)."""

REFUSED_ACCESS = (
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
)
"""This client may not do it."""

REFUSED_RECORDS = (
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
"""Records the broker will not take (not allowed, or too large)."""
