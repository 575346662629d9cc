/* Ingest on inputs the test makes itself: PDFs from cairo's PDF surface, hand-written PDFs
 * (/Rotate 90, RC4-encrypted with a user password, damaged), TIFFs written with libtiff in each
 * variant and Orientation, and every failure reason. Pixels are checked where a black square
 * must land. */
#include "dq_error.h"
#include "image.h"
#include "ingest.h"
#include "ingest_internal.h"
#include "store.h"
#include "testutil.h"

#include <cairo-pdf.h>
#include <cairo.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <jpeglib.h>
#include <math.h>
#include <poppler.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <tiffio.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

/* ---- helpers: running ingest and reading what it stored */

typedef struct {
    char *dir;
    char *db_path;
    DqStore *store;
    DqIngestOptions opt;
    DqIngestSummary sum;
} Fixture;

static void fixture_init(Fixture *f) {
    memset(f, 0, sizeof *f);
    f->dir = dq_test_tmpdir();
    f->db_path = g_build_filename(f->dir, "docqa.db", NULL);
    GError *err = NULL;
    f->store = dq_store_open(f->db_path, &err);
    dq_assert_no_error(err);
    dq_ingest_options_init(&f->opt);
    f->opt.jobs = 2;
}

/* fixture_init with pages rendered as one 64 px tile (n_res 1): small and quick to render, for
 * the tests about what ingest records rather than about the pixels. */
static void fixture_init_small(Fixture *f) {
    fixture_init(f);
    f->opt.n_res = 1;
    f->opt.tile = 64;
}

static void fixture_clear(Fixture *f) {
    dq_ingest_summary_clear(&f->sum);
    dq_store_close(f->store);
    g_free(f->db_path);
    g_free(f->dir);
}

static void run_ingest(Fixture *f, const char *path) {
    const char *paths[] = {path, NULL};
    dq_ingest_summary_clear(&f->sum);
    GError *err = NULL;
    g_assert_true(dq_ingest_run(f->store, paths, &f->opt, &f->sum, &err));
    dq_assert_no_error(err);
}

static char *in_dir(Fixture *f, const char *name) {
    return g_build_filename(f->dir, name, NULL);
}

static gint64 query_int(Fixture *f, const char *sql_fmt, ...) {
    va_list ap;
    va_start(ap, sql_fmt);
    char *sql = sqlite3_vmprintf(sql_fmt, ap);
    va_end(ap);
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(dq_store_sqlite(f->store), sql, -1, &st, NULL), ==,
                    SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    gint64 v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_free(sql);
    return v;
}

static char *query_text(Fixture *f, const char *sql_fmt, ...) {
    va_list ap;
    va_start(ap, sql_fmt);
    char *sql = sqlite3_vmprintf(sql_fmt, ap);
    va_end(ap);
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(dq_store_sqlite(f->store), sql, -1, &st, NULL), ==,
                    SQLITE_OK);
    char *v = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
        v = g_strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_free(sql);
    return v;
}

/* The stored image of page `page` of the newest version of `path`. */
static DqImage *load_page(Fixture *f, const char *path, int page) {
    char *sha = query_text(f,
                           "SELECT p.image_sha256 FROM pages p JOIN documents_current d ON "
                           "d.id = p.document_id WHERE d.path = %Q AND p.page_number = %d",
                           path, page);
    g_assert_nonnull(sha);
    char *store_dir = dq_ingest_page_store_dir(f->db_path);
    char *png = dq_ingest_page_path(store_dir, sha);
    GError *err = NULL;
    DqImage *img = dq_image_load(png, DQ_EXIF_IGNORE, &err);
    dq_assert_no_error(err);
    g_free(png);
    g_free(store_dir);
    g_free(sha);
    return img;
}

/* Mean of the three channels at a fraction (fx, fy) of the image. */
static int gray_at(const DqImage *img, double fx, double fy) {
    int x = (int)(fx * img->width), y = (int)(fy * img->height);
    x = CLAMP(x, 0, img->width - 1);
    y = CLAMP(y, 0, img->height - 1);
    const uint8_t *p = img->pixels + ((size_t)y * img->width + x) * 3;
    return (p[0] + p[1] + p[2]) / 3;
}

static char *doc_field(Fixture *f, const char *path, const char *column) {
    return query_text(f, "SELECT %s FROM documents_current WHERE path = %Q", column, path);
}

static void assert_doc(Fixture *f, const char *path, const char *status, const char *code) {
    char *st = doc_field(f, path, "status");
    char *ec = doc_field(f, path, "error_code");
    char *msg = doc_field(f, path, "error_message");
    if (g_strcmp0(st, status) != 0 || g_strcmp0(ec, code) != 0)
        g_error("%s: expected %s/%s, got %s/%s (%s)", path, status, code ? code : "-",
                st ? st : "(no row)", ec ? ec : "-", msg ? msg : "");
    if (code != NULL) /* the message names the file */
        g_assert_nonnull(msg);
    g_free(st);
    g_free(ec);
    g_free(msg);
}

/* ---- PDFs */

typedef struct {
    double w, h;
} PageSize;

/* Pages of the given sizes (points), each white with a black square covering x and y from 10%
 * to 30% of the page, seen upright. */
static void write_cairo_pdf(const char *path, const PageSize *sizes, int n) {
    cairo_surface_t *s = cairo_pdf_surface_create(path, sizes[0].w, sizes[0].h);
    cairo_t *cr = cairo_create(s);
    for (int i = 0; i < n; i++) {
        cairo_pdf_surface_set_size(s, sizes[i].w, sizes[i].h);
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_rectangle(cr, 0.1 * sizes[i].w, 0.1 * sizes[i].h, 0.2 * sizes[i].w, 0.2 * sizes[i].h);
        cairo_fill(cr);
        cairo_show_page(cr);
    }
    cairo_destroy(cr);
    cairo_surface_finish(s);
    g_assert_cmpint(cairo_surface_status(s), ==, CAIRO_STATUS_SUCCESS);
    cairo_surface_destroy(s);
}

/* A PDF from object bodies, with a correct xref table. `trailer_extra` goes into the trailer
 * dictionary. Object 1 must be the catalog. */
static GString *build_pdf(const char *const *objects, int n, const char *trailer_extra) {
    GString *pdf = g_string_new("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n");
    gsize *offsets = g_new(gsize, n);
    for (int i = 0; i < n; i++) {
        offsets[i] = pdf->len;
        g_string_append_printf(pdf, "%d 0 obj\n%s\nendobj\n", i + 1, objects[i]);
    }
    gsize xref = pdf->len;
    g_string_append_printf(pdf, "xref\n0 %d\n0000000000 65535 f \n", n + 1);
    for (int i = 0; i < n; i++)
        g_string_append_printf(pdf, "%010zu 00000 n \n", offsets[i]);
    g_string_append_printf(pdf, "trailer\n<< /Size %d /Root 1 0 R %s >>\nstartxref\n%zu\n%%%%EOF\n",
                           n + 1, trailer_extra ? trailer_extra : "", xref);
    g_free(offsets);
    return pdf;
}

static void write_gstring(const char *path, GString *s) {
    g_assert_true(g_file_set_contents(path, s->str, (gssize)s->len, NULL));
    g_string_free(s, TRUE);
}

/* A 200 x 100 pt page with /Rotate 90 and a black square at x 10..50, y 60..90 (PDF space,
 * y up): the unrotated page's top-left corner. */
static void write_rotated_pdf(const char *path) {
    const char *content = "0 0 0 rg 10 60 40 30 re f";
    char *stream =
        g_strdup_printf("<< /Length %zu >>\nstream\n%s\nendstream", strlen(content), content);
    const char *objs[] = {
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Rotate 90 /Contents 4 0 R >>",
        stream,
    };
    write_gstring(path, build_pdf(objs, 4, NULL));
    g_free(stream);
}

/* RC4, for the PDF standard security handler (revision 2) below. */
static void rc4(const uint8_t *key, size_t klen, uint8_t *data, size_t n) {
    uint8_t S[256];
    for (int i = 0; i < 256; i++)
        S[i] = (uint8_t)i;
    for (int i = 0, j = 0; i < 256; i++) {
        j = (j + S[i] + key[i % klen]) & 255;
        uint8_t t = S[i];
        S[i] = S[j];
        S[j] = t;
    }
    for (size_t k = 0, i = 0, j = 0; k < n; k++) {
        i = (i + 1) & 255;
        j = (j + S[i]) & 255;
        uint8_t t = S[i];
        S[i] = S[j];
        S[j] = t;
        data[k] ^= S[(S[i] + S[j]) & 255];
    }
}

static void md5(const uint8_t *parts[], const size_t lens[], int n, uint8_t out[16]) {
    GChecksum *ck = g_checksum_new(G_CHECKSUM_MD5);
    for (int i = 0; i < n; i++)
        g_checksum_update(ck, parts[i], lens[i]);
    gsize len = 16;
    g_checksum_get_digest(ck, out, &len);
    g_checksum_free(ck);
}

static char *hex(const uint8_t *b, size_t n) {
    GString *s = g_string_new("<");
    for (size_t i = 0; i < n; i++)
        g_string_append_printf(s, "%02x", b[i]);
    g_string_append_c(s, '>');
    return g_string_free(s, FALSE);
}

/* A really encrypted PDF (RC4 40-bit, /R 2, PDF 1.4 algorithms 3.1-3.4): user password
 * "secret", owner password "owner". Its content stream is encrypted with the object key. */
static void write_encrypted_pdf(const char *path) {
    static const uint8_t pad[32] = {0x28, 0xBF, 0x4E, 0x5E, 0x4E, 0x75, 0x8A, 0x41,
                                    0x64, 0x00, 0x4E, 0x56, 0xFF, 0xFA, 0x01, 0x08,
                                    0x2E, 0x2E, 0x00, 0xB6, 0xD0, 0x68, 0x3E, 0x80,
                                    0x2F, 0x0C, 0xA9, 0xFE, 0x64, 0x53, 0x69, 0x7A};
    uint8_t user[32], owner[32];
    memcpy(user, "secret", 6);
    memcpy(user + 6, pad, 26);
    memcpy(owner, "owner", 5);
    memcpy(owner + 5, pad, 27);
    uint8_t okey[16], O[32], key[16], U[32];
    const uint8_t *p1[] = {owner};
    size_t l1[] = {32};
    md5(p1, l1, 1, okey);
    memcpy(O, user, 32);
    rc4(okey, 5, O, 32);
    const uint8_t id[16] = "docqa-test-id-01";
    const uint8_t P[4] = {0xfc, 0xff, 0xff, 0xff}; /* -4 */
    const uint8_t *p2[] = {user, O, P, id};
    size_t l2[] = {32, 32, 4, 16};
    md5(p2, l2, 4, key);
    memcpy(U, pad, 32);
    rc4(key, 5, U, 32);
    /* Object 4's key: MD5(key[0..5] + objnum (3 bytes LE) + gen (2 bytes LE)), first 10 bytes. */
    uint8_t okey_in[10], objkey[16];
    memcpy(okey_in, key, 5);
    okey_in[5] = 4, okey_in[6] = 0, okey_in[7] = 0, okey_in[8] = 0, okey_in[9] = 0;
    const uint8_t *p3[] = {okey_in};
    size_t l3[] = {10};
    md5(p3, l3, 1, objkey);
    const char *content = "0 0 0 rg 10 10 50 50 re f";
    size_t clen = strlen(content);
    uint8_t *enc = g_memdup2(content, clen);
    rc4(objkey, 10, enc, clen);
    GString *stream = g_string_new(NULL);
    g_string_append_printf(stream, "<< /Length %zu >>\nstream\n", clen);
    g_string_append_len(stream, (const char *)enc, (gssize)clen);
    g_string_append(stream, "\nendstream");
    char *hO = hex(O, 32), *hU = hex(U, 32), *hid = hex(id, 16);
    char *encrypt = g_strdup_printf("<< /Filter /Standard /V 1 /R 2 /O %s /U %s /P -4 >>", hO, hU);
    char *trailer = g_strdup_printf("/Encrypt 5 0 R /ID [%s %s]", hid, hid);
    const char *objs[] = {
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] /Contents 4 0 R >>",
        stream->str,
        encrypt,
    };
    write_gstring(path, build_pdf(objs, 5, trailer));
    g_string_free(stream, TRUE);
    g_free(enc);
    g_free(hO);
    g_free(hU);
    g_free(hid);
    g_free(encrypt);
    g_free(trailer);
}

static void test_pdf_sizes_and_pixels(void) {
    Fixture f;
    fixture_init(&f);
    /* Portrait letter, A4, landscape, a tall strip, a tiny square: many pages, mixed sizes. */
    PageSize sizes[] = {{612, 792}, {595, 842},  {842, 595}, {200, 900}, {72, 72},   {612, 792},
                        {612, 792}, {1000, 500}, {612, 792}, {300, 300}, {612, 792}, {400, 500}};
    int n = G_N_ELEMENTS(sizes);
    char *pdf = in_dir(&f, "mixed.pdf");
    write_cairo_pdf(pdf, sizes, n);
    f.opt.n_res = 2;
    f.opt.tile = 128; /* longest edge 256: small and fast */
    run_ingest(&f, pdf);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_cmpint(f.sum.pages_ok, ==, n);
    assert_doc(&f, pdf, "ok", NULL);
    g_assert_cmpint(query_int(&f, "SELECT page_count FROM documents WHERE path = %Q", pdf), ==, n);
    char *kind = doc_field(&f, pdf, "kind");
    g_assert_cmpstr(kind, ==, "pdf");
    g_free(kind);
    for (int i = 0; i < n; i++) {
        DqImage *img = load_page(&f, pdf, i + 1);
        int ew = 0, eh = 0;
        dq_image_fit_longest_edge((int)sizes[i].w, (int)sizes[i].h, 256, &ew, &eh);
        g_assert_cmpint(MAX(img->width, img->height), ==, 256);
        g_assert_cmpint(img->width, ==, ew);
        g_assert_cmpint(img->height, ==, eh);
        /* The processor's resize to the same longest edge is a no-op. */
        int rw = 0, rh = 0;
        dq_image_fit_longest_edge(img->width, img->height, 256, &rw, &rh);
        g_assert_cmpint(rw, ==, img->width);
        g_assert_cmpint(rh, ==, img->height);
        g_assert_cmpint(gray_at(img, 0.2, 0.2), <, 10);  /* the square */
        g_assert_cmpint(gray_at(img, 0.8, 0.8), >, 245); /* white paper */
        g_assert_cmpint(gray_at(img, 0.8, 0.2), >, 245);
        g_assert_cmpint(gray_at(img, 0.2, 0.8), >, 245);
        dq_image_free(img);
    }
    /* Page rows carry their source size in points and the render settings. */
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM pages WHERE source_width = 842 AND "
                                  "source_height = 595 AND width = 256 AND height = 180 AND "
                                  "render_settings = '{\"longest_edge\":256,\"n_res\":2,"
                                  "\"tile\":128}'"),
                    ==, 1);
    g_free(pdf);
    fixture_clear(&f);
}

static void test_pdf_rotate_90(void) {
    Fixture f;
    fixture_init(&f);
    char *pdf = in_dir(&f, "rotated.pdf");
    write_rotated_pdf(pdf);
    f.opt.n_res = 1;
    f.opt.tile = 400;
    run_ingest(&f, pdf);
    assert_doc(&f, pdf, "ok", NULL);
    DqImage *img = load_page(&f, pdf, 1);
    /* 200 x 100 pt turned a quarter clockwise: 100 x 200 displayed -> 200 x 400 pixels. */
    g_assert_cmpint(img->width, ==, 200);
    g_assert_cmpint(img->height, ==, 400);
    /* The unrotated top-left square (x 10..50 of 200, y 10..40 from the top of 100) lands at
     * the top right: x from 60% to 90%, y from 5% to 25%. */
    g_assert_cmpint(gray_at(img, 0.75, 0.15), <, 10);
    g_assert_cmpint(gray_at(img, 0.25, 0.15), >, 245);
    g_assert_cmpint(gray_at(img, 0.75, 0.85), >, 245);
    g_assert_cmpint(query_int(&f, "SELECT source_width * 10 + source_height FROM pages"), ==,
                    100 * 10 + 200);
    dq_image_free(img);
    g_free(pdf);
    fixture_clear(&f);
}

static void test_pdf_encrypted_and_damaged(void) {
    Fixture f;
    fixture_init(&f);
    char *enc = in_dir(&f, "locked.pdf");
    write_encrypted_pdf(enc);
    /* The file really is encrypted: with its password poppler opens it. */
    char *uri = g_filename_to_uri(enc, NULL, NULL);
    GError *err = NULL;
    PopplerDocument *pd = poppler_document_new_from_file(uri, "secret", &err);
    dq_assert_no_error(err);
    g_assert_cmpint(poppler_document_get_n_pages(pd), ==, 1);
    g_object_unref(pd);
    g_free(uri);
    run_ingest(&f, enc);
    assert_doc(&f, enc, "failed", "encrypted");
    g_assert_cmpint(f.sum.documents_failed, ==, 1);
    g_assert_cmpint(f.sum.failures->len, ==, 1);

    char *bad = in_dir(&f, "damaged.pdf");
    g_assert_true(g_file_set_contents(bad, "%PDF-1.4\n1 0 obj << /Type /Catalog /Pa", -1, NULL));
    run_ingest(&f, bad);
    assert_doc(&f, bad, "failed", "damaged");
    g_assert_null(doc_field(&f, bad, "page_count"));

    /* Well-formed, with an empty page tree: poppler opens it (pdfinfo: "Invalid page count
     * 0"), and it holds nothing to render. */
    char *empty = in_dir(&f, "no-pages.pdf");
    static const char no_pages[] =
        "%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        "2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
        "xref\n0 3\n0000000000 65535 f \n0000000009 00000 n \n0000000058 00000 n \n"
        "trailer\n<< /Size 3 /Root 1 0 R >>\nstartxref\n110\n%EOF\n";
    g_assert_true(g_file_set_contents(empty, no_pages, -1, NULL));
    run_ingest(&f, empty);
    assert_doc(&f, empty, "failed", "damaged");
    g_assert_null(doc_field(&f, empty, "page_count"));
    const DqIngestFailure *last = g_ptr_array_index(f.sum.failures, f.sum.failures->len - 1);
    g_assert_cmpstr(last->path, ==, empty);
    g_assert_nonnull(strstr(last->message, "PDF has no pages"));

    /* A page tree that counts 2 pages and holds 1: poppler has no page 2 to give. */
    char *short_tree = in_dir(&f, "short-tree.pdf");
    static const char one_of_two[] =
        "%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        "2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 2 >>\nendobj\n"
        "3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] >>\nendobj\n"
        "xref\n0 4\n0000000000 65535 f \n0000000009 00000 n \n0000000058 00000 n \n"
        "0000000115 00000 n \ntrailer\n<< /Size 4 /Root 1 0 R >>\nstartxref\n186\n%EOF\n";
    g_assert_true(g_file_set_contents(short_tree, one_of_two, -1, NULL));
    run_ingest(&f, short_tree);
    assert_doc(&f, short_tree, "partial", "damaged");
    char *page2 = query_text(&f,
                             "SELECT p.status || ' ' || quote(p.source_width) || ' ' || "
                             "quote(p.source_height) || ' ' || p.error_message FROM pages p JOIN "
                             "documents_current d ON d.id = p.document_id WHERE d.path = %Q AND "
                             "p.page_number = 2",
                             short_tree);
    /* a page poppler cannot load has no size to record (not 1 x 1, not 0 x 0) */
    char *want = g_strdup_printf("failed NULL NULL %s: page 2 cannot be loaded", short_tree);
    g_assert_cmpstr(page2, ==, want);
    g_assert_cmpint(query_int(&f,
                              "SELECT count(*) FROM pages p JOIN documents_current d ON d.id = "
                              "p.document_id WHERE d.path = %Q AND p.page_number = 1 AND "
                              "p.status = 'ok'",
                              short_tree),
                    ==, 1);
    g_free(want);
    g_free(page2);
    g_free(short_tree);
    g_free(empty);
    g_free(enc);
    g_free(bad);
    fixture_clear(&f);
}

/* ---- TIFFs */

enum { TW = 64, TH = 40 };

typedef enum {
    V_GRAY8,
    V_RGB_LZW,
    V_RGB_DEFLATE_TILED,
    V_RGB_PLANAR_PACKBITS,
    V_PALETTE,
    V_GRAY16,
    V_CMYK,
    V_YCBCR_JPEG,
    V_G3,
    V_G4,
    V_RGBA,
    V_FLOAT32,
    N_VARIANTS
} TiffVariant;

static const char *const variant_names[] = {"gray8",
                                            "rgb-lzw",
                                            "rgb-deflate-tiled",
                                            "rgb-planar-packbits",
                                            "palette",
                                            "gray16",
                                            "cmyk",
                                            "ycbcr-jpeg",
                                            "g3",
                                            "g4",
                                            "rgba",
                                            "float32"};

/* Stored pixel (x, y) is black inside the square x 8..23, y 6..15, else white; with alpha, the
 * right half is fully transparent (and black underneath: it must come out white). */
static gboolean in_square(int x, int y) {
    return x >= 8 && x < 24 && y >= 6 && y < 16;
}

