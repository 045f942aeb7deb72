"""The `eventstore` command, run as a user runs it (a subprocess), on the embedded store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(
    cwd: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "eventstore.cli", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def line(aggregate: str, version: int, **extra: object) -> str:
    return json.dumps(
        {
            "event_type": "PlayerMoved",
            "aggregate_id": aggregate,
            "aggregate_type": "Player",
            "version": version,
            "payload": {"x": version},
            **extra,
        }
    )


def test_migrate_append_query_and_tail_on_the_embedded_default(tmp_path: Path) -> None:
    assert "applied 0001_initial.sql" in run(tmp_path, "migrate").stdout
    assert "up to date" in run(tmp_path, "migrate").stdout
    assert (tmp_path / "eventstore.db").exists()

    stdin = "\n".join([line("p1", 1), line("p1", 2), "", line("p2", 1)]) + "\n"
    appended = run(tmp_path, "append", "--json", stdin=stdin)
    assert appended.returncode == 0, appended.stderr
    assert json.loads(appended.stdout)["positions"] == [1, 2, 3]

    queried = run(tmp_path, "events", "--aggregate", "p1", "--json")
    assert [json.loads(x)["version"] for x in queried.stdout.splitlines()] == [1, 2]
    by_type = run(tmp_path, "events", "--type", "PlayerMoved", "--json")
    assert len(by_type.stdout.splitlines()) == 3
    tailed = run(tmp_path, "tail", "--after", "1")
    assert [x.split()[0] for x in tailed.stdout.splitlines()] == ["2", "3"]


def test_a_file_is_validated_whole_before_anything_is_stored(tmp_path: Path) -> None:
    run(tmp_path, "migrate")
    source = tmp_path / "events.jsonl"
    source.write_text(line("p1", 1) + "\n" + line("p1", 2, event_type="Not Valid") + "\n")
    failed = run(tmp_path, "append", str(source))
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        "error: invalid event: events.jsonl:2: event_type: 'Not Valid' is not an identifier "
        "(letters, digits and '_', not starting with a digit)"
    ]
    assert run(tmp_path, "events", "--json").stdout == ""


def test_resending_a_file_after_a_conflict_is_safe(tmp_path: Path) -> None:
    run(tmp_path, "migrate")
    source = tmp_path / "events.jsonl"
    ids = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(3)]
    stamp = "2026-01-01T00:00:00+00:00"
    source.write_text(
        "\n".join(line("p", v + 1, id=ids[v], timestamp=stamp) for v in range(3)) + "\n"
    )
    assert run(tmp_path, "append", "--batch-size", "2", str(source)).returncode == 0
    again = run(tmp_path, "append", "--batch-size", "2", str(source), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["positions"] == [1, 2, 3]
    conflict = run(tmp_path, "append", stdin=line("p", 2) + "\n")
    assert conflict.returncode == 1
    assert "next event must have version 4" in conflict.stderr


@pytest.mark.parametrize(
    ("args", "env", "message", "code"),
    [
        (["migrate"], {"EVENTSTORE_DATABASE_URL": "mysql://db/game"}, "unsupported store URL", 2),
        (["--database-url", "sqlite://host/x.db", "migrate"], {}, "has a host part", 2),
        (
            ["--database-url", "postgresql://nobody@127.0.0.1:1/game", "migrate"],
            {},
            "PostgreSQL at 127.0.0.1:1/game is unavailable",
            1,
        ),
        (["events"], {}, "run `eventstore migrate`", 1),
        (["events", "--since", "yesterday"], {}, "--since 'yesterday' is not an ISO 8601 time", 2),
        (["append", "missing.jsonl"], {}, "no such file: missing.jsonl", 2),
    ],
)
def test_failures_are_one_clear_line(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str, code: int
) -> None:
    result = run(tmp_path, *args, env=env)
    assert result.returncode == code
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_the_demo_runs_with_no_configuration(tmp_path: Path) -> None:
    result = run(tmp_path, "demo", "--players", "40", "--items", "15", "--ticks", "8")
    assert result.returncode == 0, result.stderr
    assert "rebuilt from their events" in result.stdout
    assert "PlayerJoined" in result.stdout
    # Its projections were built from the global log and checked against the events.
    checked = "40 player positions, 6 zone populations and 15 item locations equal"
    assert checked in " ".join(result.stdout.split())
    # It travelled in time: a player at three moments, and the world at a past position.
    assert "at three moments of the game" in " ".join(result.stdout.split())
    assert "40 players rebuilt in" in " ".join(result.stdout.split())
    second = run(tmp_path, "demo", "--players", "5", "--ticks", "2")
    assert second.returncode == 0, second.stderr
    assert "5 player positions" in second.stdout  # a second world, on the same read models
    # The world view is of the second world only (its id prefix), not of every world stored.
    assert "5 players rebuilt in" in " ".join(second.stdout.split())
