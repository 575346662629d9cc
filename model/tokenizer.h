/* Byte-level BPE tokenizer read from a Hugging Face tokenizer.json, giving the ids of the
 * `tokenizers` library (0.22) that transformers uses.
 *
 *   DqTokenizer *tok = tokenizer_load("snapshot/tokenizer.json", &err);
 *   size_t n;
 *   int32_t *ids = tokenizer_encode(tok, prompt, -1, &n, &err);   // g_free(ids)
 *   char *text = tokenizer_decode(tok, ids, n, TRUE);            // skip special tokens
 *   tokenizer_free(tok);
 *
 * Encoding, as the `tokenizers` pipeline does it:
 *   1. added tokens (every entry of "added_tokens", special or not) are split out first by exact
 *      match, leftmost-longest (AddedVocabulary: first the non-normalized ones, then the
 *      normalized ones in the remaining text); no BOS/EOS is added (post_processor null);
 *   2. each remaining segment goes through the pre_tokenizer declared in the file: Digits
 *      (individual or contiguous) and ByteLevel (GPT-2 split regex, optional prefix space);
 *      Unicode classes come from PCRE2 (UTF + UCP) and GLib, never ASCII guesses;
 *   3. each word -> GPT-2 byte-to-unicode characters -> BPE merges by rank (cached).
 * Anything else the file declares (a normalizer, another model or pre-tokenizer type, BPE
 * dropout, added tokens with lstrip/rstrip/single_word, a post_processor that adds ids) is
 * refused at load time with DQ_ERR_UNSUPPORTED naming the file and the field.
 *
 * Invalid UTF-8 input: Python could not even pass such bytes to the tokenizer. docqa replaces
 * every maximal invalid subsequence with U+FFFD (what `bytes.decode("utf-8", "replace")` and
 * Rust's from_utf8_lossy do) and tokenizes the result. Embedded NUL bytes are ordinary text.
 *
 * Decoding: ids -> token strings (unknown ids are dropped, as HF does) -> ByteLevel decoder
 * (bytes, then lossy UTF-8: a token cut inside a multi-byte character prints U+FFFD, like
 * HF's per-token decode). The streaming decoder holds back an incomplete trailing character so
 * that pieces printed one token at a time concatenate to tokenizer_decode() of all ids.
 *
 * Loading: json-glib takes 250-450 ms on SmolVLM's 3.5 MB tokenizer.json, so tokenizer_load keeps
 * the parsed result in $DOCQA_CACHE_DIR (default ~/.cache/docqa; "off" disables), keyed by the
 * SHA-256 of the file; later loads take tens of ms. A damaged cache file is ignored, and so is one
 * others may write or in a folder they may write (tokenizer.c says why).
 *
 * A DqTokenizer is immutable after loading (and tokenizer_add_special_token) except for its BPE
 * word cache, which is guarded by a mutex: encode/decode may be called from several threads.
 */
#ifndef DQ_TOKENIZER_H
#define DQ_TOKENIZER_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

typedef struct DqTokenizer DqTokenizer;

/* Ids of the tokens the SmolVLM pipeline needs; -1 when the token is not an added token of
 * this tokenizer (e.g. <global-img> is ordinary text in SmolVLM-Instruct's tokenizer). */
typedef struct {
    int32_t image;                   /* <image> */
    int32_t fake_token_around_image; /* <fake_token_around_image> */
    int32_t end_of_utterance;        /* <end_of_utterance> */
    int32_t global_img;              /* <global-img> */
    int32_t im_start;                /* <|im_start|> */
    int32_t im_end;                  /* <|im_end|> */
    int32_t endoftext;               /* <|endoftext|> */
} DqSpecialIds;

/* Loads a tokenizer.json file. */
DqTokenizer *tokenizer_load(const char *path, GError **err);

/* Loads tokenizer.json text held in memory; name labels it in errors. */
DqTokenizer *tokenizer_load_from_data(const char *json, size_t len, const char *name, GError **err);

