/* PostgreSQL helpers shared by store_*_pg.c (never included outside store/). */
#ifndef DQ_STORE_PG_H
#define DQ_STORE_PG_H

#include "store_internal.h"

#include <libpq-fe.h>

/* Text parameters for one statement: PostgreSQL converts them to the columns' types. */
typedef struct {
    char *v[24];
    int n;
} PgParams;
void pg_text(PgParams *p, const char *s); /* NULL binds SQL NULL */
void pg_i64(PgParams *p, gint64 x);
void pg_dbl(PgParams *p, double x);
void pg_bool(PgParams *p, gboolean b);
void pg_params_clear(PgParams *p);

/* Runs `sql` as a statement prepared once per connection (found again by its text), with the
 * parameters (cleared afterwards). Returns the result (PQclear it) or NULL with err set,
 * naming `what`. */
PGresult *pg_run(DqStore *s, const char *sql, PgParams *p, const char *what, GError **err);
/* Runs `sql` as pg_run does and calls fn for each row of its result as it arrives (libpq's
 * single-row mode), stopping at the first FALSE: a result too big to hold in memory (an export
 * of every answer) is never held whole. fn must not run statements on this connection. */
gboolean pg_each_row(DqStore *s, const char *sql, PgParams *p, const char *what,
                     gboolean (*fn)(PGresult *r, int row, void *user, GError **err), void *user,
                     GError **err);
/* The same for a statement whose result is not needed; *changed (may be NULL) receives the
 * number of rows it changed. */
gboolean pg_do(DqStore *s, const char *sql, PgParams *p, const char *what, gint64 *changed,
               GError **err);

gboolean pg_begin(DqStore *s, GError **err);
gboolean pg_commit(DqStore *s, GError **err);
void pg_rollback(DqStore *s);

/* Leases on PostgreSQL are kept in the server's time, whatever each worker's clock says: workers
 * on several machines compare one another's lease expiries, and a clock off by more than a lease
 * would take live jobs from another machine (or leave its own to be taken). The store measures
 * the server's clock against this machine's (dq_wall_us) when it connects, and again when the
 * measure is older than a few seconds, before a statement that stamps or compares a time;
 * pg_server_ms turns a time of the caller's clock into the server's. The caller's times keep
 * their meaning relative to one another, so tests that pass made-up times work unchanged. */
gboolean pg_clock_check(DqStore *s, GError **err);
gint64 pg_server_ms(DqStore *s, gint64 local_ms);

gint64 pg_get_i64(PGresult *r, int row, int col);
char *pg_get_dup(PGresult *r, int row, int col);        /* NULL for SQL NULL */
const char *pg_get_text(PGresult *r, int row, int col); /* in r; NULL for SQL NULL */

#endif
