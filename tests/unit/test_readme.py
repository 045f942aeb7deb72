"""The README's Python examples run as written (on the embedded store instead of PostgreSQL;
the replay client's against the test Kafka broker and a replay worker started here)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eventstore import Event, open_store
from tests.conftest import unique_name

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
BROKER = '"127.0.0.1:59092"'


def test_the_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@contextmanager
def replay_worker(bootstrap: str, prefix: str) -> Iterator[None]:
    """A replay worker on an embedded store holding the README's player-7."""
    from eventstore.demo.projections import ALL as PROJECTIONS
    from eventstore.replay import ControlHandler, Reducer, Replayer, ReplayWorker

    players = Reducer("Player", initial={"zone": None})

    @players.on("PlayerMoved")
    def _moved(state: Any, event: Event) -> Any:
        return {"zone": event.payload["to_zone"]}

    stop = threading.Event()
    with open_store(None) as store:
        store.migrate()
        store.append_events(
            [
                Event.new(
                    aggregate_type="Player",
                    aggregate_id="player-7",
                    event_type="PlayerMoved",
                    version=version,
                    payload={"to_zone": zone, "x": 0.0, "y": 0.0},
                    timestamp=datetime(2026, 11, 1, 18, version, tzinfo=UTC),
                )
                for version, zone in enumerate(["forest", "harbor"], start=1)
            ]
        )
        handler = ControlHandler(store, Replayer(store, [players]), projections=PROJECTIONS)
        worker = ReplayWorker(handler, bootstrap_servers=bootstrap, topic_prefix=prefix)
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=30)


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_a_readme_example_runs(
    number: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.chdir(tmp_path)
    code = BLOCKS[number].replace('"postgresql://eventstore@127.0.0.1:55432/eventstore"', "None")
    if BROKER not in code:
        exec(compile(code, f"README block {number}", "exec"), {})  # our own README
        return
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    prefix = unique_name("readme")
    code = code.replace(BROKER, repr(bootstrap)).replace(
        'topic_prefix="game"', f"topic_prefix={prefix!r}"
    )
    with replay_worker(bootstrap, prefix):
        exec(compile(code, f"README block {number}", "exec"), {})
