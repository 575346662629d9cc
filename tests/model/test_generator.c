/* Continuous batching (DqGenerator, generate.h) with the tiny snapshots from ../shared/models.
 *
 * A request's tokens and last logits are bit-identical whether it runs alone (smolvlm_generate)
 * or joins a generator mid-way, beside other requests, in a slot another request just left;
 * on the fast CPU backend ("cpu", f32 and bf16 weights) and the reference ("cpu-ref"). Requests
 * with the same features_key run the vision encoder once (counted in the generator's tiles) and
 * still answer as they do alone; the feature cache keeps only the last few keys. */
#include "dq_error.h"
#include "generate.h"
#include "image.h"
#include "pipeline.h"
#include "snapshot_edit.h"
#include "testutil.h"

#include <json-glib/json-glib.h>
#include <string.h>
#include <unistd.h>

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

static SmolvlmPipeline *open_pipeline(const char *model, const char *device) {
    return open_with(model, (SmolvlmOptions){.device = device});
}

/* A greedy request about one fixture image (NULL: text only), answered alone for reference. */
static void case_init(Case *c, SmolvlmPipeline *p, const char *image, const char *question,
                      int n_res, int max_new) {
    GError *err = NULL;
    DqImage *img = NULL;
    if (image != NULL) {
        char *path =
            g_build_filename(dq_test_source_dir(), "tests", "fixtures", "images", image, NULL);
        img = dq_image_load(path, DQ_EXIF_APPLY, &err);
        dq_assert_no_error(err);
        g_free(path);
    }
    SmolvlmPrepareOptions po = {.n_res = n_res};
    g_assert_true(smolvlm_prompt_build(p, (const DqImage *const *)&img, img ? 1 : 0, question, NULL,
                                       &po, &c->prompt, &err));
    dq_assert_no_error(err);
    if (img)
        dq_image_free(img);
    smolvlm_request_init(p, &c->prompt, &c->req);
    c->req.options.do_sample = FALSE;
    c->req.options.ignore_eos = TRUE; /* fixed lengths: the requests finish when planned */
    c->req.options.max_new_tokens = max_new;
    c->req.want_logits = TRUE;
    g_assert_true(smolvlm_generate(p->model, &c->req, 1, &c->alone, NULL, &err));
    dq_assert_no_error(err);
}

static void case_clear(Case *c) {
    smolvlm_prompt_clear(&c->prompt);
    dq_generate_result_clear(&c->alone);
}

static void assert_same(const Case *c, const DqGenerateResult *r, int vocab) {
    // NOLINTNEXTLINE(clang-analyzer-core.uninitialized.Assign): set
    g_assert_cmpint(r->n_output_ids, ==, c->alone.n_output_ids);
    g_assert_cmpmem(r->output_ids, r->n_output_ids * 4, c->alone.output_ids,
                    c->alone.n_output_ids * 4);
    g_assert_nonnull(r->last_logits);
    g_assert_cmpmem(r->last_logits, vocab * 4, c->alone.last_logits, vocab * 4);
}

