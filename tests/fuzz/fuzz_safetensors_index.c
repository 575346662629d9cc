/* libFuzzer target: model.safetensors.index.json, the file a sharded snapshot's tensors are
 * found through (safetensors_open_snapshot, safetensors_snapshot_bytes). The input is the index;
 * the snapshot beside it holds two shards, a.safetensors (tensor "x") and ba.safetensors
 * (tensors "y" and "z"), so that names which only end alike are there to be confused. An accepted
 * index must be true: every tensor it maps is there, in the very shard it names. A refusal names
 * the snapshot. Seeds: tests/fuzz/seeds/safetensors_index/. */
#include "safetensors.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *snapshot;

static void write_shard(const char *name, const char *header, const float *v, size_t n) {
    GByteArray *b = g_byte_array_new();
    guint64 hlen = strlen(header);
    for (int i = 0; i < 8; i++)
        g_byte_array_append(b, (const guint8[]){(guint8)(hlen >> (8 * i))}, 1);
    g_byte_array_append(b, (const guint8 *)header, (guint)hlen);
    g_byte_array_append(b, (const guint8 *)v, (guint)(n * sizeof *v));
    char *path = g_build_filename(snapshot, name, NULL);
    if (!g_file_set_contents(path, (const char *)b->data, b->len, NULL))
        abort();
    g_free(path);
    g_byte_array_free(b, TRUE);
}

/* libFuzzer exits through exit() at the end of a run: leave no snapshot behind in /tmp (CI's
 * smoke run starts every target each time). */
static void remove_snapshot(void) {
    static const char *const names[] = {"a.safetensors", "ba.safetensors",
                                        "model.safetensors.index.json"};
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
        char *path = g_build_filename(snapshot, names[i], NULL);
        g_unlink(path);
        g_free(path);
    }
    g_rmdir(snapshot);
}

static void make_snapshot(void) {
    snapshot = g_dir_make_tmp("fuzz-safetensors-index-XXXXXX", NULL);
    if (snapshot == NULL)
        abort();
    atexit(remove_snapshot);
    const float x[2] = {1, 2}, yz[4] = {3, 4, 5, 6};
    write_shard("a.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                x, 2);
    write_shard("ba.safetensors",
                "{\"y\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                "\"z\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
                yz, 4);
}

/* The index's own word on where `tensor` lives, read independently of the parser under test. */
static void check_accepted(DqSafeTensors *st, const uint8_t *data, size_t size) {
    JsonParser *p = json_parser_new();
    if (!json_parser_load_from_data(p, (const char *)data, (gssize)size, NULL))
        abort(); /* accepted what json-glib cannot read */
    JsonObject *wm =
        json_object_get_object_member(json_node_get_object(json_parser_get_root(p)), "weight_map");
    JsonObjectIter it;
    const char *tname;
    JsonNode *fnode;
    json_object_iter_init(&it, wm);
    while (json_object_iter_next(&it, &tname, &fnode)) {
        const DqTensor *t = safetensors_get(st, tname);
        if (t == NULL)
            abort();
        char *base = g_path_get_basename(t->file);
        if (strcmp(base, json_node_get_string(fnode)) != 0)
            abort(); /* the tensor lives in another shard than the index says */
        g_free(base);
    }
    g_object_unref(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (snapshot == NULL)
        make_snapshot();
    char *index = g_build_filename(snapshot, "model.safetensors.index.json", NULL);
    if (!g_file_set_contents(index, (const char *)data, (gssize)size, NULL))
        abort();
    GError *err = NULL;
    DqSafeTensors *st = safetensors_open_snapshot(snapshot, &err);
    if (st == NULL) {
        if (err == NULL || strstr(err->message, snapshot) == NULL)
            abort();
        g_error_free(err);
    } else {
        if (err != NULL)
            abort();
        check_accepted(st, data, size);
        safetensors_free(st);
    }
    (void)safetensors_snapshot_bytes(snapshot);
    g_free(index);
    return 0;
}