static void write_tiff_dir(TIFF *t, TiffVariant v, int orientation, int w, int h) {
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, w);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, h);
    TIFFSetField(t, TIFFTAG_ORIENTATION, orientation);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    int spp = 1, bps = 8;
    switch (v) {
    case V_GRAY8:
        TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
        break;
    case V_RGB_LZW:
    case V_RGB_DEFLATE_TILED:
    case V_RGB_PLANAR_PACKBITS:
    case V_YCBCR_JPEG:
        spp = 3;
        TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
        break;
    case V_PALETTE:
        TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_PALETTE);
        break;
    case V_GRAY16:
        bps = 16;
        TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
        break;
    case V_CMYK:
        spp = 4;
        TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_SEPARATED);
        TIFFSetField(t, TIFFTAG_INKSET, INKSET_CMYK);
        break;
    case V_G3:
    case V_G4:
        bps = 1;
        TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISWHITE);
        break;
    case V_RGBA: {
        spp = 4;
        uint16_t extra = EXTRASAMPLE_UNASSALPHA;
        TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
        TIFFSetField(t, TIFFTAG_EXTRASAMPLES, 1, &extra);
        break;
    }
    case V_FLOAT32:
        bps = 32;
        TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
        TIFFSetField(t, TIFFTAG_SAMPLEFORMAT, SAMPLEFORMAT_IEEEFP);
        break;
    default:
        g_assert_not_reached();
    }
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, spp);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, bps);
    uint16_t comp = v == V_RGB_LZW               ? COMPRESSION_LZW
                    : v == V_RGB_DEFLATE_TILED   ? COMPRESSION_ADOBE_DEFLATE
                    : v == V_RGB_PLANAR_PACKBITS ? COMPRESSION_PACKBITS
                    : v == V_YCBCR_JPEG          ? COMPRESSION_JPEG
                    : v == V_G3                  ? COMPRESSION_CCITTFAX3
                    : v == V_G4                  ? COMPRESSION_CCITTFAX4
                                                 : COMPRESSION_NONE;
    TIFFSetField(t, TIFFTAG_COMPRESSION, comp);
    if (v == V_RGB_PLANAR_PACKBITS)
        TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_SEPARATE);
    if (v == V_YCBCR_JPEG) {
        TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_YCBCR);
        TIFFSetField(t, TIFFTAG_JPEGQUALITY, 95);
        TIFFSetField(t, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB);
    }
    if (v == V_PALETTE) {
        uint16_t r[256], g[256], b[256];
        for (int i = 0; i < 256; i++)
            r[i] = g[i] = b[i] = (uint16_t)(i * 257);
        TIFFSetField(t, TIFFTAG_COLORMAP, r, g, b);
    }
    int bytes_per_px = spp * bps / 8;
    /* One black/white sample value per variant. */
    uint8_t *row = g_malloc0((size_t)w * 8 + 8);
    if (v == V_RGB_DEFLATE_TILED) {
        TIFFSetField(t, TIFFTAG_TILEWIDTH, 16);
        TIFFSetField(t, TIFFTAG_TILELENGTH, 16);
        uint8_t tile[16 * 16 * 3];
        for (int ty = 0; ty < h; ty += 16)
            for (int tx = 0; tx < w; tx += 16) {
                for (int y = 0; y < 16; y++)
                    for (int x = 0; x < 16; x++)
                        memset(tile + (y * 16 + x) * 3, in_square(tx + x, ty + y) ? 0 : 255, 3);
                g_assert_cmpint(TIFFWriteTile(t, tile, tx, ty, 0, 0), >, 0);
            }
        g_free(row);
        g_assert_true(TIFFWriteDirectory(t));
        return;
    }
    TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, v == V_YCBCR_JPEG ? 16 : 8);
    int planes = v == V_RGB_PLANAR_PACKBITS ? 3 : 1;
    for (int s = 0; s < planes; s++)
        for (int y = 0; y < h; y++) {
            memset(row, 0, (size_t)w * 8 + 8);
            for (int x = 0; x < w; x++) {
                gboolean black = in_square(x, y);
                if (v == V_G3 || v == V_G4) {
                    if (black) /* MINISWHITE: 1 is black */
                        row[x / 8] |= (uint8_t)(0x80 >> (x % 8));
                } else if (v == V_GRAY16) {
                    uint16_t val = black ? 0 : 65535;
                    memcpy(row + 2 * x, &val, 2);
                } else if (v == V_FLOAT32) {
                    float val = black ? 0.0f : 1.0f;
                    memcpy(row + 4 * x, &val, 4);
                } else if (v == V_CMYK) {
                    uint8_t *p = row + 4 * x;
                    p[0] = p[1] = p[2] = 0;
                    p[3] = black ? 255 : 0; /* K */
                } else if (v == V_RGBA) {
                    uint8_t *p = row + 4 * x;
                    gboolean clear = x >= w / 2;
                    p[0] = p[1] = p[2] = (black || clear) ? 0 : 255;
                    p[3] = clear ? 0 : 255;
                } else if (planes == 3) {
                    row[x] = black ? 0 : 255;
                } else {
                    memset(row + x * bytes_per_px, black ? 0 : 255, (size_t)bytes_per_px);
                }
            }
            g_assert_cmpint(TIFFWriteScanline(t, row, (uint32_t)y, (uint16_t)s), ==, 1);
        }
    g_free(row);
    g_assert_true(TIFFWriteDirectory(t));
}

static void write_tiff(const char *path, TiffVariant v, int orientation, int pages) {
    TIFF *t = TIFFOpen(path, "w");
    g_assert_nonnull(t);
    for (int i = 0; i < pages; i++)
        write_tiff_dir(t, v, orientation, TW, TH);
    TIFFClose(t);
}

static void check_square(const DqImage *img, int orientation, gboolean lossy, const char *what) {
    gboolean swap = orientation >= 5;
    int dw = swap ? TH : TW, dh = swap ? TW : TH;
    g_assert_cmpint(img->width * dh, ==, img->height * dw); /* exact aspect here */
    /* Square centre (15.5, 10.5) and a point far from it, mapped and scaled. */
    int pts[2][2] = {{15, 10}, {50, 32}};
    for (int k = 0; k < 2; k++) {
        int x, y;
        dq_test_oriented_position(orientation, TW, TH, pts[k][0], pts[k][1], &x, &y);
        double fx = (x + 0.5) / dw, fy = (y + 0.5) / dh;
        int g = gray_at(img, fx, fy);
        if ((k == 0 && g > (lossy ? 40 : 5)) || (k == 1 && g < (lossy ? 215 : 250)))
            g_error("%s, orientation %d: gray %d at displayed (%d, %d)", what, orientation, g, x,
                    y);
    }
}

/* A gray page with extra samples: Pillow reads at most 6 samples a pixel (unspecified extra
 * planes stored separately left out); more is refused before libtiff sizes its buffers by them
 * (fuzz_tiff_page: 4901 samples made it ask for 2 GB). */
static void write_gray_extras_tiff(const char *path, int spp, gboolean separate) {
    TIFF *t = TIFFOpen(path, "w");
    g_assert_nonnull(t);
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, 8);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, 8);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, spp);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, separate ? PLANARCONFIG_SEPARATE : PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_NONE);
    TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, 8);
    uint16_t extra[16] = {0}; /* EXTRASAMPLE_UNSPECIFIED */
    TIFFSetField(t, TIFFTAG_EXTRASAMPLES, spp - 1, extra);
    uint8_t row[8 * 16];
    for (int plane = 0; plane < (separate ? spp : 1); plane++)
        for (int y = 0; y < 8; y++) {
            for (int i = 0; i < 8 * 16; i++)
                row[i] = (uint8_t)(y * 30);
            g_assert_cmpint(TIFFWriteScanline(t, row, (uint32_t)y, (uint16_t)plane), ==, 1);
        }
    TIFFClose(t);
}

static void test_tiff_samples_per_pixel(void) {
    Fixture f;
    fixture_init(&f);
    f.opt.n_res = 1;
    f.opt.tile = 32;
    char *dir = in_dir(&f, "extras");
    g_mkdir(dir, 0755);
    char *seven = g_build_filename(dir, "seven.tif", NULL);
    char *planes = g_build_filename(dir, "seven-planes.tif", NULL);
    char *two = g_build_filename(dir, "two.tif", NULL);
    write_gray_extras_tiff(seven, 7, FALSE);
    write_gray_extras_tiff(planes, 7, TRUE);
    write_gray_extras_tiff(two, 2, FALSE);
    run_ingest(&f, dir);
    assert_doc(&f, seven, "failed", "damaged");
    assert_doc(&f, planes, "ok", NULL); /* its 6 unspecified planes left out, as Pillow does */
    assert_doc(&f, two, "ok", NULL);
    g_free(seven);
    g_free(planes);
    g_free(two);
    g_free(dir);
    fixture_clear(&f);
}

static void test_tiff_variants(void) {
    Fixture f;
    fixture_init(&f);
    f.opt.n_res = 1;
    f.opt.tile = 128; /* 64 x 40 -> upscaled to 128 x 80 with Lanczos */
    char *dir = in_dir(&f, "tiffs");
    g_mkdir(dir, 0755);
    for (int v = 0; v < N_VARIANTS; v++) {
        char *name = g_strdup_printf("%s/%02d-%s.tif", dir, v, variant_names[v]);
        write_tiff(name, v, 1, 1);
        g_free(name);
    }
    run_ingest(&f, dir);
    g_assert_cmpint(f.sum.files, ==, N_VARIANTS);
    for (int v = 0; v < N_VARIANTS; v++) {
        char *name = g_strdup_printf("%s/%02d-%s.tif", dir, v, variant_names[v]);
        if (v == V_FLOAT32) { /* libtiff's RGBA interface refuses float samples */
            assert_doc(&f, name, "failed", "unsupported_format");
            g_free(name);
            continue;
        }
        assert_doc(&f, name, "ok", NULL);
        DqImage *img = load_page(&f, name, 1);
        g_assert_cmpint(img->width, ==, 128);
        g_assert_cmpint(img->height, ==, 80);
        check_square(img, 1, v == V_YCBCR_JPEG, variant_names[v]);
        if (v == V_RGBA) /* transparent half composited onto white */
            g_assert_cmpint(gray_at(img, 0.9, 0.2), >, 250);
        dq_image_free(img);
        g_free(name);
    }
    g_free(dir);
    fixture_clear(&f);
}

static void test_tiff_orientations_and_pages(void) {
    Fixture f;
    fixture_init(&f);
    f.opt.n_res = 1;
    f.opt.tile = 64; /* the stored size: no resampling, exact pixels */
    char *dir = in_dir(&f, "orient");
    g_mkdir(dir, 0755);
    for (int o = 1; o <= 8; o++) {
        char *name = g_strdup_printf("%s/o%d.tif", dir, o);
        write_tiff(name, o % 2 ? V_GRAY8 : V_G4, o, o == 3 ? 3 : 1);
        g_free(name);
    }
    run_ingest(&f, dir);
    g_assert_cmpint(f.sum.documents_ok, ==, 8);
    for (int o = 1; o <= 8; o++) {
        char *name = g_strdup_printf("%s/o%d.tif", dir, o);
        DqImage *img = load_page(&f, name, 1);
        g_assert_cmpint(img->width, ==, o >= 5 ? TH : TW);
        g_assert_cmpint(img->height, ==, o >= 5 ? TW : TH);
        check_square(img, o, FALSE, "orientation");
        g_assert_cmpint(query_int(&f,
                                  "SELECT source_width FROM pages p JOIN documents d ON "
                                  "d.id = p.document_id WHERE d.path = %Q AND page_number = 1",
                                  name),
                        ==, o >= 5 ? TH : TW);
        dq_image_free(img);
        if (o == 3) { /* every directory is a page */
            g_assert_cmpint(query_int(&f, "SELECT page_count FROM documents WHERE path = %Q", name),
                            ==, 3);
            DqImage *p3 = load_page(&f, name, 3);
            check_square(p3, o, FALSE, "page 3");
            dq_image_free(p3);
        }
        g_free(name);
    }
    g_free(dir);
    fixture_clear(&f);
}

/* Rewrites a SHORT tag of a little-endian classic TIFF's first IFD in place: for values libtiff
 * would not write (it maps ExtraSamples 999 to 2 and refuses 3). */
static void patch_tag(const char *path, uint16_t tag, uint16_t value) {
    size_t len = 0;
    uint8_t *b = (uint8_t *)dq_test_read_file(path, &len);
    g_assert_true(b[0] == 'I' && b[1] == 'I');
    uint32_t ifd = b[4] | b[5] << 8 | b[6] << 16 | (uint32_t)b[7] << 24;
    int n = b[ifd] | b[ifd + 1] << 8;
    gboolean done = FALSE;
    for (int i = 0; i < n; i++) {
        uint8_t *e = b + ifd + 2 + 12 * i;
        if ((e[0] | e[1] << 8) == tag) {
            e[8] = value & 0xff;
            e[9] = value >> 8;
            done = TRUE;
        }
    }
    g_assert_true(done);
    g_assert_true(g_file_set_contents(path, (char *)b, (gssize)len, NULL));
    g_free(b);
}

static void patch_compression(const char *path, uint16_t value) {
    patch_tag(path, TIFFTAG_COMPRESSION, value);
}

/* ---- TIFF alpha: what transformers' convert_to_rgb makes of it (Pillow's alpha_composite onto
 * white), with Pillow reading ExtraSamples as its TiffImagePlugin does. */

enum { AW = 16 }; /* 16 x 16 at tile 16: stored as decoded, no resampling */

/* Column x holds colour value AC[x] (gray c, or RGB (c, 255 - c, c / 2)) and alpha AA[x]. */
static const uint8_t AC[AW] = {100, 0,   255, 200, 37, 250, 10, 128,
                               60,  255, 1,   180, 90, 254, 33, 140};
static const uint8_t AA[AW] = {128, 0, 0, 255, 1, 254, 77, 200, 60, 128, 2, 90, 255, 255, 64, 30};

/* Goldens from Pillow 12.3.0, what transformers' convert_to_rgb computes:
 *   def onwhite(im):  # mode LA, RGBA, or raw mode "RGBa" (associated alpha, made straight)
 *       bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
 *       return Image.alpha_composite(bg, im.convert("RGBA")).convert("RGB")
 * on a 16 x 1 image of these samples. Image.open of the files this test writes gives the same
 * for every case Pillow opens; gray with associated or unspecified extra samples and planar
 * associated alpha it refuses: the gray goldens there are RGBa's with r = g = b. */
static const uint8_t GRAY_STRAIGHT[AW] = {177, 255, 255, 200, 254, 250, 181, 155,
                                          209, 255, 253, 229, 90,  254, 199, 241};
static const uint8_t GRAY_PREMULTIPLIED[AW] = {227, 255, 255, 200, 255, 250, 188, 183,
                                               255, 255, 254, 255, 90,  254, 224, 255};
static const uint8_t RGB_STRAIGHT[AW][3] = {
    {177, 205, 152}, {255, 255, 255}, {255, 255, 255}, {200, 55, 100},
    {254, 255, 254}, {250, 6, 126},   {181, 252, 180}, {155, 155, 105},
    {209, 241, 202}, {255, 127, 191}, {253, 255, 253}, {229, 191, 197},
    {90, 165, 45},   {254, 1, 127},   {199, 247, 195}, {241, 239, 233}};
static const uint8_t RGB_PREMULTIPLIED[AW][3] = {
    {227, 255, 177}, {255, 255, 255}, {255, 255, 255}, {200, 55, 100},
    {255, 255, 255}, {250, 6, 126},   {188, 255, 183}, {183, 181, 119},
    {255, 255, 225}, {255, 127, 254}, {254, 255, 253}, {255, 240, 255},
    {90, 165, 45},   {254, 1, 127},   {224, 255, 207}, {255, 255, 255}};

typedef enum { A_NO_TAG = -1 } AlphaTag;

typedef struct {
    const char *name;
    uint16_t photometric;
    int colors;   /* 1 or 3 */
    int extra;    /* ExtraSamples value, or A_NO_TAG (4 samples all the same) */
    int bps;      /* 8 or 16 */
    int separate; /* PlanarConfig 2 */
    /* expected: one of these, or neither for the colour samples as they are (alpha ignored) */
    const uint8_t *gray;
    const uint8_t (*rgb)[3];
    gboolean refused; /* expected: failed, damaged, the message naming ExtraSamples */
} AlphaCase;

static void alpha_rgb(int x, uint8_t out[3]) {
    out[0] = AC[x], out[1] = (uint8_t)(255 - AC[x]), out[2] = AC[x] / 2;
}

static void write_alpha_tiff(const char *path, const AlphaCase *c) {
    TIFF *t = TIFFOpen(path, "w");
    g_assert_nonnull(t);
    int spp = c->colors + 1;
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, AW);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, AW);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, c->bps);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, spp);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, c->photometric);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG,
                 c->separate ? PLANARCONFIG_SEPARATE : PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_NONE);
    TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, AW);
    if (c->extra != A_NO_TAG) {
        /* Values over 2 are patched in afterwards: libtiff writes none of them. */
        uint16_t extra = c->extra > EXTRASAMPLE_UNASSALPHA ? 0 : (uint16_t)c->extra;
        TIFFSetField(t, TIFFTAG_EXTRASAMPLES, 1, &extra);
    }
    if (c->photometric == PHOTOMETRIC_PALETTE) { /* index x is the colour of column x */
        uint16_t r[256] = {0}, g[256] = {0}, b[256] = {0};
        for (int x = 0; x < AW; x++) {
            uint8_t rgb[3];
            alpha_rgb(x, rgb);
            r[x] = (uint16_t)(rgb[0] * 257), g[x] = (uint16_t)(rgb[1] * 257);
            b[x] = (uint16_t)(rgb[2] * 257);
        }
        TIFFSetField(t, TIFFTAG_COLORMAP, r, g, b);
    }
    uint16_t row[AW * 4];
    uint8_t row8[AW * 4];
    for (int plane = 0; plane < (c->separate ? spp : 1); plane++)
        for (int y = 0; y < AW; y++) {
            int n = 0;
            for (int x = 0; x < AW; x++) {
                uint8_t rgb[3];
                alpha_rgb(x, rgb);
                uint8_t s[4] = {c->photometric == PHOTOMETRIC_PALETTE ? (uint8_t)x : rgb[0], rgb[1],
                                rgb[2], 0};
                if (c->colors == 1 && c->photometric != PHOTOMETRIC_PALETTE)
                    s[0] = AC[x];
                s[c->colors] = AA[x];
                for (int k = 0; k < spp; k++)
                    if (!c->separate || k == plane)
                        row[n++] = s[k];
            }
            for (int i = 0; i < n; i++) {
                row8[i] = (uint8_t)row[i];
                row[i] = (uint16_t)(row[i] * 257); /* 16-bit: the same value, exactly */
            }
            g_assert_cmpint(TIFFWriteScanline(t, c->bps == 16 ? (void *)row : (void *)row8,
                                              (uint32_t)y, (uint16_t)plane),
                            ==, 1);
        }
    TIFFClose(t);
    if (c->extra > EXTRASAMPLE_UNASSALPHA)
        patch_tag(path, TIFFTAG_EXTRASAMPLES, (uint16_t)c->extra);
}

static void test_tiff_alpha(void) {
    static const AlphaCase cases[] = {
        {"gray-unassoc", PHOTOMETRIC_MINISBLACK, 1, EXTRASAMPLE_UNASSALPHA, 8, 0,
         .gray = GRAY_STRAIGHT},
        {"gray-assoc", PHOTOMETRIC_MINISBLACK, 1, EXTRASAMPLE_ASSOCALPHA, 8, 0,
         .gray = GRAY_PREMULTIPLIED},
        {"gray-unspecified", PHOTOMETRIC_MINISBLACK, 1, EXTRASAMPLE_UNSPECIFIED, 8, 0,
         .gray = NULL},
        {"gray-unassoc-planar", PHOTOMETRIC_MINISBLACK, 1, EXTRASAMPLE_UNASSALPHA, 8, 1,
         .gray = GRAY_STRAIGHT},
        {"rgb-unassoc", PHOTOMETRIC_RGB, 3, EXTRASAMPLE_UNASSALPHA, 8, 0, .rgb = RGB_STRAIGHT},
        {"rgb-assoc", PHOTOMETRIC_RGB, 3, EXTRASAMPLE_ASSOCALPHA, 8, 0, .rgb = RGB_PREMULTIPLIED},
        /* Pillow: RGBX, the fourth sample ignored (libtiff would take it for alpha) */
        {"rgb-unspecified", PHOTOMETRIC_RGB, 3, EXTRASAMPLE_UNSPECIFIED, 8, 0, .rgb = NULL},
        /* Pillow: "missing ExtraSamples" is RGBA, straight (libtiff: premultiplied) */
        {"rgb-no-extrasamples", PHOTOMETRIC_RGB, 3, A_NO_TAG, 8, 0, .rgb = RGB_STRAIGHT},
        {"rgb-unassoc-planar", PHOTOMETRIC_RGB, 3, EXTRASAMPLE_UNASSALPHA, 8, 1,
         .rgb = RGB_STRAIGHT},
        {"rgb-assoc-planar", PHOTOMETRIC_RGB, 3, EXTRASAMPLE_ASSOCALPHA, 8, 1,
         .rgb = RGB_PREMULTIPLIED},
        {"rgb16-unassoc", PHOTOMETRIC_RGB, 3, EXTRASAMPLE_UNASSALPHA, 16, 0, .rgb = RGB_STRAIGHT},
        /* Pillow: PA (libtiff would ignore the alpha) */
        {"palette-unassoc", PHOTOMETRIC_PALETTE, 1, EXTRASAMPLE_UNASSALPHA, 8, 0,
         .rgb = RGB_STRAIGHT},
        /* ExtraSamples 999, Corel Draw 10's unassociated alpha: Pillow reads 8-bit RGB so
         * (OPEN_INFO's "Corel Draw 10" rows, RGBA) and libtiff every layout (it reads 999 as 2).
         * Gray with 999 Pillow cannot open (no OPEN_INFO row): docqa reads it as libtiff does. */
        {"rgb-corel-999", PHOTOMETRIC_RGB, 3, 999, 8, 0, .rgb = RGB_STRAIGHT},
        {"gray-corel-999", PHOTOMETRIC_MINISBLACK, 1, 999, 8, 0, .gray = GRAY_STRAIGHT},
        /* Any other value over 2 neither opens: Pillow "cannot identify image file", libtiff
         * refuses the directory ("Bad value ... for ExtraSamples"). Checked with Pillow 12.3.0. */
        {"rgb-extra-3", PHOTOMETRIC_RGB, 3, 3, 8, 0, .refused = TRUE},
        {"gray-extra-1000", PHOTOMETRIC_MINISBLACK, 1, 1000, 8, 0, .refused = TRUE},
    };
    Fixture f;
    fixture_init(&f);
    f.opt.n_res = 1;
    f.opt.tile = AW;
    char *dir = in_dir(&f, "alpha");
    g_mkdir(dir, 0755);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *name = g_strdup_printf("%s/%s.tif", dir, cases[i].name);
        write_alpha_tiff(name, &cases[i]);
        g_free(name);
    }
    run_ingest(&f, dir);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        const AlphaCase *c = &cases[i];
        char *name = g_strdup_printf("%s/%s.tif", dir, c->name);
        if (c->refused) {
            assert_doc(&f, name, "failed", "damaged");
            char *msg = doc_field(&f, name, "error_message");
            if (strstr(msg, "ExtraSamples") == NULL)
                g_error("%s: the message does not name ExtraSamples: %s", c->name, msg);
            g_free(msg);
            g_free(name);
            continue;
        }
        assert_doc(&f, name, "ok", NULL);
        DqImage *img = load_page(&f, name, 1);
        g_assert_cmpint(img->width, ==, AW);
        g_assert_cmpint(img->height, ==, AW);
        for (int y = 0; y < AW; y += AW - 1)
            for (int x = 0; x < AW; x++) {
                uint8_t want[3];
                if (c->gray != NULL)
                    want[0] = want[1] = want[2] = c->gray[x];
                else if (c->rgb != NULL)
                    memcpy(want, c->rgb[x], 3);
                else if (c->colors == 1)
                    want[0] = want[1] = want[2] = AC[x];
                else
                    alpha_rgb(x, want);
                const uint8_t *got = img->pixels + ((size_t)y * AW + x) * 3;
                if (memcmp(got, want, 3) != 0)
                    g_error("%s: pixel (%d, %d) (colour %u, alpha %u) is %u,%u,%u, want %u,%u,%u",
                            c->name, x, y, AC[x], AA[x], got[0], got[1], got[2], want[0], want[1],
                            want[2]);
            }
        dq_image_free(img);
        g_free(name);
    }
    g_free(dir);
    fixture_clear(&f);
}

/* ---- TIFF sample depths and planar layouts, read as Pillow reads them. Each file is SW x 2
 * pixels, column x the same in both rows; the goldens are Pillow 12.3.0's Image.open(path),
 * alpha composited onto white as above, .convert("RGB") of the files this test writes. */

enum { SW = 16 };

typedef enum {
    VALS_GRAY16,
    VALS_SIGNED16,
    VALS_RGB16,
    VALS_RGBA16,
    VALS_GRAY8,
    VALS_BITS,
    VALS_CMYK8
} Vals;

/* 16-bit values whose high byte and rounded 8-bit value differ, and values around 255. */
static const uint16_t V16[SW] = {0x0000, 0x0001, 0x0080, 0x00FE, 0x00FF, 0x0100, 0x012C, 0x12FF,
                                 0x1280, 0x7FFF, 0x8000, 0xA0C0, 0xFF00, 0xFF7F, 0xFFFF, 0x4DE1};
