/* One worker process: claim jobs under a lease, answer them outside any transaction while a
 * heartbeat thread keeps the leases, complete each under its lease as soon as it is answered and
 * claim the next in its place (continuous batching). See queue.h. */
#include "queue.h"

#include "clock.h"
#include "dq_error.h"
#include "json_load.h"
#include "resources.h"
#include "store_documents.h"
#include "text.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* This machine's clock: leases are stamped with it (the PostgreSQL store turns it into the
 * server's, store_pg.h). */
static gint64 now_ms(void) {
    return dq_wall_ms();
}

/* ISO-8601 UTC with milliseconds, as the schema's strftime('%Y-%m-%dT%H:%M:%fZ') writes. */
static char *iso_now(void) {
    GDateTime *dt = g_date_time_new_now_utc();
    char *base = g_date_time_format(dt, "%Y-%m-%dT%H:%M:%S");
    char *s = g_strdup_printf("%s.%03dZ", base, g_date_time_get_microsecond(dt) / 1000);
    g_free(base);
    g_date_time_unref(dt);
    return s;
}

/* ---- heartbeat ----
 *
 * A thread with its own connection (SQLite connections are not shared between threads here:
 * the store opens them NOMUTEX) extends the leases of every job this worker holds every
 * heartbeat_ms while any is in flight, so a job keeps its lease however long the model takes
 * (and however long it waited for a slot), and a dead worker's jobs expire
 * within one lease.
 *
 * Each beat also asks which of the jobs in flight the worker no longer holds and need not finish
 * (store_jobs_heartbeat_noting: cancelled, taken over by another worker, answered, deleted):
 * computing them on would only waste a slot. The main loop owns the jobs in flight and the
 * answerer, so the two threads meet under the heartbeat's lock only: the main loop publishes the
 * jobs it has in flight (`holding`), a beat leaves the ones gone in `gone`, and the main loop
 * withdraws them at the top of its next turn (withdraw_gone). Each job is named with the attempt
 * it was claimed for: a report about a lease this worker has since claimed again (the job came
 * back to the queue and to this worker) is about the old lease, and is left alone. */

typedef struct {
    gint64 job_id;
    int attempt;
} HeldJob;

typedef struct {
    GMutex lock;
    GCond cond;
    gboolean quit;
    gboolean active;
    DqStore *store;
    const char *owner;
    gint64 lease_ms, interval_ms;
    GArray *holding; /* HeldJob: the jobs in flight, as the main loop last published them */
    GArray *gone;    /* HeldJob: of them, those a beat found gone, for the main loop */
} Heartbeat;

/* One renewal, and what it found gone appended to hb->gone. Called without the lock. */
static void heartbeat_beat(Heartbeat *hb) {
    g_mutex_lock(&hb->lock);
    GArray *mine = g_array_sized_new(FALSE, FALSE, sizeof(HeldJob), hb->holding->len);
    g_array_append_vals(mine, hb->holding->data, hb->holding->len);
    g_mutex_unlock(&hb->lock);
    GArray *ids = g_array_sized_new(FALSE, FALSE, sizeof(gint64), mine->len);
    for (guint i = 0; i < mine->len; i++)
        g_array_append_val(ids, g_array_index(mine, HeldJob, i).job_id);
    GArray *gone = g_array_new(FALSE, FALSE, sizeof(gint64));
    GError *err = NULL;
    int held = 0;
    gboolean ok =
        store_jobs_heartbeat_noting(hb->store, hb->owner, now_ms(), hb->lease_ms,
                                    (const gint64 *)ids->data, (int)ids->len, gone, &held, &err);
    /* Its own connection, lost: connected again here (the main loop's reconnection is
     * the main connection's), or tried again at the next beat. */
    if (!ok && g_error_matches(err, DQ_ERROR, DQ_ERR_DB_LOST) &&
        dq_store_reconnect(hb->store, NULL)) {
        g_clear_error(&err);
        ok = store_jobs_heartbeat_noting(hb->store, hb->owner, now_ms(), hb->lease_ms,
                                         (const gint64 *)ids->data, (int)ids->len, gone, &held,
                                         &err);
    }
    if (!ok) {
        dq_print_line(stderr, "docqa: worker %s: heartbeat: %s", hb->owner, err->message);
        g_error_free(err);
    }
    if (gone->len > 0) {
        GHashTable *attempt = g_hash_table_new(g_int64_hash, g_int64_equal);
        for (guint i = 0; i < mine->len; i++) {
            HeldJob *h = &g_array_index(mine, HeldJob, i);
            g_hash_table_insert(attempt, &h->job_id, h);
        }
        g_mutex_lock(&hb->lock);
        for (guint i = 0; i < gone->len; i++) {
            const HeldJob *h = g_hash_table_lookup(attempt, &g_array_index(gone, gint64, i));
            if (h != NULL)
                g_array_append_vals(hb->gone, h, 1);
        }
        g_mutex_unlock(&hb->lock);
        g_hash_table_destroy(attempt);
    }
    g_array_free(gone, TRUE);
    g_array_free(ids, TRUE);
    g_array_free(mine, TRUE);
    queue_test_point("heartbeat:beat");
}

