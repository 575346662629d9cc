/* libFuzzer target: the common JSON loader (json_load.h) that every JSON docqa reads from a
 * snapshot, a questions file or the database goes through. The input is parsed with and without
 * DQ_JSON_UNIQUE_KEYS, and with DQ_JSON_NUL_CHECKED (which may accept more: only what holds
 * \u0000 or half of a surrogate pair alone in a string). What it accepts must be safe to walk: the
 * tree is no deeper than DQ_JSON_MAX_DEPTH (the bracket scan, strings and escapes included, never
 * undercounts), and a text accepted with unique keys is accepted without. A refusal always names
 * the input and is UTF-8 (it is printed, and put in --json output). What it accepts, written again
 * as docqa writes JSON (json_write.h: every double with the fewest digits that read back the same),
 * reads back as the same tree, each double the same to the bit. */
#include "json_load.h"
#include "json_write.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int depth_of(JsonNode *n) {
    int deepest = 0;
    if (JSON_NODE_HOLDS_ARRAY(n)) {
        JsonArray *a = json_node_get_array(n);
        for (guint i = 0; i < json_array_get_length(a); i++)
            deepest = MAX(deepest, depth_of(json_array_get_element(a, i)));
        return deepest + 1;
    }
    if (JSON_NODE_HOLDS_OBJECT(n)) {
        JsonObjectIter it;
        const char *key;
        JsonNode *member;
        json_object_iter_init(&it, json_node_get_object(n));
        while (json_object_iter_next(&it, &key, &member))
            deepest = MAX(deepest, depth_of(member));
        return deepest + 1;
    }
    return 0;
}

/* Doubles compared by their bits: -0.0 written as 0.0 would be a difference. */
static gboolean same_tree(JsonNode *a, JsonNode *b) {
    if (json_node_get_node_type(a) != json_node_get_node_type(b))
        return FALSE;
    if (JSON_NODE_HOLDS_ARRAY(a)) {
        JsonArray *x = json_node_get_array(a), *y = json_node_get_array(b);
        if (json_array_get_length(x) != json_array_get_length(y))
            return FALSE;
        for (guint i = 0; i < json_array_get_length(x); i++)
            if (!same_tree(json_array_get_element(x, i), json_array_get_element(y, i)))
                return FALSE;
        return TRUE;
    }
    if (JSON_NODE_HOLDS_OBJECT(a)) {
        JsonObject *x = json_node_get_object(a), *y = json_node_get_object(b);
        if (json_object_get_size(x) != json_object_get_size(y))
            return FALSE;
        JsonObjectIter it;
        const char *key;
        JsonNode *member;
        json_object_iter_init(&it, x);
        while (json_object_iter_next(&it, &key, &member)) {
            JsonNode *other = json_object_get_member(y, key);
            if (other == NULL || !same_tree(member, other))
                return FALSE;
        }
        return TRUE;
    }
    if (JSON_NODE_HOLDS_NULL(a))
        return TRUE;
    if (json_node_get_value_type(a) != json_node_get_value_type(b))
        return FALSE;
    if (json_node_get_value_type(a) == G_TYPE_DOUBLE) {
        double u = json_node_get_double(a), v = json_node_get_double(b);
        return memcmp(&u, &v, sizeof u) == 0;
    }
    if (json_node_get_value_type(a) == G_TYPE_STRING)
        return strcmp(json_node_get_string(a), json_node_get_string(b)) == 0;
    if (json_node_get_value_type(a) == G_TYPE_BOOLEAN)
        return json_node_get_boolean(a) == json_node_get_boolean(b);
    return json_node_get_int(a) == json_node_get_int(b);
}

/* What docqa writes: finite doubles only (dq_json_add_double makes the others null; a text can
 * spell one json-glib reads as infinity, 1e999, which it would write as "inf"), and UTF-8
 * strings and keys (json-glib keeps a string's invalid bytes, or a lone surrogate's, and then
 * refuses its own output; docqa makes text UTF-8 before it gets here). */
static gboolean writable(JsonNode *n) {
    if (JSON_NODE_HOLDS_ARRAY(n)) {
        JsonArray *a = json_node_get_array(n);
        for (guint i = 0; i < json_array_get_length(a); i++)
            if (!writable(json_array_get_element(a, i)))
                return FALSE;
        return TRUE;
    }
    if (JSON_NODE_HOLDS_OBJECT(n)) {
        JsonObjectIter it;
        const char *key;
        JsonNode *member;
        json_object_iter_init(&it, json_node_get_object(n));
        while (json_object_iter_next(&it, &key, &member))
            if (!g_utf8_validate(key, -1, NULL) || !writable(member))
                return FALSE;
        return TRUE;
    }
    if (!JSON_NODE_HOLDS_VALUE(n))
        return TRUE;
    if (json_node_get_value_type(n) == G_TYPE_STRING)
        return g_utf8_validate(json_node_get_string(n), -1, NULL);
    return json_node_get_value_type(n) != G_TYPE_DOUBLE || isfinite(json_node_get_double(n));
}

static void check_written_again(JsonParser *p, gboolean pretty) {
    JsonNode *root = json_parser_get_root(p);
    if (root == NULL || !writable(root))
        return;
    char *text = dq_json_to_text(root, pretty);
    JsonParser *again = json_parser_new();
    if (!json_parser_load_from_data(again, text, -1, NULL) ||
        !same_tree(root, json_parser_get_root(again)))
        abort();
    g_object_unref(again);
    g_free(text);
}

static JsonParser *parse(const uint8_t *data, size_t size, DqJsonFlags flags) {
    GError *err = NULL;
    JsonParser *p = dq_json_parse((const char *)data, (gssize)size, "fuzz.json", flags, &err);
    if (p == NULL) {
        if (err == NULL || strstr(err->message, "fuzz.json") == NULL ||
            !g_utf8_validate(err->message, -1, NULL))
            abort();
        g_error_free(err);
        return NULL;
    }
    if (depth_of(json_parser_get_root(p)) > DQ_JSON_MAX_DEPTH)
        abort();
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* a private copy exactly `size` long: reading past it is an ASan error */
    uint8_t *copy = malloc(size > 0 ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    JsonParser *unique = parse(copy, size, DQ_JSON_UNIQUE_KEYS);
    JsonParser *any = parse(copy, size, DQ_JSON_DEFAULT);
    if (unique != NULL && any == NULL)
        abort();
    /* \u0000 and lone surrogates refused are the only difference DQ_JSON_NUL_CHECKED makes */
    GError *err = NULL;
    JsonParser *nul_ok =
        dq_json_parse((const char *)copy, (gssize)size, "fuzz.json", DQ_JSON_NUL_CHECKED, &err);
    if (any != NULL && nul_ok == NULL)
        abort();
    if (any == NULL && nul_ok != NULL) {
        GError *why = NULL;
        JsonParser *again =
            dq_json_parse((const char *)copy, (gssize)size, "fuzz.json", DQ_JSON_DEFAULT, &why);
        if (again != NULL ||
            (strstr(why->message, "holds \\u0000 (U+0000): docqa cannot") == NULL &&
             strstr(why->message, ", half of a UTF-16 surrogate pair without its other half") ==
                 NULL))
            abort();
        g_error_free(why);
    }
    g_clear_error(&err);
    if (nul_ok != NULL)
        g_object_unref(nul_ok);
    if (unique != NULL)
        g_object_unref(unique);
    if (any != NULL) {
        check_written_again(any, size % 2 == 1);
        g_object_unref(any);
    }
    free(copy);
    return 0;
}
