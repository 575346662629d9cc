-- 0014: v_progress's last_finished_at is the last time a job of the row finished: done, failed,
-- or dead (failed for good after its attempts). A cancelled job finished nothing: `docqa cancel`
-- stamps its finished_at, and a question none of whose jobs had finished showed the cancel's
-- time. NULL when no job of the row finished. Only that column changes.

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
       max(CASE WHEN j.state IN ('done', 'failed', 'dead') THEN j.finished_at END)
                                                AS last_finished_at,
       sum(j.state = 'running' AND j.lease_expires_ms <
           CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)) AS stalled,
       sum(j.state = 'cancelled')               AS cancelled
FROM jobs j
JOIN questions q ON q.id = j.question_id
GROUP BY j.question_id, j.model_id
ORDER BY j.question_id, j.model_id;
