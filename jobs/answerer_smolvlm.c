/* The SmolVLM answerer: a batch of (page image, question) requests through the model/ engine.
 *
 * Requests are built by model/pipeline.h, the code `docqa generate` uses, so a job's answer is
 * exactly what `docqa generate -i PAGE.png -p PROMPT --n-res N` prints for the same page and
 * prompt: the page PNG -> Idefics3 image processor at the page's n_res; the prompt template with
 * {question} substituted -> the chat template, one user turn with the image first -> <image>
 * expansion -> token ids. All requests of a batch then go through smolvlm_generate at once
 * (vision batched, prefill and decode side by side; a request's tokens do not depend on its
 * batch-mates), greedy, up to max_new_tokens. The answer is the generated ids decoded with
 * special tokens skipped, surrounding whitespace stripped (as `docqa generate` prints it).
 */
#include "answerer.h"

#include "dq_error.h"
#include "generate.h"
#include "image.h"
#include "pipeline.h"
#include "tokenizer.h"

#include <string.h>

typedef struct {
    DqAnswerer base;
    SmolvlmPipeline *pipe;
} SmolvlmAnswerer;

/* The prompt template with every {question} replaced. */
static char *fill_template(const char *tmpl, const char *question) {
    char **parts = g_strsplit(tmpl, "{question}", -1);
    char *out = g_strjoinv(question, parts);
    g_strfreev(parts);
    /* configs/ files may end with a newline the template does not mean. */
    return g_strchomp(out);
}

static gboolean prepare(SmolvlmAnswerer *a, const DqAnswerRequest *r, SmolvlmPrompt *prompt,
                        GError **err) {
    DqImage *img = dq_image_load(r->image_path, DQ_EXIF_APPLY, err);
    if (img == NULL)
        return FALSE;
    char *text = fill_template(r->prompt_template, r->question);
    SmolvlmPrepareOptions opts = {.n_res = r->n_res};
    gboolean ok = smolvlm_prompt_build(a->pipe, (const DqImage *const *)&img, 1, text, NULL, &opts,
                                       prompt, err);
    if (!ok)
        dq_error_prefix(err, "%s", r->image_path);
    g_free(text);
    dq_image_free(img);
    return ok;
}

static gboolean smolvlm_answer_batch(DqAnswerer *self, const DqAnswerRequest *reqs, int n,
                                     DqAnswerResult *out, GError **err) {
    SmolvlmAnswerer *a = (SmolvlmAnswerer *)self;
    SmolvlmPrompt *prompts = g_new0(SmolvlmPrompt, n);
    SmolvlmRequest *sreq = g_new0(SmolvlmRequest, n);
    DqGenerateResult *gres = g_new0(DqGenerateResult, n);
    int *index = g_new0(int, n); /* sreq[k] answers reqs[index[k]] */
    int m = 0;
    gboolean ok = TRUE;
    for (int i = 0; i < n; i++) {
        if (!prepare(a, &reqs[i], &prompts[i], &out[i].error))
            continue; /* this request fails alone (a bad image fails its job, see answerer.h) */
        smolvlm_request_init(a->pipe, &prompts[i], &sreq[m]);
        sreq[m].options.do_sample = FALSE; /* greedy, as the DocVQA evaluation ran it */
        sreq[m].options.max_new_tokens = reqs[i].max_new_tokens > 0 ? reqs[i].max_new_tokens : 64;
        index[m++] = i;
    }
    if (m > 0) {
        DqGenerateTimings tm;
        memset(&tm, 0, sizeof(tm));
        if (!smolvlm_generate(a->pipe->model, sreq, m, gres, &tm, err)) {
            ok = FALSE;
            goto out;
        }
        for (int k = 0; k < m; k++) {
            int i = index[k];
            DqAnswerResult *r = &out[i];
            char *text = tokenizer_decode(a->pipe->tok, gres[k].output_ids,
                                          (size_t)gres[k].n_output_ids, TRUE, NULL);
            r->text = g_strstrip(text);
            r->prompt_tokens = prompts[i].n_input_ids;
            r->generated_tokens = gres[k].n_output_ids;
            /* The batch's stage times, shared out evenly: one request's own cannot be told
             * apart once they run side by side. */
            r->ms_image = prompts[i].preprocess_ms;
            r->ms_vision = tm.vision_ms / m;
            r->ms_prefill = tm.prefill_ms / m;
            r->ms_decode = tm.decode_ms / m;
            r->ms_total = r->ms_image + r->ms_vision + r->ms_prefill + r->ms_decode;
            dq_generate_result_clear(&gres[k]);
        }
    }
out:
    for (int i = 0; i < n; i++)
        smolvlm_prompt_clear(&prompts[i]);
    g_free(prompts);
    g_free(sreq);
    g_free(gres);
    g_free(index);
    return ok;
}

static void smolvlm_answerer_free(DqAnswerer *self) {
    SmolvlmAnswerer *a = (SmolvlmAnswerer *)self;
    smolvlm_pipeline_free(a->pipe);
    g_free(a);
}

DqAnswerer *dq_answerer_open_smolvlm(const char *model_dir, const char *device, const char *weights,
                                     GError **err) {
    SmolvlmOptions opts = {.device = device, .weights = weights};
    SmolvlmPipeline *pipe = smolvlm_pipeline_open(model_dir, &opts, err);
    if (pipe == NULL)
        return NULL;
    SmolvlmAnswerer *a = g_new0(SmolvlmAnswerer, 1);
    a->base.answer_batch = smolvlm_answer_batch;
    a->base.free = smolvlm_answerer_free;
    a->pipe = pipe;
    return &a->base;
}
