"""Running one control request against the store: parse, check, execute, build the reply.
No Kafka here (the worker moves records; this decides what they say)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from eventstore.errors import (
    AggregateNotFoundError,
    EventStoreError,
    InvalidQueryError,
    ProjectionError,
    ReplayError,
    UpcastError,
)
from eventstore.replay._replayer import Replayer
from eventstore.replay._requests import (
    EXPIRED,
    IN_PROGRESS,
    INTERNAL,
    INVALID_REQUEST,
    NOT_FOUND,
    REBUILD_FAILED,
    REPLAY_FAILED,
    UNAVAILABLE,
    UNKNOWN_PROJECTION,
    Malformed,
    PingRequest,
    RebuildRequest,
    ReplayRequest,
    parse_request,
    reply_document,
)
from eventstore.store import Claim, EventStore

if TYPE_CHECKING:
    from eventstore.consumers import DeadLetterSink, Projection

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0


@dataclass(frozen=True)
class Outcome:
    """What to do with one control record: send `reply` (keyed by `request_id`), or, for a
    record with no readable request id, dead-letter it with `problem`."""

    request_id: str | None
    kind: str | None
    reply: dict[str, Any] | None
    problem: str | None = None

    @property
    def code(self) -> str | None:
        """The reply's error code (None for a success)."""
        if self.reply is None or self.reply["ok"]:
            return None
        code: str = self.reply["error"]["code"]
        return code


class Abandoned(Exception):
    """Stopping while the store is unreachable: the request is left unanswered and
    uncommitted, for another worker (or this one, restarted)."""


