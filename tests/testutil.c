#include "testutil.h"

#include <errno.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

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

char *dq_test_snapshot_with_positions(const char *model, int positions) {
    char *dir = dq_test_tmpdir();
    GDir *d = g_dir_open(model, 0, NULL);
    g_assert_nonnull(d);
    for (const char *name; (name = g_dir_read_name(d)) != NULL;) {
        char *from = g_build_filename(model, name, NULL), *to = g_build_filename(dir, name, NULL);
        if (strcmp(name, "config.json") == 0) {
            char *text = dq_test_read_file(from, NULL);
            GRegex *re = g_regex_new("\"max_position_embeddings\": *[0-9]+", 0, 0, NULL);
            char *value = g_strdup_printf("\"max_position_embeddings\": %d", positions);
            char *edited = g_regex_replace_literal(re, text, -1, 0, value, 0, NULL);
            g_assert_cmpstr(edited, !=, text);
            g_assert_true(g_file_set_contents(to, edited, -1, NULL));
            g_free(edited);
            g_free(value);
            g_regex_unref(re);
            g_free(text);
        } else {
            g_assert_cmpint(symlink(from, to), ==, 0);
        }
        g_free(from);
        g_free(to);
    }
    g_dir_close(d);
    return dir;
}

static void ignore_sighup(void *unused) {
    (void)unused;
    signal(SIGHUP, SIG_IGN);
}

static int run_held(const char *const *argv, const char *const *env, const char *pause_at,
                    GSpawnChildSetupFunc setup, void (*at_pause)(void *user), void *user, int sig,
                    char **out, char **errout) {
    char **envp = g_get_environ();
    envp = g_environ_setenv(envp, "DOCQA_TEST_PAUSE_AT", pause_at, TRUE);
    for (const char *const *e = env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        g_assert_nonnull(eq);
        char *name = g_strndup(*e, eq - *e);
        envp = g_environ_setenv(envp, name, eq + 1, TRUE);
        g_free(name);
    }
    GPid pid;
    int fds[2];
    GError *err = NULL;
    g_assert_true(g_spawn_async_with_pipes(NULL, (char **)argv, envp, G_SPAWN_DO_NOT_REAP_CHILD,
                                           setup, NULL, &pid, NULL, &fds[0], &fds[1], &err));
    dq_assert_no_error(err);
    g_strfreev(envp);
    GString *text[2] = {g_string_new(NULL), g_string_new(NULL)};
    char *mark = g_strdup_printf("docqa: test: paused at %s (pid ", pause_at);
    gboolean sent = FALSE, open[2] = {TRUE, TRUE};
    while (open[0] || open[1]) {
        struct pollfd p[2] = {{.fd = open[0] ? fds[0] : -1, .events = POLLIN},
                              {.fd = open[1] ? fds[1] : -1, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            g_assert_cmpint(errno, ==, EINTR);
            continue;
        }
        for (int i = 0; i < 2; i++) {
            if (!open[i] || p[i].revents == 0)
                continue;
            char buf[4096];
            ssize_t n = read(fds[i], buf, sizeof buf);
            if (n > 0)
                g_string_append_len(text[i], buf, n);
            else if (n == 0 || errno != EINTR)
                open[i] = FALSE;
        }
        if (!sent && strstr(text[1]->str, mark) != NULL) {
            if (at_pause != NULL)
                at_pause(user);
            g_assert_cmpint(kill(pid, sig), ==, 0);
            sent = TRUE;
        }
    }
    close(fds[0]);
    close(fds[1]);
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_spawn_close_pid(pid);
    if (!sent)
        g_error("%s never paused at %s; it said: %s", argv[0], pause_at, text[1]->str);
    g_free(mark);
    if (out)
        *out = g_string_free(text[0], FALSE);
    else
        g_string_free(text[0], TRUE);
    if (errout)
        *errout = g_string_free(text[1], FALSE);
    else
        g_string_free(text[1], TRUE);
    return status;
}

int dq_test_run_signalled(const char *const *argv, const char *const *env, const char *pause_at,
                          int sig, char **out, char **errout) {
    return run_held(argv, env, pause_at, NULL, NULL, NULL, sig, out, errout);
}

int dq_test_run_signalled_after(const char *const *argv, const char *const *env,
                                const char *pause_at, void (*at_pause)(void *user), void *user,
                                int sig, char **out, char **errout) {
    return run_held(argv, env, pause_at, NULL, at_pause, user, sig, out, errout);
}

int dq_test_run_paused(const char *const *argv, const char *const *env, const char *pause_at,
                       void (*at_pause)(void *user), void *user, char **out, char **errout) {
    return run_held(argv, env, pause_at, ignore_sighup, at_pause, user, SIGHUP, out, errout);
}

char *dq_test_tiny_model(void) {
    const char *shared = dq_test_shared_dir();
    char *m = shared ? g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL) : NULL;
    if (m == NULL || !g_file_test(m, G_FILE_TEST_IS_DIR)) {
        g_test_skip("../shared/models/tiny-smolvlm-b512 not found");
        g_clear_pointer(&m, g_free);
    }
    return m;
}

