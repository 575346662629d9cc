-- 0007: v_progress lists its rows in the order the questions were first asked, then by model.
--
-- A view has no order of its own: SQLite happened to give v_progress's rows by question id (it
-- groups by sorting), PostgreSQL in whatever order its hash aggregate left them, a different one
-- from run to run. `SELECT * FROM v_progress`, the README's progress query on both, now reads the
-- same everywhere. The rows are one per (question, model): sorting them costs nothing next to
-- counting the jobs. model_id sorts byte by byte, as PostgreSQL's does under COLLATE "C".

DROP VIEW IF EXISTS v_progress;
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
GROUP BY j.question_id, j.model_id
ORDER BY j.question_id, j.model_id;
