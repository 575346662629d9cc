-- 0010: v_progress tells running jobs from stalled ones.
--
-- A job stays 'running' after its worker died (killed, the machine lost) until another worker's
-- claim finds its lease expired and takes it over: counted as running, it read as work in
-- progress, hours after the last worker stopped. `running` now counts the jobs whose lease is
-- still alive (a worker renews it); `stalled`, a new last column, those whose lease has expired:
-- nobody works on them, and the next claim of their model takes them over (queued again, or
-- dead after their last attempt). total = queued + running + stalled + done + failed + dead.
-- Leases are Unix milliseconds of the workers' clock (jobs/queue.h), compared here with this
-- machine's, as the claim compares them.
-- (0009 is another change's number.)

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
       round(100.0 * sum(j.state = 'done') / count(*), 1) AS percent_done,
       min(j.created_at)                        AS asked_at,
       max(j.finished_at)                       AS last_finished_at,
       sum(j.state = 'running' AND j.lease_expires_ms <
           CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)) AS stalled
FROM jobs j
JOIN questions q ON q.id = j.question_id
GROUP BY j.question_id, j.model_id
ORDER BY j.question_id, j.model_id;
