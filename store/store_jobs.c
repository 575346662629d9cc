/* SQLite implementation of store_jobs.h. Life cycle: jobs/queue.h. */
#include "store_jobs.h"

#include "clock.h"
#include "dq_error.h"
#include "store_internal.h"
#include "store_jobs_pg.h"

#include <math.h>
#include <sqlite3.h>
#include <string.h>

static DqStoreHook test_hook;

void store_jobs_set_test_hook(DqStoreHook hook) {
    test_hook = hook;
}

void store_jobs_hook(const char *point) {
    if (test_hook != NULL)
        test_hook(point);
}

static void hook(const char *point) {
    store_jobs_hook(point);
}

/* Fires while SQLite is committing: the journal is being written, the lock is held. */
static int commit_hook_cb(void *user) {
    hook("commit");
    return 0;
}

const char *dq_job_state_name(DqJobState s) {
    static const char *const names[] = {"queued", "running", "done", "failed", "dead", "cancelled"};
    return s < DQ_JOB_N_STATES ? names[s] : "unknown";
}

DqJobState store_jobs_state_from_name(const char *name) {
    for (int i = 0; i < DQ_JOB_N_STATES; i++)
        if (name != NULL && strcmp(name, dq_job_state_name(i)) == 0)
            return i;
    return DQ_JOB_N_STATES;
}

/* ---- statements ----
 *
 * Statements are prepared once per connection (SQLITE_PREPARE_PERSISTENT) and found again by
 * their text with sqlite3_next_stmt, so no cache has to live beside DqStore. dq_store_close
 * finalizes them (the store owns them); store_jobs_finalize drops them earlier. */

static gint64 busy_limit_us(void) {
    return store_busy_limit_ms() * 1000;
}

static gboolean db_fail(DqStore *s, GError **err, const char *what) {
    sqlite3 *db = dq_store_sqlite(s);
    /* A lock held too long is told apart: a worker waits on and tries again (worker.c), as for
     * a lost server. */
    dq_fail(err, (sqlite3_extended_errcode(db) & 0xff) == SQLITE_BUSY ? DQ_ERR_DB_BUSY : DQ_ERR_DB,
            "%s: %s: %s", dq_store_path(s), what, sqlite3_errmsg(db));
    store_sqlite_explain(s, err);
    return FALSE;
}

static int busy_wait(void *user, int tries);

static sqlite3_stmt *stmt(DqStore *s, const char *sql, GError **err) {
    sqlite3 *db = dq_store_sqlite(s);
    sqlite3_busy_handler(db, busy_wait, s);
    for (sqlite3_stmt *st = sqlite3_next_stmt(db, NULL); st; st = sqlite3_next_stmt(db, st))
        if (strcmp(sqlite3_sql(st), sql) == 0) {
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return st;
        }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        db_fail(s, err, "preparing a queue statement");
        return NULL;
    }
    return st;
}

void store_jobs_finalize(DqStore *s) {
    sqlite3 *db = dq_store_sqlite(s);
    if (db == NULL) /* PostgreSQL: statements live until dq_store_close */
        return;
    sqlite3_stmt *st;
    while ((st = sqlite3_next_stmt(db, NULL)) != NULL)
        sqlite3_finalize(st);
}

/* Steps a statement that returns no rows; resets it. */
static gboolean step_done(DqStore *s, sqlite3_stmt *st, const char *what, GError **err) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return db_fail(s, err, what);
    return TRUE;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v) {
    if (v == NULL)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
}

static char *col_dup(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? g_strdup((const char *)t) : NULL;
}

static int col_int_or(sqlite3_stmt *st, int i, int null) {
    return sqlite3_column_type(st, i) == SQLITE_NULL ? null : sqlite3_column_int(st, i);
}

/* Steps `st` onto its row; where there is none, or the step fails, resets it and fails saying
 * `what` was being read. The caller reads the row, then resets `st`. */
static gboolean step_row(DqStore *s, sqlite3_stmt *st, const char *what, GError **err) {
    if (sqlite3_step(st) == SQLITE_ROW)
        return TRUE;
    sqlite3_reset(st);
    return db_fail(s, err, what);
}

/* One element of a list, made from the row `st` stands on. */
typedef gpointer (*RowFn)(sqlite3_stmt *st);

/* Adds an element made by `row` to `out` for each of `st`'s rows, then resets `st`; FALSE, with
 * err saying `what` was being read, when a step fails (`out` keeps the rows read before). */
static gboolean append_rows(DqStore *s, sqlite3_stmt *st, GPtrArray *out, RowFn row,
                            const char *what, GError **err) {
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        g_ptr_array_add(out, row(st));
    sqlite3_reset(st);
    return rc == SQLITE_DONE || db_fail(s, err, what);
}

/* append_rows into a new list whose elements `free_row` frees; NULL when a step fails. */
static GPtrArray *read_rows(DqStore *s, sqlite3_stmt *st, RowFn row, GDestroyNotify free_row,
                            const char *what, GError **err) {
    GPtrArray *out = g_ptr_array_new_with_free_func(free_row);
    if (append_rows(s, st, out, row, what, err))
        return out;
    g_ptr_array_free(out, TRUE);
    return NULL;
}

/* Appends column 0 of each of `st`'s rows, an id, to `ids`, then resets `st`; FALSE, with err
 * saying `what` was being read, when a step fails. */
static gboolean append_ids(DqStore *s, sqlite3_stmt *st, GArray *ids, const char *what,
                           GError **err) {
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        gint64 id = sqlite3_column_int64(st, 0);
        g_array_append_val(ids, id);
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE || db_fail(s, err, what);
}

/* Waiting for the write lock. SQLite's own busy_timeout handler sleeps 1, 2, 5, 10 ... up to
 * 100 ms between tries; with many workers whose transactions last well under a millisecond, that
 * leaves the lock idle most of the time while everyone sleeps (a convoy). Short randomized sleeps
 * keep the lock busy. Same overall limit as the store's busy_timeout (store_busy_limit_ms).
 *
 * A worker told to stop (dq_store_set_stop) waits DQ_STORE_STOP_GRACE_MS more at most: sleeping
 * through the signal, Ctrl-C (or systemd's SIGTERM, then SIGKILL after 90 s) while an sqlite3
 * shell held the lock waited out the limit in the claim, then again giving the jobs back. */

static int busy_wait(void *user, int tries) {
    DqStore *s = user;
    static const int steps_us[] = {20, 50, 100, 200, 400, 800, 1000, 2000};
    /* A connection is used by one thread at a time, and a statement's tries count from 0. */
    static _Thread_local gint64 first_try_us;
    gint64 now = g_get_monotonic_time();
    s->lock_waited = TRUE;
    if (tries == 0) {
        first_try_us = now;
        s->busy_stopped = FALSE;
    }
    if (s->stop != NULL && *s->stop) {
        if (s->stop_seen_us == 0)
            s->stop_seen_us = now;
        if (now - s->stop_seen_us >= (gint64)DQ_STORE_STOP_GRACE_MS * 1000) {
            s->busy_stopped = TRUE;
            return 0;
        }
    }
    if (now - first_try_us >= busy_limit_us())
        return 0;
    int step = steps_us[MIN(tries, (int)G_N_ELEMENTS(steps_us) - 1)];
    g_usleep((gulong)g_random_int_range(step / 2 + 1, step + 1));
    return 1;
}

/* ---- a locked database ----
 *
 * Another connection may hold the write lock for long (a user's write in an sqlite3 shell, a
 * big ingest transaction): every worker's heartbeat, claim and completion then wait in the busy
 * handler, and leases run out that nobody could renew. When the lock is given up, the first
 * claim to get it would find the other workers' leases expired and take their jobs back,
 * spending an attempt of each (burying those on their last one), while their holders, alive,
 * were waiting for the lock too and would renew them a moment later.
 *
 * So this process remembers the last time one of its connections waited long for the lock (a
 * stall), and for a lease after it ends a claim takes back only leases that expired before the
 * stall began: any that expired since may be a waiting worker's (see store_jobs_claim). A lease
 * that expired while the database could be written is its holder's fault: it died or hung. A
 * worker that checks for work every poll (or renews its leases every lease/3) starts waiting
 * soon after the lock is taken, well before a lease can run out because of it. */

/* A wait that long for the lock is a stall, not the queue's own short transactions queueing. */
#define STALL_US (250 * 1000)
/* Waits this close one after another are one stall: a worker whose wait ran past the busy limit
 * waits again at once (worker.c, still_locked). */
#define STALL_GAP_US (1000 * 1000)

static GMutex stall_lock;
static gint64 stall_start_us, stall_end_us; /* monotonic; 0: none seen */

static void note_wait(gint64 t0, gint64 t1) {
    if (t1 - t0 < STALL_US)
        return;
    g_mutex_lock(&stall_lock);
    /* The heartbeat's connection and the main one wait through the same stall from different
     * moments, and a wait past the busy limit is followed by another: one stall, from the
     * first wait's start. */
    if (stall_end_us == 0 || t0 > stall_end_us + STALL_GAP_US)
        stall_start_us = t0;
    else
        stall_start_us = MIN(stall_start_us, t0);
    stall_end_us = MAX(stall_end_us, t1);
    g_mutex_unlock(&stall_lock);
}

/* How long ago (ms) the last stall began, when it ended less than `within_ms` ago; -1 if not. */
static gint64 recent_stall_ms(gint64 within_ms) {
    gint64 now = g_get_monotonic_time(), ago = -1;
    g_mutex_lock(&stall_lock);
    if (stall_end_us != 0 && now - stall_end_us < within_ms * 1000)
        ago = (now - stall_start_us) / 1000;
    g_mutex_unlock(&stall_lock);
    return ago;
}

