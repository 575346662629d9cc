/* What users read with SQL is the same on SQLite and on PostgreSQL.
 *
 * One history is played on both, in lockstep: `docqa ingest` of real PDFs and TIFFs (a failed,
 * a partial and a non-UTF-8-named one, a file that gets a second version, a second copy of a file
 * and a file deleted before the next ingest), `docqa ask` with
 * non-ASCII and quoted questions, a lease that runs out, worker runs with the hash answerer
 * (jobs_testlib.h) that fail some jobs for good and some until they are dead, `docqa requeue
 * --failed` and `--approximate` (so answers_superseded fills), a retry waiting for its backoff,
 * a job still running and an answer whose device is unknown, and `docqa cancel` of a question's
 * jobs and of one document's. Then every view the migrations
 * create and every table the README names is compared row by row as text, as sqlite3 and psql
 * print it, along with `docqa export` and `docqa status --json`. The README's SQL examples, read
 * from README.md itself, run on both and give the same, non-empty results. Last, `docqa migrate`
 * SQLite -> PostgreSQL -> SQLite gives back every table (every one of them holding rows) as it
 * was, ids included, and the copy in PostgreSQL reads exactly as the SQLite original.
 *
 * "The same" (README, "Moving from SQLite to PostgreSQL"): text, integers and NULLs print the same
 * characters; times are ISO-8601 UTC text with milliseconds on both (two histories happen at
 * different moments, so there they are checked for the form, and compared exactly after a
 * migrate); floating-point columns hold the same double (sqlite3 prints 612.0 where psql prints
 * 612); `exact` is 1/0 on both. A view's rows are compared as a set, except v_progress's, which
 * come in the order the questions were asked on both; a README query with ORDER BY in order.
 * Without PostgreSQL server binaries, only the README's examples on SQLite run. */
#include "clock.h"
#include "dq_error.h"
#include "jobs_testlib.h"
#include "pg_testlib.h"
#include "queue.h"
#include "store.h"
#include "store_jobs.h"
#include "testutil.h"

#include <glib/gstdio.h>
#include <libpq-fe.h>
#include <string.h>
#include <sys/wait.h>

static PgtServer *server;
static char *server_why_not;

/* ---- reading rows as text ---- */

typedef struct {
    int n;
    char **names;
    gboolean *real;  /* every value of the column is a floating-point number */
    GPtrArray *rows; /* char *[n], NULL for SQL NULL */
    /* SQLite: char *[n], "%.17g" of each floating-point value (its text form has 15 digits). */
    GPtrArray *exact;
} Rows;

static void rows_free(Rows *r) {
    for (guint i = 0; i < r->rows->len; i++) {
        char **row = g_ptr_array_index(r->rows, i);
        for (int c = 0; c < r->n; c++)
            g_free(row[c]);
        g_free(row);
        if (r->exact) {
            row = g_ptr_array_index(r->exact, i);
            for (int c = 0; c < r->n; c++)
                g_free(row[c]);
            g_free(row);
        }
    }
    g_ptr_array_free(r->rows, TRUE);
    if (r->exact)
        g_ptr_array_free(r->exact, TRUE);
    g_strfreev(r->names);
    g_free(r->real);
    g_free(r);
}

static const char *sqlite_file(const char *loc) {
    return g_str_has_prefix(loc, "sqlite:") ? loc + strlen("sqlite:") : loc;
}

/* The values as sqlite3_column_text gives them, which is what the sqlite3 shell prints. */
static Rows *read_sqlite(const char *loc, const char *sql) {
    sqlite3 *db = NULL;
    g_assert_cmpint(sqlite3_open_v2(sqlite_file(loc), &db, SQLITE_OPEN_READONLY, NULL), ==,
                    SQLITE_OK);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        g_error("SQLite: %s: %s", sql, sqlite3_errmsg(db));
    Rows *r = g_new0(Rows, 1);
    r->n = sqlite3_column_count(st);
    r->names = g_new0(char *, r->n + 1);
    r->real = g_new0(gboolean, r->n);
    for (int c = 0; c < r->n; c++) {
        r->names[c] = g_strdup(sqlite3_column_name(st, c));
        r->real[c] = TRUE;
    }
    r->rows = g_ptr_array_new();
    r->exact = g_ptr_array_new();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char **row = g_new0(char *, r->n), **exact = g_new0(char *, r->n);
        for (int c = 0; c < r->n; c++) {
            int type = sqlite3_column_type(st, c);
            if (type == SQLITE_FLOAT)
                exact[c] = g_strdup_printf("%.17g", sqlite3_column_double(st, c));
            if (type != SQLITE_NULL)
                row[c] = g_strdup((const char *)sqlite3_column_text(st, c));
            if (type != SQLITE_NULL && type != SQLITE_FLOAT)
                r->real[c] = FALSE;
        }
        g_ptr_array_add(r->rows, row);
        g_ptr_array_add(r->exact, exact);
    }
    if (rc != SQLITE_DONE)
        g_error("SQLite: %s: %s", sql, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return r;
}

