/* The job queue: questions become jobs, workers answer them, answers land in the database.
 *
 * ---- What a job is ----
 *
 * One row of `jobs` (schema/sqlite/0002_jobs.sql) is one page, one question, one model and one
 * set of generation settings (the prompt's name, max_new_tokens, greedy). Its `job_key` is the
 * hex SHA-256 of
 *
 *     "docqa-job-v1" NUL document sha256 NUL page number NUL question NUL model id NUL
 *     render settings NUL generation settings
 *
 * under a UNIQUE index, so asking the same thing twice (or about a second copy of the same file)
 * adds nothing, and asking with another model or another prompt adds new jobs beside the old.
 *
 * ---- States ----
 *
 *                 claim (lease)              complete (same lease)
 *      queued  ------------------> running -----------------------> done
 *        ^  ^                       |  |  |
 *        |  |  fail, retryable,     |  |  |  fail, not retryable (bad page image,
 *        |  |                       |  |  |  question too long for the model)
 *        |  +--attempts < max ------+  |  +------------------------> failed
 *        |     (not before backoff)    |
 *        |                             |  fail, or lease expired, with attempts == max
 *        |  lease expired (reclaim)    +---------------------------> dead
 *        +--- or released (SIGINT) ----+
 *
 *   `docqa requeue --dead|--failed` moves dead or failed jobs back to queued with fresh attempts;
 *   `--approximate` moves done jobs whose answer has exact = 0. Such a job keeps its answer row
 *   until it completes again: completion first moves any answer the job already has to
 *   answers_superseded, in the completion's transaction, so the UNIQUE (job_id) on answers holds.
 *   If it fails for good instead (not retryable, or its last attempt), it goes back to done, not
 *   failed or dead, with its answer's finished_at: its answer still stands; the errors are in
 *   job_errors and last_error.
 *
 *   `docqa cancel` (store_jobs_cancel) withdraws queued, failed or dead jobs, and running ones
 *   when named: 'cancelled', no lease, finished_at set; `requeue --cancelled` queues them again.
 *   A job with an answer (requeued approximate) goes back to done with it instead. A cancelled
 *   running job's holder hears of it at its next heartbeat (below, "Withdrawn while running")
 *   and drops it from the model: nothing is stored, the job stays cancelled. The race, a job
 *   cancelled just as its answer is ready: the answer wins when the worker completes it before
 *   acting on that heartbeat; its completion is then a late one (below) and is stored, the job
 *   done, since the answer is computed by then. Its failure matches no row and changes nothing.
 *
 * ---- Leases, and who may write what ----
 *
 * A worker claims up to N queued jobs of its model (as many as it has free slots) with one
 * `UPDATE jobs SET state='running', lease_owner=<worker id>, lease_expires_ms=now+lease,
 * attempts=attempts+1 WHERE id IN (SELECT ... LIMIT N) RETURNING id` inside a short BEGIN IMMEDIATE
 * transaction; the same transaction first returns jobs whose lease expired to the queue (recording
 * a 'lease_expired' error; a job whose last attempt expired goes dead, so a page that crashes every
 * worker cannot stall the queue forever). Only other workers' jobs: a worker that is claiming is
 * alive and still answering its own, however late its heartbeat. Nor, on SQLite, those whose
 * lease ran out while this process waited long for the write lock (another connection's long
 * write), within a lease after that wait: their holders were waiting for it too (store_jobs.c,
 * "a locked database"). The worker id is host:pid:random, unique per worker process.
 *
 * While it holds a lease, only the holder writes the job: a heartbeat thread (its own database
 * connection) extends lease_expires_ms every lease/3; completion and failure statements all
 * carry `WHERE lease_owner = <worker id> AND state = 'running'`. Anyone may take over a job
 * whose lease has expired, after which the old holder's writes match no row while another
 * holds the job or has answered it. One exception: a late completion of a job that nobody holds
 * and nobody answered (back in the queue, or buried when the expiry was its last attempt: the
 * database was locked or unreachable longer than a lease; or cancelled while it ran) is stored:
 * throwing the answer away would only make someone compute it again, or leave the job dead.
 *
 * ---- Withdrawn while running ----
 *
 * Each heartbeat also tells its worker which of its jobs in flight it no longer holds and need
 * not finish (store_jobs_heartbeat_noting): cancelled, taken over by another worker after its
 * lease ran out, answered or failed by another, deleted. The worker withdraws them from the
 * answerer (answerer.h: wherever they are, host work or model slot) at the top of its next turn,
 * completes nothing for them and counts them (DqWorkerStats.withdrawn; `docqa run` prints the
 * count). A job back in the queue or buried, unanswered, is kept in the model: its late answer
 * is stored (above), unless someone takes the job first, which a later heartbeat reports. So a
 * job goes on for about a heartbeat (lease/3) and a decode step after it was cancelled or
 * taken, while the heartbeat reaches the database.
 *
 * The model runs outside any transaction: the database is locked only for the claim and for the
 * completion, both a few milliseconds, so K workers share one file without SQLITE_BUSY
 * (busy_timeout waits out the short write locks; BEGIN IMMEDIATE avoids lock-upgrade deadlocks).
 *
 * Completion is one transaction: for each answered job, mark it done under the lease guard and,
 * only when that matched, insert its answer. answers.job_id is UNIQUE as the last defence.
 *
 * ---- Why it survives a crash ----
 *
 * Every transition is one SQLite transaction (WAL, synchronous=NORMAL: a committed transaction
 * survives the process dying). A worker killed at any moment leaves one of:
 *   - before or inside the claim commit: nothing changed, the jobs are still queued;
 *   - after the claim, during inference: jobs running under a lease nobody renews; they expire
 *     and the next claim by any worker takes them back (one attempt used);
 *   - inside the completion (between the job update and the answer insert, or inside COMMIT):
 *     the transaction never committed, so neither the 'done' nor the answer exists; as above;
 *   - after the completion commit: done with exactly one answer.
 * No state has an answer without 'done' or 'done' without an answer, so every job is answered
 * at most once and, with attempts to spare, exactly once. tests/jobs/test_queue_crash.c kills
 * workers at each of these points and at random times and checks exactly that.
 *
 * ---- Crash-test hooks ----
 *
 * DOCQA_TEST_KILL_AT=<point>[:<n>] makes a worker raise SIGKILL the n-th time (default 1st) it
 * reaches a named point: worker:claimed, worker:before_complete, worker:after_complete,
 * worker:withdrawn, heartbeat:beat, claim:before_commit, complete:after_job_update,
 * complete:before_commit, commit (inside SQLite's commit), complete:after_commit,
 * fail:before_commit, answerer:inference (answerers that call queue_test_point; the SmolVLM
 * answerer's: answerer:prepare and answerer:prepared, on a preprocessing thread as it takes a
 * request and as it hands it on, answerer:admitted as a request enters the model; run:forked, in a
 * worker process just forked, before it has its own signal handlers).
 * DOCQA_TEST_KILL_AT=random:<p> kills at any of them with probability p. Unset: no effect.
 * DOCQA_TEST_PAUSE_AT=<point> holds the process at the point until a signal comes
 * (common/test_point.h): "commit" holds a command inside its transaction's commit, before
 * anything is committed; run:device_failed holds `docqa run`'s own process as it has reaped a
 * worker whose device failed, before it decides whether to replace it; run:workers_ended holds it
 * once every worker has ended, before it restores the caller's signal handlers.
 */