/* BEGIN IMMEDIATE; *waited_ms (may be NULL) is how long it waited for the write lock: the
 * caller's time, read before the call, is that much behind once it has the lock. Only a BEGIN
 * that found the lock taken (busy_wait ran) waited for it: one that took long without (the
 * process descheduled on a loaded machine) is no stall, and adding its time would move leases
 * and backoffs by however slow the machine happened to be. */
static gboolean begin_timed(DqStore *s, gint64 *waited_ms, GError **err) {
    if (test_hook != NULL)
        sqlite3_commit_hook(dq_store_sqlite(s), commit_hook_cb, NULL);
    sqlite3_stmt *st = stmt(s, "BEGIN IMMEDIATE", err);
    s->lock_waited = FALSE;
    gint64 t0 = g_get_monotonic_time();
    gboolean ok = st != NULL && step_done(s, st, "BEGIN IMMEDIATE", err);
    gint64 t1 = s->lock_waited ? g_get_monotonic_time() : t0;
    note_wait(t0, t1);
    if (waited_ms)
        *waited_ms = (t1 - t0) / 1000;
    return ok;
}

static gboolean begin(DqStore *s, GError **err) {
    return begin_timed(s, NULL, err);
}

static gboolean commit(DqStore *s, GError **err) {
    sqlite3_stmt *st = stmt(s, "COMMIT", err);
    return st != NULL && step_done(s, st, "COMMIT", err);
}

static void rollback(DqStore *s) {
    if (!sqlite3_get_autocommit(dq_store_sqlite(s)))
        dq_store_exec(s, "ROLLBACK", NULL);
}

/* ---- asking ---- */

void dq_ask_page_free(DqAskPage *p) {
    if (p == NULL)
        return;
    g_free(p->document_sha256);
    g_free(p->render_settings);
    g_free(p);
}

/* The --where filter may read the documents table and call functions; anything else (other
 * tables, pragmas, writes, attach) fails to compile. */
static int where_authorizer(void *user, int action, const char *a, const char *b, const char *db,
                            const char *trigger) {
    switch (action) {
    case SQLITE_SELECT:
    case SQLITE_FUNCTION:
        return SQLITE_OK;
    case SQLITE_READ:
        return a != NULL && strcmp(a, "documents") == 0 ? SQLITE_OK : SQLITE_DENY;
    default:
        return SQLITE_DENY;
    }
}

char *store_jobs_where_sql(const char *where, gboolean newest_only) {
    return g_strdup_printf("SELECT id FROM documents WHERE (%s\n) AND (NOT %s OR version = "
                           "(SELECT max(d2.version) FROM documents d2 "
                           "WHERE d2.path = documents.path))",
                           where, newest_only ? "true" : "false");
}

static gboolean where_document_ids(DqStore *s, const char *where, gboolean newest_only, GArray *ids,
                                   GError **err) {
    sqlite3 *ro = NULL;
    sqlite3_stmt *st = NULL;
    gboolean ok = FALSE;
    /* As the store was opened: a database on read-only media without its -shm opens only as
     * immutable (dq_store_open_reader), for `export --where` as for export. */
    char *uri = s->immutable ? store_sqlite_immutable_uri(dq_store_path(s)) : NULL;
    int open_rc = sqlite3_open_v2(
        uri ? uri : dq_store_path(s), &ro,
        SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | (uri ? SQLITE_OPEN_URI : 0), NULL);
    g_free(uri);
    if (open_rc != SQLITE_OK) {
        dq_fail(err, DQ_ERR_DB, "%s: cannot open read-only for --where: %s", dq_store_path(s),
                ro ? sqlite3_errmsg(ro) : "out of memory");
        goto out;
    }
    sqlite3_busy_timeout(ro, 60000);
    sqlite3_set_authorizer(ro, where_authorizer, NULL);
    /* The newest version of each path only, as without a filter. The user's text must leave
     * nothing behind (checked through `tail` below). */
    char *sql = store_jobs_where_sql(where, newest_only);
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2(ro, sql, -1, &st, &tail);
    gboolean trailing = rc == SQLITE_OK && tail != NULL && *g_strchug((char *)tail) != '\0';
    g_free(sql);
    if (rc != SQLITE_OK || trailing || !sqlite3_stmt_readonly(st)) {
        dq_fail(err, DQ_ERR_ARGS,
                "--where '%s': %s (an SQL expression over the columns of documents, e.g. "
                "\"path LIKE '%%/2024/%%'\")",
                where, rc != SQLITE_OK ? sqlite3_errmsg(ro) : "more than one expression");
        goto out;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        gint64 id = sqlite3_column_int64(st, 0);
        g_array_append_val(ids, id);
    }
    if (rc != SQLITE_DONE) {
        dq_fail(err, DQ_ERR_ARGS, "--where '%s': %s", where, sqlite3_errmsg(ro));
        goto out;
    }
    ok = TRUE;
out:
    sqlite3_finalize(st);
    sqlite3_close(ro);
    return ok;
}

gint store_jobs_cmp_id(gconstpointer a, gconstpointer b) {
    gint64 x = *(const gint64 *)a, y = *(const gint64 *)b;
    return x < y ? -1 : x > y;
}

gboolean store_jobs_document_askable(DqStore *s, gint64 id, gboolean exists, const char *path,
                                     gboolean failed, const char *code, const char *message,
                                     GError **err) {
    if (!exists)
        return dq_fail(err, DQ_ERR_ARGS, "%s: no document with id %" G_GINT64_FORMAT,
                       dq_store_path(s), id);
    if (!failed)
        return TRUE;
    return dq_fail(err, DQ_ERR_ARGS,
                   "%s: document %" G_GINT64_FORMAT " (%s) failed to ingest (%s: %s): it has no "
                   "pages to ask about; fix the file and run docqa ingest on it again",
                   dq_store_path(s), id, path ? path : "?", code ? code : "no error code",
                   message ? message : "no message");
}

static gpointer ask_page_row(sqlite3_stmt *st) {
    const char *status = (const char *)sqlite3_column_text(st, 5);
    DqAskPage *p = g_new0(DqAskPage, 1);
    p->page_id = sqlite3_column_int64(st, 0);
    p->document_id = sqlite3_column_int64(st, 1);
    p->document_sha256 = col_dup(st, 2);
    p->page_number = sqlite3_column_int(st, 3);
    p->render_settings = col_dup(st, 4);
    /* 'partial' pages have an image (an incomplete TIFF strip, say): worth asking. */
    p->usable = status != NULL && strcmp(status, "failed") != 0 &&
                sqlite3_column_type(st, 6) != SQLITE_NULL;
    p->document_gone = sqlite3_column_int(st, 7) != 0;
    return p;
}

/* The newest version of every path, whether or not its file is still there. */
#define NEWEST_VERSIONS_SQL                                                                        \
    "SELECT id FROM documents d WHERE version = (SELECT max(version) FROM documents d2 "           \
    "WHERE d2.path = d.path)"

GPtrArray *store_jobs_select_pages(DqStore *s, const gint64 *document_ids, int n_ids,
                                   const char *const *where_sql, int n_where, GError **err) {
    PG_DISPATCH(s, return pgjobs_select_pages(s, document_ids, n_ids, where_sql, n_where, err));
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    GPtrArray *pages = g_ptr_array_new_with_free_func((GDestroyNotify)dq_ask_page_free);
    sqlite3_stmt *st;
    if (n_ids == 0 && n_where == 0) {
        if ((st = stmt(s, NEWEST_VERSIONS_SQL, err)) == NULL ||
            !append_ids(s, st, ids, "listing documents", err))
            goto fail;
    }
    for (int i = 0; i < n_ids; i++) {
        if ((st = stmt(s,
                       "SELECT path, status = 'failed', error_code, error_message FROM documents "
                       "WHERE id = ?1",
                       err)) == NULL)
            goto fail;
        sqlite3_bind_int64(st, 1, document_ids[i]);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            sqlite3_reset(st);
            db_fail(s, err, "finding a document");
            goto fail;
        }
        gboolean exists = rc == SQLITE_ROW;
        gboolean ok = store_jobs_document_askable(
            s, document_ids[i], exists, exists ? (const char *)sqlite3_column_text(st, 0) : NULL,
            exists && sqlite3_column_int(st, 1),
            exists ? (const char *)sqlite3_column_text(st, 2) : NULL,
            exists ? (const char *)sqlite3_column_text(st, 3) : NULL, err);
        sqlite3_reset(st);
        if (!ok)
            goto fail;
        g_array_append_val(ids, document_ids[i]);
    }
    for (int i = 0; i < n_where; i++)
        if (!where_document_ids(s, where_sql[i], TRUE, ids, err))
            goto fail;
    g_array_sort(ids, store_jobs_cmp_id);

    const char *sql = "SELECT p.id, d.id, d.sha256, p.page_number, p.render_settings, p.status, "
                      "p.image_sha256, d.missing_since IS NOT NULL "
                      "FROM pages p JOIN documents d ON d.id = p.document_id "
                      "WHERE d.id = ?1 ORDER BY p.page_number, p.id";
    for (guint i = 0; i < ids->len; i++) {
        gint64 id = g_array_index(ids, gint64, i);
        if (i > 0 && id == g_array_index(ids, gint64, i - 1))
            continue;
        if ((st = stmt(s, sql, err)) == NULL)
            goto fail;
        sqlite3_bind_int64(st, 1, id);
        if (!append_rows(s, st, pages, ask_page_row, "reading pages", err))
            goto fail;
    }
    g_array_free(ids, TRUE);
    return pages;
