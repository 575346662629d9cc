#include "generate.h"

#include "backend_cuda.h"
#include "clock.h"
#include "dq_error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Prompt rows per prefill forward call: bounds the activations (2.2B: 2048 rows x 8192 MLP
 * floats x 2 = 128 MB) while keeping the GEMMs large. Rows are independent outside attention and
 * attention reads the KV cache, so the split never changes a result. A backend may ask for more
 * (DqBackend.prefill_rows: a GPU, whose products only fill it from ~10k rows). */
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
    int best = dq_argmax(logits, vocab);
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
    if (opts->top_p < 1.0) {
        /* Smallest prefix whose mass reaches top_p, at least one token: TopPLogitsWarper drops
         * the tokens whose ascending cumulative mass is <= 1 - top_p but keeps the best one
         * (min_tokens_to_keep 1), so top_p 0 keeps only the most likely token. */
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

/* ---- the generator: slots, feature cache, add / step / take */

static gboolean check_request(const Smolvlm *m, const SmolvlmRequest *r, GError **err) {
    const SmolvlmConfig *c = smolvlm_config(m);
    if (r->n_input_ids <= 0 || r->input_ids == NULL)
        return dq_fail(err, DQ_ERR_ARGS, "empty prompt");
    if (r->options.max_new_tokens <= 0)
        return dq_fail(err, DQ_ERR_ARGS, "max_new_tokens must be positive");
    /* Checked here, before any vision work: a sequence is the prompt and the new ids, at most
     * max_position_embeddings; a longer max_new_tokens only stops generation there. transformers
     * would run such a prompt (RoPE has no table): the message names the config key that
     * refuses it. */
    if (r->n_input_ids >= c->max_position_embeddings)
        return dq_fail(err, DQ_ERR_LIMIT,
                       "the prompt is %d tokens, the model takes %d positions (config.json's "
                       "text_config.max_position_embeddings): no room for a new token",
                       r->n_input_ids, c->max_position_embeddings);
    if (r->options.do_sample && !(r->options.temperature > 0))
        return dq_fail(err, DQ_ERR_ARGS, "temperature must be positive");
    int n_image_ids = 0;
    for (int i = 0; i < r->n_input_ids; i++)
        n_image_ids += r->input_ids[i] == c->image_token_id;
    int tiles = 0;
    for (int i = 0; i < r->n_images; i++) {
        const DqImageTiles *t = r->images[i];
        if (t == NULL || t->n_tiles <= 0 || t->bytes == NULL || t->hashes == NULL)
            return dq_fail(err, DQ_ERR_ARGS, "image %d has no tiles", i);
        if (t->tile_size != c->image_size)
            return dq_fail(err, DQ_ERR_ARGS, "image %d has %d px tiles, the model takes %d px", i,
                           t->tile_size, c->image_size);
        tiles += t->n_tiles;
    }
    if (n_image_ids != tiles * c->tokens_per_tile)
        return dq_fail(err, DQ_ERR_ARGS,
                       "the prompt has %d <image> tokens, its %d images give %d "
                       "tiles x %d tokens",
                       n_image_ids, r->n_images, tiles, c->tokens_per_tile);
    return TRUE;
}

/* Image features in backend memory, shared by the cache entries and requests that point into
 * them; released when the last one lets go. */
typedef struct {
    float *data; /* backend [rows, Dt] */
    int refs;
} FeatureBlock;

typedef struct {
    char *key;
    FeatureBlock *block;
    int off, n_features; /* rows of the block */
    guint64 used_at;     /* LRU clock */
} FeatureEntry;

/* A prompt's first rows kept for later requests (the prefix cache, generate.h): its ids and the
 * KV cache rows it computed for them, all in calls of at least prompt_split_min rows. */
typedef struct {
    char *key;      /* features_key; NULL for a prompt without images */
    int n_features; /* as the request's, with the key */
    int32_t *ids;   /* [len] */
    int len;
    SmolvlmKV *kv; /* capacity len, rows [0, len) */
    size_t bytes;  /* smolvlm_kv_bytes */
    guint64 used_at;
} PrefixEntry;

/* Speculative decoding: guesses a request may take a step (smolvlm_steps_max bounds it). */
#define DQ_SPEC_MAX 16

typedef struct {
    gboolean used, finished;
    SmolvlmKV *kv;
    float *logits; /* host [vocab]: the slot's row of DqGenerator.logits */
    DqGenerateOptions options;
    int limit; /* new ids it may take: max_new_tokens, or fewer where the positions end */
    uint64_t rng;
    DqGenerateResult res;
    int prompt_tokens, prefix_rows;
    double vision_ms, prefill_ms, decode_ms;
} Slot;

struct DqGenerator {
    Smolvlm *m;
    int n_slots;
    Slot *slots;          /* [n_slots] */
    float *logits;        /* [n_slots, vocab]: the slots' rows side by side, so that a step's
                           * logits come back in few downloads (smolvlm_forward_step) */
    SmolvlmWorkspace *ws; /* grown by add only */
    int ws_rows;
    SmolvlmSegment *segs; /* [n_slots] */
    int32_t *step_ids;    /* [n_slots] */
    int32_t *step_tokens; /* [n_slots]: a step's greedy picks, made where the logits are
                             (SmolvlmSegment.token), side by side as its logits would be */
    void *scratch;        /* sampling: vocab floats + vocab ints */
    FeatureEntry *cache;  /* [cache_pages] */
    int cache_pages, n_cache;
    /* speculative decoding (spec_step): guesses a request at most (0: off), the model's logits
     * of a checking call [steps_max, vocab] and its ids */
    int draft_tokens;
    float *spec_logits;
    int32_t *spec_ids;
    gboolean spec_always;         /* guess whenever possible, not only when it pays */
    double spec_rate, plain_rate; /* tokens a millisecond of either way (spec_pays) */
    int spec_turns;
    /* the prefix cache: entries [n_prefix] of at most prefix_budget bytes in all; split_min:
     * smolvlm_prompt_split_min (0: no reuse on this model); prefill_rows: a forward call's */
    PrefixEntry **prefix; /* [prefix_cap] */
    int n_prefix, prefix_cap;
    size_t prefix_budget, prefix_bytes;
    int split_min, prefill_rows;
    guint64 clock;
    DqGenerateTimings tm;
};

static void prefix_entry_free(DqGenerator *g, PrefixEntry *e);

static void block_unref(DqGenerator *g, FeatureBlock *b) {
    if (b != NULL && --b->refs == 0) {
        DqBackend *be = smolvlm_backend(g->m);
        be->release(be, b->data);
        g_free(b);
    }
}

static void slot_clear(DqGenerator *g, Slot *s) {
    smolvlm_kv_free(g->m, s->kv);
    dq_generate_result_clear(&s->res);
    float *logits = s->logits;
    memset(s, 0, sizeof *s);
    s->logits = logits;
}

DqGenerator *dq_generator_new(Smolvlm *m, int n_slots, int cache_pages, GError **err) {
    if (n_slots <= 0) {
        dq_fail(err, DQ_ERR_ARGS, "generator: %d slots", n_slots);
        return NULL;
    }
    int V = smolvlm_config(m)->vocab_size;
    DqGenerator *g = g_new0(DqGenerator, 1);
    g->m = m;
    g->n_slots = n_slots;
    g->slots = g_new0(Slot, n_slots);
    g->logits = g_new(float, (size_t)n_slots *V);
    for (int i = 0; i < n_slots; i++)
        g->slots[i].logits = g->logits + (size_t)i * V;
    g->segs = g_new0(SmolvlmSegment, n_slots);
    g->step_ids = g_new0(int32_t, n_slots);
    g->step_tokens = g_new0(int32_t, n_slots);
    g->scratch = g_malloc((size_t)V * (sizeof(float) + sizeof(int)));
    g->cache_pages = MAX(cache_pages, 0);
    g->cache = g_new0(FeatureEntry, MAX(g->cache_pages, 1));
    g->split_min = smolvlm_prompt_split_min(m);
    g->prefill_rows = MAX(smolvlm_backend(m)->prefill_rows, DQ_PREFILL_ROWS);
    dq_generator_set_prefix_cache(g, (size_t)DQ_PREFIX_CACHE_MB_DEFAULT << 20);
    if (smolvlm_has_draft(m)) {
        int rows = smolvlm_steps_max(m);
        g->spec_logits = g_new(float, (size_t)rows *V);
        g->spec_ids = g_new(int32_t, rows);
        const char *env = g_getenv("DOCQA_DRAFT_TOKENS"); /* to measure other settings */
        dq_generator_set_draft(g, env != NULL ? atoi(env) : DQ_DRAFT_TOKENS_DEFAULT,
                               g_strcmp0(g_getenv("DOCQA_DRAFT_ADAPT"), "0") != 0);
    }
    return g;
}

void dq_generator_free(DqGenerator *g) {
    if (g == NULL)
        return;
    for (int i = 0; i < g->n_slots; i++)
        slot_clear(g, &g->slots[i]);
    g_free(g->logits);
    for (int i = 0; i < g->n_cache; i++) {
        g_free(g->cache[i].key);
        block_unref(g, g->cache[i].block);
    }
    for (int i = 0; i < g->n_prefix; i++)
        prefix_entry_free(g, g->prefix[i]);
    g_free(g->prefix);
    smolvlm_workspace_free(g->m, g->ws);
    g_free(g->cache);
    g_free(g->slots);
    g_free(g->segs);
    g_free(g->step_ids);
    g_free(g->step_tokens);
    g_free(g->scratch);
    g_free(g->spec_logits);
    g_free(g->spec_ids);
    g_free(g);
}

void dq_generator_set_draft(DqGenerator *g, int k, gboolean adapt) {
    g->draft_tokens =
        smolvlm_has_draft(g->m) ? CLAMP(k, 0, MIN(DQ_SPEC_MAX, smolvlm_steps_max(g->m) - 1)) : 0;
    g->spec_always = !adapt;
}

int dq_generator_n_slots(const DqGenerator *g) {
    return g->n_slots;
}

int dq_generator_n_free(const DqGenerator *g) {
    int n = 0;
    for (int i = 0; i < g->n_slots; i++)
        n += !g->slots[i].used;
    return n;
}

int dq_generator_n_active(const DqGenerator *g) {
    int n = 0;
    for (int i = 0; i < g->n_slots; i++)
        n += g->slots[i].used && !g->slots[i].finished;
    return n;
}

void dq_generator_timings(const DqGenerator *g, DqGenerateTimings *out) {
    *out = g->tm;
    out->prefix_bytes = g->prefix_bytes;
    out->peak_rss_mb = dq_peak_rss_mb();
}

void dq_generator_drop(DqGenerator *g, int slot) {
    if (slot >= 0 && slot < g->n_slots)
        slot_clear(g, &g->slots[slot]);
}

static FeatureEntry *cache_find(DqGenerator *g, const char *key, int n_features) {
    for (int i = 0; i < g->n_cache; i++)
        if (strcmp(g->cache[i].key, key) == 0 && g->cache[i].n_features == n_features)
            return &g->cache[i];
    return NULL;
}

/* Keeps a request's fresh features under its key, evicting the least recently used entry. */
static void cache_put(DqGenerator *g, const char *key, FeatureBlock *b, int off, int n_features) {
    if (g->cache_pages == 0 || cache_find(g, key, n_features) != NULL)
        return;
    if (g->n_cache == g->cache_pages) {
        int lru = 0;
        for (int i = 1; i < g->n_cache; i++)
            if (g->cache[i].used_at < g->cache[lru].used_at)
                lru = i;
        g_free(g->cache[lru].key);
        block_unref(g, g->cache[lru].block);
        g->cache[lru] = g->cache[--g->n_cache];
    }
    b->refs++;
    g->cache[g->n_cache++] = (FeatureEntry){g_strdup(key), b, off, n_features, ++g->clock};
}

static gboolean ensure_workspace(DqGenerator *g, int rows, GError **err) {
    if (g->ws != NULL && g->ws_rows >= rows)
        return TRUE;
    smolvlm_workspace_free(g->m, g->ws);
    g->ws_rows = 0;
    if ((g->ws = smolvlm_workspace_new(g->m, rows, err)) == NULL)
        return FALSE;
    g->ws_rows = rows;
    return TRUE;
}

/* Records a slot's newest token; TRUE when the request is finished. */
static gboolean slot_push(DqGenerator *g, Slot *s, int tok) {
    s->res.output_ids[s->res.n_output_ids++] = tok;
    if (!s->options.ignore_eos && smolvlm_config_is_eos(smolvlm_config(g->m), tok))
        s->res.stopped_on_eos = TRUE;
    if (!s->res.stopped_on_eos && s->res.n_output_ids >= s->limit &&
        s->limit < s->options.max_new_tokens)
        s->res.stopped_on_positions = TRUE;
    s->finished = s->res.stopped_on_eos || s->res.n_output_ids >= s->limit;
    return s->finished;
}

/* ---- the prefix cache
 *
 * A page's questions share their prompts' first ~98% (the chat template's start, the page's
 * <image> rows, the prompt template up to the question), which prefill computed once a
 * question. A request takes the KV rows of the longest prefix of its ids that an entry (a recent
 * prompt with its features_key: the same images) or a batch-mate added before it shares, and
 * prefills only the rest. The bits are those of a cold prefill: every forward call a prompt's
 * rows go through computes at least split_min of them (the backend's prompt_split_min), its
 * chunks of prefill_rows are counted from position 0 whatever was copied, and an entry keeps
 * only rows so computed. */

static void prefix_entry_free(DqGenerator *g, PrefixEntry *e) {
    g->prefix_bytes -= e->bytes;
    smolvlm_kv_free(g->m, e->kv);
    g_free(e->key);
    g_free(e->ids);
    g_free(e);
}

/* Drops least recently used entries until `room` more bytes fit the budget. */
static void prefix_evict(DqGenerator *g, size_t room) {
    while (g->n_prefix > 0 && g->prefix_bytes + room > g->prefix_budget) {
        int lru = 0;
        for (int i = 1; i < g->n_prefix; i++)
            if (g->prefix[i]->used_at < g->prefix[lru]->used_at)
                lru = i;
        prefix_entry_free(g, g->prefix[lru]);
        g->prefix[lru] = g->prefix[--g->n_prefix];
    }
}

void dq_generator_set_prefix_cache(DqGenerator *g, size_t bytes) {
    g->prefix_budget = bytes;
    prefix_evict(g, 0);
}

/* Rows of an n-row prompt computed in calls of at least split_min rows: all, unless its last
 * chunk is shorter. */
static int prefix_keepable(const DqGenerator *g, int n) {
    int last = (n - 1) / g->prefill_rows * g->prefill_rows; /* the last chunk's first row */
    return n - last >= g->split_min ? n : last;
}

/* Of a shared prefix of `common` ids (held by the source in rows computed as prefix_keepable
 * says), the rows an n-row prompt may take: its rest at least split_min rows, and the chunk the
 * rest starts in (counted from position 0) too. 0: none. */
static int prefix_usable(const DqGenerator *g, int common, int n) {
    const int pr = g->prefill_rows;
    int p = MIN(common, n - g->split_min);
    if (p <= 0)
        return 0;
    int chunk0 = p - p % pr, end = MIN(chunk0 + pr, n);
    if (p > chunk0 && end - p < g->split_min)
        p = MAX(end - g->split_min, chunk0);
    return p;
}

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb) {
    int i = 0;
    while (i < na && i < nb && a[i] == b[i])
        i++;
    return i;
}