#ifndef DQ_QUEUE_H
#define DQ_QUEUE_H

#include "answerer.h"
#include "store_jobs.h"

#include <glib.h>
#include <signal.h>

/* ---- asking ---- */

typedef struct {
    const char *prompt; /* name of configs/prompts/<name>.txt; default "docvqa" */
    int max_new_tokens; /* default 64 */
    int max_attempts;   /* default 3 */
} DqGenerationSettings;

/* Canonical JSON of the settings (fixed key order, no spaces): part of the idempotency key.
 * Fails when the prompt does not exist. */
char *queue_generation_settings_json(const DqGenerationSettings *gs, GError **err);

/* The idempotency key (see above), 64 hex characters. */
char *queue_job_key(const char *document_sha256, int page_number, const char *question,
                    const char *model_id, const char *render_settings,
                    const char *generation_settings);

/* The model id a snapshot directory (or a bare id) stands for: the directory's base name
 * ("../models/SmolVLM-256M-Instruct/" -> "SmolVLM-256M-Instruct"), after "." and ".." are
 * resolved against the working directory ("." in /m/SmolVLM -> "SmolVLM"). */
char *queue_model_id(const char *model);

typedef struct {
    const gint64 *document_ids;
    int n_document_ids;
    const char *const *where_sql; /* SQL expressions over documents (read-only) */
    int n_where;
    const char *const *questions;
    int n_questions;
    const char *model_id;
    DqGenerationSettings settings;
    /* Which rendering of each document (ingest --n-res): 0, its most recent one; N, its most
     * recent one at n_res N (a document without one is left out). */
    int n_res;
} DqAskRequest;

