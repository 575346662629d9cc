/* The store's contract, one test body run against SQLite and against a real PostgreSQL server
 * (pg_testlib.h; skipped with the reason when this machine has no PostgreSQL): migrations,
 * documents and pages, asking, the claim with leases, the lease-owner guard on completion,
 * reclaim of expired leases, failure and requeue (approximate answers replaced, the old ones
 * kept), reading answers, and `docqa migrate`'s copy
 * SQLite -> PostgreSQL -> SQLite without loss. */
#include "clock.h"
#include "dq_error.h"
#include "jobs_testlib.h"
#include "pg_testlib.h"
#include "store.h"
#include "store_documents.h"
#include "store_internal.h"
#include "store_jobs.h"
#include "store_migrate.h"
#include "store_pg.h"
#include "testutil.h"

#include <glib/gstdio.h>
#include <libpq-fe.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>

static PgtServer *server;
static char *server_why_not;
static int db_counter;

/* A fresh, empty database of the given kind; NULL (test skipped) when PostgreSQL is missing. */
static char *new_location(const char *kind) {
    if (strcmp(kind, "sqlite") == 0) {
        char *dir = dq_test_tmpdir();
        char *path = g_strdup_printf("sqlite:%s/docqa-%d.db", dir, ++db_counter);
        g_free(dir);
        return path;
    }
    if (server == NULL) {
        g_test_skip(server_why_not);
        return NULL;
    }
    char *name = g_strdup_printf("docqa_%d", ++db_counter);
    char *loc = pgt_new_database(server, name);
    g_free(name);
    return loc;
}

static const char *SETTINGS = "{\"n_res\":5}";

