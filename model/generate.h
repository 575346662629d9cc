/* Generation: several (images, prompt) requests in one call.
 *
 *   1. vision: all tiles of all requests through the encoder as one batch;
 *   2. prefill: every request's prompt (input_ids with the <image> tokens already expanded, the
 *      image features written into those rows), requests side by side with their own lengths,
 *      each into its own KV cache;
 *   3. decode: one new token per unfinished request per step, all requests in one forward call.
 *
 * A request never sees another's data: attention is per request, every other op is row-wise,
 * and each request has its own sampler state (seed), so its tokens do not depend on its
 * batch-mates.
 *
 *   SmolvlmRequest req = {.input_ids = ids, .n_input_ids = n, .images = tiles, .n_images = 1};
 *   dq_generate_options_init(&req.options, smolvlm_config(m));
 *   req.options.max_new_tokens = 64;
 *   DqGenerateResult res;
 *   DqGenerateTimings tm;
 *   if (!smolvlm_generate(m, &req, 1, &res, &tm, &err)) ...
 *   ... res.output_ids[0 .. res.n_output_ids) ...
 *   dq_generate_result_clear(&res);
 */
#ifndef DQ_GENERATE_H
#define DQ_GENERATE_H

#include "image_processor.h"
#include "smolvlm.h"

#include <glib.h>
#include <stdint.h>

typedef struct {
    int max_new_tokens;  /* > 0 */
    gboolean do_sample;  /* FALSE: greedy argmax of the raw logits */
    double temperature;  /* sampling: logits / temperature (> 0) */
    double top_p;        /* sampling: nucleus mass in (0, 1]; 1 = off */
    int top_k;           /* sampling: keep the k best (0 = off); transformers' default is 50 */
    uint64_t seed;       /* sampling: the request's own random stream */
    gboolean ignore_eos; /* generate exactly max_new_tokens; eos is neither a stop nor masked */
} DqGenerateOptions;

/* Defaults from generation_config.json (do_sample, temperature, top_p, top_k, max_new_tokens;
 * 256 when it sets none), seed 0, ignore_eos off. */
void dq_generate_options_init(DqGenerateOptions *opts, const SmolvlmConfig *cfg);

typedef struct {
    const int32_t *input_ids; /* the expanded prompt */
    int n_input_ids;
    const DqImageTiles *const *images; /* in prompt order; their tiles fill the <image> rows */
    int n_images;
    DqGenerateOptions options;
    gboolean want_logits; /* return the logits of the last prompt position */
} SmolvlmRequest;

typedef struct {
    int32_t *output_ids; /* generated ids (the eos that stopped it included) */
    int n_output_ids;
    gboolean stopped_on_eos;
    float *last_logits; /* [vocab_size] when want_logits, else NULL */
} DqGenerateResult;

typedef struct {
    double vision_ms, prefill_ms, decode_ms;
    int n_tiles;          /* tiles through the vision encoder */
    int prompt_tokens;    /* summed over requests */
    int decode_steps;     /* forward calls after prefill */
    int generated_tokens; /* summed over requests */
    double peak_rss_mb;   /* of the process, after the call */
} DqGenerateTimings;

/* Runs n requests; results[i] belongs to requests[i] (free each with dq_generate_result_clear).
 * timings may be NULL. On failure nothing is left allocated in results. */
gboolean smolvlm_generate(Smolvlm *m, const SmolvlmRequest *requests, int n,
                          DqGenerateResult *results, DqGenerateTimings *timings, GError **err);

void dq_generate_result_clear(DqGenerateResult *res);

/* The token chosen from logits [vocab] under opts (greedy: the first maximum). `rng` is the
 * request's state (seeded from opts->seed by the caller); `scratch` holds vocab floats + vocab
 * ints. Exposed for tests. */
int dq_sample_token(const float *logits, int vocab, const DqGenerateOptions *opts, uint64_t *rng,
                    void *scratch);

#endif
