/* JSON from files and users, read defensively.
 *
 * Every JSON text docqa parses from a snapshot folder, a questions file or the database goes
 * through here, because json-glib alone is not safe on untrusted input:
 *   - it parses recursively: a few hundred thousand nested brackets overflow the stack. Texts
 *     nested deeper than DQ_JSON_MAX_DEPTH are refused before json-glib sees them (128 is the
 *     recursion limit of serde_json, which the safetensors and tokenizers libraries parse these
 *     same files with; real snapshot files are nested 4 deep);
 *   - it takes an empty text for a document with no root, and skips a UTF-8 byte order mark,
 *     where Python's json (transformers) fails: both are refused;
 *   - it decodes \u0000 in a string to a NUL byte and hands strings out NUL-terminated, so the
 *     rest of the string is lost silently; and it decodes half of a UTF-16 surrogate pair alone
 *     ("\ud800" not followed by a low surrogate, or a low one alone) to 3 bytes that are not
 *     UTF-8, dropping the character after it. Such strings are refused, with the line and the
 *     key (DQ_JSON_NUL_CHECKED leaves both to a caller that names the place better itself), as
 *     is a \u escape without 4 hex digits, which it decodes to a NUL too ("\u0.00");
 *   - it takes much that is not JSON and that Python's json and serde_json refuse, some of it
 *     read as other values than they would have if they read it (010 is 8 to json-glib, a
 *     number past 64 bits another number): C comments, strings in single quotes, hex, octal and
 *     binary numbers, unknown escapes, raw control characters in strings. Every text is checked
 *     against JSON's grammar first (dq_json_syntax_ok) and refused with the line and column;
 *   - it keeps the last of duplicate keys silently (DQ_JSON_UNIQUE_KEYS refuses them, for
 *     formats whose reference parser does);
 *   - json_parser_load_from_file blocks forever on a FIFO, reads /dev/zero until memory runs
 *     out, and holds a 2 GB file whole: dq_file_read_regular opens without blocking, refuses
 *     what is not a regular file and caps the size.
 */
#ifndef DQ_JSON_LOAD_H
#define DQ_JSON_LOAD_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stddef.h>

#define DQ_JSON_MAX_DEPTH 128
/* A snapshot's JSON files are small (tokenizer.json of a 256k-token vocabulary is ~35 MB; of
 * SmolVLM, 3.5 MB). */
#define DQ_JSON_MAX_FILE_BYTES ((size_t)64 << 20)

typedef enum {
    DQ_JSON_DEFAULT = 0,
    DQ_JSON_UNIQUE_KEYS = 1 << 0, /* a key twice in one object is an error */
    DQ_JSON_NUL_CHECKED = 1 << 1, /* the caller refuses \u0000 and lone surrogate escapes in
                                     strings itself */
} DqJsonFlags;

/* The whole of a regular file, NUL-terminated (*len excludes the NUL; len may be NULL). Refuses
 * FIFOs, devices, sockets and folders without blocking on them, and files over max_bytes, with
 * a message naming the path. g_free the result. */
char *dq_file_read_regular(const char *path, size_t max_bytes, size_t *len, GError **err);

/* TRUE when `text` is one JSON value (RFC 8259's grammar: what Python's json and serde_json
 * read, less NaN and Infinity) nested at most max_depth deep, integers within 64 bits.
 * Otherwise FALSE with *offset the byte where it stops being so and *why what is there in
 * words ("empty" for a text of white space alone; NULL for a bracket nested too deep). Either
 * pointer may be NULL. A \u escape's 4 hex digits are left to dq_json_find_bad_escape. */
gboolean dq_json_syntax_ok(const char *text, size_t len, int max_depth, size_t *offset,
                           const char **why);

/* An escape in a string literal that json-glib cannot hand out faithfully. */
typedef enum {
    DQ_JSON_ESCAPE_NUL = 1,        /* \u0000: the string would end there */
    DQ_JSON_ESCAPE_BAD_HEX,        /* \u and 4 characters not all hex digits: read anyway */
    DQ_JSON_ESCAPE_LONE_SURROGATE, /* half a surrogate pair: 3 bytes not UTF-8, one lost */
} DqJsonEscapeProblem;

typedef struct {
    DqJsonEscapeProblem problem;
    size_t offset;    /* of the backslash */
    guint string;     /* the literal's number in the text from 1, keys counted (in a list of
                         strings: the element's) */
    const char *text; /* the literal as written, between its quotes */
    size_t text_len;  /* (cut at the end of the text) */
    const char *key;  /* the literal's key as written, or its nearest container's that has
                         one; NULL at the top level */
    size_t key_len;
    gboolean is_key; /* the literal is the key itself */
} DqJsonBadEscape;

/* The first such escape in the string literals of `text`, which json-glib parsed (so nested at
 * most DQ_JSON_MAX_DEPTH) and dq_json_syntax_ok found to be JSON:
 * a \u without 4 hex digits always, \u0000 and lone surrogates only when want_nul. FALSE when
 * there is none. */
gboolean dq_json_find_bad_escape(const char *text, size_t len, gboolean want_nul,
                                 DqJsonBadEscape *found);

/* Parses len bytes of text (len < 0: up to the NUL) into a new parser whose root is not NULL.
 * Errors are DQ_ERR_FORMAT and start with "label: ". g_object_unref the result. */
JsonParser *dq_json_parse(const char *text, gssize len, const char *label, DqJsonFlags flags,
                          GError **err);

/* dq_file_read_regular (DQ_JSON_MAX_FILE_BYTES) then dq_json_parse, labelled with the path. A
 * file that cannot be read is DQ_ERR_IO, one too large DQ_ERR_LIMIT. */
JsonParser *dq_json_load_file(const char *path, DqJsonFlags flags, GError **err);

/* The root object of a parser dq_json_parse / dq_json_load_file returned, or NULL with
 * "label: not a JSON object" (DQ_ERR_FORMAT). */
JsonObject *dq_json_root_object(JsonParser *parser, const char *label, GError **err);

#endif
