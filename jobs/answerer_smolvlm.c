/* The SmolVLM answerer: (page image, question) requests through the model/ engine, continuously
 * batched, with the host work on threads of its own.
 *
 * Requests are built by model/pipeline.h, the code `docqa generate` uses, so a job's answer is
 * exactly what `docqa generate -i PAGE.png -p PROMPT --n-res N` prints for the same page and
 * prompt: the page PNG -> Idefics3 image processor at the page's n_res; the prompt template with
 * {question} substituted -> the chat template, one user turn with the image first -> <image>
 * expansion -> token ids. Greedy, up to max_new_tokens; the answer is the generated ids decoded
 * with special tokens skipped, surrounding whitespace stripped (as `docqa generate` prints it).
 *
 *   submit --todo--> preprocessing threads (PNG decode, image processor: once a page; chat
 *                    template, tokenizer) --ready-->
 *   poll: ready requests fill the generator's free slots (one vision + prefill batch), one
 *         decode step for every slot, finished requests out (generate.h: DqGenerator)
 *
 * The model never waits for preprocessing while it has work: poll blocks on `ready` only when
 * the generator is empty. On a CPU one thread preprocesses (the model has the cores); a GPU
 * worker, whose batches finish pages faster than one core prepares them (a letter page at N=5
 * takes ~0.4 s), gets a pool, and as many more requests in flight. Requests come out of the
 * pool in the order they finish, which changes no answer. The queues hold at most what the worker
 * has in flight (batch + lookahead), so they are bounded by the worker. Questions about the same
 * page share one vision pass: the generator keeps the features of the last pages by features_key
 * (the page PNG's path, which is its SHA-256, and n_res), and their prompts' KV rows up to the
 * question (the prefix cache, generate.h), so that a page's next question prefills only its own
 * words. A request's tokens never depend on its batch-mates, on when it joined or on what it
 * took from the prefix cache, so neither changes an answer.
 */
#include "answerer.h"
#include "backend_cuda.h"
#include "queue.h"

#include "clock.h"
#include "dq_error.h"
#include "generate.h"
#include "image.h"
#include "pipeline.h"
#include "tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <omp.h>
#include <string.h>
#include <unistd.h>

/* One request from submit to its result. */
typedef struct {
    gint64 tag;
    char *image_path, *image_sha256, *text, *key;
    int n_res, max_new_tokens;
    SmolvlmPrompt prompt; /* filled by the preprocessing thread */
    GError *error;        /* preprocessing failed */
    double ms_image;
    /* Withdrawn (smolvlm_withdraw) while in `todo`, on a preprocessing thread or in `ready`: the
     * thread that has it skips its work, and poll frees it when it comes out of `ready`. */
    volatile gint withdrawn;
} Pending;

/* A page's tiles, kept for its next questions: each preprocessing thread holds at most one
 * entry (loading it, or copying its tiles into a prompt), so n_prep + 1 entries always leave
 * one to reuse (N=5: ~40 MB each). */
typedef struct {
    char *key; /* as Pending.key; NULL: empty */
    DqImageTiles *tiles;
    guint64 used_at;
    int users;        /* threads holding it */
    gboolean loading; /* its tiles are being made; wait on tile_cond */
} TileEntry;

typedef struct {
    DqAnswerer base;
    SmolvlmPipeline *pipe;
    GThread **prep; /* [n_prep] */
    int n_prep;
    /* The preprocessing threads run the resampler's OpenMP loops on their own thread, not on a
     * team of every core: see dq_answerer_open_smolvlm. */
    gboolean prep_one_core;
    GAsyncQueue *todo, *ready; /* Pending; `todo` ends with one &quit a thread */
    volatile gint stopping;    /* set by free: the threads skip what is left */
    DqGenerator *gen;          /* made at the first poll, base.batch slots */
    Pending **in_slot;         /* [slots] */
    int in_flight;             /* submitted, not yet returned nor withdrawn */
    GHashTable *by_tag;        /* tag -> Pending, the requests in flight (the polling thread's) */
    TileEntry *tile_cache;     /* [n_prep + 1], under tile_lock */
    guint64 tile_clock;
    GMutex tile_lock;
    GCond tile_cond;
    size_t prefix_bytes; /* the generator's prefix cache (DqSmolvlmAnswererOptions) */
    char device[32];     /* base.device: "cpu", "cpu-ref" or "cuda:I" */
    char *fingerprint;   /* base.model_fingerprint */
} SmolvlmAnswerer;