static const uint16_t A16[SW] = {0x8000, 0x0000, 0x00FF, 0xFFFF, 0x01C0, 0xFEFF, 0x4DC0, 0xC8FF,
                                 0x3CC0, 0x80FF, 0x02C0, 0x5AFF, 0xFF00, 0xFFC0, 0x40FF, 0x1EC0};
/* as int16: -32768, -1, 0, 1, 100, 254, 255, 256, 1000, 32767, -200, 128, 4863, -4736, 77, 200 */
static const uint16_t S16[SW] = {0x8000, 0xFFFF, 0,      1,   100,    254,    255, 256,
                                 1000,   0x7FFF, 0xFF38, 128, 0x12FF, 0xED80, 77,  200};
static const uint8_t P8[SW] = {0,   1,   2,   50, 100, 127, 128, 200,
                               253, 254, 255, 17, 34,  68,  136, 240};

static uint16_t sample_value(Vals v, int x, int k) {
    switch (v) {
    case VALS_GRAY16:
        return V16[x];
    case VALS_SIGNED16:
        return S16[x];
    case VALS_RGB16:
    case VALS_RGBA16:
        return k == 3 ? A16[x] : V16[(x + 5 * k) % SW];
    case VALS_GRAY8:
        return P8[x];
    case VALS_CMYK8: /* C, M, Y, K */
        return P8[(x + 5 * k) % SW];
    default:
        return (uint16_t)((x * 7 / 3) % 2); /* 0 1 0 1 1 0 0 1 ... */
    }
}

typedef struct {
    const char *name;
    uint16_t photometric;
    int spp, bps;
    int extra; /* ExtraSamples of the last sample, or A_NO_TAG */
    gboolean separate;
    uint16_t compression;
    uint16_t sampleformat;
    gboolean big_endian;
    Vals vals;
    /* one of these: the 8-bit values of a gray result, or RGB */
    const uint8_t *gray;
    const uint8_t (*rgb)[3];
} SampleCase;

static void write_sample_tiff(const char *path, const SampleCase *c) {
    TIFF *t = TIFFOpen(path, c->big_endian ? "wb" : "wl");
    g_assert_nonnull(t);
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, SW);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, 2);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, c->bps);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, c->spp);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, c->photometric);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG,
                 c->separate ? PLANARCONFIG_SEPARATE : PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, c->compression);
    TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, 2);
    if (c->sampleformat != 0)
        TIFFSetField(t, TIFFTAG_SAMPLEFORMAT, c->sampleformat);
    if (c->extra != A_NO_TAG) {
        uint16_t extra = (uint16_t)c->extra;
        TIFFSetField(t, TIFFTAG_EXTRASAMPLES, 1, &extra);
    }
    int planes = c->separate ? c->spp : 1, per_plane = c->separate ? 1 : c->spp;
    for (int plane = 0; plane < planes; plane++)
        for (int y = 0; y < 2; y++) {
            uint16_t row16[SW * 5];
            uint8_t row8[SW * 5] = {0};
            for (int x = 0; x < SW; x++)
                for (int j = 0; j < per_plane; j++) {
                    uint16_t v = sample_value(c->vals, x, c->separate ? plane : j);
                    row16[x * per_plane + j] = v;
                    row8[x * per_plane + j] = (uint8_t)v;
                }
            if (c->bps == 1) {
                memset(row8, 0, sizeof row8);
                for (int x = 0; x < SW; x++)
                    if (sample_value(c->vals, x, 0))
                        row8[x / 8] |= (uint8_t)(0x80 >> (x % 8));
            }
            g_assert_cmpint(TIFFWriteScanline(t, c->bps == 16 ? (void *)row16 : (void *)row8,
                                              (uint32_t)y, (uint16_t)plane),
                            ==, 1);
        }
    TIFFClose(t);
}

static void run_sample_cases(const SampleCase *cases, size_t n) {
    Fixture f;
    fixture_init(&f);
    f.opt.n_res = 1;
    f.opt.tile = SW; /* stored as decoded, no resampling */
    char *dir = in_dir(&f, "samples");
    g_mkdir(dir, 0755);
    for (size_t i = 0; i < n; i++) {
        char *name = g_strdup_printf("%s/%s.tif", dir, cases[i].name);
        write_sample_tiff(name, &cases[i]);
        g_free(name);
    }
    run_ingest(&f, dir);
    for (size_t i = 0; i < n; i++) {
        const SampleCase *c = &cases[i];
        char *name = g_strdup_printf("%s/%s.tif", dir, c->name);
        assert_doc(&f, name, "ok", NULL);
        DqImage *img = load_page(&f, name, 1);
        g_assert_cmpint(img->width, ==, SW);
        g_assert_cmpint(img->height, ==, 2);
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < SW; x++) {
                uint8_t want[3];
                if (c->gray != NULL)
                    want[0] = want[1] = want[2] = c->gray[x];
                else
                    memcpy(want, c->rgb[x], 3);
                const uint8_t *got = img->pixels + ((size_t)y * SW + x) * 3;
                if (memcmp(got, want, 3) != 0)
                    g_error("%s: pixel (%d, %d) is %u,%u,%u, want %u,%u,%u", c->name, x, y, got[0],
                            got[1], got[2], want[0], want[1], want[2]);
            }
        dq_image_free(img);
        g_free(name);
    }
    g_free(dir);
    fixture_clear(&f);
}

/* 16-bit gray, on purpose not as Pillow reads it: Pillow opens it as mode I;16 (ignoring
 * MinIsWhite) and convert("RGB") clips each value to 0..255, so a scan is mostly white to
 * transformers (checked with Pillow 12.3.0: V16 gives 0 1 128 254 255 255 ...). docqa takes the
 * high byte, MinIsWhite inverted, signed samples moved to unsigned first. */
static const uint8_t G16_HIGH[SW] = {0, 0, 0, 0, 0, 1, 1, 18, 18, 127, 128, 160, 255, 255, 255, 77};
static const uint8_t G16_HIGH_INVERTED[SW] = {255, 255, 255, 255, 255, 254, 254, 237,
                                              237, 128, 127, 95,  0,   0,   0,   178};
static const uint8_t S16_HIGH[SW] = {0,   127, 128, 128, 128, 128, 128, 129,
                                     131, 255, 127, 128, 146, 109, 128, 128};
/* 16-bit colour and alpha samples: Pillow's unpackers (RGB;16L, RGBA;16L, RGBa;16L, RGBX;16L, and
 * their ;16B and ;16N forms) keep the high byte; alpha is then composited as for 8 bits. */
static const uint8_t RGB16_HIGH[SW][3] = {{0, 1, 128},   {0, 1, 160},   {0, 18, 255}, {0, 18, 255},
                                          {0, 127, 255}, {1, 128, 77},  {1, 160, 0},  {18, 255, 0},
                                          {18, 255, 0},  {127, 255, 0}, {128, 77, 0}, {160, 0, 1},
                                          {255, 0, 1},   {255, 0, 18},  {255, 0, 18}, {77, 0, 127}};
static const uint8_t RGBA16_STRAIGHT[SW][3] = {
    {127, 128, 191}, {255, 255, 255}, {255, 255, 255}, {0, 18, 255},
    {254, 254, 255}, {2, 128, 78},    {178, 226, 178}, {69, 255, 55},
    {199, 255, 195}, {191, 255, 127}, {254, 254, 253}, {221, 165, 165},
    {255, 0, 1},     {255, 0, 18},    {255, 191, 196}, {234, 225, 240}};
static const uint8_t RGBA16_PREMULTIPLIED[SW][3] = {
    {127, 128, 255}, {255, 255, 255}, {255, 255, 255}, {0, 18, 255},
    {254, 255, 255}, {2, 128, 78},    {179, 255, 178}, {72, 255, 55},
    {213, 255, 195}, {254, 255, 127}, {255, 255, 253}, {255, 165, 166},
    {255, 0, 1},     {255, 0, 18},    {255, 191, 209}, {255, 225, 255}};

static void test_tiff_16bit(void) {
    static const SampleCase cases[] = {
        {"gray16", PHOTOMETRIC_MINISBLACK, 1, 16, A_NO_TAG, 0, COMPRESSION_NONE, 0, 0, VALS_GRAY16,
         .gray = G16_HIGH},
        {"gray16-miniswhite", PHOTOMETRIC_MINISWHITE, 1, 16, A_NO_TAG, 0, COMPRESSION_NONE, 0, 0,
         VALS_GRAY16, .gray = G16_HIGH_INVERTED},
        {"gray16-be", PHOTOMETRIC_MINISBLACK, 1, 16, A_NO_TAG, 0, COMPRESSION_NONE, 0, 1,
         VALS_GRAY16, .gray = G16_HIGH},
        {"gray16-deflate", PHOTOMETRIC_MINISBLACK, 1, 16, A_NO_TAG, 0, COMPRESSION_ADOBE_DEFLATE, 0,
         0, VALS_GRAY16, .gray = G16_HIGH},
        {"gray16-signed", PHOTOMETRIC_MINISBLACK, 1, 16, A_NO_TAG, 0, COMPRESSION_NONE,
         SAMPLEFORMAT_INT, 0, VALS_SIGNED16, .gray = S16_HIGH},
        /* Pillow cannot open big-endian MinIsWhite (no OPEN_INFO row) nor uncompressed planar
         * 16-bit gray ("unknown raw mode"). */
        {"gray16-miniswhite-be", PHOTOMETRIC_MINISWHITE, 1, 16, A_NO_TAG, 0, COMPRESSION_NONE, 0, 1,
         VALS_GRAY16, .gray = G16_HIGH_INVERTED},
        {"gray16-miniswhite-planar", PHOTOMETRIC_MINISWHITE, 1, 16, A_NO_TAG, 1, COMPRESSION_NONE,
         0, 0, VALS_GRAY16, .gray = G16_HIGH_INVERTED},
        {"rgb16", PHOTOMETRIC_RGB, 3, 16, A_NO_TAG, 0, COMPRESSION_NONE, 0, 0, VALS_RGB16,
         .rgb = RGB16_HIGH},
        {"rgb16-be", PHOTOMETRIC_RGB, 3, 16, A_NO_TAG, 0, COMPRESSION_NONE, 0, 1, VALS_RGB16,
         .rgb = RGB16_HIGH},
        {"rgb16-planar-lzw", PHOTOMETRIC_RGB, 3, 16, A_NO_TAG, 1, COMPRESSION_LZW, 0, 0, VALS_RGB16,
         .rgb = RGB16_HIGH},
        /* Uncompressed planar 16-bit Pillow unpacks with 8-bit raw modes ("RGB;16L"[0] = "R"),
         * garbage; docqa gives what Pillow gives when the same planes are compressed. */
        {"rgb16-planar", PHOTOMETRIC_RGB, 3, 16, A_NO_TAG, 1, COMPRESSION_NONE, 0, 0, VALS_RGB16,
         .rgb = RGB16_HIGH},
        {"rgbx16", PHOTOMETRIC_RGB, 4, 16, EXTRASAMPLE_UNSPECIFIED, 0, COMPRESSION_NONE, 0, 0,
         VALS_RGBA16, .rgb = RGB16_HIGH},
        {"rgba16-unassoc", PHOTOMETRIC_RGB, 4, 16, EXTRASAMPLE_UNASSALPHA, 0, COMPRESSION_NONE, 0,
         0, VALS_RGBA16, .rgb = RGBA16_STRAIGHT},
        {"rgba16-no-extrasamples", PHOTOMETRIC_RGB, 4, 16, A_NO_TAG, 0, COMPRESSION_NONE, 0, 0,
         VALS_RGBA16, .rgb = RGBA16_STRAIGHT},
        {"rgba16-unassoc-planar-deflate", PHOTOMETRIC_RGB, 4, 16, EXTRASAMPLE_UNASSALPHA, 1,
         COMPRESSION_ADOBE_DEFLATE, 0, 0, VALS_RGBA16, .rgb = RGBA16_STRAIGHT},
        {"rgba16-assoc", PHOTOMETRIC_RGB, 4, 16, EXTRASAMPLE_ASSOCALPHA, 0, COMPRESSION_NONE, 0, 0,
         VALS_RGBA16, .rgb = RGBA16_PREMULTIPLIED},
    };
    run_sample_cases(cases, G_N_ELEMENTS(cases));
}

/* One sample a pixel stored PlanarConfiguration 2 (some scanners write it for gray): libtiff
 * reads it as contiguous, MinIsWhite inverted, and so does Pillow when it is compressed.
 * Uncompressed, Pillow unpacks each plane with the first letter of its raw mode, "L" for
 * MinIsWhite's "L;I" and "1" for "1;I", and gives the negative (checked with Pillow 12.3.0);
 * docqa reads the page as the TIFF describes it, on purpose, whatever the compression. */
static const uint8_t P8_INVERTED[SW] = {255, 254, 253, 205, 155, 128, 127, 55,
                                        2,   1,   0,   238, 221, 187, 119, 15};
static const uint8_t BITS_BLACK_IS_1[SW] = {255, 255, 255, 0, 0,   0,   255, 255,
                                            255, 0,   0,   0, 255, 255, 255, 0};

static void test_tiff_planar_miniswhite(void) {
    static const SampleCase cases[] = {
        {"gray8-miniswhite-planar", PHOTOMETRIC_MINISWHITE, 1, 8, A_NO_TAG, 1, COMPRESSION_NONE, 0,
         0, VALS_GRAY8, .gray = P8_INVERTED},
        {"gray8-miniswhite-planar-packbits", PHOTOMETRIC_MINISWHITE, 1, 8, A_NO_TAG, 1,
         COMPRESSION_PACKBITS, 0, 0, VALS_GRAY8, .gray = P8_INVERTED},
        {"gray8-miniswhite", PHOTOMETRIC_MINISWHITE, 1, 8, A_NO_TAG, 0, COMPRESSION_NONE, 0, 0,
         VALS_GRAY8, .gray = P8_INVERTED},
        {"gray8-minisblack-planar", PHOTOMETRIC_MINISBLACK, 1, 8, A_NO_TAG, 1, COMPRESSION_NONE, 0,
         0, VALS_GRAY8, .gray = P8},
        {"bilevel-miniswhite-planar", PHOTOMETRIC_MINISWHITE, 1, 1, A_NO_TAG, 1, COMPRESSION_NONE,
         0, 0, VALS_BITS, .gray = BITS_BLACK_IS_1},
        {"bilevel-miniswhite-planar-packbits", PHOTOMETRIC_MINISWHITE, 1, 1, A_NO_TAG, 1,
         COMPRESSION_PACKBITS, 0, 0, VALS_BITS, .gray = BITS_BLACK_IS_1},
    };
    run_sample_cases(cases, G_N_ELEMENTS(cases));
}

/* CMYK: Pillow's convert("RGB") (cmyk2rgb) computes 255 - k - c * (255 - k) / 255 rounded,
 * libtiff truncates (255 - k) * (255 - c) / 255: they differ by one in half the cases. */
static const uint8_t CMYK_RGB[SW][3] = {
    {15, 8, 0},      {254, 127, 238}, {252, 55, 220}, {203, 2, 186}, {125, 1, 96}, {78, 0, 9},
    {64, 119, 128},  {27, 110, 127},  {0, 40, 55},    {0, 1, 2},     {0, 0, 1},    {0, 0, 0},
    {206, 237, 119}, {162, 219, 48},  {87, 150, 1},   {7, 72, 0}};

static void test_tiff_cmyk(void) {
    static const SampleCase cases[] = {
        {"cmyk", PHOTOMETRIC_SEPARATED, 4, 8, A_NO_TAG, 0, COMPRESSION_NONE, 0, 0, VALS_CMYK8,
         .rgb = CMYK_RGB},
        {"cmyk-planar", PHOTOMETRIC_SEPARATED, 4, 8, A_NO_TAG, 1, COMPRESSION_NONE, 0, 0,
         VALS_CMYK8, .rgb = CMYK_RGB},
        {"cmyk-lzw", PHOTOMETRIC_SEPARATED, 4, 8, A_NO_TAG, 0, COMPRESSION_LZW, 0, 0, VALS_CMYK8,
         .rgb = CMYK_RGB},
        {"cmykx", PHOTOMETRIC_SEPARATED, 5, 8, EXTRASAMPLE_UNSPECIFIED, 0, COMPRESSION_NONE, 0, 0,
         VALS_CMYK8, .rgb = CMYK_RGB},
    };
    run_sample_cases(cases, G_N_ELEMENTS(cases));
}

/* Points the next-IFD offset of IFD `from` (0-based, main chain of a little-endian classic TIFF)
 * at IFD `to`: an IFD chain that loops. */
static void loop_ifd_chain(const char *path, int from, int to) {
    size_t len = 0;
    uint8_t *b = (uint8_t *)dq_test_read_file(path, &len);
    g_assert_true(b[0] == 'I' && b[1] == 'I');
    uint32_t offsets[16];
    uint32_t off = b[4] | b[5] << 8 | b[6] << 16 | (uint32_t)b[7] << 24;
    int n = 0;
    while (off != 0 && n < 16) {
        offsets[n++] = off;
        uint32_t next_at = off + 2 + 12 * (b[off] | b[off + 1] << 8);
        off = b[next_at] | b[next_at + 1] << 8 | b[next_at + 2] << 16 |
              (uint32_t)b[next_at + 3] << 24;
    }
    g_assert_cmpint(from, <, n);
    g_assert_cmpint(to, <, n);
    // cppcheck-suppress uninitvar -- from, to < n were set
    uint32_t next_at = offsets[from] + 2 + 12 * (b[offsets[from]] | b[offsets[from] + 1] << 8);
    for (int i = 0; i < 4; i++)
        b[next_at + i] = (uint8_t)(offsets[to] >> (8 * i));
    g_assert_true(g_file_set_contents(path, (char *)b, (gssize)len, NULL));
    g_free(b);
}

/* An IFD chain that loops back (the last IFD's next offset points at an earlier one): every page
 * it reaches is kept and the document is ok, as Pillow 12.3.0 reads it (n_frames counts the
 * IFDs before the loop: 3 here, 1 for a loop to itself, checked), but its message says so. */
static void test_tiff_ifd_loop(void) {
    Fixture f;
    fixture_init_small(&f);
    char *back = in_dir(&f, "loop-back.tif");
    char *self = in_dir(&f, "loop-self.tif");
    write_tiff(back, V_GRAY8, 1, 3);
    loop_ifd_chain(back, 2, 1);
    write_tiff(self, V_GRAY8, 1, 1);
    loop_ifd_chain(self, 0, 0);
    const char *paths[] = {back, self};
    const int pages[] = {3, 1};
    for (int i = 0; i < 2; i++) {
        run_ingest(&f, paths[i]);
        assert_doc(&f, paths[i], "ok", NULL);
        g_assert_cmpint(f.sum.documents_ok, ==, 1);
        g_assert_cmpint(query_int(&f, "SELECT page_count FROM documents WHERE path = %Q", paths[i]),
                        ==, pages[i]);
        g_assert_cmpint(query_int(&f,
                                  "SELECT count(*) FROM pages p JOIN documents d ON d.id = "
                                  "p.document_id WHERE d.path = %Q AND p.status = 'ok'",
                                  paths[i]),
                        ==, pages[i]);
        char *msg = doc_field(&f, paths[i], "error_message");
        if (msg == NULL || strstr(msg, paths[i]) == NULL || strstr(msg, "loops") == NULL)
            g_error("%s: the message does not say the IFD chain loops: %s", paths[i],
                    msg ? msg : "(none)");
        g_free(msg);
    }
    g_free(back);
    g_free(self);
    fixture_clear(&f);
}

static void test_failure_reasons(void) {
    Fixture f;
    fixture_init_small(&f);
    /* empty */
    char *empty = in_dir(&f, "empty.pdf");
    g_assert_true(g_file_set_contents(empty, "", 0, NULL));
    run_ingest(&f, empty);
    assert_doc(&f, empty, "failed", "empty");
    /* not a document, named explicitly */
    char *txt = in_dir(&f, "notes.txt");
    g_assert_true(g_file_set_contents(txt, "just some text\n", -1, NULL));
    run_ingest(&f, txt);
    assert_doc(&f, txt, "failed", "not_a_document");
    char *kind = doc_field(&f, txt, "kind");
    g_assert_cmpstr(kind, ==, "unknown");
    g_free(kind);
    /* unreadable: missing, and (when not root) without permission */
    char *missing = in_dir(&f, "missing.tif");
    run_ingest(&f, missing);
    assert_doc(&f, missing, "failed", "unreadable");
    char *nosha = doc_field(&f, missing, "sha256");
    g_assert_null(nosha);
    /* an empty path names no file, not the current folder (the test runs in the build tree) */
    run_ingest(&f, "");
    assert_doc(&f, "", "failed", "unreadable");
    g_assert_cmpint(f.sum.documents_ok, ==, 0);
    if (geteuid() != 0) {
        char *locked = in_dir(&f, "locked.tif");
        write_tiff(locked, V_GRAY8, 1, 1);
        g_chmod(locked, 0);
        run_ingest(&f, locked);
        assert_doc(&f, locked, "failed", "unreadable");
        g_chmod(locked, 0644);
        g_free(locked);
    } else {
        g_test_message("running as root: permission-denied case not testable, missing file only");
    }
    /* a codec libtiff was not built with (JPEG 2000, 34712) */
    char *j2k = in_dir(&f, "j2k.tif");
    write_tiff(j2k, V_GRAY8, 1, 1);
    patch_compression(j2k, 34712);
    run_ingest(&f, j2k);
    assert_doc(&f, j2k, "failed", "unsupported_codec");
    /* too many pixels, too many pages */
    char *big = in_dir(&f, "big.tif");
    write_tiff(big, V_GRAY8, 1, 1);
    f.opt.max_pixels = TW * TH - 1;
    run_ingest(&f, big);
    assert_doc(&f, big, "failed", "too_many_pixels");
    /* ...and by its output: --max-pixels bounds every image a page makes, so an upscaled page
     * (64 x 40 decoded, 2560 pixels; 128 x 80 stored, 10240) fails as a PDF page rendered at
     * that size does (test_failures_per_render_settings). */
    char *upscaled = in_dir(&f, "upscaled.tif");
    write_tiff(upscaled, V_GRAY8, 6, 1);
    f.opt.tile = 128;
    f.opt.max_pixels = 2 * TW * TH;
    run_ingest(&f, upscaled);
    assert_doc(&f, upscaled, "failed", "too_many_pixels");
    char *why = doc_field(&f, upscaled, "error_message");
    if (strstr(why, "80x128") == NULL) /* Orientation 6: shown 40 x 64, stored 80 x 128 */
        g_error("the message does not name the output size: %s", why);
    g_free(why);
    f.opt.max_pixels = 128 * 80;
    f.opt.retry_failed = TRUE;
    run_ingest(&f, upscaled);
    assert_doc(&f, upscaled, "ok", NULL);
    f.opt.retry_failed = FALSE;
    f.opt.tile = 64;
    g_free(upscaled);
    f.opt.max_pixels = 1000000;
    char *pages = in_dir(&f, "pages.tif");
    write_tiff(pages, V_GRAY8, 1, 3);
    f.opt.max_pages = 2;
    run_ingest(&f, pages);
    assert_doc(&f, pages, "failed", "too_many_pages");
    g_assert_cmpint(query_int(&f, "SELECT page_count FROM documents WHERE path = %Q", pages), ==,
                    3);
    /* A document of exactly --max-pages pages is within the limit. */
    char *at_limit = in_dir(&f, "at-limit.tif");
    write_tiff(at_limit, V_GRAY8, 1, 2);
    run_ingest(&f, at_limit);
    assert_doc(&f, at_limit, "ok", NULL);
    g_free(at_limit);
    /* Unchanged bytes are not rendered again... */
    f.opt.max_pages = 100;
    run_ingest(&f, pages);
    g_assert_cmpint(f.sum.unchanged, ==, 1);
    assert_doc(&f, pages, "failed", "too_many_pages");
    /* ...unless asked: the same row (version 1) now holds the pages. */
    f.opt.retry_failed = TRUE;
    run_ingest(&f, pages);
    assert_doc(&f, pages, "ok", NULL);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents WHERE path = %Q", pages), ==, 1);
    g_assert_cmpint(query_int(&f,
                              "SELECT count(*) FROM pages p JOIN documents d ON d.id = "
                              "p.document_id WHERE d.path = %Q AND p.status = 'ok'",
                              pages),
                    ==, 3);
    /* A failure that cannot pass (the bytes are still empty) is not retried. */
    run_ingest(&f, empty);
    g_assert_cmpint(f.sum.unchanged, ==, 1);
    g_free(empty);
    g_free(txt);
    g_free(missing);
    g_free(nosha);
    g_free(j2k);
    g_free(big);
    g_free(pages);
    fixture_clear(&f);
}

