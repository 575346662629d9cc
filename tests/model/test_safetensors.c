/* safetensors: valid files of every supported dtype, sharded snapshots, and every kind of broken
 * file the loader must refuse with a message naming the file and the tensor. */
#include "safetensors.h"
#include "testutil.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

/* A safetensors image from a JSON header and a data section. */
static GByteArray *make_file(const char *header, const void *data, size_t len) {
    GByteArray *b = g_byte_array_new();
    uint64_t n = strlen(header);
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(n >> (8 * i));
    g_byte_array_append(b, le, 8);
    g_byte_array_append(b, (const guint8 *)header, (guint)n);
    g_byte_array_append(b, data, (guint)len);
    return b;
}

static char *write_file(const char *dir, const char *name, GByteArray *b) {
    char *path = g_build_filename(dir, name, NULL);
    GError *err = NULL;
    g_assert_true(g_file_set_contents(path, (const char *)b->data, b->len, &err));
    dq_assert_no_error(err);
    return path;
}

/* Three tensors: a [2,2] F32, b [3] BF16, c [4] F16. */
static GByteArray *sample_file(void) {
    uint8_t data[16 + 6 + 8];
    float a[4] = {1.0f, -2.5f, 3.25f, 1e-3f};
    memcpy(data, a, 16);
    /* bf16: 1.0 = 0x3f80, -2.0 = 0xc000, 0.15625 = 0x3e20 */
    uint16_t b[3] = {0x3f80, 0xc000, 0x3e20};
    memcpy(data + 16, b, 6);
    /* f16: 1.0 = 0x3c00, -0.5 = 0xb800, smallest subnormal 0x0001 = 2^-24, +inf 0x7c00 */
    uint16_t c[4] = {0x3c00, 0xb800, 0x0001, 0x7c00};
    memcpy(data + 22, c, 8);
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]},"
                    "\"c\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[22,30]}}";
    return make_file(h, data, sizeof data);
}

static void test_dtypes(void) {
    GByteArray *b = sample_file();
    GError *err = NULL;
    DqSafeTensors *st = safetensors_parse(b->data, b->len, "mem.safetensors", &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(safetensors_count(st), ==, 3);
    const char **names = safetensors_names(st);
    g_assert_cmpstr(names[0], ==, "a");
    g_assert_cmpstr(names[2], ==, "c");
    g_free(names);

    const DqTensor *a = safetensors_require(st, "a", 2, (const int64_t[]){2, 2}, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(a->dtype, ==, DQ_DTYPE_F32);
    g_assert_cmpint(a->numel, ==, 4);
    float fa[4];
    dq_convert_to_f32(fa, a->data, a->dtype, 4);
    g_assert_cmpfloat(fa[1], ==, -2.5f);
    g_assert_cmpfloat(fa[3], ==, 1e-3f);

    const DqTensor *t = safetensors_get(st, "b");
    float fb[3];
    dq_convert_to_f32(fb, t->data, t->dtype, 3);
    g_assert_cmpfloat(fb[0], ==, 1.0f);
    g_assert_cmpfloat(fb[1], ==, -2.0f);
    g_assert_cmpfloat(fb[2], ==, 0.15625f);

    t = safetensors_get(st, "c");
    float fc[4];
    dq_convert_to_f32(fc, t->data, t->dtype, 4);
    g_assert_cmpfloat(fc[0], ==, 1.0f);
    g_assert_cmpfloat(fc[1], ==, -0.5f);
    g_assert_cmpfloat(fc[2], ==, ldexpf(1.0f, -24));
    g_assert_true(isinf(fc[3]) && fc[3] > 0);
    g_assert_null(safetensors_get(st, "__metadata__"));
    safetensors_free(st);
    g_byte_array_free(b, TRUE);

    /* Every f16 bit pattern against the arithmetic definition. */
    for (uint32_t h = 0; h < 65536; h++) {
        int e = (h >> 10) & 31, mant = h & 1023;
        if (e == 31)
            continue;
        double v = e == 0 ? ldexp(mant, -24) : ldexp(1024 + mant, e - 25);
        if (h & 0x8000)
            v = -v;
        g_assert_cmpfloat(dq_f16_to_f32((uint16_t)h), ==, (float)v);
    }
}

static void expect_error(const char *header, const void *data, size_t len, const char *needle) {
    GByteArray *b = make_file(header, data, len);
    GError *err = NULL;
    DqSafeTensors *st = safetensors_parse(b->data, b->len, "bad.safetensors", &err);
    g_assert_null(st);
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, "bad.safetensors"));
    if (strstr(err->message, needle) == NULL)
        g_error("error '%s' does not mention '%s'", err->message, needle);
    g_error_free(err);
    g_byte_array_free(b, TRUE);
}

