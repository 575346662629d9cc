#include "clock.h"
#include "dq_error.h"
#include "file_kind.h"
#include "json_load.h"
#include "json_write.h"
#include "mapped_file.h"
#include "resources.h"
#include "testutil.h"
#include "text.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The smallest files: one byte is mapped and read like any other; an empty file maps to no
 * bytes. Freeing nothing does nothing. */
static void test_mapped_file_tiny(void) {
    char *dir = dq_test_tmpdir();
    char *one = g_build_filename(dir, "one.bin", NULL);
    char *none = g_build_filename(dir, "none.bin", NULL);
    g_assert_true(g_file_set_contents(one, "\x7f", 1, NULL));
    g_assert_true(g_file_set_contents(none, "", 0, NULL));
    GError *err = NULL;
    DqMappedFile *mf = dq_mapped_file_open(one, &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(mf->size, ==, 1);
    g_assert_nonnull(mf->data);
    g_assert_cmpint(mf->data[0], ==, 0x7f);
    dq_mapped_file_free(mf);
    mf = dq_mapped_file_open(none, &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(mf->size, ==, 0);
    dq_mapped_file_free(mf);
    dq_mapped_file_free(NULL);
    g_free(none);
    g_free(one);
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

/* A FIFO among a snapshot's files: refused at once, not waited on (the alarm turns a hang into a
 * failure). */
static void test_mapped_file_fifo_rejected(void) {
    char *dir = dq_test_tmpdir();
    char *fifo = g_build_filename(dir, "model.safetensors", NULL);
    g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
    alarm(20);
    GError *err = NULL;
    g_assert_null(dq_mapped_file_open(fifo, &err));
    alarm(0);
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    g_assert_nonnull(strstr(err->message, fifo));
    g_error_free(err);
    g_free(fifo);
    g_free(dir);
}

static char *nested(int levels, const char *open, const char *inner, const char *close) {
    GString *s = g_string_new(NULL);
    for (int i = 0; i < levels; i++)
        g_string_append(s, open);
    g_string_append(s, inner);
    for (int i = 0; i < levels; i++)
        g_string_append(s, close);
    return g_string_free(s, FALSE);
}

static void expect_json_error(const char *text, DqJsonFlags flags, const char *needle) {
    GError *err = NULL;
    JsonParser *p = dq_json_parse(text, -1, "x.json", flags, &err);
    g_assert_null(p);
    g_assert_error(err, DQ_ERROR, DQ_ERR_FORMAT);
    g_assert_true(g_str_has_prefix(err->message, "x.json: "));
    if (!g_utf8_validate(err->message, -1, NULL)) /* it is printed, and put in --json output */
        g_error("not UTF-8: '%s'", err->message);
    if (strstr(err->message, needle) == NULL)
        g_error("'%s' does not say '%s'", err->message, needle);
    g_error_free(err);
}

static void expect_json_ok(const char *text, DqJsonFlags flags) {
    GError *err = NULL;
    JsonParser *p = dq_json_parse(text, -1, "x.json", flags, &err);
    dq_assert_no_error(err);
    g_object_unref(p);
}

/* json-glib parses recursively: a million brackets would overflow the stack. */
static void test_json_depth(void) {
    char *deep = nested(1000000, "[", "", "]");
    expect_json_error(deep, DQ_JSON_DEFAULT, "nested deeper than 128 levels (at byte 128)");
    g_free(deep);
    char *obj = nested(2000000, "{\"a\":", "1", "}");
    expect_json_error(obj, DQ_JSON_DEFAULT, "nested deeper than 128");
    g_free(obj);
    char *limit = nested(DQ_JSON_MAX_DEPTH, "[", "", "]");
    expect_json_ok(limit, DQ_JSON_DEFAULT);
    g_free(limit);
    char *over = nested(DQ_JSON_MAX_DEPTH + 1, "[", "", "]");
    expect_json_error(over, DQ_JSON_DEFAULT, "nested deeper");
    g_free(over);
    /* brackets in strings are text, escaped quotes included */
    char *in_string = nested(100000, "[", "", "{");
    char *quoted = g_strdup_printf("{\"k\\\"[\": \"\\\\\", \"v\": \"%s\\\"\"}", in_string);
    expect_json_ok(quoted, DQ_JSON_DEFAULT);
    g_free(quoted);
    g_free(in_string);
    size_t at = 0;
    const char *why = "";
    g_assert_false(dq_json_syntax_ok("[\"]\", [[", 8, 2, &at, &why));
    g_assert_cmpuint(at, ==, 7);
    g_assert_null(why);
}

static void test_json_empty_and_duplicates(void) {
    expect_json_error("", DQ_JSON_DEFAULT, "empty");
    expect_json_error("  \n", DQ_JSON_DEFAULT, "empty");
    expect_json_error("{\"a\": ", DQ_JSON_DEFAULT, "not valid JSON");
    expect_json_error("\xEF\xBB\xBF{}", DQ_JSON_DEFAULT, "starts with a UTF-8 byte order mark");
    /* a mark alone is still the mark (json-glib would read an empty document) */
    expect_json_error("\xEF\xBB\xBF", DQ_JSON_DEFAULT, "starts with a UTF-8 byte order mark");
    /* a length of 0 is an empty text, not "up to the NUL" */
    GError *err = NULL;
    g_assert_null(dq_json_parse("{\"a\": 1}", 0, "x.json", DQ_JSON_DEFAULT, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_FORMAT);
    g_assert_cmpstr(err->message, ==, "x.json: empty, not a JSON document");
    g_clear_error(&err);
    const char *dup = "{\"a\": {\"x\": 1, \"y\": 2}, \"b\": 1, \"a\": {\"x\": 3}}";
    expect_json_ok(dup, DQ_JSON_DEFAULT); /* Python's json keeps the last one too */
    expect_json_error(dup, DQ_JSON_UNIQUE_KEYS, "key \"a\" appears twice in the top-level object");
    expect_json_error("{\"a\": {\"x\": 1, \"x\": 2}}", DQ_JSON_UNIQUE_KEYS,
                      "key \"x\" appears twice in one object");
    /* json-glib's own messages, for what it refuses in JSON: a high surrogate escape followed
     * by an escape that is not a low one (its messages quoted the text with a lone surrogate
     * decoded to bytes that are not UTF-8, shown escaped: fuzz_questions found it, before the
     * grammar was checked first) */
    expect_json_error("[\"caf\\ud83d\\u0041\"]", DQ_JSON_DEFAULT,
                      "x.json: not valid JSON: <data>:1:18: Parse error: scanner: malformed "
                      "surrogate pair");
    expect_json_error("[\"caf\\ud83d\u00e9\" \"x\"]", DQ_JSON_DEFAULT,
                      "x.json: not valid JSON: line 1, column 15: no comma or ']' after a value");
    expect_json_error("{\"k\\ud83dxy\": 1, \"k\\ud83dxy\": 2}",
                      DQ_JSON_UNIQUE_KEYS | DQ_JSON_NUL_CHECKED, "key \"k\\x");
    /* the same key in different objects is no duplicate */
    expect_json_ok("{\"a\": {\"x\": 1}, \"b\": {\"x\": 2, \"a\": [{\"x\": 3}]}}",
                   DQ_JSON_UNIQUE_KEYS);
}

/* json-glib decodes \u0000 to a NUL byte and its strings end there: "a\u0000junk" read as "a". */
static void test_json_nul_escape(void) {
    expect_json_error("{\"chat_template\": \"ok\\u0000junk\"}", DQ_JSON_DEFAULT,
                      "x.json: line 1: a string under key \"chat_template\" holds \\u0000 "
                      "(U+0000): docqa cannot keep a NUL character inside a string");
    /* the line, and the nearest key above a list */
    expect_json_error("{\"a\": 1,\n \"added_tokens\": [\n  {\"id\": 3},\n  \"x\\u0000\"]}",
                      DQ_JSON_DEFAULT, "x.json: line 4: a string under key \"added_tokens\"");
    expect_json_error("{\"added_tokens\": [{\"id\": 3, \"content\": \"<a\\u0000b>\"}]}",
                      DQ_JSON_DEFAULT, "a string under key \"content\" holds");
    expect_json_error("{\"k\\u0000x\": 1}", DQ_JSON_DEFAULT,
                      "x.json: line 1: key \"k\\u0000x\" holds \\u0000");
    /* keys cut at the NUL would be the same key: the NUL is what is wrong */
    expect_json_error("{\"k\\u0000x\": 1, \"k\\u0000y\": 2}", DQ_JSON_UNIQUE_KEYS, "holds \\u0000");
    expect_json_error("[\"\\u0000\"]", DQ_JSON_DEFAULT, "line 1: a string holds \\u0000");
    expect_json_error("\"\\u0000\"", DQ_JSON_DEFAULT, "line 1: a string holds \\u0000");
    /* not a NUL: an escaped backslash, then the letters u0000; other escapes of zeros */
    expect_json_ok("{\"a\": \"C:\\\\u0000\", \"\\\\u0000\": [\"\\\\\\\\u0000\"]}", DQ_JSON_DEFAULT);
    expect_json_ok("[\"\\u0001\", \"\\u0100\", 0]", DQ_JSON_DEFAULT);
    /* the questions reader looks for it itself, to name the question */
    expect_json_ok("[\"a\\u0000b\"]", DQ_JSON_NUL_CHECKED);
    expect_json_ok("[\"\\\\\\\"u0000\", \"\\u0030\"]", DQ_JSON_DEFAULT);
    /* an odd number of backslashes: the last escapes the u */
    expect_json_error("[\"\\\\\\u0000\"]", DQ_JSON_DEFAULT, "holds \\u0000");
    /* a key is known by its place, not by its look */
    expect_json_error("{\"a\": \"b\", \"c\": [\"a\", {\"d\": \"x\\u0000\"}]}", DQ_JSON_DEFAULT,
                      "a string under key \"d\" holds");
    expect_json_error("{\"a\": {}, \"c\": [[], \"\\u0000\"]}", DQ_JSON_DEFAULT,
                      "a string under key \"c\" holds");
    /* json-glib reads any 4 characters after \u: "\u0.00" cut the string too (fuzz_json) */
    expect_json_error("{\"t\": \"Zk\\u0.00junk\"}", DQ_JSON_DEFAULT,
                      "x.json: line 1: a string under key \"t\" holds \\u0.00, a \\u escape "
                      "without 4 hex digits");
    expect_json_error("[\"a\\u0.00b\"]", DQ_JSON_NUL_CHECKED, "holds \\u0.00");
    /* what looks like a comment inside strings is text */
    expect_json_ok("[\"/*\", \"*/\\u0041\"]", DQ_JSON_DEFAULT);
}

/* json-glib decodes half of a surrogate pair alone to 3 bytes that are not UTF-8 (ED A0 80 for
 * \ud800) and drops the character after it: "a\ud800bc" read as "a", those bytes, "c". */
static void test_json_lone_surrogate(void) {
    expect_json_error("{\"chat_template\": \"a\\ud800bc\"}", DQ_JSON_DEFAULT,
                      "x.json: line 1: a string under key \"chat_template\" holds \\ud800, half of "
                      "a UTF-16 surrogate pair without its other half, not a character");
    /* a low surrogate alone, on a later line, in a key (one at the end of a string takes the
     * quote with it: json-glib finds the string unterminated) */
    expect_json_error("{\"a\": 1,\n \"b\": [\"x\\uDC00y\"]}", DQ_JSON_DEFAULT,
                      "x.json: line 2: a string under key \"b\" holds \\uDC00, half of");
    expect_json_error("[\"x\\udbffy\"]", DQ_JSON_DEFAULT, "line 1: a string holds \\udbff, half");
    expect_json_error("{\"k\\udfffx\": 1}", DQ_JSON_DEFAULT,
                      "line 1: key \"k\\udfffx\" holds \\udfff");
    /* a high one followed by no escape, or by an escape that is not \u */
    expect_json_error("[\"\\ud83d\\nb\"]", DQ_JSON_DEFAULT, "holds \\ud83d, half");
    expect_json_error("[\"\\ud83d\\\\udc00\"]", DQ_JSON_DEFAULT, "holds \\ud83d, half");
    /* two low ones after a high: the pair, then a lone one */
    expect_json_error("[\"\\ud83d\\ude00\\ude00z\"]", DQ_JSON_DEFAULT, "holds \\ude00, half");

    /* a pair is one character, 4 bytes of UTF-8 */
    GError *err = NULL;
    JsonParser *p = dq_json_parse("[\"a\\ud83d\\ude00b\", \"\\uD834\\uDD1E\"]", -1, "x.json",
                                  DQ_JSON_DEFAULT, &err);
    dq_assert_no_error(err);
    JsonArray *arr = json_node_get_array(json_parser_get_root(p));
    g_assert_cmpstr(json_array_get_string_element(arr, 0), ==,
                    "a\xF0\x9F\x98\x80"
                    "b");
    g_assert_cmpstr(json_array_get_string_element(arr, 1), ==, "\xF0\x9D\x84\x9E");
    g_object_unref(p);
    /* not escapes: an escaped backslash before the letters */
    expect_json_ok("[\"\\\\ud800\", \"\\ud7ff\\ue000\"]", DQ_JSON_DEFAULT);
    /* the questions reader names the question itself */
    expect_json_ok("[\"a\\ud800bc\"]", DQ_JSON_NUL_CHECKED);
    expect_json_error("[\"a\\ud800bc\"]", DQ_JSON_UNIQUE_KEYS, "holds \\ud800, half");
}

/* json-glib reads much that is not JSON, some of it as other values than Python's json and
 * serde_json would if they read it (010 is 8 to it, 99999999999999999999 is -1): refused, with
 * the line and column Python's json counts. */
static void test_json_not_json(void) {
    static const struct {
        const char *text, *message;
    } cases[] = {
        {"{\"a\": 1 /* c */}",
         "x.json: not valid JSON: line 1, column 9: a comment (JSON has none)"},
        {"{\"a\": 1,\n // c\n \"b\": 2}", "line 2, column 2: a comment"},
        {"/* \" */ [1]", "line 1, column 1: a comment"},
        {"{'a': 1}", "line 1, column 2: a string in single quotes (JSON's are in double quotes)"},
        {"['\"', 1]", "line 1, column 2: a string in single quotes"},
        {"{\"a\": 1, 'b': 2}", "line 1, column 10: a string in single quotes"},
        {"{\"a\": 010}", "line 1, column 7: a number JSON does not write so"},
        {"[0x10]", "column 2: a number JSON does not write so (no hex, octal or binary)"},
        {"[0b101]", "(no hex, octal or binary)"},
        {"[-0x1]", "column 2: a number JSON does not write so (no hex"},
        {"[$ff]", "column 2: a number JSON does not write so"},
        {"[.5]", "a number JSON does not write so"},
        {"[+1]", "a number JSON does not write so"},
        {"[1.]", "column 2: a number without a digit after its point"},
        {"[1.5.2]", "a number JSON does not write so"},
        {"[1e]", "a number without digits in its exponent"},
        {"[1e+]", "a number without digits in its exponent"},
        {"[-]", "column 2: a minus sign without a number after it"},
        {"[- 1]", "column 2: a minus sign without a number after it"},
        {"[99999999999999999999]", "column 2: an integer beyond 64 bits"},
        {"[9223372036854775808]", "an integer beyond 64 bits"},
        {"[-9223372036854775809]", "an integer beyond 64 bits"},
        {"[\"\\x41\"]", "column 3: a backslash escaping a character JSON does not escape"},
        {"[\"\\'\"]", "a backslash escaping a character JSON does not escape"},
        {"[\"a\tb\"]",
         "column 4: a control character inside a string (JSON writes it as an escape)"},
        {"{\"a\nb\": 1}", "line 1, column 4: a control character inside a string"},
        {"[1,]", "column 3: a comma before a closing bracket"},
        {"{\"a\": 1 , }", "column 9: a comma before a closing bracket"},
        {"[,1]", "column 2: a comma with no value after it"},
        {"[1 2]", "column 4: no comma or ']' after a value"},
        {"{\"a\": 1 \"b\": 2}", "column 9: no comma or '}' after a value"},
        {"{\"a\": [1, 2}", "no comma or ']' after a value"},
        {"{\"a\" 1}", "column 6: no colon after a key"},
        {"{1: 2}", "column 2: no key in double quotes where an object's key should be"},
        {"{\"a\": 1, }", "a comma before a closing bracket"},
        {"{\"a\": 1} x", "column 10: more text after the JSON value"},
        {"[1] /* c */", "column 5: a comment"},
        {"[NaN]", "column 2: NaN or Infinity (Python's json reads them; JSON and docqa do not)"},
        {"[-Infinity]", "column 2: NaN or Infinity"},
        {"[True]", "column 2: a character JSON has no place for"},
        {"[truex]", "column 2: a character JSON has no place for"},
        {"[nul]", "a character JSON has no place for"},
        {"[\"abc", "column 2: a string without its closing quote"},
        {"[1, 2", "column 6: the end of the text inside an unclosed bracket"},
        {"{\"a\": ", "column 7: the text ends where a value should be"},
        /* columns count characters, as Python's json does */
        {"[\"\xC3\xA9\xE2\x82\xAC\", x]", "line 1, column 8: a character JSON has no place for"},
        {"\n\n  [1,\n   2 3]", "line 4, column 6: no comma or ']' after a value"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
        expect_json_error(cases[i].text, DQ_JSON_DEFAULT, cases[i].message);

    /* JSON that is: every escape, numbers at the edges of 64 bits, white space JSON allows */
    static const char *const fine[] = {
        " \t\r\n{\"a\" : [ ] , \"b\":{ },\"c\":[1,-0,0.5,-1.5e-3,1E+2,2e-0]}\r\n",
        "[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\"]",
        "true",
        "null",
        "\"s\"",
        "-0.0e0",
        "[0.5e01]", /* an exponent's digits may start with 0 */
    };
    for (size_t i = 0; i < G_N_ELEMENTS(fine); i++)
        expect_json_ok(fine[i], DQ_JSON_DEFAULT);
    GError *err = NULL;
    JsonParser *p = dq_json_parse("[9223372036854775807, -9223372036854775808]", -1, "x.json",
                                  DQ_JSON_DEFAULT, &err);
    dq_assert_no_error(err);
    JsonArray *arr = json_node_get_array(json_parser_get_root(p));
    g_assert_cmpint(json_array_get_int_element(arr, 0), ==, G_MAXINT64);
    g_assert_cmpint(json_array_get_int_element(arr, 1), ==, G_MININT64);
    g_object_unref(p);
}

/* Files that are not regular, or too large, are refused without reading them. */
static void test_read_regular(void) {
    char *dir = dq_test_tmpdir();
    GError *err = NULL;
    char *fifo = g_build_filename(dir, "config.json", NULL);
    g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
    alarm(20);
    g_assert_null(dq_json_load_file(fifo, DQ_JSON_DEFAULT, &err));
    alarm(0);
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    g_assert_cmpstr(strstr(err->message, "config.json"), ==,
                    "config.json: a FIFO, not a regular file");
    g_clear_error(&err);

    char *zero = g_build_filename(dir, "tokenizer.json", NULL);
    g_assert_cmpint(symlink("/dev/zero", zero), ==, 0);
    g_assert_null(dq_json_load_file(zero, DQ_JSON_DEFAULT, &err));
    g_assert_nonnull(strstr(err->message, "tokenizer.json: a device, not a regular file"));
    g_clear_error(&err);
    g_assert_null(dq_json_load_file(dir, DQ_JSON_DEFAULT, &err));
    g_assert_nonnull(strstr(err->message, ": a folder, not a regular file"));
    g_clear_error(&err);

    /* 2 GB of holes: refused by its size, nothing read */
    char *sparse = g_build_filename(dir, "preprocessor_config.json", NULL);
    g_assert_true(g_file_set_contents(sparse, "", 0, NULL));
    g_assert_cmpint(truncate(sparse, (off_t)2 << 30), ==, 0);
    g_assert_null(dq_json_load_file(sparse, DQ_JSON_DEFAULT, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_LIMIT);
    g_assert_nonnull(strstr(err->message, "preprocessor_config.json: 2147483648 bytes, more than "
                                          "the 64 MiB allowed"));
    g_clear_error(&err);

    /* the path once, then why */
    char *missing = g_build_filename(dir, "gone.json", NULL);
    g_assert_null(dq_json_load_file(missing, DQ_JSON_DEFAULT, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    char *want = g_strdup_printf("%s: cannot open: No such file or directory", missing);
    g_assert_cmpstr(err->message, ==, want);
    g_clear_error(&err);

    char *ok = g_build_filename(dir, "ok.json", NULL);
    g_assert_true(g_file_set_contents(ok, "{\"a\": [1, 2]}", -1, NULL));
    JsonParser *p = dq_json_load_file(ok, DQ_JSON_DEFAULT, &err);
    dq_assert_no_error(err);
    JsonObject *o = dq_json_root_object(p, ok, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(json_array_get_length(json_object_get_array_member(o, "a")), ==, 2);
    g_object_unref(p);
    size_t len = 0;
    char *text = dq_file_read_regular(ok, 5, &len, &err);
    g_assert_null(text);
    g_assert_error(err, DQ_ERROR, DQ_ERR_LIMIT);
    g_clear_error(&err);
    text = dq_file_read_regular(ok, 13, &len, &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(len, ==, 13);
    g_assert_cmpint(text[13], ==, '\0');
    g_free(text);

    /* A file whose size says 0 but that holds bytes (the kernel's files under /proc, a file
     * still being written): read to its end, the buffer grown as it fills. */
    char *want_proc = NULL;
    gsize want_len = 0;
    g_assert_true(g_file_get_contents("/proc/self/cmdline", &want_proc, &want_len, NULL));
    g_assert_cmpuint(want_len, >, 2);
    text = dq_file_read_regular("/proc/self/cmdline", 1 << 20, &len, &err);
    dq_assert_no_error(err);
    g_assert_cmpmem(text, len, want_proc, want_len);
    g_assert_cmpint(text[len], ==, '\0');
    g_free(text);
    g_free(want_proc);
    g_free(want);
    g_free(ok);
    g_free(missing);
    g_free(sparse);
    g_free(zero);
    g_free(fifo);
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

/* The clocks behind every stage's timing and every lease: each one moves forward with the time
 * it stands for (a sum that went wrong runs backward within a second, or off by one), the wall
 * clock is the machine's, the test skew moves it by what was asked, and the peak memory counts
 * pages touched. */
static void test_clock(void) {
    /* GLib reads the same CLOCK_MONOTONIC: dq_now_ms read between two of its readings */
    gint64 mono_a = g_get_monotonic_time();
    double now0 = dq_now_ms(), cpu0 = dq_cpu_ms(), thread0 = dq_thread_cpu_ms();
    gint64 mono0 = g_get_monotonic_time();
    double now = now0, cpu = cpu0, thread = thread0;
    /* busy for 30 ms, each clock read as it goes: none may step back */
    volatile double sink = 0;
    while (g_get_monotonic_time() - mono0 < 30000) {
        for (int i = 0; i < 10000; i++)
            sink += i;
        double n = dq_now_ms(), c = dq_cpu_ms(), t = dq_thread_cpu_ms();
        g_assert_cmpfloat(n, >=, now);
        g_assert_cmpfloat(c, >=, cpu);
        g_assert_cmpfloat(t, >=, thread);
        now = n;
        cpu = c;
        thread = t;
    }
    g_assert_cmpfloat(sink, >, 0); /* the busy loop ran (and clang sees the sum read) */
    gint64 mono1 = g_get_monotonic_time();
    double end = dq_now_ms();
    gint64 mono_b = g_get_monotonic_time();
    g_assert_cmpfloat(end, >=, now);
    g_assert_cmpfloat(end - now0, >=, (double)(mono1 - mono0) / 1e3 - 0.01);
    g_assert_cmpfloat(end - now0, <=, (double)(mono_b - mono_a) / 1e3 + 0.01);
    double mono_ms = (double)(mono_b - mono_a) / 1e3;
    /* the loop spins: CPU time is most of it, except on a badly shared core */
    g_assert_cmpfloat(thread - thread0, >, 1.0);
    g_assert_cmpfloat(thread - thread0, <=, mono_ms + 1.0);
    g_assert_cmpfloat(cpu - cpu0, >=, thread - thread0 - 1.0);

    /* Unix time to the microsecond: read away from a second's start, where the sub-second part
     * could hide a wrong sign, and taken between two of GLib's readings. */
    while (g_get_real_time() % G_USEC_PER_SEC < 100000)
        g_usleep(1000);
    gint64 before = g_get_real_time();
    int64_t us = dq_wall_us();
    gint64 after = g_get_real_time();
    g_assert_cmpint(us, >=, before);
    g_assert_cmpint(us, <=, after);
    int64_t ms = dq_wall_ms();
    g_assert_cmpint(ms, >=, before / 1000);
    g_assert_cmpint(ms, <=, g_get_real_time() / 1000);
    dq_wall_clock_skew_for_test(-7000);
    int64_t skewed = dq_wall_ms() - g_get_real_time() / 1000;
    dq_wall_clock_skew_for_test(0);
    g_assert_cmpint(skewed, >=, -7001);
    g_assert_cmpint(skewed, <=, -6999);
    g_assert_cmpint(dq_wall_ms() - g_get_real_time() / 1000, >=, -1);

    double rss0 = dq_peak_rss_mb();
    g_assert_cmpfloat(rss0, >, 0.0);
    /* more than the peak so far, which earlier tests in this process may have set */
    size_t n = ((size_t)rss0 + 64) << 20;
    char *block = g_malloc(n);
    memset(block, 1, n);
    sink += block[n / 2];
    g_free(block);
    g_assert_cmpfloat(dq_peak_rss_mb(), >=, rss0 + 60.0);
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
        /* and back: ingest finds the file a stored path names (a file gone, or not) */
        char *back = dq_utf8_unescape(got);
        g_assert_cmpstr(back, ==, cases[i][0]);
        g_free(back);
        g_free(got);
    }
    g_assert_null(dq_utf8_escape_invalid(NULL));
    g_assert_null(dq_utf8_unescape(NULL));
}

/* dq_print_line writes one line: what the format repeats shown as dq_text_show shows it (a
 * newline in it too), one newline at the end, and text already shown comes out the same. */
static void test_print_line(void) {
    FILE *f = tmpfile();
    g_assert_nonnull(f);
    const char *name = "a\033]0;T\007b\nc\xc2\x9b\xff\t\xe2\x80\xae.pdf";
    char *shown = dq_text_show(name, -1, DQ_SHOW_LINE, 0);
    dq_print_line(f, "docqa: %s: %d pages", name, 3);
    dq_print_line(f, "docqa: %s: %d pages", shown, 3);
    g_assert_cmpint(fflush(f), ==, 0);
    rewind(f);
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    g_assert_cmpint(fclose(f), ==, 0);
    const char *want = "docqa: a\\u001b]0;T\\u0007b\\nc\\u009b\\xff\\t\\u202e.pdf: 3 pages\n";
    char *twice = g_strconcat(want, want, NULL);
    g_assert_cmpstr(buf, ==, twice);
    g_free(twice);
    g_free(shown);
}

/* json-glib writes a double with 17 digits: v_progress's 66.7 came out as 66.700000000000003.
 * Numbers are rounded to what the text shows and written with the fewest digits that read back
 * as the same double; strings that look like numbers, integers and a whole double's ".0" stay. */
static void test_json_numbers(void) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    const struct {
        const char *name;
        double value;
        int decimals;
    } members[] = {
        {"percent", 200.0 / 3, 1}, {"rate", 1.0 / 3, 2}, {"eta", 119.6, 0}, {"tiny", 1.25e-7, 9},
        {"neg", -0.15, 1},         {"big", 1e20, 0},     {"zero", 0, 2},    {"nan", NAN, 1},
        {"inf", -INFINITY, 1},
    };
    for (guint i = 0; i < G_N_ELEMENTS(members); i++) {
        json_builder_set_member_name(b, members[i].name);
        dq_json_add_double(b, members[i].value, members[i].decimals);
    }
    json_builder_set_member_name(b, "raw");
    json_builder_add_double_value(b, 0.1 + 0.2); /* not rounded: 17 digits needed */
    json_builder_set_member_name(b, "text");
    json_builder_add_string_value(b, "66.700000000000003 \"1.5\" \\\" 2.50");
    json_builder_set_member_name(b, "list");
    json_builder_begin_array(b);
    json_builder_add_int_value(b, -42);
    json_builder_add_double_value(b, 66.7);
    json_builder_end_array(b);
    json_builder_end_object(b);
    JsonNode *root = json_builder_get_root(b);
    char *text = dq_json_to_text(root, FALSE);
    g_assert_cmpstr(text, ==,
                    "{\"percent\":66.7,\"rate\":0.33,\"eta\":120.0,\"tiny\":1.25e-07,"
                    "\"neg\":-0.1,\"big\":1e+20,\"zero\":0.0,\"nan\":null,\"inf\":null,"
                    "\"raw\":0.30000000000000004,"
                    "\"text\":\"66.700000000000003 \\\"1.5\\\" \\\\\\\" 2.50\","
                    "\"list\":[-42,66.7]}");
    /* What a parser reads back is the rounded value, to the bit. */
    JsonParser *p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, text, -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    g_assert_true(json_object_get_double_member(o, "percent") == 66.7);
    g_assert_true(json_object_get_double_member(o, "raw") == 0.1 + 0.2);
    g_assert_true(json_object_get_double_member(o, "tiny") == 1.25e-7);
    g_object_unref(p);
    g_free(text);
    /* Pretty, as status --json prints it. */
    text = dq_json_to_text(root, TRUE);
    g_assert_nonnull(strstr(text, "\"percent\" : 66.7,"));
    g_free(text);
    json_node_unref(root);
    g_object_unref(b);
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    g_assert_cmpstr(dq_json_number(1e16, buf), ==, "10000000000000000.0");
    g_assert_cmpstr(dq_json_number(0.00001234, buf), ==, "0.00001234");
    g_assert_cmpstr(dq_json_number(1.5e-300, buf), ==, "1.5e-300");
    g_assert_cmpstr(dq_json_number(-2.5, buf), ==, "-2.5");
}

/* The edges of the positional range: a single digit at the smallest exponent written out (its
 * one significant digit sets the decimals), and the first exponent that stays one (1e17 is not
 * written as 18 digits). */
static void test_json_number_edges(void) {
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    g_assert_cmpstr(dq_json_number(0.00001, buf), ==, "0.00001");
    g_assert_cmpstr(dq_json_number(-0.00003, buf), ==, "-0.00003");
    g_assert_cmpstr(dq_json_number(0.000001, buf), ==, "1e-06");
    g_assert_cmpstr(dq_json_number(1e17, buf), ==, "1e+17");
    g_assert_cmpstr(dq_json_number(1.5e17, buf), ==, "1.5e+17");
    g_assert_cmpstr(dq_json_number(7, buf), ==, "7.0");
}

static void expect_shown(const char *text, gssize len, DqShowFlags flags, int max_chars,
                         const char *want) {
    char *got = dq_text_show(text, len, flags, max_chars);
    g_assert_cmpstr(got, ==, want);
    g_free(got);
}

/* dq_text_show at its edges: a limit of one character, a NUL inside a text of given length, a
 * UTF-8 sequence cut short at the end, DEL (a control below C1), a kept tab among other
 * characters. */
static void test_text_show_edges(void) {
    expect_shown("abc", -1, DQ_SHOW_LINE, 1, "a...");
    expect_shown("abc", -1, DQ_SHOW_LINE, 3, "abc");
    expect_shown("a\0b", 3, DQ_SHOW_LINE, 0, "a\\u0000b");
    expect_shown("a\xc3", 2, DQ_SHOW_LINE, 0, "a\\xc3");
    expect_shown("a\xe2\x82", 3, DQ_SHOW_LINE, 0, "a\\xe2\\x82");
    expect_shown("a\x7f"
                 "b",
                 -1, DQ_SHOW_CONTROLS_ONLY, 0, "a\\u007fb");
    expect_shown("a\x7e"
                 "b",
                 -1, DQ_SHOW_CONTROLS_ONLY, 0, "a~b");
    expect_shown("a\tb\nc", -1, DQ_SHOW_KEEP_TABS, 0, "a\tb\\nc");
    expect_shown("a\tb\nc", -1, DQ_SHOW_KEEP_NEWLINES, 0, "a\\tb\nc");
}

/* What a file's first bytes say it is: each signature, whole or cut short; a WebP's only behind
 * "RIFF"; a BMP only with one of BMP's header sizes; markup after a byte order mark and white
 * space, in any case; text, not conclusive, when every byte is text (one cut inside its last
 * character too); nothing for anything else. */
/* a string literal and its length, NULs inside counted */
#define B(s) s, sizeof s - 1

static void test_file_kind(void) {
    static const struct {
        const char *head;
        size_t len;
        const char *kind; /* NULL: not known */
        gboolean conclusive;
    } cases[] = {
        {B("%PDF-1.7\n"), "a PDF document", TRUE},
        {B("%PDF"), "text", FALSE},
        {B("II*\0\x08\0\0\0"), "a TIFF image", TRUE},
        {B("MM\0*\0\0\0\x08"), "a TIFF image", TRUE},
        {B("II+\0\x08\0"), "a BigTIFF image", TRUE},
        {B("MM\0+\0\x08"), "a BigTIFF image", TRUE},
        {B("II*"), "text", FALSE},
        {B("\xff\xd8\xff\xe0"), "a JPEG image", TRUE},
        {B("\xff\xd8\xff"), "a JPEG image", TRUE},
        {B("\xff\xd8"), "text", FALSE}, /* could be a character cut short */
        {B("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR"), "a PNG image", TRUE},
        {B("\x89PNG\r\n\x1a"), NULL, FALSE},
        {B("GIF87a\x01\0"), "a GIF image", TRUE},
        {B("GIF89a"), "a GIF image", TRUE},
        {B("RIFF\x24\0\0\0WEBPVP8 "), "a WebP image", TRUE},
        {B("RIFF\x24\0\0\0WEBP"), "a WebP image", TRUE},
        {B("RIFF\x24\0\0\0WEB"), NULL, FALSE},
        {B("RIFX\x24\0\0\0WEBPVP8 "), NULL, FALSE},
        {B("RIFF\x24\0\0\0WAVEfmt "), NULL, FALSE},
        {B("\0\0\0\x0cjP  \r\n\x87\n"), "a JPEG 2000 image", TRUE},
        {B("\xff\x4f\xff\x51\0"), "a JPEG 2000 codestream", TRUE},
        {B("AT&TFORM\0\0"), "a DjVu document", TRUE},
        {B("%!PS-Adobe-3.0\n"), "a PostScript file", TRUE},
        {B("{\\rtf1\\ansi"), "an RTF document", TRUE},
        {B("\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"), "an old Microsoft Office (OLE2) document", TRUE},
        {B("PK\x03\x04\x14\0"), "a ZIP archive (or an Office or OpenDocument file)", TRUE},
        {B("\x1f\x8b\x08"), "a gzip archive", TRUE},
        {B("\x1f\x8b"), "a gzip archive", TRUE},
        {B("\x1f"), NULL, FALSE},
        {B("7z\xbc\xaf\x27\x1c\0"), "a 7-Zip archive", TRUE},
        {B("Rar!\x1a\x07\x01"), "a RAR archive", TRUE},
        {B("BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0\x0c\0\0\0"), "a BMP image", TRUE},
        {B("BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0\x28\0\0\0"), "a BMP image", TRUE},
        {B("BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0\x34\0\0\0"), "a BMP image", TRUE},
        {B("BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0\x38\0\0\0"), "a BMP image", TRUE},
        {B("BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0\x40\0\0\0"), "a BMP image", TRUE},
        {B("BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0\x6c\0\0\0"), "a BMP image", TRUE},
        {B("BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0\x7c\0\0\0"), "a BMP image", TRUE},
        {B("BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0\x29\0\0\0"), NULL, FALSE},
        {B("BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0\x28\0\0\x01"), NULL, FALSE}, /* all 32 bits count */
        {B("BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0\x28\0\0"), NULL, FALSE},
        {B("BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0\x28\x01\0\0"), NULL, FALSE},
        {B("BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0\x28\0\x01\0"), NULL, FALSE},
        {B("BMP files are bitmaps"), "text", FALSE},
        {B("<!DOCTYPE html><html>"), "HTML", TRUE},
        {B("<!doctype html>"), "HTML", TRUE},
        {B("\xef\xbb\xbf \r\n\t<HTML lang=en>"), "HTML", TRUE},
        {B("<html"), "HTML", TRUE},
        {B("<htm"), "text", FALSE},
        {B("  <head><title>"), "HTML", TRUE},
        {B("<body>"), "HTML", TRUE},
        {B("<title>Not found</title>"), "HTML", TRUE},
        {B("\xef\xbb\xbf<?xml version=\"1.0\"?>"), "XML", TRUE},
        {B("\n<?xml"), "XML", TRUE},
        {B("<?xm"), "text", FALSE},
        {B("<?xmz x"), "text", FALSE},
        {B("\xef\xbb <html>"), NULL, FALSE}, /* not a byte order mark */
        {B("<?XML"), "text", FALSE},
        {B("Date: today\r\n\tSubject: a scan\f\n"), "text", FALSE},
        {B("caf\xc3\xa9 cr\xc3\xa8me"), "text", FALSE},
        {B("caf\xc3"), "text", FALSE},               /* cut inside its last character */
        {B("na\xc3\xafve \xe2\x82"), "text", FALSE}, /* three bytes cut after two */
        {B("caf\xc3 cr\xc3\xa8me and more"), NULL, FALSE},
        {B("ab\xf0\x9f\x98"), "text", FALSE}, /* four bytes cut after three */
        {B("ab\xe2\x82 x"), NULL, FALSE},     /* too far from the end to be cut */
        {B("\xe9t\xe9 tout"), NULL, FALSE},
        {B("ab\x01"), NULL, FALSE},
        {B("\x1b[2J"), NULL, FALSE},
        {B("ab\x7f"), "text", FALSE},
        {B(""), NULL, FALSE},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        gboolean conclusive = !cases[i].conclusive;
        const char *kind =
            dq_file_kind_name((const uint8_t *)cases[i].head, cases[i].len, &conclusive);
        if (g_strcmp0(kind, cases[i].kind) != 0 || conclusive != cases[i].conclusive)
            g_error("case %zu (%zu bytes): %s (%s), not %s (%s)", i, cases[i].len,
                    kind ? kind : "NULL", conclusive ? "conclusive" : "not conclusive",
                    cases[i].kind ? cases[i].kind : "NULL",
                    cases[i].conclusive ? "conclusive" : "not conclusive");
    }
}

/* Which errnos of a page's open or read are worth another attempt (README, "The queue"): the
 * system's failures are, what stays so until a person acts (the file gone, not allowed) is not,
 * nor an errno nobody listed. */
static void test_errno_transient(void) {
    const int transient[] = {EIO,    ESTALE, ETIMEDOUT, EREMOTEIO, ENOLINK, ECONNRESET, EINTR,
                             EAGAIN, EBUSY,  ENOLCK,    ENOMEM,    ENOBUFS, EMFILE,     ENFILE};
    const int lasting[] = {0,      ENOENT, ENOTDIR, EISDIR, ELOOP, ENAMETOOLONG,
                           EACCES, EPERM,  EINVAL,  EFBIG,  EROFS, 4242};
    for (size_t i = 0; i < G_N_ELEMENTS(transient); i++)
        g_assert_true(dq_errno_transient(transient[i]));
    for (size_t i = 0; i < G_N_ELEMENTS(lasting); i++)
        g_assert_false(dq_errno_transient(lasting[i]));
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/common/text/utf8-escape-invalid", test_utf8_escape_invalid);
    g_test_add_func("/common/text/print-line", test_print_line);
    g_test_add_func("/common/error/errno-transient", test_errno_transient);
    g_test_add_func("/common/mapped_file/reads_bytes", test_mapped_file_reads_bytes);
    g_test_add_func("/common/mapped_file/tiny", test_mapped_file_tiny);
    g_test_add_func("/common/mapped_file/missing_names_path", test_mapped_file_missing_names_path);
    g_test_add_func("/common/mapped_file/directory_rejected", test_mapped_file_directory_rejected);
    g_test_add_func("/common/mapped_file/populate_release", test_mapped_file_populate_release);
    g_test_add_func("/common/mapped_file/fifo_rejected", test_mapped_file_fifo_rejected);
    g_test_add_func("/common/json/depth", test_json_depth);
    g_test_add_func("/common/json/empty_and_duplicates", test_json_empty_and_duplicates);
    g_test_add_func("/common/json/nul_escape", test_json_nul_escape);
    g_test_add_func("/common/json/lone_surrogate", test_json_lone_surrogate);
    g_test_add_func("/common/json/not_json", test_json_not_json);
    g_test_add_func("/common/json/read_regular", test_read_regular);
    g_test_add_func("/common/json/numbers", test_json_numbers);
    g_test_add_func("/common/json/number-edges", test_json_number_edges);
    g_test_add_func("/common/error/prefix", test_error_prefix);
    g_test_add_func("/common/resources/prompt_and_schema", test_resources_hold_prompt_and_schema);
    g_test_add_func("/common/text/show-edges", test_text_show_edges);
    g_test_add_func("/common/file-kind", test_file_kind);
    g_test_add_func("/common/clock", test_clock);
    return g_test_run();
}
