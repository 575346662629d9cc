/* The real-world corpus: every file of ../shared/corpus (or, without ../shared, the subset
 * committed in tests/ingest/corpus) is ingested and compared with its MANIFEST.tsv row: the
 * outcome (ok / partial / failed with the right reason), the page count, page 1's size in
 * points or pixels (after /Rotate or Orientation) and the rendered page's orientation. Every
 * rendered PDF page is then compared, pixel for pixel, with `pdftocairo -png -cropbox
 * -scale-to-x W -scale-to-y H` (README, "Ingesting documents"). */
#include "image.h"
#include "ingest.h"
#include "store.h"
#include "testutil.h"

#include <glib/gstdio.h>
#include <math.h>
#include <stdlib.h>
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

/* Pages known to differ from pdftocairo, and by how much at most (0-255, any channel): what
 * poppler-glib cannot set up as pdftocairo does. pdftocairo gives its CairoOutputDev an sRGB
 * display profile, so CalRGB / CalGray / Lab colours go through lcms; poppler-glib's output
 * device has none (and no API to set one), so poppler converts them with its own formula. */
static const struct {
    const char *file;
    int page;
    int max_diff;
} known_differences[] = {
    /* image 5 is CalRGB (/ColorSpace /3chanRGB): red 255,43,6 against lcms's 255,43,31 */
    {"pdfdiff-InlineAbbreviations.pdf", 1, 25},
};

static int known_difference(const char *path, int page) {
    char *base = g_path_get_basename(path);
    int max = -1;
    for (size_t i = 0; i < G_N_ELEMENTS(known_differences); i++)
        if (strcmp(base, known_differences[i].file) == 0 && page == known_differences[i].page)
            max = known_differences[i].max_diff;
    g_free(base);
    return max;
}

/* Page `page` of `path` as pdftocairo renders it at w x h (written to out_base.png), or NULL
 * when it wrote nothing. */
static DqImage *pdftocairo_page(const char *pdftocairo, const char *path, int page, int w, int h,
                                const char *out_base) {
    char *png = g_strconcat(out_base, ".png", NULL);
    g_remove(png);
    char *sw = g_strdup_printf("%d", w), *sh = g_strdup_printf("%d", h);
    char *sp = g_strdup_printf("%d", page);
    const char *argv[] = {pdftocairo, "-png",   "-cropbox", "-scale-to-x", sw, "-scale-to-y",
                          sh,         "-f",     sp,         "-l",          sp, "-singlefile",
                          path,       out_base, NULL};
    GError *err = NULL;
    /* pdftocairo exits non-zero on some damaged files and still writes the page: its PNG is
     * what counts. */
    g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                 NULL, NULL, NULL, NULL, NULL, &err);
    dq_assert_no_error(err);
    DqImage *img =
        g_file_test(png, G_FILE_TEST_EXISTS) ? dq_image_load(png, DQ_EXIF_IGNORE, &err) : NULL;
    dq_assert_no_error(err);
    g_free(sp);
    g_free(sh);
    g_free(sw);
    g_free(png);
    return img;
}

