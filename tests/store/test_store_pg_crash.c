/* The jobs issue's crash test on PostgreSQL: 16 workers in 4 process groups standing for 4
 * machines share one queue on a real server (pg_testlib.h). Workers are SIGKILLed at every named
 * point of the life cycle (jobs/queue.h), kill themselves at random points, and whole "machines"
 * (a process group) are SIGKILLed at random moments; afterwards every job must be answered
 * exactly once, with the right answer. The jobs and page images come from jobs_testlib's SQLite
 * database, moved with dq_store_copy (docqa migrate). */
#include "jobs_testlib.h"
#include "pg_testlib.h"
#include "queue.h"
#include "store_migrate.h"
#include "testutil.h"

#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LEASE_MS            300
#define MACHINES            4
#define WORKERS_PER_MACHINE 4

static PgtServer *server;
static char *db;      /* the PostgreSQL location */
static char *page_db; /* the SQLite database whose page store the workers read */

static pid_t spawn_worker_at(const char *location, const char *kill_at, int delay_ms,
                             gint64 lease_ms) {
    return jt_spawn_worker(location, lease_ms, kill_at, delay_ms, 0);
}

static pid_t spawn_worker(const char *kill_at, int delay_ms) {
    return spawn_worker_at(db, kill_at, delay_ms, LEASE_MS);
}

/* A "machine": a process group of WORKERS_PER_MACHINE workers, respawned as they exit (half of
 * them kill themselves at random points), until the whole group is SIGKILLed. */
static pid_t spawn_machine(guint32 seed) {
    fflush(NULL);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid != 0) {
        setpgid(pid, pid);
        return pid;
    }
    setpgid(0, 0);
    GRand *rng = g_rand_new_with_seed(seed);
    pid_t w[WORKERS_PER_MACHINE] = {0};
    for (;;) {
        for (int i = 0; i < WORKERS_PER_MACHINE; i++) {
            if (w[i] > 0 && waitpid(w[i], NULL, WNOHANG) != w[i])
                continue;
            w[i] = spawn_worker(i % 2 ? "random:0.02" : NULL, g_rand_int_range(rng, 30, 90));
        }
        g_usleep(20000);
        if (pgt_query_int(db, "SELECT count(*) FROM jobs WHERE state <> 'done'") == 0)
            _exit(0);
    }
}

static void assert_consistent_at(const char *location) {
    g_assert_cmpint(pgt_query_int(location, "SELECT count(*) FROM jobs j WHERE (j.state = 'done') "
                                            "<> EXISTS (SELECT 1 FROM answers a WHERE a.job_id = "
                                            "j.id)"),
                    ==, 0);
    g_assert_cmpint(
        pgt_query_int(location, "SELECT count(*) - count(DISTINCT job_id) FROM answers"), ==, 0);
}

static void assert_consistent(void) {
    assert_consistent_at(db);
}

static void test_kill_at_named_points(void) {
    for (int i = 0; jt_kill_points[i] != NULL; i++) {
        char *spec = g_strdup_printf("%s:%d", jt_kill_points[i], 1 + (int)(i % 3));
        pid_t pid = spawn_worker(spec, 2);
        int status = 0;
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
            g_error("worker with DOCQA_TEST_KILL_AT=%s was not killed (status %d)", spec, status);
        assert_consistent();
        g_free(spec);
    }
}

