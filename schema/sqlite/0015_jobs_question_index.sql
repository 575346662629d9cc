-- 0015: a question is asked when it has a job.
--
-- Older versions stored a question in a transaction of its own, before its jobs: an `ask`
-- interrupted between the two left a questions row with no job.
-- export --question, cancel --question and requeue --question took such a row for a question
-- that was asked (and found nothing to do, in silence, where a question never asked is named).
-- They now look for the question's jobs, by question_id: this index finds them without a scan
-- of every job. The rows without jobs are kept (the next `ask` of the text reuses its row).

CREATE INDEX jobs_question ON jobs (question_id);
