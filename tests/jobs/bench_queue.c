/* Queue overhead alone: claim + complete with no model work, with 1 and with 8 processes on one
 * database file, printed as operations (jobs claimed and completed) per second and as the ratio
 * of the two in the same run, and the workers' CPU time a job (which a shared host's load moves
 * least). Driven by scripts/bench-queue.sh. */
#include "jobs_testlib.h"
#include "store_jobs.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>

/* ops/s; the workers' CPU microseconds a job in *cpu_us. */
static double run(const char *dir, int docs, int procs, int batch, gint64 *n_jobs, double *cpu_us) {
    char *sub = g_build_filename(dir, procs == 1 ? "one" : "many", NULL);
    g_mkdir_with_parents(sub, 0755);
    char *db = jt_make_db(sub, docs, 10);
    *n_jobs = jt_ask(db, 2, "m", 3);
    double secs = 0, cpu_s = 0;
    gboolean ok = jt_drain_processes(db, procs, batch, &secs, &cpu_s);
    *cpu_us = cpu_s * 1e6 / (double)MAX(*n_jobs, 1);
    if (!ok || jt_query_int(db, "SELECT count(*) FROM jobs WHERE state <> 'done'") != 0) {
        fprintf(stderr, "bench: a process failed or jobs were left\n");
        exit(2);
    }
    g_free(db);
    g_free(sub);
    return (double)*n_jobs / secs;
}

int main(int argc, char **argv) {
    int docs = argc > 1 ? atoi(argv[1]) : 200; /* x 10 pages x 2 questions */
    int batch = argc > 2 ? atoi(argv[2]) : 1;
    int many = argc > 3 ? atoi(argv[3]) : 8;
    if (docs < 1 || batch < 1 || many < 1) {
        fprintf(stderr, "usage: bench_queue [DOCS] [BATCH] [PROCS]\n");
        return 2;
    }
    char *dir = dq_test_tmpdir();
    gint64 n1 = 0, n8 = 0;
    double cpu1 = 0, cpu8 = 0;
    double one = run(dir, docs, 1, batch, &n1, &cpu1);
    double eight = run(dir, docs, many, batch, &n8, &cpu8);
    printf("queue overhead (claim + complete, batch %d, no model work; CPU: the workers', a job)\n",
           batch);
    printf("  %2d process:   %6" G_GINT64_FORMAT " jobs  %9.0f ops/s  %7.0f CPU us/job\n", 1, n1,
           one, cpu1);
    printf("  %2d processes: %6" G_GINT64_FORMAT " jobs  %9.0f ops/s  %7.0f CPU us/job  (%.2fx the "
           "single process)\n",
           many, n8, eight, cpu8, eight / one);
    g_free(dir);
    return 0;
}
