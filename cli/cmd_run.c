/* docqa run: K worker processes answer the queued jobs (see jobs/queue.h). */
#include "cli.h"

#include "answerer.h"
#include "backend_cuda.h"
#include "dq_error.h"
#include "generate.h"
#include "queue.h"
#include "smolvlm.h"
#include "store.h"
#include "store_jobs.h"
#include "text.h"

#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    const char *model_dir;
    GPtrArray *devices;     /* worker i runs on devices[i % len] */
    const char *weights;    /* NULL, "stored", "int8" or "bf16" */
    const char *draft;      /* NULL, "none" or "int8" */
    int prep_threads;       /* 0: the answerer's default */
    gint64 prefix_cache_mb; /* DqSmolvlmAnswererOptions' */
} RunModel;

/* The OpenMP team a CPU worker's model runs on beside T > 1 preprocessing threads: the cores
 * they leave it, at least one. A team of every core shares them with busy preprocessing
 * threads, and libgomp spins ~3 ms at each of its barriers before it sleeps (it spins only
 * ~100 times when it sees more threads of its own than CPUs; single-threaded preprocessing
 * threads are not counted): its members waited there for a core, and 24 jobs on the tiny model
 * took 10-30 s on 2 cores where they took 2 s with T = 1. */
static int cpu_model_threads(int threads, int prep_threads) {
    return prep_threads > 1 ? MAX(1, threads - prep_threads) : threads;
}

/* Runs in each worker process, after the fork, on the thread that will drive the model (the
 * backends take their team's size at open). */
static DqAnswerer *open_smolvlm(void *user, int index, GError **err) {
    const RunModel *m = user;
    const char *device = g_ptr_array_index(m->devices, index % m->devices->len);
    int cuda_index = -1;
    if (dq_device_parse(device, &cuda_index, NULL) && cuda_index < 0)
        omp_set_num_threads(cpu_model_threads(omp_get_max_threads(), m->prep_threads));
    DqSmolvlmAnswererOptions o = {.device = device,
                                  .weights = m->weights,
                                  .draft = m->draft,
                                  .prep_threads = m->prep_threads,
                                  .prefix_cache_mb = m->prefix_cache_mb};
    return dq_answerer_open_smolvlm(m->model_dir, &o, err);
}

/* The GPUs the workers could use, counted in a child process: a process that has touched CUDA
 * cannot hand it to children it forks, and the workers are forked from this one. */
