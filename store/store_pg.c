/* The PostgreSQL store: connection, migrations (schema/postgres/), prepared statements.
 *
 * Connection settings, and why (each a default the location's own parameters override):
 *   application_name=docqa   workers show up by name in pg_stat_activity;
 *   connect_timeout=10       a server that accepts and never answers is an error, not a hang;
 *   keepalives_idle=30, keepalives_interval=10, keepalives_count=3
 *                            a server gone without a word (a dead machine, a cut network) is
 *                            noticed within a minute or two, not after the kernel's two hours;
 *   client_min_messages      NOTICEs of "IF NOT EXISTS" would otherwise reach stderr;
 *   READ COMMITTED (default) each statement sees what committed before it: the claim's
 *                            FOR UPDATE SKIP LOCKED re-checks a row another worker just changed.
 * Every statement that takes a value is prepared once per connection (PQprepare, named s1, s2...)
 * and found again by its text; values travel as parameters, never inside SQL text. */
#include "store_pg.h"

#include "clock.h"
#include "dq_error.h"
#include "resources.h"
#include "text.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Taken around migrations so two processes connecting to a fresh database do not both migrate. */
#define MIGRATION_LOCK_KEY 4242010

void pg_text(PgParams *p, const char *s) {
    g_assert(p->n < (int)G_N_ELEMENTS(p->v));
    p->v[p->n++] = s ? g_strdup(s) : NULL;
}

void pg_i64(PgParams *p, gint64 x) {
    g_assert(p->n < (int)G_N_ELEMENTS(p->v));
    p->v[p->n++] = g_strdup_printf("%" G_GINT64_FORMAT, x);
}

void pg_dbl(PgParams *p, double x) {
    g_assert(p->n < (int)G_N_ELEMENTS(p->v));
    p->v[p->n++] = g_strdup_printf("%.17g", x);
}

void pg_bool(PgParams *p, gboolean b) {
    pg_text(p, b ? "true" : "false");
}

void pg_params_clear(PgParams *p) {
    for (int i = 0; i < p->n; i++)
        g_free(p->v[i]);
    p->n = 0;
}

/* A lost connection is told apart (DQ_ERR_DB_LOST) so that a worker can wait for the server and
 * reconnect instead of giving up its jobs. */
/* libpq's messages run over several lines; docqa's are one line each. */
static char *one_line(const char *msg) {
    char **parts = g_strsplit_set(msg, "\n\t", -1);
    GString *g = g_string_new(NULL);
    for (char **p = parts; *p; p++) {
        g_strstrip(*p);
        if (**p != '\0')
            g_string_append_printf(g, "%s%s", g->len ? " " : "", *p);
    }
    g_strfreev(parts);
    return g_string_free(g, FALSE);
}

/* The server's resources ran out (SQLSTATE class 53): libpq's message says what failed ("could
 * not extend file ...") where the user needs to hear whose disk or memory it was, on a machine
 * that may not be this one. SQLite's twin is store_sqlite_explain. */
static const char *insufficient_resources(PGresult *r) {
    const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (code == NULL || !g_str_has_prefix(code, "53"))
        return NULL;
    if (strcmp(code, "53100") == 0)
        return "SQLSTATE 53100: the PostgreSQL server's disk is full; make room there and run "
               "again";
    if (strcmp(code, "53200") == 0)
        return "SQLSTATE 53200: the PostgreSQL server is out of memory";
    if (strcmp(code, "53300") == 0)
        return "SQLSTATE 53300: the PostgreSQL server takes no more connections "
               "(max_connections)";
    return "SQLSTATE class 53: the PostgreSQL server ran out of a resource";
}

static gboolean pg_fail(DqStore *s, GError **err, const char *what, PGresult *r) {
    const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(s->pg);
    char *m = one_line(msg && *msg ? msg : PQerrorMessage(s->pg));
    const char *why = insufficient_resources(r);
    if (why == NULL && s->busy_stopped)
        why = "another session held what it waited for; told to stop, docqa waited " G_STRINGIFY(
            DQ_STORE_STOP_GRACE_SECONDS) " s more, then cancelled it";
    dq_fail(err, PQstatus(s->pg) == CONNECTION_BAD ? DQ_ERR_DB_LOST : DQ_ERR_DB, "%s: %s: %s%s%s%s",
            s->path, what, m, why ? " (" : "", why ? why : "", why ? ")" : "");
    g_free(m);
    return FALSE;
}

