#include "pipeline.h"

#include "clock.h"
#include "dq_error.h"
#include "prompt.h"

#include <string.h>

/* The processor's files must make what config.json's vision encoder takes: tiles of its
 * image_size, and image_seq_len <image> tokens a tile for the features it gives. transformers
 * finds out at the first forward (a size or "image features and image tokens do not match"
 * error, every request); here it fails at load, naming the files and values. */
static gboolean check_processor(const SmolvlmPipeline *p, const char *dir, GError **err) {
    const SmolvlmConfig *c = smolvlm_config(p->model);
    if (p->proc.tile_size != c->image_size)
        return dq_fail(err, DQ_ERR_MODEL,
                       "%s/preprocessor_config.json: max_image_size.longest_edge %d, but "
                       "config.json's vision_config.image_size is %d (the tiles must be the size "
                       "the vision encoder takes)",
                       dir, p->proc.tile_size, c->image_size);
    if (p->image_seq_len != c->tokens_per_tile) {
        char *path = g_build_filename(dir, "processor_config.json", NULL);
        char *where = g_file_test(path, G_FILE_TEST_EXISTS)
                          ? g_strdup_printf("%s: image_seq_len %d", path, p->image_seq_len)
                          : g_strdup_printf("%s is missing, and Idefics3Processor's default "
                                            "image_seq_len is %d",
                                            path, p->image_seq_len);
        dq_fail(err, DQ_ERR_MODEL,
                "%s, but config.json gives %d tokens a tile (image_size %d / patch_size %d = %d "
                "patches a side, / scale_factor %d, squared)",
                where, c->tokens_per_tile, c->image_size, c->patch_size, c->patches_per_side,
                c->scale_factor);
        g_free(where);
        g_free(path);
        return FALSE;
    }
    return TRUE;
}

/* The tokens Idefics3Processor adds as special tokens where tokenizer.json lacks them (with the
 * next free ids): the prompt and the chat template write them. Python then runs such a snapshot,
 * so docqa adds them the same way; <global-img> and <row_i_col_j> are not added: they are
 * ordinary text in SmolVLM-Instruct's tokenizer, in Python too. */
static const char *const PROCESSOR_TOKENS[] = {"<fake_token_around_image>", "<image>",
                                               "<end_of_utterance>"};

/* Adds the processor's tokens, then checks that every id the tokenizer can give has a row in
 * the model's embedding: transformers fails at the embedding lookup ("index out of range")
 * once a prompt holds the token, which any question can; here the snapshot is refused at load,
 * naming the token. */
static gboolean check_tokenizer(SmolvlmPipeline *p, const char *dir, GError **err) {
    const SmolvlmConfig *c = smolvlm_config(p->model);
    const char *added = NULL; /* the processor token given the largest id, if any */
    int32_t added_at = -1;
    for (size_t i = 0; i < G_N_ELEMENTS(PROCESSOR_TOKENS); i++) {
        if (tokenizer_added_token_id(p->tok, PROCESSOR_TOKENS[i]) >= 0)
            continue;
        int32_t id = tokenizer_add_special_token(p->tok, PROCESSOR_TOKENS[i]);
        if (id > added_at) {
            added = PROCESSOR_TOKENS[i];
            added_at = id;
        }
    }
    int32_t last = tokenizer_id_limit(p->tok) - 1;
    if (last < c->vocab_size)
        return TRUE;
    if (last == added_at)
        return dq_fail(err, DQ_ERR_MODEL,
                       "%s/tokenizer.json has no added token %s: Idefics3Processor adds it as "
                       "id %d, but config.json's text_config.vocab_size is %d (the model has no "
                       "embedding for it)",
                       dir, added, last, c->vocab_size);
    return dq_fail(err, DQ_ERR_MODEL,
                   "%s/tokenizer.json: token '%s' has id %d, but config.json's "
                   "text_config.vocab_size is %d (the model has no embedding for it)",
                   dir, tokenizer_id_to_token(p->tok, last), last, c->vocab_size);
}

SmolvlmPipeline *smolvlm_pipeline_open(const char *snapshot_dir, const SmolvlmOptions *opts,
                                       GError **err) {
    SmolvlmPipeline *p = g_new0(SmolvlmPipeline, 1);
    if ((p->model = smolvlm_open(snapshot_dir, opts, err)) == NULL ||
        (p->tok = tokenizer_load_snapshot(snapshot_dir, err)) == NULL ||
        (p->chat = chat_template_load(snapshot_dir, err)) == NULL ||
        !image_processor_config_load(snapshot_dir, &p->proc, err) ||
        (p->image_seq_len = prompt_image_seq_len_load(snapshot_dir, err)) < 0 ||
        !check_processor(p, snapshot_dir, err)) {
        smolvlm_pipeline_free(p);
        return NULL;
    }
    if (!check_tokenizer(p, snapshot_dir, err)) {
        smolvlm_pipeline_free(p);
        return NULL;
    }
    /* The tokenizer and the model must agree on the <image> id, or image features would land
     * on the wrong rows. */
    int32_t image_id = tokenizer_added_token_id(p->tok, "<image>");
    if (image_id != smolvlm_config(p->model)->image_token_id) {
        dq_fail(err, DQ_ERR_MODEL,
                "%s: tokenizer.json has <image> = %d but config.json says image_token_id = %d",
                snapshot_dir, image_id, smolvlm_config(p->model)->image_token_id);
        smolvlm_pipeline_free(p);
        return NULL;
    }
    return p;
}

void smolvlm_pipeline_free(SmolvlmPipeline *p) {
    if (p == NULL)
        return;
    if (p->chat)
        chat_template_free(p->chat);
    if (p->tok)
        tokenizer_free(p->tok);
    if (p->model)
        smolvlm_free(p->model);
    g_free(p);
}

