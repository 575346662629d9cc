/* Byte-level BPE tokenizer (see tokenizer.h for the pipeline and the decisions). */
#include "tokenizer.h"

#include "dq_error.h"
#include "json_load.h"
#include "text.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <json-glib/json-glib.h>
#include <pcre2.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A malformed file must not make us allocate gigabytes for an id table. */
#define MAX_TOKEN_ID (1 << 24)
/* Words up to this many bytes go through the BPE cache (HF caches words < 256 chars). */
#define CACHE_MAX_WORD    64
#define CACHE_MAX_ENTRIES 200000

/* ---- added-token trie: byte trie, matched leftmost-longest like HF's AhoCorasick
 *      (MatchKind::LeftmostLongest) over the non-normalized and the normalized added tokens */
typedef struct {
    int32_t first_child, next_sibling;
    int32_t token_id; /* -1 when no token ends here */
    guint8 byte;
} TrieNode;

typedef struct {
    GArray *nodes;     /* TrieNode, node 0 = root */
    guint8 first[256]; /* bytes that can start a match */
    gboolean empty;
} AddedTrie;

/* ---- merge table: (left id, right id) -> (rank, merged id), open addressing */
typedef struct {
    uint64_t *keys; /* (left << 32 | right) + 1, 0 = empty */
    int32_t *rank;
    int32_t *merged;
    size_t mask;
} MergeTable;

struct DqTokenizer {
    char *path;
    GStringChunk *strings;
    GHashTable *vocab;      /* BPE model vocabulary: token string -> id (GINT_TO_POINTER(id+1)) */
    GHashTable *added;      /* added token content -> id + 1 */
    const char **id_to_tok; /* [n_ids] what decode prints: added content or vocab token */
    guint8 *id_flags;       /* [n_ids] ID_* bits */
    int32_t n_ids;          /* max id + 1 */
    int vocab_size;         /* distinct ids */
    MergeTable merges;
    gboolean ignore_merges;
    int32_t byte_id[256]; /* id of the single byte-level character of each byte, -1 if none */
    char byte_char[256][3];
    guint8 byte_char_len[256];
    int16_t char_byte[0x180]; /* byte-level code point -> byte, -1 when not in the map */
    AddedTrie trie_raw, trie_norm;
    /* pre-tokenizer as declared */
    gboolean has_digits, digits_individual;
    gboolean byte_level_regex, add_prefix_space;
    pcre2_code *split_re;
    DqSpecialIds special;
    GMutex cache_lock;
    GHashTable *cache; /* word bytes -> int32_t[1 + n] (n, ids...) */
};

enum { ID_ADDED = 1, ID_SPECIAL = 2, ID_VOCAB = 4, ID_NORMALIZED = 8 };

/* GPT-2's split pattern, as tokenizers' ByteLevel uses it (via Oniguruma). \s is written out as
 * Unicode White_Space because PCRE2's \s also takes U+180E, which Oniguruma's does not. */
#define WS                                                                                         \
    "\\t-\\r "                                                                                     \
    "\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS
                                   "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])|[" WS "]+";

/* ================================================================ UTF-8 */

/* Length of the UTF-8 sequence at s (n bytes available): > 0 a valid character of that length;
 * < 0 an invalid maximal subpart of -r bytes; 0 a valid but incomplete prefix (needs more). */
static int utf8_seq(const guint8 *s, size_t n) {
    guint8 b = s[0];
    int need;
    guint8 lo = 0x80, hi = 0xBF;
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        need = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0)
            lo = 0xA0;
        else if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0)
            lo = 0x90;
        else if (b == 0xF4)
            hi = 0x8F;
    } else
        return -1;
    if (n < 2)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return -1;
    for (int i = 2; i < need; i++) {
        if ((size_t)i >= n)
            return 0;
        if (s[i] < 0x80 || s[i] > 0xBF)
            return -i;
    }
    return need;
}

/* Appends the lossy decoding of b[0..n) to out; with final = FALSE stops before a trailing
 * incomplete character and returns how many bytes were consumed. */
static size_t utf8_lossy_append(GString *out, const guint8 *b, size_t n, gboolean final) {
    size_t i = 0, run = 0;
    if (n == 0)
        return 0; /* b may be NULL (an empty GByteArray) */
    while (i < n) {
        if (b[i] < 0x80) {
            i++;
            continue;
        }
        int r = utf8_seq(b + i, n - i);
        if (r > 0) {
            i += (size_t)r;
            continue;
        }
        g_string_append_len(out, (const char *)b + run, (gssize)(i - run));
        if (r == 0 && !final) {
            return i;
        }
        g_string_append(out, "\xEF\xBF\xBD");
        i += r == 0 ? n - i : (size_t)-r;
        run = i;
    }
    g_string_append_len(out, (const char *)b + run, (gssize)(n - run));
    return n;
}

char *tokenizer_utf8_lossy(const char *bytes, size_t len, size_t *out_len) {
    GString *s = g_string_sized_new(len + 1);
    utf8_lossy_append(s, (const guint8 *)bytes, len, TRUE);
    if (out_len)
        *out_len = s->len;
    return g_string_free(s, FALSE);
}

static gboolean utf8_valid(const guint8 *b, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (b[i] < 0x80) {
            i++;
            continue;
        }
        int r = utf8_seq(b + i, n - i);
        if (r <= 0)
            return FALSE;
        i += (size_t)r;
    }
    return TRUE;
}

/* ================================================================ tables */

static void trie_init(AddedTrie *t) {
    t->nodes = g_array_new(FALSE, FALSE, sizeof(TrieNode));
    TrieNode root = {-1, -1, -1, 0};
    g_array_append_val(t->nodes, root);
    memset(t->first, 0, sizeof t->first);
    t->empty = TRUE;
}

static void trie_add(AddedTrie *t, const char *s, int32_t id) {
    int32_t node = 0;
    for (const guint8 *p = (const guint8 *)s; *p; p++) {
        int32_t c = g_array_index(t->nodes, TrieNode, node).first_child;
        while (c >= 0 && g_array_index(t->nodes, TrieNode, c).byte != *p)
            c = g_array_index(t->nodes, TrieNode, c).next_sibling;
        if (c < 0) {
            TrieNode n = {-1, g_array_index(t->nodes, TrieNode, node).first_child, -1, *p};
            g_array_append_val(t->nodes, n);
            c = (int32_t)t->nodes->len - 1;
            g_array_index(t->nodes, TrieNode, node).first_child = c;
        }
        node = c;
    }
    /* The first entry with a given content wins, as in HF (later duplicates are ignored). */
    if (g_array_index(t->nodes, TrieNode, node).token_id < 0)
        g_array_index(t->nodes, TrieNode, node).token_id = id;
    t->first[(guint8)s[0]] = 1;
    t->empty = FALSE;
}

/* Longest added token starting at s[0..n); returns its length (0: none), *id its id. */
static size_t trie_longest(const AddedTrie *t, const guint8 *s, size_t n, int32_t *id) {
    const TrieNode *nodes = (const TrieNode *)t->nodes->data;
    int32_t node = 0;
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = nodes[node].first_child;
        while (c >= 0 && nodes[c].byte != s[i])
            c = nodes[c].next_sibling;
        if (c < 0)
            break;
        node = c;
        if (nodes[node].token_id >= 0) {
            best = i + 1;
            *id = nodes[node].token_id;
        }
    }
    return best;
}

static inline size_t merge_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k;
}

static void merges_init(MergeTable *m, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n + 16)
        cap <<= 1;
    m->keys = g_new0(uint64_t, cap);
    m->rank = g_new(int32_t, cap);
    m->merged = g_new(int32_t, cap);
    m->mask = cap - 1;
}

static void merges_free(MergeTable *m) {
    g_free(m->keys);
    g_free(m->rank);
    g_free(m->merged);
}