static int count_gpus(char **why) {
    int fds[2];
    if (pipe(fds) != 0) {
        *why = g_strdup(g_strerror(errno));
        return 0;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        char *reason = NULL;
        int n = dq_cuda_device_count(&reason);
        char *msg = g_strdup_printf("%d %s", n, reason ? reason : "");
        ssize_t w = write(fds[1], msg, strlen(msg));
        _exit(w < 0 ? 1 : 0);
    }
    close(fds[1]);
    char buf[512] = "";
    ssize_t got = pid > 0 ? read(fds[0], buf, sizeof buf - 1) : -1;
    close(fds[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    buf[MAX(got, 0)] = '\0';
    char *rest = NULL;
    long n = strtol(buf, &rest, 10);
    if (got <= 0 || rest == buf || n <= 0) {
        *why = g_strdup(got > 0 && *rest == ' ' && rest[1] ? rest + 1 : "could not ask the driver");
        return 0;
    }
    return (int)n;
}

/* --device: one name or a comma list ("cuda:0,cuda:1"); "cuda:all" stands for every GPU. */
static GPtrArray *parse_devices(const char *spec, GError **err) {
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    char **items = g_strsplit(spec, ",", -1);
    for (char **it = items; *it; it++) {
        const char *name = g_strstrip(*it);
        int index;
        if (strcmp(name, "cuda:all") == 0) {
            char *why = NULL;
            int n = count_gpus(&why);
            if (n == 0) {
                dq_fail(err, DQ_ERR_UNSUPPORTED, "run: --device cuda:all: no GPU (%s)", why);
                g_free(why);
                goto fail;
            }
            for (int i = 0; i < n; i++)
                g_ptr_array_add(out, g_strdup_printf("cuda:%d", i));
        } else if (dq_device_parse(name, &index, err)) {
            g_ptr_array_add(out, g_strdup(name));
        } else {
            g_prefix_error(err, "run: --device: ");
            goto fail;
        }
    }
    g_strfreev(items);
    /* An empty value ("--device ''", an unset variable in a unit file) splits into no names:
     * without this every worker would pick its device from an empty list. */
    if (out->len == 0) {
        dq_fail(err, DQ_ERR_ARGS,
                "run: --device '': names no device (expected cpu, cpu-ref, cuda, cuda:I, a comma "
                "list of them or cuda:all)");
        g_ptr_array_free(out, TRUE);
        return NULL;
    }
    return out;
fail:
    g_strfreev(items);
    g_ptr_array_free(out, TRUE);
    return NULL;
}

/* The summary as JSON (README, "Exit statuses, signals and JSON"). */
static void print_json(const char *model_id, int workers, const DqRunResult *res, double secs,
                       const char *error) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    dq_cli_json_string(b, "model_id", model_id);
    dq_cli_json_int(b, "workers", workers);
    dq_cli_json_int(b, "claimed", res->total.claimed);
    dq_cli_json_int(b, "answered", res->total.done);
    dq_cli_json_int(b, "failed", res->total.failed);
    dq_cli_json_int(b, "buried", res->total.buried);
    dq_cli_json_int(b, "buried_answered_late", res->buried_answered);
    dq_cli_json_int(b, "retried", res->total.retried);
    dq_cli_json_int(b, "given_back", res->total.released);
    dq_cli_json_int(b, "withdrawn", res->total.withdrawn);
    dq_cli_json_int(b, "answered_too_late", res->total.lost);
    dq_cli_json_int(b, "workers_crashed", res->workers_crashed);
    dq_cli_json_int(b, "device_failures", res->device_failures);
    dq_cli_json_int(b, "workers_replaced", res->device_restarts);
    /* to the decimals the summary line shows */
    dq_cli_json_double(b, "seconds", secs, 1);
    dq_cli_json_double(b, "answers_per_second", secs > 0 ? (double)res->total.done / secs : 0.0, 2);
    json_builder_set_member_name(b, "interrupted");
    json_builder_add_boolean_value(b, res->interrupted);
    /* what stopped the workers (exit status 2), else null */
    dq_cli_json_string(b, "error", error);
    json_builder_end_object(b);
    dq_cli_json_print(b, TRUE);
}

/* A model id is only a name (the snapshot folder's, or --model-id's): when answers already
 * stored under it came from other snapshots, says so on one line. Not refused: a folder renamed
 * or moved, or a snapshot fetched again, is the same model, and its fingerprint says so; two
 * fingerprints are worth a look, not a stopped nightly run. A snapshot that cannot be hashed is
 * left to the workers, whose load names what is wrong with it. */
static gboolean warn_other_snapshots(DqStore *store, const char *model_id, const char *model_dir,
                                     GError **err) {
    char *mine = smolvlm_snapshot_fingerprint(model_dir, NULL);
    if (mine == NULL)
        return TRUE;
    GPtrArray *snaps = store_jobs_model_snapshots(store, model_id, err);
    if (snaps == NULL) {
        g_free(mine);
        return FALSE;
    }
    GString *others = g_string_new(NULL);
    gint64 n_other = 0;
    for (guint i = 0; i < snaps->len; i++) {
        const DqModelSnapshot *m = g_ptr_array_index(snaps, i);
        if (strcmp(m->fingerprint, mine) == 0)
            continue;
        g_string_append_printf(others, "%s%" G_GINT64_FORMAT " from %.12s",
                               others->len > 0 ? ", " : "", m->answers, m->fingerprint);
        n_other += m->answers;
    }
    if (n_other > 0)
        dq_print_line(
            stderr,
            "docqa: run: warning: model '%s': this snapshot (%s) is %.12s, but %" G_GINT64_FORMAT
            " answer%s stored under '%s' came from another (%s); v_answers.model_fingerprint "
            "tells them apart",
            model_id, model_dir, mine, n_other, n_other == 1 ? "" : "s", model_id, others->str);
    g_string_free(others, TRUE);
    g_ptr_array_free(snaps, TRUE);
    g_free(mine);
    return TRUE;
}

/* "nothing queued (2 done, ...) for model 'm', but 5 jobs wait for other model ids: 'x' (4
 * queued), 'y' (1 running)". The model's finished jobs are named: "no jobs" for a model whose
 * jobs are all answered reads as if they were lost. */
static char *others_waiting(DqStore *store, const char *model_id, const DqJobCounts *c,
                            GError **err) {
    enum { NAMED = 5 };
    GPtrArray *others = store_jobs_pending_models(store, model_id, NAMED + 1, err);
    if (others == NULL)
        return NULL;
    GString *text = g_string_new(NULL);
    if (c->total == 0)
        g_string_append(text, "no jobs");
    else
        g_string_printf(text,
                        "nothing queued (%" G_GINT64_FORMAT " done, %" G_GINT64_FORMAT
                        " failed, %" G_GINT64_FORMAT " dead, %" G_GINT64_FORMAT " cancelled)",
                        c->by_state[DQ_JOB_DONE], c->by_state[DQ_JOB_FAILED],
                        c->by_state[DQ_JOB_DEAD], c->by_state[DQ_JOB_CANCELLED]);
    /* Shown as text docqa did not write when the line is printed (dq_print_line). */
    g_string_append_printf(text,
                           " for model '%s', but %" G_GINT64_FORMAT " job%s queued or running "
                           "for other model ids: ",
                           model_id, c->pending_other, c->pending_other == 1 ? "" : "s");
    for (guint i = 0; i < others->len && i < NAMED; i++) {
        const DqModelPending *m = g_ptr_array_index(others, i);
        g_string_append_printf(text, "%s'%s' (", i ? ", " : "", m->model_id);
        if (m->queued > 0)
            g_string_append_printf(text, "%" G_GINT64_FORMAT " queued", m->queued);
        if (m->running > 0)
            g_string_append_printf(text, "%s%" G_GINT64_FORMAT " running", m->queued ? ", " : "",
                                   m->running);
        g_string_append_c(text, ')');
    }
    if (others->len > NAMED)
        g_string_append(text, ", ...");
    g_ptr_array_free(others, TRUE);
    return g_string_free(text, FALSE);
}

/* --retry-delay's largest: the backoff stops doubling at an hour (store_jobs_fail), so a first
 * step beyond it would be cut to an hour anyway. */
#define DQ_RETRY_DELAY_MAX_S 3600

/* The command line, and what it comes to. */
typedef struct {
    char *db, *model, *model_id_opt, *device, *weights, *draft, *workers_text, *max_jobs_text,
        *prefix_text, *retry_delay_text;
    int batch, lease_s, prep_threads; /* prep_threads G_MININT: not given */
    gint64 workers, max_jobs;         /* 0: not given (one worker a device; no limit) */
    gint64 retry_delay_s;             /* the backoff's first step */
    gboolean until_empty, quiet, other_models_ok, json;
    const char *db_path, *model_dir;
    gint64 prefix_mb;
    GPtrArray *devices;
    char *model_id;
    char *mismatch; /* others_waiting's line: nothing queued for this model, jobs for others */
    gint64 errors_before; /* the newest job_errors id before the workers started */
    /* This run's, in its workers' ids: their failures told from those of workers of the same
     * model elsewhere, recorded meanwhile (run_say_failures) */
    char owner_tag[17];
    GArray *buried; /* gint64: jobs the workers' claims buried */
} RunArgs;

static gboolean run_parse(RunArgs *a, int argc, char **argv) {
    GOptionEntry entries[] = {
        {"db", 0, 0, G_OPTION_ARG_FILENAME, &a->db,
         "database file or postgresql:// URI (default $DOCQA_DB or docqa.db)", "DB"},
        {"model", 'm', 0, G_OPTION_ARG_FILENAME, &a->model,
         "SmolVLM snapshot directory (default $DOCQA_MODEL)", "DIR"},
        {"model-id", 0, 0, G_OPTION_ARG_FILENAME, &a->model_id_opt, /* bytes, checked as UTF-8 */
         "answer the jobs asked for this model id (default: the snapshot directory's name; for "
         "jobs asked with another --model, e.g. a bare id, or a snapshot since renamed)",
         "ID"},
        {"device", 0, 0, G_OPTION_ARG_STRING, &a->device,
         "cpu (the fast CPU backend, default), cpu-ref (the float32 reference, slow), cuda or "
         "cuda:I; a comma list (cuda:0,cuda:1) or cuda:all: one worker a device",
         "DEV"},
        {"weights", 0, 0, G_OPTION_ARG_STRING, &a->weights,
         "stored (default); int8: the decoder's matrices quantized at load; bf16: every matrix as "
         "bf16, products in bf16 where the CPU has AVX512-BF16 (device cpu; both approximate)",
         "W"},
        {"draft", 0, 0, G_OPTION_ARG_STRING, &a->draft,
         "none (default); int8: speculative decoding, an int8 copy of the decoder guessing tokens "
         "that the model checks (the same answers; faster while few requests decode at once; "
         "device cpu)",
         "D"},
        {"batch", 'b', 0, G_OPTION_ARG_INT, &a->batch,
         "requests a worker decodes together; each finished one is replaced at once by a newly "
         "claimed job (continuous batching; 1 to " G_STRINGIFY(DQ_MAX_BATCH) ", default 1)",
         "N"},
        {"workers", 'k', 0, G_OPTION_ARG_STRING, &a->workers_text,
         "worker processes, dealt to the devices in turn (1 to 256; default: one a device)", "K"},
        {"prep-threads", 0, 0, G_OPTION_ARG_INT, &a->prep_threads,
         "threads a worker prepares pages on (PNG decode, image processor, tokenizer; default 1 "
         "on the CPU, on a GPU one a core but one, up to 8)",
         "T"},
        {"prefix-cache", 0, 0, G_OPTION_ARG_STRING, &a->prefix_text,
         "MiB of KV cache a worker keeps of recent prompts, so that a page's next question "
         "prefills only what follows the part its prompt shares (the same answers; 0: off; "
         "default $DOCQA_PREFIX_CACHE_MB or " G_STRINGIFY(DQ_PREFIX_CACHE_MB_DEFAULT) ")",
         "MIB"},
        {"until-empty", 0, 0, G_OPTION_ARG_NONE, &a->until_empty,
         "exit when no job of the model is queued or running (default: keep waiting for work)",
         NULL},
        {"other-models-ok", 0, 0, G_OPTION_ARG_NONE, &a->other_models_ok,
         "with --until-empty: nothing queued for this model while jobs wait for other model ids "
         "is no failure (several models share the queue, each run in turn; default: exit 1)",
         NULL},
        {"max-jobs", 0, 0, G_OPTION_ARG_STRING, &a->max_jobs_text,
         "stop after claiming M jobs in all (M >= 1; default: no limit)", "M"},
        {"lease", 0, 0, G_OPTION_ARG_INT, &a->lease_s,
         "seconds a claim lasts without a heartbeat (default 60)", "S"},
        {"retry-delay", 0, 0, G_OPTION_ARG_STRING, &a->retry_delay_text,
         "seconds a job that failed retryably waits before its next attempt, doubled at each "
         "attempt up to an hour (1 to " G_STRINGIFY(DQ_RETRY_DELAY_MAX_S) "; default 5)",
         "S"},
        {"quiet", 'q', 0, G_OPTION_ARG_NONE, &a->quiet, "no progress line", NULL},
        {"json", 0, 0, G_OPTION_ARG_NONE, &a->json,
         "print the summary as one JSON object on stdout (also after an error that stopped the "
         "workers)",
         NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = g_option_context_new("- answer queued jobs with SmolVLM");
    dq_cli_add_options(ctx, entries, NULL);
    g_option_context_set_description(
        ctx, "Each worker claims jobs under a lease, keeps up to --batch of them in the model "
             "(plus one more than its preprocessing threads, being prepared) and stores each "
             "answer as soon as it is finished. "
             "SIGINT, SIGTERM or SIGHUP: workers give back the jobs in flight, exit 130. Exit 1 "
             "when some jobs failed (see docqa status), or, with --until-empty, when nothing was "
             "queued for this model id while jobs wait for others (named on stderr); 2 when the "
             "workers could not run or stopped on an error (the summary says what they did "
             "before).");
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    a->db_path = a->db ? a->db : dq_store_default_location();
    if (ok && argc > 1) {
        dq_print_line(stderr, "docqa: run: unexpected argument '%s' (see --help)", argv[1]);
        return FALSE;
    }
    return ok;
}

static gboolean run_find_model(RunArgs *a) {
    a->model_dir = a->model ? a->model : g_getenv("DOCQA_MODEL");
    if (a->model_dir == NULL || *a->model_dir == '\0') {
        dq_print_line(stderr, "docqa: run: no model: give --model DIR (a SmolVLM snapshot; "
                              "scripts/download-model.sh fetches one) or set DOCQA_MODEL");
        return FALSE;
    }
    return dq_cli_model_dir("run", a->model ? "--model" : "DOCQA_MODEL", a->model_dir);
}

/* Values the workers would refuse, refused before the queue is looked at. */
static gboolean run_check_worker_values(RunArgs *a) {
    const char *weights = a->weights, *draft = a->draft;
    if (weights != NULL && strcmp(weights, "stored") != 0 && strcmp(weights, "int8") != 0 &&
        strcmp(weights, "bf16") != 0) {
        dq_print_line(stderr, "docqa: run: --weights %s: unknown (expected stored, int8 or bf16)",
                      weights);
        return FALSE;
    }
    if (draft != NULL && strcmp(draft, "none") != 0 && strcmp(draft, "int8") != 0) {
        dq_print_line(stderr, "docqa: run: --draft %s: unknown (expected none or int8)", draft);
        return FALSE;
    }
    if (a->batch < 1 || a->batch > DQ_MAX_BATCH) {
        dq_print_line(stderr, "docqa: run: --batch %d: must be between 1 and %d", a->batch,
                      DQ_MAX_BATCH);
        return FALSE;
    }
    if (a->lease_s < 1) {
        dq_print_line(stderr, "docqa: run: --lease %d: must be a positive number of seconds",
                      a->lease_s);
        return FALSE;
    }
    return dq_cli_utf8_option("run", "--model-id", a->model_id_opt) &&
           dq_cli_int_option("run", "--workers", a->workers_text, 1, 256, &a->workers) &&
           dq_cli_int_option("run", "--max-jobs", a->max_jobs_text, 1, G_MAXINT64, &a->max_jobs) &&
           dq_cli_int_option("run", "--retry-delay", a->retry_delay_text, 1, DQ_RETRY_DELAY_MAX_S,
                             &a->retry_delay_s);
}

/* 0 turns it off; the answerer reads 0 as its default, so off travels as -1 (run_workers). */
static gboolean run_read_prefix_cache(RunArgs *a) {
    a->prefix_mb = DQ_PREFIX_CACHE_MB_DEFAULT;
    const char *prefix_env = g_getenv("DOCQA_PREFIX_CACHE_MB");
    if (a->prefix_text == NULL && prefix_env != NULL && *prefix_env != '\0' &&
        !dq_cli_int_option("run", "DOCQA_PREFIX_CACHE_MB", prefix_env, 0, DQ_PREFIX_CACHE_MB_MAX,
                           &a->prefix_mb))
        return FALSE;
    return dq_cli_int_option("run", "--prefix-cache", a->prefix_text, 0, DQ_PREFIX_CACHE_MB_MAX,
                             &a->prefix_mb);
}

static gboolean run_check_prep_threads(RunArgs *a) {
    /* 0 is refused, not taken as "the default": it reads as "no preprocessing threads",
     * which a worker cannot run with. */
    if (a->prep_threads != G_MININT &&
        (a->prep_threads < 1 || a->prep_threads > DQ_MAX_PREP_THREADS)) {
        dq_print_line(
            stderr,
            "docqa: run: --prep-threads %d: must be between 1 and %d (leave it out for the "
            "default)",
            a->prep_threads, DQ_MAX_PREP_THREADS);
        return FALSE;
    }
    if (a->prep_threads == G_MININT)
        a->prep_threads = 0; /* the answerer's default */
    return TRUE;
}

static int run_check_options(RunArgs *a) {
    if (!run_find_model(a) || !run_check_worker_values(a) || !run_read_prefix_cache(a) ||
        !run_check_prep_threads(a))
        return DQ_EXIT_FATAL;
    GError *err = NULL;
    if ((a->devices = parse_devices(a->device ? a->device : "cpu", &err)) == NULL)
        return dq_cli_fail(err);
    if (a->workers == 0)
        a->workers = MIN(a->devices->len, 256);
    a->model_id = a->model_id_opt ? g_strdup(a->model_id_opt) : queue_model_id(a->model_dir);
    return DQ_EXIT_OK;
}

static int run_look_at_queue(RunArgs *a) {
    GError *err = NULL;
    /* Workers read page images from the page store (a shared directory for PostgreSQL). */
    char *page_dir = dq_store_page_dir_for(a->db_path, &err);
    if (page_dir == NULL)
        return dq_cli_fail(err);
    g_free(page_dir);
    char *ignored = dq_store_pages_env_ignored(a->db_path);
    if (ignored != NULL)
        dq_print_line(stderr, "docqa: run: %s", ignored);
    g_free(ignored);
    /* Migrate and look before forking (no connection may cross the fork). */
    DqStore *store = dq_store_open_existing(a->db_path, &err);
    if (store == NULL)
        return dq_cli_fail_in("run", FALSE, err);
    DqJobCounts c;
    /* Nothing of this model's to do while others' jobs wait: ask and run given different
     * models, or a snapshot folder renamed since the jobs were asked. A run that waits for work
     * says so and waits; one told to stop when its queue is empty would stop at once, having
     * answered nothing, and a nightly job would report success every night: it fails (exit 1)
     * unless --other-models-ok says several models share the queue on purpose. */
    gboolean counted =
        store_jobs_last_error_id(store, &a->errors_before, &err) &&
        store_jobs_counts(store, a->model_id, &c, &err) &&
        warn_other_snapshots(store, a->model_id, a->model_dir, &err) &&
        (c.by_state[DQ_JOB_QUEUED] + c.by_state[DQ_JOB_RUNNING] > 0 || c.pending_other == 0 ||
         (a->mismatch = others_waiting(store, a->model_id, &c, &err)) != NULL);
    store_jobs_finalize(store);
    dq_store_close(store);
    if (!counted)
        return dq_cli_fail(err);
    if (a->mismatch != NULL && (!a->until_empty || a->other_models_ok))
        dq_print_line(stderr, "docqa: run: %s: ask with --model %s, or run with --model-id ID",
                      a->mismatch, a->model_dir);
    return DQ_EXIT_OK;
}

#define RUN_REASONS_SHOWN   3    /* causes a run's end names; docqa status has them all */
#define RUN_EXAMPLE_CHARS   400  /* of each cause's example message: a page store path is ~110 */
#define RUN_REASONS_COUNTED 1000 /* causes counted for "and N more" */

/* Why the jobs that failed during the run did (its own, by owner_tag and buried: a worker of
 * the same model elsewhere records its own failures meanwhile), on stderr after the summary:
 * "N failed" alone sends the user to docqa status, the cause is what they act on. Grouped as
 * status groups them (store_jobs_top_errors: a cause with the paths left out), each with one
 * message whole, which names the file or the question. Nothing when the database cannot be
 * read now (the error that stopped the run said why). */
static void run_say_failures(const RunArgs *a) {
    GError *err = NULL;
    DqStore *store = dq_store_open_existing(a->db_path, &err);
    GPtrArray *why = store ? store_jobs_errors_after(store, a->model_id, a->errors_before,
                                                     a->owner_tag, (const gint64 *)a->buried->data,
                                                     (int)a->buried->len, RUN_REASONS_COUNTED, &err)
                           : NULL;
    if (store != NULL) {
        store_jobs_finalize(store);
        dq_store_close(store);
    }
    g_clear_error(&err);
    if (why == NULL || why->len == 0) {
        if (why != NULL)
            g_ptr_array_free(why, TRUE);
        return;
    }
    gint64 jobs = 0;
    for (guint i = 0; i < why->len; i++)
        jobs += ((DqErrorReason *)g_ptr_array_index(why, i))->jobs;
    dq_cli_flush_stdout();
    dq_print_line(stderr, "docqa: run: why %" G_GINT64_FORMAT " job%s failed:", jobs,
                  jobs == 1 ? "" : "s");
    for (guint i = 0; i < why->len && i < RUN_REASONS_SHOWN; i++) {
        const DqErrorReason *r = g_ptr_array_index(why, i);
        char *example = dq_text_show(r->example, -1, DQ_SHOW_LINE, RUN_EXAMPLE_CHARS);
        dq_print_line(stderr, "  %s, %" G_GINT64_FORMAT " job%s: %s", r->kind, r->jobs,
                      r->jobs == 1 ? "" : "s", example);
        g_free(example);
    }
    if (why->len > RUN_REASONS_SHOWN)
        dq_print_line(stderr, "  and %u more cause%s: docqa status lists them",
                      why->len - RUN_REASONS_SHOWN, why->len - RUN_REASONS_SHOWN == 1 ? "" : "s");
    g_ptr_array_free(why, TRUE);
}

/* The message of an error that stopped the workers, then the summary of what they did, then
 * the exit status. */
static int run_report(const RunArgs *a, int rc, const DqRunResult *res, double secs, GError *err) {
    /* A run that stopped on an error (a full disk, a lock held for 10 minutes) may have
     * answered jobs first: the message, then the summary of what it did. */
    char *error = rc == DQ_EXIT_FATAL && err != NULL ? g_strdup(err->message) : NULL;
    if (rc == DQ_EXIT_FATAL)
        dq_cli_fail(g_steal_pointer(&err));
    if (a->json) {
        print_json(a->model_id, (int)a->workers, res, secs, error);
    } else {
        char *summary = queue_run_summary(res, secs);
        printf("%s%s\n", summary,
               rc == DQ_EXIT_FATAL && !res->interrupted ? "; stopped by the error above" : "");
        g_free(summary);
    }
    g_free(error);
    if (res->total.failed > 0)
        run_say_failures(a);
    /* Said last, where a wrapper's log ends; not when jobs of this model came meanwhile. */
    if (a->mismatch != NULL && a->until_empty && !a->other_models_ok && rc == DQ_EXIT_OK &&
        res->total.done == 0 && res->total.failed == 0 && !res->interrupted) {
        dq_cli_flush_stdout();
        dq_print_line(stderr,
                      "docqa: run: %s: nothing was answered; ask with --model %s, or run with "
                      "--model-id ID (--other-models-ok: no failure when several models share "
                      "the queue)",
                      a->mismatch, a->model_dir);
        rc = DQ_EXIT_PARTIAL;
    }
    return rc;
}

static int run_workers(RunArgs *a) {
    g_snprintf(a->owner_tag, sizeof(a->owner_tag), "%08x%08x", g_random_int(), g_random_int());
    a->buried = g_array_new(FALSE, FALSE, sizeof(gint64));
    RunModel rm = {.model_dir = a->model_dir,
                   .devices = a->devices,
                   .weights = a->weights,
                   .draft = a->draft,
                   .prep_threads = a->prep_threads,
                   .prefix_cache_mb = a->prefix_mb > 0 ? a->prefix_mb : -1};
    DqRunOptions ro = {.worker = {.db_path = a->db_path,
                                  .model_id = a->model_id,
                                  .batch = a->batch,
                                  .until_empty = a->until_empty,
                                  .lease_ms = (gint64)a->lease_s * 1000,
                                  .backoff_ms = a->retry_delay_s * 1000,
                                  .owner_tag = a->owner_tag},
                       .n_workers = (int)a->workers,
                       .max_jobs = a->max_jobs,
                       .progress = !a->quiet,
                       .buried_ids = a->buried};
    DqRunResult res;
    GError *err = NULL;
    gint64 t0 = g_get_monotonic_time();
    int rc = queue_run(&ro, open_smolvlm, &rm, &res, &err);
    double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
    /* The workers are gone: a signal from here on must not cut the summary short. */
    dq_cli_signals_record();
    return run_report(a, rc, &res, secs, err);
}

static void run_args_clear(RunArgs *a) {
    g_free(a->mismatch);
    g_free(a->db);
    g_free(a->model);
    g_free(a->model_id_opt);
    g_free(a->model_id);
    g_free(a->device);
    g_free(a->weights);
    g_free(a->draft);
    g_free(a->workers_text);
    g_free(a->max_jobs_text);
    g_free(a->prefix_text);
    g_free(a->retry_delay_text);
    if (a->buried)
        g_array_free(a->buried, TRUE);
    if (a->devices)
        g_ptr_array_free(a->devices, TRUE);
}

int cmd_run(int argc, char **argv) {
    RunArgs a = {.batch = 1, .lease_s = 60, .prep_threads = G_MININT};
    int rc = run_parse(&a, argc, argv) ? run_check_options(&a) : DQ_EXIT_FATAL;
    if (rc == DQ_EXIT_OK)
        rc = run_look_at_queue(&a);
    if (rc == DQ_EXIT_OK)
        rc = run_workers(&a);
    run_args_clear(&a);
    return rc;
}