/* The values in PostgreSQL's text form, which is what psql prints. */
static Rows *read_pg(const char *loc, const char *sql) {
    PGconn *conn = PQconnectdb(loc);
    g_assert_cmpint(PQstatus(conn), ==, CONNECTION_OK);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        g_error("PostgreSQL: %s: %s", sql, PQresultErrorMessage(res));
    Rows *r = g_new0(Rows, 1);
    r->n = PQnfields(res);
    r->names = g_new0(char *, r->n + 1);
    r->real = g_new0(gboolean, r->n);
    for (int c = 0; c < r->n; c++) {
        r->names[c] = g_strdup(PQfname(res, c));
        /* float4, float8 (pg_type.h's FLOAT4OID, FLOAT8OID) */
        r->real[c] = PQftype(res, c) == 700 || PQftype(res, c) == 701;
    }
    r->rows = g_ptr_array_new();
    for (int i = 0; i < PQntuples(res); i++) {
        char **row = g_new0(char *, r->n);
        for (int c = 0; c < r->n; c++)
            if (!PQgetisnull(res, i, c))
                row[c] = g_strdup(PQgetvalue(res, i, c));
        g_ptr_array_add(r->rows, row);
    }
    PQclear(res);
    PQfinish(conn);
    return r;
}

static Rows *read_rows(const char *loc, const char *sql) {
    return dq_store_location_is_postgres(loc) ? read_pg(loc, sql) : read_sqlite(loc, sql);
}

/* Two histories played at different moments, by workers with other ids and clocks: their times,
 * leases, backoffs and worker ids are checked for their form and then masked. */
typedef enum { SAME_DATA, SAME_HISTORY } Sameness;

static gboolean is_time_column(const char *name) {
    return strcmp(name, "at") == 0 || g_str_has_suffix(name, "_at") ||
           strcmp(name, "missing_since") == 0;
}

static char *cell(const Rows *r, guint i, int c, gboolean as_real, Sameness how) {
    const char *v = ((char **)g_ptr_array_index(r->rows, i))[c];
    const char *name = r->names[c];
    if (v == NULL)
        return g_strdup("NULL");
    if (is_time_column(name)) {
        if (!g_regex_match_simple("^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z$", v, 0, 0))
            g_error("%s = '%s' is not ISO-8601 UTC text with milliseconds", name, v);
        if (how == SAME_HISTORY)
            return g_strdup("<time>");
    }
    if (how == SAME_HISTORY) {
        if ((strcmp(name, "not_before_ms") == 0 || strcmp(name, "lease_expires_ms") == 0) &&
            strcmp(v, "0") != 0)
            return g_strdup("<ms>");
        /* a real worker's id: host:pid:random */
        if (g_regex_match_simple("^[^:]+:\\d+:[0-9a-f]{8}$", v, 0, 0))
            return g_strdup("<worker>");
    }
    if (as_real && r->exact)
        return g_strdup(((char **)g_ptr_array_index(r->exact, i))[c]);
    if (as_real) {
        char *end = NULL;
        double d = g_ascii_strtod(v, &end);
        g_assert_true(end != v && *end == '\0');
        return g_strdup_printf("%.17g", d);
    }
    /* A bar inside a value must not read as a column boundary. */
    GString *s = g_string_new(NULL);
    for (const char *p = v; *p; p++)
        g_string_append(s, *p == '|' ? "\\|" : *p == '\n' ? "\\n" : (char[]){*p, 0});
    return g_string_free(s, FALSE);
}

static gint by_text(gconstpointer a, gconstpointer b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The rows as lines "a | b | NULL", after the header line of column names. */
static GPtrArray *lines(const Rows *r, const gboolean *as_real, Sameness how, gboolean sort) {
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < r->rows->len; i++) {
        GString *s = g_string_new(NULL);
        for (int c = 0; c < r->n; c++) {
            char *v = cell(r, i, c, as_real[c], how);
            g_string_append_printf(s, "%s%s", c ? " | " : "", v);
            g_free(v);
        }
        g_ptr_array_add(out, g_string_free(s, FALSE));
    }
    if (sort)
        g_ptr_array_sort(out, by_text);
    g_ptr_array_insert(out, 0, g_strjoinv(" | ", r->names));
    return out;
}

static char *joined(GPtrArray *l) {
    g_ptr_array_add(l, NULL);
    char *s = g_strjoinv("\n", (char **)l->pdata);
    g_ptr_array_remove_index(l, l->len - 1);
    return s;
}

/* Compares what `sql` gives on two databases; returns the number of rows. */
static int compare_query(const char *what, const char *loc_a, const char *loc_b, const char *sql,
                         Sameness how, gboolean sort) {
    Rows *a = read_rows(loc_a, sql), *b = read_rows(loc_b, sql);
    g_assert_cmpint(a->n, ==, b->n);
    gboolean *as_real = g_new0(gboolean, a->n);
    for (int c = 0; c < a->n; c++)
        as_real[c] = a->real[c] && b->real[c];
    GPtrArray *la = lines(a, as_real, how, sort), *lb = lines(b, as_real, how, sort);
    char *ta = joined(la), *tb = joined(lb);
    if (strcmp(ta, tb) != 0) {
        guint i = 0;
        while (i < la->len && i < lb->len &&
               strcmp(g_ptr_array_index(la, i), g_ptr_array_index(lb, i)) == 0)
            i++;
        g_test_message("%s: %s\n--- %s:\n%s\n--- %s:\n%s", what, sql, loc_a, ta, loc_b, tb);
        g_error("%s differs at line %u:\n  %s\n  %s", what, i,
                i < la->len ? (char *)g_ptr_array_index(la, i) : "(none)",
                i < lb->len ? (char *)g_ptr_array_index(lb, i) : "(none)");
    }
    int n = (int)a->rows->len;
    g_free(ta);
    g_free(tb);
    g_ptr_array_free(la, TRUE);
    g_ptr_array_free(lb, TRUE);
    g_free(as_real);
    rows_free(a);
    rows_free(b);
    return n;
}

