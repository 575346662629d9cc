/* A throwaway PostgreSQL server for tests, from Debian's packages (/usr/lib/postgresql/N/bin):
 * initdb into a fresh directory under /tmp, the server listening on a Unix socket in that
 * directory only (no TCP port to collide with), stopped and deleted by pgt_stop. PostgreSQL
 * refuses to run as root, and tests run as root in CI: the server's processes then run as
 * `nobody` (setpriv), owning the directory. */
#ifndef DQ_PG_TESTLIB_H
#define DQ_PG_TESTLIB_H

#include <glib.h>

typedef struct PgtServer PgtServer;

/* Starts a server; NULL with *why_not (g_free) when this machine cannot (no PostgreSQL
 * binaries, or docqa built without libpq). A server that should start but does not fails the
 * test instead. */
PgtServer *pgt_start(char **why_not);
void pgt_stop(PgtServer *s);

/* Creates an empty database and returns its docqa location (postgresql://...; g_free). */
char *pgt_new_database(PgtServer *s, const char *name);

/* Runs a query returning one integer (for assertions). */
gint64 pgt_query_int(const char *location, const char *sql);

/* Runs a query returning one text value, NULL for SQL NULL (for assertions; g_free). */
char *pgt_query_text(const char *location, const char *sql);

/* Runs statements that return nothing (test setup). */
void pgt_exec(const char *location, const char *sql);

#endif