/* Per new request during an add: where its features are and how far its prompt got. */
typedef struct {
    Slot *slot;
    const float *features; /* backend rows for its <image> ids, or NULL */
    int n_features;
    int cursor, prefilled;
    gboolean encode; /* its tiles go through the encoder in this add */
    int fresh_off;   /* its rows in the fresh block (its own or a batch-mate's), else -1 */
    int32_t token;   /* its first new token, when only that comes back (greedy, no logits) */
    /* Prefix reuse: its first `reuse` rows' KV come from the cache entry `from`, or from the
     * batch-mate `mate` (>= 0) once that one's prompt is in; the rest is prefilled. */
    int reuse, mate;
    PrefixEntry *from;
    gboolean prefix_ok; /* it may take or leave a prefix (a key, or no images) */
} AddState;

/* A greedy request that does not ask for its logits: only its first token comes back from the
 * prefill, as in a step (a GPU's 64 requests would send 12 MB of logits). */
static gboolean first_token_only(const SmolvlmRequest *r) {
    return !r->options.do_sample && !r->want_logits;
}

/* The longest usable prefix of each request, from the cache or an earlier batch-mate that
 * takes none from one (a mate's own prefill comes first; the cache wins ties). */
static void prefix_find(DqGenerator *g, const SmolvlmRequest *reqs, AddState *as, int n) {
    for (int i = 0; i < n; i++) {
        as[i].mate = -1;
        const SmolvlmRequest *r = &reqs[i];
        if (g->split_min <= 0 || g->prefix_budget == 0 || !as[i].prefix_ok)
            continue;
        for (int e = 0; e < g->n_prefix; e++) {
            PrefixEntry *pe = g->prefix[e];
            if (g_strcmp0(pe->key, r->features_key) != 0 || pe->n_features != as[i].n_features)
                continue;
            int p = prefix_usable(g, common_prefix(pe->ids, pe->len, r->input_ids, r->n_input_ids),
                                  r->n_input_ids);
            if (p > as[i].reuse) {
                as[i].reuse = p;
                as[i].from = pe;
            }
        }
        for (int k = 0; k < i; k++) {
            const SmolvlmRequest *q = &reqs[k];
            if (as[k].mate >= 0 || !as[k].prefix_ok ||
                g_strcmp0(q->features_key, r->features_key) != 0 ||
                as[k].n_features != as[i].n_features)
                continue;
            int p = prefix_usable(g,
                                  common_prefix(q->input_ids, prefix_keepable(g, q->n_input_ids),
                                                r->input_ids, r->n_input_ids),
                                  r->n_input_ids);
            if (p > as[i].reuse) {
                as[i].reuse = p;
                as[i].from = NULL;
                as[i].mate = k;
            }
        }
        if (as[i].from != NULL)
            as[i].from->used_at = ++g->clock;
    }
}

