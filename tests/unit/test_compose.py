"""The Dockerfile, .dockerignore and docker-compose.yml hold together (no Docker needed).

The compose checks read the file with PyYAML (a dev dependency).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer.core
import typer.main
import yaml

from eventstore.cli import app

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "eventstore:local"
APP_SERVICES = ["migrate", "relay", "relay-standby", "projector", "replay-worker", "serve"]
SERVICES = ["postgres", "kafka", *APP_SERVICES]
ENVIRONMENT = {
    "EVENTSTORE_DATABASE_URL": "postgresql://eventstore@postgres:5432/eventstore",
    "EVENTSTORE_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
    "EVENTSTORE_TOPIC_PREFIX": "game",
}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    found = document["services"]
    assert isinstance(found, dict)
    return found


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Service name -> condition, from either form of `depends_on`."""
    entries = service.get("depends_on", {})
    if isinstance(entries, list):
        return dict.fromkeys(entries, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in entries.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in text.splitlines()]
    pairs = [line.split(maxsplit=1) for line in lines if line and not line.startswith("#")]
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


def test_the_documented_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert set(SERVICES) <= set(services)


def test_postgres_and_kafka_stay_as_the_tests_use_them(
    services: dict[str, dict[str, Any]],
) -> None:
    """`docker compose up -d` still starts them, on the ports of scripts/services.sh."""
    assert services["postgres"]["ports"] == ["127.0.0.1:55432:5432"]
    assert services["kafka"]["ports"] == ["127.0.0.1:59092:59092"]
    for name in ("postgres", "kafka"):
        assert "profiles" not in services[name]
        assert "healthcheck" in services[name]


def test_every_dependency_exists_and_waits_for_something_it_can(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition in CONDITIONS, f"{name}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_the_app_services_share_the_built_image(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    assert service["image"] == IMAGE
    assert service["build"] == "."
    assert service["environment"] == ENVIRONMENT


def test_migrate_runs_once_after_postgres(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert depends_on(migrate) == {"postgres": "service_healthy"}


@pytest.mark.parametrize("name", ["relay", "relay-standby", "projector", "replay-worker"])
def test_the_workers_start_after_a_successful_migration(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    dependencies = depends_on(service)
    assert dependencies["migrate"] == "service_completed_successfully"
    assert "kafka" in dependencies
    assert service["restart"] == "unless-stopped"


def test_the_standby_relay_runs_the_same_command(services: dict[str, dict[str, Any]]) -> None:
    assert services["relay"]["command"][0] == "relay"
    assert services["relay-standby"]["command"] == services["relay"]["command"]


def test_the_projector_can_be_scaled_and_stopped(services: dict[str, dict[str, Any]]) -> None:
    projector = services["projector"]
    assert "container_name" not in projector
    assert "ports" not in projector
    assert projector["command"] == [
        "project",
        "eventstore.demo.projections:ALL",
        "--source",
        "kafka",
    ]
    assert projector["stop_signal"] == "SIGTERM"
    assert projector["stop_grace_period"]


def test_the_replay_worker_can_be_scaled_and_stopped(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["replay-worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["command"][0] == "replay-worker"
    assert worker["stop_signal"] == "SIGTERM"
    assert worker["stop_grace_period"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_the_commands_use_real_options(services: dict[str, dict[str, Any]], name: str) -> None:
    command = services[name]["command"]
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    assert command[0] in group.commands, f"the CLI has no `{command[0]}` command"
    params = group.commands[command[0]].params
    options = {opt for param in params for opt in (*param.opts, *param.secondary_opts)}
    for word in command[1:]:
        if word.startswith("--"):
            assert word in options, f"{name}: eventstore {command[0]} has no {word}"


def test_the_image_runs_the_cli_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    assert [args for op, args in instructions if op == "FROM"][-1] == "python:3.11-slim"
    entrypoints = [args for op, args in instructions if op == "ENTRYPOINT"]
    assert json.loads(entrypoints[-1]) == ["eventstore"]
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(op == "WORKDIR" for op, _ in instructions)
    installs = " ".join(args for op, args in instructions if op == "RUN")
    assert "pip install ." in installs
    assert "[dev]" not in installs


def test_the_build_context_leaves_out_local_state() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for entry in (".venv", ".services", ".git", "**/*.db", "**/__pycache__"):
        assert entry in lines


def test_serve_listens_beyond_loopback_only_with_tokens(
    services: dict[str, dict[str, Any]],
) -> None:
    """In a container the API must bind beyond loopback, which `serve` allows only with a
    token on every request; SIGTERM gets longer than its 30 s drain."""
    command = services["serve"]["command"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert "--no-anonymous-reads" in command
    assert services["serve"]["stop_signal"] == "SIGTERM"
    assert services["serve"]["stop_grace_period"] == "45s"
