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
 *
 * Continuous batching (DqGenerator, below): a fixed number of slots; requests join while others
 * decode, and leave as soon as they finish, so a slot is refilled without waiting for the
 * slowest request. smolvlm_generate is the generator run once: add all, step until done.
 *
 *   DqGenerator *g = dq_generator_new(m, 8, 8, &err);     // 8 slots, features of 8 pages kept
 *                                                         // (and prompts' KV: the prefix cache)
 *   dq_generator_add(g, reqs, n, slots, &err);            // vision + prefill of the new ones
 *   while (dq_generator_n_active(g) > 0) {
 *       dq_generator_step(g, &err);                       // one token for every active slot
 *       int k = dq_generator_take_finished(g, done, 8);   // done[i].slot is free again
 *       ... dq_generator_add(g, more, ...) ...            // refill while the others go on
 *   }
 *   dq_generator_free(g);
 *
 * A request's tokens do not depend on when it joined or who else is in the generator: its
 * prefill runs in calls of its own batch of new requests with the same per-request chunking as
 * alone, and each decode row is computed as it would be alone (the backend's row-invariance
 * promises, backend.h; attention is per sequence). Nor on whether its prompt's first rows came
 * from the prefix cache (below): the backend promises that too where it is used.
 */
#ifndef DQ_GENERATE_H
#define DQ_GENERATE_H

#include "image_processor.h"
#include "smolvlm.h"

#include <glib.h>
#include <stdint.h>

typedef struct {
    int max_new_tokens;  /* > 0; generation also stops where the sequence (prompt + generated)
                          * reaches max_position_embeddings (DqGenerateResult) */
    gboolean do_sample;  /* FALSE: greedy argmax of the raw logits */
    double temperature;  /* sampling: logits / temperature (> 0) */
    double top_p;        /* sampling: nucleus mass in [0, 1] (0: the best token); 1 = off */
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
    /* Names the content of images[] (e.g. the page PNG's SHA-256 and the processor settings):
     * requests with the same key share one vision pass in a DqGenerator (the features of the
     * last few keys are kept). NULL: never shared. smolvlm_generate ignores it. */
    const char *features_key;
} SmolvlmRequest;

typedef struct {
    int32_t *output_ids; /* generated ids (the eos that stopped it included) */
    int n_output_ids;
    gboolean stopped_on_eos;
    /* Stopped before max_new_tokens because the sequence (prompt and generated ids) filled the
     * model's max_position_embeddings; transformers would go on past the positions the model
     * was trained for (RoPE has no table), docqa stops there. */
    gboolean stopped_on_positions;
    float *last_logits; /* [vocab_size] when want_logits, else NULL */
} DqGenerateResult;

typedef struct {
    double vision_ms, prefill_ms, decode_ms;
    /* The process's CPU time over the same stages (every thread's: in a worker, the page
     * preparing threads' too): on cores shared with other work wall time grows, CPU time not. */
    double vision_cpu_ms, prefill_cpu_ms, decode_cpu_ms;
    int n_tiles;          /* tiles through the vision encoder */
    int n_tiles_distinct; /* of them, those encoded: identical tiles are encoded once */
    int prompt_tokens;    /* summed over requests */
    int decode_steps;     /* forward calls after prefill */
    int generated_tokens; /* summed over requests */
    int features_reused;  /* requests whose image features came from a DqGenerator's cache or a
                             batch-mate with the same features_key, not from the encoder */
    int prefix_reused; /* requests that took a prompt prefix's KV (dq_generator_set_prefix_cache) */
    gint64 prefix_rows;  /* prompt rows they did not prefill so */
    size_t prefix_bytes; /* held by the prefix cache now */
    int draft_tokens;    /* speculative decoding: tokens the draft guessed */
    int draft_accepted;  /* ... and of them, those the model would have chosen (taken) */
    double draft_ms;     /* of decode_ms, in the draft's calls */
    double peak_rss_mb;  /* of the process, after the call */
} DqGenerateTimings;

/* Runs n requests; results[i] belongs to requests[i] (free each with dq_generate_result_clear).
 * timings may be NULL. On failure nothing is left allocated in results. */
gboolean smolvlm_generate(Smolvlm *m, const SmolvlmRequest *requests, int n,
                          DqGenerateResult *results, DqGenerateTimings *timings, GError **err);

void dq_generate_result_clear(DqGenerateResult *res);

/* ---- continuous batching */

typedef struct DqGenerator DqGenerator;

/* n_slots requests at most in flight; the image features of the cache_pages most recently used
 * features_keys are kept for reuse (0: none). KV caches are allocated when a slot is filled
 * (prompt + max_new_tokens positions, at most max_position_embeddings) and freed when its result is
 * taken; the workspace grows in dq_generator_add only, so a decode step allocates nothing. */
