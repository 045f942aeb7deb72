"""The exception hierarchy: every error the package raises derives from `EventStoreError`.

Each class says whether retrying can help (`retriable`), so that runners can decide between
backing off and giving up (or dead-lettering) without matching on messages. `retriable` means
that repeating the very same call later may succeed (the database or the broker was down or
busy); an error that needs a new decision first (a version conflict) is not retriable. Driver
errors are translated into these classes in one place per backend (`store/postgres.py`,
`store/sqlite.py`) and in the Kafka publisher.
"""

from __future__ import annotations

from typing import ClassVar


class EventStoreError(Exception):
    """Root of every error raised by the event store."""

    retriable: ClassVar[bool] = False


class ConfigurationError(EventStoreError, ValueError):
    """A setting or a URL is malformed (a wrong scheme, a missing host, ...)."""


class EventValidationError(EventStoreError, ValueError):
    """An event (or an argument describing events) breaks a validation rule.

    `field` names the offending field and `rule` says what it must be, so that the message can
    be shown to the developer who built the event as it is.
    """

    def __init__(self, field: str, rule: str, *, problems: list[tuple[str, str]] | None = None):
        self.field = field
        self.rule = rule
        self.problems = problems or [(field, rule)]
        text = "; ".join(f"{f}: {r}" for f, r in self.problems)
        super().__init__(f"invalid event: {text}")


class InvalidQueryError(EventStoreError, ValueError):
    """A read was asked with arguments that cannot be served (negative limit, naive time, ...)."""


class ConcurrencyError(EventStoreError):
    """An appended event's version is not the aggregate's current version + 1.

    `expected_version` is the version the store would have accepted next, `actual_version` the
    version the event carried, and `current_version` the aggregate's version in the store.
    Reload the aggregate, decide again and append with `current_version + 1`: resending the
    same event cannot succeed, so this error is not `retriable` (`EventProducer.update` is
    the reload-decide-append loop).
    """

    def __init__(
        self,
        aggregate_id: str,
        *,
        expected_version: int,
        actual_version: int,
        message: str | None = None,
    ):
        self.aggregate_id = aggregate_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        self.current_version = expected_version - 1
        super().__init__(
            message
            or f"version conflict on aggregate {aggregate_id!r}: the event has version "
            f"{actual_version} but the aggregate is at version {self.current_version}, so the "
            f"next event must have version {expected_version}; reload the aggregate and retry"
        )


class DuplicateEventError(EventStoreError):
    """An event id is already stored with different content (a retry must resend the same event)."""

    def __init__(self, event_id: str, reason: str = "is already stored with different content"):
        self.event_id = event_id
        super().__init__(
            f"event id {event_id!r} {reason}; event ids must be unique: "
            "give a new event a new id, and resend a retried event unchanged"
        )


class StoreUnavailableError(EventStoreError, ConnectionError):
    """The database cannot be reached or stopped answering; retrying later may succeed."""

    retriable = True


class MigrationError(EventStoreError):
    """The schema is missing or is newer than this code; run `eventstore migrate` or upgrade."""


class StoreBusyError(EventStoreError):
    """The store is up but could not serve the call now (a deadlock or serialization failure
    that kept recurring, a locked SQLite file, every pooled connection in use); retry later,
    or lower the load."""

    retriable = True


class ImmutableEventError(EventStoreError):
    """Something tried to change or remove a stored event; append a correcting event instead."""


class PublishError(EventStoreError):
    """The broker did not acknowledge every event of a batch; publish the batch again."""

    retriable = True


class UpcastError(EventStoreError):
    """An upcaster failed or its chain has a hole; the message names the event and the step."""


class OutcomeUnknownError(EventStoreError, TimeoutError):
    """No answer came from the producer within its timeout: the events may or may not be
    stored (a transaction in progress can still commit them). Resending the very same events
    (same ids, same content) is safe: an exact resend is idempotent and returns the positions
    of the events already stored."""

    retriable = True


class ProjectionError(EventStoreError):
    """A projection is defined wrongly (a bad name, two projections with one name, a document
    that is not JSON) or cannot run as asked; the message names the projection."""


class HandlerError(ProjectionError):
    """A projection's handler raised on an event (not retriable: the same event fails the
    same way until the handler is fixed). Carries what the dead-letter queue records."""

    def __init__(
        self, projection: str, event_id: str, aggregate_id: str, version: int, error: BaseException
    ) -> None:
        self.projection = projection
        self.event_id = event_id
        self.aggregate_id = aggregate_id
        self.version = version
        self.error_type = type(error).__name__
        self.error_message = " ".join(str(error).split())[:1000]
        super().__init__(
            f"projection {projection!r} failed on event {event_id} (aggregate "
            f"{aggregate_id!r}, version {version}): {self.error_type}: {self.error_message}; "
            "fix the handler, then run `eventstore projections retry "
            f"{projection} --aggregate {aggregate_id}`"
        )


class FencedError(ProjectionError):
    """A runner or a rebuild wrote to a generation of a read model that is no longer the one
    it may write (a newer rebuild started, or the generation was switched or dropped)."""


class ReplayError(EventStoreError):
    """Replaying an aggregate failed: no reducer for its type, a reducer that raised or
    returned state that is not JSON, or a target it does not reach."""


class AggregateNotFoundError(ReplayError, LookupError):
    """No event of this aggregate is stored."""


class RequestError(EventStoreError):
    """A control request was answered with an error; `code` says which (see the replay
    worker's reply codes), the message what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RequestTimeoutError(RequestError, TimeoutError):
    """No reply in time (no worker running, or all busy), or the worker could not reach the
    store (`unavailable`): sending the request again may succeed."""

    retriable = True