/* The result of the statement sent, for a worker (dq_store_set_stop): once told to stop, a
 * statement that still waits DQ_STORE_STOP_GRACE_MS later (for a lock a psql session holds, a
 * CREATE INDEX, a server that hangs) is cancelled, as Ctrl-C in psql would. libpq's own wait
 * (PQexec*, PQprepare) retries through signals: SIGINT and SIGTERM did nothing until the lock
 * was given up. NULL when nothing was sent (PQerrorMessage says why). */
static PGresult *wait_stoppable(DqStore *s, gboolean sent) {
    s->busy_stopped = FALSE;
    if (!sent)
        return NULL;
    gint64 cancelled_at = 0;
    while (PQisBusy(s->pg)) {
        gint64 now = g_get_monotonic_time();
        /* Asked again each second: a cancel that reaches the server before its backend has
         * read the statement (the grace long over when it was sent) is dropped, and the
         * statement would then wait for the lock after all. */
        if (*s->stop && (cancelled_at == 0 || now - cancelled_at >= G_USEC_PER_SEC)) {
            if (s->stop_seen_us == 0)
                s->stop_seen_us = now;
            if (now - s->stop_seen_us >= (gint64)DQ_STORE_STOP_GRACE_MS * 1000) {
                PGcancel *c = PQgetCancel(s->pg);
                char why[256];
                if (c != NULL) {
                    PQcancel(c, why, sizeof why);
                    PQfreeCancel(c);
                }
                s->busy_stopped = TRUE;
                cancelled_at = now;
            }
        }
        struct pollfd pfd = {.fd = PQsocket(s->pg), .events = POLLIN};
        if ((poll(&pfd, 1, 100) < 0 && errno != EINTR) || !PQconsumeInput(s->pg))
            break; /* the connection is gone: PQgetResult says so */
    }
    PGresult *last = NULL;
    for (PGresult *r; (r = PQgetResult(s->pg)) != NULL;) {
        PQclear(last);
        last = r;
    }
    return last;
}

/* The name `sql` is prepared under on this connection, prepared now the first time. */
static const char *pg_prepared(DqStore *s, const char *sql, const char *what, GError **err) {
    const char *name = g_hash_table_lookup(s->pg_statements, sql);
    if (name != NULL)
        return name;
    char *n = g_strdup_printf("s%u", g_hash_table_size(s->pg_statements) + 1);
    /* Preparing an UPDATE takes its table's lock: it waits as the statement would. */
    PGresult *r = s->stop != NULL ? wait_stoppable(s, PQsendPrepare(s->pg, n, sql, 0, NULL))
                                  : PQprepare(s->pg, n, sql, 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        pg_fail(s, err, what, r);
        PQclear(r);
        g_free(n);
        return NULL;
    }
    PQclear(r);
    g_hash_table_insert(s->pg_statements, g_strdup(sql), n);
    return n;
}

PGresult *pg_run(DqStore *s, const char *sql, PgParams *p, const char *what, GError **err) {
    PgParams none = {0};
    if (p == NULL)
        p = &none;
    const char *name = pg_prepared(s, sql, what, err);
    if (name == NULL) {
        pg_params_clear(p);
        return NULL;
    }
    PGresult *r =
        s->stop != NULL
            ? wait_stoppable(s, PQsendQueryPrepared(s->pg, name, p->n, (const char *const *)p->v,
                                                    NULL, NULL, 0))
            : PQexecPrepared(s->pg, name, p->n, (const char *const *)p->v, NULL, NULL, 0);
    pg_params_clear(p);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        pg_fail(s, err, what, r);
        PQclear(r);
        return NULL;
    }
    return r;
}

