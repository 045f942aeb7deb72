"""ReplayClient: send control requests and wait for their replies.

Each client reads every partition of the results topic from its end (no consumer group), and
hands each reply to the caller waiting for its request id; replies to other clients' requests
are passed over. Request ids are random UUIDs, so replies never reach the wrong caller, even
with many clients (and many threads of one client) at once. A reply may arrive twice (the
worker's delivery is at least once): the first one answers, later ones are ignored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from eventstore._closing import Closing
from eventstore._topics import check_prefix, control_topic, results_topic
from eventstore.errors import PublishError, RequestError, RequestTimeoutError
from eventstore.replay._kafka import ensure_control_topics
from eventstore.replay._requests import RETRIABLE_CODES

log = logging.getLogger(__name__)


class ReplayClient(Closing):
    """Sends requests on `<prefix>.control` and returns their replies (thread-safe)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str,
        timeout: float = 30.0,
        partitions: int = 3,
        replication_factor: int = 1,
    ) -> None:
        self.timeout = timeout
        self.topic_prefix = check_prefix(topic_prefix)
        self.control = control_topic(topic_prefix)
        self.results = results_topic(topic_prefix)
        servers = bootstrap_servers.split(",")
        ensure_control_topics(
            bootstrap_servers,
            topic_prefix,
            partitions=partitions,
            replication_factor=replication_factor,
        )
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=servers,
                client_id="eventstore-replay-client",
                acks="all",
                linger_ms=0,
            )
            self._consumer = KafkaConsumer(
                bootstrap_servers=servers,
                client_id="eventstore-replay-client",
                group_id=None,
                enable_auto_commit=False,
                fetch_max_wait_ms=50,
            )
        except KafkaError as error:
            raise PublishError(f"cannot reach Kafka at {bootstrap_servers}: {error}") from error
        # Just created (or the broker just restarted), the topic's partitions may take a moment
        # to show in the metadata.
        give_up = time.monotonic() + timeout
        while not (partition_ids := self._consumer.partitions_for_topic(self.results) or set()):
            if time.monotonic() > give_up:
                self._close_clients()
                raise PublishError(
                    f"the results topic {self.results} showed no partitions within {timeout:g} "
                    "s; is the broker up?"
                )
            time.sleep(0.1)
        assigned = [TopicPartition(self.results, p) for p in sorted(partition_ids)]
        self._consumer.assign(assigned)
        # Replies sent from now on: resolve the end offsets before any request goes out, so
        # that no reply can come before the position the client starts reading at.
        self._consumer.seek_to_end(*assigned)
        for partition in assigned:
            self._consumer.position(partition)
        self._waiting: dict[str, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="replay-client", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                polled = self._consumer.poll(timeout_ms=100)
            except Exception as error:  # the reader never dies while the client is open
                if self._closed.is_set():
                    return
                log.warning("reading %s: %s; retrying", self.results, error)
                self._closed.wait(0.5)
                continue
            for records in polled.values():
                for record in records:
                    try:
                        self._deliver(record)
                    except Exception:  # a malformed record is skipped, never fatal
                        log.exception("skipping a malformed reply at offset %d", record.offset)

    def _deliver(self, record: Any) -> None:
        if record.key is None:
            return
        with self._lock:
            future = self._waiting.pop(record.key.decode("utf-8", "replace"), None)
        if future is None:
            return  # another client's, or a second copy of one answered
        try:
            reply = json.loads(record.value)
        except (TypeError, ValueError) as error:
            future.set_exception(RequestError("invalid_reply", f"the reply is not JSON: {error}"))
            return
        future.set_result(reply)

    def send(self, request: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Send a request (a dict; `request_id` and `deadline` are filled in when absent) and
        return its reply document. RequestTimeoutError when none comes within `timeout`
        (send and reply together)."""
        wait = self.timeout if timeout is None else timeout
        give_up = time.monotonic() + wait
        request = dict(request)
        request.setdefault("request_id", str(uuid.uuid4()))
        if "deadline" not in request:
            deadline = datetime.now(UTC) + timedelta(seconds=wait)
            request["deadline"] = deadline.isoformat()
        request_id = str(request["request_id"])
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            if self._closed.is_set():
                raise RequestError("closed", "this client is closed; open a new ReplayClient")
            if request_id in self._waiting:
                raise RequestError(
                    "duplicate_request",
                    f"request {request_id} is already waiting for its reply in this client; "
                    "wait for it, or use another request id",
                )
            self._waiting[request_id] = future
        try:
            self._producer.send(
                self.control,
                key=request_id.encode(),
                value=json.dumps(request, default=str).encode(),
            ).get(timeout=max(0.001, give_up - time.monotonic()))
            return future.result(timeout=max(0.001, give_up - time.monotonic()))
        except FutureTimeout:
            raise RequestTimeoutError(
                "timeout",
                f"no reply to request {request_id} within {wait:g} s; is a replay worker "
                "running (eventstore replay-worker) on the same topic prefix?",
            ) from None
        except KafkaError as error:
            raise PublishError(f"sending the request to {self.control} failed: {error}") from error
        finally:
            with self._lock:
                if self._waiting.get(request_id) is future:
                    del self._waiting[request_id]

    def request(self, request: dict[str, Any], *, timeout: float | None = None) -> Any:
        """Send a request and return its result; an error reply raises RequestError (its
        `code` and message), a retriable one RequestTimeoutError."""
        reply = self.send(request, timeout=timeout)
        if reply.get("ok"):
            return reply.get("result")
        error = reply.get("error") or {}
        code, message = str(error.get("code")), str(error.get("message"))
        if code in RETRIABLE_CODES:
            raise RequestTimeoutError(code, message)
        raise RequestError(code, message)

    def replay(
        self,
        aggregate_id: str,
        *,
        at: datetime | None = None,
        version: int | None = None,
        position: int | None = None,
        history: bool = False,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The aggregate's state (as `ReplayResult.to_dict()`) from a replay worker."""
        request: dict[str, Any] = {"kind": "replay", "aggregate_id": aggregate_id}
        if at is not None:
            request["at"] = at.isoformat()
        if version is not None:
            request["version"] = version
        if position is not None:
            request["position"] = position
        if history:
            request["history"] = True
        result: dict[str, Any] = self.request(request, timeout=timeout)
        return result

    def rebuild(
        self,
        projection: str,
        *,
        aggregate_id: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Rebuild a projection (or one aggregate of it) through a worker. Sending it again
        with the same `request_id` (after a timeout) gets the first run's result: it runs
        once per request id."""
        request: dict[str, Any] = {"kind": "rebuild", "projection": projection}
        if request_id is not None:
            request["request_id"] = request_id
        if aggregate_id is not None:
            request["aggregate_id"] = aggregate_id
        result: dict[str, Any] = self.request(request, timeout=timeout)
        return result

    def ping(self, *, timeout: float | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request({"kind": "ping"}, timeout=timeout)
        return result

    def _close_clients(self) -> None:
        self._producer.close(timeout=2)
        self._consumer.close()

    def close(self) -> None:
        """Stop reading replies; requests still waiting fail at once (RequestError "closed")."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            future.set_exception(RequestError("closed", "the client was closed while waiting"))
        self._reader.join(timeout=5)
        self._close_clients()
