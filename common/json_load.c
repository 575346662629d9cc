#include "json_load.h"

#include "text.h"

#include "dq_error.h"
#include "mapped_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *dq_file_read_regular(const char *path, size_t max_bytes, size_t *len, GError **err) {
    struct stat st;
    int fd = dq_open_regular(path, &st, err);
    if (fd < 0)
        return NULL;
    if ((uint64_t)st.st_size > max_bytes) {
        dq_fail(err, DQ_ERR_LIMIT, "%s: %" G_GINT64_FORMAT " bytes, more than the %zu MiB allowed",
                path, (gint64)st.st_size, max_bytes >> 20);
        close(fd);
        return NULL;
    }
    /* The size may change while we read: read to the end, but never past the cap. */
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = g_malloc(cap + 1);
    for (;;) {
        if (n == cap) {
            if (cap > max_bytes) {
                dq_fail(err, DQ_ERR_LIMIT, "%s: more than the %zu MiB allowed", path,
                        max_bytes >> 20);
                break;
            }
            cap = MIN(cap * 2, max_bytes + 1);
            buf = g_realloc(buf, cap + 1);
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            dq_fail(err, DQ_ERR_IO, "%s: cannot read: %s", path, g_strerror(errno));
            break;
        }
        if (got == 0) {
            close(fd);
            buf[n] = '\0';
            if (len != NULL)
                *len = n;
            return buf;
        }
        n += (size_t)got;
    }
    close(fd);
    g_free(buf);
    return NULL;
}

/* json-glib's scanner (GScanner's rules) takes more than JSON between values: C comments, and
 * strings in single quotes, in which a backslash escapes nothing. A quote or a bracket in them
 * is no JSON: the scans below step over them as json-glib does. The index of the last byte of
 * the comment or string that starts at text[i] (i itself when none does). */
static size_t skip_lenient(const char *text, size_t len, size_t i) {
    if (text[i] == '\'') {
        const char *end = memchr(text + i + 1, '\'', len - i - 1);
        return end != NULL ? (size_t)(end - text) : len - 1;
    }
    if (text[i] == '/' && i + 1 < len && text[i + 1] == '*') {
        for (size_t k = i + 2; k + 1 < len; k++)
            if (text[k] == '*' && text[k + 1] == '/')
                return k + 1;
        return len - 1;
    }
    return i;
}

gboolean dq_json_depth_ok(const char *text, size_t len, int max_depth, size_t *offset) {
    int depth = 0;
    gboolean in_string = FALSE;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++; /* the escaped character, a quote maybe */
            else if (c == '"')
                in_string = FALSE;
        } else if (c == '"') {
            in_string = TRUE;
        } else if (c == '\'' || c == '/') {
            i = skip_lenient(text, len, i);
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth) {
                if (offset != NULL)
                    *offset = i;
                return FALSE;
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return TRUE;
}

/* The raw text of the string literal that starts at text[start] (after its quote). */
static size_t literal_len(const char *text, size_t len, size_t start) {
    size_t i = start;
    while (i < len && text[i] != '"')
        i += text[i] == '\\' ? 2 : 1;
    return MIN(i, len) - start;
}

/* The value of 4 hex digits, or -1 when they are not all hex digits. json-glib decodes the 4
 * characters after \u whatever they are: "\u0.00" is a NUL to it too, where Python's json
 * refuses the escape. */
static int hex4(const char *p) {
    int v = 0;
    for (int k = 0; k < 4; k++) {
        int d = g_ascii_xdigit_value(p[k]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Looks for a \u escape without 4 hex digits, and when want_nul for \u0000 and for a UTF-16
 * surrogate escape without its other half (\ud800 not followed by \udc00..\udfff, or
 * \udc00..\udfff alone), in the string literals of `text`, which json-glib parsed (no deeper than
 * DQ_JSON_MAX_DEPTH). An escaped backslash before "u0000" is skipped with its escape, so
 * "\\u0000" (a backslash, then u0000) is no NUL. */
gboolean dq_json_find_bad_escape(const char *text, size_t len, gboolean want_nul,
                                 DqJsonBadEscape *found) {
    /* per open container: an object's latest key (key == NULL: an array, or no key yet) */
    struct {
        gboolean object;
        const char *key;
        size_t key_len;
    } open[DQ_JSON_MAX_DEPTH + 1];
    int depth = 0;
    gboolean expect_key = FALSE;
    guint strings = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '{' || c == '[') {
            if (depth == DQ_JSON_MAX_DEPTH + 1)
                return FALSE; /* dq_json_depth_ok refused it first */
            open[depth].object = c == '{';
            open[depth].key = NULL;
            open[depth].key_len = 0;
            depth++;
            expect_key = c == '{';
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
            expect_key = FALSE;
        } else if (c == ',') {
            expect_key = depth > 0 && open[depth - 1].object;
        } else if (c == '\'' || c == '/') {
            if (c == '\'') { /* a string to json-glib, without escapes (its key: not followed) */
                strings++;
                expect_key = FALSE;
            }
            i = skip_lenient(text, len, i);
        } else if (c == '"') {
            gboolean is_key = expect_key && depth > 0;
            size_t start = ++i;
            strings++;
            for (; i < len && text[i] != '"'; i++) {
                if (text[i] != '\\')
                    continue;
                int u = i + 1 < len && text[i + 1] == 'u' ? (i + 5 < len ? hex4(text + i + 2) : -1)
                                                          : 0x20; /* not \u: no problem */
                gboolean bad = u < 0;
                if (u >= 0xD800 && u <= 0xDBFF) {
                    /* a high surrogate: a low one must follow (json-glib refuses a \u escape
                     * of anything else after it, and takes any other character) */
                    int low = i + 11 < len && text[i + 6] == '\\' && text[i + 7] == 'u'
                                  ? hex4(text + i + 8)
                                  : -1;
                    if (low >= 0xDC00 && low <= 0xDFFF)
                        i += 6; /* the pair: on to the second backslash, its u skipped below */
                    else
                        bad = want_nul;
                } else if ((u == 0 || (u >= 0xDC00 && u <= 0xDFFF)) && want_nul) {
                    bad = TRUE;
                }
                if (bad) {
                    found->offset = i;
                    found->problem = u < 0    ? DQ_JSON_ESCAPE_BAD_HEX
                                     : u == 0 ? DQ_JSON_ESCAPE_NUL
                                              : DQ_JSON_ESCAPE_LONE_SURROGATE;
                    found->string = strings;
                    found->text = text + start;
                    found->text_len = literal_len(text, len, start);
                    found->is_key = is_key;
                    found->key = NULL;
                    found->key_len = 0;
                    if (is_key) {
                        found->key = text + start;
                        found->key_len = literal_len(text, len, start);
                    }
                    for (int d = depth - 1; d >= 0 && found->key == NULL; d--) {
                        found->key = open[d].key;
                        found->key_len = open[d].key_len;
                    }
                    return TRUE;
                }
                i++; /* the escaped character: a quote, or a backslash */
            }
            if (is_key) {
                open[depth - 1].key = text + start;
                open[depth - 1].key_len = i - start;
                expect_key = FALSE;
            }
        }
    }
    return FALSE;
}

/* Refuses a text holding such an escape in a string, naming the line and the key. */
static gboolean check_no_nul_escape(const char *text, size_t len, gboolean want_nul,
                                    const char *label, GError **err) {
    DqJsonBadEscape nul;
    if (!dq_json_find_bad_escape(text, len, want_nul, &nul))
        return TRUE;
    int line = 1;
    for (size_t i = 0; i < nul.offset; i++)
        line += text[i] == '\n';
    char *where = NULL;
    if (nul.key != NULL) {
        /* a key as written, escapes and all; a long one cut (it is only there to find the
         * place) */
        size_t shown_len = MIN(nul.key_len, 60);
        char *raw = g_strndup(nul.key, shown_len);
        char *shown = dq_utf8_escape_invalid(raw);
        where = g_strdup_printf(nul.is_key ? "key \"%s%s\"" : "a string under key \"%s%s\"", shown,
                                shown_len < nul.key_len ? "..." : "");
        g_free(shown);
        g_free(raw);
    }
    if (nul.problem == DQ_JSON_ESCAPE_BAD_HEX) {
        char *raw = g_strndup(text + nul.offset, MIN(len - nul.offset, 6));
        char *escape = dq_utf8_escape_invalid(raw);
        dq_fail(err, DQ_ERR_FORMAT, "%s: line %d: %s holds %s, a \\u escape without 4 hex digits",
                label, line, where != NULL ? where : "a string", escape);
        g_free(escape);
        g_free(raw);
    } else if (nul.problem == DQ_JSON_ESCAPE_LONE_SURROGATE) {
        dq_fail(err, DQ_ERR_FORMAT,
                "%s: line %d: %s holds %.6s, half of a UTF-16 surrogate pair without its other "
                "half, not a character",
                label, line, where != NULL ? where : "a string", text + nul.offset);
    } else {
        dq_fail(err, DQ_ERR_FORMAT,
                "%s: line %d: %s holds \\u0000 (U+0000): docqa cannot keep a NUL character "
                "inside a string",
                label, line, where != NULL ? where : "a string");
    }
    g_free(where);
    return FALSE;
}

/* Duplicate keys, through the parser's signals: a set of the keys seen for each object being
 * parsed (object-member comes after the member's value, so after any inner object ended). */
typedef struct {
    GPtrArray *open; /* GHashTable * of keys, one per object being parsed */
    char *duplicate; /* the first key seen twice */
    guint depth;     /* its object's nesting (1: the root) */
} KeyCheck;

static void on_object_start(JsonParser *parser, gpointer user) {
    (void)parser;
    KeyCheck *k = user;
    g_ptr_array_add(k->open, g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL));
}

