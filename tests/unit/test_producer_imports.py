"""`import eventstore` stays light (DESIGN section 8): Kafka's client loads only when used."""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_importing_eventstore_loads_neither_kafka_nor_prometheus() -> None:
    run(
        "import sys, eventstore, eventstore.producer\n"
        "from eventstore import EventProducer, OutboxRelay, RelaySettings\n"
        "loaded = sorted(m for m in ('kafka', 'prometheus_client') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )


def test_the_kafka_names_still_import_from_the_top_and_the_producer_package() -> None:
    run(
        "import sys\n"
        "from eventstore import KafkaPublisher\n"
        "from eventstore.producer import KafkaPublisher as Same, RelayMetrics\n"
        "from eventstore.producer._kafka import KafkaPublisher as Original\n"
        "assert KafkaPublisher is Same is Original and 'kafka' in sys.modules\n"
        "import eventstore, eventstore.producer\n"
        "assert 'KafkaPublisher' in dir(eventstore)\n"
        "assert 'RelayMetrics' in dir(eventstore.producer)\n"
        "from eventstore import *\n"
        "from eventstore.producer import *\n"
    )


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    run(
        "import eventstore, eventstore.producer\n"
        "for module in (eventstore, eventstore.producer):\n"
        "    try:\n"
        "        module.NoSuchThing\n"
        "    except AttributeError as error:\n"
        "        assert 'NoSuchThing' in str(error)\n"
        "    else:\n"
        "        raise AssertionError('no AttributeError')\n"
    )