static void test_crash_and_hang_cost_one_page(void) {
    Fixture f;
    fixture_init_small(&f);
    /* The crash run has time to spare: on a loaded machine under ASan a page can take over a
     * second to reach the fault, and the crash must not be taken for a hang. */
    f.opt.page_timeout_s = 60;
    PageSize sizes[] = {{100, 100}, {100, 100}, {100, 100}, {100, 100}};
    char *crash = in_dir(&f, "crash.pdf");
    char *hang = in_dir(&f, "hang.pdf");
    char *fine = in_dir(&f, "fine.pdf");
    write_cairo_pdf(crash, sizes, 4);
    write_cairo_pdf(hang, sizes, 2);
    write_cairo_pdf(fine, sizes, 1);
    g_setenv("DOCQA_INGEST_TEST_FAULT", "crash:crash.pdf:2", TRUE);
    gint64 t0 = g_get_monotonic_time();
    run_ingest(&f, crash);
    double crash_s = (g_get_monotonic_time() - t0) / 1e6;
    g_setenv("DOCQA_INGEST_TEST_FAULT", "hang:hang.pdf:1", TRUE);
    /* The hang must outlast the page timeout and no other page may: each page's wait is a part
     * of what the whole crash run (a worker started twice, four pages) took just now, on this
     * machine as loaded as it is. A fixed 2 s was too little under ASan on a loaded CI host. */
    f.opt.page_timeout_s = MAX(2, (int)ceil(3 * crash_s));
    g_test_message("crash run: %.2f s; page timeout %d s", crash_s, f.opt.page_timeout_s);
    const char *paths[] = {hang, fine, NULL};
    dq_ingest_summary_clear(&f.sum);
    GError *err = NULL;
    g_assert_true(dq_ingest_run(f.store, paths, &f.opt, &f.sum, &err));
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    assert_doc(&f, crash, "partial", "render_crashed");
    g_assert_cmpint(query_int(&f,
                              "SELECT group_concat(page_number || status, ',') = "
                              "'1ok,2failed,3ok,4ok' FROM (SELECT * FROM pages p JOIN documents "
                              "d ON d.id = p.document_id WHERE d.path = %Q ORDER BY page_number)",
                              crash),
                    ==, 1);
    assert_doc(&f, hang, "partial", "render_timeout");
    assert_doc(&f, fine, "ok", NULL);
    g_free(crash);
    g_free(hang);
    g_free(fine);
    fixture_clear(&f);
}

/* A page whose PNG cannot be written (its folder in the page store is blocked by a file) is
 * store_failed; works as root too, unlike permissions. */
static void test_store_failure(void) {
    Fixture f;
    fixture_init_small(&f);
    char *tif = in_dir(&f, "page.tif");
    write_tiff(tif, V_GRAY8, 1, 1);
    /* Learn the page's content address from a first ingest into another database. */
    Fixture g;
    fixture_init(&g);
    g.opt = f.opt;
    run_ingest(&g, tif);
    char *sha = query_text(&g, "SELECT image_sha256 FROM pages");
    g_assert_nonnull(sha);
    fixture_clear(&g);
    char *store_dir = dq_ingest_page_store_dir(f.db_path);
    char prefix[3] = {sha[0], sha[1], 0};
    char *blocker = g_build_filename(store_dir, prefix, NULL);
    g_assert_cmpint(g_mkdir_with_parents(store_dir, 0755), ==, 0);
    g_assert_true(g_file_set_contents(blocker, "not a folder", -1, NULL));
    run_ingest(&f, tif);
    assert_doc(&f, tif, "failed", "store_failed");
    g_free(blocker);
    g_free(store_dir);
    g_free(sha);
    g_free(tif);
    fixture_clear(&f);
}

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#ifndef UNDER_ASAN
/* An all-white G4 TIFF of side x side pixels: a few kilobytes that decode to side^2 x 4 bytes. */
static void write_white_g4(const char *path, int side) {
    TIFF *t = TIFFOpen(path, "w");
    g_assert_nonnull(t);
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, side);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, side);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 1);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 1);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISWHITE);
    TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_CCITTFAX4);
    TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, side);
    uint8_t *row = g_malloc0((size_t)side / 8 + 1);
    for (int y = 0; y < side; y++)
        g_assert_cmpint(TIFFWriteScanline(t, row, (uint32_t)y, 0), ==, 1);
    g_free(row);
    TIFFClose(t);
}
#endif

/* --mem-limit bounds what rendering adds to a worker, not the address space it starts with:
 * the CUDA build maps about 1 GB of libraries (libcublasLt) and OpenBLAS reserves buffers per
 * core, none of it a page's doing. 1 GiB reserved here (PROT_NONE: address space, no memory),
 * inherited by the forked workers, stands for that. Under 256 MiB a normal page renders; a
 * 6000 x 6000 page (144 MB raster) fails under 120 MiB and a 10000 x 10000 one (400 MB) under
 * 256 MiB, reported, nothing crashes. */
static void test_memory_limit(void) {
#ifdef UNDER_ASAN
    g_test_skip("ASan reserves terabytes of address space: no RLIMIT_AS under the sanitizer");
    return;
#else
    size_t reserve = (size_t)1 << 30;
    void *libraries =
        mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    g_assert_true(libraries != MAP_FAILED);
    Fixture f;
    fixture_init_small(&f);
    f.opt.mem_limit_mb = 256;
    char *pdf = in_dir(&f, "normal.pdf");
    PageSize letter = {612, 792};
    write_cairo_pdf(pdf, &letter, 1);
    f.opt.n_res = 40; /* 2560 px, a 2560 x 1978 page: 20 MB of pixels and then some */
    run_ingest(&f, pdf);
    assert_doc(&f, pdf, "ok", NULL);
    f.opt.n_res = 1;
    char *huge = in_dir(&f, "huge.tif");
    write_white_g4(huge, 10000);
    run_ingest(&f, huge);
    assert_doc(&f, huge, "failed", "out_of_memory");
    char *path = in_dir(&f, "big.tif");
    write_white_g4(path, 6000);
    f.opt.mem_limit_mb = 120;
    run_ingest(&f, path);
    assert_doc(&f, path, "failed", "out_of_memory");
    /* With room, the same file renders (after --retry-failed). */
    f.opt.mem_limit_mb = 4096;
    f.opt.retry_failed = TRUE;
    run_ingest(&f, path);
    assert_doc(&f, path, "ok", NULL);
    g_free(path);
    g_free(huge);
    g_free(pdf);
    fixture_clear(&f);
    munmap(libraries, reserve);
#endif
}

#ifndef UNDER_ASAN /* no memory limit to meet under the sanitizer */
/* A JPEG 2000 image that claims 10^6 x 10^6 pixels in 145 bytes: openjpeg allocates until the
 * limit, then poppler or openjpeg aborts or crashes on the failed allocation. */
static void write_jpx_bomb(const char *path) {
    static const uint8_t jpx[] = {
        0xff, 0x4f, 0xff, 0x51, 0x00, 0x29, 0x00, 0x00, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x0f,
        0x42, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x42, 0x40,
        0x00, 0x0f, 0x42, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x07, 0x01, 0x01, 0xff, 0x52, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x01, 0x00, 0x05, 0x04,
        0x04, 0x00, 0x00, 0xff, 0x5c, 0x00, 0x04, 0x40, 0x40, 0xff, 0x90, 0x00, 0x0a, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x93};
    const char *content = "q 612 0 0 792 0 0 cm /Im0 Do Q";
    GString *pdf = g_string_new("%PDF-1.5\n");
    gsize off[5];
    const char *objs[] = {
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << "
        "/XObject << /Im0 5 0 R >> >> >>",
    };
    for (int i = 0; i < 3; i++) {
        off[i] = pdf->len;
        g_string_append_printf(pdf, "%d 0 obj\n%s\nendobj\n", i + 1, objs[i]);
    }
    off[3] = pdf->len;
    g_string_append_printf(pdf, "4 0 obj\n<< /Length %zu >>\nstream\n%s\nendstream\nendobj\n",
                           strlen(content), content);
    off[4] = pdf->len;
    gsize len = sizeof jpx + 64 + 2;
    g_string_append_printf(pdf,
                           "5 0 obj\n<< /Type /XObject /Subtype /Image /Width 1000000 /Height "
                           "1000000 /Filter /JPXDecode /Length %zu >>\nstream\n",
                           len);
    g_string_append_len(pdf, (const char *)jpx, sizeof jpx);
    for (int i = 0; i < 64; i++)
        g_string_append_c(pdf, '\0');
    g_string_append_len(pdf, "\xff\xd9", 2);
    g_string_append(pdf, "\nendstream\nendobj\n");
    gsize xref = pdf->len;
    g_string_append(pdf, "xref\n0 6\n0000000000 65535 f \n");
    for (int i = 0; i < 5; i++)
        g_string_append_printf(pdf, "%010zu 00000 n \n", off[i]);
    g_string_append_printf(pdf, "trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%zu\n%%%%EOF\n",
                           xref);
    write_gstring(path, pdf);
}
#endif

/* A decoder that dies because an allocation failed under --mem-limit (an abort, or a crash on
 * the NULL it went on with) is out_of_memory, which --retry-failed retries with more room, not
 * render_crashed. */
static void test_out_of_memory_in_decoder(void) {
#ifdef UNDER_ASAN
    g_test_skip("ASan reserves terabytes of address space: no RLIMIT_AS under the sanitizer");
    return;
#else
    Fixture f;
    fixture_init(&f);
    f.opt.mem_limit_mb = 1024;
    char *pdf = in_dir(&f, "jpx.pdf");
    write_jpx_bomb(pdf);
    run_ingest(&f, pdf);
    assert_doc(&f, pdf, "failed", "out_of_memory");
    char *msg = doc_field(&f, pdf, "error_message");
    g_assert_nonnull(strstr(msg, "out of memory under the limit of 1024 MiB per render process"));
    g_free(msg);
    g_free(pdf);
    fixture_clear(&f);
#endif
}

/* A real JPEG: a 16 x 16 gray ramp, as a camera or scanner would save it. */
static void write_jpeg(const char *path) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long len = 0;
    jpeg_mem_dest(&c, &buf, &len);
    c.image_width = 16;
    c.image_height = 16;
    c.input_components = 1;
    c.in_color_space = JCS_GRAYSCALE;
    jpeg_set_defaults(&c);
    jpeg_start_compress(&c, TRUE);
    uint8_t row[16];
    while (c.next_scanline < c.image_height) {
        for (int x = 0; x < 16; x++)
            row[x] = (uint8_t)(x * 16 + c.next_scanline);
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    g_assert_true(g_file_set_contents(path, (const char *)buf, (gssize)len, NULL));
    free(buf);
}

static void write_png(const char *path) {
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 16, 16);
    g_assert_cmpint(cairo_surface_write_to_png(s, path), ==, CAIRO_STATUS_SUCCESS);
    cairo_surface_destroy(s);
}

/* The first `len` bytes of a committed corpus file (len 0: all of it) written to `path`,
 * after `prefix`. */
static void write_corpus_part(const char *path, const char *prefix, const char *corpus_file,
                              size_t len) {
    char *src =
        g_build_filename(dq_test_source_dir(), "tests", "ingest", "corpus", corpus_file, NULL);
    size_t n = 0;
    char *bytes = dq_test_read_file(src, &n);
    g_assert_cmpuint(len, <=, n);
    GString *out = g_string_new(prefix);
    g_string_append_len(out, bytes, (gssize)(len ? len : n));
    g_assert_true(g_file_set_contents(path, out->str, (gssize)out->len, NULL));
    g_string_free(out, TRUE);
    g_free(bytes);
    g_free(src);
}

static void assert_message_has(Fixture *f, const char *path, const char *tail) {
    char *msg = doc_field(f, path, "error_message");
    char *want = g_strdup_printf("%s: %s", path, tail);
    if (msg == NULL || strstr(msg, want) == NULL)
        g_error("%s: message %s, want %s", path, msg ? msg : "(none)", want);
    g_free(want);
    g_free(msg);
}

/* A file named .tif or .pdf that is something else (a photo saved as .tif, a web server's error
 * page saved as .pdf) is not_a_document, its message saying what it is; one with the right
 * header but broken inside, cut short or truncated, stays damaged, and so does a .pdf of no
 * known format that poppler cannot open; a PDF whose header poppler finds past the first 1024
 * bytes still renders. */
static void test_misnamed_files(void) {
    Fixture f;
    fixture_init_small(&f);
    char *dir = in_dir(&f, "archive");
    g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
    char *photo = g_build_filename(dir, "photo.tif", NULL);
    char *png = g_build_filename(dir, "scan.tiff", NULL);
    char *html = g_build_filename(dir, "invoice.pdf", NULL);
    char *text = g_build_filename(dir, "notes.pdf", NULL);
    char *blob = g_build_filename(dir, "blob.tif", NULL);
    char *late = g_build_filename(dir, "late-header.pdf", NULL);
    char *cut_pdf = g_build_filename(dir, "cut.pdf", NULL);
    char *cut_tif = g_build_filename(dir, "cut.tif", NULL);
    char *stub_pdf = g_build_filename(dir, "stub.pdf", NULL);
    char *stub_tif = g_build_filename(dir, "stub.tif", NULL);
    char *jpg = g_build_filename(dir, "photo.jpg", NULL);
    write_jpeg(photo);
    write_jpeg(jpg);
    write_png(png);
    g_assert_true(g_file_set_contents(
        html,
        "\xef\xbb\xbf\n<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
        "<body>The document you asked for is not here.</body></html>\n",
        -1, NULL));
    GString *lines = g_string_new(NULL);
    for (int i = 0; i < 60; i++)
        g_string_append(lines, "Received: from mail.example.org by archive; a header line\n");
    g_assert_cmpuint(lines->len, >, 1024);
    g_assert_true(g_file_set_contents(text, lines->str, (gssize)lines->len, NULL));
    g_assert_true(g_file_set_contents(blob, "\x01\x02\x03\x04 binary \xfe\xff", 14, NULL));
    write_corpus_part(late, lines->str, "pdf/pdfium-hello_world.pdf", 0);
    write_corpus_part(cut_pdf, "", "pdf/pdfium-hello_world.pdf", 300);
    write_corpus_part(cut_tif, "", "tiff/libtiffpic-smallliz.tif", 200);
    g_assert_true(g_file_set_contents(stub_pdf, "%PD", 3, NULL));
    g_assert_true(g_file_set_contents(stub_tif, "II*", 3, NULL));
    run_ingest(&f, dir);
    assert_doc(&f, photo, "failed", "not_a_document");
    assert_message_has(&f, photo, "a JPEG image, not a TIFF");
    assert_doc(&f, png, "failed", "not_a_document");
    assert_message_has(&f, png, "a PNG image, not a TIFF");
    assert_doc(&f, html, "failed", "not_a_document");
    assert_message_has(&f, html, "HTML, not a PDF");
    /* Text poppler finds no PDF in: nothing says it is not a PDF whose start was lost, so it
     * is damaged, as the corpus manifest records qpdf's "oops\n" bad1.pdf. */
    assert_doc(&f, text, "failed", "damaged");
    assert_message_has(&f, text, "PDF document is damaged (it does not begin with a PDF header)");
    assert_doc(&f, blob, "failed", "not_a_document");
    assert_message_has(&f, blob, "not a TIFF (it does not begin with a TIFF header)");
    const char *not_docs[] = {photo, png, html, blob};
    for (size_t i = 0; i < G_N_ELEMENTS(not_docs); i++) {
        char *kind = doc_field(&f, not_docs[i], "kind");
        g_assert_cmpstr(kind, ==, "unknown");
        g_free(kind);
    }
    assert_doc(&f, late, "ok", NULL);
    const char *damaged[] = {cut_pdf, cut_tif, stub_pdf, stub_tif};
    for (size_t i = 0; i < G_N_ELEMENTS(damaged); i++)
        assert_doc(&f, damaged[i], "failed", "damaged");
    /* The .jpg in the folder is no document: skipped, as ever. */
    g_assert_cmpint(f.sum.skipped, ==, 1);
    g_assert_cmpint(f.sum.files, ==, 10);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_cmpint(f.sum.documents_failed, ==, 9);
    /* Named, it is recorded, saying what it is. */
    run_ingest(&f, jpg);
    assert_doc(&f, jpg, "failed", "not_a_document");
    assert_message_has(&f, jpg, "a JPEG image, neither a PDF nor a TIFF");
    /* Recorded as damaged by an earlier version (as it did): the same bytes are recorded again,
     * in place, as what they are, kind included; then they are unchanged. */
    char *sql = sqlite3_mprintf("UPDATE documents SET kind = 'tiff', error_code = 'damaged', "
                                "error_message = 'not a readable TIFF' WHERE path = %Q",
                                photo);
    g_assert_cmpint(sqlite3_exec(dq_store_sqlite(f.store), sql, NULL, NULL, NULL), ==, SQLITE_OK);
    sqlite3_free(sql);
    run_ingest(&f, photo);
    g_assert_cmpint(f.sum.documents_failed, ==, 1);
    assert_doc(&f, photo, "failed", "not_a_document");
    assert_message_has(&f, photo, "a JPEG image, not a TIFF");
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents WHERE path = %Q", photo), ==, 1);
    char *photo_kind = doc_field(&f, photo, "kind");
    g_assert_cmpstr(photo_kind, ==, "unknown");
    g_free(photo_kind);
    run_ingest(&f, photo);
    g_assert_cmpint(f.sum.unchanged, ==, 1);
    g_assert_cmpint(f.sum.unchanged_not_ok, ==, 1);
    const char *all[] = {photo,   png,     html,     text,     blob, late,
                         cut_pdf, cut_tif, stub_pdf, stub_tif, jpg,  dir};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
        g_free((char *)all[i]);
    g_string_free(lines, TRUE);
    fixture_clear(&f);
}

/* A path of 3300 bytes, mostly two-byte characters, reaches the database whole in every
 * message, as valid UTF-8: a document the worker cannot open (its message and libtiff's both
 * name the file) and one whose only page fails. */
static void test_long_path(void) {
    Fixture f;
    fixture_init_small(&f);
    GString *dir = g_string_new(f.dir);
    for (int i = 0; i < 16; i++) {
        g_string_append_c(dir, '/');
        for (int k = 0; k < 100; k++)
            g_string_append(dir, "\xc3\xbc"); /* u with diaeresis */
    }
    g_assert_cmpint(g_mkdir_with_parents(dir->str, 0755), ==, 0);
    char *damaged = g_build_filename(dir->str, "damaged.tif", NULL);
    char *codec = g_build_filename(dir->str, "codec.tif", NULL);
    g_assert_cmpuint(strlen(damaged), >, 3200);
    /* A TIFF header cut short: libtiff's "Cannot read TIFF header" names the file. */
    g_assert_true(g_file_set_contents(damaged, "II*\0\x08\0", 6, NULL));
    write_tiff(codec, V_GRAY8, 1, 1);
    patch_compression(codec, 60000);
    run_ingest(&f, dir->str);
    assert_doc(&f, damaged, "failed", "damaged");
    assert_doc(&f, codec, "failed", "unsupported_codec");
    const char *paths[] = {damaged, codec};
    for (int i = 0; i < 2; i++) {
        char *msg = doc_field(&f, paths[i], "error_message");
        g_assert_nonnull(msg);
        g_assert_true(g_utf8_validate(msg, -1, NULL));
        const char *at = strstr(msg, paths[i]);
        if (at == NULL)
            g_error("the message does not name %s whole: %s", paths[i], msg);
        /* libtiff's own message names the file too */
        if (i == 0 && strstr(at + strlen(paths[i]), paths[i]) == NULL)
            g_error("libtiff's message was cut: %s", msg);
        g_free(msg);
    }
    g_free(damaged);
    g_free(codec);
    g_string_free(dir, TRUE);
    fixture_clear(&f);
}

static void test_idempotence_and_versions(void) {
    Fixture f;
    fixture_init_small(&f);
    char *dir = in_dir(&f, "docs");
    g_mkdir(dir, 0755);
    char *a = g_build_filename(dir, "a.pdf", NULL);
    char *b = g_build_filename(dir, "b.tif", NULL);
    PageSize one[] = {{100, 200}, {200, 100}};
    write_cairo_pdf(a, one, 2);
    write_tiff(b, V_RGB_LZW, 1, 2);
    run_ingest(&f, dir);
    g_assert_cmpint(f.sum.documents_ok, ==, 2);
    g_assert_cmpint(f.sum.pages_ok, ==, 4);
    gint64 docs = query_int(&f, "SELECT count(*) FROM documents");
    gint64 pages = query_int(&f, "SELECT count(*) FROM pages");

    /* Same bytes: nothing added. */
    run_ingest(&f, dir);
    g_assert_cmpint(f.sum.unchanged, ==, 2);
    g_assert_cmpint(f.sum.documents_ok + f.sum.pages_ok, ==, 0);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents"), ==, docs);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM pages"), ==, pages);

    /* Changed bytes at the same path: version 2, version 1 kept with its pages. */
    PageSize three[] = {{100, 100}, {100, 100}, {100, 100}};
    write_cairo_pdf(a, three, 3);
    run_ingest(&f, dir);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_cmpint(f.sum.unchanged, ==, 1);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents WHERE path = %Q", a), ==, 2);
    g_assert_cmpint(query_int(&f, "SELECT version FROM documents_current WHERE path = %Q", a), ==,
                    2);
    g_assert_cmpint(query_int(&f, "SELECT page_count FROM documents_current WHERE path = %Q", a),
                    ==, 3);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM pages"), ==, pages + 3);

    /* Other render settings: pages added to the same documents, no new document rows. */
    f.opt.tile = 32;
    run_ingest(&f, dir);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents"), ==, docs + 1);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM pages WHERE render_settings LIKE "
                                  "'%%\"tile\":32}'"),
                    ==, 5);
    /* Identical pages are stored once: the page store has one file per distinct image. */
    gint64 distinct = query_int(&f, "SELECT count(DISTINCT image_sha256) FROM pages");
    char *store_dir = dq_ingest_page_store_dir(f.db_path);
    int files = 0;
    GDir *d1 = g_dir_open(store_dir, 0, NULL);
    const char *n1;
    while (d1 && (n1 = g_dir_read_name(d1))) {
        char *p1 = g_build_filename(store_dir, n1, NULL);
        GDir *d2 = g_dir_open(p1, 0, NULL);
        const char *n2;
        while (d2 && (n2 = g_dir_read_name(d2))) {
            char *p2 = g_build_filename(p1, n2, NULL);
            GDir *d3 = g_dir_open(p2, 0, NULL);
            while (d3 && g_dir_read_name(d3))
                files++;
            if (d3)
                g_dir_close(d3);
            g_free(p2);
        }
        if (d2)
            g_dir_close(d2);
        g_free(p1);
    }
    if (d1)
        g_dir_close(d1);
    g_assert_cmpint(files, ==, distinct);
    g_assert_cmpint(distinct, <, query_int(&f, "SELECT count(*) FROM pages"));
    g_free(store_dir);
    g_free(a);
    g_free(b);
    g_free(dir);
    fixture_clear(&f);
}