/* Keeps the prompts just prefilled for later requests, but not one whose image rows and most of
 * its ids came from an entry or mate already: that one serves as well. */
static void prefix_store(DqGenerator *g, const SmolvlmRequest *reqs, const AddState *as, int n) {
    const int image_id = smolvlm_config(g->m)->image_token_id;
    for (int i = 0; i < n; i++) {
        const SmolvlmRequest *r = &reqs[i];
        if (g->split_min <= 0 || g->prefix_budget == 0 || !as[i].prefix_ok)
            continue;
        int images_end = 0; /* past its last <image> row */
        for (int j = 0; j < r->n_input_ids; j++)
            if (r->input_ids[j] == image_id)
                images_end = j + 1;
        if (as[i].reuse > 0 && as[i].reuse >= images_end && 2 * as[i].reuse >= r->n_input_ids)
            continue;
        int len = prefix_keepable(g, r->n_input_ids);
        size_t bytes = smolvlm_kv_bytes(g->m, MAX(len, 1));
        if (len <= 0 || bytes > g->prefix_budget)
            continue;
        prefix_evict(g, bytes);
        PrefixEntry *e = g_new0(PrefixEntry, 1);
        /* Out of memory for the copy: the cache simply does without it. */
        if ((e->kv = smolvlm_kv_new(g->m, len, NULL)) == NULL ||
            !smolvlm_kv_copy_prefix(g->m, e->kv, as[i].slot->kv, len, NULL)) {
            smolvlm_kv_free(g->m, e->kv);
            g_free(e);
            continue;
        }
        e->key = g_strdup(r->features_key);
        e->n_features = as[i].n_features;
        e->ids = g_memdup2(r->input_ids, (size_t)len * sizeof(int32_t));
        e->len = len;
        e->bytes = bytes;
        e->used_at = ++g->clock;
        g->prefix_bytes += bytes;
        if (g->n_prefix == g->prefix_cap) {
            g->prefix_cap = MAX(2 * g->prefix_cap, 4);
            g->prefix = g_renew(PrefixEntry *, g->prefix, g->prefix_cap);
        }
        g->prefix[g->n_prefix++] = e;
    }
}

