/* docqa's OpenMP default (cli/main.c): the commands that run the model start with libgomp's
 * threads spinning 300 times at a barrier before they sleep (GOMP_SPINCOUNT=300), not 300000,
 * which on shared cores cut decode to a hundredth; a user's OMP_WAIT_POLICY or GOMP_SPINCOUNT
 * is kept; and setting the default (docqa starts itself again with it) cannot be seen: the same
 * pid, name, argv, output, signals and exit status, and no loop.
 *
 * What libgomp uses is read from libgomp itself: OMP_DISPLAY_ENV=verbose makes it print its
 * settings as it starts (GOMP_SPINCOUNT = '300000' is its own default, '0' passive), once for
 * each time the program is started. */
#include "jobs_testlib.h"
#include "testutil.h"

#include <elf.h>
#include <gio/gio.h>
#include <link.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

/* A launcher with OMP_DISPLAY_ENV=verbose and neither variable of the wait policy (ctest may set
 * them for other tests), then `env`'s "NAME=value" pairs. */
static GSubprocessLauncher *launcher(GSubprocessFlags flags, const char *const *env) {
    GSubprocessLauncher *l = g_subprocess_launcher_new(flags);
    g_subprocess_launcher_unsetenv(l, "OMP_WAIT_POLICY");
    g_subprocess_launcher_unsetenv(l, "GOMP_SPINCOUNT");
    g_subprocess_launcher_setenv(l, "OMP_DISPLAY_ENV", "verbose", TRUE);
    for (const char *const *e = env; e && *e; e++) {
        char **kv = g_strsplit(*e, "=", 2);
        g_subprocess_launcher_setenv(l, kv[0], kv[1], TRUE);
        g_strfreev(kv);
    }
    return l;
}

/* `docqa generate` on the tiny model, started by `loader` (the dynamic loader) when not NULL:
 * exit status, stdout, stderr. */
static int generate_by(const char *loader, const char *const *env, const char *model, char **out,
                       char **errout) {
    GSubprocessLauncher *l =
        launcher(G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, env);
    char *bin = dq_test_docqa_path();
    const char *argv[] = {loader, bin,  "generate",         "-m", model,
                          "-p",   "hi", "--max-new-tokens", "4",  "--ignore-eos",
                          NULL};
    GError *err = NULL;
    GSubprocess *p = g_subprocess_launcher_spawnv(l, loader ? argv : argv + 1, &err);
    dq_assert_no_error(err);
    g_assert_true(g_subprocess_communicate_utf8(p, NULL, NULL, out, errout, &err));
    dq_assert_no_error(err);
    int rc = g_subprocess_get_if_exited(p) ? g_subprocess_get_exit_status(p) : -1;
    g_object_unref(p);
    g_object_unref(l);
    g_free(bin);
    return rc;
}

static int generate(const char *const *env, const char *model, char **out, char **errout) {
    return generate_by(NULL, env, model, out, errout);
}

/* How many times libgomp started (its settings printed), and the last GOMP_SPINCOUNT. */
static int displays(const char *err, char **spincount) {
    int n = 0;
    for (const char *s = err; (s = strstr(s, "OPENMP DISPLAY ENVIRONMENT BEGIN")) != NULL; s++)
        n++;
    g_clear_pointer(spincount, g_free);
    for (const char *s = err; (s = strstr(s, "GOMP_SPINCOUNT = '")) != NULL; s++) {
        s += strlen("GOMP_SPINCOUNT = '");
        g_free(*spincount);
        *spincount = g_strndup(s, strcspn(s, "'"));
    }
    return n;
}

static void test_generate_default(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *out = NULL, *err = NULL, *spin = NULL;
    g_assert_cmpint(generate(NULL, model, &out, &err), ==, 0);
    /* libgomp's own default first, then docqa's, once */
    g_assert_cmpint(displays(err, &spin), ==, 2);
    g_assert_cmpstr(spin, ==, "300");
    g_assert_nonnull(strstr(err, "GOMP_SPINCOUNT = '300000'"));
    /* the answer is printed once, as with the policy given by the user */
    char *out_user = NULL, *err_user = NULL;
    const char *passive[] = {"OMP_WAIT_POLICY=passive", NULL};
    g_assert_cmpint(generate(passive, model, &out_user, &err_user), ==, 0);
    g_assert_cmpint(displays(err_user, &spin), ==, 1);
    g_assert_cmpstr(spin, ==, "0");
    g_assert_cmpstr(out, !=, "");
    g_assert_cmpstr(out, ==, out_user);
    g_free(out_user);
    g_free(err_user);
    g_free(spin);
    g_free(out);
    g_free(err);
    g_free(model);
}