static void merges_put(MergeTable *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = merge_hash(k) & m->mask;
    while (m->keys[i] != 0 && m->keys[i] != k)
        i = (i + 1) & m->mask;
    if (m->keys[i] == k)
        return; /* duplicate merge: HF keeps the first rank */
    m->keys[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
}

static inline gboolean merges_get(const MergeTable *m, int32_t a, int32_t b, int32_t *rank,
                                  int32_t *merged) {
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = merge_hash(k) & m->mask;
    while (m->keys[i] != 0) {
        if (m->keys[i] == k) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return TRUE;
        }
        i = (i + 1) & m->mask;
    }
    return FALSE;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to 256 + k. */
static void byte_map_init(DqTokenizer *tok) {
    int extra = 0;
    for (int i = 0; i < 0x180; i++)
        tok->char_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int cp;
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
            cp = b;
        else
            cp = 256 + extra++;
        tok->char_byte[cp] = (int16_t)b;
        tok->byte_char_len[b] = (guint8)g_unichar_to_utf8((gunichar)cp, tok->byte_char[b]);
    }
}

/* ================================================================ loading */

static const char *json_str_member(JsonObject *o, const char *name) {
    JsonNode *n = json_object_get_member(o, name);
    if (n == NULL || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
        return NULL;
    return json_node_get_string(n);
}

static gboolean json_bool_member(JsonObject *o, const char *name, gboolean dflt) {
    JsonNode *n = json_object_get_member(o, name);
    if (n == NULL || !JSON_NODE_HOLDS_VALUE(n))
        return dflt;
    return json_node_get_boolean(n);
}

static gboolean json_member_is_null_or_absent(JsonObject *o, const char *name) {
    JsonNode *n = json_object_get_member(o, name);
    return n == NULL || JSON_NODE_HOLDS_NULL(n);
}

static gboolean load_pre_tokenizer_one(DqTokenizer *tok, JsonObject *p, gboolean last,
                                       GError **err) {
    const char *type = json_str_member(p, "type");
    if (type == NULL)
        return dq_fail(err, DQ_ERR_FORMAT, "%s: pre_tokenizer without a type", tok->path);
    if (strcmp(type, "Digits") == 0 && !last && !tok->has_digits) {
        tok->has_digits = TRUE;
        tok->digits_individual = json_bool_member(p, "individual_digits", FALSE);
        return TRUE;
    }
    if (strcmp(type, "ByteLevel") == 0 && last) {
        tok->add_prefix_space = json_bool_member(p, "add_prefix_space", TRUE);
        tok->byte_level_regex = json_bool_member(p, "use_regex", TRUE);
        return TRUE;
    }
    return dq_fail(err, DQ_ERR_UNSUPPORTED,
                   "%s: pre_tokenizer '%s' is not supported here (docqa supports "
                   "[Digits,] ByteLevel)",
                   tok->path, type);
}

static gboolean load_pre_tokenizer(DqTokenizer *tok, JsonObject *root, GError **err) {
    JsonNode *n = json_object_get_member(root, "pre_tokenizer");
    if (n == NULL || !JSON_NODE_HOLDS_OBJECT(n))
        return dq_fail(err, DQ_ERR_UNSUPPORTED,
                       "%s: no ByteLevel pre_tokenizer (only byte-level BPE is supported)",
                       tok->path);
    JsonObject *p = json_node_get_object(n);
    const char *type = json_str_member(p, "type");
    if (type != NULL && strcmp(type, "Sequence") == 0) {
        JsonNode *ln = json_object_get_member(p, "pretokenizers");
        if (ln == NULL || !JSON_NODE_HOLDS_ARRAY(ln))
            return dq_fail(err, DQ_ERR_FORMAT, "%s: Sequence pre_tokenizer without a list",
                           tok->path);
        JsonArray *a = json_node_get_array(ln);
        guint len = json_array_get_length(a);
        if (len == 0)
            return dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: empty pre_tokenizer Sequence", tok->path);
        for (guint i = 0; i < len; i++) {
            JsonNode *e = json_array_get_element(a, i);
            if (!JSON_NODE_HOLDS_OBJECT(e))
                return dq_fail(err, DQ_ERR_FORMAT, "%s: pre_tokenizer %u is not an object",
                               tok->path, i);
            if (!load_pre_tokenizer_one(tok, json_node_get_object(e), i + 1 == len, err))
                return FALSE;
        }
        return TRUE;
    }
    return load_pre_tokenizer_one(tok, p, TRUE, err);
}

static gboolean load_checks(DqTokenizer *tok, JsonObject *root, GError **err) {
    if (!json_member_is_null_or_absent(root, "normalizer"))
        return dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: a normalizer is declared; not supported",
                       tok->path);
    if (!json_member_is_null_or_absent(root, "truncation"))
        return dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: truncation is declared; not supported",
                       tok->path);
    JsonNode *pp = json_object_get_member(root, "post_processor");
    if (pp != NULL && !JSON_NODE_HOLDS_NULL(pp)) {
        /* ByteLevel as post-processor only trims offsets; anything else may add ids. */
        const char *t =
            JSON_NODE_HOLDS_OBJECT(pp) ? json_str_member(json_node_get_object(pp), "type") : NULL;
        if (t == NULL || strcmp(t, "ByteLevel") != 0)
            return dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: post_processor '%s' is not supported",
                           tok->path, t ? t : "?");
    }
    JsonNode *dn = json_object_get_member(root, "decoder");
    if (dn != NULL && !JSON_NODE_HOLDS_NULL(dn)) {
        const char *t =
            JSON_NODE_HOLDS_OBJECT(dn) ? json_str_member(json_node_get_object(dn), "type") : NULL;
        if (t == NULL || strcmp(t, "ByteLevel") != 0)
            return dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: decoder '%s' is not supported", tok->path,
                           t ? t : "?");
    }
    return TRUE;
}

static gboolean load_model(DqTokenizer *tok, JsonObject *root, JsonObject **model_out,
                           GError **err) {
    JsonNode *mn = json_object_get_member(root, "model");
    if (mn == NULL || !JSON_NODE_HOLDS_OBJECT(mn))
        return dq_fail(err, DQ_ERR_FORMAT, "%s: no \"model\" object", tok->path);
    JsonObject *m = json_node_get_object(mn);
    const char *type = json_str_member(m, "type");
    if (type == NULL || strcmp(type, "BPE") != 0)
        return dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: model type '%s' is not supported (BPE only)",
                       tok->path, type ? type : "?");
    JsonNode *dropout = json_object_get_member(m, "dropout");
    if (dropout != NULL && !JSON_NODE_HOLDS_NULL(dropout))
        return dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: BPE dropout is not supported", tok->path);
    static const char *const unsupported[] = {"continuing_subword_prefix", "end_of_word_suffix",
                                              "unk_token"};
    for (size_t i = 0; i < G_N_ELEMENTS(unsupported); i++)
        if (!json_member_is_null_or_absent(m, unsupported[i]))
            return dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: BPE %s is not supported", tok->path,
                           unsupported[i]);
    if (json_bool_member(m, "byte_fallback", FALSE))
        return dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: BPE byte_fallback is not supported",
                       tok->path);
    tok->ignore_merges = json_bool_member(m, "ignore_merges", FALSE);
    *model_out = m;
    return TRUE;
}