static gpointer heartbeat_main(gpointer data) {
    Heartbeat *hb = data;
    g_mutex_lock(&hb->lock);
    while (!hb->quit) {
        gint64 until = g_get_monotonic_time() + hb->interval_ms * 1000;
        while (!hb->quit && g_cond_wait_until(&hb->cond, &hb->lock, until))
            ;
        if (hb->quit)
            break;
        if (!hb->active)
            continue;
        g_mutex_unlock(&hb->lock);
        heartbeat_beat(hb);
        g_mutex_lock(&hb->lock);
    }
    g_mutex_unlock(&hb->lock);
    return NULL;
}

static void heartbeat_set_active(Heartbeat *hb, gboolean active) {
    g_mutex_lock(&hb->lock);
    hb->active = active;
    g_mutex_unlock(&hb->lock);
}

/* ---- one batch ---- */

typedef struct {
    char *template_text;
    int max_new_tokens;
} PromptSettings;

/* The job's generation settings (written by queue_generation_settings_json). */
static gboolean parse_settings(const char *json, PromptSettings *ps, GError **err) {
    char *label = g_strdup_printf("generation settings '%.200s'", json);
    JsonParser *p = dq_json_parse(json, -1, label, DQ_JSON_DEFAULT, err);
    gboolean ok = FALSE;
    g_free(label);
    if (p == NULL)
        return FALSE;
    JsonNode *root = json_parser_get_root(p);
    JsonObject *o = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
    const char *prompt = o ? json_object_get_string_member_with_default(o, "prompt", NULL) : NULL;
    if (prompt == NULL) {
        dq_fail(err, DQ_ERR_FORMAT, "generation settings '%.200s': no prompt", json);
        goto out;
    }
    ps->max_new_tokens = (int)json_object_get_int_member_with_default(o, "max_new_tokens", 64);
    char *rpath = g_strdup_printf("configs/prompts/%s.txt", prompt);
    GBytes *b = dq_resource_get(rpath, err);
    g_free(rpath);
    if (b == NULL)
        goto out;
    ps->template_text = g_strdup(g_bytes_get_data(b, NULL));
    g_bytes_unref(b);
    ok = TRUE;
out:
    g_object_unref(p);
    return ok;
}

/* One worker's state, for the functions of its loop. */
typedef struct {
    DqStore *s;
    const char *owner;
    const DqWorkerOptions *opt;
    DqAnswerer *answerer;
    GHashTable *in_flight;      /* job id -> InFlight */
    gboolean in_flight_changed; /* since it was last published to the heartbeat */
    Heartbeat *hb;
    volatile sig_atomic_t *stop;
    DqWorkerStats *stats;
    gint64 locked_since_us, locked_last_us; /* monotonic; 0: not waiting on a locked database */
    int limit;                              /* jobs in flight at most: batch + lookahead */
    DqAnswerDone *done;                     /* [limit]: a poll's finished jobs */
    gint64 next_claim_ms;                   /* the queue ran dry: no claim before then */
    gboolean budget_spent;
} Worker;

static void sleep_ms_unless(gint64 ms, volatile sig_atomic_t *stop) {
    for (gint64 t = 0; t < ms && !*stop; t += 20)
        g_usleep(20000);
}

/* ---- a lost database ----
 *
 * A PostgreSQL server restarts, a pooler drops an idle session: the worker waits for it and
 * reconnects rather than dying with its jobs in flight (each would cost an attempt when its
 * lease ran out). The statement that failed is run again; all of them may be: a claim or a
 * completion whose COMMIT was lost either happened whole or not at all, and the lease guard
 * makes a repeated completion or failure write nothing; a repeated completion finds its own
 * answers stored and counts them answered (store_jobs.h). A claim that committed unheard leaves
 * jobs leased to this worker that it does not know; they are given back once reconnected. */

/* An SQLite database locked by another connection past the busy limit (a user's sqlite3 shell
 * with a transaction open): the worker waits as for a lost server, up to
 * dq_store_outage_limit_ms (10 minutes), saying
 * so each time the busy limit runs out, rather than stopping with its jobs. Its leases ran out
 * meanwhile, but nobody could take them (the claim needs the lock), and the first claim after
 * leaves them alone (store_jobs.c, "a locked database"). A failure that follows the last one
 * within a few seconds is the same wait going on. */
static gboolean still_locked(Worker *w, GError **err) {
    gint64 now = g_get_monotonic_time();
    if (w->locked_since_us == 0 || now - w->locked_last_us > 5 * G_USEC_PER_SEC)
        w->locked_since_us = now;
    w->locked_last_us = now;
    gint64 waited_ms = (now - w->locked_since_us) / 1000;
    if (*w->stop || waited_ms > dq_store_outage_limit_ms()) {
        if (waited_ms >= 1000)
            dq_error_prefix(err, "gave up after %d more s waiting for the write lock",
                            (int)(waited_ms / 1000));
        return FALSE;
    }
    dq_print_line(stderr, "docqa: worker %s: %s; waiting", w->owner, (*err)->message);
    g_clear_error(err);
    return TRUE;
}

/* After a store call failed with *err: TRUE (err cleared) once the connection is back, to run
 * the call again; FALSE (err kept) for any other error, after dq_store_outage_limit_ms, or when the
 * worker is stopping. */
