/* Tokenizer tests: the fixtures' tokenizer goldens (both SmolVLM tokenizers), a corpus of ids
 * made with the HF tokenizers library (tests/fixtures/tokenizer_corpus.json, written by
 * scripts/make-tokenizer-corpus.py), invalid UTF-8, the streaming decoder, and load errors. */
#include "dq_error.h"
#include "testutil.h"
#include "tokenizer.h"

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers */

static JsonNode *load_json(const char *path) {
    JsonParser *p = json_parser_new();
    GError *err = NULL;
    if (!json_parser_load_from_file(p, path, &err))
        g_error("%s: %s", path, err->message);
    JsonNode *root = json_node_copy(json_parser_get_root(p));
    g_object_unref(p);
    return root;
}

static int32_t *json_ids(JsonArray *a, size_t *n) {
    *n = json_array_get_length(a);
    int32_t *ids = g_new(int32_t, *n + 1);
    for (size_t i = 0; i < *n; i++)
        ids[i] = (int32_t)json_array_get_int_element(a, (guint)i);
    return ids;
}

static void assert_ids_equal(const char *what, const int32_t *got, size_t n_got,
                             const int32_t *want, size_t n_want) {
    size_t i = 0;
    while (i < n_got && i < n_want && got[i] == want[i])
        i++;
    if (i == n_got && i == n_want)
        return;
    g_error("%s: ids differ at %zu (got %zu ids, want %zu): got %d, want %d", what, i, n_got,
            n_want, i < n_got ? got[i] : -1, i < n_want ? want[i] : -1);
}

/* tokenizer.json of a model folder in ../shared/models, or NULL (test skipped) when absent. */
static DqTokenizer *shared_tokenizer(const char *rel) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared is absent: the tokenizer.json files live in ../shared/models");
        return NULL;
    }
    char *path = g_build_filename(shared, rel, NULL);
    GError *err = NULL;
    DqTokenizer *tok = tokenizer_load(path, &err);
    dq_assert_no_error(err);
    g_free(path);
    return tok;
}

static char *fixture_path(const char *rel) {
    const char *shared = dq_test_shared_dir();
    if (shared != NULL)
        return g_build_filename(shared, "fixtures", rel, NULL);
    g_test_message("../shared absent: using tests/fixtures/%s", rel);
    return g_build_filename(dq_test_source_dir(), "tests", "fixtures", rel, NULL);
}

static char *stream_decode_all(const DqTokenizer *tok, const int32_t *ids, size_t n,
                               gboolean skip) {
    DqDecodeStream *s = tokenizer_stream_new(tok, skip);
    GString *out = g_string_new(NULL);
    for (size_t i = 0; i < n; i++) {
        char *piece = tokenizer_stream_push(s, ids[i], NULL);
        g_assert_true(g_utf8_validate(piece, -1, NULL));
        g_string_append(out, piece);
        g_free(piece);
    }
    char *rest = tokenizer_stream_flush(s, NULL);
    g_string_append(out, rest);
    g_free(rest);
    tokenizer_stream_free(s);
    return g_string_free(out, FALSE);
}

/* ---- the fixtures' tokenizer goldens */

static const char *const FIXTURE_TOKENIZERS[] = {"tiny-smolvlm-b512", "tiny-smolvlm-a384-v1tok"};