/* Prefill of the requests order[0 .. count), up to prefill_rows prompt rows a forward call,
 * requests side by side, each from its `prefilled` row on. */
static gboolean prefill_pass(DqGenerator *g, const SmolvlmRequest *reqs, AddState *as,
                             const int *order, int count, GError **err) {
    const int prefill_rows = g->prefill_rows;
    for (int o = 0; o < count;) {
        int rows = 0, n_segs = 0;
        while (o < count) {
            /* A request's prompt goes in chunks of prefill_rows counted from its position 0,
             * whatever its batch-mates are and whatever rows it took from a prefix, so its
             * products have the same shapes alone or batched (bit-identical results). */
            int i = order[o];
            const SmolvlmRequest *r = &reqs[i];
            int take = MIN(r->n_input_ids - as[i].prefilled,
                           prefill_rows - as[i].prefilled % prefill_rows);
            if (n_segs > 0 && rows + take > prefill_rows)
                break;
            if (!smolvlm_embed(g->m, g->ws, rows, r->input_ids + as[i].prefilled, take,
                               as[i].features, as[i].n_features, &as[i].cursor, err)) {
                dq_error_prefix(err, "request %d", i);
                return FALSE;
            }
            as[i].prefilled += take;
            gboolean last = as[i].prefilled == r->n_input_ids;
            gboolean token_only = first_token_only(r);
            g->segs[n_segs++] =
                (SmolvlmSegment){.kv = as[i].slot->kv,
                                 .n_rows = take,
                                 .logits = last && !token_only ? as[i].slot->logits : NULL,
                                 .token = last && token_only ? &as[i].token : NULL};
            rows += take;
            if (!last)
                break; /* its next chunk opens the next call */
            o++;
        }
        if (!smolvlm_forward(g->m, g->ws, g->segs, n_segs, err))
            return FALSE;
    }
    return TRUE;
}

/* One add: its requests, their states, and what the add finds along the way that its timings
 * report. */
typedef struct {
    const SmolvlmRequest *reqs; /* [n] */
    int n;
    AddState *as;        /* [n] */
    int *order;          /* [n]: the requests of a prefill pass */
    DqPixelTile *tiles;  /* [n_tiles]: those encoded in this add */
    FeatureBlock *fresh; /* their features */
    int n_tiles, distinct, reused, prefix_reused;
    gint64 prefix_rows, total, to_prefill;
    double vision_ms, vision_cpu_ms, prefill_ms, prefill_cpu_ms;
} AddBatch;

static gboolean add_check(DqGenerator *g, const SmolvlmRequest *reqs, int n, GError **err) {
    if (n <= 0)
        return dq_fail(err, DQ_ERR_ARGS, "generate: no requests");
    if (n > dq_generator_n_free(g))
        return dq_fail(err, DQ_ERR_ARGS, "generator: %d requests, %d free slots", n,
                       dq_generator_n_free(g));
    for (int i = 0; i < n; i++)
        if (!check_request(g->m, &reqs[i], err)) {
            /* Which of several requests it was; a lone request's caller knows. */
            if (n > 1)
                g_prefix_error(err, "request %d: ", i);
            return FALSE;
        }
    return TRUE;
}

/* Gives each request a free slot, and says how many feature rows its images make. */
static void add_take_slots(DqGenerator *g, AddBatch *b, int *slots) {
    const int S_tok = smolvlm_config(g->m)->tokens_per_tile;
    for (int i = 0, s = 0; i < b->n; i++) {
        while (g->slots[s].used)
            s++;
        AddState *a = &b->as[i];
        a->slot = &g->slots[s];
        a->slot->used = TRUE;
        slots[i] = s;
        const SmolvlmRequest *r = &b->reqs[i];
        int req_tiles = 0;
        for (int j = 0; j < r->n_images; j++)
            req_tiles += r->images[j]->n_tiles;
        a->n_features = req_tiles * S_tok;
        /* Images are told apart by their key only; a prompt without any is its ids. */
        a->prefix_ok = r->features_key != NULL || a->n_features == 0;
    }
}

