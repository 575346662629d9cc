-- 0008: how each answer was made, readable next to it (see
-- schema/sqlite/0008_answer_provenance.sql): the render settings' and generation settings'
-- members as columns of v_answers, and answers.model_fingerprint, the snapshot that answered.
-- The same values as SQLite's json_extract gives: integers, the prompt's name as text, and
-- do_sample as 1/0 (an integer, as `exact` is, so `do_sample = 0` runs on both).

ALTER TABLE answers ADD COLUMN model_fingerprint text;
ALTER TABLE answers_superseded ADD COLUMN model_fingerprint text;
CREATE INDEX answers_model_fingerprint ON answers (model_id, model_fingerprint);

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
       a.exact,
       (p.render_settings::json ->> 'n_res')::integer                 AS n_res,
       (p.render_settings::json ->> 'tile')::integer                  AS tile,
       (p.render_settings::json ->> 'longest_edge')::integer          AS longest_edge,
       a.generation_settings::json ->> 'prompt'                       AS prompt,
       (a.generation_settings::json ->> 'max_new_tokens')::integer    AS max_new_tokens,
       (a.generation_settings::json ->> 'do_sample')::boolean::integer AS do_sample,
       a.model_fingerprint
FROM answers a
JOIN jobs j      ON j.id = a.job_id
JOIN pages p     ON p.id = j.page_id
JOIN documents d ON d.id = p.document_id
JOIN questions q ON q.id = j.question_id;
