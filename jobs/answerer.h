/* The model seam: what a worker needs from a model, and nothing more.
 *
 * A worker submits (page image, question, prompt) requests to an answerer as they are claimed
 * and polls for the finished ones; each comes back once, with the tag it was submitted with.
 * The answerer knows nothing about the queue, leases or the database; the worker knows nothing
 * about tokens or tensors. The SmolVLM engine implements it (the DocVQA prompt, greedy
 * decoding, continuous batching: a request leaves the model as soon as it is finished and the
 * next one takes its place); the queue's tests implement it with a deterministic stand-in so
 * the queue logic is tested without a model.
 *
 *   a->batch = 4;                                  // requests in the model at once
 *   a->submit(a, &req, job_id, &err);              // up to batch + a->lookahead in flight
 *   int k = a->poll(a, done, max);                 // a decode step; done[0..k) are finished
 *
 * Failures: a request whose input is bad finishes with result.error, and its job fails at once
 * (retrying cannot help): code DQ_ERR_IO or DQ_ERR_FORMAT for a page image missing,
 * undecodable, too large to decode or not the bytes its image_sha256 names, DQ_ERR_ARGS for a
 * question the model cannot take (its prompt with the page longer than the model's positions);
 * the message of the latter names the question's problem, not the page (the worker adds the
 * job and the question). A bad request fails alone, never its batch-mates. A page file there
 * whose open or read the system failed (dq_errno_transient: EIO on a flaky disk, ESTALE on a
 * network share, descriptors short...) is not bad: DQ_ERR_IO_TRANSIENT, retried as `page_read`
 * with the job's attempts and backoff. Any
 * other per-request error (the model failed while it was in it, out of memory...) is retried
 * with backoff. After SIGINT, SIGTERM or SIGHUP (cancel) the worker stops polling and releases
 * whatever is still in flight.
 *
 * A device that failed for good: the CUDA backend keeps its first error for its life (every
 * later op skipped, every later result untrustworthy, model/backend_cuda.h), so once it is set
 * every request would fail, and a worker that went on claiming would fail the whole queue, an
 * attempt a job at a time. After any poll that returned a failure, and after a refused submit,
 * the worker asks a->broken (when not NULL): TRUE (err set, DQ_ERR_DEVICE, naming the device and
 * the CUDA error) means the answerer can answer nothing more. The worker then stops (queue.h,
 * "a broken device"): the requests that came back failed from the model spend their attempt as
 * any model failure does, the rest it holds go back to the queue without spending one, it claims
 * nothing more and returns FALSE with that error. An error that clears by itself (a buffer that
 * did not fit: DQ_ERR_LIMIT, the next request may fit) is not broken.
 *
 * Withdrawal: a job cancelled while it runs, or taken over by another worker, is not worth
 * finishing; the worker withdraws its request (a->withdraw(a, tag)) wherever it is, and it never
 * comes back from poll. Its place goes to the next request; the others go on as if it had never
 * been there (a request's tokens never depend on its batch-mates).
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
    /* The SHA-256 (hex) its bytes must have (pages.image_sha256), or NULL: not checked. A page
     * file replaced or damaged after ingest must not be answered as if it were the page. */
    const char *image_sha256;
} DqAnswerRequest;

typedef struct {
    char *text; /* the answer (g_free); NULL when error is set */
    int prompt_tokens;
    int prefix_tokens; /* of them, those whose KV an earlier prompt computed (the prefix cache) */
    int generated_tokens;
    /* Milliseconds per stage, for the answers table. */
    double ms_image;   /* decode + image processor */
    double ms_vision;  /* vision encoder + connector */
    double ms_prefill; /* the prompt through the decoder */
    double ms_decode;  /* generated tokens */
    double ms_total;
    GError *error; /* set when this request failed; the others still count */
} DqAnswerResult;

typedef struct {
    gint64 tag; /* as submitted (the worker's job id) */
    DqAnswerResult result;
} DqAnswerDone;