static gboolean reconnected(Worker *w, GError **err) {
    if (*err != NULL && g_error_matches(*err, DQ_ERROR, DQ_ERR_DB_BUSY))
        return still_locked(w, err);
    if (*err == NULL || !g_error_matches(*err, DQ_ERROR, DQ_ERR_DB_LOST))
        return FALSE;
    dq_print_line(stderr, "docqa: worker %s: %s; reconnecting", w->owner, (*err)->message);
    gint64 start = g_get_monotonic_time();
    for (gint64 pause = 250;; pause = MIN(pause * 2, 10000)) {
        GError *e = NULL;
        if (dq_store_reconnect(w->s, &e)) {
            g_clear_error(err);
            dq_print_line(stderr, "docqa: worker %s: reconnected after %.1f s", w->owner,
                          (g_get_monotonic_time() - start) / 1e6);
            GArray *keep = g_array_new(FALSE, FALSE, sizeof(gint64));
            GHashTableIter it;
            gpointer key;
            g_hash_table_iter_init(&it, w->in_flight);
            while (g_hash_table_iter_next(&it, &key, NULL))
                g_array_append_val(keep, *(gint64 *)key);
            /* Failing here is the lost connection again: the next call finds it. */
            store_jobs_release_except(w->s, w->owner, (const gint64 *)keep->data, (int)keep->len,
                                      NULL, NULL);
            g_array_free(keep, TRUE);
            return TRUE;
        }
        gint64 waited_ms = (g_get_monotonic_time() - start) / 1000;
        gboolean gave_up = waited_ms > dq_store_outage_limit_ms();
        if (*w->stop || gave_up || !g_error_matches(e, DQ_ERROR, DQ_ERR_DB_LOST)) {
            g_clear_error(err);
            g_propagate_error(err, e);
            if (gave_up)
                dq_error_prefix(err, "gave up after %d s without the database",
                                (int)(waited_ms / 1000));
            return FALSE;
        }
        g_error_free(e);
        sleep_ms_unless(pause, w->stop);
    }
}

static void fail_job(Worker *w, gint64 job_id, const char *kind, const char *message,
                     gboolean retryable) {
    DqJobState st = DQ_JOB_N_STATES;
    GError *err = NULL;
    while (!store_jobs_fail(w->s, w->owner, job_id, kind, message, retryable, now_ms(),
                            w->opt->backoff_ms, &st, &err)) {
        if (reconnected(w, &err))
            continue;
        /* The lease will expire and the job will be retried: nothing is lost. */
        dq_print_line(stderr, "docqa: worker %s: job %" G_GINT64_FORMAT ": %s", w->owner, job_id,
                      err->message);
        g_error_free(err);
        return;
    }
    if (st == DQ_JOB_QUEUED)
        w->stats->retried++;
    else if (st != DQ_JOB_N_STATES) /* failed, dead, or done again with its earlier answer */
        w->stats->failed++;
}

/* ---- jobs in flight ----
 *
 * Continuous batching: the worker keeps up to batch + lookahead jobs submitted to the answerer
 * (answerer.h). When one finishes it is completed at once and a new job is claimed for its place,
 * so no job waits for the slowest of a batch. Every job in flight is leased by this worker; the
 * heartbeat renews all of them together. */

typedef struct {
    DqClaimedJob *job;
    char *path;
    PromptSettings ps;
    char *started;
} InFlight;

static void in_flight_free(gpointer p) {
    InFlight *f = p;
    dq_claimed_job_free(f->job);
    g_free(f->path);
    g_free(f->ps.template_text);
    g_free(f->started);
    g_free(f);
}

/* A page store that is not there (an unmounted share, DOCQA_PAGES set wrong or relative to
 * another folder) would fail every job of the queue, one by one, for good. */
gboolean queue_page_store_usable(const char *db_path, GError **err) {
    char *dir = dq_store_page_dir_for(db_path, err);
    if (dir == NULL)
        return FALSE;
    /* Usable: it holds one of the store's folders (two hex digits, store.h), not just anything
     * (ingest's .tmp, another folder named by mistake). */
    GDir *d = g_dir_open(dir, 0, NULL);
    gboolean usable = FALSE;
    for (const char *name; d != NULL && !usable && (name = g_dir_read_name(d)) != NULL;) {
        if (strlen(name) == 2 && g_ascii_isxdigit(name[0]) && g_ascii_isxdigit(name[1])) {
            char *sub = g_build_filename(dir, name, NULL);
            usable = g_file_test(sub, G_FILE_TEST_IS_DIR);
            g_free(sub);
        }
    }
    if (d != NULL)
        g_dir_close(d);
    char *ignored = usable ? NULL : dq_store_pages_env_ignored(db_path);
    if (!usable)
        dq_fail(err, DQ_ERR_IO, "%s: the page store is missing or empty (%s%s%s)", dir,
                dq_store_location_is_postgres(db_path)
                    ? "an unmounted share? DOCQA_PAGES names where ingest wrote the page images"
                    : "it belongs beside the database: was the database moved without it?",
                ignored ? "; " : "", ignored ? ignored : "");
    g_free(ignored);
    g_free(dir);
    return usable;
}

/* ---- a broken device ----
 *
 * A GPU whose backend kept an error fails every request from then on (answerer.h). Treated as a
 * per-request error, each job would be retried and fail again here until its attempts ran out:
 * one worker whose GPU ran out of memory once would fail the whole queue. So the worker stops at
 * the first sign: the requests that were in the model when it failed spend their attempt (they
 * are failed and retried after the backoff, as any model failure: one of them may be what broke
 * the device, and a job that breaks every GPU it meets must end dead, not come back for ever),
 * every other job it holds goes back to the queue without spending one, and it claims nothing
 * more. queue_worker_run returns FALSE with the device's error and counts it
 * (DqWorkerStats.device_failed); `docqa run` starts a fresh process for that worker, a fresh
 * CUDA context, a bounded number of times (run.c). */