static void test_fixture_cases(void) {
    char *path = fixture_path("tokenizer/tokenizer_cases.json");
    JsonNode *root = load_json(path);
    JsonObject *doc = json_node_get_object(root);
    for (size_t t = 0; t < G_N_ELEMENTS(FIXTURE_TOKENIZERS); t++) {
        const char *name = FIXTURE_TOKENIZERS[t];
        char *rel = g_build_filename("models", name, "tokenizer.json", NULL);
        DqTokenizer *tok = shared_tokenizer(rel);
        g_free(rel);
        if (tok == NULL)
            break;
        JsonArray *cases = json_object_get_array_member(doc, "cases");
        guint nc = json_array_get_length(cases);
        g_assert_cmpuint(nc, >, 40);
        for (guint i = 0; i < nc; i++) {
            JsonObject *c = json_array_get_object_element(cases, i);
            const char *text = json_object_get_string_member(c, "text");
            JsonObject *g = json_object_get_object_member(c, name);
            size_t n_want, n_got;
            int32_t *want = json_ids(json_object_get_array_member(g, "ids"), &n_want);
            GError *err = NULL;
            int32_t *got = tokenizer_encode(tok, text, -1, &n_got, &err);
            dq_assert_no_error(err);
            char *what = g_strdup_printf("%s case %u %s", name, i, text);
            assert_ids_equal(what, got, n_got, want, n_want);
            JsonArray *tokens = json_object_get_array_member(g, "tokens");
            for (size_t k = 0; k < n_got; k++)
                g_assert_cmpstr(tokenizer_id_to_token(tok, got[k]), ==,
                                json_array_get_string_element(tokens, (guint)k));
            char *d = tokenizer_decode(tok, got, n_got, FALSE, NULL);
            g_assert_cmpstr(d, ==, json_object_get_string_member(g, "decode"));
            g_free(d);
            d = tokenizer_decode(tok, got, n_got, TRUE, NULL);
            g_assert_cmpstr(d, ==, json_object_get_string_member(g, "decode_skip_special"));
            g_free(d);
            d = stream_decode_all(tok, got, n_got, FALSE);
            g_assert_cmpstr(d, ==, json_object_get_string_member(g, "decode"));
            g_free(d);
            g_free(what);
            g_free(want);
            g_free(got);
        }
        JsonArray *dec = json_object_get_array_member(doc, "decode_only");
        for (guint i = 0; i < json_array_get_length(dec); i++) {
            JsonObject *c = json_array_get_object_element(dec, i);
            if (strcmp(json_object_get_string_member(c, "tokenizer"), name) != 0)
                continue;
            size_t n;
            int32_t *ids = json_ids(json_object_get_array_member(c, "ids"), &n);
            if (json_object_has_member(c, "per_token_decode")) {
                JsonArray *per = json_object_get_array_member(c, "per_token_decode");
                for (size_t k = 0; k < n; k++) {
                    char *d = tokenizer_decode(tok, ids + k, 1, FALSE, NULL);
                    g_assert_cmpstr(d, ==, json_array_get_string_element(per, (guint)k));
                    g_free(d);
                }
                const char *joint = json_object_get_string_member(c, "joint_decode");
                char *d = tokenizer_decode(tok, ids, n, FALSE, NULL);
                g_assert_cmpstr(d, ==, joint);
                g_free(d);
                /* the streaming decoder prints no U+FFFD for characters split over tokens */
                d = stream_decode_all(tok, ids, n, FALSE);
                g_assert_cmpstr(d, ==, joint);
                g_free(d);
            } else {
                char *d = tokenizer_decode(tok, ids, n, FALSE, NULL);
                g_assert_cmpstr(d, ==, json_object_get_string_member(c, "decode"));
                g_free(d);
                d = tokenizer_decode(tok, ids, n, TRUE, NULL);
                g_assert_cmpstr(d, ==, json_object_get_string_member(c, "decode_skip_special"));
                g_free(d);
                d = stream_decode_all(tok, ids, n, TRUE);
                g_assert_cmpstr(d, ==, json_object_get_string_member(c, "decode_skip_special"));
                g_free(d);
            }
            g_free(ids);
        }
        /* special ids */
        JsonObject *sp =
            json_object_get_object_member(json_object_get_object_member(doc, "special_ids"), name);
        const DqSpecialIds *ids = tokenizer_special_ids(tok);
        g_assert_cmpint(ids->image, ==, json_object_get_int_member(sp, "image"));
        g_assert_cmpint(ids->fake_token_around_image, ==,
                        json_object_get_int_member(sp, "fake_token_around_image"));
        g_assert_cmpint(ids->end_of_utterance, ==,
                        json_object_get_int_member(sp, "end_of_utterance"));
        g_assert_cmpint(ids->im_start, ==, json_object_get_int_member(sp, "bos"));
        g_assert_cmpint(ids->im_end, ==, json_object_get_int_member(sp, "pad"));
        g_assert_cmpint(ids->endoftext, ==, json_object_get_int_member(sp, "unk"));
        g_assert_cmpint(tokenizer_vocab_size(tok), ==,
                        json_object_get_int_member(sp, "vocab_size_with_added"));
        /* <global-img> and <row_r_col_c>: added tokens in 256M only (pitfall 22); the golden
         * says 0 (unk) where it is not a token */
        gint64 gimg = json_object_get_int_member(sp, "global_img");
        if (gimg > 0) {
            g_assert_cmpint(ids->global_img, ==, gimg);
            g_assert_cmpint(tokenizer_row_col_id(tok, 1, 1), ==, 49153);
            g_assert_cmpint(tokenizer_row_col_id(tok, 6, 6), >, 0);
            g_assert_cmpint(tokenizer_row_col_id(tok, 7, 7), ==, -1);
        } else {
            g_assert_cmpint(ids->global_img, ==, -1);
            g_assert_cmpint(tokenizer_row_col_id(tok, 1, 1), ==, -1);
        }
        g_assert_cmpint(tokenizer_token_to_id(tok, "<image>"), ==, ids->image);
        g_assert_cmpint(tokenizer_token_to_id(tok, "Ġworld"), ==, 905);
        g_assert_cmpint(tokenizer_token_to_id(tok, "no such token"), ==, -1);
        g_assert_null(tokenizer_id_to_token(tok, -1));
        g_assert_null(tokenizer_id_to_token(tok, 1 << 30));
        g_assert_true(tokenizer_is_special(tok, ids->image));
        g_assert_false(tokenizer_is_special(tok, 905));
        tokenizer_free(tok);
    }
    json_node_unref(root);
    g_free(path);
}

/* ---- the HF corpus */