char *dq_test_docqa_path(void) {
    return g_build_filename(DOCQA_BINARY_DIR, "cli", "docqa", NULL);
}

int dq_test_docqa_in(const char *cwd, GSpawnChildSetupFunc setup, const char *const *args,
                     char **out, char **errout) {
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, dq_test_docqa_path());
    for (const char *const *a = args; *a != NULL; a++)
        g_ptr_array_add(argv, g_strdup(*a));
    g_ptr_array_add(argv, NULL);
    int status = 0;
    GError *err = NULL;
    char *o = NULL, *e = NULL;
    g_assert_true(g_spawn_sync(cwd, (char **)argv->pdata, NULL, G_SPAWN_DEFAULT, setup, NULL, &o,
                               &e, &status, &err));
    dq_assert_no_error(err);
    g_ptr_array_free(argv, TRUE);
    if (out)
        *out = o;
    else
        g_free(o);
    if (errout)
        *errout = e;
    else
        g_free(e);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int dq_test_docqa(char **out, char **errout, const char *first, ...) {
    GPtrArray *args = g_ptr_array_new();
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL; a = va_arg(ap, const char *))
        g_ptr_array_add(args, (gpointer)a);
    va_end(ap);
    g_ptr_array_add(args, NULL);
    int rc = dq_test_docqa_in(NULL, NULL, (const char *const *)args->pdata, out, errout);
    g_ptr_array_free(args, TRUE);
    return rc;
}

/* A pipe's bytes as a string: an empty GBytes may have no data, and g_strndup(NULL, 0) is NULL. */
static char *bytes_text(GBytes *b) {
    gsize n = b != NULL ? g_bytes_get_size(b) : 0;
    return n > 0 ? g_strndup(g_bytes_get_data(b, NULL), n) : g_strdup("");
}

int dq_test_docqa_run(const DqTestRun *how, const char *const *args, char **out, char **errout) {
    static const DqTestRun plain = {0};
    if (how == NULL)
        how = &plain;
    GSubprocessFlags flags = G_SUBPROCESS_FLAGS_STDERR_PIPE;
    if (how->stdout_path == NULL)
        flags |= G_SUBPROCESS_FLAGS_STDOUT_PIPE;
    if (how->in != NULL)
        flags |= G_SUBPROCESS_FLAGS_STDIN_PIPE;
    GSubprocessLauncher *l = g_subprocess_launcher_new(flags);
    if (how->cwd != NULL)
        g_subprocess_launcher_set_cwd(l, how->cwd);
    for (const char *const *e = how->env; e != NULL && *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL) {
            g_subprocess_launcher_unsetenv(l, *e);
            continue;
        }
        char *name = g_strndup(*e, (gsize)(eq - *e));
        g_subprocess_launcher_setenv(l, name, eq + 1, TRUE);
        g_free(name);
    }
    if (how->stdout_path != NULL)
        g_subprocess_launcher_set_stdout_file_path(l, how->stdout_path);
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, dq_test_docqa_path());
    for (const char *const *a = args; *a != NULL; a++)
        g_ptr_array_add(argv, g_strdup(*a));
    g_ptr_array_add(argv, NULL);
    GError *err = NULL;
    GSubprocess *p = g_subprocess_launcher_spawnv(l, (const char *const *)argv->pdata, &err);
    dq_assert_no_error(err);
    GBytes *input = how->in != NULL ? g_bytes_new(how->in, how->in_len) : NULL;
    GBytes *o = NULL, *e = NULL;
    g_assert_true(g_subprocess_communicate(p, input, NULL, &o, &e, &err));
    dq_assert_no_error(err);
    int rc = g_subprocess_get_if_exited(p) ? g_subprocess_get_exit_status(p) : -1;
    if (out != NULL)
        *out = bytes_text(o);
    if (errout != NULL)
        *errout = bytes_text(e);
    if (input != NULL)
        g_bytes_unref(input);
    if (o != NULL)
        g_bytes_unref(o);
    g_bytes_unref(e);
    g_object_unref(p);
    g_object_unref(l);
    g_ptr_array_free(argv, TRUE);
    return rc;
}

void dq_test_oriented_position(int o, int w, int h, int x, int y, int *ox, int *oy) {
    switch (o) {
    case 2: /* mirrored */
        *ox = w - 1 - x, *oy = y;
        break;
    case 3: /* rotated 180 */
        *ox = w - 1 - x, *oy = h - 1 - y;
        break;
    case 4: /* flipped */
        *ox = x, *oy = h - 1 - y;
        break;
    case 5: /* transposed */
        *ox = y, *oy = x;
        break;
    case 6: /* rotated 90 clockwise */
        *ox = h - 1 - y, *oy = x;
        break;
    case 7: /* transversed */
        *ox = h - 1 - y, *oy = w - 1 - x;
        break;
    case 8: /* rotated 90 counter-clockwise */
        *ox = y, *oy = w - 1 - x;
        break;
    default:
        *ox = x, *oy = y;
        break;
    }
}

gboolean dq_test_tmpfs_child_passed(int pid) {
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) {
        g_test_skip("no tmpfs of our own here (needs root with CAP_SYS_ADMIN)");
        return FALSE;
    }
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    return TRUE;
}