/* ---- the two databases ---- */

typedef struct {
    char *loc;
} Db;

static Db dbs[2];
static int n_dbs;
static char *inputs;      /* the documents, one folder both databases ingest */
static char *pg_pages;    /* DOCQA_PAGES of the PostgreSQL one */
static char *history_dir; /* where the SQLite one lives */

static gint64 db_int(const Db *d, const char *sql) {
    Rows *r = read_rows(d->loc, sql);
    g_assert_cmpint(r->rows->len, ==, 1);
    gint64 v = g_ascii_strtoll(((char **)g_ptr_array_index(r->rows, 0))[0], NULL, 10);
    rows_free(r);
    return v;
}

/* Runs the docqa binary; returns its exit status, and stdout in *out (g_free; may be NULL). */
static int docqa(char **out, const char *const *args) {
    char *e = NULL;
    int rc = dq_test_docqa_in(NULL, NULL, args, out, &e);
    if (e[0] != '\0')
        g_test_message("docqa %s: %s", args[0], e);
    g_free(e);
    return rc;
}

/* Two histories happen at different moments: their times are masked in what docqa prints. */
static char *mask_times(char *text) {
    GRegex *re = g_regex_new("\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z", 0, 0, NULL);
    char *masked = g_regex_replace_literal(re, text, -1, 0, "<time>", 0, NULL);
    g_regex_unref(re);
    g_free(text);
    return masked;
}

/* Fails at the first line where two outputs differ. */
static void assert_same_output(const char *what, const char *a, const char *b) {
    if (strcmp(a, b) == 0)
        return;
    char **la = g_strsplit(a, "\n", -1), **lb = g_strsplit(b, "\n", -1);
    int i = 0;
    while (la[i] && lb[i] && strcmp(la[i], lb[i]) == 0)
        i++;
    g_error("%s: the outputs differ at line %d:\n  %s\n  %s", what, i + 1, la[i] ? la[i] : "(none)",
            lb[i] ? lb[i] : "(none)");
}

/* The same command on every database; each must exit with `want` and print the same. */
static void docqa_each(int want, const char *const *args) {
    char *first = NULL;
    for (int i = 0; i < n_dbs; i++) {
        GPtrArray *a = g_ptr_array_new();
        g_ptr_array_add(a, (char *)args[0]);
        g_ptr_array_add(a, "--db");
        g_ptr_array_add(a, dbs[i].loc);
        for (int k = 1; args[k]; k++)
            g_ptr_array_add(a, (char *)args[k]);
        g_ptr_array_add(a, NULL);
        char *out = NULL;
        g_assert_cmpint(docqa(&out, (const char *const *)a->pdata), ==, want);
        g_ptr_array_free(a, TRUE);
        out = mask_times(out);
        if (i == 0)
            first = out;
        else {
            if (strcmp(args[0], "ingest") != 0) /* its summary holds the pages/s */
                assert_same_output(args[0], first, out);
            g_free(out);
        }
    }
    g_free(first);
}

static void copy_input(const char *corpus, const char *from, const char *to_name) {
    char *src = g_build_filename(corpus, from, NULL);
    char *dst = g_build_filename(inputs, to_name, NULL);
    char *data = NULL;
    gsize len = 0;
    GError *err = NULL;
    g_assert_true(g_file_get_contents(src, &data, &len, &err));
    g_assert_true(g_file_set_contents(dst, data, (gssize)len, &err));
    dq_assert_no_error(err);
    g_free(data);
    g_free(src);
    g_free(dst);
}

/* ../shared/corpus, else the subset committed in tests/ingest/corpus (the files below are in
 * both). */
static char *corpus_dir(void) {
    const char *shared = dq_test_shared_dir();
    char *dir = shared ? g_build_filename(shared, "corpus", NULL) : NULL;
    if (dir != NULL && g_file_test(dir, G_FILE_TEST_IS_DIR))
        return dir;
    g_free(dir);
    return g_build_filename(dq_test_source_dir(), "tests", "ingest", "corpus", NULL);
}

typedef struct {
    const char *device, *weights;
    gboolean exact;
    const char *fingerprint; /* the snapshot's (answers.model_fingerprint) */
    const char *fail_question, *bad_question;
    double ms_total;
    gint64 budget; /* jobs the worker may claim; 0: until the queue is empty */
} Run;

static void worker_run(const Db *d, const Run *run) {
    JtAnswererConfig cfg = {.fail_question = run->fail_question,
                            .bad_question = run->bad_question,
                            .ms_total = run->ms_total};
    DqAnswerer *a = jt_answerer_new(&cfg);
    a->device = run->device;
    a->weights = run->weights;
    a->exact = run->exact;
    a->model_fingerprint = run->fingerprint;
    gint64 budget = run->budget;
    /* One job at a time, retried at once: the jobs are taken in one order on both. */
    DqWorkerOptions opt = {.db_path = d->loc,
                           .model_id = "m",
                           .batch = 1,
                           .until_empty = TRUE,
                           .backoff_ms = 1,
                           .poll_ms = 5,
                           .job_budget = run->budget ? &budget : NULL};
    jt_worker_run(&opt, a);
    dq_answerer_free(a);
}

