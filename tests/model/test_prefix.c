/* The generator's prefix cache (generate.h) with the tiny snapshots from ../shared/models.
 *
 * A request that takes its prompt's first rows' KV from an earlier request or a batch-mate
 * answers with the tokens and last logits, to the bit, of the same request prefilled whole
 * (smolvlm_generate, which never reuses): a second question on a page, a question that extends
 * another, the same question again, another n_res or page (nothing taken), other prompt
 * templates (the question before the image; two images, the prefix ending between them),
 * batches mixing reused, batch-mate and cold requests, and the cache's eviction; prompts that
 * cross a forward call's rows (2048). On the fast CPU backend (float32 and bf16 weights, bf16
 * products, int8 with float32 caches), where the backend promises it (DqBackend
 * prompt_split_min), and on the reference and with float16 caches, where it does not and
 * nothing is taken. */
#include "dq_error.h"
#include "generate.h"
#include "image.h"
#include "pipeline.h"
#include "testutil.h"

#include <string.h>
#include <unistd.h>

/* The generator's rows a prefill call (DQ_PREFILL_ROWS in generate.c; CPU backends ask no
 * more) */
#define PREFILL_ROWS 2048

typedef struct {
    SmolvlmPrompt prompt;
    SmolvlmRequest req;
    DqGenerateResult alone;
} Case;

static SmolvlmPipeline *open_with(const char *model, SmolvlmOptions opts) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL)
        return NULL;
    char *snap = g_build_filename(shared, "models", model, NULL);
    GError *err = NULL;
    SmolvlmPipeline *p = smolvlm_pipeline_open(snap, &opts, &err);
    dq_assert_no_error(err);
    g_free(snap);
    return p;
}

static DqImage *load_image(const char *name) {
    GError *err = NULL;
    char *path = g_build_filename(dq_test_source_dir(), "tests", "fixtures", "images", name, NULL);
    DqImage *img = dq_image_load(path, DQ_EXIF_APPLY, &err);
    dq_assert_no_error(err);
    g_free(path);
    return img;
}

/* Answers the request alone (whole prefill) for reference. */
static void case_alone(Case *c, Smolvlm *m) {
    GError *err = NULL;
    g_assert_true(smolvlm_generate(m, &c->req, 1, &c->alone, NULL, &err));
    dq_assert_no_error(err);
}

/* A greedy request about `img` (and `img2` where not NULL) with user_text templated or a raw
 * prompt, at n_res, its features named `key`. */
static void case_init2(Case *c, SmolvlmPipeline *p, const DqImage *img, const DqImage *img2,
                       const char *user_text, const char *raw, int n_res, const char *key) {
    GError *err = NULL;
    const DqImage *imgs[2] = {img, img2};
    int n_images = img2 != NULL ? 2 : 1;
    SmolvlmPrepareOptions po = {.n_res = n_res};
    memset(c, 0, sizeof *c);
    g_assert_true(smolvlm_prompt_build(p, imgs, n_images, user_text, raw, &po, &c->prompt, &err));
    dq_assert_no_error(err);
    smolvlm_request_init(p, &c->prompt, &c->req);
    c->req.options.do_sample = FALSE;
    c->req.options.ignore_eos = TRUE; /* fixed lengths */
    c->req.options.max_new_tokens = 4;
    c->req.want_logits = TRUE;
    c->req.features_key = key;
    case_alone(c, p->model);
}

static void case_init(Case *c, SmolvlmPipeline *p, const DqImage *img, const char *user_text,
                      const char *raw, int n_res, const char *key) {
    case_init2(c, p, img, NULL, user_text, raw, n_res, key);
}

/* A prompt of ids only (no image): n ids of a fixed pseudo-random text, the first `shared` of
 * them the same for every seed. */
