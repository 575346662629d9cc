/* The whole pipeline with the tiny random-weight SmolVLM from ../shared/models: generated PDFs and
 * a TIFF -> docqa ingest -> docqa ask (two questions) -> docqa run (2 workers, batches of 2) ->
 * every page has both answers, and each equals what `docqa generate` prints for that page image
 * and prompt on its own (one request, no queue, no batch-mates). The tiny model's answers are
 * meaningless text, but they are deterministic, which is what this checks. */
#include "jobs_testlib.h"
#include "queue.h"
#include "resources.h"
#include "smolvlm.h"
#include "testutil.h"

#include <cairo-pdf.h>
#include <cairo.h>
#include <errno.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/wait.h>
#include <tiffio.h>
#include <unistd.h>

#define MAX_NEW_TOKENS 6
#define N_RES          2

/* Runs docqa with args; returns its exit status and (when out is not NULL) its stdout. */
static int docqa_out(const char *const *args, char **out) {
    char *o = NULL, *errout = NULL;
    int rc = dq_test_docqa_in(NULL, NULL, args, &o, &errout);
    g_test_message("%s %s: %s%s", args[0], rc < 0 ? "(killed)" : "", o, errout);
    if (out)
        *out = o;
    else
        g_free(o);
    g_free(errout);
    return rc;
}

static int docqa(const char *const *args) {
    return docqa_out(args, NULL);
}

static void write_pdf(const char *path, const char *title, int pages) {
    cairo_surface_t *s = cairo_pdf_surface_create(path, 420, 595);
    cairo_t *cr = cairo_create(s);
    for (int p = 0; p < pages; p++) {
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_paint(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_select_font_face(cr, "sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
        cairo_set_font_size(cr, 28);
        cairo_move_to(cr, 40, 80);
        cairo_show_text(cr, title);
        cairo_set_font_size(cr, 14);
        char line[64];
        g_snprintf(line, sizeof(line), "Page %d, dated 2024-03-%02d", p + 1, p + 1);
        cairo_move_to(cr, 40, 130);
        cairo_show_text(cr, line);
        cairo_rectangle(cr, 40, 160 + 30 * p, 200, 40);
        cairo_fill(cr);
        cairo_show_page(cr);
    }
    cairo_destroy(cr);
    cairo_surface_finish(s);
    g_assert_cmpint(cairo_surface_status(s), ==, CAIRO_STATUS_SUCCESS);
    cairo_surface_destroy(s);
}

static void write_tiff(const char *path) {
    const int w = 300, h = 420;
    TIFF *t = TIFFOpen(path, "w");
    g_assert_nonnull(t);
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, w);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, h);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 1);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, 16);
    guint8 *row = g_malloc(w);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++)
            row[x] = (guint8)((x / 20 + y / 30) % 2 ? 240 : (x * 7 + y * 3) % 200);
        g_assert_cmpint(TIFFWriteScanline(t, row, (uint32_t)y, 0), ==, 1);
    }
    g_free(row);
    TIFFClose(t);
}