/* Claims the next job as `owner` through the store, as a worker would. */
static gint64 claim_one(DqStore *s, const char *owner, gint64 lease_ms) {
    GError *err = NULL;
    GPtrArray *c = store_jobs_claim(s, owner, "m", 1, dq_wall_ms(), lease_ms, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(c->len, ==, 1);
    gint64 id = ((DqClaimedJob *)g_ptr_array_index(c, 0))->job_id;
    g_ptr_array_free(c, TRUE);
    return id;
}

static gint64 document_id(const Db *d, const char *name) {
    char *sql =
        g_strdup_printf("SELECT id FROM documents_current WHERE path = '%s/%s'", inputs, name);
    gint64 id = db_int(d, sql);
    g_free(sql);
    return id;
}

/* The history, on every database of dbs[] in turn at each step. */
static void play_history(void) {
    char *corpus = corpus_dir();
    copy_input(corpus, "pdf/pdfium-hello_world.pdf", "hello.pdf");
    copy_input(corpus, "pdf/pdfjs-hello_world_rotated.pdf", "rotated.pdf"); /* 5 pages */
    copy_input(corpus, "tiff/imagetiff-minisblack-1c-8b.tiff", "reçu d'été.tiff");
    copy_input(corpus, "tiff/imagetiff-seq-1c-1b-fax3-71f6a21a.tiff", "caf\xe9.tif"); /* Latin-1 */
    copy_input(corpus, "tiff/libtiff-testfax3_bug_513.tiff", "fax.tiff");             /* partial */
    copy_input(corpus, "pdf/pdfium-encrypted_hello_world_r6.pdf", "locked.pdf");      /* failed */
    copy_input(corpus, "pdf/pdfium-rectangles_multi_pages.pdf", "versioned.pdf");     /* 5 pages */
    copy_input(corpus, "pdf/pdfium-hello_world.pdf", "hello copy.pdf"); /* asked once */
    copy_input(corpus, "pdf/pdf20-simple.pdf", "gone.pdf");             /* deleted below */
    const char *ingest[] = {"ingest", "--n-res", "1", "--tile", "64", "--jobs", "1", inputs, NULL};
    docqa_each(1, ingest); /* 1: a failed and a partial document */
    docqa_each(0,
               (const char *[]){"ask", "--model", "m", "--max-attempts", "2",
                                "What is the invoice total?", "Who signed it?",
                                "Qué dice «Grüße» — 日本語？", "It's \"quoted\", isn't it?", NULL});
    /* The second version: 3 pages, one of them failed; gone.pdf is gone. */
    copy_input(corpus, "pdf/pdfium-document_aactions.pdf", "versioned.pdf");
    char *gone = g_build_filename(inputs, "gone.pdf", NULL);
    g_assert_cmpint(g_unlink(gone), ==, 0);
    g_free(gone);
    docqa_each(1, ingest);
    docqa_each(0, (const char *[]){"ask", "--model", "m", "--where", "path LIKE '%versioned%'",
                                   "What is the invoice total?", "Which version is this?", NULL});
    /* Withdrawn again at once: every job of that question cancelled (v_progress's percent_done is
     * NULL for it), and one asked too, of the other, through --where. */
    docqa_each(0, (const char *[]){"cancel", "--question", "Which version is this?", NULL});
    docqa_each(0, (const char *[]){"cancel", "--question", "Who signed it?", "--where",
                                   "path LIKE '%rotated%'", "--state", "queued", NULL});
    for (int i = 0; i < n_dbs; i++)
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM jobs WHERE state = 'cancelled' AND "
                                        "question_id IN (SELECT id FROM questions WHERE text = "
                                        "'Who signed it?')"),
                        >, 0);

    /* A worker that took the first job and died: its lease runs out, the next claim records it. */
    for (int i = 0; i < n_dbs; i++) {
        GError *err = NULL;
        DqStore *s = dq_store_open(dbs[i].loc, &err);
        dq_assert_no_error(err);
        claim_one(s, "crashed-worker", 1);
        dq_store_close(s);
    }
    g_usleep(20000);
    /* Two jobs that fail, asked last so that nothing else is queued when they are retried. */
    for (int i = 0; i < n_dbs; i++) {
        char *doc = g_strdup_printf("%" G_GINT64_FORMAT, document_id(&dbs[i], "hello.pdf"));
        char *out = NULL;
        g_assert_cmpint(docqa(&out, (const char *[]){"ask", "--db", dbs[i].loc, "--model", "m",
                                                     "--max-attempts", "2", "--document", doc,
                                                     "Bad page?", "Dead end?", NULL}),
                        ==, 0);
        g_assert_nonnull(strstr(out, "2 new jobs"));
        g_free(out);
        g_free(doc);
    }
    /* A nightly GPU run: approximate answers; one job fails for good, one until it is dead. */
    Run gpu = {.device = "cuda:0",
               .weights = "bf16",
               .exact = FALSE,
               .fingerprint = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
               .fail_question = "Dead end",
               .bad_question = "Bad page",
               .ms_total = 812.5};
    for (int i = 0; i < n_dbs; i++)
        worker_run(&dbs[i], &gpu);
    docqa_each(0, (const char *[]){"requeue", "--failed", NULL});
    docqa_each(0, (const char *[]){"requeue", "--approximate", NULL});
    /* The exact run, stopped after 25 jobs: some answers replaced, the others still approximate. */
    Run cpu = {.device = "cpu",
               .weights = "stored",
               .exact = TRUE,
               .fingerprint = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
               .ms_total = 1250,
               .budget = 25};
    for (int i = 0; i < n_dbs; i++)
        worker_run(&dbs[i], &cpu);

    for (int i = 0; i < n_dbs; i++) {
        GError *err = NULL;
        DqStore *s = dq_store_open(dbs[i].loc, &err);
        dq_assert_no_error(err);
        /* Retrying: failed once, waiting out its backoff. */
        gint64 id = claim_one(s, "flaky-worker", 60000);
        DqJobState state;
        g_assert_true(store_jobs_fail(s, "flaky-worker", id, "model",
                                      "CUDA error: out of memory ('x' | \"y\")", TRUE, dq_wall_ms(),
                                      3600000, &state, &err));
        dq_assert_no_error(err);
        /* An answer from before docqa recorded how it was computed, with awkward numbers. */
        id = claim_one(s, "api-worker", 60000);
        DqJobAnswer ans = {.job_id = id,
                           .text = "It's \"12,50 €\"\nline 2 | 3",
                           .prompt_tokens = 1093,
                           .generated_tokens = 7,
                           .started_at = "2026-01-02T03:04:05.678Z",
                           .finished_at = "2026-01-02T03:04:07.001Z",
                           .ms_image = 0.1,
                           .ms_vision = 1e-7,
                           .ms_prefill = 2.5,
                           .ms_decode = 1234.5678901234567,
                           .ms_total = 1e10,
                           .exact = -1};
        int written = 0;
        g_assert_true(store_jobs_complete(s, "api-worker", &ans, 1, &written, &err));
        g_assert_cmpint(written, ==, 1);
        /* Running. */
        claim_one(s, "stuck-worker", 3600000);
        /* Stalled: its worker vanished, its lease ran out, and no claim came since. */
        claim_one(s, "vanished-worker", 1);
        dq_store_close(s);
    }
    g_usleep(20000);
    g_free(corpus);
}