static gboolean load_vocab(DqTokenizer *tok, JsonObject *m, GError **err) {
    JsonNode *vn = json_object_get_member(m, "vocab");
    if (vn == NULL || !JSON_NODE_HOLDS_OBJECT(vn))
        return dq_fail(err, DQ_ERR_FORMAT, "%s: model.vocab is not an object", tok->path);
    JsonObjectIter it;
    const char *name;
    JsonNode *val;
    json_object_iter_init(&it, json_node_get_object(vn));
    while (json_object_iter_next(&it, &name, &val)) {
        if (!JSON_NODE_HOLDS_VALUE(val) || json_node_get_value_type(val) != G_TYPE_INT64)
            return dq_fail(err, DQ_ERR_FORMAT, "%s: vocab entry '%s' has no integer id", tok->path,
                           name);
        gint64 id = json_node_get_int(val);
        if (id < 0 || id >= MAX_TOKEN_ID)
            return dq_fail(err, DQ_ERR_FORMAT,
                           "%s: vocab entry '%s' has id %" G_GINT64_FORMAT " out of range",
                           tok->path, name, id);
        g_hash_table_insert(tok->vocab, g_string_chunk_insert_const(tok->strings, name),
                            GINT_TO_POINTER((int)id + 1));
        if ((int32_t)id + 1 > tok->n_ids)
            tok->n_ids = (int32_t)id + 1;
    }
    return TRUE;
}

static int32_t vocab_lookup(GHashTable *h, const char *s) {
    return GPOINTER_TO_INT(g_hash_table_lookup(h, s)) - 1;
}

static gboolean load_merges(DqTokenizer *tok, JsonObject *m, GError **err) {
    JsonNode *an = json_object_get_member(m, "merges");
    if (an == NULL || !JSON_NODE_HOLDS_ARRAY(an))
        return dq_fail(err, DQ_ERR_FORMAT, "%s: model.merges is not a list", tok->path);
    JsonArray *a = json_node_get_array(an);
    guint n = json_array_get_length(a);
    merges_init(&tok->merges, n);
    GString *joined = g_string_new(NULL);
    gboolean ok = TRUE;
    for (guint i = 0; i < n && ok; i++) {
        JsonNode *e = json_array_get_element(a, i);
        const char *left = NULL, *right = NULL;
        char *tmp = NULL;
        if (JSON_NODE_HOLDS_ARRAY(e) && json_array_get_length(json_node_get_array(e)) == 2) {
            /* current format: ["a", "b"] */
            JsonArray *pair = json_node_get_array(e);
            JsonNode *l = json_array_get_element(pair, 0), *r = json_array_get_element(pair, 1);
            if (JSON_NODE_HOLDS_VALUE(l) && json_node_get_value_type(l) == G_TYPE_STRING &&
                JSON_NODE_HOLDS_VALUE(r) && json_node_get_value_type(r) == G_TYPE_STRING) {
                left = json_node_get_string(l);
                right = json_node_get_string(r);
            }
        } else if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING) {
            /* older format: "a b" (byte-level tokens never contain a space) */
            tmp = g_strdup(json_node_get_string(e));
            char *sp = strchr(tmp, ' ');
            if (sp != NULL && strchr(sp + 1, ' ') == NULL) {
                *sp = '\0';
                left = tmp;
                right = sp + 1;
            }
        }
        if (left == NULL) {
            ok = dq_fail(err, DQ_ERR_FORMAT, "%s: merge %u is neither [\"a\",\"b\"] nor \"a b\"",
                         tok->path, i);
        } else {
            int32_t a_id = vocab_lookup(tok->vocab, left), b_id = vocab_lookup(tok->vocab, right);
            g_string_assign(joined, left);
            g_string_append(joined, right);
            int32_t m_id = vocab_lookup(tok->vocab, joined->str);
            if (a_id < 0 || b_id < 0 || m_id < 0)
                ok = dq_fail(err, DQ_ERR_FORMAT,
                             "%s: merge %u ('%s' '%s') uses a token missing from the vocab",
                             tok->path, i, left, right);
            else
                merges_put(&tok->merges, a_id, b_id, (int32_t)i, m_id);
        }
        g_free(tmp);
    }
    g_string_free(joined, TRUE);
    return ok;
}

static int32_t added_id(const DqTokenizer *tok, const char *content);

/* Makes content (not yet an added token) the added token id. */
static void put_added(DqTokenizer *tok, const char *content, int32_t id, gboolean special,
                      gboolean normalized) {
    const char *c = g_string_chunk_insert_const(tok->strings, content);
    g_hash_table_insert(tok->added, (gpointer)c, GINT_TO_POINTER((int)id + 1));
    if (id + 1 > tok->n_ids) {
        tok->id_to_tok = g_renew(const char *, tok->id_to_tok, (gsize)id + 1);
        tok->id_flags = g_renew(guint8, tok->id_flags, (gsize)id + 1);
        for (int32_t k = tok->n_ids; k <= id; k++) {
            tok->id_to_tok[k] = NULL;
            tok->id_flags[k] = 0;
        }
        tok->n_ids = id + 1;
    }
    tok->id_to_tok[id] = c;
    tok->id_flags[id] |= ID_ADDED;
    if (special)
        tok->id_flags[id] |= ID_SPECIAL;
    /* With no normalizer, "normalized" tokens match the same text, but only in what the
     * non-normalized pass left over (AddedVocabulary::extract_and_normalize). */
    if (normalized)
        tok->id_flags[id] |= ID_NORMALIZED;
    trie_add(normalized ? &tok->trie_norm : &tok->trie_raw, c, id);
}

static gboolean load_added(DqTokenizer *tok, JsonObject *root, GError **err) {
    JsonNode *an = json_object_get_member(root, "added_tokens");
    if (an == NULL || JSON_NODE_HOLDS_NULL(an))
        return TRUE;
    if (!JSON_NODE_HOLDS_ARRAY(an))
        return dq_fail(err, DQ_ERR_FORMAT, "%s: added_tokens is not a list", tok->path);
    JsonArray *a = json_node_get_array(an);
    guint n = json_array_get_length(a);
    /* tokenizers does not take the ids written here: it adds the tokens in order, each one
     * already in model.vocab keeping its id there, each other taking the next id after the
     * vocabulary's size (AddedVocabulary::add_tokens), and only logs a warning where the file
     * says otherwise. A file whose ids are not those (an entry dropped, moved or renumbered:
     * everything after it shifts) gives other ids in Python than the file's, so the model's
     * image_token_id and eos no longer name these tokens: refused, naming the first one. */
    int64_t next_new = g_hash_table_size(tok->vocab);
    for (guint i = 0; i < n; i++) {
        JsonNode *e = json_array_get_element(a, i);
        if (!JSON_NODE_HOLDS_OBJECT(e))
            return dq_fail(err, DQ_ERR_FORMAT, "%s: added_tokens[%u] is not an object", tok->path,
                           i);
        JsonObject *o = json_node_get_object(e);
        const char *content = json_str_member(o, "content");
        JsonNode *idn = json_object_get_member(o, "id");
        if (content == NULL || idn == NULL || !JSON_NODE_HOLDS_VALUE(idn) ||
            json_node_get_value_type(idn) != G_TYPE_INT64)
            return dq_fail(err, DQ_ERR_FORMAT, "%s: added_tokens[%u] lacks content or id",
                           tok->path, i);
        gint64 id = json_node_get_int(idn);
        if (id < 0 || id >= MAX_TOKEN_ID)
            return dq_fail(err, DQ_ERR_FORMAT, "%s: added token '%s' has id out of range",
                           tok->path, content);
        if (content[0] == '\0')
            continue; /* HF ignores empty added tokens */
        int64_t want = added_id(tok, content);
        if (want < 0)
            want = vocab_lookup(tok->vocab, content);
        if (want < 0)
            want = next_new++;
        if (id != want)
            return dq_fail(err, DQ_ERR_FORMAT,
                           "%s: added token '%s' has id %" G_GINT64_FORMAT
                           ", but tokenizers gives it %" G_GINT64_FORMAT
                           " (added tokens not in model.vocab take the ids from its size, %u, in "
                           "the order listed: one is missing, moved or renumbered)",
                           tok->path, content, id, want, g_hash_table_size(tok->vocab));
        static const char *const flags[] = {"single_word", "lstrip", "rstrip"};
        for (size_t f = 0; f < G_N_ELEMENTS(flags); f++)
            if (json_bool_member(o, flags[f], FALSE))
                return dq_fail(err, DQ_ERR_UNSUPPORTED,
                               "%s: added token '%s' has %s=true; not supported", tok->path,
                               content, flags[f]);
        if (!utf8_valid((const guint8 *)content, strlen(content)))
            return dq_fail(err, DQ_ERR_FORMAT, "%s: added token %u is not UTF-8", tok->path, i);
        if (added_id(tok, content) >= 0)
            continue;
        gboolean special = json_bool_member(o, "special", FALSE);
        put_added(tok, content, (int32_t)id, special, json_bool_member(o, "normalized", !special));
    }
    return TRUE;
}