/* Bytes that go back to an older version's are a new version, the newest: documents_current
 * must show what the file holds now. Also when the version in between was unreadable (the
 * file missing for a while). */
static void test_older_bytes_again(void) {
    Fixture f;
    fixture_init_small(&f);
    char *a = in_dir(&f, "a.pdf");
    char *first = in_dir(&f, "first.pdf");
    PageSize one[] = {{100, 200}};
    PageSize two[] = {{200, 100}, {200, 100}};
    write_cairo_pdf(first, one, 1);
    gchar *bytes1 = NULL;
    gsize len1 = 0;
    g_assert_true(g_file_get_contents(first, &bytes1, &len1, NULL));
    g_assert_true(g_file_set_contents(a, bytes1, (gssize)len1, NULL));
    run_ingest(&f, a);
    char *sha1 = doc_field(&f, a, "sha256");
    write_cairo_pdf(a, two, 2);
    run_ingest(&f, a);
    g_assert_cmpint(query_int(&f, "SELECT version FROM documents_current WHERE path = %Q", a), ==,
                    2);
    /* Back to version 1's bytes: version 3, rendered, current. */
    g_assert_true(g_file_set_contents(a, bytes1, (gssize)len1, NULL));
    run_ingest(&f, a);
    g_assert_cmpint(f.sum.unchanged, ==, 0);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_cmpint(query_int(&f, "SELECT version FROM documents_current WHERE path = %Q", a), ==,
                    3);
    char *sha3 = doc_field(&f, a, "sha256");
    g_assert_cmpstr(sha3, ==, sha1);
    g_assert_cmpint(query_int(&f,
                              "SELECT count(*) FROM pages p JOIN documents_current d ON d.id = "
                              "p.document_id WHERE d.path = %Q AND p.status = 'ok'",
                              a),
                    ==, 1);
    /* The same bytes again: unchanged now. */
    run_ingest(&f, a);
    g_assert_cmpint(f.sum.unchanged, ==, 1);
    /* Gone for a while (unreadable, version 4), then back with the same bytes: version 5. */
    g_assert_cmpint(g_rename(a, first), ==, 0);
    run_ingest(&f, a);
    assert_doc(&f, a, "failed", "unreadable");
    g_assert_cmpint(g_rename(first, a), ==, 0);
    run_ingest(&f, a);
    g_assert_cmpint(f.sum.unchanged, ==, 0);
    assert_doc(&f, a, "ok", NULL);
    g_assert_cmpint(query_int(&f, "SELECT version FROM documents_current WHERE path = %Q", a), ==,
                    5);
    g_free(sha1);
    g_free(sha3);
    g_free(bytes1);
    g_free(first);
    g_free(a);
    fixture_clear(&f);
}

static gint64 pages_at(Fixture *f, const char *path, int n_res, const char *status) {
    return query_int(f,
                     "SELECT count(*) FROM pages p JOIN documents_current d ON d.id = "
                     "p.document_id WHERE d.path = %Q AND p.status = %Q AND p.render_settings "
                     "LIKE '%%\"n_res\":%d,%%'",
                     path, status, n_res);
}

/* "Unchanged" means the same bytes AND pages for these render settings: a failure at one
 * setting neither hides the document from another, nor goes unreported, nor escapes
 * --retry-failed. */
static void test_failures_per_render_settings(void) {
    Fixture f;
    fixture_init(&f);
    f.opt.tile = 64;
    PageSize one[] = {{100, 100}};
    /* Failed at n_res 2 (too many pixels), then rendered at n_res 1. */
    char *a = in_dir(&f, "a.pdf");
    write_cairo_pdf(a, one, 1);
    f.opt.n_res = 2;
    f.opt.max_pixels = 1000;
    run_ingest(&f, a);
    assert_doc(&f, a, "failed", "too_many_pixels");
    f.opt.n_res = 1;
    f.opt.max_pixels = 1000000;
    run_ingest(&f, a);
    g_assert_cmpint(f.sum.unchanged, ==, 0);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_cmpint(pages_at(&f, a, 1, "ok"), ==, 1);
    assert_doc(&f, a, "ok", NULL);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents WHERE path = %Q", a), ==, 1);

    /* Fine at n_res 1, failed at n_res 2: reported now and as an unchanged failure later... */
    char *b = in_dir(&f, "b.pdf");
    write_cairo_pdf(b, one, 1);
    run_ingest(&f, b);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    f.opt.n_res = 2;
    f.opt.max_pixels = 1000;
    run_ingest(&f, b);
    g_assert_cmpint(f.sum.documents_failed, ==, 1);
    assert_doc(&f, b, "failed", "too_many_pixels");
    g_assert_cmpint(pages_at(&f, b, 2, "failed"), ==, 1);
    f.opt.max_pixels = 1000000;
    run_ingest(&f, b);
    g_assert_cmpint(f.sum.unchanged, ==, 1);
    g_assert_cmpint(f.sum.unchanged_not_ok, ==, 1);
    /* ...while n_res 1 is still fine... */
    f.opt.n_res = 1;
    run_ingest(&f, b);
    g_assert_cmpint(f.sum.unchanged, ==, 1);
    g_assert_cmpint(f.sum.unchanged_not_ok, ==, 0);
    /* ...and retried on request, the failed rows replaced. */
    f.opt.n_res = 2;
    f.opt.retry_failed = TRUE;
    run_ingest(&f, b);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    assert_doc(&f, b, "ok", NULL);
    g_assert_cmpint(pages_at(&f, b, 2, "ok"), ==, 1);
    g_assert_cmpint(pages_at(&f, b, 2, "failed"), ==, 0);
    g_assert_cmpint(pages_at(&f, b, 1, "ok"), ==, 1);
    g_free(a);
    g_free(b);
    fixture_clear(&f);
}

/* A partial document whose failed page failed on a crash is rendered again under
 * --retry-failed, its row and page rows updated in place; one that is partial for a reason
 * that cannot pass is not. */
static void test_retry_partial(void) {
    Fixture f;
    fixture_init_small(&f);
    f.opt.jobs = 1;
    PageSize sizes[] = {{100, 100}, {100, 100}, {100, 100}};
    char *t = in_dir(&f, "t.pdf");
    write_cairo_pdf(t, sizes, 3);
    g_setenv("DOCQA_INGEST_TEST_FAULT", "crash:t.pdf:2", TRUE);
    run_ingest(&f, t);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    assert_doc(&f, t, "partial", "render_crashed");
    gint64 id = query_int(&f, "SELECT id FROM documents_current WHERE path = %Q", t);
    run_ingest(&f, t);
    g_assert_cmpint(f.sum.unchanged_not_ok, ==, 1);
    f.opt.retry_failed = TRUE;
    run_ingest(&f, t);
    g_assert_cmpint(f.sum.unchanged, ==, 0);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    assert_doc(&f, t, "ok", NULL);
    g_assert_cmpint(query_int(&f, "SELECT id FROM documents_current WHERE path = %Q", t), ==, id);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents"), ==, 1);
    g_assert_cmpint(pages_at(&f, t, 1, "ok"), ==, 3);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM pages"), ==, 3);
    run_ingest(&f, t);
    g_assert_cmpint(f.sum.unchanged, ==, 1);
    g_assert_cmpint(f.sum.unchanged_not_ok, ==, 0);
    g_free(t);
    fixture_clear(&f);
}

/* A file rewritten while its pages render: nothing is recorded (its hash and its pages would
 * be of different bytes), it is reported as changed, and the next run ingests the new bytes. */
static void test_changed_during_ingest(void) {
    Fixture f;
    fixture_init_small(&f);
    f.opt.jobs = 1;
    PageSize sizes[] = {{100, 100}, {100, 100}, {100, 100}};
    char *x = in_dir(&f, "x.pdf");
    write_cairo_pdf(x, sizes, 3);
    g_setenv("DOCQA_INGEST_TEST_FAULT", "rewrite:x.pdf:2", TRUE);
    run_ingest(&f, x);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    g_assert_cmpint(f.sum.changed, ==, 1);
    g_assert_cmpint(f.sum.documents_ok + f.sum.documents_partial + f.sum.documents_failed, ==, 0);
    g_assert_cmpint(f.sum.failures->len, ==, 1);
    const DqIngestFailure *fail = g_ptr_array_index(f.sum.failures, 0);
    g_assert_cmpstr(fail->status, ==, "changed");
    g_assert_cmpstr(fail->path, ==, x);
    g_assert_nonnull(strstr(fail->message, "ingest it again"));
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents"), ==, 0);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM pages"), ==, 0);
    run_ingest(&f, x);
    g_assert_cmpint(f.sum.changed, ==, 0);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    gchar *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(x, &bytes, &len, NULL));
    char *want = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)bytes, len);
    char *got = doc_field(&f, x, "sha256");
    g_assert_cmpstr(got, ==, want);
    g_assert_cmpint(query_int(&f, "SELECT bytes FROM documents_current"), ==, (gint64)len);
    g_free(got);
    g_free(want);
    g_free(bytes);
    g_free(x);
    fixture_clear(&f);
}

/* PNGs are written in <store>/.tmp and renamed into place; temporary files that killed workers
 * left there are removed by the next ingest once they are an hour old (a younger one may be
 * another ingest's, being written). */
static void test_temp_files_swept(void) {
    Fixture f;
    fixture_init_small(&f);
    char *store_dir = dq_ingest_page_store_dir(f.db_path);
    char *tmp_dir = g_build_filename(store_dir, ".tmp", NULL);
    g_assert_cmpint(g_mkdir_with_parents(tmp_dir, 0755), ==, 0);
    char *old = g_build_filename(tmp_dir, "left-by-a-killed-worker", NULL);
    char *young = g_build_filename(tmp_dir, "being-written", NULL);
    g_assert_true(g_file_set_contents(old, "half a png", -1, NULL));
    g_assert_true(g_file_set_contents(young, "half a png", -1, NULL));
    struct utimbuf two_hours_ago = {.actime = time(NULL) - 7200, .modtime = time(NULL) - 7200};
    g_assert_cmpint(utime(old, &two_hours_ago), ==, 0);
    char *pdf = in_dir(&f, "p.pdf");
    PageSize one[] = {{100, 100}};
    write_cairo_pdf(pdf, one, 1);
    run_ingest(&f, pdf);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_false(g_file_test(old, G_FILE_TEST_EXISTS));
    g_assert_true(g_file_test(young, G_FILE_TEST_EXISTS));
    /* Nothing else is left in .tmp, and the page is in place. */
    GDir *d = g_dir_open(tmp_dir, 0, NULL);
    g_assert_nonnull(d);
    g_assert_cmpstr(g_dir_read_name(d), ==, "being-written");
    g_assert_null(g_dir_read_name(d));
    g_dir_close(d);
    DqImage *img = load_page(&f, pdf, 1);
    dq_image_free(img);
    g_free(pdf);
    g_free(old);
    g_free(young);
    g_free(tmp_dir);
    g_free(store_dir);
    fixture_clear(&f);
}

/* Claim files nobody holds (an ingest killed while it rendered those documents) are removed
 * when ingest starts; one another process holds stays, and so does its lock. */
static void test_stale_claims_swept(void) {
    Fixture f;
    fixture_init_small(&f);
    char *store_dir = dq_ingest_page_store_dir(f.db_path);
    char *claims = g_build_filename(store_dir, ".claims", NULL);
    g_assert_cmpint(g_mkdir_with_parents(claims, 0755), ==, 0);
    char *stale = g_build_filename(claims, "0123.lock", NULL);
    char *held = g_build_filename(claims, "4567.lock", NULL);
    g_assert_true(g_file_set_contents(stale, "pid 1 on gone\n", -1, NULL));
    g_assert_true(g_file_set_contents(held, "pid 2 on here\n", -1, NULL));
    int ready[2];
    g_assert_cmpint(pipe(ready), ==, 0);
    pid_t holder = fork();
    g_assert_cmpint(holder, >=, 0);
    if (holder == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* not left holding it if an assertion fails */
        int fd = open(held, O_RDWR);
        char ok = fd >= 0 && flock(fd, LOCK_EX) == 0 ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    char ok = 0;
    g_assert_cmpint(read(ready[0], &ok, 1), ==, 1);
    g_assert_cmpint(ok, ==, 'y');
    char *pdf = in_dir(&f, "p.pdf");
    PageSize one[] = {{100, 100}};
    write_cairo_pdf(pdf, one, 1);
    run_ingest(&f, pdf);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_false(g_file_test(stale, G_FILE_TEST_EXISTS));
    g_assert_true(g_file_test(held, G_FILE_TEST_EXISTS));
    int fd = open(held, O_RDWR);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(flock(fd, LOCK_EX | LOCK_NB), !=, 0); /* still the holder's */
    close(fd);
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
    close(ready[0]);
    close(ready[1]);
    g_free(pdf);
    g_free(stale);
    g_free(held);
    g_free(claims);
    g_free(store_dir);
    fixture_clear(&f);
}

static char *page_png(Fixture *f, const char *path) {
    char *sha = query_text(f,
                           "SELECT p.image_sha256 FROM pages p JOIN documents_current d ON "
                           "d.id = p.document_id WHERE d.path = %Q AND p.page_number = 1",
                           path);
    g_assert_nonnull(sha);
    char *store_dir = dq_ingest_page_store_dir(f->db_path);
    char *png = dq_ingest_page_path(store_dir, sha);
    g_free(store_dir);
    g_free(sha);
    return png;
}

static gint64 file_size(const char *path) {
    GStatBuf st;
    return g_stat(path, &st) == 0 ? (gint64)st.st_size : -1;
}

/* Page PNGs follow the umask as the database and the store's folders do: 0666 less the umask. */
/* A page found stored already is not written again (the same file) but touched, so that a docqa
 * prune takes it for new until the row naming it commits (page_store_touch). */
static void test_page_found_stored_touched(void) {
    char *dir = dq_test_tmpdir();
    GBytes *png = g_bytes_new_static("the same page's bytes", 21);
    char sha[65], again[65];
    GError *err = NULL;
    g_assert_true(page_store_put(dir, png, 0, sha, &err));
    dq_assert_no_error(err);
    char *path = dq_ingest_page_path(dir, sha);
    struct timespec old[2] = {{.tv_sec = time(NULL) - 7200}, {.tv_sec = time(NULL) - 7200}};
    g_assert_cmpint(utimensat(AT_FDCWD, path, old, 0), ==, 0);
    GStatBuf before, after;
    g_assert_cmpint(g_stat(path, &before), ==, 0);
    g_assert_true(page_store_put(dir, png, 0, again, &err));
    dq_assert_no_error(err);
    g_assert_cmpstr(again, ==, sha);
    g_assert_cmpint(g_stat(path, &after), ==, 0);
    g_assert_cmpuint(after.st_ino, ==, before.st_ino);
    g_assert_cmpint(after.st_mtime, >, time(NULL) - 600);
    g_free(path);
    g_bytes_unref(png);
    g_free(dir);
}

static void test_page_mode_follows_umask(void) {
    Fixture f;
    fixture_init_small(&f);
    static const struct {
        mode_t umask;
        mode_t want;
    } cases[] = {{077, 0600}, {022, 0644}, {002, 0664}};
    mode_t old = umask(022);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        /* A page of its own each time: a page stored before is not written again. */
        char *name = g_strdup_printf("p%zu.pdf", i);
        char *pdf = in_dir(&f, name);
        PageSize one[] = {{100 + 10 * (double)i, 100}};
        write_cairo_pdf(pdf, one, 1);
        umask(cases[i].umask);
        run_ingest(&f, pdf);
        umask(022);
        assert_doc(&f, pdf, "ok", NULL);
        char *png = page_png(&f, pdf);
        GStatBuf st;
        g_assert_cmpint(g_stat(png, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 0777, ==, cases[i].want);
        g_free(png);
        g_free(pdf);
        g_free(name);
    }
    umask(old);
    fixture_clear(&f);
}

/* A page that would leave the page store's disk with less than --min-free is not written: the
 * document fails as store_failed (rendered again by the next ingest), its message naming the
 * folder, and what was stored before stays. */
static void test_disk_space_checked(void) {
    Fixture f;
    fixture_init_small(&f);
    char *first = in_dir(&f, "first.pdf"), *second = in_dir(&f, "second.pdf");
    PageSize a[] = {{100, 100}}, b[] = {{200, 100}};
    write_cairo_pdf(first, a, 1);
    write_cairo_pdf(second, b, 1);
    run_ingest(&f, first);
    assert_doc(&f, first, "ok", NULL);
    char *store_dir = dq_ingest_page_store_dir(f.db_path);
    struct statvfs vfs;
    g_assert_cmpint(statvfs(store_dir, &vfs), ==, 0);
    /* More kept free than the disk has: the next page cannot be written. */
    f.opt.min_free_mb = (gint64)(((guint64)vfs.f_bavail * vfs.f_frsize) >> 20) + 1024;
    run_ingest(&f, second);
    assert_doc(&f, second, "failed", "store_failed");
    char *msg = doc_field(&f, second, "error_message");
    char *want = g_strdup_printf("%s: ", store_dir);
    g_assert_nonnull(strstr(msg, want));
    g_assert_nonnull(strstr(msg, "(--min-free)"));
    assert_doc(&f, first, "ok", NULL);
    char *png = page_png(&f, first);
    g_assert_true(g_file_test(png, G_FILE_TEST_IS_REGULAR));
    /* With room again, the next plain ingest stores it: a full disk says nothing about the
     * file. */
    f.opt.min_free_mb = 0;
    run_ingest(&f, second);
    g_assert_cmpint(f.sum.resumed, ==, 1);
    assert_doc(&f, second, "ok", NULL);
    g_free(png);
    g_free(want);
    g_free(msg);
    g_free(store_dir);
    g_free(second);
    g_free(first);
    fixture_clear(&f);
}

static int fsync_fails(int fd) {
    (void)fd;
    errno = EIO;
    return -1;
}

/* A page whose folder cannot be synced after the rename may lose its name in a crash: it is not
 * recorded as stored (the document fails as store_failed, naming the folder), and the next
 * ingest, with the folder synced, stores it. */
static void test_page_folder_sync_checked(void) {
    Fixture f;
    fixture_init_small(&f);
    char *pdf = in_dir(&f, "doc.pdf");
    PageSize a[] = {{100, 100}};
    write_cairo_pdf(pdf, a, 1);
    /* the store there already: this is about a page's folders, not the store's own */
    char *store = dq_ingest_page_store_dir(f.db_path);
    g_assert_cmpint(g_mkdir_with_parents(store, 0755), ==, 0);
    g_free(store);
    page_store_set_dir_fsync_for_test(fsync_fails);
    run_ingest(&f, pdf);
    page_store_set_dir_fsync_for_test(NULL);
    assert_doc(&f, pdf, "failed", "store_failed");
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM pages WHERE status = 'failed' AND "
                                  "image_sha256 IS NULL AND error_code = 'store_failed'"),
                    ==, 1);
    char *msg = doc_field(&f, pdf, "error_message");
    char *store_dir = dq_ingest_page_store_dir(f.db_path);
    /* the page store, or a folder in it: the first folder synced holds the first one made */
    char *want = g_strdup_printf("%s", store_dir);
    g_assert_nonnull(strstr(msg, want));
    g_assert_nonnull(strstr(msg, ": cannot sync the folder (the page may not survive a crash): "));
    g_assert_nonnull(strstr(msg, g_strerror(EIO)));
    run_ingest(&f, pdf);
    assert_doc(&f, pdf, "ok", NULL);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM pages WHERE status = 'ok'"), ==, 1);
    char *png = page_png(&f, pdf);
    g_assert_true(g_file_test(png, G_FILE_TEST_IS_REGULAR));
    g_free(png);
    g_free(want);
    g_free(store_dir);
    g_free(msg);
    g_free(pdf);
    fixture_clear(&f);
}

/* The folders synced, one a line: pages are stored by render worker processes, which append
 * here (O_APPEND: whole lines from each). */
static char *synced_log;

