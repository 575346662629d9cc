#include "cli.h"
#include "cpu_gemm.h"
#include "cpu_q8.h"
#include "cpu_simd.h"

#include <stdio.h>
#ifdef DOCQA_HAVE_POSTGRES
#include <libpq-fe.h>
#endif

/* Which of the fast CPU backend's kernels this machine runs: two machines' speeds differ by
 * these, and a user who switched one off (DOCQA_CPU_NO_*, docs/performance.md) sees it took. */
static void print_cpu_kernels(void) {
    const struct {
        const char *name;
        gboolean (*on)(void);
    } kernels[] = {
        {"avx2+fma", dq_cpu_has_avx2},          {"avx512", dq_cpu_has_avx512f},
        {"avx512-bf16", dq_cpu_has_avx512bf16}, {"amx-bf16", dq_cpu_has_amx_bf16},
        {"avx512-vnni", dq_cpu_has_avx512vnni},
    };
    GString *line = g_string_new(NULL);
    for (size_t i = 0; i < G_N_ELEMENTS(kernels); i++)
        if (kernels[i].on())
            g_string_append_printf(line, "%s%s", line->len ? " " : "", kernels[i].name);
    printf("cpu kernels: %s\n",
           line->len ? line->str : "portable C (AVX2+FMA absent or switched off)");
    g_string_free(line, TRUE);
}

int cmd_version(int argc, char **argv) {
    GOptionContext *ctx = g_option_context_new("- print the version and the build's features");
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    if (!ok || !dq_cli_no_arguments("version", argc, argv))
        return DQ_EXIT_FATAL;
    printf("docqa %s\n", DOCQA_VERSION);
#ifdef DOCQA_HAVE_CUDA
    printf("cuda backend: compiled in\n");
#else
    printf("cuda backend: not compiled in\n");
#endif
#ifdef DOCQA_HAVE_POSTGRES
    printf("postgresql store: compiled in (libpq %d)\n", PQlibVersion());
#else
    printf("postgresql store: not compiled in (sqlite only)\n");
#endif
    print_cpu_kernels();
    return DQ_EXIT_OK;
}
