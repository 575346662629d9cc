-- 0005: answers that a later answer to the same job replaced.
--
-- `docqa requeue --approximate` puts the jobs whose answer was approximate (answers.exact = 0:
-- --weights int8 or bf16, a GPU's bf16 products) back in the queue, so that a run with
-- transformers' numerics answers them again. Until it does, the approximate answer stays in
-- answers (and v_answers). When the new answer is stored, the old row moves here in the same
-- transaction, as it was, with the time it was replaced: nothing stored is ever dropped.

CREATE TABLE answers_superseded (
    id                  INTEGER PRIMARY KEY,
    answer_id           INTEGER NOT NULL,   -- its id in answers, where it stood
    job_id              INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    text                TEXT    NOT NULL,
    prompt_tokens       INTEGER NOT NULL,
    generated_tokens    INTEGER NOT NULL,
    model_id            TEXT    NOT NULL,
    generation_settings TEXT    NOT NULL,
    worker              TEXT    NOT NULL,
    started_at          TEXT    NOT NULL,
    finished_at         TEXT    NOT NULL,
    ms_image            REAL,
    ms_vision           REAL,
    ms_prefill          REAL,
    ms_decode           REAL,
    ms_total            REAL,
    device              TEXT,
    weights             TEXT,
    exact               INTEGER,
    superseded_at       TEXT    NOT NULL    -- the replacing answer's finished_at
) STRICT;
CREATE INDEX answers_superseded_job ON answers_superseded (job_id);