static void test_machines_killed_at_random(void) {
    pid_t machines[MACHINES] = {0};
    GRand *rng = g_rand_new_with_seed(4242);
    int crashes = 0;
    for (int m = 0; m < MACHINES; m++)
        machines[m] = spawn_machine(g_rand_int(rng));
    /* 20 s, and on a machine too loaded to crash 10 machines in them (each round forks one
     * again), until it has; the second deadline ends a hang. */
    gint64 end = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    gint64 give_up = g_get_monotonic_time() + 200 * G_USEC_PER_SEC;
    while ((g_get_monotonic_time() < end || crashes < 10) && g_get_monotonic_time() < give_up &&
           pgt_query_int(db, "SELECT count(*) FROM jobs WHERE state <> 'done'") > 0) {
        g_usleep((gulong)g_rand_int_range(rng, 200000, 600000));
        int m = g_rand_int_range(rng, 0, MACHINES);
        /* The machine and all its workers die at once, mid-whatever. */
        if (kill(-machines[m], SIGKILL) == 0) {
            waitpid(machines[m], NULL, 0);
            crashes++;
        }
        machines[m] = spawn_machine(g_rand_int(rng));
    }
    for (int m = 0; m < MACHINES; m++) {
        kill(-machines[m], SIGKILL);
        waitpid(machines[m], NULL, 0);
    }
    /* Reap the killed machines' workers (orphans are re-parented to init, not to us). */
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    g_rand_free(rng);
    g_test_message("%d machine crashes (%d workers each)", crashes, WORKERS_PER_MACHINE);
    g_assert_cmpint(crashes, >=, 10);
    assert_consistent();
}

static void test_everything_answered_once(void) {
    pid_t pid = spawn_worker(NULL, 0);
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    gint64 jobs = pgt_query_int(db, "SELECT count(*) FROM jobs");
    g_assert_cmpint(jobs, ==, 640);
    g_assert_cmpint(pgt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, jobs);
    g_assert_cmpint(pgt_query_int(db, "SELECT count(*) FROM answers"), ==, jobs);
    assert_consistent();
    PGconn *c = PQconnectdb(db);
    g_assert_cmpint(PQstatus(c), ==, CONNECTION_OK);
    PGresult *r = PQexec(c, "SELECT p.image_sha256, q.text, a.text FROM answers a "
                            "JOIN jobs j ON j.id = a.job_id JOIN pages p ON p.id = j.page_id "
                            "JOIN questions q ON q.id = j.question_id");
    g_assert_cmpint(PQresultStatus(r), ==, PGRES_TUPLES_OK);
    g_assert_cmpint(PQntuples(r), ==, jobs);
    for (int i = 0; i < PQntuples(r); i++) {
        char *path = queue_page_image_path(page_db, PQgetvalue(r, i, 0));
        char *want = jt_expected_answer(path, PQgetvalue(r, i, 1));
        g_assert_cmpstr(PQgetvalue(r, i, 2), ==, want);
        g_free(want);
        g_free(path);
    }
    PQclear(r);
    PQfinish(c);
    gint64 expired =
        pgt_query_int(db, "SELECT count(*) FROM job_errors WHERE kind = 'lease_expired'");
    g_test_message("%" G_GINT64_FORMAT " jobs, %" G_GINT64_FORMAT " expired leases reclaimed", jobs,
                   expired);
    g_assert_cmpint(expired, >=, 20);
}

/* A fresh PostgreSQL database holding the queue of jobs_testlib's database. */
static char *copy_of_queue(const char *name) {
    char *loc = pgt_new_database(server, name);
    GError *err = NULL;
    DqStore *from = dq_store_open(page_db, &err), *to = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    g_assert_true(dq_store_copy(from, to, NULL, &err));
    dq_assert_no_error(err);
    dq_store_close(to);
    dq_store_close(from);
    return loc;
}

/* Two machines whose clocks are ten minutes apart, a 2 s lease: leases are the server's time,
 * so neither worker takes the other's jobs; every job is answered once, at its first attempt. */