static void case_ids(Case *c, Smolvlm *m, int n, int shared, guint32 seed) {
    const SmolvlmConfig *cfg = smolvlm_config(m);
    memset(c, 0, sizeof *c);
    int32_t *ids = g_new(int32_t, n);
    for (int i = 0; i < n; i++) {
        guint32 x = (guint32)i * 2654435761u ^ (i < shared ? 0u : seed * 40503u);
        ids[i] = 100 + (int32_t)((x >> 7) % (guint32)(cfg->vocab_size - 200));
        if (ids[i] == cfg->image_token_id)
            ids[i]++;
    }
    c->prompt.input_ids = ids;
    c->prompt.n_input_ids = n;
    c->req.input_ids = ids;
    c->req.n_input_ids = n;
    dq_generate_options_init(&c->req.options, cfg);
    c->req.options.do_sample = FALSE;
    c->req.options.ignore_eos = TRUE;
    c->req.options.max_new_tokens = 3;
    c->req.want_logits = TRUE;
    case_alone(c, m);
}

static void case_clear(Case *c) {
    smolvlm_prompt_clear(&c->prompt);
    dq_generate_result_clear(&c->alone);
}

/* Past the last <image> row of the prompt (0: none). */
static int images_end(const Case *c, const Smolvlm *m) {
    int image_id = smolvlm_config(m)->image_token_id, end = 0;
    for (int i = 0; i < c->req.n_input_ids; i++)
        if (c->req.input_ids[i] == image_id)
            end = i + 1;
    return end;
}

/* The row of the prompt's k-th <image> id (from 0). */
static int nth_image(const Case *c, const Smolvlm *m, int k) {
    int image_id = smolvlm_config(m)->image_token_id;
    for (int i = 0; i < c->req.n_input_ids; i++)
        if (c->req.input_ids[i] == image_id && k-- == 0)
            return i;
    return -1;
}

/* Adds the requests together and runs them to the end: each gives the tokens (and, where it
 * asks, the last logits) it gives alone. prefix[i]: the rows reqs[i] took from a prefix. */
static void run_together(DqGenerator *g, const Smolvlm *m, Case *const *cs,
                         const SmolvlmRequest *reqs, int n, int *prefix) {
    int V = smolvlm_config(m)->vocab_size, slots[8];
    GError *err = NULL;
    g_assert_cmpint(n, <=, 8);
    g_assert_true(dq_generator_add(g, reqs, n, slots, &err));
    dq_assert_no_error(err);
    DqGeneratorDone done[8];
    for (int got = 0; got < n;) {
        int k = dq_generator_take_finished(g, done, 8);
        for (int d = 0; d < k; d++) {
            int i = 0;
            while (slots[i] != done[d].slot)
                i++;
            // NOLINTNEXTLINE(clang-analyzer-core.uninitialized.Assign): a slot of ours
            const DqGenerateResult *r = &done[d].result, *want = &cs[i]->alone;
            g_assert_cmpint(r->n_output_ids, ==, want->n_output_ids);
            g_assert_cmpmem(r->output_ids, r->n_output_ids * 4, want->output_ids,
                            want->n_output_ids * 4);
            if (reqs[i].want_logits) {
                g_assert_nonnull(r->last_logits);
                g_assert_cmpmem(r->last_logits, V * 4, want->last_logits, V * 4);
            } else
                g_assert_null(r->last_logits);
            g_assert_cmpint(done[d].prompt_tokens, ==, reqs[i].n_input_ids);
            prefix[i] = done[d].prefix_rows;
            dq_generate_result_clear(&done[d].result);
        }
        got += k;
        if (got < n) {
            g_assert_true(dq_generator_step(g, &err));
            dq_assert_no_error(err);
        }
    }
}

static int run_one(DqGenerator *g, const Smolvlm *m, Case *c) {
    int prefix = -1;
    run_together(g, m, &c, &c->req, 1, &prefix);
    return prefix;
}

/* The cases of one page and the others, in a generator with the default prefix cache. With
 * reuse FALSE the model is one where the backend promises nothing: no request takes a row. */