/* TRUE (err set, said on stderr) when the answerer can answer nothing more. */
static gboolean answerer_broken(Worker *w, GError **err) {
    if (w->answerer->broken == NULL || !w->answerer->broken(w->answerer, err))
        return FALSE;
    w->stats->device_failed = 1;
    dq_print_line(stderr,
                  "docqa: worker %s: device %s failed and cannot recover in this process: %s; "
                  "the worker stops and gives back the jobs it holds",
                  w->owner, w->answerer->device ? w->answerer->device : "(unnamed)",
                  (*err)->message);
    return TRUE;
}

/* Fails a job whose rows were deleted (takes it). */
static void fail_orphan(Worker *w, DqClaimedJob *j) {
    /* Deleted by hand (a sqlite3 shell leaves foreign keys off: nothing cascaded). No
     * retry can bring the row back: failed for good, and the queue goes on. */
    char *msg = g_strdup_printf("job %" G_GINT64_FORMAT ": its %s %s no longer in the "
                                "database (deleted by hand?): nothing to answer",
                                j->job_id, j->missing, strstr(j->missing, " and ") ? "are" : "is");
    fail_job(w, j->job_id, "orphan", msg, FALSE);
    g_free(msg);
    dq_claimed_job_free(j);
}

/* The n_res of the job's render settings, 0 when it has none; *e set when they cannot be read.
 * The render settings are ingest's canonical JSON; only n_res matters here. Settings that cannot
 * be read fail the job: taken for "no n_res", the page was answered at the snapshot's own N, not
 * the N its image was rendered at, and recorded as a good answer. */
static int render_n_res(const DqClaimedJob *j, GError **e) {
    int n_res = 0;
    if (j->render_settings == NULL)
        return n_res;
    char *label = g_strdup_printf("page %d of %s: render settings", j->page_number,
                                  j->document_path ? j->document_path : "?");
    JsonParser *rp = dq_json_parse(j->render_settings, -1, label, DQ_JSON_DEFAULT, e);
    g_free(label);
    JsonNode *root = rp != NULL ? json_parser_get_root(rp) : NULL;
    if (rp != NULL && !JSON_NODE_HOLDS_OBJECT(root))
        dq_fail(e, DQ_ERR_FORMAT, "page %d of %s: render settings '%.200s': not an object",
                j->page_number, j->document_path ? j->document_path : "?", j->render_settings);
    else if (rp != NULL)
        n_res =
            (int)json_object_get_int_member_with_default(json_node_get_object(root), "n_res", 0);
    if (rp != NULL)
        g_object_unref(rp);
    return n_res;
}

/* Hands the job in `f` to the answerer (takes `f`); a request it refuses fails the job. FALSE
 * when the device failed for good. */
static gboolean submit_request(Worker *w, InFlight *f, int n_res, GError **err) {
    DqClaimedJob *j = f->job;
    GError *e = NULL;
    DqAnswerRequest req = {.image_path = f->path,
                           .image_sha256 = j->image_sha256,
                           .question = j->question,
                           .prompt_template = f->ps.template_text,
                           .max_new_tokens = f->ps.max_new_tokens,
                           .n_res = n_res};
    f->started = iso_now();
    if (!w->answerer->submit(w->answerer, &req, j->job_id, &e)) {
        /* Refused because the device is gone: not this job's fault, it goes back with the rest
         * without spending an attempt. */
        if (answerer_broken(w, err)) {
            g_error_free(e);
            in_flight_free(f);
            return FALSE;
        }
        fail_job(w, j->job_id, "model", e->message, TRUE);
        g_error_free(e);
        in_flight_free(f);
        return TRUE;
    }
    g_hash_table_insert(w->in_flight, &j->job_id, f);
    w->in_flight_changed = TRUE;
    return TRUE;
}

/* Why a page's image is not there, for its job's error. `docqa prune` removes the images of pages
 * no current document needs: a job requeued about an old version's or a gone file's page finds
 * none, and its error says so and how to get it back (no schema records the prune: a missing
 * file whose document is not current says it). Any other missing file is the page store's
 * damage. */
static char *missing_image_message(Worker *w, const DqClaimedJob *j, const char *path) {
    int version = 0, newest = 0;
    char *gone = NULL;
    GError *e = NULL;
    if (path == NULL)
        return g_strdup_printf("(no image recorded): page image missing (%s, page %d)",
                               j->document_path, j->page_number);
    if (!dq_store_page_document_state(w->s, j->page_id, &version, &newest, &gone, &e))
        g_clear_error(&e); /* the plain message, then */
    char *msg;
    if (gone != NULL)
        msg = g_strdup_printf("%s: page image missing: pruned by docqa prune, as %s (page %d) is "
                              "gone from disk (since %s); to answer it, put the file back, ingest "
                              "it (its pages are rendered again), then requeue this job",
                              path, j->document_path, j->page_number, gone);
    else if (version > 0 && version < newest)
        msg = g_strdup_printf("%s: page image missing: pruned by docqa prune, as %s (page %d) is "
                              "version %d of its path, no longer the current one (%d); to answer "
                              "it, put that version's bytes back at the path, ingest it (its "
                              "pages are rendered again, to the same images), then requeue this "
                              "job",
                              path, j->document_path, j->page_number, version, newest);
    else
        msg = g_strdup_printf("%s: page image missing (%s, page %d)", path, j->document_path,
                              j->page_number);
    g_free(gone);
    return msg;
}