static void test_bad_headers(void) {
    uint8_t zeros[64] = {0};
    expect_error("{\"w\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", zeros, 16,
                 "'w': dtype I64 is not supported");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", zeros, 8,
                 "'w': data [0, 16) overruns");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", zeros, 8,
                 "'w': 8 bytes of data do not match");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", zeros, 8,
                 "'w': data_offsets");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", zeros, 8,
                 "'w': shape[0]");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                 "\"data_offsets\":[0,8]}}",
                 zeros, 8, "do not match");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", zeros, 8,
                 "'w': needs");
    expect_error("{\"w\":[1,2]}", zeros, 8, "'w': entry is not an object");
    expect_error("[1,2,3]", zeros, 8, "not a JSON object");
    expect_error("{\"w\": tru", zeros, 8, "header: not valid JSON");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
                 zeros, 4, "9 dims");

    /* A length field that overruns the file, and files too short for one. */
    GError *err = NULL;
    uint8_t big[16] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}'};
    g_assert_null(safetensors_parse(big, sizeof big, "big.safetensors", &err));
    g_assert_nonnull(strstr(err->message, "overruns the file"));
    g_clear_error(&err);
    g_assert_null(safetensors_parse(big, 5, "short.safetensors", &err));
    g_assert_nonnull(strstr(err->message, "truncated"));
    g_clear_error(&err);

    /* Every truncation of a valid file fails cleanly (the whole file parses). */
    GByteArray *b = sample_file();
    for (guint n = 0; n < b->len; n++) {
        DqSafeTensors *st = safetensors_parse(b->data, n, "cut.safetensors", &err);
        g_assert_null(st);
        g_assert_nonnull(err);
        g_clear_error(&err);
    }
    DqSafeTensors *st = safetensors_parse(b->data, b->len, "whole.safetensors", &err);
    dq_assert_no_error(err);
    safetensors_free(st);
    g_byte_array_free(b, TRUE);
}