static void test_corpus(void) {
    char *path =
        g_build_filename(dq_test_source_dir(), "tests", "fixtures", "tokenizer_corpus.json", NULL);
    JsonNode *root = load_json(path);
    JsonObject *doc = json_node_get_object(root);
    JsonObject *toks = json_object_get_object_member(doc, "tokenizers");
    GList *names = json_object_get_members(toks);
    g_assert_cmpuint(g_list_length(names), ==, 2);
    for (GList *l = names; l; l = l->next) {
        const char *name = l->data;
        DqTokenizer *tok = shared_tokenizer(json_object_get_string_member(toks, name));
        if (tok == NULL)
            break;
        JsonArray *cases = json_object_get_array_member(doc, "cases");
        guint nc = json_array_get_length(cases);
        g_assert_cmpuint(nc, >, 300);
        for (guint i = 0; i < nc; i++) {
            JsonObject *c = json_array_get_object_element(cases, i);
            const char *text = json_object_get_string_member(c, "text");
            size_t n_want, n_got;
            int32_t *want = json_ids(
                json_object_get_array_member(json_object_get_object_member(c, "ids"), name),
                &n_want);
            GError *err = NULL;
            int32_t *got = tokenizer_encode(tok, text, -1, &n_got, &err);
            dq_assert_no_error(err);
            char *what = g_strdup_printf("%s corpus %u '%s'", name, i, text);
            assert_ids_equal(what, got, n_got, want, n_want);
            /* byte-level BPE is lossless on valid UTF-8 */
            char *d = tokenizer_decode(tok, got, n_got, FALSE, NULL);
            g_assert_cmpstr(d, ==, text);
            g_free(d);
            d = stream_decode_all(tok, got, n_got, FALSE);
            g_assert_cmpstr(d, ==, text);
            g_free(d);
            g_free(what);
            g_free(want);
            g_free(got);
        }
        /* invalid UTF-8: every maximal invalid subsequence becomes U+FFFD, then HF's ids */
        JsonArray *inv = json_object_get_array_member(doc, "invalid_utf8");
        g_assert_cmpuint(json_array_get_length(inv), >=, 10);
        for (guint i = 0; i < json_array_get_length(inv); i++) {
            JsonObject *c = json_array_get_object_element(inv, i);
            const char *hex = json_object_get_string_member(c, "hex");
            size_t nb = strlen(hex) / 2;
            char *bytes = g_malloc(nb + 1);
            for (size_t k = 0; k < nb; k++)
                bytes[k] = (char)((g_ascii_xdigit_value(hex[2 * k]) << 4) |
                                  g_ascii_xdigit_value(hex[2 * k + 1]));
            size_t lossy_len;
            char *lossy = tokenizer_utf8_lossy(bytes, nb, &lossy_len);
            g_assert_cmpstr(lossy, ==, json_object_get_string_member(c, "replaced"));
            size_t n_want, n_got;
            int32_t *want = json_ids(
                json_object_get_array_member(json_object_get_object_member(c, "ids"), name),
                &n_want);
            GError *err = NULL;
            int32_t *got = tokenizer_encode(tok, bytes, (gssize)nb, &n_got, &err);
            dq_assert_no_error(err);
            char *what = g_strdup_printf("%s invalid utf-8 %s", name, hex);
            assert_ids_equal(what, got, n_got, want, n_want);
            g_free(what);
            g_free(want);
            g_free(got);
            g_free(lossy);
            g_free(bytes);
        }
        /* HF's decode of id lists (split characters, special ids, random ids) */
        JsonArray *dec = json_object_get_array_member(doc, "decode_cases");
        guint checked = 0;
        for (guint i = 0; i < json_array_get_length(dec); i++) {
            JsonObject *c = json_array_get_object_element(dec, i);
            if (strcmp(json_object_get_string_member(c, "tokenizer"), name) != 0)
                continue;
            size_t n;
            int32_t *ids = json_ids(json_object_get_array_member(c, "ids"), &n);
            char *d = tokenizer_decode(tok, ids, n, FALSE, NULL);
            g_assert_cmpstr(d, ==, json_object_get_string_member(c, "decode"));
            g_free(d);
            d = tokenizer_decode(tok, ids, n, TRUE, NULL);
            g_assert_cmpstr(d, ==, json_object_get_string_member(c, "decode_skip_special"));
            g_free(d);
            d = stream_decode_all(tok, ids, n, TRUE);
            g_assert_cmpstr(d, ==, json_object_get_string_member(c, "decode_skip_special"));
            g_free(d);
            g_free(ids);
            checked++;
        }
        g_assert_cmpuint(checked, >=, 30);
        tokenizer_free(tok);
    }
    g_list_free(names);
    json_node_unref(root);
    g_free(path);
}

/* ---- behaviour that needs no model files */

static void test_utf8_lossy(void) {
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"abc", 3, "abc"},
        {"\xff", 1, "\xEF\xBF\xBD"},
        {"\xf0\x9f\x98", 3, "\xEF\xBF\xBD"}, /* one truncated character: one U+FFFD */
        {"\xed\xa0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate: 3 */
        {"\xc0\xaf", 2, "\xEF\xBF\xBD\xEF\xBF\xBD"},                 /* overlong */
        {"a\xe2\x82(", 4, "a\xEF\xBF\xBD("},
        {"\xc3\xa9", 2, "\xc3\xa9"},
        {"x\0y", 3, "x"}, /* embedded NUL kept (the C string shows only "x") */
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        size_t n;
        char *s = tokenizer_utf8_lossy(cases[i].in, cases[i].len, &n);
        g_assert_cmpstr(s, ==, cases[i].out);
        g_assert_true(g_utf8_validate(s, -1, NULL));
        g_free(s);
    }
}

/* The byte-level token "Ā" decodes to a NUL byte, as transformers' text holds "\x00": the text
 * answers are stored and printed as carries it as U+FFFD, with what follows it. */
