"""The global log's horizon on PostgreSQL, as SQL: the first position the oldest transaction
still running could be writing, so that every position below it is final (see
`migrations/postgres/0001_initial.sql` for why a reader then never skips an event that
commits later). A bound on `position` itself, not on the writing transaction's id: rows
restored from another cluster's dump keep that cluster's ids but get positions below the
horizon once `rebase_positions` has run. And it makes each read an index range scan."""

HORIZON = (
    "((pg_snapshot_xmin(pg_current_snapshot())::text::bigint "
    "+ (SELECT base FROM position_base)) << 16)"
)