class ControlHandler:
    """Runs control requests: replays through the `Replayer`, rebuilds of `projections`
    (each rebuild request at most once: its reply is recorded in the store, and a request
    delivered again is answered from that record), pings.

    A retriable store failure is retried with a growing pause until the request's deadline
    (then answered `unavailable`) or until `stop` is set (then `Abandoned`).
    """

    def __init__(
        self,
        store: EventStore,
        replayer: Replayer,
        *,
        projections: Sequence[Projection] = (),
        dead_letters: DeadLetterSink | None = None,
        worker_id: str = "worker",
        stop: threading.Event | None = None,
        claim_timeout: float = 3600.0,
    ) -> None:
        self.store = store
        self.replayer = replayer
        self.projections = {p.name: p for p in projections}
        self.dead_letters = dead_letters
        self.worker_id = worker_id
        self.stop = stop or threading.Event()
        self.claim_timeout = claim_timeout

    def handle(self, value: bytes | None) -> Outcome:
        try:
            request = parse_request(value)
        except Malformed as error:
            if error.request_id is None:
                return Outcome(None, error.kind, None, f"{error.code}: {error.message}")
            return self._error(error.request_id, error.kind, error.code, error.message)
        if request.expired():
            assert request.deadline is not None
            return self._error(
                request.request_id,
                request.kind,
                EXPIRED,
                f"the deadline {request.deadline.isoformat()} passed before a worker picked "
                f"the request up (at {datetime.now(UTC).isoformat(timespec='seconds')}); send "
                "it again with a later deadline, or run more replay workers",
            )
        if isinstance(request, RebuildRequest):
            return self._rebuild(request)
        return self._retrying(request, lambda: self._run(request))

    def _error(self, request_id: str, kind: str | None, code: str, message: str) -> Outcome:
        document = reply_document(request_id, kind, worker=self.worker_id, error=(code, message))
        return Outcome(request_id, kind, document)

    def _retrying(self, request: ReplayRequest | RebuildRequest | PingRequest, run: Any) -> Outcome:
        pause = BACKOFF_FIRST
        while True:
            try:
                result = run()
            except EventStoreError as error:
                if not error.retriable:
                    return self._error(request.request_id, request.kind, *_code(error))
                if self.stop.is_set():
                    raise Abandoned(str(error)) from error
                deadline = request.deadline
                if deadline is not None and datetime.now(UTC).timestamp() + pause > (
                    deadline.timestamp()
                ):
                    return self._error(
                        request.request_id,
                        request.kind,
                        UNAVAILABLE,
                        f"the store stayed unreachable until the deadline ({error}); send "
                        "the request again later",
                    )
                log.warning("request %s: %s; retrying in %.1f s", request.request_id, error, pause)
                self.stop.wait(pause)
                pause = min(pause * 2, BACKOFF_MAX)
                continue
            except Abandoned:
                raise
            except Exception as error:  # a worker never dies of one request
                log.exception("request %s failed unexpectedly", request.request_id)
                return self._error(
                    request.request_id,
                    request.kind,
                    INTERNAL,
                    f"the worker failed on this request ({type(error).__name__}: {error}); "
                    "report it with the request",
                )
            document = reply_document(
                request.request_id, request.kind, worker=self.worker_id, result=result
            )
            return Outcome(request.request_id, request.kind, document)

    def _run(self, request: ReplayRequest | PingRequest) -> dict[str, Any]:
        if isinstance(request, PingRequest):
            return {"pong": True, "worker": self.worker_id}
        return self.replayer.replay_document(
            request.aggregate_id,
            at=request.at,
            version=request.version,
            position=request.position,
            history=request.history,
            history_from=request.history_from,
            history_limit=request.history_limit,
        )

    def _rebuild(self, request: RebuildRequest) -> Outcome:
        """A rebuild runs at most once per request id: the store records who claimed it and
        its reply; a request delivered again (Kafka delivers at least once) is answered from
        the record, or, while another worker runs it, with a retriable `in_progress`. A claim
        older than `claim_timeout` without a reply means the worker that took it died: it is
        taken over and run again (safe: a new rebuild fences out an abandoned one's
        generation, and only the claimer's reply is stored)."""
        claims: list[Claim] = []
        outcome = self._retrying(
            request,
            lambda: claims.append(
                self.store.claim_request(
                    request.request_id, "rebuild", self.worker_id, self.claim_timeout
                )
            ),
        )
        if outcome.code is not None:
            return outcome
        claim = claims[-1]
        if claim.reply is not None:
            try:
                document = json.loads(claim.reply)
            except ValueError:
                document = None
            if not isinstance(document, dict):
                return self._error(
                    request.request_id,
                    request.kind,
                    INTERNAL,
                    "the stored reply of this request is damaged; send the request again with "
                    "a new request id to run it again",
                )
            document.update(
                duplicate=True,
                worker=self.worker_id,
                answered_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            )
            return Outcome(request.request_id, request.kind, document)
        if claim.holder is not None:
            since = claim.claimed_at.isoformat(timespec="seconds") if claim.claimed_at else "?"
            return self._error(
                request.request_id,
                request.kind,
                IN_PROGRESS,
                f"worker {claim.holder} is running this request (since {since}); send it "
                "again later with the same request id to get its result",
            )
        projection = self.projections.get(request.projection)
        if projection is None:
            known = ", ".join(sorted(self.projections)) or "none"
            return self._error(
                request.request_id,
                request.kind,
                UNKNOWN_PROJECTION,
                f"this worker has no projection {request.projection!r} (it has: {known}); "
                "start the worker with --projections naming its code",
            )
        outcome = self._retrying(request, lambda: self._run_rebuild(request, projection))
        if outcome.reply is not None:
            finish = outcome.reply
            self._retrying(
                request,
                lambda: self.store.finish_request(
                    request.request_id, self.worker_id, json.dumps(finish)
                ),
            )
        return outcome

    def _run_rebuild(self, request: RebuildRequest, projection: Projection) -> dict[str, Any]:
        from eventstore.consumers import Applier, rebuild, rebuild_aggregate

        store = self.store
        record = store.projection_record(projection.name) or store.register_projection(
            projection.name, projection.version
        )
        if projection.version < record.active_version:
            raise ProjectionError(
                f"projection {projection.name!r}: the store serves version "
                f"{record.active_version}, this worker's code is version {projection.version}; "
                "update the worker"
            )
        applier = Applier(store, projection, dead_letters=self.dead_letters)
        if request.aggregate_id is not None:
            done = rebuild_aggregate(store, projection, applier, request.aggregate_id)
            return {
                "projection": projection.name,
                "aggregate_id": request.aggregate_id,
                "events": done.applied,
            }
        # Not interrupted by `stop`: SIGTERM lets the request in hand finish.
        generation = rebuild(store, projection, applier)
        counts = store.projection_counts(projection.name)
        return {
            "projection": projection.name,
            "generation": generation,
            "documents": counts.documents,
            "parked": counts.parked,
        }


def _code(error: EventStoreError) -> tuple[str, str]:
    message = str(error)
    if isinstance(error, AggregateNotFoundError):
        return NOT_FOUND, message
    if isinstance(error, InvalidQueryError):
        return INVALID_REQUEST, message
    if isinstance(error, ReplayError | UpcastError):
        return REPLAY_FAILED, message
    if isinstance(error, ProjectionError):
        return REBUILD_FAILED, f"{message} (to run it again, send it with a new request id)"
    return INTERNAL, f"{type(error).__name__}: {message}"