static Pending quit; /* the end of `todo` */

static void pending_free(Pending *p) {
    if (p == NULL || p == &quit)
        return;
    g_free(p->image_path);
    g_free(p->image_sha256);
    g_free(p->text);
    g_free(p->key);
    smolvlm_prompt_clear(&p->prompt);
    g_clear_error(&p->error);
    g_free(p);
}

/* The prompt template with every {question} replaced. */
static char *fill_template(const char *tmpl, const char *question) {
    char **parts = g_strsplit(tmpl, "{question}", -1);
    char *out = g_strjoinv(question, parts);
    g_strfreev(parts);
    /* configs/ files may end with a newline the template does not mean. */
    return g_strchomp(out);
}

/* The whole file at path, read here rather than by g_file_get_contents, whose GFileError
 * folds ESTALE, ETIMEDOUT and the network's errors into one code: the errno decides whether the
 * job is worth another attempt (DQ_ERR_IO_TRANSIENT: a flaky disk or share, descriptors or
 * memory short) or fails at once (DQ_ERR_IO: the file missing, not a file, not allowed). */
static gboolean read_page_bytes(const char *path, char **data, gsize *len, GError **err) {
    /* O_NONBLOCK: a FIFO put in its place reads as empty (not a PNG), never waited on. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        return dq_fail(err, dq_errno_transient(e) ? DQ_ERR_IO_TRANSIENT : DQ_ERR_IO,
                       "%s: cannot open image: %s", path, g_strerror(e));
    }
    /* No fstat for the size: the worker stat'ed the path as a regular file just before, and a
     * second call that a flaky share may fail is one more way to lose the attempt. A page is
     * ~100 kB; the buffer doubles from 256 kB. */
    gsize cap = 256 * 1024, n = 0;
    char *buf = g_malloc(cap + 1);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = g_realloc(buf, cap + 1);
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            close(fd);
            g_free(buf);
            return dq_fail(err, dq_errno_transient(e) ? DQ_ERR_IO_TRANSIENT : DQ_ERR_IO,
                           "%s: cannot read image: %s", path, g_strerror(e));
        }
        if (got == 0)
            break;
        n += (gsize)got;
    }
    close(fd);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return TRUE;
}

/* The page image p asks about, decoded from the very bytes checked against its SHA-256: the
 * page store names a file by its content, and one replaced or damaged after ingest (another
 * page's PNG, a truncated copy) would otherwise be answered as the page. Hashing is cheap next to
 * what follows: GLib's SHA-256 ran at ~140 MB/s on a developer machine, 0.7 ms for a corpus
 * page (93 kB on average) against ~30 ms of decode and image processor; it is done once per page
 * (the tiles are kept), on the preprocessing threads. A failure here is a bad page, failed at
 * once (answerer.h): retrying cannot mend the file; but for an open or read the system failed
 * (read_page_bytes), which a later attempt may get through. */
static DqImage *load_page(const Pending *p, GError **err) {
    char *data = NULL;
    gsize len = 0;
    if (!read_page_bytes(p->image_path, &data, &len, err))
        return NULL;
    if (p->image_sha256 != NULL) {
        char *sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
        gboolean same = g_ascii_strcasecmp(sha, p->image_sha256) == 0;
        g_free(sha);
        if (!same) {
            g_free(data);
            dq_fail(err, DQ_ERR_FORMAT,
                    "%s: the file does not match its page (its SHA-256 is not the one it is "
                    "stored under: replaced or damaged since ingest); run `docqa ingest "
                    "--verify` on the documents to render it again, then `docqa requeue "
                    "--failed`",
                    p->image_path);
            return NULL;
        }
    }
    DqImage *img = dq_image_decode((const uint8_t *)data, len, p->image_path, DQ_EXIF_APPLY, err);
    g_free(data);
    /* The page store holds the PNGs ingest wrote (at most n_res x tile a side): one the decoders
     * do not take (no image signature at all) or too large to decode was damaged or replaced. */
    if (img == NULL && err != NULL && *err != NULL && (*err)->domain == DQ_ERROR &&
        ((*err)->code == DQ_ERR_UNSUPPORTED || (*err)->code == DQ_ERR_LIMIT))
        (*err)->code = DQ_ERR_FORMAT;
    return img;
}

