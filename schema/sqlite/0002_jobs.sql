-- 0002: questions, the job queue, answers, and the views users query.
--
-- One job is one (page, question) to be answered by one model with one set of generation
-- settings. Its life cycle (states, leases, who writes what, why it survives a crash) is
-- documented at the top of jobs/queue.h; every statement that touches these tables lives in
-- store/store_jobs.c.
--
-- Times: *_ms columns are Unix milliseconds (leases and backoff are compared with the worker's
-- clock); *_at columns are ISO-8601 UTC text for people and for sorting.

CREATE TABLE questions (
    id         INTEGER PRIMARY KEY,
    text       TEXT    NOT NULL UNIQUE,
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE jobs (
    id                  INTEGER PRIMARY KEY,
    page_id             INTEGER NOT NULL REFERENCES pages (id) ON DELETE CASCADE,
    question_id         INTEGER NOT NULL REFERENCES questions (id),
    model_id            TEXT    NOT NULL,          -- e.g. 'SmolVLM-256M-Instruct'
    generation_settings TEXT    NOT NULL,          -- canonical JSON: prompt, max_new_tokens, greedy
    -- Idempotency: hex SHA-256 over (document sha256, page number, question text, model id,
    -- render settings, generation settings). Asking the same thing twice adds nothing, even for
    -- a second copy of the same file at another path.
    job_key             TEXT    NOT NULL UNIQUE,
    state               TEXT    NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'running', 'done', 'failed', 'dead')),
    attempts            INTEGER NOT NULL DEFAULT 0,   -- claims so far (a crash counts)
    max_attempts        INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    not_before_ms       INTEGER NOT NULL DEFAULT 0,   -- retry backoff: not claimable before this
    lease_owner         TEXT,                         -- worker id while running, else NULL
    lease_expires_ms    INTEGER,                      -- reclaimable by anyone after this
    last_error          TEXT,                         -- newest of job_errors, for quick reading
    created_at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at         TEXT,                         -- done, failed or dead
    CHECK ((state = 'running') = (lease_owner IS NOT NULL))
) STRICT;
-- The claim walks these two partial indexes only: ready jobs in id order, and expired leases.
CREATE INDEX jobs_ready ON jobs (model_id, id) WHERE state = 'queued';
CREATE INDEX jobs_leased ON jobs (lease_expires_ms) WHERE state = 'running';
CREATE INDEX jobs_page ON jobs (page_id);
CREATE INDEX jobs_state ON jobs (state);

-- Every failure of every attempt, kept for good (a retried job that later succeeds keeps them).
CREATE TABLE job_errors (
    id        INTEGER PRIMARY KEY,
    job_id    INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt   INTEGER NOT NULL,
    worker    TEXT,
    kind      TEXT    NOT NULL,   -- 'page_image', 'model', 'lease_expired', 'cancelled', ...
    message   TEXT    NOT NULL,
    at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
CREATE INDEX job_errors_job ON job_errors (job_id);

-- At most one answer per job: the UNIQUE constraint is the last line of defence behind the
-- lease guard (see jobs/queue.h).
CREATE TABLE answers (
    id                  INTEGER PRIMARY KEY,
    job_id              INTEGER NOT NULL UNIQUE REFERENCES jobs (id) ON DELETE CASCADE,
    text                TEXT    NOT NULL,
    prompt_tokens       INTEGER NOT NULL,   -- input ids, image tokens included
    generated_tokens    INTEGER NOT NULL,
    model_id            TEXT    NOT NULL,
    generation_settings TEXT    NOT NULL,
    worker              TEXT    NOT NULL,
    started_at          TEXT    NOT NULL,
    finished_at         TEXT    NOT NULL,
    ms_image            REAL,               -- decode + image processor
    ms_vision           REAL,               -- vision encoder + connector
    ms_prefill          REAL,
    ms_decode           REAL,
    ms_total            REAL
) STRICT;
CREATE INDEX answers_finished ON answers (finished_at);

-- One row per answer, with what a person wants to read next to it.
CREATE VIEW v_answers AS
SELECT d.path          AS document_path,
       p.page_number   AS page,
       q.text          AS question,
       a.text          AS answer,
       a.model_id      AS model,
       a.finished_at   AS finished_at,
       d.id            AS document_id,
       d.sha256        AS document_sha256,
       p.id            AS page_id,
       j.id            AS job_id,
       a.generated_tokens,
       a.ms_total
FROM answers a
JOIN jobs j      ON j.id = a.job_id
JOIN pages p     ON p.id = j.page_id
JOIN documents d ON d.id = p.document_id
JOIN questions q ON q.id = j.question_id;

-- Progress per (question, model): how many jobs are in each state.
CREATE VIEW v_progress AS
SELECT q.text                                   AS question,
       j.model_id                               AS model,
       count(*)                                 AS total,
       sum(j.state = 'queued')                  AS queued,
       sum(j.state = 'running')                 AS running,
       sum(j.state = 'done')                    AS done,
       sum(j.state = 'failed')                  AS failed,
       sum(j.state = 'dead')                    AS dead,
       sum(j.state = 'queued' AND j.attempts > 0) AS retrying,
       round(100.0 * sum(j.state = 'done') / count(*), 1) AS percent_done,
       min(j.created_at)                        AS asked_at,
       max(j.finished_at)                       AS last_finished_at
FROM jobs j
JOIN questions q ON q.id = j.question_id
GROUP BY j.question_id, j.model_id;