DqGenerator *dq_generator_new(Smolvlm *m, int n_slots, int cache_pages, GError **err);
void dq_generator_free(DqGenerator *g);

int dq_generator_n_slots(const DqGenerator *g);
int dq_generator_n_free(const DqGenerator *g);   /* slots that dq_generator_add may fill */
int dq_generator_n_active(const DqGenerator *g); /* requests still generating */

/* Adds n requests (n <= dq_generator_n_free): all their tiles through the vision encoder as one
 * batch (minus the features found by features_key, and those of requests whose <image> rows all
 * come from the prefix cache), their prompts prefilled side by side (minus the prefix rows taken,
 * dq_generator_set_prefix_cache), their first tokens chosen. slots[i] receives the slot of reqs[i].
 * The requests' buffers are not used after the call. On failure (a bad request: nothing added; the
 * model failed: these requests dropped) the requests already in the generator go on untouched. */
gboolean dq_generator_add(DqGenerator *g, const SmolvlmRequest *reqs, int n, int *slots,
                          GError **err);

/* One decode step: one new token for every active request, all in one forward call. On failure
 * every request in the generator is dropped (all slots free). */
gboolean dq_generator_step(DqGenerator *g, GError **err);

typedef struct {
    int slot;
    DqGenerateResult result; /* the caller's now (dq_generate_result_clear) */
    int prompt_tokens;
    int prefix_rows; /* of them, those whose KV came from the prefix cache or a batch-mate */
    /* Its share of the calls it took part in: a vision or prefill call's time split evenly
     * over the requests added together, a decode step's over the requests in it. */
    double vision_ms, prefill_ms, decode_ms;
} DqGeneratorDone;

/* Moves up to max finished requests (eos or max_new_tokens) into done[] and frees their slots;
 * returns how many. */
int dq_generator_take_finished(DqGenerator *g, DqGeneratorDone *done, int max);

/* Drops a slot's request, finished or not (cancellation); its result is lost. */
void dq_generator_drop(DqGenerator *g, int slot);

/* Speculative decoding, where the model was opened with a draft (SmolvlmOptions.draft): in a
 * step, each request takes up to k of the draft's guesses, checked by the model in one call
 * (generate.c explains how; the tokens are those of plain decoding, greedy or sampled, to the
 * bit). Possible while the active requests' rows, k + 1 each, fit one row-invariant call (k is
 * lowered to fit); 0 turns it off. adapt: guess only while guessing is measured to be faster than
 * plain steps; FALSE: whenever possible. The defaults: DQ_DRAFT_TOKENS_DEFAULT and adapt, or the
 * environment's DOCQA_DRAFT_TOKENS and DOCQA_DRAFT_ADAPT=0. */
#define DQ_DRAFT_TOKENS_DEFAULT 3
void dq_generator_set_draft(DqGenerator *g, int k, gboolean adapt);

/* The prefix cache: a request takes the KV cache rows of the longest prefix of its prompt's ids
 * that a recent request with the same features_key (the same images; or both without images)
 * or a batch-mate added before it computed, and prefills only the rest: a page's questions
 * share ~98% of their prompts (the page's <image> rows and the template before the question).
 * Bit-identical to prefilling the whole prompt: possible only where the backend promises it
 * (DqBackend.prompt_split_min: the fast CPU backend with float32 KV caches; not the reference,
 * not CUDA), with a rest of at least that many rows. The cache keeps up to `bytes` of prompts'
 * KV rows, least recently used out first (256M: 45 KB a row, 65 MB a page at N=5; 2.2B: 384 KB
 * a row), one entry for all the questions of a page; 0 turns prefix reuse off, batch-mates
 * included. DQ_PREFIX_CACHE_MB_DEFAULT MiB from dq_generator_new on. */
#define DQ_PREFIX_CACHE_MB_DEFAULT 1024
#define DQ_PREFIX_CACHE_MB_MAX     (1 << 20) /* what a MiB setting may say: 1 TiB */
void dq_generator_set_prefix_cache(DqGenerator *g, size_t bytes);

/* Totals since dq_generator_new (peak_rss_mb as of this call). */
void dq_generator_timings(const DqGenerator *g, DqGenerateTimings *out);

/* The token chosen from logits [vocab] under opts (greedy: the first maximum). `rng` is the
 * request's state (seeded from opts->seed by the caller); `scratch` holds vocab floats + vocab
 * ints. Exposed for tests. */
int dq_sample_token(const float *logits, int vocab, const DqGenerateOptions *opts, uint64_t *rng,
                    void *scratch);

#endif
