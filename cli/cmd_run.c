/* docqa run: K worker processes answer the queued jobs (see jobs/queue.h). */
#include "cli.h"

#include "answerer.h"
#include "queue.h"
#include "store.h"

#include <stdio.h>
#include <unistd.h>

typedef struct {
    const char *model_dir;
    const char *device;
    const char *weights; /* NULL, "stored", "int8" or "bf16" */
    int prep_threads;    /* 0: the answerer's default */
} RunModel;

/* Runs in each worker process, after the fork. */
static DqAnswerer *open_smolvlm(void *user, GError **err) {
    const RunModel *m = user;
    DqSmolvlmAnswererOptions o = {
        .device = m->device, .weights = m->weights, .prep_threads = m->prep_threads};
    return dq_answerer_open_smolvlm(m->model_dir, &o, err);
}

int cmd_run(int argc, char **argv) {
    char *db = NULL, *model = NULL, *model_id_opt = NULL, *device = NULL, *weights = NULL;
    int batch = 1, workers = 1, lease_s = 60, prep_threads = 0;
    gint64 max_jobs = 0;
    gboolean until_empty = FALSE, quiet = FALSE;
    GOptionEntry entries[] = {
        {"db", 0, 0, G_OPTION_ARG_FILENAME, &db,
         "database file or postgresql:// URI (default $DOCQA_DB or docqa.db)", "DB"},
        {"model", 'm', 0, G_OPTION_ARG_FILENAME, &model,
         "SmolVLM snapshot directory (default $DOCQA_MODEL)", "DIR"},
        {"model-id", 0, 0, G_OPTION_ARG_STRING, &model_id_opt,
         "answer the jobs asked for this model id (default: the snapshot directory's name)", "ID"},
        {"device", 0, 0, G_OPTION_ARG_STRING, &device, "cpu, cuda or cuda:I (default cpu)", "DEV"},
        {"weights", 0, 0, G_OPTION_ARG_STRING, &weights,
         "stored (default); int8: the decoder's matrices quantized at load; bf16: every matrix as "
         "bf16, products in bf16 where the CPU has AVX512-BF16 (device cpu; both approximate)",
         "W"},
        {"batch", 'b', 0, G_OPTION_ARG_INT, &batch,
         "requests a worker decodes together; each finished one is replaced at once by a newly "
         "claimed job (continuous batching; default 1)",
         "N"},
        {"workers", 'k', 0, G_OPTION_ARG_INT, &workers, "worker processes (default 1)", "K"},
        {"prep-threads", 0, 0, G_OPTION_ARG_INT, &prep_threads,
         "threads a worker prepares pages on (PNG decode, image processor, tokenizer; default 1 "
         "on the CPU, on a GPU one a core but one, up to 8)",
         "T"},
        {"until-empty", 0, 0, G_OPTION_ARG_NONE, &until_empty,
         "exit when no job of the model is queued or running (default: keep waiting for work)",
         NULL},
        {"max-jobs", 0, 0, G_OPTION_ARG_INT64, &max_jobs, "stop after claiming M jobs in all", "M"},
        {"lease", 0, 0, G_OPTION_ARG_INT, &lease_s,
         "seconds a claim lasts without a heartbeat (default 60)", "S"},
        {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "no progress line", NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = g_option_context_new("- answer queued jobs with SmolVLM");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(
        ctx, "Each worker claims jobs under a lease, keeps up to --batch of them in the model "
             "(plus one more than its preprocessing threads, being prepared) and stores each "
             "answer as soon as it is finished. "
             "SIGINT/SIGTERM: workers give back the jobs in flight, exit 130. Exit 1 when some "
             "jobs failed (see docqa status).");
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    int rc = DQ_EXIT_FATAL;
    GError *err = NULL;
    char *model_id = NULL;
    const char *db_path = db ? db : dq_store_default_location();
    if (!ok)
        goto out;
    if (argc > 1) {
        fprintf(stderr, "docqa: run: unexpected argument '%s' (see --help)\n", argv[1]);
        goto out;
    }
    const char *model_dir = model ? model : g_getenv("DOCQA_MODEL");
    if (model_dir == NULL || *model_dir == '\0') {
        fprintf(stderr, "docqa: run: no model: give --model DIR (a SmolVLM snapshot; "
                        "scripts/download-model.sh fetches one) or set DOCQA_MODEL\n");
        goto out;
    }
    if (!g_file_test(model_dir, G_FILE_TEST_IS_DIR)) {
        fprintf(stderr, "docqa: run: %s: not a directory (expected a SmolVLM snapshot)\n",
                model_dir);
        goto out;
    }
    if (batch < 1 || workers < 1 || workers > 256 || lease_s < 1 || max_jobs < 0) {
        fprintf(stderr, "docqa: run: --batch, --workers (<= 256) and --lease must be positive\n");
        goto out;
    }
    if (prep_threads < 0 || prep_threads > 64) {
        fprintf(stderr, "docqa: run: --prep-threads must be between 1 and 64 (0: the default)\n");
        goto out;
    }
    model_id = model_id_opt ? g_strdup(model_id_opt) : queue_model_id(model_dir);

    /* Workers read page images from the page store (a shared directory for PostgreSQL). */
    char *page_dir = dq_store_page_dir_for(db_path, &err);
    if (page_dir == NULL) {
        rc = dq_cli_fail(err);
        goto out;
    }
    g_free(page_dir);
    /* Migrate and look before forking (no connection may cross the fork). */
    DqStore *store = dq_store_open(db_path, &err);
    if (store == NULL) {
        rc = dq_cli_fail(err);
        goto out;
    }
    DqJobCounts c;
    gboolean counted = store_jobs_counts(store, model_id, &c, &err);
    store_jobs_finalize(store);
    dq_store_close(store);
    if (!counted) {
        rc = dq_cli_fail(err);
        goto out;
    }
    if (c.by_state[DQ_JOB_QUEUED] + c.by_state[DQ_JOB_RUNNING] == 0 && c.pending_other > 0)
        fprintf(stderr,
                "docqa: run: no jobs for model '%s', but %" G_GINT64_FORMAT
                " for other models: ask with --model %s, or run with --model-id\n",
                model_id, c.pending_other, model_dir);

    RunModel rm = {.model_dir = model_dir,
                   .device = device ? device : "cpu",
                   .weights = weights,
                   .prep_threads = prep_threads};
    DqRunOptions ro = {.worker = {.db_path = db_path,
                                  .model_id = model_id,
                                  .batch = batch,
                                  .until_empty = until_empty,
                                  .lease_ms = (gint64)lease_s * 1000},
                       .n_workers = workers,
                       .max_jobs = max_jobs,
                       .progress = !quiet};
    DqRunResult res;
    gint64 t0 = g_get_monotonic_time();
    rc = queue_run(&ro, open_smolvlm, &rm, &res, &err);
    double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
    if (rc == DQ_EXIT_FATAL) {
        rc = dq_cli_fail(err);
        goto out;
    }
    printf("run: %" G_GINT64_FORMAT " answered, %" G_GINT64_FORMAT " failed, %" G_GINT64_FORMAT
           " retried, %" G_GINT64_FORMAT " given back in %.1f s (%.2f pages/s)%s\n",
           res.total.done, res.total.failed, res.total.retried, res.total.released, secs,
           secs > 0 ? (double)res.total.done / secs : 0.0, res.interrupted ? "; interrupted" : "");
out:
    g_free(db);
    g_free(model);
    g_free(model_id_opt);
    g_free(model_id);
    g_free(device);
    g_free(weights);
    return rc;
}