typedef struct {
    int pages;        /* pages asked about: each content (document bytes, page, render settings)
                         once */
    int failed_pages; /* pages of the chosen renderings without an image (ingest failed there),
                         left out */
    int questions;    /* distinct questions asked */
    int duplicates;   /* questions given more than once in the request, asked once */
    int added;        /* new jobs */
    int existing;     /* already asked with the same key, before this request */
    /* Pages holding the same content as a page above (the same bytes at another path, a copy,
     * an older version): asked once, v_current_answers shows the answers under each. */
    int same_content;
    int gone_documents;   /* documents whose file is gone from disk (missing_since): left out */
    int other_renderings; /* pages of the documents' other renderings, left out */
    int no_rendering_documents; /* with n_res: documents that have no rendering at it */
    /* The n_res of the renderings left out, of both: bit n - 1 for n_res n (1 to 64). */
    guint64 other_n_res;
} DqAskResult;

/* Enqueues one job per (page, question), page-major (a worker's batch then shares pages). Each
 * question goes through queue_question_normalize first (so " Total?" and "Total?" are one
 * question); a question given twice is asked once and counted in `duplicates`. Of each
 * document, one rendering is asked about (req->n_res); documents whose file is gone are left
 * out; a page whose content another selected page holds too is asked once, about the page of
 * the most recently ingested document (the content, not the page row, is what a job's key
 * names). */
gboolean queue_ask(DqStore *s, const DqAskRequest *req, DqAskResult *res, GError **err);

/* Checks that a --where text is one self-contained expression. The store wraps it as
 * `WHERE (<text>\n) AND version = <newest>`: a text that closes the wrapper's parenthesis
 * ("1) OR (1") or comments out the rest ("1)" then an unterminated block comment) would widen
 * the filter to old document versions. Outside '...', "...", `...` and [...] it refuses SQL
 * comments (-- and slash-star), ';', '$' (PostgreSQL dollar quoting) and parentheses that close
 * more than they open or stay open; a backslash in E'...' (where a PostgreSQL escape string
 * ends is not where SQLite would end it); inside [...] anything but a name. FALSE with
 * DQ_ERR_ARGS naming --where. queue_ask checks every --where with it. */
gboolean queue_check_where(const char *expr, GError **err);

/* A question as docqa stores it, whatever its source (command line, file): `len` bytes of text
 * (-1: up to its NUL) with the surrounding Unicode whitespace trimmed (U+00A0 and the other
 * space separators, line breaks, zero-width space, byte order mark). NULL, with DQ_ERR_ARGS
 * naming `source` (e.g. "questions.txt line 3") and the question (escaped), when it is not
 * UTF-8, holds a NUL character, is empty once trimmed, or holds "<image>": that is the marker
 * of the page image in the model's prompt, and a second one would make a prompt the model
 * cannot be given (transformers' processor fails the same way); refused when asked rather than
 * failing every job of it. */
char *queue_question_normalize(const char *text, gssize len, const char *source, GError **err);

/* Reads questions from a file ("-": standard input), UTF-8 with an optional byte order mark:
 * a JSON list of strings when its first non-space character is '[', else one question a line
 * as written (quotes kept; blank lines and lines whose first non-space character is '#'
 * skipped); each through queue_question_normalize. Refused, naming the file: a first character
 * '{' (JSON lines or an object, whose syntax would become questions), a UTF-16 or UTF-32 byte
 * order mark. Errors name the file, and the line or list element. Returns a NULL-terminated
 * vector (g_strfreev). */
