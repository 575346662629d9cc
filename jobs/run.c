/* `docqa run`: K worker processes over one database, a progress line, signal forwarding.
 *
 * Processes, not threads: each worker owns its model and its SQLite connections, a crash (or a
 * SIGKILL) takes down one worker and nothing else, and the leases bring its jobs back. The
 * parent forks before it opens any database or starts any thread (SQLite connections and
 * threads must not cross a fork), then only waits, forwards signals and draws progress. */
#include "queue.h"

#include "dq_error.h"
#include "sanitizer.h"
#include "text.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define ERROR_LEN 512

/* Buried jobs the parent looks at again after the run; beyond these (a rack of workers dying on
 * their last attempts) the rest stay counted as failed. Pages of the mapping never touched cost
 * nothing. */
#define BURIED_MAX 65536

/* Shared between the parent and its workers (an anonymous shared mapping). */
typedef struct {
    gint64 budget; /* --max-jobs left to claim, across all workers */
    gint n_buried; /* ids reported, up to BURIED_MAX kept */
    gint64 buried[BURIED_MAX];
    struct {
        DqWorkerStats stats;
        int reported;
        int error_code;        /* DqErrorCode of `error` */
        char error[ERROR_LEN]; /* why the worker could not run */
    } worker[];
} RunShared;

static volatile sig_atomic_t child_stop;
static volatile sig_atomic_t parent_signal;

static void on_child_signal(int sig) {
    child_stop = 1;
}

static void on_parent_signal(int sig) {
    parent_signal = sig;
}

/* A signal ignored when docqa started (nohup, trap '' HUP) stays ignored: whoever started it
 * asked for that. */