/* Submits a claimed job (takes it); one that cannot be asked fails here. FALSE when the worker
 * cannot go on (the page store is gone, the device failed for good): the job stays leased, for
 * the worker to give back. */
static gboolean submit_job(Worker *w, DqClaimedJob *j, GError **err) {
    InFlight *again = g_hash_table_lookup(w->in_flight, &j->job_id);
    if (again != NULL) {
        /* Its lease ran out while it was here (the heartbeat could not reach the database),
         * another worker took it back and gave it up, and the queue handed it to this worker
         * again. The copy in the model completes it under this new lease: a heartbeat's word
         * that the old one was gone is no longer about it. */
        again->job->attempt = j->attempt;
        w->in_flight_changed = TRUE;
        dq_claimed_job_free(j);
        return TRUE;
    }
    if (j->missing != NULL) {
        fail_orphan(w, j);
        return TRUE;
    }
    InFlight *f = g_new0(InFlight, 1);
    f->job = j;
    GError *e = NULL;
    f->path = queue_page_image_path(w->opt->db_path, j->image_sha256);
    struct stat st;
    int stat_errno = f->path == NULL           ? ENOENT
                     : stat(f->path, &st) != 0 ? errno
                     : S_ISREG(st.st_mode)     ? 0
                                               : EISDIR;
    if (stat_errno != 0) {
        if (f->path != NULL && !queue_page_store_usable(w->opt->db_path, err)) {
            char *msg = g_strconcat((*err)->message, "; no job was failed", NULL);
            g_free((*err)->message);
            (*err)->message = msg;
            in_flight_free(f);
            return FALSE;
        }
        /* A network share's stale handle or timeout shows here first: not a missing page. Nor
         * is a folder in its place or a path that cannot be looked up (a file where a folder of
         * the store should be, not allowed): those say what the system said. */
        gboolean transient = dq_errno_transient(stat_errno);
        char *msg = stat_errno == ENOENT ? missing_image_message(w, j, f->path)
                    : stat_errno == EISDIR
                        ? g_strdup_printf("%s: page image not a regular file (%s, page %d)",
                                          f->path, j->document_path, j->page_number)
                        : g_strdup_printf("%s: cannot stat image: %s (%s, page %d)", f->path,
                                          g_strerror(stat_errno), j->document_path, j->page_number);
        fail_job(w, j->job_id, transient ? "page_read" : "page_image", msg, transient);
        g_free(msg);
        in_flight_free(f);
        return TRUE;
    }
    if (!parse_settings(j->generation_settings, &f->ps, &e)) {
        fail_job(w, j->job_id, "settings", e->message, FALSE);
        g_error_free(e);
        in_flight_free(f);
        return TRUE;
    }
    int n_res = render_n_res(j, &e);
    if (e != NULL) {
        fail_job(w, j->job_id, "settings", e->message, FALSE);
        g_error_free(e);
        in_flight_free(f);
        return TRUE;
    }
    return submit_request(w, f, n_res, err);
}

/* Tells the heartbeat which jobs are in flight now, when that changed. */
static void publish_in_flight(Worker *w) {
    if (!w->in_flight_changed)
        return;
    GArray *now = g_array_sized_new(FALSE, FALSE, sizeof(HeldJob), g_hash_table_size(w->in_flight));
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, w->in_flight);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        const InFlight *f = value;
        HeldJob h = {.job_id = f->job->job_id, .attempt = f->job->attempt};
        g_array_append_val(now, h);
    }
    g_mutex_lock(&w->hb->lock);
    GArray *old = w->hb->holding;
    w->hb->holding = now;
    g_mutex_unlock(&w->hb->lock);
    g_array_free(old, TRUE);
    w->in_flight_changed = FALSE;
}

/* Withdraws the jobs the heartbeat found gone (cancelled, taken over, answered, deleted) from
 * the answerer: they are not completed, and their places go to new jobs. A cancelled job whose
 * answer came first was completed already (it is no longer in flight): its answer is kept, as
 * store_jobs_complete keeps any late answer to a job nobody holds nor answered (queue.h). */
static void withdraw_gone(Worker *w) {
    g_mutex_lock(&w->hb->lock);
    GArray *gone = w->hb->gone;
    w->hb->gone = g_array_new(FALSE, FALSE, sizeof(HeldJob));
    g_mutex_unlock(&w->hb->lock);
    for (guint i = 0; i < gone->len; i++) {
        const HeldJob *h = &g_array_index(gone, HeldJob, i);
        InFlight *f = g_hash_table_lookup(w->in_flight, &h->job_id);
        if (f == NULL || f->job->attempt != h->attempt || w->answerer->withdraw == NULL ||
            !w->answerer->withdraw(w->answerer, h->job_id))
            continue; /* finished meanwhile, claimed again, or left to finish */
        g_hash_table_remove(w->in_flight, &h->job_id);
        w->in_flight_changed = TRUE;
        w->stats->withdrawn++;
        queue_test_point("worker:withdrawn");
    }
    g_array_free(gone, TRUE);
}

