/* The job queue's SQL: every statement that reads or writes questions, jobs, job_errors and
 * answers (schema/sqlite/0002_jobs.sql). The life cycle these functions implement, and why it
 * survives a crash, is documented in jobs/queue.h; this header is the seam a PostgreSQL store
 * implements next to SQLite (issue 10), so nothing here exposes sqlite3 types.
 *
 * Transactions: a function either is one statement (autocommit) or runs its statements inside
 * one BEGIN IMMEDIATE ... COMMIT. IMMEDIATE takes the write lock up front, so two writers never
 * both read under a shared lock and then deadlock upgrading it (SQLITE_BUSY that busy_timeout
 * cannot wait out); with WAL, readers are never blocked.
 *
 * On PostgreSQL (store_jobs_pg.c) the same functions keep the same contracts under READ
 * COMMITTED with many concurrent writers: claim and reclaim take rows with FOR UPDATE SKIP
 * LOCKED, and statements that change several of one owner's jobs lock them in id order first.
 *
 * Times are passed in (Unix milliseconds from the caller's clock, dq_wall_ms) so the lease logic
 * is the caller's, testable, and identical on any store. PostgreSQL, whose workers run on several
 * machines, turns each into the server's time first (store_pg.h): leases never depend on how well
 * the workers' clocks agree. SQLite adds the time a transaction waited for the write lock to the
 * time it was given, read before the wait: a lease stamped after a long wait runs from then.
 */
#ifndef DQ_STORE_JOBS_H
#define DQ_STORE_JOBS_H

#include "store.h"

#include <glib.h>

/* Finalizes the queue's cached prepared statements on this connection now. Optional:
 * dq_store_close finalizes them too (the store owns its statement caches). */
void store_jobs_finalize(DqStore *s);

/* ---- asking ---- */

/* A page of a document a question may be asked about. */
typedef struct {
    gint64 page_id;
    gint64 document_id;
    char *document_sha256;
    int page_number;
    char *render_settings;
    gboolean usable;        /* it has an image (status ok or partial): ingest rendered it */
    gboolean document_gone; /* its file is gone from disk (documents.missing_since, 0009) */
} DqAskPage;
void dq_ask_page_free(DqAskPage *p);

/* Every page row, at every render settings, of the given documents (ids, and the newest
 * versions matched by `where_sql`, an SQL expression over the columns of `documents`), ordered
 * by document, page number and page id. With no ids and no filter: the newest version of every
 * path, those whose file is gone included (documents_current leaves them out): which pages to
 * ask about is the caller's choice (queue_ask). A document named by id that failed to ingest
 * as a whole is an error (DQ_ERR_ARGS, naming it).
 * `where_sql` is the only SQL docqa accepts from users: it is compiled on a separate read-only
 * connection whose authorizer allows reading the documents table and nothing else, and must be
 * one expression. Returns a GPtrArray of DqAskPage. */
GPtrArray *store_jobs_select_pages(DqStore *s, const gint64 *document_ids, int n_ids,
                                   const char *const *where_sql, int n_where, GError **err);

/* The id of a question's row, inserting it when new. */
gboolean store_jobs_question_id(DqStore *s, const char *text, gint64 *id, GError **err);

typedef struct {
    gint64 page_id;
    gint64 question_id; /* 0: the question whose text is `question` */
    const char *model_id;
    const char *generation_settings;
    const char *job_key; /* the idempotency key (jobs/queue.h) */
    int max_attempts;
    const char *question; /* with question_id 0: stored when new, in the jobs' transaction */
} DqNewJob;

/* Inserts the jobs, and the questions given by their text, in one transaction; those whose key
 * exists already are skipped. *added counts the new ones. */
gboolean store_jobs_enqueue(DqStore *s, const DqNewJob *jobs, int n, int *added, GError **err);

/* ---- working ---- */