static void test_decode_text_nul(void) {
    DqTokenizer *tok = shared_tokenizer("models/SmolVLM-256M-Instruct/tokenizer.json");
    if (tok == NULL)
        return;
    int32_t nul = tokenizer_token_to_id(tok, "\xC4\x80"); /* Ā */
    g_assert_cmpint(nul, >=, 0);
    GError *err = NULL;
    size_t n = 0;
    int32_t *ab = tokenizer_encode(tok, "Total 42", -1, &n, &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(n, >=, 2);
    int32_t ids[] = {ab[0], nul, ab[n - 1], tokenizer_added_token_id(tok, "<end_of_utterance>")};
    size_t len = 0;
    char *raw = tokenizer_decode(tok, ids, G_N_ELEMENTS(ids), TRUE, &len);
    g_assert_cmpuint(len, ==, strlen(raw) + 1 + strlen(raw + strlen(raw) + 1));
    g_assert_cmpint(raw[strlen(raw)], ==, '\0');
    char *text = tokenizer_decode_text(tok, ids, G_N_ELEMENTS(ids));
    char *want = g_strconcat(raw, "\xEF\xBF\xBD", raw + strlen(raw) + 1, NULL);
    g_assert_cmpstr(text, ==, want);
    g_assert_true(g_str_has_suffix(text, "\xEF\xBF\xBD"
                                         "2")); /* "Total", U+FFFD, "2" */
    g_free(want), g_free(text), g_free(raw), g_free(ab);
    /* no NUL: the text as tokenizer_decode gives it */
    text = tokenizer_decode_text(tok, ids + 2, 2);
    raw = tokenizer_decode(tok, ids + 2, 2, TRUE, NULL);
    g_assert_cmpstr(text, ==, raw);
    g_free(text), g_free(raw);
    tokenizer_free(tok);
}

static char *write_tmp(const char *dir, const char *name, const char *text) {
    char *path = g_build_filename(dir, name, NULL);
    g_assert_true(g_file_set_contents(path, text, -1, NULL));
    return path;
}

/* A minimal byte-level tokenizer.json; merges in either format. */
static const char MINI_HEAD[] =
    "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,"
    "\"added_tokens\":[{\"id\":8,\"content\":\"<x>\",\"single_word\":false,\"lstrip\":false,"
    "\"rstrip\":false,\"normalized\":false,\"special\":true},"
    "{\"id\":9,\"content\":\"<xy>\",\"single_word\":false,\"lstrip\":false,"
    "\"rstrip\":false,\"normalized\":false,\"special\":false}],"
    "\"normalizer\":%s,\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
    "{\"type\":\"Digits\",\"individual_digits\":true},{\"type\":\"ByteLevel\","
    "\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}]},"
    "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,"
    "\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"\xc4\xa0\":3,\"1\":4,\"<\":5,\"x\":6,\">\":7},"
    "\"merges\":%s}}";

static void test_mini_tokenizers(void) {
    char *dir = dq_test_tmpdir();
    const char *merges[] = {"[\"a b\"]", "[[\"a\",\"b\"]]"};
    for (size_t i = 0; i < G_N_ELEMENTS(merges); i++) {
        char *json = g_strdup_printf(MINI_HEAD, "null", merges[i]);
        char *path = write_tmp(dir, "tokenizer.json", json);
        GError *err = NULL;
        DqTokenizer *tok = tokenizer_load(path, &err);
        dq_assert_no_error(err);
        size_t n;
        /* "ab ab<xy>11<x>" -> ab, Ġ ab, <xy>, 1, 1, <x>; "<xy>" is longer than "<x>"... */
        int32_t *ids = tokenizer_encode(tok, "ab ab<xy>11<x>", -1, &n, &err);
        dq_assert_no_error(err);
        const int32_t want[] = {2, 3, 2, 9, 4, 4, 8};
        assert_ids_equal("mini", ids, n, want, G_N_ELEMENTS(want));
        char *d = tokenizer_decode(tok, ids, n, TRUE, NULL);
        g_assert_cmpstr(d, ==, "ab ab<xy>11"); /* <xy> is added but not special: kept */
        g_free(d);
        g_free(ids);
        /* leftmost-longest: "<x" is no token, "<xy>" wins over "<x>" at the same start */
        ids = tokenizer_encode(tok, "<x<xy><x>", -1, &n, &err);
        const int32_t want2[] = {5, 6, 9, 8};
        assert_ids_equal("mini leftmost-longest", ids, n, want2, G_N_ELEMENTS(want2));
        g_free(ids);
        /* empty input */
        ids = tokenizer_encode(tok, "", 0, &n, &err);
        g_assert_nonnull(ids);
        g_assert_cmpuint(n, ==, 0);
        g_free(ids);
        tokenizer_free(tok);
        g_free(path);
        g_free(json);
    }
    g_free(dir);
}

/* ByteLevel add_prefix_space and BPE ignore_merges, which the SmolVLM tokenizers leave off:
 * expected ids and texts from tokenizers 0.23.3 (Tokenizer.from_str) on this same JSON. */
static const char OPTIONS_JSON[] =
    "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[{\"id\":6,"
    "\"content\":\"<x>\",\"single_word\":false,"
    "\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}],"
    "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":%s,"
    "\"trim_offsets\":true,\"use_regex\":%s},\"post_processor\":null,"
    "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"dropout\":null,"
    "\"unk_token\":null,\"ignore_merges\":%s,"
    "\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"\xc4\xa0\":3,\"ba\":4,\"\xc3\x83\":5},\"merges\":[["
    "\"a\",\"b\"]]}}";

static void test_byte_level_options(void) {
    static const struct {
        const char *prefix_space, *ignore_merges, *regex, *text;
        int32_t want[4];
        size_t n;
    } cases[] = {
        {"true", "false", "true", "ab ab", {3, 2, 3, 2}, 4},
        {"true", "false", "true", "ba", {3, 1, 0}, 3},
        {"true", "false", "true", " ab", {3, 2}, 2},
        /* no prefix space for the empty rest after an added token */
        {"true", "false", "true", "ab<x>", {3, 2, 6}, 3},
        {"false", "true", "true", "ba", {4}, 1}, /* "ba" is in the vocabulary, no merge reaches it
                                                  */
        {"false", "true", "true", "ab ab", {2, 3, 2}, 3},
        {"false", "false", "true", "ba", {1, 0}, 2},
        {"false", "false", "false", "ab ab", {2, 3, 2}, 3}, /* use_regex false: one word */
    };
    char *dir = dq_test_tmpdir();
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *json = g_strdup_printf(OPTIONS_JSON, cases[i].prefix_space, cases[i].regex,
                                     cases[i].ignore_merges);
        char *path = write_tmp(dir, "tokenizer.json", json);
        GError *err = NULL;
        DqTokenizer *tok = tokenizer_load(path, &err);
        dq_assert_no_error(err);
        size_t n;
        int32_t *ids = tokenizer_encode(tok, cases[i].text, -1, &n, &err);
        dq_assert_no_error(err);
        assert_ids_equal(cases[i].text, ids, n, cases[i].want, cases[i].n);
        g_free(ids);
        /* out of range (7 ids) -> None in tokenizers; "\xc3\x83" is the lone byte 0xC3, so
         * decode([2, 5]) is "ab\uFFFD": the stream holds the byte back until the flush. */
        g_assert_null(tokenizer_id_to_token(tok, 7));
        DqDecodeStream *st = tokenizer_stream_new(tok, TRUE);
        char *piece = tokenizer_stream_push(st, 2, NULL);
        g_assert_cmpstr(piece, ==, "ab");
        g_free(piece);
        piece = tokenizer_stream_push(st, 5, NULL);
        g_assert_cmpstr(piece, ==, "");
        g_free(piece);
        piece = tokenizer_stream_flush(st, NULL);
        g_assert_cmpstr(piece, ==, "\xEF\xBF\xBD");
        g_free(piece);
        tokenizer_stream_free(st);
        tokenizer_free(tok);
        g_free(path);
        g_free(json);
    }
    g_free(dir);
}