static void test_corpus_pdf_pixels_match_pdftocairo(void) {
    char *pdftocairo = g_find_program_in_path("pdftocairo");
    if (pdftocairo == NULL) {
        g_test_skip("pdftocairo (poppler-utils) is not on PATH: nothing to compare with");
        return;
    }
    char *pdf_dir = g_build_filename(corpus_dir(), "pdf", NULL);
    char *tmp = dq_test_tmpdir();
    char *db = g_build_filename(tmp, "pixels.db", NULL);
    char *ref_base = g_build_filename(tmp, "ref", NULL);
    GError *err = NULL;
    DqStore *store = dq_store_open(db, &err);
    dq_assert_no_error(err);
    /* N = 1 at tile 512: the size the differences were found at (a letter page at 396 x 512:
     * 396 / 612 is not (72 x 396 / 612) / 72 to the last bit). */
    DqIngestOptions opt;
    dq_ingest_options_init(&opt);
    opt.n_res = 1;
    opt.tile = 512;
    opt.page_timeout_s = 60;
    DqIngestSummary sum;
    const char *paths[] = {pdf_dir, NULL};
    g_assert_true(dq_ingest_run(store, paths, &opt, &sum, &err));
    dq_assert_no_error(err);
    char *page_dir = dq_store_page_dir_for(db, &err);
    dq_assert_no_error(err);

    sqlite3_stmt *st = prep(store, "SELECT d.path, p.page_number, p.width, p.height, "
                                   "p.image_sha256 FROM pages p JOIN documents d ON "
                                   "d.id = p.document_id WHERE d.kind = 'pdf' AND "
                                   "p.image_sha256 IS NOT NULL ORDER BY d.path, p.page_number");
    int compared = 0, identical = 0, bad = 0, worst = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *path = (const char *)sqlite3_column_text(st, 0);
        int page = sqlite3_column_int(st, 1), w = sqlite3_column_int(st, 2),
            h = sqlite3_column_int(st, 3);
        char *ours_path = dq_store_page_path(page_dir, (const char *)sqlite3_column_text(st, 4));
        DqImage *ours = dq_image_load(ours_path, DQ_EXIF_IGNORE, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(ours->width, ==, w);
        g_assert_cmpint(ours->height, ==, h);
        DqImage *ref = pdftocairo_page(pdftocairo, path, page, w, h, ref_base);
        compared++;
        /* pdftocairo sizes its surface ceil(pw x (72 W / pw) / 72), one pixel over W when the
         * product rounds up (595.27 pt at 362 px: 363); the page is drawn at W x H all the same,
         * so its first W x H pixels are compared. */
        if (ref == NULL || ref->width < w || ref->height < h || ref->width > w + 1 ||
            ref->height > h + 1) {
            bad++;
            g_test_message("PIXELS %s page %d: pdftocairo gave %dx%d, docqa %dx%d", path, page,
                           ref ? ref->width : 0, ref ? ref->height : 0, w, h);
        } else {
            int max = 0;
            long n = 0;
            for (int y = 0; y < h; y++) {
                const uint8_t *a = ref->pixels + (size_t)y * ref->width * 3;
                const uint8_t *b = ours->pixels + (size_t)y * w * 3;
                for (int x = 0; x < w * 3; x++) {
                    int d = abs((int)a[x] - (int)b[x]);
                    if (d > 0)
                        n++;
                    if (d > max)
                        max = d;
                }
            }
            int allowed = known_difference(path, page);
            if (max == 0) {
                identical++;
            } else if (max <= allowed) {
                g_test_message("PIXELS %s page %d: a known difference, %ld samples, up to %d", path,
                               page, n, max);
            } else {
                bad++;
                g_test_message("PIXELS %s page %d (%dx%d): %ld samples differ, up to %d", path,
                               page, w, h, n, max);
            }
            if (max > worst)
                worst = max;
        }
        if (ref != NULL)
            dq_image_free(ref);
        dq_image_free(ours);
        g_free(ours_path);
    }
    g_test_message("%d PDF pages compared with pdftocairo: %d identical, %d unexpected "
                   "differences, worst %d",
                   compared, identical, bad, worst);
    g_assert_cmpint(compared, >, 10);
    g_assert_cmpint(bad, ==, 0);
    sqlite3_finalize(st);
    dq_ingest_summary_clear(&sum);
    dq_store_close(store);
    g_free(page_dir);
    g_free(ref_base);
    g_free(db);
    g_free(tmp);
    g_free(pdf_dir);
    g_free(pdftocairo);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ingest/corpus/matches_manifest", test_corpus_matches_manifest);
    g_test_add_func("/ingest/corpus/pdf_pixels_match_pdftocairo",
                    test_corpus_pdf_pixels_match_pdftocairo);
    return g_test_run();
}