/* Where request i's features come from: none needed (its <image> rows are all in the prefix it
 * takes), the cache, a batch-mate encoding the same key, or its own tiles in the fresh block. */
static void add_plan_features(DqGenerator *g, AddBatch *b, int i) {
    const SmolvlmConfig *c = smolvlm_config(g->m);
    const SmolvlmRequest *r = &b->reqs[i];
    AddState *as = b->as;
    as[i].fresh_off = -1;
    if (as[i].n_features == 0)
        return;
    int images_before = 0, images_after = 0; /* <image> rows in the prefix and the rest */
    for (int j = 0; j < r->n_input_ids; j++)
        if (r->input_ids[j] == c->image_token_id)
            *(j < as[i].reuse ? &images_before : &images_after) += 1;
    as[i].cursor = images_before;
    if (images_after == 0) { /* no features to embed: none needed */
        b->reused++;
        return;
    }
    const char *key = r->features_key;
    FeatureEntry *e = key != NULL ? cache_find(g, key, as[i].n_features) : NULL;
    if (e != NULL) {
        e->used_at = ++g->clock;
        as[i].features = e->block->data + (size_t)e->off * c->text_hidden;
        b->reused++;
        return;
    }
    int mate = -1;
    for (int k = 0; k < i && key != NULL && mate < 0; k++)
        if (as[k].fresh_off >= 0 && b->reqs[k].features_key != NULL &&
            strcmp(b->reqs[k].features_key, key) == 0 && as[k].n_features == as[i].n_features)
            mate = k;
    if (mate >= 0) {
        as[i].fresh_off = as[mate].fresh_off;
        b->reused++;
        return;
    }
    as[i].encode = TRUE;
    as[i].fresh_off = b->n_tiles * c->tokens_per_tile;
    b->n_tiles += as[i].n_features / c->tokens_per_tile;
}

/* Runs the tiles add_plan_features left to the encoder through it, one batch, into the fresh
 * block. */
static gboolean add_encode(DqGenerator *g, AddBatch *b, GError **err) {
    const SmolvlmConfig *c = smolvlm_config(g->m);
    DqBackend *be = smolvlm_backend(g->m);
    const int Dt = c->text_hidden, S_tok = c->tokens_per_tile;
    b->tiles = g_new(DqPixelTile, b->n_tiles);
    int t = 0;
    for (int i = 0; i < b->n; i++) {
        if (!b->as[i].encode)
            continue;
        for (int j = 0; j < b->reqs[i].n_images; j++) {
            const DqImageTiles *img = b->reqs[i].images[j];
            for (int k = 0; k < img->n_tiles; k++)
                b->tiles[t++] =
                    (DqPixelTile){dq_image_tiles_tile(img, k), &img->lut[0][0], img->hashes[k]};
        }
    }
    g_assert(t == b->n_tiles);
    b->fresh = g_new0(FeatureBlock, 1);
    b->fresh->refs = 1;
    b->fresh->data = be->alloc(be, (size_t)b->n_tiles * S_tok * Dt);
    if (b->fresh->data == NULL) {
        g_clear_pointer(&b->fresh, g_free);
        /* A GPU that kept an error refuses every alloc: its error, not "out of memory". */
        if (dq_backend_cuda_check(be, err))
            dq_fail(err, DQ_ERR_LIMIT, "out of memory for the features of %d tiles", b->n_tiles);
        return FALSE;
    }
    if (!smolvlm_encode_tiles(g->m, b->tiles, b->n_tiles, b->fresh->data, &b->distinct, err))
        return FALSE;
    for (int i = 0; i < b->n; i++)
        if (b->as[i].fresh_off >= 0)
            b->as[i].features = b->fresh->data + (size_t)b->as[i].fresh_off * Dt;
    return TRUE;
}

/* 1. Vision: the tiles of every request whose features are not known yet and that has <image>
 * rows left to prefill, one batch. A key seen in the cache or earlier in this add shares those
 * features. */
static gboolean add_vision(DqGenerator *g, AddBatch *b, GError **err) {
    double t0 = dq_now_ms(), c0 = dq_cpu_ms();
    for (int i = 0; i < b->n; i++)
        add_plan_features(g, b, i);
    if (b->n_tiles > 0 && !add_encode(g, b, err))
        return FALSE;
    b->vision_ms = dq_now_ms() - t0;
    b->vision_cpu_ms = dq_cpu_ms() - c0;
    return TRUE;
}

/* Each slot's KV cache, limit, options and output room for its request. */
static gboolean add_open_slots(DqGenerator *g, AddBatch *b, GError **err) {
    const SmolvlmConfig *c = smolvlm_config(g->m);
    for (int i = 0; i < b->n; i++) {
        const SmolvlmRequest *r = &b->reqs[i];
        const AddState *a = &b->as[i];
        Slot *s = a->slot;
        b->total += r->n_input_ids;
        b->to_prefill += r->n_input_ids - a->reuse;
        /* 64-bit: max_new_tokens may be anything up to INT_MAX (check_request keeps the prompt
         * below the positions, so the limit is at least 1). */
        s->limit = (int)MIN((gint64)r->options.max_new_tokens,
                            (gint64)c->max_position_embeddings - r->n_input_ids);
        if ((s->kv = smolvlm_kv_new(g->m, r->n_input_ids + s->limit, err)) == NULL)
            return FALSE;
        s->options = r->options;
        s->rng = r->options.seed;
        s->prompt_tokens = r->n_input_ids;
        s->res.output_ids = g_new0(int32_t, s->limit);
        if (a->reuse > 0) {
            b->prefix_reused++;
            b->prefix_rows += a->reuse;
        }
    }
    return TRUE;
}

/* The requests that take their prefix from a batch-mate (mates) or not (!mates), their prefix
 * rows copied in, prefilled together. */