char **queue_read_questions(const char *path, GError **err);

/* A question for a message: one line, its first 60 characters, control and invisible
 * characters escaped (g_free). */
char *queue_question_quote(const char *question);

/* ---- working ---- */

/* Where ingest stored a page image: dq_store_page_dir_for(db_path)/<sha[0:2]>/<sha[2:4]>/<sha>.png
 * (store.h; NULL for a PostgreSQL store without DOCQA_PAGES). */
char *queue_page_image_path(const char *db_path, const char *image_sha256);

/* Whether the page store of db_path is there: its folder holds one of the store's two-hex-digit
 * folders. FALSE with DQ_ERR_IO naming the folder looked at, and why it may be missing. */
gboolean queue_page_store_usable(const char *db_path, GError **err);

/* The largest batch a worker takes: far beyond what a GPU decodes at once (a few hundred), and
 * small enough that a worker's bookkeeping for batch + lookahead jobs stays an int. */
#define DQ_MAX_BATCH 4096

/* The room a worker that may hold `jobs` jobs at once (batch + lookahead) sets aside on an
 * SQLite database's disk before its first claim, to give them back should the disk fill
 * (dq_store_keep_reserve): giving one back rewrites its row and its entries in the jobs table's
 * five indexes, six 4 KB pages in the WAL at worst (fewer as jobs claimed together lie side by
 * side), and the WAL's index (-shm) may grow a page. */
#define DQ_WORKER_RESERVE_BYTES(jobs) (((guint64)64 << 10) + (guint64)(jobs) * (24 << 10))

typedef struct {
    const char *db_path;
    const char *model_id;
    int batch;            /* requests in the model at once (N), 1 .. DQ_MAX_BATCH (more is an
                             error, 0 or less is taken as 1); the worker holds up to
                             N + the answerer's lookahead jobs (answerer.h) */
    gboolean until_empty; /* exit when no queued or running job of the model is left */
    gint64 lease_ms;      /* default 60000 */
    gint64 heartbeat_ms;  /* default lease_ms / 3 */
    gint64 backoff_ms;    /* first retry delay, doubled per attempt; default 5000 */
    gint64 poll_ms;       /* idle wait between empty claims; default 500 */
    /* Jobs this worker (or its siblings, sharing the counter) may still claim; NULL: no limit.
     * Lives in shared memory when several processes share it. */
    gint64 *job_budget;
    /* Called with the ids of the jobs each claim buried (see DqWorkerStats.buried); may be NULL.
     * queue_run looks at them again once its workers are done. */
    void (*on_buried)(void *user, const gint64 *job_ids, int n);
    void *on_buried_user;
    /* Appended to the worker's id ("host:pid:random:TAG"; NULL: "host:pid:random"), which its
     * leases and job_errors.worker record: `docqa run` gives its workers one tag of its own, so
     * that the failures its workers recorded can be told from those of workers elsewhere
     * (store_jobs_errors_after). Letters and digits only. */
    const char *owner_tag;
} DqWorkerOptions;

typedef struct {
    gint64 claimed;
    gint64 done;     /* answers written */
    gint64 retried;  /* failed attempts that went back to the queue */
    gint64 failed;   /* jobs that ended failed or dead, buried ones included */
    gint64 buried;   /* jobs this worker's claims found expired on their last attempt and
                        buried ('dead'): another worker died or hung holding them */
    gint64 released; /* given back on SIGINT, SIGTERM or SIGHUP, or when the worker stopped */
    gint64 lost;     /* answered after the lease was lost: nothing written */
    /* 1: the worker stopped because its device failed for good (answerer.h, a->broken); in a
     * run's total, how many worker processes did */
    gint64 device_failed;
    /* Dropped from the model unanswered, as a heartbeat found them gone while they ran:
     * cancelled, taken over by another worker, answered by another, or deleted. */
    gint64 withdrawn;
} DqWorkerStats;

/* Keeps up to batch + lookahead jobs in flight (continuous batching: each job is completed as soon
 * as it is answered and a new one claimed in its place) until `stop` becomes non-zero (then
 * releases the jobs in flight), the queue is empty (until_empty), or the budget is spent.
 * Returns FALSE only when the worker could not go on (database unusable, batch above
 * DQ_MAX_BATCH, its answerer's device failed for good: DQ_ERR_DEVICE and
 * stats->device_failed, see answerer.h and "a broken device" in worker.c). */
