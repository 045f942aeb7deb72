"""Settings from the environment: the only module that reads it.

Entry points (the CLI, long-running workers) build a `Settings` and pass plain arguments down;
libraries never look at the environment themselves.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """`EVENTSTORE_*` environment variables (and a `.env` file in the working directory)."""

    model_config = SettingsConfigDict(env_prefix="EVENTSTORE_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="postgresql://user@host:port/db or sqlite:///file.db; unset: embedded SQLite",
    )
    database_schema: str | None = Field(
        default=None,
        description="PostgreSQL schema holding the store's tables (default eventstore)",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port]; unset: in-process delivery"
    )
    topic_prefix: str = Field(default="game", description="prefix of every Kafka topic name")
    topic_partitions: int = Field(default=3, ge=1, description="partitions of topics we create")
    topic_replication_factor: int = Field(
        default=1, ge=1, description="replication factor of topics we create"
    )
