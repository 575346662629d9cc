-- 0014: v_progress's last_finished_at is the last time a job of the row finished: done, failed
-- or dead (see schema/sqlite/0014_progress_last_finished.sql), never a cancel's time; NULL when
-- none did. CREATE OR REPLACE keeps the view's dependants valid (same columns, same types).

CREATE OR REPLACE VIEW v_progress AS
SELECT q.text                                                   AS question,
       j.model_id                                               AS model,
       count(*)                                                 AS total,
       count(*) FILTER (WHERE j.state = 'queued')               AS queued,
       count(*) FILTER (WHERE j.state = 'running' AND j.lease_expires_ms >=
           (extract(epoch FROM clock_timestamp()) * 1000)::bigint) AS running,
       count(*) FILTER (WHERE j.state = 'done')                 AS done,
       count(*) FILTER (WHERE j.state = 'failed')               AS failed,
       count(*) FILTER (WHERE j.state = 'dead')                 AS dead,
       count(*) FILTER (WHERE j.state = 'queued' AND j.attempts > 0) AS retrying,
       round(100.0 * count(*) FILTER (WHERE j.state = 'done')
             / nullif(count(*) FILTER (WHERE j.state <> 'cancelled'), 0), 1) AS percent_done,
       min(j.created_at)                                        AS asked_at,
       max(j.finished_at) FILTER (WHERE j.state IN ('done', 'failed', 'dead'))
                                                                AS last_finished_at,
       count(*) FILTER (WHERE j.state = 'running' AND j.lease_expires_ms <
           (extract(epoch FROM clock_timestamp()) * 1000)::bigint) AS stalled,
       count(*) FILTER (WHERE j.state = 'cancelled')            AS cancelled
FROM jobs j
JOIN questions q ON q.id = j.question_id
GROUP BY q.id, j.model_id
ORDER BY q.id, j.model_id COLLATE "C";