static DqImageProcessorConfig processor_config(const SmolvlmPipeline *p,
                                               const SmolvlmPrepareOptions *opts) {
    DqImageProcessorConfig cfg = p->proc;
    if (opts != NULL && opts->n_res > 0)
        image_processor_set_n_res(&cfg, opts->n_res);
    if (opts != NULL && opts->no_split)
        cfg.do_split = FALSE;
    return cfg;
}

DqImageTiles *smolvlm_image_tiles(SmolvlmPipeline *p, const DqImage *image,
                                  const SmolvlmPrepareOptions *opts, GError **err) {
    DqImageProcessorConfig cfg = processor_config(p, opts);
    return image_processor_run(&cfg, image, err);
}

/* The prompt around out->images[0..n_images) (already filled): template, expansion, ids. */
static gboolean build_text(SmolvlmPipeline *p, int n_images, const char *user_text,
                           const char *raw_prompt, SmolvlmPrompt *out, GError **err) {
    DqImageGrid *grids = g_new0(DqImageGrid, n_images > 0 ? n_images : 1);
    char *chat = NULL, *expanded = NULL;
    gboolean ok = FALSE;
    for (int i = 0; i < n_images; i++) {
        grids[i].rows = out->images[i]->rows;
        grids[i].cols = out->images[i]->cols;
    }
    chat = raw_prompt ? g_strdup(raw_prompt)
                      : chat_template_render_user(p->chat, n_images, user_text, TRUE);
    if ((expanded = prompt_expand(chat, grids, n_images, p->image_seq_len, err)) == NULL)
        goto out;
    size_t n_ids = 0;
    if ((out->input_ids = tokenizer_encode(p->tok, expanded, -1, &n_ids, err)) == NULL)
        goto out;
    if (n_ids == 0 || n_ids > G_MAXINT) {
        dq_fail(err, DQ_ERR_ARGS, "the prompt tokenizes to %zu ids", n_ids);
        goto out;
    }
    out->n_input_ids = (int)n_ids;
    ok = TRUE;
out:
    g_free(grids);
    g_free(chat);
    g_free(expanded);
    return ok;
}

gboolean smolvlm_prompt_build(SmolvlmPipeline *p, const DqImage *const *images, int n_images,
                              const char *user_text, const char *raw_prompt,
                              const SmolvlmPrepareOptions *opts, SmolvlmPrompt *out, GError **err) {
    memset(out, 0, sizeof(*out));
    if ((user_text == NULL) == (raw_prompt == NULL))
        return dq_fail(err, DQ_ERR_ARGS, "give either a user prompt or a raw prompt, not both");
    double t0 = dq_now_ms(), c0 = dq_cpu_ms();
    out->images = g_new0(DqImageTiles *, n_images > 0 ? n_images : 1);
    out->n_images = n_images;
    for (int i = 0; i < n_images; i++) {
        if ((out->images[i] = smolvlm_image_tiles(p, images[i], opts, err)) == NULL) {
            dq_error_prefix(err, "image %d", i + 1);
            smolvlm_prompt_clear(out);
            return FALSE;
        }
    }
    if (!build_text(p, n_images, user_text, raw_prompt, out, err)) {
        smolvlm_prompt_clear(out);
        return FALSE;
    }
    out->preprocess_ms = dq_now_ms() - t0;
    out->preprocess_cpu_ms = dq_cpu_ms() - c0;
    return TRUE;
}

gboolean smolvlm_prompt_build_tiles(SmolvlmPipeline *p, const DqImageTiles *const *tiles,
                                    int n_images, const char *user_text, const char *raw_prompt,
                                    SmolvlmPrompt *out, GError **err) {
    memset(out, 0, sizeof(*out));
    if ((user_text == NULL) == (raw_prompt == NULL))
        return dq_fail(err, DQ_ERR_ARGS, "give either a user prompt or a raw prompt, not both");
    double t0 = dq_now_ms(), c0 = dq_cpu_ms();
    out->images = g_new0(DqImageTiles *, n_images > 0 ? n_images : 1);
    out->n_images = n_images;
    for (int i = 0; i < n_images; i++) {
        const DqImageTiles *t = tiles[i];
        out->images[i] = g_memdup2(t, sizeof *t);
        out->images[i]->bytes =
            g_memdup2(t->bytes, (size_t)3 * t->n_tiles * t->tile_size * t->tile_size);
        out->images[i]->hashes = g_memdup2(t->hashes, sizeof(uint64_t) * t->n_tiles);
    }
    if (!build_text(p, n_images, user_text, raw_prompt, out, err)) {
        smolvlm_prompt_clear(out);
        return FALSE;
    }
    out->preprocess_ms = dq_now_ms() - t0;
    out->preprocess_cpu_ms = dq_cpu_ms() - c0;
    return TRUE;
}

void smolvlm_prompt_clear(SmolvlmPrompt *prompt) {
    for (int i = 0; i < prompt->n_images; i++)
        if (prompt->images && prompt->images[i])
            dq_image_tiles_free(prompt->images[i]);
    g_free(prompt->images);
    g_free(prompt->input_ids);
    memset(prompt, 0, sizeof(*prompt));
}

void smolvlm_request_init(SmolvlmPipeline *p, const SmolvlmPrompt *prompt, SmolvlmRequest *req) {
    memset(req, 0, sizeof(*req));
    req->input_ids = prompt->input_ids;
    req->n_input_ids = prompt->n_input_ids;
    req->images = (const DqImageTiles *const *)prompt->images;
    req->n_images = prompt->n_images;
    dq_generate_options_init(&req->options, smolvlm_config(p->model));
}