static void expect_load_error(const char *dir, const char *json, int code, const char *needle) {
    char *path = write_tmp(dir, "tokenizer.json", json);
    GError *err = NULL;
    DqTokenizer *tok = tokenizer_load(path, &err);
    g_assert_null(tok);
    g_assert_error(err, DQ_ERROR, code);
    g_assert_nonnull(strstr(err->message, path));
    if (strstr(err->message, needle) == NULL)
        g_error("error '%s' does not mention '%s'", err->message, needle);
    g_error_free(err);
    g_free(path);
}

static void test_load_errors(void) {
    char *dir = dq_test_tmpdir();
    GError *err = NULL;
    char *missing = g_build_filename(dir, "nope.json", NULL);
    g_assert_null(tokenizer_load(missing, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    g_clear_error(&err);
    g_free(missing);

    expect_load_error(dir, "{\"model\": [", DQ_ERR_FORMAT, "");
    expect_load_error(dir, "[1,2]", DQ_ERR_FORMAT, "not a JSON object");
    char *j = g_strdup_printf(MINI_HEAD, "{\"type\":\"NFC\"}", "[]");
    expect_load_error(dir, j, DQ_ERR_UNSUPPORTED, "normalizer");
    g_free(j);
    j = g_strdup_printf(MINI_HEAD, "null", "[\"a q\"]");
    expect_load_error(dir, j, DQ_ERR_FORMAT, "merge 0");
    g_free(j);
    j = g_strdup_printf(MINI_HEAD, "null", "[\"abc\"]");
    expect_load_error(dir, j, DQ_ERR_FORMAT, "merge 0");
    g_free(j);
    expect_load_error(dir,
                      "{\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Whitespace\"},"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
                      DQ_ERR_UNSUPPORTED, "Whitespace");
    expect_load_error(dir,
                      "{\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
                      "\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}",
                      DQ_ERR_UNSUPPORTED, "WordPiece");
    expect_load_error(dir,
                      "{\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]}}",
                      DQ_ERR_FORMAT, "out of range");
    expect_load_error(dir,
                      "{\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
                      "\"post_processor\":{\"type\":\"TemplateProcessing\"},"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
                      DQ_ERR_UNSUPPORTED, "TemplateProcessing");
    g_free(dir);
}

/* The real tokenizer.json with `from` replaced by `to` (from's first occurrence; with `to_end`,
 * what follows it up to the first `to_end` too), loaded: must fail saying `needle`. tokenizers
 * loads each of these without an error and gives other ids than the file says, or garbage. */
static void expect_damaged(const char *dir, const char *from, const char *to_end, const char *to,
                           const char *needle) {
    char *src = g_build_filename(dq_test_shared_dir(), "models", "tiny-smolvlm-b512",
                                 "tokenizer.json", NULL);
    char *text = dq_test_read_file(src, NULL);
    char *at = strstr(text, from);
    g_assert_nonnull(at);
    char *end = to_end != NULL ? strstr(at + strlen(from), to_end) : at + strlen(from);
    g_assert_nonnull(end);
    char *json = g_strdup_printf("%.*s%s%s", (int)(at - text), text, to, end);
    expect_load_error(dir, json, DQ_ERR_FORMAT, needle);
    g_free(json);
    g_free(text);
    g_free(src);
}

static void test_damaged_real(void) {
    if (dq_test_shared_dir() == NULL) {
        g_test_skip("../shared is absent: the tokenizer.json files live in ../shared/models");
        return;
    }
    char *dir = dq_test_tmpdir();
    /* tokenizers decodes " hello world" as " world world" */
    expect_damaged(dir, "\"\xc4\xa0world\":905,", NULL, "\"\xc4\xa0world\":33662,",
                   "model.vocab gives id 33662 to both '\xc4\xa0");
    /* tokenizers numbers added tokens itself: <end_of_utterance> stays 49279 there */
    expect_damaged(dir, "{\"id\":49279,", NULL, "{\"id\":99999,",
                   ": added token '<end_of_utterance>' has id 99999, but tokenizers gives it 49279 "
                   "(added tokens not in model.vocab take the ids from its size, 49152, in the "
                   "order listed");
    /* one entry dropped: every later one moves down (<image> 49189 in Python, not config.json's
     * image_token_id 49190) */
    expect_damaged(dir, "{\"id\":49189,\"content\":\"<fake_token_around_image>\"", "{\"id\":49190,",
                   "", ": added token '<image>' has id 49190, but tokenizers gives it 49189");
    /* no merges: tokenizers encodes every character on its own */
    expect_damaged(dir, "\"merges\":[", "]}}", "\"merges\":[",
                   ": model.merges is empty, so no text gives the vocabulary's tokens of several "
                   "characters");
    g_free(dir);
}

/* Invalid UTF-8 on the real tokenizer: never a crash, always the documented replacement. */
static void test_invalid_utf8_real(void) {
    DqTokenizer *tok = shared_tokenizer("models/tiny-smolvlm-b512/tokenizer.json");
    if (tok == NULL)
        return;
    GRand *rng = g_rand_new_with_seed(7);
    for (int i = 0; i < 2000; i++) {
        guint8 buf[64];
        int n = g_rand_int_range(rng, 0, sizeof buf);
        for (int k = 0; k < n; k++)
            buf[k] = (guint8)g_rand_int_range(rng, 0, 256);
        size_t n1, n2, ll;
        GError *err = NULL;
        int32_t *a = tokenizer_encode(tok, (const char *)buf, n, &n1, &err);
        dq_assert_no_error(err);
        char *lossy = tokenizer_utf8_lossy((const char *)buf, (size_t)n, &ll);
        int32_t *b = tokenizer_encode(tok, lossy, (gssize)ll, &n2, &err);
        dq_assert_no_error(err);
        assert_ids_equal("random bytes", a, n1, b, n2);
        /* no exact round trip: bytes missing from the vocab (0x13, 0xF2, ...) are dropped,
         * as HF drops them; the corpus pins that against HF */
        char *d = tokenizer_decode(tok, a, n1, FALSE, NULL);
        g_assert_true(g_utf8_validate(d, -1, NULL));
        g_free(d);
        g_free(lossy);
        g_free(a);
        g_free(b);
    }
    g_rand_free(rng);
    tokenizer_free(tok);
}

/* The parsed-tokenizer cache: a fresh load writes it, the next load reads it, a damaged cache
 * file is ignored, and all three tokenizers behave the same as one parsed from JSON. */
static void test_cache(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared is absent: the tokenizer.json files live in ../shared/models");
        return;
    }
    char *path = g_build_filename(shared, "models", "tiny-smolvlm-b512", "tokenizer.json", NULL);
    char *dir = dq_test_tmpdir();
    const char *texts[] = {"Hello world 2024 <image><row_1_col_2> caf\xc3\xa9 \xe6\x97\xa5",
                           "<|im_start|>User:<image>What?<end_of_utterance>\nAssistant:",
                           "  spaces\n\n\ttabs \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd"};
    GError *err = NULL;
    g_setenv("DOCQA_CACHE_DIR", "off", TRUE);
    DqTokenizer *ref = tokenizer_load(path, &err);
    dq_assert_no_error(err);
    g_setenv("DOCQA_CACHE_DIR", dir, TRUE);
    for (int round = 0; round < 4; round++) {
        GDir *d = g_dir_open(dir, 0, NULL);
        const char *name = g_dir_read_name(d);
        char *cache = name ? g_build_filename(dir, name, NULL) : NULL;
        g_dir_close(d);
        g_assert_true((round == 0) == (cache == NULL));
        if (round == 2) { /* truncated */
            g_assert_cmpint(truncate(cache, 1000), ==, 0);
        } else if (round == 3) { /* a vocab id pointing far out of range */
            char *data;
            size_t len;
            g_assert_true(g_file_get_contents(cache, &data, &len, NULL));
            memset(data + 60, 0xff, 4); /* magic 8, byte order 4, SHA-256 32, flags 8, counts 8 */
            g_assert_true(g_file_set_contents(cache, data, (gssize)len, NULL));
            g_free(data);
        }
        DqTokenizer *tok = tokenizer_load(path, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(tokenizer_vocab_size(tok), ==, tokenizer_vocab_size(ref));
        g_assert_cmpmem(tokenizer_special_ids(tok), sizeof(DqSpecialIds),
                        tokenizer_special_ids(ref), sizeof(DqSpecialIds));
        for (size_t i = 0; i < G_N_ELEMENTS(texts); i++) {
            size_t n1, n2;
            int32_t *a = tokenizer_encode(tok, texts[i], -1, &n1, &err);
            int32_t *b = tokenizer_encode(ref, texts[i], -1, &n2, &err);
            assert_ids_equal("cache", a, n1, b, n2);
            char *da = tokenizer_decode(tok, a, n1, TRUE, NULL);
            char *db = tokenizer_decode(ref, b, n2, TRUE, NULL);
            g_assert_cmpstr(da, ==, db);
            g_free(da);
            g_free(db);
            g_free(a);
            g_free(b);
        }
        for (int32_t id = 0; id < tokenizer_vocab_size(ref); id += 97)
            g_assert_cmpstr(tokenizer_id_to_token(tok, id), ==, tokenizer_id_to_token(ref, id));
        tokenizer_free(tok);
        g_free(cache);
    }
    tokenizer_free(ref);
    g_free(dir);
    g_free(path);
}

/* Replaces the `skip`-th 8-letter vocabulary token's bytes in the cache file at `cache` with the
 * 8 bytes `with`; returns the id changed. */
static int32_t plant_token_as(const DqTokenizer *ref, const char *cache, int skip,
                              const char *with) {
    char *data;
    size_t len;
    g_assert_true(g_file_get_contents(cache, &data, &len, NULL));
    for (int32_t id = 0; id < tokenizer_vocab_size(ref); id++) {
        const char *t = tokenizer_id_to_token(ref, id);
        if (t == NULL || strlen(t) != 8 || strspn(t, "abcdefghijklmnopqrstuvwxyz") != 8)
            continue;
        char needle[12] = {8, 0, 0, 0};
        memcpy(needle + 4, t, 8);
        char *at = memmem(data, len, needle, sizeof needle);
        if (at == NULL || skip-- > 0)
            continue;
        memcpy(at + 4, with, 8);
        g_assert_true(g_file_set_contents(cache, data, (gssize)len, NULL));
        g_assert_cmpint(chmod(cache, 0600), ==, 0);
        g_free(data);
        return id;
    }
    g_assert_not_reached();
}

/* Replaces one 8-letter vocabulary token in the cache with "QZQZQZQZ" (a well-formed file, as
 * someone who may write it would plant); returns the id changed. */
static int32_t plant_token(const DqTokenizer *ref, const char *cache) {
    return plant_token_as(ref, cache, 0, "QZQZQZQZ");
}

/* Loads `json` and says whether the token at `id` is the planted one. */
static gboolean loads_planted(const char *json, int32_t id) {
    GError *err = NULL;
    DqTokenizer *tok = tokenizer_load(json, &err);
    dq_assert_no_error(err);
    gboolean planted = g_strcmp0(tokenizer_id_to_token(tok, id), "QZQZQZQZ") == 0;
    tokenizer_free(tok);
    return planted;
}

/* The cache decides every token, so it is used only where no one else may write it: a planted
 * file is taken in a private folder (the control: the planting works), and ignored when the
 * folder, a parent of it or the file may be written by others, when the file is another user's,
 * or when its stored SHA-256 is not the JSON's (a file under another tokenizer's name). */
static void test_cache_trust(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared is absent: the tokenizer.json files live in ../shared/models");
        return;
    }
    char *path = g_build_filename(shared, "models", "tiny-smolvlm-b512", "tokenizer.json", NULL);
    char *parent = dq_test_tmpdir();
    char *dir = g_build_filename(parent, "cache", NULL);
    g_setenv("DOCQA_CACHE_DIR", dir, TRUE);
    GError *err = NULL;
    DqTokenizer *ref = tokenizer_load(path, &err); /* makes the folder (0700) and the file */
    dq_assert_no_error(err);
    struct stat st;
    g_assert_cmpint(stat(dir, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 0777, ==, 0700);
    char *json;
    size_t len;
    g_assert_true(g_file_get_contents(path, &json, &len, NULL));
    char *sum = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)json, len);
    char *name = g_strdup_printf("tokenizer-%s.bin", sum);
    char *cache = g_build_filename(dir, name, NULL);
    g_assert_cmpint(stat(cache, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 0777, ==, 0600);
    int32_t id = plant_token(ref, cache);
    g_assert_true(loads_planted(path, id));

    g_assert_cmpint(chmod(dir, 0777), ==, 0); /* a shared folder */
    g_assert_false(loads_planted(path, id));
    g_assert_cmpint(chmod(dir, 0700), ==, 0);
    g_assert_cmpint(chmod(parent, 0770), ==, 0); /* a parent others may rename it in */
    g_assert_false(loads_planted(path, id));
    g_assert_cmpint(chmod(parent, 01777), ==, 0); /* sticky, as /tmp: they may not */
    g_assert_true(loads_planted(path, id));
    g_assert_cmpint(chmod(parent, 0700), ==, 0);
    g_assert_cmpint(chmod(cache, 0620), ==, 0); /* a file others may write */
    g_assert_false(loads_planted(path, id));
    /* the load above wrote a good file over it; plant again for the next cases */
    id = plant_token(ref, cache);
    g_assert_true(loads_planted(path, id));
    if (geteuid() == 0) { /* another user's file: only root can make one */
        g_assert_cmpint(chown(cache, 65534, 65534), ==, 0);
        g_assert_false(loads_planted(path, id));
        id = plant_token(ref, cache);
    }

    /* a tokenizer.json of other bytes, with the planted file under its name: the stored
     * SHA-256 is the other JSON's */
    char *other = g_build_filename(parent, "tokenizer.json", NULL);
    char *json2 = g_strconcat(json, "\n", NULL);
    g_assert_true(g_file_set_contents(other, json2, (gssize)len + 1, NULL));
    char *sum2 = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)json2, len + 1);
    char *name2 = g_strdup_printf("tokenizer-%s.bin", sum2);
    char *cache2 = g_build_filename(dir, name2, NULL);
    g_assert_cmpint(rename(cache, cache2), ==, 0);
    g_assert_false(loads_planted(other, id));

    tokenizer_free(ref);
    g_free(cache2), g_free(name2), g_free(sum2), g_free(json2), g_free(other);
    g_free(cache), g_free(name), g_free(sum), g_free(json), g_free(dir), g_free(parent);
    g_free(path);
}