static void on_object_member(JsonParser *parser, JsonObject *object, const char *name,
                             gpointer user) {
    (void)parser;
    (void)object;
    KeyCheck *k = user;
    if (k->open->len == 0)
        return;
    GHashTable *keys = g_ptr_array_index(k->open, k->open->len - 1);
    if (!g_hash_table_add(keys, g_strdup(name)) && k->duplicate == NULL) {
        k->duplicate = g_strdup(name);
        k->depth = k->open->len;
    }
}

static void on_object_end(JsonParser *parser, JsonObject *object, gpointer user) {
    (void)parser;
    (void)object;
    KeyCheck *k = user;
    if (k->open->len > 0)
        g_ptr_array_remove_index(k->open, k->open->len - 1);
}

JsonParser *dq_json_parse(const char *text, gssize len, const char *label, DqJsonFlags flags,
                          GError **err) {
    size_t n = len < 0 ? strlen(text) : (size_t)len, at = 0;
    if (n >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        /* json-glib skips it; Python's json (transformers) and serde_json refuse the file */
        dq_fail(err, DQ_ERR_FORMAT, "%s: starts with a UTF-8 byte order mark, not JSON", label);
        return NULL;
    }
    if (!dq_json_depth_ok(text, n, DQ_JSON_MAX_DEPTH, &at)) {
        dq_fail(err, DQ_ERR_FORMAT, "%s: JSON nested deeper than %d levels (at byte %zu)", label,
                DQ_JSON_MAX_DEPTH, at);
        return NULL;
    }
    JsonParser *parser = json_parser_new();
    KeyCheck keys = {.open = g_ptr_array_new_with_free_func((GDestroyNotify)g_hash_table_unref)};
    if (flags & DQ_JSON_UNIQUE_KEYS) {
        g_signal_connect(parser, "object-start", G_CALLBACK(on_object_start), &keys);
        g_signal_connect(parser, "object-member", G_CALLBACK(on_object_member), &keys);
        g_signal_connect(parser, "object-end", G_CALLBACK(on_object_end), &keys);
    }
    GError *jerr = NULL;
    gboolean ok = json_parser_load_from_data(parser, text, (gssize)n, &jerr);
    if (flags & DQ_JSON_UNIQUE_KEYS)
        g_signal_handlers_disconnect_by_data(parser, &keys);
    if (!ok) {
        /* json-glib quotes the text it stopped at as it decoded it: a lone surrogate escape
         * (\ud83d) becomes bytes that are no UTF-8, and the message is printed as is. */
        char *why = dq_utf8_escape_invalid(jerr->message);
        dq_fail(err, DQ_ERR_FORMAT, "%s: not valid JSON: %s", label, why);
        g_free(why);
        g_error_free(jerr);
    } else if (json_parser_get_root(parser) == NULL) {
        /* json-glib takes an empty text for a document; Python's json.loads does not */
        dq_fail(err, DQ_ERR_FORMAT, "%s: empty, not a JSON document", label);
        ok = FALSE;
    } else if (!check_no_nul_escape(text, n, !(flags & DQ_JSON_NUL_CHECKED), label, err)) {
        ok = FALSE;
    } else if (keys.duplicate != NULL) {
        char *key = dq_utf8_escape_invalid(keys.duplicate);
        dq_fail(err, DQ_ERR_FORMAT, "%s: key \"%s\" appears twice in %s", label, key,
                keys.depth == 1 ? "the top-level object" : "one object");
        g_free(key);
        ok = FALSE;
    }
    g_ptr_array_free(keys.open, TRUE);
    g_free(keys.duplicate);
    if (!ok) {
        g_object_unref(parser);
        return NULL;
    }
    return parser;
}

JsonParser *dq_json_load_file(const char *path, DqJsonFlags flags, GError **err) {
    size_t len = 0;
    char *text = dq_file_read_regular(path, DQ_JSON_MAX_FILE_BYTES, &len, err);
    if (text == NULL)
        return NULL;
    JsonParser *parser = dq_json_parse(text, (gssize)len, path, flags, err);
    g_free(text);
    return parser;
}

JsonObject *dq_json_root_object(JsonParser *parser, const char *label, GError **err) {
    JsonNode *root = json_parser_get_root(parser);
    if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root)) {
        dq_fail(err, DQ_ERR_FORMAT, "%s: not a JSON object", label);
        return NULL;
    }
    return json_node_get_object(root);
}
