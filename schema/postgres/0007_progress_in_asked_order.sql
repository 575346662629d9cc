-- 0007: v_progress lists its rows in the order the questions were first asked, then by model, as
-- on SQLite (see schema/sqlite/0007_progress_in_asked_order.sql): the hash aggregate left them in
-- an order that changed from run to run. Grouping by the question's id (its text follows from
-- it) gives the id to sort by; model ids sort byte by byte, as SQLite sorts them, whatever the
-- database's collation. The columns are unchanged, so CREATE OR REPLACE keeps dependants valid.

CREATE OR REPLACE VIEW v_progress AS
SELECT q.text                                                   AS question,
       j.model_id                                               AS model,
       count(*)                                                 AS total,
       count(*) FILTER (WHERE j.state = 'queued')               AS queued,
       count(*) FILTER (WHERE j.state = 'running')              AS running,
       count(*) FILTER (WHERE j.state = 'done')                 AS done,
       count(*) FILTER (WHERE j.state = 'failed')               AS failed,
       count(*) FILTER (WHERE j.state = 'dead')                 AS dead,
       count(*) FILTER (WHERE j.state = 'queued' AND j.attempts > 0) AS retrying,
       round(100.0 * count(*) FILTER (WHERE j.state = 'done') / count(*), 1) AS percent_done,
       min(j.created_at)                                        AS asked_at,
       max(j.finished_at)                                       AS last_finished_at
FROM jobs j
JOIN questions q ON q.id = j.question_id
GROUP BY q.id, j.model_id
ORDER BY q.id, j.model_id COLLATE "C";