static int fsync_recorded(int fd) {
    char *link = g_strdup_printf("/proc/self/fd/%d", fd);
    char *path = g_file_read_link(link, NULL);
    g_free(link);
    int log = open(synced_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (path != NULL && log >= 0) {
        char *line = g_strconcat(path, "\n", NULL);
        g_assert_cmpint(write(log, line, strlen(line)), ==, (gssize)strlen(line));
        g_free(line);
    }
    if (log >= 0)
        close(log);
    g_free(path);
    return fsync(fd);
}

static gboolean synced(const char *folder) {
    char *text = NULL;
    g_assert_true(g_file_get_contents(synced_log, &text, NULL, NULL));
    char **lines = g_strsplit(text, "\n", -1);
    gboolean found = g_strv_contains((const char *const *)lines, folder);
    g_strfreev(lines);
    g_free(text);
    return found;
}

/* Every folder a page's put makes is synced into its parent: a power loss forgets a new folder
 * whose parent was not synced, and the page file in it, while the row naming the page is on
 * disk (scripts/crash-sweep.py: a page row naming no file after ingest). Only the page's own
 * folder was synced. A second page in the same folders syncs only its own folder again. */
static void test_new_page_folders_synced(void) {
    Fixture f;
    fixture_init_small(&f);
    char *pdf = in_dir(&f, "doc.pdf");
    PageSize a[] = {{100, 100}};
    write_cairo_pdf(pdf, a, 1);
    synced_log = g_build_filename(f.dir, "synced.log", NULL);
    page_store_set_dir_fsync_for_test(fsync_recorded);
    run_ingest(&f, pdf);
    page_store_set_dir_fsync_for_test(NULL);
    assert_doc(&f, pdf, "ok", NULL);
    char *png = page_png(&f, pdf);
    char *store_dir = dq_ingest_page_store_dir(f.db_path);
    /* store/ab/cd/abcd....png: each folder from the database's down to the page's own */
    char *cd = g_path_get_dirname(png);
    char *ab = g_path_get_dirname(cd);
    char *db_dir = g_path_get_dirname(store_dir);
    g_assert_true(synced(cd));
    g_assert_true(synced(ab));
    g_assert_true(synced(store_dir));
    g_assert_true(synced(db_dir));
    g_free(db_dir);
    g_free(ab);
    g_free(cd);
    g_free(store_dir);
    g_free(png);
    g_free(synced_log);
    synced_log = NULL;
    g_free(pdf);
    fixture_clear(&f);
}

/* A page store whose disk has less than twice the page free fails the page by that rule, and
 * says so: with --min-free 0 the message read "would leave less than the 0 MiB kept free", no
 * reason at all. The page store is a full tmpfs of its own: a mount namespace, so root with
 * CAP_SYS_ADMIN; skipped otherwise. */
static void test_disk_space_rule_named(void) {
    char *dir = dq_test_tmpdir();
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        /* Everything SQLite here is the child's own: no connection crosses the fork. */
        Fixture f;
        memset(&f, 0, sizeof f);
        f.dir = g_strdup(dir);
        f.db_path = g_build_filename(dir, "docqa.db", NULL);
        char *store_dir = dq_ingest_page_store_dir(f.db_path);
        if (g_mkdir(store_dir, 0755) != 0 || unshare(CLONE_NEWNS) != 0 ||
            mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
            mount("tmpfs", store_dir, "tmpfs", 0, "size=256k") != 0)
            _exit(77);
        char *filler = g_build_filename(store_dir, "filler", NULL);
        FILE *fp = fopen(filler, "w");
        static char block[4096];
        while (fp != NULL && fwrite(block, 1, sizeof block, fp) == sizeof block && fflush(fp) == 0)
            ;
        if (fp != NULL)
            (void)fclose(fp); /* fails: the disk is full, as wanted */
        f.store = dq_store_open(f.db_path, NULL);
        dq_ingest_options_init(&f.opt);
        f.opt.jobs = 1;
        f.opt.n_res = 1;
        f.opt.tile = 64;
        f.opt.min_free_mb = 0;
        char *pdf = in_dir(&f, "page.pdf");
        PageSize a[] = {{100, 100}};
        write_cairo_pdf(pdf, a, 1);
        run_ingest(&f, pdf);
        char *code = doc_field(&f, pdf, "error_code"), *msg = doc_field(&f, pdf, "error_message");
        fprintf(stderr, "full page store, --min-free 0: %s: %s\n", code, msg);
        _exit(g_strcmp0(code, "store_failed") == 0 && strstr(msg, "needs twice its size free") &&
                      !strstr(msg, "kept free")
                  ? 0
                  : 1);
    }
    dq_test_tmpfs_child_passed(pid);
    g_free(dir);
}

/* --max-doc-bytes: a document's pages stop being rendered once its page images reach it; the
 * pages done are kept (partial, output_too_large). */
static void test_document_output_budget(void) {
    Fixture f;
    fixture_init_small(&f);
    PageSize same[] = {{100, 100}, {100, 100}, {100, 100}, {100, 100}};
    char *one = in_dir(&f, "one.pdf"), *four = in_dir(&f, "four.pdf");
    write_cairo_pdf(one, same, 1);
    write_cairo_pdf(four, same, 4);
    run_ingest(&f, one);
    char *png = page_png(&f, one);
    gint64 page_bytes = file_size(png);
    g_assert_cmpint(page_bytes, >, 0);
    /* Room for one page and a half: the first page stored, the others not. */
    f.opt.max_doc_bytes = page_bytes + page_bytes / 2;
    run_ingest(&f, four);
    assert_doc(&f, four, "partial", "output_too_large");
    g_assert_cmpint(query_int(&f,
                              "SELECT count(*) FROM pages p JOIN documents d ON d.id = "
                              "p.document_id WHERE d.path = %Q AND p.status = 'ok'",
                              four),
                    ==, 1);
    g_assert_cmpint(query_int(&f,
                              "SELECT count(*) FROM pages p JOIN documents d ON d.id = "
                              "p.document_id WHERE d.path = %Q AND p.error_code = "
                              "'output_too_large'",
                              four),
                    ==, 3);
    char *msg = doc_field(&f, four, "error_message");
    g_assert_nonnull(strstr(msg, "(--max-doc-bytes)"));
    g_free(msg);
    /* Room for exactly one page: full once it is stored, so the pages after it are not even
     * rendered (one worker, for the order). */
    char *exact = in_dir(&f, "exact.pdf");
    write_cairo_pdf(exact, same, 4);
    f.opt.jobs = 1;
    f.opt.max_doc_bytes = page_bytes;
    run_ingest(&f, exact);
    assert_doc(&f, exact, "partial", "output_too_large");
    g_assert_cmpint(query_int(&f,
                              "SELECT count(*) FROM pages p JOIN documents d ON d.id = "
                              "p.document_id WHERE d.path = %Q AND p.error_message LIKE "
                              "'%%not rendered: the document''s page images already take%%'",
                              exact),
                    ==, 3);
    /* 0 is no limit at all. */
    char *unlimited = in_dir(&f, "unlimited.pdf");
    write_cairo_pdf(unlimited, same, 4);
    f.opt.max_doc_bytes = 0;
    run_ingest(&f, unlimited);
    assert_doc(&f, unlimited, "ok", NULL);
    g_free(unlimited);
    g_free(exact);
    g_free(png);
    g_free(four);
    g_free(one);
    fixture_clear(&f);
}

/* docqa versions before <store>/.tmp wrote each PNG to .tmp-XXXXXX beside its final name: what
 * their killed workers left in the page folders is removed, once an hour old, from the folders
 * an ingest writes pages into (not from every folder of the store: a large one has 65536). */
static void test_old_temp_files_swept(void) {
    Fixture f;
    fixture_init_small(&f);
    PageSize one[] = {{100, 100}};
    char *a = in_dir(&f, "a.pdf");
    char *b = in_dir(&f, "b.pdf");
    write_cairo_pdf(a, one, 1);
    run_ingest(&f, a);
    char *png = page_png(&f, a);
    char *folder = g_path_get_dirname(png);
    char *old = g_build_filename(folder, ".tmp-Ab12Cd", NULL);
    char *young = g_build_filename(folder, ".tmp-Ef34Gh", NULL);
    char *other_name = g_build_filename(folder, ".tmp-not-from-mkstemp", NULL);
    char *store_dir = dq_ingest_page_store_dir(f.db_path);
    char *elsewhere_dir = g_build_filename(store_dir, "00", "00", NULL);
    g_assert_cmpint(g_mkdir_with_parents(elsewhere_dir, 0755), ==, 0);
    char *elsewhere = g_build_filename(elsewhere_dir, ".tmp-Ij56Kl", NULL);
    struct utimbuf two_hours_ago = {.actime = time(NULL) - 7200, .modtime = time(NULL) - 7200};
    const char *planted[] = {old, young, other_name, elsewhere};
    for (size_t i = 0; i < G_N_ELEMENTS(planted); i++) {
        g_assert_true(g_file_set_contents(planted[i], "half a png", -1, NULL));
        if (planted[i] != young)
            g_assert_cmpint(utime(planted[i], &two_hours_ago), ==, 0);
    }
    /* A copy of a.pdf: its page goes to the same folder. */
    gchar *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(a, &bytes, &len, NULL));
    g_assert_true(g_file_set_contents(b, bytes, (gssize)len, NULL));
    run_ingest(&f, b);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_false(g_file_test(old, G_FILE_TEST_EXISTS));
    g_assert_true(g_file_test(young, G_FILE_TEST_EXISTS));
    g_assert_true(g_file_test(other_name, G_FILE_TEST_EXISTS));
    g_assert_true(g_file_test(elsewhere, G_FILE_TEST_EXISTS));
    g_assert_true(g_file_test(png, G_FILE_TEST_IS_REGULAR));
    g_free(bytes);
    for (size_t i = 0; i < G_N_ELEMENTS(planted); i++)
        g_free((char *)planted[i]);
    g_free(elsewhere_dir);
    g_free(store_dir);
    g_free(folder);
    g_free(png);
    g_free(a);
    g_free(b);
    fixture_clear(&f);
}

/* Page files are checked: an unchanged document whose PNG was deleted or emptied is rendered
 * again, and storing a page replaces a file of the wrong size under its name. */
static void test_page_files_checked(void) {
    Fixture f;
    fixture_init_small(&f);
    PageSize one[] = {{100, 100}};
    char *a = in_dir(&f, "a.pdf");
    char *b = in_dir(&f, "b.pdf");
    write_cairo_pdf(a, one, 1);
    run_ingest(&f, a);
    char *png = page_png(&f, a);
    gint64 size = file_size(png);
    g_assert_cmpint(size, >, 0);
    /* Deleted: the same bytes are rendered again, not "unchanged". */
    g_assert_cmpint(g_unlink(png), ==, 0);
    run_ingest(&f, a);
    g_assert_cmpint(f.sum.unchanged, ==, 0);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_cmpint(file_size(png), ==, size);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents"), ==, 1);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM pages"), ==, 1);
    /* Emptied: a copy under another name stores the page again over the empty file... */
    g_assert_true(g_file_set_contents(png, "", 0, NULL));
    gchar *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(a, &bytes, &len, NULL));
    g_assert_true(g_file_set_contents(b, bytes, (gssize)len, NULL));
    run_ingest(&f, b);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_cmpint(file_size(png), ==, size);
    DqImage *img = load_page(&f, b, 1);
    dq_image_free(img);
    /* ...and so does the unchanged document it belongs to. */
    g_assert_true(g_file_set_contents(png, "", 0, NULL));
    run_ingest(&f, a);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_cmpint(file_size(png), ==, size);
    run_ingest(&f, a);
    g_assert_cmpint(f.sum.unchanged, ==, 1);
    g_free(bytes);
    g_free(png);
    g_free(a);
    g_free(b);
    fixture_clear(&f);
}

/* Whether a file holds exactly `len` bytes `want`. */
static gboolean file_holds(const char *path, const char *want, gsize len) {
    char *got = NULL;
    gsize got_len = 0;
    gboolean same = g_file_get_contents(path, &got, &got_len, NULL) && got_len == len &&
                    memcmp(got, want, len) == 0;
    g_free(got);
    return same;
}

/* --verify repairs page files replaced or damaged in place: a plain run sees only that they
 * are there; --verify hashes them and renders their pages again, replacing even a file of the
 * page's very size, and afterwards finds nothing more to do. */
static void test_page_files_verified(void) {
    Fixture f;
    fixture_init_small(&f);
    PageSize one[] = {{100, 100}}, other[] = {{100, 60}};
    char *a = in_dir(&f, "a.pdf"), *b = in_dir(&f, "b.pdf");
    write_cairo_pdf(a, one, 1);
    write_cairo_pdf(b, other, 1);
    run_ingest(&f, a);
    run_ingest(&f, b);
    char *png = page_png(&f, a), *png_b = page_png(&f, b);
    char *good = NULL, *good_b = NULL;
    gsize len = 0, len_b = 0;
    g_assert_true(g_file_get_contents(png, &good, &len, NULL));
    g_assert_true(g_file_get_contents(png_b, &good_b, &len_b, NULL));
    GRand *rnd = g_rand_new_with_seed(21);
    char *noise = g_malloc(len);
    for (gsize i = 0; i < len; i++)
        noise[i] = (char)g_rand_int_range(rnd, 0, 256);
    g_rand_free(rnd);
    const struct {
        const char *what;
        const char *bytes;
        gsize len;
    } damage[] = {
        {"random bytes of the page's size", noise, len},
        {"truncated", good, len / 2},
        {"another page's PNG", good_b, len_b},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(damage); i++) {
        g_test_message("%s", damage[i].what);
        g_assert_true(g_file_set_contents(png, damage[i].bytes, (gssize)damage[i].len, NULL));
        f.opt.verify = FALSE;
        run_ingest(&f, a);
        g_assert_cmpint(f.sum.unchanged, ==, 1); /* not looked at */
        g_assert_true(file_holds(png, damage[i].bytes, damage[i].len));
        f.opt.verify = TRUE;
        run_ingest(&f, a);
        g_assert_cmpint(f.sum.unchanged, ==, 0);
        g_assert_cmpint(f.sum.documents_ok, ==, 1);
        g_assert_true(file_holds(png, good, len));
        run_ingest(&f, a);
        g_assert_cmpint(f.sum.unchanged, ==, 1);
    }
    g_assert_true(file_holds(png_b, good_b, len_b));
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents"), ==, 2);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM pages"), ==, 2);
    g_free(noise);
    g_free(good);
    g_free(good_b);
    g_free(png);
    g_free(png_b);
    g_free(a);
    g_free(b);
    fixture_clear(&f);
}

/* ---- worker processes outliving their parent */

/* A page that takes hours: form XObjects nested 12 deep, each drawing the next 10 times (10^12
 * rectangles), as a hostile PDF of a few kilobytes can. */
static void write_form_bomb(const char *path, int pages) {
    enum { DEPTH = 12, FORMS = 3 };
    GPtrArray *objs = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(objs, g_strdup("<< /Type /Catalog /Pages 2 0 R >>"));
    g_ptr_array_add(objs, NULL); /* the page tree, once the pages are numbered */
    GString *body = g_string_new(NULL);
    for (int j = 0; j < 10; j++)
        g_string_append_printf(body, "q 0.9 0 0 0.9 %d %d cm /F Do Q ", j, j);
    for (int i = 0; i < DEPTH; i++)
        g_ptr_array_add(objs, g_strdup_printf("<< /Length %zu /Type /XObject /Subtype /Form /BBox "
                                              "[0 0 612 792] /Resources << /XObject << /F %d 0 "
                                              "R >> >> >>\nstream\n%s\nendstream",
                                              body->len, FORMS + i + 1, body->str));
    const char *leaf = "0 0 1 rg 10 10 300 300 re f";
    g_ptr_array_add(objs, g_strdup_printf("<< /Length %zu /Type /XObject /Subtype /Form /BBox [0 "
                                          "0 612 792] >>\nstream\n%s\nendstream",
                                          strlen(leaf), leaf));
    GString *kids = g_string_new(NULL);
    for (int p = 0; p < pages; p++) {
        g_ptr_array_add(objs, g_strdup("<< /Length 5 >>\nstream\n/F Do\nendstream"));
        g_ptr_array_add(objs,
                        g_strdup_printf("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                                        "/Contents %u 0 R /Resources << /XObject << /F %d 0 "
                                        "R >> >> >>",
                                        objs->len, FORMS));
        g_string_append_printf(kids, "%u 0 R ", objs->len);
    }
    objs->pdata[1] = g_strdup_printf("<< /Type /Pages /Kids [%s] /Count %d >>", kids->str, pages);
    write_gstring(path, build_pdf((const char *const *)objs->pdata, (int)objs->len, NULL));
    g_string_free(kids, TRUE);
    g_string_free(body, TRUE);
    g_ptr_array_free(objs, TRUE);
}

/* State ('R', 'S', 'Z', ...) and parent of process pid, from /proc; FALSE when it is gone. */
static gboolean proc_state(pid_t pid, char *state, pid_t *ppid) {
    char *path = g_strdup_printf("/proc/%d/stat", (int)pid);
    char *text = NULL;
    gboolean ok = g_file_get_contents(path, &text, NULL, NULL);
    g_free(path);
    /* "pid (comm) state ppid ...": comm may hold anything, the last ')' ends it. */
    const char *close = ok ? strrchr(text, ')') : NULL;
    int pp = 0;
    ok = close != NULL && sscanf(close + 1, " %c %d", state, &pp) == 2;
    *ppid = pp;
    g_free(text);
    return ok;
}

/* The CPU time (user + system, seconds) `pid` has used; 0 once it is gone. */
static double proc_cpu_s(pid_t pid) {
    char *path = g_strdup_printf("/proc/%d/stat", (int)pid);
    char *text = NULL;
    gboolean ok = g_file_get_contents(path, &text, NULL, NULL);
    g_free(path);
    /* After "(comm)": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
     * utime stime (proc(5)), in clock ticks. */
    const char *close = ok ? strrchr(text, ')') : NULL;
    unsigned long long ut = 0, stime = 0;
    ok = close != NULL &&
         sscanf(close + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stime) ==
             2;
    g_free(text);
    return ok ? (double)(ut + stime) / (double)sysconf(_SC_CLK_TCK) : 0.0;
}

/* The processes whose parent is `parent`. */
static GArray *children_of(pid_t parent) {
    GArray *out = g_array_new(FALSE, FALSE, sizeof(pid_t));
    GDir *d = g_dir_open("/proc", 0, NULL);
    g_assert_nonnull(d);
    const char *name;
    while ((name = g_dir_read_name(d)) != NULL) {
        if (!g_ascii_isdigit(name[0]))
            continue;
        pid_t pid = (pid_t)atoi(name), pp = 0;
        char st = 0;
        if (proc_state(pid, &st, &pp) && pp == parent)
            g_array_append_val(out, pid);
    }
    g_dir_close(d);
    return out;
}

/* Waits up to timeout_s for `parent` to have a child; returns them. */
static GArray *wait_for_children(pid_t parent, double timeout_s) {
    gint64 end = g_get_monotonic_time() + (gint64)(timeout_s * 1e6);
    for (;;) {
        GArray *kids = children_of(parent);
        if (kids->len > 0 || g_get_monotonic_time() > end)
            return kids;
        g_array_free(kids, TRUE);
        g_usleep(20 * 1000);
    }
}

/* Whether pid still runs: alive and not a zombie (this process, a subreaper, reaps the orphans
 * that come to it). */
static gboolean running(pid_t pid) {
    waitpid(pid, NULL, WNOHANG);
    char st = 0;
    pid_t pp = 0;
    return proc_state(pid, &st, &pp) && st != 'Z' && st != 'X';
}

/* Forks a process that ingests `path` into its own database `db_path` with f's options. */
static pid_t fork_ingest(Fixture *f, const char *db_path, const char *path) {
    fflush(NULL);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        GError *err = NULL;
        DqStore *store = dq_store_open(db_path, &err);
        DqIngestSummary sum;
        const char *paths[] = {path, NULL};
        gboolean ok = store != NULL && dq_ingest_run(store, paths, &f->opt, &sum, &err);
        if (store != NULL)
            dq_store_close(store);
        _exit(ok ? 0 : 1);
    }
    return pid;
}

/* Killed with SIGKILL (no handler runs), ingest takes its workers with it: none is left
 * rendering a page bomb under PID 1 past every time limit. */
static void test_workers_die_with_parent(void) {
    Fixture f;
    fixture_init_small(&f);
    f.opt.page_timeout_s = 120; /* only the parent's death may end the workers here */
    char *bomb = in_dir(&f, "bomb.pdf");
    write_form_bomb(bomb, 2);
    char *db = in_dir(&f, "killed.db");
    /* The orphans come to this process rather than PID 1, to be seen and reaped. */
    g_assert_cmpint(prctl(PR_SET_CHILD_SUBREAPER, 1), ==, 0);
    pid_t ingest = fork_ingest(&f, db, bomb);
    GArray *workers = wait_for_children(ingest, 120);
    g_assert_cmpuint(workers->len, >, 0);
    g_usleep(300 * 1000); /* into the page */
    g_assert_cmpint(kill(ingest, SIGKILL), ==, 0);
    g_assert_cmpint(waitpid(ingest, NULL, 0), ==, ingest);
    gint64 end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
    guint alive = workers->len;
    while (alive > 0 && g_get_monotonic_time() < end) {
        alive = 0;
        for (guint i = 0; i < workers->len; i++)
            alive += running(g_array_index(workers, pid_t, i));
        if (alive > 0)
            g_usleep(50 * 1000);
    }
    for (guint i = 0; i < workers->len; i++) { /* before failing: leave nothing behind */
        pid_t w = g_array_index(workers, pid_t, i);
        if (running(w)) {
            kill(w, SIGKILL);
            waitpid(w, NULL, 0);
        }
    }
    g_assert_cmpuint(alive, ==, 0);
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    g_array_free(workers, TRUE);
    g_free(db);
    g_free(bomb);
    fixture_clear(&f);
}

/* One try of test_worker_cpu_limit. FALSE when the parent's own clock (--timeout 1, counted
 * from the fork) ran out before this process stopped it, so that the parent, not the CPU
 * limit, ended the worker: the scene did not happen, the caller stages it again. */
static gboolean worker_cpu_limit_try(void) {
    Fixture f;
    fixture_init_small(&f);
    f.opt.jobs = 1;
    f.opt.page_timeout_s = 1;
    char *bomb = in_dir(&f, "bomb.pdf");
    write_form_bomb(bomb, 1);
    char *db = in_dir(&f, "stopped.db");
    pid_t ingest = fork_ingest(&f, db, bomb);
    GArray *workers = wait_for_children(ingest, 120);
    g_assert_cmpuint(workers->len, ==, 1);
    pid_t w = g_array_index(workers, pid_t, 0);
    g_assert_cmpint(kill(ingest, SIGSTOP), ==, 0);
    /* --timeout 1 + 2 s of slack + the open: well under 10 s of the worker's CPU. The worker's
     * own CPU time is the measure, not the wall clock: on a loaded machine (CI under ASan) it
     * may get a fraction of a core. The wall-clock cap only ends a test gone wrong. */
    gint64 end = g_get_monotonic_time() + 300 * G_USEC_PER_SEC;
    char st = 0;
    pid_t pp = 0;
    while (proc_state(w, &st, &pp) && st != 'Z' && proc_cpu_s(w) < 10.0 &&
           g_get_monotonic_time() < end)
        g_usleep(50 * 1000);
    gboolean stopped_by_limit = st == 'Z';
    if (!stopped_by_limit)
        kill(w, SIGKILL);
    g_assert_cmpint(kill(ingest, SIGCONT), ==, 0);
    int status = 0;
    g_assert_cmpint(waitpid(ingest, &status, 0), ==, ingest);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    GError *err = NULL;
    DqStore *store = dq_store_open(db, &err);
    dq_assert_no_error(err);
    sqlite3_stmt *q = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(dq_store_sqlite(store),
                                       "SELECT status, error_code, error_message FROM documents",
                                       -1, &q, NULL),
                    ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(q), ==, SQLITE_ROW);
    const char *message = (const char *)sqlite3_column_text(q, 2);
    gboolean staged = strstr(message, "no progress for 1 s") == NULL;
    if (staged) {
        g_assert_true(stopped_by_limit);
        g_assert_cmpstr((const char *)sqlite3_column_text(q, 0), ==, "failed");
        g_assert_cmpstr((const char *)sqlite3_column_text(q, 1), ==, "render_timeout");
        g_assert_nonnull(strstr(message, "CPU time"));
    } else {
        g_test_message("the parent's clock ran out before it was stopped: %s", message);
    }
    sqlite3_finalize(q);
    dq_store_close(store);
    g_array_free(workers, TRUE);
    g_free(db);
    g_free(bomb);
    fixture_clear(&f);
    return staged;
}

/* A worker's CPU limit ends a page that spins while its parent cannot watch (stopped here,
 * as a debugger or an overloaded machine would), a few seconds past --timeout; the parent,
 * back, records the page as render_timeout. The parent must be stopped within its 1 s: on a
 * loaded machine this process may come too late, and the scene is staged again. */
static void test_worker_cpu_limit(void) {
    int tries = 1;
    while (!worker_cpu_limit_try())
        g_assert_cmpint(++tries, <=, 5);
}

/* The CPU limits of a worker that waits on page 1 of a one-page TIFF, in seconds, -1 for
 * unlimited, read from /proc as the kernel holds them. */
