/* Eight worker processes (the real runner, queue_run) on one database file: 2,000 jobs, every one
 * answered, none failed by SQLITE_BUSY or anything else. The hash answerer (a test double) takes
 * no time, so the workers do little but contend for the write lock: the worst case. */
#include "jobs_testlib.h"
#include "queue.h"
#include "testutil.h"

static void test_eight_workers_2000_jobs(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 100, 10);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 2000);
    DqRunOptions ro = {
        .worker = {.db_path = db, .model_id = "m", .batch = 2, .until_empty = TRUE, .poll_ms = 20},
        .n_workers = 8};
    DqRunResult res;
    GError *err = NULL;
    gint64 t0 = g_get_monotonic_time();
    int code = queue_run(&ro, jt_open_answerer, NULL, &res, &err);
    dq_assert_no_error(err);
    g_test_message("8 workers, 2000 jobs: %.1f s", (g_get_monotonic_time() - t0) / 1e6);
    g_assert_cmpint(code, ==, 0);
    g_assert_cmpint(res.workers_crashed, ==, 0);
    g_assert_cmpint(res.total.done, ==, 2000);
    g_assert_cmpint(res.total.failed + res.total.retried + res.total.lost, ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 2000);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM answers"), ==, 2000);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM job_errors"), ==, 0);
    /* The queue is not serialised behind one worker. Not "all 8": on a loaded machine a worker
     * process may start after the others have drained the 2,000 jobs. */
    g_assert_cmpint(jt_query_int(db, "SELECT count(DISTINCT worker) FROM answers"), >=, 2);
    g_free(db);
    g_free(dir);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/queue-concurrency/8-workers-2000-jobs", test_eight_workers_2000_jobs);
    return g_test_run();
}
