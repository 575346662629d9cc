/* libdocqa_image: size rule, Pillow-exact LANCZOS on every fixture stage, PNG round trip,
 * decoders on images made here with libpng / libjpeg-turbo, EXIF orientations, bad files. */
#include "dq_error.h"
#include "image.h"
#include "image_fixtures.h"
#include "testutil.h"

#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include <jpeglib.h>

/* ---- size rule ---- */

static void test_fit_longest_edge_cases(void) {
    char *dir = dq_fixture_dir();
    char *path = g_build_filename(dir, "tokenizer", "image_size_cases.json", NULL);
    JsonParser *p = json_parser_new();
    GError *err = NULL;
    json_parser_load_from_file(p, path, &err);
    dq_assert_no_error(err);
    JsonArray *cases =
        json_object_get_array_member(json_node_get_object(json_parser_get_root(p)), "cases");
    guint n = json_array_get_length(cases);
    g_assert_cmpuint(n, >=, 100);
    for (guint i = 0; i < n; i++) {
        JsonObject *c = json_array_get_object_element(cases, i);
        int w = (int)json_object_get_int_member(c, "width");
        int h = (int)json_object_get_int_member(c, "height");
        int le = (int)json_object_get_int_member(c, "longest_edge");
        JsonArray *want = json_object_get_array_member(c, "resized_wh");
        int ow = 0, oh = 0;
        dq_image_fit_longest_edge(w, h, le, &ow, &oh);
        if (ow != json_array_get_int_element(want, 0) || oh != json_array_get_int_element(want, 1))
            g_error("%dx%d at longest edge %d: got %dx%d, golden %dx%d", w, h, le, ow, oh,
                    (int)json_array_get_int_element(want, 0),
                    (int)json_array_get_int_element(want, 1));
    }
    g_test_message("%u size cases", n);
    g_object_unref(p);
    g_free(path);
    g_free(dir);
}

static void test_fit_longest_edge_traps(void) {
    int w, h;
    dq_image_fit_longest_edge(2048, 211, 2048, &w, &h); /* 210.99999999999997 -> 210 */
    g_assert_cmpint(w, ==, 2048);
    g_assert_cmpint(h, ==, 210);
    dq_image_fit_longest_edge(2000, 300, 2048, &w, &h); /* 307 is odd -> 308 */
    g_assert_cmpint(h, ==, 308);
    dq_image_fit_longest_edge(850, 1100, 4608, &w, &h); /* capped at 4096 without +1 */
    g_assert_cmpint(w, ==, 3164);
    g_assert_cmpint(h, ==, 4096);
    dq_image_fit_longest_edge(1, 3000, 512, &w, &h);
    g_assert_cmpint(w, ==, 1);
    g_assert_cmpint(h, ==, 512);
    /* exactly at the cap (--n-res 8 of 512 px tiles): not recomputed, which would give
     * int(4096 / (4096 / 210)) = 209 */
    dq_image_fit_longest_edge(4096, 210, 4096, &w, &h);
    g_assert_cmpint(w, ==, 4096);
    g_assert_cmpint(h, ==, 210);
}

/* ---- the resampler on every fixture stage ---- */

static void check_fixture_image(const DqFixtureImage *fx, void *user) {
    int *tiles_checked = user;
    char *label = g_strdup_printf("%s/%s image %d", fx->case_name, fx->variant, fx->image_index);
    GError *err = NULL;
    DqImage *rgb = dq_image_load(fx->image_path, DQ_EXIF_APPLY, &err);
    dq_assert_no_error(err);
    char *what = g_strdup_printf("%s stage rgb", label);
    dq_assert_image_matches(rgb, dq_fixture_stage(fx->preprocess, "rgb"), what);
    g_free(what);

    /* Longest-edge resize to the size the rule gives for the golden's longest edge. */
    JsonObject *le = dq_fixture_stage(fx->preprocess, "resize_longest_edge");
    g_assert_nonnull(le);
    int lw = (int)json_object_get_int_member(le, "width");
    int lh = (int)json_object_get_int_member(le, "height");
    int w, h;
    dq_image_fit_longest_edge(rgb->width, rgb->height, MAX(lw, lh), &w, &h);
    DqImage *resized = dq_image_resize_lanczos(rgb, w, h);
    what = g_strdup_printf("%s stage resize_longest_edge", label);
    dq_assert_image_matches(resized, le, what);
    g_free(what);

    JsonArray *tiles = json_object_get_array_member(fx->preprocess, "tiles");
    guint ntiles = json_array_get_length(tiles);
    JsonObject *last = json_array_get_object_element(tiles, ntiles - 1);
    int t = (int)json_object_get_int_member(last, "width");
    JsonObject *ve = dq_fixture_stage(fx->preprocess, "resize_for_vision_encoder");
    if (ve == NULL) {
        /* No split: one straight tile x tile resize of the longest-edge image. */
        g_assert_cmpuint(ntiles, ==, 1);
        DqImage *tile = dq_image_resize_lanczos(resized, t, t);
        what = g_strdup_printf("%s no-split tile", label);
        dq_assert_image_matches(tile, last, what);
        g_free(what);
        dq_image_free(tile);
        (*tiles_checked)++;
    } else {
        /* Sizes come from the golden here; the processor's tests check the size rule. */
        int aw = (int)json_object_get_int_member(ve, "width");
        int ah = (int)json_object_get_int_member(ve, "height");
        DqImage *aligned = dq_image_resize_lanczos(resized, aw, ah);
        what = g_strdup_printf("%s stage resize_for_vision_encoder", label);
        dq_assert_image_matches(aligned, ve, what);
        g_free(what);
        int cols = aw / t, rows = ah / t;
        for (guint i = 0; i < ntiles; i++) {
            JsonObject *rec = json_array_get_object_element(tiles, i);
            DqImage *tile;
            if (json_object_get_boolean_member(rec, "is_global")) {
                g_assert_cmpuint(i, ==, ntiles - 1);
                tile = dq_image_resize_lanczos(aligned, t, t);
            } else {
                g_assert_cmpint((int)i, <, rows * cols);
                tile = dq_image_crop(aligned, ((int)i % cols) * t, ((int)i / cols) * t, t, t);
            }
            what = g_strdup_printf("%s tile %u", label, i);
            dq_assert_image_matches(tile, rec, what);
            g_free(what);
            dq_image_free(tile);
            (*tiles_checked)++;
        }
        dq_image_free(aligned);
    }
    dq_image_free(resized);
    dq_image_free(rgb);
    g_free(label);
}

static void test_fixture_stages(void) {
    int tiles = 0;
    int images = dq_fixture_foreach_image(check_fixture_image, &tiles);
    g_assert_cmpint(images, >, 0);
    g_assert_cmpint(tiles, >, 0);
    g_test_message("%d images, %d tiles bit-exact", images, tiles);
}

/* ---- resampler properties ---- */

static DqImage *pattern_image(int w, int h, unsigned seed) {
    DqImage *img = dq_image_new(w, h);
    g_assert_nonnull(img);
    GRand *r = g_rand_new_with_seed(seed);
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        img->pixels[i] = (uint8_t)g_rand_int_range(r, 0, 256);
    g_rand_free(r);
    return img;
}

/* Every resampling kernel (portable, AVX2, AVX-512: image/resample.c) gives the same bytes:
 * each against the portable one on sizes with partial strips and row tails, up and down, one
 * axis and both, then each through the fixtures' Pillow stages. */
static void test_resize_kernels(void) {
    static const char *kernels[] = {"portable", "avx2", "avx512"};
    static const int sizes[][4] = {{37, 53, 101, 17},    {333, 129, 64, 64},  {97, 300, 200, 75},
                                   {1978, 70, 2048, 70}, {2048, 97, 512, 33}, {513, 1000, 513, 250},
                                   {5, 5, 300, 301},     {640, 31, 17, 400}};
    GRand *rng = g_rand_new_with_seed(18);
    for (size_t c = 0; c < G_N_ELEMENTS(sizes); c++) {
        DqImage *a = dq_image_new(sizes[c][0], sizes[c][1]);
        for (size_t i = 0; i < (size_t)a->width * a->height * 3; i++)
            a->pixels[i] =
                (uint8_t)(i % 7 == 0 ? (size_t)g_rand_int_range(rng, 0, 256) : 255 * (i % 2));
        DqImage *want = NULL;
        for (size_t k = 0; k < G_N_ELEMENTS(kernels); k++) {
            g_setenv("DOCQA_RESAMPLE", kernels[k], TRUE);
            DqImage *b = dq_image_resize_lanczos(a, sizes[c][2], sizes[c][3]);
            g_assert_nonnull(b);
            if (want == NULL) {
                want = b;
                continue;
            }
            if (memcmp(b->pixels, want->pixels, (size_t)b->width * b->height * 3) != 0)
                g_error("%dx%d -> %dx%d: the %s kernel differs from the portable one", sizes[c][0],
                        sizes[c][1], sizes[c][2], sizes[c][3], kernels[k]);
            dq_image_free(b);
        }
        dq_image_free(want);
        dq_image_free(a);
    }
    g_rand_free(rng);
    for (size_t k = 0; k < G_N_ELEMENTS(kernels); k++) {
        g_setenv("DOCQA_RESAMPLE", kernels[k], TRUE);
        test_fixture_stages();
    }
    g_unsetenv("DOCQA_RESAMPLE");
    g_test_message("kernels on this CPU: avx2 %s, avx512f %s (a missing one ran the next below)",
                   __builtin_cpu_supports("avx2") ? "yes" : "no",
                   __builtin_cpu_supports("avx512f") ? "yes" : "no");
}

/* Pillow 12.3's Image.resize runs the vertical pass first when the image is over 100 times
 * taller than wide and the height shrinks (a narrow intermediate instead of a tall one), which
 * changes the rounding of the uint8 intermediate. Goldens from Pillow 12.3.0
 * (tests/image/pillow_tall_goldens.py); the 100:1 case and a wide one stay horizontal first. */
static void test_resize_tall_vertical_first(void) {
    static const struct {
        int w, h, ow, oh;
        const char *sha256;
    } cases[] = {
        {20, 3000, 14, 2048, "00dd4f78e115168ca99576bf25bd783bf022413cce28fd66d382e6781a3ef70a"},
        {6, 1000, 512, 512, "3f84d3606e4a63e445652eb2ae0874d8b2d1fe8677ced7e66a5f6f735c6cb8da"},
        {3, 4097, 2, 2048, "64a9e198e34bb303380c59c58b4a6cd3e9b775716e7fe71b8e062e9da8d60c2d"},
        {20, 2000, 14, 1400, "c64a5a5f0c144a3963ff2c45acace8155baf219d19cd89bdd1ea9991c6c17044"},
        {3000, 20, 2048, 14, "eca8be27fd89b7906e9d14e884289382fd5574d585b0f0eb9982b648e0205948"},
        {5, 900, 5, 300, "5605b997e48e260a4c0fd65190672124ca25e3661eaef65a61f9237ccc7cb0eb"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        DqImage *a = dq_image_new(cases[i].w, cases[i].h);
        for (int y = 0; y < a->height; y++)
            for (int x = 0; x < a->width; x++)
                for (int c = 0; c < 3; c++)
                    a->pixels[((size_t)y * a->width + x) * 3 + c] =
                        (uint8_t)((x * 7 + y * 13 + c * 101 + (x * y) % 17) & 255);
        DqImage *b = dq_image_resize_lanczos(a, cases[i].ow, cases[i].oh);
        g_assert_nonnull(b);
        char *sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256, b->pixels,
                                                (gsize)b->width * b->height * 3);
        if (strcmp(sha, cases[i].sha256) != 0)
            g_error("%dx%d -> %dx%d differs from Pillow 12.3", cases[i].w, cases[i].h, cases[i].ow,
                    cases[i].oh);
        g_free(sha);
        dq_image_free(b);
        dq_image_free(a);
    }
}