/* Builds the history once: on SQLite, and on PostgreSQL when this machine has its server. */
static void histories(void) {
    static gboolean done = FALSE;
    if (done)
        return;
    done = TRUE;
    history_dir = dq_test_tmpdir();
    inputs = g_build_filename(history_dir, "inputs", NULL);
    g_assert_cmpint(g_mkdir(inputs, 0755), ==, 0);
    dbs[n_dbs++].loc = g_strdup_printf("sqlite:%s/history.db", history_dir);
    if (server != NULL) {
        dbs[n_dbs++].loc = pgt_new_database(server, "history");
        pg_pages = g_build_filename(history_dir, "pg-pages", NULL);
        g_setenv("DOCQA_PAGES", pg_pages, TRUE);
    }
    play_history();
}

/* The views the migrations created, by name. */
static char **view_names(const char *loc) {
    Rows *r = read_rows(loc, dq_store_location_is_postgres(loc)
                                 ? "SELECT table_name FROM information_schema.views "
                                   "WHERE table_schema = current_schema() ORDER BY 1"
                                 : "SELECT name FROM sqlite_schema WHERE type = 'view' ORDER BY 1");
    char **names = g_new0(char *, r->rows->len + 1);
    for (guint i = 0; i < r->rows->len; i++)
        names[i] = g_strdup(((char **)g_ptr_array_index(r->rows, i))[0]);
    rows_free(r);
    return names;
}

/* The tables the README tells users about, with the order of their rows; and which migrations
 * were applied (when is each database's own: `docqa migrate` copies the data, not that). */
static const char *const tables[][3] = {
    {"documents", "*", "id"},          {"pages", "*", "id"},
    {"questions", "*", "id"},          {"jobs", "*", "id"},
    {"job_errors", "*", "id"},         {"answers", "*", "id"},
    {"answers_superseded", "*", "id"}, {"schema_migrations", "version, name", "version"},
};

/* Every table and view: returns the number of views compared. */
static int compare_everything(const char *a, const char *b, Sameness how) {
    for (guint t = 0; t < G_N_ELEMENTS(tables); t++) {
        char *sql = g_strdup_printf("SELECT %s FROM %s ORDER BY %s", tables[t][1], tables[t][0],
                                    tables[t][2]);
        int n = compare_query(tables[t][0], a, b, sql, how, FALSE);
        g_assert_cmpint(n, >, 0); /* every table holds rows */
        g_free(sql);
    }
    char **va = view_names(a), **vb = view_names(b);
    char *ja = g_strjoinv(" ", va), *jb = g_strjoinv(" ", vb);
    g_assert_cmpstr(ja, ==, jb);
    for (int i = 0; va[i]; i++) {
        char *sql = g_strdup_printf("SELECT * FROM %s", va[i]);
        g_assert_cmpint(compare_query(va[i], a, b, sql, how, TRUE), >, 0);
        g_free(sql);
    }
    /* Progress is read as it comes: in the order the questions were asked. */
    compare_query("v_progress, in its order", a, b, "SELECT * FROM v_progress", how, FALSE);
    int n = (int)g_strv_length(va);
    g_free(ja);
    g_free(jb);
    g_strfreev(va);
    g_strfreev(vb);
    return n;
}

static void skip_without_pg(void) {
    if (server == NULL)
        g_test_skip(server_why_not);
}

