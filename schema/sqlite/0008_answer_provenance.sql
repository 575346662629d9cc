-- 0008: how each answer was made, readable next to it.
--
-- One page and question asked at two render settings (`ingest --n-res 3` and `--n-res 5`) or
-- with two generation settings (`ask --max-new-tokens`) are two jobs and two answers, and
-- v_answers showed them as the same row twice: the settings were only in pages.render_settings
-- and answers.generation_settings, as JSON. v_answers now shows their members as columns:
--
-- n_res, tile, longest_edge:         the page image's render settings (pages.render_settings)
-- prompt, max_new_tokens, do_sample: the generation settings (answers.generation_settings; the
--                                    job's, copied with the answer); do_sample 0 is greedy
-- model_fingerprint:                 which snapshot answered (below)
--
-- `run --model-id X --model DIR` lets any snapshot answer X's jobs, and a folder's name says
-- nothing of what is in it: answers.model_fingerprint is a hex SHA-256 over what identifies a
-- snapshot's weights (config.json's and tokenizer.json's bytes, each safetensors file's header
-- and size; model/smolvlm.h), computed by each worker when it loads the model. NULL for answers
-- stored before this migration, and for stand-ins that are no model. answers_superseded keeps
-- it with the rest of a replaced answer.
--
-- Both settings columns hold canonical JSON written by docqa (ingest/ingest.c, jobs/queue.c);
-- json_extract reads them. New columns go last: CSV exports and queries that read the view by
-- position keep their columns where they were.

ALTER TABLE answers ADD COLUMN model_fingerprint TEXT;
ALTER TABLE answers_superseded ADD COLUMN model_fingerprint TEXT;
-- `docqa run` counts the answers of its model id per fingerprint at start, `docqa status` for
-- every model: from this index alone.
CREATE INDEX answers_model_fingerprint ON answers (model_id, model_fingerprint);

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
       a.exact,
       json_extract(p.render_settings, '$.n_res')              AS n_res,
       json_extract(p.render_settings, '$.tile')               AS tile,
       json_extract(p.render_settings, '$.longest_edge')       AS longest_edge,
       json_extract(a.generation_settings, '$.prompt')         AS prompt,
       json_extract(a.generation_settings, '$.max_new_tokens') AS max_new_tokens,
       json_extract(a.generation_settings, '$.do_sample')      AS do_sample,
       a.model_fingerprint
FROM answers a
JOIN jobs j      ON j.id = a.job_id
JOIN pages p     ON p.id = j.page_id
JOIN documents d ON d.id = p.document_id
JOIN questions q ON q.id = j.question_id;