static void expect_ok(const char *header, const void *data, size_t len, guint tensors) {
    GByteArray *b = make_file(header, data, len);
    GError *err = NULL;
    DqSafeTensors *st = safetensors_parse(b->data, b->len, "ok.safetensors", &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(safetensors_count(st), ==, tensors);
    safetensors_free(st);
    g_byte_array_free(b, TRUE);
}

#define T(name, begin, end)                                                                        \
    "\"" name "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[" begin "," end "]}"

/* What the safetensors library refuses (checked against safetensors 0.8.0's load) docqa
 * refuses too: headers that alias tensors' bytes, leave gaps or trailing junk, repeat keys,
 * carry metadata that is not strings, or nest deeper than serde_json goes. These used to load,
 * with garbage weights. */
static void test_format_rules(void) {
    uint8_t zeros[64] = {0};
    /* accepted: any order in the header, zero-size tensors, null metadata, extra fields */
    expect_ok("{" T("b", "8", "16") "," T("a", "0", "8") "}", zeros, 16, 2);
    expect_ok(
        "{\"__metadata__\":null," T(
            "a", "0", "8") ","
                           "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}," T(
                               "b", "8", "16") "}",
        zeros, 16, 3);
    expect_ok("{\"a\":{\"dtype\":\"F32\",\"foo\":[1],\"shape\":[2],\"data_offsets\":[0,8]}}", zeros,
              8, 1);
    expect_ok("{\"__metadata__\":{\"format\":\"pt\"}}", zeros, 0, 0);

    /* two tensors on the same bytes (an lm_head pointing at embed_tokens', st_off_overlap) */
    expect_error("{" T("a", "0", "8") "," T("lm_head.weight", "0", "8") "}", zeros, 8,
                 "tensor 'lm_head.weight': data [0, 8) overlaps tensor 'a' [0, 8)");
    expect_error("{" T("a", "0", "8") "," T("b", "4", "12") "}", zeros, 12,
                 "tensor 'b': data [4, 12) overlaps tensor 'a' [0, 8)");
    /* shifted by two bytes (st_off_misaligned), or not starting at 0 */
    expect_error("{" T("a", "0", "8") "," T("b", "10", "18") "}", zeros, 18,
                 "tensor 'b': data [10, 18) leaves bytes [8, 10) of the data section unused");
    expect_error("{" T("a", "4", "12") "}", zeros, 12, "leaves bytes [0, 4)");
    /* junk after the last tensor (st_extra_bytes) */
    expect_error("{" T("a", "0", "8") "}", zeros, 9,
                 "1 bytes after the last tensor's data (the data section has 9, the tensors "
                 "cover 8): the file is not fully covered");
    expect_error("{}", zeros, 4, "not fully covered");
    /* duplicate keys: json-glib keeps the last silently (st_dup_key) */
    expect_error("{" T("a", "0", "8") "," T("b", "8", "16") "," T("a", "0", "8") "}", zeros, 16,
                 "header: key \"a\" appears twice in the top-level object");
    expect_error(
        "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", zeros,
        8, "key \"dtype\" appears twice in one object");
    /* metadata is a map of strings (st_meta_weird, st_meta_array) */
    expect_error("{\"__metadata__\":{\"format\":5}," T("a", "0", "8") "}", zeros, 8,
                 "__metadata__ 'format' is not a string");
    expect_error("{\"__metadata__\":[1]," T("a", "0", "8") "}", zeros, 8,
                 "__metadata__ must be an object of strings");
    expect_error("{\"__metadata__\":{\"a\":null}}", zeros, 0, "__metadata__ 'a' is not a string");
    /* a header nested 100000 deep overflowed json-glib's recursion */
    GString *deep = g_string_new("{\"a\":");
    for (int i = 0; i < 100000; i++)
        g_string_append_c(deep, '[');
    for (int i = 0; i < 100000; i++)
        g_string_append_c(deep, ']');
    g_string_append_c(deep, '}');
    expect_error(deep->str, zeros, 0, "header: JSON nested deeper than 128 levels");
    g_string_free(deep, TRUE);
}
#undef T

static void test_require_errors(void) {
    GByteArray *b = sample_file();
    GError *err = NULL;
    char *dir = dq_test_tmpdir();
    char *path = write_file(dir, "model.safetensors", b);
    DqSafeTensors *st = safetensors_open(path, &err);
    dq_assert_no_error(err);
    g_assert_null(safetensors_require(st, "a", 2, (const int64_t[]){2, 3}, &err));
    g_assert_nonnull(strstr(err->message, "model.safetensors: tensor 'a' has shape [2, 2], "
                                          "config.json implies [2, 3]"));
    g_clear_error(&err);
    g_assert_null(safetensors_require(st, "zzz", 1, (const int64_t[]){1}, &err));
    g_assert_nonnull(strstr(err->message, "tensor 'zzz' is missing"));
    g_assert_nonnull(strstr(err->message, path));
    g_clear_error(&err);
    safetensors_free(st);

    g_assert_null(safetensors_open("/nonexistent/x.safetensors", &err));
    g_assert_nonnull(strstr(err->message, "/nonexistent/x.safetensors"));
    g_clear_error(&err);
    g_assert_null(safetensors_open_snapshot("/nonexistent", &err));
    g_clear_error(&err);
    g_free(path);
    g_free(dir);
    g_byte_array_free(b, TRUE);
}

static void test_sharded(void) {
    char *dir = dq_test_tmpdir();
    float one[2] = {1, 2}, two[3] = {3, 4, 5};
    GByteArray *s1 = make_file("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                               one, sizeof one);
    GByteArray *s2 = make_file("{\"y\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}",
                               two, sizeof two);
    g_free(write_file(dir, "model-00001-of-00002.safetensors", s1));
    g_free(write_file(dir, "model-00002-of-00002.safetensors", s2));
    char *index = g_build_filename(dir, "model.safetensors.index.json", NULL);
    const char *good =
        "{\"metadata\":{},\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\","
        "\"y\":\"model-00002-of-00002.safetensors\"}}";
    g_assert_true(g_file_set_contents(index, good, -1, NULL));
    GError *err = NULL;
    DqSafeTensors *st = safetensors_open_snapshot(dir, &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(safetensors_count(st), ==, 2);
    const DqTensor *y = safetensors_get(st, "y");
    float yv[3]; /* the data section is not aligned here: read through the converter */
    dq_convert_to_f32(yv, y->data, y->dtype, 3);
    g_assert_cmpfloat(yv[2], ==, 5.0f);
    g_assert_true(g_str_has_suffix(y->file, "model-00002-of-00002.safetensors"));
    safetensors_free(st);

    /* A model.safetensors file beside the index is the one loaded, as transformers loads it. */
    float whole[1] = {7};
    GByteArray *s0 = make_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                               whole, sizeof whole);
    char *single = write_file(dir, "model.safetensors", s0);
    st = safetensors_open_snapshot(dir, &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(safetensors_count(st), ==, 1);
    g_assert_nonnull(safetensors_get(st, "w"));
    safetensors_free(st);
    g_assert_cmpint(g_unlink(single), ==, 0);
    g_free(single);
    g_byte_array_free(s0, TRUE);

    /* The index promises a tensor its shard does not have. */
    const char *wrong = "{\"weight_map\":{\"x\":\"model-00002-of-00002.safetensors\"}}";
    g_assert_true(g_file_set_contents(index, wrong, -1, NULL));
    g_assert_null(safetensors_open_snapshot(dir, &err));
    g_assert_nonnull(strstr(err->message, "tensor 'x' is not in model-00002-of-00002"));
    g_clear_error(&err);
    /* Paths out of the snapshot are refused; a missing shard names itself. */
    g_assert_true(
        g_file_set_contents(index, "{\"weight_map\":{\"x\":\"../etc/passwd\"}}", -1, NULL));
    g_assert_null(safetensors_open_snapshot(dir, &err));
    g_assert_nonnull(strstr(err->message, "bad shard file name"));
    g_clear_error(&err);
    g_assert_true(
        g_file_set_contents(index, "{\"weight_map\":{\"x\":\"gone.safetensors\"}}", -1, NULL));
    g_assert_null(safetensors_open_snapshot(dir, &err));
    g_assert_nonnull(strstr(err->message, "gone.safetensors"));
    g_clear_error(&err);
    g_assert_true(g_file_set_contents(index, "{\"weight_map\":[]}", -1, NULL));
    g_assert_null(safetensors_open_snapshot(dir, &err));
    g_assert_nonnull(strstr(err->message, "weight_map"));
    g_clear_error(&err);

    g_byte_array_free(s1, TRUE);
    g_byte_array_free(s2, TRUE);
    g_free(index);
    g_free(dir);
}

/* An index that puts a tensor in the wrong shard is refused even where the shard it names and the
 * one the tensor is in end alike (found by fuzz_safetensors_index: a suffix test took
 * "ba.safetensors" for "a.safetensors"). */
static void test_sharded_exact_shard(void) {
    char *dir = dq_test_tmpdir();
    float one[2] = {1, 2}, two[4] = {3, 4, 5, 6};
    GByteArray *s1 = make_file("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                               one, sizeof one);
    GByteArray *s2 = make_file("{\"y\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                               "\"z\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
                               two, sizeof two);
    g_free(write_file(dir, "a.safetensors", s1));
    g_free(write_file(dir, "ba.safetensors", s2));
    char *index = g_build_filename(dir, "model.safetensors.index.json", NULL);
    g_assert_true(g_file_set_contents(
        index, "{\"weight_map\":{\"y\":\"ba.safetensors\",\"z\":\"a.safetensors\"}}", -1, NULL));
    GError *err = NULL;
    DqSafeTensors *st = safetensors_open_snapshot(dir, &err);
    g_assert_null(st);
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, "tensor 'z' is not in a.safetensors"));
    g_assert_nonnull(strstr(err->message, index));
    g_clear_error(&err);
    g_byte_array_free(s1, TRUE);
    g_byte_array_free(s2, TRUE);
    g_free(index);
    g_free(dir);
}

/* The weights' bytes of a snapshot for the CUDA backend's memory check: the files the index
 * names (a shard named by several tensors once), or model.safetensors; never another variant or
 * a draft model beside them. */
static void test_snapshot_bytes(void) {
    char *dir = dq_test_tmpdir();
    GByteArray *big = g_byte_array_new(), *small = g_byte_array_new();
    g_byte_array_set_size(big, 3000);
    g_byte_array_set_size(small, 700);
    g_assert_cmpuint(safetensors_snapshot_bytes(dir), ==, 0); /* neither */
    g_free(write_file(dir, "model.safetensors", small));
    g_free(write_file(dir, "model.fp16.safetensors", big)); /* another variant */
    g_free(write_file(dir, "draft.safetensors", big));
    g_assert_cmpuint(safetensors_snapshot_bytes(dir), ==, 700);
    g_free(write_file(dir, "model-00001-of-00002.safetensors", big));
    g_free(write_file(dir, "model-00002-of-00002.safetensors", small));
    char *index = g_build_filename(dir, "model.safetensors.index.json", NULL);
    const char *good = "{\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\","
                       "\"y\":\"model-00002-of-00002.safetensors\","
                       "\"z\":\"model-00001-of-00002.safetensors\"}}";
    g_assert_true(g_file_set_contents(index, good, -1, NULL));
    /* model.safetensors beside an index is what loads (transformers' order): its bytes count */
    g_assert_cmpuint(safetensors_snapshot_bytes(dir), ==, 700);
    char *single = g_build_filename(dir, "model.safetensors", NULL);
    g_assert_cmpint(g_unlink(single), ==, 0);
    g_assert_cmpuint(safetensors_snapshot_bytes(dir), ==, 3700);
    /* a path out of the folder, a missing shard: not counted (the loader refuses them) */
    const char *odd = "{\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\","
                      "\"y\":\"../model-00002-of-00002.safetensors\",\"z\":\"gone.safetensors\"}}";
    g_assert_true(g_file_set_contents(index, odd, -1, NULL));
    g_assert_cmpuint(safetensors_snapshot_bytes(dir), ==, 3000);
    /* ".." (the folder above) is no shard either: its size is not counted */
    const char *up = "{\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\","
                     "\"y\":\"..\"}}";
    g_assert_true(g_file_set_contents(index, up, -1, NULL));
    g_assert_cmpuint(safetensors_snapshot_bytes(dir), ==, 3000);
    g_assert_true(g_file_set_contents(index, "{\"weight_map\":[]}", -1, NULL));
    g_assert_cmpuint(safetensors_snapshot_bytes(dir), ==, 0);
    g_assert_true(g_file_set_contents(index, "not json", -1, NULL));
    g_assert_cmpuint(safetensors_snapshot_bytes(dir), ==, 0);
    /* a folder named model.safetensors is no file: the index is read */
    g_assert_cmpint(g_mkdir(single, 0755), ==, 0);
    g_assert_true(g_file_set_contents(index, good, -1, NULL));
    g_assert_cmpuint(safetensors_snapshot_bytes(dir), ==, 3700);
    g_free(single);
    g_free(index);
    g_byte_array_free(big, TRUE);
    g_byte_array_free(small, TRUE);
    g_free(dir);
}

/* The CUDA backend's memory check counts what the weights take once loaded, tensor by tensor:
 * a snapshot mixing F32 and BF16 matrices was estimated from its file bytes over the first
 * tensor's dtype size (here BF16: 192 bytes / 2 = 96 parameters instead of 64). */
static void test_loaded_bytes(void) {
    uint8_t data[64 + 128] = {0};
    const char *h = "{\"w1\":{\"dtype\":\"BF16\",\"shape\":[4,8],\"data_offsets\":[0,64]},"
                    "\"w2\":{\"dtype\":\"F32\",\"shape\":[4,8],\"data_offsets\":[64,192]}}";
    GByteArray *b = make_file(h, data, sizeof data);
    GError *err = NULL;
    DqSafeTensors *st = safetensors_parse(b->data, b->len, "mixed.safetensors", &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(safetensors_loaded_bytes(st, 2), ==, 64 * 2);
    g_assert_cmpuint(safetensors_loaded_bytes(st, 4), ==, 64 * 4);
    safetensors_free(st);
    g_byte_array_free(b, TRUE);
    /* vectors stay float32 whatever they are stored as: a [2,2] F32 matrix, [3] BF16, [4] F16 */
    b = sample_file();
    st = safetensors_parse(b->data, b->len, "mem.safetensors", &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(safetensors_loaded_bytes(st, 2), ==, 4 * 2 + (3 + 4) * 4);
    safetensors_free(st);
    g_byte_array_free(b, TRUE);
}

static void test_tiny_snapshots(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    const char *variants[] = {"tiny-smolvlm-b512", "tiny-smolvlm-b512-bf16"};
    for (int v = 0; v < 2; v++) {
        char *dir = g_build_filename(shared, "models", variants[v], NULL);
        GError *err = NULL;
        DqSafeTensors *st = safetensors_open_snapshot(dir, &err);
        dq_assert_no_error(err);
        /* 2 vision layers x 16 + 6 embeddings/post-LN/connector, 2 text layers x 9 + 2; tied: no
         * lm_head. */
        g_assert_cmpuint(safetensors_count(st), ==, 58);
        g_assert_null(safetensors_get(st, "lm_head.weight"));
        const DqTensor *t =
            safetensors_require(st, "model.vision_model.embeddings.patch_embedding.weight", 4,
                                (const int64_t[]){32, 3, 16, 16}, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(t->dtype, ==, v == 0 ? DQ_DTYPE_F32 : DQ_DTYPE_BF16);
        t = safetensors_require(st, "model.text_model.embed_tokens.weight", 2,
                                (const int64_t[]){49280, 64}, &err);
        dq_assert_no_error(err);
        g_assert_cmpuint(t->nbytes, ==, (size_t)49280 * 64 * (v == 0 ? 4 : 2));
        safetensors_free(st);
        g_free(dir);
    }
}

/* The header length field at its bounds: one byte more than the file holds overruns it (the
 * byte after the file, in the caller's buffer here, is never read); an 8-byte file is a length
 * field with an empty header, not a truncated one. */
static void test_header_length_edges(void) {
    GError *err = NULL;
    /* "{}" with its length field claiming 3 bytes; the buffer goes on past the 10 given */
    uint8_t img[16] = {3, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    g_assert_null(safetensors_parse(img, 10, "over.safetensors", &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, "over.safetensors: header length 3 overruns the file"));
    g_clear_error(&err);
    img[0] = 2; /* the same bytes with the right length: an empty set of tensors */
    DqSafeTensors *st = safetensors_parse(img, 10, "ok.safetensors", &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(safetensors_count(st), ==, 0);
    safetensors_free(st);
    img[0] = 0;
    g_assert_null(safetensors_parse(img, 8, "eight.safetensors", &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, "eight.safetensors: empty safetensors header"));
    g_clear_error(&err);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/safetensors/dtypes", test_dtypes);
    g_test_add_func("/safetensors/bad-headers", test_bad_headers);
    g_test_add_func("/safetensors/format-rules", test_format_rules);
    g_test_add_func("/safetensors/require", test_require_errors);
    g_test_add_func("/safetensors/sharded", test_sharded);
    g_test_add_func("/safetensors/sharded-exact-shard", test_sharded_exact_shard);
    g_test_add_func("/safetensors/tiny-snapshots", test_tiny_snapshots);
    g_test_add_func("/safetensors/snapshot-bytes", test_snapshot_bytes);
    g_test_add_func("/safetensors/loaded-bytes", test_loaded_bytes);
    g_test_add_func("/safetensors/header-length-edges", test_header_length_edges);
    return g_test_run();
}