fail:
    g_array_free(ids, TRUE);
    g_ptr_array_free(pages, TRUE);
    return NULL;
}

gboolean store_jobs_question_id(DqStore *s, const char *text, gint64 *id, GError **err) {
    PG_DISPATCH(s, return pgjobs_question_id(s, text, id, err));
    sqlite3_stmt *st =
        stmt(s, "INSERT INTO questions (text) VALUES (?1) ON CONFLICT (text) DO NOTHING", err);
    if (st == NULL)
        return FALSE;
    bind_text(st, 1, text);
    if (!step_done(s, st, "adding a question", err))
        return FALSE;
    if ((st = stmt(s, "SELECT id FROM questions WHERE text = ?1", err)) == NULL)
        return FALSE;
    bind_text(st, 1, text);
    if (!step_row(s, st, "finding a question", err))
        return FALSE;
    *id = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return TRUE;
}

gboolean store_new_job_question(DqStore *s, const DqNewJob *job, GHashTable *known, gint64 *id,
                                GError **err) {
    if (job->question_id != 0) {
        *id = job->question_id;
        return TRUE;
    }
    gint64 *seen = g_hash_table_lookup(known, job->question);
    if (seen == NULL) {
        gint64 found;
        if (!store_jobs_question_id(s, job->question, &found, err))
            return FALSE;
        seen = g_memdup2(&found, sizeof found);
        g_hash_table_insert(known, (gpointer)job->question, seen);
    }
    *id = *seen;
    return TRUE;
}

gboolean store_jobs_enqueue(DqStore *s, const DqNewJob *jobs, int n, int *added, GError **err) {
    PG_DISPATCH(s, return pgjobs_enqueue(s, jobs, n, added, err));
    int count = 0;
    /* question text -> its id, each looked up once */
    GHashTable *question_ids = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
    if (!begin(s, err)) {
        g_hash_table_destroy(question_ids);
        return FALSE;
    }
    for (int i = 0; i < n; i++) {
        gint64 question_id;
        if (!store_new_job_question(s, &jobs[i], question_ids, &question_id, err))
            goto fail;
        sqlite3_stmt *st = stmt(s,
                                "INSERT INTO jobs (page_id, question_id, model_id, "
                                "generation_settings, job_key, max_attempts) "
                                "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (job_key) DO NOTHING",
                                err);
        if (st == NULL)
            goto fail;
        sqlite3_bind_int64(st, 1, jobs[i].page_id);
        sqlite3_bind_int64(st, 2, question_id);
        bind_text(st, 3, jobs[i].model_id);
        bind_text(st, 4, jobs[i].generation_settings);
        bind_text(st, 5, jobs[i].job_key);
        sqlite3_bind_int(st, 6, jobs[i].max_attempts);
        if (!step_done(s, st, "adding a job", err))
            goto fail;
        count += sqlite3_changes(dq_store_sqlite(s));
    }
    if (!commit(s, err))
        goto fail;
    g_hash_table_destroy(question_ids);
    if (added)
        *added = count;
    return TRUE;
fail:
    rollback(s);
    g_hash_table_destroy(question_ids);
    return FALSE;
}

/* ---- working ---- */

void dq_claimed_job_free(DqClaimedJob *j) {
    if (j == NULL)
        return;
    g_free(j->document_path);
    g_free(j->render_settings);
    g_free(j->image_sha256);
    g_free(j->question);
    g_free(j->model_id);
    g_free(j->generation_settings);
    g_free(j->missing);
    g_free(j);
}

/* DqClaimedJob.missing from whether the job's page, its document and its question are gone. */
char *store_jobs_missing(gboolean page, gboolean document, gboolean question) {
    const char *what = page ? "page" : document ? "document" : NULL;
    if (what == NULL && !question)
        return NULL;
    if (what == NULL)
        return g_strdup("question");
    return question ? g_strdup_printf("%s and question", what) : g_strdup(what);
}

#define NOW_ISO "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

GPtrArray *store_jobs_claim(DqStore *s, const char *owner, const char *model_id, int limit,
                            gint64 now_ms, gint64 lease_ms, int *buried, GError **err) {
    GArray *ids = buried ? g_array_new(FALSE, FALSE, sizeof(gint64)) : NULL;
    GPtrArray *out = store_jobs_claim_noting(s, owner, model_id, limit, now_ms, lease_ms, ids, err);
    if (out != NULL && buried)
        *buried = (int)ids->len;
    if (ids != NULL)
        g_array_free(ids, TRUE);
    return out;
}

/* One claim: who claims for which model, the times it compares leases with, and what it comes
 * to (the jobs claimed, and those buried on the way). */
typedef struct {
    DqStore *s;
    const char *owner, *model_id;
    int limit;
    gint64 now_ms, lease_ms;
    gint64 expired_before; /* leases that expired before this are reclaimed */
    GArray *dead;          /* gint64: jobs buried by their expired lease */
    GArray *ids;           /* gint64: jobs claimed */
    GPtrArray *out;        /* DqClaimedJob * */
} Claim;

/* Expired leases: the holder died or hung. Keep a record, then queue the job again (or bury it
 * when that was its last attempt, so a job that kills its worker every time cannot take the whole
 * queue down with it). Never the claimant's own: it is alive, since it is claiming, and still
 * answering them (its heartbeat fell behind, the database was locked or unreachable); taking
 * them back would put the same job in its model twice. */
