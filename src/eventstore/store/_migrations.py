"""The versioned SQL migrations shipped in `store/migrations/<backend>/`, and their planning."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from eventstore.errors import MigrationError

_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql\Z")


@dataclass(frozen=True)
class Migration:
    """One versioned SQL migration shipped in `store/migrations/<backend>/`."""

    version: int
    name: str
    sql: str


def load_migrations(backend: str) -> list[Migration]:
    """The backend's migrations in version order."""
    folder = resources.files("eventstore.store") / "migrations" / backend
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{backend} migrations are not numbered 1..n: {versions}")
    return found


def pending_migrations(backend: str, applied: set[int], where: str) -> list[Migration]:
    """The backend's migrations not applied yet, in order; `MigrationError` when the schema
    is newer than this code knows (a downgrade)."""
    migrations = load_migrations(backend)
    newest = migrations[-1].version
    if applied and max(applied) > newest:
        raise MigrationError(
            f"{where} is at migration {max(applied)}, newer than this code knows ({newest}); "
            "upgrade the eventstore package"
        )
    return [m for m in migrations if m.version not in applied]
