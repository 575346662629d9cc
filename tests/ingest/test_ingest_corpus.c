/* The real-world corpus: every file of ../shared/corpus (or, without ../shared, the subset
 * committed in tests/ingest/corpus) is ingested and compared with its MANIFEST.tsv row: the
 * outcome (ok / partial / failed with the right reason), the page count, page 1's size in
 * points or pixels (after /Rotate or Orientation) and the rendered page's orientation. */
#include "image.h"
#include "ingest.h"
#include "store.h"
#include "testutil.h"

#include <math.h>
#include <string.h>

enum { LONGEST = 256 }; /* N = 1, tile 256: the rules are the same at any size, and it is fast */

static const char *corpus_dir(void) {
    static char *dir = NULL;
    if (dir == NULL) {
        const char *shared = dq_test_shared_dir();
        char *cand = shared ? g_build_filename(shared, "corpus", NULL) : NULL;
        if (cand != NULL && g_file_test(cand, G_FILE_TEST_IS_DIR)) {
            dir = g_canonicalize_filename(cand, NULL);
        } else {
            g_test_message("../shared/corpus not found: using the committed subset in "
                           "tests/ingest/corpus");
            char *sub = g_build_filename(dq_test_source_dir(), "tests", "ingest", "corpus", NULL);
            dir = g_canonicalize_filename(sub, NULL);
            g_free(sub);
        }
        g_free(cand);
    }
    return dir;
}

static sqlite3_stmt *prep(DqStore *s, const char *sql) {
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(dq_store_sqlite(s), sql, -1, &st, NULL), ==, SQLITE_OK);
    return st;
}

static gboolean expect_matches(const char *expect, const char *status, const char *code) {
    if (strcmp(expect, "ok") == 0 || strcmp(expect, "partial") == 0)
        return strcmp(status, expect) == 0;
    if (strcmp(status, "failed") != 0 || code == NULL)
        return FALSE;
    if (strcmp(expect, "fail:encrypted") == 0)
        return strcmp(code, "encrypted") == 0;
    if (strcmp(expect, "fail:damaged") == 0)
        return strcmp(code, "damaged") == 0;
    if (strcmp(expect, "fail:unsupported") == 0)
        return strcmp(code, "unsupported_format") == 0 || strcmp(code, "unsupported_codec") == 0;
    return FALSE;
}

static void test_corpus_matches_manifest(void) {
    const char *dir = corpus_dir();
    char *manifest_path = g_build_filename(dir, "MANIFEST.tsv", NULL);
    char *manifest = dq_test_read_file(manifest_path, NULL);
    char *tmp = dq_test_tmpdir();
    char *db = g_build_filename(tmp, "corpus.db", NULL);
    GError *err = NULL;
    DqStore *store = dq_store_open(db, &err);
    dq_assert_no_error(err);
    DqIngestOptions opt;
    dq_ingest_options_init(&opt);
    opt.n_res = 1;
    opt.tile = LONGEST;
    opt.page_timeout_s = 60;
    DqIngestSummary sum;
    const char *paths[] = {dir, NULL};
    g_assert_true(dq_ingest_run(store, paths, &opt, &sum, &err));
    dq_assert_no_error(err);
    g_test_message("corpus %s: %d files, %d ok, %d partial, %d failed, %d pages in %.1f s", dir,
                   sum.files, sum.documents_ok, sum.documents_partial, sum.documents_failed,
                   sum.pages_ok, sum.seconds);

    sqlite3_stmt *doc_st = prep(store, "SELECT id, status, error_code, error_message, "
                                       "page_count, kind FROM documents WHERE path = ?1");
    sqlite3_stmt *page_st = prep(store, "SELECT width, height, source_width, source_height, "
                                        "status FROM pages WHERE document_id = ?1 AND "
                                        "page_number = 1");
    char **lines = g_strsplit(manifest, "\n", -1);
    int rows = 0, bad = 0;
    for (char **l = lines + 1; *l; l++) {
        if (**l == '\0')
            continue;
        char **c = g_strsplit(*l, "\t", -1);
        g_assert_cmpint(g_strv_length(c), >=, 9);
        const char *file = c[0], *kind = c[1], *pages = c[4], *pw = c[5], *ph = c[6],
                   *expect = c[8];
        rows++;
        char *path = g_build_filename(dir, file, NULL);
        GString *why = g_string_new(NULL);
        sqlite3_reset(doc_st);
        sqlite3_bind_text(doc_st, 1, path, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(doc_st) != SQLITE_ROW) {
            g_string_append(why, "not recorded");
        } else {
            gint64 id = sqlite3_column_int64(doc_st, 0);
            const char *status = (const char *)sqlite3_column_text(doc_st, 1);
            const char *code = (const char *)sqlite3_column_text(doc_st, 2);
            const char *msg = (const char *)sqlite3_column_text(doc_st, 3);
            gboolean has_count = sqlite3_column_type(doc_st, 4) != SQLITE_NULL;
            int count = sqlite3_column_int(doc_st, 4);
            if (!expect_matches(expect, status, code))
                g_string_append_printf(why, "expected %s, got %s/%s (%s); ", expect, status,
                                       code ? code : "-", msg ? msg : "");
            if (strcmp((const char *)sqlite3_column_text(doc_st, 5), kind) != 0)
                g_string_append_printf(why, "kind %s; ", sqlite3_column_text(doc_st, 5));
            if (strcmp(pages, "-") != 0 && (has_count || strcmp(status, "failed") != 0) &&
                count != atoi(pages))
                g_string_append_printf(why, "pages %d, manifest %s; ", count, pages);
            sqlite3_reset(page_st);
            sqlite3_bind_int64(page_st, 1, id);
            if (strcmp(status, "failed") != 0 && strcmp(pw, "-") != 0 &&
                sqlite3_step(page_st) == SQLITE_ROW &&
                sqlite3_column_type(page_st, 0) != SQLITE_NULL) {
                int w = sqlite3_column_int(page_st, 0), h = sqlite3_column_int(page_st, 1);
                double sw = sqlite3_column_double(page_st, 2);
                double sh = sqlite3_column_double(page_st, 3);
                double mw = g_ascii_strtod(pw, NULL), mh = g_ascii_strtod(ph, NULL);
                if (fabs(sw - mw) > 0.01 || fabs(sh - mh) > 0.01)
                    g_string_append_printf(why, "page 1 source %gx%g, manifest %sx%s; ", sw, sh, pw,
                                           ph);
                int ew = 0, eh = 0;
                dq_ingest_target_size(mw, mh, LONGEST, &ew, &eh);
                if (w != ew || h != eh)
                    g_string_append_printf(why, "page 1 image %dx%d, expected %dx%d; ", w, h, ew,
                                           eh);
            }
        }
        if (why->len > 0) {
            bad++;
            g_test_message("MISMATCH %s: %s", file, why->str);
        }
        g_string_free(why, TRUE);
        g_free(path);
        g_strfreev(c);
    }
    /* Nothing beyond the manifest's files became a document (licenses, the manifest: skipped). */
    g_assert_cmpint(sum.files, ==, rows);
    g_assert_cmpint(rows, >, 100);
    g_assert_cmpint(bad, ==, 0);
    g_strfreev(lines);
    sqlite3_finalize(doc_st);
    sqlite3_finalize(page_st);
    dq_ingest_summary_clear(&sum);
    dq_store_close(store);
    g_free(db);
    g_free(tmp);
    g_free(manifest);
    g_free(manifest_path);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ingest/corpus/matches_manifest", test_corpus_matches_manifest);
    return g_test_run();
}