/* A claimed job with what a worker needs to answer it. */
typedef struct {
    gint64 job_id;
    gint64 page_id;
    gint64 document_id;
    char *document_path;
    int page_number;
    char *render_settings;
    char *image_sha256; /* NULL when ingest stored no image */
    char *question;
    char *model_id;
    char *generation_settings;
    int attempt; /* 1 for the first claim */
    int max_attempts;
    /* What the job refers to that is no longer in the database ("page", "document",
     * "question", "page and question"), or NULL: rows deleted by hand in a shell whose foreign
     * keys are off (sqlite3's default), so nothing cascaded. Such a job is claimed like any
     * other, for the worker to fail it ('orphan') and go on. */
    char *missing;
} DqClaimedJob;
void dq_claimed_job_free(DqClaimedJob *j);

/* In one short transaction: expired leases of `model_id` are recorded in job_errors and their
 * jobs go back to 'queued' (or 'dead' when they used their last attempt), except, on SQLite,
 * those that ran out since this process last waited long for the write lock when that wait ended
 * less than lease_ms ago (store_jobs.c, "a locked database"); then up to `limit`
 * queued jobs of `model_id` whose backoff has passed are leased to `owner` until now + lease_ms,
 * oldest first, with one UPDATE ... RETURNING. Returns a GPtrArray of DqClaimedJob (empty when
 * there is nothing to do). *buried (may be NULL) counts the expired jobs that went 'dead' (their
 * last attempt's lease ran out): failures this claim found, which its caller reports. */
GPtrArray *store_jobs_claim(DqStore *s, const char *owner, const char *model_id, int limit,
                            gint64 now_ms, gint64 lease_ms, int *buried, GError **err);
/* store_jobs_claim, also appending the ids (gint64) of the jobs it buried to `buried_ids` (may be
 * NULL): a worker reports them, and `docqa run` looks at them again when its workers are done
 * (a buried job that its holder's late answer reached is done, not failed). */
GPtrArray *store_jobs_claim_noting(DqStore *s, const char *owner, const char *model_id, int limit,
                                   gint64 now_ms, gint64 lease_ms, GArray *buried_ids,
                                   GError **err);

/* Extends the lease of every job `owner` holds to now + lease_ms, counted from when the rows are
 * written: a heartbeat that waited (SQLite's write lock, PostgreSQL's row locks) renews from the
 * end of its wait, not from `now_ms`, which was read before it. *held is how many it still holds
 * (fewer than claimed means some leases were lost to a reclaim). */
gboolean store_jobs_heartbeat(DqStore *s, const char *owner, gint64 now_ms, gint64 lease_ms,
                              int *held, GError **err);
/* store_jobs_heartbeat, also telling the worker which of the n jobs `in_flight` (ids it is
 * working on) are no longer worth working on: it no longer holds them and an answer to them
 * would not be kept (store_jobs_complete's rule). Their ids are appended to `gone` (gint64, in
 * id order): cancelled, answered or failed, held by another worker, deleted. A job that is back
 * in the queue or buried with no answer is not among them: its late answer would still be kept,
 * unless someone takes it first (a later heartbeat then says so). */
gboolean store_jobs_heartbeat_noting(DqStore *s, const char *owner, gint64 now_ms, gint64 lease_ms,
                                     const gint64 *in_flight, int n_in_flight, GArray *gone,
                                     int *held, GError **err);

/* One answer to write. */
typedef struct {
    gint64 job_id;
    const char *text;
    int prompt_tokens;
    int generated_tokens;
    const char *started_at; /* ISO-8601 UTC */
    const char *finished_at;
    double ms_image, ms_vision, ms_prefill, ms_decode, ms_total;
    /* How it was computed (schema 0003): the backend ("cpu", "cpu-ref", "cuda:I"), the
     * --weights mode ("stored", "int8", "bf16"), and whether that is transformers' arithmetic
     * (1) or an approximation (0). NULL and -1 store NULL (not known). */
    const char *device;
    const char *weights;
    int exact;
    /* The snapshot that answered (schema 0008): a hex SHA-256 (model/smolvlm.h's
     * smolvlm_snapshot_fingerprint), or NULL (not known: a stand-in that is no model). */
    const char *model_fingerprint;
} DqJobAnswer;

/* In one transaction, for each answer whose job `owner` still leases: marks the job done and
 * inserts the answer. Jobs whose lease was lost get nothing written. *written counts the
 * answers the database holds afterwards: stored now, or found already stored, the same text
 * from the same owner with the same finished_at (a completion run again after its COMMIT went
 * through but the reply was lost with the connection). */