static void worker_cpu_limits(int doc_timeout_s, long *soft, long *hard) {
    Fixture f;
    fixture_init_small(&f);
    f.opt.jobs = 1;
    f.opt.page_timeout_s = 30;
    f.opt.doc_timeout_s = doc_timeout_s;
    char *tif = in_dir(&f, "limits.tif");
    write_tiff(tif, V_GRAY8, 1, 1);
    char *db = in_dir(&f, "limits.db");
    g_setenv("DOCQA_INGEST_TEST_FAULT", "hang:limits.tif:1", TRUE);
    pid_t ingest = fork_ingest(&f, db, tif);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    GArray *workers = wait_for_children(ingest, 120);
    g_assert_cmpuint(workers->len, ==, 1);
    pid_t w = g_array_index(workers, pid_t, 0);
    char *path = g_strdup_printf("/proc/%d/limits", (int)w);
    *soft = *hard = 0;
    /* The first limits are set as the worker starts: until then it has its parent's. */
    for (int tries = 0; tries < 1000 && (*soft == 0 || *soft == -1); tries++) {
        char *text = NULL;
        g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
        char *line = strstr(text, "Max cpu time");
        g_assert_nonnull(line);
        char s[32], h[32];
        g_assert_cmpint(sscanf(line + strlen("Max cpu time"), "%31s %31s", s, h), ==, 2);
        *soft = strcmp(s, "unlimited") == 0 ? -1 : atol(s);
        *hard = strcmp(h, "unlimited") == 0 ? -1 : atol(h);
        g_free(text);
        if (*soft == -1)
            g_usleep(10 * 1000);
    }
    kill(ingest, SIGKILL);
    kill(w, SIGKILL);
    int status = 0;
    g_assert_cmpint(waitpid(ingest, &status, 0), ==, ingest);
    g_free(path);
    g_array_free(workers, TRUE);
    g_free(db);
    g_free(tif);
    fixture_clear(&f);
}

/* Per page the worker may use --timeout and 2 s of slack past what it has used (soft, SIGXCPU);
 * in all, --doc-timeout, one page's --timeout and twice the slack (hard, SIGKILL), whatever
 * becomes of its parent; without a document budget, no hard limit of its own. */
static void test_worker_cpu_limits_set(void) {
    long soft = 0, hard = 0;
    worker_cpu_limits(100, &soft, &hard);
    g_assert_cmpint(hard, ==, 100 + 30 + 2 * 2);
    g_assert_cmpint(soft, >=, 30 + 2 + 1);
    g_assert_cmpint(soft, <, hard);
    worker_cpu_limits(0, &soft, &hard);
    struct rlimit own;
    g_assert_cmpint(getrlimit(RLIMIT_CPU, &own), ==, 0);
    g_assert_cmpint(hard, ==, own.rlim_max == RLIM_INFINITY ? -1 : (long)own.rlim_max);
    g_assert_cmpint(soft, >=, 30 + 2 + 1);
    g_assert_cmpint(soft, <=, 30 + 2 + 10);
}

typedef struct {
    char *root, *outside, *link, *sub, *mark;
} Swap;

/* Once the ingest has walked and its worker hangs in the first document (the fault's mark
 * exists), points the link outside the root and replaces the folder `sub` by a link to the
 * outside folder, as someone could while a slow first document renders; then ends the hang by
 * killing the worker. Waiting on the mark rather than on a page timeout keeps the order on a
 * loaded machine: a timeout that ran out before the swap let the ingest read the next files
 * first (CI, under ASan). */
static gpointer swap_after_walk(gpointer data) {
    Swap *s = data;
    gint64 end = g_get_monotonic_time() + 120 * G_USEC_PER_SEC;
    while (!g_file_test(s->mark, G_FILE_TEST_EXISTS) && g_get_monotonic_time() < end)
        g_usleep(20 * 1000);
    g_assert_true(g_file_test(s->mark, G_FILE_TEST_EXISTS));
    char *target = g_build_filename(s->outside, "in.pdf", NULL);
    char *tmp = g_strconcat(s->link, ".new", NULL);
    g_assert_cmpint(symlink(target, tmp), ==, 0);
    g_assert_cmpint(g_rename(tmp, s->link), ==, 0);
    char *moved = g_strconcat(s->sub, ".real", NULL);
    g_assert_cmpint(g_rename(s->sub, moved), ==, 0);
    g_assert_cmpint(symlink(s->outside, s->sub), ==, 0);
    GArray *kids = children_of(getpid());
    g_assert_cmpuint(kids->len, >, 0);
    for (guint i = 0; i < kids->len; i++)
        kill(g_array_index(kids, pid_t, i), SIGKILL);
    g_array_free(kids, TRUE);
    g_free(moved);
    g_free(tmp);
    g_free(target);
    return NULL;
}

/* Nothing outside the folders named is read, even when a link is retargeted or a folder
 * replaced by a link after the walk: each file is opened once, checked to lie inside the roots,
 * and hashed and rendered from that descriptor. Such files are reported as changed, nothing
 * recorded for them. */
static void test_no_reading_outside_after_walk(void) {
    Fixture f;
    fixture_init_small(&f);
    f.opt.jobs = 1;            /* the next file is opened only once the slow one is done */
    f.opt.page_timeout_s = 60; /* the swap thread ends the hang; this only bounds a failure */
    Swap s = {.root = in_dir(&f, "root"),
              .outside = in_dir(&f, "outside"),
              .mark = in_dir(&f, "hanging")};
    s.link = g_build_filename(s.root, "z-link.pdf", NULL);
    s.sub = g_build_filename(s.root, "sub", NULL);
    char *hidden = g_build_filename(s.root, ".h", NULL);
    g_assert_cmpint(g_mkdir_with_parents(hidden, 0755), ==, 0);
    g_assert_cmpint(g_mkdir_with_parents(s.sub, 0755), ==, 0);
    g_assert_cmpint(g_mkdir_with_parents(s.outside, 0755), ==, 0);
    PageSize small[] = {{100, 100}}, wide[] = {{200, 100}}, tall[] = {{100, 200}};
    char *slow = g_build_filename(s.root, "a-slow.pdf", NULL);
    write_cairo_pdf(slow, small, 1);
    char *inside = g_build_filename(hidden, "in.pdf", NULL);
    write_cairo_pdf(inside, small, 1);
    char *in_sub = g_build_filename(s.sub, "r.pdf", NULL);
    write_cairo_pdf(in_sub, small, 1);
    char *secret1 = g_build_filename(s.outside, "in.pdf", NULL);
    char *secret2 = g_build_filename(s.outside, "r.pdf", NULL);
    write_cairo_pdf(secret1, wide, 1);
    write_cairo_pdf(secret2, tall, 1);
    g_assert_cmpint(symlink(inside, s.link), ==, 0);
    g_setenv("DOCQA_INGEST_TEST_FAULT", "hang:a-slow.pdf:1", TRUE);
    g_setenv("DOCQA_INGEST_TEST_FAULT_MARK", s.mark, TRUE);
    GThread *t = g_thread_new("swap", swap_after_walk, &s);
    run_ingest(&f, s.root);
    g_thread_join(t);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    g_unsetenv("DOCQA_INGEST_TEST_FAULT_MARK");
    g_assert_cmpint(f.sum.files, ==, 3);
    g_assert_cmpint(f.sum.changed, ==, 2);
    g_assert_cmpint(f.sum.documents_ok, ==, 0);
    /* Only the slow document is recorded; no row, no page of the outside files. */
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents"), ==, 1);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM pages WHERE width <> height"), ==, 0);
    for (guint i = 0; i < f.sum.failures->len; i++) {
        DqIngestFailure *x = g_ptr_array_index(f.sum.failures, i);
        if (g_strcmp0(x->status, "changed") == 0)
            g_assert_nonnull(strstr(x->message, "not read"));
    }
    g_free(secret2);
    g_free(secret1);
    g_free(in_sub);
    g_free(inside);
    g_free(slow);
    g_free(hidden);
    g_free(s.sub);
    g_free(s.link);
    g_free(s.outside);
    g_free(s.root);
    g_free(s.mark);
    fixture_clear(&f);
}

/* --doc-timeout: a document that takes longer, each page within --timeout or not, is stopped;
 * the pages done are kept, the rest fail as render_timeout, and it is recorded partial. */
static void test_document_time_budget(void) {
    Fixture f;
    fixture_init_small(&f);
    f.opt.jobs = 1;
    f.opt.page_timeout_s = 120;
    PageSize sizes[] = {{100, 100}, {100, 100}, {100, 100}};
    char *pdf = in_dir(&f, "slow.pdf");
    write_cairo_pdf(pdf, sizes, 3);
    /* Page 1 must be done within the budget: the budget is a few times what a whole ingest of a
     * one-page document takes here now (a fixed 2 s was too little under ASan on a loaded CI
     * host), and far below the page timeout, which alone would end the hang much later. */
    char *one = in_dir(&f, "one.pdf");
    write_cairo_pdf(one, sizes, 1);
    gint64 t0 = g_get_monotonic_time();
    run_ingest(&f, one);
    double one_s = (g_get_monotonic_time() - t0) / 1e6;
    assert_doc(&f, one, "ok", NULL);
    f.opt.doc_timeout_s = CLAMP((int)ceil(4 * one_s), 2, f.opt.page_timeout_s / 4);
    g_test_message("one page: %.2f s; --doc-timeout %d s", one_s, f.opt.doc_timeout_s);
    g_setenv("DOCQA_INGEST_TEST_FAULT", "hang:slow.pdf:2", TRUE);
    t0 = g_get_monotonic_time();
    run_ingest(&f, pdf);
    double secs = (g_get_monotonic_time() - t0) / 1e6;
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    /* The hanging page's own timeout would have ended it only after page_timeout_s. */
    g_assert_cmpfloat(secs, <, f.opt.page_timeout_s);
    assert_doc(&f, pdf, "partial", "render_timeout");
    g_assert_cmpint(query_int(&f,
                              "SELECT group_concat(page_number || status, ',') = "
                              "'1ok,2failed,3failed' FROM (SELECT * FROM pages p JOIN documents "
                              "d ON d.id = p.document_id WHERE d.path = %Q ORDER BY page_number)",
                              pdf),
                    ==, 1);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM pages WHERE error_message LIKE "
                                  "'%%(--doc-timeout)%%'"),
                    ==, 2);
    g_free(one);
    g_free(pdf);
    fixture_clear(&f);
}

/* Interrupted, ingest keeps the pages a document in progress has done: it is recorded partial,
 * the other pages failed as `interrupted`, and --retry-failed renders those. */
static void test_interrupt_keeps_pages_done(void) {
    Fixture f;
    fixture_init_small(&f);
    f.opt.jobs = 1;
    f.opt.page_timeout_s = 60;
    PageSize sizes[] = {{100, 100}, {100, 100}, {100, 100}};
    char *pdf = in_dir(&f, "long.pdf");
    write_cairo_pdf(pdf, sizes, 3);
    /* Ctrl-C as page 2 starts, page 1 done: sent by the worker itself, no thread beside the
     * forks. */
    g_setenv("DOCQA_INGEST_TEST_FAULT", "interrupt:long.pdf:2", TRUE);
    run_ingest(&f, pdf);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    g_assert_true(f.sum.interrupted);
    g_assert_cmpint(f.sum.documents_partial, ==, 1);
    assert_doc(&f, pdf, "partial", "interrupted");
    g_assert_cmpint(query_int(&f,
                              "SELECT group_concat(page_number || status, ',') = "
                              "'1ok,2failed,3failed' FROM (SELECT * FROM pages p JOIN documents "
                              "d ON d.id = p.document_id WHERE d.path = %Q ORDER BY page_number)",
                              pdf),
                    ==, 1);
    f.opt.retry_failed = TRUE;
    run_ingest(&f, pdf);
    assert_doc(&f, pdf, "ok", NULL);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM pages WHERE status = 'ok'"), ==, 3);
    g_free(pdf);
    fixture_clear(&f);
}

/* A PDF of n (<= 8) pages, each of its own width: every page has an image of its own. */
static void write_distinct_pdf(const char *path, int n) {
    PageSize sizes[8];
    g_assert_cmpint(n, <=, 8);
    for (int i = 0; i < n; i++)
        sizes[i] = (PageSize){100 + 10 * i, 100};
    write_cairo_pdf(path, sizes, n);
}

/* The newest version of `path` and its page rows as text, every column a rendering decides:
 * what two databases must agree on. */
static char *doc_rows_text(Fixture *f, const char *path) {
    char *doc = query_text(f,
                           "SELECT quote(sha256) || '|' || quote(bytes) || '|' || quote(kind) || "
                           "'|' || quote(page_count) || '|' || quote(status) || '|' || "
                           "quote(error_code) || '|' || quote(error_message) FROM "
                           "documents_current WHERE path = %Q",
                           path);
    char *pages = query_text(
        f,
        "SELECT group_concat(line, char(10)) FROM (SELECT quote(p.page_number) || '|' || "
        "quote(p.width) || '|' || quote(p.height) || '|' || quote(p.source_width) || '|' || "
        "quote(p.source_height) || '|' || quote(p.render_settings) || '|' || "
        "quote(p.image_sha256) || '|' || quote(p.status) || '|' || quote(p.error_code) || '|' || "
        "quote(p.error_message) AS line FROM pages p JOIN documents_current d ON d.id = "
        "p.document_id WHERE d.path = %Q ORDER BY p.page_number)",
        path);
    g_assert_nonnull(doc);
    g_assert_nonnull(pages);
    char *all = g_strdup_printf("%s\n%s", doc, pages);
    g_free(doc);
    g_free(pages);
    return all;
}

/* What `path` holds in f is what a whole rendering of it into a fresh database with the same
 * options gives, rows and page images alike. */
static void assert_same_as_fresh(Fixture *f, const char *path) {
    Fixture fresh;
    fixture_init(&fresh);
    fresh.opt = f->opt;
    fresh.opt.retry_failed = FALSE;
    run_ingest(&fresh, path);
    g_assert_cmpint(fresh.sum.documents_ok + fresh.sum.documents_partial, ==, 1);
    char *want = doc_rows_text(&fresh, path), *got = doc_rows_text(f, path);
    g_assert_cmpstr(got, ==, want);
    int n = (int)query_int(f, "SELECT page_count FROM documents_current WHERE path = %Q", path);
    char *store_dir = dq_ingest_page_store_dir(f->db_path);
    for (int p = 1; p <= n; p++) {
        char *sha = query_text(f,
                               "SELECT p.image_sha256 FROM pages p JOIN documents_current d ON "
                               "d.id = p.document_id WHERE d.path = %Q AND p.page_number = %d",
                               path, p);
        if (sha == NULL)
            continue;
        char *png = dq_ingest_page_path(store_dir, sha);
        char *data = NULL;
        gsize len = 0;
        g_assert_true(g_file_get_contents(png, &data, &len, NULL));
        char *hash = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
        g_assert_cmpstr(hash, ==, sha);
        g_free(hash);
        g_free(data);
        g_free(png);
        g_free(sha);
    }
    g_free(store_dir);
    g_free(want);
    g_free(got);
    fixture_clear(&fresh);
}

/* A nightly ingest stopped part-way (a signal) is finished by the next plain ingest, without
 * --retry-failed: `interrupted` says nothing about the file. A damaged file beside it is not
 * opened again: its failure is the file's own. */
static void test_interrupted_resumed_by_plain_ingest(void) {
    Fixture f;
    fixture_init_small(&f);
    f.opt.jobs = 1;
    f.opt.page_timeout_s = 60;
    char *archive = in_dir(&f, "archive");
    g_assert_cmpint(g_mkdir(archive, 0755), ==, 0);
    char *bad = g_build_filename(archive, "a-damaged.pdf", NULL);
    char *pdf = g_build_filename(archive, "long.pdf", NULL);
    g_assert_true(g_file_set_contents(bad, "%PDF-1.4\n1 0 obj << /Type /Catalog /Pa", -1, NULL));
    write_distinct_pdf(pdf, 4);
    g_setenv("DOCQA_INGEST_TEST_FAULT", "interrupt:long.pdf:3", TRUE);
    run_ingest(&f, archive);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    g_assert_true(f.sum.interrupted);
    assert_doc(&f, bad, "failed", "damaged");
    assert_doc(&f, pdf, "partial", "interrupted");
    char *bad_at = query_text(&f, "SELECT ingested_at FROM documents WHERE path = %Q", bad);
    /* The next night's plain ingest: the two pages left are rendered, the damaged file is not
     * (a worker opening it again would interrupt this ingest). */
    g_setenv("DOCQA_INGEST_TEST_FAULT", "interrupt:a-damaged.pdf:1", TRUE);
    run_ingest(&f, archive);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    g_assert_false(f.sum.interrupted);
    g_assert_cmpint(f.sum.resumed, ==, 1);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_cmpint(f.sum.unchanged, ==, 1);
    g_assert_cmpint(f.sum.unchanged_not_ok, ==, 1);
    g_assert_cmpint(f.sum.pages_ok, ==, 2);
    g_assert_cmpint(f.sum.pages_kept, ==, 2);
    assert_doc(&f, pdf, "ok", NULL);
    assert_doc(&f, bad, "failed", "damaged");
    char *bad_now = query_text(&f, "SELECT ingested_at FROM documents WHERE path = %Q", bad);
    g_assert_cmpstr(bad_now, ==, bad_at);
    g_free(bad_now);
    g_free(bad_at);
    assert_same_as_fresh(&f, pdf);
    /* Settled: nothing resumed again. */
    run_ingest(&f, archive);
    g_assert_cmpint(f.sum.unchanged, ==, 2);
    g_assert_cmpint(f.sum.resumed, ==, 0);
    g_free(pdf);
    g_free(bad);
    g_free(archive);
    fixture_clear(&f);
}

/* --retry-failed on a document interrupted after two of its five pages renders the three not
 * stored, not the five: were page 1 rendered again, its worker would interrupt this ingest. The
 * outcome is the one a whole rendering gives in a fresh database. */
static void test_retry_renders_only_missing(void) {
    Fixture f;
    fixture_init_small(&f);
    f.opt.jobs = 1;
    f.opt.page_timeout_s = 60;
    char *pdf = in_dir(&f, "long.pdf");
    write_distinct_pdf(pdf, 5);
    g_setenv("DOCQA_INGEST_TEST_FAULT", "interrupt:long.pdf:3", TRUE);
    run_ingest(&f, pdf);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    assert_doc(&f, pdf, "partial", "interrupted");
    g_assert_cmpint(f.sum.pages_ok, ==, 2);
    gint64 id = query_int(&f, "SELECT id FROM documents_current WHERE path = %Q", pdf);
    f.opt.retry_failed = TRUE;
    g_setenv("DOCQA_INGEST_TEST_FAULT", "interrupt:long.pdf:1", TRUE);
    run_ingest(&f, pdf);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    g_assert_false(f.sum.interrupted);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_cmpint(f.sum.pages_ok, ==, 3);
    g_assert_cmpint(f.sum.pages_kept, ==, 2);
    g_assert_cmpint(f.sum.pages_failed, ==, 0);
    assert_doc(&f, pdf, "ok", NULL);
    g_assert_cmpint(query_int(&f, "SELECT id FROM documents_current WHERE path = %Q", pdf), ==, id);
    assert_same_as_fresh(&f, pdf);
    run_ingest(&f, pdf);
    g_assert_cmpint(f.sum.unchanged, ==, 1);
    g_free(pdf);
    fixture_clear(&f);
}

/* The pages kept count against --max-doc-bytes as they did when rendered: a retry under the
 * budget that a whole rendering runs out of runs out of it at the same page. */
static void test_retry_counts_stored_pages_in_budget(void) {
    Fixture f;
    fixture_init_small(&f);
    f.opt.jobs = 1;
    f.opt.page_timeout_s = 60;
    char *pdf = in_dir(&f, "long.pdf");
    write_distinct_pdf(pdf, 5);
    /* Page sizes from a rendering with no budget: the budget runs out at page 3. */
    Fixture sizes;
    fixture_init(&sizes);
    sizes.opt = f.opt;
    run_ingest(&sizes, pdf);
    char *store_dir = dq_ingest_page_store_dir(sizes.db_path);
    gint64 first_three = 0;
    for (int p = 1; p <= 3; p++) {
        char *sha = query_text(&sizes, "SELECT image_sha256 FROM pages WHERE page_number = %d", p);
        char *png = dq_ingest_page_path(store_dir, sha);
        struct stat st;
        g_assert_cmpint(stat(png, &st), ==, 0);
        first_three += st.st_size;
        g_free(png);
        g_free(sha);
    }
    g_free(store_dir);
    fixture_clear(&sizes);
    f.opt.max_doc_bytes = first_three - 1;
    g_setenv("DOCQA_INGEST_TEST_FAULT", "interrupt:long.pdf:3", TRUE);
    run_ingest(&f, pdf);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    assert_doc(&f, pdf, "partial", "interrupted");
    f.opt.retry_failed = TRUE;
    run_ingest(&f, pdf);
    g_assert_cmpint(f.sum.pages_kept, ==, 2);
    assert_doc(&f, pdf, "partial", "output_too_large");
    g_assert_cmpint(pages_at(&f, pdf, 1, "ok"), ==, 2);
    assert_same_as_fresh(&f, pdf);
    g_free(pdf);
    fixture_clear(&f);
}

/* A page file deleted from the store renders that page again, not its document's others. */
static void test_missing_page_file_renders_that_page(void) {
    Fixture f;
    fixture_init_small(&f);
    f.opt.jobs = 1;
    f.opt.page_timeout_s = 60;
    char *pdf = in_dir(&f, "three.pdf");
    write_distinct_pdf(pdf, 3);
    run_ingest(&f, pdf);
    assert_doc(&f, pdf, "ok", NULL);
    char *sha = query_text(&f, "SELECT image_sha256 FROM pages WHERE page_number = 2");
    char *store_dir = dq_ingest_page_store_dir(f.db_path);
    char *png = dq_ingest_page_path(store_dir, sha);
    g_assert_cmpint(g_unlink(png), ==, 0);
    g_setenv("DOCQA_INGEST_TEST_FAULT", "interrupt:three.pdf:1", TRUE);
    run_ingest(&f, pdf);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    g_assert_false(f.sum.interrupted);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_cmpint(f.sum.pages_ok, ==, 1);
    g_assert_cmpint(f.sum.pages_kept, ==, 2);
    g_assert_true(g_file_test(png, G_FILE_TEST_IS_REGULAR));
    assert_same_as_fresh(&f, pdf);
    g_free(png);
    g_free(store_dir);
    g_free(sha);
    g_free(pdf);
    fixture_clear(&f);
}

/* How far this process has read `path` through a descriptor of its own: -1 when none is open. */
static gint64 own_read_offset(const char *path) {
    gint64 pos = -1;
    GDir *d = g_dir_open("/proc/self/fd", 0, NULL);
    g_assert_nonnull(d);
    for (const char *name; (name = g_dir_read_name(d)) != NULL && pos < 0;) {
        char *link = g_strdup_printf("/proc/self/fd/%s", name);
        char *target = g_file_read_link(link, NULL);
        if (g_strcmp0(target, path) == 0) {
            char *info_path = g_strdup_printf("/proc/self/fdinfo/%s", name);
            char *info = NULL;
            if (g_file_get_contents(info_path, &info, NULL, NULL) && g_str_has_prefix(info, "pos:"))
                pos = g_ascii_strtoll(info + 4, NULL, 10);
            g_free(info);
            g_free(info_path);
        }
        g_free(target);
        g_free(link);
    }
    g_dir_close(d);
    return pos;
}

