"""SQL pieces the PostgreSQL modules share.

`HORIZON`: the global log's horizon, the first position the oldest transaction still running
could be writing, so that every position below it is final (see
`migrations/postgres/0001_initial.sql` for why a reader then never skips an event that
commits later). A bound on `position` itself, not on the writing transaction's id: rows
restored from another cluster's dump keep that cluster's ids but get positions below the
horizon once `rebase_positions` has run. And it makes each read an index range scan."""

from psycopg import sql

from eventstore.store._rows import EVENT_COLUMNS

HORIZON = (
    "((pg_snapshot_xmin(pg_current_snapshot())::text::bigint "
    "+ (SELECT base FROM position_base)) << 16)"
)


def event_columns(alias: str | None = None) -> sql.Composed:
    """The columns of a whole event row (`EVENT_COLUMNS`), of table `alias` when given.

    `payload` and `metadata` come as JSON text, decoded by `event_from_row`: faster than
    psycopg's jsonb loader (about 7 us a value saved on this machine's replay benchmark).
    """
    parts: list[sql.Composable] = []
    for name in EVENT_COLUMNS:
        column = sql.Identifier(alias, name) if alias else sql.Identifier(name)
        parts.append(sql.SQL("{}::text").format(column) if name in _AS_TEXT else column)
    return sql.SQL(", ").join(parts)


_AS_TEXT = ("payload", "metadata")