gboolean pg_each_row(DqStore *s, const char *sql, PgParams *p, const char *what,
                     gboolean (*fn)(PGresult *r, int row, void *user, GError **err), void *user,
                     GError **err) {
    PgParams none = {0};
    if (p == NULL)
        p = &none;
    const char *name = pg_prepared(s, sql, what, err);
    gboolean sent = name != NULL && PQsendQueryPrepared(s->pg, name, p->n,
                                                        (const char *const *)p->v, NULL, NULL, 0);
    pg_params_clear(p);
    if (!sent)
        return name == NULL ? FALSE : pg_fail(s, err, what, NULL);
    /* refused only when called at the wrong moment: the rows would then come at once */
    PQsetSingleRowMode(s->pg);
    gboolean ok = TRUE, cancelled = FALSE;
    PGresult *r;
    while ((r = PQgetResult(s->pg)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (ok && (st == PGRES_SINGLE_TUPLE || st == PGRES_TUPLES_OK)) {
            for (int i = 0; ok && i < PQntuples(r); i++)
                ok = fn(r, i, user, err);
        } else if (ok) {
            ok = pg_fail(s, err, what, r);
        }
        /* Stopped early: the server is told to stop sending, and what it sent meanwhile is read
         * past, so that the connection is ready for the next statement. */
        if (!ok && !cancelled) {
            PGcancel *c = PQgetCancel(s->pg);
            char why[256];
            if (c != NULL) {
                PQcancel(c, why, sizeof why);
                PQfreeCancel(c);
            }
            cancelled = TRUE;
        }
        PQclear(r);
    }
    return ok;
}

gboolean pg_do(DqStore *s, const char *sql, PgParams *p, const char *what, gint64 *changed,
               GError **err) {
    PGresult *r = pg_run(s, sql, p, what, err);
    if (r == NULL)
        return FALSE;
    if (changed) {
        const char *t = PQcmdTuples(r);
        *changed = t && *t ? g_ascii_strtoll(t, NULL, 10) : 0;
    }
    PQclear(r);
    return TRUE;
}

gboolean store_pg_exec(DqStore *s, const char *sql, GError **err) {
    PGresult *r = PQexec(s->pg, sql);
    ExecStatusType st = PQresultStatus(r);
    gboolean ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        pg_fail(s, err, "executing", r);
    PQclear(r);
    return ok;
}

gboolean pg_begin(DqStore *s, GError **err) {
    return pg_do(s, "BEGIN", NULL, "BEGIN", NULL, err);
}

gboolean pg_commit(DqStore *s, GError **err) {
    return pg_do(s, "COMMIT", NULL, "COMMIT", NULL, err);
}

void pg_rollback(DqStore *s) {
    if (PQtransactionStatus(s->pg) != PQTRANS_IDLE)
        store_pg_exec(s, "ROLLBACK", NULL);
}

/* How often the offset is measured again: a clock that NTP steps, or a virtual machine that
 * resumes, moves by more than a lease at once; one round trip every few seconds per connection
 * is nothing next to a claim's. */
#define CLOCK_CHECK_US (5 * G_USEC_PER_SEC)

/* The server's clock minus this machine's, from one round trip: the server read its clock
 * somewhere between t0 and t1, so the offset lies in [server - t1, server - t0]. The value of that
 * range closest to 0 is taken: clocks that agree to within the round trip (one machine, or NTP
 * working) are not moved by the measure's noise. */
static gboolean measure_clock(DqStore *s, GError **err) {
    gint64 t0 = dq_wall_us();
    PGresult *r = pg_run(s, "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
                         NULL, "reading the server's clock", err);
    gint64 t1 = dq_wall_us();
    if (r == NULL)
        return FALSE;
    gint64 server = pg_get_i64(r, 0, 0);
    PQclear(r);
    gint64 lo = server - t1, hi = server - t0;
    gint64 offset_us = lo > 0 ? lo : hi < 0 ? hi : 0;
    s->pg_clock_offset_ms = offset_us / 1000;
    s->pg_clock_read_at = g_get_monotonic_time();
    return TRUE;
}

gboolean pg_clock_check(DqStore *s, GError **err) {
    if (s->pg_clock_read_at != 0 && g_get_monotonic_time() - s->pg_clock_read_at < CLOCK_CHECK_US)
        return TRUE;
    return measure_clock(s, err);
}

gint64 pg_server_ms(DqStore *s, gint64 local_ms) {
    return local_ms + s->pg_clock_offset_ms;
}

gint64 pg_get_i64(PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col))
        return 0;
    return g_ascii_strtoll(PQgetvalue(r, row, col), NULL, 10);
}