static void test_resize_same_size_is_copy(void) {
    DqImage *a = pattern_image(37, 23, 1);
    DqImage *b = dq_image_resize_lanczos(a, 37, 23);
    g_assert_cmpmem(a->pixels, 37 * 23 * 3, b->pixels, 37 * 23 * 3);
    dq_image_free(b);
    dq_image_free(a);
}

static void test_resize_flat_stays_flat(void) {
    DqImage *a = dq_image_new(50, 30);
    memset(a->pixels, 200, 50 * 30 * 3);
    int sizes[][2] = {{5, 90}, {123, 7}, {50, 61}, {17, 30}, {1, 1}};
    for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++) {
        DqImage *b = dq_image_resize_lanczos(a, sizes[s][0], sizes[s][1]);
        g_assert_cmpint(b->width, ==, sizes[s][0]);
        g_assert_cmpint(b->height, ==, sizes[s][1]);
        for (size_t i = 0; i < (size_t)b->width * b->height * 3; i++)
            g_assert_cmpint(b->pixels[i], ==, 200);
        dq_image_free(b);
    }
    dq_image_free(a);
}

static void test_resize_one_axis_skips_other_pass(void) {
    /* Only the width changes: every column mix stays within its own row. */
    DqImage *a = dq_image_new(40, 3);
    memset(a->pixels + 40 * 3, 255, 40 * 3); /* row 1 white, rows 0 and 2 black */
    DqImage *b = dq_image_resize_lanczos(a, 97, 3);
    for (int x = 0; x < 97 * 3; x++) {
        g_assert_cmpint(b->pixels[x], ==, 0);
        g_assert_cmpint(b->pixels[97 * 3 + x], ==, 255);
    }
    dq_image_free(b);
    dq_image_free(a);
}

static void test_bad_arguments(void) {
    g_assert_null(dq_image_new(0, 5));
    g_assert_null(dq_image_new(5, -1));
    DqImage *a = pattern_image(8, 8, 2);
    g_assert_null(dq_image_crop(a, 4, 4, 5, 4));
    g_assert_null(dq_image_crop(a, -1, 0, 2, 2));
    g_assert_null(dq_image_resize_lanczos(a, 0, 3));
    DqImage *c = dq_image_crop(a, 3, 2, 5, 6);
    g_assert_cmpmem(c->pixels, 15, a->pixels + (2 * 8 + 3) * 3, 15);
    g_assert_cmpmem(c->pixels + 5 * 15, 15, a->pixels + (7 * 8 + 3) * 3, 15);
    dq_image_free(c);
    dq_image_free(a);
    dq_image_free(NULL);
}

/* ---- PNG writing ---- */

