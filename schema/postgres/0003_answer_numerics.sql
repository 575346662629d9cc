-- 0003: how each answer was computed (see schema/sqlite/0003_answer_numerics.sql).
--
-- device:  the backend that ran the model: 'cpu', 'cpu-ref' or 'cuda:I'.
-- weights: the --weights mode: 'stored' (the snapshot's own dtype), 'int8' or 'bf16'.
-- exact:   1 where the worker computed with transformers' numerics (a CPU backend with the
--          weights as stored), 0 where its arithmetic was approximate. A smallint, not a
--          boolean, so the same SQL (exact = 1) runs on both stores and docqa migrate copies it.
-- All three are NULL for answers stored before this migration.

ALTER TABLE answers ADD COLUMN device text;
ALTER TABLE answers ADD COLUMN weights text CHECK (weights IN ('stored', 'int8', 'bf16'));
ALTER TABLE answers ADD COLUMN exact smallint CHECK (exact IN (0, 1));
CREATE INDEX answers_engine ON answers (device, weights, exact);

-- New columns go last, so CREATE OR REPLACE keeps the view's dependants valid.
CREATE OR REPLACE VIEW v_answers AS
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
       a.ms_total,
       a.device,
       a.weights,
       a.exact
FROM answers a
JOIN jobs j      ON j.id = a.job_id
JOIN pages p     ON p.id = j.page_id
JOIN documents d ON d.id = p.document_id
JOIN questions q ON q.id = j.question_id;
