#include "jobs_testlib.h"

#include "clock.h"
#include "dq_error.h"
#include "store_jobs.h"
#include "testutil.h"

#include <cairo.h>
#include <glib/gstdio.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define RENDER_SETTINGS "{\"longest_edge\":2048,\"n_res\":4,\"tile\":512}"

static cairo_status_t png_to_bytes(void *closure, const unsigned char *data, unsigned int len) {
    g_byte_array_append(closure, data, len);
    return CAIRO_STATUS_SUCCESS;
}

/* A small page PNG, different for every (doc, page); stored under its content address. */
static char *write_page_png(const char *db_path, int doc, int page) {
    cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 24, 32);
    cairo_t *cr = cairo_create(surf);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_set_source_rgb(cr, (doc % 7) / 7.0, (page % 11) / 11.0, ((doc * 31 + page) % 13) / 13.0);
    cairo_rectangle(cr, doc % 20, page % 28, 4, 4);
    cairo_fill(cr);
    cairo_destroy(cr);
    GByteArray *png = g_byte_array_new();
    g_assert_cmpint(cairo_surface_write_to_png_stream(surf, png_to_bytes, png), ==,
                    CAIRO_STATUS_SUCCESS);
    cairo_surface_destroy(surf);
    char *sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256, png->data, png->len);
    char *path = queue_page_image_path(db_path, sha);
    char *dir = g_path_get_dirname(path);
    g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
    g_assert_true(g_file_set_contents(path, (const char *)png->data, png->len, NULL));
    g_free(dir);
    g_free(path);
    g_byte_array_free(png, TRUE);
    return sha;
}

/* Rows are written with plain SQL here (a tests-only helper) rather than through ingest's
 * store_documents.h, so the queue's tests do not break while ingest's API moves. */
static void exec_ok(sqlite3 *db, const char *sql) {
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        g_error("%s: %s", sql, msg);
}