static gboolean compile_regex(DqTokenizer *tok, GError **err) {
    int ec;
    PCRE2_SIZE eoff;
    tok->split_re = pcre2_compile((PCRE2_SPTR)GPT2_PATTERN, PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &ec, &eoff, NULL);
    if (tok->split_re == NULL) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: PCRE2 cannot compile the split pattern: %s",
                       tok->path, (const char *)msg);
    }
    /* JIT is an optimisation only: without it (e.g. under some sanitizers) matching is slower. */
    pcre2_jit_compile(tok->split_re, PCRE2_JIT_COMPLETE);
    return TRUE;
}

static int32_t added_id(const DqTokenizer *tok, const char *content) {
    return GPOINTER_TO_INT(g_hash_table_lookup(tok->added, content)) - 1;
}

/* ---- binary cache
 *
 * json-glib needs 250-450 ms for the 3.5 MB tokenizer.json of SmolVLM (its scanner, not our
 * code), and every worker process loads it. So the parsed result (flags, vocab, merges, added
 * tokens) is kept in $DOCQA_CACHE_DIR (default: the user cache dir + "/docqa"; "off" disables)
 * under the SHA-256 of the JSON bytes, and read back in a few tens of ms. Cache files are
 * written atomically; one that is unreadable, truncated or inconsistent is ignored (the JSON is
 * parsed again): every id and length is bounds-checked.
 *
 * A well-formed cache file decides the ids and the text of every token, so whoever may write it
 * decides the answers. It is used only from a directory that is the user's own and that no one
 * else may write into (nor may anyone rename it away: its parents up to the home directory are
 * the user's or root's, and group- or world-writable only with the sticky bit, as /tmp), and
 * only when the file itself is the user's and not writable by others: the rule ssh applies to
 * ~/.ssh. The JSON's SHA-256 stored in the file guards against a stale or misnamed file only,
 * never against someone who may write the file: they can write the matching digest too. */
/* 03: the JSON's SHA-256 follows the byte-order mark. 02: files refused since (duplicate vocab
 * ids, added-token ids tokenizers would not give, no merges) may have 01 caches, which must not
 * let them load. */
#define CACHE_MAGIC  "DQTOKC03"
#define CACHE_ENDIAN 0x01020304u

/* One note a process for a cache that is not used, so that a shared or careless set-up is
 * visible without flooding a worker's log. */
static void cache_note_once(const char *fmt, const char *path) {
    static gsize noted = 0;
    if (g_once_init_enter(&noted)) {
        /* the folder comes from DOCQA_CACHE_DIR, $XDG_CACHE_HOME or $HOME: any bytes */
        dq_print_line(stderr, fmt, path);
        g_once_init_leave(&noted, 1);
    }
}

/* $DOCQA_CACHE_DIR, else $XDG_CACHE_HOME/docqa, else ~/.cache/docqa. Not GLib's
 * g_get_user_cache_dir, which takes a relative XDG_CACHE_HOME (the XDG spec says to ignore one:
 * the cache would move with the current folder) and builds on a home folder that does not
 * exist (HOME=/nonexistent, a system user's): root's mkdir would make it. Without a home, no
 * cache, said once. */
static char *cache_dir(void) {
    const char *dir = g_getenv("DOCQA_CACHE_DIR");
    if (dir != NULL && strcmp(dir, "off") == 0)
        return NULL;
    if (dir != NULL && *dir)
        return g_strdup(dir);
    const char *xdg = g_getenv("XDG_CACHE_HOME");
    if (xdg != NULL && g_path_is_absolute(xdg))
        return g_build_filename(xdg, "docqa", NULL);
    const char *home = g_get_home_dir();
    if (!g_file_test(home, G_FILE_TEST_IS_DIR)) {
        cache_note_once(
            "docqa: note: tokenizer cache: the home folder %s does not exist, so nothing is "
            "cached (tokenizer.json is parsed each time; DOCQA_CACHE_DIR names "
            "another folder)",
            home);
        return NULL;
    }
    return g_build_filename(home, ".cache", "docqa", NULL);
}

/* Can someone other than the user (or root) replace what `st` names, or an entry in it? */
static gboolean others_may_write(const struct stat *st, gboolean sticky_ok) {
    if (st->st_uid != geteuid() && st->st_uid != 0)
        return TRUE;
    return (st->st_mode & (S_IWGRP | S_IWOTH)) != 0 && !(sticky_ok && (st->st_mode & S_ISVTX));
}

/* Creates the cache directory (0700) when it is missing; TRUE when it may be used. A directory
 * that cannot be made (a read-only home) only costs the JSON parse, silently. */
static gboolean cache_dir_trusted(const char *dir) {
    if (g_mkdir_with_parents(dir, 0700) != 0)
        return FALSE;
    /* judged where it really is: a symlinked folder by its target and the target's parents */
    char *abs = realpath(dir, NULL);
    if (abs == NULL)
        return FALSE;
    struct stat st;
    gboolean ok = stat(abs, &st) == 0;
    if (ok && (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
               (st.st_mode & (S_IWGRP | S_IWOTH)) != 0)) {
        cache_note_once(
            "docqa: note: tokenizer cache %s is not a directory of yours that only you may "
            "write (not used; tokenizer.json is parsed instead)",
            dir);
        ok = FALSE;
    }
    /* the parents, up to and including the home directory when the cache is under it, else up
     * to / */
    char *home = realpath(g_get_home_dir(), NULL);
    char *p = g_path_get_dirname(abs);
    while (ok) {
        if (stat(p, &st) != 0 || others_may_write(&st, TRUE)) {
            cache_note_once(
                "docqa: note: tokenizer cache: %s may be written by others, so the cache "
                "under it is not used (tokenizer.json is parsed instead)",
                p);
            ok = FALSE;
            break;
        }
        if ((home != NULL && strcmp(p, home) == 0) || strcmp(p, "/") == 0)
            break;
        char *up = g_path_get_dirname(p);
        g_free(p);
        p = up;
    }
    g_free(p);
    free(home);
    free(abs);
    return ok;
}

static char *cache_file_for(const char *json, size_t len, guint8 digest[32]) {
    char *dir = cache_dir();
    if (dir == NULL || !cache_dir_trusted(dir)) {
        g_free(dir);
        return NULL;
    }
    GChecksum *sum = g_checksum_new(G_CHECKSUM_SHA256);
    g_checksum_update(sum, (const guchar *)json, len);
    gsize n = 32;
    g_checksum_get_digest(sum, digest, &n);
    char *name = g_strdup_printf("tokenizer-%s.bin", g_checksum_get_string(sum));
    char *path = g_build_filename(dir, name, NULL);
    g_checksum_free(sum);
    g_free(name);
    g_free(dir);
    return path;
}

static void put_u32(GByteArray *b, uint32_t v) {
    g_byte_array_append(b, (const guint8 *)&v, 4);
}

static void put_str(GByteArray *b, const char *s) {
    put_u32(b, (uint32_t)strlen(s));
    g_byte_array_append(b, (const guint8 *)s, (guint)strlen(s));
}