static gboolean add_prefill_group(DqGenerator *g, AddBatch *b, gboolean mates, GError **err) {
    AddState *as = b->as;
    int count = 0;
    for (int i = 0; i < b->n; i++) {
        if ((as[i].mate >= 0) != mates)
            continue;
        const SmolvlmKV *src = NULL;
        if (mates)
            src = as[as[i].mate].slot->kv;
        else if (as[i].from != NULL)
            src = as[i].from->kv;
        if (src != NULL && !smolvlm_kv_copy_prefix(g->m, as[i].slot->kv, src, as[i].reuse, err))
            return FALSE;
        as[i].prefilled = as[i].reuse;
        b->order[count++] = i;
    }
    return prefill_pass(g, b->reqs, as, b->order, count, err);
}

/* The first new token of each request comes from its prompt's last logits. */
static void add_first_tokens(DqGenerator *g, AddBatch *b) {
    const int V = smolvlm_config(g->m)->vocab_size;
    for (int i = 0; i < b->n; i++) {
        Slot *s = b->as[i].slot;
        if (b->reqs[i].want_logits)
            s->res.last_logits = g_memdup2(s->logits, (size_t)V * sizeof(float));
        slot_push(g, s,
                  first_token_only(&b->reqs[i])
                      ? b->as[i].token
                      : dq_sample_token(s->logits, V, &s->options, &s->rng, g->scratch));
    }
}

/* 2. Prefill: first every request that waits for no batch-mate (its prefix copied from the
 * cache, or none), then those that take a prefix from one of them. */
static gboolean add_prefill(DqGenerator *g, AddBatch *b, GError **err) {
    double t0 = dq_now_ms(), c0 = dq_cpu_ms();
    if (!add_open_slots(g, b, err))
        return FALSE;
    int step_rows = MAX(g->n_slots, g->draft_tokens > 0 ? smolvlm_steps_max(g->m) : 0);
    if (!ensure_workspace(g, MAX((int)MIN(b->to_prefill, g->prefill_rows), step_rows), err) ||
        !add_prefill_group(g, b, FALSE, err) || !add_prefill_group(g, b, TRUE, err))
        return FALSE;
    add_first_tokens(g, b);
    prefix_store(g, b->reqs, b->as, b->n);
    b->prefill_ms = dq_now_ms() - t0;
    b->prefill_cpu_ms = dq_cpu_ms() - c0;
    return TRUE;
}

/* Each slot's share of the add's time, the fresh features kept for later requests, and the
 * generator's totals. */
static void add_record(DqGenerator *g, const AddBatch *b) {
    for (int i = 0; i < b->n; i++) {
        const AddState *a = &b->as[i];
        a->slot->vision_ms = b->vision_ms / b->n;
        a->slot->prefill_ms = b->prefill_ms / b->n;
        a->slot->prefix_rows = a->reuse;
        if (a->encode && b->reqs[i].features_key != NULL)
            cache_put(g, b->reqs[i].features_key, b->fresh, a->fresh_off, a->n_features);
    }
    g->tm.vision_ms += b->vision_ms;
    g->tm.prefill_ms += b->prefill_ms;
    g->tm.vision_cpu_ms += b->vision_cpu_ms;
    g->tm.prefill_cpu_ms += b->prefill_cpu_ms;
    g->tm.n_tiles += b->n_tiles;
    g->tm.n_tiles_distinct += b->distinct;
    g->tm.prompt_tokens += (int)b->total;
    g->tm.features_reused += b->reused;
    g->tm.prefix_reused += b->prefix_reused;
    g->tm.prefix_rows += b->prefix_rows;
}

gboolean dq_generator_add(DqGenerator *g, const SmolvlmRequest *reqs, int n, int *slots,
                          GError **err) {
    if (!add_check(g, reqs, n, err))
        return FALSE;
    AddBatch b = {.reqs = reqs, .n = n, .as = g_new0(AddState, n), .order = g_new(int, n)};
    add_take_slots(g, &b, slots);
    prefix_find(g, reqs, b.as, n);
    gboolean ok = add_vision(g, &b, err) && add_prefill(g, &b, err);
    if (ok)
        add_record(g, &b);
    else
        for (int i = 0; i < n; i++)
            slot_clear(g, b.as[i].slot);
    if (b.fresh != NULL)
        block_unref(g, b.fresh);
    g_free(b.tiles);
    g_free(b.order);
    g_free(b.as);
    return ok;
}

/* A step that failed drops every request in the generator (generate.h). */
static gboolean step_failed(DqGenerator *g) {
    for (int i = 0; i < g->n_slots; i++)
        slot_clear(g, &g->slots[i]);
    return FALSE;
}

/* ---- speculative decoding
 *
 * With a draft (SmolvlmOptions.draft), a step may give a request several tokens for one pass over
 * the model's weights. The draft guesses k tokens one row at a time (its int8 copy of the
 * decoder's layers over the request's own KV cache); then one call of the model proper runs the
 * request's last token and the guesses as k + 1 steps (a steps segment: every row exactly as a
 * plain step would compute it, products on the backend's row-invariant path). The model's
 * choice after each row is what a plain step would have chosen there, so the guesses are kept
 * up to the first the model would not have made, followed by the model's own choice at that
 * point: the plain greedy tokens, in fewer passes. Decode is bound by the bytes of the weights,
 * and k + 1 rows cost little more than one (1.15-1.3x for 4, docs/performance.md).
 *
 * Sampled requests too, with their own tokens: a request's n-th sampled token takes the n-th
 * draw of its generator, whose state after n draws is seed + n times a constant (splitmix64),
 * so each row's token is a function of its logits and its position. The draft guesses with a
 * copy of the request's generator (the draws its guesses' positions will take), the model
 * samples its rows with the request's own, one draw a token kept, as plain steps would; a guess
 * is taken where the model's draw picked the same token. Sharing the draw couples the two: where
 * the draft's distribution is close to the model's, the same uniform picks the same token.
 * Only while all rows of a step fit one row-invariant call; a full batch is bound by arithmetic
 * anyway. */