char *jt_make_db(const char *dir, int n_docs, int n_pages) {
    char *db_path = g_build_filename(dir, "docqa.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(db_path, &err);
    dq_assert_no_error(err);
    sqlite3 *db = dq_store_sqlite(s);
    sqlite3_stmt *doc_st = NULL, *page_st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(db,
                                       "INSERT INTO documents (path, sha256, bytes, mtime, kind, "
                                       "page_count, status) VALUES (?1, ?2, ?3, 1700000000, "
                                       "'pdf', ?4, 'ok')",
                                       -1, &doc_st, NULL),
                    ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_prepare_v2(db,
                                       "INSERT INTO pages (document_id, page_number, width, "
                                       "height, render_settings, image_sha256, status) VALUES "
                                       "(?1, ?2, 24, 32, ?3, ?4, 'ok')",
                                       -1, &page_st, NULL),
                    ==, SQLITE_OK);
    exec_ok(db, "BEGIN IMMEDIATE");
    for (int d = 0; d < n_docs; d++) {
        char *path = g_strdup_printf("/archive/%s/doc-%04d.pdf", d % 2 ? "2024" : "2023", d);
        char *sha = g_compute_checksum_for_string(G_CHECKSUM_SHA256, path, -1);
        sqlite3_bind_text(doc_st, 1, path, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(doc_st, 2, sha, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(doc_st, 3, 1000 + d);
        sqlite3_bind_int(doc_st, 4, n_pages);
        g_assert_cmpint(sqlite3_step(doc_st), ==, SQLITE_DONE);
        sqlite3_reset(doc_st);
        gint64 doc_id = sqlite3_last_insert_rowid(db);
        for (int p = 0; p < n_pages; p++) {
            char *image = write_page_png(db_path, d, p + 1);
            sqlite3_bind_int64(page_st, 1, doc_id);
            sqlite3_bind_int(page_st, 2, p + 1);
            sqlite3_bind_text(page_st, 3, RENDER_SETTINGS, -1, SQLITE_STATIC);
            sqlite3_bind_text(page_st, 4, image, -1, SQLITE_TRANSIENT);
            g_assert_cmpint(sqlite3_step(page_st), ==, SQLITE_DONE);
            sqlite3_reset(page_st);
            g_free(image);
        }
        g_free(sha);
        g_free(path);
    }
    exec_ok(db, "COMMIT");
    sqlite3_finalize(doc_st);
    sqlite3_finalize(page_st);
    store_jobs_finalize(s);
    dq_store_close(s);
    return db_path;
}

int jt_ask(const char *db_path, int n_questions, const char *model_id, int max_attempts) {
    GError *err = NULL;
    DqStore *s = dq_store_open(db_path, &err);
    dq_assert_no_error(err);
    char **qs = g_new0(char *, n_questions + 1);
    for (int i = 0; i < n_questions; i++)
        qs[i] = g_strdup_printf("question %d", i + 1);
    DqAskRequest req = {.questions = (const char *const *)qs,
                        .n_questions = n_questions,
                        .model_id = model_id,
                        .settings = {.max_attempts = max_attempts}};
    DqAskResult res;
    g_assert_true(queue_ask(s, &req, &res, &err));
    dq_assert_no_error(err);
    g_strfreev(qs);
    store_jobs_finalize(s);
    dq_store_close(s);
    return res.added;
}

char *jt_expected_answer(const char *image_path, const char *question) {
    char *data = NULL;
    gsize len = 0;
    if (!g_file_get_contents(image_path, &data, &len, NULL))
        return NULL;
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    g_checksum_update(c, (const guchar *)data, (gssize)len);
    g_checksum_update(c, (const guchar *)question, -1);
    char *answer = g_strndup(g_checksum_get_string(c), 16);
    g_checksum_free(c);
    g_free(data);
    return answer;
}

/* ---- the hash answerer (a test double) ---- */

typedef struct {
    gint64 tag;
    char *image_path, *question, *prompt_template;
    int steps_left; /* polls until it is answered */
} JtRequest;

typedef struct {
    DqAnswerer base;
    JtAnswererConfig cfg;
    int served, submitted, withdrawn;
    gboolean broken; /* device_question was in the model */
    gint hurried;    /* jt_answerer_hurry: every request is answered at its next poll */
    GQueue pending;  /* JtRequest, in submission order */
} JtAnswerer;

static void jt_request_free(gpointer p) {
    JtRequest *r = p;
    g_free(r->image_path);
    g_free(r->question);
    g_free(r->prompt_template);
    g_free(r);
}

/* The kept error of a broken stand-in, worded as the CUDA backend's (backend_cuda.cu). */
#define JT_DEVICE_ERROR                                                                            \
    "cuda:0: a decode step failed: out of memory (injected by the hash answerer)"

static gboolean jt_submit(DqAnswerer *self, const DqAnswerRequest *req, gint64 tag, GError **err) {
    JtAnswerer *a = (JtAnswerer *)self;
    if (a->broken)
        return dq_fail(err, DQ_ERR_DEVICE, JT_DEVICE_ERROR);
    if (a->cfg.refused_question != NULL && strstr(req->question, a->cfg.refused_question))
        return dq_fail(err, DQ_ERR_DEVICE, "refused at submit: out of device memory");
    JtRequest *r = g_new0(JtRequest, 1);
    r->tag = tag;
    r->image_path = g_strdup(req->image_path);
    /* The worker asks for the page file to be checked against the page's SHA-256, the name
     * it is stored under (answerer.h). */
    char *base = g_path_get_basename(req->image_path);
    g_assert_nonnull(req->image_sha256);
    g_assert_true(g_str_has_prefix(base, req->image_sha256));
    g_free(base);
    r->question = g_strdup(req->question);
    r->prompt_template = g_strdup(req->prompt_template);
    r->steps_left = a->submitted++ == 0 && a->cfg.slow_first > 1 ? a->cfg.slow_first : 1;
    g_queue_push_tail(&a->pending, r);
    return TRUE;
}

/* A continuous batch in miniature: the oldest `batch` requests are "in the model"; a poll is one
 * step for each of them (delay_ms each), and a request leaves when its steps are done. */
static int jt_poll(DqAnswerer *self, DqAnswerDone *done, int max) {
    JtAnswerer *a = (JtAnswerer *)self;
    int k = 0, in_model = 0;
    /* A step with the breaking request in it fails whole, and every step after it. */
    for (GList *l = a->pending.head;
         a->cfg.device_question != NULL && l != NULL && in_model < MAX(self->batch, 1);
         l = l->next, in_model++)
        a->broken |= strstr(((JtRequest *)l->data)->question, a->cfg.device_question) != NULL;
    in_model = 0;
    while (a->broken && a->pending.head != NULL && in_model++ < MAX(self->batch, 1) && k < max) {
        JtRequest *r = g_queue_pop_head(&a->pending);
        memset(&done[k], 0, sizeof done[k]);
        done[k].tag = r->tag;
        dq_fail(&done[k++].result.error, DQ_ERR_DEVICE, JT_DEVICE_ERROR);
        jt_request_free(r);
    }
    if (a->broken)
        return k;
    in_model = 0;
    for (GList *l = a->pending.head, *next; l != NULL && in_model < MAX(self->batch, 1) && k < max;
         l = next, in_model++) {
        JtRequest *r = l->data;
        next = l->next;
        double t0 = g_get_monotonic_time() / 1000.0;
        for (int t = 0; t < a->cfg.delay_ms; t += 5) {
            queue_test_point("answerer:inference");
            if (self->cancel && *self->cancel)
                return k; /* the worker releases what is in flight */
            g_usleep(5000);
        }
        queue_test_point("answerer:inference");
        if (--r->steps_left > 0 && !g_atomic_int_get(&a->hurried))
            continue;
        g_queue_delete_link(&a->pending, l);
        DqAnswerResult *out = &done[k].result;
        memset(&done[k], 0, sizeof done[k]);
        done[k++].tag = r->tag;
        a->served++;
        if (a->cfg.batch_fails)
            dq_fail(&out->error, DQ_ERR_MODEL, "hash answerer: batch failure injected");
        else if (a->cfg.fail_every > 0 && a->served % a->cfg.fail_every == 0)
            dq_fail(&out->error, a->cfg.fail_retryable ? DQ_ERR_MODEL : DQ_ERR_FORMAT,
                    "%s: failure injected by the hash answerer", r->image_path);
        else if (a->cfg.fail_question && strstr(r->question, a->cfg.fail_question))
            dq_fail(&out->error, DQ_ERR_MODEL, "hash answerer: this question fails");
        else if (a->cfg.bad_question && strstr(r->question, a->cfg.bad_question))
            dq_fail(&out->error, DQ_ERR_FORMAT, "hash answerer: this question's image is bad");
        else if (a->cfg.long_question && strstr(r->question, a->cfg.long_question))
            dq_fail(&out->error, DQ_ERR_ARGS, "too long for the model (hash answerer)");
        else if ((out->text = jt_expected_answer(r->image_path, r->question)) == NULL)
            dq_fail(&out->error, DQ_ERR_IO, "%s: cannot read", r->image_path);
        else {
            out->prompt_tokens = (int)strlen(r->prompt_template);
            out->generated_tokens = 1;
            out->ms_total =
                a->cfg.ms_total > 0 ? a->cfg.ms_total : g_get_monotonic_time() / 1000.0 - t0;
        }
        jt_request_free(r);
    }
    return k;
}

static gboolean jt_withdraw(DqAnswerer *self, gint64 tag) {
    JtAnswerer *a = (JtAnswerer *)self;
    for (GList *l = a->pending.head; l != NULL; l = l->next) {
        JtRequest *r = l->data;
        if (r->tag == tag) {
            g_queue_delete_link(&a->pending, l);
            jt_request_free(r);
            a->withdrawn++;
            return TRUE;
        }
    }
    return FALSE;
}

static gboolean jt_broken(DqAnswerer *self, GError **err) {
    JtAnswerer *a = (JtAnswerer *)self;
    return a->broken && !dq_fail(err, DQ_ERR_DEVICE, JT_DEVICE_ERROR);
}

static void jt_free(DqAnswerer *self) {
    JtAnswerer *a = (JtAnswerer *)self;
    g_queue_clear_full(&a->pending, jt_request_free);
    g_free(self);
}

DqAnswerer *jt_answerer_new(const JtAnswererConfig *cfg) {
    JtAnswerer *a = g_new0(JtAnswerer, 1);
    a->base.submit = jt_submit;
    a->base.poll = jt_poll;
    a->base.withdraw = jt_withdraw;
    a->base.free = jt_free;
    g_queue_init(&a->pending);
    if (cfg)
        a->cfg = *cfg;
    a->base.lookahead = a->cfg.lookahead;
    if (a->cfg.device_question != NULL) {
        a->base.broken = jt_broken;
        a->base.device = "cuda:0";
    }
    return &a->base;
}

void jt_answerer_hurry(DqAnswerer *a) {
    g_atomic_int_set(&((JtAnswerer *)a)->hurried, 1);
}

int jt_answerer_submitted(const DqAnswerer *a) {
    return ((const JtAnswerer *)a)->submitted;
}

DqAnswerer *jt_open_answerer(void *user, int index, GError **err) {
    (void)index;
    return jt_answerer_new(user);
}

const char *const jt_kill_points[] = {
    "worker:claimed",
    "answerer:inference",
    "worker:before_complete",
    "claim:before_commit",
    "complete:after_job_update",
    "complete:before_commit",
    "commit",
    "complete:after_commit",
    "worker:after_complete",
    NULL,
};

int jt_run_buried_then_answered(const char *db, DqRunResult *res) {
    JtAnswererConfig cfg = {.delay_ms = 1500};
    DqRunOptions ro = {.worker = {.db_path = db,
                                  .model_id = "m",
                                  .batch = 1,
                                  .until_empty = TRUE,
                                  .lease_ms = 300,
                                  .heartbeat_ms = 60000,
                                  .poll_ms = 20},
                       .n_workers = 2};
    GError *err = NULL;
    int code = queue_run(&ro, jt_open_answerer, &cfg, res, &err);
    dq_assert_no_error(err);
    return code;
}

int jt_answerer_withdrawn(const DqAnswerer *a) {
    return ((const JtAnswerer *)a)->withdrawn;
}

void jt_run_worker(const char *db, const char *model_id) {
    DqAnswerer *a = jt_answerer_new(NULL);
    DqWorkerOptions opt = {.db_path = db, .model_id = model_id, .batch = 3, .until_empty = TRUE};
    jt_worker_run(&opt, a);
    dq_answerer_free(a);
}

DqWorkerStats jt_worker_run(const DqWorkerOptions *opt, DqAnswerer *a) {
    volatile sig_atomic_t stop = 0;
    DqWorkerStats stats;
    GError *err = NULL;
    g_assert_true(queue_worker_run(opt, a, &stop, &stats, &err));
    dq_assert_no_error(err);
    return stats;
}

/* CPU seconds of the children waited for so far. */
static double children_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

gboolean jt_drain_processes(const char *db, int procs, int batch, double *secs, double *cpu_s) {
    fflush(NULL);
    gint64 t0 = g_get_monotonic_time();
    double c0 = children_cpu_s();
    pid_t *pids = g_new0(pid_t, procs);
    for (int i = 0; i < procs; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(jt_drain(db, batch));
    }
    gboolean ok = TRUE;
    for (int i = 0; i < procs; i++) {
        int status = 0;
        waitpid(pids[i], &status, 0);
        ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    *secs = (double)(g_get_monotonic_time() - t0) / 1e6;
    *cpu_s = children_cpu_s() - c0;
    g_free(pids);
    return ok;
}

pid_t jt_spawn_worker(const char *db, gint64 lease_ms, const char *kill_at, int delay_ms,
                      gint64 skew_ms) {
    fflush(NULL);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        if (kill_at)
            g_setenv("DOCQA_TEST_KILL_AT", kill_at, TRUE);
        else
            g_unsetenv("DOCQA_TEST_KILL_AT");
        if (skew_ms != 0)
            dq_wall_clock_skew_for_test(skew_ms);
        JtAnswererConfig cfg = {.delay_ms = delay_ms};
        DqAnswerer *a = jt_answerer_new(&cfg);
        DqWorkerOptions opt = {.db_path = db,
                               .model_id = "m",
                               .batch = 4,
                               .until_empty = TRUE,
                               .lease_ms = lease_ms,
                               .heartbeat_ms = 80,
                               .backoff_ms = 1,
                               .poll_ms = 20};
        volatile sig_atomic_t stop = 0;
        DqWorkerStats stats;
        GError *err = NULL;
        gboolean ok = queue_worker_run(&opt, a, &stop, &stats, &err);
        if (!ok)
            fprintf(stderr, "worker: %s\n", err->message);
        _exit(ok ? 0 : 2);
    }
    return pid;
}

gint64 jt_requeue_all(DqStore *s, guint states) {
    DqJobFilter every = {.states = states};
    return jt_requeue(s, &every, FALSE);
}

gint64 jt_requeue(DqStore *s, const DqJobFilter *filter, gboolean dry_run) {
    GError *err = NULL;
    GPtrArray *groups = store_jobs_requeue(s, filter, dry_run, &err);
    dq_assert_no_error(err);
    gint64 n = 0;
    for (guint i = 0; i < groups->len; i++)
        n += ((const DqJobGroup *)g_ptr_array_index(groups, i))->jobs;
    g_ptr_array_free(groups, TRUE);
    return n;
}

JsonObject *jt_json_object(JsonParser *p, const char *text) {
    GError *err = NULL;
    if (!json_parser_load_from_data(p, text, -1, &err))
        g_error("not JSON (%s): %s", err->message, text);
    g_assert_true(JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)));
    return json_node_get_object(json_parser_get_root(p));
}

