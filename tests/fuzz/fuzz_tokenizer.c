/* libFuzzer target: tokenizer_encode on arbitrary bytes (invalid UTF-8, NULs, huge words,
 * added-token fragments), then decode and the streaming decoder on the ids, checking that
 * both decoders agree and print valid UTF-8.
 * Uses ../shared/models/tiny-smolvlm-b512/tokenizer.json (DOCQA_TOKENIZER_JSON overrides), or,
 * where ../shared is absent, a small byte-level tokenizer built here. Inputs whose first byte
 * has bit 1 set go to a second small tokenizer with the options SmolVLM's leaves off (grouped
 * digits, add_prefix_space, no split regex, ignore_merges, a normalized added token), whose
 * code no input reaches through SmolVLM's. */
#include "tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static DqTokenizer *tok, *alt;

/* All 256 byte-level characters, a few merges and SmolVLM's added tokens (ids 259...: after the
 * vocabulary, as tokenizers numbers them); `other`: the options SmolVLM's tokenizer leaves off,
 * and one more added token, "cat", normalized (matched only where the raw pass left text). */
static char *fallback_json(gboolean other) {
    GString *j = g_string_new("{\"added_tokens\":[");
    static const char *const added[] = {
        "<|im_start|>", "<image>",       "<fake_token_around_image>",
        "<global-img>", "<row_1_col_1>", "<end_of_utterance>"};
    for (int i = 0; i < 6; i++)
        g_string_append_printf(j,
                               "%s{\"id\":%d,\"content\":\"%s\",\"special\":true,"
                               "\"normalized\":false}",
                               i ? "," : "", 259 + i, added[i]);
    if (other)
        g_string_append(j, ",{\"id\":265,\"content\":\"cat\",\"special\":false,"
                           "\"normalized\":true}");
    g_string_append_printf(
        j,
        "],\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Sequence\","
        "\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":%s},"
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":%s,\"use_regex\":%s}]},"
        "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"ignore_merges\":%s,"
        "\"vocab\":{",
        other ? "false" : "true", other ? "true" : "false", other ? "false" : "true",
        other ? "true" : "false");
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int cp =
            (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE ? b : 256 + extra++;
        char u[8] = {0};
        g_unichar_to_utf8((gunichar)cp, u);
        if (cp == '"' || cp == '\\')
            g_string_append_printf(j, "\"\\%c\":%d,", cp, b);
        else
            g_string_append_printf(j, "\"%s\":%d,", u, b);
    }
    g_string_append(j, "\"\xc4\xa0t\":256,\"he\":257,\"\xc4\xa0the\":258},\"merges\":"
                       "[[\"\xc4\xa0\",\"t\"],\"h e\",[\"\xc4\xa0t\",\"he\"]]}}");
    return g_string_free(j, FALSE);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *path = getenv("DOCQA_TOKENIZER_JSON");
    char *dflt = g_build_filename(DOCQA_SOURCE_DIR, "..", "shared", "models", "tiny-smolvlm-b512",
                                  "tokenizer.json", NULL);
    GError *err = NULL;
    if (path == NULL && g_file_test(dflt, G_FILE_TEST_EXISTS))
        path = dflt;
    if (path != NULL) {
        tok = tokenizer_load(path, &err);
    } else {
        char *json = fallback_json(FALSE);
        tok = tokenizer_load_from_data(json, strlen(json), "fallback tokenizer", &err);
        g_free(json);
    }
    if (tok == NULL) {
        fprintf(stderr, "fuzz_tokenizer: %s (set DOCQA_TOKENIZER_JSON)\n", err->message);
        exit(1);
    }
    char *json = fallback_json(TRUE);
    alt = tokenizer_load_from_data(json, strlen(json), "other tokenizer", &err);
    g_free(json);
    if (alt == NULL) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err->message);
        exit(1);
    }
    g_free(dflt);
    return 0;
}

/* GLib's validator rejects NUL, which a decode legitimately contains when the input had one. */
static gboolean utf8_valid_with_nuls(const char *s, size_t len) {
    size_t start = 0;
    for (size_t i = 0; i <= len; i++)
        if (i == len || s[i] == '\0') {
            if (!g_utf8_validate_len(s + start, i - start, NULL))
                return FALSE;
            start = i + 1;
        }
    return TRUE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t n;
    GError *err = NULL;
    DqTokenizer *t = size > 0 && (data[0] & 2) ? alt : tok;
    int32_t *ids = tokenizer_encode(t, (const char *)data, (gssize)size, &n, &err);
    if (ids == NULL)
        abort(); /* encoding never fails: invalid UTF-8 is replaced */
    gboolean skip = size > 0 && (data[0] & 1);
    size_t all_len, len;
    char *all = tokenizer_decode(t, ids, n, skip, &all_len);
    if (!utf8_valid_with_nuls(all, all_len))
        abort();
    DqDecodeStream *s = tokenizer_stream_new(t, skip);
    GString *joined = g_string_new(NULL);
    for (size_t i = 0; i < n; i++) {
        char *piece = tokenizer_stream_push(s, ids[i], &len);
        g_string_append_len(joined, piece, (gssize)len);
        g_free(piece);
    }
    char *rest = tokenizer_stream_flush(s, &len);
    g_string_append_len(joined, rest, (gssize)len);
    if (joined->len != all_len || memcmp(joined->str, all, all_len) != 0)
        abort();
    g_free(rest);
    g_string_free(joined, TRUE);
    tokenizer_stream_free(s);
    g_free(all);
    g_free(ids);
    return 0;
}
