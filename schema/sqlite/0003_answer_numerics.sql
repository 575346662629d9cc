-- 0003: how each answer was computed, so SQL can tell transformers-exact answers from
-- approximate ones (`docqa run --weights int8|bf16`, or a GPU's bf16 products).
--
-- device:  the backend that ran the model: 'cpu', 'cpu-ref' or 'cuda:I'.
-- weights: the --weights mode: 'stored' (the snapshot's own dtype), 'int8' or 'bf16'.
-- exact:   1 where the worker computed with transformers' numerics (a CPU backend with the
--          weights as stored: logits within float tolerance, the same tokens), 0 where its
--          arithmetic was approximate. The worker says which; nothing here re-derives it.
-- All three are NULL for answers stored before this migration: nobody recorded them then.

ALTER TABLE answers ADD COLUMN device TEXT;
ALTER TABLE answers ADD COLUMN weights TEXT CHECK (weights IN ('stored', 'int8', 'bf16'));
ALTER TABLE answers ADD COLUMN exact INTEGER CHECK (exact IN (0, 1));
-- docqa status counts answers per (device, weights, exact) from this index alone.
CREATE INDEX answers_engine ON answers (device, weights, exact);

DROP VIEW IF EXISTS v_answers;
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
       a.exact
FROM answers a
JOIN jobs j      ON j.id = a.job_id
JOIN pages p     ON p.id = j.page_id
JOIN documents d ON d.id = p.document_id
JOIN questions q ON q.id = j.question_id;
