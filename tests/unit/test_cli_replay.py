"""`eventstore replay`, `world` and `snapshots` on the embedded default, as a user types them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eventstore import open_store
from eventstore.demo.world import World, player_state
from tests.unit.test_cli import run


@pytest.fixture
def world(tmp_path: Path) -> World:
    """A small demo world in the embedded default file of `tmp_path`."""
    played = World("w", players=6, items=4, seed=3)
    with open_store(f"sqlite:///{tmp_path / 'eventstore.db'}") as store:
        store.migrate()
        store.append_events(played.genesis())
        for _ in range(40):
            store.append_events(played.tick())
    return played


def events_of(tmp_path: Path, aggregate_id: str) -> list[dict[str, object]]:
    with open_store(f"sqlite:///{tmp_path / 'eventstore.db'}") as store:
        return [e.to_dict() for e in store.get_events_by_aggregate(aggregate_id)]


def test_replay_prints_the_state_at_each_kind_of_target(tmp_path: Path, world: World) -> None:
    player = world.players[0].id
    with open_store(f"sqlite:///{tmp_path / 'eventstore.db'}") as store:
        history = list(store.get_events_by_aggregate(player))
    latest = run(tmp_path, "replay", player, "--json")
    assert latest.returncode == 0, latest.stderr
    found = json.loads(latest.stdout)
    assert found["state"] == player_state(history)
    assert found["version"] == len(history) and found["target"] == "latest"

    third = json.loads(run(tmp_path, "replay", player, "--version", "3", "--json").stdout)
    assert third["state"] == player_state(history[:3])
    middle = history[len(history) // 2]
    by_position = run(tmp_path, "replay", player, "--position", str(middle.position), "--json")
    assert json.loads(by_position.stdout)["version"] == middle.version
    by_time = run(tmp_path, "replay", player, "--at", middle.timestamp.isoformat(), "--json")
    assert json.loads(by_time.stdout)["version"] >= middle.version

    shown = run(tmp_path, "replay", player, "--version", "2", "--history")
    assert shown.returncode == 0, shown.stderr
    assert "PlayerJoined" in shown.stdout and "~ /version: 1 -> 2" in shown.stdout
    assert f"Player {player} at version 2" in " ".join(shown.stdout.split())


def test_replay_errors_are_one_clear_line(tmp_path: Path, world: World) -> None:
    player = world.players[0].id
    unknown = run(tmp_path, "replay", "nobody")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: no events of aggregate 'nobody'")
    beyond = run(tmp_path, "replay", player, "--version", "100000")
    assert beyond.returncode == 1 and "ask for a version from 0 to" in beyond.stderr
    both = run(tmp_path, "replay", player, "--version", "1", "--position", "1")
    assert both.returncode == 2 and "give one of --at, --version and --position" in both.stderr
    no_kafka = run(tmp_path, "replay", player, "--via-kafka")
    assert no_kafka.returncode == 2 and "EVENTSTORE_KAFKA_BOOTSTRAP_SERVERS" in no_kafka.stderr
    bad_spec = run(tmp_path, "replay", player, "--reducers", "nowhere")
    assert bad_spec.returncode == 2 and "module:attribute" in bad_spec.stderr
    assert "Traceback" not in unknown.stderr + beyond.stderr + bad_spec.stderr


def test_world_lists_every_aggregate_at_a_position(tmp_path: Path, world: World) -> None:
    first_items = events_of(tmp_path, world.items[0].id)
    cut = int(str(first_items[0]["position"]))
    listed = run(tmp_path, "world", "--position", str(cut), "--json", "--limit", "100")
    assert listed.returncode == 0, listed.stderr
    found = [json.loads(line) for line in listed.stdout.splitlines()]
    # The genesis batch: the world, then players, then items, in one batch; at the first
    # item's position every player has joined and only that item exists.
    assert [f["aggregate_type"] for f in found].count("Player") == len(world.players)
    assert [f["aggregate_id"] for f in found if f["aggregate_type"] == "Item"] == [
        world.items[0].id
    ]
    assert all(f["version"] == 1 for f in found if f["aggregate_type"] == "Player")
    players = run(tmp_path, "world", "--type", "Player", "--prefix", "w-player-1", "--json")
    assert [json.loads(x)["aggregate_id"] for x in players.stdout.splitlines()] == ["w-player-1"]


def test_deleting_snapshots_changes_no_result(tmp_path: Path) -> None:
    played = World("s", players=1, items=0, seed=1)
    with open_store(f"sqlite:///{tmp_path / 'eventstore.db'}") as store:
        store.migrate()
        store.append_events(played.genesis())
        for _ in range(250):  # one player acts in every tick: over 200 versions
            store.append_events(played.tick())
    player = played.players[0].id
    before = json.loads(run(tmp_path, "replay", player, "--json").stdout)
    assert run(tmp_path, "snapshots", "count").stdout.strip() == "2"  # at versions 100, 200
    again = json.loads(run(tmp_path, "replay", player, "--json").stdout)
    assert again["snapshot_version"] == 200 and again["state"] == before["state"]
    deleted = run(tmp_path, "snapshots", "delete")
    assert deleted.returncode == 0 and "deleted 2 snapshots" in deleted.stdout
    after = json.loads(run(tmp_path, "replay", player, "--no-snapshots", "--json").stdout)
    assert after["state"] == before["state"] and after["snapshot_version"] is None