/* The row that stores a finished job's answer. */
static DqJobAnswer job_answer(const Worker *w, const InFlight *f, const DqAnswerResult *r,
                              const char *finished) {
    const DqAnswerer *a = w->answerer;
    return (DqJobAnswer){
        .job_id = f->job->job_id,
        .text = r->text,
        .prompt_tokens = r->prompt_tokens,
        .generated_tokens = r->generated_tokens,
        .started_at = f->started,
        .finished_at = finished,
        .ms_image = r->ms_image,
        .ms_vision = r->ms_vision,
        .ms_prefill = r->ms_prefill,
        .ms_decode = r->ms_decode,
        .ms_total = r->ms_total,
        .device = a->device,
        .weights = a->weights,
        .exact = a->device == NULL ? -1
                 : a->exact        ? 1
                                   : 0,
        .model_fingerprint = a->model_fingerprint,
    };
}

/* The answers in one transaction, again after a reconnection. */
static gboolean store_answers(Worker *w, const DqJobAnswer *answers, int n_answers, GError **err) {
    int written = 0;
    if (n_answers == 0)
        return TRUE;
    if (!dq_store_check_file(w->s, err))
        return FALSE;
    while (!store_jobs_complete(w->s, w->owner, answers, n_answers, &written, err))
        if (!reconnected(w, err))
            return FALSE;
    w->stats->done += written;
    w->stats->lost += n_answers - written;
    return TRUE;
}

/* A request the answerer cancelled because the worker stops. */
static gboolean cancelled_by_stop(const Worker *w, const GError *e) {
    return e != NULL && g_error_matches(e, DQ_ERROR, DQ_ERR_CANCELLED) && *w->stop;
}

/* A finished job out of flight: failed when it brought no answer, for good where its page or
 * question is at fault; one cancelled because the worker stops stays, released when it does. */
static void settle_job(Worker *w, const InFlight *f, const DqAnswerDone *done) {
    GError *e = done->result.error;
    gint64 id = f->job->job_id;
    if (e == NULL && done->result.text == NULL)
        fail_job(w, id, "model", "the model returned no answer", TRUE);
    else if (cancelled_by_stop(w, e))
        ; /* released when the worker stops */
    else if (e != NULL) {
        /* Bad inputs fail for good (answerer.h): retrying cannot mend them. A page the system
         * could not read (a flaky disk or share) is not one: its attempts may get through. */
        gboolean bad_page =
            e->domain == DQ_ERROR && (e->code == DQ_ERR_IO || e->code == DQ_ERR_FORMAT);
        gboolean unread_page = e->domain == DQ_ERROR && e->code == DQ_ERR_IO_TRANSIENT;
        gboolean bad_question = e->domain == DQ_ERROR && e->code == DQ_ERR_ARGS;
        /* The answerer's message on a question names what is wrong with it; the job and
         * the question say which it is (its page is not at fault). "job N: " first, as
         * docqa status strips it (DQ_REASON_FILE_RE) to group one question's jobs. */
        char *quoted = bad_question ? queue_question_quote(f->job->question) : NULL;
        char *msg = bad_question ? g_strdup_printf("job %" G_GINT64_FORMAT ": question '%s': %s",
                                                   id, quoted, e->message)
                                 : NULL;
        fail_job(w, id,
                 bad_page       ? "page_image"
                 : unread_page  ? "page_read"
                 : bad_question ? "question"
                                : "model",
                 msg ? msg : e->message, !bad_page && !bad_question);
        g_free(quoted);
        g_free(msg);
    }
    if (!cancelled_by_stop(w, e)) {
        g_hash_table_remove(w->in_flight, &done->tag);
        w->in_flight_changed = TRUE;
    }
}

/* Completes the finished jobs in one transaction and fails the failed ones. FALSE when the
 * database failed, or when a failure came from a device that cannot recover (answerer_broken). */
static gboolean finish_jobs(Worker *w, DqAnswerDone *done, int k, GError **err) {
    InFlight **f = g_new0(InFlight *, k);
    DqJobAnswer *answers = g_new0(DqJobAnswer, k);
    int n_answers = 0;
    gboolean ok = FALSE;
    char *finished = iso_now();
    for (int i = 0; i < k; i++) {
        f[i] = g_hash_table_lookup(w->in_flight, &done[i].tag);
        const DqAnswerResult *r = &done[i].result;
        if (f[i] == NULL) {
            dq_print_line(stderr,
                          "docqa: worker %s: the answerer returned job %" G_GINT64_FORMAT
                          ", which is not in flight",
                          w->owner, done[i].tag);
            continue;
        }
        if (r->error == NULL && r->text != NULL)
            answers[n_answers++] = job_answer(w, f[i], r, finished);
    }
    queue_test_point("worker:before_complete");
    if (!store_answers(w, answers, n_answers, err))
        goto out;
    for (int i = 0; i < k; i++)
        if (f[i] != NULL)
            settle_job(w, f[i], &done[i]);
    queue_test_point("worker:after_complete");
    gboolean any_failed = FALSE;
    for (int i = 0; i < k; i++)
        any_failed |= done[i].result.error != NULL &&
                      !g_error_matches(done[i].result.error, DQ_ERROR, DQ_ERR_CANCELLED);
    ok = !(any_failed && answerer_broken(w, err));
out:
    for (int i = 0; i < k; i++)
        dq_answer_result_clear(&done[i].result);
    g_free(finished);
    g_free(answers);
    g_free(f);
    return ok;
}