static void test_ingest_ask_run(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared/models (the tiny SmolVLM snapshots) is absent");
        return;
    }
    char *model = g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL);
    char *weights = g_build_filename(model, "model.safetensors", NULL);
    if (!g_file_test(weights, G_FILE_TEST_EXISTS))
        g_error("%s missing: ../shared/models is incomplete", weights);
    char *dir = dq_test_tmpdir();
    char *docs = g_build_filename(dir, "archive", NULL);
    g_assert_cmpint(g_mkdir_with_parents(docs, 0755), ==, 0);
    char *pdf1 = g_build_filename(docs, "report.pdf", NULL);
    char *pdf2 = g_build_filename(docs, "memo.pdf", NULL);
    char *tif = g_build_filename(docs, "scan.tif", NULL);
    write_pdf(pdf1, "Annual Report", 2);
    write_pdf(pdf2, "Memo", 1);
    write_tiff(tif);
    char *db = g_build_filename(dir, "docqa.db", NULL);

    const char *ingest[] = {"ingest",  "--db", db,   "--model", model,
                            "--n-res", "2",    "-q", docs,      NULL};
    g_assert_cmpint(docqa(ingest), ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM pages WHERE status = 'ok'"), ==, 4);
    const char *ask[] = {"ask",
                         "--db",
                         db,
                         "--model",
                         model,
                         "--max-new-tokens",
                         "6",
                         "What is the title?",
                         "What is the date?",
                         NULL};
    g_assert_cmpint(docqa(ask), ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 8);
    const char *run[] = {"run", "--db",    db,  "--model",       model, "--workers",
                         "2",   "--batch", "2", "--until-empty", "-q",  NULL};
    g_assert_cmpint(docqa(run), ==, 0);

    /* Every page has both answers. */
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM pages p WHERE (SELECT count(DISTINCT "
                                     "question) FROM v_answers a WHERE a.page_id = p.id) = 2"),
                    ==, 4);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM answers WHERE generated_tokens BETWEEN "
                                     "1 AND 6 AND prompt_tokens > 320 AND ms_vision > 0"),
                    ==, 8);

    /* Each answer equals what `docqa generate` prints for that page and prompt alone. */
    GError *err = NULL;
    GBytes *tmpl = dq_resource_get("configs/prompts/docvqa.txt", &err);
    dq_assert_no_error(err);
    sqlite3 *h = NULL;
    g_assert_cmpint(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(h,
                                       "SELECT p.image_sha256, v.question, v.answer FROM "
                                       "v_answers v JOIN pages p ON p.id = v.page_id",
                                       -1, &st, NULL),
                    ==, SQLITE_OK);
    int n = 0;
    char max_new[16], n_res[16];
    g_snprintf(max_new, sizeof(max_new), "%d", MAX_NEW_TOKENS);
    g_snprintf(n_res, sizeof(n_res), "%d", N_RES);
    while (sqlite3_step(st) == SQLITE_ROW) {
        char *image = queue_page_image_path(db, (const char *)sqlite3_column_text(st, 0));
        char **parts = g_strsplit(g_bytes_get_data(tmpl, NULL), "{question}", -1);
        char *prompt = g_strchomp(g_strjoinv((const char *)sqlite3_column_text(st, 1), parts));
        const char *gen[] = {"generate", "--model",          model,   "-i",      image, "-p",
                             prompt,     "--max-new-tokens", max_new, "--n-res", n_res, NULL};
        char *out = NULL;
        g_assert_cmpint(docqa_out(gen, &out), ==, 0);
        g_assert_cmpstr((const char *)sqlite3_column_text(st, 2), ==, g_strchomp(out));
        g_free(out);
        g_free(prompt);
        g_strfreev(parts);
        g_free(image);
        n++;
    }
    g_assert_cmpint(n, ==, 8);
    sqlite3_finalize(st);
    sqlite3_close(h);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers WHERE device = 'cpu' AND "
                                     "weights = 'stored' AND exact = 1"),
                    ==, 8);

    /* The same questions with other settings, answered with int8 weights: recorded as such. */
    const char *ask5[] = {
        "ask", "--db", db, "--model", model, "--max-new-tokens", "5", "What is the title?", NULL};
    g_assert_cmpint(docqa(ask5), ==, 0);
    const char *run8[] = {"run",  "--db",          db,   "--model", model, "--weights",
                          "int8", "--until-empty", "-q", NULL};
    g_assert_cmpint(docqa(run8), ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers WHERE device = 'cpu' AND "
                                     "weights = 'int8' AND exact = 0"),
                    ==, 4);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers"), ==, 12);
    const char *export[] = {"export", "--db", db, "--format", "jsonl", NULL};
    char *jsonl = NULL;
    g_assert_cmpint(docqa_out(export, &jsonl), ==, 0);
    int n_exact = 0, n_int8 = 0;
    for (const char *l = jsonl; (l = strstr(l, "\"device\":\"cpu\"")) != NULL; l++) {
        n_exact += g_str_has_prefix(l, "\"device\":\"cpu\",\"weights\":\"stored\",\"exact\":true,");
        n_int8 += g_str_has_prefix(l, "\"device\":\"cpu\",\"weights\":\"int8\",\"exact\":false,");
    }
    g_assert_cmpint(n_exact, ==, 8);
    g_assert_cmpint(n_int8, ==, 4);
    g_free(jsonl);
    const char *status[] = {"status", "--db", db, NULL};
    char *said = NULL;
    g_assert_cmpint(docqa_out(status, &said), ==, 0);
    g_assert_nonnull(strstr(said, "answers: 8 exact (cpu, weights as stored), 4 approximate "
                                  "(cpu, weights int8)\n"));
    g_free(said);
    /* Two workers on two devices (--device a list): both are the CPU's exact numerics here. */
    const char *ask4[] = {
        "ask", "--db", db, "--model", model, "--max-new-tokens", "4", "What is the title?", NULL};
    g_assert_cmpint(docqa(ask4), ==, 0);
    const char *run2[] = {"run",         "--db",          db,   "--model", model, "--device",
                          "cpu,cpu-ref", "--until-empty", "-q", NULL};
    g_assert_cmpint(docqa(run2), ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers WHERE device IN ('cpu', "
                                     "'cpu-ref') AND weights = 'stored' AND exact = 1"),
                    ==, 12);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state <> 'done'"), ==, 0);
    g_bytes_unref(tmpl);
    g_free(db);
    g_free(pdf1);
    g_free(pdf2);
    g_free(tif);
    g_free(docs);
    g_free(dir);
    g_free(weights);
    g_free(model);
}