static void cache_write(const DqTokenizer *tok, const char *path, const guint8 digest[32]) {
    GByteArray *b = g_byte_array_new();
    g_byte_array_append(b, (const guint8 *)CACHE_MAGIC, 8);
    put_u32(b, CACHE_ENDIAN);
    g_byte_array_append(b, digest, 32);
    guint8 flags[8] = {(guint8)tok->has_digits, (guint8)tok->digits_individual,
                       (guint8)tok->byte_level_regex, (guint8)tok->add_prefix_space,
                       (guint8)tok->ignore_merges};
    g_byte_array_append(b, flags, sizeof flags);
    put_u32(b, (uint32_t)tok->n_ids);
    put_u32(b, g_hash_table_size(tok->vocab));
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, tok->vocab);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        put_u32(b, (uint32_t)(GPOINTER_TO_INT(v) - 1));
        put_str(b, k);
    }
    uint32_t n_merges = 0;
    for (size_t i = 0; i <= tok->merges.mask; i++)
        n_merges += tok->merges.keys[i] != 0;
    put_u32(b, n_merges);
    for (size_t i = 0; i <= tok->merges.mask; i++) {
        if (tok->merges.keys[i] == 0)
            continue;
        uint64_t key = tok->merges.keys[i] - 1;
        put_u32(b, (uint32_t)(key >> 32));
        put_u32(b, (uint32_t)key);
        put_u32(b, (uint32_t)tok->merges.rank[i]);
        put_u32(b, (uint32_t)tok->merges.merged[i]);
    }
    put_u32(b, g_hash_table_size(tok->added));
    g_hash_table_iter_init(&it, tok->added);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        int32_t id = GPOINTER_TO_INT(v) - 1;
        put_u32(b, (uint32_t)id);
        put_u32(b, tok->id_flags[id] & (ID_SPECIAL | ID_NORMALIZED));
        put_str(b, k);
    }
    /* best effort: a read-only folder only costs the JSON parse next time; 0600 whatever the
     * umask, as a file others may write is not read back */
    g_file_set_contents_full(path, (const char *)b->data, b->len, G_FILE_SET_CONTENTS_CONSISTENT,
                             0600, NULL);
    g_byte_array_free(b, TRUE);
}

typedef struct {
    const guint8 *p, *end;
    gboolean ok;
} Reader;

static uint32_t get_u32(Reader *r) {
    uint32_t v = 0;
    if (r->end - r->p < 4) {
        r->ok = FALSE;
        return 0;
    }
    memcpy(&v, r->p, 4);
    r->p += 4;
    return v;
}

/* A length-prefixed string copied into the tokenizer's string chunk; NULL when malformed. */
static const char *get_str(Reader *r, DqTokenizer *tok) {
    uint32_t n = get_u32(r);
    if (!r->ok || (size_t)(r->end - r->p) < n || n == 0 || memchr(r->p, 0, n) != NULL) {
        r->ok = FALSE;
        return NULL;
    }
    const char *s = g_string_chunk_insert_len(tok->strings, (const char *)r->p, n);
    r->p += n;
    return s;
}

/* The cache file at `path`, mapped; NULL when it is absent, not a regular file, or not to be
 * trusted. */
static GMappedFile *cache_map(const char *path) {
    /* O_NOFOLLOW: a link planted in place of the file is not followed to a file of others */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return NULL;
    }
    if (st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        cache_note_once("docqa: note: tokenizer cache file %s is not yours, or others may write it "
                        "(not used; tokenizer.json is parsed instead)",
                        path);
        close(fd);
        return NULL;
    }
    GMappedFile *mf = g_mapped_file_new_from_fd(fd, FALSE, NULL);
    close(fd);
    return mf;
}

/* The magic, the byte order, the digest of the tokenizer.json it was made from, and the
 * pre-tokenizer's flags. */
static gboolean cache_read_header(Reader *r, DqTokenizer *tok, const guint8 digest[32]) {
    if (r->end - r->p < 52 || memcmp(r->p, CACHE_MAGIC, 8) != 0)
        return FALSE;
    r->p += 8;
    if (get_u32(r) != CACHE_ENDIAN || memcmp(r->p, digest, 32) != 0)
        return FALSE;
    r->p += 32;
    if (r->end - r->p < 8)
        return FALSE;
    tok->has_digits = r->p[0], tok->digits_individual = r->p[1];
    tok->byte_level_regex = r->p[2], tok->add_prefix_space = r->p[3], tok->ignore_merges = r->p[4];
    r->p += 8;
    return TRUE;
}

static gboolean cache_read_vocab(Reader *r, DqTokenizer *tok) {
    uint32_t n_ids = get_u32(r);
    if (!r->ok || n_ids == 0 || n_ids > MAX_TOKEN_ID)
        return FALSE;
    tok->n_ids = (int32_t)n_ids;
    tok->id_to_tok = g_new0(const char *, n_ids);
    tok->id_flags = g_new0(guint8, n_ids);
    uint32_t n_vocab = get_u32(r);
    for (uint32_t i = 0; r->ok && i < n_vocab; i++) {
        uint32_t id = get_u32(r);
        const char *t = get_str(r, tok);
        /* as tokenizer.json gives them: UTF-8 (the decoder walks tokens as UTF-8 and would step
         * over the NUL after a cut character) and unique (an object's keys) */
        if (!r->ok || id >= n_ids || tok->id_to_tok[id] != NULL ||
            !utf8_valid((const guint8 *)t, strlen(t)) || g_hash_table_contains(tok->vocab, t))
            r->ok = FALSE;
        else {
            g_hash_table_insert(tok->vocab, (gpointer)t, GINT_TO_POINTER((int)id + 1));
            tok->id_to_tok[id] = t;
            tok->id_flags[id] |= ID_VOCAB;
        }
    }
    return r->ok;
}

static gboolean cache_read_merges(Reader *r, DqTokenizer *tok) {
    const uint32_t n_ids = (uint32_t)tok->n_ids;
    uint32_t n_merges = get_u32(r);
    if (r->ok && (size_t)(r->end - r->p) / 16 < n_merges)
        r->ok = FALSE;
    if (r->ok)
        merges_init(&tok->merges, n_merges);
    for (uint32_t i = 0; r->ok && i < n_merges; i++) {
        uint32_t a = get_u32(r), b = get_u32(r), rank = get_u32(r), m = get_u32(r);
        if (a >= n_ids || b >= n_ids || m >= n_ids || rank > INT32_MAX)
            r->ok = FALSE;
        else
            merges_put(&tok->merges, (int32_t)a, (int32_t)b, (int32_t)rank, (int32_t)m);
    }
    return r->ok;
}

static gboolean cache_read_added(Reader *r, DqTokenizer *tok) {
    const uint32_t n_ids = (uint32_t)tok->n_ids;
    uint32_t n_added = get_u32(r);
    for (uint32_t i = 0; r->ok && i < n_added; i++) {
        uint32_t id = get_u32(r), flags = get_u32(r);
        const char *c = get_str(r, tok);
        if (!r->ok || id >= n_ids || (tok->id_flags[id] & ID_ADDED) ||
            g_hash_table_contains(tok->added, c) || !utf8_valid((const guint8 *)c, strlen(c))) {
            r->ok = FALSE;
            break;
        }
        g_hash_table_insert(tok->added, (gpointer)c, GINT_TO_POINTER((int)id + 1));
        tok->id_to_tok[id] = c;
        tok->id_flags[id] |= ID_ADDED | (flags & (ID_SPECIAL | ID_NORMALIZED));
        trie_add(flags & ID_NORMALIZED ? &tok->trie_norm : &tok->trie_raw, c, (int32_t)id);
    }
    return r->ok;
}

/* Fills tok from a cache file; FALSE (tok partly filled: the caller starts over) when the file
 * is absent or not to be trusted. */