/* ---- the loop ---- */

/* Takes up to `want` jobs from the shared budget; 0 when it is spent. */
static int budget_take(gint64 *budget, int want) {
    if (budget == NULL)
        return want;
    gint64 cur = __atomic_load_n(budget, __ATOMIC_SEQ_CST);
    while (cur > 0) {
        gint64 take = cur < want ? cur : want;
        if (__atomic_compare_exchange_n(budget, &cur, cur - take, FALSE, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST))
            return (int)take;
    }
    return 0;
}

static void budget_return(gint64 *budget, int n) {
    if (budget != NULL && n > 0)
        __atomic_add_fetch(budget, n, __ATOMIC_SEQ_CST);
}

static void worker_defaults(DqWorkerOptions *opt) {
    if (opt->batch < 1)
        opt->batch = 1;
    if (opt->lease_ms <= 0)
        opt->lease_ms = 60000;
    if (opt->heartbeat_ms <= 0)
        opt->heartbeat_ms = opt->lease_ms / 3;
    if (opt->backoff_ms <= 0)
        opt->backoff_ms = 5000;
    if (opt->poll_ms <= 0)
        opt->poll_ms = 500;
}

/* The worker's two connections (its own, the heartbeat's), the heartbeat thread, and room for
 * its jobs in flight. */
static gboolean worker_open(Worker *w, GThread **hb_thread, GError **err) {
    const DqWorkerOptions *opt = w->opt;
    if ((w->s = dq_store_open(opt->db_path, err)) == NULL)
        return FALSE;
    if ((w->hb->store = dq_store_open(opt->db_path, err)) == NULL)
        return FALSE;
    /* Told to stop while another connection holds the write lock, both connections give up
     * waiting for it within seconds, not after the busy limit (heartbeat_stop joins the heartbeat).
     */
    dq_store_set_stop(w->s, w->stop);
    dq_store_set_stop(w->hb->store, w->stop);
    *hb_thread = g_thread_new("heartbeat", heartbeat_main, w->hb);
    w->in_flight = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, in_flight_free);
    w->answerer->batch = opt->batch;
    /* Both terms bounded by DQ_MAX_BATCH: the sum cannot overflow, whatever the answerer says. */
    w->limit = opt->batch + CLAMP(w->answerer->lookahead, 0, DQ_MAX_BATCH);
    w->done = g_new0(DqAnswerDone, w->limit);
    /* Before any claim: a worker that cannot keep it holds nothing to give back. */
    return dq_store_keep_reserve(w->s, DQ_WORKER_RESERVE_BYTES(w->limit), err);
}

/* What the loop does after a step: go on with this turn, start the next, stop, or fail. */
typedef enum { STEP_GO_ON, STEP_AGAIN, STEP_DONE, STEP_FAILED } WorkerStep;

/* Hands claimed jobs to the answerer; after one that finds the answerer unusable, the rest are
 * given back with the jobs in flight when the worker stops. */
static gboolean submit_claimed(Worker *w, GPtrArray *jobs, GError **err) {
    gsize len = 0;
    gpointer *claimed = g_ptr_array_steal(jobs, &len);
    g_ptr_array_unref(jobs);
    gboolean usable = TRUE;
    for (gsize i = 0; i < len; i++) {
        if (usable)
            usable = submit_job(w, claimed[i], err);
        else
            dq_claimed_job_free(claimed[i]); /* given back below, with the rest */
    }
    g_free(claimed);
    return usable;
}

/* Claims jobs for the free places, when there are some, the budget is not spent and the queue
 * did not just run dry. */
static WorkerStep claim_jobs(Worker *w, GError **err) {
    const DqWorkerOptions *opt = w->opt;
    int n = (int)g_hash_table_size(w->in_flight);
    if (n >= w->limit || w->budget_spent || now_ms() < w->next_claim_ms)
        return STEP_GO_ON;
    if (!dq_store_check_file(w->s, err))
        return STEP_FAILED;
    int want = budget_take(opt->job_budget, w->limit - n);
    w->budget_spent = want == 0;
    GArray *buried = g_array_new(FALSE, FALSE, sizeof(gint64));
    GPtrArray *jobs = want > 0 ? store_jobs_claim_noting(w->s, w->owner, opt->model_id, want,
                                                         now_ms(), opt->lease_ms, buried, err)
                               : NULL;
    /* Jobs whose last attempt died with its worker: failed during this run, whoever held them;
     * this worker is the one that knows. */
    w->stats->failed += buried->len;
    w->stats->buried += buried->len;
    if (buried->len > 0 && opt->on_buried != NULL)
        opt->on_buried(opt->on_buried_user, (const gint64 *)buried->data, (int)buried->len);
    g_array_free(buried, TRUE);
    if (want > 0 && jobs == NULL) {
        budget_return(opt->job_budget, want);
        return reconnected(w, err) ? STEP_AGAIN : STEP_FAILED;
    }
    if (jobs == NULL)
        return STEP_GO_ON;
    budget_return(opt->job_budget, want - (int)jobs->len);
    if ((int)jobs->len < want)
        w->next_claim_ms = now_ms() + opt->poll_ms; /* no claim at every decode step */
    if (jobs->len > 0) {
        w->stats->claimed += jobs->len;
        queue_test_point("worker:claimed");
        heartbeat_set_active(w->hb, TRUE);
    }
    return submit_claimed(w, jobs, err) ? STEP_GO_ON : STEP_FAILED;
}

