/* The whole pipeline with the tiny random-weight SmolVLM from ../shared/models: generated PDFs and
 * a TIFF -> docqa ingest -> docqa ask (two questions) -> docqa run (2 workers, batches of 2) ->
 * every page has both answers, and each equals what `docqa generate` prints for that page image
 * and prompt on its own (one request, no queue, no batch-mates). The tiny model's answers are
 * meaningless text, but they are deterministic, which is what this checks. */
#include "jobs_testlib.h"
#include "queue.h"
#include "resources.h"
#include "testutil.h"

#include <cairo-pdf.h>
#include <cairo.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/wait.h>
#include <tiffio.h>

#define MAX_NEW_TOKENS 6
#define N_RES          2

/* Runs docqa with args; returns its exit status and (when out is not NULL) its stdout. */
static int docqa_out(const char *const *args, char **out) {
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, g_build_filename(DOCQA_BINARY_DIR, "cli", "docqa", NULL));
    for (const char *const *a = args; *a; a++)
        g_ptr_array_add(argv, g_strdup(*a));
    g_ptr_array_add(argv, NULL);
    int status = 0;
    GError *err = NULL;
    char *o = NULL, *errout = NULL;
    g_assert_true(g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_DEFAULT, NULL, NULL, &o,
                               &errout, &status, &err));
    dq_assert_no_error(err);
    g_test_message("%s %s: %s%s", (char *)argv->pdata[1], WIFEXITED(status) ? "" : "(killed)", o,
                   errout);
    if (out)
        *out = o;
    else
        g_free(o);
    g_free(errout);
    g_ptr_array_free(argv, TRUE);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
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
    g_assert_cmpint(docqa(run), ==, 1);
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

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/jobs-e2e/ingest-ask-run-tiny-model", test_ingest_ask_run);
    g_test_add_func("/jobs-e2e/damaged-pages-repaired", test_damaged_pages_repaired);
    return g_test_run();
}