/* The user's settings are libgomp's: started once, with what they say. */
static void test_user_values_kept(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    static const struct {
        const char *env[3];
        const char *spincount, *also;
    } cases[] = {
        {{"OMP_WAIT_POLICY=active", NULL}, "30000000000", "OMP_WAIT_POLICY = 'ACTIVE'"},
        {{"GOMP_SPINCOUNT=1234", NULL}, "1234", NULL},
        {{"OMP_WAIT_POLICY=passive", "GOMP_SPINCOUNT=77", NULL}, "77", NULL},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *out = NULL, *err = NULL, *spin = NULL;
        g_assert_cmpint(generate(cases[i].env, model, &out, &err), ==, 0);
        g_assert_cmpint(displays(err, &spin), ==, 1);
        g_assert_cmpstr(spin, ==, cases[i].spincount);
        if (cases[i].also != NULL)
            g_assert_nonnull(strstr(err, cases[i].also));
        g_free(spin);
        g_free(out);
        g_free(err);
    }
    /* OMP_NUM_THREADS is the user's too, with the default policy */
    const char *one[] = {"OMP_NUM_THREADS=1", NULL};
    char *out = NULL, *err = NULL, *spin = NULL;
    g_assert_cmpint(generate(one, model, &out, &err), ==, 0);
    g_assert_cmpint(displays(err, &spin), ==, 2);
    g_assert_cmpstr(spin, ==, "300");
    g_assert_nonnull(
        strstr(g_strrstr(err, "OPENMP DISPLAY ENVIRONMENT BEGIN"), "OMP_NUM_THREADS = '1'"));
    g_free(spin);
    g_free(out);
    g_free(err);
    g_free(model);
}

/* In the child: killed with this test, should an assertion end it before it stops docqa (whose
 * workers follow their parent, jobs/run.c). */
static void die_with_parent(gpointer data) {
    (void)data;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static char *proc_file(GPid pid, const char *name, gsize *len) {
    char *path = g_strdup_printf("/proc/%d/%s", (int)pid, name), *text = NULL;
    if (!g_file_get_contents(path, &text, len, NULL))
        text = NULL;
    g_free(path);
    return text;
}

/* `docqa run` waiting for work: its worker (forked from it) runs with the default, and the
 * process the caller started is docqa as started, name and argv, handling SIGTERM itself. */
static void test_run_default_invisible(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    GSubprocessLauncher *l =
        launcher(G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE, NULL);
    g_subprocess_launcher_set_child_setup(l, die_with_parent, NULL, NULL);
    char *bin = dq_test_docqa_path();
    const char *argv[] = {bin, "run", "--db", db, "--model", model, "-q", NULL};
    GError *err = NULL;
    GSubprocess *p = g_subprocess_launcher_spawnv(l, argv, &err);
    dq_assert_no_error(err);
    GPid pid = (GPid)atoi(g_subprocess_get_identifier(p));
    /* the worker, once forked (a hang guard, not a timing: a minute on any machine) */
    char *children = NULL;
    GPid worker = 0;
    for (int i = 0; i < 600 && worker <= 0; i++) {
        g_free(children);
        char *name = g_strdup_printf("task/%d/children", (int)pid);
        children = proc_file(pid, name, NULL);
        g_free(name);
        worker = children ? (GPid)atoi(children) : 0;
        if (worker <= 0)
            g_usleep(100000);
    }
    g_assert_cmpint(worker, >, 0);
    char *comm = proc_file(pid, "comm", NULL);
    g_assert_cmpstr(comm, ==, "docqa\n");
    gsize len = 0;
    char *cmdline = proc_file(pid, "cmdline", &len);
    GString *want = g_string_new(NULL);
    for (const char *const *a = argv; *a; a++)
        g_string_append_len(want, *a, (gssize)strlen(*a) + 1);
    g_assert_cmpmem(cmdline, len, want->str, want->len);
    /* the worker is a fork of the restarted process: started with the default */
    char *env_block = proc_file(worker, "environ", &len);
    g_assert_nonnull(env_block);
    gboolean spin = FALSE;
    for (gsize off = 0; off < len; off += strlen(env_block + off) + 1)
        spin |= strcmp(env_block + off, "GOMP_SPINCOUNT=300") == 0;
    g_assert_true(spin);
    g_assert_cmpint(kill(pid, SIGTERM), ==, 0);
    g_assert_true(g_subprocess_wait(p, NULL, &err));
    dq_assert_no_error(err);
    g_assert_true(g_subprocess_get_if_exited(p));
    g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 130);
    g_free(env_block);
    g_string_free(want, TRUE);
    g_free(cmdline);
    g_free(comm);
    g_free(children);
    g_object_unref(p);
    g_object_unref(l);
    g_free(bin);
    g_free(db);
    g_free(dir);
    g_free(model);
}