static void test_png_round_trip(void) {
    DqImage *a = pattern_image(61, 17, 3);
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "rt.png", NULL);
    GError *err = NULL;
    g_assert_true(dq_image_write_png(a, path, &err));
    dq_assert_no_error(err);
    DqImage *b = dq_image_load(path, DQ_EXIF_APPLY, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(b->width, ==, 61);
    g_assert_cmpint(b->height, ==, 17);
    g_assert_cmpmem(a->pixels, 61 * 17 * 3, b->pixels, 61 * 17 * 3);
    GBytes *bytes = dq_image_encode_png(a, &err);
    dq_assert_no_error(err);
    gsize n;
    const uint8_t *d = g_bytes_get_data(bytes, &n);
    DqImage *c = dq_image_decode(d, n, "mem.png", DQ_EXIF_IGNORE, &err);
    dq_assert_no_error(err);
    g_assert_cmpmem(a->pixels, 61 * 17 * 3, c->pixels, 61 * 17 * 3);
    g_assert_false(dq_image_write_png(a, "/nonexistent-dir/x.png", &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    g_assert_nonnull(strstr(err->message, "/nonexistent-dir/x.png"));
    g_clear_error(&err);
    g_bytes_unref(bytes);
    dq_image_free(c);
    dq_image_free(b);
    dq_image_free(a);
    g_free(path);
    g_free(dir);
}

/* ---- decoders, on files made here with libpng / libjpeg-turbo ---- */

typedef struct {
    int color_type, depth, interlace;
    const uint8_t *palette; /* [n_palette][3] */
    int n_palette;
    const uint8_t *trns;
    int n_trns;
    const uint8_t *exif;
    size_t exif_len;
    const char *xmp;
    const png_text *texts; /* more text chunks, before IDAT */
    int n_texts;
    const png_unknown_chunk *chunks; /* raw chunks, where .location says */
    int n_chunks;
    gboolean no_iend;
} PngSpec;

static void png_mem_write(png_structp png, png_bytep data, size_t n) {
    g_byte_array_append(png_get_io_ptr(png), data, (guint)n);
}

static void png_mem_flush(png_structp png) {}

/* rows: raw libpng rows (big-endian 16-bit, packed sub-byte samples) */
static GByteArray *make_png(int w, int h, const PngSpec *s, const uint8_t *rows, size_t rowbytes) {
    GByteArray *out = g_byte_array_new();
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    g_assert_nonnull(info);
    if (setjmp(png_jmpbuf(png)))
        g_error("libpng could not write the test image");
    png_set_write_fn(png, out, png_mem_write, png_mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, s->depth, s->color_type, s->interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (s->palette != NULL) {
        png_color plte[256];
        for (int i = 0; i < s->n_palette; i++)
            plte[i] = (png_color){s->palette[3 * i], s->palette[3 * i + 1], s->palette[3 * i + 2]};
        png_set_PLTE(png, info, plte, s->n_palette);
    }
    if (s->trns != NULL)
        png_set_tRNS(png, info, s->trns, s->n_trns, NULL);
    if (s->exif != NULL)
        png_set_eXIf_1(png, info, (png_uint_32)s->exif_len, (png_bytep)s->exif);
    if (s->xmp != NULL) {
        png_text t = {.compression = PNG_ITXT_COMPRESSION_NONE,
                      .key = "XML:com.adobe.xmp",
                      .text = (char *)s->xmp,
                      .itxt_length = strlen(s->xmp)};
        png_set_text(png, info, &t, 1);
    }
    if (s->texts != NULL)
        png_set_text(png, info, s->texts, s->n_texts);
    if (s->chunks != NULL)
        png_set_unknown_chunks(png, info, s->chunks, s->n_chunks);
    png_write_info(png, info);
    int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; p++)
        for (int y = 0; y < h; y++)
            png_write_row(png, rows + (size_t)y * rowbytes);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    if (s->no_iend)
        g_byte_array_set_size(out, out->len - 12); /* IEND is the last 12 bytes */
    return out;
}

static DqImage *decode_ok(const GByteArray *b, DqExifMode mode) {
    GError *err = NULL;
    DqImage *img = dq_image_decode(b->data, b->len, "test", mode, &err);
    dq_assert_no_error(err);
    g_assert_nonnull(img);
    return img;
}

static void assert_px(const DqImage *img, int x, int y, int r, int g, int b) {
    const uint8_t *p = img->pixels + ((size_t)y * img->width + x) * 3;
    if (p[0] != r || p[1] != g || p[2] != b)
        g_error("pixel (%d,%d) = (%d,%d,%d), want (%d,%d,%d)", x, y, p[0], p[1], p[2], r, g, b);
}

static void test_png_gray_depths(void) {
    /* 1/2/4-bit gray scale up (Pillow "1", L;2, L;4), 8-bit as is. */
    struct {
        int depth;
        uint8_t row[2];
        int want[4];
    } cases[] = {{1, {0xA0, 0}, {255, 0, 255, 0}},
                 {2, {0x1B, 0}, {0, 85, 170, 255}},
                 {4, {0x0F, 0x8A}, {0, 255, 136, 170}}};
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        PngSpec s = {.color_type = PNG_COLOR_TYPE_GRAY, .depth = cases[i].depth};
        GByteArray *b = make_png(4, 1, &s, cases[i].row, 2);
        DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
        for (int x = 0; x < 4; x++)
            assert_px(img, x, 0, cases[i].want[x], cases[i].want[x], cases[i].want[x]);
        dq_image_free(img);
        g_byte_array_unref(b);
    }
    uint8_t gray8[3] = {7, 128, 250};
    PngSpec s8 = {.color_type = PNG_COLOR_TYPE_GRAY, .depth = 8};
    GByteArray *b = make_png(3, 1, &s8, gray8, 3);
    DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
    assert_px(img, 1, 0, 128, 128, 128);
    assert_px(img, 2, 0, 250, 250, 250);
    dq_image_free(img);
    g_byte_array_unref(b);
}

static void test_png_16bit(void) {
    /* 16-bit gray is Pillow mode I;16, whose RGB conversion clips at 255 (no scaling). */
    uint8_t g16[8] = {0x00, 0xC8, 0x01, 0x00, 0xFF, 0xFF, 0x00, 0xFF};
    PngSpec sg = {.color_type = PNG_COLOR_TYPE_GRAY, .depth = 16};
    GByteArray *b = make_png(4, 1, &sg, g16, 8);
    DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
    assert_px(img, 0, 0, 200, 200, 200);
    assert_px(img, 1, 0, 255, 255, 255);
    assert_px(img, 2, 0, 255, 255, 255);
    assert_px(img, 3, 0, 255, 255, 255);
    dq_image_free(img);
    g_byte_array_unref(b);
    /* 16-bit RGB, RGBA and gray+alpha keep the high byte (truncation, not rounding). */
    uint8_t rgb16[6] = {0x12, 0xFF, 0xAB, 0x80, 0x00, 0x01};
    PngSpec sr = {.color_type = PNG_COLOR_TYPE_RGB, .depth = 16};
    b = make_png(1, 1, &sr, rgb16, 6);
    img = decode_ok(b, DQ_EXIF_APPLY);
    assert_px(img, 0, 0, 0x12, 0xAB, 0x00);
    dq_image_free(img);
    g_byte_array_unref(b);
    uint8_t rgba16[8] = {0xFE, 0xFF, 0x01, 0x80, 0x7F, 0x00, 0x00, 0x00};
    PngSpec sa = {.color_type = PNG_COLOR_TYPE_RGBA, .depth = 16};
    b = make_png(1, 1, &sa, rgba16, 8);
    img = decode_ok(b, DQ_EXIF_APPLY);
    assert_px(img, 0, 0, 0xFE, 0x01, 0x7F);
    dq_image_free(img);
    g_byte_array_unref(b);
    uint8_t ga16[4] = {0xAB, 0xCD, 0x00, 0x00};
    PngSpec sga = {.color_type = PNG_COLOR_TYPE_GRAY_ALPHA, .depth = 16};
    b = make_png(1, 1, &sga, ga16, 4);
    img = decode_ok(b, DQ_EXIF_APPLY);
    assert_px(img, 0, 0, 0xAB, 0xAB, 0xAB);
    dq_image_free(img);
    g_byte_array_unref(b);
}

static void test_png_alpha_dropped(void) {
    /* Fully transparent pixels keep their stored colour: no compositing onto white or black. */
    uint8_t rgba[8] = {0, 255, 0, 0, 10, 20, 30, 128};
    PngSpec s = {.color_type = PNG_COLOR_TYPE_RGBA, .depth = 8};
    GByteArray *b = make_png(2, 1, &s, rgba, 8);
    DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
    assert_px(img, 0, 0, 0, 255, 0);
    assert_px(img, 1, 0, 10, 20, 30);
    dq_image_free(img);
    g_byte_array_unref(b);
    uint8_t ga[4] = {77, 0, 200, 255};
    PngSpec sg = {.color_type = PNG_COLOR_TYPE_GRAY_ALPHA, .depth = 8};
    b = make_png(2, 1, &sg, ga, 4);
    img = decode_ok(b, DQ_EXIF_APPLY);
    assert_px(img, 0, 0, 77, 77, 77);
    assert_px(img, 1, 0, 200, 200, 200);
    dq_image_free(img);
    g_byte_array_unref(b);
}

static void test_png_palette(void) {
    /* 4-bit palette with tRNS (ignored); index 3 lies past the 3-entry PLTE and reads black. */
    const uint8_t plte[] = {255, 0, 0, 0, 0, 255, 9, 8, 7};
    const uint8_t trns[] = {0, 128};
    uint8_t row[2] = {0x01, 0x23};
    PngSpec s = {.color_type = PNG_COLOR_TYPE_PALETTE,
                 .depth = 4,
                 .palette = plte,
                 .n_palette = 3,
                 .trns = trns,
                 .n_trns = 2};
    GByteArray *b = make_png(4, 1, &s, row, 2);
    DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
    assert_px(img, 0, 0, 255, 0, 0);
    assert_px(img, 1, 0, 0, 0, 255);
    assert_px(img, 2, 0, 9, 8, 7);
    assert_px(img, 3, 0, 0, 0, 0);
    dq_image_free(img);
    g_byte_array_unref(b);
}

static void test_png_interlaced_and_no_iend(void) {
    DqImage *a = pattern_image(13, 11, 4);
    PngSpec s = {.color_type = PNG_COLOR_TYPE_RGB, .depth = 8, .interlace = PNG_INTERLACE_ADAM7};
    GByteArray *b = make_png(13, 11, &s, a->pixels, 13 * 3);
    DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
    g_assert_cmpmem(img->pixels, 13 * 11 * 3, a->pixels, 13 * 11 * 3);
    dq_image_free(img);
    g_byte_array_unref(b);
    /* Damage after the image data (no IEND) is ignored, as Pillow does. */
    PngSpec s2 = {.color_type = PNG_COLOR_TYPE_RGB, .depth = 8, .no_iend = TRUE};
    b = make_png(13, 11, &s2, a->pixels, 13 * 3);
    img = decode_ok(b, DQ_EXIF_APPLY);
    g_assert_cmpmem(img->pixels, 13 * 11 * 3, a->pixels, 13 * 11 * 3);
    dq_image_free(img);
    g_byte_array_unref(b);
    dq_image_free(a);
}

/* A little-endian TIFF blob whose IFD0 holds only Orientation. */
static size_t make_exif(uint8_t out[26], int orientation, gboolean with_header) {
    static const uint8_t tiff[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3,
                                   0,   1,   0,  0, 0, 0, 0, 0, 0, 0, 0,    0,    0};
    size_t off = 0;
    if (with_header) {
        memcpy(out, "Exif\0\0", 6);
        off = 6;
    }
    memcpy(out + off, tiff, 20);
    out[off + 18] = (uint8_t)orientation;
    memset(out + off + 20, 0, 4); /* no next IFD */
    return off + 24;
}

static void test_png_exif_orientations(void) {
    /* 4x3, red marker at (0,0) and green at (1,0): the pair pins down the transposition. */
    for (int o = 1; o <= 8; o++) {
        DqImage *a = dq_image_new(4, 3);
        a->pixels[0] = 255;
        a->pixels[3 + 1] = 255;
        uint8_t exif[30];
        size_t n = make_exif(exif, o, FALSE);
        PngSpec s = {.color_type = PNG_COLOR_TYPE_RGB, .depth = 8, .exif = exif, .exif_len = n};
        GByteArray *b = make_png(4, 3, &s, a->pixels, 12);
        DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
        gboolean swap = o >= 5;
        g_assert_cmpint(img->width, ==, swap ? 3 : 4);
        g_assert_cmpint(img->height, ==, swap ? 4 : 3);
        int rx, ry, gx, gy;
        dq_test_oriented_position(o, 4, 3, 0, 0, &rx, &ry);
        dq_test_oriented_position(o, 4, 3, 1, 0, &gx, &gy);
        assert_px(img, rx, ry, 255, 0, 0);
        assert_px(img, gx, gy, 0, 255, 0);
        dq_image_free(img);
        /* DQ_EXIF_IGNORE keeps the stored layout. */
        img = decode_ok(b, DQ_EXIF_IGNORE);
        g_assert_cmpint(img->width, ==, 4);
        assert_px(img, 0, 0, 255, 0, 0);
        dq_image_free(img);
        g_byte_array_unref(b);
        dq_image_free(a);
    }
    /* Every pixel of an image larger than the transposition's tiles and not a multiple of
     * them (150x70: partial tiles on both edges) lands where exif_transpose puts it. */
    for (int o = 2; o <= 8; o++) {
        const int W = 150, H = 70;
        DqImage *a = dq_image_new(W, H);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                uint8_t *p = a->pixels + ((size_t)y * W + x) * 3;
                p[0] = (uint8_t)x, p[1] = (uint8_t)y, p[2] = (uint8_t)(x ^ y);
            }
        uint8_t exif[30];
        size_t n = make_exif(exif, o, FALSE);
        PngSpec s = {.color_type = PNG_COLOR_TYPE_RGB, .depth = 8, .exif = exif, .exif_len = n};
        GByteArray *b = make_png(W, H, &s, a->pixels, (size_t)W * 3);
        DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
        g_assert_cmpint(img->width, ==, o >= 5 ? H : W);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int ox, oy;
                dq_test_oriented_position(o, W, H, x, y, &ox, &oy);
                assert_px(img, ox, oy, x, y, x ^ y);
            }
        dq_image_free(img);
        g_byte_array_unref(b);
        dq_image_free(a);
    }
    /* XMP tiff:Orientation counts when there is no EXIF orientation (Pillow's getexif). */
    DqImage *a = dq_image_new(4, 3);
    a->pixels[0] = 255;
    PngSpec s = {.color_type = PNG_COLOR_TYPE_RGB,
                 .depth = 8,
                 .xmp = "<x:xmpmeta><rdf:Description tiff:Orientation=\"6\"/></x:xmpmeta>"};
    GByteArray *b = make_png(4, 3, &s, a->pixels, 12);
    DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
    g_assert_cmpint(img->width, ==, 3);
    assert_px(img, 2, 0, 255, 0, 0);
    dq_image_free(img);
    g_byte_array_unref(b);
    dq_image_free(a);
}

/* A JPEG of the given pixels with up to two APP1 segments (app1_b after app1). */
static GByteArray *make_jpeg2(int w, int h, int comps, J_COLOR_SPACE in_space,
                              J_COLOR_SPACE jpeg_space, const uint8_t *pixels, const uint8_t *app1,
                              size_t app1_len, const uint8_t *app1_b, size_t app1_b_len) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long len = 0;
    jpeg_mem_dest(&c, &buf, &len);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = in_space;
    jpeg_set_defaults(&c);
    jpeg_set_colorspace(&c, jpeg_space);
    jpeg_set_quality(&c, 100, TRUE);
    jpeg_start_compress(&c, TRUE);
    if (app1 != NULL)
        jpeg_write_marker(&c, JPEG_APP0 + 1, app1, (unsigned)app1_len);
    if (app1_b != NULL)
        jpeg_write_marker(&c, JPEG_APP0 + 1, app1_b, (unsigned)app1_b_len);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)c.next_scanline * w * comps);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    GByteArray *out = g_byte_array_new();
    g_byte_array_append(out, buf, (guint)len);
    free(buf);
    return out;
}

static GByteArray *make_jpeg(int w, int h, int comps, J_COLOR_SPACE in_space,
                             J_COLOR_SPACE jpeg_space, const uint8_t *pixels, const uint8_t *app1,
                             size_t app1_len) {
    return make_jpeg2(w, h, comps, in_space, jpeg_space, pixels, app1, app1_len, NULL, 0);
}

static void assert_px_near(const DqImage *img, int x, int y, int r, int g, int b, int tol) {
    const uint8_t *p = img->pixels + ((size_t)y * img->width + x) * 3;
    if (abs(p[0] - r) > tol || abs(p[1] - g) > tol || abs(p[2] - b) > tol)
        g_error("pixel (%d,%d) = (%d,%d,%d), want (%d,%d,%d) +-%d", x, y, p[0], p[1], p[2], r, g, b,
                tol);
}

static void test_jpeg_gray_and_rgb(void) {
    uint8_t gray[16 * 16];
    for (int i = 0; i < 256; i++)
        gray[i] = (uint8_t)(i < 128 ? 40 : 220);
    GByteArray *b = make_jpeg(16, 16, 1, JCS_GRAYSCALE, JCS_GRAYSCALE, gray, NULL, 0);
    DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
    g_assert_cmpint(img->width, ==, 16);
    assert_px_near(img, 3, 2, 40, 40, 40, 2);
    assert_px_near(img, 12, 13, 220, 220, 220, 2);
    const uint8_t *p = img->pixels + (5 * 16 + 9) * 3;
    g_assert_true(p[0] == p[1] && p[1] == p[2]);
    dq_image_free(img);
    g_byte_array_unref(b);
}

