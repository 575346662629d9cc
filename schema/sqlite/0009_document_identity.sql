-- 0009: answers under the paths that hold the bytes now; files gone from disk.
--
-- A job is made for content, not for a path: its key hashes the document's SHA-256, the page
-- number and the render settings (jobs/queue.h), so the same bytes at another path (a moved
-- archive, a second copy, an edit undone: bytes A, B, A) are not asked again. v_answers joins
-- each answer to the one page row its job was made for, the first path or version that held
-- the bytes, which may be gone. v_current_answers shows every answer under every current
-- document whose page has the same content: one row per current document x page x answer whose
-- job was made for the same document SHA-256, page number and render settings. asked_document_id
-- and asked_path say which document the job was made for (v_answers' document_id and
-- document_path). One answer may so show under several paths, each path once.
--
-- documents.missing_since: when `docqa ingest` of a folder found that a file ingested under it
-- is gone (ISO-8601 UTC text, as the other times), on every version of its path; NULL again when
-- an ingest finds the file back. documents_current, the newest version of each path, leaves out
-- the paths whose files are gone: it is what the files hold now. Their rows, pages, jobs and
-- answers stay (v_answers shows them); `docqa ask` asks nothing new about them.

ALTER TABLE documents ADD COLUMN missing_since TEXT;
-- ingest reads the paths marked gone on every run, to clear those that came back.
CREATE INDEX documents_missing ON documents (path) WHERE missing_since IS NOT NULL;

DROP VIEW documents_current;
CREATE VIEW documents_current AS
SELECT d.*
FROM documents d
WHERE d.missing_since IS NULL
  AND d.version = (SELECT max(version) FROM documents d2 WHERE d2.path = d.path);

-- The columns of v_answers, in its order (a query or an export reads either view alike), with
-- the current document's path, id and page; then the document the job was made for.
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
       json_extract(p.render_settings, '$.n_res')              AS n_res,
       json_extract(p.render_settings, '$.tile')               AS tile,
       json_extract(p.render_settings, '$.longest_edge')       AS longest_edge,
       json_extract(a.generation_settings, '$.prompt')         AS prompt,
       json_extract(a.generation_settings, '$.max_new_tokens') AS max_new_tokens,
       json_extract(a.generation_settings, '$.do_sample')      AS do_sample,
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