static gboolean cache_read(DqTokenizer *tok, const char *path, const guint8 digest[32]) {
    GMappedFile *mf = cache_map(path);
    if (mf == NULL)
        return FALSE;
    Reader r = {(const guint8 *)g_mapped_file_get_contents(mf), NULL, TRUE};
    r.end = r.p + g_mapped_file_get_length(mf);
    gboolean ok = cache_read_header(&r, tok, digest) && cache_read_vocab(&r, tok) &&
                  cache_read_merges(&r, tok) && cache_read_added(&r, tok) && r.p == r.end &&
                  tok->merges.keys != NULL;
    g_mapped_file_unref(mf);
    return ok;
}

/* ---- loading */

static DqTokenizer *tokenizer_new(const char *path) {
    DqTokenizer *tok = g_new0(DqTokenizer, 1);
    tok->path = g_strdup(path);
    tok->strings = g_string_chunk_new(1 << 16);
    tok->vocab = g_hash_table_new(g_str_hash, g_str_equal);
    tok->added = g_hash_table_new(g_str_hash, g_str_equal);
    tok->cache = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_mutex_init(&tok->cache_lock);
    trie_init(&tok->trie_raw);
    trie_init(&tok->trie_norm);
    byte_map_init(tok);
    return tok;
}

/* A vocabulary of whole words with no merges: tokenizers loads it and encodes every character on
 * its own, ids the model never saw in training, so answers are garbage. Refused, unless the
 * vocabulary has no token longer than a character that is not an added token (a character-level
 * BPE) or ignore_merges looks whole words up in it. */
static gboolean check_merges_reach(const DqTokenizer *tok, JsonObject *model, GError **err) {
    if (tok->ignore_merges || json_array_get_length(json_object_get_array_member(model, "merges")))
        return TRUE;
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, tok->vocab);
    while (g_hash_table_iter_next(&it, &k, &v))
        if (g_utf8_strlen(k, -1) > 1 && added_id(tok, k) < 0)
            return dq_fail(err, DQ_ERR_FORMAT,
                           "%s: model.merges is empty, so no text gives the vocabulary's tokens of "
                           "several characters (such as '%s'): every character would be a token",
                           tok->path, (const char *)k);
    return TRUE;
}

/* Parses the JSON text into tok. */
static gboolean load_json(DqTokenizer *tok, const char *data, size_t len, GError **err) {
    /* the mutable parser: the immutable one also hashes every node while sealing */
    JsonParser *parser = dq_json_parse(data, (gssize)len, tok->path, DQ_JSON_DEFAULT, err);
    JsonObject *model = NULL;
    gboolean ok = FALSE;
    if (parser == NULL)
        return FALSE;
    JsonNode *rootn = json_parser_get_root(parser);
    if (!JSON_NODE_HOLDS_OBJECT(rootn)) {
        dq_fail(err, DQ_ERR_FORMAT, "%s: not a JSON object", tok->path);
        goto done;
    }
    JsonObject *root = json_node_get_object(rootn);
    if (!load_checks(tok, root, err) || !load_pre_tokenizer(tok, root, err) ||
        !load_model(tok, root, &model, err) || !load_vocab(tok, model, err))
        goto done;
    tok->id_to_tok = g_new0(const char *, tok->n_ids);
    tok->id_flags = g_new0(guint8, tok->n_ids);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, tok->vocab);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        int id = GPOINTER_TO_INT(v) - 1;
        /* tokenizers loads such a vocabulary and decodes the id as only one of its tokens:
         * text with the other comes back changed ("hello world" -> "world world"). */
        if (tok->id_to_tok[id] != NULL) {
            dq_fail(err, DQ_ERR_FORMAT, "%s: model.vocab gives id %d to both '%s' and '%s'",
                    tok->path, id, tok->id_to_tok[id], (const char *)k);
            goto done;
        }
        tok->id_to_tok[id] = k;
        tok->id_flags[id] |= ID_VOCAB;
    }
    ok = load_merges(tok, model, err) && load_added(tok, root, err) &&
         check_merges_reach(tok, model, err);
done:
    g_object_unref(parser);
    return ok;
}

static void refresh_derived(DqTokenizer *tok);

/* What both load paths share: derived tables and the split regex. */
static gboolean load_finish(DqTokenizer *tok, GError **err) {
    if (!compile_regex(tok, err))
        return FALSE;
    for (int b = 0; b < 256; b++) {
        char s[4] = {0};
        memcpy(s, tok->byte_char[b], tok->byte_char_len[b]);
        tok->byte_id[b] = vocab_lookup(tok->vocab, s);
    }
    refresh_derived(tok);
    return TRUE;
}

/* What follows from the id tables: the number of ids, the pipeline's tokens. */
static void refresh_derived(DqTokenizer *tok) {
    tok->vocab_size = 0;
    for (int32_t i = 0; i < tok->n_ids; i++)
        tok->vocab_size += tok->id_flags[i] != 0;
    tok->special = (DqSpecialIds){
        .image = added_id(tok, "<image>"),
        .fake_token_around_image = added_id(tok, "<fake_token_around_image>"),
        .end_of_utterance = added_id(tok, "<end_of_utterance>"),
        .global_img = added_id(tok, "<global-img>"),
        .im_start = added_id(tok, "<|im_start|>"),
        .im_end = added_id(tok, "<|im_end|>"),
        .endoftext = added_id(tok, "<|endoftext|>"),
    };
}

int32_t tokenizer_add_special_token(DqTokenizer *tok, const char *content) {
    int32_t id = added_id(tok, content);
    if (id >= 0)
        return id;
    /* AddedVocabulary::add_tokens: a token of the model's vocabulary keeps its id, another takes
     * the one after the largest added id, or the vocabulary's size if that is larger. */
    id = vocab_lookup(tok->vocab, content);
    if (id < 0) {
        id = (int32_t)g_hash_table_size(tok->vocab);
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, tok->added);
        while (g_hash_table_iter_next(&it, &k, &v))
            id = MAX(id, GPOINTER_TO_INT(v));
    }
    put_added(tok, content, id, TRUE, FALSE);
    refresh_derived(tok);
    return id;
}

int32_t tokenizer_id_limit(const DqTokenizer *tok) {
    return tok->n_ids;
}

DqTokenizer *tokenizer_load(const char *path, GError **err) {
    size_t len = 0;
    char *data = dq_file_read_regular(path, DQ_JSON_MAX_FILE_BYTES, &len, err);
    if (data == NULL)
        return NULL;
    guint8 digest[32];
    char *cache_path = cache_file_for(data, len, digest);
    DqTokenizer *tok = tokenizer_new(path);
    gboolean from_cache = cache_path != NULL && cache_read(tok, cache_path, digest);
    if (!from_cache) {
        tokenizer_free(tok);
        tok = tokenizer_new(path);
    }
    gboolean ok = from_cache || load_json(tok, data, len, err);
    ok = ok && load_finish(tok, err);
    if (ok && !from_cache && cache_path != NULL)
        cache_write(tok, cache_path, digest);
    g_free(cache_path);
    g_free(data);
    if (!ok) {
        tokenizer_free(tok);
        return NULL;
    }
    return tok;
}

DqTokenizer *tokenizer_load_from_data(const char *json, size_t len, const char *name,
                                      GError **err) {
    DqTokenizer *tok = tokenizer_new(name);
    if (!load_json(tok, json, len, err) || !load_finish(tok, err)) {
        tokenizer_free(tok);
        return NULL;
    }
    return tok;
}

DqTokenizer *tokenizer_load_snapshot(const char *snapshot_dir, GError **err) {
    char *path = g_build_filename(snapshot_dir, "tokenizer.json", NULL);
    DqTokenizer *tok = tokenizer_load(path, err);
    g_free(path);
    return tok;
}

void tokenizer_free(DqTokenizer *tok) {
    if (tok == NULL)
        return;
    g_free(tok->path);
    g_hash_table_destroy(tok->vocab);
    g_hash_table_destroy(tok->added);
    g_hash_table_destroy(tok->cache);
    g_mutex_clear(&tok->cache_lock);
    g_string_chunk_free(tok->strings);
    g_free(tok->id_to_tok);
    g_free(tok->id_flags);
    merges_free(&tok->merges);
    g_array_free(tok->trie_raw.nodes, TRUE);
    g_array_free(tok->trie_norm.nodes, TRUE);
    if (tok->split_re)
        pcre2_code_free(tok->split_re);
    g_free(tok);
}

