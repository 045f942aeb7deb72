"""`eventstore project` and `eventstore projections ...` as a user types them, on the
embedded store: a projection that fails is parked, listed, fixed and retried; a rebuild
switches generations; scripts get JSON; mistakes get one `error:` line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.test_cli import run

FLAKY = """
import os
from eventstore.consumers import Projection

zones = Projection("zones", aggregate_types=["Player"])

@zones.on("PlayerMoved")
def moved(event, documents):
    if os.environ.get("BREAK") and event.aggregate_id == "p-2" and event.version == 2:
        raise ValueError("no zone in this payload")
    documents.put(event.aggregate_id, {"zone": event.payload["zone"], "v": event.version})

ALL = [zones]
"""


@pytest.fixture
def world(tmp_path: Path) -> Path:
    (tmp_path / "flaky.py").write_text(FLAKY)
    lines = [
        json.dumps(
            {
                "event_type": "PlayerMoved",
                "aggregate_id": f"p-{n}",
                "aggregate_type": "Player",
                "version": v,
                "payload": {"zone": f"z{v}"},
            }
        )
        for v in (1, 2, 3)
        for n in (1, 2, 3)
    ]
    assert run(tmp_path, "migrate").returncode == 0
    result = run(tmp_path, "append", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    return tmp_path


def env(**extra: str) -> dict[str, str]:
    return {"PYTHONPATH": ".", **extra}


def test_park_list_fix_retry(world: Path) -> None:
    result = run(world, "project", "flaky:ALL", "--once", env=env(BREAK="1"))
    assert result.returncode == 0, result.stderr
    parked = run(world, "projections", "parked", "zones", "--json", env=env())
    (entry,) = json.loads(parked.stdout)
    assert (entry["aggregate_id"], entry["version"], entry["waiting_up_to"]) == ("p-2", 2, 3)
    assert entry["error_type"] == "ValueError" and "no zone" in entry["message"]
    status = json.loads(run(world, "projections", "status", "--json", env=env()).stdout)
    assert [(s["name"], s["parked"], s["lag_events"], s["documents"]) for s in status] == [
        ("zones", 1, 0, 3)
    ]
    shown = run(world, "projections", "show", "zones", "--key", "p-2", env=env())
    assert json.loads(shown.stdout)["document"] == {"zone": "z1", "v": 1}
    still = run(
        world, "projections", "retry", "zones", "--projections", "flaky:ALL", env=env(BREAK="1")
    )
    assert still.returncode == 1 and "parked again at version 2" in still.stdout
    fixed = run(world, "projections", "retry", "zones", "--projections", "flaky:ALL", env=env())
    assert fixed.returncode == 0 and "p-2: 2 events applied" in fixed.stdout
    shown = run(world, "projections", "show", "zones", "--find", "zone=z3", env=env())
    assert [json.loads(line)["key"] for line in shown.stdout.splitlines()] == ["p-1", "p-2", "p-3"]


def test_rebuild_switches_generation(world: Path) -> None:
    assert run(world, "project", "flaky:ALL", "--once", env=env()).returncode == 0
    rebuilt = run(world, "projections", "rebuild", "zones", "--projections", "flaky:ALL", env=env())
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "generation 2 is active (3 documents, 0 parked)" in rebuilt.stdout
    listed = json.loads(run(world, "projections", "list", "--json", env=env()).stdout)
    assert listed == [{"name": "zones", "generation": 2, "version": 1, "rebuilding": None}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["project", "nowhere:ALL", "--once"], "cannot import 'nowhere'"),
        (["project", "flaky", "--once"], "use module:attribute"),
        (["project", "flaky:MISSING", "--once"], "has no attribute 'MISSING'"),
        (["project", "flaky:ALL", "--source", "carrier-pigeon"], "--source is store or kafka"),
        (["project", "flaky:ALL", "--source", "kafka"], "no Kafka bootstrap servers"),
        (["projections", "parked", "ghost"], "no projection named 'ghost'"),
        (["projections", "retry", "ghost", "--projections", "flaky:ALL"], "no projection named"),
        (["projections", "status", "ghost"], "no projection named 'ghost'"),
    ],
)
def test_mistakes_get_one_clear_line(world: Path, args: list[str], message: str) -> None:
    result = run(world, *args, env=env())
    assert result.returncode in (1, 2)
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr
