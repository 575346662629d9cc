/* Crash safety: workers are SIGKILLed at every named point of the life cycle (queue.h) and at
 * random moments, many times; afterwards every job must be answered exactly once, with the
 * right answer, and the database must pass PRAGMA integrity_check. */
#include "jobs_testlib.h"
#include "queue.h"
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LEASE_MS 300

static const char *db;

/* A worker process; `kill_at` goes into DOCQA_TEST_KILL_AT (NULL: none). */
static pid_t spawn_worker(const char *kill_at, int delay_ms) {
    return jt_spawn_worker(db, LEASE_MS, kill_at, delay_ms, 0);
}

/* The states a crash may leave: never an answer without 'done', nor 'done' without one. */
static void assert_consistent(void) {
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs j WHERE (j.state = 'done') <> "
                                     "EXISTS (SELECT 1 FROM answers a WHERE a.job_id = j.id)"),
                    ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) - count(DISTINCT job_id) FROM answers"), ==,
                    0);
}

static void test_kill_at_named_points(void) {
    int kills = 0;
    for (int round = 0; round < 3; round++)
        for (int i = 0; jt_kill_points[i] != NULL; i++) {
            char *spec = g_strdup_printf("%s:%d", jt_kill_points[i], 1 + (int)((i + round) % 3));
            pid_t pid = spawn_worker(spec, 2);
            int status = 0;
            g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
            if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
                g_error("worker with DOCQA_TEST_KILL_AT=%s was not killed (status %d)", spec,
                        status);
            kills++;
            assert_consistent();
            g_free(spec);
        }
    g_test_message("%d workers killed at named points", kills);
}

static void test_kill_at_random_moments(void) {
    enum { N = 4 };
    pid_t pids[N] = {0};
    int kills = 0, hook_kills = 0, n_questions = 2;
    /* Until 60 kills, however long a loaded machine takes to make them (20 s made fewer than
     * the 40 asserted below when each round's fork took a second); the deadline ends a hang. */
    gint64 end = g_get_monotonic_time() + 200 * G_USEC_PER_SEC;
    GRand *rng = g_rand_new_with_seed(12345);
    while (g_get_monotonic_time() < end && kills + hook_kills < 60) {
        for (int i = 0; i < N; i++) {
            if (pids[i] > 0) {
                int status = 0;
                if (waitpid(pids[i], &status, WNOHANG) != pids[i])
                    continue;
                if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
                    hook_kills++;
                else
                    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                pids[i] = 0;
            }
            /* Half the workers also kill themselves at random points. */
            pids[i] = spawn_worker(i % 2 ? "random:0.02" : NULL, g_rand_int_range(rng, 5, 25));
        }
        g_usleep((gulong)g_rand_int_range(rng, 10000, 60000));
        int victim = g_rand_int_range(rng, 0, N);
        if (pids[victim] > 0 && kill(pids[victim], SIGKILL) == 0) {
            waitpid(pids[victim], NULL, 0);
            pids[victim] = 0;
            kills++;
        }
        /* Out of work before enough kills (a fast machine): ask one more question. */
        if (jt_query_int(db, "SELECT count(*) FROM jobs WHERE state <> 'done'") == 0)
            g_assert_cmpint(jt_ask(db, ++n_questions, "m", 100000), >, 0);
    }
    for (int i = 0; i < N; i++)
        if (pids[i] > 0) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
            kills++;
        }
    g_rand_free(rng);
    g_test_message("%d workers killed from outside, %d by random hooks", kills, hook_kills);
    g_assert_cmpint(kills + hook_kills, >=, 40);
    assert_consistent();
}

static void test_everything_answered_once(void) {
    /* A clean worker finishes what the killed ones left (waiting out their leases). */
    pid_t pid = spawn_worker(NULL, 0);
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    gint64 jobs = jt_query_int(db, "SELECT count(*) FROM jobs");
    g_assert_cmpint(jobs, >=, 320);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, jobs);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM answers"), ==, jobs);
    assert_consistent();
    /* Each answer is the one for its own page and question. */
    GError *err = NULL;
    DqStore *s = dq_store_open(db, &err);
    dq_assert_no_error(err);
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(dq_store_sqlite(s),
                                       "SELECT p.image_sha256, q.text, a.text FROM answers a "
                                       "JOIN jobs j ON j.id = a.job_id JOIN pages p ON "
                                       "p.id = j.page_id JOIN questions q ON q.id = j.question_id",
                                       -1, &st, NULL),
                    ==, SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        char *path = queue_page_image_path(db, (const char *)sqlite3_column_text(st, 0));
        char *want = jt_expected_answer(path, (const char *)sqlite3_column_text(st, 1));
        g_assert_cmpstr((const char *)sqlite3_column_text(st, 2), ==, want);
        g_free(want);
        g_free(path);
    }
    sqlite3_finalize(st);
    g_assert_cmpint(sqlite3_prepare_v2(dq_store_sqlite(s), "PRAGMA integrity_check", -1, &st, NULL),
                    ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    g_assert_cmpstr((const char *)sqlite3_column_text(st, 0), ==, "ok");
    sqlite3_finalize(st);
    dq_store_close(s);
    /* The kills really interrupted leased work. */
    gint64 expired =
        jt_query_int(db, "SELECT count(*) FROM job_errors WHERE kind = 'lease_expired'");
    g_test_message("%" G_GINT64_FORMAT " jobs, %" G_GINT64_FORMAT " expired leases reclaimed", jobs,
                   expired);
    g_assert_cmpint(expired, >=, 20);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    char *dir = dq_test_tmpdir();
    db = jt_make_db(dir, 40, 4);
    /* Plenty of attempts: every kill uses one, and none may end a job as dead here. */
    g_assert_cmpint(jt_ask(db, 2, "m", 100000), ==, 320); /* see n_questions */
    g_test_add_func("/queue-crash/named-points", test_kill_at_named_points);
    g_test_add_func("/queue-crash/random-moments", test_kill_at_random_moments);
    g_test_add_func("/queue-crash/answered-exactly-once", test_everything_answered_once);
    int rc = g_test_run();
    g_free((char *)db);
    g_free(dir);
    return rc;
}
