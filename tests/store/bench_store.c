/* Queue overhead on each store: claim + complete with no model work, 1, 8 and 32 worker
 * processes, on SQLite (one file) and on PostgreSQL (a throwaway server, pg_testlib.h), in one
 * run, printed as a table of operations (jobs claimed and completed) per second and as ratios
 * against SQLite with 1 worker measured in the same run, and the workers' CPU time a job (not the
 * server's), which a shared host's load moves least. Driven by scripts/bench-store.sh. */
#include "jobs_testlib.h"
#include "pg_testlib.h"
#include "store_jobs.h"
#include "store_migrate.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>

/* Copies the template queue into `loc`, drains it with `procs` processes; ops/s, and the
 * workers' CPU microseconds a job in *cpu_us. */
static double run(const char *template_db, const char *loc, int procs, int batch, gint64 n_jobs,
                  double *cpu_us) {
    GError *err = NULL;
    DqStore *from = dq_store_open(template_db, &err);
    DqStore *to = from ? dq_store_open(loc, &err) : NULL;
    if (to == NULL || !dq_store_copy(from, to, NULL, &err)) {
        fprintf(stderr, "bench: %s\n", err->message);
        exit(2);
    }
    DqJobCounts c;
    dq_store_close(from);
    double secs = 0, cpu_s = 0;
    gboolean ok = jt_drain_processes(loc, procs, batch, &secs, &cpu_s);
    *cpu_us = cpu_s * 1e6 / (double)MAX(n_jobs, 1);
    if (!ok || !store_jobs_counts(to, NULL, &c, &err) || c.by_state[DQ_JOB_DONE] != n_jobs) {
        fprintf(stderr, "bench: a process failed or jobs were left (%s)\n", loc);
        exit(2);
    }
    dq_store_close(to);
    return (double)n_jobs / secs;
}

int main(int argc, char **argv) {
    int docs = argc > 1 ? atoi(argv[1]) : 100; /* x 10 pages x 2 questions */
    int batch = argc > 2 ? atoi(argv[2]) : 4;
    if (docs < 1 || batch < 1) {
        fprintf(stderr, "usage: bench_store [DOCS] [BATCH]\n");
        return 2;
    }
    static const int procs[] = {1, 8, 32};
    char *dir = dq_test_tmpdir();
    char *template_db = jt_make_db(dir, docs, 10);
    gint64 n_jobs = jt_ask(template_db, 2, "m", 3);
    char *why_not = NULL;
    PgtServer *server = pgt_start(&why_not);
    if (server == NULL)
        fprintf(stderr, "bench: PostgreSQL column left empty: %s\n", why_not);
    double sqlite_ops[3], pg_ops[3] = {0, 0, 0}, sqlite_cpu[3], pg_cpu[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        char *loc = g_strdup_printf("sqlite:%s/bench-%d.db", dir, procs[i]);
        sqlite_ops[i] = run(template_db, loc, procs[i], batch, n_jobs, &sqlite_cpu[i]);
        g_free(loc);
        if (server != NULL) {
            char *name = g_strdup_printf("bench_%d", procs[i]);
            loc = pgt_new_database(server, name);
            pg_ops[i] = run(template_db, loc, procs[i], batch, n_jobs, &pg_cpu[i]);
            g_free(loc);
            g_free(name);
        }
    }
    printf("queue overhead: claim + complete, %" G_GINT64_FORMAT " jobs, batch %d, no model work\n",
           n_jobs, batch);
    printf("(x = ratio to SQLite with 1 worker in this run; PostgreSQL: local server, Unix "
           "socket, fsync off; CPU: the workers' microseconds a job, not the server's)\n");
    printf("  workers |   SQLite ops/s         CPU us | PostgreSQL ops/s         CPU us\n");
    for (int i = 0; i < 3; i++) {
        printf("  %7d | %9.0f  (%5.2fx)  %7.0f |", procs[i], sqlite_ops[i],
               sqlite_ops[i] / sqlite_ops[0], sqlite_cpu[i]);
        if (server != NULL)
            printf(" %9.0f  (%5.2fx)  %7.0f\n", pg_ops[i], pg_ops[i] / sqlite_ops[0], pg_cpu[i]);
        else
            printf("   (no server)\n");
    }
    pgt_stop(server);
    g_free(why_not);
    g_free(template_db);
    g_free(dir);
    return 0;
}
