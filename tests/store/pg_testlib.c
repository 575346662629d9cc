#include "pg_testlib.h"

#include <glib/gstdio.h>
#include <stdlib.h>
#include <libpq-fe.h>
#include <string.h>
#include <unistd.h>

struct PgtServer {
    char *bin; /* /usr/lib/postgresql/N/bin */
    char *dir; /* data in dir/data, socket in dir */
    gboolean as_nobody;
    int reaper_stdin; /* the reaper's standard input: closed unwritten, it stops the server */
};

static char *find_bin(void) {
    GDir *d = g_dir_open("/usr/lib/postgresql", 0, NULL);
    if (d == NULL)
        return NULL;
    char *best = NULL;
    int best_v = 0;
    const char *name;
    while ((name = g_dir_read_name(d)) != NULL) {
        int v = atoi(name);
        char *ctl = g_build_filename("/usr/lib/postgresql", name, "bin", "pg_ctl", NULL);
        if (v > best_v && g_file_test(ctl, G_FILE_TEST_IS_EXECUTABLE)) {
            g_free(best);
            best = g_build_filename("/usr/lib/postgresql", name, "bin", NULL);
            best_v = v;
        }
        g_free(ctl);
    }
    g_dir_close(d);
    return best;
}

/* Runs a PostgreSQL binary (as nobody when we are root); fails the test when it fails. */
static void run(PgtServer *s, const char *const *args) {
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    if (s->as_nobody) {
        static const char *const drop[] = {"setpriv", "--reuid=nobody", "--regid=nogroup",
                                           "--clear-groups"};
        for (guint i = 0; i < G_N_ELEMENTS(drop); i++)
            g_ptr_array_add(argv, g_strdup(drop[i]));
    }
    g_ptr_array_add(argv, g_build_filename(s->bin, args[0], NULL));
    for (int i = 1; args[i]; i++)
        g_ptr_array_add(argv, g_strdup(args[i]));
    g_ptr_array_add(argv, NULL);
    char *out = NULL, *errout = NULL;
    int status = 0;
    GError *err = NULL;
    gboolean ok = g_spawn_sync(s->dir, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                               &out, &errout, &status, &err);
    if (!ok || !g_spawn_check_wait_status(status, NULL))
        g_error("%s failed: %s%s%s", args[0], err ? err->message : "", out ? out : "",
                errout ? errout : "");
    g_free(out);
    g_free(errout);
    g_ptr_array_free(argv, TRUE);
}

static void new_session(gpointer unused) {
    (void)unused;
    setsid(); /* a Ctrl-C to the test's terminal must not take the reaper with the test */
}

/* A test that fails (g_error, an assertion: abort) or is killed never reaches pgt_stop, and its
 * server would run on with its directory. A shell waits on a pipe from this process: a line
 * means pgt_stop has it in hand; end of file with no line means the process died, and the shell
 * stops the server and removes the directory. */
static void start_reaper(PgtServer *s, const char *data) {
    char *ctl = g_build_filename(s->bin, "pg_ctl", NULL);
    char *script = g_strdup_printf(
        "read -r line && exit 0; %s '%s' -D '%s' -m immediate -w stop >/dev/null 2>&1; "
        "rm -rf '%s'",
        s->as_nobody ? "setpriv --reuid=nobody --regid=nogroup --clear-groups" : "", ctl, data,
        s->dir);
    char *argv[] = {"/bin/sh", "-c", script, NULL};
    GError *err = NULL;
    gboolean ok = g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_DEFAULT, new_session, NULL,
                                           NULL, &s->reaper_stdin, NULL, NULL, &err);
    g_assert_no_error(err);
    g_assert_true(ok);
    g_free(script);
    g_free(ctl);
}

PgtServer *pgt_start(char **why_not) {
    char *bin = find_bin();
    if (bin == NULL) {
        *why_not = g_strdup("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin "
                            "(apt-get install postgresql)");
        return NULL;
    }
    PgtServer *s = g_new0(PgtServer, 1);
    s->bin = bin;
    s->as_nobody = geteuid() == 0;
    GError *err = NULL;
    s->dir = g_dir_make_tmp("docqa-pg-XXXXXX", &err);
    g_assert_no_error(err);
    if (s->as_nobody) {
        g_chmod(s->dir, 0755);
        char *cmd = g_strdup_printf("chown nobody:nogroup '%s'", s->dir);
        g_assert_cmpint(system(cmd), ==, 0);
        g_free(cmd);
    }
    char *data = g_build_filename(s->dir, "data", NULL);
    char *log = g_build_filename(s->dir, "log", NULL);
    char *opts = g_strdup_printf("-k %s -c listen_addresses='' -c fsync=off -c max_connections=200 "
                                 "-c shared_buffers=32MB",
                                 s->dir);
    run(s, (const char *[]){"initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                            "--no-locale", NULL});
    run(s, (const char *[]){"pg_ctl", "-D", data, "-o", opts, "-l", log, "-w", "start", NULL});
    start_reaper(s, data);
    g_free(data);
    g_free(log);
    g_free(opts);
    return s;
}

void pgt_stop(PgtServer *s) {
    if (s == NULL)
        return;
    if (write(s->reaper_stdin, "stopping\n", 9) != 9)
        g_printerr("could not tell the reaper of %s\n", s->dir);
    close(s->reaper_stdin);
    char *data = g_build_filename(s->dir, "data", NULL);
    run(s, (const char *[]){"pg_ctl", "-D", data, "-m", "immediate", "-w", "stop", NULL});
    g_free(data);
    char *cmd = g_strdup_printf("rm -rf '%s'", s->dir);
    if (system(cmd) != 0)
        g_printerr("could not remove %s\n", s->dir);
    g_free(cmd);
    g_free(s->bin);
    g_free(s->dir);
    g_free(s);
}

static char *location(PgtServer *s, const char *db) {
    return g_strdup_printf("postgresql:///%s?host=%s&user=postgres", db, s->dir);
}

char *pgt_new_database(PgtServer *s, const char *name) {
    char *admin = location(s, "postgres");
    PGconn *c = PQconnectdb(admin);
    g_assert_cmpint(PQstatus(c), ==, CONNECTION_OK);
    char *sql = g_strdup_printf("CREATE DATABASE %s", name);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        g_error("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    g_free(sql);
    g_free(admin);
    return location(s, name);
}

void pgt_exec(const char *loc, const char *sql) {
    PGconn *c = PQconnectdb(loc);
    g_assert_cmpint(PQstatus(c), ==, CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        g_error("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
}

char *pgt_query_text(const char *loc, const char *sql) {
    PGconn *c = PQconnectdb(loc);
    g_assert_cmpint(PQstatus(c), ==, CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        g_error("%s: %s", sql, PQresultErrorMessage(r));
    char *v = PQgetisnull(r, 0, 0) ? NULL : g_strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return v;
}

gint64 pgt_query_int(const char *loc, const char *sql) {
    PGconn *c = PQconnectdb(loc);
    g_assert_cmpint(PQstatus(c), ==, CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        g_error("%s: %s", sql, PQresultErrorMessage(r));
    gint64 v = g_ascii_strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(c);
    return v;
}
