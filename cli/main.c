/* docqa: batch document question answering with SmolVLM.
 *
 *   docqa ingest PATH...        PDFs and TIFFs -> page images + database rows
 *   docqa ask QUESTION...       enqueue (page, question) jobs
 *   docqa run --model DIR       workers answer the queued jobs
 *   docqa status | export       progress and answers
 *   docqa requeue | cancel      jobs back into the queue, or out of it
 *   docqa prune                 page images no current page needs removed
 *   docqa generate --model DIR  one prompt through the model (the conformance entry point)
 */
#include "cli.h"
#include "memory.h"
#include "queue.h"
#include "text.h"

#include <locale.h>
#include <omp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/prctl.h>
#include <unistd.h>

typedef struct {
    const char *name;
    DqCommandFn fn;
    const char *summary;
} DqCommand;

static const DqCommand commands[] = {
    {"version", cmd_version, "print the version and the build's features"},
    {"ingest", cmd_ingest, "render PDFs and TIFFs into page images and register them"},
    {"ask", cmd_ask, "queue questions about the ingested pages"},
    {"run", cmd_run, "answer the queued questions with worker processes"},
    {"status", cmd_status, "jobs per state, speed, ETA, failure reasons"},
    {"export", cmd_export, "write the answers as CSV or JSON lines"},
    {"requeue", cmd_requeue, "queue dead, failed, cancelled or answered jobs again"},
    {"cancel", cmd_cancel, "withdraw jobs not answered yet"},
    {"prune", cmd_prune, "remove page images of old versions and gone files"},
    {"generate", cmd_generate, "run one prompt with images through the model"},
    {"migrate", cmd_migrate, "move a database between SQLite and PostgreSQL"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: docqa COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`docqa COMMAND --help` (or `docqa help COMMAND`) describes a command's "
                 "options.\n");
}

/* OpenMP takes OMP_NUM_THREADS as given, and the CPU backend keeps scratch for every thread:
 * 1000 threads on 2 CPUs took 25 s and 8.2 GB for the tiny model where 2 take 0.1 s. More
 * threads than the CPUs this process may run on never compute faster, so they are capped
 * there, with a note, unless DOCQA_OVERSUBSCRIBE=1 says the user means it. */
static void cap_threads_at_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return; /* more CPUs than a cpu_set_t holds: nothing to cap */
    int cpus = CPU_COUNT(&set), threads = omp_get_max_threads();
    if (cpus < 1 || threads <= cpus || g_strcmp0(g_getenv("DOCQA_OVERSUBSCRIBE"), "1") == 0)
        return;
    omp_set_num_threads(cpus);
    dq_print_line(
        stderr,
        "docqa: note: OMP_NUM_THREADS asks for %d threads, this process may run on %d CPU%s: "
        "using %d (DOCQA_OVERSUBSCRIBE=1 keeps %d)",
        threads, cpus, cpus == 1 ? "" : "s", cpus, threads);
}

/* libgomp's threads spin 300000 times (a few ms) at every barrier before they sleep, unless
 * OMP_WAIT_POLICY or GOMP_SPINCOUNT say otherwise, and a decode token of the 256M model passes
 * ~360 of them. On cores shared with other work a spinning thread holds a core that the thread
 * it waits for needs: text-only decode fell from 71 to 0.7 tok/s beside two busy processes.
 * Sleeping at once (OMP_WAIT_POLICY=passive) keeps 37 tok/s there but costs a third on a quiet
 * machine (47 against 71: a futex wake at every barrier); 300 spins keep 62 quiet and 33 beside
 * the busy processes, and stay ~10x below the count where decode collapsed (3000-10000 spins).
 * Vision and prefill, a few large parallel loops, hardly notice either (docs/performance.md).
 * So docqa's default is GOMP_SPINCOUNT=DQ_OMP_SPINCOUNT (scripts/bench-lib.sh sets the same for
 * the benchmarks' tools).
 *
 * libgomp reads the variables in its constructor, before main, and a .preinit_array function
 * runs before glibc has set up the environment, so docqa sets the default and starts itself
 * again, once: the same process (pid, signals, exit status), argv, standard streams and name.
 * The restarted process takes the variables it was given back out, so that what it reads and
 * passes on is the user's environment. A value the user gave (either variable) is kept as it
 * is. Only the commands that start OpenMP teams (the model's, and ingest's resampler for TIFFs)
 * are started again: loading docqa's libraries a second time costs ~17 ms (a start of
 * `generate --help` took 18 ms, 35 ms restarted), which `status` or `ask` in a script's loop
 * need not pay. */
#define DQ_OMP_SPINCOUNT    "300"
#define DQ_OMP_DEFAULT_MARK "DOCQA_OMP_DEFAULT_NAME"
/* A stop signal between the exec and dq_cli_signals_install (the libraries loaded a second
 * time, ~20 ms) would end the process by the signal (143 for SIGTERM), not with the 130 that
 * docqa promises and systemd units count as success. So the stop signals that were not blocked
 * are blocked across the exec (the mask and pending signals survive it) and unblocked once the
 * handlers are in place; DQ_OMP_UNBLOCK_MARK names them. */
#define DQ_OMP_UNBLOCK_MARK "DOCQA_OMP_UNBLOCK"
static const int omp_stop_signals[] = {SIGINT, SIGTERM, SIGHUP};
static sigset_t omp_unblock_after_install;