const char *pg_get_text(PGresult *r, int row, int col) {
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

char *pg_get_dup(PGresult *r, int row, int col) {
    return g_strdup(pg_get_text(r, row, col));
}

/* The newest migration applied; 0 for a database without docqa's tables. Reads only, so that
 * a role that may only read (a user's reporting role) can open the store. */
static gboolean read_schema_version(DqStore *s, int *version, GError **err) {
    PGresult *r = pg_run(s, "SELECT to_regclass('schema_migrations') IS NOT NULL", NULL,
                         "looking for the schema version", err);
    if (r == NULL)
        return FALSE;
    gboolean exists = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    *version = -1;
    if (!exists)
        return TRUE;
    r = pg_run(s, "SELECT coalesce(max(version), 0) FROM schema_migrations", NULL,
               "reading the schema version", err);
    if (r == NULL)
        return FALSE;
    *version = (int)pg_get_i64(r, 0, 0);
    PQclear(r);
    return TRUE;
}

int store_pg_schema_version(DqStore *s) {
    int v = 0;
    return read_schema_version(s, &v, NULL) ? MAX(v, 0) : 0;
}

gboolean store_pg_read_schema_version(DqStore *s, int *version, GError **err) {
    if (!read_schema_version(s, version, err))
        return FALSE;
    *version = MAX(*version, 0);
    return TRUE;
}

static gboolean apply_migrations(DqStore *s, int max_version, GError **err) {
    int newest_known = 0, current = 0;
    char **names = store_migration_names("schema/postgres", &newest_known, err);
    if (names == NULL)
        return FALSE;
    gboolean ok = FALSE;
    if (!read_schema_version(s, &current, err))
        goto out;
    if (current > newest_known) {
        store_schema_too_new(s, current, newest_known, err);
        goto out;
    }
    for (char **n = names; *n; n++) {
        int num = store_migration_number(*n);
        if (num <= current || (max_version > 0 && num > max_version))
            continue;
        char *rpath = g_strconcat("schema/postgres/", *n, NULL);
        GBytes *sql = dq_resource_get(rpath, err);
        g_free(rpath);
        if (sql == NULL)
            goto out;
        /* DDL is transactional in PostgreSQL: a failed migration leaves the previous version. */
        PgParams p = {0};
        pg_i64(&p, num);
        pg_text(&p, *n);
        char *text = g_strndup(g_bytes_get_data(sql, NULL), g_bytes_get_size(sql));
        gboolean step_ok = store_pg_exec(s, "BEGIN", err) && store_pg_exec(s, text, err) &&
                           pg_do(s, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                                 &p, "recording a migration", NULL, err) &&
                           store_pg_exec(s, "COMMIT", err);
        pg_params_clear(&p);
        g_free(text);
        g_bytes_unref(sql);
        if (!step_ok) {
            dq_error_prefix(err, "migration %s", *n);
            pg_rollback(s);
            goto out;
        }
    }
    ok = TRUE;
out:
    g_strfreev(names);
    return ok;
}

/* Byte-wise (G_REGEX_RAW): a location is the user's bytes, and in UTF-8 mode GRegex refuses to
 * match text that is not UTF-8, which left such a location, password and all, as it was. */
static char *replace_all(const char *text, const char *const (*patterns)[2], size_t n) {
    char *out = g_strdup(text);
    for (size_t i = 0; i < n; i++) {
        GRegex *re = g_regex_new(patterns[i][0], G_REGEX_CASELESS | G_REGEX_RAW, 0, NULL);
        char *next = g_regex_replace(re, out, -1, 0, patterns[i][1], 0, NULL);
        g_regex_unref(re);
        if (next != NULL) {
            g_free(out);
            out = next;
        }
    }
    return out;
}

/* Hides passwords wherever a location appears in `text`: "user:secret@host" and "password=secret"
 * (a URI's query, a key=value list). libpq quotes a location it cannot parse in its messages:
 * a quote ends the location there. */
static char *redact(const char *text) {
    static const char *const patterns[][2] = {
        {"(://[^:/@\\s\"]*:)[^@/\\s\"]*@", "\\1***@"},
        /* "user:secret" with the @ forgotten: libpq reads a port, docqa hides what is no number */
        {"(://[^:/@\\s\"]*:)[^/@\\s\"]*[^0-9/@\\s\"][^/@\\s\"]*(?=[/?]|$)", "\\1***"},
        /* to the quote that ends a quoted host ("b&password=a b"), not to the first space */
        {"(password\\s*=)[^&\"\\n]+", "\\1***"},
        /* libpq quotes the token it could not decode or read, which may be the password */
        {"(percent-encoded token: )\"[^\"]*\"", "\\1\"***\""},
        {"(invalid integer value )\"[^\"]*\"", "\\1\"***\""},
    };
    return replace_all(text, patterns, G_N_ELEMENTS(patterns));
}

/* password=value, the whole value and the blanks before it (they would show that the password
 * starts with one): libpq splits a URI's query at "&" only (spaces belong to the value), and a
 * key=value list's value may be quoted, with \' and \\ inside, to its closing quote. */
#define PASSWORD_VALUE "(password\\s*=)(?:\\s*'(?:[^'\\\\]|\\\\[\\s\\S])*(?:'|$))?[^&]*"

/* As redact(), for a location alone, which libpq could not parse: there a quote is part of the
 * password ("user:se\"cret@host"), not its end, and neither is a space (libpq takes a query's
 * value up to the next '&', "password=a b c" whole). */
static char *redact_location(const char *location) {
    static const char *const patterns[][2] = {
        {"(://[^:/@]*:)[^@/]*@", "\\1***@"},
        {"(://[^:/@]*:)[^/@]*[^0-9/@][^/@]*(?=[/?]|$)", "\\1***"},
        {PASSWORD_VALUE, "\\1***"},
    };
    return replace_all(location, patterns, G_N_ELEMENTS(patterns));
}

/* Whether a piece of libpq's parse holds "password=": libpq takes what comes before an "@" for
 * the user even past a "?", and the query after it for the host
 * ("postgresql://h?x=a@b&password=s" is user "h?x=a", host "b&password=s"), and a "]" in the
 * password may close an IPv6 host's "[" ("postgresql://[?password=a]" is host "?password=a").
 * libpq finds no password there, but the user meant one. */
static gboolean holds_password(const char *piece) {
    if (piece == NULL)
        return FALSE;
    GRegex *re = g_regex_new(PASSWORD_VALUE, G_REGEX_CASELESS | G_REGEX_RAW, 0, NULL);
    gboolean found = g_regex_match(re, piece, 0, NULL);
    g_regex_unref(re);
    return found;
}

char *store_pg_hide_passwords(const char *location) {
    return redact_location(location);
}

/* The location for messages: libpq's own parse, without the password (nor any other option). */
char *store_pg_display_location(const char *location) {
    PQconninfoOption *opts = PQconninfoParse(location, NULL);
    if (opts == NULL)
        return redact_location(location);
    const char *host = NULL, *db = NULL, *user = NULL, *port = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            db = o->val;
        else if (strcmp(o->keyword, "user") == 0)
            user = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
    }
    /* A port that is no number is likely a password whose "@" was forgotten. */
    if (port != NULL && strspn(port, "0123456789,") != strlen(port))
        port = "***";
    /* shown as written, its passwords hidden, as where libpq cannot parse it: how libpq split
     * it depended on the password's bytes */
    if (holds_password(user) || holds_password(host) || holds_password(db)) {
        PQconninfoFree(opts);
        return redact_location(location);
    }
    char *out = g_strdup_printf("postgresql://%s%s%s%s%s/%s", user ? user : "", user ? "@" : "",
                                host ? host : "", port ? ":" : "", port ? port : "", db ? db : "");
    PQconninfoFree(opts);
    return out;
}