static void test_history(void) {
    skip_without_pg();
    if (server == NULL)
        return;
    histories();
    const char *sq = dbs[0].loc, *pg = dbs[1].loc;
    g_assert_cmpint(compare_everything(sq, pg, SAME_HISTORY), >=, 3);
    /* What the history was meant to leave behind, in both. */
    for (int i = 0; i < n_dbs; i++) {
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM documents WHERE path LIKE "
                                        "'%versioned.pdf'"),
                        ==, 2);
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM documents WHERE status = 'failed'"),
                        ==, 1);
        /* gone.pdf: its answers kept, under no current path; hello.pdf's under both of its. */
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM documents WHERE missing_since IS "
                                        "NOT NULL AND path LIKE '%/gone.pdf'"),
                        ==, 1);
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM v_answers WHERE document_path LIKE "
                                        "'%/gone.pdf'"),
                        >, 0);
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM v_current_answers WHERE "
                                        "document_path LIKE '%/gone.pdf'"),
                        ==, 0);
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM v_current_answers WHERE "
                                        "document_path LIKE '%/hello copy.pdf'"),
                        ==,
                        db_int(&dbs[i], "SELECT count(*) FROM v_current_answers WHERE "
                                        "document_path LIKE '%/hello.pdf'"));
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM v_answers WHERE document_path LIKE "
                                        "'%/hello copy.pdf'"),
                        ==, 0);
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM job_errors WHERE kind = "
                                        "'lease_expired'"),
                        ==, 1);
        g_assert_cmpint(db_int(&dbs[i], "SELECT sum(dead) FROM v_progress"), ==, 1);
        g_assert_cmpint(db_int(&dbs[i], "SELECT sum(retrying) FROM v_progress"), ==, 1);
        g_assert_cmpint(db_int(&dbs[i], "SELECT sum(running) FROM v_progress"), ==, 1);
        g_assert_cmpint(db_int(&dbs[i], "SELECT sum(stalled) FROM v_progress"), ==, 1);
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM jobs WHERE state = 'running'"), ==,
                        2);
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM answers WHERE exact = 0"), >, 0);
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM answers WHERE exact IS NULL"), ==, 1);
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM answers_superseded"), >, 0);
        g_assert_cmpint(db_int(&dbs[i], "SELECT count(*) FROM v_progress WHERE percent_done <> "
                                        "round(percent_done)"),
                        >, 0);
    }
    /* What docqa itself prints from them. */
    docqa_each(0, (const char *[]){"export", "--format", "csv", NULL});
    docqa_each(0, (const char *[]){"export", "--format", "jsonl", NULL});
    /* export --where: the same rows on both, and only those of the matching documents (any
     * version; with --current, those listed under a matching current path). */
    const struct {
        const char *args[9];
        const char *kept; /* in every row */
    } where_exports[] = {
        {{"export", "--where", "path LIKE '%versioned%'", NULL}, "versioned"},
        {{"export", "--format", "jsonl", "--where", "path LIKE '%versioned%'", "--where",
          "version > 1", NULL},
         "versioned"},
        {{"export", "--current", "--where", "path LIKE '%hello%'", NULL}, "hello"},
        {{"export", "--format", "jsonl", "--after", "0", "--where", "path LIKE '%versioned%'",
          NULL},
         "versioned"},
        {{"export", "--question", "Qué dice «Grüße» — 日本語？", "--question",
          "It's \"quoted\", isn't it?", "--where", "path LIKE '%versioned%'", NULL},
         "versioned"},
    };
    for (guint k = 0; k < G_N_ELEMENTS(where_exports); k++) {
        docqa_each(0, where_exports[k].args);
        const char *kept = where_exports[k].kept;
        for (int i = 0; i < n_dbs; i++) {
            char *text = NULL;
            GPtrArray *a = g_ptr_array_new();
            g_ptr_array_add(a, "export");
            g_ptr_array_add(a, "--db");
            g_ptr_array_add(a, dbs[i].loc);
            for (int j = 1; where_exports[k].args[j]; j++)
                g_ptr_array_add(a, (char *)where_exports[k].args[j]);
            g_ptr_array_add(a, NULL);
            g_assert_cmpint(docqa(&text, (const char *const *)a->pdata), ==, 0);
            g_ptr_array_free(a, TRUE);
            char **lines = g_strsplit(text, "\n", -1);
            int rows = 0;
            for (char **l = lines; *l && **l; l++) {
                if (g_str_has_prefix(*l, "document_path,"))
                    continue;
                rows++;
                g_assert_nonnull(strstr(*l, kept));
            }
            g_assert_cmpint(rows, >, 0);
            g_strfreev(lines);
            g_free(text);
        }
    }
    /* With --current, a copy's rows under its own path: both copies of hello.pdf. */
    for (int i = 0; i < n_dbs; i++) {
        char *text = NULL;
        g_assert_cmpint(docqa(&text, (const char *[]){"export", "--db", dbs[i].loc, "--current",
                                                      "--where", "path LIKE '%hello copy%'", NULL}),
                        ==, 0);
        gint64 listed = db_int(&dbs[i], "SELECT count(*) FROM v_current_answers WHERE "
                                        "document_path LIKE '%/hello copy.pdf'");
        g_assert_cmpint(listed, >, 0);
        char **lines = g_strsplit(text, "\r\n", -1);
        g_assert_cmpint(g_strv_length(lines), ==, 1 + listed + 1);
        g_strfreev(lines);
        g_free(text);
    }
    char *out[2];
    for (int i = 0; i < 2; i++) {
        g_assert_cmpint(
            docqa(&out[i], (const char *[]){"status", "--db", dbs[i].loc, "--json", NULL}), ==, 0);
        GRegex *re = g_regex_new("\"(answers_per_second|eta_seconds)\" : [^,\\n]*", 0, 0, NULL);
        char *masked = g_regex_replace_literal(re, out[i], -1, 0, "<speed>", 0, NULL);
        g_regex_unref(re);
        g_free(out[i]);
        out[i] = mask_times(masked);
    }
    assert_same_output("status --json", out[0], out[1]);
    g_free(out[0]);
    g_free(out[1]);
}

