/* Idefics3 prompt expansion (see prompt.h). */
#include "prompt.h"

#include "dq_error.h"
#include "json_load.h"

#include <json-glib/json-glib.h>
#include <string.h>

static const char IMAGE[] = "<image>";
static const char FAKE[] = "<fake_token_around_image>";
static const char GLOBAL[] = "<global-img>";

int prompt_image_seq_len_load(const char *snapshot_dir, GError **err) {
    char *path = g_build_filename(snapshot_dir, "processor_config.json", NULL);
    int result = DQ_DEFAULT_IMAGE_SEQ_LEN;
    if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
        g_free(path);
        return result;
    }
    JsonParser *parser = dq_json_load_file(path, DQ_JSON_DEFAULT, err);
    JsonObject *root = parser != NULL ? dq_json_root_object(parser, path, err) : NULL;
    if (root == NULL) {
        result = -1;
        goto done;
    }
    JsonNode *n = json_object_get_member(root, "image_seq_len");
    if (n == NULL)
        goto done;
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64 ||
        json_node_get_int(n) <= 0 || json_node_get_int(n) > 1000000) {
        dq_fail(err, DQ_ERR_MODEL, "%s: image_seq_len is not a positive integer", path);
        result = -1;
        goto done;
    }
    result = (int)json_node_get_int(n);
done:
    if (parser != NULL)
        g_object_unref(parser);
    g_free(path);
    return result;
}

static void append_image_tokens(GString *s, int image_seq_len) {
    for (int k = 0; k < image_seq_len; k++)
        g_string_append_len(s, IMAGE, sizeof IMAGE - 1);
}

static void append_image_prompt(GString *s, DqImageGrid g, int image_seq_len) {
    if (g.rows == 0 && g.cols == 0) {
        g_string_append(s, FAKE);
        g_string_append(s, GLOBAL);
        append_image_tokens(s, image_seq_len);
        g_string_append(s, FAKE);
        return;
    }
    for (int r = 1; r <= g.rows; r++) {
        for (int c = 1; c <= g.cols; c++) {
            g_string_append_printf(s, "%s<row_%d_col_%d>", FAKE, r, c);
            append_image_tokens(s, image_seq_len);
        }
        g_string_append_c(s, '\n');
    }
    /* the last row's "\n" and this one make "\n\n" (one token, ĊĊ) */
    g_string_append_c(s, '\n');
    g_string_append(s, FAKE);
    g_string_append(s, GLOBAL);
    append_image_tokens(s, image_seq_len);
    g_string_append(s, FAKE);
}

char *prompt_expand(const char *chat_prompt, const DqImageGrid *grids, int n_images,
                    int image_seq_len, GError **err) {
    if (chat_prompt == NULL || n_images < 0 || (n_images > 0 && grids == NULL) ||
        image_seq_len <= 0) {
        dq_fail(err, DQ_ERR_ARGS, "prompt_expand: invalid arguments");
        return NULL;
    }
    int markers = 0;
    for (const char *p = strstr(chat_prompt, IMAGE); p; p = strstr(p + sizeof IMAGE - 1, IMAGE))
        markers++;
    if (markers != n_images) {
        dq_fail(err, DQ_ERR_ARGS, "prompt has %d <image> markers but %d image%s given", markers,
                n_images, n_images == 1 ? " was" : "s were");
        return NULL;
    }
    for (int i = 0; i < n_images; i++) {
        DqImageGrid g = grids[i];
        if (g.rows < 0 || g.cols < 0 || (g.rows == 0) != (g.cols == 0) || g.rows > 1000 ||
            g.cols > 1000) {
            dq_fail(err, DQ_ERR_ARGS, "image %d: invalid split grid %d x %d", i + 1, g.rows,
                    g.cols);
            return NULL;
        }
    }
    GString *s = g_string_new(NULL);
    const char *p = chat_prompt;
    for (int i = 0; i < n_images; i++) {
        const char *m = strstr(p, IMAGE);
        g_string_append_len(s, p, m - p);
        append_image_prompt(s, grids[i], image_seq_len);
        p = m + sizeof IMAGE - 1;
    }
    g_string_append(s, p);
    return g_string_free(s, FALSE);
}
