"""The control topics on Kafka: creating them, and the worker's consume-answer-commit loop.

Delivery contract (the worker's side):
- Workers share `<prefix>.control` in one consumer group (`<prefix>.replay-worker`), so each
  request goes to one of them, and several workers share the load.
- A request's offset is committed only after its reply was acknowledged by the broker
  (acks=all). A worker that dies before that leaves the request uncommitted: the group hands
  its partition to another worker, which answers it. So a reply may come twice, never zero
  times; clients match replies by request id, and a rebuild is answered from its record in
  the store the second time, not run again.
- A record that is not a valid request is answered with an error reply; one with no readable
  request id goes to `<prefix>.dlq.control` (headers say what was wrong). Neither stops the
  worker.
- SIGTERM (`stop`) lets the request in hand finish, reply and commit, then leaves the group.

Rebalances. A request runs on a thread of its own while the worker keeps polling with every
partition paused, so that a long request (a rebuild) never keeps the group from rebalancing
(the cooperative-sticky assignor moves only the partitions that change owner). Records a
poll returns while paused (a partition assigned meanwhile) are sought back, never skipped.
A request whose partition is revoked while it runs still finishes and replies; its commit
then fails, and the partition's new owner answers it again: a duplicate reply, which the
contract allows. The rest of a polled batch of a revoked partition is left to the new owner.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import (
    CommitFailedError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
)
from kafka.structs import OffsetAndMetadata

from eventstore._kafka_refusals import REFUSED_ACCESS, REFUSED_TOPIC
from eventstore._topics import (
    check_prefix,
    control_dlq_topic,
    control_topic,
    results_topic,
    topic_configs,
)
from eventstore.errors import ConfigurationError, PublishError
from eventstore.replay._handler import Abandoned, ControlHandler, Outcome
from eventstore.replay._metrics import ReplayMetrics
from eventstore.replay._requests import (
    INTERNAL,
    TOO_LARGE,
    Malformed,
    parse_request,
    reply_document,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_REPLY_BYTES = 8 * 1024 * 1024
"""Largest reply the worker sends (the results topic is created to accept it)."""


def worker_group(prefix: str) -> str:
    """The consumer group the replay workers share."""
    return f"{check_prefix(prefix)}.replay-worker"


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def ensure_control_topics(
    bootstrap_servers: str,
    topic_prefix: str,
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    timeout: float = 10.0,
) -> list[str]:
    """Create the control, results and control dead-letter topics that do not exist yet;
    return the names created."""
    names = [
        control_topic(topic_prefix),
        results_topic(topic_prefix),
        control_dlq_topic(topic_prefix),
    ]
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers.split(","),
            client_id="eventstore-replay-admin",
            request_timeout_ms=int(timeout * 1000),
        )
    except KafkaError as error:
        raise PublishError(f"cannot reach Kafka at {bootstrap_servers}: {error}") from error
    try:
        missing = [n for n in names if n not in set(admin.list_topics())]
        if missing:
            configs = topic_configs(replication_factor)
            topics = [
                NewTopic(
                    name,
                    partitions,
                    replication_factor,
                    topic_configs=(
                        {**configs, "max.message.bytes": str(MAX_REPLY_BYTES)}
                        if name == names[1]
                        else configs
                    ),
                )
                for name in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # another was first
                admin.create_topics(topics, timeout_ms=int(timeout * 1000))
            log.info("created topics %s", ", ".join(missing))
        return missing
    except KafkaError as error:
        raise PublishError(f"creating the control topics failed: {error}") from error
    finally:
        admin.close()


_REFUSED = REFUSED_TOPIC + REFUSED_ACCESS


def _backing_off(
    call: Callable[[], T], stop: threading.Event, what: str, *, at_least_once: bool = False
) -> T | None:
    """`call()` until it succeeds, pausing 0.2 s doubling to 5 s between Kafka failures;
    None once `stop` is set (after one attempt when `at_least_once`). A refusal that no
    retry can change raises ConfigurationError."""
    pause = 0.2
    attempted = False
    while not stop.is_set() or (at_least_once and not attempted):
        attempted = True
        try:
            return call()
        except _REFUSED as error:
            raise ConfigurationError(
                f"{what}: Kafka refused ({type(error).__name__}: {error}); check the topic "
                "settings (partitions, replication factor) and this client's permissions"
            ) from error
        except (KafkaError, PublishError, OSError) as error:
            log.warning("%s: %s; retrying in %.1f s", what, error, pause)
            stop.wait(pause)
            pause = min(pause * 2, 5.0)
    return None


def _committed(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        log.warning("committing %s failed (%s): those replies may come again", offsets, response)


def _request_id(value: bytes | None) -> str | None:
    """The request id of a record, when one can be read (for a reply even to a record that
    broke the handler)."""
    try:
        return parse_request(value).request_id
    except Malformed as error:
        return error.request_id


class ReplayWorker:
    """Consumes `<prefix>.control`, runs each request with a `ControlHandler` and answers on
    `<prefix>.replay.results`, keyed by request id (see the module's delivery contract)."""

    def __init__(
        self,
        handler: ControlHandler,
        *,
        bootstrap_servers: str,
        topic_prefix: str,
        partitions: int = 3,
        replication_factor: int = 1,
        metrics: ReplayMetrics | None = None,
        session_timeout: float = 10.0,
        reply_timeout: float = 30.0,
    ) -> None:
        self.handler = handler
        self.bootstrap_servers = bootstrap_servers
        self.topic_prefix = check_prefix(topic_prefix)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.metrics = metrics or ReplayMetrics()
        self.session_timeout = session_timeout
        self.reply_timeout = reply_timeout
        self.control = control_topic(topic_prefix)
        self.results = results_topic(topic_prefix)
        self.dlq = control_dlq_topic(topic_prefix)
        self.answered = 0
        """Replies acknowledged so far (for tests and the CLI's summary)."""
        self._producer_in_use: KafkaProducer | None = None
        self._done: dict[TopicPartition, OffsetAndMetadata] = {}

    def _consumer(self) -> KafkaConsumer:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap_servers.split(","),
            group_id=worker_group(self.topic_prefix),
            client_id=f"eventstore-replay-{self.handler.worker_id}",
            enable_auto_commit=False,
            # A request sent before any worker joined is still answered.
            auto_offset_reset="earliest",
            max_poll_records=10,
            fetch_max_wait_ms=50,
            session_timeout_ms=int(self.session_timeout * 1000),
            heartbeat_interval_ms=max(1000, int(self.session_timeout * 1000) // 3),
            # Only the partitions that change owner move (see the module's notes).
            partition_assignment_strategy=[CooperativeStickyAssignor()],
        )
        # Know the topic's partitions before joining: a member that joins first assigns
        # itself nothing, and kafka-python 3.0 may then never take part in the rejoin that
        # follows (the worker would stay deaf).
        deadline = time.monotonic() + 30
        while not consumer.partitions_for_topic(self.control):
            if time.monotonic() > deadline:
                consumer.close()
                raise PublishError(f"no metadata for {self.control} within 30 s")
            time.sleep(0.1)  # partitions_for_topic asks for the metadata when it lacks it
        consumer.subscribe([self.control])
        return consumer

    def _producer(self) -> KafkaProducer:
        return KafkaProducer(
            bootstrap_servers=self.bootstrap_servers.split(","),
            client_id=f"eventstore-replay-{self.handler.worker_id}",
            acks="all",
            linger_ms=0,
            max_request_size=MAX_REPLY_BYTES,
            request_timeout_ms=int(self.reply_timeout * 1000),
        )

    def run(self, stop: threading.Event) -> None:
        """Answer requests until `stop` is set."""
        self.handler.stop = stop
        ensured = _backing_off(
            lambda: ensure_control_topics(
                self.bootstrap_servers,
                self.topic_prefix,
                partitions=self.partitions,
                replication_factor=self.replication_factor,
            ),
            stop,
            "creating the control topics",
        )
        if ensured is None:
            return
        consumer = _backing_off(self._consumer, stop, "joining the replay workers' group")
        if consumer is None:
            return
        executor = ThreadPoolExecutor(1, thread_name_prefix="replay-request")
        try:
            while not stop.is_set():
                try:
                    polled = consumer.poll(timeout_ms=200)
                except KafkaError as error:
                    log.warning("polling %s: %s; retrying", self.control, error)
                    stop.wait(0.5)
                    continue
                for partition, records in polled.items():
                    for record in records:
                        # Between requests, not within one: the request in hand finishes.
                        if stop.is_set():
                            return
                        if partition not in consumer.assignment():
                            break  # revoked meanwhile: its new owner answers the rest
                        self._one(consumer, executor, partition, record, stop)
        finally:
            executor.shutdown(wait=True)
            self._commit_done(consumer)
            self._close_producer(timeout=5)
            consumer.close(autocommit=False)

    def _close_producer(self, timeout: float) -> None:
        producer, self._producer_in_use = self._producer_in_use, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                producer.close(timeout=timeout)

    def _run(
        self, consumer: KafkaConsumer, executor: ThreadPoolExecutor, record: Any
    ) -> Outcome | None:
        """The record's outcome, computed on the executor's thread while this one keeps the
        consumer polling with every partition paused (None: abandoned on stop)."""
        future: Future[Outcome] = executor.submit(self.handler.handle, record.value)
        try:
            while True:
                try:
                    return future.result(timeout=0.1)
                except FutureTimeout:
                    pass
                consumer.pause(*consumer.assignment())
                try:
                    stray = consumer.poll(timeout_ms=0)
                except KafkaError as error:
                    log.warning("polling while a request runs: %s", error)
                    continue
                for partition, records in stray.items():  # never skipped: fetched again later
                    consumer.seek(partition, records[0].offset)
        except Abandoned as error:
            log.warning("stopping with a request unanswered (%s); another worker takes it", error)
            return None
        except Exception as error:  # a bug of ours: answered as such, the worker goes on
            log.exception("control record at %s:%d broke the handler", record.topic, record.offset)
            problem = f"internal: {type(error).__name__}: {error}"
            request_id = _request_id(record.value)
            if request_id is None:
                return Outcome(None, None, None, problem)
            reply = reply_document(
                request_id,
                None,
                worker=self.handler.worker_id,
                error=(INTERNAL, f"the worker failed on this request ({problem}); report it"),
            )
            return Outcome(request_id, None, reply)
        finally:
            consumer.resume(*consumer.paused())

    def _one(
        self,
        consumer: KafkaConsumer,
        executor: ThreadPoolExecutor,
        partition: TopicPartition,
        record: Any,
        stop: threading.Event,
    ) -> None:
        started = time.monotonic()
        if record.timestamp and record.timestamp > 0:
            self.metrics.queued.observe(max(0.0, time.time() - record.timestamp / 1000))
        self.metrics.in_progress.inc()
        try:
            outcome = self._run(consumer, executor, record)
        finally:
            self.metrics.in_progress.dec()
        if outcome is None:
            return

        def send() -> bool:
            if self._producer_in_use is None:
                self._producer_in_use = self._producer()
            try:
                self._send(self._producer_in_use, outcome, record)
            except KafkaError:
                self._close_producer(timeout=0)  # the next attempt makes a fresh one
                raise
            return True

        # At least one attempt even when stopping: the request in hand is answered.
        sent = _backing_off(send, stop, f"replying on {self.results}", at_least_once=True)
        if sent is None:
            return  # stopped before the reply was acknowledged: left uncommitted
        kind = outcome.kind if outcome.kind in ("replay", "rebuild", "ping") else "invalid"
        self.metrics.latency.labels(kind).observe(time.monotonic() - started)
        if outcome.reply is not None:
            self.metrics.requests.labels(kind, "ok" if outcome.code is None else "error").inc()
            if outcome.code is not None:
                self.metrics.errors.labels(outcome.code).inc()
        else:
            self.metrics.dead_lettered.inc()
        self.answered += 1
        # The reply is acknowledged: only now is the request done (see the module's notes).
        # Asynchronously: a commit lost with the worker means a second reply, never none; the
        # last offsets are committed synchronously when the worker stops.
        offsets = {partition: OffsetAndMetadata(record.offset + 1, "", -1)}
        self._done.update(offsets)
        try:
            consumer.commit_async(offsets, callback=_committed)
        except KafkaError as error:
            log.warning("could not commit %s offset %d (%s)", partition, record.offset, error)

    def _commit_done(self, consumer: KafkaConsumer) -> None:
        """Commit what was answered, synchronously (on the way out)."""
        owned = consumer.assignment()
        offsets = {tp: offset for tp, offset in self._done.items() if tp in owned}
        self._done.clear()
        if not offsets:
            return
        try:
            consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as error:
            log.warning("could not commit on stopping (%s): some replies may come again", error)

    def _send(self, producer: KafkaProducer, outcome: Outcome, record: Any) -> None:
        if outcome.reply is None:
            headers = [
                ("error", (outcome.problem or "").encode()[:1000]),
                ("source_topic", record.topic.encode()),
                ("source_partition", str(record.partition).encode()),
                ("source_offset", str(record.offset).encode()),
                ("worker", self.handler.worker_id.encode()),
                ("failed_at", datetime.now(UTC).isoformat().encode()),
            ]
            value = record.value if record.value is not None else b""
            producer.send(self.dlq, key=record.key, value=value, headers=headers).get(
                timeout=self.reply_timeout
            )
            log.warning(
                "control record at %s:%d dead-lettered: %s",
                record.topic,
                record.offset,
                outcome.problem,
            )
            return
        assert outcome.request_id is not None
        key = outcome.request_id.encode()
        value = json.dumps(outcome.reply, separators=(",", ":")).encode()
        try:
            producer.send(self.results, key=key, value=value).get(timeout=self.reply_timeout)
        except (MessageSizeTooLargeError, RecordListTooLargeError):
            too_large = reply_document(
                outcome.request_id,
                outcome.kind,
                worker=self.handler.worker_id,
                error=(
                    TOO_LARGE,
                    f"the reply is {len(value):,} bytes, more than the results topic takes; "
                    "ask for less (a smaller history_limit) or use the Python API",
                ),
            )
            producer.send(self.results, key=key, value=json.dumps(too_large).encode()).get(
                timeout=self.reply_timeout
            )


def check_bootstrap(bootstrap_servers: str | None) -> str:
    if not bootstrap_servers:
        raise ConfigurationError(
            "the control topic needs Kafka: set EVENTSTORE_KAFKA_BOOTSTRAP_SERVERS (or "
            "--bootstrap-servers)"
        )
    return bootstrap_servers