/* ---- the README's SQL ---- */

/* The shell words of one command starting at *p, as sh would split them ('...', "...",
 * backslash-newline); *p moves past its end of line. Enough for the README's examples. */
static char **shell_words(const char **p) {
    GPtrArray *words = g_ptr_array_new();
    GString *w = NULL;
    const char *s = *p;
    while (*s && *s != '\n') {
        if (*s == ' ' || *s == '\t') {
            if (w)
                g_ptr_array_add(words, g_string_free(w, FALSE));
            w = NULL;
            s++;
            continue;
        }
        if (*s == '#' && w == NULL)
            break;
        if (w == NULL)
            w = g_string_new(NULL);
        if (*s == '\\' && s[1] == '\n') {
            s += 2;
            if (w->len == 0) {
                g_string_free(w, TRUE);
                w = NULL;
            }
        } else if (*s == '\'') {
            const char *end = strchr(s + 1, '\'');
            g_assert_nonnull(end);
            g_string_append_len(w, s + 1, end - s - 1);
            s = end + 1;
        } else if (*s == '"') {
            for (s++; *s && *s != '"'; s++) {
                if (*s == '\\' && strchr("\"\\$`", s[1]))
                    s++;
                g_string_append_c(w, *s);
            }
            g_assert_true(*s == '"');
            s++;
        } else
            g_string_append_c(w, *s++);
    }
    if (w)
        g_ptr_array_add(words, g_string_free(w, FALSE));
    while (*s && *s != '\n')
        s++;
    *p = s;
    g_ptr_array_add(words, NULL);
    return (char **)g_ptr_array_free(words, FALSE);
}

/* Every SQL statement the README gives to sqlite3 or to psql -c, from its code blocks (lines
 * indented by four spaces), the indentation removed. */
static char **readme_sql(void) {
    char *path = g_build_filename(dq_test_source_dir(), "README.md", NULL);
    char *text = dq_test_read_file(path, NULL);
    GString *code = g_string_new(NULL);
    char **l = g_strsplit(text, "\n", -1);
    for (char **it = l; *it; it++)
        g_string_append_printf(code, "%s\n", g_str_has_prefix(*it, "    ") ? *it + 4 : "");
    g_strfreev(l);
    GPtrArray *sql = g_ptr_array_new();
    for (const char *p = code->str; *p;) {
        char **w = shell_words(&p);
        if (*p == '\n')
            p++;
        int n = (int)g_strv_length(w);
        if (n > 0 && strcmp(w[0], "sqlite3") == 0) {
            g_ptr_array_add(sql, g_strdup(w[n - 1]));
        } else if (n > 0 && strcmp(w[0], "psql") == 0) {
            for (int i = 1; i + 1 < n; i++)
                if (strcmp(w[i], "-c") == 0)
                    g_ptr_array_add(sql, g_strdup(w[i + 1]));
        }
        g_strfreev(w);
    }
    g_string_free(code, TRUE);
    g_free(text);
    g_free(path);
    g_ptr_array_add(sql, NULL);
    return (char **)g_ptr_array_free(sql, FALSE);
}

static void test_readme_sql_found(void) {
    char **sql = readme_sql();
    int n = (int)g_strv_length(sql);
    for (int i = 0; i < n; i++)
        g_test_message("README SQL %d: %s", i + 1, sql[i]);
    /* The quick start's, the six of "Querying the answers", psql's v_progress. */
    g_assert_cmpint(n, >=, 8);
    gboolean pivot = FALSE;
    for (int i = 0; i < n; i++)
        pivot |= strstr(sql[i], "max(CASE WHEN question = 'Who signed it?'") != NULL;
    g_assert_true(pivot);
    g_strfreev(sql);
}

/* Each example runs and gives rows on `loc`; with a second database, the same rows there. */
static void run_readme_sql(const char *loc, const char *other, Sameness how) {
    char **sql = readme_sql();
    for (int i = 0; sql[i]; i++) {
        int rows;
        if (other == NULL) {
            Rows *r = read_rows(loc, sql[i]);
            rows = (int)r->rows->len;
            rows_free(r);
        } else {
            rows = compare_query("README example", loc, other, sql[i], how,
                                 strstr(sql[i], "ORDER BY") == NULL);
        }
        if (rows == 0)
            g_error("README's %s gives no rows on a database with answers", sql[i]);
    }
    g_strfreev(sql);
}

static void test_readme_sql_sqlite(void) {
    histories();
    run_readme_sql(dbs[0].loc, NULL, SAME_HISTORY);
}

/* The README's "one row per document, one column per question" reads the files as they are now:
 * no row for a file deleted since, none of an older version's answers beside the newer one's,
 * and the copy of a file gets its row. Read from v_answers (each answer once, under the path it
 * was asked for), it gave gone.pdf a row and versioned.pdf its first version's signer. */
