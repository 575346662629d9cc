/* PostgreSQL implementation of store_jobs.h. Life cycle: jobs/queue.h; the SQLite twin is
 * store_jobs.c and every function here keeps its contract.
 *
 * Concurrency differs from SQLite, where one writer at a time holds the whole file: here many
 * workers on many machines run at once under READ COMMITTED, so every statement that picks jobs
 * (claim, reclaim) locks the rows it takes with FOR UPDATE SKIP LOCKED, and every statement that
 * finishes one is guarded by `lease_owner = $owner AND state = 'running'`, re-checked by
 * PostgreSQL on the row's newest version when it was changed concurrently. */
#include "store_jobs_pg.h"

#include "clock.h"
#include "dq_error.h"
#include "store_internal.h"
#include "store_pg.h"

#include <math.h>
#include <string.h>

/* One element of a list, made from row i of r. */
typedef gpointer (*PgRowFn)(PGresult *r, int i);

/* Runs `sql` and adds an element made by `row` to `out` for each of its rows; FALSE, with err
 * saying `what` was being read, when it fails (as store_jobs.c's append_rows). */
static gboolean append_rows(DqStore *s, const char *sql, PgParams *p, const char *what,
                            GPtrArray *out, PgRowFn row, GError **err) {
    PGresult *r = pg_run(s, sql, p, what, err);
    if (r == NULL)
        return FALSE;
    for (int i = 0; i < PQntuples(r); i++)
        g_ptr_array_add(out, row(r, i));
    PQclear(r);
    return TRUE;
}

/* append_rows into a new list whose elements `free_row` frees; NULL when it fails. */
static GPtrArray *read_rows(DqStore *s, const char *sql, PgParams *p, const char *what, PgRowFn row,
                            GDestroyNotify free_row, GError **err) {
    GPtrArray *out = g_ptr_array_new_with_free_func(free_row);
    if (append_rows(s, sql, p, what, out, row, err))
        return out;
    g_ptr_array_free(out, TRUE);
    return NULL;
}

/* ---- asking ---- */

/* The tables a query reads, from its plan: every "Relation Name" of EXPLAIN's JSON. */
static gboolean plan_reads_only_documents(PGresult *r) {
    const char *plan = PQgetvalue(r, 0, 0);
    static const char key[] = "\"Relation Name\": \"";
    for (const char *p = strstr(plan, key); p != NULL; p = strstr(p + 1, key))
        if (!g_str_has_prefix(p + strlen(key), "documents\""))
            return FALSE;
    return TRUE;
}

/* The user's --where expression: sent alone through the extended protocol (which refuses more
 * than one statement) inside a READ ONLY transaction, so it can read but never write; and, as
 * SQLite's authorizer does, refused when its plan reads any table but documents. */
static gboolean where_document_ids(DqStore *s, const char *where, gboolean newest_only, GArray *ids,
                                   GError **err) {
    char *sql = store_jobs_where_sql(where, newest_only);
    gboolean ok = FALSE;
    if (!store_pg_exec(s, "BEGIN READ ONLY", err))
        goto out;
    char *explain = g_strconcat("EXPLAIN (FORMAT JSON) ", sql, NULL);
    PGresult *r = PQexecParams(dq_store_pg(s), explain, 0, NULL, NULL, NULL, NULL, 0);
    g_free(explain);
    /* An expression the server refuses fails here first, with the reason (an unknown column, a
     * syntax error): the query below would only hear that the transaction is aborted. */
    gboolean planned = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (planned && !plan_reads_only_documents(r)) {
        dq_fail(err, DQ_ERR_ARGS,
                "--where '%s': may read the documents table only (an SQL expression over its "
                "columns, e.g. \"path LIKE '%%/2024/%%'\")",
                where);
        PQclear(r);
        pg_rollback(s);
        goto out;
    }
    if (planned) {
        PQclear(r);
        r = PQexecParams(dq_store_pg(s), sql, 0, NULL, NULL, NULL, NULL, 0);
    }
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        /* the server's one-line reason: the full message quotes the statement (EXPLAIN's) */
        const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        char *m = g_strchomp(g_strdup(primary ? primary : PQresultErrorMessage(r)));
        dq_fail(err, DQ_ERR_ARGS,
                "--where '%s': %s (an SQL expression over the columns of documents, e.g. "
                "\"path LIKE '%%/2024/%%'\")",
                where, m);
        g_free(m);
    } else {
        for (int i = 0; i < PQntuples(r); i++) {
            gint64 id = pg_get_i64(r, i, 0);
            g_array_append_val(ids, id);
        }
        ok = TRUE;
    }
    PQclear(r);
    pg_rollback(s);
out:
    g_free(sql);
    return ok;
}

static gpointer ask_page_row(PGresult *r, int row) {
    DqAskPage *a = g_new0(DqAskPage, 1);
    a->page_id = pg_get_i64(r, row, 0);
    a->document_id = pg_get_i64(r, row, 1);
    a->document_sha256 = pg_get_dup(r, row, 2);
    a->page_number = (int)pg_get_i64(r, row, 3);
    a->render_settings = pg_get_dup(r, row, 4);
    a->usable = strcmp(PQgetvalue(r, row, 5), "failed") != 0 && !PQgetisnull(r, row, 6);
    a->document_gone = strcmp(PQgetvalue(r, row, 7), "t") == 0;
    return a;
}

GPtrArray *pgjobs_select_pages(DqStore *s, const gint64 *document_ids, int n_ids,
                               const char *const *where_sql, int n_where, GError **err) {
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    GPtrArray *pages = g_ptr_array_new_with_free_func((GDestroyNotify)dq_ask_page_free);
    PGresult *r;
    PgParams p = {0};
    if (n_ids == 0 && n_where == 0) {
        if ((r = pg_run(s,
                        "SELECT id FROM documents d WHERE version = (SELECT max(version) FROM "
                        "documents d2 WHERE d2.path = d.path)",
                        NULL, "listing documents", err)) == NULL)
            goto fail;
        for (int i = 0; i < PQntuples(r); i++) {
            gint64 id = pg_get_i64(r, i, 0);
            g_array_append_val(ids, id);
        }
        PQclear(r);
    }
    for (int i = 0; i < n_ids; i++) {
        pg_i64(&p, document_ids[i]);
        if ((r = pg_run(s,
                        "SELECT path, status = 'failed', error_code, error_message FROM documents "
                        "WHERE id = $1",
                        &p, "finding a document", err)) == NULL)
            goto fail;
        gboolean exists = PQntuples(r) > 0;
        gboolean ok = store_jobs_document_askable(
            s, document_ids[i], exists, exists ? PQgetvalue(r, 0, 0) : NULL,
            exists && strcmp(PQgetvalue(r, 0, 1), "t") == 0, exists ? pg_get_text(r, 0, 2) : NULL,
            exists ? pg_get_text(r, 0, 3) : NULL, err);
        PQclear(r);
        if (!ok)
            goto fail;
        g_array_append_val(ids, document_ids[i]);
    }
    for (int i = 0; i < n_where; i++)
        if (!where_document_ids(s, where_sql[i], TRUE, ids, err))
            goto fail;
    g_array_sort(ids, store_jobs_cmp_id);
    for (guint i = 0; i < ids->len; i++) {
        gint64 id = g_array_index(ids, gint64, i);
        if (i > 0 && id == g_array_index(ids, gint64, i - 1))
            continue;
        pg_i64(&p, id);
        if (!append_rows(s,
                         "SELECT p.id, d.id, d.sha256, p.page_number, p.render_settings, p.status, "
                         "p.image_sha256, d.missing_since IS NOT NULL FROM pages p JOIN documents "
                         "d ON d.id = p.document_id "
                         "WHERE d.id = $1 ORDER BY p.page_number, p.id",
                         &p, "reading pages", pages, ask_page_row, err))
            goto fail;
    }
    g_array_free(ids, TRUE);
    return pages;
fail:
    g_array_free(ids, TRUE);
    g_ptr_array_free(pages, TRUE);
    return NULL;
}

