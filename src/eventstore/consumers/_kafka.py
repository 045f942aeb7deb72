"""Kafka as the live source of projections, and the dead-letter topics.

One consumer group per projection (`<prefix>.projection.<name>`), manual commits after the
batch's transaction committed, the cooperative-sticky assignor (a rebalance moves only the
partitions that change owner), static membership when an instance id is given (a restart
within the session timeout keeps its partitions without a rebalance).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from eventstore._topics import (
    check_prefix,
    dlq_topic,
    events_topic,
    events_topic_pattern,
    topic_configs,
)
from eventstore._wire import from_message
from eventstore.consumers._dlq import DeadLetter, undecodable_letter
from eventstore.consumers._projection import Projection
from eventstore.consumers._retry import BACKOFF_FIRST, BACKOFF_MAX
from eventstore.consumers._runner import ProjectionRunner
from eventstore.errors import ConfigurationError, PublishError
from eventstore.events import Event

log = logging.getLogger(__name__)


def group_id(prefix: str, projection: str) -> str:
    """The consumer group of a projection."""
    return f"{check_prefix(prefix)}.projection.{projection}"


class KafkaDeadLetters:
    """Publishes dead letters to `<prefix>.dlq.<projection>` (created on first use), keyed by
    aggregate id; returns once the broker acknowledged them (acks=all, idempotent)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str,
        partitions: int = 3,
        replication_factor: int = 1,
        timeout: float = 10.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic_prefix = check_prefix(topic_prefix)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.timeout = timeout
        self._producer: KafkaProducer | None = None
        self._topics: set[str] = set()
        self._lock = threading.Lock()

    def send(self, projection: str, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        topic = dlq_topic(self.topic_prefix, projection)
        with self._lock:
            try:
                self._ensure_topic(topic)
                producer = self._producer or self._new_producer()
                self._producer = producer
                futures = [
                    producer.send(topic, key=letter.key, value=letter.value, headers=letter.headers)
                    for letter in letters
                ]
                producer.flush(timeout=self.timeout)
                for future in futures:
                    future.get(timeout=self.timeout)
            except (KafkaError, OSError) as error:
                self._discard()
                raise PublishError(
                    f"the dead-letter topic {topic} did not acknowledge {len(letters)} letters "
                    f"({type(error).__name__}: {error}); the batch is retried"
                ) from error

    def _new_producer(self) -> KafkaProducer:
        return KafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id="eventstore-dlq",
            acks="all",
            enable_idempotence=True,
            max_in_flight_requests_per_connection=1,
            request_timeout_ms=int(self.timeout * 1000),
        )

    def _ensure_topic(self, topic: str) -> None:
        if topic in self._topics:
            return
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, client_id="eventstore-dlq-admin"
        )
        try:
            admin.create_topics(
                [
                    NewTopic(
                        topic,
                        self.partitions,
                        self.replication_factor,
                        topic_configs=topic_configs(self.replication_factor),
                    )
                ]
            )
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()
        self._topics.add(topic)

    def _discard(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:
                log.debug("closing a failed dead-letter producer", exc_info=True)
        self._producer = None

    def close(self) -> None:
        with self._lock:
            self._discard()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """The rebalance contract of a projection's consumer.

    kafka-python 3.x calls these on its IO thread, possibly while the main thread is in the
    middle of a batch: they only record what changed, and never call the consumer (a
    blocking call there raises). What each event means for correctness:

    - assigned: the main loop, before it applies anything more, asks for the group's
      committed offsets of the new partitions; one without any starts at the projection's
      hand-off time (what the catch-up from the global log could not read is after it).
    - revoked (cooperative: only partitions that move): the batch in hand may hold their
      records; it is applied anyway, and its offsets are committed only for partitions still
      assigned. The new owner redelivers from the last committed offset; the checkpoints
      (locked per aggregate in each batch's transaction) make it skip what this batch
      applied, even while both apply at once.
    - lost (the member was removed; it cannot commit): handled as revoked.

    Offsets are never the truth, so no outcome of a rebalance can apply an event twice or
    lose one: at worst records are read again and skipped.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assigned: set[TopicPartition] = set()
        self.revoked = 0

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        with self._lock:
            self._assigned.update(assigned)

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        with self._lock:
            self._assigned.difference_update(revoked)
            self.revoked += len(revoked)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.on_partitions_revoked(lost)

    def put_back(self, partitions: set[TopicPartition]) -> None:
        with self._lock:
            self._assigned.update(partitions)

    def take_assigned(self) -> set[TopicPartition]:
        with self._lock:
            taken, self._assigned = self._assigned, set()
        return taken


def _committed(offsets: Any, response: Any) -> None:
    """An asynchronous commit's outcome (kafka-python passes the exception on failure)."""
    if isinstance(response, Exception):
        log.info("offsets not committed (%s); records may be read again", response)


class _Topics:
    """The topics a projection's consumer subscribes to, by name: its aggregate types' topics,
    or (a projection of every aggregate type) the event topics that exist, looked up again
    every `DISCOVERY_INTERVAL` seconds so that a new aggregate type's topic is joined.

    Not a pattern subscription: kafka-python then fetches the metadata of every topic of the
    cluster before each join, and a join slower than the poll timeout starts over (a
    rebalance storm seen with a few hundred topics)."""

    DISCOVERY_INTERVAL = 5.0

    def __init__(
        self,
        source: KafkaSource,
        projection: Projection,
        consumer: KafkaConsumer,
        listener: _Rebalance,
    ) -> None:
        self._prefix = source.topic_prefix
        self._consumer = consumer
        self._listener = listener
        self._fixed = (
            {events_topic(self._prefix, t) for t in projection.aggregate_types}
            if projection.aggregate_types
            else None
        )
        self._pattern = re.compile(events_topic_pattern(self._prefix))
        self._subscribed: set[str] = set()
        self._looked = 0.0

    def refresh(self) -> bool:
        """Subscribe to what there is to subscribe to; False while nothing exists yet."""
        if self._subscribed == self._fixed:
            return True
        if time.monotonic() - self._looked < (self.DISCOVERY_INTERVAL if self._subscribed else 1.0):
            return bool(self._subscribed)
        self._looked = time.monotonic()
        candidates = (
            self._fixed
            if self._fixed is not None
            else {t for t in self._consumer.topics() if self._pattern.match(t)}
        )
        # Join only with topics whose partitions are known: a member that joins before it
        # knows them assigns itself nothing, and kafka-python 3.0 may then never take part in
        # the rejoin that follows (the runner would stay without partitions, for good).
        wanted = {t for t in candidates if self._consumer.partitions_for_topic(t)}
        if wanted and wanted != self._subscribed:
            self._consumer.subscribe(topics=sorted(wanted), listener=self._listener)
            self._subscribed = set(wanted)
        return bool(self._subscribed)


class KafkaSource:
    """Feeds each projection from its own consumer group, one thread per projection."""

    name = "kafka"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = "game",
        instance_id: str | None = None,
        partitions: int = 3,
        replication_factor: int = 1,
        poll_timeout: float = 1.0,
        session_timeout: float = 10.0,
        consumer_options: dict[str, Any] | None = None,
        dead_letter_topics: bool = True,
    ) -> None:
        if not bootstrap_servers:
            raise ConfigurationError(
                "no Kafka bootstrap servers: set EVENTSTORE_KAFKA_BOOTSTRAP_SERVERS or "
                "--kafka-bootstrap-servers (or use the store's tail: --source store)"
            )
        self.bootstrap_servers = bootstrap_servers
        self.topic_prefix = check_prefix(topic_prefix)
        self.instance_id = instance_id
        self.poll_timeout = poll_timeout
        self.session_timeout = session_timeout
        self.consumer_options = consumer_options or {}
        self._dlq = (
            KafkaDeadLetters(
                bootstrap_servers,
                topic_prefix=topic_prefix,
                partitions=partitions,
                replication_factor=replication_factor,
            )
            if dead_letter_topics
            else None
        )

    def dead_letters(self) -> KafkaDeadLetters | None:
        return self._dlq

    def run(self, runner: ProjectionRunner, stop: threading.Event) -> None:
        failures: list[BaseException] = []

        def one(projection: Projection) -> None:
            try:
                self._run_one(runner, projection, stop)
            except BaseException as error:
                failures.append(error)
                stop.set()

        threads = [
            threading.Thread(target=one, args=(p,), name=f"projection-{p.name}", daemon=True)
            for p in runner.projections
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._dlq is not None:
            self._dlq.close()
        if failures:
            raise failures[0]

    def consumer(self, projection: Projection) -> KafkaConsumer:
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "group_id": group_id(self.topic_prefix, projection.name),
            "client_id": f"eventstore-projection-{projection.name}",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "partition_assignment_strategy": [CooperativeStickyAssignor()],
            "session_timeout_ms": int(self.session_timeout * 1000),
            "heartbeat_interval_ms": max(500, int(self.session_timeout * 1000) // 4),
        }
        if self.instance_id:
            options["group_instance_id"] = f"{self.instance_id}.{projection.name}"
        options.update(self.consumer_options)
        return KafkaConsumer(**options)

    def _run_one(
        self, runner: ProjectionRunner, projection: Projection, stop: threading.Event
    ) -> None:
        consumer = self._connect(projection, stop)
        if consumer is None:
            return
        listener = _Rebalance()
        topics = _Topics(self, projection, consumer, listener)
        record = runner.store.projection_record(projection.name)
        handoff = record.handoff_at if record is not None else None
        upcasters = runner.store.upcasters
        last_lag = 0.0
        done: dict[TopicPartition, int] = {}
        try:
            pause = BACKOFF_FIRST
            while not stop.is_set():
                try:
                    if not topics.refresh():
                        stop.wait(self.poll_timeout)  # no event topic exists yet
                        continue
                    polled, start = self._poll(consumer, listener, handoff, runner.batch_size)
                except KafkaError as error:
                    # The broker is unreachable or the group is rebalancing: nothing was
                    # applied, nothing is lost; poll again after a pause.
                    log.warning(
                        "projection %s: Kafka: %s; retrying in %.1f s",
                        projection.name,
                        error,
                        pause,
                    )
                    stop.wait(pause)
                    pause = min(pause * 2, BACKOFF_MAX)
                    continue
                pause = BACKOFF_FIRST
                events: list[Event] = []
                letters: list[DeadLetter] = []
                offsets: dict[TopicPartition, int] = {}
                for tp, records in polled.items():
                    for record_ in records:
                        if record_.offset < start.get(tp, -1):
                            continue
                        offsets[tp] = record_.offset
                        try:
                            event = from_message(record_.value or b"")
                        except Exception as error:
                            letters.append(
                                undecodable_letter(
                                    projection.name,
                                    record_.key,
                                    record_.value,
                                    error=f"{type(error).__name__}: {error}",
                                    topic=tp.topic,
                                    partition=tp.partition,
                                    offset=record_.offset,
                                )
                            )
                            continue
                        # A stored event whose upcast fails is not the record's fault: the
                        # upcasters are broken, and every path (the store's reads too) fails
                        # on it the same way. The error stops the runner, naming the step.
                        events.append(upcasters.upcast(event))
                if offsets:
                    result = runner.apply(projection, events, stop, undecodable=letters)
                    if result is None:
                        break  # stopped while retrying: nothing committed, redelivered later
                    self._commit(consumer, offsets)
                    done.update(offsets)
                if time.monotonic() - last_lag > 2.0:
                    last_lag = time.monotonic()
                    self._report_lag(runner, projection, consumer)
        finally:
            if done and stop.is_set():
                self._commit(consumer, done, wait=True)  # SIGTERM: commit, then leave
            try:
                consumer.close(autocommit=False)
            except Exception:
                log.debug("closing the consumer of %s", projection.name, exc_info=True)

    def _connect(self, projection: Projection, stop: threading.Event) -> KafkaConsumer | None:
        """The projection's consumer, once the broker answers (None if stopped first)."""
        pause = BACKOFF_FIRST
        while not stop.is_set():
            try:
                return self.consumer(projection)
            except KafkaError as error:
                log.warning(
                    "projection %s: cannot reach Kafka at %s (%s); retrying in %.1f s",
                    projection.name,
                    self.bootstrap_servers,
                    error,
                    pause,
                )
                stop.wait(pause)
                pause = min(pause * 2, BACKOFF_MAX)
        return None

    def _poll(
        self,
        consumer: KafkaConsumer,
        listener: _Rebalance,
        handoff: datetime | None,
        batch_size: int,
    ) -> tuple[dict[TopicPartition, list[Any]], dict[TopicPartition, int]]:
        """The next records, and where newly assigned partitions start (see _start_fresh)."""
        polled = consumer.poll(timeout_ms=int(self.poll_timeout * 1000), max_records=batch_size)
        fresh = listener.take_assigned()
        try:
            start = self._start_fresh(consumer, fresh, handoff) if fresh else {}
        except KafkaError:
            listener.put_back(fresh)  # looked at again on the next poll
            raise
        return polled, start

    def _start_fresh(
        self, consumer: KafkaConsumer, fresh: set[TopicPartition], handoff: datetime | None
    ) -> dict[TopicPartition, int]:
        """Seek newly assigned partitions that the group never committed to the hand-off
        time; returns the offsets below which records already polled are dropped."""
        if handoff is None:
            return {}
        assigned = consumer.assignment()
        new = [tp for tp in fresh if tp in assigned and consumer.committed(tp) is None]
        if not new:
            return {}
        at = int(handoff.timestamp() * 1000)
        # The ends first: a partition with no record at or after the hand-off yet starts at
        # its end as it was before the search, so a record arriving in between is read.
        ends = consumer.end_offsets(new)
        found = consumer.offsets_for_times({tp: at for tp in new})
        start: dict[TopicPartition, int] = {}
        for tp in new:
            hit = found.get(tp)
            offset = hit.offset if hit is not None else ends[tp]
            start[tp] = offset
            # Forward only: the poll that brought the assignment may already have fetched
            # records of the partition (from its earliest offset); those at or past the
            # hand-off are applied now, and seeking back to it would deliver them again.
            if offset > consumer.position(tp):
                consumer.seek(tp, offset)
        return start

    @staticmethod
    def _commit(
        consumer: KafkaConsumer, offsets: dict[TopicPartition, int], *, wait: bool = False
    ) -> None:
        """Commit what the last batch applied (its transaction has committed), for the
        partitions still assigned. Without waiting for the broker, except on the way out:
        offsets are hints, so a commit lost in a crash only makes records come again (and
        skipped by their versions), while waiting for each one cost a round trip per batch."""
        assigned = consumer.assignment()
        mine = {
            tp: OffsetAndMetadata(offset + 1, "", -1)
            for tp, offset in offsets.items()
            if tp in assigned
        }
        if not mine:
            return
        try:
            if wait:
                consumer.commit(mine)
            else:
                consumer.commit_async(mine, callback=_committed)
        except KafkaError as error:
            log.warning("offsets not committed (%s); records may be read again", error)

    @staticmethod
    def _report_lag(
        runner: ProjectionRunner, projection: Projection, consumer: KafkaConsumer
    ) -> None:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = consumer.position(tp, timeout_ms=100)
            except KafkaError:
                continue
            if position is not None:
                runner.observer.lag(
                    projection.name, f"{tp.topic}[{tp.partition}]", max(0, high - position), None
                )


def group_lag(bootstrap_servers: str, topic_prefix: str, projection: str) -> dict[str, int]:
    """Per partition (`topic[partition]`), how many records the projection's consumer group
    has not committed yet (a partition it never committed counts from its start)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="eventstore-status")
    try:
        group = group_id(topic_prefix, projection)
        committed = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    if not committed:
        return {}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, client_id="eventstore-status")
    try:
        ends = consumer.end_offsets(list(committed))
        starts = consumer.beginning_offsets(list(committed))
    finally:
        consumer.close()
    lag: dict[str, int] = {}
    for tp, meta in committed.items():
        done = meta.offset if meta.offset >= 0 else starts[tp]
        lag[f"{tp.topic}[{tp.partition}]"] = max(0, ends[tp] - done)
    return lag
