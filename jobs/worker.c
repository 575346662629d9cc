/* One worker process: claim a batch under a lease, answer it outside any transaction while a
 * heartbeat thread keeps the lease, complete it under the lease. See queue.h. */
#include "queue.h"

#include "dq_error.h"
#include "resources.h"

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static gint64 now_ms(void) {
    return g_get_real_time() / 1000;
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
 * the store opens them NOMUTEX) extends the leases every heartbeat_ms while a batch is held, so
 * a long batch keeps its jobs however long the model takes, and a dead worker's jobs expire
 * within one lease. */

typedef struct {
    GMutex lock;
    GCond cond;
    gboolean quit;
    gboolean active;
    DqStore *store;
    const char *owner;
    gint64 lease_ms, interval_ms;
} Heartbeat;

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
        GError *err = NULL;
        int held = 0;
        if (!store_jobs_heartbeat(hb->store, hb->owner, now_ms(), hb->lease_ms, &held, &err)) {
            fprintf(stderr, "docqa: worker %s: heartbeat: %s\n", hb->owner, err->message);
            g_error_free(err);
        }
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
    JsonParser *p = json_parser_new();
    GError *e = NULL;
    gboolean ok = FALSE;
    if (!json_parser_load_from_data(p, json, -1, &e)) {
        dq_fail(err, DQ_ERR_FORMAT, "generation settings '%s': %s", json, e->message);
        g_error_free(e);
        goto out;
    }
    JsonNode *root = json_parser_get_root(p);
    JsonObject *o = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
    const char *prompt = o ? json_object_get_string_member_with_default(o, "prompt", NULL) : NULL;
    if (prompt == NULL) {
        dq_fail(err, DQ_ERR_FORMAT, "generation settings '%s': no prompt", json);
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

static void fail_job(DqStore *s, const char *owner, const DqWorkerOptions *opt, gint64 job_id,
                     const char *kind, const char *message, gboolean retryable,
                     DqWorkerStats *stats) {
    DqJobState st = DQ_JOB_N_STATES;
    GError *err = NULL;
    if (!store_jobs_fail(s, owner, job_id, kind, message, retryable, now_ms(), opt->backoff_ms, &st,
                         &err)) {
        /* The lease will expire and the job will be retried: nothing is lost. */
        fprintf(stderr, "docqa: worker %s: job %" G_GINT64_FORMAT ": %s\n", owner, job_id,
                err->message);
        g_error_free(err);
        return;
    }
    if (st == DQ_JOB_QUEUED)
        stats->retried++;
    else if (st == DQ_JOB_FAILED || st == DQ_JOB_DEAD)
        stats->failed++;
}

/* Answers and completes one claimed batch. FALSE when the database failed. */
static gboolean run_batch(DqStore *s, const char *owner, const DqWorkerOptions *opt,
                          DqAnswerer *answerer, Heartbeat *hb, GPtrArray *jobs,
                          DqWorkerStats *stats, GError **err) {
    int n = (int)jobs->len;
    DqAnswerRequest *reqs = g_new0(DqAnswerRequest, n);
    DqAnswerResult *res = g_new0(DqAnswerResult, n);
    DqClaimedJob **asked = g_new0(DqClaimedJob *, n);
    PromptSettings *ps = g_new0(PromptSettings, n);
    char **paths = g_new0(char *, n);
    int m = 0;
    gboolean ok = FALSE;
    char *started = iso_now();

    for (int i = 0; i < n; i++) {
        DqClaimedJob *j = g_ptr_array_index(jobs, i);
        GError *e = NULL;
        char *path = queue_page_image_path(opt->db_path, j->image_sha256);
        if (path == NULL || !g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
            char *msg = g_strdup_printf("%s: page image missing (%s, page %d)",
                                        path ? path : "(no image recorded)", j->document_path,
                                        j->page_number);
            fail_job(s, owner, opt, j->job_id, "page_image", msg, FALSE, stats);
            g_free(msg);
            g_free(path);
            continue;
        }
        if (!parse_settings(j->generation_settings, &ps[m], &e)) {
            fail_job(s, owner, opt, j->job_id, "settings", e->message, FALSE, stats);
            g_error_free(e);
            g_free(path);
            continue;
        }
        int n_res = 0;
        if (j->render_settings != NULL) {
            /* The render settings are ingest's canonical JSON; only n_res matters here. */
            JsonParser *rp = json_parser_new();
            if (json_parser_load_from_data(rp, j->render_settings, -1, NULL) &&
                JSON_NODE_HOLDS_OBJECT(json_parser_get_root(rp)))
                n_res = (int)json_object_get_int_member_with_default(
                    json_node_get_object(json_parser_get_root(rp)), "n_res", 0);
            g_object_unref(rp);
        }
        paths[m] = path;
        reqs[m] = (DqAnswerRequest){.image_path = path,
                                    .question = j->question,
                                    .prompt_template = ps[m].template_text,
                                    .max_new_tokens = ps[m].max_new_tokens,
                                    .n_res = n_res};
        asked[m] = j;
        m++;
    }

    if (m > 0) {
        GError *batch_err = NULL;
        heartbeat_set_active(hb, TRUE);
        gboolean batch_ok = answerer->answer_batch(answerer, reqs, m, res, &batch_err);
        queue_test_point("worker:before_complete");
        char *finished = iso_now();
        if (!batch_ok) {
            gboolean cancelled = g_error_matches(batch_err, DQ_ERROR, DQ_ERR_CANCELLED);
            for (int i = 0; i < m && !cancelled; i++)
                fail_job(s, owner, opt, asked[i]->job_id, "model",
                         batch_err ? batch_err->message : "the model failed", TRUE, stats);
            g_clear_error(&batch_err);
        } else {
            DqJobAnswer *answers = g_new0(DqJobAnswer, m);
            int n_answers = 0;
            for (int i = 0; i < m; i++) {
                DqAnswerResult *r = &res[i];
                if (r->error == NULL && r->text != NULL) {
                    answers[n_answers++] = (DqJobAnswer){
                        .job_id = asked[i]->job_id,
                        .text = r->text,
                        .prompt_tokens = r->prompt_tokens,
                        .generated_tokens = r->generated_tokens,
                        .started_at = started,
                        .finished_at = finished,
                        .ms_image = r->ms_image,
                        .ms_vision = r->ms_vision,
                        .ms_prefill = r->ms_prefill,
                        .ms_decode = r->ms_decode,
                        .ms_total = r->ms_total,
                    };
                }
            }
            int written = 0;
            gboolean done = store_jobs_complete(s, owner, answers, n_answers, &written, err);
            g_free(answers);
            if (!done) {
                g_free(finished);
                goto out;
            }
            stats->done += written;
            stats->lost += n_answers - written;
            for (int i = 0; i < m; i++) {
                GError *e = res[i].error;
                if (e == NULL) {
                    if (res[i].text == NULL)
                        fail_job(s, owner, opt, asked[i]->job_id, "model",
                                 "the model returned no answer", TRUE, stats);
                    continue;
                }
                if (g_error_matches(e, DQ_ERROR, DQ_ERR_CANCELLED))
                    continue; /* released below */
                gboolean bad_input =
                    e->domain == DQ_ERROR && (e->code == DQ_ERR_IO || e->code == DQ_ERR_FORMAT);
                fail_job(s, owner, opt, asked[i]->job_id, bad_input ? "page_image" : "model",
                         e->message, !bad_input, stats);
            }
        }
        g_free(finished);
        queue_test_point("worker:after_complete");
    }
    ok = TRUE;
out:
    heartbeat_set_active(hb, FALSE);
    for (int i = 0; i < n; i++) {
        dq_answer_result_clear(&res[i]);
        g_free(ps[i].template_text);
        g_free(paths[i]);
    }
    g_free(reqs);
    g_free(res);
    g_free(asked);
    g_free(ps);
    g_free(paths);
    g_free(started);
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

static void sleep_ms_unless(gint64 ms, volatile sig_atomic_t *stop) {
    for (gint64 t = 0; t < ms && !*stop; t += 20)
        g_usleep(20000);
}

gboolean queue_worker_run(const DqWorkerOptions *opt_in, DqAnswerer *answerer,
                          volatile sig_atomic_t *stop, DqWorkerStats *stats, GError **err) {
    DqWorkerOptions opt = *opt_in;
    if (opt.batch < 1)
        opt.batch = 1;
    if (opt.lease_ms <= 0)
        opt.lease_ms = 60000;
    if (opt.heartbeat_ms <= 0)
        opt.heartbeat_ms = opt.lease_ms / 3;
    if (opt.backoff_ms <= 0)
        opt.backoff_ms = 5000;
    if (opt.poll_ms <= 0)
        opt.poll_ms = 500;
    memset(stats, 0, sizeof(*stats));
    queue_test_hooks_install();

    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    char *owner = g_strdup_printf("%s:%d:%08x", host, (int)getpid(), g_random_int());
    gboolean ok = FALSE;
    Heartbeat hb = {.owner = owner, .lease_ms = opt.lease_ms, .interval_ms = opt.heartbeat_ms};
    g_mutex_init(&hb.lock);
    g_cond_init(&hb.cond);
    GThread *hb_thread = NULL;
    DqStore *s = dq_store_open(opt.db_path, err);
    if (s == NULL)
        goto out;
    if ((hb.store = dq_store_open(opt.db_path, err)) == NULL)
        goto out;
    hb_thread = g_thread_new("heartbeat", heartbeat_main, &hb);

    while (!*stop) {
        int want = budget_take(opt.job_budget, opt.batch);
        if (want == 0)
            break;
        GPtrArray *jobs =
            store_jobs_claim(s, owner, opt.model_id, want, now_ms(), opt.lease_ms, err);
        if (jobs == NULL) {
            budget_return(opt.job_budget, want);
            goto out;
        }
        budget_return(opt.job_budget, want - (int)jobs->len);
        if (jobs->len == 0) {
            g_ptr_array_free(jobs, TRUE);
            if (opt.until_empty) {
                DqJobCounts c;
                if (!store_jobs_counts(s, opt.model_id, &c, err))
                    goto out;
                if (c.by_state[DQ_JOB_QUEUED] + c.by_state[DQ_JOB_RUNNING] == 0)
                    break;
            }
            sleep_ms_unless(opt.poll_ms, stop);
            continue;
        }
        stats->claimed += jobs->len;
        queue_test_point("worker:claimed");
        gboolean batch_ok = run_batch(s, owner, &opt, answerer, &hb, jobs, stats, err);
        g_ptr_array_free(jobs, TRUE);
        if (!batch_ok)
            goto out;
    }
    ok = TRUE;
out:
    if (s != NULL) {
        /* Whatever is still held (a cancelled batch, an error) goes back without using an
         * attempt; on a database error this fails too and the leases expire instead. */
        int released = 0;
        if (store_jobs_release(s, owner, &released, NULL))
            stats->released += released;
    }
    if (hb_thread != NULL) {
        g_mutex_lock(&hb.lock);
        hb.quit = TRUE;
        g_cond_signal(&hb.cond);
        g_mutex_unlock(&hb.lock);
        g_thread_join(hb_thread);
    }
    if (hb.store != NULL) {
        store_jobs_finalize(hb.store);
        dq_store_close(hb.store);
    }
    if (s != NULL) {
        store_jobs_finalize(s);
        dq_store_close(s);
    }
    g_mutex_clear(&hb.lock);
    g_cond_clear(&hb.cond);
    g_free(owner);
    return ok;
}

void dq_answer_result_clear(DqAnswerResult *r) {
    g_clear_pointer(&r->text, g_free);
    g_clear_error(&r->error);
}