gboolean pgjobs_question_id(DqStore *s, const char *text, gint64 *id, GError **err) {
    PgParams p = {0};
    pg_text(&p, text);
    /* Only a question not there yet reaches the INSERT: one that reached it and hit the
     * conflict would still spend an identity value, and asking again, which adds nothing,
     * would leave PostgreSQL's ids ahead of SQLite's for the same history. ON CONFLICT stays
     * for two processes adding the same question at once. */
    if (!pg_do(s,
               "INSERT INTO questions (text) SELECT $1::text WHERE NOT EXISTS "
               "(SELECT 1 FROM questions WHERE text = $1::text) ON CONFLICT (text) DO NOTHING",
               &p, "adding a question", NULL, err))
        return FALSE;
    pg_text(&p, text);
    PGresult *r =
        pg_run(s, "SELECT id FROM questions WHERE text = $1", &p, "finding a question", err);
    if (r == NULL)
        return FALSE;
    gboolean ok = PQntuples(r) == 1;
    if (ok)
        *id = pg_get_i64(r, 0, 0);
    else
        dq_fail(err, DQ_ERR_DB, "%s: finding a question: not found", dq_store_path(s));
    PQclear(r);
    return ok;
}

gboolean pgjobs_enqueue(DqStore *s, const DqNewJob *jobs, int n, int *added, GError **err) {
    int count = 0;
    /* question text -> its id, each looked up once */
    GHashTable *question_ids = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
    if (!pg_begin(s, err)) {
        g_hash_table_destroy(question_ids);
        return FALSE;
    }
    /* A job already asked is not inserted at all (see pgjobs_question_id: no identity value
     * spent on it). */
    for (int i = 0; i < n; i++) {
        gint64 question_id;
        if (!store_new_job_question(s, &jobs[i], question_ids, &question_id, err))
            goto fail;
        PgParams p = {0};
        pg_i64(&p, jobs[i].page_id);
        pg_i64(&p, question_id);
        pg_text(&p, jobs[i].model_id);
        pg_text(&p, jobs[i].generation_settings);
        pg_text(&p, jobs[i].job_key);
        pg_i64(&p, jobs[i].max_attempts);
        gint64 changed = 0;
        if (!pg_do(s,
                   "INSERT INTO jobs (page_id, question_id, model_id, generation_settings, "
                   "job_key, max_attempts) SELECT $1::bigint, $2::bigint, $3::text, $4::text, "
                   "$5::text, $6::integer WHERE NOT EXISTS "
                   "(SELECT 1 FROM jobs WHERE job_key = $5::text) "
                   "ON CONFLICT (job_key) DO NOTHING",
                   &p, "adding a job", &changed, err))
            goto fail;
        count += (int)changed;
    }
    if (!pg_commit(s, err))
        goto fail;
    g_hash_table_destroy(question_ids);
    if (added)
        *added = count;
    return TRUE;
fail:
    pg_rollback(s);
    g_hash_table_destroy(question_ids);
    return FALSE;
}

/* ---- working ---- */

/* One claim: who claims for which model, the time it compares leases with, and what it comes to
 * (the jobs claimed, and those buried on the way), as store_jobs.c's Claim. */
typedef struct {
    DqStore *s;
    const char *owner, *model_id;
    int limit;
    gint64 now_ms, lease_ms; /* now_ms in the server's time once the transaction is open */
    GArray *dead;            /* gint64: jobs buried by their expired lease */
    GPtrArray *out;          /* DqClaimedJob * */
} Claim;

/* Expired leases, recorded and requeued (or buried) in one statement, never the claimant's own
 * (store_jobs.c says why). SKIP LOCKED: two workers reclaiming at once split the expired jobs
 * instead of recording one twice. */
static gboolean reclaim_expired(Claim *c, GError **err) {
    PgParams p = {0};
    pg_i64(&p, c->now_ms);
    pg_text(&p, c->model_id);
    pg_text(&p, c->owner);
    /* A job with an answer (requeued approximate) goes back to done: DQ_SQL_HAS_ANSWER. */
    PGresult *r =
        pg_run(c->s,
               "WITH expired AS (SELECT id, attempts, lease_owner FROM jobs "
               "WHERE state = 'running' AND lease_expires_ms < $1 AND model_id = $2 "
               "AND lease_owner <> $3 FOR UPDATE SKIP LOCKED), "
               "recorded AS (INSERT INTO job_errors (job_id, attempt, worker, kind, message) "
               "SELECT id, attempts, lease_owner, " DQ_SQL_LEASE_EXPIRED_KIND
               ", " DQ_SQL_LEASE_EXPIRED_MESSAGE " FROM expired) "
               "UPDATE jobs j SET state = CASE WHEN j.attempts >= j.max_attempts AND EXISTS "
               "(SELECT 1 FROM answers a WHERE a.job_id = j.id) THEN 'done' "
               "WHEN j.attempts >= j.max_attempts THEN 'dead' ELSE 'queued' END, "
               "finished_at = CASE WHEN j.attempts >= j.max_attempts THEN coalesce((SELECT "
               "a.finished_at FROM answers a WHERE a.job_id = j.id), docqa_now_iso()) END, "
               "lease_owner = NULL, lease_expires_ms = NULL, not_before_ms = 0, "
               "last_error = " DQ_SQL_LEASE_EXPIRED_ERROR " "
               "FROM expired WHERE j.id = expired.id RETURNING j.id, j.state",
               &p, "reclaiming expired leases", err);
    if (r == NULL)
        return FALSE;
    for (int i = 0; i < PQntuples(r); i++)
        if (strcmp(PQgetvalue(r, i, 1), "dead") == 0) {
            gint64 id = pg_get_i64(r, i, 0);
            g_array_append_val(c->dead, id);
        }
    PQclear(r);
    return TRUE;
}

/* A claimed job with what its worker needs, from a row of claim_ready's statement: its page,
 * document and question (or which of them is gone). */