gboolean store_jobs_complete(DqStore *s, const char *owner, const DqJobAnswer *answers, int n,
                             int *written, GError **err);

typedef enum {
    DQ_JOB_QUEUED = 0,
    DQ_JOB_RUNNING,
    DQ_JOB_DONE,
    DQ_JOB_FAILED,
    DQ_JOB_DEAD,
    DQ_JOB_CANCELLED, /* withdrawn by `docqa cancel` (schema 0011) */
    DQ_JOB_N_STATES
} DqJobState;
const char *dq_job_state_name(DqJobState s);

/* Records a failed attempt of a job `owner` leases and releases it: with `retryable`, back to
 * 'queued' not before now + backoff_ms * 2^(attempt-1) (capped at an hour), or 'dead' after its
 * last attempt; without, 'failed' at once (the input itself is bad, e.g. a missing page image).
 * A job that already has an answer (requeued approximate) goes back to 'done' instead of
 * 'failed' or 'dead'. *new_state (may be NULL) receives the state; a job no longer leased is left
 * alone and gets DQ_JOB_N_STATES, unless this same failure (owner, kind, message) is its newest
 * attempt's: the call run again after its COMMIT went through unheard gets the state it set. */
gboolean store_jobs_fail(DqStore *s, const char *owner, gint64 job_id, const char *kind,
                         const char *message, gboolean retryable, gint64 now_ms, gint64 backoff_ms,
                         DqJobState *new_state, GError **err);

/* Gives back every job `owner` holds without counting the attempt (SIGINT, SIGTERM).
 * *released (may be NULL) counts them. */
gboolean store_jobs_release(DqStore *s, const char *owner, int *released, GError **err);
/* The same for the jobs `owner` holds other than the n_keep ids in `keep`: after a lost
 * connection, a claim may have committed without the worker hearing of it. */
gboolean store_jobs_release_except(DqStore *s, const char *owner, const gint64 *keep, int n_keep,
                                   int *released, GError **err);

/* ---- reading ---- */

typedef struct {
    gint64 by_state[DQ_JOB_N_STATES];
    gint64 retrying; /* queued after at least one failed attempt */
    gint64 total;
    gint64 pending_other; /* queued or running jobs of another model than the one asked about */
    /* Of the running ones, those whose lease has expired by the database's clock: their worker
     * stopped (killed, its machine lost), and the next claim of their model takes them over.
     * v_progress counts them as `stalled`, apart from `running` (schema 0010). */
    gint64 stalled;
} DqJobCounts;

/* How many of the n jobs `ids` are in `state` now. */
gboolean store_jobs_count_in_state(DqStore *s, const gint64 *ids, int n, DqJobState state,
                                   gint64 *count, GError **err);

/* Counts per state, for every model (model_id NULL) or one. Reads every job (from one index):
 * a second or so a million jobs. Stalled: the lease expired before now (store_jobs_counts_at's
 * now_ms, store_jobs_counts' dq_wall_ms()). now_ms is this machine's clock, the one workers
 * stamp leases with; on PostgreSQL it is taken to the server's, where leases are kept
 * (store_pg.h). Several reads that give one now_ms split running from stalled alike: a lease
 * that expires between them is on the same side in each (docqa status). */
gboolean store_jobs_counts(DqStore *s, const char *model_id, DqJobCounts *c, GError **err);
gboolean store_jobs_counts_at(DqStore *s, const char *model_id, gint64 now_ms, DqJobCounts *c,
                              GError **err);

/* Jobs waiting (queued or running) for one model id. */
typedef struct {
    char *model_id;
    gint64 queued;
    gint64 running;
} DqModelPending;
void dq_model_pending_free(DqModelPending *m);

/* The model ids other than `except` with jobs queued or running, most jobs first (then by id),
 * at most `limit` of them: what `docqa run` names when its own model has none. */
GPtrArray *store_jobs_pending_models(DqStore *s, const char *except, int limit, GError **err);

