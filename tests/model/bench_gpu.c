/* Pages per second through docqa's model on one device at several batch sizes, for
 * scripts/bench-gpu.sh (which runs transformers on the same pages beside it).
 *
 *   bench_gpu SNAPSHOT DEVICE N_RES MAX_NEW BATCHES IMAGE...
 *
 * DEVICE is cpu, cuda[:I], or host: backend_host.c's backend, whose ops do no arithmetic, so
 * that the times are the host's share of a GPU batch (and ops= counts the ops of the timed run).
 *
 * BATCHES is a comma list ("1,4,16,64"). Every page is preprocessed once up front (host work a
 * worker overlaps with the GPU); a batch of B requests takes pages round-robin from the IMAGE
 * list, asks each the DocVQA question and decodes exactly MAX_NEW greedy tokens (ignore_eos),
 * so that every implementation does the same work. Each batch size runs twice and the second run
 * is timed (device pools, cuBLAS plans for its shapes): scripts/bench_gpu_hf.py does the same,
 * whose first batch of 64 ran at half the speed of its second. Prints one line per batch size:
 *
 *   docqa device=cuda batch=16 pages=16 tiles=... tiles_distinct=... prompt_tokens=...
 * seconds=1.234 pages_per_s=12.97 vision_ms=... prefill_ms=... decode_ms=...
 * preprocess_ms_per_page=... vision_cpu_ms=... prefill_cpu_ms=... decode_cpu_ms=...
 *
 * *_cpu_ms: the host process's CPU time in each stage (all its threads), beside the wall time.
 *
 * tiles_distinct: the tiles the encoder ran on (identical tiles, such as blank margins, are
 * encoded once; transformers encodes every tile).
 */
#include "backend_cuda.h"
#include "backend_host.h"
#include "clock.h"
#include "generate.h"
#include "image_processor.h"
#include "prompt.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUESTION                                                                                   \
    "<|im_start|>User:<image>Look at the document and answer the question. Question: What is "     \
    "the date?<end_of_utterance>\nAssistant:"

typedef struct {
    DqImageTiles *tiles;
    const DqImageTiles *images[1];
    int32_t *ids;
    size_t n_ids;
} Page;

/* Exits, so that what main holds at the first error is the process's to free, not a leak. */
G_GNUC_NORETURN static void fail(GError *err) {
    fprintf(stderr, "bench_gpu: %s\n", err->message);
    g_error_free(err);
    exit(2);
}

static gboolean run_batch(Smolvlm *m, Page *pages, int n_pages, int batch, int max_new,
                          DqGenerateTimings *tm, double *seconds, GError **err) {
    SmolvlmRequest *reqs = g_new0(SmolvlmRequest, batch);
    for (int i = 0; i < batch; i++) {
        Page *p = &pages[i % n_pages];
        reqs[i] = (SmolvlmRequest){
            .input_ids = p->ids, .n_input_ids = (int)p->n_ids, .images = p->images, .n_images = 1};
        dq_generate_options_init(&reqs[i].options, smolvlm_config(m));
        reqs[i].options.do_sample = FALSE;
        reqs[i].options.max_new_tokens = max_new;
        reqs[i].options.ignore_eos = TRUE;
    }
    DqGenerateResult *res = g_new0(DqGenerateResult, batch);
    double t0 = dq_now_ms();
    gboolean ok = smolvlm_generate(m, reqs, batch, res, tm, err) &&
                  dq_backend_cuda_check(smolvlm_backend(m), err);
    *seconds = (dq_now_ms() - t0) / 1000.0;
    for (int i = 0; ok && i < batch; i++)
        dq_generate_result_clear(&res[i]);
    g_free(res);
    g_free(reqs);
    return ok;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s SNAPSHOT DEVICE N_RES MAX_NEW BATCHES IMAGE...\n", argv[0]);
        return 2;
    }
    const char *snap = argv[1], *device = argv[2];
    int n_res = atoi(argv[3]), max_new = atoi(argv[4]);
    char **batches = g_strsplit(argv[5], ",", -1);
    int n_pages = argc - 6;
    GError *err = NULL;

    SmolvlmOptions opts = {.device = device};
    if (strcmp(device, "host") == 0 && (opts.backend = dq_backend_host_new(&err)) == NULL)
        fail(err);
    Smolvlm *m = smolvlm_open(snap, &opts, &err);
    if (m == NULL)
        fail(err);
    DqTokenizer *tok = tokenizer_load_snapshot(snap, &err);
    if (tok == NULL)
        fail(err);
    int seq_len = prompt_image_seq_len_load(snap, &err);
    if (seq_len <= 0)
        fail(err);
    DqImageProcessorConfig pc;
    if (!image_processor_config_load(snap, &pc, &err))
        fail(err);
    image_processor_set_n_res(&pc, n_res);

    double t0 = dq_now_ms();
    Page *pages = g_new0(Page, n_pages);
    for (int i = 0; i < n_pages; i++) {
        DqImage *rgb = dq_image_load(argv[6 + i], DQ_EXIF_APPLY, &err);
        if (rgb == NULL)
            fail(err);
        pages[i].tiles = image_processor_run(&pc, rgb, &err);
        dq_image_free(rgb);
        if (pages[i].tiles == NULL)
            fail(err);
        pages[i].images[0] = pages[i].tiles;
        DqImageGrid grid = {pages[i].tiles->rows, pages[i].tiles->cols};
        char *expanded = prompt_expand(QUESTION, &grid, 1, seq_len, &err);
        if (expanded == NULL)
            fail(err);
        pages[i].ids = tokenizer_encode(tok, expanded, -1, &pages[i].n_ids, &err);
        g_free(expanded);
        if (pages[i].ids == NULL)
            fail(err);
    }
    double preprocess_ms = (dq_now_ms() - t0) / n_pages;

    DqGenerateTimings tm;
    double seconds;
    for (char **b = batches; *b != NULL; b++) {
        int batch = atoi(*b);
        if (batch <= 0)
            continue;
        uint64_t ops0 = 0;
        for (int run = 0; run < 2; run++) { /* a warm-up, then the timed run */
            if (opts.backend != NULL)
                ops0 = dq_backend_host_ops(opts.backend);
            if (!run_batch(m, pages, n_pages, batch, max_new, &tm, &seconds, &err))
                fail(err);
        }
        printf("docqa device=%s batch=%d pages=%d tiles=%d tiles_distinct=%d prompt_tokens=%d "
               "seconds=%.3f pages_per_s=%.3f vision_ms=%.0f prefill_ms=%.0f decode_ms=%.0f "
               "preprocess_ms_per_page=%.0f vision_cpu_ms=%.0f prefill_cpu_ms=%.0f "
               "decode_cpu_ms=%.0f",
               device, batch, batch, tm.n_tiles, tm.n_tiles_distinct, tm.prompt_tokens, seconds,
               batch / seconds, tm.vision_ms, tm.prefill_ms, tm.decode_ms, preprocess_ms,
               tm.vision_cpu_ms, tm.prefill_cpu_ms, tm.decode_cpu_ms);
        if (opts.backend != NULL) /* the ops of the timed run: a kernel launch or more each */
            printf(" ops=%" G_GUINT64_FORMAT, dq_backend_host_ops(opts.backend) - ops0);
        printf("\n");
        fflush(stdout);
    }
    for (int i = 0; i < n_pages; i++) {
        dq_image_tiles_free(pages[i].tiles);
        g_free(pages[i].ids);
    }
    g_free(pages);
    g_strfreev(batches);
    tokenizer_free(tok);
    smolvlm_free(m);
    return 0;
}
