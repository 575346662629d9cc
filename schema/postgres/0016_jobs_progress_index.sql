-- 0016: v_progress without visiting every job's row (see schema/sqlite/0016_jobs_progress_index.sql):
-- an index holding every column the view reads, in its GROUP BY order, lets PostgreSQL answer it
-- with an index-only scan once the table is vacuumed. Its first column serves what
-- jobs_question served, so that index goes.

CREATE INDEX jobs_progress ON jobs (question_id, model_id, state, attempts, lease_expires_ms,
                                    created_at, finished_at);
DROP INDEX jobs_question;