/* ================================================================ encoding */

typedef struct {
    int32_t rank, pos, merged;
} HeapItem;

static inline gboolean heap_less(const HeapItem *a, const HeapItem *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(HeapItem *h, size_t *n, HeapItem it) {
    size_t i = (*n)++;
    h[i] = it;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&h[i], &h[p]))
            break;
        HeapItem t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

static HeapItem heap_pop(HeapItem *h, size_t *n) {
    HeapItem top = h[0];
    h[0] = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && heap_less(&h[l], &h[m]))
            m = l;
        if (r < *n && heap_less(&h[r], &h[m]))
            m = r;
        if (m == i)
            break;
        HeapItem t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
    return top;
}

/* BPE over one pre-tokenized word (raw bytes). Follows tokenizers' Word::merge_all: a heap of
 * (rank, position), lowest rank first and leftmost on ties, stale entries skipped. */
static void bpe_word(const DqTokenizer *tok, const guint8 *w, size_t n, GArray *out) {
    if (tok->ignore_merges) {
        GString *s = g_string_sized_new(n * 2);
        for (size_t i = 0; i < n; i++)
            g_string_append_len(s, tok->byte_char[w[i]], tok->byte_char_len[w[i]]);
        int32_t id = vocab_lookup(tok->vocab, s->str);
        g_string_free(s, TRUE);
        if (id >= 0) {
            g_array_append_val(out, id);
            return;
        }
    }
    /* symbols: id, prev, next, alive */
    int32_t *sym = g_new(int32_t, 4 * n + 1);
    int32_t *prev = sym + n, *next = prev + n, *alive = next + n;
    size_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = tok->byte_id[w[i]];
        if (id < 0)
            continue; /* no unk token: HF drops characters missing from the vocab */
        sym[ns] = id;
        prev[ns] = (int32_t)ns - 1;
        next[ns] = (int32_t)ns + 1;
        alive[ns] = 1;
        ns++;
    }
    if (ns > 0)
        next[ns - 1] = -1;
    HeapItem *heap = g_new(HeapItem, 2 * ns + 2);
    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        int32_t rank, merged;
        if (merges_get(&tok->merges, sym[i], sym[i + 1], &rank, &merged))
            heap_push(heap, &nh, (HeapItem){rank, (int32_t)i, merged});
    }
    while (nh > 0) {
        HeapItem top = heap_pop(heap, &nh);
        int32_t p = top.pos;
        if (!alive[p] || next[p] < 0)
            continue;
        int32_t r = next[p];
        int32_t rank, merged;
        if (!merges_get(&tok->merges, sym[p], sym[r], &rank, &merged) || merged != top.merged)
            continue;
        sym[p] = merged;
        alive[r] = 0;
        next[p] = next[r];
        if (next[r] >= 0)
            prev[next[r]] = p;
        if (prev[p] >= 0 && merges_get(&tok->merges, sym[prev[p]], sym[p], &rank, &merged))
            heap_push(heap, &nh, (HeapItem){rank, prev[p], merged});
        if (next[p] >= 0 && merges_get(&tok->merges, sym[p], sym[next[p]], &rank, &merged))
            heap_push(heap, &nh, (HeapItem){rank, p, merged});
    }
    for (int32_t i = ns > 0 ? 0 : -1; i >= 0; i = next[i])
        g_array_append_val(out, sym[i]);
    g_free(heap);
    g_free(sym);
}

static void bpe_word_cached(DqTokenizer *tok, const guint8 *w, size_t n, GArray *out) {
    if (n > CACHE_MAX_WORD) {
        bpe_word(tok, w, n, out);
        return;
    }
    char key[CACHE_MAX_WORD + 1];
    memcpy(key, w, n);
    key[n] = '\0';
    /* Words with a NUL byte cannot be string keys; they are rare, skip the cache. */
    if (memchr(w, 0, n) != NULL) {
        bpe_word(tok, w, n, out);
        return;
    }
    g_mutex_lock(&tok->cache_lock);
    const int32_t *hit = g_hash_table_lookup(tok->cache, key);
    if (hit != NULL) {
        g_array_append_vals(out, hit + 1, (guint)hit[0]);
        g_mutex_unlock(&tok->cache_lock);
        return;
    }
    g_mutex_unlock(&tok->cache_lock);
    guint start = out->len;
    bpe_word(tok, w, n, out);
    guint cnt = out->len - start;
    int32_t *val = g_new(int32_t, cnt + 1);
    val[0] = (int32_t)cnt;
    memcpy(val + 1, &g_array_index(out, int32_t, start), cnt * sizeof(int32_t));
    g_mutex_lock(&tok->cache_lock);
    if (g_hash_table_size(tok->cache) >= CACHE_MAX_ENTRIES)
        g_hash_table_remove_all(tok->cache);
    g_hash_table_replace(tok->cache, g_strdup(key), val);
    g_mutex_unlock(&tok->cache_lock);
}

/* ByteLevel pre-tokenizer on one piece, then BPE on each word. */
static void byte_level_piece(DqTokenizer *tok, const guint8 *s, size_t n, pcre2_match_data *md,
                             GArray *out) {
    guint8 *tmp = NULL;
    if (tok->add_prefix_space && s[0] != ' ') {
        tmp = g_malloc(n + 1);
        tmp[0] = ' ';
        memcpy(tmp + 1, s, n);
        s = tmp;
        n++;
    }
    if (!tok->byte_level_regex) {
        bpe_word_cached(tok, s, n, out);
        g_free(tmp);
        return;
    }
    size_t off = 0;
    while (off < n) {
        int rc = pcre2_match(tok->split_re, s, n, off, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc < 0) {
            /* The pattern covers every character; keep the rest as one word just in case. */
            bpe_word_cached(tok, s + off, n - off, out);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[0] > off) /* unmatched gap: isolated like the matches */
            bpe_word_cached(tok, s + off, ov[0] - off, out);
        if (ov[1] == ov[0]) { /* cannot happen with this pattern; never loop forever */
            off = ov[1] + 1;
            continue;
        }
        bpe_word_cached(tok, s + ov[0], ov[1] - ov[0], out);
        off = ov[1];
    }
    g_free(tmp);
}

/* Rust's char::is_numeric: general categories Nd, Nl, No. */
static inline gboolean is_numeric_char(gunichar c) {
    if (c < 0x80)
        return c >= '0' && c <= '9';
    GUnicodeType t = g_unichar_type(c);
    return t == G_UNICODE_DECIMAL_NUMBER || t == G_UNICODE_LETTER_NUMBER ||
           t == G_UNICODE_OTHER_NUMBER;
}

/* A text segment without added tokens: Digits pre-tokenizer (if declared), then ByteLevel. */
static void encode_segment(DqTokenizer *tok, const guint8 *s, size_t n, pcre2_match_data *md,
                           GArray *out) {
    if (n == 0)
        return;
    if (!tok->has_digits) {
        byte_level_piece(tok, s, n, md, out);
        return;
    }
    size_t start = 0, i = 0;
    while (i < n) {
        size_t clen = 1;
        gunichar c = s[i];
        if (c >= 0x80) {
            c = g_utf8_get_char((const char *)s + i);
            clen = (size_t)(g_utf8_next_char((const char *)s + i) - (const char *)(s + i));
        }
        if (!is_numeric_char(c)) {
            i += clen;
            continue;
        }
        if (tok->digits_individual) {
            if (i > start)
                byte_level_piece(tok, s + start, i - start, md, out);
            byte_level_piece(tok, s + i, clen, md, out);
            i += clen;
            start = i;
        } else {
            size_t j = i + clen;
            while (j < n) {
                gunichar d = s[j] < 0x80 ? s[j] : g_utf8_get_char((const char *)s + j);
                if (!is_numeric_char(d))
                    break;
                j = (size_t)(g_utf8_next_char((const char *)s + j) - (const char *)s);
            }
            if (i > start)
                byte_level_piece(tok, s + start, i - start, md, out);
            byte_level_piece(tok, s + i, j - i, md, out);
            i = start = j;
        }
    }
    if (n > start)
        byte_level_piece(tok, s + start, n - start, md, out);
}