gint64 jt_query_int(const char *db_path, const char *sql) {
    sqlite3 *db = NULL;
    g_assert_cmpint(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
    sqlite3_busy_timeout(db, 60000);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        g_error("%s: %s", sql, sqlite3_errmsg(db));
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    gint64 v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* One process: claim `batch` jobs, complete them, until the queue is empty. */
int jt_drain(const char *db, int batch) {
    GError *err = NULL;
    DqStore *s = dq_store_open(db, &err);
    if (s == NULL) {
        fprintf(stderr, "bench: %s\n", err->message);
        return 2;
    }
    char *owner = g_strdup_printf("bench:%d", (int)getpid());
    int rc = 0;
    for (;;) {
        GPtrArray *jobs =
            store_jobs_claim(s, owner, "m", batch, g_get_real_time() / 1000, 60000, NULL, &err);
        if (jobs == NULL) {
            fprintf(stderr, "bench: %s\n", err->message);
            rc = 2;
            break;
        }
        if (jobs->len == 0) {
            g_ptr_array_free(jobs, TRUE);
            break;
        }
        DqJobAnswer *ans = g_new0(DqJobAnswer, jobs->len);
        for (guint i = 0; i < jobs->len; i++)
            ans[i] = (DqJobAnswer){.job_id = ((DqClaimedJob *)g_ptr_array_index(jobs, i))->job_id,
                                   .text = "x",
                                   .started_at = "2026-01-01T00:00:00.000Z",
                                   .finished_at = "2026-01-01T00:00:00.000Z"};
        int written = 0;
        gboolean ok = store_jobs_complete(s, owner, ans, (int)jobs->len, &written, &err);
        g_free(ans);
        g_ptr_array_free(jobs, TRUE);
        if (!ok) {
            fprintf(stderr, "bench: %s\n", err->message);
            rc = 2;
            break;
        }
    }
    g_free(owner);
    dq_store_close(s);
    return rc;
}