/* Guesses each request takes this step (0: a plain step). */
static int spec_guesses(const DqGenerator *g, int n_active) {
    if (g->draft_tokens <= 0 || n_active > DQ_SPEC_MAX)
        return 0;
    int k = g->draft_tokens, rows = smolvlm_steps_max(g->m);
    while (k > 0 && n_active * (k + 1) > rows)
        k--;
    return k;
}

/* Whether guessing pays is measured, not assumed: it depends on how much cheaper the draft is
 * than the model (int8 against float32 weights: about half; against bf16: little), on how
 * often its guesses are taken and on the context's length. The tokens a millisecond of either
 * way are kept as moving averages; a step takes the faster, and the other every
 * DQ_SPEC_PROBE-th step, to follow changes. Both ways give the same tokens. */
#define DQ_SPEC_PROBE 16

static gboolean spec_pays(DqGenerator *g) {
    if (g->spec_always || g->spec_rate == 0)
        return TRUE;
    if (g->plain_rate == 0)
        return FALSE;
    gboolean spec = g->spec_rate >= g->plain_rate;
    return ++g->spec_turns % DQ_SPEC_PROBE == 0 ? !spec : spec;
}

static void rate_update(double *rate, int tokens, double ms) {
    double r = tokens / MAX(ms, 1e-3);
    *rate = *rate == 0 ? r : 0.7 * *rate + 0.3 * r;
}

/* One speculative step's requests: the active slots, the draft's guesses for each, and where
 * their caches stood before the step. Not zeroed: spec_active sets what the step reads. */
typedef struct {
    int act[DQ_SPEC_MAX], n_act; /* n_act * (k + 1) <= steps_max */
    int32_t guess[DQ_SPEC_MAX][DQ_SPEC_MAX];
    int n_guess[DQ_SPEC_MAX], len[DQ_SPEC_MAX];
    uint64_t draws[DQ_SPEC_MAX]; /* the guesses' draws: a copy of each request's generator */
    int cursor, calls;           /* smolvlm_embed's cursor; the passes made */
} SpecRound;

/* The requests still generating, each with the guesses it may take. */
static void spec_active(DqGenerator *g, int k, SpecRound *sr) {
    sr->n_act = 0;
    sr->cursor = 0;
    sr->calls = 0;
    for (int i = 0; i < g->n_slots; i++) {
        Slot *s = &g->slots[i];
        if (!s->used || s->finished)
            continue;
        /* never a guess past the slot's limit: the cache holds the prompt and that many */
        sr->n_guess[sr->n_act] = MIN(k, s->limit - s->res.n_output_ids - 1);
        sr->len[sr->n_act] = smolvlm_kv_len(s->kv);
        sr->draws[sr->n_act] = s->rng;
        sr->act[sr->n_act++] = i;
    }
}

/* 1. The draft's guesses, a row a request at a time. */
static gboolean spec_draft(DqGenerator *g, const SmolvlmConfig *c, int k, SpecRound *sr,
                           GError **err) {
    const int V = c->vocab_size;
    for (int j = 0; j < k; j++) {
        int n_segs = 0;
        for (int a = 0; a < sr->n_act; a++) {
            Slot *s = &g->slots[sr->act[a]];
            if (sr->n_guess[a] <= j)
                continue;
            g->step_ids[n_segs] =
                j == 0 ? s->res.output_ids[s->res.n_output_ids - 1] : sr->guess[a][j - 1];
            g->segs[n_segs++] = (SmolvlmSegment){.kv = s->kv, .n_rows = 1, .logits = s->logits};
        }
        if (n_segs == 0)
            break;
        double t1 = dq_now_ms();
        if (!smolvlm_embed(g->m, g->ws, 0, g->step_ids, n_segs, NULL, 0, &sr->cursor, err) ||
            !smolvlm_forward_draft(g->m, g->ws, g->segs, n_segs, err))
            return FALSE;
        sr->calls++;
        g->tm.draft_ms += dq_now_ms() - t1;
        for (int a = 0; a < sr->n_act; a++) {
            Slot *s = &g->slots[sr->act[a]];
            if (sr->n_guess[a] <= j)
                continue;
            sr->guess[a][j] = dq_sample_token(s->logits, V, &s->options, &sr->draws[a], g->scratch);
            if (sr->guess[a][j] == c->image_token_id)
                sr->n_guess[a] = j; /* not an input: the model would fail on it, were it its own */
            else if (!s->options.ignore_eos && smolvlm_config_is_eos(c, sr->guess[a][j]))
                sr->n_guess[a] = j + 1; /* the request would stop there */
        }
    }
    return TRUE;
}

/* 2. The model proper over each request's last token and its guesses, as steps. */
static gboolean spec_verify(DqGenerator *g, int V, SpecRound *sr, GError **err) {
    int rows = 0;
    for (int a = 0; a < sr->n_act; a++) {
        Slot *s = &g->slots[sr->act[a]];
        smolvlm_kv_truncate(s->kv, sr->len[a]); /* the draft's rows: rewritten now */
        g->spec_ids[rows] = s->res.output_ids[s->res.n_output_ids - 1];
        memcpy(g->spec_ids + rows + 1, sr->guess[a], (size_t)sr->n_guess[a] * sizeof(int32_t));
        g->segs[a] = (SmolvlmSegment){.kv = s->kv,
                                      .n_rows = sr->n_guess[a] + 1,
                                      .logits = g->spec_logits + (size_t)rows * V,
                                      .steps = TRUE};
        rows += sr->n_guess[a] + 1;
    }
    if (!smolvlm_embed(g->m, g->ws, 0, g->spec_ids, rows, NULL, 0, &sr->cursor, err) ||
        !smolvlm_forward_step(g->m, g->ws, g->segs, sr->n_act, err))
        return FALSE;
    sr->calls++;
    return TRUE;
}