/* This test program's dynamic loader (its PT_INTERP), docqa's too. */
static int find_interp(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_INTERP)
            *(const char **)data = (const char *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    return 1; /* the first object is the program */
}

/* `ld.so docqa generate ...` (a binary on a noexec mount is started so): /proc/self/exe is the
 * loader there, which restarted with docqa's argv would load "generate" as the program. docqa
 * runs as asked, once, with libgomp's own default. */
static void test_through_loader(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    const char *loader = NULL;
    dl_iterate_phdr(find_interp, &loader);
    g_assert_nonnull(loader);
    char *out = NULL, *err = NULL, *spin = NULL, *out_direct = NULL, *err_direct = NULL;
    int rc = generate_by(loader, NULL, model, &out, &err);
    if (rc != 0)
        g_printerr("%s", err);
    g_assert_cmpint(rc, ==, 0);
    g_assert_cmpint(displays(err, &spin), ==, 1);
    g_assert_cmpstr(spin, ==, "300000");
    g_assert_cmpint(generate(NULL, model, &out_direct, &err_direct), ==, 0);
    g_assert_cmpstr(out, !=, "");
    g_assert_cmpstr(out, ==, out_direct);
    g_free(out_direct);
    g_free(err_direct);
    g_free(spin);
    g_free(out);
    g_free(err);
    g_free(model);
}

/* A SIGTERM that arrives while docqa starts itself again (here: raised by a preloaded library
 * as the restarted process loads) ends it as one after the start does, with 130 and docqa's
 * message, not killed by the signal (143: a systemd unit with SuccessExitStatus=130 failed). */
static void test_signal_during_restart(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    /* a sanitized docqa refuses a library loaded before its runtime unless told not to look */
    const char *asan = g_getenv("ASAN_OPTIONS");
    char *asan_env = g_strdup_printf("ASAN_OPTIONS=%s%sverify_asan_link_order=0", asan ? asan : "",
                                     asan && *asan ? ":" : "");
    const char *env[] = {"LD_PRELOAD=" DQ_SIGTERM_PRELOAD, "DQ_TEST_SIGTERM_AT_RESTART=1", asan_env,
                         NULL};
    char *out = NULL, *err = NULL;
    int rc = generate(env, model, &out, &err);
    g_assert_nonnull(strstr(err, "docqa: generate: interrupted (SIGTERM) before it finished"));
    g_assert_cmpint(rc, ==, 130);
    g_assert_cmpstr(out, ==, "");
    g_free(out);
    g_free(err);
    g_free(asan_env);
    g_free(model);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/cli-omp/generate-default", test_generate_default);
    g_test_add_func("/cli-omp/user-values-kept", test_user_values_kept);
    g_test_add_func("/cli-omp/run-default-invisible", test_run_default_invisible);
    g_test_add_func("/cli-omp/through-loader", test_through_loader);
    g_test_add_func("/cli-omp/signal-during-restart", test_signal_during_restart);
    return g_test_run();
}
