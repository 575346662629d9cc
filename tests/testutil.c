#include "testutil.h"

#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>

const char *dq_test_source_dir(void) {
    return DOCQA_SOURCE_DIR;
}

const char *dq_test_shared_dir(void) {
    static char *dir = NULL;
    static gboolean looked = FALSE;
    if (!looked) {
        looked = TRUE;
        const char *env = g_getenv("DOCQA_SHARED_DIR");
        char *cand = env ? g_strdup(env) : g_build_filename(DOCQA_SOURCE_DIR, "..", "shared", NULL);
        if (g_file_test(cand, G_FILE_TEST_IS_DIR))
            dir = cand;
        else {
            g_test_message("shared folder %s not found: using committed fixtures only", cand);
            g_free(cand);
        }
    }
    return dir;
}

static GPtrArray *tmpdirs;

static void remove_tree(const char *path) {
    GDir *d = g_dir_open(path, 0, NULL);
    if (d != NULL) {
        const char *name;
        while ((name = g_dir_read_name(d)) != NULL) {
            char *child = g_build_filename(path, name, NULL);
            if (g_file_test(child, G_FILE_TEST_IS_DIR) &&
                !g_file_test(child, G_FILE_TEST_IS_SYMLINK))
                remove_tree(child);
            else
                g_unlink(child);
            g_free(child);
        }
        g_dir_close(d);
    }
    g_rmdir(path);
}

static void remove_tmpdirs(void) {
    if (g_getenv("DOCQA_KEEP_TMP") != NULL)
        return;
    for (guint i = 0; i < tmpdirs->len; i++)
        remove_tree(g_ptr_array_index(tmpdirs, i));
}

char *dq_test_tmpdir(void) {
    GError *err = NULL;
    char *dir = g_dir_make_tmp("docqa-test-XXXXXX", &err);
    dq_assert_no_error(err);
    if (tmpdirs == NULL) {
        tmpdirs = g_ptr_array_new();
        atexit(remove_tmpdirs);
    }
    g_ptr_array_add(tmpdirs, g_strdup(dir));
    return dir;
}

char *dq_test_read_file(const char *path, size_t *len) {
    char *data = NULL;
    gsize n = 0;
    GError *err = NULL;
    if (!g_file_get_contents(path, &data, &n, &err))
        g_error("cannot read test input %s: %s", path, err->message);
    if (len)
        *len = n;
    return data;
}
