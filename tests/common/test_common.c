#include "dq_error.h"
#include "mapped_file.h"
#include "resources.h"
#include "testutil.h"
#include "text.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void test_mapped_file_reads_bytes(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "bytes.bin", NULL);
    const char content[] = "docqa\0maps\xff";
    g_assert_true(g_file_set_contents(path, content, sizeof content, NULL));
    GError *err = NULL;
    DqMappedFile *mf = dq_mapped_file_open(path, &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(mf->size, ==, sizeof content);
    g_assert_cmpmem(mf->data, mf->size, content, sizeof content);
    dq_mapped_file_free(mf);
    g_free(path);
    g_free(dir);
}

static void test_mapped_file_missing_names_path(void) {
    GError *err = NULL;
    DqMappedFile *mf = dq_mapped_file_open("/nonexistent/docqa/weights.bin", &err);
    g_assert_null(mf);
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    g_assert_nonnull(strstr(err->message, "/nonexistent/docqa/weights.bin"));
    g_error_free(err);
}

static void test_mapped_file_directory_rejected(void) {
    GError *err = NULL;
    char *dir = dq_test_tmpdir();
    g_assert_null(dq_mapped_file_open(dir, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    g_error_free(err);
    g_free(dir);
}

/* Resident kB of the mapping that starts at p (/proc/self/smaps), -1 when it is not listed. */
static long mapping_rss_kb(const void *p) {
    char *smaps = NULL;
    if (!g_file_get_contents("/proc/self/smaps", &smaps, NULL, NULL))
        return -1;
    char *start = g_strdup_printf("%lx-", (unsigned long)(uintptr_t)p);
    long rss = -1;
    char **lines = g_strsplit(smaps, "\n", -1);
    for (int i = 0; lines[i] != NULL && rss < 0; i++)
        if (g_str_has_prefix(lines[i], start))
            for (int j = i + 1; lines[j] != NULL; j++)
                if (g_str_has_prefix(lines[j], "Rss:")) {
                    rss = atol(lines[j] + 4);
                    break;
                }
    g_strfreev(lines);
    g_free(start);
    g_free(smaps);
    return rss;
}

/* populate maps every page of a range in; release drops the whole pages inside a range from the
 * resident set, and the bytes read back the same afterwards. */
static void test_mapped_file_populate_release(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "weights.bin", NULL);
    size_t n = (size_t)4 << 20;
    guint8 *content = g_malloc(n);
    for (size_t i = 0; i < n; i++)
        content[i] = (guint8)(i * 2654435761u >> 13);
    g_assert_true(g_file_set_contents(path, (const char *)content, (gssize)n, NULL));
    GError *err = NULL;
    DqMappedFile *mf = dq_mapped_file_open(path, &err);
    dq_assert_no_error(err);
    if (mapping_rss_kb(mf->data) < 0) {
        g_test_skip("/proc/self/smaps does not list the mapping");
    } else {
        dq_mapped_populate(mf->data, n);
        g_assert_cmpint(mapping_rss_kb(mf->data), ==, (long)(n >> 10));
        dq_mapped_release(mf->data + 100, n - 200); /* all but the first and last pages */
        long after = mapping_rss_kb(mf->data);
        g_assert_cmpint(after, <=, 2 * 64);       /* at most two pages of up to 64 kB */
        g_assert_cmpmem(mf->data, n, content, n); /* read back: mapped again */
        dq_mapped_populate(mf->data + 1, 0);      /* nothing to do */
        dq_mapped_release(mf->data + 10, 20);     /* no whole page inside: nothing */
    }
    dq_mapped_file_free(mf);
    g_free(content);
    g_free(path);
    g_free(dir);
}

static void test_error_prefix(void) {
    GError *err = NULL;
    g_assert_false(dq_fail(&err, DQ_ERR_FORMAT, "tensor '%s' truncated", "w"));
    dq_error_prefix(&err, "%s", "model.safetensors");
    g_assert_cmpstr(err->message, ==, "model.safetensors: tensor 'w' truncated");
    g_error_free(err);
    g_assert_false(dq_fail(NULL, DQ_ERR_IO, "ignored"));
}

static void test_resources_hold_prompt_and_schema(void) {
    GError *err = NULL;
    GBytes *b = dq_resource_get("configs/prompts/docvqa.txt", &err);
    dq_assert_no_error(err);
    const char *text = g_bytes_get_data(b, NULL);
    g_assert_true(g_str_has_prefix(text, "Give a short and terse answer"));
    g_assert_true(g_str_has_suffix(text, "Question: {question}"));
    g_bytes_unref(b);
    char **names = dq_resource_list("schema/sqlite", &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(g_strv_length(names), >=, 1);
    g_assert_cmpstr(names[0], ==, "0001_documents_pages.sql");
    g_strfreev(names);
    g_assert_null(dq_resource_get("configs/nope.txt", &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    g_error_free(err);
}

static void test_utf8_escape_invalid(void) {
    static const char *const cases[][2] = {
        {"/archive/re\xc3\xa7u.pdf", "/archive/re\xc3\xa7u.pdf"}, /* valid: unchanged */
        {"/archive/re\xe7u.pdf", "/archive/re\\xE7u.pdf"},        /* Latin-1 c-cedilla */
        {"\xff\xfe", "\\xFF\\xFE"},
        {"a\xe2\x82", "a\\xE2\\x82"}, /* a character cut short */
        {"", ""},
        {"C:\\dir\\x", "C:\\dir\\x"},        /* backslashes that read as nothing */
        {"re\\xE7u.pdf", "re\\x5CxE7u.pdf"}, /* spelled like an escape: not one */
        {"\\x41\xff", "\\x5Cx41\\xFF"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *got = dq_utf8_escape_invalid(cases[i][0]);
        g_assert_cmpstr(got, ==, cases[i][1]);
        g_assert_true(g_utf8_validate(got, -1, NULL));
        g_free(got);
    }
    g_assert_null(dq_utf8_escape_invalid(NULL));
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/common/text/utf8-escape-invalid", test_utf8_escape_invalid);
    g_test_add_func("/common/mapped_file/reads_bytes", test_mapped_file_reads_bytes);
    g_test_add_func("/common/mapped_file/missing_names_path", test_mapped_file_missing_names_path);
    g_test_add_func("/common/mapped_file/directory_rejected", test_mapped_file_directory_rejected);
    g_test_add_func("/common/mapped_file/populate_release", test_mapped_file_populate_release);
    g_test_add_func("/common/error/prefix", test_error_prefix);
    g_test_add_func("/common/resources/prompt_and_schema", test_resources_hold_prompt_and_schema);
    return g_test_run();
}