static void test_readme_pivot_current(void) {
    histories();
    char **sql = readme_sql();
    const char *pivot = NULL;
    for (int i = 0; sql[i] && pivot == NULL; i++)
        if (strstr(sql[i], "max(CASE WHEN question = 'Who signed it?'") != NULL)
            pivot = sql[i];
    g_assert_nonnull(pivot);
    for (int i = 0; i < n_dbs; i++) {
        char *not_current = g_strdup_printf(
            "SELECT count(*) FROM (%s) x WHERE x.document_path NOT IN (SELECT path FROM "
            "documents_current)",
            pivot);
        g_assert_cmpint(db_int(&dbs[i], not_current), ==, 0);
        const char *columns[][2] = {{"total", "What is the invoice total?"},
                                    {"signed_by", "Who signed it?"}};
        for (size_t c = 0; c < G_N_ELEMENTS(columns); c++) {
            char *stale = g_strdup_printf(
                "SELECT count(*) FROM (%s) x WHERE x.%s IS NOT NULL AND NOT EXISTS (SELECT 1 "
                "FROM v_current_answers a WHERE a.document_path = x.document_path AND a.page = 1 "
                "AND a.question = '%s' AND a.answer = x.%s)",
                pivot, columns[c][0], columns[c][1], columns[c][0]);
            g_assert_cmpint(db_int(&dbs[i], stale), ==, 0);
            g_free(stale);
        }
        char *copy = g_strdup_printf(
            "SELECT count(*) FROM (%s) x WHERE x.document_path LIKE '%%/hello copy.pdf'", pivot);
        g_assert_cmpint(db_int(&dbs[i], copy), ==, 1);
        g_free(copy);
        g_free(not_current);
    }
    g_strfreev(sql);
}

static void test_readme_sql_postgres(void) {
    skip_without_pg();
    if (server == NULL)
        return;
    histories();
    run_readme_sql(dbs[0].loc, dbs[1].loc, SAME_HISTORY);
}

/* ---- docqa migrate, there and back ---- */

static void test_migrate_round_trip(void) {
    skip_without_pg();
    if (server == NULL)
        return;
    histories();
    const char *src = dbs[0].loc;
    char *pg = pgt_new_database(server, "copy");
    char *back = g_strdup_printf("sqlite:%s/back.db", history_dir);
    char *out = NULL;
    g_assert_cmpint(docqa(&out, (const char *[]){"migrate", "--from", src, "--to", pg, NULL}), ==,
                    0);
    g_free(out);
    g_assert_cmpint(docqa(&out, (const char *[]){"migrate", "--from", pg, "--to", back, NULL}), ==,
                    0);
    g_free(out);
    /* The same data: PostgreSQL's copy reads as the original, and what came back is it. */
    compare_everything(src, pg, SAME_DATA);
    compare_everything(src, back, SAME_DATA);
    run_readme_sql(src, pg, SAME_DATA);
    /* Floating-point values came back to the bit, and as SQLite's REAL. */
    compare_query("answers' times", src, back,
                  "SELECT id, ms_image, ms_vision, ms_prefill, ms_decode, ms_total, "
                  "typeof(ms_total) FROM answers ORDER BY id",
                  SAME_DATA, FALSE);
    g_free(pg);
    g_free(back);
}

/* ---- a database made by an older docqa ---- */

/* Each object of the schema as the engine describes it: what a migrated database must share
 * with a fresh one. */
static const char *SCHEMA_SQLITE =
    "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name";
static const char *SCHEMA_PG =
    "SELECT 'view', viewname, definition FROM pg_views WHERE schemaname = current_schema() "
    "UNION ALL SELECT 'column', table_name || '.' || column_name, data_type || ' ' || "
    "is_nullable || ' ' || coalesce(column_default, '') FROM information_schema.columns "
    "WHERE table_schema = current_schema() "
    "UNION ALL SELECT 'index', indexname, indexdef FROM pg_indexes "
    "WHERE schemaname = current_schema() ORDER BY 1, 2";

/* A database at schema 6, opened by this docqa: upgraded to what a fresh one is, v_progress's
 * order included. */
static void test_upgraded_equals_fresh(void) {
    histories();
    for (int i = 0; i < n_dbs; i++) {
        gboolean pg = dq_store_location_is_postgres(dbs[i].loc);
        char *old = pg ? pgt_new_database(server, "from_schema_6")
                       : g_strdup_printf("sqlite:%s/from-schema-6.db", history_dir);
        GError *err = NULL;
        DqStore *s = dq_store_open_at(old, 6, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(dq_store_schema_version(s), ==, 6);
        dq_store_close(s);
        s = dq_store_open(old, &err);
        dq_assert_no_error(err);
        DqStore *fresh = dq_store_open(dbs[i].loc, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(dq_store_schema_version(s), ==, dq_store_schema_version(fresh));
        g_assert_cmpint(dq_store_schema_version(s), >, 6);
        dq_store_close(fresh);
        dq_store_close(s);
        compare_query("schema", dbs[i].loc, old, pg ? SCHEMA_PG : SCHEMA_SQLITE, SAME_DATA, FALSE);
        g_free(old);
    }
    if (server == NULL)
        g_test_message("PostgreSQL case skipped: %s", server_why_not);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    server = pgt_start(&server_why_not);
    if (server == NULL)
        g_test_message("PostgreSQL cases skipped: %s", server_why_not);
    g_test_add_func("/store/parity/readme-sql-found", test_readme_sql_found);
    g_test_add_func("/store/parity/history", test_history);
    g_test_add_func("/store/parity/readme-sql/sqlite", test_readme_sql_sqlite);
    g_test_add_func("/store/parity/readme-sql/postgres", test_readme_sql_postgres);
    g_test_add_func("/store/parity/readme-pivot-current", test_readme_pivot_current);
    g_test_add_func("/store/parity/migrate-round-trip", test_migrate_round_trip);
    g_test_add_func("/store/parity/upgraded-equals-fresh", test_upgraded_equals_fresh);
    int rc = g_test_run();
    pgt_stop(server);
    g_free(server_why_not);
    return rc;
}