static gboolean connection_failed(DqStore *s, const char *what, GError **err) {
    char *r = redact(PQerrorMessage(s->pg));
    char *m = one_line(r);
    dq_fail(err, DQ_ERR_DB_LOST, "%s: %s: %s", s->path, what, m);
    g_free(m);
    g_free(r);
    return FALSE;
}

/* libpq prints what the server says outside a statement (a FATAL before it drops the
 * connection, a trigger's RAISE WARNING) to stderr as is: here it gets docqa's prefix, on one
 * line, its control characters shown, as the server repeats what any of its users wrote. */
static void notice(void *arg, const char *message) {
    DqStore *s = arg;
    char *m = one_line(message);
    dq_print_line(stderr, "docqa: %s: server says: %s", s->path, m);
    g_free(m);
}

/* What every new connection runs before its first statement. */
static gboolean session_setup(DqStore *s, GError **err) {
    PQsetNoticeProcessor(s->pg, notice, s);
    return store_pg_exec(s, "SET client_min_messages = warning", err) && measure_clock(s, err);
}

gboolean store_pg_is_conninfo_keyword(const char *word) {
    /* Every keyword this libpq knows, from libpq: a hand-kept list falls behind each release
     * (target_session_attrs, gssencmode, load_balance_hosts...). PQconninfoParse of nothing
     * lists them all without PQconndefaults' look-ups, which return NULL where PGSERVICE names
     * no service. */
    PQconninfoOption *opts = PQconninfoParse("", NULL);
    gboolean found = FALSE;
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL && !found; o++)
        found = g_ascii_strcasecmp(o->keyword, word) == 0;
    PQconninfoFree(opts);
    return found;
}