static gpointer claimed_job_row(PGresult *r, int i) {
    DqClaimedJob *j = g_new0(DqClaimedJob, 1);
    j->job_id = pg_get_i64(r, i, 0);
    j->page_id = pg_get_i64(r, i, 1);
    j->document_id = pg_get_i64(r, i, 2);
    j->document_path = pg_get_dup(r, i, 3);
    j->page_number = (int)pg_get_i64(r, i, 4);
    j->render_settings = pg_get_dup(r, i, 5);
    j->image_sha256 = pg_get_dup(r, i, 6);
    j->question = pg_get_dup(r, i, 7);
    j->model_id = pg_get_dup(r, i, 8);
    j->generation_settings = pg_get_dup(r, i, 9);
    j->attempt = (int)pg_get_i64(r, i, 10);
    j->max_attempts = (int)pg_get_i64(r, i, 11);
    j->missing = store_jobs_missing(PQgetvalue(r, i, 12)[0] == 't', PQgetvalue(r, i, 13)[0] == 't',
                                    PQgetvalue(r, i, 14)[0] == 't');
    return j;
}

/* Up to `limit` queued jobs of the model in id order, passing over rows another worker is
 * claiming right now (SKIP LOCKED), leased and read with what the worker needs in one statement
 * (SQLite's claim_ready and read_claimed_job together). */
static gboolean claim_ready(Claim *c, GError **err) {
    PgParams p = {0};
    pg_text(&p, c->owner);
    pg_i64(&p, c->now_ms + c->lease_ms);
    pg_text(&p, c->model_id);
    pg_i64(&p, c->now_ms);
    pg_i64(&p, c->limit);
    return append_rows(c->s,
                       "WITH claimed AS (UPDATE jobs SET state = 'running', lease_owner = $1, "
                       "lease_expires_ms = $2, attempts = attempts + 1 "
                       "WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND model_id = $3 "
                       "AND not_before_ms <= $4 ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED) "
                       "RETURNING id, page_id, question_id, model_id, generation_settings, "
                       "attempts, max_attempts) "
                       "SELECT c.id, c.page_id, p.document_id, d.path, p.page_number, "
                       "p.render_settings, p.image_sha256, q.text, c.model_id, "
                       "c.generation_settings, c.attempts, c.max_attempts, p.id IS NULL, "
                       "d.id IS NULL, q.id IS NULL "
                       "FROM claimed c LEFT JOIN pages p ON p.id = c.page_id "
                       "LEFT JOIN documents d ON d.id = p.document_id "
                       "LEFT JOIN questions q ON q.id = c.question_id ORDER BY c.id",
                       &p, "claiming jobs", c->out, claimed_job_row, err);
}

/* The claim's transaction: expired leases reclaimed, ready jobs leased and read. */
static gboolean claim_in_transaction(Claim *c, GError **err) {
    if (!pg_clock_check(c->s, err) || !pg_begin(c->s, err))
        goto fail;
    c->now_ms =
        pg_server_ms(c->s, c->now_ms); /* every worker compares leases in the server's time */
    if (!reclaim_expired(c, err) || !claim_ready(c, err))
        goto fail;
    store_jobs_hook("claim:before_commit");
    store_jobs_hook("commit");
    if (!pg_commit(c->s, err))
        goto fail;
    return TRUE;
fail:
    pg_rollback(c->s);
    return FALSE;
}

GPtrArray *pgjobs_claim(DqStore *s, const char *owner, const char *model_id, int limit,
                        gint64 now_ms, gint64 lease_ms, GArray *buried_ids, GError **err) {
    Claim c = {.s = s,
               .owner = owner,
               .model_id = model_id,
               .limit = limit,
               .now_ms = now_ms,
               .lease_ms = lease_ms,
               .dead = g_array_new(FALSE, FALSE, sizeof(gint64)),
               .out = g_ptr_array_new_with_free_func((GDestroyNotify)dq_claimed_job_free)};
    gboolean ok = claim_in_transaction(&c, err);
    if (ok && buried_ids)
        g_array_append_vals(buried_ids, c.dead->data, c.dead->len);
    g_array_free(c.dead, TRUE);
    if (!ok) {
        g_ptr_array_free(c.out, TRUE);
        return NULL;
    }
    return c.out;
}

/* Lock order, table before rows: a transaction that will update jobs takes the table's lock
 * for writing (ROW EXCLUSIVE, which writers share) before it locks any row. A row locked first,
 * by SELECT ... FOR UPDATE, holds the table only for reading (ROW SHARE), which lets a cancel or
 * a requeue take its SHARE ROW EXCLUSIVE lock (change_jobs) and wait for that row, while the
 * worker's UPDATE waits for the cancel's table lock: "deadlock detected", the cancel failed or
 * the worker stopped. Taken first, the worker's lock makes the cancel wait for its commit, or
 * waits for the cancel's, holding nothing the cancel needs. */
static gboolean lock_jobs_for_writing(DqStore *s, GError **err) {
    /* pg_do, as every worker statement: a wait here stops when the worker is told to stop */
    return pg_do(s, "LOCK TABLE jobs IN ROW EXCLUSIVE MODE", NULL, "locking the jobs table", NULL,
                 err);
}

/* Lock order: every statement that changes several leased jobs first locks them in id order
 * (heartbeat, complete, release run on different connections of one worker at once); without
 * it a heartbeat and a completion each hold a row the other wants: a deadlock. */
static gboolean lock_owned(DqStore *s, const char *owner, GError **err) {
    PgParams p = {0};
    pg_text(&p, owner);
    return lock_jobs_for_writing(s, err) &&
           pg_do(s,
                 "SELECT id FROM jobs WHERE lease_owner = $1 AND state = 'running' ORDER BY id "
                 "FOR UPDATE",
                 &p, "locking leased jobs", NULL, err);
}

gboolean pgjobs_heartbeat(DqStore *s, const char *owner, gint64 now_ms, gint64 lease_ms,
                          const gint64 *in_flight, int n_in_flight, GArray *gone, int *held,
                          GError **err) {
    /* This machine's time as the call began: what passed from there until a row is written (row
     * locks waited for behind a completion or a cancel, a clock measure, a slow server) is added
     * to now_ms, as SQLite adds its wait for the write lock (store_jobs.c): a lease renewed from
     * before a long wait would be renewed to a time already past, and another worker's claim
     * would take a job whose worker is alive. */
    gint64 called_ms = dq_wall_ms();
    PgParams p = {0};
    gint64 n = 0;
    guint first_gone = gone ? gone->len : 0;
    if (!pg_clock_check(s, err) || !pg_begin(s, err) || !lock_owned(s, owner, err))
        goto fail;
    /* clock_timestamp(), not now(): the server's clock when the row is written, in the terms
     * leases are compared in (store_pg.h: the call's start mapped to the server's clock), never
     * less than what the caller asked for. Every row is locked by lock_owned above: the update
     * itself waits for none. */
    pg_i64(&p, pg_server_ms(s, now_ms) + lease_ms);
    pg_text(&p, owner);
    pg_i64(&p, pg_server_ms(s, called_ms));
    if (!pg_do(s,
               "UPDATE jobs SET lease_expires_ms = $1::bigint + greatest(0, "
               "(extract(epoch FROM clock_timestamp()) * 1000)::bigint - $3::bigint) "
               "WHERE lease_owner = $2 AND state = 'running'",
               &p, "extending leases", &n, err))
        goto fail;
    if (gone != NULL && n_in_flight > 0) {
        /* The jobs it no longer holds whose answer would not be kept (store_jobs.c,
         * GONE_FROM_WORKER). */
        char *list = store_jobs_id_list(in_flight, n_in_flight, '{', '}');
        pg_text(&p, list);
        g_free(list);
        pg_text(&p, owner);
        PGresult *r = pg_run(
            s,
            "SELECT f.id FROM unnest($1::bigint[]) AS f(id) WHERE NOT EXISTS "
            "(SELECT 1 FROM jobs WHERE jobs.id = f.id AND ((lease_owner = $2 "
            "AND state = 'running') OR (state IN ('queued', 'dead') AND NOT " DQ_SQL_HAS_ANSWER
            "))) ORDER BY f.id",
            &p, "looking for jobs no longer held", err);
        if (r == NULL)
            goto fail;
        for (int i = 0; i < PQntuples(r); i++) {
            gint64 id = pg_get_i64(r, i, 0);
            g_array_append_val(gone, id);
        }
        PQclear(r);
    }
    if (!pg_commit(s, err))
        goto fail;
    if (held)
        *held = (int)n;
    return TRUE;
fail:
    if (gone != NULL)
        g_array_set_size(gone, first_gone);
    pg_rollback(s);
    return FALSE;
}

