-- 0011: a job may be cancelled (`docqa cancel`).
--
-- Withdrawn work was deleted by hand before, its errors with it. A cancelled job keeps its row,
-- its errors and its history; it is no failure (not failed, not dead, no reason in `docqa
-- status`), no worker claims it, and `docqa requeue --cancelled` queues it again. A job that
-- already has an answer (requeued by `requeue --approximate`) is not cancelled: it goes back to
-- done with that answer. A running job's worker goes on; its answer, if it comes, is kept and
-- the job is done (the late-answer rule of jobs/queue.h: an answer nobody else gave is never
-- thrown away).
--
-- SQLite cannot change a CHECK constraint: the table is rebuilt as 0006 rebuilt documents (the
-- migration runs with foreign keys off and checks them before it commits; the legacy rename
-- leaves the views and the other tables' references naming `jobs`). Its indexes are made again
-- here; users' own indexes and triggers on jobs are made again by the migration runner.
--
-- v_progress gets `cancelled`, a new last column; `percent_done` is of the jobs not cancelled
-- (NULL when every job of the row is), so that a question whose rest was withdrawn reads 100.0
-- once the rest is answered. total = queued + running + stalled + done + failed + dead +
-- cancelled.

CREATE TABLE jobs_new (
    id                  INTEGER PRIMARY KEY,
    page_id             INTEGER NOT NULL REFERENCES pages (id) ON DELETE CASCADE,
    question_id         INTEGER NOT NULL REFERENCES questions (id),
    model_id            TEXT    NOT NULL,
    generation_settings TEXT    NOT NULL,
    job_key             TEXT    NOT NULL UNIQUE,
    state               TEXT    NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'running', 'done', 'failed', 'dead',
                                         'cancelled')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    not_before_ms       INTEGER NOT NULL DEFAULT 0,
    lease_owner         TEXT,
    lease_expires_ms    INTEGER,
    last_error          TEXT,
    created_at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at         TEXT,                         -- done, failed, dead or cancelled
    CHECK ((state = 'running') = (lease_owner IS NOT NULL))
) STRICT;
INSERT INTO jobs_new (id, page_id, question_id, model_id, generation_settings, job_key, state,
                      attempts, max_attempts, not_before_ms, lease_owner, lease_expires_ms,
                      last_error, created_at, finished_at)
SELECT id, page_id, question_id, model_id, generation_settings, job_key, state, attempts,
       max_attempts, not_before_ms, lease_owner, lease_expires_ms, last_error, created_at,
       finished_at
FROM jobs;
DROP TABLE jobs;
PRAGMA legacy_alter_table = ON;
ALTER TABLE jobs_new RENAME TO jobs;
PRAGMA legacy_alter_table = OFF;
CREATE INDEX jobs_ready ON jobs (model_id, id) WHERE state = 'queued';
CREATE INDEX jobs_leased ON jobs (lease_expires_ms) WHERE state = 'running';
CREATE INDEX jobs_page ON jobs (page_id);
CREATE INDEX jobs_state_counts ON jobs (state, model_id, attempts);

DROP VIEW IF EXISTS v_progress;
CREATE VIEW v_progress AS
SELECT q.text                                   AS question,
       j.model_id                               AS model,
       count(*)                                 AS total,
       sum(j.state = 'queued')                  AS queued,
       sum(j.state = 'running' AND j.lease_expires_ms >=
           CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)) AS running,
       sum(j.state = 'done')                    AS done,
       sum(j.state = 'failed')                  AS failed,
       sum(j.state = 'dead')                    AS dead,
       sum(j.state = 'queued' AND j.attempts > 0) AS retrying,
       round(100.0 * sum(j.state = 'done') / nullif(sum(j.state <> 'cancelled'), 0), 1)
                                                AS percent_done,
       min(j.created_at)                        AS asked_at,
       max(j.finished_at)                       AS last_finished_at,
       sum(j.state = 'running' AND j.lease_expires_ms <
           CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)) AS stalled,
       sum(j.state = 'cancelled')               AS cancelled
FROM jobs j
JOIN questions q ON q.id = j.question_id
GROUP BY j.question_id, j.model_id
ORDER BY j.question_id, j.model_id;
