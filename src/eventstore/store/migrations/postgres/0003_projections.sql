-- Read models of projections and their bookkeeping.
--
-- A projection's read model lives in generations: the active one serves readers and live
-- runners; a rebuild builds the next one beside it and switches readers to it in one
-- transaction (the `projections` row, locked FOR SHARE by every batch and FOR UPDATE by the
-- switch, is the fence). Checkpoints hold, per generation and aggregate, the last version
-- applied: they change in the same transaction as the documents, which is what makes each
-- event change a read model exactly once.

CREATE TABLE projections (
    name                text PRIMARY KEY,
    active_generation   integer NOT NULL,
    active_version      integer NOT NULL,
    building_generation integer,
    building_version    integer,
    last_generation     integer NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- What batches update (positions, counters) lives apart from the fence row above: an UPDATE
-- of a row that concurrent batches hold FOR SHARE would deadlock them with each other.
CREATE TABLE projection_positions (
    projection text NOT NULL,
    generation integer NOT NULL,
    position   bigint NOT NULL,
    PRIMARY KEY (projection, generation)
);

CREATE TABLE projection_stats (
    projection    text PRIMARY KEY,
    handoff_at    timestamptz,
    dead_lettered bigint NOT NULL DEFAULT 0,
    last_error    text,
    last_error_at timestamptz
);

CREATE TABLE projection_checkpoints (
    projection   text NOT NULL,
    generation   integer NOT NULL,
    aggregate_id text NOT NULL,
    version      integer NOT NULL,
    position     bigint NOT NULL,
    PRIMARY KEY (projection, generation, aggregate_id)
);

CREATE TABLE projection_documents (
    projection text NOT NULL,
    generation integer NOT NULL,
    key        text NOT NULL,
    doc        jsonb NOT NULL,
    PRIMARY KEY (projection, generation, key)
);
-- find(field, value) is a containment test (doc @> {"field": value}).
CREATE INDEX projection_documents_doc ON projection_documents USING gin (doc jsonb_path_ops);

CREATE TABLE projection_failures (
    projection   text NOT NULL,
    generation   integer NOT NULL,
    aggregate_id text NOT NULL,
    version      integer NOT NULL,
    event_id     text NOT NULL,
    position     bigint NOT NULL,
    event_type   text NOT NULL,
    policy       text NOT NULL CHECK (policy IN ('park', 'skip')),
    error_type   text NOT NULL,
    message      text NOT NULL,
    failed_at    timestamptz NOT NULL DEFAULT now(),
    held_version integer NOT NULL,
    PRIMARY KEY (projection, generation, aggregate_id, version)
);
CREATE INDEX projection_failures_parked ON projection_failures (projection, generation, aggregate_id)
    WHERE policy = 'park';
