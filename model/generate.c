#include "generate.h"

#include "clock.h"
#include "dq_error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Prompt rows per prefill forward call: bounds the activations (2.2B: 2048 rows x 8192 MLP
 * floats x 2 = 128 MB) while keeping the GEMMs large. Rows are independent outside attention and
 * attention reads the KV cache, so the split never changes a result. */
#define DQ_PREFILL_ROWS 2048

void dq_generate_options_init(DqGenerateOptions *opts, const SmolvlmConfig *cfg) {
    memset(opts, 0, sizeof *opts);
    opts->max_new_tokens = cfg->max_new_tokens > 0 ? cfg->max_new_tokens : 256;
    opts->do_sample = cfg->do_sample;
    opts->temperature = cfg->temperature;
    opts->top_p = cfg->top_p;
    opts->top_k = cfg->top_k;
}

void dq_generate_result_clear(DqGenerateResult *res) {
    g_free(res->output_ids);
    g_free(res->last_logits);
    memset(res, 0, sizeof *res);
}

/* ---- sampling */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* qsort_r (glibc): no global state, so workers may sample from several threads. */
static int by_logit_desc(const void *a, const void *b, void *user) {
    const float *logits = user;
    float x = logits[*(const int *)a], y = logits[*(const int *)b];
    if (x != y)
        return x < y ? 1 : -1;
    return *(const int *)a - *(const int *)b; /* ties: lower id first, deterministic */
}

int dq_sample_token(const float *logits, int vocab, const DqGenerateOptions *opts, uint64_t *rng,
                    void *scratch) {
    int best = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > logits[best])
            best = i; /* the first maximum, as torch.argmax */
    if (!opts->do_sample)
        return best;
    /* transformers' order: temperature, top-k, top-p, softmax, multinomial. */
    float *probs = scratch;              /* [vocab] */
    int *order = (int *)(probs + vocab); /* [vocab] */
    double t = opts->temperature > 0 ? opts->temperature : 1.0;
    for (int i = 0; i < vocab; i++)
        order[i] = i;
    qsort_r(order, vocab, sizeof *order, by_logit_desc, (void *)logits);
    int keep = vocab;
    if (opts->top_k > 0 && opts->top_k < keep)
        keep = opts->top_k;
    double mx = logits[order[0]] / t, sum = 0;
    for (int i = 0; i < keep; i++) {
        probs[i] = (float)exp(logits[order[i]] / t - mx);
        sum += probs[i];
    }
    if (opts->top_p > 0 && opts->top_p < 1.0) {
        /* Smallest prefix whose mass reaches top_p (at least one token). */
        double cum = 0;
        int k = 0;
        while (k < keep && cum < opts->top_p * sum)
            cum += probs[k++];
        keep = MAX(k, 1);
        sum = cum > 0 ? cum : probs[0];
    }
    double u = (double)(splitmix64(rng) >> 11) * 0x1.0p-53 * sum;
    double acc = 0;
    for (int i = 0; i < keep; i++) {
        acc += probs[i];
        if (u < acc)
            return order[i];
    }
    return order[keep - 1];
}

/* ---- batched generation */

typedef struct {
    SmolvlmKV *kv;
    float *logits; /* host [vocab] */
    int feat_off;  /* first row of its image features */
    int n_features;
    int cursor;    /* image feature rows used so far */
    int prefilled; /* prompt rows already through the decoder */
    uint64_t rng;
    gboolean done;
} ReqState;

