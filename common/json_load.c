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

/* json-glib's scanner (GScanner's rules) takes much that is not JSON and that Python's json
 * (transformers) and serde_json (tokenizers, safetensors) refuse: C comments, strings in single
 * quotes, 010 (read as 8), 0x10, $ff and 0b101, .5 and 1., any character after a backslash
 * ("\x41" read as "x41"), raw control characters in strings; and an integer past 64 bits comes
 * back as another number (99999999999999999999 as -1). So every text is first checked against
 * JSON's grammar (RFC 8259) here, iteratively, which also bounds its nesting before json-glib
 * recurses into it. */

typedef struct {
    size_t offset;
    const char *why; /* NULL: nested too deep */
} SyntaxError;

static gboolean syntax_fail(SyntaxError *e, size_t offset, const char *why) {
    e->offset = offset;
    e->why = why;
    return FALSE;
}

static size_t skip_space(const char *t, size_t len, size_t i) {
    while (i < len && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r'))
        i++;
    return i;
}

/* What stands at t[i] where JSON has no place for it, in words. */
static const char *describe_misplaced(const char *t, size_t len, size_t i) {
    if (i >= len)
        return "the text ends where a value should be";
    if (t[i] == '/' && i + 1 < len && (t[i + 1] == '*' || t[i + 1] == '/'))
        return "a comment (JSON has none)";
    if (t[i] == '\'')
        return "a string in single quotes (JSON's are in double quotes)";
    if (t[i] == ',')
        return "a comma with no value after it";
    if (g_ascii_isdigit(t[i]) || t[i] == '.' || t[i] == '+' || t[i] == '$')
        return "a number JSON does not write so";
    if (i + 3 <= len && (memcmp(t + i, "NaN", 3) == 0 || memcmp(t + i, "Inf", 3) == 0))
        return "NaN or Infinity (Python's json reads them; JSON and docqa do not)";
    return "a character JSON has no place for";
}

static gboolean scan_string(const char *t, size_t len, size_t *pos, SyntaxError *e) {
    size_t i = *pos + 1;
    for (;;) {
        if (i >= len)
            return syntax_fail(e, *pos, "a string without its closing quote");
        unsigned char c = (unsigned char)t[i];
        if (c == '"') {
            *pos = i + 1;
            return TRUE;
        }
        if (c < 0x20)
            return syntax_fail(e, i,
                               "a control character inside a string (JSON writes it as "
                               "an escape)");
        if (c != '\\') {
            i++;
        } else if (i + 1 < len && t[i + 1] != '\0' && strchr("\"\\/bfnrtu", t[i + 1]) != NULL) {
            /* \u's four hex digits are checked by dq_json_find_bad_escape, whose message
             * names the key */
            i += 2;
        } else {
            return syntax_fail(e, i, "a backslash escaping a character JSON does not escape");
        }
    }
}

/* An integer outside 64 bits comes back from json-glib as another number. */
static gboolean fits_int64(const char *digits, size_t n, gboolean negative) {
    while (n > 1 && digits[0] == '0') {
        digits++;
        n--;
    }
    const char *limit = negative ? "9223372036854775808" : "9223372036854775807";
    return n < 19 || (n == 19 && memcmp(digits, limit, 19) <= 0);
}

static gboolean scan_number(const char *t, size_t len, size_t *pos, SyntaxError *e) {
    size_t i = *pos;
    gboolean negative = t[i] == '-';
    if (negative)
        i++;
    size_t int_start = i;
    if (i < len && t[i] == '0') {
        i++;
    } else if (i < len && t[i] >= '1' && t[i] <= '9') {
        while (i < len && g_ascii_isdigit(t[i]))
            i++;
    } else { /* after a minus sign */
        const char *what = describe_misplaced(t, len, i);
        return syntax_fail(
            e, *pos,
            g_str_has_prefix(what, "NaN") ? what : "a minus sign without a number after it");
    }
    size_t int_end = i;
    gboolean integer = TRUE;
    if (i < len && t[i] == '.') {
        integer = FALSE;
        if (++i >= len || !g_ascii_isdigit(t[i]))
            return syntax_fail(e, *pos, "a number without a digit after its point");
        while (i < len && g_ascii_isdigit(t[i]))
            i++;
    }
    if (i < len && (t[i] == 'e' || t[i] == 'E')) {
        integer = FALSE;
        i++;
        if (i < len && (t[i] == '+' || t[i] == '-'))
            i++;
        if (i >= len || !g_ascii_isdigit(t[i]))
            return syntax_fail(e, *pos, "a number without digits in its exponent");
        while (i < len && g_ascii_isdigit(t[i]))
            i++;
    }
    if (i < len && (g_ascii_isalnum(t[i]) || t[i] == '.' || t[i] == '_'))
        return syntax_fail(e, *pos,
                           int_end - int_start > 1 || t[int_start] != '0' || t[i] == '.'
                               ? "a number JSON does not write so"
                               : "a number JSON does not write so (no hex, octal or binary)");
    if (integer && !fits_int64(t + int_start, int_end - int_start, negative))
        return syntax_fail(e, *pos, "an integer beyond 64 bits");
    *pos = i;
    return TRUE;
}

/* What json-glib takes at t[i] that JSON does not (a comment, a string in single quotes), or
 * `otherwise`. */
static const char *lenient_or(const char *t, size_t len, size_t i, const char *otherwise) {
    if (i < len &&
        (t[i] == '\'' || (t[i] == '/' && i + 1 < len && (t[i + 1] == '*' || t[i + 1] == '/'))))
        return describe_misplaced(t, len, i);
    return otherwise;
}

/* An object's key and its colon, from t[*pos] on. */
static gboolean scan_key(const char *t, size_t len, size_t *pos, SyntaxError *e) {
    size_t i = skip_space(t, len, *pos);
    if (i >= len || t[i] != '"')
        return syntax_fail(
            e, i, lenient_or(t, len, i, "no key in double quotes where an object's key should be"));
    if (!scan_string(t, len, &i, e))
        return FALSE;
    i = skip_space(t, len, i);
    if (i >= len || t[i] != ':')
        return syntax_fail(e, i, "no colon after a key");
    *pos = i + 1;
    return TRUE;
}

/* A scalar (string, number, true, false, null) at t[*pos]. */
static gboolean scan_scalar(const char *t, size_t len, size_t *pos, SyntaxError *e) {
    size_t i = *pos;
    if (i < len && t[i] == '"')
        return scan_string(t, len, pos, e);
    if (i < len && (t[i] == '-' || g_ascii_isdigit(t[i])))
        return scan_number(t, len, pos, e);
    static const char *const words[] = {"true", "false", "null"};
    for (size_t w = 0; w < G_N_ELEMENTS(words); w++) {
        size_t n = strlen(words[w]);
        if (len - i >= n && memcmp(t + i, words[w], n) == 0 &&
            !(i + n < len && (g_ascii_isalnum(t[i + n]) || t[i + n] == '_'))) {
            *pos = i + n;
            return TRUE;
        }
    }
    return syntax_fail(e, i, describe_misplaced(t, len, i));
}

static gboolean syntax_ok(const char *t, size_t len, int max_depth, SyntaxError *e) {
    char *open = g_malloc((size_t)max_depth + 1); /* per open container: '{' or '[' */
    int depth = 0;
    gboolean ok = FALSE;
    size_t i = skip_space(t, len, 0);
    if (i == len) {
        syntax_fail(e, i, "empty");
        goto out;
    }
    for (;;) {
        /* a value at t[i]: a scalar, or containers opened until one */
        i = skip_space(t, len, i);
        if (i < len && (t[i] == '{' || t[i] == '[')) {
            if (depth == max_depth) {
                syntax_fail(e, i, NULL);
                goto out;
            }
            char c = t[i++];
            open[depth++] = c;
            i = skip_space(t, len, i);
            if (i >= len || t[i] != (c == '{' ? '}' : ']')) {
                if (c == '{' && !scan_key(t, len, &i, e))
                    goto out;
                continue;
            }
            /* empty: closed below, as any value's container is */
        } else if (!scan_scalar(t, len, &i, e)) {
            goto out;
        }
        /* after a value: the containers it closes, then a comma and the next value, or the end */
        for (;;) {
            i = skip_space(t, len, i);
            if (depth == 0) {
                ok = i == len;
                if (!ok)
                    syntax_fail(e, i, lenient_or(t, len, i, "more text after the JSON value"));
                goto out;
            }
            gboolean object = open[depth - 1] == '{';
            char close = object ? '}' : ']';
            if (i < len && t[i] == close) {
                i++;
                depth--;
                continue;
            }
            if (i >= len || t[i] != ',') {
                syntax_fail(e, i,
                            i >= len ? "the end of the text inside an unclosed bracket"
                                     : lenient_or(t, len, i,
                                                  object ? "no comma or '}' after a value"
                                                         : "no comma or ']' after a value"));
                goto out;
            }
            size_t comma = i;
            i = skip_space(t, len, i + 1);
            if (i < len && t[i] == close) {
                syntax_fail(e, comma, "a comma before a closing bracket");
                goto out;
            }
            if (object && !scan_key(t, len, &i, e))
                goto out;
            break; /* on to the next value */
        }
    }
out:
    g_free(open);
    return ok;
}

gboolean dq_json_syntax_ok(const char *text, size_t len, int max_depth, size_t *offset,
                           const char **why) {
    SyntaxError e;
    if (syntax_ok(text, len, max_depth, &e))
        return TRUE;
    if (offset != NULL)
        *offset = e.offset;
    if (why != NULL)
        *why = e.why;
    return FALSE;
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

/* The scan for a bad escape: where it is in the text's containers. */
typedef struct {
    const char *text;
    size_t len;
    gboolean want_nul;
    /* per open container: an object's latest key (key == NULL: an array, or no key yet) */
    struct {
        gboolean object;
        const char *key;
        size_t key_len;
    } open[DQ_JSON_MAX_DEPTH + 1];
    int depth;
    gboolean expect_key; /* the next string is an object's key */
    guint strings;       /* string literals met so far, keys counted */
} EscapeScan;

/* What is wrong with the escape whose backslash is at text[*i], or 0 when nothing is. A
 * surrogate pair is taken whole: *i is left on the second escape's backslash. */
static int escape_problem(const EscapeScan *s, size_t *i) {
    const char *text = s->text;
    size_t len = s->len;
    int u = *i + 1 < len && text[*i + 1] == 'u' ? (*i + 5 < len ? hex4(text + *i + 2) : -1)
                                                : 0x20; /* not \u: no problem */
    if (u < 0)
        return DQ_JSON_ESCAPE_BAD_HEX;
    if (u >= 0xD800 && u <= 0xDBFF) {
        /* a high surrogate: a low one must follow (json-glib refuses a \u escape of anything
         * else after it, and takes any other character) */
        int low =
            *i + 11 < len && text[*i + 6] == '\\' && text[*i + 7] == 'u' ? hex4(text + *i + 8) : -1;
        if (low >= 0xDC00 && low <= 0xDFFF) {
            *i += 6; /* the pair: on to the second backslash, its u skipped by the caller */
            return 0;
        }
        return s->want_nul ? DQ_JSON_ESCAPE_LONE_SURROGATE : 0;
    }
    if (u == 0 && s->want_nul)
        return DQ_JSON_ESCAPE_NUL;
    if (u >= 0xDC00 && u <= 0xDFFF && s->want_nul)
        return DQ_JSON_ESCAPE_LONE_SURROGATE;
    return 0;
}

/* The bad escape at text[at] in the literal starting at text[start], with its key: the literal
 * itself when it is one, else its nearest container's that has one. */
static void note_bad_escape(const EscapeScan *s, size_t at, int problem, size_t start,
                            gboolean is_key, DqJsonBadEscape *found) {
    found->offset = at;
    found->problem = (DqJsonEscapeProblem)problem;
    found->string = s->strings;
    found->text = s->text + start;
    found->text_len = literal_len(s->text, s->len, start);
    found->is_key = is_key;
    found->key = NULL;
    found->key_len = 0;
    if (is_key) {
        found->key = s->text + start;
        found->key_len = literal_len(s->text, s->len, start);
    }
    for (int d = s->depth - 1; d >= 0 && found->key == NULL; d--) {
        found->key = s->open[d].key;
        found->key_len = s->open[d].key_len;
    }
}

/* The string literal whose opening quote is at text[*i], scanned up to its closing quote (*i
 * left there): TRUE with `found` at its first bad escape; else a key is kept as its object's
 * latest. */
static gboolean scan_literal(EscapeScan *s, size_t *i, DqJsonBadEscape *found) {
    gboolean is_key = s->expect_key && s->depth > 0;
    size_t start = ++*i;
    s->strings++;
    for (; *i < s->len && s->text[*i] != '"'; ++*i) {
        if (s->text[*i] != '\\')
            continue;
        size_t at = *i;
        int problem = escape_problem(s, i);
        if (problem != 0) {
            note_bad_escape(s, at, problem, start, is_key, found);
            return TRUE;
        }
        ++*i; /* the escaped character: a quote, or a backslash */
    }
    if (is_key) {
        s->open[s->depth - 1].key = s->text + start;
        s->open[s->depth - 1].key_len = *i - start;
        s->expect_key = FALSE;
    }
    return FALSE;
}

/* Looks for a \u escape without 4 hex digits, and when want_nul for \u0000 and for a UTF-16
 * surrogate escape without its other half (\ud800 not followed by \udc00..\udfff, or
 * \udc00..\udfff alone), in the string literals of `text`, which json-glib parsed (no deeper than
 * DQ_JSON_MAX_DEPTH). An escaped backslash before "u0000" is skipped with its escape, so
 * "\\u0000" (a backslash, then u0000) is no NUL. */
gboolean dq_json_find_bad_escape(const char *text, size_t len, gboolean want_nul,
                                 DqJsonBadEscape *found) {
    EscapeScan s = {.text = text, .len = len, .want_nul = want_nul};
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '{' || c == '[') {
            if (s.depth == DQ_JSON_MAX_DEPTH + 1)
                return FALSE; /* dq_json_syntax_ok refused it first */
            s.open[s.depth].object = c == '{';
            s.open[s.depth].key = NULL;
            s.open[s.depth].key_len = 0;
            s.depth++;
            s.expect_key = c == '{';
        } else if ((c == '}' || c == ']') && s.depth > 0) {
            s.depth--;
            s.expect_key = FALSE;
        } else if (c == ',') {
            s.expect_key = s.depth > 0 && s.open[s.depth - 1].object;
        } else if (c == '"' && scan_literal(&s, &i, found)) {
            return TRUE;
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
    const char *not_json = NULL;
    if (!dq_json_syntax_ok(text, n, DQ_JSON_MAX_DEPTH, &at, &not_json)) {
        if (not_json == NULL) {
            dq_fail(err, DQ_ERR_FORMAT, "%s: JSON nested deeper than %d levels (at byte %zu)",
                    label, DQ_JSON_MAX_DEPTH, at);
        } else if (strcmp(not_json, "empty") == 0) {
            dq_fail(err, DQ_ERR_FORMAT, "%s: empty, not a JSON document", label);
        } else {
            /* as Python's json counts them: lines from 1, characters in the line from 1 */
            int line = 1, column = 1;
            for (size_t i = 0; i < at; i++) {
                if (text[i] == '\n') {
                    line++;
                    column = 1;
                } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
                    column++;
                }
            }
            dq_fail(err, DQ_ERR_FORMAT, "%s: not valid JSON: line %d, column %d: %s", label, line,
                    column, not_json);
        }
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
