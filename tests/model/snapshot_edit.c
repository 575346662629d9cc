/* Snapshots of the tiny model with what a test needs edited in: shared by the generator's tests
 * (transformers' goldens for them) and the CUDA backend's (the same models on a GPU). */
#include "snapshot_edit.h"

#include "testutil.h"

#include <json-glib/json-glib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

char *dq_test_edited_snapshot(const char *const edits[][2], size_t n_edits, gboolean attn,
                              gboolean mlp) {
    char *src = g_build_filename(dq_test_shared_dir(), "models", "tiny-smolvlm-b512", NULL);
    char *snap = dq_test_snapshot_with_positions(src, 4096);
    char *path = g_build_filename(snap, "config.json", NULL);
    char *text = dq_test_read_file(path, NULL);
    GString *s = g_string_new(text);
    for (size_t i = 0; i < n_edits; i++)
        g_assert_cmpint(g_string_replace(s, edits[i][0], edits[i][1], 1), ==, 1);
    g_assert_cmpint(unlink(path), ==, 0);
    g_assert_true(g_file_set_contents(path, s->str, (gssize)s->len, NULL));
    g_string_free(s, TRUE);
    g_free(text);
    g_free(path);

    /* the header grows by the biases' entries; the data gets them at its end */
    char *from = g_build_filename(src, "model.safetensors", NULL);
    size_t len = 0;
    char *file = dq_test_read_file(from, &len);
    uint64_t hlen;
    memcpy(&hlen, file, 8);
    JsonParser *parser = json_parser_new();
    g_assert_true(json_parser_load_from_data(parser, file + 8, (gssize)hlen, NULL));
    JsonObject *header = json_node_get_object(json_parser_get_root(parser));
    const char *names[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                           "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                           "mlp.down_proj"};
    const int rows[] = {64, 32, 32, 64, 128, 128, 64}; /* the tiny model's */
    GByteArray *data = g_byte_array_new();
    uint64_t end = len - 8 - hlen;
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 7; k++) {
            if ((k < 4 && !attn) || (k >= 4 && !mlp))
                continue;
            for (int i = 0; i < rows[k]; i++) {
                float v = (float)(((37 * i + 11 * l + 5 * k) % 41 - 20) / 100.0);
                g_byte_array_append(data, (const guint8 *)&v, 4);
            }
            JsonObject *t = json_object_new();
            json_object_set_string_member(t, "dtype", "F32");
            JsonArray *shape = json_array_new(), *offsets = json_array_new();
            json_array_add_int_element(shape, rows[k]);
            json_array_add_int_element(offsets, (gint64)end);
            end += (uint64_t)rows[k] * 4;
            json_array_add_int_element(offsets, (gint64)end);
            json_object_set_array_member(t, "shape", shape);
            json_object_set_array_member(t, "data_offsets", offsets);
            char *name = g_strdup_printf("model.text_model.layers.%d.%s.bias", l, names[k]);
            json_object_set_object_member(header, name, t);
            g_free(name);
        }
    JsonGenerator *gen = json_generator_new();
    json_generator_set_root(gen, json_parser_get_root(parser));
    gsize new_hlen = 0;
    char *new_header = json_generator_to_data(gen, &new_hlen);
    GString *out = g_string_new(NULL);
    uint64_t padded = (new_hlen + 7) / 8 * 8;
    g_string_append_len(out, (const char *)&padded, 8);
    g_string_append_len(out, new_header, (gssize)new_hlen);
    for (uint64_t i = new_hlen; i < padded; i++)
        g_string_append_c(out, ' ');
    g_string_append_len(out, file + 8 + hlen, (gssize)(len - 8 - hlen));
    g_string_append_len(out, (const char *)data->data, data->len);
    char *to = g_build_filename(snap, "model.safetensors", NULL);
    g_assert_cmpint(unlink(to), ==, 0);
    g_assert_true(g_file_set_contents(to, out->str, (gssize)out->len, NULL));
    g_free(to);
    g_string_free(out, TRUE);
    g_free(new_header);
    g_object_unref(gen);
    g_byte_array_free(data, TRUE);
    g_object_unref(parser);
    g_free(file);
    g_free(from);
    g_free(src);
    return snap;
}
