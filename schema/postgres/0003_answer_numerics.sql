-- 0003: how each answer was computed (see schema/sqlite/0003_answer_numerics.sql).
--
-- device:  the backend that ran the model: 'cpu', 'cpu-ref' or 'cuda:I'.
-- weights: the --weights mode: 'stored' (the snapshot's own dtype), 'int8' or 'bf16'.
-- Both are NULL for answers stored before this migration. v_answers gains both and `exact`
-- (true: a CPU backend with weights as stored, transformers' numerics; NULL: unknown).

ALTER TABLE answers ADD COLUMN device text;
ALTER TABLE answers ADD COLUMN weights text CHECK (weights IN ('stored', 'int8', 'bf16'));

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
       CASE WHEN a.device IS NULL OR a.weights IS NULL THEN NULL
            ELSE a.device IN ('cpu', 'cpu-ref') AND a.weights = 'stored' END AS exact
FROM answers a
JOIN jobs j      ON j.id = a.job_id
JOIN pages p     ON p.id = j.page_id
JOIN documents d ON d.id = p.document_id
JOIN questions q ON q.id = j.question_id;