static void page_questions(SmolvlmPipeline *p, gboolean reuse) {
    Smolvlm *m = p->model;
    int split = smolvlm_prompt_split_min(m);
    g_assert_cmpint(split > 0, ==, reuse);
    DqImage *page = load_image("portrait_page.png"), *banner = load_image("banner_wide.png");
    enum {
        TITLE,
        SIGNED,
        TITLE_LONGER,
        OTHER_RES,
        BEFORE,
        AFTER,
        TWO,
        TWO_OTHER,
        BANNER,
        BANNER_2,
        N_CASES
    };
    Case cs[N_CASES];
    case_init(&cs[TITLE], p, page, "What is the title?", NULL, 2, "portrait#2");
    case_init(&cs[SIGNED], p, page, "Who signed it?", NULL, 2, "portrait#2");
    case_init(&cs[TITLE_LONGER], p, page, "What is the title of the letter?", NULL, 2,
              "portrait#2");
    case_init(&cs[OTHER_RES], p, page, "What is the title?", NULL, 1, "portrait#1");
    /* other templates: the question before the image; other words after it */
    case_init(&cs[BEFORE], p, page, NULL,
              "<|im_start|>User: Who signed it?<image><end_of_utterance>\nAssistant:", 2,
              "portrait#2");
    case_init(&cs[AFTER], p, page, NULL,
              "<|im_start|>User:<image>Answer briefly: who signed it?<end_of_utterance>\n"
              "Assistant:",
              2, "portrait#2");
    /* two images: the prompts part between them, the rest's features the second image's */
    case_init2(&cs[TWO], p, page, banner, NULL,
               "<|im_start|>User:<image>The first page.<image>What changed?<end_of_utterance>\n"
               "Assistant:",
               2, "portrait+banner#2");
    case_init2(&cs[TWO_OTHER], p, page, banner, NULL,
               "<|im_start|>User:<image>Another page entirely.<image>What changed?"
               "<end_of_utterance>\nAssistant:",
               2, "portrait+banner#2");
    case_init(&cs[BANNER], p, banner, "What is the title?", NULL, 1, "banner#1");
    case_init(&cs[BANNER_2], p, banner, "Who wrote it?", NULL, 1, "banner#1");

    GError *err = NULL;
    DqGenerator *g = dq_generator_new(m, 4, 4, &err);
    dq_assert_no_error(err);
    DqGenerateTimings tm;
    int n_title = cs[TITLE].req.n_input_ids, title_images = images_end(&cs[TITLE], m);
    g_assert_cmpint(title_images, >, n_title / 2);

    /* the first question: nothing to take */
    g_assert_cmpint(run_one(g, m, &cs[TITLE]), ==, 0);
    dq_generator_timings(g, &tm);
    g_assert_cmpint(tm.prefix_bytes, ==, reuse ? smolvlm_kv_bytes(m, n_title) : 0);
    /* another question: the image rows and the template up to the question */
    int signed_rows = run_one(g, m, &cs[SIGNED]);
    /* a question that extends the first: its words too */
    int longer_rows = run_one(g, m, &cs[TITLE_LONGER]);
    /* the same question again: all but the last split_min rows */
    int again_rows = run_one(g, m, &cs[TITLE]);
    if (reuse) {
        g_assert_cmpint(signed_rows, >=, images_end(&cs[SIGNED], m));
        g_assert_cmpint(signed_rows, <=, cs[SIGNED].req.n_input_ids - split);
        g_assert_cmpint(longer_rows, >, signed_rows);
        g_assert_cmpint(longer_rows, <, n_title);
        g_assert_cmpint(again_rows, ==, n_title - split);
        /* one entry serves the page's questions: the later ones are not kept */
        dq_generator_timings(g, &tm);
        g_assert_cmpint(tm.prefix_bytes, ==, smolvlm_kv_bytes(m, n_title));
        g_assert_cmpint(tm.prefix_reused, ==, 3);
        g_assert_cmpint(tm.prefix_rows, ==, signed_rows + longer_rows + again_rows);
    } else {
        g_assert_cmpint(signed_rows + longer_rows + again_rows, ==, 0);
    }
    /* another n_res: other features, nothing taken */
    g_assert_cmpint(run_one(g, m, &cs[OTHER_RES]), ==, 0);
    /* another template after the image: the image rows */
    int after_rows = run_one(g, m, &cs[AFTER]);
    /* the question before the image: the chat turn's first ids only, the image rows prefilled
     * with the page's features */
    int before_rows = run_one(g, m, &cs[BEFORE]);
    /* two images, the prefix ending after the first: the second's features from row 0 on */
    g_assert_cmpint(run_one(g, m, &cs[TWO]), ==, 0);
    int two_rows = run_one(g, m, &cs[TWO_OTHER]);
    if (reuse) {
        g_assert_cmpint(after_rows, >=, images_end(&cs[AFTER], m));
        g_assert_cmpint(before_rows, >, 0);
        g_assert_cmpint(before_rows, <, nth_image(&cs[BEFORE], m, 0));
        int per_image =
            cs[TWO_OTHER].prompt.images[0]->n_tiles * smolvlm_config(m)->tokens_per_tile;
        g_assert_cmpint(two_rows, >, nth_image(&cs[TWO_OTHER], m, per_image - 1));
        g_assert_cmpint(two_rows, <=, nth_image(&cs[TWO_OTHER], m, per_image));
    } else {
        g_assert_cmpint(after_rows + before_rows + two_rows, ==, 0);
    }

    /* One add of a new page, a question from the cache, the new page's second question (from
     * its batch-mate), the first question again without logits (its first token from
     * argmax_rows): the new page is encoded once, and each answers as alone. */
    dq_generator_timings(g, &tm);
    int tiles_before = tm.n_tiles;
    SmolvlmRequest reqs[4] = {cs[BANNER].req, cs[SIGNED].req, cs[BANNER_2].req, cs[TITLE].req};
    reqs[3].want_logits = FALSE;
    Case *mixed[4] = {&cs[BANNER], &cs[SIGNED], &cs[BANNER_2], &cs[TITLE]};
    int rows[4];
    run_together(g, m, mixed, reqs, 4, rows);
    dq_generator_timings(g, &tm);
    g_assert_cmpint(tm.n_tiles - tiles_before, ==, cs[BANNER].prompt.images[0]->n_tiles);
    g_assert_cmpint(rows[0], ==, 0);
    if (reuse) {
        g_assert_cmpint(rows[1], ==, signed_rows);
        g_assert_cmpint(rows[2], >=, images_end(&cs[BANNER_2], m));
        g_assert_cmpint(rows[3], ==, n_title - split);
    } else {
        g_assert_cmpint(rows[1] + rows[2] + rows[3], ==, 0);
        g_assert_cmpint(tm.prefix_reused, ==, 0);
        g_assert_cmpint(tm.prefix_bytes, ==, 0);
    }
    dq_generator_free(g);
    for (int i = 0; i < N_CASES; i++)
        case_clear(&cs[i]);
    dq_image_free(page);
    dq_image_free(banner);
}

