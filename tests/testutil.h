/* Helpers shared by the test programs (GLib's g_test framework, run by ctest).
 *
 * Inputs: the compact fixtures committed under tests/fixtures/, and the full goldens in
 * ../shared/ beside the checkout when it exists (DOCQA_SHARED_DIR overrides). A test whose
 * inputs are missing fails; it never passes vacuously. */
#ifndef DQ_TESTUTIL_H
#define DQ_TESTUTIL_H

#include <glib.h>
#include <stddef.h>

/* Source tree root (compile-time). */
const char *dq_test_source_dir(void);

/* The shared/ folder, or NULL when it does not exist (a note is printed once). */
const char *dq_test_shared_dir(void);

/* A fresh temporary directory, removed with its contents at exit. */
char *dq_test_tmpdir(void);

/* Waits for a forked child that ran its part of a test on a tmpfs of its own: TRUE when it exited
 * 0, FALSE (the test marked skipped, saying why) when it exited 77, as such children do where
 * they may not mount one (no root with CAP_SYS_ADMIN); fails the test otherwise. */
gboolean dq_test_tmpfs_child_passed(int pid);

/* Reads a whole file; fails the test when it cannot. g_free the result. */
char *dq_test_read_file(const char *path, size_t *len);

/* Asserts that a GError is unset, printing its message when it is not. */
#define dq_assert_no_error(e)                                                                      \
    do {                                                                                           \
        if ((e) != NULL)                                                                           \
            g_error("%s:%d: unexpected error: %s", __FILE__, __LINE__, (e)->message);              \
    } while (0)

/* A copy of the snapshot folder `model` in a new temporary folder (its files linked) whose
 * config.json says max_position_embeddings = positions. RoPE has no table, so the weights give
 * the same tokens at any setting. g_free the path. */
char *dq_test_snapshot_with_positions(const char *model, int positions);

/* Runs argv (argv[0] a path; NULL-terminated) with DOCQA_TEST_PAUSE_AT=pause_at in its
 * environment (common/test_point.h), and NAME=VALUE pairs of env (NULL-terminated; may be NULL).
 * When the process, or one of its children, says it is paused there, sends `sig` to the process
 * (not to the child that paused); then collects its output until it ends. Fails the test when it
 * ends without pausing. Returns its wait status; out and errout (may be NULL) get stdout and
 * stderr (g_free). */
int dq_test_run_signalled(const char *const *argv, const char *const *env, const char *pause_at,
                          int sig, char **out, char **errout);

/* dq_test_run_signalled, calling at_pause(user) where argv is held, before the signal (to take
 * a lock the signalled process must then meet). */
int dq_test_run_signalled_after(const char *const *argv, const char *const *env,
                                const char *pause_at, void (*at_pause)(void *user), void *user,
                                int sig, char **out, char **errout);

/* Holds argv at pause_at as dq_test_run_signalled does, calls at_pause(user) there (to change
 * the database under a reader at a known moment), then lets it go on: it starts with SIGHUP
 * ignored, which docqa keeps, and is sent SIGHUP. Returns its wait status. */
int dq_test_run_paused(const char *const *argv, const char *const *env, const char *pause_at,
                       void (*at_pause)(void *user), void *user, char **out, char **errout);

/* ../shared/models/tiny-smolvlm-b512, the tiny SmolVLM snapshot; NULL, with the test skipped
 * saying why, when it is not there. g_free the path. */
char *dq_test_tiny_model(void);

/* Where the stored pixel (x, y) of a w x h image is shown under EXIF/TIFF Orientation `o`
 * (1-8, TIFF 6.0: which stored row is the top, which column the left; anything else: as
 * stored), i.e. where exif_transpose moves it: (*ox, *oy) in the w x h image, or the h x w one
 * for 5-8. */
void dq_test_oriented_position(int o, int w, int h, int x, int y, int *ox, int *oy);

/* The docqa binary of this build. g_free the path. */
char *dq_test_docqa_path(void);

/* Runs the docqa binary with args (NULL-terminated, the program's name left out) in folder cwd
 * (NULL: this one), setup run in the child before exec (NULL: none); out and errout (may be
 * NULL) get stdout and stderr (g_free). Returns its exit status, -1 when a signal ended it. */
int dq_test_docqa_in(const char *cwd, GSpawnChildSetupFunc setup, const char *const *args,
                     char **out, char **errout);

/* The same in this folder, with the arguments listed up to a NULL. */
int dq_test_docqa(char **out, char **errout, const char *first, ...) G_GNUC_NULL_TERMINATED;

/* How dq_test_docqa_run starts docqa; a member left 0 or NULL changes nothing. */
typedef struct {
    const char *cwd;        /* the folder it runs in */
    const char *const *env; /* NULL-terminated: "NAME=value" sets NAME, "NAME" unsets it */
    const char *in;         /* stdin: these in_len bytes through a pipe (NULL: this one's) */
    gsize in_len;
    const char *stdout_path; /* stdout into this file rather than *out (which is then "") */
} DqTestRun;

/* Runs the docqa binary with args (NULL-terminated, the program's name left out) as `how` says
 * (NULL: as this process runs), stdout and stderr through pipes; out and errout (may be NULL)
 * get them, "" when it wrote none (g_free). Returns its exit status, -1 when a signal ended it. */
int dq_test_docqa_run(const DqTestRun *how, const char *const *args, char **out, char **errout);

#endif
