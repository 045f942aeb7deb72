-- Versions are checked against events' own UNIQUE (aggregate_id, version) index: an append
-- probes it for each aggregate's predecessor, and the unique key lets one of two appends of
-- a version win. The `streams` table duplicated that index and cost every append one more
-- page written to the WAL and synced (see bench/RESULTS.md).
DROP TABLE streams;