/* The tiles of the page p asks about, held (tile_release): the image processor runs once for
 * a page's questions (they come close together), even when two threads take them at once.
 * Page store paths name their content (SHA-256), so a path with its n_res is a safe key. */
static TileEntry *page_tiles(SmolvlmAnswerer *a, Pending *p, GError **err) {
    int n = a->n_prep + 1;
    g_mutex_lock(&a->tile_lock);
    TileEntry *slot = NULL;
    for (;;) {
        TileEntry *found = NULL;
        slot = NULL;
        for (int i = 0; i < n; i++) {
            TileEntry *e = &a->tile_cache[i];
            if (e->key != NULL && strcmp(e->key, p->key) == 0)
                found = e;
            else if (e->users == 0 && (slot == NULL || e->used_at < slot->used_at))
                slot = e; /* least recently used, empty ones first */
        }
        if (found == NULL)
            break;
        if (!found->loading) {
            found->users++;
            found->used_at = ++a->tile_clock;
            g_mutex_unlock(&a->tile_lock);
            return found;
        }
        g_cond_wait(&a->tile_cond, &a->tile_lock); /* another thread makes them */
    }
    g_assert(slot != NULL); /* n_prep threads hold at most n_prep entries */
    g_free(slot->key);
    dq_image_tiles_free(slot->tiles);
    *slot = (TileEntry){.key = g_strdup(p->key), .users = 1, .loading = TRUE};
    g_mutex_unlock(&a->tile_lock);

    DqImageTiles *tiles = NULL;
    DqImage *img = load_page(p, err);
    if (img != NULL) {
        SmolvlmPrepareOptions opts = {.n_res = p->n_res};
        tiles = smolvlm_image_tiles(a->pipe, img, &opts, err);
        dq_image_free(img);
        if (tiles == NULL)
            dq_error_prefix(err, "%s", p->image_path);
    }
    g_mutex_lock(&a->tile_lock);
    slot->loading = FALSE;
    slot->used_at = ++a->tile_clock;
    if (tiles != NULL) {
        slot->tiles = tiles;
    } else { /* waiters find nothing and try themselves: each gets its own error */
        g_clear_pointer(&slot->key, g_free);
        slot->users = 0;
        slot->used_at = 0; /* empty: reused first */
        slot = NULL;
    }
    g_cond_broadcast(&a->tile_cond);
    g_mutex_unlock(&a->tile_lock);
    return slot;
}

static void tile_release(SmolvlmAnswerer *a, TileEntry *e) {
    g_mutex_lock(&a->tile_lock);
    e->users--;
    g_mutex_unlock(&a->tile_lock);
}

static gboolean prepare(SmolvlmAnswerer *a, Pending *p, GError **err) {
    TileEntry *e = page_tiles(a, p, err);
    if (e == NULL)
        return FALSE;
    const DqImageTiles *tiles = e->tiles;
    gboolean ok = smolvlm_prompt_build_tiles(a->pipe, &tiles, 1, p->text, NULL, &p->prompt, err);
    tile_release(a, e);
    if (!ok) {
        /* The tiles are made; what failed is the prompt of this question (a bad request, its
         * message names the question: the page is not at fault). */
        if (err != NULL && *err != NULL && (*err)->domain == DQ_ERROR &&
            (*err)->code == DQ_ERR_ARGS)
            dq_error_prefix(err, "the question's prompt");
        else
            dq_error_prefix(err, "%s", p->image_path);
        return FALSE;
    }
    /* A question the model cannot take with this page is a bad request, failed here alone
     * (answerer.h): in the generator it would fail the batch it was added with. */
    int positions = smolvlm_config(a->pipe->model)->max_position_embeddings;
    if ((gint64)p->prompt.n_input_ids + p->max_new_tokens > positions)
        return dq_fail(err, DQ_ERR_ARGS,
                       "too long for the model: the question's prompt with the page is %d "
                       "tokens, and %d new %s more than the model's %d positions (config.json's "
                       "text_config.max_position_embeddings)",
                       p->prompt.n_input_ids, p->max_new_tokens,
                       p->max_new_tokens == 1 ? "one makes" : "ones make", positions);
    return TRUE;
}