/* A cache file that tokenizer.json could not have produced is ignored like a damaged one: a
 * vocabulary token that is not UTF-8 (the decoder walks tokens as UTF-8; "QZQZQZQ\xf0" made it
 * read past the token's end), or one token text under two ids (a JSON object's keys are
 * unique). */
static void test_cache_impossible(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared is absent: the tokenizer.json files live in ../shared/models");
        return;
    }
    char *path = g_build_filename(shared, "models", "tiny-smolvlm-b512", "tokenizer.json", NULL);
    char *dir = dq_test_tmpdir();
    g_setenv("DOCQA_CACHE_DIR", "off", TRUE);
    GError *err = NULL;
    DqTokenizer *ref = tokenizer_load(path, &err);
    dq_assert_no_error(err);
    g_setenv("DOCQA_CACHE_DIR", dir, TRUE);
    tokenizer_free(tokenizer_load(path, &err)); /* writes the cache */
    dq_assert_no_error(err);
    GDir *d = g_dir_open(dir, 0, NULL);
    char *cache = g_build_filename(dir, g_dir_read_name(d), NULL);
    g_dir_close(d);
    const char *second = NULL;
    for (int32_t id = 0, seen = 0; id < tokenizer_vocab_size(ref) && second == NULL; id++) {
        const char *t = tokenizer_id_to_token(ref, id);
        if (t != NULL && strlen(t) == 8 && strspn(t, "abcdefghijklmnopqrstuvwxyz") == 8 &&
            seen++ == 1)
            second = t;
    }
    g_assert_nonnull(second);
    const char *plants[] = {"QZQZQZQ\xf0", "QZ\xed\xa0\x80QZQ", second};
    for (size_t i = 0; i < G_N_ELEMENTS(plants); i++) {
        /* the first 8-letter token written in the cache becomes plants[i] */
        int32_t id = plant_token_as(ref, cache, 0, plants[i]);
        DqTokenizer *tok = tokenizer_load(path, &err);
        dq_assert_no_error(err);
        g_assert_cmpstr(tokenizer_id_to_token(tok, id), ==, tokenizer_id_to_token(ref, id));
        g_assert_cmpint(tokenizer_token_to_id(tok, second), ==, tokenizer_token_to_id(ref, second));
        tokenizer_free(tok);
    }
    tokenizer_free(ref);
    g_free(cache);
    g_free(dir);
    g_free(path);
}

