/* The SmolVLM answerer: a batch of (page image, question) requests through the model/ engine.
 *
 * Per request, as transformers' Idefics3Processor + generate() do it:
 *   page PNG -> RGB -> Idefics3ImageProcessor (longest edge n_res x tile, split into tiles)
 *   prompt template with {question} substituted -> chat template, one user turn, the image first
 *     ("<|im_start|>User:<image>PROMPT<end_of_utterance>\nAssistant:")
 *   -> <image> expanded for the tile grid -> tokenizer -> input ids
 * then all requests of the batch through smolvlm_generate at once (vision batched, prefill and
 * decode side by side; a request's tokens do not depend on its batch-mates), greedy, up to
 * max_new_tokens. The answer is the generated ids decoded with special tokens skipped, surrounding
 * whitespace stripped.
 */
#include "answerer.h"

#include "chat_template.h"
#include "clock.h"
#include "dq_error.h"
#include "generate.h"
#include "image.h"
#include "image_processor.h"
#include "prompt.h"
#include "smolvlm.h"
#include "tokenizer.h"

#include <string.h>

typedef struct {
    DqAnswerer base;
    Smolvlm *model;
    DqTokenizer *tok;
    DqChatTemplate *chat;
    DqImageProcessorConfig proc;
    int image_seq_len;
} SmolvlmAnswerer;

/* The prompt template with every {question} replaced. */
static char *fill_template(const char *tmpl, const char *question) {
    char **parts = g_strsplit(tmpl, "{question}", -1);
    char *out = g_strjoinv(question, parts);
    g_strfreev(parts);
    /* configs/ files may end with a newline the template does not mean. */
    return g_strchomp(out);
}

/* One request's model inputs. */
typedef struct {
    DqImageTiles *tiles;
    int32_t *ids;
    size_t n_ids;
    double ms_image;
} Prepared;

static gboolean prepare(SmolvlmAnswerer *a, const DqAnswerRequest *r, Prepared *p, GError **err) {
    double t0 = dq_now_ms();
    DqImage *img = dq_image_load(r->image_path, DQ_EXIF_APPLY, err);
    if (img == NULL)
        return FALSE;
    DqImageProcessorConfig cfg = a->proc;
    if (r->n_res > 0)
        image_processor_set_n_res(&cfg, r->n_res);
    p->tiles = image_processor_run(&cfg, img, err);
    dq_image_free(img);
    if (p->tiles == NULL) {
        dq_error_prefix(err, "%s", r->image_path);
        return FALSE;
    }
    p->ms_image = dq_now_ms() - t0;
    char *text = fill_template(r->prompt_template, r->question);
    char *chat = chat_template_render_user(a->chat, 1, text, TRUE);
    DqImageGrid grid = {.rows = p->tiles->rows, .cols = p->tiles->cols};
    char *expanded = prompt_expand(chat, &grid, 1, a->image_seq_len, err);
    g_free(text);
    g_free(chat);
    if (expanded == NULL)
        return FALSE;
    p->ids = tokenizer_encode(a->tok, expanded, -1, &p->n_ids, err);
    g_free(expanded);
    return p->ids != NULL;
}

static gboolean smolvlm_answer_batch(DqAnswerer *self, const DqAnswerRequest *reqs, int n,
                                     DqAnswerResult *out, GError **err) {
    SmolvlmAnswerer *a = (SmolvlmAnswerer *)self;
    Prepared *prep = g_new0(Prepared, n);
    SmolvlmRequest *sreq = g_new0(SmolvlmRequest, n);
    DqGenerateResult *gres = g_new0(DqGenerateResult, n);
    int *index = g_new0(int, n); /* sreq[k] answers reqs[index[k]] */
    int m = 0;
    gboolean ok = TRUE;
    for (int i = 0; i < n; i++) {
        if (!prepare(a, &reqs[i], &prep[i], &out[i].error))
            continue; /* this request fails alone (a bad image fails its job, see answerer.h) */
        SmolvlmRequest *s = &sreq[m];
        s->input_ids = prep[i].ids;
        s->n_input_ids = (int)prep[i].n_ids;
        s->images = (const DqImageTiles *const *)&prep[i].tiles;
        s->n_images = 1;
        dq_generate_options_init(&s->options, smolvlm_config(a->model));
        s->options.do_sample = FALSE; /* greedy, as the DocVQA evaluation ran it */
        s->options.max_new_tokens = reqs[i].max_new_tokens > 0 ? reqs[i].max_new_tokens : 64;
        index[m++] = i;
    }
    if (m > 0) {
        DqGenerateTimings tm;
        memset(&tm, 0, sizeof(tm));
        if (!smolvlm_generate(a->model, sreq, m, gres, &tm, err)) {
            ok = FALSE;
            goto out;
        }
        for (int k = 0; k < m; k++) {
            int i = index[k];
            DqAnswerResult *r = &out[i];
            char *text = tokenizer_decode(a->tok, gres[k].output_ids, (size_t)gres[k].n_output_ids,
                                          TRUE, NULL);
            r->text = g_strstrip(text);
            r->prompt_tokens = (int)prep[i].n_ids;
            r->generated_tokens = gres[k].n_output_ids;
            /* The batch's stage times, shared out evenly: one request's own cannot be told
             * apart once they run side by side. */
            r->ms_image = prep[i].ms_image;
            r->ms_vision = tm.vision_ms / m;
            r->ms_prefill = tm.prefill_ms / m;
            r->ms_decode = tm.decode_ms / m;
            r->ms_total = r->ms_image + r->ms_vision + r->ms_prefill + r->ms_decode;
            dq_generate_result_clear(&gres[k]);
        }
    }
out:
    for (int i = 0; i < n; i++) {
        if (prep[i].tiles)
            dq_image_tiles_free(prep[i].tiles);
        g_free(prep[i].ids);
    }
    g_free(prep);
    g_free(sreq);
    g_free(gres);
    g_free(index);
    return ok;
}

static void smolvlm_answerer_free(DqAnswerer *self) {
    SmolvlmAnswerer *a = (SmolvlmAnswerer *)self;
    if (a->chat)
        chat_template_free(a->chat);
    if (a->tok)
        tokenizer_free(a->tok);
    if (a->model)
        smolvlm_free(a->model);
    g_free(a);
}

DqAnswerer *dq_answerer_open_smolvlm(const char *model_dir, const char *device, GError **err) {
    SmolvlmAnswerer *a = g_new0(SmolvlmAnswerer, 1);
    a->base.answer_batch = smolvlm_answer_batch;
    a->base.free = smolvlm_answerer_free;
    SmolvlmOptions opts = {.device = device};
    if ((a->model = smolvlm_open(model_dir, &opts, err)) == NULL ||
        (a->tok = tokenizer_load_snapshot(model_dir, err)) == NULL ||
        (a->chat = chat_template_load(model_dir, err)) == NULL ||
        !image_processor_config_load(model_dir, &a->proc, err) ||
        (a->image_seq_len = prompt_image_seq_len_load(model_dir, err)) < 0) {
        smolvlm_answerer_free(&a->base);
        return NULL;
    }
    return &a->base;
}
