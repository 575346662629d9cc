/* One page through the model end to end, for scripts/bench-model.sh: preprocess (N x tile), the
 * DocVQA prompt expanded and tokenized, vision, prefill, greedy decode (ignore_eos).
 *
 *   bench_model SNAPSHOT IMAGE [n_res=4] [max_new_tokens=32] [batch=1]
 *
 * Prints one line of key=value numbers: per-stage ms, decode tokens/s, peak RSS (MiB).
 *
 * DOCQA_BENCH_DECODE_REPEATS=R decodes R more times (batch 1) after a text-only prefill of the
 * same length (the <image> ids replaced by another id: a decode step costs the same whatever the
 * cached positions hold), and reports decode_tok_s as the median of the 1 + R runs, with every
 * run in decode_tok_s_runs: one decode of 32 tokens lasts a second, and a shared host's
 * neighbours move it by up to 2x.
 */
#include "clock.h"
#include "generate.h"
#include "image_processor.h"
#include "prompt.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Exits, so that what main holds at the first error is the process's to free, not a leak. */
G_GNUC_NORETURN static int fail(GError *err) {
    fprintf(stderr, "bench_model: %s\n", err->message);
    g_error_free(err);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s SNAPSHOT IMAGE [n_res] [max_new_tokens] [batch]\n", argv[0]);
        return 2;
    }
    const char *snap = argv[1], *image = argv[2];
    int n_res = argc > 3 ? atoi(argv[3]) : 4;
    int max_new = argc > 4 ? atoi(argv[4]) : 32;
    int batch = argc > 5 ? atoi(argv[5]) : 1;
    GError *err = NULL;

    double t0 = dq_now_ms();
    /* DOCQA_DEVICE: cpu (the fast backend, default), cpu-ref, cuda:I; DOCQA_WEIGHTS: int8 (the
     * decoder's matrices quantized at load) or unset; DOCQA_DRAFT: int8 (speculative decoding,
     * generate.h; DOCQA_DRAFT_TOKENS: guesses a step) or unset */
    Smolvlm *m = smolvlm_open(snap,
                              &(SmolvlmOptions){.device = g_getenv("DOCQA_DEVICE"),
                                                .weights = g_getenv("DOCQA_WEIGHTS"),
                                                .draft = g_getenv("DOCQA_DRAFT")},
                              &err);
    if (m == NULL)
        return fail(err);
    double load_ms = dq_now_ms() - t0;
    DqTokenizer *tok = tokenizer_load_snapshot(snap, &err);
    if (tok == NULL)
        return fail(err);
    int seq_len = prompt_image_seq_len_load(snap, &err);
    if (seq_len <= 0)
        return fail(err);

    t0 = dq_now_ms();
    double c0 = dq_cpu_ms();
    DqImageProcessorConfig pc;
    if (!image_processor_config_load(snap, &pc, &err))
        return fail(err);
    image_processor_set_n_res(&pc, n_res);
    DqImage *rgb = dq_image_load(image, DQ_EXIF_APPLY, &err);
    if (rgb == NULL)
        return fail(err);
    DqImageTiles *tiles = image_processor_run(&pc, rgb, &err);
    if (tiles == NULL)
        return fail(err);
    DqImageGrid grid = {tiles->rows, tiles->cols};
    char *expanded = prompt_expand("<|im_start|>User:<image>Look at the document and answer the "
                                   "question. Question: What is the date?<end_of_utterance>\n"
                                   "Assistant:",
                                   &grid, 1, seq_len, &err);
    if (expanded == NULL)
        return fail(err);
    size_t n_ids = 0;
    int32_t *ids = tokenizer_encode(tok, expanded, -1, &n_ids, &err);
    if (ids == NULL)
        return fail(err);
    double preprocess_ms = dq_now_ms() - t0, preprocess_cpu_ms = dq_cpu_ms() - c0;

    const DqImageTiles *images[1] = {tiles};
    SmolvlmRequest *reqs = g_new0(SmolvlmRequest, batch);
    for (int i = 0; i < batch; i++) {
        reqs[i] = (SmolvlmRequest){
            .input_ids = ids, .n_input_ids = (int)n_ids, .images = images, .n_images = 1};
        dq_generate_options_init(&reqs[i].options, smolvlm_config(m));
        reqs[i].options.do_sample = FALSE;
        reqs[i].options.max_new_tokens = max_new;
        reqs[i].options.ignore_eos = TRUE;
    }
    DqGenerateResult *res = g_new0(DqGenerateResult, batch);
    DqGenerateTimings tm;
    if (!smolvlm_generate(m, reqs, batch, res, &tm, &err))
        return fail(err);
    int decoded = tm.generated_tokens - batch; /* the first token of each comes from prefill */
    int repeats = batch == 1 ? atoi(g_getenv("DOCQA_BENCH_DECODE_REPEATS") ?: "0") : 0;
    double *rates = g_new(double, 1 + MAX(repeats, 0));
    rates[0] = tm.decode_ms > 0 ? decoded / (tm.decode_ms / 1000) : 0;
    GString *runs = g_string_new(NULL);
    g_string_append_printf(runs, "%.2f", rates[0]);
    int32_t *text_ids = g_memdup2(ids, n_ids * sizeof(int32_t));
    int other = smolvlm_config(m)->image_token_id == 0 ? 1 : 0;
    for (size_t i = 0; i < n_ids; i++)
        if (text_ids[i] == smolvlm_config(m)->image_token_id)
            text_ids[i] = other;
    for (int r = 0; r < repeats; r++) {
        SmolvlmRequest q = reqs[0];
        q.input_ids = text_ids;
        q.images = NULL;
        q.n_images = 0;
        DqGenerateResult rr;
        DqGenerateTimings rt;
        if (!smolvlm_generate(m, &q, 1, &rr, &rt, &err))
            return fail(err);
        rates[1 + r] = rt.decode_ms > 0 ? (rt.generated_tokens - 1) / (rt.decode_ms / 1000) : 0;
        g_string_append_printf(runs, ",%.2f", rates[1 + r]);
        dq_generate_result_clear(&rr);
    }
    int n_rates = 1 + MAX(repeats, 0);
    qsort(rates, n_rates, sizeof *rates, cmp_double);
    double rate =
        n_rates % 2 ? rates[n_rates / 2] : (rates[n_rates / 2 - 1] + rates[n_rates / 2]) / 2;
    /* the tokens, to compare runs (a draft must not change them) */
    guint32 out_hash = 2166136261u;
    for (int i = 0; i < res[0].n_output_ids; i++)
        out_hash = (out_hash ^ (guint32)res[0].output_ids[i]) * 16777619u;
    /* *_cpu_ms: the process's CPU time in the stage (the first decode's, not the repeats'): on
     * a shared host wall time grows with the neighbours, CPU time hardly */
    printf("model=%s tiles=%d prompt_tokens=%d batch=%d load_ms=%.0f preprocess_ms=%.0f "
           "vision_ms=%.0f prefill_ms=%.0f decode_ms=%.0f decode_tok_s=%.2f "
           "decode_tok_s_runs=%s peak_rss_mb=%.0f decode_calls=%d draft_tokens=%d "
           "draft_accepted=%d draft_ms=%.0f out_hash=%08x preprocess_cpu_ms=%.0f "
           "vision_cpu_ms=%.0f prefill_cpu_ms=%.0f decode_cpu_ms=%.0f\n",
           snap, tm.n_tiles, tm.prompt_tokens, batch, load_ms, preprocess_ms, tm.vision_ms,
           tm.prefill_ms, tm.decode_ms, rate, runs->str, tm.peak_rss_mb, tm.decode_steps,
           tm.draft_tokens, tm.draft_accepted, tm.draft_ms, out_hash, preprocess_cpu_ms,
           tm.vision_cpu_ms, tm.prefill_cpu_ms, tm.decode_cpu_ms);
    if (g_getenv("DOCQA_BENCH_PRINT_IDS") != NULL)
        for (int i = 0; i < res[0].n_output_ids; i++)
            printf("%d%c", res[0].output_ids[i], i + 1 < res[0].n_output_ids ? ' ' : '\n');
    g_string_free(runs, TRUE);
    g_free(rates);
    g_free(text_ids);
    for (int i = 0; i < batch; i++)
        dq_generate_result_clear(&res[i]);
    g_free(res);
    g_free(reqs);
    g_free(ids);
    g_free(expanded);
    dq_image_tiles_free(tiles);
    dq_image_free(rgb);
    tokenizer_free(tok);
    smolvlm_free(m);
    return 0;
}