gboolean queue_worker_run(const DqWorkerOptions *opt, DqAnswerer *answerer,
                          volatile sig_atomic_t *stop, DqWorkerStats *stats, GError **err);

/* Opens an answerer inside worker process `index` (0 .. K-1), after the fork. */
typedef DqAnswerer *(*DqAnswererOpenFn)(void *user, int index, GError **err);

typedef struct {
    DqWorkerOptions worker;
    int n_workers;     /* K processes, >= 1 */
    gint64 max_jobs;   /* 0: no limit */
    gboolean progress; /* a progress line on stderr (only when it is a terminal) */
    /* When not NULL, gets (gint64) the ids of the jobs the workers' claims buried (the first
     * 65536), whoever held them: failures of this run, though the lease that ran out was
     * another worker's (store_jobs_errors_after). */
    GArray *buried_ids;
} DqRunOptions;

typedef struct {
    /* Jobs buried during the run that the late answer of the worker that held them reached
     * before it ended (store_jobs_complete keeps such an answer): done, so counted in neither
     * total.failed nor total.buried. */
    gint64 buried_answered;
    DqWorkerStats total;
    int workers_crashed; /* processes that died without reporting (signal, abort) */
    /* Worker processes that stopped because their device failed for good (exit status
     * DQ_WORKER_EXIT_DEVICE), and of them those replaced by a fresh process. */
    int device_failures, device_restarts;
    gboolean interrupted;
} DqRunResult;

/* A worker process whose device failed for good exits with this status (its jobs given back). */
#define DQ_WORKER_EXIT_DEVICE 3
/* ... and queue_run starts a fresh process (a fresh CUDA context) in its place at most this many
 * times per worker: a transient failure (memory another process held) clears, a GPU that is
 * broken, or a job that breaks it each time, does not loop. */
#define DQ_RUN_DEVICE_RESTARTS 2

/* Forks K worker processes, each opening its answerer with `open` and running
 * queue_worker_run; forwards SIGINT, SIGTERM and SIGHUP to them (as SIGTERM) and waits. Exit status
 * as the CLI's: 0 all done, 1 some jobs failed or dead, 2 could not run (err set), 130 interrupted.
 * A worker whose device failed for good (DQ_WORKER_EXIT_DEVICE) is said on stderr and replaced by
 * a fresh process up to DQ_RUN_DEVICE_RESTARTS times; one that failed once more is not, and the
 * run exits 2 (err: its device's error), however the other workers did.
 * The jobs its claims buried are looked at once every worker has ended: those a late answer
 * made done (buried_answered) are not failures of the run, whatever order it happened in. */
int queue_run(const DqRunOptions *opt, DqAnswererOpenFn open, void *open_user, DqRunResult *res,
              GError **err);

/* The line `docqa run` ends with (no newline; g_free): answered, failed (buried, answered late),
 * retried, given back, withdrawn (cancelled or taken over while they ran) and answered too late,
 * each of the last two only when there were some; the time and the rate. */
char *queue_run_summary(const DqRunResult *res, double secs);

/* ---- crash-test hooks ---- */

/* A named point (see DOCQA_TEST_KILL_AT above, and DOCQA_TEST_PAUSE_AT in common/test_point.h,
 * which holds the process there until a signal comes); does nothing unless one is set or a test
 * set a callback. */
void queue_test_point(const char *point);

/* Tests only: fn(point, user) is called at every named point, before any kill, in this process
 * and the worker processes it forks (NULL: none). It runs on the thread that reaches the point
 * (an answerer's preprocessing thread, the heartbeat's: "heartbeat:beat", after each renewal),
 * so a test can act at an exact moment of a worker's life (cancel its job just before its
 * completion) and wait there for another (its next heartbeat). */
typedef void (*QueueTestCallback)(const char *point, void *user);
void queue_test_set_callback(QueueTestCallback fn, void *user);

/* Installs queue_test_point as the store's hook when DOCQA_TEST_KILL_AT or DOCQA_TEST_PAUSE_AT
 * is set, or a callback is. */
void queue_test_hooks_install(void);

#endif
