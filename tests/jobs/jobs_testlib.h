/* Shared by the queue's tests and its benchmark: a database with documents, pages and real page
 * PNGs in the page store, and a deterministic stand-in answerer.
 *
 * The stand-in (the "hash answerer") is a TEST DOUBLE for the queue logic, not a model: its
 * answer is a hash of the page image's bytes and the question, so a test can tell exactly which
 * answer belongs to which job, and it can be slowed down or made to fail on purpose. It is never
 * linked into docqa. */
#ifndef DQ_JOBS_TESTLIB_H
#define DQ_JOBS_TESTLIB_H

#include "answerer.h"
#include "queue.h"
#include "store.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <sys/types.h>

/* Creates <dir>/docqa.db with n_docs documents of n_pages pages each (all different PNGs in the
 * page store). Returns the database path (g_free). */
char *jt_make_db(const char *dir, int n_docs, int n_pages);

/* Asks `n` questions ("question 1", ...) about every page for `model_id`; returns jobs added. */
int jt_ask(const char *db_path, int n_questions, const char *model_id, int max_attempts);

/* The hash answer of an image file and a question. */
char *jt_expected_answer(const char *image_path, const char *question);

typedef struct {
    int delay_ms;   /* per request (one request a poll), in 5 ms steps that call the inference kill
                       point */
    int fail_every; /* every n-th request (over the answerer's life) fails; 0: never */
    gboolean fail_retryable; /* failures are model errors (TRUE) or bad images (FALSE) */
    gboolean batch_fails;    /* every request fails with a model error ("batch failure") */
    int slow_first;          /* the first request submitted takes this many polls (others 1) */
    int lookahead;           /* the answerer's lookahead (answerer.h): jobs held beyond batch */
    /* Requests whose question contains fail_question fail with a model error (retried, then
     * dead), those whose question contains bad_question as a bad page image (failed at once):
     * failures that belong to given jobs, whatever order the worker takes them in. */
    const char *fail_question;
    const char *bad_question;
    /* ... and those whose question contains long_question as a question the model cannot
     * take (DQ_ERR_ARGS, "too long for the model", failed at once). */
    const char *long_question;
    /* ... and those whose question contains refused_question are refused at submit (a device
     * out of memory, say: DQ_ERR_DEVICE, a model error the worker retries). */
    const char *refused_question;
    /* ... and the request whose question contains device_question breaks the "device" (as a
     * CUDA backend keeps its first error, answerer.h) when it is in the model: it and every
     * request in the model with it fail with DQ_ERR_DEVICE, and so does every request and submit
     * after; the answerer says it is broken (a->broken, set only with this) and is "cuda:0". */
    const char *device_question;
    double ms_total; /* > 0: every answer's ms_total, instead of the time it took */
} JtAnswererConfig;

DqAnswerer *jt_answerer_new(const JtAnswererConfig *cfg);

/* queue_run's DqAnswererOpenFn for the hash answerer: user is its JtAnswererConfig (or NULL). */
DqAnswerer *jt_open_answerer(void *user, int index, GError **err);

/* The named points (jobs/queue.h, store_jobs.h) where DOCQA_TEST_KILL_AT=<point>:<n> kills a
 * worker, from claiming a batch to after completing it: every place a crash may leave the queue
 * in. NULL-terminated. The crash tests of both stores go through all of them. */
extern const char *const jt_kill_points[];

/* /queue/run/buried-then-answered's run on the database `db` (SQLite or PostgreSQL), whose one
 * job of model "m" is on its last attempt: two workers; the one that claims it answers only
 * after 1.5 s and renews its lease (300 ms) once a minute, so that the other's claim buries the
 * job before the late answer comes. Fails the test when the run cannot start. queue_run's exit
 * code, and its result in *res. */
int jt_run_buried_then_answered(const char *db, DqRunResult *res);

/* From now on (from any thread) every request in the model is answered at its next poll, however
 * many slow_first gave it: a test ends a slow request when the scene around it is set. */
void jt_answerer_hurry(DqAnswerer *a);

/* Requests submitted to it so far. */
int jt_answerer_submitted(const DqAnswerer *a);

/* Requests the worker withdrew from it so far (answerer.h): dropped before they were answered. */
int jt_answerer_withdrawn(const DqAnswerer *a);

/* Runs one worker with opt and the answerer a (the caller's, to free) until it returns; fails
 * the test when it fails. Its stats. */
DqWorkerStats jt_worker_run(const DqWorkerOptions *opt, DqAnswerer *a);

/* A forked worker process of the crash tests, on either store: model "m" of `db` with the hash
 * answerer (delay_ms a request), batches of 4 until the queue is empty, leases of lease_ms
 * renewed every 80 ms, polls every 20 ms; killed at `kill_at` (DOCQA_TEST_KILL_AT's
 * "<point>:<n>"; NULL: nowhere), its clock skew_ms off (dq_wall_clock_skew_for_test). It exits 0
 * when the worker returns, 2, its error on stderr, when the worker fails. Its pid. */
pid_t jt_spawn_worker(const char *db, gint64 lease_ms, const char *kill_at, int delay_ms,
                      gint64 skew_ms);

/* store_jobs_requeue of the jobs `filter` takes, on either store; fails the test when it fails.
 * How many went back (with dry_run: would go). */
gint64 jt_requeue(DqStore *s, const DqJobFilter *filter, gboolean dry_run);

/* jt_requeue of every job in `states` (a done one: answered approximately). */
gint64 jt_requeue_all(DqStore *s, guint states);

/* Answers every job of `model_id` in db with the hash answerer (one worker, batches of 3) until
 * the queue is empty; fails the test when the worker fails. */
void jt_run_worker(const char *db, const char *model_id);

/* `text` (a command's --json output) as a JSON object, parsed by p (which owns it); fails the
 * test, showing the text, when it is not one. */
JsonObject *jt_json_object(JsonParser *p, const char *text);

/* Runs a SELECT returning one integer. */
gint64 jt_query_int(const char *db_path, const char *sql);

/* One benchmark process: claims `batch` jobs of model "m" and completes them with a fixed answer
 * until the queue is empty; 0 on success, 2 with a message on stderr. */
int jt_drain(const char *db, int batch);

/* The benchmarks' measure: `procs` jt_drain processes (forked) on db at once, waited for; FALSE
 * when one failed. *secs: the wall time they took; *cpu_s: the CPU time they used. */
gboolean jt_drain_processes(const char *db, int procs, int batch, double *secs, double *cpu_s);

#endif
