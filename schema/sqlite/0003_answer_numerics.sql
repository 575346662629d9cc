-- 0003: how each answer was computed, so SQL can tell transformers-exact answers from
-- approximate ones (`docqa run --weights int8|bf16`, or a GPU's bf16 products).
--
-- device:  the backend that ran the model: 'cpu', 'cpu-ref' or 'cuda:I'.
-- weights: the --weights mode: 'stored' (the snapshot's own dtype), 'int8' or 'bf16'.
-- Both are NULL for answers stored before this migration: nobody recorded them then.
--
-- v_answers gains both and `exact`: 1 where the answer was computed with transformers'
-- numerics (a CPU backend, weights as stored: the logits match within float tolerance, the
-- tokens are the same), 0 where the arithmetic was approximate, NULL where unknown.

ALTER TABLE answers ADD COLUMN device TEXT;
ALTER TABLE answers ADD COLUMN weights TEXT CHECK (weights IN ('stored', 'int8', 'bf16'));

DROP VIEW v_answers;
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
