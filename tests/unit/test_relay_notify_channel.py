"""The NOTIFY channel that wakes relays: one per schema, always within PostgreSQL's limit."""

from __future__ import annotations

import pytest

from eventstore.store._pg_lease import lease_connection_options, notify_channel


@pytest.mark.parametrize("schema", ["eventstore", "t", "x" * 63, "é" * 31, "Schéma Mixte" * 5])
def test_a_channel_name_fits_in_63_bytes(schema: str) -> None:
    channel = notify_channel(schema)
    assert len(channel.encode()) <= 63
    assert channel.startswith("eventstore_outbox_")
    assert schema.startswith(channel.removeprefix("eventstore_outbox_").rsplit("_", 1)[0])


def test_schemas_that_share_a_long_prefix_get_channels_of_their_own() -> None:
    names = [("s" * 62) + suffix for suffix in "ab"] + ["s" * 63, "s" * 40]
    assert len({notify_channel(n) for n in names}) == len(names)
    assert notify_channel("eventstore") == notify_channel("eventstore"), "stable"


def test_the_lease_session_adds_keepalives_to_the_urls_own_options() -> None:
    options = lease_connection_options(
        "postgresql://u@h/db?options=-c%20statement_timeout%3D5000&keepalives_idle=99"
    )
    assert options["keepalives"] == 1 and options["keepalives_idle"] == 10
    assert options["options"].startswith("-c statement_timeout=5000 -c tcp_keepalives_idle=10")