/* A preprocessing thread. The pipeline's tokenizer, template and processor settings are
 * read-only after open (the tokenizer's word cache has its own lock). */
static gpointer prep_main(gpointer data) {
    SmolvlmAnswerer *a = data;
    if (a->prep_one_core)
        omp_set_num_threads(1);
    for (;;) {
        Pending *p = g_async_queue_pop(a->todo);
        if (p == &quit)
            break;
        queue_test_point("answerer:prepare");
        double t0 = dq_now_ms();
        if (g_atomic_int_get(&a->stopping) || (a->base.cancel && *a->base.cancel))
            dq_fail(&p->error, DQ_ERR_CANCELLED, "%s: cancelled", p->image_path);
        else if (!g_atomic_int_get(&p->withdrawn)) /* nobody wants what it would make */
            prepare(a, p, &p->error);
        p->ms_image = dq_now_ms() - t0;
        g_async_queue_push(a->ready, p);
        queue_test_point("answerer:prepared");
    }
    return NULL;
}

static gboolean smolvlm_submit(DqAnswerer *self, const DqAnswerRequest *r, gint64 tag,
                               GError **err) {
    SmolvlmAnswerer *a = (SmolvlmAnswerer *)self;
    (void)err; /* failures come back through poll, per request */
    Pending *p = g_new0(Pending, 1);
    p->tag = tag;
    p->image_path = g_strdup(r->image_path);
    p->image_sha256 = g_strdup(r->image_sha256);
    p->text = fill_template(r->prompt_template, r->question);
    /* The SHA-256 too: tiles kept for a file are reused only for requests that checked it
     * against the same content. */
    p->key = g_strdup_printf("%s#sha256=%s#n_res=%d", r->image_path,
                             r->image_sha256 ? r->image_sha256 : "", r->n_res);
    p->n_res = r->n_res;
    p->max_new_tokens = r->max_new_tokens > 0 ? r->max_new_tokens : 64;
    a->in_flight++;
    g_hash_table_insert(a->by_tag, &p->tag, p);
    g_async_queue_push(a->todo, p);
    return TRUE;
}

/* A request in a slot leaves the generator at once (its KV cache freed, the slot free for the
 * next add); the others' rows are computed as before, since each row of a step is computed as
 * it would be alone (generate.h). One still in the preprocessing queues is only marked: a
 * thread may be preparing it, and the queues cannot give it back; it is freed as it comes out. */
static gboolean smolvlm_withdraw(DqAnswerer *self, gint64 tag) {
    SmolvlmAnswerer *a = (SmolvlmAnswerer *)self;
    Pending *p = g_hash_table_lookup(a->by_tag, &tag);
    if (p == NULL)
        return FALSE;
    g_hash_table_remove(a->by_tag, &tag);
    a->in_flight--;
    for (int s = 0; a->gen != NULL && s < dq_generator_n_slots(a->gen); s++)
        if (a->in_slot[s] == p) {
            dq_generator_drop(a->gen, s);
            a->in_slot[s] = NULL;
            pending_free(p);
            return TRUE;
        }
    g_atomic_int_set(&p->withdrawn, 1);
    return TRUE;
}

/* Takes p (returned or withdrawn) out of the requests in flight. */
static void forget(SmolvlmAnswerer *a, Pending *p) {
    g_hash_table_remove(a->by_tag, &p->tag);
}

