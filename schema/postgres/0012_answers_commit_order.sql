-- 0012: the order in which answers were committed, for `docqa export --after` (see
-- schema/sqlite/0012_answers_commit_order.sql for why neither finished_at nor id will do).
--
-- On PostgreSQL many workers commit at once, and an identity value is drawn at INSERT: a
-- transaction that drew a lower id can commit after one that drew a higher, so `id > N` loses
-- it. commit_seq is drawn at COMMIT instead, by a deferred constraint trigger, from the one row
-- of answer_commit_seq: the UPDATE of that row holds its lock until the transaction has
-- committed, so the next transaction storing answers draws its number only after this one is
-- visible. Hence every answer with commit_seq <= the counter a snapshot shows is visible in that
-- snapshot, and the numbers run in commit order. A transaction that rolls back (even after the
-- trigger ran) gives its number back with its UPDATE.
--
-- The cost: transactions that store answers commit one after the other (the lock is taken in
-- COMMIT, after every other statement, and held for the commit's WAL flush only), which is
-- nothing next to the seconds of model time behind each answer. The lock is never held across
-- a round trip to a worker: a worker that dies mid-transaction has not reached COMMIT.
--
-- The xmin horizon (pg_snapshot_xmin(pg_current_snapshot())) was the alternative: free for the
-- writers, but every transaction that holds an xid anywhere in the cluster (a psql session left
-- in a transaction, another application's batch job, a worker whose machine vanished until the
-- server's keepalive notices) holds every export back for as long as it lasts.
--
-- Answers stored before this migration are numbered by id, all below the counter. A row
-- inserted with its commit_seq given (`docqa migrate` copies them) keeps it.

CREATE TABLE answer_commit_seq (
    id   smallint PRIMARY KEY CHECK (id = 1),
    last bigint   NOT NULL                   -- the newest commit_seq handed out
);

ALTER TABLE answers ADD COLUMN commit_seq bigint;
UPDATE answers SET commit_seq = id;
INSERT INTO answer_commit_seq (id, last) SELECT 1, coalesce(max(id), 0) FROM answers;
CREATE UNIQUE INDEX answers_commit_seq ON answers (commit_seq);

CREATE FUNCTION docqa_answer_commit_seq() RETURNS trigger LANGUAGE plpgsql AS
$$
DECLARE
    n bigint;
BEGIN
    UPDATE answer_commit_seq SET last = last + 1 WHERE id = 1 RETURNING last INTO n;
    UPDATE answers SET commit_seq = n WHERE id = NEW.id AND commit_seq IS NULL;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER answers_commit_seq AFTER INSERT ON answers
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.commit_seq IS NULL)
    EXECUTE FUNCTION docqa_answer_commit_seq();