/* A alone for 3 steps; B and C join together; D takes the first slot that frees. */
static void join_midway(const char *model, const char *device) {
    SmolvlmPipeline *p = open_pipeline(model, device);
    if (p == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    int V = smolvlm_config(p->model)->vocab_size;
    Case cs[4];
    case_init(&cs[0], p, "portrait_page.png", "What is the title?", 2, 10);
    case_init(&cs[1], p, "banner_wide.png", "Who wrote it?", 1, 4);
    case_init(&cs[2], p, NULL, "Say hello.", 0, 7);
    case_init(&cs[3], p, "logo_rgba.png", "What colour is it?", 1, 5);

    GError *err = NULL;
    DqGenerator *g = dq_generator_new(p->model, 3, 0, &err);
    dq_assert_no_error(err);
    int slot_of[4] = {-1, -1, -1, -1}, slots[2];
    gboolean answered[4] = {FALSE};
    g_assert_true(dq_generator_add(g, &cs[0].req, 1, slots, &err));
    slot_of[0] = slots[0];
    for (int i = 0; i < 3; i++)
        g_assert_true(dq_generator_step(g, &err));
    SmolvlmRequest two[2] = {cs[1].req, cs[2].req};
    g_assert_true(dq_generator_add(g, two, 2, slots, &err));
    dq_assert_no_error(err);
    slot_of[1] = slots[0];
    slot_of[2] = slots[1];
    g_assert_cmpint(dq_generator_n_free(g), ==, 0);
    int n_answered = 0, refill_slot = -1;
    DqGeneratorDone done[3];
    while (n_answered < 4) {
        g_assert_cmpint(dq_generator_n_active(g), >, 0);
        g_assert_true(dq_generator_step(g, &err));
        dq_assert_no_error(err);
        int k = dq_generator_take_finished(g, done, 3);
        for (int i = 0; i < k; i++) {
            int which = -1;
            for (int j = 0; j < 4; j++)
                if (slot_of[j] == done[i].slot && !answered[j])
                    which = j;
            g_assert_cmpint(which, >=, 0);
            assert_same(&cs[which], &done[i].result, V);
            g_assert_cmpint(done[i].prompt_tokens, ==, cs[which].req.n_input_ids);
            answered[which] = TRUE;
            n_answered++;
            dq_generate_result_clear(&done[i].result);
        }
        if (k > 0 && slot_of[3] < 0) {
            g_assert_true(dq_generator_add(g, &cs[3].req, 1, slots, &err));
            slot_of[3] = refill_slot = slots[0];
        }
    }
    g_assert_cmpint(refill_slot, ==, slot_of[1]); /* B finished first; D took its slot */
    DqGenerateTimings tm;
    dq_generator_timings(g, &tm);
    g_assert_cmpint(tm.generated_tokens, ==, 10 + 4 + 7 + 5);
    g_assert_cmpint(tm.features_reused, ==, 0);
    g_assert_cmpint(dq_generator_n_free(g), ==, 3);
    dq_generator_free(g);
    for (int i = 0; i < 4; i++)
        case_clear(&cs[i]);
    smolvlm_pipeline_free(p);
}

static void test_join_midway_fast(void) {
    join_midway("tiny-smolvlm-b512", "cpu");
}

static void test_join_midway_fast_bf16(void) {
    join_midway("tiny-smolvlm-a384-v1tok-bf16", "cpu");
}

static void test_join_midway_ref(void) {
    join_midway("tiny-smolvlm-b512", "cpu-ref");
}

/* A greedy request that does not ask for its logits gets its first token from the backend's
 * argmax_rows, where the prompt's last logits are (a GPU sends back an id, not the vocabulary's
 * floats): the same tokens as the request that takes them from its logits, batched or not. */
static void (*first_argmax_orig)(DqBackend *, int32_t *, const float *, int, int);
static int first_argmax_rows;

static void first_argmax_count(DqBackend *be, int32_t *ids, const float *x, int n, int cols) {
    first_argmax_rows += n;
    first_argmax_orig(be, ids, x, n, cols);
}

static void first_token(const char *device) {
    SmolvlmPipeline *p = open_pipeline("tiny-smolvlm-b512", device);
    if (p == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    Case cs[2];
    case_init(&cs[0], p, "portrait_page.png", "What is the title?", 2, 5);
    case_init(&cs[1], p, NULL, "Say hello.", 0, 3);
    DqBackend *be = smolvlm_backend(p->model);
    first_argmax_orig = be->argmax_rows;
    be->argmax_rows = first_argmax_count;
    GError *err = NULL;
    DqGenerator *g = dq_generator_new(p->model, 2, 0, &err);
    dq_assert_no_error(err);
    SmolvlmRequest two[2] = {cs[0].req, cs[1].req};
    two[0].want_logits = two[1].want_logits = FALSE;
    int slots[2];
    first_argmax_rows = 0;
    g_assert_true(dq_generator_add(g, two, 2, slots, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(first_argmax_rows, ==, 2); /* both first tokens, and no logits */
    int n_done = 0;
    DqGeneratorDone done[2];
    while (n_done < 2) {
        g_assert_true(dq_generator_step(g, &err));
        dq_assert_no_error(err);
        int k = dq_generator_take_finished(g, done, 2);
        for (int i = 0; i < k; i++) {
            const Case *c = &cs[done[i].slot == slots[0] ? 0 : 1];
            const DqGenerateResult *r = &done[i].result;
            g_assert_null(r->last_logits);
            g_assert_cmpint(r->n_output_ids, ==, c->alone.n_output_ids);
            g_assert_cmpmem(r->output_ids, r->n_output_ids * 4, c->alone.output_ids,
                            c->alone.n_output_ids * 4);
            dq_generate_result_clear(&done[i].result);
        }
        n_done += k;
    }
    be->argmax_rows = first_argmax_orig;
    dq_generator_free(g);
    for (int i = 0; i < 2; i++)
        case_clear(&cs[i]);
    smolvlm_pipeline_free(p);
}

static void test_first_token_fast(void) {
    first_token("cpu");
}

static void test_first_token_ref(void) {
    first_token("cpu-ref");
}

/* A generated <image> id is embedded as any other token, and generation goes on: transformers
 * 4.57.6 merges image features only into calls that come with pixel values (the prompt), so at
 * a decode step <image> is a token like the others. The model is made to pick <image> as its
 * second new token (argmax_rows returns it), as transformers' generate did with a logits
 * processor forcing it (tests/model/force_image_token.py); the tokens after it are that run's.
 * docqa used to fail the step, and with it every request decoding beside this one. */
static void (*forced_argmax_orig)(DqBackend *, int32_t *, const float *, int, int);
static int forced_calls, forced_id;

static void forced_argmax(DqBackend *be, int32_t *ids, const float *x, int n, int cols) {
    forced_argmax_orig(be, ids, x, n, cols);
    if (forced_calls++ == 1) /* the first decode step (the prefill picked the first token) */
        ids[0] = forced_id;
}

static void test_generated_image_token(void) {
    SmolvlmPipeline *p = open_pipeline("tiny-smolvlm-b512", "cpu");
    if (p == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    Case c;
    case_init(&c, p, "portrait_page.png", "What is the title?", 0, 6);
    /* transformers, the same prompt, image and model, <image> forced as the second token */
    const int32_t want[6] = {28802, 49190, 25105, 16035, 20247, 28802};
    forced_id = smolvlm_config(p->model)->image_token_id;
    g_assert_cmpint(forced_id, ==, want[1]);
    g_assert_cmpint(c.alone.output_ids[0], ==, want[0]); /* unforced, the same first token */
    DqBackend *be = smolvlm_backend(p->model);
    forced_argmax_orig = be->argmax_rows;
    be->argmax_rows = forced_argmax;
    forced_calls = 0;
    SmolvlmRequest req = c.req;
    req.want_logits = FALSE; /* every token through argmax_rows */
    DqGenerateResult r = {0};
    GError *err = NULL;
    g_assert_true(smolvlm_generate(p->model, &req, 1, &r, NULL, &err));
    dq_assert_no_error(err);
    be->argmax_rows = forced_argmax_orig;
    g_assert_cmpint(r.n_output_ids, ==, 6);
    g_assert_cmpmem(r.output_ids, sizeof want, want, sizeof want);
    dq_generate_result_clear(&r);
    case_clear(&c);
    smolvlm_pipeline_free(p);
}

/* Two questions about one page: one vision pass, the answers each gets alone. */
static void test_vision_reuse(void) {
    SmolvlmPipeline *p = open_pipeline("tiny-smolvlm-b512", "cpu");
    if (p == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    int V = smolvlm_config(p->model)->vocab_size;
    Case q1, q2, other;
    case_init(&q1, p, "portrait_page.png", "What is the title?", 2, 6);
    case_init(&q2, p, "portrait_page.png", "Who signed it?", 2, 8);
    case_init(&other, p, "banner_wide.png", "What is the title?", 1, 3);
    int page_tiles = q1.prompt.images[0]->n_tiles;
    g_assert_cmpint(page_tiles, >, 1);
    q1.req.features_key = q2.req.features_key = "portrait_page.png#2";
    other.req.features_key = "banner_wide.png#1";

    GError *err = NULL;
    DqGenerator *g = dq_generator_new(p->model, 2, 1, &err);
    /* The features cache alone: a question taking its page's rows from the prefix cache needs
     * no features at all (test_prefix.c). */
    dq_generator_set_prefix_cache(g, 0);
    DqGeneratorDone done[2];
    DqGenerateTimings tm;
    int slots[2];
    /* Together in one add: the encoder sees the page once. */
    SmolvlmRequest both[2] = {q1.req, q2.req};
    g_assert_true(dq_generator_add(g, both, 2, slots, &err));
    dq_assert_no_error(err);
    dq_generator_timings(g, &tm);
    g_assert_cmpint(tm.n_tiles, ==, page_tiles);
    g_assert_cmpint(tm.features_reused, ==, 1);
    /* the stages' CPU time is counted as their wall time is, in its own stage */
    g_assert_cmpfloat(tm.vision_cpu_ms, >, 0);
    g_assert_cmpfloat(tm.prefill_cpu_ms, >, 0);
    g_assert_cmpfloat(tm.decode_cpu_ms, ==, 0);
    int got = 0;
    while (got < 2) {
        g_assert_true(dq_generator_step(g, &err));
        int k = dq_generator_take_finished(g, done, 2);
        for (int i = 0; i < k; i++) {
            assert_same(done[i].slot == slots[0] ? &q1 : &q2, &done[i].result, V);
            dq_generate_result_clear(&done[i].result);
        }
        got += k;
    }
    /* Later, alone: from the cache. */
    g_assert_true(dq_generator_add(g, &q2.req, 1, slots, &err));
    while (dq_generator_n_active(g) > 0)
        g_assert_true(dq_generator_step(g, &err));
    g_assert_cmpint(dq_generator_take_finished(g, done, 2), ==, 1);
    assert_same(&q2, &done[0].result, V);
    dq_generate_result_clear(&done[0].result);
    dq_generator_timings(g, &tm);
    g_assert_cmpint(tm.n_tiles, ==, page_tiles);
    g_assert_cmpint(tm.features_reused, ==, 2);
    g_assert_cmpfloat(tm.decode_cpu_ms, >, 0);
    /* The cache holds one page: another page evicts it, and the first is encoded again. */
    g_assert_true(dq_generator_add(g, &other.req, 1, slots, &err));
    g_assert_true(dq_generator_add(g, &q1.req, 1, slots, &err));
    dq_generator_timings(g, &tm);
    g_assert_cmpint(tm.n_tiles, ==, 2 * page_tiles + other.prompt.images[0]->n_tiles);
    g_assert_cmpint(tm.features_reused, ==, 2);
    while (dq_generator_n_active(g) > 0)
        g_assert_true(dq_generator_step(g, &err));
    g_assert_cmpint(dq_generator_take_finished(g, done, 2), ==, 2);
    for (int i = 0; i < 2; i++) {
        assert_same(done[i].slot == slots[0] ? &q1 : &other, &done[i].result, V);
        dq_generate_result_clear(&done[i].result);
    }
    dq_generator_free(g);
    case_clear(&q1);
    case_clear(&q2);
    case_clear(&other);
    smolvlm_pipeline_free(p);
}

/* Bad requests and full generators are refused without disturbing what runs. */
static void test_errors(void) {
    SmolvlmPipeline *p = open_pipeline("tiny-smolvlm-b512", "cpu");
    if (p == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    int V = smolvlm_config(p->model)->vocab_size;
    GError *err = NULL;
    g_assert_null(dq_generator_new(p->model, 0, 0, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
    g_clear_error(&err);

    Case a, img;
    case_init(&a, p, NULL, "Say hello.", 0, 5);
    case_init(&img, p, "logo_rgba.png", "What is it?", 1, 2);
    DqGenerator *g = dq_generator_new(p->model, 1, 2, &err);
    int slot;
    g_assert_true(dq_generator_step(g, &err)); /* nothing to do */
    g_assert_true(dq_generator_add(g, &a.req, 1, &slot, &err));
    g_assert_false(dq_generator_add(g, &a.req, 1, &slot, &err)); /* full */
    g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
    g_clear_error(&err);
    dq_generator_drop(g, slot);
    g_assert_cmpint(dq_generator_n_free(g), ==, 1);
    /* Image tokens without their image: refused, nothing added. */
    SmolvlmRequest bad = img.req;
    bad.n_images = 0;
    g_assert_false(dq_generator_add(g, &bad, 1, &slot, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
    g_test_message("%s", err->message);
    g_clear_error(&err);
    g_assert_cmpint(dq_generator_n_free(g), ==, 1);
    /* No prompt: no ids (where the pointer is there), or no pointer (where a count is). */
    SmolvlmRequest empty = a.req;
    empty.n_input_ids = 0;
    SmolvlmRequest no_ids = a.req;
    no_ids.input_ids = NULL;
    const SmolvlmRequest *no_prompt[] = {&empty, &no_ids};
    for (int i = 0; i < 2; i++) {
        g_assert_false(dq_generator_add(g, no_prompt[i], 1, &slot, &err));
        g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
        g_assert_cmpstr(err->message, ==, "empty prompt");
        g_clear_error(&err);
        g_assert_cmpint(dq_generator_n_free(g), ==, 1);
    }
    /* A request that finishes at its first token is done without a step. */
    SmolvlmRequest one = a.req;
    one.options.max_new_tokens = 1;
    g_assert_true(dq_generator_add(g, &one, 1, &slot, &err));
    g_assert_cmpint(dq_generator_n_active(g), ==, 0);
    DqGeneratorDone done;
    g_assert_cmpint(dq_generator_take_finished(g, &done, 1), ==, 1);
    g_assert_cmpint(done.result.n_output_ids, ==, 1);
    g_assert_cmpint(done.result.output_ids[0], ==, a.alone.output_ids[0]);
    g_assert_cmpmem(done.result.last_logits, V * 4, a.alone.last_logits, V * 4);
    dq_generate_result_clear(&done.result);
    dq_generator_free(g);
    /* The timings of plain steps: 5 tokens, the first from the prefill, then 4 steps. */
    DqGenerateResult r;
    DqGenerateTimings tm;
    g_assert_true(smolvlm_generate(p->model, &a.req, 1, &r, &tm, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(r.n_output_ids, ==, 5);
    g_assert_cmpint(tm.generated_tokens, ==, 5);
    g_assert_cmpint(tm.decode_steps, ==, 4);
    g_assert_cmpfloat(tm.decode_ms, >, 0);
    dq_generate_result_clear(&r);
    case_clear(&a);
    case_clear(&img);
    smolvlm_pipeline_free(p);
}

/* Runs reqs[0 .. n) in a generator of n slots with k guesses a step (adapt: only while that is
 * measured faster); results[i] for reqs[i]. */
static void run_speculative(Smolvlm *m, const SmolvlmRequest *reqs, int n, int k, gboolean adapt,
                            DqGenerateResult *results, DqGenerateTimings *tm) {
    GError *err = NULL;
    DqGenerator *g = dq_generator_new(m, n, 0, &err);
    dq_assert_no_error(err);
    dq_generator_set_draft(g, k, adapt);
    int slots[8], index[8];
    g_assert_cmpint(n, <=, 8);
    g_assert_true(dq_generator_add(g, reqs, n, slots, &err));
    dq_assert_no_error(err);
    for (int i = 0; i < n; i++)
        index[slots[i]] = i;
    while (dq_generator_n_active(g) > 0) {
        g_assert_true(dq_generator_step(g, &err));
        dq_assert_no_error(err);
    }
    DqGeneratorDone done[8];
    g_assert_cmpint(dq_generator_take_finished(g, done, 8), ==, n);
    for (int i = 0; i < n; i++)
        results[index[done[i].slot]] = done[i].result;
    dq_generator_timings(g, tm);
    dq_generator_free(g);
}

/* req through a fresh pipeline of snap with opt: plainly, or with opt's draft guessing 3 tokens
 * at a time (it must guess some). The caller closes the pipeline once res is read. */
static SmolvlmPipeline *generate_with(const char *snap, const SmolvlmOptions *opt,
                                      const SmolvlmRequest *req, DqGenerateResult *res) {
    GError *err = NULL;
    SmolvlmPipeline *p = smolvlm_pipeline_open(snap, opt, &err);
    dq_assert_no_error(err);
    if (opt->draft != NULL) {
        DqGenerateTimings tm;
        run_speculative(p->model, req, 1, 3, FALSE, res, &tm);
        g_assert_cmpint(tm.draft_tokens, >, 0);
    } else {
        g_assert_true(smolvlm_generate(p->model, req, 1, res, NULL, &err));
        dq_assert_no_error(err);
    }
    return p;
}

/* Speculative decoding (an int8 draft) gives the tokens and logits of plain greedy decoding, to
 * the bit: alone at any number of guesses, several requests at once (guesses lowered to fit),
 * with eos stops and max_new_tokens cutting a step's guesses short; sampled requests get plain
 * sampling's tokens. */
static void speculative(const char *model, const char *weights) {
    SmolvlmPipeline *p = open_with(model, (SmolvlmOptions){.weights = weights});
    SmolvlmPipeline *pd = open_with(model, (SmolvlmOptions){.weights = weights, .draft = "int8"});
    if (p == NULL || pd == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    g_assert_true(smolvlm_has_draft(pd->model));
    int V = smolvlm_config(p->model)->vocab_size;
    Case cs[4];
    case_init(&cs[0], p, "portrait_page.png", "What is the title?", 2, 23);
    case_init(&cs[1], p, "banner_wide.png", "Who wrote it?", 1, 9);
    case_init(&cs[2], p, NULL, "Say hello.", 0, 17);
    case_init(&cs[3], p, "logo_rgba.png", "What colour is it?", 1, 2);
    int guessed = 0, taken = 0;
    for (int c = 0; c < 4; c++)
        for (int k = 1; k <= 7; k += 2) {
            DqGenerateResult r;
            DqGenerateTimings tm;
            run_speculative(pd->model, &cs[c].req, 1, k, FALSE, &r, &tm);
            assert_same(&cs[c], &r, V);
            dq_generate_result_clear(&r);
            g_assert_cmpint(tm.draft_accepted, <=, tm.draft_tokens);
            g_assert_cmpint(tm.generated_tokens, ==, cs[c].alone.n_output_ids);
            if (cs[c].alone.n_output_ids > 2)
                g_assert_cmpint(tm.draft_tokens, >, 0);
            guessed += tm.draft_tokens;
            taken += tm.draft_accepted;
            /* measured: guessing or plain steps, step by step, and the same tokens */
            run_speculative(pd->model, &cs[c].req, 1, k, TRUE, &r, &tm);
            assert_same(&cs[c], &r, V);
            dq_generate_result_clear(&r);
        }
    g_test_message("%s: the draft's guesses taken: %d of %d (%.1f%%)", model, taken, guessed,
                   100.0 * taken / MAX(guessed, 1));
    g_assert_cmpint(taken, >, guessed / 2);

    /* all four at once: 4 x (1 + 1) rows fit the fast backend's 8, then more guesses as they
     * finish */
    SmolvlmRequest reqs[4];
    DqGenerateResult rs[4];
    DqGenerateTimings tm;
    for (int c = 0; c < 4; c++)
        reqs[c] = cs[c].req;
    run_speculative(pd->model, reqs, 4, 7, FALSE, rs, &tm);
    g_assert_cmpint(tm.draft_tokens, >, 0);
    for (int c = 0; c < 4; c++) {
        assert_same(&cs[c], &rs[c], V);
        dq_generate_result_clear(&rs[c]);
    }
    /* ... from the first step: four requests of 3 tokens (the prefill's, then one step's with
     * its guess) all guess, in the one step they are all in */
    for (int c = 0; c < 4; c++)
        reqs[c].options.max_new_tokens = 3;
    run_speculative(pd->model, reqs, 4, 7, FALSE, rs, &tm);
    g_assert_cmpint(tm.draft_tokens, ==, 4);
    for (int c = 0; c < 4; c++) {
        int n = MIN(3, cs[c].alone.n_output_ids); /* greedy: the first tokens of a longer run */
        g_assert_cmpint(rs[c].n_output_ids, ==, 3);
        g_assert_cmpmem(rs[c].output_ids, n * 4, cs[c].alone.output_ids, n * 4);
        dq_generate_result_clear(&rs[c]);
    }
    /* One token left: no guess, and the step is one forward call, as a plain step. */
    reqs[0].options.max_new_tokens = 2;
    run_speculative(pd->model, &reqs[0], 1, 7, FALSE, rs, &tm);
    g_assert_cmpint(tm.draft_tokens, ==, 0);
    g_assert_cmpint(tm.decode_steps, ==, 1);
    g_assert_cmpmem(rs[0].output_ids, 2 * 4, cs[0].alone.output_ids, 2 * 4);
    dq_generate_result_clear(&rs[0]);
    /* Two left, one guess: a draft call and the model's, then the model's alone unless the
     * guess was taken. */
    reqs[0].options.max_new_tokens = 3;
    run_speculative(pd->model, &reqs[0], 1, 1, FALSE, rs, &tm);
    g_assert_cmpint(tm.decode_steps, ==, 3 - tm.draft_accepted);
    g_assert_cmpmem(rs[0].output_ids, 3 * 4, cs[0].alone.output_ids, 3 * 4);
    dq_generate_result_clear(&rs[0]);

    /* eos allowed: the request stops where plain decoding stops */
    SmolvlmRequest eos = cs[0].req;
    eos.options.ignore_eos = FALSE;
    eos.options.max_new_tokens = 40;
    DqGenerateResult plain, spec;
    GError *err = NULL;
    g_assert_true(smolvlm_generate(p->model, &eos, 1, &plain, NULL, &err));
    run_speculative(pd->model, &eos, 1, 4, FALSE, &spec, &tm);
    g_assert_cmpint(spec.n_output_ids, ==, plain.n_output_ids);
    g_assert_cmpint(spec.stopped_on_eos, ==, plain.stopped_on_eos);
    g_assert_cmpmem(spec.output_ids, spec.n_output_ids * 4, plain.output_ids,
                    plain.n_output_ids * 4);
    dq_generate_result_clear(&plain);
    dq_generate_result_clear(&spec);

    /* sampled: a request's tokens are plain sampling's (its n-th token from its n-th draw),
     * alone at several k, top-k and top-p, and beside a greedy request; the guesses share the
     * model's draws, so most are taken where the draft is close */
    SmolvlmRequest mixed[2] = {cs[2].req, cs[0].req};
    mixed[1].options.do_sample = TRUE;
    mixed[1].options.temperature = 0.7;
    mixed[1].options.seed = 11;
    g_assert_true(smolvlm_generate(p->model, &mixed[1], 1, &plain, NULL, &err));
    run_speculative(pd->model, mixed, 2, 3, FALSE, rs, &tm);
    assert_same(&cs[2], &rs[0], V);
    g_assert_cmpmem(rs[1].output_ids, rs[1].n_output_ids * 4, plain.output_ids,
                    plain.n_output_ids * 4);
    g_assert_cmpmem(rs[1].last_logits, V * 4, plain.last_logits, V * 4);
    g_assert_cmpint(tm.draft_tokens, >, 0);
    dq_generate_result_clear(&plain);
    for (int c = 0; c < 2; c++)
        dq_generate_result_clear(&rs[c]);
    /* Flat distributions (the random tiny models' at temperature 1) share few picks with the
     * draft's: a uniform lands in another token's interval when the order of near-equal
     * probabilities differs. Peaked ones (top-k 5, top-p 0.5, temperature 0.3) mostly agree. */
    const struct {
        double temperature, top_p;
        int top_k, k, c;
        gboolean peaked;
    } samplings[] = {{1.0, 1.0, 0, 1, 0, FALSE},  {0.7, 0.9, 0, 3, 1, FALSE},
                     {1.3, 1.0, 40, 7, 2, FALSE}, {1.0, 1.0, 5, 3, 0, TRUE},
                     {0.5, 0.5, 0, 3, 2, TRUE},   {0.3, 1.0, 0, 5, 0, TRUE}};
    int sampled_guessed = 0, sampled_taken = 0;
    for (size_t i = 0; i < G_N_ELEMENTS(samplings); i++) {
        SmolvlmRequest r = cs[samplings[i].c].req;
        r.options.do_sample = TRUE;
        r.options.temperature = samplings[i].temperature;
        r.options.top_p = samplings[i].top_p;
        r.options.top_k = samplings[i].top_k;
        r.options.seed = 100 + i;
        g_assert_true(smolvlm_generate(p->model, &r, 1, &plain, NULL, &err));
        run_speculative(pd->model, &r, 1, samplings[i].k, FALSE, &spec, &tm);
        g_assert_cmpint(spec.n_output_ids, ==, plain.n_output_ids);
        g_assert_cmpmem(spec.output_ids, spec.n_output_ids * 4, plain.output_ids,
                        plain.n_output_ids * 4);
        g_assert_cmpmem(spec.last_logits, V * 4, plain.last_logits, V * 4);
        g_assert_cmpint(tm.draft_tokens, >, 0);
        if (samplings[i].peaked) {
            sampled_guessed += tm.draft_tokens;
            sampled_taken += tm.draft_accepted;
        }
        dq_generate_result_clear(&plain);
        dq_generate_result_clear(&spec);
    }
    g_test_message("%s, sampled from peaked distributions: the draft's guesses taken: %d of %d",
                   model, sampled_taken, sampled_guessed);
    g_assert_cmpint(sampled_taken, >, sampled_guessed / 2);

    for (int c = 0; c < 4; c++)
        case_clear(&cs[c]);
    smolvlm_pipeline_free(p);
    smolvlm_pipeline_free(pd);
}

static void test_speculative_f32(void) {
    speculative("tiny-smolvlm-b512", NULL);
}

static void test_speculative_bf16(void) {
    speculative("tiny-smolvlm-a384-v1tok-bf16", NULL);
}

static void test_speculative_bf16_products(void) {
    speculative("tiny-smolvlm-a384-v1tok", "bf16");
}

/* The sequence (prompt and new tokens) ends at max_position_embeddings: a max_new_tokens past
 * it (up to INT_MAX, whose sum with the prompt once overflowed int) stops generation there,
 * said in the result, with the tokens the model gives without the limit; a prompt that fills
 * the positions is refused before the vision encoder runs. */
static void test_positions_limit(void) {
    if (dq_test_shared_dir() == NULL)
        return;
    SmolvlmPipeline *full = open_pipeline("tiny-smolvlm-b512", "cpu");
    Case ref;
    case_init(&ref, full, NULL, "hi", 0, 7);
    g_assert_cmpint(ref.prompt.n_input_ids, ==, 9);
    g_assert_false(ref.alone.stopped_on_positions);

    char *src = g_build_filename(dq_test_shared_dir(), "models", "tiny-smolvlm-b512", NULL);
    char *snap = dq_test_snapshot_with_positions(src, 16);
    g_free(src);
    GError *err = NULL;
    SmolvlmPipeline *p = smolvlm_pipeline_open(snap, &(SmolvlmOptions){.device = "cpu"}, &err);
    dq_assert_no_error(err);
    SmolvlmRequest r = ref.req;
    DqGenerateResult res;
    for (int k = 0; k < 2; k++) {
        r.options.max_new_tokens = k == 0 ? G_MAXINT : 7; /* 7: exactly the room left */
        g_assert_true(smolvlm_generate(p->model, &r, 1, &res, NULL, &err));
        dq_assert_no_error(err);
        g_assert_cmpint(res.n_output_ids, ==, 7);
        g_assert_cmpint(res.stopped_on_positions, ==, k == 0);
        g_assert_false(res.stopped_on_eos);
        g_assert_cmpmem(res.output_ids, 7 * 4, ref.alone.output_ids, 7 * 4);
        dq_generate_result_clear(&res);
    }
    /* The same through a generator's slots, with a draft-free step loop. */
    DqGenerator *g = dq_generator_new(p->model, 2, 0, &err);
    int slots[1];
    r.options.max_new_tokens = 1000;
    g_assert_true(dq_generator_add(g, &r, 1, slots, &err));
    while (dq_generator_n_active(g) > 0)
        g_assert_true(dq_generator_step(g, &err));
    DqGeneratorDone done[2];
    g_assert_cmpint(dq_generator_take_finished(g, done, 2), ==, 1);
    g_assert_cmpint(done[0].result.n_output_ids, ==, 7);
    g_assert_true(done[0].result.stopped_on_positions);
    dq_generate_result_clear(&done[0].result);
    dq_generator_free(g);

    /* A page's prompt is far longer than 16 positions: refused naming the key (transformers
     * would run it), and no tile was encoded. */
    Case page;
    case_init(&page, full, "portrait_page.png", "What is this?", 2, 1);
    r = page.req;
    DqGenerateTimings tm = {0};
    g_assert_false(smolvlm_generate(p->model, &r, 1, &res, &tm, &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message,
                            "the model takes 16 positions (config.json's "
                            "text_config.max_position_embeddings): no room for a new token"));
    g_clear_error(&err);
    g_assert_cmpint(tm.n_tiles, ==, 0);
    g_assert_cmpfloat(tm.vision_ms, ==, 0);
    case_clear(&page);
    case_clear(&ref);
    smolvlm_pipeline_free(p);
    smolvlm_pipeline_free(full);
    g_free(snap);
}

/* tiny-smolvlm-b512 with max_position_embeddings and the first `from` in config.json replaced. */
static char *snapshot_edited(const char *from, const char *to, int positions) {
    char *src = g_build_filename(dq_test_shared_dir(), "models", "tiny-smolvlm-b512", NULL);
    char *snap = dq_test_snapshot_with_positions(src, positions);
    char *path = g_build_filename(snap, "config.json", NULL);
    char *text = dq_test_read_file(path, NULL);
    GString *s = g_string_new(text);
    g_assert_cmpint(g_string_replace(s, from, to, 1), ==, 1);
    g_assert_cmpint(unlink(path), ==, 0);
    g_assert_true(g_file_set_contents(path, s->str, (gssize)s->len, NULL));
    g_string_free(s, TRUE);
    g_free(text);
    g_free(path);
    g_free(src);
    return snap;
}

/* tiny-smolvlm-b512 with text_config's rope_scaling and max_position_embeddings replaced. */
static char *snapshot_with_rope(const char *rope_scaling, int positions) {
    return snapshot_edited("\"rope_scaling\": null", rope_scaling, positions);
}

/* A rope_scaling that is plain RoPE runs as plain RoPE: "default", and "dynamic", whose
 * frequencies transformers recomputes only for a sequence longer than max_position_embeddings,
 * where docqa stops. transformers 4.57.6 gives the dynamic snapshot (factor 4, 16 positions) the
 * plain one's greedy ids for "hi" (9 ids + 7 new = all 16 positions), and the same last-prompt
 * logits (max abs difference 0): rope_scaling_goldens.py. "linear", "llama3" and "yarn" give
 * transformers' ids and top logit (the same script; their logits differ from plain RoPE's by 8.6
 * to 9.4) on the fast backend, the reference and with an int8 draft; "longrope" is refused,
 * naming the type. */
static void test_rope_scaling(void) {
    if (dq_test_shared_dir() == NULL)
        return;
    SmolvlmPipeline *plain = open_pipeline("tiny-smolvlm-b512", "cpu");
    Case ref;
    case_init(&ref, plain, NULL, "hi", 0, 7);
    g_assert_cmpint(ref.prompt.n_input_ids, ==, 9);
    const int32_t hf_ids[] = {31339, 11211, 1041, 1041, 22696, 42478, 6880};
    g_assert_cmpmem(ref.alone.output_ids, ref.alone.n_output_ids * 4, hf_ids, sizeof hf_ids);
    const char *same[] = {"\"rope_scaling\": {\"rope_type\": \"default\"}",
                          "\"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 4.0}"};
    for (size_t i = 0; i < G_N_ELEMENTS(same); i++) {
        char *snap = snapshot_with_rope(same[i], 16);
        GError *err = NULL;
        SmolvlmPipeline *p = smolvlm_pipeline_open(snap, &(SmolvlmOptions){.device = "cpu"}, &err);
        dq_assert_no_error(err);
        DqGenerateResult res;
        g_assert_true(smolvlm_generate(p->model, &ref.req, 1, &res, NULL, &err));
        dq_assert_no_error(err);
        g_assert_false(res.stopped_on_positions);
        assert_same(&ref, &res, smolvlm_config(p->model)->vocab_size);
        dq_generate_result_clear(&res);
        smolvlm_pipeline_free(p);
        g_free(snap);
    }
    const struct {
        const char *rope_scaling;
        int32_t ids[7];
        int top;
        float top_logit;
    } scaled[] = {
        {"{\"rope_type\": \"linear\", \"factor\": 4.0}",
         {48123, 28360, 972, 7258, 15456, 10889, 21696},
         48123,
         8.699336051940918f},
        {"{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
         "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 64}",
         {10992, 11571, 16218, 18543, 15475, 19910, 34551},
         10992,
         9.611236572265625f},
        {"{\"rope_type\": \"yarn\", \"factor\": 4.0, \"original_max_position_embeddings\": 32, "
         "\"attention_factor\": 1.5}",
         {10992, 43147, 32871, 31993, 39763, 29762, 10685},
         10992,
         9.234155654907227f},
    };
    const int V = smolvlm_config(plain->model)->vocab_size;
    for (size_t i = 0; i < G_N_ELEMENTS(scaled); i++) {
        char *key = g_strdup_printf("\"rope_scaling\": %s", scaled[i].rope_scaling);
        char *snap = snapshot_with_rope(key, 4096);
        g_free(key);
        const SmolvlmOptions opts[] = {
            {.device = "cpu"}, {.device = "cpu-ref"}, {.device = "cpu", .draft = "int8"}};
        for (size_t o = 0; o < G_N_ELEMENTS(opts); o++) {
            DqGenerateResult res;
            SmolvlmPipeline *p = generate_with(snap, &opts[o], &ref.req, &res);
            if (res.n_output_ids != 7 || memcmp(res.output_ids, scaled[i].ids, 7 * 4) != 0)
                g_error("%s on %s%s: not transformers' ids", scaled[i].rope_scaling, opts[o].device,
                        opts[o].draft ? " with a draft" : "");
            int top = 0;
            for (int t = 1; t < V; t++)
                if (res.last_logits[t] > res.last_logits[top])
                    top = t;
            g_assert_cmpint(top, ==, scaled[i].top);
            g_assert_cmpfloat_with_epsilon(res.last_logits[top], scaled[i].top_logit, 1e-4);
            dq_generate_result_clear(&res);
            smolvlm_pipeline_free(p);
        }
        g_free(snap);
    }
    char *snap = snapshot_with_rope("\"rope_scaling\": {\"rope_type\": \"longrope\", "
                                    "\"short_factor\": [1], \"long_factor\": [1]}",
                                    4096);
    GError *err = NULL;
    g_assert_null(smolvlm_pipeline_open(snap, &(SmolvlmOptions){.device = "cpu"}, &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, "config.json: text_config.rope_scaling 'longrope' is not "
                                          "supported"));
    g_clear_error(&err);
    g_free(snap);
    case_clear(&ref);
    smolvlm_pipeline_free(plain);
}

/* tiny-smolvlm-b512 with text_config.attention_bias and mlp_bias as given, and their biases. */
static char *snapshot_with_biases(gboolean attn, gboolean mlp) {
    const char *const edits[][2] = {
        {"\"attention_bias\": false",
         attn ? "\"attention_bias\": true" : "\"attention_bias\": false"},
        {"\"mlp_bias\": false", mlp ? "\"mlp_bias\": true" : "\"mlp_bias\": false"}};
    return dq_test_edited_snapshot(edits, G_N_ELEMENTS(edits), attn, mlp);
}

/* text_config.attention_bias and mlp_bias: the decoder's q, k, v, o_proj and gate, up, down_proj
 * add their biases, as LlamaAttention and LlamaMLP do. transformers 4.57.6's greedy ids for "hi"
 * and the last prompt position's top 3 logits (bias_goldens.py; they differ from the model
 * without biases by 2.1 to 5.6), on the fast backend, the reference and with an int8 draft
 * (whose guesses use the model's biases). */
static void test_biases(void) {
    if (dq_test_shared_dir() == NULL)
        return;
    SmolvlmPipeline *plain = open_pipeline("tiny-smolvlm-b512", "cpu");
    Case ref;
    case_init(&ref, plain, NULL, "hi", 0, 7);
    const struct {
        gboolean attn, mlp;
        int32_t ids[7];
        int top[3];
        float logit[3];
    } cases[] = {
        {TRUE,
         TRUE,
         {31339, 18914, 8078, 31629, 32613, 18006, 25617},
         {31339, 36575, 35200},
         {9.04937649f, 9.01347256f, 8.69061279f}},
        {TRUE,
         FALSE,
         {31339, 18914, 8078, 40669, 8643, 2723, 10082},
         {31339, 17515, 11069},
         {9.41290092f, 8.94750214f, 8.82342148f}},
        {FALSE,
         TRUE,
         {31339, 11211, 1041, 1041, 22696, 24262, 19703},
         {31339, 17515, 27387},
         {9.9255228f, 9.16656876f, 8.87024117f}},
    };
    const SmolvlmOptions opts[] = {
        {.device = "cpu"}, {.device = "cpu-ref"}, {.device = "cpu", .draft = "int8"}};
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *snap = snapshot_with_biases(cases[i].attn, cases[i].mlp);
        for (size_t o = 0; o < G_N_ELEMENTS(opts); o++) {
            DqGenerateResult res;
            SmolvlmPipeline *p = generate_with(snap, &opts[o], &ref.req, &res);
            if (res.n_output_ids != 7 || memcmp(res.output_ids, cases[i].ids, 7 * 4) != 0)
                g_error("attention_bias %d mlp_bias %d on %s%s: not transformers' ids",
                        cases[i].attn, cases[i].mlp, opts[o].device,
                        opts[o].draft ? " with a draft" : "");
            for (int t = 0; t < 3; t++)
                g_assert_cmpfloat_with_epsilon(res.last_logits[cases[i].top[t]], cases[i].logit[t],
                                               1e-4);
            dq_generate_result_clear(&res);
            smolvlm_pipeline_free(p);
        }
        g_free(snap);
    }
    /* The prefix cache: a second question on a page takes the first's KV rows (k_proj's bias in
     * them) and answers as it does alone, to the bit. */
    char *both = snapshot_with_biases(TRUE, TRUE);
    GError *err = NULL;
    SmolvlmPipeline *p = smolvlm_pipeline_open(both, &(SmolvlmOptions){.device = "cpu"}, &err);
    dq_assert_no_error(err);
    Case page[2];
    case_init(&page[0], p, "portrait_page.png", "What is the title?", 1, 3);
    case_init(&page[1], p, "portrait_page.png", "Who signed it?", 1, 3);
    DqGenerator *g = dq_generator_new(p->model, 2, 0, &err);
    dq_assert_no_error(err);
    for (int c = 0; c < 2; c++) {
        SmolvlmRequest r = page[c].req;
        r.features_key = "portrait#1";
        int slot;
        g_assert_true(dq_generator_add(g, &r, 1, &slot, &err));
        dq_assert_no_error(err);
        DqGeneratorDone done;
        while (dq_generator_take_finished(g, &done, 1) == 0) {
            g_assert_true(dq_generator_step(g, &err));
            dq_assert_no_error(err);
        }
        g_assert_cmpint(done.prefix_rows > 0, ==, c == 1);
        assert_same(&page[c], &done.result, smolvlm_config(p->model)->vocab_size);
        dq_generate_result_clear(&done.result);
    }
    dq_generator_free(g);
    case_clear(&page[0]);
    case_clear(&page[1]);
    smolvlm_pipeline_free(p);
    g_free(both);

    /* biases the config promises and the file lacks: refused, naming the tensor */
    char *snap = snapshot_edited("\"attention_bias\": false", "\"attention_bias\": true", 4096);
    g_assert_null(smolvlm_pipeline_open(snap, &(SmolvlmOptions){.device = "cpu"}, &err));
    g_assert_nonnull(err);
    if (strstr(err->message, "model.text_model.layers.0.self_attn.q_proj.bias") == NULL)
        g_error("a missing bias: %s", err->message);
    g_clear_error(&err);
    g_free(snap);
    case_clear(&ref);
    smolvlm_pipeline_free(plain);
}

/* text_config.hidden_act other than SiLU: LlamaMLP's act(gate) * up with each parameter-free
 * ACT2CLS activation. transformers 4.57.6's greedy ids for "hi" and the last prompt position's
 * top 3 logits (activation_goldens.py; 1.5 to 8.6 from SiLU's, and the two GELUs 7e-4 apart
 * there), on the fast backend and the reference. */
static void test_activations(void) {
    if (dq_test_shared_dir() == NULL)
        return;
    SmolvlmPipeline *plain = open_pipeline("tiny-smolvlm-b512", "cpu");
    Case ref;
    case_init(&ref, plain, NULL, "hi", 0, 7);
    const struct {
        const char *act;
        int32_t ids[7];
        int top[3];
        float logit[3];
    } cases[] = {
        {"\"hidden_act\": \"gelu\"",
         {31339, 11211, 1041, 21142, 5697, 21725, 14374},
         {31339, 17515, 9257},
         {9.66515732f, 8.5938797f, 8.52357197f}},
        {"\"hidden_act\": \"gelu_pytorch_tanh\"",
         {31339, 11211, 1041, 21142, 5697, 21725, 14374},
         {31339, 17515, 9257},
         {9.66584396f, 8.59431171f, 8.52369499f}},
        /* session 34: the other parameter-free ACT2CLS activations (gelu_10 and relu6 clip
         * nothing here: the op tests and s34's differential test take them past their clips) */
        {"\"hidden_act\": \"gelu_10\"",
         {31339, 11211, 1041, 21142, 5697, 21725, 14374},
         {31339, 17515, 9257},
         {9.66515732f, 8.5938797f, 8.52357197f}},
        {"\"hidden_act\": \"gelu_accurate\"",
         {31339, 11211, 1041, 21142, 5697, 21725, 14374},
         {31339, 17515, 9257},
         {9.66584301f, 8.59431267f, 8.52369499f}},
        {"\"hidden_act\": \"quick_gelu\"",
         {31339, 11211, 1041, 21142, 5697, 21725, 14374},
         {31339, 17515, 9257},
         {9.71312141f, 8.63615608f, 8.47880173f}},
        {"\"hidden_act\": \"relu\"",
         {6762, 3868, 40331, 11856, 43288, 44154, 39592},
         {6762, 31339, 46877},
         {9.29031372f, 9.28996277f, 9.1347456f}},
        {"\"hidden_act\": \"relu6\"",
         {6762, 3868, 40331, 11856, 43288, 44154, 39592},
         {6762, 31339, 46877},
         {9.29031372f, 9.28996277f, 9.1347456f}},
        {"\"hidden_act\": \"relu2\"",
         {27290, 40976, 22314, 5427, 11907, 15831, 2287},
         {27290, 25896, 14109},
         {10.8778563f, 10.4106798f, 10.164856f}},
        {"\"hidden_act\": \"leaky_relu\"",
         {31339, 44427, 44533, 5832, 30323, 40306, 35543},
         {31339, 6762, 46877},
         {9.34249878f, 9.27675629f, 9.08426666f}},
        {"\"hidden_act\": \"sigmoid\"",
         {6762, 3868, 14092, 43978, 21697, 9215, 9215},
         {6762, 37728, 5879},
         {10.5460529f, 9.42656136f, 8.80338669f}},
        {"\"hidden_act\": \"tanh\"",
         {48060, 1642, 27617, 49109, 9176, 14759, 32954},
         {48060, 10992, 3301},
         {9.14199638f, 9.12603569f, 8.94969368f}},
        {"\"hidden_act\": \"mish\"",
         {31339, 11211, 1041, 1041, 1041, 21142, 1270},
         {31339, 3325, 17515},
         {9.66602135f, 9.00954342f, 8.95729065f}},
        {"\"hidden_act\": \"laplace\"",
         {6762, 21955, 47440, 15475, 7343, 8047, 8047},
         {6762, 16847, 46478},
         {10.0306644f, 9.0470829f, 8.88597679f}},
        {"\"hidden_act\": \"linear\"",
         {3301, 2399, 48413, 47755, 20026, 29063, 22800},
         {3301, 17515, 17632},
         {9.79047394f, 9.58333969f, 9.17578793f}},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *snap = snapshot_edited("\"hidden_act\": \"silu\"", cases[i].act, 4096);
        const char *devices[] = {"cpu", "cpu-ref"};
        for (size_t d = 0; d < G_N_ELEMENTS(devices); d++) {
            GError *err = NULL;
            SmolvlmPipeline *p =
                smolvlm_pipeline_open(snap, &(SmolvlmOptions){.device = devices[d]}, &err);
            dq_assert_no_error(err);
            DqGenerateResult res;
            g_assert_true(smolvlm_generate(p->model, &ref.req, 1, &res, NULL, &err));
            dq_assert_no_error(err);
            if (res.n_output_ids != 7 || memcmp(res.output_ids, cases[i].ids, 7 * 4) != 0)
                g_error("%s on %s: not transformers' ids", cases[i].act, devices[d]);
            for (int t = 0; t < 3; t++)
                g_assert_cmpfloat_with_epsilon(res.last_logits[cases[i].top[t]], cases[i].logit[t],
                                               1e-4);
            dq_generate_result_clear(&res);
            smolvlm_pipeline_free(p);
        }
        g_free(snap);
    }
    case_clear(&ref);
    smolvlm_pipeline_free(plain);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/generator/join-midway/cpu", test_join_midway_fast);
    g_test_add_func("/generator/join-midway/cpu-bf16", test_join_midway_fast_bf16);
    g_test_add_func("/generator/join-midway/cpu-ref", test_join_midway_ref);
    g_test_add_func("/generator/first-token/cpu", test_first_token_fast);
    g_test_add_func("/generator/first-token/cpu-ref", test_first_token_ref);
    g_test_add_func("/generator/generated-image-token", test_generated_image_token);
    g_test_add_func("/generator/vision-reuse", test_vision_reuse);
    g_test_add_func("/generator/errors", test_errors);
    g_test_add_func("/generator/positions-limit", test_positions_limit);
    g_test_add_func("/generator/rope-scaling", test_rope_scaling);
    g_test_add_func("/generator/biases", test_biases);
    g_test_add_func("/generator/activations", test_activations);
    g_test_add_func("/generator/speculative/f32", test_speculative_f32);
    g_test_add_func("/generator/speculative/bf16", test_speculative_bf16);
    g_test_add_func("/generator/speculative/bf16-products", test_speculative_bf16_products);
    return g_test_run();
}