static gboolean reclaim_expired(Claim *c, GError **err) {
    sqlite3_stmt *st = stmt(c->s,
                            "INSERT INTO job_errors (job_id, attempt, worker, kind, message) "
                            "SELECT id, attempts, lease_owner, " DQ_SQL_LEASE_EXPIRED_KIND
                            ", " DQ_SQL_LEASE_EXPIRED_MESSAGE " FROM jobs "
                            "WHERE state = 'running' AND lease_expires_ms < ?1 AND model_id = ?2 "
                            "AND lease_owner <> ?3",
                            err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_int64(st, 1, c->expired_before);
    bind_text(st, 2, c->model_id);
    bind_text(st, 3, c->owner);
    if (!step_done(c->s, st, "recording expired leases", err))
        return FALSE;
    st = stmt(c->s,
              "UPDATE jobs SET state = CASE WHEN attempts >= max_attempts AND " DQ_SQL_HAS_ANSWER
              " THEN 'done' WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, "
              "finished_at = CASE WHEN attempts >= max_attempts THEN "
              "coalesce(" DQ_SQL_ANSWER_FINISHED_AT ", " NOW_ISO ") END, "
              "lease_owner = NULL, lease_expires_ms = NULL, not_before_ms = 0, "
              "last_error = " DQ_SQL_LEASE_EXPIRED_ERROR " "
              "WHERE state = 'running' AND lease_expires_ms < ?1 AND model_id = ?2 "
              "AND lease_owner <> ?3 RETURNING id, state",
              err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_int64(st, 1, c->expired_before);
    bind_text(st, 2, c->model_id);
    bind_text(st, 3, c->owner);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (g_strcmp0((const char *)sqlite3_column_text(st, 1), "dead") == 0) {
            gint64 id = sqlite3_column_int64(st, 0);
            g_array_append_val(c->dead, id);
        }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return db_fail(c->s, err, "reclaiming expired leases");
    return TRUE;
}

/* Up to `limit` queued jobs of the model, oldest first, leased to the owner: their ids, sorted. */
static gboolean claim_ready(Claim *c, GError **err) {
    /* INDEXED BY: without statistics the planner prefers jobs_state_counts and then visits every
     * queued job of every model; jobs_ready walks this model's queue in id order and stops. */
    sqlite3_stmt *st = stmt(c->s,
                            "UPDATE jobs SET state = 'running', lease_owner = ?1, "
                            "lease_expires_ms = ?2, attempts = attempts + 1 "
                            "WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_ready "
                            "WHERE state = 'queued' AND model_id = ?3 "
                            "AND not_before_ms <= ?4 ORDER BY id LIMIT ?5) RETURNING id",
                            err);
    if (st == NULL)
        return FALSE;
    bind_text(st, 1, c->owner);
    sqlite3_bind_int64(st, 2, c->now_ms + c->lease_ms);
    bind_text(st, 3, c->model_id);
    sqlite3_bind_int64(st, 4, c->now_ms);
    sqlite3_bind_int(st, 5, c->limit);
    if (!append_ids(c->s, st, c->ids, "claiming jobs", err))
        return FALSE;
    g_array_sort(c->ids, store_jobs_cmp_id);
    return TRUE;
}

/* A claimed job with what its worker needs: its page, document and question (or which of them
 * is gone). */
static DqClaimedJob *read_claimed_job(DqStore *s, gint64 id, GError **err) {
    sqlite3_stmt *st = stmt(s,
                            "SELECT j.id, j.page_id, p.document_id, d.path, p.page_number, "
                            "p.render_settings, p.image_sha256, q.text, j.model_id, "
                            "j.generation_settings, j.attempts, j.max_attempts, p.id IS NULL, "
                            "d.id IS NULL, q.id IS NULL "
                            "FROM jobs j LEFT JOIN pages p ON p.id = j.page_id "
                            "LEFT JOIN documents d ON d.id = p.document_id "
                            "LEFT JOIN questions q ON q.id = j.question_id WHERE j.id = ?1",
                            err);
    if (st == NULL)
        return NULL;
    sqlite3_bind_int64(st, 1, id);
    if (!step_row(s, st, "reading a claimed job", err))
        return NULL;
    DqClaimedJob *j = g_new0(DqClaimedJob, 1);
    j->job_id = sqlite3_column_int64(st, 0);
    j->page_id = sqlite3_column_int64(st, 1);
    j->document_id = sqlite3_column_int64(st, 2);
    j->document_path = col_dup(st, 3);
    j->page_number = sqlite3_column_int(st, 4);
    j->render_settings = col_dup(st, 5);
    j->image_sha256 = col_dup(st, 6);
    j->question = col_dup(st, 7);
    j->model_id = col_dup(st, 8);
    j->generation_settings = col_dup(st, 9);
    j->attempt = sqlite3_column_int(st, 10);
    j->max_attempts = sqlite3_column_int(st, 11);
    j->missing = store_jobs_missing(sqlite3_column_int(st, 12), sqlite3_column_int(st, 13),
                                    sqlite3_column_int(st, 14));
    sqlite3_reset(st);
    return j;
}

/* The claim's transaction: expired leases reclaimed, ready jobs leased, the claimed jobs read. */
static gboolean claim_in_transaction(Claim *c, GError **err) {
    gint64 waited_ms = 0;
    if (!begin_timed(c->s, &waited_ms, err))
        goto fail;
    c->now_ms += waited_ms; /* new leases run from now, not from before the lock was free */
    /* After a stall (above begin_timed), leases that expired since it began are left to their
     * holders, which were waiting for the lock as this claim was: they renew them once they
     * get it. */
    gint64 stall_ago = recent_stall_ms(c->lease_ms);
    c->expired_before = stall_ago >= 0 ? c->now_ms - stall_ago : c->now_ms;
    if (!reclaim_expired(c, err) || !claim_ready(c, err))
        goto fail;
    for (guint i = 0; i < c->ids->len; i++) {
        DqClaimedJob *j = read_claimed_job(c->s, g_array_index(c->ids, gint64, i), err);
        if (j == NULL)
            goto fail;
        g_ptr_array_add(c->out, j);
    }
    hook("claim:before_commit");
    if (!commit(c->s, err))
        goto fail;
    return TRUE;
fail:
    rollback(c->s);
    return FALSE;
}

GPtrArray *store_jobs_claim_noting(DqStore *s, const char *owner, const char *model_id, int limit,
                                   gint64 now_ms, gint64 lease_ms, GArray *buried_ids,
                                   GError **err) {
    PG_DISPATCH(s,
                return pgjobs_claim(s, owner, model_id, limit, now_ms, lease_ms, buried_ids, err));
    Claim c = {.s = s,
               .owner = owner,
               .model_id = model_id,
               .limit = limit,
               .now_ms = now_ms,
               .lease_ms = lease_ms,
               .dead = g_array_new(FALSE, FALSE, sizeof(gint64)),
               .ids = g_array_new(FALSE, FALSE, sizeof(gint64)),
               .out = g_ptr_array_new_with_free_func((GDestroyNotify)dq_claimed_job_free)};
    gboolean ok = claim_in_transaction(&c, err);
    if (ok && buried_ids)
        g_array_append_vals(buried_ids, c.dead->data, c.dead->len);
    g_array_free(c.ids, TRUE);
    g_array_free(c.dead, TRUE);
    if (!ok) {
        g_ptr_array_free(c.out, TRUE);
        return NULL;
    }
    return c.out;
}

gboolean store_jobs_heartbeat(DqStore *s, const char *owner, gint64 now_ms, gint64 lease_ms,
                              int *held, GError **err) {
    return store_jobs_heartbeat_noting(s, owner, now_ms, lease_ms, NULL, 0, NULL, held, err);
}

/* Of a worker's jobs in flight, those it no longer holds whose answer store_jobs_complete would
 * not keep: its rule for a late answer, less cancelled jobs (a user withdrew them; an answer
 * that comes anyway is kept, but none is worth computing now). */
#define GONE_FROM_WORKER                                                                           \
    "SELECT value FROM json_each(?1) WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = value "  \
    "AND ((lease_owner = ?2 AND state = 'running') "                                               \
    "OR (state IN ('queued', 'dead') AND NOT " DQ_SQL_HAS_ANSWER "))) ORDER BY value"

gboolean store_jobs_heartbeat_noting(DqStore *s, const char *owner, gint64 now_ms, gint64 lease_ms,
                                     const gint64 *in_flight, int n_in_flight, GArray *gone,
                                     int *held, GError **err) {
    PG_DISPATCH(s, return pgjobs_heartbeat(s, owner, now_ms, lease_ms, in_flight, n_in_flight, gone,
                                           held, err));
    /* In a transaction of its own, to learn how long it waited for the lock: a lease renewed
     * from the time before a long wait would be renewed to a time already past. */
    gint64 waited_ms = 0;
    guint first_gone = gone ? gone->len : 0;
    if (!begin_timed(s, &waited_ms, err))
        return FALSE;
    sqlite3_stmt *st = stmt(s,
                            "UPDATE jobs SET lease_expires_ms = ?1 "
                            "WHERE lease_owner = ?2 AND state = 'running'",
                            err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, now_ms + waited_ms + lease_ms);
    bind_text(st, 2, owner);
    if (!step_done(s, st, "extending leases", err))
        goto fail;
    int n = sqlite3_changes(dq_store_sqlite(s));
    if (gone != NULL && n_in_flight > 0) {
        if ((st = stmt(s, GONE_FROM_WORKER, err)) == NULL)
            goto fail;
        sqlite3_bind_text(st, 1, store_jobs_id_list(in_flight, n_in_flight, '[', ']'), -1, g_free);
        bind_text(st, 2, owner);
        if (!append_ids(s, st, gone, "looking for jobs no longer held", err))
            goto fail;
    }
    if (!commit(s, err))
        goto fail;
    if (held)
        *held = n;
    return TRUE;
fail:
    if (gone != NULL)
        g_array_set_size(gone, first_gone);
    rollback(s);
    return FALSE;
}

/* The guard: only the lease holder may finish a job. A worker whose lease expired and was
 * reclaimed matches no row here and writes nothing for that job while another holds it or has
 * answered it. A job nobody holds and nobody answered (back in the queue, or buried when that
 * expiry was its last attempt: the database was locked longer than a lease; or cancelled while
 * its worker answered it) takes the late answer rather than throw it away. *finished: whether the
 * job was marked done. */
static gboolean finish_job(DqStore *s, const char *owner, const DqJobAnswer *a, gboolean *finished,
                           GError **err) {
    sqlite3_stmt *st =
        stmt(s,
             "UPDATE jobs SET state = 'done', lease_owner = NULL, "
             "lease_expires_ms = NULL, finished_at = ?3 "
             "WHERE id = ?1 AND ((lease_owner = ?2 AND state = 'running') "
             "OR (state IN ('queued', 'dead', 'cancelled') AND NOT " DQ_SQL_HAS_ANSWER "))",
             err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_int64(st, 1, a->job_id);
    bind_text(st, 2, owner);
    bind_text(st, 3, a->finished_at);
    if (!step_done(s, st, "finishing a job", err))
        return FALSE;
    *finished = sqlite3_changes(dq_store_sqlite(s)) == 1;
    return TRUE;
}

/* This very answer, stored by an earlier try of this completion whose COMMIT went through
 * unheard (store_jobs.h), is not a late one: *mine says whether it is there. */
static gboolean answer_stored(DqStore *s, const char *owner, const DqJobAnswer *a, gboolean *mine,
                              GError **err) {
    sqlite3_stmt *st =
        stmt(s,
             "SELECT EXISTS (SELECT 1 FROM answers WHERE job_id = ?1 AND worker = ?2 "
             "AND finished_at = ?3 AND text = ?4)",
             err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_int64(st, 1, a->job_id);
    bind_text(st, 2, owner);
    bind_text(st, 3, a->finished_at);
    bind_text(st, 4, a->text);
    int rc = sqlite3_step(st);
    *mine = rc == SQLITE_ROW && sqlite3_column_int(st, 0) != 0;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return db_fail(s, err, "looking for a stored answer");
    return TRUE;
}

/* A requeued approximate answer (store_jobs_requeue) gives way to this one. */
static gboolean supersede_answer(DqStore *s, const DqJobAnswer *a, GError **err) {
    sqlite3_stmt *st =
        stmt(s,
             "INSERT INTO answers_superseded (answer_id, " DQ_ANSWER_COLUMNS ", superseded_at) "
             "SELECT id, " DQ_ANSWER_COLUMNS ", ?2 FROM answers WHERE job_id = ?1",
             err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_int64(st, 1, a->job_id);
    bind_text(st, 2, a->finished_at);
    if (!step_done(s, st, "keeping a replaced answer", err))
        return FALSE;
    if (sqlite3_changes(dq_store_sqlite(s)) == 0) /* the job had no answer */
        return TRUE;
    st = stmt(s, "DELETE FROM answers WHERE job_id = ?1", err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_int64(st, 1, a->job_id);
    return step_done(s, st, "keeping a replaced answer", err);
}

static gboolean insert_answer(DqStore *s, const char *owner, const DqJobAnswer *a, GError **err) {
    sqlite3_stmt *st = stmt(s,
                            "INSERT INTO answers (" DQ_ANSWER_COLUMNS ") "
                            "SELECT id, ?2, ?3, ?4, model_id, generation_settings, ?5, ?6, ?7, "
                            "?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16 FROM jobs WHERE id = ?1",
                            err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_int64(st, 1, a->job_id);
    bind_text(st, 2, a->text);
    sqlite3_bind_int(st, 3, a->prompt_tokens);
    sqlite3_bind_int(st, 4, a->generated_tokens);
    bind_text(st, 5, owner);
    bind_text(st, 6, a->started_at);
    bind_text(st, 7, a->finished_at);
    sqlite3_bind_double(st, 8, a->ms_image);
    sqlite3_bind_double(st, 9, a->ms_vision);
    sqlite3_bind_double(st, 10, a->ms_prefill);
    sqlite3_bind_double(st, 11, a->ms_decode);
    sqlite3_bind_double(st, 12, a->ms_total);
    bind_text(st, 13, a->device);
    bind_text(st, 14, a->weights);
    if (a->exact < 0)
        sqlite3_bind_null(st, 15);
    else
        sqlite3_bind_int(st, 15, a->exact ? 1 : 0);
    bind_text(st, 16, a->model_fingerprint);
    return step_done(s, st, "storing an answer", err);
}

/* One answer: its job finished and the answer stored, or, for a job the owner lost, counted only
 * when this very answer is already there. */
static gboolean complete_one(DqStore *s, const char *owner, const DqJobAnswer *a, int *count,
                             GError **err) {
    gboolean finished = FALSE, mine = FALSE;
    if (!finish_job(s, owner, a, &finished, err))
        return FALSE;
    if (!finished) {
        if (!answer_stored(s, owner, a, &mine, err))
            return FALSE;
        *count += mine;
        return TRUE;
    }
    hook("complete:after_job_update");
    if (!supersede_answer(s, a, err) || !insert_answer(s, owner, a, err))
        return FALSE;
    (*count)++;
    return TRUE;
}

gboolean store_jobs_complete(DqStore *s, const char *owner, const DqJobAnswer *answers, int n,
                             int *written, GError **err) {
    PG_DISPATCH(s, return pgjobs_complete(s, owner, answers, n, written, err));
    int count = 0;
    if (!begin(s, err))
        return FALSE;
    for (int i = 0; i < n; i++)
        if (!complete_one(s, owner, &answers[i], &count, err))
            goto fail;
    hook("complete:before_commit");
    if (!commit(s, err))
        goto fail;
    hook("complete:after_commit");
    if (written)
        *written = count;
    return TRUE;
fail:
    rollback(s);
    return FALSE;
}

gboolean store_jobs_fail(DqStore *s, const char *owner, gint64 job_id, const char *kind,
                         const char *message, gboolean retryable, gint64 now_ms, gint64 backoff_ms,
                         DqJobState *new_state, GError **err) {
    PG_DISPATCH(s, return pgjobs_fail(s, owner, job_id, kind, message, retryable, now_ms,
                                      backoff_ms, new_state, err));
    DqJobState result = DQ_JOB_N_STATES;
    gint64 waited_ms = 0;
    if (!begin_timed(s, &waited_ms, err))
        return FALSE;
    now_ms += waited_ms; /* the backoff runs from the failure's record */
    sqlite3_stmt *st = stmt(s,
                            "INSERT INTO job_errors (job_id, attempt, worker, kind, message) "
                            "SELECT id, attempts, lease_owner, ?3, ?4 FROM jobs "
                            "WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'",
                            err);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, job_id);
    bind_text(st, 2, owner);
    bind_text(st, 3, kind);
    bind_text(st, 4, message);
    if (!step_done(s, st, "recording a job error", err))
        goto fail;
    if (sqlite3_changes(dq_store_sqlite(s)) == 1) {
        /* Backoff doubles with each attempt: a transient cause (a busy GPU, a file being
         * copied) gets time to go away; the cap keeps a retry within the hour. */
        st = stmt(s,
                  "UPDATE jobs SET state = CASE "
                  "WHEN (NOT ?3 OR attempts >= max_attempts) AND " DQ_SQL_HAS_ANSWER " THEN 'done' "
                  "WHEN NOT ?3 THEN 'failed' WHEN attempts >= max_attempts THEN 'dead' "
                  "ELSE 'queued' END, "
                  "not_before_ms = ?4 + min(?5 * (1 << min(attempts - 1, 20)), 3600000), "
                  "finished_at = CASE WHEN NOT ?3 OR attempts >= max_attempts THEN "
                  "coalesce(" DQ_SQL_ANSWER_FINISHED_AT ", " NOW_ISO ") END, "
                  "lease_owner = NULL, lease_expires_ms = NULL, "
                  "last_error = ?6 || ': ' || ?7 WHERE id = ?1 AND lease_owner = ?2 "
                  "RETURNING state",
                  err);
        if (st == NULL)
            goto fail;
        sqlite3_bind_int64(st, 1, job_id);
        bind_text(st, 2, owner);
        sqlite3_bind_int(st, 3, retryable ? 1 : 0);
        sqlite3_bind_int64(st, 4, now_ms);
        sqlite3_bind_int64(st, 5, backoff_ms);
        bind_text(st, 6, kind);
        bind_text(st, 7, message);
        if (!step_row(s, st, "marking a job failed", err))
            goto fail;
        result = store_jobs_state_from_name((const char *)sqlite3_column_text(st, 0));
        sqlite3_step(st);
        sqlite3_reset(st);
    } else {
        /* Not leased: maybe because an earlier try of this very call committed unheard. */
        st = stmt(s, SQL_FAILED_BEFORE("?1", "?2", "?3", "?4"), err);
        if (st == NULL)
            goto fail;
        sqlite3_bind_int64(st, 1, job_id);
        bind_text(st, 2, owner);
        bind_text(st, 3, kind);
        bind_text(st, 4, message);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            result = store_jobs_state_from_name((const char *)sqlite3_column_text(st, 0));
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            db_fail(s, err, "looking for a recorded failure");
            goto fail;
        }
    }
    hook("fail:before_commit");
    if (!commit(s, err))
        goto fail;
    if (new_state)
        *new_state = result;
    return TRUE;
fail:
    rollback(s);
    return FALSE;
}

gboolean store_jobs_release(DqStore *s, const char *owner, int *released, GError **err) {
    return store_jobs_release_except(s, owner, NULL, 0, released, err);
}

char *store_jobs_id_list(const gint64 *ids, int n, char open, char close) {
    GString *g = g_string_new(NULL);
    g_string_append_c(g, open);
    for (int i = 0; i < n; i++)
        g_string_append_printf(g, "%s%" G_GINT64_FORMAT, i ? "," : "", ids[i]);
    g_string_append_c(g, close);
    return g_string_free(g, FALSE);
}

gboolean store_jobs_release_except(DqStore *s, const char *owner, const gint64 *keep, int n_keep,
                                   int *released, GError **err) {
    PG_DISPATCH(s, return pgjobs_release_except(s, owner, keep, n_keep, released, err));
    sqlite3_stmt *st = stmt(s,
                            "UPDATE jobs SET state = 'queued', lease_owner = NULL, "
                            "lease_expires_ms = NULL, attempts = max(attempts - 1, 0) "
                            "WHERE lease_owner = ?1 AND state = 'running' "
                            "AND id NOT IN (SELECT value FROM json_each(?2))",
                            err);
    if (st == NULL)
        return FALSE;
    bind_text(st, 1, owner);
    char *list = store_jobs_id_list(keep, n_keep, '[', ']');
    sqlite3_bind_text(st, 2, list, -1, g_free);
    rollback(s); /* a failed transaction (a full disk) must not swallow the release */
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    /* A full disk: the jobs would stay leased to a worker that is stopping, and each episode
     * cost them an attempt. The room the worker set aside (dq_store_keep_reserve) holds this
     * small change's pages in the WAL. Without it, emptying the WAL into the database and
     * truncating it may make room, but only where the database file has room to grow into. */
    if (rc != SQLITE_DONE && (sqlite3_extended_errcode(dq_store_sqlite(s)) & 0xff) == SQLITE_FULL &&
        dq_store_drop_reserve(s)) {
        rc = sqlite3_step(st);
        sqlite3_reset(st);
    }
    if (rc != SQLITE_DONE && (sqlite3_extended_errcode(dq_store_sqlite(s)) & 0xff) == SQLITE_FULL) {
        sqlite3_exec(dq_store_sqlite(s), "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
    }
    if (rc != SQLITE_DONE)
        return db_fail(s, err, "releasing jobs");
    if (released)
        *released = sqlite3_changes(dq_store_sqlite(s));
    return TRUE;
}

/* ---- reading ---- */

gboolean store_jobs_count_in_state(DqStore *s, const gint64 *ids, int n, DqJobState state,
                                   gint64 *count, GError **err) {
    PG_DISPATCH(s, return pgjobs_count_in_state(s, ids, n, state, count, err));
    sqlite3_stmt *st = stmt(s,
                            "SELECT count(*) FROM jobs WHERE state = ?2 "
                            "AND id IN (SELECT value FROM json_each(?1))",
                            err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_text(st, 1, store_jobs_id_list(ids, n, '[', ']'), -1, g_free);
    bind_text(st, 2, dq_job_state_name(state));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *count = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return db_fail(s, err, "counting jobs");
    return TRUE;
}

gboolean store_jobs_counts(DqStore *s, const char *model_id, DqJobCounts *c, GError **err) {
    return store_jobs_counts_at(s, model_id, dq_wall_ms(), c, err);
}

gboolean store_jobs_counts_at(DqStore *s, const char *model_id, gint64 now_ms, DqJobCounts *c,
                              GError **err) {
    PG_DISPATCH(s, return pgjobs_counts(s, model_id, now_ms, c, err));
    memset(c, 0, sizeof(*c));
    sqlite3_stmt *st = stmt(s,
                            "SELECT state, count(*), sum(attempts > 0) FROM jobs "
                            "WHERE ?1 IS NULL OR model_id = ?1 GROUP BY state",
                            err);
    if (st == NULL)
        return FALSE;
    bind_text(st, 1, model_id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        DqJobState state = store_jobs_state_from_name((const char *)sqlite3_column_text(st, 0));
        gint64 n = sqlite3_column_int64(st, 1);
        if (state < DQ_JOB_N_STATES)
            c->by_state[state] = n;
        if (state == DQ_JOB_QUEUED)
            c->retrying = sqlite3_column_int64(st, 2);
        c->total += n;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return db_fail(s, err, "counting jobs");
    /* The claim's index of leases: visits the running jobs only. The clock is this machine's, as
     * the workers' that stamp the leases (and v_progress's). */
    st = stmt(s,
              "SELECT count(*) FROM jobs INDEXED BY jobs_leased WHERE state = 'running' AND "
              "lease_expires_ms < ?2 AND (?1 IS NULL OR model_id = ?1)",
              err);
    if (st == NULL)
        return FALSE;
    bind_text(st, 1, model_id);
    sqlite3_bind_int64(st, 2, now_ms);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        c->stalled = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return db_fail(s, err, "counting stalled jobs");
    if (model_id != NULL) {
        st = stmt(s,
                  "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running') "
                  "AND model_id <> ?1",
                  err);
        if (st == NULL)
            return FALSE;
        bind_text(st, 1, model_id);
        if (!step_row(s, st, "counting other models' jobs", err))
            return FALSE;
        c->pending_other = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
    }
    return TRUE;
}

void dq_model_pending_free(DqModelPending *m) {
    if (m == NULL)
        return;
    g_free(m->model_id);
    g_free(m);
}

static gpointer model_pending_row(sqlite3_stmt *st) {
    DqModelPending *m = g_new0(DqModelPending, 1);
    m->model_id = col_dup(st, 0);
    m->queued = sqlite3_column_int64(st, 1);
    m->running = sqlite3_column_int64(st, 2);
    return m;
}

GPtrArray *store_jobs_pending_models(DqStore *s, const char *except, int limit, GError **err) {
    PG_DISPATCH(s, return pgjobs_pending_models(s, except, limit, err));
    sqlite3_stmt *st = stmt(s,
                            "SELECT model_id, sum(state = 'queued') AS q, sum(state = 'running') "
                            "AS r FROM jobs WHERE state IN ('queued', 'running') AND "
                            "model_id IS NOT ?1 GROUP BY model_id ORDER BY q + r DESC, model_id "
                            "LIMIT ?2",
                            err);
    if (st == NULL)
        return NULL;
    bind_text(st, 1, except);
    sqlite3_bind_int(st, 2, limit);
    return read_rows(s, st, model_pending_row, (GDestroyNotify)dq_model_pending_free,
                     "counting other models' jobs", err);
}

gboolean store_jobs_has_pending(DqStore *s, const char *model_id, gboolean *pending, GError **err) {
    PG_DISPATCH(s, return pgjobs_has_pending(s, model_id, pending, err));
    sqlite3_stmt *st =
        stmt(s,
             "SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_ready "
             "WHERE state = 'queued' AND model_id = ?1) OR EXISTS (SELECT 1 FROM "
             "jobs INDEXED BY jobs_leased WHERE state = 'running' AND model_id = ?1)",
             err);
    if (st == NULL)
        return FALSE;
    bind_text(st, 1, model_id);
    if (!step_row(s, st, "looking for pending jobs", err))
        return FALSE;
    *pending = sqlite3_column_int(st, 0) != 0;
    sqlite3_reset(st);
    return TRUE;
}

gboolean store_jobs_recent_rate(DqStore *s, int window_s, gint64 *answers, double *span_s,
                                GError **err) {
    return store_jobs_recent_rate_at(s, window_s, dq_wall_ms(), answers, span_s, err);
}

gboolean store_jobs_recent_rate_at(DqStore *s, int window_s, gint64 now_ms, gint64 *answers,
                                   double *span_s, GError **err) {
    /* finished_at is ISO-8601 UTC text with milliseconds (worker.c): compared as text. */
    GDateTime *t = g_date_time_new_from_unix_utc(0);
    GDateTime *from = g_date_time_add(t, (now_ms - (gint64)window_s * 1000) * 1000);
    char *day = g_date_time_format(from, "%Y-%m-%dT%H:%M:%S");
    char *since = g_strdup_printf("%s.%03dZ", day, g_date_time_get_microsecond(from) / 1000);
    g_free(day);
    g_date_time_unref(from);
    g_date_time_unref(t);
    PG_DISPATCH(s, {
        gboolean ok = pgjobs_recent_rate(s, since, answers, span_s, err);
        g_free(since);
        return ok;
    });
    sqlite3_stmt *st = stmt(s,
                            "SELECT count(*), coalesce((julianday(max(finished_at)) - "
                            "julianday(min(started_at))) * 86400.0, 0) FROM answers "
                            "WHERE finished_at >= ?1",
                            err);
    if (st == NULL) {
        g_free(since);
        return FALSE;
    }
    bind_text(st, 1, since);
    g_free(since);
    if (!step_row(s, st, "reading the answer rate", err))
        return FALSE;
    *answers = sqlite3_column_int64(st, 0);
    *span_s = sqlite3_column_double(st, 1);
    sqlite3_reset(st);
    return TRUE;
}

void dq_error_reason_free(DqErrorReason *r) {
    if (r == NULL)
        return;
    g_free(r->kind);
    g_free(r->message);
    g_free(r->example);
    g_free(r);
}

static gpointer error_reason_row(sqlite3_stmt *st) {
    DqErrorReason *r = g_new0(DqErrorReason, 1);
    r->kind = col_dup(st, 0);
    r->message = col_dup(st, 1);
    r->jobs = sqlite3_column_int64(st, 2);
    r->example = col_dup(st, 3);
    return r;
}

GPtrArray *store_jobs_top_errors(DqStore *s, int limit, GError **err) {
    PG_DISPATCH(s, return pgjobs_top_errors(s, limit, err));
    sqlite3_stmt *st = stmt(s,
                            "SELECT e.kind, docqa_error_reason(e.message) AS reason, "
                            "count(DISTINCT e.job_id) AS n, min(e.message) FROM job_errors e "
                            "JOIN jobs j ON j.id = e.job_id WHERE " DQ_JOBS_FAILING_NOW
                            " GROUP BY e.kind, reason ORDER BY n DESC, e.kind, reason LIMIT ?1",
                            err);
    if (st == NULL)
        return NULL;
    sqlite3_bind_int(st, 1, limit);
    return read_rows(s, st, error_reason_row, (GDestroyNotify)dq_error_reason_free,
                     "reading job errors", err);
}

gboolean store_jobs_last_error_id(DqStore *s, gint64 *id, GError **err) {
    PG_DISPATCH(s, return pgjobs_last_error_id(s, id, err));
    sqlite3_stmt *st = stmt(s, "SELECT coalesce(max(id), 0) FROM job_errors", err);
    if (st == NULL || !step_row(s, st, "reading job errors", err))
        return FALSE;
    *id = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return TRUE;
}

GPtrArray *store_jobs_errors_after(DqStore *s, const char *model_id, gint64 after_id,
                                   const char *worker_tag, const gint64 *buried, int n_buried,
                                   int limit, GError **err) {
    PG_DISPATCH(s, return pgjobs_errors_after(s, model_id, after_id, worker_tag, buried, n_buried,
                                              limit, err));
    sqlite3_stmt *st = stmt(s,
                            "SELECT e.kind, docqa_error_reason(e.message) AS reason, "
                            "count(DISTINCT e.job_id) AS n, min(e.message) FROM job_errors e "
                            "JOIN jobs j ON j.id = e.job_id WHERE e.id > ?2 AND j.model_id = ?3 "
                            "AND (?4 IS NULL OR e.worker LIKE ('%:' || ?4) "
                            "OR e.job_id IN (SELECT value FROM json_each(?5))) "
                            "AND " DQ_SQL_ENDED_BY_ERROR " GROUP BY e.kind, reason "
                            "ORDER BY n DESC, e.kind, reason LIMIT ?1",
                            err);
    if (st == NULL)
        return NULL;
    sqlite3_bind_int(st, 1, limit);
    sqlite3_bind_int64(st, 2, after_id);
    bind_text(st, 3, model_id);
    bind_text(st, 4, worker_tag);
    sqlite3_bind_text(st, 5, store_jobs_id_list(buried, n_buried, '[', ']'), -1, g_free);
    return read_rows(s, st, error_reason_row, (GDestroyNotify)dq_error_reason_free,
                     "reading job errors", err);
}

void dq_progress_row_free(DqProgressRow *r) {
    if (r == NULL)
        return;
    g_free(r->question);
    g_free(r->model_id);
    g_free(r->asked_at);
    g_free(r->last_finished_at);
    g_free(r);
}

static gpointer progress_row(sqlite3_stmt *st) {
    DqProgressRow *r = g_new0(DqProgressRow, 1);
    r->question = col_dup(st, 0);
    r->model_id = col_dup(st, 1);
    gint64 *counts[] = {&r->total, &r->queued,   &r->running, &r->done,     &r->failed,
                        &r->dead,  &r->retrying, &r->stalled, &r->cancelled};
    for (size_t i = 0; i < G_N_ELEMENTS(counts); i++)
        *counts[i] = sqlite3_column_int64(st, 2 + (int)i);
    r->percent_done =
        sqlite3_column_type(st, 11) == SQLITE_NULL ? -1 : sqlite3_column_double(st, 11);
    r->asked_at = col_dup(st, 12);
    r->last_finished_at = col_dup(st, 13);
    return r;
}

GPtrArray *store_jobs_progress(DqStore *s, GError **err) {
    PG_DISPATCH(s, return pgjobs_progress(s, err));
    sqlite3_stmt *st = stmt(s, DQ_PROGRESS_SQL, err);
    if (st == NULL)
        return NULL;
    return read_rows(s, st, progress_row, (GDestroyNotify)dq_progress_row_free,
                     "reading v_progress", err);
}

void store_jobs_progress_set_leases(GPtrArray *rows, const char *question, const char *model_id,
                                    gint64 running, gint64 stalled) {
    for (guint i = 0; i < rows->len; i++) {
        DqProgressRow *r = g_ptr_array_index(rows, i);
        if (g_strcmp0(r->question, question) == 0 && g_strcmp0(r->model_id, model_id) == 0) {
            r->running = running;
            r->stalled = stalled;
            return;
        }
    }
}

/* The running jobs per question and model, split as v_progress splits them, at now_ms. */
static gboolean progress_leases(DqStore *s, gint64 now_ms, GPtrArray *rows, GError **err) {
    PG_DISPATCH(s, return pgjobs_progress_leases(s, now_ms, rows, err));
    sqlite3_stmt *st =
        stmt(s,
             "SELECT q.text, j.model_id, coalesce(sum(j.lease_expires_ms >= ?1), 0), "
             "coalesce(sum(j.lease_expires_ms < ?1), 0) FROM jobs j "
             "JOIN questions q ON q.id = j.question_id WHERE j.state = 'running' "
             "GROUP BY j.question_id, j.model_id",
             err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_int64(st, 1, now_ms);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        store_jobs_progress_set_leases(rows, (const char *)sqlite3_column_text(st, 0),
                                       (const char *)sqlite3_column_text(st, 1),
                                       sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return db_fail(s, err, "counting running jobs");
    return TRUE;
}

GPtrArray *store_jobs_progress_at(DqStore *s, gint64 now_ms, GError **err) {
    GPtrArray *rows = store_jobs_progress(s, err);
    if (rows == NULL)
        return NULL;
    /* Every row's running jobs are counted again below; a row none is left in has none. */
    for (guint i = 0; i < rows->len; i++) {
        DqProgressRow *r = g_ptr_array_index(rows, i);
        r->running = r->stalled = 0;
    }
    if (!progress_leases(s, now_ms, rows, err)) {
        g_ptr_array_free(rows, TRUE);
        return NULL;
    }
    return rows;
}

void dq_answer_engine_free(DqAnswerEngine *e) {
    if (e == NULL)
        return;
    g_free(e->device);
    g_free(e->weights);
    g_free(e);
}

static gpointer answer_engine_row(sqlite3_stmt *st) {
    DqAnswerEngine *e = g_new0(DqAnswerEngine, 1);
    e->device = col_dup(st, 0);
    e->weights = col_dup(st, 1);
    e->exact = col_int_or(st, 2, -1);
    e->answers = sqlite3_column_int64(st, 3);
    e->pending = sqlite3_column_int64(st, 4);
    return e;
}

GPtrArray *store_jobs_answer_engines(DqStore *s, GError **err) {
    PG_DISPATCH(s, return pgjobs_answer_engines(s, err));
    sqlite3_stmt *st = stmt(
        s,
        "SELECT a.device, a.weights, a.exact, count(*) AS n, "
        "coalesce(sum(j.state IN ('queued', 'running')), 0) "
        "FROM answers a JOIN jobs j ON j.id = a.job_id "
        "GROUP BY a.device, a.weights, a.exact "
        "ORDER BY n DESC, device IS NULL, device, weights IS NULL, weights, exact IS NULL, exact",
        err);
    if (st == NULL)
        return NULL;
    return read_rows(s, st, answer_engine_row, (GDestroyNotify)dq_answer_engine_free,
                     "counting answers", err);
}

void dq_model_snapshot_free(DqModelSnapshot *m) {
    if (m == NULL)
        return;
    g_free(m->model_id);
    g_free(m->fingerprint);
    g_free(m);
}

static gpointer model_snapshot_row(sqlite3_stmt *st) {
    DqModelSnapshot *m = g_new0(DqModelSnapshot, 1);
    m->model_id = col_dup(st, 0);
    m->fingerprint = col_dup(st, 1);
    m->answers = sqlite3_column_int64(st, 2);
    return m;
}

GPtrArray *store_jobs_model_snapshots(DqStore *s, const char *model_id, GError **err) {
    PG_DISPATCH(s, return pgjobs_model_snapshots(s, model_id, err));
    sqlite3_stmt *st = stmt(s,
                            "SELECT model_id, model_fingerprint, count(*) AS n FROM answers "
                            "WHERE (?1 IS NULL OR model_id = ?1) AND model_fingerprint IS NOT NULL "
                            "GROUP BY model_id, model_fingerprint "
                            "ORDER BY model_id, n DESC, model_fingerprint",
                            err);
    if (st == NULL)
        return NULL;
    bind_text(st, 1, model_id);
    return read_rows(s, st, model_snapshot_row, (GDestroyNotify)dq_model_snapshot_free,
                     "counting answers per snapshot", err);
}

#define EACH_ANSWER_SQL(VIEW, ASKED, RANGE)                                                        \
    "SELECT " DQ_ANSWER_ROW_COLUMNS ", " ASKED " FROM " VIEW " WHERE (?1 IS NULL OR question IN "  \
    "(SELECT text FROM questions WHERE id IN (SELECT value FROM json_each(?1)))) AND (?4 IS NULL " \
    "OR document_id IN (SELECT value FROM json_each(?4)))" RANGE                                   \
    " ORDER BY document_path, document_id, page, question, job_id"
/* From the answers' commit order (schema 0012), not from the view, whose rows an index on
 * answers would not reach. */
#define IN_RANGE                                                                                   \
    " AND job_id IN (SELECT job_id FROM answers WHERE commit_seq > ?2 AND commit_seq <= ?3)"

gboolean store_jobs_each_answer(DqStore *s, const GArray *question_ids, gboolean current,
                                const DqAnswerRange *range, const GArray *document_ids,
                                DqAnswerRowFn fn, void *user, GError **err) {
    PG_DISPATCH(
        s, return pgjobs_each_answer(s, question_ids, current, range, document_ids, fn, user, err));
    static const char *const sql[2][2] = {
        {EACH_ANSWER_SQL("v_answers", "NULL, NULL", ""),
         EACH_ANSWER_SQL("v_answers", "NULL, NULL", IN_RANGE)},
        {EACH_ANSWER_SQL("v_current_answers", DQ_ANSWER_ROW_ASKED_COLUMNS, ""),
         EACH_ANSWER_SQL("v_current_answers", DQ_ANSWER_ROW_ASKED_COLUMNS, IN_RANGE)},
    };
    /* Not a cached statement, so that it cannot be in use twice. */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(dq_store_sqlite(s), sql[current != FALSE][range != NULL], -1, &st,
                           NULL) != SQLITE_OK)
        return db_fail(s, err, "reading answers");
    if (range != NULL) {
        sqlite3_bind_int64(st, 2, range->after);
        sqlite3_bind_int64(st, 3, range->upto);
    }
    if (question_ids != NULL)
        sqlite3_bind_text(st, 1,
                          store_jobs_id_list((const gint64 *)(void *)question_ids->data,
                                             (int)question_ids->len, '[', ']'),
                          -1, g_free);
    if (document_ids != NULL)
        sqlite3_bind_text(st, 4,
                          store_jobs_id_list((const gint64 *)(void *)document_ids->data,
                                             (int)document_ids->len, '[', ']'),
                          -1, g_free);
    gboolean ok = TRUE;
    int rc;
    while (ok && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        DqAnswerRow row = {
            .document_path = (const char *)sqlite3_column_text(st, 0),
            .page = sqlite3_column_int(st, 1),
            .question = (const char *)sqlite3_column_text(st, 2),
            .answer = (const char *)sqlite3_column_text(st, 3),
            .model = (const char *)sqlite3_column_text(st, 4),
            .finished_at = (const char *)sqlite3_column_text(st, 5),
            .document_id = sqlite3_column_int64(st, 6),
            .document_sha256 = (const char *)sqlite3_column_text(st, 7),
            .job_id = sqlite3_column_int64(st, 8),
            .device = (const char *)sqlite3_column_text(st, 9),
            .weights = (const char *)sqlite3_column_text(st, 10),
            .exact = col_int_or(st, 11, -1),
            .n_res = col_int_or(st, 12, -1),
            .tile = col_int_or(st, 13, -1),
            .longest_edge = col_int_or(st, 14, -1),
            .prompt = (const char *)sqlite3_column_text(st, 15),
            .max_new_tokens = col_int_or(st, 16, -1),
            .do_sample = col_int_or(st, 17, -1),
            .model_fingerprint = (const char *)sqlite3_column_text(st, 18),
            .page_id = sqlite3_column_int64(st, 19),
            .generated_tokens = sqlite3_column_int(st, 20),
            .ms_total =
                sqlite3_column_type(st, 21) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 21),
            .asked_document_id = sqlite3_column_int64(st, 22),
            .asked_path = (const char *)sqlite3_column_text(st, 23),
        };
        ok = fn(&row, user, err);
    }
    if (ok && rc != SQLITE_DONE)
        ok = db_fail(s, err, "reading answers");
    sqlite3_finalize(st);
    return ok;
}

gboolean store_jobs_commit_checkpoint(DqStore *s, gint64 *checkpoint, GError **err) {
    PG_DISPATCH(s, return pgjobs_commit_checkpoint(s, checkpoint, err));
    gboolean found = FALSE;
    *checkpoint = 0;
    sqlite3_stmt *st = stmt(s, "SELECT last FROM answer_commit_seq WHERE id = 1", err);
    if (st == NULL)
        return FALSE;
    int rc = sqlite3_step(st);
    found = rc == SQLITE_ROW;
    if (found)
        *checkpoint = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_fail(s, err, "reading the answers' commit checkpoint");
    return found || store_jobs_checkpoint_lost(s, err);
}

gboolean store_jobs_checkpoint_lost(DqStore *s, GError **err) {
    return dq_fail(err, DQ_ERR_DB,
                   "%s: answer_commit_seq has no row (deleted by hand?): the answers' commit "
                   "order is lost; put it back with INSERT INTO answer_commit_seq VALUES (1, "
                   "(SELECT coalesce(max(commit_seq), 0) FROM answers))",
                   dq_store_path(s));
}

/* ---- withdrawing work, and queueing it again ---- */

void dq_job_group_free(DqJobGroup *g) {
    if (g == NULL)
        return;
    g_free(g->question);
    g_free(g->model_id);
    g_free(g);
}

char *store_jobs_state_list(guint states, gboolean json) {
    GString *g = g_string_new(json ? "[" : "{");
    for (int i = 0; i < DQ_JOB_N_STATES; i++)
        if (states & (1u << i))
            g_string_append_printf(g, "%s%s%s%s", g->len > 1 ? "," : "", json ? "\"" : "",
                                   dq_job_state_name(i), json ? "\"" : "");
    g_string_append_c(g, json ? ']' : '}');
    return g_string_free(g, FALSE);
}

/* The jobs a DqJobFilter takes, as SQL over `jobs j`: ?1 the states (a JSON list of names), ?2
 * the question ids, ?3 the model id, ?4 the document ids (JSON lists; NULL: any), ?5 the done
 * jobs' DqDoneJobs bits, ?6 the current fingerprint. A document takes the jobs made for its
 * pages' content, whichever document's page they hang on. The one place for cancel's and
 * requeue's; store_jobs_pg.c has its PostgreSQL twin. The documents' pages are one uncorrelated
 * set: as an EXISTS per job, SQLite read the JSON list again for every job (cancel --where over
 * 20,000 of 50,000 documents, 200,000 jobs: 214 s, against 0.2 s as a set). */
#define JOB_FILTER_SQL                                                                             \
    "FROM jobs j WHERE j.state IN (SELECT value FROM json_each(?1)) "                              \
    "AND (j.state <> 'done' OR ?5 & 2 OR EXISTS (SELECT 1 FROM answers a WHERE a.job_id = j.id "   \
    "AND ((?5 & 1 AND a.exact = 0) OR (?5 & 4 AND (a.model_fingerprint IS NULL OR "                \
    "substr(a.model_fingerprint, 1, length(?6)) <> ?6))))) "                                       \
    "AND (?2 IS NULL OR j.question_id IN (SELECT value FROM json_each(?2))) "                      \
    "AND (?3 IS NULL OR j.model_id = ?3) "                                                         \
    "AND (?4 IS NULL OR j.page_id IN (SELECT jp.id FROM pages jp JOIN documents jd ON jd.id = "    \
    "jp.document_id JOIN documents d ON d.sha256 = jd.sha256 JOIN pages p ON p.document_id = "     \
    "d.id AND p.page_number = jp.page_number AND p.render_settings = jp.render_settings "          \
    "WHERE d.id IN (SELECT value FROM json_each(?4))))"

static void bind_filter(sqlite3_stmt *st, const DqJobFilter *f) {
    sqlite3_bind_text(st, 1, store_jobs_state_list(f->states, TRUE), -1, g_free);
    if (f->n_question_ids > 0)
        sqlite3_bind_text(st, 2, store_jobs_id_list(f->question_ids, f->n_question_ids, '[', ']'),
                          -1, g_free);
    bind_text(st, 3, f->model_id);
    if (f->documents_given)
        sqlite3_bind_text(st, 4, store_jobs_id_list(f->document_ids, f->n_document_ids, '[', ']'),
                          -1, g_free);
    sqlite3_bind_int(st, 5, (int)(f->done ? f->done : DQ_DONE_APPROXIMATE));
    bind_text(st, 6, f->fingerprint);
}

static gpointer job_group_row(sqlite3_stmt *st) {
    DqJobGroup *g = g_new0(DqJobGroup, 1);
    g->question = col_dup(st, 0);
    g->model_id = col_dup(st, 1);
    g->state = store_jobs_state_from_name((const char *)sqlite3_column_text(st, 2));
    g->answered = sqlite3_column_int(st, 3) != 0;
    g->jobs = sqlite3_column_int64(st, 4);
    return g;
}

/* Cancel's and requeue's common course: the jobs `filter` takes, counted by question, model,
 * state and answered, then `update` (an UPDATE of jobs ending in JOB_FILTER_SQL's ids) unless
 * dry_run. One write transaction: what is counted is what is changed (no worker completes a job
 * between the two statements). */
static GPtrArray *change_jobs(DqStore *s, const DqJobFilter *filter, gboolean dry_run,
                              const char *update, const char *what, GError **err) {
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)dq_job_group_free);
    if (!dry_run && !begin(s, err))
        goto fail;
    sqlite3_stmt *st = stmt(s,
                            "SELECT q.text, j.model_id, j.state, EXISTS (SELECT 1 FROM answers a "
                            "WHERE a.job_id = j.id) AS answered, count(*) "
                            "FROM (SELECT j.* " JOB_FILTER_SQL ") j "
                            "LEFT JOIN questions q ON q.id = j.question_id "
                            "GROUP BY j.question_id, j.model_id, j.state, answered "
                            "ORDER BY j.question_id, j.model_id, j.state, answered",
                            err);
    if (st == NULL)
        goto fail;
    bind_filter(st, filter);
    if (!append_rows(s, st, out, job_group_row, "selecting jobs", err))
        goto fail;
    if (dry_run || out->len == 0) {
        rollback(s);
        return out;
    }
    if ((st = stmt(s, update, err)) == NULL)
        goto fail;
    bind_filter(st, filter);
    if (!step_done(s, st, what, err) || !commit(s, err))
        goto fail;
    return out;
fail:
    rollback(s);
    g_ptr_array_free(out, TRUE);
    return NULL;
}

GPtrArray *store_jobs_cancel(DqStore *s, const DqJobFilter *filter, gboolean dry_run,
                             GError **err) {
    PG_DISPATCH(s, return pgjobs_cancel(s, filter, dry_run, err));
    return change_jobs(s, filter, dry_run, DQ_SQL_CANCEL(NOW_ISO, JOB_FILTER_SQL),
                       "cancelling jobs", err);
}

GPtrArray *store_jobs_requeue(DqStore *s, const DqJobFilter *filter, gboolean dry_run,
                              GError **err) {
    PG_DISPATCH(s, return pgjobs_requeue(s, filter, dry_run, err));
    return change_jobs(s, filter, dry_run, DQ_SQL_REQUEUE(JOB_FILTER_SQL), "requeueing jobs", err);
}

gboolean store_jobs_where_documents(DqStore *s, const char *where, GArray *ids, GError **err) {
    PG_DISPATCH(s, return pgjobs_where_documents(s, where, ids, err));
    return where_document_ids(s, where, FALSE, ids, err);
}

/* One integer from a cached statement with one bound parameter (text, or an integer when text is
 * NULL); *found FALSE when it returns no row. */
static gboolean query_one(DqStore *s, const char *sql, const char *text, gint64 number,
                          gint64 *value, gboolean *found, const char *what, GError **err) {
    sqlite3_stmt *st = stmt(s, sql, err);
    if (st == NULL)
        return FALSE;
    if (text != NULL)
        bind_text(st, 1, text);
    else
        sqlite3_bind_int64(st, 1, number);
    int rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW)
        *value = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_fail(s, err, what);
    return TRUE;
}

gboolean store_jobs_document_exists(DqStore *s, gint64 id, gboolean *exists, GError **err) {
    PG_DISPATCH(s, return pgjobs_document_exists(s, id, exists, err));
    gint64 v = 0;
    return query_one(s, "SELECT 1 FROM documents WHERE id = ?1", NULL, id, &v, exists,
                     "finding a document", err);
}

gboolean store_jobs_find_question(DqStore *s, const char *text, gint64 *id, GError **err) {
    PG_DISPATCH(s, return pgjobs_find_question(s, text, id, err));
    gboolean found = FALSE;
    *id = 0;
    /* A row without jobs is no question asked: an interrupted `ask` of an older version left
     * it (schema 0015, whose index jobs_question finds the jobs). */
    return query_one(s,
                     "SELECT q.id FROM questions q WHERE q.text = ?1 AND EXISTS (SELECT 1 FROM "
                     "jobs j WHERE j.question_id = q.id)",
                     text, 0, id, &found, "finding a question", err);
}

gboolean store_jobs_model_known(DqStore *s, const char *model_id, gboolean *known, GError **err) {
    PG_DISPATCH(s, return pgjobs_model_known(s, model_id, known, err));
    gint64 v = 0;
    return query_one(s, "SELECT 1 FROM jobs WHERE model_id = ?1 LIMIT 1", model_id, 0, &v, known,
                     "finding a model's jobs", err);
}
