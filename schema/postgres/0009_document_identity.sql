-- 0009 (PostgreSQL): answers under the paths that hold the bytes now; files gone from disk (see
-- schema/sqlite/0009_document_identity.sql). The same columns and rows as SQLite's.

ALTER TABLE documents ADD COLUMN missing_since text;
CREATE INDEX documents_missing ON documents (path) WHERE missing_since IS NOT NULL;

-- d.* was expanded when the view was made: missing_since, the table's last column, comes last
-- here too, so CREATE OR REPLACE keeps the view's dependants valid.
CREATE OR REPLACE VIEW documents_current AS
SELECT d.*
FROM documents d
WHERE d.missing_since IS NULL
  AND d.version = (SELECT max(version) FROM documents d2 WHERE d2.path = d.path);

CREATE VIEW v_current_answers AS
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
       a.model_fingerprint,
       jd.id           AS asked_document_id,
       jd.path         AS asked_path
FROM documents_current d
JOIN pages p      ON p.document_id = d.id
JOIN documents jd ON jd.sha256 = d.sha256
JOIN pages jp     ON jp.document_id = jd.id AND jp.page_number = p.page_number
                 AND jp.render_settings = p.render_settings
JOIN jobs j       ON j.page_id = jp.id
JOIN answers a    ON a.job_id = j.id
JOIN questions q  ON q.id = j.question_id;
