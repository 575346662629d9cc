-- 0004: counting jobs from one index (see schema/sqlite/0004_jobs_counts_index.sql): docqa
-- status and the progress line read state, model_id and attempts of every job; with this index
-- PostgreSQL can answer them with an index-only scan instead of reading every row.

CREATE INDEX jobs_state_counts ON jobs (state, model_id, attempts);
DROP INDEX jobs_state;