/* libpq takes "postgresql://" and "postgres://" only, in lower case. */
static char *libpq_location(const char *location, GError **err) {
    const char *rest = strchr(location, ':') + 1;
    if (!g_str_has_prefix(rest, "//")) {
        /* not repeated: "postgresql:alice:secret@host" holds a password redact() cannot find */
        dq_fail(err, DQ_ERR_ARGS,
                "%.*s location without '//' (not shown, as it may hold a password); write "
                "postgresql://[user@]host[:port]/database",
                (int)(rest - location), location);
        return NULL;
    }
    return g_strconcat("postgresql:", rest, NULL);
}

/* The connection to the location, with docqa's defaults for what the location leaves out. */
static gboolean connect_server(DqStore *s, const char *conninfo, GError **err) {
    /* The defaults come first: expanding the location (the last entry) overrides them. */
    const char *keys[8], *vals[8];
    int n = 0;
    if (g_getenv("PGCONNECT_TIMEOUT") == NULL) {
        keys[n] = "connect_timeout";
        vals[n++] = "10";
    }
    keys[n] = "keepalives_idle";
    vals[n++] = "30";
    keys[n] = "keepalives_interval";
    vals[n++] = "10";
    keys[n] = "keepalives_count";
    vals[n++] = "3";
    keys[n] = "fallback_application_name";
    vals[n++] = "docqa";
    keys[n] = "dbname";
    vals[n++] = conninfo;
    keys[n] = vals[n] = NULL;
    s->pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(s->pg) != CONNECTION_OK) {
        connection_failed(s, "cannot connect", err);
        return FALSE;
    }
    return TRUE;
}

/* A schema without schema_migrations (*current < 0) is docqa's to create only when it holds no
 * other table, and only for a command that may create the database. */
static gboolean refuse_foreign_schema(DqStore *s, gboolean must_exist, GError **err) {
    PGresult *r = pg_run(s, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
                         NULL, "looking for tables", err);
    if (r == NULL)
        return FALSE;
    gint64 tables = pg_get_i64(r, 0, 0);
    PQclear(r);
    if (tables > 0)
        return dq_fail(err, DQ_ERR_DB,
                       "%s: not a docqa database: it holds %" G_GINT64_FORMAT
                       " other table%s and no schema_migrations (create a database, or a schema "
                       "named in the location's options=-csearch_path=..., for docqa)",
                       s->path, tables, tables == 1 ? "" : "s");
    if (must_exist)
        return dq_fail(err, DQ_ERR_DB, "%s: holds no docqa tables (docqa ingest creates it)",
                       s->path);
    return TRUE;
}