/* One document with 3 pages that have images and 1 failed page. */
static gint64 add_document(DqStore *s, const char *path, const char *sha) {
    char img[3][65];
    for (int i = 0; i < 3; i++)
        g_snprintf(img[i], sizeof img[i], "%c%063d", 'a' + i, 0);
    DqPageRow pages[4] = {
        {.page_number = 1,
         .width = 10,
         .height = 20,
         .source_width = 612.5,
         .source_height = 792.25,
         .image_sha256 = img[0],
         .status = "ok"},
        {.page_number = 2, .width = 10, .height = 20, .image_sha256 = img[1], .status = "ok"},
        {.page_number = 3,
         .width = 10,
         .height = 20,
         .image_sha256 = img[2],
         .status = "partial",
         .error_code = "damaged",
         .error_message = "strip 3 short"},
        {.page_number = 4, .status = "failed", .error_code = "damaged", .error_message = "bad"},
    };
    DqDocumentRow doc = {.path = path,
                         .sha256 = sha,
                         .bytes = 1234,
                         .mtime = 1700000000,
                         .kind = "pdf",
                         .page_count = 4,
                         .status = "partial"};
    gint64 id = 0;
    int version = 0;
    GError *err = NULL;
    g_assert_true(
        dq_store_document_record(s, &doc, 0, FALSE, SETTINGS, pages, 4, &id, &version, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(id, >, 0);
    return id;
}

/* The pages of `all` that have an image (the others counted in *n_failed, may be NULL); `all` is
 * freed. */
static GPtrArray *usable_pages(GPtrArray *all, int *n_failed) {
    g_assert_nonnull(all);
    GPtrArray *pages = g_ptr_array_new_with_free_func((GDestroyNotify)dq_ask_page_free);
    int failed = 0;
    for (guint i = 0; i < all->len; i++) {
        DqAskPage *p = g_ptr_array_index(all, i);
        if (p->usable)
            g_ptr_array_add(pages, g_ptr_array_steal_index(all, i--));
        else
            failed++;
    }
    g_ptr_array_free(all, TRUE);
    if (n_failed)
        *n_failed = failed;
    return pages;
}

static int enqueue_pages(DqStore *s, GPtrArray *pages, const char *question);

static int enqueue_all(DqStore *s, const char *question) {
    GError *err = NULL;
    GPtrArray *pages = usable_pages(store_jobs_select_pages(s, NULL, 0, NULL, 0, &err), NULL);
    dq_assert_no_error(err);
    return enqueue_pages(s, pages, question);
}

static DqJobAnswer answer_for(gint64 job_id, const char *text) {
    return (DqJobAnswer){.job_id = job_id,
                         .text = text,
                         .prompt_tokens = 100,
                         .generated_tokens = 3,
                         .started_at = "2026-01-01T00:00:00.000Z",
                         .finished_at = "2026-01-01T00:00:01.250Z",
                         .ms_total = 1250.125,
                         .device = "cpu",
                         .weights = "stored",
                         .exact = 1};
}

/* store_jobs_complete of the n answers as owner, every one of them written. */
static void complete_all(DqStore *s, const char *owner, const DqJobAnswer *ans, int n) {
    int written = 0;
    GError *err = NULL;
    g_assert_true(store_jobs_complete(s, owner, ans, n, &written, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(written, ==, n);
}

static gboolean collect_answer(const DqAnswerRow *row, void *user, GError **err) {
    g_string_append_printf(user, "%s|%d|%s|%s|%s|%s|%s|%s|%s\n", row->document_path, row->page,
                           row->question, row->answer, row->model, row->finished_at,
                           row->device ? row->device : "NULL", row->weights ? row->weights : "NULL",
                           row->exact < 0 ? "unknown"
                           : row->exact   ? "exact"
                                          : "approximate");
    return TRUE;
}

static char *answers_text(DqStore *s) {
    GString *out = g_string_new(NULL);
    GError *err = NULL;
    g_assert_true(store_jobs_each_answer(s, NULL, FALSE, NULL, NULL, collect_answer, out, &err));
    dq_assert_no_error(err);
    return g_string_free(out, FALSE);
}

/* One integer from a query, on either kind of store. */
static gint64 query_int(DqStore *s, const char *loc, const char *sql) {
    if (dq_store_kind(s) == DQ_STORE_POSTGRES)
        return pgt_query_int(loc, sql);
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(dq_store_sqlite(s), sql, -1, &st, NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    gint64 v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The pages with an image, as a docqa at an older schema selected them (this docqa's selection
 * reads columns such a schema lacks): ids, page numbers and render settings, in id order. */
static GPtrArray *old_schema_pages(DqStore *s, const char *loc) {
    GPtrArray *pages = g_ptr_array_new_with_free_func((GDestroyNotify)dq_ask_page_free);
    gint64 n = query_int(s, loc, "SELECT count(*) FROM pages WHERE image_sha256 IS NOT NULL");
    for (gint64 k = 0; k < n; k++) {
        char *where = g_strdup_printf("FROM pages WHERE image_sha256 IS NOT NULL ORDER BY id LIMIT "
                                      "1 OFFSET %" G_GINT64_FORMAT,
                                      k);
        char *id = g_strconcat("SELECT id ", where, NULL);
        char *num = g_strconcat("SELECT page_number ", where, NULL);
        char *doc = g_strconcat("SELECT document_id ", where, NULL);
        DqAskPage *p = g_new0(DqAskPage, 1);
        p->page_id = query_int(s, loc, id);
        p->page_number = (int)query_int(s, loc, num);
        p->document_id = query_int(s, loc, doc);
        p->document_sha256 = g_strdup_printf("doc-%" G_GINT64_FORMAT, p->document_id);
        p->render_settings = g_strdup_printf("settings of page %" G_GINT64_FORMAT, p->page_id);
        p->usable = TRUE;
        g_ptr_array_add(pages, p);
        g_free(id);
        g_free(num);
        g_free(doc);
        g_free(where);
    }
    return pages;
}

static int enqueue_pages(DqStore *s, GPtrArray *pages, const char *question) {
    GError *err = NULL;
    gint64 qid = 0;
    g_assert_true(store_jobs_question_id(s, question, &qid, &err));
    DqNewJob *jobs = g_new0(DqNewJob, pages->len);
    char **keys = g_new0(char *, pages->len + 1);
    for (guint i = 0; i < pages->len; i++) {
        DqAskPage *p = g_ptr_array_index(pages, i);
        keys[i] = g_strdup_printf("%s/%d/%s", p->document_sha256, p->page_number, question);
        jobs[i] = (DqNewJob){.page_id = p->page_id,
                             .question_id = qid,
                             .model_id = "m",
                             .generation_settings = "{}",
                             .job_key = keys[i],
                             .max_attempts = 2};
    }
    int added = -1;
    g_assert_true(store_jobs_enqueue(s, jobs, (int)pages->len, &added, &err));
    dq_assert_no_error(err);
    g_free(jobs);
    g_strfreev(keys);
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc): g_strfreev freed it
    g_ptr_array_free(pages, TRUE);
    return added;
}

static void test_lifecycle(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    int v = dq_store_schema_version(s);
    g_assert_cmpint(v, ==, 16);
    g_assert_cmpint(dq_store_kind(s), ==,
                    strcmp(kind, "sqlite") == 0 ? DQ_STORE_SQLITE : DQ_STORE_POSTGRES);
    dq_store_close(s);
    s = dq_store_open(loc, &err); /* reopening applies nothing twice */
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), ==, v);

    /* Documents: recorded once, found again, pages counted per render settings. */
    gint64 doc = add_document(s, "/archive/a.pdf", "1111");
    DqDocumentLookup found;
    g_assert_true(dq_store_document_find(s, "/archive/a.pdf", "1111", SETTINGS, &found, &err));
    g_assert_cmpint(found.id, ==, doc);
    g_assert_cmpint(found.version, ==, 1);
    g_assert_cmpint(found.pages_with_settings, ==, 4);
    g_assert_cmpstr(found.status, ==, "partial");
    dq_document_lookup_clear(&found);
    gint64 doc2 = add_document(s, "/archive/a.pdf", "2222"); /* changed bytes: version 2 */
    g_assert_true(dq_store_document_find(s, "/archive/a.pdf", "2222", SETTINGS, &found, &err));
    g_assert_cmpint(found.version, ==, 2);
    dq_document_lookup_clear(&found);

    /* Stamps (schema 0013): the newest version's only; dev and inode keep all 64 bits. */
    const DqDocumentStamp stamp = {.dev = G_MININT64 + 7,
                                   .inode = -2,
                                   .bytes = 1234,
                                   .mtime_ns = G_GINT64_CONSTANT(1700000000123456789),
                                   .ctime_ns = G_GINT64_CONSTANT(1700000001987654321)};
    DqDocumentStamp got;
    gint64 stamped = -1;
    char *stamped_sha = NULL;
    g_assert_true(dq_store_document_stamp_set(s, doc, &stamp, &err)); /* version 1: old */
    dq_assert_no_error(err);
    g_assert_true(
        dq_store_document_stamp_find(s, "/archive/a.pdf", &stamped, &stamped_sha, &got, &err));
    g_assert_cmpint(stamped, ==, 0);
    g_assert_null(stamped_sha);
    g_assert_true(dq_store_document_stamp_set(s, doc2, &stamp, &err));
    DqDocumentStamp later = stamp;
    later.ctime_ns++;
    g_assert_true(dq_store_document_stamp_set(s, doc2, &later, &err)); /* replaced */
    g_assert_true(
        dq_store_document_stamp_find(s, "/archive/a.pdf", &stamped, &stamped_sha, &got, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(stamped, ==, doc2);
    g_assert_cmpstr(stamped_sha, ==, "2222");
    g_assert_cmpint(got.dev, ==, later.dev);
    g_assert_cmpint(got.inode, ==, later.inode);
    g_assert_cmpint(got.bytes, ==, later.bytes);
    g_assert_cmpint(got.mtime_ns, ==, later.mtime_ns);
    g_assert_cmpint(got.ctime_ns, ==, later.ctime_ns);
    g_free(stamped_sha);

    /* Asking: only the newest version's 3 pages with images; twice adds nothing. */
    g_assert_cmpint(enqueue_all(s, "What is the total?"), ==, 3);
    g_assert_cmpint(enqueue_all(s, "What is the total?"), ==, 0);
    g_assert_cmpint(enqueue_all(s, "Who signed?"), ==, 3);
    int n_failed = 0;
    GPtrArray *pages =
        usable_pages(store_jobs_select_pages(s, (gint64[]){doc}, 1, NULL, 0, &err), &n_failed);
    dq_assert_no_error(err);
    g_assert_cmpint(pages->len, ==, 3);
    g_assert_cmpint(n_failed, ==, 1);
    g_ptr_array_free(pages, TRUE);
    const char *where[] = {"path LIKE '%/archive/%'"};
    pages = usable_pages(store_jobs_select_pages(s, NULL, 0, where, 1, &err), NULL);
    dq_assert_no_error(err);
    g_assert_cmpint(pages->len, ==, 3);
    g_assert_cmpint(((DqAskPage *)g_ptr_array_index(pages, 0))->document_id, ==, doc2);
    g_ptr_array_free(pages, TRUE);
    const char *evil[] = {"1=1); DELETE FROM jobs; SELECT (1", "id IN (SELECT page_id FROM jobs)",
                          "id = (SELECT 1 FROM answers)"};
    for (guint i = 0; i < G_N_ELEMENTS(evil); i++) {
        g_assert_null(store_jobs_select_pages(s, NULL, 0, &evil[i], 1, &err));
        g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
        g_clear_error(&err);
    }
    g_assert_cmpint(enqueue_all(s, "What is the total?"), ==, 0); /* the jobs are still there */
    const char *sub[] = {"id IN (SELECT max(id) FROM documents)"};
    pages = usable_pages(store_jobs_select_pages(s, NULL, 0, sub, 1, &err), NULL);
    dq_assert_no_error(err);
    g_assert_cmpint(pages->len, ==, 3);
    g_ptr_array_free(pages, TRUE);

    /* Claims: disjoint batches, oldest first; nothing left for a third worker. */
    gint64 now = 1000000;
    GPtrArray *a = store_jobs_claim(s, "A", "m", 4, now, 1000, NULL, &err);
    dq_assert_no_error(err);
    GPtrArray *b = store_jobs_claim(s, "B", "m", 4, now, 1000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(a->len, ==, 4);
    g_assert_cmpint(b->len, ==, 2);
    GPtrArray *c = store_jobs_claim(s, "C", "m", 4, now, 1000, NULL, &err);
    g_assert_cmpint(c->len, ==, 0);
    g_ptr_array_free(c, TRUE);
    DqClaimedJob *a0 = g_ptr_array_index(a, 0);
    g_assert_cmpint(a0->attempt, ==, 1);
    g_assert_cmpstr(a0->document_path, ==, "/archive/a.pdf");
    g_assert_nonnull(a0->image_sha256);
    g_assert_cmpint(a0->job_id, <, ((DqClaimedJob *)g_ptr_array_index(b, 0))->job_id);

    /* The guard: B cannot finish A's jobs; A can. */
    DqJobAnswer ans[4];
    for (int i = 0; i < 4; i++)
        ans[i] = answer_for(((DqClaimedJob *)g_ptr_array_index(a, i))->job_id, "42");
    /* How each was computed, as the answers table keeps it. */
    ans[1].device = "cuda:0";
    ans[1].exact = 0;
    ans[2].weights = "int8";
    ans[2].exact = 0;
    ans[3].device = ans[3].weights = NULL;
    ans[3].exact = -1;
    int written = -1;
    g_assert_true(store_jobs_complete(s, "B", ans, 4, &written, &err));
    g_assert_cmpint(written, ==, 0);
    complete_all(s, "A", ans, 4);
    /* Twice (a retry after a lost COMMIT reply): the answers are found stored, not again. */
    complete_all(s, "A", ans, 4);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers"), ==, 4);
    ans[0].text = "another answer"; /* not this one: late */
    g_assert_true(store_jobs_complete(s, "A", ans, 1, &written, &err));
    g_assert_cmpint(written, ==, 0);
    ans[0].text = "42";

    /* B's leases expire: B's own claim leaves them to it (it is still answering them); C
     * reclaims and gets them as second attempts; B's heartbeat and completion then find
     * nothing. */
    int held = -1;
    g_assert_true(store_jobs_heartbeat(s, "B", now + 500, 1000, &held, &err));
    g_assert_cmpint(held, ==, 2);
    c = store_jobs_claim(s, "B", "m", 4, now + 1501 + 500, 1000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(c->len, ==, 0);
    g_ptr_array_free(c, TRUE);
    g_assert_true(store_jobs_heartbeat(s, "B", now + 1501 + 500, 1000, &held, &err));
    g_assert_cmpint(held, ==, 2); /* a late heartbeat still finds them */
    now += 1500;                  /* past those renewed leases, as they were before */
    c = store_jobs_claim(s, "C", "m", 4, now + 1501 + 500, 1000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(c->len, ==, 2);
    g_assert_cmpint(((DqClaimedJob *)g_ptr_array_index(c, 0))->attempt, ==, 2);
    g_assert_true(store_jobs_heartbeat(s, "B", now + 2100, 1000, &held, &err));
    g_assert_cmpint(held, ==, 0);
    DqJobAnswer late = answer_for(((DqClaimedJob *)g_ptr_array_index(b, 0))->job_id, "late");
    g_assert_true(store_jobs_complete(s, "B", &late, 1, &written, &err));
    g_assert_cmpint(written, ==, 0);

    /* Failures: the last attempt of a retryable failure buries the job; a bad input fails. */
    DqJobState st = DQ_JOB_N_STATES;
    g_assert_true(store_jobs_fail(s, "C", ((DqClaimedJob *)g_ptr_array_index(c, 0))->job_id,
                                  "model", "out of memory", TRUE, now + 2200, 10, &st, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(st, ==, DQ_JOB_DEAD);
    g_assert_true(store_jobs_fail(s, "C", ((DqClaimedJob *)g_ptr_array_index(c, 1))->job_id,
                                  "page_image", "missing", FALSE, now + 2200, 10, &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_FAILED);
    /* Again (a retry after a lost COMMIT reply): what the first call did, recorded once. */
    st = DQ_JOB_N_STATES;
    g_assert_true(store_jobs_fail(s, "C", ((DqClaimedJob *)g_ptr_array_index(c, 1))->job_id,
                                  "page_image", "missing", FALSE, now + 2200, 10, &st, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(st, ==, DQ_JOB_FAILED);
    DqJobCounts counts;
    g_assert_true(store_jobs_counts(s, "m", &counts, &err));
    g_assert_cmpint(counts.total, ==, 6);
    g_assert_cmpint(counts.by_state[DQ_JOB_DONE], ==, 4);
    g_assert_cmpint(counts.by_state[DQ_JOB_DEAD], ==, 1);
    g_assert_cmpint(counts.by_state[DQ_JOB_FAILED], ==, 1);
    /* v_progress's rows, as `docqa status --json` gives them: the same on both stores */
    GPtrArray *progress = store_jobs_progress(s, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(progress->len, ==, 2); /* in the order the questions were asked */
    const char *questions[] = {"What is the total?", "Who signed?"};
    const gint64 done[] = {3, 1}, failed[] = {0, 1}, dead[] = {0, 1};
    const double percent[] = {100.0, 33.3};
    for (guint i = 0; i < progress->len; i++) {
        const DqProgressRow *row = g_ptr_array_index(progress, i);
        g_assert_cmpstr(row->question, ==, questions[i]);
        g_assert_cmpstr(row->model_id, ==, "m");
        g_assert_cmpint(row->total, ==, 3);
        g_assert_cmpint(row->done, ==, done[i]);
        g_assert_cmpint(row->failed, ==, failed[i]);
        g_assert_cmpint(row->dead, ==, dead[i]);
        g_assert_cmpint(row->queued + row->running + row->stalled + row->cancelled, ==, 0);
        g_assert_cmpfloat_with_epsilon(row->percent_done, percent[i], 1e-9);
        g_assert_nonnull(row->asked_at);
        g_assert_nonnull(row->last_finished_at);
    }
    g_ptr_array_free(progress, TRUE);
    GPtrArray *errs = store_jobs_top_errors(s, 5, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(errs->len, ==, 3);
    g_assert_cmpstr(((DqErrorReason *)g_ptr_array_index(errs, 0))->kind, ==, "lease_expired");
    g_assert_cmpint(((DqErrorReason *)g_ptr_array_index(errs, 0))->jobs, ==, 2);
    g_ptr_array_free(errs, TRUE);

    /* Requeue, then a release gives the attempt back. */
    gint64 requeued = jt_requeue_all(s, (1u << DQ_JOB_DEAD) | (1u << DQ_JOB_FAILED));
    g_assert_cmpint(requeued, ==, 2);
    GPtrArray *d = store_jobs_claim(s, "D", "m", 10, now + 3000, 1000, NULL, &err);
    g_assert_cmpint(d->len, ==, 2);
    int released = 0;
    g_assert_true(store_jobs_release(s, "D", &released, &err));
    g_assert_cmpint(released, ==, 2);
    g_assert_true(store_jobs_counts(s, NULL, &counts, &err));
    g_assert_cmpint(counts.by_state[DQ_JOB_QUEUED], ==, 2);
    g_assert_cmpint(counts.retrying, ==, 0);

    char *text = answers_text(s);
    g_assert_cmpint(strlen(text), >, 0);
    g_assert_nonnull(strstr(text, "/archive/a.pdf|1|What is the total?|42|m|"
                                  "2026-01-01T00:00:01.250Z|cpu|stored|exact\n"));
    g_assert_nonnull(strstr(text, "|42|m|2026-01-01T00:00:01.250Z|cuda:0|stored|approximate\n"));
    g_assert_nonnull(strstr(text, "|42|m|2026-01-01T00:00:01.250Z|cpu|int8|approximate\n"));
    g_assert_nonnull(strstr(text, "|42|m|2026-01-01T00:00:01.250Z|NULL|NULL|unknown\n"));
    GPtrArray *engines = store_jobs_answer_engines(s, &err);
    dq_assert_no_error(err);
    GString *by = g_string_new(NULL);
    for (guint i = 0; i < engines->len; i++) {
        const DqAnswerEngine *e = g_ptr_array_index(engines, i);
        g_string_append_printf(by, "%s/%s/%d/%" G_GINT64_FORMAT " ", e->device ? e->device : "NULL",
                               e->weights ? e->weights : "NULL", e->exact, e->answers);
    }
    g_assert_cmpstr(by->str, ==, "cpu/int8/0/1 cpu/stored/1/1 cuda:0/stored/0/1 NULL/NULL/-1/1 ");
    g_ptr_array_free(engines, TRUE);
    /* Ties with an unknown mode: last on both stores (SQLite sorts NULL first, PostgreSQL last,
     * unless told). */
    g_assert_true(dq_store_exec(s, "UPDATE answers SET device = 'cpu' WHERE device IS NULL", &err));
    engines = store_jobs_answer_engines(s, &err);
    dq_assert_no_error(err);
    g_string_truncate(by, 0);
    for (guint i = 0; i < engines->len; i++) {
        const DqAnswerEngine *e = g_ptr_array_index(engines, i);
        g_string_append_printf(by, "%s/%s/%d ", e->device, e->weights ? e->weights : "NULL",
                               e->exact);
    }
    g_assert_cmpstr(by->str, ==, "cpu/int8/0 cpu/stored/1 cpu/NULL/-1 cuda:0/stored/0 ");
    g_assert_true(dq_store_exec(s, "UPDATE answers SET device = NULL WHERE weights IS NULL", &err));
    g_string_free(by, TRUE);
    g_ptr_array_free(engines, TRUE);
    /* The columns take the --weights modes and 0 / 1 only. */
    g_assert_false(dq_store_exec(s, "UPDATE answers SET weights = 'fp4'", &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_clear_error(&err);
    g_assert_false(dq_store_exec(s, "UPDATE answers SET exact = 2", &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_clear_error(&err);
    gint64 n_recent = -1;
    double span = -1;
    g_assert_true(store_jobs_recent_rate(s, 600, &n_recent, &span, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(n_recent, ==, 0); /* the answers above finished in 2026-01-01 */
    g_free(text);
    g_ptr_array_free(a, TRUE);
    g_ptr_array_free(b, TRUE);
    g_ptr_array_free(c, TRUE);
    g_ptr_array_free(d, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* docqa requeue --approximate: only the done jobs whose answer was approximate go back in the
 * queue; their answer stays readable until the job is answered again, and then moves to
 * answers_superseded, whole, in the transaction that stores the new one. Along the way, what an
 * idle worker asks: is anything of its model queued or running? */
static void test_requeue_approximate(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(s, "/archive/r.pdf", "7777");
    g_assert_cmpint(enqueue_all(s, "Total?"), ==, 3);
    GPtrArray *a = store_jobs_claim(s, "A", "m", 3, 1000, 100, NULL, &err);
    g_assert_cmpint(a->len, ==, 3);
    DqJobAnswer ans[3];
    for (int i = 0; i < 3; i++)
        ans[i] = answer_for(((DqClaimedJob *)g_ptr_array_index(a, i))->job_id, "exact");
    ans[1].text = "from the gpu";
    ans[1].device = "cuda:0";
    ans[1].weights = "stored";
    ans[1].exact = 0;
    ans[2].text = "not known"; /* answered before schema 0003: not requeued */
    ans[2].device = ans[2].weights = NULL;
    ans[2].exact = -1;
    complete_all(s, "A", ans, 3);
    gboolean pending = TRUE;
    g_assert_true(store_jobs_has_pending(s, "m", &pending, &err));
    dq_assert_no_error(err);
    g_assert_false(pending);

    gint64 requeued = jt_requeue_all(s, 1u << DQ_JOB_DONE);
    dq_assert_no_error(err);
    g_assert_cmpint(requeued, ==, 1);
    DqJobCounts counts;
    g_assert_true(store_jobs_counts(s, NULL, &counts, &err));
    g_assert_cmpint(counts.by_state[DQ_JOB_DONE], ==, 2);
    g_assert_cmpint(counts.by_state[DQ_JOB_QUEUED], ==, 1);
    g_assert_true(store_jobs_has_pending(s, "m", &pending, &err));
    g_assert_true(pending);
    g_assert_true(store_jobs_has_pending(s, "another model", &pending, &err));
    g_assert_false(pending);
    char *text = answers_text(s); /* the approximate answer is still there */
    g_assert_nonnull(strstr(text, "|from the gpu|m|2026-01-01T00:00:01.250Z|cuda:0|stored|"
                                  "approximate\n"));
    g_free(text);

    GPtrArray *b = store_jobs_claim(s, "B", "m", 3, 2000, 100, NULL, &err);
    g_assert_cmpint(b->len, ==, 1);
    DqClaimedJob *j = g_ptr_array_index(b, 0);
    g_assert_cmpint(j->job_id, ==, ans[1].job_id);
    g_assert_true(store_jobs_has_pending(s, "m", &pending, &err)); /* running */
    g_assert_true(pending);
    g_assert_cmpint(j->attempt, ==, 1);
    DqJobAnswer redo = answer_for(j->job_id, "on the cpu");
    redo.finished_at = "2026-01-02T00:00:00.500Z";
    complete_all(s, "B", &redo, 1);
    text = answers_text(s);
    g_assert_null(strstr(text, "from the gpu"));
    g_assert_nonnull(strstr(text, "|on the cpu|m|2026-01-02T00:00:00.500Z|cpu|stored|exact\n"));
    g_free(text);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers"), ==, 3);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM answers_superseded WHERE text = 'from the gpu' "
                              "AND device = 'cuda:0' AND exact = 0 AND ms_total = 1250.125 AND "
                              "started_at = '2026-01-01T00:00:00.000Z' AND "
                              "superseded_at = '2026-01-02T00:00:00.500Z'"),
                    ==, 1);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers_superseded"), ==, 1);
    g_assert_true(store_jobs_has_pending(s, "m", &pending, &err));
    g_assert_false(pending);

    /* Nothing approximate is left: a second requeue finds nothing. */
    requeued = jt_requeue_all(s, 1u << DQ_JOB_DONE);
    g_assert_cmpint(requeued, ==, 0);
    g_ptr_array_free(a, TRUE);
    g_ptr_array_free(b, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* A requeued approximate job that then fails for good (a bad input, its last attempt failing or
 * its lease expiring) goes back to done, its approximate answer standing: never failed or dead
 * beside a current answer, and finished when that answer was (not when the attempt gave up), as
 * a cancel leaves it (test_cancel). Its errors are kept. */
static void test_requeue_approximate_fails(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(s, "/archive/f.pdf", "8888");
    g_assert_cmpint(enqueue_all(s, "Total?"), ==, 3); /* max_attempts 2 */
    GPtrArray *a = store_jobs_claim(s, "A", "m", 3, 1000, 100, NULL, &err);
    g_assert_cmpint(a->len, ==, 3);
    gint64 id[3];
    DqJobAnswer ans[3];
    for (int i = 0; i < 3; i++) {
        id[i] = ((DqClaimedJob *)g_ptr_array_index(a, i))->job_id;
        ans[i] = answer_for(id[i], "approx");
        ans[i].weights = "int8";
        ans[i].exact = 0;
    }
    complete_all(s, "A", ans, 3);
    gint64 requeued = jt_requeue_all(s, 1u << DQ_JOB_DONE);
    g_assert_cmpint(requeued, ==, 3);

    /* First attempts: a bad input, a retryable failure, a worker that dies. */
    GPtrArray *b = store_jobs_claim(s, "B", "m", 3, 2000, 100, NULL, &err);
    g_assert_cmpint(b->len, ==, 3);
    DqJobState st = DQ_JOB_N_STATES;
    g_assert_true(
        store_jobs_fail(s, "B", id[0], "page_image", "missing", FALSE, 2010, 10, &st, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(st, ==, DQ_JOB_DONE);
    g_assert_true(
        store_jobs_fail(s, "B", id[1], "model", "out of memory", TRUE, 2010, 10, &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_QUEUED);
    /* Last attempts: job 1 fails again, job 2's lease expires again. */
    GPtrArray *c = store_jobs_claim(s, "C", "m", 3, 3000, 100, NULL, &err);
    g_assert_cmpint(c->len, ==, 2);
    g_assert_true(
        store_jobs_fail(s, "C", id[1], "model", "out of memory", TRUE, 3010, 10, &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_DONE);
    GPtrArray *d = store_jobs_claim(s, "D", "m", 3, 4000, 100, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(d->len, ==, 0); /* job 2 reclaimed after its last attempt: done, not dead */

    DqJobCounts counts;
    g_assert_true(store_jobs_counts(s, "m", &counts, &err));
    g_assert_cmpint(counts.by_state[DQ_JOB_DONE], ==, 3);
    g_assert_cmpint(counts.by_state[DQ_JOB_FAILED] + counts.by_state[DQ_JOB_DEAD], ==, 0);
    char *text = answers_text(s);
    for (int i = 0; i < 3; i++) /* each approximate answer as it was */
        g_assert_nonnull(strstr(text, "|approx|m|2026-01-01T00:00:01.250Z|cpu|int8|approximate\n"));
    g_free(text);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers"), ==, 3);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers_superseded"), ==, 0);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM job_errors"), ==, 5);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM jobs j JOIN answers a ON a.job_id = j.id "
                              "WHERE j.finished_at = '2026-01-01T00:00:01.250Z' AND "
                              "a.finished_at = j.finished_at AND j.last_error IS NOT NULL AND "
                              "j.lease_owner IS NULL"),
                    ==, 3);
    /* Still approximate: another requeue takes them again. */
    requeued = jt_requeue_all(s, 1u << DQ_JOB_DONE);
    g_assert_cmpint(requeued, ==, 3);
    g_ptr_array_free(a, TRUE);
    g_ptr_array_free(b, TRUE);
    g_ptr_array_free(c, TRUE);
    g_ptr_array_free(d, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* docqa run's closing word on its failures (store_jobs_errors_after): the jobs that ended, by an
 * error after the mark, failed, dead, or done again with the answer a requeue left them, each by
 * its newest error, grouped as status groups them (the paths left out, one message whole); not a
 * job a later attempt answered, one that failed before the mark, nor another model's. */
static void test_errors_after(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(s, "/archive/g.pdf", "9999");
    g_assert_cmpint(enqueue_all(s, "Total?"), ==, 3); /* max_attempts 2 */
    GPtrArray *a = store_jobs_claim(s, "A", "m", 3, 1000, 100, NULL, &err);
    g_assert_cmpint(a->len, ==, 3);
    gint64 id[3];
    DqJobAnswer ans[3];
    for (int i = 0; i < 3; i++) {
        id[i] = ((DqClaimedJob *)g_ptr_array_index(a, i))->job_id;
        ans[i] = answer_for(id[i], "approx");
        ans[i].exact = 0;
    }
    DqJobState st = DQ_JOB_N_STATES;
    g_assert_true(
        store_jobs_fail(s, "A", id[0], "settings", "/p/0.png: bad", FALSE, 1010, 10, &st, &err));
    complete_all(s, "A", ans + 1, 2);
    gint64 mark = -1;
    g_assert_true(store_jobs_last_error_id(s, &mark, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(mark, >, 0);
    GPtrArray *why = store_jobs_errors_after(s, "m", mark, NULL, NULL, 0, 10, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(why->len, ==, 0); /* job 0 failed before the mark */
    g_ptr_array_free(why, TRUE);

    g_assert_cmpint(jt_requeue_all(s, (1u << DQ_JOB_DONE) | (1u << DQ_JOB_FAILED)), ==, 3);
    GPtrArray *b = store_jobs_claim(s, "B", "m", 3, 2000, 100, NULL, &err);
    g_assert_cmpint(b->len, ==, 3);
    g_assert_true(store_jobs_fail(s, "B", id[0], "page_read",
                                  "/p/0.png: cannot read image: Input/output error", TRUE, 2010, 10,
                                  &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_QUEUED);
    g_assert_true(store_jobs_fail(s, "B", id[1], "page_image",
                                  "/p/1.png: page image missing (/archive/g.pdf, page 2)", FALSE,
                                  2010, 10, &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_DONE); /* its answer stands */
    g_assert_true(
        store_jobs_fail(s, "B", id[2], "model", "out of memory", TRUE, 2010, 10, &st, &err));
    GPtrArray *c = store_jobs_claim(s, "C", "m", 3, 3000, 100, NULL, &err);
    g_assert_cmpint(c->len, ==, 2);
    g_assert_true(store_jobs_fail(s, "C", id[0], "page_read",
                                  "/p/0.png: cannot read image: Input/output error", TRUE, 3010, 10,
                                  &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_DEAD);
    DqJobAnswer again = answer_for(id[2], "again");
    again.finished_at = "2126-01-01T00:00:00.000Z"; /* after its error, whatever the clock */
    complete_all(s, "C", &again, 1);

    why = store_jobs_errors_after(s, "m", mark, NULL, NULL, 0, 10, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(why->len, ==, 2);
    const DqErrorReason *r0 = g_ptr_array_index(why, 0), *r1 = g_ptr_array_index(why, 1);
    g_assert_cmpstr(r0->kind, ==, "page_image");
    g_assert_cmpstr(r0->message, ==, "...: page image missing (...)");
    g_assert_cmpstr(r0->example, ==, "/p/1.png: page image missing (/archive/g.pdf, page 2)");
    g_assert_cmpint(r0->jobs, ==, 1);
    g_assert_cmpstr(r1->kind, ==, "page_read");
    g_assert_cmpstr(r1->example, ==, "/p/0.png: cannot read image: Input/output error");
    g_assert_cmpint(r1->jobs, ==, 1);
    g_ptr_array_free(why, TRUE);
    why = store_jobs_errors_after(s, "other", mark, NULL, NULL, 0, 10, &err);
    g_assert_cmpint(why->len, ==, 0);
    g_ptr_array_free(why, TRUE);
    why = store_jobs_errors_after(s, "m", mark, NULL, NULL, 0, 1, &err);
    g_assert_cmpint(why->len, ==, 1);
    g_ptr_array_free(why, TRUE);
    g_ptr_array_free(a, TRUE);
    g_ptr_array_free(b, TRUE);
    g_ptr_array_free(c, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* The kinds of why's causes, most jobs first, then by kind: "kind N, kind N". */
static char *reasons_text(GPtrArray *why) {
    GString *g = g_string_new(NULL);
    for (guint i = 0; i < why->len; i++) {
        const DqErrorReason *r = g_ptr_array_index(why, i);
        g_string_append_printf(g, "%s%s %" G_GINT64_FORMAT, i ? ", " : "", r->kind, r->jobs);
    }
    g_ptr_array_free(why, TRUE);
    return g_string_free(g, FALSE);
}

/* Two runs of one model at once, on two machines, and a third whose workers died: each run's
 * closing word names its own failures, those its workers recorded (their ids end in its tag)
 * and the job its claim buried, whose lease (recorded in the error) was a dead worker's of the
 * third run; not the other run's, though recorded after its mark, for the same model. */
static void test_errors_after_two_runs(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(s, "/archive/g.pdf", "9999");
    g_assert_cmpint(enqueue_all(s, "Total?"), ==, 3); /* max_attempts 2 */
    gint64 mark = -1;
    g_assert_true(store_jobs_last_error_id(s, &mark, &err));
    const char *run1 = "h1:10:0000000a:00000000000000a1", *run2 = "h2:20:0000000b:00000000000000b2",
               *x = "h3:30:0000000c:00000000000000c3", *y = "h3:31:0000000d:00000000000000c3";
    gint64 id[3];
    const char *owners[3] = {run1, run2, x};
    for (int i = 0; i < 3; i++) {
        GPtrArray *c =
            store_jobs_claim(s, owners[i], "m", 1, 1000, i < 2 ? 1000000 : 100, NULL, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(c->len, ==, 1);
        id[i] = ((DqClaimedJob *)g_ptr_array_index(c, 0))->job_id;
        g_ptr_array_free(c, TRUE);
    }
    DqJobState st = DQ_JOB_N_STATES;
    g_assert_true(store_jobs_fail(s, run1, id[0], "page_image", "/p/0.png: page image missing",
                                  FALSE, 1010, 10, &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_FAILED);
    g_assert_true(
        store_jobs_fail(s, run2, id[1], "model", "out of memory", FALSE, 1010, 10, &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_FAILED);
    /* x's lease runs out; y, of its run, takes the job back, and dies holding it too */
    GPtrArray *c = store_jobs_claim(s, y, "m", 3, 2000, 100, NULL, &err);
    g_assert_cmpint(c->len, ==, 1);
    g_ptr_array_free(c, TRUE);
    GArray *buried = g_array_new(FALSE, FALSE, sizeof(gint64));
    c = store_jobs_claim_noting(s, run1, "m", 3, 3000, 1000000, buried, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(c->len, ==, 0);
    g_ptr_array_free(c, TRUE);
    g_assert_cmpint(buried->len, ==, 1);
    g_assert_cmpint(g_array_index(buried, gint64, 0), ==, id[2]);

    char *said = reasons_text(store_jobs_errors_after(s, "m", mark, "00000000000000a1",
                                                      (const gint64 *)buried->data,
                                                      (int)buried->len, 10, &err));
    dq_assert_no_error(err);
    g_assert_cmpstr(said, ==, "lease_expired 1, page_image 1");
    g_free(said);
    said =
        reasons_text(store_jobs_errors_after(s, "m", mark, "00000000000000b2", NULL, 0, 10, &err));
    g_assert_cmpstr(said, ==, "model 1");
    g_free(said);
    /* the tag is the id's last part whole */
    said = reasons_text(store_jobs_errors_after(s, "m", mark, "0a1", NULL, 0, 10, &err));
    g_assert_cmpstr(said, ==, "");
    g_free(said);
    said = reasons_text(store_jobs_errors_after(s, "m", mark, NULL, NULL, 0, 10, &err));
    g_assert_cmpstr(said, ==, "lease_expired 1, model 1, page_image 1");
    g_free(said);
    g_array_free(buried, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* A database made by a docqa at schema 2 (before answers recorded their device and weights),
 * holding an answer, opened by this one: migrated in place, the answer kept with its device
 * and weights unknown, new answers recording theirs. */
static void test_upgrade_from_schema_2(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open_at(loc, 2, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), ==, 2);
    add_document(s, "/archive/old.pdf", "5555");
    g_assert_cmpint(enqueue_pages(s, old_schema_pages(s, loc), "Old?"), ==, 3);
    GPtrArray *cl = store_jobs_claim(s, "W", "m", 3, 1000, 100, NULL, &err);
    g_assert_cmpint(cl->len, ==, 3);
    /* What schema 2's docqa wrote (this docqa's INSERT names the new columns). */
    char *sql = g_strdup_printf(
        "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_expires_ms = NULL "
        "WHERE id = %" G_GINT64_FORMAT ";"
        "INSERT INTO answers (job_id, text, prompt_tokens, generated_tokens, model_id, "
        "generation_settings, worker, started_at, finished_at) VALUES (%" G_GINT64_FORMAT
        ", 'kept', 10, 1, 'm', '{}', 'old:1', '2025-01-01T00:00:00.000Z', "
        "'2025-01-01T00:00:01.000Z')",
        ((DqClaimedJob *)g_ptr_array_index(cl, 0))->job_id,
        ((DqClaimedJob *)g_ptr_array_index(cl, 0))->job_id);
    g_assert_true(dq_store_exec(s, sql, &err));
    dq_assert_no_error(err);
    g_free(sql);
    store_jobs_finalize(s);
    dq_store_close(s);

    s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), >=, 3);
    DqJobAnswer ans[2] = {answer_for(((DqClaimedJob *)g_ptr_array_index(cl, 1))->job_id, "new"),
                          answer_for(((DqClaimedJob *)g_ptr_array_index(cl, 2))->job_id, "q8")};
    ans[1].weights = "int8";
    ans[1].exact = 0;
    complete_all(s, "W", ans, 2);
    char *text = answers_text(s);
    g_assert_nonnull(strstr(text, "|Old?|kept|m|2025-01-01T00:00:01.000Z|NULL|NULL|unknown\n"));
    g_assert_nonnull(strstr(text, "|Old?|new|m|2026-01-01T00:00:01.250Z|cpu|stored|exact\n"));
    g_assert_nonnull(strstr(text, "|Old?|q8|m|2026-01-01T00:00:01.250Z|cpu|int8|approximate\n"));
    g_free(text);
    g_ptr_array_free(cl, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

typedef struct {
    const char *loc;
    DqStore *s;
    GError *err;
} OpenInThread;

static gpointer open_in_thread(gpointer data) {
    OpenInThread *o = data;
    o->s = dq_store_open(o->loc, &o->err);
    return NULL;
}

/* Two docqa processes open a database older than they are: one upgrades it under the advisory
 * lock while the other waits for the lock, which then finds the upgrade made and opens the
 * database as it is (its version is no newer than it knows). Here a connection holds the lock
 * while the newest migration's row is missing, and puts it back before letting go. */
static void test_upgrade_while_waiting(void) {
    char *loc = new_location("postgres");
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    int newest = dq_store_schema_version(s);
    char *hide = g_strdup_printf(
        "UPDATE schema_migrations SET version = -version WHERE version = %d", newest);
    g_assert_true(dq_store_exec(s, hide, &err));
    g_assert_true(dq_store_exec(s, "SELECT pg_advisory_lock(4242010)", &err));
    dq_assert_no_error(err);
    OpenInThread o = {.loc = loc};
    GThread *t = g_thread_new("open", open_in_thread, &o);
    gint64 until = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
    while (pgt_query_int(loc, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                              "NOT granted") == 0) {
        g_assert_cmpint(g_get_monotonic_time(), <, until);
        g_usleep(10000);
    }
    g_assert_true(dq_store_exec(s,
                                "UPDATE schema_migrations SET version = -version WHERE version "
                                "< 0",
                                &err));
    g_assert_true(dq_store_exec(s, "SELECT pg_advisory_unlock(4242010)", &err));
    dq_assert_no_error(err);
    g_thread_join(t);
    dq_assert_no_error(o.err);
    g_assert_nonnull(o.s);
    g_assert_cmpint(dq_store_schema_version(o.s), ==, newest);
    dq_store_close(o.s);
    dq_store_close(s);
    g_free(hide);
    g_free(loc);
}

/* The tables an upgrade must keep every row of. */
static const char *const UPGRADE_TABLES[] = {"documents", "pages",      "questions",
                                             "jobs",      "job_errors", "answers"};

/* counts[i] = the rows of UPGRADE_TABLES[i] (each must have some), or, with check, asserts that
 * they still have counts[i]. */
static void upgrade_table_rows(DqStore *s, const char *loc, gint64 *counts, gboolean check) {
    for (size_t i = 0; i < G_N_ELEMENTS(UPGRADE_TABLES); i++) {
        char *sql = g_strdup_printf("SELECT count(*) FROM %s", UPGRADE_TABLES[i]);
        gint64 n = query_int(s, loc, sql);
        if (check) {
            g_assert_cmpint(n, ==, counts[i]);
        } else {
            g_assert_cmpint(n, >, 0);
            counts[i] = n;
        }
        g_free(sql);
    }
}

/* Claims 3 jobs: the first answered "kept", the second failed (retryable), the third left
 * running; an old schema's rows of each kind. */
static void answer_one_fail_one(DqStore *s) {
    GError *err = NULL;
    GPtrArray *cl = store_jobs_claim(s, "W", "m", 3, 1000, 100, NULL, &err);
    g_assert_cmpint(cl->len, ==, 3);
    DqJobAnswer ans = answer_for(((DqClaimedJob *)g_ptr_array_index(cl, 0))->job_id, "kept");
    complete_all(s, "W", &ans, 1);
    DqJobState st = DQ_JOB_N_STATES;
    g_assert_true(store_jobs_fail(s, "W", ((DqClaimedJob *)g_ptr_array_index(cl, 1))->job_id,
                                  "model", "out of memory", TRUE, 1010, 10, &st, &err));
    dq_assert_no_error(err);
    g_ptr_array_free(cl, TRUE);
}

/* A database at schema 14 with an answer, a failure, and a question row without jobs (an older
 * `ask` stored the question in its own transaction, and was interrupted before its jobs): schema
 * 15 keeps every row and indexes jobs by question; the row without jobs is no question asked
 * (export --question, cancel and requeue name it as never asked) until an `ask` gives it jobs. */
static void test_upgrade_from_schema_14(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open_at(loc, 14, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), ==, 14);
    add_document(s, "/archive/old.pdf", "1414");
    g_assert_cmpint(enqueue_pages(s, old_schema_pages(s, loc), "Asked?"), ==, 3);
    answer_one_fail_one(s);
    g_assert_true(dq_store_exec(s, "INSERT INTO questions (text) VALUES ('Orphan?')", &err));
    dq_assert_no_error(err);
    gint64 before[G_N_ELEMENTS(UPGRADE_TABLES)] = {0};
    upgrade_table_rows(s, loc, before, FALSE);
    store_jobs_finalize(s);
    dq_store_close(s);

    s = dq_store_open_at(loc, 15, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), ==, 15);
    upgrade_table_rows(s, loc, before, TRUE);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM questions WHERE text = 'Orphan?'"), ==,
                    1);
    g_assert_cmpint(query_int(s, loc,
                              dq_store_kind(s) == DQ_STORE_POSTGRES
                                  ? "SELECT count(*) FROM pg_indexes WHERE tablename = 'jobs' "
                                    "AND indexname = 'jobs_question'"
                                  : "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                                    "tbl_name = 'jobs' AND name = 'jobs_question'"),
                    ==, 1);
    char *text = answers_text(s);
    g_assert_nonnull(strstr(text, "|Asked?|kept|m|"));
    g_free(text);
    gint64 asked = 0, orphan = -1, never = -1;
    g_assert_true(store_jobs_find_question(s, "Asked?", &asked, &err));
    g_assert_true(store_jobs_find_question(s, "Orphan?", &orphan, &err));
    g_assert_true(store_jobs_find_question(s, "Never?", &never, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(asked, >, 0);
    g_assert_cmpint(orphan, ==, 0);
    g_assert_cmpint(never, ==, 0);
    /* asked now: the row is reused, and found */
    gint64 row = query_int(s, loc, "SELECT id FROM questions WHERE text = 'Orphan?'");
    g_assert_cmpint(enqueue_pages(s, old_schema_pages(s, loc), "Orphan?"), ==, 3);
    g_assert_true(store_jobs_find_question(s, "Orphan?", &orphan, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(orphan, ==, row);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* Whether SQLite reads v_progress from the index jobs_progress alone (never the jobs' rows). */
static gboolean progress_from_index(DqStore *s) {
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(dq_store_sqlite(s),
                                       "EXPLAIN QUERY PLAN SELECT * FROM v_progress", -1, &st,
                                       NULL),
                    ==, SQLITE_OK);
    gboolean covering = FALSE, sorted = FALSE;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *detail = (const char *)sqlite3_column_text(st, 3);
        covering |= strstr(detail, "SCAN j USING COVERING INDEX jobs_progress") != NULL;
        sorted |= strstr(detail, "TEMP B-TREE") != NULL;
    }
    sqlite3_finalize(st);
    return covering && !sorted;
}

/* A database at schema 15 upgraded to 16 keeps every row and what v_progress says; the jobs are
 * indexed for v_progress (read from the index alone), and by question still. */
static void test_upgrade_from_schema_15(gconstpointer kind) {
    /* every count of every row of v_progress, in one number */
    static const char *const progress =
        "SELECT sum(total * 1000000 + queued * 100000 + running * 10000 + done * 1000 + "
        "failed * 100 + dead * 10 + cancelled) FROM v_progress";
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open_at(loc, 15, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), ==, 15);
    add_document(s, "/archive/fifteen.pdf", "1515");
    g_assert_cmpint(enqueue_pages(s, old_schema_pages(s, loc), "First?"), ==, 3);
    g_assert_cmpint(enqueue_pages(s, old_schema_pages(s, loc), "Second?"), ==, 3);
    answer_one_fail_one(s);
    gint64 before[G_N_ELEMENTS(UPGRADE_TABLES)] = {0};
    upgrade_table_rows(s, loc, before, FALSE);
    gint64 progress_before = query_int(s, loc, progress);
    g_assert_cmpint(progress_before, >, 0);
    if (dq_store_kind(s) == DQ_STORE_SQLITE)
        g_assert_false(progress_from_index(s));
    store_jobs_finalize(s);
    dq_store_close(s);

    s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), ==, 16);
    upgrade_table_rows(s, loc, before, TRUE);
    g_assert_cmpint(query_int(s, loc, progress), ==, progress_before);
    gboolean pg = dq_store_kind(s) == DQ_STORE_POSTGRES;
    g_assert_cmpint(query_int(s, loc,
                              pg ? "SELECT count(*) FROM pg_indexes WHERE tablename = 'jobs' AND "
                                   "indexname IN ('jobs_progress', 'jobs_question')"
                                 : "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                                   "tbl_name = 'jobs' AND name IN ('jobs_progress', "
                                   "'jobs_question')"),
                    ==, 1);
    g_assert_cmpint(query_int(s, loc,
                              pg ? "SELECT count(*) FROM pg_indexes WHERE tablename = 'jobs' AND "
                                   "indexname = 'jobs_progress'"
                                 : "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                                   "name = 'jobs_progress'"),
                    ==, 1);
    if (!pg)
        g_assert_true(progress_from_index(s));
    gint64 first = 0, never = -1;
    g_assert_true(store_jobs_find_question(s, "First?", &first, &err));
    g_assert_true(store_jobs_find_question(s, "Never?", &never, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(first, >, 0);
    g_assert_cmpint(never, ==, 0);
    char *text = answers_text(s);
    g_assert_nonnull(strstr(text, "|First?|kept|m|"));
    g_free(text);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* Render and generation settings as docqa writes them (ingest.c, queue.c). */
static const char *R3 = "{\"longest_edge\":1536,\"n_res\":3,\"tile\":512}";
static const char *R5 = "{\"longest_edge\":2560,\"n_res\":5,\"tile\":512}";
static const char *G64 = "{\"do_sample\":false,\"max_new_tokens\":64,\"prompt\":\"docvqa\"}";
static const char *G8 = "{\"do_sample\":false,\"max_new_tokens\":8,\"prompt\":\"docvqa\"}";
#define FP_A "aaaaaaaaaaaa0000000000000000000000000000000000000000000000000001"
#define FP_B "bbbbbbbbbbbb0000000000000000000000000000000000000000000000000002"

static gboolean collect_provenance(const DqAnswerRow *row, void *user, GError **err) {
    g_string_append_printf(
        user, "%s|%d|%s|%s|n_res=%d|tile=%d|edge=%d|%s|max_new=%d|sample=%d|%s\n",
        row->document_path, row->page, row->question, row->answer, row->n_res, row->tile,
        row->longest_edge, row->prompt ? row->prompt : "NULL", row->max_new_tokens, row->do_sample,
        row->model_fingerprint ? row->model_fingerprint : "NULL");
    (void)err;
    return TRUE;
}

static char *provenance_text(DqStore *s) {
    GString *out = g_string_new(NULL);
    GError *err = NULL;
    g_assert_true(
        store_jobs_each_answer(s, NULL, FALSE, NULL, NULL, collect_provenance, out, &err));
    dq_assert_no_error(err);
    return g_string_free(out, FALSE);
}

static GPtrArray *claim_all(DqStore *s, int n) {
    GError *err = NULL;
    GPtrArray *c = store_jobs_claim(s, "W", "m", 10, 1000, 100000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(c->len, ==, n);
    return c;
}

/* Answers every claimed job with text "<prefix> <n_res> <max_new_tokens>" from snapshot fp. */
static void answer_claimed(DqStore *s, GPtrArray *claimed, const char *prefix, const char *fp,
                           int exact) {
    DqJobAnswer *ans = g_new0(DqJobAnswer, claimed->len);
    char **texts = g_new0(char *, claimed->len + 1);
    for (guint i = 0; i < claimed->len; i++) {
        const DqClaimedJob *j = g_ptr_array_index(claimed, i);
        texts[i] =
            g_strdup_printf("%s %s %s", prefix, strcmp(j->render_settings, R3) == 0 ? "3" : "5",
                            strcmp(j->generation_settings, G8) == 0 ? "8" : "64");
        ans[i] = answer_for(j->job_id, texts[i]);
        ans[i].model_fingerprint = fp;
        ans[i].exact = exact;
    }
    complete_all(s, "W", ans, (int)claimed->len);
    g_strfreev(texts);
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc): g_strfreev freed it
    g_free(ans);
}

/* One page and question asked at two render settings (ingest --n-res 3 and 5) and two
 * --max-new-tokens, on a database made by a docqa at schema 7 (before answers said how they were
 * made), half of them answered there. Upgraded: every row is kept, the four answers read apart by
 * their settings, those stored before have no fingerprint, those since their snapshot's, which
 * moves with an answer superseded (answers_superseded) and is counted per model id. */
static void test_upgrade_from_schema_7(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open_at(loc, 7, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), ==, 7);
    DqPageRow page = {.page_number = 1, .width = 10, .height = 20, .status = "ok"};
    DqDocumentRow doc = {.path = "/archive/p.pdf",
                         .sha256 = "7777",
                         .bytes = 1,
                         .mtime = 1,
                         .kind = "pdf",
                         .page_count = 1,
                         .status = "ok"};
    gint64 doc_id = 0;
    page.image_sha256 = "3333";
    g_assert_true(dq_store_document_record(s, &doc, 0, FALSE, R3, &page, 1, &doc_id, NULL, &err));
    page.image_sha256 = "5555";
    g_assert_true(dq_store_document_record(s, &doc, doc_id, FALSE, R5, &page, 1, NULL, NULL, &err));
    dq_assert_no_error(err);
    GPtrArray *pages = old_schema_pages(s, loc);
    g_assert_cmpint(pages->len, ==, 2);
    gint64 qid = 0;
    g_assert_true(store_jobs_question_id(s, "Total?", &qid, &err));
    DqNewJob jobs[4];
    char *keys[4];
    for (int i = 0; i < 4; i++) {
        const DqAskPage *p = g_ptr_array_index(pages, i / 2);
        const char *gs = i % 2 ? G8 : G64;
        keys[i] = g_strdup_printf("%s|%s", p->render_settings, gs);
        jobs[i] = (DqNewJob){.page_id = p->page_id,
                             .question_id = qid,
                             .model_id = "m",
                             .generation_settings = gs,
                             .job_key = keys[i],
                             .max_attempts = 2};
    }
    int added = 0;
    g_assert_true(store_jobs_enqueue(s, jobs, 4, &added, &err));
    g_assert_cmpint(added, ==, 4);
    for (int i = 0; i < 4; i++)
        g_free(keys[i]);
    g_ptr_array_free(pages, TRUE);
    /* What schema 7's docqa wrote for the --max-new-tokens 64 jobs (this docqa's INSERT names the
     * new column). */
    g_assert_true(dq_store_exec(
        s,
        "UPDATE jobs SET state = 'done' WHERE generation_settings LIKE '%:64,%';"
        "INSERT INTO answers (job_id, text, prompt_tokens, generated_tokens, model_id, "
        "generation_settings, worker, started_at, finished_at, device, weights, exact) "
        "SELECT j.id, CASE WHEN p.render_settings LIKE '%\"n_res\":3%' THEN 'old 3 64' ELSE "
        "'old 5 64' END, 10, 1, j.model_id, j.generation_settings, 'old:1', "
        "'2025-01-01T00:00:00.000Z', '2025-01-01T00:00:01.000Z', 'cpu', 'stored', 1 "
        "FROM jobs j JOIN pages p ON p.id = j.page_id WHERE j.state = 'done'",
        &err));
    dq_assert_no_error(err);
    dq_store_close(s);

    s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), ==, 16);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM answers WHERE text LIKE 'old %' AND "
                              "model_fingerprint IS NULL"),
                    ==, 2);
    GPtrArray *c = claim_all(s, 2);
    answer_claimed(s, c, "new", FP_A, 0);
    g_ptr_array_free(c, TRUE);
    /* The answers stored before schema 12 come first in the commit order (export --after). */
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers WHERE commit_seq IS NULL"), ==,
                    0);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM answers o JOIN answers n ON o.text "
                              "LIKE 'old %' AND n.text LIKE 'new %' AND o.commit_seq >= "
                              "n.commit_seq"),
                    ==, 0);
    g_assert_cmpint(query_int(s, loc, "SELECT last FROM answer_commit_seq"), ==,
                    query_int(s, loc, "SELECT max(commit_seq) FROM answers"));
    char *text = provenance_text(s);
    g_assert_cmpstr(
        text, ==,
        "/archive/p.pdf|1|Total?|old 3 "
        "64|n_res=3|tile=512|edge=1536|docvqa|max_new=64|sample=0|NULL\n"
        "/archive/p.pdf|1|Total?|new 3 8|n_res=3|tile=512|edge=1536|docvqa|max_new=8|sample=0|" FP_A
        "\n"
        "/archive/p.pdf|1|Total?|old 5 "
        "64|n_res=5|tile=512|edge=2560|docvqa|max_new=64|sample=0|NULL\n"
        "/archive/p.pdf|1|Total?|new 5 8|n_res=5|tile=512|edge=2560|docvqa|max_new=8|sample=0|" FP_A
        "\n");
    g_free(text);
    /* The view itself, as SQL reads it: four rows, none two alike. */
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM (SELECT DISTINCT document_path, page, "
                              "question, model, n_res, max_new_tokens FROM v_answers) x"),
                    ==, 4);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM v_answers WHERE n_res = 5 AND tile = 512 AND "
                              "longest_edge = 2560 AND prompt = 'docvqa' AND max_new_tokens = 8 "
                              "AND do_sample = 0 AND model_fingerprint = '" FP_A "'"),
                    ==, 1);
    GPtrArray *snaps = store_jobs_model_snapshots(s, "m", &err);
    dq_assert_no_error(err);
    g_assert_cmpint(snaps->len, ==, 1);
    g_assert_cmpstr(((DqModelSnapshot *)g_ptr_array_index(snaps, 0))->fingerprint, ==, FP_A);
    g_assert_cmpint(((DqModelSnapshot *)g_ptr_array_index(snaps, 0))->answers, ==, 2);
    g_ptr_array_free(snaps, TRUE);

    /* Answered again by another snapshot: the replaced answers keep theirs. */
    gint64 requeued = jt_requeue_all(s, 1u << DQ_JOB_DONE);
    g_assert_cmpint(requeued, ==, 2);
    c = claim_all(s, 2);
    answer_claimed(s, c, "again", FP_B, 1);
    g_ptr_array_free(c, TRUE);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM answers_superseded WHERE text LIKE 'new %' "
                              "AND model_fingerprint = '" FP_A "'"),
                    ==, 2);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM v_answers WHERE answer LIKE 'again %' AND "
                              "model_fingerprint = '" FP_B "'"),
                    ==, 2);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers"), ==, 4);
    /* Another model id's answers are counted apart, and only where asked for. */
    g_assert_true(dq_store_exec(s,
                                "UPDATE answers SET model_id = 'other' WHERE text = 'old 3 64';"
                                "UPDATE answers SET model_fingerprint = '" FP_A
                                "' WHERE text LIKE 'old %'",
                                &err));
    snaps = store_jobs_model_snapshots(s, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(snaps->len, ==, 3);
    const char *want[3][3] = {{"m", FP_B, "2"}, {"m", FP_A, "1"}, {"other", FP_A, "1"}};
    for (int i = 0; i < 3; i++) {
        const DqModelSnapshot *m = g_ptr_array_index(snaps, i);
        g_assert_cmpstr(m->model_id, ==, want[i][0]);
        g_assert_cmpstr(m->fingerprint, ==, want[i][1]);
        g_assert_cmpint(m->answers, ==, atoi(want[i][2]));
    }
    g_ptr_array_free(snaps, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* A path whose bytes go back to an older version's: the lookup sees only the newest version,
 * and recording the old bytes again adds version 3. Starts at schema 5 (where (path, sha256)
 * was unique) so that the migration is shown to keep documents, pages and their cascade. */
/* A path that is not UTF-8 (a Latin-1 name from an old archive) and a message quoting it: stored
 * escaped, as text both databases take, and found again by the same bytes. */
static gboolean has_path(GPtrArray *known, const char *path, gboolean missing) {
    for (guint i = 0; i < known->len; i++) {
        const DqKnownPath *k = g_ptr_array_index(known, i);
        if (strcmp(k->path, path) == 0)
            return k->missing == missing;
    }
    return FALSE;
}

/* Files gone from disk (schema 0009), the same on both engines: the paths under a folder (not
 * those of a folder whose name merely begins alike), marked gone on every version and unmarked
 * again, non-UTF-8 names as the file system spells them; documents_current leaves the gone ones
 * out, the page selection flags them; v_current_answers shows an answer under every current
 * path holding its page's content. */
static void test_gone_paths(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    const char *latin1 = "/archive/sub/re\xe7u.pdf";
    add_document(s, "/archive/a.pdf", "1111");
    add_document(s, "/archive/a.pdf", "4444"); /* version 2 */
    add_document(s, latin1, "2222");
    add_document(s, "/archive2/x.pdf", "3333");
    add_document(s, "/elsewhere/copy of x.pdf", "3333");
    GPtrArray *known = dq_store_document_paths_under(s, "/archive", &err);
    dq_assert_no_error(err);
    g_assert_cmpint(known->len, ==, 2);
    g_assert_true(has_path(known, "/archive/a.pdf", FALSE));
    g_assert_true(has_path(known, latin1, FALSE));
    g_ptr_array_free(known, TRUE);

    const char *gone[] = {"/archive/a.pdf", latin1};
    g_assert_true(dq_store_document_paths_mark(s, gone, 2, NULL, 0, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM documents WHERE missing_since LIKE "
                              "'____-__-__T__:__:__.___Z'"),
                    ==, 3);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM documents_current"), ==, 2);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM documents_current WHERE path LIKE "
                              "'/archive/%'"),
                    ==, 0);
    known = dq_store_document_paths_under(s, "/archive/", &err);
    g_assert_true(has_path(known, "/archive/a.pdf", TRUE));
    g_assert_true(has_path(known, latin1, TRUE));
    g_ptr_array_free(known, TRUE);
    GPtrArray *marked = dq_store_document_paths_gone(s, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(marked->len, ==, 2);
    g_assert_true(g_strcmp0(g_ptr_array_index(marked, 0), latin1) == 0 ||
                  g_strcmp0(g_ptr_array_index(marked, 1), latin1) == 0);
    g_ptr_array_free(marked, TRUE);

    /* The page selection: every newest version, gone ones flagged. */
    GPtrArray *pages = store_jobs_select_pages(s, NULL, 0, NULL, 0, &err);
    dq_assert_no_error(err);
    int flagged = 0;
    for (guint i = 0; i < pages->len; i++)
        flagged += ((DqAskPage *)g_ptr_array_index(pages, i))->document_gone;
    g_assert_cmpint(pages->len, ==, 16);
    g_assert_cmpint(flagged, ==, 8);
    g_ptr_array_free(pages, TRUE);

    /* One job per content: x.pdf's three pages, answered under both of its paths. */
    g_assert_cmpint(enqueue_all(s, "Total?"), ==, 9);
    GPtrArray *c = store_jobs_claim(s, "W", "m", 20, 1000, 100000, NULL, &err);
    g_assert_cmpint(c->len, ==, 9);
    DqJobAnswer *ans = g_new0(DqJobAnswer, c->len);
    for (guint i = 0; i < c->len; i++)
        ans[i] = answer_for(((DqClaimedJob *)g_ptr_array_index(c, i))->job_id, "42");
    int written = 0;
    g_assert_true(store_jobs_complete(s, "W", ans, (int)c->len, &written, &err));
    g_assert_cmpint(written, ==, 9);
    g_free(ans);
    g_ptr_array_free(c, TRUE);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM v_current_answers"), ==, 6);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM v_current_answers WHERE document_path = "
                              "'/elsewhere/copy of x.pdf' AND asked_path = '/archive2/x.pdf'"),
                    ==, 3);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM v_answers"), ==, 9);

    /* Back: current again, with its answers; the other stays gone. */
    const char *back[] = {"/archive/a.pdf"};
    g_assert_true(dq_store_document_paths_mark(s, gone + 1, 1, back, 1, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM documents WHERE missing_since IS NOT "
                              "NULL"),
                    ==, 1);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM documents_current"), ==, 3);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM v_current_answers WHERE document_path = "
                              "'/archive/a.pdf'"),
                    ==, 3);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

static void test_non_utf8_path(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    const char *path = "/archive/re\xe7u.pdf";
    DqPageRow page[2] = {{.page_number = 1,
                          .status = "failed",
                          .error_code = "damaged",
                          .error_message = "/archive/re\xe7u.pdf: page 1: bad"},
                         {.page_number = 2,
                          .width = 3,
                          .height = 4,
                          .image_sha256 = "ffff",
                          .status = "partial",
                          .error_code = "damaged",
                          .error_message = "/archive/re\xe7u.pdf: page 2: a \\x5C short"}};
    DqDocumentRow doc = {.path = path,
                         .sha256 = "5555",
                         .bytes = 1,
                         .mtime = 1,
                         .kind = "pdf",
                         .page_count = 1,
                         .status = "failed",
                         .error_code = "damaged",
                         .error_message = "/archive/re\xe7u.pdf: bad"};
    gint64 id = 0;
    g_assert_true(dq_store_document_record(s, &doc, 0, FALSE, SETTINGS, page, 2, &id, NULL, &err));
    dq_assert_no_error(err);
    DqDocumentLookup found;
    g_assert_true(dq_store_document_find(s, path, "5555", SETTINGS, &found, &err));
    g_assert_cmpint(found.id, ==, id);
    dq_document_lookup_clear(&found);
    /* A stored page's message comes back as it was given, not as the store escapes it: written
     * into a document's message again, it must not be escaped twice. */
    GPtrArray *stored = dq_store_document_stored_pages(s, id, SETTINGS, &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(stored->len, ==, 1);
    g_assert_cmpstr(((DqStoredPage *)g_ptr_array_index(stored, 0))->error_message, ==,
                    page[1].error_message);
    g_ptr_array_free(stored, TRUE);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM documents WHERE path = "
                              "'/archive/re\\xE7u.pdf' AND error_message = "
                              "'/archive/re\\xE7u.pdf: bad'"),
                    ==, 1);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM pages WHERE error_message = "
                              "'/archive/re\\xE7u.pdf: page 1: bad'"),
                    ==, 1);
    dq_store_close(s);
    g_free(loc);
}

static void test_document_versions(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open_at(loc, 5, &err);
    dq_assert_no_error(err);
    gint64 v1 = add_document(s, "/archive/v.pdf", "aaaa");
    dq_store_close(s);
    s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), ==, 16);
    DqDocumentLookup found;
    g_assert_true(dq_store_document_find(s, "/archive/v.pdf", "aaaa", SETTINGS, &found, &err));
    g_assert_cmpint(found.id, ==, v1);
    g_assert_cmpint(found.pages_with_settings, ==, 4);
    g_assert_cmpint(found.pages_not_ok, ==, 2);
    g_assert_cmpint(found.pages_any_settings, ==, 4);
    g_assert_cmpint(g_strv_length(found.failed_codes), ==, 1);
    g_assert_cmpstr(found.failed_codes[0], ==, "damaged");
    dq_document_lookup_clear(&found);
    /* The pages with an image are the ones stored, as they were recorded. */
    GPtrArray *stored = dq_store_document_stored_pages(s, v1, SETTINGS, &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(stored->len, ==, 3);
    const DqStoredPage *sp = g_ptr_array_index(stored, 0);
    g_assert_cmpint(sp->page_number, ==, 1);
    g_assert_cmpint(sp->width, ==, 10);
    g_assert_cmpint(sp->height, ==, 20);
    g_assert_cmpfloat(sp->source_width, ==, 612.5);
    g_assert_cmpfloat(sp->source_height, ==, 792.25);
    g_assert_true(g_str_has_prefix(sp->image_sha256, "a"));
    g_assert_cmpstr(sp->status, ==, "ok");
    g_assert_null(sp->error_code);
    sp = g_ptr_array_index(stored, 2);
    g_assert_cmpint(sp->page_number, ==, 3);
    g_assert_cmpstr(sp->status, ==, "partial");
    g_assert_cmpstr(sp->error_code, ==, "damaged");
    g_assert_cmpstr(sp->error_message, ==, "strip 3 short");
    g_ptr_array_free(stored, TRUE);
    stored = dq_store_document_stored_pages(s, v1, "{\"n_res\":1}", &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(stored->len, ==, 0);
    g_ptr_array_free(stored, TRUE);
    g_assert_true(
        dq_store_document_find(s, "/archive/v.pdf", "aaaa", "{\"n_res\":1}", &found, &err));
    g_assert_cmpint(found.pages_with_settings, ==, 0);
    g_assert_cmpint(found.pages_any_settings, ==, 4);
    g_assert_cmpint(g_strv_length(found.failed_codes), ==, 0);
    dq_document_lookup_clear(&found);
    /* Rendered again at these settings: outcome and page rows replaced, a page count that is
     * unknown now kept. */
    DqPageRow again = {.page_number = 1, .image_sha256 = "dddd", .status = "ok"};
    DqDocumentRow redo = {.path = "/archive/v.pdf",
                          .sha256 = "aaaa",
                          .kind = "pdf",
                          .page_count = -1,
                          .status = "ok"};
    g_assert_true(
        dq_store_document_record(s, &redo, v1, TRUE, SETTINGS, &again, 1, NULL, NULL, &err));
    dq_assert_no_error(err);
    g_assert_true(dq_store_document_find(s, "/archive/v.pdf", "aaaa", SETTINGS, &found, &err));
    g_assert_cmpint(found.pages_with_settings, ==, 1);
    g_assert_cmpint(found.pages_not_ok, ==, 0);
    g_assert_cmpstr(found.status, ==, "ok");
    dq_document_lookup_clear(&found);
    g_assert_cmpint(query_int(s, loc, "SELECT page_count FROM documents"), ==, 4);
    g_assert_true(dq_store_exec(s, "DELETE FROM pages", &err));
    add_document(s, "/archive/v.pdf", "aaaa"); /* the pages back, for what follows */
    gint64 v2 = add_document(s, "/archive/v.pdf", "bbbb");
    g_assert_cmpint(v2, !=, v1);
    g_assert_true(dq_store_document_find(s, "/archive/v.pdf", "aaaa", SETTINGS, &found, &err));
    g_assert_cmpint(found.id, ==, 0); /* no longer the newest */
    dq_document_lookup_clear(&found);
    gint64 v3 = add_document(s, "/archive/v.pdf", "aaaa");
    g_assert_cmpint(v3, !=, v1);
    g_assert_true(dq_store_document_find(s, "/archive/v.pdf", "aaaa", SETTINGS, &found, &err));
    g_assert_cmpint(found.id, ==, v3);
    g_assert_cmpint(found.version, ==, 3);
    dq_document_lookup_clear(&found);
    /* Recording the newest bytes again reuses the newest row (a concurrent ingest's). */
    g_assert_cmpint(add_document(s, "/archive/v.pdf", "aaaa"), ==, v3);
    g_assert_cmpint(query_int(s, loc, "SELECT version FROM documents_current"), ==, 3);
    /* Deleting a version still takes its pages with it. */
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM pages"), ==, 12);
    g_assert_true(dq_store_exec(s, "DELETE FROM documents WHERE version = 1", &err));
    dq_assert_no_error(err);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM pages"), ==, 8);
    dq_store_close(s);
    g_free(loc);
}

/* A document rendered again at the same settings (its page files lost, --retry-failed): the page
 * rows take the new rendering in place, so the jobs asked about them and their answers stay;
 * a page the new rendering lacks goes only when nobody asked about it. */
static void test_rerender_keeps_jobs(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    gint64 doc = add_document(s, "/archive/r.pdf", "rrrr");
    g_assert_cmpint(enqueue_all(s, "Total?"), ==, 3); /* pages 1-3 have images */
    gint64 page1 = query_int(s, loc, "SELECT id FROM pages WHERE page_number = 1");
    GPtrArray *claimed = store_jobs_claim(s, "w", "m", 3, 1000, 60000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(claimed->len, ==, 3);
    DqJobAnswer ans[3];
    for (guint i = 0; i < claimed->len; i++)
        ans[i] = answer_for(((DqClaimedJob *)g_ptr_array_index(claimed, i))->job_id, "42");
    complete_all(s, "w", ans, 3);
    g_ptr_array_free(claimed, TRUE);
    /* Page 3's job is taken away, so only page 3 of those past the new rendering's last page
     * has none. */
    g_assert_true(dq_store_exec(
        s, "DELETE FROM jobs WHERE page_id = (SELECT id FROM pages WHERE page_number = 3)", &err));
    dq_assert_no_error(err);
    DqPageRow again[2] = {
        {.page_number = 1, .width = 11, .height = 21, .image_sha256 = "eeee", .status = "ok"},
        {.page_number = 2,
         .status = "failed",
         .error_code = "render_timeout",
         .error_message = "t"},
    };
    DqDocumentRow redo = {.path = "/archive/r.pdf",
                          .sha256 = "rrrr",
                          .kind = "pdf",
                          .page_count = 2,
                          .status = "partial"};
    g_assert_true(
        dq_store_document_record(s, &redo, doc, TRUE, SETTINGS, again, 2, NULL, NULL, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers"), ==, 2);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs"), ==, 2);
    g_assert_cmpint(query_int(s, loc, "SELECT id FROM pages WHERE page_number = 1"), ==, page1);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM pages WHERE page_number = 1 AND width = 11 "
                              "AND image_sha256 = 'eeee'"),
                    ==, 1);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM pages WHERE page_number = 2 AND "
                              "image_sha256 IS NULL AND error_code = 'render_timeout'"),
                    ==, 1);
    /* Pages 3 (its job gone) and 4 (failed, never asked about) are gone. */
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM pages"), ==, 2);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM v_answers"), ==, 2);
    dq_store_close(s);
    g_free(loc);
}

/* A retry that rendered only the pages not stored passes the stored ones as `stored`: they are
 * not written (their rows stay as they are) and, as pages of the rendering, not removed as past
 * its last page. */
static void test_rerender_stored_rows(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    gint64 doc = add_document(s, "/archive/k.pdf", "kkkk");
    char img[65];
    g_snprintf(img, sizeof img, "e%063d", 0);
    DqPageRow again[3] = {
        {.page_number = 1,
         .width = 99,
         .height = 99,
         .image_sha256 = "x",
         .status = "ok",
         .stored = TRUE},
        {.page_number = 2,
         .width = 99,
         .height = 99,
         .image_sha256 = "x",
         .status = "ok",
         .stored = TRUE},
        {.page_number = 3, .width = 30, .height = 40, .image_sha256 = img, .status = "ok"},
    };
    DqDocumentRow redo = {
        .path = "/archive/k.pdf", .sha256 = "kkkk", .kind = "pdf", .page_count = 3, .status = "ok"};
    g_assert_true(
        dq_store_document_record(s, &redo, doc, TRUE, SETTINGS, again, 3, NULL, NULL, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM pages WHERE width = 10 AND height = 20 AND "
                              "((page_number = 1 AND image_sha256 LIKE 'a%') OR "
                              "(page_number = 2 AND image_sha256 LIKE 'b%'))"),
                    ==, 2);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM pages WHERE page_number = 3 AND width = 30 "
                              "AND status = 'ok' AND error_code IS NULL AND image_sha256 LIKE "
                              "'e%'"),
                    ==, 1);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM pages"), ==, 3); /* 4 is gone */
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM pages WHERE image_sha256 = 'x'"), ==,
                    0);
    dq_store_close(s);
    g_free(loc);
}

/* store_jobs_requeue of the done jobs `done` names (DqDoneJobs), against snapshot `fp`: how
 * many went back (or would, with dry_run). */
static gint64 requeue_done(DqStore *s, guint done, const char *fp, gboolean dry_run) {
    DqJobFilter f = {.states = 1u << DQ_JOB_DONE, .done = done, .fingerprint = fp};
    return jt_requeue(s, &f, dry_run);
}

/* docqa requeue --stale and --done: the answered jobs whose answer came from another snapshot
 * than the current one (or from none recorded), or every answered job, go back in the queue;
 * their answers stay until answered again, then move to answers_superseded; one that fails for
 * good instead goes back to done with its answer. A fingerprint may be given by its first
 * digits, as docqa run and status print it. */
static void test_requeue_done_stale(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(s, "/archive/s.pdf", "5555");
    g_assert_cmpint(enqueue_all(s, "Total?"), ==, 3);
    GPtrArray *a = store_jobs_claim(s, "A", "m", 3, 1000, 100, NULL, &err);
    g_assert_cmpint(a->len, ==, 3);
    DqJobAnswer ans[3];
    const char *fps[3] = {FP_A, FP_B, NULL}; /* the current snapshot, another, not recorded */
    for (int i = 0; i < 3; i++) {
        ans[i] = answer_for(((DqClaimedJob *)g_ptr_array_index(a, i))->job_id, "old");
        ans[i].model_fingerprint = fps[i];
    }
    complete_all(s, "A", ans, 3);
    g_assert_cmpint(requeue_done(s, DQ_DONE_APPROXIMATE, NULL, FALSE), ==, 0); /* all exact */
    g_assert_cmpint(requeue_done(s, DQ_DONE_STALE, "aaaaaaaaaaaa", TRUE), ==, 2);
    g_assert_cmpint(requeue_done(s, DQ_DONE_STALE, FP_B, TRUE), ==, 2);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 3);

    g_assert_cmpint(requeue_done(s, DQ_DONE_STALE, FP_A, FALSE), ==, 2);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 2);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers"), ==, 3); /* kept */
    GPtrArray *b = store_jobs_claim(s, "B", "m", 3, 2000, 100, NULL, &err);
    g_assert_cmpint(b->len, ==, 2);
    for (guint i = 0; i < b->len; i++) {
        ans[i] = answer_for(((DqClaimedJob *)g_ptr_array_index(b, i))->job_id, "new");
        ans[i].model_fingerprint = FP_A;
    }
    complete_all(s, "B", ans, 2);
    g_assert_cmpint(
        query_int(s, loc, "SELECT count(*) FROM answers WHERE model_fingerprint = '" FP_A "'"), ==,
        3);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM answers_superseded WHERE text = 'old' "
                              "AND (model_fingerprint = '" FP_B "' OR model_fingerprint IS NULL)"),
                    ==, 2);
    g_assert_cmpint(requeue_done(s, DQ_DONE_STALE, FP_A, FALSE), ==, 0); /* all current now */

    /* --done: every answered job; one then fails for good and keeps its answer. */
    g_assert_cmpint(requeue_done(s, DQ_DONE_ANY, NULL, FALSE), ==, 3);
    GPtrArray *c = store_jobs_claim(s, "C", "m", 3, 3000, 100, NULL, &err);
    g_assert_cmpint(c->len, ==, 3);
    DqJobState state = DQ_JOB_N_STATES;
    g_assert_true(store_jobs_fail(s, "C", ((DqClaimedJob *)g_ptr_array_index(c, 0))->job_id,
                                  "page_image", "gone", FALSE, 3000, 10, &state, &err));
    g_assert_cmpint(state, ==, DQ_JOB_DONE);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 1);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers"), ==, 3);
    g_ptr_array_free(a, TRUE);
    g_ptr_array_free(b, TRUE);
    g_ptr_array_free(c, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* The answers in (after, upto] of the commit order, as collect_answer writes them. */
static char *range_text(DqStore *s, gint64 after, gint64 upto) {
    GString *out = g_string_new(NULL);
    GError *err = NULL;
    DqAnswerRange range = {.after = after, .upto = upto};
    g_assert_true(store_jobs_each_answer(s, NULL, FALSE, &range, NULL, collect_answer, out, &err));
    dq_assert_no_error(err);
    return g_string_free(out, FALSE);
}

static gint64 checkpoint_now(DqStore *s) {
    gint64 c = -1;
    GError *err = NULL;
    g_assert_true(store_jobs_commit_checkpoint(s, &c, &err));
    dq_assert_no_error(err);
    return c;
}

/* SQLite -> PostgreSQL -> SQLite: the answers read the same everywhere, ids survive, and the
 * copied identities continue past the copied rows; so does the answers' commit order. */
static void test_migrate_round_trip(void) {
    char *pg = new_location("postgres");
    if (pg == NULL)
        return;
    char *src_loc = new_location("sqlite"), *back_loc = new_location("sqlite");
    GError *err = NULL;
    DqStore *src = dq_store_open(src_loc, &err);
    dq_assert_no_error(err);
    gint64 doc = add_document(src, "/x/b.tiff", "3333");
    /* Its stamp, dev and inode as the signed integers their bits make (store_documents.c). */
    char *stamp = g_strdup_printf("INSERT INTO document_stamps VALUES (%" G_GINT64_FORMAT
                                  ", -9223372036854775807, -2, 4096, 1764000000123456789, "
                                  "1764000001987654321)",
                                  doc);
    g_assert_true(dq_store_exec(src, stamp, &err));
    dq_assert_no_error(err);
    g_free(stamp);
    const char *stamp_q = "SELECT count(*) FROM document_stamps WHERE dev = -9223372036854775807 "
                          "AND inode = -2 AND bytes = 4096 AND mtime_ns = 1764000000123456789 AND "
                          "ctime_ns = 1764000001987654321 AND document_id = (SELECT id FROM "
                          "documents WHERE path = '/x/b.tiff')";
    enqueue_all(src, "Date?");
    GPtrArray *cl = store_jobs_claim(src, "W", "m", 2, 5000, 100, NULL, &err);
    DqJobAnswer ans[2] = {answer_for(((DqClaimedJob *)g_ptr_array_index(cl, 0))->job_id, "é 1"),
                          answer_for(((DqClaimedJob *)g_ptr_array_index(cl, 1))->job_id, "2")};
    ans[1].device = "cuda:1";
    ans[1].weights = "bf16";
    ans[1].exact = 0;
    int written = 0;
    g_assert_true(store_jobs_complete(src, "W", ans, 2, &written, &err));
    g_ptr_array_free(cl, TRUE);
    /* The approximate one answered again: its first answer is kept in answers_superseded. */
    jt_requeue_all(src, 1u << DQ_JOB_DONE);
    cl = store_jobs_claim(src, "W", "m", 1, 6000, 100, NULL, &err); /* it comes first, by id */
    g_assert_cmpint(cl->len, ==, 1);
    g_assert_cmpint(((DqClaimedJob *)g_ptr_array_index(cl, 0))->job_id, ==, ans[1].job_id);
    DqJobAnswer redo = answer_for(((DqClaimedJob *)g_ptr_array_index(cl, 0))->job_id, "2");
    complete_all(src, "W", &redo, 1);
    g_ptr_array_free(cl, TRUE);
    char *want = answers_text(src);

    DqStore *dst = dq_store_open(pg, &err);
    dq_assert_no_error(err);
    gint64 rows = 0;
    g_assert_true(dq_store_copy(src, dst, &rows, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(rows, ==, 1 + 1 + 4 + 1 + 3 + 0 + 2 + 1);
    g_assert_cmpint(pgt_query_int(pg, stamp_q), ==, 1);
    g_assert_cmpint(pgt_query_int(pg, "SELECT count(*) FROM answers_superseded WHERE "
                                      "weights = 'bf16' AND exact = 0 AND device = 'cuda:1'"),
                    ==, 1);
    char *got = answers_text(dst);
    g_assert_cmpstr(got, ==, want);
    g_free(got);
    g_assert_cmpint(pgt_query_int(pg, "SELECT count(*) FROM pages WHERE source_width = 612.5 "
                                      "AND source_height = 792.25"),
                    ==, 1);
    g_assert_cmpint(pgt_query_int(pg, "SELECT sum(done) FROM v_progress"), ==, 2);
    /* New rows continue after the copied ids. */
    g_assert_cmpint(enqueue_all(dst, "Total?"), ==, 3);
    GPtrArray *more = store_jobs_claim(dst, "P", "m", 10, 9000, 100, NULL, &err);
    g_assert_cmpint(more->len, ==, 4);
    /* The answers' commit order came along, the counter too: an export checkpoint of the source
     * holds on the copy, and the next answer is numbered after every copied one. */
    g_assert_cmpint(checkpoint_now(dst), ==, 3);
    g_assert_cmpint(checkpoint_now(src), ==, 3);
    g_assert_cmpint(pgt_query_int(pg, "SELECT commit_seq FROM answers WHERE text = '2'"), ==, 3);
    DqJobAnswer next = answer_for(((DqClaimedJob *)g_ptr_array_index(more, 0))->job_id, "next");
    g_assert_true(store_jobs_complete(dst, "P", &next, 1, &written, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(pgt_query_int(pg, "SELECT commit_seq FROM answers WHERE text = 'next'"), ==, 4);
    g_ptr_array_free(more, TRUE);
    g_free(want);
    want = answers_text(dst);
    /* Into a database that holds rows: refused, nothing merged. */
    g_assert_false(dq_store_copy(src, dst, NULL, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
    g_clear_error(&err);

    DqStore *back = dq_store_open(back_loc, &err);
    dq_assert_no_error(err);
    g_assert_true(dq_store_copy(dst, back, &rows, &err));
    dq_assert_no_error(err);
    got = answers_text(back);
    g_assert_cmpstr(got, ==, want);
    g_free(got);
    g_assert_cmpint(query_int(back, back_loc, stamp_q), ==, 1);
    g_assert_cmpint(checkpoint_now(back), ==, 4);
    DqJobCounts c1, c2;
    g_assert_true(store_jobs_counts(dst, NULL, &c1, &err));
    g_assert_true(store_jobs_counts(back, NULL, &c2, &err));
    g_assert_cmpmem(&c1, sizeof c1, &c2, sizeof c2);
    dq_store_close(back);
    dq_store_close(dst);
    dq_store_close(src);
    g_free(want);
    g_free(pg);
    g_free(src_loc);
    g_free(back_loc);
}

/* Runs the docqa binary with DOCQA_DB (and DOCQA_PAGES unless NULL); returns its exit status. */
static int docqa(const char *db_env, const char *pages_env, char **out, const char *const *args) {
    GPtrArray *argv = g_ptr_array_new();
    char *bin = g_build_filename(DOCQA_BINARY_DIR, "cli", "docqa", NULL);
    g_ptr_array_add(argv, bin);
    for (int i = 0; args[i]; i++)
        g_ptr_array_add(argv, (char *)args[i]);
    g_ptr_array_add(argv, NULL);
    char **envp = g_get_environ();
    envp = g_environ_setenv(envp, "DOCQA_DB", db_env, TRUE);
    envp = pages_env ? g_environ_setenv(envp, "DOCQA_PAGES", pages_env, TRUE)
                     : g_environ_unsetenv(envp, "DOCQA_PAGES");
    char *o = NULL, *e = NULL;
    int status = 0;
    GError *err = NULL;
    g_assert_true(
        g_spawn_sync(NULL, (char **)argv->pdata, envp, 0, NULL, NULL, &o, &e, &status, &err));
    dq_assert_no_error(err);
    *out = g_strconcat(o, e, NULL);
    g_free(o);
    g_free(e);
    g_strfreev(envp);
    g_free(bin);
    g_ptr_array_free(argv, TRUE);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The command line: docqa migrate both ways, DOCQA_DB selecting PostgreSQL for status, and a
 * PostgreSQL run refused without a shared page store. */
static void test_cli(void) {
    char *pg = new_location("postgres");
    if (pg == NULL)
        return;
    char *src = new_location("sqlite");
    GError *err = NULL;
    DqStore *s = dq_store_open(src, &err);
    dq_assert_no_error(err);
    add_document(s, "/c/d.pdf", "4444");
    g_assert_cmpint(enqueue_all(s, "Q?"), ==, 3);
    dq_store_close(s);
    char *out = NULL;
    g_assert_cmpint(
        docqa("", NULL, &out, (const char *[]){"migrate", "--from", src, "--to", pg, NULL}), ==, 0);
    g_assert_nonnull(strstr(out, "migrated 9 rows"));
    g_free(out);
    g_assert_cmpint(
        docqa("", NULL, &out, (const char *[]){"migrate", "--from", src, "--to", pg, NULL}), ==, 2);
    /* the same rows as the source: the copy made before is complete, nothing copied again */
    g_assert_nonnull(strstr(out, "the copy is complete"));
    g_free(out);
    g_assert_cmpint(docqa(pg, NULL, &out, (const char *[]){"status", "--json", NULL}), ==, 0);
    g_assert_nonnull(strstr(out, "\"queued\""));
    g_free(out);
    g_assert_cmpint(docqa(pg, NULL, &out,
                          (const char *[]){"run", "--model", DOCQA_SOURCE_DIR "/models/demo-tiny",
                                           "--until-empty", NULL}),
                    ==, 2);
    g_assert_nonnull(strstr(out, "DOCQA_PAGES"));
    g_free(out);
    char *back = new_location("sqlite");
    g_assert_cmpint(
        docqa("", NULL, &out, (const char *[]){"migrate", "--from", pg, "--to", back, NULL}), ==,
        0);
    g_free(out);
    s = dq_store_open(back, &err);
    DqJobCounts c;
    g_assert_true(store_jobs_counts(s, NULL, &c, &err));
    g_assert_cmpint(c.by_state[DQ_JOB_QUEUED], ==, 3);
    dq_store_close(s);
    g_free(back);
    g_free(src);
    g_free(pg);
}

/* What the server says beside docqa's statements (here a trigger's RAISE WARNING; a FATAL before
 * it drops the connection) reaches stderr on one line with its control characters shown as
 * text: the server's messages hold what any of its users wrote. */
static void test_pg_notice_escaped(void) {
    char *pg = new_location("postgres");
    if (pg == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(pg, &err);
    dq_assert_no_error(err);
    add_document(s, "/c/d.pdf", "5555");
    dq_store_close(s);
    pgt_exec(pg, "CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                 "RAISE WARNING E'look\\x1b]0;PWNED\\x07\\x1b[2J\\nsecond line'; RETURN NULL; "
                 "END $$; "
                 "CREATE TRIGGER shout AFTER INSERT ON questions FOR EACH STATEMENT "
                 "EXECUTE FUNCTION shout()");
    char *pages = dq_test_tmpdir();
    char *out = NULL;
    g_assert_cmpint(docqa(pg, pages, &out, (const char *[]){"ask", "-m", "m", "Total?", NULL}), ==,
                    0);
    if (strchr(out, '\033') != NULL || strchr(out, '\007') != NULL)
        // cppcheck-suppress leakNoVarFunctionCall -- g_error aborts
        g_error("the server's control characters reach the terminal: %s", g_strescape(out, NULL));
    g_assert_nonnull(strstr(out, "server says: WARNING:"));
    g_assert_nonnull(strstr(out, "look\\u001b]0;PWNED\\u0007\\u001b[2J second line\n"));
    g_free(out);
    g_free(pages);
    g_free(pg);
}

/* The store owns the statements its modules cache: closing without store_jobs_finalize really
 * closes the file (no zombie connection holding it open until exit). */
static int open_fds_on(const char *path) {
    int n = 0;
    GDir *d = g_dir_open("/proc/self/fd", 0, NULL);
    const char *name;
    while (d && (name = g_dir_read_name(d)) != NULL) {
        char *link = g_strdup_printf("/proc/self/fd/%s", name);
        char *target = g_file_read_link(link, NULL);
        n += target != NULL && strcmp(target, path) == 0;
        g_free(target);
        g_free(link);
    }
    if (d)
        g_dir_close(d);
    return n;
}

static void test_close_finalizes_statements(void) {
    char *loc = new_location("sqlite");
    const char *path = loc + strlen("sqlite:");
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    DqJobCounts c;
    g_assert_true(store_jobs_counts(s, "m", &c, &err)); /* caches statements */
    g_assert_cmpint(open_fds_on(path), ==, 1);
    dq_store_close(s);
    g_assert_cmpint(open_fds_on(path), ==, 0);
    g_free(loc);
}

static void assert_refused(DqStore *s, GError **err, const char *says) {
    g_assert_null(s);
    g_assert_error(*err, DQ_ERROR, DQ_ERR_DB);
    if (strstr((*err)->message, says) == NULL)
        g_error("expected '%s' in: %s", says, (*err)->message);
    g_clear_error(err);
}

static gint64 sqlite_int(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    g_assert_cmpint(sqlite3_open(path, &db), ==, SQLITE_OK);
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(db, sql, -1, &st, NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    gint64 v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void sqlite_exec(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    g_assert_cmpint(sqlite3_open(path, &db), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(db, sql, NULL, NULL, NULL), ==, SQLITE_OK);
    sqlite3_close(db);
}

/* A new role that may only read the database at `loc` (SELECT on its tables, no CREATE), and
 * the location as that role. */
static char *reader_location(const char *loc, const char *role) {
    char *sql = g_strdup_printf("CREATE ROLE %s LOGIN; "
                                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO %s; "
                                "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                                role, role);
    pgt_exec(loc, sql);
    g_free(sql);
    GString *reader = g_string_new(loc);
    char *user = g_strconcat("user=", role, NULL);
    g_string_replace(reader, "user=postgres", user, 1);
    g_free(user);
    return g_string_free(reader, FALSE);
}

/* The commands that read (status, export, requeue, ask) open an existing docqa database and
 * refuse anything else without writing to it; no open turns another program's database into a
 * docqa one. */
static void test_open_existing(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    gboolean pg = strcmp(kind, "postgres") == 0;
    const char *path = pg ? NULL : loc + strlen("sqlite:");
    GError *err = NULL;
    if (!pg) {
        assert_refused(dq_store_open_existing(loc, &err), &err, "no such database");
        g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
        g_assert_true(g_file_set_contents(path, "", 0, NULL));
    }
    assert_refused(dq_store_open_existing(loc, &err), &err, "holds no docqa tables");
    if (pg)
        g_assert_cmpint(pgt_query_int(loc, "SELECT count(*) FROM pg_tables WHERE schemaname = "
                                           "current_schema()"),
                        ==, 0);
    else
        g_assert_cmpint(sqlite_int(path, "SELECT count(*) FROM sqlite_master"), ==, 0);

    /* Another program's database. */
    if (pg)
        pgt_exec(loc, "CREATE TABLE notes (id integer)");
    else
        sqlite_exec(path, "CREATE TABLE notes (id INTEGER)");
    assert_refused(dq_store_open_existing(loc, &err), &err, "not a docqa database");
    assert_refused(dq_store_open(loc, &err), &err, "not a docqa database");
    if (pg) {
        g_assert_cmpint(pgt_query_int(loc, "SELECT count(*) FROM pg_tables WHERE schemaname = "
                                           "current_schema()"),
                        ==, 1);
        pgt_exec(loc, "DROP TABLE notes");
    } else {
        g_assert_cmpint(sqlite_int(path, "SELECT count(*) FROM sqlite_master"), ==, 1);
        g_assert_cmpint(sqlite_int(path, "SELECT count(*) FROM pragma_journal_mode "
                                         "WHERE journal_mode = 'delete'"),
                        ==, 1);
        g_assert_cmpint(g_unlink(path), ==, 0);
    }

    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(s, "/archive/a.pdf", "1111");
    dq_store_close(s);
    s = dq_store_open_existing(loc, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), >=, 5);
    dq_store_close(s);
    if (pg) {
        /* Up to date, it opens without DDL: a role that may only read can use it. */
        char *reader = reader_location(loc, "docqa_reader");
        s = dq_store_open_existing(reader, &err);
        dq_assert_no_error(err);
        DqJobCounts c;
        g_assert_true(store_jobs_counts(s, NULL, &c, &err));
        dq_assert_no_error(err);
        store_jobs_finalize(s);
        dq_store_close(s);
        g_free(reader);
    }
    g_free(loc);
}

/* Runs statements on either kind of store (test setup). */
static void exec_ok(DqStore *s, const char *sql) {
    GError *err = NULL;
    g_assert_true(dq_store_exec(s, sql, &err));
    dq_assert_no_error(err);
}

/* What a worker's heartbeat tells it about the jobs it has in flight: which of them it no longer
 * holds and need not finish (cancelled, taken over, answered or failed by another worker,
 * deleted, back in the queue with an answer it would not replace), and which it should go on
 * with: its own, and those whose late answer store_jobs_complete keeps (back in the queue or
 * buried, unanswered). The leases it still holds are renewed as before. */
static void test_heartbeat_gone(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(s, "/archive/a.pdf", "1111");
    add_document(s, "/archive/b.pdf", "2222");
    g_assert_cmpint(enqueue_all(s, "Q1"), ==, 6);
    g_assert_cmpint(enqueue_all(s, "Q2"), ==, 6);
    GPtrArray *w = store_jobs_claim(s, "W", "m", 9, dq_wall_ms(), 3600000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(w->len, ==, 9);
    gint64 j[10];
    for (int i = 0; i < 9; i++)
        j[i] = ((DqClaimedJob *)g_ptr_array_index(w, i))->job_id;
    j[9] = j[8] + 1000; /* a job that never was: deleted before the claim was heard */
    char *sql = g_strdup_printf(
        "UPDATE jobs SET state = 'cancelled', lease_owner = NULL, lease_expires_ms = NULL WHERE "
        "id = %" G_GINT64_FORMAT "; "
        "UPDATE jobs SET lease_owner = 'V' WHERE id IN (%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
        "); "
        "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_ms = NULL WHERE id = "
        "%" G_GINT64_FORMAT "; "
        "DELETE FROM jobs WHERE id = %" G_GINT64_FORMAT "; "
        "UPDATE jobs SET state = 'dead', lease_owner = NULL, lease_expires_ms = NULL WHERE id = "
        "%" G_GINT64_FORMAT "; "
        "UPDATE jobs SET state = 'failed', lease_owner = NULL, lease_expires_ms = NULL WHERE id = "
        "%" G_GINT64_FORMAT,
        j[1], j[2], j[4], j[3], j[5], j[6], j[7]);
    exec_ok(s, sql);
    g_free(sql);
    DqJobAnswer by_v = answer_for(j[4], "V's");
    complete_all(s, "V", &by_v, 1);
    /* j8: answered, queued again (requeue --approximate) and its lease lost to the queue. */
    DqJobAnswer mine = answer_for(j[8], "first");
    complete_all(s, "W", &mine, 1);
    sql = g_strdup_printf("UPDATE jobs SET state = 'queued' WHERE id = %" G_GINT64_FORMAT, j[8]);
    exec_ok(s, sql);
    g_free(sql);

    GArray *gone = g_array_new(FALSE, FALSE, sizeof(gint64));
    int held = -1;
    gint64 t = dq_wall_ms();
    g_assert_true(store_jobs_heartbeat_noting(s, "W", t, 60000, j, 10, gone, &held, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(held, ==, 1); /* j0 */
    gint64 expect[] = {j[1], j[2], j[4], j[5], j[7], j[8], j[9]};
    g_assert_cmpint(gone->len, ==, G_N_ELEMENTS(expect));
    for (guint i = 0; i < G_N_ELEMENTS(expect); i++)
        g_assert_cmpint(g_array_index(gone, gint64, i), ==, expect[i]);
    sql = g_strdup_printf("SELECT lease_expires_ms - %" G_GINT64_FORMAT " FROM jobs WHERE id = "
                          "%" G_GINT64_FORMAT,
                          t, j[0]);
    g_assert_cmpint(query_int(s, loc, sql), >=, 60000);
    g_free(sql);
    /* Nothing in flight, or nobody asking: nothing said, the leases renewed all the same. */
    g_assert_true(store_jobs_heartbeat_noting(s, "W", t, 60000, NULL, 0, gone, &held, &err));
    g_assert_true(store_jobs_heartbeat(s, "W", t, 60000, &held, &err));
    g_assert_cmpint(held, ==, 1);
    g_assert_cmpint(gone->len, ==, G_N_ELEMENTS(expect));
    /* The two it goes on with are those whose late answers are kept. */
    DqJobAnswer late[2] = {answer_for(j[3], "late"), answer_for(j[6], "late")};
    complete_all(s, "W", late, 2);
    g_array_free(gone, TRUE);
    g_ptr_array_free(w, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* docqa export --after: the answers committed between two checkpoints, each answer in exactly
 * one range. An answer that replaces the newest one (requeue) is committed later, so it is in
 * the next range, although on SQLite it takes the replaced answer's id again (INTEGER PRIMARY
 * KEY is max(id) + 1 and the old row was deleted first): a checkpoint of ids would never see it. */
static void test_export_range(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(checkpoint_now(s), ==, 0);
    add_document(s, "/archive/e.pdf", "eeee");
    g_assert_cmpint(enqueue_all(s, "Total?"), ==, 3);
    GPtrArray *a = store_jobs_claim(s, "A", "m", 3, 1000, 100, NULL, &err);
    g_assert_cmpint(a->len, ==, 3);
    DqJobAnswer ans[3];
    for (int i = 0; i < 3; i++)
        ans[i] = answer_for(((DqClaimedJob *)g_ptr_array_index(a, i))->job_id, "first");
    ans[1].text = "second";
    ans[2].text = "third";
    ans[2].exact = 0; /* the newest answer, approximate: requeued below */
    int written = 0;
    g_assert_true(store_jobs_complete(s, "A", ans, 2, &written, &err));
    gint64 c1 = checkpoint_now(s);
    g_assert_cmpint(c1, ==, 2);
    g_assert_true(store_jobs_complete(s, "A", ans + 2, 1, &written, &err));
    gint64 c2 = checkpoint_now(s);
    g_assert_cmpint(c2, ==, 3);
    char *text = range_text(s, 0, c1);
    g_assert_cmpstr(text, ==,
                    "/archive/e.pdf|1|Total?|first|m|2026-01-01T00:00:01.250Z|cpu|stored|exact\n"
                    "/archive/e.pdf|2|Total?|second|m|2026-01-01T00:00:01.250Z|cpu|stored|exact\n");
    g_free(text);
    text = range_text(s, c1, c2);
    g_assert_cmpstr(
        text, ==,
        "/archive/e.pdf|3|Total?|third|m|2026-01-01T00:00:01.250Z|cpu|stored|approximate\n");
    g_free(text);
    gint64 third_id =
        query_int(s, loc, "SELECT id FROM answers WHERE text = 'third'"); /* the largest id */
    g_assert_cmpint(third_id, ==, query_int(s, loc, "SELECT max(id) FROM answers"));

    /* Answered again: the replacing answer is the next range's, with the same job. */
    g_assert_cmpint(jt_requeue_all(s, 1u << DQ_JOB_DONE), ==, 1);
    g_assert_cmpint(checkpoint_now(s), ==, c2); /* requeueing commits no answer */
    GPtrArray *b = store_jobs_claim(s, "B", "m", 3, 2000, 100, NULL, &err);
    g_assert_cmpint(b->len, ==, 1);
    DqJobAnswer redo = answer_for(ans[2].job_id, "third, exactly");
    complete_all(s, "B", &redo, 1);
    gint64 c3 = checkpoint_now(s);
    g_assert_cmpint(c3, ==, 4);
    text = range_text(s, c2, c3);
    g_assert_cmpstr(
        text, ==,
        "/archive/e.pdf|3|Total?|third, exactly|m|2026-01-01T00:00:01.250Z|cpu|stored|exact\n");
    g_free(text);
    gint64 redo_id = query_int(s, loc, "SELECT id FROM answers WHERE text = 'third, exactly'");
    if (dq_store_kind(s) == DQ_STORE_SQLITE)
        g_assert_cmpint(redo_id, ==, third_id); /* why `id > N` is no checkpoint */
    char *sql = g_strdup_printf("SELECT count(*) FROM answers_superseded WHERE text = 'third' "
                                "AND job_id = %" G_GINT64_FORMAT,
                                ans[2].job_id);
    g_assert_cmpint(query_int(s, loc, sql), ==, 1);
    g_free(sql);
    /* The replaced answer left its range (it was exported from there already); the ranges
     * together hold every answer there is, and nothing lies past the newest checkpoint. */
    text = range_text(s, c1, c2);
    g_assert_cmpstr(text, ==, "");
    g_free(text);
    text = range_text(s, 0, c3);
    char *all = answers_text(s);
    g_assert_cmpstr(text, ==, all);
    g_free(all);
    g_free(text);
    text = range_text(s, c3, G_MAXINT64);
    g_assert_cmpstr(text, ==, "");
    g_free(text);
    g_assert_cmpint(query_int(s, loc, "SELECT count(DISTINCT commit_seq) FROM answers"), ==, 3);
    g_ptr_array_free(a, TRUE);
    g_ptr_array_free(b, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* Two workers on PostgreSQL, where an answer's id is drawn at INSERT: A stores its answer (the
 * lower id) and, before A's COMMIT, B stores and commits one (the higher id); an export then sees
 * B's alone. The export after A's commit gives A's, although its id is below every id the first
 * export saw: a checkpoint of ids would lose it. */
typedef struct {
    DqStore *b, *reader;
    gint64 job_b;
    gint64 checkpoint;
    char *rows;
} CommitOrder;
static CommitOrder *commit_order;

static void commit_b_before_a(const char *point) {
    CommitOrder *co = commit_order;
    if (co == NULL || strcmp(point, "complete:before_commit") != 0)
        return;
    commit_order = NULL; /* once, and not again for B's own completion */
    GError *err = NULL;
    DqJobAnswer ans = answer_for(co->job_b, "from B");
    int written = 0;
    g_assert_true(store_jobs_complete(co->b, "B", &ans, 1, &written, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(written, ==, 1);
    co->checkpoint = checkpoint_now(co->reader);
    co->rows = range_text(co->reader, 0, co->checkpoint);
}

static void test_pg_export_commit_order(void) {
    char *loc = new_location("postgres");
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *a = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(a, "/archive/o.pdf", "oooo");
    g_assert_cmpint(enqueue_all(a, "Total?"), ==, 3);
    CommitOrder co = {.b = dq_store_open(loc, &err), .reader = dq_store_open(loc, &err)};
    dq_assert_no_error(err);
    GPtrArray *ja = store_jobs_claim(a, "A", "m", 1, 1000, 60000, NULL, &err);
    GPtrArray *jb = store_jobs_claim(co.b, "B", "m", 1, 1000, 60000, NULL, &err);
    g_assert_cmpint(ja->len, ==, 1);
    g_assert_cmpint(jb->len, ==, 1);
    co.job_b = ((DqClaimedJob *)g_ptr_array_index(jb, 0))->job_id;
    DqJobAnswer ans = answer_for(((DqClaimedJob *)g_ptr_array_index(ja, 0))->job_id, "from A");
    commit_order = &co;
    store_jobs_set_test_hook(commit_b_before_a);
    int written = 0;
    gboolean ok = store_jobs_complete(a, "A", &ans, 1, &written, &err);
    store_jobs_set_test_hook(NULL);
    dq_assert_no_error(err);
    g_assert_true(ok);
    g_assert_null(commit_order); /* the hook ran */
    g_assert_cmpint(query_int(a, loc,
                              "SELECT count(*) FROM answers a JOIN answers b ON "
                              "a.text = 'from A' AND b.text = 'from B' AND a.id < b.id"),
                    ==, 1);
    g_assert_cmpint(co.checkpoint, ==, 1);
    g_assert_nonnull(strstr(co.rows, "|from B|"));
    g_assert_null(strstr(co.rows, "|from A|"));
    gint64 now = checkpoint_now(co.reader);
    g_assert_cmpint(now, ==, 2);
    char *rows = range_text(co.reader, co.checkpoint, now);
    g_assert_nonnull(strstr(rows, "|from A|"));
    g_assert_null(strstr(rows, "|from B|"));
    g_free(rows);
    g_free(co.rows);
    g_ptr_array_free(ja, TRUE);
    g_ptr_array_free(jb, TRUE);
    dq_store_close(co.reader);
    dq_store_close(co.b);
    store_jobs_finalize(a);
    dq_store_close(a);
    g_free(loc);
}

/* An export reads the answers from PostgreSQL as the server sends them, not all at once: the
 * whole result of every answer of a big archive was held in memory (about twice the CSV's size:
 * 330 MB for a 60 MB export of 120,000 answers). Seen from the server: when the first row reaches
 * the caller, the query is still sending the other 20 MB. Stopped early, the query is cancelled
 * and the connection serves the next statement. */
typedef struct {
    const char *loc;
    gint64 rows, stop_at;
    gint64 sending_at_first;
} Streamed;

static gboolean count_streamed(const DqAnswerRow *row, void *user, GError **err) {
    (void)row;
    Streamed *st = user;
    if (st->rows++ == 0)
        st->sending_at_first = pgt_query_int(
            st->loc, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                     "AND state = 'active' AND query LIKE '%FROM v_answers%' AND pid <> "
                     "pg_backend_pid()");
    if (st->rows == st->stop_at)
        return dq_fail(err, DQ_ERR_IO, "stopped at row %" G_GINT64_FORMAT, st->rows);
    return TRUE;
}

static void test_pg_export_streams(void) {
    char *loc = new_location("postgres");
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(s, "/archive/big.pdf", "bbbb");
    g_assert_cmpint(enqueue_all(s, "Total?"), ==, 3);
    exec_ok(s, "INSERT INTO jobs (page_id, question_id, model_id, generation_settings, job_key, "
               "state, finished_at) SELECT (SELECT min(id) FROM pages WHERE status = 'ok'), "
               "(SELECT min(id) FROM questions), 'm', '{}', 'bulk-' || g, 'done', "
               "'2026-01-01T00:00:00.000Z' FROM generate_series(1, 10000) g");
    exec_ok(s, "INSERT INTO answers (job_id, text, prompt_tokens, generated_tokens, model_id, "
               "generation_settings, worker, started_at, finished_at) SELECT id, repeat('x', "
               "2000), 1, 1, 'm', '{}', 'w', finished_at, finished_at FROM jobs WHERE job_key "
               "LIKE 'bulk-%'");
    Streamed st = {.loc = loc};
    g_assert_true(store_jobs_each_answer(s, NULL, FALSE, NULL, NULL, count_streamed, &st, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(st.rows, ==, 10000);
    g_assert_cmpint(st.sending_at_first, ==, 1);

    Streamed stop = {.loc = loc, .stop_at = 5};
    g_assert_false(store_jobs_each_answer(s, NULL, FALSE, NULL, NULL, count_streamed, &stop, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    g_assert_cmpstr(err->message, ==, "stopped at row 5");
    g_clear_error(&err);
    g_assert_cmpint(stop.rows, ==, 5);
    g_assert_cmpint(checkpoint_now(s), ==, 10000);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers"), ==, 10000);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* A worker that answers after its lease ran out (the database was locked or unreachable longer
 * than a lease): its answer is kept when nobody else holds or answered the job, whether the job
 * went back to the queue or was buried for it; never while another worker holds it. */
static void test_late_answer(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(s, "/archive/late.pdf", "6666");
    g_assert_cmpint(enqueue_all(s, "Late?"), ==, 3);
    GPtrArray *a = store_jobs_claim(s, "A", "m", 2, 1000, 100, NULL, &err);
    g_assert_cmpint(a->len, ==, 2);
    gint64 j1 = ((DqClaimedJob *)g_ptr_array_index(a, 0))->job_id;
    gint64 j2 = ((DqClaimedJob *)g_ptr_array_index(a, 1))->job_id;
    /* B takes A's first job over; the second goes back to the queue. */
    GPtrArray *b = store_jobs_claim(s, "B", "m", 1, 1200, 100, NULL, &err);
    g_assert_cmpint(b->len, ==, 1);
    g_assert_cmpint(((DqClaimedJob *)g_ptr_array_index(b, 0))->job_id, ==, j1);
    DqJobAnswer late[2] = {answer_for(j1, "late"), answer_for(j2, "late")};
    int written = -1;
    g_assert_true(store_jobs_complete(s, "A", late, 2, &written, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(written, ==, 1); /* j2; j1 is B's */
    DqJobAnswer mine = answer_for(j1, "b");
    complete_all(s, "B", &mine, 1);
    /* The third job: claimed twice, both leases expire, its last attempt buries it. */
    GPtrArray *c = store_jobs_claim(s, "C", "m", 1, 2000, 100, NULL, &err);
    g_assert_cmpint(c->len, ==, 1);
    gint64 j3 = ((DqClaimedJob *)g_ptr_array_index(c, 0))->job_id;
    GPtrArray *d = store_jobs_claim(s, "D", "m", 1, 2200, 100, NULL, &err);
    g_assert_cmpint(d->len, ==, 1);
    GArray *buried = g_array_new(FALSE, FALSE, sizeof(gint64));
    GPtrArray *e = store_jobs_claim_noting(s, "E", "m", 1, 2400, 100, buried, &err);
    g_assert_cmpint(e->len, ==, 0);
    g_assert_cmpint(buried->len, ==, 1);
    g_assert_cmpint(g_array_index(buried, gint64, 0), ==, j3);
    DqJobCounts counts;
    g_assert_true(store_jobs_counts(s, NULL, &counts, &err));
    g_assert_cmpint(counts.by_state[DQ_JOB_DEAD], ==, 1);
    gint64 n = -1;
    g_assert_true(
        store_jobs_count_in_state(s, (const gint64 *)buried->data, 1, DQ_JOB_DEAD, &n, &err));
    g_assert_cmpint(n, ==, 1);
    DqJobAnswer c3 = answer_for(j3, "c"), d3 = answer_for(j3, "d");
    complete_all(s, "C", &c3, 1);
    g_assert_true(store_jobs_complete(s, "D", &d3, 1, &written, &err));
    g_assert_cmpint(written, ==, 0); /* answered already */
    g_assert_true(store_jobs_counts(s, NULL, &counts, &err));
    g_assert_cmpint(counts.by_state[DQ_JOB_DONE], ==, 3);
    /* What `docqa run` asks of the jobs its claims buried: this one is done after all. */
    gint64 both[2] = {j3, j1};
    g_assert_true(store_jobs_count_in_state(s, both, 2, DQ_JOB_DONE, &n, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(n, ==, 2);
    g_assert_true(store_jobs_count_in_state(s, both, 1, DQ_JOB_DEAD, &n, &err));
    g_assert_cmpint(n, ==, 0);
    g_array_free(buried, TRUE);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers"), ==, 3);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM jobs WHERE state = 'done' AND "
                              "lease_owner IS NULL AND finished_at IS NOT NULL"),
                    ==, 3);
    g_ptr_array_free(a, TRUE);
    g_ptr_array_free(b, TRUE);
    g_ptr_array_free(c, TRUE);
    g_ptr_array_free(d, TRUE);
    g_ptr_array_free(e, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* Pages failing for one cause are one failure reason, whatever the paths in their messages
 * (docqa status's "most common failure reasons"), with one of the messages as an example; the
 * same on SQLite and PostgreSQL. */
static void test_failure_reasons_grouped(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(s, "/archive/My Scans/a (1).pdf", "8881");
    add_document(s, "/archive/b.pdf", "8882");
    g_assert_cmpint(enqueue_all(s, "Why?"), ==, 6);
    GPtrArray *a = store_jobs_claim(s, "A", "m", 6, 1000, 60000, NULL, &err);
    g_assert_cmpint(a->len, ==, 6);
    for (guint i = 0; i < a->len; i++) {
        const DqClaimedJob *j = g_ptr_array_index(a, i);
        char *msg =
            i < 4 ? g_strdup_printf("/data/docqa.db.pages/%c0/00/%s.png: page image "
                                    "missing (%s, page %d)",
                                    'a' + i, j->image_sha256, j->document_path, j->page_number)
                  : g_strdup_printf("/data/pages/%u.png: not a PNG file", i);
        DqJobState st;
        g_assert_true(store_jobs_fail(s, "A", j->job_id, i < 4 ? "page_image" : "model", msg,
                                      i >= 4, 1000, 10, &st, &err));
        dq_assert_no_error(err);
        g_free(msg);
    }
    GPtrArray *errs = store_jobs_top_errors(s, 5, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(errs->len, ==, 2);
    const DqErrorReason *r0 = g_ptr_array_index(errs, 0), *r1 = g_ptr_array_index(errs, 1);
    g_assert_cmpstr(r0->kind, ==, "page_image");
    g_assert_cmpstr(r0->message, ==, "...: page image missing (...)");
    g_assert_cmpint(r0->jobs, ==, 4);
    g_assert_true(g_str_has_prefix(r0->example, "/data/docqa.db.pages/a0/00/"));
    g_assert_true(g_str_has_suffix(r0->example, ".png: page image missing (/archive/My Scans/"
                                                "a (1).pdf, page 1)"));
    g_assert_cmpstr(r1->kind, ==, "model");
    g_assert_cmpstr(r1->message, ==, "...: not a PNG file");
    g_assert_cmpstr(r1->example, ==, "/data/pages/4.png: not a PNG file");
    g_assert_cmpint(r1->jobs, ==, 2);
    g_ptr_array_free(errs, TRUE);
    g_ptr_array_free(a, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* A role that may only read, on a database an older docqa made: told what it takes. */
static void test_pg_reader_on_old_schema(void) {
    char *loc = new_location("postgres");
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open_at(loc, 5, &err);
    dq_assert_no_error(err);
    dq_store_close(s);
    char *reader = reader_location(loc, "docqa_old_reader");
    g_assert_null(dq_store_open_existing(reader, &err));
    g_assert_nonnull(err);
    if (strstr(err->message, "upgrading the schema from version 5") == NULL)
        g_error("unexpected: %s", err->message);
    g_clear_error(&err);
    g_free(reader);
    g_free(loc);
}

/* A connection the server drops (a restart, an idle timeout) says so (DQ_ERR_DB_LOST), and
 * dq_store_reconnect brings the store back, its statements prepared again. */
static void test_pg_reconnect(void) {
    char *loc = new_location("postgres");
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    DqJobCounts c;
    g_assert_true(store_jobs_counts(s, NULL, &c, &err));
    g_assert_cmpint(pgt_query_int(loc, "SELECT count(pg_terminate_backend(pid)) FROM "
                                       "pg_stat_activity WHERE datname = current_database() "
                                       "AND pid <> pg_backend_pid()"),
                    ==, 1);
    /* pg_terminate_backend only signals it: wait for it to be gone, having told the client
     * (a fixed 100 ms was not always enough on a loaded machine). */
    gint64 until = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    while (pgt_query_int(loc, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                              "current_database() AND pid <> pg_backend_pid()") > 0) {
        g_assert_cmpint(g_get_monotonic_time(), <, until);
        g_usleep(10000);
    }
    g_assert_false(store_jobs_counts(s, NULL, &c, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB_LOST);
    g_clear_error(&err);
    g_assert_true(dq_store_reconnect(s, &err));
    dq_assert_no_error(err);
    g_assert_true(store_jobs_counts(s, NULL, &c, &err));
    dq_assert_no_error(err);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* The completion's COMMIT reaches the server, the reply does not (the connection drops at that
 * moment): the server commits behind the client's back, here by the hook, and the socket is shut
 * before pg_commit can hear of it. */
static DqStore *lost_reply_store;

static void commit_then_drop(const char *point) {
    if ((strcmp(point, "complete:before_commit") != 0 &&
         strcmp(point, "fail:before_commit") != 0) ||
        lost_reply_store == NULL)
        return;
    PGconn *c = dq_store_pg(lost_reply_store);
    lost_reply_store = NULL;
    PGresult *r = PQexec(c, "COMMIT");
    g_assert_cmpint(PQresultStatus(r), ==, PGRES_COMMAND_OK);
    PQclear(r);
    g_assert_cmpint(shutdown(PQsocket(c), SHUT_RDWR), ==, 0);
}

/* A completion tried again after its COMMIT's reply was lost finds its answers stored: counted
 * as written (the worker's "answered"), not as answered too late, and stored once. A failure
 * tried again reports the state it left the job in (run's count of failed jobs). */
static void test_pg_commit_reply_lost(void) {
    char *loc = new_location("postgres");
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(s, "/archive/lost.pdf", "3333");
    g_assert_cmpint(enqueue_all(s, "Lost?"), ==, 3);
    GPtrArray *a = store_jobs_claim(s, "A", "m", 2, 1000, 60000, NULL, &err);
    g_assert_cmpint(a->len, ==, 2);
    DqJobAnswer ans[2] = {answer_for(((DqClaimedJob *)g_ptr_array_index(a, 0))->job_id, "x"),
                          answer_for(((DqClaimedJob *)g_ptr_array_index(a, 1))->job_id, "y")};
    int written = -1;
    lost_reply_store = s;
    store_jobs_set_test_hook(commit_then_drop);
    gboolean ok = store_jobs_complete(s, "A", ans, 2, &written, &err);
    store_jobs_set_test_hook(NULL);
    g_assert_false(ok);
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB_LOST);
    g_clear_error(&err);
    g_assert_cmpint(pgt_query_int(loc, "SELECT count(*) FROM answers"), ==, 2); /* committed */
    g_assert_true(dq_store_reconnect(s, &err));
    dq_assert_no_error(err);
    complete_all(s, "A", ans, 2);
    g_assert_cmpint(pgt_query_int(loc, "SELECT count(*) FROM answers"), ==, 2);
    g_assert_cmpint(pgt_query_int(loc, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 2);

    /* The same for a failure: the retry says what the first try did, and records it once. */
    GPtrArray *b = store_jobs_claim(s, "B", "m", 1, 1000, 60000, NULL, &err);
    g_assert_cmpint(b->len, ==, 1);
    gint64 id = ((DqClaimedJob *)g_ptr_array_index(b, 0))->job_id;
    DqJobState st = DQ_JOB_N_STATES;
    lost_reply_store = s;
    store_jobs_set_test_hook(commit_then_drop);
    ok = store_jobs_fail(s, "B", id, "page_image", "gone", FALSE, 1000, 10, &st, &err);
    store_jobs_set_test_hook(NULL);
    g_assert_false(ok);
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB_LOST);
    g_clear_error(&err);
    g_assert_true(dq_store_reconnect(s, &err));
    g_assert_true(store_jobs_fail(s, "B", id, "page_image", "gone", FALSE, 1000, 10, &st, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(st, ==, DQ_JOB_FAILED);
    g_assert_cmpint(pgt_query_int(loc, "SELECT count(*) FROM job_errors"), ==, 1);
    /* Another worker's failure of the job is not this one's. */
    g_assert_true(store_jobs_fail(s, "C", id, "page_image", "gone", FALSE, 1000, 10, &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_N_STATES);
    g_ptr_array_free(b, TRUE);
    g_ptr_array_free(a, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* This process as a machine whose clock is `skew_ms` off: its time now. */
static gint64 machine_clock(gint64 skew_ms) {
    dq_wall_clock_skew_for_test(skew_ms);
    return dq_wall_ms();
}

/* Workers on machines whose clocks disagree by far more than a lease share one PostgreSQL
 * queue: leases are kept in the server's time, so neither takes the other's live jobs, and a
 * lease that did run out is still taken back on time. */
static void test_pg_clock_skew(void) {
    char *loc = new_location("postgres");
    if (loc == NULL)
        return;
    const gint64 ahead = 10 * 60 * 1000, lease = 60000;
    GError *err = NULL;
    machine_clock(0);
    DqStore *a = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    machine_clock(ahead);
    DqStore *b = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(a, "/archive/skew.pdf", "5555");
    g_assert_cmpint(enqueue_all(a, "Skew?"), ==, 3);
    GPtrArray *ja = store_jobs_claim(a, "A", "m", 1, machine_clock(0), lease, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(ja->len, ==, 1);
    /* B's clock is ten minutes ahead: A's lease, a minute by A's clock, is still live. */
    GPtrArray *jb = store_jobs_claim(b, "B", "m", 3, machine_clock(ahead), lease, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(jb->len, ==, 2);
    /* And B's leases, stamped by its clock, are not a minute too long for A. */
    GPtrArray *jc = store_jobs_claim(a, "C", "m", 3, machine_clock(0) + 1000, lease, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(jc->len, ==, 0);
    int held = -1;
    g_assert_true(store_jobs_heartbeat(b, "B", machine_clock(ahead), lease, &held, &err));
    g_assert_cmpint(held, ==, 2);
    g_assert_cmpint(pgt_query_int(loc, "SELECT count(*) FROM job_errors"), ==, 0);
    /* A minute and more later by B's clock, A's lease has run out (A never renewed it): B
     * takes the job back, and its own jobs stay its own. */
    GPtrArray *jd =
        store_jobs_claim(b, "B", "m", 3, machine_clock(ahead) + lease + 2000, lease, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(jd->len, ==, 1);
    g_assert_cmpint(((DqClaimedJob *)g_ptr_array_index(jd, 0))->job_id, ==,
                    ((DqClaimedJob *)g_ptr_array_index(ja, 0))->job_id);
    g_assert_cmpint(pgt_query_int(loc, "SELECT count(*) FROM job_errors WHERE kind = "
                                       "'lease_expired'"),
                    ==, 1);
    /* A retry's backoff, too, is the server's time: B fails a job with a minute's backoff,
     * and A, ten minutes behind B, gets it after that minute, not before (nor ten later). */
    DqJobState st = DQ_JOB_N_STATES;
    gint64 t = machine_clock(ahead) + lease + 2000;
    g_assert_true(store_jobs_heartbeat(b, "B", t, 2 * lease, &held, &err));
    gint64 failed = ((DqClaimedJob *)g_ptr_array_index(jb, 0))->job_id;
    g_assert_true(store_jobs_fail(b, "B", failed, "model", "busy", TRUE, t, lease, &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_QUEUED);
    t = machine_clock(0) + lease + 2000;
    GPtrArray *je = store_jobs_claim(a, "A", "m", 3, t + 2000, lease, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(je->len, ==, 0);
    GPtrArray *jf = store_jobs_claim(a, "A", "m", 3, t + lease + 2000, lease, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(jf->len, ==, 1);
    g_assert_cmpint(((DqClaimedJob *)g_ptr_array_index(jf, 0))->job_id, ==, failed);
    machine_clock(0);
    GPtrArray *all[] = {ja, jb, jc, jd, je, jf};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
        g_ptr_array_free(all[i], TRUE);
    store_jobs_finalize(a);
    dq_store_close(a);
    store_jobs_finalize(b);
    dq_store_close(b);
    g_free(loc);
}

/* Workers go on while `docqa migrate` copies: the copy is the source as it was when it began. */
static const char *snapshot_source;

static void complete_behind_the_copy(const char *point) {
    if (strcmp(point, "migrate:copied:jobs") != 0)
        return;
    GError *err = NULL;
    DqStore *o = dq_store_open(snapshot_source, &err);
    dq_assert_no_error(err);
    GPtrArray *cl = store_jobs_claim(o, "W", "m", 1, 1000, 100000, NULL, &err);
    g_assert_cmpint(cl->len, ==, 1);
    DqJobAnswer a = answer_for(((DqClaimedJob *)g_ptr_array_index(cl, 0))->job_id, "late");
    complete_all(o, "W", &a, 1);
    g_ptr_array_free(cl, TRUE);
    store_jobs_finalize(o);
    dq_store_close(o);
}

static void test_migrate_snapshot(gconstpointer kind) {
    char *src_loc = new_location(kind);
    if (src_loc == NULL)
        return;
    char *dst_loc = new_location("sqlite");
    GError *err = NULL;
    DqStore *src = dq_store_open(src_loc, &err), *dst = dq_store_open(dst_loc, &err);
    dq_assert_no_error(err);
    add_document(src, "/x/a.pdf", "4444");
    enqueue_all(src, "Total?");
    snapshot_source = src_loc;
    store_jobs_set_test_hook(complete_behind_the_copy); /* needs the hook */
    g_assert_true(dq_store_copy(src, dst, NULL, &err));
    store_jobs_set_test_hook(NULL);
    dq_assert_no_error(err);
    const char *path = dst_loc + strlen("sqlite:");
    /* The source moved on (one job done) ... */
    DqJobCounts c;
    g_assert_true(store_jobs_counts(src, NULL, &c, &err));
    g_assert_cmpint(c.by_state[DQ_JOB_DONE], ==, 1);
    /* ... the copy is as it began: every job queued, no answer. */
    g_assert_cmpint(sqlite_int(path, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 3);
    g_assert_cmpint(sqlite_int(path, "SELECT count(*) FROM answers"), ==, 0);
    store_jobs_finalize(src);
    dq_store_close(src);
    store_jobs_finalize(dst);
    dq_store_close(dst);
    g_free(src_loc);
    g_free(dst_loc);
}

/* No message repeats a password, however the location is written or whatever libpq says of it. */
static void test_pg_password_hidden(void) {
    if (server == NULL) {
        g_test_skip(server_why_not);
        return;
    }
    const char *bad[] = {
        "postgresql://u:S3cretPW@[::1:5/db",
        "postgresql://h:1/db?password=S3cretPW&bogus=1",
        "postgresql:///db?host=/nonexistent-docqa-dir&password=S3cretPW",
        "postgres://u:S3cretPW@/db?host=/nonexistent-docqa-dir",
        "postgresql://u:S3cretPW%zz@/db?host=/nonexistent-docqa-dir",
        "postgresql:///db?host=/nonexistent-docqa-dir&password=S3cretPW%zz",
        "postgresql://u:S3cretPW/db",
        /* libpq reads the query after an "@" as the host name, which its message quotes */
        "postgresql://u?x=1@b&password=a b S3cretPW/db",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        GError *err = NULL;
        g_assert_null(dq_store_open(bad[i], &err));
        g_assert_nonnull(err);
        if (strstr(err->message, "S3cretPW") != NULL)
            g_error("%s: the password shows: %s", bad[i], err->message);
        g_clear_error(&err);
    }
    GError *err = NULL;
    g_assert_null(dq_store_open("postgres:docqa", &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
    g_assert_nonnull(strstr(err->message, "postgresql://"));
    g_clear_error(&err);
}

/* How a location libpq cannot parse is shown: its password hidden even where it holds a quote,
 * which ends a location quoted in libpq's messages but not a location given alone (found by
 * fuzz_pg_location). No server needed. */
static void test_pg_display_location(void) {
    const char *bad[] = {
        "postgresql://u:S3c\"retPW@host/db?x=%zz",
        "postgresql://u:S3c\"retPW/db?x=%zz",
        "postgresql://host/db?x=%zz&password=S3c\"retPW",
        "postgresql://u:S3cretPW@host/db?x=%zz",
        /* a user name that is not UTF-8 (found by fuzz_pg_location) */
        "postgresql://\xdc:ab\"S3cretPW@host-/db?x=%zz",
        "postgresql://\xdc:S3cretPW@host/db?x=%zz",
        /* a user name holding a space (found by fuzz_pg_location) */
        "postgresql://%zzh xcarol:pw'S3cretPW@",
        "postgresql://a b:S3cretPW/db?x=%zz",
        /* the whole value, spaces and quotes included (libpq splits a query at "&" only) */
        "postgresql://host/db?x=%zz&password=a b S3cretPW",
        "postgresql://host/db?x=%zz&password='a b S3cretPW'",
        "postgresql://host/db?x=%zz&password='a\\' b&S3cretPW'",
        "postgresql://host/db?x=%zz&password='a\\\\' b S3cretPW",
        /* parsed, but libpq takes what comes before an "@" for the user and the rest for the
         * host, "password=" and all */
        "postgresql://host?x=a@b&password=S3cretPW",
        "postgresql://h?password=S3cretPW@b/db",
        "postgresql://h?x=1&password=a b S3cretPW@b/db",
        /* a "]" in the password closes an IPv6 host's "[" (found by fuzz_pg_location) */
        "postgresql://[?password=S3cretPW]",
        /* a query's value runs to the next '&', spaces and all */
        "postgresql://u@host/db?password=a S3cretPW&x=%zz",
        "postgresql://u@host/db?x=%zz&password= a b S3cretPW",
        /* libpq parses these, the password landing in the host or the user name: it splits at
         * the first '@' before a '/', even one in the query ("a@b@c" is user a, host b@c) */
        "postgresql://host?x=a@b&password=S3cretPW",
        "postgresql://host?password=S3cretPW@b/db",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        char *shown = store_pg_display_location(bad[i]);
        if (strstr(shown, "retPW") != NULL)
            g_error("%s: the password shows: %s", bad[i], shown);
        g_assert_nonnull(strstr(shown, "***"));
        g_free(shown);
        gboolean hidden = FALSE;
        shown = dq_store_location_pasteable(bad[i], &hidden);
        if (strstr(shown, "retPW") != NULL || !hidden)
            g_error("%s: the password shows to paste: %s", bad[i], shown);
        g_free(shown);
    }
    /* Not even a space before it shows (found by fuzz_pg_location). */
    char *spaced = store_pg_display_location("postgresql://[/db?password= S3cretPW");
    g_assert_cmpstr(spaced, ==, "postgresql://[/db?password=***");
    g_free(spaced);
    char *shown = store_pg_display_location("postgresql://u:S3c\"retPW@host:5432/db");
    g_assert_cmpstr(shown, ==, "postgresql://u@host:5432/db");
    g_free(shown);
    /* the same, whichever way libpq splits it */
    char *a = store_pg_display_location("postgresql://[?password=ab]");
    char *b = store_pg_display_location("postgresql://[?password=xxx");
    g_assert_cmpstr(a, ==, b);
    g_free(a);
    g_free(b);
}

/* A location to paste into a command (advice to run `docqa migrate --from X`): as given, a
 * socket folder's host= too, which the display form cannot say, quoted for a shell where it
 * needs it, and a password hidden, saying so. */
static void test_location_pasteable(void) {
    const char *const cases[][3] = {
        {"docqa.db", "docqa.db", "0"},
        {"sqlite:/srv/nightly/docqa.db", "sqlite:/srv/nightly/docqa.db", "0"},
        {"/srv/docqa-nightly/docqa_1.db", "/srv/docqa-nightly/docqa_1.db", "0"},
        {"", "''", "0"},
        {"my scans/it's.db", "'my scans/it'\\''s.db'", "0"},
        {"postgresql://docqa@dbhost:5433/docqa", "postgresql://docqa@dbhost:5433/docqa", "0"},
        {"postgresql:///docqa?host=/var/run/postgresql",
         "'postgresql:///docqa?host=/var/run/postgresql'", "0"},
        {"postgresql:///docqa?host=/tmp&sslmode=disable",
         "'postgresql:///docqa?host=/tmp&sslmode=disable'", "0"},
        {"postgresql://u:S3cret@dbhost/docqa", "'postgresql://u:***@dbhost/docqa'", "1"},
        {"postgresql:///docqa?host=/tmp&password=S3cret&user=u",
         "'postgresql:///docqa?host=/tmp&password=***&user=u'", "1"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        gboolean hidden = -1;
        char *got = dq_store_location_pasteable(cases[i][0], &hidden);
        g_assert_cmpstr(got, ==, cases[i][1]);
        g_assert_cmpint(hidden, ==, cases[i][2][0] == '1');
        g_free(got);
    }
}

/* The version dq_store_document_record hands back is the one it stored, on both stores: 1 for a
 * new path, one more for the same path with other bytes. */
static void test_record_out_version(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    char img[65];
    g_snprintf(img, sizeof img, "a%063d", 0);
    DqPageRow page = {
        .page_number = 1, .width = 10, .height = 20, .image_sha256 = img, .status = "ok"};
    DqDocumentRow doc = {.path = "/v/a.pdf",
                         .sha256 = "1111",
                         .bytes = 10,
                         .mtime = 1700000000,
                         .kind = "pdf",
                         .page_count = 1,
                         .status = "ok"};
    gint64 id = 0, id2 = 0;
    int version = 0;
    g_assert_true(
        dq_store_document_record(s, &doc, 0, FALSE, SETTINGS, &page, 1, &id, &version, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(version, ==, 1);
    doc.sha256 = "2222";
    g_assert_true(
        dq_store_document_record(s, &doc, 0, FALSE, SETTINGS, &page, 1, &id2, &version, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(version, ==, 2);
    g_assert_cmpint(id2, !=, id);
    g_assert_cmpint(query_int(s, loc, "SELECT max(version) FROM documents WHERE path = '/v/a.pdf'"),
                    ==, 2);
    dq_store_close(s);
    g_free(loc);
}

/* A view dropped by hand (they are derived): found missing, and made again as the migrations
 * made it, on both stores; the others are left alone. */
static void test_restore_views(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    char **missing = dq_store_missing_views(s, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(g_strv_length(missing), ==, 0);
    g_strfreev(missing);
    g_assert_true(dq_store_exec(s, "DROP VIEW v_answers", &err));
    missing = dq_store_missing_views(s, &err);
    g_assert_cmpint(g_strv_length(missing), ==, 1);
    g_assert_cmpstr(missing[0], ==, "v_answers");
    g_strfreev(missing);
    char **made = NULL;
    g_assert_true(dq_store_restore_views(s, &made, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(g_strv_length(made), ==, 1);
    g_assert_cmpstr(made[0], ==, "v_answers");
    g_strfreev(made);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM v_answers WHERE n_res IS NULL"), ==, 0);
    g_assert_true(dq_store_restore_views(s, &made, &err));
    g_assert_cmpint(g_strv_length(made), ==, 0);
    g_strfreev(made);
    dq_store_close(s);
    g_free(loc);
}

/* The state of one job, as text. */
static char *job_state(DqStore *s, const char *loc, gint64 id) {
    const char *names[] = {"queued", "running", "done", "failed", "dead", "cancelled"};
    char *sql = NULL;
    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        g_free(sql);
        sql = g_strdup_printf("SELECT count(*) FROM jobs WHERE id = %" G_GINT64_FORMAT
                              " AND state = '%s'",
                              id, names[i]);
        if (query_int(s, loc, sql) == 1) {
            g_free(sql);
            return g_strdup(names[i]);
        }
    }
    g_free(sql);
    return g_strdup("none");
}

static void assert_state(DqStore *s, const char *loc, gint64 id, const char *state) {
    char *got = job_state(s, loc, id);
    g_assert_cmpstr(got, ==, state);
    g_free(got);
}

static void assert_group(GPtrArray *groups, guint i, const char *question, DqJobState state,
                         gboolean answered, gint64 jobs) {
    g_assert_cmpuint(i, <, groups->len);
    const DqJobGroup *g = g_ptr_array_index(groups, i);
    g_assert_cmpstr(g->question, ==, question);
    g_assert_cmpstr(g->model_id, ==, "m");
    g_assert_cmpint(g->state, ==, state);
    g_assert_cmpint(g->answered, ==, answered);
    g_assert_cmpint(g->jobs, ==, jobs);
}

/* docqa cancel's store half: jobs chosen by question, document (through a copy of its bytes,
 * found by --where) and state become 'cancelled' and nothing else changes; a dry run changes
 * nothing; a running job is cancelled only by name, and its worker's answer is kept; a job with
 * an answer goes back to done with it; requeue --cancelled brings them back. */
static void test_cancel(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    gint64 a = add_document(s, "/archive/a.pdf", "7777");
    gint64 copy = add_document(s, "/archive/copy of a.pdf", "7777");
    gint64 c = add_document(s, "/archive/c.pdf", "8888");
    /* a and its copy hold the same bytes: one job a page and question, made for a's pages */
    g_assert_cmpint(enqueue_all(s, "Q1"), ==, 6);
    g_assert_cmpint(enqueue_all(s, "Q2"), ==, 6);
    GPtrArray *w = store_jobs_claim(s, "W", "m", 2, dq_wall_ms(), 3600000, NULL, &err);
    g_assert_cmpint(w->len, ==, 2);
    gint64 j1 = ((DqClaimedJob *)g_ptr_array_index(w, 0))->job_id;
    gint64 j2 = ((DqClaimedJob *)g_ptr_array_index(w, 1))->job_id;
    DqJobAnswer one = answer_for(j1, "one");
    complete_all(s, "W", &one, 1);
    DqJobState st = DQ_JOB_N_STATES;
    g_assert_true(store_jobs_fail(s, "W", j2, "page_image", "a.png: missing", FALSE, dq_wall_ms(),
                                  1000, &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_FAILED);
    GPtrArray *w2 = store_jobs_claim(s, "W2", "m", 1, dq_wall_ms(), 3600000, NULL, &err);
    g_assert_cmpint(w2->len, ==, 1);
    gint64 j3 = ((DqClaimedJob *)g_ptr_array_index(w2, 0))->job_id;
    char *on_a = g_strdup_printf("SELECT count(*) FROM jobs WHERE page_id IN (SELECT id FROM "
                                 "pages WHERE document_id = %" G_GINT64_FORMAT ")",
                                 a);
    g_assert_cmpint(query_int(s, loc, on_a), ==, 6);

    /* The selectors' look-ups. */
    GArray *docs = g_array_new(FALSE, FALSE, sizeof(gint64));
    g_assert_true(store_jobs_where_documents(s, "path LIKE '%copy%'", docs, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(docs->len, ==, 1);
    g_assert_cmpint(g_array_index(docs, gint64, 0), ==, copy);
    gint64 q1 = 0, none = -1;
    g_assert_true(store_jobs_find_question(s, "Q1", &q1, &err));
    g_assert_cmpint(q1, >, 0);
    g_assert_true(store_jobs_find_question(s, "Q3", &none, &err));
    g_assert_cmpint(none, ==, 0);
    gboolean yes = FALSE, no = TRUE;
    g_assert_true(store_jobs_model_known(s, "m", &yes, &err));
    g_assert_true(store_jobs_model_known(s, "other", &no, &err));
    g_assert_true(yes && !no);
    yes = FALSE, no = TRUE;
    g_assert_true(store_jobs_document_exists(s, c, &yes, &err));
    g_assert_true(store_jobs_document_exists(s, 999, &no, &err));
    dq_assert_no_error(err);
    g_assert_true(yes && !no);

    /* Every job of the copy's content not answered and not running: Q1's failed one, Q2's
     * three queued ones. A dry run says so and changes nothing. */
    guint waiting = (1u << DQ_JOB_QUEUED) | (1u << DQ_JOB_FAILED) | (1u << DQ_JOB_DEAD);
    DqJobFilter by_copy = {.document_ids = (const gint64 *)docs->data,
                           .n_document_ids = 1,
                           .documents_given = TRUE,
                           .states = waiting};
    for (int dry = 1; dry >= 0; dry--) {
        GPtrArray *g = store_jobs_cancel(s, &by_copy, dry, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(g->len, ==, 2);
        assert_group(g, 0, "Q1", DQ_JOB_FAILED, FALSE, 1);
        assert_group(g, 1, "Q2", DQ_JOB_QUEUED, FALSE, 3);
        g_ptr_array_free(g, TRUE);
        g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs WHERE state = 'cancelled'"),
                        ==, dry ? 0 : 4);
    }
    assert_state(s, loc, j1, "done");
    assert_state(s, loc, j2, "cancelled");
    assert_state(s, loc, j3, "running");
    /* c's jobs, the answer and the error are as they were */
    char *on_c =
        g_strdup_printf("SELECT count(*) FROM jobs WHERE state = 'queued' AND attempts = 0 "
                        "AND page_id IN (SELECT id FROM pages WHERE document_id = "
                        "%" G_GINT64_FORMAT ")",
                        c);
    g_assert_cmpint(query_int(s, loc, on_c), ==, 6);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers WHERE text = 'one'"), ==, 1);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM job_errors"), ==, 1);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM jobs WHERE state = 'cancelled' AND "
                              "finished_at IS NOT NULL AND lease_owner IS NULL"),
                    ==, 4);
    DqJobCounts counts;
    g_assert_true(store_jobs_counts(s, NULL, &counts, &err));
    g_assert_cmpint(counts.by_state[DQ_JOB_CANCELLED], ==, 4);
    g_assert_cmpint(counts.by_state[DQ_JOB_QUEUED], ==, 6);
    g_assert_cmpint(counts.total, ==, 12);
    /* v_progress: cancelled apart, percent_done of the jobs not cancelled */
    g_assert_cmpint(query_int(s, loc, "SELECT cancelled FROM v_progress WHERE question = 'Q1'"), ==,
                    1);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT CAST(percent_done * 10 AS integer) FROM v_progress "
                              "WHERE question = 'Q1'"),
                    ==, 200); /* 1 done of the 5 not cancelled */
    g_assert_cmpint(query_int(s, loc, "SELECT cancelled FROM v_progress WHERE question = 'Q2'"), ==,
                    3);
    /* last_finished_at: a cancel finished nothing. None of Q2's jobs finished; Q1's last to
     * finish is j1 (j2 failed, then was cancelled). */
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM v_progress WHERE question = 'Q2' AND "
                              "last_finished_at IS NULL"),
                    ==, 1);
    char *q1_last = g_strdup_printf("SELECT count(*) FROM v_progress WHERE question = 'Q1' AND "
                                    "last_finished_at = (SELECT finished_at FROM jobs WHERE id = "
                                    "%" G_GINT64_FORMAT ")",
                                    j1);
    g_assert_cmpint(query_int(s, loc, q1_last), ==, 1);
    g_free(q1_last);
    /* Again: nothing left to cancel. */
    GPtrArray *g = store_jobs_cancel(s, &by_copy, FALSE, &err);
    g_assert_cmpint(g->len, ==, 0);
    g_ptr_array_free(g, TRUE);

    /* The running job, by name: its worker's failure changes nothing, its answer is kept. */
    DqJobFilter running = {.question_ids = &q1,
                           .n_question_ids = 1,
                           .document_ids = (const gint64 *)docs->data,
                           .n_document_ids = 1,
                           .documents_given = TRUE,
                           .states = 1u << DQ_JOB_RUNNING};
    g = store_jobs_cancel(s, &running, FALSE, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(g->len, ==, 1);
    assert_group(g, 0, "Q1", DQ_JOB_RUNNING, FALSE, 1);
    g_ptr_array_free(g, TRUE);
    assert_state(s, loc, j3, "cancelled");
    int held = -1;
    g_assert_true(store_jobs_heartbeat(s, "W2", dq_wall_ms(), 3600000, &held, &err));
    g_assert_cmpint(held, ==, 0);
    st = DQ_JOB_QUEUED;
    g_assert_true(
        store_jobs_fail(s, "W2", j3, "model", "boom", TRUE, dq_wall_ms(), 1000, &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_N_STATES);
    assert_state(s, loc, j3, "cancelled");
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM job_errors"), ==, 1);
    DqJobAnswer three = answer_for(j3, "three");
    complete_all(s, "W2", &three, 1);
    assert_state(s, loc, j3, "done");
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM v_answers WHERE answer = 'three'"), ==,
                    1);

    /* A job queued again with its (approximate) answer: cancelling it keeps the answer, the job
     * is done again as it was. */
    g_assert_true(dq_store_exec(s, "UPDATE answers SET exact = 0 WHERE text = 'one'", &err));
    gint64 n = jt_requeue_all(s, 1u << DQ_JOB_DONE);
    g_assert_cmpint(n, ==, 1);
    assert_state(s, loc, j1, "queued");
    DqJobFilter queued_q1 = {.question_ids = &q1,
                             .n_question_ids = 1,
                             .document_ids = &a,
                             .n_document_ids = 1,
                             .documents_given = TRUE,
                             .states = 1u << DQ_JOB_QUEUED};
    g = store_jobs_cancel(s, &queued_q1, FALSE, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(g->len, ==, 1);
    assert_group(g, 0, "Q1", DQ_JOB_QUEUED, TRUE, 1);
    g_ptr_array_free(g, TRUE);
    assert_state(s, loc, j1, "done");
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM jobs j JOIN answers a ON a.job_id = j.id "
                              "WHERE a.text = 'one' AND j.finished_at = a.finished_at"),
                    ==, 1);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers"), ==, 2);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers_superseded"), ==, 0);

    /* No document given but documents_given: nothing matches (a --where that found none). */
    DqJobFilter nothing = {.documents_given = TRUE, .states = waiting};
    g = store_jobs_cancel(s, &nothing, FALSE, &err);
    g_assert_cmpint(g->len, ==, 0);
    g_ptr_array_free(g, TRUE);

    /* requeue --cancelled: back in the queue with fresh attempts; the others stay. */
    n = jt_requeue_all(s, 1u << DQ_JOB_CANCELLED);
    dq_assert_no_error(err);
    g_assert_cmpint(n, ==, 4);
    assert_state(s, loc, j2, "queued");
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM jobs WHERE state = 'queued' AND attempts = 0 "
                              "AND finished_at IS NULL"),
                    ==, 10);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 2);

    g_array_free(docs, TRUE);
    g_free(on_a);
    g_free(on_c);
    g_ptr_array_free(w, TRUE);
    g_ptr_array_free(w2, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* cancel and requeue with a long --document list (a --where over a large archive): the same
 * jobs on both backends, only those of the listed documents' content. The list holds ids of no
 * document as well; SQLite once read it again for every job of the archive. */
static void test_cancel_many_documents(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    enum { DOCS = 400, LISTED = 20000 };
    gint64 first = 0;
    for (int i = 0; i < DOCS; i++) {
        char *path = g_strdup_printf("/archive/%04d.pdf", i);
        char *sha = g_strdup_printf("%064d", i);
        gint64 id = add_document(s, path, sha);
        if (i == 0)
            first = id;
        g_free(path);
        g_free(sha);
    }
    /* the last document's bytes again: its jobs are the copy's too */
    char *last_sha = g_strdup_printf("%064d", DOCS - 1);
    gint64 copy = add_document(s, "/archive/copy.pdf", last_sha);
    g_free(last_sha);
    g_assert_cmpint(enqueue_all(s, "Q"), ==, DOCS * 3);

    /* every other document, the copy, and ids past every document */
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    for (gint64 i = 0; i < DOCS - 1; i += 2) {
        gint64 id = first + i;
        g_array_append_val(ids, id);
    }
    g_array_append_val(ids, copy);
    for (gint64 id = copy + 1; ids->len < LISTED; id++)
        g_array_append_val(ids, id);
    DqJobFilter listed = {.document_ids = (const gint64 *)ids->data,
                          .n_document_ids = (int)ids->len,
                          .documents_given = TRUE,
                          .states = 1u << DQ_JOB_QUEUED};
    const gint64 taken = (DOCS / 2 + 1) * 3;
    for (int dry = 1; dry >= 0; dry--) {
        GPtrArray *g = store_jobs_cancel(s, &listed, dry, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(g->len, ==, 1);
        assert_group(g, 0, "Q", DQ_JOB_QUEUED, FALSE, taken);
        g_ptr_array_free(g, TRUE);
    }
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs WHERE state = 'cancelled'"), ==,
                    taken);
    /* the copy's jobs hang on the last document's pages */
    char *sql = g_strdup_printf("SELECT count(*) FROM jobs j JOIN pages p ON p.id = j.page_id "
                                "WHERE j.state = 'cancelled' AND p.document_id = %" G_GINT64_FORMAT,
                                first + DOCS - 1);
    g_assert_cmpint(query_int(s, loc, sql), ==, 3);
    g_free(sql);
    listed.states = 1u << DQ_JOB_CANCELLED;
    GPtrArray *g = store_jobs_requeue(s, &listed, FALSE, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(g->len, ==, 1);
    assert_group(g, 0, "Q", DQ_JOB_CANCELLED, FALSE, taken);
    g_ptr_array_free(g, TRUE);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==,
                    DOCS * 3);
    g_array_free(ids, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* requeue's store half: cancel's DqJobFilter picks the jobs. Only those come back (fresh
 * attempts, their errors and answers kept); a dry run changes nothing; a done job comes back
 * only when its answer is approximate. */
static void test_requeue_selected(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    gint64 a = add_document(s, "/archive/a.pdf", "7777");
    gint64 c = add_document(s, "/archive/c.pdf", "8888");
    g_assert_cmpint(enqueue_all(s, "Q1"), ==, 6);
    g_assert_cmpint(enqueue_all(s, "Q2"), ==, 6);
    gint64 q1 = 0, q2 = 0;
    g_assert_true(store_jobs_find_question(s, "Q1", &q1, &err));
    g_assert_true(store_jobs_find_question(s, "Q2", &q2, &err));
    /* Q1 on a: failed; Q1 on c: answered approximately; Q2 on a: answered exactly; Q2 on c:
     * failed, then cancelled. */
    GPtrArray *w = store_jobs_claim(s, "W", "m", 12, dq_wall_ms(), 3600000, NULL, &err);
    g_assert_cmpint(w->len, ==, 12);
    for (guint i = 0; i < w->len; i++) {
        const DqClaimedJob *j = g_ptr_array_index(w, i);
        gboolean on_a = j->document_id == a;
        if (on_a == (strcmp(j->question, "Q1") == 0)) {
            g_assert_true(store_jobs_fail(s, "W", j->job_id, "page_image", "p.png: missing", FALSE,
                                          dq_wall_ms(), 1000, NULL, &err));
        } else {
            DqJobAnswer ans = answer_for(j->job_id, on_a ? "exact" : "approximate");
            ans.exact = on_a;
            complete_all(s, "W", &ans, 1);
        }
        dq_assert_no_error(err);
    }
    DqJobFilter q2_on_c = {.question_ids = &q2,
                           .n_question_ids = 1,
                           .document_ids = &c,
                           .n_document_ids = 1,
                           .documents_given = TRUE,
                           .states = 1u << DQ_JOB_FAILED};
    GPtrArray *g = store_jobs_cancel(s, &q2_on_c, FALSE, &err);
    dq_assert_no_error(err);
    g_ptr_array_free(g, TRUE);
    const guint every = (1u << DQ_JOB_DEAD) | (1u << DQ_JOB_FAILED) | (1u << DQ_JOB_DONE) |
                        (1u << DQ_JOB_CANCELLED);
#define COUNT(question, state)                                                                     \
    query_int(                                                                                     \
        s, loc,                                                                                    \
        "SELECT count(*) FROM jobs j JOIN questions q ON q.id = j.question_id WHERE q.text = "     \
        "'" question "' AND j.state = '" state "'")

    /* --question Q1, every state, dry run: its failed and its approximate jobs; nothing moves. */
    DqJobFilter by_q1 = {.question_ids = &q1, .n_question_ids = 1, .states = every};
    g = store_jobs_requeue(s, &by_q1, TRUE, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(g->len, ==, 2);
    assert_group(g, 0, "Q1", DQ_JOB_DONE, TRUE, 3);
    assert_group(g, 1, "Q1", DQ_JOB_FAILED, FALSE, 3);
    g_ptr_array_free(g, TRUE);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 0);

    /* An exact answer is never taken back, whatever the selectors. */
    DqJobFilter by_q2 = {.question_ids = &q2, .n_question_ids = 1, .states = 1u << DQ_JOB_DONE};
    g = store_jobs_requeue(s, &by_q2, FALSE, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(g->len, ==, 0);
    g_ptr_array_free(g, TRUE);
    /* Another model's jobs: none. */
    DqJobFilter other = {.model_id = "other", .states = every};
    g = store_jobs_requeue(s, &other, FALSE, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(g->len, ==, 0);
    g_ptr_array_free(g, TRUE);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 0);

    /* --document c --approximate --cancelled: Q1's approximate and Q2's cancelled jobs on c; Q1's
     * failed ones on a stay failed, Q2's exact ones done. */
    DqJobFilter on_c = {.document_ids = &c,
                        .n_document_ids = 1,
                        .documents_given = TRUE,
                        .model_id = "m",
                        .states = (1u << DQ_JOB_DONE) | (1u << DQ_JOB_CANCELLED)};
    g = store_jobs_requeue(s, &on_c, FALSE, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(g->len, ==, 2);
    assert_group(g, 0, "Q1", DQ_JOB_DONE, TRUE, 3);
    assert_group(g, 1, "Q2", DQ_JOB_CANCELLED, FALSE, 3);
    g_ptr_array_free(g, TRUE);
    g_assert_cmpint(COUNT("Q1", "queued"), ==, 3);
    g_assert_cmpint(COUNT("Q1", "failed"), ==, 3);
    g_assert_cmpint(COUNT("Q2", "queued"), ==, 3);
    g_assert_cmpint(COUNT("Q2", "done"), ==, 3);
    char *queued_on_c = g_strdup_printf(
        "SELECT count(*) FROM jobs WHERE state = 'queued' AND attempts = 0 AND finished_at IS "
        "NULL AND not_before_ms = 0 AND page_id IN (SELECT id FROM pages WHERE document_id = "
        "%" G_GINT64_FORMAT ")",
        c);
    g_assert_cmpint(query_int(s, loc, queued_on_c), ==, 6);
    /* Nothing stored is lost: the approximate answers stay until answered again, the errors
     * stay in job_errors. */
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM answers"), ==, 6);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM job_errors"), ==, 6);

    /* --question Q1 --failed: the rest of Q1. */
    DqJobFilter failed_q1 = {
        .question_ids = &q1, .n_question_ids = 1, .model_id = "m", .states = 1u << DQ_JOB_FAILED};
    g = store_jobs_requeue(s, &failed_q1, FALSE, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(g->len, ==, 1);
    assert_group(g, 0, "Q1", DQ_JOB_FAILED, FALSE, 3);
    g_ptr_array_free(g, TRUE);
    g_assert_cmpint(COUNT("Q1", "queued"), ==, 6);
    g_assert_cmpint(COUNT("Q2", "done"), ==, 3);
#undef COUNT

    g_free(queued_on_c);
    g_ptr_array_free(w, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* A --where expression the database refuses is said with the database's own reason (the
 * column it does not know), on both engines. PostgreSQL's check of the plan ran EXPLAIN first
 * and dropped its error: the query after it then failed with "current transaction is aborted",
 * which does not say what is wrong with the expression. */
static void test_where_error_says_why(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    GArray *docs = g_array_new(FALSE, FALSE, sizeof(gint64));
    g_assert_false(store_jobs_where_documents(s, "no_such_column = 1", docs, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
    g_test_message("%s", err->message);
    const char *why = strstr(err->message, "--where 'no_such_column = 1': ");
    g_assert_nonnull(why);
    g_assert_nonnull(strstr(why + strlen("--where 'no_such_column = 1': "), "no_such_column"));
    g_assert_null(strstr(err->message, "aborted"));
    g_clear_error(&err);
    /* The store goes on: the transaction the check opened is gone. */
    g_assert_true(store_jobs_where_documents(s, "path LIKE '%x%'", docs, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(docs->len, ==, 0);
    g_array_free(docs, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* A failed read, made on purpose: each statement whose text contains `interrupting` (""
 * matches every one) stops at its first instruction, as an I/O error or a corrupt page would
 * stop it part way. A trace callback arms the progress handler as each statement starts. */
static const char *interrupting;
static gboolean interrupt_armed;
/* Runs of matching statements let through before the interrupting starts (interrupt_on_open_late)
 */
static int interrupt_skip;
static int arm_interrupt(unsigned type, void *unused, void *stmt, void *unused2) {
    (void)type, (void)unused, (void)unused2;
    interrupt_armed = strstr(sqlite3_sql(stmt), interrupting) != NULL && interrupt_skip-- <= 0;
    return 0;
}
static int interrupt_if_armed(void *unused) {
    (void)unused;
    return interrupt_armed;
}
static void interrupt_statements(sqlite3 *db, const char *part) {
    interrupting = part;
    interrupt_armed = FALSE;
    sqlite3_trace_v2(db, SQLITE_TRACE_STMT, arm_interrupt, NULL);
    sqlite3_progress_handler(db, 1, interrupt_if_armed, NULL);
}
static void stop_interrupting(sqlite3 *db) {
    sqlite3_progress_handler(db, 0, NULL, NULL);
    sqlite3_trace_v2(db, 0, NULL, NULL);
    interrupt_armed = FALSE;
}

/* A fresh SQLite store holding /a.pdf (add_document's 3 usable pages and a failed one). */
static DqStore *sqlite_store_with_document(char **loc, gint64 *doc) {
    *loc = new_location("sqlite");
    GError *err = NULL;
    DqStore *s = dq_store_open(*loc, &err);
    dq_assert_no_error(err);
    gint64 id = add_document(s, "/a.pdf",
                             "1111111111111111111111111111111111111111111111111111111111111111");
    if (doc != NULL)
        *doc = id;
    return s;
}

/* store_jobs_counts' count of other models' jobs (run's "nothing left for this model, N for
 * others") fails with its read rather than saying 0. */
static void test_counts_read_error(void) {
    char *loc = NULL;
    GError *err = NULL;
    DqStore *s = sqlite_store_with_document(&loc, NULL);
    g_assert_cmpint(enqueue_all(s, "Q"), ==, 3);
    DqJobCounts c;
    g_assert_true(store_jobs_counts(s, "another-model", &c, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(c.pending_other, ==, 3);
    interrupt_statements(dq_store_sqlite(s), "model_id <> ?1");
    g_assert_false(store_jobs_counts(s, "another-model", &c, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_assert_nonnull(strstr(err->message, "counting other models' jobs"));
    g_clear_error(&err);
    stop_interrupting(dq_store_sqlite(s));
    dq_store_close(s);
    g_free(loc);
}

/* For open_interrupted: every read of the schema version fails. */
static int interrupt_on_open(sqlite3 *db, char **msg, const void *api) {
    (void)msg;
    (void)api;
    interrupt_statements(db, "PRAGMA user_version");
    return SQLITE_OK;
}

/* interrupt_on_open, but the first read of the version (apply_migrations') goes through. */
static int interrupt_on_open_late(sqlite3 *db, char **msg, const void *api) {
    interrupt_on_open(db, msg, api);
    interrupt_skip = 1;
    return SQLITE_OK;
}

/* Opens `loc` with `hook` run on every connection the open makes (open makes its own, so the
 * handlers cannot be set on it beforehand); the interrupting is over when it returns. */
static DqStore *open_interrupted(const char *loc, int (*hook)(sqlite3 *, char **, const void *),
                                 GError **err) {
    sqlite3_auto_extension((void (*)(void))hook);
    DqStore *s = dq_store_open(loc, err);
    sqlite3_reset_auto_extension();
    interrupt_armed = FALSE;
    interrupt_skip = 0;
    return s;
}

/* The version read once the schema is up to date, which dq_store_check_file compares with later,
 * fails the open when it cannot be read: recorded as 0, every later check said the schema had
 * been changed from version 0. */
static void test_schema_version_read_error_after_migrations(void) {
    char *loc = new_location("sqlite");
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    dq_store_close(s);
    s = open_interrupted(loc, interrupt_on_open_late, &err);
    if (s != NULL)
        dq_store_close(s);
    g_assert_null(s);
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_assert_nonnull(strstr(err->message, "reading the schema version"));
    g_clear_error(&err);
    g_free(loc);
}

/* A schema version that cannot be read at open fails the open naming it; it is not taken for
 * version 0 (every migration would be run again on a database that has them). */
static void test_schema_version_read_error(void) {
    char *loc = new_location("sqlite");
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    dq_store_close(s);
    s = open_interrupted(loc, interrupt_on_open, &err);
    g_assert_null(s);
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_assert_nonnull(strstr(err->message, "reading the schema version"));
    g_clear_error(&err);
    s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    dq_store_close(s);
    g_free(loc);
}

/* The check a worker makes before storing answers, that no newer docqa upgraded the schema
 * meanwhile, fails when it cannot read the version: it is not taken for version 0, which
 * skipped the check. */
static void test_check_file_read_error(void) {
    char *loc = NULL;
    GError *err = NULL;
    DqStore *s = sqlite_store_with_document(&loc, NULL);
    g_assert_true(dq_store_check_file(s, &err));
    dq_assert_no_error(err);
    interrupt_statements(dq_store_sqlite(s), "PRAGMA user_version");
    g_assert_false(dq_store_check_file(s, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_assert_nonnull(strstr(err->message, "reading the schema version"));
    g_assert_nonnull(strstr(err->message, dq_store_path(s)));
    g_clear_error(&err);
    stop_interrupting(dq_store_sqlite(s));
    g_assert_true(dq_store_check_file(s, &err));
    dq_assert_no_error(err);
    dq_store_close(s);
    g_free(loc);
}

static int interrupt_schema_lookups(sqlite3 *db, char **msg, const void *api) {
    (void)msg;
    (void)api;
    interrupt_statements(db, "FROM sqlite_schema WHERE type = ?1 AND name = ?2");
    return SQLITE_OK;
}

/* Migration 0006 rebuilds documents, which takes a user's index on it along; the upgrade makes
 * it again after looking it up in sqlite_schema. A lookup that fails fails the upgrade, naming
 * what it looked up, and leaves the database at its version: it is not taken for "its table is
 * gone", which went on without the index and opened the database. */
static void test_restore_user_objects_read_error(void) {
    char *loc = new_location("sqlite");
    const char *path = loc + strlen("sqlite:");
    GError *err = NULL;
    DqStore *s = dq_store_open_at(loc, 5, &err);
    dq_assert_no_error(err);
    dq_store_close(s);
    sqlite_exec(path, "CREATE INDEX my_idx ON documents (ingested_at)");
    s = open_interrupted(loc, interrupt_schema_lookups, &err);
    if (s != NULL)
        dq_store_close(s);
    g_assert_null(s);
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_assert_nonnull(strstr(err->message, "reading sqlite_schema for the index"));
    g_assert_nonnull(strstr(err->message, "0006"));
    g_clear_error(&err);
    g_assert_cmpint(sqlite_int(path, "PRAGMA user_version"), ==, 5);
    s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    dq_store_close(s);
    g_assert_cmpint(sqlite_int(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'my_idx'"),
                    ==, 1);
    g_free(loc);
}

/* A read that fails while choosing the pages to ask about fails ask; it is not taken for a
 * database with fewer documents (a nightly ask would queue nothing and exit 0). */
static void test_select_pages_read_error(void) {
    char *loc = NULL;
    gint64 doc = 0;
    GError *err = NULL;
    DqStore *s = sqlite_store_with_document(&loc, &doc);
    interrupt_statements(dq_store_sqlite(s), "");
    g_assert_null(store_jobs_select_pages(s, NULL, 0, NULL, 0, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_assert_nonnull(strstr(err->message, "listing documents"));
    g_clear_error(&err);
    /* By id: a failed read is said as such, not as "no document with id". */
    g_assert_null(store_jobs_select_pages(s, &doc, 1, NULL, 0, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_assert_nonnull(strstr(err->message, "finding a document"));
    g_clear_error(&err);
    stop_interrupting(dq_store_sqlite(s));
    GPtrArray *pages = store_jobs_select_pages(s, NULL, 0, NULL, 0, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(pages->len, ==, 4);
    g_ptr_array_free(pages, TRUE);
    dq_store_close(s);
    g_free(loc);
}

/* One "now" for every number status reads: the counts, v_progress's rows and the answer rate
 * take it as a parameter, so that a lease expiring between two reads is on the same side of each.
 * A lease that expires at E is running at E (lease_expires_ms < now is stalled) and stalled at
 * E + 1, in the counts and in the progress rows alike; an answer finished exactly 600 s before
 * now is in the rate's window, 1 ms later out of it. */
static void test_status_now(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(s, "/a.pdf", "1111111111111111111111111111111111111111111111111111111111111111");
    g_assert_cmpint(enqueue_all(s, "Q"), ==, 3);
    gint64 t = dq_wall_ms();
    GPtrArray *c = store_jobs_claim(s, "w", "m", 2, t, 1000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(c->len, ==, 2);
    DqJobAnswer a = answer_for(((DqClaimedJob *)g_ptr_array_index(c, 0))->job_id, "x");
    complete_all(s, "w", &a, 1);
    g_ptr_array_free(c, TRUE);
    const gint64 expires = t + 1000; /* the other job's lease, in this clock */
    for (gint64 now = expires - 1; now <= expires + 1; now++) {
        gint64 stalled = now > expires;
        DqJobCounts counts;
        g_assert_true(store_jobs_counts_at(s, NULL, now, &counts, &err));
        dq_assert_no_error(err);
        g_assert_cmpint(counts.by_state[DQ_JOB_RUNNING], ==, 1);
        g_assert_cmpint(counts.stalled, ==, stalled);
        GPtrArray *progress = store_jobs_progress_at(s, now, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(progress->len, ==, 1);
        const DqProgressRow *row = g_ptr_array_index(progress, 0);
        g_assert_cmpint(row->stalled, ==, stalled);
        g_assert_cmpint(row->running, ==, 1 - stalled);
        g_assert_cmpint(row->queued, ==, 1);
        g_assert_cmpint(row->done, ==, 1);
        g_ptr_array_free(progress, TRUE);
    }
    /* answer_for's finished_at: 2026-01-01T00:00:01.250Z */
    GDateTime *at = g_date_time_new_utc(2026, 1, 1, 0, 10, 1.25);
    gint64 window_end = g_date_time_to_unix(at) * 1000 + 250;
    g_date_time_unref(at);
    gint64 n = -1;
    double span = -1;
    g_assert_true(store_jobs_recent_rate_at(s, 600, window_end, &n, &span, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(n, ==, 1);
    g_assert_cmpfloat_with_epsilon(span, 1.25, 1e-3); /* julianday: ms, not better */
    g_assert_true(store_jobs_recent_rate_at(s, 600, window_end + 1, &n, &span, &err));
    g_assert_cmpint(n, ==, 0);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* A lease is its holder's up to and including its lease_expires_ms and stalled from the next
 * millisecond on, for the claim, `docqa status` (counts) and v_progress's split alike, and a claim
 * that takes a lease back records why: no job goes back to the queue without its job_errors row.
 * On PostgreSQL the caller's times are turned into the server's (store_pg.h): the times given
 * here are the row's less that offset, so that they reach the server as the lease's end. */
static void test_lease_boundary(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    gint64 off = strcmp(kind, "postgres") == 0 ? pg_server_ms(s, 0) : 0;
    add_document(s, "/archive/a.pdf", "1111");
    g_assert_cmpint(enqueue_all(s, "Q"), ==, 3);
    GPtrArray *a = store_jobs_claim(s, "A", "m", 1, 1000000, 1000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(a->len, ==, 1);
    /* From the row: the claim adds the time it waited for the write lock. */
    gint64 end =
        query_int(s, loc, "SELECT lease_expires_ms FROM jobs WHERE state = 'running'") - off;
    g_assert_cmpint(end, >=, 1000000 + 1000);
    for (int after = 0; after <= 1; after++) {
        DqJobCounts c;
        g_assert_true(store_jobs_counts_at(s, "m", end + after, &c, &err));
        dq_assert_no_error(err);
        g_assert_cmpint(c.by_state[DQ_JOB_RUNNING], ==, 1);
        g_assert_cmpint(c.stalled, ==, after);
        GPtrArray *rows = store_jobs_progress_at(s, end + after, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(rows->len, ==, 1);
        const DqProgressRow *row = g_ptr_array_index(rows, 0);
        g_assert_cmpint(row->running, ==, 1 - after);
        g_assert_cmpint(row->stalled, ==, after);
        g_ptr_array_free(rows, TRUE);
    }
    /* B at the lease's last millisecond: the two queued jobs, and A's too only where the claim
     * waited for the lock (its time is then past the end); either way one record per job taken
     * back. */
    GPtrArray *b = store_jobs_claim(s, "B", "m", 4, end, 1000, NULL, &err);
    dq_assert_no_error(err);
    gint64 taken_back = query_int(s, loc, "SELECT count(*) FROM job_errors");
    if (strcmp(kind, "postgres") == 0) /* its claim does not add a wait for a lock */
        g_assert_cmpint(taken_back, ==, 0);
    g_assert_cmpint(b->len, ==, 2 + taken_back);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM jobs WHERE state = 'running' AND "
                              "lease_owner = 'A'"),
                    ==, 1 - taken_back);
    /* C a millisecond past it: A's job (if still A's) is taken back, and recorded. */
    GPtrArray *c = store_jobs_claim(s, "C", "m", 4, end + 1, 1000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(c->len, ==, 1 - taken_back);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM job_errors WHERE kind = "
                              "'lease_expired'"),
                    ==, 1);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs WHERE lease_owner = 'A'"), ==, 0);
    /* A retryable failure puts its job back as retrying (an attempt spent); a stalled job of
     * another model is that model's, not this one's. */
    DqJobState st = DQ_JOB_N_STATES;
    g_assert_true(store_jobs_fail(s, "B", ((DqClaimedJob *)g_ptr_array_index(b, 0))->job_id,
                                  "model", "out of memory", TRUE, end, 10, &st, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(st, ==, DQ_JOB_QUEUED);
    exec_ok(s, "UPDATE jobs SET model_id = 'n', lease_expires_ms = 1 WHERE id = (SELECT max(id) "
               "FROM jobs WHERE state = 'running')");
    DqJobCounts c_m, c_n;
    g_assert_true(store_jobs_counts_at(s, "m", end + 1, &c_m, &err));
    g_assert_true(store_jobs_counts_at(s, "n", end + 1, &c_n, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(c_m.by_state[DQ_JOB_QUEUED], ==, 1);
    g_assert_cmpint(c_m.retrying, ==, 1);
    g_assert_cmpint(c_m.by_state[DQ_JOB_RUNNING], ==, 1);
    g_assert_cmpint(c_m.stalled, ==, 0);
    g_assert_cmpint(c_n.by_state[DQ_JOB_RUNNING], ==, 1);
    g_assert_cmpint(c_n.stalled, ==, 1);
    g_assert_cmpint(c_n.retrying, ==, 0);
    /* Each model's count of the others' jobs queued or running, as `docqa status` says it. */
    g_assert_cmpint(c_m.pending_other, ==, 1);
    g_assert_cmpint(c_n.pending_other, ==, 2);
    /* The retrying job waits out its back-off up to and including not_before_ms, then is the
     * next claim's (the leases still held end later). */
    gint64 ready = query_int(s, loc, "SELECT not_before_ms FROM jobs WHERE state = 'queued'") - off;
    GPtrArray *early = store_jobs_claim(s, "D", "m", 4, ready - 1, 1000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(early->len, ==, 0);
    GPtrArray *ready_d = store_jobs_claim(s, "D", "m", 4, ready, 1000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(ready_d->len, ==, 1);
    g_ptr_array_free(early, TRUE);
    g_ptr_array_free(ready_d, TRUE);
    g_ptr_array_free(a, TRUE);
    g_ptr_array_free(b, TRUE);
    g_ptr_array_free(c, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* Each statement of a claim failing part way (an I/O error, a corrupt page): the claim fails
 * saying which step, and nothing of it stays: the expired lease is neither recorded nor taken
 * back, no job is leased, and the next claim does all of it. */
static void test_claim_read_errors(void) {
    static const struct {
        const char *sql; /* a part of the statement's text */
        const char *what;
    } steps[] = {
        {"'lease_expired', ", "recording expired leases"},
        {"RETURNING id, state", "reclaiming expired leases"},
        {"attempts = attempts + 1", "claiming jobs"},
        {"q.id IS NULL", "reading a claimed job"},
    };
    for (guint i = 0; i < G_N_ELEMENTS(steps); i++) {
        char *loc = NULL;
        GError *err = NULL;
        DqStore *s = sqlite_store_with_document(&loc, NULL);
        g_assert_cmpint(enqueue_all(s, "Q"), ==, 3);
        GPtrArray *a = store_jobs_claim(s, "A", "m", 1, 1000000, 1000, NULL, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(a->len, ==, 1);
        g_ptr_array_free(a, TRUE);
        interrupt_statements(dq_store_sqlite(s), steps[i].sql);
        g_assert_null(store_jobs_claim(s, "B", "m", 4, 1000000 + 5000, 1000, NULL, &err));
        g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
        g_assert_nonnull(strstr(err->message, steps[i].what));
        g_clear_error(&err);
        stop_interrupting(dq_store_sqlite(s));
        g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM job_errors"), ==, 0);
        g_assert_cmpint(query_int(s, loc,
                                  "SELECT count(*) FROM jobs WHERE state = 'running' AND "
                                  "lease_owner = 'A' AND attempts = 1"),
                        ==, 1);
        g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==,
                        2);
        int buried = -1;
        GPtrArray *b = store_jobs_claim(s, "B", "m", 4, 1000000 + 5000, 1000, &buried, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(b->len, ==, 3);
        g_assert_cmpint(buried, ==, 0);
        g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM job_errors"), ==, 1);
        g_ptr_array_free(b, TRUE);
        store_jobs_finalize(s);
        dq_store_close(s);
        g_free(loc);
    }
}

/* `err` is a database error that names `what`; cleared. */
static void assert_db_error(GError **err, const char *what) {
    g_assert_error(*err, DQ_ERROR, DQ_ERR_DB);
    if (strstr((*err)->message, what) == NULL)
        g_error("'%s' does not say '%s'", (*err)->message, what);
    g_clear_error(err);
}

/* Each read of a document's rows failing part way (an I/O error, a corrupt page) fails the call
 * saying what it was reading: it is not taken for a document that is not there (ingest would
 * record it again as a new version), for one with no pages stored, or for a folder with no
 * documents (every document under it would be marked gone). */
static void test_document_read_errors(void) {
    char *loc = NULL;
    gint64 doc = 0;
    GError *err = NULL;
    DqStore *s = sqlite_store_with_document(&loc, &doc);
    const DqDocumentStamp stamp = {.dev = 1, .inode = 2, .bytes = 1234, .mtime_ns = 3};
    g_assert_true(dq_store_document_stamp_set(s, doc, &stamp, &err));
    g_assert_true(dq_store_document_paths_mark(s, (const char *[]){"/a.pdf"}, 1, NULL, 0, &err));
    dq_assert_no_error(err);
    sqlite3 *db = dq_store_sqlite(s);
    const char *sha = "1111111111111111111111111111111111111111111111111111111111111111";
    DqDocumentLookup found;

    interrupt_statements(db, "sha256 IS ?2 AND version");
    g_assert_false(dq_store_document_find(s, "/a.pdf", sha, SETTINGS, &found, &err));
    assert_db_error(&err, "looking up a document");
    interrupt_statements(db, "FILTER (WHERE render_settings");
    g_assert_false(dq_store_document_find(s, "/a.pdf", sha, SETTINGS, &found, &err));
    assert_db_error(&err, "counting pages");
    dq_document_lookup_clear(&found);

    interrupt_statements(db, "image_sha256 IS NOT NULL ORDER BY page_number");
    g_assert_null(dq_store_document_stored_pages(s, doc, SETTINGS, &err));
    assert_db_error(&err, "listing the pages stored");

    interrupt_statements(db, "substr(path, 1, length");
    g_assert_null(dq_store_document_paths_under(s, "/", &err));
    assert_db_error(&err, "listing the documents of a folder");

    interrupt_statements(db, "SELECT DISTINCT path");
    g_assert_null(dq_store_document_paths_gone(s, &err));
    assert_db_error(&err, "listing the documents gone");

    gint64 id = -1;
    char *stamped_sha = NULL;
    DqDocumentStamp got;
    interrupt_statements(db, "JOIN document_stamps");
    g_assert_false(dq_store_document_stamp_find(s, "/a.pdf", &id, &stamped_sha, &got, &err));
    assert_db_error(&err, "looking up a file's stamp");
    g_assert_null(stamped_sha);
    stop_interrupting(db);

    /* Each read works again once the database does. */
    g_assert_true(dq_store_document_find(s, "/a.pdf", sha, SETTINGS, &found, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(found.id, ==, doc);
    g_assert_cmpint(found.pages_with_settings, ==, 4);
    dq_document_lookup_clear(&found);
    GPtrArray *a = dq_store_document_stored_pages(s, doc, SETTINGS, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(a->len, ==, 3);
    g_ptr_array_free(a, TRUE);
    a = dq_store_document_paths_under(s, "/", &err);
    dq_assert_no_error(err);
    g_assert_cmpint(a->len, ==, 1);
    g_ptr_array_free(a, TRUE);
    a = dq_store_document_paths_gone(s, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(a->len, ==, 1);
    g_ptr_array_free(a, TRUE);
    g_assert_true(dq_store_document_stamp_find(s, "/a.pdf", &id, &stamped_sha, &got, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(id, ==, doc);
    g_free(stamped_sha);
    dq_store_close(s);
    g_free(loc);
}

/* Each write of a document failing part way fails naming the step (a record: after the
 * document's path), and nothing of it stays: no new version, no page, no change to the version
 * it was replacing. */
static void test_document_write_errors(void) {
    enum { NEW_VERSION, RERENDER, STAMP, MARK_GONE };
    static const struct {
        const char *sql; /* a part of the statement's text */
        const char *what;
        int write;
    } steps[] = {
        {"BEGIN IMMEDIATE", "interrupted", NEW_VERSION},
        {"ORDER BY version DESC LIMIT 1", "looking up the newest version", NEW_VERSION},
        {"RETURNING id", "inserting a document", NEW_VERSION},
        {"INSERT INTO pages", "inserting a page", NEW_VERSION},
        {"COMMIT", "interrupted", NEW_VERSION},
        {"BEGIN IMMEDIATE", "interrupted", RERENDER},
        {"UPDATE documents SET page_count", "updating a document", RERENDER},
        {"DELETE FROM pages", "replacing pages", RERENDER},
        {"INSERT INTO pages", "inserting a page", RERENDER},
        {"INSERT INTO document_stamps", "storing a file's stamp", STAMP},
        {"BEGIN IMMEDIATE", "interrupted", MARK_GONE},
        {"missing_since = strftime", "marking documents gone", MARK_GONE},
        {"COMMIT", "interrupted", MARK_GONE},
    };
    DqPageRow page = {.page_number = 1,
                      .width = 30,
                      .height = 40,
                      .image_sha256 =
                          "d000000000000000000000000000000000000000000000000000000000000000",
                      .status = "partial",
                      .error_code = "damaged",
                      .error_message = "strip 2 short"};
    for (guint i = 0; i < G_N_ELEMENTS(steps); i++) {
        char *loc = NULL;
        gint64 doc = 0;
        GError *err = NULL;
        DqStore *s = sqlite_store_with_document(&loc, &doc);
        sqlite3 *db = dq_store_sqlite(s);
        const DqDocumentRow row = {.path = "/a.pdf",
                                   .sha256 = "2222",
                                   .bytes = 1,
                                   .kind = "pdf",
                                   .page_count = 1,
                                   .status = "partial",
                                   .error_code = "damaged",
                                   .error_message = "page 1: strip 2 short"};
        const DqDocumentStamp stamp = {.dev = 1, .inode = 2};
        const char *gone[] = {"/a.pdf"};
        int write = steps[i].write;
        gint64 existing = write == RERENDER ? doc : 0;
        interrupt_statements(db, steps[i].sql);
        gboolean ok = write == STAMP ? dq_store_document_stamp_set(s, doc, &stamp, &err)
                      : write == MARK_GONE
                          ? dq_store_document_paths_mark(s, gone, 1, NULL, 0, &err)
                          : dq_store_document_record(s, &row, existing, write == RERENDER, SETTINGS,
                                                     &page, 1, NULL, NULL, &err);
        g_assert_false(ok);
        /* a record's failure once under way names the document */
        gboolean begun = write <= RERENDER && strcmp(steps[i].sql, "BEGIN IMMEDIATE") != 0;
        g_assert_true(!begun || g_str_has_prefix(err->message, "/a.pdf: "));
        assert_db_error(&err, steps[i].what);
        stop_interrupting(db);
        g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM documents"), ==, 1);
        g_assert_cmpint(query_int(s, loc,
                                  "SELECT count(*) FROM documents WHERE page_count = 4 AND "
                                  "status = 'partial' AND error_code IS NULL AND "
                                  "missing_since IS NULL"),
                        ==, 1);
        g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM pages WHERE width = 10"), ==, 3);
        g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM pages"), ==, 4);
        g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM document_stamps"), ==, 0);
        if (write == NEW_VERSION || write == RERENDER) {
            /* the same write goes through once the database works, outcome and all */
            g_assert_true(dq_store_document_record(s, &row, existing, write == RERENDER, SETTINGS,
                                                   &page, 1, NULL, NULL, &err));
            dq_assert_no_error(err);
            g_assert_cmpint(query_int(s, loc,
                                      "SELECT count(*) FROM documents WHERE page_count = 1 AND "
                                      "status = 'partial' AND error_code = 'damaged' AND "
                                      "error_message = 'page 1: strip 2 short'"),
                            ==, 1);
            g_assert_cmpint(query_int(s, loc,
                                      "SELECT count(*) FROM pages WHERE width = 30 AND "
                                      "error_message = 'strip 2 short'"),
                            ==, 1);
        }
        dq_store_close(s);
        g_free(loc);
    }
}

/* A heartbeat whose COMMIT fails says so and leaves its caller's list of jobs gone as it was:
 * what it found is not known to be so (its renewal did not happen either). */
static void test_heartbeat_commit_error(void) {
    char *loc = NULL;
    GError *err = NULL;
    DqStore *s = sqlite_store_with_document(&loc, NULL);
    g_assert_cmpint(enqueue_all(s, "Q"), ==, 3);
    GPtrArray *w = store_jobs_claim(s, "W", "m", 3, 1000000, 1000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(w->len, ==, 3);
    gint64 ids[3];
    for (int i = 0; i < 3; i++)
        ids[i] = ((DqClaimedJob *)g_ptr_array_index(w, i))->job_id;
    exec_ok(s, "UPDATE jobs SET lease_owner = 'V'"); /* taken over: all three gone */
    GArray *gone = g_array_new(FALSE, FALSE, sizeof(gint64));
    gint64 before = -7;
    g_array_append_val(gone, before);
    int held = -1;
    interrupt_statements(dq_store_sqlite(s), "COMMIT");
    g_assert_false(store_jobs_heartbeat_noting(s, "W", 1000500, 1000, ids, 3, gone, &held, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_assert_nonnull(strstr(err->message, "COMMIT"));
    g_clear_error(&err);
    g_assert_cmpint(held, ==, -1);
    g_assert_cmpint(gone->len, ==, 1);
    g_assert_cmpint(g_array_index(gone, gint64, 0), ==, before);
    /* without a list to fill, the same */
    g_assert_false(store_jobs_heartbeat(s, "V", 1000500, 1000, &held, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_clear_error(&err);
    g_assert_cmpint(held, ==, -1);
    stop_interrupting(dq_store_sqlite(s));
    g_assert_cmpint(query_int(s, loc, "SELECT max(lease_expires_ms) FROM jobs"), <, 1000500 + 1000);
    g_assert_true(store_jobs_heartbeat_noting(s, "W", 1000500, 1000, ids, 3, gone, &held, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(held, ==, 0);
    g_assert_cmpint(gone->len, ==, 4);
    g_array_free(gone, TRUE);
    g_ptr_array_free(w, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* ---- a disk with a fixed room: the default VFS, whose writes that grow a file take from
 * `room_left` (SQLITE_FULL when it has not enough) and whose truncations give back to it, once
 * armed. Files keep the default VFS's own sqlite3_file; only their methods table is swapped. */

/* The default VFS's methods tables (one per kind of file it opens), and each one's copy. */
static const sqlite3_io_methods *room_real_methods[8];
static sqlite3_io_methods room_methods[8];
static sqlite3_vfs *room_real_vfs;
static gboolean room_armed;
static sqlite3_int64 room_left;
static int room_refused; /* writes refused for want of room */

static const sqlite3_io_methods *room_real_of(sqlite3_file *f) {
    return room_real_methods[f->pMethods - room_methods];
}

static int room_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o) {
    const sqlite3_io_methods *real = room_real_of(f);
    sqlite3_int64 size = 0;
    if (room_armed && real->xFileSize(f, &size) == SQLITE_OK && o + n > size) {
        if (o + n - size > room_left) {
            room_refused++;
            return SQLITE_FULL;
        }
        room_left -= o + n - size;
    }
    return real->xWrite(f, b, n, o);
}

static int room_truncate(sqlite3_file *f, sqlite3_int64 to) {
    const sqlite3_io_methods *real = room_real_of(f);
    sqlite3_int64 size = 0;
    if (room_armed && real->xFileSize(f, &size) == SQLITE_OK && to < size)
        room_left += size - to;
    return real->xTruncate(f, to);
}

static int room_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out) {
    (void)vfs;
    int rc = room_real_vfs->xOpen(room_real_vfs, name, f, flags, out);
    if (rc != SQLITE_OK || f->pMethods == NULL)
        return rc;
    size_t i = 0;
    while (i < G_N_ELEMENTS(room_real_methods) && room_real_methods[i] != NULL &&
           room_real_methods[i] != f->pMethods)
        i++;
    g_assert_cmpuint(i, <, G_N_ELEMENTS(room_real_methods));
    if (room_real_methods[i] == NULL) {
        room_real_methods[i] = f->pMethods;
        room_methods[i] = *f->pMethods;
        room_methods[i].xWrite = room_write;
        room_methods[i].xTruncate = room_truncate;
    }
    f->pMethods = &room_methods[i];
    return rc;
}

/* A worker gives its jobs back on a disk that filled while it held them, and it set no room
 * aside (dq_store_keep_reserve): the release's pages find no room in the -wal. Emptying the -wal
 * into the database file and truncating it frees the room they need, and the jobs go back
 * without spending an attempt, instead of staying leased (each such episode then cost them an
 * attempt when the lease ran out). */
static void test_release_on_full_disk_without_reserve(void) {
    room_real_vfs = sqlite3_vfs_find(NULL);
    static sqlite3_vfs vfs;
    vfs = *room_real_vfs;
    vfs.zName = "docqa-test-room";
    vfs.xOpen = room_open;
    g_assert_cmpint(sqlite3_vfs_register(&vfs, 1), ==, SQLITE_OK);
    char *loc = NULL;
    GError *err = NULL;
    DqStore *s = sqlite_store_with_document(&loc, NULL);
    g_assert_cmpint(enqueue_all(s, "Q"), ==, 3);
    /* every page in the database file, the -wal empty: what follows only rewrites pages */
    exec_ok(s, "PRAGMA wal_checkpoint(TRUNCATE)");
    GPtrArray *w = store_jobs_claim(s, "W", "m", 3, dq_wall_ms(), 60000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(w->len, ==, 3);
    g_ptr_array_free(w, TRUE);
    exec_ok(s, "UPDATE jobs SET lease_expires_ms = lease_expires_ms + 1");
    room_left = 0;
    room_refused = 0;
    room_armed = TRUE;
    int released = -1;
    g_assert_true(store_jobs_release(s, "W", &released, &err));
    dq_assert_no_error(err);
    room_armed = FALSE;
    g_assert_cmpint(room_refused, >, 0); /* the disk was full for it */
    g_assert_cmpint(released, ==, 3);
    store_jobs_finalize(s);
    dq_store_close(s);
    s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM jobs WHERE state = 'queued' AND "
                              "lease_owner IS NULL AND attempts = 0"),
                    ==, 3);
    store_jobs_finalize(s);
    dq_store_close(s);
    sqlite3_vfs_unregister(&vfs);
    g_free(loc);
}

/* A worker gives its jobs back on a connection whose last transaction failed and is still open
 * (a COMMIT that hit a full disk leaves it so): the release is not swallowed by it, it is in the
 * database for the next connection. */
static void test_release_after_failed_transaction(void) {
    char *loc = NULL;
    GError *err = NULL;
    DqStore *s = sqlite_store_with_document(&loc, NULL);
    g_assert_cmpint(enqueue_all(s, "Q"), ==, 3);
    GPtrArray *w = store_jobs_claim(s, "W", "m", 3, dq_wall_ms(), 60000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(w->len, ==, 3);
    g_ptr_array_free(w, TRUE);
    exec_ok(s, "BEGIN IMMEDIATE; UPDATE jobs SET last_error = 'half done'");
    int released = -1;
    g_assert_true(store_jobs_release(s, "W", &released, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(released, ==, 3);
    store_jobs_finalize(s);
    dq_store_close(s);
    s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(query_int(s, loc,
                              "SELECT count(*) FROM jobs WHERE state = 'queued' AND "
                              "lease_owner IS NULL AND attempts = 0"),
                    ==, 3);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs WHERE last_error IS NOT NULL"), ==,
                    0);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

/* A completion stores the answer with all it says about how it was made: its tokens, its worker
 * and times, each stage's milliseconds, the device, the weights, exactness and the snapshot, and
 * the job's model and generation settings beside them (what `docqa export` and users' SQL
 * read). */
static void test_answer_provenance(gconstpointer kind) {
    char *loc = new_location(kind);
    if (loc == NULL)
        return;
    GError *err = NULL;
    DqStore *s = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    add_document(s, "/archive/a.pdf", "1111");
    g_assert_cmpint(enqueue_all(s, "Q"), ==, 3);
    GPtrArray *w = store_jobs_claim(s, "W", "m", 1, dq_wall_ms(), 60000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(w->len, ==, 1);
    gint64 job = ((DqClaimedJob *)g_ptr_array_index(w, 0))->job_id;
    const DqJobAnswer a = {.job_id = job,
                           .text = "forty-two",
                           .prompt_tokens = 812,
                           .generated_tokens = 7,
                           .started_at = "2026-03-01T10:00:00.125Z",
                           .finished_at = "2026-03-01T10:00:02.500Z",
                           .ms_image = 1.5,
                           .ms_vision = 20.25,
                           .ms_prefill = 300.5,
                           .ms_decode = 70.75,
                           .ms_total = 2375.0,
                           .device = "cuda:1",
                           .weights = "bf16",
                           .exact = 0,
                           .model_fingerprint = "0123456789abcdef"};
    complete_all(s, "W", &a, 1);
    char *sql = g_strdup_printf(
        "SELECT count(*) FROM answers WHERE job_id = %" G_GINT64_FORMAT " AND text = 'forty-two' "
        "AND prompt_tokens = 812 AND generated_tokens = 7 AND model_id = 'm' "
        "AND generation_settings = '{}' AND worker = 'W' "
        "AND started_at = '2026-03-01T10:00:00.125Z' AND finished_at = '2026-03-01T10:00:02.500Z' "
        "AND ms_image = 1.5 AND ms_vision = 20.25 AND ms_prefill = 300.5 AND ms_decode = 70.75 "
        "AND ms_total = 2375 AND device = 'cuda:1' AND weights = 'bf16' AND exact = 0 "
        "AND model_fingerprint = '0123456789abcdef'",
        job);
    g_assert_cmpint(query_int(s, loc, sql), ==, 1);
    g_free(sql);
    g_assert_cmpint(query_int(s, loc, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 1);
    g_ptr_array_free(w, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_free(loc);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    server = pgt_start(&server_why_not);
    if (server == NULL)
        g_test_message("PostgreSQL cases skipped: %s", server_why_not);
    g_test_add_data_func("/store/backends/sqlite/lifecycle", "sqlite", test_lifecycle);
    g_test_add_data_func("/store/backends/sqlite/restore-views", "sqlite", test_restore_views);
    g_test_add_data_func("/store/backends/postgres/restore-views", "postgres", test_restore_views);
    g_test_add_data_func("/store/backends/sqlite/record-out-version", "sqlite",
                         test_record_out_version);
    g_test_add_data_func("/store/backends/postgres/record-out-version", "postgres",
                         test_record_out_version);
    g_test_add_data_func("/store/backends/postgres/lifecycle", "postgres", test_lifecycle);
    g_test_add_data_func("/store/backends/sqlite/requeue-approximate", "sqlite",
                         test_requeue_approximate);
    g_test_add_data_func("/store/backends/postgres/requeue-approximate", "postgres",
                         test_requeue_approximate);
    g_test_add_data_func("/store/backends/sqlite/requeue-approximate-fails", "sqlite",
                         test_requeue_approximate_fails);
    g_test_add_data_func("/store/backends/postgres/requeue-approximate-fails", "postgres",
                         test_requeue_approximate_fails);
    g_test_add_data_func("/store/backends/sqlite/errors-after", "sqlite", test_errors_after);
    g_test_add_data_func("/store/backends/postgres/errors-after", "postgres", test_errors_after);
    g_test_add_data_func("/store/backends/sqlite/errors-after-two-runs", "sqlite",
                         test_errors_after_two_runs);
    g_test_add_data_func("/store/backends/postgres/errors-after-two-runs", "postgres",
                         test_errors_after_two_runs);
    g_test_add_data_func("/store/backends/sqlite/upgrade-from-2", "sqlite",
                         test_upgrade_from_schema_2);
    g_test_add_func("/store/backends/postgres/upgrade-while-waiting", test_upgrade_while_waiting);
    g_test_add_data_func("/store/backends/postgres/upgrade-from-2", "postgres",
                         test_upgrade_from_schema_2);
    g_test_add_data_func("/store/backends/sqlite/upgrade-from-14", "sqlite",
                         test_upgrade_from_schema_14);
    g_test_add_data_func("/store/backends/postgres/upgrade-from-14", "postgres",
                         test_upgrade_from_schema_14);
    g_test_add_data_func("/store/backends/sqlite/upgrade-from-15", "sqlite",
                         test_upgrade_from_schema_15);
    g_test_add_data_func("/store/backends/postgres/upgrade-from-15", "postgres",
                         test_upgrade_from_schema_15);
    g_test_add_data_func("/store/backends/sqlite/upgrade-from-7", "sqlite",
                         test_upgrade_from_schema_7);
    g_test_add_data_func("/store/backends/postgres/upgrade-from-7", "postgres",
                         test_upgrade_from_schema_7);
    g_test_add_data_func("/store/backends/sqlite/open-existing", "sqlite", test_open_existing);
    g_test_add_data_func("/store/backends/postgres/open-existing", "postgres", test_open_existing);
    g_test_add_func("/store/backends/postgres/reconnect", test_pg_reconnect);
    g_test_add_func("/store/backends/postgres/clock-skew", test_pg_clock_skew);
    g_test_add_func("/store/backends/postgres/commit-reply-lost", test_pg_commit_reply_lost);
    g_test_add_data_func("/store/backends/sqlite/late-answer", "sqlite", test_late_answer);
    g_test_add_data_func("/store/backends/sqlite/failure-reasons", "sqlite",
                         test_failure_reasons_grouped);
    g_test_add_data_func("/store/backends/postgres/failure-reasons", "postgres",
                         test_failure_reasons_grouped);
    g_test_add_data_func("/store/backends/postgres/late-answer", "postgres", test_late_answer);
    g_test_add_func("/store/backends/postgres/reader-on-old-schema", test_pg_reader_on_old_schema);
    g_test_add_data_func("/store/backends/sqlite/migrate-snapshot", "sqlite",
                         test_migrate_snapshot);
    g_test_add_data_func("/store/backends/postgres/migrate-snapshot", "postgres",
                         test_migrate_snapshot);
    g_test_add_func("/store/backends/postgres/password-hidden", test_pg_password_hidden);
    g_test_add_func("/store/backends/postgres/display-location", test_pg_display_location);
    g_test_add_func("/store/backends/location-pasteable", test_location_pasteable);
    g_test_add_data_func("/store/backends/sqlite/rerender-keeps-jobs", "sqlite",
                         test_rerender_keeps_jobs);
    g_test_add_data_func("/store/backends/postgres/rerender-keeps-jobs", "postgres",
                         test_rerender_keeps_jobs);
    g_test_add_data_func("/store/backends/sqlite/rerender-stored-rows", "sqlite",
                         test_rerender_stored_rows);
    g_test_add_data_func("/store/backends/postgres/rerender-stored-rows", "postgres",
                         test_rerender_stored_rows);
    g_test_add_data_func("/store/backends/sqlite/document-versions", "sqlite",
                         test_document_versions);
    g_test_add_data_func("/store/backends/postgres/document-versions", "postgres",
                         test_document_versions);
    g_test_add_data_func("/store/backends/sqlite/non-utf8-path", "sqlite", test_non_utf8_path);
    g_test_add_data_func("/store/backends/postgres/non-utf8-path", "postgres", test_non_utf8_path);
    g_test_add_data_func("/store/backends/sqlite/gone-paths", "sqlite", test_gone_paths);
    g_test_add_data_func("/store/backends/postgres/gone-paths", "postgres", test_gone_paths);
    g_test_add_data_func("/store/backends/sqlite/heartbeat-gone", "sqlite", test_heartbeat_gone);
    g_test_add_data_func("/store/backends/postgres/heartbeat-gone", "postgres",
                         test_heartbeat_gone);
    g_test_add_data_func("/store/backends/sqlite/cancel", "sqlite", test_cancel);
    g_test_add_data_func("/store/backends/postgres/cancel", "postgres", test_cancel);
    g_test_add_data_func("/store/backends/sqlite/cancel-many-documents", "sqlite",
                         test_cancel_many_documents);
    g_test_add_data_func("/store/backends/postgres/cancel-many-documents", "postgres",
                         test_cancel_many_documents);
    g_test_add_data_func("/store/backends/sqlite/requeue-selected", "sqlite",
                         test_requeue_selected);
    g_test_add_data_func("/store/backends/postgres/requeue-selected", "postgres",
                         test_requeue_selected);
    g_test_add_data_func("/store/backends/sqlite/requeue-done-stale", "sqlite",
                         test_requeue_done_stale);
    g_test_add_data_func("/store/backends/postgres/requeue-done-stale", "postgres",
                         test_requeue_done_stale);
    g_test_add_data_func("/store/backends/sqlite/export-range", "sqlite", test_export_range);
    g_test_add_data_func("/store/backends/postgres/export-range", "postgres", test_export_range);
    g_test_add_func("/store/backends/postgres/export-commit-order", test_pg_export_commit_order);
    g_test_add_func("/store/backends/postgres/export-streams", test_pg_export_streams);
    g_test_add_func("/store/backends/migrate-round-trip", test_migrate_round_trip);
    g_test_add_func("/store/backends/cli", test_cli);
    g_test_add_func("/store/backends/postgres/notice-escaped", test_pg_notice_escaped);
    g_test_add_func("/store/backends/sqlite/close-finalizes", test_close_finalizes_statements);
    g_test_add_data_func("/store/backends/sqlite/status-now", "sqlite", test_status_now);
    g_test_add_func("/store/backends/sqlite/select-pages-read-error", test_select_pages_read_error);
    g_test_add_func("/store/backends/sqlite/counts-read-error", test_counts_read_error);
    g_test_add_func("/store/backends/sqlite/schema-version-read-error",
                    test_schema_version_read_error);
    g_test_add_func("/store/backends/sqlite/restore-user-objects-read-error",
                    test_restore_user_objects_read_error);
    g_test_add_func("/store/backends/sqlite/check-file-read-error", test_check_file_read_error);
    g_test_add_func("/store/backends/sqlite/schema-version-read-error-after-migrations",
                    test_schema_version_read_error_after_migrations);
    g_test_add_data_func("/store/backends/sqlite/where-error-says-why", "sqlite",
                         test_where_error_says_why);
    g_test_add_data_func("/store/backends/postgres/where-error-says-why", "postgres",
                         test_where_error_says_why);
    g_test_add_data_func("/store/backends/postgres/status-now", "postgres", test_status_now);
    g_test_add_data_func("/store/backends/sqlite/lease-boundary", "sqlite", test_lease_boundary);
    g_test_add_data_func("/store/backends/postgres/lease-boundary", "postgres",
                         test_lease_boundary);
    g_test_add_func("/store/backends/sqlite/claim-read-errors", test_claim_read_errors);
    g_test_add_func("/store/backends/sqlite/document-read-errors", test_document_read_errors);
    g_test_add_func("/store/backends/sqlite/document-write-errors", test_document_write_errors);
    g_test_add_func("/store/backends/sqlite/heartbeat-commit-error", test_heartbeat_commit_error);
    g_test_add_func("/store/backends/sqlite/release-after-failed-transaction",
                    test_release_after_failed_transaction);
    g_test_add_func("/store/sqlite/release-on-full-disk-without-reserve",
                    test_release_on_full_disk_without_reserve);
    g_test_add_data_func("/store/backends/sqlite/answer-provenance", "sqlite",
                         test_answer_provenance);
    g_test_add_data_func("/store/backends/postgres/answer-provenance", "postgres",
                         test_answer_provenance);
    int rc = g_test_run();
    pgt_stop(server);
    g_free(server_why_not);
    return rc;
}