static void set_handler(int sig, void (*fn)(int)) {
    struct sigaction sa;
    if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
        return;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

/* DqWorkerOptions.on_buried: ids into the shared list. */
static void note_buried(void *user, const gint64 *ids, int n) {
    RunShared *sh = user;
    for (int i = 0; i < n; i++) {
        int at = g_atomic_int_add(&sh->n_buried, 1);
        if (at < BURIED_MAX)
            sh->buried[at] = ids[i];
    }
}

/* A job buried during the run may have been answered since: the worker that held it was alive
 * after all (its lease ran out while the database was out of reach, or it hung for a while) and
 * its late answer was stored (store_jobs_complete), here or elsewhere, before or after the other
 * worker's claim reported the burial. The database says which are done; those are not failures
 * of the run. */
static void recount_buried(const DqRunOptions *opt, RunShared *sh, DqRunResult *res) {
    int n = MIN(g_atomic_int_get(&sh->n_buried), BURIED_MAX);
    if (n == 0)
        return;
    GError *err = NULL;
    gint64 done = 0;
    DqStore *s = dq_store_open_existing(opt->worker.db_path, &err);
    if (s != NULL && store_jobs_count_in_state(s, sh->buried, n, DQ_JOB_DONE, &done, &err)) {
        done = MIN(done, res->total.buried);
        res->buried_answered = done;
        res->total.buried -= done;
        res->total.failed -= done;
    }
    if (err != NULL) /* they stay counted as failed: what the claims saw */
        dq_print_line(stderr, "docqa: looking at the jobs buried during the run: %s", err->message);
    g_clear_error(&err);
    if (s != NULL) {
        store_jobs_finalize(s);
        dq_store_close(s);
    }
}

static G_NORETURN void worker_process(const DqRunOptions *opt, RunShared *sh, int index,
                                      DqAnswererOpenFn open, void *open_user) {
    child_stop = 0;
    queue_test_point("run:forked");
    set_handler(SIGINT, on_child_signal);
    set_handler(SIGTERM, on_child_signal);
    /* A closed terminal sends SIGHUP to the whole process group: a worker stops as for SIGTERM,
     * giving its jobs back, instead of dying with them leased. */
    set_handler(SIGHUP, on_child_signal);
    /* Until just now a signal ran the parent's handler, inherited over the fork, which only
     * marked it in this process's copy of parent_signal: the parent's SIGTERM, forwarded as soon
     * as it had the worker's pid, or a Ctrl-C, was lost, and the worker ran on (for good
     * without --until-empty, the parent waiting on it). Set before the fork, it is the parent's
     * own signal, which it forwards to this worker anyway. */
    if (parent_signal != 0)
        child_stop = 1;
    /* A parent that dies (even by SIGKILL) stops its workers the gentle way. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
        child_stop = 1;
    GError *err = NULL;
    DqWorkerOptions wo = opt->worker;
    wo.job_budget = opt->max_jobs > 0 ? &sh->budget : NULL;
    wo.on_buried = note_buried;
    wo.on_buried_user = sh;
    DqAnswerer *answerer = open(open_user, index, &err);
    gboolean ok = FALSE;
    if (answerer != NULL) {
        answerer->cancel = &child_stop;
        ok = queue_worker_run(&wo, answerer, &child_stop, &sh->worker[index].stats, &err);
        dq_answerer_free(answerer);
    }
    if (!ok) {
        g_strlcpy(sh->worker[index].error, err ? err->message : "unknown error", ERROR_LEN);
        sh->worker[index].error_code = err && err->domain == DQ_ERROR ? err->code : DQ_ERR_DB;
    }
    g_clear_error(&err);
    sh->worker[index].reported = 1;
    /* Stopped by the user: interrupted, even when the database failed meanwhile (a worker
     * waiting for a lost server gives up when told to stop). */
    int code = child_stop                                     ? 130
               : !ok && sh->worker[index].stats.device_failed ? DQ_WORKER_EXIT_DEVICE
               : !ok                                          ? 2
                                                              : 0;
    fflush(NULL);
    /* A leak found here kills the worker: run counts it as died, and exits 1. */
    dq_sanitizer_check_leaks();
    /* _exit: the parent's atexit handlers (and a test program's temp-dir cleanup) are not ours. */
    _exit(code);
}

/* ---- progress ---- */

typedef struct {
    DqStore *store;
    gint64 start_us;
    gint64 done_at_start;
    gboolean drawn;
} Progress;

static void format_duration(double s, char *buf, size_t n) {
    if (s < 0 || s > 1e8)
        g_strlcpy(buf, "?", n);
    else if (s < 60)
        g_snprintf(buf, n, "%.0fs", s);
    else if (s < 3600)
        g_snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        g_snprintf(buf, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

static void progress_draw(Progress *p, const char *model_id) {
    DqJobCounts c;
    if (p->store == NULL || !store_jobs_counts(p->store, model_id, &c, NULL))
        return;
    gint64 done = c.by_state[DQ_JOB_DONE];
    if (p->start_us == 0) {
        p->start_us = g_get_monotonic_time();
        p->done_at_start = done;
    }
    double elapsed = (double)(g_get_monotonic_time() - p->start_us) / 1e6;
    double rate = elapsed > 0.5 ? (double)(done - p->done_at_start) / elapsed : 0;
    gint64 left = c.by_state[DQ_JOB_QUEUED] + c.by_state[DQ_JOB_RUNNING];
    char eta[32];
    format_duration(rate > 0 ? (double)left / rate : -1, eta, sizeof(eta));
    int width = 30;
    /* Cancelled jobs are no work left, nor work done (schema 0011). */
    gint64 total = c.total - c.by_state[DQ_JOB_CANCELLED];
    int filled = total > 0 ? (int)(width * done / total) : 0;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    gint64 bad = c.by_state[DQ_JOB_FAILED] + c.by_state[DQ_JOB_DEAD];
    fprintf(stderr,
            "\r[%s] %" G_GINT64_FORMAT "/%" G_GINT64_FORMAT " job%s  %.2f answers/s  ETA %s", bar,
            done, total, total == 1 ? "" : "s", rate, eta);
    if (bad > 0)
        fprintf(stderr, "  %" G_GINT64_FORMAT " failed", bad);
    fprintf(stderr, "\033[K");
    fflush(stderr);
    p->drawn = TRUE;
}

/* ---- the parent ---- */

/* Forks worker `i`; its pid, or -1 (said on stderr). The progress line's connection is closed
 * across the fork (an SQLite connection must not cross one) and opened again after it. */
static pid_t start_worker(const DqRunOptions *opt, RunShared *sh, int i, DqAnswererOpenFn open,
                          void *open_user, DqStore **prog_store) {
    gboolean reopen = *prog_store != NULL;
    if (reopen) {
        store_jobs_finalize(*prog_store);
        dq_store_close(*prog_store);
        *prog_store = NULL;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        worker_process(opt, sh, i, open, open_user);
    if (pid < 0)
        dq_print_line(stderr, "docqa: cannot start worker %d: %s", i + 1, g_strerror(errno));
    if (reopen) {
        *prog_store = dq_store_open(opt->worker.db_path, NULL);
        dq_store_set_stop(*prog_store, &parent_signal);
    }
    return pid;
}

static void stats_add(DqWorkerStats *to, const DqWorkerStats *w) {
    to->claimed += w->claimed;
    to->done += w->done;
    to->retried += w->retried;
    to->failed += w->failed;
    to->buried += w->buried;
    to->released += w->released;
    to->lost += w->lost;
    to->withdrawn += w->withdrawn;
    to->device_failed += w->device_failed;
}

/* The parent's view of a run: its workers, their restarts, the progress line and the tally. */
typedef struct {
    const DqRunOptions *opt;
    DqAnswererOpenFn open;
    void *open_user;
    RunShared *sh;
    int k;                  /* workers */
    pid_t *pids;            /* [k]: 0 once reaped */
    int *restarts;          /* [k]: fresh processes started in its place */
    DqWorkerStats replaced; /* of workers replaced after a device failure: a fresh process
                             * starts its own */
    int alive;
    Progress prog;
    gboolean show; /* the progress line */
    int n_fatal, n_interrupted;
    DqRunResult *res;
} Parent;

static const int parent_signals[] = {SIGINT, SIGTERM, SIGHUP};

static void catch_parent_signals(struct sigaction old[G_N_ELEMENTS(parent_signals)]) {
    for (size_t i = 0; i < G_N_ELEMENTS(parent_signals); i++)
        sigaction(parent_signals[i], NULL, &old[i]);
    parent_signal = 0;
    for (size_t i = 0; i < G_N_ELEMENTS(parent_signals); i++)
        set_handler(parent_signals[i], on_parent_signal);
}

static void restore_parent_signals(const struct sigaction old[G_N_ELEMENTS(parent_signals)]) {
    for (size_t i = 0; i < G_N_ELEMENTS(parent_signals); i++)
        sigaction(parent_signals[i], &old[i], NULL);
}

static void start_workers(Parent *p) {
    fflush(NULL);
    DqStore *no_store = NULL; /* the progress line's is opened after the first forks */
    for (int i = 0; i < p->k; i++) {
        pid_t pid = start_worker(p->opt, p->sh, i, p->open, p->open_user, &no_store);
        if (pid < 0)
            break;
        p->pids[i] = pid;
        p->alive++;
    }
}

static void progress_open(Parent *p) {
    p->show = p->opt->progress && isatty(STDERR_FILENO);
    if (p->show)
        p->prog.store = dq_store_open(p->opt->worker.db_path, NULL);
    /* The bar's count waits for a lock as the workers' statements do (PostgreSQL: `LOCK TABLE
     * jobs` in psql, a VACUUM FULL): told to stop, this process would wait there too, neither
     * forwarding the signal nor exiting until the lock was given up. */
    dq_store_set_stop(p->prog.store, &parent_signal);
}

static void progress_close(Parent *p) {
    if (!p->show)
        return;
    progress_draw(&p->prog, p->opt->worker.model_id);
    if (p->prog.drawn)
        fputc('\n', stderr);
    if (p->prog.store) {
        store_jobs_finalize(p->prog.store);
        dq_store_close(p->prog.store);
    }
}

/* Worker i stopped because its device failed: said, counted, and a fresh process started in
 * its place unless the run is stopping or it failed too often. */
static void replace_failed_worker(Parent *p, int i, int status) {
    RunShared *sh = p->sh;
    queue_test_point("run:device_failed");
    /* Its jobs are back in the queue already (worker.c, "a broken device"). */
    p->res->device_failures++;
    if (p->prog.drawn)
        fputc('\n', stderr);
    gboolean stopping = parent_signal || WEXITSTATUS(status) == 130;
    gboolean again = !stopping && p->restarts[i] < DQ_RUN_DEVICE_RESTARTS;
    dq_print_line(stderr,
                  "docqa: worker %d stopped: its device failed (%s); its jobs went back to the "
                  "queue; %s",
                  i + 1, sh->worker[i].error,
                  again      ? "starting a fresh worker process in its place"
                  : stopping ? "not replaced (interrupted)"
                             : "not replaced: it failed too often");
    if (!again) {
        /* Told to stop meanwhile: an interrupted run (130), as a worker that was told to stop
         * reports it whatever failed meanwhile. */
        p->n_fatal += !stopping;
        /* The signal may have come after the last check (forward_signal): counted here, or the
         * run would end 0 with nothing left to forward it to. */
        p->n_interrupted += stopping;
        return;
    }
    p->restarts[i]++;
    p->res->device_restarts++;
    stats_add(&p->replaced, &sh->worker[i].stats);
    memset(&sh->worker[i], 0, sizeof(sh->worker[i]));
    pid_t pid = start_worker(p->opt, sh, i, p->open, p->open_user, &p->prog.store);
    if (pid > 0) {
        p->pids[i] = pid;
        p->alive++;
    } else {
        g_strlcpy(sh->worker[i].error, "cannot start a fresh worker process", ERROR_LEN);
        sh->worker[i].error_code = DQ_ERR_DEVICE;
        p->n_fatal++;
    }
}

/* Worker i exited with `status`: what it reported, a device failure, or a crash. */
static void worker_ended(Parent *p, int i, int status) {
    const RunShared *sh = p->sh;
    /* A device that failed around a stop: the worker reports 130 when the stop came first (the
     * failure was seen as it finished its last poll), DQ_WORKER_EXIT_DEVICE when the failure
     * did. Either way the run is interrupted (130) and the failure is said and counted alike,
     * whichever came first; nothing is restarted once stopping (README, "Exit statuses"). */
    gboolean device_failed = WIFEXITED(status) && sh->worker[i].reported &&
                             (WEXITSTATUS(status) == DQ_WORKER_EXIT_DEVICE ||
                              (WEXITSTATUS(status) == 130 && sh->worker[i].stats.device_failed));
    if (device_failed) {
        replace_failed_worker(p, i, status);
    } else if (WIFEXITED(status) && sh->worker[i].reported) {
        int code = WEXITSTATUS(status);
        if (code == 2)
            p->n_fatal++;
        else if (code == 130)
            p->n_interrupted++;
    } else {
        p->res->workers_crashed++;
        if (p->prog.drawn) /* below the progress line, not over it */
            fputc('\n', stderr);
        dq_print_line(stderr,
                      "docqa: worker %d died (%s %d); its jobs return to the queue when their "
                      "lease expires",
                      i + 1, WIFSIGNALED(status) ? "signal" : "exit status",
                      WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    }
}

/* The workers that exited since the last look; TRUE when there was one. */
static gboolean reap_workers(Parent *p) {
    gboolean reaped = FALSE;
    for (int i = 0; i < p->k; i++) {
        int status = 0;
        if (p->pids[i] <= 0 || waitpid(p->pids[i], &status, WNOHANG) != p->pids[i])
            continue;
        reaped = TRUE;
        p->pids[i] = 0;
        p->alive--;
        worker_ended(p, i, status);
    }
    return reaped;
}

/* Forwards the parent's signal to every worker, once. */
static void forward_signal(Parent *p, gboolean *forwarded) {
    if (!parent_signal || *forwarded)
        return;
    *forwarded = TRUE;
    p->res->interrupted = TRUE;
    for (int i = 0; i < p->k; i++)
        if (p->pids[i] > 0)
            kill(p->pids[i], SIGTERM);
}

static void wait_for_workers(Parent *p) {
    gboolean forwarded = FALSE;
    /* The bar counts the queue's jobs (a scan of the jobs table: 0.6 s at a million jobs), so
     * it is redrawn every half second or twenty times what counting took, whichever is longer:
     * a big queue's bar must not eat the cores its workers answer on. */
    gint64 next_draw = 0;
    while (p->alive > 0) {
        forward_signal(p, &forwarded);
        if (reap_workers(p) || p->alive == 0)
            continue;
        if (p->show && g_get_monotonic_time() >= next_draw) {
            gint64 t0 = g_get_monotonic_time();
            progress_draw(&p->prog, p->opt->worker.model_id);
            gint64 t1 = g_get_monotonic_time();
            next_draw = t1 + MAX(500000, 20 * (t1 - t0));
        }
        g_usleep(50000);
    }
}

/* The run's exit status: 2 with the first worker's error, 130, 1 or 0. */
static int run_status(Parent *p, GError **err) {
    const RunShared *sh = p->sh;
    DqRunResult *res = p->res;
    const int k = p->k;
    if (p->n_fatal > 0) {
        int first = 0;
        while (first < k - 1 && sh->worker[first].error[0] == '\0')
            first++;
        dq_fail(err, sh->worker[first].error_code ? sh->worker[first].error_code : DQ_ERR_DB,
                "%s%s", sh->worker[first].error,
                p->n_fatal < k ? " (in some workers; the others went on)" : "");
        return 2;
    }
    if (res->interrupted || p->n_interrupted > 0) {
        res->interrupted = TRUE;
        return 130;
    }
    if (res->total.failed > 0 || res->workers_crashed > 0)
        return 1;
    return 0;
}

int queue_run(const DqRunOptions *opt, DqAnswererOpenFn open, void *open_user, DqRunResult *res,
              GError **err) {
    memset(res, 0, sizeof(*res));
    int k = opt->n_workers > 0 ? opt->n_workers : 1;
    size_t size = sizeof(RunShared) + (size_t)k * sizeof(((RunShared *)0)->worker[0]);
    RunShared *sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        dq_fail(err, DQ_ERR_IO, "cannot map memory shared with the workers: %s", g_strerror(errno));
        return 2;
    }
    memset(sh, 0, size);
    sh->budget = opt->max_jobs;

    struct sigaction old_handlers[G_N_ELEMENTS(parent_signals)];
    catch_parent_signals(old_handlers);
    Parent p = {.opt = opt,
                .open = open,
                .open_user = open_user,
                .sh = sh,
                .k = k,
                .pids = g_new0(pid_t, k),
                .restarts = g_new0(int, k),
                .res = res};
    start_workers(&p);
    progress_open(&p);
    wait_for_workers(&p);
    queue_test_point("run:workers_ended");
    progress_close(&p);
    restore_parent_signals(old_handlers);
    /* A signal as the last worker ended, or while the bar was drawn, had no one left to forward
     * it to: the work is done, but the run was told to stop, and says so (130), as ask reports a
     * signal that comes once it has committed (README, "Exit statuses"). */
    if (parent_signal)
        res->interrupted = TRUE;

    res->total = p.replaced;
    for (int i = 0; i < k; i++)
        stats_add(&res->total, &sh->worker[i].stats);
    recount_buried(opt, sh, res);
    if (opt->buried_ids != NULL)
        g_array_append_vals(opt->buried_ids, sh->buried,
                            (guint)MIN(g_atomic_int_get(&sh->n_buried), BURIED_MAX));
    int code = run_status(&p, err);
    munmap(sh, size);
    g_free(p.restarts);
    g_free(p.pids);
    return code;
}

char *queue_run_summary(const DqRunResult *res, double secs) {
    const DqWorkerStats *t = &res->total;
    GString *g = g_string_new(NULL);
    g_string_append_printf(g, "run: %" G_GINT64_FORMAT " answered, %" G_GINT64_FORMAT " failed",
                           t->done, t->failed);
    if (t->buried > 0)
        g_string_append_printf(
            g, " (%" G_GINT64_FORMAT " dead: a worker died or hung on their last attempt)",
            t->buried);
    if (res->buried_answered > 0)
        g_string_append_printf(
            g, ", %" G_GINT64_FORMAT " buried but then answered late by their worker",
            res->buried_answered);
    g_string_append_printf(g, ", %" G_GINT64_FORMAT " retried, %" G_GINT64_FORMAT " given back",
                           t->retried, t->released);
    /* Neither answered nor failed: the user (or another worker) took them away mid-answer. */
    if (t->withdrawn > 0)
        g_string_append_printf(
            g, ", %" G_GINT64_FORMAT " withdrawn (cancelled or taken over while running)",
            t->withdrawn);
    if (t->lost > 0)
        g_string_append_printf(
            g, ", %" G_GINT64_FORMAT " answered too late (another worker held the job)", t->lost);
    if (res->device_failures > 0)
        g_string_append_printf(g, ", %d worker%s stopped by a failed device (%d replaced)",
                               res->device_failures, res->device_failures == 1 ? "" : "s",
                               res->device_restarts);
    g_string_append_printf(g, " in %.1f s (%.2f answers/s)%s", secs,
                           secs > 0 ? (double)t->done / secs : 0.0,
                           res->interrupted ? "; interrupted" : "");
    return g_string_free(g, FALSE);
}
