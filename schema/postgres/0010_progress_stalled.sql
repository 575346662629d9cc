-- 0010: v_progress tells running jobs from stalled ones (see
-- schema/sqlite/0010_progress_stalled.sql): `running` counts the jobs whose lease is alive,
-- `stalled`, a new last column, those whose lease has expired, their worker gone. Leases are
-- kept in the server's time (store/store_pg.h): compared with the server's clock. The new column
-- goes last, so CREATE OR REPLACE keeps the view's dependants valid.

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
       round(100.0 * count(*) FILTER (WHERE j.state = 'done') / count(*), 1) AS percent_done,
       min(j.created_at)                                        AS asked_at,
       max(j.finished_at)                                       AS last_finished_at,
       count(*) FILTER (WHERE j.state = 'running' AND j.lease_expires_ms <
           (extract(epoch FROM clock_timestamp()) * 1000)::bigint) AS stalled
FROM jobs j
JOIN questions q ON q.id = j.question_id
GROUP BY q.id, j.model_id
ORDER BY q.id, j.model_id COLLATE "C";