/* A cache not used says so on stderr once a process, not once a load. */
static void test_cache_note(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared is absent: the tokenizer.json files live in ../shared/models");
        return;
    }
    if (g_test_subprocess()) {
        char *path =
            g_build_filename(shared, "models", "tiny-smolvlm-b512", "tokenizer.json", NULL);
        char *dir = dq_test_tmpdir();
        g_assert_cmpint(chmod(dir, 0777), ==, 0);
        g_setenv("DOCQA_CACHE_DIR", dir, TRUE);
        for (int i = 0; i < 3; i++) {
            GError *err = NULL;
            DqTokenizer *tok = tokenizer_load(path, &err);
            dq_assert_no_error(err);
            tokenizer_free(tok);
        }
        g_assert_cmpint(chmod(dir, 0700), ==, 0);
        g_free(dir);
        g_free(path);
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr(
        "docqa: note: tokenizer cache /*docqa-test-* is not a directory of yours "
        "that only you may write (not used; tokenizer.json is parsed "
        "instead)\n");
    g_test_trap_assert_stderr_unmatched("*\n*\n*");
}

static void load_twice(const char *shared) {
    char *path = g_build_filename(shared, "models", "tiny-smolvlm-b512", "tokenizer.json", NULL);
    for (int i = 0; i < 2; i++) {
        GError *err = NULL;
        DqTokenizer *tok = tokenizer_load(path, &err);
        dq_assert_no_error(err);
        tokenizer_free(tok);
    }
    g_free(path);
}

