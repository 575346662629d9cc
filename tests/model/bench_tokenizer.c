/* Tokenizer benchmark (not a test): bench_tokenizer TOKENIZER_JSON TEXT_FILE [REPEATS]
 * Prints the load time (twice: JSON, then the parsed-tokenizer cache), then encodes the file's text
 * line by line (as prompts are encoded) and prints MB/s on one thread and the number of ids. Run by
 * scripts/bench-tokenizer.sh. */
#include "clock.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TOKENIZER_JSON TEXT_FILE [REPEATS]\n", argv[0]);
        return 2;
    }
    int repeats = argc > 3 ? atoi(argv[3]) : 3;
    GError *err = NULL;
    gint64 t0 = g_get_monotonic_time();
    DqTokenizer *tok = tokenizer_load(argv[1], &err);
    gint64 t1 = g_get_monotonic_time();
    if (tok == NULL) {
        fprintf(stderr, "%s\n", err->message);
        return 2;
    }
    printf("load_ms %.1f\n", (double)(t1 - t0) / 1000.0);
    /* again: with DOCQA_CACHE_DIR fresh, the first load parsed the JSON, this one uses the cache */
    tokenizer_free(tok);
    t0 = g_get_monotonic_time();
    tok = tokenizer_load(argv[1], &err);
    t1 = g_get_monotonic_time();
    if (tok == NULL) {
        fprintf(stderr, "%s\n", err->message);
        return 2;
    }
    printf("load_again_ms %.1f\n", (double)(t1 - t0) / 1000.0);
    char *text;
    gsize len;
    if (!g_file_get_contents(argv[2], &text, &len, &err)) {
        fprintf(stderr, "%s\n", err->message);
        return 2;
    }
    char **lines = g_strsplit(text, "\n", -1);
    double best = 1e30, best_cpu = 1e30;
    size_t total_ids = 0;
    for (int r = 0; r < repeats; r++) {
        /* the first pass sees a cold BPE cache; report the best, and the cold one */
        gint64 a = g_get_monotonic_time();
        double c0 = dq_cpu_ms();
        total_ids = 0;
        for (char **l = lines; *l; l++) {
            size_t n;
            int32_t *ids = tokenizer_encode(tok, *l, -1, &n, &err);
            if (ids == NULL) {
                fprintf(stderr, "%s\n", err->message);
                return 1;
            }
            total_ids += n;
            g_free(ids);
        }
        double s = (double)(g_get_monotonic_time() - a) / 1e6;
        best_cpu = MIN(best_cpu, (dq_cpu_ms() - c0) / 1e3);
        if (r == 0)
            printf("cold_mb_per_s %.2f\n", (double)len / 1e6 / s);
        if (s < best)
            best = s;
    }
    printf("bytes %zu ids %zu\n", (size_t)len, total_ids);
    printf("mb_per_s %.2f\n", (double)len / 1e6 / best);
    /* on the process's CPU time: what a shared host's load moves least */
    printf("cpu_mb_per_s %.2f\n", (double)len / 1e6 / best_cpu);
    g_strfreev(lines);
    g_free(text);
    tokenizer_free(tok);
    return 0;
}