/* done[k] = a failure of p (which is freed). */
static void done_error(SmolvlmAnswerer *a, DqAnswerDone *d, Pending *p, GError *e) {
    forget(a, p);
    memset(d, 0, sizeof *d);
    d->tag = p->tag;
    d->result.error = e;
    d->result.ms_image = d->result.ms_total = p->ms_image;
    pending_free(p);
}

/* A request the generator took: it decodes in its slot from now on. */
static void admit(SmolvlmAnswerer *a, Pending *p, int slot) {
    a->in_slot[slot] = p;
    smolvlm_prompt_clear(&p->prompt); /* tiles and ids are not needed now */
    queue_test_point("answerer:admitted");
}

/* Ready requests into the free slots, all in one add; failures go to done. */
static int fill_slots(SmolvlmAnswerer *a, DqAnswerDone *done, int max) {
    int n_free = dq_generator_n_free(a->gen), k = 0, n = 0;
    Pending **batch = g_new0(Pending *, n_free > 0 ? n_free : 1);
    SmolvlmRequest *reqs = g_new0(SmolvlmRequest, n_free > 0 ? n_free : 1);
    while (n < n_free && k < max) {
        /* Wait (briefly) only when the model would otherwise idle. */
        gboolean idle = dq_generator_n_active(a->gen) == 0 && n == 0 &&
                        dq_generator_n_free(a->gen) == dq_generator_n_slots(a->gen);
        Pending *p =
            idle ? g_async_queue_timeout_pop(a->ready, 50000) : g_async_queue_try_pop(a->ready);
        if (p == NULL)
            break;
        if (g_atomic_int_get(&p->withdrawn)) { /* out of the queues at last */
            pending_free(p);
            continue;
        }
        if (p->error != NULL) {
            GError *e = p->error;
            p->error = NULL;
            done_error(a, &done[k++], p, e);
            continue;
        }
        smolvlm_request_init(a->pipe, &p->prompt, &reqs[n]);
        reqs[n].options.do_sample = FALSE; /* greedy, as the DocVQA evaluation ran it */
        reqs[n].options.max_new_tokens = p->max_new_tokens;
        reqs[n].features_key = p->key;
        batch[n++] = p;
    }
    if (n > 0) {
        int *slots = g_new(int, n);
        GError *e = NULL;
        if (dq_generator_add(a->gen, reqs, n, slots, &e)) {
            for (int i = 0; i < n; i++)
                admit(a, batch[i], slots[i]);
        } else {
            /* Again a request at a time: one that the generator refuses fails alone, not with
             * the batch-mates it came with. */
            for (int i = 0; i < n; i++) {
                GError *ei = n == 1 ? g_error_copy(e) : NULL;
                if (n > 1 && dq_generator_add(a->gen, &reqs[i], 1, &slots[i], &ei))
                    admit(a, batch[i], slots[i]);
                else
                    done_error(a, &done[k++], batch[i], ei);
            }
            g_error_free(e);
        }
        g_free(slots);
    }
    g_free(batch);
    g_free(reqs);
    return k;
}