static gboolean check_request(const Smolvlm *m, const SmolvlmRequest *r, int index, GError **err) {
    const SmolvlmConfig *c = smolvlm_config(m);
    if (r->n_input_ids <= 0 || r->input_ids == NULL)
        return dq_fail(err, DQ_ERR_ARGS, "request %d: empty prompt", index);
    if (r->options.max_new_tokens <= 0)
        return dq_fail(err, DQ_ERR_ARGS, "request %d: max_new_tokens must be positive", index);
    if (r->options.do_sample && !(r->options.temperature > 0))
        return dq_fail(err, DQ_ERR_ARGS, "request %d: temperature must be positive", index);
    int n_image_ids = 0;
    for (int i = 0; i < r->n_input_ids; i++)
        n_image_ids += r->input_ids[i] == c->image_token_id;
    int tiles = 0;
    for (int i = 0; i < r->n_images; i++) {
        const DqImageTiles *t = r->images[i];
        if (t == NULL || t->n_tiles <= 0 || t->pixels == NULL)
            return dq_fail(err, DQ_ERR_ARGS, "request %d: image %d has no tiles", index, i);
        if (t->tile_size != c->image_size)
            return dq_fail(err, DQ_ERR_ARGS,
                           "request %d: image %d has %d px tiles, the model takes %d px", index, i,
                           t->tile_size, c->image_size);
        tiles += t->n_tiles;
    }
    if (n_image_ids != tiles * c->tokens_per_tile)
        return dq_fail(err, DQ_ERR_ARGS,
                       "request %d: the prompt has %d <image> tokens, its %d images give %d "
                       "tiles x %d tokens",
                       index, n_image_ids, r->n_images, tiles, c->tokens_per_tile);
    return TRUE;
}

