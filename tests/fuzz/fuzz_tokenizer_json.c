/* libFuzzer target: loading tokenizer.json, which comes with the user's snapshot (vocab, merges
 * as strings or pairs, added tokens, pre-tokenizer, normalizer, decoder). fuzz_tokenizer fuzzes
 * the text given one fixed tokenizer; here the tokenizer is the input. One that loads must encode
 * a fixed text (ASCII, digits, accents, an added-token name, invalid UTF-8) to ids below its id
 * limit, and decode them (and every id up to the limit) to UTF-8. A refusal names the input.
 * Seeds: tests/fuzz/seeds/tokenizer_json/. */
#include "tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    GError *err = NULL;
    DqTokenizer *tok = tokenizer_load_from_data((const char *)data, size, "fuzz-tokenizer", &err);
    if (tok == NULL) {
        if (err == NULL || strstr(err->message, "fuzz-tokenizer") == NULL)
            abort();
        g_error_free(err);
        return 0;
    }
    static const char text[] = "the 2024 th\xc3\xa9 <image> <|im_start|>x\xff\xfe  \n\tend";
    size_t n = 0, len = 0;
    int32_t *ids = tokenizer_encode(tok, text, (gssize)(sizeof text - 1), &n, &err);
    if (ids == NULL)
        abort(); /* encoding never fails once loaded */
    int32_t limit = tokenizer_id_limit(tok);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= limit)
            abort();
    char *back = tokenizer_decode(tok, ids, n, FALSE, &len);
    if (!utf8_valid_with_nuls(back, len))
        abort();
    g_free(back);
    g_free(ids);
    int32_t every[512];
    int32_t m = limit < 512 ? limit : 512;
    for (int32_t i = 0; i < m; i++)
        every[i] = i;
    back = tokenizer_decode(tok, every, (size_t)m, TRUE, &len);
    if (!utf8_valid_with_nuls(back, len))
        abort();
    g_free(back);
    tokenizer_free(tok);
    return 0;
}