static int smolvlm_poll(DqAnswerer *self, DqAnswerDone *done, int max) {
    SmolvlmAnswerer *a = (SmolvlmAnswerer *)self;
    if (a->in_flight == 0 || max < 1)
        return 0;
    if (a->gen == NULL) {
        GError *e = NULL;
        int slots = MAX(self->batch, 1);
        /* Features of a few more pages than slots: a page's questions arrive close together. */
        if ((a->gen = dq_generator_new(a->pipe->model, slots, slots + self->lookahead, &e)) ==
            NULL) {
            Pending *p = g_async_queue_timeout_pop(a->ready, 50000);
            if (p == NULL || g_atomic_int_get(&p->withdrawn)) {
                if (p != NULL)
                    pending_free(p);
                g_error_free(e);
                return 0;
            }
            done_error(a, &done[0], p, e);
            a->in_flight--;
            return 1;
        }
        dq_generator_set_prefix_cache(a->gen, a->prefix_bytes);
        a->in_slot = g_new0(Pending *, slots);
    }
    int k = fill_slots(a, done, max);
    if (dq_generator_n_active(a->gen) > 0) {
        GError *e = NULL;
        if (!dq_generator_step(a->gen, &e)) {
            /* The generator dropped every request: each fails (and is retried). Those past
             * `max` wait at the head of the ready queue, failed, for the next poll: their slots
             * are free again and must not be overwritten while they still hold them. */
            for (int s = 0; s < dq_generator_n_slots(a->gen); s++) {
                Pending *p = a->in_slot[s];
                if (p == NULL)
                    continue;
                a->in_slot[s] = NULL;
                if (k < max) {
                    done_error(a, &done[k++], p, g_error_copy(e));
                } else {
                    p->error = g_error_copy(e);
                    g_async_queue_push_front(a->ready, p);
                }
            }
            g_error_free(e);
        }
    }
    int n_slots = dq_generator_n_slots(a->gen);
    DqGeneratorDone *fin = g_new0(DqGeneratorDone, n_slots);
    int n_fin = dq_generator_take_finished(a->gen, fin, MIN(n_slots, max - k));
    for (int i = 0; i < n_fin; i++) {
        Pending *p = a->in_slot[fin[i].slot];
        a->in_slot[fin[i].slot] = NULL;
        DqAnswerDone *d = &done[k++];
        memset(d, 0, sizeof *d);
        d->tag = p->tag;
        DqAnswerResult *r = &d->result;
        char *text = tokenizer_decode_text(a->pipe->tok, fin[i].result.output_ids,
                                           (size_t)fin[i].result.n_output_ids);
        r->text = g_strstrip(text);
        r->prompt_tokens = fin[i].prompt_tokens;
        r->prefix_tokens = fin[i].prefix_rows;
        r->generated_tokens = fin[i].result.n_output_ids;
        r->ms_image = p->ms_image;
        r->ms_vision = fin[i].vision_ms;
        r->ms_prefill = fin[i].prefill_ms;
        r->ms_decode = fin[i].decode_ms;
        r->ms_total = r->ms_image + r->ms_vision + r->ms_prefill + r->ms_decode;
        dq_generate_result_clear(&fin[i].result);
        forget(a, p);
        pending_free(p);
    }
    g_free(fin);
    a->in_flight -= k;
    return k;
}

/* The CUDA backend's kept error (answerer.h): after it nothing this process computes on that
 * GPU can be trusted. The CPU backends have no such state: never broken. */
static gboolean smolvlm_broken(DqAnswerer *self, GError **err) {
    SmolvlmAnswerer *a = (SmolvlmAnswerer *)self;
    return !dq_backend_cuda_check(smolvlm_backend(a->pipe->model), err);
}

static void smolvlm_answerer_free(DqAnswerer *self) {
    SmolvlmAnswerer *a = (SmolvlmAnswerer *)self;
    g_atomic_int_set(&a->stopping, 1);
    for (int i = 0; i < a->n_prep; i++)
        g_async_queue_push(a->todo, &quit);
    for (int i = 0; i < a->n_prep; i++)
        g_thread_join(a->prep[i]);
    g_free(a->prep);
    Pending *p;
    while ((p = g_async_queue_try_pop(a->todo)) != NULL)
        pending_free(p);
    while ((p = g_async_queue_try_pop(a->ready)) != NULL)
        pending_free(p);
    if (a->gen != NULL)
        for (int s = 0; s < dq_generator_n_slots(a->gen); s++)
            pending_free(a->in_slot[s]);
    dq_generator_free(a->gen);
    g_free(a->in_slot);
    g_hash_table_destroy(a->by_tag);
    for (int i = 0; i < a->n_prep + 1; i++) {
        g_free(a->tile_cache[i].key);
        dq_image_tiles_free(a->tile_cache[i].tiles);
    }
    g_free(a->tile_cache);
    g_mutex_clear(&a->tile_lock);
    g_cond_clear(&a->tile_cond);
    g_async_queue_unref(a->todo);
    g_async_queue_unref(a->ready);
    smolvlm_pipeline_free(a->pipe);
    g_free(a->fingerprint);
    g_free(a);
}