/* The page file of a job, by document file name and page number. */
static char *page_file(const char *db, const char *doc_name, int page) {
    sqlite3 *h = NULL;
    g_assert_cmpint(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(h,
                                       "SELECT p.image_sha256 FROM pages p JOIN documents d ON "
                                       "d.id = p.document_id WHERE d.path LIKE '%/' || ?1 AND "
                                       "p.page_number = ?2",
                                       -1, &st, NULL),
                    ==, SQLITE_OK);
    sqlite3_bind_text(st, 1, doc_name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, page);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    char *path = queue_page_image_path(db, (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(h);
    return path;
}

/* Page files replaced or damaged after ingest (another page's PNG, a truncated one): the worker
 * does not answer them as the pages, their jobs fail at once as page_image failures saying what
 * to do; ingest --verify renders the pages again, and requeue --failed gets them answered. */
static void test_damaged_pages_repaired(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared/models (the tiny SmolVLM snapshots) is absent");
        return;
    }
    char *model = g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL);
    char *dir = dq_test_tmpdir();
    char *docs = g_build_filename(dir, "archive", NULL);
    g_assert_cmpint(g_mkdir_with_parents(docs, 0755), ==, 0);
    char *pdf1 = g_build_filename(docs, "report.pdf", NULL);
    char *pdf2 = g_build_filename(docs, "memo.pdf", NULL);
    write_pdf(pdf1, "Annual Report", 2);
    write_pdf(pdf2, "Memo", 1);
    char *db = g_build_filename(dir, "docqa.db", NULL);
    const char *ingest[] = {"ingest",  "--db", db,   "--model", model,
                            "--n-res", "2",    "-q", docs,      NULL};
    g_assert_cmpint(docqa(ingest), ==, 0);
    const char *ask[] = {
        "ask", "--db", db, "--model", model, "--max-new-tokens", "6", "What is the title?", NULL};
    g_assert_cmpint(docqa(ask), ==, 0);
    char *p1 = page_file(db, "report.pdf", 1), *p2 = page_file(db, "report.pdf", 2),
         *memo = page_file(db, "memo.pdf", 1);
    char *good1 = NULL, *good2 = NULL, *other = NULL;
    gsize len1 = 0, len2 = 0, len_other = 0;
    g_assert_true(g_file_get_contents(p1, &good1, &len1, NULL));
    g_assert_true(g_file_get_contents(p2, &good2, &len2, NULL));
    g_assert_true(g_file_get_contents(memo, &other, &len_other, NULL));
    g_assert_true(g_file_set_contents(p1, other, (gssize)len_other, NULL));
    g_assert_true(g_file_set_contents(p2, good2, (gssize)(len2 / 2), NULL));

    const char *run[] = {"run", "--db", db, "--model", model, "--until-empty", "-q", NULL};
    char *out = NULL, *said = NULL;
    g_assert_cmpint(dq_test_docqa_in(NULL, NULL, run, &out, &said), ==, 1);
    g_test_message("run: %s%s", out, said);
    /* The run says why, after its summary: one cause, both pages, an example naming its file. */
    g_assert_true(g_str_has_prefix(out, "run: 1 answered, 2 failed"));
    char *why = g_strdup_printf("docqa: run: why 2 jobs failed:\n  page_image, 2 jobs: %s: the "
                                "file does not match its page (its SHA-256 is not the one it is "
                                "stored under: replaced or damaged since ingest); run `docqa "
                                "ingest --verify` on the documents to render it again, then "
                                "`docqa requeue --failed`\n",
                                g_strcmp0(p1, p2) < 0 ? p1 : p2);
    g_assert_cmpstr(said, ==, why);
    g_free(why);
    g_free(out);
    g_free(said);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 1);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'failed' AND "
                                     "attempts = 1 AND last_error LIKE 'page_image: %does not "
                                     "match its page%ingest --verify%'"),
                    ==, 2);
    /* A plain ingest sees the files there and leaves them; --verify renders the pages again. */
    g_assert_cmpint(docqa(ingest), ==, 0);
    char *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(p1, &bytes, &len, NULL));
    g_assert_true(len == len_other && memcmp(bytes, other, len) == 0);
    g_free(bytes);
    const char *verify[] = {"ingest", "--db", db,   "--model",  model, "--n-res",
                            "2",      "-q",   docs, "--verify", NULL};
    g_assert_cmpint(docqa(verify), ==, 0);
    g_assert_true(g_file_get_contents(p1, &bytes, &len, NULL));
    g_assert_true(len == len1 && memcmp(bytes, good1, len) == 0);
    g_free(bytes);
    g_assert_true(g_file_get_contents(p2, &bytes, &len, NULL));
    g_assert_true(len == len2 && memcmp(bytes, good2, len) == 0);
    g_free(bytes);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM pages"), ==, 3);

    const char *requeue[] = {"requeue", "--db", db, "--failed", NULL};
    g_assert_cmpint(docqa(requeue), ==, 0);
    g_assert_cmpint(docqa(run), ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 3);
    g_free(good1);
    g_free(good2);
    g_free(other);
    g_free(p1);
    g_free(p2);
    g_free(memo);
    g_free(db);
    g_free(pdf1);
    g_free(pdf2);
    g_free(docs);
    g_free(dir);
    g_free(model);
}

