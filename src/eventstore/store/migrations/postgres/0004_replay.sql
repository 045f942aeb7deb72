-- Replay: snapshots of aggregate state (a cache), the aggregates index for paging through
-- the world, and the record of control requests that must not run twice.

-- Snapshots are never events: they live here, not in `events`, so they never reach the
-- outbox or Kafka, and deleting them changes no result. `state` is kept as the writer's
-- JSON text (jsonb would reorder it), and `digest` covers it and the columns that say which
-- code made it, so that a damaged row is recognised and ignored.
CREATE TABLE snapshots (
    aggregate_id    text NOT NULL,
    version         bigint NOT NULL CHECK (version >= 1),
    aggregate_type  text NOT NULL,
    position        bigint NOT NULL,
    "timestamp"     timestamptz NOT NULL,
    max_timestamp   timestamptz NOT NULL,
    reducer_version integer NOT NULL,
    fingerprint     text NOT NULL,
    state           text NOT NULL,
    digest          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_id, version)
);
CREATE INDEX snapshots_type ON snapshots (aggregate_type);

-- Every aggregate once, by type and id: an index of first events only, so an append pays
-- for it once per aggregate, not once per event. `list_aggregates` pages through it. In
-- code-point order ("C"), as SQLite compares text, so that paging and id prefixes behave
-- the same on both backends whatever the database's collation.
CREATE INDEX events_aggregates ON events (aggregate_type COLLATE "C", aggregate_id COLLATE "C")
    WHERE version = 1;

-- Control requests with lasting effects (rebuilds): claimed by a worker when started, the
-- reply kept when finished, so that a request Kafka delivers again is answered, not run
-- again. A claim older than the claim timeout, never finished, is taken over (its worker
-- died); only the claimer stores the reply.
CREATE TABLE control_requests (
    request_id  text PRIMARY KEY,
    kind        text NOT NULL,
    claimed_by  text NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    reply       text,
    finished_at timestamptz
);