/* Whether model_id has a job queued or running: what an idle `docqa run --until-empty` worker
 * asks before it stops. Walks the claim's partial indexes only, so it costs the same whatever
 * the number of jobs done. */
gboolean store_jobs_has_pending(DqStore *s, const char *model_id, gboolean *pending, GError **err);

/* One row of v_progress: a question and model. */
typedef struct {
    char *question;
    char *model_id;
    gint64 total, queued, running, done, failed, dead, retrying, stalled, cancelled;
    double percent_done; /* of the jobs not cancelled; < 0: NULL (all cancelled) */
    char *asked_at;
    char *last_finished_at; /* NULL: nothing finished */
} DqProgressRow;
void dq_progress_row_free(DqProgressRow *r);

/* v_progress's rows, in its order (the questions as first asked). The view is docqa's: one
 * dropped by hand is an error naming it (dq_store_missing_views tells before). */
GPtrArray *store_jobs_progress(DqStore *s, GError **err);
/* The same rows with `running` and `stalled` split at now_ms as store_jobs_counts_at splits
 * them (the view takes the database's now, another at each read). */
GPtrArray *store_jobs_progress_at(DqStore *s, gint64 now_ms, GError **err);

/* Answers finished in the last `window_s` seconds and the span they cover in seconds
 * (first start to last finish), for a pages-per-second rate. */
gboolean store_jobs_recent_rate(DqStore *s, int window_s, gint64 *answers, double *span_s,
                                GError **err);
/* The same, the window ending at now_ms (this machine's clock, as the workers' finished_at) rather
 * than at dq_wall_ms(). */
gboolean store_jobs_recent_rate_at(DqStore *s, int window_s, gint64 now_ms, gint64 *answers,
                                   double *span_s, GError **err);

typedef struct {
    char *kind;
    char *message; /* the cause: the messages' paths replaced by "..." (store_internal.h) */
    char *example; /* one of its messages, whole (the first by byte order) */
    gint64 jobs;   /* distinct jobs that hit it */
} DqErrorReason;
void dq_error_reason_free(DqErrorReason *r);

/* The jobs whose errors are a problem now (SQL over jobs j): failed, dead, or queued again after
 * a failed attempt (retrying). A requeued job starts afresh (attempts 0), and a job answered in
 * the end is done: their errors are history, kept in job_errors but no reason of today's. */
#define DQ_JOBS_FAILING_NOW                                                                        \
    "(j.state IN ('failed', 'dead') OR (j.state = 'queued' AND j.attempts > 0))"

/* The most common failure reasons of the jobs failing now (DQ_JOBS_FAILING_NOW), most frequent
 * first: one a kind and cause, so that pages failing alike are one reason whatever their
 * paths. */
GPtrArray *store_jobs_top_errors(DqStore *s, int limit, GError **err);

/* The newest job_errors id (0: none yet): taken before a run, for store_jobs_errors_after. */
gboolean store_jobs_last_error_id(DqStore *s, gint64 *id, GError **err);

/* Why the jobs of model_id that ended failed for good by an error recorded after error id
 * after_id did: failed or dead, or done again with the answer a requeue left them (their
 * finished_at, the answer's, before the error), each job by its newest error, grouped as
 * store_jobs_top_errors groups them, most jobs first. What `docqa run` says at its end, of its
 * own failures only (workers of the same model elsewhere record theirs meanwhile): an error
 * recorded by a worker whose id ends in ":" worker_tag (DqWorkerOptions.owner_tag; letters and
 * digits; NULL: any worker's), or of one of the n_buried jobs `buried` (those the run's claims
 * buried, whose lease, recorded in the error, was another worker's). */
GPtrArray *store_jobs_errors_after(DqStore *s, const char *model_id, gint64 after_id,
                                   const char *worker_tag, const gint64 *buried, int n_buried,
                                   int limit, GError **err);

/* Answers counted by how they were computed (answers.device, weights and exact). */
typedef struct {
    char *device;  /* NULL: answered before schema 0003 recorded it */
    char *weights; /* NULL likewise */
    int exact;     /* 1, 0, or -1: not known */
    gint64 answers;
    gint64 pending; /* of them, answers whose job is queued or running again (requeued) */
} DqAnswerEngine;
void dq_answer_engine_free(DqAnswerEngine *e);

