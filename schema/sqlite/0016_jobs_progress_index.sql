-- 0016: v_progress (and `docqa status`, which reads it) without visiting every job's row.
--
-- v_progress counts the jobs of each (question, model) by state. Through jobs_question (0015) it
-- read the index, then each of the jobs' rows, then sorted them for its GROUP BY: at 500k jobs
-- about 1 s for every `docqa status`, growing with the queue. This index holds every column the
-- view reads, in its GROUP BY order: the view is read from the index alone (0.2 s at 500k jobs;
-- docs/performance.md, "At archive scale"). It costs an ask about 40% more time to store its jobs
-- and the database about 11% more space. Its first column serves what jobs_question served (a
-- question's jobs, by question_id), so that index goes.

CREATE INDEX jobs_progress ON jobs (question_id, model_id, state, attempts, lease_expires_ms,
                                    created_at, finished_at);
DROP INDEX jobs_question;