static void page_questions_of(const char *model, SmolvlmOptions opts, gboolean reuse) {
    SmolvlmPipeline *p = open_with(model, opts);
    if (p == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    page_questions(p, reuse);
    smolvlm_pipeline_free(p);
}

static void test_f32(void) {
    page_questions_of("tiny-smolvlm-b512", (SmolvlmOptions){.device = "cpu"}, TRUE);
}

static void test_bf16(void) {
    page_questions_of("tiny-smolvlm-a384-v1tok-bf16", (SmolvlmOptions){.device = "cpu"}, TRUE);
}

/* --weights bf16 and int8 take float16 caches where the CPU has F16C: a prompt attends over its
 * own new rows unrounded, over copied ones rounded, so nothing is taken there (the same bits as
 * a whole prefill, trivially); with float32 caches (DOCQA_KV_F16=0, read when the model opens)
 * the rows are taken, and the bits kept. */
static void approximate(const char *model, const char *weights) {
    g_unsetenv("DOCQA_KV_F16");
    SmolvlmPipeline *p = open_with(model, (SmolvlmOptions){.weights = weights});
    if (p == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    page_questions(p, smolvlm_prompt_split_min(p->model) > 0);
    smolvlm_pipeline_free(p);
    g_setenv("DOCQA_KV_F16", "0", TRUE);
    page_questions_of(model, (SmolvlmOptions){.weights = weights}, TRUE);
    g_unsetenv("DOCQA_KV_F16");
}

static void test_bf16_products(void) {
    approximate("tiny-smolvlm-a384-v1tok", "bf16");
}

static void test_int8(void) {
    approximate("tiny-smolvlm-b512", "int8");
}

static void test_ref(void) {
    page_questions_of("tiny-smolvlm-b512", (SmolvlmOptions){.device = "cpu-ref"}, FALSE);
}

/* The promise itself: the products' bound, or the attention's prompt path (heads sharing a KV
 * head x rows above 16) where that asks more; none with float16 caches or heads the fast
 * attention does not take; none on the reference. */
static void test_promise(void) {
    GError *err = NULL;
    DqBackend *ref = dq_backend_cpu_new(&err);
    dq_assert_no_error(err);
    g_assert_null(ref->prompt_split_min);
    dq_backend_free(ref);
    DqBackend *fast = dq_backend_cpu_fast_new(&err);
    dq_assert_no_error(err);
    g_assert_nonnull(fast->prompt_split_min);
    DqAttention a = {.n_heads = 9, .n_kv_heads = 3, .head_dim = 64}; /* 256M */
    g_assert_cmpint(fast->prompt_split_min(fast, &a), ==, fast->matmul_row_invariant_min);
    a.n_heads = a.n_kv_heads = 32; /* 2.2B: a row a KV head */
    g_assert_cmpint(fast->prompt_split_min(fast, &a), ==, 17);
    a.bf16_products = TRUE;
    g_assert_cmpint(fast->prompt_split_min(fast, &a), ==, 17);
    a.kv_f16 = TRUE;
    g_assert_cmpint(fast->prompt_split_min(fast, &a), ==, 0);
    a.kv_f16 = FALSE;
    a.head_dim = 512;
    g_assert_cmpint(fast->prompt_split_min(fast, &a), ==, 0);
    dq_backend_free(fast);
}

/* Least recently used entries leave first, within the budget; 0 keeps none and takes none. */
static void test_eviction(void) {
    SmolvlmPipeline *p = open_with("tiny-smolvlm-b512", (SmolvlmOptions){.device = "cpu"});
    if (p == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    Smolvlm *m = p->model;
    DqImage *page = load_image("portrait_page.png"), *banner = load_image("banner_wide.png");
    Case title, signed_, title_longer, banner_1, banner_2, two;
    case_init(&title, p, page, "What is the title?", NULL, 2, "portrait#2");
    case_init(&signed_, p, page, "Who signed it?", NULL, 2, "portrait#2");
    case_init(&title_longer, p, page, "What is the title of the letter?", NULL, 2, "portrait#2");
    case_init(&banner_1, p, banner, "What is the title?", NULL, 1, "banner#1");
    case_init(&banner_2, p, banner, "Who wrote it?", NULL, 1, "banner#1");
    case_init2(&two, p, page, banner, NULL,
               "<|im_start|>User:<image>The first page.<image>What changed?<end_of_utterance>\n"
               "Assistant:",
               2, "portrait+banner#2");
    size_t page_bytes = smolvlm_kv_bytes(m, title.req.n_input_ids);
    size_t banner_bytes = smolvlm_kv_bytes(m, banner_1.req.n_input_ids);
    size_t two_bytes = smolvlm_kv_bytes(m, two.req.n_input_ids);
    g_assert_cmpint(banner_bytes, <, two_bytes);
    GError *err = NULL;
    DqGenerator *g = dq_generator_new(m, 2, 4, &err);
    dq_assert_no_error(err);
    DqGenerateTimings tm;

    /* room for one page: the banner's entry replaces the page's */
    dq_generator_set_prefix_cache(g, MAX(page_bytes, banner_bytes));
    g_assert_cmpint(run_one(g, m, &title), ==, 0);
    g_assert_cmpint(run_one(g, m, &banner_1), ==, 0);
    dq_generator_timings(g, &tm);
    g_assert_cmpint(tm.prefix_bytes, ==, banner_bytes);
    g_assert_cmpint(run_one(g, m, &signed_), ==, 0);
    g_assert_cmpint(run_one(g, m, &banner_2), ==, 0);

    /* room for the page and the two-image prompt, not for the banner too: the banner, used
     * least recently, leaves */
    dq_generator_set_prefix_cache(g, 0);
    dq_generator_timings(g, &tm);
    g_assert_cmpint(tm.prefix_bytes, ==, 0);
    dq_generator_set_prefix_cache(g, page_bytes + two_bytes);
    g_assert_cmpint(run_one(g, m, &title), ==, 0);
    g_assert_cmpint(run_one(g, m, &banner_1), ==, 0);
    g_assert_cmpint(run_one(g, m, &signed_), >, 0); /* the page's entry used: the newer */
    g_assert_cmpint(run_one(g, m, &two), ==, 0);
    dq_generator_timings(g, &tm);
    g_assert_cmpint(tm.prefix_bytes, ==, page_bytes + two_bytes);
    g_assert_cmpint(run_one(g, m, &title_longer), >, 0);
    g_assert_cmpint(run_one(g, m, &banner_2), ==, 0);

    /* off: nothing kept, nothing taken, not even from a batch-mate */
    dq_generator_set_prefix_cache(g, 0);
    SmolvlmRequest both[2] = {title.req, signed_.req};
    Case *cs[2] = {&title, &signed_};
    int rows[2];
    run_together(g, m, cs, both, 2, rows);
    g_assert_cmpint(rows[0] + rows[1], ==, 0);
    dq_generator_timings(g, &tm);
    g_assert_cmpint(tm.prefix_bytes, ==, 0);
    dq_generator_free(g);
    Case *all[] = {&title, &signed_, &title_longer, &banner_1, &banner_2, &two};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
        case_clear(all[i]);
    dq_image_free(page);
    dq_image_free(banner);
    smolvlm_pipeline_free(p);
}

/* Prompts longer than a forward call (2048 rows): a prompt's chunks are counted from its
 * position 0 whatever it took, a last chunk shorter than split_min is never kept (it went
 * through other kernels), and the rows taken stop where the rest starts a chunk of at least
 * split_min rows. */
static void test_chunks(void) {
    SmolvlmPipeline *p = open_with("tiny-smolvlm-b512", (SmolvlmOptions){.device = "cpu"});
    if (p == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    Smolvlm *m = p->model;
    const int split = smolvlm_prompt_split_min(m), pr = PREFILL_ROWS;
    g_assert_cmpint(split, >, 1);
    Case a, short_tail, longer, longer_again;
    case_ids(&a, m, pr + 2, pr + 2, 1);               /* a last chunk of 2 rows */
    case_ids(&short_tail, m, pr + 4, pr - 3, 2);      /* shares a's first 2045 */
    case_ids(&longer, m, pr + 152, pr + 12, 3);       /* shares a's first 2060 */
    case_ids(&longer_again, m, pr + 152, pr + 12, 3); /* longer itself */
    g_assert_cmpint(memcmp(longer.req.input_ids, longer_again.req.input_ids, (pr + 152) * 4), ==,
                    0);
    GError *err = NULL;
    DqGenerator *g = dq_generator_new(m, 2, 0, &err);
    dq_assert_no_error(err);
    DqGenerateTimings tm;
    g_assert_cmpint(run_one(g, m, &a), ==, 0);
    dq_generator_timings(g, &tm);
    g_assert_cmpint(tm.prefix_bytes, ==, smolvlm_kv_bytes(m, pr)); /* not its last 2 rows */
    /* a again: its first chunk but the last split_min rows, the 2 rows as before */
    g_assert_cmpint(run_one(g, m, &a), ==, pr - split);
    g_assert_cmpint(run_one(g, m, &short_tail), ==, pr - split);
    /* the whole first chunk: the rest starts the second */
    SmolvlmRequest reqs[2] = {longer.req, longer_again.req};
    Case *cs[2] = {&longer, &longer_again};
    int rows[2];
    run_together(g, m, cs, reqs, 2, rows);
    // NOLINTNEXTLINE(clang-analyzer-core.uninitialized.Assign): run_together sets rows[0..n)
    g_assert_cmpint(rows[0], ==, pr);
    /* its batch-mate's, up to the last split_min rows, within the second chunk */
    // NOLINTNEXTLINE(clang-analyzer-core.uninitialized.Assign): the same
    g_assert_cmpint(rows[1], ==, pr + 152 - split);
    /* None for a prompt of split_min rows (its rest would be shorter), though all its ids are
     * a's first, nor for one whose first id is another. */
    Case few, other;
    case_ids(&few, m, split, split, 1);
    case_ids(&other, m, pr + 2, 0, 4);
    g_assert_cmpint(few.req.input_ids[0], ==, a.req.input_ids[0]);
    g_assert_cmpint(other.req.input_ids[0], !=, a.req.input_ids[0]);
    g_assert_cmpint(run_one(g, m, &few), ==, 0);
    g_assert_cmpint(run_one(g, m, &other), ==, 0);
    dq_generator_free(g);
    Case *all[] = {&a, &short_tail, &longer, &longer_again, &few, &other};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
        case_clear(all[i]);
    smolvlm_pipeline_free(p);
}

/* A scaled RoPE (yarn: other frequencies and cos/sin times an attention factor) changes nothing
 * about reuse: rows taken from the cache were rotated by the same table at the same positions. */
static void test_rope_yarn(void) {
    if (dq_test_shared_dir() == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    char *src = g_build_filename(dq_test_shared_dir(), "models", "tiny-smolvlm-b512", NULL);
    char *snap = dq_test_snapshot_with_positions(src, 4096);
    char *path = g_build_filename(snap, "config.json", NULL);
    char *text = dq_test_read_file(path, NULL);
    GString *s = g_string_new(text);
    g_assert_cmpint(g_string_replace(s, "\"rope_scaling\": null",
                                     "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0, "
                                     "\"original_max_position_embeddings\": 32}",
                                     1),
                    ==, 1);
    g_assert_cmpint(unlink(path), ==, 0);
    g_assert_true(g_file_set_contents(path, s->str, (gssize)s->len, NULL));
    GError *err = NULL;
    SmolvlmPipeline *p = smolvlm_pipeline_open(snap, &(SmolvlmOptions){.device = "cpu"}, &err);
    dq_assert_no_error(err);
    page_questions(p, TRUE);
    smolvlm_pipeline_free(p);
    g_string_free(s, TRUE);
    g_free(text);
    g_free(path);
    g_free(snap);
    g_free(src);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/prefix/promise", test_promise);
    g_test_add_func("/prefix/f32", test_f32);
    g_test_add_func("/prefix/chunks", test_chunks);
    g_test_add_func("/prefix/eviction", test_eviction);
    g_test_add_func("/prefix/bf16", test_bf16);
    g_test_add_func("/prefix/bf16-products", test_bf16_products);
    g_test_add_func("/prefix/int8", test_int8);
    g_test_add_func("/prefix/ref", test_ref);
    g_test_add_func("/prefix/rope-yarn", test_rope_yarn);
    return g_test_run();
}
