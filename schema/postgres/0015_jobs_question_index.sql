-- 0015: a question is asked when it has a job (see schema/sqlite/0015_jobs_question_index.sql):
-- an interrupted `ask` of an older version left questions rows without jobs, which
-- export --question, cancel and requeue took for questions asked. They look the question's jobs
-- up by question_id, through this index. The rows without jobs are kept.

CREATE INDEX jobs_question ON jobs (question_id);