/* 3. The model's tokens, as far as the guesses led it; returns how many were pushed. */
static int spec_take(DqGenerator *g, int V, const SpecRound *sr, double share) {
    int pushed = 0;
    for (int a = 0; a < sr->n_act; a++) {
        Slot *s = &g->slots[sr->act[a]];
        const float *logits = g->segs[a].logits;
        int taken = 0;
        for (int i = 0; i <= sr->n_guess[a]; i++) {
            int tok = dq_sample_token(logits + (size_t)i * V, V, &s->options, &s->rng, g->scratch);
            taken++;
            pushed++;
            if (slot_push(g, s, tok) || i == sr->n_guess[a] || tok != sr->guess[a][i])
                break;
            g->tm.draft_accepted++;
        }
        g->tm.draft_tokens += sr->n_guess[a];
        /* the rows of the tokens taken, the last excepted: it is the next step's input */
        smolvlm_kv_truncate(s->kv, sr->len[a] + taken);
        s->decode_ms += share;
    }
    return pushed;
}

static gboolean spec_step(DqGenerator *g, int k, GError **err) {
    const SmolvlmConfig *c = smolvlm_config(g->m);
    double t0 = dq_now_ms(), c0 = dq_cpu_ms();
    SpecRound sr;
    spec_active(g, k, &sr);
    if (!spec_draft(g, c, k, &sr, err) || !spec_verify(g, c->vocab_size, &sr, err))
        return step_failed(g);
    double share = (dq_now_ms() - t0) / sr.n_act;
    int pushed = spec_take(g, c->vocab_size, &sr, share);
    g->tm.decode_ms += dq_now_ms() - t0;
    g->tm.decode_cpu_ms += dq_cpu_ms() - c0;
    g->tm.decode_steps += sr.calls;
    rate_update(&g->spec_rate, pushed, dq_now_ms() - t0);
    return TRUE;
}

gboolean dq_generator_step(DqGenerator *g, GError **err) {
    int V = smolvlm_config(g->m)->vocab_size;
    int n_segs = 0;
    double t0 = dq_now_ms(), c0 = dq_cpu_ms();
    for (int i = 0; i < g->n_slots; i++) {
        Slot *s = &g->slots[i];
        if (!s->used || s->finished)
            continue;
        g->step_ids[n_segs] = s->res.output_ids[s->res.n_output_ids - 1];
        /* Greedy: only the token comes back (a GPU's 64 requests sent 12 MB of logits a step) */
        g->segs[n_segs] =
            s->options.do_sample
                ? (SmolvlmSegment){.kv = s->kv, .n_rows = 1, .logits = s->logits}
                : (SmolvlmSegment){.kv = s->kv, .n_rows = 1, .token = &g->step_tokens[n_segs]};
        n_segs++;
    }
    if (n_segs == 0)
        return TRUE;
    int k = spec_guesses(g, n_segs);
    if (k > 0 && spec_pays(g))
        return spec_step(g, k, err);
    /* The step's ids in one lookup. No features: a generated <image> id is embedded as a
     * token, as transformers does. */
    int cursor = 0;
    if (!smolvlm_embed(g->m, g->ws, 0, g->step_ids, n_segs, NULL, 0, &cursor, err))
        goto fail;
    /* One recorded launch where the backend can (a CUDA graph): the step's many small kernels
     * would otherwise cost more to launch than to run. */
    if (!smolvlm_forward_step(g->m, g->ws, g->segs, n_segs, err))
        goto fail;
    double share = (dq_now_ms() - t0) / n_segs;
    for (int i = 0, seg = 0; i < g->n_slots; i++) {
        Slot *s = &g->slots[i];
        if (!s->used || s->finished)
            continue;
        s->decode_ms += share;
        slot_push(g, s,
                  s->options.do_sample
                      ? dq_sample_token(s->logits, V, &s->options, &s->rng, g->scratch)
                      : g->step_tokens[seg]);
        seg++;
    }
    g->tm.decode_ms += dq_now_ms() - t0;
    g->tm.decode_cpu_ms += dq_cpu_ms() - c0;
    g->tm.decode_steps++;
    if (k > 0) /* a step that could have guessed: the other way's rate */
        rate_update(&g->plain_rate, n_segs, dq_now_ms() - t0);
    return TRUE;
fail:
    return step_failed(g);
}

int dq_generator_take_finished(DqGenerator *g, DqGeneratorDone *done, int max) {
    int k = 0;
    for (int i = 0; i < g->n_slots && k < max; i++) {
        Slot *s = &g->slots[i];
        if (!s->used || !s->finished)
            continue;
        g->tm.generated_tokens += s->res.n_output_ids;
        done[k++] = (DqGeneratorDone){.slot = i,
                                      .result = s->res,
                                      .prompt_tokens = s->prompt_tokens,
                                      .prefix_rows = s->prefix_rows,
                                      .vision_ms = s->vision_ms,
                                      .prefill_ms = s->prefill_ms,
                                      .decode_ms = s->decode_ms};
        memset(&s->res, 0, sizeof s->res); /* moved */
        slot_clear(g, s);
    }
    return k;
}

/* ---- one batch: the generator run once */

gboolean smolvlm_generate(Smolvlm *m, const SmolvlmRequest *requests, int n,
                          DqGenerateResult *results, DqGenerateTimings *timings, GError **err) {
    memset(results, 0, sizeof *results * (size_t)MAX(n, 0));
    if (n <= 0)
        return dq_fail(err, DQ_ERR_ARGS, "generate: no requests");
    DqGenerator *g = dq_generator_new(m, n, 0, err);
    if (g == NULL)
        return FALSE;
    dq_generator_set_prefix_cache(g, 0); /* keys are ignored here (generate.h) */
    int *slots = g_new(int, n);
    int *index = g_new(int, n); /* slot -> request */
    DqGeneratorDone *done = g_new0(DqGeneratorDone, n);
    gboolean ok = dq_generator_add(g, requests, n, slots, err);
    for (int i = 0; ok && i < n; i++)
        index[slots[i]] = i;
    while (ok && dq_generator_n_active(g) > 0)
        ok = dq_generator_step(g, err);
    if (ok) {
        int k = dq_generator_take_finished(g, done, n);
        g_assert(k == n);
        for (int i = 0; i < k; i++)
            results[index[done[i].slot]] = done[i].result;
    }
    if (timings != NULL)
        dq_generator_timings(g, timings);
    dq_generator_free(g);
    g_free(slots);
    g_free(index);
    g_free(done);
    return ok;
}
