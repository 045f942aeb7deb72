"""In-process delivery on every backend: a tail sees every published event once, in order."""

from __future__ import annotations

import threading

from eventstore import Event, EventStore
from eventstore.consumers import StoreTail
from eventstore.producer import EventProducer
from tests.helpers import event


def test_a_tail_follows_every_published_event_in_order(store: EventStore) -> None:
    store.append_event(event("before", 1))
    tail = StoreTail(
        store, after=store.read_all(0, 1)[0].position or 0, batch_size=7, poll_interval=0.01
    )
    seen: list[Event] = []
    stop = threading.Event()
    total = 4 * 60

    def consume() -> None:
        for e in tail.follow(stop):
            seen.append(e)
            if len(seen) == total:
                stop.set()

    reader = threading.Thread(target=consume)
    reader.start()
    with EventProducer(store) as producer:

        def write(worker: int) -> None:
            for version in range(1, 61):
                producer.publish(event(f"w{worker}", version))

        writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
    reader.join(timeout=60)
    assert not reader.is_alive(), f"the tail saw only {len(seen)} of {total} events"
    assert len({e.id for e in seen}) == total and "before" not in {e.aggregate_id for e in seen}
    positions = [e.position or 0 for e in seen]
    assert positions == sorted(positions)
    for worker in range(4):
        assert [e.version for e in seen if e.aggregate_id == f"w{worker}"] == list(range(1, 61))
    assert tail.position == positions[-1]
