/* Pages per second through docqa's page preparation, for scripts/bench-prep.sh (which runs
 * transformers' image processor on the same pages beside it):
 *
 *   bench_prep SNAPSHOT N_RES THREADS REPEATS IMAGE...
 *
 * What a worker's preparing threads do with a page: decode the image (EXIF applied), the
 * Idefics3 image processor at N (tiles as bytes, hashed), the DocVQA prompt around its tiles,
 * tokenized. THREADS threads take pages from a shared counter, each resampling on itself, as a
 * GPU worker's do; the whole list is run REPEATS times after a warm-up pass and the best run
 * kept. Memory as the commands have it (common/memory.h; DOCQA_KEEP_PAGE_BUFFERS=0: glibc's
 * default). Prints one line:
 *
 *   docqa_prep threads=2 pages=20 seconds=1.234 pages_per_s=16.2 tiles=420
 */
#include "clock.h"
#include "image.h"
#include "memory.h"
#include "pipeline.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUESTION "What is the date?"

typedef struct {
    SmolvlmPipeline *pipe;
    SmolvlmPrepareOptions opts;
    char **paths;
    int n_paths;
    gint next;
    gint tiles;
    gint failed;
} Run;

static gpointer prep_thread(gpointer data) {
    Run *r = data;
    omp_set_num_threads(1);
    for (int i; (i = g_atomic_int_add(&r->next, 1)) < r->n_paths;) {
        GError *err = NULL;
        DqImage *img = dq_image_load(r->paths[i], DQ_EXIF_APPLY, &err);
        SmolvlmPrompt prompt;
        if (img == NULL || !smolvlm_prompt_build(r->pipe, (const DqImage *const[]){img}, 1,
                                                 QUESTION, NULL, &r->opts, &prompt, &err)) {
            fprintf(stderr, "bench_prep: %s: %s\n", r->paths[i], err->message);
            g_error_free(err);
            g_atomic_int_inc(&r->failed);
        } else {
            g_atomic_int_add(&r->tiles, prompt.images[0]->n_tiles);
            smolvlm_prompt_clear(&prompt);
        }
        dq_image_free(img);
    }
    return NULL;
}

/* A pass's wall seconds; its CPU seconds (the process's) in *cpu_s. */
static double run_once(Run *r, int threads, double *cpu_s) {
    r->next = r->tiles = 0;
    GThread **th = g_new(GThread *, threads);
    double t0 = dq_now_ms(), c0 = dq_cpu_ms();
    for (int i = 0; i < threads; i++)
        th[i] = g_thread_new("prep", prep_thread, r);
    for (int i = 0; i < threads; i++)
        g_thread_join(th[i]);
    g_free(th);
    *cpu_s = (dq_cpu_ms() - c0) / 1000.0;
    return (dq_now_ms() - t0) / 1000.0;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s SNAPSHOT N_RES THREADS REPEATS IMAGE...\n", argv[0]);
        return 2;
    }
    if (g_strcmp0(g_getenv("DOCQA_KEEP_PAGE_BUFFERS"), "0") != 0 && !dq_memory_keep_page_buffers())
        fprintf(stderr, "bench_prep: glibc refused the memory policy\n");
    int threads = atoi(argv[3]), repeats = atoi(argv[4]);
    GError *err = NULL;
    Run r = {.paths = argv + 5, .n_paths = argc - 5};
    r.opts.n_res = atoi(argv[2]);
    /* (the weights are mapped, not read: only the tokenizer and the processor run here) */
    if ((r.pipe = smolvlm_pipeline_open(argv[1], NULL, &err)) == NULL) {
        fprintf(stderr, "bench_prep: %s\n", err->message);
        return 2;
    }
    if (threads <= 0 || repeats <= 0) {
        fprintf(stderr, "bench_prep: THREADS and REPEATS must be positive\n");
        return 2;
    }
    double cpu_s, best_cpu = 1e300;
    run_once(&r, threads, &cpu_s); /* warm-up: page cache, tokenizer cache, heap */
    double best = 1e300;
    for (int i = 0; i < repeats; i++) {
        double s = run_once(&r, threads, &cpu_s);
        best = s < best ? s : best;
        best_cpu = cpu_s < best_cpu ? cpu_s : best_cpu;
    }
    /* cpu_seconds: the pass with the least CPU time, every thread's; on a shared host it moves
     * least */
    printf("docqa_prep threads=%d pages=%d seconds=%.3f pages_per_s=%.2f tiles=%d failed=%d "
           "cpu_seconds=%.3f\n",
           threads, r.n_paths, best, r.n_paths / best, r.tiles, g_atomic_int_get(&r.failed),
           best_cpu);
    smolvlm_pipeline_free(r.pipe);
    return g_atomic_int_get(&r.failed) > 0 ? 1 : 0;
}
