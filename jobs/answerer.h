/* The model seam: what a worker needs from a model, and nothing more.
 *
 * A worker hands a batch of (page image, question, prompt) requests to an answerer and gets one
 * result per request. The answerer knows nothing about the queue, leases or the database; the
 * worker knows nothing about tokens or tensors. The SmolVLM engine implements it (the DocVQA
 * prompt, greedy decoding); the queue's tests implement it with a deterministic stand-in so the
 * queue logic is tested without a model.
 *
 * Failures: a request whose input is bad (image missing or undecodable) gets result.error with
 * code DQ_ERR_IO or DQ_ERR_FORMAT, and its job fails at once (retrying cannot help). Any other
 * per-request error is retried with backoff. answer_batch returning FALSE means the whole batch
 * failed (the model itself is unusable, out of memory...): every job in it is retried.
 */
#ifndef DQ_ANSWERER_H
#define DQ_ANSWERER_H

#include <glib.h>
#include <signal.h>

typedef struct {
    const char *image_path;      /* the page PNG in the page store */
    const char *question;        /* the user's question */
    const char *prompt_template; /* e.g. configs/prompts/docvqa.txt: "... Question: {question}" */
    int max_new_tokens;          /* greedy decoding stops there or at end of sequence */
    int n_res; /* the page was rendered at longest edge n_res x tile; the image processor uses
                  the same N so its first resize is a no-op (0: the snapshot's own setting) */
} DqAnswerRequest;

typedef struct {
    char *text; /* the answer (g_free); NULL when error is set */
    int prompt_tokens;
    int generated_tokens;
    /* Milliseconds per stage, for the answers table. */
    double ms_image;   /* decode + image processor */
    double ms_vision;  /* vision encoder + connector */
    double ms_prefill; /* the prompt through the decoder */
    double ms_decode;  /* generated tokens */
    double ms_total;
    GError *error; /* set when this request failed; the others still count */
} DqAnswerResult;

typedef struct DqAnswerer DqAnswerer;
struct DqAnswerer {
    /* Answers reqs[0..n) into out[0..n) (zero-filled by the caller). */
    gboolean (*answer_batch)(DqAnswerer *self, const DqAnswerRequest *reqs, int n,
                             DqAnswerResult *out, GError **err);
    void (*free)(DqAnswerer *self);
    /* Set by the worker; when it becomes non-zero (SIGINT/SIGTERM) the answerer may stop early
     * and fail the unfinished requests with DQ_ERR_CANCELLED (their jobs are released). */
    volatile sig_atomic_t *cancel;
};

/* Frees the result's text and error. */
void dq_answer_result_clear(DqAnswerResult *r);

static inline void dq_answerer_free(DqAnswerer *a) {
    if (a != NULL)
        a->free(a);
}

/* The SmolVLM answerer for a snapshot directory on a device ("cpu", "cuda", "cuda:1"); weights:
 * NULL (as stored) or "int8" (SmolvlmOptions.weights). */
DqAnswerer *dq_answerer_open_smolvlm(const char *model_dir, const char *device, const char *weights,
                                     GError **err);

#endif