#define ELSEWHERE "elsewhere:7:00000000:00000000000000e1"

/* Another machine's worker of the same model takes the first job before the run; the page of
 * the second is damaged, which the run then fails. The first job's id. */
static gint64 claim_one_elsewhere(const char *db) {
    GError *err = NULL;
    DqStore *s = dq_store_open(db, &err);
    dq_assert_no_error(err);
    char *model_id = NULL, *sha = NULL;
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_open(db, &h), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_prepare_v2(h,
                                       "SELECT j.model_id, p.image_sha256 FROM jobs j JOIN pages "
                                       "p ON p.id = j.page_id ORDER BY j.id LIMIT 1 OFFSET 1",
                                       -1, &st, NULL),
                    ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    model_id = g_strdup((const char *)sqlite3_column_text(st, 0));
    sha = g_strdup((const char *)sqlite3_column_text(st, 1));
    sqlite3_finalize(st);
    sqlite3_close(h);
    char *page = queue_page_image_path(db, sha);
    g_assert_cmpint(truncate(page, 100), ==, 0);
    GPtrArray *c =
        store_jobs_claim(s, ELSEWHERE, model_id, 1, g_get_real_time() / 1000, 600000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(c->len, ==, 1);
    gint64 id = ((DqClaimedJob *)g_ptr_array_index(c, 0))->job_id;
    g_ptr_array_free(c, TRUE);
    g_free(page);
    g_free(sha);
    g_free(model_id);
    store_jobs_finalize(s);
    dq_store_close(s);
    return id;
}

typedef struct {
    const char *db;
    gint64 job_id;
} Elsewhere;

/* ... and fails it for good while the run is held after its workers ended. */
static void fail_elsewhere(void *user) {
    const Elsewhere *e = user;
    GError *err = NULL;
    DqStore *s = dq_store_open(e->db, &err);
    dq_assert_no_error(err);
    DqJobState state = DQ_JOB_N_STATES;
    g_assert_true(store_jobs_fail(s, ELSEWHERE, e->job_id, "model", "out of memory", FALSE,
                                  g_get_real_time() / 1000, 5000, &state, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(state, ==, DQ_JOB_FAILED);
    store_jobs_finalize(s);
    dq_store_close(s);
}

/* Two runs of one model at once (the other on another machine): each failed a job during this
 * one; this run says why its own failed, not the other's, recorded after it started. */
static void test_run_says_its_own_failures(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *docs = g_build_filename(dir, "archive", NULL);
    g_assert_cmpint(g_mkdir_with_parents(docs, 0755), ==, 0);
    char *pdf = g_build_filename(docs, "report.pdf", NULL);
    write_pdf(pdf, "Annual Report", 3);
    char *db = g_build_filename(dir, "docqa.db", NULL);
    const char *ingest[] = {"ingest",  "--db", db,   "--model", model,
                            "--n-res", "2",    "-q", docs,      NULL};
    g_assert_cmpint(docqa(ingest), ==, 0);
    const char *ask[] = {
        "ask", "--db", db, "--model", model, "--max-new-tokens", "6", "What is the title?", NULL};
    g_assert_cmpint(docqa(ask), ==, 0);
    Elsewhere e = {.db = db, .job_id = claim_one_elsewhere(db)};
    char *docqa_path = dq_test_docqa_path();
    /* --max-jobs: the first job, held elsewhere, is not waited for */
    const char *run[] = {docqa_path, "run",        "--db", db,   "--model",
                         model,      "--max-jobs", "2",    "-q", NULL};
    char *out = NULL, *said = NULL;
    int status =
        dq_test_run_paused(run, NULL, "run:workers_ended", fail_elsewhere, &e, &out, &said);
    g_test_message("run: %s%s", out, said);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 1);
    g_assert_true(g_str_has_prefix(out, "run: 1 answered, 1 failed"));
    g_assert_nonnull(strstr(said, "docqa: run: why 1 job failed:\n  page_image, 1 job: "));
    g_assert_null(strstr(said, "out of memory"));
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'failed'"), ==, 2);
    g_free(out);
    g_free(said);
    g_free(docqa_path);
    g_free(db);
    g_free(pdf);
    g_free(docs);
    g_free(dir);
    g_free(model);
}

/* Runs docqa with args; returns its exit status and its stderr. */
static int docqa_err(const char *const *args, char **errout) {
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, g_build_filename(DOCQA_BINARY_DIR, "cli", "docqa", NULL));
    for (const char *const *a = args; *a; a++)
        g_ptr_array_add(argv, g_strdup(*a));
    g_ptr_array_add(argv, NULL);
    int status = 0;
    GError *err = NULL;
    g_assert_true(g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL,
                               NULL, NULL, errout, &status, &err));
    dq_assert_no_error(err);
    g_ptr_array_free(argv, TRUE);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Whether strace can trace here (ptrace may be refused in a container). */
static gboolean strace_works(void) {
    const char *probe[] = {"strace", "-qq", "-o", "/dev/null", "true", NULL};
    int status = -1;
    return g_spawn_sync(NULL, (char **)probe, NULL,
                        G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL |
                            G_SPAWN_STDERR_TO_DEV_NULL,
                        NULL, NULL, NULL, NULL, &status, NULL) &&
           g_spawn_check_wait_status(status, NULL);
}

/* docqa with args under strace, the calls `syscall` makes on `path` failed as `inject` says
 * ("EIO:when=1": the first; "EIO": every one): its exit status, its stderr in *errout. By path,
 * so no count moves with the code; LeakSanitizer cannot run under ptrace. */
static int docqa_injected(const char *path, const char *syscall, const char *inject,
                          const char *const *args, char **errout) {
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    const char *fixed[] = {"strace", "-f", "-qq", "-o", "/dev/null", "-e"};
    for (size_t i = 0; i < G_N_ELEMENTS(fixed); i++)
        g_ptr_array_add(argv, g_strdup(fixed[i]));
    g_ptr_array_add(argv, g_strconcat("trace=", syscall, NULL));
    g_ptr_array_add(argv, g_strdup("-P"));
    g_ptr_array_add(argv, g_strdup(path));
    g_ptr_array_add(argv, g_strdup("-e"));
    g_ptr_array_add(argv, g_strconcat("inject=", syscall, ":error=", inject, NULL));
    g_ptr_array_add(argv, g_build_filename(DOCQA_BINARY_DIR, "cli", "docqa", NULL));
    for (const char *const *a = args; *a; a++)
        g_ptr_array_add(argv, g_strdup(*a));
    g_ptr_array_add(argv, NULL);
    char **env = g_get_environ();
    const char *asan = g_environ_getenv(env, "ASAN_OPTIONS");
    char *off = g_strconcat(asan ? asan : "", asan ? ":" : "", "detect_leaks=0", NULL);
    env = g_environ_setenv(env, "ASAN_OPTIONS", off, TRUE);
    g_free(off);
    int status = 0;
    GError *err = NULL;
    g_assert_true(g_spawn_sync(NULL, (char **)argv->pdata, env,
                               G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL,
                               errout, &status, &err));
    dq_assert_no_error(err);
    g_strfreev(env);
    g_ptr_array_free(argv, TRUE);
    g_test_message("%s under failed %s: %s", args[0], syscall, *errout);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A page file the system could not read (EIO: a flaky disk or share, injected by strace on the
 * page's path) is not a bad page: its job is retried with its attempts and backoff, and the next
 * attempt, which reads it, answers it. EIO at every read: the job ends dead once its attempts are
 * spent, its error naming the file and the errno in words; `requeue --dead` answers it once the
 * disk is mended. A stale handle (ESTALE) where the worker first looks for the file is retried
 * alike. (A damaged page still fails at once: damaged-pages-repaired.) */
static void test_page_read_retried(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared/models (the tiny SmolVLM snapshots) is absent");
        return;
    }
    if (!strace_works()) {
        g_test_skip("strace cannot trace here: the failed reads are not injected");
        return;
    }
    char *model = g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL);
    char *dir = dq_test_tmpdir();
    char *pdf = g_build_filename(dir, "report.pdf", NULL);
    write_pdf(pdf, "Annual Report", 1);
    char *db = g_build_filename(dir, "docqa.db", NULL);
    const char *ingest[] = {"ingest",  "--db", db,   "--model", model,
                            "--n-res", "1",    "-q", pdf,       NULL};
    g_assert_cmpint(docqa(ingest), ==, 0);
    const char *ask[] = {"ask", "--db",
                         db,    "--model",
                         model, "--max-new-tokens",
                         "2",   "--max-attempts",
                         "2",   "What is the title?",
                         NULL};
    g_assert_cmpint(docqa(ask), ==, 0);
    char *page = page_file(db, "report.pdf", 1);
    char *eio = g_strdup_printf("%s: cannot read image: %s", page, g_strerror(EIO));
    const char *run[] = {"run", "--db", db, "--model", model, "--until-empty", "-q", NULL};

    char *err = NULL;
    /* the retry after --retry-delay, not the default 5 s */
    const char *run_soon[] = {"run",           "--db",          db,  "--model", model,
                              "--until-empty", "--retry-delay", "1", "-q",      NULL};
    g_assert_cmpint(docqa_injected(page, "read", "EIO:when=1", run_soon, &err), ==, 0);
    g_free(err);
    gint64 waited_ms = jt_query_int(
        db, "SELECT j.not_before_ms - CAST(round((julianday(e.at) - 2440587.5) * 86400000) AS "
            "INTEGER) FROM jobs j JOIN job_errors e ON e.job_id = j.id");
    g_test_message("the retry was due %" G_GINT64_FORMAT " ms after the failure", waited_ms);
    g_assert_cmpint(waited_ms, >, 500);
    g_assert_cmpint(waited_ms, <, 2500);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done' AND "
                                     "attempts = 2"),
                    ==, 1);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers"), ==, 1);
    char *sql = g_strdup_printf("SELECT count(*) FROM job_errors WHERE kind = 'page_read' AND "
                                "message = '%s'",
                                eio);
    g_assert_cmpint(jt_query_int(db, sql), ==, 1);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM job_errors"), ==, 1);

    const char *ask2[] = {"ask", "--db",           db,  "--model",        model, "--max-new-tokens",
                          "2",   "--max-attempts", "2", "Who signed it?", NULL};
    g_assert_cmpint(docqa(ask2), ==, 0);
    err = NULL;
    g_assert_cmpint(docqa_injected(page, "read", "EIO", run, &err), ==, 1);
    char *why = g_strdup_printf("docqa: run: why 1 job failed:\n  page_read, 1 job: %s\n", eio);
    g_assert_cmpstr(err, ==, why);
    g_free(why);
    g_free(err);
    g_assert_cmpint(jt_query_int(db, sql), ==, 3);
    char *dead = g_strdup_printf("SELECT count(*) FROM jobs WHERE state = 'dead' AND attempts = 2 "
                                 "AND last_error = 'page_read: %s'",
                                 eio);
    g_assert_cmpint(jt_query_int(db, dead), ==, 1);
    const char *requeue[] = {"requeue", "--db", db, "--dead", NULL};
    g_assert_cmpint(docqa(requeue), ==, 0);
    g_assert_cmpint(docqa(run), ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 2);

    /* A stale handle on a network share shows first where the worker looks for the file: not
     * a missing page either. */
    const char *ask3[] = {"ask", "--db",           db,  "--model", model, "--max-new-tokens",
                          "2",   "--max-attempts", "2", "When?",   NULL};
    g_assert_cmpint(docqa(ask3), ==, 0);
    err = NULL;
    g_assert_cmpint(docqa_injected(page, "newfstatat,statx", "ESTALE:when=1", run, &err), ==, 0);
    g_free(err);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 3);
    char *stale = g_strdup_printf("SELECT count(*) FROM job_errors WHERE kind = 'page_read' AND "
                                  "message LIKE '%s: cannot stat image: %s (%%report.pdf, page 1)'",
                                  page, g_strerror(ESTALE));
    g_assert_cmpint(jt_query_int(db, stale), ==, 1);
    g_free(stale);
    g_free(dead);
    g_free(sql);
    g_free(eio);
    g_free(page);
    g_free(db);
    g_free(pdf);
    g_free(dir);
    g_free(model);
}