DqAnswerer *dq_answerer_open_smolvlm(const char *model_dir, const DqSmolvlmAnswererOptions *o,
                                     GError **err) {
    const char *device = o->device, *weights = o->weights;
    if (o->prep_threads < 0 || o->prep_threads > DQ_MAX_PREP_THREADS) {
        dq_fail(err, DQ_ERR_ARGS, "preprocessing threads: %d is not between 0 and %d",
                o->prep_threads, DQ_MAX_PREP_THREADS);
        return NULL;
    }
    SmolvlmOptions opts = {.device = device, .weights = weights, .draft = o->draft};
    SmolvlmPipeline *pipe = smolvlm_pipeline_open(model_dir, &opts, err);
    if (pipe == NULL)
        return NULL;
    /* Once, at load: the files hashed are those just loaded (the safetensors as mapped). */
    char *fingerprint = smolvlm_fingerprint(pipe->model, err);
    if (fingerprint == NULL) {
        smolvlm_pipeline_free(pipe);
        return NULL;
    }
    SmolvlmAnswerer *a = g_new0(SmolvlmAnswerer, 1);
    a->fingerprint = fingerprint;
    a->base.model_fingerprint = fingerprint;
    a->base.submit = smolvlm_submit;
    a->base.poll = smolvlm_poll;
    a->base.withdraw = smolvlm_withdraw;
    a->base.free = smolvlm_answerer_free;
    a->base.broken = smolvlm_broken;
    /* The names the answers table keeps: "cuda" is recorded as the GPU it means. */
    int cuda_index = -1;
    dq_device_parse(device, &cuda_index, NULL); /* cannot fail: the pipeline opened on it */
    if (cuda_index >= 0)
        g_snprintf(a->device, sizeof(a->device), "cuda:%d", cuda_index);
    else
        g_strlcpy(a->device, cuda_index == -2 ? "cpu-ref" : "cpu", sizeof(a->device));
    a->base.device = a->device;
    a->base.weights = weights != NULL && strcmp(weights, "int8") == 0   ? "int8"
                      : weights != NULL && strcmp(weights, "bf16") == 0 ? "bf16"
                                                                        : "stored";
    /* The CPU backends with the weights as stored are what check.py holds to transformers'
     * logits and tokens; CUDA multiplies in bf16, int8 and bf16 weights round. */
    a->base.exact = cuda_index < 0 && strcmp(a->base.weights, "stored") == 0;
    a->pipe = pipe;
    gint64 prefix_mb = o->prefix_cache_mb == 0 ? DQ_PREFIX_CACHE_MB_DEFAULT : o->prefix_cache_mb;
    a->prefix_bytes = prefix_mb > 0 ? (size_t)prefix_mb << 20 : 0;
    /* A GPU worker: all cores but the one that drives the GPU, up to 8 (a page a thread). */
    a->n_prep = o->prep_threads > 0 ? o->prep_threads
                : cuda_index < 0    ? 1
                                    : CLAMP((int)g_get_num_processors() - 1, 1, 8);
    /* Several threads: a page a thread; the resampler's OpenMP loops would otherwise start a
     * team of every core from each of them (8 threads x 16 cores on a GPU host), beside the
     * thread that drives the GPU. On the CPU the model's team has every core, and a second team
     * of every core beside it put 4 busy threads on 2 cores while a page was prepared. Only a
     * GPU worker's one thread takes the cores the GPU leaves idle. */
    a->prep_one_core = a->n_prep > 1 || cuda_index < 0;
    /* Requests beyond the model's slots, so that every thread has one to prepare. */
    a->base.lookahead = a->n_prep + 1;
    a->tile_cache = g_new0(TileEntry, a->n_prep + 1);
    g_mutex_init(&a->tile_lock);
    g_cond_init(&a->tile_cond);
    a->todo = g_async_queue_new();
    a->ready = g_async_queue_new();
    a->by_tag = g_hash_table_new(g_int64_hash, g_int64_equal);
    a->prep = g_new0(GThread *, a->n_prep);
    for (int i = 0; i < a->n_prep; i++)
        a->prep[i] = g_thread_new("preprocess", prep_main, a);
    return &a->base;
}