typedef struct {
    const char *path;
    gint64 sent_at; /* monotonic, when SIGINT was sent */
} Hashing;

/* Ctrl-C once ingest is hashing h->path (it has read some of it): sent earlier, after a sleep,
 * it could come before ingest caught SIGINT on a loaded machine and end this test process. */
static gpointer interrupt_while_hashing(gpointer data) {
    Hashing *h = data;
    gint64 end = g_get_monotonic_time() + 120 * G_USEC_PER_SEC;
    while (own_read_offset(h->path) <= 0 && g_get_monotonic_time() < end)
        g_usleep(10 * 1000);
    g_assert_cmpint(own_read_offset(h->path), >, 0);
    h->sent_at = g_get_monotonic_time();
    kill(getpid(), SIGINT);
    return NULL;
}

/* Ctrl-C while a large file is being hashed ends the ingest at once, recording nothing. */
static void test_interrupt_while_hashing(void) {
    Fixture f;
    fixture_init(&f);
    char *big = in_dir(&f, "big.pdf");
    FILE *fp = fopen(big, "w");
    g_assert_nonnull(fp);
    g_assert_cmpint(ftruncate(fileno(fp), (off_t)4 << 30), ==, 0); /* sparse: no disk used */
    g_assert_cmpint(fclose(fp), ==, 0);
    Hashing h = {.path = big};
    GThread *t = g_thread_new("interrupt", interrupt_while_hashing, &h);
    run_ingest(&f, big);
    double secs = (g_get_monotonic_time() - h.sent_at) / 1e6;
    g_thread_join(t);
    g_assert_true(f.sum.interrupted);
    /* Hashing the whole file takes tens of seconds; how many depends on the machine and its
     * load (a fixed bound of 2 s was near what a loaded CI host under ASan needs to stop at
     * all). What hashing 1/256 of it takes here now, read as ingest reads it, is the
     * measure. */
    int fd = open(big, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    guchar *buf = g_malloc(1 << 20);
    GChecksum *ck = g_checksum_new(G_CHECKSUM_SHA256);
    gint64 h0 = g_get_monotonic_time();
    for (int i = 0; i < 16; i++) {
        g_assert_cmpint(read(fd, buf, 1 << 20), ==, 1 << 20);
        g_checksum_update(ck, buf, 1 << 20);
    }
    double whole_s = 256 * (g_get_monotonic_time() - h0) / 1e6;
    g_checksum_free(ck);
    g_free(buf);
    close(fd);
    g_test_message("stopped %.2f s after the interrupt; the whole file takes about %.1f s", secs,
                   whole_s);
    g_assert_cmpfloat(secs, <, MAX(2.0, whole_s / 4));
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents"), ==, 0);
    g_unlink(big);
    g_free(big);
    fixture_clear(&f);
}

/* A FIFO, socket or device in a folder is no document: counted with the other files skipped,
 * as a .txt is, never opened (a FIFO without a writer would block a plain open), never silent. */
static void test_walk_special_files_counted(void) {
    Fixture f;
    fixture_init(&f);
    f.opt.n_res = 1;
    f.opt.tile = 32;
    char *root = in_dir(&f, "special");
    g_mkdir_with_parents(root, 0755);
    char *tif = g_build_filename(root, "a.tif", NULL);
    char *fifo = g_build_filename(root, "pipe.tif", NULL);
    char *link_fifo = g_build_filename(root, "to-pipe.tif", NULL);
    char *sock = g_build_filename(root, "s", NULL);
    write_tiff(tif, V_GRAY8, 1, 1);
    g_assert_cmpint(mkfifo(fifo, 0644), ==, 0);
    g_assert_cmpint(symlink(fifo, link_fifo), ==, 0);
    int expected = 2;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int sfd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_assert_cmpint(sfd, >=, 0);
    if (strlen(sock) < sizeof addr.sun_path) { /* a long temporary folder leaves it out */
        memcpy(addr.sun_path, sock, strlen(sock) + 1);
        g_assert_cmpint(bind(sfd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
        expected++;
    }
    close(sfd);
    run_ingest(&f, root);
    g_assert_cmpint(f.sum.files, ==, 1);
    g_assert_cmpint(f.sum.documents_ok, ==, 1);
    g_assert_cmpint(f.sum.skipped, ==, expected);
    g_assert_cmpint(f.sum.failures->len, ==, 0);
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents"), ==, 1);
    g_free(tif);
    g_free(fifo);
    g_free(link_fifo);
    g_free(sock);
    g_free(root);
    fixture_clear(&f);
}

/* The walk alone, nothing rendered: a folder beside the root whose name begins with the root's is
 * outside it; the database's files and page store, when inside the root, are neither walked (a
 * TIFF there is no document of the archive) nor counted as skipped; an entry carries the size and
 * time the documents table records for a file it cannot read. */
static void test_walk_entries(void) {
    char *dir = dq_test_tmpdir();
    char *root = g_build_filename(dir, "arch", NULL);
    char *sibling = g_build_filename(dir, "arch-old", NULL);
    char *pages = g_build_filename(root, "pages", NULL);
    g_mkdir_with_parents(sibling, 0755);
    g_mkdir_with_parents(pages, 0755);
    char *doc = g_build_filename(root, "a.tif", NULL);
    char *db = g_build_filename(root, "docqa.db", NULL);
    char *stored = g_build_filename(pages, "b.tif", NULL);
    char *old = g_build_filename(sibling, "c.tif", NULL);
    char *link_old = g_build_filename(root, "old.tif", NULL);
    write_tiff(doc, V_GRAY8, 1, 1);
    write_tiff(stored, V_GRAY8, 1, 1);
    write_tiff(old, V_GRAY8, 1, 1);
    g_assert_true(g_file_set_contents(db, "SQLite format 3", -1, NULL));
    g_assert_cmpint(symlink(old, link_old), ==, 0);
    struct utimbuf when = {.actime = 1000000000, .modtime = 1000000000};
    g_assert_cmpint(utime(doc, &when), ==, 0);
    struct stat st;
    g_assert_cmpint(stat(doc, &st), ==, 0);

    const char *roots[] = {root, NULL};
    const char *exclude[] = {pages, db, NULL};
    int skipped = -1;
    GPtrArray *unreadable = g_ptr_array_new_with_free_func((GDestroyNotify)walk_entry_free);
    GPtrArray *left = g_ptr_array_new_with_free_func((GDestroyNotify)walk_entry_free);
    GPtrArray *out = ingest_walk(roots, FALSE, exclude, &skipped, unreadable, left);
    g_assert_cmpint(out->len, ==, 1);
    const WalkEntry *e = g_ptr_array_index(out, 0);
    g_assert_cmpstr(e->path, ==, doc);
    g_assert_cmpint(e->bytes, ==, st.st_size);
    g_assert_cmpint(e->mtime, ==, 1000000000);
    g_assert_true(e->regular);
    g_assert_cmpint(skipped, ==, 0);
    g_assert_cmpint(unreadable->len, ==, 0);
    g_assert_cmpint(left->len, ==, 1);
    const WalkEntry *l = g_ptr_array_index(left, 0);
    g_assert_cmpstr(l->path, ==, link_old);
    g_assert_cmpint(l->open_errno, ==, 0); /* outside, not broken */
    g_ptr_array_free(out, TRUE);

    /* A missing file named twice is one entry, as an existing one is. */
    char *missing = g_build_filename(root, "gone.pdf", NULL);
    const char *twice[] = {missing, missing, NULL};
    out = ingest_walk(twice, FALSE, NULL, NULL, NULL, NULL);
    g_assert_cmpint(out->len, ==, 1);
    e = g_ptr_array_index(out, 0);
    g_assert_cmpint(e->open_errno, ==, ENOENT);
    g_assert_cmpint(e->kind, ==, DOC_KIND_PDF);
    g_ptr_array_free(out, TRUE);
    g_free(missing);

    char *arch[] = {"/srv/arch", NULL}, *slash[] = {"/", NULL};
    g_assert_true(ingest_path_inside("/srv/arch", arch));
    g_assert_true(ingest_path_inside("/srv/arch/2024/a.pdf", arch));
    g_assert_false(ingest_path_inside("/srv/arch-old/a.pdf", arch));
    g_assert_false(ingest_path_inside("/srv/archive", arch));
    g_assert_true(ingest_path_inside("/srv/arch-old/a.pdf", slash));

    g_ptr_array_free(unreadable, TRUE);
    g_ptr_array_free(left, TRUE);
    const char *paths[] = {dir, root, sibling, pages, doc, db, stored, old, link_old};
    for (size_t i = 0; i < G_N_ELEMENTS(paths); i++)
        g_free((char *)paths[i]);
}

static void test_walk_rules(void) {
    Fixture f;
    fixture_init(&f);
    f.opt.n_res = 1;
    f.opt.tile = 32;
    char *root = in_dir(&f, "root");
    char *outside = in_dir(&f, "outside.tif");
    char *sub = g_build_filename(root, "sub", NULL);
    char *hidden_dir = g_build_filename(root, ".cache", NULL);
    g_mkdir_with_parents(sub, 0755);
    g_mkdir_with_parents(hidden_dir, 0755);
    char *p1 = g_build_filename(root, "one.tif", NULL);
    char *p2 = g_build_filename(sub, "two.TIFF", NULL);
    char *p3 = g_build_filename(sub, "scan-without-extension", NULL);
    char *h1 = g_build_filename(root, ".hidden.tif", NULL);
    char *h2 = g_build_filename(hidden_dir, "cached.tif", NULL);
    char *txt = g_build_filename(sub, "readme.txt", NULL);
    char *link_out = g_build_filename(root, "outside-link.tif", NULL);
    char *link_in = g_build_filename(sub, "one-again.tif", NULL);
    char *link_loop = g_build_filename(sub, "loop", NULL);
    char *link_first = g_build_filename(root, "a-link-to-one.tif", NULL);
    char *link_sub = g_build_filename(root, "a-link-to-sub", NULL);
    char *hard = g_build_filename(root, "two-under-another-name.tif", NULL);
    char *link_broken = g_build_filename(sub, "moved-away.tif", NULL);
    const char *tiffs[] = {p1, p2, p3, h1, h2, outside};
    for (size_t i = 0; i < G_N_ELEMENTS(tiffs); i++)
        write_tiff(tiffs[i], V_GRAY8, 1, 1);
    g_assert_true(g_file_set_contents(txt, "not a document", -1, NULL));
    g_assert_cmpint(symlink(outside, link_out), ==, 0);
    g_assert_cmpint(symlink(p1, link_in), ==, 0);
    g_assert_cmpint(symlink(p1, link_first), ==, 0);
    g_assert_cmpint(symlink(sub, link_sub), ==, 0);
    g_assert_cmpint(symlink(root, link_loop), ==, 0);
    g_assert_cmpint(link(p2, hard), ==, 0);
    g_assert_cmpint(symlink("no-such-file.tif", link_broken), ==, 0);
    run_ingest(&f, root);
    /* one.tif, two.TIFF and its hard link, the extension-less TIFF; not the hidden ones, not the
     * link out of the root, not one.tif again through either link, nor sub's files through the
     * link to sub (even where the link's name comes first: a file keeps its own name), and the
     * loop ends. */
    g_assert_cmpint(f.sum.files, ==, 4);
    g_assert_cmpint(f.sum.documents_ok, ==, 4);
    g_assert_cmpint(f.sum.skipped, ==, 1);
    g_assert_cmpint(f.sum.documents_failed, ==, 0);
    g_assert_cmpint(f.sum.failures->len, ==, 0);
    /* The links left are said: what they lead to is not in the ingest. */
    g_assert_cmpint(f.sum.links_not_followed->len, ==, 2);
    const DqIngestFailure *left[2];
    for (guint i = 0; i < 2; i++)
        left[i] = g_ptr_array_index(f.sum.links_not_followed, i);
    if (strcmp(left[0]->path, link_out) != 0) {
        const DqIngestFailure *t = left[0];
        left[0] = left[1];
        left[1] = t;
    }
    g_assert_cmpstr(left[0]->path, ==, link_out);
    g_assert_cmpstr(left[0]->status, ==, "skipped");
    g_assert_cmpstr(left[0]->code, ==, "link_outside");
    g_assert_nonnull(strstr(left[0]->message, outside));
    g_assert_cmpstr(left[1]->path, ==, link_broken);
    g_assert_cmpstr(left[1]->code, ==, "link_broken");
    g_assert_nonnull(strstr(left[1]->message, "no-such-file.tif, which cannot be reached: "));
    g_assert_cmpint(query_int(&f, "SELECT count(*) FROM documents WHERE path LIKE '%%outside%%' "
                                  "OR path LIKE '%%/.%%' OR path LIKE '%%link%%'"),
                    ==, 0);
    assert_doc(&f, p1, "ok", NULL);
    /* The hard link is recorded as a copy would be: its own document, the same bytes, and pages
     * of its own naming the same page image. */
    assert_doc(&f, hard, "ok", NULL);
    char *sha_hard = doc_field(&f, hard, "sha256"), *sha_p2 = doc_field(&f, p2, "sha256");
    g_assert_cmpstr(sha_hard, ==, sha_p2);
    char *png_hard = page_png(&f, hard), *png_p2 = page_png(&f, p2);
    g_assert_cmpstr(png_hard, ==, png_p2);
    g_assert_cmpint(query_int(&f,
                              "SELECT count(*) FROM pages p JOIN documents d ON d.id = "
                              "p.document_id WHERE d.path IN (%Q, %Q)",
                              hard, p2),
                    ==, 2);
    /* Named twice, a file is one document; named with its hard link, two. */
    const char *twice[] = {p1, p1, hard, p2, NULL};
    dq_ingest_summary_clear(&f.sum);
    GError *err = NULL;
    g_assert_true(dq_ingest_run(f.store, twice, &f.opt, &f.sum, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(f.sum.files, ==, 3);
    g_assert_cmpint(f.sum.unchanged, ==, 3);
    f.opt.hidden = TRUE;
    run_ingest(&f, root);
    g_assert_cmpint(f.sum.documents_ok, ==, 2); /* the hidden two */
    g_assert_cmpint(f.sum.unchanged, ==, 4);
    g_free(sha_hard);
    g_free(sha_p2);
    g_free(png_hard);
    g_free(png_p2);
    const char *files[] = {p1,  p2,         p3,      h1,         h2,         outside,
                           txt, link_out,   link_in, link_first, hard,       link_loop,
                           sub, hidden_dir, root,    link_sub,   link_broken};
    for (size_t i = 0; i < G_N_ELEMENTS(files); i++)
        g_free((char *)files[i]);
    fixture_clear(&f);
}

static void test_target_size_rule(void) {
    /* Every target is a fixed point of the processor's rule at the same longest edge. */
    const int edges[] = {256, 1536, 1920, 2048, 2560};
    for (size_t e = 0; e < G_N_ELEMENTS(edges); e++)
        for (double w = 1; w < 3000; w = w * 1.37 + 0.5)
            for (double h = 1; h < 3000; h = h * 1.61 + 0.25) {
                int tw = 0, th = 0, rw = 0, rh = 0;
                dq_ingest_target_size(w, h, edges[e], &tw, &th);
                g_assert_cmpint(MAX(tw, th), ==, edges[e]);
                dq_image_fit_longest_edge(tw, th, edges[e], &rw, &rh);
                g_assert_cmpint(rw, ==, tw);
                g_assert_cmpint(rh, ==, th);
            }
    /* Letter at N = 5, tile 512. */
    int tw = 0, th = 0;
    dq_ingest_target_size(612, 792, 2560, &tw, &th);
    g_assert_cmpint(tw, ==, 1978);
    g_assert_cmpint(th, ==, 2560);
}

/* transformers' Idefics3 processor caps the longest edge at 4096 (MAX_IMAGE_SIZE) whatever N x
 * tile asks for, and the pages follow it; the recorded settings say what was rendered. */
static void test_capped_longest_edge(void) {
    DqIngestOptions o;
    dq_ingest_options_init(&o);
    o.n_res = 11;
    o.tile = 384; /* 4224 asked */
    char *js = dq_ingest_render_settings(&o);
    g_assert_cmpstr(js, ==, "{\"longest_edge\":4096,\"n_res\":11,\"tile\":384}");
    g_free(js);
    o.n_res = 10;
    o.tile = 384; /* 3840: under the cap, as asked */
    js = dq_ingest_render_settings(&o);
    g_assert_cmpstr(js, ==, "{\"longest_edge\":3840,\"n_res\":10,\"tile\":384}");
    g_free(js);

    Fixture f;
    fixture_init(&f);
    f.opt.n_res = 11;
    f.opt.tile = 512; /* 5632 asked */
    char *pdf = in_dir(&f, "letter.pdf");
    PageSize letter = {612, 792};
    write_cairo_pdf(pdf, &letter, 1);
    run_ingest(&f, pdf);
    assert_doc(&f, pdf, "ok", NULL);
    g_assert_cmpint(query_int(&f, "SELECT height FROM pages"), ==, 4096);
    /* The processor's rule for 5632, capped (no odd + 1 after the cap): N = 8, 9, 10 and 11 give
     * 3166, 3164, 3164 and 3165, so pages for each N are stored apart. */
    g_assert_cmpint(query_int(&f, "SELECT width FROM pages"), ==, 3165);
    char *settings = query_text(&f, "SELECT render_settings FROM pages");
    g_assert_cmpstr(settings, ==, "{\"longest_edge\":4096,\"n_res\":11,\"tile\":512}");
    g_free(settings);
    g_free(pdf);
    fixture_clear(&f);
}

static void test_tile_from_model(void) {
    const char *shared = dq_test_shared_dir();
    char *dir = dq_test_tmpdir();
    char *cfg = g_build_filename(dir, "preprocessor_config.json", NULL);
    g_assert_true(g_file_set_contents(
        cfg, "{\"max_image_size\": {\"longest_edge\": 384}, \"size\": {\"longest_edge\": 1536}}",
        -1, NULL));
    int tile = 0;
    GError *err = NULL;
    g_assert_true(dq_ingest_tile_from_model(dir, &tile, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(tile, ==, 384);
    g_assert_true(g_file_set_contents(cfg, "{\"size\": {}}", -1, NULL));
    g_assert_false(dq_ingest_tile_from_model(dir, &tile, &err));
    g_assert_nonnull(strstr(err->message, "max_image_size"));
    g_clear_error(&err);
    if (shared != NULL) {
        char *m = g_build_filename(shared, "models", "SmolVLM-256M-Instruct", NULL);
        g_assert_true(dq_ingest_tile_from_model(m, &tile, &err));
        g_assert_cmpint(tile, ==, 512);
        g_free(m);
    }
    g_free(cfg);
    g_free(dir);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ingest/size/target_is_processor_fixed_point", test_target_size_rule);
    g_test_add_func("/ingest/size/tile_from_model", test_tile_from_model);
    g_test_add_func("/ingest/size/capped_longest_edge", test_capped_longest_edge);
    g_test_add_func("/ingest/pdf/sizes_and_pixels", test_pdf_sizes_and_pixels);
    g_test_add_func("/ingest/pdf/rotate_90", test_pdf_rotate_90);
    g_test_add_func("/ingest/pdf/encrypted_and_damaged", test_pdf_encrypted_and_damaged);
    g_test_add_func("/ingest/tiff/variants", test_tiff_variants);
    g_test_add_func("/ingest/tiff/samples_per_pixel", test_tiff_samples_per_pixel);
    g_test_add_func("/ingest/tiff/orientations_and_pages", test_tiff_orientations_and_pages);
    g_test_add_func("/ingest/tiff/alpha", test_tiff_alpha);
    g_test_add_func("/ingest/tiff/16bit", test_tiff_16bit);
    g_test_add_func("/ingest/tiff/planar_miniswhite", test_tiff_planar_miniswhite);
    g_test_add_func("/ingest/tiff/ifd_loop", test_tiff_ifd_loop);
    g_test_add_func("/ingest/tiff/cmyk", test_tiff_cmyk);
    g_test_add_func("/ingest/failures/reasons", test_failure_reasons);
    g_test_add_func("/ingest/failures/misnamed_files", test_misnamed_files);
    g_test_add_func("/ingest/failures/crash_and_hang", test_crash_and_hang_cost_one_page);
    g_test_add_func("/ingest/failures/memory_limit", test_memory_limit);
    g_test_add_func("/ingest/failures/out_of_memory_in_decoder", test_out_of_memory_in_decoder);
    g_test_add_func("/ingest/failures/store", test_store_failure);
    g_test_add_func("/ingest/failures/long_path", test_long_path);
    g_test_add_func("/ingest/store/idempotence_and_versions", test_idempotence_and_versions);
    g_test_add_func("/ingest/store/older_bytes_again", test_older_bytes_again);
    g_test_add_func("/ingest/failures/per_render_settings", test_failures_per_render_settings);
    g_test_add_func("/ingest/failures/retry_partial", test_retry_partial);
    g_test_add_func("/ingest/store/changed_during_ingest", test_changed_during_ingest);
    g_test_add_func("/ingest/store/temp_files_swept", test_temp_files_swept);
    g_test_add_func("/ingest/store/stale_claims_swept", test_stale_claims_swept);
    g_test_add_func("/ingest/store/page_files_checked", test_page_files_checked);
    g_test_add_func("/ingest/store/page_files_verified", test_page_files_verified);
    g_test_add_func("/ingest/store/old_temp_files_swept", test_old_temp_files_swept);
    g_test_add_func("/ingest/store/page_mode_follows_umask", test_page_mode_follows_umask);
    g_test_add_func("/ingest/store/page_found_stored_touched", test_page_found_stored_touched);
    g_test_add_func("/ingest/store/disk_space_checked", test_disk_space_checked);
    g_test_add_func("/ingest/store/page_folder_sync_checked", test_page_folder_sync_checked);
    g_test_add_func("/ingest/store/new_page_folders_synced", test_new_page_folders_synced);
    g_test_add_func("/ingest/store/disk_space_rule_named", test_disk_space_rule_named);
    g_test_add_func("/ingest/store/document_output_budget", test_document_output_budget);
    g_test_add_func("/ingest/interrupt_while_hashing", test_interrupt_while_hashing);
    g_test_add_func("/ingest/interrupt_keeps_pages_done", test_interrupt_keeps_pages_done);
    g_test_add_func("/ingest/retry/renders_only_missing", test_retry_renders_only_missing);
    g_test_add_func("/ingest/retry/interrupted_resumed_by_plain_ingest",
                    test_interrupted_resumed_by_plain_ingest);
    g_test_add_func("/ingest/retry/stored_pages_in_budget",
                    test_retry_counts_stored_pages_in_budget);
    g_test_add_func("/ingest/retry/missing_page_file", test_missing_page_file_renders_that_page);
    g_test_add_func("/ingest/failures/document_time_budget", test_document_time_budget);
    g_test_add_func("/ingest/workers/die_with_parent", test_workers_die_with_parent);
    g_test_add_func("/ingest/workers/cpu_limit", test_worker_cpu_limit);
    g_test_add_func("/ingest/workers/cpu_limits_set", test_worker_cpu_limits_set);
    g_test_add_func("/ingest/walk/rules", test_walk_rules);
    g_test_add_func("/ingest/walk/entries", test_walk_entries);
    g_test_add_func("/ingest/walk/special_files_counted", test_walk_special_files_counted);
    g_test_add_func("/ingest/walk/no_reading_outside_after_walk",
                    test_no_reading_outside_after_walk);
    return g_test_run();
}