typedef struct DqAnswerer DqAnswerer;
struct DqAnswerer {
    /* Takes one request; its strings are copied, the caller's may go after the call. FALSE
     * (err set): not taken, not in flight. */
    gboolean (*submit)(DqAnswerer *self, const DqAnswerRequest *req, gint64 tag, GError **err);
    /* Does a bounded piece of work (one decode step, or a short wait for preprocessing) and
     * moves finished requests into done[0..max) (max >= requests in flight); returns how many.
     * Returns 0 at once when nothing is in flight. */
    int (*poll)(DqAnswerer *self, DqAnswerDone *done, int max);
    /* Drops the request submitted with `tag` wherever it is (waiting for its host work, being
     * prepared, in the model: its slot is free for the next one): poll never returns it. FALSE
     * when no such request is in flight (poll returned it already). NULL: the answerer cannot
     * withdraw a request, and the worker lets it finish. */
    gboolean (*withdraw)(DqAnswerer *self, gint64 tag);
    void (*free)(DqAnswerer *self);
    /* TRUE, err set (DQ_ERR_DEVICE), when the answerer cannot answer anything more: its device
     * failed and the failure does not clear in this process (see "A device that failed for
     * good" above). FALSE when it can go on. NULL: it cannot break so (the CPU). */
    gboolean (*broken)(DqAnswerer *self, GError **err);
    /* Set by the worker; when it becomes non-zero (SIGINT, SIGTERM, SIGHUP) the answerer may stop
     * early (the worker releases the jobs still in flight). */
    volatile sig_atomic_t *cancel;
    /* Set by the worker before the first submit: requests in the model at once (--batch). */
    int batch;
    /* Set by the answerer: requests it wants in flight beyond `batch`, so that their host work
     * (page decode, image processor, tokenizer) is done before a slot frees up. */
    int lookahead;
    /* Set by the answerer, stored with every answer (answers.device, weights, exact): where
     * the model runs ("cpu", "cpu-ref", "cuda:I"), its --weights mode ("stored", "int8",
     * "bf16"), and whether that arithmetic is transformers' own (the conformance contract) or
     * an approximation, so SQL can tell the answers apart. device NULL: nothing to say (a
     * stand-in that is not a model). */
    const char *device;
    const char *weights;
    gboolean exact;
    /* Set by the answerer, stored with every answer (answers.model_fingerprint): which snapshot
     * answers, as smolvlm_fingerprint hashes it when the model is loaded, since the model id
     * under which its answers are stored is only a name. NULL: not a model. */
    const char *model_fingerprint;
};

/* Frees the result's text and error. */
void dq_answer_result_clear(DqAnswerResult *r);

static inline void dq_answerer_free(DqAnswerer *a) {
    if (a != NULL)
        a->free(a);
}

#define DQ_MAX_PREP_THREADS 64 /* DqSmolvlmAnswererOptions.prep_threads, at most */

typedef struct {
    const char *device;  /* "cpu" (NULL means cpu), "cuda", "cuda:1" */
    const char *weights; /* NULL or "stored" (as stored), "int8", "bf16" (SmolvlmOptions) */
    const char *draft;   /* NULL, "none" or "int8": speculative decoding (the same answers) */
    int prep_threads;    /* host preprocessing threads; 0: 1 on a CPU, on a GPU one a core but
                            one, up to 8 */
    /* MiB of prompts' KV the generator keeps for a page's next questions (its prefix cache,
     * generate.h); 0: DQ_PREFIX_CACHE_MB_DEFAULT; < 0: none, no prefix reuse */
    gint64 prefix_cache_mb;
} DqSmolvlmAnswererOptions;

/* The SmolVLM answerer for a snapshot directory. */
DqAnswerer *dq_answerer_open_smolvlm(const char *model_dir, const DqSmolvlmAnswererOptions *opts,
                                     GError **err);

#endif