gboolean smolvlm_generate(Smolvlm *m, const SmolvlmRequest *requests, int n,
                          DqGenerateResult *results, DqGenerateTimings *timings, GError **err) {
    const SmolvlmConfig *c = smolvlm_config(m);
    DqBackend *be = smolvlm_backend(m);
    DqGenerateTimings tm = {0};
    gboolean ok = FALSE;
    int V = c->vocab_size, Dt = c->text_hidden;
    memset(results, 0, sizeof *results * (size_t)MAX(n, 0));
    if (n <= 0)
        return dq_fail(err, DQ_ERR_ARGS, "generate: no requests");
    for (int i = 0; i < n; i++)
        if (!check_request(m, &requests[i], i, err))
            return FALSE;

    ReqState *st = g_new0(ReqState, n);
    const float **tiles = NULL;
    float *features = NULL;
    SmolvlmWorkspace *ws = NULL;
    SmolvlmSegment *segs = g_new0(SmolvlmSegment, n);
    int32_t *step_ids = g_new0(int32_t, n);
    void *scratch = g_malloc((size_t)V * (sizeof(float) + sizeof(int)));

    /* 1. Vision: every tile of every request, one batch. */
    double t0 = dq_now_ms();
    for (int i = 0; i < n; i++)
        for (int j = 0; j < requests[i].n_images; j++)
            tm.n_tiles += requests[i].images[j]->n_tiles;
    if (tm.n_tiles > 0) {
        tiles = g_new(const float *, tm.n_tiles);
        int t = 0;
        for (int i = 0; i < n; i++) {
            st[i].feat_off = t * c->tokens_per_tile;
            for (int j = 0; j < requests[i].n_images; j++) {
                const DqImageTiles *img = requests[i].images[j];
                size_t tile_floats = (size_t)3 * img->tile_size * img->tile_size;
                for (int k = 0; k < img->n_tiles; k++)
                    tiles[t++] = img->pixels + (size_t)k * tile_floats;
            }
            st[i].n_features = t * c->tokens_per_tile - st[i].feat_off;
        }
        features = be->alloc(be, (size_t)tm.n_tiles * c->tokens_per_tile * Dt);
        if (features == NULL) {
            dq_fail(err, DQ_ERR_LIMIT, "out of memory for the features of %d tiles", tm.n_tiles);
            goto out;
        }
        if (!smolvlm_encode_tiles(m, tiles, tm.n_tiles, features, err))
            goto out;
    }
    tm.vision_ms = dq_now_ms() - t0;

    /* 2. Prefill, up to DQ_PREFILL_ROWS prompt rows a forward call, requests side by side. */
    t0 = dq_now_ms();
    int total = 0;
    for (int i = 0; i < n; i++) {
        total += requests[i].n_input_ids;
        st[i].kv =
            smolvlm_kv_new(m, requests[i].n_input_ids + requests[i].options.max_new_tokens, err);
        if (st[i].kv == NULL)
            goto out;
        st[i].logits = g_new(float, V);
        st[i].rng = requests[i].options.seed;
        results[i].output_ids = g_new0(int32_t, requests[i].options.max_new_tokens);
    }
    tm.prompt_tokens = total;
    ws = smolvlm_workspace_new(m, MAX(MIN(total, DQ_PREFILL_ROWS), n), err); /* rows a call */
    if (ws == NULL)
        goto out;
    for (int i = 0; i < n;) {
        int rows = 0, n_segs = 0;
        while (i < n) {
            /* A request's prompt goes in chunks of DQ_PREFILL_ROWS counted from its own start,
             * whatever its batch-mates are, so its products have the same shapes alone or
             * batched (bit-identical results). */
            const SmolvlmRequest *r = &requests[i];
            int take = MIN(r->n_input_ids - st[i].prefilled, DQ_PREFILL_ROWS);
            if (n_segs > 0 && rows + take > DQ_PREFILL_ROWS)
                break;
            if (!smolvlm_embed(m, ws, rows, r->input_ids + st[i].prefilled, take,
                               features != NULL ? features + (size_t)st[i].feat_off * Dt : NULL,
                               st[i].n_features, &st[i].cursor, err)) {
                dq_error_prefix(err, "request %d", i);
                goto out;
            }
            st[i].prefilled += take;
            gboolean last = st[i].prefilled == r->n_input_ids;
            segs[n_segs++] = (SmolvlmSegment){st[i].kv, take, last ? st[i].logits : NULL};
            rows += take;
            if (!last)
                break; /* its next chunk opens the next call */
            i++;
        }
        if (!smolvlm_forward(m, ws, segs, n_segs, err))
            goto out;
    }

    /* The first new token of each request comes from its prompt's last logits. */
    int active = 0;
    for (int i = 0; i < n; i++) {
        const SmolvlmRequest *r = &requests[i];
        if (r->want_logits)
            results[i].last_logits = g_memdup2(st[i].logits, (size_t)V * sizeof(float));
        int tok = dq_sample_token(st[i].logits, V, &r->options, &st[i].rng, scratch);
        results[i].output_ids[results[i].n_output_ids++] = tok;
        if (!r->options.ignore_eos && smolvlm_config_is_eos(c, tok))
            results[i].stopped_on_eos = TRUE;
        st[i].done =
            results[i].stopped_on_eos || results[i].n_output_ids >= r->options.max_new_tokens;
        active += !st[i].done;
    }
    tm.prefill_ms = dq_now_ms() - t0;

    /* 3. Decode: one row per unfinished request per step. */
    t0 = dq_now_ms();
    while (active > 0) {
        int n_segs = 0;
        for (int i = 0; i < n; i++) {
            if (st[i].done)
                continue;
            step_ids[n_segs] = results[i].output_ids[results[i].n_output_ids - 1];
            if (!smolvlm_embed(m, ws, n_segs, &step_ids[n_segs], 1, NULL, 0, &st[i].cursor, err))
                goto out;
            segs[n_segs++] = (SmolvlmSegment){st[i].kv, 1, st[i].logits};
        }
        if (!smolvlm_forward(m, ws, segs, n_segs, err))
            goto out;
        tm.decode_steps++;
        active = 0;
        for (int i = 0; i < n; i++) {
            const SmolvlmRequest *r = &requests[i];
            if (st[i].done)
                continue;
            int tok = dq_sample_token(st[i].logits, V, &r->options, &st[i].rng, scratch);
            results[i].output_ids[results[i].n_output_ids++] = tok;
            if (!r->options.ignore_eos && smolvlm_config_is_eos(c, tok))
                results[i].stopped_on_eos = TRUE;
            st[i].done =
                results[i].stopped_on_eos || results[i].n_output_ids >= r->options.max_new_tokens;
            active += !st[i].done;
        }
    }
    tm.decode_ms = dq_now_ms() - t0;
    for (int i = 0; i < n; i++)
        tm.generated_tokens += results[i].n_output_ids;
    ok = TRUE;
out:
    tm.peak_rss_mb = dq_peak_rss_mb();
    if (timings != NULL)
        *timings = tm;
    for (int i = 0; i < n; i++) {
        smolvlm_kv_free(m, st[i].kv);
        g_free(st[i].logits);
        if (!ok)
            dq_generate_result_clear(&results[i]);
    }
    smolvlm_workspace_free(m, ws);
    if (features != NULL)
        be->release(be, features);
    g_free(tiles);
    g_free(st);
    g_free(segs);
    g_free(step_ids);
    g_free(scratch);
    return ok;
}