/* A file tokenizer-<sha>.bin directly in dir. */
static gboolean has_cache_file(const char *dir) {
    GDir *d = g_dir_open(dir, 0, NULL);
    gboolean found = FALSE;
    for (const char *n; d != NULL && (n = g_dir_read_name(d)) != NULL;)
        found |= g_str_has_prefix(n, "tokenizer-") && g_str_has_suffix(n, ".bin");
    if (d != NULL)
        g_dir_close(d);
    return found;
}

/* HOME naming a folder that does not exist (a system user's /nonexistent): nothing is cached
 * and nothing made there (root's mkdir made /nonexistent/.cache/docqa), with one note. */
static void test_cache_home_missing(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared is absent: the tokenizer.json files live in ../shared/models");
        return;
    }
    if (g_test_subprocess()) {
        char *dir = dq_test_tmpdir();
        char *home = g_build_filename(dir, "nonexistent", NULL);
        g_setenv("HOME", home, TRUE);
        g_unsetenv("DOCQA_CACHE_DIR");
        g_unsetenv("XDG_CACHE_HOME");
        load_twice(shared);
        g_assert_false(g_file_test(home, G_FILE_TEST_EXISTS));
        g_free(home);
        g_free(dir);
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr(
        "docqa: note: tokenizer cache: the home folder /*/nonexistent does not "
        "exist, so nothing is cached (*)\n");
    g_test_trap_assert_stderr_unmatched("*\n*\n*");
}

/* XDG_CACHE_HOME is taken only when absolute, as the XDG spec says: a relative one
 * ("relcache") put the cache under whatever folder docqa ran in. */
static void test_cache_xdg_relative(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared is absent: the tokenizer.json files live in ../shared/models");
        return;
    }
    if (g_test_subprocess()) {
        char *dir = dq_test_tmpdir();
        char *home = g_build_filename(dir, "home", NULL);
        g_assert_cmpint(mkdir(home, 0700), ==, 0);
        g_setenv("HOME", home, TRUE);
        g_unsetenv("DOCQA_CACHE_DIR");
        g_assert_cmpint(chdir(dir), ==, 0);
        g_setenv("XDG_CACHE_HOME", "relcache", TRUE);
        load_twice(shared);
        char *relative = g_build_filename(dir, "relcache", NULL);
        g_assert_false(g_file_test(relative, G_FILE_TEST_EXISTS));
        char *in_home = g_build_filename(home, ".cache", "docqa", NULL);
        g_assert_true(has_cache_file(in_home));
        /* an absolute one is the cache's parent */
        char *xdg = g_build_filename(dir, "xdg", NULL);
        g_setenv("XDG_CACHE_HOME", xdg, TRUE);
        load_twice(shared);
        char *in_xdg = g_build_filename(xdg, "docqa", NULL);
        g_assert_true(has_cache_file(in_xdg));
        g_free(in_xdg), g_free(xdg), g_free(in_home), g_free(relative), g_free(home);
        g_free(dir);
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr("");
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    /* keep the parsed-tokenizer cache out of the user's home, and start cold */
    char *cache_dir = dq_test_tmpdir();
    g_setenv("DOCQA_CACHE_DIR", cache_dir, TRUE);
    g_test_add_func("/tokenizer/decode_text_nul", test_decode_text_nul);
    g_test_add_func("/tokenizer/cache", test_cache);
    g_test_add_func("/tokenizer/cache_trust", test_cache_trust);
    g_test_add_func("/tokenizer/cache_impossible", test_cache_impossible);
    g_test_add_func("/tokenizer/cache_note", test_cache_note);
    g_test_add_func("/tokenizer/cache_home_missing", test_cache_home_missing);
    g_test_add_func("/tokenizer/cache_xdg_relative", test_cache_xdg_relative);
    g_test_add_func("/tokenizer/utf8_lossy", test_utf8_lossy);
    g_test_add_func("/tokenizer/mini", test_mini_tokenizers);
    g_test_add_func("/tokenizer/byte_level_options", test_byte_level_options);
    g_test_add_func("/tokenizer/load_errors", test_load_errors);
    g_test_add_func("/tokenizer/damaged_real", test_damaged_real);
    g_test_add_func("/tokenizer/fixture_cases", test_fixture_cases);
    g_test_add_func("/tokenizer/corpus", test_corpus);
    g_test_add_func("/tokenizer/invalid_utf8", test_invalid_utf8_real);
    int rc = g_test_run();
    g_free(cache_dir);
    return rc;
}