/* Loads snapshot_dir/tokenizer.json. */
DqTokenizer *tokenizer_load_snapshot(const char *snapshot_dir, GError **err);

void tokenizer_free(DqTokenizer *tok);

/* Encodes len bytes of text (len < 0: NUL-terminated). Returns a g_malloc'd array of *n_ids
 * ids (never NULL on success, even for 0 ids), or NULL with err set. */
int32_t *tokenizer_encode(DqTokenizer *tok, const char *text, gssize len, size_t *n_ids,
                          GError **err);

/* Decodes ids to UTF-8 (g_free). skip_special drops the added tokens marked special. Ids that
 * are not in the vocabulary are dropped. *out_len (optional) gets the length: the text holds a
 * NUL byte where the ids encode one. */
char *tokenizer_decode(const DqTokenizer *tok, const int32_t *ids, size_t n_ids,
                       gboolean skip_special, size_t *out_len);

/* tokenizer_decode without the special tokens, as text a C string, JSON and PostgreSQL can
 * carry: a NUL byte the ids encode (the byte-level token "Ā") becomes U+FFFD, where
 * transformers' text holds "\x00" (a C string would end there, and PostgreSQL refuses the
 * byte in text). What answers are stored and printed as (g_free). */
char *tokenizer_decode_text(const DqTokenizer *tok, const int32_t *ids, size_t n_ids);

/* The token string of an id ("Ġworld", "<image>"), NULL when out of range. */
const char *tokenizer_id_to_token(const DqTokenizer *tok, int32_t id);

/* The id of a token string (added tokens first, then the BPE vocabulary); -1 when absent. */
int32_t tokenizer_token_to_id(const DqTokenizer *tok, const char *token);

/* The id of an added token with this exact content, -1 when it is not one. */
int32_t tokenizer_added_token_id(const DqTokenizer *tok, const char *content);

/* Whether id is an added token marked "special". */
gboolean tokenizer_is_special(const DqTokenizer *tok, int32_t id);

/* Adds content as a special added token, as transformers' add_special_tokens does when the
 * tokenizer lacks it (Idefics3Processor with <image>, <fake_token_around_image> and
 * <end_of_utterance>): a token of the BPE vocabulary keeps its id, another takes the id after the
 * largest one. Returns its id (the existing one where it is an added token already). Not to be
 * called while another thread uses tok. */
int32_t tokenizer_add_special_token(DqTokenizer *tok, const char *content);

/* The largest id + 1 (of the vocabulary and the added tokens). */
int32_t tokenizer_id_limit(const DqTokenizer *tok);

/* Number of distinct ids, added tokens included (HF's len(tokenizer): 49280 for 256M). */
int tokenizer_vocab_size(const DqTokenizer *tok);

const DqSpecialIds *tokenizer_special_ids(const DqTokenizer *tok);

/* The id of the added token <row_{row}_col_{col}> (1-based), -1 when it is not an added token. */
int32_t tokenizer_row_col_id(const DqTokenizer *tok, int row, int col);

/* ---- streaming decoder (generation prints tokens as they come) */
typedef struct DqDecodeStream DqDecodeStream;

DqDecodeStream *tokenizer_stream_new(const DqTokenizer *tok, gboolean skip_special);

/* Adds one id; returns the text that became complete (possibly ""), g_free; *out_len
 * (optional) gets its length. */
char *tokenizer_stream_push(DqDecodeStream *s, int32_t id, size_t *out_len);

/* Returns what is still held back (an incomplete character prints as U+FFFD), g_free. */
char *tokenizer_stream_flush(DqDecodeStream *s, size_t *out_len);

void tokenizer_stream_free(DqDecodeStream *s);

/* Replaces every maximal invalid UTF-8 subsequence of bytes with U+FFFD (Rust's
 * from_utf8_lossy, Python's errors="replace"). Returns a g_malloc'd NUL-terminated string;
 * *out_len (optional) gets its length. */
char *tokenizer_utf8_lossy(const char *bytes, size_t len, size_t *out_len);

#endif
