"""`eventstore`: the command line of the event store, one module per command group.

Options come from flags first, then from `EVENTSTORE_*` environment variables (read through
`Settings`, at the entry point only). Every failure the user can fix prints one line starting
with `error:` and exits non-zero (2 for configuration, 1 otherwise); no traceback.
"""

# Each command module registers its commands on the shared app when imported, in the order
# `eventstore --help` lists them.
# isort: off
from eventstore.cli import store, status, demo, relay, projections, replay, web  # noqa: F401

# isort: on
from eventstore.cli._app import app, main

__all__ = ["app", "main"]
