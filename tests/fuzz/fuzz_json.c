/* libFuzzer target: the common JSON loader (json_load.h) that every JSON docqa reads from a
 * snapshot, a questions file or the database goes through. The input is parsed with and without
 * DQ_JSON_UNIQUE_KEYS. What it accepts must be safe to walk: the tree is no deeper than
 * DQ_JSON_MAX_DEPTH (the bracket scan, strings and escapes included, never undercounts), and a
 * text accepted with unique keys is accepted without. A refusal always names the input and is
 * UTF-8 (it is printed, and put in --json output). */
#include "json_load.h"

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
    if (unique != NULL)
        g_object_unref(unique);
    if (any != NULL)
        g_object_unref(any);
    free(copy);
    return 0;
}