/* The fields of one CSV line of docqa export (no field here holds a comma or a quote). */
static char **csv_fields(const char *line) {
    g_assert_null(strchr(line, '"'));
    return g_strsplit(line, ",", -1);
}

/* How each answer was made, as users read it: one page and question asked at two render
 * settings (ingest --n-res 2 and 3, ask --n-res 2 and 3) and two --max-new-tokens are four rows
 * that export tells apart by n_res, longest_edge and max_new_tokens, each with the fingerprint of
 * the snapshot that answered. The same snapshot under another folder name (--model-id keeping the
 * id) answers silently; another snapshot under the same id (its config.json changed) gets one
 * warning that names both fingerprints and counts the answers of the other, its answers their own
 * fingerprint, and status says the model id has answers from two snapshots. */
static void test_answer_provenance(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared/models (the tiny SmolVLM snapshots) is absent");
        return;
    }
    char *model = g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL);
    char *dir = dq_test_tmpdir();
    char *docs = g_build_filename(dir, "archive", NULL);
    g_assert_cmpint(g_mkdir_with_parents(docs, 0755), ==, 0);
    char *pdf = g_build_filename(docs, "memo.pdf", NULL);
    write_pdf(pdf, "Memo", 1);
    char *db = g_build_filename(dir, "docqa.db", NULL);
    for (int n = 2; n <= 3; n++) {
        char n_res[8];
        g_snprintf(n_res, sizeof n_res, "%d", n);
        const char *ingest[] = {"ingest",  "--db", db,   "--model", model,
                                "--n-res", n_res,  "-q", docs,      NULL};
        g_assert_cmpint(docqa(ingest), ==, 0);
    }
    /* ask takes one rendering of a document: each is asked for by its --n-res. */
    for (int t = 3; t <= 4; t++)
        for (int n = 2; n <= 3; n++) {
            char max_new[8], n_res[8];
            g_snprintf(max_new, sizeof max_new, "%d", t);
            g_snprintf(n_res, sizeof n_res, "%d", n);
            const char *ask[] = {"ask",   "--db",
                                 db,      "--model",
                                 model,   "--n-res",
                                 n_res,   "--max-new-tokens",
                                 max_new, "What is the title?",
                                 NULL};
            g_assert_cmpint(docqa(ask), ==, 0);
        }
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 4);
    const char *run[] = {"run", "--db", db, "--model", model, "--until-empty", "-q", NULL};
    char *said = NULL;
    g_assert_cmpint(docqa_err(run, &said), ==, 0);
    g_assert_null(strstr(said, "warning"));
    g_free(said);

    const char *export[] = {"export", "--db", db, NULL};
    char *csv = NULL;
    g_assert_cmpint(docqa_out(export, &csv), ==, 0);
    char **lines = g_strsplit(csv, "\r\n", -1);
    g_assert_cmpint(g_strv_length(lines), ==, 4 + 2); /* header, rows, the empty tail */
    char **head = csv_fields(lines[0]);
    int ncol = (int)g_strv_length(head);
    int col_n_res = -1, col_edge = -1, col_max_new = -1, col_fp = -1;
    for (int c = 0; c < ncol; c++) {
        col_n_res = strcmp(head[c], "n_res") == 0 ? c : col_n_res;
        col_edge = strcmp(head[c], "longest_edge") == 0 ? c : col_edge;
        col_max_new = strcmp(head[c], "max_new_tokens") == 0 ? c : col_max_new;
        col_fp = strcmp(head[c], "model_fingerprint") == 0 ? c : col_fp;
    }
    g_assert_cmpint(col_n_res, >, 0);
    g_assert_cmpint(col_fp, ==, 18); /* where it was first written: columns are only appended */
    GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    char *fp = NULL;
    for (int r = 1; r <= 4; r++) {
        char **f = csv_fields(lines[r]);
        g_assert_cmpint((int)g_strv_length(f), ==, ncol);
        /* the same path, page, question and model: only the settings tell the rows apart */
        g_assert_true(g_str_has_suffix(f[0], "/memo.pdf"));
        g_assert_cmpstr(f[1], ==, "1");
        g_assert_cmpstr(f[2], ==, "What is the title?");
        g_assert_cmpstr(f[4], ==, "tiny-smolvlm-b512");
        int n = atoi(f[col_n_res]);
        g_assert_true(n == 2 || n == 3);
        g_assert_cmpint(atoi(f[col_edge]), ==, n * 512);
        g_hash_table_add(seen, g_strdup_printf("%s/%s", f[col_n_res], f[col_max_new]));
        g_assert_true(g_regex_match_simple("^[0-9a-f]{64}$", f[col_fp], 0, 0));
        if (fp == NULL)
            fp = g_strdup(f[col_fp]);
        g_assert_cmpstr(f[col_fp], ==, fp);
        g_strfreev(f);
    }
    g_assert_cmpint(g_hash_table_size(seen), ==, 4);
    g_assert_true(g_hash_table_contains(seen, "2/3") && g_hash_table_contains(seen, "3/4"));
    g_hash_table_destroy(seen);
    g_strfreev(head);
    g_strfreev(lines);
    g_free(csv);

    /* The same snapshot in a folder of another name: the same fingerprint, nothing to say. */
    char *renamed = g_build_filename(dir, "renamed-copy", NULL);
    g_assert_cmpint(symlink(model, renamed), ==, 0);
    for (int n = 2; n <= 3; n++) { /* two jobs: one for each run below */
        char n_res[8];
        g_snprintf(n_res, sizeof n_res, "%d", n);
        const char *ask2[] = {
            "ask", "--db", db, "--model", model, "--n-res", n_res, "What is the date?", NULL};
        g_assert_cmpint(docqa(ask2), ==, 0);
    }
    const char *run_renamed[] = {
        "run",        "--db", db,   "--model", renamed, "--model-id", "tiny-smolvlm-b512",
        "--max-jobs", "1",    "-q", NULL};
    g_assert_cmpint(docqa_err(run_renamed, &said), ==, 0);
    g_assert_null(strstr(said, "warning"));
    g_free(said);
    char *sql =
        g_strdup_printf("SELECT count(*) FROM v_answers WHERE model_fingerprint = '%s'", fp);
    g_assert_cmpint(jt_query_int(db, sql), ==, 5);
    g_free(sql);

    /* Another snapshot under the same model id: warned about, answers apart by fingerprint. */
    char *other = dq_test_snapshot_with_positions(model, 4096);
    const char *run_other[] = {
        "run",           "--db", db,  "--model", other, "--model-id", "tiny-smolvlm-b512",
        "--until-empty", "-q",   NULL};
    g_assert_cmpint(docqa_err(run_other, &said), ==, 0);
    GError *err = NULL;
    char *other_fp = smolvlm_snapshot_fingerprint(other, &err);
    dq_assert_no_error(err);
    g_assert_cmpstr(other_fp, !=, fp);
    char *fp12 = g_strndup(fp, 12);
    char *want = g_strdup_printf("docqa: run: warning: model 'tiny-smolvlm-b512': this snapshot "
                                 "(%s) is %.12s, but 5 answers stored under 'tiny-smolvlm-b512' "
                                 "came from another (5 from %s)",
                                 other, other_fp, fp12);
    if (!g_str_has_prefix(said, want) || strchr(said, '\n') != said + strlen(said) - 1)
        g_error("not one line '%s...': %s", want, said);
    g_free(want);
    g_free(said);
    sql = g_strdup_printf("SELECT count(*) FROM v_answers WHERE question = 'What is the date?' "
                          "AND model = 'tiny-smolvlm-b512' AND model_fingerprint = '%s'",
                          other_fp);
    g_assert_cmpint(jt_query_int(db, sql), ==, 1);
    g_free(sql);
    const char *status[] = {"status", "--db", db, NULL};
    char *out = NULL;
    g_assert_cmpint(docqa_out(status, &out), ==, 0);
    char *line =
        g_strdup_printf("model 'tiny-smolvlm-b512': answers from 2 snapshots: 5 from "
                        "%s, 1 from %.12s (v_answers.model_fingerprint tells them apart)\n",
                        fp12, other_fp);
    if (strstr(out, line) == NULL)
        g_error("no '%s' in: %s", line, out);
    g_free(line);
    g_free(out);
    g_free(fp12);
    g_free(other_fp);
    g_free(other);
    g_free(renamed);
    g_free(fp);
    g_free(db);
    g_free(pdf);
    g_free(docs);
    g_free(dir);
    g_free(model);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/jobs-e2e/ingest-ask-run-tiny-model", test_ingest_ask_run);
    g_test_add_func("/jobs-e2e/damaged-pages-repaired", test_damaged_pages_repaired);
    g_test_add_func("/jobs-e2e/run-says-its-own-failures", test_run_says_its_own_failures);
    g_test_add_func("/jobs-e2e/answer-provenance", test_answer_provenance);
    g_test_add_func("/jobs-e2e/page-read-retried", test_page_read_retried);
    return g_test_run();
}