/* The guard: only the lease holder may finish a job, or anyone a job nobody holds nor answered
 * (see store_jobs.c). *finished: whether the job was marked done. */
static gboolean finish_job(DqStore *s, const char *owner, const DqJobAnswer *a, gboolean *finished,
                           GError **err) {
    PgParams p = {0};
    pg_i64(&p, a->job_id);
    pg_text(&p, owner);
    pg_text(&p, a->finished_at);
    gint64 changed = 0;
    if (!pg_do(s,
               "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_expires_ms = NULL, "
               "finished_at = $3 WHERE id = $1 AND ((lease_owner = $2 AND state = 'running') "
               "OR (state IN ('queued', 'dead', 'cancelled') AND NOT " DQ_SQL_HAS_ANSWER "))",
               &p, "finishing a job", &changed, err))
        return FALSE;
    *finished = changed == 1;
    return TRUE;
}

/* This very answer, stored by an earlier try of this completion whose COMMIT reply the lost
 * connection took (store_jobs.h), is not a late one: *mine says whether it is there. */
static gboolean answer_stored(DqStore *s, const char *owner, const DqJobAnswer *a, gboolean *mine,
                              GError **err) {
    PgParams p = {0};
    pg_i64(&p, a->job_id);
    pg_text(&p, owner);
    pg_text(&p, a->finished_at);
    pg_text(&p, a->text);
    PGresult *r = pg_run(s,
                         "SELECT EXISTS (SELECT 1 FROM answers WHERE job_id = $1 AND "
                         "worker = $2 AND finished_at = $3 AND text = $4)",
                         &p, "looking for a stored answer", err);
    if (r == NULL)
        return FALSE;
    *mine = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return TRUE;
}

/* A requeued approximate answer (store_jobs_requeue) gives way to this one. */
static gboolean supersede_answer(DqStore *s, const DqJobAnswer *a, GError **err) {
    PgParams p = {0};
    pg_i64(&p, a->job_id);
    pg_text(&p, a->finished_at);
    gint64 changed = 0;
    if (!pg_do(s,
               "INSERT INTO answers_superseded (answer_id, " DQ_ANSWER_COLUMNS
               ", superseded_at) SELECT id, " DQ_ANSWER_COLUMNS
               ", $2 FROM answers WHERE job_id = $1",
               &p, "keeping a replaced answer", &changed, err))
        return FALSE;
    if (changed == 0) /* the job had no answer */
        return TRUE;
    pg_i64(&p, a->job_id);
    return pg_do(s, "DELETE FROM answers WHERE job_id = $1", &p, "keeping a replaced answer", NULL,
                 err);
}

static gboolean insert_answer(DqStore *s, const char *owner, const DqJobAnswer *a, GError **err) {
    PgParams p = {0};
    pg_i64(&p, a->job_id);
    pg_text(&p, a->text);
    pg_i64(&p, a->prompt_tokens);
    pg_i64(&p, a->generated_tokens);
    pg_text(&p, owner);
    pg_text(&p, a->started_at);
    pg_text(&p, a->finished_at);
    pg_dbl(&p, a->ms_image);
    pg_dbl(&p, a->ms_vision);
    pg_dbl(&p, a->ms_prefill);
    pg_dbl(&p, a->ms_decode);
    pg_dbl(&p, a->ms_total);
    pg_text(&p, a->device);
    pg_text(&p, a->weights);
    pg_text(&p, a->exact < 0 ? NULL : a->exact ? "1" : "0");
    pg_text(&p, a->model_fingerprint);
    return pg_do(s,
                 "INSERT INTO answers (" DQ_ANSWER_COLUMNS ") "
                 "SELECT id, $2, $3, $4, model_id, generation_settings, $5, $6, $7, $8, $9, "
                 "$10, $11, $12, $13, $14, $15::smallint, $16 FROM jobs WHERE id = $1",
                 &p, "storing an answer", NULL, err);
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
    store_jobs_hook("complete:after_job_update");
    if (!supersede_answer(s, a, err) || !insert_answer(s, owner, a, err))
        return FALSE;
    (*count)++;
    return TRUE;
}

gboolean pgjobs_complete(DqStore *s, const char *owner, const DqJobAnswer *answers, int n,
                         int *written, GError **err) {
    int count = 0;
    if (!pg_begin(s, err) || !lock_owned(s, owner, err))
        goto fail;
    for (int i = 0; i < n; i++)
        if (!complete_one(s, owner, &answers[i], &count, err))
            goto fail;
    store_jobs_hook("complete:before_commit");
    store_jobs_hook("commit");
    if (!pg_commit(s, err))
        goto fail;
    store_jobs_hook("complete:after_commit");
    if (written)
        *written = count;
    return TRUE;
fail:
    pg_rollback(s);
    return FALSE;
}