/* The session set up and the schema's version read (*current: -1 without schema_migrations),
 * refused when it is newer than this docqa or not docqa's. */
static gboolean read_version(DqStore *s, gboolean must_exist, int *current, int *newest_known,
                             GError **err) {
    if (!session_setup(s, err))
        return FALSE;
    char **names = store_migration_names("schema/postgres", newest_known, err);
    if (names == NULL)
        return FALSE;
    g_strfreev(names); /* only the newest number is wanted here */
    if (!read_schema_version(s, current, err))
        return FALSE;
    if (*current > *newest_known)
        return store_schema_too_new(s, *current, *newest_known, err);
    return *current >= 0 || refuse_foreign_schema(s, must_exist, err);
}

/* The migrations up to max_version applied under the advisory lock, so that two processes
 * opening an older database do not both migrate it. */
static gboolean upgrade(DqStore *s, int max_version, int current, int newest_known, GError **err) {
    char lock[96];
    g_snprintf(lock, sizeof lock, "SELECT pg_advisory_lock(%d)", MIGRATION_LOCK_KEY);
    char unlock[96];
    g_snprintf(unlock, sizeof unlock, "SELECT pg_advisory_unlock(%d)", MIGRATION_LOCK_KEY);
    if (!store_pg_exec(s, lock, err))
        return FALSE;
    gboolean ok =
        store_pg_exec(s,
                      "CREATE TABLE IF NOT EXISTS schema_migrations ("
                      "  version integer PRIMARY KEY, name text NOT NULL,"
                      "  applied_at text NOT NULL DEFAULT to_char(now() AT TIME ZONE 'UTC',"
                      "  'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))",
                      err) &&
        apply_migrations(s, max_version, err);
    store_pg_exec(s, unlock, NULL);
    int now = 0;
    /* Said once, by the process that made the upgrade (another may have while this one waited
     * for the lock), as on SQLite: an older docqa refuses the database after it. */
    if (ok && current > 0 && read_schema_version(s, &now, NULL) && now > current)
        dq_print_line(stderr, "docqa: %s: upgraded the schema from version %d to %d", s->path,
                      current, now);
    if (!ok && current > 0)
        dq_error_prefix(err,
                        "upgrading the schema from version %d to %d (a role that may create "
                        "tables must open it once with this docqa)",
                        current, newest_known);
    return ok;
}

DqStore *store_pg_open(const char *location, int max_version, gboolean must_exist, GError **err) {
    char *conninfo = libpq_location(location, err);
    if (conninfo == NULL)
        return NULL;
    DqStore *s = g_new0(DqStore, 1);
    s->kind = DQ_STORE_POSTGRES;
    s->path = store_pg_display_location(conninfo);
    s->pg_statements = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    gboolean connected = connect_server(s, conninfo, err);
    g_free(conninfo);
    int newest_known = 0, current = 0;
    if (!connected || !read_version(s, must_exist, &current, &newest_known, err))
        goto fail;
    /* Up to date: no DDL, so that a role that may only read opens it too. */
    if (current == newest_known || (max_version > 0 && current >= max_version))
        return s;
    if (upgrade(s, max_version, current, newest_known, err))
        return s;
fail:
    store_pg_close(s);
    return NULL;
}

gboolean store_pg_reconnect(DqStore *s, GError **err) {
    if (PQstatus(s->pg) == CONNECTION_OK)
        return TRUE;
    PQreset(s->pg);
    if (PQstatus(s->pg) != CONNECTION_OK)
        return connection_failed(s, "cannot reconnect", err);
    /* The statements prepared on the old session died with it. */
    g_hash_table_remove_all(s->pg_statements);
    return session_setup(s, err);
}

void store_pg_close(DqStore *s) {
    if (s->pg != NULL)
        PQfinish(s->pg); /* prepared statements die with the session */
    if (s->pg_statements != NULL)
        g_hash_table_destroy(s->pg_statements);
    g_free(s->path);
    g_free(s);
}