/* libjpeg's raw CMYK output -> Pillow: "CMYK;I" inverts, then cmyk2rgb. */
static void pillow_cmyk_to_rgb(const uint8_t raw[4], int out[3]) {
    int k = 255 - raw[3], nk = 255 - k;
    for (int c = 0; c < 3; c++) {
        int ink = 255 - raw[c];
        int tmp = ink * nk + 128;
        int v = nk - (((tmp >> 8) + tmp) >> 8);
        out[c] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
}

/* A lossless or hierarchical JPEG is a coding process the library lacks, not a damaged file:
 * the message says so (Pillow on libjpeg-turbo 3 reads lossless ones). */
static void test_jpeg_unsupported_process(void) {
    static const struct {
        uint8_t sof;
        const char *says;
    } cases[] = {{0xc3, "a lossless JPEG (SOF 0xc3)"}, {0xc5, "a hierarchical JPEG (SOF 0xc5)"}};
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        /* SOI, then a frame header: 8-bit, 16x16, one component. */
        const uint8_t jpeg[] = {0xff, 0xd8, 0xff, cases[i].sof, 0x00, 0x0b, 0x08, 0x00,
                                0x10, 0x00, 0x10, 0x01,         0x01, 0x11, 0x00};
        GError *err = NULL;
        g_assert_null(dq_image_decode(jpeg, sizeof jpeg, "ll.jpg", DQ_EXIF_APPLY, &err));
        g_assert_error(err, DQ_ERROR, DQ_ERR_UNSUPPORTED);
        g_assert_nonnull(strstr(err->message, cases[i].says));
        g_assert_nonnull(strstr(err->message, "ll.jpg"));
        /* only a lossless one is read by a newer libjpeg-turbo */
        g_assert_cmpint(strstr(err->message, "(libjpeg-turbo 3 does)") != NULL, ==, i == 0);
        g_error_free(err);
    }
}

static void test_jpeg_cmyk(void) {
    /* Adobe convention (what Photoshop writes and Pillow assumes): stored = 255 - ink. Four
     * flat 8x8 quadrants: white, cyan ink, 50% black ink, magenta + yellow ink (red). */
    const uint8_t quads[4][4] = {
        {255, 255, 255, 255}, {0, 255, 255, 255}, {255, 255, 255, 128}, {255, 0, 0, 255}};
    const int want[4][3] = {{255, 255, 255}, {0, 255, 255}, {128, 128, 128}, {255, 0, 0}};
    uint8_t px[16 * 16 * 4];
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++)
            memcpy(px + (y * 16 + x) * 4, quads[(y / 8) * 2 + x / 8], 4);
    /* and every ink and black level in steps, checked against Pillow's rounding only: the
     * flat quadrants meet few of its products */
    uint8_t ramp[16 * 16 * 4];
    for (int i = 0; i < 16 * 16; i++) {
        ramp[i * 4] = (uint8_t)i;
        ramp[i * 4 + 1] = (uint8_t)(255 - i);
        ramp[i * 4 + 2] = (uint8_t)(i * 7);
        ramp[i * 4 + 3] = (uint8_t)(i * 13 + 3);
    }
    J_COLOR_SPACE spaces[2] = {JCS_CMYK, JCS_YCCK};
    for (int s = 0; s < 4; s++) {
        GByteArray *b = make_jpeg(16, 16, 4, JCS_CMYK, spaces[s % 2], s < 2 ? px : ramp, NULL, 0);
        DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
        for (int q = 0; q < 4 && s < 2; q++)
            assert_px_near(img, (q % 2) * 8 + 4, (q / 2) * 8 + 4, want[q][0], want[q][1],
                           want[q][2], 3);
        /* Exactly Pillow's arithmetic on libjpeg's own CMYK output. */
        struct jpeg_decompress_struct d;
        struct jpeg_error_mgr e;
        d.err = jpeg_std_error(&e);
        jpeg_create_decompress(&d);
        jpeg_mem_src(&d, b->data, b->len);
        jpeg_read_header(&d, TRUE);
        d.out_color_space = JCS_CMYK;
        jpeg_start_decompress(&d);
        uint8_t raw[16 * 4];
        while (d.output_scanline < d.output_height) {
            int y = (int)d.output_scanline;
            JSAMPROW row = raw;
            jpeg_read_scanlines(&d, &row, 1);
            for (int x = 0; x < 16; x++) {
                int rgb[3];
                pillow_cmyk_to_rgb(raw + 4 * x, rgb);
                assert_px(img, x, y, rgb[0], rgb[1], rgb[2]);
            }
        }
        jpeg_finish_decompress(&d);
        jpeg_destroy_decompress(&d);
        dq_image_free(img);
        g_byte_array_unref(b);
    }
}

static void test_jpeg_exif_orientations(void) {
    /* 32x24 in 8x8 blocks (JPEG is lossy: blocks survive), red block (0,0), green block (1,0). */
    for (int o = 1; o <= 8; o++) {
        uint8_t px[32 * 24 * 3] = {0};
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 16; x++)
                px[(y * 32 + x) * 3 + (x < 8 ? 0 : 1)] = 255;
        uint8_t exif[30];
        size_t n = make_exif(exif, o, TRUE);
        GByteArray *b = make_jpeg(32, 24, 3, JCS_RGB, JCS_YCbCr, px, exif, n);
        DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
        g_assert_cmpint(img->width, ==, o >= 5 ? 24 : 32);
        int rx, ry, gx, gy;
        dq_test_oriented_position(o, 4, 3, 0, 0, &rx, &ry);
        dq_test_oriented_position(o, 4, 3, 1, 0, &gx, &gy);
        assert_px_near(img, rx * 8 + 4, ry * 8 + 4, 255, 0, 0, 8);
        assert_px_near(img, gx * 8 + 4, gy * 8 + 4, 0, 255, 0, 8);
        dq_image_free(img);
        g_byte_array_unref(b);
    }
}

/* An XMP packet in APP1 ("http://ns.adobe.com/xap/1.0/" and a NUL, then the packet) orients
 * the image where EXIF does not; of two, the last counts (Pillow's info["xmp"]). */
static void test_jpeg_xmp(void) {
    uint8_t px[32 * 24 * 3] = {0};
    static const char id[] = "http://ns.adobe.com/xap/1.0/";
    const char *packets[2] = {"<x:xmpmeta><rdf:Description tiff:Orientation=\"3\"/></x:xmpmeta>",
                              "<x:xmpmeta><rdf:Description tiff:Orientation=\"6\"/></x:xmpmeta>"};
    GByteArray *seg[2];
    for (int i = 0; i < 2; i++) {
        seg[i] = g_byte_array_new();
        g_byte_array_append(seg[i], (const uint8_t *)id, sizeof id); /* with its NUL */
        g_byte_array_append(seg[i], (const uint8_t *)packets[i], (guint)strlen(packets[i]));
    }
    for (int n = 1; n <= 2; n++) {
        GByteArray *b = make_jpeg2(32, 24, 3, JCS_RGB, JCS_YCbCr, px, seg[0]->data, seg[0]->len,
                                   n == 2 ? seg[1]->data : NULL, n == 2 ? seg[1]->len : 0);
        DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
        /* 3 (a half turn) keeps 32x24; 6 (a quarter turn) makes it 24x32 */
        g_assert_cmpint(img->width, ==, n == 1 ? 32 : 24);
        dq_image_free(img);
        g_byte_array_unref(b);
    }
    /* an empty last packet counts too: no orientation */
    GByteArray *b = make_jpeg2(32, 24, 3, JCS_RGB, JCS_YCbCr, px, seg[1]->data, seg[1]->len,
                               (const uint8_t *)id, sizeof id);
    DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
    g_assert_cmpint(img->width, ==, 32);
    dq_image_free(img);
    g_byte_array_unref(b);
    g_byte_array_unref(seg[0]);
    g_byte_array_unref(seg[1]);
}

/* EXIF in two APP1 segments (extended EXIF): the second's data, its "Exif\0\0" left out,
 * follows the first's, as Pillow joins them. Here the first holds only the TIFF header, the
 * second the IFD it points at (orientation 6: 32x24 becomes 24x32). */
static void test_jpeg_exif_extended(void) {
    uint8_t px[32 * 24 * 3] = {0};
    uint8_t exif[30];
    size_t n = make_exif(exif, 6, TRUE);
    uint8_t second[30];
    memcpy(second, "Exif\0\0", 6);
    memcpy(second + 6, exif + 14, n - 14);
    GByteArray *b = make_jpeg2(32, 24, 3, JCS_RGB, JCS_YCbCr, px, exif, 14, second, 6 + (n - 14));
    DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
    g_assert_cmpint(img->width, ==, 24);
    dq_image_free(img);
    g_byte_array_unref(b);
}

/* The pixel limit (178956970, Pillow's decompression-bomb error) refuses a JPEG past it, not
 * one of exactly as many: 14351x12470 is that many. The frame header of a 16x16 JPEG says so;
 * its data ends long before, which the decoder then finds (a truncated file). */
static void test_jpeg_pixel_limit(void) {
    uint8_t gray[16 * 16] = {0};
    GByteArray *b = make_jpeg(16, 16, 1, JCS_GRAYSCALE, JCS_GRAYSCALE, gray, NULL, 0);
    guint sof = 2;
    while (sof + 9 < b->len && !(b->data[sof] == 0xff && b->data[sof + 1] == 0xc0))
        sof++;
    g_assert_cmpuint(sof + 9, <, b->len);
    /* without its EOI: the decoder stops at the end of the data, where it would fill 500 MB */
    g_assert_true(b->data[b->len - 2] == 0xff && b->data[b->len - 1] == 0xd9);
    g_byte_array_set_size(b, b->len - 2);
    const int heights[2] = {12470, 12471};
    for (int i = 0; i < 2; i++) {
        b->data[sof + 5] = (uint8_t)(heights[i] >> 8), b->data[sof + 6] = (uint8_t)heights[i];
        b->data[sof + 7] = 14351 >> 8, b->data[sof + 8] = 14351 & 0xff;
        GError *err = NULL;
        g_assert_null(dq_image_decode(b->data, b->len, "big.jpg", DQ_EXIF_APPLY, &err));
        g_assert_nonnull(err);
        g_test_message("%d rows: %s", heights[i], err->message);
        g_assert_cmpint(g_error_matches(err, DQ_ERROR, DQ_ERR_LIMIT), ==, i == 1);
        g_error_free(err);
    }
    g_byte_array_unref(b);
}