static void omp_wait_default(int argc, char **argv) {
    sigemptyset(&omp_unblock_after_install);
    const char *name = g_getenv(DQ_OMP_DEFAULT_MARK);
    if (name != NULL && g_strcmp0(g_getenv("GOMP_SPINCOUNT"), DQ_OMP_SPINCOUNT) == 0) {
        /* exec named the process after /proc/self/exe's link, "exe" */
        prctl(PR_SET_NAME, name, 0, 0, 0);
        const char *unblock = g_getenv(DQ_OMP_UNBLOCK_MARK);
        for (size_t i = 0; unblock != NULL && i < G_N_ELEMENTS(omp_stop_signals); i++)
            if (unblock[i] == '1')
                sigaddset(&omp_unblock_after_install, omp_stop_signals[i]);
            else if (unblock[i] == '\0')
                break;
        g_unsetenv(DQ_OMP_DEFAULT_MARK);
        g_unsetenv(DQ_OMP_UNBLOCK_MARK);
        g_unsetenv("GOMP_SPINCOUNT");
        return;
    }
    static const char *const teams[] = {"generate", "run", "ingest"};
    gboolean starts_teams = FALSE;
    for (size_t i = 0; i < G_N_ELEMENTS(teams); i++)
        starts_teams |= argc > 1 && strcmp(argv[1], teams[i]) == 0;
    if (!starts_teams || g_getenv("OMP_WAIT_POLICY") != NULL || g_getenv("GOMP_SPINCOUNT") != NULL)
        return;
    /* Started by running the dynamic loader itself (`ld.so docqa run`, e.g. from a noexec
     * mount): no interpreter was loaded for docqa, /proc/self/exe is the loader, and it would
     * take argv[1], the command's name, for the program to run. */
    if (getauxval(AT_BASE) == 0)
        return;
    char comm[17] = "";
    if (prctl(PR_GET_NAME, comm, 0, 0, 0) != 0)
        return;
    sigset_t old_mask, block;
    sigemptyset(&block);
    char unblock[G_N_ELEMENTS(omp_stop_signals) + 1] = "";
    if (sigprocmask(SIG_BLOCK, NULL, &old_mask) != 0)
        return;
    for (size_t i = 0; i < G_N_ELEMENTS(omp_stop_signals); i++) {
        gboolean was_blocked = sigismember(&old_mask, omp_stop_signals[i]) == 1;
        unblock[i] = was_blocked ? '0' : '1';
        if (!was_blocked)
            sigaddset(&block, omp_stop_signals[i]);
    }
    if (g_setenv(DQ_OMP_DEFAULT_MARK, comm, TRUE) && g_setenv(DQ_OMP_UNBLOCK_MARK, unblock, TRUE) &&
        g_setenv("GOMP_SPINCOUNT", DQ_OMP_SPINCOUNT, TRUE) &&
        sigprocmask(SIG_BLOCK, &block, NULL) == 0) {
        execv("/proc/self/exe", argv);
        sigprocmask(SIG_SETMASK, &old_mask, NULL);
    }
    /* No /proc (a chroot, a sandbox): libgomp's own default stays. */
    g_unsetenv(DQ_OMP_DEFAULT_MARK);
    g_unsetenv(DQ_OMP_UNBLOCK_MARK);
    g_unsetenv("GOMP_SPINCOUNT");
}

int main(int argc, char **argv) {
    /* A write past the file size limit (`ulimit -f`, systemd's LimitFSIZE=) then fails with
     * EFBIG, which each writer reports naming its file (a page: store_failed, rendered again by
     * the next ingest), instead of killing the process without a word (a render worker's death
     * recorded as the document's render_crashed, never retried). Ignored, it stays so in the
     * processes docqa starts. */
    signal(SIGXFSZ, SIG_IGN);
    omp_wait_default(argc, argv);
    dq_memory_keep_page_buffers(); /* page-sized buffers reused, not faulted in afresh */
    cap_threads_at_cpus();
    setlocale(LC_ALL, "");
    /* Numbers in JSON, SQL and CSV output must not depend on the user's locale. */
    setlocale(LC_NUMERIC, "C");
    if (argc < 2) {
        usage(stderr);
        return DQ_EXIT_FATAL;
    }
    const char *name = argv[1];
    if (strcmp(name, "help") == 0 && argc > 2 && strcmp(argv[2], "help") != 0) {
        /* `docqa help ingest` is `docqa ingest --help`; `docqa help help` is `docqa help` */
        for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
            if (strcmp(commands[i].name, argv[2]) == 0) {
                char *help_argv[] = {argv[2], "--help", NULL};
                return dq_cli_close_stdout(argv[2], commands[i].fn(2, help_argv));
            }
        dq_print_line(stderr, "docqa: help: unknown command '%s'", argv[2]);
        fputc('\n', stderr);
        usage(stderr);
        return DQ_EXIT_FATAL;
    }
    if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        usage(stdout);
        return dq_cli_close_stdout("help", DQ_EXIT_OK);
    }
    if (strcmp(name, "--version") == 0)
        name = "version";
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        if (strcmp(commands[i].name, name) == 0) {
            dq_cli_signals_install(name);
            sigprocmask(SIG_UNBLOCK, &omp_unblock_after_install, NULL);
            queue_test_hooks_install();
            int status = dq_cli_close_stdout(name, commands[i].fn(argc - 1, argv + 1));
            int sig = dq_cli_signal_caught();
            /* a command that failed (2) has said why; that stays its outcome */
            if (sig != 0 && (status == DQ_EXIT_OK || status == DQ_EXIT_PARTIAL)) {
                dq_print_line(stderr,
                              "docqa: %s: interrupted (%s) as it finished: its work was done "
                              "and stored, and what it printed is complete",
                              name, dq_cli_signal_name(sig));
                status = DQ_EXIT_INTERRUPTED;
            }
            return status;
        }
    dq_print_line(stderr, "docqa: unknown command '%s'", name);
    fputc('\n', stderr);
    usage(stderr);
    return DQ_EXIT_FATAL;
}
