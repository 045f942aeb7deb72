-- The event store's tables, in the store's own schema (search_path is set by the store).

-- One row per aggregate: its type and current version. Appends advance it from exactly the
-- version they expect, so two writers of one aggregate cannot both win a version.
CREATE TABLE streams (
    aggregate_id   text PRIMARY KEY,
    aggregate_type text NOT NULL,
    version        bigint NOT NULL CHECK (version >= 1)
);

-- Positions are drawn from this sequence by append_events() only, inside its critical section.
CREATE SEQUENCE position_seq AS bigint START 1;

CREATE TABLE events (
    position       bigint PRIMARY KEY,
    id             text NOT NULL UNIQUE,
    aggregate_id   text NOT NULL,
    aggregate_type text NOT NULL,
    event_type     text NOT NULL,
    version        bigint NOT NULL CHECK (version >= 1),
    schema_version integer NOT NULL CHECK (schema_version >= 1),
    "timestamp"    timestamptz NOT NULL,
    payload        jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    metadata       jsonb NOT NULL CHECK (jsonb_typeof(metadata) = 'object'),
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    -- The writing transaction's id: read_all() returns only rows of finished transactions.
    tx_id          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (aggregate_id, version)
);
CREATE INDEX events_type_position ON events (event_type, position);
CREATE INDEX events_timestamp_position ON events ("timestamp", position);

-- Events are immutable: the database itself refuses to change or remove them.
CREATE FUNCTION reject_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stored events are immutable: % on events is not allowed', TG_OP
        USING ERRCODE = 'ES405',
              HINT = 'append a new event that corrects the earlier one instead';
END
$$;
CREATE TRIGGER events_immutable_rows BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION reject_event_change();
CREATE TRIGGER events_immutable_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION reject_event_change();

-- Events waiting to be published to Kafka, written in the same transaction as the events.
-- The outbox relay deletes a row once the broker has acknowledged its event.
CREATE TABLE outbox (
    position       bigint PRIMARY KEY REFERENCES events (position),
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    enqueued_at    timestamptz NOT NULL DEFAULT now()
);

-- append_events(): the only code that writes events. One call is one transaction (the client
-- runs it as a single autocommit statement), so a batch is stored whole or not at all.
--
-- Why no reader of the global log can miss an event
-- -------------------------------------------------
-- Positions come from a sequence, so they are handed out when a transaction inserts, not when
-- it commits: a transaction holding position 10 may commit after one holding 11. A reader that
-- returned 11 and then resumed "after 11" would never see 10. read_all() therefore returns only
-- rows whose writing transaction id (tx_id) is below the xmin of its snapshot: every
-- transaction below xmin has finished, and every transaction that may still commit has an id
-- >= xmin. That is enough only if transaction-id order and position order agree among
-- writers. They agree because the two are taken together in the short critical section
-- below, under an advisory lock: the transaction's id is assigned (pg_current_xact_id()) and
-- its positions reserved, then the lock is released. A writer that enters the section later
-- gets both a larger id and larger positions. So when read_all() returns a row, every
-- transaction that can still commit has a larger id than that row's, hence larger positions:
-- nothing can later appear below a position a reader has passed.
--
-- The lock is held for two function calls, not until commit: the inserts, the version
-- checks and the commit (with its WAL flush) of concurrent appends still overlap, which is
-- where the time goes. A lock held to commit (LOCK TABLE) would serialise all of that.
-- The cost: a long-running transaction that writes anywhere in the cluster holds back
-- read_all() (not appends) until it ends; readers then lag, they never skip.
--
-- Errors: ES409 = version conflict, DETAIL is JSON {aggregate_id, expected, actual, current,
-- current_type}. A duplicate event id surfaces as a unique violation on events_id_key.
CREATE FUNCTION append_events(
    p_ids text[],
    p_aggregate_ids text[],
    p_aggregate_types text[],
    p_event_types text[],
    p_versions bigint[],
    p_schema_versions integer[],
    p_timestamps timestamptz[],
    p_payloads text[],
    p_metadata text[]
) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
DECLARE
    n integer := cardinality(p_ids);
    first_position bigint;
    stream record;
    changed integer;
    current_version bigint;
    current_type text;
BEGIN
    -- Critical section: id and positions in one order (see above). Nothing in it can fail
    -- short of a cancelled query; the client releases the lock on any error all the same.
    PERFORM pg_advisory_lock(7262298810127731);
    PERFORM pg_current_xact_id();
    first_position := nextval('position_seq');
    IF n > 1 THEN
        PERFORM setval('position_seq', first_position + n - 1);
    END IF;
    PERFORM pg_advisory_unlock(7262298810127731);

    -- Advance every aggregate of the batch from the version the batch expects, in
    -- aggregate-id order so that two batches touching the same aggregates cannot deadlock.
    FOR stream IN
        SELECT b.aggregate_id, min(b.aggregate_type) AS aggregate_type,
               min(b.version) AS first_version, max(b.version) AS last_version
        FROM unnest(p_aggregate_ids, p_aggregate_types, p_versions)
             AS b(aggregate_id, aggregate_type, version)
        GROUP BY b.aggregate_id
        ORDER BY b.aggregate_id
    LOOP
        IF stream.first_version = 1 THEN
            INSERT INTO streams (aggregate_id, aggregate_type, version)
            VALUES (stream.aggregate_id, stream.aggregate_type, stream.last_version)
            ON CONFLICT (aggregate_id) DO NOTHING;
        ELSE
            UPDATE streams SET version = stream.last_version
            WHERE aggregate_id = stream.aggregate_id
              AND version = stream.first_version - 1
              AND aggregate_type = stream.aggregate_type;
        END IF;
        GET DIAGNOSTICS changed = ROW_COUNT;
        IF changed = 0 THEN
            SELECT s.version, s.aggregate_type INTO current_version, current_type
            FROM streams s WHERE s.aggregate_id = stream.aggregate_id;
            RAISE EXCEPTION 'version conflict on aggregate %', stream.aggregate_id
                USING ERRCODE = 'ES409',
                      DETAIL = json_build_object(
                          'aggregate_id', stream.aggregate_id,
                          'expected', coalesce(current_version, 0) + 1,
                          'actual', stream.first_version,
                          'current_type', current_type)::text;
        END IF;
    END LOOP;

    INSERT INTO events (position, id, aggregate_id, aggregate_type, event_type, version,
                        schema_version, "timestamp", payload, metadata)
    SELECT first_position + e.ord - 1, e.id, e.aggregate_id, e.aggregate_type, e.event_type,
           e.version, e.schema_version, e.ts, e.payload::jsonb, e.metadata::jsonb
    FROM unnest(p_ids, p_aggregate_ids, p_aggregate_types, p_event_types, p_versions,
                p_schema_versions, p_timestamps, p_payloads, p_metadata)
         WITH ORDINALITY AS e(id, aggregate_id, aggregate_type, event_type, version,
                              schema_version, ts, payload, metadata, ord);

    INSERT INTO outbox (position, aggregate_type, aggregate_id)
    SELECT first_position + e.ord - 1, e.aggregate_type, e.aggregate_id
    FROM unnest(p_aggregate_types, p_aggregate_ids)
         WITH ORDINALITY AS e(aggregate_type, aggregate_id, ord);

    RETURN QUERY SELECT generate_series(first_position, first_position + n - 1);
END
$$;