static void test_clocks_apart(void) {
    char *loc = copy_of_queue("clocks_apart");
    pid_t w[2] = {jt_spawn_worker(loc, 2000, NULL, 4, 0),
                  jt_spawn_worker(loc, 2000, NULL, 4, 10 * 60 * 1000)};
    for (int i = 0; i < 2; i++) {
        int status = 0;
        g_assert_cmpint(waitpid(w[i], &status, 0), ==, w[i]);
        g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    g_assert_cmpint(pgt_query_int(loc, "SELECT count(*) FROM job_errors"), ==, 0);
    g_assert_cmpint(pgt_query_int(loc, "SELECT max(attempts) FROM jobs"), ==, 1);
    g_assert_cmpint(pgt_query_int(loc, "SELECT count(*) FROM answers"), ==, 640);
    /* Both machines answered: the test says something about two of them. */
    g_assert_cmpint(pgt_query_int(loc, "SELECT count(DISTINCT worker) FROM answers"), ==, 2);
    assert_consistent_at(loc);
    g_free(loc);
}

/* The server drops every docqa connection, again and again, while two workers run (a restart,
 * an idle-session timeout, a failover): they reconnect and finish, nothing is answered twice,
 * no job loses an attempt. */
static void test_connections_dropped(void) {
    char *loc = pgt_new_database(server, "dropped");
    GError *err = NULL;
    DqStore *from = dq_store_open(page_db, &err), *to = dq_store_open(loc, &err);
    dq_assert_no_error(err);
    g_assert_true(dq_store_copy(from, to, NULL, &err));
    dq_store_close(to);
    dq_store_close(from);
    pid_t w[2];
    for (int i = 0; i < 2; i++)
        w[i] = spawn_worker_at(loc, NULL, 4, 5000);
    int drops = 0;
    while (pgt_query_int(loc, "SELECT count(*) FROM jobs WHERE state <> 'done'") > 0 &&
           drops < 100) {
        g_usleep(100000);
        if (pgt_query_int(loc,
                          "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()") > 0)
            drops++;
    }
    for (int i = 0; i < 2; i++) {
        int status = 0;
        g_assert_cmpint(waitpid(w[i], &status, 0), ==, w[i]);
        g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    g_test_message("%d rounds of dropped connections", drops);
    g_assert_cmpint(drops, >=, 5);
    g_assert_cmpint(pgt_query_int(loc, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 640);
    g_assert_cmpint(pgt_query_int(loc, "SELECT count(*) FROM answers"), ==, 640);
    g_assert_cmpint(pgt_query_int(loc, "SELECT count(*) FROM job_errors"), ==, 0);
    g_assert_cmpint(pgt_query_int(loc, "SELECT max(attempts) FROM jobs"), ==, 1);
    assert_consistent_at(loc);
    g_free(loc);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    char *why_not = NULL;
    server = pgt_start(&why_not);
    if (server == NULL) {
        g_test_add_data_func("/store-pg-crash/skipped", why_not, (GTestDataFunc)g_test_skip);
        int rc = g_test_run();
        g_free(why_not);
        return rc;
    }
    char *dir = dq_test_tmpdir();
    page_db = jt_make_db(dir, 40, 4);
    g_assert_cmpint(jt_ask(page_db, 4, "m", 100000), ==, 640);
    db = pgt_new_database(server, "crash");
    GError *err = NULL;
    DqStore *from = dq_store_open(page_db, &err), *to = dq_store_open(db, &err);
    dq_assert_no_error(err);
    g_assert_true(dq_store_copy(from, to, NULL, &err));
    dq_assert_no_error(err);
    dq_store_close(to);
    dq_store_close(from);
    /* The PostgreSQL workers read the page images where ingest (here jobs_testlib) put them. */
    char *pages = dq_store_page_dir_for(page_db, NULL);
    g_setenv("DOCQA_PAGES", pages, TRUE);
    g_free(pages);
    g_test_add_func("/store-pg-crash/connections-dropped", test_connections_dropped);
    g_test_add_func("/store-pg-crash/clocks-apart", test_clocks_apart);
    g_test_add_func("/store-pg-crash/named-points", test_kill_at_named_points);
    g_test_add_func("/store-pg-crash/machines-killed", test_machines_killed_at_random);
    g_test_add_func("/store-pg-crash/answered-exactly-once", test_everything_answered_once);
    int rc = g_test_run();
    pgt_stop(server);
    g_free(db);
    g_free(page_db);
    g_free(dir);
    return rc;
}