/* Splits out the added tokens of one trie, leftmost-longest; `next` handles the gaps. */
static void split_added(DqTokenizer *tok, const AddedTrie *trie, const guint8 *s, size_t n,
                        gboolean last_pass, pcre2_match_data *md, GArray *out) {
    if (trie->empty) {
        if (last_pass)
            encode_segment(tok, s, n, md, out);
        else
            split_added(tok, &tok->trie_norm, s, n, TRUE, md, out);
        return;
    }
    size_t start = 0, i = 0;
    while (i < n) {
        int32_t id;
        size_t m = trie->first[s[i]] ? trie_longest(trie, s + i, n - i, &id) : 0;
        if (m == 0) {
            i++;
            continue;
        }
        if (i > start) {
            if (last_pass)
                encode_segment(tok, s + start, i - start, md, out);
            else
                split_added(tok, &tok->trie_norm, s + start, i - start, TRUE, md, out);
        }
        g_array_append_val(out, id);
        i += m;
        start = i;
    }
    if (n > start) {
        if (last_pass)
            encode_segment(tok, s + start, n - start, md, out);
        else
            split_added(tok, &tok->trie_norm, s + start, n - start, TRUE, md, out);
    }
}

int32_t *tokenizer_encode(DqTokenizer *tok, const char *text, gssize len, size_t *n_ids,
                          GError **err) {
    if (tok == NULL || (text == NULL && len != 0) || n_ids == NULL) {
        dq_fail(err, DQ_ERR_ARGS, "tokenizer_encode: NULL argument");
        return NULL;
    }
    size_t n = len < 0 ? strlen(text) : (size_t)len;
    char *fixed = NULL;
    const guint8 *s = (const guint8 *)text;
    if (!utf8_valid(s, n)) {
        fixed = tokenizer_utf8_lossy(text, n, &n);
        s = (const guint8 *)fixed;
    }
    GArray *out = g_array_sized_new(FALSE, FALSE, sizeof(int32_t), (guint)(n / 3 + 16));
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(tok->split_re, NULL);
    split_added(tok, &tok->trie_raw, s, n, FALSE, md, out);
    pcre2_match_data_free(md);
    g_free(fixed);
    *n_ids = out->len;
    return (int32_t *)g_array_free(out, FALSE);
}

/* ================================================================ decoding */

const char *tokenizer_id_to_token(const DqTokenizer *tok, int32_t id) {
    if (id < 0 || id >= tok->n_ids)
        return NULL;
    return tok->id_to_tok[id];
}

int32_t tokenizer_token_to_id(const DqTokenizer *tok, const char *token) {
    int32_t id = added_id(tok, token);
    return id >= 0 ? id : vocab_lookup(tok->vocab, token);
}

int32_t tokenizer_added_token_id(const DqTokenizer *tok, const char *content) {
    return added_id(tok, content);
}

gboolean tokenizer_is_special(const DqTokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_ids && (tok->id_flags[id] & ID_SPECIAL);
}

int tokenizer_vocab_size(const DqTokenizer *tok) {
    return tok->vocab_size;
}

const DqSpecialIds *tokenizer_special_ids(const DqTokenizer *tok) {
    return &tok->special;
}

int32_t tokenizer_row_col_id(const DqTokenizer *tok, int row, int col) {
    char name[64];
    g_snprintf(name, sizeof name, "<row_%d_col_%d>", row, col);
    return added_id(tok, name);
}

/* ByteLevel decoder for one token: every character maps back to its byte, or, when one of them
 * is not a byte-level character (an added token such as "<image>" is ASCII and maps fine, but
 * e.g. non-Latin added tokens do not), the token's own UTF-8 bytes. */
static void token_bytes(const DqTokenizer *tok, const char *t, GByteArray *out) {
    guint start = out->len;
    for (const char *p = t; *p;) {
        gunichar c = g_utf8_get_char(p);
        if (c >= G_N_ELEMENTS(tok->char_byte) || tok->char_byte[c] < 0) {
            g_byte_array_set_size(out, start);
            g_byte_array_append(out, (const guint8 *)t, (guint)strlen(t));
            return;
        }
        guint8 b = (guint8)tok->char_byte[c];
        g_byte_array_append(out, &b, 1);
        p = g_utf8_next_char(p);
    }
}

static gboolean id_decodable(const DqTokenizer *tok, int32_t id, gboolean skip_special) {
    if (id < 0 || id >= tok->n_ids || tok->id_to_tok[id] == NULL)
        return FALSE;
    return !(skip_special && (tok->id_flags[id] & ID_SPECIAL));
}

char *tokenizer_decode(const DqTokenizer *tok, const int32_t *ids, size_t n_ids,
                       gboolean skip_special, size_t *out_len) {
    GByteArray *bytes = g_byte_array_new();
    for (size_t i = 0; i < n_ids; i++)
        if (id_decodable(tok, ids[i], skip_special))
            token_bytes(tok, tok->id_to_tok[ids[i]], bytes);
    GString *s = g_string_sized_new(bytes->len + 1);
    utf8_lossy_append(s, bytes->data, bytes->len, TRUE);
    g_byte_array_free(bytes, TRUE);
    if (out_len)
        *out_len = s->len;
    return g_string_free(s, FALSE);
}

char *tokenizer_decode_text(const DqTokenizer *tok, const int32_t *ids, size_t n_ids) {
    size_t len = 0;
    char *text = tokenizer_decode(tok, ids, n_ids, TRUE, &len);
    if (strlen(text) == len)
        return text;
    GString *s = g_string_sized_new(len + 8);
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\0')
            g_string_append(s, "\xEF\xBF\xBD");
        else
            g_string_append_c(s, text[i]);
    g_free(text);
    return g_string_free(s, FALSE);
}

struct DqDecodeStream {
    const DqTokenizer *tok;
    gboolean skip_special;
    GByteArray *pending; /* bytes of an incomplete trailing character */
};

DqDecodeStream *tokenizer_stream_new(const DqTokenizer *tok, gboolean skip_special) {
    DqDecodeStream *s = g_new0(DqDecodeStream, 1);
    s->tok = tok;
    s->skip_special = skip_special;
    s->pending = g_byte_array_new();
    return s;
}

char *tokenizer_stream_push(DqDecodeStream *s, int32_t id, size_t *out_len) {
    GString *out = g_string_new(NULL);
    if (out_len)
        *out_len = 0;
    if (!id_decodable(s->tok, id, s->skip_special))
        return g_string_free(out, FALSE);
    token_bytes(s->tok, s->tok->id_to_tok[id], s->pending);
    size_t used = utf8_lossy_append(out, s->pending->data, s->pending->len, FALSE);
    g_byte_array_remove_range(s->pending, 0, (guint)used);
    if (out_len)
        *out_len = out->len;
    return g_string_free(out, FALSE);
}

char *tokenizer_stream_flush(DqDecodeStream *s, size_t *out_len) {
    GString *out = g_string_new(NULL);
    utf8_lossy_append(out, s->pending->data, s->pending->len, TRUE);
    g_byte_array_set_size(s->pending, 0);
    if (out_len)
        *out_len = out->len;
    return g_string_free(out, FALSE);
}

void tokenizer_stream_free(DqDecodeStream *s) {
    if (s == NULL)
        return;
    g_byte_array_free(s->pending, TRUE);
    g_free(s);
}