gboolean pgjobs_fail(DqStore *s, const char *owner, gint64 job_id, const char *kind,
                     const char *message, gboolean retryable, gint64 now_ms, gint64 backoff_ms,
                     DqJobState *new_state, GError **err) {
    DqJobState result = DQ_JOB_N_STATES;
    PgParams p = {0};
    /* As in pgjobs_heartbeat: a wait for the row's lock (behind a cancel or a completion) is
     * added to now_ms, so that the backoff runs from when the row is written. */
    gint64 called_ms = dq_wall_ms();
    if (!pg_clock_check(s, err) || !pg_begin(s, err))
        return FALSE;
    if (!lock_jobs_for_writing(s, err)) /* before the row's FOR UPDATE below (lock_owned) */
        goto fail;
    now_ms = pg_server_ms(s, now_ms); /* the backoff, as leases, in the server's time */
    pg_i64(&p, job_id);
    pg_text(&p, owner);
    pg_text(&p, kind);
    pg_text(&p, message);
    gint64 changed = 0;
    if (!pg_do(s,
               "INSERT INTO job_errors (job_id, attempt, worker, kind, message) "
               "SELECT id, attempts, lease_owner, $3, $4 FROM jobs "
               "WHERE id = $1 AND lease_owner = $2 AND state = 'running' FOR UPDATE",
               &p, "recording a job error", &changed, err))
        goto fail;
    if (changed == 1) {
        pg_i64(&p, job_id);
        pg_text(&p, owner);
        pg_bool(&p, retryable);
        pg_i64(&p, now_ms);
        pg_i64(&p, backoff_ms);
        pg_text(&p, kind);
        pg_text(&p, message);
        pg_i64(&p, pg_server_ms(s, called_ms));
        PGresult *r = pg_run(
            s,
            "UPDATE jobs SET state = CASE "
            "WHEN (NOT $3::boolean OR attempts >= max_attempts) AND " DQ_SQL_HAS_ANSWER
            " THEN 'done' WHEN NOT $3::boolean THEN 'failed' "
            "WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, "
            "not_before_ms = $4::bigint + greatest(0, (extract(epoch FROM clock_timestamp()) * "
            "1000)::bigint - $8::bigint) + least($5::bigint * (1::bigint << least(attempts - 1, "
            "20)), 3600000), "
            "finished_at = CASE WHEN NOT $3::boolean OR attempts >= max_attempts "
            "THEN coalesce(" DQ_SQL_ANSWER_FINISHED_AT ", docqa_now_iso()) END, "
            "lease_owner = NULL, lease_expires_ms = NULL, "
            "last_error = $6 || ': ' || $7 WHERE id = $1 AND lease_owner = $2 RETURNING state",
            &p, "marking a job failed", err);
        if (r == NULL)
            goto fail;
        if (PQntuples(r) == 1)
            result = store_jobs_state_from_name(PQgetvalue(r, 0, 0));
        PQclear(r);
    } else {
        /* Not leased: maybe because an earlier try of this very call committed unheard. */
        pg_i64(&p, job_id);
        pg_text(&p, owner);
        pg_text(&p, kind);
        pg_text(&p, message);
        PGresult *r = pg_run(s, SQL_FAILED_BEFORE("$1", "$2", "$3", "$4"), &p,
                             "looking for a recorded failure", err);
        if (r == NULL)
            goto fail;
        if (PQntuples(r) == 1)
            result = store_jobs_state_from_name(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    store_jobs_hook("fail:before_commit");
    if (!pg_commit(s, err))
        goto fail;
    if (new_state)
        *new_state = result;
    return TRUE;
fail:
    pg_rollback(s);
    return FALSE;
}

gboolean pgjobs_release_except(DqStore *s, const char *owner, const gint64 *keep, int n_keep,
                               int *released, GError **err) {
    PgParams p = {0};
    gint64 n = 0;
    if (!pg_begin(s, err) || !lock_owned(s, owner, err))
        goto fail;
    pg_text(&p, owner);
    char *list = store_jobs_id_list(keep, n_keep, '{', '}');
    pg_text(&p, list);
    g_free(list);
    if (!pg_do(s,
               "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_ms = NULL, "
               "attempts = greatest(attempts - 1, 0) WHERE lease_owner = $1 AND state = 'running' "
               "AND NOT (id = ANY ($2::bigint[]))",
               &p, "releasing jobs", &n, err) ||
        !pg_commit(s, err))
        goto fail;
    if (released)
        *released = (int)n;
    return TRUE;
fail:
    pg_rollback(s);
    return FALSE;
}

/* ---- reading ---- */

gboolean pgjobs_count_in_state(DqStore *s, const gint64 *ids, int n, DqJobState state,
                               gint64 *count, GError **err) {
    PgParams p = {0};
    char *list = store_jobs_id_list(ids, n, '{', '}');
    pg_text(&p, list);
    g_free(list);
    pg_text(&p, dq_job_state_name(state));
    PGresult *r =
        pg_run(s, "SELECT count(*) FROM jobs WHERE id = ANY ($1::bigint[]) AND state = $2", &p,
               "counting jobs", err);
    if (r == NULL)
        return FALSE;
    *count = pg_get_i64(r, 0, 0);
    PQclear(r);
    return TRUE;
}

gboolean pgjobs_counts(DqStore *s, const char *model_id, gint64 now_ms, DqJobCounts *c,
                       GError **err) {
    memset(c, 0, sizeof(*c));
    PgParams p = {0};
    pg_text(&p, model_id);
    PGresult *r = pg_run(s,
                         "SELECT state, count(*), count(*) FILTER (WHERE attempts > 0) FROM jobs "
                         "WHERE $1::text IS NULL OR model_id = $1 GROUP BY state",
                         &p, "counting jobs", err);
    if (r == NULL)
        return FALSE;
    for (int i = 0; i < PQntuples(r); i++) {
        DqJobState state = store_jobs_state_from_name(PQgetvalue(r, i, 0));
        gint64 n = pg_get_i64(r, i, 1);
        if (state < DQ_JOB_N_STATES)
            c->by_state[state] = n;
        if (state == DQ_JOB_QUEUED)
            c->retrying = pg_get_i64(r, i, 2);
        c->total += n;
    }
    PQclear(r);
    /* Leases are in the server's time (store_pg.h): now_ms taken there says which have
     * expired. */
    pg_text(&p, model_id);
    pg_i64(&p, pg_server_ms(s, now_ms));
    r = pg_run(s,
               "SELECT count(*) FROM jobs WHERE state = 'running' AND lease_expires_ms < "
               "$2::bigint AND ($1::text IS NULL OR model_id = $1)",
               &p, "counting stalled jobs", err);
    if (r == NULL)
        return FALSE;
    c->stalled = pg_get_i64(r, 0, 0);
    PQclear(r);
    if (model_id != NULL) {
        pg_text(&p, model_id);
        r = pg_run(s,
                   "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running') "
                   "AND model_id <> $1",
                   &p, "counting jobs", err);
        if (r == NULL)
            return FALSE;
        c->pending_other = pg_get_i64(r, 0, 0);
        PQclear(r);
    }
    return TRUE;
}

static gpointer model_pending_row(PGresult *r, int i) {
    DqModelPending *m = g_new0(DqModelPending, 1);
    m->model_id = pg_get_dup(r, i, 0);
    m->queued = pg_get_i64(r, i, 1);
    m->running = pg_get_i64(r, i, 2);
    return m;
}

GPtrArray *pgjobs_pending_models(DqStore *s, const char *except, int limit, GError **err) {
    PgParams p = {0};
    pg_text(&p, except);
    pg_i64(&p, limit);
    return read_rows(s,
                     "SELECT model_id, count(*) FILTER (WHERE state = 'queued') AS q, "
                     "count(*) FILTER (WHERE state = 'running') AS r FROM jobs WHERE state IN "
                     "('queued', 'running') AND model_id IS DISTINCT FROM $1::text GROUP BY "
                     "model_id ORDER BY count(*) DESC, model_id COLLATE \"C\" LIMIT $2",
                     &p, "counting other models' jobs", model_pending_row,
                     (GDestroyNotify)dq_model_pending_free, err);
}

gboolean pgjobs_has_pending(DqStore *s, const char *model_id, gboolean *pending, GError **err) {
    PgParams p = {0};
    pg_text(&p, model_id);
    PGresult *r = pg_run(s,
                         "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND "
                         "model_id = $1) OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running' "
                         "AND model_id = $1)",
                         &p, "looking for pending jobs", err);
    if (r == NULL)
        return FALSE;
    *pending = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return TRUE;
}

gboolean pgjobs_recent_rate(DqStore *s, const char *since, gint64 *answers, double *span_s,
                            GError **err) {
    PgParams p = {0};
    pg_text(&p, since);
    PGresult *r =
        pg_run(s,
               "SELECT count(*), coalesce(extract(epoch FROM max(finished_at)::timestamptz - "
               "min(started_at)::timestamptz), 0)::double precision FROM answers "
               "WHERE finished_at >= $1::text",
               &p, "reading the answer rate", err);
    if (r == NULL)
        return FALSE;
    *answers = pg_get_i64(r, 0, 0);
    *span_s = g_ascii_strtod(PQgetvalue(r, 0, 1), NULL);
    PQclear(r);
    return TRUE;
}

static gpointer error_reason_row(PGresult *r, int i) {
    DqErrorReason *e = g_new0(DqErrorReason, 1);
    e->kind = pg_get_dup(r, i, 0);
    e->message = pg_get_dup(r, i, 1);
    e->jobs = pg_get_i64(r, i, 2);
    e->example = pg_get_dup(r, i, 3);
    return e;
}

GPtrArray *pgjobs_top_errors(DqStore *s, int limit, GError **err) {
    PgParams p = {0};
    pg_i64(&p, limit);
    pg_text(&p, DQ_REASON_FILE_RE);
    pg_text(&p, DQ_REASON_FILE_BY);
    pg_text(&p, DQ_REASON_PAREN_RE);
    pg_text(&p, DQ_REASON_PAREN_BY);
    /* COLLATE "C": the order, and the example, SQLite's. */
    return read_rows(s,
                     "SELECT kind, reason, count(DISTINCT job_id) AS n, "
                     "min(message COLLATE \"C\") FROM (SELECT je.kind, je.job_id, je.message, "
                     "regexp_replace(regexp_replace(message, $2, $3), $4, $5, 'g') AS reason "
                     "FROM job_errors je JOIN jobs j ON j.id = je.job_id "
                     "WHERE " DQ_JOBS_FAILING_NOW ") e GROUP BY kind, reason "
                     "ORDER BY n DESC, kind COLLATE \"C\", reason COLLATE \"C\" LIMIT $1",
                     &p, "reading job errors", error_reason_row,
                     (GDestroyNotify)dq_error_reason_free, err);
}

gboolean pgjobs_last_error_id(DqStore *s, gint64 *id, GError **err) {
    PGresult *r =
        pg_run(s, "SELECT coalesce(max(id), 0) FROM job_errors", NULL, "reading job errors", err);
    if (r == NULL)
        return FALSE;
    *id = pg_get_i64(r, 0, 0);
    PQclear(r);
    return TRUE;
}

GPtrArray *pgjobs_errors_after(DqStore *s, const char *model_id, gint64 after_id,
                               const char *worker_tag, const gint64 *buried, int n_buried,
                               int limit, GError **err) {
    PgParams p = {0};
    pg_i64(&p, limit);
    pg_text(&p, DQ_REASON_FILE_RE);
    pg_text(&p, DQ_REASON_FILE_BY);
    pg_text(&p, DQ_REASON_PAREN_RE);
    pg_text(&p, DQ_REASON_PAREN_BY);
    pg_i64(&p, after_id);
    pg_text(&p, model_id);
    pg_text(&p, worker_tag);
    char *list = store_jobs_id_list(buried, n_buried, '{', '}');
    pg_text(&p, list);
    g_free(list);
    /* COLLATE "C": the order, and the example, SQLite's. */
    return read_rows(
        s,
        "SELECT kind, reason, count(DISTINCT job_id) AS n, "
        "min(message COLLATE \"C\") FROM (SELECT e.kind, e.job_id, e.message, "
        "regexp_replace(regexp_replace(e.message, $2, $3), $4, $5, 'g') AS reason "
        "FROM job_errors e JOIN jobs j ON j.id = e.job_id WHERE e.id > $6 "
        "AND j.model_id = $7 AND ($8::text IS NULL OR e.worker LIKE ('%:' || $8) "
        "OR e.job_id = ANY ($9::bigint[])) AND " DQ_SQL_ENDED_BY_ERROR ") g GROUP BY kind, reason "
        "ORDER BY n DESC, kind COLLATE \"C\", reason COLLATE \"C\" LIMIT $1",
        &p, "reading job errors", error_reason_row, (GDestroyNotify)dq_error_reason_free, err);
}

static gpointer answer_engine_row(PGresult *r, int i) {
    DqAnswerEngine *e = g_new0(DqAnswerEngine, 1);
    e->device = pg_get_dup(r, i, 0);
    e->weights = pg_get_dup(r, i, 1);
    e->exact = PQgetisnull(r, i, 2) ? -1 : (int)pg_get_i64(r, i, 2);
    e->answers = pg_get_i64(r, i, 3);
    e->pending = pg_get_i64(r, i, 4);
    return e;
}

GPtrArray *pgjobs_answer_engines(DqStore *s, GError **err) {
    return read_rows(s,
                     "SELECT a.device, a.weights, a.exact, count(*) AS n, "
                     "count(*) FILTER (WHERE j.state IN ('queued', 'running')) "
                     "FROM answers a JOIN jobs j ON j.id = a.job_id "
                     "GROUP BY a.device, a.weights, a.exact "
                     "ORDER BY n DESC, device IS NULL, device COLLATE \"C\", weights IS NULL, "
                     "weights COLLATE \"C\", exact IS NULL, exact",
                     NULL, "counting answers", answer_engine_row,
                     (GDestroyNotify)dq_answer_engine_free, err);
}

static gpointer model_snapshot_row(PGresult *r, int i) {
    DqModelSnapshot *m = g_new0(DqModelSnapshot, 1);
    m->model_id = pg_get_dup(r, i, 0);
    m->fingerprint = pg_get_dup(r, i, 1);
    m->answers = pg_get_i64(r, i, 2);
    return m;
}

GPtrArray *pgjobs_model_snapshots(DqStore *s, const char *model_id, GError **err) {
    PgParams p = {0};
    pg_text(&p, model_id);
    return read_rows(s,
                     "SELECT model_id, model_fingerprint, count(*) AS n FROM answers "
                     "WHERE ($1::text IS NULL OR model_id = $1) AND model_fingerprint IS NOT "
                     "NULL GROUP BY model_id, model_fingerprint "
                     "ORDER BY model_id COLLATE \"C\", n DESC, model_fingerprint COLLATE \"C\"",
                     &p, "counting answers per snapshot", model_snapshot_row,
                     (GDestroyNotify)dq_model_snapshot_free, err);
}

static gpointer progress_row(PGresult *r, int i) {
    DqProgressRow *p = g_new0(DqProgressRow, 1);
    p->question = pg_get_dup(r, i, 0);
    p->model_id = pg_get_dup(r, i, 1);
    gint64 *counts[] = {&p->total, &p->queued,   &p->running, &p->done,     &p->failed,
                        &p->dead,  &p->retrying, &p->stalled, &p->cancelled};
    for (size_t c = 0; c < G_N_ELEMENTS(counts); c++)
        *counts[c] = PQgetisnull(r, i, 2 + (int)c) ? 0 : pg_get_i64(r, i, 2 + (int)c);
    p->percent_done = PQgetisnull(r, i, 11) ? -1 : g_ascii_strtod(PQgetvalue(r, i, 11), NULL);
    p->asked_at = pg_get_dup(r, i, 12);
    p->last_finished_at = pg_get_dup(r, i, 13);
    return p;
}

GPtrArray *pgjobs_progress(DqStore *s, GError **err) {
    /* the view orders its rows itself (the questions as first asked) */
    return read_rows(s, DQ_PROGRESS_SQL, NULL, "reading v_progress", progress_row,
                     (GDestroyNotify)dq_progress_row_free, err);
}

gboolean pgjobs_progress_leases(DqStore *s, gint64 now_ms, GPtrArray *rows, GError **err) {
    PgParams p = {0};
    pg_i64(&p, pg_server_ms(s, now_ms));
    PGresult *r = pg_run(s,
                         "SELECT q.text, j.model_id, "
                         "count(*) FILTER (WHERE j.lease_expires_ms >= $1::bigint), "
                         "count(*) FILTER (WHERE j.lease_expires_ms < $1::bigint) FROM jobs j "
                         "JOIN questions q ON q.id = j.question_id WHERE j.state = 'running' "
                         "GROUP BY q.id, q.text, j.model_id",
                         &p, "counting running jobs", err);
    if (r == NULL)
        return FALSE;
    for (int i = 0; i < PQntuples(r); i++)
        store_jobs_progress_set_leases(rows, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                                       pg_get_i64(r, i, 2), pg_get_i64(r, i, 3));
    PQclear(r);
    return TRUE;
}

/* An integer column, or `null` for SQL NULL. */
static int get_int_or(PGresult *r, int row, int col, int null) {
    return PQgetisnull(r, row, col) ? null : (int)pg_get_i64(r, row, col);
}

/* The document ids as a set to join (a hashed semi-join) rather than "= ANY (array)", which
 * PostgreSQL hashes only for a constant array (14 and later) and otherwise scans once per row:
 * --where may match every document of a large archive. */
#define EACH_ANSWER_SQL(VIEW, ASKED, RANGE)                                                        \
    "SELECT " DQ_ANSWER_ROW_COLUMNS ", " ASKED " FROM " VIEW " WHERE ($1::bigint[] IS NULL OR "    \
    "question IN (SELECT text FROM questions WHERE id = ANY ($1::bigint[]))) AND ($2::bigint[] "   \
    "IS NULL OR document_id IN (SELECT unnest($2::bigint[])))" RANGE                               \
    " ORDER BY document_path COLLATE \"C\", document_id, page, question COLLATE \"C\", job_id"
#define IN_RANGE                                                                                   \
    " AND job_id IN (SELECT job_id FROM answers WHERE commit_seq > $3::bigint AND "                \
    "commit_seq <= $4::bigint)"

typedef struct {
    DqAnswerRowFn fn;
    void *user;
} EachAnswer;

static gboolean each_answer_row(PGresult *r, int i, void *user, GError **err) {
    EachAnswer *e = user;
    DqAnswerRow row = {
        .document_path = PQgetvalue(r, i, 0),
        .page = (int)pg_get_i64(r, i, 1),
        .question = PQgetvalue(r, i, 2),
        .answer = PQgetvalue(r, i, 3),
        .model = PQgetvalue(r, i, 4),
        .finished_at = PQgetvalue(r, i, 5),
        .document_id = pg_get_i64(r, i, 6),
        .document_sha256 = pg_get_text(r, i, 7),
        .job_id = pg_get_i64(r, i, 8),
        .device = pg_get_text(r, i, 9),
        .weights = pg_get_text(r, i, 10),
        .exact = get_int_or(r, i, 11, -1),
        .n_res = get_int_or(r, i, 12, -1),
        .tile = get_int_or(r, i, 13, -1),
        .longest_edge = get_int_or(r, i, 14, -1),
        .prompt = pg_get_text(r, i, 15),
        .max_new_tokens = get_int_or(r, i, 16, -1),
        .do_sample = get_int_or(r, i, 17, -1),
        .model_fingerprint = pg_get_text(r, i, 18),
        .page_id = pg_get_i64(r, i, 19),
        .generated_tokens = get_int_or(r, i, 20, 0),
        /* float8's text is the shortest that reads back as the same double (PostgreSQL 12) */
        .ms_total = PQgetisnull(r, i, 21) ? NAN : g_ascii_strtod(PQgetvalue(r, i, 21), NULL),
        .asked_document_id = PQgetisnull(r, i, 22) ? 0 : pg_get_i64(r, i, 22),
        .asked_path = pg_get_text(r, i, 23),
    };
    return e->fn(&row, e->user, err);
}

gboolean pgjobs_each_answer(DqStore *s, const GArray *question_ids, gboolean current,
                            const DqAnswerRange *range, const GArray *document_ids,
                            DqAnswerRowFn fn, void *user, GError **err) {
    static const char *const sql[2][2] = {
        {EACH_ANSWER_SQL("v_answers", "NULL::bigint, NULL::text", ""),
         EACH_ANSWER_SQL("v_answers", "NULL::bigint, NULL::text", IN_RANGE)},
        {EACH_ANSWER_SQL("v_current_answers", DQ_ANSWER_ROW_ASKED_COLUMNS, ""),
         EACH_ANSWER_SQL("v_current_answers", DQ_ANSWER_ROW_ASKED_COLUMNS, IN_RANGE)},
    };
    /* Row by row as the server sends them: an export of every answer of a big archive held
     * them all in memory at once, about twice the size of the CSV written. */
    PgParams p = {0};
    char *list = question_ids ? store_jobs_id_list((const gint64 *)(void *)question_ids->data,
                                                   (int)question_ids->len, '{', '}')
                              : NULL;
    pg_text(&p, list);
    g_free(list);
    list = document_ids ? store_jobs_id_list((const gint64 *)(void *)document_ids->data,
                                             (int)document_ids->len, '{', '}')
                        : NULL;
    pg_text(&p, list);
    g_free(list);
    if (range != NULL) {
        pg_i64(&p, range->after);
        pg_i64(&p, range->upto);
    }
    EachAnswer e = {fn, user};
    return pg_each_row(s, sql[current != FALSE][range != NULL], &p, "reading answers",
                       each_answer_row, &e, err);
}

gboolean pgjobs_commit_checkpoint(DqStore *s, gint64 *checkpoint, GError **err) {
    *checkpoint = 0;
    PGresult *r = pg_run(s, "SELECT last FROM answer_commit_seq WHERE id = 1", NULL,
                         "reading the answers' commit checkpoint", err);
    if (r == NULL)
        return FALSE;
    gboolean found = PQntuples(r) == 1;
    if (found)
        *checkpoint = pg_get_i64(r, 0, 0);
    PQclear(r);
    return found || store_jobs_checkpoint_lost(s, err);
}

/* ---- withdrawing work, and queueing it again ---- */

/* store_jobs.c's JOB_FILTER_SQL: $1 the states, $2 the question ids, $3 the model id, $4 the
 * document ids (arrays; NULL: any), $5 the done jobs' DqDoneJobs bits, $6 the current
 * fingerprint. */
#define JOB_FILTER_SQL                                                                             \
    "FROM jobs j WHERE j.state = ANY ($1::text[]) "                                                \
    "AND (j.state <> 'done' OR ($5::int & 2) <> 0 OR EXISTS (SELECT 1 FROM answers a WHERE "       \
    "a.job_id = j.id AND ((($5::int & 1) <> 0 AND a.exact = 0) OR (($5::int & 4) <> 0 AND "        \
    "(a.model_fingerprint IS NULL OR left(a.model_fingerprint, length($6::text)) <> "              \
    "$6::text))))) "                                                                               \
    "AND ($2::bigint[] IS NULL OR j.question_id = ANY ($2::bigint[])) "                            \
    "AND ($3::text IS NULL OR j.model_id = $3::text) "                                             \
    "AND ($4::bigint[] IS NULL OR EXISTS (SELECT 1 FROM pages jp JOIN documents jd ON jd.id = "    \
    "jp.document_id JOIN documents d ON d.sha256 = jd.sha256 JOIN pages p ON p.document_id = "     \
    "d.id AND p.page_number = jp.page_number AND p.render_settings = jp.render_settings "          \
    "WHERE jp.id = j.page_id AND d.id = ANY ($4::bigint[])))"

static void filter_params(PgParams *p, const DqJobFilter *f) {
    char *list = store_jobs_state_list(f->states, FALSE);
    pg_text(p, list);
    g_free(list);
    list = f->n_question_ids > 0 ? store_jobs_id_list(f->question_ids, f->n_question_ids, '{', '}')
                                 : NULL;
    pg_text(p, list);
    g_free(list);
    pg_text(p, f->model_id);
    list = f->documents_given ? store_jobs_id_list(f->document_ids, f->n_document_ids, '{', '}')
                              : NULL;
    pg_text(p, list);
    g_free(list);
    pg_i64(p, f->done ? f->done : DQ_DONE_APPROXIMATE);
    pg_text(p, f->fingerprint);
}

static gpointer job_group_row(PGresult *r, int i) {
    DqJobGroup *g = g_new0(DqJobGroup, 1);
    g->question = pg_get_dup(r, i, 0);
    g->model_id = pg_get_dup(r, i, 1);
    g->state = store_jobs_state_from_name(PQgetvalue(r, i, 2));
    g->answered = strcmp(PQgetvalue(r, i, 3), "t") == 0;
    g->jobs = pg_get_i64(r, i, 4);
    return g;
}

/* store_jobs.c's change_jobs: the jobs `filter` takes, counted, then `update` unless dry_run. */
static GPtrArray *change_jobs(DqStore *s, const DqJobFilter *filter, gboolean dry_run,
                              const char *update, const char *what, GError **err) {
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)dq_job_group_free);
    PgParams p = {0};
    /* What is counted must be what is changed, while workers on other machines claim and
     * complete: the lock lets readers on, and holds writers (ask, claims, completions) for the
     * few milliseconds between the count and the change. Rows locked one by one would still let
     * an ask add a matching job between the two. */
    if (!dry_run && (!pg_begin(s, err) ||
                     !store_pg_exec(s, "LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE", err)))
        goto fail;
    filter_params(&p, filter);
    if (!append_rows(s,
                     "SELECT q.text, j.model_id, j.state, EXISTS (SELECT 1 FROM answers a "
                     "WHERE a.job_id = j.id) AS answered, count(*) "
                     "FROM (SELECT j.* " JOB_FILTER_SQL ") j "
                     "LEFT JOIN questions q ON q.id = j.question_id "
                     "GROUP BY j.question_id, q.text, j.model_id, j.state, answered "
                     "ORDER BY j.question_id, j.model_id COLLATE \"C\", j.state COLLATE "
                     "\"C\", answered",
                     &p, "selecting jobs", out, job_group_row, err))
        goto fail;
    if (dry_run)
        return out;
    if (out->len > 0) {
        filter_params(&p, filter);
        if (!pg_do(s, update, &p, what, NULL, err))
            goto fail;
    }
    if (!pg_commit(s, err))
        goto fail;
    return out;
fail:
    pg_params_clear(&p);
    pg_rollback(s);
    g_ptr_array_free(out, TRUE);
    return NULL;
}

