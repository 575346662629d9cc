-- 0012: the order in which answers were committed, for `docqa export --after`.
--
-- An incremental export must hand over every answer exactly once, and no stored value said in
-- which order answers became visible. finished_at is the worker's clock before its commit: an
-- answer whose commit waited on the write lock (another worker, an sqlite3 shell) becomes
-- visible after answers stamped later. answers.id is no better: an INTEGER PRIMARY KEY without
-- AUTOINCREMENT is max(id) + 1, and storing an answer that replaces the newest one (a job
-- requeued with `--approximate`, `--done` or `--stale`) deletes that row first, so the new
-- answer takes its id again and `id > N` never sees it. On PostgreSQL an identity value is
-- drawn at INSERT, not at COMMIT.
--
-- commit_seq is drawn from the one row of answer_commit_seq by the transaction that stores the
-- answer. On SQLite every write transaction holds the database's only write lock from its first
-- write to its commit, so numbers drawn inside it follow commit order: whatever has
-- commit_seq <= the counter a reader sees is committed. The counter only grows (a deleted answer
-- gives nothing back), so a checkpoint is never reused. Answers stored before this migration are
-- numbered by id, all below the counter.
--
-- A row inserted with its commit_seq given (`docqa migrate` copies them) keeps it.

CREATE TABLE answer_commit_seq (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL                    -- the newest commit_seq handed out
) STRICT;

ALTER TABLE answers ADD COLUMN commit_seq INTEGER;
UPDATE answers SET commit_seq = id;
INSERT INTO answer_commit_seq (id, last) VALUES (1, coalesce((SELECT max(id) FROM answers), 0));
CREATE UNIQUE INDEX answers_commit_seq ON answers (commit_seq);

CREATE TRIGGER answers_commit_seq AFTER INSERT ON answers WHEN NEW.commit_seq IS NULL
BEGIN
    UPDATE answer_commit_seq SET last = last + 1 WHERE id = 1;
    UPDATE answers SET commit_seq = (SELECT last FROM answer_commit_seq WHERE id = 1)
    WHERE id = NEW.id;
END;