/* A JPEG's signature is three bytes (FF D8 FF), as Pillow's: two of them are no JPEG. */
static void test_jpeg_short_signature(void) {
    const uint8_t bytes[] = {0xff, 0xd8, 0xff};
    GError *err = NULL;
    g_assert_null(dq_image_decode(bytes, 2, "short.jpg", DQ_EXIF_APPLY, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_UNSUPPORTED);
    g_assert_null(strstr(err->message, "JPEG:"));
    g_error_free(err);
}

/* A TIFF blob (big-endian: MM) whose IFD0 holds the given entries, values longer than 4 bytes
 * placed after the IFD; `magic` is the 4-byte header. Returns the length. */
typedef struct {
    unsigned tag, type, count;
    const uint8_t *value; /* count x the type's size bytes */
    size_t size;
} ExifEntry;

static size_t make_exif_entries(uint8_t *out, const char *magic, const ExifEntry *e, int n) {
    memcpy(out, magic, 4);
    out[4] = out[5] = out[6] = 0, out[7] = 8;
    size_t at = 8, data = 8 + 2 + 12 * (size_t)n + 4;
    out[at++] = 0, out[at++] = (uint8_t)n;
    for (int i = 0; i < n; i++, at += 12) {
        uint8_t *p = out + at;
        p[0] = (uint8_t)(e[i].tag >> 8), p[1] = (uint8_t)e[i].tag;
        p[2] = 0, p[3] = (uint8_t)e[i].type;
        p[4] = p[5] = p[6] = 0, p[7] = (uint8_t)e[i].count;
        memset(p + 8, 0, 4);
        if (e[i].size <= 4) {
            memcpy(p + 8, e[i].value, e[i].size);
        } else {
            p[10] = (uint8_t)(data >> 8), p[11] = (uint8_t)data;
            memcpy(out + data, e[i].value, e[i].size);
            data += e[i].size;
        }
    }
    memset(out + at, 0, 4); /* no next IFD */
    return data;
}

/* The orientation a decode applied to a 4x3 PNG made as *spec says (red marker at (0,0), green
 * at (1,0)), found from where the markers went; 0 when no transposition puts them there. */
static int applied_orientation_png(PngSpec spec) {
    DqImage *a = dq_image_new(4, 3);
    a->pixels[0] = 255;
    a->pixels[3 + 1] = 255;
    spec.color_type = PNG_COLOR_TYPE_RGB, spec.depth = 8;
    GByteArray *b = make_png(4, 3, &spec, a->pixels, 12);
    DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
    int found = 0;
    for (int o = 1; o <= 8 && found == 0; o++) {
        int rx, ry, gx, gy;
        dq_test_oriented_position(o, 4, 3, 0, 0, &rx, &ry);
        dq_test_oriented_position(o, 4, 3, 1, 0, &gx, &gy);
        if (img->width == (o >= 5 ? 3 : 4) &&
            img->pixels[((size_t)ry * img->width + rx) * 3] == 255 &&
            img->pixels[((size_t)gy * img->width + gx) * 3 + 1] == 255)
            found = o;
    }
    dq_image_free(img);
    g_byte_array_unref(b);
    dq_image_free(a);
    return found;
}

static int applied_orientation(const uint8_t *exif, size_t n, const char *xmp) {
    return applied_orientation_png((PngSpec){.exif = exif, .exif_len = n, .xmp = xmp});
}

/* Orientation stored with other types than SHORT, as Pillow 12.3's ImageFileDirectory_v2 and
 * ImageOps.exif_transpose read it (checked against Pillow on each of these blobs): the tag's
 * value is looked up in {2: ..., 8: ...} by equality, so any number equal to 2..8 counts
 * (SSHORT 6, FLOAT 6.0, RATIONAL 12/2, DOUBLE 6.0, the first of several values); BYTE and
 * UNDEFINED load as bytes and ASCII as str, which equal no int: no transposition, and XMP is
 * not consulted either, the tag being present. Unknown types and count 0 are skipped as if the
 * entry were absent; of two Orientation entries the last wins. eXIf data starting "Exif\0\0"
 * is read (Pillow strips the prefix; libpng alone would drop the chunk). */
static void test_exif_tag_types(void) {
    static const uint8_t b6[] = {6}, s6[] = {0, 6}, s3[] = {0, 3}, l6[] = {0, 0, 0, 6},
                         f6[] = {0x40, 0xc0, 0, 0}, /* 6.0f */
        f65[] = {0x40, 0xd0, 0, 0},                 /* 6.5f */
        d6[] = {0x40, 0x18, 0, 0, 0, 0, 0, 0}, r12_2[] = {0, 0, 0, 12, 0, 0, 0, 2},
                         r13_2[] = {0, 0, 0, 13, 0, 0, 0, 2}, r6_0[] = {0, 0, 0, 6, 0, 0, 0, 0},
                         s8_1_1[] = {0, 8, 0, 1, 0, 1}, neg[] = {0xff, 0xfe}, a6[] = {'6', 0};
    const char *xmp3 = "<x:xmpmeta><rdf:Description tiff:Orientation=\"3\"/></x:xmpmeta>";
    struct {
        const char *what;
        ExifEntry e[2];
        int n;
        const char *xmp;
        int want;
    } cases[] = {
        {"SHORT 6", {{274, 3, 1, s6, 2}}, 1, NULL, 6},
        {"BYTE 6: bytes", {{274, 1, 1, b6, 1}}, 1, NULL, 1},
        {"BYTE 6 beside XMP 3: the tag is present", {{274, 1, 1, b6, 1}}, 1, xmp3, 1},
        {"UNDEFINED 6", {{274, 7, 1, b6, 1}}, 1, NULL, 1},
        {"ASCII '6'", {{274, 2, 2, a6, 2}}, 1, NULL, 1},
        {"SBYTE 6", {{274, 6, 1, b6, 1}}, 1, NULL, 6},
        {"SSHORT 6", {{274, 8, 1, s6, 2}}, 1, NULL, 6},
        {"SSHORT -2", {{274, 8, 1, neg, 2}}, 1, NULL, 1},
        {"SLONG 6", {{274, 9, 1, l6, 4}}, 1, NULL, 6},
        {"LONG 6", {{274, 4, 1, l6, 4}}, 1, NULL, 6},
        {"IFD 6", {{274, 13, 1, l6, 4}}, 1, NULL, 6},
        {"FLOAT 6.0", {{274, 11, 1, f6, 4}}, 1, NULL, 6},
        {"FLOAT 6.5", {{274, 11, 1, f65, 4}}, 1, NULL, 1},
        {"DOUBLE 6.0", {{274, 12, 1, d6, 8}}, 1, NULL, 6},
        {"RATIONAL 12/2", {{274, 5, 1, r12_2, 8}}, 1, NULL, 6},
        {"RATIONAL 13/2", {{274, 5, 1, r13_2, 8}}, 1, NULL, 1},
        {"RATIONAL 6/0", {{274, 5, 1, r6_0, 8}}, 1, NULL, 1},
        {"SRATIONAL 12/2", {{274, 10, 1, r12_2, 8}}, 1, NULL, 6},
        {"SHORT x3: the first", {{274, 3, 3, s8_1_1, 6}}, 1, NULL, 8},
        {"count 0: absent, XMP says", {{274, 3, 0, s6, 0}}, 1, xmp3, 3},
        {"type 14: absent, XMP says", {{274, 14, 1, l6, 4}}, 1, xmp3, 3},
        {"two entries: the last", {{274, 3, 1, s3, 2}, {274, 3, 1, s6, 2}}, 2, NULL, 6},
        {"then one of type 14: skipped", {{274, 3, 1, s3, 2}, {274, 14, 1, l6, 4}}, 2, NULL, 3},
        {"then BYTE: the bytes", {{274, 3, 1, s3, 2}, {274, 1, 1, b6, 1}}, 2, NULL, 1},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        uint8_t exif[128];
        size_t n = make_exif_entries(exif, "MM\0*", cases[i].e, cases[i].n);
        int got = applied_orientation(exif, n, cases[i].xmp);
        if (got != cases[i].want)
            g_error("%s: orientation %d applied, Pillow applies %d", cases[i].what, got,
                    cases[i].want);
    }
    /* The byte-swapped headers Pillow accepts ("invalid TIFF header, assume big-endian"). */
    ExifEntry six = {274, 3, 1, s6, 2};
    uint8_t exif[128];
    size_t n = make_exif_entries(exif, "MM*\0", &six, 1);
    g_assert_cmpint(applied_orientation(exif, n, NULL), ==, 6);
    /* A value past the blob's end: Pillow stops reading the IFD there. */
    ExifEntry past[2] = {{274, 3, 1, s3, 2}, {274, 12, 1, d6, 8}};
    n = make_exif_entries(exif, "MM\0*", past, 2);
    g_assert_cmpint(applied_orientation(exif, n - 1, NULL), ==, 3);
    /* eXIf data with the JPEG APP1 prefix. */
    uint8_t prefixed[134];
    memcpy(prefixed, "Exif\0\0", 6);
    n = make_exif_entries(prefixed + 6, "MM\0*", &six, 1);
    g_assert_cmpint(applied_orientation(prefixed, n + 6, NULL), ==, 6);
    /* In a JPEG the same rules hold (one parser): SSHORT 6 rotates, BYTE 6 does not. */
    const ExifEntry jpeg_cases[2] = {{274, 8, 1, s6, 2}, {274, 1, 1, b6, 1}};
    for (int k = 0; k < 2; k++) {
        uint8_t px[32 * 24 * 3] = {0};
        memcpy(prefixed, "Exif\0\0", 6);
        n = make_exif_entries(prefixed + 6, "MM\0*", &jpeg_cases[k], 1) + 6;
        GByteArray *b = make_jpeg(32, 24, 3, JCS_RGB, JCS_YCbCr, px, prefixed, n);
        DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
        g_assert_cmpint(img->width, ==, k == 0 ? 24 : 32);
        dq_image_free(img);
        g_byte_array_unref(b);
    }
}

/* ImageMagick's "Raw profile type exif" text for a TIFF blob. */
static char *raw_profile(const uint8_t *exif, size_t n) {
    GString *s = g_string_new("\nexif\n");
    g_string_append_printf(s, "%8zu\n", n);
    for (size_t i = 0; i < n; i++)
        g_string_append_printf(s, "%02x", exif[i]);
    g_string_append_c(s, '\n');
    return g_string_free(s, FALSE);
}

/* Pillow keeps PNG metadata in its info dict, where each chunk overwrites its key: of two XMP
 * packets or two raw profiles the last counts, and an eXIf chunk, even an empty one, before or
 * after IDAT, takes the place of a raw profile (info["exif"] is then "Exif\0\0" and no tag).
 * Each case checked against Pillow 12.3's exif_transpose. */
static void test_png_metadata_last_wins(void) {
    char x6[] = "<x:xmpmeta><rdf:Description tiff:Orientation=\"6\"/></x:xmpmeta>";
    char x8[] = "<x:xmpmeta><rdf:Description tiff:Orientation=\"8\"/></x:xmpmeta>";
    png_text two_xmp[2] = {{.compression = PNG_ITXT_COMPRESSION_NONE,
                            .key = "XML:com.adobe.xmp",
                            .text = x6,
                            .itxt_length = strlen(x6)},
                           {.compression = PNG_ITXT_COMPRESSION_NONE,
                            .key = "XML:com.adobe.xmp",
                            .text = x8,
                            .itxt_length = strlen(x8)}};
    g_assert_cmpint(applied_orientation_png((PngSpec){.texts = two_xmp, .n_texts = 2}), ==, 8);
    /* Only that key is XMP: another of its length (Pillow's info keys are case-sensitive) is
     * a text like any other. */
    png_text lookalike = {.compression = PNG_ITXT_COMPRESSION_NONE,
                          .key = "XML:com.adobe.XMP",
                          .text = x6,
                          .itxt_length = strlen(x6)};
    g_assert_cmpint(applied_orientation_png((PngSpec){.texts = &lookalike, .n_texts = 1}), ==, 1);
    /* Pillow's search is re.search(r'tiff:Orientation(="|>)([0-9])'): an occurrence followed
     * by anything else is passed over for the next. */
    char x3x6[] = "<x:xmpmeta><a tiff:Orientation3/><rdf:Description tiff:Orientation=\"6\"/>"
                  "</x:xmpmeta>";
    g_assert_cmpint(applied_orientation(NULL, 0, x3x6), ==, 6);

    uint8_t e6[30], e3[30];
    size_t n6 = make_exif(e6, 6, FALSE), n3 = make_exif(e3, 3, FALSE);
    char *r6 = raw_profile(e6, n6), *r3 = raw_profile(e3, n3);
    png_text two_raw[2] = {{.compression = PNG_TEXT_COMPRESSION_NONE,
                            .key = "Raw profile type exif",
                            .text = r6,
                            .text_length = strlen(r6)},
                           {.compression = PNG_TEXT_COMPRESSION_NONE,
                            .key = "Raw profile type exif",
                            .text = r3,
                            .text_length = strlen(r3)}};
    g_assert_cmpint(applied_orientation_png((PngSpec){.texts = two_raw, .n_texts = 2}), ==, 3);
    g_assert_cmpint(applied_orientation_png((PngSpec){.texts = two_raw, .n_texts = 1}), ==, 6);

    uint8_t none[1] = {0};
    for (int where = 0; where < 2; where++) {
        png_unknown_chunk empty = {.name = "eXIf",
                                   .data = none,
                                   .size = 0,
                                   .location = where ? PNG_AFTER_IDAT : PNG_HAVE_IHDR};
        PngSpec s = {.texts = two_raw, .n_texts = 1, .chunks = &empty, .n_chunks = 1};
        if (applied_orientation_png(s) != 1)
            g_error("an empty eXIf %s IDAT does not replace the raw profile's orientation",
                    where ? "after" : "before");
    }
    g_free(r6);
    g_free(r3);
}

static void expect_decode_error(const uint8_t *data, size_t len, int code, const char *fragment) {
    GError *err = NULL;
    g_assert_null(dq_image_decode(data, len, "pages/p7.img", DQ_EXIF_APPLY, &err));
    g_assert_error(err, DQ_ERROR, code);
    if (strstr(err->message, "pages/p7.img") == NULL || strstr(err->message, fragment) == NULL)
        g_error("message '%s' lacks the name or '%s'", err->message, fragment);
    g_error_free(err);
}

static void test_bad_files(void) {
    expect_decode_error((const uint8_t *)"", 0, DQ_ERR_FORMAT, "empty");
    const char text[] = "%PDF-1.4 this is not an image";
    expect_decode_error((const uint8_t *)text, sizeof text, DQ_ERR_UNSUPPORTED,
                        "not a PNG or JPEG");
    /* What the file is instead, named, and what to do with it. */
    const struct {
        const char *bytes;
        size_t len;
        const char *said;
    } others[] = {
        {text, sizeof text, "a PDF document, not a PNG or JPEG image (`docqa ingest` renders"},
        {"II*\0\x08\0\0\0\0\0", 10, "a TIFF image, not a PNG or JPEG image (`docqa ingest`"},
        {"MM\0*\0\0\0\x08\0\0", 10, "a TIFF image"},
        {"GIF89a\x01\0\x01\0\0\0", 12, "a GIF image, not a PNG or JPEG image (convert it to"},
        {"RIFF\x24\0\0\0WEBPVP8 ", 16, "a WebP image"},
        {"BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0\x28\0\0\0", 18, "a BMP image"},
        {"<!DOCTYPE html><html>", 21, "HTML, not a PNG or JPEG image"},
        {"\x01\x02\x03\x04\x05\x06", 6, "not a PNG or JPEG file (unknown signature)"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(others); i++)
        expect_decode_error((const uint8_t *)others[i].bytes, others[i].len, DQ_ERR_UNSUPPORTED,
                            others[i].said);
    /* The kind is read from the first 4 KiB: text there is text, whatever follows. */
    uint8_t *log = g_malloc(4097);
    memset(log, 'a', 4096);
    log[4096] = '\0';
    expect_decode_error(log, 4097, DQ_ERR_UNSUPPORTED, "text, not a PNG or JPEG image");
    g_free(log);
    DqImage *a = pattern_image(40, 30, 5);
    PngSpec s = {.color_type = PNG_COLOR_TYPE_RGB, .depth = 8};
    GByteArray *png = make_png(40, 30, &s, a->pixels, 40 * 3);
    for (size_t cut = 4; cut < png->len - 12; cut += 97)
        expect_decode_error(png->data, cut, cut < 8 ? DQ_ERR_UNSUPPORTED : DQ_ERR_FORMAT, "");
    expect_decode_error(png->data, png->len / 2, DQ_ERR_FORMAT, "truncated");
    png->data[20] ^= 0x40; /* IHDR width byte: its CRC no longer matches */
    expect_decode_error(png->data, png->len, DQ_ERR_FORMAT, "bad PNG");
    GByteArray *jpg = make_jpeg(40, 30, 3, JCS_RGB, JCS_YCbCr, a->pixels, NULL, 0);
    for (size_t cut = 3; cut < jpg->len - 2; cut += 101)
        expect_decode_error(jpg->data, cut, DQ_ERR_FORMAT, "");
    expect_decode_error(jpg->data, jpg->len * 3 / 4, DQ_ERR_FORMAT, "truncated");
    /* Without its EOI the entropy decoder runs out of bytes in the last MCU row: Pillow says
     * "image file is truncated" there too. Bytes after EOI are never read. */
    expect_decode_error(jpg->data, jpg->len - 2, DQ_ERR_FORMAT, "truncated");
    GByteArray *tail = g_byte_array_new();
    g_byte_array_append(tail, jpg->data, jpg->len);
    g_byte_array_append(tail, (const guint8 *)"trailing junk", 13);
    GError *err = NULL;
    DqImage *img = dq_image_decode(tail->data, tail->len, "tail.jpg", DQ_EXIF_APPLY, &err);
    dq_assert_no_error(err);
    dq_image_free(img);
    g_byte_array_unref(tail);

    char *dir = dq_test_tmpdir();
    char *empty = g_build_filename(dir, "empty.png", NULL);
    g_assert_true(g_file_set_contents(empty, "", 0, NULL));
    g_assert_null(dq_image_load(empty, DQ_EXIF_APPLY, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_FORMAT);
    g_assert_nonnull(strstr(err->message, empty));
    g_clear_error(&err);
    g_assert_null(dq_image_load("/nonexistent/scan.jpg", DQ_EXIF_APPLY, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    /* said as an image that could not be read, not as some other file of the run */
    g_assert_true(g_str_has_prefix(err->message, "cannot read image: "));
    g_assert_nonnull(strstr(err->message, "/nonexistent/scan.jpg"));
    g_clear_error(&err);
    /* A FIFO or a device given as an image is refused at once: read, it would wait for a writer
     * forever, or (/dev/zero) fill memory. */
    char *fifo = g_build_filename(dir, "scan.png", NULL);
    g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
    g_assert_null(dq_image_load(fifo, DQ_EXIF_APPLY, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    g_assert_nonnull(strstr(err->message, "a FIFO, not a regular file"));
    g_assert_nonnull(strstr(err->message, fifo));
    g_clear_error(&err);
    g_assert_null(dq_image_load("/dev/zero", DQ_EXIF_APPLY, &err));
    g_assert_nonnull(strstr(err->message, "/dev/zero: a device, not a regular file"));
    g_clear_error(&err);
    g_unlink(fifo);
    g_free(fifo);
    g_free(empty);
    g_free(dir);
    g_byte_array_unref(jpg);
    g_byte_array_unref(png);
    dq_image_free(a);
}

static uint32_t png_crc(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

/* A chunk header claiming ~2 GB in a file of a few dozen bytes (a libFuzzer find): libpng's
 * chunk limit is a benign error, so the allocation must be refused by our allocator, before any
 * read could find the file short. The message says so, where the unbounded path said
 * "truncated" after allocating. */
static void test_png_huge_chunk(void) {
    DqImage *a = pattern_image(4, 4, 1);
    PngSpec s = {.color_type = PNG_COLOR_TYPE_RGB, .depth = 8};
    GByteArray *png = make_png(4, 4, &s, a->pixels, 4 * 3);
    const char *types[] = {"eXIf", "tEXt", "zTXt", "iTXt", "sPLT"};
    for (size_t t = 0; t < G_N_ELEMENTS(types); t++) {
        GByteArray *b = g_byte_array_new();
        g_byte_array_append(b, png->data, 8 + 25); /* signature + IHDR */
        const uint8_t header[8] = {0x7A,
                                   0x00,
                                   0x00,
                                   0x00,
                                   (uint8_t)types[t][0],
                                   (uint8_t)types[t][1],
                                   (uint8_t)types[t][2],
                                   (uint8_t)types[t][3]};
        g_byte_array_append(b, header, sizeof header);
        g_byte_array_append(b, (const guint8 *)"Raw profile type", 16);
        /* eXIf and the text chunks are read as unknown chunks (png_codec.c), which libpng's
         * chunk limit (png_set_chunk_malloc_max) skips before any allocation: the file then
         * ends inside it. */
        expect_decode_error(b->data, b->len, DQ_ERR_FORMAT,
                            t < 4 ? "file is truncated" : "asks for 2046820");
        g_byte_array_unref(b);
    }
    g_byte_array_unref(png);
    dq_image_free(a);
}

/* ---- PNG files as Pillow 12.3 judges them ----
 * The expected outcomes below are facts about Pillow 12.3.0 (PngImagePlugin, ImageFile.load,
 * libImaging/ZipDecode.c), obtained by opening each of these files with transformers'
 * load_image steps (Image.open, ImageOps.exif_transpose, convert("RGB")) in the bench venv:
 * "refused" means it raised, "decodes" that it gave the pixels asserted. The files are built
 * here chunk by chunk, as libpng will not write damaged ones. */

static void put_chunk(GByteArray *b, const char *type, const void *data, size_t len,
                      gboolean bad_crc) {
    uint8_t be[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    g_byte_array_append(b, be, 4);
    g_byte_array_append(b, (const guint8 *)type, 4);
    if (len > 0)
        g_byte_array_append(b, data, (guint)len);
    uLong crc = crc32(crc32(0L, (const Bytef *)type, 4), data, (uInt)len) ^ (bad_crc ? 1 : 0);
    uint8_t c[4] = {(uint8_t)(crc >> 24), (uint8_t)(crc >> 16), (uint8_t)(crc >> 8), (uint8_t)crc};
    g_byte_array_append(b, c, 4);
}

/* Signature and IHDR. */
static GByteArray *png_head(uint32_t w, uint32_t h, int depth, int color_type, int interlace) {
    GByteArray *b = g_byte_array_new();
    g_byte_array_append(b, (const guint8 *)"\x89PNG\r\n\x1a\n", 8);
    uint8_t ihdr[13] = {(uint8_t)(w >> 24),
                        (uint8_t)(w >> 16),
                        (uint8_t)(w >> 8),
                        (uint8_t)w,
                        (uint8_t)(h >> 24),
                        (uint8_t)(h >> 16),
                        (uint8_t)(h >> 8),
                        (uint8_t)h,
                        (uint8_t)depth,
                        (uint8_t)color_type,
                        0,
                        0,
                        (uint8_t)interlace};
    put_chunk(b, "IHDR", ihdr, 13, FALSE);
    return b;
}

static GByteArray *zlib_bytes(const uint8_t *raw, size_t len) {
    GByteArray *z = g_byte_array_sized_new((guint)compressBound(len));
    uLongf zlen = compressBound(len);
    g_byte_array_set_size(z, (guint)zlen);
    g_assert_cmpint(compress2(z->data, &zlen, raw, len, 9), ==, Z_OK);
    g_byte_array_set_size(z, (guint)zlen);
    return z;
}

/* IDAT chunks holding the zlib stream of `raw` (filter bytes and samples): the first `cut` bytes
 * of the stream in one chunk, the rest (if any) in a second; `drop` bytes left off its end. */
static void put_idat(GByteArray *b, const uint8_t *raw, size_t len, size_t cut, size_t drop) {
    GByteArray *z = zlib_bytes(raw, len);
    size_t n = z->len - drop, first = cut == 0 || cut > n ? n : cut;
    put_chunk(b, "IDAT", z->data, first, FALSE);
    if (first < n)
        put_chunk(b, "IDAT", z->data + first, n - first, FALSE);
    g_byte_array_unref(z);
}

/* A 1x1 gray PNG of value 5 with `pre` chunks before IDAT and `post` after it. */
static GByteArray *gray_dot(const GByteArray *pre, const GByteArray *post) {
    GByteArray *b = png_head(1, 1, 8, PNG_COLOR_TYPE_GRAY, 0);
    if (pre != NULL)
        g_byte_array_append(b, pre->data, pre->len);
    put_idat(b, (const uint8_t *)"\x00\x05", 2, 0, 0);
    if (post != NULL)
        g_byte_array_append(b, post->data, post->len);
    put_chunk(b, "IEND", NULL, 0, FALSE);
    return b;
}

static void expect_dot(const GByteArray *b, const char *what) {
    GError *err = NULL;
    DqImage *img = dq_image_decode(b->data, b->len, what, DQ_EXIF_APPLY, &err);
    if (img == NULL)
        g_error("%s: Pillow decodes it, docqa says: %s", what, err->message);
    assert_px(img, 0, 0, 5, 5, 5);
    dq_image_free(img);
}

static void expect_refused(const GByteArray *b, const char *what, const char *fragment) {
    GError *err = NULL;
    DqImage *img = dq_image_decode(b->data, b->len, what, DQ_EXIF_APPLY, &err);
    if (img != NULL)
        g_error("%s: Pillow refuses it, docqa decodes it", what);
    g_assert_error(err, DQ_ERROR, DQ_ERR_FORMAT);
    if (strstr(err->message, what) == NULL || strstr(err->message, fragment) == NULL)
        g_error("%s: message '%s' lacks the name or '%s'", what, err->message, fragment);
    g_error_free(err);
}

/* A text chunk "key\0" + [method byte] + value, the value zlib-compressed when `z`. */
static void put_text(GByteArray *b, const char *type, const char *key, const uint8_t *value,
                     size_t len, gboolean z, gboolean bad_crc) {
    GByteArray *data = g_byte_array_new();
    g_byte_array_append(data, (const guint8 *)key, (guint)strlen(key) + 1);
    if (strcmp(type, "iTXt") == 0)
        g_byte_array_append(data, (const guint8 *)(z ? "\x01\x00\x00\x00" : "\x00\x00\x00\x00"),
                            4); /* flag, method, empty language and translated keyword */
    else if (strcmp(type, "tEXt") != 0)
        g_byte_array_append(data, (const guint8 *)"\x00", 1); /* zTXt, iCCP: method 0 */
    if (z) {
        GByteArray *zv = zlib_bytes(value, len);
        g_byte_array_append(data, zv->data, zv->len);
        g_byte_array_unref(zv);
    } else {
        g_byte_array_append(data, value, (guint)len);
    }
    put_chunk(b, type, data->data, data->len, bad_crc);
    g_byte_array_unref(data);
}

/* PngImagePlugin's MAX_TEXT_CHUNK (1 MiB) bounds what one zTXt, iTXt or iCCP chunk decompresses
 * to, MAX_TEXT_MEMORY (64 MiB) the text of all tEXt/zTXt/iTXt values together; past either it
 * raises ValueError, before or after the image data. libpng has neither limit and inflated each
 * text chunk whole, twice: 200 zTXt chunks of 7.9 MB of zeros took 10.8 s to decode. */
static void test_png_text_limits(void) {
    size_t big = 7900000;
    uint8_t *zeros = g_malloc0(big);
    GByteArray *pre = g_byte_array_new();
    GByteArray *one = g_byte_array_new();
    put_text(one, "zTXt", "Comment", zeros, big, TRUE, FALSE);
    for (int i = 0; i < 200; i++)
        g_byte_array_append(pre, one->data, one->len);
    GByteArray *b = gray_dot(pre, NULL);
    expect_refused(b, "bomb.png", "decompresses to more than 1 MiB");
    g_byte_array_unref(b);

    struct {
        const char *what, *type;
        size_t len;
        gboolean after, refused;
    } limits[] = {
        {"ztxt-1MiB.png", "zTXt", 1 << 20, FALSE, FALSE}, /* exactly the limit: decodes */
        {"ztxt-1MiB+1.png", "zTXt", (1 << 20) + 1, FALSE, TRUE},
        {"ztxt-after.png", "zTXt", 2 << 20, TRUE, TRUE},
        {"itxt.png", "iTXt", 2 << 20, FALSE, TRUE},
        {"iccp.png", "iCCP", 2 << 20, FALSE, TRUE},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(limits); i++) {
        GByteArray *c = g_byte_array_new();
        put_text(c, limits[i].type, "k", zeros, limits[i].len, TRUE, FALSE);
        b = limits[i].after ? gray_dot(NULL, c) : gray_dot(c, NULL);
        if (limits[i].refused)
            expect_refused(b, limits[i].what, "(Pillow's MAX_TEXT_CHUNK)");
        else
            expect_dot(b, limits[i].what);
        g_byte_array_unref(b);
        g_byte_array_unref(c);
    }

    /* 64 tEXt values of 1 MiB are the most allowed; one byte more, before or after IDAT, is
     * refused. A value without a keyword is not counted. */
    size_t mib = 1 << 20;
    GByteArray *t64 = g_byte_array_new();
    for (int i = 0; i < 64; i++)
        put_text(t64, "tEXt", "k", zeros, mib, FALSE, FALSE);
    b = gray_dot(t64, NULL);
    expect_dot(b, "text-64MiB.png");
    g_byte_array_unref(b);
    GByteArray *byte = g_byte_array_new();
    put_text(byte, "tEXt", "k", (const uint8_t *)"x", 1, FALSE, FALSE);
    b = gray_dot(t64, byte);
    expect_refused(b, "text-64MiB+1.png", "(Pillow's MAX_TEXT_MEMORY)");
    g_byte_array_unref(b);
    GByteArray *nokey = g_byte_array_new();
    put_text(nokey, "tEXt", "", zeros, mib, FALSE, FALSE);
    b = gray_dot(t64, nokey);
    expect_dot(b, "text-no-keyword.png");
    g_byte_array_unref(b);

    /* An unknown compression method is refused (SyntaxError); a damaged zTXt stream and an iTXt
     * with an unknown method are skipped. */
    GByteArray *c = g_byte_array_new();
    put_chunk(c, "zTXt", "k\0\x01xyz", 6, FALSE);
    b = gray_dot(c, NULL);
    expect_refused(b, "ztxt-method.png", "unknown compression method 1 in a zTXt chunk");
    g_byte_array_unref(b);
    g_byte_array_set_size(c, 0);
    put_chunk(c, "iCCP", "k\0\x01xyz", 6, FALSE);
    b = gray_dot(c, NULL);
    expect_refused(b, "iccp-method.png", "unknown compression method 1 in an iCCP chunk");
    g_byte_array_unref(b);
    g_byte_array_set_size(c, 0);
    put_chunk(c, "zTXt", "k\0\0garbage", 10, FALSE);
    put_chunk(c, "iTXt", "k\0\x01\x01\0\0garbage", 14, FALSE);
    b = gray_dot(c, NULL);
    expect_dot(b, "ztxt-damaged.png");
    g_byte_array_unref(b);

    g_byte_array_unref(c);
    g_byte_array_unref(nokey);
    g_byte_array_unref(byte);
    g_byte_array_unref(t64);
    g_byte_array_unref(one);
    g_byte_array_unref(pre);
    g_free(zeros);
}

/* Pillow checks the CRC of every chunk before the image data (ChunkStream.crc: ancillary ones
 * too, as LOAD_TRUNCATED_IMAGES is false) and of none from the first IDAT on; it skips chunks
 * it does not know, critical or not. A file cut inside a chunk after the image data is
 * "Truncated File Read"; cut inside a CRC or a chunk header there, it is not. */
static void test_png_crc_and_chunks(void) {
    GByteArray *c = g_byte_array_new();
    const char *bad_before[] = {"tEXt", "gAMA", "abCd"};
    for (size_t i = 0; i < G_N_ELEMENTS(bad_before); i++) {
        g_byte_array_set_size(c, 0);
        put_chunk(c, bad_before[i], "\0\0\xb1\x8f", 4, TRUE);
        GByteArray *b = gray_dot(c, NULL);
        char *what = g_strdup_printf("crc-%s.png", bad_before[i]);
        expect_refused(b, what, "CRC error");
        g_free(what);
        g_byte_array_unref(b);
    }
    g_byte_array_set_size(c, 0);
    put_chunk(c, "tEXt", "a\0b", 3, TRUE);
    GByteArray *b = gray_dot(NULL, c);
    expect_dot(b, "crc-after.png");
    g_byte_array_unref(b);
    b = gray_dot(NULL, NULL);
    b->data[b->len - 1] ^= 1; /* IEND's CRC */
    expect_dot(b, "crc-iend.png");
    size_t idat_crc = b->len - 12 - 4;
    b->data[idat_crc] ^= 1;
    expect_dot(b, "crc-idat.png");
    g_byte_array_unref(b);
    g_byte_array_set_size(c, 0);
    put_chunk(c, "ABCD", "xyz", 3, FALSE); /* unknown and critical */
    b = gray_dot(c, NULL);
    expect_dot(b, "critical.png");
    g_byte_array_unref(b);

    g_byte_array_set_size(c, 0);
    put_chunk(c, "tEXt", "abc\0defgh", 9, FALSE);
    b = gray_dot(NULL, c);
    size_t text_end = b->len - 12;          /* where IEND starts */
    g_byte_array_set_size(b, text_end - 2); /* inside the tEXt's CRC */
    expect_dot(b, "cut-crc.png");
    g_byte_array_set_size(b, text_end - 4 - 3); /* inside its data */
    expect_refused(b, "cut-data.png", "truncated");
    g_byte_array_unref(b);
    g_byte_array_unref(c);
}

/* Image data that ends early. Pillow's zip decoder ends the image when zlib reports the end of
 * the stream together with a whole row: the rows after it keep their zero samples (black, or
 * palette entry 0), no error. A stream that ends inside a row, is cut short, or whose end is
 * only seen in a later IDAT chunk (the decoder then has no whole row in hand) is "image file
 * is truncated". libpng refused them all ("Not enough image data"). */
static void test_png_short_image_data(void) {
    uint8_t rows[20];
    for (int y = 0; y < 10; y++)
        rows[2 * y] = 0, rows[2 * y + 1] = 7;
    struct {
        const char *what;
        size_t len, cut, drop;
        gboolean decodes;
    } cases[] = {
        {"ten-rows.png", 20, 0, 0, TRUE},
        {"half-row.png", 19, 0, 0, FALSE},
        {"no-stream-end.png", 20, 0, 4, FALSE},
        {"end-in-next-idat.png", 20, 0, 0, FALSE}, /* cut set below: the Adler-32 apart */
        {"end-split.png", 20, 0, 0, TRUE},         /* the last deflate byte apart too */
    };
    GByteArray *z = zlib_bytes(rows, 20);
    cases[3].cut = z->len - 4;
    cases[4].cut = z->len - 5;
    g_byte_array_unref(z);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        GByteArray *b = png_head(1, 100000, 8, PNG_COLOR_TYPE_GRAY, 0);
        put_idat(b, rows, cases[i].len, cases[i].cut, cases[i].drop);
        put_chunk(b, "IEND", NULL, 0, FALSE);
        if (!cases[i].decodes) {
            expect_refused(b, cases[i].what, "image file is truncated");
        } else {
            DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
            g_assert_cmpint(img->width, ==, 1);
            g_assert_cmpint(img->height, ==, 100000);
            for (int y = 0; y < 100000; y++)
                if (img->pixels[3 * y] != (y < 10 ? 7 : 0))
                    g_error("%s: row %d is %d", cases[i].what, y, img->pixels[3 * y]);
            dq_image_free(img);
        }
        g_byte_array_unref(b);
    }

    /* Palette: the missing rows are entry 0. */
    GByteArray *b = png_head(2, 5, 8, PNG_COLOR_TYPE_PALETTE, 0);
    put_chunk(b, "PLTE", "\x0a\x14\x1e\x28\x32\x3c", 6, FALSE);
    put_idat(b, (const uint8_t *)"\x00\x01\x01", 3, 0, 0);
    put_chunk(b, "IEND", NULL, 0, FALSE);
    DqImage *img = decode_ok(b, DQ_EXIF_APPLY);
    assert_px(img, 0, 0, 40, 50, 60);
    assert_px(img, 1, 0, 40, 50, 60);
    for (int y = 1; y < 5; y++)
        assert_px(img, 1, y, 10, 20, 30);
    dq_image_free(img);
    g_byte_array_unref(b);

    /* Interlaced: Adam7's first pass alone (rows 0 and 8, columns 0 and 8 of 13x11). */
    b = png_head(13, 11, 8, PNG_COLOR_TYPE_GRAY, 1);
    put_idat(b, (const uint8_t *)"\x00\xc8\xc8\x00\xc8\xc8", 6, 0, 0);
    put_chunk(b, "IEND", NULL, 0, FALSE);
    img = decode_ok(b, DQ_EXIF_APPLY);
    for (int y = 0; y < 11; y++)
        for (int x = 0; x < 13; x++) {
            int v = (x == 0 || x == 8) && (y == 0 || y == 8) ? 200 : 0;
            assert_px(img, x, y, v, v, v);
        }
    dq_image_free(img);
    g_byte_array_unref(b);
    /* The same at a width of 16, a multiple of 8: the first pass's rows hold 2 pixels, not 3. */
    b = png_head(16, 11, 8, PNG_COLOR_TYPE_GRAY, 1);
    put_idat(b, (const uint8_t *)"\x00\xc8\xc8\x00\xc8\xc8", 6, 0, 0);
    put_chunk(b, "IEND", NULL, 0, FALSE);
    img = decode_ok(b, DQ_EXIF_APPLY);
    for (int y = 0; y < 11; y++)
        for (int x = 0; x < 16; x++) {
            int v = (x == 0 || x == 8) && (y == 0 || y == 8) ? 200 : 0;
            assert_px(img, x, y, v, v, v);
        }
    dq_image_free(img);
    g_byte_array_unref(b);
    /* All passes but the last row of the last (y = 7 of 9x9), whose rows are the longest. */
    uint8_t adam7[100];
    memset(adam7, 100, sizeof adam7);
    /* filter bytes (0) at each row's start: pass by pass, rows x (1 + columns) */
    const int pass_rows[7] = {2, 2, 1, 3, 2, 5, 4}, pass_cols[7] = {2, 1, 3, 2, 5, 4, 9};
    for (int p = 0, at = 0; p < 7; p++)
        for (int y = 0; y < pass_rows[p]; y++, at += 1 + pass_cols[p])
            adam7[at] = 0;
    b = png_head(9, 9, 8, PNG_COLOR_TYPE_GRAY, 1);
    put_idat(b, adam7, 90, 0, 0);
    put_chunk(b, "IEND", NULL, 0, FALSE);
    img = decode_ok(b, DQ_EXIF_APPLY);
    for (int y = 0; y < 9; y++)
        for (int x = 0; x < 9; x++) {
            int v = y == 7 ? 0 : 100;
            assert_px(img, x, y, v, v, v);
        }
    dq_image_free(img);
    g_byte_array_unref(b);
    /* ... the same cut inside that last row: data that ends inside a row. */
    b = png_head(9, 9, 8, PNG_COLOR_TYPE_GRAY, 1);
    put_idat(b, adam7, 95, 0, 0);
    put_chunk(b, "IEND", NULL, 0, FALSE);
    expect_refused(b, "interlaced-last-row-cut.png", "image file is truncated");
    g_byte_array_unref(b);
    /* ... and a stream that ends inside the second pass's first row. */
    b = png_head(13, 11, 8, PNG_COLOR_TYPE_GRAY, 1);
    put_idat(b, (const uint8_t *)"\x00\xc8\xc8\x00\xc8\xc8\x00", 7, 0, 0);
    put_chunk(b, "IEND", NULL, 0, FALSE);
    expect_refused(b, "interlaced-cut.png", "image file is truncated");
    g_byte_array_unref(b);
}

/* info["exif"] is also what a tEXt chunk keyed "exif" holds (its bytes, with or without an
 * "Exif\0\0" prefix): Pillow turns the image by it. */
static void test_png_text_exif_key(void) {
    for (int prefix = 0; prefix < 2; prefix++) {
        uint8_t data[5 + 30];
        memcpy(data, "exif", 5); /* the keyword and its NUL */
        size_t n = make_exif(data + 5, 6, prefix);
        /* Written as a raw chunk: libpng's text writer stops at the value's first NUL. */
        png_unknown_chunk t = {
            .name = "tEXt", .data = data, .size = 5 + n, .location = PNG_HAVE_IHDR};
        g_assert_cmpint(applied_orientation_png((PngSpec){.chunks = &t, .n_chunks = 1}), ==, 6);
    }
}

static void test_huge_dimensions_refused(void) {
    /* An IHDR claiming 100000 x 100000 pixels is refused before any allocation. */
    uint8_t row[1] = {0};
    PngSpec s = {.color_type = PNG_COLOR_TYPE_GRAY, .depth = 1};
    GByteArray *b = make_png(1, 1, &s, row, 1);
    /* patch width and height, then fix the IHDR CRC */
    const uint8_t big[8] = {0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0};
    memcpy(b->data + 16, big, 8);
    uint32_t crc = png_crc(b->data + 12, 17);
    b->data[29] = (uint8_t)(crc >> 24);
    b->data[30] = (uint8_t)(crc >> 16);
    b->data[31] = (uint8_t)(crc >> 8);
    b->data[32] = (uint8_t)crc;
    GError *err = NULL;
    g_assert_null(dq_image_decode(b->data, b->len, "bomb.png", DQ_EXIF_APPLY, &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, "bomb.png"));
    g_error_free(err);
    g_byte_array_unref(b);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/image/size/fixture_cases", test_fit_longest_edge_cases);
    g_test_add_func("/image/size/traps", test_fit_longest_edge_traps);
    g_test_add_func("/image/resize/fixture_stages", test_fixture_stages);
    g_test_add_func("/image/resize/kernels", test_resize_kernels);
    g_test_add_func("/image/resize/tall_vertical_first", test_resize_tall_vertical_first);
    g_test_add_func("/image/resize/same_size_copy", test_resize_same_size_is_copy);
    g_test_add_func("/image/resize/flat_stays_flat", test_resize_flat_stays_flat);
    g_test_add_func("/image/resize/one_axis", test_resize_one_axis_skips_other_pass);
    g_test_add_func("/image/bad_arguments", test_bad_arguments);
    g_test_add_func("/image/png/round_trip", test_png_round_trip);
    g_test_add_func("/image/png/gray_depths", test_png_gray_depths);
    g_test_add_func("/image/png/16bit", test_png_16bit);
    g_test_add_func("/image/png/alpha_dropped", test_png_alpha_dropped);
    g_test_add_func("/image/png/palette_trns", test_png_palette);
    g_test_add_func("/image/png/interlaced_no_iend", test_png_interlaced_and_no_iend);
    g_test_add_func("/image/png/exif_orientations", test_png_exif_orientations);
    g_test_add_func("/image/jpeg/gray", test_jpeg_gray_and_rgb);
    g_test_add_func("/image/jpeg/cmyk", test_jpeg_cmyk);
    g_test_add_func("/image/jpeg/unsupported_process", test_jpeg_unsupported_process);
    g_test_add_func("/image/jpeg/exif_orientations", test_jpeg_exif_orientations);
    g_test_add_func("/image/jpeg/xmp", test_jpeg_xmp);
    g_test_add_func("/image/jpeg/exif_extended", test_jpeg_exif_extended);
    g_test_add_func("/image/jpeg/short_signature", test_jpeg_short_signature);
    g_test_add_func("/image/jpeg/pixel_limit", test_jpeg_pixel_limit);
    g_test_add_func("/image/exif/tag_types", test_exif_tag_types);
    g_test_add_func("/image/png/metadata_last_wins", test_png_metadata_last_wins);
    g_test_add_func("/image/decode/bad_files", test_bad_files);
    g_test_add_func("/image/png/huge_chunk", test_png_huge_chunk);
    g_test_add_func("/image/decode/huge_dimensions", test_huge_dimensions_refused);
    g_test_add_func("/image/png/text_limits", test_png_text_limits);
    g_test_add_func("/image/png/crc_and_chunks", test_png_crc_and_chunks);
    g_test_add_func("/image/png/short_image_data", test_png_short_image_data);
    g_test_add_func("/image/png/text_exif_key", test_png_text_exif_key);
    return g_test_run();
}