/* Every (device, weights, exact) that answered, most answers first (then by name, unknown
 * last). */
GPtrArray *store_jobs_answer_engines(DqStore *s, GError **err);

/* One row of v_answers. */
typedef struct {
    const char *document_path;
    int page;
    const char *question;
    const char *answer;
    const char *model;
    const char *finished_at;
    gint64 document_id;
    const char *document_sha256;
    gint64 job_id;
    const char *device;  /* NULL: answered before schema 0003 recorded it */
    const char *weights; /* "stored", "int8", "bf16" or NULL */
    int exact;           /* 1: transformers' numerics, 0: approximate, -1: not known */
    /* How it was made (schema 0008): the page's render settings and the job's generation
     * settings (-1 or NULL where the stored JSON lacks the member), and the snapshot's
     * fingerprint (NULL: not recorded). */
    int n_res, tile, longest_edge;
    const char *prompt;
    int max_new_tokens;
    int do_sample; /* 1, 0, or -1: not known */
    const char *model_fingerprint;
    gint64 page_id;
    int generated_tokens;
    double ms_total; /* NAN: not recorded */
    /* v_current_answers only (0 and NULL in v_answers): the document the job was made for */
    gint64 asked_document_id;
    const char *asked_path;
} DqAnswerRow;

typedef gboolean (*DqAnswerRowFn)(const DqAnswerRow *row, void *user, GError **err);

/* The answers per (model id, snapshot fingerprint), answers without a fingerprint left out: for
 * one model id (model_id not NULL) or every one, by model id (bytes), most answers first, then
 * by fingerprint. */
typedef struct {
    char *model_id;
    char *fingerprint;
    gint64 answers;
} DqModelSnapshot;
void dq_model_snapshot_free(DqModelSnapshot *m);
GPtrArray *store_jobs_model_snapshots(DqStore *s, const char *model_id, GError **err);

/* The answers committed between two checkpoints: those with after < answers.commit_seq <= upto
 * (schema 0012). */
typedef struct {
    gint64 after;
    gint64 upto;
} DqAnswerRange;

/* Calls fn for every row of v_answers, each answer under the document its job was made for
 * (with `current`: of v_current_answers, each answer under every current document holding its
 * page's content, schema 0009), only those to the questions `question_ids` (gint64, questions.id)
 * when not NULL (empty: no row), only those in `range`
 * when not NULL, only the rows listed under a document in `document_ids` (gint64; the row's
 * document_id: the asked document in v_answers, the current one in v_current_answers) when not
 * NULL (empty: no row), by document path, document, page, question; stops at the first FALSE.
 * fn must not use the store: on PostgreSQL the rows arrive on its connection while fn runs. */
gboolean store_jobs_each_answer(DqStore *s, const GArray *question_ids, gboolean current,
                                const DqAnswerRange *range, const GArray *document_ids,
                                DqAnswerRowFn fn, void *user, GError **err);

/* The newest answers.commit_seq handed out (schema 0012), the checkpoint `docqa export` prints:
 * numbers are drawn in commit order, each one once, so every answer numbered up to it is
 * committed, and visible to any read that starts after this one; an answer committed later gets
 * a larger number. 0 when no answer was ever stored. */
gboolean store_jobs_commit_checkpoint(DqStore *s, gint64 *checkpoint, GError **err);

/* ---- withdrawing work, and queueing it again ---- */

/* Which jobs store_jobs_cancel and store_jobs_requeue take: those that match every selector
 * given (a NULL or empty one matches every job). */