GPtrArray *pgjobs_cancel(DqStore *s, const DqJobFilter *filter, gboolean dry_run, GError **err) {
    return change_jobs(s, filter, dry_run, DQ_SQL_CANCEL("docqa_now_iso()", JOB_FILTER_SQL),
                       "cancelling jobs", err);
}

GPtrArray *pgjobs_requeue(DqStore *s, const DqJobFilter *filter, gboolean dry_run, GError **err) {
    return change_jobs(s, filter, dry_run, DQ_SQL_REQUEUE(JOB_FILTER_SQL), "requeueing jobs", err);
}

gboolean pgjobs_where_documents(DqStore *s, const char *where, GArray *ids, GError **err) {
    return where_document_ids(s, where, FALSE, ids, err);
}

gboolean pgjobs_document_exists(DqStore *s, gint64 id, gboolean *exists, GError **err) {
    PgParams p = {0};
    pg_i64(&p, id);
    PGresult *r = pg_run(s, "SELECT 1 FROM documents WHERE id = $1", &p, "finding a document", err);
    if (r == NULL)
        return FALSE;
    *exists = PQntuples(r) > 0;
    PQclear(r);
    return TRUE;
}

gboolean pgjobs_find_question(DqStore *s, const char *text, gint64 *id, GError **err) {
    PgParams p = {0};
    pg_text(&p, text);
    /* a row without jobs is no question asked (schema 0015) */
    PGresult *r = pg_run(s,
                         "SELECT q.id FROM questions q WHERE q.text = $1 AND EXISTS (SELECT 1 "
                         "FROM jobs j WHERE j.question_id = q.id)",
                         &p, "finding a question", err);
    if (r == NULL)
        return FALSE;
    *id = PQntuples(r) > 0 ? pg_get_i64(r, 0, 0) : 0;
    PQclear(r);
    return TRUE;
}

gboolean pgjobs_model_known(DqStore *s, const char *model_id, gboolean *known, GError **err) {
    PgParams p = {0};
    pg_text(&p, model_id);
    PGresult *r = pg_run(s, "SELECT 1 FROM jobs WHERE model_id = $1 LIMIT 1", &p,
                         "finding a model's jobs", err);
    if (r == NULL)
        return FALSE;
    *known = PQntuples(r) > 0;
    PQclear(r);
    return TRUE;
}