/* Nothing in flight: stops when the budget is spent or (--until-empty) the queue is, else waits
 * until the next claim. */
static WorkerStep wait_for_jobs(Worker *w, GError **err) {
    heartbeat_set_active(w->hb, FALSE);
    if (w->budget_spent)
        return STEP_DONE;
    if (w->opt->until_empty) {
        gboolean pending = TRUE;
        if (!store_jobs_has_pending(w->s, w->opt->model_id, &pending, err))
            return reconnected(w, err) ? STEP_AGAIN : STEP_FAILED;
        if (!pending)
            return STEP_DONE;
    }
    sleep_ms_unless(MAX(w->next_claim_ms - now_ms(), 0), w->stop);
    return STEP_AGAIN;
}

static gboolean worker_loop(Worker *w, GError **err) {
    while (!*w->stop) {
        withdraw_gone(w);
        WorkerStep step = claim_jobs(w, err);
        if (step == STEP_GO_ON && g_hash_table_size(w->in_flight) == 0)
            step = wait_for_jobs(w, err);
        if (step == STEP_FAILED)
            return FALSE;
        if (step == STEP_DONE)
            return TRUE;
        if (step == STEP_AGAIN)
            continue;
        publish_in_flight(w);
        int k = w->answerer->poll(w->answerer, w->done, w->limit);
        if (k > 0 && !finish_jobs(w, w->done, k, err))
            return FALSE;
    }
    return TRUE;
}

/* Whatever is still held (a cancelled batch, an error) goes back without using an attempt, also
 * after a full disk (the store makes room for it); when the database is out of reach this fails
 * too and the leases expire instead. */
static void give_back_jobs(Worker *w, gboolean ok) {
    int released = 0;
    GError *re = NULL;
    if (store_jobs_release(w->s, w->owner, &released, &re))
        w->stats->released += released;
    /* After a store error the user learns what became of the jobs in flight; so too when
     * they could not be given back (a worker told to stop while the database is locked),
     * said only when it holds some. */
    guint held = w->in_flight != NULL ? g_hash_table_size(w->in_flight) : 0;
    if (!ok && re == NULL && released > 0)
        dq_print_line(stderr, "docqa: worker %s: gave back its %d job%s in flight", w->owner,
                      released, released == 1 ? "" : "s");
    else if (re != NULL && held > 0)
        dq_print_line(stderr,
                      "docqa: worker %s: could not give back its %u job%s in flight (%s): they "
                      "come back when their lease expires",
                      w->owner, held, held == 1 ? "" : "s", re->message);
    g_clear_error(&re);
}

static void heartbeat_stop(Heartbeat *hb, GThread *hb_thread) {
    if (hb_thread != NULL) {
        g_mutex_lock(&hb->lock);
        hb->quit = TRUE;
        g_cond_signal(&hb->cond);
        g_mutex_unlock(&hb->lock);
        g_thread_join(hb_thread);
    }
    if (hb->store != NULL) {
        store_jobs_finalize(hb->store);
        dq_store_close(hb->store);
    }
    g_mutex_clear(&hb->lock);
    g_cond_clear(&hb->cond);
    g_array_free(hb->holding, TRUE);
    g_array_free(hb->gone, TRUE);
}

gboolean queue_worker_run(const DqWorkerOptions *opt_in, DqAnswerer *answerer,
                          volatile sig_atomic_t *stop, DqWorkerStats *stats, GError **err) {
    DqWorkerOptions opt = *opt_in;
    worker_defaults(&opt);
    memset(stats, 0, sizeof(*stats));
    if (opt.batch > DQ_MAX_BATCH)
        return dq_fail(err, DQ_ERR_ARGS, "batch %d: a worker decodes at most %d requests at once",
                       opt.batch, DQ_MAX_BATCH);
    queue_test_hooks_install();

    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    char *owner = g_strdup_printf("%s:%d:%08x%s%s", host, (int)getpid(), g_random_int(),
                                  opt.owner_tag ? ":" : "", opt.owner_tag ? opt.owner_tag : "");
    Heartbeat hb = {.owner = owner,
                    .lease_ms = opt.lease_ms,
                    .interval_ms = opt.heartbeat_ms,
                    .holding = g_array_new(FALSE, FALSE, sizeof(HeldJob)),
                    .gone = g_array_new(FALSE, FALSE, sizeof(HeldJob))};
    g_mutex_init(&hb.lock);
    g_cond_init(&hb.cond);
    Worker w = {
        .owner = owner, .opt = &opt, .answerer = answerer, .hb = &hb, .stop = stop, .stats = stats};
    GThread *hb_thread = NULL;
    gboolean ok = worker_open(&w, &hb_thread, err) && worker_loop(&w, err);
    if (w.s != NULL)
        give_back_jobs(&w, ok);
    heartbeat_stop(&hb, hb_thread);
    if (w.s != NULL) {
        store_jobs_finalize(w.s);
        dq_store_close(w.s);
    }
    if (w.in_flight != NULL)
        g_hash_table_destroy(w.in_flight);
    g_free(w.done);
    g_free(owner);
    return ok;
}

void dq_answer_result_clear(DqAnswerResult *r) {
    g_clear_pointer(&r->text, g_free);
    g_clear_error(&r->error);
}