typedef struct {
    const gint64 *question_ids; /* the job's question is one of these */
    int n_question_ids;
    /* The job was made for the content (document SHA-256, page number, render settings) of a
     * page of one of these documents: a job is made for the bytes of a page, not for a path
     * (jobs/queue.h), so the job that a copy of the document, or another version of the same
     * bytes, was asked through is the document's job too. With documents_given and none here, no
     * job matches. */
    const gint64 *document_ids;
    int n_document_ids;
    gboolean documents_given;
    const char *model_id;
    /* Bit (1 << DqJobState) for each state taken; 0: none. Which done jobs are taken is `done`'s
     * choice. */
    guint states;
    /* The done jobs taken (DqDoneJobs bits, any of them): 0 is DQ_DONE_APPROXIMATE, the one
     * choice there was before. */
    guint done;
    /* For DQ_DONE_STALE: the fingerprint of the snapshot whose answers are current (hex, whole or
     * its first digits, as v_answers.model_fingerprint). */
    const char *fingerprint;
} DqJobFilter;

typedef enum {
    DQ_DONE_APPROXIMATE = 1 << 0, /* the answer was computed approximately (exact = 0) */
    DQ_DONE_ANY = 1 << 1,         /* every done job */
    /* the answer came from another snapshot than `fingerprint`, or from one not recorded (NULL:
     * stored before schema 0008, or by no model) */
    DQ_DONE_STALE = 1 << 2,
} DqDoneJobs;

/* One line of what store_jobs_cancel or store_jobs_requeue did (or would do): jobs of one
 * question and model that were in one state. */
typedef struct {
    char *question;
    char *model_id;
    DqJobState state; /* the state they were in */
    /* They had an answer (queued or running again after `requeue --approximate`): back to done
     * with it rather than cancelled. */
    gboolean answered;
    gint64 jobs;
} DqJobGroup;
void dq_job_group_free(DqJobGroup *g);

/* Cancels the jobs `filter` takes, in one transaction: they become 'cancelled' (finished_at now,
 * no lease; their errors stay in job_errors), except those that have an answer, which go back to
 * 'done' with it (the answer stands; only the second answering is withdrawn). A running job's
 * worker learns of it from its next heartbeat (store_jobs_heartbeat_noting) and drops it; an
 * answer it completes before then is kept and the job is done (store_jobs_complete's
 * late-answer rule); a failure it reports changes nothing. With `dry_run`, nothing is written.
 * Returns a GPtrArray of DqJobGroup, by question id, model, state and answered. */
GPtrArray *store_jobs_cancel(DqStore *s, const DqJobFilter *filter, gboolean dry_run, GError **err);

/* Puts the jobs `filter` takes back in the queue with fresh attempts, in one transaction as
 * store_jobs_cancel: their errors stay in job_errors. A done job's answer stays where it is
 * until the job is answered again; the new answer then moves it to answers_superseded (schema
 * 0005), and a job that fails for good instead goes back to done with it. With `dry_run`,
 * nothing is written. Returns what store_jobs_cancel returns. */
GPtrArray *store_jobs_requeue(DqStore *s, const DqJobFilter *filter, gboolean dry_run,
                              GError **err);

/* The statement a --where expression runs in, on SQLite and PostgreSQL alike: the ids of the
 * documents it matches, of the newest version of each path only with `newest_only`. The text is
 * wrapped in parentheses, so a text that closes them early (queue_check_where refuses those)
 * would widen the filter to old versions. g_free the result. */
char *store_jobs_where_sql(const char *where, gboolean newest_only);

/* The ids of every document row, any version, whose columns match the SQL expression `where`
 * (the rules of store_jobs_select_pages' where_sql), appended to `ids`. */
gboolean store_jobs_where_documents(DqStore *s, const char *where, GArray *ids, GError **err);

/* Whether the document `id` exists (any version, its file gone or not). */
gboolean store_jobs_document_exists(DqStore *s, gint64 id, gboolean *exists, GError **err);

/* The id of the question asked with exactly this text: stored, with at least one job; *id 0
 * when none is. */
gboolean store_jobs_find_question(DqStore *s, const char *text, gint64 *id, GError **err);

/* Whether any job was asked for `model_id`. */
gboolean store_jobs_model_known(DqStore *s, const char *model_id, gboolean *known, GError **err);

/* ---- crash testing ---- */

/* Called at named points inside the transactions above ("complete:after_job_update",
 * "commit"...), so tests can SIGKILL a worker exactly there; NULL (the default) disables. */
typedef void (*DqStoreHook)(const char *point);
void store_jobs_set_test_hook(DqStoreHook hook);

#endif
